//! Any bytes given to the `*.dist-info` parsers (METADATA, RECORD, entry_points.txt): no panic. The
//! input is split at the first two 0xFF bytes into the three files (0xFF never occurs in UTF-8).
#![no_main]

use blast_engine::packages::{Distribution, parse_metadata};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0xFF);
    let metadata = parts.next().unwrap_or_default();
    let record = parts.next();
    let entry_points = parts.next();
    let _ = parse_metadata(&String::from_utf8_lossy(metadata));
    if let Ok((dist, _problems)) =
        Distribution::parse("fuzz-1.0.dist-info", metadata, record, entry_points)
    {
        assert!(!dist.name.to_string().is_empty());
    }
});
