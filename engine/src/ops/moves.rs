//! `blast rollback` and `blast sync`: HEAD moves to another snapshot and the directory is made to match,
//! touching only the paths that differ. Uncaptured changes make both refuse unless forced.

use serde::Serialize;
use store_format::{Snapshot, SnapshotId};

use crate::capture::{Scan, StatCache};
use crate::error::{Error, Result};
use crate::index::{Batch, EnvRecord};
use crate::lock::DirClaim;
use crate::objects::unique_name;
use crate::packages::{InstalledFrom, PackageChange, package_changes};
use crate::store::{Env, Store};
use crate::transition::{Difference, Move, load_stat_cache, move_head, scan_or_empty};
use crate::tree::{Region, Tree, shared_layers};

#[derive(Debug, Serialize)]
pub struct MoveReport {
    pub env: String,
    pub path: String,
    pub from: Option<SnapshotId>,
    pub to: SnapshotId,
    pub packages: Vec<PackageChange>,
    /// Paths removed, what a removed directory held included.
    pub removed: usize,
    /// Files and symlinks written.
    pub written: usize,
    /// True when HEAD already was the target and the directory matched it: nothing was done.
    pub unchanged: bool,
}

pub fn rollback(
    store: &Store,
    selector: Option<&str>,
    target: Option<&str>,
    force: bool,
) -> Result<MoveReport> {
    let mut env = store.open_env_forced(selector, force)?;
    let resolve = |env: &Env| {
        let history = store.index().history(&env.record.id)?;
        super::resolve_snapshot(
            store,
            &env.record.id,
            env.label(),
            &history,
            target.unwrap_or("@~1"),
        )
    };
    let message = target.map(|t| format!("to {t}"));
    move_env(store, &mut env, resolve, "rollback", message, force)
}

/// Moves `to_sel` to the HEAD of `from_sel`, at its own path. A `to_sel` that names no environment yet
/// creates it (as a path when it looks like one, else as a named environment).
pub fn sync(store: &Store, from_sel: &str, to_sel: &str, force: bool) -> Result<MoveReport> {
    // Opened (and released) first: a move the source was in the middle of is finished before its
    // HEAD is read, and the two environment locks are never held together.
    let (source, head) = {
        let env = store.open_env_to_read(Some(from_sel))?;
        (env.record.clone(), env.head()?)
    };
    let message = Some(format!("from {}", source.label()));
    // A new target's path stays claimed until it is made.
    let (mut target, _claim) = match store.open_env_forced(Some(to_sel), force) {
        Ok(env) => (env, None),
        Err(Error::EnvNotFound(_) | Error::EnvMovedAway { .. }) => {
            let (env, claim) = new_env_for(store, to_sel, &source)?;
            (env, Some(claim))
        }
        Err(e) => return Err(e),
    };
    move_env(store, &mut target, |_| Ok(head), "sync", message, force)
}

/// A new, empty environment record for `sync` to fill, using the source's interpreter, and the claim on
/// its path.
fn new_env_for(store: &Store, selector: &str, source: &EnvRecord) -> Result<(Env, DirClaim)> {
    let looks_like_path = selector.contains('/') || selector.starts_with('.');
    let (name, path) = if looks_like_path {
        (
            None,
            crate::fsutil::resolve_path(std::path::Path::new(selector))?,
        )
    } else {
        super::create::free_env_name(store, selector)?;
        (Some(selector.to_owned()), store.named_env_path(selector))
    };
    let (path, claim) = super::create::claim_env_path(store, &path, name.as_deref())?;
    let record = EnvRecord {
        id: unique_name(),
        name,
        path,
        head: None,
        python: source.python.clone(),
        created: jiff::Timestamp::now().as_second(),
    };
    let env = Env {
        _lock: store.env_lock(&record.id)?,
        record,
    };
    Ok((env, claim))
}

fn move_env(
    store: &Store,
    env: &mut Env,
    resolve: impl FnOnce(&Env) -> Result<SnapshotId>,
    operation: &str,
    message: Option<String>,
    force: bool,
) -> Result<MoveReport> {
    let from = env.record.head;
    // A directory gone is not a change to discard (found by exploratory testing: every path was named
    // as uncaptured, and `blast snapshot` was advised): said as `status` says it; `--force` makes it.
    if from.is_some() && !force {
        env.directory()?;
    }
    // The walk of the directory is most of a move's time and needs only the directory and its stat
    // cache: it starts first, and the target is found and read meanwhile.
    let (scan, plan) = std::thread::scope(|scope| {
        let shared: &Env = env;
        let scan = scope.spawn(move || {
            from.map(|_| scan_or_empty(shared, load_stat_cache(store, &shared.record.id)))
                .transpose()
        });
        // Another interpreter's snapshot: a sync names the target it made or chose, a rollback its own.
        let fix = match operation {
            "sync" => "create the target with a matching `--python`",
            _ => "sync it into an environment created with a matching `--python`",
        };
        let plan = plan_move(store, shared, resolve, fix);
        let scan = scan
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (scan, plan)
    });
    let plan = plan?;
    let (scan, discarded) = match scan {
        Err(error) if force => {
            let (scan, discarded) = discard_uncapturable(store, env, error)?;
            (Some(scan), discarded)
        }
        scan => (scan?, 0),
    };
    let Plan {
        to,
        head,
        target,
        trees,
    } = plan;
    let (before, after) = match &trees {
        Trees::Whole { head, target } => (head, target),
        Trees::Region(region) => (&region.before, &region.after),
    };
    let packages = package_changes(
        head.as_ref().map_or(&[][..], |head| &head.packages[..]),
        &target.packages,
        Some(InstalledFrom {
            before,
            after,
            purelib: &env.record.python.purelib,
        }),
    );
    let (difference, cache) = match (from.zip(head.as_ref()), scan) {
        (Some((from, head)), Some(scan)) => {
            let whole = || whole_trees(store, Some(head), &target);
            current_of(env, from, trees, whole, scan, force)?
        }
        _ => {
            let target = match trees {
                Trees::Whole { target, .. } => target,
                Trees::Region(_) => whole_trees(store, head.as_ref(), &target)?.1,
            };
            let difference = Difference::Trees {
                current: Tree::default(),
                target: Some(target),
            };
            (difference, StatCache::default())
        }
    };
    let mut report = MoveReport {
        env: env.label().to_owned(),
        path: env.record.path.clone(),
        from,
        to,
        packages,
        removed: discarded,
        written: 0,
        unchanged: false,
    };
    // Already there, and the directory matches (a dirty one got here only with --force): nothing to do
    // but what --force discarded, which is counted (found by exploratory testing: a named pipe removed
    // read as "already at").
    if from == Some(to) && difference.changes_nothing() {
        report.unchanged = discarded == 0;
        return Ok(report);
    }
    let mut with_journal = Batch::default();
    if from.is_none() {
        with_journal.put_env(&env.record);
    }
    let stats = move_head(
        store,
        env,
        Move {
            operation: operation.to_owned(),
            message,
            to,
            difference,
            cache,
            with_journal,
        },
    )?;
    report.removed += stats.removed;
    report.written = stats.written;
    Ok(report)
}

/// The snapshots of a move, and their trees as far as the move needs them.
struct Plan {
    to: SnapshotId,
    head: Option<Snapshot>,
    target: Snapshot,
    trees: Trees,
}

/// Finds the target, checks that the environment's interpreter can run it (else fails with `fix`), and
/// reads the trees: only their region when the directory's stat cache says it held HEAD when it was
/// written (the walk then checks that it still does), else whole.
fn plan_move(
    store: &Store,
    env: &Env,
    resolve: impl FnOnce(&Env) -> Result<SnapshotId>,
    fix: &'static str,
) -> Result<Plan> {
    let to = resolve(env)?;
    let target = store.snapshot(&to)?;
    super::check_runs_on(env, &target, fix)?;
    let from = env.record.head;
    let head = from.map(|id| store.snapshot(&id)).transpose()?;
    let stamped_head =
        from.is_some() && StatCache::stamp_hint(&store.stat_cache_path(&env.record.id)) == from;
    let trees = head_and_target_trees(store, head.as_ref(), &target, stamped_head)?;
    Ok(Plan {
        to,
        head,
        target,
        trees,
    })
}

/// HEAD's and the target's trees, as far as a move needs them.
enum Trees {
    /// Whole: HEAD's (empty without one) and the target's.
    Whole { head: Tree, target: Tree },
    /// Only where the two can differ: enough for a directory that holds HEAD.
    Region(Region),
}

/// HEAD's and the target's trees: whole, or only their region when `region` is asked for.
fn head_and_target_trees(
    store: &Store,
    head: Option<&Snapshot>,
    target: &Snapshot,
    region: bool,
) -> Result<Trees> {
    if !region {
        let (head, target) = whole_trees(store, head, target)?;
        return Ok(Trees::Whole { head, target });
    }
    let head_layers = head.map_or(&[][..], |h| &h.layers[..]);
    let shared = shared_layers(head_layers, &target.layers);
    Ok(Trees::Region(Region::between(
        store.objects(),
        &target.layers[..shared],
        &head_layers[shared..],
        &target.layers[shared..],
    )?))
}

/// HEAD's tree (empty without one) and the target's, flattened once as far as they share layers.
fn whole_trees(store: &Store, head: Option<&Snapshot>, target: &Snapshot) -> Result<(Tree, Tree)> {
    let head_layers = head.map_or(&[][..], |h| &h.layers[..]);
    let shared = shared_layers(head_layers, &target.layers);
    let objects = store.objects();
    let below = Tree::from_layers(objects, &target.layers[..shared])?;
    let head_tree = match head {
        Some(_) => below.clone().with_layers(objects, &head_layers[shared..])?,
        None => Tree::default(),
    };
    Ok((
        head_tree,
        below.with_layers(objects, &target.layers[shared..])?,
    ))
}

/// The path of an entry no snapshot can hold, or that blast may not read.
fn unstorable_path(error: &Error) -> Option<std::path::PathBuf> {
    match error {
        Error::UnsupportedFileType { path, .. }
        | Error::NonUtf8Path(path)
        | Error::Unreadable { path } => Some(path.clone()),
        Error::Io { path, source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            Some(path.clone())
        }
        _ => None,
    }
}

/// `--force` discards what the directory holds that no snapshot could (a named pipe, a socket, a device,
/// a name that is not UTF-8, an entry blast may not read), as it discards any uncaptured change; the
/// directory is then scanned again. `error` is what the first scan met. Returns the scan and how many
/// entries were discarded.
fn discard_uncapturable(store: &Store, env: &Env, mut error: Error) -> Result<(Scan, usize)> {
    let mut discarded: Vec<std::path::PathBuf> = Vec::new();
    loop {
        let paths: Vec<std::path::PathBuf> = match &error {
            Error::Unstorable(each) => each.iter().filter_map(unstorable_path).collect(),
            one => match unstorable_path(one) {
                Some(path) => vec![path],
                None => return Err(error),
            },
        };
        for path in &paths {
            // One that came back could not be removed; nothing outside the directory is touched.
            if discarded.contains(path) || !path.starts_with(env.root()) || path == env.root() {
                return Err(error);
            }
            if let Some(parent) = path.parent().filter(|p| p.starts_with(env.root())) {
                crate::fsutil::open_dir_for_owner(parent);
            }
            if let Err(removal) = crate::fsutil::remove_tree(path) {
                return Err(Error::Invalid(format!(
                    "{error}; --force could not discard `{}`: {removal}",
                    path.display()
                )));
            }
            discarded.push(path.clone());
        }
        match scan_or_empty(env, load_stat_cache(store, &env.record.id)) {
            Ok(scan) => return Ok((scan, discarded.len())),
            Err(e) => error = e,
        }
    }
}

/// What the move changes, with the directory's stat cache: from HEAD when the cache knows the directory
/// as HEAD; otherwise from what the directory holds, refused when it differs from HEAD, unless `force`.
fn current_of(
    env: &Env,
    head: SnapshotId,
    trees: Trees,
    whole: impl FnOnce() -> Result<(Tree, Tree)>,
    scan: Scan,
    force: bool,
) -> Result<(Difference, StatCache)> {
    if scan.holds(&head) {
        let difference = match trees {
            Trees::Whole { head, target } => Difference::Trees {
                current: head,
                target: Some(target),
            },
            Trees::Region(region) => Difference::Region(region),
        };
        return Ok((difference, scan.into_cache()));
    }
    let (head_tree, target_tree) = match trees {
        Trees::Whole { head, target } => (head, target),
        Trees::Region(_) => whole()?,
    };
    if !force && *scan.tree() != head_tree {
        return Err(Error::UncapturedChanges {
            env: env.label().to_owned(),
            paths: head_tree
                .changes_to(scan.tree())
                .iter()
                .map(|c| c.path().to_owned())
                .collect(),
        });
    }
    let (current, cache) = scan.into_parts();
    Ok((
        Difference::Trees {
            current,
            target: Some(target_tree),
        },
        cache,
    ))
}
