//! One-time setup, cached in `$BLAST_BENCH_CACHE` (default `~/.cache/blast-bench`) and redone only when
//! missing: a tools venv with uv and virtualenv from PyPI, and a wheel directory with the packages of the
//! materialize benchmark. Also finds the real Python interpreter (behind any pyenv shim), the blast
//! binary and blast's fixture wheels, and builds the commands of each tool with a controlled environment.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Context, Error, Result};
use crate::runner::run;

/// The packages of the materialize benchmark (the design's anchor: 53 packages with dependencies).
pub const REQUIREMENTS: [&str; 12] = [
    "numpy",
    "pandas",
    "scipy",
    "matplotlib",
    "scikit-learn",
    "requests",
    "flask",
    "django",
    "fastapi",
    "pydantic",
    "rich",
    "boto3",
];

/// Written into the wheel directory once it is known to hold every requirement and its dependencies.
const WHEELS_COMPLETE: &str = ".blast-bench-complete";

pub struct Setup {
    /// `$BLAST_BENCH_CACHE`.
    pub cache: PathBuf,
    /// The real interpreter, shims resolved; every tool gets this path.
    pub python: PathBuf,
    pub wheels: PathBuf,
    blast: PathBuf,
    uv: PathBuf,
    virtualenv: PathBuf,
    uv_cache: PathBuf,
    /// `PATH` with the tools venv first, where blast finds uv.
    path_with_uv: OsString,
}

impl Setup {
    pub fn prepare(blast: Option<PathBuf>) -> Result<Setup> {
        let cache = cache_dir()?;
        fs::create_dir_all(&cache).context(|| format!("creating {}", cache.display()))?;
        let blast = blast_binary(blast)?;
        let python = real_python()?;
        let tools = cache.join("tools");
        ensure_tools(&python, &tools)?;
        let wheels = cache.join("wheels");
        ensure_wheels(&tools, &wheels)?;
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path_with_uv = std::env::join_paths(
            std::iter::once(tools.join("bin")).chain(std::env::split_paths(&path)),
        )
        .context(|| format!("putting {} on PATH", tools.join("bin").display()))?;
        Ok(Setup {
            uv: tools.join("bin/uv"),
            path_with_uv,
            virtualenv: tools.join("bin/virtualenv"),
            uv_cache: cache.join("uv-cache"),
            cache,
            python,
            wheels,
            blast,
        })
    }

    /// `blast` on the store `home`, with no inherited environment selection or link mode.
    pub fn blast(&self, home: &Path) -> Command {
        let mut cmd = Command::new(&self.blast);
        cmd.env("BLAST_HOME", home)
            .env_remove("BLAST_ENV")
            .env_remove("BLAST_LINK_MODE");
        cmd
    }

    /// `blast` on the store `home` for `blast install`: its installers get the environment that
    /// [`Setup::pip`] and [`Setup::uv`] give them, and `--installer uv` is the bench's uv.
    pub fn blast_installing(&self, home: &Path) -> Command {
        let mut cmd = self.blast(home);
        cmd.env("PATH", &self.path_with_uv);
        self.uv_env(&mut cmd);
        pip_env(&mut cmd);
        cmd
    }

    /// `uv` with its cache in the bench cache, no user configuration and no interpreter downloads.
    pub fn uv(&self) -> Command {
        let mut cmd = Command::new(&self.uv);
        self.uv_env(&mut cmd);
        cmd
    }

    fn uv_env(&self, cmd: &mut Command) {
        cmd.env("UV_CACHE_DIR", &self.uv_cache)
            .env("UV_NO_CONFIG", "1")
            .env("UV_PYTHON_DOWNLOADS", "never")
            .env_remove("UV_LINK_MODE")
            .env_remove("VIRTUAL_ENV");
    }

    pub fn virtualenv(&self) -> Command {
        Command::new(&self.virtualenv)
    }

    /// The real interpreter.
    pub fn python(&self) -> Command {
        Command::new(&self.python)
    }

    /// The real interpreter's pip, finding packages only where the command line says.
    pub fn pip(&self) -> Command {
        let mut cmd = self.python();
        cmd.args(["-m", "pip"]);
        pip_env(&mut cmd);
        cmd
    }

    /// One line per tool: what it is and where.
    pub fn versions(&self) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        for (mut cmd, path) in [
            (Command::new(&self.blast), &self.blast),
            (self.uv(), &self.uv),
            (self.virtualenv(), &self.virtualenv),
            (self.python(), &self.python),
        ] {
            let output = run(cmd.arg("--version"))?;
            let text = String::from_utf8_lossy(&output.stdout);
            let first = text.lines().next().unwrap_or_default();
            let first = first.split(" from ").next().unwrap_or(first);
            lines.push(format!("{first} ({})", path.display()));
        }
        Ok(lines)
    }
}

fn pip_env(cmd: &mut Command) {
    cmd.env_remove("PIP_FIND_LINKS")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
}

/// blast's fixture wheels (`fixtures/wheels` in the repository), found from the bench crate's directory:
/// `CARGO_MANIFEST_DIR` when cargo runs the bench, else the one it was built in.
pub fn fixture_wheels() -> Result<PathBuf> {
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let wheels = crate_dir.join("../fixtures/wheels");
    if wheels.is_dir() {
        Ok(wheels)
    } else {
        Err(Error::new(format!(
            "no fixture wheels at {}: run blast-bench from its repository (cargo run -p blast-benches)",
            wheels.display()
        )))
    }
}

fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("BLAST_BENCH_CACHE").filter(|v| !v.is_empty()) {
        return std::path::absolute(&dir)
            .context(|| format!("resolving BLAST_BENCH_CACHE={}", dir.to_string_lossy()));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join(".cache/blast-bench"))
        .ok_or_else(|| Error::new("cannot place the bench cache: set BLAST_BENCH_CACHE (or HOME)"))
}

/// `--blast`, else the `blast` built next to this program.
fn blast_binary(flag: Option<PathBuf>) -> Result<PathBuf> {
    let path = match flag {
        Some(path) => std::path::absolute(&path)
            .context(|| format!("resolving --blast {}", path.display()))?,
        None => {
            let exe = std::env::current_exe().context(|| "finding this program's path".into())?;
            exe.with_file_name("blast")
        }
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::new(format!(
            "no blast binary at {}: build it (cargo build --release -p blast -p blast-benches) or pass --blast PATH",
            path.display()
        )))
    }
}

/// `python3` as the shell finds it, resolved to the interpreter binary behind links and shims.
fn real_python() -> Result<PathBuf> {
    let output = run(Command::new("python3").args([
        "-c",
        "import os,sys;print(os.path.realpath(sys.executable))",
    ]))
    .context(|| "finding the real Python interpreter".into())?;
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::new(format!(
            "python3 says its interpreter is `{}`, which is not a file",
            path.display()
        )))
    }
}

fn answers_version(tool: &Path) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The tools venv: `python -m venv tools && tools/bin/pip install uv virtualenv`.
fn ensure_tools(python: &Path, tools: &Path) -> Result<()> {
    let ready =
        || answers_version(&tools.join("bin/uv")) && answers_version(&tools.join("bin/virtualenv"));
    if ready() {
        return Ok(());
    }
    eprintln!(
        "setup: creating the tools venv {} (uv and virtualenv from PyPI)",
        tools.display()
    );
    run(Command::new(python).args(["-m", "venv"]).arg(tools))?;
    run(Command::new(tools.join("bin/pip")).args([
        "install",
        "--disable-pip-version-check",
        "uv",
        "virtualenv",
    ]))?;
    if ready() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "after installing them, uv and virtualenv in {} still do not run",
            tools.display()
        )))
    }
}

/// The wheel directory: complete when pip resolves every requirement from it alone, else downloaded
/// from PyPI (`pip download -d wheels ...`, which keeps the wheels already there).
fn ensure_wheels(tools: &Path, wheels: &Path) -> Result<()> {
    let marker = wheels.join(WHEELS_COMPLETE);
    let expected = REQUIREMENTS.join(" ");
    if fs::read_to_string(&marker).is_ok_and(|text| text.trim() == expected) {
        return Ok(());
    }
    fs::create_dir_all(wheels).context(|| format!("creating {}", wheels.display()))?;
    let pip = || {
        let mut cmd = Command::new(tools.join("bin/pip"));
        cmd.args(["download", "--disable-pip-version-check", "-d"])
            .arg(wheels);
        cmd
    };
    let offline = run(pip()
        .env_remove("PIP_FIND_LINKS")
        .args(["--no-index", "--find-links"])
        .arg(wheels)
        .args(REQUIREMENTS));
    if offline.is_err() {
        eprintln!(
            "setup: downloading the wheels of {} into {}",
            expected,
            wheels.display()
        );
        run(pip().args(REQUIREMENTS))?;
    }
    fs::write(&marker, format!("{expected}\n")).context(|| format!("writing {}", marker.display()))
}
