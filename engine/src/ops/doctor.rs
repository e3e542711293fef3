//! `blast doctor`: what the sandbox can do on this machine, and what to change where it cannot.
//!
//! The whole sandbox path is tried once, as an install would run it (a kernel may let `unshare` succeed
//! and refuse a later step, as Ubuntu 24.04's AppArmor does), and the settings that usually explain a
//! refusal are read and shown next to it.

use std::path::Path;

use serde::Serialize;

use crate::error::{IoContext, Result};
use crate::sandbox::{self, Outcome, Overlay, Spec};
use crate::store::Store;

#[derive(Debug, Serialize)]
pub struct DoctorReport {
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// Whether sandboxed installs work here.
    pub fn sandbox_works(&self) -> bool {
        self.checks
            .iter()
            .find(|c| c.name == SANDBOX)
            .is_some_and(|c| c.ok)
    }
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// What to change, when it is not ok.
    pub fix: Option<String>,
}

const SANDBOX: &str = "sandbox (namespaces, overlay, private /tmp, no network)";

pub fn doctor(store: &Store) -> Result<DoctorReport> {
    let mut checks = vec![sandbox_check(store)?];
    for (file, name, good) in [
        (
            "/proc/sys/user/max_user_namespaces",
            "user.max_user_namespaces",
            "a positive number",
        ),
        (
            "/proc/sys/kernel/unprivileged_userns_clone",
            "kernel.unprivileged_userns_clone",
            "1",
        ),
        (
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "kernel.apparmor_restrict_unprivileged_userns",
            "0",
        ),
    ] {
        let Ok(value) = std::fs::read_to_string(file) else {
            continue;
        };
        let value = value.trim().to_owned();
        let ok = match good {
            "a positive number" => value.parse::<u64>().is_ok_and(|n| n > 0),
            _ => value == good,
        };
        checks.push(Check {
            name: name.to_owned(),
            detail: format!("{value} (wanted: {good})"),
            fix: (!ok).then(|| {
                format!(
                    "sysctl -w {name}={}",
                    good.replace("a positive number", "15000")
                )
            }),
            ok,
        });
    }
    Ok(DoctorReport { checks })
}

/// Runs `true` in a sandbox over a scratch overlay in the store, as an offline install would.
fn sandbox_check(store: &Store) -> Result<Check> {
    let area = store.objects().begin()?;
    let dir = |name: &str| -> Result<std::path::PathBuf> {
        let path = area.dir().join(name);
        std::fs::create_dir(&path).at("creating doctor directory", &path)?;
        Ok(path)
    };
    let (lower, root) = (dir("lower")?, dir("root")?);
    let overlay = Overlay::make(&lower, &area.dir().join("changes"), false)?;
    let probe = lower.join("written-in-the-sandbox");
    let spec = Spec {
        program: "/bin/sh".into(),
        // The path as an argument, not in the script: the store's path may hold any character.
        args: vec![
            "-c".into(),
            "echo > \"$1\"".into(),
            "sh".into(),
            probe.display().to_string(),
        ],
        set_env: Vec::new(),
        remove_env: Vec::new(),
        cwd: "/".into(),
        root,
        overlay: Some(overlay.clone()),
        writable: Vec::new(),
        visible: Vec::new(),
        hidden: Vec::new(),
        revealed: Vec::new(),
        rebound_read_only: Vec::new(),
        network: false,
        limits: sandbox::Limits::default(),
        stdout_to_stderr: true,
        second_signal_kills: false,
    };
    let check = match store.index().released(|| sandbox::run(&spec))?? {
        Ok(ran)
            if ran.outcome == Outcome::Exited(0)
                && overlay.upper(&ran).join("written-in-the-sandbox").exists()
                && !probe.exists() =>
        {
            Check {
                name: SANDBOX.into(),
                ok: true,
                detail: "works: installs run sandboxed".into(),
                fix: None,
            }
        }
        Ok(ran) => Check {
            name: SANDBOX.into(),
            ok: false,
            detail: format!(
                "set up, but a write did not land in the overlay ({:?}, store at {})",
                ran.outcome,
                store.home().display()
            ),
            fix: Some(overlay_fix(store.home())),
        },
        Err(refusal) => Check {
            name: SANDBOX.into(),
            ok: false,
            detail: format!("{}: {}", refusal.step, refusal.detail),
            fix: Some(refusal.fix(Some("--no-sandbox"))),
        },
    };
    Ok(check)
}

fn overlay_fix(home: &Path) -> String {
    format!(
        "put BLAST_HOME on a local filesystem with user extended attributes (now `{}`), or pass --no-sandbox",
        home.display()
    )
}
