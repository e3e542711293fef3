//! The store handle: `$BLAST_HOME` with its objects, index and locks, and the environments in it.
//!
//! Opening a store takes the store lock shared (only `blast clean`'s sweep takes it exclusive), opens the
//! index and reclaims staging areas left by dead processes. Opening an environment takes its lock and
//! first finishes any apply that a killed command left in its journal.

use std::fs;
use std::path::{Path, PathBuf};

use store_format::{Placeholders, Snapshot, SnapshotId};

use crate::error::{Error, IoContext, Result};
use crate::index::{Batch, EnvRecord, Index};
use crate::lock::{self, LockGuard, LockMode};
use crate::objects::ObjectStore;
use crate::tree::Tree;

/// Written at the top of the store; a store with another first line is refused.
const STORE_FORMAT_LINE: &str = "blast-store 1";

/// Directory of the environments' stat caches, one file per environment id.
const STAT_CACHES: &str = "stat-caches";
const STORE_ID: &str = "store-id";

pub struct Store {
    // Field order matters: the index closes before the store lock is released.
    index: Index,
    objects: ObjectStore,
    home: PathBuf,
    _lock: LockGuard,
}

impl Store {
    /// `$BLAST_HOME`, else `$XDG_DATA_HOME/blast`, else `~/.local/share/blast`. A relative
    /// `XDG_DATA_HOME` is ignored, as the XDG base directory specification says (the store would move
    /// with the working directory).
    pub fn default_home() -> Result<PathBuf> {
        if let Some(home) = std::env::var_os("BLAST_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(home));
        }
        if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| Path::new(v).is_absolute())
        {
            return Ok(PathBuf::from(data).join("blast"));
        }
        // Without HOME (a service, `env -i`), the home the password database names, as the sandbox
        // finds it (found by exploratory testing: blast refused to run).
        let home = std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            // A service account's `/nonexistent` is no home (found in review).
            .or_else(|| crate::fsutil::password_db_home().filter(|dir| dir.is_dir()));
        match home {
            Some(home) => Ok(home.join(".local/share/blast")),
            None => Err(Error::Invalid(
                "cannot place the store: set BLAST_HOME (or HOME)".into(),
            )),
        }
    }

    /// Opens (creating on first use) the store for an ordinary operation.
    /// The index is opened read-only and reopened for writing on the first write, which suits commands
    /// that mostly read.
    pub fn open(home: &Path) -> Result<Store> {
        Self::open_with(home, LockMode::Shared, false)
    }

    /// As `open`, with the index open for writing from the start, for commands that always write
    /// (saves opening it twice).
    pub fn open_for_writing(home: &Path) -> Result<Store> {
        Self::open_with(home, LockMode::Shared, true)
    }

    /// Opens the store with every other operation shut out, for the sweep of garbage collection; the
    /// index for writing from the start unless it only looks (a dry run, which a full disk allows).
    pub(crate) fn open_exclusive(home: &Path, writable: bool) -> Result<Store> {
        Self::open_with(home, LockMode::Exclusive, writable)
    }

    fn open_with(home: &Path, mode: LockMode, writable: bool) -> Result<Store> {
        // The store's path goes into the sandbox's spec, the installer's arguments and the index
        // (found by exploratory testing: a store at a path that is not UTF-8 was made, and then
        // installs failed with an internal error).
        let utf8 = |path: &Path| match path.to_str() {
            Some(_) => Ok(()),
            None => Err(Error::Invalid(format!(
                "the store's path `{}` (BLAST_HOME) is not UTF-8, which blast cannot pass on to \
                 installers and the sandbox: point BLAST_HOME at a path that is",
                path.display()
            ))),
        };
        utf8(home)?;
        // Settings from the environment are checked before anything is written.
        crate::materialize::forced_link_mode()?;
        fs::create_dir_all(home).at("creating store", home)?;
        let home = fs::canonicalize(home).at("resolving store path", home)?;
        utf8(&home)?;
        refuse_another_users(&home)?;
        let lock = lock::acquire(
            &home.join("store.lock"),
            mode,
            if mode == LockMode::Exclusive {
                "the store (to clean it)"
            } else {
                "the store (`blast clean` is sweeping)"
            },
        )?;
        check_format(&home)?;
        let objects = ObjectStore::at(&home);
        objects.create_dirs()?;
        for dir in ["envs", "locks", STAT_CACHES] {
            let path = home.join(dir);
            fs::create_dir_all(&path).at("creating store directory", &path)?;
        }
        let index = open_index(&home, writable)?;
        note_where_opened(&home, &index)?;
        let store = Store {
            index,
            objects,
            home,
            _lock: lock,
        };
        store.objects.reclaim_staging()?;
        Ok(store)
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn objects(&self) -> &ObjectStore {
        &self.objects
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Where a named environment lives.
    pub fn named_env_path(&self, name: &str) -> PathBuf {
        self.home.join("envs").join(name)
    }

    pub fn snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        self.objects.snapshot(id)
    }

    pub fn tree_of(&self, snapshot: &Snapshot) -> Result<Tree> {
        Tree::from_layers(&self.objects, &snapshot.layers)
    }

    /// Finds an environment by `-e` (a name or a path), else `./.venv` when it is a blast environment.
    pub fn find_env(&self, selector: Option<&str>) -> Result<EnvRecord> {
        match selector {
            // `-e "$UNSET"`: nothing was meant, not `./.venv` (which `blast remove` would delete).
            Some("") => Err(Error::EmptyEnvSelector),
            Some(sel) => {
                let looks_like_path = sel.contains('/') || sel.starts_with('.');
                if !looks_like_path && let Some(env) = self.index.env_by_name(sel)? {
                    return Ok(env);
                }
                if let Some(env) = self.env_at(Path::new(sel))? {
                    return Ok(env);
                }
                let project = ["pyproject.toml", "setup.py"]
                    .iter()
                    .any(|file| Path::new(sel).join(file).is_file());
                Err(self.moved_away(sel).unwrap_or_else(|| match project {
                    true => Error::ProjectNotEnv(sel.to_owned()),
                    false => Error::EnvNotFound(sel.to_owned()),
                }))
            }
            None => match self.env_at(Path::new(".venv"))? {
                Some(env) => Ok(env),
                None => Err(self.moved_away(".venv").unwrap_or(Error::NoEnvSelected)),
            },
        }
    }

    /// What to say of `selector`, which names no environment, when it is a directory holding a virtual
    /// environment while some environments' directories are gone: likely one of them, moved by hand.
    fn moved_away(&self, selector: &str) -> Option<Error> {
        let gone: Vec<String> = match Path::new(selector).join("pyvenv.cfg").is_file() {
            true => self
                .index
                .envs()
                .unwrap_or_default()
                .iter()
                .filter(|env| !Path::new(&env.path).exists())
                .map(|env| format!("`{}`", env.label()))
                .collect(),
            false => Vec::new(),
        };
        (!gone.is_empty()).then(|| Error::EnvMovedAway {
            path: selector.to_owned(),
            gone: gone.join(", "),
            several: gone.len() > 1,
        })
    }

    fn env_at(&self, path: &Path) -> Result<Option<EnvRecord>> {
        let resolved = crate::fsutil::resolve_path(path)?;
        if let Some(p) = resolved.to_str()
            && let Some(env) = self.index.env_by_path(p)?
        {
            return Ok(Some(env));
        }
        // A recorded path may lead through a symlink made since (a project moved to another disk and
        // linked back): the environment is then the one whose recorded path reaches this directory.
        if !resolved.is_dir() {
            return Ok(None);
        }
        // Resolved as it is now: also a path recorded as spelled, `nx/../a`, by a blast before
        // `resolve_path` took such `..` lexically.
        Ok(self.index.envs()?.into_iter().find(|env| {
            crate::fsutil::resolve_path(Path::new(&env.path)).is_ok_and(|real| real == resolved)
        }))
    }

    /// Opens an environment for work: takes its lock and finishes an interrupted move (refusing when the
    /// directory holds changes that belong to neither side of that move).
    pub fn open_env(&self, selector: Option<&str>) -> Result<Env> {
        self.open_env_forced(selector, false)
    }

    /// As `open_env`, for a command that reads only what the store keeps of the environment (its
    /// history, tags and snapshots): in a copy of a store, an environment the other store keeps (see
    /// [`Store::original_keeps`]) is read as this store has it, with nothing finished in its directory.
    pub fn open_env_to_read(&self, selector: Option<&str>) -> Result<Env> {
        let found = self.find_env(selector)?;
        if self.moved_dir(&found).is_none() && self.original_keeps(&found).is_some() {
            return self.lock_env_as_found(&found.id);
        }
        match self.lock_env(&found.id, false) {
            // What the store keeps is read all the same (exporting HEAD, or syncing it elsewhere, is
            // a way out), saying why the directory is left alone.
            Err(replaced @ Error::EnvDirReplaced { .. }) => {
                eprintln!("blast: warning: {replaced}");
                self.lock_env_as_found(&found.id)
            }
            opened => opened,
        }
    }

    /// As `open_env_to_read`, for `blast log`, which only shows what the store records: a move a killed
    /// command left that cannot be finished now (a file it may not write, changes made since) does not
    /// keep it from that, and it says so (found by exploratory testing: the history could not be read
    /// while the move was stuck).
    pub fn open_env_to_show(&self, selector: Option<&str>) -> Result<Env> {
        match self.open_env_to_read(selector) {
            Err(
                stuck
                @ (Error::InterruptedUnfinished { .. } | Error::InterruptedWithChanges { .. }),
            ) => {
                let found = self.find_env(selector)?;
                eprintln!(
                    "blast: warning: {}\nblast: `{}` is midway through an interrupted move that this \
                     does not finish; its history as the store records it:",
                    stuck.underlying(),
                    found.label()
                );
                self.lock_env_as_found(&found.id)
            }
            opened => opened,
        }
    }

    /// As `open_env`; with `force`, an interrupted move is finished even over changes of the user's.
    pub fn open_env_forced(&self, selector: Option<&str>, force: bool) -> Result<Env> {
        let found = self.find_env(selector)?;
        self.lock_env(&found.id, force)
    }

    /// The environment's stat cache (see `capture::StatCache`).
    pub(crate) fn stat_cache_path(&self, env_id: &str) -> PathBuf {
        self.home.join(STAT_CACHES).join(env_id)
    }

    /// The stat cache of an installer's cache directory, by its real path (see `capture::CacheLinks`).
    pub(crate) fn installer_cache_stats_path(&self, cache: &Path) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let hex = blake3::hash(cache.as_os_str().as_bytes()).to_hex();
        self.home
            .join(STAT_CACHES)
            .join(format!("installer-cache-{}", &hex[..20]))
    }

    pub(crate) fn env_lock_path(&self, env_id: &str) -> PathBuf {
        self.home.join("locks").join(format!("{env_id}.lock"))
    }

    /// Held shared by every `blast run` on the environment for as long as its command runs (which
    /// `blast remove` cannot tell from the processes when the command is not the environment's own).
    pub(crate) fn run_lock_path(&self, env_id: &str) -> PathBuf {
        self.home.join("locks").join(format!("{env_id}.run.lock"))
    }

    /// The lock that serializes work on one environment. Its holder may be an install that reopens the
    /// index when its installer ends, so the index is released while this waits (a wait holding it
    /// would deadlock the two).
    pub(crate) fn env_lock(&self, env_id: &str) -> Result<LockGuard> {
        let path = self.env_lock_path(env_id);
        if let Some(lock) = lock::try_acquire(&path, LockMode::Exclusive)? {
            return Ok(lock);
        }
        self.index
            .released(|| lock::acquire(&path, LockMode::Exclusive, "the environment"))?
    }

    pub(crate) fn lock_env(&self, env_id: &str, force: bool) -> Result<Env> {
        self.lock_env_moving_to(env_id, force, None)
    }

    /// As `lock_env`, for `blast move` to `to`: a named environment of a moved store is taken there
    /// when `to` is where its directory is now.
    pub(crate) fn lock_env_moving_to(
        &self,
        env_id: &str,
        force: bool,
        to: Option<&Path>,
    ) -> Result<Env> {
        let mut env = self.lock_env_as_found(env_id)?;
        if let Some(original) = self.original_keeps(&env.record) {
            // What a killed command left unfinished is the other store's to finish, in its directory:
            // nothing is finished here. This store's copy of a directory the other keeps in itself is
            // taken by `blast move` (its files name the other's path), and what it left unfinished is
            // finished there by the next command.
            let recorded = PathBuf::from(&env.record.path);
            return match self.moved_dir(&env.record) {
                Some(here) if to == Some(here.as_path()) => Ok(env),
                Some(here) => Err(Error::StoreCopied {
                    env: env.label().to_owned(),
                    recorded,
                    here,
                    original,
                }),
                None => Err(Error::OriginalStoreKeeps {
                    env: env.label().to_owned(),
                    path: recorded,
                    original,
                    here: self.home.clone(),
                }),
            };
        }
        crate::dir_move::finish_interrupted(self, &mut env)?;
        // Before anything is finished in the directory, which a link would lead elsewhere. A link into
        // another environment's directory is not this one's to take there.
        if let Err(Error::EnvDirReplaced {
            env: label,
            path,
            what,
            link,
            target,
        }) = env.record.refuse_replaced_directory()
        {
            let target = target.filter(|target| {
                target
                    .to_str()
                    .is_none_or(|t| self.index.env_by_path(t).ok().flatten().is_none())
            });
            return Err(Error::EnvDirReplaced {
                env: label,
                path,
                what,
                link,
                target,
            });
        }
        if let (Some(name), Some(here)) = (&env.record.name, self.moved_dir(&env.record))
            && to != Some(here.as_path())
        {
            return Err(Error::StoreMoved {
                env: name.clone(),
                recorded: PathBuf::from(&env.record.path),
                here,
            });
        }
        crate::transition::finish_interrupted(self, &mut env, force)?;
        Ok(env)
    }

    /// Where a named environment's directory is when its store was moved: a named environment lives in
    /// its store, so recorded elsewhere, gone there and found here, it belongs to this store as it was
    /// before a move (its files name the old place). In a copy of a store, a named environment's
    /// directory the other store keeps in itself (its `envs/NAME`) has its copy in this one's.
    pub(crate) fn moved_dir(&self, record: &EnvRecord) -> Option<PathBuf> {
        let recorded = Path::new(&record.path);
        let name = record.name.as_deref()?;
        let here = self.named_env_path(name);
        let moved = match self.original_keeps(record) {
            Some(original) => recorded == original.join("envs").join(name),
            None => !recorded.exists(),
        };
        (moved && recorded != here && here.is_dir()).then_some(here)
    }

    /// The store that keeps the environment's directory, when this store is a copy (see
    /// [`note_where_opened`]) and the directory, outside this store, is another's: the oldest of the
    /// stores this one was copied through that still holds this store's id, else one of them that a
    /// new store was made at and the directory lies in. A command here would change it behind that
    /// store's back. Once none is there, the directory is this store's.
    pub(crate) fn original_keeps(&self, record: &EnvRecord) -> Option<PathBuf> {
        let path = Path::new(&record.path);
        if path.starts_with(&self.home) {
            return None;
        }
        let stores: Vec<PathBuf> = self
            .index
            .kept_by(&record.id)
            .ok()?
            .into_iter()
            .map(PathBuf::from)
            .collect();
        if stores.is_empty() || !path.exists() {
            return None;
        }
        let id = self.index.store_id().ok()??;
        let copied_from = stores
            .iter()
            .find(|store| other_store_with(store, &id, &self.home));
        copied_from
            .or_else(|| {
                stores.iter().find(|store| {
                    path.starts_with(store)
                        && store_id_at(store).is_some()
                        && !same_directory(store, &self.home)
                })
            })
            .cloned()
    }

    /// Locks the environment as it is, leaving a move that a killed command began unfinished (for its
    /// removal: a move that cannot be finished must not keep it).
    pub(crate) fn lock_env_as_found(&self, env_id: &str) -> Result<Env> {
        let lock = self.env_lock(env_id)?;
        // Re-read: another process may have changed it while we waited.
        let record = self
            .index
            .env(env_id)?
            .ok_or_else(|| Error::EnvNotFound(env_id.to_owned()))?;
        Ok(Env {
            record,
            _lock: lock,
        })
    }
}

/// Opens the index, refusing one that is not this store's: blast would take the store for empty (and
/// `blast clean` would remove every snapshot). The file `store-id` and the index's record of it are
/// written when the store is made (or first opened by a blast that writes them), the record first.
fn open_index(home: &Path, writable: bool) -> Result<Index> {
    let id_path = home.join(STORE_ID);
    let id = match fs::read(&id_path) {
        Ok(bytes) => Some(store_id_in(&bytes).ok_or_else(|| {
            Error::Invalid(format!(
                "`{}` is damaged (it holds no store id): delete it, and blast writes it again from \
                 the index",
                id_path.display()
            ))
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).at("reading", &id_path),
    };
    let lost = |why: String| Error::IndexLost {
        index: home.join("index"),
        why,
    };
    if !home.join("index").join("CURRENT").exists() {
        let snapshots = home.join("snapshots");
        if id.is_some() || fs::read_dir(&snapshots).is_ok_and(|mut found| found.next().is_some()) {
            return Err(lost("is missing".into()));
        }
    }
    let index = Index::open(home, writable)?;
    match (id, index.store_id()?) {
        (Some(id), Some(recorded)) if id == recorded => {}
        (Some(id), Some(recorded)) => {
            return Err(lost(format!(
                "is another store's (store `{recorded}`; this one is `{id}`)"
            )));
        }
        (Some(_), None) => {
            return Err(lost(
                "lacks its first record (it was made anew, or damaged)".into(),
            ));
        }
        (None, recorded) => {
            let id = match recorded {
                Some(id) => id,
                None => {
                    let id = crate::objects::unique_name();
                    let mut batch = Batch::default();
                    batch.put_store_id(&id);
                    index.write(batch)?;
                    id
                }
            };
            crate::fsutil::write_whole(&id_path, format!("{id}\n").as_bytes())?;
        }
    }
    index.finish_recovery()?;
    Ok(index)
}

/// Records where the store is opened from. A store opened elsewhere was moved, unless another
/// directory there holds the same store: then this one is a copy (`cp -a` of `$BLAST_HOME`, a backup),
/// whose records name the other's environments' directories, and each environment outside this store
/// is marked as kept by that other store. A store seen at another path too (a bind mount) is one
/// directory, and the record stays.
fn note_where_opened(home: &Path, index: &Index) -> Result<()> {
    let Some(here) = home.to_str() else {
        return Ok(());
    };
    let recorded = index.store_home()?;
    if recorded.as_deref() == Some(here) {
        return Ok(());
    }
    let mut batch = Batch::default();
    batch.put_store_home(here);
    let mut marked = false;
    if let Some(recorded) = recorded {
        let other = Path::new(&recorded);
        if same_directory(other, home) {
            return Ok(());
        }
        if let Some(id) = index.store_id()?
            && other_store_with(other, &id, home)
        {
            for env in index.envs()? {
                let path = Path::new(&env.path);
                if path.starts_with(home) {
                    continue;
                }
                // Oldest first: in a copy's copy the first store copied from keeps the directory
                // while it is there, then the next one. A directory in the store copied from (its
                // `envs/NAME`) is that store's alone. A store that finds itself in the list is one
                // of those, back where it was (restored from its copy): what it was copied from
                // before keeps the directory, or nothing does.
                let mut stores = match path.starts_with(other) {
                    true => Vec::new(),
                    false => index.kept_by(&env.id)?,
                };
                if let Some(back) = stores.iter().position(|store| store.as_str() == here) {
                    stores.truncate(back);
                } else if !stores.contains(&recorded) {
                    stores.push(recorded.clone());
                } else {
                    continue;
                }
                match stores.is_empty() {
                    true => batch.delete_kept_by(&env.id),
                    false => batch.put_kept_by(&env.id, &stores),
                }
                marked = true;
            }
        }
    }
    if marked {
        return index.write(batch);
    }
    // Only where the store was opened from, which the next command writes again: a full disk must not
    // stop every command (`blast clean --dry-run` among them) after the store moved.
    let _ = index.write_unsynced(batch);
    Ok(())
}

fn same_directory(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let identity = |path: &Path| fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    identity(a).is_some_and(|a| Some(a) == identity(b))
}

/// Whether `other` is a store with the id `id` and not the directory `home` is.
fn other_store_with(other: &Path, id: &str, home: &Path) -> bool {
    store_id_at(other).is_some_and(|other_id| other_id == id) && !same_directory(other, home)
}

/// The id of the store at `dir`, if a store is there.
fn store_id_at(dir: &Path) -> Option<String> {
    store_id_in(&fs::read(dir.join(STORE_ID)).ok()?)
}

/// The id a `store-id` file holds: 20 lowercase hex digits (then a newline, as blast writes it).
fn store_id_in(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let id = text.strip_suffix('\n').unwrap_or(text);
    (id.len() == 20
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then(|| id.to_owned())
}

/// Refuses a store another user owns: what blast would write there (objects, layers, the index, a
/// stat cache) would be this user's, which the owner's commands then cannot replace or remove (found
/// by exploratory testing: one `sudo blast snapshot` on a user's store made that user's installs and
/// `clean` fail with "Permission denied"; run as another user, every command failed on the lock file).
fn refuse_another_users(home: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let owner = fs::metadata(home).at("inspecting store", home)?.uid();
    let me = nix::unistd::geteuid().as_raw();
    if owner == me {
        return Ok(());
    }
    let name = |uid: u32| {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(
                || format!("uid {uid}"),
                |user| format!("`{}` (uid {uid})", user.name),
            )
    };
    Err(Error::Invalid(format!(
        "the store `{}` belongs to {}, and blast runs as {}: what it wrote there would be yours, and \
         the owner's commands could not change it; run blast as its owner, or point BLAST_HOME at a \
         store of your own",
        home.display(),
        name(owner),
        name(me)
    )))
}

fn check_format(home: &Path) -> Result<()> {
    let marker = home.join("store-format");
    match fs::read_to_string(&marker) {
        Ok(text) if text.lines().next() == Some(STORE_FORMAT_LINE) => Ok(()),
        Ok(text) if text.trim().is_empty() => Err(Error::Invalid(format!(
            "the store's marker `{}` is empty (damaged: blast writes it whole): if this is a blast \
             store, write the line `{STORE_FORMAT_LINE}` into it; else point BLAST_HOME elsewhere",
            marker.display()
        ))),
        Ok(text) => Err(Error::Invalid(format!(
            "the store at `{}` has format `{}`, which this blast does not read: upgrade blast or point BLAST_HOME elsewhere",
            home.display(),
            text.lines().next().unwrap_or_default()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Whole or not at all: a half-written marker would lock users out of their store.
            crate::fsutil::write_whole(&marker, format!("{STORE_FORMAT_LINE}\n").as_bytes())
        }
        Err(e) => Err(e).at("reading", &marker),
    }
}

/// An environment held for work by this process.
pub struct Env {
    pub record: EnvRecord,
    pub(crate) _lock: LockGuard,
}

impl Env {
    pub fn root(&self) -> &Path {
        Path::new(&self.record.path)
    }

    pub fn label(&self) -> &str {
        self.record.label()
    }

    /// The concrete paths that placeholders stand for in this environment.
    pub fn placeholders(&self) -> Placeholders {
        Placeholders {
            env_prefix: self.record.path.clone(),
            python_bin: self.record.python.bin_dir.clone(),
        }
    }

    /// Fails, saying what to do, when the directory is gone (removed by hand); what reads it needs it.
    pub fn directory(&self) -> Result<&Path> {
        self.record.directory()
    }

    pub fn head(&self) -> Result<SnapshotId> {
        self.record.head.ok_or_else(|| {
            Error::Invalid(format!(
                "environment `{}` has no snapshot yet: its creation did not finish; `blast remove` it and create it again",
                self.label()
            ))
        })
    }
}
