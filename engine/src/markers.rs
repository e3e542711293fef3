//! The PEP 508 marker environment of an interpreter (`python_version`, `sys_platform`, …): what the
//! `; marker` of a requirement is evaluated against.
//!
//! Only the interpreter knows these values, and asking it costs tens of milliseconds, so they are asked
//! once and cached in the index, keyed by the real interpreter's path and mtime: an interpreter
//! upgraded in place gets a new key and is asked again.

use std::path::Path;

use pep508_rs::{MarkerEnvironment, MarkerEnvironmentBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::index::{Batch, Index};
use crate::python::{PythonInfo, mtime_ns, run_probe};

/// The marker values as the interpreter reported them, in the field order of PEP 508's table. Kept as
/// plain strings (the index record) and parsed into a [`MarkerEnvironment`] on use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerValues {
    pub implementation_name: String,
    pub implementation_version: String,
    pub os_name: String,
    pub platform_machine: String,
    pub platform_python_implementation: String,
    pub platform_release: String,
    pub platform_system: String,
    pub platform_version: String,
    pub python_full_version: String,
    pub python_version: String,
    pub sys_platform: String,
}

impl MarkerValues {
    pub fn to_environment(
        &self,
    ) -> Result<MarkerEnvironment, pep508_rs::pep440_rs::VersionParseError> {
        MarkerEnvironment::try_from(MarkerEnvironmentBuilder {
            implementation_name: &self.implementation_name,
            implementation_version: &self.implementation_version,
            os_name: &self.os_name,
            platform_machine: &self.platform_machine,
            platform_python_implementation: &self.platform_python_implementation,
            platform_release: &self.platform_release,
            platform_system: &self.platform_system,
            platform_version: &self.platform_version,
            python_full_version: &self.python_full_version,
            python_version: &self.python_version,
            sys_platform: &self.sys_platform,
        })
    }
}

/// PEP 508's reference `default_environment()`. A development build reports `3.13.0+`, which is no
/// PEP 440 version: the `+` is dropped, as packaging tools do.
const PROBE: &str = r#"
import json, os, platform, sys
def version(info):
    v = "%d.%d.%d" % (info.major, info.minor, info.micro)
    if info.releaselevel != "final":
        v += info.releaselevel[0] + str(info.serial)
    return v
print(json.dumps({
    "implementation_name": sys.implementation.name,
    "implementation_version": version(sys.implementation.version),
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_python_implementation": platform.python_implementation(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version().rstrip("+"),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}))
"#;

/// The marker environment of `python`'s interpreter, from the index when it was asked before.
pub fn marker_environment(index: &Index, python: &PythonInfo) -> Result<MarkerEnvironment> {
    let exe = Path::new(&python.executable);
    let bad = |detail: String| Error::BadPython {
        path: exe.to_owned(),
        detail,
    };
    let key = cache_key(python)?;
    let values = match index.markers(&key)? {
        Some(values) => values,
        None => {
            let values: MarkerValues = run_probe(exe, PROBE)?;
            let mut batch = Batch::default();
            batch.put_markers(&key, &values);
            index.write(batch)?;
            values
        }
    };
    values
        .to_environment()
        .map_err(|e| bad(format!("its marker values are not PEP 440 versions: {e}")))
}

/// The hex BLAKE3 of `<real interpreter path>|<its mtime in ns>`.
fn cache_key(python: &PythonInfo) -> Result<String> {
    let exe = Path::new(&python.executable);
    let mtime = mtime_ns(exe).ok_or_else(|| python.gone())?;
    Ok(
        blake3::hash(format!("{}|{mtime}", python.executable).as_bytes())
            .to_hex()
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_into_an_environment() {
        let values = MarkerValues {
            implementation_name: "cpython".into(),
            implementation_version: "3.11.7".into(),
            os_name: "posix".into(),
            platform_machine: "x86_64".into(),
            platform_python_implementation: "CPython".into(),
            platform_release: "6.1.0".into(),
            platform_system: "Linux".into(),
            platform_version: "#1 SMP".into(),
            python_full_version: "3.11.7".into(),
            python_version: "3.11".into(),
            sys_platform: "linux".into(),
        };
        let env = values.to_environment().unwrap();
        assert_eq!(env.python_version().string, "3.11");
        let bad = MarkerValues {
            python_full_version: "3.11.x".into(),
            ..values
        };
        assert!(bad.to_environment().is_err());
    }

    #[test]
    fn asks_the_interpreter_once_then_reads_the_index() {
        let home = tempfile::tempdir().unwrap();
        let store = crate::Store::open(home.path()).unwrap();
        let python = crate::python::find(store.index(), None).unwrap();
        let asked = marker_environment(store.index(), &python).unwrap();
        assert_eq!(
            asked.python_version().string,
            python.tag.minor_version(),
            "{python:?}"
        );
        assert_eq!(asked.sys_platform(), std::env::consts::OS);
        // A cached record is used as it is: changing it shows no interpreter was asked again.
        let key = cache_key(&python).unwrap();
        let mut values = store.index().markers(&key).unwrap().expect("cached");
        values.sys_platform = "cached".into();
        let mut batch = Batch::default();
        batch.put_markers(&key, &values);
        store.index().write(batch).unwrap();
        let again = marker_environment(store.index(), &python).unwrap();
        assert_eq!(again.sys_platform(), "cached");
    }
}
