//! DPoP at sign-in (RFC 9449 section 5): a login or refresh that carries a valid proof gets
//! an access token bound to the proof's key (`cnf.jkt`, `token_type: "DPoP"`) and a refresh
//! token bound to the same key.
//!
//! The proof itself is checked by the request path's DPoP gate before sign-in sees the
//! request (same `[dpop]` settings, nonces and replay cache as at the proxy; the `htu` is the
//! sign-in endpoint's URI; no `ath`, there is no access token yet). Sign-in gets the outcome
//! as a [`Proof`].
//!
//! **A bound refresh token** is `<random>.<jkt>`: the store keeps the SHA-256 of the whole
//! string, as for any refresh token, so the binding cannot be stripped or changed without
//! turning the token into an unknown one. It needs no change to the session stores' formats
//! (journal, Redis). A refresh presenting a bound token without a valid proof by that key
//! is theft by definition (the legitimate client holds the key): it counts as reuse, and the
//! whole session family ends, its access tokens revoked.

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::auth::dpop::{DpopError, DPOP_NONCE};
use crate::response;

/// What the DPoP gate made of a sign-in request's `DPoP` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// No `DPoP` header: tokens are issued as before (bearer).
    Absent,
    /// A valid proof (signature, `htm`, `htu`, `iat`, nonce, unseen `jti`) by the key with
    /// this RFC 7638 thumbprint.
    Valid(String),
    /// A `DPoP` header that did not pass, and the current server nonce when nonces are on.
    Invalid {
        error: DpopError,
        nonce: Option<String>,
    },
}

/// The refresh token `token` bound to the key `jkt`.
pub fn bind_refresh(token: &str, jkt: &str) -> String {
    format!("{token}.{jkt}")
}

/// The thumbprint a refresh token is bound to, if any (base64url has no `.`).
pub fn refresh_binding(token: &str) -> Option<&str> {
    token.split_once('.').map(|(_, jkt)| jkt)
}

/// The `cnf` claim that binds an access token to `jkt` (RFC 9449 section 6.1).
pub fn cnf_claim(jkt: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("cnf".into(), serde_json::json!({ "jkt": jkt }));
    m
}

/// The answer to a sign-in request whose proof failed: 400 with `invalid_dpop_proof`, or
/// `use_dpop_nonce` and a fresh `DPoP-Nonce` (RFC 9449 sections 5 and 8: a token endpoint
/// answers errors as RFC 6749 section 5.2 does, with 400).
pub fn refusal(error: DpopError, nonce: Option<&str>) -> Response<Full<Bytes>> {
    let mut r = response::error(StatusCode::BAD_REQUEST, error.code(), error.description());
    if let Some(v) = nonce.and_then(|n| HeaderValue::from_str(n).ok()) {
        r.headers_mut().insert(DPOP_NONCE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_refresh_token_names_its_key_and_an_unbound_one_none() {
        let t = bind_refresh("abc_-", "jkt-123");
        assert_eq!(refresh_binding(&t), Some("jkt-123"));
        assert_eq!(refresh_binding("abc_-"), None);
    }

    #[test]
    fn refusals_are_400_with_the_rfc_codes() {
        let r = refusal(DpopError::Signature, None);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(r.headers().get(DPOP_NONCE).is_none());
        let r = refusal(DpopError::UseNonce, Some("n-1"));
        assert_eq!(r.headers()[DPOP_NONCE], "n-1");
    }
}
