//! The metadata index: one RocksDB database under `$BLAST_HOME/index` holding what is not content —
//! environments, their HEADs, history, tags, apply journals, cached interpreter facts
//! (what a venv needs to know, and the marker values requirements are evaluated against) and timing
//! samples (see [`crate::metrics`]).
//!
//! RocksDB lets one process open a database at a time, so an [`Index`] is held only for the span of one
//! command (or one step of a long one) and guarded by a file lock: a second process waits for it instead
//! of failing. Keys are prefixed by record kind; values are postcard-encoded records.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use rocksdb::{DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use store_format::SnapshotId;

use crate::error::{Error, IoContext, Result};
use crate::lock::{self, LockGuard, LockMode};
use crate::markers::MarkerValues;
use crate::metrics::{MetricKind, MetricSample};
use crate::python::PythonInfo;

/// An environment known to the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvRecord {
    /// Stable internal id; names and paths can change.
    pub id: String,
    pub name: Option<String>,
    /// Absolute path of the directory.
    pub path: String,
    pub head: Option<SnapshotId>,
    pub python: PythonInfo,
    /// Unix seconds.
    pub created: i64,
}

impl EnvRecord {
    /// What users call it: the name, else the path.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.path)
    }

    /// Its directory; fails, saying what to do, when the directory is gone (removed or moved by hand).
    pub fn directory(&self) -> Result<&Path> {
        let root = Path::new(&self.path);
        match root.symlink_metadata() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::EnvDirMissing {
                env: self.label().to_owned(),
                path: root.to_owned(),
            }),
            _ => {
                self.refuse_replaced_directory()?;
                Ok(root)
            }
        }
    }

    /// The directory, refused unless it holds a virtual environment (its `pyvenv.cfg`): one emptied or
    /// replaced by hand is not captured as the environment's next snapshot, nor run from.
    pub fn virtual_environment(&self) -> Result<&Path> {
        let root = self.directory()?;
        if root.join("pyvenv.cfg").is_file() {
            return Ok(root);
        }
        let cmd = crate::shell::word(self.label());
        Err(Error::Invalid(format!(
            "`{}` holds no virtual environment (no pyvenv.cfg): its files were removed or replaced; \
             `blast status -e {cmd}` shows what is there, `blast rollback -e {cmd} --force HEAD` makes \
             it again",
            root.display(),
        )))
    }

    /// Refuses a directory replaced by a symlink or anything else but a directory (found by exploratory
    /// testing: a rollback of an environment whose directory had become a link to another's wrote
    /// through it, into the other). A directory gone is not refused here, nor a link that leads
    /// nowhere (the directory moved on by hand, which `blast move` takes where it went).
    pub fn refuse_replaced_directory(&self) -> Result<()> {
        use std::os::unix::fs::FileTypeExt;
        let root = Path::new(&self.path);
        let Ok(meta) = root.symlink_metadata() else {
            return Ok(());
        };
        let kind = meta.file_type();
        let (what, target) = if kind.is_dir() || (kind.is_symlink() && !root.exists()) {
            return Ok(());
        } else if kind.is_symlink() {
            let to = std::fs::read_link(root).unwrap_or_default();
            let what = format!("a symlink to `{}`", to.display());
            (
                what,
                std::fs::canonicalize(root).ok().filter(|t| t.is_dir()),
            )
        } else if kind.is_file() {
            ("a file".to_owned(), None)
        } else if kind.is_fifo() {
            ("a named pipe".to_owned(), None)
        } else if kind.is_socket() {
            ("a socket".to_owned(), None)
        } else {
            ("a device".to_owned(), None)
        };
        Err(Error::EnvDirReplaced {
            env: self.label().to_owned(),
            path: root.to_owned(),
            what,
            link: kind.is_symlink(),
            target,
        })
    }
}

/// One move of an environment's HEAD.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub seq: u64,
    /// Unix milliseconds.
    pub time_ms: i64,
    /// `create`, `snapshot`, `rollback`, `sync`, `install`…
    pub operation: String,
    pub message: Option<String>,
    pub from: Option<SnapshotId>,
    pub to: SnapshotId,
}

/// The intent of an apply in progress: written before the directory is touched, removed with the commit.
/// Finding one means a command died mid-apply; the next command finishes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub from: Option<SnapshotId>,
    pub to: SnapshotId,
    pub operation: String,
    pub message: Option<String>,
}

/// A move of an environment's directory to another path in progress (`blast move`): written before the
/// directory moves, removed with the record of its new path. The next command that opens the
/// environment finishes it, or gives it up when the directory never reached `to` (see
/// [`crate::dir_move`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Relocation {
    pub from: String,
    pub to: String,
    /// The directory is copied to `to` (another filesystem): what is left at `from` goes once the
    /// copy is there.
    pub copied: bool,
    /// The directory that the move takes to `to` (the environment's, the copy's, or the one moved there
    /// by hand): what is at `to` is finished only when it is that one.
    pub identity: Identity,
    /// For a copy, the directory at `from` when the move began: only that one is removed.
    pub left_behind: Option<Identity>,
}

/// A directory's device, inode and birth time, which a rename keeps. The birth time tells a directory
/// made again at the same path apart, where the filesystem gave it the freed inode number again (0
/// where the filesystem keeps none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub born_ns: i64,
}

const ENV: &str = "env/";
const NAME: &str = "name/";
const PATH: &str = "path/";
const HISTORY: &str = "hist/";
const TAG: &str = "tag/";
/// Where stat caches were kept before they moved to `stat-caches/`; still deleted with an environment.
const LEGACY_STAT_CACHE: &str = "stat/";
const JOURNAL: &str = "journal/";
const RELOCATION: &str = "relocation/";
const PYTHON: &str = "python/";
const SEED: &str = "seed/";
const LINK_MODE: &str = "link/";
const MARKERS: &str = "markers/";
const METRIC: &str = "metric/";
/// The store's id, also in the file `store-id` beside the index: an index without it is not the
/// store's (lost and made anew, or damaged).
const STORE_ID: &str = "store-id";
/// Where the store was last opened from: a store found elsewhere was moved, or copied.
const STORE_HOME: &str = "store-home";
/// In a copy of a store, per environment whose directory another store keeps: the stores it was
/// copied through, oldest first.
const KEPT_BY: &str = "kept-by/";

pub struct Index {
    // Field order matters: the database closes before the lock is released.
    /// Opened read-only (no manifest or options file written, nothing synced) until the first write
    /// reopens it for writing; `None` only if that reopening failed.
    db: RwLock<Option<DB>>,
    /// Read up to the first damage in its logs (`BLAST_INDEX_RECOVERY`).
    to_the_damage: bool,
    writable: AtomicBool,
    opts: Options,
    path: PathBuf,
    lock_path: PathBuf,
    /// `None` only while [`Index::released`] runs.
    lock: Mutex<Option<LockGuard>>,
}

impl Index {
    pub(crate) fn open(home: &Path, writable: bool) -> Result<Self> {
        let path = home.join("index");
        let lock_path = home.join("index.lock");
        let lock = acquire_index_lock(&lock_path)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // Its info log dumps every option at each open: warnings and errors are what is worth keeping.
        opts.set_log_level(rocksdb::LogLevel::Warn);
        opts.set_keep_log_file_num(2);
        opts.set_max_log_file_size(1 << 20);
        opts.set_skip_stats_update_on_db_open(true);
        opts.set_max_open_files(64);
        // A write-ahead log damaged before its end is an error, not the point where the index quietly
        // ends (RocksDB's default), which would drop every later record; a record cut short (a process
        // killed mid-write) is still taken as not written. A power cut can leave a garbled last record
        // too: the error names the way to read the index up to the damage, once.
        let to_the_damage = match std::env::var(RECOVERY_VAR) {
            Ok(mode) if mode == "point-in-time" => true,
            Ok(mode) => {
                return Err(Error::Invalid(format!(
                    "{RECOVERY_VAR} is `{mode}`: its one value is `point-in-time`"
                )));
            }
            Err(_) => false,
        };
        if to_the_damage {
            keep_before_recovery(home, &path)?;
        }
        opts.set_wal_recovery_mode(match to_the_damage {
            true => rocksdb::DBRecoveryMode::PointInTime,
            false => rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords,
        });
        // The index holds a handful of table files: opening them on 16 threads (the default) cost
        // every command 15 thread starts, ~2 ms of a rollback.
        opts.set_max_file_opening_threads(1);
        // No statistics are dumped or kept: without periodic tasks, no timer thread starts.
        opts.set_stats_dump_period_sec(0);
        opts.set_stats_persist_period_sec(0);
        // Each open for writing would otherwise flush what the write-ahead logs hold into a new table
        // file (synced, then compacted with the others): 2–3 ms of every command that changes
        // something. The logs are kept instead, until `open_db` finds too many.
        let opts = opts
            .get_options_from_string("avoid_flush_during_recovery=true")
            .map_err(|e| open_error(&path, e))?;
        let writable = writable || to_the_damage || !path.join("CURRENT").exists();
        let db = open_db(&opts, &path, writable)?;
        Ok(Index {
            db: RwLock::new(Some(db)),
            to_the_damage,
            writable: AtomicBool::new(writable),
            opts,
            path,
            lock_path,
            lock: Mutex::new(Some(lock)),
        })
    }

    /// Runs `work` with the database closed and its lock released, so that other blast processes can
    /// use the index meanwhile (an installer runs for seconds or minutes); reopens it afterwards.
    pub fn released<T>(&self, work: impl FnOnce() -> T) -> Result<T> {
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        let mut lock = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        *db = None;
        *lock = None;
        let out = work();
        *lock = Some(acquire_index_lock(&self.lock_path)?);
        *db = Some(open_db(
            &self.opts,
            &self.path,
            self.writable.load(Ordering::Relaxed),
        )?);
        Ok(out)
    }

    /// The open database for reading.
    fn reader(&self) -> Result<std::sync::RwLockReadGuard<'_, Option<DB>>> {
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            return Err(self.err("the index could not be reopened for writing"));
        }
        Ok(guard)
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Index {
            path: self.path.clone(),
            detail: with_disk_full_hint(e.to_string()),
        }
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get_raw(key)? {
            Some(raw) => postcard::from_bytes(&raw)
                .map(Some)
                .map_err(|e| self.err(format!("record `{key}` is unreadable: {e}"))),
            None => Ok(None),
        }
    }

    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let guard = self.reader()?;
        let Some(db) = guard.as_ref() else {
            return Ok(None);
        };
        db.get(key.as_bytes()).map_err(|e| self.err(e))
    }

    fn scan<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(String, T)>> {
        let mut out = Vec::new();
        let guard = self.reader()?;
        let Some(db) = guard.as_ref() else {
            return Ok(out);
        };
        let iter = db.iterator(IteratorMode::From(prefix.as_bytes(), Direction::Forward));
        for item in iter {
            let (key, value) = item.map_err(|e| self.err(e))?;
            let Some(rest) = key.strip_prefix(prefix.as_bytes()) else {
                break;
            };
            let rest = String::from_utf8_lossy(rest).into_owned();
            let record = postcard::from_bytes(&value)
                .map_err(|e| self.err(format!("record under `{prefix}` is unreadable: {e}")))?;
            out.push((rest, record));
        }
        Ok(out)
    }

    /// Writes the batch and syncs it to disk before returning.
    pub fn write(&self, batch: Batch) -> Result<()> {
        self.write_opt(batch, true)
    }

    /// Writes the batch, to be synced by the next synced write or flush, for a record whose loss in a
    /// power cut is repaired by what is already on disk (the journal a move completes from).
    pub fn write_unsynced(&self, batch: Batch) -> Result<()> {
        self.write_opt(batch, false)
    }

    fn write_opt(&self, batch: Batch, sync: bool) -> Result<()> {
        // Nothing to write: the database stays open read-only, with nothing synced.
        if batch.0.is_empty() {
            return Ok(());
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        let mut guard = self.db.write().unwrap_or_else(|p| p.into_inner());
        if !self.writable.load(Ordering::Relaxed) {
            // Closed before reopened: one handle per process at a time.
            *guard = None;
            *guard = Some(open_db(&self.opts, &self.path, true)?);
            self.writable.store(true, Ordering::Relaxed);
        }
        match guard.as_ref() {
            Some(db) => db.write_opt(batch.0, &opts).map_err(|e| self.err(e)),
            None => Err(self.err("the index could not be reopened for writing")),
        }
    }

    pub fn env(&self, id: &str) -> Result<Option<EnvRecord>> {
        self.get(&format!("{ENV}{id}"))
    }

    pub fn env_by_name(&self, name: &str) -> Result<Option<EnvRecord>> {
        match self.get::<String>(&format!("{NAME}{name}"))? {
            Some(id) => self.env(&id),
            None => Ok(None),
        }
    }

    pub fn env_by_path(&self, path: &str) -> Result<Option<EnvRecord>> {
        match self.get::<String>(&format!("{PATH}{path}"))? {
            Some(id) => self.env(&id),
            None => Ok(None),
        }
    }

    pub fn envs(&self) -> Result<Vec<EnvRecord>> {
        Ok(self.scan(ENV)?.into_iter().map(|(_, r)| r).collect())
    }

    /// Oldest first.
    pub fn history(&self, env_id: &str) -> Result<Vec<HistoryEntry>> {
        Ok(self
            .scan(&format!("{HISTORY}{env_id}/"))?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    pub fn tags(&self, env_id: &str) -> Result<Vec<(String, SnapshotId)>> {
        self.scan(&format!("{TAG}{env_id}/"))
    }

    pub fn journal(&self, env_id: &str) -> Result<Option<Journal>> {
        self.get(&format!("{JOURNAL}{env_id}"))
    }

    pub fn relocation(&self, env_id: &str) -> Result<Option<Relocation>> {
        self.get(&format!("{RELOCATION}{env_id}"))
    }

    pub fn journals(&self) -> Result<Vec<(String, Journal)>> {
        self.scan(JOURNAL)
    }

    pub fn python(&self, key: &str) -> Result<Option<PythonInfo>> {
        self.get(&format!("{PYTHON}{key}"))
    }

    pub fn markers(&self, key: &str) -> Result<Option<MarkerValues>> {
        self.get(&format!("{MARKERS}{key}"))
    }

    pub fn link_mode(&self, key: &str) -> Result<Option<crate::materialize::LinkMode>> {
        self.get(&format!("{LINK_MODE}{key}"))
    }

    /// Once an index read up to its damage is known to be the store's: written out whole, so that the
    /// damaged log goes with the others and the next command opens it as usual.
    pub(crate) fn finish_recovery(&self) -> Result<()> {
        if !self.to_the_damage {
            return Ok(());
        }
        let guard = self.reader()?;
        match guard.as_ref() {
            Some(db) => db.flush().map_err(|e| open_error(&self.path, e)),
            None => Ok(()),
        }
    }

    pub fn store_id(&self) -> Result<Option<String>> {
        self.get(STORE_ID)
    }

    pub fn store_home(&self) -> Result<Option<String>> {
        self.get(STORE_HOME)
    }

    /// The stores that may keep the environment's directory, oldest first, when this store is a copy.
    pub fn kept_by(&self, env_id: &str) -> Result<Vec<String>> {
        Ok(self.get(&format!("{KEPT_BY}{env_id}"))?.unwrap_or_default())
    }

    pub fn seed_layer(&self, key: &str) -> Result<Option<store_format::LayerId>> {
        self.get(&format!("{SEED}{key}"))
    }

    /// Timing samples of one kind, oldest first.
    pub fn metric_samples(&self, kind: MetricKind) -> Result<Vec<MetricSample>> {
        Ok(self
            .scan(&format!("{METRIC}{}/", kind.as_str()))?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }
}

fn acquire_index_lock(path: &Path) -> Result<LockGuard> {
    lock::acquire(path, LockMode::Exclusive, "the metadata index")
}

/// Set to `point-in-time`, the index is read up to the first damage in its write-ahead logs (and
/// written out whole, so the next command opens it as usual). Meant for the command it is given to:
/// what blast runs (a session's shell, an installer, `blast run`'s command) does not inherit it.
pub(crate) const RECOVERY_VAR: &str = "BLAST_INDEX_RECOVERY";

/// Where the index is kept as it was before a recovery to its damage: `blast clean` refuses while one
/// is there (what the damage took, it would sweep).
pub(crate) const BEFORE_RECOVERY: &str = "index.before-recovery-";

/// Copies the index directory aside before it is read up to its damage (and then written out whole,
/// which drops its logs): the records beyond the damage stay somewhere.
fn keep_before_recovery(home: &Path, index: &Path) -> Result<()> {
    let copy = home.join(format!(
        "{BEFORE_RECOVERY}{}",
        crate::objects::unique_name()
    ));
    std::fs::create_dir(&copy).at("creating", &copy)?;
    for entry in std::fs::read_dir(index).at("reading", index)? {
        let entry = entry.at("reading", index)?;
        if entry.file_type().is_ok_and(|kind| kind.is_file()) {
            let to = copy.join(entry.file_name());
            std::fs::copy(entry.path(), &to).at("copying", &to)?;
        }
    }
    eprintln!(
        "blast: reading the index up to its damage; as it was before, it is kept at `{}`",
        copy.display()
    );
    Ok(())
}

/// Write-ahead logs kept before an open for writing flushes them into a table file. Every open for
/// writing adds one, and every open, read-only ones too, reads them all.
const KEPT_LOGS_MAX: usize = 16;

fn open_db(opts: &Options, path: &Path, writable: bool) -> Result<DB> {
    if !writable {
        return DB::open_for_read_only(opts, path, false).map_err(|e| open_error(path, e));
    }
    // A kept log may end with a batch the last command wrote unsynced (a move's record). A synced
    // write syncs only the log of the process that makes it, and recovery stops at the first log with
    // a torn end, skipping the later ones: the kept logs are made durable before anything follows
    // them (~0.07 ms a log already on disk).
    let logs = kept_logs(path);
    for log in &logs {
        match std::fs::File::open(log).and_then(|file| file.sync_data()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).at("syncing the index's write-ahead log", log);
            }
            _ => {}
        }
    }
    let db = DB::open(opts, path).map_err(|e| open_error(path, e))?;
    if logs.len() >= KEPT_LOGS_MAX {
        db.flush().map_err(|e| open_error(path, e))?;
    }
    Ok(db)
}

fn kept_logs(path: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(path).map_or_else(
        |_| Vec::new(),
        |entries| {
            entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|log| log.extension().is_some_and(|ext| ext == "log"))
                .collect()
        },
    )
}

fn open_error(path: &Path, e: rocksdb::Error) -> Error {
    Error::Index {
        path: path.to_owned(),
        detail: match e.to_string() {
            full if full.contains("No space left on device") => with_disk_full_hint(full),
            denied
                if denied.contains("Read-only file system")
                    || denied.contains("Permission denied") =>
            {
                format!(
                    "{denied}: blast needs to write to its index; make the store writable, or point \
                     BLAST_HOME at another"
                )
            }
            damaged => format!(
                "{damaged}: blast does not run on a damaged index (it records the environments, \
                 their histories and tags); restore the store from a backup, or run one command with \
                 {RECOVERY_VAR}=point-in-time to read it up to the damage (what was written after it \
                 is lost: after a power cut mid-write, a last record that the next command writes \
                 again; after damage further back, more; blast keeps a copy of the index as it was), \
                 or move the store aside and blast makes a new one"
            ),
        },
    }
}

/// RocksDB reports a full disk in its message only; say what to do about it.
fn with_disk_full_hint(detail: String) -> String {
    if detail.contains("No space left on device") {
        format!(
            "{detail} (the filesystem is full, and blast needs a little space to write its index: free \
             some on it, then `blast clean` removes what no environment needs (`blast clean --dry-run` \
             says how much), and run the command again)"
        )
    } else {
        detail
    }
}

/// Changes to the index that land together or not at all.
#[derive(Default)]
pub struct Batch(WriteBatch);

impl Batch {
    fn put<T: Serialize>(&mut self, key: &str, value: &T) {
        // postcard serialization of these plain records into a Vec cannot fail.
        let bytes = postcard::to_stdvec(value).unwrap_or_default();
        self.0.put(key.as_bytes(), bytes);
    }

    pub fn put_env(&mut self, env: &EnvRecord) {
        self.put(&format!("{ENV}{}", env.id), env);
        if let Some(name) = &env.name {
            self.put(&format!("{NAME}{name}"), &env.id);
        }
        self.put(&format!("{PATH}{}", env.path), &env.id);
    }

    /// Drops the environment and everything kept about it.
    pub fn delete_env(
        &mut self,
        env: &EnvRecord,
        history: &[HistoryEntry],
        tags: &[(String, SnapshotId)],
    ) {
        self.0.delete(format!("{ENV}{}", env.id));
        if let Some(name) = &env.name {
            self.0.delete(format!("{NAME}{name}"));
        }
        self.0.delete(format!("{PATH}{}", env.path));
        for entry in history {
            self.delete_history(&env.id, entry.seq);
        }
        for (tag, _) in tags {
            self.delete_tag(&env.id, tag);
        }
        self.0.delete(format!("{LEGACY_STAT_CACHE}{}", env.id));
        self.0.delete(format!("{JOURNAL}{}", env.id));
        self.0.delete(format!("{RELOCATION}{}", env.id));
        self.delete_kept_by(&env.id);
    }

    pub fn put_history(&mut self, env_id: &str, entry: &HistoryEntry) {
        self.put(&history_key(env_id, entry.seq), entry);
    }

    pub fn delete_history(&mut self, env_id: &str, seq: u64) {
        self.0.delete(history_key(env_id, seq));
    }

    pub fn put_tag(&mut self, env_id: &str, tag: &str, snapshot: &SnapshotId) {
        self.put(&format!("{TAG}{env_id}/{tag}"), snapshot);
    }

    pub fn delete_tag(&mut self, env_id: &str, tag: &str) {
        self.0.delete(format!("{TAG}{env_id}/{tag}"));
    }

    pub fn put_journal(&mut self, env_id: &str, journal: &Journal) {
        self.put(&format!("{JOURNAL}{env_id}"), journal);
    }

    pub fn delete_journal(&mut self, env_id: &str) {
        self.0.delete(format!("{JOURNAL}{env_id}"));
    }

    /// Records the move of `env_id`'s directory, its new path already leading to it (a command naming
    /// that path finds the environment, and finishes the move).
    pub fn put_relocation(&mut self, env_id: &str, relocation: &Relocation) {
        self.put(&format!("{RELOCATION}{env_id}"), relocation);
        self.put(&format!("{PATH}{}", relocation.to), &env_id.to_owned());
    }

    /// Drops the record of a move; `given_up` drops the new path's key with it.
    pub fn delete_relocation(&mut self, env_id: &str, relocation: &Relocation, given_up: bool) {
        self.0.delete(format!("{RELOCATION}{env_id}"));
        match given_up {
            true => self.0.delete(format!("{PATH}{}", relocation.to)),
            false => self.0.delete(format!("{PATH}{}", relocation.from)),
        }
    }

    pub fn put_python(&mut self, key: &str, info: &PythonInfo) {
        self.put(&format!("{PYTHON}{key}"), info);
    }

    pub fn put_markers(&mut self, key: &str, values: &MarkerValues) {
        self.put(&format!("{MARKERS}{key}"), values);
    }

    pub fn put_link_mode(&mut self, key: &str, mode: crate::materialize::LinkMode) {
        self.put(&format!("{LINK_MODE}{key}"), &mode);
    }

    pub fn put_store_id(&mut self, id: &str) {
        self.put(STORE_ID, &id);
    }

    pub fn put_store_home(&mut self, home: &str) {
        self.put(STORE_HOME, &home);
    }

    pub fn put_kept_by(&mut self, env_id: &str, stores: &[String]) {
        self.put(&format!("{KEPT_BY}{env_id}"), &stores);
    }

    pub fn delete_kept_by(&mut self, env_id: &str) {
        self.0.delete(format!("{KEPT_BY}{env_id}"));
    }

    pub fn put_seed_layer(&mut self, key: &str, layer: &store_format::LayerId) {
        self.put(&format!("{SEED}{key}"), layer);
    }

    pub fn put_metric(&mut self, kind: MetricKind, sample: &MetricSample) {
        self.put(&metric_key(kind, sample), sample);
    }

    pub fn delete_metric(&mut self, kind: MetricKind, sample: &MetricSample) {
        self.0.delete(metric_key(kind, sample));
    }
}

/// Times are zero-padded to a fixed width so keys sort oldest first; the env id keeps samples of two
/// environments in the same millisecond apart.
fn metric_key(kind: MetricKind, sample: &MetricSample) -> String {
    format!(
        "{METRIC}{}/{:020}/{}",
        kind.as_str(),
        sample.time_ms.max(0),
        sample.env_id
    )
}

/// Sequence numbers are zero-padded to a fixed width so keys sort in history order.
fn history_key(env_id: &str, seq: u64) -> String {
    format!("{HISTORY}{env_id}/{seq:020}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::materialize::LinkMode;

    #[test]
    fn records_outlive_reopening_and_the_kept_logs_stay_few() {
        let home = tempfile::tempdir().unwrap();
        let key = |i: usize| format!("dev-{i}");
        for i in 0..3 * KEPT_LOGS_MAX {
            // Opened as most commands open it: read-only, reopened for writing by the write.
            let index = Index::open(home.path(), false).unwrap();
            let mut batch = Batch::default();
            batch.put_link_mode(&key(i), LinkMode::Copy);
            if i % 2 == 0 {
                index.write(batch).unwrap();
            } else {
                index.write_unsynced(batch).unwrap();
            }
            drop(index);
            let logs = kept_logs(&home.path().join("index")).len();
            assert!(logs <= KEPT_LOGS_MAX + 1, "{logs} logs after {i} opens");
        }
        let index = Index::open(home.path(), false).unwrap();
        for i in 0..3 * KEPT_LOGS_MAX {
            assert_eq!(index.link_mode(&key(i)).unwrap(), Some(LinkMode::Copy));
        }
    }
}
