//! The gateway's own answers: every JSON body it sends, errors included, is built here, so
//! there is one error shape for the data path, sign-in and the admin API:
//!
//! ```json
//! {"error": "<stable code>", "error_description": "<generic text for people>"}
//! ```
//!
//! (the shape of RFC 6749 section 5.2 and RFC 6750 section 3). The code is what a client
//! matches on; the text stays generic, and the precise reason goes to the log. Every such
//! answer carries `Cache-Control: no-store`: none of them may be replayed from a cache.

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;

/// A response body the gateway wrote itself.
pub type Body = Full<Bytes>;

/// `body` as JSON with `status`, `Content-Type: application/json` and `no-store`.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The one error body: `{"error": code, "error_description": description}`.
pub fn error(status: StatusCode, code: &str, description: &str) -> Response<Body> {
    json(
        status,
        &serde_json::json!({ "error": code, "error_description": description }),
    )
}

/// An empty answer (204 and friends).
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// A gRPC refusal (the gRPC over HTTP/2 protocol, "Trailers-Only" response): HTTP 200,
/// `content-type: application/grpc`, no body, and the status in `grpc-status` and
/// `grpc-message` (percent-encoded as that protocol asks) on the one header block, which
/// HTTP/2 sends with END_STREAM.
pub fn grpc_status(code: u32, message: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    if let Ok(v) = HeaderValue::from_str(&code.to_string()) {
        h.insert("grpc-status", v);
    }
    let mut text = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            text.push(char::from(b));
        } else {
            text.push_str(&format!("%{b:02X}"));
        }
    }
    if let Ok(v) = HeaderValue::from_str(&text) {
        h.insert("grpc-message", v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A short `text/plain` answer (health and readiness probes).
pub fn text(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn error_has_the_one_shape() {
        let r = error(StatusCode::NOT_FOUND, "not_found", "no such thing");
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
        let body = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(r.into_body().collect())
            .unwrap()
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "not_found", "error_description": "no such thing"})
        );
    }
}
