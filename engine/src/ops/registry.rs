//! `blast push` and `blast pull`: a snapshot to and from an OCI registry (see [`crate::images::oci`]). A
//! push selects its snapshot as `blast export` does; a pull materializes as `blast restore` does, at any
//! path, on an interpreter that matches what the snapshot records.

use std::time::Instant;

use serde::Serialize;
use store_format::SnapshotId;

use super::images::{
    RestoreTarget, check_target, describe_tag, free_target, matching_python, new_env, select,
};
use crate::error::Result;
use crate::images::oci::{pull_head, pull_layers, push_image};
use crate::images::{Limits, Progress};
use crate::registry::{Client, Reference};
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct PushOptions {
    /// The environment (its HEAD, or the context for `snapshot`'s tags and `@~N`).
    pub env: Option<String>,
    /// A snapshot: an id or prefix, or with an environment also a tag or `@~N`.
    pub snapshot: Option<String>,
    /// `oci://HOST[:PORT]/REPO[:TAG]`.
    pub reference: String,
    /// Plain http.
    pub insecure: bool,
}

#[derive(Debug, Serialize)]
pub struct PushReport {
    /// Where it went, tag included.
    pub reference: String,
    pub snapshot: SnapshotId,
    /// `sha256:` of the manifest.
    pub manifest_digest: String,
    /// What the snapshot needs to run.
    pub python: String,
    pub packages: usize,
    /// Distinct layers, one blob each.
    pub layers: usize,
    /// Layers packed into their blobs (the others' descriptors were known from an earlier push).
    pub layers_packed: usize,
    /// Blobs (the config and the layers) sent, and those the registry had already.
    pub blobs_uploaded: usize,
    pub bytes_uploaded: u64,
    pub blobs_skipped: usize,
    pub bytes_skipped: u64,
    pub seconds: f64,
    /// Paths of the environment that differ from the pushed HEAD: changes not captured, left out.
    pub uncaptured: usize,
    /// The `BLAST_IMAGE_MAX_BYTES` a `blast pull` of it needs, when a layer compresses so well that a
    /// pull would take it for a decompression bomb.
    pub pull_needs_max_bytes: Option<u64>,
}

/// Pushes a snapshot (default: the environment's HEAD) to a registry.
pub fn push(store: &Store, opts: &PushOptions, progress: &dyn Progress) -> Result<PushReport> {
    let started = Instant::now();
    let reference = Reference::parse(&opts.reference)?;
    let client = Client::new(&reference, opts.insecure)?;
    // The environment (and its lock) only for this: the transfer must hold up no other command.
    let (head, uncaptured) = {
        let selected = select(store, opts.env.as_deref(), opts.snapshot.as_deref())?;
        (selected.head, selected.uncaptured(store))
    };
    // The transfer needs only the store's files: other commands use the index meanwhile. The store
    // lock, held shared throughout, keeps `blast clean` from sweeping what is being sent.
    let pushed = store
        .index()
        .released(|| push_image(store, &client, &head, progress))??;
    Ok(PushReport {
        reference: reference.to_string(),
        snapshot: head,
        manifest_digest: pushed.manifest_digest,
        python: describe_tag(&pushed.snapshot.python),
        packages: pushed.snapshot.packages.len(),
        layers: pushed.layers,
        layers_packed: pushed.layers_packed,
        blobs_uploaded: pushed.blobs_uploaded,
        bytes_uploaded: pushed.bytes_uploaded,
        blobs_skipped: pushed.blobs_skipped,
        bytes_skipped: pushed.bytes_skipped,
        seconds: started.elapsed().as_secs_f64(),
        uncaptured,
        pull_needs_max_bytes: pushed.pull_needs_max_bytes,
    })
}

#[derive(Debug, Clone)]
pub struct PullOptions {
    /// `oci://HOST[:PORT]/REPO[:TAG]`.
    pub reference: String,
    pub target: RestoreTarget,
    /// Interpreter to run it on (default: `python3`, else `pythonX.Y` matching the snapshot).
    pub python: Option<String>,
    /// Plain http.
    pub insecure: bool,
}

#[derive(Debug, Serialize)]
pub struct PullReport {
    pub reference: String,
    pub snapshot: SnapshotId,
    /// `sha256:` of the manifest.
    pub manifest_digest: String,
    /// What the snapshot needs to run.
    pub needs: String,
    pub packages: usize,
    /// Distinct layers; those downloaded (and their blobs' bytes), and those the store held already.
    pub layers: usize,
    pub layers_downloaded: usize,
    pub bytes_downloaded: u64,
    pub layers_present: usize,
    /// Objects the store did not have.
    pub new_objects: usize,
    pub env: String,
    pub name: Option<String>,
    pub path: String,
    /// The interpreter the environment runs on.
    pub python: String,
    /// Files and symlinks written.
    pub files: usize,
    pub seconds: f64,
}

/// Pulls an image from a registry and makes a new environment of it, at `target`.
pub fn pull(store: &Store, opts: &PullOptions, progress: &dyn Progress) -> Result<PullReport> {
    let started = Instant::now();
    let reference = Reference::parse(&opts.reference)?;
    check_target(store, &opts.target)?;
    let client = Client::new(&reference, opts.insecure)?;
    // The downloads need no index: other commands use it meanwhile, and the store lock, held shared
    // throughout, keeps `blast clean` from sweeping what is being pulled. The interpreter is found
    // before any layer is downloaded, and the target checked again once the index is back.
    let head = store.index().released(|| pull_head(&client))??;
    let interpreter = matching_python(store, &head.snapshot.python, opts.python.as_deref())?;
    let limits = Limits::from_env()?;
    let pulled = store
        .index()
        .released(|| pull_layers(store, &client, head, &limits, progress))??;
    let free = free_target(store, &opts.target)?;
    let made = new_env(
        store,
        &free,
        interpreter,
        pulled.id,
        &[],
        "pull",
        format!("from {reference}"),
        progress,
    )?;
    Ok(PullReport {
        reference: reference.to_string(),
        snapshot: pulled.id,
        manifest_digest: pulled.manifest_digest,
        needs: describe_tag(&pulled.snapshot.python),
        packages: pulled.snapshot.packages.len(),
        layers: pulled.layers,
        layers_downloaded: pulled.layers_downloaded,
        bytes_downloaded: pulled.bytes_downloaded,
        layers_present: pulled.layers_present,
        new_objects: pulled.new_objects,
        env: made.label,
        name: free.name,
        path: free.path_str,
        python: made.python,
        files: made.files,
        seconds: started.elapsed().as_secs_f64(),
    })
}
