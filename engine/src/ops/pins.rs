//! What `blast export --format requirements|pylock` pins: a snapshot's distributions as `blast
//! packages` reads them (`*.dist-info` and `*.egg-info`, names and versions parsed as PEP 508 and PEP
//! 440 say), each with where it came from when its installer recorded that (`direct_url.json`, PEP
//! 610): an editable project, a local directory, an archive or a VCS checkout is pinned as that, not as
//! a version an index might serve as something else.

use serde_json::Value;
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
enum Origin {
    /// A project directory, installed editable or not; `url` is its `file://` URL.
    Directory {
        url: String,
        editable: bool,
    },
    Archive {
        url: String,
    },
    Vcs {
        vcs: String,
        url: String,
        commit: String,
    },
}

impl Origin {
    fn read(json: &[u8]) -> Option<Origin> {
        let value: Value = serde_json::from_slice(json).ok()?;
        let url = value.get("url")?.as_str()?.to_owned();
        if let Some(dir) = value.get("dir_info") {
            let editable = dir.get("editable").and_then(Value::as_bool) == Some(true);
            return Some(Origin::Directory { url, editable });
        }
        if let Some(vcs) = value.get("vcs_info") {
            return Some(Origin::Vcs {
                vcs: vcs.get("vcs")?.as_str()?.to_owned(),
                commit: vcs.get("commit_id")?.as_str()?.to_owned(),
                url,
            });
        }
        value.get("archive_info").map(|_| Origin::Archive { url })
    }
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
    Ok(found
        .into_iter()
        .map(|d| {
            let direct_url = format!("{}/direct_url.json", d.dist_info);
            let origin = tree
                .entries
                .get(&direct_url)
                .and_then(|node| read(node).ok())
                .and_then(|json| Origin::read(&json));
            Pinned {
                name: d.name.to_string(),
                version: d.version.to_string(),
                origin,
            }
        })
        .collect())
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
            Some(Origin::Directory {
                url,
                editable: true,
            }) => format!("-e {url}"),
            Some(Origin::Directory { url, .. } | Origin::Archive { url }) => {
                format!("{} @ {url}", p.name)
            }
            Some(Origin::Vcs { vcs, url, commit }) => format!("{} @ {vcs}+{url}@{commit}", p.name),
        };
        out.push_str(&line);
        out.push('\n');
    }
    Ok((out, count))
}

/// A PEP 751 lock file. A distribution from an index gets its name and version only: blast keeps no
/// record of which index or file it came from, which installers need (they refuse such an entry). One
/// from a directory, an archive or a VCS checkout gets that source (and no version, for a directory).
/// Returns the text, how many distributions it pins and how many of them have no source.
pub(super) fn pylock(
    store: &Store,
    env: Option<&Env>,
    snapshot: &Snapshot,
) -> Result<(String, usize, usize)> {
    let mut out = format!(
        "lock-version = \"1.0\"\nrequires-python = {}\ncreated-by = \"blast\"\n",
        toml_string(&format!("=={}.*", snapshot.python.minor_version()))
    );
    let pins = pinned(store, env, snapshot)?;
    let count = pins.len();
    let unsourced = pins.iter().filter(|p| p.origin.is_none()).count();
    for p in pins {
        out.push_str(&format!(
            "\n[[packages]]\nname = {}\n",
            toml_string(&p.name)
        ));
        match &p.origin {
            None => out.push_str(&format!("version = {}\n", toml_string(&p.version))),
            Some(Origin::Directory { url, editable }) => out.push_str(&format!(
                "\n[packages.directory]\npath = {}\neditable = {editable}\n",
                toml_string(url.strip_prefix("file://").unwrap_or(url))
            )),
            Some(Origin::Archive { url }) => out.push_str(&format!(
                "version = {}\n\n[packages.archive]\nurl = {}\n",
                toml_string(&p.version),
                toml_string(url)
            )),
            Some(Origin::Vcs { vcs, url, commit }) => out.push_str(&format!(
                "version = {}\n\n[packages.vcs]\ntype = {}\nurl = {}\ncommit-id = {}\n",
                toml_string(&p.version),
                toml_string(vcs),
                toml_string(url),
                toml_string(commit)
            )),
        }
    }
    Ok((out, count, unsourced))
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
