//! Reading an image, trusting nothing. One pass over the stream:
//!
//! 1. the manifest (first, bounded in size, known format and version);
//! 2. snapshots: each listed by the manifest, hashing to its name, decoding; then the head is shown to the
//!    caller (a restore checks for a matching Python before gigabytes of objects are read);
//! 3. layers: each used by a snapshot, hashing to its name, decoding; then the layers the image left out
//!    come from the store (or the import fails, naming the base a thin image needs), every snapshot's
//!    layers must apply (`Tree::apply` checks parents) and its symlinks must stay in the environment;
//! 4. objects: each named by a layer, of the size the layers record, streamed into staging while hashed.
//!
//! A version 3 image names the objects it carries by rank, and so do its layers (their carried form,
//! [`CarriedLayer`]): an object is staged as whatever it hashes to, and once all are read the ids go back
//! into the layers, each of which must then hash to its name. Until then a layer is checked for all that
//! does not depend on ids (its tree, its symlinks, that every file naming a rank agrees on its size).
//!
//! Every entry must be a regular file with a relative name of the image grammar, in the fixed order, once.
//! Decompressed bytes are counted against [`Limits`]. Nothing staged is committed unless all of it held.
//!
//! A layer blob of a registry image ([`super::oci`]) is read by the same machinery in another shape: no
//! manifest and no snapshots (the registry's config blob carries the snapshot), exactly the layer the
//! registry manifest names, then every object of that layer. What only the whole snapshot can show (its
//! layers apply, its symlinks stay inside) is checked by [`check_snapshots`] once all blobs are read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;

use store_format::{CarriedLayer, Change, Layer, LayerId, Node, ObjectId, Snapshot, SnapshotId};

use super::stream::{CompressedSide, DecompressedSide, Meter, Tracked};
use super::{
    CARRIED_OBJECTS_VERSION, EntryName, IMAGE_FORMAT, IMAGE_VERSION, Limits, MANIFEST_NAME,
    Manifest, OLDEST_IMAGE_VERSION, Progress, ZSTD_WINDOW_LOG_MAX,
};
use crate::error::{Error, ImageProblem, ImageSource, IoContext, Result};
use crate::objects::Staging;
use crate::packages::{ListedAt, described, listed_at};
use crate::store::Store;
use crate::tree::Tree;

/// What an import added to the store.
#[derive(Debug, Clone)]
pub struct ImportOutcome {
    pub manifest: Manifest,
    /// The head snapshot, decoded.
    pub head: Snapshot,
    pub new_snapshots: usize,
    pub new_layers: usize,
    pub new_objects: usize,
    /// Size of the image file.
    pub image_bytes: u64,
}

/// Verifies the image at `path` and adds it to the store. `check_head` sees the head snapshot as soon as
/// it is verified, before any layer or object is read; an error from it ends the import.
pub fn import_image(
    store: &Store,
    path: &Path,
    limits: &Limits,
    progress: &dyn Progress,
    check_head: &mut dyn FnMut(&Snapshot) -> Result<()>,
) -> Result<ImportOutcome> {
    let staging = store.objects().begin()?;
    // A pipe (`blast import /dev/stdin`) has no size to show progress against; what was read is
    // counted instead (found by exploratory testing: such an image was reported as 0 B).
    let meta = std::fs::metadata(path).at("opening image", path)?;
    let size = meta.is_file().then_some(meta.len());
    let (manifest, layers, snapshots, new_objects, image_bytes) = {
        let mut importer = Importer::new(
            store,
            path,
            ImageSource::File(path.to_owned()),
            Shape::Image,
            *limits,
            Some(&staging),
            check_head,
        );
        progress.begin("verifying", size);
        let read = importer.run(progress);
        progress.end();
        read?;
        (
            importer.manifest()?.clone(),
            std::mem::take(&mut importer.layers),
            std::mem::take(&mut importer.snapshots),
            importer.new_objects,
            importer.meter.compressed.get(),
        )
    };
    let mut new_layers = 0;
    for (id, layer) in &layers {
        new_layers += usize::from(!store.objects().layer_path(id).exists());
        staging.put_layer(layer)?;
    }
    let mut new_snapshots = 0;
    for (id, snapshot) in &snapshots {
        new_snapshots += usize::from(!store.objects().has_snapshot(id));
        staging.put_snapshot(snapshot)?;
    }
    let head = snapshots
        .get(&manifest.head)
        .cloned()
        .ok_or_else(|| Error::Image {
            image: ImageSource::File(path.to_owned()),
            entry: None,
            problem: Box::new(ImageProblem::Missing("its head snapshot".into())),
        })?;
    staging.commit()?;
    Ok(ImportOutcome {
        manifest,
        head,
        new_snapshots,
        new_layers,
        new_objects,
        image_bytes,
    })
}

/// Verifies an image up to its objects and returns its manifest and every layer of its snapshots (those
/// it holds and those it left out, read from the store). For the base of a thin image.
pub(crate) fn scan_layers(
    store: &Store,
    path: &Path,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<(Manifest, BTreeMap<LayerId, Layer>)> {
    let mut accept = |_: &Snapshot| Ok(());
    let mut importer = Importer::new(
        store,
        path,
        ImageSource::File(path.to_owned()),
        Shape::Image,
        *limits,
        None,
        &mut accept,
    );
    progress.begin("reading base", None);
    let read = importer.run(progress);
    progress.end();
    read?;
    let manifest = importer.manifest()?.clone();
    let mut layers = std::mem::take(&mut importer.layers);
    layers.append(&mut importer.store_layers);
    Ok((manifest, layers))
}

/// Every `(object, executable)` some layers need, with its size.
pub(crate) type NeededObjects = BTreeMap<(ObjectId, bool), u64>;
/// Why layers were refused: the entry at fault, when there is one, and the problem.
pub(crate) type Refusal = (Option<String>, ImageProblem);

/// What one layer blob of a registry image held.
pub(crate) struct BlobOutcome {
    pub(crate) layer: Layer,
    /// Objects the store did not have yet.
    pub(crate) new_objects: usize,
}

/// Verifies the layer blob at `path` (already checked against its digest): exactly `layer`, then every
/// object that layer names, each hashing to its name. The objects are staged in `staging`; the layer is
/// returned for the caller to check with the rest of its snapshot and to stage.
pub(crate) fn read_layer_blob(
    store: &Store,
    staging: &Staging<'_>,
    path: &Path,
    source: ImageSource,
    layer: LayerId,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<BlobOutcome> {
    let mut accept = |_: &Snapshot| Ok(());
    let mut importer = Importer::new(
        store,
        path,
        source,
        Shape::LayerBlob(layer),
        *limits,
        Some(staging),
        &mut accept,
    );
    importer.run(progress)?;
    let layer = importer.layers.remove(&layer).ok_or_else(|| {
        importer.fail(None, ImageProblem::BlobIncomplete(format!("layer {layer}")))
    })?;
    Ok(BlobOutcome {
        layer,
        new_objects: importer.new_objects,
    })
}

/// What the layers of the snapshots make together: [`check_trees`], and all layers agree on the size of
/// each object. Returns every `(object, executable)` the layers' files need, with its size. A failure
/// names the layer at fault, when there is one, and the problem.
pub(crate) fn check_snapshots<'l>(
    snapshots: &BTreeMap<SnapshotId, Snapshot>,
    layer: &dyn Fn(&LayerId) -> Option<&'l Layer>,
    max_flatten: u64,
) -> Result<NeededObjects, Refusal> {
    let used = check_trees(snapshots, layer, max_flatten)?;
    needed_objects(used.iter().filter_map(|id| layer(id).map(|l| (id, l))))
}

/// The trees of the snapshots: the flattening work stays within `max_flatten`, each layer applies to
/// those below it, no layer puts bytecode in `__pycache__`, no symlink leads out of the environment.
/// Nothing here looks at object ids. Returns the
/// layers the snapshots use.
fn check_trees<'l>(
    snapshots: &BTreeMap<SnapshotId, Snapshot>,
    layer: &dyn Fn(&LayerId) -> Option<&'l Layer>,
    max_flatten: u64,
) -> Result<BTreeSet<LayerId>, Refusal> {
    let mut flatten = 0u64;
    for snapshot in snapshots.values() {
        for layer_id in &snapshot.layers {
            let entries = layer(layer_id).map_or(0, |l| l.changes.len() as u64);
            flatten = flatten.saturating_add(entries);
        }
    }
    if flatten > max_flatten {
        return Err((
            None,
            ImageProblem::TooLarge(format!(
                "its snapshots apply {flatten} layer entries, more than {max_flatten}"
            )),
        ));
    }
    let mut used = BTreeSet::new();
    for (snapshot_id, snapshot) in snapshots {
        for layer_id in &snapshot.layers {
            if let Some(path) = layer(layer_id).and_then(|l| {
                l.changes
                    .keys()
                    .find(|path| path.split('/').any(|part| part == crate::capture::PYCACHE))
            }) {
                return Err((
                    Some(EntryName::Layer(*layer_id).to_string()),
                    ImageProblem::Bytecode(path.clone()),
                ));
            }
        }
        let tree = flattened(snapshot_id, snapshot, layer)?;
        used.extend(snapshot.layers.iter().copied());
        if let Some((path, target, why)) = super::escaping_symlink(&tree) {
            // Name the top-most layer of this snapshot that puts the link.
            let culprit = snapshot.layers.iter().rev().find(|id| {
                layer(id).is_some_and(|l| matches!(l.changes.get(&path), Some(Change::Put(_))))
            });
            return Err((
                culprit.map(|id| EntryName::Layer(*id).to_string()),
                ImageProblem::SymlinkEscapes {
                    snapshot: snapshot_id.short(),
                    path,
                    target,
                    why,
                },
            ));
        }
    }
    Ok(used)
}

/// The tree of a snapshot: its layers applied bottom first, each to those below it.
fn flattened<'l>(
    snapshot_id: &SnapshotId,
    snapshot: &Snapshot,
    layer: &dyn Fn(&LayerId) -> Option<&'l Layer>,
) -> Result<Tree, Refusal> {
    let mut tree = Tree::default();
    for layer_id in &snapshot.layers {
        let found = layer(layer_id)
            .ok_or_else(|| (None, ImageProblem::Missing(format!("layer {layer_id}"))))?;
        tree.apply(found).map_err(|detail| {
            (
                Some(EntryName::Layer(*layer_id).to_string()),
                ImageProblem::DoesNotApply {
                    snapshot: snapshot_id.short(),
                    detail,
                },
            )
        })?;
    }
    Ok(tree)
}

/// Every snapshot lists the packages its tree gives (SPEC §7): `blast log`, `status` and `export
/// --format requirements` show the list without reading the files again, so an image's list must be
/// what its files give ([`listed_at`]). `read` gives an object's bytes.
pub(crate) fn check_packages<'l>(
    snapshots: &BTreeMap<SnapshotId, Snapshot>,
    layer: &dyn Fn(&LayerId) -> Option<&'l Layer>,
    read: &dyn Fn(&ObjectId) -> Result<Vec<u8>>,
) -> Result<(), Refusal> {
    for (snapshot_id, snapshot) in snapshots {
        let tree = flattened(snapshot_id, snapshot, layer)?;
        let read_metadata = |path: &str, node: &Node| match node {
            Node::File { object, .. } => read(object).map_err(|e| {
                Error::Invalid(format!("reading `{path}` (object {}): {e}", object.short()))
            }),
            _ => Ok(Vec::new()),
        };
        let listed_at = listed_at(&tree, &snapshot.packages, read_metadata)
            .map_err(|e| (None, ImageProblem::Missing(e.to_string())))?;
        if let ListedAt::Nowhere { found } = listed_at {
            return Err((
                Some(EntryName::Snapshot(*snapshot_id).to_string()),
                ImageProblem::PackagesMismatch {
                    snapshot: snapshot_id.short(),
                    listed: described(&snapshot.packages),
                    found: described(&found),
                },
            ));
        }
    }
    Ok(())
}

/// Every `(object, executable)` the layers' files need, with its size; layers that disagree on the size of
/// an object are refused.
fn needed_objects<'l>(
    layers: impl Iterator<Item = (&'l LayerId, &'l Layer)>,
) -> Result<NeededObjects, Refusal> {
    let mut sizes: HashMap<ObjectId, u64> = HashMap::new();
    let mut needed = BTreeMap::new();
    for (id, layer) in layers {
        for change in layer.changes.values() {
            let Change::Put(Node::File {
                object,
                size,
                executable,
                ..
            }) = change
            else {
                continue;
            };
            let recorded = *sizes.entry(*object).or_insert(*size);
            if recorded != *size {
                return Err((
                    Some(EntryName::Layer(*id).to_string()),
                    ImageProblem::SizeMismatch {
                        found: *size,
                        expected: recorded,
                    },
                ));
            }
            needed.insert((*object, *executable), *size);
        }
    }
    Ok(needed)
}

/// What the stream holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A `.blast` image: manifest, snapshots, layers, objects.
    Image,
    /// A registry layer blob: this layer, then all of its objects.
    LayerBlob(LayerId),
}

enum Flow {
    Continue,
    /// Enough was read (a scan that does not need the objects).
    Stop,
}

/// An object a version 3 image carries, as its layers describe it.
struct CarriedSlot {
    size: u64,
    executable: bool,
    /// What its entry hashed to.
    id: Option<ObjectId>,
}

struct Importer<'a> {
    store: &'a Store,
    /// The file read, and what errors call it.
    file: &'a Path,
    source: ImageSource,
    shape: Shape,
    limits: Limits,
    /// `None` for a scan that stops before the objects.
    staging: Option<&'a Staging<'a>>,
    check_head: &'a mut dyn FnMut(&Snapshot) -> Result<()>,
    meter: Rc<Meter>,
    manifest: Option<Manifest>,
    /// Section of the last entry, and its name.
    section: u8,
    last: String,
    entries: u64,
    /// Bytes of the snapshot and layer entries read so far.
    metadata_bytes: u64,
    snapshots: BTreeMap<SnapshotId, Snapshot>,
    needed_layers: BTreeSet<LayerId>,
    /// Layers read from the image.
    layers: BTreeMap<LayerId, Layer>,
    /// Layers the image left out, read from the store.
    store_layers: BTreeMap<LayerId, Layer>,
    /// `(object, executable)` → size, for every file of every layer of the image's snapshots.
    needed_objects: BTreeMap<(ObjectId, bool), u64>,
    received: BTreeSet<(ObjectId, bool)>,
    /// A version 2 image's objects come in this order (see [`super::object_order`]): each one's rank.
    object_ranks: Option<HashMap<(ObjectId, bool), usize>>,
    /// A version 3 image's layers as carried: for each, its files named by rank.
    carried_ranks: BTreeMap<LayerId, Vec<(String, u32)>>,
    /// A version 3 image's objects by rank, known from the layers, with what each hashed to once read.
    carried: Vec<CarriedSlot>,
    /// How many of them were read (they come in rank order).
    carried_read: usize,
    /// The rank of the last object read.
    last_rank: Option<usize>,
    /// A layer blob's objects so far came in ascending name (how blobs were written before they
    /// followed first use), and in rank.
    blob_by_name: bool,
    blob_by_rank: bool,
    object_bytes: u64,
    new_objects: usize,
}

impl<'a> Importer<'a> {
    fn new(
        store: &'a Store,
        file: &'a Path,
        source: ImageSource,
        shape: Shape,
        limits: Limits,
        staging: Option<&'a Staging<'a>>,
        check_head: &'a mut dyn FnMut(&Snapshot) -> Result<()>,
    ) -> Self {
        // A layer blob starts where an image's layers start: at its one layer.
        let (section, needed_layers) = match shape {
            Shape::Image => (0, BTreeSet::new()),
            Shape::LayerBlob(layer) => (2, BTreeSet::from([layer])),
        };
        Importer {
            store,
            file,
            source,
            shape,
            limits,
            staging,
            check_head,
            meter: Rc::default(),
            manifest: None,
            section,
            last: String::new(),
            entries: 0,
            metadata_bytes: 0,
            snapshots: BTreeMap::new(),
            needed_layers,
            layers: BTreeMap::new(),
            store_layers: BTreeMap::new(),
            needed_objects: BTreeMap::new(),
            received: BTreeSet::new(),
            object_ranks: None,
            carried_ranks: BTreeMap::new(),
            carried: Vec::new(),
            carried_read: 0,
            last_rank: None,
            blob_by_name: true,
            blob_by_rank: true,
            object_bytes: 0,
            new_objects: 0,
        }
    }

    fn fail(&self, entry: Option<String>, problem: ImageProblem) -> Error {
        Error::Image {
            image: self.source.clone(),
            entry,
            problem: Box::new(problem),
        }
    }

    /// A failure of the stream: a limit that tripped, else what zstd or tar said.
    fn stream_error(&self, entry: Option<String>, e: &io::Error) -> Error {
        let problem = match self.meter.tripped.borrow().clone() {
            Some(why) => ImageProblem::TooLarge(why),
            None => ImageProblem::Stream(e.to_string()),
        };
        self.fail(entry, problem)
    }

    /// A version 3 image: objects named by rank, layers naming them so.
    fn carries_objects(&self) -> bool {
        self.shape == Shape::Image
            && self
                .manifest
                .as_ref()
                .is_some_and(|m| m.version >= CARRIED_OBJECTS_VERSION)
    }

    fn manifest(&self) -> Result<&Manifest> {
        self.manifest
            .as_ref()
            .ok_or_else(|| self.fail(None, ImageProblem::NotAnImage))
    }

    fn run(&mut self, progress: &dyn Progress) -> Result<()> {
        let file = File::open(self.file).at("opening image", self.file)?;
        let compressed = CompressedSide {
            file,
            meter: self.meter.clone(),
            progress,
        };
        let mut decoder = zstd::stream::read::Decoder::new(compressed)
            .map_err(|e| self.stream_error(None, &e))?;
        decoder
            .window_log_max(ZSTD_WINDOW_LOG_MAX)
            .map_err(|e| self.stream_error(None, &e))?;
        let mut archive = tar::Archive::new(DecompressedSide {
            inner: decoder,
            meter: self.meter.clone(),
            limits: self.limits,
        });
        let entries = archive
            .entries()
            .map_err(|e| self.stream_error(None, &e))?
            .raw(true);
        for entry in entries {
            let mut entry = entry.map_err(|e| self.stream_error(None, &e))?;
            if let Flow::Stop = self.accept(&mut entry)? {
                return Ok(());
            }
        }
        if self.shape == Shape::Image && self.manifest.is_none() {
            return Err(self.fail(None, ImageProblem::NotAnImage));
        }
        if let Flow::Stop = self.enter_section(4)? {
            return Ok(());
        }
        // After the archive's end: only tar's zero padding, then the end of the zstd frame (whose
        // checksum the decoder verifies on the way).
        let mut rest = archive.into_inner();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = rest
                .read(&mut buf)
                .map_err(|e| self.stream_error(None, &e))?;
            if n == 0 {
                return Ok(());
            }
            if buf[..n].iter().any(|b| *b != 0) {
                return Err(self.fail(None, ImageProblem::TrailingData));
            }
        }
    }

    fn accept<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<Flow> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let here = Some(shown.clone());
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(self.fail(
                here,
                ImageProblem::TooLarge(format!(
                    "it has more than {} entries",
                    self.limits.max_entries
                )),
            ));
        }
        if raw.first() == Some(&b'/') {
            return Err(self.fail(here, ImageProblem::AbsolutePath));
        }
        if raw.split(|b| *b == b'/').any(|part| part == b"..") {
            return Err(self.fail(here, ImageProblem::ParentDir));
        }
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            return Err(self.fail(here, ImageProblem::NotRegularFile(kind_name(kind))));
        }
        let name = std::str::from_utf8(&raw)
            .ok()
            .and_then(EntryName::parse)
            .ok_or_else(|| self.fail(here.clone(), ImageProblem::UnknownName))?;
        let size = entry
            .header()
            .entry_size()
            .map_err(|e| self.stream_error(here.clone(), &e))?;
        if let Shape::LayerBlob(expected) = self.shape {
            match name {
                EntryName::Layer(id) if id != expected => {
                    return Err(self.fail(here, ImageProblem::WrongLayer(expected.to_hex())));
                }
                EntryName::Layer(_) | EntryName::Object(..) | EntryName::CarriedObject(_) => {}
                EntryName::Manifest | EntryName::Snapshot(_) => {
                    return Err(self.fail(here, ImageProblem::NotInLayerBlob));
                }
            }
        } else if self.manifest.is_none() {
            if name != EntryName::Manifest {
                return Err(self.fail(here, ImageProblem::NotAnImage));
            }
            self.read_manifest(entry, size)?;
            self.last = shown;
            return Ok(Flow::Continue);
        }
        // Objects go by id before version 3, by rank from it on.
        let ranked = matches!(name, EntryName::CarriedObject(_));
        if (ranked || matches!(name, EntryName::Object(..))) && ranked != self.carries_objects() {
            return Err(self.fail(here, ImageProblem::UnknownName));
        }
        let duplicate = match name {
            EntryName::Manifest => true,
            EntryName::Snapshot(id) => self.snapshots.contains_key(&id),
            EntryName::Layer(id) => self.layers.contains_key(&id),
            EntryName::Object(id, x) => self.received.contains(&(id, x)),
            EntryName::CarriedObject(rank) => (rank as usize) < self.carried_read,
        };
        if duplicate {
            return Err(self.fail(here, ImageProblem::Duplicate));
        }
        // A version 2 image's objects go by rank, which is known once the layers are read; a layer
        // blob's go by rank or, written before blobs followed first use, by name.
        let by_rank = ranked
            || matches!(name, EntryName::Object(..))
                && match self.shape {
                    Shape::Image => self.manifest()?.version >= 2,
                    Shape::LayerBlob(_) => true,
                };
        let by_name = (name.section(), shown.as_str()) > (self.section, self.last.as_str());
        if !by_name && !by_rank {
            return Err(self.fail(here, ImageProblem::OutOfOrder(self.last.clone())));
        }
        if let Flow::Stop = self.enter_section(name.section())? {
            return Ok(Flow::Stop);
        }
        if let (EntryName::Object(id, x), Some(ranks)) = (name, &self.object_ranks) {
            // Unknown objects are refused by name below.
            if let Some(&rank) = ranks.get(&(id, x)) {
                let in_rank = self.last_rank.is_none_or(|last| rank > last);
                self.last_rank = Some(rank);
                let in_order = match self.shape {
                    Shape::Image => in_rank,
                    Shape::LayerBlob(_) => {
                        self.blob_by_name &= by_name;
                        self.blob_by_rank &= in_rank;
                        self.blob_by_name || self.blob_by_rank
                    }
                };
                if !in_order {
                    return Err(self.fail(here, ImageProblem::OutOfOrder(self.last.clone())));
                }
            }
        }
        if let EntryName::CarriedObject(rank) = name
            && rank as usize != self.carried_read
        {
            return Err(self.fail(here, ImageProblem::OutOfOrder(self.last.clone())));
        }
        match name {
            EntryName::Manifest => {}
            EntryName::Snapshot(id) => self.read_snapshot(entry, id, size, &shown)?,
            EntryName::Layer(id) => self.read_layer(entry, id, size, &shown)?,
            EntryName::Object(id, x) => self.read_object(entry, id, x, size, &shown)?,
            EntryName::CarriedObject(rank) => self.read_carried(entry, rank, size, &shown)?,
        }
        self.last = shown;
        Ok(Flow::Continue)
    }

    /// Finishes the sections before `section`.
    fn enter_section(&mut self, section: u8) -> Result<Flow> {
        while self.section < section {
            match self.section {
                1 => self.finish_snapshots()?,
                2 => self.finish_layers()?,
                3 => self.finish_objects()?,
                _ => {}
            }
            self.section += 1;
            // A version 3 image's layers name their objects only once these are read and hashed.
            if self.section == 3 && self.staging.is_none() && !self.carries_objects() {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }

    /// The whole entry, which must be `size` bytes.
    fn read_all<R: Read>(&self, entry: &mut R, size: u64, name: &str) -> Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry
            .take(size)
            .read_to_end(&mut bytes)
            .map_err(|e| self.stream_error(Some(name.to_owned()), &e))?;
        if (bytes.len() as u64) < size {
            return Err(self.fail(
                Some(name.to_owned()),
                ImageProblem::Truncated {
                    got: bytes.len() as u64,
                    expected: size,
                },
            ));
        }
        Ok(bytes)
    }

    fn too_large(&self, name: &str, what: &str, size: u64, max: u64) -> Result<()> {
        if size > max {
            return Err(self.fail(
                Some(name.to_owned()),
                ImageProblem::TooLarge(format!(
                    "{what} is {size} bytes, more than the {max} an image may use"
                )),
            ));
        }
        Ok(())
    }

    fn count_metadata(&mut self, name: &str, size: u64) -> Result<()> {
        self.metadata_bytes = self.metadata_bytes.saturating_add(size);
        self.too_large(
            name,
            "with it, the snapshots and layers",
            self.metadata_bytes,
            self.limits.max_metadata,
        )
    }

    fn read_manifest<R: Read>(&mut self, entry: &mut R, size: u64) -> Result<()> {
        let here = || Some(MANIFEST_NAME.to_owned());
        self.too_large(
            MANIFEST_NAME,
            "the manifest",
            size,
            self.limits.max_manifest,
        )?;
        let bytes = self.read_all(entry, size, MANIFEST_NAME)?;
        let bad = |detail: String| self.fail(here(), ImageProblem::Manifest(detail));
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if value.get("format").and_then(|f| f.as_str()) != Some(IMAGE_FORMAT) {
            return Err(bad(format!("its `format` is not `{IMAGE_FORMAT}`")));
        }
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(OLDEST_IMAGE_VERSION..=IMAGE_VERSION) => {}
            Some(found) => {
                return Err(self.fail(
                    here(),
                    ImageProblem::UnsupportedVersion {
                        found,
                        oldest: OLDEST_IMAGE_VERSION,
                        newest: IMAGE_VERSION,
                    },
                ));
            }
            None => return Err(bad("its `version` is not a number".into())),
        }
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        let unique: BTreeSet<&SnapshotId> = manifest.snapshots.iter().collect();
        if unique.len() != manifest.snapshots.len() {
            return Err(bad("it lists a snapshot twice".into()));
        }
        if manifest.snapshots.last() != Some(&manifest.head) {
            return Err(bad("its head is not the last of its snapshots".into()));
        }
        let entries = (manifest.snapshots.len() as u64)
            .saturating_add(manifest.layers)
            .saturating_add(manifest.objects);
        self.too_large(
            MANIFEST_NAME,
            "the content it declares",
            manifest.object_bytes,
            self.limits.max_bytes,
        )?;
        if entries >= self.limits.max_entries {
            return Err(self.fail(
                here(),
                ImageProblem::TooLarge(format!(
                    "it declares {entries} entries, more than {}",
                    self.limits.max_entries
                )),
            ));
        }
        self.manifest = Some(manifest);
        Ok(())
    }

    fn read_snapshot<R: Read>(
        &mut self,
        entry: &mut R,
        id: SnapshotId,
        size: u64,
        name: &str,
    ) -> Result<()> {
        let here = || Some(name.to_owned());
        if !self.manifest()?.snapshots.contains(&id) {
            return Err(self.fail(here(), ImageProblem::NotInManifest));
        }
        self.too_large(name, "a snapshot", size, self.limits.max_snapshot)?;
        self.count_metadata(name, size)?;
        let bytes = self.read_all(entry, size, name)?;
        let actual = SnapshotId::of(&bytes);
        if actual != id {
            return Err(self.fail(here(), ImageProblem::HashMismatch(actual.to_hex())));
        }
        let snapshot = Snapshot::decode(&bytes)
            .map_err(|e| self.fail(here(), ImageProblem::Undecodable(e)))?;
        self.snapshots.insert(id, snapshot);
        Ok(())
    }

    fn finish_snapshots(&mut self) -> Result<()> {
        let manifest = self.manifest()?;
        if self.snapshots.len() != manifest.snapshots.len() {
            return Err(self.fail(
                None,
                ImageProblem::CountMismatch {
                    what: "snapshots",
                    declared: manifest.snapshots.len() as u64,
                    found: self.snapshots.len() as u64,
                },
            ));
        }
        let head = manifest.head;
        if let Some(snapshot) = self.snapshots.get(&head) {
            (self.check_head)(snapshot)?;
        }
        self.needed_layers = self
            .snapshots
            .values()
            .flat_map(|s| s.layers.iter().copied())
            .collect();
        Ok(())
    }

    fn read_layer<R: Read>(
        &mut self,
        entry: &mut R,
        id: LayerId,
        size: u64,
        name: &str,
    ) -> Result<()> {
        let here = || Some(name.to_owned());
        if !self.needed_layers.contains(&id) {
            return Err(self.fail(here(), ImageProblem::Unreferenced));
        }
        self.too_large(name, "a layer", size, self.limits.max_layer)?;
        self.count_metadata(name, size)?;
        let bytes = self.read_all(entry, size, name)?;
        if self.carries_objects() {
            // Its hash is checked once its objects are read and their ids put back (`resolve_layers`).
            let carried = CarriedLayer::decode(&bytes)
                .map_err(|e| self.fail(here(), ImageProblem::Undecodable(e)))?;
            self.layers.insert(id, carried.layer);
            self.carried_ranks.insert(id, carried.ranks);
            return Ok(());
        }
        let actual = LayerId::of(&bytes);
        if actual != id {
            return Err(self.fail(here(), ImageProblem::HashMismatch(actual.to_hex())));
        }
        let layer =
            Layer::decode(&bytes).map_err(|e| self.fail(here(), ImageProblem::Undecodable(e)))?;
        self.layers.insert(id, layer);
        Ok(())
    }

    /// What a missing part means: the base of a thin image is absent, or the image is incomplete.
    fn missing(&self, what: String) -> Error {
        match self.manifest.as_ref().and_then(|m| m.base) {
            Some(base) if !self.store.objects().has_snapshot(&base) => self.fail(
                None,
                ImageProblem::NeedsBase {
                    base: base.to_hex(),
                    missing: what,
                },
            ),
            _ => self.fail(None, ImageProblem::Missing(what)),
        }
    }

    fn layer(&self, id: &LayerId) -> Option<&Layer> {
        self.layers.get(id).or_else(|| self.store_layers.get(id))
    }

    fn finish_layers(&mut self) -> Result<()> {
        if let Shape::LayerBlob(id) = self.shape {
            // The whole snapshot is checked once every blob is read; here only this layer's objects.
            let layer = self.layers.get(&id).ok_or_else(|| {
                self.fail(None, ImageProblem::BlobIncomplete(format!("layer {id}")))
            })?;
            self.needed_objects = needed_objects(std::iter::once((&id, layer)))
                .map_err(|(entry, problem)| self.fail(entry, problem))?;
            let ranks = super::first_use([layer]).into_iter().enumerate();
            self.object_ranks = Some(ranks.map(|(i, key)| (key, i)).collect());
            return Ok(());
        }
        let manifest = self.manifest()?;
        if self.layers.len() as u64 != manifest.layers {
            return Err(self.fail(
                None,
                ImageProblem::CountMismatch {
                    what: "layers",
                    declared: manifest.layers,
                    found: self.layers.len() as u64,
                },
            ));
        }
        let absent: Vec<LayerId> = self
            .needed_layers
            .iter()
            .filter(|id| !self.layers.contains_key(id))
            .copied()
            .collect();
        for id in absent {
            if !self.store.objects().layer_path(&id).exists() {
                return Err(self.missing(format!("layer {id}")));
            }
            let layer = self.store.objects().layer(&id)?;
            self.store_layers.insert(id, layer);
        }
        if self.carries_objects() {
            // Sizes and ids are checked once the objects are read and the layers resolved.
            check_trees(
                &self.snapshots,
                &|id| self.layer(id),
                self.limits.max_flatten,
            )
            .map_err(|(entry, problem)| self.fail(entry, problem))?;
            return self.rank_carried_objects();
        }
        let checked = check_snapshots(
            &self.snapshots,
            &|id| self.layer(id),
            self.limits.max_flatten,
        );
        self.needed_objects = checked.map_err(|(entry, problem)| self.fail(entry, problem))?;
        let manifest = self.manifest()?;
        if manifest.version >= 2 {
            let in_order = manifest
                .snapshots
                .iter()
                .filter_map(|id| self.snapshots.get(id));
            let order = super::object_order(in_order, |id| self.layer(id))
                .ok_or_else(|| self.missing("a layer of the image's snapshots".into()))?;
            let ranks = order.into_iter().enumerate().map(|(i, key)| (key, i));
            self.object_ranks = Some(ranks.collect());
        }
        Ok(())
    }

    fn read_object<R: Read>(
        &mut self,
        entry: &mut R,
        id: ObjectId,
        executable: bool,
        size: u64,
        name: &str,
    ) -> Result<()> {
        let here = || Some(name.to_owned());
        let Some(&expected) = self.needed_objects.get(&(id, executable)) else {
            return Err(self.fail(here(), ImageProblem::Unreferenced));
        };
        if size != expected {
            return Err(self.fail(
                here(),
                ImageProblem::SizeMismatch {
                    found: size,
                    expected,
                },
            ));
        }
        let Some(staging) = self.staging else {
            return Ok(());
        };
        let existed = staging.has_object(&id, executable);
        let actual = self.stream_object(entry, Some(&id), executable, size, name)?;
        if actual != id {
            return Err(self.fail(here(), ImageProblem::HashMismatch(actual.to_hex())));
        }
        self.received.insert((id, executable));
        self.object_bytes += size;
        self.new_objects += usize::from(!existed);
        Ok(())
    }

    /// The objects a version 3 image carries, from its layers: ranks are given where a layer first
    /// names them (snapshots in the manifest's order, each one's layers from the bottom, each layer's
    /// files in path order), and every file naming a rank agrees on its size and executable bit.
    fn rank_carried_objects(&mut self) -> Result<()> {
        let manifest = self.manifest()?;
        let mut seen = BTreeSet::new();
        let mut slots: Vec<CarriedSlot> = Vec::new();
        for snapshot in manifest
            .snapshots
            .iter()
            .filter_map(|id| self.snapshots.get(id))
        {
            for layer_id in &snapshot.layers {
                let (Some(ranks), Some(layer)) =
                    (self.carried_ranks.get(layer_id), self.layers.get(layer_id))
                else {
                    continue;
                };
                if !seen.insert(*layer_id) {
                    continue;
                }
                let here = || Some(EntryName::Layer(*layer_id).to_string());
                for (path, rank) in ranks {
                    let Some(Change::Put(Node::File {
                        size, executable, ..
                    })) = layer.changes.get(path)
                    else {
                        continue;
                    };
                    let next = slots.len();
                    match slots.get(*rank as usize) {
                        Some(slot) if (slot.size, slot.executable) != (*size, *executable) => {
                            let shown = |size: u64, executable: bool| {
                                let kind = if executable { ", executable" } else { "" };
                                format!("{size} bytes{kind}")
                            };
                            return Err(self.fail(
                                here(),
                                ImageProblem::RankMismatch {
                                    rank: *rank,
                                    path: path.clone(),
                                    found: shown(*size, *executable),
                                    expected: shown(slot.size, slot.executable),
                                },
                            ));
                        }
                        Some(_) => {}
                        None if *rank as usize == next => slots.push(CarriedSlot {
                            size: *size,
                            executable: *executable,
                            id: None,
                        }),
                        None => {
                            return Err(self
                                .fail(here(), ImageProblem::RankOutOfOrder { rank: *rank, next }));
                        }
                    }
                }
            }
        }
        self.carried = slots;
        Ok(())
    }

    /// Reads the carried object of `rank`: of the size its layers record, staged (or, for a scan, only
    /// hashed) as whatever it hashes to.
    fn read_carried<R: Read>(
        &mut self,
        entry: &mut R,
        rank: u32,
        size: u64,
        name: &str,
    ) -> Result<()> {
        let here = || Some(name.to_owned());
        let Some(slot) = self.carried.get(rank as usize) else {
            return Err(self.fail(here(), ImageProblem::Unreferenced));
        };
        let executable = slot.executable;
        if size != slot.size {
            return Err(self.fail(
                here(),
                ImageProblem::SizeMismatch {
                    found: size,
                    expected: slot.size,
                },
            ));
        }
        let id = self.stream_object(entry, None, executable, size, name)?;
        if !self.received.insert((id, executable)) {
            let first = self
                .carried
                .iter()
                .position(|slot| slot.id == Some(id) && slot.executable == executable)
                .map_or_else(
                    || name.to_owned(),
                    |r| EntryName::CarriedObject(r as u32).to_string(),
                );
            return Err(self.fail(here(), ImageProblem::SameBytesAs(first)));
        }
        self.carried[rank as usize].id = Some(id);
        self.carried_read += 1;
        self.object_bytes += size;
        let existed = self.store.objects().has_object(&id, executable);
        self.new_objects += usize::from(self.staging.is_some() && !existed);
        Ok(())
    }

    /// Reads an object entry of `size` bytes to its end and returns what it hashes to. It is staged when
    /// there is a staging area (as `expected`, or whatever it hashes to; see
    /// [`Staging::put_object_from`]), only hashed otherwise. A short entry is "truncated".
    fn stream_object<R: Read>(
        &self,
        entry: &mut R,
        expected: Option<&ObjectId>,
        executable: bool,
        size: u64,
        name: &str,
    ) -> Result<ObjectId> {
        let here = || Some(name.to_owned());
        let mut tracked = Tracked {
            inner: entry.take(size),
            failed: None,
        };
        let streamed = match self.staging {
            Some(staging) => staging.put_object_from(expected, executable, &mut tracked),
            None => {
                let mut hasher = blake3::Hasher::new();
                io::copy(&mut tracked, &mut hasher)
                    .map(|got| (ObjectId::from(hasher.finalize()), got))
                    .map_err(|e| self.stream_error(here(), &e))
            }
        };
        let (id, got) = match (streamed, tracked.failed) {
            (Ok(done), _) => done,
            (Err(_), Some(read_error)) => return Err(self.stream_error(here(), &read_error)),
            (Err(e), None) => return Err(e),
        };
        if got < size {
            return Err(self.fail(
                here(),
                ImageProblem::Truncated {
                    got,
                    expected: size,
                },
            ));
        }
        Ok(id)
    }

    /// Puts the ids of the carried objects into the layers that name them by rank; each layer must then
    /// hash to its name. Then, as for any image, all layers must agree on each object's size.
    fn resolve_layers(&mut self) -> Result<()> {
        let read = self.carried_read;
        if read < self.carried.len() {
            let name = EntryName::CarriedObject(read as u32);
            return Err(self.fail(
                None,
                ImageProblem::CarriedMissing(format!("object `{name}`")),
            ));
        }
        let ids: Vec<ObjectId> = self.carried.iter().filter_map(|slot| slot.id).collect();
        for (id, ranks) in std::mem::take(&mut self.carried_ranks) {
            let Some(layer) = self.layers.remove(&id) else {
                continue;
            };
            let here = || Some(EntryName::Layer(id).to_string());
            let resolved = CarriedLayer { layer, ranks }.resolve(&ids).ok_or_else(|| {
                self.fail(here(), ImageProblem::Missing("a carried object".into()))
            })?;
            let actual = resolved.id();
            if actual != id {
                return Err(self.fail(here(), ImageProblem::CarriedHashMismatch(actual.to_hex())));
            }
            self.layers.insert(id, resolved);
        }
        let all = self.layers.iter().chain(self.store_layers.iter());
        self.needed_objects =
            needed_objects(all).map_err(|(entry, problem)| self.fail(entry, problem))?;
        Ok(())
    }

    fn finish_objects(&mut self) -> Result<()> {
        if let Shape::LayerBlob(_) = self.shape {
            // A blob carries every object of its layer: none comes from the store.
            if let Some((id, executable)) = self
                .needed_objects
                .keys()
                .find(|key| !self.received.contains(key))
            {
                let name = EntryName::Object(*id, *executable).to_string();
                return Err(self.fail(None, ImageProblem::BlobIncomplete(format!("`{name}`"))));
            }
            return Ok(());
        }
        let manifest = self.manifest()?;
        for (what, declared, found) in [
            ("objects", manifest.objects, self.received.len() as u64),
            ("object bytes", manifest.object_bytes, self.object_bytes),
        ] {
            if declared != found {
                return Err(self.fail(
                    None,
                    ImageProblem::CountMismatch {
                        what,
                        declared,
                        found,
                    },
                ));
            }
        }
        if self.carries_objects() {
            self.resolve_layers()?;
        }
        for (&(id, executable), &size) in &self.needed_objects {
            if self.received.contains(&(id, executable)) {
                continue;
            }
            let name = EntryName::Object(id, executable).to_string();
            let path = self.store.objects().object_path(&id, executable);
            match path.symlink_metadata() {
                Ok(meta) if meta.len() == size => {}
                Ok(meta) => {
                    return Err(self.fail(
                        Some(name),
                        ImageProblem::SizeMismatch {
                            found: meta.len(),
                            expected: size,
                        },
                    ));
                }
                Err(_) => return Err(self.missing(format!("object `{name}`"))),
            }
        }
        if let Some(staging) = self.staging {
            check_packages(&self.snapshots, &|id| self.layer(id), &|id| {
                staging.read_object(id)
            })
            .map_err(|(entry, problem)| self.fail(entry, problem))?;
        }
        Ok(())
    }
}

fn kind_name(kind: tar::EntryType) -> &'static str {
    use tar::EntryType as T;
    match kind {
        T::Symlink => "symlink",
        T::Link => "hard link",
        T::Char => "character device",
        T::Block => "block device",
        T::Fifo => "fifo",
        T::Directory => "directory",
        T::Continuous => "contiguous file",
        T::GNULongName | T::GNULongLink => "GNU long name",
        T::GNUSparse => "sparse file",
        T::XHeader | T::XGlobalHeader => "pax header",
        _ => "non-regular",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::NoProgress;
    use store_format::PythonTag;

    /// An image with one snapshot that lists `repeats` times a layer of three directories.
    fn image(repeats: usize) -> (Vec<u8>, SnapshotId) {
        let mut layer = Layer::default();
        for dir in ["a", "a/b", "c"] {
            layer.changes.insert(dir.into(), Change::Put(Node::Dir));
        }
        let snapshot = Snapshot {
            python: PythonTag {
                implementation: "cpython".into(),
                version: "3.11.7".into(),
                soabi: String::new(),
                platform: "linux-x86_64".into(),
            },
            layers: vec![layer.id(); repeats],
            packages: Vec::new(),
        };
        let manifest = Manifest {
            format: IMAGE_FORMAT.into(),
            version: IMAGE_VERSION,
            head: snapshot.id(),
            snapshots: vec![snapshot.id()],
            base: None,
            layers: 1,
            objects: 0,
            object_bytes: 0,
        };
        let mut tar_bytes = Vec::new();
        let mut builder = tar::Builder::new(&mut tar_bytes);
        for (name, bytes) in [
            (EntryName::Manifest, serde_json::to_vec(&manifest).unwrap()),
            (EntryName::Snapshot(snapshot.id()), snapshot.encode()),
            (EntryName::Layer(layer.id()), layer.encode()),
        ] {
            let mut header = tar::Header::new_ustar();
            header.set_path(name.to_string()).unwrap();
            header.set_size(bytes.len() as u64);
            header.set_cksum();
            builder.append(&header, &bytes[..]).unwrap();
        }
        builder.finish().unwrap();
        drop(builder);
        (zstd::encode_all(&tar_bytes[..], 3).unwrap(), snapshot.id())
    }

    /// Imports `bytes` into a fresh store; returns the result and the snapshots the store then holds.
    fn import_with(limits: Limits, bytes: &[u8]) -> (Result<ImportOutcome>, Vec<SnapshotId>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("home")).unwrap();
        let file = dir.path().join("x.blast");
        std::fs::write(&file, bytes).unwrap();
        let result = import_image(&store, &file, &limits, &NoProgress, &mut |_| Ok(()));
        (result, store.objects().snapshot_ids().unwrap())
    }

    #[test]
    fn flattening_work_and_metadata_in_memory_are_bounded() {
        let (bytes, id) = image(50);
        let (ok, stored) = import_with(Limits::default(), &bytes);
        assert_eq!(ok.unwrap().manifest.head, id);
        assert_eq!(stored, [id]);

        let few = Limits {
            max_flatten: 100,
            ..Limits::default()
        };
        let (err, stored) = import_with(few, &bytes);
        let err = err.unwrap_err().to_string();
        assert!(
            err.contains("apply 150 layer entries, more than 100"),
            "{err}"
        );
        assert!(stored.is_empty());

        let small = Limits {
            max_metadata: 100,
            ..Limits::default()
        };
        let (err, stored) = import_with(small, &image(10).0);
        let err = err.unwrap_err().to_string();
        assert!(err.contains("with it, the snapshots and layers"), "{err}");
        assert!(stored.is_empty());
    }
}
