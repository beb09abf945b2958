//! The console: a single-page web UI on the admin listener, under `/ui/`.
//!
//! | method | path | auth | answer |
//! |---|---|---|---|
//! | GET | `/ui/`, `/ui/console.js`, `/ui/console.css`, `/ui/icon.svg` | none | the page and its assets, embedded in the binary |
//! | POST | `/ui/session` | admin token in the body | `{"token"}` -> 200 `{"actor","csrf"}` and the session cookie |
//! | GET | `/ui/session` | cookie | 200 `{"actor","csrf"}`, or 401 |
//! | DELETE | `/ui/session` | cookie + CSRF | sign out: 204, the cookie cleared |
//! | any | `/ui/api/<path>` | cookie (+ CSRF unless GET) | the admin endpoint `/<path>` ([`super`]), with the session's credential label as the actor |
//!
//! Every answer under `/ui` carries a strict Content-Security-Policy: scripts, styles and
//! connections from this origin only, no inline script or style, no framing. The assets are
//! `include_str!`ed: the console works where the gateway has no internet (no CDN).

mod session;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, HOST, LOCATION, ORIGIN, RETRY_AFTER,
    SET_COOKIE,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::{auth, error, AdminState, Caller, Resp};
use crate::server::conn::ConnInfo;
pub use session::{Sessions, COOKIE_NAME, CSRF_HEADER};

const INDEX_HTML: &str = include_str!("assets/index.html");
const CONSOLE_JS: &str = include_str!("assets/console.js");
const CONSOLE_CSS: &str = include_str!("assets/console.css");
const ICON_SVG: &str = include_str!("assets/icon.svg");

/// The policy on every console answer: nothing from anywhere but this origin, no inline
/// script or style (the page has neither), no plugins, no framing, no `<base>` games.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Largest sign-in body accepted.
const MAX_SIGNIN_BYTES: usize = 8 * 1024;

/// Whether `path` belongs to the console.
pub fn is_console_path(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// Serve a request under `/ui`; every answer gets the console's security headers.
pub async fn handle(admin: &Arc<AdminState>, req: Request<Incoming>, conn: &ConnInfo) -> Resp {
    let mut resp = route(admin, req, conn).await;
    let h = resp.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    resp
}

async fn route(admin: &Arc<AdminState>, req: Request<Incoming>, conn: &ConnInfo) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    match (&method, path.as_str()) {
        (&Method::GET, "/ui") => {
            let mut r = super::empty(StatusCode::PERMANENT_REDIRECT);
            r.headers_mut()
                .insert(LOCATION, HeaderValue::from_static("/ui/"));
            r
        }
        (&Method::GET, "/ui/" | "/ui/index.html") => asset(INDEX_HTML, "text/html; charset=utf-8"),
        (&Method::GET, "/ui/console.js") => asset(CONSOLE_JS, "text/javascript; charset=utf-8"),
        (&Method::GET, "/ui/console.css") => asset(CONSOLE_CSS, "text/css; charset=utf-8"),
        (&Method::GET, "/ui/icon.svg") => asset(ICON_SVG, "image/svg+xml"),
        (&Method::POST, "/ui/session") => sign_in(admin, req, conn).await,
        (&Method::GET, "/ui/session") => match check_session(admin, &req) {
            Some(s) => session_body(&s),
            None => Refusal::Unauthenticated.response(),
        },
        (&Method::DELETE, "/ui/session") => {
            if let Err(refusal) = check_change(admin, &req) {
                return refusal.response();
            }
            admin.console.close(req.headers());
            let mut r = super::empty(StatusCode::NO_CONTENT);
            set_cookie_header(&mut r, &session::clear_cookie(conn.tls));
            r
        }
        (_, "/ui/session") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this path",
        ),
        (_, p) if p.starts_with("/ui/api/") => {
            let Some(s) = check_session(admin, &req) else {
                return Refusal::Unauthenticated.response();
            };
            if !matches!(method, Method::GET | Method::HEAD) {
                if let Err(refusal) = check_change(admin, &req) {
                    return refusal.response();
                }
            }
            let inner = p["/ui/api".len()..].to_owned();
            let caller = Caller {
                actor: s.actor.clone(),
                ip: conn.peer.ip().to_string(),
            };
            let resp = super::route(admin, req, &method, &inner, &caller).await;
            tracing::info!(peer = %conn.peer, actor = %caller.actor, %method, path = %inner, status = resp.status().as_u16(), "admin request (console)");
            resp
        }
        _ => error(StatusCode::NOT_FOUND, "no such console page"),
    }
}

fn asset(body: &'static str, content_type: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn set_cookie_header(r: &mut Resp, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().append(SET_COOKIE, v);
    }
}

/// Why a console call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No cookie, or one naming no live session.
    Unauthenticated,
    /// `Origin` names another origin.
    Origin,
    /// No CSRF header, or the wrong token.
    Csrf,
}

impl Refusal {
    fn response(self) -> Resp {
        match self {
            Refusal::Unauthenticated => {
                error(StatusCode::UNAUTHORIZED, "sign in to the console first")
            }
            Refusal::Origin => error(
                StatusCode::FORBIDDEN,
                "a console change must come from the console's own origin",
            ),
            Refusal::Csrf => error(
                StatusCode::FORBIDDEN,
                "missing or wrong x-portcullis-csrf header",
            ),
        }
    }
}

fn session_body(s: &session::Session) -> Resp {
    super::json_response(
        StatusCode::OK,
        json!({ "actor": s.actor.as_ref(), "csrf": s.csrf }),
    )
}

/// The session of a console API call: its cookie must name a live session whose
/// credential is still configured (a reload may have removed it).
fn check_session(admin: &AdminState, req: &Request<Incoming>) -> Option<session::Session> {
    admin
        .console
        .find(req.headers())
        .filter(|s| admin.auth.load().has_label(&s.actor))
}

/// A change (anything but GET) must come from a live session, carry its CSRF token in
/// [`CSRF_HEADER`], and, when the browser says where it comes from (`Origin`), come from
/// this very origin.
fn check_change(admin: &AdminState, req: &Request<Incoming>) -> Result<(), Refusal> {
    let s = check_session(admin, req).ok_or(Refusal::Unauthenticated)?;
    if !same_origin(req) {
        return Err(Refusal::Origin);
    }
    if !s.csrf_matches(req.headers().get(CSRF_HEADER).map(HeaderValue::as_bytes)) {
        return Err(Refusal::Csrf);
    }
    Ok(())
}

/// `Origin`, when present, names the host the request was sent to (`Host`): a page on
/// another origin (another port included) cannot make console changes even with the
/// cookie. Absent `Origin` (a non-browser client) passes; the CSRF header still applies.
fn same_origin(req: &Request<Incoming>) -> bool {
    let Some(origin) = req.headers().get(ORIGIN) else {
        return true;
    };
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let (Ok(origin), Some(host)) = (origin.to_str(), host) else {
        return false;
    };
    let bare = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    bare.is_some_and(|o| o.eq_ignore_ascii_case(host))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

/// `POST /ui/session`: check the admin token (through the same penalty box as the bearer
/// header) and open a session. JSON only, so a cross-site HTML form cannot post it.
async fn sign_in(admin: &Arc<AdminState>, req: Request<Incoming>, conn: &ConnInfo) -> Resp {
    let json_body = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_body || !same_origin(&req) {
        return error(
            StatusCode::BAD_REQUEST,
            "sign in with a JSON body {\"token\": \"...\"} from the console's own origin",
        );
    }
    let Ok(body) = Limited::new(req.into_body(), MAX_SIGNIN_BYTES)
        .collect()
        .await
    else {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    };
    let Ok(body) = serde_json::from_slice::<SignIn>(&body.to_bytes()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"token\": \"<admin token>\"}",
        );
    };
    match admin
        .auth
        .load()
        .check_token(Some(body.token.as_str()), conn.peer.ip())
    {
        auth::Outcome::Allowed(actor) => {
            let (id, s) = admin.console.open(actor);
            tracing::info!(peer = %conn.peer, actor = %s.actor, "console sign-in");
            let mut r = session_body(&s);
            set_cookie_header(&mut r, &session::set_cookie(&id, conn.tls));
            r
        }
        auth::Outcome::Denied => {
            tracing::warn!(peer = %conn.peer, "console sign-in with a wrong admin token");
            error(StatusCode::UNAUTHORIZED, "wrong admin token")
        }
        auth::Outcome::Throttled(secs) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed admin logins; retry later",
            );
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(RETRY_AFTER, v);
            }
            r
        }
    }
}
