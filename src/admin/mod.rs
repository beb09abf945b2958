//! The admin API, on its own listener (loopback by default, plain HTTP unless `[admin]`
//! configures TLS).
//!
//! | method | path | auth | answer |
//! |---|---|---|---|
//! | GET | `/healthz` | none | 200 `ok` while the process serves |
//! | GET | `/readyz` | admin | 200 when the revocation store is loaded and reachable, else 503 |
//! | GET | `/metrics` | admin | Prometheus text format 0.0.4; OpenMetrics 1.0 when `Accept` asks for it |
//! | POST | `/revocations` | admin | `{"jti","exp"?}` / `{"token"}` / `{"sub"}`, each with an optional `"reason"` -> 201 with the stored entry |
//! | GET | `/revocations?limit=&cursor=&kind=&sub=&jti=&actor=&since=` | admin | one page of entries in force with their original identifiers and audit metadata, with counts ([`trail`]) |
//! | GET | `/audit?limit=&cursor=&sub=&jti=&actor=&since=` | admin | the audit trail, oldest first ([`trail`]) |
//! | GET | `/revocations/count` | admin | `{"tokens": N, "subjects": M}` |
//! | DELETE | `/revocations/jti/{jti}` | admin | 204, or 404 if not revoked |
//! | DELETE | `/revocations/sub/{sub}` | admin | 204, or 404 if not revoked |
//! | GET | `/upstreams` | admin | every route's upstream targets: state (`up`, `ejected`, `unhealthy`), requests in flight, requests and failures |
//! | POST | `/reload` | admin | re-read the config file: 200 with notes, or 400 with the reason |
//! | POST | `/apikeys` | admin | `{"app"}` -> 201 `{"id","app","key","created"}`: the only time the key is shown |
//! | GET | `/apikeys` | admin | every key's id, app and creation time (never a key or digest) |
//! | DELETE | `/apikeys/{id}` | admin | 204, refused from the next request on; 404 if no such key |
//! | GET | `/stats?since=` | admin | the live ring: per-second samples newer than `since`, and the per-route table ([`crate::telemetry::live`]) |
//! | GET | `/users/{user}/sessions` | admin | the user's sign-in sessions ([`users`]) |
//! | POST | `/users/{user}/logout` | admin | `{"reason"?}`: end every session of the user and revoke their tokens |
//! | * | `/ui/...` | console | the web console and its API ([`console`]) |
//!
//! Every endpoint but `/healthz` and the console's page needs `Authorization: Bearer <admin
//! token>`, compared in constant time (the console signs in with the same token and then
//! uses a cookie). A client that fails authentication too often is refused with 429 for a
//! while, whatever token it sends next, so the token cannot be brute-forced.

mod auth;
pub mod console;
pub mod trail;
mod users;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};

use arc_swap::ArcSwap;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::json;

use crate::apikeys::{self as apikey, ApiKeys};
use crate::auth::jws::Validator;
use crate::clock::unix_now;
use crate::ids::{digest as digest128, key_to_hex};
use crate::response;
use crate::revocation::audit::{Action, Audit, AuditKind, AuditRecord, MAX_REASON_BYTES};
use crate::revocation::{Record, Revocations};
use crate::server::conn::ConnInfo;
use crate::signin::sessions::SessionStore;
use crate::telemetry::live::Live;
use crate::telemetry::metrics::{Format as MetricsFormat, Metrics};
pub use auth::AdminAuth;

/// Largest admin request body accepted.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// What `POST /reload` needs of the running gateway: re-read the config file and apply it.
/// Returns notes about settings only a restart applies, or why the new config was refused
/// (the previous one then stays in force). The composition root implements it, so admin
/// never depends on how the gateway is wired.
pub trait Reload: Send + Sync {
    fn reload(&self) -> Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send + '_>>;
}

/// What `GET /upstreams` needs of the running gateway: the upstream targets of the
/// configuration in force and their health, as JSON. Implemented by the composition root.
pub trait UpstreamStatus: Send + Sync {
    fn upstreams(&self) -> serde_json::Value;
}

/// What the admin handlers work on.
pub struct AdminState {
    pub auth: ArcSwap<AdminAuth>,
    /// The request path's validator in force (a reload swaps it): revoking by token verifies
    /// with the current keys.
    pub validator: ArcSwap<Validator>,
    pub revocations: Arc<Revocations>,
    /// Who revoked what and why (beside the revocation store).
    pub audit: Arc<Audit>,
    /// App keys (the same set the request path reads: a revoke applies to the next request).
    pub api_keys: Arc<ApiKeys>,
    pub metrics: Arc<Metrics>,
    /// Set once the gateway is assembled; `POST /reload` goes through it.
    pub reloader: OnceLock<Weak<dyn Reload>>,
    /// The last 15 minutes of the metrics, one sample a second (for `/stats` and the
    /// console's charts).
    pub live: Arc<Live>,
    /// Sign-in sessions, when `[signin]` was configured at start-up (for
    /// `/users/{user}/sessions` and "log out everywhere").
    pub sessions: Option<Arc<dyn SessionStore>>,
    /// Signed-in consoles.
    pub console: console::Sessions,
    /// The upstream targets in force (`GET /upstreams`).
    pub upstreams: Arc<dyn UpstreamStatus>,
}

type Resp = Response<Full<Bytes>>;

fn json_response(status: StatusCode, body: serde_json::Value) -> Resp {
    response::json(status, &body)
}

/// An admin error in the one error shape: a stable code derived from the status, and the
/// message (which names what would be valid) as the description.
fn error(status: StatusCode, message: &str) -> Resp {
    response::error(status, error_code(status), message)
}

/// The `error` code of an admin refusal.
fn error_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "invalid_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "temporarily_unavailable",
        _ => "error",
    }
}

fn empty(status: StatusCode) -> Resp {
    response::empty(status)
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
    if console::is_console_path(&path) {
        return Ok(console::handle(&admin, req, &conn).await);
    }
    if method == Method::GET && path == "/favicon.ico" {
        // Browsers ask for it unprompted; answering without the auth check keeps a console
        // page load from counting as a failed admin login.
        return Ok(error(StatusCode::NOT_FOUND, "no such admin endpoint"));
    }
    let actor = match admin.auth.load().check(req.headers(), conn.peer.ip()) {
        auth::Outcome::Allowed(label) => label,
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
    };
    let caller = Caller {
        actor,
        ip: conn.peer.ip().to_string(),
    };
    let resp = route(&admin, req, &method, &path, &caller).await;
    tracing::info!(peer = %conn.peer, actor = %caller.actor, %method, %path, status = resp.status().as_u16(), "admin request");
    Ok(resp)
}

fn empty_text(status: StatusCode, text: &'static str) -> Resp {
    response::text(status, text)
}

/// Who made an admin call: the credential's label and the client IP (for the audit trail).
pub struct Caller {
    pub actor: Arc<str>,
    pub ip: String,
}

async fn route(
    admin: &Arc<AdminState>,
    req: Request<Incoming>,
    method: &Method,
    path: &str,
    caller: &Caller,
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
            let accept = req
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let format = MetricsFormat::negotiate(accept);
            let mut r = Response::new(Full::new(Bytes::from(admin.metrics.render_as(format))));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            r
        }
        (&Method::POST, ["revocations"]) => {
            match read_json::<RevokeRequest>(req, REVOKE_SHAPE).await {
                Ok(body) => revoke(admin, body, caller).await,
                Err(resp) => resp,
            }
        }
        (&Method::GET, ["revocations"]) => trail::list_revocations(admin, req.uri().query()).await,
        (&Method::GET, ["audit"]) => trail::list_audit(admin, req.uri().query()).await,
        (&Method::POST, ["reload"]) => reload(admin).await,
        (&Method::GET, ["upstreams"]) => json_response(
            StatusCode::OK,
            json!({ "routes": admin.upstreams.upstreams() }),
        ),
        (&Method::GET, ["revocations", "count"]) => {
            json_response(StatusCode::OK, counts(&admin.revocations))
        }
        (&Method::DELETE, ["revocations", kind @ ("jti" | "sub"), value]) => {
            let Ok(value) = percent_decode_str(value).decode_utf8() else {
                return error(StatusCode::BAD_REQUEST, "the id is not valid UTF-8");
            };
            unrevoke(admin, kind, &value, caller).await
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
        (&Method::GET, ["stats"]) => users::stats(admin, req.uri().query()),
        (&Method::GET, ["users", user, "sessions"]) => users::sessions(admin, user).await,
        (&Method::POST, ["users", user, "logout"]) => {
            match read_json_or_empty::<users::LogoutRequest>(req, users::LOGOUT_SHAPE).await {
                Ok(body) => users::logout_everywhere(admin, user, body, caller).await,
                Err(resp) => resp,
            }
        }
        (
            _,
            ["healthz" | "readyz" | "metrics" | "revocations" | "apikeys" | "audit" | "stats"
            | "users" | "upstreams", ..],
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this path",
        ),
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

/// The three shapes `POST /revocations` accepts, each with an optional `reason`; anything
/// else is a 400.
#[derive(Debug, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum RevokeRequest {
    Jti {
        jti: String,
        #[serde(default)]
        exp: Option<u64>,
        #[serde(default)]
        reason: Option<String>,
    },
    Token {
        token: String,
        #[serde(default)]
        reason: Option<String>,
    },
    Sub {
        sub: String,
        #[serde(default)]
        reason: Option<String>,
    },
}

impl RevokeRequest {
    fn reason(&self) -> Option<&str> {
        match self {
            RevokeRequest::Jti { reason, .. }
            | RevokeRequest::Token { reason, .. }
            | RevokeRequest::Sub { reason, .. } => reason.as_deref(),
        }
    }
}

const REVOKE_SHAPE: &str = "expected one of {\"jti\": \"...\", \"exp\": <unix seconds>}, {\"token\": \"...\"}, {\"sub\": \"...\"}, each with an optional \"reason\" (at most 256 bytes)";

/// The request body, at most `MAX_BODY_BYTES` (413 beyond).
async fn read_body(req: Request<Incoming>) -> Result<bytes::Bytes, Resp> {
    Ok(Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large (64 KiB at most)",
            )
        })?
        .to_bytes())
}

async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    expected: &str,
) -> Result<T, Resp> {
    let body = read_body(req).await?;
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("body is not valid JSON: {e}"),
        )
    })?;
    serde_json::from_value(value).map_err(|_| error(StatusCode::BAD_REQUEST, expected))
}

/// Like [`read_json`], but an empty body reads as `{}`.
async fn read_json_or_empty<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    expected: &str,
) -> Result<T, Resp> {
    let body = read_body(req).await?;
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    serde_json::from_slice(body).map_err(|_| error(StatusCode::BAD_REQUEST, expected))
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
        return error(StatusCode::BAD_REQUEST, &why.to_string());
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

async fn revoke(admin: &Arc<AdminState>, body: RevokeRequest, caller: &Caller) -> Resp {
    let now = unix_now();
    let revs = &admin.revocations;
    if body.reason().is_some_and(|r| r.len() > MAX_REASON_BYTES) {
        return error(
            StatusCode::BAD_REQUEST,
            "reason is too long (256 bytes at most)",
        );
    }
    let reason = body.reason().map(str::to_owned);
    let mut audit = AuditRecord {
        time: now,
        action: Action::Revoke,
        kind: AuditKind::Jti,
        id: String::new(),
        key: String::new(),
        sub: None,
        actor: caller.actor.to_string(),
        ip: caller.ip.clone(),
        reason: reason.clone(),
        exp: None,
    };
    let result = match body {
        RevokeRequest::Jti { jti, exp, .. } => {
            if jti.is_empty() {
                return error(StatusCode::BAD_REQUEST, "jti must not be empty");
            }
            let key = digest128(jti.as_bytes());
            audit.id = jti.clone();
            audit.key = key_to_hex(&key);
            revs.revoke_token(key, exp, now).await.map(|exp| {
                audit.exp = Some(exp);
                json!({ "kind": "jti", "jti": jti, "key": key_to_hex(&key), "exp": exp })
            })
        }
        RevokeRequest::Token { token, .. } => {
            // The token must be one of ours (signature verified); its clock claims do not
            // matter, an expired token revoked is simply a no-op that expires at once.
            let verified = match admin.validator.load().verify_ignoring_time(&token) {
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
            audit.kind = AuditKind::Token;
            audit.key = key_to_hex(&key);
            // The original identifier: the token's `jti` when it has one (its key is the
            // digest of that jti), else the digest itself.
            audit.id = verified
                .has_jti
                .then(|| jws_jti(&token))
                .flatten()
                .unwrap_or_else(|| key_to_hex(&key));
            audit.sub = verified.sub.clone();
            revs.revoke_token(key, verified.exp, now).await.map(|exp| {
                audit.exp = Some(exp);
                // One vocabulary (issue 15): a whole-token revoke is `token`, as in its audit
                // record and list item; `id` is its jti, or its digest without one.
                json!({ "kind": "token", "id": audit.id, "key": key_to_hex(&key), "exp": exp })
            })
        }
        RevokeRequest::Sub { sub, .. } => {
            if sub.is_empty() {
                return error(StatusCode::BAD_REQUEST, "sub must not be empty");
            }
            let key = digest128(sub.as_bytes());
            // Fail closed at one-second resolution: `iat` has whole seconds, so every token
            // issued up to and including this second is covered; tokens issued from the next
            // second on keep working.
            let before = now + 1;
            audit.kind = AuditKind::Sub;
            audit.id = sub.clone();
            audit.key = key_to_hex(&key);
            audit.sub = Some(sub.clone());
            revs.revoke_subject(key, before).await.map(|expires| {
                audit.exp = Some(expires);
                json!({ "kind": "sub", "sub": sub, "key": key_to_hex(&key), "revoked_before": before, "expires": expires })
            })
        }
    };
    match result {
        Ok(mut entry) => {
            admin.metrics.revocations_total.inc();
            update_entries_gauge(admin);
            if let Some(obj) = entry.as_object_mut() {
                obj.insert("reason".into(), json!(reason));
                obj.insert("actor".into(), json!(caller.actor.as_ref()));
                obj.insert("audited".into(), json!(audit_append(admin, audit).await));
            }
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

/// The `jti` of a compact JWS whose signature was already verified (a JWE's claims are
/// encrypted; its record then names the token's digest).
fn jws_jti(token: &str) -> Option<String> {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("jti")?.as_str().map(str::to_owned)
}

/// Append an audit record. The change it describes is already in force, so a failure
/// here does not undo it: it is logged, and the answer says `"audited": false`.
async fn audit_append(admin: &Arc<AdminState>, rec: AuditRecord) -> bool {
    match admin.audit.append(rec).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "audit record not stored");
            false
        }
    }
}

async fn unrevoke(admin: &Arc<AdminState>, kind: &str, value: &str, caller: &Caller) -> Resp {
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
            let rec = AuditRecord {
                time: unix_now(),
                action: Action::Unrevoke,
                kind: if kind == "jti" {
                    AuditKind::Jti
                } else {
                    AuditKind::Sub
                },
                id: value.to_owned(),
                key: key_to_hex(&key),
                sub: (kind == "sub").then(|| value.to_owned()),
                actor: caller.actor.to_string(),
                ip: caller.ip.clone(),
                reason: None,
                exp: None,
            };
            audit_append(admin, rec).await;
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
            json!({
                "error": "invalid_request",
                "error_description": "configuration rejected; the previous configuration stays in force",
                "reason": e,
            }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn body(r: Resp) -> serde_json::Value {
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(r.into_body().collect())
            .unwrap()
            .to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn each_admin_error_status_maps_to_its_code() {
        for (status, code) in [
            (StatusCode::BAD_REQUEST, "invalid_request"),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            (StatusCode::NOT_FOUND, "not_found"),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
        ] {
            let r = error(status, "why");
            assert_eq!(r.status(), status);
            assert_eq!(r.headers()[http::header::CACHE_CONTROL], "no-store");
            assert_eq!(
                body(r),
                json!({ "error": code, "error_description": "why" }),
                "{status}"
            );
        }
    }

    #[test]
    fn app_id_errors_say_what_is_valid() {
        assert_eq!(apikey::check_app(""), Err(apikey::AppIdError::Length));
        assert_eq!(
            apikey::check_app("a b"),
            Err(apikey::AppIdError::Characters)
        );
        assert!(apikey::check_app("billing").is_ok());
    }
}
