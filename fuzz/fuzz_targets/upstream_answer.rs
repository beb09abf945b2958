//! Arbitrary bytes as what an HTTP/1.1 upstream sends back on the wire path: the head parser
//! and the chunked decoder must never panic, never loop without progress, and a body they
//! accept is never longer than the bytes that carried it.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use portcullis::upstream::wire::{parse_head, Chunked, Framing, Step};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    // The answer arrives in pieces of a size the input picks, as reads would deliver it.
    let piece = usize::from(flags & 0x3f) + 1;
    let mut buf = BytesMut::new();
    let mut pieces = data.chunks(piece);
    let head = loop {
        match parse_head(&mut buf, flags & 0x40 != 0) {
            Ok(Some(head)) => break head,
            Ok(None) => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None => return,
            },
            Err(_) => return,
        }
    };
    if head.framing != Framing::Chunked {
        return;
    }
    let mut dec = Chunked::Size;
    let mut body = 0usize;
    loop {
        match dec.step(&mut buf) {
            Ok(Step::Data(d)) => {
                assert!(!d.is_empty(), "a data step makes progress");
                body += d.len();
                assert!(body <= data.len());
            }
            Ok(Step::Done) | Err(_) => return,
            Ok(Step::More) => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None => return,
            },
        }
    }
});
