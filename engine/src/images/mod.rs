//! Images: snapshots travelling as one `.blast` file, to a teammate, a CI job or another machine.
//!
//! An image is a tar stream compressed with zstd. Its first entry is a small JSON manifest (format version,
//! the snapshots it carries, which one is the head, the base of a thin image, how many layers and objects
//! follow); then the snapshots and layers, each under its id, and the objects, each under its rank (the
//! layers name them so too; import rebuilds the ids by hashing), in one fixed order. Everything that
//! could vary between machines is fixed (entry order, tar header fields, compression parameters), so the
//! same snapshot exports to the same bytes from any store, at any path, at any time.
//!
//! Import trusts nothing ([`read`]): it streams the archive once, never holding more than one layer or
//! snapshot in memory, checks every name, type, size and hash against the manifest and the layers, refuses
//! what could escape the environment, and stages everything through one [`Staging`](crate::objects::Staging)
//! batch that is committed only when the whole image verified. SPEC.md §19 is the byte-level description.
//!
//! The same snapshot travels through an OCI registry as one blob per layer ([`oci`]), written and read by
//! the same building blocks.

pub mod oci;
mod read;
mod stream;
mod symlinks;
mod write;

use std::fmt;

use serde::{Deserialize, Serialize};
use store_format::{Change, Layer, LayerId, Node, ObjectId, Snapshot, SnapshotId};

use crate::error::{Error, Result};

pub use read::{ImportOutcome, import_image};
pub(crate) use symlinks::escaping_symlink;
pub(crate) use write::file_objects;
pub use write::{Base, Plan, Written, base_from_image, base_from_store, write_image};

/// Name of the first entry.
pub const MANIFEST_NAME: &str = "blast-image.json";
/// The manifest's `format` field.
pub const IMAGE_FORMAT: &str = "blast-image";
/// The manifest's `version` field: the image format this blast writes. Version 3 names its objects by
/// rank and its layers name those objects by rank too, so that no object id travels (they are rebuilt
/// and checked on import): a thin image of a small package shrinks by ~4%. Version 2 orders objects by
/// their first appearance in the snapshots' layers, so that a package's files lie together and
/// compress together; version 1 (objects by name) compressed 7% worse. Both are read still.
pub const IMAGE_VERSION: u64 = 3;
/// The first version whose objects are named by rank ([`EntryName::CarriedObject`]).
pub const CARRIED_OBJECTS_VERSION: u64 = 3;
/// The oldest image format this blast reads.
pub const OLDEST_IMAGE_VERSION: u64 = 1;
/// zstd compression level of the whole stream (single-threaded, so the frame is the same on any machine).
pub const ZSTD_LEVEL: i32 = 3;
/// Largest zstd window the reader accepts (2^27 = 128 MiB), which bounds its memory.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// Mode written in every tar header.
pub const ENTRY_MODE: u32 = 0o444;

/// The first entry of an image, JSON with these fields in this order (compact, no spaces).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`IMAGE_FORMAT`].
    pub format: String,
    /// [`IMAGE_VERSION`] when written; from [`OLDEST_IMAGE_VERSION`] on when read.
    pub version: u64,
    /// The snapshot an import makes an environment of.
    pub head: SnapshotId,
    /// Every snapshot the image holds, oldest first (an environment's history order), `head` last.
    pub snapshots: Vec<SnapshotId>,
    /// For a thin image: the snapshot whose layers and objects were left out.
    pub base: Option<SnapshotId>,
    /// Number of `layers/` entries.
    pub layers: u64,
    /// Number of `objects/` entries.
    pub objects: u64,
    /// Sum of the sizes of the `objects/` entries.
    pub object_bytes: u64,
}

/// The objects the snapshots' files use, in the order a version 2 image holds them: snapshot by
/// snapshot in the manifest's order, each snapshot's layers from the bottom, each layer's files in path
/// order, every `(object, executable)` where it first appears. `None` when a layer is unknown.
pub(crate) fn object_order<'a>(
    snapshots: impl IntoIterator<Item = &'a Snapshot>,
    layer: impl Fn(&LayerId) -> Option<&'a Layer>,
) -> Option<Vec<(ObjectId, bool)>> {
    let mut layers = Vec::new();
    for snapshot in snapshots {
        for id in &snapshot.layers {
            layers.push(layer(id)?);
        }
    }
    Some(first_use(layers))
}

/// Every `(object, executable)` the layers' files name, where it first appears (layers in the order
/// given, each one's files in path order).
pub(crate) fn first_use<'a>(layers: impl IntoIterator<Item = &'a Layer>) -> Vec<(ObjectId, bool)> {
    let mut seen = std::collections::HashSet::new();
    let mut order = Vec::new();
    for layer in layers {
        for change in layer.changes.values() {
            if let Change::Put(Node::File {
                object, executable, ..
            }) = change
                && seen.insert((*object, *executable))
            {
                order.push((*object, *executable));
            }
        }
    }
    order
}

/// The name of one archive entry, which also fixes where it may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryName {
    Manifest,
    Snapshot(SnapshotId),
    Layer(LayerId),
    /// An object under its id (images before version 3, registry layer blobs).
    Object(ObjectId, bool),
    /// The object of this rank among those a version 3 image carries: its id is what it hashes to.
    CarriedObject(u32),
}

impl EntryName {
    /// The exact grammar of entry names: anything else is refused.
    pub(crate) fn parse(name: &str) -> Option<EntryName> {
        if name == MANIFEST_NAME {
            return Some(EntryName::Manifest);
        }
        let (dir, file) = name.split_once('/')?;
        fn hex_id(s: &str) -> Option<&str> {
            (s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                .then_some(s)
        }
        match dir {
            "snapshots" => hex_id(file)?.parse().ok().map(EntryName::Snapshot),
            "layers" => hex_id(file)?.parse().ok().map(EntryName::Layer),
            "objects" if file.len() < 64 => rank(file).map(EntryName::CarriedObject),
            "objects" => {
                let (hex, executable) = match file.strip_suffix(".x") {
                    Some(hex) => (hex, true),
                    None => (file, false),
                };
                hex_id(hex)?
                    .parse()
                    .ok()
                    .map(|id| EntryName::Object(id, executable))
            }
            _ => None,
        }
    }

    /// Where this entry's section comes in the archive: manifest, snapshots, layers, objects.
    pub(crate) fn section(&self) -> u8 {
        match self {
            EntryName::Manifest => 0,
            EntryName::Snapshot(_) => 1,
            EntryName::Layer(_) => 2,
            EntryName::Object(..) | EntryName::CarriedObject(_) => 3,
        }
    }
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryName::Manifest => f.write_str(MANIFEST_NAME),
            EntryName::Snapshot(id) => write!(f, "snapshots/{id}"),
            EntryName::Layer(id) => write!(f, "layers/{id}"),
            EntryName::Object(id, false) => write!(f, "objects/{id}"),
            EntryName::Object(id, true) => write!(f, "objects/{id}.x"),
            EntryName::CarriedObject(rank) => write!(f, "objects/{rank}"),
        }
    }
}

/// A rank in decimal, without leading zeros.
fn rank(s: &str) -> Option<u32> {
    let canonical = s == "0" || (!s.starts_with('0') && !s.is_empty());
    if canonical && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// What import accepts before it calls an image hostile. Generous for real environments, small enough
/// that a crafted file cannot fill the disk or the memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Decompressed bytes of the whole archive (`BLAST_IMAGE_MAX_BYTES`, default 64 GiB).
    pub max_bytes: u64,
    /// Once `ratio_floor` bytes are decompressed, more than `max_ratio` decompressed bytes per
    /// compressed byte read is refused (not when `BLAST_IMAGE_MAX_BYTES` is set: the user has said how
    /// much an image may decompress to).
    pub max_ratio: u64,
    pub ratio_floor: u64,
    /// Archive entries.
    pub max_entries: u64,
    /// Size of the manifest entry.
    pub max_manifest: u64,
    /// Size of one snapshot entry.
    pub max_snapshot: u64,
    /// Size of one layer entry (layers are decoded in memory).
    pub max_layer: u64,
    /// All snapshot and layer entries together (they are all held in memory until the commit).
    pub max_metadata: u64,
    /// Layer entries applied while flattening every snapshot of the image (a snapshot may list a layer
    /// many times, so this bounds the work, not only the bytes).
    pub max_flatten: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 64 << 30,
            max_ratio: 1000,
            ratio_floor: 256 << 20,
            max_entries: 4_000_000,
            max_manifest: 1 << 20,
            max_snapshot: 16 << 20,
            max_layer: 256 << 20,
            max_metadata: 1 << 30,
            max_flatten: 100_000_000,
        }
    }
}

impl Limits {
    /// The defaults, with `BLAST_IMAGE_MAX_BYTES` when it is set (and then no ratio check); empty, it
    /// is unset, as for `BLAST_LINK_MODE` (found by exploratory testing: it was an error).
    pub fn from_env() -> Result<Limits> {
        let mut limits = Limits::default();
        if let Ok(value) = std::env::var("BLAST_IMAGE_MAX_BYTES")
            && !value.trim().is_empty()
        {
            limits.max_bytes = value.trim().parse().map_err(|_| {
                Error::Invalid(format!(
                    "BLAST_IMAGE_MAX_BYTES=`{value}` is not a number of bytes: set it to the most an \
                     image may decompress to (`BLAST_IMAGE_MAX_BYTES=100000000000`), or unset it"
                ))
            })?;
            limits.ratio_floor = u64::MAX;
        }
        Ok(limits)
    }

    /// Whether `decompressed` bytes from `compressed` ones are past the ratio check.
    pub fn ratio_exceeded(&self, decompressed: u64, compressed: u64) -> bool {
        decompressed > self.ratio_floor && decompressed / self.max_ratio > compressed.max(1)
    }
}

/// Where long work reports how far it got. The engine prints nothing itself; the CLI draws a bar.
pub trait Progress: Sync {
    /// A new phase of work; `total` is in bytes when it is known.
    fn begin(&self, phase: &'static str, total: Option<u64>);
    /// `amount` more bytes done.
    fn advance(&self, amount: u64);
    /// The phase is over.
    fn end(&self);
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &'static str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_round_trip_and_nothing_else_parses() {
        let id = ObjectId::of(b"x");
        for name in [
            EntryName::Manifest,
            EntryName::Snapshot(SnapshotId::of(b"s")),
            EntryName::Layer(LayerId::of(b"l")),
            EntryName::Object(id, false),
            EntryName::Object(id, true),
            EntryName::CarriedObject(0),
            EntryName::CarriedObject(4_294_967_295),
        ] {
            assert_eq!(EntryName::parse(&name.to_string()), Some(name));
        }
        let hex = id.to_hex();
        for bad in [
            format!("/objects/{hex}"),
            format!("objects/{}", hex.to_uppercase()),
            format!("objects/{hex}.y"),
            format!("objects//{hex}"),
            format!("./objects/{hex}"),
            format!("objects/{}", &hex[..63]),
            format!("blobs/{hex}"),
            "blast-image.json/".to_owned(),
            "objects/01".to_owned(),
            "objects/-1".to_owned(),
            "objects/+1".to_owned(),
            "objects/".to_owned(),
            "objects/4294967296".to_owned(),
            "objects/1.x".to_owned(),
        ] {
            assert_eq!(EntryName::parse(&bad), None, "{bad}");
        }
    }
}
