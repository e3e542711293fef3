//! The materialize part: `blast sync --from big --to <fresh path>` (the big snapshot made real in a new
//! directory) against `uv pip install` of the same requirements from the wheel directory into a fresh
//! venv with a warm uv cache, first with links (blast's default; uv's `--link-mode hardlink`), then with
//! copies (`BLAST_LINK_MODE=copy`; `--link-mode copy`). Before the timed runs, one untimed run of each
//! warms the caches and is checked: file counts, how many files are links, and that the blast copy
//! imports every requirement. With links, the runs' directories are removed only after the
//! measurement (see [`Mode::removes_at_end`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bigenv::{BigEnv, NAME};
use crate::error::{Context, Error, Result};
use crate::files::{Scratch, TreeStats, remove_dir, tree_stats};
use crate::report::{Results, Row, Target, count};
use crate::runner::{Case, json, measure, run};
use crate::setup::{REQUIREMENTS, Setup};

/// The modules of [`REQUIREMENTS`], imported to check a materialized environment.
pub const IMPORTS: &str = "import numpy, pandas, scipy, matplotlib, sklearn, requests, flask, django, \
                       fastapi, pydantic, rich, boto3";

/// How files land in the new directory.
struct Mode {
    name: &'static str,
    /// `BLAST_LINK_MODE`, when forced (none: the mode blast probed for this filesystem).
    blast_env: Option<&'static str>,
    uv_link_mode: &'static str,
}

const MODES: [Mode; 2] = [
    Mode {
        name: "links",
        blast_env: None,
        uv_link_mode: "hardlink",
    },
    Mode {
        name: "copies",
        blast_env: Some("copy"),
        uv_link_mode: "copy",
    },
];

/// The run number of the untimed warm-up, which no timed run uses.
const WARM_UP: usize = usize::MAX;

impl Mode {
    /// Whether the runs' directories wait until the measurement is over. Removing one frees ~6k
    /// inodes (its directories and the small files written, not linked), and on ext4 without a
    /// journal, as on the machine the README's figures come from, each inode allocated in the next
    /// minutes first skips every recently freed one (`recently_deleted`): a run right after a removal
    /// took 0.8–1 s against 0.13–0.2 s, for either tool. With links the directories hold little data;
    /// copies (390 MB a run) are removed after each run.
    fn removes_at_end(&self) -> bool {
        self.blast_env.is_none()
    }
}

/// The commands of one mode, on the store `home`, in the directory `dir`.
struct Runner<'a> {
    setup: &'a Setup,
    home: &'a Path,
    dir: &'a Path,
    mode: &'a Mode,
}

impl Runner<'_> {
    fn blast_target(&self, k: usize) -> PathBuf {
        self.dir.join(format!("blast-{}-{k}", self.mode.name))
    }

    fn uv_target(&self, k: usize) -> PathBuf {
        self.dir.join(format!("uv-{}-{k}", self.mode.name))
    }

    fn blast_sync(&self, k: usize) -> Command {
        let mut cmd = self.setup.blast(self.home);
        if let Some(mode) = self.mode.blast_env {
            cmd.env("BLAST_LINK_MODE", mode);
        }
        cmd.args(["sync", "--from", NAME, "--to"])
            .arg(self.blast_target(k));
        cmd
    }

    fn blast_remove(&self, k: usize) -> Result<()> {
        run(self
            .setup
            .blast(self.home)
            .arg("remove")
            .arg(self.blast_target(k)))
        .map(drop)
    }

    fn uv_venv(&self, k: usize) -> Result<()> {
        run(self
            .setup
            .uv()
            .args(["venv", "-p"])
            .arg(&self.setup.python)
            .arg(self.uv_target(k)))
        .map(drop)
    }

    fn uv_install(&self, k: usize) -> Command {
        let mut cmd = self.setup.uv();
        cmd.args(["pip", "install", "--python"])
            .arg(self.uv_target(k))
            .args(["--link-mode", self.mode.uv_link_mode])
            .args(["--no-index", "--find-links"])
            .arg(&self.setup.wheels)
            .args(REQUIREMENTS);
        cmd
    }

    fn uv_remove(&self, k: usize) -> Result<()> {
        remove_dir(&self.uv_target(k))
    }

    /// Removes run `k`'s directory with `remove`, unless the directories wait for the end of the
    /// measurement.
    fn remove_after_run(
        &self,
        k: usize,
        remove: impl Fn(&Self, usize) -> Result<()>,
    ) -> Result<()> {
        if self.mode.removes_at_end() {
            return Ok(());
        }
        remove(self, k)
    }

    /// Removes the directories that waited: the warm-up's and those of `runs` timed runs.
    fn remove_at_end(&self, runs: usize) -> Result<()> {
        if !self.mode.removes_at_end() {
            return Ok(());
        }
        for k in (0..runs).chain([WARM_UP]) {
            self.blast_remove(k)?;
            self.uv_remove(k)?;
        }
        Ok(())
    }

    /// One untimed run of each tool (it warms uv's cache and the page cache), checked; returns notes.
    fn warm_up_and_check(&self, big: &BigEnv) -> Result<Vec<String>> {
        let synced = run(self.blast_sync(WARM_UP).arg("--json"))?;
        let written = json(&synced)?["written"]
            .as_u64()
            .ok_or_else(|| Error::new("`blast --json sync` printed no `written`"))?;
        let target = self.blast_target(WARM_UP);
        let blast = tree_stats(&target)?;
        let imports = run(Command::new(target.join("bin/python")).args(["-c", IMPORTS]));
        self.remove_after_run(WARM_UP, Self::blast_remove)?;
        self.uv_venv(WARM_UP)?;
        run(&mut self.uv_install(WARM_UP))?;
        let uv = tree_stats(&self.uv_target(WARM_UP))?;
        self.remove_after_run(WARM_UP, Self::uv_remove)?;

        let mut notes = vec![format!(
            "materialize with {}: blast wrote {} entries, {}; uv made {}",
            self.mode.name,
            count(written),
            describe(&blast),
            describe(&uv)
        )];
        // Sizes differ by design: files that hold the environment's path are rendered for the new path.
        if blast.files != big.stats.files {
            notes.push(format!(
                "ODD: the blast sync with {} holds {} files, `{NAME}` {}",
                self.mode.name,
                count(blast.files),
                count(big.stats.files)
            ));
        }
        if let Err(e) = imports {
            notes.push(format!(
                "ODD: the blast sync with {} does not import its packages: {e}",
                self.mode.name
            ));
        }
        Ok(notes)
    }
}

fn describe(stats: &TreeStats) -> String {
    format!(
        "{} files of which {} hardlinked, {} packages",
        count(stats.files),
        count(stats.linked),
        stats.packages
    )
}

pub fn bench(
    setup: &Setup,
    home: &Path,
    big: &BigEnv,
    scratch: &Scratch,
    runs: usize,
) -> Result<Results> {
    let dir = scratch.dir("materialize")?;
    let mut results = Results::default();
    for mode in &MODES {
        eprintln!(
            "materialize with {}: blast sync vs uv pip install --link-mode {} (warm cache)",
            mode.name, mode.uv_link_mode
        );
        let runner = Runner {
            setup,
            home,
            dir: &dir,
            mode,
        };
        let notes = runner
            .warm_up_and_check(big)
            .context(|| format!("warming up materialize with {}", mode.name))?;
        results.notes.extend(notes);
        let blast_label = match mode.blast_env {
            Some(forced) => format!("BLAST_LINK_MODE={forced} blast sync"),
            None => "blast sync".to_owned(),
        };
        let cases = [
            Case::new(blast_label, |k| runner.blast_sync(k))
                .cleanup(|k| runner.remove_after_run(k, Runner::blast_remove)),
            Case::new(
                format!("uv pip install --link-mode {}", mode.uv_link_mode),
                |k| runner.uv_install(k),
            )
            .prepare(|k| runner.uv_venv(k))
            .cleanup(|k| runner.remove_after_run(k, Runner::uv_remove)),
        ];
        let [blast, uv] = measure(&cases, 0, runs)?;
        runner.remove_at_end(runs)?;
        results.rows.push(Row::compare(
            format!("materialize, {}", mode.name),
            &blast,
            &uv,
        ));
        if mode.blast_env.is_none() {
            results.targets.push(Target::ratio_at_most(
                "materialize <= 0.5 x uv warm install",
                &blast,
                &uv,
                0.5,
            ));
        }
    }
    Ok(results)
}
