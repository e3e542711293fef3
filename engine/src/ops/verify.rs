//! `blast verify`: rehash objects, layers and snapshots in parallel, find every one missing that a
//! snapshot an environment can move to needs (its HEAD, history and tags), and compare environment
//! directories with their HEAD byte for byte (no stat cache: a verify trusts nothing it has not read).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;
use store_format::{LayerId, Node, ObjectId, SnapshotId};

use crate::capture::{self, StatCache};
use crate::error::{IoContext, Result};
use crate::index::EnvRecord;
use crate::objects::ObjectStore;
use crate::store::Store;
use crate::transition::save_stat_cache;

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub objects_checked: usize,
    /// Store files whose bytes do not hash to their name.
    pub corrupt: Vec<String>,
    /// Object files whose mode is not their variant's (0444, 0555 for `.x`), with the mode found.
    pub wrong_mode: Vec<String>,
    /// Objects, layers or snapshots that an environment's HEAD, history or tags need and the store
    /// lacks, each with what needs it.
    pub missing: Vec<String>,
    pub envs: Vec<EnvVerdict>,
}

#[derive(Debug, Serialize)]
pub struct EnvVerdict {
    pub env: String,
    pub head: Option<SnapshotId>,
    /// `added`/`removed`/`modified` paths where the directory differs from HEAD.
    pub drifted: Vec<super::FileChange>,
    /// What the directory holds that no snapshot can (a named pipe, a socket…), left out of `drifted`.
    pub uncapturable: Vec<super::Uncapturable>,
    pub error: Option<String>,
    /// In a copy of a store: the store that keeps the directory, which is not compared.
    pub kept_by: Option<String>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty()
            && self.wrong_mode.is_empty()
            && self.missing.is_empty()
            && self
                .envs
                .iter()
                .all(|e| e.drifted.is_empty() && e.uncapturable.is_empty() && e.error.is_none())
    }
}

/// Verifies one environment (and the objects it needs) or, without a selector, the whole store.
pub fn verify(store: &Store, selector: Option<&str>) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let envs: Vec<EnvRecord> = match selector {
        Some(_) => vec![store.open_env(selector)?.record],
        None => store.index().envs()?,
    };
    let (needed, users) = needed_files(
        store,
        &roots(store, &envs, selector.is_none())?,
        &mut report,
    );
    // An object named with the first file that needs it: what to reinstall, where.
    let named = |path: &Path, expected: &Expected| match expected {
        Expected::Object(id) => match users.get(id) {
            Some(user) => format!("{} ({user})", path.display()),
            None => path.display().to_string(),
        },
        _ => path.display().to_string(),
    };
    let files: Vec<(PathBuf, Expected)> = match selector {
        Some(_) => needed,
        None => all_store_files(store)?,
    };
    report.objects_checked = files.len();
    report.corrupt = files
        .par_iter()
        .filter_map(|(path, expected)| match hashes_to(path, expected) {
            Ok(true) => None,
            Ok(false) => Some(named(path, expected)),
            Err(e) => Some(format!("{} ({e})", named(path, expected))),
        })
        .collect();
    report.corrupt.sort();
    // A chmod of an environment's hardlinked file changes its object, and every link to it.
    report.wrong_mode = files
        .iter()
        .filter_map(|(path, expected)| {
            let Expected::Object(_) = expected else {
                return None;
            };
            let wanted = ObjectStore::object_mode(path.extension().is_some_and(|x| x == "x"));
            let mode = fs::symlink_metadata(path).ok()?.permissions().mode() & 0o7777;
            (mode != wanted).then(|| {
                format!(
                    "{} (mode {mode:04o}, not {wanted:04o})",
                    named(path, expected)
                )
            })
        })
        .collect();
    for record in envs {
        // In a copy of a store, a directory another store keeps is that store's to check (and this
        // store's copy of one, until `blast move` takes it, names the other's path).
        if selector.is_none()
            && let Some(original) = store.original_keeps(&record)
        {
            report.envs.push(EnvVerdict {
                env: record.label().to_owned(),
                head: record.head,
                drifted: Vec::new(),
                uncapturable: Vec::new(),
                error: None,
                kept_by: Some(original.display().to_string()),
            });
            continue;
        }
        // One environment that cannot be opened (a move it cannot finish) stops no other check.
        let verdict = match store.lock_env(&record.id, false) {
            Ok(env) => check_env(store, &env.record, env.placeholders()),
            Err(e) if selector.is_none() => EnvVerdict {
                env: record.label().to_owned(),
                head: record.head,
                drifted: Vec::new(),
                uncapturable: Vec::new(),
                error: Some(e.to_string()),
                kept_by: None,
            },
            Err(e) => return Err(e),
        };
        report.envs.push(verdict);
    }
    Ok(report)
}

enum Expected {
    Object(ObjectId),
    Layer(LayerId),
    Snapshot(SnapshotId),
}

fn hashes_to(path: &Path, expected: &Expected) -> std::io::Result<bool> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap(path)?;
    let hash = hasher.finalize();
    Ok(match expected {
        Expected::Object(id) => ObjectId::from(hash) == *id,
        Expected::Layer(id) => LayerId::from(hash) == *id,
        Expected::Snapshot(id) => SnapshotId::from(hash) == *id,
    })
}

/// Every object, layer and snapshot file in the store, named by what it should hash to.
fn all_store_files(store: &Store) -> Result<Vec<(PathBuf, Expected)>> {
    let objects = store.objects();
    let mut out = Vec::new();
    for shard in fs::read_dir(objects.objects_dir()).at("listing", objects.objects_dir())? {
        let shard = shard.at("listing", objects.objects_dir())?.path();
        let prefix = shard
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        for entry in fs::read_dir(&shard).at("listing", &shard)? {
            let path = entry.at("listing", &shard)?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let hex = format!("{prefix}{}", name.strip_suffix(".x").unwrap_or(name));
            if let Ok(id) = hex.parse() {
                out.push((path, Expected::Object(id)));
            }
        }
    }
    for (dir, is_layer) in [
        (objects.layers_dir(), true),
        (objects.snapshots_dir(), false),
    ] {
        for entry in fs::read_dir(dir).at("listing", dir)? {
            let path = entry.at("listing", dir)?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if is_layer && let Ok(id) = name.parse() {
                out.push((path, Expected::Layer(id)));
            } else if let Ok(id) = name.parse() {
                out.push((path, Expected::Snapshot(id)));
            }
        }
    }
    Ok(out)
}

/// The snapshots the environments can move to, each with who needs it: HEADs, history and tags; with
/// `journals`, the two ends of each unfinished move too.
fn roots(store: &Store, envs: &[EnvRecord], journals: bool) -> Result<Vec<(SnapshotId, String)>> {
    let mut roots = Vec::new();
    for env in envs {
        let label = env.label();
        roots.extend(env.head.map(|head| (head, format!("HEAD of `{label}`"))));
        for (tag, id) in store.index().tags(&env.id)? {
            roots.push((id, format!("tag `{tag}` of `{label}`")));
        }
        for entry in store.index().history(&env.id)? {
            roots.push((entry.to, format!("the history of `{label}`")));
        }
    }
    if journals {
        for (env_id, journal) in store.index().journals()? {
            for id in journal.from.into_iter().chain([journal.to]) {
                roots.push((id, format!("an unfinished move of environment {env_id}")));
            }
        }
    }
    Ok(roots)
}

/// The store files `roots` need, and each object's first user (`file` of a snapshot, and what needs
/// that); what is missing goes to the report, with the first root that needs it.
fn needed_files(
    store: &Store,
    roots: &[(SnapshotId, String)],
    report: &mut VerifyReport,
) -> (Vec<(PathBuf, Expected)>, HashMap<ObjectId, String>) {
    let objects = store.objects();
    let mut out = Vec::new();
    let mut users = HashMap::new();
    let (mut snapshots, mut layers, mut files) = (HashSet::new(), HashSet::new(), HashSet::new());
    for (id, needed_by) in roots {
        if !snapshots.insert(*id) {
            continue;
        }
        let path = objects.snapshot_path(id);
        if !path.exists() {
            report.missing.push(format!("snapshot {id} ({needed_by})"));
            continue;
        }
        out.push((path, Expected::Snapshot(*id)));
        // One that does not decode is corrupt: its hash says so.
        let Ok(snapshot) = store.snapshot(id) else {
            continue;
        };
        for layer_id in snapshot.layers {
            if !layers.insert(layer_id) {
                continue;
            }
            let path = objects.layer_path(&layer_id);
            if !path.exists() {
                report
                    .missing
                    .push(format!("layer {layer_id} (of snapshot {id}, {needed_by})"));
                continue;
            }
            out.push((path, Expected::Layer(layer_id)));
            let Ok(layer) = objects.layer(&layer_id) else {
                continue;
            };
            for (path, change) in &layer.changes {
                let store_format::Change::Put(Node::File {
                    object, executable, ..
                }) = change
                else {
                    continue;
                };
                if !files.insert((*object, *executable)) {
                    continue;
                }
                users.entry(*object).or_insert_with(|| {
                    format!(
                        "`{path}` as layer {} of snapshot {} writes it; {needed_by}",
                        layer_id.short(),
                        id.short()
                    )
                });
                match objects.existing_object_path(object, *executable) {
                    Some(p) => out.push((p, Expected::Object(*object))),
                    None => report.missing.push(format!(
                        "object {object} (`{path}` as layer {layer_id} of snapshot {id} writes it; {needed_by})"
                    )),
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup_by(|a, b| a.0 == b.0);
    (out, users)
}

fn check_env(
    store: &Store,
    env: &EnvRecord,
    placeholders: store_format::Placeholders,
) -> EnvVerdict {
    let mut verdict = EnvVerdict {
        env: env.label().to_owned(),
        head: env.head,
        drifted: Vec::new(),
        uncapturable: Vec::new(),
        error: None,
        kept_by: None,
    };
    type Found = (Vec<super::FileChange>, Vec<super::Uncapturable>);
    let result = (|| -> Result<Found> {
        let head = env
            .head
            .ok_or_else(|| crate::Error::Invalid("no snapshot yet".into()))?;
        let head_tree = store.tree_of(&store.snapshot(&head)?)?;
        // Gone, said as every other command says it (found by exploratory testing: the OS error alone).
        let root = env.directory()?;
        // What no snapshot can hold is named beside the rest (found by exploratory testing: a named
        // pipe stopped the check, hiding the files that drifted).
        let (scan, unstorable) =
            capture::scan_leaving_out_unstorable(root, StatCache::default(), &placeholders)?;
        let uncapturable: Vec<super::Uncapturable> = unstorable
            .into_iter()
            .map(|error| super::Uncapturable::of(root, error))
            .collect::<Result<_>>()?;
        let drifted =
            super::inspect::file_changes_but_unread(&head_tree, scan.tree(), &uncapturable);
        // Files whose bytes changed without their stat (written in place through a link to a damaged
        // object) are known by content alone: the cache this scan built records them as they are, so
        // that `status` and `rollback --force HEAD` see them too, not only the next `verify`.
        if !drifted.is_empty() {
            // Marked as written in this boot: what it read may be an unsynced apply's, in the page
            // cache, and the cache that could have said so may be the one that was unreadable.
            let mut cache = scan.into_cache();
            if let Some(boot) = crate::fsutil::boot_id() {
                cache.mark_unsynced(boot);
            }
            save_stat_cache(store, &env.id, &cache);
        }
        Ok((drifted, uncapturable))
    })();
    match result {
        Ok((drifted, uncapturable)) => {
            verdict.drifted = drifted;
            verdict.uncapturable = uncapturable;
        }
        Err(e) => verdict.error = Some(e.to_string()),
    }
    verdict
}
