//! Any bytes given to the image reader as a `.blast` file: no panic, and an image it refuses leaves
//! the store as it was (nothing staged remains, no object, layer or snapshot appears).
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use blast_engine::Store;
use blast_engine::images::{Limits, NoProgress, import_image};
use libfuzzer_sys::fuzz_target;

struct Scratch {
    store: Store,
    image: PathBuf,
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("blast-fuzz-image-{}", std::process::id()));
        let store = Store::open_for_writing(&dir.join("home")).expect("scratch store");
        Scratch {
            store,
            image: dir.join("input.blast"),
        }
    })
}

/// Files below `dir`.
fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() { count(&path) } else { 1 }
        })
        .sum()
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    std::fs::write(&s.image, data).expect("write input");
    let home = s.store.home().to_owned();
    let before: Vec<usize> = ["objects", "layers", "snapshots"]
        .iter()
        .map(|k| count(&home.join(k)))
        .collect();
    let limits = Limits {
        max_bytes: 64 << 20,
        ..Limits::default()
    };
    let outcome = import_image(&s.store, &s.image, &limits, &NoProgress, &mut |_| Ok(()));
    if outcome.is_err() {
        let after: Vec<usize> = ["objects", "layers", "snapshots"]
            .iter()
            .map(|k| count(&home.join(k)))
            .collect();
        assert_eq!(before, after, "a refused image changed the store");
        assert_eq!(
            count(&home.join("staging")),
            0,
            "a refused image left staging behind"
        );
    }
});
