//! The on-disk and on-wire types of blast and their canonical encoding.
//!
//! Everything that is named by a hash lives here: object, layer and snapshot ids, the entries of a layer and
//! the snapshot record. Each type has exactly one byte encoding (a decoder rejects every other form), so
//! the same content has the same id on any machine. SPEC.md documents the formats; golden vectors in
//! `fixtures/store-format/` pin them.

mod codec;
mod digest;
mod layer;
mod path;
mod relocation;
mod snapshot;

pub use codec::FormatError;
pub use digest::{DigestParseError, LayerId, ObjectId, SnapshotId};
pub use layer::{CarriedLayer, Change, Layer, Node};
pub use path::{PathError, validate_rel_path};
pub use relocation::{ENV_PREFIX_TOKEN, PYTHON_BIN_TOKEN, Placeholders};
pub use snapshot::{Package, PythonTag, Snapshot};

/// The version written by this build; decoders accept exactly the versions they know.
pub const FORMAT_VERSION: u16 = 1;
