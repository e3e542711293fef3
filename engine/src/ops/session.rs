//! `blast start`, `blast kill` and the prompt hook: live sessions in which every change to the
//! environment becomes a snapshot without the user asking.
//!
//! `blast start` finds (or makes, for a project) the environment, then becomes the session's watcher
//! (see [`crate::watcher`]) with the user's shell as its child. It holds no store lock while the
//! session runs: each capture opens the store, takes the environment's lock and lets both go.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use store_format::SnapshotId;

use super::install::conflicts_introduced_by;
use super::snapshot::capture_into_snapshot;
use super::{CreateOptions, InstallOptions, InstallReport, RestoreTarget};
use crate::error::{Error, IoContext, Result};
use crate::images::Progress;
use crate::index::EnvRecord;
use crate::installer::Request as InstallRequest;
use crate::lock::{self, LockMode};
use crate::metrics::{self, MetricKind};
use crate::session::{self, Answer, CaptureNote, Conversation, Found, Request, SessionRecord};
use crate::shell::{self, ShellSetup};
use crate::store::Store;
use crate::watcher;

/// Where `blast start` makes a project's environment.
const PROJECT_ENV: &str = ".venv";

#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// An existing environment (name or path); default `./.venv`, made when missing.
    pub env: Option<String>,
    /// bash, zsh or fish (a name or a path); default `$SHELL`.
    pub shell: Option<String>,
    /// Restore this image (a `.blast` file or `oci://…`) as the new `./.venv`.
    pub image: Option<String>,
    pub python: Option<String>,
    /// For the first install of a project's dependencies.
    pub install: InstallOptions,
    /// Passed to that installer (`--index-url`, `--find-links`, …).
    pub installer_args: Vec<String>,
    /// Plain http for an `oci://` image.
    pub insecure: bool,
    /// Put the import-tracking hook in the environment (`blast imports` reports what it saw).
    pub track_imports: bool,
}

/// How the session's environment came to be.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Setup {
    Existing,
    /// A new `./.venv`, with the project's dependencies from `from` as its first layers.
    Created {
        from: Option<String>,
        install: Option<Box<InstallReport>>,
    },
    Restored {
        image: String,
    },
}

/// Told to the user before the shell starts.
#[derive(Debug, Serialize)]
pub struct SessionStarting {
    pub env: String,
    pub path: String,
    pub shell: String,
    pub setup: Setup,
    /// A session of this environment found dead and cleaned up.
    pub cleaned_stale: bool,
    /// The import-tracking hook, when asked for.
    pub tracking: Option<crate::imports::Tracking>,
    /// The snapshot made of changes found in the directory before the session.
    pub captured_first: Option<SnapshotId>,
    /// Files that capture found written in place through their link to a store object.
    pub written_through: Vec<super::WrittenThrough>,
    /// The `pip` the shell finds when the environment has none of its own (see [`foreign_pip`]).
    pub foreign_pip: Option<ForeignPip>,
}

/// A `pip` a session's shell finds that is not the environment's: another interpreter's, which would
/// install there, uncaptured. The shell has `PIP_REQUIRE_VIRTUALENV=1`, so an interpreter's own refuses
/// to install; another virtual environment's does not. The session names it as it starts.
#[derive(Debug, Serialize)]
pub struct ForeignPip {
    pub path: PathBuf,
    /// The virtual environment it is in (its `bin`'s parent holds a `pyvenv.cfg`).
    pub other_env: Option<PathBuf>,
}

fn foreign_pip(env_root: &Path) -> Option<ForeignPip> {
    let bin = env_root.join("bin");
    let path = crate::shell::session_path(env_root);
    let found = crate::fsutil::find_executable(
        "pip",
        std::iter::once(bin.clone()).chain(std::env::split_paths(&path)),
    )?;
    if found.starts_with(&bin) {
        return None;
    }
    // Where a link to it leads (found in review: a link to another environment's pip was taken for
    // an interpreter's own).
    let real = crate::fsutil::real(&found);
    let other_env = real
        .parent()
        .and_then(Path::parent)
        .filter(|dir| dir.join("pyvenv.cfg").is_file())
        .map(Path::to_owned);
    Some(ForeignPip {
        path: found,
        other_env,
    })
}

/// What the session did, once its shell is gone.
#[derive(Debug, Serialize)]
pub struct SessionEnded {
    pub env: String,
    pub captures: Vec<CaptureNote>,
    pub failures: Vec<String>,
    /// The shell's exit code (128 + a signal that ended it).
    pub shell_exit: i32,
}

/// Runs a session: prepares the environment, tells `starting`, then serves until the shell exits.
pub fn start(
    home: &Path,
    options: &StartOptions,
    progress: &dyn Progress,
    starting: &mut dyn FnMut(&SessionStarting),
) -> Result<SessionEnded> {
    // A session's variable inherited by something that outlived it (a terminal multiplexer, an IDE)
    // does not count.
    let live_socket = std::env::var_os(session::SOCKET_VAR)
        .filter(|s| !s.is_empty() && session::connect(Path::new(s)).is_ok());
    if let Some(socket) = live_socket {
        return Err(Error::Invalid(format!(
            "this shell is already a blast session (its socket is `{}`): leave it (`exit` or `blast kill`) to start another",
            PathBuf::from(socket).display()
        )));
    }
    let (kind, program) = shell::choose(options.shell.as_deref())?;
    let selector = options.env.as_deref().unwrap_or(PROJECT_ENV);
    let (record, setup) = {
        let store = Store::open_for_writing(home)?;
        let setup = prepare_env(&store, options, progress)?;
        (store.find_env(Some(selector))?, setup)
    };
    let home = std::fs::canonicalize(home).at("resolving store path", home)?;
    // Held while the session runs: of two `blast start`s racing for one environment, one runs, and
    // a session directory found by the one holding it is stale.
    let lock_path = session::lock_path(&home, &record.id);
    // `session::find` in another command holds the lock for a moment to tell a dead session from a
    // starting one: only a lock still held after a few tries is a session's.
    let mut session_lock = None;
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        session_lock = lock::try_acquire(&lock_path, LockMode::Exclusive)?;
        if session_lock.is_some() {
            break;
        }
    }
    let Some(_session_lock) = session_lock else {
        return Err(Error::Invalid(match session::find(&home, &record.id)? {
            Found::Live(live) => format!(
                "`{}` already has a live session (blast pid {}, shell pid {}): use that shell, or end it with `blast kill {}`",
                record.label(),
                live.pid,
                live.shell_pid,
                record.path
            ),
            // Held, with no socket answering yet: another `blast start` is getting its session ready.
            _ => format!(
                "a session of `{}` is starting in another `blast start`: use it once it is up, or end it with `blast kill {}`",
                record.label(),
                record.path
            ),
        }));
    };
    let (record, tracking, captured_first, written_through) = {
        let store = Store::open_for_writing(&home)?;
        // A move a killed command left is finished, and what changed in the directory before the
        // session is kept as its own snapshot: the session's captures hold its commands' changes.
        let super::snapshot::AtHead {
            env,
            captured_first,
            written_through,
        } = super::snapshot::open_env_at_head(
            &store,
            Some(&record.path),
            "changes found before the session",
        )?;
        // The session lock is the environment's found first: one made anew at its path meanwhile
        // is another's.
        if env.record.id != record.id {
            return Err(Error::Invalid(format!(
                "the environment at `{}` was replaced while the session started: run `blast start` again",
                record.path
            )));
        }
        let tracking = match options.track_imports {
            true => Some(crate::imports::enable_tracking(&store, &env)?),
            false => None,
        };
        (
            env.record.clone(),
            tracking,
            captured_first,
            written_through,
        )
    };
    let dir = session::dir(&home, &record.id);
    let cleaned_stale = dir.exists();
    session::remove(&dir)?;
    std::fs::create_dir_all(&dir).at("creating", &dir)?;
    let socket = session::socket_path(&dir);
    crate::fsutil::remove_file_if_exists(&socket)?;
    let listener = session::listen(&socket).at("listening on", &socket)?;
    let blast = std::env::current_exe().at("finding", Path::new("/proc/self/exe"))?;
    let env_root = PathBuf::from(&record.path);
    let mut command = shell::command(&ShellSetup {
        kind,
        program: &program,
        env_root: &env_root,
        session_dir: &dir,
        socket: &socket,
        blast: &blast,
    })?;
    // SAFETY: only prctl, signal dispositions, open, close and setpgid between fork and exec, all
    // async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            // The shell goes with the session: killed, the watcher leaves no shell behind.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGHUP);
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            // Without a terminal (a script under CI, cron, `setsid`) the shell has no job control
            // and stays in its caller's process group, which a hung-up bash hangs up as its running
            // command's: the caller and its other jobs died with the session. A group of its own
            // keeps it to the session. With a controlling terminal it stays in the foreground group,
            // where Ctrl-C reaches its commands and a password prompt can read the terminal (an
            // interactive shell on the terminal takes a group of its own anyway).
            let tty = libc::open(c"/dev/tty".as_ptr(), libc::O_RDONLY | libc::O_NOCTTY);
            if tty < 0 {
                libc::setpgid(0, 0);
            } else {
                libc::close(tty);
            }
            Ok(())
        });
    }
    starting(&SessionStarting {
        env: record.label().to_owned(),
        path: record.path.clone(),
        shell: kind.name().to_owned(),
        setup,
        cleaned_stale,
        tracking,
        captured_first,
        written_through,
        foreign_pip: foreign_pip(&env_root),
    });
    let session_record = SessionRecord {
        env_id: record.id.clone(),
        env_path: record.path.clone(),
        pid: std::process::id(),
        shell_pid: 0,
        shell: program.display().to_string(),
        started_ms: jiff::Timestamp::now().as_millisecond(),
    };
    // Ctrl-C and Ctrl-\ belong to the shell; the watcher must outlive them.
    // SAFETY: SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let mut capture =
        |message: &str, changed: Option<Instant>| capture(&home, &env_root, message, changed);
    let served = watcher::serve(
        &env_root,
        session_record,
        &session::record_path(&dir),
        listener,
        command,
        &mut capture,
    );
    session::remove(&dir)?;
    let served = served?;
    let shell_exit = served.shell_status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&served.shell_status).unwrap_or(0)
    });
    Ok(SessionEnded {
        env: record.label().to_owned(),
        captures: served.captures,
        failures: served.failures,
        shell_exit,
    })
}

/// Refuses what `start` takes only for the `./.venv` it makes, where the environment exists: left
/// unsaid, it would be ignored.
fn only_for_a_new_env(options: &StartOptions, env: &EnvRecord) -> Result<()> {
    // What is wrong first: the environment is recorded, its directory is not there.
    let new_only = options.python.is_some() || !options.installer_args.is_empty();
    if new_only {
        env.directory()?;
    }
    if options.python.is_some() {
        return Err(Error::Invalid(format!(
            "--python picks the interpreter of a new ./.venv, and `{}` exists (on {}): leave it out",
            env.label(),
            env.python.describe()
        )));
    }
    if !options.installer_args.is_empty() {
        return Err(Error::Invalid(format!(
            "installer options (`--index-url`, `--find-links`, `--no-index` and the like) are for the first install \
             into a new ./.venv, and `{}` exists: leave them out (`blast install` installs into it)",
            env.label()
        )));
    }
    Ok(())
}

/// Finds the session's environment; in a project without one, makes `./.venv`: restored from the
/// image, or created with the project's dependencies installed as its first layers (and removed
/// again when that install fails, so that the next `blast start` tries again).
fn prepare_env(store: &Store, options: &StartOptions, progress: &dyn Progress) -> Result<Setup> {
    if let Some(selector) = &options.env {
        if options.image.is_some() {
            return Err(Error::Invalid(
                "--image makes a new ./.venv: leave out the environment, or restore the image first with `blast restore`".into(),
            ));
        }
        let found = store.find_env(Some(selector))?;
        only_for_a_new_env(options, &found)?;
        return Ok(Setup::Existing);
    }
    match store.find_env(Some(PROJECT_ENV)) {
        Ok(found) => {
            return match &options.image {
                Some(_) => Err(Error::Invalid(
                    "./.venv is already a blast environment: leave out --image to start a session in it, or `blast remove ./.venv` first".into(),
                )),
                None => only_for_a_new_env(options, &found).map(|()| Setup::Existing),
            };
        }
        // The project's environment, moved with the project by hand: `blast move` takes it here.
        Err(moved @ Error::EnvMovedAway { .. }) => return Err(moved),
        Err(_) => {}
    }
    let path = PathBuf::from(PROJECT_ENV);
    if path.exists() {
        return Err(Error::Invalid(
            "./.venv exists but is not a blast environment: move it away (blast makes a new one) or pass an environment to start"
                .into(),
        ));
    }
    if let Some(image) = &options.image {
        let target = RestoreTarget::Path(path);
        if image.starts_with("oci://") {
            super::pull(
                store,
                &super::PullOptions {
                    reference: image.clone(),
                    target,
                    python: options.python.clone(),
                    insecure: options.insecure,
                },
                progress,
            )?;
        } else {
            super::restore(
                store,
                Path::new(image),
                &target,
                options.python.as_deref(),
                "restore",
                progress,
            )?;
        }
        return Ok(Setup::Restored {
            image: image.clone(),
        });
    }
    let dependencies = project_dependencies(&options.installer_args)?;
    super::create(
        store,
        &CreateOptions {
            name: None,
            path: Some(path),
            python: options.python.clone(),
            seed: true,
        },
    )?;
    let Some((from, request)) = dependencies else {
        return Ok(Setup::Created {
            from: None,
            install: None,
        });
    };
    match super::install(store, Some(PROJECT_ENV), request, &options.install) {
        Ok(report) => Ok(Setup::Created {
            from: Some(from),
            install: Some(Box::new(report)),
        }),
        Err(e) => {
            // Made a moment ago by this command: nothing in it is the user's.
            super::remove(store, PROJECT_ENV, true)?;
            Err(Error::ProjectEnvRemoved {
                path: PROJECT_ENV.to_owned(),
                from,
                source: Box::new(e),
            })
        }
    }
}

/// The project's dependencies: `[project].dependencies` of `./pyproject.toml`, else
/// `./requirements.txt`; with the file they came from.
fn project_dependencies(args: &[String]) -> Result<Option<(String, InstallRequest)>> {
    let pyproject = Path::new("pyproject.toml");
    if pyproject.is_file() {
        let text = std::fs::read_to_string(pyproject).at("reading", pyproject)?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            Error::Invalid(format!(
                "`pyproject.toml` is not valid TOML: {}; fix it, then run `blast start` again",
                e.message()
            ))
        })?;
        let dependencies = table
            .get("project")
            .and_then(|p| p.get("dependencies"))
            .map(|d| {
                d.as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|v| v.as_str().map(str::to_owned))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or_else(|| {
                        Error::Invalid(
                            "`pyproject.toml`: [project].dependencies must be a list of requirement strings".into(),
                        )
                    })
            })
            .transpose()?
            .unwrap_or_default();
        if !dependencies.is_empty() {
            return Ok(Some((
                "pyproject.toml".into(),
                InstallRequest::Install {
                    specs: dependencies,
                    requirements: Vec::new(),
                    args: args.to_vec(),
                },
            )));
        }
    }
    let requirements = Path::new("requirements.txt");
    if requirements.is_file() {
        return Ok(Some((
            "requirements.txt".into(),
            InstallRequest::Install {
                specs: Vec::new(),
                requirements: vec![requirements.to_owned()],
                args: args.to_vec(),
            },
        )));
    }
    Ok(None)
}

/// One capture of the session's environment: a snapshot of whatever changed, with the package
/// changes and the requirements the change broke. Its latency from `changed`, the last change seen,
/// goes to `blast stats`.
fn capture(
    home: &Path,
    env_root: &Path,
    message: &str,
    changed: Option<Instant>,
) -> Result<Option<CaptureNote>> {
    // The command line typed, for the history: a URL's password in it is not kept.
    let message = &crate::installer::without_secrets(message);
    let store = Store::open(home)?;
    let env = store.open_env(env_root.to_str())?;
    let before = store.tree_of(&store.snapshot(&env.head()?)?)?;
    let report = capture_into_snapshot(&store, &env, "capture", Some(message.to_owned()), None)?;
    let Some(id) = report.snapshot else {
        return Ok(None);
    };
    if let Some(changed) = changed {
        // The snapshot is committed: a sample that cannot be written is not worth failing it.
        let _ = metrics::record(
            &store,
            MetricKind::Capture,
            &env.record.id,
            changed.elapsed().as_secs_f64(),
        );
    }
    let written_through = report.written_through;
    let after = store.tree_of(&store.snapshot(&id)?)?;
    let conflicts = conflicts_introduced_by(
        &store,
        &env,
        &before,
        &after,
        &|object| store.objects().read_object(object),
        true,
    )?;
    Ok(Some(CaptureNote {
        snapshot: id,
        at_ms: jiff::Timestamp::now().as_millisecond(),
        message: message.to_owned(),
        packages: report.packages,
        written_through,
        added: report.added,
        modified: report.modified,
        removed: report.removed,
        conflicts: conflicts.map(|c| c.to_string()),
        command_failed: None,
    }))
}

/// What the prompt hook shows: the captures since the last prompt (outside a session, or when the
/// session does not answer, nothing); `None` when the session's watcher is gone, and its shell is to
/// end.
pub fn prompt_hook(command: Option<String>, status: Option<i32>) -> Option<Answer> {
    let Some(socket) = std::env::var_os(session::SOCKET_VAR).filter(|s| !s.is_empty()) else {
        return Some(Answer::default());
    };
    let failed = status.filter(|&s| s != 0);
    match Conversation::ask(Path::new(&socket), &Request::Prompt { command, failed }) {
        Ok((conversation, answer)) => {
            conversation.end();
            Some(answer)
        }
        // Nothing listens there any more: the watcher is gone (its shell outlived the hangup it
        // sent, by trapping it), and nothing would be captured.
        Err(Error::Io { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            None
        }
        Err(_) => Some(Answer::default()),
    }
}

/// The session's environment, when the shell that runs the prompt hook no longer has it activated
/// (`deactivate`, another environment's `activate`): its `pip` then installs elsewhere, and nothing of
/// that is captured, while the prompt still says `(blast)`.
pub fn deactivated_env() -> Option<String> {
    let env = std::env::var(session::SESSION_ENV_VAR)
        .ok()
        .filter(|e| !e.is_empty())?;
    let active = std::env::var("VIRTUAL_ENV").unwrap_or_default();
    let same = |a: &str, b: &str| {
        a == b
            || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
    };
    (!same(&env, &active)).then_some(env)
}

/// One session `blast kill` dealt with.
#[derive(Debug, Serialize)]
pub struct Killed {
    pub env: String,
    /// Its watcher had died; what it left was cleaned.
    pub stale: bool,
    pub captures: Vec<CaptureNote>,
    pub failures: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct KillReport {
    pub killed: Vec<Killed>,
    /// The environment asked about, when it had no session.
    pub no_session: Option<String>,
}

/// Ends the session of the selected environment (inside a session, its own), or with `all` every
/// session of the store: a final capture, the watcher stopped, the shell ended. Idempotent.
pub fn kill(home: &Path, selector: Option<&str>, all: bool) -> Result<KillReport> {
    let home = std::fs::canonicalize(home).at("resolving store path", home)?;
    let own_socket = std::env::var_os(session::SOCKET_VAR)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let (ids, label) = if all {
        (session::env_ids(&home)?, None)
    } else if let (None, Some(socket)) = (selector, &own_socket) {
        // A session of this store, or a variable left from another store's, or a made-up one.
        let id = socket
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .filter(|id| {
                *socket == session::socket_path(&session::dir(&home, id))
                    || std::fs::canonicalize(socket.parent().unwrap_or(socket))
                        .is_ok_and(|dir| dir == session::dir(&home, id))
            })
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "${} is set to `{}`, which is no session socket of the store at `{}`: unset it, \
                     or name the environment",
                    session::SOCKET_VAR,
                    socket.display(),
                    home.display()
                ))
            })?;
        let label = Store::open(&home)
            .ok()
            .and_then(|store| store.index().env(&id).ok().flatten())
            .map_or_else(|| id.clone(), |record| record.label().to_owned());
        (vec![id], Some(label))
    } else {
        let store = Store::open(&home)?;
        let record = store.find_env(selector)?;
        (vec![record.id.clone()], Some(record.label().to_owned()))
    };
    let mut report = KillReport {
        killed: Vec::new(),
        no_session: None,
    };
    for id in ids {
        // Again when the session ended as it was asked: it was ending already, and is looked at
        // once it is gone.
        while let Some(killed) = kill_one(&home, &id, own_socket.as_deref())? {
            match killed {
                KillOutcome::Done(killed) => {
                    report.killed.push(killed);
                    break;
                }
                KillOutcome::EndedMeanwhile => {}
            }
        }
    }
    if report.killed.is_empty() {
        report.no_session = label;
    }
    Ok(report)
}

enum KillOutcome {
    Done(Killed),
    /// The session closed the connection unanswered while it still held its lock: it was ending.
    EndedMeanwhile,
}

/// Ends the session of `id`, if one runs (`None` when none does).
fn kill_one(home: &Path, id: &str, own_socket: Option<&Path>) -> Result<Option<KillOutcome>> {
    let killed = match find_settled(home, id)? {
        Found::Nothing | Found::Busy => return Ok(None),
        Found::CleanedStale(record) => Killed {
            env: record.env_path,
            stale: true,
            captures: Vec::new(),
            failures: Vec::new(),
        },
        Found::Live(record) => {
            let socket = session::socket_path(&session::dir(home, id));
            let running = crate::watcher::installers_on(Path::new(&record.env_path));
            if !running.is_empty() {
                eprintln!(
                    "blast: waiting for the installer running on `{}` (pid {}) to finish before the \
                     session's last capture (up to {} s)…",
                    record.env_path,
                    crate::watcher::pid_list(&running),
                    session::INSTALLER_WAIT.as_secs()
                );
            }
            let (conversation, answer) = match Conversation::ask(&socket, &Request::Kill) {
                Ok(asked) => asked,
                // Died before its final capture: what it left is cleaned up as a dead one's.
                Err(Error::SessionGone(_)) if session::unowned(home, id)? => {
                    let _ = session::find(home, id)?;
                    return Ok(Some(KillOutcome::Done(Killed {
                        env: record.env_path,
                        stale: true,
                        captures: Vec::new(),
                        failures: Vec::new(),
                    })));
                }
                Err(Error::SessionGone(_)) => return Ok(Some(KillOutcome::EndedMeanwhile)),
                Err(e) => return Err(e),
            };
            conversation.end();
            // From another terminal, return once the session is over; inside it, the shell ending
            // ends this command too.
            if own_socket != Some(socket.as_path()) {
                wait_for_exit(record.pid);
            }
            Killed {
                env: record.env_path,
                stale: false,
                captures: answer.captures,
                failures: answer.failures,
            }
        }
    };
    Ok(Some(KillOutcome::Done(killed)))
}

/// The session of `env_id` once it is neither starting nor ending, waiting (and saying so after a
/// second) meanwhile: a session that is getting ready may be capturing what changed before it. A
/// stopped process holding it (a `blast start` suspended with Ctrl-Z) would keep it so for good: that
/// is an error naming the process.
fn find_settled(home: &Path, env_id: &str) -> Result<Found> {
    let started = std::time::Instant::now();
    let mut told = false;
    loop {
        match session::find(home, env_id)? {
            Found::Busy => {
                if started.elapsed() >= std::time::Duration::from_secs(1) {
                    let lock = session::lock_path(home, env_id);
                    if let Some(pid) = crate::lock::holders(&lock)
                        .into_iter()
                        .find(|pid| crate::processes::is_stopped(*pid))
                    {
                        return Err(Error::Invalid(format!(
                            "the session is starting or ending in process {pid}, which is stopped \
                             (Ctrl-Z in its terminal?): resume it (`fg` there, or `kill -CONT {pid}`), \
                             then run this again"
                        )));
                    }
                    if !told {
                        eprintln!("blast: waiting for the session, which is starting or ending…");
                        told = true;
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            found => return Ok(found),
        }
    }
}

/// Waits (up to ten seconds) for the process `pid` to be gone.
fn wait_for_exit(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    for _ in 0..1000 {
        // SAFETY: kill with signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } != 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The live session of an environment, for `blast status`.
pub(crate) fn session_status(home: &Path, env_id: &str) -> Option<session::SessionStatus> {
    let Ok(Found::Live(_)) = session::find(home, env_id) else {
        return None;
    };
    let socket = session::socket_path(&session::dir(home, env_id));
    let (conversation, answer) = Conversation::ask(&socket, &Request::Status).ok()?;
    conversation.end();
    answer.status
}
