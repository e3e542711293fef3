//! Running and timing the commands under test. Every command runs with its output captured; a failure
//! stops the benchmark with the command line and what it printed. [`measure`] interleaves the cases run
//! by run, in a rotating order, so that a slow phase of the machine hits every tool alike. Before each
//! timed command the dirty page cache is written out (`sync`), so no command pays for the writeback of
//! what an earlier one wrote (blast fsyncs its index; the other tools do not).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Context, Error, Result};
use crate::files::flush;

/// The command line as a shell would show it, with the environment variables it sets.
pub fn describe(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(key, value)| {
            value.map(|v| format!("{}={}", key.to_string_lossy(), v.to_string_lossy()))
        })
        .collect();
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` to completion with its output captured; a non-zero exit is an error.
pub fn run(cmd: &mut Command) -> Result<Output> {
    time(cmd).map(|(output, _)| output)
}

/// Runs `cmd` to completion and says how long it took, from spawn to exit.
pub fn time(cmd: &mut Command) -> Result<(Output, Duration)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let output = cmd.output();
    let elapsed = start.elapsed();
    let output = output.context(|| format!("could not start `{}`", describe(cmd)))?;
    if !output.status.success() {
        return Err(Error::new(format!(
            "`{}` failed ({}):\n{}",
            describe(cmd),
            output.status,
            last_lines(&output, 25)
        )));
    }
    Ok((output, elapsed))
}

/// The end of what a command printed (its stderr, else its stdout), for error messages.
fn last_lines(output: &Output, n: usize) -> String {
    let text = if output.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        &output.stderr
    } else {
        &output.stdout
    };
    let text = String::from_utf8_lossy(text);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The JSON a command printed on stdout (blast's `--json`).
pub fn json(output: &Output) -> Result<serde_json::Value> {
    serde_json::from_slice(&output.stdout).context(|| {
        format!(
            "unexpected JSON output {:?}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

type Step<'a> = Box<dyn Fn(usize) -> Result<()> + 'a>;
type Inspect<'a> = Box<dyn Fn(usize, &Output) -> Result<()> + 'a>;

/// One thing to time: the command of run `k`, with untimed work before and after it.
pub struct Case<'a> {
    label: String,
    command: Box<dyn Fn(usize) -> Command + 'a>,
    prepare: Step<'a>,
    inspect: Inspect<'a>,
    cleanup: Step<'a>,
}

impl<'a> Case<'a> {
    pub fn new(label: impl Into<String>, command: impl Fn(usize) -> Command + 'a) -> Case<'a> {
        Case {
            label: label.into(),
            command: Box::new(command),
            prepare: Box::new(|_| Ok(())),
            inspect: Box::new(|_, _| Ok(())),
            cleanup: Box::new(|_| Ok(())),
        }
    }

    /// Untimed work before each run (making the directory the command works in, say).
    pub fn prepare(mut self, step: impl Fn(usize) -> Result<()> + 'a) -> Case<'a> {
        self.prepare = Box::new(step);
        self
    }

    /// Untimed look at what each run printed, warm-ups included (checking a report, keeping its figures).
    pub fn inspect(mut self, step: impl Fn(usize, &Output) -> Result<()> + 'a) -> Case<'a> {
        self.inspect = Box::new(step);
        self
    }

    /// Untimed work after each run (removing what it made).
    pub fn cleanup(mut self, step: impl Fn(usize) -> Result<()> + 'a) -> Case<'a> {
        self.cleanup = Box::new(step);
        self
    }
}

/// The timings of one case.
pub struct Sample {
    pub label: String,
    pub times: Vec<Duration>,
}

impl Sample {
    pub fn once(label: impl Into<String>, time: Duration) -> Sample {
        Sample {
            label: label.into(),
            times: vec![time],
        }
    }

    pub fn median(&self) -> Duration {
        let mut times = self.times.clone();
        times.sort();
        let n = times.len();
        match n {
            0 => Duration::ZERO,
            _ if n % 2 == 1 => times[n / 2],
            _ => (times[n / 2 - 1] + times[n / 2]) / 2,
        }
    }

    fn min(&self) -> Duration {
        self.times.iter().copied().min().unwrap_or_default()
    }

    fn max(&self) -> Duration {
        self.times.iter().copied().max().unwrap_or_default()
    }
}

/// The order of the cases in round `k`: a permutation of `0..n` shuffled by a generator seeded with `k`,
/// so every run of the bench uses the same orders.
fn round_order(k: usize, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    // splitmix64: small, fixed, good enough to spread the orders.
    let mut state = (k as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Runs every case `warmups + runs` times, round by round, and keeps the timings after the warm-ups:
/// one sample per case, in the cases' order. Run numbers go on across warm-ups, so each run can use
/// fresh names.
pub fn measure<const N: usize>(
    cases: &[Case<'_>; N],
    warmups: usize,
    runs: usize,
) -> Result<[Sample; N]> {
    let mut samples = cases.each_ref().map(|case| Sample {
        label: case.label.clone(),
        times: Vec::with_capacity(runs),
    });
    eprint!(
        "  {} case(s), {warmups} warm-up(s) + {runs} run(s) each: ",
        cases.len()
    );
    for k in 0..warmups + runs {
        // Each round runs the cases in another order, so that no case keeps running right after the same
        // other one: a short command right after a long one that filled the caches with its own files
        // runs slower, and a fixed rotation put blast's first case after virtualenv in most rounds.
        for at in round_order(k, cases.len()) {
            let (case, sample) = (&cases[at], &mut samples[at]);
            (case.prepare)(k).context(|| format!("preparing run {k} of `{}`", case.label))?;
            flush()?;
            let (output, elapsed) = time(&mut (case.command)(k))?;
            (case.inspect)(k, &output)
                .context(|| format!("checking run {k} of `{}`", case.label))?;
            (case.cleanup)(k)
                .context(|| format!("cleaning up after run {k} of `{}`", case.label))?;
            if k >= warmups {
                sample.times.push(elapsed);
            }
        }
        eprint!("{}", if k < warmups { 'w' } else { '.' });
    }
    eprintln!(" done");
    for sample in &samples {
        eprintln!(
            "    {:<44} median {:>9}  min {:>9}  max {:>9}",
            sample.label,
            crate::report::duration(sample.median()),
            crate::report::duration(sample.min()),
            crate::report::duration(sample.max())
        );
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::round_order;

    #[test]
    fn every_round_runs_every_case_once_and_predecessors_vary() {
        let mut followed = std::collections::BTreeSet::new();
        for k in 0..16 {
            let order = round_order(k, 5);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3, 4]);
            if let Some(at) = order
                .iter()
                .position(|&case| case == 0)
                .filter(|&at| at > 0)
            {
                followed.insert(order[at - 1]);
            }
        }
        assert!(followed.len() >= 3, "case 0 came after {followed:?} only");
    }
}
