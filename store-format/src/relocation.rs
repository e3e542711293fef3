//! Relocation: the environment's own absolute path is stored as a placeholder token inside files and
//! symlink targets, and so is its base interpreter's directory where a venv names it (`pyvenv.cfg`, the
//! `bin/python` link); both are rendered back when materialized. One snapshot thus materializes at any
//! path and against any matching interpreter. The interpreter's directory is not abstracted elsewhere:
//! it may be a common one (`/usr/bin`) that other files name for other reasons.
//!
//! A script's `#!` line cannot name an interpreter whose path holds a space or is long (the kernel
//! splits the line at spaces and cuts it short), so there pip writes a `/bin/sh` preamble that
//! `exec`s the interpreter instead. Rendering does the same for a stored `#!` line naming the
//! environment, and abstraction turns such a preamble back into the `#!` line it renders from: a
//! script is stored alike whatever path it was captured at, and works at any path it is rendered at.

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
        let abstracted = current?;
        // The `#!` line a preamble was rendered from, where it renders back to these very bytes.
        match unwrap_shebang(&abstracted) {
            Some(line) if self.render_bytes(&line) == content => Some(line),
            _ => Some(abstracted),
        }
    }

    /// Replaces the tokens by this environment's paths; a `#!` line naming the environment that the
    /// kernel could not run as it is becomes a `/bin/sh` preamble (see the module's doc).
    pub fn render_bytes(&self, stored: &[u8]) -> Vec<u8> {
        self.preamble(stored)
            .unwrap_or_else(|| self.replace_tokens(stored))
    }

    fn replace_tokens(&self, stored: &[u8]) -> Vec<u8> {
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

    /// `stored` rendered with a `/bin/sh` preamble, where its `#!` line names the environment's
    /// Python and the rendered line would have a space in the interpreter's path or be longer than
    /// [`MAX_SHEBANG`]: pip's rule and its preamble, byte for byte (the path also quoted where it
    /// holds another character sh reads, which pip leaves bare).
    fn preamble(&self, stored: &[u8]) -> Option<Vec<u8>> {
        let line = stored.strip_prefix(b"#!")?;
        if !line.starts_with(ENV_PREFIX_TOKEN.as_bytes()) {
            return None;
        }
        let line_end = memchr::memchr(b'\n', line)?;
        let (line, body) = (&line[..line_end], &line[line_end + 1..]);
        let split = line
            .iter()
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(line.len());
        let executable = self.replace_tokens(&line[..split]);
        let post_interp = self.replace_tokens(&line[split..]);
        // The preamble is Python's and sh's at once: a script of another interpreter (nodeenv's
        // `bin/node`) keeps its line.
        let name = executable.rsplit(|&b| b == b'/').next().unwrap_or_default();
        if !(name.starts_with(b"python") || name.starts_with(b"pypy")) {
            return None;
        }
        let spaced = executable.contains(&b' ');
        if !spaced && executable.len() + post_interp.len() + 3 <= MAX_SHEBANG {
            return None;
        }
        // pip quotes a path with a space; one with another character sh reads (`&`, `;`, `(`) needs
        // the quotes as much.
        let plain = |b: &u8| b.is_ascii_alphanumeric() || b"_./+,:@%-".contains(b);
        let quote: &[u8] = if executable.iter().all(plain) {
            b""
        } else {
            b"\""
        };
        Some(
            [
                PREAMBLE_START,
                quote,
                &executable,
                quote,
                &post_interp,
                PREAMBLE_END,
                &self.replace_tokens(body),
            ]
            .concat(),
        )
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

/// The longest `#!` line, newline included, pip writes as it is on Linux.
const MAX_SHEBANG: usize = 127;
/// pip's `/bin/sh` preamble around the interpreter (quoted where sh would read a character of it)
/// and its arguments: sh runs the second line, Python reads the first three as a string.
const PREAMBLE_START: &[u8] = b"#!/bin/sh\n'''exec' ";
const PREAMBLE_ARGS: &[u8] = b" \"$0\" \"$@\"\n";
const PREAMBLE_END: &[u8] = b" \"$0\" \"$@\"\n' '''\n";

/// The `#!` line that a stored preamble naming the environment's interpreter stands for, followed by
/// the rest of the file, if `stored` starts with one.
fn unwrap_shebang(stored: &[u8]) -> Option<Vec<u8>> {
    let after = stored.strip_prefix(PREAMBLE_START)?;
    let line_end = memchr::memchr(b'\n', after)?;
    let command = after[..=line_end].strip_suffix(PREAMBLE_ARGS)?;
    let body = after[line_end + 1..].strip_prefix(b"' '''\n")?;
    let command = match command.strip_prefix(b"\"") {
        Some(quoted) => {
            let end = memchr::memchr(b'"', quoted)?;
            [&quoted[..end], &quoted[end + 1..]].concat()
        }
        None => command.to_vec(),
    };
    if !command.starts_with(ENV_PREFIX_TOKEN.as_bytes()) {
        return None;
    }
    Some([b"#!", command.as_slice(), b"\n", body].concat())
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

    /// pip's preamble where a `#!` line cannot name the interpreter: rendered where the path needs
    /// it, turned back into the `#!` line it stands for, so either form is stored alike.
    #[test]
    fn shebangs_the_kernel_cannot_run_become_pips_preamble_and_back() {
        let stored = b"#!@BLAST_ENV_PREFIX@/bin/python3.11\nimport sys\n".to_vec();
        let at = |path: &str| Placeholders {
            env_prefix: path.into(),
            python_bin: "/usr/bin".into(),
        };
        let spaced = at("/home/me/my env");
        let rendered = spaced.render_bytes(&stored);
        assert_eq!(
            rendered,
            b"#!/bin/sh\n'''exec' \"/home/me/my env/bin/python3.11\" \"$0\" \"$@\"\n' '''\nimport sys\n"
        );
        assert_eq!(
            spaced.abstract_bytes(&rendered, false),
            Some(stored.clone())
        );

        let long = at(&format!("/{}", "d".repeat(110)));
        let rendered = long.render_bytes(&stored);
        let expected = format!(
            "#!/bin/sh\n'''exec' {}/bin/python3.11 \"$0\" \"$@\"\n' '''\nimport sys\n",
            long.env_prefix
        );
        assert_eq!(rendered, expected.as_bytes());
        assert_eq!(long.abstract_bytes(&rendered, false), Some(stored.clone()));
        // 127 bytes with its newline still fit on the line.
        let fits = at(&format!(
            "/{}",
            "d".repeat(127 - 3 - "/bin/python3.11".len() - 1)
        ));
        let rendered = fits.render_bytes(&stored);
        assert_eq!(rendered.len(), 127 + "import sys\n".len());
        assert!(rendered.starts_with(b"#!/d"));

        // A preamble where none is needed, or another's (uv quotes with '), is kept as it is.
        let plain = at("/home/me/env");
        for script in [
            "#!/bin/sh\n'''exec' \"/home/me/env/bin/python\" \"$0\" \"$@\"\n' '''\nimport sys\n",
            "#!/bin/sh\n'''exec' '/home/me/my env/bin/python' \"$0\" \"$@\"\n' '''\nimport sys\n",
        ] {
            let place = if script.contains("my env") {
                &spaced
            } else {
                &plain
            };
            let stored = place.abstract_bytes(script.as_bytes(), false).unwrap();
            assert!(stored.starts_with(b"#!/bin/sh\n"), "{script}");
            assert_eq!(place.render_bytes(&stored), script.as_bytes());
        }
        // A `#!` line naming another interpreter is no concern of the environment's, nor one naming
        // a program of the environment that is not Python.
        assert_eq!(
            spaced.render_bytes(b"#!/usr/bin/python3\n@BLAST_ENV_PREFIX@\n"),
            b"#!/usr/bin/python3\n/home/me/my env\n"
        );
        assert_eq!(
            spaced.render_bytes(b"#!@BLAST_ENV_PREFIX@/bin/node\n"),
            b"#!/home/me/my env/bin/node\n"
        );
        // A long path with a character sh reads is quoted, and stored back as its `#!` line.
        let ampersand = at(&format!("/data/R&D/{}", "d".repeat(110)));
        let rendered = ampersand.render_bytes(&stored);
        assert!(
            rendered.starts_with(b"#!/bin/sh\n'''exec' \"/data/R&D/"),
            "{}",
            String::from_utf8_lossy(&rendered)
        );
        assert_eq!(
            ampersand.abstract_bytes(&rendered, false),
            Some(stored.clone())
        );
    }
}
