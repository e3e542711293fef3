//! A snapshot in an OCI registry: its layout and its push and pull (the HTTP side is
//! [`crate::registry`]).
//!
//! The image is an OCI image manifest with blast's artifact type. Its config blob is the snapshot manifest
//! (JSON: the snapshot id, its Python, its layer ids, its packages), from which the snapshot's exact encoding
//! is rebuilt and checked against its id. Each blast layer is one blob: a tar + zstd stream written with the
//! `.blast` writer's building blocks, holding the layer and every object it names, so the same layer gives
//! the same blob, and the same digest, from any store; a registry stores a layer shared by many snapshots
//! (the venv `blast create` writes, for one) once.
//!
//! Push builds the blobs, uploads those the registry lacks and puts the manifest. Pull trusts nothing: the
//! manifest's types, every blob's sha256 digest and size, the config's snapshot id, and each layer blob
//! through the `.blast` reader (names, types, order, sizes, BLAKE3 hashes); layers the store already holds
//! are not downloaded. Everything is staged and committed only once the whole snapshot checked out
//! (its layers apply, its symlinks stay inside). SPEC.md §21 is the byte-level description.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use store_format::{Layer, LayerId, Package, PythonTag, Snapshot, SnapshotId};

use super::read::{self, check_packages, check_snapshots};
use super::write::{self, StoredObject, file_objects};
use super::{EntryName, Limits, NoProgress, Progress};
use crate::error::{Error, ImageProblem, ImageSource, IoContext, Result};
use crate::objects::Staging;
use crate::registry::Client;
use crate::store::Store;

/// The manifest's media type: a plain OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// What a pull asks for: blast's manifest first, then what other images are (an image index, Docker's
/// manifest and manifest list), which the pull refuses by name.
const ACCEPTED_MANIFESTS: &[&str] = &[
    MANIFEST_MEDIA_TYPE,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
/// The manifest's `artifactType`: what tells a blast image from a container image.
pub const ARTIFACT_TYPE: &str = "application/vnd.blast.snapshot.v1";
/// The config blob: the snapshot manifest.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.blast.snapshot.config.v1+json";
/// A layer blob.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.blast.layer.v1.tar+zstd";
/// Annotation of a layer descriptor: the blast layer id (64 hex digits) its blob holds.
pub const LAYER_ANNOTATION: &str = "vnd.blast.layer.id";
/// Annotation of the manifest: the snapshot id, for whoever inspects the manifest alone.
pub const SNAPSHOT_ANNOTATION: &str = "vnd.blast.snapshot.id";
/// The config's `format` and `version`.
pub const CONFIG_FORMAT: &str = "blast-snapshot";
pub const CONFIG_VERSION: u64 = 1;
/// The largest config blob a pull reads (a snapshot entry of an image may be 16 MiB; hex and JSON double it).
const MAX_CONFIG_BYTES: u64 = 32 << 20;

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<64 hex>`.
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image manifest, with the fields blast writes in this order (compact JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The config blob: everything the snapshot's encoding holds, readable by anyone.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotConfig {
    format: String,
    version: u64,
    snapshot: SnapshotId,
    python: PythonTag,
    layers: Vec<LayerId>,
    packages: Vec<Package>,
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    hex_digest(Sha256::digest(bytes).as_slice())
}

fn hex_digest(hash: &[u8]) -> String {
    let mut out = String::from("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// `sha256:` and 64 lowercase hex digits: the only digests blast reads or writes.
fn valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// Hashes (sha256) and counts what is written through it.
struct Sha256Writer<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Sha256Writer<W> {
    fn new(inner: W) -> Self {
        Sha256Writer {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    fn digest(&self) -> String {
        hex_digest(self.hasher.clone().finalize().as_slice())
    }
}

impl<W: Write> Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The config blob of snapshot `id`.
fn config_bytes(id: &SnapshotId, snapshot: &Snapshot) -> Result<Vec<u8>> {
    let config = SnapshotConfig {
        format: CONFIG_FORMAT.to_owned(),
        version: CONFIG_VERSION,
        snapshot: *id,
        python: snapshot.python.clone(),
        layers: snapshot.layers.clone(),
        packages: snapshot.packages.clone(),
    };
    serde_json::to_vec(&config)
        .map_err(|e| Error::Invalid(format!("could not encode the snapshot manifest: {e}")))
}

/// What `blast pull` checks of a manifest (as the registry served it) and a config blob before it
/// downloads any layer: the layer ids the manifest names and the snapshot the config describes. The
/// fuzz target `registry_documents` gives it arbitrary bytes.
pub fn check_documents(
    manifest: &[u8],
    config: &[u8],
) -> Result<(Vec<LayerId>, SnapshotId), String> {
    let (manifest, layers) = parse_manifest(manifest, None)?;
    let (id, _) = parse_config(config)?;
    snapshot_annotation_agrees(&manifest, &id)?;
    Ok((layers, id))
}

/// The manifest's snapshot annotation, where it has one, names the snapshot its config describes
/// (found by exploratory testing: a manifest that named another was pulled without a word).
fn snapshot_annotation_agrees(manifest: &ImageManifest, id: &SnapshotId) -> Result<(), String> {
    match manifest.annotations.get(SNAPSHOT_ANNOTATION) {
        Some(named) if *named != id.to_hex() => Err(format!(
            "its `{SNAPSHOT_ANNOTATION}` annotation names `{named}`, but its config describes snapshot {id}"
        )),
        _ => Ok(()),
    }
}

/// The snapshot a config blob describes: its encoding is rebuilt from the fields, must decode (so it is
/// canonical: sorted unique packages, …) and must hash to the id the config names.
fn parse_config(bytes: &[u8]) -> Result<(SnapshotId, Snapshot), String> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("the snapshot manifest is not JSON: {e}"))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(CONFIG_FORMAT) {
        return Err(format!(
            "the config blob's `format` is not `{CONFIG_FORMAT}`"
        ));
    }
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(CONFIG_VERSION) => {}
        Some(found) => {
            return Err(format!(
                "snapshot manifest version {found}; this blast reads version {CONFIG_VERSION}: upgrade blast"
            ));
        }
        None => return Err("the snapshot manifest's `version` is not a number".into()),
    }
    let config: SnapshotConfig = serde_json::from_value(value)
        .map_err(|e| format!("the snapshot manifest is invalid: {e}"))?;
    let snapshot = Snapshot {
        python: config.python,
        layers: config.layers,
        packages: config.packages,
    };
    let encoded = snapshot.encode();
    let snapshot = Snapshot::decode(&encoded)
        .map_err(|e| format!("the snapshot it describes does not decode: {e}"))?;
    let actual = SnapshotId::of(&encoded);
    if actual != config.snapshot {
        return Err(format!(
            "the snapshot it describes hashes to {actual}, not to the id it names ({})",
            config.snapshot
        ));
    }
    Ok((actual, snapshot))
}

/// Checks that a manifest is a blast image this blast reads; returns it with the layer id of each of its
/// layer descriptors.
fn parse_manifest(
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<(ImageManifest, Vec<LayerId>), String> {
    if let Some(served) = content_type {
        let served = served.split(';').next().unwrap_or_default().trim();
        if served != MANIFEST_MEDIA_TYPE {
            let what = match served {
                "application/vnd.oci.image.index.v1+json"
                | "application/vnd.docker.distribution.manifest.list.v2+json" => {
                    "an image index (images for several platforms)"
                }
                "application/vnd.docker.distribution.manifest.v2+json" => "a Docker image",
                _ => "not an OCI image manifest",
            };
            return Err(format!(
                "the registry serves it as `{served}`, {what}: it is not a blast image (was it pushed \
                 by `blast push`?)"
            ));
        }
    }
    let manifest: ImageManifest = serde_json::from_slice(bytes)
        .map_err(|e| format!("its manifest is not an OCI image manifest: {e}"))?;
    if manifest.schema_version != 2 {
        return Err(format!(
            "its manifest has schemaVersion {}, not 2",
            manifest.schema_version
        ));
    }
    if let Some(media_type) = &manifest.media_type
        && media_type != MANIFEST_MEDIA_TYPE
    {
        return Err(format!(
            "its manifest's mediaType is `{media_type}`, not `{MANIFEST_MEDIA_TYPE}`"
        ));
    }
    if manifest.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(format!(
            "its artifactType is {}, not `{ARTIFACT_TYPE}`: it is not a blast image (was it pushed by `blast push`?)",
            manifest
                .artifact_type
                .as_deref()
                .map_or_else(|| "missing".to_owned(), |t| format!("`{t}`"))
        ));
    }
    let check = |d: &Descriptor, media_type: &str, what: &str| {
        if d.media_type != media_type {
            return Err(format!(
                "its {what} has mediaType `{}`, not `{media_type}`",
                d.media_type
            ));
        }
        if !valid_digest(&d.digest) {
            return Err(format!(
                "its {what} has digest `{}`, not sha256:<64 lowercase hex digits>",
                d.digest
            ));
        }
        Ok(())
    };
    check(&manifest.config, CONFIG_MEDIA_TYPE, "config")?;
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for (i, d) in manifest.layers.iter().enumerate() {
        check(d, LAYER_MEDIA_TYPE, &format!("layer {i}"))?;
        let id = d
            .annotations
            .get(LAYER_ANNOTATION)
            .filter(|hex| {
                hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            })
            .and_then(|hex| hex.parse().ok())
            .ok_or_else(|| {
                format!(
                    "its layer {i} lacks a `{LAYER_ANNOTATION}` annotation of 64 lowercase hex digits"
                )
            })?;
        layers.push(id);
    }
    Ok((manifest, layers))
}

/// Writes the blob of `layer` to `path`: the layer entry, then every object it names, with the `.blast`
/// writer's headers and compression. Returns its descriptor and the size of its archive, decompressed.
fn write_layer_blob(
    store: &Store,
    id: &LayerId,
    layer: &Layer,
    path: &Path,
    progress: &dyn Progress,
) -> Result<(Descriptor, u64)> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .at("creating blob", path)?;
    let mut archive = write::start_archive(Sha256Writer::new(BufWriter::new(file)), path)?;
    let encoded = layer.encode();
    write::append(&mut archive, &EntryName::Layer(*id), &encoded, path)?;
    let mut archive_bytes = write::entry_bytes(encoded.len() as u64) + write::END_OF_ARCHIVE;
    let sizes = file_objects(std::iter::once(layer));
    // In the order the layer's files first name them, so a package's files compress together.
    for (id, executable) in super::first_use([layer]) {
        let object = StoredObject {
            id,
            executable,
            size: sizes[&(id, executable)],
        };
        let name = EntryName::Object(id, executable);
        write::append_object(store, &mut archive, &name, &object, progress, path)?;
        archive_bytes += write::entry_bytes(object.size);
    }
    let mut hashed = write::finish_archive(archive, path)?;
    hashed.flush().at("writing blob", path)?;
    let descriptor = Descriptor {
        media_type: LAYER_MEDIA_TYPE.to_owned(),
        digest: hashed.digest(),
        size: hashed.count,
        annotations: BTreeMap::from([(LAYER_ANNOTATION.to_owned(), id.to_hex())]),
    };
    Ok((descriptor, archive_bytes))
}

/// The descriptors of the blobs earlier pushes packed, by layer (`blob-descriptors/` in the store,
/// SPEC §21): a layer's blob is the same bytes from any store, so its digest, size and archive size
/// are known without packing it again. A cache: what cannot be read is packed again.
struct BlobDescriptors<'a>(&'a Store);

impl<'a> BlobDescriptors<'a> {
    fn of(store: &'a Store) -> Self {
        BlobDescriptors(store)
    }

    fn path(&self, id: &LayerId) -> std::path::PathBuf {
        self.0.home().join(BLOB_DESCRIPTORS).join(format!(
            "{}.v{}",
            id.to_hex(),
            super::IMAGE_VERSION
        ))
    }

    /// The blob's descriptor and its archive's size, decompressed.
    fn get(&self, id: &LayerId) -> Option<(Descriptor, u64)> {
        let text = fs::read_to_string(self.path(id)).ok()?;
        let mut words = text.split_whitespace();
        let (digest, size, archive) = (words.next()?, words.next()?, words.next()?);
        let valid = digest
            .strip_prefix("sha256:")
            .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        valid.then_some(())?;
        Some((
            Descriptor {
                media_type: LAYER_MEDIA_TYPE.to_owned(),
                digest: digest.to_owned(),
                size: size.parse().ok()?,
                annotations: BTreeMap::from([(LAYER_ANNOTATION.to_owned(), id.to_hex())]),
            },
            archive.parse().ok()?,
        ))
    }

    /// Best effort: a descriptor not remembered only costs packing again.
    fn remember(&self, id: &LayerId, descriptor: &Descriptor, archive_bytes: u64) {
        let path = self.path(id);
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        let text = format!(
            "{} {} {archive_bytes}\n",
            descriptor.digest, descriptor.size
        );
        let written = path
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| fs::write(&tmp, text))
            .and_then(|()| fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
}

/// The directory of [`BlobDescriptors`] in the store.
pub const BLOB_DESCRIPTORS: &str = "blob-descriptors";

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub snapshot: Snapshot,
    /// `sha256:` of the manifest as sent.
    pub manifest_digest: String,
    /// Distinct layers of the snapshot, each one blob.
    pub layers: usize,
    /// Layers packed into their blobs: those no earlier push of this store packed, or that the
    /// registry lacked.
    pub layers_packed: usize,
    /// Blobs (the config and the layers) sent, and those the registry had.
    pub blobs_uploaded: usize,
    pub bytes_uploaded: u64,
    pub blobs_skipped: usize,
    pub bytes_skipped: u64,
    /// The `BLAST_IMAGE_MAX_BYTES` a pull needs, when a layer blob decompresses to so many bytes per
    /// byte of it that a pull takes it for a decompression bomb.
    pub pull_needs_max_bytes: Option<u64>,
}

/// Pushes snapshot `id` to the client's repository and tag.
pub fn push_image(
    store: &Store,
    client: &Client,
    id: &SnapshotId,
    progress: &dyn Progress,
) -> Result<Pushed> {
    let mut layers = BTreeMap::new();
    let snapshot = write::exportable(store, id, &mut layers)?;
    // A scratch area for the blobs: never committed, removed when dropped (or by the next command).
    let scratch = store.objects().begin()?;
    // A layer an earlier push packed has its blob's descriptor remembered: it is packed again only
    // should the registry lack it (found by exploratory testing: a push that uploaded nothing packed
    // every layer first, 2.9 s for 16 MiB).
    let known: BTreeMap<LayerId, (Descriptor, u64)> = layers
        .keys()
        .filter_map(|id| Some((*id, BlobDescriptors::of(store).get(id)?)))
        .collect();
    let object_bytes = file_objects(
        layers
            .iter()
            .filter(|(id, _)| !known.contains_key(id))
            .map(|(_, l)| l),
    )
    .values()
    .sum();
    progress.begin("packing", Some(object_bytes));
    let mut blobs = BTreeMap::new();
    let (mut bombs, mut all_archives, mut all_blobs) = (false, 0u64, 0u64);
    let mut layers_packed = 0;
    for (n, (layer_id, layer)) in layers.iter().enumerate() {
        let path = scratch.dir().join(format!("blob-{n}"));
        let ((descriptor, archive_bytes), packed) = match known.get(layer_id) {
            Some(known) => (known.clone(), false),
            None => {
                layers_packed += 1;
                let packed = write_layer_blob(store, layer_id, layer, &path, progress)?;
                BlobDescriptors::of(store).remember(layer_id, &packed.0, packed.1);
                (packed, true)
            }
        };
        bombs |= Limits::default().ratio_exceeded(archive_bytes, descriptor.size);
        all_archives = all_archives.saturating_add(archive_bytes);
        all_blobs = all_blobs.saturating_add(descriptor.size);
        blobs.insert(*layer_id, (descriptor, path, packed));
    }
    progress.end();
    // The variable replaces the ratio check, and bounds each blob's archive and all blobs together.
    let pull_needs_max_bytes = bombs.then_some(all_archives.max(all_blobs));
    let config = config_bytes(id, &snapshot)?;
    let config_path = scratch.dir().join("config");
    fs::write(&config_path, &config).at("writing", &config_path)?;
    let config = Descriptor {
        media_type: CONFIG_MEDIA_TYPE.to_owned(),
        digest: sha256_digest(&config),
        size: config.len() as u64,
        annotations: BTreeMap::new(),
    };
    let mut uploads = Vec::new();
    let (mut blobs_skipped, mut bytes_skipped) = (0, 0);
    if client.has_blob(&config.digest)? {
        blobs_skipped += 1;
        bytes_skipped += config.size;
    } else {
        uploads.push((config.clone(), config_path));
    }
    for (layer_id, (descriptor, path, packed)) in &mut blobs {
        if client.has_blob(&descriptor.digest)? {
            blobs_skipped += 1;
            bytes_skipped += descriptor.size;
            continue;
        }
        if !*packed {
            layers_packed += 1;
            let (again, archive_bytes) =
                write_layer_blob(store, layer_id, &layers[layer_id], path, &NoProgress)?;
            // The remembered descriptor is only a cache: the blob packed now is what goes up (another
            // zstd may pack other bytes), and is remembered instead.
            if again != *descriptor {
                BlobDescriptors::of(store).remember(layer_id, &again, archive_bytes);
                *descriptor = again;
            }
        }
        uploads.push((descriptor.clone(), path.clone()));
    }
    let bytes_uploaded = uploads.iter().map(|(d, _)| d.size).sum();
    let blobs_uploaded = uploads.len();
    progress.begin("uploading", Some(bytes_uploaded));
    for (descriptor, path) in uploads {
        client.upload_blob(&descriptor.digest, &path, descriptor.size, progress)?;
    }
    progress.end();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_owned()),
        artifact_type: Some(ARTIFACT_TYPE.to_owned()),
        config,
        layers: snapshot
            .layers
            .iter()
            .map(|layer_id| blobs[layer_id].0.clone())
            .collect(),
        annotations: BTreeMap::from([(SNAPSHOT_ANNOTATION.to_owned(), id.to_hex())]),
    };
    let bytes = serde_json::to_vec(&manifest)
        .map_err(|e| Error::Invalid(format!("could not encode the image manifest: {e}")))?;
    client.put_manifest(&bytes, MANIFEST_MEDIA_TYPE)?;
    Ok(Pushed {
        pull_needs_max_bytes,
        snapshot,
        manifest_digest: sha256_digest(&bytes),
        layers: blobs.len(),
        layers_packed,
        blobs_uploaded,
        bytes_uploaded,
        blobs_skipped,
        bytes_skipped,
    })
}

/// What a pull added to the store.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    /// `sha256:` of the manifest as received.
    pub manifest_digest: String,
    /// Distinct layers of the snapshot; those downloaded, and those the store held already.
    pub layers: usize,
    pub layers_downloaded: usize,
    pub bytes_downloaded: u64,
    pub layers_present: usize,
    pub new_objects: usize,
}

/// An image's manifest and snapshot, read and checked; its layers are still to come.
#[derive(Debug, Clone)]
pub struct ImageHead {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    /// `sha256:` of the manifest as received.
    pub manifest_digest: String,
    manifest: ImageManifest,
}

/// Reads the client's tag: its manifest and its config, the snapshot they describe. Needs nothing of a
/// store, so the caller can decide (the interpreter, the target) before any layer is downloaded.
pub fn pull_head(client: &Client) -> Result<ImageHead> {
    let reference = client.reference().to_string();
    let whole = |problem: ImageProblem| Error::Image {
        image: ImageSource::Registry(reference.clone()),
        entry: None,
        problem: Box::new(problem),
    };
    // Every kind of manifest a tag may hold, so that the registry sends what it has (and the check
    // below names it) rather than failing to convert it.
    let (content_type, bytes) = client.get_manifest(&ACCEPTED_MANIFESTS.join(", "))?;
    let manifest_digest = sha256_digest(&bytes);
    let (manifest, layer_ids) = parse_manifest(&bytes, content_type.as_deref())
        .map_err(|why| whole(ImageProblem::Artifact(why)))?;
    let config_source = ImageSource::Blob {
        reference: reference.clone(),
        digest: manifest.config.digest.clone(),
    };
    if manifest.config.size > MAX_CONFIG_BYTES {
        return Err(whole(ImageProblem::TooLarge(format!(
            "its config blob is {} bytes, more than the {MAX_CONFIG_BYTES} a snapshot manifest may use",
            manifest.config.size
        ))));
    }
    let mut config = Sha256Writer::new(Vec::new());
    fetch(
        client,
        &manifest.config,
        &mut config,
        &config_source,
        &NoProgress,
    )?;
    let (id, snapshot) = parse_config(&config.inner).map_err(|why| Error::Image {
        image: config_source.clone(),
        entry: None,
        problem: Box::new(ImageProblem::Artifact(why)),
    })?;
    if snapshot.layers != layer_ids {
        return Err(whole(ImageProblem::Artifact(format!(
            "its layer descriptors name other layers than snapshot {} lists",
            id.short()
        ))));
    }
    snapshot_annotation_agrees(&manifest, &id).map_err(|why| whole(ImageProblem::Artifact(why)))?;
    Ok(ImageHead {
        id,
        snapshot,
        manifest_digest,
        manifest,
    })
}

/// Pulls the layers of `head` the store lacks, checks the whole snapshot and commits it to the store.
pub fn pull_layers(
    store: &Store,
    client: &Client,
    head: ImageHead,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<Pulled> {
    let reference = client.reference().to_string();
    let whole = |problem: ImageProblem| Error::Image {
        image: ImageSource::Registry(reference.clone()),
        entry: None,
        problem: Box::new(problem),
    };
    let ImageHead {
        id,
        snapshot,
        manifest_digest,
        manifest,
    } = head;
    let layer_ids = &snapshot.layers;

    // One blob per distinct layer; the same layer must always be the same blob.
    let mut wanted: BTreeMap<LayerId, &Descriptor> = BTreeMap::new();
    for (layer_id, descriptor) in layer_ids.iter().zip(&manifest.layers) {
        if wanted
            .insert(*layer_id, descriptor)
            .is_some_and(|d| d != descriptor)
        {
            return Err(whole(ImageProblem::Artifact(format!(
                "it names two different blobs for layer {layer_id}"
            ))));
        }
    }
    let staging = store.objects().begin()?;
    let mut layers = BTreeMap::new();
    let mut fetch_list = Vec::new();
    for (layer_id, descriptor) in &wanted {
        match layer_in_store(store, layer_id)? {
            Some(layer) => {
                layers.insert(*layer_id, layer);
            }
            None => fetch_list.push((*layer_id, *descriptor)),
        }
    }
    let layers_present = layers.len();
    // Saturating: a manifest's sizes are the registry's word, and may add up past 2^64.
    let bytes_downloaded = fetch_list
        .iter()
        .fold(0u64, |sum, (_, d)| sum.saturating_add(d.size));
    if bytes_downloaded > limits.max_bytes {
        return Err(whole(ImageProblem::TooLarge(format!(
            "its layer blobs are {bytes_downloaded} bytes, more than {} (BLAST_IMAGE_MAX_BYTES raises that limit)",
            limits.max_bytes
        ))));
    }
    progress.begin("downloading", Some(bytes_downloaded));
    let mut new_objects = 0;
    let mut fetched = BTreeSet::new();
    for (n, (layer_id, descriptor)) in fetch_list.iter().enumerate() {
        let source = ImageSource::Blob {
            reference: reference.clone(),
            digest: descriptor.digest.clone(),
        };
        let outcome = fetch_layer(
            store, client, &staging, descriptor, *layer_id, n, &source, limits, progress,
        )?;
        new_objects += outcome.new_objects;
        layers.insert(*layer_id, outcome.layer);
        fetched.insert(*layer_id);
    }
    progress.end();
    let snapshots = BTreeMap::from([(id, snapshot.clone())]);
    let refused = |(entry, problem)| Error::Image {
        image: ImageSource::Registry(reference.clone()),
        entry,
        problem: Box::new(problem),
    };
    check_snapshots(&snapshots, &|l| layers.get(l), limits.max_flatten).map_err(refused)?;
    check_packages(&snapshots, &|l| layers.get(l), &|object| {
        staging.read_object(object)
    })
    .map_err(refused)?;
    for layer_id in &fetched {
        staging.put_layer(&layers[layer_id])?;
    }
    staging.put_snapshot(&snapshot)?;
    staging.commit()?;
    Ok(Pulled {
        id,
        snapshot,
        manifest_digest,
        layers: wanted.len(),
        layers_downloaded: fetched.len(),
        bytes_downloaded,
        layers_present,
        new_objects,
    })
}

/// A layer the store holds with every object it names (of the recorded size): no need to download it.
fn layer_in_store(store: &Store, id: &LayerId) -> Result<Option<Layer>> {
    // One that cannot be read whole (damaged) is downloaded again, and replaces it.
    let Ok(layer) = store.objects().layer(id) else {
        return Ok(None);
    };
    let complete =
        file_objects(std::iter::once(&layer))
            .iter()
            .all(|(&(object, executable), &size)| {
                store
                    .objects()
                    .object_path(&object, executable)
                    .symlink_metadata()
                    .is_ok_and(|m| m.len() == size)
            });
    Ok(complete.then_some(layer))
}

/// Downloads a layer blob into the staging area, checks its digest and size, then reads it like an image:
/// its objects are staged, its layer returned.
#[allow(clippy::too_many_arguments)]
fn fetch_layer(
    store: &Store,
    client: &Client,
    staging: &Staging<'_>,
    descriptor: &Descriptor,
    layer: LayerId,
    n: usize,
    source: &ImageSource,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<read::BlobOutcome> {
    let path = staging.dir().join(format!("blob-{n}"));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .at("creating blob", &path)?;
    let mut out = Sha256Writer::new(BufWriter::new(file));
    fetch(client, descriptor, &mut out, source, progress)?;
    out.flush().at("writing blob", &path)?;
    drop(out);
    let outcome = read::read_layer_blob(
        store,
        staging,
        &path,
        source.clone(),
        layer,
        limits,
        &NoProgress,
    );
    // The objects it held are staged; the blob itself is not needed any more.
    let _ = fs::remove_file(&path);
    outcome
}

/// Streams the blob of `descriptor` into `out` and checks that it is exactly the bytes the descriptor names.
fn fetch<W: Write>(
    client: &Client,
    descriptor: &Descriptor,
    out: &mut Sha256Writer<W>,
    source: &ImageSource,
    progress: &dyn Progress,
) -> Result<()> {
    let fail = |problem: ImageProblem| Error::Image {
        image: source.clone(),
        entry: None,
        problem: Box::new(problem),
    };
    let expected = descriptor.size;
    let got = client.get_blob(
        &descriptor.digest,
        expected.saturating_add(1),
        out,
        progress,
    )?;
    if got != expected {
        let found = if got > expected {
            format!("more than {expected}")
        } else {
            got.to_string()
        };
        return Err(fail(ImageProblem::BlobSize { found, expected }));
    }
    let actual = out.digest();
    if actual != descriptor.digest {
        return Err(fail(ImageProblem::DigestMismatch { actual }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use store_format::{Change, Node, ObjectId};

    fn snapshot() -> Snapshot {
        Snapshot {
            python: PythonTag {
                implementation: "cpython".into(),
                version: "3.11.7".into(),
                soabi: "cpython-311-x86_64-linux-gnu".into(),
                platform: "linux-x86_64".into(),
            },
            layers: vec![LayerId::of(b"a"), LayerId::of(b"b")],
            packages: vec![
                Package {
                    name: "alpha".into(),
                    version: "1.0".into(),
                },
                Package {
                    name: "beta".into(),
                    version: "2.0".into(),
                },
            ],
        }
    }

    /// A blob of `layer` with its objects in `order`, written as `write_layer_blob` writes.
    fn blob_in_order(store: &Store, layer: &Layer, order: &[(ObjectId, bool)], path: &Path) {
        let file = std::fs::File::create(path).unwrap();
        let mut archive = write::start_archive(file, path).unwrap();
        let id = EntryName::Layer(layer.id());
        write::append(&mut archive, &id, &layer.encode(), path).unwrap();
        let sizes = file_objects(std::iter::once(layer));
        for &(id, executable) in order {
            let size = sizes[&(id, executable)];
            let object = StoredObject {
                id,
                executable,
                size,
            };
            let name = EntryName::Object(id, executable);
            write::append_object(store, &mut archive, &name, &object, &NoProgress, path).unwrap();
        }
        write::finish_archive(archive, path).unwrap();
    }

    #[test]
    fn blob_objects_go_by_first_use_and_older_blobs_by_name_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_for_writing(&dir.path().join("home")).unwrap();
        let staging = store.objects().begin().unwrap();
        let mut layer = Layer::default();
        layer.changes.insert("d".into(), Change::Put(Node::Dir));
        for name in ["a", "b", "c", "e"] {
            let bytes = format!("the module {name}\n").repeat(40).into_bytes();
            let node = Node::File {
                object: staging.put_object(&bytes, false).unwrap(),
                size: bytes.len() as u64,
                executable: false,
                relocatable: false,
            };
            layer
                .changes
                .insert(format!("d/{name}.py"), Change::Put(node));
        }
        staging.commit().unwrap();
        let first_use = super::super::first_use([&layer]);
        let mut by_name = first_use.clone();
        by_name.sort();
        assert_ne!(
            first_use, by_name,
            "the test needs the two orders to differ"
        );

        let written = dir.path().join("written");
        write_layer_blob(&store, &layer.id(), &layer, &written, &NoProgress).unwrap();
        let read_order = |path: &Path| {
            let staging = store.objects().begin().unwrap();
            let source = ImageSource::Blob {
                reference: "test".into(),
                digest: "sha256:0".into(),
            };
            read::read_layer_blob(
                &store,
                &staging,
                path,
                source,
                layer.id(),
                &Limits::default(),
                &NoProgress,
            )
            .map(|outcome| outcome.layer)
        };
        assert_eq!(read_order(&written).unwrap(), layer);
        let hand = dir.path().join("by-hand");
        blob_in_order(&store, &layer, &first_use, &hand);
        assert_eq!(
            std::fs::read(&hand).unwrap(),
            std::fs::read(&written).unwrap()
        );
        blob_in_order(&store, &layer, &by_name, &hand);
        assert_eq!(
            read_order(&hand).unwrap(),
            layer,
            "a blob in name order reads"
        );
        let mut neither = first_use.clone();
        neither.reverse();
        if neither == by_name {
            neither.swap(0, 1);
        }
        blob_in_order(&store, &layer, &neither, &hand);
        let err = read_order(&hand).unwrap_err().to_string();
        assert!(err.contains("order"), "{err}");
    }

    #[test]
    fn the_config_round_trips_and_must_describe_the_snapshot_it_names() {
        let s = snapshot();
        let bytes = config_bytes(&s.id(), &s).unwrap();
        let (id, back) = parse_config(&bytes).unwrap();
        assert_eq!((id, back), (s.id(), s.clone()));

        let mut other = s.clone();
        other.packages[0].version = "1.1".into();
        let forged = config_bytes(&s.id(), &other).unwrap();
        assert!(
            parse_config(&forged)
                .unwrap_err()
                .contains("not to the id it names")
        );

        // Unsorted packages would encode to bytes no decoder accepts, whatever id they claim.
        let mut unsorted = s.clone();
        unsorted.packages.reverse();
        let bad = config_bytes(&unsorted.id(), &unsorted).unwrap();
        assert!(parse_config(&bad).unwrap_err().contains("does not decode"));

        let newer = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("\"version\":1,", "\"version\":2,");
        assert!(
            parse_config(newer.as_bytes())
                .unwrap_err()
                .contains("upgrade blast")
        );
    }

    /// Found by exploratory testing: a manifest whose snapshot annotation named another snapshot than
    /// its config describes was pulled without a word.
    #[test]
    fn the_manifests_snapshot_annotation_must_name_the_configs_snapshot() {
        let s = snapshot();
        let config = config_bytes(&s.id(), &s).unwrap();
        let descriptor = |media_type: &str, layer: Option<&LayerId>| Descriptor {
            media_type: media_type.into(),
            digest: sha256_digest(b"x"),
            size: 1,
            annotations: layer
                .map(|id| BTreeMap::from([(LAYER_ANNOTATION.to_owned(), id.to_hex())]))
                .unwrap_or_default(),
        };
        let manifest = |named: &str| ImageManifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.into()),
            artifact_type: Some(ARTIFACT_TYPE.into()),
            config: descriptor(CONFIG_MEDIA_TYPE, None),
            layers: s
                .layers
                .iter()
                .map(|id| descriptor(LAYER_MEDIA_TYPE, Some(id)))
                .collect(),
            annotations: BTreeMap::from([(SNAPSHOT_ANNOTATION.to_owned(), named.to_owned())]),
        };
        let bytes = |named: &str| serde_json::to_vec(&manifest(named)).unwrap();
        assert_eq!(
            check_documents(&bytes(&s.id().to_hex()), &config).unwrap(),
            (s.layers.clone(), s.id())
        );
        let other = "f".repeat(64);
        let err = check_documents(&bytes(&other), &config).unwrap_err();
        assert!(err.contains(&format!("names `{other}`")), "{err}");
    }

    #[test]
    fn manifests_must_carry_the_blast_types_and_a_layer_id_per_layer() {
        let layer = LayerId::of(b"a");
        let descriptor = |media_type: &str, annotated: bool| Descriptor {
            media_type: media_type.into(),
            digest: sha256_digest(b"x"),
            size: 1,
            annotations: if annotated {
                BTreeMap::from([(LAYER_ANNOTATION.to_owned(), layer.to_hex())])
            } else {
                BTreeMap::new()
            },
        };
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.into()),
            artifact_type: Some(ARTIFACT_TYPE.into()),
            config: descriptor(CONFIG_MEDIA_TYPE, false),
            layers: vec![descriptor(LAYER_MEDIA_TYPE, true)],
            annotations: BTreeMap::new(),
        };
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let (_, layers) = parse_manifest(&bytes, Some(MANIFEST_MEDIA_TYPE)).unwrap();
        assert_eq!(layers, [layer]);
        let docker = "application/vnd.docker.distribution.manifest.v2+json";
        assert!(
            parse_manifest(&bytes, Some(docker))
                .unwrap_err()
                .contains("serves it as")
        );

        let mutate = |f: &dyn Fn(&mut ImageManifest)| {
            let mut m = manifest.clone();
            f(&mut m);
            parse_manifest(&serde_json::to_vec(&m).unwrap(), None).unwrap_err()
        };
        assert!(mutate(&|m| m.artifact_type = None).contains("artifactType is missing"));
        assert!(mutate(&|m| m.schema_version = 1).contains("schemaVersion 1"));
        assert!(
            mutate(&|m| m.config.media_type = "application/vnd.oci.image.config.v1+json".into())
                .contains("config has mediaType")
        );
        assert!(
            mutate(&|m| m.layers[0].annotations.clear()).contains("lacks a `vnd.blast.layer.id`")
        );
        assert!(mutate(&|m| m.layers[0].digest = "sha256:ABC".into()).contains("digest"));
    }
}
