//! Arbitrary bytes as a revocation log (whole file, and body only): the decoders must never
//! panic, must account for every byte, and every record they return must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::revocation::record::MAGIC;
use portcullis::revocation::{decode_file, decode_records};

fuzz_target!(|data: &[u8]| {
    let (records, scan) = decode_records(data);
    assert_eq!(records.len(), scan.records);
    assert_eq!(scan.good_len + scan.tail, data.len());
    let runs: usize = scan.runs.iter().map(|(a, b)| b - a).sum();
    let damaged: usize = scan.damaged.iter().map(|d| d.len).sum();
    assert_eq!(runs + damaged, scan.good_len);
    for r in &records {
        let (again, _) = decode_records(&r.encode());
        assert_eq!(again, vec![*r]);
    }
    // The same bytes behind a valid header decode to the same records.
    let mut file = MAGIC.to_vec();
    file.extend_from_slice(data);
    let (again, scan_again) = decode_file(&file).expect("valid header");
    assert_eq!(again, records);
    assert_eq!(scan_again, scan);
    // And the raw bytes as a whole file: anything but a panic.
    let _ = decode_file(data);
});
