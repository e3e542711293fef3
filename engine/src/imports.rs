//! Import tracking: which installed distributions an environment's programs really import, and which
//! imported modules no installed distribution provides.
//!
//! Enabling it writes two files into the environment's purelib: [`HOOK_PTH`], which `site` runs at
//! every interpreter start, and [`HOOK_MODULE`], which it imports. The module puts a finder at the
//! front of `sys.meta_path` that notes the top-level name of each module imported for the first time
//! (one set insertion; it returns `None`, so the import goes on as usual) and, at exit, writes one
//! record of the process under `$BLAST_HOME/imports/<env id>/` (the path is written into the module
//! when tracking is enabled). The two files are blast's, not the environment's: capture leaves them
//! out as it does `__pycache__`, so they are in no snapshot, a rollback or sync leaves them where they
//! are (tracking survives a rollback), and images and other environments never get them.
//!
//! A record is a text file `<pid>-<random hex>.txt`, one line per top-level name the process imported
//! that is neither in the standard library nor under the base interpreter's prefix: `<name> <kind>`,
//! where kind is `module` (imported), `local` (imported from a file under the process's working
//! directory or its script's directory, outside the environment: the project's own code) or `failed`
//! (looked for but never imported: an `ImportError` caught by the program). The hook never raises into
//! the program: whatever goes wrong while recording is dropped. A process killed by a signal or ended
//! by `os._exit` leaves no record.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use store_format::{Node, SnapshotId};

use crate::error::{Error, IoContext, Result};
use crate::packages::Distribution;
use crate::store::{Env, Store};

/// The module the hook is; its name starts with `_blast` so no distribution would ship it.
pub const HOOK_MODULE: &str = "_blast_imports.py";
/// The `.pth` file that imports it at interpreter start.
pub const HOOK_PTH: &str = "_blast_imports.pth";

/// What the hook's `.pth` holds.
const HOOK_PTH_LINE: &str = "import _blast_imports\n";

/// Whether the file `name` at `path` is one of the hook's files as blast writes them, which capture
/// leaves out wherever they are. A file of that name with other bytes is content like any other:
/// code planted under the hook's name must show as a change, and be captured.
pub fn is_hook_file(name: &str, path: &Path) -> bool {
    let is_hook = |bytes: &[u8]| match name {
        HOOK_PTH => bytes == HOOK_PTH_LINE.as_bytes(),
        HOOK_MODULE => {
            let (before, after) = HOOK_SOURCE
                .split_once("@RECORDS@")
                .unwrap_or((HOOK_SOURCE, ""));
            bytes.len() > before.len() + after.len()
                && bytes.starts_with(before.as_bytes())
                && bytes.ends_with(after.as_bytes())
                && std::str::from_utf8(&bytes[before.len()..bytes.len() - after.len()])
                    .is_ok_and(|literal| serde_json::from_str::<String>(literal).is_ok())
        }
        _ => false,
    };
    (name == HOOK_MODULE || name == HOOK_PTH) && std::fs::read(path).is_ok_and(|b| is_hook(&b))
}

/// The hook; `@RECORDS@` becomes the records directory as a Python string literal.
const HOOK_SOURCE: &str = r#""""blast's import tracking for this environment; `blast imports --disable` removes it.

Written by blast and not part of the environment's content (snapshots leave it out). A finder at the
front of sys.meta_path notes the top-level name of each module imported for the first time and lets
the import go on; at exit one record of this process is written under RECORDS. Nothing here may break
the program: every failure is dropped.
"""

import atexit
import sys

RECORDS = @RECORDS@

_seen = set()


class _Finder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        # Asked only for modules not in sys.modules yet: one set insertion per new module.
        _seen.add(name.partition(".")[0])
        return None


def _under(path, roots):
    return any(path.startswith(root) for root in roots)


def _origin(module):
    origin = getattr(module, "__file__", None)
    if not isinstance(origin, str):
        origin = next(iter(getattr(module, "__path__", None) or ()), None)
    return origin if isinstance(origin, str) else None


def _record():
    try:
        import os

        sep = os.sep
        base = {os.path.join(p, "") for p in (sys.base_prefix, sys.base_exec_prefix)}
        env = {os.path.join(p, "") for p in (sys.prefix, sys.exec_prefix)}
        local = set()
        try:
            local.add(os.path.join(os.getcwd(), ""))
        except OSError:
            pass  # The working directory was removed: only the script's counts.
        if sys.path and sys.path[0]:
            local.add(os.path.join(os.path.abspath(sys.path[0]), ""))
        skip = set(getattr(sys, "stdlib_module_names", ()))
        skip.update(sys.builtin_module_names)
        skip.update(("__main__", "_blast_imports"))
        names = set(_seen)
        names.update(n.partition(".")[0] for n in list(sys.modules) if isinstance(n, str))
        lines = []
        for name in sorted(names - skip):
            if not name.isidentifier():
                continue
            module = sys.modules.get(name)
            if module is None:
                lines.append(name + " failed\n")
                continue
            origin = _origin(module)
            kind = "module"
            # Frozen and built-in modules of interpreters before 3.10, which has no
            # sys.stdlib_module_names (`_frozen_importlib`, `zipimport`): the interpreter's own.
            if origin is None and getattr(getattr(module, "__spec__", None), "origin", None) in (
                "frozen",
                "built-in",
            ):
                continue
            if origin is not None:
                origin = os.path.abspath(origin)
                if _under(origin, base) and not _under(origin, env):
                    continue
                if _under(origin, local) and not _under(origin, env):
                    kind = "local"
            lines.append(name + " " + kind + "\n")
        if not lines:
            return
        os.makedirs(RECORDS, exist_ok=True)
        stem = "%d-%s" % (os.getpid(), os.urandom(6).hex())
        partial = RECORDS + sep + "." + stem + ".partial"
        with open(partial, "w", encoding="utf-8") as out:
            out.writelines(lines)
        os.replace(partial, RECORDS + sep + stem + ".txt")
    except BaseException:
        pass


sys.meta_path.insert(0, _Finder)
atexit.register(_record)
"#;

/// The hook of one environment, as `enable_tracking` and `disable_tracking` leave it.
#[derive(Debug, Serialize)]
pub struct Tracking {
    pub env: String,
    /// Whether the hook is in place now.
    pub enabled: bool,
    /// Whether it was in place before.
    pub was_on: bool,
    /// Its two files.
    pub files: Vec<String>,
    /// Where processes write their records.
    pub records: String,
    /// Whether any were written there.
    pub has_records: bool,
}

/// Where the processes of environment `env_id` write their records.
pub fn records_dir(store: &Store, env_id: &str) -> PathBuf {
    store.home().join("imports").join(env_id)
}

fn hook_paths(env: &Env) -> (PathBuf, PathBuf) {
    let purelib = env.root().join(&env.record.python.purelib);
    (purelib.join(HOOK_MODULE), purelib.join(HOOK_PTH))
}

/// Puts the hook into the environment (again, when it is there: the module is rewritten in place).
pub fn enable_tracking(store: &Store, env: &Env) -> Result<Tracking> {
    let (module, pth) = hook_paths(env);
    let purelib = module.parent().unwrap_or(env.root());
    if !purelib.is_dir() {
        return Err(Error::Invalid(format!(
            "environment `{}` has no site-packages at `{}`: `blast rollback -e {} --force HEAD` restores it",
            env.label(),
            purelib.display(),
            env.label()
        )));
    }
    let was_on = module.is_file() && pth.is_file();
    let records = records_dir(store, &env.record.id);
    std::fs::create_dir_all(&records).at("creating", &records)?;
    let records_str = records
        .to_str()
        .ok_or_else(|| Error::NonUtf8Path(records.clone()))?;
    // A JSON string is also a Python string literal (the same escapes; UTF-8 source).
    let literal = serde_json::to_string(records_str)
        .map_err(|e| Error::Invalid(format!("cannot quote `{records_str}`: {e}")))?;
    // The `.pth` goes first and comes back last, after the whole module: an interpreter starting
    // meanwhile finds no hook or a complete one.
    crate::fsutil::remove_file_if_exists(&pth)?;
    std::fs::write(&module, HOOK_SOURCE.replace("@RECORDS@", &literal)).at("writing", &module)?;
    std::fs::write(&pth, HOOK_PTH_LINE).at("writing", &pth)?;
    Ok(tracking(env, &module, &pth, &records, true, was_on))
}

/// Takes the hook out of the environment; the records written so far stay for `blast imports`.
pub fn disable_tracking(store: &Store, env: &Env) -> Result<Tracking> {
    let (module, pth) = hook_paths(env);
    let was_on = module.exists() || pth.exists();
    // The `.pth` first: no interpreter starts looking for a module that is gone.
    crate::fsutil::remove_file_if_exists(&pth)?;
    crate::fsutil::remove_file_if_exists(&module)?;
    if let Some(cache) = module.parent().map(|p| p.join(crate::capture::PYCACHE)) {
        for entry in std::fs::read_dir(&cache).into_iter().flatten().flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("_blast_imports.") && n.ends_with(".pyc"))
            {
                crate::fsutil::remove_file_if_exists(&entry.path())?;
            }
        }
    }
    let records = records_dir(store, &env.record.id);
    Ok(tracking(env, &module, &pth, &records, false, was_on))
}

fn tracking(
    env: &Env,
    module: &Path,
    pth: &Path,
    records: &Path,
    enabled: bool,
    was_on: bool,
) -> Tracking {
    Tracking {
        env: env.label().to_owned(),
        enabled,
        was_on,
        files: [module, pth].map(|p| p.display().to_string()).to_vec(),
        has_records: std::fs::read_dir(records).is_ok_and(|mut entries| entries.next().is_some()),
        records: records.display().to_string(),
    }
}

/// Deletes the records of an environment (when the environment itself goes).
pub fn remove_records(store: &Store, env_id: &str) -> Result<()> {
    let records = records_dir(store, env_id);
    match std::fs::remove_dir_all(&records) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at("removing", &records),
        _ => Ok(()),
    }
}

/// What the records of an environment say about its HEAD snapshot's distributions.
#[derive(Debug, Serialize)]
pub struct ImportsReport {
    pub env: String,
    pub snapshot: SnapshotId,
    /// Whether the hook is in the environment now.
    pub tracking: bool,
    /// How many process records were read.
    pub records: usize,
    /// Distributions at least one of whose top-level names was imported.
    pub imported: Vec<DistributionImports>,
    /// Distributions none of whose top-level names any process imported.
    pub never_imported: Vec<DistributionImports>,
    /// Top-level names imported that no distribution provides and that were not the project's own code.
    pub not_provided: Vec<String>,
    /// Top-level names no distribution provides that were imported from under a process's working
    /// directory or script directory: the project's own code.
    pub local: Vec<String>,
    /// Records or distributions that could not be read in full.
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct DistributionImports {
    pub name: String,
    pub version: String,
    /// The import names it provides: its `top_level.txt`, else what its RECORD installs at the top of
    /// site-packages.
    pub top_level: Vec<String>,
}

/// Reads every record of the environment and compares what was imported with what its HEAD snapshot
/// installs.
pub fn report(store: &Store, env: &Env) -> Result<ImportsReport> {
    let head = env.head()?;
    let tree = store.tree_of(&store.snapshot(&head)?)?;
    let installed = crate::ops::snapshot_distributions(store, env, &tree)?;
    let mut problems = installed.problems;
    let (records, kinds) = read_records(&records_dir(store, &env.record.id), &mut problems)?;
    let imported_names: BTreeSet<&str> = kinds
        .iter()
        .filter(|(_, k)| k.contains(&Kind::Module) || k.contains(&Kind::Local))
        .map(|(n, _)| n.as_str())
        .collect();
    let mut provided: BTreeSet<String> = BTreeSet::new();
    let (mut imported, mut never_imported) = (Vec::new(), Vec::new());
    for dist in &installed.found {
        let top_level = match tree
            .entries
            .get(&format!("{}/top_level.txt", dist.dist_info))
        {
            Some(Node::File { object, .. }) => {
                let bytes = store.objects().read_object(object)?;
                names_in_top_level_txt(&String::from_utf8_lossy(&bytes))
            }
            _ => top_level_from_record(dist),
        };
        provided.extend(top_level.iter().cloned());
        provided.extend(editable_finders(dist));
        let entry = DistributionImports {
            name: dist.name.to_string(),
            version: dist.version.to_string(),
            top_level,
        };
        if entry
            .top_level
            .iter()
            .any(|n| imported_names.contains(n.as_str()))
        {
            imported.push(entry);
        } else {
            never_imported.push(entry);
        }
    }
    let (mut not_provided, mut local) = (Vec::new(), Vec::new());
    for name in imported_names.iter().filter(|n| !provided.contains(**n)) {
        if kinds[*name].contains(&Kind::Local) {
            local.push((*name).to_owned());
        } else {
            not_provided.push((*name).to_owned());
        }
    }
    let (module, pth) = hook_paths(env);
    Ok(ImportsReport {
        env: env.label().to_owned(),
        snapshot: head,
        tracking: module.is_file() && pth.is_file(),
        records,
        imported,
        never_imported,
        not_provided,
        local,
        problems,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Module,
    Local,
    Failed,
}

/// All records in `dir`: how many, and for each name the kinds the records give it. A line that does
/// not read as `<identifier> <kind>` is skipped and named in `problems`.
fn read_records(
    dir: &Path,
    problems: &mut Vec<String>,
) -> Result<(usize, BTreeMap<String, BTreeSet<Kind>>)> {
    let mut kinds: BTreeMap<String, BTreeSet<Kind>> = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, kinds)),
        Err(e) => return Err(e).at("listing", dir),
    };
    let mut records = 0;
    for entry in entries {
        let path = entry.at("listing", dir)?.path();
        if path.extension().is_none_or(|e| e != "txt") {
            continue;
        }
        let text = match record_text(&path) {
            Ok(text) => text,
            Err(why) => {
                problems.push(format!("`{}`: {why}; it is left out", path.display()));
                continue;
            }
        };
        records += 1;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let parsed = line.split_once(' ').and_then(|(name, kind)| {
                let kind = match kind {
                    "module" => Kind::Module,
                    "local" => Kind::Local,
                    "failed" => Kind::Failed,
                    _ => return None,
                };
                is_identifier(name).then(|| (name.to_owned(), kind))
            });
            match parsed {
                Some((name, kind)) => {
                    kinds.entry(name).or_default().insert(kind);
                }
                None => problems.push(format!(
                    "`{}`: the line `{line}` is not `<name> module|local|failed`; it is left out",
                    path.display()
                )),
            }
        }
    }
    Ok((records, kinds))
}

/// The most a record may hold: a process that imports 20,000 modules writes less than 1 MiB.
const RECORD_MAX_BYTES: u64 = 4 << 20;

/// A record's text. Every process of the environment may write the records directory (`blast run`
/// makes it writable), so only a regular file is read (opened without following a symlink, and without
/// waiting on a FIFO), of at most [`RECORD_MAX_BYTES`]; bytes that are not UTF-8 make lines that do not
/// read as records.
fn record_text(path: &Path) -> std::result::Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => "it is a symbolic link, not a record".to_owned(),
            _ => format!("it cannot be read ({e})"),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| format!("it cannot be read ({e})"))?;
    if !meta.is_file() {
        return Err("it is not a regular file, not a record".into());
    }
    if meta.len() > RECORD_MAX_BYTES {
        return Err(format!(
            "it holds {} bytes, more than a record ({} MiB at most)",
            meta.len(),
            RECORD_MAX_BYTES >> 20
        ));
    }
    let mut bytes = Vec::new();
    file.take(RECORD_MAX_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("it cannot be read ({e})"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// `top_level.txt`: one import name a line; a dotted line names a package inside another.
fn names_in_top_level_txt(text: &str) -> Vec<String> {
    let names: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.trim().split(['.', '/']).next())
        .filter(|n| is_identifier(n))
        .map(str::to_owned)
        .collect();
    names.into_iter().collect()
}

/// The import names a distribution's RECORD installs at the top of site-packages: the first component
/// of each path that goes below it (a package directory), or a single `.py` or extension module file
/// (`name.py`, `name.cpython-311-x86_64-linux-gnu.so`, `name.abi3.so`). Metadata (`*.dist-info`,
/// `*.data`), bytecode caches and what lies outside site-packages (`../../../bin/tool`) are not imports.
fn top_level_from_record(dist: &Distribution) -> Vec<String> {
    let mut names = BTreeSet::new();
    for entry in &dist.files {
        let mut parts = entry.path.split('/');
        let Some(first) = parts.next() else { continue };
        let below = parts.next().is_some();
        if first == ".."
            || first == crate::capture::PYCACHE
            || first.ends_with(".dist-info")
            || first.ends_with(".data")
            || first.starts_with("__editable__")
        {
            continue;
        }
        let name = if below {
            Some(first)
        } else if let Some(stem) = first.strip_suffix(".py") {
            Some(stem)
        } else if first.ends_with(".so") || first.ends_with(".pyd") {
            first.split('.').next()
        } else {
            None
        };
        if let Some(name) = name.filter(|n| is_identifier(n)) {
            names.insert(name.to_owned());
        }
    }
    // An editable install's RECORD holds a `.pth` (and setuptools' `__editable__` finder) that leads
    // to the project, not its modules: its import name is most likely its own name.
    let name = dist.name.as_ref().replace('-', "_");
    if names.is_empty()
        && dist.files.iter().any(|f| f.path.ends_with(".pth"))
        && is_identifier(&name)
    {
        names.insert(name);
    }
    names.into_iter().collect()
}

/// The finder modules of a setuptools editable install (`__editable___NAME_VER_finder.py` at the top of
/// site-packages, imported by its `.pth` in every process): the distribution's plumbing, provided by it
/// but no import of the program's.
fn editable_finders(dist: &Distribution) -> impl Iterator<Item = String> + '_ {
    dist.files.iter().filter_map(|entry| {
        entry
            .path
            .strip_suffix(".py")
            .filter(|stem| stem.starts_with("__editable__") && is_identifier(stem))
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist_with_files(paths: &[&str]) -> Distribution {
        let record: String = paths.iter().map(|p| format!("{p},,\n")).collect();
        let (dist, warnings) = Distribution::parse(
            "lib/python3.11/site-packages/x-1.dist-info",
            b"Name: x\nVersion: 1\n",
            Some(record.as_bytes()),
            None,
        )
        .unwrap();
        assert_eq!(warnings, Vec::<String>::new());
        dist
    }

    #[test]
    fn top_level_names_come_from_the_record_paths() {
        let dist = dist_with_files(&[
            "yaml/__init__.py",
            "yaml/__pycache__/__init__.cpython-311.pyc",
            "_yaml/__init__.py",
            "six.py",
            "__pycache__/six.cpython-311.pyc",
            "_speedups.cpython-311-x86_64-linux-gnu.so",
            "fast.abi3.so",
            "x-1.dist-info/RECORD",
            "x-1.data/scripts/tool",
            "../../../bin/tool",
            "x.pth",
            "not-an-identifier/__init__.py",
            "README.txt",
        ]);
        assert_eq!(
            top_level_from_record(&dist),
            ["_speedups", "_yaml", "fast", "six", "yaml"]
        );
        // Editable: a `.pth` and setuptools' finder, which lead to the project's modules.
        let editable = dist_with_files(&[
            "__editable__.x-1.pth",
            "__editable___x_1_finder.py",
            "x-1.dist-info/RECORD",
        ]);
        assert_eq!(top_level_from_record(&editable), ["x"]);
    }

    #[test]
    fn top_level_txt_names_each_top_level_once() {
        assert_eq!(
            names_in_top_level_txt("google\ngoogle.protobuf\n\n  six \n-bad\n"),
            ["google", "six"]
        );
    }

    #[test]
    fn records_read_by_kind_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1-aa.txt"), "requests module\nmine local\n").unwrap();
        std::fs::write(
            dir.path().join("2-bb.txt"),
            "requests module\nujson failed\nbad line here\n",
        )
        .unwrap();
        std::fs::write(dir.path().join(".3-cc.partial"), "half module\n").unwrap();
        let mut problems = Vec::new();
        let (records, kinds) = read_records(dir.path(), &mut problems).unwrap();
        assert_eq!(records, 2);
        let summary: Vec<(&str, Vec<Kind>)> = kinds
            .iter()
            .map(|(n, k)| (n.as_str(), k.iter().copied().collect()))
            .collect();
        assert_eq!(
            summary,
            [
                ("mine", vec![Kind::Local]),
                ("requests", vec![Kind::Module]),
                ("ujson", vec![Kind::Failed]),
            ]
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("`bad line here`"), "{problems:?}");
        let missing = read_records(&dir.path().join("none"), &mut problems).unwrap();
        assert_eq!(missing.0, 0);
    }
}
