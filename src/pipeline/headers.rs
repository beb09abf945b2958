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
    strip_request_hop_by_hop(headers).upgrade
}

/// What [`strip_request_hop_by_hop`] found among the headers it removed.
#[derive(Debug, Default)]
pub struct HopByHop {
    /// A WebSocket upgrade to tunnel (see [`strip_hop_by_hop`]).
    pub upgrade: Option<HeaderValue>,
    /// The client sent `TE: trailers` (and nothing else in `TE`): it accepts trailers, which
    /// gRPC servers insist on; the forwarder sends it on.
    pub te_trailers: bool,
}

/// Is `name` one of the fixed hop-by-hop headers (RFC 9110 section 7.6.1, and the
/// `Proxy-*` and `Keep-Alive` fields that older agents treat as such)?
fn is_fixed_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHORIZATION
        || name == header::PROXY_AUTHENTICATE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// `Transfer_Encoding`, `Content_Length` and friends are not framing headers to us, but a
/// CGI-style upstream reads `_` as `-` and would see a second, conflicting framing.
fn is_framing_alias(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.contains('_')
        && matches!(
            n.replace('_', "-").as_str(),
            "content-length"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "te"
                | "trailer"
                | "upgrade"
                | "host"
                | "proxy-connection"
        )
}

/// [`strip_hop_by_hop`], also reporting `TE: trailers` (read from the removed values, so no
/// extra lookup on the request path).
///
/// One pass over the names finds what is there to remove, and only that is removed: most
/// requests carry none of these (over HTTP/2 they are malformed, RFC 9113 section 8.2.2),
/// and a dozen hashed removals that find nothing were a visible share of a request's CPU.
pub fn strip_request_hop_by_hop(headers: &mut HeaderMap) -> HopByHop {
    let present: SmallVec<[HeaderName; 4]> = headers
        .keys()
        .filter(|name| is_fixed_hop_by_hop(name) || is_framing_alias(name))
        .cloned()
        .collect();
    if present.is_empty() {
        return HopByHop::default();
    }
    let mut te = None;
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
    for name in named.into_iter().chain(present) {
        let removed = headers.remove(&name);
        if name == header::TE {
            te = te.or(removed);
        }
    }
    HopByHop {
        upgrade,
        te_trailers: te.is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass check must see every name the removal takes out, each on its own:
    /// a name it missed would be forwarded.
    #[test]
    fn each_hop_by_hop_name_alone_is_removed() {
        for name in [
            "connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "proxy-authenticate",
            "keep-alive",
            "proxy-connection",
            "content_length",
            "Transfer_Encoding",
        ] {
            let mut h = HeaderMap::new();
            h.insert("x-end-to-end", HeaderValue::from_static("kept"));
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
            strip_request_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name} was forwarded");
            assert!(h.contains_key("x-end-to-end"));
        }
    }

    #[test]
    fn a_request_without_hop_by_hop_headers_is_left_alone() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        h.insert("x-custom-name", HeaderValue::from_static("v"));
        let before = h.clone();
        let found = strip_request_hop_by_hop(&mut h);
        assert_eq!(h, before);
        assert!(found.upgrade.is_none() && !found.te_trailers);
    }
}
