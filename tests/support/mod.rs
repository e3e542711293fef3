//! Shared harness of the integration tests: a private store per test, the real `blast` binary, the real
//! Python, pip installs of the fixture wheels, and a walker that reads a directory back as bytes, modes
//! and symlink targets so tests compare what is really on disk.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::collections::BTreeMap;
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
            .args(["-c", "import os, sys; print(os.path.realpath(sys.executable))"])
            .output()
            .expect("python3 must be on PATH for the integration tests");
        String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
    })
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

pub fn wheels() -> PathBuf {
    fixtures().join("wheels")
}

/// A private store and working directory for one test.
pub struct Blast {
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub work: PathBuf,
}

impl Blast {
    pub fn new() -> Blast {
        let tmp = tempfile::Builder::new().prefix("blast-test-").tempdir().expect("tempdir");
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
            .env_remove("BLAST_LINK_MODE")
            .env_remove("BLAST_TEST_CRASH_AT");
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
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("blast {args:?}: bad JSON ({e}): {text}"))
    }

    /// Runs blast, asserts a clean failure (non-zero exit, no panic), returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "blast {args:?} should have failed; stdout: {}", String::from_utf8_lossy(&out.stdout));
        assert_eq!(out.status.code(), Some(1), "blast {args:?} did not exit with 1: {stderr}");
        assert!(!stderr.contains("panicked"), "blast {args:?} panicked: {stderr}");
        assert!(stderr.starts_with("error: "), "blast {args:?}: {stderr}");
        stderr
    }

    /// Creates a path environment `work/NAME` on the real interpreter; returns its path.
    pub fn create_path_env(&self, name: &str) -> PathBuf {
        let path = self.work.join(name);
        self.ok(&["create", "--path", path.to_str().expect("utf-8"), "--python", python()]);
        path
    }

    /// Store files of one kind (`objects`, `layers`, `snapshots`).
    pub fn store_files(&self, kind: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.home.join(kind)];
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
    cmd.args(["-m", "pip", "--python", env.to_str().expect("utf-8"), verb, "-q", "--disable-pip-version-check"]);
    if verb == "install" {
        cmd.args(["--no-index", "--find-links", wheels.to_str().expect("utf-8")]);
    }
    let out = cmd.args(args).env_remove("PIP_FIND_LINKS").output().expect("run pip");
    assert!(out.status.success(), "pip {verb} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs the env's python with `code`; returns (success, stdout+stderr).
pub fn env_python(env: &Path, code: &str) -> (bool, String) {
    let out = Command::new(env.join("bin/python")).args(["-c", code]).output().expect("run env python");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
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
        let rel = path.strip_prefix(root).expect("below root").to_string_lossy().into_owned();
        let meta = fs::symlink_metadata(&path).expect("lstat");
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).expect("readlink").to_string_lossy().into_owned();
            out.insert(rel, DiskEntry::Symlink(target));
        } else if meta.is_dir() {
            if entry.file_name() == "__pycache__" {
                continue;
            }
            out.insert(rel, DiskEntry::Dir);
            walk(root, &path, out);
        } else {
            let content = fs::read(&path).expect("read");
            out.insert(rel, DiskEntry::File { content, mode: meta.permissions().mode() & 0o7777 });
        }
    }
}

/// The same view with only the executable bits of modes (files hardlinked from the store are read-only,
/// files pip wrote are not; both hold the same snapshot).
pub fn exec_bits_only(tree: &BTreeMap<String, DiskEntry>) -> BTreeMap<String, DiskEntry> {
    tree.iter()
        .map(|(p, e)| {
            let e = match e {
                DiskEntry::File { content, mode } => DiskEntry::File { content: content.clone(), mode: mode & 0o111 },
                other => other.clone(),
            };
            (p.clone(), e)
        })
        .collect()
}

/// Paths that differ between two trees, for readable assertion failures.
pub fn differing_paths(a: &BTreeMap<String, DiskEntry>, b: &BTreeMap<String, DiskEntry>) -> Vec<String> {
    let mut out: Vec<String> = a
        .iter()
        .filter(|(p, e)| b.get(*p) != Some(e))
        .map(|(p, _)| p.clone())
        .collect();
    out.extend(b.keys().filter(|p| !a.contains_key(*p)).cloned());
    out.sort();
    out
}

pub fn assert_same_tree(expected: &BTreeMap<String, DiskEntry>, actual: &BTreeMap<String, DiskEntry>) {
    let diff = differing_paths(expected, actual);
    assert!(diff.is_empty(), "directories differ at: {diff:?}");
}
