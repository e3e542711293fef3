//! Crash safety of HEAD moves (design mechanism 4): a blast command killed with SIGKILL at each named
//! point of a move (`BLAST_TEST_CRASH_AT`) leaves a journal that the next blast command touching the
//! environment finishes. Checked for a rollback that removes, replaces and adds files (blastdemo 2.0.0 →
//! 1.0.0), a sync into a new path and a create: after the next command the directory is exactly the
//! target snapshot, `blast verify` is clean, the history's newest entry is the move, and no staging area
//! is left behind. The finishing command may itself be killed and the one after it still finishes;
//! `blast sync --from` an interrupted environment counts as touching it. A snapshot killed after storing
//! its objects but before recording HEAD leaves HEAD where it was, and the next snapshot records the
//! same content.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::*;

const SITE: &str = "lib/python3.11/site-packages";

/// An environment that went create → blastdemo 1.0.0 (tag `v1`) → blastdemo 2.0.0 (tag `v2`), with the
/// directory as it was at each snapshot.
struct Upgraded {
    b: Blast,
    env: PathBuf,
    v1: String,
    v2: String,
    v1_tree: BTreeMap<String, DiskEntry>,
    v2_tree: BTreeMap<String, DiskEntry>,
}

fn upgraded_env() -> Upgraded {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    pip_install(&env, &["blastdemo==1.0.0"]);
    let v1 = b.json(&["snapshot", "-e", e, "--tag", "v1"])["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    let v1_tree = exec_bits_only(&read_tree(&env));
    pip_install(&env, &["blastdemo==2.0.0"]);
    let v2 = b.json(&["snapshot", "-e", e, "--tag", "v2"])["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    let v2_tree = exec_bits_only(&read_tree(&env));
    assert!(v2_tree.contains_key(&format!("{SITE}/blastdemo/v2_only.py")));
    assert!(v1_tree.contains_key(&format!("{SITE}/blastdemo/data.txt")));
    Upgraded {
        b,
        env,
        v1,
        v2,
        v1_tree,
        v2_tree,
    }
}

/// The HEAD the index records for the environment at `path`, read with `blast list`, which opens no
/// environment and so finishes nothing. Panics when no environment is recorded at `path`.
fn recorded_head(b: &Blast, path: &Path) -> Value {
    let list = b.json(&["list"]);
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == path.to_str().unwrap())
        .unwrap_or_else(|| panic!("no environment recorded at {}: {list}", path.display()))["head"]
        .clone()
}

/// Runs `blast status` on the environment: it must finish the interrupted `operation`, say so, and
/// leave nothing uncaptured. Returns the status report.
fn finish_with_status(b: &Blast, env: &Path, operation: &str) -> Value {
    let (stdout, stderr) = b.ok_with_stderr(&["status", "-e", env.to_str().unwrap(), "--json"]);
    assert!(
        stderr.contains(&format!("finishing the interrupted {operation}")),
        "the next command did not finish the {operation}: {stderr}"
    );
    let status: Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        status["uncaptured"].as_array().unwrap().is_empty(),
        "{status}"
    );
    // Finished once: the command after it has nothing left to do.
    let (_, again) = b.ok_with_stderr(&["status", "-e", env.to_str().unwrap()]);
    assert!(!again.contains("finishing"), "{again}");
    status
}

fn assert_no_staging_left(b: &Blast) {
    assert_eq!(
        b.staging_leftovers(),
        Vec::<PathBuf>::new(),
        "staging areas left behind"
    );
}

fn assert_demo_version(env: &Path, version: &str) {
    let (ok, out) = env_python(env, "import blastdemo; print(blastdemo.VERSION)");
    assert!(ok && out.trim() == version, "{out}");
    let script = Command::new(env.join("bin/blastdemo")).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&script.stdout).trim(),
        format!("blastdemo {version} says hello from blastdep"),
        "{}",
        String::from_utf8_lossy(&script.stderr)
    );
}

fn rollback_killed_at(point: &str) {
    let u = upgraded_env();
    let b = &u.b;
    let e = u.env.to_str().unwrap();
    let history = b.log(e).len();

    b.crash(&["rollback", "-e", e, "v1"], point);

    // The move is not recorded yet, and the directory is where the kill left it.
    assert_eq!(recorded_head(b, &u.env), u.v2.as_str());
    let site = u.env.join(SITE);
    match point {
        "journal-written" => assert_same_tree(&u.v2_tree, &exec_bits_only(&read_tree(&u.env))),
        "apply-removed" => {
            assert!(!site.join("blastdemo/v2_only.py").exists());
            assert!(!site.join("blastdemo-2.0.0.dist-info").exists());
            assert!(!site.join("blastdemo/data.txt").exists());
        }
        "apply-half" => {
            assert!(!site.join("blastdemo/v2_only.py").exists());
            assert!(site.join("blastdemo-1.0.0.dist-info").is_dir());
        }
        "applied" => assert_same_tree(&u.v1_tree, &exec_bits_only(&read_tree(&u.env))),
        other => panic!("unknown point {other}"),
    }
    assert_eq!(stale_bytecode(&u.env), Vec::<String>::new());

    let status = finish_with_status(b, &u.env, "rollback");
    assert_eq!(status["head"], u.v1.as_str());
    assert_same_tree(&u.v1_tree, &exec_bits_only(&read_tree(&u.env)));
    b.assert_verify_clean(&[&u.env]);
    let log = b.log(e);
    assert_eq!(log.len(), history + 1, "{log:?}");
    assert_eq!(log[0]["operation"], "rollback");
    assert_eq!(log[0]["message"], "to v1");
    assert_eq!(log[0]["snapshot"], u.v1.as_str());
    assert_eq!(log[0]["from"], u.v2.as_str());
    assert_eq!(log[0]["head"], true);
    assert_demo_version(&u.env, "1.0.0");
    assert_no_staging_left(b);

    // The finished environment moves on normally.
    b.ok(&["rollback", "-e", e, "v2"]);
    assert_same_tree(&u.v2_tree, &exec_bits_only(&read_tree(&u.env)));
    assert_demo_version(&u.env, "2.0.0");
}

#[test]
fn rollback_killed_after_journal_is_finished_by_next_command() {
    rollback_killed_at("journal-written");
}

#[test]
fn rollback_killed_after_removals_is_finished_by_next_command() {
    rollback_killed_at("apply-removed");
}

#[test]
fn rollback_killed_halfway_through_writes_is_finished_by_next_command() {
    rollback_killed_at("apply-half");
}

#[test]
fn rollback_killed_before_recording_head_is_finished_by_next_command() {
    rollback_killed_at("applied");
}

fn sync_to_new_path_killed_at(point: &str) {
    let b = Blast::new();
    let src = b.create_path_env("src");
    let s = src.to_str().unwrap();
    pip_install(&src, &["blastdemo==1.0.0"]);
    let snap = b.json(&["snapshot", "-e", s])["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    let dst = b.work.join("elsewhere/dst");
    let expected = exec_bits_only(&relocated(&read_tree(&src), &src, &dst));

    b.crash(&["sync", "--from", s, "--to", dst.to_str().unwrap()], point);

    // The new environment is recorded with its journal, without a HEAD yet.
    assert_eq!(recorded_head(&b, &dst), Value::Null);
    match point {
        "journal-written" => assert!(is_empty_dir(&dst), "nothing is written before the journal"),
        "applied" => assert_same_tree(&expected, &exec_bits_only(&read_tree(&dst))),
        _ => assert!(dst.is_dir()),
    }

    let status = finish_with_status(&b, &dst, "sync");
    assert_eq!(status["head"], snap.as_str());
    assert_same_tree(&expected, &exec_bits_only(&read_tree(&dst)));
    b.assert_verify_clean(&[&src, &dst]);
    let log = b.log(dst.to_str().unwrap());
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["operation"], "sync");
    assert_eq!(log[0]["message"], format!("from {s}"));
    assert_eq!(log[0]["snapshot"], snap.as_str());
    assert_eq!(log[0]["from"], Value::Null);
    let (ok, out) = env_python(&dst, "import sys; print(sys.prefix)");
    assert!(ok && out.trim() == dst.to_str().unwrap(), "{out}");
    assert_demo_version(&dst, "1.0.0");
    assert_no_staging_left(&b);
}

#[test]
fn sync_killed_after_journal_is_finished_by_next_command() {
    sync_to_new_path_killed_at("journal-written");
}

#[test]
fn sync_killed_after_removals_is_finished_by_next_command() {
    sync_to_new_path_killed_at("apply-removed");
}

#[test]
fn sync_killed_halfway_through_writes_is_finished_by_next_command() {
    sync_to_new_path_killed_at("apply-half");
}

#[test]
fn sync_killed_before_recording_head_is_finished_by_next_command() {
    sync_to_new_path_killed_at("applied");
}

/// The directory a new environment's path was claimed with (`lock::claim_dir`), before anything is
/// written into it.
fn is_empty_dir(path: &Path) -> bool {
    fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
}

fn create_killed_at(point: &str) {
    let b = Blast::new();
    let env = b.work.join("venv");
    let e = env.to_str().unwrap();

    b.crash(&["create", "--path", e, "--python", python()], point);

    assert_eq!(recorded_head(&b, &env), Value::Null);
    if point == "journal-written" {
        assert!(is_empty_dir(&env), "nothing is written before the journal");
    }

    let status = finish_with_status(&b, &env, "create");
    let recovered = read_tree(&env);
    // What an uninterrupted create writes, at this path: same snapshot, same bytes and modes.
    let reference = b.create_path_env("reference");
    let reference_log = b.log(reference.to_str().unwrap());
    assert_eq!(status["head"], reference_log[0]["snapshot"]);
    assert_same_tree(
        &relocated(&read_tree(&reference), &reference, &env),
        &recovered,
    );
    b.assert_verify_clean(&[&env, &reference]);
    let log = b.log(e);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["operation"], "create");
    assert_eq!(log[0]["snapshot"], status["head"]);
    assert_eq!(log[0]["from"], Value::Null);
    let (ok, out) = env_python(&env, "import sys; print(sys.prefix)");
    assert!(ok && out.trim() == e, "{out}");
    assert_no_staging_left(&b);

    // It works like any environment: a pip install is captured.
    pip_install(&env, &["blastdep"]);
    let snap = b.json(&["snapshot", "-e", e]);
    assert_eq!(snap["packages"][0]["name"], "blastdep");
}

#[test]
fn create_killed_after_journal_is_finished_by_next_command() {
    create_killed_at("journal-written");
}

#[test]
fn create_killed_after_removals_is_finished_by_next_command() {
    create_killed_at("apply-removed");
}

#[test]
fn create_killed_halfway_through_writes_is_finished_by_next_command() {
    create_killed_at("apply-half");
}

#[test]
fn create_killed_before_recording_head_is_finished_by_next_command() {
    create_killed_at("applied");
}

#[test]
fn snapshot_killed_after_storing_objects_keeps_head_and_next_snapshot_records_them() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    let created = b.log(e)[0]["snapshot"].as_str().unwrap().to_owned();
    pip_install(&env, &["blastdep"]);
    let installed = read_tree(&env);
    let snapshots_before = b.store_files("snapshots");

    b.crash(&["snapshot", "-e", e, "-m", "dep"], "capture-staged");

    // The new snapshot and its objects are in the store…
    let orphans: Vec<PathBuf> = b
        .store_files("snapshots")
        .into_iter()
        .filter(|p| !snapshots_before.contains(p))
        .collect();
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    let orphan = orphans[0].file_name().unwrap().to_str().unwrap().to_owned();
    for object in b.plain_objects(&env, &installed) {
        assert!(object.exists(), "{} was not stored", object.display());
    }
    // …but HEAD, the history and the directory are as they were, with nothing to finish.
    assert_eq!(recorded_head(&b, &env), created.as_str());
    let (stdout, stderr) = b.ok_with_stderr(&["status", "-e", e, "--json"]);
    assert!(!stderr.contains("finishing"), "{stderr}");
    let status: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["head"], created.as_str());
    assert!(
        !status["uncaptured"].as_array().unwrap().is_empty(),
        "the install is still uncaptured: {status}"
    );
    assert_eq!(b.log(e).len(), 1);
    assert_same_tree(&installed, &read_tree(&env));
    assert_no_staging_left(&b);

    // The next snapshot records the same content: the same snapshot id.
    let snap = b.json(&["snapshot", "-e", e, "-m", "dep"]);
    assert_eq!(snap["snapshot"], orphan.as_str());
    assert_eq!(snap["parent"], created.as_str());
    assert_eq!(snap["packages"][0]["name"], "blastdep");
    let log = b.log(e);
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0]["operation"], "snapshot");
    assert_eq!(log[0]["message"], "dep");
    assert_eq!(log[0]["snapshot"], orphan.as_str());
    assert_eq!(log[0]["from"], created.as_str());
    b.assert_verify_clean(&[&env]);
    assert_no_staging_left(&b);

    // And it materializes: back to the empty env and forward again.
    b.ok(&["rollback", "-e", e, &created]);
    b.ok(&["rollback", "-e", e, &orphan]);
    assert_same_tree(
        &exec_bits_only(&installed),
        &exec_bits_only(&read_tree(&env)),
    );
    let (ok, out) = env_python(&env, "import blastdep");
    assert!(ok, "{out}");
}

/// The command that finishes a move can itself be killed (its apply passes the same points); the one
/// after it still finishes the move, and the history records it once.
#[test]
fn recovery_killed_midway_is_finished_by_the_command_after_it() {
    let u = upgraded_env();
    let b = &u.b;
    let e = u.env.to_str().unwrap();
    let history = b.log(e).len();

    b.crash(&["rollback", "-e", e, "v1"], "apply-removed");
    for point in ["apply-half", "applied"] {
        let out = b.crash(&["status", "-e", e], point);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("finishing the interrupted rollback"),
            "{point}: {stderr}"
        );
        assert_eq!(recorded_head(b, &u.env), u.v2.as_str(), "{point}");
    }
    assert_same_tree(&u.v1_tree, &exec_bits_only(&read_tree(&u.env)));

    let status = finish_with_status(b, &u.env, "rollback");
    assert_eq!(status["head"], u.v1.as_str());
    assert_same_tree(&u.v1_tree, &exec_bits_only(&read_tree(&u.env)));
    let log = b.log(e);
    assert_eq!(log.len(), history + 1, "{log:?}");
    assert_eq!(log[0]["snapshot"], u.v1.as_str());
    assert_eq!(log[0]["from"], u.v2.as_str());
    b.assert_verify_clean(&[&u.env]);
    assert_demo_version(&u.env, "1.0.0");
    assert_no_staging_left(b);
}

/// `blast sync --from` reads an environment, so it is a next command touching it: when that environment's
/// move was killed, the move is finished first, and the copy gets the snapshot the source ends at.
#[test]
fn sync_from_an_env_with_an_interrupted_move_finishes_that_move_first() {
    let u = upgraded_env();
    let b = &u.b;
    let e = u.env.to_str().unwrap();
    b.crash(&["rollback", "-e", e, "v1"], "apply-half");

    let dst = b.work.join("copy");
    let (stdout, stderr) =
        b.ok_with_stderr(&["sync", "--from", e, "--to", dst.to_str().unwrap(), "--json"]);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        report["to"],
        u.v1.as_str(),
        "sync copied the source's HEAD from before its interrupted rollback (v2), not the snapshot the source \
         is at once the rollback is finished (v1); stderr: {stderr}"
    );
    assert!(
        stderr.contains("finishing the interrupted rollback"),
        "{stderr}"
    );
    assert_eq!(recorded_head(b, &u.env), u.v1.as_str());
    assert_same_tree(&u.v1_tree, &exec_bits_only(&read_tree(&u.env)));
    assert_same_tree(
        &relocated(&u.v1_tree, &u.env, &dst),
        &exec_bits_only(&read_tree(&dst)),
    );
    b.assert_verify_clean(&[&u.env, &dst]);
    assert_demo_version(&dst, "1.0.0");
}

#[test]
fn recovery_refuses_to_discard_changes_made_after_the_crash_unless_forced() {
    let u = upgraded_env();
    let b = &u.b;
    let e = u.env.to_str().unwrap();
    b.crash(&["rollback", "-e", e, "v1"], "apply-half");
    // Between the crash and the next command, the user writes something of their own.
    let work = u.env.join(SITE).join("mywork.py");
    fs::write(&work, "IMPORTANT = 42\n").unwrap();

    let err = b.fails(&["status", "-e", e]);
    assert!(err.contains("was interrupted"), "{err}");
    assert!(err.contains(&format!("{SITE}/mywork.py")), "{err}");
    assert!(err.contains("--force HEAD"), "{err}");
    assert!(work.exists(), "a refused recovery touches nothing");
    assert_eq!(recorded_head(b, &u.env), u.v2.as_str());

    b.ok(&["rollback", "-e", e, "--force", "HEAD"]);
    assert!(!work.exists());
    assert_same_tree(&u.v1_tree, &exec_bits_only(&read_tree(&u.env)));
    b.assert_verify_clean(&[&u.env]);

    // The whole directory removed after a crash is named as gone, not as every path changed (found
    // by exploratory testing), and the advice makes it again.
    b.crash(&["rollback", "-e", e, "v2"], "apply-half");
    fs::remove_dir_all(&u.env).unwrap();
    let err = b.fails(&["status", "-e", e]);
    assert!(
        err.contains("is gone") && err.contains("--force HEAD") && !err.contains(SITE),
        "{err}"
    );
    b.ok(&["rollback", "-e", e, "--force", "HEAD"]);
    assert_same_tree(&u.v2_tree, &exec_bits_only(&read_tree(&u.env)));
    b.assert_verify_clean(&[&u.env]);
}

/// Makes `path` immutable (`chattr +i`: not even root may remove or change it) until dropped; `None`,
/// saying why, where the filesystem or the tool does not allow it.
struct Immutable(PathBuf);

impl Immutable {
    fn make(path: &Path) -> Option<Immutable> {
        let made = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .is_ok_and(|out| out.status.success());
        if !made {
            eprintln!(
                "skipping: `chattr +i {}` failed (needs root, e2fsprogs and a filesystem with the immutable flag)",
                path.display()
            );
        }
        made.then(|| Immutable(path.to_owned()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// A rollback that fails midway (a file it must remove is immutable; found by exploratory testing: the
/// environment was left "interrupted", and every command on it, `status` and `log` too, failed) is undone:
/// the directory is HEAD's again, byte for byte, nothing is left to finish, and the error names the file.
/// A move that cannot be finished says what the environment is midway through.
#[test]
fn a_rollback_that_fails_midway_is_undone_and_names_the_file() {
    let u = upgraded_env();
    let b = &u.b;
    let e = u.env.to_str().unwrap();
    let record = u.env.join(SITE).join("blastdemo-2.0.0.dist-info/RECORD");
    let Some(pinned) = Immutable::make(&record) else {
        return;
    };
    let err = b.fails(&["rollback", "-e", e, "v1"]);
    assert!(
        err.contains(&format!(
            "removing `{}`: Operation not permitted",
            record.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "the rollback of `{e}` was undone: it is at {}, as before",
            &u.v2[..12]
        )),
        "{err}"
    );
    assert_same_tree(&u.v2_tree, &exec_bits_only(&read_tree(&u.env)));
    let (_, stderr) = b.ok_with_stderr(&["status", "-e", e]);
    assert!(!stderr.contains("finishing"), "{stderr}");
    b.assert_verify_clean(&[&u.env]);
    assert_eq!(b.log(e).len(), 3, "no history entry");

    // A file the move replaces: the replacement written beside it goes too (found by exploratory
    // testing: it was left, and the next rollback refused it as an uncaptured change).
    drop(pinned);
    let module = u.env.join(SITE).join("blastdemo/__init__.py");
    let fixed = Immutable::make(&module).unwrap();
    let err = b.fails(&["rollback", "-e", e, "v1"]);
    assert!(
        err.contains(&format!("replacing `{}`", module.display())) && err.contains("was undone"),
        "{err}"
    );
    drop(fixed);
    assert_same_tree(&u.v2_tree, &exec_bits_only(&read_tree(&u.env)));

    // A move killed midway whose finish the same file stops.
    b.crash(&["rollback", "-e", e, "v1"], "journal-written");
    let pinned = Immutable::make(&record).unwrap();
    for command in [
        &["status", "-e", e][..],
        &["run", "-e", e, "--", "python", "-c", "pass"],
    ] {
        let err = b.fails(command);
        assert!(
            err.contains(&format!("`{e}` is midway through an interrupted rollback"))
                && err.contains("fix what stops it, then run the command again"),
            "{command:?}: {err}"
        );
    }
    // A verify of the whole store still checks the store, and says why this one could not be.
    let other = b.create_path_env("other");
    let out = b.run(&["verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!("`{e}`: could not check:"))
            && text.contains(&format!("`{}` matches its HEAD", other.display())),
        "{text}"
    );
    drop(pinned);
    finish_with_status(b, &u.env, "rollback");
    assert_same_tree(&u.v1_tree, &exec_bits_only(&read_tree(&u.env)));
}

/// A removal that fails midway (a file it may not delete) leaves the environment recorded with its
/// directory set aside, says so, and the next `remove` finishes it once the cause is fixed.
#[test]
fn a_removal_that_fails_midway_is_finished_by_the_next() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    fs::write(env.join("lib/kept.txt"), "kept").unwrap();
    b.ok(&["snapshot", "-e", e]);
    let Some(pinned) = Immutable::make(&env.join("lib/kept.txt")) else {
        return;
    };
    let err = b.fails(&["remove", e]);
    assert!(
        err.contains(&format!("`{e}` is still recorded, its files set aside at"))
            && err.contains("then `blast remove` again"),
        "{err}"
    );
    let aside: Vec<PathBuf> = fs::read_dir(env.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".blast-removing-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let err = b.fails(&["status", "-e", e]);
    assert!(err.contains("is gone"), "{err}");
    // Made again meanwhile: the next removal first deletes what the last one set aside, and refuses
    // while it cannot (found by exploratory testing: it removed the new directory and left the old one
    // behind for good, forgotten).
    b.ok(&["rollback", "-e", e, "--force", "HEAD"]);
    let err = b.fails(&["remove", e]);
    assert!(
        err.contains(&format!(
            "`{}` is left from an earlier removal of `{e}`",
            aside[0].display()
        )),
        "{err}"
    );
    assert!(env.join("pyvenv.cfg").is_file());
    assert_eq!(b.json(&["list"]).as_array().unwrap().len(), 1);
    // The flag went with the file; the guard's path is gone.
    drop(pinned);
    assert!(
        Command::new("chattr")
            .arg("-i")
            .arg(aside[0].join("lib/kept.txt"))
            .status()
            .unwrap()
            .success()
    );
    b.ok(&["remove", e]);
    assert!(!aside[0].exists() && !env.exists());
    assert_eq!(b.json(&["list"]), serde_json::json!([]));
}

/// `blast move` killed at `point`, of a directory it renames or of one moved there by hand: the next
/// command that names the environment by its new path gives the move up when the directory had not
/// moved (it is then whole where it was) and finishes it otherwise, saying which; either way the
/// directory is HEAD rendered for where it is, its console script runs, and nothing is uncaptured.
fn move_killed_at(point: &str, by_hand: bool) {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    pip_install(&env, &["blastdemo==1.0.0"]);
    b.ok(&["snapshot", "-e", e]);
    let before = exec_bits_only(&read_tree(&env));
    let to = b.work.join("moved");
    let t = to.to_str().unwrap();
    if by_hand {
        fs::rename(&env, &to).unwrap();
    }
    b.crash(&["move", "-e", e, t], point);
    // Listed as interrupted, whichever path it is at now (found by exploratory testing: as gone).
    let listed = b.json(&["list"]);
    assert_eq!(listed[0]["interrupted"], true, "{point}: {listed}");
    let (stdout, stderr) = b.ok_with_stderr(&["status", "-e", t, "--json"]);
    let status: Value = serde_json::from_str(&stdout).unwrap();
    let moved = by_hand || point != "relocation-written";
    let (here, said) = match moved {
        true => (&to, "finishing the interrupted move"),
        false => (&env, "had not moved its directory"),
    };
    assert!(stderr.contains(said), "{point}: {stderr}");
    assert_eq!(status["path"], here.to_str().unwrap(), "{point}: {status}");
    assert!(
        status["uncaptured"].as_array().unwrap().is_empty(),
        "{point}: {status}"
    );
    assert_same_tree(
        &relocated(&before, &env, here),
        &exec_bits_only(&read_tree(here)),
    );
    let script = Command::new(here.join("bin/blastdemo")).output().unwrap();
    assert!(script.status.success(), "{point}");
    b.assert_verify_clean(&[here]);
}

#[test]
fn a_move_killed_anywhere_is_finished_or_given_up_by_the_next_command() {
    for point in [
        "relocation-written",
        "relocation-moved",
        "apply-half",
        "relocation-rendered",
    ] {
        move_killed_at(point, false);
        move_killed_at(point, true);
    }
}

/// Found by exploratory testing: a move killed before its directory moved, and a venv made at its
/// target meanwhile (by the user, uv or poetry), was "finished" over that venv by the next command, and
/// across filesystems the environment's own directory was removed as the copy's leftover. The next
/// command gives such a move up: the environment stays where it is, uncaptured work and all, and the
/// venv at the target is left alone.
#[test]
fn a_killed_move_never_takes_what_came_to_its_target_since() {
    let shm = tempfile::Builder::new()
        .prefix("blast-move-")
        .tempdir_in("/dev/shm")
        .ok();
    for across in [false, true] {
        let b = Blast::new();
        let dest = match (across, &shm) {
            (false, _) => b.work.clone(),
            (true, Some(shm)) => shm.path().to_owned(),
            (true, None) => {
                eprintln!("skipped across filesystems: no /dev/shm here");
                continue;
            }
        };
        let env = b.create_path_env("venv");
        let e = env.to_str().unwrap();
        fs::write(env.join("work.txt"), "precious\n").unwrap();
        let to = dest.join("moved");
        b.crash(
            &["move", "-e", e, to.to_str().unwrap(), "--force"],
            "relocation-written",
        );
        assert_succeeded(
            &Command::new(python())
                .args(["-m", "venv", "--without-pip", to.to_str().unwrap()])
                .output()
                .unwrap(),
        );
        let (stdout, stderr) = b.ok_with_stderr(&["status", "-e", e, "--json"]);
        assert!(stderr.contains("had not moved its directory"), "{stderr}");
        let status: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(status["path"], e, "{status}");
        assert_eq!(status["uncaptured"][0]["path"], "work.txt", "{status}");
        assert_eq!(
            fs::read_to_string(env.join("work.txt")).unwrap(),
            "precious\n"
        );
        // Python's own venv, not one blast wrote (whose `pyvenv.cfg` has `version_info`).
        let cfg = fs::read_to_string(to.join("pyvenv.cfg")).unwrap();
        assert!(!cfg.contains("version_info"), "{cfg}");
        let beside: Vec<_> = fs::read_dir(&dest)
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name())
            .filter(|name| name.to_string_lossy().starts_with(".blast-"))
            .collect();
        assert!(beside.is_empty(), "{beside:?}");
        fs::remove_dir_all(&to).unwrap();
    }
}

/// Found by review: a copy to another filesystem killed once the copy was in place is finished by the
/// next command, which removes the old directory; but only the one the move copied: a venv made at
/// the old path meanwhile stays.
#[test]
fn a_finished_copy_removes_only_the_directory_it_copied() {
    let Ok(shm) = tempfile::Builder::new()
        .prefix("blast-move-")
        .tempdir_in("/dev/shm")
    else {
        eprintln!("skipped: no /dev/shm here");
        return;
    };
    for remade in [false, true] {
        let b = Blast::new();
        if shm.path().metadata().unwrap().dev() == b.work.metadata().unwrap().dev() {
            eprintln!("skipped: /dev/shm is not another filesystem here");
            return;
        }
        let env = b.create_path_env("venv");
        let e = env.to_str().unwrap();
        pip_install(&env, &["blastdemo==1.0.0"]);
        b.ok(&["snapshot", "-e", e]);
        let to = shm.path().join(format!("moved-{remade}"));
        b.crash(&["move", "-e", e, to.to_str().unwrap()], "relocation-moved");
        if remade {
            fs::remove_dir_all(&env).unwrap();
            assert_succeeded(
                &Command::new(python())
                    .args(["-m", "venv", "--without-pip", e])
                    .output()
                    .unwrap(),
            );
        }
        let (stdout, stderr) = b.ok_with_stderr(&["status", "-e", to.to_str().unwrap(), "--json"]);
        assert!(
            stderr.contains("finishing the interrupted move"),
            "{stderr}"
        );
        let status: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(status["path"], to.to_str().unwrap(), "{status}");
        assert!(
            status["uncaptured"].as_array().unwrap().is_empty(),
            "{status}"
        );
        assert_eq!(env.join("pyvenv.cfg").is_file(), remade, "{stderr}");
        if remade {
            assert!(stderr.contains("left as it is"), "{stderr}");
        }
        let script = Command::new(to.join("bin/blastdemo")).output().unwrap();
        assert!(script.status.success());
    }
}

/// Found by review: a `blast run` named the environment by its new path after a move killed once the
/// directory was there, and ran from the old path the record still held (gone: "the directory is
/// gone"). It finishes the move first, as every command that opens the environment does.
#[test]
fn a_run_finishes_an_interrupted_move_before_it_runs() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    pip_install(&env, &["blastdemo==1.0.0"]);
    b.ok(&["snapshot", "-e", e]);
    let to = b.work.join("moved");
    b.crash(&["move", "-e", e, to.to_str().unwrap()], "relocation-moved");
    let (stdout, stderr) =
        b.ok_with_stderr(&["run", "-e", to.to_str().unwrap(), "--", "blastdemo"]);
    assert!(
        stderr.contains("finishing the interrupted move"),
        "{stderr}"
    );
    assert!(stdout.contains("blastdemo 1.0.0"), "{stdout}");
    let status = b.json(&["status", "-e", to.to_str().unwrap()]);
    assert_eq!(status["path"], to.to_str().unwrap(), "{status}");
}

/// A move a killed command left that cannot be finished now (its directory read-only here) keeps the
/// commands that change the environment off it, but not those that read what the store has (found by
/// exploratory testing: `blast log` failed with the move's error). Once it can, the next command
/// finishes it. Skips where the test cannot bind-mount (it needs root).
#[test]
fn an_unfinishable_move_still_lets_the_history_be_read() {
    let u = upgraded_env();
    let b = &u.b;
    let e = u.env.to_str().unwrap();
    let history = b.log(e).len();
    b.crash(&["rollback", "-e", e, "v1"], "apply-removed");
    let site = u.env.join("lib/python3.11/site-packages");
    let bound = Command::new("mount")
        .args(["--bind"])
        .arg(&site)
        .arg(&site)
        .status()
        .is_ok_and(|s| s.success());
    if !bound {
        eprintln!("skipping: cannot bind-mount here");
        return;
    }
    /// The read-only bind, undone however the test ends.
    struct Bound(PathBuf);
    impl Drop for Bound {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let bind = Bound(site.clone());
    let remounted = Command::new("mount")
        .args(["-o", "remount,ro,bind"])
        .arg(&site)
        .status()
        .unwrap();
    assert!(remounted.success());

    let err = b.fails(&["status", "-e", e]);
    assert!(
        err.contains("midway through an interrupted rollback"),
        "{err}"
    );
    let (out, err) = b.ok_with_stderr(&["log", "-e", e]);
    assert!(
        err.contains("blast: warning:")
            && err.contains("midway through an interrupted move that this does not finish"),
        "{err}"
    );
    assert!(out.contains(&u.v2.as_str()[..12]), "{out}");
    assert_eq!(b.log(e).len(), history);

    drop(bind);
    let status = finish_with_status(b, &u.env, "rollback");
    assert_eq!(status["head"], u.v1.as_str());
    assert_same_tree(&u.v1_tree, &exec_bits_only(&read_tree(&u.env)));
    b.assert_verify_clean(&[&u.env]);
}
