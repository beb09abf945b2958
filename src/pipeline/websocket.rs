//! WebSocket upgrades authenticated by cookie: the `Origin` check that stops cross-site
//! WebSocket hijacking.
//!
//! A browser attaches the gateway's cookies to an upgrade from any page of the same site (a
//! sibling subdomain, another port): `SameSite=Strict` does not stop it, and the CSRF header
//! is not required for a `GET`. Browsers always send `Origin` on a WebSocket handshake
//! (RFC 6455 section 4.1, item 8; the Fetch standard), so the gateway requires it to name the
//! gateway itself or an allowed `[cors]` origin. An upgrade authenticated by `Authorization`
//! is not affected: a page cannot make the browser attach that header on its own.

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Uri};

use super::error::GatewayError;
use crate::auth::AuthError;
use crate::config::cors::Cors;
use crate::routing::WebSocketToken;

/// The subprotocol name a browser client offers first, followed by its token.
pub const BEARER_PROTOCOL: &str = "bearer";
/// The query parameter of `websocket_token = "query"`.
const QUERY_PARAM: &str = "access_token";

/// `[[routes]] websocket_token`: take the token out of a WebSocket upgrade that has no
/// `Authorization`, so the upstream never receives it (and no URL it logs holds it).
/// `Ok(None)`: nothing there, the usual rules apply. Rejects with 401 (`TooLarge`) a token
/// longer than `max` bytes.
pub fn take_token<B>(
    mode: WebSocketToken,
    req: &mut Request<B>,
    max: usize,
) -> Result<Option<String>, AuthError> {
    if req.headers().contains_key(header::AUTHORIZATION) {
        return Ok(None);
    }
    let token = match mode {
        WebSocketToken::Subprotocol => from_subprotocol(req.headers_mut()),
        WebSocketToken::Query => from_query(req),
    };
    match token {
        Some(t) if t.len() > max => Err(AuthError::TooLarge),
        other => Ok(other),
    }
}

/// `Sec-WebSocket-Protocol: bearer, <token>[, others]`: the token, with `bearer` and the
/// token removed from the header (the rest, if any, go on to the upstream).
fn from_subprotocol(headers: &mut HeaderMap) -> Option<String> {
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let at = offered.iter().position(|p| p == BEARER_PROTOCOL)?;
    let token = offered.get(at + 1)?.clone();
    let rest: Vec<&str> = offered
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != at && *i != at + 1)
        .map(|(_, p)| p.as_str())
        .collect();
    headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
    if let Ok(v) = HeaderValue::from_str(&rest.join(", ")) {
        if !rest.is_empty() {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
    }
    Some(token)
}

/// `?access_token=<token>`: the token, with the parameter removed from the request URI
/// (other parameters kept in order). A URI that cannot be rebuilt keeps no query at all.
fn from_query<B>(req: &mut Request<B>) -> Option<String> {
    let query = req.uri().query()?;
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some((QUERY_PARAM, v)) if token.is_none() => token = Some(v.to_owned()),
            _ if pair == QUERY_PARAM || pair.starts_with("access_token=") => {}
            _ => rest.push(pair),
        }
    }
    let token = token?;
    let path = req.uri().path();
    let pq = if rest.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", rest.join("&"))
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = PathAndQuery::try_from(pq)
        .or_else(|_| PathAndQuery::try_from(path))
        .ok();
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    Some(token)
}

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

    #[test]
    fn subprotocol_token_is_taken_out() {
        let mut req = Request::builder()
            .uri("/ws")
            .header("sec-websocket-protocol", "bearer, abc.def.ghi, chat")
            .body(())
            .unwrap();
        let t = take_token(WebSocketToken::Subprotocol, &mut req, 100).unwrap();
        assert_eq!(t.as_deref(), Some("abc.def.ghi"));
        assert_eq!(req.headers()["sec-websocket-protocol"], "chat");
    }

    #[test]
    fn query_token_is_taken_out() {
        let mut req = Request::builder()
            .uri("/ws?a=1&access_token=abc.def&b=2")
            .body(())
            .unwrap();
        let t = take_token(WebSocketToken::Query, &mut req, 100).unwrap();
        assert_eq!(t.as_deref(), Some("abc.def"));
        assert_eq!(req.uri().to_string(), "/ws?a=1&b=2");
        let mut req = Request::builder()
            .uri("/ws?access_token=x")
            .body(())
            .unwrap();
        let _ = take_token(WebSocketToken::Query, &mut req, 100).unwrap();
        assert_eq!(req.uri().to_string(), "/ws");
        assert!(take_token(
            WebSocketToken::Query,
            &mut Request::builder()
                .uri("/ws?access_token=toolong")
                .body(())
                .unwrap(),
            3
        )
        .is_err());
    }
}
