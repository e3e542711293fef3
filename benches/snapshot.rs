//! The snapshot part: `blast snapshot -e big` on the unchanged environment, where the stat cache should
//! make the check cost `lstat` calls only. Two settling runs go first; a third, with `--json`, checks that
//! nothing was hashed and no snapshot was made.

use std::path::Path;
use std::time::Duration;

use crate::bigenv::{BigEnv, NAME};
use crate::error::{Error, Result};
use crate::report::{Results, Row, Target, count};
use crate::runner::{Case, json, measure, run};
use crate::setup::Setup;

const TARGET: Duration = Duration::from_millis(50);

pub fn bench(setup: &Setup, home: &Path, big: &BigEnv, runs: usize) -> Result<Results> {
    eprintln!("snapshot: blast snapshot -e {NAME} on the unchanged environment");
    let snapshot = || {
        let mut cmd = setup.blast(home);
        cmd.args(["snapshot", "-e", NAME]);
        cmd
    };
    for _ in 0..2 {
        run(&mut snapshot())?;
    }
    let check = json(&run(setup
        .blast(home)
        .args(["--json", "snapshot", "-e", NAME]))?)?;
    let mut notes = Vec::new();
    let hashed = check["files_hashed"]
        .as_u64()
        .ok_or_else(|| Error::new("`blast --json snapshot` printed no `files_hashed`"))?;
    if hashed > 0 || !check["snapshot"].is_null() {
        notes.push(format!(
            "ODD: `blast snapshot` of the unchanged `{NAME}` after two settling runs hashed {} files \
             and made snapshot {}",
            count(hashed),
            check["snapshot"]
        ));
    }
    let [sample] = measure(
        &[Case::new("blast snapshot (unchanged)", |_| snapshot())],
        0,
        runs,
    )?;
    Ok(Results {
        rows: vec![Row::alone(
            format!("snapshot, unchanged ({} files)", count(big.stats.files)),
            &sample,
        )],
        targets: vec![Target::below("unchanged snapshot < 50 ms", &sample, TARGET)],
        notes,
    })
}
