//! The package view: which distributions a tree holds, read from `*.dist-info`, and how two package
//! sets differ ("+rich 13.7.1", "-idna 3.6", "urllib3 2.1.0→2.2.1", "~demo 1.0": the same version with
//! other files).
//!
//! Two readings of the same files: [`packages_of`] takes only `Name` and `Version`, exactly as SPEC §7
//! fixes it for a snapshot's package list (part of its hashed encoding); [`distributions_of`] parses
//! METADATA, RECORD and `entry_points.txt` in full, with PEP 440 versions and PEP 508 requirements,
//! for `blast packages` and the conflict check, and reads the `*.egg-info` of distributions installed
//! before wheels too (`PKG-INFO`, `requires.txt`), as Python and pip do.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use configparser::ini::{Ini, IniDefault};
use mailparse::MailHeaderMap;
use pep508_rs::pep440_rs::Version;
use pep508_rs::{ExtraName, PackageName, Requirement};
use serde::{Deserialize, Serialize};
use store_format::{Layer, Node, Package};

use crate::error::Result;
use crate::tree::{Tree, drops_content_below};

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

/// `Name` and `Version` from the headers of a METADATA file, as Python's `email` reads them (RFC 822:
/// headers end at a blank line, a line starting with a space or a tab continues the header above, the
/// first of two headers of one name counts).
pub fn parse_metadata(text: &str) -> Option<Package> {
    let mut headers: Vec<(&str, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((key, value)) = line.split_once(':') {
            headers.push((key.trim(), value.trim().to_owned()));
        }
    }
    let first = |wanted: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.trim())
    };
    package(
        first("name").map(normalize_name),
        first("version").map(str::to_owned),
    )
}

/// How blast read METADATA before 2026-11-27: every line up to a blank one a header, the last of two
/// counting. Snapshots made then list their packages so; images of them still import.
pub fn parse_metadata_as_before(text: &str) -> Option<Package> {
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
    package(name, version)
}

fn package(name: Option<String>, version: Option<String>) -> Option<Package> {
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
    files_in(tree, purelib, |rest| {
        rest.split_once('/')
            .is_some_and(|(dir, file)| dir.ends_with(".dist-info") && file == "METADATA")
    })
}

/// The metadata of the distributions installed in `purelib` the way setuptools did before wheels (by a
/// distribution's package manager, or `setup.py install`): `NAME.egg-info/PKG-INFO`, or a file
/// `NAME.egg-info` holding those headers. Python and pip see them; a snapshot's package list (SPEC
/// §7) does not.
pub fn egg_info_paths<'t>(
    tree: &'t Tree,
    purelib: &str,
) -> impl Iterator<Item = (&'t str, &'t Node)> {
    files_in(tree, purelib, |rest| match rest.split_once('/') {
        Some((dir, file)) => dir.ends_with(".egg-info") && file == "PKG-INFO",
        None => rest.ends_with(".egg-info"),
    })
}

/// The files below `purelib` whose path there `picked` accepts.
fn files_in<'t>(
    tree: &'t Tree,
    purelib: &str,
    picked: impl Fn(&str) -> bool + 't,
) -> impl Iterator<Item = (&'t str, &'t Node)> {
    let prefix = format!("{purelib}/");
    tree.descendants(purelib).filter_map(move |(path, node)| {
        let rest = path.strip_prefix(&prefix)?;
        (matches!(node, Node::File { .. }) && picked(rest)).then_some((path.as_str(), node))
    })
}

/// The package set of a tree; `read` returns the bytes of a METADATA file (from the store or a directory).
pub fn packages_of(
    tree: &Tree,
    purelib: &str,
    read: impl FnMut(&str, &Node) -> Result<Vec<u8>>,
) -> Result<Vec<Package>> {
    packages_read_by(parse_metadata, tree, purelib, read)
}

/// Where a tree's package list was read, known from the list itself.
#[derive(Debug, PartialEq)]
pub enum ListedAt<'t> {
    /// The directory whose METADATA gives the list ("" for an empty list in a tree without one).
    Purelib(&'t str),
    /// No directory gives it; `found` is what the last one gave (none at all: no packages).
    Nowhere { found: Vec<Package> },
}

/// Where `listed`, a snapshot's package list, was read in `tree`, for a tree without its environment
/// (an image's, a snapshot exported by id). The list was read from the interpreter's `purelib`, which
/// the tree does not say: it is one of the tree's `site-packages` or `dist-packages` directories at most
/// four deep (`lib/python3.11/site-packages`, `lib/python3/dist-packages`), the one whose METADATA gives
/// the list as read now or as read before 2026-11-27 ([`parse_metadata_as_before`]).
pub fn listed_at<'t>(
    tree: &'t Tree,
    listed: &[Package],
    mut read: impl FnMut(&str, &Node) -> Result<Vec<u8>>,
) -> Result<ListedAt<'t>> {
    let purelibs = tree.entries.iter().filter(|(path, node)| {
        let name = path.rsplit('/').next().unwrap_or(path);
        matches!(node, Node::Dir)
            && matches!(name, "site-packages" | "dist-packages")
            && path.split('/').count() <= 4
    });
    let mut found = Vec::new();
    for (purelib, _) in purelibs {
        found = packages_of(tree, purelib, &mut read)?;
        if found == listed
            || packages_read_by(parse_metadata_as_before, tree, purelib, &mut read)
                .is_ok_and(|before| before == listed)
        {
            return Ok(ListedAt::Purelib(purelib));
        }
    }
    Ok(match found.is_empty() && listed.is_empty() {
        true => ListedAt::Purelib(""),
        false => ListedAt::Nowhere { found },
    })
}

/// A package list for a message: `rich 13.7.1, mdurl 0.1.2`, or `none`.
pub fn described(packages: &[Package]) -> String {
    match packages {
        [] => "none".to_owned(),
        packages => packages
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The package set of a tree as `parse` reads each METADATA file.
fn packages_read_by(
    parse: fn(&str) -> Option<Package>,
    tree: &Tree,
    purelib: &str,
    mut read: impl FnMut(&str, &Node) -> Result<Vec<u8>>,
) -> Result<Vec<Package>> {
    let mut by_name = BTreeMap::new();
    for (path, node) in metadata_paths(tree, purelib) {
        let bytes = read(path, node)?;
        if let Some(pkg) = parse(&String::from_utf8_lossy(&bytes)) {
            by_name.insert(pkg.name.clone(), pkg);
        }
    }
    Ok(by_name.into_values().collect())
}

/// One installed distribution, read in full from its `*.dist-info` directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    pub name: PackageName,
    pub version: Version,
    /// Its `*.dist-info` directory, relative to the environment's root.
    pub dist_info: String,
    pub summary: Option<String>,
    /// `Requires-Dist`, in METADATA order.
    pub requires: Vec<Dependency>,
    pub provides_extra: Vec<ExtraName>,
    pub console_scripts: Vec<EntryPoint>,
    pub gui_scripts: Vec<EntryPoint>,
    /// RECORD: what the installer wrote, paths relative to site-packages.
    pub files: Vec<RecordEntry>,
}

/// One `Requires-Dist`: as written, for people, and parsed, for evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Dependency {
    pub written: String,
    pub requirement: Requirement,
}

/// One line of an `entry_points.txt` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryPoint {
    pub name: String,
    /// `module:attr`, followed by `[extras]` when it names any.
    pub target: String,
}

/// One row of RECORD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordEntry {
    pub path: String,
    /// `sha256=…`; none for RECORD itself and for files made after the install (bytecode).
    pub hash: Option<String>,
    pub size: Option<u64>,
}

impl Distribution {
    /// Parses the files of one `*.dist-info` directory (`dist_info`, relative to the environment's root).
    /// Fails only when METADATA gives no valid name and version; a requirement, extra, RECORD row or
    /// entry point that does not parse is left out and described in the returned warnings.
    pub fn parse(
        dist_info: &str,
        metadata: &[u8],
        record: Option<&[u8]>,
        entry_points: Option<&[u8]>,
    ) -> Result<(Distribution, Vec<String>), String> {
        let (headers, _) =
            mailparse::parse_headers(metadata).map_err(|e| format!("METADATA: {e}"))?;
        let field = |key: &str| {
            headers
                .get_first_value(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty() && v != "UNKNOWN")
        };
        let name = field("Name").ok_or("METADATA has no `Name`")?;
        let name =
            PackageName::from_str(&name).map_err(|e| format!("METADATA: `Name: {name}`: {e}"))?;
        let version = field("Version").ok_or("METADATA has no `Version`")?;
        let version = Version::from_str(&version)
            .map_err(|e| format!("METADATA: `Version: {version}` is not a PEP 440 version: {e}"))?;
        let mut warnings = Vec::new();
        let requires = headers
            .get_all_values("Requires-Dist")
            .into_iter()
            .filter_map(|written| {
                let source = format!("METADATA: `Requires-Dist: {}`", written.trim());
                Dependency::parse(written.trim(), &source, &mut warnings)
            })
            .collect();
        let mut provides_extra = Vec::new();
        for extra in headers.get_all_values("Provides-Extra") {
            match ExtraName::from_str(extra.trim()) {
                Ok(extra) => provides_extra.push(extra),
                Err(e) => warnings.push(format!("METADATA: `Provides-Extra: {extra}`: {e}")),
            }
        }
        let files = match record {
            Some(bytes) => parse_record(bytes, &mut warnings),
            None => Vec::new(),
        };
        let mut sections = match entry_points {
            Some(bytes) => parse_entry_points(bytes, &mut warnings),
            None => BTreeMap::new(),
        };
        let dist = Distribution {
            name,
            version,
            dist_info: dist_info.to_owned(),
            summary: field("Summary"),
            requires,
            provides_extra,
            console_scripts: sections.remove("console_scripts").unwrap_or_default(),
            gui_scripts: sections.remove("gui_scripts").unwrap_or_default(),
            files,
        };
        Ok((dist, warnings))
    }
}

impl Distribution {
    /// Adds the requirements of an egg-info's `requires.txt`: a requirement a line, under a section
    /// `[extra]`, `[:marker]` or `[extra:marker]` that says when it applies.
    fn add_requires_txt(&mut self, bytes: &[u8], warnings: &mut Vec<String>) {
        let text = String::from_utf8_lossy(bytes);
        let mut condition: Option<String> = None;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                let (extra, marker) = section.split_once(':').unwrap_or((section, ""));
                let (extra, marker) = (normalize_name(extra), marker.trim());
                condition = match (extra.is_empty(), marker.is_empty()) {
                    (true, true) => None,
                    (false, true) => Some(format!("extra == \"{extra}\"")),
                    (true, false) => Some(marker.to_owned()),
                    (false, false) => Some(format!("({marker}) and extra == \"{extra}\"")),
                };
                continue;
            }
            let written = match &condition {
                Some(condition) => format!("{line} ; {condition}"),
                None => line.to_owned(),
            };
            let source = format!("requires.txt: `{line}`");
            self.requires
                .extend(Dependency::parse(&written, &source, warnings));
        }
    }
}

impl Dependency {
    /// A requirement as written, if it parses; otherwise a warning naming `source`.
    fn parse(written: &str, source: &str, warnings: &mut Vec<String>) -> Option<Dependency> {
        if let Some(why) = refused_before_parsing(written) {
            warnings.push(format!("{source} is not a PEP 508 requirement: {why}"));
            return None;
        }
        match Requirement::from_str(written) {
            Ok(requirement) => Some(Dependency {
                written: written.to_owned(),
                requirement,
            }),
            Err(e) => {
                warnings.push(format!(
                    "{source} is not a PEP 508 requirement: {}",
                    e.message
                ));
                None
            }
        }
    }
}

/// RECORD is CSV: path, hash, size (the last two empty for RECORD itself).
fn parse_record(bytes: &[u8], warnings: &mut Vec<String>) -> Vec<RecordEntry> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut out = Vec::new();
    for row in reader.records() {
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                warnings.push(format!("RECORD: {e}"));
                continue;
            }
        };
        let Some(path) = row.get(0).filter(|p| !p.is_empty()) else {
            continue;
        };
        let hash = row.get(1).filter(|h| !h.is_empty()).map(str::to_owned);
        let size = match row.get(2).filter(|s| !s.is_empty()) {
            None => None,
            Some(size) => match size.parse() {
                Ok(size) => Some(size),
                Err(_) => {
                    warnings.push(format!("RECORD: `{path}` has size `{size}`"));
                    None
                }
            },
        };
        out.push(RecordEntry {
            path: path.to_owned(),
            hash,
            size,
        });
    }
    out
}

/// `entry_points.txt` is an INI file read the way `importlib.metadata` reads it: `=` is the only
/// delimiter (a target holds `:`), names keep their case, no inline comments.
fn parse_entry_points(
    bytes: &[u8],
    warnings: &mut Vec<String>,
) -> BTreeMap<String, Vec<EntryPoint>> {
    let mut defaults = IniDefault::default();
    defaults.delimiters = vec!['='];
    defaults.case_sensitive = true;
    defaults.enable_inline_comments = false;
    let sections =
        match Ini::new_from_defaults(defaults).read(String::from_utf8_lossy(bytes).into_owned()) {
            Ok(sections) => sections,
            Err(e) => {
                warnings.push(format!("entry_points.txt: {e}"));
                return BTreeMap::new();
            }
        };
    sections
        .into_iter()
        .map(|(section, entries)| {
            let mut points: Vec<EntryPoint> = entries
                .into_iter()
                .filter_map(|(name, target)| {
                    Some(EntryPoint {
                        name,
                        target: target?,
                    })
                })
                .collect();
            points.sort_by(|a, b| a.name.cmp(&b.name));
            (section, points)
        })
        .collect()
}

/// What [`distributions_of`] found: the distributions by name, and what could not be read, each
/// naming its file.
#[derive(Debug, Clone, Default)]
pub struct Distributions {
    pub found: Vec<Distribution>,
    pub problems: Vec<String>,
}

/// The distributions of a tree, read in full; `read` returns a file's bytes (from the store or a
/// directory). A name that two `*.dist-info` directories claim keeps the last in path order, as
/// [`packages_of`] does.
pub fn distributions_of(
    tree: &Tree,
    purelib: &str,
    mut read: impl FnMut(&str, &Node) -> Result<Vec<u8>>,
) -> Result<Distributions> {
    let mut by_name: BTreeMap<String, Distribution> = BTreeMap::new();
    let mut problems = Vec::new();
    // Egg-info first: where a name has both, the `*.dist-info` counts.
    let described = egg_info_paths(tree, purelib)
        .map(|(path, node)| (path, node, true))
        .chain(metadata_paths(tree, purelib).map(|(path, node)| (path, node, false)));
    for (metadata_path, node, egg) in described {
        let dir = ["/METADATA", "/PKG-INFO"]
            .iter()
            .find_map(|file| metadata_path.strip_suffix(file))
            .unwrap_or(metadata_path);
        let metadata = read(metadata_path, node)?;
        let mut sibling = |file: &str| -> Result<Option<Vec<u8>>> {
            let path = format!("{dir}/{file}");
            match tree.entries.get(&path) {
                Some(node @ Node::File { .. }) => read(&path, node).map(Some),
                _ => Ok(None),
            }
        };
        let record = match egg {
            false => sibling("RECORD")?,
            true => None,
        };
        let entry_points = sibling("entry_points.txt")?;
        let requires_txt = match egg {
            true => sibling("requires.txt")?,
            false => None,
        };
        let parsed =
            Distribution::parse(dir, &metadata, record.as_deref(), entry_points.as_deref());
        // As pip and importlib.metadata: `requires.txt` only where PKG-INFO names no requirement.
        let parsed = parsed.map(|(mut dist, mut warnings)| {
            if let Some(bytes) = requires_txt.filter(|_| dist.requires.is_empty()) {
                dist.add_requires_txt(&bytes, &mut warnings);
            }
            (dist, warnings)
        });
        match parsed {
            Ok((dist, warnings)) => {
                problems.extend(warnings.into_iter().map(|w| format!("`{dir}`: {w}")));
                if let Some(earlier) = by_name.insert(dist.name.to_string(), dist) {
                    problems.push(format!(
                        "`{}` and `{dir}` both describe {}: the second one counts",
                        earlier.dist_info, earlier.name
                    ));
                }
            }
            Err(e) => problems.push(format!("`{dir}` is left out: {e}")),
        }
    }
    Ok(Distributions {
        found: by_name.into_values().collect(),
        problems,
    })
}

/// How one package changed between two sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The same version, other files.
    Reinstalled {
        name: String,
        version: String,
    },
}

impl std::fmt::Display for PackageChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackageChange::Added { name, version } => write!(f, "+{name} {version}"),
            PackageChange::Removed { name, version } => write!(f, "-{name} {version}"),
            PackageChange::Changed { name, from, to } => write!(f, "{name} {from}→{to}"),
            PackageChange::Reinstalled { name, version } => write!(f, "~{name} {version}"),
        }
    }
}

/// The trees two package sets were read from, whole or only where they can differ
/// ([`crate::tree::Region`]): with them, a distribution installed again at the same version with other
/// files (a rebuilt wheel of a project whose version did not change, `pip install -e .` over a regular
/// install, a wheel from another source) is told from one left alone.
#[derive(Clone, Copy)]
pub struct InstalledFrom<'t> {
    pub before: &'t Tree,
    pub after: &'t Tree,
    pub purelib: &'t str,
}

/// Changes from `old` to `new`, by name; with `trees`, same-version distributions whose `*.dist-info`
/// files differ are `Reinstalled`.
pub fn package_changes(
    old: &[Package],
    new: &[Package],
    trees: Option<InstalledFrom<'_>>,
) -> Vec<PackageChange> {
    let files = trees.map(|t| {
        (
            dist_info_files(t.before, t.purelib),
            dist_info_files(t.after, t.purelib),
        )
    });
    let reinstalled = |name: &str| {
        files
            .as_ref()
            .is_some_and(|(before, after)| before.get(name) != after.get(name))
    };
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
            Some(_) if reinstalled(name) => out.push(PackageChange::Reinstalled {
                name: (*name).to_owned(),
                version: (*version).to_owned(),
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

/// The entries below each `*.dist-info` directory in `purelib`, by the name its directory gives.
fn dist_info_files<'t>(
    tree: &'t Tree,
    purelib: &str,
) -> BTreeMap<String, Vec<(&'t String, &'t Node)>> {
    let prefix = format!("{purelib}/");
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for (path, node) in tree.descendants(purelib) {
        let inside = path
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once('/'));
        if let Some(name) = inside.and_then(|(dir, _)| dist_info_name(dir)) {
            out.entry(name).or_default().push((path, node));
        }
    }
    out
}

/// The PEP 503 name of the distribution a directory name in `purelib` is the `*.dist-info` of
/// (`blast_demo-1.0.dist-info` → `blast-demo`: the escaped name, then `-` and the version).
pub fn dist_info_name(dir: &str) -> Option<String> {
    let stem = dir.strip_suffix(".dist-info")?;
    Some(normalize_name(
        stem.split_once('-').map_or(stem, |(name, _)| name),
    ))
}

/// The distributions whose `*.dist-info` entries `layer` changes; `None` when it removes or replaces
/// `purelib` or a directory above it, which changes them all.
pub fn dist_infos_changed_by(layer: &Layer, purelib: &str) -> Option<BTreeSet<String>> {
    let prefix = format!("{purelib}/");
    let mut names = BTreeSet::new();
    for (path, change) in &layer.changes {
        let above = path == purelib || purelib.starts_with(&format!("{path}/"));
        if above && drops_content_below(change) {
            return None;
        }
        let dir = path
            .strip_prefix(&prefix)
            .map(|rest| rest.split('/').next());
        if let Some(name) = dir.flatten().and_then(dist_info_name) {
            names.insert(name);
        }
    }
    Some(names)
}

/// Why a `Requires-Dist` is refused before pep508_rs parses it, if it is. METADATA is untrusted and
/// pep508_rs 0.9 panics on kinds of input the `dist_info_parse` fuzz target found: a package or extra
/// name ending with `.`, `-` or `_` followed by anything (its end-of-name check only covers the end of
/// the input), and non-ASCII text in a marker (it slices by bytes inside a character). Requirements are
/// ASCII in practice (URLs are percent-encoded), so both are refused with a reason.
fn refused_before_parsing(requirement: &str) -> Option<String> {
    if !requirement.is_ascii() {
        return Some("it holds characters outside ASCII".into());
    }
    let start = requirement.trim_start();
    let in_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    let (name, rest) = start.split_at(start.find(|c| !in_name(c)).unwrap_or(start.len()));
    // The same goes for the names of extras: `name[extra, …]`.
    let extras = rest
        .trim_start()
        .strip_prefix('[')
        .map(|e| e.split(']').next().unwrap_or_default())
        .unwrap_or_default();
    std::iter::once(name)
        .chain(extras.split(|c: char| !in_name(c)))
        .find(|n| n.ends_with(['.', '-', '_']))
        .map(|n| format!("the name `{n}` must end with a letter or digit"))
}

#[cfg(test)]
mod tests {
    use store_format::Change;

    use super::*;

    /// Regression for the crashes the `dist_info_parse` fuzz target found in pep508_rs: a package or
    /// extra name ending with `_`, `-` or `.` that goes on, and non-ASCII text in a marker.
    #[test]
    fn requirements_pep508_rs_would_panic_on_are_warnings_not_crashes() {
        for written in [
            "blastbase_ >=1",
            "blastbasmmary8sO_\u{8}",
            "a- ; python_version > '3'",
            "x. [extra]",
            "blastpin; extra == \"pin\"ÄÄÄ",
            "blasMe80Ysf9P[BwQ_.\thA21",
            "rich[jupyter_, x] >=1",
        ] {
            let metadata = format!(
                "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nRequires-Dist: {written}\n"
            );
            let (dist, warnings) =
                Distribution::parse("demo-1.0.dist-info", metadata.as_bytes(), None, None).unwrap();
            assert!(dist.requires.is_empty(), "{written}");
            assert!(
                warnings[0].contains("is not a PEP 508 requirement"),
                "{warnings:?}"
            );
        }
        assert_eq!(
            refused_before_parsing("ok-name >=1; python_version > '3'"),
            None
        );
        assert_eq!(refused_before_parsing("rich[jupyter, x-y] >=13"), None);
        assert!(refused_before_parsing("trailing_").is_some());
    }

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

    /// Found by exploratory testing: an old-style `Description:` header's continuation lines were read
    /// as headers, so a changelog line `Version: 0.9` became the package's version.
    #[test]
    fn continuation_lines_belong_to_the_header_above_and_the_first_header_counts() {
        let metadata = "Metadata-Version: 2.0\nName: realpkg\nVersion: 1.0\nDescription: Changelog\n        Version: 0.9\n\tName: other\nVersion: 2.0\nName: beta\n";
        let pkg = parse_metadata(metadata).unwrap();
        assert_eq!(
            (pkg.name.as_str(), pkg.version.as_str()),
            ("realpkg", "1.0")
        );
        let before = parse_metadata_as_before(metadata).unwrap();
        assert_eq!(
            (before.name.as_str(), before.version.as_str()),
            ("beta", "2.0")
        );
        // A folded value is unfolded.
        let folded = parse_metadata("Name: folded\nVersion:\n 3.0\n").unwrap();
        assert_eq!(folded.version, "3.0");
    }

    const METADATA: &str = "Metadata-Version: 2.1
Name: Blast_Extra
Version: 1.0.0
Summary: An extra
  folded over two lines
Requires-Dist: blastbase>=1.0; python_version >= \"3.8\"
Requires-Dist: blastpin; extra == \"pin\"
Requires-Dist: broken>>1
Provides-Extra: pin

Requires-Dist: in the body, not a header
";

    #[test]
    fn parses_a_whole_dist_info() {
        let record = b"blastextra/__init__.py,sha256=abc,12\n\"odd,name.py\",sha256=def,3\n../../../bin/blastextra,sha256=ghi,200\nblast_extra-1.0.0.dist-info/RECORD,,\n";
        let entry_points = b"[console_scripts]\nblastextra = blastextra.cli:main\n\n[gui_scripts]\nBlastGui = blastextra.gui:run [pin]\n\n[other]\nx = y:z\n";
        let (dist, warnings) = Distribution::parse(
            "lib/python3.11/site-packages/blast_extra-1.0.0.dist-info",
            METADATA.as_bytes(),
            Some(record),
            Some(entry_points),
        )
        .unwrap();
        assert_eq!(dist.name.to_string(), "blast-extra");
        assert_eq!(dist.version.to_string(), "1.0.0");
        assert_eq!(
            dist.summary.as_deref(),
            Some("An extra folded over two lines")
        );
        let written: Vec<&str> = dist.requires.iter().map(|d| d.written.as_str()).collect();
        assert_eq!(
            written,
            [
                r#"blastbase>=1.0; python_version >= "3.8""#,
                r#"blastpin; extra == "pin""#
            ]
        );
        assert_eq!(dist.requires[0].requirement.name.to_string(), "blastbase");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("`Requires-Dist: broken>>1` is not a PEP 508 requirement"));
        assert_eq!(dist.provides_extra.len(), 1);
        assert_eq!(
            dist.console_scripts,
            [EntryPoint {
                name: "blastextra".into(),
                target: "blastextra.cli:main".into()
            }]
        );
        assert_eq!(
            dist.gui_scripts,
            [EntryPoint {
                name: "BlastGui".into(),
                target: "blastextra.gui:run [pin]".into()
            }]
        );
        let paths: Vec<&str> = dist.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "blastextra/__init__.py",
                "odd,name.py",
                "../../../bin/blastextra",
                "blast_extra-1.0.0.dist-info/RECORD"
            ]
        );
        assert_eq!(dist.files[0].hash.as_deref(), Some("sha256=abc"));
        assert_eq!(dist.files[0].size, Some(12));
        assert_eq!(dist.files[3].hash, None);
        assert_eq!(dist.files[3].size, None);
    }

    #[test]
    fn a_dist_info_without_a_valid_name_or_version_is_refused() {
        let parse = |text: &str| Distribution::parse("x.dist-info", text.as_bytes(), None, None);
        assert!(parse("Name: x\n").unwrap_err().contains("no `Version`"));
        assert!(
            parse("Name: x\nVersion: one\n")
                .unwrap_err()
                .contains("`Version: one` is not a PEP 440 version")
        );
        assert!(parse("Version: 1\n").unwrap_err().contains("no `Name`"));
    }

    #[test]
    fn distributions_of_a_tree_name_their_problems() {
        let file = |content: &str| Node::File {
            object: store_format::ObjectId::from(blake3::hash(content.as_bytes())),
            size: content.len() as u64,
            executable: false,
            relocatable: false,
        };
        let files = [
            (
                "site/a-1.dist-info/METADATA",
                "Name: a\nVersion: 1\nRequires-Dist: b\n",
            ),
            ("site/a-1.dist-info/RECORD", "a.py,sha256=x,4\n"),
            ("site/b-2.dist-info/METADATA", "Name: b\nVersion: two\n"),
            ("site/c-3.dist-info/METADATA", "Name: C\nVersion: 3\n"),
            (
                "site/c_again-3.dist-info/METADATA",
                "Name: c\nVersion: 3.1\n",
            ),
            (
                "site/nested/d-1.dist-info/METADATA",
                "Name: d\nVersion: 1\n",
            ),
        ];
        let mut tree = Tree::default();
        let mut contents = std::collections::HashMap::new();
        for (path, content) in files {
            tree.entries.insert(path.into(), file(content));
            contents.insert(path.to_owned(), content.as_bytes().to_vec());
        }
        let found = distributions_of(&tree, "site", |path, _| Ok(contents[path].clone())).unwrap();
        let names: Vec<String> = found
            .found
            .iter()
            .map(|d| format!("{} {} {}", d.name, d.version, d.files.len()))
            .collect();
        assert_eq!(names, ["a 1 1", "c 3.1 0"]);
        assert_eq!(found.problems.len(), 2, "{:?}", found.problems);
        assert!(found.problems[0].starts_with("`site/b-2.dist-info` is left out:"));
        assert!(found.problems[1].contains("both describe c"));
    }

    /// Found by exploratory testing: a distribution installed as `*.egg-info` (a distribution's own
    /// package, `setup.py install`) read as "not installed" to `blast check`, which pip and Python see.
    #[test]
    fn egg_info_directories_and_files_are_distributions_too() {
        let files = [
            (
                "site/eggy-1.0-py3.11.egg-info/PKG-INFO",
                "Metadata-Version: 1.1\nName: eggy\nVersion: 1.0\n\nA long description.\n",
            ),
            (
                "site/eggy-1.0-py3.11.egg-info/requires.txt",
                "base>=1\n\n[Fast]\nspeedups\n\n[:sys_platform == \"win32\"]\ncolorama\n\n[doc:python_version < \"3.9\"]\nold-docs\n",
            ),
            (
                "site/filey-2.0-py3.11.egg-info",
                "Metadata-Version: 1.1\nName: filey\nVersion: 2.0\n",
            ),
            // Newer setuptools writes both: PKG-INFO's requirements count, once.
            (
                "site/newer-3.0.egg-info/PKG-INFO",
                "Metadata-Version: 2.1\nName: newer\nVersion: 3.0\nRequires-Dist: base>=2\n",
            ),
            ("site/newer-3.0.egg-info/requires.txt", "base>=2\n"),
            (
                "site/both-1.egg-info/PKG-INFO",
                "Name: both\nVersion: 0.9\n",
            ),
            ("site/both-1.dist-info/METADATA", "Name: both\nVersion: 1\n"),
        ];
        let mut tree = Tree::default();
        let mut contents = std::collections::HashMap::new();
        for (path, content) in files {
            tree.entries.insert(
                path.into(),
                Node::File {
                    object: store_format::ObjectId::from(blake3::hash(content.as_bytes())),
                    size: content.len() as u64,
                    executable: false,
                    relocatable: false,
                },
            );
            contents.insert(path.to_owned(), content.as_bytes().to_vec());
        }
        let found = distributions_of(&tree, "site", |path, _| Ok(contents[path].clone())).unwrap();
        let names: Vec<String> = found
            .found
            .iter()
            .map(|d| format!("{} {}", d.name, d.version))
            .collect();
        assert_eq!(names, ["both 1", "eggy 1.0", "filey 2.0", "newer 3.0"]);
        let newer: Vec<&str> = found.found[3]
            .requires
            .iter()
            .map(|d| d.written.as_str())
            .collect();
        assert_eq!(newer, ["base>=2"]);
        let eggy = &found.found[1];
        let requires: Vec<&str> = eggy.requires.iter().map(|d| d.written.as_str()).collect();
        assert_eq!(
            requires,
            [
                "base>=1",
                "speedups ; extra == \"fast\"",
                "colorama ; sys_platform == \"win32\"",
                "old-docs ; (python_version < \"3.9\") and extra == \"doc\"",
            ]
        );
        // The snapshot's package list (SPEC §7) stays the `*.dist-info` one.
        let listed = packages_of(&tree, "site", |path, _| Ok(contents[path].clone())).unwrap();
        assert_eq!(listed.len(), 1);
    }

    #[test]
    fn changes_name_added_removed_and_upgraded() {
        let p = |n: &str, v: &str| Package {
            name: n.into(),
            version: v.into(),
        };
        let changes = package_changes(
            &[p("a", "1"), p("b", "1")],
            &[p("a", "2"), p("c", "1")],
            None,
        );
        let shown: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["a 1→2", "+c 1", "-b 1"]);
    }

    /// A rebuilt wheel of the same version (`pip install .` twice in a project whose version did not
    /// change) read as "no package changes" in `blast log`.
    #[test]
    fn a_same_version_distribution_with_other_files_is_reinstalled() {
        let file = |content: &str| Node::File {
            object: store_format::ObjectId::from(blake3::hash(content.as_bytes())),
            size: content.len() as u64,
            executable: false,
            relocatable: false,
        };
        let tree = |record: &str| Tree {
            entries: [
                ("site", Node::Dir),
                ("site/blast_demo-1.0.dist-info", Node::Dir),
                ("site/blast_demo-1.0.dist-info/RECORD", file(record)),
                ("site/blast_demo/__init__.py", file(record)),
                ("site/other-2.dist-info", Node::Dir),
                ("site/other-2.dist-info/RECORD", file("same")),
            ]
            .into_iter()
            .map(|(path, node)| (path.to_owned(), node))
            .collect(),
        };
        let (before, after) = (tree("built once"), tree("built again"));
        let listed = [
            Package {
                name: "blast-demo".into(),
                version: "1.0".into(),
            },
            Package {
                name: "other".into(),
                version: "2".into(),
            },
        ];
        let trees = |before, after| {
            Some(InstalledFrom {
                before,
                after,
                purelib: "site",
            })
        };
        let changes = package_changes(&listed, &listed, trees(&before, &after));
        let shown: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["~blast-demo 1.0"]);
        assert!(package_changes(&listed, &listed, trees(&before, &before)).is_empty());
        assert!(package_changes(&listed, &listed, None).is_empty());
    }

    #[test]
    fn a_layer_names_the_distributions_whose_dist_info_it_changes() {
        let layer = |changes: &[(&str, Change)]| Layer {
            changes: changes
                .iter()
                .map(|(path, change)| ((*path).to_owned(), change.clone()))
                .collect(),
        };
        let changed = dist_infos_changed_by(
            &layer(&[
                ("lib/site/Blast.Demo-1.0.dist-info/RECORD", Change::Opaque),
                ("lib/site/old-1.dist-info", Change::Whiteout),
                ("lib/site/blast_demo/__init__.py", Change::Whiteout),
                ("lib", Change::Put(Node::Dir)),
            ]),
            "lib/site",
        );
        assert_eq!(
            changed,
            Some(BTreeSet::from(["blast-demo".to_owned(), "old".to_owned()]))
        );
        assert_eq!(
            dist_infos_changed_by(&layer(&[("lib", Change::Opaque)]), "lib/site"),
            None
        );
    }
}
