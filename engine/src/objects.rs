//! The object store: files named by the BLAKE3 hash of their bytes, plus the encoded layers and snapshots.
//!
//! Everything enters through a [`Staging`] area: written to a private file, made read-only, and only after
//! one `syncfs` for the whole batch (OSTree's delayed fsync) renamed into place. An object that exists is
//! therefore complete. Executable files are a separate variant (`<hash>.x`, mode 0555) because hardlinks
//! share one inode and so one mode.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use store_format::{Layer, LayerId, ObjectId, Snapshot, SnapshotId};

use crate::error::{Error, IoContext, Result};
use crate::lock::{self, LockGuard, LockMode};

#[derive(Debug, Clone)]
pub struct ObjectStore {
    objects: PathBuf,
    layers: PathBuf,
    snapshots: PathBuf,
    staging: PathBuf,
}

impl ObjectStore {
    pub(crate) fn at(home: &Path) -> Self {
        Self {
            objects: home.join("objects"),
            layers: home.join("layers"),
            snapshots: home.join("snapshots"),
            staging: home.join("staging"),
        }
    }

    pub(crate) fn create_dirs(&self) -> Result<()> {
        for dir in [&self.objects, &self.layers, &self.snapshots, &self.staging] {
            fs::create_dir_all(dir).at("creating store directory", dir)?;
        }
        Ok(())
    }

    pub fn objects_dir(&self) -> &Path {
        &self.objects
    }
    pub fn layers_dir(&self) -> &Path {
        &self.layers
    }
    pub fn snapshots_dir(&self) -> &Path {
        &self.snapshots
    }

    /// `objects/ab/cdef…` for 0444 files, `objects/ab/cdef….x` for the 0555 variant.
    pub fn object_path(&self, id: &ObjectId, executable: bool) -> PathBuf {
        self.objects.join(Self::object_name(id, executable))
    }

    /// The object's path relative to the objects directory: `ab/cdef…`, or `ab/cdef….x`.
    pub fn object_name(id: &ObjectId, executable: bool) -> String {
        let hex = id.to_hex();
        let suffix = if executable { ".x" } else { "" };
        format!("{}/{}{suffix}", &hex[..2], &hex[2..])
    }

    pub fn has_object(&self, id: &ObjectId, executable: bool) -> bool {
        self.object_path(id, executable).symlink_metadata().is_ok()
    }

    /// The mode of an object's file: read-only, and executable for the `.x` variant.
    pub fn object_mode(executable: bool) -> u32 {
        if executable { 0o555 } else { 0o444 }
    }

    /// The stored bytes of an object, from whichever variant exists.
    pub fn read_object(&self, id: &ObjectId) -> Result<Vec<u8>> {
        let plain = self.object_path(id, false);
        match fs::read(&plain) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let exe = self.object_path(id, true);
                match fs::read(&exe) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Invalid(
                        format!("object {id} is missing from the store: run `blast verify`"),
                    )),
                    read => read.at("reading object", &exe),
                }
            }
            Err(e) => Err(e).at("reading object", &plain),
        }
    }

    /// The path of an existing variant of the object, preferring `executable`.
    pub fn existing_object_path(&self, id: &ObjectId, executable: bool) -> Option<PathBuf> {
        [executable, !executable]
            .into_iter()
            .map(|x| self.object_path(id, x))
            .find(|p| p.symlink_metadata().is_ok())
    }

    pub fn layer_path(&self, id: &LayerId) -> PathBuf {
        self.layers.join(id.to_hex())
    }

    pub fn snapshot_path(&self, id: &SnapshotId) -> PathBuf {
        self.snapshots.join(id.to_hex())
    }

    pub fn has_snapshot(&self, id: &SnapshotId) -> bool {
        self.snapshot_path(id).exists()
    }

    /// Reads and checks a layer: its bytes must hash to its id.
    pub fn layer(&self, id: &LayerId) -> Result<Layer> {
        self.read_layer(id, Layer::decode)
    }

    /// The layer's entries at the paths `keep` accepts (see [`Layer::decode_where`]).
    pub fn layer_where(&self, id: &LayerId, keep: &mut dyn FnMut(&str) -> bool) -> Result<Layer> {
        self.read_layer(id, |bytes| Layer::decode_where(bytes, keep))
    }

    fn read_layer(
        &self,
        id: &LayerId,
        decode: impl FnOnce(&[u8]) -> std::result::Result<Layer, store_format::FormatError>,
    ) -> Result<Layer> {
        let path = self.layer_path(id);
        let bytes = fs::read(&path).at("reading layer", &path)?;
        if LayerId::of(&bytes) != *id {
            return Err(Error::Invalid(format!(
                "layer {} does not match its hash: run `blast verify`",
                id.short()
            )));
        }
        decode(&bytes).map_err(|source| Error::Format {
            what: format!("layer {}", id.short()),
            source,
        })
    }

    /// Reads and checks a snapshot: its bytes must hash to its id.
    pub fn snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let path = self.snapshot_path(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingSnapshot(id.short()));
            }
            Err(e) => return Err(e).at("reading snapshot", &path),
        };
        if SnapshotId::of(&bytes) != *id {
            return Err(Error::Invalid(format!(
                "snapshot {} does not match its hash: run `blast verify`",
                id.short()
            )));
        }
        Snapshot::decode(&bytes).map_err(|source| Error::Format {
            what: format!("snapshot {}", id.short()),
            source,
        })
    }

    /// All snapshot ids in the store, for prefix lookups.
    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.snapshots).at("listing", &self.snapshots)? {
            let entry = entry.at("listing", &self.snapshots)?;
            if let Some(id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Opens a staging area for one operation. Its lock tells `reclaim_staging` that it is in use.
    pub fn begin(&self) -> Result<Staging<'_>> {
        let (dir, lock_path, lock) = loop {
            let name = unique_name();
            let lock_path = self.staging.join(format!("{name}.lock"));
            let lock = lock::acquire(&lock_path, LockMode::Exclusive, "a staging area")?;
            // Reclaimed as an orphan between our open and our lock: take another name.
            if lock.is_at(&lock_path) {
                break (self.staging.join(&name), lock_path, lock);
            }
        };
        fs::create_dir(&dir).at("creating staging directory", &dir)?;
        Ok(Staging {
            store: self,
            dir,
            lock_path,
            _lock: lock,
            pending: Mutex::new(Pending::default()),
            counter: AtomicU64::new(0),
            lanes: (0..=rayon::current_num_threads())
                .map(|_| AtomicBool::new(false))
                .collect(),
        })
    }

    /// Removes staging areas whose operation died (nobody holds their lock). Returns how many.
    pub fn reclaim_staging(&self) -> Result<usize> {
        let mut reclaimed = 0;
        let entries = match fs::read_dir(&self.staging) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e).at("listing", &self.staging),
        };
        for entry in entries {
            let entry = entry.at("listing", &self.staging)?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "lock") {
                // A lock without its area: its process died before making the area, or after
                // removing it.
                let area = path.with_extension("");
                if !area.exists()
                    && let Some(_guard) = lock::try_acquire(&path, LockMode::Exclusive)?
                    && !area.exists()
                {
                    crate::fsutil::remove_file_if_exists(&path)?;
                }
                continue;
            }
            let lock_path = path.with_extension("lock");
            let Some(_guard) = lock::try_acquire(&lock_path, LockMode::Exclusive)? else {
                continue;
            };
            // A leftover that cannot be removed must not make the store unusable: say so, go on.
            match crate::fsutil::remove_tree(&path) {
                Ok(()) => {
                    crate::fsutil::remove_file_if_exists(&lock_path)?;
                    reclaimed += 1;
                }
                Err(e) => eprintln!("blast: warning: a dead staging area stays behind: {e}"),
            }
        }
        Ok(reclaimed)
    }
}

/// Final path → staged file, for everything staged and not yet committed.
type Pending = HashMap<PathBuf, PathBuf>;

/// One operation's batch of new objects, layers and snapshots. `commit` makes them durable and visible;
/// dropping it without commit leaves the store as it was.
pub struct Staging<'s> {
    store: &'s ObjectStore,
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: LockGuard,
    pending: Mutex<Pending>,
    counter: AtomicU64,
    /// Whether each thread's directory is made (see [`Staging::tmp_path`]).
    lanes: Vec<AtomicBool>,
}

impl Staging<'_> {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `bytes` as an object unless it exists already; returns its id.
    pub fn put_object(&self, bytes: &[u8], executable: bool) -> Result<ObjectId> {
        let id = ObjectId::of(bytes);
        let target = self.store.object_path(&id, executable);
        self.stage(target, bytes, ObjectStore::object_mode(executable))?;
        Ok(id)
    }

    /// Stages `file`, which holds exactly the bytes of object `id`, lies on the store's filesystem and
    /// has no other link, by renaming it: no copy. An object the store or this batch has already is left
    /// where it is.
    pub fn adopt_object(&self, id: &ObjectId, executable: bool, file: &Path) -> Result<()> {
        let target = self.store.object_path(id, executable);
        let len = fs::symlink_metadata(file).at("inspecting", file)?.len();
        if self.holds(&target, len) {
            return Ok(());
        }
        let tmp = self.tmp_path()?;
        fs::rename(file, &tmp).at("staging object from", file)?;
        let mode = ObjectStore::object_mode(executable);
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).at("setting mode of", &tmp)?;
        self.pending().entry(target).or_insert(tmp);
        Ok(())
    }

    /// Reads `reader` to its end, hashing the bytes as they stream past (never holding them in memory).
    /// They are staged as the object they hash to when that is `expected` (any object, when `None`) and
    /// that variant is neither in the store nor staged already; otherwise nothing is kept. Returns what
    /// the bytes hashed to and how many there were, so the caller can reject a mismatch.
    pub fn put_object_from(
        &self,
        expected: Option<&ObjectId>,
        executable: bool,
        reader: &mut dyn std::io::Read,
    ) -> Result<(ObjectId, u64)> {
        let mut hasher = blake3::Hasher::new();
        if let Some(id) = expected
            && self.has_object(id, executable)
        {
            let target = self.store.object_path(id, executable);
            let len = std::io::copy(reader, &mut hasher).at("reading object for", &target)?;
            return Ok((ObjectId::from(hasher.finalize()), len));
        }
        let tmp = self.tmp_path()?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .at("creating staged file", &tmp)?;
        let mut tee = HashingWriter {
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            hasher: &mut hasher,
        };
        let copied = std::io::copy(reader, &mut tee).and_then(|len| {
            tee.file.flush()?;
            Ok(len)
        });
        let len = match copied {
            Ok(len) => len,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e).at("staging object in", &tmp);
            }
        };
        let actual = ObjectId::from(hasher.finalize());
        if expected.is_some_and(|id| *id != actual)
            || self.holds(&self.store.object_path(&actual, executable), len)
        {
            fs::remove_file(&tmp).at("removing unneeded staged file", &tmp)?;
            return Ok((actual, len));
        }
        let mode = ObjectStore::object_mode(executable);
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).at("setting mode of", &tmp)?;
        let target = self.store.object_path(&actual, executable);
        self.pending().entry(target).or_insert(tmp);
        Ok((actual, len))
    }

    /// A new name for a staged file, in a directory of the calling thread's own: threads that add
    /// names to one directory wait on its lock, and a capture stages from every thread of the pool.
    fn tmp_path(&self) -> Result<PathBuf> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let lane = rayon::current_thread_index().map_or(0, |i| i + 1);
        let Some(made) = self.lanes.get(lane) else {
            return Ok(self.dir.join(n.to_string()));
        };
        let dir = self.dir.join(format!("lane-{lane}"));
        if !made.load(Ordering::Relaxed) {
            match fs::create_dir(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(e).at("creating staging directory", &dir);
                }
                _ => made.store(true, Ordering::Relaxed),
            }
        }
        Ok(dir.join(n.to_string()))
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bytes of an object that is in the store or staged in this batch.
    pub fn read_object(&self, id: &ObjectId) -> Result<Vec<u8>> {
        let staged = [false, true]
            .into_iter()
            .find_map(|x| self.pending().get(&self.store.object_path(id, x)).cloned());
        match staged {
            Some(tmp) => fs::read(&tmp).at("reading staged file", &tmp),
            None => self.store.read_object(id),
        }
    }

    /// Whether the store file at `target` is staged in this batch, or in the store with `len` bytes. One
    /// of another size was written in place through an environment's hardlink (`>>` as root): staged
    /// again, the commit puts the right bytes back under its name.
    fn holds(&self, target: &Path, len: u64) -> bool {
        self.pending().contains_key(target)
            || target
                .symlink_metadata()
                .is_ok_and(|meta| meta.len() == len)
    }

    /// True when the object is in the store or staged in this batch.
    pub fn has_object(&self, id: &ObjectId, executable: bool) -> bool {
        let target = self.store.object_path(id, executable);
        target.symlink_metadata().is_ok() || self.pending().contains_key(&target)
    }

    pub fn put_layer(&self, layer: &Layer) -> Result<LayerId> {
        let bytes = layer.encode();
        let id = LayerId::of(&bytes);
        self.stage_metadata(self.store.layer_path(&id), &bytes)?;
        Ok(id)
    }

    pub fn put_snapshot(&self, snapshot: &Snapshot) -> Result<SnapshotId> {
        let bytes = snapshot.encode();
        let id = SnapshotId::of(&bytes);
        self.stage_metadata(self.store.snapshot_path(&id), &bytes)?;
        Ok(id)
    }

    fn stage(&self, target: PathBuf, bytes: &[u8], mode: u32) -> Result<()> {
        if self.holds(&target, bytes.len() as u64) {
            return Ok(());
        }
        self.stage_anew(target, bytes, mode)
    }

    /// As [`Staging::stage`], for a layer's or a snapshot's bytes: a file of that name holding other
    /// bytes (damaged) is replaced. They are small, and an import or a pull is what `blast verify`
    /// says brings a damaged one back (found by exploratory testing: the pull failed on the damaged
    /// layer, and the import kept it).
    fn stage_metadata(&self, target: PathBuf, bytes: &[u8]) -> Result<()> {
        // One that cannot be read (its mode changed by hand) is damaged too (found in review).
        let damaged = !self.pending().contains_key(&target)
            && match fs::read(&target) {
                Ok(held) => held != bytes,
                Err(e) => e.kind() != std::io::ErrorKind::NotFound,
            };
        match damaged {
            true => self.stage_anew(target, bytes, 0o444),
            false => self.stage(target, bytes, 0o444),
        }
    }

    fn stage_anew(&self, target: PathBuf, bytes: &[u8], mode: u32) -> Result<()> {
        let tmp = self.tmp_path()?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .at("creating staged file", &tmp)?;
        file.write_all(bytes).at("writing staged file", &tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).at("setting mode of", &tmp)?;
        self.pending().entry(target).or_insert(tmp);
        Ok(())
    }

    /// Makes every staged file durable with one `syncfs`, then renames each into place and syncs again
    /// so the names are durable before any metadata refers to them.
    pub fn commit(self) -> Result<()> {
        let pending = std::mem::take(&mut *self.pending());
        if pending.is_empty() {
            return Ok(());
        }
        syncfs(&self.dir)?;
        // Objects before the layers that name them, layers before snapshots: a crash midway never
        // leaves a snapshot whose parts are missing.
        let mut moves: Vec<(PathBuf, PathBuf)> = pending.into_iter().collect();
        moves.sort_by_key(|(target, _)| {
            if target.starts_with(&self.store.snapshots) {
                2
            } else if target.starts_with(&self.store.layers) {
                1
            } else {
                0
            }
        });
        let mut made_dirs = HashSet::new();
        for (target, tmp) in &moves {
            if let Some(parent) = target.parent()
                && made_dirs.insert(parent.to_owned())
            {
                fs::create_dir_all(parent).at("creating object directory", parent)?;
            }
            fs::rename(tmp, target).at("moving staged file into", target)?;
        }
        syncfs(&self.dir)
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        // Best effort: a leftover is reclaimed by the next command (its lock is free then).
        let _ = crate::fsutil::remove_tree(&self.dir);
        let _ = crate::fsutil::remove_file_if_exists(&self.lock_path);
    }
}

/// Flushes the filesystem that holds `path`.
pub(crate) fn syncfs(path: &Path) -> Result<()> {
    let dir = File::open(path).at("opening for sync", path)?;
    nix::unistd::syncfs(&dir)
        .map_err(std::io::Error::from)
        .at("syncing filesystem of", path)
}

/// A name unique to this process and moment, for staging areas and ids.
pub(crate) fn unique_name() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let seed = format!("{now}-{}-{seq}", std::process::id());
    blake3::hash(seed.as_bytes()).to_hex()[..20].to_owned()
}

/// Writes to a file and a hasher at once.
struct HashingWriter<'h, W> {
    file: W,
    hasher: &'h mut blake3::Hasher,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the crash-injection suite: a process killed between taking a staging area's lock and
    /// making the area (or between removing the area and its lock) left the lock file forever.
    #[test]
    fn reclaim_removes_lock_files_left_without_their_area_but_not_held_ones() {
        let home = tempfile::tempdir().unwrap();
        let store = ObjectStore::at(home.path());
        store.create_dirs().unwrap();
        let orphan = store.staging.join("deadbeef.lock");
        fs::write(&orphan, b"").unwrap();
        let live = store.begin().unwrap();
        let held = store.staging.join("cafe.lock");
        let _guard = lock::acquire(&held, LockMode::Exclusive, "test").unwrap();

        store.reclaim_staging().unwrap();
        assert!(!orphan.exists());
        assert!(held.exists(), "a lock someone holds is not an orphan");
        assert!(live.dir().is_dir(), "a live staging area stays");
    }
}
