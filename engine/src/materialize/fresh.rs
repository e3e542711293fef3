//! Directories the apply makes, filled through handles of their parents.
//!
//! A directory absent from the current tree holds nothing yet, so everything below it is created,
//! never replaced, and no bytecode cache can be stale in it. Each one is made with `mkdirat` in its
//! parent's handle and filled through its own: each link, clone, new file and stat resolves one name
//! where a path from the root costs a dentry lookup per component (a new environment's files sit ten deep,
//! the store's objects seven), and subdirectories are made as soon as their parent exists, not a level
//! at a time.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};
use nix::sys::stat::Mode;
use rustc_hash::FxHashMap;
use store_format::Node;

use super::{
    LinkMode, Materializer, Written, file_mode, fill_created, parent_of, purge_stale_bytecode,
    under, unmask,
};
use crate::capture::FileStat;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::dir_handle;
use crate::objects::ObjectStore;

/// The directories an apply makes where the current tree has nothing, with what goes in them.
#[derive(Default)]
pub(super) struct FreshDirs<'t> {
    dirs: Vec<FreshDir<'t>>,
    /// Those whose parent exists already (the root, or a directory the apply keeps or makes first).
    tops: Vec<usize>,
    by_path: FxHashMap<&'t str, usize>,
    files: usize,
}

struct FreshDir<'t> {
    path: &'t str,
    subdirs: Vec<usize>,
    files: Vec<(&'t str, &'t Node)>,
}

impl<'t> FreshDirs<'t> {
    /// Takes a directory the current tree lacks; paths come in path order, so parents come first.
    pub(super) fn add_dir(&mut self, path: &'t str) {
        let index = self.dirs.len();
        match self.by_path.get(parent_of(path)) {
            Some(&parent) => self.dirs[parent].subdirs.push(index),
            None => self.tops.push(index),
        }
        self.dirs.push(FreshDir {
            path,
            subdirs: Vec::new(),
            files: Vec::new(),
        });
        self.by_path.insert(path, index);
    }

    /// Takes a file or symlink when its directory is one of these; false when it is not.
    pub(super) fn add_file(&mut self, path: &'t str, node: &'t Node) -> bool {
        let Some(&dir) = self.by_path.get(parent_of(path)) else {
            return false;
        };
        self.dirs[dir].files.push((path, node));
        self.files += 1;
        true
    }

    pub(super) fn file_count(&self) -> usize {
        self.files
    }
}

/// What the tasks of one fill share.
struct Fill<'a, 't> {
    materializer: &'a Materializer<'a>,
    dirs: &'a FreshDirs<'t>,
    root: &'a Path,
    objects: OwnedFd,
    /// Called once per file written.
    on_file: &'a (dyn Fn() + Sync),
    written: Mutex<Vec<Written<'t>>>,
    failure: Mutex<Option<Error>>,
}

impl Materializer<'_> {
    /// Makes every directory of `dirs` under `root` and writes their files, in parallel; returns
    /// what was written, as [`Materializer::apply`] records it.
    pub(super) fn fill_fresh<'t>(
        &self,
        root: &Path,
        dirs: &FreshDirs<'t>,
        on_file: &(dyn Fn() + Sync),
    ) -> Result<Vec<Written<'t>>> {
        if dirs.tops.is_empty() {
            return Ok(Vec::new());
        }
        let objects = self.store.objects_dir();
        let fill = Fill {
            materializer: self,
            dirs,
            root,
            objects: dir_handle(AT_FDCWD, objects, false)
                .at("opening the object store", objects)?,
            on_file,
            written: Mutex::new(Vec::with_capacity(dirs.files)),
            failure: Mutex::new(None),
        };
        rayon::scope(|scope| fill.start(scope));
        match fill
            .failure
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
        {
            None => Ok(fill
                .written
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner)),
            Some(e) => Err(e),
        }
    }
}

impl<'a, 't> Fill<'a, 't> {
    fn abs(&self, path: &str) -> PathBuf {
        under(self.root, path)
    }

    /// `result`, its error naming the action and `path` below the root: the whole path is only made
    /// for an error, as these calls are made for every directory and file.
    fn at<T>(&self, result: std::io::Result<T>, action: &'static str, path: &str) -> Result<T> {
        result.or_else(|e| Err(e).at(action, &self.abs(path)))
    }

    /// Starts a task for each top directory, which opens its parent by path: a handle is only ever
    /// held by a task that runs or by the subdirectories it queued, never by a queue of tops (an upgrade
    /// can add a directory to each of hundreds of package directories).
    fn start<'s>(&'s self, scope: &rayon::Scope<'s>) {
        for &top in &self.dirs.tops {
            scope.spawn(move |scope| {
                if self.failed() {
                    return;
                }
                let parent = self.abs(parent_of(self.dirs.dirs[top].path));
                let made = dir_handle(AT_FDCWD, &parent, false)
                    .at("opening", &parent)
                    .and_then(|parent| Ok((self.make_dir(&parent, top)?, parent)));
                match made {
                    Ok((existed, parent)) => self.dir(scope, Arc::new(parent), top, existed),
                    Err(e) => self.fail(e),
                }
            });
        }
    }

    fn fail(&self, e: Error) {
        if let Ok(mut failure) = self.failure.lock() {
            failure.get_or_insert(e);
        }
    }

    fn failed(&self) -> bool {
        self.failure
            .lock()
            .map_or(true, |failure| failure.is_some())
    }

    /// Fills directory `index`, which `parent` holds: makes its subdirectories and starts them, then
    /// writes its files. Each directory's entries are made by one task alone, as two tasks adding
    /// names to one directory would take turns at its lock.
    fn dir<'s>(
        &'s self,
        scope: &rayon::Scope<'s>,
        parent: Arc<OwnedFd>,
        index: usize,
        existed: bool,
    ) {
        if self.failed() {
            return;
        }
        let dir = &self.dirs.dirs[index];
        let opened = self.at(
            dir_handle(&*parent, Path::new(name_of(dir.path)), true),
            "opening",
            dir.path,
        );
        drop(parent);
        let filled = opened.and_then(|handle| {
            let handle = Arc::new(handle);
            for &subdir in &dir.subdirs {
                let existed = self.make_dir(&handle, subdir)?;
                let handle = Arc::clone(&handle);
                scope.spawn(move |scope| self.dir(scope, handle, subdir, existed));
            }
            self.files(&handle, dir, existed)
        });
        match filled {
            Ok(written) => {
                if let Ok(mut all) = self.written.lock() {
                    all.extend(written);
                }
            }
            Err(e) => self.fail(e),
        }
    }

    /// Makes directory `index` in `parent`; true when something made it first (another program,
    /// between the walk and now).
    fn make_dir(&self, parent: &OwnedFd, index: usize) -> Result<bool> {
        let path = self.dirs.dirs[index].path;
        match nix::sys::stat::mkdirat(parent, name_of(path), Mode::from_bits_truncate(0o777)) {
            Ok(()) => Ok(false),
            Err(Errno::EEXIST) => Ok(true),
            Err(e) => Err(std::io::Error::from(e)).at("creating directory", &self.abs(path)),
        }
    }

    fn files(
        &self,
        handle: &OwnedFd,
        dir: &FreshDir<'t>,
        existed: bool,
    ) -> Result<Vec<Written<'t>>> {
        let mut written = Vec::with_capacity(dir.files.len());
        for &(path, node) in &dir.files {
            // A directory made by someone else may hold anything, stale bytecode too: its files
            // take the general way.
            let linked = if existed {
                let abs = self.abs(path);
                purge_stale_bytecode(&abs);
                self.materializer.write_node(&abs, node, false)?
            } else {
                match self.create_in(handle, path, node) {
                    Err(e) if e.is_already_exists() => {
                        self.materializer.write_node(&self.abs(path), node, true)?
                    }
                    done => done?,
                }
            };
            (self.on_file)();
            let stat = match node {
                Node::File { .. } => {
                    let stat = nix::sys::stat::fstatat(
                        handle,
                        name_of(path),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    );
                    Some(FileStat::of_stat(&self.at(
                        stat.map_err(std::io::Error::from),
                        "inspecting",
                        path,
                    )?))
                }
                _ => None,
            };
            written.push((path, stat, node, linked));
        }
        Ok(written)
    }

    /// Creates `path`, whose directory is `handle`, holding `node`; true when linked from the store.
    fn create_in(&self, handle: &OwnedFd, path: &str, node: &Node) -> Result<bool> {
        let name = name_of(path);
        let materializer = self.materializer;
        match node {
            // Symlinks are few (an environment's `bin/python*`): the path-based way.
            Node::Symlink { .. } | Node::Dir => materializer.create_at(&self.abs(path), node),
            Node::File {
                object,
                size,
                executable,
                relocatable,
            } => {
                let mode = file_mode(*executable);
                if let Some(bytes) = materializer.bytes_to_write(object, *size, *relocatable)? {
                    self.write_in(handle, path, &bytes, mode)?;
                    return Ok(false);
                }
                let name_in_store = ObjectStore::object_name(object, *executable);
                match materializer.mode {
                    LinkMode::Hardlink => match nix::unistd::linkat(
                        &self.objects,
                        name_in_store.as_str(),
                        handle,
                        name,
                        AtFlags::empty(),
                    ) {
                        Ok(()) => return Ok(true),
                        Err(Errno::EEXIST) => {
                            return Err(std::io::Error::from(Errno::EEXIST))
                                .at("linking object to", &self.abs(path));
                        }
                        // Too many links, or the other mode's variant: the general way copies.
                        Err(_) => {}
                    },
                    LinkMode::Reflink => {
                        if let Some(cloned) = self.clone_in(handle, path, &name_in_store, mode)? {
                            return Ok(cloned);
                        }
                    }
                    LinkMode::Copy => {}
                }
                materializer.place(object, *executable, &self.abs(path), mode)
            }
        }
    }

    /// Clones the object `name_in_store` into a new file at `path`, whose directory is `handle`, with
    /// `mode`, or copies its bytes there when the filesystem refuses the clone; `None` when that
    /// variant of the object is missing. True when cloned.
    fn clone_in(
        &self,
        handle: &OwnedFd,
        path: &str,
        name_in_store: &str,
        mode: u32,
    ) -> Result<Option<bool>> {
        let Ok(source) = nix::fcntl::openat(
            &self.objects,
            name_in_store,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            return Ok(None);
        };
        let mut source = File::from(source);
        let mut clone = self.create_file(handle, path, mode)?;
        let cloned = reflink_copy::reflink_file(&source, &clone).is_ok();
        if !cloned {
            let copied = std::io::copy(&mut source, &mut clone);
            self.at(copied, "copying object to", path)
                .inspect_err(|_| discard_partial(handle, path))?;
        }
        unmask(&clone, mode, || self.abs(path))?;
        Ok(Some(cloned))
    }

    fn write_in(&self, handle: &OwnedFd, path: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let file = self.create_file(handle, path, mode)?;
        fill_created(file, bytes, mode, || self.abs(path))
            .inspect_err(|_| discard_partial(handle, path))
    }

    /// A new file at `path`, whose directory is `handle`, with `mode` (`EEXIST` when something is
    /// there).
    fn create_file(&self, handle: &OwnedFd, path: &str, mode: u32) -> Result<File> {
        let created = nix::fcntl::openat(
            handle,
            name_of(path),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        );
        self.at(created.map_err(std::io::Error::from), "creating", path)
            .map(File::from)
    }
}

/// Removes the file a write created at `path` in `handle` and could not finish (see
/// [`super::discard_partial`]).
fn discard_partial(handle: &OwnedFd, path: &str) {
    let _ = nix::unistd::unlinkat(
        handle,
        name_of(path),
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
}

fn name_of(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, name)| name)
}
