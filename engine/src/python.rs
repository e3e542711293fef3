//! Interpreter discovery: from `--python` (a path, a command, a version like `3.11`, or nothing for
//! `python3`) to the real interpreter and what a venv needs to know about it.
//!
//! Asking Python costs tens of milliseconds and shims (pyenv) add a shell script on top, so the answer is
//! cached in the index, keyed by the requested file's identity (and, for shims, by what steers them), and
//! checked against the real interpreter's mtime on every use.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use store_format::PythonTag;

use crate::capture::nanos;
use crate::error::{Error, Result};
use crate::index::{Batch, Index};

/// What blast knows about a base interpreter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonInfo {
    /// The real interpreter binary (symlinks and shims resolved).
    pub executable: String,
    /// Its directory: `pyvenv.cfg`'s `home`.
    pub bin_dir: String,
    /// The file name a venv's `bin/python` points at (`python3.11`).
    pub exe_name: String,
    /// mtime of `executable` when it was asked, in nanoseconds.
    pub exe_mtime_ns: i64,
    /// Relative path of `site-packages` inside a venv (`lib/python3.11/site-packages`).
    pub purelib: String,
    /// The standard library directory (where `ensurepip` keeps its wheels).
    pub stdlib: String,
    pub tag: PythonTag,
}

impl PythonInfo {
    /// The error for an environment whose base interpreter is no longer there.
    pub fn gone(&self) -> Error {
        Error::BadPython {
            path: PathBuf::from(&self.executable),
            detail: "it is gone; the environment was made with it: reinstall that Python".into(),
        }
    }

    /// `cpython 3.11.7 at /usr/bin/python3.11`.
    pub fn describe(&self) -> String {
        format!(
            "{} {} at {}",
            self.tag.implementation, self.tag.version, self.executable
        )
    }

    /// Can a snapshot built for `needed` run on this interpreter? Same implementation, same minor version,
    /// same extension ABI and platform (wheels with compiled code depend on them).
    pub fn satisfies(&self, needed: &PythonTag) -> bool {
        self.tag.implementation == needed.implementation
            && self.tag.minor_version() == needed.minor_version()
            && (needed.soabi.is_empty() || self.tag.soabi == needed.soabi)
            && self.tag.platform == needed.platform
    }
}

const PROBE: &str = r#"
import json, os, sys, sysconfig, platform
exe = os.path.realpath(sys.executable)
scheme = "venv" if "venv" in sysconfig.get_scheme_names() else "posix_prefix"
base = "/__blast_base__"
purelib = sysconfig.get_path("purelib", scheme, vars={"base": base, "platbase": base})
print(json.dumps({
    "executable": exe,
    "implementation": sys.implementation.name,
    "version": platform.python_version(),
    "major_minor": "%d.%d" % sys.version_info[:2],
    "soabi": sysconfig.get_config_var("SOABI") or "",
    "platform": sysconfig.get_platform(),
    "purelib": os.path.relpath(purelib, base),
    "stdlib": sysconfig.get_path("stdlib"),
}))
"#;

#[derive(Deserialize)]
struct ProbeOutput {
    executable: String,
    implementation: String,
    version: String,
    major_minor: String,
    soabi: String,
    platform: String,
    purelib: String,
    stdlib: String,
}

/// Finds the interpreter for `request` (default `python3`), from the cache when it is still true. A
/// command is tried at each place it is found, in order, until one runs: a pyenv shim for a version
/// that is installed but not selected fails, and the next `python3.12` may be the one wanted.
pub fn find(index: &Index, request: Option<&str>) -> Result<PythonInfo> {
    let request = request.unwrap_or("python3");
    let mut failed = Vec::new();
    let bare = request.strip_prefix("python").unwrap_or(request);
    if bare == "2" || bare.starts_with("2.") {
        return Err(Error::PythonNotFound {
            request: request.to_owned(),
            detail: "blast makes environments for Python 3 only".into(),
        });
    }
    let (candidates, version) = locate(request)?;
    for candidate in candidates {
        match find_at(index, &candidate) {
            Ok(info) if version.is_some_and(|v| !of_version(&info.tag.version, v)) => {
                failed.push(Error::BadPython {
                    path: candidate,
                    detail: format!("it is Python {}, not {request}", info.tag.version),
                })
            }
            Ok(info) => return Ok(info),
            Err(e @ Error::BadPython { .. }) => failed.push(e),
            Err(e) => return Err(e),
        }
    }
    let tried = |failed: &[Error]| -> String {
        failed
            .iter()
            .map(|e| format!("\n  {}", e.to_string().lines().next().unwrap_or_default()))
            .collect()
    };
    match (version, <[Error; 1]>::try_from(failed)) {
        (None, Ok([only])) => Err(only),
        (None, Err(failed)) => Err(Error::PythonNotFound {
            request: request.to_owned(),
            detail: tried(&failed),
        }),
        (Some(version), failed) => {
            let failed = failed.map_or_else(|many| many, Vec::from);
            // The releases of the same minor version there are, for a request that named another.
            let minor = minor_of(version);
            let releases: Vec<String> = installed(minor, &format!("python{minor}"))
                .into_iter()
                .map(|(release, _)| release)
                .collect();
            let offer = match releases.as_slice() {
                [] => String::new(),
                some => format!("\n  installed by pyenv or uv: {}", some.join(", ")),
            };
            Err(Error::PythonNotFound {
                request: request.to_owned(),
                detail: format!("no Python {version} among{}{offer}", tried(&failed)),
            })
        }
    }
}

/// `3.12` of `3.12.1` (and of `3.12`).
fn minor_of(version: &str) -> &str {
    match version.match_indices('.').nth(1) {
        Some((i, _)) => &version[..i],
        None => version,
    }
}

fn find_at(index: &Index, candidate: &Path) -> Result<PythonInfo> {
    let key = cache_key(candidate, &ShimContext::current())?;
    if let Some(info) = index.python(&key)?
        && mtime_ns(Path::new(&info.executable)) == Some(info.exe_mtime_ns)
    {
        return Ok(info);
    }
    let info = probe(candidate)?;
    let mut batch = Batch::default();
    batch.put_python(&key, &info);
    index.write(batch)?;
    Ok(info)
}

/// Where `request` may be, best first, and the version it asks for: a path is itself; a command is
/// every file of that name on PATH; a version (`3.11`, or a command `python3.11`) is also each
/// interpreter of that version that pyenv or uv installed, newest first, where the shims on PATH may not
/// lead (a version pyenv has not selected).
fn locate(request: &str) -> Result<(Vec<PathBuf>, Option<&str>)> {
    if request.contains('/') {
        let path = PathBuf::from(request);
        return match std::fs::metadata(&path) {
            Ok(_) => Ok((vec![std::path::absolute(&path).unwrap_or(path)], None)),
            // Found by exploratory testing: a path blast may not reach was said not to exist.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                Err(Error::PythonNotFound {
                    request: request.to_owned(),
                    detail: format!(
                        "`{request}` cannot be reached: a directory on its way is not open to you"
                    ),
                })
            }
            Err(_) => Err(Error::PythonNotFound {
                request: request.to_owned(),
                detail: format!("`{request}` does not exist"),
            }),
        };
    }
    let is_version = |v: &str| {
        v.starts_with(|c: char| c.is_ascii_digit())
            && v.chars().all(|c| c.is_ascii_digit() || c == '.')
    };
    let version = match request.strip_prefix("python") {
        _ if is_version(request) => Some(request),
        Some(v) if is_version(v) => Some(v),
        _ => None,
    };
    // A release (`3.12.1`) is looked for as its minor version's command, then checked.
    let command = match version {
        Some(v) => format!("python{}", minor_of(v)),
        None => request.to_owned(),
    };
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let mut found: Vec<PathBuf> = std::env::split_paths(&path_var)
        .map(|dir| dir.join(&command))
        .filter(|p| p.is_file())
        .collect();
    if let Some(version) = version {
        found.extend(installed(version, &command).into_iter().map(|(_, exe)| exe));
    }
    if found.is_empty() {
        return Err(Error::PythonNotFound {
            request: request.to_owned(),
            detail: match version {
                Some(_) => format!(
                    "`{command}` is not on PATH, nor among the interpreters pyenv or uv installed"
                ),
                None => format!("`{command}` is not on PATH"),
            },
        });
    }
    Ok((found, version))
}

/// Each interpreter of `version` that pyenv (`$PYENV_ROOT/versions/3.12.1`) or uv
/// (`$UV_PYTHON_INSTALL_DIR` or `~/.local/share/uv/python`: `cpython-3.12.1-linux-x86_64-gnu`) installed,
/// newest first: its release and its `bin/COMMAND`.
fn installed(version: &str, command: &str) -> Vec<(String, PathBuf)> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    // Only absolute roots: a relative one (an empty variable) would run what the working directory
    // holds.
    let var_or_home = |var: &str, below: &str| {
        std::env::var_os(var)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(below)))
            .filter(|root| root.is_absolute())
    };
    let roots = [
        (
            var_or_home("PYENV_ROOT", ".pyenv").map(|r| r.join("versions")),
            "",
        ),
        (
            var_or_home("UV_PYTHON_INSTALL_DIR", ".local/share/uv/python"),
            "cpython-",
        ),
    ];
    let mut found: Vec<(Vec<u64>, String, PathBuf)> = Vec::new();
    for (root, prefix) in roots {
        let Some(entries) = root.and_then(|r| std::fs::read_dir(r).ok()) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(full) = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .map(|n| n.split('-').next().unwrap_or(n))
            else {
                continue;
            };
            let exe = entry.path().join("bin").join(command);
            if of_version(full, version) && exe.is_file() {
                let order = full.split('.').map(|n| n.parse().unwrap_or(0)).collect();
                found.push((order, full.to_owned(), exe));
            }
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found
        .into_iter()
        .map(|(_, release, exe)| (release, exe))
        .collect()
}

/// Whether `full` (`3.12.1`) is a release of `wanted` (`3.12`, or `3.12.1` itself).
fn of_version(full: &str, wanted: &str) -> bool {
    full == wanted
        || full
            .strip_prefix(wanted)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// What steers a shim to one interpreter or another, read once from the process's environment.
struct ShimContext {
    cwd: PathBuf,
    /// Version files outside the working directory's tree: pyenv's global one (`~/.pyenv/version`
    /// when `PYENV_ROOT` is unset), asdf's (`~/.tool-versions`) and mise's global configuration.
    global_files: Vec<PathBuf>,
    /// The variables that select a version, with their values.
    variables: Vec<(&'static str, String)>,
}

/// Variables that select a shim's version: pyenv's, asdf's and mise's.
const SHIM_VARIABLES: [&str; 5] = [
    "PYENV_VERSION",
    "ASDF_PYTHON_VERSION",
    "MISE_PYTHON_VERSION",
    "MISE_ENV",
    "RTX_PYTHON_VERSION",
];

/// Version files a shim consults in the working directory and each directory above it.
const LOCAL_VERSION_FILES: [&str; 8] = [
    ".python-version",
    ".tool-versions",
    "mise.toml",
    ".mise.toml",
    "mise.local.toml",
    ".mise.local.toml",
    ".config/mise.toml",
    ".config/mise/config.toml",
];

impl ShimContext {
    fn current() -> ShimContext {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let home = var("HOME").map(PathBuf::from);
        let mut global_files = Vec::new();
        // pyenv's own default when the variable is unset: `pyenv global` writes `~/.pyenv/version`.
        if let Some(root) = var("PYENV_ROOT")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".pyenv")))
        {
            global_files.push(root.join("version"));
        }
        if let Some(home) = &home {
            global_files.push(home.join(".tool-versions"));
        }
        if let Some(config) = var("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".config")))
        {
            global_files.push(config.join("mise/config.toml"));
        }
        ShimContext {
            cwd: std::env::current_dir().unwrap_or_default(),
            global_files,
            variables: SHIM_VARIABLES
                .iter()
                .filter_map(|&name| var(name).map(|value| (name, value)))
                .collect(),
        }
    }
}

/// For an interpreter: its real path and identity. For a shim, also the path asked for and what steers
/// the shim: the variables and the contents of the version files it consults. A shim is a script
/// (pyenv's, asdf's) or a link to a program that is not Python (mise's shims link to `mise`, which
/// acts by the name it was run as).
fn cache_key(candidate: &Path, context: &ShimContext) -> Result<String> {
    let real = std::fs::canonicalize(candidate).map_err(|e| Error::PythonNotFound {
        request: candidate.display().to_string(),
        detail: e.to_string(),
    })?;
    let meta = std::fs::metadata(&real).map_err(|e| Error::PythonNotFound {
        request: candidate.display().to_string(),
        detail: e.to_string(),
    })?;
    let mut key = format!(
        "{}|{}|{}|{}",
        real.display(),
        meta.ino(),
        meta.size(),
        nanos(meta.mtime(), meta.mtime_nsec())
    );
    if is_script(&real) || !is_named_like_python(&real) {
        key.push_str(&format!(
            "|shim|{}|{}",
            candidate.display(),
            context.cwd.display()
        ));
        for (name, value) in &context.variables {
            key.push_str(&format!("|{name}={value}"));
        }
        let local = context
            .cwd
            .ancestors()
            .flat_map(|dir| LOCAL_VERSION_FILES.iter().map(move |f| dir.join(f)));
        for file in context.global_files.iter().cloned().chain(local) {
            if let Ok(text) = std::fs::read_to_string(&file) {
                key.push_str(&format!("|{}={text}", file.display()));
            }
        }
    }
    Ok(blake3::hash(key.as_bytes()).to_hex().to_string())
}

/// Whether a binary's name is an interpreter's (`python3.11`, `pypy3`), not a multiplexer's.
fn is_named_like_python(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("python") || n.starts_with("pypy"))
}

fn is_script(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == b"#!")
}

pub(crate) fn mtime_ns(path: &Path) -> Option<i64> {
    std::fs::metadata(path)
        .ok()
        .map(|m| nanos(m.mtime(), m.mtime_nsec()))
}

/// Runs `code` on the interpreter in isolated mode (no user site, no PYTHON* variables) and parses the
/// JSON it prints.
pub(crate) fn run_probe<T: DeserializeOwned>(interpreter: &Path, code: &str) -> Result<T> {
    let bad = |detail: String| Error::BadPython {
        path: interpreter.to_owned(),
        detail,
    };
    match std::fs::metadata(interpreter) {
        Ok(meta) if meta.is_dir() => {
            return Err(bad(
                "it is a directory: name the interpreter in it (`bin/python3` of a Python install)"
                    .into(),
            ));
        }
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
            return Err(bad("it is not executable".into()));
        }
        _ => {}
    }
    let output = bounded_output(
        Command::new(interpreter).args(["-I", "-c", code]),
        PROBE_TIMEOUT,
    )
    .map_err(|e| bad(format!("could not run it: {e}")))?
    .map_err(bad)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // A program that is no Python says so about its arguments, the probe's code among them.
        let echoed = code
            .lines()
            .find(|line| !line.trim().is_empty())
            .is_some_and(|line| stderr.contains(line.trim()));
        // A traceback ends with what went wrong; other complaints start with it (pyenv's for a shim
        // of a version it has not selected, Python 2's about `-I`: found by exploratory testing,
        // whose last lines were a tip's tail and "Try `python -h'…").
        let mut lines = stderr.lines().filter(|l| !l.trim().is_empty());
        let telling = match stderr.contains("Traceback (most recent call last)") {
            true => lines.next_back(),
            false => lines.next(),
        };
        let said = match echoed {
            true => "it does not run Python code given with `-I -c`".to_owned(),
            false => telling
                .unwrap_or_default()
                .trim()
                .chars()
                .take(300)
                .collect(),
        };
        return Err(bad(match said.is_empty() {
            true => format!("it exited with {}", output.status),
            false => format!("it exited with {}: {said}", output.status),
        }));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| bad(format!("it answered something unexpected ({e})")))
}

/// How long an interpreter may take to answer a probe (a cold start from a slow disk takes seconds).
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// The most a probe's answer (or its error output) may be: a few kilobytes are expected.
const PROBE_MAX_OUTPUT: u64 = 1 << 20;

/// Runs `command` as a probe: stdin from `/dev/null` (a program waiting on the terminal would wait for
/// good), its output read up to [`PROBE_MAX_OUTPUT`], within `timeout`, and killed with blast.
/// Something else named as the interpreter (a script that hangs, or prints without end) held blast,
/// and the index other commands wait on, for good. The inner error says what went wrong.
fn bounded_output(
    command: &mut Command,
    timeout: Duration,
) -> std::io::Result<Result<Output, String>> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own, killed whole: what it started would keep the pipes open.
        .process_group(0);
    let blast = nix::unistd::getpid();
    // SAFETY: `die_with` makes only async-signal-safe calls, and it is all that runs between fork and
    // exec. Killed with blast (the group of its own takes it out of the terminal's Ctrl-C).
    unsafe {
        command.pre_exec(move || crate::sandbox::die_with(blast));
    }
    let mut child = command.spawn()?;
    let flooded = Arc::new(AtomicBool::new(false));
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        let flooded = flooded.clone();
        let (sender, bytes_read) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(pipe) = pipe {
                let _ = pipe.take(PROBE_MAX_OUTPUT + 1).read_to_end(&mut bytes);
            }
            if bytes.len() as u64 > PROBE_MAX_OUTPUT {
                flooded.store(true, Ordering::Relaxed);
            }
            let _ = sender.send(bytes);
        });
        bytes_read
    };
    let stdout = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    // Its output ends when it exits, or when it is cut off for printing too much (on either stream):
    // waited for in slices, to see the other stream flood meanwhile. A process it left behind may hold
    // the output open: that is a probe not answering too.
    let slice = Duration::from_millis(50);
    let mut outputs = (None, None);
    let mut failed = None;
    let mut status = None;
    while failed.is_none() && status.is_none() {
        let now = Instant::now();
        if flooded.load(Ordering::Relaxed) {
            failed = Some(format!("it printed more than {PROBE_MAX_OUTPUT} bytes"));
        } else if now >= deadline {
            failed = Some(format!("it did not answer within {} s", timeout.as_secs()));
        } else if outputs.0.is_none() {
            outputs.0 = stdout.recv_timeout(slice.min(deadline - now)).ok();
        } else if outputs.1.is_none() {
            outputs.1 = stderr.recv_timeout(slice.min(deadline - now)).ok();
        } else {
            // Its output closed: it is exiting.
            status = child.try_wait()?;
            if status.is_none() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    match (failed, status, outputs) {
        (None, Some(status), (Some(stdout), Some(stderr))) => Ok(Ok(Output {
            status,
            stdout,
            stderr,
        })),
        (failed, _, _) => {
            // The group: the child is not reaped yet, so its pid, the group's id, is still its own.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            Ok(Err(failed.unwrap_or_default()))
        }
    }
}

fn probe(candidate: &Path) -> Result<PythonInfo> {
    let bad = |detail: String| Error::BadPython {
        path: candidate.to_owned(),
        detail,
    };
    let out: ProbeOutput = run_probe(candidate, PROBE)?;
    let real = PathBuf::from(&out.executable);
    let bin_dir = real
        .parent()
        .ok_or_else(|| bad("its executable has no directory".into()))?;
    // A venv links `bin/python` to `pythonX.Y`, which every CPython install provides.
    let versioned = format!("python{}", out.major_minor);
    let exe_name = if bin_dir.join(&versioned).exists() {
        versioned
    } else {
        real.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or(versioned)
    };
    let exe_mtime_ns = mtime_ns(&real).ok_or_else(|| bad("its executable vanished".into()))?;
    Ok(PythonInfo {
        executable: out.executable.clone(),
        bin_dir: bin_dir.display().to_string(),
        exe_name,
        exe_mtime_ns,
        purelib: out.purelib,
        stdlib: out.stdlib,
        tag: PythonTag {
            implementation: out.implementation,
            version: out.version,
            soabi: out.soabi,
            platform: out.platform,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by exploratory testing: a script named as the interpreter that hung, or printed without
    /// end, held blast (and the index every other command waits on) for good.
    #[test]
    fn a_probe_that_hangs_floods_or_reads_stdin_is_stopped() {
        let run = |script: &str| {
            let started = Instant::now();
            let outcome = bounded_output(
                Command::new("sh").args(["-c", script]),
                Duration::from_secs(1),
            )
            .unwrap();
            // What failed, not a megabyte of what it printed.
            let outcome = outcome.map(|output| (output.status.success(), output.stdout.len()));
            (outcome, started.elapsed())
        };
        let (outcome, took) = run("sleep 30");
        assert_eq!(outcome.unwrap_err(), "it did not answer within 1 s");
        assert!(took < Duration::from_secs(10), "{took:?}");
        let (outcome, took) = run("yes");
        assert_eq!(
            outcome.unwrap_err(),
            format!("it printed more than {PROBE_MAX_OUTPUT} bytes")
        );
        assert!(took < Duration::from_secs(10), "{took:?}");
        let (outcome, took) = run("yes >&2");
        assert_eq!(
            outcome.unwrap_err(),
            format!("it printed more than {PROBE_MAX_OUTPUT} bytes")
        );
        assert!(took < Duration::from_secs(10), "{took:?}");
        let (outcome, took) = run("sleep 30 & echo started");
        assert_eq!(outcome.unwrap_err(), "it did not answer within 1 s");
        assert!(took < Duration::from_secs(10), "{took:?}");
        // Standard input is empty, not the terminal's.
        let (outcome, _) = run("cat; echo '{}'");
        assert_eq!(outcome, Ok((true, 3)));
    }

    fn context(cwd: &Path, global_files: Vec<PathBuf>) -> ShimContext {
        ShimContext {
            cwd: cwd.to_owned(),
            global_files,
            variables: Vec::new(),
        }
    }

    /// mise's shims are links to `mise`, which runs the version its configuration names for the name it
    /// was run as: `python3.11` and `python3.12` there are two interpreters behind one file (found by
    /// review: both got the first one's answer). Links to an interpreter share its answer.
    #[test]
    fn links_to_a_multiplexer_are_told_apart_and_links_to_an_interpreter_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name);
        std::fs::copy("/bin/true", at("mise")).unwrap();
        std::fs::copy("/bin/true", at("python3.11")).unwrap();
        for (link, to) in [
            ("shim-3.11", "mise"),
            ("shim-3.12", "mise"),
            ("python3", "python3.11"),
        ] {
            std::os::unix::fs::symlink(at(to), at(link)).unwrap();
        }
        let context = context(dir.path(), Vec::new());
        let key = |name: &str| cache_key(&at(name), &context).unwrap();
        assert_ne!(key("shim-3.11"), key("shim-3.12"));
        assert_eq!(key("python3"), key("python3.11"));
    }

    /// A shim's answer follows the version files it consults, the global ones too: asdf's
    /// `~/.tool-versions`, changed by `asdf global` (found by review: only the working directory's tree
    /// was read).
    #[test]
    fn a_shims_key_follows_its_global_version_file() {
        let dir = tempfile::tempdir().unwrap();
        let shim = dir.path().join("python3");
        std::fs::write(&shim, "#!/bin/sh\nexec asdf exec python3 \"$@\"\n").unwrap();
        let global = dir.path().join("home/.tool-versions");
        std::fs::create_dir_all(global.parent().unwrap()).unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let context = context(&work, vec![global.clone()]);
        std::fs::write(&global, "python 3.11.7\n").unwrap();
        let before = cache_key(&shim, &context).unwrap();
        std::fs::write(&global, "python 3.12.1\n").unwrap();
        assert_ne!(cache_key(&shim, &context).unwrap(), before);
        std::fs::write(&global, "python 3.11.7\n").unwrap();
        assert_eq!(cache_key(&shim, &context).unwrap(), before);
    }

    #[test]
    fn a_version_matches_its_own_releases_only() {
        assert!(of_version("3.12.1", "3.12"));
        assert!(of_version("3.12.1", "3.12.1"));
        assert!(of_version("3.12", "3.12"));
        assert!(!of_version("3.10.13", "3.1"));
        assert!(!of_version("3.12.10", "3.12.1"));
        assert!(!of_version("3.11.7", "3.12"));
    }
}
