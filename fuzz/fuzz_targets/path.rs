//! Arbitrary request paths: `normalise_path` must never panic, and what it returns is what the
//! router matches and the upstream receives, so it must be fully normalised: absolute, no dot
//! segments, no empty segments, no encoded or raw separators, and a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::pipeline::route::normalise_path;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(out) = normalise_path(raw) else {
        return;
    };
    assert!(out.starts_with('/'), "{raw:?} -> {out:?}");
    let upper = out.to_ascii_uppercase();
    for bad in ["/../", "/./", "//", "%2F", "%5C", "\\"] {
        assert!(!upper.contains(bad), "{raw:?} -> {out:?} contains {bad}");
    }
    assert!(
        !out.ends_with("/..") && !out.ends_with("/.") && out != "." && out != "..",
        "{raw:?} -> {out:?} ends in a dot segment"
    );
    for seg in out.split('/') {
        let bare = seg.split(';').next().unwrap_or("");
        assert!(
            bare != "." && bare != "..",
            "{raw:?} -> {out:?} keeps a dot segment"
        );
    }
    assert_eq!(
        normalise_path(&out),
        Ok(out.clone()),
        "normalising {raw:?} -> {out:?} again changed it"
    );
});
