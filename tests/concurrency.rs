//! Several blast processes on one store (design mechanisms 7 and 10): every operation holds the store
//! lock shared and `blast clean`'s sweep holds it exclusive, so a clean racing snapshots never deletes
//! what they record; two processes working on the same environment, or on two environments, all
//! succeed (one may wait, and say so) and none loses the other's work; and with this test process
//! holding the store lock, clean and an ordinary command each wait, say so, and go on once it is
//! released; two stores making an environment at one path take turns on it. The interleavings of the
//! racing tests vary from run to run; what they assert holds for every one of them.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use support::*;

/// Snapshot ids of the history, oldest first, with each entry's `from`.
fn chain(log: &[Value]) -> Vec<(Value, Value)> {
    log.iter()
        .rev()
        .map(|e| (e["from"].clone(), e["snapshot"].clone()))
        .collect()
}

/// Every entry moved from where the previous one left HEAD: no move was lost or recorded twice.
fn assert_history_is_a_chain(log: &[Value]) {
    let links = chain(log);
    for pair in links.windows(2) {
        assert_eq!(
            pair[1].0, pair[0].1,
            "history entries do not chain: {log:?}"
        );
    }
}

fn package_names(report: &Value) -> Vec<String> {
    report["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

/// One process loops `blast clean --keep 1` while another keeps installing and removing blastdep with
/// pip and snapshotting (and rolling back to a tag) on the same store. Whatever the interleaving, the
/// snapshots recorded during the race keep their objects: the environments verify clean, every
/// snapshot still in the store (all of the history's among them) materializes exactly, and an untouched
/// environment's HEAD survives every clean.
#[test]
fn clean_racing_snapshots_never_deletes_what_they_need() {
    const ROUNDS: usize = 6;
    let b = Blast::new();
    let env = b.create_path_env("racer");
    let e = env.to_str().unwrap();
    b.ok(&["snapshot", "-e", e, "--tag", "base"]);
    let base_tree = exec_bits_only(&read_tree(&env));
    let bystander = b.create_path_env("bystander");
    pip_install(&bystander, &["blastdemo==1.0.0"]);
    b.ok(&["snapshot", "-e", bystander.to_str().unwrap()]);
    b.ok(&["rollback", "-e", bystander.to_str().unwrap()]);
    b.ok(&["rollback", "-e", bystander.to_str().unwrap()]);
    let bystander_tree = exec_bits_only(&read_tree(&bystander));

    let done = AtomicBool::new(false);
    let mut recorded: Vec<String> = Vec::new();
    let mut dep_tree = BTreeMap::new();
    let (cleans, swept) = thread::scope(|s| {
        let cleaner = s.spawn(|| {
            let (mut runs, mut swept) = (0u64, 0u64);
            while !done.load(Ordering::SeqCst) || runs < 3 {
                let report = b.json(&["clean", "--keep", "1"]);
                swept += report["snapshots_removed"].as_u64().unwrap();
                runs += 1;
                thread::sleep(Duration::from_millis(20));
            }
            (runs, swept)
        });
        let race = || {
            for round in 0..ROUNDS {
                pip_install(&env, &["blastdep"]);
                let snap = b.json(&["snapshot", "-e", e, "-m", &format!("dep {round}")]);
                assert_eq!(package_names(&snap), ["blastdep"], "{snap}");
                recorded.push(snap["snapshot"].as_str().unwrap().to_owned());
                if round == 0 {
                    dep_tree = exec_bits_only(&read_tree(&env));
                }
                if round % 2 == 0 {
                    pip_uninstall(&env, &["blastdep"]);
                    let snap = b.json(&["snapshot", "-e", e, "-m", &format!("no dep {round}")]);
                    assert!(snap["removed"].as_u64().unwrap() > 0, "{snap}");
                    recorded.push(snap["snapshot"].as_str().unwrap().to_owned());
                } else {
                    b.ok(&["rollback", "-e", e, "base"]);
                }
                assert_same_tree(&base_tree, &exec_bits_only(&read_tree(&env)));
            }
        };
        // Stop the cleaner even when the race fails, so the failure is reported instead of a hang.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(race));
        done.store(true, Ordering::SeqCst);
        let counts = cleaner.join().expect("a clean failed");
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
        counts
    });
    eprintln!("{cleans} cleans swept {swept} snapshots during the race");

    b.assert_verify_clean(&[&env, &bystander]);
    assert_same_tree(&bystander_tree, &exec_bits_only(&read_tree(&bystander)));
    let (ok, out) = env_python(&bystander, "import blastdemo; print(blastdemo.VERSION)");
    assert!(ok && out.trim() == "1.0.0", "{out}");

    // Every snapshot the history names is in the store, and every snapshot the race recorded that the
    // store still holds materializes exactly.
    let stored: BTreeSet<String> = b
        .store_files("snapshots")
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    let log = b.log(e);
    assert_history_is_a_chain(&log);
    let mut targets: BTreeSet<String> = BTreeSet::new();
    for entry in &log {
        let id = entry["snapshot"].as_str().unwrap().to_owned();
        assert!(
            stored.contains(&id),
            "history names swept snapshot {id}: {log:?}"
        );
        targets.insert(id);
    }
    targets.extend(recorded.iter().filter(|id| stored.contains(*id)).cloned());
    for id in &targets {
        let moved = b.json(&["rollback", "-e", e, id]);
        assert_eq!(moved["to"], id.as_str());
        let status = b.json(&["status", "-e", e]);
        let expected = if package_names(&status).is_empty() {
            &base_tree
        } else {
            &dep_tree
        };
        assert_same_tree(expected, &exec_bits_only(&read_tree(&env)));
        b.assert_verify_clean(&[&env]);
    }
    b.ok(&["rollback", "-e", e, "base"]);
    assert_same_tree(&base_tree, &exec_bits_only(&read_tree(&env)));
}

/// Two processes move the same environment back and forth between two tags and snapshot it, at the
/// same time. Each command succeeds (a process may wait for the other), the history records every
/// real move exactly once as an unbroken chain, and the directory ends exactly at HEAD.
#[test]
fn two_processes_moving_the_same_env_both_succeed() {
    const ROUNDS: usize = 8;
    let b = Blast::new();
    let env = b.create_path_env("shared");
    let e = env.to_str().unwrap();
    pip_install(&env, &["blastdemo==1.0.0"]);
    let one = b.json(&["snapshot", "-e", e, "--tag", "one"])["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    let one_tree = exec_bits_only(&read_tree(&env));
    pip_install(&env, &["blastdemo==2.0.0"]);
    let two = b.json(&["snapshot", "-e", e, "--tag", "two"])["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    let two_tree = exec_bits_only(&read_tree(&env));
    let start = b.log(e).len();

    let barrier = Barrier::new(2);
    let worker = |tag: &str| {
        barrier.wait();
        let mut moves = 0;
        for _ in 0..ROUNDS {
            let (stdout, stderr) = b.ok_with_stderr(&["rollback", "-e", e, tag, "--json"]);
            assert!(!stderr.contains("error"), "{stderr}");
            let report: Value = serde_json::from_str(&stdout).unwrap();
            if report["unchanged"] == false {
                moves += 1;
            }
            // Only blast writes the directory, so there is never anything to capture.
            let (stdout, stderr) = b.ok_with_stderr(&["snapshot", "-e", e, "--json"]);
            assert!(!stderr.contains("error"), "{stderr}");
            let snap: Value = serde_json::from_str(&stdout).unwrap();
            assert!(snap["snapshot"].is_null(), "{snap}");
        }
        moves
    };
    let (moves_one, moves_two) = thread::scope(|s| {
        let a = s.spawn(|| worker("one"));
        let c = s.spawn(|| worker("two"));
        (
            a.join().expect("worker on `one`"),
            c.join().expect("worker on `two`"),
        )
    });
    assert!(
        moves_one >= 1,
        "the first rollback to `one` moves HEAD from `two`"
    );

    let log = b.log(e);
    assert_eq!(
        log.len(),
        start + moves_one + moves_two,
        "every real move is recorded once: {log:?}"
    );
    assert_history_is_a_chain(&log);
    for entry in &log[..moves_one + moves_two] {
        assert_eq!(entry["operation"], "rollback");
        assert!(
            entry["snapshot"] == one.as_str() || entry["snapshot"] == two.as_str(),
            "{entry}"
        );
    }
    let (expected, version) = if log[0]["snapshot"] == one.as_str() {
        (&one_tree, "1.0.0")
    } else {
        (&two_tree, "2.0.0")
    };
    assert_same_tree(expected, &exec_bits_only(&read_tree(&env)));
    let (ok, out) = env_python(&env, "import blastdemo; print(blastdemo.VERSION)");
    assert!(ok && out.trim() == version, "{out}");
    b.assert_verify_clean(&[&env]);
}

/// Two environments of one store are created, installed into, snapshotted, rolled back and verified
/// at the same time. Both succeed, each history is exactly its own, and the venvs blast wrote for both,
/// being the same content, are the same snapshot.
#[test]
fn operations_on_two_envs_in_parallel_both_succeed() {
    let b = Blast::new();
    b.ok(&["list"]); // The store exists before the race (see the report on first-use races).
    let barrier = Barrier::new(2);
    let lifecycle = |name: &str| -> Vec<String> {
        barrier.wait();
        let env = b.create_path_env(name);
        let e = env.to_str().unwrap();
        let fresh = read_tree(&env);
        pip_install(&env, &["blastdemo==1.0.0"]);
        let one = b.json(&["snapshot", "-e", e, "--tag", "one"])["snapshot"]
            .as_str()
            .unwrap()
            .to_owned();
        let one_tree = exec_bits_only(&read_tree(&env));
        pip_install(&env, &["blastdemo==2.0.0"]);
        let two = b.json(&["snapshot", "-e", e, "--tag", "two"])["snapshot"]
            .as_str()
            .unwrap()
            .to_owned();
        b.ok(&["rollback", "-e", e, "one"]);
        assert_same_tree(&one_tree, &exec_bits_only(&read_tree(&env)));
        let (ok, out) = env_python(&env, "import blastdemo; print(blastdemo.VERSION)");
        assert!(ok && out.trim() == "1.0.0", "{name}: {out}");
        let created = b.log(e).last().unwrap()["snapshot"]
            .as_str()
            .unwrap()
            .to_owned();
        b.ok(&["rollback", "-e", e, &created]);
        assert_same_tree(&fresh, &read_tree(&env));
        let verify = b.json(&["verify", "-e", e]);
        assert!(verify["missing"].as_array().unwrap().is_empty(), "{verify}");
        assert!(
            verify["envs"][0]["drifted"].as_array().unwrap().is_empty(),
            "{verify}"
        );

        let log = b.log(e);
        let ops: Vec<&str> = log
            .iter()
            .rev()
            .map(|l| l["operation"].as_str().unwrap())
            .collect();
        assert_eq!(
            ops,
            ["create", "snapshot", "snapshot", "rollback", "rollback"],
            "{name}: {log:?}"
        );
        assert_history_is_a_chain(&log);
        vec![created, one, two]
    };
    let (a, c) = thread::scope(|s| {
        let a = s.spawn(|| lifecycle("alpha"));
        let c = s.spawn(|| lifecycle("gamma"));
        (a.join().expect("alpha"), c.join().expect("gamma"))
    });
    // Same interpreter, same venv: one snapshot. (The installs differ: pip's RECORD holds the hash of
    // the console script, whose shebang names the environment's path.)
    assert_eq!(
        a[0], c[0],
        "both environments were created as the same snapshot"
    );
    assert_eq!(
        BTreeSet::from_iter(a.iter().chain(&c)).len(),
        5,
        "{a:?} {c:?}"
    );
    let alpha = b.work.join("alpha");
    let gamma = b.work.join("gamma");
    b.assert_verify_clean(&[Path::new(&alpha), Path::new(&gamma)]);
    assert_eq!(b.json(&["list"]).as_array().unwrap().len(), 2);
}

/// Reads a child's stderr until a line contains `needle`; returns everything read. Stops at end of
/// stream (the child exited) so a child that never waits fails the test instead of hanging it.
fn read_stderr_until(stderr: &mut impl std::io::BufRead, needle: &str) -> String {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 || line.contains(needle) {
            seen.push_str(&line);
            return seen;
        }
        seen.push_str(&line);
    }
}

/// The lock protocol itself, with this test process playing the other side: while an operation holds
/// the store lock shared, `blast clean` waits (saying so) and sweeps nothing; while a sweep holds it
/// exclusive, an ordinary command waits (saying so). Each finishes once the lock is released.
#[test]
fn clean_and_operations_wait_for_each_other_and_say_so() {
    use std::io::BufReader;
    use std::process::Stdio;

    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    pip_install(&env, &["blastdep"]);
    b.ok(&["snapshot", "-e", e]);
    b.ok(&["rollback", "-e", e]);
    let store_files = || -> Vec<_> {
        ["objects", "layers", "snapshots"]
            .iter()
            .flat_map(|k| b.store_files(k))
            .collect()
    };
    let before = store_files();
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(b.home.join("store.lock"))
        .unwrap();

    // An operation in flight: clean waits for it.
    lock.lock_shared().unwrap();
    let mut clean = b
        .command(&["clean", "--keep", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(clean.stderr.take().unwrap());
    let said = read_stderr_until(&mut stderr, "waiting for another blast process");
    assert!(
        said.contains("waiting for another blast process to release the store"),
        "clean did not wait: {said}"
    );
    // It names who holds the store (found by exploratory testing: a clean behind a long `blast run`
    // looked hung).
    assert!(
        said.contains(&format!("held by pid {} (`", std::process::id())),
        "{said}"
    );
    assert_eq!(
        store_files(),
        before,
        "clean swept while an operation held the store"
    );
    lock.unlock().unwrap();
    let out = clean.wait_with_output().unwrap();
    assert!(out.status.success(), "{said}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["snapshots_removed"], 1, "{report}");
    assert_ne!(store_files(), before);

    // A sweep in progress: an ordinary command waits for it.
    lock.lock().unwrap();
    let mut status = b
        .command(&["status", "-e", e, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(status.stderr.take().unwrap());
    let said = read_stderr_until(&mut stderr, "waiting for another blast process");
    assert!(
        said.contains("`blast clean` is sweeping"),
        "status did not wait: {said}"
    );
    lock.unlock().unwrap();
    let out = status.wait_with_output().unwrap();
    assert!(out.status.success(), "{said}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["uncaptured"].as_array().unwrap().is_empty(),
        "{report}"
    );
    b.assert_verify_clean(&[&env]);
}

/// Waits until the process `pid` is stopped (`BLAST_TEST_STOP_AT`).
fn wait_until_stopped(pid: u32) {
    for _ in 0..6000 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses.
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('T'))
        {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("process {pid} did not stop");
}

/// A file another program writes while a rollback writes it is named as that, not as damage in the
/// store (found by exploratory testing: "object … is damaged in the store", while `verify` found
/// every object whole). The rollback is stopped halfway through its writes, every file is written
/// over, and it goes on.
#[test]
fn a_file_written_during_a_rollback_is_not_called_store_damage() {
    use std::process::Stdio;

    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    let names: Vec<String> = (0..60).map(|i| format!("f{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        std::fs::write(env.join(name), "a".repeat(20 + i)).unwrap();
    }
    b.ok(&["snapshot", "-e", e]);
    for (i, name) in names.iter().enumerate() {
        std::fs::write(env.join(name), "b".repeat(100 + i)).unwrap();
    }
    b.ok(&["snapshot", "-e", e]);
    let rollback = b
        .command(&["rollback", "-e", e, "@~1"])
        .env("BLAST_TEST_STOP_AT", "apply-half")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_stopped(rollback.id());
    for name in &names {
        std::fs::write(env.join(name), "written meanwhile").unwrap();
    }
    // Going back to HEAD after the failure is an apply too, which stops at the same point: each stop
    // is continued until the command ends.
    let mut rollback = rollback;
    let status = loop {
        // SAFETY: signals a child of this process that has not been waited for.
        unsafe { libc::kill(rollback.id() as i32, libc::SIGCONT) };
        if let Some(status) = rollback.try_wait().unwrap() {
            break status;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut rollback.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("changed while blast wrote it") && !stderr.contains("damaged in the store"),
        "{stderr}"
    );
    let verify = b.command(&["verify", "--json"]).output().unwrap();
    let report: Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(report["corrupt"], serde_json::json!([]), "{report}");
}

/// Two stores share no lock, but a new environment's directory is claimed: a create at a path another
/// store's create is making waits for it (saying so), then finds the first's files there and refuses,
/// and the first's environment is whole. A claim whose holder was killed is free, and a create that
/// fails leaves none of the directories it made.
#[test]
fn creates_of_two_stores_at_one_path_take_turns() {
    use std::io::{BufReader, Read};
    use std::process::Stdio;

    let b = Blast::new();
    let other_home = b.tmp.path().join("other-home");
    let target = b.work.join("shared").join("venv");
    let t = target.to_str().unwrap();
    let create = ["create", "--path", t, "--python", python()];
    let first = b
        .command(&create)
        .env("BLAST_TEST_STOP_AT", "path-claimed")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_stopped(first.id());
    let mut second = b
        .command(&create)
        .env("BLAST_HOME", &other_home)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(second.stderr.take().unwrap());
    let mut said = read_stderr_until(&mut stderr, "waiting for another blast process");
    assert!(
        said.contains(&format!(
            "waiting for another blast process to release `{t}` (making an environment there)"
        )),
        "the second create did not wait: {said}"
    );
    // SAFETY: signals a child of this process that has not been waited for.
    assert_eq!(unsafe { libc::kill(first.id() as i32, libc::SIGCONT) }, 0);
    let out = first.wait_with_output().unwrap();
    assert_succeeded(&out);
    stderr.read_to_string(&mut said).unwrap();
    let status = second.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("`{t}` already exists")), "{said}");
    b.assert_verify_clean(&[&target]);
    let other_envs = b
        .command(&["list", "--json"])
        .env("BLAST_HOME", &other_home)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&other_envs.stdout).trim(), "[]");

    // Killed holding the claim: the lock goes with the process, and the empty directory it made is
    // taken as it is.
    let second_target = b.work.join("second");
    let st = second_target.to_str().unwrap();
    let mut killed = b
        .command(&["create", "--path", st, "--python", python()])
        .env("BLAST_TEST_STOP_AT", "path-claimed")
        .spawn()
        .unwrap();
    wait_until_stopped(killed.id());
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(second_target.is_dir());
    let out = b
        .command(&["create", "--path", st, "--python", python()])
        .env("BLAST_HOME", &other_home)
        .output()
        .unwrap();
    assert_succeeded(&out);

    // A create that fails after its claim removes the directories it made for it, parents too.
    let err = b.fails(&[
        "create",
        "--path",
        "new/parent/venv",
        "--python",
        "/nonexistent/python3",
    ]);
    assert!(err.contains("/nonexistent/python3"), "{err}");
    assert!(
        !b.work.join("new").exists(),
        "a failed create left the directories it made"
    );
}

/// The concurrency suite: several processes do random operations on one store for a fixed time
/// (`BLAST_CONCURRENCY_SECONDS`, 30 by default; long mode by hand: 600), on shared and separate
/// environments, with `blast clean` in a loop beside them. Every operation is done or refused with a
/// clear message, none fails on a lock, and at the end every history is a chain, every directory equals
/// its HEAD and `blast verify` finds no lost or corrupt object. The figures are printed
/// (`-- --nocapture`).
#[test]
fn random_operations_from_several_processes_keep_the_store_whole() {
    let seconds: u64 = std::env::var("BLAST_CONCURRENCY_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let b = Blast::new();
    let shared = b.create_path_env("shared");
    let own: Vec<_> = (0..2)
        .map(|i| b.create_path_env(&format!("own{i}")))
        .collect();
    let wheels = wheels().to_str().unwrap().to_owned();
    let stop = AtomicBool::new(false);
    let done = std::sync::atomic::AtomicU64::new(0);
    let refused = std::sync::atomic::AtomicU64::new(0);
    let lock_errors = std::sync::atomic::AtomicU64::new(0);
    let unclear = std::sync::Mutex::new(Vec::<String>::new());
    let run = |args: Vec<String>| {
        let out = b
            .command(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .output()
            .expect("run blast");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            done.fetch_add(1, Ordering::Relaxed);
            return;
        }
        refused.fetch_add(1, Ordering::Relaxed);
        if stderr
            .lines()
            .any(|l| l.starts_with("error:") && l.contains("lock"))
        {
            lock_errors.fetch_add(1, Ordering::Relaxed);
        }
        if !stderr.contains("error: ") || stderr.contains("panicked") {
            unclear.lock().unwrap().push(format!("{args:?}: {stderr}"));
        }
    };
    thread::scope(|s| {
        for (worker, env) in [&shared, &shared, &own[0], &own[1]].into_iter().enumerate() {
            let (run, stop, wheels) = (&run, &stop, &wheels);
            let other = if worker % 2 == 0 { &own[1] } else { &shared };
            s.spawn(move || {
                let e = env.to_str().unwrap();
                let mut n = worker;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let spec = [
                        "blastdemo==1.0.0",
                        "blastdemo==2.0.0",
                        "blastdep",
                        "blastbase==2.0.0",
                    ][n % 4];
                    let args: Vec<&str> = match n % 7 {
                        0 | 1 => vec!["install", "-e", e, "--no-index", "-f", wheels, spec],
                        2 => vec!["uninstall", "-e", e, "blastdemo"],
                        3 => vec!["rollback", "-e", e],
                        4 => vec!["sync", "--from", e, "--to", other.to_str().unwrap()],
                        5 => vec!["status", "-e", e],
                        _ => vec!["log", "-e", e],
                    };
                    run(args.iter().map(|a| a.to_string()).collect());
                }
            });
        }
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                run(vec!["clean".into(), "--keep".into(), "3".into()]);
            }
        });
        thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
    });
    let unclear = unclear.into_inner().unwrap();
    println!(
        "concurrency figures ({seconds} s, 4 workers + clean): operations done {}, refused {}, \
         unclear refusals {}, lock errors {}",
        done.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        unclear.len(),
        lock_errors.load(Ordering::Relaxed)
    );
    assert!(unclear.is_empty(), "{unclear:#?}");
    assert_eq!(lock_errors.load(Ordering::Relaxed), 0);
    for env in std::iter::once(&shared).chain(&own) {
        let e = env.to_str().unwrap();
        assert_history_is_a_chain(&b.log(e));
        let status = b.json(&["status", "-e", e]);
        assert!(
            status["uncaptured"].as_array().unwrap().is_empty(),
            "{status}"
        );
    }
    b.assert_verify_clean(&[&shared, &own[0], &own[1]]);
}
