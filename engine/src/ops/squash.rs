//! `blast squash`: HEAD becomes a snapshot of the same files in a single layer. A snapshot is a stack of
//! layers, and a file a later layer removed or replaced stays in the earlier one: every export and push
//! carries it, and `blast clean` cannot free it while the snapshot lives. The squashed snapshot holds
//! only what the environment has; once history, tags and other environments no longer name the old
//! snapshots, `blast clean` frees what only their layers held. The directory is not touched: the move
//! goes through the journal like any other, with nothing to apply. Tags on the old HEAD move with it
//! (they name the same files, and a push of one must not carry what the squash left behind); tags on
//! older snapshots stay, and the report names them as what keeps the old layers.

use serde::Serialize;
use store_format::{Snapshot, SnapshotId};

use crate::error::Result;
use crate::images::file_objects;
use crate::index::Batch;
use crate::store::Store;
use crate::transition::{Difference, Move, load_stat_cache, move_head};
use crate::tree::Tree;

#[derive(Debug, Serialize)]
pub struct SquashReport {
    pub env: String,
    pub from: SnapshotId,
    /// The squashed snapshot (`from` when HEAD had one layer already).
    pub to: SnapshotId,
    /// Layers of `from`.
    pub layers: usize,
    /// Files of the earlier layers that the environment no longer has (removed or replaced later), by
    /// distinct content, and their bytes: what the squashed snapshot no longer carries.
    pub dropped_files: usize,
    pub dropped_bytes: u64,
    /// Tags that named the old HEAD, moved to the squashed snapshot.
    pub moved_tags: Vec<String>,
    /// Tags of older snapshots whose layers hold what the squash dropped: it stays while they do.
    pub older_tags: Vec<String>,
    /// Paths of the directory that differ from HEAD: changes not captured, not in the squashed
    /// snapshot either.
    pub uncaptured: usize,
}

pub fn squash(
    store: &Store,
    selector: Option<&str>,
    message: Option<String>,
) -> Result<SquashReport> {
    let mut env = store.open_env(selector)?;
    // A directory removed by hand would be made anew, empty: say so instead.
    env.directory()?;
    let from = env.head()?;
    let head = store.snapshot(&from)?;
    let mut report = SquashReport {
        env: env.label().to_owned(),
        from,
        to: from,
        layers: head.layers.len(),
        dropped_files: 0,
        dropped_bytes: 0,
        moved_tags: Vec::new(),
        older_tags: Vec::new(),
        uncaptured: super::inspect::uncaptured_paths(store, &env, &from),
    };
    if head.layers.len() <= 1 {
        return Ok(report);
    }
    let tree = store.tree_of(&head)?;
    let layer = Tree::default().layer_to(&tree);
    let kept = file_objects(std::iter::once(&layer));
    let stacked = head
        .layers
        .iter()
        .map(|id| store.objects().layer(id))
        .collect::<Result<Vec<_>>>()?;
    let mut dropped = std::collections::BTreeSet::new();
    for (object, size) in file_objects(stacked.iter()) {
        if !kept.contains_key(&object) {
            report.dropped_files += 1;
            report.dropped_bytes += size;
            dropped.insert(object);
        }
    }
    let staging = store.objects().begin()?;
    let layer_id = staging.put_layer(&layer)?;
    let to = staging.put_snapshot(&Snapshot {
        python: head.python.clone(),
        layers: vec![layer_id],
        packages: head.packages.clone(),
    })?;
    staging.commit()?;
    let mut with_journal = Batch::default();
    for (tag, snapshot) in store.index().tags(&env.record.id)? {
        if snapshot == from {
            with_journal.put_tag(&env.record.id, &tag, &to);
            report.moved_tags.push(tag);
        } else if keeps_any(store, &snapshot, &dropped) {
            report.older_tags.push(tag);
        }
    }
    // The same files: the apply finds nothing to change, and the stat cache is stamped with `to`.
    let cache = load_stat_cache(store, &env.record.id);
    move_head(
        store,
        &mut env,
        Move {
            operation: "squash".to_owned(),
            message,
            to,
            difference: Difference::Trees {
                current: tree.clone(),
                target: Some(tree),
            },
            cache,
            with_journal,
        },
    )?;
    report.to = to;
    Ok(report)
}

/// Whether `snapshot`'s layers hold any of `objects` (a snapshot that cannot be read counts: it is
/// named rather than passed over).
fn keeps_any(
    store: &Store,
    snapshot: &SnapshotId,
    objects: &std::collections::BTreeSet<(store_format::ObjectId, bool)>,
) -> bool {
    let layers = store.snapshot(snapshot).and_then(|snapshot| {
        snapshot
            .layers
            .iter()
            .map(|id| store.objects().layer(id))
            .collect::<Result<Vec<_>>>()
    });
    match layers {
        Ok(layers) => file_objects(layers.iter())
            .keys()
            .any(|object| objects.contains(object)),
        Err(_) => true,
    }
}
