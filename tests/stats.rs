//! `blast stats` after real installs of the fixture wheels: one install sample per transaction (an
//! install that changed nothing included), percentiles positive and ordered, sizes equal to what
//! `blast status` reports, the dedup ratio of two environments at one snapshot, the store's disk. And
//! `blast status` naming a Python process started from the environment, by pid.

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

fn seconds(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{v} is not a number of seconds"))
}

#[test]
fn stats_reports_install_samples_sizes_dedup_and_disk() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();

    let empty = b.json(&["stats"]);
    assert_eq!(empty["install"]["count"], 0, "{empty}");
    assert!(empty["install"]["p95_seconds"].is_null(), "{empty}");
    assert_eq!(empty["install"]["level"], "ok", "{empty}");

    let mut totals = Vec::new();
    for specs in [&["blastdep"][..], &["blastbase"], &["blastdep"]] {
        totals.push(seconds(&b.install_fixtures(&env, specs)["total_seconds"]));
    }
    let uninstall = b.json(&["uninstall", "-e", e, "blastbase"]);
    totals.push(seconds(&uninstall["total_seconds"]));
    // The third install found blastdep there and changed nothing: still a transaction, still a sample.
    assert_eq!(b.log(e).len(), 4, "create, two installs, one uninstall");

    let copy = b.work.join("copy");
    b.ok(&["sync", "--from", e, "--to", copy.to_str().unwrap()]);

    let stats = b.json(&["stats"]);
    let installs = &stats["install"];
    assert_eq!(installs["count"], 4, "{stats}");
    let (p50, p95, max) = (
        seconds(&installs["p50_seconds"]),
        seconds(&installs["p95_seconds"]),
        seconds(&installs["max_seconds"]),
    );
    assert!(0.0 < p50 && p50 <= p95 && p95 <= max, "{stats}");
    totals.sort_by(f64::total_cmp);
    // The samples are the transactions' own totals; nearest rank over 4: the 2nd for p50, the 4th for
    // p95.
    assert_eq!(
        (p50, p95, max),
        (totals[1], totals[3], totals[3]),
        "{stats}"
    );
    assert_eq!(installs["level"], "ok", "{stats}");
    assert_eq!(installs["warning_over_seconds"], 30.0);
    assert_eq!(installs["alert_over_seconds"], 60.0);
    assert_eq!(installs["critical_over_seconds"], 120.0);
    assert_eq!(stats["capture"]["count"], 0, "{stats}");
    assert!(stats["capture"]["p50_seconds"].is_null(), "{stats}");

    let envs = stats["envs"].as_array().unwrap();
    assert_eq!(envs.len(), 2, "{stats}");
    let mut logical = 0;
    for dir in [&env, &copy] {
        let path = dir.to_str().unwrap();
        let status = b.json(&["status", "-e", path]);
        let row = envs
            .iter()
            .find(|r| r["path"] == path)
            .unwrap_or_else(|| panic!("{path} missing: {stats}"));
        assert_eq!(row["bytes"], status["env_bytes"], "{row} {status}");
        assert_eq!(row["files"], status["env_files"], "{row} {status}");
        assert_eq!(stats["store_bytes"], status["store_bytes"], "{status}");
        logical += row["bytes"].as_u64().unwrap();
    }
    assert_eq!(stats["logical_bytes"], logical, "{stats}");
    // On disk: the blocks of the store's files, as `du` and `blast clean` count them (found by
    // exploratory testing: file sizes were called "on disk", and a clean freed more than that).
    let blocks: u64 = ["objects", "layers", "snapshots"]
        .iter()
        .flat_map(|kind| b.store_files(kind))
        .map(|file| fs::metadata(file).unwrap().blocks() * 512)
        .sum();
    assert_eq!(stats["store_bytes"], blocks, "{stats}");
    // Two environments at one snapshot share every object: each byte is there twice, stored once.
    assert_eq!(stats["unique_bytes"], logical / 2, "{stats}");
    assert_eq!(stats["dedup_ratio"], 2.0, "{stats}");

    let disk = &stats["disk"];
    let used = disk["used_percent"].as_f64().unwrap();
    assert!(disk["total_bytes"].as_u64().unwrap() > 0, "{disk}");
    assert!((0.0..=100.0).contains(&used), "{disk}");
    assert_eq!(disk["level"], if used > 90.0 { "alert" } else { "ok" });
    assert_eq!(disk["alert_over_percent"], 90.0);

    let text = b.ok(&["stats"]);
    for needle in [
        "install duration",
        "capture latency",
        "judged on p95",
        "dedup ratio 2.00",
        "% in use (",
    ] {
        assert!(text.contains(needle), "`{needle}` missing:\n{text}");
    }
}

#[test]
fn status_lists_a_python_process_running_from_the_environment() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    // Started by the venv's `bin/python`, a symlink to the base interpreter: only argv[0] says so.
    let mut child = Command::new(env.join("bin/python"))
        .args(["-c", "import time; time.sleep(30)"])
        .current_dir(&b.work)
        .stdin(Stdio::null())
        .spawn()
        .expect("start the env's python");
    let pid = u64::from(child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let status = b.json(&["status", "-e", e]);
        let found = status["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == pid)
            .cloned();
        if found.is_some() || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = b.ok(&["status", "-e", e]);
    assert!(
        text.contains("saved by storing identical files once"),
        "{text}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let listed = listed.unwrap_or_else(|| panic!("pid {pid} not listed"));
    let command = listed["command"].as_str().unwrap();
    assert!(
        command.starts_with(&format!("{e}/bin/python")) && command.contains("time.sleep(30)"),
        "{listed}"
    );
    assert!(listed["memory_bytes"].as_u64().unwrap() > 0, "{listed}");
    assert!(listed["cpu_percent"].as_f64().unwrap() >= 0.0, "{listed}");
    assert!(text.contains("1 process running from it"), "{text}");
    assert!(text.contains(&pid.to_string()), "{text}");

    let after = b.json(&["status", "-e", e]);
    assert_eq!(after["processes"], serde_json::json!([]), "{after}");
}
