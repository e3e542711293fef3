//! `blast move`: an environment goes to another path with its history, or is taken where it was moved
//! by hand (a project directory renamed, say); the files that name its path are written for the new one
//! (the crash-safe part is [`crate::dir_move`]).

use std::path::Path;

use serde::Serialize;

use crate::capture;
use crate::dir_move::{self, Way};
use crate::error::{Error, Result};
use crate::index::EnvRecord;
use crate::store::{Env, Store};
use crate::transition::load_stat_cache;
use crate::tree::Tree;

#[derive(Debug, Serialize)]
pub struct RelocateReport {
    pub env: String,
    pub from: String,
    pub to: String,
    /// How the directory got there; `None` when it was there already.
    pub way: Option<Way>,
    /// Files written again for the new path.
    pub rewritten: usize,
    /// Paths where the directory differs from HEAD, kept as they were (a forced move).
    pub uncaptured: Vec<String>,
    /// The old path's directory, left as it is: another directory is there now (a new venv made at
    /// the path of the environment moved by hand), and the environment was taken at `to`.
    pub left_at_from: bool,
}

/// Moves the environment `selector` names to `to`; without `selector`, the environment whose directory
/// is gone and is found at `to` as its HEAD has it, else `./.venv`. Unless `force`, refuses a
/// directory that differs from HEAD (uncaptured changes, or a directory at `to` that may not be the
/// environment) and processes running from it; with `force`, what differs is kept as it is.
pub fn relocate(
    store: &Store,
    selector: Option<&str>,
    to: &Path,
    force: bool,
) -> Result<RelocateReport> {
    let to = crate::fsutil::resolve_path(to)?;
    let found = match selector {
        Some(_) => store.find_env(selector)?,
        // An environment moved there by hand first: `./.venv` could not move onto it anyway.
        None => match moved_here(store, &to)? {
            Some(found) => found,
            None => match store.find_env(None) {
                Err(unselected @ (Error::NoEnvSelected | Error::EnvMovedAway { .. })) => {
                    return Err(match to.join("pyvenv.cfg").is_file() {
                        true => Error::MovedWhich {
                            path: to.display().to_string(),
                            why: ", and no environment's directory is gone".to_owned(),
                        },
                        false => unselected,
                    });
                }
                found => found?,
            },
        },
    };
    let mut env = store.lock_env_moving_to(&found.id, false, Some(&to))?;
    let from = env.root().to_owned();
    let mut report = RelocateReport {
        env: env.label().to_owned(),
        from: env.record.path.clone(),
        to: to.display().to_string(),
        way: None,
        rewritten: 0,
        uncaptured: Vec::new(),
        left_at_from: false,
    };
    if std::fs::canonicalize(&from).is_ok_and(|real| real == to) {
        return Ok(report);
    }
    // In a copy of a store, the directory at the recorded path is the other store's: this store's is
    // the one at `to` (`envs/NAME`).
    let kept_elsewhere = store.original_keeps(&env.record).is_some();
    let old_there = from.is_dir() && !kept_elsewhere;
    // A file, or a symlink, at `to` is something there too, and no environment moved there.
    let new_there = super::create::is_nonempty(&to);
    let name = env.record.name.clone();
    let name = name.as_deref();
    let to_str = super::create::env_path_allowed(store, &to, name, new_there)?;
    let head = store.tree_of(&store.snapshot(&env.head()?)?)?;
    // The environment moved by hand, and another directory made at its old path since (found by
    // exploratory testing: every way out was refused but moving that directory away by hand): taken
    // at `to` when that holds HEAD exactly. What the old path holds stays there, untouched (the
    // report says so); its inode cannot tell which is the environment's, as a `status` of the old
    // path records the new directory's in the stat cache.
    let moved_past_new = old_there
        && new_there
        && to.is_dir()
        && differences(store, &env, &to, &env.record.path, &head).is_ok_and(|d| d.is_empty());
    // Held to the end: a `blast run` starting meanwhile waits, then finds the environment moved.
    let used = if kept_elsewhere || moved_past_new {
        &to
    } else {
        &from
    };
    let _runs = check_unused(store, &env, used, force)?;
    crate::transition::refuse_long_paths(&to, head.entries.keys())?;
    // A new path stays claimed until the directory is there (and, made for a move that fails, goes).
    let (way, _claim) = match (old_there, new_there) {
        (true, true) if moved_past_new => {
            report.left_at_from = true;
            (Way::Adopted, None)
        }
        (true, true) => return Err(Error::EnvExists(to)),
        (false, true) if !to.is_dir() => return Err(Error::EnvExists(to)),
        (true, false) => {
            report.uncaptured = differences(store, &env, &from, &env.record.path, &head)?;
            if !force && !report.uncaptured.is_empty() {
                return Err(Error::MoveUncaptured {
                    env: env.label().to_owned(),
                    paths: std::mem::take(&mut report.uncaptured),
                });
            }
            let (_, claim) = super::create::claim_env_path(store, &to, name)?;
            match same_filesystem(&from, &to) {
                true => (Way::Renamed, Some(claim)),
                false => (Way::Copied, Some(claim)),
            }
        }
        (false, true) => {
            report.uncaptured = differences(store, &env, &to, &env.record.path, &head)?;
            if !force && !report.uncaptured.is_empty() {
                return Err(Error::NotMovedHere {
                    env: env.label().to_owned(),
                    path: to_str,
                    paths: std::mem::take(&mut report.uncaptured),
                });
            }
            (Way::Adopted, None)
        }
        // Nothing at either path: HEAD is made at the new one.
        (false, false) => (
            Way::Copied,
            Some(super::create::claim_env_path(store, &to, name)?.1),
        ),
    };
    report.rewritten = dir_move::relocate(store, &mut env, to_str, way, &report.uncaptured)?;
    report.way = Some(way);
    Ok(report)
}

/// Whether a rename can take `from` to `to`: both on one filesystem (`to`'s nearest existing ancestor
/// tells). A rename across mounts of one filesystem fails all the same, and is then copied.
fn same_filesystem(from: &Path, to: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(from) = from.metadata() else {
        return false;
    };
    to.ancestors()
        .find_map(|dir| dir.metadata().ok())
        .is_some_and(|meta| meta.dev() == from.dev())
}

/// Refuses a move from under a live session, a `blast run`, or, unless `force`, processes running
/// from the directory (their interpreter's paths would lead nowhere). Returns the lock that keeps
/// `blast run` out.
fn check_unused(
    store: &Store,
    env: &Env,
    from: &Path,
    force: bool,
) -> Result<crate::lock::LockGuard> {
    crate::session::refuse_while_running(store.home(), &env.record)?;
    let Some(runs) = crate::lock::try_acquire(
        &store.run_lock_path(&env.record.id),
        crate::lock::LockMode::Exclusive,
    )?
    else {
        return Err(Error::Invalid(format!(
            "a `blast run` is running on `{}` (in another terminal?): move it once that ends",
            env.label()
        )));
    };
    let running: Vec<String> = match (force, from.is_dir()) {
        (false, true) => crate::processes::running_from(from)
            .iter()
            .map(|p| format!("{} ({})", p.pid, p.command))
            .collect(),
        _ => Vec::new(),
    };
    match running.is_empty() {
        true => Ok(runs),
        false => Err(Error::EnvInUse {
            env: env.label().to_owned(),
            processes: running,
        }),
    }
}

/// Where `dir`, read as rendered for the environment at `rendered_for`, differs from HEAD's `head`.
fn differences(
    store: &Store,
    env: &Env,
    dir: &Path,
    rendered_for: &str,
    head: &Tree,
) -> Result<Vec<String>> {
    let scan = capture::scan(
        dir,
        load_stat_cache(store, &env.record.id),
        &dir_move::placeholders_at(env, rendered_for),
        None,
    )?;
    Ok(head
        .changes_to(scan.tree())
        .iter()
        .map(|change| change.path().to_owned())
        .collect())
}

/// The environment found at `to` without `-e`: of those whose directories are gone, the one `to` holds
/// as its HEAD has it. `None` when `to` holds no virtual environment or no environment's directory is
/// gone; an error when some are gone and `to` holds none of them as it was (changed since, or another).
fn moved_here(store: &Store, to: &Path) -> Result<Option<EnvRecord>> {
    let gone: Vec<EnvRecord> = store
        .index()
        .envs()?
        .into_iter()
        .filter(|env| !Path::new(&env.path).exists())
        .collect();
    if gone.is_empty() || !to.join("pyvenv.cfg").is_file() {
        return Ok(None);
    }
    // One that cannot be read (a lost layer) is not the one. Taken as found: what another's interrupted
    // move would do is not this command's business.
    let holds_head = |record: &EnvRecord| -> Result<bool> {
        let env = store.lock_env_as_found(&record.id)?;
        let head = store.tree_of(&store.snapshot(&env.head()?)?)?;
        Ok(differences(store, &env, to, &env.record.path, &head)?.is_empty())
    };
    if let Some(record) = gone
        .iter()
        .find(|record| holds_head(record).unwrap_or(false))
    {
        return Ok(Some(record.clone()));
    }
    let labels: Vec<String> = gone.iter().map(|e| format!("`{}`", e.label())).collect();
    Err(Error::MovedWhich {
        path: to.display().to_string(),
        why: format!(
            ", and none of the environments whose directories are gone ({}) is there as its HEAD \
             has it (changed since? with `-e`, `--force` takes it as it is)",
            labels.join(", ")
        ),
    })
}
