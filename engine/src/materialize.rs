//! The materializer: makes a directory hold a tree, touching only the paths that differ.
//!
//! File content comes from the object store by the best link mode the two filesystems allow, probed once
//! per (store, target) filesystem pair and remembered: reflink (independent copy-on-write copy), hardlink
//! (shares the read-only object's inode), copy. Empty and tiny files are always written as new files, so no
//! two files ever share an inode that a tool could write through (OSTree #925, pnpm #4382). Files with
//! placeholders are rendered for this directory. Existing files are replaced by rename, so a process
//! reading the environment sees the old or the new file, never half of one.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use rustc_hash::FxHashSet;
use store_format::{Node, ObjectId, Placeholders};

use crate::capture::{FileStat, PYCACHE, StatCache, now_ns};
use crate::crash;
use crate::error::{Error, IoContext, Result};
use crate::objects::ObjectStore;
use crate::tree::{PathChange, Tree, TreeDigest};
use fresh::FreshDirs;

/// A file or symlink an apply wrote: its path, the file's stat, what it holds, whether it was linked.
type Written<'t> = (&'t str, Option<FileStat>, &'t Node, bool);

mod fresh;

/// Files of at most this many bytes are written, never linked.
pub const TINY_FILE_MAX: u64 = 256;

/// Prefix of the temporary names used to replace existing paths; a crash may leave one, which the
/// recovery apply removes like any other stray path.
const TMP_PREFIX: &str = ".blast-tmp.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LinkMode {
    Reflink,
    Hardlink,
    Copy,
}

impl LinkMode {
    pub fn parse(s: &str) -> Option<LinkMode> {
        match s {
            "reflink" => Some(LinkMode::Reflink),
            "hardlink" => Some(LinkMode::Hardlink),
            "copy" => Some(LinkMode::Copy),
            _ => None,
        }
    }
}

/// The mode `BLAST_LINK_MODE` forces; unset or empty, none. Found by exploratory testing: a misspelt
/// mode was ignored, and the probed one used.
pub fn forced_link_mode() -> Result<Option<LinkMode>> {
    let Some(forced) = std::env::var_os("BLAST_LINK_MODE").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match forced.to_str().and_then(LinkMode::parse) {
        Some(mode) => Ok(Some(mode)),
        None => Err(Error::Invalid(format!(
            "BLAST_LINK_MODE is `{}`, not a link mode: set it to reflink, hardlink or copy, or \
             unset it to let blast probe the filesystem",
            forced.to_string_lossy().escape_debug()
        ))),
    }
}

/// Tries reflink, then hardlink, from a file in the store to `target_dir`; the first that works wins.
pub fn probe_link_mode(store_dir: &Path, target_dir: &Path) -> Result<LinkMode> {
    let probe = store_dir.join(format!("{TMP_PREFIX}probe-{}", std::process::id()));
    fs::write(&probe, b"blast link probe").at("writing link probe", &probe)?;
    let dest = target_dir.join(format!("{TMP_PREFIX}probe-{}", std::process::id()));
    let mode = if reflink_copy::reflink(&probe, &dest).is_ok() {
        Ok(LinkMode::Reflink)
    } else {
        match fs::hard_link(&probe, &dest) {
            Ok(()) => Ok(LinkMode::Hardlink),
            // Copies are the answer only where a file can be made: a directory that cannot be
            // written now (read-only, no permission, full) says nothing of the pair, and would have
            // every later environment there copied. (Filesystems refuse links with EXDEV, EPERM,
            // EOPNOTSUPP, ENOSYS from FUSE, EACCES from a security module…)
            Err(_) => match OpenOptions::new().write(true).create_new(true).open(&dest) {
                Ok(_) => Ok(LinkMode::Copy),
                Err(e) => Err(e).at("writing into", target_dir),
            },
        }
    };
    let _ = fs::remove_file(&dest);
    let _ = fs::remove_file(&probe);
    mode
}

/// Fewer items than this are worked through on the calling thread: for a new environment's dozen
/// files or a small package, starting the rayon pool's threads costs more than it saves.
const PARALLEL_MIN: usize = 64;

/// `f` applied to every item, in order, on the rayon pool when there are enough of them.
fn map_all<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync + Send,
) -> Result<Vec<R>> {
    if items.len() < PARALLEL_MIN {
        items.iter().map(f).collect()
    } else {
        items.par_iter().map(f).collect()
    }
}

/// What applying a tree to a directory did.
#[derive(Debug, Default)]
pub struct ApplyStats {
    /// Files and symlinks removed, those a removed directory held included (directories are not
    /// counted, as they are not in `written`).
    pub removed: usize,
    /// Files and symlinks written.
    pub written: usize,
    pub linked: usize,
    /// The target tree's digest when the cache came stamped, whose digest is then `current`'s (a
    /// scan drops a stamp its directory does not match): it follows from that one and the changes.
    pub target_digest: Option<TreeDigest>,
}

pub struct Materializer<'a> {
    pub store: &'a ObjectStore,
    pub placeholders: &'a Placeholders,
    pub mode: LinkMode,
}

impl Materializer<'_> {
    /// Makes `root`, which holds `current`, hold `target`. Updates `cache` with the stat of every file
    /// it writes, so the next capture recognises them without reading them.
    pub fn apply(
        &self,
        root: &Path,
        current: &Tree,
        target: &Tree,
        cache: &mut StatCache,
    ) -> Result<ApplyStats> {
        fs::create_dir_all(root).at("creating environment directory", root)?;
        let changes = current.changes_to(target);
        let mut stats = ApplyStats {
            target_digest: cache.stamp().map(|stamp| stamp.tree.after(&changes)),
            ..ApplyStats::default()
        };
        open_changed_dirs(root, &changes);

        // 1. Removals and kind changes, top-most first; a removed directory takes its subtree along.
        let mut removed_dirs: Vec<&str> = Vec::new();
        for change in &changes {
            let (path, old, new) = match change {
                PathChange::Removed(p, old) => (*p, *old, None),
                PathChange::Modified(p, old, new) => (*p, *old, Some(*new)),
                PathChange::Added(..) => continue,
            };
            let kind_changed =
                new.is_some_and(|n| std::mem::discriminant(n) != std::mem::discriminant(old));
            if new.is_some() && !kind_changed {
                continue;
            }
            if removed_dirs.iter().any(|d| is_below(path, d)) {
                continue;
            }
            let abs = root.join(path);
            crate::fsutil::remove_tree(&abs)?;
            purge_stale_bytecode(&abs);
            cache.forget(path);
            if *old == Node::Dir {
                removed_dirs.push(path);
                stats.removed += current
                    .descendants(path)
                    .filter(|(_, node)| **node != Node::Dir)
                    .count();
            } else {
                stats.removed += 1;
            }
        }
        crash::point("apply-removed");

        // 2. Directories absent now (new ones, and those replacing what step 1 removed) are made and
        // filled through handles of their parents, in parallel (`fresh`).
        let mut fresh = FreshDirs::default();
        // 3. Then the files and symlinks of directories that were there, in parallel:
        // (path, node, whether something is there to replace).
        let mut writes: Vec<(&str, &Node, bool)> = Vec::new();
        for change in &changes {
            match change {
                PathChange::Added(path, Node::Dir) | PathChange::Modified(path, _, Node::Dir) => {
                    fresh.add_dir(path);
                }
                PathChange::Added(path, node) => {
                    if !fresh.add_file(path, node) {
                        writes.push((path, node, false));
                    }
                }
                PathChange::Modified(path, old, node) => writes.push((
                    path,
                    node,
                    std::mem::discriminant(*old) == std::mem::discriminant(*node),
                )),
                PathChange::Removed(..) => {}
            }
        }
        let half = ((writes.len() + fresh.file_count()) / 2).max(1);
        let done = AtomicUsize::new(0);
        let count_file = || {
            if done.fetch_add(1, Ordering::Relaxed) + 1 == half {
                crash::point("apply-half");
            }
        };
        let mut written = self.fill_fresh(root, &fresh, &count_file)?;
        written.extend(map_all(&writes, |&(path, node, replace)| {
            let abs = root.join(path);
            // Before the write, so a crash between the two cannot leave a written module whose old
            // bytecode survives (the recovery apply finds the module in place and skips it).
            purge_stale_bytecode(&abs);
            let was_linked = self.write_node(&abs, node, replace)?;
            count_file();
            let stat = match node {
                Node::File { .. } => Some(FileStat::of(
                    &abs.symlink_metadata().at("inspecting", &abs)?,
                )),
                _ => None,
            };
            Ok((path, stat, node, was_linked))
        })?);
        self.check_written_files(root, &mut written)?;
        let now = now_ns();
        for &(path, stat, node, _) in &written {
            match stat {
                Some(stat) => cache.record(path, stat, node, now),
                None => cache.forget(path),
            }
        }
        stats.written = writes.len() + fresh.file_count();
        stats.linked = written.iter().filter(|&&(.., linked)| linked).count();
        cache.forget_below(&removed_dirs);
        Ok(stats)
    }

    /// Checks the files written against their nodes, from the stats taken for the stat cache. One of
    /// another size came from an object written in place through an environment's link (`>>` as
    /// root): the apply fails, naming the object, rather than spread the damage. A hardlinked file that
    /// did not take its object's mode (`chmod` of a link, by root or the owner, changes the object's,
    /// and every other link's) is replaced by a copy of its own; `blast verify` names the object.
    fn check_written_files(
        &self,
        root: &Path,
        written: &mut [(&str, Option<FileStat>, &Node, bool)],
    ) -> Result<()> {
        let copier = Materializer {
            mode: LinkMode::Copy,
            ..*self
        };
        for (path, stat, node, linked) in written.iter_mut() {
            let (
                Some(found),
                Node::File {
                    object,
                    size,
                    executable,
                    relocatable,
                },
            ) = (*stat, *node)
            else {
                continue;
            };
            let object_intact = || {
                self.store
                    .existing_object_path(object, *executable)
                    .and_then(|path| path.symlink_metadata().ok())
                    .is_some_and(|meta| meta.len() == *size)
            };
            let own_inode = !(*linked && self.mode == LinkMode::Hardlink);
            if !relocatable && found.size != *size && own_inode && object_intact() {
                // A file of its own (copied, reflinked, tiny) that another program wrote to after blast
                // did (found by exploratory testing: it was called damage in the store).
                return Err(Error::Invalid(format!(
                    "`{path}` changed while blast wrote it ({} bytes, where it wrote {size}): \
                     something else writes in the environment; run the command again once it is done",
                    found.size
                )));
            }
            if !relocatable && found.size != *size {
                return Err(Error::Invalid(format!(
                    "object {} for `{path}` is damaged in the store: {} bytes, where its layers \
                     record {size}; `blast verify` names it and says how to bring it back",
                    object.short(),
                    found.size
                )));
            }
            // Reflinks and copies have modes of their own.
            if !*linked
                || self.mode != LinkMode::Hardlink
                || found.mode & 0o7777 == ObjectStore::object_mode(*executable)
            {
                continue;
            }
            let abs = root.join(*path);
            copier.write_node(&abs, node, true)?;
            *stat = Some(FileStat::of(
                &abs.symlink_metadata().at("inspecting", &abs)?,
            ));
            *linked = false;
        }
        Ok(())
    }

    /// Writes one file or symlink at `abs`. A path that should be new is created in place (one syscall
    /// for a link); one that exists, or turns out to, is replaced through a temporary name and a rename.
    /// Returns true when the file was linked from the store.
    fn write_node(&self, abs: &Path, node: &Node, replace: bool) -> Result<bool> {
        if !replace {
            match self.create_at(abs, node) {
                Err(e) if e.is_already_exists() => {}
                done => return done,
            }
        }
        // A name of its own, never one the directory holds: a captured file may be called anything
        // (found by exploratory testing: `.blast-tmp.NAME` was removed as a leftover, and it made a
        // name of 245 bytes or more too long to replace).
        let (tmp, linked) = loop {
            let tmp = tmp_beside(abs);
            match self.create_at(&tmp, node) {
                Err(e) if e.is_already_exists() => continue,
                created => break (tmp, created?),
            }
        };
        if let Err(e) = fs::rename(&tmp, abs) {
            // Left, it would read as a change of the user's (an immutable file refuses the rename).
            let _ = crate::fsutil::remove_tree(&tmp);
            return Err(e).at("replacing", abs);
        }
        // Renaming a link onto another link of the same inode does nothing and leaves both names.
        crate::fsutil::remove_file_if_exists(&tmp)?;
        // Again after the rename: a Python process may have cached the old module in between.
        purge_stale_bytecode(abs);
        Ok(linked)
    }

    /// Creates `dest`, which must not exist, holding `node`.
    fn create_at(&self, dest: &Path, node: &Node) -> Result<bool> {
        match node {
            Node::Symlink {
                target,
                relocatable,
            } => {
                let target = if *relocatable {
                    self.placeholders.render_str(target)
                } else {
                    target.clone()
                };
                std::os::unix::fs::symlink(&target, dest).at("creating symlink", dest)?;
                Ok(false)
            }
            Node::File {
                object,
                size,
                executable,
                relocatable,
            } => {
                let mode = file_mode(*executable);
                match self.bytes_to_write(object, *size, *relocatable)? {
                    Some(bytes) => {
                        write_new(dest, &bytes, mode)?;
                        Ok(false)
                    }
                    None => self.place(object, *executable, dest, mode),
                }
            }
            Node::Dir => Err(Error::Invalid(format!(
                "internal: directory `{}` reached the file writer",
                dest.display()
            ))),
        }
    }

    /// The bytes a file is written with when it is written rather than placed by the link mode:
    /// rendered for this directory when relocatable, the object's own when tiny.
    fn bytes_to_write(
        &self,
        object: &ObjectId,
        size: u64,
        relocatable: bool,
    ) -> Result<Option<Vec<u8>>> {
        if relocatable {
            let stored = self.store.read_object(object)?;
            Ok(Some(self.placeholders.render_bytes(&stored)))
        } else if size <= TINY_FILE_MAX {
            self.store.read_object(object).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Puts the object at `dest` by this materializer's link mode, falling back to a copy when a link is
    /// refused (too many links, a filesystem boundary, only the other mode variant in the store).
    fn place(&self, object: &ObjectId, executable: bool, dest: &Path, mode: u32) -> Result<bool> {
        let source = self.store.object_path(object, executable);
        let set_mode = || {
            fs::set_permissions(dest, fs::Permissions::from_mode(mode)).at("setting mode of", dest)
        };
        let attempt = match self.mode {
            LinkMode::Reflink => reflink_copy::reflink(&source, dest),
            LinkMode::Hardlink => fs::hard_link(&source, dest),
            LinkMode::Copy => Err(ErrorKind::Unsupported.into()),
        };
        match attempt {
            Ok(()) => {
                if self.mode == LinkMode::Reflink {
                    set_mode()?;
                }
                return Ok(true);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(e).at("linking object to", dest);
            }
            Err(_) => {}
        }
        let source = self
            .store
            .existing_object_path(object, executable)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "object {} for `{}` is missing from the store: run `blast verify`",
                    object.short(),
                    dest.display()
                ))
            })?;
        // Created new, as a link would be: something at `dest` is not this apply's to overwrite.
        let mut copy = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(dest)
            .at("copying object to", dest)?;
        let copied =
            fs::File::open(&source).and_then(|mut from| std::io::copy(&mut from, &mut copy));
        if let Err(e) = copied {
            discard_partial(dest);
            return Err(e).at("copying object to", dest);
        }
        set_mode()?;
        Ok(false)
    }
}

fn file_mode(executable: bool) -> u32 {
    if executable { 0o755 } else { 0o644 }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .at("creating", path)?;
    fill_created(file, bytes, mode, || path.to_owned()).inspect_err(|_| discard_partial(path))
}

/// Removes the file a write created at `path` and could not finish (the filesystem full): left, it
/// would read as a change of the user's, and finishing the move would need room for it besides the
/// whole file.
fn discard_partial(path: &Path) {
    let _ = fs::remove_file(path);
}

/// Writes `bytes` into `file`, created at `path` with `mode` a moment ago.
fn fill_created(
    mut file: fs::File,
    bytes: &[u8],
    mode: u32,
    path: impl Fn() -> PathBuf,
) -> Result<()> {
    if let Err(e) = file.write_all(bytes) {
        return Err(e).at("writing", &path());
    }
    unmask(&file, mode, path)
}

/// Gives `file`, created with `mode` a moment ago, all of `mode`: a umask beyond 022 narrowed it at
/// creation; the usual one did not, saving a syscall a file. `path` names the file in an error.
fn unmask(file: &fs::File, mode: u32, path: impl FnOnce() -> PathBuf) -> Result<()> {
    if umask_narrows(mode) {
        file.set_permissions(fs::Permissions::from_mode(mode))
            .at("setting mode of", &path())?;
    }
    Ok(())
}

/// Whether this process's umask removes bits of `mode` (read once from /proc: setting the umask to
/// read it would race with other threads creating files).
fn umask_narrows(mode: u32) -> bool {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let umask = *UMASK.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o777)
    });
    mode & umask != 0
}

/// True for the temporary names the materializer uses (a crash may leave one behind):
/// `.blast-tmp.<pid>-<n>` and the link probe's `.blast-tmp.probe-<pid>`, not a user's `.blast-tmp.notes`
/// (found in review: recovery would have taken it for a leftover).
pub fn is_temporary(path: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    path.rsplit('/')
        .next()
        .and_then(|name| name.strip_prefix(TMP_PREFIX))
        .is_some_and(|rest| match rest.strip_prefix("probe-") {
            Some(pid) => digits(pid),
            None => rest
                .split_once('-')
                .is_some_and(|(pid, n)| digits(pid) && digits(n)),
        })
}

/// A temporary name beside `path`, new to this process: short, whatever the length of `path`'s name.
fn tmp_beside(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_file_name(format!("{TMP_PREFIX}{}-{n}", std::process::id()))
}

/// `rel` below `root`: `root` itself for the empty path, where `join` would add a trailing slash.
fn under(root: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        root.to_owned()
    } else {
        root.join(rel)
    }
}

/// Gives the owner write and search permission on each directory there is whose entries `changes`
/// change: one made read-only since would stop the move half-way, and every command after it, which
/// would try to finish the move again. Directories the apply makes are not looked at.
fn open_changed_dirs(root: &Path, changes: &[PathChange<'_>]) {
    let made: FxHashSet<&str> = changes
        .iter()
        .filter_map(|change| match change {
            PathChange::Added(path, Node::Dir) => Some(*path),
            _ => None,
        })
        .collect();
    let parents: FxHashSet<&str> = changes
        .iter()
        .map(|change| parent_of(change.path()))
        .filter(|parent| !made.contains(parent))
        .collect();
    for parent in parents {
        crate::fsutil::open_dir_for_owner(&root.join(parent));
    }
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

fn is_below(path: &str, dir: &str) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

/// Python trusts a timestamp-based `.pyc` whose recorded mtime and size match the source; a replaced
/// module can match both (hardlinked objects keep their own mtimes), so its cached bytecode goes.
fn purge_stale_bytecode(source: &Path) {
    let (Some(stem), Some(dir)) = (
        source
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".py")),
        source.parent(),
    ) else {
        return;
    };
    let cache_dir = dir.join(PYCACHE);
    let Ok(entries) = fs::read_dir(&cache_dir) else {
        return;
    };
    let prefix = format!("{stem}.");
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".pyc"))
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture;
    use std::os::unix::fs::MetadataExt;

    /// A store with an environment directory beside it, yet to be made.
    struct Fixture {
        _home: tempfile::TempDir,
        store: ObjectStore,
        root: PathBuf,
        placeholders: Placeholders,
    }

    impl Fixture {
        fn new() -> Fixture {
            let home = tempfile::tempdir().unwrap();
            let store = ObjectStore::at(&home.path().join("store"));
            store.create_dirs().unwrap();
            let root = home.path().join("env");
            let placeholders = Placeholders {
                env_prefix: root.to_str().unwrap().to_owned(),
                python_bin: "/usr/bin".into(),
            };
            Fixture {
                _home: home,
                store,
                root,
                placeholders,
            }
        }

        fn put(&self, bytes: &[u8], executable: bool) -> ObjectId {
            let staging = self.store.begin().unwrap();
            let id = staging.put_object(bytes, executable).unwrap();
            staging.commit().unwrap();
            id
        }

        fn materializer(&self) -> Materializer<'_> {
            self.materializer_with(LinkMode::Hardlink)
        }

        fn materializer_with(&self, mode: LinkMode) -> Materializer<'_> {
            Materializer {
                store: &self.store,
                placeholders: &self.placeholders,
                mode,
            }
        }

        /// Makes `target` in the directory, which holds nothing the walk knows of, by `mode`.
        fn apply_new(&self, mode: LinkMode, target: &Tree) -> ApplyStats {
            self.materializer_with(mode)
                .apply(
                    &self.root,
                    &Tree::default(),
                    target,
                    &mut StatCache::default(),
                )
                .unwrap()
        }

        /// The tree the directory holds, read back by a capture.
        fn read_back(&self) -> Tree {
            let scan =
                capture::scan(&self.root, StatCache::default(), &self.placeholders, None).unwrap();
            scan.tree().clone()
        }
    }

    fn file(object: ObjectId, size: usize) -> Node {
        Node::File {
            object,
            size: size as u64,
            executable: false,
            relocatable: false,
        }
    }

    fn tree_of(entries: &[(&str, Node)]) -> Tree {
        let mut tree = Tree::default();
        for (path, node) in entries {
            tree.entries.insert((*path).to_owned(), node.clone());
        }
        tree
    }

    /// New directories with linked, executable, tiny and rendered files and a symlink, enough of them
    /// that the fill runs on the pool; and the executable object.
    fn varied_tree(fixture: &Fixture) -> (Tree, ObjectId) {
        let big = vec![b'b'; 4000];
        let script = format!(
            "#!{}/bin/python\n{}",
            store_format::ENV_PREFIX_TOKEN,
            "#".repeat(300)
        );
        let (large, tool, tiny, rendered) = (
            fixture.put(&big, false),
            fixture.put(&big, true),
            fixture.put(b"tiny", false),
            fixture.put(script.as_bytes(), true),
        );
        // Past the stat cache's racy window, so the linked files' stats are recorded.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut entries = vec![
            ("bin", Node::Dir),
            (
                "bin/tool",
                Node::File {
                    object: tool,
                    size: 4000,
                    executable: true,
                    relocatable: false,
                },
            ),
            (
                "bin/script",
                Node::File {
                    object: rendered,
                    size: script.len() as u64,
                    executable: true,
                    relocatable: true,
                },
            ),
            (
                "bin/py",
                Node::Symlink {
                    target: "tool".into(),
                    relocatable: false,
                },
            ),
            ("pyvenv.cfg", file(tiny, 4)),
        ];
        // Deep and wide enough that the fill runs on the pool, with directories holding only
        // directories and one holding nothing.
        let paths: Vec<(String, Node)> = (0..40)
            .flat_map(|i| {
                [
                    (format!("lib/p{i}"), Node::Dir),
                    (format!("lib/p{i}/sub"), Node::Dir),
                    (format!("lib/p{i}/sub/deep"), Node::Dir),
                    (format!("lib/p{i}/sub/deep/m.py"), file(large, big.len())),
                    (format!("lib/p{i}/__init__.py"), file(tiny, 4)),
                    (format!("lib/p{i}/empty"), Node::Dir),
                ]
            })
            .chain([("lib".to_owned(), Node::Dir)])
            .collect();
        entries.extend(
            paths
                .iter()
                .map(|(path, node)| (path.as_str(), node.clone())),
        );
        let target = tree_of(&entries);
        (target, tool)
    }

    /// Only the materializer's own names count as leftovers: recovery removes what they explain.
    #[test]
    fn temporary_names_are_the_materializers_own() {
        for name in [
            ".blast-tmp.123-0",
            "lib/.blast-tmp.9-42",
            ".blast-tmp.probe-77",
        ] {
            assert!(is_temporary(name), "{name}");
        }
        for name in [
            ".blast-tmp.notes",
            ".blast-tmp.f",
            ".blast-tmp.1-",
            ".blast-tmp.probe-",
            "dir.blast-tmp.1-2",
            ".blast-tmp.1-2/inside",
        ] {
            assert!(!is_temporary(name), "{name}");
        }
    }

    #[test]
    fn new_directories_are_made_and_filled_with_the_target_bytes_modes_and_links() {
        let fixture = Fixture::new();
        let (target, tool) = varied_tree(&fixture);

        let mut cache = StatCache::default();
        let stats = fixture
            .materializer()
            .apply(&fixture.root, &Tree::default(), &target, &mut cache)
            .unwrap();

        assert_eq!(fixture.read_back(), target);
        assert_eq!(
            stats.written,
            target.entries.values().filter(|n| **n != Node::Dir).count()
        );
        assert_eq!(
            stats.linked, 41,
            "the large files are linked, the tiny and rendered written"
        );
        let meta = |path: &str| fixture.root.join(path).symlink_metadata().unwrap();
        assert_eq!(
            meta("bin/tool").ino(),
            fixture
                .store
                .object_path(&tool, true)
                .metadata()
                .unwrap()
                .ino()
        );
        assert_eq!(
            meta("lib/p0/__init__.py").nlink(),
            1,
            "tiny files are never linked"
        );
        assert_eq!(meta("bin/script").nlink(), 1, "rendered files are written");
        // The linked files' stats are recorded (their objects' mtimes are past the racy window), and
        // match what a walk finds: only the files the cache does not vouch for are read again. A file
        // written just now is recorded only once the window has passed, which a slow apply reaches.
        let linked: Vec<&String> = target
            .entries
            .iter()
            .filter(|(_, node)| {
                matches!(node, Node::File { size, relocatable: false, .. } if *size > TINY_FILE_MAX)
            })
            .map(|(path, _)| path)
            .collect();
        assert_eq!(linked.len(), 41);
        for path in linked {
            assert!(cache.has_file(path), "{path} is not recorded");
        }
        let recorded = cache.len();
        let files = target
            .entries
            .values()
            .filter(|n| matches!(n, Node::File { .. }))
            .count();
        let rescan = capture::scan(&fixture.root, cache, &fixture.placeholders, None).unwrap();
        assert_eq!(rescan.hashed, files - recorded);
    }

    /// Copies, and clones where the filesystem has them: on one without (ext4), the bytes are copied
    /// into the file the refused clone was made for.
    #[test]
    fn new_directories_are_filled_with_files_of_their_own_in_copy_and_reflink_modes() {
        for link_mode in [LinkMode::Copy, LinkMode::Reflink] {
            let fixture = Fixture::new();
            let (target, _) = varied_tree(&fixture);

            let stats = fixture.apply_new(link_mode, &target);

            assert_eq!(fixture.read_back(), target, "{link_mode:?}");
            if link_mode == LinkMode::Copy {
                assert_eq!(stats.linked, 0);
            }
            for (path, mode) in [("lib/p0/sub/deep/m.py", 0o644), ("bin/tool", 0o755)] {
                let meta = fixture.root.join(path).symlink_metadata().unwrap();
                let found = (meta.nlink(), meta.mode() & 0o777);
                assert_eq!(found, (1, mode), "{path} in {link_mode:?}");
            }
        }
    }

    #[test]
    fn a_new_directory_someone_made_meanwhile_has_its_files_replaced_and_bytecode_purged() {
        let fixture = Fixture::new();
        let big = vec![b'n'; 2000];
        let large = fixture.put(&big, false);
        let target = tree_of(&[
            ("pkg", Node::Dir),
            ("pkg/mod.py", file(large, big.len())),
            ("pkg/other.py", file(large, big.len())),
        ]);
        // The current tree has no `pkg`, but by the time of the apply a program made it, with
        // bytecode for a module yet to come and another module in the way.
        let pycache = fixture.root.join("pkg").join(PYCACHE);
        fs::create_dir_all(&pycache).unwrap();
        fs::write(pycache.join("mod.cpython-311.pyc"), b"stale bytecode").unwrap();
        fs::write(fixture.root.join("pkg/other.py"), b"in the way").unwrap();

        fixture.apply_new(LinkMode::Hardlink, &target);

        assert!(!pycache.join("mod.cpython-311.pyc").exists());
        assert_eq!(fixture.read_back(), target);
    }

    /// Run by `new_directories_are_filled_within_a_low_descriptor_limit`, in a child process.
    #[test]
    #[ignore = "run in a child process with a low descriptor limit"]
    fn new_directories_in_many_existing_ones() {
        let fixture = Fixture::new();
        let big = vec![b'd'; 1000];
        let large = fixture.put(&big, false);
        let current = Tree {
            entries: (0..300).map(|i| (format!("p{i}"), Node::Dir)).collect(),
        };
        let materializer = fixture.materializer();
        let mut cache = StatCache::default();
        materializer
            .apply(&fixture.root, &Tree::default(), &current, &mut cache)
            .unwrap();
        // Each existing directory gains one: as many top directories, each with a parent of its own.
        let mut target = current.clone();
        for i in 0..300 {
            for (path, node) in [
                (format!("p{i}/new"), Node::Dir),
                (format!("p{i}/new/sub"), Node::Dir),
                (format!("p{i}/new/sub/m.py"), file(large, big.len())),
            ] {
                target.entries.insert(path, node);
            }
        }
        materializer
            .apply(&fixture.root, &current, &target, &mut cache)
            .unwrap();
        assert_eq!(fixture.read_back(), target);
    }

    #[test]
    fn new_directories_are_filled_within_a_low_descriptor_limit() {
        let test = std::env::current_exe().unwrap();
        let output = std::process::Command::new("prlimit")
            .arg("--nofile=64")
            .arg(test)
            .args([
                "--exact",
                "materialize::tests::new_directories_in_many_existing_ones",
                "--ignored",
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
