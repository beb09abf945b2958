//! Arbitrary bytes as a session journal body: the scanner must never panic or hang, and
//! must account for every byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::signin::sessions::scan_journal;

fuzz_target!(|data: &[u8]| {
    let scan = scan_journal(data);
    assert_eq!(scan.good_len + scan.tail, data.len());
    // Damaged stretches and intact runs cover everything up to the last intact record.
    let runs: usize = scan.runs.iter().map(|(a, b)| b - a).sum();
    let damaged: usize = scan.damaged.iter().map(|d| d.len).sum();
    assert_eq!(runs + damaged, scan.good_len);
    // Every offset of the tail was tried: scanned on its own, it holds no record either.
    let tail = scan_journal(&data[scan.good_len..]);
    assert_eq!(tail.records, 0);
    assert_eq!(tail.tail, data.len() - scan.good_len);
});
