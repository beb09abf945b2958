//! WebSocket upgrades authenticated by cookie: the `Origin` check that stops cross-site
//! WebSocket hijacking.
//!
//! A browser attaches the gateway's cookies to an upgrade from any page of the same site (a
//! sibling subdomain, another port): `SameSite=Strict` does not stop it, and the CSRF header
//! is not required for a `GET`. Browsers always send `Origin` on a WebSocket handshake
//! (RFC 6455 section 4.1, item 8; the Fetch standard), so the gateway requires it to name the
//! gateway itself or an allowed `[cors]` origin. An upgrade authenticated by `Authorization`
//! is not affected: a page cannot make the browser attach that header on its own.

use http::header::{self, HeaderMap};

use super::error::GatewayError;
use crate::config::cors::Cors;

/// Would this upgrade authenticate by cookie? Cookie mode is on and there is no
/// `Authorization` header (the rule `authenticate` applies).
pub fn by_cookie(cookie_mode: bool, headers: &HeaderMap) -> bool {
    cookie_mode && !headers.contains_key(header::AUTHORIZATION)
}

/// Check the `Origin` of a cookie-authenticated upgrade. Rejects with 403 when it is absent,
/// or names neither the gateway's own origin (`https://` + `Host` on a TLS listener) nor an
/// origin in `[cors] allowed_origins`.
pub fn check_origin(
    headers: &HeaderMap,
    tls: bool,
    cors: Option<&Cors>,
) -> Result<(), GatewayError> {
    let Some(origin) = headers.get(header::ORIGIN).map(|o| o.as_bytes()) else {
        return Err(GatewayError::WebSocketOrigin);
    };
    if is_own_origin(origin, headers, tls) || cors.is_some_and(|c| c.allows_origin(origin)) {
        Ok(())
    } else {
        Err(GatewayError::WebSocketOrigin)
    }
}

/// `origin` is `scheme://host[:port]` of this very request: the scheme of the listener and
/// the `Host` the client sent (ASCII case-insensitive; browsers omit a default port in both).
fn is_own_origin(origin: &[u8], headers: &HeaderMap, tls: bool) -> bool {
    let scheme: &[u8] = if tls { b"https://" } else { b"http://" };
    let Some(host) = headers.get(header::HOST) else {
        return false;
    };
    origin.len() == scheme.len() + host.len()
        && origin[..scheme.len()].eq_ignore_ascii_case(scheme)
        && origin[scheme.len()..].eq_ignore_ascii_case(host.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(origin: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("gw.example:8443"));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_static(o));
        }
        h
    }

    #[test]
    fn own_origin_passes_others_do_not() {
        assert!(check_origin(&headers(Some("https://gw.example:8443")), true, None).is_ok());
        assert!(check_origin(&headers(Some("https://GW.example:8443")), true, None).is_ok());
        for bad in [
            None,
            Some("http://gw.example:8443"),
            Some("https://gw.example:9443"),
            Some("https://sub.gw.example:8443"),
            Some("null"),
        ] {
            assert!(check_origin(&headers(bad), true, None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn authorization_is_not_cookie() {
        let mut h = headers(None);
        assert!(by_cookie(true, &h));
        assert!(!by_cookie(false, &h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(!by_cookie(true, &h));
    }
}
