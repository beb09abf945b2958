//! One table from gateway error to status, headers and JSON body.
//!
//! Client-facing text stays generic (see `AuthError::description`); the precise reason goes
//! to the log and the metrics label. 401s carry `WWW-Authenticate` as RFC 6750 section 3
//! requires: a bare challenge when no token was sent, `error="invalid_token"` otherwise.
//! An app-key failure is not a bearer-token matter, so its challenge names the `ApiKey`
//! scheme instead (RFC 9110 section 11.6.1 asks every 401 for a challenge, and a `Bearer`
//! one would send a client after the wrong credential): `ApiKey realm="portcullis"`, with
//! `error="invalid_key"` when a key was sent but refused.

use bytes::Bytes;
use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::route::PathError;
use crate::apikeys::ApiKeyError;
use crate::auth::cookie::Refusal;
use crate::auth::{challenge, AuthError};
use crate::response;

pub use crate::auth::challenge::REALM;

/// Everything that can stop a request inside the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("bad request path: {0}")]
    BadPath(#[from] PathError),
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("no route matches")]
    NoRoute,
    #[error("request body larger than the route allows")]
    PayloadTooLarge,
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    #[error("API key refused: {0}")]
    ApiKey(#[from] ApiKeyError),
    /// A DPoP rule failed (RFC 9449): 401 with a `DPoP` challenge. Boxed: it carries the
    /// challenge header, and every other variant stays small.
    #[error("DPoP refused: {0}")]
    Dpop(Box<super::dpop::DpopRefusal>),
    /// Cookie mode: a state-changing request authenticated by cookie without a CSRF header
    /// matching the CSRF cookie.
    #[error("CSRF token missing or not matching the CSRF cookie")]
    Csrf,
    /// A good token that no `[[routes.allow]]` rule lets through (403 `insufficient_scope`).
    #[error("no access rule allows this request")]
    Forbidden(crate::access::Denied),
    /// Over the route's `rate_limit` (429 with `Retry-After` and the rate-limit fields).
    #[error("rate limit exceeded")]
    RateLimited {
        spec: crate::ratelimit::RateSpec,
        retry_after_secs: u64,
    },
    /// `[cors]`: a preflight for an origin, method or header that is not allowed.
    #[error("CORS preflight refused: {0}")]
    CorsRefused(&'static str),
    /// A cookie-authenticated WebSocket upgrade without an allowed `Origin`.
    #[error("WebSocket upgrade by cookie from a foreign or missing Origin")]
    WebSocketOrigin,
    /// Cluster mode before the first full load from Redis: whether a token is revoked is
    /// not known yet, so nothing passes (fail closed), and the client is told the truth
    /// (503, retry) rather than that its token was revoked.
    #[error("the revocation state is not loaded yet")]
    RevocationUnavailable,
    #[error("upstream unreachable: {0}")]
    UpstreamConnect(String),
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    #[error("upstream failed: {0}")]
    Upstream(String),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadPath(_) | GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::NoRoute => StatusCode::NOT_FOUND,
            GatewayError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::Auth(_) | GatewayError::ApiKey(_) | GatewayError::Dpop(_) => {
                StatusCode::UNAUTHORIZED
            }
            GatewayError::Csrf | GatewayError::Forbidden(_) => StatusCode::FORBIDDEN,
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::CorsRefused(_) | GatewayError::WebSocketOrigin => StatusCode::FORBIDDEN,
            GatewayError::UpstreamConnect(_) | GatewayError::Upstream(_) => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::RevocationUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Short stable label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::BadPath(_) => "bad_path",
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::NoRoute => "no_route",
            GatewayError::PayloadTooLarge => "payload_too_large",
            GatewayError::Auth(a) => a.reason(),
            GatewayError::ApiKey(k) => k.reason(),
            GatewayError::Dpop(d) => d.error.reason(),
            GatewayError::Csrf => "csrf",
            GatewayError::Forbidden(_) => "insufficient_scope",
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::CorsRefused(_) => "cors_refused",
            GatewayError::WebSocketOrigin => "websocket_origin",
            GatewayError::UpstreamConnect(_) => "upstream_connect",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::Upstream(_) => "upstream_error",
            GatewayError::RevocationUnavailable => "revocation_unavailable",
        }
    }

    /// The response the client sees (the one error shape, built by `response`).
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let (code, description) = match self {
            GatewayError::Auth(a) => return challenge::refusal(*a),
            GatewayError::Csrf => return challenge::csrf_refusal(),
            GatewayError::Forbidden(d) => return challenge::insufficient_scope(d.scope.as_deref()),
            GatewayError::RateLimited {
                spec,
                retry_after_secs,
            } => return rate_limited(spec, *retry_after_secs),
            GatewayError::Dpop(d) => return d.to_response(),
            GatewayError::BadPath(_) => ("invalid_request", "the request path is not acceptable"),
            GatewayError::BadRequest(what) => ("invalid_request", *what),
            GatewayError::CorsRefused(what) => ("cors_refused", *what),
            GatewayError::WebSocketOrigin => (
                "forbidden",
                "a WebSocket authenticated by cookie must come from this site's own origin or an allowed one",
            ),
            GatewayError::NoRoute => ("not_found", "no route for this path"),
            GatewayError::PayloadTooLarge => (
                "payload_too_large",
                "the request body is too large for this route",
            ),
            GatewayError::ApiKey(ApiKeyError::Missing) => {
                ("unauthorized", ApiKeyError::Missing.description())
            }
            GatewayError::ApiKey(k) => ("invalid_api_key", k.description()),
            GatewayError::UpstreamConnect(_) | GatewayError::Upstream(_) => {
                ("bad_gateway", "the upstream service is unavailable")
            }
            GatewayError::UpstreamTimeout => (
                "gateway_timeout",
                "the upstream service did not answer in time",
            ),
            GatewayError::RevocationUnavailable => (
                "temporarily_unavailable",
                "the revocation state is unavailable (not loaded yet); retry shortly",
            ),
        };
        let mut resp = response::error(self.status(), code, description);
        if let GatewayError::ApiKey(k) = self {
            resp.headers_mut()
                .insert(WWW_AUTHENTICATE, api_key_challenge(*k));
        }
        if let GatewayError::RevocationUnavailable = self {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// Add the request's context to an error body the gateway wrote: `request_id` (what the
/// client also gets in `x-request-id`) and `trace_id` (the W3C trace), so a client that
/// reports an error hands over what finds its log lines. Bodies that are not a JSON object
/// pass unchanged. Error path only: one copy of a body of a few dozen bytes.
pub fn with_context(
    resp: Response<Full<Bytes>>,
    request_id: &HeaderValue,
    trace_id: &str,
) -> Response<Full<Bytes>> {
    use futures_util::FutureExt as _;
    use http_body_util::BodyExt as _;
    let (parts, body) = resp.into_parts();
    // `Full` is ready at once: its one frame is there without waiting.
    let bytes = match body.collect().now_or_never() {
        Some(Ok(c)) => c.to_bytes(),
        _ => Bytes::new(),
    };
    let (Some(b'}'), Ok(id)) = (bytes.last(), request_id.to_str()) else {
        return Response::from_parts(parts, Full::new(bytes));
    };
    let id = serde_json::to_string(id).unwrap_or_else(|_| "\"-\"".into());
    let mut out = Vec::with_capacity(bytes.len() + id.len() + trace_id.len() + 32);
    out.extend_from_slice(&bytes[..bytes.len() - 1]);
    out.extend_from_slice(b",\"request_id\":");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b",\"trace_id\":\"");
    out.extend_from_slice(trace_id.as_bytes());
    out.extend_from_slice(b"\"}");
    let mut resp = Response::from_parts(parts, Full::new(Bytes::from(out)));
    resp.headers_mut().remove(http::header::CONTENT_LENGTH);
    resp
}

impl GatewayError {
    /// The gRPC status code for this refusal of a gRPC call (issue 16): 16 UNAUTHENTICATED
    /// for 401, 7 PERMISSION_DENIED for 403, 8 RESOURCE_EXHAUSTED for 429 and 413,
    /// 14 UNAVAILABLE for 502/503/504, and gRPC's own HTTP mapping for the rest (404: 12
    /// UNIMPLEMENTED, 400: 13 INTERNAL).
    pub fn grpc_code(&self) -> u32 {
        match self.status().as_u16() {
            401 => 16,
            403 => 7,
            429 | 413 => 8,
            502..=504 => 14,
            404 => 12,
            400 => 13,
            _ => 2,
        }
    }

    /// The client-facing text of a gRPC refusal (generic, as for every answer).
    fn grpc_message(&self) -> &'static str {
        match self {
            GatewayError::Auth(a) => a.description(),
            GatewayError::ApiKey(k) => k.description(),
            GatewayError::Dpop(_) => "DPoP proof required or invalid",
            GatewayError::Csrf | GatewayError::Forbidden(_) => "permission denied",
            GatewayError::CorsRefused(_) | GatewayError::WebSocketOrigin => "permission denied",
            GatewayError::RateLimited { .. } => "too many requests; retry later",
            GatewayError::PayloadTooLarge => "the request body is too large for this route",
            GatewayError::NoRoute => "no route for this path",
            GatewayError::BadPath(_) | GatewayError::BadRequest(_) => "bad request",
            GatewayError::UpstreamConnect(_) | GatewayError::Upstream(_) => {
                "the upstream service is unavailable"
            }
            GatewayError::UpstreamTimeout => "the upstream service did not answer in time",
            GatewayError::RevocationUnavailable => "revocation state is unavailable; retry",
        }
    }

    /// The answer to a gRPC call (`content-type: application/grpc*`): HTTP 200, trailers
    /// only, with `grpc-status` and `grpc-message` (a gRPC client reads no HTTP status).
    pub fn to_grpc_response(&self) -> Response<Full<Bytes>> {
        let mut r = response::grpc_status(self.grpc_code(), self.grpc_message());
        if let GatewayError::RateLimited {
            retry_after_secs, ..
        } = self
        {
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                r.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
        }
        r
    }
}

/// 429 with `Retry-After` (RFC 9110 section 10.2.3, whole seconds) and the fields of
/// draft-ietf-httpapi-ratelimit-headers in their structured-field form: the policy
/// (`"route";q=quota;w=window`) and the state (`"route";r=0;t=seconds until a request fits`).
fn rate_limited(spec: &crate::ratelimit::RateSpec, retry_after: u64) -> Response<Full<Bytes>> {
    let mut r = response::error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many requests; retry later",
    );
    let h = r.headers_mut();
    // Digits and fixed ASCII only: always valid header values.
    if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
        h.insert(http::header::RETRY_AFTER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&spec.policy_header()) {
        h.insert(RATELIMIT_POLICY.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"route\";r=0;t={retry_after}")) {
        h.insert(RATELIMIT.clone(), v);
    }
    r
}

static RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
static RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

impl From<Refusal> for GatewayError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Auth(a) => GatewayError::Auth(a),
            Refusal::Csrf => GatewayError::Csrf,
        }
    }
}

fn api_key_challenge(k: ApiKeyError) -> HeaderValue {
    let text = match k {
        ApiKeyError::Missing => format!("ApiKey realm=\"{REALM}\""),
        _ => format!("ApiKey realm=\"{REALM}\", error=\"invalid_key\""),
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("ApiKey"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::CACHE_CONTROL;
    use http_body_util::BodyExt;

    fn body_json(e: &GatewayError) -> serde_json::Value {
        let resp = e.to_response();
        let bytes = block_on(resp.into_body().collect()).unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn each_error_maps_to_its_status() {
        let cases = [
            (
                GatewayError::BadPath(PathError::AboveRoot),
                400,
                "invalid_request",
            ),
            (GatewayError::BadRequest("x"), 400, "invalid_request"),
            (GatewayError::NoRoute, 404, "not_found"),
            (GatewayError::PayloadTooLarge, 413, "payload_too_large"),
            (GatewayError::Auth(AuthError::Missing), 401, "unauthorized"),
            (
                GatewayError::Auth(AuthError::Signature),
                401,
                "invalid_token",
            ),
            (GatewayError::Auth(AuthError::Revoked), 401, "invalid_token"),
            (GatewayError::Csrf, 403, "forbidden"),
            (
                GatewayError::Forbidden(crate::access::Denied { scope: None }),
                403,
                "insufficient_scope",
            ),
            (
                GatewayError::CorsRefused("origin not allowed"),
                403,
                "cors_refused",
            ),
            (GatewayError::WebSocketOrigin, 403, "forbidden"),
            (
                GatewayError::ApiKey(ApiKeyError::Missing),
                401,
                "unauthorized",
            ),
            (
                GatewayError::ApiKey(ApiKeyError::Malformed),
                401,
                "invalid_api_key",
            ),
            (
                GatewayError::ApiKey(ApiKeyError::Unknown),
                401,
                "invalid_api_key",
            ),
            (
                GatewayError::UpstreamConnect("refused".into()),
                502,
                "bad_gateway",
            ),
            (GatewayError::Upstream("reset".into()), 502, "bad_gateway"),
            (GatewayError::UpstreamTimeout, 504, "gateway_timeout"),
            (
                GatewayError::RevocationUnavailable,
                503,
                "temporarily_unavailable",
            ),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status().as_u16(), status, "{e}");
            assert_eq!(body_json(&e)["error"], code, "{e}");
        }
    }

    #[test]
    fn error_bodies_carry_the_request_and_trace_ids() {
        let r = with_context(
            GatewayError::NoRoute.to_response(),
            &HeaderValue::from_static("req-\"1"),
            "4bf92f3577b34da6a3ce929d0e0e4736",
        );
        let bytes = block_on(r.into_body().collect()).unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"], "not_found");
        assert_eq!(v["request_id"], "req-\"1");
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn grpc_refusals_carry_the_issue_16_codes() {
        let cases = [
            (GatewayError::Auth(AuthError::Missing), 16),
            (
                GatewayError::Forbidden(crate::access::Denied { scope: None }),
                7,
            ),
            (GatewayError::UpstreamConnect("refused".into()), 14),
            (GatewayError::Upstream("reset".into()), 14),
            (GatewayError::UpstreamTimeout, 14),
            (GatewayError::NoRoute, 12),
        ];
        for (e, code) in cases {
            let r = e.to_grpc_response();
            assert_eq!(r.status(), 200, "{e}");
            assert_eq!(r.headers()["content-type"], "application/grpc");
            assert_eq!(r.headers()["grpc-status"], code.to_string().as_str(), "{e}");
            assert!(!r.headers()["grpc-message"].is_empty());
        }
        let spec = crate::ratelimit::RateSpec {
            per: crate::ratelimit::Per::User,
            quota: 1,
            window: std::time::Duration::from_secs(1),
            burst: 1,
        };
        let e = GatewayError::RateLimited {
            spec,
            retry_after_secs: 2,
        };
        assert_eq!(e.to_grpc_response().headers()["grpc-status"], "8");
    }

    #[test]
    fn missing_token_gets_bare_challenge() {
        let r = GatewayError::Auth(AuthError::Missing).to_response();
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer realm=\"portcullis\"");
    }

    #[test]
    fn bad_token_gets_invalid_token_challenge() {
        let r = GatewayError::Auth(AuthError::Expired).to_response();
        let v = r.headers()[WWW_AUTHENTICATE].to_str().unwrap();
        assert!(
            v.starts_with("Bearer realm=\"portcullis\", error=\"invalid_token\""),
            "{v}"
        );
        assert!(v.contains("error_description=\"token expired\""), "{v}");
    }

    #[test]
    fn api_key_failures_challenge_with_the_api_key_scheme() {
        let r = GatewayError::ApiKey(ApiKeyError::Missing).to_response();
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "ApiKey realm=\"portcullis\"");
        let r = GatewayError::ApiKey(ApiKeyError::Unknown).to_response();
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            "ApiKey realm=\"portcullis\", error=\"invalid_key\""
        );
        // Wrong and revoked read the same as malformed: nothing to tell them apart.
        assert_eq!(
            body_json(&GatewayError::ApiKey(ApiKeyError::Unknown)),
            body_json(&GatewayError::ApiKey(ApiKeyError::Malformed))
        );
    }

    #[test]
    fn csrf_refusal_is_403_without_a_challenge() {
        let r = GatewayError::Csrf.to_response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(r.headers().get(WWW_AUTHENTICATE).is_none());
        assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
        assert_eq!(
            GatewayError::from(Refusal::Auth(AuthError::Malformed)).status(),
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn revoked_says_revoked() {
        assert_eq!(
            body_json(&GatewayError::Auth(AuthError::Revoked))["error_description"],
            "token revoked"
        );
    }

    #[test]
    fn forbidden_names_the_scopes_in_its_challenge() {
        let e = GatewayError::Forbidden(crate::access::Denied {
            scope: Some("a b".into()),
        });
        let r = e.to_response();
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.headers().get(WWW_AUTHENTICATE).unwrap(),
            r#"Bearer error="insufficient_scope", scope="a b""#
        );
        assert_eq!(body_json(&e)["error"], "insufficient_scope");
    }

    #[test]
    fn rate_limited_carries_retry_after_and_the_draft_fields() {
        let spec = crate::ratelimit::RateSpec {
            per: crate::ratelimit::Per::User,
            quota: 100,
            window: std::time::Duration::from_secs(1),
            burst: 200,
        };
        let e = GatewayError::RateLimited {
            spec,
            retry_after_secs: 3,
        };
        let r = e.to_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers().get("retry-after").unwrap(), "3");
        assert_eq!(
            r.headers().get("ratelimit-policy").unwrap(),
            r#""route";q=100;w=1"#
        );
        assert_eq!(r.headers().get("ratelimit").unwrap(), r#""route";r=0;t=3"#);
        assert_eq!(body_json(&e)["error"], "rate_limited");
    }
}
