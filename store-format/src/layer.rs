//! A layer: the changes one operation made to the tree below it (OCI semantics: entries, whiteouts,
//! opaque directories), sorted by path, with exactly one encoding.

use std::collections::BTreeMap;

use crate::codec::{FormatError, Reader, Writer};
use crate::path::validate_rel_path;
use crate::{FORMAT_VERSION, LayerId, ObjectId};

const MAGIC: &[u8; 8] = b"BLASTLYR";

const TAG_FILE: u8 = 1;
const TAG_SYMLINK: u8 = 2;
const TAG_DIR: u8 = 3;
const TAG_WHITEOUT: u8 = 4;
const TAG_OPAQUE: u8 = 5;
/// Only in a layer as an image carries it: a file whose object travels in the same image.
const TAG_CARRIED_FILE: u8 = 6;

const FLAG_EXECUTABLE: u8 = 0b01;
const FLAG_RELOCATABLE: u8 = 0b10;

/// One thing that exists in a tree. Directories carry no data: their mode is always 0755. Files are 0644
/// or, when `executable`, 0755; owners, times and xattrs are not part of identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    File {
        object: ObjectId,
        size: u64,
        executable: bool,
        /// The stored bytes hold placeholders for the environment's paths (see `Placeholders`).
        relocatable: bool,
    },
    Symlink {
        target: String,
        /// The target holds placeholders for the environment's paths.
        relocatable: bool,
    },
    Dir,
}

/// What a layer does at one path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// The path exists with this node (added or replaced).
    Put(Node),
    /// The path, and everything below it, is removed from the layers below.
    Whiteout,
    /// The path is a directory that hides everything the layers below had under it.
    Opaque,
}

/// A changeset over the tree below it. Paths are validated, unique and sorted (a `BTreeMap` keeps them so).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layer {
    pub changes: BTreeMap<String, Change>,
}

impl Layer {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The one canonical encoding. Paths must be valid (callers build layers from validated paths).
    pub fn encode(&self) -> Vec<u8> {
        self.encode_with(&|_, _| None)
    }

    /// The layer as an image carries it: a file whose `(object, executable)` the image carries names it
    /// by its rank among the image's objects (`rank`) instead of by its 32-byte id. The image's reader
    /// rebuilds the layer once it has hashed the objects ([`CarriedLayer::resolve`]).
    pub fn encode_carried(&self, rank: &dyn Fn(&ObjectId, bool) -> Option<u32>) -> Vec<u8> {
        self.encode_with(rank)
    }

    fn encode_with(&self, rank: &dyn Fn(&ObjectId, bool) -> Option<u32>) -> Vec<u8> {
        let mut w = Writer::new(MAGIC, FORMAT_VERSION);
        w.count(self.changes.len());
        for (path, change) in &self.changes {
            w.str(path);
            match change {
                Change::Put(Node::File {
                    object,
                    size,
                    executable,
                    relocatable,
                }) => {
                    match rank(object, *executable) {
                        Some(rank) => {
                            w.u8(TAG_CARRIED_FILE);
                            w.u32(rank);
                        }
                        None => {
                            w.u8(TAG_FILE);
                            w.bytes32(object.as_bytes());
                        }
                    }
                    w.u64(*size);
                    w.u8(flags(*executable, *relocatable));
                }
                Change::Put(Node::Symlink {
                    target,
                    relocatable,
                }) => {
                    w.u8(TAG_SYMLINK);
                    w.str(target);
                    w.u8(flags(false, *relocatable));
                }
                Change::Put(Node::Dir) => w.u8(TAG_DIR),
                Change::Whiteout => w.u8(TAG_WHITEOUT),
                Change::Opaque => w.u8(TAG_OPAQUE),
            }
        }
        w.0
    }

    pub fn id(&self) -> LayerId {
        LayerId::of(&self.encode())
    }

    /// Decodes and validates: paths normalized and strictly ascending, known tags and flags, no trailing
    /// bytes. Anything accepted re-encodes to the same bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        decode_entries(bytes, None, None)
    }

    /// Decodes only the entries whose path `keep` accepts (asked in ascending path order). The encoding
    /// is checked throughout as by [`Layer::decode`], the paths of the entries left out excepted (they
    /// reach no tree): reading a few paths of a large layer costs no allocation for the others.
    pub fn decode_where(
        bytes: &[u8],
        keep: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Self, FormatError> {
        decode_entries(bytes, None, Some(keep))
    }
}

/// A layer as a version 3 image carries it, decoded: its files whose objects travel in the image are
/// known by rank until those objects have been read and hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedLayer {
    /// The layer, with [`CarriedLayer::UNRESOLVED`] as the object of every file named by rank. Good for
    /// everything but ids: its tree, sizes, modes and symlinks.
    pub layer: Layer,
    /// Path → rank, for the files named by rank, in path order.
    pub ranks: Vec<(String, u32)>,
}

impl CarriedLayer {
    /// The object of a file named by rank until it is resolved. No content hashes to it, and a file that
    /// names it by id is refused, so it never stands for a real object.
    pub const UNRESOLVED: ObjectId = ObjectId::from_bytes([0; 32]);

    /// Decodes like [`Layer::decode`], accepting also files named by rank.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut ranks = Vec::new();
        let layer = decode_entries(bytes, Some(&mut ranks), None)?;
        Ok(CarriedLayer { layer, ranks })
    }

    /// The layer with every rank replaced by the id `ids` holds at that rank; `None` when a rank is past
    /// its end.
    pub fn resolve(&self, ids: &[ObjectId]) -> Option<Layer> {
        let mut layer = self.layer.clone();
        for (path, rank) in &self.ranks {
            let id = *ids.get(usize::try_from(*rank).ok()?)?;
            if let Some(Change::Put(Node::File { object, .. })) = layer.changes.get_mut(path) {
                *object = id;
            }
        }
        Some(layer)
    }
}

/// Decodes a layer; with `ranks`, files named by rank are accepted and listed there; with `keep`, only
/// the entries it accepts are.
fn decode_entries(
    bytes: &[u8],
    mut ranks: Option<&mut Vec<(String, u32)>>,
    mut keep: Option<&mut dyn FnMut(&str) -> bool>,
) -> Result<Layer, FormatError> {
    let mut r = Reader::open(bytes, MAGIC, "layer", FORMAT_VERSION)?;
    // The smallest entry is a 1-byte path (4 + 1) and a tag.
    let count = r.count(6)?;
    // Paths arrive strictly ascending (checked below), so the map is built in one pass at the end.
    let mut changes = Vec::with_capacity(if keep.is_some() { 0 } else { count });
    let mut previous: Option<&str> = None;
    for _ in 0..count {
        let path = r.str()?;
        if previous.is_some_and(|p| p.as_bytes() >= path.as_bytes()) {
            return Err(r.invalid(format!("path `{path}` is out of order or repeated")));
        }
        previous = Some(path);
        let kept = keep.as_mut().is_none_or(|keep| keep(path));
        if kept {
            validate_rel_path(path).map_err(|e| r.invalid(e.to_string()))?;
        }
        let change = match r.u8()? {
            TAG_FILE => {
                let object = ObjectId::from_bytes(r.bytes32()?);
                if ranks.is_some() && object == CarriedLayer::UNRESOLVED {
                    return Err(r.invalid(format!("file `{path}` names no object")));
                }
                let size = r.u64()?;
                let (executable, relocatable) = read_flags(&mut r, true)?;
                Change::Put(Node::File {
                    object,
                    size,
                    executable,
                    relocatable,
                })
            }
            TAG_SYMLINK => {
                let target = r.str()?;
                if target.is_empty() || target.contains('\0') {
                    return Err(r.invalid(format!("symlink `{path}` has an empty or NUL target")));
                }
                let target = if kept {
                    target.to_owned()
                } else {
                    String::new()
                };
                let (_, relocatable) = read_flags(&mut r, false)?;
                Change::Put(Node::Symlink {
                    target,
                    relocatable,
                })
            }
            TAG_CARRIED_FILE if ranks.is_some() => {
                let rank = r.u32()?;
                let size = r.u64()?;
                let (executable, relocatable) = read_flags(&mut r, true)?;
                if kept && let Some(ranks) = ranks.as_deref_mut() {
                    ranks.push((path.to_owned(), rank));
                }
                Change::Put(Node::File {
                    object: CarriedLayer::UNRESOLVED,
                    size,
                    executable,
                    relocatable,
                })
            }
            TAG_DIR => Change::Put(Node::Dir),
            TAG_WHITEOUT => Change::Whiteout,
            TAG_OPAQUE => Change::Opaque,
            other => return Err(r.invalid(format!("unknown entry tag {other} at `{path}`"))),
        };
        if kept {
            changes.push((path.to_owned(), change));
        }
    }
    r.finish()?;
    Ok(Layer {
        changes: changes.into_iter().collect(),
    })
}

fn flags(executable: bool, relocatable: bool) -> u8 {
    (if executable { FLAG_EXECUTABLE } else { 0 })
        | (if relocatable { FLAG_RELOCATABLE } else { 0 })
}

fn read_flags(r: &mut Reader<'_>, executable_allowed: bool) -> Result<(bool, bool), FormatError> {
    let raw = r.u8()?;
    let known = if executable_allowed {
        FLAG_EXECUTABLE | FLAG_RELOCATABLE
    } else {
        FLAG_RELOCATABLE
    };
    if raw & !known != 0 {
        return Err(r.invalid(format!("unknown flags {raw:#04x}")));
    }
    Ok((raw & FLAG_EXECUTABLE != 0, raw & FLAG_RELOCATABLE != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Layer {
        let mut changes = BTreeMap::new();
        changes.insert("bin".into(), Change::Put(Node::Dir));
        changes.insert(
            "bin/tool".into(),
            Change::Put(Node::File {
                object: ObjectId::of(b"#!@BLAST_ENV_PREFIX@/bin/python\n"),
                size: 32,
                executable: true,
                relocatable: true,
            }),
        );
        changes.insert(
            "bin/python".into(),
            Change::Put(Node::Symlink {
                target: "@BLAST_PYTHON_BIN@/python3.11".into(),
                relocatable: true,
            }),
        );
        changes.insert("lib/old".into(), Change::Whiteout);
        changes.insert("lib/pkg".into(), Change::Opaque);
        Layer { changes }
    }

    #[test]
    fn round_trips_and_is_canonical() {
        let layer = sample();
        let bytes = layer.encode();
        let back = Layer::decode(&bytes).unwrap();
        assert_eq!(back, layer);
        assert_eq!(back.encode(), bytes);
    }

    #[test]
    fn rejects_every_truncation_and_trailing_bytes() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(
                Layer::decode(&bytes[..cut]).is_err(),
                "accepted a cut at {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            Layer::decode(&long),
            Err(FormatError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn decodes_only_the_kept_entries_and_still_checks_the_rest() {
        let bytes = sample().encode();
        let mut asked = Vec::new();
        let kept = Layer::decode_where(&bytes, &mut |path| {
            asked.push(path.to_owned());
            path.starts_with("bin/")
        })
        .unwrap();
        let mut expected = sample();
        expected.changes.retain(|path, _| path.starts_with("bin/"));
        assert_eq!(kept, expected);
        assert_eq!(
            asked,
            sample().changes.into_keys().collect::<Vec<_>>(),
            "every path is asked about once, in order"
        );
        for cut in 0..bytes.len() {
            assert!(
                Layer::decode_where(&bytes[..cut], &mut |_| false).is_err(),
                "accepted a cut at {cut}"
            );
        }
    }

    #[test]
    fn rejects_unsorted_duplicate_and_escaping_paths() {
        let encode_paths = |paths: &[&str]| {
            let mut w = Writer::new(MAGIC, FORMAT_VERSION);
            w.count(paths.len());
            for p in paths {
                w.str(p);
                w.u8(TAG_DIR);
            }
            w.0
        };
        assert!(Layer::decode(&encode_paths(&["a", "b"])).is_ok());
        assert!(Layer::decode(&encode_paths(&["b", "a"])).is_err());
        assert!(Layer::decode(&encode_paths(&["a", "a"])).is_err());
        assert!(Layer::decode(&encode_paths(&["../etc"])).is_err());
        assert!(Layer::decode(&encode_paths(&["/etc"])).is_err());
    }

    #[test]
    fn rejects_unknown_version_and_flags() {
        let mut bytes = sample().encode();
        bytes[9] = 2;
        assert!(matches!(
            Layer::decode(&bytes),
            Err(FormatError::UnsupportedVersion { found: 2, .. })
        ));
        let mut w = Writer::new(MAGIC, FORMAT_VERSION);
        w.count(1);
        w.str("a");
        w.u8(TAG_SYMLINK);
        w.str("b");
        w.u8(FLAG_EXECUTABLE);
        assert!(Layer::decode(&w.0).is_err());
    }

    #[test]
    fn a_carried_layer_resolves_to_the_layer_and_never_passes_for_one() {
        let layer = sample();
        let tool = ObjectId::of(b"#!@BLAST_ENV_PREFIX@/bin/python\n");
        let carried = layer.encode_carried(&|id, x| (*id == tool && x).then_some(7));
        assert!(carried.len() < layer.encode().len());
        // The store's decoder does not know files named by rank.
        assert!(Layer::decode(&carried).is_err());
        let decoded = CarriedLayer::decode(&carried).unwrap();
        assert_eq!(decoded.ranks, [("bin/tool".to_owned(), 7)]);
        let mut ids = vec![ObjectId::of(b"other"); 8];
        assert_eq!(decoded.resolve(&ids[..7]), None);
        ids[7] = tool;
        assert_eq!(decoded.resolve(&ids).unwrap(), layer);
        // Without carried objects, the carried form is the layer's own encoding.
        let plain = layer.encode_carried(&|_, _| None);
        assert_eq!(plain, layer.encode());
        assert_eq!(CarriedLayer::decode(&plain).unwrap().layer, layer);
        // A file may not name the stand-in for unresolved objects by id.
        let mut w = Writer::new(MAGIC, FORMAT_VERSION);
        w.count(1);
        w.str("a");
        w.u8(TAG_FILE);
        w.bytes32(CarriedLayer::UNRESOLVED.as_bytes());
        w.u64(0);
        w.u8(0);
        assert!(Layer::decode(&w.0).is_ok());
        assert!(CarriedLayer::decode(&w.0).is_err());
    }

    #[test]
    fn hostile_count_does_not_allocate() {
        let mut w = Writer::new(MAGIC, FORMAT_VERSION);
        w.u32(u32::MAX);
        assert!(matches!(
            Layer::decode(&w.0),
            Err(FormatError::Truncated { .. })
        ));
    }
}
