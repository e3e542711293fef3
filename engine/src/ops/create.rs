//! `blast create` and `blast remove`: an environment's first snapshot is the venv blast writes itself.

use std::path::{Path, PathBuf};

use serde::Serialize;
use store_format::{Layer, LayerId, Node, Snapshot, SnapshotId};

use crate::capture::StatCache;
use crate::crash;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::resolve_path;
use crate::index::{Batch, EnvRecord};
use crate::lock::DirClaim;
use crate::objects::{Staging, unique_name};
use crate::packages::packages_of;
use crate::python::{self, PythonInfo};
use crate::store::{Env, Store};
use crate::transition::{Difference, Move, move_head};
use crate::tree::Tree;
use crate::venv;

#[derive(Debug, Default, Clone)]
pub struct CreateOptions {
    pub name: Option<String>,
    pub path: Option<PathBuf>,
    pub python: Option<String>,
    pub seed: bool,
}

#[derive(Debug, Serialize)]
pub struct CreateReport {
    pub name: Option<String>,
    pub path: String,
    pub snapshot: SnapshotId,
    pub python: String,
    /// Files and symlinks written.
    pub files: usize,
}

pub fn create(store: &Store, opts: &CreateOptions) -> Result<CreateReport> {
    if let Some(name) = &opts.name {
        free_env_name(store, name)?;
    }
    let path = match (&opts.path, &opts.name) {
        (Some(p), _) => resolve_path(p)?,
        (None, Some(name)) => store.named_env_path(name),
        (None, None) => resolve_path(std::path::Path::new(".venv"))?,
    };
    let (path_str, _claim) = claim_env_path(store, &path, opts.name.as_deref())?;
    let python = python::find(store.index(), opts.python.as_deref())?;
    let snapshot_id = first_snapshot(store, &python, opts.seed)?;

    let record = EnvRecord {
        id: unique_name(),
        name: opts.name.clone(),
        path: path_str.clone(),
        head: None,
        python: python.clone(),
        created: jiff::Timestamp::now().as_second(),
    };
    // The record lands with the journal, so a creation killed midway is finished by the next command.
    let mut with_journal = Batch::default();
    with_journal.put_env(&record);
    let mut env = Env {
        _lock: store.env_lock(&record.id)?,
        record,
    };
    let stats = move_head(
        store,
        &mut env,
        Move {
            operation: "create".into(),
            message: None,
            to: snapshot_id,
            difference: Difference::Trees {
                current: Tree::default(),
                target: None,
            },
            cache: StatCache::default(),
            with_journal,
        },
    )?;
    Ok(CreateReport {
        name: opts.name.clone(),
        path: path_str,
        snapshot: snapshot_id,
        python: python.describe(),
        files: stats.written,
    })
}

/// Builds (or finds, when this interpreter has been seen) the venv's layers and their snapshot.
fn first_snapshot(store: &Store, python: &PythonInfo, seed: bool) -> Result<SnapshotId> {
    let staging = store.objects().begin()?;
    let base = venv::base_layer(&staging, python)?;
    let mut layers = vec![staging.put_layer(&base)?];
    let mut tree = Tree::default();
    tree.apply(&base).map_err(Error::Invalid)?;
    if seed {
        let (id, layer) = seed_layer(store, &staging, python)?;
        tree.apply(&layer).map_err(Error::Invalid)?;
        layers.push(id);
    }
    let packages = packages_of(&tree, &python.purelib, |_, node| match node {
        Node::File { object, .. } => staging.read_object(object),
        _ => Ok(Vec::new()),
    })?;
    let snapshot = Snapshot {
        python: python.tag.clone(),
        layers,
        packages,
    };
    let id = staging.put_snapshot(&snapshot)?;
    staging.commit()?;
    Ok(id)
}

/// How `venv::wheel_layer` lays a wheel out, in the keys of the layers it made: a layer made another way
/// (pip's scripts named after the Python that built its wheel, before 2) is not used again.
const SEED_LAYOUT: u32 = 2;

/// The pip layer for this interpreter's bundled wheel, unpacked once and then reused by id.
fn seed_layer(
    store: &Store,
    staging: &Staging<'_>,
    python: &PythonInfo,
) -> Result<(LayerId, Layer)> {
    let wheel = venv::bundled_pip_wheel(python)?;
    let bytes = std::fs::read(&wheel).at("reading wheel", &wheel)?;
    let key = format!(
        "{}|{}|{SEED_LAYOUT}",
        blake3::hash(&bytes).to_hex(),
        python.purelib
    );
    if let Some(id) = store.index().seed_layer(&key)?
        && let Ok(layer) = store.objects().layer(&id)
        && layer
            .changes
            .values()
            .all(|c| !matches!(c, store_format::Change::Put(Node::File { object, executable, .. }) if !store.objects().has_object(object, *executable)))
    {
        return Ok((id, layer));
    }
    let layer = venv::wheel_layer(staging, python, &wheel)?;
    let id = staging.put_layer(&layer)?;
    let mut batch = Batch::default();
    batch.put_seed_layer(&key, &id);
    store.index().write(batch)?;
    Ok((id, layer))
}

/// Removes the environment's directory and everything the index keeps about it. Its snapshots stay in
/// the store until `blast clean`. Unless `force`, it refuses while processes run from the directory or
/// it holds what no snapshot has (the user's work, or files made at its path since), naming them.
/// In a copy of a store, an environment whose directory the original keeps is only forgotten.
pub fn remove(store: &Store, selector: &str, force: bool) -> Result<Removal> {
    let found = store.find_env(Some(selector))?;
    // A move a killed command began is not finished: it would only write what goes anyway. A move of
    // the directory is, as it tells where the directory is.
    let mut env = store.lock_env_as_found(&found.id)?;
    // In a copy of a store, what the other store keeps is left as it is, unfinished moves too.
    let kept = store.original_keeps(&env.record);
    if kept.is_none() {
        crate::dir_move::finish_interrupted(store, &mut env)?;
    }
    // A named environment of a moved store (or a copy) has its directory here, not where it was made.
    let moved = store.moved_dir(&env.record);
    if let (Some(original), None) = (&kept, &moved) {
        forget(store, &env.record)?;
        return Ok(Removal {
            record: env.record.clone(),
            path: env.record.path.clone(),
            kept_by: Some(original.clone()),
        });
    }
    let root = moved.as_deref().unwrap_or(env.root());
    // Found by exploratory testing: the check below took the link for a file where the directory was,
    // and `--force` deleted the link only, leaving the directory it led to.
    if let Ok(target) = std::fs::read_link(root) {
        let cmd = crate::shell::word(env.label());
        let real = std::fs::canonicalize(root).unwrap_or_else(|_| target.clone());
        return Err(Error::Invalid(format!(
            "`{}`, the directory of `{}`, is a symlink to `{}`: blast removes directories, not links \
             to them; remove the link (`rm {}`), then `blast move -e {cmd} {}` takes the directory \
             where it is (and `blast remove {cmd}` removes it), or `blast remove {cmd}` forgets the \
             environment",
            root.display(),
            env.label(),
            target.display(),
            crate::shell::word(&root.display().to_string()),
            crate::shell::word(&real.display().to_string()),
        )));
    }
    // Taken while the environment goes: a `blast run` starting meanwhile waits, then finds it gone.
    let runs = crate::lock::try_acquire(
        &store.run_lock_path(&env.record.id),
        crate::lock::LockMode::Exclusive,
    )?;
    if !force {
        let mut running: Vec<String> = crate::processes::running_from(root)
            .iter()
            .map(|p| format!("{} ({})", p.pid, p.command))
            .collect();
        if runs.is_none() {
            running.push("a `blast run` on it (in another terminal?)".to_owned());
        }
        if !running.is_empty() {
            return Err(Error::EnvInUse {
                env: env.label().to_owned(),
                processes: running,
            });
        }
        let paths = crate::transition::unsaved_paths(store, &env, root)?;
        if !paths.is_empty() {
            return Err(Error::UnsavedFiles {
                env: env.label().to_owned(),
                path: root.to_owned(),
                paths,
            });
        }
    }
    crate::session::refuse_while_running(store.home(), &env.record)?;
    // Renamed aside first, in one step (where the filesystem lets it: not a mount point, nor in a
    // read-only parent), under a name of the environment's id: a removal killed or failing midway
    // leaves the environment whole, or its directory gone and what is left of it set aside, which the
    // next `remove` deletes; never a half-deleted directory in the environment's place.
    let aside = root.with_file_name(format!(".blast-removing-{}", env.record.id));
    if root.exists() && aside.symlink_metadata().is_ok() {
        // Left by a removal killed or failing after the rename, before the directory was made again:
        // deleted first, or it would stay behind for good, the environment forgotten.
        crate::fsutil::remove_tree(&aside).map_err(|e| {
            Error::Invalid(format!(
                "{e}; `{}` is left from an earlier removal of `{}`: fix what stops its deletion, \
                 then `blast remove` again",
                aside.display(),
                env.label()
            ))
        })?;
    }
    let set_aside = match std::fs::rename(root, &aside) {
        Ok(()) => true,
        Err(_) => !root.exists() && aside.exists(),
    };
    crash::point("remove-aside");
    // Set aside, it is deleted while the environment is still recorded: a deletion that fails or is
    // killed leaves the environment's directory gone (what `status` says), and the next `remove`
    // finishes it. In place, it is deleted once the environment is forgotten, as a directory that
    // cannot go (a mount point) would otherwise keep it recorded for good.
    if set_aside {
        crate::fsutil::remove_tree(&aside).map_err(|e| {
            Error::Invalid(format!(
                "{e}; `{}` is still recorded, its files set aside at `{}`: fix what stops their \
                 removal, then `blast remove` again",
                env.label(),
                aside.display()
            ))
        })?;
    }
    forget(store, &env.record)?;
    if !set_aside && let Err(e) = crate::fsutil::remove_tree(root) {
        // A mount point stays, emptied: that is all that can go.
        let emptied = std::fs::read_dir(root).is_ok_and(|mut entries| entries.next().is_none());
        if !emptied {
            return Err(Error::Invalid(format!(
                "{e}; `{}` is removed from blast, but not all its files could be deleted: delete \
                 what is left at `{}` by hand",
                env.label(),
                root.display()
            )));
        }
    }
    Ok(Removal {
        record: env.record.clone(),
        path: root.display().to_string(),
        kept_by: None,
    })
}

/// What `remove` did.
pub struct Removal {
    pub record: EnvRecord,
    /// The directory removed (or left, with `kept_by`): where a moved or copied store has it.
    pub path: String,
    /// The store that keeps the directory, which stays: this store is a copy of it.
    pub kept_by: Option<PathBuf>,
}

/// Deletes what the store keeps about the environment (not its snapshots, which `blast clean` takes).
fn forget(store: &Store, record: &EnvRecord) -> Result<()> {
    let history = store.index().history(&record.id)?;
    let tags = store.index().tags(&record.id)?;
    let mut batch = Batch::default();
    batch.delete_env(record, &history, &tags);
    store.index().write(batch)?;
    crate::fsutil::remove_file_if_exists(&store.stat_cache_path(&record.id))?;
    crate::fsutil::remove_file_if_exists(&store.env_lock_path(&record.id))?;
    crate::fsutil::remove_file_if_exists(&crate::session::lock_path(store.home(), &record.id))?;
    crate::fsutil::remove_file_if_exists(&store.run_lock_path(&record.id))?;
    crate::imports::remove_records(store, &record.id)?;
    Ok(())
}

/// Refuses `name` for a new environment unless it is valid and no environment has it.
pub(crate) fn free_env_name(store: &Store, name: &str) -> Result<()> {
    validate_env_name(name)?;
    if store.index().env_by_name(name)?.is_some() {
        return Err(Error::EnvNameTaken(name.to_owned()));
    }
    Ok(())
}

/// What a path in single quotes (activate scripts) or double quotes (pip's `/bin/sh` preamble of a
/// console script, where the path holds a space) cannot hold as it is.
const SHELL_QUOTING: &str = "'\"`$\\";

/// Refuses `path` (resolved) for a new environment (named `name`, if it has a name) unless no
/// environment has it, nothing but an empty directory is there, and blast can keep it whole there: not
/// inside the store, whose cleanup removes what it does not know (its `envs/NAME` excepted, for the
/// environment named NAME), nor inside another environment or around one, whose captures and rollbacks
/// would take the other's files for their own. Returns it as the index keeps it.
pub(crate) fn free_env_path(store: &Store, path: &Path, name: Option<&str>) -> Result<String> {
    env_path_allowed(store, path, name, false)
}

/// As [`free_env_path`], and claims the path for the new environment until the claim is dropped: another
/// store's blast cannot make an environment there meanwhile (see [`crate::lock::claim_dir`]).
pub(crate) fn claim_env_path(
    store: &Store,
    path: &Path,
    name: Option<&str>,
) -> Result<(String, DirClaim)> {
    // Refused before anything is made there.
    free_env_path(store, path, name)?;
    let claim = crate::lock::claim_dir(path, |wait| store.index().released(wait)?)?;
    crash::point("path-claimed");
    // Again, under the claim: an environment may have been made there while this one waited.
    Ok((free_env_path(store, path, name)?, claim))
}

/// As [`free_env_path`]; with `moved_there`, the directory may hold what is there (an environment
/// moved there by hand, which `blast move` takes).
pub(crate) fn env_path_allowed(
    store: &Store,
    path: &Path,
    name: Option<&str>,
    moved_there: bool,
) -> Result<String> {
    let path_str = path
        .to_str()
        .ok_or_else(|| Error::NonUtf8Path(path.to_owned()))?
        .to_owned();
    if let Some(other) = store.index().env_by_path(&path_str)? {
        return Err(Error::PathTaken {
            path: path.to_owned(),
            env: other.label().to_owned(),
        });
    }
    if !moved_there && is_nonempty(path) {
        return Err(Error::EnvExists(path.to_owned()));
    }
    let refuse = |why: String| {
        Err(Error::EnvPathRefused {
            path: path.to_owned(),
            why,
        })
    };
    // The directories on the way are made as needed; one that is a file would fail there with a
    // bare "Not a directory".
    if let Some(blocker) = path
        .ancestors()
        .skip(1)
        .find(|dir| dir.symlink_metadata().is_ok())
        .filter(|dir| !dir.is_dir())
    {
        return refuse(format!(
            "`{}` on its way is not a directory",
            blocker.display()
        ));
    }
    // The path is written into activate scripts and shebangs, and shown in every report.
    if path_str.chars().any(char::is_control) {
        return refuse(
            "it holds a control character (a newline, an escape), which scripts and terminals would \
             take for something else"
                .into(),
        );
    }
    if let Some(c) = path_str.chars().find(|c| SHELL_QUOTING.contains(*c)) {
        return refuse(format!(
            "it holds {c} (one of {}), which the shell would read in the quotes that activate \
             scripts and console scripts put around it",
            SHELL_QUOTING
                .chars()
                .map(String::from)
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    if path_str.contains(':') {
        return refuse(
            "it holds `:`, which separates the directories of PATH: activation puts the \
             environment's `bin` there, where it would be two directories that do not exist, and \
             `pip` and `python` would be the base interpreter's (`python -m venv` refuses it too)"
                .into(),
        );
    }
    let home = resolve_path(store.home())?;
    if home.starts_with(path) {
        return refuse(format!("it holds blast's store `{}`", home.display()));
    }
    let envs = home.join("envs");
    let own = name.map(|name| envs.join(name));
    if path.starts_with(&envs) && own.as_deref() != Some(path) {
        // Where `blast create NAME` would put a named environment, or inside one.
        return refuse(format!(
            "it is in `{}`, where each named environment NAME has `envs/NAME`: give this one a \
             path outside blast's store",
            envs.display()
        ));
    }
    if path.starts_with(&home) && !path.starts_with(&envs) {
        return refuse(format!("it is inside blast's store `{}`", home.display()));
    }
    for other in store.index().envs()? {
        let other_path = Path::new(&other.path);
        if path.starts_with(other_path) {
            return refuse(format!("it is inside the environment `{}`", other.label()));
        }
        if other_path.starts_with(path) {
            return refuse(format!("it holds the environment `{}`", other.label()));
        }
    }
    Ok(path_str)
}

/// Whether something other than an empty directory is at `path`: a symlink that leads nowhere too.
pub(crate) fn is_nonempty(path: &std::path::Path) -> bool {
    match std::fs::read_dir(path) {
        Ok(mut entries) => entries.next().is_some(),
        Err(_) => path.symlink_metadata().is_ok(),
    }
}

pub(crate) fn validate_env_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadEnvName(name.to_owned()))
    }
}
