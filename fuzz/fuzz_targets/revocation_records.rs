//! Arbitrary bytes as a revocation log (whole file, and body only): the decoders must never
//! panic, must account for every byte, and every record they return must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::revocation::{decode_file, decode_records, Record};

const RECORD_LEN: usize = 37;
const MAGIC: &[u8] = b"PCRVLOG\x01";

fuzz_target!(|data: &[u8]| {
    let (records, scan) = decode_records(data);
    assert_eq!(records.len(), scan.records);
    assert_eq!(scan.good_len % RECORD_LEN, 0);
    assert_eq!(scan.good_len + scan.torn, data.len());
    assert_eq!(scan.records + scan.corrupt, scan.good_len / RECORD_LEN);
    for r in &records {
        let encoded = r.encode();
        assert_eq!(Record::decode(&encoded), Some(*r));
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
