//! Crash-safe moves of an environment's HEAD (create, rollback, sync, restore): write the intent to the
//! journal, apply the difference to the directory, then record the new HEAD and drop the journal in one
//! index write. A command killed anywhere in between leaves the journal behind, and the next command that
//! opens the environment finishes the move, so the directory ends at the new snapshot exactly.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::fcntl::{AT_FDCWD, AtFlags};
use nix::sys::stat::fstatat;
use rayon::prelude::*;
use store_format::{Node, ObjectId, SnapshotId};

use crate::capture::{self, StatCache};
use crate::crash;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::dir_handle;
use crate::index::{Batch, HistoryEntry, Journal};
use crate::materialize::{ApplyStats, LinkMode, Materializer, probe_link_mode};
use crate::objects::ObjectStore;
use crate::store::{Env, Store};
use crate::tree::{PathChange, Region, Tree};

/// A HEAD move to perform.
pub struct Move {
    pub operation: String,
    pub message: Option<String>,
    pub to: SnapshotId,
    pub difference: Difference,
    pub cache: StatCache,
    /// Index changes that must land with the journal (a new environment's record, say).
    pub with_journal: Batch,
}

/// What the apply changes in the directory.
pub enum Difference {
    /// From what the directory holds now (from a scan, or empty for a new directory) to the tree of
    /// `to` (flattened from its layers when the caller does not have it already).
    Trees { current: Tree, target: Option<Tree> },
    /// From the snapshot the directory holds (its stat cache is stamped with it) to `to`, where the
    /// two can differ.
    Region(Region),
}

impl Difference {
    /// The trees from and to which the directory moves (regions of them for a `Region`); `None` while
    /// the target is still to be flattened.
    fn trees(&self) -> Option<(&Tree, &Tree)> {
        match self {
            Difference::Trees {
                current,
                target: Some(target),
            } => Some((current, target)),
            Difference::Trees { target: None, .. } => None,
            Difference::Region(region) => Some((&region.before, &region.after)),
        }
    }

    /// True when the directory already holds the target (not known, so false, while the target's
    /// tree is still to be flattened).
    pub fn changes_nothing(&self) -> bool {
        match self {
            Difference::Trees { current, target } => target.as_ref() == Some(current),
            Difference::Region(region) => region.before == region.after,
        }
    }
}

/// Journals, applies and records `mv`.
pub fn move_head(store: &Store, env: &mut Env, mut mv: Move) -> Result<ApplyStats> {
    if let Difference::Trees { target, .. } = &mut mv.difference
        && target.is_none()
    {
        *target = Some(store.tree_of(&store.snapshot(&mv.to)?)?);
    }
    let trees = mv.difference.trees();
    refuse_long_paths(
        env.root(),
        trees
            .into_iter()
            .flat_map(|(_, after)| after.entries.keys()),
    )?;
    // A move that makes the environment, or into a directory it makes, is undone instead, should it
    // fail (see `complete`).
    let checked = match (trees, env.record.head.is_some() && env.root().is_dir()) {
        (Some((before, after)), true) => missing_object(store, before, after)?,
        _ => None,
    };
    if let Some((path, object)) = checked {
        return Err(Error::ObjectMissing {
            env: env.label().to_owned(),
            snapshot: mv.to.short(),
            object: object.short(),
            path,
        });
    }
    let journal = Journal {
        from: env.record.head,
        to: mv.to,
        operation: mv.operation,
        message: mv.message,
    };
    let mut batch = mv.with_journal;
    batch.put_journal(&env.record.id, &journal);
    store.index().write(batch)?;
    crash::point("journal-written");
    complete(store, env, journal, mv.difference, mv.cache, false)
}

/// The most bytes a path may have on Linux (`PATH_MAX` less its NUL).
const PATH_MAX: usize = libc::PATH_MAX as usize - 1;

/// Refuses to put a path longer than Linux can name at `root` (found by exploratory testing: a
/// snapshot whose deepest file fit at its own path was synced to a longer one; written through
/// directory handles it was there, but no capture, `verify`, rollback or program could open it by
/// its path, and the environment was stuck).
pub(crate) fn refuse_long_paths<'p>(
    root: &Path,
    paths: impl IntoIterator<Item = &'p String>,
) -> Result<()> {
    let at_root = root.as_os_str().len() + 1;
    let Some(longest) = paths
        .into_iter()
        .max_by_key(|path| path.len())
        .filter(|path| at_root + path.len() > PATH_MAX)
    else {
        return Ok(());
    };
    let shown = match longest.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &longest[..cut]),
        None => longest.clone(),
    };
    Err(Error::Invalid(format!(
        "at `{}`, `{shown}` would be a path of {} bytes, more than the {PATH_MAX} Linux can open a \
         file by: pick a shorter path for the environment (at most {} bytes)",
        root.display(),
        at_root + longest.len(),
        PATH_MAX.saturating_sub(longest.len() + 1)
    )))
}

/// A file the move writes whose object the store lacks (lost, or removed by hand), found before the
/// journal binds the environment to a move that could not finish. Looked up through a handle on the
/// objects directory: a path from the root costs a dentry look-up per component, per file.
fn missing_object(
    store: &Store,
    before: &Tree,
    after: &Tree,
) -> Result<Option<(String, ObjectId)>> {
    let dir = store.objects().objects_dir();
    let objects = dir_handle(AT_FDCWD, dir, false).at("opening the object store", dir)?;
    let stored = |id: &ObjectId, executable: bool| {
        [executable, !executable].into_iter().any(|variant| {
            let name = ObjectStore::object_name(id, variant);
            fstatat(&objects, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
        })
    };
    Ok(before.changes_to(after).par_iter().find_map_any(|change| {
        let (PathChange::Added(path, node) | PathChange::Modified(path, _, node)) = change else {
            return None;
        };
        let Node::File {
            object, executable, ..
        } = node
        else {
            return None;
        };
        (!stored(object, *executable)).then(|| ((*path).to_owned(), *object))
    }))
}

/// What was at an environment's path before a move made it there: nothing, or the names in the
/// directory that was there (an empty one, checked free before, unless something came meanwhile).
enum RootBefore {
    Absent,
    Dir(HashSet<OsString>),
    /// A file, a symlink, or what cannot be read: nothing of it is the move's.
    Other,
}

impl RootBefore {
    fn of(root: &Path) -> RootBefore {
        match root.symlink_metadata() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RootBefore::Absent,
            Ok(meta) if meta.is_dir() => match std::fs::read_dir(root) {
                Ok(entries) => RootBefore::Dir(entries.flatten().map(|e| e.file_name()).collect()),
                Err(_) => RootBefore::Other,
            },
            _ => RootBefore::Other,
        }
    }
}

/// Undoes a move that failed into a directory it was making, or while it was making the environment
/// (an object lost, a full disk, a path where no directory can be made): what the move wrote goes (the
/// directory, when it made it; else the entries of `target`'s top level that it added to the
/// directory it was given), and the journal with it, and the environment's record when the move was
/// creating the environment. Best effort: what is left is a move the next command finishes.
fn undo_failed_move(store: &Store, env: &Env, root: &Path, before: &RootBefore, target: &Tree) {
    let removed = match before {
        RootBefore::Absent => crate::fsutil::remove_tree(root).is_ok(),
        RootBefore::Dir(names) => std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.file_name())
            .filter(|name| !names.contains(name))
            .filter(|name| {
                name.to_str()
                    .is_some_and(|name| target.entries.contains_key(name))
            })
            .all(|name| crate::fsutil::remove_tree(&root.join(name)).is_ok()),
        RootBefore::Other => true,
    };
    if !removed {
        return;
    }
    let mut batch = Batch::default();
    match env.record.head {
        // With the history a restore wrote beside the journal.
        None => {
            let history = store.index().history(&env.record.id).unwrap_or_default();
            batch.delete_env(&env.record, &history, &[]);
        }
        Some(_) => batch.delete_journal(&env.record.id),
    }
    let _ = store.index().write(batch);
}

/// Puts the paths a failed move changes back as the snapshot it started from has them, when the
/// move failed after changing part of the directory (a file it may not remove, a full disk, a
/// read-only mount): the environment is then at that snapshot, and the journal goes. Should that
/// fail too, the journal stays, and the next command that opens the environment finishes the move.
/// Returns the move's error, saying which of the two it was.
fn undo_failed_apply(store: &Store, env: &Env, journal: &Journal, failure: Error) -> Error {
    let undone = (|| {
        let from_id = journal
            .from
            .ok_or_else(|| Error::Invalid("a move without a snapshot to go back to".into()))?;
        let from = store.tree_of(&store.snapshot(&from_id)?)?;
        let to = store.tree_of(&store.snapshot(&journal.to)?)?;
        let root = env.root();
        let scan = scan_or_empty(env, load_stat_cache(store, &env.record.id))?;
        let (current, mut cache) = scan.into_parts();
        // Only the move's own paths go back: what else the directory holds (a file written while an
        // install ran) is not the move's to undo.
        let mut back = current.clone();
        for change in from.changes_to(&to) {
            let path = change.path();
            match from.entries.get(path) {
                Some(node) => {
                    back.entries.insert(path.to_owned(), node.clone());
                }
                None => {
                    let below: Vec<String> =
                        back.descendants(path).map(|(p, _)| p.clone()).collect();
                    for gone in below.iter().map(String::as_str).chain([path]) {
                        back.entries.remove(gone);
                    }
                }
            }
        }
        let placeholders = env.placeholders();
        let materializer = Materializer {
            store: store.objects(),
            placeholders: &placeholders,
            mode: link_mode(store, root)?,
        };
        materializer.apply(root, &current, &back, &mut cache)?;
        crate::objects::syncfs(root)?;
        if back == from {
            cache.stamp_with(from_id, from.digest());
        }
        save_stat_cache(store, &env.record.id, &cache);
        let mut batch = Batch::default();
        batch.delete_journal(&env.record.id);
        store.index().write(batch)?;
        Ok::<_, Error>(from_id)
    })();
    let (env_label, operation) = (env.label().to_owned(), journal.operation.clone());
    match undone {
        Ok(from) => Error::MoveUndone {
            env: env_label,
            operation,
            snapshot: from.short(),
            source: Box::new(failure),
        },
        Err(undo) => Error::MoveStuck {
            env: env_label,
            operation,
            undo: undo.to_string(),
            source: Box::new(failure),
        },
    }
}

/// Finishes a move that a killed command left in the journal. A path that holds neither what the old
/// nor what the new snapshot has there was changed by someone else since: unless `force`, the move is
/// not finished over it, so nobody's work is lost silently.
pub fn finish_interrupted(store: &Store, env: &mut Env, force: bool) -> Result<()> {
    let Some(journal) = store.index().journal(&env.record.id)? else {
        return Ok(());
    };
    let from = match journal.from {
        Some(id) => store.tree_of(&store.snapshot(&id)?)?,
        None => Tree::default(),
    };
    let to = store.tree_of(&store.snapshot(&journal.to)?)?;
    // Two snapshots of the same files (a squash): the move never touches the directory, so only its
    // record is left to write, and what the directory holds, uncaptured changes too, stays. A directory
    // removed meanwhile is made again below, as for any move.
    if journal.from.is_some() && from == to && env.root().is_dir() {
        eprintln!(
            "blast: finishing the interrupted {} of `{}`",
            journal.operation,
            env.label()
        );
        return record(store, env, &journal);
    }
    // The directory of an environment that had one, removed since (every path of it "changed"), is
    // named as such. A move that makes the directory (a sync to a new path) finishes.
    if journal.from.is_some() && !force {
        env.directory()?;
    }
    let cache = load_stat_cache(store, &env.record.id);
    let current = scan_or_empty(env, cache)?;
    if !force {
        let foreign = foreign_paths(&from, &to, current.tree());
        if !foreign.is_empty() {
            return Err(Error::InterruptedWithChanges {
                env: env.label().to_owned(),
                operation: journal.operation,
                paths: foreign,
            });
        }
    }
    eprintln!(
        "blast: finishing the interrupted {} of `{}`",
        journal.operation,
        env.label()
    );
    let (current, cache) = current.into_parts();
    let difference = Difference::Trees {
        current,
        target: None,
    };
    let operation = journal.operation.clone();
    complete(store, env, journal, difference, cache, true).map_err(|e| {
        Error::InterruptedUnfinished {
            env: env.label().to_owned(),
            operation,
            source: Box::new(e),
        }
    })?;
    Ok(())
}

/// Paths of the environment's directory that hold what no snapshot of its has there (changes not
/// captured, or files made at its path since): what removing the directory would lose. Mid-move, the
/// move's two ends both count. Paths removed by hand lose nothing.
pub fn unsaved_paths(store: &Store, env: &Env, root: &Path) -> Result<Vec<String>> {
    match root.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at("inspecting", root),
        Ok(meta) if !meta.is_dir() => return Ok(vec!["(a file, where the directory was)".into()]),
        Ok(_) => {}
    }
    let scan = capture::scan(
        root,
        load_stat_cache(store, &env.record.id),
        &env.placeholders(),
        None,
    )?;
    let current = scan.tree();
    let tree_of = |id: &SnapshotId| store.tree_of(&store.snapshot(id)?);
    let mut paths = match store.index().journal(&env.record.id)? {
        Some(journal) => {
            let from = match journal.from {
                Some(id) => tree_of(&id)?,
                None => Tree::default(),
            };
            foreign_paths(&from, &tree_of(&journal.to)?, current)
        }
        None => tree_of(&env.head()?)?
            .changes_to(current)
            .iter()
            .map(|change| change.path().to_owned())
            .collect(),
    };
    paths.retain(|path| current.entries.contains_key(path));
    Ok(paths)
}

/// Reads the directory; a directory that is gone reads as empty (the apply recreates it).
pub fn scan_or_empty(env: &Env, cache: StatCache) -> Result<capture::Scan> {
    match env.root().symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(capture::Scan::empty()),
        // One that cannot be reached (a directory on the way closed to the user) is not empty (found
        // by exploratory testing: every file of HEAD read as removed, and `sync --force` failed midway).
        Err(e) => Err(e).at("reaching the environment's directory", env.root()),
        Ok(_) => capture::scan(env.root(), cache, &env.placeholders(), None),
    }
}

/// Paths of `current` that an interrupted move from `from` to `to` cannot explain.
fn foreign_paths(from: &Tree, to: &Tree, current: &Tree) -> Vec<String> {
    let mut foreign = Vec::new();
    let is_file = |n: Option<&Node>| matches!(n, Some(Node::File { .. }));
    for (path, node) in &current.entries {
        let (old, new) = (from.entries.get(path), to.entries.get(path));
        // A file the move was creating (nothing of that kind was there before) may be half written.
        let being_created = is_file(Some(node)) && is_file(new) && !is_file(old);
        let explained = old == Some(node)
            || new == Some(node)
            || being_created
            || crate::materialize::is_temporary(path);
        if !explained {
            foreign.push(path.clone());
        }
    }
    // Gone although both sides have the same thing there: the move never touches such a path.
    for (path, node) in &from.entries {
        if !current.entries.contains_key(path) && to.entries.get(path) == Some(node) {
            foreign.push(path.clone());
        }
    }
    foreign.sort();
    foreign
}

fn complete(
    store: &Store,
    env: &mut Env,
    journal: Journal,
    difference: Difference,
    mut cache: StatCache,
    after_crash: bool,
) -> Result<ApplyStats> {
    let whole_target = matches!(difference, Difference::Trees { .. });
    let (current, target) = match difference {
        Difference::Trees {
            current,
            target: Some(target),
        } => (current, target),
        Difference::Trees {
            current,
            target: None,
        } => (current, store.tree_of(&store.snapshot(&journal.to)?)?),
        Difference::Region(region) => (region.before, region.after),
    };
    let placeholders = env.placeholders();
    let root = env.root().to_owned();
    let creating = env.record.head.is_none();
    // Only what this move makes is undone: a file or a symlink at the path is the user's.
    let before = match RootBefore::of(&root) {
        RootBefore::Dir(_) if !creating => RootBefore::Other,
        before => before,
    };
    let applied = link_mode(store, &root).and_then(|mode| {
        let materializer = Materializer {
            store: store.objects(),
            placeholders: &placeholders,
            mode,
        };
        materializer.apply(&root, &current, &target, &mut cache)
    });
    let stats = match applied {
        Ok(stats) => stats,
        Err(e) if after_crash => return Err(e),
        Err(e) if creating || matches!(before, RootBefore::Absent) => {
            undo_failed_move(store, env, &root, &before, &target);
            return Err(e);
        }
        Err(e) => {
            drop((current, target));
            return Err(undo_failed_apply(store, env, &journal, e));
        }
    };
    // The stamp's digest moved along the changes; without one, the target's whole tree gives it.
    let target_digest = match stats.target_digest {
        Some(digest) => digest,
        None if whole_target => target.digest(),
        None => store.tree_of(&store.snapshot(&journal.to)?)?.digest(),
    };
    cache.stamp_with(journal.to, target_digest);
    // The directory's new content is not waited for (a `syncfs` took 30–40 ms of a materialization
    // of the big environment): the stat cache names the boot whose page cache holds it, so that after
    // a power cut no scan trusts the cache for files that may be lost or torn (SPEC §14). Where that
    // mark is not on disk (no boot to name, or the cache not written: a full disk), the content is on
    // disk before the journal that could redo it goes: an older, unmarked cache would otherwise be
    // brought up to date from the page cache by a later scan. The trees are freed beside the write.
    let boot = crate::fsutil::boot_id();
    if let Some(boot) = boot {
        cache.mark_unsynced(boot);
    }
    let saved = std::thread::scope(|scope| {
        scope.spawn(move || drop((current, target)));
        cache.save(&store.stat_cache_path(&env.record.id))
    });
    if boot.is_none() || saved.is_err() {
        crate::objects::syncfs(&root)?;
    }
    crash::point("applied");
    record(store, env, &journal).map_err(|e| Error::MoveUnrecorded {
        env: env.label().to_owned(),
        operation: journal.operation.clone(),
        snapshot: journal.to.short(),
        source: Box::new(e),
    })?;
    Ok(stats)
}

/// Records a move whose directory holds its target: HEAD, the history entry, the journal gone.
fn record(store: &Store, env: &mut Env, journal: &Journal) -> Result<()> {
    env.record.head = Some(journal.to);
    let mut batch = Batch::default();
    batch.put_env(&env.record);
    // A repair (`rollback --force HEAD` of a damaged or removed directory) moves nothing: an entry for
    // it would make `@~1` HEAD itself, and a plain `blast rollback` a no-op.
    if journal.from != Some(journal.to) {
        append_history(store, &mut batch, &env.record.id, journal)?;
    }
    batch.delete_journal(&env.record.id);
    // Not synced: the journal is on disk, so a record lost in a power cut is written again by the next
    // command, which finds the directory already holding `to`.
    store.index().write_unsynced(batch)
}

/// Adds the history entry for a completed move or capture.
pub fn append_history(
    store: &Store,
    batch: &mut Batch,
    env_id: &str,
    journal: &Journal,
) -> Result<()> {
    let history = store.index().history(env_id)?;
    let last = history.last();
    batch.put_history(
        env_id,
        &HistoryEntry {
            seq: last.map_or(0, |e| e.seq + 1),
            time_ms: jiff::Timestamp::now().as_millisecond(),
            operation: journal.operation.clone(),
            message: journal.message.clone(),
            // A move that makes the environment comes from nothing, but for a restore of an image's
            // history, whose HEAD comes after the earlier snapshots written before it (found by
            // exploratory testing: `log` showed HEAD's packages as all added).
            from: journal.from.or(last.map(|e| e.to)),
            to: journal.to,
        },
    );
    Ok(())
}

pub fn load_stat_cache(store: &Store, env_id: &str) -> StatCache {
    StatCache::load(&store.stat_cache_path(env_id))
}

/// Keeps the cache for the next command. A cache that cannot be written only costs that command
/// rehashing, so the failure is not the operation's.
pub fn save_stat_cache(store: &Store, env_id: &str, cache: &StatCache) {
    let _ = cache.save(&store.stat_cache_path(env_id));
}

/// The link mode for materializing from this store into `root`: `BLAST_LINK_MODE` when set, else what
/// a probe found for this pair of filesystems (probed once, then remembered in the index).
pub fn link_mode(store: &Store, root: &Path) -> Result<LinkMode> {
    if let Some(forced) = crate::materialize::forced_link_mode()? {
        return Ok(forced);
    }
    std::fs::create_dir_all(root).at("creating environment directory", root)?;
    let store_dev = store
        .home()
        .metadata()
        .at("inspecting", store.home())?
        .dev();
    let env_dev = root.metadata().at("inspecting", root)?.dev();
    let key = format!("{store_dev}-{env_dev}");
    if let Some(mode) = store.index().link_mode(&key)? {
        return Ok(mode);
    }
    let probe_area = store.objects().begin()?;
    let mode = probe_link_mode(probe_area.dir(), root)?;
    if mode == LinkMode::Copy {
        eprintln!(
            "blast: the store ({}) and `{}` cannot share files (different filesystems?): files are copied; \
             set BLAST_HOME on the environment's filesystem to link them",
            store.home().display(),
            root.display()
        );
    }
    let mut batch = Batch::default();
    batch.put_link_mode(&key, mode);
    store.index().write(batch)?;
    Ok(mode)
}
