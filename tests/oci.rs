//! `blast push` and `blast pull` against a real registry: Debian's `docker-registry` (the CNCF
//! distribution registry) started on loopback for each test, with its storage in the test's temporary
//! directory. A snapshot with a console script goes up and comes down into a fresh store at another path
//! and runs there; skopeo, an independent client, reads the manifest and config and copies the image
//! (checking every blob's digest); a second push uploads nothing; a store that has the lower layers
//! downloads only the missing blob; blobs go up in chunks when they are larger than the chunk size; and a
//! blob damaged on the registry's disk makes the pull fail naming its digest, with the store unchanged.
//! A registry that stops answering (a loopback server that holds requests) holds up neither other
//! commands on the store nor, once blast is killed, the store's state.
//!
//! The tests that need the real registry are skipped, saying why, only where `docker-registry` or `skopeo`
//! is not installed (`scripts/setup` installs both).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use engine::store_format::{Package, Snapshot};
use serde_json::Value;
use support::*;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// True when the tools are there; otherwise says which is missing and how to get it.
fn tools_present() -> bool {
    let skopeo = Command::new("skopeo").arg("--version").output().is_ok();
    let registry = Path::new(REGISTRY_BIN).exists();
    if !(skopeo && registry) {
        eprintln!(
            "skipping: {} not installed (`scripts/setup` installs Debian's docker-registry and skopeo)",
            match (registry, skopeo) {
                (false, false) => "docker-registry and skopeo are",
                (false, true) => "docker-registry is",
                _ => "skopeo is",
            }
        );
    }
    skopeo && registry
}

/// A registry on a free loopback port, storing in its own temporary directory; killed when dropped.
struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("blast-registry-")
            .tempdir()
            .expect("tempdir");
        // A port that was free a moment ago; the registry binds it right after.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let log = fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start docker-registry");
        let registry = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !registry.answers() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on port {port}: {}",
                fs::read_to_string(registry.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// `GET /v2/` answers 200.
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream
            .write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
    }

    /// PUTs `body` as the manifest of `repo:tag`, served as `media_type`; returns the status line.
    fn put_manifest(&self, repo: &str, tag: &str, media_type: &str, body: &[u8]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("registry");
        let head = format!(
            "PUT /v2/{repo}/manifests/{tag} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: {media_type}\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.lines().next().unwrap_or_default().to_owned()
    }

    fn reference(&self, repo_tag: &str) -> String {
        format!("oci://127.0.0.1:{}/{repo_tag}", self.port)
    }

    fn docker(&self, repo_tag: &str) -> String {
        format!("docker://127.0.0.1:{}/{repo_tag}", self.port)
    }

    /// Where the registry keeps blob `sha256:<hex>` on disk.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs skopeo against the plain-http registry; returns (success, stdout, stderr).
fn skopeo(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A path environment `work/NAME` with blastdemo 1.0.0 (and its dependency, and a console script),
/// snapshotted; returns its path and snapshot id.
fn demo_env(b: &Blast, name: &str) -> (PathBuf, String) {
    let path = b.create_path_env(name);
    pip_install(&path, &["blastdemo==1.0.0"]);
    let snap = b.json(&["snapshot", "-e", path.to_str().unwrap(), "-m", "demo"]);
    (path, snap["snapshot"].as_str().unwrap().to_owned())
}

fn push(b: &Blast, env: &Path, reference: &str) -> Value {
    b.json(&["push", "-e", env.to_str().unwrap(), reference, "--insecure"])
}

fn pull(b: &Blast, reference: &str, path: &Path) -> Value {
    b.json(&[
        "pull",
        reference,
        "--path",
        path.to_str().unwrap(),
        "--insecure",
    ])
}

/// The pulled environment works where it landed: its console script runs, `sys.prefix` is its path,
/// and `blast verify` finds nothing wrong.
fn assert_runs_at(b: &Blast, env: &Path) {
    let script = Command::new(env.join("bin/blastdemo"))
        .output()
        .expect("run the console script");
    assert!(
        script.status.success()
            && String::from_utf8_lossy(&script.stdout).contains("blastdemo 1.0.0"),
        "console script: {script:?}"
    );
    let (ok, prefix) = env_python(env, "import sys; print(sys.prefix)");
    assert!(ok, "{prefix}");
    assert_eq!(prefix.trim(), env.to_str().unwrap());
    b.assert_verify_clean(&[env]);
}

#[test]
fn a_pushed_snapshot_pulls_into_a_fresh_store_and_skopeo_reads_the_image() {
    if !tools_present() {
        return;
    }
    let registry = Registry::start();
    let b1 = Blast::new();
    let (src, snap) = demo_env(&b1, "src-env");
    let reference = registry.reference("team/demo:v1");

    let first = push(&b1, &src, &reference);
    assert_eq!(first["snapshot"], snap.as_str());
    assert_eq!(first["reference"], reference.as_str());
    assert_eq!(first["layers"], 2, "{first}");
    assert_eq!(
        first["blobs_uploaded"], 3,
        "the config and two layers: {first}"
    );
    assert_eq!(first["blobs_skipped"], 0, "{first}");
    assert_eq!(first["layers_packed"], 2, "{first}");

    // Pulled into a fresh store, at another path with another name.
    let b2 = Blast::new();
    let dest = b2.work.join("elsewhere/pulled-env");
    let pulled = pull(&b2, &reference, &dest);
    assert_eq!(pulled["snapshot"], snap.as_str());
    assert_eq!(pulled["manifest_digest"], first["manifest_digest"]);
    assert_eq!(
        (
            pulled["layers_downloaded"].as_u64(),
            pulled["layers_present"].as_u64()
        ),
        (Some(2), Some(0)),
        "{pulled}"
    );
    assert_runs_at(&b2, &dest);
    assert_eq!(
        b2.log(dest.to_str().unwrap())[0]["operation"],
        "pull",
        "the history says where it came from"
    );
    // A Docker config that cannot be read stops no pull from a registry that asks for no login
    // (found by exploratory testing: it was read, and refused, before any request).
    let docker = b2.work.join("docker");
    fs::create_dir(&docker).unwrap();
    fs::write(docker.join("config.json"), r#"{"auths":"#).unwrap();
    let again = b2.work.join("again");
    let out = b2
        .command(&[
            "pull",
            &reference,
            "--path",
            again.to_str().unwrap(),
            "--insecure",
        ])
        .env("DOCKER_CONFIG", &docker)
        .output()
        .unwrap();
    assert_succeeded(&out);

    // skopeo, an independent client: the raw manifest is an OCI image manifest with blast's types.
    let docker_ref = registry.docker("team/demo:v1");
    let (ok, raw, err) = skopeo(&["inspect", "--raw", "--tls-verify=false", &docker_ref]);
    assert!(ok, "skopeo inspect --raw: {err}");
    let manifest: Value = serde_json::from_str(&raw).expect("the manifest is JSON");
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.blast.snapshot.v1"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.blast.snapshot.config.v1+json"
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 2);
    for layer in layers {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.blast.layer.v1.tar+zstd"
        );
        assert_eq!(
            layer["annotations"]["vnd.blast.layer.id"]
                .as_str()
                .unwrap()
                .len(),
            64
        );
    }
    assert_eq!(
        manifest["annotations"]["vnd.blast.snapshot.id"],
        snap.as_str()
    );
    // The config blob, fetched by skopeo, is the snapshot manifest.
    let (ok, config, err) = skopeo(&[
        "inspect",
        "--config",
        "--raw",
        "--tls-verify=false",
        &docker_ref,
    ]);
    assert!(ok, "skopeo inspect --config --raw: {err}");
    let config: Value = serde_json::from_str(&config).expect("the config is JSON");
    assert_eq!(config["snapshot"], snap.as_str());
    assert_eq!(config["packages"][0]["name"], "blastdemo");
    // skopeo 1.9's plain `inspect` reads container images only: it refuses an artifact by its config
    // type (newer ones may accept it). Either is fine; a refusal for any other reason is not.
    let (ok, _, err) = skopeo(&["inspect", "--tls-verify=false", &docker_ref]);
    assert!(
        ok || err.contains("unsupported image-specific operation on artifact"),
        "skopeo inspect: {err}"
    );
    // Copying the image checks every blob against its digest and size; the manifest keeps its digest.
    let layout = b2.tmp.path().join("oci-layout");
    let (ok, _, err) = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &docker_ref,
        &format!("oci:{}:v1", layout.display()),
    ]);
    assert!(ok, "skopeo copy: {err}");
    let index: Value =
        serde_json::from_str(&fs::read_to_string(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], first["manifest_digest"]);

    // The same snapshot again, under another tag too: the registry has every blob.
    let again = push(&b1, &src, &reference);
    assert_eq!(again["blobs_uploaded"], 0, "{again}");
    assert_eq!(again["blobs_skipped"], 3, "{again}");
    assert_eq!(again["bytes_uploaded"], 0, "{again}");
    assert_eq!(again["manifest_digest"], first["manifest_digest"]);
    // Nor is any layer packed again to learn its digest (found by exploratory testing: every push
    // packed every layer first).
    assert_eq!(again["layers_packed"], 0, "{again}");
    // A repository that lacks the blobs gets them packed again, the same bytes as remembered.
    let elsewhere = push(&b1, &src, &registry.reference("team/other:v1"));
    assert_eq!(elsewhere["blobs_uploaded"], 3, "{elsewhere}");
    assert_eq!(elsewhere["layers_packed"], 2, "{elsewhere}");
    assert_eq!(elsewhere["manifest_digest"], first["manifest_digest"]);
    let latest = push(&b1, &src, &registry.reference("team/demo"));
    assert_eq!(
        latest["reference"],
        registry.reference("team/demo:latest").as_str()
    );
    assert_eq!(latest["blobs_uploaded"], 0, "{latest}");
    // The remembered descriptors go with their layers.
    let remembered = || {
        fs::read_dir(b1.home.join("blob-descriptors"))
            .unwrap()
            .count()
    };
    assert_eq!(remembered(), 2);
    b1.ok(&["remove", src.to_str().unwrap()]);
    b1.ok(&["clean"]);
    assert_eq!(remembered(), 0);
}

#[test]
fn a_store_with_the_lower_layers_downloads_only_the_missing_blob() {
    if !tools_present() {
        return;
    }
    let registry = Registry::start();
    let b1 = Blast::new();
    let (src, snap) = demo_env(&b1, "src-env");
    // Blobs larger than 1000 bytes go up in 1000-byte PATCHes, each checked by the registry on the way.
    let reference = registry.reference("demo");
    let out = b1
        .command(&[
            "push",
            "-e",
            src.to_str().unwrap(),
            &reference,
            "--insecure",
            "--json",
        ])
        .env("BLAST_REGISTRY_CHUNK_BYTES", "1000")
        .output()
        .expect("run blast");
    assert!(
        out.status.success(),
        "chunked push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        pushed["bytes_uploaded"].as_u64().unwrap() > 3000,
        "blobs large enough to need several chunks: {pushed}"
    );

    // Another store that made the same venv (the same first layer) downloads only the demo layer.
    let b2 = Blast::new();
    b2.create_path_env("own-env");
    let objects_before: BTreeSet<PathBuf> = b2.store_files("objects").into_iter().collect();
    let dest = b2.work.join("pulled");
    let pulled = pull(&b2, &reference, &dest);
    assert_eq!(pulled["snapshot"], snap.as_str());
    assert_eq!(
        (
            pulled["layers_downloaded"].as_u64(),
            pulled["layers_present"].as_u64()
        ),
        (Some(1), Some(1)),
        "{pulled}"
    );
    assert_runs_at(&b2, &dest);
    let objects_after: BTreeSet<PathBuf> = b2.store_files("objects").into_iter().collect();
    assert!(objects_after.is_superset(&objects_before));
    assert_eq!(
        objects_after.len() - objects_before.len(),
        pulled["new_objects"].as_u64().unwrap() as usize
    );

    // Pulling again into the same store downloads nothing.
    let twice = pull(&b2, &reference, &b2.work.join("pulled-again"));
    assert_eq!(twice["layers_downloaded"], 0, "{twice}");
    assert_eq!(twice["bytes_downloaded"], 0, "{twice}");

    // A damaged layer is what `verify` says a pull brings back: it is downloaded again and replaces
    // the damaged file (found by exploratory testing: the pull failed on it).
    for layer in b2.store_files("layers") {
        flip_a_byte(&layer);
    }
    assert!(!b2.command(&["verify"]).output().unwrap().status.success());
    let mended = pull(&b2, &reference, &b2.work.join("pulled-mended"));
    assert_eq!(mended["layers_downloaded"], 2, "{mended}");
    b2.assert_verify_clean(&[&dest]);

    // A push of HEAD while the directory holds a change no snapshot has says it is left out.
    fs::write(src.join("notes.txt"), "by hand").unwrap();
    let (_, stderr) = b1.ok_with_stderr(&[
        "push",
        "-e",
        src.to_str().unwrap(),
        &reference,
        "--insecure",
    ]);
    assert!(
        stderr.contains("note: 1 path of the environment differs from its HEAD"),
        "{stderr}"
    );
}

/// Everything a failed pull could have changed.
fn store_state(b: &Blast) -> (Vec<PathBuf>, Vec<PathBuf>, Value) {
    let files = ["objects", "layers", "snapshots"]
        .iter()
        .flat_map(|kind| b.store_files(kind))
        .collect();
    (files, b.staging_leftovers(), b.json(&["list"]))
}

#[test]
fn a_damaged_blob_fails_the_pull_naming_its_digest_and_leaves_the_store_unchanged() {
    if !tools_present() {
        return;
    }
    let registry = Registry::start();
    let b1 = Blast::new();
    let (src, _) = demo_env(&b1, "src-env");
    let reference = registry.reference("demo:v1");
    let pushed = push(&b1, &src, &reference);
    let (ok, raw, err) = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &registry.docker("demo:v1"),
    ]);
    assert!(ok, "{err}");
    let manifest: Value = serde_json::from_str(&raw).unwrap();
    let digest = manifest["layers"][1]["digest"].as_str().unwrap().to_owned();
    let blob = registry.blob_file(&digest);
    let original = fs::read(&blob).expect("the registry's blob file");

    // A store with an environment of its own (the same venv layer: only the damaged blob is fetched).
    let b2 = Blast::new();
    b2.create_path_env("own-env");
    let before = store_state(&b2);
    let dest = b2.work.join("pulled");
    let attempt = |b2: &Blast| {
        b2.fails(&[
            "pull",
            &reference,
            "--path",
            dest.to_str().unwrap(),
            "--insecure",
        ])
    };

    // The same length of garbage: the digest does not match.
    fs::write(&blob, vec![0x5a; original.len()]).unwrap();
    let err = attempt(&b2);
    assert!(err.contains(&digest), "{err}");
    assert!(err.contains("not to the digest"), "{err}");
    assert_eq!(store_state(&b2), before);
    assert!(!dest.exists(), "nothing materialized");

    // Cut short: the size does not match.
    fs::write(&blob, &original[..original.len() / 2]).unwrap();
    let err = attempt(&b2);
    assert!(err.contains(&digest), "{err}");
    assert!(err.contains("the registry sent"), "{err}");
    assert_eq!(store_state(&b2), before);

    // Repaired, the same pull succeeds.
    fs::write(&blob, &original).unwrap();
    pull(&b2, &reference, &dest);
    assert_runs_at(&b2, &dest);

    // A manifest changed on the registry's disk is named as such, not as a blob it describes.
    let manifest_digest = pushed["manifest_digest"].as_str().unwrap().to_owned();
    let manifest_file = registry.blob_file(&manifest_digest);
    let bytes = fs::read(&manifest_file).expect("the registry's manifest file");
    fs::write(
        &manifest_file,
        String::from_utf8(bytes.clone())
            .unwrap()
            .replacen("\"size\":", "\"size\": ", 1),
    )
    .unwrap();
    let elsewhere = b2.work.join("elsewhere");
    let err = b2.fails(&[
        "pull",
        &reference,
        "--path",
        elsewhere.to_str().unwrap(),
        "--insecure",
    ]);
    assert!(
        err.contains(&format!("not the {manifest_digest} it names")),
        "{err}"
    );
    fs::write(&manifest_file, &bytes).unwrap();

    // Other images at a tag, a Docker image and an image index: named, not "no such tag".
    let mut docker = manifest.clone();
    docker["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json".into();
    docker.as_object_mut().unwrap().remove("artifactType");
    docker["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json".into();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": bytes.len(),
        }],
    });
    for (tag, body, named) in [
        ("docker", docker, "a Docker image"),
        ("index", index, "an image index"),
    ] {
        let media_type = body["mediaType"].as_str().unwrap().to_owned();
        let status = registry.put_manifest("demo", tag, &media_type, body.to_string().as_bytes());
        assert!(status.contains(" 201"), "{tag}: {status}");
        let err = b2.fails(&[
            "pull",
            &registry.reference(&format!("demo:{tag}")),
            "--path",
            elsewhere.to_str().unwrap(),
            "--insecure",
        ]);
        assert!(
            err.contains(named) && err.contains("it is not a blast image"),
            "{tag}: {err}"
        );
    }
    assert!(!elsewhere.exists());

    // Layer sizes that add up past 2^64 (found by exploratory testing: the sum overflowed, a panic
    // in a debug build and, wrapped, a way past the size limit in a release one): too large. The
    // registry takes sizes up to 2^63 - 1, so three layers.
    let (three, _) = demo_env(&b1, "three-layers");
    pip_install(&three, &["blastextra"]);
    b1.ok(&["snapshot", "-e", three.to_str().unwrap()]);
    push(&b1, &three, &registry.reference("three:v1"));
    let (ok, raw, err) = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &registry.docker("three:v1"),
    ]);
    assert!(ok, "{err}");
    let mut huge: Value = serde_json::from_str(&raw).unwrap();
    let layers = huge["layers"].as_array_mut().unwrap();
    assert_eq!(layers.len(), 3);
    for layer in layers {
        layer["size"] = i64::MAX.into();
    }
    let media_type = huge["mediaType"].as_str().unwrap().to_owned();
    let status = registry.put_manifest("three", "huge", &media_type, huge.to_string().as_bytes());
    assert!(status.contains(" 201"), "{status}");
    let fresh = Blast::new();
    fresh.ok(&["list"]);
    let before = store_state(&fresh);
    let err = fresh.fails(&[
        "pull",
        &registry.reference("three:huge"),
        "--path",
        elsewhere.to_str().unwrap(),
        "--insecure",
    ]);
    assert!(
        err.contains("more than") && err.contains("BLAST_IMAGE_MAX_BYTES"),
        "{err}"
    );
    assert_eq!(store_state(&fresh), before);
    assert!(!elsewhere.exists());

    // A tag the registry lacks, and references blast cannot read.
    let err = b2.fails(&[
        "pull",
        &registry.reference("demo:nope"),
        "--path",
        b2.work.join("x").to_str().unwrap(),
        "--insecure",
    ]);
    assert!(
        err.contains("HTTP 404") && err.contains("no such repository or tag"),
        "{err}"
    );
    for bad in [
        "127.0.0.1:5000/demo",
        "oci://127.0.0.1:5000/Demo",
        "oci://127.0.0.1:5000",
    ] {
        let err = b1.fails(&["push", "-e", src.to_str().unwrap(), bad, "--insecure"]);
        assert!(err.contains("oci://HOST[:PORT]/REPO[:TAG]"), "{bad}: {err}");
    }
}

/// A pushed snapshot whose package list its files do not give (forged in the pushing store, which
/// `push` sends as it is): the pull is refused, naming what the list says and what the files hold, and
/// the pulling store is unchanged.
#[test]
fn a_snapshot_listing_packages_its_files_do_not_hold_is_refused_by_pull() {
    if !tools_present() {
        return;
    }
    let registry = Registry::start();
    let b1 = Blast::new();
    let (_, head) = demo_env(&b1, "src-env");
    let snapshots = b1.home.join("snapshots");
    let mut forged = Snapshot::decode(&fs::read(snapshots.join(&head)).unwrap()).unwrap();
    forged.packages = vec![Package {
        name: "requests".into(),
        version: "2.31.0".into(),
    }];
    let forged_id = forged.id().to_hex();
    fs::write(snapshots.join(&forged_id), forged.encode()).unwrap();
    let reference = registry.reference("demo:forged");
    b1.ok(&["push", "--snapshot", &forged_id, &reference, "--insecure"]);

    let b2 = Blast::new();
    b2.create_path_env("own-env");
    let before = store_state(&b2);
    let dest = b2.work.join("pulled");
    let err = b2.fails(&[
        "pull",
        &reference,
        "--path",
        dest.to_str().unwrap(),
        "--insecure",
    ]);
    assert!(
        err.contains("lists the packages requests 2.31.0, but its files hold blastdemo 1.0.0"),
        "{err}"
    );
    assert_eq!(store_state(&b2), before);
    assert!(!dest.exists(), "nothing materialized");
}

/// `blast start --image oci://…` in a project without an environment: `./.venv` is pulled from the
/// registry, works there, and the session (a bash reading from a pipe) runs on it.
#[test]
fn start_pulls_a_projects_environment_from_a_registry() {
    if !tools_present() {
        return;
    }
    let registry = Registry::start();
    let b1 = Blast::new();
    let (src, _) = demo_env(&b1, "src-env");
    let reference = registry.reference("team/project:v1");
    push(&b1, &src, &reference);

    let b2 = Blast::new();
    let project = b2.work.join("project");
    fs::create_dir_all(&project).unwrap();
    let home = b2.work.join("home");
    fs::create_dir_all(&home).unwrap();
    let mut child = b2
        .command(&[
            "start",
            "--shell",
            "bash",
            "--python",
            python(),
            "--insecure",
            "--image",
            &reference,
        ])
        .current_dir(&project)
        .env("HOME", &home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"python -c 'import blastdemo; print(blastdemo.__name__)'\nexit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("restored {reference}")),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("blastdemo"));
    assert_runs_at(&b2, &project.join(".venv"));
}

/// A registry on loopback that answers the requests for the paths in its table (path → content type,
/// body) and holds every other one unanswered, as a registry behind a link that stopped moving does;
/// `held` says which requests it holds ("METHOD PATH").
struct StallingRegistry {
    port: u16,
    held: mpsc::Receiver<String>,
}

impl StallingRegistry {
    fn start(answers: BTreeMap<String, (String, Vec<u8>)>) -> StallingRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("port").port();
        let (tell, held) = mpsc::channel();
        let answers = Arc::new(answers);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (tell, answers) = (tell.clone(), Arc::clone(&answers));
                std::thread::spawn(move || serve_or_hold(stream, &answers, &tell));
            }
        });
        StallingRegistry { port, held }
    }

    fn reference(&self, repo_tag: &str) -> String {
        format!("oci://127.0.0.1:{}/{repo_tag}", self.port)
    }

    /// The request held first: blast is waiting on the registry.
    fn wait_for_held(&self) -> String {
        self.held
            .recv_timeout(Duration::from_secs(60))
            .expect("blast never sent the registry a request it holds")
    }
}

/// Answers one connection's requests (HTTP/1.1, no bodies) until one it holds.
fn serve_or_hold(
    stream: TcpStream,
    answers: &BTreeMap<String, (String, Vec<u8>)>,
    tell: &mpsc::Sender<String>,
) {
    let mut writer = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
        }
        let mut words = request.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let Some((content_type, body)) = answers.get(path) else {
            let _ = tell.send(format!("{method} {path}"));
            // Held until blast goes: the connection stays open, nothing comes back.
            let _ = reader.read_to_end(&mut Vec::new());
            return;
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let sent = writer
            .write_all(head.as_bytes())
            .and_then(|()| match method {
                "HEAD" => Ok(()),
                _ => writer.write_all(body),
            });
        if sent.is_err() {
            return;
        }
    }
}

/// Starts `blast ARGS` against a registry that will hold one of its requests, with a registry timeout
/// long enough that it is still waiting when the other commands have run.
fn spawn_waiting_on_registry(b: &Blast, args: &[&str]) -> Child {
    b.command(args)
        .env("BLAST_REGISTRY_TIMEOUT", "30")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start blast")
}

/// While `waiting` waits on the registry, commands on the same store, writes included, run to their end;
/// then it is killed, as a user gives up on a stuck transfer.
fn assert_store_usable_meanwhile(b: &Blast, env: &Path, mut waiting: Child) {
    let file = (0..)
        .map(|n| env.join(format!("meanwhile-{n}.txt")))
        .find(|f| !f.exists());
    fs::write(file.unwrap(), "written while blast waited on a registry").unwrap();
    let snap = b.json(&["snapshot", "-e", env.to_str().unwrap(), "-m", "meanwhile"]);
    assert_eq!(snap["added"], 1, "{snap}");
    b.json(&["list"]);
    let still_waiting = waiting.try_wait().expect("poll blast").is_none();
    let _ = waiting.kill();
    let out = waiting.wait_with_output().expect("wait for blast");
    assert!(
        still_waiting,
        "the other commands ran only once blast gave up on the registry: it held the index ({})",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_registry_that_stops_answering_holds_up_no_other_command() {
    let silent = StallingRegistry::start(BTreeMap::new());
    let b = Blast::new();
    let env = b.create_path_env("env");
    let before = b.json(&["list"]);

    // A push waits on its first request to the registry.
    let push = spawn_waiting_on_registry(
        &b,
        &[
            "push",
            "-e",
            env.to_str().unwrap(),
            &silent.reference("team/env:v1"),
            "--insecure",
        ],
    );
    let held = silent.wait_for_held();
    assert!(held.contains("/v2/team/env/"), "{held}");
    assert_store_usable_meanwhile(&b, &env, push);

    // A pull waits on the manifest.
    let dest = b.work.join("pulled");
    let pull = spawn_waiting_on_registry(
        &b,
        &[
            "pull",
            &silent.reference("team/env:v1"),
            "--path",
            dest.to_str().unwrap(),
            "--insecure",
        ],
    );
    assert_eq!(silent.wait_for_held(), "GET /v2/team/env/manifests/v1");
    assert_store_usable_meanwhile(&b, &env, pull);
    assert!(!dest.exists(), "the killed pull made no directory");
    let paths = |list: &Value| -> Vec<Value> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].clone())
            .collect()
    };
    assert_eq!(paths(&b.json(&["list"])), paths(&before));
    assert!(
        b.staging_leftovers().is_empty(),
        "{:?}",
        b.staging_leftovers()
    );
}

/// A pull that has the manifest and config and waits on a layer blob leaves the store to other commands;
/// killed there, it leaves no environment, and the next pull from the real registry succeeds.
#[test]
fn a_pull_waiting_on_a_layer_holds_up_no_other_command() {
    if !tools_present() {
        return;
    }
    let registry = Registry::start();
    let b1 = Blast::new();
    let (src, _) = demo_env(&b1, "src-env");
    let reference = registry.reference("team/demo:v1");
    let pushed = push(&b1, &src, &reference);
    let manifest_digest = pushed["manifest_digest"].as_str().unwrap();
    let manifest = fs::read(registry.blob_file(manifest_digest)).expect("the manifest on disk");
    let parsed: Value = serde_json::from_slice(&manifest).unwrap();
    let config = &parsed["config"];
    let config_digest = config["digest"].as_str().unwrap();
    let stalling = StallingRegistry::start(BTreeMap::from([
        (
            "/v2/team/demo/manifests/v1".to_owned(),
            (
                "application/vnd.oci.image.manifest.v1+json".to_owned(),
                manifest.clone(),
            ),
        ),
        (
            format!("/v2/team/demo/blobs/{config_digest}"),
            (
                config["mediaType"].as_str().unwrap().to_owned(),
                fs::read(registry.blob_file(config_digest)).unwrap(),
            ),
        ),
    ]));

    let b2 = Blast::new();
    let own = b2.create_path_env("own-env");
    let dest = b2.work.join("pulled");
    let pull_args = |reference: &str| {
        vec![
            "pull".to_owned(),
            reference.to_owned(),
            "--path".to_owned(),
            dest.to_str().unwrap().to_owned(),
            "--insecure".to_owned(),
        ]
    };
    let args = pull_args(&stalling.reference("team/demo:v1"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let waiting = spawn_waiting_on_registry(&b2, &args);
    let held = stalling.wait_for_held();
    let layer_digest = parsed["layers"][1]["digest"].as_str().unwrap();
    assert_eq!(held, format!("GET /v2/team/demo/blobs/{layer_digest}"));
    assert_store_usable_meanwhile(&b2, &own, waiting);
    assert!(!dest.exists(), "the killed pull made no directory");
    assert_eq!(b2.json(&["list"]).as_array().map(Vec::len), Some(1));

    let args = pull_args(&reference);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    b2.json(&args);
    assert_runs_at(&b2, &dest);
}

/// A timeout past a day is refused before anything is sent, with the variable and its bounds named
/// (found by review: a huge one panicked on the first upload's arithmetic).
#[test]
fn an_unreasonable_registry_timeout_is_refused_with_its_bounds() {
    let b = Blast::new();
    let env = b.create_path_env("venv");
    for value in ["18446744073709551615", "86401", "0", "soon"] {
        let out = b
            .command(&[
                "push",
                "-e",
                env.to_str().unwrap(),
                "oci://127.0.0.1:9/team/demo:v1",
                "--insecure",
            ])
            .env("BLAST_REGISTRY_TIMEOUT", value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{value}: {err}");
        assert!(
            err.contains(&format!(
                "BLAST_REGISTRY_TIMEOUT=`{value}` is not a positive number of seconds up to 86400"
            )),
            "{value}: {err}"
        );
    }
    // Empty, as unset: the default, and on to the registry (where nothing listens on port 9).
    for name in ["BLAST_REGISTRY_TIMEOUT", "BLAST_REGISTRY_CHUNK_BYTES"] {
        let out = b
            .command(&[
                "push",
                "-e",
                env.to_str().unwrap(),
                "oci://127.0.0.1:9/team/demo:v1",
                "--insecure",
            ])
            .env(name, "")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains(name) && err.contains("127.0.0.1:9"),
            "{name}: {err}"
        );
    }
}

/// A layer that compresses past pull's ratio check (300 MB of zeros) pushes with a note of the
/// `BLAST_IMAGE_MAX_BYTES` that pulls it, and pulls with it (found by exploratory testing: `export`
/// said so, `push` did not, and a teammate's pull failed without naming a value).
#[test]
fn a_push_past_the_ratio_check_names_the_limit_that_pulls_it() {
    if !tools_present() {
        return;
    }
    let registry = Registry::start();
    let sender = Blast::new();
    let env = sender.create_path_env("zeros");
    let zeros = fs::File::create(env.join("zeros.bin")).unwrap();
    zeros.set_len(300 << 20).unwrap();
    sender.ok(&["snapshot", "-e", env.to_str().unwrap()]);
    let reference = registry.reference("zeros:v1");
    let out = sender
        .command(&[
            "push",
            "-e",
            env.to_str().unwrap(),
            &reference,
            "--insecure",
        ])
        .output()
        .unwrap();
    assert_succeeded(&out);
    let note = String::from_utf8_lossy(&out.stderr).into_owned();
    let needed: u64 = note
        .split("BLAST_IMAGE_MAX_BYTES=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no limit named: {note}"));
    assert!(needed > 300 << 20, "{note}");

    let receiver = Blast::new();
    let dest = receiver.work.join("pulled");
    let pull = |limit: Option<u64>| {
        let mut command = receiver.command(&[
            "pull",
            &reference,
            "--path",
            dest.to_str().unwrap(),
            "--insecure",
        ]);
        if let Some(limit) = limit {
            command.env("BLAST_IMAGE_MAX_BYTES", limit.to_string());
        }
        command.output().unwrap()
    };
    let refused = pull(None);
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("times its compressed size"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_succeeded(&pull(Some(needed)));
    assert_eq!(
        fs::metadata(dest.join("zeros.bin")).unwrap().len(),
        300 << 20
    );
}
