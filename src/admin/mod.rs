//! The admin API, on its own listener (loopback by default, plain HTTP unless `[admin]`
//! configures TLS).
//!
//! | method | path | auth | answer |
//! |---|---|---|---|
//! | GET | `/healthz` | none | 200 `ok` while the process serves |
//! | GET | `/readyz` | admin | 200 when the revocation store is loaded and reachable, else 503 |
//! | GET | `/metrics` | admin | Prometheus text format |
//! | POST | `/revocations` | admin | `{"jti","exp"?}` / `{"token"}` / `{"sub"}` -> 201 with the stored entry |
//! | GET | `/revocations?limit=&cursor=&kind=` | admin | one page of entries, with counts |
//! | GET | `/revocations/count` | admin | `{"tokens": N, "subjects": M}` |
//! | DELETE | `/revocations/jti/{jti}` | admin | 204, or 404 if not revoked |
//! | DELETE | `/revocations/sub/{sub}` | admin | 204, or 404 if not revoked |
//! | POST | `/reload` | admin | re-read the config file: 200 with notes, or 400 with the reason |
//! | POST | `/apikeys` | admin | `{"app"}` -> 201 `{"id","app","key","created"}`: the only time the key is shown |
//! | GET | `/apikeys` | admin | every key's id, app and creation time (never a key or digest) |
//! | DELETE | `/apikeys/{id}` | admin | 204, refused from the next request on; 404 if no such key |
//!
//! Every endpoint but `/healthz` needs `Authorization: Bearer <admin token>`, compared in
//! constant time. A client that fails authentication too often is refused with 429 for a
//! while, whatever token it sends next, so the token cannot be brute-forced.

mod auth;
pub mod client;

use std::convert::Infallible;
use std::sync::{Arc, OnceLock, Weak};

use arc_swap::ArcSwap;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::json;

use crate::auth::apikey::{self, ApiKeys};
use crate::auth::jws::digest128;
use crate::pipeline::forward::ConnInfo;
use crate::pipeline::{unix_now, Shared};
use crate::revocation::dict::{key_from_hex, key_to_hex, Entry, Kind};
use crate::revocation::{Record, Revocations};
use crate::server::Reloader;
use crate::telemetry::metrics::Metrics;
pub use auth::AdminAuth;

/// Largest admin request body accepted.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Default and largest page size for `GET /revocations`.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// What the admin handlers work on.
pub struct AdminState {
    pub auth: ArcSwap<AdminAuth>,
    /// The request-path state in force (a reload swaps it): revoking by token verifies with
    /// the current keys.
    pub gateway: ArcSwap<Shared>,
    pub revocations: Arc<Revocations>,
    /// App keys (the same set the request path reads: a revoke applies to the next request).
    pub api_keys: Arc<ApiKeys>,
    pub metrics: Arc<Metrics>,
    /// Set once the gateway is assembled; `POST /reload` goes through it.
    pub reloader: OnceLock<Weak<Reloader>>,
}

type Resp = Response<Full<Bytes>>;

fn json_response(status: StatusCode, body: serde_json::Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error(status: StatusCode, message: &str) -> Resp {
    json_response(status, json!({ "error": message }))
}

fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// Serve one admin request.
pub async fn handle(
    admin: Arc<AdminState>,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> Result<Resp, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    if method == Method::GET && path == "/healthz" {
        return Ok(empty_text(StatusCode::OK, "ok\n"));
    }
    match admin.auth.load().check(req.headers(), conn.peer.ip()) {
        auth::Outcome::Allowed => {}
        auth::Outcome::Denied => {
            tracing::warn!(peer = %conn.peer, %method, %path, "admin request with a missing or wrong token");
            let mut r = error(StatusCode::UNAUTHORIZED, "admin token required");
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"portcullis-admin\""),
            );
            return Ok(r);
        }
        auth::Outcome::Throttled(secs) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed admin logins; retry later",
            );
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(RETRY_AFTER, v);
            }
            return Ok(r);
        }
    }
    let resp = route(&admin, req, &method, &path).await;
    tracing::info!(peer = %conn.peer, %method, %path, status = resp.status().as_u16(), "admin request");
    Ok(resp)
}

fn empty_text(status: StatusCode, text: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

async fn route(
    admin: &Arc<AdminState>,
    req: Request<Incoming>,
    method: &Method,
    path: &str,
) -> Resp {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["readyz"]) => {
            if admin.revocations.is_ready() {
                empty_text(StatusCode::OK, "ready\n")
            } else {
                empty_text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "revocation store not ready\n",
                )
            }
        }
        (&Method::GET, ["metrics"]) => {
            let mut r = Response::new(Full::new(Bytes::from(admin.metrics.render())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        (&Method::POST, ["revocations"]) => {
            match read_json::<RevokeRequest>(req, REVOKE_SHAPE).await {
                Ok(body) => revoke(admin, body).await,
                Err(resp) => resp,
            }
        }
        (&Method::GET, ["revocations"]) => list(admin, req.uri().query()),
        (&Method::POST, ["reload"]) => reload(admin).await,
        (&Method::GET, ["revocations", "count"]) => {
            json_response(StatusCode::OK, counts(&admin.revocations))
        }
        (&Method::DELETE, ["revocations", kind @ ("jti" | "sub"), value]) => {
            let Ok(value) = percent_decode_str(value).decode_utf8() else {
                return error(StatusCode::BAD_REQUEST, "the id is not valid UTF-8");
            };
            unrevoke(admin, kind, &value).await
        }
        (&Method::POST, ["apikeys"]) => {
            match read_json::<CreateKeyRequest>(req, "expected {\"app\": \"...\"}").await {
                Ok(body) => create_key(admin, body).await,
                Err(resp) => resp,
            }
        }
        (&Method::GET, ["apikeys"]) => {
            let items = admin.api_keys.list();
            json_response(
                StatusCode::OK,
                json!({ "count": items.len(), "items": items }),
            )
        }
        (&Method::DELETE, ["apikeys", id]) => revoke_key(admin, id).await,
        (_, ["healthz" | "readyz" | "metrics" | "revocations" | "apikeys", ..]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this path",
        ),
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

/// The three shapes `POST /revocations` accepts; anything else is a 400.
#[derive(Debug, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum RevokeRequest {
    Jti {
        jti: String,
        #[serde(default)]
        exp: Option<u64>,
    },
    Token {
        token: String,
    },
    Sub {
        sub: String,
    },
}

const REVOKE_SHAPE: &str = "expected one of {\"jti\": \"...\", \"exp\": <unix seconds>}, {\"token\": \"...\"}, {\"sub\": \"...\"}";

async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    expected: &str,
) -> Result<T, Resp> {
    let body = Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large (64 KiB at most)",
            )
        })?
        .to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("body is not valid JSON: {e}"),
        )
    })?;
    serde_json::from_value(value).map_err(|_| error(StatusCode::BAD_REQUEST, expected))
}

/// `POST /apikeys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyRequest {
    app: String,
}

/// Create a key for an app; the answer is the only place the key ever appears (the store
/// keeps its SHA-256, the log line names the id and app only).
async fn create_key(admin: &Arc<AdminState>, body: CreateKeyRequest) -> Resp {
    if let Err(why) = apikey::check_app(&body.app) {
        return error(StatusCode::BAD_REQUEST, &why);
    }
    match admin.api_keys.create(&body.app, unix_now()).await {
        Ok(new) => {
            tracing::info!(id = %new.info.id, app = %new.info.app, "API key created");
            json_response(
                StatusCode::CREATED,
                json!({ "id": new.info.id, "app": new.info.app, "key": new.key.0, "created": new.info.created }),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "API key not stored");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "API-key store unavailable; no key was created",
            )
        }
    }
}

/// `DELETE /apikeys/{id}`: stored first, then out of the map the request path reads.
async fn revoke_key(admin: &Arc<AdminState>, id: &str) -> Resp {
    match admin.api_keys.revoke(id).await {
        Ok(Some(info)) => {
            tracing::info!(id = %info.id, app = %info.app, "API key revoked");
            empty(StatusCode::NO_CONTENT)
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "no API key with this id"),
        Err(e) => {
            tracing::error!(error = %e, "API key revocation not stored");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "API-key store unavailable; the key still works",
            )
        }
    }
}

async fn revoke(admin: &Arc<AdminState>, body: RevokeRequest) -> Resp {
    let now = unix_now();
    let revs = &admin.revocations;
    let result = match body {
        RevokeRequest::Jti { jti, exp } => {
            if jti.is_empty() {
                return error(StatusCode::BAD_REQUEST, "jti must not be empty");
            }
            let key = digest128(jti.as_bytes());
            revs.revoke_token(key, exp, now).await.map(
                |exp| json!({ "kind": "jti", "jti": jti, "key": key_to_hex(&key), "exp": exp }),
            )
        }
        RevokeRequest::Token { token } => {
            // The token must be one of ours (signature verified); its clock claims do not
            // matter, an expired token revoked is simply a no-op that expires at once.
            let verified = match admin.gateway.load().validator.verify_ignoring_time(&token) {
                Ok(v) => v,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "token does not verify with any configured key ({})",
                            e.reason()
                        ),
                    )
                }
            };
            let key = verified.token_key;
            revs.revoke_token(key, verified.exp, now).await.map(|exp| {
                json!({ "kind": if verified.has_jti { "jti" } else { "token_digest" }, "key": key_to_hex(&key), "exp": exp })
            })
        }
        RevokeRequest::Sub { sub } => {
            if sub.is_empty() {
                return error(StatusCode::BAD_REQUEST, "sub must not be empty");
            }
            let key = digest128(sub.as_bytes());
            // Fail closed at one-second resolution: `iat` has whole seconds, so every token
            // issued up to and including this second is covered; tokens issued from the next
            // second on keep working.
            let before = now + 1;
            revs.revoke_subject(key, before).await.map(|expires| {
                json!({ "kind": "sub", "sub": sub, "key": key_to_hex(&key), "revoked_before": before, "expires": expires })
            })
        }
    };
    match result {
        Ok(entry) => {
            admin.metrics.revocations_total.inc();
            update_entries_gauge(admin);
            json_response(StatusCode::CREATED, entry)
        }
        Err(e) => {
            tracing::error!(error = %e, "revocation not stored");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                &store_failure_message(&e, "revoked"),
            )
        }
    }
}

async fn unrevoke(admin: &Arc<AdminState>, kind: &str, value: &str) -> Resp {
    let key = digest128(value.as_bytes());
    let dict = admin.revocations.dict();
    let (present, record) = if kind == "jti" {
        (dict.has_token(&key), Record::UnrevokeToken { key })
    } else {
        (dict.has_subject(&key), Record::UnrevokeSubject { key })
    };
    if !present {
        return error(StatusCode::NOT_FOUND, "not revoked");
    }
    match admin.revocations.apply(vec![record]).await {
        Ok(()) => {
            update_entries_gauge(admin);
            empty(StatusCode::NO_CONTENT)
        }
        Err(e) => {
            tracing::error!(error = %e, "un-revocation not stored");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                &store_failure_message(&e, "changed"),
            )
        }
    }
}

/// The 503 message for a change the store did not confirm: "nothing was {done}" only when
/// that is known; otherwise the outcome is unknown, and repeating the request is safe
/// (revocations and un-revocations are idempotent).
fn store_failure_message(e: &crate::revocation::StoreError, done: &str) -> String {
    if e.nothing_changed() {
        format!("revocation store unavailable; nothing was {done}")
    } else {
        "revocation store did not confirm the change; the outcome is unknown (it may take \
         effect), and the request is safe to repeat"
            .to_string()
    }
}

/// `POST /reload`: re-read the config file; 200 with notes, or 400 with the reason (the
/// previous configuration stays in force).
async fn reload(admin: &Arc<AdminState>) -> Resp {
    let Some(reloader) = admin.reloader.get().and_then(Weak::upgrade) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway is not ready to reload",
        );
    };
    match reloader.reload().await {
        Ok(notes) => json_response(
            StatusCode::OK,
            json!({ "status": "reloaded", "notes": notes }),
        ),
        Err(e) => json_response(
            StatusCode::BAD_REQUEST,
            json!({ "error": "configuration rejected; the previous configuration stays in force", "reason": e }),
        ),
    }
}

/// Keep `portcullis_revocation_entries` current after a change made here (the sweep updates
/// it too, but only every `sweep_interval`).
fn update_entries_gauge(admin: &AdminState) {
    let d = admin.revocations.dict();
    admin
        .metrics
        .revocation_entries
        .set((d.len_tokens() + d.len_subjects()) as i64);
}

fn counts(revs: &Revocations) -> serde_json::Value {
    json!({ "tokens": revs.dict().len_tokens(), "subjects": revs.dict().len_subjects() })
}

/// `GET /revocations?kind=jti|sub&limit=N&cursor=HEX`: entries in key order.
fn list(admin: &AdminState, query: Option<&str>) -> Resp {
    let mut kind = Kind::Token;
    let mut limit = DEFAULT_PAGE;
    let mut cursor = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "kind" => {
                kind = match v {
                    "jti" | "token" => Kind::Token,
                    "sub" | "subject" => Kind::Subject,
                    _ => return error(StatusCode::BAD_REQUEST, "kind must be jti or sub"),
                }
            }
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => limit = n,
                _ => return error(StatusCode::BAD_REQUEST, "limit must be 1..=1000"),
            },
            "cursor" => match key_from_hex(v) {
                Some(k) => cursor = Some(k),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "cursor is not a key from a previous page",
                    )
                }
            },
            _ => return error(StatusCode::BAD_REQUEST, "unknown query parameter"),
        }
    }
    let items: Vec<Entry> = admin.revocations.dict().page(kind, cursor, limit);
    let next = if items.len() == limit {
        items.last().map(|e| key_to_hex(&e.key()))
    } else {
        None
    };
    json_response(
        StatusCode::OK,
        json!({ "items": items, "next_cursor": next, "count": counts(&admin.revocations) }),
    )
}
