//! Relocation: the environment's own absolute path is stored as a placeholder token inside files and
//! symlink targets, and so is its base interpreter's directory where a venv names it (`pyvenv.cfg`, the
//! `bin/python` link); both are rendered back when materialized. One snapshot thus materializes at any
//! path and against any matching interpreter. The interpreter's directory is not abstracted elsewhere:
//! it may be a common one (`/usr/bin`) that other files name for other reasons.

use memchr::memmem;

/// Stands for the environment's absolute path (`/home/me/proj/.venv`).
pub const ENV_PREFIX_TOKEN: &str = "@BLAST_ENV_PREFIX@";
/// Stands for the directory of the base interpreter (`pyvenv.cfg`'s `home`).
pub const PYTHON_BIN_TOKEN: &str = "@BLAST_PYTHON_BIN@";

/// The two concrete paths that the tokens stand for in one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholders {
    pub env_prefix: String,
    pub python_bin: String,
}

impl Placeholders {
    /// Replaces the environment's path by its token, and with `python_bin` the interpreter's
    /// directory by its. A match counts only between path boundaries (`/env` inside `/env2` or `/x/env`
    /// is not the env). Returns `None` when nothing was replaced.
    pub fn abstract_bytes(&self, content: &[u8], python_bin: bool) -> Option<Vec<u8>> {
        // The longer path first, so an env inside the interpreter's tree is not cut short.
        let python = if python_bin {
            self.python_bin.as_bytes()
        } else {
            b""
        };
        let mut pairs = [
            (self.env_prefix.as_bytes(), ENV_PREFIX_TOKEN.as_bytes()),
            (python, PYTHON_BIN_TOKEN.as_bytes()),
        ];
        pairs.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        let mut current: Option<Vec<u8>> = None;
        for (from, to) in pairs {
            if from.is_empty() {
                continue;
            }
            let source = current.as_deref().unwrap_or(content);
            let hits: Vec<usize> = find_all(source, from)
                .into_iter()
                .filter(|&at| {
                    let before = at.checked_sub(1).and_then(|i| source.get(i)).copied();
                    is_boundary(before) && is_boundary(source.get(at + from.len()).copied())
                })
                .collect();
            if !hits.is_empty() {
                current = Some(replace_at(source, &hits, from.len(), to));
            }
        }
        current
    }

    /// Replaces the tokens by this environment's paths.
    pub fn render_bytes(&self, stored: &[u8]) -> Vec<u8> {
        let mut out = stored.to_vec();
        for (token, to) in [
            (ENV_PREFIX_TOKEN.as_bytes(), self.env_prefix.as_bytes()),
            (PYTHON_BIN_TOKEN.as_bytes(), self.python_bin.as_bytes()),
        ] {
            let hits = find_all(&out, token);
            if !hits.is_empty() {
                out = replace_at(&out, &hits, token.len(), to);
            }
        }
        out
    }

    /// For symlink targets: both paths are abstracted.
    pub fn abstract_str(&self, s: &str) -> Option<String> {
        self.abstract_bytes(s.as_bytes(), true)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    pub fn render_str(&self, s: &str) -> String {
        String::from_utf8_lossy(&self.render_bytes(s.as_bytes())).into_owned()
    }
}

/// A path starts or ends next to this byte when the byte cannot continue a file name.
fn is_boundary(next: Option<u8>) -> bool {
    !matches!(next, Some(b) if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn replace_at(source: &[u8], hits: &[usize], len: usize, to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(source.len() + hits.len() * to.len());
    let mut last = 0;
    for &at in hits {
        out.extend_from_slice(&source[last..at]);
        out.extend_from_slice(to);
        last = at + len;
    }
    out.extend_from_slice(&source[last..]);
    out
}

fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    memmem::find_iter(haystack, needle).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ph() -> Placeholders {
        Placeholders {
            env_prefix: "/home/me/env".into(),
            python_bin: "/usr/bin".into(),
        }
    }

    #[test]
    fn abstracts_and_renders_paths_at_boundaries_only() {
        let p = ph();
        let src =
            b"#!/home/me/env/bin/python\nother=/home/me/env2 /x.home/me/env\nhome = /usr/bin\n";
        let stored = p.abstract_bytes(src, true).unwrap();
        assert_eq!(
            stored,
            b"#!@BLAST_ENV_PREFIX@/bin/python\nother=/home/me/env2 /x.home/me/env\nhome = @BLAST_PYTHON_BIN@\n"
        );
        assert_eq!(p.render_bytes(&stored), src);
        let elsewhere = Placeholders {
            env_prefix: "/srv/x".into(),
            python_bin: "/opt/py/bin".into(),
        };
        assert_eq!(
            elsewhere.render_bytes(&stored),
            b"#!/srv/x/bin/python\nother=/home/me/env2 /x.home/me/env\nhome = /opt/py/bin\n"
        );
        assert_eq!(p.abstract_bytes(b"nothing here", true), None);
        // Outside pyvenv.cfg and links the interpreter's directory is left alone.
        assert_eq!(p.abstract_bytes(b"#!/usr/bin/env python3\n", false), None);
    }
}
