//! Filesystem helpers: the per-run scratch directory (removed when the benchmark ends, even on error),
//! removal of what a run made, and the file count and size of an environment.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Context, Result};
use crate::runner::run;

/// `$BLAST_BENCH_CACHE/run-<pid>`: the stores, environments and venvs of this run. It sits next to uv's
/// cache, so that uv and blast both link within one filesystem.
pub struct Scratch {
    root: PathBuf,
}

impl Scratch {
    /// Makes this run's scratch directory, after removing those of earlier runs that were killed.
    pub fn create(cache: &Path) -> Result<Scratch> {
        remove_leftovers(cache)?;
        let root = cache.join(format!("run-{}", std::process::id()));
        remove_dir(&root)?;
        fs::create_dir_all(&root).context(|| format!("creating {}", root.display()))?;
        Ok(Scratch { root })
    }

    /// A directory of the scratch area, created empty.
    pub fn dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.root.join(name);
        remove_dir(&dir)?;
        fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }
}

/// Removes `run-<pid>` directories whose process is gone (a run stopped by Ctrl-C does not clean up).
fn remove_leftovers(cache: &Path) -> Result<()> {
    let entries = fs::read_dir(cache).context(|| format!("reading {}", cache.display()))?;
    for entry in entries {
        let entry = entry.context(|| format!("reading {}", cache.display()))?;
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("run-"))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            eprintln!(
                "removing {} (left by an interrupted run)",
                entry.path().display()
            );
            remove_dir(&entry.path())?;
        }
    }
    Ok(())
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = remove_dir(&self.root) {
            eprintln!("blast-bench: could not clean up: {e}");
        }
    }
}

/// Removes a directory tree; one that does not exist is fine.
pub fn remove_dir(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(e).context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Writes the page cache's dirty data out (`sync`), so that the writeback of one run does not land in
/// the next one's time.
pub fn flush() -> Result<()> {
    run(&mut Command::new("sync")).map(drop)
}

/// What an environment holds, `__pycache__` left out (neither blast nor uv writes bytecode).
#[derive(Debug, Default, Clone, Copy)]
pub struct TreeStats {
    /// Regular files.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Regular files with more than one link (shared with a store or cache).
    pub linked: u64,
    /// `*.dist-info` directories.
    pub packages: u64,
}

pub fn tree_stats(root: &Path) -> Result<TreeStats> {
    let mut stats = TreeStats::default();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let entry = entry.context(|| format!("reading {}", dir.display()))?;
            let path = entry.path();
            let meta =
                fs::symlink_metadata(&path).context(|| format!("inspecting {}", path.display()))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if meta.is_dir() {
                if name == "__pycache__" {
                    continue;
                }
                if name.ends_with(".dist-info") {
                    stats.packages += 1;
                }
                pending.push(path);
            } else if meta.is_file() {
                stats.files += 1;
                stats.bytes += meta.len();
                if meta.nlink() > 1 {
                    stats.linked += 1;
                }
            }
        }
    }
    Ok(stats)
}
