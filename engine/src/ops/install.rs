//! `blast install`, `blast uninstall` and `blast pip`: one installer run as one transaction.
//!
//! The installer runs in the sandbox over an overlay of the environment (or, with `--no-sandbox`, on a
//! staging copy of it); the environment itself is not touched while it runs. Its changes become a layer,
//! and the environment moves to the new snapshot through the same crash-safe apply as a rollback. A
//! failed, interrupted or killed run leaves the environment and its history as they were: its staging
//! area goes at once or, after a kill, with the next command.
//!
//! Every transaction that ends well, whether it changed the environment or found nothing to change,
//! leaves its duration as an `install` sample for `blast stats` (a failed one leaves none: it is an
//! error the user sees, not a duration to watch).

use std::cell::Cell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use store_format::{Node, ObjectId, Placeholders, Snapshot, SnapshotId};

use crate::capture::{self, CacheLinks, PYCACHE, Sink, StatCache};
use crate::conflicts::{ConflictReport, conflicts_introduced};
use crate::crash;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::real;
use crate::index::Batch;
use crate::installer::{self, Installer, InstallerKind, Request};
use crate::markers::marker_environment;
use crate::materialize::{LinkMode, Materializer};
use crate::metrics::{self, MetricKind};
use crate::objects::Staging;
use crate::packages::{
    InstalledFrom, PackageChange, distributions_of, package_changes, packages_of,
};
use crate::sandbox::{self, Outcome, Spec};
use crate::store::{Env, Store};
use crate::transition::{Difference, Move, link_mode, load_stat_cache, move_head};
use crate::tree::{PathChange, Tree};

/// `SOURCE_DATE_EPOCH` for installer runs: pip then writes hash-checked `.pyc` files (valid whatever
/// the source's mtime) and builds wheels from sources with fixed timestamps (1980-01-01, zip's epoch).
const SOURCE_DATE_EPOCH: &str = "315532800";

/// Configuration under a hidden directory that installers do read.
const INSTALLER_CONFIG: &[&str] = &[".config/pip", ".config/uv"];

#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    pub installer: Option<InstallerKind>,
    pub offline: bool,
    pub allow_conflicts: bool,
    pub no_sandbox: bool,
    /// The installer's standard output goes to blast's (`blast pip -- freeze`); otherwise to its
    /// standard error, and blast's standard output carries only its own report.
    pub installer_stdout: bool,
}

#[derive(Debug, Serialize)]
pub struct InstallReport {
    pub env: String,
    /// The new snapshot; `None` when the installer changed nothing.
    pub snapshot: Option<SnapshotId>,
    pub parent: SnapshotId,
    /// What the history calls it ("install rich"); `blast log` adds the package changes.
    pub message: String,
    pub packages: Vec<PackageChange>,
    pub installer: String,
    pub sandboxed: bool,
    /// Whether the installer's changes were collected in memory (`sandbox::Overlay::in_memory`).
    pub changes_in_memory: bool,
    pub added: usize,
    pub modified: usize,
    pub removed: usize,
    /// Seconds the installer ran, and the whole transaction took (from when the environment was
    /// locked: a wait for another command is not the install's).
    pub installer_seconds: f64,
    pub total_seconds: f64,
    /// A snapshot taken first of changes found in the directory that were not captured yet.
    pub captured_first: Option<SnapshotId>,
    /// Files that capture found written in place through their link to a store object.
    pub written_through: Vec<super::WrittenThrough>,
    /// Requirements the install broke, committed anyway with `--allow-conflicts`.
    pub conflicts: Option<ConflictReport>,
}

/// Runs `request` on the environment as one transaction.
pub fn install(
    store: &Store,
    selector: Option<&str>,
    request: Request,
    options: &InstallOptions,
) -> Result<InstallReport> {
    request.check_requirements_files()?;
    if !options.no_sandbox {
        let env_root = PathBuf::from(store.find_env(selector)?.path);
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        if let Some(option) = request.writes_outside(&env_root, &cwd) {
            // Set in the environment, it may be a habit of the user's shell rather than meant here.
            let unset = match option.split_once('=') {
                Some((var, _)) if var.starts_with("PIP_") => format!("unset {var} for blast, "),
                _ => String::new(),
            };
            return Err(Error::Invalid(format!(
                "`{option}` writes outside the environment, and the sandbox keeps all but the environment \
                 read-only (and `/tmp` private to the installer): {unset}run the installer yourself for \
                 that, or pass --no-sandbox"
            )));
        }
        refuse_hidden_paths(store, &request, &cwd)?;
    }
    let at_head =
        super::snapshot::open_env_at_head(store, selector, "changes found before an install")?;
    let (label, captured_first) = (at_head.env.label().to_owned(), at_head.captured_first);
    let mut report = install_at_head(store, at_head.env, captured_first, request, options)
        .map_err(|e| e.after_capture(&label, captured_first))?;
    report.written_through = at_head.written_through;
    Ok(report)
}

/// The install, on an environment whose directory is at its HEAD (`captured_first`: just made so).
fn install_at_head(
    store: &Store,
    mut env: Env,
    captured_first: Option<SnapshotId>,
    request: Request,
    options: &InstallOptions,
) -> Result<InstallReport> {
    // From here: time spent waiting for another command's lock on the environment is not the
    // install's (`blast stats` judges installs by it).
    let started = Instant::now();
    let head_id = env.head()?;
    let head = store.snapshot(&head_id)?;
    let head_tree = store.tree_of(&head)?;
    let installer = installer::choose(
        env.root(),
        &env.record.python,
        &head_tree,
        options.installer,
    )?;
    // Two staging areas: one where the installer works (the overlay's directories, or the copy),
    // removed when the install ends, and one for the new objects, which its commit moves into place.
    let area = store.objects().begin()?;
    let staging = store.objects().begin()?;
    let run = Run {
        store,
        env: &env,
        head_tree: &head_tree,
        installer: &installer,
        request: &request,
        options,
        area: area.dir(),
        staging: &staging,
        installer_time: Cell::default(),
    };
    // Until here a signal ends blast at once, which loses nothing: nothing is staged yet (unless the
    // command's latch, held until its report is printed, notes it: then as below). From here on, while
    // the installer runs, it goes to the installer; before and after, it is noted: the installer gets
    // it at its start, and the install stops before it commits, or finishes the move it began.
    let latch = sandbox::Latch::set();
    crash::point("installer-starting");
    let (new_tree, upper) = if options.no_sandbox {
        (run.on_copy()?, None)
    } else {
        let (tree, upper) = run.sandboxed()?;
        (tree, Some(upper))
    };
    let installer_seconds = run.installer_time.get().as_secs_f64();

    let mut report = InstallReport {
        env: env.label().to_owned(),
        snapshot: None,
        parent: head_id,
        message: request.describe(),
        packages: Vec::new(),
        installer: installer.description.clone(),
        sandboxed: !options.no_sandbox,
        changes_in_memory: upper.as_ref().is_some_and(|u| u.in_memory.is_some()),
        added: 0,
        modified: 0,
        removed: 0,
        installer_seconds,
        total_seconds: 0.0,
        captured_first,
        written_through: Vec::new(),
        conflicts: None,
    };
    crash::point("installer-ended");
    if let Some(signal) = latch.received() {
        return Err(Error::Interrupted {
            env: env.label().to_owned(),
            signal,
        });
    }
    if new_tree == head_tree {
        // What the store lacked or held damaged (`blast verify` names them) is stored again.
        staging.commit()?;
        report.total_seconds = started.elapsed().as_secs_f64();
        record_duration(store, &env, report.total_seconds);
        return Ok(report);
    }
    let operation = match request {
        Request::Install { .. } => "install",
        Request::Uninstall { .. } => "uninstall",
        Request::Pip { .. } => "pip",
    };
    // Once read, the installer's upper directory is needed only for its bytecode: on the disk, the
    // rest goes while the commit runs, as removals wait on the device where the filesystem discards
    // freed blocks.
    let committed = std::thread::scope(|scope| {
        if let Some(upper) = upper.as_ref().filter(|u| u.in_memory.is_none()) {
            scope.spawn(|| crate::fsutil::clear_tree(&upper.path, &|name| name == PYCACHE));
        }
        commit_changes(
            store,
            &mut env,
            Changes {
                head: &head,
                head_tree,
                new_tree: &new_tree,
                staging,
                operation,
                message: report.message.clone(),
                allow_conflicts: options.allow_conflicts,
                latch: Some(&latch),
            },
        )
    })?;
    if let Some(upper) = upper {
        carry_over_bytecode(&upper.path, env.root(), "");
    }
    drop(area);
    report.snapshot = Some(committed.snapshot);
    (report.added, report.modified, report.removed) =
        (committed.added, committed.modified, committed.removed);
    report.packages = committed.packages;
    report.conflicts = committed.conflicts;
    report.total_seconds = started.elapsed().as_secs_f64();
    record_duration(store, &env, report.total_seconds);
    Ok(report)
}

/// A changed tree to commit on top of an environment's HEAD.
pub(crate) struct Changes<'a> {
    pub head: &'a Snapshot,
    pub head_tree: Tree,
    pub new_tree: &'a Tree,
    /// Holds the new tree's new objects.
    pub staging: Staging<'a>,
    pub operation: &'a str,
    pub message: String,
    pub allow_conflicts: bool,
    /// Signals noted since the program that made the changes ended: one stops the commit before the
    /// store or HEAD changes.
    pub latch: Option<&'a sandbox::Latch>,
}

/// What a commit made.
pub(crate) struct Committed {
    pub snapshot: SnapshotId,
    pub packages: Vec<PackageChange>,
    pub added: usize,
    pub modified: usize,
    pub removed: usize,
    /// Requirements the changes broke (committed because conflicts were allowed).
    pub conflicts: Option<ConflictReport>,
}

/// Makes `changes` the environment's new snapshot: its package view, the conflict check (refusing
/// what breaks a requirement unless allowed), then the crash-safe move of HEAD.
pub(crate) fn commit_changes(
    store: &Store,
    env: &mut Env,
    changes: Changes<'_>,
) -> Result<Committed> {
    let Changes {
        head,
        head_tree,
        new_tree,
        staging,
        operation,
        message,
        allow_conflicts,
        latch,
    } = changes;
    let (mut added, mut modified, mut removed) = (0, 0, 0);
    for change in head_tree.changes_to(new_tree) {
        match change {
            PathChange::Added(..) => added += 1,
            PathChange::Modified(..) => modified += 1,
            PathChange::Removed(..) => removed += 1,
        }
    }
    // The directory as it is now, read beside the package view and the conflict check: the installer
    // read it as it was while it ran, and the apply starts from HEAD, so a change made meanwhile
    // could be overwritten, or make the changes wrong (a `*.dist-info` removed: pip saw nothing to
    // uninstall).
    let (scan, checked) = std::thread::scope(|scope| {
        let shared: &Env = env;
        let scan = scope.spawn(move || {
            crate::transition::scan_or_empty(shared, load_stat_cache(store, &shared.record.id))
        });
        let checked = (|| {
            let packages =
                packages_of(new_tree, &env.record.python.purelib, |_, node| match node {
                    Node::File { object, .. } => staging.read_object(object),
                    _ => Ok(Vec::new()),
                })?;
            let conflicts = conflicts_introduced_by(
                store,
                env,
                &head_tree,
                new_tree,
                &|id| staging.read_object(id),
                allow_conflicts,
            )?;
            Ok::<_, Error>((packages, conflicts))
        })();
        let scan = scan
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (scan, checked)
    });
    let (packages, conflicts) = checked?;
    let scan = scan?;
    // It held HEAD when the installer started (changes found then were captured first).
    let meanwhile: Vec<String> = head_tree
        .changes_to(scan.tree())
        .iter()
        .map(|change| change.path().to_owned())
        .collect();
    if !meanwhile.is_empty() {
        return Err(Error::ChangedMeanwhile {
            env: env.label().to_owned(),
            operation: operation.to_owned(),
            paths: meanwhile,
        });
    }
    let package_changes = package_changes(
        &head.packages,
        &packages,
        Some(InstalledFrom {
            before: &head_tree,
            after: new_tree,
            purelib: &env.record.python.purelib,
        }),
    );
    if let Some(conflicts) = &conflicts
        && !allow_conflicts
    {
        return Err(Error::ConflictsIntroduced {
            env: env.label().to_owned(),
            operation: operation.to_owned(),
            report: conflicts.to_string(),
        });
    }
    let id = super::stage_snapshot_on(&staging, head, &head_tree.layer_to(new_tree), packages)?;
    if let Some(signal) = latch.and_then(sandbox::Latch::received) {
        return Err(Error::Interrupted {
            env: env.label().to_owned(),
            signal,
        });
    }
    staging.commit()?;
    let cache = scan.into_cache();
    move_head(
        store,
        env,
        Move {
            operation: operation.to_owned(),
            message: Some(message),
            to: id,
            difference: Difference::Trees {
                current: head_tree,
                target: Some(new_tree.clone()),
            },
            cache,
            with_journal: Batch::default(),
        },
    )?;
    Ok(Committed {
        snapshot: id,
        packages: package_changes,
        added,
        modified,
        removed,
        conflicts,
    })
}

/// Keeps the transaction's duration for `blast stats`. The transaction is over by then: a sample that
/// cannot be written (a full disk) is not worth reporting it as failed.
fn record_duration(store: &Store, env: &Env, seconds: f64) {
    let _ = metrics::record(store, MetricKind::Install, &env.record.id, seconds);
}

/// Requirements that hold in `before` and not in `after`, explained; `None` when the install broke none.
/// `read_object` reads the objects of either tree.
pub(crate) fn conflicts_introduced_by(
    store: &Store,
    env: &Env,
    before: &Tree,
    after: &Tree,
    read_object: &dyn Fn(&ObjectId) -> Result<Vec<u8>>,
    committed: bool,
) -> Result<Option<ConflictReport>> {
    let purelib = &env.record.python.purelib;
    let read = |_: &str, node: &Node| match node {
        Node::File { object, .. } => read_object(object),
        _ => Ok(Vec::new()),
    };
    let before = distributions_of(before, purelib, read)?;
    let after = distributions_of(after, purelib, read)?;
    let markers = marker_environment(store.index(), &env.record.python)?;
    Ok(conflicts_introduced(
        &before.found,
        &after.found,
        &markers,
        committed,
    ))
}

/// The parts of one installer run.
struct Run<'a> {
    store: &'a Store,
    env: &'a Env,
    head_tree: &'a Tree,
    installer: &'a Installer,
    request: &'a Request,
    options: &'a InstallOptions,
    /// Where the installer works.
    area: &'a Path,
    /// Where its new files are stored.
    staging: &'a Staging<'a>,
    /// How long the installer itself ran (reading its changes back is blast's work).
    installer_time: Cell<Duration>,
}

/// Where a sandboxed installer's changes are, read back and then dropped.
struct Upper {
    path: PathBuf,
    /// The tmpfs that holds them, when they were collected in memory: dropping it frees them.
    in_memory: Option<sandbox::InMemory>,
}

impl Run<'_> {
    /// Runs the installer (`run`), keeping how long it took.
    fn timed<T>(&self, run: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let outcome = run();
        self.installer_time.set(started.elapsed());
        outcome
    }

    /// Runs the installer in the sandbox over an overlay of the environment; returns the tree its
    /// changes make and where they are.
    fn sandboxed(&self) -> Result<(Tree, Upper)> {
        let root = self.area.join("root");
        std::fs::create_dir(&root).at("creating sandbox directory", &root)?;
        let env_python = self.env.root().join("bin/python");
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let protected = Protected::of(self.store);
        let Named {
            visible,
            projects,
            variables,
            ..
        } = named_paths(self.request, &cwd, protected.trusted(&cwd).as_deref());
        let mut cache_links = match self.installer.kind {
            InstallerKind::Uv => CacheLinks::open(&self.installer.caches(), |cache| {
                self.store.installer_cache_stats_path(cache)
            })?,
            InstallerKind::Pip => CacheLinks::default(),
        };
        // Made here, and named by their real paths: the sandbox binds a writable path only through
        // no symlink (see `sandbox::assemble_root`).
        let mut writable: Vec<PathBuf> = match cache_links.first_cache() {
            Some(cache) => vec![cache.to_owned()],
            None => self.installer.caches(),
        }
        .into_iter()
        .map(|cache| crate::fsutil::resolve_path(&cache).unwrap_or(cache))
        .collect();
        // The installer writes its cache: never the store's files or an environment's (found in
        // review: `PIP_CACHE_DIR=$BLAST_HOME/objects` let a build change a stored object). Checked
        // before it is made.
        let env_dirs: Vec<PathBuf> = self
            .store
            .index()
            .envs()?
            .iter()
            .map(|env| real(Path::new(&env.path)))
            .collect();
        if let Some(cache) = writable.iter().find(|cache| {
            protected.holds(cache)
                || cache.starts_with(&protected.store)
                || env_dirs.iter().any(|dir| cache.starts_with(dir))
        }) {
            return Err(Error::Invalid(format!(
                "the installer's cache `{}` lies in blast's store or an environment's directory, or \
                 holds the home or the store, and the installer writes it: set the cache elsewhere \
                 (PIP_CACHE_DIR, UV_CACHE_DIR or XDG_CACHE_HOME)",
                cache.display()
            )));
        }
        writable.retain(|cache| std::fs::create_dir_all(cache).is_ok());
        // A build may write into a local project, but never into what holds the home or the store,
        // nor into another environment inside the project.
        let projects: Vec<PathBuf> = projects
            .into_iter()
            .filter(|p| !protected.holds(p))
            .collect();
        let rebound_read_only = self
            .store
            .index()
            .envs()?
            .into_iter()
            .map(|other| real(Path::new(&other.path)))
            .filter(|other| {
                other != &real(self.env.root()) && projects.iter().any(|p| other.starts_with(p))
            })
            .collect();
        writable.extend(projects);
        let in_memory = self
            .installer
            .writes_little(self.request, cache_links.first_cache());
        let overlay =
            sandbox::Overlay::make(self.env.root(), &self.area.join("changes"), in_memory)?;
        let mut spec = Spec {
            program: self.installer.program(&env_python),
            args: self.installer.args(self.request, &env_python),
            set_env: installer_env()
                .into_iter()
                .chain(
                    self.installer
                        .sandbox_env(self.request, cache_links.first_cache()),
                )
                .chain(self.options.offline.then(|| self.installer.offline_env()))
                .collect(),
            remove_env: credential_variables(&variables),
            cwd: cwd.clone(),
            root,
            overlay: Some(overlay.clone()),
            writable,
            rebound_read_only,
            visible: visible.into_iter().chain([cwd]).collect(),
            hidden: Vec::new(),
            revealed: Vec::new(),
            network: !self.options.offline,
            limits: sandbox::Limits::default(),
            stdout_to_stderr: !self.options.installer_stdout,
            second_signal_kills: true,
        };
        spec.hide_secrets(INSTALLER_CONFIG);
        let ran = match self
            .store
            .index()
            .released(|| self.timed(|| sandbox::run(&spec)))??
        {
            Ok(ran) => ran,
            Err(refusal) => {
                return Err(Error::SandboxRefused {
                    fix: refusal.fix(Some("--no-sandbox")),
                    step: refusal.step,
                    detail: refusal.detail,
                });
            }
        };
        self.check(ran.outcome, ran.interrupted)?;
        cache_links.hide(&spec.hidden);
        let upper = Upper {
            path: overlay.upper(&ran),
            in_memory: ran.in_memory,
        };
        let tree = capture::scan_changeset(
            &upper.path,
            self.head_tree,
            &self.env.placeholders(),
            self.sink(),
            &mut cache_links,
        )?;
        Ok((tree, upper))
    }

    /// `--no-sandbox`: the installer works on a staging copy of the environment, read back after.
    fn on_copy(&self) -> Result<Tree> {
        let copy = self.area.join("env");
        let placeholders = Placeholders {
            env_prefix: copy.display().to_string(),
            python_bin: self.env.record.python.bin_dir.clone(),
        };
        let mut cache = StatCache::default();
        // Root writes through an object's read-only mode: the installer (a build script) writing a
        // hardlinked file in place would change the store's object, and every environment sharing it,
        // whatever the install's outcome. Non-root, such a write fails unless it first makes the file
        // writable (its owner may), as it would in the environment itself.
        let mode = match link_mode(self.store, self.env.root())? {
            LinkMode::Hardlink if nix::unistd::geteuid().is_root() => LinkMode::Copy,
            mode => mode,
        };
        Materializer {
            store: self.store.objects(),
            placeholders: &placeholders,
            mode,
        }
        .apply(&copy, &Tree::default(), self.head_tree, &mut cache)?;
        let env_python = copy.join("bin/python");
        let program = self.installer.program(&env_python);
        let args = self.installer.args(self.request, &env_python);
        let ran = self.store.index().released(|| {
            self.timed(|| {
                sandbox::run_unconfined(
                    &program,
                    &args,
                    &installer_env(),
                    !self.options.installer_stdout,
                )
            })
        })??;
        self.check(ran.outcome, ran.interrupted)?;
        let scan = capture::scan(&copy, cache, &placeholders, Some(self.sink()))?;
        Ok(scan.into_parts().0)
    }

    /// What probably made the installer fail, when something tells: a full filesystem, a pip command
    /// that would have asked a question, or `pip check` reporting what it found.
    fn failure_hint(&self) -> String {
        let full = self.full_filesystem_hint();
        if !full.is_empty() {
            return full;
        }
        if !self.options.no_sandbox
            && let Some(hint) = self.withheld_hint()
        {
            return hint;
        }
        match self.request {
            Request::Pip { args }
                if crate::installer::pip_command(args).is_some_and(|i| args[i] == "uninstall")
                    && !args.iter().any(|a| a == "-y" || a == "--yes") =>
            {
                "; pip asks before it uninstalls, and blast gives it no input: pass `-y`".into()
            }
            Request::Pip { args }
                if crate::installer::pip_command(args).is_some_and(|i| args[i] == "check") =>
            {
                "; `pip check` fails when a requirement does not hold, as it printed above \
                 (`blast check` explains why)"
                    .into()
            }
            _ if !self.options.no_sandbox => self.credentials_hint(),
            _ => String::new(),
        }
    }

    /// The credentials the sandbox kept from the installer (see [`credential_variables`]): a private
    /// index or a build may have needed one.
    fn credentials_hint(&self) -> String {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let trusted = Protected::of(self.store).trusted(&cwd);
        let named = named_paths(self.request, &cwd, trusted.as_deref());
        // Those it may be handed; blast's own registry login never is.
        let kept: Vec<String> = credential_variables(&named.variables)
            .into_iter()
            .filter(|name| {
                name != "SSH_AUTH_SOCK" && !name.to_ascii_uppercase().starts_with("BLAST_REGISTRY_")
            })
            .collect();
        match kept.is_empty() {
            true => String::new(),
            false => format!(
                "; the sandbox kept {} from the installer, as credentials: to hand one to it, name it \
                 as `${{NAME}}` in a requirements file (pip and uv expand it there), set it as the \
                 installer's own setting (`PIP_…`, `UV_…`), or pass --no-sandbox",
                kept.join(", ")
            ),
        }
    }

    /// Local paths the request's requirements files name that the sandbox did not show (or showed
    /// read-only): the installer fails on them with a message that cannot say why.
    fn withheld_hint(&self) -> Option<String> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let trusted = Protected::of(self.store).trusted(&cwd);
        let named = named_paths(self.request, &cwd, trusted.as_deref());
        let withheld = named.withheld();
        let first = withheld.first()?;
        let untrusted = || {
            format!(
                "the working directory, `{}`, holds your home or blast's store, so it does not count",
                cwd.display()
            )
        };
        let (shown, how) = match (first.read_only, &trusted) {
            (true, Some(trusted)) if first.path.starts_with(trusted) => (
                "showed",
                "to the installer read-only (a project a requirements file names is writable only \
                 below the working directory and, there, below the file's own directory or the \
                 project the file belongs to)"
                    .to_owned(),
            ),
            (true, Some(_)) => (
                "showed",
                "to the installer read-only (a project a requirements file names is writable only \
                 below the working directory)"
                    .to_owned(),
            ),
            (true, None) => (
                "showed",
                format!(
                    "to the installer read-only (a project a requirements file names is writable \
                     only below the working directory, and {})",
                    untrusted()
                ),
            ),
            (false, Some(_)) => (
                "did not show",
                "to the installer (what a requirements file names is shown below its own directory \
                 or the working directory)"
                    .to_owned(),
            ),
            (false, None) => (
                "did not show",
                format!(
                    "to the installer (what a requirements file names is shown below its own \
                     directory or the working directory, and {})",
                    untrusted()
                ),
            ),
        };
        let more = match withheld.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        // A project is named for an editable install, as requirements files mostly name them; an
        // archive as it is.
        let editable = match first.path.is_dir() {
            true => "-e ",
            false => "",
        };
        Some(format!(
            "; the sandbox {shown} `{}`, which `{}` names{more}, {how}: run blast from a directory \
             that holds both, name it on the command line (`blast install -- {editable}{}`), or \
             pass --no-sandbox",
            first.path.display(),
            first.file.display(),
            crate::shell::word(&first.path.display().to_string())
        ))
    }

    /// The installer writes its changes into the run's area, in the store: when that filesystem is
    /// (nearly) full, that is most likely why it failed, and the user should hear which one it is.
    fn full_filesystem_hint(&self) -> String {
        const NEARLY_FULL: u64 = 1 << 20;
        match nix::sys::statvfs::statvfs(self.area) {
            Ok(fs) if fs.blocks_available().saturating_mul(fs.fragment_size()) < NEARLY_FULL => {
                format!(
                    "; the filesystem holding the store (`{}`) is full: free space on it (`blast clean` removes what no environment needs) and run the command again",
                    self.store.home().display()
                )
            }
            _ => String::new(),
        }
    }

    fn sink(&self) -> Sink<'_> {
        Sink {
            staging: self.staging,
            head: None,
        }
    }

    /// The installer's outcome as the install's: one during which blast got a signal (`interrupted`)
    /// was interrupted, whatever its code (pip exits 1 on KeyboardInterrupt, or may have finished).
    fn check(&self, outcome: Outcome, interrupted: Option<i32>) -> Result<()> {
        let env = self.env.label().to_owned();
        let (status, hint) = match (outcome, interrupted) {
            // Ctrl-C pressed as the installer finished still cancels.
            (_, Some(signal)) => return Err(Error::Interrupted { env, signal }),
            (Outcome::Exited(0), None) => return Ok(()),
            (Outcome::Signaled(signal), None)
                if [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT].contains(&signal) =>
            {
                return Err(Error::Interrupted { env, signal });
            }
            (Outcome::Exited(code), None) => (format!("exit status {code}"), self.failure_hint()),
            (Outcome::Signaled(signal), None) => (
                format!("killed by signal {signal}"),
                self.full_filesystem_hint(),
            ),
            (Outcome::Stopped(hit), None) => (format!("stopped: {hit}"), String::new()),
        };
        Err(Error::InstallerFailed {
            env,
            installer: self.installer.description.clone(),
            status,
            hint,
        })
    }
}

/// Variables that hold credentials, by their names: kept from the installer, which runs whatever
/// build code an sdist brings, with the network on (found by exploratory testing: a build read
/// `BLAST_REGISTRY_PASSWORD` and `AWS_SECRET_ACCESS_KEY` as it would `~/.aws`, which the sandbox hides).
/// The installers' own settings (`PIP_*`, `UV_*`: an index URL with its token) stay, and so do the
/// variables a requirements file names as `${NAME}`, which pip and uv expand.
fn credential_variables(named: &BTreeSet<String>) -> Vec<String> {
    const WORDS: &[&str] = &[
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "CREDENTIAL",
        "API_KEY",
        "APIKEY",
        "ACCESS_KEY",
        "PRIVATE_KEY",
    ];
    std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| {
            let upper = name.to_ascii_uppercase();
            let installers = upper.starts_with("PIP_") || upper.starts_with("UV_");
            upper == "SSH_AUTH_SOCK"
                || upper.starts_with("BLAST_REGISTRY_")
                || (!installers && !named.contains(name) && WORDS.iter().any(|w| upper.contains(w)))
        })
        .collect()
}

/// The installer asks nothing: it has no terminal (see [`sandbox`]), and git, which pip runs for a
/// `git+` requirement, says so rather than failing to open one.
fn installer_env() -> Vec<(String, String)> {
    vec![
        ("SOURCE_DATE_EPOCH".into(), SOURCE_DATE_EPOCH.into()),
        ("PIP_NO_INPUT".into(), "1".into()),
        ("GIT_TERMINAL_PROMPT".into(), "0".into()),
    ]
}

/// Refuses a file the request names where the sandbox hides secrets (see [`sandbox::Secrets`]): the
/// installer would read it as missing. Checked before anything runs, the capture of uncaptured
/// changes included.
fn refuse_hidden_paths(store: &Store, request: &Request, cwd: &Path) -> Result<()> {
    let secrets = sandbox::Secrets::of(INSTALLER_CONFIG);
    let trusted = Protected::of(store).trusted(cwd);
    let named = named_paths(request, cwd, trusted.as_deref());
    // A path as named, or where its symlinks lead.
    let hidden = |path: &Path| {
        secrets.hidden_dir_of(path).or_else(|| {
            let real = std::fs::canonicalize(path).ok()?;
            secrets.hidden_dir_of(&real)
        })
    };
    let hidden_include = named
        .unshown
        .iter()
        .find_map(|(path, _)| Some((path, hidden(path)?)));
    let hidden_named = named
        .visible
        .iter()
        .filter(|path| *path != cwd)
        .find_map(|path| Some((path, hidden(path)?)));
    if let Some((path, dir)) = hidden_named.or(hidden_include) {
        return Err(Error::Invalid(format!(
            "`{}` is in `{}`, which the sandbox hides from the installer (it may hold secrets): \
             move what the install needs elsewhere, or pass --no-sandbox",
            path.display(),
            dir.display()
        )));
    }
    match named.unshown.first() {
        Some((path, by)) => Err(Error::Invalid(format!(
            "`{}`, which `{}` includes, is outside what the sandbox shows the installer (what lies \
             below the directory of the requirements file you named, or below the working \
             directory): move it there, or pass --no-sandbox",
            path.display(),
            by.display()
        ))),
        None => Ok(()),
    }
}

/// The real paths of the user's home and of the store (a home reached through a symlink, `/home` →
/// `/var/home`, is still the home): a build may write into neither, nor into what holds them.
struct Protected {
    home: Option<PathBuf>,
    store: PathBuf,
}

impl Protected {
    fn of(store: &Store) -> Protected {
        Protected {
            home: std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| real(Path::new(&h))),
            store: real(store.home()),
        }
    }

    fn holds(&self, path: &Path) -> bool {
        self.store.starts_with(path) || self.home.as_ref().is_some_and(|h| h.starts_with(path))
    }

    /// The working directory, trusted with projects a requirements file names (it may come with a
    /// checkout), unless it holds the home or the store.
    fn trusted(&self, cwd: &Path) -> Option<PathBuf> {
        Some(real(cwd)).filter(|cwd| !self.holds(cwd))
    }
}

/// Paths the request names (requirement files, wheels, `--find-links` directories, local projects):
/// they stay visible in the sandbox even under its private `/tmp`. Returns (read-only paths, local
/// project directories, which a build may write into, as setuptools writes `*.egg-info` there). A
/// project the user names is writable. A requirements file may come from elsewhere: what it names is
/// shown only below its directory or `trusted` (the working directory, unless that holds the home or
/// the store), and a project it names is writable only below `trusted` (see [`Named::listed`]).
fn named_paths(request: &Request, cwd: &Path, trusted: Option<&Path>) -> Named {
    let mut named = Named {
        trusted: trusted.map(Path::to_owned),
        ..Named::default()
    };
    match request {
        Request::Install {
            specs,
            requirements,
            args,
        } => {
            for spec in specs {
                named.positional(cwd, spec);
            }
            for file in requirements {
                named.requirements(cwd, &cwd.join(file), None);
            }
            named.arguments(cwd, args);
        }
        Request::Uninstall { .. } => {}
        Request::Pip { args } => {
            // pip's command (`install`) is a word, not a path.
            let command = crate::installer::pip_command(args);
            let rest: Vec<String> = (0..args.len())
                .filter(|&i| Some(i) != command)
                .map(|i| args[i].clone())
                .collect();
            named.arguments(cwd, &rest);
        }
    }
    for files in std::env::var("PIP_FIND_LINKS").iter() {
        for word in files.split_whitespace() {
            named.value(cwd, word);
        }
    }
    named
}

/// What [`named_paths`] finds, as pip and uv read their arguments and requirements files.
#[derive(Default)]
struct Named {
    visible: Vec<PathBuf>,
    projects: Vec<PathBuf>,
    /// Requirements files read, against include cycles.
    read: Vec<PathBuf>,
    /// Variables the requirements files name as `${NAME}`, which the installers expand.
    variables: BTreeSet<String>,
    /// Below it, a project a requirements file names is writable (see [`named_paths`]).
    trusted: Option<PathBuf>,
    /// While a requirements file the user named is read: its directory (real path), below which, or
    /// below `trusted`, what it names is shown.
    file_root: Option<PathBuf>,
    /// While a requirements file the user named is read: the project it belongs to (see
    /// [`project_of`]), below which what it names is writable too.
    file_project: Option<PathBuf>,
    /// Requirements files another includes that are not shown (outside both), each with the file
    /// that includes it: pip would report them missing.
    unshown: Vec<(PathBuf, PathBuf)>,
    /// Local paths a requirements file names that are not shown, or projects shown read-only, each
    /// with the file: named when the installer fails, as its own message cannot say why.
    withheld: Vec<Withheld>,
}

/// A local path a requirements file names that the sandbox does not show as the user may expect.
struct Withheld {
    path: PathBuf,
    file: PathBuf,
    /// Shown, but read-only (a project the build may not write into).
    read_only: bool,
}

/// The names of `${NAME}` in a requirements file, as pip and uv expand them (`NAME` of capitals,
/// digits and `_`), after comments are dropped as pip drops them (a `#` at a line's start or after
/// blanks): a `${NAME}` in a comment expands to nothing and hands nothing over (found in review).
fn expanded_variables(text: &str) -> Vec<String> {
    let uncommented: String = text
        .lines()
        .map(|line| {
            let comment = line
                .char_indices()
                .find(|&(i, c)| {
                    c == '#' && (i == 0 || line[..i].ends_with(|b: char| b.is_whitespace()))
                })
                .map_or(line.len(), |(i, _)| i);
            &line[..comment]
        })
        .collect::<Vec<_>>()
        .join("\n");
    uncommented
        .split("${")
        .skip(1)
        .filter_map(|rest| {
            let (name, _) = rest.split_once('}')?;
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            valid.then(|| name.to_owned())
        })
        .collect()
}

/// Options whose value names requirements (read for the paths they name in turn).
const REQUIREMENTS_OPTIONS: &[&str] = &["-r", "--requirement", "-c", "--constraint"];
/// Options whose value is a project to install editable.
const EDITABLE_OPTIONS: &[&str] = &["-e", "--editable"];
/// How deep requirements files may include each other, and how many are read in all.
const MAX_INCLUDE_DEPTH: usize = 16;
const MAX_REQUIREMENTS_FILES: usize = 256;

impl Named {
    /// Installer arguments: options with their values, and requirements or projects named alone.
    fn arguments(&mut self, base: &Path, args: &[String]) {
        let mut words = args.iter().map(String::as_str);
        while let Some(word) = words.next() {
            let (option, attached) = split_option(word);
            let value = match attached {
                Some(value) => Some(value),
                None if takes_value(option) => words.next(),
                None => None,
            };
            match (option, value) {
                (o, Some(v)) if REQUIREMENTS_OPTIONS.contains(&o) => {
                    self.requirements(base, &base.join(v), None)
                }
                (o, Some(v)) if EDITABLE_OPTIONS.contains(&o) => {
                    self.project(&base.join(local_path(v)))
                }
                (_, Some(v)) => self.value(base, v),
                (o, None) if !o.starts_with('-') => self.positional(base, o),
                _ => {}
            }
        }
    }

    /// A requirements file and what it names: included files relative to it, projects and archives
    /// as the installers resolve them (pip from the working directory, uv from the file's directory).
    /// The file may come with a checkout, so what it names is shown only below its directory or the
    /// trusted one (see [`Named::listed`]).
    /// A requirements file, the user's or one `by` includes (`depth` deep), and what it names.
    fn requirements(&mut self, cwd: &Path, file: &Path, by: Option<(&Path, usize)>) {
        let Ok(real) = std::fs::canonicalize(file) else {
            return;
        };
        let depth = by.map_or(0, |(_, depth)| depth);
        match by {
            None => {
                self.file_root = real.parent().map(Path::to_owned);
                self.file_project = match (&self.file_root, &self.trusted) {
                    (Some(dir), Some(trusted)) => project_of(dir, trusted),
                    _ => None,
                };
            }
            Some((by, _)) if !self.in_scope(&real) => {
                self.unshown.push((file.to_owned(), by.to_owned()));
                return;
            }
            Some(_) => {}
        }
        if !real.is_file() || depth > MAX_INCLUDE_DEPTH || self.read.len() >= MAX_REQUIREMENTS_FILES
        {
            return;
        }
        if self.read.contains(&real) {
            return;
        }
        self.read.push(real.clone());
        self.visible.push(file.to_owned());
        let Ok(text) = std::fs::read_to_string(file) else {
            return;
        };
        self.variables.extend(expanded_variables(&text));
        let dir = file.parent().unwrap_or(cwd).to_owned();
        for line in text.replace("\\\n", " ").lines() {
            let line = match line.find(" #") {
                Some(comment) => &line[..comment],
                None if line.trim_start().starts_with('#') => "",
                None => line,
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(&first) = words.first() else {
                continue;
            };
            let (option, attached) = split_option(first);
            let value = attached.or_else(|| words.get(1).copied());
            let (named, project) = match value {
                Some(v) if REQUIREMENTS_OPTIONS.contains(&option) => {
                    self.requirements(cwd, &dir.join(v), Some((file, depth + 1)));
                    continue;
                }
                Some(v) if EDITABLE_OPTIONS.contains(&option) => (v, true),
                Some(v) if option.starts_with('-') => (v, false),
                _ if !option.starts_with('-') => match words.get(1) {
                    // `name @ file:///…` names its archive or project after the `@`.
                    Some(&"@") => (words.get(2).copied().unwrap_or(option), true),
                    _ => (option, true),
                },
                _ => continue,
            };
            let spelled_as_path = named.starts_with('.')
                || named.starts_with("file:")
                || named.contains(std::path::MAIN_SEPARATOR);
            let named = local_path(named);
            for base in [cwd, dir.as_path()] {
                self.listed(&base.join(&named), project, spelled_as_path.then_some(file));
            }
        }
        if depth == 0 {
            self.file_root = None;
            self.file_project = None;
        }
    }

    /// Whether `real` lies below the requirements file's directory or the trusted directory.
    fn in_scope(&self, real: &Path) -> bool {
        [&self.file_root, &self.trusted]
            .into_iter()
            .flatten()
            .any(|root| real.starts_with(root))
    }

    /// A path a requirements file names: shown only in scope ([`Named::in_scope`]) and only when it is
    /// a file or a directory, never a socket a build could talk through; a project directory is
    /// writable only below the trusted directory, and there below the file's directory or the project
    /// the file belongs to (`requirements/dev.txt` naming `-e .` of its checkout; a file vendored
    /// in `third_party/foo/` makes its own project writable, not the checkout around it).
    /// `file` is the requirements file when it spells the path as one (a bare word is a name too).
    fn listed(&mut self, path: &Path, project: bool, file: Option<&Path>) {
        let Ok(real) = std::fs::canonicalize(path) else {
            return;
        };
        if !is_file_or_dir(&real) {
            return;
        }
        if !self.in_scope(&real) {
            self.withhold(&real, file, false);
            return;
        }
        let below = |root: &Option<PathBuf>| root.as_ref().is_some_and(|r| real.starts_with(r));
        let project = project && real.is_dir();
        if project && below(&self.trusted) && (below(&self.file_root) || below(&self.file_project))
        {
            self.project(&real);
            return;
        }
        if project {
            self.withhold(&real, file, true);
        }
        if !self.visible.contains(&real) {
            self.visible.push(real);
        }
    }

    fn withhold(&mut self, real: &Path, file: Option<&Path>, read_only: bool) {
        if let Some(file) = file {
            self.withheld.push(Withheld {
                path: real.to_owned(),
                file: file.to_owned(),
                read_only,
            });
        }
    }

    /// What a requirements file names that no other way shows as it may expect: not shown at all, or
    /// a project shown read-only.
    fn withheld(&self) -> Vec<&Withheld> {
        let mut found: Vec<&Withheld> = Vec::new();
        for w in &self.withheld {
            let shown =
                self.projects.contains(&w.path) || (!w.read_only && self.visible.contains(&w.path));
            if !shown && !found.iter().any(|f| f.path == w.path) {
                found.push(w);
            }
        }
        found
    }

    /// A word named alone: a project directory, or a wheel or archive file.
    fn positional(&mut self, base: &Path, word: &str) {
        let path = base.join(local_path(word));
        if path.is_dir() {
            self.project(&path);
        } else if is_file_or_dir(&path) {
            self.visible.push(path);
        }
    }

    /// An option's value that names a path (a `--find-links` directory): read, not written.
    fn value(&mut self, base: &Path, word: &str) {
        let path = base.join(word.strip_prefix("file://").unwrap_or(word));
        if is_file_or_dir(&path) {
            self.visible.push(path);
        }
    }

    fn project(&mut self, path: &Path) {
        if path.is_dir() {
            // Where it really is: the checks against the home and the store compare real paths.
            let real = real(path);
            if !self.projects.contains(&real) {
                self.projects.push(real);
            }
        }
    }
}

/// A regular file or a directory (through symlinks): what a request may show the sandbox of what it
/// names. A socket or a device stays out.
fn is_file_or_dir(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file() || m.is_dir())
}

/// The local path a requirement names, as the installers read it: quotes around it, a `file://` URL
/// (percent-escapes decoded), a `#egg=`/`#subdirectory=` fragment and extras (`.[dev]`) left out.
fn local_path(word: &str) -> String {
    let word = word.trim_matches(|c| c == '"' || c == '\'');
    let (word, url) = match word.strip_prefix("file://") {
        Some(path) => (path, true),
        None => (word, false),
    };
    let word = match url {
        true => word.split('#').next().unwrap_or(word),
        false => word,
    };
    let word = match word.strip_suffix(']').and_then(|w| w.rsplit_once('[')) {
        Some((path, _extras)) => path,
        None => word,
    };
    match url {
        true => percent_encoding::percent_decode_str(word)
            .decode_utf8_lossy()
            .into_owned(),
        false => word.to_owned(),
    }
}

/// The project a requirements file in `dir` belongs to: the nearest directory from `dir` up, and
/// below `trusted`, holding `pyproject.toml`, `setup.py` or `setup.cfg`; none when a checkout's
/// `.git` comes first (a vendored repository).
fn project_of(dir: &Path, trusted: &Path) -> Option<PathBuf> {
    let mut at = dir;
    while at.starts_with(trusted) {
        if ["pyproject.toml", "setup.py", "setup.cfg"]
            .iter()
            .any(|marker| at.join(marker).is_file())
        {
            return Some(at.to_owned());
        }
        if at.join(".git").exists() {
            return None;
        }
        at = at.parent()?;
    }
    None
}

/// `--option=value` and `-xvalue` as (option, value); anything else as (word, none).
fn split_option(word: &str) -> (&str, Option<&str>) {
    if let Some((option, value)) = word.split_once('=')
        && option.starts_with("--")
    {
        return (option, Some(value));
    }
    for short in ["-r", "-c", "-e", "-f", "-i"] {
        if let Some(value) = word.strip_prefix(short)
            && !value.is_empty()
            && !word.starts_with("--")
        {
            return (short, Some(value));
        }
    }
    (word, None)
}

/// Whether a pip or uv option takes a value, for the ones that can name a path or a project; flags
/// and other options are left alone (a path after a flag is then read as named alone).
fn takes_value(option: &str) -> bool {
    REQUIREMENTS_OPTIONS.contains(&option)
        || EDITABLE_OPTIONS.contains(&option)
        || [
            "-f",
            "--find-links",
            "-i",
            "--index-url",
            "--extra-index-url",
            "--overrides",
            "--override",
            "--build-constraint",
            "--build-constraints",
            "-t",
            "--target",
            "--prefix",
            "--root",
            "--src",
            "--cache-dir",
            "--python",
            "-p",
        ]
        .contains(&option)
        // pip's general options (`--cert DIR`): their values are no projects.
        || crate::installer::GENERAL_OPTIONS
            .iter()
            .any(|&(name, value)| value && name == option)
}

/// Moves the bytecode the installer compiled from the upper directory into the environment. It is a
/// cache, not content; only regular files holding hash-checked bytecode (see [`SOURCE_DATE_EPOCH`])
/// come over, which Python checks against their source at every import, so whatever the installer left
/// there can neither run instead of a module nor stand for anything else. Best effort: moved by rename
/// only (uv, whose changes may be kept in memory, compiles to the disk; see
/// `Installer::writes_little`).
pub(crate) fn carry_over_bytecode(upper: &Path, env_root: &Path, rel: &str) {
    let Ok(entries) = std::fs::read_dir(upper.join(rel)) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let child = crate::tree::child_path(rel, name);
        if name != PYCACHE {
            carry_over_bytecode(upper, env_root, &child);
            continue;
        }
        let dest = env_root.join(&child);
        if !dest.parent().is_some_and(Path::is_dir) || std::fs::create_dir_all(&dest).is_err() {
            continue;
        }
        for file in std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if is_checked_bytecode(&file.path()) {
                let _ = std::fs::rename(file.path(), dest.join(file.file_name()));
            }
        }
    }
}

/// A regular `.pyc` file with one link whose header says "hash-checked" (flags 3, PEP 552).
fn is_checked_bytecode(path: &Path) -> bool {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let is_plain = path
        .symlink_metadata()
        .is_ok_and(|m| m.is_file() && m.nlink() == 1);
    let mut header = [0u8; 8];
    is_plain
        && path.extension().is_some_and(|e| e == "pyc")
        && std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut header))
            .is_ok()
        && header[4..8] == [3, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install_from(files: &[&Path]) -> Request {
        Request::Install {
            specs: Vec::new(),
            requirements: files.iter().map(|f| f.to_path_buf()).collect(),
            args: Vec::new(),
        }
    }

    /// Found in review: a requirements file could show the sandbox any path under `/tmp` (a
    /// Kerberos ticket, tmux's socket, which a read-only bind does not keep a build from talking to).
    #[test]
    fn a_requirements_file_shows_only_files_and_directories_below_its_own_or_the_working_one() {
        let tmp = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(tmp.path()).unwrap();
        let (repo, outside) = (real.join("repo"), real.join("outside"));
        std::fs::create_dir_all(repo.join("wheels")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("ticket"), "secret").unwrap();
        let socket = repo.join("agent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        std::fs::write(
            repo.join("req.txt"),
            format!(
                "-f wheels\n-f {}\n{}\n-f {}\n-r ../outside/ticket\n",
                outside.display(),
                outside.join("ticket").display(),
                socket.display()
            ),
        )
        .unwrap();
        let Named {
            visible,
            projects,
            unshown,
            ..
        } = named_paths(&install_from(&[&repo.join("req.txt")]), &real, None);
        assert_eq!(
            unshown,
            [(repo.join("../outside/ticket"), repo.join("req.txt"))]
        );
        assert!(visible.contains(&repo.join("wheels")), "{visible:?}");
        // What PIP_FIND_LINKS names is the user's own setting.
        let from_env: Vec<PathBuf> = std::env::var("PIP_FIND_LINKS")
            .unwrap_or_default()
            .split_whitespace()
            .map(|w| real.join(w))
            .collect();
        assert!(
            visible
                .iter()
                .all(|p| p.starts_with(&repo) || from_env.contains(p)),
            "shown outside the file's directory: {visible:?}"
        );
        assert!(!visible.contains(&socket), "{visible:?}");
        assert!(projects.is_empty(), "{projects:?}");
    }

    /// Found by exploratory testing: `requirements/dev.txt` naming `-e .` (or `-e ./lib`) from the
    /// checkout's root left the project read-only, and its build failed. Found in review: a file
    /// vendored in the checkout (`third_party/foo/requirements.txt`, a project of its own) must not make
    /// the checkout around it writable; a file from elsewhere makes nothing writable.
    #[test]
    fn projects_a_checkouts_requirements_file_names_are_writable() {
        let tmp = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(tmp.path()).unwrap();
        let (checkout, elsewhere) = (real.join("checkout"), real.join("elsewhere"));
        let vendored = checkout.join("third_party/foo");
        for dir in [
            &checkout.join("requirements"),
            &checkout.join("lib"),
            &vendored,
            &elsewhere,
        ] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(checkout.join("pyproject.toml"), "").unwrap();
        std::fs::write(vendored.join("setup.py"), "").unwrap();
        let lines = format!(
            "-e .[dev]\n-e \"./lib\"\n-e file://{}#egg=lib\n",
            checkout.join("lib").display()
        );
        std::fs::write(checkout.join("requirements/dev.txt"), &lines).unwrap();
        std::fs::write(elsewhere.join("req.txt"), &lines).unwrap();
        std::fs::write(vendored.join("requirements.txt"), "-e .\n").unwrap();
        let projects =
            |file: &Path| named_paths(&install_from(&[file]), &checkout, Some(&checkout)).projects;
        let writable = projects(&checkout.join("requirements/dev.txt"));
        assert!(
            writable.contains(&checkout) && writable.contains(&checkout.join("lib")),
            "{writable:?}"
        );
        assert!(projects(&elsewhere.join("req.txt")).is_empty());
        assert_eq!(
            projects(&vendored.join("requirements.txt")),
            std::slice::from_ref(&vendored)
        );
    }

    /// Found in review: the value of a pip general option (`--cert certs`) was taken for a project
    /// named alone, and made writable.
    #[test]
    fn a_general_options_value_is_no_project() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(tmp.path()).unwrap();
        std::fs::create_dir(dir.join("certs")).unwrap();
        let request = Request::Pip {
            args: ["--cert", "certs", "install", "rich"]
                .map(String::from)
                .to_vec(),
        };
        let named = named_paths(&request, &dir, Some(&dir));
        assert!(named.projects.is_empty(), "{:?}", named.projects);
        assert!(
            named.visible.contains(&dir.join("certs")),
            "{:?}",
            named.visible
        );
    }

    /// Found in review: includes spelled differently at each level (`../d/a.txt`, `../d/../d/a.txt`)
    /// were read again and again, branching 16 deep.
    #[test]
    fn requirements_files_including_each_other_are_read_once_each() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(tmp.path()).unwrap().join("d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.txt"), "-r ../d/b.txt\n-r ../d/../d/b.txt\n").unwrap();
        std::fs::write(dir.join("b.txt"), "-r ../d/a.txt\n-r ./../d/a.txt\n").unwrap();
        let started = std::time::Instant::now();
        let visible = named_paths(&install_from(&[&dir.join("a.txt")]), &dir, None).visible;
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let files = visible.iter().filter(|p| p.starts_with(&dir)).count();
        assert!(files <= 4, "{visible:?}");
    }
}
