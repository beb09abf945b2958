//! Console sign-in sessions: a random id in an `HttpOnly`, `SameSite=Strict` cookie, held
//! server-side with the credential label it was opened with and its CSRF token.
//!
//! The cookie carries only the id (256 random bits); the map is keyed by the id's SHA-256,
//! so neither a log line nor a memory dump of the map gives a usable cookie. The CSRF token
//! is never in a cookie: the page gets it in the sign-in answer (or from `GET /ui/session`)
//! and sends it back in the [`CSRF_HEADER`] of every change, which a cross-site form or
//! `fetch` cannot do. Sessions live in this process only: a restart signs everyone out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::header::COOKIE;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::hex;

/// The cookie's name.
pub const COOKIE_NAME: &str = "portcullis_console";
/// The header every change must carry, holding the session's CSRF token.
pub const CSRF_HEADER: &str = "x-portcullis-csrf";
/// A session ends this long after sign-in, used or not (an operator signs in again).
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Sessions held at most; signing in beyond this ends the oldest.
pub const MAX_SESSIONS: usize = 64;

/// A signed-in console.
#[derive(Debug, Clone)]
pub struct Session {
    /// The label of the admin credential used to sign in: the actor of its changes.
    pub actor: Arc<str>,
    pub csrf: String,
    expires: Instant,
    created: Instant,
}

impl Session {
    /// Whether `presented` is this session's CSRF token (constant-time).
    pub fn csrf_matches(&self, presented: Option<&[u8]>) -> bool {
        presented.is_some_and(|p| bool::from(p.ct_eq(self.csrf.as_bytes())))
    }
}

/// Every open console session.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    hex::encode(&bytes)
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// Open a session for `actor`; returns the cookie value and the session.
    pub fn open(&self, actor: Arc<str>) -> (String, Session) {
        let now = Instant::now();
        let id = random_hex();
        let session = Session {
            actor,
            csrf: random_hex(),
            expires: now + LIFETIME,
            created: now,
        };
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, s| s.expires > now);
        while map.len() >= MAX_SESSIONS {
            let oldest = map.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k);
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(key(&id), session.clone());
        (id, session)
    }

    /// The live session named by the request's cookie, if any.
    pub fn find(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie_value(headers)?;
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let k = key(id);
        match map.get(&k) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    /// End the session named by the request's cookie.
    pub fn close(&self, headers: &HeaderMap) {
        if let Some(id) = cookie_value(headers) {
            let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
            map.remove(&key(id));
        }
    }
}

/// The console cookie's value among the request's `Cookie` headers.
fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
        .filter(|v| v.len() == 64)
}

/// The `Set-Cookie` value that holds `id`: `HttpOnly` (no script reads it), `SameSite=Strict`
/// (no other site's page sends it), host-only (no `Domain`), `Path=/ui/` (the console and
/// its API only), `Secure` when the admin listener speaks TLS.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE_NAME}={id}; Path=/ui/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE_NAME}=; Path=/ui/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends_on_close() {
        let s = Sessions::default();
        let (id, opened) = s.open(Arc::from("oncall"));
        let h = with_cookie(&format!("other=1; {COOKIE_NAME}={id}"));
        let found = s.find(&h).unwrap();
        assert_eq!(&*found.actor, "oncall");
        assert!(found.csrf_matches(Some(opened.csrf.as_bytes())));
        assert!(!found.csrf_matches(Some(b"nope")));
        assert!(!found.csrf_matches(None));
        s.close(&h);
        assert!(s.find(&h).is_none());
    }

    #[test]
    fn unknown_or_malformed_cookies_find_nothing() {
        let s = Sessions::default();
        s.open(Arc::from("admin"));
        assert!(s
            .find(&with_cookie(&format!("{COOKIE_NAME}={}", "0".repeat(64))))
            .is_none());
        assert!(s
            .find(&with_cookie(&format!("{COOKIE_NAME}=short")))
            .is_none());
        assert!(s.find(&HeaderMap::new()).is_none());
    }

    #[test]
    fn the_oldest_session_gives_way_beyond_the_limit() {
        let s = Sessions::default();
        let (first, _) = s.open(Arc::from("admin"));
        for _ in 0..MAX_SESSIONS {
            s.open(Arc::from("admin"));
        }
        assert!(s
            .find(&with_cookie(&format!("{COOKIE_NAME}={first}")))
            .is_none());
    }

    #[test]
    fn the_cookie_has_the_flags() {
        let c = set_cookie("abc", true);
        for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui/", "Secure"] {
            assert!(c.contains(flag), "{c}");
        }
        assert!(!c.contains("Domain"));
        assert!(!set_cookie("abc", false).contains("Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }
}
