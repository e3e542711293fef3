//! The `big` environment that the materialize and snapshot parts work on: a blast environment with the
//! twelve requirements and their dependencies installed by pip from the wheel directory, captured as a
//! snapshot. Its first capture (every file hashed and stored) is timed once along the way.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Context, Error, Result};
use crate::files::{TreeStats, tree_stats};
use crate::report::{self, Results, Row};
use crate::runner::{Sample, json, run, time};
use crate::setup::{REQUIREMENTS, Setup};

pub const NAME: &str = "big";

pub struct BigEnv {
    /// Its directory.
    pub path: PathBuf,
    pub stats: TreeStats,
    install: Duration,
    first_capture: Duration,
    hashed: u64,
}

impl BigEnv {
    /// Creates the environment in the store `home`, installs into it and takes its first snapshot.
    pub fn build(setup: &Setup, home: &Path) -> Result<BigEnv> {
        eprintln!(
            "big environment: blast create, pip install of {} packages from {}, blast snapshot",
            REQUIREMENTS.len(),
            setup.wheels.display()
        );
        let created = run(setup
            .blast(home)
            .args(["--json", "create", NAME, "--python"])
            .arg(&setup.python))?;
        let path = json(&created)?["path"]
            .as_str()
            .map(PathBuf::from)
            .ok_or_else(|| Error::new("`blast --json create` printed no `path`"))?;
        let (_, install) = time(
            setup
                .pip()
                .arg("--python")
                .arg(&path)
                .args(["install", "--no-index", "--find-links"])
                .arg(&setup.wheels)
                .args(REQUIREMENTS),
        )?;
        let (captured, first_capture) =
            time(setup.blast(home).args(["--json", "snapshot", "-e", NAME]))?;
        let hashed = json(&captured)?["files_hashed"]
            .as_u64()
            .ok_or_else(|| Error::new("`blast --json snapshot` printed no `files_hashed`"))?;
        let stats = tree_stats(&path).context(|| "measuring the big environment".into())?;
        eprintln!(
            "  pip install {}, first snapshot {} ({} files hashed)",
            report::duration(install),
            report::duration(first_capture),
            report::count(hashed)
        );
        Ok(BigEnv {
            path,
            stats,
            install,
            first_capture,
            hashed,
        })
    }

    /// The first capture's row and what the environment holds.
    pub fn results(&self) -> Results {
        Results {
            rows: vec![Row::alone(
                format!(
                    "snapshot, first capture ({} files hashed)",
                    report::count(self.hashed)
                ),
                &Sample::once("blast snapshot", self.first_capture),
            )],
            targets: Vec::new(),
            notes: vec![format!(
                "environment `{NAME}`: {} packages (*.dist-info), {} files, {} (__pycache__ left out); \
                 pip install into it took {}",
                self.stats.packages,
                report::count(self.stats.files),
                report::megabytes(self.stats.bytes),
                report::duration(self.install)
            )],
        }
    }
}
