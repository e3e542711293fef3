//! The package view: which distributions a tree holds, read from `*.dist-info/METADATA`, and how two
//! package sets differ ("+rich 13.7.1", "-idna 3.6", "urllib3 2.1.0→2.2.1").

use std::collections::BTreeMap;

use serde::Serialize;
use store_format::{Node, Package};

use crate::error::Result;
use crate::tree::Tree;

/// PEP 503: lowercase, runs of `-`, `_` and `.` become one `-`.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_sep = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_sep {
                out.push('-');
            }
            in_sep = true;
        } else {
            out.extend(c.to_lowercase());
            in_sep = false;
        }
    }
    out
}

/// `Name` and `Version` from the headers of a METADATA file (RFC 822 style, headers end at a blank line).
pub fn parse_metadata(text: &str) -> Option<Package> {
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            break;
        }
        if let Some((key, value)) = line.split_once(':') {
            match key.trim().to_ascii_lowercase().as_str() {
                "name" => name = Some(normalize_name(value)),
                "version" => version = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    match (name, version) {
        (Some(name), Some(version)) if !name.is_empty() && !version.is_empty() => {
            Some(Package { name, version })
        }
        _ => None,
    }
}

/// The METADATA files of the distributions installed in `purelib`.
pub fn metadata_paths<'t>(
    tree: &'t Tree,
    purelib: &str,
) -> impl Iterator<Item = (&'t str, &'t Node)> {
    let prefix = format!("{purelib}/");
    tree.descendants(purelib).filter_map(move |(path, node)| {
        let rest = path.strip_prefix(&prefix)?;
        let (dir, file) = rest.split_once('/')?;
        (dir.ends_with(".dist-info") && file == "METADATA" && matches!(node, Node::File { .. }))
            .then_some((path.as_str(), node))
    })
}

/// The package set of a tree; `read` returns the bytes of a METADATA file (from the store or a directory).
pub fn packages_of(
    tree: &Tree,
    purelib: &str,
    mut read: impl FnMut(&str, &Node) -> Result<Vec<u8>>,
) -> Result<Vec<Package>> {
    let mut by_name = BTreeMap::new();
    for (path, node) in metadata_paths(tree, purelib) {
        let bytes = read(path, node)?;
        if let Some(pkg) = parse_metadata(&String::from_utf8_lossy(&bytes)) {
            by_name.insert(pkg.name.clone(), pkg);
        }
    }
    Ok(by_name.into_values().collect())
}

/// How one package changed between two sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "lowercase")]
pub enum PackageChange {
    Added {
        name: String,
        version: String,
    },
    Removed {
        name: String,
        version: String,
    },
    Changed {
        name: String,
        from: String,
        to: String,
    },
}

impl std::fmt::Display for PackageChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackageChange::Added { name, version } => write!(f, "+{name} {version}"),
            PackageChange::Removed { name, version } => write!(f, "-{name} {version}"),
            PackageChange::Changed { name, from, to } => write!(f, "{name} {from}→{to}"),
        }
    }
}

/// Changes from `old` to `new`, by name.
pub fn package_changes(old: &[Package], new: &[Package]) -> Vec<PackageChange> {
    let old: BTreeMap<&str, &str> = old
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str()))
        .collect();
    let new: BTreeMap<&str, &str> = new
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str()))
        .collect();
    let mut out = Vec::new();
    for (name, version) in &new {
        match old.get(name) {
            None => out.push(PackageChange::Added {
                name: (*name).to_owned(),
                version: (*version).to_owned(),
            }),
            Some(before) if before != version => out.push(PackageChange::Changed {
                name: (*name).to_owned(),
                from: (*before).to_owned(),
                to: (*version).to_owned(),
            }),
            Some(_) => {}
        }
    }
    for (name, version) in &old {
        if !new.contains_key(name) {
            out.push(PackageChange::Removed {
                name: (*name).to_owned(),
                version: (*version).to_owned(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headers_and_normalizes_names() {
        let pkg = parse_metadata(
            "Metadata-Version: 2.1\nName: Foo_Bar.baz\nVersion: 1.0\n\nName: body\n",
        )
        .unwrap();
        assert_eq!(pkg.name, "foo-bar-baz");
        assert_eq!(pkg.version, "1.0");
        assert_eq!(parse_metadata("Name: x\n"), None);
    }

    #[test]
    fn changes_name_added_removed_and_upgraded() {
        let p = |n: &str, v: &str| Package {
            name: n.into(),
            version: v.into(),
        };
        let changes = package_changes(&[p("a", "1"), p("b", "1")], &[p("a", "2"), p("c", "1")]);
        let shown: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["a 1→2", "+c 1", "-b 1"]);
    }
}
