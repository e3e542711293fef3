//! The operations behind the commands, one file per group. Each takes a [`Store`](crate::Store), does
//! its work through the mechanisms (capture, transition, materializer, gc) and returns a report that the
//! CLI renders as text or JSON.

mod create;
mod doctor;
mod images;
mod imports;
mod inspect;
mod install;
mod moves;
mod packages;
mod pins;
mod registry;
mod relocate;
mod run;
mod session;
mod snapshot;
mod squash;
mod stats;
mod tags;
mod verify;

pub use create::{CreateOptions, CreateReport, Removal, create, remove};
pub use doctor::{Check, DoctorReport, doctor};
pub use images::{
    ExportFormat, ExportOptions, ExportReport, ImportReport, RestoreReport, RestoreTarget, export,
    import, restore,
};
pub use imports::{imports, track_imports};
pub use inspect::{
    DiffReport, EnvSummary, FileChange, LogEntry, StatusReport, Uncapturable, diff, list, log,
    status,
};
pub use install::{InstallOptions, InstallReport, install};
pub use moves::{MoveReport, rollback, sync};
pub(crate) use packages::snapshot_distributions;
pub use packages::{CheckReport, PackageInfo, PackagesReport, check, packages};
pub use registry::{PullOptions, PullReport, PushOptions, PushReport, pull, push};
pub use relocate::{RelocateReport, relocate};
pub use run::{RunOptions, RunReport, run};
pub use session::{
    KillReport, Killed, SessionEnded, SessionStarting, Setup, StartOptions, deactivated_env, kill,
    prompt_hook, start,
};
pub use snapshot::{SnapshotReport, WrittenThrough, snapshot};
pub use squash::{SquashReport, squash};
pub use stats::{DiskUsage, Durations, EnvSize, InstallStats, StatsReport, stats};
pub use tags::{TagChange, TagEntry, TagsReport, tag, tags, untag};
pub use verify::{VerifyReport, verify};

use store_format::{Layer, Package, Snapshot, SnapshotId};

use crate::objects::Staging;

use crate::error::{Error, Result};
use crate::index::HistoryEntry;
use crate::store::Store;

/// Stages the snapshot that is `head` with `layer` on top and holds `packages`; returns its id.
pub(crate) fn stage_snapshot_on(
    staging: &Staging<'_>,
    head: &Snapshot,
    layer: &Layer,
    packages: Vec<Package>,
) -> Result<SnapshotId> {
    let mut layers = head.layers.clone();
    layers.push(staging.put_layer(layer)?);
    staging.put_snapshot(&Snapshot {
        python: head.python.clone(),
        layers,
        packages,
    })
}

/// Resolves what a user typed for a snapshot: `@~N` (N moves back in this env's history), a tag of
/// the environment, or a unique prefix (4+ hex digits) of a snapshot id.
pub(crate) fn resolve_snapshot(
    store: &Store,
    env_id: &str,
    env_label: &str,
    history: &[HistoryEntry],
    query: &str,
) -> Result<SnapshotId> {
    let hex_digits = query.chars().all(|c| c.is_ascii_hexdigit());
    let not_found = || Error::SnapshotNotFound {
        env: env_label.to_owned(),
        query: query.to_owned(),
        hint: if hex_digits && (query.len() < 4 || query.chars().any(|c| c.is_ascii_uppercase())) {
            " (an id prefix is at least 4 lowercase hex digits)".to_owned()
        } else if query.starts_with("@~") {
            // `blast clean --keep N` may have trimmed what it reached before.
            match history.len() {
                0 => " (its history is empty)".to_owned(),
                1 => " (its history holds 1 entry, `@~0`)".to_owned(),
                n => format!(" (its history holds {n} entries, `@~0` to `@~{}`)", n - 1),
            }
        } else {
            String::new()
        },
    };
    if let Some(n) = query.strip_prefix("@~") {
        let n: usize = n.parse().map_err(|_| not_found())?;
        return n
            .checked_add(1)
            .and_then(|back| history.len().checked_sub(back))
            .map(|i| history[i].to)
            .ok_or_else(not_found);
    }
    if query == "HEAD" || query == "@" {
        return history.last().map(|e| e.to).ok_or_else(not_found);
    }
    if let Some((_, id)) = store
        .index()
        .tags(env_id)?
        .into_iter()
        .find(|(tag, _)| tag == query)
    {
        return Ok(id);
    }
    let is_hex = hex_digits && query.len() >= 4 && !query.chars().any(|c| c.is_ascii_uppercase());
    if !is_hex {
        return Err(not_found());
    }
    let mut candidates: Vec<SnapshotId> = store
        .objects()
        .snapshot_ids()?
        .into_iter()
        .filter(|id| id.to_hex().starts_with(query))
        .collect();
    candidates.sort();
    match candidates.as_slice() {
        [one] => Ok(*one),
        [] => Err(not_found()),
        many => Err(Error::AmbiguousSnapshot {
            query: query.to_owned(),
            candidates: many.iter().map(|id| id.short()).collect(),
        }),
    }
}

/// Refuses a snapshot that the environment's interpreter cannot run; `fix` says what to do instead.
pub(crate) fn check_runs_on(
    env: &crate::store::Env,
    snapshot: &Snapshot,
    fix: &'static str,
) -> Result<()> {
    if env.record.python.satisfies(&snapshot.python) {
        return Ok(());
    }
    Err(Error::PythonMismatch {
        env: env.label().to_owned(),
        // Any release of its minor version will do (the ABI and platform must match too).
        needed: format!(
            "{} {} (made with {})",
            snapshot.python.implementation,
            snapshot.python.minor_version(),
            snapshot.python.version
        ),
        found: env.record.python.describe(),
        fix,
    })
}

/// Tags are names users type: no spaces, no `/`, not a hex string or `@~N` that would read as an id.
pub(crate) fn validate_tag(tag: &str) -> Result<()> {
    let bad = |why| Error::BadTag {
        tag: tag.to_owned(),
        why,
    };
    if tag.is_empty() || tag.len() > 128 {
        return Err(bad("it must be 1 to 128 characters"));
    }
    if !tag
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(bad("use letters, digits, `-`, `_` and `.`"));
    }
    if tag.starts_with('-') {
        return Err(bad("it would read as an option"));
    }
    // `--base` takes a tag or an image file.
    if tag.starts_with('.') || tag.ends_with(".blast") {
        return Err(bad(
            "it would read as a file (`.`, `..`, a hidden name, an image `*.blast`)",
        ));
    }
    // `head` too (found by exploratory testing: `rollback head` took such a tag for HEAD's word).
    if tag.starts_with('@') || tag.eq_ignore_ascii_case("HEAD") {
        return Err(bad(
            "it names a snapshot already (`HEAD`, in any case, and `@~N`)",
        ));
    }
    if tag.len() >= 4 && tag.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad("it would read as a snapshot id"));
    }
    Ok(())
}
