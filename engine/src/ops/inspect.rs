//! The read-only views: `blast log`, `blast diff`, `blast status`, `blast list`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use serde::Serialize;
use store_format::{LayerId, Node, Package, Snapshot, SnapshotId};

use super::snapshot::WrittenThrough;
use crate::capture;
use crate::error::{Error, IoContext, Result};
use crate::index::EnvRecord;
use crate::packages::{
    InstalledFrom, PackageChange, dist_infos_changed_by, package_changes, packages_of,
};
use crate::processes::{EnvProcess, running_from};
use crate::store::{Env, Store};
use crate::transition::{load_stat_cache, save_stat_cache};
use crate::tree::{PathChange, Region, Tree, shared_layers};

#[derive(Debug, Serialize)]
pub struct LogEntry {
    pub seq: u64,
    /// RFC 3339.
    pub time: String,
    pub operation: String,
    pub message: Option<String>,
    pub snapshot: SnapshotId,
    pub from: Option<SnapshotId>,
    pub tags: Vec<String>,
    /// Package changes from `from`; `None` when `from` is no longer in the store, or a snapshot of
    /// the two cannot be read (`unreadable`).
    pub packages: Option<Vec<PackageChange>>,
    /// Why a snapshot of the entry that the store holds cannot be read (damaged: `blast verify`).
    pub unreadable: Option<String>,
    pub head: bool,
}

/// History, newest first.
pub fn log(store: &Store, selector: Option<&str>) -> Result<Vec<LogEntry>> {
    let env = store.open_env_to_show(selector)?;
    let history = store.index().history(&env.record.id)?;
    let mut tags: HashMap<SnapshotId, Vec<String>> = HashMap::new();
    for (tag, id) in store.index().tags(&env.record.id)? {
        tags.entry(id).or_default().push(tag);
    }
    let mut entry_changes = EntryChanges {
        store,
        purelib: &env.record.python.purelib,
        snapshots: HashMap::new(),
        dist_infos: HashMap::new(),
    };
    let mut out = Vec::with_capacity(history.len());
    for entry in history.iter().rev() {
        let (changes, unreadable) = match entry_changes.between(entry.from, entry.to) {
            Ok(changes) => (changes, None),
            Err(error) => (None, Some(error.to_string())),
        };
        out.push(LogEntry {
            seq: entry.seq,
            time: rfc3339(entry.time_ms),
            operation: entry.operation.clone(),
            message: entry.message.clone(),
            snapshot: entry.to,
            from: entry.from,
            tags: tags.get(&entry.to).cloned().unwrap_or_default(),
            packages: changes,
            unreadable,
            head: out.is_empty(),
        });
    }
    Ok(out)
}

/// The package changes of history entries, each snapshot and layer read once. A distribution at the
/// same version on both sides is compared file by file (`Reinstalled`) only where a layer between the
/// two changes its `*.dist-info`: the region of two snapshots reads their shared layers, too much for
/// every entry of a long history.
struct EntryChanges<'s> {
    store: &'s Store,
    purelib: &'s str,
    /// `None`: cleaned away.
    snapshots: HashMap<SnapshotId, Option<Snapshot>>,
    /// `None`: the layer changes every distribution's (it replaces `purelib`).
    dist_infos: HashMap<LayerId, Option<BTreeSet<String>>>,
}

impl EntryChanges<'_> {
    /// `None` when a snapshot is no longer in the store; an error when one there cannot be read.
    fn between(
        &mut self,
        from: Option<SnapshotId>,
        to: SnapshotId,
    ) -> Result<Option<Vec<PackageChange>>> {
        let Some(new) = self.snapshot(to)? else {
            return Ok(None);
        };
        let Some(from) = from else {
            return Ok(Some(package_changes(&[], &new.packages, None)));
        };
        let Some(old) = self.snapshot(from)? else {
            return Ok(None);
        };
        let shared = shared_layers(&old.layers, &new.layers);
        let (before, after) = (&old.layers[shared..], &new.layers[shared..]);
        let kept: BTreeSet<&str> = old
            .packages
            .iter()
            .filter(|p| new.packages.contains(p))
            .map(|p| p.name.as_str())
            .collect();
        let compare = !kept.is_empty()
            && before.iter().chain(after).any(|layer| {
                self.dist_infos_changed_by(layer)
                    .is_none_or(|names| names.iter().any(|n| kept.contains(n.as_str())))
            });
        let region = compare
            .then(|| Region::between(self.store.objects(), &new.layers[..shared], before, after))
            .and_then(Result::ok);
        let trees = region.as_ref().map(|region| InstalledFrom {
            before: &region.before,
            after: &region.after,
            purelib: self.purelib,
        });
        Ok(Some(package_changes(&old.packages, &new.packages, trees)))
    }

    /// `None` when the store no longer has it (cleaned away).
    fn snapshot(&mut self, id: SnapshotId) -> Result<Option<Snapshot>> {
        if let Some(known) = self.snapshots.get(&id) {
            return Ok(known.clone());
        }
        let read = match self.store.snapshot(&id) {
            Ok(snapshot) => Some(snapshot),
            Err(Error::MissingSnapshot(_)) => None,
            Err(e) => return Err(e),
        };
        self.snapshots.insert(id, read.clone());
        Ok(read)
    }

    /// A layer that cannot be read changes nothing here: the region would not be read either.
    fn dist_infos_changed_by(&mut self, id: &LayerId) -> Option<&BTreeSet<String>> {
        let (store, purelib) = (self.store, self.purelib);
        self.dist_infos
            .entry(*id)
            .or_insert_with(|| match store.objects().layer(id) {
                Ok(layer) => dist_infos_changed_by(&layer, purelib),
                Err(_) => Some(BTreeSet::new()),
            })
            .as_ref()
    }
}

#[derive(Debug, Serialize)]
pub struct FileChange {
    /// `added`, `removed` or `modified`.
    pub change: &'static str,
    pub path: String,
}

#[derive(Debug, Serialize)]
pub struct DiffReport {
    pub env: String,
    /// A snapshot id, or `None` for the directory as it is now.
    pub from: Option<SnapshotId>,
    pub to: Option<SnapshotId>,
    pub packages: Vec<PackageChange>,
    /// How many paths differ, with or without `files` (found by exploratory testing: a file added by
    /// hand read as "no package changes", as if nothing differed).
    pub paths_changed: usize,
    /// Only with `files`.
    pub files: Option<Vec<FileChange>>,
    /// Against the directory: what it holds that no snapshot can, left out of the comparison.
    pub uncapturable: Vec<Uncapturable>,
}

/// Between snapshots `a` and `b`; `a` defaults to HEAD, `b` to the directory as it is now.
pub fn diff(
    store: &Store,
    selector: Option<&str>,
    a: Option<&str>,
    b: Option<&str>,
    files: bool,
) -> Result<DiffReport> {
    let env = store.open_env(selector)?;
    let history = store.index().history(&env.record.id)?;
    let resolve =
        |q: &str| super::resolve_snapshot(store, &env.record.id, env.label(), &history, q);
    let from = resolve(a.unwrap_or("HEAD"))?;
    let to = b.map(resolve).transpose()?;
    let (old_tree, old_packages) = snapshot_view(store, &from)?;
    let (new_tree, new_packages, uncapturable) = match to {
        Some(id) => {
            let (tree, packages) = snapshot_view(store, &id)?;
            (tree, packages, Vec::new())
        }
        None => directory_view(store, &env)?,
    };
    let changes = file_changes_but_unread(&old_tree, &new_tree, &uncapturable);
    Ok(DiffReport {
        env: env.label().to_owned(),
        from: Some(from),
        to,
        paths_changed: changes.len(),
        packages: package_changes(
            &old_packages,
            &new_packages,
            Some(InstalledFrom {
                before: &old_tree,
                after: &new_tree,
                purelib: &env.record.python.purelib,
            }),
        ),
        files: files.then_some(changes),
        uncapturable,
    })
}

fn snapshot_view(store: &Store, id: &SnapshotId) -> Result<(Tree, Vec<Package>)> {
    let snapshot = store.snapshot(id)?;
    Ok((store.tree_of(&snapshot)?, snapshot.packages))
}

/// The directory as it is, read with the stat cache, with its packages read from its METADATA files,
/// and what it holds that no snapshot can (found by exploratory testing: a named pipe failed the diff,
/// where `status` lists it beside the changes).
fn directory_view(store: &Store, env: &Env) -> Result<(Tree, Vec<Package>, Vec<Uncapturable>)> {
    let root = env.directory()?;
    let cache = load_stat_cache(store, &env.record.id);
    let (scan, unstorable) =
        capture::scan_leaving_out_unstorable(root, cache, &env.placeholders())?;
    let uncapturable = unstorable
        .into_iter()
        .map(|error| Uncapturable::of(root, error))
        .collect::<Result<_>>()?;
    let packages = directory_packages(env, scan.tree())?;
    Ok((scan.into_parts().0, packages, uncapturable))
}

fn scan_directory(store: &Store, env: &Env) -> Result<capture::Scan> {
    let cache = load_stat_cache(store, &env.record.id);
    capture::scan(env.directory()?, cache, &env.placeholders(), None)
}

fn directory_packages(env: &Env, tree: &Tree) -> Result<Vec<Package>> {
    let root = env.directory()?;
    packages_of(tree, &env.record.python.purelib, |path, _| {
        std::fs::read(root.join(path)).at("reading", &root.join(path))
    })
}

/// How the packages in the directory differ from those of HEAD (`head_packages`): uncaptured changes,
/// a `pip install` run by hand. `blast packages` and `check` show HEAD, and name these. A note, not
/// their report: a directory that cannot be read now (gone, holding a socket) gives none, and other
/// commands say why.
pub(crate) fn uncaptured_packages(
    store: &Store,
    env: &Env,
    head: &SnapshotId,
    head_packages: &[Package],
) -> Vec<PackageChange> {
    let Ok(scan) = scan_directory(store, env) else {
        return Vec::new();
    };
    if scan.holds(head) {
        return Vec::new();
    }
    let head_tree = store
        .snapshot(head)
        .and_then(|snapshot| store.tree_of(&snapshot));
    let trees = head_tree.as_ref().ok().map(|head_tree| InstalledFrom {
        before: head_tree,
        after: scan.tree(),
        purelib: &env.record.python.purelib,
    });
    directory_packages(env, scan.tree())
        .map(|packages| package_changes(head_packages, &packages, trees))
        .unwrap_or_default()
}

/// How many paths in the directory differ from HEAD: changes an export or a push of HEAD leaves out.
/// Best effort, as [`uncaptured_packages`].
pub(crate) fn uncaptured_paths(store: &Store, env: &Env, head: &SnapshotId) -> usize {
    let Ok(scan) = scan_directory(store, env) else {
        return 0;
    };
    if scan.holds(head) {
        return 0;
    }
    store
        .snapshot(head)
        .and_then(|snapshot| store.tree_of(&snapshot))
        .map(|tree| file_changes(&tree, scan.tree()).len())
        .unwrap_or(0)
}

/// [`file_changes`] from `old` to a scan that left `uncapturable` out: what it could not read is not
/// "removed" (nor what lies below a directory it could not read).
pub(crate) fn file_changes_but_unread(
    old: &Tree,
    new: &Tree,
    uncapturable: &[Uncapturable],
) -> Vec<FileChange> {
    let unread: Vec<&str> = uncapturable
        .iter()
        .filter(|u| u.kind == UNREADABLE)
        .map(|u| u.path.as_str())
        .collect();
    let mut changes = file_changes(old, new);
    changes.retain(|change| {
        !unread.iter().any(|dir| {
            change
                .path
                .strip_prefix(dir)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    });
    changes
}

pub(crate) fn file_changes(old: &Tree, new: &Tree) -> Vec<FileChange> {
    old.changes_to(new)
        .into_iter()
        .filter(|c| !matches!(c, PathChange::Modified(_, Node::Dir, Node::Dir)))
        .map(|c| FileChange {
            change: match c {
                PathChange::Added(..) => "added",
                PathChange::Removed(..) => "removed",
                PathChange::Modified(..) => "modified",
            },
            path: c.path().to_owned(),
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub env: String,
    pub name: Option<String>,
    pub path: String,
    pub python: String,
    pub head: Option<SnapshotId>,
    pub tags: Vec<String>,
    /// Paths that differ from HEAD in the directory.
    pub uncaptured: Vec<FileChange>,
    /// What the directory holds that no snapshot can (left out of `uncaptured`).
    pub uncapturable: Vec<Uncapturable>,
    /// Uncaptured files written in place through their link to a store object, which is damaged with them.
    pub written_through: Vec<WrittenThrough>,
    pub packages: Vec<Package>,
    pub env_bytes: u64,
    pub env_files: usize,
    pub store_bytes: u64,
    /// Bytes that all environments' HEADs would take without sharing objects, minus what they take.
    pub saved_by_dedup: u64,
    /// The live session of the environment (`blast start`).
    pub session: Option<crate::session::SessionStatus>,
    /// Processes running from the environment's directory, by pid.
    pub processes: Vec<EnvProcess>,
}

/// An entry of an environment's directory that no snapshot can hold, which `blast snapshot` refuses
/// and `blast rollback --force` discards.
#[derive(Debug, Serialize)]
pub struct Uncapturable {
    /// Relative to the environment's directory; a name that is not UTF-8 with its bytes escaped.
    pub path: String,
    /// `named pipe`, `socket`, `character device`…, or `name that is not UTF-8`.
    pub kind: &'static str,
}

/// The kind of an [`Uncapturable`] entry blast may not read.
pub const UNREADABLE: &str = "unreadable: permission denied";

impl Uncapturable {
    /// From what a scan of `root` left out; any other error is passed on.
    pub(crate) fn of(root: &Path, error: Error) -> Result<Uncapturable> {
        let (path, kind) = match error {
            Error::UnsupportedFileType { path, kind } => (path, kind),
            Error::NonUtf8Path(path) => (path, "name that is not UTF-8"),
            Error::Unreadable { path } => (path, UNREADABLE),
            other => return Err(other),
        };
        let relative = path.strip_prefix(root).unwrap_or(&path);
        let path = match relative.to_str() {
            Some(path) => path.to_owned(),
            None => relative
                .as_os_str()
                .as_encoded_bytes()
                .escape_ascii()
                .to_string(),
        };
        Ok(Uncapturable { path, kind })
    }
}

pub fn status(store: &Store, selector: Option<&str>) -> Result<StatusReport> {
    // Asked first, holding neither the index nor the environment's lock: the session may be
    // capturing, which takes both.
    let id = store.find_env(selector)?.id;
    let session = store
        .index()
        .released(|| super::session::session_status(store.home(), &id))?;
    let env = store.open_env(selector)?;
    let head = env.head()?;
    let (head_tree, packages) = snapshot_view(store, &head)?;
    let cache = load_stat_cache(store, &env.record.id);
    let root = env.directory()?;
    let (scan, unstorable) =
        capture::scan_leaving_out_unstorable(root, cache, &env.placeholders())?;
    let uncapturable: Vec<Uncapturable> = unstorable
        .into_iter()
        .map(|error| Uncapturable::of(root, error))
        .collect::<Result<_>>()?;
    // A directory the stat cache knows as HEAD has nothing uncaptured.
    let uncaptured = if scan.holds(&head) {
        Vec::new()
    } else {
        file_changes_but_unread(&head_tree, scan.tree(), &uncapturable)
    };
    let written_through: Vec<WrittenThrough> = scan
        .written_through(store.objects())
        .into_iter()
        .map(|(path, object)| WrittenThrough { path, object })
        .collect();
    // What the scan read is kept, as a capture keeps it: the first scan after a reboot reads every file
    // (a cache marked with writes of the boot before is not trusted, SPEC §14), and so would every
    // `status` after it. Not when a file was written in place through its link to an object: kept, the
    // cache would know the file's new bytes, and the capture's warning of the damaged object would not
    // come (found by exploratory testing).
    if scan.cache_changed && uncapturable.is_empty() && written_through.is_empty() {
        let cache = match uncaptured.is_empty() {
            true => scan.into_cache_of(head),
            false => scan.into_cache(),
        };
        save_stat_cache(store, &env.record.id, &cache);
    }
    let tags = store
        .index()
        .tags(&env.record.id)?
        .into_iter()
        .filter(|(_, id)| *id == head)
        .map(|(t, _)| t)
        .collect();
    Ok(StatusReport {
        env: env.label().to_owned(),
        name: env.record.name.clone(),
        path: env.record.path.clone(),
        python: env.record.python.describe(),
        head: Some(head),
        tags,
        uncaptured,
        uncapturable,
        written_through,
        packages,
        env_bytes: head_tree.file_bytes(),
        env_files: head_tree.file_count(),
        store_bytes: store_bytes(store)?,
        session,
        saved_by_dedup: head_sizes(store)?.saved_by_dedup(),
        processes: running_from(env.root()),
    })
}

/// Bytes the store's objects, layers and snapshots take on disk (their blocks, as `blast clean` counts
/// what it frees: many small files take more than their sizes add up to).
pub(crate) fn store_bytes(store: &Store) -> Result<u64> {
    let objects = store.objects();
    let mut total = 0;
    for dir in [objects.layers_dir(), objects.snapshots_dir()] {
        total += dir_bytes(dir)?;
    }
    for shard in std::fs::read_dir(objects.objects_dir()).at("listing", objects.objects_dir())? {
        let shard = shard.at("listing", objects.objects_dir())?;
        total += dir_bytes(&shard.path())?;
    }
    Ok(total)
}

fn dir_bytes(dir: &std::path::Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).at("listing", dir)? {
        let entry = entry.at("listing", dir)?;
        total += entry.metadata().map(|m| m.blocks() * 512).unwrap_or(0);
    }
    Ok(total)
}

/// What the HEADs of all environments hold.
pub(crate) struct HeadSizes {
    /// Each environment whose HEAD is readable, with its file bytes and file count.
    pub envs: Vec<(EnvRecord, u64, usize)>,
    /// File bytes of all HEADs added up, as if no object were shared.
    pub logical_bytes: u64,
    /// Bytes of the distinct objects those files use.
    pub unique_bytes: u64,
}

impl HeadSizes {
    pub fn saved_by_dedup(&self) -> u64 {
        self.logical_bytes.saturating_sub(self.unique_bytes)
    }
}

pub(crate) fn head_sizes(store: &Store) -> Result<HeadSizes> {
    let mut sizes = HeadSizes {
        envs: Vec::new(),
        logical_bytes: 0,
        unique_bytes: 0,
    };
    let mut unique: HashSet<store_format::ObjectId> = HashSet::new();
    for env in store.index().envs()? {
        let Some(head) = env.head else { continue };
        // Another environment's damage (`blast verify` names it) does not stop a look at this one.
        let Ok(tree) = store.snapshot(&head).and_then(|s| store.tree_of(&s)) else {
            continue;
        };
        for node in tree.entries.values() {
            if let Node::File { object, size, .. } = node
                && unique.insert(*object)
            {
                sizes.unique_bytes += size;
            }
        }
        let bytes = tree.file_bytes();
        sizes.logical_bytes += bytes;
        sizes.envs.push((env, bytes, tree.file_count()));
    }
    Ok(sizes)
}

#[derive(Debug, Serialize)]
pub struct EnvSummary {
    pub name: Option<String>,
    pub path: String,
    pub head: Option<SnapshotId>,
    pub python: String,
    pub packages: usize,
    pub last_operation: Option<String>,
    pub last_time: Option<String>,
    /// A command was killed while moving this environment; the next one that opens it finishes the move.
    pub interrupted: bool,
    /// Its directory is not there (removed or moved by hand).
    pub gone: bool,
}

pub fn list(store: &Store) -> Result<Vec<EnvSummary>> {
    let mut out = Vec::new();
    let mut envs = store.index().envs()?;
    envs.sort_by(|a, b| (a.name.is_none(), a.label()).cmp(&(b.name.is_none(), b.label())));
    for env in envs {
        let packages = env
            .head
            .and_then(|h| store.snapshot(&h).ok())
            .map_or(0, |s| s.packages.len());
        let last = store.index().history(&env.id)?.pop();
        out.push(EnvSummary {
            name: env.name.clone(),
            path: env.path.clone(),
            head: env.head,
            python: format!(
                "{} {}",
                env.python.tag.implementation, env.python.tag.version
            ),
            packages,
            last_operation: last.as_ref().map(|e| e.operation.clone()),
            last_time: last.map(|e| rfc3339(e.time_ms)),
            // A HEAD move or a move of the directory (found by exploratory testing: an environment
            // killed mid-`blast move` read as gone, not interrupted).
            interrupted: store.index().journal(&env.id)?.is_some()
                || store.index().relocation(&env.id)?.is_some(),
            // Not one that cannot be reached (a directory on the way closed to the user).
            gone: store
                .moved_dir(&env)
                .unwrap_or_else(|| std::path::PathBuf::from(&env.path))
                .symlink_metadata()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound),
        });
    }
    Ok(out)
}

/// `2026-11-26T09:43:44Z`: to the second, UTC.
pub(super) fn rfc3339(time_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(time_ms.div_euclid(1000) * 1000)
        .map(|t| t.to_string())
        .unwrap_or_default()
}
