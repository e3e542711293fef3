//! The installer: which program changes an environment's packages and with what command line.
//!
//! In order of preference: the environment's own pip, the base interpreter's pip pointed at the
//! environment with `--python` (pip 22.3 or later), or uv from `PATH` (`--installer` picks one). The command line is the
//! same whether it runs in the sandbox or on a staging copy (`--no-sandbox`): only the interpreter path
//! differs.

use std::path::{Path, PathBuf};

use pep508_rs::pep440_rs::Version;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::python::PythonInfo;
use crate::tree::Tree;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstallerKind {
    Pip,
    Uv,
}

impl InstallerKind {
    pub fn parse(s: &str) -> Option<InstallerKind> {
        match s {
            "pip" => Some(InstallerKind::Pip),
            "uv" => Some(InstallerKind::Uv),
            _ => None,
        }
    }
}

/// What the installer is asked to do.
#[derive(Debug, Clone)]
pub enum Request {
    /// `install SPEC… [-r FILE]… ARGS…`
    Install {
        specs: Vec<String>,
        requirements: Vec<PathBuf>,
        args: Vec<String>,
    },
    /// `uninstall NAME…`
    Uninstall { names: Vec<String> },
    /// Any other pip command, as typed after `blast pip --`.
    Pip { args: Vec<String> },
}

/// Installer options whose value names a place it writes to: outside the environment, where the
/// sandbox keeps the filesystem read-only (and `/tmp` private), such a run fails or loses what it wrote.
/// pip (optparse) also takes a long option abbreviated to a prefix no other of the command's options
/// starts with: each long one comes with the shortest prefix blast takes for it (one that pip takes,
/// or finds ambiguous among the option's own aliases), for pip 23's commands.
const WRITES_TO: &[(&str, &str)] = &[
    ("-t", "-t"),
    ("--target", "--ta"),
    ("--prefix", "--prefi"),
    ("--root", "--root"),
    ("--report", "--rep"),
    ("--log", "--log"),
    ("--log-file", "--log-"),
    ("--local-log", "--loc"),
    ("-d", "-d"),
    ("--dest", "--des"),
    ("--destination-dir", "--des"),
    ("--destination-directory", "--des"),
    ("-w", "-w"),
    ("--wheel-dir", "--w"),
    ("--src", "--s"),
    ("--source", "--s"),
    ("--source-dir", "--s"),
    ("--source-directory", "--s"),
];

/// pip's general options, which come before its command, each with whether it takes a value (pip 24).
pub(crate) const GENERAL_OPTIONS: &[(&str, bool)] = &[
    ("--cache-dir", true),
    ("--cert", true),
    ("--client-cert", true),
    ("--debug", false),
    ("--disable-pip-version-check", false),
    ("--exists-action", true),
    ("--help", false),
    ("--isolated", false),
    ("--keyring-provider", true),
    ("--local-log", true),
    ("--log", true),
    ("--log-file", true),
    ("--no-cache-dir", false),
    ("--no-color", false),
    ("--no-input", false),
    ("--no-python-version-warning", false),
    ("--proxy", true),
    ("--python", true),
    ("--quiet", false),
    ("--require-virtualenv", false),
    ("--resume-retries", true),
    ("--retries", true),
    ("--timeout", true),
    ("--trusted-host", true),
    ("--use-deprecated", true),
    ("--use-feature", true),
    ("--verbose", false),
    ("--version", false),
];

/// Where pip's command (`install`, `download`) is in `args`, typed after `blast pip --`: the first
/// word that is neither a general option nor the value of one (`--timeout 10 download`). A long option
/// may be abbreviated to a prefix of one option alone, as optparse takes it.
pub fn pip_command(args: &[String]) -> Option<usize> {
    let mut i = 0;
    while let Some(word) = args.get(i) {
        if !word.starts_with('-') {
            return Some(i);
        }
        let takes_value = word.starts_with("--")
            && !word.contains('=')
            && match GENERAL_OPTIONS.iter().find(|(name, _)| name == word) {
                Some((_, value)) => *value,
                None => {
                    let mut matching = GENERAL_OPTIONS
                        .iter()
                        .filter(|(name, _)| name.starts_with(word.as_str()));
                    matches!((matching.next(), matching.next()), (Some((_, true)), None))
                }
            };
        i += if takes_value { 2 } else { 1 };
    }
    None
}

/// pip's commands that have a `--local` option of their own (which `--loc` abbreviates there).
const HAVE_LOCAL: &[&str] = &["freeze", "inspect", "list"];

/// The long options of [`WRITES_TO`] that pip's `command` has, which pip also reads from `PIP_<OPTION>`.
fn options_from_environment(command: &str) -> Vec<&'static str> {
    let mut options = vec!["--log", "--log-file", "--local-log"];
    let source = ["--src", "--source", "--source-dir", "--source-directory"];
    match command {
        "install" => options.extend(["--target", "--prefix", "--root", "--report"]),
        "download" => options.extend(["--dest", "--destination-dir", "--destination-directory"]),
        "wheel" => options.push("--wheel-dir"),
        _ => return options,
    }
    options.extend(source);
    options
}

/// The option of [`WRITES_TO`] that `word` names, in full or abbreviated, given pip's `command`.
fn writing_option(word: &str, command: Option<&str>) -> Option<&'static str> {
    if command.is_some_and(|c| HAVE_LOCAL.contains(&c)) && "--local".starts_with(word) {
        return None;
    }
    WRITES_TO
        .iter()
        .find(|(option, shortest)| option.starts_with(word) && word.starts_with(shortest))
        .map(|(option, _)| *option)
}

impl Request {
    /// The first option of the installer's arguments that writes outside `env_root`, as typed with its
    /// value (a relative one is from `cwd`, `..` and symlinks followed). `--report -` writes to
    /// standard output. Options are matched as pip reads them (`--target DIR`, `--targ=DIR`, `-tDIR`).
    pub fn writes_outside(&self, env_root: &Path, cwd: &Path) -> Option<String> {
        let (args, command) = match self {
            Request::Install { args, .. } => (args, Some("install")),
            Request::Pip { args } => (args, pip_command(args).map(|i| args[i].as_str())),
            Request::Uninstall { .. } => return None,
        };
        // Both sides with symlinks resolved: the environment's recorded path may lead through one.
        let env_root =
            crate::fsutil::resolve_path(env_root).unwrap_or_else(|_| env_root.to_owned());
        let mut placed = false;
        // Each as typed, in full, and its value.
        let mut given: Vec<(String, &str, String)> = Vec::new();
        let mut words = args.iter();
        while let Some(word) = words.next() {
            let (option, attached) = match word.split_once('=') {
                Some((option, value)) if option.starts_with("--") => (option, Some(value)),
                _ if !word.starts_with("--") && word.len() > 2 && word.is_char_boundary(2) => {
                    let (option, value) = word.split_at(2);
                    (option, Some(value.strip_prefix('=').unwrap_or(value)))
                }
                _ => (word.as_str(), None),
            };
            let Some(full) = writing_option(option, command) else {
                continue;
            };
            let value = match attached {
                Some(value) => value,
                None => words.next().map_or("", String::as_str),
            };
            given.push((option.to_owned(), full, value.to_owned()));
        }
        // pip reads each long option of the command from the environment too (`PIP_TARGET=DIR`),
        // which the installer inherits, unless `--isolated`. (A pip configuration file may set one as
        // well: that is not looked at.)
        let isolated = args.iter().any(|a| a == "--isolated");
        let from_environment = command.filter(|_| !isolated).map(options_from_environment);
        for full in from_environment.unwrap_or_default() {
            let var = format!("PIP_{}", full[2..].replace('-', "_").to_ascii_uppercase());
            if let Some(value) = std::env::var(&var).ok().filter(|v| !v.is_empty()) {
                given.push((format!("{var}="), full, value));
            }
        }
        for (option, full, value) in &given {
            let (full, value) = (*full, value.as_str());
            placed |= matches!(
                full,
                "-d" | "--dest"
                    | "--destination-dir"
                    | "--destination-directory"
                    | "-w"
                    | "--wheel-dir"
            );
            let to_stdout = full == "--report" && value == "-";
            let target = crate::fsutil::lexically_normal(&cwd.join(value));
            let target = crate::fsutil::resolve_path(&target).unwrap_or(target);
            if !(to_stdout || target.starts_with(&env_root)) {
                let space = if option.ends_with('=') { "" } else { " " };
                return Some(format!("{option}{space}{value}"));
            }
        }
        // Commands that write outside by themselves: `download` and `wheel` into the working
        // directory unless told where, `config set|unset|edit` into the user's configuration unless
        // given the environment's (`--site`).
        let cwd = crate::fsutil::resolve_path(cwd).unwrap_or_else(|_| cwd.to_owned());
        let said = |word: &str| args.iter().any(|a| a == word);
        match command {
            Some(verb @ ("download" | "wheel")) if !placed && !cwd.starts_with(&env_root) => Some(
                format!("pip {verb} (into the working directory, no -d or -w)"),
            ),
            Some("config")
                if ["set", "unset", "edit"].iter().any(|verb| said(verb)) && !said("--site") =>
            {
                Some("pip config (into your own configuration, no --site)".to_owned())
            }
            _ => None,
        }
    }

    /// Refuses a requirements file (`-r`) that cannot be opened or is a directory, before anything is
    /// set up (found by exploratory testing: the sandbox was made for pip to say so). Nothing is read:
    /// `-r /dev/stdin` stays for the installer.
    pub fn check_requirements_files(&self) -> Result<()> {
        let Request::Install { requirements, .. } = self else {
            return Ok(());
        };
        for file in requirements {
            let opened = std::fs::File::open(file).and_then(|f| f.metadata());
            match opened {
                Ok(meta) if meta.is_dir() => {
                    return Err(Error::Invalid(format!(
                        "`-r {}` names a directory: name a requirements file",
                        file.display()
                    )));
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(Error::Invalid(format!(
                        "requirements file `{}` cannot be read: {e}",
                        file.display()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The words of the history entry ("install rich", "uninstall idna", "pip install -U rich"). An
    /// install that names what it installs only in the installer's arguments (`-- -e ./project`) is
    /// described by them.
    pub fn describe(&self) -> String {
        match self {
            Request::Install {
                specs,
                requirements,
                args,
            } => {
                let mut words = vec!["install".to_owned()];
                words.extend(specs.iter().map(|spec| without_secrets(spec)));
                words.extend(requirements.iter().map(|r| format!("-r {}", r.display())));
                if words.len() == 1 {
                    words.extend(args.iter().map(|arg| without_secrets(arg)));
                }
                words.join(" ")
            }
            Request::Uninstall { names } => format!("uninstall {}", names.join(" ")),
            Request::Pip { args } => {
                let words: Vec<String> = args.iter().map(|arg| without_secrets(arg)).collect();
                format!("pip {}", words.join(" "))
            }
        }
    }
}

/// `word` with the password (or token) of each URL in it shown as `****`, as pip shows URLs: history
/// is read by others (`blast log` pasted into a bug report, `export --history`).
pub(crate) fn without_secrets(word: &str) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(scheme_end) = rest.find("://") {
        let (head, tail) = rest.split_at(scheme_end + 3);
        out.push_str(head);
        let end = tail.find(['/', '?', '#', ' ']).unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                match authority[..at].split_once(':') {
                    Some((user, _)) => out.push_str(&format!("{user}:****")),
                    None => out.push_str("****"),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// uv's variables for how it puts files from its cache into an environment, and where the cache is.
const UV_LINK_MODE: &str = "UV_LINK_MODE";
const UV_CACHE_DIR: &str = "UV_CACHE_DIR";

/// A chosen installer.
#[derive(Debug, Clone)]
pub struct Installer {
    pub kind: InstallerKind,
    /// The program, when it is not the environment's own interpreter.
    program: Option<PathBuf>,
    /// The first arguments, before the request's: `-m pip` or `pip`.
    lead: Vec<String>,
    /// Whether it must be pointed at the environment's interpreter (it is not the env's own pip).
    needs_python: bool,
    /// What users see: "the environment's pip", "uv at /usr/bin/uv".
    pub description: String,
}

/// Picks the installer for an environment whose committed content is `tree` at `root`.
pub fn choose(
    root: &Path,
    python: &PythonInfo,
    tree: &Tree,
    preference: Option<InstallerKind>,
) -> Result<Installer> {
    // Every installer runs on the base interpreter, through the environment's `bin/python` or not.
    if !Path::new(&python.executable).exists() {
        return Err(python.gone());
    }
    let env_pip = tree
        .entries
        .contains_key(&format!("{}/pip/__init__.py", python.purelib));
    // The base interpreter's own site-packages, or Debian's and Ubuntu's `dist-packages` for theirs
    // (`/usr/lib/python3.11` → `/usr/lib/python3/dist-packages`).
    let stdlib = Path::new(&python.stdlib);
    let base_site = [
        Some(stdlib.join("site-packages")),
        stdlib.parent().map(|lib| lib.join("python3/dist-packages")),
    ]
    .into_iter()
    .flatten()
    .find(|site| site.join("pip/__init__.py").is_file());
    // pip installs into another environment (`--python`) from 22.3 on; Python 3.7's own pip is 22.0.
    let base_pip_too_old = base_site
        .as_deref()
        .and_then(pip_version_in)
        .filter(|version| *version < Version::new([22, 3]));
    let base_pip = base_site.is_some() && base_pip_too_old.is_none();
    let uv = find_on_path("uv");
    let pip = if env_pip {
        Some(Installer {
            kind: InstallerKind::Pip,
            program: None,
            lead: vec!["-m".into(), "pip".into()],
            needs_python: false,
            description: "the environment's pip".into(),
        })
    } else if base_pip {
        Some(Installer {
            kind: InstallerKind::Pip,
            program: Some(PathBuf::from(&python.executable)),
            lead: vec!["-m".into(), "pip".into()],
            needs_python: true,
            description: format!("the pip of {}", python.executable),
        })
    } else {
        None
    };
    let uv = uv.map(|path| Installer {
        kind: InstallerKind::Uv,
        description: format!("uv at {}", path.display()),
        program: Some(path),
        lead: vec!["pip".into()],
        needs_python: true,
    });
    let none = |detail: &str, fix: &str| Error::NoInstaller {
        env: root.display().to_string(),
        detail: detail.to_owned(),
        fix: fix.to_owned(),
    };
    let old_pip = base_pip_too_old.map(|version| {
        format!(
            "the pip of {} is {version}, and pip installs into another environment (`--python`) from \
             22.3 on",
            python.executable
        )
    });
    let upgrade = format!(
        "create the environment with `--seed` (pip in it), upgrade that pip (`{} -m pip install -U \
         pip`), or put uv on PATH",
        crate::shell::word(&python.executable)
    );
    match preference {
        Some(InstallerKind::Pip) => pip.ok_or_else(|| match &old_pip {
            Some(old) => none(old, &upgrade),
            None => none(
                "neither the environment nor its base interpreter has pip",
                "create the environment with `--seed`, or pass `--installer uv` with uv on PATH",
            ),
        }),
        Some(InstallerKind::Uv) => uv.ok_or_else(|| {
            none(
                "`uv` is not on PATH",
                "put uv on PATH, or leave out `--installer uv` to use pip",
            )
        }),
        None => pip.or(uv).ok_or_else(|| match &old_pip {
            Some(old) => none(&format!("{old}, and `uv` is not on PATH"), &upgrade),
            None => none(
                "the environment and its base interpreter have no pip, and `uv` is not on PATH",
                "create the environment with `--seed` for pip, or put uv on PATH",
            ),
        }),
    }
}

/// The version of the pip installed in `site_packages`, from its `pip-VERSION.dist-info` (the newest,
/// where an upgrade left an old one behind).
fn pip_version_in(site_packages: &Path) -> Option<Version> {
    std::fs::read_dir(site_packages)
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            name.strip_prefix("pip-")?
                .strip_suffix(".dist-info")?
                .parse()
                .ok()
        })
        .max()
}

impl Installer {
    /// The program to run for the environment whose interpreter is `env_python`.
    pub fn program(&self, env_python: &Path) -> PathBuf {
        self.program
            .clone()
            .unwrap_or_else(|| env_python.to_owned())
    }

    /// The arguments (after the program) that carry out `request` on the environment whose
    /// interpreter is `env_python`.
    pub fn args(&self, request: &Request, env_python: &Path) -> Vec<String> {
        let mut out = self.lead.clone();
        let python = env_python.display().to_string();
        let (verb, rest): (Option<&str>, Vec<String>) = match request {
            Request::Install {
                specs,
                requirements,
                args,
            } => {
                let mut rest: Vec<String> = requirements
                    .iter()
                    .flat_map(|r| ["-r".to_owned(), r.display().to_string()])
                    .collect();
                rest.extend(specs.iter().cloned());
                rest.extend(args.iter().cloned());
                (Some("install"), rest)
            }
            Request::Uninstall { names } => {
                let mut rest = names.clone();
                if self.kind == InstallerKind::Pip {
                    rest.insert(0, "--yes".into());
                }
                (Some("uninstall"), rest)
            }
            Request::Pip { args } => (None, args.clone()),
        };
        match self.kind {
            InstallerKind::Pip => {
                // pip takes its general options before the command.
                if self.needs_python {
                    out.extend(["--python".to_owned(), python]);
                }
                out.push("--disable-pip-version-check".into());
                out.extend(verb.map(str::to_owned));
                out.extend(rest);
            }
            InstallerKind::Uv => {
                // uv takes them after it.
                let mut rest = rest.into_iter();
                match verb {
                    Some(verb) => out.push(verb.to_owned()),
                    None => out.extend(rest.next()),
                }
                out.extend(["--python".to_owned(), python]);
                out.extend(rest);
            }
        }
        out
    }

    /// Variables of the installer's environment in the sandbox beyond the common ones. uv is pointed at
    /// `cache`, the real path of the cache blast binds in and reads back (a `cache-dir` of uv's
    /// configuration would name one the sandbox keeps read-only), and asked to link from it by
    /// symlink unless the user chose how: its default hardlinks cannot reach into the sandbox's
    /// overlay (the cache is another mount), so it would copy every file. The capture stores the files
    /// the symlinks point to (`capture::CacheLinks`).
    pub fn sandbox_env(&self, request: &Request, cache: Option<&Path>) -> Vec<(String, String)> {
        let (InstallerKind::Uv, Some(cache)) = (self.kind, cache) else {
            return Vec::new();
        };
        let mut vars = vec![(UV_CACHE_DIR.to_owned(), cache.display().to_string())];
        if self.links_by_symlink(request, Some(cache)) {
            vars.push((UV_LINK_MODE.to_owned(), "symlink".to_owned()));
        }
        vars
    }

    /// What tells the installer that the sandbox has no network (`--offline`): uv then resolves from
    /// its cache and the local files named (without it, it asks the index and fails only after retrying
    /// name resolution); pip does not retry what cannot work.
    pub fn offline_env(&self) -> (String, String) {
        let (name, value) = match self.kind {
            InstallerKind::Uv => ("UV_OFFLINE", "1"),
            InstallerKind::Pip => ("PIP_RETRIES", "0"),
        };
        (name.to_owned(), value.to_owned())
    }

    /// Whether uv is asked to link from `cache` by symlink (see [`Installer::sandbox_env`]): unless the
    /// user chose how, and not to uninstall, which links nothing.
    fn links_by_symlink(&self, request: &Request, cache: Option<&Path>) -> bool {
        let args: &[String] = match request {
            Request::Install { args, .. } | Request::Pip { args } => args,
            Request::Uninstall { .. } => return false,
        };
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        // uv refuses symlinks without a cache, and a cache of the user's naming is not the one bound.
        let option = |a: &String| {
            ["--link-mode", "--no-cache", "--cache-dir"]
                .iter()
                .any(|o| a == o || a.strip_prefix(o).is_some_and(|v| v.starts_with('=')))
                || a == "-n"
        };
        self.kind == InstallerKind::Uv
            && cache.is_some()
            && !set(UV_LINK_MODE)
            && !set("UV_NO_CACHE")
            && !args.iter().any(option)
    }

    /// Whether all the installer writes in the sandbox is small: uv's symlinks into `cache` and the
    /// whiteouts of what it removes. Such changes are collected in memory
    /// (`sandbox::Overlay::in_memory`). Whole files go to the disk, where the store takes them by
    /// rename; pip's too when it uninstalls, as it first moves what it removes aside (a copy through
    /// the overlay), and uv's when it compiles bytecode (as much again as the files, moved into the
    /// environment by rename from the disk).
    pub fn writes_little(&self, request: &Request, cache: Option<&Path>) -> bool {
        let compiles = match request {
            Request::Install { args, .. } | Request::Pip { args } => args
                .iter()
                .any(|a| a == "--compile-bytecode" || a == "--compile"),
            Request::Uninstall { .. } => false,
        } || std::env::var_os("UV_COMPILE_BYTECODE").is_some_and(|v| !v.is_empty());
        self.kind == InstallerKind::Uv
            && (matches!(request, Request::Uninstall { .. })
                || (self.links_by_symlink(request, cache) && !compiles))
    }

    /// Where the installer keeps its cache (bound read-write into the sandbox).
    pub fn caches(&self) -> Vec<PathBuf> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        // Without `HOME` (cron, `env -i`), the home the password database names, as the installer
        // outside would find it (found by exploratory testing: inside, uv looked in the home of the
        // id the sandbox maps root to, read-only, and failed).
        let cache_home = var("XDG_CACHE_HOME").map(PathBuf::from).or_else(|| {
            var("HOME")
                .map(PathBuf::from)
                .or_else(crate::fsutil::password_db_home)
                .map(|home| home.join(".cache"))
        });
        let (own, default) = match self.kind {
            InstallerKind::Pip => ("PIP_CACHE_DIR", "pip"),
            InstallerKind::Uv => (UV_CACHE_DIR, "uv"),
        };
        var(own)
            .map(PathBuf::from)
            .or_else(|| cache_home.map(|c| c.join(default)))
            .into_iter()
            .collect()
    }
}

/// The first executable named `name` on `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    crate::fsutil::find_executable(name, std::env::split_paths(&std::env::var_os("PATH")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by exploratory testing: `blast pip -- install -i https://user:token@…` kept the token in
    /// the history.
    #[test]
    fn history_shows_no_password_of_a_url() {
        let pip = Request::Pip {
            args: [
                "install",
                "-i",
                "https://alice:s3cret@pypi.example/simple",
                "--extra-index-url=http://T0KEN@10.0.0.1:8080/simple?x=a@b",
                "blastdep @ https://carol:pw@host.example/x.whl",
                "git+https://github.com/o/r@v1",
            ]
            .map(str::to_owned)
            .to_vec(),
        };
        assert_eq!(
            pip.describe(),
            "pip install -i https://alice:****@pypi.example/simple \
             --extra-index-url=http://****@10.0.0.1:8080/simple?x=a@b \
             blastdep @ https://carol:****@host.example/x.whl git+https://github.com/o/r@v1"
        );
        let install = Request::Install {
            specs: vec!["blastdep @ https://carol:pw@host.example/x.whl".into()],
            requirements: Vec::new(),
            args: Vec::new(),
        };
        assert_eq!(
            install.describe(),
            "install blastdep @ https://carol:****@host.example/x.whl"
        );
    }

    #[test]
    fn options_that_write_outside_the_environment_are_found() {
        let outside = |args: &[&str]| {
            Request::Pip {
                args: args.iter().map(|s| s.to_string()).collect(),
            }
            .writes_outside(Path::new("/work/.venv"), Path::new("/work"))
        };
        let found = |option: &str| Some(option.to_owned());
        assert_eq!(
            outside(&["download", "-d", "/srv/wheels", "rich"]),
            found("-d /srv/wheels")
        );
        assert_eq!(
            outside(&["download", "rich"]),
            found("pip download (into the working directory, no -d or -w)")
        );
        assert_eq!(outside(&["download", "-d", "/work/.venv/w", "rich"]), None);
        assert_eq!(
            outside(&["config", "set", "global.timeout", "60"]),
            found("pip config (into your own configuration, no --site)")
        );
        assert_eq!(
            outside(&["config", "--site", "set", "global.timeout", "60"]),
            None
        );
        assert_eq!(outside(&["config", "list"]), None);
        // pip's general options before its command, their values no command.
        assert_eq!(
            outside(&["--timeout", "10", "download", "rich"]),
            found("pip download (into the working directory, no -d or -w)")
        );
        assert_eq!(
            outside(&["-v", "--tim", "10", "--no-input", "wheel", "."]),
            found("pip wheel (into the working directory, no -d or -w)")
        );
        assert_eq!(
            outside(&[
                "--retries=2",
                "--proxy",
                "http://p:3128",
                "config",
                "set",
                "global.timeout",
                "1"
            ]),
            found("pip config (into your own configuration, no --site)")
        );
        assert_eq!(outside(&["--cache-dir", "download", "list"]), None);
        assert_eq!(
            outside(&["install", "--target=/opt/lib", "rich"]),
            found("--target /opt/lib")
        );
        assert_eq!(
            outside(&["install", "-t/opt/lib", "rich"]),
            found("-t /opt/lib")
        );
        assert_eq!(outside(&["wheel", "-wdist", "."]), found("-w dist"));
        assert_eq!(
            outside(&["install", "--local-log", "/var/log/pip", "rich"]),
            found("--local-log /var/log/pip")
        );
        assert_eq!(
            outside(&["install", "--log", "-", "rich"]),
            found("--log -")
        );
        assert_eq!(
            outside(&["install", "--dry-run", "--report", "-", "rich"]),
            None
        );
        // Into the environment, which the sandbox lets the installer write.
        assert_eq!(
            outside(&["install", "--target", ".venv/vendor", "rich"]),
            None
        );
        assert_eq!(outside(&["install", "--prefix=/work/.venv", "rich"]), None);
        assert_eq!(
            outside(&["install", "--prefix", "/work", "rich"]),
            found("--prefix /work")
        );
        assert_eq!(
            outside(&["install", "--root-user-action=ignore", "rich"]),
            None
        );
        assert_eq!(outside(&["install", "-vvv", "rich"]), None);
        // Abbreviated as pip takes them, but not where the prefix is another option's.
        assert_eq!(
            outside(&["install", "--targ", "/opt/lib", "rich"]),
            found("--targ /opt/lib")
        );
        assert_eq!(
            outside(&["download", "--destination-directory=/srv", "rich"]),
            found("--destination-directory /srv")
        );
        assert_eq!(outside(&["wheel", "--w", "dist", "."]), found("--w dist"));
        assert_eq!(outside(&["install", "--pre", "/opt/rich.whl"]), None);
        // pip install has no `--local`: there it is `--local-log`; pip list has one.
        assert_eq!(
            outside(&["install", "--local", "/opt/pip.log", "rich"]),
            found("--local /opt/pip.log")
        );
        assert_eq!(outside(&["list", "--local", "/opt"]), None);
        assert_eq!(outside(&["freeze", "--loc"]), None);
        // `..` leaves the environment whatever the words before it.
        assert_eq!(
            outside(&["install", "--target", ".venv/lib/../../vendor", "rich"]),
            found("--target .venv/lib/../../vendor")
        );
        assert_eq!(
            outside(&["install", "--target", "../work/.venv/./vendor", "rich"]),
            None
        );
        assert_eq!(
            Request::Uninstall {
                names: vec!["-t".into()]
            }
            .writes_outside(Path::new("/work/.venv"), Path::new("/work")),
            None
        );
    }

    #[test]
    fn an_install_is_described_by_what_it_names() {
        let install = |specs: &[&str], requirements: &[&str], args: &[&str]| Request::Install {
            specs: specs.iter().map(|s| s.to_string()).collect(),
            requirements: requirements.iter().map(PathBuf::from).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            install(&["rich"], &["dev.txt"], &["--no-index"]).describe(),
            "install rich -r dev.txt"
        );
        assert_eq!(
            install(&[], &[], &["-e", "./project"]).describe(),
            "install -e ./project"
        );
    }

    fn uv() -> Installer {
        Installer {
            kind: InstallerKind::Uv,
            program: Some(PathBuf::from("/usr/bin/uv")),
            lead: vec!["pip".into()],
            needs_python: true,
            description: "uv".into(),
        }
    }

    fn install(args: &[&str]) -> Request {
        Request::Install {
            specs: vec!["rich".into()],
            requirements: Vec::new(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn uv_is_pointed_at_the_bound_cache_and_links_by_symlink_unless_the_user_chose_otherwise() {
        if ["UV_LINK_MODE", "UV_NO_CACHE"]
            .iter()
            .any(|v| std::env::var_os(v).is_some())
        {
            eprintln!("skipping: UV_LINK_MODE or UV_NO_CACHE is set in this environment");
            return;
        }
        let cache = Path::new("/cache/uv");
        let vars = |request: &Request| uv().sandbox_env(request, Some(cache));
        let pinned = ("UV_CACHE_DIR".to_owned(), "/cache/uv".to_owned());
        let symlinks = ("UV_LINK_MODE".to_owned(), "symlink".to_owned());
        assert_eq!(vars(&install(&[])), [pinned.clone(), symlinks]);
        for chosen in [
            &["--link-mode", "copy"][..],
            &["--link-mode=clone"],
            &["--no-cache"],
            &["-n"],
            &["--cache-dir", "/elsewhere"],
        ] {
            assert_eq!(
                vars(&install(chosen)),
                std::slice::from_ref(&pinned),
                "{chosen:?}"
            );
        }
        let uninstall = Request::Uninstall {
            names: vec!["rich".into()],
        };
        assert_eq!(vars(&uninstall), [pinned]);
        let pip = Installer {
            kind: InstallerKind::Pip,
            ..uv()
        };
        assert!(pip.sandbox_env(&install(&[]), Some(cache)).is_empty());
    }
}
