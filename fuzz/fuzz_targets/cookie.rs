//! Arbitrary `Cookie` fields (the input split on 0xFF, each part one field): `cookie::get` and
//! `cookie::strip` must never panic, and once the gateway's cookies are stripped none of them
//! can be read back (the upstream must never receive a gateway credential), while every other
//! cookie is kept, in order.
#![no_main]

use http::header::{HeaderMap, HeaderValue, COOKIE};
use libfuzzer_sys::fuzz_target;
use portcullis::auth::cookie;

const OURS: [&str; 2] = ["__Host-portcullis", "__Secure-portcullis-refresh"];

/// Every `name=value` pair a reader would see, with the names trimmed as `cookie` does.
fn others(headers: &HeaderMap) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for v in headers.get_all(COOKIE) {
        for pair in v.as_bytes().split(|&b| b == b';') {
            if let Some(eq) = pair.iter().position(|&b| b == b'=') {
                let name = pair[..eq].trim_ascii();
                if !OURS.iter().any(|o| o.as_bytes() == name) {
                    out.push(name.to_vec());
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for part in data.split(|&b| b == 0xff).take(4) {
        if let Ok(v) = HeaderValue::from_bytes(part) {
            headers.append(COOKIE, v);
        }
    }
    for name in OURS {
        let _ = cookie::get(&headers, name);
    }
    let before = others(&headers);
    cookie::strip(&mut headers, &OURS);
    for name in OURS {
        assert!(
            matches!(cookie::get(&headers, name), Ok(None)),
            "{name} survived stripping: {headers:?}"
        );
    }
    assert_eq!(others(&headers), before, "other cookies changed");
});
