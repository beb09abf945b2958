//! Arbitrary bytes as a session journal body: the scanner must never panic or hang, and
//! must account for every byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::signin::sessions::scan_journal;

fuzz_target!(|data: &[u8]| {
    let scan = scan_journal(data);
    assert_eq!(scan.good_len + scan.torn, data.len());
    // A damaged stretch is counted only when an intact record follows it.
    assert!(scan.corrupt <= scan.records);
    // Every offset of the tail was tried: scanned on its own, it holds no record either.
    let tail = scan_journal(&data[scan.good_len..]);
    assert_eq!(tail.records, 0);
    assert_eq!(tail.torn, data.len() - scan.good_len);
});
