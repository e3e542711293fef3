//! `blast run`: a command from the environment, run in the sandbox. The environment is read-only to it
//! (or, with `--capture`, writable through an overlay whose changes become a snapshot), the rest of the
//! filesystem too but for a private `/tmp` and the paths the user allows; the user's secrets are
//! hidden, the network can be cut to loopback, and resource limits end it when it goes past them.

use std::path::{Path, PathBuf};

use serde::Serialize;
use store_format::SnapshotId;

use super::install::{Changes, carry_over_bytecode, commit_changes};
use crate::capture;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{find_executable, real};
use crate::index::EnvRecord;
use crate::packages::PackageChange;
use crate::sandbox::{self, Limits, Outcome, Spec};
use crate::store::{Env, Store};

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The command and its arguments; the command is looked up in the environment's `bin` first.
    pub command: Vec<String>,
    pub network: bool,
    pub limits: Limits,
    /// The environment is writable through an overlay and what the command changes becomes a snapshot.
    pub capture: bool,
    /// Paths the command may write to besides the private `/tmp`.
    pub allow_write: Vec<PathBuf>,
    /// The command's standard output goes to blast's standard error (whose standard output carries a
    /// JSON report).
    pub output_to_stderr: bool,
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub env: String,
    pub program: PathBuf,
    /// The command's exit code; `None` when a signal or a limit ended it.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The limit that ended it, in words.
    pub stopped_by: Option<String>,
    /// How each limit set was enforced.
    pub limits: Vec<String>,
    /// With `--capture`: the snapshot its changes became (`None` when it changed nothing).
    pub snapshot: Option<SnapshotId>,
    /// With `--capture`: the snapshot made of changes found in the directory before the run.
    pub captured_first: Option<SnapshotId>,
    /// With `--capture`: files that capture found written in place through their link to a store
    /// object.
    pub written_through: Vec<super::WrittenThrough>,
    pub packages: Vec<PackageChange>,
    /// With `--capture`: requirements its changes broke, which the capture reports but does not refuse
    /// (found by exploratory testing: they went unsaid).
    pub conflicts: Option<crate::conflicts::ConflictReport>,
    #[serde(skip)]
    pub outcome: Outcome,
}

impl RunReport {
    /// The exit code blast passes on: the command's own, or 128 + the signal that ended it.
    pub fn status(&self) -> i32 {
        match self.outcome {
            Outcome::Exited(code) => code,
            Outcome::Signaled(sig) => 128 + sig,
            Outcome::Stopped(sandbox::LimitHit::CpuTime { .. }) => 128 + libc::SIGXCPU,
            Outcome::Stopped(_) => 128 + libc::SIGKILL,
        }
    }
}

/// Runs `options.command` from the environment in the sandbox and waits for it.
pub fn run(store: &Store, selector: Option<&str>, options: &RunOptions) -> Result<RunReport> {
    let Some((command, args)) = options.command.split_first() else {
        return Err(Error::Invalid(
            "no command to run: name one after `--` (`blast run -- python script.py`)".into(),
        ));
    };
    let store_home = store.home();
    let env_dirs = env_dirs(store)?;
    let allow_write = options
        .allow_write
        .iter()
        .map(|path| {
            let real = std::fs::canonicalize(path).map_err(|e| {
                Error::Invalid(format!(
                    "--allow-write `{}`: {e}; name a file or directory that exists",
                    path.display()
                ))
            })?;
            refuse_writable(&real, store_home, &env_dirs).map_err(|why| {
                Error::Invalid(format!("--allow-write `{}`: {why}", path.display()))
            })?;
            Ok(real)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut found = store.find_env(selector)?;
    let _running = crate::lock::acquire(
        &store.run_lock_path(&found.id),
        crate::lock::LockMode::Shared,
        "the environment (`blast remove` is removing it)",
    )?;
    // Mid-move, the directory is neither snapshot, or not yet (or no longer) where it is recorded: the
    // move is finished first (or its error given), as by any command that opens the environment,
    // before the program is looked for in it.
    let moving = store.index().relocation(&found.id)?.is_some();
    if moving || (!options.capture && store.index().journal(&found.id)?.is_some()) {
        drop(store.lock_env(&found.id, false)?);
        found = store
            .index()
            .env(&found.id)?
            .ok_or_else(|| Error::EnvNotFound(found.label().to_owned()))?;
    }
    // Without it, the program would be found on PATH and run on whatever Python is there.
    found.virtual_environment()?;
    let program = program_path(Path::new(&found.path), command, found.label())?;
    // A plain run reads the environment without its lock: a long-running command must not hold up
    // installs. A capturing one changes it, so it holds the lock as an install does.
    let (env, captured_first, written_through) = match options.capture {
        true => {
            let at_head = super::snapshot::open_env_at_head(
                store,
                selector,
                "changes found before a captured run",
            )?;
            (
                Some(at_head.env),
                at_head.captured_first,
                at_head.written_through,
            )
        }
        false => (None, None, Vec::new()),
    };
    let record = env.as_ref().map_or(found, |env| env.record.clone());
    let label = record.label().to_owned();
    let mut report = run_opened(store, env, record, program, args, allow_write, options)
        .map_err(|e| e.after_capture(&label, captured_first))?;
    report.captured_first = captured_first;
    report.written_through = written_through;
    Ok(report)
}

/// The store's environments: label and real directory.
fn env_dirs(store: &Store) -> Result<Vec<(String, PathBuf)>> {
    Ok(store
        .index()
        .envs()?
        .into_iter()
        .map(|env| (env.label().to_owned(), real(Path::new(&env.path))))
        .collect())
}

/// Why the command may not be given `path` (real) to write: the store, which holds what the sandbox
/// is made of; an environment's directory, whose files may be the store's objects themselves
/// (hardlinks: a write would change every environment that has the file, and the store's copy); and
/// `/tmp`, which it has already.
fn refuse_writable(
    path: &Path,
    store_home: &Path,
    env_dirs: &[(String, PathBuf)],
) -> std::result::Result<(), String> {
    if path == Path::new("/tmp") || path == Path::new("/dev/shm") {
        return Err(format!(
            "the command has a private `{}` of its own, writable already",
            path.display()
        ));
    }
    if !(path.is_dir() || path.is_file()) {
        return Err(
            "it is neither a directory nor a regular file (a socket, a device: through one, the \
             command could act outside the sandbox)"
                .into(),
        );
    }
    if store_home.starts_with(path) {
        return Err(format!(
            "it holds blast's store `{}`, which a command may not write: name a directory beside it",
            store_home.display()
        ));
    }
    // A named environment's directory lies in the store: what to do about it first.
    if let Some((label, _)) = env_dirs.iter().find(|(_, dir)| path.starts_with(dir)) {
        return Err(format!(
            "it is in the directory of environment `{label}`, whose files may be the store's own \
             objects: `blast run --capture` lets the command change the environment, as a snapshot"
        ));
    }
    if path.starts_with(store_home) {
        return Err(format!(
            "it is inside blast's store `{}`, which a command may not write",
            store_home.display()
        ));
    }
    Ok(())
}

/// The run, on the environment found (`env` when it is captured, locked and at its HEAD).
fn run_opened(
    store: &Store,
    mut env: Option<Env>,
    record: EnvRecord,
    program: PathBuf,
    args: &[String],
    allow_write: Vec<PathBuf>,
    options: &RunOptions,
) -> Result<RunReport> {
    let env_root = PathBuf::from(&record.path);
    // An environment that tracks its imports has its processes record them in the store
    // (`imports.rs`): that directory stays writable for them.
    // Environments inside a writable path stay read-only (the one captured is the overlay's).
    let rebound_read_only: Vec<PathBuf> = env_dirs(store)?
        .into_iter()
        .map(|(_, dir)| dir)
        .filter(|dir| allow_write.iter().any(|w| dir.starts_with(w)))
        .filter(|dir| !(options.capture && dir == &real(&env_root)))
        .collect();
    let mut allow_write = allow_write;
    let records = crate::imports::records_dir(store, &record.id);
    if records.is_dir() {
        allow_write.push(records);
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));

    let area = store.objects().begin()?;
    let dir = |name: &str| -> Result<PathBuf> {
        let path = area.dir().join(name);
        std::fs::create_dir(&path).at("creating sandbox directory", &path)?;
        Ok(path)
    };
    let overlay = match options.capture {
        true => Some(sandbox::Overlay::make(
            &env_root,
            &area.dir().join("changes"),
            false,
        )?),
        false => None,
    };
    let mut visible: Vec<PathBuf> = args
        .iter()
        .map(|a| cwd.join(a))
        .filter(|p| p.exists())
        .chain([cwd.clone(), program.clone()])
        .collect();
    // Said rather than left out without a word, which the command would report as missing.
    if let Some(socket) = visible.iter().find(|path| {
        use std::os::unix::fs::FileTypeExt;
        let at = crate::fsutil::lexically_normal(path);
        let private = ["/tmp", "/dev/shm"].iter().any(|dir| at.starts_with(dir));
        private && path.metadata().is_ok_and(|m| m.file_type().is_socket())
    }) {
        return Err(Error::Invalid(format!(
            "`{}` is a socket, which the sandbox does not show in its private `/tmp`: through it, the \
             command could act outside the sandbox",
            socket.display()
        )));
    }
    if overlay.is_none() {
        visible.push(env_root.clone());
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let path_var = std::env::join_paths(
        std::iter::once(env_root.join("bin")).chain(std::env::split_paths(&path_var)),
    )
    .map_err(|e| Error::Invalid(format!("PATH holds a path blast cannot extend: {e}")))?;
    let mut spec = Spec {
        program: program.clone(),
        args: args.to_vec(),
        set_env: vec![
            ("VIRTUAL_ENV".into(), record.path.clone()),
            ("PATH".into(), path_var.to_string_lossy().into_owned()),
        ],
        remove_env: vec!["PYTHONHOME".into(), "SSH_AUTH_SOCK".into()],
        cwd,
        root: dir("root")?,
        overlay,
        writable: allow_write,
        visible,
        hidden: Vec::new(),
        revealed: Vec::new(),
        rebound_read_only,
        network: options.network,
        limits: options.limits,
        stdout_to_stderr: options.output_to_stderr,
        second_signal_kills: false,
    };
    spec.hide_secrets(&[]);
    let ran = match store.index().released(|| sandbox::run(&spec))?? {
        Ok(ran) => ran,
        Err(refusal) if refusal.program_failed => {
            return Err(Error::CommandNotStarted {
                program: spec.program.clone(),
                missing: refusal.detail.starts_with("ENOENT"),
                detail: refusal.detail,
            });
        }
        Err(refusal) => {
            return Err(Error::SandboxRefused {
                fix: refusal.fix(None),
                step: refusal.step,
                detail: refusal.detail,
            });
        }
    };
    let outcome = ran.outcome;
    let mut report = RunReport {
        env: record.label().to_owned(),
        program,
        exit_code: match outcome {
            Outcome::Exited(code) => Some(code),
            _ => None,
        },
        signal: match outcome {
            Outcome::Signaled(sig) => Some(sig),
            _ => None,
        },
        stopped_by: match outcome {
            Outcome::Stopped(hit) => Some(hit.to_string()),
            _ => None,
        },
        limits: options.limits.enforcement(),
        snapshot: None,
        captured_first: None,
        written_through: Vec::new(),
        packages: Vec::new(),
        conflicts: None,
        outcome,
    };
    if let (Some(env), Some(overlay)) = (env.as_mut(), &spec.overlay) {
        // The command's own ending is said with the failure (found by exploratory testing: a capture
        // refused for a change made meanwhile left no word of how a long job had ended).
        let ended = match (&report.exit_code, &report.signal, &report.stopped_by) {
            (Some(code), ..) => format!("exit status {code}"),
            (_, Some(signal), _) => format!("signal {signal}"),
            (.., Some(limit)) => format!("a limit: {limit}"),
            _ => "an unknown status".to_owned(),
        };
        capture_run(
            store,
            env,
            &overlay.upper(&ran),
            &options.command,
            &mut report,
        )
        .map_err(|source| Error::RunNotCaptured {
            ended,
            source: Box::new(source),
        })?;
    }
    Ok(report)
}

/// `--capture`: what the command changed through the overlay becomes a snapshot, whatever its exit
/// code (it ran to its end or was stopped; either way its changes are what the user asked to keep).
fn capture_run(
    store: &Store,
    env: &mut Env,
    upper: &Path,
    command: &[String],
    report: &mut RunReport,
) -> Result<()> {
    let head = store.snapshot(&env.head()?)?;
    let head_tree = store.tree_of(&head)?;
    let staging = store.objects().begin()?;
    let new_tree = capture::scan_changeset(
        upper,
        &head_tree,
        &env.placeholders(),
        capture::Sink {
            staging: &staging,
            head: None,
        },
        &mut capture::CacheLinks::default(),
    )?;
    if new_tree == head_tree {
        return Ok(());
    }
    let committed = commit_changes(
        store,
        env,
        Changes {
            head: &head,
            head_tree,
            new_tree: &new_tree,
            staging,
            operation: "run",
            message: crate::installer::without_secrets(&command.join(" ")),
            allow_conflicts: true,
            latch: None,
        },
    )?;
    carry_over_bytecode(upper, env.root(), "");
    report.snapshot = Some(committed.snapshot);
    report.packages = committed.packages;
    report.conflicts = committed.conflicts;
    Ok(())
}

/// Where `command` is: a path as given, else the first executable of that name in the environment's
/// `bin`, then on `PATH`.
fn program_path(env_root: &Path, command: &str, env_label: &str) -> Result<PathBuf> {
    if command.contains('/') {
        let path = std::path::absolute(command).at("resolving", Path::new(command))?;
        return match path.is_file() {
            true => Ok(path),
            false => Err(Error::CommandNotFound(format!(
                "`{command}` is not a file: name a program in `{env_label}` or on PATH, or a path to one"
            ))),
        };
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    find_executable(
        command,
        std::iter::once(env_root.join("bin")).chain(std::env::split_paths(&path_var)),
    )
    .ok_or_else(|| {
        Error::CommandNotFound(format!(
            "`{command}` is not in `{}` or on PATH: install the package that provides it (`blast install -e {env_label} …`) or give its path",
            env_root.join("bin").display()
        ))
    })
}
