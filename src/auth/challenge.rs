//! How a refused token is answered, wherever it was refused (the data path, or sign-in's
//! logout endpoints): 401 with a `WWW-Authenticate` challenge as RFC 6750 section 3 requires
//! (a bare challenge when no token was sent, `error="invalid_token"` otherwise), and 403 for a
//! cookie-mode request without the CSRF header.

use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{Response, StatusCode};

use super::AuthError;
use crate::response;

/// Realm named in `WWW-Authenticate` challenges.
pub const REALM: &str = "portcullis";

/// 401 for a token that is missing or fails a check; generic text, the reason is logged by
/// the caller.
pub fn refusal(a: AuthError) -> Response<response::Body> {
    let code = match a {
        AuthError::Missing => "unauthorized",
        _ => "invalid_token",
    };
    let mut r = response::error(StatusCode::UNAUTHORIZED, code, a.description());
    r.headers_mut().insert(WWW_AUTHENTICATE, bearer(a));
    r
}

/// 403 for a state-changing cookie-mode request whose CSRF header is missing or does not
/// match the CSRF cookie. No challenge: a token would not help.
pub fn csrf_refusal() -> Response<response::Body> {
    response::error(StatusCode::FORBIDDEN, "forbidden", "CSRF token required")
}

/// 403 for a good token that no `[[routes.allow]]` rule lets through (RFC 6750 section
/// 3.1): `Bearer error="insufficient_scope"`, with `scope="..."` when the rules for the
/// method name scopes, so a client knows which token to ask for.
pub fn insufficient_scope(scope: Option<&str>) -> Response<response::Body> {
    let mut r = response::error(
        StatusCode::FORBIDDEN,
        "insufficient_scope",
        "the token does not grant access to this resource",
    );
    let text = match scope {
        Some(s) => format!("Bearer error=\"insufficient_scope\", scope=\"{s}\""),
        None => "Bearer error=\"insufficient_scope\"".to_owned(),
    };
    // Scopes come from the config (validated: no whitespace inside one, no quotes checked
    // here), so fall back to the bare challenge rather than fail on an odd byte.
    let value = HeaderValue::from_str(&text)
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"insufficient_scope\""));
    r.headers_mut().insert(WWW_AUTHENTICATE, value);
    r
}

/// The `Bearer` challenge for `a`.
pub fn bearer(a: AuthError) -> HeaderValue {
    let text = match a {
        AuthError::Missing => format!("Bearer realm=\"{REALM}\""),
        other => format!(
            "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
            other.description()
        ),
    };
    // Built from constants without quotes or control characters, so always valid.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}
