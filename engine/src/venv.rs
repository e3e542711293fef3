//! Writes a virtual environment's own files as a layer, without running `python -m venv`: `pyvenv.cfg`,
//! the `bin/python*` links, activate scripts for bash/zsh and fish, an empty `site-packages`, and with
//! `seed` pip unpacked from the interpreter's bundled wheel. Paths of the environment and of the base
//! interpreter are written as placeholders, so the layer is the same for every environment on the same
//! interpreter version, and it materializes at any path.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use store_format::{Change, ENV_PREFIX_TOKEN, Layer, Node, PYTHON_BIN_TOKEN};

use crate::error::{Error, IoContext, Result};
use crate::objects::Staging;
use crate::python::PythonInfo;

/// Collects the entries of a layer and stages their bytes.
struct LayerBuilder<'s, 'a> {
    staging: &'s Staging<'a>,
    changes: BTreeMap<String, Change>,
}

impl LayerBuilder<'_, '_> {
    fn dir(&mut self, path: &str) {
        let mut prefix = String::new();
        for part in path.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            self.changes
                .entry(prefix.clone())
                .or_insert(Change::Put(Node::Dir));
        }
    }

    fn file(&mut self, path: &str, bytes: &[u8], executable: bool) -> Result<()> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        let relocatable = contains_token(bytes);
        let object = self.staging.put_object(bytes, executable)?;
        self.changes.insert(
            path.to_owned(),
            Change::Put(Node::File {
                object,
                size: bytes.len() as u64,
                executable,
                relocatable,
            }),
        );
        Ok(())
    }

    fn symlink(&mut self, path: &str, target: &str) {
        let relocatable = contains_token(target.as_bytes());
        self.changes.insert(
            path.to_owned(),
            Change::Put(Node::Symlink {
                target: target.to_owned(),
                relocatable,
            }),
        );
    }
}

fn contains_token(bytes: &[u8]) -> bool {
    [ENV_PREFIX_TOKEN, PYTHON_BIN_TOKEN]
        .iter()
        .any(|t| memchr::memmem::find(bytes, t.as_bytes()).is_some())
}

/// The files of an empty venv for `python`.
pub fn base_layer(staging: &Staging<'_>, python: &PythonInfo) -> Result<Layer> {
    let mut b = LayerBuilder {
        staging,
        changes: BTreeMap::new(),
    };
    let cfg = format!(
        "home = {PYTHON_BIN_TOKEN}\n\
         implementation = {}\n\
         version_info = {}\n\
         include-system-site-packages = false\n",
        python.tag.implementation, python.tag.version
    );
    b.file("pyvenv.cfg", cfg.as_bytes(), false)?;
    // As `python -m venv` (3.13) and `uv venv` write it: a `git add -A` in the project leaves the
    // environment out (`blast export` writes what to commit instead).
    b.file(".gitignore", b"# Created by blast\n*\n", false)?;
    b.dir("bin");
    b.symlink(
        "bin/python",
        &format!("{PYTHON_BIN_TOKEN}/{}", python.exe_name),
    );
    b.symlink("bin/python3", "python");
    let versioned = format!("python{}", python.tag.minor_version());
    if versioned != "python3" {
        b.symlink(&format!("bin/{versioned}"), "python");
    }
    b.file("bin/activate", ACTIVATE_SH.as_bytes(), false)?;
    b.file("bin/activate.fish", ACTIVATE_FISH.as_bytes(), false)?;
    b.dir("include");
    b.dir(&python.purelib);
    // Like `python -m venv` on 64-bit Linux: `lib64` is `lib`.
    if python.purelib.starts_with("lib/") && python.tag.platform.ends_with("64") {
        b.symlink("lib64", "lib");
    }
    Ok(Layer { changes: b.changes })
}

/// The wheel of pip that the interpreter bundles for `ensurepip`: in its standard library, or, for
/// Debian's and Ubuntu's own Python (`/usr/lib/python3.X`), where they keep it (`python3-pip-whl`).
/// The newest, where there are several.
pub fn bundled_pip_wheel(python: &PythonInfo) -> Result<PathBuf> {
    let mut dirs = vec![Path::new(&python.stdlib).join("ensurepip").join("_bundled")];
    if python.stdlib.starts_with("/usr/lib/python3") {
        dirs.push(PathBuf::from("/usr/share/python-wheels"));
    }
    let pip_wheel = |dir: &Path| {
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|path| {
                let name = path.file_name()?.to_str()?;
                let (version, _) = name.strip_prefix("pip-")?.split_once('-')?;
                let version: pep508_rs::pep440_rs::Version = version.parse().ok()?;
                name.ends_with(".whl").then_some((version, path))
            })
            .max()
            .map(|(_, path)| path)
    };
    dirs.iter().find_map(|dir| pip_wheel(dir)).ok_or_else(|| {
        let looked: Vec<String> = dirs.iter().map(|d| format!("`{}`", d.display())).collect();
        Error::BadPython {
            path: PathBuf::from(&python.executable),
            detail: format!(
                "it has no bundled pip to seed with (no pip wheel in {}); create without --seed and \
                 install pip yourself",
                looked.join(" or ")
            ),
        }
    })
}

/// Unpacks a pure-Python wheel into site-packages as a layer (on top of `base_layer`): its files, console
/// scripts for its entry points, `INSTALLER` and a `RECORD` that lists what was added.
pub fn wheel_layer(staging: &Staging<'_>, python: &PythonInfo, wheel: &Path) -> Result<Layer> {
    let file = std::fs::File::open(wheel).at("opening wheel", wheel)?;
    let bad = |detail: String| Error::Invalid(format!("wheel `{}`: {detail}", wheel.display()));
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
    let mut b = LayerBuilder {
        staging,
        changes: BTreeMap::new(),
    };
    let site = python.purelib.as_str();
    let mut dist_info = None;
    let mut record_lines = Vec::new();
    let mut entry_points = None;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| bad(e.to_string()))?;
        if entry.is_dir() {
            continue;
        }
        let name = entry
            .enclosed_name()
            .and_then(|p| p.to_str().map(str::to_owned))
            .ok_or_else(|| {
                bad(format!(
                    "unsafe member name `{}`",
                    entry.name_raw().escape_ascii()
                ))
            })?;
        if name.contains(".data/") {
            return Err(bad(format!(
                "`{name}`: wheels with .data directories cannot seed"
            )));
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("`{name}`: {e}")))?;
        let executable = entry.unix_mode().is_some_and(|m| m & 0o111 != 0);
        if let Some(top) = name.split('/').next()
            && top.ends_with(".dist-info")
        {
            dist_info = Some(top.to_owned());
            if name.ends_with("/RECORD") {
                record_lines = String::from_utf8_lossy(&bytes)
                    .lines()
                    .filter(|l| !l.is_empty() && !l.starts_with(&format!("{top}/RECORD,")))
                    .map(str::to_owned)
                    .collect();
                continue;
            }
            if name.ends_with("/entry_points.txt") {
                entry_points = Some(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
        b.file(&format!("{site}/{name}"), &bytes, executable)?;
    }
    let dist_info = dist_info.ok_or_else(|| bad("no .dist-info directory".into()))?;
    b.file(&format!("{site}/{dist_info}/INSTALLER"), b"blast\n", false)?;
    record_lines.push(format!("{dist_info}/INSTALLER,,"));
    let up = "../".repeat(site.split('/').count());
    for (script, target) in console_scripts(
        entry_points.as_deref().unwrap_or_default(),
        &python.tag.version,
    ) {
        let (module, func) = target
            .split_once(':')
            .ok_or_else(|| bad(format!("entry point `{script} = {target}` has no `:`")))?;
        let launcher = format!(
            "#!{ENV_PREFIX_TOKEN}/bin/python\n\
             # -*- coding: utf-8 -*-\n\
             import re\n\
             import sys\n\
             from {module} import {func}\n\
             if __name__ == \"__main__\":\n    \
             sys.argv[0] = re.sub(r\"(-script\\.pyw|\\.exe)?$\", \"\", sys.argv[0])\n    \
             sys.exit({func}())\n"
        );
        b.file(&format!("bin/{script}"), launcher.as_bytes(), true)?;
        record_lines.push(format!("{up}bin/{script},,"));
    }
    record_lines.push(format!("{dist_info}/RECORD,,"));
    let record = record_lines.join("\n") + "\n";
    b.file(
        &format!("{site}/{dist_info}/RECORD"),
        record.as_bytes(),
        false,
    )?;
    // The base layer owns the directories above site-packages.
    b.changes
        .retain(|path, _| path.len() > site.len() || !site.starts_with(path.as_str()));
    Ok(Layer { changes: b.changes })
}

/// `[console_scripts]` of an entry_points.txt; names with `X.Y` in them are versioned for this Python.
/// pip's own scripts are what pip installs for itself whatever its wheel lists (`pip3.12` built in,
/// or none, as pip 24 has): `pip`, `pip3` and `pip3.Y` of this Python.
fn console_scripts(text: &str, version: &str) -> Vec<(String, String)> {
    let mut in_section = false;
    let mut out = Vec::new();
    let mut parts = version.split('.');
    let (major, minor) = (parts.next().unwrap_or("3"), parts.next().unwrap_or("0"));
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == "[console_scripts]";
            continue;
        }
        if !in_section || line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((name, target)) = line.split_once('=') {
            let name = name.trim().replace("X.Y", &format!("{major}.{minor}"));
            out.push((name, target.trim().to_owned()));
        }
    }
    let is_pips = |name: &str| {
        name.strip_prefix("pip").is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .split('.')
                    .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
    };
    let Some(pip) = out
        .iter()
        .find(|(name, _)| name == "pip")
        .map(|(_, target)| target.clone())
    else {
        return out;
    };
    out.retain(|(name, _)| !is_pips(name));
    let pips = [
        "pip".to_owned(),
        format!("pip{major}"),
        format!("pip{major}.{minor}"),
    ];
    pips.into_iter()
        .map(|name| (name, pip.clone()))
        .chain(out)
        .collect()
}

const ACTIVATE_SH: &str = r#"# Use with `source bin/activate` from bash or zsh; it cannot be run directly.
# Written by blast. The environment's name in the prompt is its directory's name.

deactivate () {
    if [ -n "${_OLD_VIRTUAL_PATH:-}" ]; then
        PATH="${_OLD_VIRTUAL_PATH}"
        export PATH
        unset _OLD_VIRTUAL_PATH
    fi
    if [ -n "${_OLD_VIRTUAL_PYTHONHOME:-}" ]; then
        PYTHONHOME="${_OLD_VIRTUAL_PYTHONHOME}"
        export PYTHONHOME
        unset _OLD_VIRTUAL_PYTHONHOME
    fi
    if [ -n "${_OLD_VIRTUAL_PS1+set}" ]; then
        PS1="${_OLD_VIRTUAL_PS1}"
        export PS1
        unset _OLD_VIRTUAL_PS1
    fi
    unset VIRTUAL_ENV VIRTUAL_ENV_PROMPT
    hash -r 2>/dev/null
    if [ "${1:-}" != "nondestructive" ]; then
        unset -f deactivate
    fi
}

deactivate nondestructive

VIRTUAL_ENV='@BLAST_ENV_PREFIX@'
export VIRTUAL_ENV
VIRTUAL_ENV_PROMPT="${VIRTUAL_ENV##*/}"
export VIRTUAL_ENV_PROMPT

_OLD_VIRTUAL_PATH="$PATH"
PATH="$VIRTUAL_ENV/bin:$PATH"
export PATH

if [ -n "${PYTHONHOME:-}" ]; then
    _OLD_VIRTUAL_PYTHONHOME="$PYTHONHOME"
    unset PYTHONHOME
fi

if [ -z "${VIRTUAL_ENV_DISABLE_PROMPT:-}" ]; then
    _OLD_VIRTUAL_PS1="${PS1:-}"
    PS1="(${VIRTUAL_ENV_PROMPT}) ${PS1:-}"
    export PS1
fi

hash -r 2>/dev/null
"#;

const ACTIVATE_FISH: &str = r#"# Use with `source bin/activate.fish` from fish; it cannot be run directly.
# Written by blast. The environment's name in the prompt is its directory's name.

function deactivate -d "Leave the virtual environment"
    if set -q _OLD_VIRTUAL_PATH
        set -gx PATH $_OLD_VIRTUAL_PATH
        set -e _OLD_VIRTUAL_PATH
    end
    if set -q _OLD_VIRTUAL_PYTHONHOME
        set -gx PYTHONHOME $_OLD_VIRTUAL_PYTHONHOME
        set -e _OLD_VIRTUAL_PYTHONHOME
    end
    if set -q _OLD_FISH_PROMPT_OVERRIDE
        functions -e fish_prompt
        if functions -q _old_fish_prompt
            functions -c _old_fish_prompt fish_prompt
            functions -e _old_fish_prompt
        end
        set -e _OLD_FISH_PROMPT_OVERRIDE
    end
    set -e VIRTUAL_ENV
    set -e VIRTUAL_ENV_PROMPT
    if test "$argv[1]" != "nondestructive"
        functions -e deactivate
    end
end

deactivate nondestructive

set -gx VIRTUAL_ENV '@BLAST_ENV_PREFIX@'
set -gx VIRTUAL_ENV_PROMPT (basename "$VIRTUAL_ENV")
set -gx _OLD_VIRTUAL_PATH $PATH
set -gx PATH "$VIRTUAL_ENV/bin" $PATH

if set -q PYTHONHOME
    set -gx _OLD_VIRTUAL_PYTHONHOME $PYTHONHOME
    set -e PYTHONHOME
end

if test -z "$VIRTUAL_ENV_DISABLE_PROMPT"
    functions -c fish_prompt _old_fish_prompt
    function fish_prompt
        set -l old_status $status
        printf "(%s) " $VIRTUAL_ENV_PROMPT
        echo "exit $old_status" | .
        _old_fish_prompt
    end
    set -gx _OLD_FISH_PROMPT_OVERRIDE "$VIRTUAL_ENV"
end
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_scripts_versions_names_like_pip() {
        let text = "[console_scripts]\npip = pip._internal.cli.main:main\npip3.12 = pip._internal.cli.main:main\ntoolX.Y = t:main\n[gui_scripts]\nx = y:z\n";
        let scripts = console_scripts(text, "3.11.7");
        let names: Vec<_> = scripts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["pip", "pip3", "pip3.11", "tool3.11"]);
        // pip 24's wheel lists no versioned script; pip installs one all the same.
        let text = "[console_scripts]\npip = pip._internal.cli.main:main\npip3 = pip._internal.cli.main:main\n";
        let scripts = console_scripts(text, "3.13.0");
        let names: Vec<_> = scripts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["pip", "pip3", "pip3.13"]);
        assert!(
            scripts
                .iter()
                .all(|(_, t)| t == "pip._internal.cli.main:main")
        );
    }
}
