//! Writing an image: the snapshots of a [`Plan`], the layers they use and the objects those layers name,
//! minus what a [`Base`] already holds, as one deterministic tar + zstd stream. The file is written beside
//! its destination under a temporary name and renamed into place once complete and synced.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use store_format::{Change, Layer, LayerId, Node, ObjectId, Snapshot, SnapshotId};

use super::{
    ENTRY_MODE, EntryName, IMAGE_FORMAT, IMAGE_VERSION, Limits, Manifest, Progress, ZSTD_LEVEL,
};
use crate::error::{Error, IoContext, Result};
use crate::store::Store;
use crate::tree::Tree;

/// What an image carries.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Oldest first; the last is the head.
    pub snapshots: Vec<SnapshotId>,
    /// Leave out what this base holds (a thin image).
    pub base: Option<Base>,
}

/// What the receiver of a thin image is known to have: every layer and object of the base snapshots.
#[derive(Debug, Clone)]
pub struct Base {
    /// Recorded in the manifest, so that an import without it can say what it needs.
    pub snapshot: SnapshotId,
    pub layers: HashSet<LayerId>,
    pub objects: HashSet<(ObjectId, bool)>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    pub manifest: Manifest,
    /// Layers and objects of the snapshots that the base made unnecessary.
    pub layers_omitted: usize,
    pub objects_omitted: usize,
    /// Size of the image file.
    pub file_bytes: u64,
    /// Size of its archive, decompressed.
    pub archive_bytes: u64,
}

/// The base of a thin image from a snapshot of this store.
pub fn base_from_store(store: &Store, id: &SnapshotId) -> Result<Base> {
    let snapshot = store.snapshot(id)?;
    let mut layers = BTreeMap::new();
    for layer in &snapshot.layers {
        layers.insert(*layer, store.objects().layer(layer)?);
    }
    Ok(base_of(*id, &layers))
}

/// The base of a thin image from an image file: whoever imported it holds all of its snapshots. The
/// file is verified like an import (up to its objects, which are not needed here).
pub fn base_from_image(
    store: &Store,
    path: &Path,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<Base> {
    let (manifest, layers) = super::read::scan_layers(store, path, limits, progress)?;
    Ok(base_of(manifest.head, &layers))
}

fn base_of(snapshot: SnapshotId, layers: &BTreeMap<LayerId, Layer>) -> Base {
    Base {
        snapshot,
        layers: layers.keys().copied().collect(),
        objects: file_objects(layers.values()).into_keys().collect(),
    }
}

/// Every `(object, executable)` that the layers' files need, with its size.
pub(crate) fn file_objects<'a>(
    layers: impl Iterator<Item = &'a Layer>,
) -> BTreeMap<(ObjectId, bool), u64> {
    let mut out = BTreeMap::new();
    for layer in layers {
        for change in layer.changes.values() {
            if let Change::Put(Node::File {
                object,
                size,
                executable,
                ..
            }) = change
            {
                out.insert((*object, *executable), *size);
            }
        }
    }
    out
}

/// Reads snapshot `id` and adds its layers to `layers`, refusing what no import would accept: a layer
/// that does not apply to those below it, a symlink that leads out of the environment.
pub(super) fn exportable(
    store: &Store,
    id: &SnapshotId,
    layers: &mut BTreeMap<LayerId, Layer>,
) -> Result<Snapshot> {
    let snapshot = store.snapshot(id)?;
    let mut tree = Tree::default();
    for layer_id in &snapshot.layers {
        if !layers.contains_key(layer_id) {
            layers.insert(*layer_id, store.objects().layer(layer_id)?);
        }
        let layer = &layers[layer_id];
        tree.apply(layer).map_err(|detail| {
            Error::Invalid(format!(
                "layer {} of snapshot {} does not apply to the layers below it: {detail}",
                layer_id.short(),
                id.short()
            ))
        })?;
    }
    if let Some((path, target, why)) = super::escaping_symlink(&tree) {
        return Err(Error::Invalid(format!(
            "snapshot {} cannot travel (export or push): symlink `{path}` -> `{target}` {why}; \
             no import or pull would accept it (replace it with a link inside the environment, or a \
             copy)",
            id.short()
        )));
    }
    Ok(snapshot)
}

/// Writes the image of `plan` to `out`.
pub fn write_image(
    store: &Store,
    out: &Path,
    plan: &Plan,
    progress: &dyn Progress,
) -> Result<Written> {
    let out = &crate::fsutil::output_file(out)?;
    let head = *plan
        .snapshots
        .last()
        .ok_or_else(|| Error::Invalid("an image needs at least one snapshot".into()))?;
    let mut snapshots = BTreeMap::new();
    let mut in_order = Vec::with_capacity(plan.snapshots.len());
    let mut layers: BTreeMap<LayerId, Layer> = BTreeMap::new();
    for id in &plan.snapshots {
        let snapshot = exportable(store, id, &mut layers)?;
        snapshots.insert(*id, snapshot.encode());
        in_order.push(snapshot);
    }
    let objects = file_objects(layers.values());
    let order = super::object_order(&in_order, |id| layers.get(id))
        .ok_or_else(|| Error::Invalid("internal: a snapshot's layer was not read".into()))?;
    let (omit_layers, omit_objects) = match &plan.base {
        Some(base) => (&base.layers, &base.objects),
        None => (&HashSet::new(), &HashSet::new()),
    };
    let layers_out: Vec<(&LayerId, &Layer)> = layers
        .iter()
        .filter(|(id, _)| !omit_layers.contains(id))
        .collect();
    let objects_out: Vec<(ObjectId, bool, u64)> = order
        .into_iter()
        .filter(|key| !omit_objects.contains(key))
        .filter_map(|(id, exe)| objects.get(&(id, exe)).map(|&size| (id, exe, size)))
        .collect();
    let manifest = Manifest {
        format: IMAGE_FORMAT.to_owned(),
        version: IMAGE_VERSION,
        head,
        snapshots: plan.snapshots.clone(),
        base: plan.base.as_ref().map(|b| b.snapshot),
        layers: layers_out.len() as u64,
        objects: objects_out.len() as u64,
        object_bytes: objects_out.iter().map(|(_, _, size)| size).sum(),
    };
    let tmp = temporary_beside(out)?;
    // Ctrl-C is noted and obeyed between objects, so that the partial file goes and the user hears of
    // it (a second one ends blast at once; the next export to `out` removes what is left).
    let latch = crate::sandbox::Latch::set();
    let interrupted = || match latch.received() {
        Some(signal) => Err(Error::InterruptedWrite {
            path: out.clone(),
            signal,
        }),
        None => Ok(()),
    };
    let written = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .at("creating image", out)?;
        crate::fsutil::keep_permissions_of(out, &file).at("creating image", out)?;
        let mut archive = start_archive(BufWriter::new(file), &tmp)?;
        let manifest_bytes = serde_json::to_vec(&manifest)
            .map_err(|e| Error::Invalid(format!("could not encode the image manifest: {e}")))?;
        append(&mut archive, &EntryName::Manifest, &manifest_bytes, &tmp)?;
        let mut archive_bytes = entry_bytes(manifest_bytes.len() as u64) + END_OF_ARCHIVE;
        for (id, bytes) in &snapshots {
            append(&mut archive, &EntryName::Snapshot(*id), bytes, &tmp)?;
            archive_bytes += entry_bytes(bytes.len() as u64);
        }
        // Every object the image carries goes by its rank in `objects_out`, in the layers as in its name.
        let ranks: HashMap<(ObjectId, bool), u32> = objects_out
            .iter()
            .zip(0u32..)
            .map(|((id, executable, _), rank)| ((*id, *executable), rank))
            .collect();
        let rank = |id: &ObjectId, executable: bool| ranks.get(&(*id, executable)).copied();
        for (id, layer) in &layers_out {
            let carried = layer.encode_carried(&rank);
            append(&mut archive, &EntryName::Layer(**id), &carried, &tmp)?;
            archive_bytes += entry_bytes(carried.len() as u64);
        }
        progress.begin("exporting", Some(manifest.object_bytes));
        crate::crash::point("image-objects");
        for ((id, executable, size), rank) in objects_out.iter().zip(0u32..) {
            let object = StoredObject {
                id: *id,
                executable: *executable,
                size: *size,
            };
            let name = EntryName::CarriedObject(rank);
            interrupted()?;
            append_object(store, &mut archive, &name, &object, progress, &tmp)?;
            archive_bytes += entry_bytes(*size);
        }
        progress.end();
        let file = finish_archive(archive, &tmp)?
            .into_inner()
            .map_err(|e| e.into_error())
            .at("writing image", &tmp)?;
        file.sync_all().at("syncing image", &tmp)?;
        let file_bytes = file.metadata().at("inspecting image", &tmp)?.len();
        interrupted()?;
        fs::rename(&tmp, out).at("moving image into place at", out)?;
        Ok((file_bytes, archive_bytes))
    })();
    match written {
        Ok((file_bytes, archive_bytes)) => Ok(Written {
            manifest,
            layers_omitted: layers.len() - layers_out.len(),
            objects_omitted: objects.len() - objects_out.len(),
            file_bytes,
            archive_bytes,
        }),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// `.NAME.blast-tmp-PID` beside `out`. Those an earlier export to `out` left when it was killed (its
/// process is gone) are removed.
fn temporary_beside(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Invalid(format!("`{}` is not a file name", out.display())))?;
    let prefix = format!(".{name}.blast-tmp-");
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty());
    for entry in fs::read_dir(dir.unwrap_or(Path::new(".")))
        .into_iter()
        .flatten()
        .flatten()
    {
        let abandoned = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if abandoned {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(out.with_file_name(format!("{prefix}{}", std::process::id())))
}

/// The archive every image and registry layer blob is: ustar entries (see [`header`]) in a zstd stream at
/// [`ZSTD_LEVEL`], single-threaded, with the content checksum, so the same entries give the same bytes.
pub(super) fn start_archive<W: Write>(
    out: W,
    path: &Path,
) -> Result<tar::Builder<zstd::stream::write::Encoder<'static, W>>> {
    let mut encoder =
        zstd::stream::write::Encoder::new(out, ZSTD_LEVEL).at("starting compression of", path)?;
    encoder
        .include_checksum(true)
        .at("starting compression of", path)?;
    Ok(tar::Builder::new(encoder))
}

/// The two zero blocks that end an archive.
pub(super) const END_OF_ARCHIVE: u64 = 1024;

/// What an entry of `size` bytes takes in an archive: its header block, its data in whole blocks.
pub(super) fn entry_bytes(size: u64) -> u64 {
    512 + size.div_ceil(512) * 512
}

/// Ends the archive (two zero blocks) and the zstd frame; returns the writer underneath.
pub(super) fn finish_archive<W: Write>(
    archive: tar::Builder<zstd::stream::write::Encoder<'static, W>>,
    path: &Path,
) -> Result<W> {
    let encoder = archive.into_inner().at("writing", path)?;
    encoder.finish().at("writing", path)
}

/// The one header every entry gets: ustar, regular file, mode 0444, owner 0:0 with empty names, mtime 0.
fn header(name: &EntryName, size: u64) -> io::Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    header.set_path(name.to_string())?;
    header.set_size(size);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(ENTRY_MODE);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_username("")?;
    header.set_groupname("")?;
    header.set_device_major(0)?;
    header.set_device_minor(0)?;
    header.set_cksum();
    Ok(header)
}

pub(super) fn append<W: Write>(
    archive: &mut tar::Builder<W>,
    name: &EntryName,
    bytes: &[u8],
    image: &Path,
) -> Result<()> {
    let header = header(name, bytes.len() as u64).at("writing image", image)?;
    archive.append(&header, bytes).at("writing image", image)
}

/// An object of the store as a layer names it.
pub(super) struct StoredObject {
    pub(super) id: ObjectId,
    pub(super) executable: bool,
    pub(super) size: u64,
}

/// Streams an object from the store into the archive as entry `name`, checking its size and hash on the
/// way: a corrupt store object must not travel.
pub(super) fn append_object<W: Write>(
    store: &Store,
    archive: &mut tar::Builder<W>,
    name: &EntryName,
    object: &StoredObject,
    progress: &dyn Progress,
    image: &Path,
) -> Result<()> {
    let StoredObject {
        id,
        executable,
        size,
    } = *object;
    let corrupt = |what: String| {
        Error::Invalid(format!(
            "object {} in the store {what}: run `blast verify`",
            id.short()
        ))
    };
    let path = store
        .objects()
        .existing_object_path(&id, executable)
        .ok_or_else(|| corrupt("is missing".into()))?;
    let file = fs::File::open(&path).at("reading object", &path)?;
    let len = file.metadata().at("inspecting object", &path)?.len();
    if len != size {
        return Err(corrupt(format!("is {len} bytes, its layers record {size}")));
    }
    let mut reader = HashingReader {
        inner: file.take(size),
        hasher: blake3::Hasher::new(),
        count: 0,
        progress,
    };
    let header = header(name, size).at("writing image", image)?;
    archive
        .append(&header, &mut reader)
        .at("writing image", image)?;
    if reader.count != size || ObjectId::from(reader.hasher.finalize()) != id {
        return Err(corrupt("does not match its hash".into()));
    }
    Ok(())
}

/// Hashes and counts what passes through, and reports it as progress.
struct HashingReader<'p, R> {
    inner: R,
    hasher: blake3::Hasher,
    count: u64,
    progress: &'p dyn Progress,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        self.progress.advance(n as u64);
        Ok(n)
    }
}
