//! What `blast export --format requirements|pylock` pins: a snapshot's distributions as `blast
//! packages` reads them (`*.dist-info` and `*.egg-info`, names and versions parsed as PEP 508 and PEP
//! 440 say), each with where it came from when its installer recorded that (`direct_url.json`, PEP
//! 610): an editable project, a local directory, an archive or a VCS checkout is pinned as that, not as
//! a version an index might serve as something else.

use std::path::Path;

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use store_format::{Node, Snapshot, SnapshotId};

use super::images::describe_tag;
use crate::error::{Error, Result};
use crate::packages::{
    Distributions, ListedAt, described, distributions_of, listed_at, normalize_name,
};
use crate::store::{Env, Store};

/// One distribution to pin.
struct Pinned {
    name: String,
    version: String,
    origin: Option<Origin>,
}

/// Where a distribution came from, by its `direct_url.json`.
struct Origin {
    kind: OriginKind,
    /// The project's directory within the checkout or archive (`subdirectory`).
    subdirectory: Option<String>,
}

enum OriginKind {
    /// A project directory, installed editable or not; `url` is its `file://` URL.
    Directory { url: String, editable: bool },
    /// `hash` as `ALGORITHM=HEX`, when the installer recorded one.
    Archive { url: String, hash: Option<String> },
    Vcs {
        vcs: String,
        url: String,
        commit: String,
        /// Checked out into the environment and installed editable (`pip install -e git+URL`).
        editable: bool,
    },
}

impl Origin {
    fn read(json: &[u8]) -> Option<Origin> {
        let value: Value = serde_json::from_slice(json).ok()?;
        let url = value.get("url")?.as_str()?.to_owned();
        let subdirectory = value
            .get("subdirectory")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let kind = if let Some(dir) = value.get("dir_info") {
            let editable = dir.get("editable").and_then(Value::as_bool) == Some(true);
            OriginKind::Directory { url, editable }
        } else if let Some(vcs) = value.get("vcs_info") {
            OriginKind::Vcs {
                vcs: vcs.get("vcs")?.as_str()?.to_owned(),
                commit: vcs.get("commit_id")?.as_str()?.to_owned(),
                url,
                editable: false,
            }
        } else {
            let archive = value.get("archive_info")?;
            // PEP 610: `hashes` ({"sha256": HEX}), or the older `hash` ("sha256=HEX").
            let hash = archive
                .get("hashes")
                .and_then(Value::as_object)
                .and_then(|hashes| {
                    // sha256 where there is one: what installers check first.
                    let (algorithm, hex) = hashes
                        .get_key_value("sha256")
                        .or_else(|| hashes.iter().next())?;
                    Some(format!("{algorithm}={}", hex.as_str()?))
                })
                .or_else(|| archive.get("hash")?.as_str().map(str::to_owned));
            OriginKind::Archive { url, hash }
        };
        Some(Origin { kind, subdirectory })
    }

    /// The URL fragment pip and uv read (`#subdirectory=sub`, `#sha256=HEX`), if any.
    fn fragment(&self) -> String {
        let mut parts = Vec::new();
        if let OriginKind::Archive {
            hash: Some(hash), ..
        } = &self.kind
        {
            parts.push(hash.clone());
        }
        if let Some(sub) = &self.subdirectory {
            parts.push(format!("subdirectory={sub}"));
        }
        match parts.is_empty() {
            true => String::new(),
            false => format!("#{}", parts.join("&")),
        }
    }
}

/// The path of a `file://` URL, its percent-escapes decoded (`%20` a space): pylock.toml's `path`.
fn file_path(url: &str) -> String {
    let path = url.strip_prefix("file://").unwrap_or(url);
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}

/// The distributions of `snapshot` (of `env` when one is selected: its interpreter's `purelib`, its
/// paths in relocatable files; else where the snapshot's package list was read). A distribution the
/// snapshot lists that cannot be read as PEP 508 and PEP 440 say refuses the export, naming why.
fn pinned(store: &Store, env: Option<&Env>, snapshot: &Snapshot) -> Result<Vec<Pinned>> {
    let tree = store.tree_of(snapshot)?;
    let read = |node: &Node| match node {
        Node::File { object, .. } => store.objects().read_object(object),
        _ => Ok(Vec::new()),
    };
    let found = match env {
        Some(env) => super::packages::snapshot_distributions(store, env, &tree)?,
        None => match listed_at(&tree, &snapshot.packages, |_, node| read(node))? {
            ListedAt::Purelib(purelib) => distributions_of(&tree, purelib, |_, node| read(node))?,
            ListedAt::Nowhere { found } => {
                return Err(Error::Invalid(format!(
                    "the snapshot's files do not give the packages it lists ({}; its files give {}): \
                     export it from its environment (`-e ENV`), whose interpreter says where its \
                     packages are",
                    described(&snapshot.packages),
                    described(&found)
                )));
            }
        },
    };
    let Distributions { found, problems } = found;
    if let Some(lost) = snapshot.packages.iter().find(|listed| {
        !found
            .iter()
            .any(|d| normalize_name(d.name.as_ref()) == listed.name)
    }) {
        return Err(Error::Invalid(format!(
            "`{}` {} cannot be pinned: {}; fix or remove that distribution, then snapshot again",
            lost.name,
            lost.version,
            if problems.is_empty() {
                "its metadata is not PEP 508 and PEP 440".to_owned()
            } else {
                problems.join("; ")
            }
        )));
    }
    found
        .into_iter()
        .map(|d| {
            let direct_url = format!("{}/direct_url.json", d.dist_info);
            let origin = match tree.entries.get(&direct_url) {
                Some(node @ Node::File { relocatable, .. }) => {
                    let json = read(node)?;
                    // It names a path in the environment (a VCS checkout in `ENV/src`), stored
                    // with a placeholder for wherever the environment is.
                    let json = match (relocatable, env) {
                        (false, _) => json,
                        (true, Some(env)) => env.placeholders().render_bytes(&json),
                        (true, None) => {
                            return Err(Error::Invalid(format!(
                                "`{}` was installed from inside its environment: export it from the \
                                 environment (`-e ENV`), whose path its source names",
                                d.name
                            )));
                        }
                    };
                    let origin = Origin::read(&json);
                    match (origin, env) {
                        (Some(origin), Some(env)) if *relocatable => {
                            Some(checked_out(&tree, env, origin, &read)?)
                        }
                        (origin, _) => origin,
                    }
                }
                _ => None,
            };
            Ok(Pinned {
                name: d.name.to_string(),
                version: d.version.to_string(),
                origin,
            })
        })
        .collect()
}

/// An editable project an installer checked out into the environment (`pip install -e git+URL` clones
/// into `ENV/src/NAME`), pinned as the repository and commit it came from, as `pip freeze` does: its
/// path names nothing on another machine. Read from the checkout's `.git` as the snapshot holds it:
/// the remote `origin` (else the first with a URL) and the commit `HEAD` names. Anything else, or a
/// checkout without either, stays as it is.
fn checked_out(
    tree: &crate::tree::Tree,
    env: &Env,
    origin: Origin,
    read: &dyn Fn(&Node) -> Result<Vec<u8>>,
) -> Result<Origin> {
    let OriginKind::Directory {
        url,
        editable: true,
    } = &origin.kind
    else {
        return Ok(origin);
    };
    let prefix = format!("{}/", env.record.path.trim_end_matches('/'));
    let Some(dir) = file_path(url).strip_prefix(&prefix).map(str::to_owned) else {
        return Ok(origin);
    };
    let text = |path: &str| -> Result<Option<String>> {
        match tree.entries.get(&format!("{dir}/.git/{path}")) {
            Some(node @ Node::File { .. }) => {
                Ok(Some(String::from_utf8_lossy(&read(node)?).into_owned()))
            }
            _ => Ok(None),
        }
    };
    let (Some(config), Some(head)) = (text("config")?, text("HEAD")?) else {
        return Ok(origin);
    };
    let commit = match head.trim().strip_prefix("ref: ") {
        None => Some(head.trim().to_owned()),
        Some(reference) => match text(reference)? {
            Some(commit) => Some(commit.trim().to_owned()),
            None => text("packed-refs")?.and_then(|packed| {
                packed.lines().find_map(|line| {
                    let (commit, name) = line.split_once(' ')?;
                    (name == reference).then(|| commit.to_owned())
                })
            }),
        },
    };
    let commit = commit.filter(|c| c.len() >= 40 && c.chars().all(|c| c.is_ascii_hexdigit()));
    match (remote_url(&config), commit) {
        (Some(url), Some(commit)) => Ok(Origin {
            kind: OriginKind::Vcs {
                vcs: "git".into(),
                url,
                commit,
                editable: true,
            },
            subdirectory: origin.subdirectory,
        }),
        _ => Ok(origin),
    }
}

/// The URL of a git config's remote `origin`, else of its first remote with one, as a URL pip takes:
/// `git@host:path` (scp-like) as `ssh://git@host/path`, a local path as `file://PATH`.
fn remote_url(config: &str) -> Option<String> {
    let mut remotes: Vec<(String, String)> = Vec::new();
    let mut section = None;
    for line in config.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[') {
            section = header
                .strip_prefix("remote \"")
                .and_then(|rest| rest.strip_suffix("\"]"))
                .map(str::to_owned);
        } else if let (Some(remote), Some((key, value))) = (&section, line.split_once('='))
            && key.trim() == "url"
        {
            remotes.push((remote.clone(), value.trim().to_owned()));
        }
    }
    let url = remotes
        .iter()
        .find(|(name, _)| name == "origin")
        .or(remotes.first())
        .map(|(_, url)| url.clone())?;
    Some(if url.contains("://") {
        url
    } else if url.starts_with('/') {
        format!("file://{url}")
    } else if let Some((host, path)) = url.split_once(':') {
        format!("ssh://{host}/{}", path.trim_start_matches('/'))
    } else {
        return None;
    })
}

/// A requirements file: `name==version` a line, sorted by name; `-e URL` for an editable project,
/// `name @ URL` for one installed from a directory, an archive or a VCS checkout, as `pip freeze`
/// writes them.
/// Returns the text and how many distributions it pins.
pub(super) fn requirements(
    store: &Store,
    env: Option<&Env>,
    id: &SnapshotId,
    snapshot: &Snapshot,
) -> Result<(String, usize)> {
    let mut out = format!(
        "# Pinned by `blast export --format requirements` from snapshot {id}\n# Python: {}\n",
        describe_tag(&snapshot.python)
    );
    let pins = pinned(store, env, snapshot)?;
    let count = pins.len();
    for p in pins {
        let line = match &p.origin {
            None => format!("{}=={}", p.name, p.version),
            Some(origin) => {
                let fragment = origin.fragment();
                match &origin.kind {
                    OriginKind::Directory {
                        url,
                        editable: true,
                    } => format!("-e {url}{fragment}"),
                    OriginKind::Directory { url, .. } | OriginKind::Archive { url, .. } => {
                        format!("{} @ {url}{fragment}", p.name)
                    }
                    OriginKind::Vcs {
                        vcs,
                        url,
                        commit,
                        editable: true,
                    } => {
                        let sub = origin
                            .subdirectory
                            .as_ref()
                            .map_or_else(String::new, |sub| format!("&subdirectory={sub}"));
                        format!("-e {vcs}+{url}@{commit}#egg={}{sub}", p.name)
                    }
                    OriginKind::Vcs {
                        vcs, url, commit, ..
                    } => {
                        format!("{} @ {vcs}+{url}@{commit}{fragment}", p.name)
                    }
                }
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    Ok((out, count))
}

/// A file of pins (a requirements file, a PEP 751 lock file) and what of it installers refuse.
pub(super) struct Pins {
    pub text: String,
    /// How many distributions it pins.
    pub count: usize,
    /// How many of them have no source.
    pub unsourced: usize,
    /// How many archives have no hash, which PEP 751 requires: the installer recorded none (uv does not
    /// for a local file) and the file is not at hand to be hashed now (a URL, a file since removed).
    pub unhashed: usize,
}

/// A PEP 751 lock file. A distribution from an index gets its name and version only: blast keeps no
/// record of which index or file it came from, which installers need (they refuse such an entry). One
/// from a directory, an archive or a VCS checkout gets that source (and no version, for a directory).
pub(super) fn pylock(store: &Store, env: Option<&Env>, snapshot: &Snapshot) -> Result<Pins> {
    let mut out = format!(
        "lock-version = \"1.0\"\nrequires-python = {}\ncreated-by = \"blast\"\n",
        toml_string(&format!("=={}.*", snapshot.python.minor_version()))
    );
    let pins = pinned(store, env, snapshot)?;
    let count = pins.len();
    let unsourced = pins.iter().filter(|p| p.origin.is_none()).count();
    let mut unhashed = 0;
    if pins.is_empty() {
        // PEP 751 wants the key, empty or not.
        out.push_str("packages = []\n");
    }
    for p in pins {
        out.push_str(&format!(
            "\n[[packages]]\nname = {}\n",
            toml_string(&p.name)
        ));
        let Some(origin) = &p.origin else {
            out.push_str(&format!("version = {}\n", toml_string(&p.version)));
            continue;
        };
        match &origin.kind {
            OriginKind::Directory { url, editable } => out.push_str(&format!(
                "\n[packages.directory]\npath = {}\neditable = {editable}\n",
                toml_string(&file_path(url))
            )),
            OriginKind::Archive { url, hash } => {
                // A local archive by its path: installers take no `file://` URL there.
                let (key, place) = match url.starts_with("file://") {
                    true => ("path", file_path(url)),
                    false => ("url", url.clone()),
                };
                out.push_str(&format!(
                    "version = {}\n\n[packages.archive]\n{key} = {}\n",
                    toml_string(&p.version),
                    toml_string(&place)
                ));
                let local_hash = || match url.starts_with("file://") {
                    true => sha256_of(Path::new(&place)),
                    false => None,
                };
                match hash.clone().or_else(local_hash) {
                    Some(hash) => {
                        let (algorithm, hex) = hash.split_once('=').unwrap_or(("sha256", &hash));
                        out.push_str(&format!(
                            "hashes = {{ {} = {} }}\n",
                            toml_key(algorithm),
                            toml_string(hex)
                        ));
                    }
                    None => unhashed += 1,
                }
            }
            OriginKind::Vcs {
                vcs, url, commit, ..
            } => out.push_str(&format!(
                "version = {}\n\n[packages.vcs]\ntype = {}\nurl = {}\ncommit-id = {}\n",
                toml_string(&p.version),
                toml_string(vcs),
                toml_string(url),
                toml_string(commit)
            )),
        }
        if let Some(sub) = &origin.subdirectory {
            out.push_str(&format!("subdirectory = {}\n", toml_string(sub)));
        }
    }
    Ok(Pins {
        text: out,
        count,
        unsourced,
        unhashed,
    })
}

/// `sha256=HEX` of the regular file at `path`, if it can be read (a FIFO there would never end).
fn sha256_of(path: &Path) -> Option<String> {
    if !path.is_file() {
        return None;
    }
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path).ok()?, &mut hasher).ok()?;
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(format!("sha256={hex}"))
}

/// Whether PEP 751 takes `name` for a lock file: `pylock.toml`, or `pylock.NAME.toml` where NAME has no
/// dot. Installers such as uv refuse others.
pub(super) fn is_lock_file_name(name: &str) -> bool {
    name == "pylock.toml"
        || name
            .strip_prefix("pylock.")
            .and_then(|rest| rest.strip_suffix(".toml"))
            .is_some_and(|name| !name.is_empty() && !name.contains('.'))
}

/// A TOML key: bare where TOML allows it, else quoted.
fn toml_key(key: &str) -> String {
    match !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        true => key.to_owned(),
        false => toml_string(key),
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkouts_remote_is_read_as_a_url_pip_takes() {
        let config = |remotes: &str| {
            format!("[core]\n\tbare = false\n{remotes}[branch \"main\"]\n\tremote = origin\n")
        };
        let upstream = "[remote \"upstream\"]\n\turl = https://example.org/up.git\n";
        let origin = "[remote \"origin\"]\n\turl = git@github.com:team/proj.git\n";
        assert_eq!(
            remote_url(&config(&format!("{upstream}{origin}"))).as_deref(),
            Some("ssh://git@github.com/team/proj.git")
        );
        assert_eq!(
            remote_url(&config(upstream)).as_deref(),
            Some("https://example.org/up.git")
        );
        assert_eq!(
            remote_url(&config("[remote \"origin\"]\n\turl = /srv/git/proj\n")).as_deref(),
            Some("file:///srv/git/proj")
        );
        assert_eq!(remote_url(&config("")), None);
    }

    #[test]
    fn lock_files_are_named_as_pep_751_says() {
        for name in ["pylock.toml", "pylock.dev.toml", "pylock.toml.toml"] {
            assert!(is_lock_file_name(name), "{name}");
        }
        for name in [
            "pylock..toml",
            "pylock.a.b.toml",
            "lock.toml",
            "pylock.dev.txt",
            "Pylock.toml",
        ] {
            assert!(!is_lock_file_name(name), "{name}");
        }
    }
}
