//! Any bytes given to the snapshot decoder: no panic, and whatever it accepts is canonical (re-encodes to
//! exactly the same bytes, so one content has one id).
#![no_main]

use blast_store_format::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = Snapshot::decode(data) {
        assert_eq!(
            snapshot.encode(),
            data,
            "accepted a non-canonical snapshot encoding"
        );
    }
});
