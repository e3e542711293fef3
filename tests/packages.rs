//! The package view and the conflict check on real pip installs of the fixture wheels: `blast packages`
//! lists what pip installed (checked against `pip list`), and `blast check` agrees with `pip check`,
//! evaluates markers for the env's interpreter, leaves extras off, and explains a conflicting install
//! by naming both requirements.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::*;

/// `pip list` of the environment: (name, version), sorted.
fn pip_list(env: &Path) -> Vec<(String, String)> {
    let out = Command::new(python())
        .args(["-m", "pip", "--python", env.to_str().unwrap()])
        .args(["list", "--format", "json", "--disable-pip-version-check"])
        .output()
        .expect("run pip list");
    assert_succeeded(&out);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut pairs: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_lowercase(),
                p["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

/// `pip check` of the environment: whether it passed, and what it said.
fn pip_check(env: &Path) -> (bool, String) {
    let out = Command::new(python())
        .args(["-m", "pip", "--python", env.to_str().unwrap()])
        .args(["check", "--disable-pip-version-check"])
        .output()
        .expect("run pip check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Runs `blast check`, returning its exit code, its text and its JSON report.
fn blast_check(b: &Blast, env: &str) -> (Option<i32>, String, Value) {
    let text = b.run(&["check", "-e", env]);
    let json = b.run(&["check", "-e", env, "--json"]);
    assert_eq!(text.status.code(), json.status.code());
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert!(!stderr.contains("error"), "{stderr}");
    (
        text.status.code(),
        String::from_utf8_lossy(&text.stdout).into_owned(),
        serde_json::from_slice(&json.stdout).expect("check --json"),
    )
}

#[test]
fn packages_lists_exactly_what_pip_installed_from_the_head_snapshot() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    pip_install(&env, &["blastextra"]);

    // The HEAD snapshot is what is read: an install not captured yet is not listed, but named.
    let before = b.json(&["packages", "-e", e]);
    assert_eq!(before["packages"], json!([]), "{before}");
    let uncaptured = json!([
        {"change": "added", "name": "blastbase", "version": "2.0.0"},
        {"change": "added", "name": "blastextra", "version": "1.0.0"}
    ]);
    assert_eq!(before["uncaptured"], uncaptured, "{before}");
    assert_eq!(b.json(&["check", "-e", e])["uncaptured"], uncaptured);
    for command in ["packages", "check"] {
        let (_, err) = b.ok_with_stderr(&[command, "-e", e]);
        assert!(
            err.contains("package changes not captured yet")
                && err.contains("+blastbase 2.0.0 +blastextra 1.0.0")
                && err.contains("`blast snapshot` records them"),
            "{command}: {err}"
        );
    }

    b.ok(&["snapshot", "-e", e]);
    let (_, err) = b.ok_with_stderr(&["packages", "-e", e]);
    assert!(!err.contains("not captured"), "{err}");
    let report = b.json(&["packages", "-e", e]);
    assert_eq!(report["problems"], json!([]), "{report}");
    let packages = report["packages"].as_array().unwrap();
    let listed: Vec<(String, String)> = packages
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(listed, pip_list(&env));
    assert_eq!(
        listed,
        [
            ("blastbase".to_owned(), "2.0.0".to_owned()),
            ("blastextra".to_owned(), "1.0.0".to_owned())
        ]
    );

    let extra = &packages[1];
    assert_eq!(
        extra["requires"],
        json!([
            r#"blastbase>=1.0; python_version >= "3.8""#,
            r#"blastmissing>=1; python_version < "3""#,
            r#"blastpin; extra == "pin""#
        ])
    );
    assert_eq!(
        extra["console_scripts"],
        json!([{"name": "blastextra", "target": "blastextra:main"}])
    );
    assert_eq!(extra["gui_scripts"], json!([]));
    assert_eq!(
        extra["summary"],
        "blast fixture: requirements with markers and an extra, and a console script"
    );
    assert_eq!(packages[0]["requires"], json!([]));

    // RECORD, as pip wrote it: the module, the script in bin/, and sizes that match the files.
    let files = extra["files"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"blastextra/__init__.py"), "{paths:?}");
    let script = files
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with("bin/blastextra"))
        .expect("the console script is in RECORD");
    let purelib = env.join("lib").read_dir().unwrap().next().unwrap().unwrap();
    let on_disk = purelib
        .path()
        .join("site-packages")
        .join(script["path"].as_str().unwrap());
    assert_eq!(
        script["size"].as_u64().unwrap(),
        std::fs::metadata(&on_disk).unwrap().len()
    );
    let recorded: u64 = files.iter().filter_map(|f| f["size"].as_u64()).sum();
    assert_eq!(extra["size"].as_u64().unwrap(), recorded);
    assert!(recorded > 0);

    // The table: one row per distribution, with its requirements and scripts.
    let text = b.ok(&["packages", "-e", e]);
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("blastextra"))
        .expect("a blastextra row");
    assert!(row.contains("1.0.0"), "{text}");
    assert!(row.contains("blastbase>=1.0"), "{text}");
    assert!(row.trim_end().ends_with("blastextra"), "{text}");
}

#[test]
fn check_passes_on_a_consistent_env_and_names_both_sides_of_a_conflicting_install() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    pip_install(&env, &["blastpin"]);
    pip_install(&env, &["blastextra"]);
    b.ok(&["snapshot", "-e", e, "-m", "pin and extra"]);
    assert_eq!(
        pip_list(&env),
        [
            ("blastbase".to_owned(), "1.0.0".to_owned()),
            ("blastextra".to_owned(), "1.0.0".to_owned()),
            ("blastpin".to_owned(), "1.0.0".to_owned())
        ]
    );
    let (code, text, report) = blast_check(&b, e);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("no broken requirements"), "{text}");
    assert_eq!(report["unsatisfied"], json!([]));
    assert_eq!(report["explanation"], Value::Null);
    assert_eq!(report["distributions"], 3);
    assert!(pip_check(&env).0);

    // pip upgrades blastbase to 2.0.0 for blastconflict and breaks blastpin (it says so, and goes on).
    pip_install(&env, &["blastconflict"]);
    b.ok(&["snapshot", "-e", e, "-m", "conflict"]);
    let (code, text, report) = blast_check(&b, e);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("blastpin 1.0.0 requires blastbase<2, but blastbase 2.0.0 is installed"),
        "{text}"
    );
    assert_eq!(
        report["unsatisfied"],
        json!([{
            "package": "blastpin",
            "version": "1.0.0",
            "requirement": "blastbase<2",
            "requires": "blastbase",
            "installed": "2.0.0"
        }]),
        "blastextra's marker-false and extra-only requirements are not reported: {report}"
    );
    let explanation = report["explanation"].as_str().unwrap();
    for part in [
        "blastpin 1.0.0 depends on blastbase <2",
        "blastconflict 1.0.0 depends on blastbase >=2",
    ] {
        assert!(explanation.contains(part), "{explanation}");
        assert!(text.contains(part), "{text}");
    }

    // pip's own check finds the same one problem.
    let (ok, said) = pip_check(&env);
    assert!(!ok);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(
        said.starts_with("blastpin 1.0.0 has requirement blastbase<2"),
        "{said}"
    );

    // Back at the consistent snapshot the check passes again.
    b.ok(&["rollback", "-e", e]);
    assert_eq!(blast_check(&b, e).0, Some(0));
}

#[test]
fn markers_false_and_extras_only_requirements_are_not_reported() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    // blastextra alone: blastmissing (Python 2 only) and blastpin (extra "pin") are absent.
    pip_install(&env, &["blastextra"]);
    b.ok(&["snapshot", "-e", e]);
    let (code, text, report) = blast_check(&b, e);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(report["unsatisfied"], json!([]));
    assert!(pip_check(&env).0);

    // Without blastbase, the requirement whose marker holds is reported, as missing.
    support::pip_uninstall(&env, &["blastbase"]);
    b.ok(&["snapshot", "-e", e]);
    let (code, text, report) = blast_check(&b, e);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(
        report["unsatisfied"],
        json!([{
            "package": "blastextra",
            "version": "1.0.0",
            "requirement": r#"blastbase>=1.0; python_version >= "3.8""#,
            "requires": "blastbase",
            "installed": null
        }])
    );
    assert!(text.contains("but blastbase is not installed"), "{text}");
}

/// What a distribution's metadata says reaches the terminal with its control characters escaped
/// (found by exploratory testing: an escape sequence in a `Requires-Dist` marker and in a script's
/// name set the terminal's title and cleared it).
#[test]
fn packages_and_check_escape_what_metadata_says() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    write_distribution(
        &env,
        "esc-1.0.dist-info",
        &[
            (
                "METADATA",
                "Metadata-Version: 2.1\nName: esc\nVersion: 1.0\nRequires-Dist: missing-dep; platform_version != \"\x1b]0;PWNED\x07\"\n",
            ),
            (
                "entry_points.txt",
                "[console_scripts]\nev\x1b[31mil = esc:main\n",
            ),
        ],
    );
    b.ok(&["snapshot", "-e", e]);
    for command in ["packages", "check"] {
        let out = b.command(&[command, "-e", e]).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains('\x1b') && !text.contains('\x07'),
            "{command}: {text:?}"
        );
        assert!(text.contains("\\u{1b}"), "{command}: {text}");
    }
}

/// The snapshot's package list reads METADATA as Python does: an old-style `Description:` header's
/// continuation lines are not headers, so what `log` and `export` say is what is installed (found by
/// exploratory testing: a changelog line `Version: 0.9` there was exported as the version).
#[test]
fn a_continuation_line_is_not_a_header_of_the_package_list() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    write_distribution(
        &env,
        "realpkg-1.0.dist-info",
        &[(
            "METADATA",
            "Metadata-Version: 2.0\nName: realpkg\nVersion: 1.0\nDescription: Changelog\n        Version: 0.9\n          first release\n",
        )],
    );
    let snapshot = b.json(&["snapshot", "-e", e]);
    assert_eq!(snapshot["packages"][0]["version"], "1.0", "{snapshot}");
    let requirements = b.work.join("requirements.txt");
    b.ok(&[
        "export",
        "-e",
        e,
        "--format",
        "requirements",
        "-o",
        requirements.to_str().unwrap(),
    ]);
    let text = fs::read_to_string(&requirements).unwrap();
    assert!(text.lines().any(|l| l == "realpkg==1.0"), "{text}");
}

/// A distribution installed again at the same version with other files (a project's own package rebuilt
/// without a version bump, an editable install over a regular one) was "no package changes" in the
/// install's report, `blast log`, `diff`, `rollback` and `snapshot`: it is `~NAME VERSION` in each.
#[test]
fn a_reinstall_at_the_same_version_is_named_wherever_package_changes_are() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    let e = env.to_str().unwrap();
    let project = b.work.join("proj");
    copy_project("blastlocal", &project);
    let p = project.to_str().unwrap();
    let change = |change: &str, name: &str, version: &str| json!({"change": change, "name": name, "version": version});
    let reinstalled = change("reinstalled", "blastlocal", "0.1.0");

    // `--json` before the installer's arguments.
    let install = |args: &[&str]| -> Value {
        let mut all = vec!["--json", "install", "-e", e, "--offline", "--"];
        all.extend_from_slice(args);
        serde_json::from_str(&b.ok(&all)).expect("install --json")
    };
    let regular = install(&[p]);
    assert_eq!(
        regular["packages"],
        json!([change("added", "blastlocal", "0.1.0")])
    );
    let editable = install(&["-e", p]);
    assert_eq!(editable["packages"], json!([reinstalled]), "{editable}");
    // An install beside it leaves it out: its `*.dist-info` did not change.
    let beside = b.install_fixtures(&env, &["blastdep"]);
    assert_eq!(
        beside["packages"],
        json!([change("added", "blastdep", "1.0.0")])
    );

    let log = b.log(e);
    let shown: Vec<&Value> = log.iter().map(|entry| &entry["packages"]).collect();
    assert_eq!(shown[0], &beside["packages"]);
    assert_eq!(shown[1], &json!([reinstalled]));
    assert_eq!(shown[2], &regular["packages"]);
    let text = b.ok(&["log", "-e", e]);
    assert!(text.contains("\n    ~blastlocal 0.1.0\n"), "{text}");
    let diff = b.json(&["diff", "-e", e, "@~2", "@~1"]);
    assert_eq!(diff["packages"], json!([reinstalled]), "{diff}");

    let back = b.json(&["rollback", "-e", e, "@~2"]);
    assert_eq!(
        back["packages"],
        json!([reinstalled, change("removed", "blastdep", "1.0.0")]),
        "{back}"
    );
    let (ok, _) = env_python(&env, "import blastlocal");
    assert!(ok, "the regular install imports after the rollback");

    // Rebuilt by hand with other source: the directory against HEAD, then its capture.
    fs::write(
        project.join("blastlocal/__init__.py"),
        "VERSION = 'rebuilt'\n",
    )
    .unwrap();
    pip_install(&env, &["--force-reinstall", "--no-deps", p]);
    let uncaptured = b.json(&["diff", "-e", e]);
    assert_eq!(uncaptured["packages"], json!([reinstalled]), "{uncaptured}");
    assert_eq!(
        b.json(&["packages", "-e", e])["uncaptured"],
        json!([reinstalled])
    );
    let captured = b.json(&["snapshot", "-e", e]);
    assert_eq!(captured["packages"], json!([reinstalled]), "{captured}");
}
