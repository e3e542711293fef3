//! Interpreter discovery: from `--python` (a path, a command, a version like `3.11`, or nothing for
//! `python3`) to the real interpreter and what a venv needs to know about it.
//!
//! Asking Python costs tens of milliseconds and shims (pyenv) add a shell script on top, so the answer is
//! cached in the index, keyed by the requested file's identity (and, for shims, by what steers them), and
//! checked against the real interpreter's mtime on every use.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use store_format::PythonTag;

use crate::capture::nanos;
use crate::error::{Error, Result};
use crate::index::{Batch, Index};

/// What blast knows about a base interpreter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonInfo {
    /// The real interpreter binary (symlinks and shims resolved).
    pub executable: String,
    /// Its directory: `pyvenv.cfg`'s `home`.
    pub bin_dir: String,
    /// The file name a venv's `bin/python` points at (`python3.11`).
    pub exe_name: String,
    /// mtime of `executable` when it was asked, in nanoseconds.
    pub exe_mtime_ns: i64,
    /// Relative path of `site-packages` inside a venv (`lib/python3.11/site-packages`).
    pub purelib: String,
    /// The standard library directory (where `ensurepip` keeps its wheels).
    pub stdlib: String,
    pub tag: PythonTag,
}

impl PythonInfo {
    /// `cpython 3.11.7 at /usr/bin/python3.11`.
    pub fn describe(&self) -> String {
        format!(
            "{} {} at {}",
            self.tag.implementation, self.tag.version, self.executable
        )
    }

    /// Can a snapshot built for `needed` run on this interpreter? Same implementation, same minor version,
    /// same extension ABI and platform (wheels with compiled code depend on them).
    pub fn satisfies(&self, needed: &PythonTag) -> bool {
        self.tag.implementation == needed.implementation
            && self.tag.minor_version() == needed.minor_version()
            && (needed.soabi.is_empty() || self.tag.soabi == needed.soabi)
            && self.tag.platform == needed.platform
    }
}

const PROBE: &str = r#"
import json, os, sys, sysconfig, platform
exe = os.path.realpath(sys.executable)
scheme = "venv" if "venv" in sysconfig.get_scheme_names() else "posix_prefix"
base = "/__blast_base__"
purelib = sysconfig.get_path("purelib", scheme, vars={"base": base, "platbase": base})
print(json.dumps({
    "executable": exe,
    "implementation": sys.implementation.name,
    "version": platform.python_version(),
    "major_minor": "%d.%d" % sys.version_info[:2],
    "soabi": sysconfig.get_config_var("SOABI") or "",
    "platform": sysconfig.get_platform(),
    "purelib": os.path.relpath(purelib, base),
    "stdlib": sysconfig.get_path("stdlib"),
}))
"#;

#[derive(Deserialize)]
struct ProbeOutput {
    executable: String,
    implementation: String,
    version: String,
    major_minor: String,
    soabi: String,
    platform: String,
    purelib: String,
    stdlib: String,
}

/// Finds the interpreter for `request` (default `python3`), from the cache when it is still true.
pub fn find(index: &Index, request: Option<&str>) -> Result<PythonInfo> {
    let request = request.unwrap_or("python3");
    let candidate = locate(request)?;
    let key = cache_key(&candidate)?;
    if let Some(info) = index.python(&key)?
        && mtime_ns(Path::new(&info.executable)) == Some(info.exe_mtime_ns)
    {
        return Ok(info);
    }
    let info = probe(&candidate)?;
    let mut batch = Batch::default();
    batch.put_python(&key, &info);
    index.write(batch)?;
    Ok(info)
}

/// A path, a command on PATH, or a version (`3.11` → `python3.11`).
fn locate(request: &str) -> Result<PathBuf> {
    if request.contains('/') {
        let path = PathBuf::from(request);
        return if path.exists() {
            Ok(std::path::absolute(&path).unwrap_or(path))
        } else {
            Err(Error::PythonNotFound {
                request: request.to_owned(),
                detail: format!("`{request}` does not exist"),
            })
        };
    }
    let is_version = request.chars().all(|c| c.is_ascii_digit() || c == '.')
        && request.starts_with(|c: char| c.is_ascii_digit());
    let command = if is_version {
        format!("python{request}")
    } else {
        request.to_owned()
    };
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(&command))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::PythonNotFound {
            request: request.to_owned(),
            detail: format!("`{command}` is not on PATH"),
        })
}

/// For a binary: its real path and identity. For a script (a pyenv or asdf shim), the script's identity
/// plus what selects the version behind it: the environment, the working directory and the contents of
/// the version files a shim consults (`.python-version` up the tree, `$PYENV_ROOT/version`,
/// `.tool-versions`).
fn cache_key(candidate: &Path) -> Result<String> {
    let real = std::fs::canonicalize(candidate).map_err(|e| Error::PythonNotFound {
        request: candidate.display().to_string(),
        detail: e.to_string(),
    })?;
    let meta = std::fs::metadata(&real).map_err(|e| Error::PythonNotFound {
        request: candidate.display().to_string(),
        detail: e.to_string(),
    })?;
    let mut key = format!(
        "{}|{}|{}|{}",
        real.display(),
        meta.ino(),
        meta.size(),
        nanos(meta.mtime(), meta.mtime_nsec())
    );
    if is_script(&real) {
        let cwd = std::env::current_dir().unwrap_or_default();
        let pyenv_root = std::env::var("PYENV_ROOT").unwrap_or_default();
        key.push_str(&format!(
            "|shim|{}|{pyenv_root}|{}",
            std::env::var("PYENV_VERSION").unwrap_or_default(),
            cwd.display()
        ));
        let mut version_files = vec![Path::new(&pyenv_root).join("version")];
        for dir in cwd.ancestors() {
            version_files.push(dir.join(".python-version"));
            version_files.push(dir.join(".tool-versions"));
        }
        for file in version_files {
            if let Ok(text) = std::fs::read_to_string(&file) {
                key.push_str(&format!("|{}={text}", file.display()));
            }
        }
    }
    Ok(blake3::hash(key.as_bytes()).to_hex().to_string())
}

fn is_script(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == b"#!")
}

pub(crate) fn mtime_ns(path: &Path) -> Option<i64> {
    std::fs::metadata(path)
        .ok()
        .map(|m| nanos(m.mtime(), m.mtime_nsec()))
}

/// Runs `code` on the interpreter in isolated mode (no user site, no PYTHON* variables) and parses the
/// JSON it prints.
pub(crate) fn run_probe<T: DeserializeOwned>(interpreter: &Path, code: &str) -> Result<T> {
    let bad = |detail: String| Error::BadPython {
        path: interpreter.to_owned(),
        detail,
    };
    let output = Command::new(interpreter)
        .args(["-I", "-c", code])
        .output()
        .map_err(|e| bad(format!("could not run it: {e}")))?;
    if !output.status.success() {
        return Err(bad(format!(
            "it exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| bad(format!("it answered something unexpected ({e})")))
}

fn probe(candidate: &Path) -> Result<PythonInfo> {
    let bad = |detail: String| Error::BadPython {
        path: candidate.to_owned(),
        detail,
    };
    let out: ProbeOutput = run_probe(candidate, PROBE)?;
    let real = PathBuf::from(&out.executable);
    let bin_dir = real
        .parent()
        .ok_or_else(|| bad("its executable has no directory".into()))?;
    // A venv links `bin/python` to `pythonX.Y`, which every CPython install provides.
    let versioned = format!("python{}", out.major_minor);
    let exe_name = if bin_dir.join(&versioned).exists() {
        versioned
    } else {
        real.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or(versioned)
    };
    let exe_mtime_ns = mtime_ns(&real).ok_or_else(|| bad("its executable vanished".into()))?;
    Ok(PythonInfo {
        executable: out.executable.clone(),
        bin_dir: bin_dir.display().to_string(),
        exe_name,
        exe_mtime_ns,
        purelib: out.purelib,
        stdlib: out.stdlib,
        tag: PythonTag {
            implementation: out.implementation,
            version: out.version,
            soabi: out.soabi,
            platform: out.platform,
        },
    })
}
