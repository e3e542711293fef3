//! Where the symlinks of a tree lead. An environment's links stay inside it — `lib64 -> lib`,
//! `bin/python3 -> python` — with one exception: the interpreter link, `bin/python ->
//! @BLAST_PYTHON_BIN@/python3.11`, which names a file in the base interpreter's directory.
//!
//! Each link is resolved through the tree the way the kernel would (following the links it passes, `..`
//! going up from where the path has got to), so `a/up -> ..` followed by `../..` is caught, not only a
//! target that starts with too many `..`. Refused: any other absolute target; a placeholder anywhere
//! but at the start; `@BLAST_ENV_PREFIX@` not followed by `/` or the end; `..` above the root; going
//! on through the interpreter link; more than 40 links on one resolution.

use std::collections::VecDeque;

use store_format::{ENV_PREFIX_TOKEN, Node, PYTHON_BIN_TOKEN};

use crate::tree::Tree;

/// Links followed in one resolution before giving up (Linux's own limit).
const MAX_HOPS: usize = 40;

/// The first symlink of `tree` that leads outside the environment: its path, its target and why.
pub(crate) fn escaping_symlink(tree: &Tree) -> Option<(String, String, &'static str)> {
    tree.entries.iter().find_map(|(path, node)| match node {
        Node::Symlink {
            target,
            relocatable,
        } => check(tree, path, target, *relocatable)
            .err()
            .map(|why| (path.clone(), target.clone(), why)),
        _ => None,
    })
}

fn check(tree: &Tree, link: &str, target: &str, relocatable: bool) -> Result<(), &'static str> {
    let parent: Vec<String> = match link.rsplit_once('/') {
        Some((dir, _)) => dir.split('/').map(str::to_owned).collect(),
        None => Vec::new(),
    };
    let Some((mut stack, rest)) = start(parent, target, relocatable)? else {
        return Ok(());
    };
    let mut pending: VecDeque<String> = components(rest);
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        match part.as_str() {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return Err("climbs above the environment's root with `..`");
                }
            }
            _ => {
                stack.push(part);
                let here = stack.join("/");
                let Some(Node::Symlink {
                    target,
                    relocatable,
                }) = tree.entries.get(&here)
                else {
                    continue;
                };
                hops += 1;
                if hops > MAX_HOPS {
                    return Err("passes through more than 40 symlinks (a loop?)");
                }
                stack.pop();
                match start(stack, target, *relocatable)? {
                    Some((next, rest)) => {
                        stack = next;
                        for part in components(rest).into_iter().rev() {
                            pending.push_front(part);
                        }
                    }
                    // The interpreter link: fine as the last step, not as a way through.
                    None if pending.iter().all(|p| p.is_empty() || p == ".") => return Ok(()),
                    None => {
                        return Err("goes on through the interpreter link, out of the environment");
                    }
                }
            }
        }
    }
    Ok(())
}

/// Where resolving `target` (a link in directory `dir`) starts: the directory stack and the rest of
/// the target; `None` for the interpreter link, which ends outside the environment by design.
fn start(
    dir: Vec<String>,
    target: &str,
    relocatable: bool,
) -> Result<Option<(Vec<String>, &str)>, &'static str> {
    if relocatable {
        if let Some(rest) = target.strip_prefix(PYTHON_BIN_TOKEN) {
            let name = rest.strip_prefix('/').unwrap_or_default();
            let plain = !name.is_empty() && name != "." && name != ".." && !name.contains('/');
            return if plain && !has_token(name) {
                Ok(None)
            } else {
                Err(
                    "leaves the environment other than for a file of the base interpreter's directory",
                )
            };
        }
        if let Some(rest) = target.strip_prefix(ENV_PREFIX_TOKEN)
            && (rest.is_empty() || rest.starts_with('/'))
            && !has_token(rest)
        {
            return Ok(Some((Vec::new(), rest)));
        }
        if has_token(target) {
            return Err("holds a placeholder that does not stand at its start");
        }
    }
    if target.starts_with('/') {
        return Err(
            "is absolute; only the interpreter link (`@BLAST_PYTHON_BIN@/NAME`) may leave the environment",
        );
    }
    Ok(Some((dir, target)))
}

fn has_token(s: &str) -> bool {
    s.contains(ENV_PREFIX_TOKEN) || s.contains(PYTHON_BIN_TOKEN)
}

fn components(s: &str) -> VecDeque<String> {
    s.split('/').map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path, and its symlink target and relocatable flag (`None`: a directory).
    type Entry<'a> = (&'a str, Option<(&'a str, bool)>);

    fn tree(entries: &[Entry<'_>]) -> Tree {
        Tree {
            entries: entries
                .iter()
                .map(|(p, link)| {
                    let node = match link {
                        Some((target, relocatable)) => Node::Symlink {
                            target: (*target).to_owned(),
                            relocatable: *relocatable,
                        },
                        None => Node::Dir,
                    };
                    ((*p).to_owned(), node)
                })
                .collect(),
        }
    }

    #[test]
    fn a_venvs_own_links_pass() {
        let t = tree(&[
            ("bin", None),
            ("bin/python", Some(("@BLAST_PYTHON_BIN@/python3.11", true))),
            ("bin/python3", Some(("python", false))),
            ("bin/python3.11", Some(("python", false))),
            ("lib", None),
            ("lib64", Some(("lib", false))),
            ("lib/x", None),
            ("lib/x/self", Some(("@BLAST_ENV_PREFIX@/lib", true))),
            ("lib/x/up", Some(("../../bin/./python3", false))),
        ]);
        assert_eq!(escaping_symlink(&t), None);
    }

    #[test]
    fn escapes_are_caught_even_through_other_links() {
        let cases: &[&[Entry<'_>]] = &[
            &[("etc", Some(("/etc", false)))],
            &[("a", None), ("a/b", Some(("../../x", false)))],
            &[("p", Some(("@BLAST_PYTHON_BIN@/../../etc/passwd", true)))],
            &[("p", Some(("@BLAST_PYTHON_BIN@/sub/python", true)))],
            &[("p", Some(("x@BLAST_ENV_PREFIX@", true)))],
            &[("p", Some(("@BLAST_ENV_PREFIX@/../..", true)))],
            &[("p", Some(("@BLAST_ENV_PREFIX@x", true)))],
            // `a/b/up` is `a`, so `a/b/up/../..` is above the root although it looks balanced.
            &[
                ("a", None),
                ("a/b", None),
                ("a/b/up", Some(("..", false))),
                ("a/b/c", Some(("up/../..", false))),
            ],
            &[
                ("bin", None),
                ("bin/python", Some(("@BLAST_PYTHON_BIN@/python3", true))),
                ("x", Some(("bin/python/../../lib", false))),
            ],
            &[("a", Some(("b", false))), ("b", Some(("a", false)))],
        ];
        for entries in cases {
            assert!(escaping_symlink(&tree(entries)).is_some(), "{entries:?}");
        }
    }
}
