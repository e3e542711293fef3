//! The conflict check: which requirements of the installed distributions do not hold (what `pip check`
//! reports), and why, explained by pubgrub's derivation report over the versions known to blast.
//!
//! A requirement applies when its marker holds in the interpreter's marker environment with no extra
//! active, as `pip check` evaluates it; it holds when it names an installed distribution whose version
//! its specifier contains (a URL or no specifier takes any version; the extras it asks of that
//! distribution are not followed). The explanation asks pubgrub to install everything as it is, with
//! the distribution that a broken requirement names left free among its known versions (the installed
//! one and those installed before): when no choice works, pubgrub's derivation tree names the packages
//! and ranges that fight.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use pep508_rs::pep440_rs::{Operator, Version, VersionSpecifier};
use pep508_rs::{MarkerEnvironment, PackageName, VersionOrUrl};
use pubgrub::{DefaultStringReporter, OfflineDependencyProvider, PubGrubError, Ranges, Reporter};
use serde::Serialize;

use crate::packages::{Dependency, Distribution};

/// A requirement of an installed distribution that the installed set does not meet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unsatisfied {
    /// The distribution that has the requirement.
    pub package: String,
    pub version: Version,
    /// The `Requires-Dist` as written.
    pub requirement: String,
    /// The (normalized) name of the distribution it requires.
    pub requires: String,
    /// Its installed version; none when it is not installed.
    pub installed: Option<Version>,
}

impl fmt::Display for Unsatisfied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} requires {}, but ",
            self.package, self.version, self.requirement
        )?;
        match &self.installed {
            Some(installed) => write!(f, "{} {installed} is installed", self.requires),
            None => write!(f, "{} is not installed", self.requires),
        }
    }
}

/// Broken requirements with pubgrub's account of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConflictReport {
    pub unsatisfied: Vec<Unsatisfied>,
    /// One paragraph per distribution that broken requirements name.
    pub explanation: String,
}

impl fmt::Display for ConflictReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.unsatisfied.iter().map(ToString::to_string).collect();
        write!(f, "{}", lines.join("\n"))?;
        if !self.explanation.is_empty() {
            write!(f, "\n{}", self.explanation)?;
        }
        Ok(())
    }
}

/// Every requirement of `installed` that applies in `markers` and does not hold, in the order of
/// `installed` and of each one's METADATA.
pub fn unsatisfied(installed: &[Distribution], markers: &MarkerEnvironment) -> Vec<Unsatisfied> {
    let versions: HashMap<&PackageName, &Version> =
        installed.iter().map(|d| (&d.name, &d.version)).collect();
    let mut out = Vec::new();
    for dist in installed {
        for dep in applying(dist, markers) {
            let name = &dep.requirement.name;
            let installed = versions.get(name).copied();
            if !installed.is_some_and(|v| holds(dep, v)) {
                out.push(Unsatisfied {
                    package: dist.name.to_string(),
                    version: dist.version.clone(),
                    requirement: dep.written.clone(),
                    requires: name.to_string(),
                    installed: installed.cloned(),
                });
            }
        }
    }
    out
}

/// Requirements unsatisfied in `after` that were not already unsatisfied in `before`, with an
/// explanation; None when the install introduced no conflict. `committed`: the change is kept (a
/// session's capture, an install with `--allow-conflicts`), not refused.
pub fn conflicts_introduced(
    before: &[Distribution],
    after: &[Distribution],
    markers: &MarkerEnvironment,
    committed: bool,
) -> Option<ConflictReport> {
    let already: HashSet<(String, String)> = unsatisfied(before, markers)
        .into_iter()
        .map(|u| (u.package, u.requirement))
        .collect();
    let introduced: Vec<Unsatisfied> = unsatisfied(after, markers)
        .into_iter()
        .filter(|u| !already.contains(&(u.package.clone(), u.requirement.clone())))
        .collect();
    // What was broken before is not this change's doing, and told of, it hides what is; and a refused
    // change that removes a distribution is not repaired by installing it again: it removed nothing.
    (!introduced.is_empty()).then(|| ConflictReport {
        explanation: explain_with(&introduced, after, before, markers, &already, committed),
        unsatisfied: introduced,
    })
}

/// The requirements of `dist` whose marker holds here with no extra active.
fn applying<'d>(
    dist: &'d Distribution,
    markers: &'d MarkerEnvironment,
) -> impl Iterator<Item = &'d Dependency> {
    dist.requires
        .iter()
        .filter(move |d| d.requirement.evaluate_markers(markers, &[]))
}

fn holds(dep: &Dependency, version: &Version) -> bool {
    match &dep.requirement.version_or_url {
        Some(VersionOrUrl::VersionSpecifier(specifiers)) => specifiers
            .iter()
            .all(|specifier| allows(specifier, version)),
        Some(VersionOrUrl::Url(_)) | None => true,
    }
}

/// `specifier.contains(version)`, but for `<V` with V a pre-release: pep440_rs 0.7 keeps every
/// pre-release of V's release out of it (`2.0rc1` out of `<2.0rc2`), where PEP 440 keeps them out only
/// when V is not a pre-release itself (as pip and uv read it, and as the crate's own ranges do).
fn allows(specifier: &VersionSpecifier, version: &Version) -> bool {
    match specifier.operator() {
        Operator::LessThan if specifier.version().any_prerelease() => version < specifier.version(),
        _ => specifier.contains(version),
    }
}

/// The versions a requirement allows, as a pubgrub range.
fn range(dep: &Dependency) -> Ranges<Version> {
    match &dep.requirement.version_or_url {
        Some(VersionOrUrl::VersionSpecifier(specifiers)) => Ranges::from(specifiers.clone()),
        Some(VersionOrUrl::Url(_)) | None => Ranges::full(),
    }
}

const ROOT: &str = "the environment";

/// A package of the pubgrub problem: the installed set itself (the root), or a distribution.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Installed,
    Dist(PackageName),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Installed => f.write_str(ROOT),
            Subject::Dist(name) => write!(f, "{name}"),
        }
    }
}

/// pubgrub's account of `unsatisfied` (requirements of `installed`), one paragraph per distribution they
/// name, with the versions of it in `earlier` (distributions installed before, any number per name) as
/// alternatives to the installed one. A distribution pubgrub's ranges cannot explain (see
/// [`explain_one`]) gets no paragraph: its unsatisfied lines stand alone.
pub fn explain(
    unsatisfied: &[Unsatisfied],
    installed: &[Distribution],
    earlier: &[Distribution],
    markers: &MarkerEnvironment,
) -> String {
    explain_with(
        unsatisfied,
        installed,
        earlier,
        markers,
        &HashSet::new(),
        true,
    )
}

/// As [`explain`], leaving out the requirements `known` names (distribution, requirement as written).
/// A version held before that meets every requirement is named as the repair where the target is
/// installed at another version, or, with `reinstall_removed`, not installed at all; without it, a
/// version the change would remove is named as what to keep.
fn explain_with(
    unsatisfied: &[Unsatisfied],
    installed: &[Distribution],
    earlier: &[Distribution],
    markers: &MarkerEnvironment,
    known: &HashSet<(String, String)>,
    reinstall_removed: bool,
) -> String {
    let targets: BTreeSet<&str> = unsatisfied.iter().map(|u| u.requires.as_str()).collect();
    targets
        .into_iter()
        .filter_map(|target| PackageName::from_str(target).ok())
        .filter_map(|target| {
            explain_one(
                &target,
                installed,
                earlier,
                markers,
                known,
                reinstall_removed,
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// pubgrub over: every installed distribution pinned to its version, except `target`, which may take
/// any version it had (installed or earlier). Requirements broken for another target are left out:
/// their own paragraph explains them. `None` where pubgrub finds the installed version itself fine or
/// nothing needing `target`: its ranges read a requirement otherwise than the check does (`===`, `!=`
/// against a local version, a distribution requiring itself), and what it would say is not so.
fn explain_one(
    target: &PackageName,
    installed: &[Distribution],
    earlier: &[Distribution],
    markers: &MarkerEnvironment,
    known: &HashSet<(String, String)>,
    reinstall_removed: bool,
) -> Option<String> {
    let installed_versions: HashMap<&PackageName, &Version> =
        installed.iter().map(|d| (&d.name, &d.version)).collect();
    let root_version = Version::new([0]);
    let mut provider = OfflineDependencyProvider::<Subject, Ranges<Version>>::new();
    let mut pins = Vec::new();
    let mut candidates = BTreeSet::new();
    let earlier_targets = earlier.iter().filter(|d| d.name == *target);
    for (dist, is_installed) in installed
        .iter()
        .map(|d| (d, true))
        .chain(earlier_targets.map(|d| (d, false)))
    {
        let is_target = dist.name == *target;
        if is_target && !candidates.insert(dist.version.clone()) {
            continue; // the installed version came first and counts
        }
        if !is_target {
            pins.push((
                Subject::Dist(dist.name.clone()),
                Ranges::singleton(dist.version.clone()),
            ));
        }
        let mut deps: BTreeMap<&PackageName, Ranges<Version>> = BTreeMap::new();
        for dep in applying(dist, markers) {
            let name = &dep.requirement.name;
            if *name == dist.name || known.contains(&(dist.name.to_string(), dep.written.clone())) {
                continue;
            }
            let mut allowed = range(dep);
            if name != target {
                match installed_versions.get(name) {
                    // Satisfied as pip sees it: the pin must fit the range whatever the range makes
                    // of local versions and pre-releases.
                    Some(v) if holds(dep, v) => {
                        allowed = allowed.union(&Ranges::singleton((*v).clone()));
                    }
                    _ if is_installed => continue,
                    _ => {}
                }
            }
            deps.entry(name)
                .and_modify(|r| *r = r.intersection(&allowed))
                .or_insert(allowed);
        }
        provider.add_dependencies(
            Subject::Dist(dist.name.clone()),
            dist.version.clone(),
            deps.into_iter()
                .map(|(name, range)| (Subject::Dist(name.clone()), range)),
        );
    }
    provider.add_dependencies(Subject::Installed, root_version.clone(), pins);
    match pubgrub::resolve(&provider, Subject::Installed, root_version.clone()) {
        // pubgrub names every package with its version; the root's is a placeholder worth hiding.
        Err(PubGrubError::NoSolution(tree)) => Some(
            DefaultStringReporter::report(&tree)
                .replace(&format!("{} {root_version}", Subject::Installed), ROOT),
        ),
        Err(e) => Some(format!("{target}: {e}")),
        // Some installed requirement excludes the installed version, so the solution took an earlier one.
        Ok(solution) => match (
            solution.get(&Subject::Dist(target.clone())),
            installed_versions.get(target),
        ) {
            (Some(version), Some(installed)) if *installed != version => Some(format!(
                "{target} {version}, installed before, meets every requirement: installing it again would repair this"
            )),
            (Some(version), None) if reinstall_removed => Some(format!(
                "{target} {version}, installed before, meets every requirement: installing it again would repair this"
            )),
            // A refused removal removed nothing: the version is still there.
            (Some(version), None) => Some(format!(
                "{target} {version}, which this change removes, meets every requirement: keep it, or remove what requires it as well"
            )),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::markers::MarkerValues;

    fn markers(python_version: &str) -> MarkerEnvironment {
        MarkerValues {
            implementation_name: "cpython".into(),
            implementation_version: format!("{python_version}.1"),
            os_name: "posix".into(),
            platform_machine: "x86_64".into(),
            platform_python_implementation: "CPython".into(),
            platform_release: "6.1.0".into(),
            platform_system: "Linux".into(),
            platform_version: "#1 SMP".into(),
            python_full_version: format!("{python_version}.1"),
            python_version: python_version.into(),
            sys_platform: "linux".into(),
        }
        .to_environment()
        .unwrap()
    }

    fn dist(name: &str, version: &str, requires: &[&str]) -> Distribution {
        let mut metadata = format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n");
        for r in requires {
            metadata.push_str(&format!("Requires-Dist: {r}\n"));
        }
        let dir = format!("lib/site-packages/{name}-{version}.dist-info");
        let (dist, warnings) = Distribution::parse(&dir, metadata.as_bytes(), None, None).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        dist
    }

    fn report(before: &[Distribution], after: &[Distribution]) -> ConflictReport {
        conflicts_introduced(before, after, &markers("3.11"), false).expect("a conflict")
    }

    #[test]
    fn markers_decide_which_requirements_apply_and_extras_stay_off() {
        let installed = [
            dist("blastbase", "1.0.0", &[]),
            dist(
                "blastextra",
                "1.0.0",
                &[
                    r#"blastbase>=1.0; python_version >= "3.8""#,
                    r#"blastmissing>=1; python_version < "3""#,
                    r#"blastpin; extra == "pin""#,
                ],
            ),
        ];
        assert_eq!(unsatisfied(&installed, &markers("3.11")), []);
        // On a Python 2 the second requirement applies, and nothing provides it.
        let broken = unsatisfied(&installed, &markers("2.7"));
        let shown: Vec<String> = broken.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                r#"blastextra 1.0.0 requires blastmissing>=1; python_version < "3", but blastmissing is not installed"#
            ]
        );
    }

    #[test]
    fn a_version_mismatch_and_a_missing_distribution_are_reported() {
        let installed = [
            dist("blastbase", "2.0.0", &[]),
            dist("blastpin", "1.0.0", &["blastbase<2", "Blast_Missing>=1"]),
        ];
        let broken = unsatisfied(&installed, &markers("3.11"));
        assert_eq!(
            broken,
            [
                Unsatisfied {
                    package: "blastpin".into(),
                    version: Version::new([1, 0, 0]),
                    requirement: "blastbase<2".into(),
                    requires: "blastbase".into(),
                    installed: Some(Version::new([2, 0, 0])),
                },
                Unsatisfied {
                    package: "blastpin".into(),
                    version: Version::new([1, 0, 0]),
                    requirement: "Blast_Missing>=1".into(),
                    requires: "blast-missing".into(),
                    installed: None,
                },
            ]
        );
        assert_eq!(
            broken[0].to_string(),
            "blastpin 1.0.0 requires blastbase<2, but blastbase 2.0.0 is installed"
        );
        assert_eq!(
            broken[1].to_string(),
            "blastpin 1.0.0 requires Blast_Missing>=1, but blast-missing is not installed"
        );
        let explanation = explain(&broken, &installed, &[], &markers("3.11"));
        assert!(
            explanation.contains("there is no version of blast-missing in >=1"),
            "{explanation}"
        );
        assert!(
            explanation.contains("there is no version of blastbase in <2"),
            "{explanation}"
        );
    }

    #[test]
    fn a_change_is_explained_by_what_it_broke_not_by_what_was_broken_before() {
        // blastpin's requirement was broken before; removing blastbase breaks blastconflict's (found
        // by exploratory testing: the explanation told of blastpin's only).
        let pin = dist("blastpin", "1.0.0", &["blastbase<2"]);
        let conflict = dist("blastconflict", "1.0.0", &["blastbase>=2"]);
        let before = [
            dist("blastbase", "2.0.0", &[]),
            pin.clone(),
            conflict.clone(),
        ];
        let report = report(&before, &[pin, conflict]);
        assert_eq!(
            report.to_string(),
            "blastconflict 1.0.0 requires blastbase>=2, but blastbase is not installed\n\
             blastbase 2.0.0, which this change removes, meets every requirement: keep it, or remove \
             what requires it as well"
        );
    }

    #[test]
    fn specifiers_follow_pep_440() {
        let cases = [
            ("~=1.4", "1.4", true),
            ("~=1.4", "1.9.2", true),
            ("~=1.4", "2.0", false),
            ("~=1.4.2", "1.4.5", true),
            ("~=1.4.2", "1.5.0", false),
            ("==1.*", "1.9", true),
            ("==1.*", "2.0", false),
            ("!=1.*", "1.2", false),
            ("!=1.*", "2.0", true),
            ("==1.0", "1.0.0", true),
            ("!=1.0", "1.0.0", false),
            ("<2", "1.9", true),
            ("<2", "2.0", false),
            ("<=2", "2.0", true),
            (">2", "2.0", false),
            (">2", "2.1", true),
            (">=2", "2.0", true),
            ("===1.0", "1.0", true),
            ("===1.0", "1.1", false),
            (">=1,<2", "1.5", true),
            (">=1,<2", "2.5", false),
            // Found by exploratory testing: a pre-release of V's release is below a pre-release V.
            ("<2.0rc2", "2.0rc1", true),
            ("<2.0.0rc2", "2.0rc1", true),
            ("<2.0rc2", "2.0rc2", false),
            ("<2.0rc2", "2.0", false),
            ("<2.0rc2", "2.0.dev1", true),
            ("<2.0", "2.0rc1", false),
            ("<2.0", "1.9", true),
        ];
        for (spec, version, expected) in cases {
            let installed = [
                dist("dep", version, &[]),
                dist("app", "1.0", &[&format!("dep{spec}")]),
            ];
            let broken = unsatisfied(&installed, &markers("3.11"));
            assert_eq!(broken.is_empty(), expected, "dep{spec} with dep {version}");
            // pubgrub's range agrees with the specifier.
            let dep = &installed[1].requires[0];
            let version: Version = version.parse().unwrap();
            assert_eq!(
                range(dep).contains(&version),
                expected,
                "dep{spec} as a range"
            );
        }
    }

    #[test]
    fn the_explanation_names_both_requirements_of_a_conflicting_install() {
        let before = [
            dist("blastbase", "1.0.0", &[]),
            dist("blastpin", "1.0.0", &["blastbase<2"]),
        ];
        let after = [
            dist("blastbase", "2.0.0", &[]),
            dist("blastconflict", "1.0.0", &["blastbase>=2"]),
            dist("blastpin", "1.0.0", &["blastbase<2"]),
        ];
        let report = report(&before, &after);
        assert_eq!(report.unsatisfied.len(), 1);
        let text = report.to_string();
        assert!(
            text.starts_with(
                "blastpin 1.0.0 requires blastbase<2, but blastbase 2.0.0 is installed\n"
            ),
            "{text}"
        );
        for part in [
            "blastpin 1.0.0 depends on blastbase <2",
            "blastconflict 1.0.0 depends on blastbase >=2",
        ] {
            assert!(report.explanation.contains(part), "{text}");
        }
        assert!(!report.explanation.contains("environment 0"), "{text}");
    }

    #[test]
    fn only_new_conflicts_count_and_a_repairable_one_says_how() {
        let m = markers("3.11");
        let consistent = [
            dist("blastbase", "1.0.0", &[]),
            dist("blastpin", "1.0.0", &["blastbase<2"]),
        ];
        assert_eq!(conflicts_introduced(&[], &consistent, &m, false), None);
        let upgraded = [
            dist("blastbase", "2.0.0", &[]),
            dist("blastpin", "1.0.0", &["blastbase<2"]),
        ];
        // Broken before already: nothing new.
        assert_eq!(conflicts_introduced(&upgraded, &upgraded, &m, false), None);
        // Nothing else needs 2.0.0: the version installed before would do.
        let report = report(&consistent, &upgraded);
        assert_eq!(
            report.explanation,
            "blastbase 1.0.0, installed before, meets every requirement: installing it again would repair this"
        );
    }

    #[test]
    fn each_broken_target_gets_its_own_paragraph() {
        let installed = [
            dist("a", "1.0", &["b>=2", "c"]),
            dist("b", "1.0", &[]),
            dist("d", "1.0", &["b<2"]),
        ];
        let m = markers("3.11");
        let broken = unsatisfied(&installed, &m);
        assert_eq!(broken.len(), 2);
        let explanation = explain(&broken, &installed, &[], &m);
        let paragraphs: Vec<&str> = explanation.split("\n\n").collect();
        assert_eq!(paragraphs.len(), 2, "{explanation}");
        assert!(
            paragraphs[0].contains("a 1.0 depends on b >=2"),
            "{explanation}"
        );
        assert!(
            paragraphs[1].contains("there is no available version for c"),
            "{explanation}"
        );
    }

    /// Found by exploratory testing: where pubgrub's ranges read a requirement otherwise than the check
    /// (`===`, `!=` against a local version, a distribution requiring itself), the explanation said the
    /// installed version "meets every requirement" right under the line saying it does not.
    #[test]
    fn what_pubgrub_cannot_explain_gets_no_paragraph_rather_than_a_wrong_one() {
        let installed = [
            dist("loc", "1.0+local", &[]),
            dist("arb", "1.0.0", &[]),
            dist("selfreq", "1.0", &["selfreq>=5"]),
            dist("user", "1.0", &["loc!=1.0", "arb===1.0"]),
        ];
        let m = markers("3.11");
        let broken = unsatisfied(&installed, &m);
        assert_eq!(broken.len(), 3, "{broken:?}");
        let explanation = explain(&broken, &installed, &[], &m);
        assert!(
            !explanation.contains("meets every requirement"),
            "{explanation}"
        );
        assert!(
            !explanation.contains("nothing installed needs"),
            "{explanation}"
        );
    }
}
