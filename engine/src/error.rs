//! The engine's one error type. Every variant says what failed and where (which file, env or snapshot),
//! and the `Display` text ends with what the user can do about it when there is something to do.

use std::io;
use std::path::{Path, PathBuf};

use store_format::FormatError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the metadata index at `{}` failed: {detail}", path.display())]
    Index { path: PathBuf, detail: String },
    #[error("{what} is corrupt: {source}")]
    Format {
        what: String,
        #[source]
        source: FormatError,
    },
    #[error(
        "no environment selected: pass `-e NAME|PATH`, set BLAST_ENV, or run inside a directory whose `.venv` is a blast environment (see `blast list`)"
    )]
    NoEnvSelected,
    #[error(
        "no blast environment `{0}`: `blast list` shows the known ones, `blast create` makes one"
    )]
    EnvNotFound(String),
    #[error("`{}` already exists: pick another name or path (remove it first, with `blast remove` if it is a blast environment)", .0.display())]
    EnvExists(PathBuf),
    #[error(
        "environment `{env}` has no snapshot matching `{query}`: `blast log -e {env}` lists them"
    )]
    SnapshotNotFound { env: String, query: String },
    #[error("`{query}` matches several snapshots ({}): give more digits", candidates.join(", "))]
    AmbiguousSnapshot {
        query: String,
        candidates: Vec<String>,
    },
    #[error("snapshot {0} is missing from the store (was it removed by `blast clean`?)")]
    MissingSnapshot(String),
    #[error("`{}` has a name that is not UTF-8; blast stores UTF-8 paths only: rename it", .0.display())]
    NonUtf8Path(PathBuf),
    #[error("`{}` is a {kind}, which an environment cannot hold: remove it", path.display())]
    UnsupportedFileType { path: PathBuf, kind: &'static str },
    #[error(
        "environment `{env}` has changes that are not captured:\n{}\nrun `blast snapshot -e {env}` to keep them, or pass --force to discard them",
        list_paths(paths)
    )]
    UncapturedChanges { env: String, paths: Vec<String> },
    #[error("tag `{tag}` already names snapshot {snapshot} of `{env}`: pick another name")]
    TagTaken {
        env: String,
        tag: String,
        snapshot: String,
    },
    #[error(
        "the {operation} of environment `{env}` was interrupted, and since then these paths changed:\n{}\nsave what you need from them, then run `blast rollback -e {env} --force HEAD` to finish the {operation}",
        list_paths(paths)
    )]
    InterruptedWithChanges {
        env: String,
        operation: String,
        paths: Vec<String>,
    },
    #[error(
        "no Python interpreter found for `{request}`: {detail}; pass `--python PATH` to name one"
    )]
    PythonNotFound { request: String, detail: String },
    #[error("`{}` is not a usable Python interpreter: {detail}", path.display())]
    BadPython { path: PathBuf, detail: String },
    #[error(
        "snapshot needs {needed}, but environment `{env}` uses {found}: create the target with a matching `--python`"
    )]
    PythonMismatch {
        env: String,
        needed: String,
        found: String,
    },
    #[error(
        "`{0}` is not a valid environment name: use letters, digits, `-`, `_` and `.`, not starting with `.`"
    )]
    BadEnvName(String),
    #[error("tag `{tag}` is not valid: {why}")]
    BadTag { tag: String, why: &'static str },
    #[error("{0}")]
    Invalid(String),
}

fn list_paths(paths: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut out: Vec<String> = paths.iter().take(SHOWN).map(|p| format!("  {p}")).collect();
    if paths.len() > SHOWN {
        out.push(format!("  … and {} more", paths.len() - SHOWN));
    }
    out.join("\n")
}

/// Adds the action and path to an `io::Error`.
pub trait IoContext<T> {
    fn at(self, action: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, action: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            action,
            path: path.to_owned(),
            source,
        })
    }
}

impl Error {
    /// True for an I/O error saying the path exists already.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists)
    }
}
