//! Shared harness of the integration tests: a private store per test, the real `blast` binary, the real
//! Python, pip installs of the fixture wheels, and a walker that reads a directory back as bytes, modes
//! and symlink targets so tests compare what is really on disk.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

/// The real interpreter behind `python3` (resolved once: it may be a pyenv shim).
pub fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import os, sys; print(os.path.realpath(sys.executable))",
            ])
            .output()
            .expect("python3 must be on PATH for the integration tests");
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    })
}

pub fn fixtures() -> PathBuf {
    // Read when the test runs, not baked in at build time: a target directory shared between
    // checkouts (CI's clone and a work tree) must not send one checkout's tests to another's fixtures.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.join("../fixtures")
}

pub fn wheels() -> PathBuf {
    fixtures().join("wheels")
}

/// A copy of the fixture project `name` at `dest`: a build writes into the project it installs.
pub fn copy_project(name: &str, dest: &Path) {
    let copied = Command::new("cp")
        .arg("-r")
        .arg(fixtures().join("projects").join(name))
        .arg(dest)
        .status()
        .unwrap();
    assert!(copied.success(), "cp -r of the fixture project {name}");
}

/// Writes `files` (name, text) into `dir` (`realpkg-1.0.dist-info`, `legacy-2.5-py3.11.egg-info`) of the
/// environment's site-packages: a distribution made by hand, with whatever metadata a test needs.
pub fn write_distribution(env: &Path, dir: &str, files: &[(&str, &str)]) {
    let dist = env.join("lib/python3.11/site-packages").join(dir);
    fs::create_dir_all(&dist).unwrap();
    for (name, text) in files {
        fs::write(dist.join(name), text).unwrap();
    }
}

/// uv as found on PATH; `None`, saying the test is skipped, where it is not there.
pub fn uv_on_path() -> Option<PathBuf> {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("uv"))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!(
            "skipping: uv is not on PATH (scripts/setup installs it; scripts/test puts it there)"
        );
    }
    found
}

/// A private store and working directory for one test.
pub struct Blast {
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub work: PathBuf,
}

/// Ctrl-C and Ctrl-\ at their defaults in the test process, for everything it starts: a test run
/// started in the background of a shell without job control (`.ci/run &`) has them ignored, and blast
/// keeps an ignored signal ignored for what it runs, so the tests that send them would fail.
fn signals_as_at_a_terminal() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        // SAFETY: sets two dispositions of this process, before the test starts anything.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
        }
    });
}

impl Blast {
    pub fn new() -> Blast {
        signals_as_at_a_terminal();
        let tmp = tempfile::Builder::new()
            .prefix("blast-test-")
            .tempdir()
            .expect("tempdir");
        let home = tmp.path().join("home");
        let work = tmp.path().join("work");
        fs::create_dir_all(&work).expect("work dir");
        Blast { tmp, home, work }
    }

    /// As `new`, but outside `/tmp`: the install sandbox gives the installer a private `/tmp`, so only
    /// paths elsewhere show what it may and may not touch of the real filesystem.
    pub fn outside_tmp() -> Blast {
        signals_as_at_a_terminal();
        let parent = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        fs::create_dir_all(&parent).expect("target tmp dir");
        let tmp = tempfile::Builder::new()
            .prefix("blast-test-")
            .tempdir_in(parent)
            .expect("tempdir");
        let home = tmp.path().join("home");
        let work = tmp.path().join("work");
        fs::create_dir_all(&work).expect("work dir");
        Blast { tmp, home, work }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_blast"));
        cmd.args(args)
            .current_dir(&self.work)
            .env("BLAST_HOME", &self.home)
            .env_remove("BLAST_ENV")
            .env_remove("BLAST_SESSION")
            .env_remove("BLAST_LINK_MODE")
            .env_remove("BLAST_TEST_CRASH_AT")
            .env_remove("BLAST_TEST_INTERRUPT_AT")
            .env_remove("BLAST_TEST_STOP_AT")
            .env_remove("BLAST_TEST_NO_TMPFS_XATTRS");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run blast")
    }

    /// Runs blast, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "blast {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs blast with `--json`, asserts success, parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let text = self.ok(&all);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("blast {args:?}: bad JSON ({e}): {text}"))
    }

    /// Runs blast, asserts a clean failure (non-zero exit, no panic), returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "blast {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "blast {args:?} did not exit with 1: {stderr}"
        );
        assert!(
            !stderr.contains("panicked"),
            "blast {args:?} panicked: {stderr}"
        );
        // blast's own message comes last; an installer's output may precede it.
        assert!(
            stderr.starts_with("error: ") || stderr.contains("\nerror: "),
            "blast {args:?}: {stderr}"
        );
        stderr
    }

    /// `blast install -e ENV --no-index -f fixtures/wheels SPECS… --json`; returns the report.
    pub fn install_fixtures(&self, env: &Path, specs: &[&str]) -> Value {
        let wheels = wheels();
        let mut args = vec![
            "install",
            "-e",
            env.to_str().expect("utf-8"),
            "--no-index",
            "-f",
            wheels.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(specs);
        self.json(&args)
    }

    /// Creates a path environment `work/NAME` on the real interpreter; returns its path.
    /// `blast pip -e ENV -- install --force-reinstall --no-deps SPEC` from the fixture wheels: how
    /// `blast verify` says to bring a lost or damaged object back.
    pub fn force_reinstall(&self, env: &str, spec: &str) {
        let wheels = wheels();
        self.ok(&[
            "pip",
            "-e",
            env,
            "--",
            "install",
            "--force-reinstall",
            "--no-deps",
            "--no-index",
            "-f",
            wheels.to_str().unwrap(),
            spec,
        ]);
    }

    pub fn create_path_env(&self, name: &str) -> PathBuf {
        let path = self.work.join(name);
        self.ok(&[
            "create",
            "--path",
            path.to_str().expect("utf-8"),
            "--python",
            python(),
        ]);
        path
    }

    /// Store files of one kind (`objects`, `layers`, `snapshots`).
    pub fn store_files(&self, kind: &str) -> Vec<PathBuf> {
        store_files_in(&self.home, kind)
    }
}

/// Files of one kind (`objects`, `layers`, `snapshots`) in the store at `home`.
pub fn store_files_in(home: &Path, kind: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![home.join(kind)];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// `python -m pip --python ENV install --no-index --find-links fixtures/wheels ARGS…`, asserting success.
pub fn pip_install(env: &Path, args: &[&str]) {
    pip(env, "install", args);
}

pub fn pip_uninstall(env: &Path, names: &[&str]) {
    let mut args = vec!["-y"];
    args.extend_from_slice(names);
    pip(env, "uninstall", &args);
}

fn pip(env: &Path, verb: &str, args: &[&str]) {
    let wheels = wheels();
    let mut cmd = Command::new(python());
    cmd.args([
        "-m",
        "pip",
        "--python",
        env.to_str().expect("utf-8"),
        verb,
        "-q",
        "--disable-pip-version-check",
    ]);
    if verb == "install" {
        cmd.args([
            "--no-index",
            "--find-links",
            wheels.to_str().expect("utf-8"),
        ]);
    }
    let out = cmd
        .args(args)
        .env_remove("PIP_FIND_LINKS")
        .output()
        .expect("run pip");
    assert!(
        out.status.success(),
        "pip {verb} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts that a finished command succeeded, showing its stderr when it did not.
pub fn assert_succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the env's python with `code`; returns (success, stdout+stderr).
pub fn env_python(env: &Path, code: &str) -> (bool, String) {
    let out = Command::new(env.join("bin/python"))
        .args(["-c", code])
        .output()
        .expect("run env python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Bytecode files in the environment that Python would trust (their header's source mtime and size
/// match the source) but that were compiled from other source: what a crash between replacing a module
/// and purging its cache would leave. Returns their paths.
pub fn stale_bytecode(env: &Path) -> Vec<String> {
    const CHECK: &str = r#"
import marshal, os, sys
for root, dirs, files in os.walk(sys.prefix):
    if os.path.basename(root) != "__pycache__":
        continue
    for name in files:
        source = os.path.join(os.path.dirname(root), name.split(".")[0] + ".py")
        pyc = os.path.join(root, name)
        if not os.path.exists(source):
            continue
        data = open(pyc, "rb").read()
        st = os.stat(source)
        trusted = int.from_bytes(data[4:8], "little") == 0 and \
            int.from_bytes(data[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF and \
            int.from_bytes(data[12:16], "little") == st.st_size & 0xFFFFFFFF
        if trusted and marshal.loads(data[16:]) != compile(open(source, "rb").read(), source, "exec"):
            print(pyc)
"#;
    let out = Command::new(env.join("bin/python"))
        .args(["-B", "-c", CHECK])
        .output()
        .expect("run env python");
    assert!(
        out.status.success(),
        "bytecode check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// What is at one path of a directory, as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskEntry {
    Dir,
    File { content: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// Reads a directory recursively (skipping `__pycache__`), with content, permission bits and targets.
pub fn read_tree(root: &Path) -> BTreeMap<String, DiskEntry> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, DiskEntry>) {
    for entry in fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .expect("below root")
            .to_string_lossy()
            .into_owned();
        let meta = fs::symlink_metadata(&path).expect("lstat");
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path)
                .expect("readlink")
                .to_string_lossy()
                .into_owned();
            out.insert(rel, DiskEntry::Symlink(target));
        } else if meta.is_dir() {
            if entry.file_name() == "__pycache__" {
                continue;
            }
            out.insert(rel, DiskEntry::Dir);
            walk(root, &path, out);
        } else {
            let content = fs::read(&path).expect("read");
            out.insert(
                rel,
                DiskEntry::File {
                    content,
                    mode: meta.permissions().mode() & 0o7777,
                },
            );
        }
    }
}

/// The same view with only the executable bits of modes (files hardlinked from the store are read-only,
/// files pip wrote are not; both hold the same snapshot).
pub fn exec_bits_only(tree: &BTreeMap<String, DiskEntry>) -> BTreeMap<String, DiskEntry> {
    tree.iter()
        .map(|(p, e)| {
            let e = match e {
                DiskEntry::File { content, mode } => DiskEntry::File {
                    content: content.clone(),
                    mode: mode & 0o111,
                },
                other => other.clone(),
            };
            (p.clone(), e)
        })
        .collect()
}

/// Paths that differ between two trees, for readable assertion failures.
pub fn differing_paths(
    a: &BTreeMap<String, DiskEntry>,
    b: &BTreeMap<String, DiskEntry>,
) -> Vec<String> {
    let mut out: Vec<String> = a
        .iter()
        .filter(|(p, e)| b.get(*p) != Some(e))
        .map(|(p, _)| p.clone())
        .collect();
    out.extend(b.keys().filter(|p| !a.contains_key(*p)).cloned());
    out.sort();
    out
}

pub fn assert_same_tree(
    expected: &BTreeMap<String, DiskEntry>,
    actual: &BTreeMap<String, DiskEntry>,
) {
    let diff = differing_paths(expected, actual);
    assert!(diff.is_empty(), "directories differ at: {diff:?}");
}

// ---- Additions for the crash, gc and concurrency tests. ----

impl Blast {
    /// Runs blast with `BLAST_TEST_CRASH_AT=point` (which `command()` clears, so it is set again here)
    /// and asserts that the process was killed by SIGKILL there; returns what it printed.
    pub fn crash(&self, args: &[&str], point: &str) -> Output {
        use std::os::unix::process::ExitStatusExt;
        let out = self
            .command(args)
            .env("BLAST_TEST_CRASH_AT", point)
            .output()
            .expect("run blast");
        assert_eq!(
            out.status.signal(),
            Some(9),
            "blast {args:?} with BLAST_TEST_CRASH_AT={point} was not killed by SIGKILL ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs blast, asserts success, returns (stdout, stderr).
    pub fn ok_with_stderr(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "blast {args:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        (stdout, stderr)
    }

    /// History of an environment, newest first (`blast log --json`).
    pub fn log(&self, env: &str) -> Vec<Value> {
        self.json(&["log", "-e", env])
            .as_array()
            .expect("log is an array")
            .clone()
    }

    /// The store path of the object holding `content` (its `.x` variant when `executable`).
    pub fn object_file(&self, content: &[u8], executable: bool) -> PathBuf {
        let hex = blake3::hash(content).to_hex();
        let name = if executable {
            format!("{}.x", &hex[2..])
        } else {
            hex[2..].to_owned()
        };
        self.home.join("objects").join(&hex[..2]).join(name)
    }

    /// The object files that hold the files of `tree` (read from the environment at `env`). Files that
    /// mention the environment's or the interpreter's path are stored with placeholders instead of their
    /// bytes; they are left out.
    pub fn plain_objects(
        &self,
        env: &Path,
        tree: &BTreeMap<String, DiskEntry>,
    ) -> BTreeSet<PathBuf> {
        let env_path = env.to_str().expect("utf-8").as_bytes().to_vec();
        let py_bin = Path::new(python())
            .parent()
            .expect("bin dir")
            .to_str()
            .expect("utf-8")
            .as_bytes()
            .to_vec();
        let mentions =
            |content: &[u8], needle: &[u8]| content.windows(needle.len()).any(|w| w == needle);
        tree.values()
            .filter_map(|e| match e {
                DiskEntry::File { content, mode }
                    if !mentions(content, &env_path) && !mentions(content, &py_bin) =>
                {
                    Some(self.object_file(content, mode & 0o111 != 0))
                }
                _ => None,
            })
            .collect()
    }

    /// What is left in `$BLAST_HOME/staging`.
    pub fn staging_leftovers(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = fs::read_dir(self.home.join("staging"))
            .expect("staging dir")
            .flatten()
            .map(|e| e.path())
            .collect();
        out.sort();
        out
    }

    /// `blast verify` of the whole store and `blast verify -e ENV` of each given environment (which also
    /// reports objects its HEAD needs and the store lacks) exit 0 and report nothing.
    pub fn assert_verify_clean(&self, envs: &[&Path]) {
        let check = |report: &Value| {
            assert!(
                report["corrupt"].as_array().expect("corrupt").is_empty(),
                "{report}"
            );
            assert!(
                report["missing"].as_array().expect("missing").is_empty(),
                "{report}"
            );
            assert!(
                report["wrong_mode"]
                    .as_array()
                    .expect("wrong_mode")
                    .is_empty(),
                "{report}"
            );
            for env in report["envs"].as_array().expect("envs") {
                assert!(
                    env["drifted"].as_array().expect("drifted").is_empty(),
                    "{report}"
                );
                assert!(env["error"].is_null(), "{report}");
            }
        };
        check(&self.json(&["verify"]));
        for env in envs {
            let report = self.json(&["verify", "-e", env.to_str().expect("utf-8")]);
            assert_eq!(
                report["envs"].as_array().expect("envs").len(),
                1,
                "{report}"
            );
            check(&report);
        }
    }
}

/// `tree` as it would be at another path: every mention of `from` in file contents and symlink targets
/// is replaced by `to` (what blast's relocation does for an environment materialized elsewhere).
pub fn relocated(
    tree: &BTreeMap<String, DiskEntry>,
    from: &Path,
    to: &Path,
) -> BTreeMap<String, DiskEntry> {
    let from = from.to_str().expect("utf-8").as_bytes();
    let to = to.to_str().expect("utf-8").as_bytes();
    let replace = |bytes: &[u8]| -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i..].starts_with(from) {
                out.extend_from_slice(to);
                i += from.len();
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        out
    };
    tree.iter()
        .map(|(p, e)| {
            let e = match e {
                DiskEntry::File { content, mode } => DiskEntry::File {
                    content: replace(content),
                    mode: *mode,
                },
                DiskEntry::Symlink(target) => DiskEntry::Symlink(
                    String::from_utf8(replace(target.as_bytes())).expect("utf-8"),
                ),
                DiskEntry::Dir => DiskEntry::Dir,
            };
            (p.clone(), e)
        })
        .collect()
}

/// Changes one byte in the middle of `file` (a store file, read-only), keeping its length.
pub fn flip_a_byte(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut bytes = fs::read(file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    fs::set_permissions(file, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(file, bytes).unwrap();
    fs::set_permissions(file, fs::Permissions::from_mode(0o444)).unwrap();
}
