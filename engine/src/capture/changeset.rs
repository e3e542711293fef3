//! Reading an overlay's upper directory, the changeset of a program that ran over an environment, into
//! the tree its changes make.
//!
//! An installer in the sandbox writes through the overlay, so a file it would hardlink from its cache
//! cannot be linked there (`EXDEV`: the cache is another mount) and gets copied instead. blast asks uv
//! for symlinks into its cache instead, and [`CacheLinks`] turns each back into the file it points to:
//! its bytes are stored as an object, copied only when the store does not have them. A stat cache of
//! the installer's cache (as an environment's, keyed by the path in the cache) lets a file already
//! read be recognised by its stat, so installing what the store holds reads no file's bytes at all.

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::SFlag;
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use store_format::{Node, Placeholders};

use super::{FileStat, PYCACHE, ScanCtx, Sink, StatCache, special_kind, symlink_node};
use crate::error::{Error, IoContext, Result};
use crate::imports::is_hook_file;
use crate::tree::{Tree, UV_LOCK_FILE};

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
    caches: Vec<Cache>,
    /// Paths inside a cache that the sandbox hid from the installer (a cache holding a home's
    /// secrets): their files stand for no symlink.
    hidden: Vec<PathBuf>,
}

/// One cache directory of the installer.
struct Cache {
    /// Its path as named and as it really was before the installer ran (the path may lead through a
    /// symlink).
    names: Vec<PathBuf>,
    /// Taken before the installer ran: the sandbox may write where the cache is (a cache inside a
    /// project being built), and what its path leads to afterwards is the installer's doing.
    handle: OwnedFd,
    /// What blast read of its files, as an environment's stat cache (SPEC §11) keeps it: a file it
    /// recognises is not read again while its object is in the store. uv never rewrites a file there.
    stats: StatCache,
    /// Where `stats` is kept.
    stats_path: PathBuf,
}

impl CacheLinks {
    /// Opens the installer's cache directories, made when missing, before it runs; each has the stat
    /// cache kept at `stats_path(its real path)`. Symlinks into any other directory stay symlinks.
    pub fn open(dirs: &[PathBuf], stats_path: impl Fn(&Path) -> PathBuf) -> Result<CacheLinks> {
        let caches = dirs
            .iter()
            .map(|dir| {
                fs::create_dir_all(dir).at("creating the installer's cache", dir)?;
                let real = fs::canonicalize(dir).at("resolving the installer's cache", dir)?;
                let handle = nix::fcntl::open(
                    &real,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(std::io::Error::from)
                .at("opening the installer's cache", &real)?;
                let stats_path = stats_path(&real);
                let mut names = vec![real, dir.clone()];
                names.dedup();
                Ok(Cache {
                    names,
                    handle,
                    stats: StatCache::load(&stats_path),
                    stats_path,
                })
            })
            .collect::<Result<_>>()?;
        Ok(CacheLinks {
            caches,
            hidden: Vec::new(),
        })
    }

    /// Keeps, of the paths the sandbox hid from the installer, those inside a cache.
    pub fn hide(&mut self, hidden: &[PathBuf]) {
        self.hidden = hidden
            .iter()
            .filter_map(|path| fs::canonicalize(path).ok())
            .filter(|path| self.caches.iter().any(|c| path.starts_with(&c.names[0])))
            .collect();
    }

    /// The real path of the first cache: the one the installer is told to use.
    pub fn first_cache(&self) -> Option<&Path> {
        self.caches.first().map(|cache| cache.names[0].as_path())
    }

    /// The cache holding `target` (an absolute symlink target) and its path there, if any does.
    fn locate<'t>(&self, target: &'t str) -> Option<(usize, &'t str)> {
        self.caches.iter().enumerate().find_map(|(i, cache)| {
            cache.names.iter().find_map(|dir| {
                let rel = Path::new(target).strip_prefix(dir).ok()?.to_str()?;
                (!rel.is_empty()).then_some((i, rel))
            })
        })
    }

    /// The node of the cache's file `rel`, which the symlink at `path` stands for, its stat, and
    /// whether its bytes were read (the stat cache did not know them).
    fn file_node(
        &self,
        cache: usize,
        rel: &str,
        path: &str,
        ctx: &ScanCtx<'_>,
    ) -> Result<(Node, FileStat, bool)> {
        let cache = &self.caches[cache];
        // Resolved through no symlink, the file is at its real path.
        let real = cache.names[0].join(rel);
        let refused = |detail: String| Error::CacheLinkUnreadable {
            path: path.to_owned(),
            target: real.clone(),
            detail,
        };
        if self.hidden.iter().any(|hidden| real.starts_with(hidden)) {
            return Err(refused("the sandbox hid it from the installer".into()));
        }
        let (mut file, meta) =
            Cache::open_file(&cache.handle, rel).map_err(|e| refused(unreadable(&e)))?;
        let stat = FileStat::of(&meta);
        let executable = meta.permissions().mode() & 0o111 != 0;
        if let Some(known) = cache.stats.recognise(rel, &stat)
            && ctx
                .sink
                .is_some_and(|sink| sink.staging.has_object(&known.object, executable))
        {
            let node = Node::File {
                object: known.object,
                size: known.stored_size,
                executable,
                relocatable: known.relocatable,
            };
            return Ok((node, stat, false));
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).at("reading", &real)?;
        Ok((ctx.store_bytes(bytes, path, executable, None)?, stat, true))
    }

    /// Keeps what the scan read of the caches' files (stat'ed at `now` or later) for the next one.
    /// A relocatable file is not kept: what is stored of it depends on the environment's paths.
    /// Best effort: a stat cache that cannot be written only costs reading the files again.
    fn remember(&mut self, read: &[(usize, &str, FileStat, &Node)], now: i64) {
        let mut changed = vec![false; self.caches.len()];
        for &(cache, rel, stat, node) in read {
            let stats = &mut self.caches[cache].stats;
            match node {
                Node::File {
                    relocatable: false, ..
                } => stats.record(rel, stat, node, now),
                _ => stats.forget(rel),
            }
            changed[cache] = true;
        }
        for (cache, _) in self.caches.iter_mut().zip(changed).filter(|(_, c)| *c) {
            cache.forget_removed();
            let _ = cache.stats.save(&cache.stats_path);
        }
    }
}

impl Cache {
    /// Opens the regular file `rel` of a cache. It is resolved beneath the cache and through no
    /// symlink: the installer could write anything into its cache, but what a symlink there points to
    /// must not bring in a file from outside it. Not blocking: a FIFO there must not hang blast.
    fn open_file(handle: &OwnedFd, rel: &str) -> std::io::Result<(File, fs::Metadata)> {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
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

    /// Forgets the files of directories gone from the cache (`uv cache clean` or `prune` removed
    /// them): uv unpacks each wheel into a directory of its own two levels down
    /// (`archive-v0/<id>/`), and entries of removed ones would only grow the stat cache.
    fn forget_removed(&mut self) {
        let dirs: rustc_hash::FxHashSet<&str> = self
            .stats
            .files()
            .filter_map(|(path, _)| unpacked_dir(path))
            .collect();
        let gone: Vec<String> = dirs
            .into_iter()
            .filter(|dir| {
                nix::sys::stat::fstatat(&self.handle, *dir, AtFlags::AT_SYMLINK_NOFOLLOW).is_err()
            })
            .map(str::to_owned)
            .collect();
        let gone: Vec<&str> = gone.iter().map(String::as_str).collect();
        self.stats.forget_below(&gone);
    }
}

/// The directory two levels down that holds `path` (`archive-v0/<id>` for uv's unpacked wheels).
fn unpacked_dir(path: &str) -> Option<&str> {
    let second = path.match_indices('/').nth(1)?.0;
    Some(&path[..second])
}

/// Why a symlink into the cache could not be followed, in words.
fn unreadable(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EXDEV) => "it leads out of the cache".into(),
        Some(libc::ELOOP) => "it leads through a symlink in the cache".into(),
        Some(libc::ENOENT) => "there is no such file in the cache".into(),
        _ => e.to_string(),
    }
}

/// Reads an overlay's upper directory, the changeset of a program that ran over `base`, into the tree
/// the changes make of `base`: files and symlinks replace what was at their path, whiteouts remove it,
/// an opaque directory (`user.overlay.opaque=y`) drops everything the lower directory had below it.
/// New files are stored through `sink`, moved rather than copied when stored as they are and the upper
/// directory lies on the store's filesystem (it is the scan's to take). A symlink into one of `cache_links` is the file it points to.
/// `__pycache__` is a cache, not content, and is skipped as in [`super::scan`].
pub fn scan_changeset(
    upper: &Path,
    base: &Tree,
    placeholders: &Placeholders,
    sink: Sink<'_>,
    cache_links: &mut CacheLinks,
) -> Result<Tree> {
    let mut entries = Vec::new();
    walk_upper(upper, "", &mut entries)?;
    let empty = StatCache::default();
    // An upper kept in memory is read, not moved: a rename cannot leave its filesystem.
    let device = |path: &Path| path.metadata().map(|m| m.dev()).at("inspecting", path);
    let adopt = device(upper)? == device(sink.staging.dir())?;
    let ctx = ScanCtx {
        cache: &empty,
        placeholders,
        sink: Some(sink),
        adopt,
    };
    // Each file's node, with the cache file it was read from, if it was read from one.
    type Found<'e> = (&'e str, Node, Option<(usize, &'e str, FileStat)>);
    let now = super::now_ns();
    let found: Vec<Found<'_>> = entries
        .par_iter()
        .filter_map(|entry| match entry {
            UpperEntry::File { abs, path, meta } => {
                let executable = meta.permissions().mode() & 0o111 != 0;
                let stat = FileStat::of(meta);
                let item = ctx.hash_file(abs.clone(), path.clone(), stat, executable);
                Some(item.map(|item| (path.as_str(), item.node, None)))
            }
            UpperEntry::Symlink { path, target } => {
                let (cache, rel) = cache_links.locate(target)?;
                let node = cache_links.file_node(cache, rel, path, &ctx);
                Some(node.map(|(node, stat, read)| {
                    (path.as_str(), node, read.then_some((cache, rel, stat)))
                }))
            }
            _ => None,
        })
        .collect::<Result<_>>()?;
    let read: Vec<(usize, &str, FileStat, &Node)> = found
        .iter()
        .filter_map(|(_, node, from)| from.map(|(cache, rel, stat)| (cache, rel, stat, node)))
        .collect();
    cache_links.remember(&read, now);
    let hashed: FxHashMap<&str, &Node> =
        found.iter().map(|(path, node, _)| (*path, node)).collect();
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
                    (Some(node), _) => (*node).clone(),
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
        } else if rel.is_empty() && name == UV_LOCK_FILE && (meta.len() == 0 || ft.is_char_device())
        {
            // uv's lock file, or its removal: not content (see `tree::UV_LOCK_FILE`).
            continue;
        } else if ft.is_char_device() && meta.rdev() == 0 {
            out.push(UpperEntry::Whiteout(path));
        } else if ft.is_symlink() {
            let target = fs::read_link(&abs).at("reading symlink", &abs)?;
            let Ok(target) = target.into_os_string().into_string() else {
                return Err(Error::NonUtf8Path(abs));
            };
            out.push(UpperEntry::Symlink { path, target });
        } else if ft.is_file() {
            if is_hook_file(name, &abs) {
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

        /// The links into the fixture's cache, with its stat cache in `cache-stats`.
        fn cache_links(&self) -> CacheLinks {
            CacheLinks::open(&[self.path("cache")], |_| self.path("cache-stats")).unwrap()
        }

        /// Scans the upper directory over an empty base; returns the tree and the files staged.
        fn scan(&self, cache_links: &mut CacheLinks) -> (Result<Tree>, usize) {
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

    /// The node of a file holding `bytes`, stored as they are.
    fn file(bytes: &[u8], executable: bool) -> Node {
        Node::File {
            object: ObjectId::of(bytes),
            size: bytes.len() as u64,
            executable,
            relocatable: false,
        }
    }

    /// Writes `bytes` to `path`, then waits until its stat is no longer racy (and may be cached).
    fn write_settled(path: &Path, bytes: &str) {
        fs::write(path, bytes).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(120));
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

        let (tree, staged) = f.scan(&mut f.cache_links());
        let tree = tree.unwrap();
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

        let (tree, _) = f.scan(&mut CacheLinks::default());
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
        nix::unistd::mkfifo(&f.path("cache/archive/fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let cache = f.path("cache");
        let cache = cache.to_str().unwrap();
        for (target, why) in [
            (format!("{cache}/../secret"), "it leads out of the cache"),
            (
                format!("{cache}/archive/inner-link"),
                "it leads through a symlink in the cache",
            ),
            (format!("{cache}/archive/pkg"), "not a regular file"),
            (format!("{cache}/archive/fifo"), "not a regular file"),
            (
                format!("{cache}/archive/missing.py"),
                "there is no such file in the cache",
            ),
        ] {
            let link = f.path("upper/pkg/mod.py");
            symlink(&target, &link).unwrap();
            let (tree, staged) = f.scan(&mut f.cache_links());
            match tree {
                Err(Error::CacheLinkUnreadable { path, detail, .. }) => {
                    assert_eq!(path, "pkg/mod.py");
                    assert!(detail.contains(why), "{target}: {detail}");
                }
                other => panic!("{target}: {other:?}"),
            }
            assert_eq!(staged, 0, "{target}: nothing is stored");
            fs::remove_file(link).unwrap();
        }
    }

    #[test]
    fn the_cache_is_the_directory_its_path_led_to_before_the_installer_ran() {
        let f = Fixture::new();
        fs::write(f.path("cache/archive/pkg/mod.py"), "X = 1\n").unwrap();
        let mut links = f.cache_links();
        // The installer moves the cache away and leaves a symlink to hidden files at its path.
        fs::create_dir(f.path("hidden")).unwrap();
        fs::write(f.path("hidden/id_rsa"), "a key\n").unwrap();
        fs::rename(f.path("cache"), f.path("moved")).unwrap();
        symlink(f.path("hidden"), f.path("cache")).unwrap();
        symlink(f.path("cache/id_rsa"), f.path("upper/pkg/key")).unwrap();
        let (tree, staged) = f.scan(&mut links);
        assert!(
            matches!(tree, Err(Error::CacheLinkUnreadable { .. })),
            "{tree:?}"
        );
        assert_eq!(staged, 0, "nothing is stored");
        // The cache's own files are found where it went.
        fs::remove_file(f.path("upper/pkg/key")).unwrap();
        symlink(
            f.path("cache/archive/pkg/mod.py"),
            f.path("upper/pkg/mod.py"),
        )
        .unwrap();
        let (tree, _) = f.scan(&mut links);
        assert_eq!(tree.unwrap().entries["pkg/mod.py"], file(b"X = 1\n", false));
    }

    #[test]
    fn a_file_the_sandbox_hid_inside_the_cache_stands_for_no_symlink() {
        let f = Fixture::new();
        fs::create_dir(f.path("cache/.ssh")).unwrap();
        fs::write(f.path("cache/.ssh/id_rsa"), "a key\n").unwrap();
        symlink(f.path("cache/.ssh/id_rsa"), f.path("upper/pkg/key")).unwrap();
        let mut links = f.cache_links();
        links.hide(&[f.path("cache/.ssh"), f.path("elsewhere/.aws")]);
        let (tree, staged) = f.scan(&mut links);
        match tree {
            Err(Error::CacheLinkUnreadable { detail, .. }) => assert!(detail.contains("hid")),
            other => panic!("{other:?}"),
        }
        assert_eq!(staged, 0);
    }

    #[test]
    fn a_cache_named_through_a_symlink_is_known_by_both_paths() {
        let f = Fixture::new();
        fs::write(f.path("cache/archive/pkg/mod.py"), "X = 1\n").unwrap();
        symlink(f.path("cache"), f.path("cache-link")).unwrap();
        let links =
            || CacheLinks::open(&[f.path("cache-link")], |_| f.path("cache-stats")).unwrap();
        assert_eq!(links().first_cache(), Some(f.path("cache").as_path()));
        for named in ["cache", "cache-link"] {
            let link = f.path("upper/pkg/mod.py");
            symlink(f.path(named).join("archive/pkg/mod.py"), &link).unwrap();
            let (tree, _) = f.scan(&mut links());
            assert_eq!(tree.unwrap().entries["pkg/mod.py"], file(b"X = 1\n", false));
            fs::remove_file(link).unwrap();
        }
    }

    #[test]
    fn a_cache_file_the_stat_cache_recognises_is_not_read_again_until_it_changes() {
        let f = Fixture::new();
        let module = f.path("cache/archive/pkg/mod.py");
        write_settled(&module, "X = 1\n");
        symlink(&module, f.path("upper/pkg/mod.py")).unwrap();
        let (tree, _) = f.scan(&mut f.cache_links());
        assert_eq!(tree.unwrap().entries["pkg/mod.py"], file(b"X = 1\n", false));
        let kept = StatCache::load(&f.path("cache-stats"));
        assert_eq!(kept.len(), 1, "the file read is remembered");

        // While the file's stat holds, the stat cache stands for its bytes: told that it holds other
        // bytes, which the store has, the scan believes it, as it does not read the file.
        let staging = f.store.begin().unwrap();
        staging.put_object(b"Y = 2\n", false).unwrap();
        staging.commit().unwrap();
        let mut told = StatCache::default();
        let stat = FileStat::of(&fs::metadata(&module).unwrap());
        told.record(
            "archive/pkg/mod.py",
            stat,
            &file(b"Y = 2\n", false),
            crate::capture::now_ns(),
        );
        told.save(&f.path("cache-stats")).unwrap();
        let (tree, _) = f.scan(&mut f.cache_links());
        assert_eq!(tree.unwrap().entries["pkg/mod.py"], file(b"Y = 2\n", false));

        // Written in place, the file is read again, and what is remembered follows.
        write_settled(&module, "X = 3\n");
        let (tree, _) = f.scan(&mut f.cache_links());
        assert_eq!(tree.unwrap().entries["pkg/mod.py"], file(b"X = 3\n", false));
        let stat = FileStat::of(&fs::metadata(&module).unwrap());
        let kept = StatCache::load(&f.path("cache-stats"));
        let known = kept.recognise("archive/pkg/mod.py", &stat).unwrap();
        assert_eq!(known.object, ObjectId::of(b"X = 3\n"));

        // A file the stat cache knows whose object left the store is read and stored again.
        let object = f.store.object_path(&ObjectId::of(b"X = 3\n"), false);
        fs::remove_file(&object).unwrap();
        let (tree, staged) = f.scan(&mut f.cache_links());
        assert_eq!(tree.unwrap().entries["pkg/mod.py"], file(b"X = 3\n", false));
        assert_eq!(staged, 1);
        assert_eq!(fs::read(&object).unwrap(), b"X = 3\n");

        // A file holding the environment's path is stored relocatably, which depends on the
        // environment: it is not remembered. Nor are the files of a directory gone from the cache.
        let script = f.path("cache/archive/pkg/tool");
        write_settled(&script, "#!/nonexistent/env/bin/python\n");
        symlink(&script, f.path("upper/pkg/tool")).unwrap();
        fs::create_dir_all(f.path("cache/gone/pkg")).unwrap();
        let old = f.path("cache/gone/pkg/old.py");
        write_settled(&old, "OLD = 1\n");
        symlink(&old, f.path("upper/pkg/old.py")).unwrap();
        f.scan(&mut f.cache_links()).0.unwrap();
        assert_eq!(StatCache::load(&f.path("cache-stats")).len(), 2);
        fs::remove_file(f.path("upper/pkg/old.py")).unwrap();
        fs::remove_dir_all(f.path("cache/gone")).unwrap();
        f.scan(&mut f.cache_links()).0.unwrap();
        let kept = StatCache::load(&f.path("cache-stats"));
        assert_eq!(kept.len(), 1, "only mod.py is remembered");
        assert!(kept.get("archive/pkg/mod.py").is_some());
    }
}
