//! The tree model: the flat, sorted view of an environment that a stack of layers produces, and the
//! differences between two trees (as a layer for capture, or as path changes for display and apply).

use std::collections::BTreeMap;
use std::ops::Bound;

use store_format::{Change, Layer, LayerId, Node};

use crate::error::{Error, Result};
use crate::objects::ObjectStore;

/// Every path of an environment with what is there. Sorted bytewise, so a parent precedes its children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    pub entries: BTreeMap<String, Node>,
}

/// One path that differs between two trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathChange<'a> {
    Added(&'a str, &'a Node),
    Removed(&'a str, &'a Node),
    Modified(&'a str, &'a Node, &'a Node),
}

impl PathChange<'_> {
    pub fn path(&self) -> &str {
        match self {
            PathChange::Added(p, _) | PathChange::Removed(p, _) | PathChange::Modified(p, _, _) => {
                p
            }
        }
    }
}

impl Tree {
    /// Flattens a snapshot's layers, bottom first.
    pub fn from_layers(store: &ObjectStore, layers: &[LayerId]) -> Result<Tree> {
        let invalid = |id: &LayerId, detail: String| {
            Error::Invalid(format!(
                "layer {} does not apply to the layers below it: {detail}",
                id.short()
            ))
        };
        let mut tree = Tree::default();
        for (i, id) in layers.iter().enumerate() {
            let layer = store.layer(id)?;
            if i == 0 {
                // The bottom layer is most of an environment: taken over whole, checked in one pass.
                tree = Tree::from_bottom_layer(layer).map_err(|detail| invalid(id, detail))?;
            } else {
                tree.apply(&layer).map_err(|detail| invalid(id, detail))?;
            }
        }
        Ok(tree)
    }

    /// The tree of a layer applied to nothing: its puts (an opaque directory is a directory, a
    /// whiteout hides nothing), every entry with a directory as parent.
    fn from_bottom_layer(layer: Layer) -> Result<Tree, String> {
        let tree = Tree {
            entries: layer
                .changes
                .into_iter()
                .filter_map(|(path, change)| match change {
                    Change::Put(node) => Some((path, node)),
                    Change::Opaque => Some((path, Node::Dir)),
                    Change::Whiteout => None,
                })
                .collect(),
        };
        let dirs: rustc_hash::FxHashSet<&str> = tree
            .entries
            .iter()
            .filter(|(_, node)| **node == Node::Dir)
            .map(|(path, _)| path.as_str())
            .collect();
        for path in tree.entries.keys() {
            if let Some((parent, _)) = path.rsplit_once('/')
                && !dirs.contains(parent)
            {
                return Err(format!("`{path}` has no parent directory `{parent}`"));
            }
        }
        Ok(tree)
    }

    /// Applies a layer with OCI semantics: whiteouts and opaque directories act on the layers below,
    /// a non-directory replaces whatever was below it. Every entry must end with a directory as parent.
    pub fn apply(&mut self, layer: &Layer) -> Result<(), String> {
        for (path, change) in &layer.changes {
            // Only a directory has anything below it (a valid tree has no orphans).
            let was_dir = self.entries.get(path) == Some(&Node::Dir);
            match change {
                Change::Whiteout => {
                    self.entries.remove(path);
                    if was_dir {
                        self.remove_below(path);
                    }
                }
                Change::Opaque => {
                    if was_dir {
                        self.remove_below(path);
                    }
                    self.entries.insert(path.clone(), Node::Dir);
                }
                Change::Put(node) => {
                    if was_dir && *node != Node::Dir {
                        self.remove_below(path);
                    }
                    self.entries.insert(path.clone(), node.clone());
                }
            }
        }
        let dirs: rustc_hash::FxHashSet<&str> = self
            .entries
            .iter()
            .filter(|(_, node)| **node == Node::Dir)
            .map(|(path, _)| path.as_str())
            .collect();
        for (path, change) in &layer.changes {
            if matches!(change, Change::Whiteout) {
                continue;
            }
            if let Some((parent, _)) = path.rsplit_once('/')
                && !dirs.contains(parent)
            {
                return Err(format!("`{path}` has no parent directory `{parent}`"));
            }
        }
        Ok(())
    }

    /// Removes everything strictly below `dir`.
    pub(crate) fn remove_below(&mut self, dir: &str) {
        let below: Vec<String> = self.descendants(dir).map(|(p, _)| p.clone()).collect();
        for p in below {
            self.entries.remove(&p);
        }
    }

    /// Entries strictly below `dir` (the keys in `dir/` .. `dir0`, since `0` follows `/`).
    pub fn descendants<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a String, &'a Node)> {
        let lo = format!("{dir}/");
        let hi = format!("{dir}0");
        self.entries
            .range::<String, _>((Bound::Included(lo), Bound::Excluded(hi)))
    }

    /// Paths that differ, in path order.
    pub fn changes_to<'a>(&'a self, newer: &'a Tree) -> Vec<PathChange<'a>> {
        let mut out = Vec::new();
        let mut old = self.entries.iter().peekable();
        let mut new = newer.entries.iter().peekable();
        loop {
            match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some((p, n)), None) => {
                    out.push(PathChange::Removed(p, n));
                    old.next();
                }
                (None, Some((p, n))) => {
                    out.push(PathChange::Added(p, n));
                    new.next();
                }
                (Some((po, no)), Some((pn, nn))) => match po.as_bytes().cmp(pn.as_bytes()) {
                    std::cmp::Ordering::Less => {
                        out.push(PathChange::Removed(po, no));
                        old.next();
                    }
                    std::cmp::Ordering::Greater => {
                        out.push(PathChange::Added(pn, nn));
                        new.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if no != nn {
                            out.push(PathChange::Modified(po, no, nn));
                        }
                        old.next();
                        new.next();
                    }
                },
            }
        }
        out
    }

    /// The layer that turns `self` into `newer`: puts for new and changed paths, one whiteout for the
    /// top-most removed path of each removed subtree, nothing for what a new file hides.
    pub fn layer_to(&self, newer: &Tree) -> Layer {
        let mut layer = Layer::default();
        for change in self.changes_to(newer) {
            match change {
                PathChange::Added(path, node) | PathChange::Modified(path, _, node) => {
                    layer
                        .changes
                        .insert(path.to_owned(), Change::Put(node.clone()));
                }
                PathChange::Removed(path, _) => {
                    if !removed_with_parent(self, newer, path) {
                        layer.changes.insert(path.to_owned(), Change::Whiteout);
                    }
                }
            }
        }
        layer
    }

    /// Sum of file sizes.
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|n| match n {
                Node::File { size, .. } => *size,
                _ => 0,
            })
            .sum()
    }

    pub fn file_count(&self) -> usize {
        self.entries
            .values()
            .filter(|n| matches!(n, Node::File { .. }))
            .count()
    }
}

/// True when an ancestor of `path` is gone from `newer` or is no longer a directory there: the ancestor's
/// own change already removes `path`.
fn removed_with_parent(old: &Tree, newer: &Tree, path: &str) -> bool {
    let mut rest = path;
    while let Some((parent, _)) = rest.rsplit_once('/') {
        if old.entries.get(parent) == Some(&Node::Dir)
            && newer.entries.get(parent) != Some(&Node::Dir)
        {
            return true;
        }
        rest = parent;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use store_format::ObjectId;

    fn file(content: &[u8]) -> Node {
        Node::File {
            object: ObjectId::of(content),
            size: content.len() as u64,
            executable: false,
            relocatable: false,
        }
    }

    fn tree(entries: &[(&str, Node)]) -> Tree {
        Tree {
            entries: entries
                .iter()
                .map(|(p, n)| (p.to_string(), n.clone()))
                .collect(),
        }
    }

    #[test]
    fn layer_to_then_apply_reproduces_the_newer_tree() {
        let old = tree(&[
            ("a", Node::Dir),
            ("a/x.py", file(b"1")),
            ("a/sub", Node::Dir),
            ("a/sub/y.py", file(b"2")),
            ("b", Node::Dir),
            ("b/z", file(b"3")),
            ("c", Node::Dir),
            ("c/d", file(b"4")),
        ]);
        let new = tree(&[
            ("a", Node::Dir),
            ("a/x.py", file(b"changed")),
            ("b", file(b"now a file")),
            ("e", Node::Dir),
        ]);
        let layer = old.layer_to(&new);
        // One whiteout per removed subtree; nothing for what `b` (a file now) hides.
        assert_eq!(layer.changes.get("a/sub"), Some(&Change::Whiteout));
        assert!(!layer.changes.contains_key("a/sub/y.py"));
        assert!(!layer.changes.contains_key("b/z"));
        assert_eq!(layer.changes.get("c"), Some(&Change::Whiteout));
        let mut applied = old.clone();
        applied.apply(&layer).unwrap();
        assert_eq!(applied, new);
    }

    #[test]
    fn opaque_hides_lower_children_and_orphans_are_rejected() {
        let mut t = tree(&[("a", Node::Dir), ("a/old", file(b"o"))]);
        let mut layer = Layer::default();
        layer.changes.insert("a".into(), Change::Opaque);
        layer
            .changes
            .insert("a/new".into(), Change::Put(file(b"n")));
        t.apply(&layer).unwrap();
        assert_eq!(t, tree(&[("a", Node::Dir), ("a/new", file(b"n"))]));

        let mut orphan = Layer::default();
        orphan
            .changes
            .insert("missing/x".into(), Change::Put(file(b"x")));
        assert!(t.apply(&orphan).is_err());
    }

    #[test]
    fn descendants_do_not_include_siblings_with_common_prefix() {
        let t = tree(&[
            ("a", Node::Dir),
            ("a-b", Node::Dir),
            ("a/c", file(b"")),
            ("a0", Node::Dir),
        ]);
        let below: Vec<_> = t.descendants("a").map(|(p, _)| p.as_str()).collect();
        assert_eq!(below, ["a/c"]);
    }
}
