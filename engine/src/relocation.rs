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
use crate::error::{IoContext, Result};
use crate::index::{Batch, Relocation};
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
/// and records it there. Returns how many files were written again for the new path.
pub fn relocate(store: &Store, env: &mut Env, to: String, way: Way) -> Result<usize> {
    let mut relocation = Relocation {
        from: env.record.path.clone(),
        to,
        copied: way == Way::Copied,
    };
    let mut batch = Batch::default();
    batch.put_relocation(&env.record.id, &relocation);
    store.index().write(batch)?;
    crash::point("relocation-written");
    let moved = match way {
        Way::Renamed => match std::fs::rename(&relocation.from, &relocation.to) {
            // Two mounts of one filesystem: a rename cannot cross them.
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                relocation.copied = true;
                let mut batch = Batch::default();
                batch.put_relocation(&env.record.id, &relocation);
                store
                    .index()
                    .write(batch)
                    .and_then(|()| copy(store, env, &relocation))
            }
            renamed => renamed.at(
                "moving the environment's directory",
                Path::new(&relocation.from),
            ),
        },
        Way::Copied => copy(store, env, &relocation),
        Way::Adopted => Ok(()),
    };
    if let Err(e) = moved {
        give_up(store, env, &relocation);
        return Err(e);
    }
    crash::point("relocation-moved");
    finish(store, env, &relocation)
}

/// Finishes or gives up a move of the directory that a killed command left recorded.
pub fn finish_interrupted(store: &Store, env: &mut Env) -> Result<()> {
    let Some(relocation) = store.index().relocation(&env.record.id)? else {
        return Ok(());
    };
    if holds_something(Path::new(&relocation.to)) {
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

/// Whether a directory with entries is at `path`: a move that reached its new path left one there.
fn holds_something(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_some())
}

/// Where a copy is made before it takes the new path in one rename.
fn copy_area(env_id: &str, to: &Path) -> PathBuf {
    to.with_file_name(format!(".blast-moving-{env_id}"))
}

/// Materializes HEAD for the new path beside it, renames it there, and removes the old directory.
fn copy(store: &Store, env: &Env, relocation: &Relocation) -> Result<()> {
    let to = Path::new(&relocation.to);
    let area = copy_area(&env.record.id, to);
    crate::fsutil::remove_tree(&area)?;
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
        .and_then(|_| crate::objects::syncfs(&area))
        .and_then(|()| std::fs::rename(&area, to).at("moving the environment's copy to", to));
    if let Err(e) = made {
        let _ = crate::fsutil::remove_tree(&area);
        return Err(e);
    }
    save_stat_cache(store, &env.record.id, &cache);
    Ok(())
}

/// Removes the directory a copy left at the old path: set aside first, in one rename, so that what is
/// left of a removal killed midway is never taken for the environment (and goes with the next try).
/// A directory that cannot go is left, and named.
fn remove_old(from: &Path, env_id: &str) {
    let aside = from.with_file_name(format!(".blast-removing-{env_id}"));
    let target = match std::fs::rename(from, &aside) {
        Ok(()) => aside,
        Err(_) if from.exists() => from.to_owned(),
        Err(_) => aside,
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
        remove_old(Path::new(&relocation.from), &env.record.id);
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
fn placeholders_at(env: &Env, path: &str) -> Placeholders {
    Placeholders {
        env_prefix: path.to_owned(),
        ..env.placeholders()
    }
}
