//! Reading an overlay's upper directory, the changeset of a program that ran over an environment, into
//! the tree its changes make.
//!
//! An installer in the sandbox writes through the overlay, so a file it would hardlink from its cache
//! cannot be linked there (`EXDEV`: the cache is another mount) and gets copied instead. blast asks uv
//! for symlinks into its cache instead, and [`CacheLinks`] turns each back into the file it points to:
//! its bytes are stored as an object, read once, and copied only when the store does not have them.

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::SFlag;
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use store_format::{Node, Placeholders};

use super::{FileStat, PYCACHE, ScanCtx, Sink, StatCache, special_kind, symlink_node};
use crate::error::{Error, IoContext, Result};
use crate::imports::is_hook_file;
use crate::tree::Tree;

/// One entry of an upper directory, in walk order (a directory before what is in it).
enum UpperEntry {
    /// A character device 0/0: the path was removed.
    Whiteout(String),
    /// A directory; `opaque` when it replaced the lower directory's content entirely.
    Dir {
        path: String,
        opaque: bool,
    },
    File {
        abs: PathBuf,
        path: String,
        meta: fs::Metadata,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// The installer's cache directories, whose files its symlinks stand for (see the module's doc).
#[derive(Default)]
pub struct CacheLinks {
    /// Each cache as named and as it really is (its path may hold a symlink), with a handle on it.
    caches: Vec<(PathBuf, OwnedFd)>,
}

impl CacheLinks {
    /// The caches among `dirs` that exist; symlinks into any other directory stay symlinks.
    pub fn open(dirs: &[PathBuf]) -> CacheLinks {
        let mut caches = Vec::new();
        for dir in dirs {
            let Ok(handle) = File::open(dir) else {
                continue;
            };
            let real = fs::canonicalize(dir).ok().filter(|real| real != dir);
            for name in [Some(dir.clone()), real].into_iter().flatten() {
                if let Ok(handle) = handle.try_clone() {
                    caches.push((name, OwnedFd::from(handle)));
                }
            }
        }
        CacheLinks { caches }
    }

    /// The cache holding `target` (an absolute symlink target) and its path there, if any does.
    fn locate<'t>(&self, target: &'t str) -> Option<(&OwnedFd, &'t Path)> {
        self.caches.iter().find_map(|(dir, handle)| {
            Path::new(target)
                .strip_prefix(dir)
                .ok()
                .filter(|rel| !rel.as_os_str().is_empty())
                .map(|rel| (handle, rel))
        })
    }

    /// Opens the regular file `rel` of a cache. It is resolved beneath the cache and through no
    /// symlink: the installer could write anything into its cache, but what a symlink there points to
    /// must not bring in a file from outside it.
    fn open_file(handle: &OwnedFd, rel: &Path) -> std::io::Result<(File, fs::Metadata)> {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            );
        let file = File::from(nix::fcntl::openat2(handle, rel, how)?);
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(std::io::Error::other(format!(
                "it is a {}, not a regular file",
                special_kind(SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT))
            )));
        }
        Ok((file, meta))
    }
}

/// Reads an overlay's upper directory, the changeset of a program that ran over `base`, into the tree
/// the changes make of `base`: files and symlinks replace what was at their path, whiteouts remove it,
/// an opaque directory (`user.overlay.opaque=y`) drops everything the lower directory had below it.
/// New files are stored through `sink`, moved rather than copied when stored as they are (the upper
/// directory is the scan's to take). A symlink into one of `cache_links` is the file it points to.
/// `__pycache__` is a cache, not content, and is skipped as in [`super::scan`].
pub fn scan_changeset(
    upper: &Path,
    base: &Tree,
    placeholders: &Placeholders,
    sink: Sink<'_>,
    cache_links: &CacheLinks,
) -> Result<Tree> {
    let mut entries = Vec::new();
    walk_upper(upper, "", &mut entries)?;
    let empty = StatCache::default();
    let ctx = ScanCtx {
        cache: &empty,
        placeholders,
        sink: Some(sink),
        adopt: true,
    };
    let hashed: FxHashMap<&str, Node> = entries
        .par_iter()
        .filter_map(|entry| match entry {
            UpperEntry::File { abs, path, meta } => {
                let executable = meta.permissions().mode() & 0o111 != 0;
                let stat = FileStat::of(meta);
                let item = ctx.hash_file(abs.clone(), path.clone(), stat, executable);
                Some(item.map(|item| (path.as_str(), item.node)))
            }
            UpperEntry::Symlink { path, target } => {
                let (cache, rel) = cache_links.locate(target)?;
                let unreadable = |e: std::io::Error| Error::CacheLinkUnreadable {
                    path: path.clone(),
                    target: PathBuf::from(target),
                    detail: e.to_string(),
                };
                let stored = CacheLinks::open_file(cache, rel)
                    .and_then(|(mut file, meta)| {
                        let mut bytes = Vec::with_capacity(meta.len() as usize);
                        file.read_to_end(&mut bytes)?;
                        Ok((bytes, meta.permissions().mode() & 0o111 != 0))
                    })
                    .map_err(unreadable)
                    .and_then(|(bytes, executable)| ctx.store_bytes(bytes, path, executable, None));
                Some(stored.map(|node| (path.as_str(), node)))
            }
            _ => None,
        })
        .collect::<Result<_>>()?;
    let mut tree = base.clone();
    for entry in &entries {
        let (path, node) = match entry {
            UpperEntry::Whiteout(path) => {
                tree.remove_below(path);
                tree.entries.remove(path);
                continue;
            }
            UpperEntry::Dir { path, opaque } => {
                if *opaque || tree.entries.get(path).is_some_and(|n| *n != Node::Dir) {
                    tree.remove_below(path);
                }
                (path, Node::Dir)
            }
            UpperEntry::File { path, .. } | UpperEntry::Symlink { path, .. } => {
                let node = match (hashed.get(path.as_str()), entry) {
                    (Some(node), _) => node.clone(),
                    (None, UpperEntry::Symlink { target, .. }) => {
                        symlink_node(placeholders, target)
                    }
                    (None, _) => {
                        return Err(Error::Invalid(format!(
                            "internal: `{path}` of the changeset was not read"
                        )));
                    }
                };
                tree.remove_below(path);
                (path, node)
            }
        };
        tree.entries.insert(path.clone(), node);
    }
    Ok(tree)
}

fn walk_upper(dir: &Path, rel: &str, out: &mut Vec<UpperEntry>) -> Result<()> {
    let mut children: Vec<fs::DirEntry> = fs::read_dir(dir)
        .at("reading directory", dir)?
        .collect::<std::io::Result<_>>()
        .at("reading directory", dir)?;
    children.sort_by_key(|e| e.file_name());
    for entry in children {
        let abs = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(Error::NonUtf8Path(abs));
        };
        let path = crate::tree::child_path(rel, name);
        let meta = abs.symlink_metadata().at("inspecting", &abs)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            if name == PYCACHE {
                continue;
            }
            let opaque = is_opaque(&abs);
            out.push(UpperEntry::Dir {
                path: path.clone(),
                opaque,
            });
            walk_upper(&abs, &path, out)?;
        } else if ft.is_char_device() && meta.rdev() == 0 {
            out.push(UpperEntry::Whiteout(path));
        } else if ft.is_symlink() {
            let target = fs::read_link(&abs).at("reading symlink", &abs)?;
            let Ok(target) = target.into_os_string().into_string() else {
                return Err(Error::NonUtf8Path(abs));
            };
            out.push(UpperEntry::Symlink { path, target });
        } else if ft.is_file() {
            if is_hook_file(name) {
                continue;
            }
            out.push(UpperEntry::File { abs, path, meta });
        } else {
            return Err(Error::UnsupportedFileType {
                path: abs,
                kind: special_kind(SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT)),
            });
        }
    }
    Ok(())
}

/// Whether overlayfs marked this upper directory as replacing the lower one (`userxattr` mode).
fn is_opaque(dir: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut value = [0u8; 2];
    // SAFETY: a NUL-terminated path and a buffer of the length passed.
    let len = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c"user.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    len == 1 && value[0] == b'y'
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use store_format::ObjectId;

    use super::*;
    use crate::objects::ObjectStore;

    /// A store, an empty upper directory and an installer's cache, under one temporary directory.
    struct Fixture {
        dir: tempfile::TempDir,
        store: ObjectStore,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let store = ObjectStore::at(&dir.path().join("home"));
            store.create_dirs().unwrap();
            for sub in ["upper/pkg", "cache/archive/pkg"] {
                fs::create_dir_all(dir.path().join(sub)).unwrap();
            }
            Fixture { dir, store }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        /// Scans the upper directory over an empty base; returns the tree and the files staged.
        fn scan(&self, cache_links: &CacheLinks) -> (Result<Tree>, usize) {
            let staging = self.store.begin().unwrap();
            let placeholders = Placeholders {
                env_prefix: "/nonexistent/env".into(),
                python_bin: "/nonexistent/python/bin".into(),
            };
            let sink = Sink {
                staging: &staging,
                head: None,
            };
            let tree = scan_changeset(
                &self.path("upper"),
                &Tree::default(),
                &placeholders,
                sink,
                cache_links,
            );
            let staged = files_below(staging.dir());
            if tree.is_ok() {
                staging.commit().unwrap();
            }
            (tree, staged)
        }
    }

    /// How many files there are below `dir`.
    fn files_below(dir: &Path) -> usize {
        fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|entry| match entry.file_type().unwrap().is_dir() {
                true => files_below(&entry.path()),
                false => 1,
            })
            .sum()
    }

    #[test]
    fn a_symlink_into_the_cache_is_stored_as_the_file_it_points_to_and_the_cache_keeps_it() {
        let f = Fixture::new();
        let module = f.path("cache/archive/pkg/mod.py");
        let tool = f.path("cache/archive/pkg/tool");
        fs::write(&module, "X = 1\n").unwrap();
        fs::write(&tool, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        symlink(&module, f.path("upper/pkg/mod.py")).unwrap();
        symlink(&tool, f.path("upper/pkg/tool")).unwrap();
        symlink("/usr/bin/env", f.path("upper/pkg/elsewhere")).unwrap();

        let (tree, staged) = f.scan(&CacheLinks::open(&[f.path("cache")]));
        let tree = tree.unwrap();
        let file = |bytes: &[u8], executable| Node::File {
            object: ObjectId::of(bytes),
            size: bytes.len() as u64,
            executable,
            relocatable: false,
        };
        assert_eq!(tree.entries["pkg/mod.py"], file(b"X = 1\n", false));
        assert_eq!(tree.entries["pkg/tool"], file(b"#!/bin/sh\n", true));
        assert_eq!(
            tree.entries["pkg/elsewhere"],
            Node::Symlink {
                target: "/usr/bin/env".into(),
                relocatable: false
            },
            "a symlink that points anywhere but into the cache stays a symlink"
        );
        assert_eq!(staged, 2);
        let object = f.store.object_path(&ObjectId::of(b"X = 1\n"), false);
        assert_eq!(fs::read(object).unwrap(), b"X = 1\n");
        // The cache's files were read, never taken: still there, with their one link and mode.
        for (path, mode) in [(&module, 0o644), (&tool, 0o755)] {
            let meta = fs::symlink_metadata(path).unwrap();
            assert_eq!((meta.nlink(), meta.mode() & 0o777), (1, mode), "{path:?}");
        }

        let (tree, _) = f.scan(&CacheLinks::default());
        assert_eq!(
            tree.unwrap().entries["pkg/mod.py"],
            Node::Symlink {
                target: module.to_str().unwrap().into(),
                relocatable: false
            },
            "without cache links, a symlink into the cache is a symlink"
        );
    }

    #[test]
    fn a_symlink_into_the_cache_that_leads_out_of_it_or_to_no_file_is_refused() {
        let f = Fixture::new();
        fs::write(f.path("secret"), "do not copy\n").unwrap();
        symlink(f.path("secret"), f.path("cache/archive/inner-link")).unwrap();
        let cache = f.path("cache");
        let cache = cache.to_str().unwrap();
        for target in [
            format!("{cache}/../secret"),
            format!("{cache}/archive/inner-link"),
            format!("{cache}/archive/pkg"),
            format!("{cache}/archive/missing.py"),
        ] {
            let link = f.path("upper/pkg/mod.py");
            symlink(&target, &link).unwrap();
            let (tree, staged) = f.scan(&CacheLinks::open(&[f.path("cache")]));
            match tree {
                Err(Error::CacheLinkUnreadable { path, .. }) => assert_eq!(path, "pkg/mod.py"),
                other => panic!("{target}: {other:?}"),
            }
            assert_eq!(staged, 0, "{target}: nothing is stored");
            fs::remove_file(link).unwrap();
        }
    }
}
