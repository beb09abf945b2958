//! Arbitrary bytes as an `Authorization` header value: `bearer::parse` must never panic, and a
//! token it returns is a trimmed, non-empty, bounded slice after a case-insensitive `Bearer `.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::auth::bearer;

const MAX: usize = 64;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = bearer::parse(data, MAX) {
        assert!(data.len() > 7 && data[..6].eq_ignore_ascii_case(b"bearer") && data[6] == b' ');
        assert!(!token.is_empty() && token.len() <= MAX);
        let b = token.as_bytes();
        for edge in [b[0], b[b.len() - 1]] {
            assert!(edge != b' ' && edge != b'\t', "{token:?}");
        }
        // The token is a slice of the input.
        let start = token.as_ptr() as usize - data.as_ptr() as usize;
        assert!(start >= 7 && start + token.len() <= data.len());
    }
});
