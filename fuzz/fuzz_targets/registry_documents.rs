//! Any bytes given to `blast pull`'s checks of what a registry serves: an image manifest and a config
//! blob, split at the first 0xFF byte (which never occurs in UTF-8 JSON). No panic, and a config it
//! accepts names the snapshot it describes.
#![no_main]

use blast_engine::images::oci::check_documents;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |&b| b == 0xFF);
    let manifest = parts.next().unwrap_or_default();
    let config = parts.next().unwrap_or_default();
    if let Ok((layers, _snapshot)) = check_documents(manifest, config) {
        assert!(layers.len() <= manifest.len());
    }
});
