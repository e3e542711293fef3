//! Crash injection with random kills: random operations (install, uninstall, snapshot, rollback, sync,
//! clean, export, import, restore, create) on a few environments of one store, each SIGKILLed after a
//! random delay (not only at named points). After every operation, killed or not, the next blast
//! command runs and the invariants are checked:
//! - every environment's directory equals its HEAD (`blast status` sees no uncaptured change, `blast
//!   verify` no drifted file), and HEAD is the one before the operation or the one it was making;
//! - the store is whole: `blast verify` finds no corrupt and no missing object;
//! - no staging area is left once a command has run, and no mount of the store's is left anywhere;
//! - no command failed on a lock.
//!
//! Short mode (CI): 200 kills. Long mode, by hand:
//! `BLAST_CHAOS_KILLS=2000 cargo test --release -p blast --test chaos -- --nocapture`.
//! `BLAST_CHAOS_SEED` replays a run; the figures are printed at the end.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// A small deterministic generator (xorshift64*), so that a seed replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Default, Debug)]
struct Figures {
    operations: u64,
    kills: u64,
    completed: u64,
    refused: u64,
    violations: Vec<String>,
    lost_objects: u64,
    lock_errors: u64,
}

struct Chaos {
    b: Blast,
    envs: Vec<PathBuf>,
    image: PathBuf,
    restored: PathBuf,
    created: PathBuf,
    figures: Figures,
}

impl Chaos {
    fn run_blast(&mut self, args: &[String]) -> (bool, String) {
        let out = self
            .b
            .command(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .output()
            .expect("run blast");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        self.count_lock_errors(&stderr);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn count_lock_errors(&mut self, stderr: &str) {
        if stderr.lines().any(|l| {
            l.starts_with("error:")
                && (l.contains("lock") || l.contains("Resource temporarily unavailable"))
        }) {
            self.figures.lock_errors += 1;
        }
    }

    /// HEAD of each environment the store lists, by path.
    fn heads(&mut self) -> BTreeMap<String, Value> {
        let (ok, out) = self.run_blast(&strings(&["list", "--json"]));
        assert!(ok, "blast list failed");
        serde_json::from_str::<Value>(&out)
            .expect("list json")
            .as_array()
            .expect("array")
            .iter()
            .map(|e| (e["path"].as_str().unwrap().to_owned(), e["head"].clone()))
            .collect()
    }

    /// Runs one operation, killing it after `delay`; returns whether it was killed and its stderr.
    fn attempt(&mut self, args: &[String], delay: Duration) -> (bool, bool, String) {
        self.figures.operations += 1;
        let mut child = self
            .b
            .command(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn blast");
        let deadline = Instant::now() + delay;
        let mut killed = false;
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() >= deadline {
                child.kill().expect("kill");
                killed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        self.count_lock_errors(&stderr);
        let succeeded = !killed && out.status.success();
        (killed, succeeded, stderr)
    }

    fn violation(&mut self, what: String) {
        eprintln!("VIOLATION: {what}");
        self.figures.violations.push(what);
    }

    /// The invariants, checked after every operation.
    fn check(&mut self, op: &str, before: &BTreeMap<String, Value>) {
        let heads = self.heads();
        for path in heads.keys() {
            let (ok, out) = self.run_blast(&strings(&["status", "-e", path, "--json"]));
            if !ok {
                self.violation(format!("after {op}: `blast status -e {path}` failed"));
                continue;
            }
            let status: Value = serde_json::from_str(&out).expect("status json");
            let uncaptured = status["uncaptured"].as_array().map_or(0, Vec::len);
            if uncaptured > 0 {
                // A snapshot killed before it recorded anything leaves the hand-made change; capture it.
                let (ok, _) = self.run_blast(&strings(&["snapshot", "-e", path]));
                if !ok || op != "snapshot" {
                    self.violation(format!(
                        "after {op}: `{path}` has {uncaptured} uncaptured paths: {status}"
                    ));
                }
            }
            // HEAD moved at most one step, from where it was, to what the operation made.
            let now = &status["head"];
            let was = before.get(path).cloned().unwrap_or(Value::Null);
            if now != &was && !was.is_null() {
                let (_, out) = self.run_blast(&strings(&["log", "-e", path, "--json"]));
                let log: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
                if &log[0]["snapshot"] != now || log[0]["from"] != was {
                    self.violation(format!(
                        "after {op}: HEAD of `{path}` went from {was} to {now}, which its newest history entry does not explain: {}",
                        log[0]
                    ));
                }
            }
        }
        let (ok, out) = self.run_blast(&strings(&["verify", "--json"]));
        let report: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        let missing = report["missing"].as_array().map_or(0, Vec::len) as u64;
        let corrupt = report["corrupt"].as_array().map_or(0, Vec::len);
        let drifted: usize = report["envs"]
            .as_array()
            .map(|envs| {
                envs.iter()
                    .map(|e| e["drifted"].as_array().map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or(0);
        self.figures.lost_objects += missing;
        if !ok || missing > 0 || corrupt > 0 || drifted > 0 {
            self.violation(format!("after {op}: `blast verify` is not clean: {report}"));
        }
        let leftovers = self.b.staging_leftovers();
        if !leftovers.is_empty() {
            self.violation(format!("after {op}: staging left behind: {leftovers:?}"));
        }
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if mounts.contains(self.b.home.to_str().unwrap()) {
            self.violation(format!("after {op}: a mount of the store is left"));
        }
    }

    /// One random operation with its kill delay (roughly up to how long it takes, so most are killed
    /// midway); `None` when the chosen operation does not apply now.
    fn random_operation(
        &mut self,
        rng: &mut Rng,
        n: u64,
    ) -> Option<(&'static str, Vec<String>, Duration)> {
        let env = rng.pick(&self.envs).clone();
        let e = env.to_str().unwrap().to_owned();
        let wheels = wheels().to_str().unwrap().to_owned();
        let ms = |rng: &mut Rng, max: u64| Duration::from_millis(rng.below(max) + 1);
        Some(match rng.below(10) {
            0 | 1 => {
                let spec = rng
                    .pick(&[
                        "blastdemo==1.0.0",
                        "blastdemo==2.0.0",
                        "blastdep",
                        "blastbase==1.0.0",
                        "blastbase==2.0.0",
                    ])
                    .to_string();
                let args = strings(&["install", "-e", &e, "--no-index", "-f", &wheels, &spec]);
                ("install", args, ms(rng, 1500))
            }
            2 => (
                "uninstall",
                strings(&["uninstall", "-e", &e, "blastdemo", "blastbase"]),
                ms(rng, 1200),
            ),
            3 => {
                let file = env.join(format!("lib/python3.11/site-packages/chaos_{n}.py"));
                fs::write(&file, format!("N = {n}\n")).ok()?;
                ("snapshot", strings(&["snapshot", "-e", &e]), ms(rng, 120))
            }
            4 => ("rollback", strings(&["rollback", "-e", &e]), ms(rng, 120)),
            5 => {
                let other = rng.pick(&self.envs).to_str().unwrap().to_owned();
                (
                    "sync",
                    strings(&["sync", "--from", &e, "--to", &other]),
                    ms(rng, 150),
                )
            }
            6 => ("clean", strings(&["clean", "--keep", "4"]), ms(rng, 150)),
            7 => {
                let image = self.image.to_str().unwrap().to_owned();
                (
                    "export",
                    strings(&["export", "-e", &e, "-o", &image]),
                    ms(rng, 150),
                )
            }
            8 => {
                if !self.image.exists() {
                    return None;
                }
                let image = self.image.to_str().unwrap().to_owned();
                if rng.below(2) == 0 {
                    ("import", strings(&["import", &image]), ms(rng, 150))
                } else {
                    let restored = self.restored.to_str().unwrap().to_owned();
                    self.run_blast(&strings(&["remove", &restored]));
                    let _ = fs::remove_dir_all(&self.restored);
                    (
                        "restore",
                        strings(&["restore", &image, "--path", &restored, "--python", python()]),
                        ms(rng, 300),
                    )
                }
            }
            _ => {
                let created = self.created.to_str().unwrap().to_owned();
                self.run_blast(&strings(&["remove", &created]));
                let _ = fs::remove_dir_all(&self.created);
                (
                    "create",
                    strings(&["create", "--path", &created, "--python", python()]),
                    ms(rng, 150),
                )
            }
        })
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn random_kills_never_break_an_environment_or_the_store() {
    let target_kills = env_number("BLAST_CHAOS_KILLS", 200);
    let seed = env_number(
        "BLAST_CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1,
    );
    eprintln!(
        "chaos: seed {seed} (BLAST_CHAOS_SEED={seed} replays this run), {target_kills} kills"
    );
    let mut rng = Rng(seed);
    let b = Blast::new();
    let envs: Vec<PathBuf> = ["one", "two"]
        .iter()
        .map(|n| b.create_path_env(n))
        .collect();
    let mut chaos = Chaos {
        image: b.work.join("chaos.blast"),
        restored: b.work.join("restored"),
        created: b.work.join("created"),
        envs,
        b,
        figures: Figures::default(),
    };
    let started = Instant::now();
    let mut n = 0;
    while chaos.figures.kills < target_kills {
        n += 1;
        let Some((op, args, delay)) = chaos.random_operation(&mut rng, n) else {
            continue;
        };
        let before = chaos.heads();
        let (killed, succeeded, stderr) = chaos.attempt(&args, delay);
        if killed {
            chaos.figures.kills += 1;
        } else if succeeded {
            chaos.figures.completed += 1;
        } else {
            chaos.figures.refused += 1;
            if !stderr.contains("error: ") || stderr.contains("panicked") {
                chaos.violation(format!("{op} failed without a clear message: {stderr}"));
            }
        }
        chaos.check(op, &before);
        assert!(
            chaos.figures.violations.len() < 5,
            "stopping after violations (seed {seed}): {:#?}",
            chaos.figures
        );
    }
    let f = &chaos.figures;
    println!(
        "chaos figures (seed {seed}, {:.0} s): operations attempted {}, kills injected {}, completed {}, \
         refused {}, invariant violations {}, lost objects {}, lock errors {}",
        started.elapsed().as_secs_f64(),
        f.operations,
        f.kills,
        f.completed,
        f.refused,
        f.violations.len(),
        f.lost_objects,
        f.lock_errors
    );
    assert!(f.violations.is_empty(), "seed {seed}: {:#?}", f.violations);
    assert_eq!(f.lost_objects, 0);
    assert_eq!(f.lock_errors, 0);
}
