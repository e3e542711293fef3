//! Crash-safe moves of an environment's directory to another path (`blast move`): the directory goes
//! there (renamed, or materialized there from HEAD when the two paths are on different filesystems, or
//! already there, moved by hand), then the files that name its path (shebangs, activate scripts, what
//! else is stored relocatably, SPEC §10) are written again for the new path, then the record follows.
//! HEAD and history do not change: the directory holds the same snapshot, rendered elsewhere.
//!
//! The intent is recorded first (`relocation/<env-id>`, SPEC §13). A command killed midway leaves it,
//! and the next command that opens the environment finishes the move when the directory reached its
//! new path, or gives it up when it did not (it is then where it was).

use std::path::{Path, PathBuf};

use store_format::{Node, Placeholders};

use crate::capture::{self, StatCache};
use crate::crash;
use crate::error::{Error, IoContext, Result};
use crate::index::{Batch, Identity, Relocation};
use crate::materialize::Materializer;
use crate::store::{Env, Store};
use crate::transition::{link_mode, load_stat_cache, save_stat_cache};
use crate::tree::Tree;

/// How the directory reached its new path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Way {
    /// Renamed, on one filesystem.
    Renamed,
    /// Made at the new path from HEAD (another filesystem, or no directory at the old path), the old
    /// directory removed.
    Copied,
    /// Already there: moved by hand.
    Adopted,
}

/// Moves `env`'s directory to `to` (absolute, checked free or holding the environment moved by hand)
/// and records it there. `carry`: the paths where the directory differs from HEAD (a forced move),
/// which a copy takes along as they are, as a rename does. Returns how many files were written again
/// for the new path.
pub fn relocate(
    store: &Store,
    env: &mut Env,
    to: String,
    way: Way,
    carry: &[String],
) -> Result<usize> {
    let from = env.record.path.clone();
    // The directory that will be at `to`: recovery finishes the move only where it finds that one.
    let identity = match way {
        Way::Renamed => identity_of(Path::new(&from))?,
        Way::Copied => make_copy_area(&env.record.id, Path::new(&to))?,
        Way::Adopted => identity_of(Path::new(&to))?,
    };
    // And the one at `from`, which only a copy removes, and only while it is that one.
    let left_behind = match way {
        Way::Copied => identity_of(Path::new(&from)).ok(),
        _ => None,
    };
    let mut relocation = Relocation {
        from,
        to,
        copied: way == Way::Copied,
        identity,
        left_behind,
    };
    record_intent(store, env, &relocation)?;
    crash::point("relocation-written");
    let moved = match way {
        Way::Renamed => match std::fs::rename(&relocation.from, &relocation.to) {
            // Two mounts of one filesystem: a rename cannot cross them.
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                relocation.copied = true;
                relocation.left_behind = Some(relocation.identity);
                make_copy_area(&env.record.id, Path::new(&relocation.to))
                    .and_then(|identity| {
                        relocation.identity = identity;
                        record_intent(store, env, &relocation)
                    })
                    .and_then(|()| copy(store, env, &relocation, carry))
            }
            renamed => renamed.at(
                "moving the environment's directory",
                Path::new(&relocation.from),
            ),
        },
        Way::Copied => copy(store, env, &relocation, carry),
        Way::Adopted => Ok(()),
    };
    if let Err(e) = moved {
        give_up(store, env, &relocation);
        return Err(e);
    }
    crash::point("relocation-moved");
    finish(store, env, &relocation).map_err(|e| {
        Error::Invalid(format!(
            "{e}; the directory of `{}` is at `{}` now, its move unfinished: fix that, and the next \
             blast command on the environment finishes the move",
            env.label(),
            relocation.to
        ))
    })
}

fn record_intent(store: &Store, env: &Env, relocation: &Relocation) -> Result<()> {
    let mut batch = Batch::default();
    batch.put_relocation(&env.record.id, relocation);
    store.index().write(batch)
}

/// Finishes or gives up a move of the directory that a killed command left recorded: finished where
/// the directory the move was taking there is at `to` (its identity), given up otherwise. Whatever
/// else is at either path is nobody's to take or remove.
pub fn finish_interrupted(store: &Store, env: &mut Env) -> Result<()> {
    let Some(relocation) = store.index().relocation(&env.record.id)? else {
        return Ok(());
    };
    let to = Path::new(&relocation.to);
    let at_to = match to.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        // Another error (a mount gone, no permission) tells nothing: the move waits for it.
        Err(e) => return Err(e).at("inspecting", to),
        // A file or a symlink is no directory the move made.
        Ok(_) => identity_of(to).ok(),
    };
    if at_to == Some(relocation.identity) {
        eprintln!(
            "blast: finishing the interrupted move of `{}` to `{}`",
            env.label(),
            relocation.to
        );
        finish(store, env, &relocation)?;
    } else {
        eprintln!(
            "blast: the interrupted move of `{}` to `{}` had not moved its directory: it stays at `{}`",
            env.label(),
            relocation.to,
            relocation.from
        );
        give_up(store, env, &relocation);
    }
    Ok(())
}

/// Where a copy is made before it takes the new path in one rename.
fn copy_area(env_id: &str, to: &Path) -> PathBuf {
    to.with_file_name(format!(".blast-moving-{env_id}"))
}

/// Makes the copy's area afresh, and returns its identity, which the rename keeps.
fn make_copy_area(env_id: &str, to: &Path) -> Result<Identity> {
    let area = copy_area(env_id, to);
    crate::fsutil::remove_tree(&area)?;
    std::fs::create_dir_all(&area).at("creating", &area)?;
    identity_of(&area)
}

/// Materializes HEAD for the new path in the copy's area, puts the differences `carry` names there as
/// the old directory has them, and renames the area to the new path.
fn copy(store: &Store, env: &Env, relocation: &Relocation, carry: &[String]) -> Result<()> {
    let to = Path::new(&relocation.to);
    let area = copy_area(&env.record.id, to);
    let head = store.snapshot(&env.head()?)?;
    let tree = store.tree_of(&head)?;
    let placeholders = placeholders_at(env, &relocation.to);
    let materializer = Materializer {
        store: store.objects(),
        placeholders: &placeholders,
        mode: link_mode(store, &area)?,
    };
    let mut cache = StatCache::default();
    let made = materializer
        .apply(&area, &Tree::default(), &tree, &mut cache)
        .and_then(|_| {
            let from = Path::new(&relocation.from);
            // The import-tracking hook is no content, and goes along too: tracking stays on.
            let purelib = &env.record.python.purelib;
            let hook = [crate::imports::HOOK_MODULE, crate::imports::HOOK_PTH]
                .map(|name| format!("{purelib}/{name}"))
                .into_iter()
                .filter(|path| from.join(path).is_file());
            carry
                .iter()
                .cloned()
                .chain(hook)
                .try_for_each(|path| carry_path(from, &area, &path))
        })
        .and_then(|()| crate::objects::syncfs(&area))
        .and_then(|()| std::fs::rename(&area, to).at("moving the environment's copy to", to))
        // On the disk before the old directory goes: a power cut must not lose both.
        .and_then(|()| crate::objects::syncfs(to));
    if let Err(e) = made {
        let _ = crate::fsutil::remove_tree(&area);
        return Err(e);
    }
    save_stat_cache(store, &env.record.id, &cache);
    Ok(())
}

/// Makes `path` in the copy `area` what it is in the old directory `from` (or absent, as there): a
/// file copied with its mode, a symlink made again, a directory made. Paths come parents first.
fn carry_path(from: &Path, area: &Path, path: &str) -> Result<()> {
    let (source, dest) = (from.join(path), area.join(path));
    let meta = match source.symlink_metadata() {
        // Below a directory replaced by a file, too.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            // Below a file the copy has made already, there is nothing to remove.
            return match dest.symlink_metadata() {
                Ok(_) => crate::fsutil::remove_tree(&dest),
                Err(_) => Ok(()),
            };
        }
        meta => meta.at("reading", &source)?,
    };
    if meta.is_dir() {
        if !dest.symlink_metadata().is_ok_and(|d| d.is_dir()) {
            crate::fsutil::remove_tree(&dest)?;
            std::fs::create_dir(&dest).at("creating", &dest)?;
        }
        return std::fs::set_permissions(&dest, meta.permissions())
            .at("copying the mode of", &dest);
    }
    crate::fsutil::remove_tree(&dest)?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&source).at("reading", &source)?;
        std::os::unix::fs::symlink(target, &dest).at("creating symlink", &dest)
    } else {
        std::fs::copy(&source, &dest)
            .map(drop)
            .at("copying", &source)
    }
}

/// Removes the directory a copy left at the old path, when it is still the one the move found there
/// (`expected`): set aside first, in one rename, so that what is left of a removal killed midway is
/// never taken for the environment (and goes with the next try). Anything else there (a venv made
/// since) is left, and so is a directory that cannot go; both are named.
fn remove_old(from: &Path, env_id: &str, expected: Option<Identity>) {
    let aside = from.with_file_name(format!(".blast-removing-{env_id}"));
    let target = match identity_of(from).ok() {
        Some(found) if Some(found) == expected => match std::fs::rename(from, &aside) {
            Ok(()) => aside,
            Err(_) => from.to_owned(),
        },
        Some(_) => {
            eprintln!(
                "blast: `{}` is no longer the directory the move copied: left as it is",
                from.display()
            );
            return;
        }
        None if identity_of(&aside)
            .ok()
            .is_some_and(|a| Some(a) == expected) =>
        {
            aside
        }
        None => return,
    };
    if let Err(e) = crate::fsutil::remove_tree(&target) {
        eprintln!(
            "blast: the old directory could not be removed ({e}): delete `{}` by hand",
            target.display()
        );
    }
}

/// The directory is at the new path: what names the old path is written again for the new one, and
/// the record moves. Nothing else is touched: what differs from HEAD (a forced move) stays, for
/// `blast status` to name.
fn finish(store: &Store, env: &mut Env, relocation: &Relocation) -> Result<usize> {
    let to = Path::new(&relocation.to);
    if relocation.copied {
        remove_old(
            Path::new(&relocation.from),
            &env.record.id,
            relocation.left_behind,
        );
    }
    let head = env.head()?;
    let target = store.tree_of(&store.snapshot(&head)?)?;
    // Read as rendered for the old path, a file nobody changed is HEAD's node.
    let scan = capture::scan(
        to,
        load_stat_cache(store, &env.record.id),
        &placeholders_at(env, &relocation.from),
        None,
    )?;
    let (found, mut cache) = scan.into_parts();
    let differing: Vec<String> = target
        .changes_to(&found)
        .iter()
        .map(|change| change.path().to_owned())
        .collect();
    // Their stats would be recognised with nodes read for the old path (a file a killed finish wrote
    // for the new one is HEAD's again at the next scan).
    for path in &differing {
        cache.forget(path);
    }
    let mut current = found.clone();
    let wanted = found;
    // Every node HEAD stores relocatably and the directory holds as it was is marked as differing, so
    // that the apply writes it for the new path.
    for (path, node) in &target.entries {
        if let Some(Node::File { relocatable, .. } | Node::Symlink { relocatable, .. }) =
            current.entries.get_mut(path)
            && *relocatable
            && wanted.entries.get(path) == Some(node)
        {
            *relocatable = false;
        }
    }
    let placeholders = placeholders_at(env, &relocation.to);
    let materializer = Materializer {
        store: store.objects(),
        placeholders: &placeholders,
        mode: link_mode(store, to)?,
    };
    let stats = materializer.apply(to, &current, &wanted, &mut cache)?;
    // The rename too, not only the files written: the record that follows names the new path.
    crate::objects::syncfs(to)?;
    if wanted == target {
        cache.stamp_with(head, target.digest());
    }
    save_stat_cache(store, &env.record.id, &cache);
    crash::point("relocation-rendered");
    env.record.path.clone_from(&relocation.to);
    let mut batch = Batch::default();
    batch.delete_relocation(&env.record.id, relocation, false);
    batch.put_env(&env.record);
    // Moved by this store, the directory is this store's, wherever a copy of a store had it.
    batch.delete_kept_by(&env.record.id);
    store.index().write(batch)?;
    Ok(stats.written)
}

/// Drops the record of a move that did not reach its new path, and what a copy left beside it.
fn give_up(store: &Store, env: &Env, relocation: &Relocation) {
    let _ = crate::fsutil::remove_tree(&copy_area(&env.record.id, Path::new(&relocation.to)));
    let mut batch = Batch::default();
    batch.delete_relocation(&env.record.id, relocation, true);
    let _ = store.index().write(batch);
}

/// The environment's placeholders, for its directory at `path`.
pub(crate) fn placeholders_at(env: &Env, path: &str) -> Placeholders {
    Placeholders {
        env_prefix: path.to_owned(),
        ..env.placeholders()
    }
}

/// The identity of the directory at `path` (not followed, if a symlink: then none).
fn identity_of(path: &Path) -> Result<Identity> {
    use std::os::unix::fs::MetadataExt;
    let meta = path.symlink_metadata().at("inspecting", path)?;
    let born_ns = meta
        .created()
        .ok()
        .and_then(|born| born.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|since| i64::try_from(since.as_nanos()).ok())
        .unwrap_or(0);
    match meta.is_dir() {
        true => Ok(Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            born_ns,
        }),
        false => Err(Error::Invalid(format!(
            "`{}` is no directory",
            path.display()
        ))),
    }
}
