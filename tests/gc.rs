//! Garbage collection (`blast clean`, design mechanism 7) on a real store: a dry run reports and removes
//! nothing; `--keep N` drops older history entries and then exactly the snapshots, layers and objects that
//! only they needed, while HEAD and tagged snapshots keep everything they need (they still verify and
//! materialize); without a retention policy every history entry stays and only what no environment can
//! reach any more (a removed environment's files) goes; a move killed midway keeps what it needs until
//! the next command finishes it; what a killed snapshot stored but never recorded is swept, and the
//! next snapshot stores it again. The freed bytes are reported.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::*;

/// Every file of the store's objects, layers and snapshots.
fn store_contents(b: &Blast) -> BTreeSet<PathBuf> {
    ["objects", "layers", "snapshots"]
        .iter()
        .flat_map(|kind| b.store_files(kind))
        .collect()
}

fn snapshot_files(b: &Blast) -> BTreeSet<String> {
    b.store_files("snapshots")
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect()
}

fn counts(report: &Value) -> [u64; 5] {
    [
        "history_dropped",
        "snapshots_removed",
        "layers_removed",
        "objects_removed",
        "bytes_freed",
    ]
    .map(|k| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} missing: {report}"))
    })
}

fn assert_all_exist(files: &BTreeSet<PathBuf>, what: &str) {
    let missing: Vec<&PathBuf> = files.iter().filter(|p| !p.exists()).collect();
    assert!(
        missing.is_empty(),
        "{what}: objects swept although still needed: {missing:?}"
    );
}

fn snapshot_id(report: &Value) -> String {
    report["snapshot"]
        .as_str()
        .unwrap_or_else(|| panic!("no new snapshot: {report}"))
        .to_owned()
}

/// create → blastdemo 1.0.0 (snapshot, tagged `one`) → blastdemo 2.0.0 (snapshot) → rollback to the
/// create: with `--keep 1` only the rollback entry stays, so the 2.0.0 snapshot and what only it
/// needed go, while the created and the tagged snapshot stay whole.
#[test]
fn clean_keep_one_drops_old_history_and_only_what_it_alone_needed() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    let created = b.log(e)[0]["snapshot"].as_str().unwrap().to_owned();
    let fresh = read_tree(&env);
    pip_install(&env, &["blastdemo==1.0.0"]);
    let one = snapshot_id(&b.json(&["snapshot", "-e", e, "--tag", "one"]));
    let v1_tree = read_tree(&env);
    pip_install(&env, &["blastdemo==2.0.0"]);
    let two = snapshot_id(&b.json(&["snapshot", "-e", e, "-m", "upgrade"]));
    let v2_tree = read_tree(&env);
    b.ok(&["rollback", "-e", e, &created]);
    assert_same_tree(&fresh, &read_tree(&env));
    let history = b.log(e);
    assert_eq!(history.len(), 4, "create, one, two, rollback");

    // Objects of files that only blastdemo 2.0.0 has (its own modules, its dist-info).
    let live: BTreeSet<PathBuf> = b
        .plain_objects(&env, &fresh)
        .union(&b.plain_objects(&env, &v1_tree))
        .cloned()
        .collect();
    let only_v2: BTreeSet<PathBuf> = b
        .plain_objects(&env, &v2_tree)
        .difference(&live)
        .cloned()
        .collect();
    let site = Path::new("lib/python3.11/site-packages");
    for unique in ["blastdemo/v2_only.py", "blastdemo/__init__.py"] {
        let DiskEntry::File { content, .. } = &v2_tree[site.join(unique).to_str().unwrap()] else {
            panic!("{unique} is not a file");
        };
        assert!(only_v2.contains(&b.object_file(content, false)), "{unique}");
    }
    let before = store_contents(&b);
    assert_all_exist(&only_v2, "before clean");
    assert_all_exist(&live, "before clean");
    assert_eq!(
        snapshot_files(&b),
        BTreeSet::from([created.clone(), one.clone(), two.clone()])
    );

    // A dry run reports what would go and removes nothing, not even history.
    let dry = b.json(&["clean", "--dry-run", "--keep", "1"]);
    assert_eq!(dry["dry_run"], true);
    let [
        history_dropped,
        snapshots_removed,
        layers_removed,
        objects_removed,
        bytes_freed,
    ] = counts(&dry);
    assert_eq!(history_dropped, 3, "{dry}");
    assert_eq!(snapshots_removed, 1, "{dry}");
    assert_eq!(layers_removed, 1, "{dry}");
    assert!(objects_removed as usize >= only_v2.len(), "{dry}");
    assert!(bytes_freed > 0, "{dry}");
    assert_eq!(store_contents(&b), before, "a dry run removed store files");
    assert_eq!(b.log(e), history, "a dry run dropped history");

    // The real run does what the dry run said.
    let report = b.json(&["clean", "--keep", "1"]);
    assert_eq!(report["dry_run"], false);
    assert_eq!(
        counts(&report),
        counts(&dry),
        "dry run {dry}\nreal run {report}"
    );
    let after = store_contents(&b);
    let removed: BTreeSet<PathBuf> = before.difference(&after).cloned().collect();
    assert!(after.is_subset(&before));
    assert_eq!(
        removed.len() as u64,
        snapshots_removed + layers_removed + objects_removed,
        "{removed:?}"
    );
    let gone: Vec<&PathBuf> = only_v2.iter().filter(|p| p.exists()).collect();
    assert!(
        gone.is_empty(),
        "objects only 2.0.0 needed are still there: {gone:?}"
    );
    assert_all_exist(&live, "after clean");
    // Only HEAD (the create) and the tag's snapshot stay.
    assert_eq!(
        snapshot_files(&b),
        BTreeSet::from([created.clone(), one.clone()])
    );
    assert_eq!(
        b.store_files("layers").len(),
        2,
        "the base layer and blastdemo 1.0.0's layer"
    );

    let log = b.log(e);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["operation"], "rollback");
    assert_eq!(log[0]["snapshot"], created.as_str());
    assert_eq!(log[0]["head"], true);
    assert!(
        log[0]["packages"].is_null(),
        "its `from` snapshot is gone: {log:?}"
    );
    b.assert_verify_clean(&[&env]);
    // Collecting again finds nothing more.
    let again = b.json(&["clean", "--keep", "1"]);
    assert_eq!(counts(&again), [0, 0, 0, 0, 0], "{again}");
    assert_eq!(store_contents(&b), after);

    // The tagged snapshot still materializes completely; the dropped one is gone for good.
    b.ok(&["rollback", "-e", e, "one"]);
    assert_same_tree(&exec_bits_only(&v1_tree), &exec_bits_only(&read_tree(&env)));
    let (ok, out) = env_python(&env, "import blastdemo; print(blastdemo.VERSION)");
    assert!(ok && out.trim() == "1.0.0", "{out}");
    b.assert_verify_clean(&[&env]);
    let err = b.fails(&["rollback", "-e", e, &two[..16]]);
    assert!(err.contains("no snapshot matching"), "{err}");
}

/// Without `--keep`/`--keep-days` no history entry is dropped; what goes is what nothing reaches any
/// more: here the files of a removed environment that no other environment shares.
#[test]
fn clean_without_policy_keeps_all_history_and_removes_only_unreachable_data() {
    let b = Blast::new();
    let kept = b.create_path_env("kept");
    let k = kept.to_str().unwrap();
    let kept_fresh = read_tree(&kept);
    pip_install(&kept, &["blastdep"]);
    b.ok(&["snapshot", "-e", k, "-m", "dep"]);
    let kept_tree = read_tree(&kept);

    let gone = b.create_path_env("gone");
    let g = gone.to_str().unwrap();
    pip_install(&gone, &["blastdemo==1.0.0"]);
    let gone_snapshot = snapshot_id(&b.json(&["snapshot", "-e", g]));
    let gone_tree = read_tree(&gone);
    let gone_objects = b.plain_objects(&gone, &gone_tree);

    let live: BTreeSet<PathBuf> = b
        .plain_objects(&kept, &kept_tree)
        .union(&b.plain_objects(&kept, &kept_fresh))
        .cloned()
        .collect();
    let unique: BTreeSet<PathBuf> = gone_objects.difference(&live).cloned().collect();
    assert!(!unique.is_empty());
    // blastdep, which both installed, is one set of objects.
    assert!(gone_objects.intersection(&live).count() > 2);

    // Nothing is unreachable yet, and every entry is younger than a day.
    let nothing = b.json(&["clean"]);
    assert_eq!(counts(&nothing), [0, 0, 0, 0, 0], "{nothing}");
    let young = b.json(&["clean", "--keep-days", "1"]);
    assert_eq!(counts(&young), [0, 0, 0, 0, 0], "{young}");

    let history = b.log(k);
    let before = store_contents(&b);
    b.ok(&["remove", g]);
    let report = b.json(&["clean"]);
    let [
        history_dropped,
        snapshots_removed,
        layers_removed,
        objects_removed,
        bytes_freed,
    ] = counts(&report);
    assert_eq!(history_dropped, 0, "{report}");
    assert_eq!(
        snapshots_removed, 1,
        "only the removed env's blastdemo snapshot: {report}"
    );
    assert_eq!(layers_removed, 1, "{report}");
    assert!(objects_removed as usize >= unique.len(), "{report}");
    assert!(bytes_freed > 0, "{report}");
    let removed: BTreeSet<PathBuf> = before.difference(&store_contents(&b)).cloned().collect();
    assert_eq!(
        removed.len() as u64,
        snapshots_removed + layers_removed + objects_removed,
        "{removed:?}"
    );
    assert!(!snapshot_files(&b).contains(&gone_snapshot));
    let left: Vec<&PathBuf> = unique.iter().filter(|p| p.exists()).collect();
    assert!(
        left.is_empty(),
        "the removed env's own objects are still there: {left:?}"
    );
    assert_all_exist(&live, "after clean");

    // The remaining environment lost nothing: same history, verifies, moves through all of it.
    assert_eq!(b.log(k), history);
    b.assert_verify_clean(&[&kept]);
    b.ok(&["rollback", "-e", k, "@~1"]);
    assert_same_tree(&kept_fresh, &read_tree(&kept));
    b.ok(&["rollback", "-e", k, "@~1"]);
    assert_same_tree(
        &exec_bits_only(&kept_tree),
        &exec_bits_only(&read_tree(&kept)),
    );
    let (ok, out) = env_python(&kept, "import blastdep");
    assert!(ok, "{out}");
    b.assert_verify_clean(&[&kept]);
    assert_eq!(b.log(k).len(), history.len() + 2);
}

/// A move killed midway is a root until it is finished: `blast clean` (which finishes nothing) must keep
/// the snapshot it is moving to even when no kept history entry or tag names it, so the next command can
/// still complete the move.
#[test]
fn clean_keeps_what_an_interrupted_move_needs() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    pip_install(&env, &["blastdemo==1.0.0"]);
    let one = snapshot_id(&b.json(&["snapshot", "-e", e]));
    let v1_tree = read_tree(&env);
    pip_install(&env, &["blastdemo==2.0.0"]);
    let two = snapshot_id(&b.json(&["snapshot", "-e", e]));

    // Killed after removing 2.0.0's files, before writing any of 1.0.0's.
    b.crash(&["rollback", "-e", e, &one], "apply-removed");
    assert!(
        !env.join("lib/python3.11/site-packages/blastdemo/v2_only.py")
            .exists()
    );
    let needed = b.plain_objects(&env, &v1_tree);
    assert_all_exist(&needed, "before clean");

    // Only the newest entry (the 2.0.0 snapshot) is kept; the interrupted move still needs 1.0.0.
    let report = b.json(&["clean", "--keep", "1"]);
    assert_eq!(report["history_dropped"], 2, "{report}");
    assert_eq!(
        snapshot_files(&b),
        BTreeSet::from([one.clone(), two.clone()]),
        "{report}"
    );
    assert_all_exist(&needed, "after clean");

    let (_, stderr) = b.ok_with_stderr(&["status", "-e", e]);
    assert!(
        stderr.contains("finishing the interrupted rollback"),
        "{stderr}"
    );
    assert_same_tree(&exec_bits_only(&v1_tree), &exec_bits_only(&read_tree(&env)));
    let log = b.log(e);
    assert_eq!(log[0]["operation"], "rollback");
    assert_eq!(log[0]["snapshot"], one.as_str());
    b.assert_verify_clean(&[&env]);
    let (ok, out) = env_python(&env, "import blastdemo; print(blastdemo.VERSION)");
    assert!(ok && out.trim() == "1.0.0", "{out}");

    // Finished, the move is ordinary history: with `--keep 1` the 2.0.0 snapshot goes now.
    let report = b.json(&["clean", "--keep", "1"]);
    assert_eq!(report["snapshots_removed"], 1, "{report}");
    assert_eq!(snapshot_files(&b), BTreeSet::from([one]));
    b.assert_verify_clean(&[&env]);
}

/// What a snapshot killed before recording HEAD stored is unreachable: `blast clean` sweeps it, and the
/// next snapshot of the same content stores it all again (nothing trusts the swept files).
#[test]
fn clean_sweeps_what_a_killed_snapshot_never_recorded_and_snapshot_stores_it_again() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    pip_install(&env, &["blastdep"]);
    let installed = read_tree(&env);
    let before = store_contents(&b);
    b.crash(&["snapshot", "-e", e], "capture-staged");
    let staged: BTreeSet<PathBuf> = store_contents(&b).difference(&before).cloned().collect();
    let orphan = snapshot_files(&b)
        .into_iter()
        .find(|id| !before.iter().any(|p| p.ends_with(id)))
        .unwrap();

    let report = b.json(&["clean"]);
    assert_eq!(counts(&report)[..3], [0, 1, 1], "{report}");
    assert_eq!(
        store_contents(&b),
        before,
        "everything the killed snapshot stored is swept"
    );
    assert!(!staged.is_empty());

    let snap = b.json(&["snapshot", "-e", e]);
    assert_eq!(snap["snapshot"], orphan.as_str());
    assert_eq!(
        store_contents(&b)
            .difference(&before)
            .cloned()
            .collect::<BTreeSet<_>>(),
        staged
    );
    b.assert_verify_clean(&[&env]);
    b.ok(&["rollback", "-e", e]);
    b.ok(&["rollback", "-e", e, &orphan]);
    assert_same_tree(
        &exec_bits_only(&installed),
        &exec_bits_only(&read_tree(&env)),
    );
    let (ok, out) = env_python(&env, "import blastdep");
    assert!(ok, "{out}");
}

/// A tag is a root: `blast tag` keeps a snapshot that HEAD has left (rolled back, then another package
/// installed: its layer is on no other snapshot), and what only it needs, through `clean --keep 1`,
/// which drops the history entry that made it (the tag is listed without one); once the tag is deleted,
/// the next clean frees exactly that snapshot, its layer and its files, and the environment verifies.
#[test]
fn a_tag_keeps_its_snapshot_through_clean_until_it_is_deleted() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    pip_install(&env, &["blastdemo==1.0.0"]);
    let one = snapshot_id(&b.json(&["snapshot", "-e", e]));
    b.json(&["tag", "-e", e, "old"]);
    b.ok(&["rollback", "-e", e]);
    pip_install(&env, &["blastdemo==2.0.0"]);
    snapshot_id(&b.json(&["snapshot", "-e", e]));

    let kept = b.json(&["clean", "--keep", "1"]);
    let [history_dropped, snapshots_removed, _, objects_removed, _] = counts(&kept);
    assert_eq!(
        (history_dropped, snapshots_removed, objects_removed),
        (3, 1, 0),
        "only the created snapshot goes: {kept}"
    );
    assert!(snapshot_files(&b).contains(&one));
    let listed = b.json(&["tag", "-e", e]);
    assert_eq!(listed["tags"][0]["snapshot"], one.as_str(), "{listed}");
    assert!(listed["tags"][0]["operation"].is_null(), "{listed}");
    let before = store_contents(&b);

    b.json(&["tag", "-e", e, "--delete", "old"]);
    let freed = b.json(&["clean", "--keep", "1"]);
    let [
        _,
        snapshots_removed,
        layers_removed,
        objects_removed,
        bytes_freed,
    ] = counts(&freed);
    assert_eq!((snapshots_removed, layers_removed), (1, 1), "{freed}");
    assert!(objects_removed > 0 && bytes_freed > 0, "{freed}");
    assert!(!snapshot_files(&b).contains(&one));
    assert_eq!(
        before.difference(&store_contents(&b)).count() as u64,
        snapshots_removed + layers_removed + objects_removed,
        "{freed}"
    );
    b.assert_verify_clean(&[&env]);
}

/// `blast squash`: a secret written into the environment and removed again stays in its layer, so the
/// store keeps it and an export carries it; after the squash HEAD is one layer of the same files (the
/// directory untouched, inodes and all), an export no longer carries it, and once `clean --keep 1`
/// dropped the old history it is gone from the store. A squash killed after its journal is finished by
/// the next command; a second squash changes nothing.
#[test]
fn squash_drops_what_later_layers_removed_so_clean_frees_it() {
    use std::os::unix::fs::MetadataExt;
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    let secret = b"API_TOKEN=blast-test-secret-4f9c1e\n";
    pip_install(&env, &["blastdemo==1.0.0"]);
    std::fs::write(env.join("token.env"), secret).unwrap();
    snapshot_id(&b.json(&["snapshot", "-e", e, "-m", "oops"]));
    std::fs::remove_file(env.join("token.env")).unwrap();
    pip_install(&env, &["blastdemo==2.0.0"]);
    let head = snapshot_id(&b.json(&["snapshot", "-e", e]));
    let holds_secret = |b: &Blast| {
        b.store_files("objects")
            .iter()
            .any(|p| std::fs::read(p).unwrap() == secret)
    };
    let exported_secret = |b: &Blast, name: &str| {
        let image = b.work.join(name);
        b.ok(&["export", "-e", e, "-o", image.to_str().unwrap()]);
        let bytes = zstd::decode_all(std::fs::File::open(&image).unwrap()).unwrap();
        bytes.windows(secret.len()).any(|w| w == secret)
    };
    assert!(holds_secret(&b) && exported_secret(&b, "before.blast"));
    let tree = read_tree(&env);
    let inode = std::fs::metadata(env.join("pyvenv.cfg")).unwrap().ino();

    // Killed once its journal is written, with work in the directory not captured yet: the next
    // command finishes it, over the same directory, and the work stays (found by exploratory testing:
    // recovery took it for a change made since and offered only to discard it).
    std::fs::write(env.join("work.txt"), "not captured yet").unwrap();
    b.crash(&["squash", "-e", e], "journal-written");
    let (status, stderr) = b.ok_with_stderr(&["status", "-e", e, "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["uncaptured"][0]["path"], "work.txt", "{status}");
    assert_eq!(
        std::fs::read_to_string(env.join("work.txt")).unwrap(),
        "not captured yet"
    );
    std::fs::remove_file(env.join("work.txt")).unwrap();
    assert!(
        stderr.contains("finishing the interrupted squash"),
        "{stderr}"
    );
    let log = b.log(e);
    assert_eq!(log[0]["operation"], "squash", "{log:?}");
    assert_eq!(log[0]["from"], head.as_str());
    let squashed = log[0]["snapshot"].as_str().unwrap().to_owned();
    assert_same_tree(&tree, &read_tree(&env));
    assert_eq!(
        std::fs::metadata(env.join("pyvenv.cfg")).unwrap().ino(),
        inode
    );
    let status = b.json(&["status", "-e", e]);
    assert_eq!(status["uncaptured"], serde_json::json!([]), "{status}");
    assert!(!exported_secret(&b, "after.blast"));

    // One layer already: nothing to do.
    let again = b.json(&["squash", "-e", e]);
    assert_eq!(
        (&again["from"], &again["to"], &again["layers"]),
        (
            &squashed.as_str().into(),
            &squashed.as_str().into(),
            &1.into()
        ),
        "{again}"
    );

    // The old snapshots still hold it until clean drops their history.
    assert!(holds_secret(&b));
    b.json(&["clean", "--keep", "1"]);
    assert!(!holds_secret(&b));
    assert_eq!(b.log(e).len(), 1);
    let (ok, out) = env_python(&env, "import blastdemo; print(blastdemo.VERSION)");
    assert!(ok && out.trim() == "2.0.0", "{out}");
    b.assert_verify_clean(&[&env]);
}

/// A `chmod +x` of a file an environment hardlinks from the store changes the object's mode, and so
/// every link to it (found by exploratory testing: a later capture recorded the file executable without
/// storing the executable variant, and `clean` then deleted the only copy of its bytes). Materializing
/// now gives such a file a copy of its own with the snapshot's mode, `verify` names the object, and a
/// `clean` after a squash keeps every object the remaining snapshot needs.
#[test]
fn a_chmod_through_a_hardlink_is_named_and_loses_nothing_to_clean() {
    let b = Blast::new();
    let env = b.create_path_env("a");
    let e = env.to_str().unwrap();
    pip_install(&env, &["blastdemo==1.0.0"]);
    b.ok(&["snapshot", "-e", e]);
    pip_install(&env, &["--upgrade", "blastdemo"]);
    b.ok(&["snapshot", "-e", e]);
    b.ok(&["rollback", "-e", e]);
    let module = "lib/python3.11/site-packages/blastdemo/__init__.py";
    let linked = env.join(module);
    assert!(
        fs::metadata(&linked).unwrap().nlink() > 1,
        "the rollback links the module from the store"
    );
    fs::set_permissions(&linked, fs::Permissions::from_mode(0o555)).unwrap();

    let copy = b.work.join("n");
    let n = copy.to_str().unwrap();
    b.ok(&["sync", "--from", e, "--to", n]);
    let meta = fs::metadata(copy.join(module)).unwrap();
    assert_eq!(
        (meta.nlink(), meta.permissions().mode() & 0o777),
        (1, 0o644),
        "a copy with the snapshot's mode"
    );
    let out = b.run(&["verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("MODE ") && text.contains("(mode 0555, not 0444)"),
        "{text}"
    );
    assert!(text.contains("`chmod 444 FILE`"), "{text}");
    assert!(text.contains(&format!("`{n}` matches its HEAD")), "{text}");

    // The discarding rollback of `a` mends it the same way.
    b.ok(&["rollback", "-e", e, "--force", "HEAD"]);
    let meta = fs::metadata(&linked).unwrap();
    assert_eq!(
        (meta.nlink(), meta.permissions().mode() & 0o777),
        (1, 0o644)
    );

    b.ok(&["snapshot", "-e", n]);
    b.ok(&["squash", "-e", n]);
    b.ok(&["remove", e, "--force"]);
    b.ok(&["clean", "--keep", "1"]);
    let text = String::from_utf8_lossy(&b.run(&["verify"]).stdout).into_owned();
    assert!(!text.contains("MISSING"), "{text}");
    let again = b.work.join("again");
    b.ok(&["sync", "--from", n, "--to", again.to_str().unwrap()]);
    let (ok, out) = env_python(&again, "import blastdemo; print(blastdemo.VERSION)");
    assert!(ok && out.trim() == "1.0.0", "{out}");
}

/// A snapshot that needs one variant of an object (executable or not) where the store holds only the
/// other (a store written before captures stored the variant they record) materializes from it by a
/// copy: `clean` keeps that one.
#[test]
fn clean_keeps_the_only_variant_of_an_object_a_snapshot_materializes_from() {
    let b = Blast::new();
    let env = b.create_path_env("a");
    let e = env.to_str().unwrap();
    let script = env.join("bin/hello");
    let bytes = format!("#!/bin/sh\necho hello\n# {}\n", "padding ".repeat(512));
    fs::write(&script, &bytes).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    b.ok(&["snapshot", "-e", e]);
    let executable = b.object_file(bytes.as_bytes(), true);
    assert!(executable.exists());
    let plain = PathBuf::from(executable.to_str().unwrap().strip_suffix(".x").unwrap());
    fs::rename(&executable, &plain).unwrap();
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o444)).unwrap();

    b.ok(&["clean"]);
    assert!(plain.exists(), "the only copy of the script's bytes stays");
    let copy = b.work.join("copy");
    b.ok(&["sync", "--from", e, "--to", copy.to_str().unwrap()]);
    let out = std::process::Command::new(copy.join("bin/hello"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n", "{out:?}");
}

/// A snapshot `clean` must keep that cannot be read stops it before anything goes, and the message
/// names what keeps the snapshot and the ways out (found by exploratory testing: it named neither).
#[test]
fn clean_names_what_keeps_an_unreadable_snapshot_and_removes_nothing() {
    let b = Blast::new();
    let env = b.create_path_env("lost");
    let e = env.to_str().unwrap();
    let head = b.json(&["status", "-e", e])["head"]
        .as_str()
        .unwrap()
        .to_owned();
    fs::remove_file(b.home.join("snapshots").join(&head)).unwrap();
    let before = store_contents(&b);
    for args in [&["clean", "--dry-run"][..], &["clean"]] {
        let err = b.fails(args);
        assert!(
            err.contains(&format!("snapshot {} is HEAD of `{e}`", &head[..12]))
                && err.contains("removes nothing")
                && err.contains("blast remove ENV --force"),
            "{err}"
        );
        assert_eq!(store_contents(&b), before);
    }
    b.ok(&["remove", e, "--force"]);
    b.ok(&["clean"]);
}

/// A clean that cannot remove a file stops there and says what it had done: the history entries it
/// dropped are gone, and the next clean removes what it left once the file can go. (Before, it said
/// only which file failed.) An immutable layer file (`chattr +i`) stands for a file the filesystem
/// refuses to remove.
#[test]
fn a_clean_stopped_midway_says_what_it_had_done_and_the_next_one_finishes() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    pip_install(&env, &["blastdemo==1.0.0"]);
    b.ok(&["snapshot", "-e", e]);
    pip_install(&env, &["blastdemo==2.0.0"]);
    b.ok(&["snapshot", "-e", e]);
    b.ok(&["rollback", "-e", e, "@~2"]);
    let layers = b.store_files("layers");
    let chattr = |flag: &str| {
        Command::new("chattr")
            .arg(flag)
            .args(&layers)
            .status()
            .is_ok_and(|status| status.success())
    };
    if !chattr("+i") {
        eprintln!("skipping: `chattr +i` does not work here (needs root and a filesystem with it)");
        return;
    }
    let err = b.fails(&["clean", "--keep", "1"]);
    assert!(chattr("-i"), "chattr -i");
    assert!(
        err.contains("the clean stopped there, having dropped 3 history entries")
            && err.contains("once the file above can be removed"),
        "{err}"
    );
    assert_eq!(b.log(e).len(), 1, "the dropped history is gone");
    assert_eq!(snapshot_files(&b).len(), 1, "only HEAD's snapshot stays");
    let report = b.json(&["clean"]);
    let [
        history_dropped,
        snapshots_removed,
        layers_removed,
        objects_removed,
        _,
    ] = counts(&report);
    assert_eq!([history_dropped, snapshots_removed], [0, 0], "{report}");
    assert!(layers_removed >= 1 && objects_removed >= 1, "{report}");
    b.assert_verify_clean(&[&env]);
}

/// `blast squash` moves the tags of the old HEAD to the squashed snapshot (the same files), names the
/// tags of older snapshots that keep what it dropped, and says when the directory holds changes it
/// does not take (found by exploratory testing: a tag set on HEAD before the squash still named the
/// old layers, and a push of it carried a secret removed long before).
#[test]
fn squash_moves_heads_tags_and_names_the_tags_that_keep_the_old_layers() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    let secret = b"API_TOKEN=blast-test-secret-77d0aa\n";
    pip_install(&env, &["blastdemo==1.0.0"]);
    b.ok(&["snapshot", "-e", e, "--tag", "first"]);
    std::fs::write(env.join("token.env"), secret).unwrap();
    b.ok(&["snapshot", "-e", e, "--tag", "leak"]);
    std::fs::remove_file(env.join("token.env")).unwrap();
    b.ok(&["snapshot", "-e", e, "--tag", "release"]);
    std::fs::write(env.join("work.txt"), "not captured yet").unwrap();

    let (stdout, stderr) = b.ok_with_stderr(&["squash", "-e", e]);
    let squashed = b.log(e)[0]["snapshot"].as_str().unwrap().to_owned();
    assert!(
        stdout.contains(&format!(
            "moved to {} (the same files): `release`",
            &squashed[..12]
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("whose layers keep those files: `leak` (`blast tag -d TAG`"),
        "{stdout}"
    );
    assert!(!stdout.contains("`first`"), "{stdout}");
    assert!(
        stderr.contains("note: 1 path of `") && stderr.contains("not in it"),
        "{stderr}"
    );
    let tags = b.json(&["tag", "-e", e]).to_string();
    assert!(tags.contains(&squashed), "{tags}");

    // What `release` names travels without the secret; once `leak` is gone, clean frees it.
    let image = b.work.join("release.blast");
    b.ok(&[
        "export",
        "-e",
        e,
        "--snapshot",
        "release",
        "-o",
        image.to_str().unwrap(),
    ]);
    let bytes = zstd::decode_all(std::fs::File::open(&image).unwrap()).unwrap();
    assert!(!bytes.windows(secret.len()).any(|w| w == secret));
    let holds_secret = |b: &Blast| {
        b.store_files("objects")
            .iter()
            .any(|p| std::fs::read(p).unwrap() == secret)
    };
    b.json(&["clean", "--keep", "1"]);
    assert!(holds_secret(&b), "the tag keeps it");
    b.ok(&["tag", "-e", e, "-d", "leak"]);
    b.json(&["clean", "--keep", "1"]);
    assert!(!holds_secret(&b));
    std::fs::remove_file(env.join("work.txt")).unwrap();
    b.assert_verify_clean(&[&env]);
}
