//! The tree model: the flat, sorted view of an environment that a stack of layers produces, and the
//! differences between two trees (as a layer for capture, or as path changes for display and apply).

use std::collections::BTreeMap;
use std::ops::Bound;

use rustc_hash::FxHashSet;

use store_format::{Change, Layer, LayerId, Node};

use crate::error::{Error, Result};
use crate::objects::ObjectStore;

/// The empty file uv creates at an environment's root to lock it while it runs (`uv pip install` by
/// hand, in a session): not content. Capture leaves it out, and so do trees (snapshots taken before
/// that rule may hold one), so the directory and its snapshot agree whether it is there or not.
pub const UV_LOCK_FILE: &str = ".lock";

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
        Tree::default().with_layers(store, layers)
    }

    /// This tree with `layers` applied on top, bottom first.
    pub fn with_layers(mut self, store: &ObjectStore, layers: &[LayerId]) -> Result<Tree> {
        for id in layers {
            self = self.with_layer(id, store.layer(id)?)?;
        }
        if matches!(
            self.entries.get(UV_LOCK_FILE),
            Some(Node::File { size: 0, .. })
        ) {
            self.entries.remove(UV_LOCK_FILE);
        }
        Ok(self)
    }

    /// This tree with `layer` (the layer `id`, or part of it) applied on top.
    fn with_layer(mut self, id: &LayerId, layer: Layer) -> Result<Tree> {
        let applied = if self.entries.is_empty() {
            // The bottom layer is most of an environment: taken over whole, checked in one pass.
            Tree::from_bottom_layer(layer).map(|tree| self = tree)
        } else {
            self.apply(&layer)
        };
        applied.map_err(|detail| {
            Error::Invalid(format!(
                "layer {} does not apply to the layers below it: {detail}",
                id.short()
            ))
        })?;
        Ok(self)
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
        // A small layer is applied in place; a large one (an install onto a new environment) is
        // merged with the tree, both being sorted, at the cost of reading the two.
        if layer.changes.len() * 16 < self.entries.len() {
            self.apply_in_place(layer)
        } else {
            self.apply_merged(layer)
        }
    }

    fn apply_in_place(&mut self, layer: &Layer) -> Result<(), String> {
        for (path, change) in &layer.changes {
            // Only a directory has anything below it (a valid tree has no orphans).
            let was_dir = self.entries.get(path) == Some(&Node::Dir);
            if was_dir && drops_content_below(change) {
                self.remove_below(path);
            }
            let node = match change {
                Change::Whiteout => None,
                Change::Opaque => Some(Node::Dir),
                Change::Put(node) => Some(node.clone()),
            };
            match node {
                Some(node) => self.entries.insert(path.clone(), node),
                None => self.entries.remove(path),
            };
        }
        for (path, change) in &layer.changes {
            if *change != Change::Whiteout
                && let Some((parent, _)) = path.rsplit_once('/')
                && self.entries.get(parent) != Some(&Node::Dir)
            {
                return Err(format!("`{path}` has no parent directory `{parent}`"));
            }
        }
        Ok(())
    }

    fn apply_merged(&mut self, layer: &Layer) -> Result<(), String> {
        let below = std::mem::take(&mut self.entries);
        // The content this layer drops: below a whiteout, an opaque directory or a non-directory
        // put over a directory.
        let mut cut = Subtrees::below(
            layer
                .changes
                .iter()
                .filter(|(path, change)| {
                    drops_content_below(change) && below.get(*path) == Some(&Node::Dir)
                })
                .map(|(path, _)| path.as_str()),
        );
        let mut is_cut = |path: &str| cut.contain(path);
        let mut merged: Vec<(String, Node)> = Vec::with_capacity(below.len() + layer.changes.len());
        let mut dirs: FxHashSet<String> = FxHashSet::default();
        let mut old = below.into_iter().peekable();
        for (path, change) in &layer.changes {
            while let Some((p, node)) = old.next_if(|(p, _)| p.as_bytes() < path.as_bytes()) {
                if !is_cut(&p) {
                    if node == Node::Dir {
                        dirs.insert(p.clone());
                    }
                    merged.push((p, node));
                }
            }
            // What was at this path is replaced (or removed) either way.
            old.next_if(|(p, _)| p == path);
            let node = match change {
                Change::Whiteout => continue,
                Change::Opaque => Node::Dir,
                Change::Put(node) => node.clone(),
            };
            if let Some((parent, _)) = path.rsplit_once('/')
                && !dirs.contains(parent)
            {
                return Err(format!("`{path}` has no parent directory `{parent}`"));
            }
            if node == Node::Dir {
                dirs.insert(path.clone());
            }
            merged.push((path.clone(), node));
        }
        merged.extend(old.filter(|(p, _)| !is_cut(p)));
        self.entries = merged.into_iter().collect();
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

    pub fn digest(&self) -> TreeDigest {
        TreeDigest::of(&self.entries)
    }
}

/// A digest of a tree's entries that does not depend on their order: the lane-wise sum of BLAKE3 over
/// each entry. A directory scan adds entries as its threads meet them and gets the digest of the tree
/// it read without sorting it, so an unchanged environment is recognised by comparing two digests
/// instead of flattening its HEAD's layers (see `capture::Stamp`). It recognises accidental change
/// (an edit, a pip run), and is kept only in the local stat cache: it is not a content address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeDigest(pub [u64; 4]);

impl TreeDigest {
    /// The digest of a set of entries.
    pub fn of<'e, P: AsRef<str> + 'e>(
        entries: impl IntoIterator<Item = (&'e P, &'e Node)>,
    ) -> Self {
        let mut digest = TreeDigest::default();
        for (path, node) in entries {
            digest.add(path.as_ref(), node);
        }
        digest
    }

    pub fn add(&mut self, path: &str, node: &Node) {
        self.merge(TreeDigest::of_entry(path, node));
    }

    /// The digest of one entry alone.
    fn of_entry(path: &str, node: &Node) -> TreeDigest {
        let mut h = blake3::Hasher::new();
        h.update(path.as_bytes());
        h.update(&[0]);
        match node {
            Node::File {
                object,
                size,
                executable,
                relocatable,
            } => {
                h.update(&[1, u8::from(*executable), u8::from(*relocatable)]);
                h.update(object.as_bytes());
                h.update(&size.to_le_bytes());
            }
            Node::Symlink {
                target,
                relocatable,
            } => {
                h.update(&[2, u8::from(*relocatable)]);
                h.update(target.as_bytes());
            }
            Node::Dir => {
                h.update(&[3]);
            }
        }
        let hash = h.finalize();
        let mut digest = TreeDigest::default();
        for (lane, bytes) in digest.0.iter_mut().zip(hash.as_bytes().chunks_exact(8)) {
            *lane = u64::from_le_bytes(bytes.try_into().unwrap_or_default());
        }
        digest
    }

    pub fn merge(&mut self, other: TreeDigest) {
        for (lane, word) in self.0.iter_mut().zip(other.0) {
            *lane = lane.wrapping_add(word);
        }
    }

    /// The digest of the tree `changes` lead to, from this one of the tree they start from; the
    /// entries they leave alone are not hashed again.
    pub fn after(mut self, changes: &[PathChange<'_>]) -> TreeDigest {
        for change in changes {
            match *change {
                PathChange::Added(path, new) => self.add(path, new),
                PathChange::Removed(path, old) => self.remove(path, old),
                PathChange::Modified(path, old, new) => {
                    self.remove(path, old);
                    self.add(path, new);
                }
            }
        }
        self
    }

    fn remove(&mut self, path: &str, node: &Node) {
        let entry = TreeDigest::of_entry(path, node);
        for (lane, word) in self.0.iter_mut().zip(entry.0) {
            *lane = lane.wrapping_sub(word);
        }
    }
}

/// The subtrees below a set of paths, as the ranges of keys `dir/`..`dir0` (`0` follows `/`). Ranges
/// are nested or apart, so once sorted, the outer ones are skipped by one forward pointer: paths are
/// asked about in ascending order.
#[derive(Clone)]
struct Subtrees {
    ranges: Vec<(String, String)>,
    next: usize,
}

impl Subtrees {
    fn below<'a>(dirs: impl IntoIterator<Item = &'a str>) -> Subtrees {
        let mut ranges: Vec<(String, String)> = dirs
            .into_iter()
            .map(|dir| (format!("{dir}/"), format!("{dir}0")))
            .collect();
        ranges.sort();
        ranges.dedup_by(|inner, outer| inner.0 < outer.1);
        Subtrees { ranges, next: 0 }
    }

    /// Whether `path` lies strictly below one of the paths; asked in ascending order.
    fn contain(&mut self, path: &str) -> bool {
        while self
            .ranges
            .get(self.next)
            .is_some_and(|(_, end)| path >= end.as_str())
        {
            self.next += 1;
        }
        self.ranges
            .get(self.next)
            .is_some_and(|(start, _)| path >= start.as_str())
    }
}

/// The trees of two snapshots over the same bottom layers, each kept only where the two can differ:
/// at the paths their own layers name, those paths' ancestors (so every entry keeps its parent), and
/// below a path their layers remove or replace with a non-directory, what the shared layers hold
/// there. Outside that region both hold what the shared layers do, so the changes between the two are
/// those between the whole trees. The shared layers are read but no tree of them is built: a rollback
/// of one install keeps a few dozen of the environment's 18k entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub before: Tree,
    pub after: Tree,
}

impl Region {
    /// The region of `shared + before` and `shared + after` (layer ids, bottom first).
    pub fn between(
        store: &ObjectStore,
        shared: &[LayerId],
        before: &[LayerId],
        after: &[LayerId],
    ) -> Result<Region> {
        let load = |ids: &[LayerId]| -> Result<Vec<(LayerId, Layer)>> {
            ids.iter().map(|id| Ok((*id, store.layer(id)?))).collect()
        };
        let (before_layers, after_layers) = (load(before)?, load(after)?);
        let mut named: FxHashSet<&str> = FxHashSet::default();
        let mut replaced = Vec::new();
        for (path, change) in before_layers
            .iter()
            .chain(&after_layers)
            .flat_map(|(_, layer)| &layer.changes)
        {
            if drops_content_below(change) {
                replaced.push(path.as_str());
            }
            // A path met before brought its ancestors along.
            for path in std::iter::once(path.as_str()).chain(ancestors(path)) {
                if !named.insert(path) {
                    break;
                }
            }
        }
        let replaced = Subtrees::below(replaced);
        let mut common = Tree::default();
        for id in shared {
            let mut below = replaced.clone();
            let layer =
                store.layer_where(id, &mut |path| named.contains(path) || below.contain(path))?;
            common = common.with_layer(id, layer)?;
        }
        let stack = |mut tree: Tree, layers: Vec<(LayerId, Layer)>| -> Result<Tree> {
            for (id, layer) in layers {
                tree = tree.with_layer(&id, layer)?;
            }
            Ok(tree)
        };
        Ok(Region {
            before: stack(common.clone(), before_layers)?,
            after: stack(common, after_layers)?,
        })
    }
}

/// Whether a change at a directory's path drops what the layers below had under it: a whiteout, an
/// opaque directory, or a non-directory put in its place.
pub(crate) fn drops_content_below(change: &Change) -> bool {
    match change {
        Change::Whiteout | Change::Opaque => true,
        Change::Put(node) => *node != Node::Dir,
    }
}

/// The path of `name` in the directory at `dir` ("" for the root). Written out rather than through
/// `format!`, whose machinery was 2.5% of a rollback's CPU at one call per entry of a walk.
pub(crate) fn child_path(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        return name.to_owned();
    }
    let mut path = String::with_capacity(dir.len() + 1 + name.len());
    path.push_str(dir);
    path.push('/');
    path.push_str(name);
    path
}

/// How many bottom layers two snapshots share.
pub(crate) fn shared_layers(a: &[LayerId], b: &[LayerId]) -> usize {
    a.iter().zip(b).take_while(|(a, b)| a == b).count()
}

/// The directories above `path`, nearest first.
pub(crate) fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = path;
    std::iter::from_fn(move || {
        let (parent, _) = rest.rsplit_once('/')?;
        rest = parent;
        Some(parent)
    })
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
        assert_eq!(apply_both_ways(&old, &layer).unwrap(), new);
    }

    #[test]
    fn opaque_hides_lower_children_and_orphans_are_rejected() {
        let t = tree(&[("a", Node::Dir), ("a/old", file(b"o"))]);
        let mut layer = Layer::default();
        layer.changes.insert("a".into(), Change::Opaque);
        layer
            .changes
            .insert("a/new".into(), Change::Put(file(b"n")));
        let t = apply_both_ways(&t, &layer).unwrap();
        assert_eq!(t, tree(&[("a", Node::Dir), ("a/new", file(b"n"))]));

        let mut orphan = Layer::default();
        orphan
            .changes
            .insert("missing/x".into(), Change::Put(file(b"x")));
        assert!(apply_both_ways(&t, &orphan).is_err());
    }

    /// Both ways of applying a layer (in place for a small one, merged for a large one) agree.
    fn apply_both_ways(below: &Tree, layer: &Layer) -> Result<Tree, String> {
        let (mut in_place, mut merged) = (below.clone(), below.clone());
        let results = (in_place.apply_in_place(layer), merged.apply_merged(layer));
        assert_eq!(results.0.is_ok(), results.1.is_ok(), "{results:?}");
        results.0?;
        assert_eq!(in_place, merged);
        Ok(merged)
    }

    #[test]
    fn removals_reach_only_the_removed_directorys_content() {
        // `a-1` and `a.txt` sort between `a` and `a/…`: a merge must not take them for its content.
        let below = tree(&[
            ("a", Node::Dir),
            ("a-1", Node::Dir),
            ("a-1/y", file(b"y")),
            ("a.txt", file(b"t")),
            ("a/sub", Node::Dir),
            ("a/sub/x", file(b"x")),
            ("b", Node::Dir),
            ("b/z", file(b"z")),
            ("c", file(b"c")),
        ]);
        let mut layer = Layer::default();
        layer
            .changes
            .insert("a".into(), Change::Put(file(b"now a file")));
        layer.changes.insert("b".into(), Change::Whiteout);
        layer.changes.insert("c".into(), Change::Put(Node::Dir));
        layer
            .changes
            .insert("c/new".into(), Change::Put(file(b"n")));
        assert_eq!(
            apply_both_ways(&below, &layer).unwrap(),
            tree(&[
                ("a", file(b"now a file")),
                ("a-1", Node::Dir),
                ("a-1/y", file(b"y")),
                ("a.txt", file(b"t")),
                ("c", Node::Dir),
                ("c/new", file(b"n")),
            ])
        );
        // A whiteout's subtree cannot be written into in the same layer.
        let mut bad = Layer::default();
        bad.changes.insert("b".into(), Change::Whiteout);
        bad.changes.insert("b/w".into(), Change::Put(file(b"w")));
        assert!(apply_both_ways(&below, &bad).is_err());
    }

    #[test]
    fn removed_ranges_that_sort_out_of_order_or_nest_are_all_dropped() {
        // `a-b/` sorts before `a/` although `a` comes first; `d/e` lies inside `d`.
        let below = tree(&[
            ("a", Node::Dir),
            ("a-b", Node::Dir),
            ("a-b.z", file(b"z")),
            ("a-b/y", file(b"y")),
            ("a.c", file(b"c")),
            ("a/x", file(b"x")),
            ("d", Node::Dir),
            ("d/e", Node::Dir),
            ("d/e/f", file(b"f")),
            ("d/g", file(b"g")),
            ("h", file(b"h")),
        ]);
        let mut layer = Layer::default();
        for path in ["a", "a-b", "d", "d/e"] {
            layer.changes.insert(path.into(), Change::Whiteout);
        }
        assert_eq!(
            apply_both_ways(&below, &layer).unwrap(),
            tree(&[
                ("a-b.z", file(b"z")),
                ("a.c", file(b"c")),
                ("h", file(b"h"))
            ])
        );
    }

    #[test]
    fn digest_ignores_order_and_sees_every_change() {
        let a = tree(&[
            ("bin", Node::Dir),
            ("bin/x", file(b"x")),
            ("lib", Node::Dir),
        ]);
        let mut shuffled = TreeDigest::default();
        for path in ["lib", "bin/x", "bin"] {
            shuffled.add(path, &a.entries[path]);
        }
        assert_eq!(shuffled, a.digest());
        let mut edited = a.clone();
        edited.entries.insert("bin/x".into(), file(b"y"));
        assert_ne!(edited.digest(), a.digest());
        let mut renamed = a.clone();
        let node = renamed.entries.remove("bin/x").unwrap();
        renamed.entries.insert("bin/y".into(), node);
        assert_ne!(renamed.digest(), a.digest());
        let mut fewer = a.clone();
        fewer.entries.remove("lib");
        assert_ne!(fewer.digest(), a.digest());
    }

    #[test]
    fn a_digest_follows_the_changes_from_one_tree_to_another() {
        let a = tree(&[
            ("bin", Node::Dir),
            ("bin/x", file(b"x")),
            ("lib", Node::Dir),
            ("lib/gone", file(b"gone")),
        ]);
        let b = tree(&[
            ("bin", Node::Dir),
            ("bin/x", file(b"edited")),
            ("lib", Node::Dir),
            ("lib/new", file(b"new")),
            ("share", Node::Dir),
        ]);
        assert_eq!(a.digest().after(&a.changes_to(&b)), b.digest());
        assert_eq!(b.digest().after(&b.changes_to(&a)), a.digest());
        assert_eq!(a.digest().after(&a.changes_to(&a)), a.digest());
    }

    /// A tree over a small set of paths whose names sort around each other (`a-x` and `a.y` between
    /// `a` and `a/…`), each present or not, a file or a directory, as `bits` choose: orphans dropped.
    fn tree_of_bits(mut bits: u64) -> Tree {
        const PATHS: [&str; 9] = [
            "a", "a-x", "a.y", "a/b", "a/b/c", "a/d", "e", "e/f", "e/f/g",
        ];
        let mut t = Tree::default();
        for path in PATHS {
            let (present, dir) = (bits & 1 != 0, bits & 2 != 0);
            bits >>= 2;
            let parent_ok = path
                .rsplit_once('/')
                .is_none_or(|(parent, _)| t.entries.get(parent) == Some(&Node::Dir));
            if present && parent_ok {
                let node = if dir {
                    Node::Dir
                } else {
                    file(path.as_bytes())
                };
                t.entries.insert(path.to_owned(), node);
            }
        }
        t
    }

    fn empty_store() -> (tempfile::TempDir, ObjectStore) {
        let home = tempfile::tempdir().unwrap();
        let store = ObjectStore::at(home.path());
        store.create_dirs().unwrap();
        (home, store)
    }

    fn owned(changes: Vec<PathChange<'_>>) -> Vec<String> {
        changes.iter().map(|c| format!("{c:?}")).collect()
    }

    #[test]
    fn a_region_has_the_changes_of_the_whole_trees() {
        let (_home, store) = empty_store();
        let staging = store.begin().unwrap();
        // Four trees from a fixed pseudo-random sequence: two shared layers, then one stack of layers
        // to each side (a side may also have none). An opaque layer stands for an installer that
        // replaced a directory whole.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut cases = Vec::new();
        for case in 0..300 {
            let trees: Vec<Tree> = (0..4).map(|_| tree_of_bits(next())).collect();
            let put = |layer: &Layer| staging.put_layer(layer).unwrap();
            let shared = vec![
                put(&Tree::default().layer_to(&trees[0])),
                put(&trees[0].layer_to(&trees[1])),
            ];
            let mut opaque = trees[1].layer_to(&trees[2]);
            if trees[2].entries.get("a") == Some(&Node::Dir) {
                opaque.changes.insert("a".into(), Change::Opaque);
                for (path, node) in trees[2].descendants("a") {
                    opaque
                        .changes
                        .insert(path.clone(), Change::Put(node.clone()));
                }
            }
            let before = vec![put(&opaque)];
            let after = match case % 3 {
                0 => vec![],
                1 => vec![put(&trees[1].layer_to(&trees[3]))],
                _ => vec![put(&opaque), put(&trees[2].layer_to(&trees[3]))],
            };
            cases.push((shared, before, after));
        }
        staging.commit().unwrap();
        for (shared, before, after) in cases {
            let whole = |own: &[LayerId]| {
                Tree::from_layers(&store, &shared)
                    .and_then(|t| t.with_layers(&store, own))
                    .unwrap()
            };
            let (whole_before, whole_after) = (whole(&before), whole(&after));
            for (a, b, whole_a, whole_b) in [
                (&before, &after, &whole_before, &whole_after),
                (&after, &before, &whole_after, &whole_before),
            ] {
                let region = Region::between(&store, &shared, a, b).unwrap();
                assert_eq!(
                    owned(region.before.changes_to(&region.after)),
                    owned(whole_a.changes_to(whole_b)),
                    "{whole_a:?} -> {whole_b:?}"
                );
                assert!(region.before.entries.len() <= whole_a.entries.len());
            }
        }
    }

    #[test]
    fn a_region_keeps_only_what_the_differing_layers_reach() {
        let (_home, store) = empty_store();
        let staging = store.begin().unwrap();
        let base = tree(&[
            ("lib", Node::Dir),
            ("lib/big", Node::Dir),
            ("lib/big/x.py", file(b"x")),
            ("lib/old", Node::Dir),
            ("lib/old/y.py", file(b"y")),
            ("lib/other.py", file(b"o")),
        ]);
        let mut installed = base.clone();
        installed.entries.remove("lib/old/y.py");
        installed.entries.remove("lib/old");
        installed.entries.insert("lib/new.py".into(), file(b"n"));
        let shared = staging.put_layer(&Tree::default().layer_to(&base)).unwrap();
        let install = staging.put_layer(&base.layer_to(&installed)).unwrap();
        staging.commit().unwrap();
        let region = Region::between(&store, &[shared], &[install], &[]).unwrap();
        let paths = |t: &Tree| t.entries.keys().cloned().collect::<Vec<_>>();
        assert_eq!(paths(&region.before), ["lib", "lib/new.py"]);
        assert_eq!(paths(&region.after), ["lib", "lib/old", "lib/old/y.py"]);
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
