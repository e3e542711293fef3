//! The create part: `blast create NAME` against `uv venv`, `python -m venv --without-pip` and
//! `virtualenv --no-seed`, all on the same real interpreter, each in a fresh directory, after one warm-up
//! run each (for blast, that fills the store's interpreter cache).

use std::path::Path;
use std::process::Command;

use crate::error::Result;
use crate::files::{Scratch, remove_dir};
use crate::report::{Results, Row, Target};
use crate::runner::{Case, measure, run};
use crate::setup::Setup;

pub fn bench(setup: &Setup, scratch: &Scratch, runs: usize) -> Result<Results> {
    eprintln!("create: blast create vs uv venv, python -m venv, virtualenv");
    let home = scratch.dir("create-home")?;
    let venvs = scratch.dir("create")?;
    let blast_remove = |name: String| run(setup.blast(&home).arg("remove").arg(name)).map(drop);
    let fresh = |tool: &str, k: usize| venvs.join(format!("{tool}-{k}"));
    let blast_create = |name: String| {
        let mut cmd = setup.blast(&home);
        cmd.arg("create").arg(name);
        cmd
    };
    let venv_command = |mut cmd: Command, args: &[&str], dir: &Path| {
        cmd.args(args).arg(&setup.python).arg(dir);
        cmd
    };
    let cases = [
        Case::new("blast create --python REALPY", |k| {
            let mut cmd = blast_create(format!("real-{k}"));
            cmd.arg("--python").arg(&setup.python);
            cmd
        })
        .cleanup(|k| blast_remove(format!("real-{k}"))),
        Case::new("blast create (python3 from PATH)", |k| {
            blast_create(format!("path-{k}"))
        })
        .cleanup(|k| blast_remove(format!("path-{k}"))),
        Case::new("uv venv -p REALPY", |k| {
            venv_command(setup.uv(), &["venv", "-p"], &fresh("uv", k))
        })
        .cleanup(|k| remove_dir(&fresh("uv", k))),
        Case::new("python -m venv --without-pip", |k| {
            let mut cmd = setup.python();
            cmd.args(["-m", "venv", "--without-pip"])
                .arg(fresh("venv", k));
            cmd
        })
        .cleanup(|k| remove_dir(&fresh("venv", k))),
        Case::new("virtualenv --no-seed -p REALPY", |k| {
            venv_command(
                setup.virtualenv(),
                &["--no-seed", "-p"],
                &fresh("virtualenv", k),
            )
        })
        .cleanup(|k| remove_dir(&fresh("virtualenv", k))),
    ];
    let [blast, blast_path, uv, venv, virtualenv] = measure(&cases, 1, runs)?;
    Ok(Results {
        rows: vec![
            Row::compare("create", &blast, &uv),
            Row::compare("create", &blast, &venv),
            Row::compare("create", &blast, &virtualenv),
            Row::alone("create, python3 looked up on PATH", &blast_path),
        ],
        targets: vec![Target::ratio_at_most("create <= uv venv", &blast, &uv, 1.0)],
        notes: Vec::new(),
    })
}
