//! The session part: a `blast start` session (bash reading from a pipe) on a fresh environment. Measures
//! how long after an installer's exit its changes are a committed snapshot (pip run from outside the
//! session, alternately installing and uninstalling two fixture packages, the history polled every
//! 10 ms; and the session's own figure, from the last file event to the commit, in `blast stats`) and
//! the watcher's CPU while the environment is idle.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::files::Scratch;
use crate::report::{Results, Row, Target, duration};
use crate::runner::{Sample, json, run};
use crate::setup::{Setup, fixture_wheels};

/// The bar for a capture, from the installer's exit.
const CAPTURE_TARGET: Duration = Duration::from_secs(1);

/// The watcher's CPU while idle, in percent of one core.
const IDLE_CPU_TARGET: f64 = 1.0;

/// `/proc/PID/stat` counts CPU time in USER_HZ ticks, 100 a second on every Linux.
const TICKS_PER_SECOND: f64 = 100.0;

pub fn bench(setup: &Setup, scratch: &Scratch, runs: usize, idle: Duration) -> Result<Results> {
    let home = scratch.dir("session-home")?;
    let user_home = scratch.dir("session-user")?;
    let env = scratch.dir("session-env")?.join("venv");
    let env_arg = env.to_string_lossy().into_owned();
    run(setup
        .blast(&home)
        .args(["create", "--path", &env_arg, "--python"])
        .arg(&setup.python))?;
    eprintln!(
        "session: blast start on {env_arg}, pip from outside, {runs} installs and uninstalls"
    );
    let mut session = setup
        .blast(&home)
        .args(["start", &env_arg, "--shell", "bash"])
        .env("HOME", &user_home)
        .env_remove("BLAST_SESSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::new(format!("starting `blast start`: {e}")))?;
    let measured = measure(setup, &home, &env_arg, runs, idle);
    let ended = end(&mut session);
    let (latency, watcher_cpu) = measured?;
    ended?;
    let stats = json(&run(setup.blast(&home).args(["--json", "stats"]))?)?;
    let inside = |key: &str| {
        stats["capture"][key]
            .as_f64()
            .map(|s| duration(Duration::from_secs_f64(s)))
            .unwrap_or_else(|| "none".into())
    };
    let p95 = percentile(&latency, 95);
    Ok(Results {
        rows: vec![Row::alone(
            "session: installer exit → snapshot in the history",
            &latency,
        )],
        targets: vec![
            Target {
                goal: "capture < 1 s after the installer's exit (p95)",
                measured: format!(
                    "p50 {}, p95 {}",
                    duration(percentile(&latency, 50)),
                    duration(p95)
                ),
                pass: p95 < CAPTURE_TARGET,
            },
            Target {
                goal: "watcher CPU while idle < 1% of a core",
                measured: format!("{watcher_cpu:.3}% over {}", duration(idle)),
                pass: watcher_cpu < IDLE_CPU_TARGET,
            },
        ],
        notes: vec![format!(
            "session captures as the session timed them (last file event → commit, `blast stats`): \
             p50 {}, p95 {}; they include the 250 ms quiet window",
            inside("p50_seconds"),
            inside("p95_seconds")
        )],
    })
}

/// The capture latencies, then the watcher's idle CPU in percent of a core.
fn measure(
    setup: &Setup,
    home: &Path,
    env: &str,
    runs: usize,
    idle: Duration,
) -> Result<(Sample, f64)> {
    let pid = watcher_pid(setup, home, env)?;
    let wheels = fixture_wheels()?;
    let mut latency = Sample {
        label: "blast session".into(),
        times: Vec::with_capacity(runs),
    };
    for k in 0..runs {
        let before = history_len(setup, home, env)?;
        let mut pip = setup.pip();
        pip.args(["--python", env, "-q", "--disable-pip-version-check"]);
        if k % 2 == 0 {
            pip.args(["install", "--no-index", "--find-links"])
                .arg(&wheels)
                .arg("blastdemo==1.0");
        } else {
            pip.args(["uninstall", "-y", "blastdemo", "blastdep"]);
        }
        run(&mut pip)?;
        let exited = Instant::now();
        while history_len(setup, home, env)? == before {
            if exited.elapsed() > Duration::from_secs(30) {
                return Err(Error::new("the session captured nothing for 30 s"));
            }
            sleep(Duration::from_millis(10));
        }
        latency.times.push(exited.elapsed());
        // Lets late events settle so that runs do not overlap.
        sleep(Duration::from_millis(500));
    }
    eprintln!("  watcher idle for {}: measuring its CPU", duration(idle));
    let start = cpu_ticks(pid)?;
    let started = Instant::now();
    sleep(idle);
    let used = (cpu_ticks(pid)? - start) as f64 / TICKS_PER_SECOND;
    Ok((latency, used / started.elapsed().as_secs_f64() * 100.0))
}

fn watcher_pid(setup: &Setup, home: &Path, env: &str) -> Result<u32> {
    let started = Instant::now();
    loop {
        let status = json(&run(setup
            .blast(home)
            .args(["--json", "status", "-e", env]))?)?;
        if let Some(pid) = status["session"]["record"]["pid"].as_u64() {
            return u32::try_from(pid).map_err(|_| Error::new("a pid out of range"));
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(Error::new("the session did not start within 30 s"));
        }
        sleep(Duration::from_millis(20));
    }
}

fn history_len(setup: &Setup, home: &Path, env: &str) -> Result<usize> {
    let log = json(&run(setup.blast(home).args(["--json", "log", "-e", env]))?)?;
    log.as_array()
        .map(Vec::len)
        .ok_or_else(|| Error::new("`blast log --json` printed no list"))
}

/// User plus system time of `pid`, in ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| Error::new(format!("reading the watcher's /proc/{pid}/stat: {e}")))?;
    // After the command name in parentheses: state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (tick(11), tick(12)) {
        (Some(user), Some(system)) => Ok(user + system),
        _ => Err(Error::new(format!("unreadable /proc/{pid}/stat: {stat}"))),
    }
}

/// Ends the session's shell (the end of its input) and waits for blast.
fn end(session: &mut Child) -> Result<()> {
    if let Some(mut stdin) = session.stdin.take() {
        let _ = stdin.write_all(b"exit\n");
    }
    let status = session
        .wait()
        .map_err(|e| Error::new(format!("waiting for `blast start`: {e}")))?;
    match status.success() {
        true => Ok(()),
        false => Err(Error::new(format!("`blast start` ended with {status}"))),
    }
}

/// The nearest-rank percentile of the sample's times.
fn percentile(sample: &Sample, p: usize) -> Duration {
    let mut times = sample.times.clone();
    times.sort();
    let rank = (p * times.len()).div_ceil(100).max(1);
    times.get(rank - 1).copied().unwrap_or_default()
}
