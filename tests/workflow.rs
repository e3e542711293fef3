//! The everyday workflow on a real venv and real pip runs: create, capture a hand-made install, roll
//! back to the exact bytes, roll forward by tag, sync elsewhere, and the errors users can run into.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

#[test]
fn snapshot_captures_a_pip_install_and_rollback_restores_exact_bytes() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let env_s = env.to_str().unwrap();
    let fresh = read_tree(&env);

    pip_install(&env, &["blastdemo==1.0.0"]);
    let installed = read_tree(&env);
    let new_paths: Vec<&String> = installed
        .keys()
        .filter(|p| !fresh.contains_key(*p))
        .collect();
    let snap = b.json(&["snapshot", "-e", env_s, "-m", "demo 1", "--tag", "v1"]);
    assert_eq!(
        snap["added"].as_u64().unwrap() as usize,
        new_paths.len(),
        "layer holds exactly the new paths"
    );
    assert_eq!(snap["modified"], 0);
    assert_eq!(snap["removed"], 0);
    let packages: Vec<String> = snap["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}{}",
                p["change"].as_str().unwrap(),
                p["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(packages, ["addedblastdemo", "addedblastdep"]);

    // Unchanged: recognised by the stat cache, no file read, no new snapshot.
    let again = b.json(&["snapshot", "-e", env_s]);
    assert!(again["snapshot"].is_null());
    assert_eq!(again["files_hashed"], 0);

    // Back to the first snapshot: the directory is what `create` wrote, byte for byte, mode for mode.
    b.ok(&["rollback", "-e", env_s, "@~1"]);
    assert_same_tree(&fresh, &read_tree(&env));
    let (ok, out) = env_python(&env, "import blastdemo");
    assert!(!ok && out.contains("No module named 'blastdemo'"), "{out}");

    // Forward by tag: the package imports and its console script runs.
    b.ok(&["rollback", "-e", env_s, "v1"]);
    assert_same_tree(
        &exec_bits_only(&installed),
        &exec_bits_only(&read_tree(&env)),
    );
    let (ok, out) = env_python(&env, "import blastdemo; print(blastdemo.VERSION)");
    assert!(ok && out.trim() == "1.0.0", "{out}");
    let script = Command::new(env.join("bin/blastdemo")).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&script.stdout).trim(),
        "blastdemo 1.0.0 says hello from blastdep"
    );

    let verify = b.json(&["verify", "-e", env_s]);
    assert_eq!(verify["corrupt"].as_array().unwrap().len(), 0);
    assert_eq!(verify["envs"][0]["drifted"].as_array().unwrap().len(), 0);
}

#[test]
fn upgrade_layer_removes_old_files_and_log_names_package_changes() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let env_s = env.to_str().unwrap();
    pip_install(&env, &["blastdemo==1.0.0"]);
    b.ok(&["snapshot", "-e", env_s, "--tag", "one"]);
    pip_install(&env, &["blastdemo==2.0.0"]);

    let diff = b.json(&["diff", "-e", env_s, "--files"]);
    let files: Vec<String> = diff["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f["change"].as_str().unwrap(),
                f["path"].as_str().unwrap()
            )
        })
        .collect();
    let site = "lib/python3.11/site-packages";
    assert!(
        files.contains(&format!("removed {site}/blastdemo/data.txt")),
        "{files:?}"
    );
    assert!(
        files.contains(&format!("added {site}/blastdemo/v2_only.py")),
        "{files:?}"
    );
    assert!(
        files.contains(&format!("removed {site}/blastdemo-1.0.0.dist-info")),
        "{files:?}"
    );

    b.ok(&["snapshot", "-e", env_s, "--tag", "two"]);
    let log = b.json(&["log", "-e", env_s]);
    let newest = &log[0];
    assert_eq!(newest["head"], true);
    assert_eq!(newest["tags"][0], "two");
    assert_eq!(newest["packages"][0]["change"], "changed");
    assert_eq!(newest["packages"][0]["from"], "1.0.0");
    assert_eq!(newest["packages"][0]["to"], "2.0.0");
    assert_eq!(log.as_array().unwrap().len(), 3, "create, one, two");

    b.ok(&["rollback", "-e", env_s, "one"]);
    assert!(env.join(site).join("blastdemo/data.txt").exists());
    assert!(!env.join(site).join("blastdemo/v2_only.py").exists());
    let (ok, out) = env_python(&env, "import blastdemo; print(blastdemo.VERSION)");
    assert!(ok && out.trim() == "1.0.0", "{out}");
}

#[test]
fn sync_renders_a_working_env_at_another_path() {
    let b = Blast::new();
    let src = b.create_path_env("src-env");
    pip_install(&src, &["blastdemo==1.0.0"]);
    b.ok(&["snapshot", "-e", src.to_str().unwrap()]);

    let dst = b.work.join("elsewhere/other-name");
    fs::create_dir_all(dst.parent().unwrap()).unwrap();
    b.ok(&[
        "sync",
        "--from",
        src.to_str().unwrap(),
        "--to",
        dst.to_str().unwrap(),
    ]);
    let (ok, out) = env_python(&dst, "import sys, blastdemo; print(sys.prefix)");
    assert!(ok, "{out}");
    assert_eq!(out.trim(), dst.to_str().unwrap());
    let script = Command::new(dst.join("bin/blastdemo")).output().unwrap();
    assert!(script.status.success());
    let shebang = fs::read_to_string(dst.join("bin/blastdemo")).unwrap();
    assert!(
        shebang.starts_with(&format!("#!{}/bin/python", dst.display())),
        "{shebang}"
    );
    let activate = fs::read_to_string(dst.join("bin/activate")).unwrap();
    assert!(activate.contains(&format!("VIRTUAL_ENV='{}'", dst.display())));
    assert!(!activate.contains("src-env"));
    let cfg = fs::read_to_string(dst.join("pyvenv.cfg")).unwrap();
    assert!(
        cfg.contains(&format!(
            "home = {}",
            std::path::Path::new(python()).parent().unwrap().display()
        )),
        "{cfg}"
    );

    // Both envs hold the same snapshot and both verify clean.
    let list = b.json(&["list"]);
    let heads: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["head"].as_str().unwrap())
        .collect();
    assert_eq!(heads.len(), 2);
    assert_eq!(heads[0], heads[1]);
    let verify = b.json(&["verify"]);
    assert!(
        verify["envs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["drifted"].as_array().unwrap().is_empty()),
        "{verify}"
    );

    // A second sync onto the now existing env is a no-op.
    let again = b.json(&[
        "sync",
        "--from",
        src.to_str().unwrap(),
        "--to",
        dst.to_str().unwrap(),
    ]);
    assert_eq!(again["unchanged"], true);
}

#[test]
fn rollback_refuses_uncaptured_changes_unless_forced() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let env_s = env.to_str().unwrap();
    let fresh = read_tree(&env);
    pip_install(&env, &["blastdep"]);
    b.ok(&["snapshot", "-e", env_s]);
    let stray = env.join("lib/python3.11/site-packages/stray.py");
    fs::write(&stray, "x = 1\n").unwrap();

    let err = b.fails(&["rollback", "-e", env_s]);
    assert!(
        err.contains("lib/python3.11/site-packages/stray.py"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert!(stray.exists(), "a refused rollback touches nothing");

    b.ok(&["rollback", "-e", env_s, "--force"]);
    assert_same_tree(&fresh, &read_tree(&env));
}

/// A directory removed by hand is named as gone by `rollback`, `sync --to` and `verify`, with what
/// brings it back, as `status` names it (found by exploratory testing: rollback and sync listed every
/// path as an uncaptured change and advised `blast snapshot`, and verify printed the OS error alone);
/// and `diff` says that paths differ when no package does.
#[test]
fn a_directory_removed_by_hand_is_named_as_gone_and_a_diff_counts_paths() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    let other = b.create_path_env("other");
    pip_install(&env, &["blastdep"]);
    b.ok(&["snapshot", "-e", e]);
    let history = b.log(e);

    fs::write(env.join("lib/python3.11/site-packages/mine.py"), "x = 1\n").unwrap();
    let diff = b.json(&["diff", "-e", e]);
    assert_eq!(diff["packages"], serde_json::json!([]), "{diff}");
    assert_eq!(diff["paths_changed"], 1, "{diff}");
    let text = b.ok(&["diff", "-e", e]);
    assert!(
        text.contains("no package changes") && text.contains("1 path differs (`--files` lists it)"),
        "{text}"
    );
    fs::remove_file(env.join("lib/python3.11/site-packages/mine.py")).unwrap();
    assert!(b.ok(&["diff", "-e", e]).contains("no paths differ"));

    fs::remove_dir_all(&env).unwrap();
    let gone = format!(
        "the directory of `{e}` is gone: `blast rollback -e {e} --force HEAD` makes it again"
    );
    for args in [
        vec!["rollback", "-e", e],
        vec!["sync", "--from", other.to_str().unwrap(), "--to", e],
    ] {
        let err = b.fails(&args);
        assert!(err.contains(&gone), "{args:?}: {err}");
        assert!(!err.contains("snapshot"), "{args:?}: {err}");
        assert!(!env.exists(), "{args:?} made nothing");
    }
    // verify reports on stdout, each environment it could not check among the others.
    let out = b.run(&["verify", "-e", e]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains(&gone), "{report}");
    assert!(!report.contains("os error"), "{report}");
    assert_eq!(b.log(e), history, "the history as it was");

    b.ok(&["rollback", "-e", e, "--force", "HEAD"]);
    b.assert_verify_clean(&[&env]);
}

/// A rollback counts every file it removed, not only the directories at the top of what went (found
/// by exploratory testing: a rollback that deleted 1,450 files said "5 removed"), and counts them as it
/// counts what it writes, without the directories (a rollback there and back said "30000 paths
/// written" one way and "30300 removed" the other).
#[test]
fn a_rollback_counts_every_path_it_removed() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    fs::create_dir_all(env.join("extra/sub")).unwrap();
    for file in ["extra/a", "extra/b", "extra/c", "extra/sub/d"] {
        fs::write(env.join(file), file).unwrap();
    }
    b.ok(&["snapshot", "-e", e]);
    let report = b.json(&["rollback", "-e", e]);
    // The three files of extra, and the one of sub.
    assert_eq!(report["removed"], 4, "{report}");
    assert!(!env.join("extra").exists());
    let forward = b.json(&["rollback", "-e", e, "@~1"]);
    assert_eq!(forward["written"], 4, "{forward}");
}

#[test]
fn pycache_is_not_content() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let env_s = env.to_str().unwrap();
    pip_install(&env, &["blastdep"]);
    b.ok(&["snapshot", "-e", env_s]);
    let out = Command::new(env.join("bin/python"))
        .args(["-c", "import blastdep"])
        .env_remove("PYTHONDONTWRITEBYTECODE")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        env.join("lib/python3.11/site-packages/blastdep/__pycache__")
            .is_dir()
    );
    let snap = b.json(&["snapshot", "-e", env_s]);
    assert!(snap["snapshot"].is_null(), "{snap}");
}

#[test]
fn hardlinks_share_objects_but_empty_and_tiny_files_never_share_an_inode() {
    let b = Blast::new();
    let a = b.create_path_env("a");
    pip_install(&a, &["blastdemo==1.0.0"]);
    b.ok(&["snapshot", "-e", a.to_str().unwrap()]);
    let c = b.work.join("c");
    let d = b.work.join("d");
    b.ok(&[
        "sync",
        "--from",
        a.to_str().unwrap(),
        "--to",
        c.to_str().unwrap(),
    ]);
    b.ok(&[
        "sync",
        "--from",
        a.to_str().unwrap(),
        "--to",
        d.to_str().unwrap(),
    ]);
    let site = "lib/python3.11/site-packages";
    let ino =
        |root: &std::path::Path, rel: &str| fs::metadata(root.join(site).join(rel)).unwrap().ino();

    // A module of ordinary size is one object linked into both environments, read-only.
    let init = "blastdemo/__init__.py";
    assert!(fs::metadata(c.join(site).join(init)).unwrap().len() > 256);
    assert_eq!(ino(&c, init), ino(&d, init));
    let mode = fs::metadata(c.join(site).join(init)).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o444);
    // Empty and tiny files are each their own inode, writable like any file.
    assert_ne!(ino(&c, "blastdemo/empty.py"), ino(&d, "blastdemo/empty.py"));
    assert_ne!(
        ino(&c, "blastdemo-1.0.0.dist-info/INSTALLER"),
        ino(&d, "blastdemo-1.0.0.dist-info/INSTALLER")
    );
    fs::write(c.join(site).join("blastdemo/empty.py"), "changed").unwrap();
    assert_eq!(
        fs::read(d.join(site).join("blastdemo/empty.py")).unwrap(),
        b""
    );
}

#[test]
fn seeded_env_has_a_working_pip() {
    let b = Blast::new();
    let env = b.work.join("seeded");
    let created = b.json(&[
        "create",
        "--path",
        env.to_str().unwrap(),
        "--python",
        python(),
        "--seed",
    ]);
    assert!(created["files"].as_u64().unwrap() > 100);
    let pip = Command::new(env.join("bin/pip"))
        .arg("--version")
        .output()
        .unwrap();
    assert_succeeded(&pip);
    assert!(String::from_utf8_lossy(&pip.stdout).contains(&env.display().to_string()));
    // pip's scripts as pip installs itself, whatever its wheel lists (found by exploratory testing:
    // pip 24 lists no versioned one, and 3.13's environments had no `pip3.13`).
    let mut pips: Vec<String> = fs::read_dir(env.join("bin"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with("pip"))
        .collect();
    pips.sort();
    assert_eq!(pips, ["pip", "pip3", "pip3.11"]);
    let status = b.json(&["status", "-e", env.to_str().unwrap()]);
    assert_eq!(status["packages"][0]["name"], "pip");
    assert_eq!(status["uncaptured"].as_array().unwrap().len(), 0);

    // The env's own pip installs into it, and blast captures that.
    let out = Command::new(env.join("bin/pip"))
        .args([
            "install",
            "-q",
            "--no-index",
            "--find-links",
            wheels().to_str().unwrap(),
            "blastdep",
        ])
        .env_remove("PIP_FIND_LINKS")
        .output()
        .unwrap();
    assert_succeeded(&out);
    let snap = b.json(&["snapshot", "-e", env.to_str().unwrap()]);
    assert_eq!(snap["packages"][0]["name"], "blastdep");
}

#[test]
fn named_envs_list_and_remove() {
    let b = Blast::new();
    b.ok(&["create", "web", "--python", python()]);
    let path = b.home.join("envs/web");
    assert!(path.join("pyvenv.cfg").is_file());
    let err = b.fails(&["create", "web", "--python", python()]);
    assert!(err.contains("named `web` exists already"), "{err}");
    let elsewhere = b.work.join("web");
    let err = b.fails(&[
        "create",
        "web",
        "--path",
        elsewhere.to_str().unwrap(),
        "--python",
        python(),
    ]);
    assert!(err.contains("named `web` exists already"), "{err}");
    assert!(!elsewhere.exists());
    let list = b.json(&["list"]);
    assert_eq!(list[0]["name"], "web");
    b.ok(&["remove", "web"]);
    assert!(!path.exists());
    assert_eq!(b.json(&["list"]).as_array().unwrap().len(), 0);
    let err = b.fails(&["status", "-e", "web"]);
    assert!(err.contains("no blast environment `web`"), "{err}");

    // A removal killed midway (found by exploratory testing: a half-deleted environment stayed
    // recorded, and `status` invited a snapshot of it) leaves its directory gone, set aside; the
    // next `remove` deletes that too.
    b.ok(&["create", "web", "--python", python()]);
    b.crash(&["remove", "web"], "remove-aside");
    assert!(!path.exists());
    let err = b.fails(&["status", "-e", "web"]);
    assert!(err.contains("is gone"), "{err}");
    let aside = || {
        fs::read_dir(b.home.join("envs"))
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with(".blast-removing-")
            })
            .count()
    };
    assert_eq!(aside(), 1);
    b.ok(&["remove", "web"]);
    assert_eq!(aside(), 0);
    assert_eq!(b.json(&["list"]).as_array().unwrap().len(), 0);
}

#[test]
fn env_selection_defaults_to_dot_venv_then_says_how_to_pick() {
    let b = Blast::new();
    let err = b.fails(&["status"]);
    assert!(
        err.contains("-e NAME|PATH") && err.contains("BLAST_ENV"),
        "{err}"
    );
    // An empty selection is none at all, and says so (it said to pass `-e`, which was passed).
    let err = b.fails(&["status", "-e", ""]);
    assert!(
        err.contains("an empty `-e` (or BLAST_ENV set to nothing) selects no environment"),
        "{err}"
    );
    // `blast create .venv`, as `python -m venv .venv` is spelled, names the way.
    let err = b.fails(&["create", ".venv", "--python", python()]);
    assert!(
        err.contains("(for an environment at that path: `--path .venv`)"),
        "{err}"
    );
    b.ok(&["create", "--python", python()]);
    assert!(b.work.join(".venv/bin/python").exists());
    assert_eq!(
        fs::read_to_string(b.work.join(".venv/.gitignore")).unwrap(),
        "# Created by blast\n*\n"
    );
    // `blast remove "$UNSET"` is not `blast remove` of ./.venv, nor is BLAST_ENV set to nothing.
    let err = b.fails(&["remove", ""]);
    assert!(err.contains("selects no environment"), "{err}");
    let out = b
        .command(&["remove"])
        .env("BLAST_ENV", "")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(b.work.join(".venv/bin/python").exists());
    // pip's `-e .` where blast's `-e` is meant: the project is named as such.
    fs::write(b.work.join("pyproject.toml"), "[project]\nname = \"p\"\n").unwrap();
    let err = b.fails(&["install", "-e", ".", "blastdep"]);
    assert!(
        err.contains("`.` is a Python project, not a blast environment")
            && err.contains("`blast install -- -e .`"),
        "{err}"
    );
    fs::remove_file(b.work.join("pyproject.toml")).unwrap();
    let status = b.json(&["status"]);
    assert_eq!(
        status["path"],
        b.work
            .join(".venv")
            .canonicalize()
            .unwrap()
            .to_str()
            .unwrap()
    );
    let by_var = b
        .command(&["status", "--json"])
        .env("BLAST_ENV", b.work.join(".venv"))
        .output()
        .unwrap();
    assert!(by_var.status.success());
}

/// A project moved to another disk and linked back: the environment's recorded path now leads through a
/// symlink, and it is still found by that path, by its new real path and as `./.venv`, and works (found
/// by exploratory testing: no command could name it, not even `remove`).
#[test]
fn an_environment_reached_through_a_symlink_made_since_is_still_found() {
    let b = Blast::new();
    let project = b.work.join("project");
    fs::create_dir(&project).unwrap();
    let env = project.join(".venv");
    let e = env.to_str().unwrap();
    b.ok(&["create", "--path", e, "--python", python()]);
    fs::write(env.join("notes.txt"), "kept").unwrap();
    b.ok(&["snapshot", "-e", e]);
    let moved = b.work.join("other-disk");
    fs::rename(&project, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &project).unwrap();

    let real = moved.join(".venv");
    for selector in [e, real.to_str().unwrap()] {
        assert_eq!(b.json(&["status", "-e", selector])["path"], e, "{selector}");
    }
    let in_project = b
        .command(&["rollback"])
        .current_dir(&project)
        .output()
        .unwrap();
    assert!(
        in_project.status.success(),
        "{}",
        String::from_utf8_lossy(&in_project.stderr)
    );
    assert!(!real.join("notes.txt").exists());
    b.ok(&["rollback", "-e", real.to_str().unwrap(), "@~1"]);
    assert_eq!(fs::read_to_string(real.join("notes.txt")).unwrap(), "kept");
    b.assert_verify_clean(&[&env]);
    // `-e` names it here too, as with every other command.
    b.ok(&["remove", "-e", e]);
    assert!(b.json(&["list"]).as_array().unwrap().is_empty());
}

/// A directory of the environment made read-only since (directory modes are not part of a snapshot)
/// does not stop a rollback that changes its entries, for a user who is not root (found by exploratory
/// testing: the move failed half-way on EACCES, and every command after it, `log` too, failed the same
/// way trying to finish it).
#[test]
fn a_rollback_into_a_directory_made_read_only_since_goes_through() {
    // SAFETY: geteuid only reads.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: acting as another user needs root");
        return;
    }
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    let dir = env.join("data");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("keep"), "kept").unwrap();
    b.ok(&["snapshot", "-e", e]);
    fs::write(dir.join("new"), "new").unwrap();
    b.ok(&["snapshot", "-e", e]);
    fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    // Everything the test made, a copy of blast too (the build's directory may be closed to others;
    // a hardlink would hand the build's own file over), goes to `nobody`, who then runs the rollback.
    let blast = b.tmp.path().join("blast");
    fs::copy(env!("CARGO_BIN_EXE_blast"), &blast).unwrap();
    let owned = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(b.tmp.path())
        .status()
        .unwrap();
    assert!(owned.success());
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&blast)
        .args(["rollback", "-e", e])
        .env("BLAST_HOME", &b.home)
        .env("HOME", b.tmp.path())
        .env_remove("BLAST_ENV")
        .current_dir(&b.work)
        .output()
        .expect("setpriv (util-linux) must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.join("new").exists());
    assert_eq!(fs::read_to_string(dir.join("keep")).unwrap(), "kept");
    // Back to root, whose commands refuse a store another user owns.
    let owned = Command::new("chown")
        .args(["-R", "0:0"])
        .arg(b.tmp.path())
        .status()
        .unwrap();
    assert!(owned.success());
    b.assert_verify_clean(&[&env]);
}

/// `blast status` lists the first 20 uncaptured changes and counts the rest; `--json` has them all
/// (found by exploratory testing: a removed directory listed 582 lines).
#[test]
fn status_lists_some_uncaptured_changes_and_counts_the_rest() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    for i in 0..25 {
        fs::write(env.join(format!("note-{i:02}.txt")), "x").unwrap();
    }
    let (text, _) = b.ok_with_stderr(&["status", "-e", e]);
    assert!(text.contains("25 uncaptured changes"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains("+ note-")).count(),
        20,
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "… and 5 more (`blast diff -e {e} --files` lists them all)"
        )),
        "{text}"
    );
    let json = b.json(&["status", "-e", e]);
    assert_eq!(json["uncaptured"].as_array().unwrap().len(), 25);
}

/// A layer of one environment's HEAD damaged in the store (found by exploratory testing: `status` of
/// every environment failed, for the store-wide dedup figure): `status` of another still works, and that
/// environment's own says what is wrong.
#[test]
fn status_is_not_stopped_by_another_environments_damaged_layer() {
    let b = Blast::new();
    let damaged = b.create_path_env("damaged");
    let other = b.create_path_env("other");
    pip_install(&damaged, &["blastdemo==1.0.0"]);
    let d = damaged.to_str().unwrap();
    let head = b.json(&["snapshot", "-e", d])["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    let snapshot = engine::store_format::Snapshot::decode(
        &fs::read(b.home.join("snapshots").join(head)).unwrap(),
    )
    .unwrap();
    let layer = b
        .home
        .join("layers")
        .join(snapshot.layers.last().unwrap().to_hex());
    fs::write(&layer, b"damaged").unwrap();
    let status = b.json(&["status", "-e", other.to_str().unwrap()]);
    assert!(status["head"].is_string(), "{status}");
    let err = b.fails(&["status", "-e", d]);
    assert!(err.contains("does not match its hash"), "{err}");
}

/// A write in place to a file the user hardlinked inside the environment, of the same size and with its
/// mtime set back, is seen (by its ctime): `status` names it and a rollback refuses it (found by
/// exploratory testing: the ctime of every file with several links was ignored, as for a store object's
/// links, and a rollback discarded the edit unasked).
#[test]
fn an_edit_in_place_of_the_users_own_hardlink_with_its_mtime_set_back_is_seen() {
    use std::io::{Seek, Write};
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    fs::write(env.join("base.txt"), "base").unwrap();
    b.ok(&["snapshot", "-e", e]);
    let f = env.join("f");
    fs::write(&f, "A".repeat(1000)).unwrap();
    fs::hard_link(&f, env.join("g")).unwrap();
    // Past the racy window, so that the cache trusts the stat.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    b.ok(&["snapshot", "-e", e]);
    let mtime = fs::metadata(&f).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut file = fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.seek(std::io::SeekFrom::Start(10)).unwrap();
    file.write_all(b"B").unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    let status = b.json(&["status", "-e", e]);
    let changed: Vec<&str> = status["uncaptured"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["f", "g"], "{status}");
    let err = b.fails(&["rollback", "-e", e, "@~1"]);
    assert!(err.contains("has changes that are not captured"), "{err}");
    assert_eq!(fs::read(&f).unwrap()[10], b'B');
}

/// A file written in place through its hardlink to a store object damages the object in every
/// environment that has it: the capture that finds it says so, naming the file and the object, and
/// `verify` names the object (found by exploratory testing: as root, an edit with `>>` changed another
/// environment's file too, and a later rollback "succeeded" leaving the edit).
#[test]
fn a_file_written_through_its_link_to_the_store_is_named_at_the_capture() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    pip_install(&env, &["blastdemo==1.0"]);
    b.ok(&["snapshot", "-e", e]);
    // Past the stat cache's racy window of the objects just stored: a link made within it is not
    // cached, and then there is no object to tell the edit by (on a fast machine the sync came within
    // 50 ms).
    std::thread::sleep(std::time::Duration::from_millis(150));
    let linked = b.work.join("linked");
    let sync = b
        .command(&["sync", "--from", e, "--to", linked.to_str().unwrap()])
        .env("BLAST_LINK_MODE", "hardlink")
        .output()
        .unwrap();
    assert_succeeded(&sync);
    let module = "lib/python3.11/site-packages/blastdemo/__init__.py";
    let file = linked.join(module);
    assert!(
        fs::metadata(&file).unwrap().nlink() > 1,
        "not linked from the store"
    );
    fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut f = fs::OpenOptions::new().append(true).open(&file).unwrap();
    std::io::Write::write_all(&mut f, b"# edited in place\n").unwrap();
    drop(f);

    // `status` names it too, and keeps no stat cache that would hide it from the capture (found by
    // exploratory testing: after a `status`, the snapshot said nothing).
    for command in ["status", "status", "snapshot"] {
        let (_, stderr) = b.ok_with_stderr(&[command, "-e", linked.to_str().unwrap()]);
        assert!(
            stderr.contains(&format!("`{module}` was written in place"))
                && stderr.contains("no longer holds what its snapshots had"),
            "{command}: {stderr}"
        );
    }
    let verify = b.command(&["verify"]).output().unwrap();
    assert!(!verify.status.success());
    // Found by the capture a change starts with, it is named there too.
    let record = "lib/python3.11/site-packages/blastdemo-1.0.0.dist-info/RECORD";
    let file = linked.join(record);
    fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut f = fs::OpenOptions::new().append(true).open(&file).unwrap();
    std::io::Write::write_all(&mut f, b"\n").unwrap();
    drop(f);
    let (_, stderr) = b.ok_with_stderr(&[
        "run",
        "-e",
        linked.to_str().unwrap(),
        "--capture",
        "--",
        "true",
    ]);
    assert!(
        stderr.contains(&format!("`{record}` was written in place")),
        "{stderr}"
    );
    // An edit that replaces the file (a new inode) damages nothing and is not warned of.
    let other = linked.join("lib/python3.11/site-packages/blastdep/__init__.py");
    let text = fs::read_to_string(&other).unwrap();
    fs::remove_file(&other).unwrap();
    fs::write(&other, format!("{text}# replaced\n")).unwrap();
    let (_, stderr) = b.ok_with_stderr(&["snapshot", "-e", linked.to_str().unwrap()]);
    assert!(!stderr.contains("written in place"), "{stderr}");
}

/// What blast may not read (a file or directory of mode 000) is named as what no snapshot can hold:
/// `status`, `diff` and `verify` list it beside the rest (a file of HEAD's is not "removed"),
/// `snapshot` and `rollback` refuse it saying what to do, and `rollback --force HEAD` discards it and
/// puts HEAD's file back (found by exploratory testing as an ordinary user: `status` failed outright).
/// Run without the capabilities that let root read anything (`setpriv`).
#[test]
fn what_blast_may_not_read_is_named_and_a_forced_rollback_mends_it() {
    use std::os::unix::fs::PermissionsExt;
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    pip_install(&env, &["blastdemo==1.0.0"]);
    b.ok(&["snapshot", "-e", e]);
    let head_tree = read_tree(&env);
    let module = "lib/python3.11/site-packages/blastdemo/__init__.py";
    fs::set_permissions(env.join(module), fs::Permissions::from_mode(0o000)).unwrap();
    let dir = env.join("private");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("f"), "x").unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o000)).unwrap();
    // Listed, but not searchable (found in review: it failed the scan).
    let listed_only = env.join("listed-only");
    fs::create_dir(&listed_only).unwrap();
    fs::write(listed_only.join("f"), "x").unwrap();
    fs::set_permissions(&listed_only, fs::Permissions::from_mode(0o444)).unwrap();
    let unprivileged = |args: &[&str]| {
        let mut cmd = b.command(args);
        let program = cmd.get_program().to_owned();
        let mut wrapped = Command::new("setpriv");
        wrapped
            .args([
                "--bounding-set=-dac_override,-dac_read_search",
                "--inh-caps=-dac_override,-dac_read_search",
            ])
            .arg(program)
            .args(cmd.get_args())
            .current_dir(&b.work)
            .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))));
        cmd = wrapped;
        cmd.output().unwrap()
    };
    let probe = unprivileged(&["status", "-e", e, "--json"]);
    if !probe.status.success() && String::from_utf8_lossy(&probe.stderr).contains("setpriv") {
        eprintln!("skipping: setpriv cannot drop root's capabilities here");
        return;
    }
    assert_succeeded(&probe);
    let status: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    assert_eq!(status["uncaptured"], serde_json::json!([]), "{status}");
    let mut unread: Vec<String> = status["uncapturable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            format!(
                "{} {}",
                u["path"].as_str().unwrap(),
                u["kind"].as_str().unwrap()
            )
        })
        .collect();
    unread.sort();
    assert_eq!(
        unread,
        [
            format!("{module} unreadable: permission denied"),
            "listed-only unreadable: permission denied".to_owned(),
            "private unreadable: permission denied".to_owned()
        ]
    );
    let diff = unprivileged(&["diff", "-e", e, "--json"]);
    assert_succeeded(&diff);
    for args in [&["snapshot", "-e", e][..], &["rollback", "-e", e, "HEAD"]] {
        let out = unprivileged(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && stderr.contains("blast may not read")
                && stderr.contains("chmod u+rwX"),
            "{args:?}: {stderr}"
        );
    }
    assert_succeeded(&unprivileged(&["rollback", "-e", e, "--force", "HEAD"]));
    assert!(!dir.exists() && !listed_only.exists());
    // The module is HEAD's again (linked from the store, its mode the object's).
    assert_same_tree(
        &exec_bits_only(&head_tree),
        &exec_bits_only(&read_tree(&env)),
    );
}

/// A store another user owns is refused by every command, before anything is written there (found
/// by exploratory testing: one command run as root on a user's store left files the user's commands
/// then failed on).
#[test]
fn a_store_another_user_owns_is_refused_and_left_as_it_was() {
    use std::os::unix::fs::MetadataExt;
    let b = Blast::new();
    let env = b.create_path_env("venv");
    fs::write(env.join("notes.txt"), "uncaptured").unwrap();
    const OTHER: u32 = 65534;
    if std::os::unix::fs::chown(&b.home, Some(OTHER), None).is_err() {
        eprintln!("skipping: giving the store another owner needs root");
        return;
    }
    let before = read_tree(&b.home);
    for args in [
        vec!["list"],
        vec!["snapshot", "-e", env.to_str().unwrap()],
        vec!["create", "other", "--python", python()],
    ] {
        let err = b.fails(&args);
        assert!(
            err.contains("belongs to `nobody` (uid 65534)") || err.contains("belongs to uid 65534"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("point BLAST_HOME at a store of your own"),
            "{err}"
        );
    }
    assert_same_tree(&before, &read_tree(&b.home));
    assert_eq!(fs::metadata(&b.home).unwrap().uid(), OTHER);
}

/// A rollback replaces a file through a temporary name of its own: a captured file whose name is the
/// one the temporary name used to be (`.blast-tmp.NAME`) stays, and a file whose name is 250 bytes long
/// is replaced (found by exploratory testing: the first was removed as a leftover, the second made every
/// rollback fail with "File name too long", `--force` too).
#[test]
fn a_rollback_replaces_files_of_any_name_and_keeps_names_like_its_temporary_ones() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    let long = "n".repeat(250);
    for (name, text) in [
        ("f", "one"),
        (".blast-tmp.f", "precious"),
        (long.as_str(), "v1"),
    ] {
        fs::write(env.join(name), text).unwrap();
    }
    b.ok(&["snapshot", "-e", e]);
    let first = read_tree(&env);
    fs::write(env.join("f"), "two").unwrap();
    fs::write(env.join(&long), "v2").unwrap();
    b.ok(&["snapshot", "-e", e]);
    let second = read_tree(&env);
    b.ok(&["rollback", "-e", e, "@~1"]);
    assert_same_tree(&first, &read_tree(&env));
    b.ok(&["rollback", "-e", e, "@~1"]);
    assert_same_tree(&second, &read_tree(&env));
    assert_eq!(
        fs::read_to_string(env.join(".blast-tmp.f")).unwrap(),
        "precious"
    );
    b.assert_verify_clean(&[&env]);
}

/// What no snapshot could hold (a named pipe, a socket, a name that is not UTF-8) makes a rollback
/// refuse, naming it; `--force` discards it as it discards any uncaptured change (found by exploratory
/// testing: the forced rollback failed on it too).
#[test]
fn a_forced_rollback_discards_what_no_snapshot_could_hold() {
    use std::os::unix::ffi::OsStrExt;
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    fs::write(env.join("notes.txt"), "kept").unwrap();
    b.ok(&["snapshot", "-e", e]);
    let pipe = env.join("pipe");
    assert!(
        Command::new("mkfifo")
            .arg(&pipe)
            .status()
            .unwrap()
            .success()
    );
    let socket = env.join("lib/server.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let odd = env.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
    fs::write(&odd, "latin-1").unwrap();

    // Every one is named, not the first the walk meets (found by exploratory testing).
    for command in ["rollback", "snapshot"] {
        let err = b.fails(&[command, "-e", e]);
        assert!(
            err.contains("/pipe` is a named pipe")
                && err.contains("/lib/server.sock` is a socket")
                && err.contains("caf\\xe9.txt` has a name that is not UTF-8"),
            "{command}: {err}"
        );
    }
    // `status` shows the rest, and lists them apart.
    let status = b.json(&["status", "-e", e]);
    assert_eq!(status["uncaptured"], serde_json::json!([]), "{status}");
    let mut uncapturable: Vec<(String, String)> = status["uncapturable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["path"].to_string(), u["kind"].to_string()))
        .collect();
    uncapturable.sort();
    assert_eq!(
        uncapturable,
        [
            (
                r#""caf\\xe9.txt""#.into(),
                r#""name that is not UTF-8""#.into()
            ),
            (r#""lib/server.sock""#.into(), r#""socket""#.into()),
            (r#""pipe""#.into(), r#""named pipe""#.into()),
        ]
    );
    let text = b.ok(&["status", "-e", e]);
    assert!(
        text.contains("3 paths no snapshot can hold") && text.contains("! pipe (named pipe)"),
        "{text}"
    );
    // `verify` names them beside the files that drifted (found by exploratory testing: a named pipe
    // stopped the check and hid the rest).
    fs::write(env.join("notes.txt"), "changed").unwrap();
    // So does a diff against the directory (found by exploratory testing: it failed on them).
    let diff = b.json(&["diff", "-e", e, "--files"]);
    assert_eq!(diff["paths_changed"], 1, "{diff}");
    assert_eq!(diff["uncapturable"].as_array().unwrap().len(), 3, "{diff}");
    let text = b.ok(&["diff", "-e", e]);
    assert!(
        text.contains("3 paths no snapshot can hold, left out") && text.contains("! pipe"),
        "{text}"
    );
    let out = b.run(&["verify", "-e", e]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success()
            && text.contains("M notes.txt")
            && text.contains("! pipe (named pipe)")
            && text.contains("! lib/server.sock (socket)")
            && text.contains("holds what no snapshot can"),
        "{text}"
    );
    assert!(pipe.exists() && socket.exists() && odd.exists());
    // As status says, a forced rollback to HEAD discards them and keeps HEAD's files.
    b.ok(&["rollback", "-e", e, "--force", "HEAD"]);
    for gone in [&pipe, &socket, &odd] {
        assert!(gone.symlink_metadata().is_err(), "{}", gone.display());
    }
    assert_eq!(fs::read_to_string(env.join("notes.txt")).unwrap(), "kept");
    let mkfifo = || {
        assert!(
            Command::new("mkfifo")
                .arg(&pipe)
                .status()
                .unwrap()
                .success()
        )
    };
    // With nothing else to change, what it discards is still said (found by exploratory testing: it
    // read "already at").
    mkfifo();
    let text = b.ok(&["rollback", "-e", e, "--force", "HEAD"]);
    assert!(
        !text.contains("already at") && text.contains("1 removed"),
        "{text}"
    );
    assert!(pipe.symlink_metadata().is_err());
    mkfifo();
    b.ok(&["rollback", "-e", e, "--force", "@~1"]);
    assert!(pipe.symlink_metadata().is_err());
    assert!(!env.join("notes.txt").exists());
    b.ok(&["rollback", "-e", e, "@~1"]);
    assert_eq!(fs::read_to_string(env.join("notes.txt")).unwrap(), "kept");
    b.assert_verify_clean(&[&env]);
}

/// A store moved with its named environments: a command on one says so and what to do, and never
/// makes the environment again at the old place (found by exploratory testing: the advice given,
/// `rollback --force HEAD`, wrote a second copy where the store had been).
#[test]
fn a_named_environment_of_a_moved_store_says_the_store_moved() {
    let b = Blast::new();
    b.ok(&["create", "web", "--python", python()]);
    b.ok(&["create", "api", "--python", python(), "--seed"]);
    let moved = b.work.join("moved-home");
    fs::rename(&b.home, &moved).unwrap();
    for args in [
        &["status", "-e", "web"][..],
        &["rollback", "-e", "web", "--force", "HEAD"],
    ] {
        let out = b.command(args).env("BLAST_HOME", &moved).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        let here = moved.join("envs/web");
        assert!(
            stderr.contains("the store was moved")
                && stderr.contains(&format!("`blast move -e web {}`", here.display()))
                && stderr.contains("blast remove web"),
            "{stderr}"
        );
        assert!(
            !b.home.exists(),
            "{args:?} made the old store's place again"
        );
    }
    // The advice holds: `blast move` takes the environment where the store has it now, with its
    // history, and writes what names its path for there.
    let moved_blast = |args: &[&str]| b.command(args).env("BLAST_HOME", &moved).output().unwrap();
    let api = moved.join("envs/api");
    assert_succeeded(&moved_blast(&["move", "-e", "api", api.to_str().unwrap()]));
    let pip = fs::read_to_string(api.join("bin/pip")).unwrap();
    assert!(
        pip.starts_with(&format!("#!{}/bin/python", api.display())),
        "{pip}"
    );
    let status = moved_blast(&["status", "-e", "api", "--json"]);
    assert_succeeded(&status);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["path"], api.to_str().unwrap(), "{status}");
    assert!(
        status["uncaptured"].as_array().unwrap().is_empty(),
        "{status}"
    );
    assert_succeeded(&moved_blast(&["verify", "-e", "api"]));
    let (ok, out) = env_python(&api, "import pip; print(pip.__file__)");
    assert!(ok && out.contains(api.to_str().unwrap()), "{out}");
    // And a removal: the environment goes with its directory, and the name is free again; work
    // found in the directory is named first, as for any removal.
    let notes = moved.join("envs/web/notes.txt");
    fs::write(&notes, "mine\n").unwrap();
    let refused = moved_blast(&["remove", "web"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("notes.txt"),
        "{stderr}"
    );
    fs::remove_file(&notes).unwrap();
    assert_succeeded(&moved_blast(&["remove", "web"]));
    assert!(!moved.join("envs/web").exists());
    assert_succeeded(&moved_blast(&["create", "web", "--python", python()]));
    assert!(!b.home.exists());
}

/// `cp -a FROM TO`: a store copied whole, as a user backs one up.
fn copy_store(from: &Path, to: &Path) {
    let copied = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(copied.success());
}

/// A copy of a store (`cp -a` of `$BLAST_HOME`, a backup) records the same environments' directories
/// as the store it was copied from: a command in the copy refuses to change a directory the other keeps
/// (found by exploratory testing: a rollback in a backup rolled back the original's environment, behind
/// its store's back) or to finish what a killed command left in it, reads its history, takes its own
/// named environments with `blast move`, forgets the other's with `blast remove`, and works on what it
/// makes itself; once the original store is gone, the directories are the copy's, unless a new store
/// was made there.
#[test]
fn a_copy_of_a_store_leaves_the_originals_directories_alone() {
    let b = Blast::new();
    // A file named like a store's id above an environment makes no store of it (the review's catch:
    // every command on the environment was refused as another store's).
    fs::write(b.work.join("store-id"), "0123456789abcdef0123\n").unwrap();
    let project = b.create_path_env("venv");
    let p = project.to_str().unwrap();
    pip_install(&project, &["blastdep"]);
    b.ok(&["snapshot", "-e", p]);
    b.ok(&["status", "-e", p]);
    b.ok(&["create", "web", "--python", python()]);
    // A rollback killed halfway, which the original store finishes, not a copy.
    let halfway = b.home.join("envs/halfway");
    b.ok(&["create", "halfway", "--python", python()]);
    pip_install(&halfway, &["blastdemo"]);
    b.ok(&["snapshot", "-e", "halfway"]);
    b.ok(&["rollback", "-e", "halfway", "@~1"]);
    b.crash(&["rollback", "-e", "halfway", "@~1"], "apply-half");
    let halfway_tree = read_tree(&halfway);
    let copy_of = |copy: &Path| copy_store(&b.home, copy);
    // The store seen at another path (a bind mount) is not a copy of itself.
    let bound = b.work.join("bound");
    fs::create_dir(&bound).unwrap();
    let script = "mount --bind \"$0\" \"$1\" && export BLAST_HOME=\"$1\" && \"$2\" rollback -e \"$3\" --force HEAD && \"$2\" status -e web";
    let through_mount = Command::new("unshare")
        .args(["-rm", "sh", "-c", script])
        .arg(&b.home)
        .arg(&bound)
        .arg(env!("CARGO_BIN_EXE_blast"))
        .arg(p)
        .current_dir(&b.work)
        .output()
        .unwrap();
    assert_succeeded(&through_mount);
    let copy = b.work.join("backup");
    copy_of(&copy);
    let in_copy =
        |copy: &Path, args: &[&str]| b.command(args).env("BLAST_HOME", copy).output().unwrap();
    let project_tree = read_tree(&project);
    let kept_by = |store: &Path, copy: &Path| {
        format!(
            "`{p}` is the directory of `{p}` that the store at `{}` keeps (this store, `{}`, is a copy",
            store.display(),
            copy.display()
        )
    };
    for args in [
        &["rollback", "-e", p, "--force", "@~1"][..],
        &["status", "-e", p],
        &["move", "-e", p, b.work.join("elsewhere").to_str().unwrap()],
    ] {
        let out = in_copy(&copy, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && stderr.contains(&kept_by(&b.home, &copy))
                && stderr.contains(&format!("`blast remove {p}`")),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            read_tree(&project),
            project_tree,
            "{args:?} changed the original's environment"
        );
    }
    // Its history is read as the copy has it, and a whole-store verify leaves it to the original.
    assert_succeeded(&in_copy(&copy, &["log", "-e", p]));
    let image = b.work.join("from-copy.blast");
    assert_succeeded(&in_copy(
        &copy,
        &["export", "-e", p, "-o", image.to_str().unwrap()],
    ));
    let out = in_copy(&copy, &["verify"]);
    assert_succeeded(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("`{p}` not compared")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A named environment: the copy's own directory, whose files name the original's.
    let web_here = copy.join("envs/web");
    let out = in_copy(&copy, &["status", "-e", "web"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains(&format!("which the store at `{}` keeps", b.home.display()))
            && stderr.contains(&format!("`blast move -e web {}`", web_here.display())),
        "{stderr}"
    );
    let web_tree = read_tree(&b.home.join("envs/web"));
    assert_succeeded(&in_copy(
        &copy,
        &["move", "-e", "web", web_here.to_str().unwrap()],
    ));
    let activate = fs::read_to_string(web_here.join("bin/activate")).unwrap();
    assert!(activate.contains(web_here.to_str().unwrap()), "{activate}");
    assert_succeeded(&in_copy(&copy, &["verify", "-e", "web"]));
    assert_eq!(read_tree(&b.home.join("envs/web")), web_tree);
    // Taken, it is the copy's wherever it moves next (the review's catch: the old mark followed it).
    let web_elsewhere = b.work.join("web-elsewhere");
    assert_succeeded(&in_copy(
        &copy,
        &["move", "-e", "web", web_elsewhere.to_str().unwrap()],
    ));
    assert_succeeded(&in_copy(&copy, &["status", "-e", "web"]));
    assert_succeeded(&in_copy(
        &copy,
        &["move", "-e", "web", web_here.to_str().unwrap()],
    ));
    // The killed rollback is not finished in the original's directory by the copy (found by
    // exploratory testing: `status`, or the `move` the copy advised, wrote into it); taken, the copy's
    // own directory gets it finished there.
    let halfway_here = copy.join("envs/halfway");
    let h = halfway_here.to_str().unwrap();
    let out = in_copy(&copy, &["status", "-e", "halfway"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("`blast move -e halfway {h}`")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = in_copy(&copy, &["move", "-e", "halfway", h]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--force"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_succeeded(&in_copy(&copy, &["move", "-e", "halfway", h, "--force"]));
    assert_eq!(read_tree(&halfway), halfway_tree);
    assert_succeeded(&in_copy(&copy, &["status", "-e", "halfway"]));
    assert_succeeded(&in_copy(&copy, &["verify", "-e", "halfway"]));
    assert_eq!(read_tree(&halfway), halfway_tree);
    // A copy of the copy: `web` is the first copy's now, the project still the original's (found by
    // the review: an old mark named the original for both).
    let copy_of_copy = b.work.join("copy-of-copy");
    copy_store(&copy, &copy_of_copy);
    let out = in_copy(&copy_of_copy, &["status", "-e", "web"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains(&format!("which the store at `{}` keeps", copy.display())),
        "{stderr}"
    );
    let out = in_copy(&copy_of_copy, &["status", "-e", p]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(&kept_by(&b.home, &copy_of_copy)),
        "{stderr}"
    );
    // What the copy makes is its own.
    let made_here = b.work.join("made-in-copy");
    let m = made_here.to_str().unwrap();
    assert_succeeded(&in_copy(
        &copy,
        &["create", "--path", m, "--python", python()],
    ));
    assert_succeeded(&in_copy(&copy, &["rollback", "-e", m, "--force", "HEAD"]));
    // The original's environment is forgotten in the copy, its directory left as it is.
    let out = in_copy(&copy, &["remove", p]);
    assert_succeeded(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("forgot") && stdout.contains("stays"),
        "{stdout}"
    );
    assert_eq!(read_tree(&project), project_tree);
    let listed = in_copy(&copy, &["list", "--json"]);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(p));
    b.ok(&["status", "-e", "halfway"]);
    b.assert_verify_clean(&[&project, &b.home.join("envs/web"), &halfway]);
    // A copy whose original is gone (copied, then the original deleted) has the directories for its
    // own; its copy marks them as kept by it (found by exploratory testing: both copies owned them).
    let second = b.work.join("second");
    copy_of(&second);
    assert_succeeded(&in_copy(&second, &["list"]));
    assert!(!in_copy(&second, &["status", "-e", p]).status.success());
    let third = b.work.join("third");
    copy_store(&second, &third);
    assert_succeeded(&in_copy(&third, &["list"]));
    fs::remove_dir_all(&b.home).unwrap();
    let out = in_copy(&third, &["rollback", "-e", p, "@~1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(&kept_by(&second, &third)),
        "{stderr}"
    );
    assert_eq!(read_tree(&project), project_tree);
    assert_succeeded(&in_copy(&second, &["rollback", "-e", p, "@~1"]));
    assert!(
        !project
            .join("lib/python3.11/site-packages/blastdep")
            .exists()
    );
    // A new store made where the original was keeps its own `web` (found by exploratory testing: the
    // copy took it for its own and rolled it back).
    b.ok(&["create", "web", "--python", python()]);
    let new_web = b.home.join("envs/web");
    let new_web_tree = read_tree(&new_web);
    let out = in_copy(&second, &["rollback", "-e", "web", "--force", "HEAD"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains(&format!("which the store at `{}` keeps", b.home.display())),
        "{stderr}"
    );
    assert_eq!(read_tree(&new_web), new_web_tree);
}

/// A store deleted and brought back from a copy it had been copied to (and that copy opened once) is
/// itself again: its environments are its own, and the copy's are its (the review's catch: the copy
/// was taken for the original and every command refused).
#[test]
fn a_store_restored_from_its_copy_is_itself_again() {
    let b = Blast::new();
    let project = b.create_path_env("venv");
    let p = project.to_str().unwrap();
    pip_install(&project, &["blastdep"]);
    b.ok(&["snapshot", "-e", p]);
    let backup = b.work.join("backup");
    copy_store(&b.home, &backup);
    let in_backup = |args: &[&str]| b.command(args).env("BLAST_HOME", &backup).output().unwrap();
    assert_succeeded(&in_backup(&["list"]));
    fs::remove_dir_all(&b.home).unwrap();
    copy_store(&backup, &b.home);
    b.ok(&["rollback", "-e", p, "@~1"]);
    b.ok(&["rollback", "-e", p, "@~1"]);
    b.assert_verify_clean(&[&project]);
    let out = in_backup(&["status", "-e", p]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr)
                .contains(&format!("that the store at `{}` keeps", b.home.display())),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The index records the environments, their histories and tags: a store whose index is missing, is
/// another store's, or has a damaged log is refused, where an empty index made in its place would have
/// `blast clean` remove every snapshot (found by exploratory testing). A store from before `store-id`
/// gets one from its index.
#[test]
fn a_lost_or_damaged_index_is_refused_and_nothing_is_swept() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    pip_install(&env, &["blastdep"]);
    b.ok(&["snapshot", "-e", env.to_str().unwrap()]);
    let index = b.home.join("index");
    let store_files = || -> Vec<PathBuf> {
        ["objects", "layers", "snapshots"]
            .iter()
            .flat_map(|kind| b.store_files(kind))
            .collect()
    };
    let before = store_files();
    let refused = |why: &str| {
        for args in [&["list"][..], &["clean", "--keep", "1"], &["verify"]] {
            let err = b.fails(args);
            assert!(
                err.contains(&format!(
                    "the metadata index at `{}` {why}",
                    index.display()
                )) && err.contains("blast does not run on"),
                "{args:?}: {err}"
            );
        }
        assert_eq!(store_files(), before, "a refused store was swept");
    };

    let away = b.tmp.path().join("index-away");
    fs::rename(&index, &away).unwrap();
    refused("is missing");
    assert!(
        !index.exists(),
        "an empty index was made in the lost one's place"
    );
    fs::rename(&away, &index).unwrap();
    assert!(b.ok(&["list"]).contains("venv"));

    let other = Blast::new();
    other.create_path_env("other");
    fs::rename(&index, &away).unwrap();
    fs::rename(other.home.join("index"), &index).unwrap();
    refused("is another store's");
    fs::remove_dir_all(&index).unwrap();
    fs::rename(&away, &index).unwrap();

    // Damaged in the middle of a log: RocksDB's default recovery would end the index there, silently.
    let logs: Vec<PathBuf> = fs::read_dir(&index)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .filter(|path| fs::metadata(path).unwrap().len() > 300)
        .collect();
    assert!(!logs.is_empty(), "no log to damage");
    let kept: Vec<Vec<u8>> = logs.iter().map(|log| fs::read(log).unwrap()).collect();
    for (log, bytes) in logs.iter().zip(&kept) {
        let mut damaged = bytes.clone();
        for byte in &mut damaged[20..220] {
            *byte ^= 0x5a;
        }
        fs::write(log, damaged).unwrap();
    }
    for args in [&["list"][..], &["clean", "--keep", "1"]] {
        let err = b.fails(args);
        assert!(
            err.contains("Corruption") && err.contains("blast does not run on a damaged index"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(store_files(), before, "a damaged store was swept");
    for (log, bytes) in logs.iter().zip(&kept) {
        fs::write(log, bytes).unwrap();
    }
    let mut written: Vec<PathBuf> = fs::read_dir(&index)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .filter(|path| fs::metadata(path).unwrap().len() > 0)
        .collect();
    written.sort();
    let newest = written.last().unwrap();
    // The way out keeps a copy of the index as it was, and flushes the index read up to the damage only
    // once it is known to be the store's: with the record of the store's id damaged (the first log),
    // it is refused, and the copy holds every log (the recovery itself drops those past the damage).
    let first = written.first().unwrap();
    let first_bytes = fs::read(first).unwrap();
    let mut garbled = first_bytes.clone();
    for byte in &mut garbled[8..40] {
        *byte ^= 0x5a;
    }
    fs::write(first, garbled).unwrap();
    let recovering = |args: &[&str]| {
        b.command(args)
            .env("BLAST_INDEX_RECOVERY", "point-in-time")
            .output()
            .unwrap()
    };
    let copies = || -> Vec<PathBuf> {
        fs::read_dir(&b.home)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.to_string_lossy().contains("index.before-recovery-"))
            .collect()
    };
    let out = recovering(&["list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("lacks its first record"),
        "{stderr}"
    );
    let kept = copies();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        stderr.contains(&format!("it is kept at `{}`", kept[0].display())),
        "{stderr}"
    );
    for log in &written {
        assert!(
            kept[0].join(log.file_name().unwrap()).is_file(),
            "{}",
            log.display()
        );
    }
    fs::remove_dir_all(&index).unwrap();
    fs::rename(&kept[0], &index).unwrap();
    fs::write(first, &first_bytes).unwrap();
    assert!(b.ok(&["list"]).contains("venv"));
    // Damaged at the end of the newest log, as a power cut mid-write may leave it: the named way out
    // reads the index up to the damage once, keeping a copy of it as it was, and the next command opens
    // it as usual; `blast clean` refuses to sweep until the copy is deleted.
    let bytes = fs::read(newest).unwrap();
    let mut garbled = bytes.clone();
    let len = garbled.len();
    for byte in &mut garbled[len - 40..len - 10] {
        *byte ^= 0x5a;
    }
    fs::write(newest, garbled).unwrap();
    let err = b.fails(&["list"]);
    assert!(
        err.contains("run one command with BLAST_INDEX_RECOVERY=point-in-time"),
        "{err}"
    );
    let out = recovering(&["list"]);
    assert_succeeded(&out);
    assert!(b.ok(&["list"]).contains("venv"));
    let kept = copies();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&kept[0].display().to_string()));
    let err = b.fails(&["clean", "--keep", "1"]);
    assert!(
        err.contains(&format!(
            "`{}` keeps it as it was before",
            kept[0].display()
        )),
        "{err}"
    );
    assert_eq!(store_files(), before);
    fs::remove_dir_all(&kept[0]).unwrap();

    // A store from before `store-id`: its index gets one, and the file names it.
    fs::remove_file(b.home.join("store-id")).unwrap();
    b.ok(&["log", "-e", env.to_str().unwrap()]);
    let id = fs::read_to_string(b.home.join("store-id")).unwrap();
    assert_eq!(id.trim().len(), 20, "{id}");
    // A damaged `store-id` is named as such, not blamed on the index.
    fs::write(b.home.join("store-id"), "garbage\n").unwrap();
    let err = b.fails(&["list"]);
    assert!(
        err.contains("store-id` is damaged (it holds no store id): delete it"),
        "{err}"
    );
    fs::remove_file(b.home.join("store-id")).unwrap();
    b.ok(&["list"]);
    assert_eq!(fs::read_to_string(b.home.join("store-id")).unwrap(), id);
}

/// Output that cannot be written (stdout on a full disk) ends blast with a line saying so and exit 1,
/// not a panic; what the command did stands (found by exploratory testing: exit 101 and a backtrace).
#[test]
fn output_that_cannot_be_written_is_named_not_a_panic() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    pip_install(&env, &["blastdep"]);
    b.ok(&["snapshot", "-e", e]);
    let full = || {
        fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let out = b
        .command(&["rollback", "-e", e])
        .stdout(full())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        "blast: could not write to stdout: No space left on device (os error 28)\n"
    );
    let log = b.log(e);
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(log[0]["operation"], "rollback");
    assert!(!env_python(&env, "import blastdep").0);
    b.assert_verify_clean(&[&env]);
    let out = b
        .command(&["list"])
        .stdout(full())
        .stderr(full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn bad_input_gets_clear_errors() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let env_s = env.to_str().unwrap();
    // A store at a path that is not UTF-8 is refused before it is made (found by exploratory
    // testing: it was made, and installs then failed with an internal error).
    let odd_home = b.work.join(std::ffi::OsStr::from_bytes(b"store-\xff"));
    let out = b
        .command(&["list"])
        .env("BLAST_HOME", &odd_home)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(BLAST_HOME) is not UTF-8"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!odd_home.exists());
    // A misspelt link mode is named before anything changes (found by exploratory testing: it was
    // ignored, and the probed mode used).
    let before = read_tree(&env);
    fs::write(env.join("new.txt"), "x").unwrap();
    let out = b
        .command(&["snapshot", "-e", env_s])
        .env("BLAST_LINK_MODE", "hardlinks")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1)
            && err.contains("BLAST_LINK_MODE is `hardlinks`, not a link mode"),
        "{err}"
    );
    assert_eq!(b.log(env_s).len(), 1, "nothing captured");
    fs::remove_file(env.join("new.txt")).unwrap();
    assert_eq!(read_tree(&env), before);
    assert!(b.ok(&["tag", "-e", env_s]).contains(&format!(
        "has no tags: `blast tag -e {env_s} NAME` tags HEAD"
    )));

    let err = b.fails(&["log", "-e", "nope"]);
    assert!(err.contains("no blast environment `nope`"), "{err}");

    let err = b.fails(&["rollback", "-e", env_s, "0123456789ab"]);
    assert!(err.contains("no snapshot matching `0123456789ab`"), "{err}");
    for short in ["5c2", "5C25"] {
        let err = b.fails(&["rollback", "-e", env_s, short]);
        assert!(
            err.contains("an id prefix is at least 4 lowercase hex digits"),
            "{err}"
        );
    }
    let err = b.fails(&["rollback", "-e", env_s, "@~7"]);
    assert_eq!(b.log(env_s).len(), 1);
    assert!(
        err.contains("no snapshot matching `@~7` (its history holds 1 entry, `@~0`)"),
        "{err}"
    );

    // Two snapshot files sharing a prefix make that prefix ambiguous.
    for last in ["1", "2"] {
        let name = format!("abcd{}{last}", "0".repeat(59));
        fs::write(b.home.join("snapshots").join(name), b"").unwrap();
    }
    let err = b.fails(&["rollback", "-e", env_s, "abcd"]);
    assert!(err.contains("matches several snapshots"), "{err}");

    // With --json, an error is JSON on stdout too, with the exit code.
    let out = b.run(&["rollback", "-e", env_s, "abcd", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("matches several snapshots"),
        "{answer}"
    );
    assert_eq!(answer["exit_code"], 1);
    // `clean --keep 0` would keep what `--keep 1` keeps: refused (found by exploratory testing).
    let err = b.run(&["clean", "--keep", "0"]);
    assert_eq!(err.status.code(), Some(2));
    // A usage error too (found by exploratory testing: clap's went to stderr only).
    let out = b.run(&["--json", "clean", "--keep", "abc"]);
    assert_eq!(out.status.code(), Some(2));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        answer["error"].as_str().unwrap().contains("'--keep <N>'"),
        "{answer}"
    );
    assert_eq!(answer["exit_code"], 2);
    // The `--json` of a command `run` or `pip` is given is that command's: blast's usage error stays
    // text (found by exploratory testing).
    for args in [
        &["run", "--memory", "5", "-e", env_s, "pip", "list", "--json"][..],
        &[
            "pip",
            "-e",
            env_s,
            "--installer",
            "npm",
            "--",
            "list",
            "--json",
        ],
    ] {
        let out = b.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("error: invalid value"),
            "{args:?}"
        );
    }
    let out = b.run(&["run", "--memory", "5", "--json", "-e", env_s, "python"]);
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["exit_code"], 2);

    let err = b.fails(&["rollback", "-e", env_s, "@~18446744073709551615"]);
    assert!(err.contains("no snapshot matching"), "{err}");

    b.ok(&["snapshot", "-e", env_s, "--tag", "base"]);
    fs::write(env.join("lib/extra.txt"), "x").unwrap();
    let err = b.fails(&["snapshot", "-e", env_s, "--tag", "base"]);
    assert!(err.contains("tag `base` already names snapshot"), "{err}");

    for head in ["HEAD", "head", "Head"] {
        let err = b.fails(&["tag", "-e", env_s, head]);
        assert!(err.contains("it names a snapshot already"), "{err}");
    }
    let err = b.fails(&["snapshot", "-e", env_s, "--tag", "has space"]);
    assert!(err.contains("tag `has space` is not valid"), "{err}");

    let err = b.fails(&["create", "bad/name", "--python", python()]);
    assert!(err.contains("not a valid environment name"), "{err}");
    let err = b.fails(&["create", &"x".repeat(101), "--python", python()]);
    assert!(err.contains("use at most 100 letters"), "{err}");

    let err = b.fails(&["create", "x", "--python", "/no/such/python"]);
    assert!(err.contains("no Python interpreter found"), "{err}");
    // Found by exploratory testing: a program that is no Python printed the probe's whole code back,
    // and a directory or a file without `x` said "Permission denied".
    let err = b.fails(&["create", "x", "--python", "/bin/ls"]);
    assert!(
        err.contains("it does not run Python code") && !err.contains("import json"),
        "{err}"
    );
    let err = b.fails(&["create", "x", "--python", b.work.to_str().unwrap()]);
    assert!(err.contains("it is a directory"), "{err}");
    let plain = b.work.join("plain-file");
    fs::write(&plain, "not a program\n").unwrap();
    let err = b.fails(&["create", "x", "--python", plain.to_str().unwrap()]);
    assert!(err.contains("it is not executable"), "{err}");
    // What a program that is no usable interpreter says first is its complaint (found by exploratory
    // testing: pyenv's shim of an unselected version was reported by the tail of its tip).
    let complaining = b.work.join("complaining-python");
    fs::write(
        &complaining,
        "#!/bin/sh\necho 'pyenv: python3.8: command not found' >&2\necho >&2\necho '      python2 and python3 to be found at the same time.' >&2\nexit 127\n",
    )
    .unwrap();
    fs::set_permissions(&complaining, fs::Permissions::from_mode(0o755)).unwrap();
    let err = b.fails(&["create", "x", "--python", complaining.to_str().unwrap()]);
    assert!(
        err.contains("127: pyenv: python3.8: command not found"),
        "{err}"
    );

    // A path with control characters would be written into activate scripts and every report.
    let odd = b.work.join("ev\u{1b}[31mil\nx");
    let err = b.fails(&[
        "create",
        "--path",
        odd.to_str().unwrap(),
        "--python",
        python(),
    ]);
    assert!(
        err.contains(
            "ev\\u{1b}[31mil\\nx` cannot hold an environment: it holds a control character"
        ),
        "{err}"
    );
    assert!(!odd.exists());
    // Nor `:`, which would split the environment's `bin` on PATH (found by exploratory testing: `pip`
    // in a session then was the base interpreter's, and installed there, uncaptured). Nor where an
    // environment is moved.
    let colon = b.work.join("a:b");
    let err = b.fails(&[
        "create",
        "--path",
        colon.to_str().unwrap(),
        "--python",
        python(),
    ]);
    assert!(err.contains("it holds `:`"), "{err}");
    assert!(!colon.exists());
    let env = b.create_path_env("plain");
    let err = b.fails(&["move", "-e", env.to_str().unwrap(), colon.to_str().unwrap()]);
    assert!(err.contains("it holds `:`"), "{err}");
    assert!(!colon.exists() && env.join("pyvenv.cfg").is_file());
}

#[test]
fn non_utf8_file_name_is_refused_without_losing_anything() {
    use std::os::unix::ffi::OsStrExt;
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let env_s = env.to_str().unwrap();
    let history_before = b.json(&["log", "-e", env_s]);
    let bad = env.join(std::ffi::OsStr::from_bytes(b"lib/bad-\xff-name.py"));
    fs::write(&bad, "x").unwrap();
    let err = b.fails(&["snapshot", "-e", env_s]);
    assert!(
        err.contains("lib/bad-\\xff-name.py` has a name that is not UTF-8")
            && err.contains("rename it"),
        "{err}"
    );
    assert_eq!(b.json(&["log", "-e", env_s]), history_before);
    assert!(bad.exists());
}

/// A file larger than blast's memory is captured, streamed through the hash into the store, and comes
/// back byte for byte (found by exploratory testing: each file was read whole, a 5 GiB one took 5 GiB of
/// memory, and under a limit blast failed with "out of memory").
#[test]
fn a_file_larger_than_the_memory_blast_may_use_is_captured_and_restored() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    let large: Vec<u8> = (0..160_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    fs::write(env.join("model.bin"), &large).unwrap();
    // Data segment (heap) capped below the file's size; the file's mapping does not count.
    let limited = |args: &[&str]| {
        let blast = b.command(args);
        let out = Command::new("prlimit")
            .arg(format!("--data={}", 96 << 20))
            .arg("--")
            .arg(blast.get_program())
            .args(blast.get_args())
            .envs(blast.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .env_remove("BLAST_ENV")
            .current_dir(&b.work)
            .output()
            .expect("prlimit (util-linux) must be installed");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    limited(&["snapshot", "-e", e, "--tag", "model"]);
    limited(&["rollback", "-e", e, "@~1"]);
    assert!(!env.join("model.bin").exists());
    limited(&["rollback", "-e", e, "model"]);
    assert!(fs::read(env.join("model.bin")).unwrap() == large);
    b.assert_verify_clean(&[&env]);
}

/// An object lost from the store (a disk error, a cleanup by hand) that a tagged snapshot needs is named
/// by `verify`, which exits 1, for the whole store and for the environment (found by exploratory
/// testing: verify only rehashed the files there were, said "all good", and rollback sent the user to
/// it). An image that holds the snapshot brings the object back.
#[test]
fn verify_names_an_object_missing_from_the_store() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    let data: String = (0..2000).map(|i| format!("{i}\n")).collect();
    fs::write(env.join("data.txt"), &data).unwrap();
    b.ok(&["snapshot", "-e", e, "--tag", "good"]);
    let image = b.work.join("good.blast");
    b.ok(&[
        "export",
        "-e",
        e,
        "--snapshot",
        "good",
        "-o",
        image.to_str().unwrap(),
    ]);
    fs::remove_file(env.join("data.txt")).unwrap();
    b.ok(&["snapshot", "-e", e, "--tag", "empty"]);
    let ino = |p: &std::path::Path| fs::metadata(p).unwrap().ino();
    b.ok(&["rollback", "-e", e, "good"]);
    let object = b
        .store_files("objects")
        .into_iter()
        .find(|p| ino(p) == ino(&env.join("data.txt")))
        .expect("data.txt is hardlinked from the store");
    b.ok(&["rollback", "-e", e, "empty"]);
    fs::remove_file(&object).unwrap();

    for args in [&["verify"][..], &["verify", "-e", e]] {
        let out = b.run(&[args, &["--json"]].concat());
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let missing = report["missing"].as_array().unwrap();
        assert_eq!(missing.len(), 1, "{report}");
        let missing = missing[0].as_str().unwrap();
        assert!(
            missing.contains("`data.txt`") && missing.contains(&format!("of `{e}`")),
            "{missing}"
        );
    }
    let text = String::from_utf8_lossy(&b.run(&["verify"]).stdout).into_owned();
    assert!(
        text.contains("MISSING") && text.contains("blast import"),
        "{text}"
    );
    // A sync into a new directory of a snapshot whose tiny file's object is lost names the object,
    // not a file of the store.
    let tiny = b.create_path_env("tiny");
    fs::write(tiny.join("note.txt"), "a note\n").unwrap();
    b.ok(&["snapshot", "-e", tiny.to_str().unwrap()]);
    fs::remove_file(b.object_file(b"a note\n", false)).unwrap();
    let copy = b.work.join("copy");
    let err = b.fails(&[
        "sync",
        "--from",
        tiny.to_str().unwrap(),
        "--to",
        copy.to_str().unwrap(),
    ]);
    assert!(
        err.contains(&format!(
            "object {} is missing from the store: run `blast verify`",
            blake3::hash(b"a note\n").to_hex()
        )),
        "{err}"
    );
    assert!(!copy.exists());
    let object = b.object_file(b"a note\n", false);
    fs::write(&object, "a note\n").unwrap();
    fs::set_permissions(&object, fs::Permissions::from_mode(0o444)).unwrap();

    b.ok(&["import", image.to_str().unwrap()]);
    b.assert_verify_clean(&[&env]);
    b.ok(&["rollback", "-e", e, "good"]);
    assert_eq!(fs::read_to_string(env.join("data.txt")).unwrap(), data);
}

#[test]
fn verify_names_a_corrupt_object_and_drifted_file() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let env_s = env.to_str().unwrap();
    pip_install(&env, &["blastdemo==1.0.0"]);
    b.ok(&["snapshot", "-e", env_s]);
    // Materialized from the store, the module is a hardlink of its object.
    b.ok(&["rollback", "-e", env_s]);
    b.ok(&["rollback", "-e", env_s]);

    // Flip one byte of the object behind a hardlinked module (so the env file drifts too).
    let init = env.join("lib/python3.11/site-packages/blastdemo/__init__.py");
    let object = b
        .store_files("objects")
        .into_iter()
        .find(|p| fs::metadata(p).unwrap().ino() == fs::metadata(&init).unwrap().ino())
        .expect("module is hardlinked from the store");
    let mut perms = fs::metadata(&object).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    fs::set_permissions(&object, perms.clone()).unwrap();
    let mut bytes = fs::read(&object).unwrap();
    bytes[10] ^= 0x20;
    fs::write(&object, bytes).unwrap();
    // Its mode back, as a write in place by root leaves it.
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
    fs::set_permissions(&object, perms).unwrap();
    // An environment made after the damage links the damaged object, and its stat cache records the
    // file as written: only its bytes tell (found by exploratory testing: after the object was
    // repaired, `rollback --force HEAD` there said "already at" and left the damaged file).
    // Two of them, so that its inode keeps several links (whose ctime the stat cache cannot trust)
    // once the object and the first environment's file are replaced.
    let other = b.work.join("other");
    let other_s = other.to_str().unwrap();
    let third = b.work.join("third");
    // Past the window in which a stat is too fresh to be trusted.
    std::thread::sleep(std::time::Duration::from_millis(200));
    for made in [&other, &third] {
        b.ok(&["sync", "--from", env_s, "--to", made.to_str().unwrap()]);
    }

    let out = b.run(&["verify", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let corrupt = report["corrupt"].as_array().unwrap();
    assert_eq!(corrupt.len(), 1, "{report}");
    let named = corrupt[0].as_str().unwrap();
    assert!(
        named.contains(object.file_name().unwrap().to_str().unwrap())
            && named.contains("(`lib/python3.11/site-packages/blastdemo/__init__.py` as layer")
            && named.contains("HEAD of `"),
        "{named}"
    );
    for verdict in report["envs"].as_array().unwrap() {
        assert_eq!(
            verdict["drifted"][0]["path"], "lib/python3.11/site-packages/blastdemo/__init__.py",
            "{report}"
        );
    }
    let text = b.run(&["verify"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("CORRUPT"), "{text}");
    assert!(
        text.contains("remove it from the store") && text.contains("--force-reinstall"),
        "{text}"
    );
    assert!(
        text.contains(&format!("blast rollback -e {env_s} --force HEAD"))
            && text.contains(&format!("blast snapshot -e {env_s}")),
        "{text}"
    );

    // The advice works: the object removed, a reinstall stores the right bytes again, and a forced
    // rollback to HEAD puts them back in the other environment.
    fs::remove_file(&object).unwrap();
    b.force_reinstall(env_s, "blastdemo==1.0.0");
    let status = b.json(&["status", "-e", other_s]);
    assert_eq!(
        status["uncaptured"][0]["path"], "lib/python3.11/site-packages/blastdemo/__init__.py",
        "{status}"
    );
    b.ok(&["rollback", "-e", other_s, "--force", "HEAD"]);
    b.ok(&["rollback", "-e", third.to_str().unwrap(), "--force", "HEAD"]);
    b.assert_verify_clean(&[&env, &other, &third]);
    let (ok, out) = env_python(&env, "import blastdemo");
    assert!(ok, "{out}");
}

#[test]
fn a_busy_store_makes_blast_wait_and_say_so() {
    let b = Blast::new();
    b.create_path_env("venv");
    // Another process holds the store exclusively (as `blast clean`'s sweep does) for two seconds.
    let holder = Command::new("flock")
        .arg("--exclusive")
        .arg(b.home.join("store.lock"))
        .args(["sleep", "2"])
        .spawn()
        .expect("flock (util-linux)");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = b.run(&["list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("waiting for another blast process to release the store"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("venv"));
    let mut holder = holder;
    holder.wait().unwrap();
}

#[test]
fn a_deleted_env_directory_is_restored_by_a_forced_rollback_to_head() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let env_s = env.to_str().unwrap();
    pip_install(&env, &["blastdep"]);
    b.ok(&["snapshot", "-e", env_s]);
    let before = exec_bits_only(&read_tree(&env));
    fs::remove_dir_all(&env).unwrap();
    for command in ["status", "snapshot", "diff"] {
        let err = b.fails(&[command, "-e", env_s]);
        assert!(
            err.contains("is gone") && err.contains("--force HEAD") && err.contains("blast remove"),
            "{err}"
        );
    }
    let err = b.fails(&["rollback", "-e", env_s, "HEAD"]);
    assert!(err.contains("--force"), "{err}");
    let history = b.log(env_s).len();
    b.ok(&["rollback", "-e", env_s, "--force", "HEAD"]);
    assert_same_tree(&before, &exec_bits_only(&read_tree(&env)));
    let (ok, out) = env_python(&env, "import blastdep");
    assert!(ok, "{out}");
    // A repair is no move: no history entry, so a plain rollback still goes back a step (an entry
    // made `@~1` HEAD itself).
    assert_eq!(b.log(env_s).len(), history);
    b.ok(&["rollback", "-e", env_s]);
    assert!(!env_python(&env, "import blastdep").0);
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    for i in 0..3 {
        fs::write(env.join(format!("lib/f{i}.txt")), "x").unwrap();
        b.ok(&["snapshot", "-e", env.to_str().unwrap()]);
    }
    let mut child = b
        .command(&["log", "-e", env.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn activate_script_puts_the_env_first_and_deactivate_restores() {
    let b = Blast::new();
    let env = b.create_path_env("proj-env");
    let script = format!(
        "PS1='$ '; old=\"$PATH\"; source '{0}/bin/activate'; echo \"$VIRTUAL_ENV\"; command -v python; \
         echo \"$PS1\"; python -c 'import sys; print(sys.prefix)'; deactivate; \
         [ \"$PATH\" = \"$old\" ] && echo restored; echo \"[$VIRTUAL_ENV]\"",
        env.display()
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], env.to_str().unwrap(), "{text}");
    assert_eq!(lines[1], env.join("bin/python").to_str().unwrap(), "{text}");
    assert_eq!(lines[2], "(proj-env) $ ", "{text}");
    assert_eq!(lines[3], env.to_str().unwrap(), "{text}");
    assert_eq!(lines[4], "restored", "{text}");
    assert_eq!(lines[5], "[]", "{text}");
}

#[test]
fn linking_the_same_objects_elsewhere_keeps_other_envs_stat_caches_valid() {
    let b = Blast::new();
    let src = b.create_path_env("src");
    pip_install(&src, &["blastdemo==1.0.0"]);
    b.ok(&["snapshot", "-e", src.to_str().unwrap()]);
    let a = b.work.join("a");
    b.ok(&[
        "sync",
        "--from",
        src.to_str().unwrap(),
        "--to",
        a.to_str().unwrap(),
    ]);
    std::thread::sleep(std::time::Duration::from_millis(100));
    b.ok(&["snapshot", "-e", a.to_str().unwrap()]);
    // Linking the same objects into another env moves their shared ctime…
    b.ok(&[
        "sync",
        "--from",
        src.to_str().unwrap(),
        "--to",
        b.work.join("c").to_str().unwrap(),
    ]);
    // …which must not make `a`'s files look changed.
    let snap = b.json(&["snapshot", "-e", a.to_str().unwrap()]);
    assert!(snap["snapshot"].is_null(), "{snap}");
    assert_eq!(snap["files_hashed"], 0, "{snap}");
}

#[test]
fn the_stat_cache_never_hides_a_change_and_a_broken_one_costs_only_rehashing() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let env_s = env.to_str().unwrap();
    let snapshot = |expect_new: bool| {
        let report = b.json(&["snapshot", "-e", env_s]);
        assert_eq!(!report["snapshot"].is_null(), expect_new, "{report}");
        report
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    snapshot(false);
    let caches: Vec<_> = fs::read_dir(b.home.join("stat-caches"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(caches.len(), 1, "one cache file per environment");

    // Changes that leave every cached file's stat as it was: the cache alone cannot see them.
    fs::create_dir(env.join("share")).unwrap();
    let added = snapshot(true);
    assert_eq!(added["added"], 1, "{added}");
    std::os::unix::fs::symlink("python", env.join("bin/py")).unwrap();
    snapshot(true);
    fs::remove_file(env.join("bin/py")).unwrap();
    std::os::unix::fs::symlink("python3", env.join("bin/py")).unwrap();
    let retargeted = snapshot(true);
    assert_eq!(retargeted["modified"], 1, "{retargeted}");
    let log = b.json(&["log", "-e", env_s]);
    assert_eq!(log.as_array().unwrap().len(), 4, "{log}");

    // A garbled cache reads as empty: every file is read again, nothing else changes.
    fs::write(&caches[0], b"\x03\x01garbage").unwrap();
    let reread = snapshot(false);
    assert!(reread["files_hashed"].as_u64().unwrap() > 0, "{reread}");
    std::thread::sleep(std::time::Duration::from_millis(100));
    snapshot(false);
    assert_eq!(snapshot(false)["files_hashed"], 0);
    b.ok(&["rollback", "-e", env_s, "@~3"]);
    assert!(!env.join("share").exists() && !env.join("bin/py").exists());

    // Directories whose listing the cache holds (read over 50 ms after their last change) are not
    // read again while their stat stays; an entry added moves that stat, even with the mtime set back.
    std::thread::sleep(std::time::Duration::from_millis(100));
    snapshot(false);
    let lib = env.join("lib");
    let mtime = fs::metadata(&lib).unwrap().modified().unwrap();
    fs::write(lib.join("planted.txt"), "x").unwrap();
    fs::File::open(&lib).unwrap().set_modified(mtime).unwrap();
    let planted = snapshot(true);
    assert_eq!(planted["added"], 1, "{planted}");

    b.ok(&["remove", env_s]);
    assert!(!caches[0].exists(), "the cache goes with its environment");
}

/// An apply does not wait for the disk: its stat cache names the boot whose page cache holds what it
/// wrote, and after a reboot (a power cut may have torn those files with their stat intact) the cache
/// is not trusted: the next scan reads every file.
#[test]
fn after_a_reboot_an_environment_blast_wrote_without_a_sync_is_read_whole_once() {
    let b = Blast::new();
    let src = b.create_path_env("src");
    pip_install(&src, &["blastdemo==1.0.0"]);
    b.ok(&["snapshot", "-e", src.to_str().unwrap()]);
    let caches = || -> BTreeSet<PathBuf> {
        fs::read_dir(b.home.join("stat-caches"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    let src_cache = caches();
    let env = b.work.join("synced");
    let env_s = env.to_str().unwrap();
    b.ok(&["sync", "--from", src.to_str().unwrap(), "--to", env_s]);
    // The files the apply wrote within the racy window are read once more, then the cache knows all.
    std::thread::sleep(std::time::Duration::from_millis(100));
    b.ok(&["snapshot", "-e", env_s]);
    let unchanged = b.json(&["snapshot", "-e", env_s]);
    assert_eq!(unchanged["files_hashed"], 0, "{unchanged}");

    // SPEC §11: version, the stamp (flag, snapshot, digest), then the mark: a flag and the boot's id.
    let cache_path = match &caches().difference(&src_cache).collect::<Vec<_>>()[..] {
        [path] => (*path).clone(),
        other => panic!("one new cache, the synced environment's: {other:?}"),
    };
    let mut cache = fs::read(&cache_path).unwrap();
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let boot: Vec<u8> = boot
        .trim()
        .replace('-', "")
        .as_bytes()
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect();
    assert_eq!((cache[0], cache[1]), (7, 1), "a stamped cache of version 7");
    assert_eq!(cache[66], 1, "marked as written without a sync");
    assert_eq!(cache[67..83], boot[..], "in this boot");

    // The same cache as written in a boot before this one.
    cache[67] ^= 0xff;
    let body = cache.len() - 4;
    let checksum = crc32fast::hash(&cache[..body]);
    cache[body..].copy_from_slice(&checksum.to_le_bytes());
    fs::write(&cache_path, &cache).unwrap();
    let files = read_tree(&env)
        .values()
        .filter(|entry| matches!(entry, DiskEntry::File { .. }))
        .count();
    let after_reboot = b.json(&["snapshot", "-e", env_s]);
    assert!(after_reboot["snapshot"].is_null(), "{after_reboot}");
    assert_eq!(after_reboot["files_hashed"], files, "{after_reboot}");
    // Read back in this boot, the files are as the disk has them: the new cache is not marked.
    assert_eq!(fs::read(&cache_path).unwrap()[66], 0);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(b.json(&["snapshot", "-e", env_s])["files_hashed"], 0);

    // A `status` keeps what it read too, or every `status` after a reboot would read every file.
    fs::write(&cache_path, &cache).unwrap();
    b.ok(&["status", "-e", env_s]);
    assert_eq!(fs::read(&cache_path).unwrap()[66], 0);
    assert_eq!(b.json(&["snapshot", "-e", env_s])["files_hashed"], 0);
}

/// Found by exploratory testing: `remove` deleted whatever was at the environment's path, the user's
/// files made there since included, and an environment a process was running from.
#[test]
fn remove_refuses_to_lose_what_no_snapshot_has_or_pull_a_running_env_away_unless_forced() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();

    fs::write(env.join("notes.txt"), "mine").unwrap();
    let err = b.fails(&["remove", e]);
    assert!(
        err.contains("no snapshot of it has")
            && err.contains("notes.txt")
            && err.contains("--force"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(env.join("notes.txt")).unwrap(), "mine");
    b.ok(&["snapshot", "-e", e]);

    // A process running from it.
    let mut sleeper = Command::new(env.join("bin/python"))
        .args(["-c", "import time; time.sleep(60)"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let err = b.fails(&["remove", e]);
    assert!(
        err.contains("processes are running") && err.contains(&sleeper.id().to_string()),
        "{err}"
    );
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert!(env.join("pyvenv.cfg").is_file());

    // The directory gone and another made at its path: that one is not blast's to remove.
    fs::remove_dir_all(&env).unwrap();
    fs::create_dir_all(env.join("src")).unwrap();
    fs::write(env.join("src/thesis.tex"), "chapter 1").unwrap();
    let err = b.fails(&["remove", e]);
    assert!(err.contains("src/thesis.tex"), "{err}");
    assert!(env.join("src/thesis.tex").is_file());
    // A file where the directory was.
    fs::remove_dir_all(&env).unwrap();
    fs::write(&env, "hi").unwrap();
    let err = b.fails(&["remove", e]);
    assert!(err.contains("a file, where the directory was"), "{err}");
    assert_eq!(fs::read_to_string(&env).unwrap(), "hi");
    assert_eq!(b.json(&["list"]).as_array().unwrap().len(), 1);

    b.ok(&["remove", e, "--force"]);
    assert!(!env.exists());
    assert_eq!(b.json(&["list"]).as_array().unwrap().len(), 0);

    // Nothing of the user's in it: removed without --force; a directory already gone too.
    let clean = b.create_path_env("clean");
    b.ok(&["remove", clean.to_str().unwrap()]);
    assert!(!clean.exists());
    let gone = b.create_path_env("gone");
    fs::remove_dir_all(&gone).unwrap();
    b.ok(&["remove", gone.to_str().unwrap()]);
}

/// Found by exploratory testing: a rollback to a snapshot whose object was lost wrote the journal,
/// failed in the apply, and every later command failed finishing it, `remove` and `verify` included.
#[test]
fn a_move_needing_a_lost_object_changes_nothing_and_an_unfinishable_one_can_be_removed() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    let content: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
    fs::write(env.join("big.bin"), &content).unwrap();
    b.ok(&["snapshot", "-e", e, "--tag", "big"]);
    b.ok(&["rollback", "-e", e]);
    let before = read_tree(&env);
    fs::remove_file(b.object_file(&content, false)).unwrap();

    let err = b.fails(&["rollback", "-e", e, "big"]);
    assert!(
        err.contains("missing from the store")
            && err.contains("big.bin")
            && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(read_tree(&env), before);
    assert_eq!(b.log(e).len(), 3, "no history entry for the refused move");
    let status = b.json(&["status", "-e", e]);
    assert_eq!(
        status["uncaptured"].as_array().map(Vec::len),
        Some(0),
        "{status}"
    );

    // A move killed once its journal was written, whose object is lost after: it cannot be finished,
    // and the environment can still be removed.
    let other = b.create_path_env("other");
    let o = other.to_str().unwrap();
    fs::write(other.join("big.bin"), &content).unwrap();
    b.ok(&["snapshot", "-e", o, "--tag", "big"]);
    b.ok(&["rollback", "-e", o]);
    b.crash(&["rollback", "-e", o, "big"], "journal-written");
    fs::remove_file(b.object_file(&content, false)).unwrap();
    let err = b.fails(&["status", "-e", o]);
    assert!(err.contains("missing from the store"), "{err}");
    b.ok(&["remove", o]);
    assert!(!other.exists());

    // A sync into a new directory that fails on the way is undone: no directory, no environment.
    let third = b.create_path_env("third");
    let t = third.to_str().unwrap();
    fs::write(third.join("big.bin"), &content).unwrap();
    b.ok(&["snapshot", "-e", t]);
    fs::remove_file(b.object_file(&content, false)).unwrap();
    let copy = b.work.join("copy");
    let err = b.fails(&["sync", "--from", t, "--to", copy.to_str().unwrap()]);
    assert!(err.contains("missing from the store"), "{err}");
    assert!(!copy.exists());
    let listed = b.json(&["list"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    b.ok(&["status", "-e", e]);
}

/// Found by exploratory testing: an environment made inside another one, or inside the store, was
/// taken apart later by the other's rollback or by the store's cleanup.
#[test]
fn a_new_environment_is_refused_inside_another_or_inside_the_store() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let inner = env.join("lib/inner");
    let err = b.fails(&[
        "create",
        "--path",
        inner.to_str().unwrap(),
        "--python",
        python(),
    ]);
    assert!(err.contains("inside the environment"), "{err}");
    let err = b.fails(&[
        "sync",
        "--from",
        env.to_str().unwrap(),
        "--to",
        inner.to_str().unwrap(),
    ]);
    assert!(err.contains("inside the environment"), "{err}");
    let in_store = b.home.join("staging/zz");
    let err = b.fails(&[
        "create",
        "--path",
        in_store.to_str().unwrap(),
        "--python",
        python(),
    ]);
    assert!(err.contains("inside blast's store"), "{err}");
    // A file on the way is named, for `restore --path` as for `create`.
    let file = b.tmp.path().join("a-file");
    fs::write(&file, "").unwrap();
    let under_file = file.join("sub/venv");
    let image = b.tmp.path().join("venv.blast");
    b.ok(&[
        "export",
        "-e",
        env.to_str().unwrap(),
        "-o",
        image.to_str().unwrap(),
    ]);
    for args in [
        vec![
            "create",
            "--path",
            under_file.to_str().unwrap(),
            "--python",
            python(),
        ],
        vec![
            "restore",
            image.to_str().unwrap(),
            "--path",
            under_file.to_str().unwrap(),
        ],
    ] {
        let err = b.fails(&args);
        assert!(
            err.contains(&format!(
                "`{}` on its way is not a directory",
                file.display()
            )),
            "{err}"
        );
    }
    assert!(!inner.exists() && !in_store.exists());
    b.assert_verify_clean(&[&env]);
    assert_eq!(b.json(&["list"]).as_array().unwrap().len(), 1);
    // Named environments live in the store's `envs/`, each at `envs/NAME`, and the path of one gone by
    // hand stays its own. Found by exploratory testing: a path environment could be moved or created at
    // `envs/OTHER`, where `blast create OTHER` then said "pick another path" for a name.
    b.ok(&["create", "named", "--python", python()]);
    let others = b.home.join("envs/other");
    let at_others = others.to_str().unwrap();
    let err = b.fails(&["create", "--path", at_others, "--python", python()]);
    assert!(
        err.contains("where each named environment NAME has `envs/NAME`"),
        "{err}"
    );
    let err = b.fails(&["move", "-e", env.to_str().unwrap(), at_others]);
    assert!(
        err.contains("where each named environment NAME has `envs/NAME`"),
        "{err}"
    );
    let err = b.fails(&["move", "-e", "named", at_others]);
    assert!(
        err.contains("where each named environment NAME has `envs/NAME`"),
        "{err}"
    );
    assert!(!others.exists() && env.is_dir());
    b.ok(&["create", "other", "--python", python()]);
    fs::remove_dir_all(&env).unwrap();
    let err = b.fails(&[
        "create",
        "--path",
        env.to_str().unwrap(),
        "--python",
        python(),
    ]);
    assert!(err.contains("is the path of the environment"), "{err}");
}

/// Found by exploratory testing: a message or a file name with a newline or an escape sequence was
/// printed as it is, which could fake a line of blast's output or recolour the terminal.
#[test]
fn messages_and_file_names_print_with_their_control_characters_escaped() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    fs::write(env.join("evil\n+ fake\u{1b}[31m.txt"), "x").unwrap();
    let message = "fine\nabc123def  fake entry\u{1b}[2J";
    b.ok(&["snapshot", "-e", e, "-m", message]);
    let log = b.ok(&["log", "-e", e]);
    assert!(!log.contains('\u{1b}'), "{log:?}");
    assert!(
        log.contains("fine\\nabc123def  fake entry\\u{1b}[2J"),
        "{log}"
    );
    let diff = b.ok(&["diff", "-e", e, "@~1", "HEAD", "--files"]);
    assert!(!diff.contains('\u{1b}'), "{diff:?}");
    assert!(diff.contains("evil\\n+ fake\\u{1b}[31m.txt"), "{diff}");
    // JSON keeps them as they are.
    assert_eq!(b.log(e)[0]["message"], message);
}

/// `blast tag`: lists an environment's tags (with the history entry that made each snapshot), tags HEAD
/// or an earlier snapshot, moves a tag to another snapshot only with `--force`, deletes all the tags it
/// is given or, when one is unknown, none; rollback follows a tag wherever it was moved.
#[test]
fn tags_are_listed_moved_only_when_asked_and_deleted_all_or_none() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    let created = b.json(&["status", "-e", e])["head"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(b.json(&["tag", "-e", e])["tags"], serde_json::json!([]));
    pip_install(&env, &["blastdemo==1.0.0"]);
    let demo = b.json(&["snapshot", "-e", e, "-m", "demo"])["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();

    let set = b.json(&["tag", "-e", e, "stable"]);
    assert_eq!(set[0]["snapshot"], demo.as_str(), "HEAD by default: {set}");
    assert!(set[0]["was"].is_null(), "{set}");
    b.json(&["tag", "-e", e, "base", "@~1"]);
    let listed = b.json(&["tag", "-e", e]);
    let tags = listed["tags"].as_array().unwrap();
    assert_eq!(tags.len(), 2, "{listed}");
    assert_eq!(
        (&tags[0]["tag"], &tags[0]["snapshot"], &tags[0]["head"]),
        (&"base".into(), &created.as_str().into(), &false.into()),
        "{listed}"
    );
    assert_eq!(tags[0]["operation"], "create");
    assert_eq!(
        (&tags[1]["tag"], &tags[1]["head"], &tags[1]["message"]),
        (&"stable".into(), &true.into(), &"demo".into()),
        "{listed}"
    );
    assert_eq!(tags[1]["packages"], 2, "{listed}");
    // A rollback to a tagged snapshot only goes back to it: the entry that made it stays its maker.
    b.ok(&["rollback", "-e", e, "base"]);
    b.ok(&["rollback", "-e", e, "stable"]);
    let listed = b.json(&["tag", "-e", e]);
    assert_eq!(listed["tags"][0]["operation"], "create", "{listed}");
    assert_eq!(listed["tags"][1]["message"], "demo", "{listed}");
    let text = b.ok(&["tag", "-e", e]);
    assert!(
        text.contains("stable") && text.contains(&format!("{} (HEAD)", &demo[..12])),
        "{text}"
    );

    // Tagging the snapshot a tag names already changes nothing; another one needs --force.
    let again = b.json(&["tag", "-e", e, "stable"]);
    assert_eq!(again[0]["was"], demo.as_str());
    let err = b.fails(&["tag", "-e", e, "stable", "base"]);
    assert!(
        err.contains("tag `stable` already names snapshot") && err.contains("--force stable"),
        "{err}"
    );
    assert_eq!(
        b.json(&["tag", "-e", e])["tags"][1]["snapshot"],
        demo.as_str()
    );
    let moved = b.json(&["tag", "-e", e, "--force", "stable", "base"]);
    assert_eq!(moved[0]["snapshot"], created.as_str(), "{moved}");
    assert_eq!(moved[0]["was"], demo.as_str(), "{moved}");
    b.ok(&["rollback", "-e", e, "stable"]);
    assert_eq!(b.json(&["status", "-e", e])["head"], created.as_str());

    // Deleting: all or none.
    let err = b.fails(&["tag", "-e", e, "--delete", "base", "nope"]);
    assert!(err.contains("has no tag `nope`"), "{err}");
    assert_eq!(
        b.json(&["tag", "-e", e])["tags"].as_array().unwrap().len(),
        2
    );
    let deleted = b.json(&["tag", "-e", e, "-d", "base", "stable"]);
    assert_eq!(deleted.as_array().unwrap().len(), 2, "{deleted}");
    assert!(deleted[0]["snapshot"].is_null(), "{deleted}");
    assert_eq!(b.json(&["tag", "-e", e])["tags"], serde_json::json!([]));
    let err = b.fails(&["rollback", "-e", e, "stable"]);
    assert!(err.contains("no snapshot matching `stable`"), "{err}");

    for bad in [
        "HEAD",
        "has space",
        "@~1",
        "abcd",
        "-x",
        ".",
        "..",
        ".hidden",
        "web.blast",
    ] {
        let err = b.fails(&["tag", "-e", e, "--", bad]);
        assert!(err.contains("is not valid"), "{bad}: {err}");
    }
    let err = b.fails(&["tag", "-e", e, "x", "0123456789ab"]);
    assert!(err.contains("no snapshot matching"), "{err}");
}

/// `--python 3.X` goes past interpreters that cannot run (a pyenv shim for a version pyenv has not
/// selected: "command not found", exit 127) or that are another version, to pyenv's own installs;
/// when nothing fits, the error names what was tried.
#[test]
fn a_version_request_skips_interpreters_that_fail_or_differ() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let b = Blast::new();
    let real = python();
    let out = Command::new(real)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .unwrap();
    let minor = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let shims = b.work.join("shims");
    fs::create_dir_all(&shims).unwrap();
    let shim = shims.join(format!("python{minor}"));
    fs::write(
        &shim,
        format!("#!/bin/sh\necho 'pyenv: python{minor}: command not found' >&2\nexit 127\n"),
    )
    .unwrap();
    fs::set_permissions(&shim, fs::Permissions::from_mode(0o755)).unwrap();
    // A `python3.99` that is really the test's interpreter.
    symlink(real, shims.join("python3.99")).unwrap();
    let pyenv = b.work.join("pyenv");
    let installed = pyenv.join(format!("versions/{minor}.99/bin"));
    fs::create_dir_all(&installed).unwrap();
    symlink(real, installed.join(format!("python{minor}"))).unwrap();
    let create = |path: &str, request: &str, pyenv_root: &std::path::Path| {
        b.command(&["create", "--path", path, "--python", request, "--json"])
            .env("PATH", &shims)
            .env("PYENV_ROOT", pyenv_root)
            .env("HOME", b.work.join("home"))
            .env_remove("UV_PYTHON_INSTALL_DIR")
            .output()
            .unwrap()
    };

    let env = b.work.join("found");
    let out = create(env.to_str().unwrap(), &minor, &pyenv);
    assert_succeeded(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["python"].as_str().unwrap().contains(real),
        "{report}"
    );
    let (ok, version) = env_python(&env, "import sys; print('%d.%d' % sys.version_info[:2])");
    assert!(ok && version.trim() == minor, "{version}");

    // Another version under the requested name is no match.
    let out = create(b.work.join("x").to_str().unwrap(), "3.99", &pyenv);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not 3.99"), "{err}");
    // Without pyenv's install, the shim's own answer is the error.
    let out = create(
        b.work.join("y").to_str().unwrap(),
        &minor,
        &b.work.join("none"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("command not found"), "{err}");
    assert!(!b.work.join("x").exists() && !b.work.join("y").exists());
    // Another release than pyenv has: the error offers the one there is.
    let out = create(
        b.work.join("z").to_str().unwrap(),
        &format!("{minor}.98"),
        &pyenv,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("no Python {minor}.98"))
            && err.contains(&format!("installed by pyenv or uv: {minor}.99")),
        "{err}"
    );
    let out = create(b.work.join("z").to_str().unwrap(), "2.7", &pyenv);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Python 3 only"), "{err}");
    // An empty PYENV_ROOT is no root: `./versions` of the working directory is never run.
    let planted = b.work.join(format!("versions/{minor}.97/bin"));
    fs::create_dir_all(&planted).unwrap();
    symlink(real, planted.join(format!("python{minor}"))).unwrap();
    let out = create(
        b.work.join("z").to_str().unwrap(),
        &minor,
        std::path::Path::new(""),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!b.work.join("z").exists());
}

/// `blast completions SHELL` prints a script the shell accepts, naming every command; it needs no store.
#[test]
fn completion_scripts_parse_in_their_shells() {
    use std::io::Write;
    let b = Blast::new();
    for shell in ["bash", "zsh", "fish"] {
        // With BLAST_HOME set (the test's own store): a store opened would show there.
        let out = b
            .command(&["completions", shell])
            .env_remove("HOME")
            .output()
            .unwrap();
        assert_succeeded(&out);
        let script = String::from_utf8(out.stdout).unwrap();
        for command in [
            "create", "snapshot", "squash", "tag", "rollback", "install", "push",
        ] {
            assert!(script.contains(command), "{shell}: no `{command}`");
        }
        // Nor the hidden prompt hook of sessions (found by exploratory testing).
        assert!(!script.contains("__session-hook"), "{shell}");
        let mut check = Command::new(shell)
            .arg("-n")
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{shell} must be installed (scripts/setup): {e}"));
        check
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let checked = check.wait_with_output().unwrap();
        assert!(
            checked.status.success(),
            "{shell} -n: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
    }
    assert!(!b.home.exists(), "no store was made");
}

/// The cached answer for a shim follows what selects the version behind it: with `PYENV_ROOT` unset,
/// pyenv reads `~/.pyenv/version` (`pyenv global`), and a change there is a new interpreter (found by
/// exploratory testing: the cache kept answering with the old one).
#[test]
fn a_shim_is_asked_again_when_pyenv_global_changes() {
    use std::os::unix::fs::PermissionsExt;
    let other = "/usr/bin/python3.11";
    if !std::path::Path::new(other).exists()
        || std::fs::canonicalize(other).unwrap() == std::fs::canonicalize(python()).unwrap()
    {
        eprintln!("skipping: needs a second interpreter at {other}");
        return;
    }
    let b = Blast::new();
    let home = b.work.join("home");
    fs::create_dir_all(home.join(".pyenv")).unwrap();
    fs::write(home.join(".pyenv/version"), "first\n").unwrap();
    let shim = b.work.join("python3");
    fs::write(
        &shim,
        format!(
            "#!/bin/sh\nif grep -q second \"$HOME/.pyenv/version\"; then exec {other} \"$@\"; fi\nexec {} \"$@\"\n",
            python()
        ),
    )
    .unwrap();
    fs::set_permissions(&shim, fs::Permissions::from_mode(0o755)).unwrap();
    let create = |name: &str| -> serde_json::Value {
        let out = b
            .command(&["create", name, "--python", shim.to_str().unwrap(), "--json"])
            .env("HOME", &home)
            .env_remove("PYENV_ROOT")
            .env_remove("PYENV_VERSION")
            .output()
            .unwrap();
        assert_succeeded(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert!(create("one")["python"].as_str().unwrap().contains(python()));
    fs::write(home.join(".pyenv/version"), "second\n").unwrap();
    let two = create("two");
    assert!(two["python"].as_str().unwrap().contains(other), "{two}");
}

/// uv locks an environment through an empty `.lock` at its root while it runs: not content, so a
/// `uv pip install` by hand captures its packages only, and one that changes nothing leaves nothing
/// to capture (found by exploratory testing: every uv run in a session made a layer of `.lock`).
#[test]
fn uvs_lock_file_at_the_root_is_not_captured() {
    let Some(uv) = uv_on_path() else {
        return;
    };
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let env_s = env.to_str().unwrap();
    let uv_install = || {
        let out = Command::new(&uv)
            .args(["pip", "install", "--no-index", "--find-links"])
            .arg(wheels())
            .arg("--python")
            .arg(env.join("bin/python"))
            .arg("blastbase==1.0.0")
            .env("UV_CACHE_DIR", b.work.join("uv-cache"))
            .output()
            .unwrap();
        assert_succeeded(&out);
    };
    uv_install();
    assert_eq!(fs::metadata(env.join(".lock")).unwrap().len(), 0);
    b.ok(&["snapshot", "-e", env_s]);
    let files = b.json(&["diff", "-e", env_s, "@~1", "HEAD", "--files"]);
    let paths = files.to_string();
    assert!(paths.contains("blastbase"), "{paths}");
    assert!(!paths.contains(".lock"), "{paths}");
    uv_install();
    assert!(b.json(&["snapshot", "-e", env_s])["snapshot"].is_null());
    b.assert_verify_clean(&[&env]);

    // A `.lock` with content, or one below the root, is the user's.
    fs::write(env.join(".lock"), "mine").unwrap();
    fs::write(env.join("lib/.lock"), "").unwrap();
    let status = b.json(&["status", "-e", env_s]).to_string();
    assert!(
        status.contains("\".lock\"") && status.contains("lib/.lock"),
        "{status}"
    );
}

/// An environment moved by hand is named as the likely one when its new place is asked about (found by
/// exploratory testing: `status` there said only "no blast environment").
#[test]
fn a_moved_environment_is_named_where_it_went() {
    let b = Blast::new();
    fs::create_dir_all(b.work.join("project")).unwrap();
    let env = b.create_path_env("project/.venv");
    let moved = b.work.join("renamed");
    fs::rename(b.work.join("project"), &moved).unwrap();
    let err = b.fails(&["status", "-e", moved.join(".venv").to_str().unwrap()]);
    assert!(
        err.contains("though a virtual environment is there")
            && err.contains(&format!("the directory of `{}` is gone", env.display()))
            && err.contains("moved by hand")
            && err.contains(&format!(
                "`blast move -e ENV {} --force`, naming it, when its files changed since",
                moved.join(".venv").display()
            )),
        "{err}"
    );
    // The advice holds once its files changed (found by exploratory testing: the plain `blast move`
    // it gave alone was refused then).
    fs::write(moved.join(".venv/notes.txt"), "mine\n").unwrap();
    let m = moved.join(".venv");
    assert!(!b.run(&["move", m.to_str().unwrap()]).status.success());
    b.ok(&[
        "move",
        "-e",
        env.to_str().unwrap(),
        m.to_str().unwrap(),
        "--force",
    ]);
    b.ok(&["status", "-e", m.to_str().unwrap()]);
    // A directory holding no virtual environment is only unknown.
    let err = b.fails(&["status", "-e", b.work.to_str().unwrap()]);
    assert!(err.contains("no blast environment `"), "{err}");
}

/// An environment moved by hand, and a new venv made at its old path since: `blast move` takes the moved
/// directory, which holds HEAD, and leaves the new one as it is (found by exploratory testing: the move
/// was refused as "already exists", and so was every other way but moving the new venv away by hand).
#[test]
fn a_move_takes_the_moved_directory_past_a_new_one_at_the_old_path() {
    let b = Blast::new();
    let (env, before, history) = project_with_a_script(&b);
    let e = env.to_str().unwrap();
    let moved = b.work.join("moved");
    fs::rename(&env, &moved).unwrap();
    let made = Command::new(python())
        .args(["-m", "venv", "--without-pip", e])
        .status()
        .unwrap();
    assert!(made.success());
    let new_venv = read_tree(&env);

    // A directory at the target that is not HEAD is still refused, and nothing moves.
    let other = b.work.join("other");
    fs::create_dir_all(other.join("lib")).unwrap();
    let err = b.fails(&["move", "-e", e, other.to_str().unwrap()]);
    assert!(err.contains("already exists"), "{err}");

    let out = b.ok(&["move", "-e", e, moved.to_str().unwrap()]);
    assert!(
        out.contains("taken where it was moved") && out.contains("is left as it is"),
        "{out}"
    );
    assert_eq!(
        read_tree(&env),
        new_venv,
        "the new venv is not blast's to touch"
    );
    assert_same_tree(
        &relocated(&before, &env, &moved),
        &exec_bits_only(&read_tree(&moved)),
    );
    let m = moved.to_str().unwrap();
    assert_eq!(b.log(m).len(), history);
    let status = b.json(&["status", "-e", m]);
    assert!(
        status["uncaptured"].as_array().unwrap().is_empty(),
        "{status}"
    );
    b.assert_verify_clean(&[&moved]);
}

/// A project with an environment at `project/.venv` holding blastdemo (a console script), captured; its
/// directory as it was then; and the length of its history.
fn project_with_a_script(b: &Blast) -> (PathBuf, BTreeMap<String, DiskEntry>, usize) {
    fs::create_dir_all(b.work.join("project")).unwrap();
    let env = b.create_path_env("project/.venv");
    pip_install(&env, &["blastdemo==1.0.0"]);
    let e = env.to_str().unwrap();
    b.ok(&["snapshot", "-e", e]);
    let tree = exec_bits_only(&read_tree(&env));
    (env.clone(), tree, b.log(e).len())
}

/// What must hold of an environment moved from `from` to `to`: its files are those it had, written for
/// the new path, its console script runs, its history is whole, and nothing is left uncaptured.
fn assert_moved(
    b: &Blast,
    from: &Path,
    to: &Path,
    before: &BTreeMap<String, DiskEntry>,
    history: usize,
) {
    assert!(!from.exists(), "{} is still there", from.display());
    assert_same_tree(
        &relocated(before, from, to),
        &exec_bits_only(&read_tree(to)),
    );
    let script = Command::new(to.join("bin/blastdemo")).output().unwrap();
    assert!(
        script.status.success(),
        "{}",
        String::from_utf8_lossy(&script.stderr)
    );
    let (ok, prefix) = env_python(to, "import sys, blastdemo; print(sys.prefix)");
    assert!(ok, "{prefix}");
    assert_eq!(prefix.trim(), to.to_str().unwrap());
    let t = to.to_str().unwrap();
    assert_eq!(b.log(t).len(), history, "a move adds no history entry");
    let status = b.json(&["status", "-e", t]);
    assert_eq!(status["path"], t, "{status}");
    assert!(
        status["uncaptured"].as_array().unwrap().is_empty(),
        "{status}"
    );
    b.assert_verify_clean(&[to]);
}

#[test]
fn move_renames_an_environment_and_writes_its_scripts_for_the_new_path() {
    let b = Blast::new();
    let (env, before, history) = project_with_a_script(&b);
    let e = env.to_str().unwrap();
    let to = b.work.join("elsewhere/deeper/.venv");
    let report = b.json(&["move", "-e", e, to.to_str().unwrap()]);
    assert_eq!(report["way"], "renamed", "{report}");
    assert!(report["rewritten"].as_u64().unwrap() >= 2, "{report}");
    assert_moved(&b, &env, &to, &before, history);
    // The environment works on at its new path: a change is captured, a rollback undoes it.
    let t = to.to_str().unwrap();
    fs::write(to.join("lib/python3.11/site-packages/added.py"), "x = 1\n").unwrap();
    b.ok(&["snapshot", "-e", t]);
    b.ok(&["rollback", "-e", t]);
    assert_same_tree(
        &relocated(&before, &env, &to),
        &exec_bits_only(&read_tree(&to)),
    );
    // Moving it where it is does nothing.
    let again = b.json(&["move", "-e", t, t]);
    assert!(again["way"].is_null(), "{again}");
}

#[test]
fn move_takes_an_environment_moved_by_hand_where_it_went() {
    let b = Blast::new();
    let (env, before, history) = project_with_a_script(&b);
    fs::rename(b.work.join("project"), b.work.join("renamed")).unwrap();
    let to = b.work.join("renamed/.venv");
    let t = to.to_str().unwrap();
    let err = b.fails(&["status", "-e", t]);
    assert!(err.contains(&format!("`blast move {t}`")), "{err}");
    // In the project, as a developer would: `blast status` names the way out, and `blast move .venv`
    // takes the environment whose directory is gone and is found there.
    let in_project = |args: &[&str]| {
        b.command(args)
            .current_dir(b.work.join("renamed"))
            .output()
            .unwrap()
    };
    let status = in_project(&["status"]);
    let err = String::from_utf8_lossy(&status.stderr);
    assert!(
        !status.status.success() && err.contains("`blast move .venv`"),
        "{err}"
    );
    let moved = in_project(&["move", ".venv", "--json"]);
    assert_succeeded(&moved);
    let report: serde_json::Value = serde_json::from_slice(&moved.stdout).unwrap();
    assert_eq!(report["way"], "adopted", "{report}");
    assert_eq!(report["from"], env.to_str().unwrap(), "{report}");
    assert_moved(&b, &env, &to, &before, history);
}

#[test]
fn move_refuses_what_it_could_lose_unless_forced_and_then_keeps_it() {
    let b = Blast::new();
    let (env, before, _) = project_with_a_script(&b);
    let e = env.to_str().unwrap();
    let stray = env.join("lib/python3.11/site-packages/stray.py");
    fs::write(&stray, "x = 1\n").unwrap();
    let to = b.work.join("moved/.venv");
    let t = to.to_str().unwrap();
    let err = b.fails(&["move", "-e", e, t]);
    assert!(
        err.contains("lib/python3.11/site-packages/stray.py") && err.contains("--force"),
        "{err}"
    );
    assert!(
        stray.exists() && !to.exists(),
        "a refused move touches nothing"
    );

    // A path that holds something else is not overwritten, forced or not.
    let occupied = b.work.join("occupied");
    fs::create_dir_all(&occupied).unwrap();
    fs::write(occupied.join("notes.txt"), "mine\n").unwrap();
    let err = b.fails(&["move", "-e", e, occupied.to_str().unwrap(), "--force"]);
    assert!(err.contains("already exists"), "{err}");
    // An environment whose directory was replaced by a symlink to it is not moved link and all (found
    // by exploratory testing: the link was renamed where it led nowhere, and the move left half done).
    let data = b.work.join("data");
    fs::rename(&env, &data).unwrap();
    std::os::unix::fs::symlink("../data", &env).unwrap();
    let err = b.fails(&[
        "move",
        "-e",
        e,
        b.work.join("deep/er/.venv").to_str().unwrap(),
    ]);
    assert!(err.contains("is a symlink to `../data`"), "{err}");
    assert!(!b.work.join("deep").exists());
    // Once the directory moves on, the link leads nowhere: the environment is taken where it went.
    let data2 = b.work.join("data2");
    fs::rename(&data, &data2).unwrap();
    let report = b.json(&["move", "-e", e, data2.to_str().unwrap(), "--force"]);
    assert_eq!(report["way"], "adopted", "{report}");
    fs::remove_file(&env).unwrap();
    b.ok(&["move", "-e", data2.to_str().unwrap(), e, "--force"]);
    assert_eq!(
        fs::read_to_string(occupied.join("notes.txt")).unwrap(),
        "mine\n"
    );

    // Forced, the change moves along, uncaptured.
    let report = b.json(&["move", "-e", e, t, "--force"]);
    assert_eq!(
        report["uncaptured"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    let status = b.json(&["status", "-e", t]);
    let uncaptured = status["uncaptured"].as_array().unwrap();
    assert_eq!(uncaptured.len(), 1, "{status}");
    assert_eq!(
        uncaptured[0]["path"], "lib/python3.11/site-packages/stray.py",
        "{status}"
    );
    fs::remove_file(to.join("lib/python3.11/site-packages/stray.py")).unwrap();
    assert_same_tree(
        &relocated(&before, &env, &to),
        &exec_bits_only(&read_tree(&to)),
    );

    // Moved by hand and changed since: not taken for the environment unless forced.
    let by_hand = b.work.join("by-hand");
    fs::rename(&to, &by_hand).unwrap();
    fs::write(
        by_hand.join("lib/python3.11/site-packages/edited.py"),
        "y = 2\n",
    )
    .unwrap();
    let h = by_hand.to_str().unwrap();
    let err = b.fails(&["move", h]);
    assert!(
        err.contains(&format!("`{t}`")) && err.contains("-e ENV"),
        "{err}"
    );
    // The same from a project with an environment of its own, which could not move onto it anyway
    // (found by exploratory testing: the refusal was about that one, advising to remove `by-hand`).
    b.create_path_env("proj/.venv");
    let out = b
        .command(&["move", h])
        .current_dir(b.work.join("proj"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("`{t}`")) && err.contains("-e ENV") && !err.contains("remove"),
        "{err}"
    );
    let err = b.fails(&["move", "-e", t, h]);
    assert!(
        err.contains("does not hold") && err.contains("edited.py") && err.contains("--force"),
        "{err}"
    );
    let report = b.json(&["move", "-e", t, h, "--force"]);
    assert_eq!(report["way"], "adopted", "{report}");
    let script = Command::new(by_hand.join("bin/blastdemo"))
        .output()
        .unwrap();
    assert!(script.status.success());
    let status = b.json(&["status", "-e", h]);
    assert_eq!(
        status["uncaptured"].as_array().unwrap().len(),
        1,
        "{status}"
    );
    assert!(
        by_hand
            .join("lib/python3.11/site-packages/edited.py")
            .exists()
    );

    // A path spelled through a directory that does not exist is where it leads (found by exploratory
    // testing: `nx/../by-hand` was recorded as written, past the check that no environment has it, and
    // two environments then shared a directory).
    fs::rename(&by_hand, b.work.join("away")).unwrap();
    let other = b.create_path_env("other");
    let spelled = b.work.join("nx/../by-hand");
    let err = b.fails(&[
        "move",
        "-e",
        other.to_str().unwrap(),
        spelled.to_str().unwrap(),
    ]);
    assert!(
        err.contains(&format!("`{h}` is the path of the environment")),
        "{err}"
    );
    assert!(other.join("pyvenv.cfg").is_file() && !by_hand.exists());
}

#[test]
fn move_to_another_filesystem_makes_the_environment_there_from_head() {
    let b = Blast::new();
    let shm = Path::new("/dev/shm");
    let on_other_fs = shm
        .metadata()
        .is_ok_and(|m| m.dev() != b.work.metadata().unwrap().dev());
    if !on_other_fs {
        eprintln!("skipped: /dev/shm is not another filesystem here");
        return;
    }
    let (env, before, history) = project_with_a_script(&b);
    let dest = tempfile::Builder::new()
        .prefix("blast-move-")
        .tempdir_in(shm)
        .unwrap();
    let to = dest.path().join(".venv");
    // Forced, an uncaptured file goes along, as a rename would take it (found by exploratory testing:
    // the copy, made from HEAD, lost it while the report said it was kept).
    let carried = "lib/python3.11/site-packages/carried.py";
    fs::write(env.join(carried), "kept = True\n").unwrap();
    // A directory replaced by a file: its files are gone below a file (found by review: their paths
    // read as "not a directory", which failed the copy).
    let replaced = "lib/python3.11/site-packages/blastdep";
    fs::remove_dir_all(env.join(replaced)).unwrap();
    fs::write(env.join(replaced), "a file now\n").unwrap();
    let report = b.json(&[
        "move",
        "-e",
        env.to_str().unwrap(),
        to.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(report["way"], "copied", "{report}");
    assert_eq!(
        fs::read_to_string(to.join(carried)).unwrap(),
        "kept = True\n"
    );
    assert_eq!(
        fs::read_to_string(to.join(replaced)).unwrap(),
        "a file now\n"
    );
    let status = b.json(&["status", "-e", to.to_str().unwrap()]);
    let uncaptured: Vec<&str> = status["uncaptured"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert!(
        uncaptured.contains(&carried) && uncaptured.contains(&replaced),
        "{status}"
    );
    // A repair adds no history entry.
    b.ok(&["rollback", "-e", to.to_str().unwrap(), "--force", "HEAD"]);
    // And back, then across again, unforced.
    b.ok(&["move", "-e", to.to_str().unwrap(), env.to_str().unwrap()]);
    let report = b.json(&["move", "-e", env.to_str().unwrap(), to.to_str().unwrap()]);
    assert_eq!(report["way"], "copied", "{report}");
    assert_moved(&b, &env, &to, &before, history);
    let leftovers: Vec<_> = fs::read_dir(env.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Import tracking, on, stays on across (found by review: its hook, no content, stayed behind with
    // the old directory).
    b.ok(&["imports", "-e", to.to_str().unwrap(), "--enable"]);
    b.ok(&["move", "-e", to.to_str().unwrap(), env.to_str().unwrap()]);
    let imports = b.json(&["imports", "-e", env.to_str().unwrap()]);
    assert_eq!(imports["tracking"], true, "{imports}");
}

/// Found by exploratory testing: a snapshot whose deepest file fit at its own path, synced to a longer
/// one, was written there (through directory handles), where no capture, `verify`, rollback or program
/// could open it by its path, and the environment was stuck. A path too long for the new root is
/// refused before anything is written, by `sync` and `move` alike.
#[test]
fn a_path_too_long_for_a_new_root_is_refused_before_anything_is_written() {
    let b = Blast::new();
    let env = b.create_path_env("s");
    let mut deep = env.clone();
    let mut len = env.as_os_str().len();
    while len + 1 + 200 + 1 + 10 < 4090 {
        deep.push("d".repeat(200));
        len += 201;
    }
    fs::create_dir_all(&deep).unwrap();
    deep.push("f".repeat(4090 - len - 1));
    fs::write(&deep, "deep").unwrap();
    assert_eq!(deep.as_os_str().len(), 4090);
    let e = env.to_str().unwrap();
    b.ok(&["snapshot", "-e", e]);
    let longer = b.work.join("a-longer-path-for-the-copy");
    let history = b.log(e).len();
    for args in [
        vec!["sync", "--from", e, "--to", longer.to_str().unwrap()],
        vec!["move", "-e", e, longer.to_str().unwrap()],
    ] {
        let err = b.fails(&args);
        assert!(
            err.contains("more than the 4095 Linux can open a file by")
                && err.contains("pick a shorter path"),
            "{args:?}: {err}"
        );
        assert!(!longer.exists(), "{args:?}");
    }
    assert_eq!(b.log(e).len(), history);
    assert_eq!(b.json(&["list"]).as_array().unwrap().len(), 1);
    b.assert_verify_clean(&[&env]);
}

/// Found by exploratory testing: an environment whose directory was replaced by a link to another
/// environment's was read and written through it: `status` showed the other's files, the capture before
/// an install made them its snapshot, and a rollback removed them from the other environment.
#[test]
fn a_directory_replaced_by_a_link_or_a_file_is_refused_and_nothing_goes_through_it() {
    let b = Blast::new();
    let victim = b.create_path_env("victim");
    let v = victim.to_str().unwrap();
    fs::write(victim.join("notes.txt"), "the other's").unwrap();
    b.ok(&["snapshot", "-e", v]);
    let victim_tree = read_tree(&victim);
    // Named: by path, `-e` would follow the link and name the other environment, which is its own.
    b.ok(&["create", "replaced", "--python", python()]);
    let env = b.home.join("envs/replaced");
    let e = "replaced";
    fs::write(env.join("mine.txt"), "mine").unwrap();
    b.ok(&["snapshot", "-e", e]);
    let real = b.work.join("replaced.real");
    fs::rename(&env, &real).unwrap();
    std::os::unix::fs::symlink(&victim, &env).unwrap();
    for args in [
        &["status", "-e", e][..],
        &["snapshot", "-e", e],
        &["rollback", "-e", e],
        &["rollback", "-e", e, "--force", "HEAD"],
        &["diff", "-e", e],
        &["verify", "-e", e],
        &["install", "-e", e, "blastdemo", "--", "--no-index"],
    ] {
        let out = b.run(args);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Another environment's directory is not offered as this one's to take.
        assert!(
            !out.status.success()
                && said.contains(&format!("is a symlink to `{}` now", victim.display()))
                && said.contains(&format!("remove the link (`rm {}`)", env.display()))
                && !said.contains("blast move"),
            "{args:?}: {said}"
        );
    }
    assert_eq!(
        read_tree(&victim),
        victim_tree,
        "nothing went through the link"
    );
    // The history is the store's: shown, with the warning.
    let (log, warning) = b.ok_with_stderr(&["log", "-e", e]);
    assert!(
        log.contains("snapshot") && warning.contains("is a symlink to"),
        "{warning}"
    );

    // A file where the directory was is named as such.
    fs::remove_file(&env).unwrap();
    fs::write(&env, "a file").unwrap();
    let err = b.fails(&["status", "-e", e]);
    assert!(err.contains("is a file now"), "{err}");
    // An emptied directory is no snapshot of the environment's (found by exploratory testing: the
    // capture before an install made it HEAD, and the installer then failed on it).
    fs::remove_file(&env).unwrap();
    fs::create_dir(&env).unwrap();
    let history = b.log(e).len();
    for args in [
        &["snapshot", "-e", e][..],
        &["install", "-e", e, "blastdemo", "--", "--no-index"],
    ] {
        let err = b.fails(args);
        assert!(
            err.contains("holds no virtual environment (no pyvenv.cfg)")
                && err.contains("rollback -e replaced --force HEAD"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(b.log(e).len(), history, "nothing captured");
    // Made again from HEAD.
    b.ok(&["rollback", "-e", e, "--force", "HEAD"]);
    assert_eq!(fs::read_to_string(env.join("mine.txt")).unwrap(), "mine");
    assert_eq!(read_tree(&victim), victim_tree);
    b.assert_verify_clean(&[&env, &victim]);

    // A link to a directory of no environment's (the old one, moved by hand): the way the message
    // names, the link removed, takes it there.
    fs::remove_dir_all(&env).unwrap();
    std::os::unix::fs::symlink(&real, &env).unwrap();
    let err = b.fails(&["status", "-e", e]);
    let take = format!("`blast move -e {e} {}`", real.display());
    assert!(err.contains(&take), "{err}");
    fs::remove_file(&env).unwrap();
    b.ok(&["move", "-e", e, real.to_str().unwrap()]);
    assert_eq!(b.json(&["status", "-e", e])["path"], real.to_str().unwrap());
    b.assert_verify_clean(&[&real, &victim]);
}

/// An environment whose directory was replaced by a symlink to it (moved by hand, a link left in its
/// place): `remove` took the link for a file where the directory was, asking for a snapshot that
/// changed nothing, and `--force` deleted the link only (found by exploratory testing). It is refused,
/// with or without `--force`, naming the ways on, and the way it names works.
#[test]
fn remove_refuses_an_environment_whose_directory_is_a_symlink() {
    let b = Blast::new();
    let env = b.create_path_env("v1");
    let e = env.to_str().unwrap();
    let real = b.work.join("v2");
    fs::rename(&env, &real).unwrap();
    std::os::unix::fs::symlink("v2", &env).unwrap();
    for force in [false, true] {
        let mut args = vec!["remove", e];
        if force {
            args.push("--force");
        }
        let err = b.fails(&args);
        assert!(
            err.contains("is a symlink to `v2`") && err.contains(&format!("rm {e}")),
            "{err}"
        );
        assert!(env.symlink_metadata().unwrap().file_type().is_symlink());
        assert!(real.join("pyvenv.cfg").is_file());
    }
    fs::remove_file(&env).unwrap();
    // `list` says the directory is not there (found by exploratory testing: a plain row).
    assert_eq!(b.json(&["list"])[0]["gone"], true);
    let listed = b.ok(&["list"]);
    assert!(listed.contains("(gone)"), "{listed}");
    b.ok(&["move", "-e", e, real.to_str().unwrap()]);
    b.ok(&["remove", real.to_str().unwrap()]);
    assert!(!real.exists());
    assert_eq!(b.json(&["list"]), serde_json::json!([]));
}

/// A snapshot runs on any release of the interpreter's minor version, so the refusal of another one
/// names the minor version, not the exact release it was made with (found by exploratory testing:
/// "needs cpython 3.12.1" where any 3.12 would do). Skips where blast finds no interpreter of another
/// minor version.
#[test]
fn sync_to_another_python_names_the_minor_version_it_needs() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let ours = b.json(&["status", "-e", env.to_str().unwrap()])["python"]
        .as_str()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .to_owned();
    let ours_minor = ours.rsplit_once('.').unwrap().0.to_owned();
    let target = b.work.join("other");
    let other = ["3.13", "3.12", "3.10", "3.11", "3.9"]
        .into_iter()
        .filter(|minor| *minor != ours_minor)
        .find(|minor| {
            b.run(&[
                "create",
                "--path",
                target.to_str().unwrap(),
                "--python",
                minor,
            ])
            .status
            .success()
        });
    let Some(other) = other else {
        eprintln!(
            "skipping: blast finds no interpreter of another minor version than {ours_minor}"
        );
        return;
    };
    let err = b.fails(&[
        "sync",
        "--from",
        env.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
    ]);
    assert!(
        err.contains(&format!(
            "snapshot needs cpython {ours_minor} (made with {ours})"
        )) && err.contains(&format!("cpython {other}")),
        "{err}"
    );
}

/// Where the store is without `BLAST_HOME`: `$XDG_DATA_HOME/blast` when that is an absolute path, else
/// `~/.local/share/blast` (found by exploratory testing: a relative `XDG_DATA_HOME` put the store
/// under whatever directory a command ran in, which the XDG specification says to ignore).
#[test]
fn the_default_store_follows_xdg_data_home_when_it_is_absolute() {
    let b = Blast::new();
    let home = b.work.join("home");
    let data = b.work.join("data");
    fs::create_dir_all(&home).unwrap();
    for (xdg, store) in [
        (Some(data.as_os_str()), data.join("blast")),
        (
            Some(std::ffi::OsStr::new("relative/data")),
            home.join(".local/share/blast"),
        ),
        (None, home.join(".local/share/blast")),
    ] {
        let mut command = b.command(&["list"]);
        command
            .env_remove("BLAST_HOME")
            .env("HOME", &home)
            .current_dir(&b.work);
        match xdg {
            Some(xdg) => command.env("XDG_DATA_HOME", xdg),
            None => command.env_remove("XDG_DATA_HOME"),
        };
        assert_succeeded(&command.output().unwrap());
        assert!(
            store.join("store-id").is_file(),
            "{xdg:?}: {}",
            store.display()
        );
        assert!(!b.work.join("relative").exists(), "{xdg:?}");
    }
}
