//! Any bytes given to the layer decoder: no panic, and whatever it accepts is canonical (re-encodes to
//! exactly the same bytes, so one content has one id).
#![no_main]

use blast_store_format::Layer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(layer) = Layer::decode(data) {
        assert_eq!(
            layer.encode(),
            data,
            "accepted a non-canonical layer encoding"
        );
    }
});
