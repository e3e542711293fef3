//! `blast-bench`: times blast against uv, `python -m venv` and virtualenv on the same work and checks the
//! performance targets of DESIGN.md ("Performance anchors"). Six parts, each selectable with `--only`:
//! - create: a new environment ([`create`]);
//! - materialize: a 53-package environment made real in a fresh directory, with links and with copies,
//!   against uv's warm-cache install ([`materialize`]);
//! - snapshot: capturing an unchanged environment ([`snapshot`]);
//! - install: `blast install` of the big wheel set against pip and uv run bare, and `blast rollback` of
//!   a one-package install ([`install`]);
//! - images: `blast export` of the big environment against `tar | zstd` and `tar czf`, `blast restore`
//!   against uv's cold-cache install, and a thin image's size ([`images`]);
//! - session: how soon a live session captures an install made from outside it, and its watcher's CPU
//!   while idle ([`session`]).
//!
//! Prints progress on stderr and the final table on stdout. Setup is cached in `$BLAST_BENCH_CACHE`
//! ([`setup`]); the stores and environments of a run live in a scratch directory removed at the end.

mod bigenv;
mod create;
mod error;
mod files;
mod images;
mod install;
mod materialize;
mod options;
mod report;
mod runner;
mod session;
mod setup;
mod snapshot;

use std::process::ExitCode;

use bigenv::BigEnv;
use error::Result;
use files::Scratch;
use options::{Parsed, Part};
use report::Results;
use setup::Setup;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blast-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let options = match options::parse(std::env::args_os().skip(1))? {
        Parsed::Help => {
            print!("{}", options::USAGE);
            return Ok(());
        }
        Parsed::Run(options) => options,
    };
    let runs = options.runs();
    let setup = Setup::prepare(options.blast.clone())?;
    println!("blast-bench{}", if options.quick { " --quick" } else { "" });
    for line in setup.versions()? {
        println!("  {line}");
    }
    println!("  cache: {}", setup.cache.display());
    println!("  load average at start: {}", load_average());
    let scratch = Scratch::create(&setup.cache)?;

    let mut results = Results::default();
    if options.wants(Part::Create) {
        results.extend(create::bench(&setup, &scratch, runs.create)?);
    }
    if [Part::Materialize, Part::Snapshot, Part::Images]
        .into_iter()
        .any(|part| options.wants(part))
    {
        let home = scratch.dir("home")?;
        let big = BigEnv::build(&setup, &home)?;
        results.extend(big.results());
        if options.wants(Part::Materialize) {
            results.extend(materialize::bench(
                &setup,
                &home,
                &big,
                &scratch,
                runs.materialize,
            )?);
        }
        if options.wants(Part::Snapshot) {
            results.extend(snapshot::bench(&setup, &home, &big, runs.snapshot)?);
        }
        if options.wants(Part::Images) {
            results.extend(images::bench(&setup, &home, &big, &scratch, runs.images)?);
        }
    }
    if options.wants(Part::Install) {
        results.extend(install::bench(
            &setup,
            &scratch,
            runs.install,
            runs.rollback,
        )?);
    }
    if options.wants(Part::Session) {
        results.extend(session::bench(&setup, &scratch, runs.session, runs.idle)?);
    }
    results.notes.push(format!(
        "load average (1, 5, 15 min) at the end: {}; other work on the machine makes the timings noisy",
        load_average()
    ));
    report::print(&results);
    Ok(())
}

/// `/proc/loadavg`'s three averages, to judge how busy the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|e| format!("unknown ({e})"))
}
