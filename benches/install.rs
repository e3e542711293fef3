//! The install part: `blast install` of the big wheel set (every wheel of the setup's wheel directory, by
//! name, with `--no-index --find-links`) against the same installer run bare into a plain venv, with pip
//! and with uv, interleaved in one measurement with a fifth case: blast with uv into a new environment
//! of a store that holds the set already (the rollback's); then `blast rollback` of a one-package
//! install in an environment that blast installed the set into.
//!
//! Both sides do the same work. pip is the real interpreter's in both (blast's environments have none,
//! so blast runs it with `--python` as the bare run does), with its cache off (`--no-cache-dir`, after
//! `--` for blast), so that every run builds its files from the wheels. uv's cache is the setup's, warm
//! and the same for both (blast binds it into its sandbox); bare uv hardlinks from it (its default), and
//! in blast's sandbox it makes the symlinks blast asks for (SPEC §20). Every timed run
//! gets a fresh target made outside the timing: a `python -m venv --without-pip` venv, or a
//! `blast create --path` environment in a store of its own, so that no blast run finds its objects
//! stored already (but for the fifth case, whose point that is). The time of a blast run is its whole command (sandbox, installer, layer commit,
//! apply); the `installer_seconds` of its `--json` report say how much of it the installer ran.
//!
//! Before the timed runs, an untimed `blast install --installer uv` warms uv's cache and makes the
//! environment of the rollback: `blastdep` from blast's fixture wheels is installed on top, then the
//! timed `blast rollback` runs alternate with `blast rollback @~1`. A rollback is itself a history entry,
//! so `@~1` is always the other snapshot: every run moves, and its `--json` report is checked for it.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::error::{Context, Error, Result};
use crate::files::{Scratch, remove_dir};
use crate::report::{Results, Row, Target, duration, ratio};
use crate::runner::{Case, Sample, json, measure, run};
use crate::setup::{Setup, fixture_wheels};

/// The target: blast's overhead (sandbox, layer commit, apply) at most 15% of the bare run.
const MAX_RATIO: f64 = 1.15;
const ROLLBACK_TARGET: Duration = Duration::from_millis(50);
/// The fixture wheel installed on top of the big set, to be rolled back.
pub const ONE_PACKAGE: &str = "blastdep";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installer {
    Pip,
    Uv,
}

impl Installer {
    fn name(self) -> &'static str {
        match self {
            Installer::Pip => "pip",
            Installer::Uv => "uv",
        }
    }

    fn goal(self) -> &'static str {
        match self {
            Installer::Pip => "blast install overhead ≤ 15% of bare pip",
            Installer::Uv => "blast install overhead ≤ 15% of bare uv",
        }
    }
}

/// What blast's `--json` report said of one install.
struct Report {
    installer: Duration,
    total: Duration,
}

/// The installs of the wheel set, made in `dir`.
pub struct Installs<'a> {
    setup: &'a Setup,
    dir: PathBuf,
    /// The distributions of the wheel directory.
    pub names: Vec<String>,
    /// The reports of the timed blast runs: pip's, then uv's.
    reports: [RefCell<Vec<Report>>; 2],
    /// What uv said when it could not link from its cache, the first time it did.
    uv_warning: RefCell<Option<String>>,
}

impl<'a> Installs<'a> {
    pub fn new(setup: &'a Setup, dir: PathBuf) -> Result<Installs<'a>> {
        Ok(Installs {
            names: wheel_names(&setup.wheels)?,
            setup,
            dir,
            reports: Default::default(),
            uv_warning: RefCell::new(None),
        })
    }

    /// The directory `what` of run `k` with `installer`.
    fn path(&self, what: &str, installer: Installer, k: usize) -> PathBuf {
        self.dir.join(format!("{what}-{}-{k}", installer.name()))
    }

    /// `--no-index --find-links WHEELS NAMES...`
    fn wheel_set<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.args(["--no-index", "--find-links"])
            .arg(&self.setup.wheels)
            .args(&self.names)
    }

    /// `python -m venv --without-pip VENV`.
    pub fn make_venv(&self, venv: &Path) -> Result<()> {
        run(self
            .setup
            .python()
            .args(["-m", "venv", "--without-pip"])
            .arg(venv))
        .map(drop)
    }

    /// The installer alone, into the plain venv `venv`.
    pub fn bare(&self, installer: Installer, venv: &Path) -> Command {
        let mut cmd = match installer {
            Installer::Pip => {
                let mut cmd = self.setup.pip();
                cmd.arg("--python")
                    .arg(venv)
                    .args(["install", "--no-cache-dir"]);
                cmd
            }
            Installer::Uv => {
                let mut cmd = self.setup.uv();
                cmd.args(["pip", "install", "--python"])
                    .arg(venv.join("bin/python"));
                cmd
            }
        };
        self.wheel_set(&mut cmd);
        cmd
    }

    /// A new blast environment at `env`, in the store `home`.
    fn create_env(&self, home: &Path, env: &Path) -> Result<()> {
        run(self
            .setup
            .blast(home)
            .args(["create", "--path"])
            .arg(env)
            .arg("--python")
            .arg(&self.setup.python))
        .map(drop)
    }

    /// `blast --json install` of the wheel set into the environment `env` of the store `home`.
    fn blast(&self, installer: Installer, home: &Path, env: &Path) -> Command {
        let mut cmd = self.setup.blast_installing(home);
        cmd.args(["--json", "install", "-e"])
            .arg(env)
            .args(["--installer", installer.name()]);
        self.wheel_set(&mut cmd);
        if installer == Installer::Pip {
            cmd.args(["--", "--no-cache-dir"]);
        }
        cmd
    }

    /// Checks that a blast install added the whole set, and keeps uv's warning if it printed one.
    fn read(&self, installer: Installer, output: &Output) -> Result<Report> {
        let report = json(output)?;
        let added = report["packages"].as_array().map_or(0, |changes| {
            changes.iter().filter(|c| c["change"] == "added").count()
        });
        if added != self.names.len() {
            return Err(Error::new(format!(
                "`blast install` added {added} distributions, not the {} of the wheel set",
                self.names.len()
            )));
        }
        let seconds = |key: &str| {
            report[key]
                .as_f64()
                .map(Duration::from_secs_f64)
                .ok_or_else(|| Error::new(format!("`blast --json install` printed no `{key}`")))
        };
        if installer == Installer::Uv && self.uv_warning.borrow().is_none() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            *self.uv_warning.borrow_mut() = stderr
                .lines()
                .find(|line| line.to_lowercase().contains("full copy"))
                .map(|line| line.trim().to_owned());
        }
        Ok(Report {
            installer: seconds("installer_seconds")?,
            total: seconds("total_seconds")?,
        })
    }

    fn reports(&self, installer: Installer) -> &RefCell<Vec<Report>> {
        &self.reports[installer as usize]
    }

    /// The bare run and the blast run of `installer`, each on a fresh target.
    fn cases(&self, installer: Installer) -> [Case<'_>; 2] {
        let venv = move |k: usize| self.path("venv", installer, k);
        let env = move |k: usize| self.path("env", installer, k);
        let home = move |k: usize| self.path("home", installer, k);
        let bare_label = match installer {
            Installer::Pip => "pip install --no-cache-dir",
            Installer::Uv => "uv pip install (warm cache)",
        };
        [
            Case::new(bare_label, move |k| self.bare(installer, &venv(k)))
                .prepare(move |k| self.make_venv(&venv(k))),
            Case::new(
                format!("blast install --installer {}", installer.name()),
                move |k| self.blast(installer, &home(k), &env(k)),
            )
            .prepare(move |k| self.create_env(&home(k), &env(k)))
            .inspect(move |_, output| {
                let report = self.read(installer, output)?;
                self.reports(installer).borrow_mut().push(report);
                Ok(())
            }),
        ]
    }

    /// blast with uv into a new environment of the store `home`, which holds the set already (the
    /// rollback's store: blast installed it there with uv). A second environment of one store is where
    /// blast's store pays: nothing of the set is read or written again but the links.
    fn case_store_holding_the_set<'c>(&'c self, home: &'c Path) -> Case<'c> {
        let env = move |k: usize| self.path("second-env", Installer::Uv, k);
        Case::new(
            "blast install --installer uv, store holding the set",
            move |k| self.blast(Installer::Uv, home, &env(k)),
        )
        .prepare(move |k| self.create_env(home, &env(k)))
        .inspect(move |_, output| self.read(Installer::Uv, output).map(drop))
    }

    /// Removes the directories of the first `runs` runs of every case, once the part is over. Removing a
    /// run's directories as it ends freed 14k–18k inodes, and on ext4 without a journal, as on the
    /// machine the README's figures come from, each inode allocated in the next minute first skips
    /// every recently freed one (`recently_deleted`): the next run paid for it, the more the more
    /// inodes it makes. Bare uv makes directories only (its files are links); blast in the sandbox
    /// makes every file anew, and its apply ran in 0.3 s after a removal against 0.09 s without.
    fn remove_at_end(&self, runs: usize) -> Result<()> {
        for installer in [Installer::Pip, Installer::Uv] {
            for k in 0..runs {
                for what in ["venv", "env", "home", "second-env"] {
                    remove_dir(&self.path(what, installer, k))?;
                }
            }
        }
        Ok(())
    }

    /// The row, target and notes of one installer.
    fn results(&self, installer: Installer, bare: &Sample, blast: &Sample) -> Results {
        let reports = self.reports(installer).borrow();
        let median = |time: fn(&Report) -> Duration| {
            Sample {
                label: String::new(),
                times: reports.iter().map(time).collect(),
            }
            .median()
        };
        let inside = median(|r| r.installer);
        let own = median(|r| r.total.saturating_sub(r.installer));
        let outside = blast.median().saturating_sub(median(|r| r.total));
        let target = Target::ratio_at_most(installer.goal(), blast, bare, MAX_RATIO);
        let mut notes = vec![format!(
            "blast install with {}: {} in all; by its `--json` reports (medians) the installer ran {} \
             in the sandbox (bare: {}) and blast's own work (sandbox, reading the changes into the \
             store, layer commit, apply, removing the installer's working area) took {}; the other {} \
             lie outside the reports' clock (process start, opening the store, printing and exit)",
            installer.name(),
            duration(blast.median()),
            duration(inside),
            duration(bare.median()),
            duration(own),
            duration(outside)
        )];
        if installer == Installer::Uv && !target.pass {
            let copied = match &*self.uv_warning.borrow() {
                Some(line) => format!("; uv copied its files instead, saying \"{line}\""),
                None => String::new(),
            };
            notes.push(format!(
                "the uv target is missed, {} against bare uv's {} (ratio {:.2}): bare uv hardlinks \
                 its cached files, which cannot reach into the sandbox's overlay (another mount), so \
                 there it makes symlinks into its cache ({} against {} bare){copied}; blast's own work \
                 ({}) is over the budget by itself: reading and hashing every file, writing the ones \
                 the store lacks and syncing them, linking them into the environment",
                duration(blast.median()),
                duration(bare.median()),
                ratio(blast.median(), bare.median()),
                duration(inside),
                duration(bare.median()),
                duration(own)
            ));
        }
        Results {
            rows: vec![Row::compare(
                format!("install {} wheels, {}", self.names.len(), installer.name()),
                blast,
                bare,
            )],
            targets: vec![target],
            notes,
        }
    }

    /// The environment of the rollback part: the wheel set installed by blast with uv (untimed, it
    /// warms uv's cache for the timed runs), then [`ONE_PACKAGE`] on top. Returns its store and path.
    fn rollback_env(&self) -> Result<(PathBuf, PathBuf)> {
        let (home, env) = (
            self.dir.join("rollback-home"),
            self.dir.join("rollback-env"),
        );
        self.create_env(&home, &env)?;
        let output = run(&mut self.blast(Installer::Uv, &home, &env))?;
        self.read(Installer::Uv, &output)?;
        let fixtures = fixture_wheels()?;
        run(self
            .setup
            .blast_installing(&home)
            .args(["install", "-e"])
            .arg(&env)
            .args(["--installer", "pip", "--no-index", "-f"])
            .arg(&fixtures)
            .arg(ONE_PACKAGE))?;
        Ok((home, env))
    }
}

/// The distribution names of the wheels in `dir`, from their file names.
fn wheel_names(dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).context(|| format!("reading {}", dir.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let name = entry
            .context(|| format!("reading {}", dir.display()))?
            .file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".whl") {
            names.extend(stem.split('-').next().map(str::to_owned));
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(Error::new(format!("no wheels in {}", dir.display())));
    }
    Ok(names)
}

/// A rollback's `--json` report, checked to have moved the environment.
fn moved(output: &Output) -> Result<Value> {
    let report = json(output)?;
    if report["unchanged"] != Value::Bool(false) {
        return Err(Error::new(format!(
            "`blast rollback` did not move the environment: {report}"
        )));
    }
    Ok(report)
}

/// `+blastdep 1.0.0`, `-blastdep 1.0.0`: a move's package changes.
fn package_changes(report: &Value) -> String {
    let changes: Vec<String> = report["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let sign = if c["change"] == "added" { '+' } else { '-' };
            let name = c["name"].as_str().unwrap_or("?");
            let version = c["version"].as_str().unwrap_or("?");
            format!("{sign}{name} {version}")
        })
        .collect();
    changes.join(" ")
}

/// Times `blast rollback` runs that alternate between the two last snapshots of `env`.
fn rollback(setup: &Setup, home: &Path, env: &Path, runs: usize) -> Result<Results> {
    eprintln!("rollback: blast rollback of a one-package install ({ONE_PACKAGE}), back and forth");
    let rollback = |k: usize| {
        let mut cmd = setup.blast(home);
        cmd.args(["--json", "rollback", "-e"]).arg(env);
        if k % 2 == 1 {
            cmd.arg("@~1");
        }
        cmd
    };
    // Two settling runs, one each way, which leave the environment where it was.
    let mut notes = Vec::new();
    for k in 0..2 {
        let report = moved(&run(&mut rollback(k))?)?;
        notes.push(format!(
            "{} ({} paths written, {} removed)",
            package_changes(&report),
            report["written"],
            report["removed"]
        ));
    }
    let [sample] = measure(
        &[Case::new("blast rollback, alternating with @~1", rollback)
            .inspect(|_, output| moved(output).map(drop))],
        0,
        runs,
    )?;
    Ok(Results {
        rows: vec![Row::alone(
            format!("rollback of a one-package install, big env ({ONE_PACKAGE})"),
            &sample,
        )],
        targets: vec![Target::below(
            "rollback of a one-package install < 50 ms",
            &sample,
            ROLLBACK_TARGET,
        )],
        notes: vec![format!(
            "each rollback moves the big environment one way or back: {}",
            notes.join("; ")
        )],
    })
}

pub fn bench(
    setup: &Setup,
    scratch: &Scratch,
    runs: usize,
    rollback_runs: usize,
) -> Result<Results> {
    if setup.cache.starts_with("/tmp") {
        return Err(Error::new(format!(
            "the install part cannot run with the bench cache in /tmp ({}): blast's sandbox has a \
             private /tmp, where uv and the environments would not be found; set BLAST_BENCH_CACHE \
             elsewhere",
            setup.cache.display()
        )));
    }
    let installs = Installs::new(setup, scratch.dir("install")?)?;
    eprintln!(
        "install: blast install vs pip and uv run bare, {} wheels from {}",
        installs.names.len(),
        setup.wheels.display()
    );
    let (home, env) = installs
        .rollback_env()
        .context(|| "making the environment of the rollback".into())?;
    let [bare_pip, blast_pip] = installs.cases(Installer::Pip);
    let [bare_uv, blast_uv] = installs.cases(Installer::Uv);
    let second_uv = installs.case_store_holding_the_set(&home);
    let warmups = 0;
    let [bare_pip, blast_pip, bare_uv, blast_uv, second_uv] = measure(
        &[bare_pip, blast_pip, bare_uv, blast_uv, second_uv],
        warmups,
        runs,
    )?;
    let mut results = Results::default();
    results.notes.push(format!(
        "install: {} distributions, each run into a fresh venv (`python -m venv --without-pip`) or a \
         fresh `blast create --path` environment in a store of its own; all are removed after the last \
         run, as a removal of thousands of files slows the file creation of the next minute on ext4 \
         without a journal",
        installs.names.len()
    ));
    results.extend(installs.results(Installer::Pip, &bare_pip, &blast_pip));
    results.extend(installs.results(Installer::Uv, &bare_uv, &blast_uv));
    results.rows.push(Row::compare(
        format!(
            "install {} wheels, uv, into a store holding them",
            installs.names.len()
        ),
        &second_uv,
        &bare_uv,
    ));
    results.notes.push(
        "install into a store holding the set: blast with uv into a new environment of the \
         rollback's store, where blast installed the set before; against the same bare uv runs"
            .into(),
    );
    results.extend(rollback(setup, &home, &env, rollback_runs)?);
    // After the rollback's runs too, which would pay for the removal as the installs did.
    installs.remove_at_end(warmups + runs)?;
    Ok(results)
}
