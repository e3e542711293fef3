//! Import tracking on a real venv and the real Python: `blast imports --enable` puts the hook into
//! site-packages, a program's imports are recorded at its exit, and `blast imports` names the installed
//! distribution it never imported, leaves out the one it did, the standard library and what failed to
//! import, and names the module it imported from its working directory as the project's own. The hook's
//! files are no environment content: `blast snapshot` sees nothing, `blast verify` is clean, a rollback
//! keeps them, and `--disable` takes them out.

mod support;

use std::fs;
use std::process::Command;

use serde_json::{Value, json};
use support::*;

const SITE: &str = "lib/python3.11/site-packages";

/// Names of a list of distributions in the report.
fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect()
}

fn nothing_changed(b: &Blast, e: &str) {
    let snap = b.json(&["snapshot", "-e", e]);
    assert!(snap["snapshot"].is_null(), "{snap}");
}

#[test]
fn imports_names_what_was_never_imported_and_what_no_package_provides() {
    let b = Blast::new();
    let env = b.work.join("venv");
    let e = env.to_str().unwrap();
    b.ok(&["create", "--path", e, "--python", python(), "--seed"]);
    b.install_fixtures(&env, &["blastdep", "blastbase"]);

    let untracked = b.json(&["imports", "-e", e]);
    assert_eq!(untracked["tracking"], false, "{untracked}");
    assert_eq!(untracked["records"], 0, "{untracked}");

    // Found by exploratory testing: files under the hook's names were left out whatever they held,
    // so code planted there ran at every start and no command saw it. Only blast's own hook is.
    let uncaptured = |b: &Blast| -> Vec<String> {
        b.json(&["status", "-e", e])["uncaptured"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["path"].as_str().unwrap().to_owned())
            .collect()
    };
    let planted = env.join(SITE).join("_blast_imports.pth");
    fs::write(&planted, "import os; print('planted')\n").unwrap();
    assert_eq!(uncaptured(&b), [format!("{SITE}/_blast_imports.pth")]);
    fs::remove_file(&planted).unwrap();

    let enabled = b.json(&["imports", "-e", e, "--enable"]);
    assert_eq!(enabled["enabled"], true, "{enabled}");
    let module = env.join(SITE).join("_blast_imports.py");
    let pth = env.join(SITE).join("_blast_imports.pth");
    assert!(module.is_file() && pth.is_file(), "{enabled}");
    // Past the stat cache's racy window, so that the walk keeps site-packages' listing.
    std::thread::sleep(std::time::Duration::from_millis(150));
    nothing_changed(&b, e);
    // The hook rewritten in place (its directory's stat unchanged) is content from then on, and the
    // next status sees it, not only verify; put back, it is the hook again.
    assert!(uncaptured(&b).is_empty());
    let hook = fs::read(&pth).unwrap();
    let site_mtime = fs::metadata(env.join(SITE)).unwrap().modified().unwrap();
    let mut rewritten = fs::OpenOptions::new().write(true).open(&pth).unwrap();
    std::io::Write::write_all(&mut rewritten, b"import os; print('planted')\n").unwrap();
    drop(rewritten);
    assert_eq!(
        fs::metadata(env.join(SITE)).unwrap().modified().unwrap(),
        site_mtime
    );
    assert_eq!(uncaptured(&b), [format!("{SITE}/_blast_imports.pth")]);
    fs::write(&pth, &hook).unwrap();
    assert!(uncaptured(&b).is_empty());
    nothing_changed(&b, e);
    // pip runs with the hook in the sandbox, and the install's layer does not take the hook in.
    b.install_fixtures(&env, &["blastextra"]);
    let diff = b.json(&["diff", "-e", e, "@~1", "HEAD", "--files"]);
    let files = diff["files"].as_array().unwrap();
    assert!(!files.is_empty(), "{diff}");
    assert!(
        files
            .iter()
            .all(|f| !f["path"].as_str().unwrap().contains("_blast_imports")),
        "{diff}"
    );

    // A project directory holding a module of its own, which no distribution provides.
    let project = b.work.join("project");
    fs::create_dir(&project).unwrap();
    fs::write(project.join("projmod.py"), "VALUE = 1\n").unwrap();
    let out = Command::new(env.join("bin/python"))
        .args([
            "-c",
            "import blastdep; import json; import projmod\n\
             try:\n    import blastnotinstalled\nexcept ImportError:\n    pass\n\
             print(projmod.VALUE)",
        ])
        .current_dir(&project)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The hook says nothing to the program.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");

    let report = b.json(&["imports", "-e", e]);
    assert_eq!(report["tracking"], true, "{report}");
    assert_eq!(report["records"], 1, "{report}");
    assert_eq!(names(&report["imported"]), ["blastdep"], "{report}");
    // pip came with --seed and was not imported either.
    assert_eq!(
        names(&report["never_imported"]),
        ["blastbase", "blastextra", "pip"],
        "{report}"
    );
    assert_eq!(
        report["never_imported"][0]["top_level"],
        json!(["blastbase"])
    );
    // json is the standard library; blastnotinstalled failed to import: neither is listed.
    assert_eq!(report["not_provided"], json!([]), "{report}");
    assert_eq!(report["local"], json!(["projmod"]), "{report}");
    let text = b.ok(&["imports", "-e", e]);
    assert!(
        text.contains("3 installed distributions never imported:")
            && text.contains("1 installed distribution imported"),
        "{text}"
    );
    assert_eq!(report["problems"], json!([]), "{report}");

    // A module imported from elsewhere on the path is provided by nothing and is not the project's.
    let elsewhere = b.work.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::write(elsewhere.join("strayed.py"), "").unwrap();
    let out = Command::new(env.join("bin/python"))
        .args(["-c", "import strayed, blastbase"])
        .env("PYTHONPATH", &elsewhere)
        .current_dir(&project)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report = b.json(&["imports", "-e", e]);
    assert_eq!(report["records"], 2, "{report}");
    assert_eq!(
        names(&report["imported"]),
        ["blastbase", "blastdep"],
        "{report}"
    );
    assert_eq!(
        names(&report["never_imported"]),
        ["blastextra", "pip"],
        "{report}"
    );
    assert_eq!(report["not_provided"], json!(["strayed"]), "{report}");
    assert_eq!(report["local"], json!(["projmod"]), "{report}");

    // A program run in the sandbox records its imports too.
    b.ok(&["run", "-e", e, "--", "python", "-c", "import blastextra"]);
    let report = b.json(&["imports", "-e", e]);
    assert_eq!(report["records"], 3, "{report}");
    assert_eq!(names(&report["never_imported"]), ["pip"], "{report}");

    // Every process of the environment may write the records directory: what is not a record there is
    // named and left out (found by exploratory testing: a FIFO hung the report, a symlink's target was
    // read into it, and bytes that are not UTF-8 failed it).
    let records = std::path::PathBuf::from(enabled["records"].as_str().unwrap());
    let secret = b.work.join("secret.txt");
    fs::write(&secret, "AKIA_SECRET module\n").unwrap();
    let planted = [
        records.join("90-link.txt"),
        records.join("91-fifo.txt"),
        records.join("92-dir.txt"),
        records.join("93-bytes.txt"),
    ];
    std::os::unix::fs::symlink(&secret, &planted[0]).unwrap();
    let fifo = std::ffi::CString::new(planted[1].to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    fs::create_dir(&planted[2]).unwrap();
    fs::write(&planted[3], b"\xff\xfe module\n").unwrap();
    let report = b.json(&["imports", "-e", e]);
    assert_eq!(report["records"], 4, "{report}");
    assert_eq!(report["not_provided"], json!(["strayed"]), "{report}");
    let problems = report["problems"].to_string();
    for (path, says) in [
        (&planted[0], "symbolic link"),
        (&planted[1], "not a regular file"),
        (&planted[2], "not a regular file"),
        (&planted[3], "is not `<name> module|local|failed`"),
    ] {
        let named = format!("`{}`: it", path.display());
        assert!(
            problems.contains(&named)
                || problems.contains(&format!("`{}`: the line", path.display())),
            "{path:?}: {problems}"
        );
        assert!(problems.contains(says), "{says}: {problems}");
    }
    assert!(!problems.contains("AKIA"), "{problems}");
    for path in &planted {
        let _ = fs::remove_file(path).or_else(|_| fs::remove_dir(path));
    }

    // The hook's files (and the bytecode Python compiled of it) are not content.
    nothing_changed(&b, e);
    b.assert_verify_clean(&[&env]);
    // Unless they are changed: then they are what any file is. `verify` reads every directory;
    // `status` trusts an unchanged directory's listing, so it sees a hook replaced (as editors save)
    // but not one written in place.
    let hook = fs::read_to_string(&module).unwrap();
    fs::write(&module, format!("{hook}print('changed')\n")).unwrap();
    let out = b.run(&["verify", "-e", e, "--json"]);
    assert!(!out.status.success());
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        verdict["envs"][0]["drifted"][0]["path"],
        format!("{SITE}/_blast_imports.py"),
        "{verdict}"
    );
    let replaced = env.join(SITE).join("replaced.tmp");
    fs::write(&replaced, format!("{hook}print('changed')\n")).unwrap();
    fs::rename(&replaced, &module).unwrap();
    assert_eq!(uncaptured(&b), [format!("{SITE}/_blast_imports.py")]);
    fs::write(&replaced, hook).unwrap();
    fs::rename(&replaced, &module).unwrap();
    nothing_changed(&b, e);

    // A rollback (before blastextra) moves the content and leaves the hook where it is.
    b.ok(&["rollback", "-e", e]);
    assert!(module.is_file() && pth.is_file());
    let after = b.json(&["imports", "-e", e]);
    assert_eq!(after["tracking"], true, "{after}");
    assert_eq!(names(&after["never_imported"]), ["pip"], "{after}");
    nothing_changed(&b, e);

    let disabled = b.json(&["imports", "-e", e, "--disable"]);
    assert_eq!(disabled["enabled"], false, "{disabled}");
    assert!(!module.exists() && !pth.exists());
    let leftovers: Vec<_> = fs::read_dir(env.join(SITE).join("__pycache__"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|f| {
            f.file_name()
                .to_string_lossy()
                .starts_with("_blast_imports")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    nothing_changed(&b, e);
    b.assert_verify_clean(&[&env]);
    // What was recorded stays readable; no process records anything any more.
    let (ok, _) = env_python(&env, "import blastdep");
    assert!(ok);
    let off = b.json(&["imports", "-e", e]);
    assert_eq!(off["tracking"], false, "{off}");
    assert_eq!(off["records"], 3, "{off}");
}

#[test]
fn imports_refuses_an_unknown_environment_clearly() {
    let b = Blast::new();
    let err = b.fails(&["imports", "-e", "nope", "--enable"]);
    assert!(err.contains("no blast environment `nope`"), "{err}");
}

/// Found by exploratory testing: an interpreter before 3.10 has no `sys.stdlib_module_names`, and its
/// frozen modules (`_frozen_importlib`, `zipimport`) were reported as provided by no distribution in
/// every record; so was the finder module of every setuptools editable install, which its `.pth`
/// imports in every process. Turning tracking off where it was never on says so.
#[test]
fn the_interpreters_frozen_modules_and_editable_finders_are_nobodys_imports() {
    let b = Blast::new();
    let env = b.work.join("venv");
    let e = env.to_str().unwrap();
    b.ok(&["create", "--path", e, "--python", python()]);
    let off = b.ok(&["imports", "-e", e, "--disable"]);
    assert!(
        off.contains("was not on") && off.contains("nothing was recorded"),
        "{off}"
    );
    // A setuptools editable install as it lands in site-packages: its `.pth` imports its finder.
    let finder = "__editable___stflat_0_1_finder";
    write_distribution(
        &env,
        "stflat-0.1.dist-info",
        &[
            (
                "METADATA",
                "Metadata-Version: 2.1\nName: stflat\nVersion: 0.1\n",
            ),
            ("top_level.txt", "stflat\n"),
            (
                "RECORD",
                &format!(
                    "{finder}.py,,\n__editable__.stflat-0.1.pth,,\nstflat-0.1.dist-info/RECORD,,\n"
                ),
            ),
        ],
    );
    fs::write(
        env.join(SITE).join(format!("{finder}.py")),
        "def install():\n    pass\n",
    )
    .unwrap();
    fs::write(
        env.join(SITE).join("__editable__.stflat-0.1.pth"),
        format!("import {finder}; {finder}.install()\n"),
    )
    .unwrap();
    b.ok(&["snapshot", "-e", e]);
    // One process importing the standard library records nothing provided by nobody.
    let nothing_unprovided = |env: &std::path::Path| {
        let e = env.to_str().unwrap();
        b.ok(&["imports", "-e", e, "--enable"]);
        let ran = Command::new(env.join("bin/python"))
            .args(["-c", "import json"])
            .output()
            .unwrap();
        assert!(ran.status.success(), "{ran:?}");
        let report = b.json(&["imports", "-e", e]);
        assert_eq!(report["records"], 1, "{report}");
        assert_eq!(report["not_provided"], json!([]), "{report}");
    };
    nothing_unprovided(&env);

    let older = b.work.join("older");
    let o = older.to_str().unwrap();
    if !b
        .run(&["create", "--path", o, "--python", "3.9"])
        .status
        .success()
    {
        eprintln!("skipped the older interpreter: blast finds no Python 3.9 here");
        return;
    }
    nothing_unprovided(&older);
}
