//! The CORS step: answer a browser's preflight at the edge and mark every other response to
//! an allowed origin as readable by that origin (Fetch standard, "CORS protocol").
//!
//! Runs only when `[cors]` is set and the route has not turned it off. The preflight is
//! answered before the checklist because a browser sends it without credentials: sent on to
//! `authenticate` it would get a 401 the page can never read. Every other response (the
//! gateway's own 401/403/429/5xx included) is decorated by [`decorate`] after the checklist, so
//! a page can read why it was refused. The upstream's own `Access-Control-*` headers are
//! removed first: the gateway is the one place that decides who may read.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::error::GatewayError;
use crate::config::cors::Cors;
use crate::response::{self, Body};

static TRUE: HeaderValue = HeaderValue::from_static("true");
static ORIGIN: HeaderValue = HeaderValue::from_static("Origin");

/// A preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Answer a preflight: 204 with the origin echoed, the allowed methods and headers,
/// `Max-Age`, credentials when set and `Vary: Origin`. Rejects with 403 (and no
/// `Access-Control-Allow-*` header, so the browser blocks the real request) when the origin,
/// the method or one of the requested headers is not allowed.
pub fn preflight<B>(cors: &Cors, req: &Request<B>) -> Result<Response<Body>, GatewayError> {
    let h = req.headers();
    let origin = match h.get(header::ORIGIN) {
        Some(o) if cors.allows_origin(o.as_bytes()) => o.clone(),
        _ => return Err(GatewayError::CorsRefused("origin not allowed")),
    };
    let method_allowed = h
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| cors.allowed_methods.iter().any(|a| a == m.trim()));
    if !method_allowed {
        return Err(GatewayError::CorsRefused("method not allowed"));
    }
    for v in h.get_all(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        let Ok(list) = v.to_str() else {
            return Err(GatewayError::CorsRefused("header not allowed"));
        };
        let all_allowed = list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .all(|n| {
                cors.allowed_headers
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(n))
            });
        if !all_allowed {
            return Err(GatewayError::CorsRefused("header not allowed"));
        }
    }
    let mut resp = response::empty(StatusCode::NO_CONTENT);
    let out = resp.headers_mut();
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        cors.methods_value.clone(),
    );
    if let Some(v) = &cors.headers_value {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
    }
    out.insert(header::ACCESS_CONTROL_MAX_AGE, cors.max_age_value.clone());
    if cors.allow_credentials {
        out.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
    }
    out.insert(header::VARY, ORIGIN.clone());
    Ok(resp)
}

/// Decorate a response on a CORS route: drop the upstream's `Access-Control-*`, add
/// `Vary: Origin` (the answer depends on it, so a shared cache must key on it), and, for an
/// allowed `origin`, the origin echoed (never `*`), credentials when set and the exposed
/// headers. Never rejects: a disallowed origin simply gets no permission to read.
pub fn decorate(cors: &Cors, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    strip_access_control(headers);
    headers.append(header::VARY, ORIGIN.clone());
    let Some(origin) = origin.filter(|o| cors.allows_origin(o.as_bytes())) else {
        return;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if cors.allow_credentials {
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
    }
    if let Some(v) = &cors.expose_value {
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
    }
}

/// Remove every `Access-Control-*` header.
fn strip_access_control(headers: &mut HeaderMap) {
    // Collected first: a HeaderMap cannot be edited while iterated. Rarely any at all.
    let names: Vec<header::HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file;

    fn cors(text: &str) -> Cors {
        let f: file::Cors = toml::from_str(text).unwrap();
        Cors::validate(&f, &mut Vec::new()).unwrap()
    }

    fn preflight_req(origin: &str, method: &str, headers: Option<&str>) -> Request<()> {
        let mut b = Request::builder()
            .method(Method::OPTIONS)
            .uri("/api")
            .header("origin", origin)
            .header("access-control-request-method", method);
        if let Some(h) = headers {
            b = b.header("access-control-request-headers", h);
        }
        b.body(()).unwrap()
    }

    const APP: &str = "allowed_origins = [\"https://app.example\"]\nallowed_headers = [\"authorization\", \"content-type\"]\nallow_credentials = true\nexpose_headers = [\"x-request-id\"]";

    #[test]
    fn allowed_preflight_is_answered() {
        let c = cors(APP);
        let req = preflight_req(
            "https://app.example",
            "POST",
            Some("Content-Type, authorization"),
        );
        assert!(is_preflight(&req));
        let r = preflight(&c, &req).unwrap();
        assert_eq!(r.status(), 204);
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-allow-methods"], "GET, HEAD, POST");
        assert_eq!(
            h["access-control-allow-headers"],
            "authorization, content-type"
        );
        assert_eq!(h["access-control-max-age"], "600");
        assert_eq!(h["vary"], "Origin");
    }

    #[test]
    fn preflight_refusals() {
        let c = cors(APP);
        for req in [
            preflight_req("https://evil.example", "GET", None),
            preflight_req("https://app.example", "DELETE", None),
            preflight_req("https://app.example", "GET", Some("x-secret")),
        ] {
            let e = preflight(&c, &req).unwrap_err();
            assert_eq!(e.status(), 403);
        }
    }

    #[test]
    fn decorate_replaces_upstream_headers() {
        let c = cors(APP);
        let mut h = HeaderMap::new();
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        h.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("*"),
        );
        let origin = HeaderValue::from_static("https://app.example");
        decorate(&c, Some(&origin), &mut h);
        assert_eq!(h["access-control-allow-origin"], "https://app.example");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-expose-headers"], "x-request-id");
        assert!(!h.contains_key("access-control-allow-methods"));

        let mut h = HeaderMap::new();
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        let evil = HeaderValue::from_static("https://evil.example");
        decorate(&c, Some(&evil), &mut h);
        assert!(!h.contains_key("access-control-allow-origin"));
        assert_eq!(h["vary"], "Origin");
    }
}
