//! `blast packages` and `blast check`: the distributions of an environment's HEAD snapshot (the
//! committed state, read from the store), and the requirements among them that do not hold. Uncaptured
//! changes in the directory are not listed or checked, only named.

use std::collections::{BTreeSet, HashSet};
use std::str::FromStr;

use pep508_rs::pep440_rs::Version;
use serde::Serialize;
use store_format::{Node, SnapshotId};

use crate::conflicts::{self, Unsatisfied};
use crate::error::{Error, Result};
use crate::markers::marker_environment;
use crate::packages::{
    Distribution, Distributions, EntryPoint, PackageChange, RecordEntry, distributions_of,
};
use crate::store::{Env, Store};
use crate::tree::Tree;

#[derive(Debug, Serialize)]
pub struct PackagesReport {
    pub env: String,
    pub snapshot: SnapshotId,
    pub packages: Vec<PackageInfo>,
    /// How the directory's packages differ from HEAD's: changes not captured yet, not listed.
    pub uncaptured: Vec<PackageChange>,
    /// Files of `*.dist-info` directories that could not be read in full, each naming its directory.
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PackageInfo {
    pub name: String,
    pub version: String,
    pub summary: Option<String>,
    /// `Requires-Dist` as written, markers and extras included.
    pub requires: Vec<String>,
    pub console_scripts: Vec<EntryPoint>,
    pub gui_scripts: Vec<EntryPoint>,
    pub files: Vec<RecordEntry>,
    /// The sizes RECORD gives, added up.
    pub size: u64,
}

/// The distributions of the environment's HEAD snapshot.
pub fn packages(store: &Store, selector: Option<&str>) -> Result<PackagesReport> {
    let env = store.open_env(selector)?;
    let head = env.head()?;
    let (installed, uncaptured) = head_view(store, &env, &head)?;
    let packages = installed
        .found
        .into_iter()
        .map(|d| PackageInfo {
            name: d.name.to_string(),
            version: d.version.to_string(),
            summary: d.summary,
            requires: d.requires.into_iter().map(|r| r.written).collect(),
            console_scripts: d.console_scripts,
            gui_scripts: d.gui_scripts,
            size: d.files.iter().filter_map(|f| f.size).sum(),
            files: d.files,
        })
        .collect();
    Ok(PackagesReport {
        env: env.label().to_owned(),
        snapshot: head,
        packages,
        uncaptured,
        problems: installed.problems,
    })
}

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub env: String,
    pub snapshot: SnapshotId,
    /// How many distributions were checked.
    pub distributions: usize,
    pub unsatisfied: Vec<Unsatisfied>,
    /// pubgrub's account of the unsatisfied requirements; none when there are none.
    pub explanation: Option<String>,
    /// How the directory's packages differ from HEAD's: changes not captured yet, not checked.
    pub uncaptured: Vec<PackageChange>,
    /// Files of `*.dist-info` directories that could not be read in full.
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.unsatisfied.is_empty()
    }
}

/// Checks every requirement of the HEAD snapshot's distributions against the interpreter's markers.
/// The explanation may choose among the versions the environment's history has held.
pub fn check(store: &Store, selector: Option<&str>) -> Result<CheckReport> {
    let env = store.open_env(selector)?;
    let head = env.head()?;
    let (installed, uncaptured) = head_view(store, &env, &head)?;
    let markers = marker_environment(store.index(), &env.record.python)?;
    let unsatisfied = conflicts::unsatisfied(&installed.found, &markers);
    let explanation = if unsatisfied.is_empty() {
        None
    } else {
        let targets = unsatisfied.iter().map(|u| u.requires.as_str()).collect();
        let earlier = earlier_versions(store, &env, &installed.found, &targets)?;
        Some(conflicts::explain(
            &unsatisfied,
            &installed.found,
            &earlier,
            &markers,
        ))
    };
    Ok(CheckReport {
        env: env.label().to_owned(),
        snapshot: head,
        distributions: installed.found.len(),
        unsatisfied,
        explanation,
        uncaptured,
        problems: installed.problems,
    })
}

/// The distributions of HEAD, and how the directory's packages differ from HEAD's list.
fn head_view(
    store: &Store,
    env: &Env,
    head: &SnapshotId,
) -> Result<(Distributions, Vec<PackageChange>)> {
    let snapshot = store.snapshot(head)?;
    let installed = snapshot_distributions(store, env, &store.tree_of(&snapshot)?)?;
    let uncaptured = super::inspect::uncaptured_packages(store, env, head, &snapshot.packages);
    Ok((installed, uncaptured))
}

/// Reads the distributions of a snapshot's tree from the store, with the environment's own paths in
/// files that were stored with placeholders.
pub(crate) fn snapshot_distributions(
    store: &Store,
    env: &Env,
    tree: &Tree,
) -> Result<Distributions> {
    let placeholders = env.placeholders();
    distributions_of(tree, &env.record.python.purelib, |path, node| {
        let Node::File {
            object,
            relocatable,
            ..
        } = node
        else {
            return Ok(Vec::new());
        };
        let bytes = store.objects().read_object(object).map_err(|e| {
            Error::Invalid(format!(
                "cannot read `{path}` of environment `{}` from the store: {e}",
                env.label()
            ))
        })?;
        Ok(if *relocatable {
            placeholders.render_bytes(&bytes)
        } else {
            bytes
        })
    })
}

/// The other versions of `targets` that snapshots in the environment's history held, newest first.
/// A snapshot's tree is read only when its package list shows a version not seen yet.
fn earlier_versions(
    store: &Store,
    env: &Env,
    installed: &[Distribution],
    targets: &BTreeSet<&str>,
) -> Result<Vec<Distribution>> {
    let mut seen: HashSet<(String, Version)> = installed
        .iter()
        .map(|d| (d.name.to_string(), d.version.clone()))
        .collect();
    let mut visited = HashSet::new();
    let mut out = Vec::new();
    for entry in store.index().history(&env.record.id)?.iter().rev() {
        if !visited.insert(entry.to) {
            continue;
        }
        let Ok(snapshot) = store.snapshot(&entry.to) else {
            continue;
        };
        let new: Vec<(String, Version)> = snapshot
            .packages
            .iter()
            .filter(|p| targets.contains(p.name.as_str()))
            .filter_map(|p| Some((p.name.clone(), Version::from_str(&p.version).ok()?)))
            .filter(|key| !seen.contains(key))
            .collect();
        if new.is_empty() {
            continue;
        }
        // Only alternatives for the explanation: a snapshot that cannot be read is passed over.
        let Ok(earlier) = store
            .tree_of(&snapshot)
            .and_then(|tree| snapshot_distributions(store, env, &tree))
        else {
            continue;
        };
        for dist in earlier.found {
            let key = (dist.name.to_string(), dist.version.clone());
            if new.contains(&key) && seen.insert(key) {
                out.push(dist);
            }
        }
    }
    Ok(out)
}
