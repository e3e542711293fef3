//! Golden vectors: the canonical v1 encodings of one layer and one snapshot, pinned byte for byte in
//! `fixtures/store-format/` (SPEC.md documents the formats; `vectors.txt` describes the files).
//!
//! A failure here means the on-disk format changed. That is never a fix to make to the fixtures: a new
//! format needs a new FORMAT_VERSION, a new decoder branch and new vectors beside the old ones.
//!
//! The fixtures were written by `regenerate_golden_files` below, an ignored test that only writes when
//! `BLAST_REGENERATE_GOLDEN=1` is set.

use std::collections::BTreeMap;
use std::path::PathBuf;

use blast_store_format::{
    Change, Layer, LayerId, Node, ObjectId, Package, PythonTag, Snapshot, SnapshotId,
};

/// The ids written in `vectors.txt`, repeated here so that a change to either is caught.
const LAYER_ID: &str = "65bd057b47983e4297192852e1e85250e94baf317b784535c9f2a1d3e4575c61";
const SNAPSHOT_ID: &str = "dd3c7a8bad73c67dfcbbe66a850187e5d63570b0deccec415a79ee6a54d0845b";

/// Stored bytes of `bin/tool` (relocatable: holds the env-prefix placeholder).
const TOOL: &[u8] = b"#!@BLAST_ENV_PREFIX@/bin/python\nimport sys\nprint(sys.prefix)\n";
/// Stored bytes of `lib/pkg/__init__.py`: the empty file.
const INIT: &[u8] = b"";

fn fixtures() -> PathBuf {
    // Read when the test runs, not baked in at build time: a target directory shared between
    // checkouts must not send one checkout's tests to another's fixtures.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("../fixtures/store-format")
}

fn read_fixture(name: &str) -> Vec<u8> {
    let path = fixtures().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The layer of `layer-v1.bin`: one entry of every tag, both flags, a path order that is bytewise
/// (`lib/…` before `lib64`).
fn golden_layer() -> Layer {
    let entries: [(&str, Change); 8] = [
        ("bin", Change::Put(Node::Dir)),
        (
            "bin/python",
            Change::Put(Node::Symlink {
                target: "@BLAST_PYTHON_BIN@/python3.11".into(),
                relocatable: true,
            }),
        ),
        (
            "bin/tool",
            Change::Put(Node::File {
                object: ObjectId::of(TOOL),
                size: TOOL.len() as u64,
                executable: true,
                relocatable: true,
            }),
        ),
        ("lib", Change::Put(Node::Dir)),
        ("lib/old", Change::Whiteout),
        ("lib/pkg", Change::Opaque),
        (
            "lib/pkg/__init__.py",
            Change::Put(Node::File {
                object: ObjectId::of(INIT),
                size: INIT.len() as u64,
                executable: false,
                relocatable: false,
            }),
        ),
        (
            "lib64",
            Change::Put(Node::Symlink {
                target: "lib".into(),
                relocatable: false,
            }),
        ),
    ];
    Layer {
        changes: entries
            .into_iter()
            .map(|(path, change)| (path.to_owned(), change))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// The snapshot of `snapshot-v1.bin`: the empty layer at the bottom, the golden layer on top.
fn golden_snapshot() -> Snapshot {
    Snapshot {
        python: PythonTag {
            implementation: "cpython".into(),
            version: "3.11.7".into(),
            soabi: "cpython-311-x86_64-linux-gnu".into(),
            platform: "linux-x86_64".into(),
        },
        layers: vec![Layer::default().id(), golden_layer().id()],
        packages: vec![
            Package {
                name: "blastdemo".into(),
                version: "1.0.0".into(),
            },
            Package {
                name: "typing-extensions".into(),
                version: "4.12.2".into(),
            },
        ],
    }
}

/// The `id = …` line of the `[file]` section of `vectors.txt`.
fn id_in_vectors_txt(file: &str) -> String {
    let text = String::from_utf8(read_fixture("vectors.txt")).expect("vectors.txt is UTF-8");
    let header = format!("[{file}]");
    let mut lines = text.lines().skip_while(|l| l.trim() != header);
    assert!(
        lines.next().is_some(),
        "vectors.txt has no {header} section"
    );
    lines
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.strip_prefix("id = "))
        .unwrap_or_else(|| panic!("vectors.txt has no `id = ` line under {header}"))
        .trim()
        .to_owned()
}

#[test]
fn layer_encodes_to_the_golden_bytes() {
    assert_eq!(golden_layer().encode(), read_fixture("layer-v1.bin"));
}

#[test]
fn snapshot_encodes_to_the_golden_bytes() {
    assert_eq!(golden_snapshot().encode(), read_fixture("snapshot-v1.bin"));
}

#[test]
fn golden_files_decode_to_the_values() {
    assert_eq!(
        Layer::decode(&read_fixture("layer-v1.bin")).unwrap(),
        golden_layer()
    );
    assert_eq!(
        Snapshot::decode(&read_fixture("snapshot-v1.bin")).unwrap(),
        golden_snapshot()
    );
}

#[test]
fn ids_match_vectors_txt_and_the_hard_coded_ids() {
    let layer_id: LayerId = LAYER_ID.parse().unwrap();
    let snapshot_id: SnapshotId = SNAPSHOT_ID.parse().unwrap();
    assert_eq!(golden_layer().id(), layer_id);
    assert_eq!(golden_snapshot().id(), snapshot_id);
    assert_eq!(LayerId::of(&read_fixture("layer-v1.bin")), layer_id);
    assert_eq!(
        SnapshotId::of(&read_fixture("snapshot-v1.bin")),
        snapshot_id
    );
    assert_eq!(id_in_vectors_txt("layer-v1.bin"), LAYER_ID);
    assert_eq!(id_in_vectors_txt("snapshot-v1.bin"), SNAPSHOT_ID);
    // The snapshot's top layer is the golden layer.
    assert_eq!(golden_snapshot().layers[1], layer_id);
}

#[test]
fn object_ids_and_empty_layer_match_vectors_txt() {
    let text = String::from_utf8(read_fixture("vectors.txt")).unwrap();
    for (what, hex) in [
        ("bin/tool object", ObjectId::of(TOOL).to_hex()),
        ("lib/pkg/__init__.py object", ObjectId::of(INIT).to_hex()),
        ("empty layer id", Layer::default().id().to_hex()),
    ] {
        assert!(text.contains(&hex), "vectors.txt lacks the {what} {hex}");
    }
    // The empty layer is magic, version 1 and a zero count: 14 bytes.
    assert_eq!(
        Layer::default().encode(),
        b"BLASTLYR\x00\x01\x00\x00\x00\x00".to_vec()
    );
}

/// Every single-byte substitution (all 255 other values at every offset) either fails to decode or
/// decodes to a different value with a different id: the decoders accept exactly one encoding per value.
fn assert_every_byte_change_is_detected<T: PartialEq + std::fmt::Debug, I: PartialEq>(
    name: &str,
    golden: &[u8],
    value: &T,
    decode: impl Fn(&[u8]) -> Option<T>,
    encode: impl Fn(&T) -> Vec<u8>,
    id: impl Fn(&T) -> I,
) {
    let original_id = id(value);
    let mut accepted = 0usize;
    for at in 0..golden.len() {
        for byte in 0..=u8::MAX {
            if byte == golden[at] {
                continue;
            }
            let mut mutated = golden.to_vec();
            mutated[at] = byte;
            if let Some(decoded) = decode(&mutated) {
                accepted += 1;
                assert_ne!(
                    &decoded, value,
                    "{name}: byte {at} = {byte:#04x} decoded to the same value"
                );
                assert!(
                    id(&decoded) != original_id,
                    "{name}: byte {at} = {byte:#04x} kept the id"
                );
                assert_eq!(
                    encode(&decoded),
                    mutated,
                    "{name}: byte {at} = {byte:#04x} is not canonical"
                );
            }
        }
    }
    // Sanity: content bytes (hashes, sizes, names) do decode when changed; the test exercises both paths.
    assert!(accepted > 0, "{name}: no substitution decoded at all");
}

#[test]
fn every_single_byte_change_of_the_layer_is_detected() {
    assert_every_byte_change_is_detected(
        "layer-v1.bin",
        &read_fixture("layer-v1.bin"),
        &golden_layer(),
        |b| Layer::decode(b).ok(),
        Layer::encode,
        Layer::id,
    );
}

#[test]
fn every_single_byte_change_of_the_snapshot_is_detected() {
    assert_every_byte_change_is_detected(
        "snapshot-v1.bin",
        &read_fixture("snapshot-v1.bin"),
        &golden_snapshot(),
        |b| Snapshot::decode(b).ok(),
        Snapshot::encode,
        Snapshot::id,
    );
}

#[test]
fn truncations_and_trailing_bytes_are_rejected() {
    for name in ["layer-v1.bin", "snapshot-v1.bin"] {
        let bytes = read_fixture(name);
        let decodes = |b: &[u8]| {
            if name.starts_with("layer") {
                Layer::decode(b).is_ok()
            } else {
                Snapshot::decode(b).is_ok()
            }
        };
        for cut in 0..bytes.len() {
            assert!(!decodes(&bytes[..cut]), "{name}: accepted a cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(!decodes(&long), "{name}: accepted a trailing byte");
    }
}

/// Writes the golden files from the values above. Run only on purpose, when a new format version adds
/// new vectors: `BLAST_REGENERATE_GOLDEN=1 cargo test -p blast-store-format --test golden -- --ignored`.
#[test]
#[ignore = "writes fixtures; set BLAST_REGENERATE_GOLDEN=1 and run with --ignored"]
fn regenerate_golden_files() {
    if std::env::var_os("BLAST_REGENERATE_GOLDEN").is_none() {
        return;
    }
    let dir = fixtures();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("layer-v1.bin"), golden_layer().encode()).unwrap();
    std::fs::write(dir.join("snapshot-v1.bin"), golden_snapshot().encode()).unwrap();
    println!("layer    {}", golden_layer().id());
    println!("snapshot {}", golden_snapshot().id());
    println!("tool     {}", ObjectId::of(TOOL));
    println!("init     {}", ObjectId::of(INIT));
    println!("empty    {}", Layer::default().id());
}
