//! Command-line options of `blast-bench`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

pub const USAGE: &str = "\
blast-bench: compares blast with uv, `python -m venv` and virtualenv on the same work

Usage: blast-bench [--quick] [--only create|materialize|snapshot|install|images|session] [--blast PATH]

Options:
  --quick          fewer runs per measurement
  --only PART      run one part: create, materialize, snapshot, install, images or session
  --blast PATH     the blast binary (default: `blast` next to this program)
  -h, --help       print this help

The tools venv (uv, virtualenv), the wheels and uv's cache live in $BLAST_BENCH_CACHE
(default ~/.cache/blast-bench) and are created on first use.
";

/// The parts of the benchmark that `--only` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Create,
    Materialize,
    Snapshot,
    Install,
    Images,
    Session,
}

impl Part {
    fn parse(value: &str) -> Result<Part> {
        match value {
            "create" => Ok(Part::Create),
            "materialize" => Ok(Part::Materialize),
            "snapshot" => Ok(Part::Snapshot),
            "install" => Ok(Part::Install),
            "images" => Ok(Part::Images),
            "session" => Ok(Part::Session),
            other => Err(Error::new(format!(
                "--only takes create, materialize, snapshot, install, images or session, not `{other}`\n\n{USAGE}"
            ))),
        }
    }
}

/// How many timed runs each part makes.
pub struct Runs {
    pub create: usize,
    pub materialize: usize,
    pub snapshot: usize,
    /// Installs of the whole wheel set, tens of seconds each with pip.
    pub install: usize,
    /// Rollbacks, which alternate between two snapshots: an even count times both directions alike.
    pub rollback: usize,
    /// Exports, archives and restores of the big environment, seconds each.
    pub images: usize,
    /// Installs and uninstalls captured by a session.
    pub session: usize,
    /// How long the session's watcher is watched while idle.
    pub idle: Duration,
}

pub struct Options {
    pub quick: bool,
    pub only: Option<Part>,
    pub blast: Option<PathBuf>,
}

impl Options {
    pub fn wants(&self, part: Part) -> bool {
        self.only.is_none_or(|only| only == part)
    }

    pub fn runs(&self) -> Runs {
        if self.quick {
            Runs {
                create: 5,
                materialize: 3,
                snapshot: 5,
                install: 1,
                rollback: 6,
                images: 1,
                session: 4,
                idle: Duration::from_secs(10),
            }
        } else {
            Runs {
                create: 15,
                materialize: 5,
                snapshot: 15,
                install: 3,
                rollback: 16,
                images: 3,
                session: 16,
                idle: Duration::from_secs(60),
            }
        }
    }
}

pub enum Parsed {
    Run(Options),
    Help,
}

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed> {
    let mut options = Options {
        quick: false,
        only: None,
        blast: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| Error::new(format!("argument {a:?} is not UTF-8\n\n{USAGE}")))?;
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.into())),
            _ => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| Error::new(format!("{flag} needs a value\n\n{USAGE}")))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--quick" if inline.is_none() => options.quick = true,
            "--quick" => {
                return Err(Error::new(format!("--quick takes no value\n\n{USAGE}")));
            }
            "--only" => {
                let part = value()?;
                options.only = Some(Part::parse(&part.to_string_lossy())?);
            }
            "--blast" => options.blast = Some(PathBuf::from(value()?)),
            other => {
                return Err(Error::new(format!("unknown argument `{other}`\n\n{USAGE}")));
            }
        }
    }
    Ok(Parsed::Run(options))
}
