//! Full disks: the store and an environment on a small tmpfs that the test fills. An install, an import
//! and a snapshot each fail with an error that says the filesystem is full, the environment stays as it
//! was and the store keeps exactly what it had; once space is freed, the same operations work. A sync
//! into a new directory on another full tmpfs is undone. Skips, saying why, where the test cannot mount
//! a tmpfs (it needs root).

mod support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

/// A tmpfs mounted by the test, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn new(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs {
            dir: dir.to_owned(),
        })
    }

    /// Writes a filler file until the filesystem refuses more.
    fn fill(&self) -> PathBuf {
        let filler = self.dir.join("filler");
        let mut file = fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        // The last few bytes, in case a chunk did not fit.
        while file.write_all(&[0u8; 512]).is_ok() {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[test]
fn a_full_filesystem_fails_install_import_snapshot_and_sync_cleanly_then_recovers() {
    let b = Blast::new();
    let small = match Tmpfs::new(&b.tmp.path().join("small"), "64m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("skipping: cannot mount a tmpfs here ({why})");
            return;
        }
    };
    // An image made elsewhere, whose objects the small store lacks.
    let elsewhere = Blast::new();
    let source = elsewhere.create_path_env("source");
    pip_install(&source, &["blastbase==1.0.0", "blastextra"]);
    elsewhere.ok(&["snapshot", "-e", source.to_str().unwrap()]);
    let image = elsewhere.work.join("source.blast");
    elsewhere.ok(&[
        "export",
        "-e",
        source.to_str().unwrap(),
        "-o",
        image.to_str().unwrap(),
    ]);

    let home = small.dir.join("home");
    let env = small.dir.join("env");
    let e = env.to_str().unwrap();
    let blast = |args: &[&str]| {
        let out = b.command(args).env("BLAST_HOME", &home).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let wheels = wheels();
    let w = wheels.to_str().unwrap();
    let (code, stderr) = blast(&["create", "--path", e, "--python", python()]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = blast(&["install", "-e", e, "--no-index", "-f", w, "blastdep"]);
    assert_eq!(code, Some(0), "{stderr}");
    // A change made by hand, for the snapshot to fail on.
    let data = env.join("lib/python3.11/site-packages/blastdep/data.bin");
    fs::write(&data, vec![7u8; 2 << 20]).unwrap();
    let store_files = || {
        ["objects", "layers", "snapshots"]
            .iter()
            .map(|kind| store_files_in(&home, kind))
            .collect::<Vec<_>>()
    };
    let tree = read_tree(&env);
    let (before_store, history) = (store_files(), {
        let out = b
            .command(&["log", "-e", e, "--json"])
            .env("BLAST_HOME", &home)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    });

    let filler = small.fill();
    for (what, args) in [
        (
            "install",
            vec![
                "install",
                "-e",
                e,
                "--no-index",
                "-f",
                w,
                "blastdemo==1.0.0",
            ],
        ),
        ("import", vec!["import", image.to_str().unwrap()]),
        ("snapshot", vec!["snapshot", "-e", e]),
    ] {
        let (code, stderr) = blast(&args);
        assert_eq!(code, Some(1), "{what} on a full disk: {stderr}");
        assert!(
            stderr.contains("is full"),
            "{what}: the error does not say the filesystem is full: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_same_tree(&tree, &read_tree(&env));
        assert_eq!(store_files(), before_store, "{what} changed the store");
    }
    // What `clean` would free can be seen on the full disk (found by exploratory testing: even
    // `--dry-run` opened the index for writing, which a full disk refuses).
    let (code, stderr) = blast(&["clean", "--dry-run", "--keep", "1"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(store_files(), before_store);

    // Space again: the same operations work, and the store is whole.
    fs::remove_file(filler).unwrap();

    // A sync into a new directory on another, full filesystem fails on the way and is undone: no
    // directory, no environment.
    let other = Tmpfs::new(&b.tmp.path().join("other"), "1m").expect("a second tmpfs");
    let given = other.dir.join("given");
    fs::create_dir(&given).unwrap();
    let other_filler = other.fill();
    let copy = other.dir.join("copy");
    let (code, stderr) = blast(&["sync", "--from", e, "--to", copy.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is full"), "{stderr}");
    assert!(!copy.exists());
    // Restored into an empty directory it was given, with room for a few of the files: what it wrote
    // there goes, the directory stays.
    let filler = fs::OpenOptions::new()
        .write(true)
        .open(&other_filler)
        .unwrap();
    let len = filler.metadata().unwrap().len();
    filler.set_len(len - (16 << 10)).unwrap();
    drop(filler);
    let (code, stderr) = blast(&[
        "restore",
        image.to_str().unwrap(),
        "--path",
        given.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is full"), "{stderr}");
    assert_eq!(fs::read_dir(&given).unwrap().count(), 0);
    let out = b
        .command(&["list", "--json"])
        .env("BLAST_HOME", &home)
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    fs::remove_file(other_filler).unwrap();
    let out = b
        .command(&["log", "-e", e, "--json"])
        .env("BLAST_HOME", &home)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), history);
    for args in [
        vec!["snapshot", "-e", e],
        vec![
            "install",
            "-e",
            e,
            "--no-index",
            "-f",
            w,
            "blastdemo==1.0.0",
        ],
        vec!["import", image.to_str().unwrap()],
        vec!["verify"],
    ] {
        let (code, stderr) = blast(&args);
        assert_eq!(code, Some(0), "{args:?} after freeing space: {stderr}");
    }
    let (ok, out) = env_python(&env, "import blastdemo; print(blastdemo.VERSION)");
    assert!(ok && out.trim() == "1.0.0", "{out}");
}

/// A rollback that runs out of room where the environment lives (its own filesystem, files copied)
/// leaves no half-written file and is undone, and goes through once the room it needs is freed (found
/// by exploratory testing: the partial file stayed, finishing the move needed room for it and the
/// whole file, and every command on the environment failed until files were deleted by hand).
#[test]
fn a_rollback_out_of_room_leaves_no_partial_file_and_goes_through_once_room_is_freed() {
    let b = Blast::new();
    let small = match Tmpfs::new(&b.tmp.path().join("small"), "4m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("skipping: cannot mount a tmpfs here ({why})");
            return;
        }
    };
    let env = small.dir.join("env");
    let e = env.to_str().unwrap();
    b.ok(&["create", "--path", e, "--python", python()]);
    // Incompressible, and more than the room left once the filesystem is filled but for 1 MiB.
    let big: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(env.join("big"), &big).unwrap();
    b.ok(&["snapshot", "-e", e, "--tag", "big"]);
    b.ok(&["rollback", "-e", e, "@~1"]);
    assert!(!env.join("big").exists());
    let filler = small.fill();
    let room = 1 << 20;
    let len = fs::metadata(&filler).unwrap().len();
    let file = fs::OpenOptions::new().write(true).open(&filler).unwrap();
    file.set_len(len - room).unwrap();
    drop(file);

    let head = b.json(&["status", "-e", e])["head"].clone();
    let err = b.fails(&["rollback", "-e", e, "big"]);
    assert!(err.contains("the filesystem is full"), "{err}");
    assert!(err.contains("was undone"), "{err}");
    let left: Vec<String> = fs::read_dir(&env)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name == "big" || name.starts_with(".blast-tmp"))
        .collect();
    assert!(left.is_empty(), "partial files left: {left:?}");

    let (_, stderr) = b.ok_with_stderr(&["status", "-e", e]);
    assert!(!stderr.contains("finishing"), "{stderr}");
    assert_eq!(b.json(&["status", "-e", e])["head"], head);
    b.assert_verify_clean(&[&env]);

    fs::remove_file(&filler).unwrap();
    b.ok(&["rollback", "-e", e, "big"]);
    assert_eq!(fs::read(env.join("big")).unwrap(), big);
    b.assert_verify_clean(&[&env]);
}

/// `blast clean` on a store whose filesystem is full (found by exploratory testing: the index cannot
/// be opened for writing there, so the clean every full-disk error advises failed too). What nothing
/// needs is swept with the index read-only first; the store then works again.
#[test]
fn clean_frees_space_on_a_full_store() {
    let b = Blast::new();
    let small = match Tmpfs::new(&b.tmp.path().join("store-fs"), "24m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("skipping: cannot mount a tmpfs here ({why})");
            return;
        }
    };
    let home = small.dir.join("home");
    let blast = |args: &[&str]| {
        let out = b.command(args).env("BLAST_HOME", &home).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let gone = b.work.join("gone");
    let kept = b.work.join("kept");
    for env in [&gone, &kept] {
        let (code, _, err) = blast(&[
            "create",
            "--path",
            env.to_str().unwrap(),
            "--python",
            python(),
        ]);
        assert_eq!(code, Some(0), "{err}");
    }
    // Incompressible bytes that only `gone` has: garbage once it is removed.
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(gone.join("big"), &big).unwrap();
    for args in [
        vec!["snapshot", "-e", gone.to_str().unwrap()],
        vec!["remove", gone.to_str().unwrap()],
    ] {
        let (code, _, err) = blast(&args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
    }
    let _filler = small.fill();
    fs::write(kept.join("before.txt"), "before the clean").unwrap();
    let (code, _, err) = blast(&["snapshot", "-e", kept.to_str().unwrap()]);
    assert_ne!(code, Some(0), "the full store still took a snapshot");
    assert!(err.contains("the filesystem is full"), "{err}");

    let (code, out, err) = blast(&["--json", "clean"]);
    assert_eq!(code, Some(0), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        report["bytes_freed"].as_u64().unwrap() >= 3_000_000,
        "{report}"
    );
    fs::write(kept.join("note.txt"), "after the clean").unwrap();
    let (code, _, err) = blast(&["snapshot", "-e", kept.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = blast(&["verify"]);
    assert_eq!(code, Some(0), "{err}");
}
