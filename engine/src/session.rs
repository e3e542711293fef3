//! Live sessions: where a running `blast start` keeps its record and its control socket, how a stale
//! one (left by a crash) is recognised, and the line protocol its clients speak over the socket: the
//! shell's prompt hook, `blast kill` and `blast status`.
//!
//! A session lives in `$BLAST_HOME/sessions/<env id>/`: `session.json` (written once the socket
//! listens) and `control.sock`. A session is live when its socket accepts a connection; a record
//! whose socket does not is stale when no process holds the session's lock, and whoever finds it then
//! removes the directory.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use store_format::SnapshotId;

use crate::error::{Error, IoContext, Result};
use crate::packages::PackageChange;

/// Set in the session's shell: the control socket its prompt hook talks to.
pub const SOCKET_VAR: &str = "BLAST_SESSION";

/// Set in the session's shell: the environment's path, against which the prompt hook checks that the
/// shell still has it activated.
pub const SESSION_ENV_VAR: &str = "BLAST_SESSION_ENV";

/// The prompt hook's exit status that tells the shell to exit: the session is ending.
pub const END_SHELL_STATUS: u8 = 75;

/// How long a client waits for the session to answer; a capture of a large environment fits well.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the last capture of a session waits for an installer still running on the environment
/// (a `kill` waits that much longer for its answer).
pub const INSTALLER_WAIT: Duration = Duration::from_secs(120);

/// What a running session is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub env_id: String,
    pub env_path: String,
    /// The `blast start` process, which is the watcher.
    pub pid: u32,
    pub shell_pid: u32,
    pub shell: String,
    /// Unix milliseconds.
    pub started_ms: i64,
}

/// One capture the session made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaptureNote {
    pub snapshot: SnapshotId,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// What the history entry says: the session's command, or that the watcher saw it.
    pub message: String,
    pub packages: Vec<PackageChange>,
    pub added: usize,
    pub modified: usize,
    pub removed: usize,
    /// Requirements the change broke, explained.
    pub conflicts: Option<String>,
    /// Files written in place through their link to a store object, which is damaged with them.
    #[serde(default)]
    pub written_through: Vec<crate::ops::WrittenThrough>,
    /// The exit status of the session's command that made the change, when it failed: the snapshot
    /// holds what it left halfway.
    #[serde(default)]
    pub command_failed: Option<i32>,
}

/// A request to the session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// From the prompt hook: capture what the finished command changed, and hand over every capture
    /// not shown yet.
    Prompt {
        command: Option<String>,
        /// The command's exit status, when it failed.
        #[serde(default)]
        failed: Option<i32>,
    },
    /// From `blast kill`: a final capture, then the shell is ended.
    Kill,
    Status,
}

/// The session's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Answer {
    /// Captures to show.
    pub captures: Vec<CaptureNote>,
    /// Captures that failed, in words (the environment stays as it is, the next capture retries).
    pub failures: Vec<String>,
    pub status: Option<SessionStatus>,
    /// The session is ending: the shell should exit (the hook tells it by [`END_SHELL_STATUS`]).
    pub end_shell: bool,
}

/// A live session, for `blast status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionStatus {
    pub record: SessionRecord,
    pub uptime_seconds: u64,
    pub captures: usize,
    pub last_capture: Option<CaptureNote>,
}

/// The session directory of an environment.
pub fn dir(home: &Path, env_id: &str) -> PathBuf {
    home.join("sessions").join(env_id)
}

/// The lock a session holds for its lifetime: one session per environment.
pub fn lock_path(home: &Path, env_id: &str) -> PathBuf {
    home.join("locks").join(format!("{env_id}.session.lock"))
}

pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join("control.sock")
}

/// Connects to the session socket at `socket`, however long its path (see [`by_short_path`]).
pub fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    by_short_path(socket, |path| UnixStream::connect(path))
}

/// Listens on a new session socket at `socket`, however long its path (see [`by_short_path`]).
pub fn listen(socket: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    by_short_path(socket, |path| std::os::unix::net::UnixListener::bind(path))
}

/// Calls `use_path` with `socket`, or, when that is too long for a socket's address (108 bytes with
/// the NUL: a store whose path is longer than ~60 bytes), with `/proc/self/fd/N/NAME` through a handle
/// of its directory (found by exploratory testing: `blast start` failed "path must be shorter than
/// SUN_LEN"). Every process that talks to a session is blast, so each does the same.
fn by_short_path<T>(
    socket: &Path,
    use_path: impl FnOnce(&Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    use std::os::fd::AsRawFd;
    const MAX_ADDRESS: usize = 107;
    let (Some(dir), Some(name)) = (socket.parent(), socket.file_name()) else {
        return use_path(socket);
    };
    if socket.as_os_str().len() <= MAX_ADDRESS {
        return use_path(socket);
    }
    let handle = std::fs::File::open(dir)?;
    use_path(&Path::new(&format!("/proc/self/fd/{}", handle.as_raw_fd())).join(name))
}

pub fn record_path(dir: &Path) -> PathBuf {
    dir.join("session.json")
}

/// What is found in a session directory.
#[derive(Debug)]
pub enum Found {
    Nothing,
    Live(SessionRecord),
    /// A session starting (its lock held, its socket not yet answering: it may be capturing what
    /// changed before it) or ending.
    Busy,
    /// Left by a session that is gone (its directory was removed).
    CleanedStale(SessionRecord),
}

/// Looks at the session of `env_id`, removing it when it is stale.
pub fn find(home: &Path, env_id: &str) -> Result<Found> {
    let dir = dir(home, env_id);
    let record = match std::fs::read(record_path(&dir)) {
        Ok(bytes) => serde_json::from_slice::<SessionRecord>(&bytes).ok(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !unowned(home, env_id)? {
                return Ok(Found::Busy);
            }
            if dir.exists() {
                remove(&dir)?;
            }
            return Ok(Found::Nothing);
        }
        Err(e) => return Err(e).at("reading", &record_path(&dir)),
    };
    match record {
        Some(record) if connect(&socket_path(&dir)).is_ok() => Ok(Found::Live(record)),
        // A session starting (its directory made, its socket not yet listening) or ending holds its
        // lock: what it has there is its own.
        _ if !unowned(home, env_id)? => Ok(Found::Busy),
        Some(record) => {
            remove(&dir)?;
            Ok(Found::CleanedStale(record))
        }
        None => {
            remove(&dir)?;
            Ok(Found::Nothing)
        }
    }
}

/// Refuses what would take the environment from under a session: a live one, or one starting or
/// ending.
pub fn refuse_while_running(home: &Path, env: &crate::index::EnvRecord) -> Result<()> {
    let end_it = format!("blast kill {}", crate::shell::word(&env.path));
    match find(home, &env.id)? {
        Found::Live(live) => Err(Error::Invalid(format!(
            "`{}` has a live session (blast pid {}): end it first with `{end_it}`",
            env.label(),
            live.pid
        ))),
        Found::Busy => Err(Error::Invalid(format!(
            "a session of `{}` is starting or ending in another `blast start`: once it is up, end it \
             with `{end_it}`, then run this again",
            env.label()
        ))),
        Found::Nothing | Found::CleanedStale(_) => Ok(()),
    }
}

/// Whether no process holds the session's lock: a session directory found then was left by one that
/// died.
pub fn unowned(home: &Path, env_id: &str) -> Result<bool> {
    // Shared: two commands looking at once do not take each other for a session, which holds it
    // exclusively.
    Ok(
        crate::lock::try_acquire(&lock_path(home, env_id), crate::lock::LockMode::Shared)?
            .is_some(),
    )
}

/// Every environment id with a session directory.
pub fn env_ids(home: &Path) -> Result<Vec<String>> {
    let sessions = home.join("sessions");
    let entries = match std::fs::read_dir(&sessions) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at("listing", &sessions),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.at("listing", &sessions)?;
        if let Some(id) = entry.file_name().to_str() {
            ids.push(id.to_owned());
        }
    }
    ids.sort();
    Ok(ids)
}

pub fn remove(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at("removing", dir),
        _ => Ok(()),
    }
}

/// How often a command waiting for a session's answer looks whether its watcher is stopped.
const WATCHER_CHECK: Duration = Duration::from_secs(1);

/// The watcher of the session whose socket is `socket`, when it is stopped.
fn stopped_watcher(socket: &Path) -> Option<u32> {
    let bytes = std::fs::read(record_path(socket.parent()?)).ok()?;
    let record: SessionRecord = serde_json::from_slice(&bytes).ok()?;
    crate::processes::is_stopped(record.pid).then_some(record.pid)
}

/// An open request to a session: the answer is read, then the connection stays open until dropped
/// (the session ends the shell of a `kill` only once its client has let go).
pub struct Conversation {
    stream: UnixStream,
}

impl Conversation {
    /// Sends `request` to the session listening on `socket` and reads its answer.
    pub fn ask(socket: &Path, request: &Request) -> Result<(Conversation, Answer)> {
        // A watcher that died before reading the request resets the connection.
        let unreachable = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
                Error::SessionGone(socket.to_owned())
            }
            _ => Error::Io {
                action: "talking to the session at",
                path: socket.to_owned(),
                source: e,
            },
        };
        let mut stream = connect(socket).map_err(unreachable)?;
        let stopped = |pid: u32| {
            Error::Invalid(format!(
                "the session's watcher (blast pid {pid}) is stopped, and cannot answer: `kill -CONT \
                 {pid}` resumes it; then run this again"
            ))
        };
        // Before the request, which it would act on once resumed.
        if let Some(pid) = stopped_watcher(socket) {
            return Err(stopped(pid));
        }
        let timeout = match request {
            Request::Kill => ANSWER_TIMEOUT + INSTALLER_WAIT,
            _ => ANSWER_TIMEOUT,
        };
        // In slices: a watcher that is stopped (`kill -STOP`, a debugger) still has connections
        // accepted for it, and would keep the asker waiting for the whole timeout.
        stream
            .set_read_timeout(Some(WATCHER_CHECK))
            .map_err(unreachable)?;
        let mut line = serde_json::to_string(request)
            .map_err(|e| Error::Invalid(format!("internal: encoding a session request: {e}")))?;
        line.push('\n');
        stream.write_all(line.as_bytes()).map_err(unreachable)?;
        // Bytes, decoded once whole: a slice ending inside a character keeps its first bytes.
        let mut answer = Vec::new();
        let mut reader = BufReader::new(&stream);
        let asked = std::time::Instant::now();
        loop {
            match reader.read_until(b'\n', &mut answer) {
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) && asked.elapsed() < timeout =>
                {
                    if let Some(pid) = stopped_watcher(socket) {
                        return Err(stopped(pid));
                    }
                }
                Err(e) => return Err(unreachable(e)),
            }
        }
        if answer.is_empty() {
            return Err(Error::SessionGone(socket.to_owned()));
        }
        let answer = serde_json::from_slice(&answer).map_err(|e| {
            Error::Invalid(format!(
                "the session at `{}` answered something unreadable ({e}): `blast kill` of its \
                 environment ends it",
                socket.display()
            ))
        })?;
        Ok((Conversation { stream }, answer))
    }

    /// Closes the connection.
    pub fn end(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found as a flaky session test: `blast status` looking while `blast start` had made the
    /// session's directory but not yet its socket removed the directory, and the session failed.
    #[test]
    fn a_session_directory_is_debris_only_when_no_process_holds_the_sessions_lock() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join("locks")).unwrap();
        let dir = dir(home.path(), "env");
        std::fs::create_dir_all(&dir).unwrap();
        let held = crate::lock::acquire(
            &lock_path(home.path(), "env"),
            crate::lock::LockMode::Exclusive,
            "a session",
        )
        .unwrap();
        assert!(matches!(find(home.path(), "env").unwrap(), Found::Busy));
        assert!(dir.is_dir(), "a starting session's directory stays");
        std::fs::write(record_path(&dir), b"{}").unwrap();
        assert!(matches!(find(home.path(), "env").unwrap(), Found::Busy));
        assert!(dir.is_dir(), "an ending session's directory stays");

        drop(held);
        assert!(matches!(find(home.path(), "env").unwrap(), Found::Nothing));
        assert!(!dir.exists(), "a dead session's directory goes");
    }
}
