//! `blast export`, `blast import` and `blast restore`: environments leave and enter the store as images
//! (see [`crate::images`]), or leave as a pinned requirements file or a PEP 751 `pylock.toml` for tools
//! that do not speak blast. A restore imports and materializes in one command through the journaled
//! HEAD move, at any path, on an interpreter that matches what the snapshot records.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use store_format::{PythonTag, Snapshot, SnapshotId};

use crate::capture::StatCache;
use crate::conflicts;
use crate::error::{Error, IoContext, Result};
use crate::images::{self, Limits, Plan, Progress};
use crate::index::{Batch, EnvRecord, HistoryEntry};
use crate::lock::DirClaim;
use crate::markers::marker_environment;
use crate::objects::unique_name;
use crate::python::{self, PythonInfo};
use crate::store::{Env, Store};
use crate::transition::{Difference, Move, move_head};
use crate::tree::Tree;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// A `.blast` image.
    Blast,
    /// `name==version` lines.
    Requirements,
    /// A PEP 751 lock file.
    Pylock,
}

impl ExportFormat {
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::Blast => "blast",
            ExportFormat::Requirements => "requirements",
            ExportFormat::Pylock => "pylock",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The environment (its HEAD, or the context for `snapshot`'s tags and `@~N`).
    pub env: Option<String>,
    /// A snapshot: an id or prefix, or with an environment also a tag or `@~N`.
    pub snapshot: Option<String>,
    pub output: PathBuf,
    /// An image file or a snapshot the receiver has: its layers and objects are left out.
    pub base: Option<String>,
    /// Also the environment's earlier snapshots.
    pub history: bool,
    pub format: ExportFormat,
}

#[derive(Debug, Serialize)]
pub struct ExportReport {
    pub file: String,
    pub format: &'static str,
    pub head: SnapshotId,
    /// Every snapshot in the image, oldest first.
    pub snapshots: Vec<SnapshotId>,
    pub base: Option<SnapshotId>,
    /// What the head needs to run.
    pub python: String,
    pub packages: usize,
    pub layers: u64,
    pub objects: u64,
    pub object_bytes: u64,
    /// What the base made unnecessary.
    pub layers_omitted: usize,
    pub objects_omitted: usize,
    pub file_bytes: u64,
    /// Set when the image decompresses past import's ratio check (a file of zeros, say): the
    /// `BLAST_IMAGE_MAX_BYTES` that imports it, its archive's size.
    pub import_needs_max_bytes: Option<u64>,
    /// pylock.toml: distributions pinned with no source (installed from an index, which blast does
    /// not record); installers refuse such an entry.
    pub unsourced: usize,
    /// pylock.toml: archives with no hash, which installers refuse (see `pins::Pins`).
    pub unhashed: usize,
    /// pylock.toml: the file is not named as PEP 751 names lock files (`pylock.toml`,
    /// `pylock.NAME.toml`), which installers such as uv refuse.
    pub unconventional_name: bool,
    /// Requirements of the pinned distributions that do not hold in the snapshot (a `--no-deps`
    /// install, `--allow-conflicts`): an installer given the file resolves them, and installs or
    /// changes more than the environment has. Counted with an environment, whose markers they need.
    pub unmet_requirements: usize,
    /// Paths of the environment that differ from the exported HEAD (see [`Selected::uncaptured`]).
    pub uncaptured: usize,
}

/// What an export or a push works on: the environment (when one is selected) and its history, and the
/// snapshot.
pub(super) struct Selected {
    pub(super) env: Option<Env>,
    pub(super) history: Vec<HistoryEntry>,
    pub(super) head: SnapshotId,
}

impl Selected {
    /// How many paths of the environment's directory differ from the snapshot, when that is the
    /// environment's HEAD: changes not captured yet, which an export or a push leaves out.
    pub(super) fn uncaptured(&self, store: &Store) -> usize {
        match &self.env {
            // In a copy of a store, the directory another store keeps is not this store's HEAD.
            Some(env)
                if env.head().ok() == Some(self.head)
                    && store.original_keeps(&env.record).is_none() =>
            {
                super::inspect::uncaptured_paths(store, env, &self.head)
            }
            _ => 0,
        }
    }

    /// `query` as a snapshot: an id or prefix, or with an environment also a tag or `@~N`.
    pub(super) fn resolve(&self, store: &Store, query: &str) -> Result<SnapshotId> {
        match &self.env {
            Some(env) => {
                super::resolve_snapshot(store, &env.record.id, env.label(), &self.history, query)
            }
            None => resolve_in_store(store, query),
        }
    }
}

/// `--snapshot` alone needs no environment; anything else works on one (default ./.venv), at its HEAD
/// unless `--snapshot` names another.
pub(super) fn select(store: &Store, env: Option<&str>, snapshot: Option<&str>) -> Result<Selected> {
    let env = match (env, snapshot) {
        (None, Some(_)) => None,
        (selector, _) => Some(store.open_env_to_read(selector)?),
    };
    let history = match &env {
        Some(env) => store.index().history(&env.record.id)?,
        None => Vec::new(),
    };
    let head = match (snapshot, &env) {
        (Some(query), Some(env)) => {
            super::resolve_snapshot(store, &env.record.id, env.label(), &history, query)?
        }
        (Some(query), None) => resolve_in_store(store, query)?,
        (None, Some(env)) => env.head()?,
        (None, None) => return Err(Error::NoEnvSelected),
    };
    Ok(Selected { env, history, head })
}

pub fn export(
    store: &Store,
    opts: &ExportOptions,
    progress: &dyn Progress,
) -> Result<ExportReport> {
    check_output(store, opts)?;
    let selected = select(store, opts.env.as_deref(), opts.snapshot.as_deref())?;
    let (env, history, head) = (&selected.env, &selected.history, selected.head);
    let resolve = |query: &str| selected.resolve(store, query);
    let head_snapshot = store.snapshot(&head)?;
    if opts.format != ExportFormat::Blast {
        if opts.base.is_some() || opts.history {
            return Err(Error::Invalid(
                "--base and --history apply to images (`--format blast`) only".into(),
            ));
        }
        let pins = match opts.format {
            ExportFormat::Requirements => {
                let (text, count) =
                    super::pins::requirements(store, env.as_ref(), &head, &head_snapshot)?;
                super::pins::Pins {
                    text,
                    count,
                    unsourced: 0,
                    unhashed: 0,
                }
            }
            _ => super::pins::pylock(store, env.as_ref(), &head_snapshot)?,
        };
        // A note: an environment whose interpreter is gone (its markers cannot be asked) gives none.
        let unmet_requirements = env
            .as_ref()
            .and_then(|env| {
                let tree = store.tree_of(&head_snapshot).ok()?;
                let installed = super::packages::snapshot_distributions(store, env, &tree).ok()?;
                let markers = marker_environment(store.index(), &env.record.python).ok()?;
                Some(conflicts::unsatisfied(&installed.found, &markers).len())
            })
            .unwrap_or(0);
        write_atomically(&opts.output, pins.text.as_bytes())?;
        return Ok(ExportReport {
            file: opts.output.display().to_string(),
            format: opts.format.name(),
            head,
            snapshots: vec![head],
            base: None,
            python: describe_tag(&head_snapshot.python),
            packages: pins.count,
            layers: 0,
            objects: 0,
            object_bytes: 0,
            layers_omitted: 0,
            objects_omitted: 0,
            file_bytes: pins.text.len() as u64,
            import_needs_max_bytes: None,
            unsourced: pins.unsourced,
            unhashed: pins.unhashed,
            unconventional_name: opts.format == ExportFormat::Pylock
                && !opts
                    .output
                    .file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(super::pins::is_lock_file_name),
            unmet_requirements,
            uncaptured: selected.uncaptured(store),
        });
    }
    let mut snapshots = Vec::new();
    if opts.history {
        if env.is_none() {
            return Err(Error::Invalid(
                "--history exports an environment's history: name the environment with -e".into(),
            ));
        }
        // Oldest first; snapshots that `blast clean` removed are no longer there to export.
        let mut seen = HashSet::new();
        for entry in history {
            if entry.to != head && store.objects().has_snapshot(&entry.to) && seen.insert(entry.to)
            {
                snapshots.push(entry.to);
            }
        }
    }
    snapshots.push(head);
    let base = match &opts.base {
        None => None,
        Some(base) if Path::new(base).is_file() => Some(images::base_from_image(
            store,
            Path::new(base),
            &Limits::from_env()?,
            progress,
        )?),
        Some(base) if base.contains('/') || base.ends_with(".blast") => {
            let what = match Path::new(base).exists() {
                true => "is not a file",
                false => "does not exist",
            };
            return Err(Error::Invalid(format!(
                "base image `{base}` {what}: give an image file or a snapshot id"
            )));
        }
        Some(base) => Some(images::base_from_store(store, &resolve(base)?)?),
    };
    let written = images::write_image(store, &opts.output, &Plan { snapshots, base }, progress)?;
    let m = written.manifest;
    Ok(ExportReport {
        file: opts.output.display().to_string(),
        format: opts.format.name(),
        head,
        snapshots: m.snapshots,
        base: m.base,
        python: describe_tag(&head_snapshot.python),
        packages: head_snapshot.packages.len(),
        layers: m.layers,
        objects: m.objects,
        object_bytes: m.object_bytes,
        layers_omitted: written.layers_omitted,
        objects_omitted: written.objects_omitted,
        file_bytes: written.file_bytes,
        import_needs_max_bytes: Limits::default()
            .ratio_exceeded(written.archive_bytes, written.file_bytes)
            .then_some(written.archive_bytes),
        unsourced: 0,
        unhashed: 0,
        unconventional_name: false,
        unmet_requirements: 0,
        uncaptured: selected.uncaptured(store),
    })
}

/// A snapshot of the store by its id or a unique prefix of 4+ hex digits.
fn resolve_in_store(store: &Store, query: &str) -> Result<SnapshotId> {
    let is_hex = query.len() >= 4
        && query
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let mut candidates: Vec<SnapshotId> = if is_hex {
        store
            .objects()
            .snapshot_ids()?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(query))
            .collect()
    } else {
        Vec::new()
    };
    candidates.sort();
    match candidates.as_slice() {
        [one] => Ok(*one),
        [] => Err(Error::Invalid(format!(
            "no snapshot `{query}` in the store: give an id or a prefix of 4+ digits \
             (`blast log` shows them), or select an environment with -e to use its tags and @~N"
        ))),
        many => Err(Error::AmbiguousSnapshot {
            query: query.to_owned(),
            candidates: many.iter().map(|id| id.short()).collect(),
        }),
    }
}

/// `cpython 3.11 (exported with 3.11.2; ABI cpython-311-x86_64-linux-gnu; platform linux-x86_64)`.
pub(super) fn describe_tag(tag: &PythonTag) -> String {
    let abi = if tag.soabi.is_empty() {
        "any"
    } else {
        &tag.soabi
    };
    format!(
        "{} {} (exported with {}; ABI {abi}; platform {})",
        tag.implementation,
        tag.minor_version(),
        tag.version,
        tag.platform
    )
}

/// Refuses an output in the store (directly or through a symlink: it would replace an object, a layer
/// or the store's own files) or the base image itself (a thin image written over its base).
fn check_output(store: &Store, opts: &ExportOptions) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let target = crate::fsutil::resolve_path(&crate::fsutil::output_file(&opts.output)?)?;
    if target.starts_with(store.home()) {
        return Err(Error::Invalid(format!(
            "`{}` is inside the store (`{}`), which only blast writes: write the export elsewhere",
            target.display(),
            store.home().display()
        )));
    }
    // An environment's files are its snapshots' (found by exploratory testing: `-o .venv/pyvenv.cfg`
    // replaced the file the environment runs by).
    if let Some(env) = store
        .index()
        .envs()?
        .into_iter()
        .find(|env| target.starts_with(crate::fsutil::real(Path::new(&env.path))))
    {
        return Err(Error::Invalid(format!(
            "`{}` is inside the directory of environment `{}`, whose files are its snapshots': \
             write the export elsewhere",
            target.display(),
            env.label()
        )));
    }
    let identity = |path: &Path| fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    if let Some(base) = &opts.base
        && identity(&target).is_some()
        && identity(&target) == identity(Path::new(base))
    {
        return Err(Error::Invalid(format!(
            "`{}` is the base image `{base}`: the export would replace it; write it to another file",
            opts.output.display()
        )));
    }
    Ok(())
}

/// Writes `bytes` beside `path` and renames it into place: never half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let path = &crate::fsutil::output_file(path)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Invalid(format!("`{}` is not a file name", path.display())))?;
    let tmp = path.with_file_name(format!(".{name}.blast-tmp-{}", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| {
            crate::fsutil::keep_permissions_of(path, &f)?;
            f.write_all(bytes)?;
            f.sync_all()
        })
        .at("writing", path)
        .and_then(|()| fs::rename(&tmp, path).at("moving into place", path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[derive(Debug, Serialize)]
pub struct ImportReport {
    pub image: String,
    pub head: SnapshotId,
    /// Every snapshot of the image, oldest first.
    pub snapshots: Vec<SnapshotId>,
    pub base: Option<SnapshotId>,
    /// What the head needs to run.
    pub python: String,
    pub packages: usize,
    /// What the store did not have yet.
    pub new_snapshots: usize,
    pub new_layers: usize,
    pub new_objects: usize,
    pub objects: u64,
    pub object_bytes: u64,
    pub image_bytes: u64,
    /// Environments whose HEAD is the image's head already (`blast import` of a plain import).
    pub heads_of: Vec<String>,
}

impl ImportReport {
    fn of(image: &Path, outcome: images::ImportOutcome) -> Self {
        let m = outcome.manifest;
        ImportReport {
            image: image.display().to_string(),
            head: m.head,
            snapshots: m.snapshots,
            base: m.base,
            python: describe_tag(&outcome.head.python),
            packages: outcome.head.packages.len(),
            new_snapshots: outcome.new_snapshots,
            new_layers: outcome.new_layers,
            new_objects: outcome.new_objects,
            objects: m.objects,
            object_bytes: m.object_bytes,
            image_bytes: outcome.image_bytes,
            heads_of: Vec::new(),
        }
    }
}

/// Verifies an image and adds its snapshots to the store (no environment uses them yet).
pub fn import(store: &Store, image: &Path, progress: &dyn Progress) -> Result<ImportReport> {
    let outcome =
        images::import_image(
            store,
            image,
            &Limits::from_env()?,
            progress,
            &mut |_| Ok(()),
        )?;
    let mut report = ImportReport::of(image, outcome);
    report.heads_of = store
        .index()
        .envs()?
        .into_iter()
        .filter(|env| env.head == Some(report.head))
        .map(|env| env.label().to_owned())
        .collect();
    Ok(report)
}

/// Where a restore puts the environment.
#[derive(Debug, Clone)]
pub enum RestoreTarget {
    Path(PathBuf),
    Name(String),
}

#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub import: ImportReport,
    pub env: String,
    pub name: Option<String>,
    pub path: String,
    /// The interpreter the environment runs on.
    pub python: String,
    /// Files and symlinks written.
    pub files: usize,
}

/// Imports an image and makes a new environment of its head, at `target`, on a matching interpreter
/// (`python`, else `python3`, else `pythonX.Y`). The image's earlier snapshots become the environment's
/// history, so `blast rollback` reaches them and `blast clean` keeps them.
pub fn restore(
    store: &Store,
    image: &Path,
    target: &RestoreTarget,
    python: Option<&str>,
    operation: &str,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    check_target(store, target)?;
    let mut interpreter = None;
    let outcome = images::import_image(
        store,
        image,
        &Limits::from_env()?,
        progress,
        &mut |head: &Snapshot| {
            interpreter = Some(matching_python(store, &head.python, python)?);
            Ok(())
        },
    )?;
    let interpreter = match interpreter {
        Some(found) => found,
        None => matching_python(store, &outcome.head.python, python)?,
    };
    // Checked again: the import took a while, and something may have been put at the target meanwhile.
    let free = free_target(store, target)?;
    let head = outcome.manifest.head;
    let earlier: Vec<SnapshotId> = outcome
        .manifest
        .snapshots
        .iter()
        .filter(|id| **id != head)
        .copied()
        .collect();
    let made = new_env(
        store,
        &free,
        interpreter,
        head,
        &earlier,
        operation,
        format!("from {}", image.display()),
        progress,
    )?;
    Ok(RestoreReport {
        import: ImportReport::of(image, outcome),
        env: made.label,
        name: free.name,
        path: free.path_str,
        python: made.python,
        files: made.files,
    })
}

/// Where a new environment will go, checked free and claimed (see [`crate::lock::claim_dir`]).
pub(super) struct FreeTarget {
    pub(super) name: Option<String>,
    /// Absolute, UTF-8.
    pub(super) path_str: String,
    _claim: DirClaim,
}

/// Refuses `target` unless a new environment may go there: a valid name not in use, or a path no
/// environment has that is absent or an empty directory.
pub(super) fn check_target(store: &Store, target: &RestoreTarget) -> Result<()> {
    let (name, path) = target_path(store, target)?;
    super::create::free_env_path(store, &path, name.as_deref()).map(drop)
}

/// As [`check_target`], and claims the target until the returned value is dropped.
pub(super) fn free_target(store: &Store, target: &RestoreTarget) -> Result<FreeTarget> {
    let (name, path) = target_path(store, target)?;
    let (path_str, claim) = super::create::claim_env_path(store, &path, name.as_deref())?;
    Ok(FreeTarget {
        name,
        path_str,
        _claim: claim,
    })
}

fn target_path(store: &Store, target: &RestoreTarget) -> Result<(Option<String>, PathBuf)> {
    Ok(match target {
        RestoreTarget::Path(path) => (None, crate::fsutil::resolve_path(path)?),
        RestoreTarget::Name(name) => {
            super::create::free_env_name(store, name)?;
            (Some(name.clone()), store.named_env_path(name))
        }
    })
}

/// What [`new_env`] made.
pub(super) struct NewEnv {
    pub(super) label: String,
    /// The interpreter it runs on.
    pub(super) python: String,
    /// Files and symlinks written.
    pub(super) files: usize,
}

/// Makes a new environment at `target` on `interpreter` whose HEAD is `head` (in the store), with `earlier`
/// (oldest first) as its history before it, through the journaled move: one synced batch with the journal
/// holds the record and the earlier entries, then the apply and the record of HEAD.
#[allow(clippy::too_many_arguments)]
pub(super) fn new_env(
    store: &Store,
    target: &FreeTarget,
    interpreter: PythonInfo,
    head: SnapshotId,
    earlier: &[SnapshotId],
    operation: &str,
    message: String,
    progress: &dyn Progress,
) -> Result<NewEnv> {
    let python = interpreter.describe();
    let record = EnvRecord {
        id: unique_name(),
        name: target.name.clone(),
        path: target.path_str.clone(),
        head: None,
        python: interpreter,
        created: jiff::Timestamp::now().as_second(),
    };
    let mut with_journal = Batch::default();
    with_journal.put_env(&record);
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let mut from = None;
    for (seq, id) in earlier.iter().enumerate() {
        with_journal.put_history(
            &record.id,
            &HistoryEntry {
                seq: seq as u64,
                time_ms: now_ms,
                operation: operation.to_owned(),
                message: Some("earlier snapshot from the image".into()),
                from,
                to: *id,
            },
        );
        from = Some(*id);
    }
    let mut env = Env {
        _lock: store.env_lock(&record.id)?,
        record,
    };
    progress.begin("materializing", None);
    let moved = move_head(
        store,
        &mut env,
        Move {
            operation: operation.to_owned(),
            message: Some(message),
            to: head,
            difference: Difference::Trees {
                current: Tree::default(),
                target: None,
            },
            cache: StatCache::default(),
            with_journal,
        },
    );
    progress.end();
    let stats = moved?;
    Ok(NewEnv {
        label: env.label().to_owned(),
        python,
        files: stats.written,
    })
}

/// The first interpreter that can run a snapshot built for `needed`: `request` when given, else
/// `python3`, else `pythonX.Y` on PATH.
pub(super) fn matching_python(
    store: &Store,
    needed: &PythonTag,
    request: Option<&str>,
) -> Result<PythonInfo> {
    let versioned = format!("python{}", needed.minor_version());
    let candidates = match request {
        Some(request) => vec![request],
        None => vec!["python3", versioned.as_str()],
    };
    let mut tried = Vec::new();
    for candidate in candidates {
        match python::find(store.index(), Some(candidate)) {
            Ok(info) if info.satisfies(needed) => return Ok(info),
            Ok(info) => tried.push(format!(
                "`{candidate}` is {} (ABI {}; platform {})",
                info.describe(),
                info.tag.soabi,
                info.tag.platform
            )),
            Err(Error::PythonNotFound { detail, .. }) => {
                tried.push(format!("`{candidate}`: {detail}"))
            }
            Err(e) => tried.push(format!("`{candidate}`: {e}")),
        }
    }
    Err(Error::NoMatchingPython {
        needed: describe_tag(needed),
        tried,
        // Found by exploratory testing: a `--python` given was told to pass `--python`.
        fix: match request {
            Some(_) => "pass `--python` an interpreter of that version (or install one)",
            None => "install that Python or pass `--python PATH`",
        },
    })
}
