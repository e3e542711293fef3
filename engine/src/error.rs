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
    #[error(
        "{action} `{}`: the filesystem is full (no space left on device): free space on the filesystem that holds it (where that is the store's, `blast clean` removes what no environment needs) and run the command again",
        path.display()
    )]
    DiskFull { action: &'static str, path: PathBuf },
    #[error("the metadata index at `{}` failed: {detail}", path.display())]
    Index { path: PathBuf, detail: String },
    #[error(
        "the metadata index at `{}` {why}: it records the store's environments, their histories and tags, and without it blast would take the store for empty (and `blast clean` would remove every snapshot), so blast does not run on it: put the index back (from where it was moved, or from a backup of the store), or move the store aside and blast makes a new one",
        index.display()
    )]
    IndexLost { index: PathBuf, why: String },
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
        "an empty `-e` (or BLAST_ENV set to nothing) selects no environment: name one (`-e NAME|PATH`), or, for `./.venv`, leave `-e` out and BLAST_ENV unset"
    )]
    EmptyEnvSelector,
    #[error(
        "`{0}` is a Python project, not a blast environment: `-e` names the environment to work on; pip's editable install of the project is `blast install -- -e {0}`"
    )]
    ProjectNotEnv(String),
    #[error(
        "no blast environment `{0}`: `blast list` shows the known ones, `blast create` makes one"
    )]
    EnvNotFound(String),
    /// A path that holds a virtual environment but no blast environment, while blast knows some whose
    /// directories are gone: most likely one of them, moved by hand.
    #[error(
        "no blast environment at `{path}`, though a virtual environment is there, and the {} of \
         {gone} {}: an environment moved by hand stays recorded where blast made it; `blast move \
         {cmd}` takes it here (`blast move -e ENV {cmd} --force`, naming it, when its files changed \
         since; or move it back)",
        if *several { "directories" } else { "directory" },
        if *several { "are gone" } else { "is gone" },
        cmd = crate::shell::word(.path)
    )]
    EnvMovedAway {
        path: String,
        gone: String,
        several: bool,
    },
    /// `blast move` without `-e`, to a directory that no environment whose directory is gone matches.
    #[error(
        "no blast environment at `{path}`{why}: name the environment moved there with `blast move -e ENV {cmd}`",
        cmd = crate::shell::word(.path)
    )]
    MovedWhich { path: String, why: String },
    /// An install during which the directory changed.
    #[error(
        "`{env}` changed while {} ran:\n{}\nit worked on the environment as it was then, so its changes could overwrite those or be wrong: nothing was committed. `blast diff -e {cmd} --files` shows what changed; keep it with `blast snapshot -e {cmd}` (or undo it with `blast rollback -e {cmd} --force HEAD`) and try again",
        match operation.as_str() {
            "install" | "uninstall" => format!("the {operation}"),
            "pip" => "pip".to_owned(),
            _ => "the command".to_owned(),
        },
        list_paths(paths),
        cmd = crate::shell::word(.env)
    )]
    ChangedMeanwhile {
        env: String,
        operation: String,
        paths: Vec<String>,
    },
    /// `blast move` of a directory that differs from HEAD.
    #[error(
        "environment `{env}` has changes that are not captured:\n{}\nrun `blast snapshot -e {cmd}` to keep them in the store first, or pass --force to move them along as they are (uncaptured)",
        list_paths(paths),
        cmd = crate::shell::word(.env)
    )]
    MoveUncaptured { env: String, paths: Vec<String> },
    /// `blast move` to a directory that does not hold the environment as its HEAD has it.
    #[error(
        "`{path}` does not hold `{env}` as its HEAD has it:\n{}\nif it is `{env}`, moved by hand and \
         changed since, `blast move -e {cmd} {to} --force` takes it as it is (what differs stays, \
         uncaptured)",
        list_paths(paths),
        cmd = crate::shell::word(.env),
        to = crate::shell::word(.path)
    )]
    NotMovedHere {
        env: String,
        path: String,
        paths: Vec<String>,
    },
    #[error("`{}` already exists: pick another name or path (remove it first, with `blast remove` if it is a blast environment)", .0.display())]
    EnvExists(PathBuf),
    #[error(
        "the directory of `{env}`{} is gone: `blast rollback -e {cmd} --force HEAD` makes it again, `blast move -e {cmd} DIR` takes it where it was moved (or makes it there), `blast remove {cmd}` forgets the environment",
        // An environment without a name goes by its path already.
        if path.as_os_str() == env.as_str() { String::new() } else { format!(" (`{}`)", path.display()) },
        cmd = crate::shell::word(.env)
    )]
    EnvDirMissing { env: String, path: PathBuf },
    #[error(
        "`{}`, the directory of `{env}`, is {what} now: blast works on the directory itself, never through what replaced it (a link may lead into another environment); {first}, then `blast rollback -e {cmd} --force HEAD` makes the environment again there{take}, or `blast remove {cmd}` forgets the environment",
        path.display(),
        cmd = crate::shell::word(.env),
        first = match link {
            true => format!("remove the link (`rm {}`)", crate::shell::word(&path.display().to_string())),
            false => "move it away".to_owned(),
        },
        take = match target {
            Some(target) => format!(
                ", `blast move -e {} {}` takes the directory the link leads to",
                crate::shell::word(.env),
                crate::shell::word(&target.display().to_string())
            ),
            None => String::new(),
        }
    )]
    EnvDirReplaced {
        env: String,
        path: PathBuf,
        /// `a symlink to `…``, `a file`…
        what: String,
        /// Whether a symlink is there.
        link: bool,
        /// Where a symlink there leads, resolved, unless that is another environment's directory.
        target: Option<PathBuf>,
    },
    #[error(
        "`{env}` was made at `{}`, which is gone, and its directory is now at `{}`: the store was moved, and an environment's files name the path it was made at; `blast move -e {cmd} {here_word}` writes them for the new one (or move the store back, and BLAST_HOME with it; `blast remove {cmd}` removes the environment, directory and history)",
        recorded.display(),
        here.display(),
        cmd = crate::shell::word(.env),
        here_word = crate::shell::word(&.here.display().to_string())
    )]
    StoreMoved {
        env: String,
        recorded: PathBuf,
        here: PathBuf,
    },
    #[error(
        "`{env}` was made at `{1}`, which the store at `{0}` keeps (this store is a copy of that one, or of a store that was there); its copy here, at `{2}`, has files that name that path: `blast move -e {cmd} {here_word}` writes them for this store (`blast remove {cmd}` removes it from this store only)",
        original.display(),
        recorded.display(),
        here.display(),
        cmd = crate::shell::word(.env),
        here_word = crate::shell::word(&.here.display().to_string())
    )]
    StoreCopied {
        env: String,
        recorded: PathBuf,
        here: PathBuf,
        original: PathBuf,
    },
    #[error(
        "`{}` is the directory of `{env}` that the store at `{}` keeps (this store, `{}`, is a copy of that one, or of a store that was there): a command here that changes it, or finishes what a command left unfinished in it, would do so behind that store's back. Work on it there (BLAST_HOME={}); this store's history of it is read by `blast log`, `tag`, `export` and `sync --from`, and `blast remove {cmd}` forgets it in this store, leaving the directory as it is",
        path.display(),
        original.display(),
        here.display(),
        crate::shell::word(&.original.display().to_string()),
        cmd = crate::shell::word(.env)
    )]
    OriginalStoreKeeps {
        env: String,
        path: PathBuf,
        original: PathBuf,
        here: PathBuf,
    },
    #[error(
        "an environment named `{0}` exists already: pick another name, or `blast remove {0}` first"
    )]
    EnvNameTaken(String),
    #[error(
        "`{}` is the path of the environment `{env}` already (`blast list`): pick another path, or `blast remove {cmd}` first",
        path.display(),
        cmd = crate::shell::word(.env)
    )]
    PathTaken { path: PathBuf, env: String },
    #[error("`{}` cannot hold an environment: {why}; pick another path", escape_controls(&path.display().to_string()))]
    EnvPathRefused { path: PathBuf, why: String },
    #[error(
        "environment `{env}` has no snapshot matching `{query}`{hint}: `blast log -e {cmd}` lists them", cmd = crate::shell::word(.env)
    )]
    SnapshotNotFound {
        env: String,
        query: String,
        hint: String,
    },
    #[error("`{query}` matches several snapshots ({}): give more digits", candidates.join(", "))]
    AmbiguousSnapshot {
        query: String,
        candidates: Vec<String>,
    },
    #[error("snapshot {0} is missing from the store (was it removed by `blast clean`?)")]
    MissingSnapshot(String),
    #[error("`{}` has a name that is not UTF-8; blast stores UTF-8 paths only: rename it", .0.as_os_str().as_encoded_bytes().escape_ascii())]
    NonUtf8Path(PathBuf),
    #[error("`{}` is a {kind}, which an environment cannot hold: remove it", path.display())]
    UnsupportedFileType { path: PathBuf, kind: &'static str },
    /// A file or directory of an environment that blast may not read: what it holds is not known.
    #[error(
        "blast may not read `{}` (permission denied), so it cannot tell what it holds: `chmod u+rwX` it, or remove it",
        path.display()
    )]
    Unreadable { path: PathBuf },
    /// Several of [`Error::UnsupportedFileType`], [`Error::NonUtf8Path`] and [`Error::Unreadable`], one
    /// a line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Unstorable(Vec<Error>),
    #[error(
        "environment `{env}` has changes that are not captured:\n{}\nrun `blast snapshot -e {cmd}` to keep them, or pass --force to discard them",
        list_paths(paths),
        cmd = crate::shell::word(.env)
    )]
    UncapturedChanges { env: String, paths: Vec<String> },
    #[error(
        "`{}`, the directory of `{env}`, holds what no snapshot of it has:\n{}\nrun `blast snapshot -e {cmd}` first to keep it in the store, or pass --force to remove it",
        path.display(),
        list_paths(paths),
        cmd = crate::shell::word(.env)
    )]
    UnsavedFiles {
        env: String,
        path: PathBuf,
        paths: Vec<String>,
    },
    #[error(
        "processes are running from `{env}`:\n{}\nstop them, or pass --force",
        list_paths(processes)
    )]
    EnvInUse { env: String, processes: Vec<String> },
    #[error(
        "snapshot {snapshot} of `{env}` needs object {object} (for `{path}`), which is missing from the store; nothing was changed. `blast verify` lists what else is lost; an image that holds the snapshot brings it back (`blast import`)"
    )]
    ObjectMissing {
        env: String,
        snapshot: String,
        object: String,
        path: String,
    },
    #[error(
        "tag `{tag}` already names snapshot {snapshot} of `{env}`: pick another name, or move it with `blast tag -e {cmd} --force {tag} [SNAPSHOT]`", cmd = crate::shell::word(.env)
    )]
    TagTaken {
        env: String,
        tag: String,
        snapshot: String,
    },
    #[error(
        "the {operation} of environment `{env}` was interrupted, and since then these paths changed:\n{}\nsave what you need from them, then run `blast rollback -e {cmd} --force HEAD` to finish the {operation}",
        list_paths(paths),
        cmd = crate::shell::word(.env)
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
    #[error("snapshot needs {needed}, but environment `{env}` uses {found}: {fix}")]
    PythonMismatch {
        env: String,
        needed: String,
        found: String,
        /// What to do instead, for the command at hand.
        fix: &'static str,
    },
    #[error(
        "`{0}` is not a valid environment name: use at most 100 letters, digits, `-`, `_` and `.`, not starting with `.`{hint}",
        hint = path_hint(.0)
    )]
    BadEnvName(String),
    #[error("tag `{tag}` is not valid: {why}")]
    BadTag { tag: String, why: &'static str },
    #[error("environment `{env}` has no tag `{tag}`: `blast tag -e {cmd}` lists its tags", cmd = crate::shell::word(.env))]
    TagNotFound { env: String, tag: String },
    #[error("image {image}{}: {problem}", entry.as_deref().map(|e| format!(", entry `{e}`")).unwrap_or_default())]
    Image {
        image: ImageSource,
        /// The archive entry at fault, when one is.
        entry: Option<String>,
        problem: Box<ImageProblem>,
    },
    #[error(
        "the image needs {needed}, and no interpreter here matches:\n{}\n{fix}",
        list_paths(tried)
    )]
    NoMatchingPython {
        needed: String,
        tried: Vec<String>,
        fix: &'static str,
    },
    #[error("no installer for environment `{env}`: {detail}; {fix}")]
    NoInstaller {
        env: String,
        detail: String,
        fix: String,
    },
    #[error("{installer} failed ({status}): environment `{env}` is unchanged{hint}")]
    InstallerFailed {
        env: String,
        installer: String,
        status: String,
        /// Empty, or a sentence on what probably made it fail (a full filesystem).
        hint: String,
    },
    #[error(
        "the installer linked `{path}` to `{}` in its cache, which blast cannot store ({detail}): the environment is unchanged; run the command again, after `uv cache clean` if the cache is damaged",
        target.display()
    )]
    CacheLinkUnreadable {
        path: String,
        target: PathBuf,
        detail: String,
    },
    #[error(
        "the {operation} would break requirements in `{env}`:\n{report}\nthe environment is unchanged; pass --allow-conflicts to commit it anyway"
    )]
    ConflictsIntroduced {
        env: String,
        operation: String,
        report: String,
    },
    /// An operation that failed after it captured the environment's uncaptured changes first.
    #[error(
        "{source}\n(before that, the changes found in `{env}` were captured as snapshot {snapshot}, its HEAD now)"
    )]
    AfterCapture {
        env: String,
        snapshot: String,
        source: Box<Error>,
    },
    /// `blast clean` found a snapshot it must keep unreadable, and removed nothing.
    #[error(
        "{source}\n(snapshot {snapshot} is {kept_by}; `blast clean` removes nothing while a snapshot it \
         must keep cannot be read: `blast import` of an image that holds it brings it back, `blast \
         remove ENV --force`, `blast tag -e ENV --delete TAG` or, for older history, `blast clean --keep N` \
         drops what keeps it)"
    )]
    CleanRootUnreadable {
        snapshot: String,
        kept_by: String,
        source: Box<Error>,
    },
    /// The sweep of `blast clean` failed midway, after the history it dropped was gone.
    #[error(
        "{source}\n(the clean stopped there, having dropped {history_dropped} history entries and removed \
         {files_removed} snapshot, layer and object files, {bytes_freed} bytes: what it left is removed by \
         `blast clean` once the file above can be removed)"
    )]
    CleanStopped {
        history_dropped: usize,
        files_removed: usize,
        bytes_freed: u64,
        source: Box<Error>,
    },
    /// `blast start` made a project's `./.venv`, and removed it again as its dependencies failed to
    /// install.
    #[error(
        "{source}\n(so `blast start` removed the `{path}` it had made: fix what failed in {from}, then \
         start again)"
    )]
    ProjectEnvRemoved {
        path: String,
        from: String,
        source: Box<Error>,
    },
    /// A move a killed or failed command left that cannot be finished.
    #[error(
        "{source}\n(`{env}` is midway through an interrupted {operation}, which this command must \
         finish first: fix what stops it, then run the command again)"
    )]
    InterruptedUnfinished {
        env: String,
        operation: String,
        source: Box<Error>,
    },
    /// A move of HEAD that failed midway and was undone: the directory holds `snapshot` again.
    #[error("{source}\n(the {operation} of `{env}` was undone: it is at {snapshot}, as before)")]
    MoveUndone {
        env: String,
        operation: String,
        snapshot: String,
        source: Box<Error>,
    },
    /// A move of HEAD that failed midway and could not be undone: the journal stands.
    #[error(
        "{source}\n(the {operation} of `{env}` stopped midway, and going back failed too: {undo}; fix \
         what stopped it, then any blast command on `{env}` finishes the {operation})"
    )]
    MoveStuck {
        env: String,
        operation: String,
        undo: String,
        source: Box<Error>,
    },
    #[error(
        "the session at `{}` ended without answering (its watcher died?): what changed since its last capture is uncaptured (`blast status` names it), and `blast kill` cleans up what is left of it",
        .0.display()
    )]
    SessionGone(PathBuf),
    /// `blast run --capture` whose command ran, and whose changes could not be kept.
    #[error("{source}\n(the command itself ended with {ended}; what it wrote was not kept)")]
    RunNotCaptured {
        /// `exit status 4`, `signal 9`, or the limit that stopped it.
        ended: String,
        source: Box<Error>,
    },
    /// A move of HEAD whose directory holds its target, and whose record failed: the journal stands.
    #[error(
        "{source}\n(the {operation} of `{env}` is done in its directory, which holds {snapshot}; only \
         its record failed, and the next blast command on `{env}` writes it)"
    )]
    MoveUnrecorded {
        env: String,
        operation: String,
        snapshot: String,
        source: Box<Error>,
    },
    #[error("interrupted: `{}` was not written", path.display())]
    InterruptedWrite {
        path: PathBuf,
        /// The signal (SIGINT, SIGTERM, SIGHUP, SIGQUIT).
        signal: i32,
    },
    #[error(
        "interrupted while waiting for another blast process to release {what}: nothing was changed"
    )]
    InterruptedWaiting {
        what: String,
        /// The signal (SIGINT, SIGTERM, SIGHUP, SIGQUIT).
        signal: i32,
    },
    #[error("interrupted: environment `{env}` is unchanged")]
    Interrupted {
        env: String,
        /// The signal (SIGINT, SIGTERM, SIGHUP, SIGQUIT).
        signal: i32,
    },
    /// `blast run`'s command is nowhere to be found.
    #[error("{0}")]
    CommandNotFound(String),
    /// `blast run`'s command was found but could not be executed (not executable, a bad interpreter line).
    #[error("`{}` could not be started ({detail}): check that it is executable and that its `#!` interpreter exists", program.display())]
    CommandNotStarted {
        program: PathBuf,
        detail: String,
        /// The kernel said ENOENT: a `#!` interpreter that does not exist.
        missing: bool,
    },
    #[error("the sandbox could not be set up ({step}: {detail}): {fix}")]
    SandboxRefused {
        step: String,
        detail: String,
        fix: String,
    },
    #[error("registry `{registry}`: {method} {url} {outcome}{}", hint.as_ref().map(|h| format!(": {h}")).unwrap_or_default())]
    Registry {
        /// `HOST[:PORT]`.
        registry: String,
        method: &'static str,
        url: String,
        /// What came back: `answered HTTP 404 (MANIFEST_UNKNOWN: …)`, or why nothing did.
        outcome: String,
        /// What the user can do about it, when there is something.
        hint: Option<String>,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Where the bytes of an image came from, as an error names it.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// A `.blast` file.
    File(PathBuf),
    /// An image in a registry, as a whole (its manifest, or what its blobs make together).
    Registry(String),
    /// One blob of an image in a registry.
    Blob { reference: String, digest: String },
}

impl std::fmt::Display for ImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageSource::File(path) => write!(f, "`{}`", path.display()),
            ImageSource::Registry(reference) => write!(f, "`{reference}`"),
            ImageSource::Blob { reference, digest } => {
                write!(f, "`{reference}`, blob `{digest}`")
            }
        }
    }
}

/// Why an image (`.blast` file) was refused. Import trusts nothing: each of these stops it before
/// anything reaches the store.
#[derive(Debug, thiserror::Error)]
pub enum ImageProblem {
    #[error("not a blast image: its first entry must be `blast-image.json`")]
    NotAnImage,
    #[error("the manifest is invalid: {0}")]
    Manifest(String),
    #[error(
        "image format version {found}; this blast reads versions {oldest} to {newest}: upgrade blast"
    )]
    UnsupportedVersion {
        found: u64,
        oldest: u64,
        newest: u64,
    },
    #[error("the path is absolute; an image holds only relative names")]
    AbsolutePath,
    #[error("the path climbs out with `..`")]
    ParentDir,
    #[error("it is a {0} entry; an image holds only regular files")]
    NotRegularFile(&'static str),
    #[error("not a name a blast image uses")]
    UnknownName,
    #[error("it appears twice")]
    Duplicate,
    #[error("it comes after `{0}`, out of the image's fixed order")]
    OutOfOrder(String),
    #[error("its bytes do not hash to its name (they hash to {0})")]
    HashMismatch(String),
    #[error("its size is {found} bytes, but the layers that use it record {expected}")]
    SizeMismatch { found: u64, expected: u64 },
    #[error("it ends after {got} of its {expected} bytes: the image is truncated")]
    Truncated { got: u64, expected: u64 },
    #[error("it does not decode: {0}")]
    Undecodable(#[source] FormatError),
    #[error("it does not apply as a layer of snapshot {snapshot}: {detail}")]
    DoesNotApply { snapshot: String, detail: String },
    #[error(
        "snapshot {snapshot} lists the packages {listed}, but its files hold {found} (its package list was altered)"
    )]
    PackagesMismatch {
        snapshot: String,
        listed: String,
        found: String,
    },
    #[error("in snapshot {snapshot}, symlink `{path}` -> `{target}` {why}")]
    SymlinkEscapes {
        snapshot: String,
        path: String,
        target: String,
        why: &'static str,
    },
    #[error(
        "it puts `{0}`, in a `__pycache__` directory: bytecode there runs in place of the source beside it, and blast never captures it (Python writes it again)"
    )]
    Bytecode(String),
    #[error("the manifest does not list it")]
    NotInManifest,
    #[error("none of the image's snapshots uses it")]
    Unreferenced,
    #[error("{0} is neither in the image nor in this store")]
    Missing(String),
    #[error("{0} is missing: its layers number it among the objects the image carries")]
    CarriedMissing(String),
    #[error("it holds the same bytes as `{0}`, which the image carries already")]
    SameBytesAs(String),
    #[error(
        "it is a thin image over snapshot {base}, which this store lacks ({missing} is missing): import or restore an image of {base} first"
    )]
    NeedsBase { base: String, missing: String },
    #[error("{0}: refusing a possible decompression bomb")]
    TooLarge(String),
    #[error("it cannot be read: {0} (the file is truncated, damaged or not a blast image)")]
    Stream(String),
    #[error("data follows the end of its archive")]
    TrailingData,
    #[error("a layer blob holds its layer and that layer's objects only")]
    NotInLayerBlob,
    #[error("it is not the layer the registry manifest names for this blob ({0})")]
    WrongLayer(String),
    #[error("the blob lacks {0}, which its layer names: the blob is incomplete or was altered")]
    BlobIncomplete(String),
    #[error(
        "its bytes hash to {actual}, not to the digest the manifest names: the registry returned a damaged or altered blob"
    )]
    DigestMismatch { actual: String },
    #[error(
        "the registry sent {found} bytes, the manifest records {expected}: the registry returned a damaged or altered blob"
    )]
    BlobSize { found: String, expected: u64 },
    #[error("{0}")]
    Artifact(String),
    #[error(
        "the manifest declares {declared} {what}, the image holds {found}: it is truncated or was altered"
    )]
    CountMismatch {
        what: &'static str,
        declared: u64,
        found: u64,
    },
    #[error(
        "with the objects the image carries it hashes to {0}, not to its name: one of its objects or the layer itself was altered (get an intact copy of the image, or export it again)"
    )]
    CarriedHashMismatch(String),
    #[error(
        "it names carried object {rank} where the next new one is {next}: objects are ranked where a layer first names them"
    )]
    RankOutOfOrder { rank: u32, next: usize },
    #[error(
        "its file `{path}` names carried object {rank} as {found}, where an earlier file names it as {expected}"
    )]
    RankMismatch {
        rank: u32,
        path: String,
        found: String,
        expected: String,
    },
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
        self.map_err(|source| match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Error::DiskFull {
                action,
                path: path.to_owned(),
            },
            _ => Error::Io {
                action,
                path: path.to_owned(),
                source,
            },
        })
    }
}

impl Error {
    /// The error of an operation on `env` that first captured the changes it found as `captured_first`,
    /// when it did: the error says so.
    pub fn after_capture(
        self,
        env: &str,
        captured_first: Option<store_format::SnapshotId>,
    ) -> Error {
        match captured_first {
            Some(snapshot) => Error::AfterCapture {
                env: env.to_owned(),
                snapshot: snapshot.short(),
                source: Box::new(self),
            },
            None => self,
        }
    }

    /// The error itself, without the notes around it (changes captured before it, a move undone).
    pub fn underlying(&self) -> &Error {
        match self {
            Error::AfterCapture { source, .. }
            | Error::MoveUndone { source, .. }
            | Error::MoveStuck { source, .. }
            | Error::MoveUnrecorded { source, .. }
            | Error::RunNotCaptured { source, .. }
            | Error::ProjectEnvRemoved { source, .. }
            | Error::InterruptedUnfinished { source, .. }
            | Error::CleanStopped { source, .. } => source.underlying(),
            error => error,
        }
    }

    /// True when the filesystem is full: a write failed for want of space, or the index could not
    /// be opened for writing (RocksDB says so in its message only).
    pub fn is_disk_full(&self) -> bool {
        match self.underlying() {
            Error::DiskFull { .. } => true,
            Error::Index { detail, .. } => detail.contains("No space left on device"),
            _ => false,
        }
    }

    /// True for an I/O error saying the path exists already.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists)
    }
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`) and nothing else: a path shown whole.
fn escape_controls(text: &str) -> String {
    text.chars()
        .map(|c| match c.is_control() {
            true => c.escape_debug().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// For a name that reads as a path (`blast create .venv`, as `python -m venv .venv` is spelled): how
/// to make an environment there.
fn path_hint(name: &str) -> String {
    match name.contains('/') || name.starts_with('.') {
        true => format!(
            " (for an environment at that path: `--path {}`)",
            crate::shell::word(name)
        ),
        false => String::new(),
    }
}
