//! The sign-in endpoints over HTTP: parse the request, run the flow, answer JSON.
//!
//! Success bodies follow RFC 6749 section 5.1 (`access_token`, `token_type`, `expires_in`,
//! `refresh_token`, with `Cache-Control: no-store`); errors follow section 5.2 (`error`,
//! `error_description`). A wrong password and an unknown username get the very same answer.
//!
//! In cookie mode (`[signin.cookies]`) a token answer carries no token: the tokens go into
//! `Set-Cookie` (see `signin::cookies`) and the body is
//! `{"token_type":"cookie","expires_in","csrf_token"}`, unless `bearer_clients` lets a
//! non-browser client ask for the tokens in the body (`token_delivery = "body"` on login, a
//! body `refresh_token` on refresh).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, PRAGMA, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::dpop::Proof;
use super::sessions::{refresh_digest, Issued, NewSession, RefreshError, SessionError};
use super::{limits, Endpoint, SignIn};
use crate::auth::cookie::Refusal;
use crate::auth::dpop::DpopError;
use crate::auth::{bearer, challenge, AuthError};
use crate::clock::unix_now;
use crate::response;
use crate::revocation::Record;

/// Largest sign-in request body, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Longest password accepted, in bytes (bounds the work one request can ask for).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Everything a sign-in request can end in besides success.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("invalid refresh token")]
    InvalidRefresh,
    #[error("refresh token reused; its session family was ended")]
    RefreshReused,
    #[error("rate limited")]
    RateLimited(Duration),
    #[error("bearer token refused: {0}")]
    Auth(AuthError),
    #[error("CSRF token missing or not matching the CSRF cookie")]
    Csrf,
    #[error("cross-site login refused in cookie mode")]
    CrossSite,
    #[error("sign-in unavailable: {0}")]
    Unavailable(String),
    /// The request's DPoP proof failed (400 `invalid_dpop_proof` or `use_dpop_nonce`).
    #[error("DPoP proof refused: {error}")]
    Dpop {
        error: DpopError,
        nonce: Option<String>,
    },
}

/// The session store did not answer or could not store the change: 503, nothing issued.
impl From<SessionError> for SignInError {
    fn from(e: SessionError) -> Self {
        SignInError::Unavailable(e.to_string())
    }
}

/// A token could not be minted: 503, nothing issued.
impl From<super::issue::IssueError> for SignInError {
    fn from(e: super::issue::IssueError) -> Self {
        SignInError::Unavailable(e.to_string())
    }
}

/// A cookie could not be written: 503.
impl From<super::cookies::CookieError> for SignInError {
    fn from(e: super::cookies::CookieError) -> Self {
        SignInError::Unavailable(e.to_string())
    }
}

impl SignInError {
    pub fn status(&self) -> StatusCode {
        match self {
            SignInError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            SignInError::BadRequest(_) | SignInError::Dpop { .. } => StatusCode::BAD_REQUEST,
            SignInError::InvalidCredentials
            | SignInError::InvalidRefresh
            | SignInError::RefreshReused
            | SignInError::Auth(_) => StatusCode::UNAUTHORIZED,
            SignInError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            SignInError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            SignInError::Csrf | SignInError::CrossSite => StatusCode::FORBIDDEN,
        }
    }

    /// The response the client sees; generic text, the detail goes to the log.
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        match self {
            SignInError::Auth(a) => return challenge::refusal(*a),
            SignInError::Csrf => return challenge::csrf_refusal(),
            SignInError::Dpop { error, nonce } => {
                let mut resp = super::dpop::refusal(*error, nonce.as_deref());
                no_cache(&mut resp);
                return resp;
            }
            _ => {}
        }
        let (code, description) = match self {
            SignInError::MethodNotAllowed => ("invalid_request", "use POST"),
            SignInError::BadRequest(what) => ("invalid_request", *what),
            SignInError::InvalidCredentials => ("invalid_grant", "invalid username or password"),
            // Reuse and plain invalid look the same to the client: the holder of a stolen
            // token learns nothing from the answer.
            SignInError::InvalidRefresh | SignInError::RefreshReused => {
                ("invalid_grant", "invalid or expired refresh token")
            }
            SignInError::RateLimited(_) => ("rate_limited", "too many attempts; retry later"),
            SignInError::Unavailable(_) => (
                "temporarily_unavailable",
                "sign-in is unavailable; retry later",
            ),
            SignInError::CrossSite => ("forbidden", "sign in from this site's own pages"),
            SignInError::Auth(_) | SignInError::Csrf | SignInError::Dpop { .. } => {
                ("invalid_token", "")
            }
        };
        let mut resp = response::error(self.status(), code, description);
        no_cache(&mut resp);
        match self {
            SignInError::RateLimited(wait) => {
                resp.headers_mut().insert(
                    RETRY_AFTER,
                    HeaderValue::from(limits::retry_after_secs(*wait)),
                );
            }
            SignInError::MethodNotAllowed => {
                resp.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("POST"));
            }
            _ => {}
        }
        resp
    }

    /// Short stable label for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            SignInError::MethodNotAllowed => "method_not_allowed",
            SignInError::BadRequest(_) => "bad_request",
            SignInError::InvalidCredentials => "invalid_credentials",
            SignInError::InvalidRefresh => "invalid_refresh",
            SignInError::RefreshReused => "refresh_reused",
            SignInError::RateLimited(_) => "rate_limited",
            SignInError::Auth(a) => a.reason(),
            SignInError::Unavailable(_) => "unavailable",
            SignInError::Csrf => "csrf",
            SignInError::CrossSite => "cross_site",
            SignInError::Dpop { error, .. } => error.reason(),
        }
    }
}

impl From<Refusal> for SignInError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Auth(a) => SignInError::Auth(a),
            Refusal::Csrf => SignInError::Csrf,
        }
    }
}

/// A token answer: the one JSON builder, plus `Pragma: no-cache` (RFC 6749 section 5.1:
/// token responses must not be cached, by HTTP/1.0 caches either).
fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = response::json(status, body);
    no_cache(&mut resp);
    resp
}

fn no_cache(resp: &mut Response<Full<Bytes>>) {
    resp.headers_mut()
        .insert(PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A sign-in answer and, when it succeeded, the user it was for (the access log's `user`).
type Answer = Result<(Response<Full<Bytes>>, String), SignInError>;

/// Answer one sign-in request. Never fails: errors become responses and are logged once
/// here (without any credential). Returns the user a successful login, refresh or logout
/// was for, so the access log line names them as it does on a proxied route.
/// `proof` is what the DPoP gate made of the request's
/// `DPoP` header (see [`super::dpop`]); only login and refresh use it.
pub async fn serve(
    signin: &SignIn,
    endpoint: Endpoint,
    req: Request<Incoming>,
    peer: IpAddr,
    proof: Proof,
) -> (Response<Full<Bytes>>, Option<String>) {
    let result = if req.method() != Method::POST {
        Err(SignInError::MethodNotAllowed)
    } else {
        match endpoint {
            Endpoint::Login => login(signin, req, peer, proof).await,
            Endpoint::Refresh => refresh(signin, req, proof).await,
            Endpoint::Logout => logout(signin, req, false).await,
            Endpoint::LogoutAll => logout(signin, req, true).await,
        }
    };
    match result {
        Ok((resp, user)) => (resp, Some(user)),
        Err(e) => {
            match &e {
                SignInError::Unavailable(detail) => {
                    tracing::error!(endpoint = endpoint.label(), detail = %detail, "sign-in failed")
                }
                _ => tracing::debug!(
                    endpoint = endpoint.label(),
                    reason = e.reason(),
                    %peer,
                    "sign-in refused"
                ),
            }
            (e.to_response(), None)
        }
    }
}

/// `POST login`: check the rate limits, verify the password off the runtime, start a
/// session family (ending older ones beyond `max_sessions_per_user`), issue tokens.
async fn login(signin: &SignIn, req: Request<Incoming>, peer: IpAddr, proof: Proof) -> Answer {
    // A bad proof is refused before any password work.
    let jkt = match proof {
        Proof::Absent => None,
        Proof::Valid(jkt) => Some(jkt),
        Proof::Invalid { error, nonce } => return Err(SignInError::Dpop { error, nonce }),
    };
    // Login CSRF: a cross-site form could sign the victim in as the attacker, and SameSite
    // does not stop a top-level POST from setting cookies. Browsers say where a request
    // comes from in `Sec-Fetch-Site`; other clients do not send it.
    if signin.cookies.is_some()
        && req
            .headers()
            .get("sec-fetch-site")
            .is_some_and(|v| v == "cross-site")
    {
        return Err(SignInError::CrossSite);
    }
    let mut form = read_form(req).await?;
    let delivery = login_delivery(
        form.take("token_delivery").as_deref(),
        signin.cookies.as_ref(),
    )?;
    check_bound_delivery(jkt.as_deref(), &delivery)?;
    let username = form.take("username").ok_or(SignInError::BadRequest(
        "username and password are required",
    ))?;
    let password = form.take("password").ok_or(SignInError::BadRequest(
        "username and password are required",
    ))?;
    if username.is_empty() || password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(SignInError::InvalidCredentials);
    }
    signin
        .limits
        .check(peer, &username)
        .map_err(SignInError::RateLimited)?;
    let user = {
        // Waiting here is the back-pressure: at most `max_concurrent_hashes` run at once.
        let _permit = signin
            .hashing
            .acquire()
            .await
            .map_err(|e| SignInError::Unavailable(e.to_string()))?;
        let directory = Arc::clone(&signin.directory);
        signin
            .hasher
            .run(move || directory.authenticate(&username, &password))
            .await
            .map_err(|e| SignInError::Unavailable(e.to_string()))?
    };
    let user = user.ok_or(SignInError::InvalidCredentials)?;
    let now = unix_now();
    let pending = signin.signer.prepare(now)?;
    let access = sign(signin, &pending, &user, jkt.as_deref())?;
    let refresh = next_refresh_token(jkt.as_deref())?;
    let ended = signin
        .sessions
        .start(
            NewSession {
                user: user.clone(),
                access: pending.issued,
                refresh: refresh_digest(&refresh),
                refresh_exp: now.saturating_add(signin.refresh_ttl.as_secs()),
            },
            signin.max_sessions_per_user,
            now,
        )
        .await?;
    // The previous sessions are revoked before the new token is handed out, so "one valid
    // token at a time" holds from the moment the client has the new one.
    if let Err(e) = revoke(signin, &ended, None).await {
        // Best effort: the client never sees this session's tokens either way.
        let _ = signin
            .sessions
            .end_by_access(&user, &pending.issued.key, now)
            .await;
        return Err(e);
    }
    tracing::info!(user = %user, ended_sessions = ended.len(), "signed in");
    token_response(signin, &access, &refresh, delivery, jkt.is_some()).map(|r| (r, user))
}

/// The access token for `user`, bound to `jkt` (`cnf.jkt`) when the request proved a key.
fn sign(
    signin: &SignIn,
    pending: &super::issue::Pending,
    user: &str,
    jkt: Option<&str>,
) -> Result<String, SignInError> {
    Ok(match jkt {
        Some(jkt) => signin
            .signer
            .sign_with(pending, user, super::dpop::cnf_claim(jkt))?,
        None => signin.signer.sign(pending, user)?,
    })
}

/// A fresh refresh token, bound to `jkt` when given.
fn next_refresh_token(jkt: Option<&str>) -> Result<String, SignInError> {
    let token = super::issue::refresh_token()?;
    Ok(match jkt {
        Some(jkt) => super::dpop::bind_refresh(&token, jkt),
        None => token,
    })
}

/// Bound tokens go in the body: in a cookie the browser would send the access token
/// without a proof, and a bound token is refused without one.
fn check_bound_delivery(jkt: Option<&str>, delivery: &Delivery) -> Result<(), SignInError> {
    match (jkt, delivery) {
        (Some(_), Delivery::Cookies(_)) => Err(SignInError::BadRequest(
            "DPoP-bound tokens are delivered in the body: use token_delivery \"body\" (signin.cookies.bearer_clients)",
        )),
        _ => Ok(()),
    }
}

/// Which key the tokens of a refresh are bound to, from the presented refresh token's
/// binding and the request's proof. A bound refresh token without a valid proof by its key
/// counts as reuse: its family ends (access tokens revoked) and the refresh is refused. A
/// nonce challenge is not theft (the client retries with the nonce), so it ends nothing.
async fn refresh_key(
    signin: &SignIn,
    presented: &str,
    proof: Proof,
    now: u64,
) -> Result<Option<String>, SignInError> {
    let bound = super::dpop::refresh_binding(presented);
    match (bound, proof) {
        (
            _,
            Proof::Invalid {
                error: DpopError::UseNonce,
                nonce,
            },
        ) => Err(SignInError::Dpop {
            error: DpopError::UseNonce,
            nonce,
        }),
        (Some(want), Proof::Valid(jkt)) if jkt == want => Ok(Some(jkt)),
        (Some(_), other) => {
            let ended = signin
                .sessions
                .end_by_refresh(&refresh_digest(presented), now)
                .await?;
            tracing::warn!(
                revoked = ended.len(),
                "DPoP-bound refresh token without a proof by its key: session family ended"
            );
            revoke(signin, &ended, None).await?;
            Err(match other {
                Proof::Invalid { error, nonce } => SignInError::Dpop { error, nonce },
                _ => SignInError::RefreshReused,
            })
        }
        (None, Proof::Invalid { error, nonce }) => Err(SignInError::Dpop { error, nonce }),
        // An unbound session proving a key from now on: its tokens are bound from here.
        (None, Proof::Valid(jkt)) => Ok(Some(jkt)),
        (None, Proof::Absent) => Ok(None),
    }
}

/// `POST refresh`: spend the refresh token and issue the next pair. A token spent before
/// ends its whole family (every access token of it revoked) and is refused.
async fn refresh(signin: &SignIn, req: Request<Incoming>, proof: Proof) -> Answer {
    // Cookie mode: the refresh cookie (CSRF-checked), used when the body names no token, and
    // the CSRF value the page already holds, kept across the rotation.
    let cookie = signin.cookies.as_ref().map(|c| {
        let token = c.names.refresh_token(req.headers());
        let csrf = c.names.csrf_cookie(req.headers()).map(<[u8]>::to_vec);
        (token.map(|t| t.map(str::to_owned)), csrf)
    });
    let mut form = read_form(req).await?;
    // A token presented in the body was readable by the client already: it may have the
    // next pair in the body too (without cookie mode, or with bearer clients allowed).
    let body_ok = signin.cookies.as_ref().is_none_or(|c| c.bearer_clients);
    let (presented, delivery) = match (form.take("refresh_token"), cookie) {
        (Some(t), _) if body_ok => (t, Delivery::Body),
        (Some(t), _) => (t, Delivery::Cookies(None)),
        (None, Some((token, csrf))) => match token? {
            Some(t) => (
                t,
                Delivery::Cookies(csrf.and_then(|c| String::from_utf8(c).ok())),
            ),
            None => return Err(SignInError::BadRequest("refresh_token is required")),
        },
        (None, None) => return Err(SignInError::BadRequest("refresh_token is required")),
    };
    let now = unix_now();
    let jkt = refresh_key(signin, &presented, proof, now).await?;
    check_bound_delivery(jkt.as_deref(), &delivery)?;
    let pending = signin.signer.prepare(now)?;
    let next = next_refresh_token(jkt.as_deref())?;
    let user = match signin
        .sessions
        .rotate(
            &refresh_digest(&presented),
            refresh_digest(&next),
            now.saturating_add(signin.refresh_ttl.as_secs()),
            pending.issued,
            now,
        )
        .await?
    {
        Ok(user) => user,
        Err(RefreshError::Invalid) => return Err(SignInError::InvalidRefresh),
        Err(RefreshError::Reused(ended)) => {
            tracing::warn!(
                revoked = ended.len(),
                "refresh token reused: session family ended"
            );
            revoke(signin, &ended, None).await?;
            return Err(SignInError::RefreshReused);
        }
    };
    if !signin.directory.has_id(&user) {
        // Removed from the users file since the login: the session ends here.
        let ended = signin
            .sessions
            .end_by_access(&user, &pending.issued.key, now)
            .await?;
        revoke(signin, &ended, None).await?;
        return Err(SignInError::InvalidRefresh);
    }
    let access = sign(signin, &pending, &user, jkt.as_deref())?;
    token_response(signin, &access, &next, delivery, jkt.is_some()).map(|r| (r, user))
}

/// `POST logout` / `logout-all`: the bearer access token must verify and not be revoked.
/// Revokes it and ends its family (or every family of its user). In cookie mode a request
/// without `Authorization` uses the access cookie and needs the CSRF header; the answer
/// clears the cookies.
async fn logout(signin: &SignIn, req: Request<Incoming>, all: bool) -> Answer {
    let now = unix_now();
    let max = signin.validator.max_token_bytes;
    let token = match &signin.cookies {
        Some(c) if !req.headers().contains_key(http::header::AUTHORIZATION) => {
            c.names.access_token(req.method(), req.headers(), max)?
        }
        _ => bearer::from_headers(req.headers(), max).map_err(SignInError::Auth)?,
    };
    let v = signin
        .validator
        .verify(token, now)
        .map_err(SignInError::Auth)?;
    if signin.revocations.is_revoked(&v.ids()) {
        if !signin.revocations.is_loaded() {
            return Err(SignInError::Unavailable(
                "the revocation state is not loaded yet".into(),
            ));
        }
        return Err(SignInError::Auth(AuthError::Revoked));
    }
    let Some(sub) = v.sub.as_deref() else {
        return Err(SignInError::Auth(AuthError::Claims));
    };
    let mut ended = if all {
        signin.sessions.end_all(sub, now).await?
    } else {
        signin
            .sessions
            .end_by_access(sub, &v.token_key, now)
            .await?
    };
    // The presented token goes too, even when it was not issued by sign-in.
    let own = Issued {
        key: v.token_key,
        exp: v
            .exp
            .unwrap_or(now.saturating_add(signin.revocations.max_lifetime())),
    };
    if !ended.contains(&own) {
        ended.push(own);
    }
    // Logout-all also revokes the subject up to this second, which covers tokens of the
    // user that sign-in did not issue; a login after this has `iat >= now` and is spared.
    revoke(signin, &ended, all.then_some((sub, now))).await?;
    tracing::info!(user = %sub, all, revoked = ended.len(), "signed out");
    let mut resp = json_response(
        StatusCode::OK,
        &serde_json::json!({ "revoked": ended.len() }),
    );
    if let Some(c) = &signin.cookies {
        c.clear_session(resp.headers_mut())?;
    }
    Ok((resp, sub.to_owned()))
}

/// Revoke access tokens (and, for logout-all, a subject's tokens issued before a second)
/// through the revocation dictionary, durably (and cluster-wide in cluster mode), in one
/// write.
async fn revoke(
    signin: &SignIn,
    tokens: &[Issued],
    subject: Option<(&str, u64)>,
) -> Result<(), SignInError> {
    let mut records: Vec<Record> = tokens
        .iter()
        .map(|t| Record::RevokeToken {
            key: t.key,
            exp: t.exp,
        })
        .collect();
    if let Some((sub, before)) = subject {
        records.push(Record::RevokeSubject {
            key: crate::ids::digest(sub.as_bytes()),
            revoked_before: before,
            expires: before.saturating_add(signin.revocations.max_lifetime()),
        });
    }
    if records.is_empty() {
        return Ok(());
    }
    signin
        .revocations
        .apply(records)
        .await
        .map_err(|e| SignInError::Unavailable(format!("revocation store: {e}")))
}

/// Where a login or refresh answer puts the tokens.
enum Delivery {
    /// In the JSON body (`token_type: "Bearer"`).
    Body,
    /// In cookie mode, in cookies, with only the CSRF token in the body (a script must not
    /// be able to read the tokens). Holds the CSRF token to keep (a cookie refresh), else a
    /// new one is drawn.
    Cookies(Option<String>),
}

/// Where a login's answer goes: what the client asked for in `token_delivery`, within what
/// this gateway allows (cookie mode off: the body; on: cookies, or the body for
/// `bearer_clients`).
fn login_delivery(
    asked: Option<&str>,
    cookies: Option<&super::cookies::Settings>,
) -> Result<Delivery, SignInError> {
    match (asked, cookies) {
        (None | Some("body"), None) => Ok(Delivery::Body),
        (None | Some("cookie"), Some(_)) => Ok(Delivery::Cookies(None)),
        (Some("body"), Some(c)) if c.bearer_clients => Ok(Delivery::Body),
        (Some("body"), Some(_)) => Err(SignInError::BadRequest(
            "token_delivery \"body\" is off on this gateway (signin.cookies.bearer_clients)",
        )),
        (Some("cookie"), None) => Err(SignInError::BadRequest(
            "token_delivery \"cookie\": cookie mode is off on this gateway",
        )),
        (Some(_), _) => Err(SignInError::BadRequest(
            "token_delivery is \"body\" or \"cookie\"",
        )),
    }
}

/// The answer to a login or refresh.
fn token_response(
    signin: &SignIn,
    access: &str,
    refresh: &str,
    delivery: Delivery,
    bound: bool,
) -> Result<Response<Full<Bytes>>, SignInError> {
    let expires_in = signin.signer.access_ttl.as_secs();
    let (Some(cookies), Delivery::Cookies(csrf)) = (&signin.cookies, delivery) else {
        return Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({
                "access_token": access,
                // RFC 9449 section 5: a bound token's type is DPoP.
                "token_type": if bound { "DPoP" } else { "Bearer" },
                "expires_in": expires_in,
                "refresh_token": refresh,
            }),
        ));
    };
    let csrf = match csrf.filter(|c| super::cookies::is_csrf_token(c.as_bytes())) {
        Some(c) => c,
        None => super::issue::csrf_token()?,
    };
    let mut resp = json_response(
        StatusCode::OK,
        &serde_json::json!({
            "token_type": "cookie",
            "expires_in": expires_in,
            "csrf_token": csrf,
        }),
    );
    cookies.set_session(
        resp.headers_mut(),
        &super::cookies::SessionCookies {
            access,
            refresh,
            csrf: &csrf,
            access_ttl: expires_in,
            refresh_ttl: signin.refresh_ttl.as_secs(),
        },
    )?;
    Ok(resp)
}

/// The request's fields, from a JSON object of strings or an
/// `application/x-www-form-urlencoded` body.
#[derive(Debug, Default)]
struct Form(Vec<(String, String)>);

impl Form {
    fn take(&mut self, name: &str) -> Option<String> {
        let i = self.0.iter().position(|(k, _)| k == name)?;
        Some(self.0.swap_remove(i).1)
    }
}

async fn read_form(req: Request<Incoming>) -> Result<Form, SignInError> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let body = Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| SignInError::BadRequest("request body unreadable or too large"))?
        .to_bytes();
    if body.is_empty() {
        // A cookie-mode refresh or a logout needs no body; a login then lacks its fields.
        return Ok(Form::default());
    }
    match content_type.as_str() {
        "application/x-www-form-urlencoded" => parse_urlencoded(&body),
        "application/json" | "" => parse_json(&body),
        _ => Err(SignInError::BadRequest(
            "send application/json or application/x-www-form-urlencoded",
        )),
    }
}

fn parse_json(body: &[u8]) -> Result<Form, SignInError> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|_| SignInError::BadRequest("the body is not a JSON object"))?;
    Ok(Form(
        map.into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, s)),
                _ => None,
            })
            .collect(),
    ))
}

fn parse_urlencoded(body: &[u8]) -> Result<Form, SignInError> {
    let decode = |s: &[u8]| -> Result<String, SignInError> {
        let plus: Vec<u8> = s
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        percent_encoding::percent_decode(&plus)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| SignInError::BadRequest("the form is not UTF-8"))
    };
    let mut out = Vec::new();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        out.push((decode(k)?, decode(v)?));
    }
    Ok(Form(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_json(e: &SignInError) -> serde_json::Value {
        let resp = e.to_response();
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(resp.into_body().collect())
            .unwrap()
            .to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn each_error_maps_to_its_status_and_code() {
        let cases = [
            (SignInError::MethodNotAllowed, 405, "invalid_request"),
            (SignInError::BadRequest("x"), 400, "invalid_request"),
            (SignInError::InvalidCredentials, 401, "invalid_grant"),
            (SignInError::InvalidRefresh, 401, "invalid_grant"),
            (SignInError::RefreshReused, 401, "invalid_grant"),
            (
                SignInError::RateLimited(Duration::from_secs(3)),
                429,
                "rate_limited",
            ),
            (SignInError::Auth(AuthError::Expired), 401, "invalid_token"),
            (SignInError::Auth(AuthError::Missing), 401, "unauthorized"),
            (SignInError::Csrf, 403, "forbidden"),
            (SignInError::CrossSite, 403, "forbidden"),
            (
                SignInError::Unavailable("x".into()),
                503,
                "temporarily_unavailable",
            ),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status().as_u16(), status, "{e}");
            assert_eq!(e.to_response().status().as_u16(), status, "{e}");
            assert_eq!(body_json(&e)["error"], code, "{e}");
        }
    }

    #[test]
    fn reuse_and_invalid_refresh_look_the_same() {
        assert_eq!(
            body_json(&SignInError::InvalidRefresh),
            body_json(&SignInError::RefreshReused)
        );
    }

    #[test]
    fn rate_limited_carries_retry_after_and_405_carries_allow() {
        let r = SignInError::RateLimited(Duration::from_millis(2500)).to_response();
        assert_eq!(r.headers()[RETRY_AFTER], "3");
        let r = SignInError::MethodNotAllowed.to_response();
        assert_eq!(r.headers()[ALLOW], "POST");
    }

    #[test]
    fn forms_parse() {
        let mut f = parse_urlencoded(b"username=al%20ice&password=p+w%26x&flag").unwrap();
        assert_eq!(f.take("username").as_deref(), Some("al ice"));
        assert_eq!(f.take("password").as_deref(), Some("p w&x"));
        assert_eq!(f.take("flag").as_deref(), Some(""));
        let mut j = parse_json(br#"{"username":"a","password":"b","n":1}"#).unwrap();
        assert_eq!(j.take("password").as_deref(), Some("b"));
        assert_eq!(j.take("n"), None);
        assert!(parse_json(b"[1]").is_err());
    }
}
