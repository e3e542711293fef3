//! Capture: reading a live environment directory back into a tree.
//!
//! A stat cache per environment (inode, size, mtime, ctime, mode → object, like git's index) lets an
//! unchanged directory be checked with `lstat` alone; only new or changed files are read and hashed, in
//! parallel. The cache also keeps each directory's listing with the directory's own stat: while that
//! stat is the same, no entry was added, removed or renamed there, so the walk does not read the
//! directory again (its files are still `lstat`ed, as a write changes only the file's stat). The cache
//! is stamped with the snapshot the directory held and that tree's digest, so a walk that finds the same
//! digest knows the directory is that snapshot without building its tree.
//! `__pycache__` directories are caches, not content, and are never looked at; nor are the files of
//! blast's import-tracking hook (see [`crate::imports`]) and uv's lock file at the root. Files that contain the environment's own
//! paths are stored with placeholders (see `store_format::Placeholders`).

use std::cell::{OnceCell, RefCell};
use std::fs;
use std::hash::Hasher;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::AtFlags;
use nix::sys::stat::SFlag;
use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};
use store_format::{Node, ObjectId, Placeholders, SnapshotId};

use crate::error::{Error, IoContext, Result};
use crate::imports::is_hook_file;
use crate::objects::Staging;
use crate::tree::{Tree, TreeDigest, UV_LOCK_FILE};

mod changeset;

pub use changeset::{CacheLinks, scan_changeset};

/// Directories with this name are caches: excluded from capture, change detection and verification.
pub const PYCACHE: &str = "__pycache__";

/// The one file whose mention of the base interpreter's directory is abstracted (see `Placeholders`).
const PYVENV_CFG: &str = "pyvenv.cfg";

/// Files up to this size are checked for the environment's paths (larger ones are data, not scripts).
const RELOCATION_SCAN_LIMIT: u64 = 16 << 20;

/// A file whose mtime or ctime is this close to the moment it was stat'ed may still change within the
/// same timestamp tick without its stat changing, so it is not cached ("racily clean" in git's words).
const RACY_WINDOW_NS: i64 = 50_000_000;
const COARSE_RACY_WINDOW_NS: i64 = 2_000_000_000;

/// What `lstat` said about a file when its content was last known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub mode: u32,
    pub nlink: u64,
}

impl FileStat {
    pub fn of(meta: &fs::Metadata) -> Self {
        FileStat {
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
            mode: meta.mode(),
            nlink: meta.nlink(),
        }
    }

    pub(crate) fn of_stat(stat: &libc::stat) -> Self {
        FileStat {
            ino: stat.st_ino,
            size: stat.st_size as u64,
            mtime_ns: nanos(stat.st_mtime, stat.st_mtime_nsec),
            ctime_ns: nanos(stat.st_ctime, stat.st_ctime_nsec),
            mode: stat.st_mode,
            nlink: stat.st_nlink,
        }
    }

    /// A read-only file with several links (as blast links a store object into environments) does not
    /// own its ctime: linking or unlinking the inode anywhere moves it. A writable one (the user's own
    /// hardlinks) does: a write in place with its mtime set back is seen by its ctime (found by
    /// exploratory testing: such an edit went unseen, and a rollback discarded it unasked). (A
    /// directory's links are its subdirectories' `..`.)
    fn shares_inode(&self) -> bool {
        self.nlink > 1 && !self.is_dir() && self.mode & 0o222 == 0
    }

    fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    fn is_racy(&self, now_ns: i64) -> bool {
        // A filesystem that keeps whole seconds (ext4 with small inodes, many network mounts) leaves
        // the nanoseconds at zero: an edit within the same second keeps the same stat there.
        let window = if self.mtime_ns % 1_000_000_000 == 0 && self.ctime_ns % 1_000_000_000 == 0 {
            COARSE_RACY_WINDOW_NS
        } else {
            RACY_WINDOW_NS
        };
        let changed = if self.shares_inode() {
            self.mtime_ns
        } else {
            self.mtime_ns.max(self.ctime_ns)
        };
        changed >= now_ns.saturating_sub(window)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CachedFile {
    stat: FileStat,
    object: ObjectId,
    /// Size of the stored object (a relocatable file's differs from its size on disk).
    stored_size: u64,
    relocatable: bool,
}

impl CachedFile {
    /// For a file that shares its inode, ctime and the link count are left out (other environments move
    /// them); a write still changes the mtime, a chmod the mode.
    fn matches(&self, stat: &FileStat) -> bool {
        if self.stat.shares_inode() && stat.shares_inode() {
            self.stat.ino == stat.ino
                && self.stat.size == stat.size
                && self.stat.mtime_ns == stat.mtime_ns
                && self.stat.mode == stat.mode
        } else {
            self.stat == *stat
        }
    }
}

/// What the directory held when a stat cache was written: a snapshot and the digest of its tree. A
/// later scan whose digest equals it found that snapshot, unchanged, without its tree being built
/// from the layers; and every object the cache names is one of that snapshot's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub snapshot: SnapshotId,
    pub tree: TreeDigest,
}

/// Path → what the file was when last hashed. Kept in a file per environment (`stat-caches/<env-id>`,
/// outside the index: it is rewritten after every change and would otherwise fill RocksDB's log).
/// The paths lie back to back in one string and entries are found by their path's hash, so loading
/// the cache of an environment of 18k files makes a few allocations rather than 18k, and a look-up
/// during a scan touches one entry and no path.
#[derive(Debug, Clone, Default)]
pub struct StatCache {
    /// Every path recorded, back to back; entries point into it.
    paths: String,
    /// Hash of a path → its entry. Two paths with one hash keep one entry between them: the other
    /// path's file is then read again, never mistaken (see [`StatCache::recognise`]).
    index: FxHashMap<u64, Entry>,
    /// Hash of a directory's path → what it held when last read.
    dirs: FxHashMap<u64, Listing>,
    stamp: Option<Stamp>,
    /// The boot (`fsutil::boot_id`) in which blast wrote files of the directory without waiting for
    /// them to reach the disk: in a later boot, after a power cut maybe, what the cache says of them
    /// may no longer be true, and the cache is not used (see [`StatCache::load`]).
    unsynced_in: Option<[u8; 16]>,
}

/// A directory's entries as a read found them, and the directory's stat then. Adding, removing or
/// renaming an entry changes the directory's mtime, and no entry changes kind or symlink target in
/// place, so while the stat is the same (and was not racy when recorded) these are its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listing {
    path: Box<str>,
    stat: FileStat,
    /// Each entry as a kind byte (`f` file, `d` directory, `l` symlink), its name and a NUL; a
    /// symlink's target and a NUL follow its name. Names and targets never hold NUL.
    entries: Box<str>,
    /// The tree digest of these entries, when the walk that recorded them recognised every file
    /// among them: a walk that takes the same entries from the listing and recognises every file again
    /// finds the same nodes, and adds this instead of hashing each entry.
    digest: Option<TreeDigest>,
}

/// One entry of a [`Listing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listed<'l> {
    File(&'l str),
    Dir(&'l str),
    Symlink(&'l str, &'l str),
}

impl Listing {
    fn entries(&self) -> impl Iterator<Item = Option<Listed<'_>>> {
        let mut rest = &*self.entries;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let mut field = || {
                let (head, tail) = rest.split_once('\0')?;
                rest = tail;
                Some(head)
            };
            let entry = field().and_then(|kinded| {
                // A name is one path component: a damaged cache must not lead the walk elsewhere.
                let name = kinded
                    .get(1..)
                    .filter(|n| !n.is_empty() && *n != "." && *n != ".." && !n.contains('/'))?;
                match kinded.as_bytes()[0] {
                    b'f' => Some(Listed::File(name)),
                    b'd' => Some(Listed::Dir(name)),
                    b'l' => field().map(|target| Listed::Symlink(name, target)),
                    _ => None,
                }
            });
            if entry.is_none() {
                rest = "";
            }
            Some(entry)
        })
    }

    fn push(entries: &mut String, entry: Listed<'_>) {
        let (kind, name, target) = match entry {
            Listed::File(name) => ('f', name, None),
            Listed::Dir(name) => ('d', name, None),
            Listed::Symlink(name, target) => ('l', name, Some(target)),
        };
        entries.push(kind);
        entries.push_str(name);
        entries.push('\0');
        if let Some(target) = target {
            entries.push_str(target);
            entries.push('\0');
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Offset and length in `paths`.
    path: (u32, u32),
    file: CachedFile,
    /// The entry is `pyvenv.cfg`'s, whose stored form differs from any other file's with its bytes.
    pyvenv_cfg: bool,
}

impl Entry {
    fn path_in<'p>(&self, paths: &'p str) -> &'p str {
        let (start, len) = (self.path.0 as usize, self.path.1 as usize);
        paths.get(start..start + len).unwrap_or_default()
    }
}

const STAT_CACHE_VERSION: u8 = 7;
/// The version before the mark of files not synced, written by a blast that synced every apply: read
/// as unmarked.
const STAT_CACHE_VERSION_SYNCED: u8 = 6;
/// The version before listings carried digests: read as if none had one.
const STAT_CACHE_VERSION_UNDIGESTED: u8 = 5;

fn path_key(path: &str) -> u64 {
    let mut hasher = rustc_hash::FxHasher::default();
    hasher.write(path.as_bytes());
    hasher.finish()
}

impl PartialEq for StatCache {
    fn eq(&self, other: &Self) -> bool {
        self.stamp == other.stamp
            && self.unsynced_in == other.unsynced_in
            && self.len() == other.len()
            && self
                .files()
                .all(|(path, file)| other.get(path) == Some(file))
            && self.dirs.len() == other.dirs.len()
            && self
                .dirs
                .values()
                .all(|listing| other.listing(&listing.path) == Some(listing))
    }
}

impl StatCache {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn stamp(&self) -> Option<Stamp> {
        self.stamp
    }

    /// Records that the directory holds `snapshot`, whose tree has digest `tree`.
    pub fn stamp_with(&mut self, snapshot: SnapshotId, tree: TreeDigest) {
        self.stamp = Some(Stamp { snapshot, tree });
    }

    /// Records that files of the directory were written in the running boot `boot` and not synced.
    pub fn mark_unsynced(&mut self, boot: [u8; 16]) {
        self.unsynced_in = Some(boot);
    }

    fn path_of(&self, entry: &Entry) -> &str {
        entry.path_in(&self.paths)
    }

    fn files(&self) -> impl Iterator<Item = (&str, &CachedFile)> {
        self.index
            .values()
            .map(|entry| (self.path_of(entry), &entry.file))
    }

    /// Whether the stat of the file at `path` is recorded.
    #[cfg(test)]
    pub(crate) fn has_file(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    fn get(&self, path: &str) -> Option<&CachedFile> {
        let entry = self.index.get(&path_key(path))?;
        (self.path_of(entry) == path).then_some(&entry.file)
    }

    /// The cached file at `path` if `stat` still matches it. The entry's path is not compared: an
    /// entry of another path with the same hash matches only a file with its inode, size and times,
    /// that is a hardlink of the same bytes, stored alike (but for `pyvenv.cfg`, told apart).
    fn recognise(&self, path: &str, stat: &FileStat) -> Option<&CachedFile> {
        self.index
            .get(&path_key(path))
            .filter(|entry| entry.pyvenv_cfg == (path == PYVENV_CFG) && entry.file.matches(stat))
            .map(|entry| &entry.file)
    }

    fn insert(&mut self, path: &str, file: CachedFile) {
        let key = path_key(path);
        if let Some(entry) = self.index.get(&key)
            && self.path_of(entry) == path
        {
            self.index.insert(key, Entry { file, ..*entry });
            return;
        }
        let start = self.paths.len() as u32;
        self.paths.push_str(path);
        self.index.insert(
            key,
            Entry {
                path: (start, path.len() as u32),
                file,
                pyvenv_cfg: path == PYVENV_CFG,
            },
        );
    }

    /// The listing of the directory at `path`, whatever its stat now.
    fn listing(&self, path: &str) -> Option<&Listing> {
        self.dirs
            .get(&path_key(path))
            .filter(|listing| &*listing.path == path)
    }

    /// The listing of the directory at `path` if `stat` is still the one it was read with.
    fn listing_of(&self, path: &str, stat: &FileStat) -> Option<&Listing> {
        self.listing(path).filter(|listing| listing.stat == *stat)
    }

    /// Records a directory's listing; a racy stat is not recorded, and the directory's older listing
    /// is then dropped.
    fn record_listing(&mut self, listing: Listing, now_ns: i64) {
        let key = path_key(&listing.path);
        if !listing.stat.is_racy(now_ns) {
            self.dirs.insert(key, listing);
        } else if self.listing(&listing.path).is_some() {
            self.dirs.remove(&key);
        }
    }

    /// Records that the file at `path`, with this stat, holds `node`. Racy stats are not recorded, nor
    /// a mode that is not the node's (a scan takes a recognised file's mode from its stat, so the file
    /// must be read again to be stored as what it is), nor a size other than the object's (linked from
    /// an object written in place through another link): such a file is read again by the next scan.
    pub fn record(&mut self, path: &str, stat: FileStat, node: &Node, now_ns: i64) {
        self.stamp = None;
        if let Node::File {
            object,
            size,
            relocatable,
            executable,
        } = node
            && !stat.is_racy(now_ns)
            && (stat.mode & 0o111 != 0) == *executable
            && (*relocatable || stat.size == *size)
        {
            self.insert(
                path,
                CachedFile {
                    stat,
                    object: *object,
                    stored_size: *size,
                    relocatable: *relocatable,
                },
            );
        } else {
            self.forget(path);
        }
    }

    pub fn forget(&mut self, path: &str) {
        self.stamp = None;
        if self.get(path).is_some() {
            self.index.remove(&path_key(path));
        }
    }

    /// Forgets every path below these directories (removed with their content).
    pub fn forget_below(&mut self, dirs: &[&str]) {
        if dirs.is_empty() {
            return;
        }
        let set: rustc_hash::FxHashSet<&str> = dirs.iter().copied().collect();
        // A few directories (a package's) are compared with each path; many are looked up by ancestor.
        let below = |path: &str| {
            if dirs.len() <= 8 {
                dirs.iter().any(|dir| {
                    path.len() > dir.len()
                        && path.as_bytes()[dir.len()] == b'/'
                        && path.starts_with(dir)
                })
            } else {
                crate::tree::ancestors(path).any(|dir| set.contains(dir))
            }
        };
        let paths = &self.paths;
        self.index.retain(|_, entry| !below(entry.path_in(paths)));
    }

    /// The cache of an environment: missing or unreadable reads as empty (every file is then hashed),
    /// and so does one marked as describing files written without a sync in another boot than the
    /// running one: a power cut may have lost or torn them while their stat stayed as recorded.
    /// The file is mapped rather than read: copying 3 MB into fresh memory took ~1.5 ms of every
    /// rollback and snapshot of the big environment, before the walk can start.
    pub fn load(path: &Path) -> StatCache {
        let Ok(file) = fs::File::open(path) else {
            return StatCache::default();
        };
        // SAFETY: blast never writes a cache file in place (a new cache is written beside it and
        // renamed in, SPEC §11), so the mapped bytes do not change while they are decoded.
        let cache = match unsafe { memmap2::Mmap::map(&file) } {
            Ok(map) => StatCache::decode(&map),
            Err(_) => StatCache::default(),
        };
        match cache.unsynced_in {
            Some(boot) if Some(boot) != crate::fsutil::boot_id() => StatCache::default(),
            _ => cache,
        }
    }

    /// The snapshot the cache at `path` is stamped with, read from its head alone: unchecked (the
    /// checksum covers the whole file), so only a hint of what a load will find.
    pub fn stamp_hint(path: &Path) -> Option<SnapshotId> {
        // The version, the stamp's flag and the snapshot's id.
        let mut head = [0u8; 34];
        fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
        let [STAT_CACHE_VERSION, 1, id @ ..] = head else {
            return None;
        };
        Some(SnapshotId::from_bytes(id))
    }

    /// Writes the cache beside `path` and renames it into place. Not synced: after a crash the
    /// cache may be an older one, missing, or torn (its checksum then fails), and each only costs
    /// rehashing. The old cache is removed before the rename: renaming over a file makes ext4 start
    /// writing the new one out at once (its guard for files replaced without a sync), milliseconds
    /// of a rollback.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        let written = fs::write(&tmp, self.encode()).and_then(|()| match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => fs::rename(&tmp, path),
        });
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.at("writing stat cache", path)
    }

    /// A compact binary form: version, stamp, the mark of a boot's unsynced writes, then per file:
    /// path, stat, object, stored size, link count, flag; then per directory: path, stat, entries;
    /// last, a CRC-32 of all that.
    pub fn encode(&self) -> Vec<u8> {
        // Sized once: growing a buffer this large copies it, into memory touched for the first time.
        let listings: usize = self
            .dirs
            .values()
            .map(|listing| 85 + listing.path.len() + listing.entries.len())
            .sum();
        let mut out = Vec::with_capacity(95 + self.paths.len() + self.len() * 89 + listings);
        out.push(STAT_CACHE_VERSION);
        match &self.stamp {
            Some(stamp) => {
                out.push(1);
                out.extend_from_slice(stamp.snapshot.as_bytes());
                for lane in stamp.tree.0 {
                    out.extend_from_slice(&lane.to_le_bytes());
                }
            }
            None => out.push(0),
        }
        match &self.unsynced_in {
            Some(boot) => {
                out.push(1);
                out.extend_from_slice(boot);
            }
            None => out.push(0),
        }
        let string = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        };
        let stat = |out: &mut Vec<u8>, stat: &FileStat| {
            out.extend_from_slice(&stat.ino.to_le_bytes());
            out.extend_from_slice(&stat.size.to_le_bytes());
            out.extend_from_slice(&stat.mtime_ns.to_le_bytes());
            out.extend_from_slice(&stat.ctime_ns.to_le_bytes());
            out.extend_from_slice(&stat.mode.to_le_bytes());
            out.extend_from_slice(&stat.nlink.to_le_bytes());
        };
        out.extend_from_slice(&(self.len() as u32).to_le_bytes());
        for (path, f) in self.files() {
            string(&mut out, path);
            stat(&mut out, &f.stat);
            out.extend_from_slice(f.object.as_bytes());
            out.extend_from_slice(&f.stored_size.to_le_bytes());
            out.push(u8::from(f.relocatable));
        }
        out.extend_from_slice(&(self.dirs.len() as u32).to_le_bytes());
        for listing in self.dirs.values() {
            string(&mut out, &listing.path);
            stat(&mut out, &listing.stat);
            string(&mut out, &listing.entries);
            match &listing.digest {
                Some(digest) => {
                    out.push(1);
                    for lane in digest.0 {
                        out.extend_from_slice(&lane.to_le_bytes());
                    }
                }
                None => out.push(0),
            }
        }
        let checksum = crc32fast::hash(&out);
        out.extend_from_slice(&checksum.to_le_bytes());
        out
    }

    /// Anything unreadable yields an empty cache: the cache only saves work, every file is then hashed.
    pub fn decode(bytes: &[u8]) -> StatCache {
        Self::try_decode(bytes).unwrap_or_default()
    }

    fn try_decode(bytes: &[u8]) -> Option<StatCache> {
        let (bytes, checksum) = bytes.split_last_chunk::<4>()?;
        if crc32fast::hash(bytes) != u32::from_le_bytes(*checksum) {
            return None;
        }
        let mut r = Bytes(bytes);
        let version = r.take(1)?[0];
        if ![
            STAT_CACHE_VERSION,
            STAT_CACHE_VERSION_SYNCED,
            STAT_CACHE_VERSION_UNDIGESTED,
        ]
        .contains(&version)
        {
            return None;
        }
        let stamp = match r.take(1)?[0] {
            0 => None,
            1 => {
                let snapshot = SnapshotId::from_bytes(r.take(32)?.try_into().ok()?);
                let tree = r.tree_digest()?;
                Some(Stamp { snapshot, tree })
            }
            _ => return None,
        };
        let unsynced_in = match version {
            STAT_CACHE_VERSION => match r.take(1)?[0] {
                0 => None,
                1 => Some(r.take(16)?.try_into().ok()?),
                _ => return None,
            },
            _ => None,
        };
        let files = r.u32()? as usize;
        // A file's record is at least 85 bytes beyond its path.
        let mut cache = StatCache {
            paths: String::with_capacity(bytes.len() / 2),
            index: FxHashMap::with_capacity_and_hasher(
                files.min(bytes.len() / 85),
                Default::default(),
            ),
            dirs: FxHashMap::default(),
            stamp,
            unsynced_in,
        };
        for _ in 0..files {
            let path = r.str()?;
            let stat = r.stat()?;
            let object = ObjectId::from_bytes(r.take(32)?.try_into().ok()?);
            let stored_size = r.u64()?;
            let relocatable = r.take(1)?[0] != 0;
            cache.insert(
                path,
                CachedFile {
                    stat,
                    object,
                    stored_size,
                    relocatable,
                },
            );
        }
        let dirs = r.u32()? as usize;
        cache.dirs.reserve(dirs.min(bytes.len() / 52));
        for _ in 0..dirs {
            let (path, stat, entries) = (r.str()?, r.stat()?, r.str()?);
            let digest = match version {
                STAT_CACHE_VERSION_UNDIGESTED => None,
                _ => r.digest()?,
            };
            let listing = Listing {
                path: path.into(),
                stat,
                entries: entries.into(),
                digest,
            };
            cache.dirs.insert(path_key(&listing.path), listing);
        }
        if !r.0.is_empty() {
            return None;
        }
        Some(cache)
    }
}

/// The stat cache's reader: little-endian numbers and length-prefixed UTF-8, `None` past the end.
struct Bytes<'b>(&'b [u8]);

impl<'b> Bytes<'b> {
    fn take(&mut self, n: usize) -> Option<&'b [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    fn tree_digest(&mut self) -> Option<TreeDigest> {
        let mut digest = TreeDigest::default();
        for lane in &mut digest.0 {
            *lane = self.u64()?;
        }
        Some(digest)
    }

    /// A flag byte, then the digest when it is 1: `Some(None)` for no digest, `None` when malformed.
    fn digest(&mut self) -> Option<Option<TreeDigest>> {
        match self.take(1)?[0] {
            0 => Some(None),
            1 => self.tree_digest().map(Some),
            _ => None,
        }
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn str(&mut self) -> Option<&'b str> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?).ok()
    }

    fn stat(&mut self) -> Option<FileStat> {
        Some(FileStat {
            ino: self.u64()?,
            size: self.u64()?,
            mtime_ns: self.u64()? as i64,
            ctime_ns: self.u64()? as i64,
            mode: self.u32()?,
            nlink: self.u64()?,
        })
    }
}

/// The result of reading a directory.
pub struct Scan {
    /// What the walk found, in no order, until [`Scan::tree`] sorts it into the tree: a directory
    /// that turns out to be known never needs its tree built.
    found: RefCell<Vec<Vec<Item>>>,
    tree: OnceCell<Tree>,
    /// The digest of the tree.
    pub digest: TreeDigest,
    /// The stat cache brought up to date with what was read.
    pub cache: StatCache,
    /// Whether `cache` differs from the one the scan was given (and so is worth storing).
    pub cache_changed: bool,
    /// Files whose bytes had to be read (not recognised by the stat cache).
    pub hashed: usize,
    /// Files whose bytes changed in the inode they shared with others: see [`Scan::written_through`].
    in_place: Vec<InPlace>,
    /// The device of the directory scanned.
    dev: u64,
}

/// A file found with other bytes in the same inode the cache knew, which has other links.
struct InPlace {
    path: String,
    ino: u64,
    object: ObjectId,
    executable: bool,
}

impl Scan {
    /// Of a directory that does not exist.
    pub fn empty() -> Scan {
        Scan {
            found: RefCell::default(),
            tree: OnceCell::from(Tree::default()),
            digest: TreeDigest::default(),
            cache: StatCache::default(),
            cache_changed: true,
            hashed: 0,
            in_place: Vec::new(),
            dev: 0,
        }
    }

    /// Files written in place through a hardlink to a store object (with their path and the object):
    /// the object no longer holds the bytes it is named by, in every snapshot and environment that
    /// has it. A file linked from the store is read-only, but its owner may make it writable, and
    /// root writes anyway.
    pub fn written_through(
        &self,
        objects: &crate::objects::ObjectStore,
    ) -> Vec<(String, ObjectId)> {
        self.in_place
            .iter()
            .filter(|file| {
                objects
                    .existing_object_path(&file.object, file.executable)
                    .and_then(|path| path.symlink_metadata().ok())
                    .is_some_and(|meta| meta.ino() == file.ino && meta.dev() == self.dev)
            })
            .map(|file| (file.path.clone(), file.object))
            .collect()
    }

    pub fn tree(&self) -> &Tree {
        self.tree.get_or_init(|| {
            let mut items: Vec<Item> = self.found.take().into_iter().flatten().collect();
            items.par_sort_unstable_by(|a, b| a.path.cmp(&b.path));
            Tree {
                entries: items.into_iter().map(|i| (i.path, i.node)).collect(),
            }
        })
    }

    pub fn into_parts(self) -> (Tree, StatCache) {
        self.tree();
        (self.tree.into_inner().unwrap_or_default(), self.cache)
    }

    /// True when the directory is known to hold exactly `snapshot`: the cache it was scanned with was
    /// written for `snapshot`, and the scan's digest is that snapshot's. False means "not known":
    /// compare with the snapshot's tree.
    pub fn holds(&self, snapshot: &SnapshotId) -> bool {
        self.cache.stamp()
            == Some(Stamp {
                snapshot: *snapshot,
                tree: self.digest,
            })
    }

    /// The stat cache brought up to date, without the tree.
    pub fn into_cache(self) -> StatCache {
        self.cache
    }

    /// The cache to keep once the directory is known to hold `snapshot` (equal to its tree).
    pub fn into_cache_of(mut self, snapshot: SnapshotId) -> StatCache {
        self.cache.stamp_with(snapshot, self.digest);
        self.cache
    }
}

/// Where a capture stores the objects of new files.
#[derive(Clone, Copy)]
pub struct Sink<'a> {
    pub staging: &'a Staging<'a>,
    /// The snapshot the capture starts from, whose objects are in the store: when the stat cache was
    /// written for it, a file the cache recognises needs no look-up in the store.
    pub head: Option<SnapshotId>,
}

/// Reads `root` into a tree. Files the cache recognises are not opened; others are hashed (with their
/// paths abstracted) and, when `sink` is given, stored as objects. What no snapshot can hold (a named
/// pipe, a socket, a device, a name that is not UTF-8) fails the scan, naming each.
pub fn scan(
    root: &Path,
    cache: StatCache,
    placeholders: &Placeholders,
    sink: Option<Sink<'_>>,
) -> Result<Scan> {
    let (scan, mut unstorable) = scan_all(root, cache, placeholders, sink)?;
    match unstorable.len() {
        0 => Ok(scan),
        1 => Err(unstorable.remove(0)),
        _ => Err(Error::Unstorable(unstorable)),
    }
}

/// As [`scan`], storing nothing, for a report of the directory: what no snapshot can hold is left out
/// of the tree and returned beside it ([`Error::UnsupportedFileType`], [`Error::NonUtf8Path`]).
pub fn scan_leaving_out_unstorable(
    root: &Path,
    cache: StatCache,
    placeholders: &Placeholders,
) -> Result<(Scan, Vec<Error>)> {
    scan_all(root, cache, placeholders, None)
}

fn scan_all(
    root: &Path,
    cache: StatCache,
    placeholders: &Placeholders,
    sink: Option<Sink<'_>>,
) -> Result<(Scan, Vec<Error>)> {
    let now_ns = now_ns();
    let walk = Walk {
        ctx: ScanCtx {
            cache: &cache,
            placeholders,
            sink,
            adopt: false,
        },
        found: Mutex::default(),
        digest: Mutex::default(),
        listings: Mutex::default(),
        error: Mutex::default(),
        unstorable: Mutex::default(),
    };
    let root_meta = fs::metadata(root).at("reading directory", root)?;
    let root_stat = FileStat::of(&root_meta);
    rayon::scope(|scope| walk.dir(scope, root.to_path_buf(), String::new(), root_stat));
    if let Some(error) = into_inner(walk.error) {
        return Err(error);
    }
    let mut unstorable = into_inner(walk.unstorable);
    unstorable.sort_by_key(ToString::to_string);
    let digest = into_inner(walk.digest);
    let found = into_inner(walk.found);
    let mut listings = into_inner(walk.listings);
    let items = || found.iter().flatten();
    let hashed = items().filter(|i| i.hashed).count();
    let in_place: Vec<InPlace> = items()
        .filter(|item| item.hashed)
        .filter_map(|item| {
            let stat = item.stat?;
            let known = cache.get(&item.path)?;
            let changed = matches!(item.node, Node::File { object, .. } if object != known.object);
            (changed && stat.nlink > 1 && stat.ino == known.stat.ino).then(|| InPlace {
                path: item.path.clone(),
                ino: stat.ino,
                object: known.object,
                executable: known.stat.mode & 0o111 != 0,
            })
        })
        .collect();
    let files = items().filter(|i| i.stat.is_some()).count();
    let recordable = || listings.iter().filter(|l| !l.stat.is_racy(now_ns));
    // Every file recognised, every directory listed as the cache has it, and every cached path still
    // there: the cache stands as it is.
    let cache_changed = hashed > 0
        || files != cache.len()
        || recordable().count() != cache.dirs.len()
        || recordable().any(|l| cache.listing(&l.path) != Some(l));
    let mut cache = cache;
    if cache_changed {
        // Patched in place, not rebuilt: a walk that finds anything new usually finds a few files
        // and directories among thousands (rebuilding took ~3 ms on the big environment).
        let stamp = cache.stamp();
        // Whether a file or directory the cache knows was not found. Usually every one was (a few
        // changed among thousands), and the sets of what was found need not be built (~2 ms). Counted
        // by key: two found paths of one key would hide an entry left behind, which is harmless, as an
        // entry recognises only a file with its inode, size and times.
        let found_cached = items()
            .filter(|i| {
                i.stat.is_some() && (!i.hashed || cache.index.contains_key(&path_key(&i.path)))
            })
            .count();
        let files_gone = found_cached != cache.len();
        let dirs_gone = listings
            .iter()
            .filter(|l| cache.listing(&l.path).is_some())
            .count()
            != cache.dirs.len();
        for item in items().filter(|i| i.hashed) {
            if let Some(stat) = item.stat {
                cache.record(&item.path, stat, &item.node, now_ns);
            }
        }
        if files_gone {
            let seen: FxHashSet<u64> = items()
                .filter(|i| i.stat.is_some())
                .map(|i| path_key(&i.path))
                .collect();
            cache.index.retain(|key, _| seen.contains(key));
        }
        if dirs_gone {
            let seen: FxHashSet<u64> = listings.iter().map(|l| path_key(&l.path)).collect();
            cache.dirs.retain(|key, _| seen.contains(key));
        }
        // A directory some of whose files were read gets its listing's digest from what was found,
        // so the next walk that recognises them all need not hash its entries.
        let mut sums: FxHashMap<Box<str>, TreeDigest> = listings
            .iter()
            .filter(|l| l.digest.is_none())
            .map(|l| (l.path.clone(), TreeDigest::default()))
            .collect();
        if !sums.is_empty() {
            // Each group is one directory's entries, or one file hashed on its own.
            for group in found.iter() {
                let Some(first) = group.first() else {
                    continue;
                };
                let parent = first.path.rsplit_once('/').map_or("", |(parent, _)| parent);
                if let Some(sum) = sums.get_mut(parent) {
                    for item in group {
                        sum.add(&item.path, &item.node);
                    }
                }
            }
            for listing in &mut listings {
                listing.digest = listing.digest.or_else(|| sums.get(&listing.path).copied());
            }
        }
        for listing in listings {
            if cache.listing(&listing.path) != Some(&listing) {
                cache.record_listing(listing, now_ns);
            }
        }
        // What the cache knew still holds when the directory is what it was written for.
        cache.stamp = stamp.filter(|s| s.tree == digest);
    }
    if cache.stamp().is_some_and(|s| s.tree != digest) {
        cache.stamp = None;
    }
    let scan = Scan {
        found: RefCell::new(found),
        tree: OnceCell::new(),
        digest,
        cache,
        cache_changed,
        hashed,
        in_place,
        dev: root_meta.dev(),
    };
    Ok((scan, unstorable))
}

fn into_inner<T>(mutex: Mutex<T>) -> T {
    mutex.into_inner().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Seconds and nanoseconds as one count, saturating far outside the years 1678–2262.
pub(crate) fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

struct Item {
    path: String,
    node: Node,
    stat: Option<FileStat>,
    hashed: bool,
}

/// A scan of one directory tree by the rayon pool: each directory is a task that takes its entries
/// (from the cache's listing when the directory's stat says they are the same, else by reading it) and
/// spawns a task per subdirectory and per file to hash; results are gathered, and the digest summed,
/// in whatever order the tasks end.
struct Walk<'a> {
    ctx: ScanCtx<'a>,
    /// What each task found: one directory's entries, or one file it hashed.
    found: Mutex<Vec<Vec<Item>>>,
    digest: Mutex<TreeDigest>,
    /// Every directory's listing, for the cache.
    listings: Mutex<Vec<Listing>>,
    /// The first error met; the walk stops spawning once there is one.
    error: Mutex<Option<Error>>,
    /// What no snapshot can hold (a named pipe, a name that is not UTF-8), each named: the walk goes
    /// on past them, so that the scan's error names them all.
    unstorable: Mutex<Vec<Error>>,
}

/// A directory's entries by name, as the walk found them.
type Entries = Vec<(String, Seen)>;

/// A directory's entries as the walk got them.
struct DirRead {
    entries: Entries,
    /// The digest its cached listing recorded, when the entries came from it.
    digest: Option<TreeDigest>,
    /// Whether the entries may be kept as the directory's listing for the next walk.
    listable: bool,
    /// Entries no snapshot can hold, left out of `entries`.
    unstorable: Vec<Error>,
}

/// What the walk found at one entry of a directory.
enum Seen {
    Dir(FileStat),
    File(FileStat),
    Symlink(String),
}

impl<'a> Walk<'a> {
    fn dir<'s>(&'s self, scope: &rayon::Scope<'s>, abs: PathBuf, rel: String, stat: FileStat)
    where
        'a: 's,
    {
        if lock(&self.error).is_none() {
            match self.entries(&abs, &rel, &stat) {
                // The root's own is an error: the environment cannot be read at all.
                Err(error) if is_unreadable(&error, &abs) && !rel.is_empty() => {
                    lock(&self.unstorable).push(Error::Unreadable { path: abs })
                }
                read => self.keep(read.and_then(|read| self.visit(scope, &abs, rel, stat, read))),
            }
        }
    }

    /// Keeps what a task found, and the digest of those entries.
    fn keep(&self, items: Result<(Vec<Item>, TreeDigest)>) {
        match items {
            Ok((items, digest)) => {
                lock(&self.digest).merge(digest);
                lock(&self.found).push(items);
            }
            Err(error) => {
                lock(&self.error).get_or_insert(error);
            }
        }
    }

    /// The directory's entries: those of its listing in the cache while its stat is the one the listing
    /// was read with (files and subdirectories are still `lstat`ed; an entry gone or of another kind
    /// means the listing is not trusted), with the listing's digest, else what reading it finds.
    fn entries(&self, abs: &Path, rel: &str, stat: &FileStat) -> Result<DirRead> {
        if let Some(listing) = self.ctx.cache.listing_of(rel, stat)
            && !may_hold_hook(abs, rel)
            && let Some(entries) = listed(abs, listing)
        {
            return Ok(DirRead {
                entries,
                digest: listing.digest,
                listable: true,
                unstorable: Vec::new(),
            });
        }
        read_entries(abs, rel.is_empty())
    }

    fn visit<'s>(
        &'s self,
        scope: &rayon::Scope<'s>,
        abs: &Path,
        rel: String,
        stat: FileStat,
        read: DirRead,
    ) -> Result<(Vec<Item>, TreeDigest)>
    where
        'a: 's,
    {
        let DirRead {
            entries,
            digest: listed_digest,
            listable,
            unstorable,
        } = read;
        lock(&self.unstorable).extend(unstorable);
        let mut items = Vec::with_capacity(entries.len());
        let mut listed = String::new();
        let mut read_any = false;
        for (name, seen) in entries {
            let path = crate::tree::child_path(&rel, &name);
            match seen {
                Seen::Dir(stat) => {
                    Listing::push(&mut listed, Listed::Dir(&name));
                    items.push(Item {
                        path: path.clone(),
                        node: Node::Dir,
                        stat: None,
                        hashed: false,
                    });
                    let abs = abs.join(&name);
                    scope.spawn(move |scope| self.dir(scope, abs, path, stat));
                }
                Seen::File(stat) => {
                    Listing::push(&mut listed, Listed::File(&name));
                    let executable = stat.mode & 0o111 != 0;
                    match self.ctx.recognise(path, stat, executable) {
                        Ok(item) => items.push(item),
                        Err(path) => {
                            read_any = true;
                            let abs = abs.join(&name);
                            scope.spawn(move |_| {
                                match self.ctx.hash_file(abs.clone(), path, stat, executable) {
                                    Err(error) if is_unreadable(&error, &abs) => {
                                        lock(&self.unstorable).push(Error::Unreadable { path: abs })
                                    }
                                    item => self.keep(item.map(|item| {
                                        let digest = TreeDigest::of([(&item.path, &item.node)]);
                                        (vec![item], digest)
                                    })),
                                }
                            });
                        }
                    }
                }
                Seen::Symlink(target) => {
                    Listing::push(&mut listed, Listed::Symlink(&name, &target));
                    let node = symlink_node(self.ctx.placeholders, &target);
                    items.push(Item {
                        path,
                        node,
                        stat: None,
                        hashed: false,
                    });
                }
            }
        }
        let digest = match listed_digest {
            Some(digest) if !read_any => digest,
            _ => TreeDigest::of(items.iter().map(|item| (&item.path, &item.node))),
        };
        if listable {
            lock(&self.listings).push(Listing {
                path: rel.into(),
                stat,
                entries: listed.into(),
                digest: (!read_any).then_some(digest),
            });
        }
        Ok((items, digest))
    }
}

/// Whether `error` says blast may not read `abs`, a file or directory of the environment (not the
/// store's: an object it could not write), by its permissions: what it holds is not known, so no
/// snapshot can take it, and the walk goes on past it, naming it with what no snapshot can hold (found
/// by exploratory testing: one file of mode 000 made `status` fail outright).
fn is_unreadable(error: &Error, abs: &Path) -> bool {
    matches!(error, Error::Io { source, path, .. }
        if source.kind() == std::io::ErrorKind::PermissionDenied && path.as_path() == abs)
}

/// Whether a `site-packages` directory holds a file of the import hook's names. Its listing may come
/// from a cache written before directories holding the hook got none, and the hook must be read.
fn may_hold_hook(abs: &Path, rel: &str) -> bool {
    rel.rsplit('/').next() == Some("site-packages")
        && [crate::imports::HOOK_MODULE, crate::imports::HOOK_PTH]
            .iter()
            .any(|name| abs.join(name).symlink_metadata().is_ok())
}

/// A directory's entries as its cached listing gives them, each file and subdirectory `lstat`ed again;
/// `None` when one is gone or of another kind than listed, or the listing is malformed.
fn listed(abs: &Path, listing: &Listing) -> Option<Entries> {
    // Entries are looked up relative to the directory: whole paths were an eighth of a rollback's CPU.
    let dir = crate::fsutil::dir_handle(nix::fcntl::AT_FDCWD, abs, false).ok()?;
    let lstat_as = |name: &str, kind: SFlag| {
        let stat = nix::sys::stat::fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
        (stat.st_mode & SFlag::S_IFMT.bits() == kind.bits()).then(|| FileStat::of_stat(&stat))
    };
    let mut entries = Vec::new();
    for entry in listing.entries() {
        let (name, seen) = match entry? {
            Listed::File(name) => (name, Seen::File(lstat_as(name, SFlag::S_IFREG)?)),
            Listed::Dir(name) => (name, Seen::Dir(lstat_as(name, SFlag::S_IFDIR)?)),
            Listed::Symlink(name, target) => (name, Seen::Symlink(target.to_owned())),
        };
        entries.push((name.to_owned(), seen));
    }
    Some(entries)
}

/// A directory's entries as reading it finds them, but `__pycache__`, the import-tracking hook's
/// files and, at the environment's root, uv's empty lock file; anything but a file, directory or
/// symlink is refused. A directory holding the hook or the lock file is not listable: they are known
/// by their content, which a write in place changes without touching the directory's stat, so the
/// directory is read again each time.
fn read_entries(abs: &Path, root: bool) -> Result<DirRead> {
    let mut entries = Vec::new();
    let mut listable = true;
    let mut unstorable = Vec::new();
    for entry in fs::read_dir(abs).at("reading directory", abs)? {
        let entry = entry.at("reading directory", abs)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            unstorable.push(Error::NonUtf8Path(entry.path()));
            continue;
        };
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            // A directory that lists but cannot be searched (mode r--) is unreadable as a whole (found
            // in review: it failed the scan).
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(e).at("reading directory", abs);
            }
            Err(e) => return Err(e).at("inspecting", &entry.path()),
        };
        let ft = meta.file_type();
        let seen = if ft.is_dir() {
            if name == PYCACHE {
                continue;
            }
            Seen::Dir(FileStat::of(&meta))
        } else if ft.is_file() {
            if is_hook_file(name, &entry.path()) {
                listable = false;
                continue;
            }
            if root && name == UV_LOCK_FILE && meta.len() == 0 {
                // Read again at each scan, as the hook is: a write into it moves no directory stat.
                listable = false;
                continue;
            }
            Seen::File(FileStat::of(&meta))
        } else if ft.is_symlink() {
            let abs = entry.path();
            let target = fs::read_link(&abs).at("reading symlink", &abs)?;
            match target.into_os_string().into_string() {
                Ok(target) => Seen::Symlink(target),
                Err(_) => {
                    unstorable.push(Error::NonUtf8Path(abs));
                    continue;
                }
            }
        } else {
            unstorable.push(Error::UnsupportedFileType {
                path: entry.path(),
                kind: special_kind(SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT)),
            });
            continue;
        };
        entries.push((name.to_owned(), seen));
    }
    Ok(DirRead {
        entries,
        digest: None,
        listable: listable && unstorable.is_empty(),
        unstorable,
    })
}

/// A symlink's node: its target with the environment's paths abstracted (see `Placeholders`).
fn symlink_node(placeholders: &Placeholders, target: &str) -> Node {
    match placeholders.abstract_str(target) {
        Some(target) => Node::Symlink {
            target,
            relocatable: true,
        },
        None => Node::Symlink {
            target: target.to_owned(),
            relocatable: false,
        },
    }
}

struct ScanCtx<'a> {
    cache: &'a StatCache,
    placeholders: &'a Placeholders,
    sink: Option<Sink<'a>>,
    /// The files are the scan's to take (an overlay's upper directory in the store's staging): a file
    /// stored as it is moves into the store instead of being copied.
    adopt: bool,
}

impl ScanCtx<'_> {
    /// The file as the cache knows it, or its path back when it must be read.
    fn recognise(
        &self,
        path: String,
        stat: FileStat,
        executable: bool,
    ) -> std::result::Result<Item, String> {
        let Some(hit) = self.cache.recognise(&path, &stat) else {
            return Err(path);
        };
        // Objects of the snapshot the cache was written for are in the store; any other may have
        // been swept since, and the sink then stores it again.
        if let Some(sink) = self.sink
            && (sink.head.is_none() || self.cache.stamp.map(|s| s.snapshot) != sink.head)
            && !sink.staging.has_object(&hit.object, executable)
        {
            return Err(path);
        }
        Ok(Item {
            path,
            node: Node::File {
                object: hit.object,
                size: hit.stored_size,
                executable,
                relocatable: hit.relocatable,
            },
            stat: Some(stat),
            hashed: false,
        })
    }

    fn hash_file(
        &self,
        abs: PathBuf,
        path: String,
        stat: FileStat,
        executable: bool,
    ) -> Result<Item> {
        let adoptable = (self.adopt && stat.nlink == 1).then_some(abs.as_path());
        let node = if stat.size > RELOCATION_SCAN_LIMIT {
            self.store_large_file(&abs, executable, adoptable)?
        } else {
            let bytes = fs::read(&abs).at("reading", &abs)?;
            self.store_bytes(bytes, &path, executable, adoptable)?
        };
        Ok(Item {
            path,
            node,
            stat: Some(stat),
            hashed: true,
        })
    }

    /// The node of a file too large to be looked at for the environment's paths: its bytes are hashed
    /// and stored as they stream past (or it is adopted, hashed first), never held whole. Read, not
    /// mapped: a file truncated meanwhile by someone else would end a mapping's reader with SIGBUS.
    fn store_large_file(
        &self,
        abs: &Path,
        executable: bool,
        adoptable: Option<&Path>,
    ) -> Result<Node> {
        let (object, size) = match (self.sink, adoptable) {
            (Some(sink), None) => {
                let mut file = fs::File::open(abs).at("reading", abs)?;
                sink.staging.put_object_from(None, executable, &mut file)?
            }
            (sink, _) => {
                let mut hasher = blake3::Hasher::new();
                let mut file = fs::File::open(abs).at("reading", abs)?;
                std::io::copy(&mut file, &mut hasher).at("reading", abs)?;
                let object = ObjectId::from(hasher.finalize());
                if let (Some(sink), Some(file)) = (sink, adoptable) {
                    sink.staging.adopt_object(&object, executable, file)?;
                }
                (object, hasher.count())
            }
        };
        Ok(Node::File {
            object,
            size,
            executable,
            relocatable: false,
        })
    }

    /// The node of the file at `path` that holds `bytes`, which are stored as its object when the scan
    /// has a sink. `adoptable` is the file itself when it is the scan's to take: stored as it is, it
    /// moves into the store instead of being written again.
    fn store_bytes(
        &self,
        bytes: Vec<u8>,
        path: &str,
        executable: bool,
        adoptable: Option<&Path>,
    ) -> Result<Node> {
        let abstracted = if (bytes.len() as u64) <= RELOCATION_SCAN_LIMIT
            && memchr::memchr(0, &bytes).is_none()
        {
            self.placeholders.abstract_bytes(&bytes, path == PYVENV_CFG)
        } else {
            None
        };
        let relocatable = abstracted.is_some();
        let stored = abstracted.as_deref().unwrap_or(&bytes);
        let object = match (self.sink, adoptable) {
            (Some(sink), Some(file)) if !relocatable => {
                let id = ObjectId::of(stored);
                sink.staging.adopt_object(&id, executable, file)?;
                id
            }
            (Some(sink), _) => sink.staging.put_object(stored, executable)?,
            (None, _) => ObjectId::of(stored),
        };
        Ok(Node::File {
            object,
            size: stored.len() as u64,
            executable,
            relocatable,
        })
    }
}

fn special_kind(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFIFO => "named pipe",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFBLK | SFlag::S_IFCHR => "device",
        _ => "special file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cache_round_trips_and_garbage_is_empty() {
        let mut cache = StatCache::default();
        let stat = FileStat {
            ino: 7,
            size: 3,
            mtime_ns: 1,
            ctime_ns: 2,
            mode: 0o100644,
            nlink: 1,
        };
        let node = Node::File {
            object: ObjectId::of(b"abc"),
            size: 3,
            executable: false,
            relocatable: true,
        };
        cache.record("a/b.py", stat, &node, i64::MAX / 2);
        let mut entries = String::new();
        Listing::push(&mut entries, Listed::File("b.py"));
        Listing::push(&mut entries, Listed::Dir("c"));
        Listing::push(&mut entries, Listed::Symlink("d", "../e"));
        let dir_stat = FileStat {
            mode: 0o040755,
            nlink: 3,
            ..stat
        };
        let listing = Listing {
            path: "a".into(),
            stat: dir_stat,
            entries: entries.into(),
            digest: Some(TreeDigest([1, 2, 3, u64::MAX])),
        };
        cache.record_listing(listing.clone(), i64::MAX / 2);
        assert_eq!(cache.len(), 1);
        assert_eq!(
            listing.entries().collect::<Vec<_>>(),
            [
                Some(Listed::File("b.py")),
                Some(Listed::Dir("c")),
                Some(Listed::Symlink("d", "../e"))
            ]
        );
        let decoded = StatCache::decode(&cache.encode());
        assert_eq!(decoded, cache);
        assert_eq!(decoded.listing_of("a", &dir_stat), Some(&listing));
        assert_eq!(
            decoded.listing_of(
                "a",
                &FileStat {
                    ctime_ns: 3,
                    ..dir_stat
                }
            ),
            None
        );
        // A mark of unsynced writes goes along.
        let mut marked = cache.clone();
        marked.mark_unsynced([7; 16]);
        assert_eq!(StatCache::decode(&marked.encode()), marked);
        assert_ne!(marked, cache);
        // The formats before it (no stamp here: the mark's flag is the third byte) read unmarked.
        let without_mark = |encoded: &mut Vec<u8>, version: u8| {
            assert_eq!(encoded[1..3], [0, 0], "neither stamped nor marked");
            encoded.remove(2);
            encoded[0] = version;
            encoded.truncate(encoded.len() - 4);
            encoded.extend_from_slice(&crc32fast::hash(encoded).to_le_bytes());
        };
        let mut synced = cache.encode();
        without_mark(&mut synced, STAT_CACHE_VERSION_SYNCED);
        assert_eq!(StatCache::decode(&synced), cache);
        // The format before listings carried digests reads with none.
        let mut undigested = cache.clone();
        for listing in undigested.dirs.values_mut() {
            listing.digest = None;
        }
        let mut old = undigested.encode();
        old.truncate(old.len() - 5);
        old.extend_from_slice(&[0; 4]);
        without_mark(&mut old, STAT_CACHE_VERSION_UNDIGESTED);
        assert_eq!(StatCache::decode(&old), undigested);
        assert!(StatCache::decode(b"\x09garbage").is_empty());
        let mut truncated = cache.encode();
        truncated.pop();
        assert!(StatCache::decode(&truncated).is_empty());
        // A torn write: the file's object id zeroed, every length and count still intact.
        let mut torn = cache.encode();
        let object_at = 1 + 1 + 1 + 4 + 4 + "a/b.py".len() + 44;
        assert_eq!(
            &torn[object_at..object_at + 32],
            ObjectId::of(b"abc").as_bytes()
        );
        torn[object_at..object_at + 32].fill(0);
        assert!(StatCache::decode(&torn).is_empty());
        let encoded = cache.encode();
        for at in 0..encoded.len() {
            let mut flipped = encoded.clone();
            flipped[at] ^= 0x01;
            assert!(StatCache::decode(&flipped).is_empty(), "byte {at} flipped");
        }
    }

    #[test]
    fn the_stamp_hint_reads_the_snapshot_a_saved_cache_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        assert_eq!(StatCache::stamp_hint(&path), None, "no file");
        let mut cache = StatCache::default();
        cache.save(&path).unwrap();
        assert_eq!(StatCache::stamp_hint(&path), None, "no stamp");
        let snapshot = SnapshotId::of(b"snapshot");
        cache.stamp_with(snapshot, TreeDigest::default());
        cache.save(&path).unwrap();
        assert_eq!(StatCache::stamp_hint(&path), Some(snapshot));
        let mut other_version = fs::read(&path).unwrap();
        other_version[0] = STAT_CACHE_VERSION + 1;
        fs::write(&path, other_version).unwrap();
        assert_eq!(StatCache::stamp_hint(&path), None, "another format");
    }

    #[test]
    fn stat_cache_entries_are_replaced_forgotten_and_pruned_by_path() {
        let stat = |ino| FileStat {
            ino,
            size: 1,
            mtime_ns: 1,
            ctime_ns: 1,
            mode: 0o100644,
            nlink: 1,
        };
        let node = |b: &[u8]| Node::File {
            object: ObjectId::of(b),
            size: 1,
            executable: false,
            relocatable: false,
        };
        let mut cache = StatCache::default();
        for (i, path) in ["a/x", "a/y", "a-1/z", "b"].into_iter().enumerate() {
            cache.record(path, stat(i as u64), &node(path.as_bytes()), i64::MAX / 2);
        }
        cache.record("b", stat(9), &node(b"new"), i64::MAX / 2);
        assert_eq!(cache.len(), 4);
        assert_eq!(cache.get("b").map(|f| f.stat.ino), Some(9));
        cache.forget_below(&["a"]);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("a/x").is_none() && cache.get("a-1/z").is_some());
        cache.forget("b");
        cache.forget("not there");
        assert_eq!(cache.len(), 1);
        assert_eq!(StatCache::decode(&cache.encode()), cache);

        // A file whose mode is not its node's (an object made executable through a link) is read
        // again by the next scan, not taken for the node.
        let executable = FileStat {
            mode: 0o100555,
            ..stat(5)
        };
        cache.record("c", executable, &node(b"c"), i64::MAX / 2);
        assert!(cache.get("c").is_none());
        let grown = FileStat { size: 2, ..stat(6) };
        cache.record("d", grown, &node(b"d"), i64::MAX / 2);
        assert!(cache.get("d").is_none());
    }

    #[test]
    fn racy_stats_are_not_cached() {
        let mut cache = StatCache::default();
        let now = now_ns();
        let stat = FileStat {
            ino: 1,
            size: 1,
            mtime_ns: now,
            ctime_ns: now,
            mode: 0o100644,
            nlink: 1,
        };
        let node = Node::File {
            object: ObjectId::of(b"x"),
            size: 1,
            executable: false,
            relocatable: false,
        };
        cache.record("x", stat, &node, now);
        assert!(cache.is_empty());
        // A directory's too: an entry made in the same tick after it was read would not move its mtime.
        let listing = Listing {
            path: "d".into(),
            stat: FileStat {
                mode: 0o040755,
                nlink: 2,
                ..stat
            },
            entries: "fx\0".into(),
            digest: None,
        };
        cache.record_listing(listing.clone(), now);
        assert!(cache.dirs.is_empty());
        cache.record_listing(listing, now + 1_000_000_000);
        assert_eq!(cache.dirs.len(), 1);
    }
}

#[cfg(test)]
mod scan_tests {
    use super::*;

    /// An environment directory under a fresh temporary one, holding `files` (path, content; their
    /// directories made), with its placeholders, once its files are older than the racy window.
    fn env_with(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf, Placeholders) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("env");
        for (path, content) in files {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        let ph = Placeholders {
            env_prefix: root.to_str().unwrap().to_owned(),
            python_bin: "/usr/bin".into(),
        };
        std::thread::sleep(std::time::Duration::from_millis(120));
        (dir, root, ph)
    }

    #[test]
    fn a_cache_marked_unsynced_in_another_boot_is_not_trusted() {
        let (dir, root, ph) = env_with(&[("lib/a.py", "a = 1\n"), ("lib/b.py", "b = 2\n")]);
        let path = dir.path().join("cache");
        let first = scan(&root, StatCache::default(), &ph, None).unwrap();
        assert_eq!(first.hashed, 2);
        let tree = first.tree().clone();
        let mut cache = first.into_cache();
        let this_boot = crate::fsutil::boot_id().unwrap();
        cache.mark_unsynced(this_boot);
        cache.save(&path).unwrap();
        let same_boot = scan(&root, StatCache::load(&path), &ph, None).unwrap();
        assert_eq!(
            same_boot.hashed, 0,
            "the writes are in this boot's page cache"
        );
        assert_eq!(
            same_boot.into_cache().unsynced_in,
            Some(this_boot),
            "a scan keeps the mark"
        );
        let mut other_boot = this_boot;
        other_boot[0] ^= 0xff;
        cache.mark_unsynced(other_boot);
        cache.save(&path).unwrap();
        assert!(StatCache::load(&path).is_empty());
        let after_reboot = scan(&root, StatCache::load(&path), &ph, None).unwrap();
        assert_eq!(after_reboot.hashed, 2, "every file is read again");
        assert_eq!(after_reboot.tree(), &tree);
    }

    #[test]
    fn cached_scan_of_relocatable_file_equals_fresh_scan() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("env");
        fs::create_dir_all(root.join("bin")).unwrap();
        let prefix = root.to_str().unwrap().to_owned();
        fs::write(root.join("bin/tool"), format!("#!{prefix}/bin/python\n")).unwrap();
        fs::write(root.join("plain.txt"), "plain").unwrap();
        let ph = Placeholders {
            env_prefix: prefix,
            python_bin: "/usr/bin".into(),
        };
        std::thread::sleep(std::time::Duration::from_millis(120));
        let first = scan(&root, StatCache::default(), &ph, None).unwrap();
        assert_eq!(first.hashed, 2);
        assert_eq!(first.cache.len(), 2);
        let decoded = StatCache::decode(&first.cache.encode());
        let second = scan(&root, decoded, &ph, None).unwrap();
        assert_eq!(second.hashed, 0);
        assert_eq!(second.tree(), first.tree());
        assert!(!second.cache_changed);
        assert_eq!(second.cache.dirs.len(), 2, "the root's and bin's listings");
        assert_eq!(
            second.cache.listing("bin").map(|l| &*l.entries),
            Some("ftool\0")
        );
        match &first.tree().entries["bin/tool"] {
            Node::File {
                relocatable, size, ..
            } => {
                assert!(relocatable);
                assert_eq!(*size as usize, "#!@BLAST_ENV_PREFIX@/bin/python\n".len());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_listing_stands_for_its_directory_exactly_while_the_directory_keeps_its_stat() {
        let (_dir, root, ph) = env_with(&[("lib/a.py", "a")]);
        let mut cache = scan(&root, StatCache::default(), &ph, None)
            .unwrap()
            .into_cache();
        // The walk believes a listing whose stat matches: an entry planted in it is reported without
        // the directory being read (which shows the listing is what the walk used).
        let key = path_key("lib");
        for bad in ["f..\0", "f\0", "fa/b\0", "x.py\0", "lname\0"] {
            let listing = Listing {
                entries: bad.into(),
                ..cache.dirs[&key].clone()
            };
            assert!(listing.entries().any(|e| e.is_none()), "{bad:?}");
        }
        let mut planted = cache.dirs[&key].clone();
        planted.entries = format!("{}lghost\0a.py\0", planted.entries).into();
        cache.dirs.insert(key, planted.clone());
        let believed = scan(&root, cache.clone(), &ph, None).unwrap();
        assert!(believed.tree().entries.contains_key("lib/ghost"));
        // Once the directory's stat moves (an entry added, even with its mtime set back: the ctime
        // moves all the same), the listing is not used and the directory is read.
        let mtime = fs::metadata(root.join("lib")).unwrap().modified().unwrap();
        fs::write(root.join("lib/b.py"), "b").unwrap();
        fs::File::open(root.join("lib"))
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let read = scan(&root, cache, &ph, None).unwrap();
        let paths: Vec<&String> = read.tree().entries.keys().collect();
        assert_eq!(paths, ["lib", "lib/a.py", "lib/b.py"]);
        // A listed file that is gone makes the walk read the directory as well.
        let mut cache = read.into_cache();
        std::thread::sleep(std::time::Duration::from_millis(120));
        cache = scan(&root, cache, &ph, None).unwrap().into_cache();
        let mut stale = cache.dirs[&key].clone();
        stale.entries = format!("{}fgone.py\0", stale.entries).into();
        cache.dirs.insert(key, stale);
        let reread = scan(&root, cache, &ph, None).unwrap();
        assert!(!reread.tree().entries.contains_key("lib/gone.py"));
        assert!(reread.cache_changed);
    }

    #[test]
    fn a_listing_digest_stands_for_its_entries_only_while_each_file_is_recognised() {
        let (_dir, root, ph) =
            env_with(&[("lib/a.py", "a"), ("lib/b.py", "b"), ("top.txt", "top")]);
        let fresh = |root: &Path| scan(root, StatCache::default(), &ph, None).unwrap();
        let first = fresh(&root);
        let cache = first.into_cache();
        let lib = cache.listing("lib").unwrap();
        assert_eq!(
            lib.digest,
            Some(TreeDigest::of(fresh(&root).tree().descendants("lib"))),
            "the files read by the first walk give their directory's digest"
        );
        let again = scan(&root, cache.clone(), &ph, None).unwrap();
        assert!(!again.cache_changed);
        assert_eq!(again.digest, fresh(&root).digest);

        // An edit in place leaves the directory's stat as it was: the listing is still taken, but
        // the edited file is read, and the digest is that of what is there now.
        fs::write(root.join("lib/a.py"), "A").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(120));
        let edited = scan(&root, cache, &ph, None).unwrap();
        assert_eq!(edited.hashed, 1);
        assert_eq!(edited.digest, fresh(&root).digest);
        assert_ne!(edited.digest, again.digest);
    }

    #[test]
    fn a_scan_brings_its_cache_up_to_date_with_what_it_found() {
        let (_dir, root, ph) = env_with(&[
            ("lib/keep/a.py", "lib/keep/a.py"),
            ("lib/gone/b.py", "lib/gone/b.py"),
            ("share/c.txt", "share/c.txt"),
        ]);
        let first = scan(&root, StatCache::default(), &ph, None).unwrap();
        let digest = first.digest;
        let mut cache = first.into_cache();
        cache.stamp_with(SnapshotId::from_bytes([7; 32]), digest);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.dirs.len(), 5, "the root, lib, its two and share");

        // A directory gone with its file, a file edited, one added and left racy.
        fs::remove_dir_all(root.join("lib/gone")).unwrap();
        fs::write(root.join("share/c.txt"), "edited").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(120));
        fs::write(root.join("lib/keep/new.py"), "new").unwrap();
        let rescan = scan(&root, cache.clone(), &ph, None).unwrap();
        assert!(rescan.cache_changed);
        let patched = rescan.into_cache();
        assert!(patched.get("lib/gone/b.py").is_none());
        assert!(patched.listing("lib/gone").is_none());
        assert_eq!(patched.get("lib/keep/a.py"), cache.get("lib/keep/a.py"));
        assert_ne!(patched.get("share/c.txt"), cache.get("share/c.txt"));
        assert!(patched.get("share/c.txt").is_some());
        assert!(patched.get("lib/keep/new.py").is_none(), "racy");
        assert!(
            patched.listing("lib/keep").is_none(),
            "racy, the old one dropped"
        );
        assert!(patched.listing("share").is_some());
        assert_eq!(
            patched.stamp(),
            None,
            "the directory is no longer the stamped one"
        );

        // The same walk again finds the directory as the patched cache has it, but what was racy.
        std::thread::sleep(std::time::Duration::from_millis(120));
        let settled = scan(&root, patched, &ph, None).unwrap().into_cache();
        assert!(settled.get("lib/keep/new.py").is_some());
        assert!(settled.listing("lib/keep").is_some());
        let unchanged = scan(&root, settled.clone(), &ph, None).unwrap();
        let settled_digest = unchanged.digest;
        assert!(!unchanged.cache_changed);
        assert_eq!(unchanged.into_cache(), settled);

        // A patch keeps a stamp its directory still matches: the same bytes written again.
        let mut stamped_cache = settled;
        stamped_cache.stamp_with(SnapshotId::from_bytes([8; 32]), settled_digest);
        fs::write(root.join("share/c.txt"), "edited").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(120));
        let rewritten = scan(&root, stamped_cache.clone(), &ph, None).unwrap();
        assert!(rewritten.cache_changed && rewritten.hashed == 1);
        let rewritten = rewritten.into_cache();
        assert_eq!(rewritten.stamp(), stamped_cache.stamp());
        assert_eq!(rewritten.len(), 3);

        // A file removed and another added in one walk: as many files found as the cache knows, and
        // the removed one's entry still goes.
        fs::remove_file(root.join("lib/keep/a.py")).unwrap();
        fs::write(root.join("lib/keep/other.py"), "other").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(120));
        let swapped = scan(&root, rewritten, &ph, None).unwrap().into_cache();
        assert!(swapped.get("lib/keep/a.py").is_none());
        assert!(swapped.get("lib/keep/other.py").is_some());
        assert_eq!(swapped.len(), 3);
    }
}

#[cfg(test)]
mod relocation_tests {
    use super::*;

    #[test]
    fn interpreter_directory_is_abstracted_in_pyvenv_cfg_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("env");
        fs::create_dir_all(root.join("lib")).unwrap();
        fs::write(root.join("pyvenv.cfg"), "home = /opt/py/bin\n").unwrap();
        fs::write(root.join("lib/tool.py"), "SHELL = '/opt/py/bin/sh'\n").unwrap();
        let ph = Placeholders {
            env_prefix: root.to_str().unwrap().to_owned(),
            python_bin: "/opt/py/bin".into(),
        };
        let scan = scan(&root, StatCache::default(), &ph, None).unwrap();
        let relocatable = |path: &str| match &scan.tree().entries[path] {
            Node::File { relocatable, .. } => *relocatable,
            other => panic!("unexpected {other:?}"),
        };
        assert!(relocatable("pyvenv.cfg"));
        assert!(!relocatable("lib/tool.py"));
    }
}
