//! `blast tag`: an environment's tags, the names of its snapshots that `rollback`, `diff`, `export` and
//! `push` take and that keep their snapshots from `blast clean`. Listed, set on HEAD or any snapshot the
//! environment can name, moved only when asked, and deleted.

use std::collections::HashMap;

use serde::Serialize;
use store_format::SnapshotId;

use super::{resolve_snapshot, validate_tag};
use crate::error::{Error, Result};
use crate::index::Batch;
use crate::store::{Env, Store};

#[derive(Debug, Serialize)]
pub struct TagEntry {
    pub tag: String,
    pub snapshot: SnapshotId,
    /// The environment is at this snapshot.
    pub head: bool,
    /// The oldest history entry that moved the environment to the snapshot, the one that made it (a
    /// later rollback to it only went back), when history has one (`blast clean --keep` may have
    /// dropped it, and a snapshot of another environment has none).
    pub time: Option<String>,
    pub operation: Option<String>,
    pub message: Option<String>,
    /// Distributions the snapshot holds.
    pub packages: usize,
}

#[derive(Debug, Serialize)]
pub struct TagsReport {
    pub env: String,
    /// By name.
    pub tags: Vec<TagEntry>,
}

/// What `blast tag NAME` or `blast tag --delete` changed.
#[derive(Debug, Serialize)]
pub struct TagChange {
    pub env: String,
    pub tag: String,
    /// Where the tag is now (none: deleted).
    pub snapshot: Option<SnapshotId>,
    /// Where it was (none: it is new).
    pub was: Option<SnapshotId>,
}

/// The environment's tags, by name.
pub fn tags(store: &Store, selector: Option<&str>) -> Result<TagsReport> {
    let env = store.open_env_to_read(selector)?;
    let history = store.index().history(&env.record.id)?;
    let mut tags = Vec::new();
    for (tag, snapshot) in store.index().tags(&env.record.id)? {
        let entry = history.iter().find(|e| e.to == snapshot);
        tags.push(TagEntry {
            tag,
            snapshot,
            head: env.record.head == Some(snapshot),
            time: entry.map(|e| super::inspect::rfc3339(e.time_ms)),
            operation: entry.map(|e| e.operation.clone()),
            message: entry.and_then(|e| e.message.clone()),
            packages: store.snapshot(&snapshot)?.packages.len(),
        });
    }
    tags.sort_by(|a, b| a.tag.cmp(&b.tag));
    Ok(TagsReport {
        env: env.label().to_owned(),
        tags,
    })
}

/// Tags `target` (default HEAD: an id or prefix, a tag or `@~N`) as `tag`. A tag on another snapshot is
/// moved only with `force`; on the same one, nothing changes.
pub fn tag(
    store: &Store,
    selector: Option<&str>,
    tag: &str,
    target: Option<&str>,
    force: bool,
) -> Result<TagChange> {
    validate_tag(tag)?;
    let env = store.open_env(selector)?;
    let history = store.index().history(&env.record.id)?;
    let snapshot = match target {
        Some(query) => resolve_snapshot(store, &env.record.id, env.label(), &history, query)?,
        None => env.head()?,
    };
    // A tag is for rolling back to: a snapshot for another interpreter could never be.
    super::check_runs_on(
        &env,
        &store.snapshot(&snapshot)?,
        "tag it in an environment on a matching interpreter",
    )?;
    let was = tags_of(store, &env)?.remove(tag);
    if let Some(was) = was
        && was != snapshot
        && !force
    {
        return Err(Error::TagTaken {
            env: env.label().to_owned(),
            tag: tag.to_owned(),
            snapshot: was.short(),
        });
    }
    if was != Some(snapshot) {
        let mut batch = Batch::default();
        batch.put_tag(&env.record.id, tag, &snapshot);
        store.index().write(batch)?;
    }
    Ok(TagChange {
        env: env.label().to_owned(),
        tag: tag.to_owned(),
        snapshot: Some(snapshot),
        was,
    })
}

/// Deletes the tags, all or (when one is unknown) none; their snapshots stay while history or another
/// root needs them, and go with the next `blast clean` otherwise.
pub fn untag(store: &Store, selector: Option<&str>, names: &[String]) -> Result<Vec<TagChange>> {
    let env = store.open_env(selector)?;
    let mut tags = tags_of(store, &env)?;
    let mut batch = Batch::default();
    let mut changes = Vec::new();
    for tag in names {
        if changes.iter().any(|c: &TagChange| &c.tag == tag) {
            continue;
        }
        let Some(was) = tags.remove(tag) else {
            return Err(Error::TagNotFound {
                env: env.label().to_owned(),
                tag: tag.clone(),
            });
        };
        batch.delete_tag(&env.record.id, tag);
        changes.push(TagChange {
            env: env.label().to_owned(),
            tag: tag.clone(),
            snapshot: None,
            was: Some(was),
        });
    }
    store.index().write(batch)?;
    Ok(changes)
}

fn tags_of(store: &Store, env: &Env) -> Result<HashMap<String, SnapshotId>> {
    Ok(store.index().tags(&env.record.id)?.into_iter().collect())
}
