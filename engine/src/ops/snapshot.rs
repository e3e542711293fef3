//! `blast snapshot`: whatever changed in the directory (a pip run by hand, an editor) becomes a layer.

use serde::{Deserialize, Serialize};
use store_format::{Node, ObjectId, SnapshotId};

use crate::capture;
use crate::crash;
use crate::error::{Error, Result};
use crate::index::{Batch, Journal};
use crate::packages::{InstalledFrom, PackageChange, package_changes, packages_of};
use crate::store::{Env, Store};
use crate::transition::{append_history, load_stat_cache, save_stat_cache};

#[derive(Debug, Serialize)]
pub struct SnapshotReport {
    pub env: String,
    /// The new snapshot; `None` when nothing changed.
    pub snapshot: Option<SnapshotId>,
    pub parent: SnapshotId,
    pub tag: Option<String>,
    pub added: usize,
    pub modified: usize,
    pub removed: usize,
    pub packages: Vec<PackageChange>,
    /// Files whose bytes were read; the rest were recognised by the stat cache.
    pub files_hashed: usize,
    /// Files written in place through their link to a store object, which is damaged with them.
    pub written_through: Vec<WrittenThrough>,
}

/// A file written in place through its hardlink to a store object (see `Scan::written_through`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WrittenThrough {
    pub path: String,
    /// The object it shared its inode with: its bytes are no longer those it is named by.
    pub object: ObjectId,
}

pub fn snapshot(
    store: &Store,
    selector: Option<&str>,
    message: Option<String>,
    tag: Option<String>,
) -> Result<SnapshotReport> {
    if let Some(tag) = &tag {
        super::validate_tag(tag)?;
    }
    let env = store.open_env(selector)?;
    if let Some(tag) = &tag
        && let Some((_, taken)) = store
            .index()
            .tags(&env.record.id)?
            .into_iter()
            .find(|(t, _)| t == tag)
    {
        return Err(Error::TagTaken {
            env: env.label().to_owned(),
            tag: tag.clone(),
            snapshot: taken.short(),
        });
    }
    capture_into_snapshot(store, &env, "snapshot", message, tag)
}

/// An environment whose directory is at its HEAD, for a change that must start from there.
pub(crate) struct AtHead {
    pub env: Env,
    /// The snapshot made of work found in the directory first, if there was any.
    pub captured_first: Option<SnapshotId>,
    /// Files that capture found written in place through their link to a store object.
    pub written_through: Vec<WrittenThrough>,
}

/// Opens an environment for a change that must start from HEAD (an install, a captured run, a
/// session): work found in the directory is kept first as its own snapshot, `message` saying why.
pub(crate) fn open_env_at_head(
    store: &Store,
    selector: Option<&str>,
    message: &str,
) -> Result<AtHead> {
    let mut env = store.open_env(selector)?;
    let captured = capture_into_snapshot(store, &env, "snapshot", Some(message.to_owned()), None)?;
    let found = captured.snapshot;
    if found.is_some() {
        env.record = store
            .index()
            .env(&env.record.id)?
            .ok_or_else(|| Error::EnvNotFound(env.label().to_owned()))?;
    }
    Ok(AtHead {
        env,
        captured_first: found,
        written_through: captured.written_through,
    })
}

/// Captures the directory of `env` as a new snapshot on top of its HEAD and records it.
pub(crate) fn capture_into_snapshot(
    store: &Store,
    env: &Env,
    operation: &str,
    message: Option<String>,
    tag: Option<String>,
) -> Result<SnapshotReport> {
    let head_id = env.head()?;
    // Found by exploratory testing: an environment emptied by hand became its own next snapshot (the
    // capture before an install), and the installer then failed on it.
    let root = env.record.virtual_environment()?;
    let cache = load_stat_cache(store, &env.record.id);
    let staging = store.objects().begin()?;
    let sink = capture::Sink {
        staging: &staging,
        head: Some(head_id),
    };
    let scan = capture::scan(root, cache, &env.placeholders(), Some(sink))?;
    let mut report = SnapshotReport {
        env: env.label().to_owned(),
        snapshot: None,
        parent: head_id,
        tag: tag.clone(),
        added: 0,
        modified: 0,
        removed: 0,
        packages: Vec::new(),
        files_hashed: scan.hashed,
        written_through: scan
            .written_through(store.objects())
            .into_iter()
            .map(|(path, object)| WrittenThrough { path, object })
            .collect(),
    };
    // Unchanged when the stat cache knows the directory as HEAD, else when it equals HEAD's tree.
    let head = store.snapshot(&head_id)?;
    let head_tree = if scan.holds(&head_id) {
        None
    } else {
        Some(store.tree_of(&head)?)
    };
    let Some(head_tree) = head_tree.filter(|tree| tree != scan.tree()) else {
        if let Some(tag) = &tag {
            let mut batch = Batch::default();
            batch.put_tag(&env.record.id, tag, &head_id);
            store.index().write(batch)?;
        }
        if scan.cache_changed || !scan.holds(&head_id) {
            save_stat_cache(store, &env.record.id, &scan.into_cache_of(head_id));
        }
        return Ok(report);
    };
    for change in head_tree.changes_to(scan.tree()) {
        match change {
            crate::tree::PathChange::Added(..) => report.added += 1,
            crate::tree::PathChange::Modified(..) => report.modified += 1,
            crate::tree::PathChange::Removed(..) => report.removed += 1,
        }
    }
    let layer = head_tree.layer_to(scan.tree());
    // Read from the objects the tree names, not the directory, which may have changed since.
    let packages = packages_of(
        scan.tree(),
        &env.record.python.purelib,
        |_, node| match node {
            Node::File { object, .. } => staging.read_object(object),
            _ => Ok(Vec::new()),
        },
    )?;
    report.packages = package_changes(
        &head.packages,
        &packages,
        Some(InstalledFrom {
            before: &head_tree,
            after: scan.tree(),
            purelib: &env.record.python.purelib,
        }),
    );
    let id = super::stage_snapshot_on(&staging, &head, &layer, packages)?;
    staging.commit()?;
    crash::point("capture-staged");
    let mut record = env.record.clone();
    record.head = Some(id);
    let mut batch = Batch::default();
    batch.put_env(&record);
    append_history(
        store,
        &mut batch,
        &record.id,
        &Journal {
            from: Some(head_id),
            to: id,
            operation: operation.to_owned(),
            message,
        },
    )?;
    if let Some(tag) = &tag {
        batch.put_tag(&record.id, tag, &id);
    }
    store.index().write(batch)?;
    save_stat_cache(store, &record.id, &scan.into_cache_of(id));
    report.snapshot = Some(id);
    Ok(report)
}
