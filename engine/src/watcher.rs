//! The watcher of a live session: one event loop (tokio, current thread) over the environment's file
//! events (notify: inotify), the session's control socket and its shell's exit.
//!
//! A change is captured at the first of: the prompt hook asking (a command in the session finished),
//! or a quiet window of [`QUIET`] after the last file event (an install from an IDE or another
//! terminal). Never while an installer is still running on the environment: its process is looked
//! for first, and the capture waits for it. An installer the session's shell started is the
//! session's command: once it is done, the prompt that names it is waited for a while
//! ([`PROMPT_GRACE`]; the command line may go on after it). `__pycache__` writes and reads are not
//! changes. The loop ends when the shell exits, after a final capture.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::signal::unix::{SignalKind, signal as unix_signal};

use crate::capture::PYCACHE;
use crate::error::{Error, IoContext, Result};
use crate::session::{Answer, CaptureNote, INSTALLER_WAIT, Request, SessionRecord, SessionStatus};

/// How long the environment must be quiet before the watcher captures what changed.
pub const QUIET: Duration = Duration::from_millis(250);

/// How long, after an installer the session's shell started is done, its prompt is waited for before
/// its changes are captured as made outside the session's commands.
const PROMPT_GRACE: Duration = Duration::from_secs(3);

/// How long a client may take to send its request (a connection that only checks that the session
/// is live sends nothing and closes at once).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// How long `blast kill` may take to print the answer and let go.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the shell has to exit after SIGHUP before it is killed.
const SHELL_GRACE: Duration = Duration::from_secs(3);

/// How often the environment's directory is checked for having been made again (another inode,
/// which the watch set on the old one does not see).
const REWATCH_EVERY: Duration = Duration::from_secs(1);

/// Takes a capture: the message for the history entry and when the change was last seen (the capture
/// latency runs from there); the note when a snapshot was made.
pub type CaptureFn<'a> = dyn FnMut(&str, Option<Instant>) -> Result<Option<CaptureNote>> + 'a;

/// What the session did, once its shell is gone.
pub struct Served {
    pub shell_status: ExitStatus,
    pub captures: Vec<CaptureNote>,
    pub failures: Vec<String>,
}

/// Starts `shell`, writes the session's record (with the shell's pid) to `record_path`, and serves
/// the session until the shell exits.
pub fn serve(
    env_root: &Path,
    record: SessionRecord,
    record_path: &Path,
    listener: StdUnixListener,
    shell: Command,
    capture: &mut CaptureFn<'_>,
) -> Result<Served> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::Invalid(format!("starting the session's event loop: {e}")))?;
    runtime.block_on(async {
        let mut session = Session {
            env_root: env_root.to_owned(),
            record,
            capture,
            dirty: false,
            session_installed: false,
            prompt_due: None,
            captured_at_prompt: false,
            last_event: None,
            unshown: Vec::new(),
            failures: Vec::new(),
            all: Vec::new(),
            ending: false,
        };
        session.run(record_path, listener, shell).await
    })
}

struct Session<'c, 'a> {
    env_root: PathBuf,
    record: SessionRecord,
    capture: &'c mut CaptureFn<'a>,
    /// Changed since the last capture.
    dirty: bool,
    /// An installer the shell started changed the environment since the last capture: its command
    /// line's prompt names the capture.
    session_installed: bool,
    /// Once that installer is done: until when its prompt is waited for.
    prompt_due: Option<tokio::time::Instant>,
    /// The last request was a prompt that took a capture: what the quiet window waited for is done.
    captured_at_prompt: bool,
    last_event: Option<Instant>,
    /// Captures the prompt has not shown yet.
    unshown: Vec<CaptureNote>,
    failures: Vec<String>,
    all: Vec<CaptureNote>,
    /// `blast kill` asked: the shell's next prompt hook tells it to exit.
    ending: bool,
}

impl Session<'_, '_> {
    async fn run(
        &mut self,
        record_path: &Path,
        listener: StdUnixListener,
        shell: Command,
    ) -> Result<Served> {
        // Each change says whether it removed or moved the directory itself, whose watch is then gone.
        let (events, mut changed) = tokio::sync::mpsc::unbounded_channel::<bool>();
        let root = self.env_root.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && is_change(&event)
                {
                    let _ = events.send(gone_or_moved(&event, &root));
                }
            })
            .map_err(|e| watch_error(&self.env_root, e))?;
        watcher
            .watch(&self.env_root, RecursiveMode::Recursive)
            .map_err(|e| watch_error(&self.env_root, e))?;
        let mut watched = identity(&self.env_root);
        let mut rewatch = tokio::time::interval(REWATCH_EVERY);
        let socket = record_path.with_file_name("control.sock");
        listener.set_nonblocking(true).at("listening on", &socket)?;
        let listener = tokio::net::UnixListener::from_std(listener).at("listening on", &socket)?;
        let mut shell = tokio::process::Command::from(shell)
            .spawn()
            .at("starting the shell", Path::new(&self.record.shell))?;
        self.record.shell_pid = shell.id().unwrap_or_default();
        write_record(record_path, &self.record)?;

        // Closing the terminal hangs up the watcher too: it stays for the shell's exit and the last
        // capture. A SIGTERM ends the session the way `blast kill` does.
        let signals =
            |e: std::io::Error| Error::Invalid(format!("handling the session's signals: {e}"));
        let mut hangup = unix_signal(SignalKind::hangup()).map_err(signals)?;
        let mut terminate = unix_signal(SignalKind::terminate()).map_err(signals)?;
        let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
        let mut capture_at: Option<tokio::time::Instant> = None;
        let mut hangup_at: Option<tokio::time::Instant> = None;
        let mut force_kill_at: Option<tokio::time::Instant> = None;
        let status = loop {
            tokio::select! {
                Some(of_root) = changed.recv() => {
                    // A stale identity: the directory is watched again once it is back.
                    if of_root {
                        watched = None;
                    }
                    // The first change of a burst: an installer that makes it is running now.
                    if capture_at.is_none() {
                        self.note_installers();
                    }
                    self.dirty = true;
                    self.last_event = Some(Instant::now());
                    let now = tokio::time::Instant::now();
                    capture_at = Some((now + QUIET).max(self.prompt_due.unwrap_or(now)));
                }
                _ = tokio::time::sleep_until(capture_at.unwrap_or(far)), if capture_at.is_some() => {
                    let now = tokio::time::Instant::now();
                    if !self.dirty {
                        capture_at = None;
                    } else if self.note_installers() {
                        capture_at = Some(now + QUIET);
                    } else if self.session_installed && self.prompt_due.is_none() {
                        self.prompt_due = Some(now + PROMPT_GRACE);
                        capture_at = self.prompt_due;
                    } else if self.prompt_due.is_some_and(|due| now < due) {
                        capture_at = self.prompt_due;
                    } else {
                        capture_at = None;
                        self.capture_now("changed outside the session's commands");
                    }
                }
                _ = rewatch.tick() => {
                    if self.rewatch(&mut watcher, &mut watched) && capture_at.is_none() {
                        capture_at = Some(tokio::time::Instant::now() + QUIET);
                    }
                }
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    self.rewatch(&mut watcher, &mut watched);
                    let now = tokio::time::Instant::now();
                    let ending = self.answer(stream).await;
                    if std::mem::take(&mut self.captured_at_prompt) {
                        capture_at = None;
                    }
                    match ending {
                        Ending::No => {}
                        // From the shell itself: its next prompt ends it, cleanly (a hangup now
                        // would also take the `blast kill` that asked); a hangup if it does not.
                        Ending::AtNextPrompt => hangup_at = Some(now + SHELL_GRACE),
                        Ending::Now => hangup_at = Some(now),
                    }
                    if hangup_at.is_some() {
                        capture_at = None;
                    }
                }
                _ = hangup.recv() => {}
                // As `blast kill` does: an installer running on the environment finishes first.
                _ = terminate.recv() => {
                    wait_for_installers(&self.env_root).await;
                    capture_at = None;
                    hangup_at = Some(tokio::time::Instant::now());
                }
                _ = tokio::time::sleep_until(hangup_at.unwrap_or(far)), if hangup_at.is_some() => {
                    hangup_at = None;
                    signal_shell(self.record.shell_pid, libc::SIGHUP);
                    force_kill_at = Some(tokio::time::Instant::now() + SHELL_GRACE);
                }
                _ = tokio::time::sleep_until(force_kill_at.unwrap_or(far)), if force_kill_at.is_some() => {
                    force_kill_at = None;
                    signal_shell(self.record.shell_pid, libc::SIGKILL);
                }
                status = shell.wait() => break status.at("waiting for the shell", Path::new(&self.record.shell))?,
            }
        };
        // No client may take the session for live while it ends.
        drop(listener);
        let _ = std::fs::remove_file(&socket);
        // Closing the shell any way ends the session: what changed last is kept, once whatever
        // installer still runs on the environment is done (one left running in the background too).
        wait_for_installers(&self.env_root).await;
        while changed.try_recv().is_ok() {
            self.dirty = true;
        }
        if self.dirty {
            self.final_capture("changed at the end of the session");
        }
        drop(watcher);
        Ok(Served {
            shell_status: status,
            captures: std::mem::take(&mut self.all),
            failures: std::mem::take(&mut self.failures),
        })
    }

    /// Whether an installer is running on the environment; one the session's shell started is noted.
    fn note_installers(&mut self) -> bool {
        let running = installers_on(&self.env_root);
        let shell = i32::try_from(self.record.shell_pid).ok();
        self.session_installed |= running
            .iter()
            .any(|&pid| shell.is_some_and(|shell| descends_from(pid, shell)));
        !running.is_empty()
    }

    /// Captures now; a failure is kept to be shown, and the environment stays as it is.
    fn capture_now(&mut self, message: &str) {
        self.capture_after(message, None);
    }

    /// Captures now what a session command made that exited with `failed`, if it failed.
    fn capture_after(&mut self, message: &str, failed: Option<i32>) {
        match (self.capture)(message, self.last_event) {
            Ok(Some(mut note)) => {
                note.command_failed = failed;
                self.unshown.push(note.clone());
                self.all.push(note);
            }
            Ok(None) => {}
            Err(e) => self.failures.push(e.to_string()),
        }
        self.dirty = false;
        self.session_installed = false;
        self.prompt_due = None;
    }

    /// The last capture, once [`wait_for_installers`] is done: none while an installer still runs
    /// (what it wrote is half an install), which the failures say.
    fn final_capture(&mut self, message: &str) {
        let running = installers_on(&self.env_root);
        if running.is_empty() {
            self.capture_now(message);
            return;
        }
        let env = self.env_root.display();
        self.failures.push(format!(
            "an installer (pid {}) was still running on `{env}` after {} s, so what changed since the \
             last capture is left uncaptured: `blast status -e {env}` names it, `blast snapshot` keeps \
             it, `blast rollback --force HEAD` discards it",
            pid_list(&running),
            INSTALLER_WAIT.as_secs()
        ));
        self.dirty = false;
    }

    /// Watches the environment's directory again when it was made again since it was watched (a
    /// `blast rollback --force HEAD` after it was removed): the old watch sees nothing of the new
    /// one. `watched` is the identity of the watched directory, `None` once an event said it was
    /// removed or moved (a new directory may get the old one's inode number). Returns whether it
    /// watched it again; the directory is then taken as changed.
    fn rewatch(&mut self, watcher: &mut impl Watcher, watched: &mut Option<(u64, u64)>) -> bool {
        let now = identity(&self.env_root);
        if now.is_none() || now == *watched {
            return false;
        }
        let _ = watcher.unwatch(&self.env_root);
        if let Err(e) = watcher.watch(&self.env_root, RecursiveMode::Recursive) {
            self.failures
                .push(watch_error(&self.env_root, e).to_string());
        }
        *watched = now;
        self.dirty = true;
        self.last_event = Some(Instant::now());
        true
    }

    /// Serves one client; says whether, and how, the session is to end.
    async fn answer(&mut self, stream: UnixStream) -> Ending {
        let client = stream.peer_cred().ok().and_then(|c| c.pid());
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut line = String::new();
        let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
        let Ok(Ok(_)) = read else {
            return Ending::No;
        };
        let Ok(request) = serde_json::from_str::<Request>(&line) else {
            return Ending::No;
        };
        let kill = matches!(request, Request::Kill);
        let mut answer = Answer {
            end_shell: self.ending,
            ..Answer::default()
        };
        match request {
            Request::Prompt { command, failed } => {
                let running = match self.dirty {
                    true => installers_on(&self.env_root),
                    false => Vec::new(),
                };
                if self.dirty && !running.is_empty() {
                    // A job stopped with Ctrl-Z, or one in the background or another terminal: say why
                    // nothing comes (found by exploratory testing: `fg` was advised for another
                    // terminal's install, which was not stopped).
                    let stopped = running
                        .iter()
                        .any(|&pid| u32::try_from(pid).is_ok_and(crate::processes::is_stopped));
                    let why = match stopped {
                        true => "stopped: `fg` resumes it",
                        false => "in the background or in another terminal",
                    };
                    self.failures.push(format!(
                        "an installer (pid {}) is still running on the environment ({why}): what \
                         changed is captured once it ends",
                        pid_list(&running)
                    ));
                }
                if self.dirty && running.is_empty() {
                    let message = command
                        .map(|c| c.trim().to_owned())
                        .filter(|c| !c.is_empty())
                        .unwrap_or_else(|| "changed by a session command".into());
                    self.capture_after(&message, failed);
                    self.captured_at_prompt = true;
                }
                answer.captures = std::mem::take(&mut self.unshown);
                answer.failures = std::mem::take(&mut self.failures);
            }
            Request::Kill => {
                wait_for_installers(&self.env_root).await;
                self.final_capture("final capture of the session");
                answer.captures = std::mem::take(&mut self.unshown);
                answer.failures = std::mem::take(&mut self.failures);
            }
            Request::Status => {
                let up_ms = jiff::Timestamp::now().as_millisecond() - self.record.started_ms;
                answer.status = Some(SessionStatus {
                    record: self.record.clone(),
                    uptime_seconds: u64::try_from(up_ms / 1000).unwrap_or(0),
                    captures: self.all.len(),
                    last_capture: self.all.last().cloned(),
                });
            }
        }
        let Ok(mut text) = serde_json::to_string(&answer) else {
            return Ending::No;
        };
        text.push('\n');
        let _ = write.write_all(text.as_bytes()).await;
        if !kill {
            return Ending::No;
        }
        self.ending = true;
        let shell = i32::try_from(self.record.shell_pid).ok();
        if client.is_some_and(|pid| parent_of(pid) == shell) {
            return Ending::AtNextPrompt;
        }
        // From elsewhere: the shell ends once `blast kill` has printed its answer and let go.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(CLIENT_TIMEOUT, reader.read_to_end(&mut rest)).await;
        Ending::Now
    }
}

/// How a request leaves the session.
enum Ending {
    No,
    AtNextPrompt,
    Now,
}

/// The parent of process `pid`, from `/proc/PID/stat` (its fourth field, after the command name in
/// parentheses).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether process `pid` is a descendant of process `ancestor`.
fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut pid = pid;
    // A bound, as the chain is read while processes come and go.
    for _ in 0..64 {
        match parent_of(pid) {
            Some(parent) if parent == ancestor => return true,
            Some(parent) if parent > 1 => pid = parent,
            _ => return false,
        }
    }
    false
}

/// Whether a file event is a change of the environment's content.
fn is_change(event: &notify::Event) -> bool {
    let content = matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
    );
    content
        && event.paths.iter().any(|path| {
            !path
                .components()
                .any(|c| c.as_os_str().as_bytes() == PYCACHE.as_bytes())
        })
}

/// Process ids as a message names them: `12, 34`.
pub(crate) fn pid_list(pids: &[i32]) -> String {
    pids.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `event` removed or moved the directory `root` itself, whose watch then goes with it.
fn gone_or_moved(event: &notify::Event, root: &Path) -> bool {
    matches!(
        event.kind,
        EventKind::Remove(_) | EventKind::Modify(notify::event::ModifyKind::Name(_))
    ) && event.paths.iter().any(|path| path == root)
}

/// The device and inode of a directory, to tell it from one made again at its path.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn watch_error(env_root: &Path, e: notify::Error) -> Error {
    let limit = matches!(&e.kind, notify::ErrorKind::MaxFilesWatch);
    Error::Invalid(format!(
        "cannot watch `{}` for changes: {e}{}",
        env_root.display(),
        if limit {
            "; raise the limit (`sysctl -w fs.inotify.max_user_watches=524288`)"
        } else {
            ""
        }
    ))
}

fn write_record(path: &Path, record: &SessionRecord) -> Result<()> {
    let text = serde_json::to_vec_pretty(record)
        .map_err(|e| Error::Invalid(format!("internal: encoding the session record: {e}")))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).at("writing", &tmp)?;
    std::fs::rename(&tmp, path).at("writing", path)
}

fn signal_shell(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 0
    {
        // SAFETY: kill(2) with a positive pid: the session's own shell.
        unsafe { libc::kill(pid, signal) };
    }
}

/// pip by the names it runs under: each of its runs is short, whatever its command. `ensurepip` runs
/// pip as `python -c …`, which names no program: its own run is waited for (found by exploratory
/// testing: `python -m ensurepip` in a session was captured halfway, in three snapshots).
const PIP_NAMES: &[&[u8]] = &[b"pip", b"pip3", b"__pip-runner__.py", b"ensurepip"];

/// The commands with which other installers change packages; others (`uv run`, `poetry shell`) may
/// run as long as the session, and a capture must not wait for them.
fn changing_commands(program: &[u8]) -> &'static [&'static [u8]] {
    match program {
        b"uv" => &[b"pip", b"sync", b"add", b"remove", b"venv"],
        b"conda" | b"mamba" => &[
            b"install",
            b"remove",
            b"uninstall",
            b"update",
            b"upgrade",
            b"create",
        ],
        b"poetry" | b"pdm" => &[b"install", b"add", b"remove", b"update", b"sync"],
        _ => &[],
    }
}

/// Whether a command line runs an installer: pip in any form, or another installer with a command
/// that changes packages. Only the program counts, not an argument that happens to be named alike
/// (`vim pip`, `git commit -m pip` in an activated shell).
fn installs(args: &[&[u8]]) -> bool {
    let Some((program, rest)) = program_of(args) else {
        return false;
    };
    let program = program.rsplit(|b| *b == b'/').next().unwrap_or(program);
    if PIP_NAMES.contains(&program) || program.starts_with(b"pip3.") {
        return true;
    }
    let commands = changing_commands(program);
    // The command is the first word that is no option, nor the value of one of the program's own
    // options that come before it (`uv --cache-dir DIR pip install`, `poetry -C proj add`).
    let mut words = rest.iter();
    while let Some(word) = words.next() {
        if !word.starts_with(b"-") {
            return commands.contains(word);
        }
        if global_options_with_values(program).contains(word) {
            words.next();
        }
    }
    false
}

/// The options an installer takes before its command whose value is the next word.
fn global_options_with_values(program: &[u8]) -> &'static [&'static [u8]] {
    match program {
        b"uv" => &[
            b"--cache-dir",
            b"--directory",
            b"--project",
            b"--config-file",
            b"--color",
            b"--python-preference",
            b"--allow-insecure-host",
        ],
        b"poetry" => &[b"-C", b"--directory", b"-P", b"--project"],
        b"pdm" => &[b"-p", b"--project", b"-c", b"--config"],
        _ => &[],
    }
}

/// The program a command line runs and its arguments: the executable, or for a Python interpreter the
/// module of `-m` or the script it runs (pip's, conda's and poetry's console scripts are Python scripts
/// whose shebang makes the interpreter the executable). `python -c CODE` runs no program.
fn program_of<'a, 'b>(args: &'b [&'a [u8]]) -> Option<(&'a [u8], &'b [&'a [u8]])> {
    let (first, rest) = args.split_first()?;
    let name = first.rsplit(|b| *b == b'/').next().unwrap_or(first);
    let interpreter = [&b"python"[..], b"pypy", b"platform-python"]
        .iter()
        .any(|prefix| name.starts_with(prefix));
    if !interpreter {
        return Some((first, rest));
    }
    let mut at = 0;
    while let Some(arg) = rest.get(at) {
        match *arg {
            b"-m" => return rest.get(at + 1).map(|module| (*module, &rest[at + 2..])),
            b"-c" => return None,
            // The options that take a value in the next argument.
            b"-X" | b"-W" | b"--check-hash-based-pycs" => at += 2,
            _ if arg.starts_with(b"-m") => return Some((&arg[2..], &rest[at + 1..])),
            _ if arg.starts_with(b"-c") => return None,
            _ if arg.starts_with(b"-") => at += 1,
            _ => return Some((arg, &rest[at + 1..])),
        }
    }
    None
}

/// Waits (up to [`INSTALLER_WAIT`]) while an installer runs on the environment.
async fn wait_for_installers(env_root: &Path) {
    let started = Instant::now();
    while !installers_on(env_root).is_empty() && started.elapsed() < INSTALLER_WAIT {
        tokio::time::sleep(QUIET).await;
    }
}

/// The installers running on the environment: processes whose command line names an installer and,
/// in an argument or their `VIRTUAL_ENV`, the environment (`ENV/bin/pip install …`,
/// `python3 -m pip --python ENV …`, `uv pip install …` in the activated shell).
pub(crate) fn installers_on(env_root: &Path) -> Vec<i32> {
    let root = env_root.as_os_str().as_bytes();
    let in_env = |path: &[u8]| {
        path.strip_prefix(root)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
    };
    let own = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            if name.as_bytes() == own.as_bytes() {
                return None;
            }
            let pid: i32 = name.to_str()?.parse().ok()?;
            // Gone meanwhile, or not ours to read: not an installer on this environment.
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let on_env = installs(&args)
                && (args.iter().any(|a| in_env(a))
                    || std::fs::read(entry.path().join("environ")).is_ok_and(|environ| {
                        environ
                            .split(|b| *b == 0)
                            .filter_map(|var| var.strip_prefix(b"VIRTUAL_ENV="))
                            .any(in_env)
                    }));
            on_env.then_some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs_installer(line: &str) -> bool {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        installs(&args)
    }

    #[test]
    fn an_installer_is_told_by_its_command() {
        assert!(runs_installer("/usr/bin/python3 -m pip install rich"));
        assert!(runs_installer("/env/bin/pip3.11 uninstall -y rich"));
        assert!(runs_installer("uv pip install rich"));
        assert!(runs_installer("/usr/local/bin/uv --quiet sync"));
        assert!(runs_installer("poetry add rich"));
        assert!(runs_installer("conda install -y numpy"));
        // An option's value before the command is no command (found in review).
        assert!(runs_installer("uv --cache-dir /tmp/c pip install rich"));
        assert!(runs_installer("poetry -C proj add rich"));
        assert!(!runs_installer("uv --directory pip run app"));
        // Long-running commands of installers change nothing: a capture does not wait for them.
        assert!(!runs_installer("uv run jupyter lab"));
        assert!(!runs_installer("poetry shell"));
        assert!(!runs_installer("pdm run python app.py"));
        assert!(!runs_installer("/env/bin/python app.py"));
        // The interpreter running a console script or a module: the script or module counts.
        assert!(runs_installer(
            "/env/bin/python3.11 /env/bin/pip install rich"
        ));
        assert!(runs_installer("python3 -X dev -E -m pip install rich"));
        assert!(runs_installer("python3 -mpip install rich"));
        assert!(runs_installer(
            "python3 --check-hash-based-pycs always -m pip install rich"
        ));
        assert!(runs_installer("/usr/bin/pypy3 -m pip install rich"));
        assert!(runs_installer("/env/bin/python -m ensurepip --upgrade"));
        assert!(runs_installer(
            "/usr/bin/python3 /opt/conda/bin/conda install numpy"
        ));
        assert!(runs_installer(
            "/usr/bin/python3 /tmp/tmpab/__pip-runner__.py install --python /env rich"
        ));
        // An argument named like an installer is not one.
        assert!(!runs_installer("vim pip"));
        assert!(!runs_installer("git commit -m pip"));
        assert!(!runs_installer("python3 -c import pip"));
        assert!(!runs_installer("python3 -W ignore app.py pip install"));
        assert!(!runs_installer("less /env/bin/uv pip"));
    }
}
