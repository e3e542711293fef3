//! A snapshot: the ordered layers of an environment plus what it needs from the machine (its Python) and
//! the package set derived from its `*.dist-info`. Messages and times live in the history, not here, so the
//! same content has the same id anywhere.

use crate::codec::{FormatError, Reader, Writer};
use crate::{FORMAT_VERSION, LayerId, SnapshotId};

const MAGIC: &[u8; 8] = b"BLASTSNP";

/// The interpreter a snapshot was built for; a target machine must offer a matching one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PythonTag {
    /// `sys.implementation.name`, e.g. `cpython`.
    pub implementation: String,
    /// `platform.python_version()`, e.g. `3.11.7`.
    pub version: String,
    /// `sysconfig.get_config_var("SOABI")`, e.g. `cpython-311-x86_64-linux-gnu`; empty when unknown.
    pub soabi: String,
    /// `sysconfig.get_platform()`, e.g. `linux-x86_64`.
    pub platform: String,
}

impl PythonTag {
    /// `3.11` from `3.11.7`: what must match for a venv to work with another interpreter.
    pub fn minor_version(&self) -> &str {
        match self.version.match_indices('.').nth(1) {
            Some((i, _)) => &self.version[..i],
            None => &self.version,
        }
    }
}

/// One installed distribution, as its `METADATA` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Package {
    /// PEP 503 normalized name (lowercase, runs of `-_.` as `-`).
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub python: PythonTag,
    /// Bottom first.
    pub layers: Vec<LayerId>,
    /// Sorted by name, unique names.
    pub packages: Vec<Package>,
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(MAGIC, FORMAT_VERSION);
        w.str(&self.python.implementation);
        w.str(&self.python.version);
        w.str(&self.python.soabi);
        w.str(&self.python.platform);
        w.count(self.layers.len());
        for layer in &self.layers {
            w.bytes32(layer.as_bytes());
        }
        w.count(self.packages.len());
        for p in &self.packages {
            w.str(&p.name);
            w.str(&p.version);
        }
        w.0
    }

    pub fn id(&self) -> SnapshotId {
        SnapshotId::of(&self.encode())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::open(bytes, MAGIC, "snapshot", FORMAT_VERSION)?;
        let python = PythonTag {
            implementation: r.str()?.to_owned(),
            version: r.str()?.to_owned(),
            soabi: r.str()?.to_owned(),
            platform: r.str()?.to_owned(),
        };
        let n = r.count(32)?;
        let mut layers = Vec::with_capacity(n);
        for _ in 0..n {
            layers.push(LayerId::from_bytes(r.bytes32()?));
        }
        let n = r.count(8)?;
        let mut packages: Vec<Package> = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.str()?.to_owned();
            let version = r.str()?.to_owned();
            if name.is_empty() || version.is_empty() {
                return Err(r.invalid("package with an empty name or version"));
            }
            if packages.last().is_some_and(|p| p.name >= name) {
                return Err(r.invalid(format!("package `{name}` is out of order or repeated")));
            }
            packages.push(Package { name, version });
        }
        r.finish()?;
        Ok(Snapshot {
            python,
            layers,
            packages,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Snapshot {
        Snapshot {
            python: PythonTag {
                implementation: "cpython".into(),
                version: "3.11.7".into(),
                soabi: "cpython-311-x86_64-linux-gnu".into(),
                platform: "linux-x86_64".into(),
            },
            layers: vec![LayerId::of(b"a"), LayerId::of(b"b")],
            packages: vec![
                Package {
                    name: "idna".into(),
                    version: "3.7".into(),
                },
                Package {
                    name: "rich".into(),
                    version: "13.7.1".into(),
                },
            ],
        }
    }

    #[test]
    fn round_trips_canonically() {
        let s = sample();
        let bytes = s.encode();
        assert_eq!(Snapshot::decode(&bytes).unwrap(), s);
        for cut in 0..bytes.len() {
            assert!(Snapshot::decode(&bytes[..cut]).is_err());
        }
        assert_eq!(s.python.minor_version(), "3.11");
    }

    #[test]
    fn rejects_unsorted_packages() {
        let mut s = sample();
        s.packages.reverse();
        assert!(Snapshot::decode(&s.encode()).is_err());
    }
}
