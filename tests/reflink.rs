//! Reflinks: on a filesystem that shares extents (XFS with reflink=1, loop-mounted by the test), blast
//! materializes files as copy-on-write clones: separate inodes that share the store's blocks, writable
//! without touching the store. Skips, saying why, where the test cannot mount such a filesystem (needs root,
//! mkfs.xfs from xfsprogs and a loop device).

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

/// A loop-mounted XFS image, unmounted and deleted on drop.
struct XfsMount {
    image: PathBuf,
    mount: PathBuf,
}

impl XfsMount {
    fn new(dir: &Path) -> Result<XfsMount, String> {
        let image = dir.join("xfs.img");
        let mount = dir.join("mnt");
        fs::create_dir_all(&mount).map_err(|e| e.to_string())?;
        let run = |cmd: &mut Command| -> Result<(), String> {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        run(Command::new("truncate").arg("-s").arg("320M").arg(&image))?;
        run(Command::new("mkfs.xfs")
            .args(["-q", "-f", "-m", "reflink=1"])
            .arg(&image))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount))?;
        Ok(XfsMount { image, mount })
    }
}

impl XfsMount {
    /// The mount for a test, or `None` after saying why the test skips.
    fn or_skip(b: &Blast) -> Option<XfsMount> {
        XfsMount::new(b.tmp.path())
            .map_err(|why| {
                eprintln!("skipping: cannot mount a reflink-capable XFS image here ({why})")
            })
            .ok()
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
        let _ = fs::remove_file(&self.image);
    }
}

fn has_shared_extents(path: &Path) -> bool {
    let out = Command::new("filefrag")
        .arg("-v")
        .arg(path)
        .output()
        .expect("filefrag (e2fsprogs)");
    String::from_utf8_lossy(&out.stdout).contains("shared")
}

#[test]
fn materializes_by_reflink_on_xfs() {
    let b = Blast::new();
    let Some(xfs) = XfsMount::or_skip(&b) else {
        return;
    };
    let home = xfs.mount.join("home");
    let run = |args: &[&str]| {
        let out = b.command(args).env("BLAST_HOME", &home).output().unwrap();
        assert!(
            out.status.success(),
            "blast {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let src = xfs.mount.join("src");
    let dst = xfs.mount.join("dst");
    run(&[
        "create",
        "--path",
        src.to_str().unwrap(),
        "--python",
        python(),
    ]);
    pip_install(&src, &["blastdemo==1.0.0"]);
    run(&["snapshot", "-e", src.to_str().unwrap()]);
    run(&[
        "sync",
        "--from",
        src.to_str().unwrap(),
        "--to",
        dst.to_str().unwrap(),
    ]);

    let module = dst.join("lib/python3.11/site-packages/blastdemo/__init__.py");
    let original =
        fs::read(src.join("lib/python3.11/site-packages/blastdemo/__init__.py")).unwrap();
    assert_eq!(fs::read(&module).unwrap(), original);
    assert_eq!(
        fs::metadata(&module).unwrap().nlink(),
        1,
        "a reflink is its own inode"
    );
    assert!(
        has_shared_extents(&module),
        "the clone shares the object's blocks"
    );
    assert_eq!(fs::metadata(&module).unwrap().mode() & 0o777, 0o644);

    // Writing the clone leaves the store and the other env alone.
    fs::write(&module, b"changed = True\n").unwrap();
    let out = b
        .command(&["verify", "--json"])
        .env("BLAST_HOME", &home)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["corrupt"].as_array().unwrap().len(), 0, "{report}");
    let drifted: Vec<&serde_json::Value> = report["envs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["drifted"].as_array().unwrap())
        .collect();
    assert_eq!(drifted.len(), 1, "only the written env drifted: {report}");
}

/// An object whose blocks a reflinked file still shares frees none of them when it is removed (found by
/// exploratory testing: `blast clean` reported 19.1 MiB freed where the disk got 20 KiB back, the
/// environment's clone still holding the object's extents). What `clean` reports is what it frees.
#[test]
fn clean_counts_no_bytes_a_reflink_still_shares() {
    let b = Blast::new();
    let Some(xfs) = XfsMount::or_skip(&b) else {
        return;
    };
    let home = xfs.mount.join("home");
    let run = |args: &[&str]| -> String {
        let out = b.command(args).env("BLAST_HOME", &home).output().unwrap();
        assert!(
            out.status.success(),
            "blast {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let env = xfs.mount.join("env");
    let e = env.to_str().unwrap();
    run(&["create", "--path", e, "--python", python()]);
    let big: Vec<u8> = (0..4_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(env.join("big"), &big).unwrap();
    run(&["snapshot", "-e", e]);
    // Back and forth: the environment's `big` is now a clone of the object.
    run(&["rollback", "-e", e, "@~1"]);
    run(&["rollback", "-e", e, "@~1"]);
    assert!(has_shared_extents(&env.join("big")));
    let mut changed = fs::OpenOptions::new()
        .append(true)
        .open(env.join("big"))
        .unwrap();
    std::io::Write::write_all(&mut changed, b"one more line\n").unwrap();
    drop(changed);
    run(&["snapshot", "-e", e]);
    run(&["squash", "-e", e]);
    let report: serde_json::Value =
        serde_json::from_str(&run(&["--json", "clean", "--keep", "1"])).unwrap();
    assert!(report["objects_removed"].as_u64().unwrap() >= 1, "{report}");
    assert!(
        report["bytes_freed"].as_u64().unwrap() < 1_000_000,
        "the removed object's 4 MB stay shared with the environment's file: {report}"
    );
}
