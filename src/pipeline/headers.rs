//! Header hygiene on the way in and out, RFC 9110 section 7.6.1: hop-by-hop headers end at
//! the gateway. The request step runs first in the checklist, before the identity headers
//! are stripped and injected, so a client naming `x-user-id` in `Connection` cannot delete
//! the identity the gateway is about to set; `forward` runs it again on upstream answers.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Remove hop-by-hop headers (RFC 9110 section 7.6.1): `Connection`, every header it names
/// (except `Host`, which is never hop-by-hop), and the fixed list.
///
/// Returns the `Upgrade` value when the message asks for a WebSocket upgrade, which the caller
/// re-adds for the tunnel. Only `websocket` is ever tunnelled: after any other upgrade
/// (`h2c` above all) the client would speak a protocol the gateway never inspects directly to
/// the upstream, and could send it unauthenticated requests for any path ("h2c smuggling").
/// Such a request is forwarded as a plain request with its upgrade headers removed.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    let mut named: SmallVec<[HeaderName; 4]> = SmallVec::new();
    let mut wants_upgrade = false;
    for v in headers.get_all(header::CONNECTION) {
        let Ok(s) = v.to_str() else { continue };
        for token in s.split(',') {
            let token = token.trim();
            if token.eq_ignore_ascii_case("upgrade") {
                wants_upgrade = true;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                if name != header::HOST {
                    named.push(name);
                }
            }
        }
    }
    let upgrade = headers
        .get(header::UPGRADE)
        .filter(|v| wants_upgrade && v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        .cloned();
    for name in named {
        headers.remove(name);
    }
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHORIZATION,
        &header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    // `Transfer_Encoding`, `Content_Length` and friends are not framing headers to us, but a
    // CGI-style upstream reads `_` as `-` and would see a second, conflicting framing.
    let mut doomed: SmallVec<[HeaderName; 2]> = SmallVec::new();
    for name in headers.keys() {
        let n = name.as_str();
        if n.contains('_') {
            let folded = n.replace('_', "-");
            if matches!(
                folded.as_str(),
                "content-length"
                    | "transfer-encoding"
                    | "connection"
                    | "keep-alive"
                    | "te"
                    | "trailer"
                    | "upgrade"
                    | "host"
                    | "proxy-connection"
            ) {
                doomed.push(name.clone());
            }
        }
    }
    for name in doomed {
        headers.remove(name);
    }
    upgrade
}
