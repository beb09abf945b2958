//! Where a token comes from in cookie mode (`[signin.cookies]`): the `Cookie` request
//! header(s), and the double-submit CSRF check that goes with an ambient credential.
//!
//! Parsing follows what RFC 6265 section 4.2.1 says a user agent sends (`name=value` pairs
//! separated by `; `), leniently about whitespace, and reads the several `Cookie` fields an
//! HTTP/2 client may split the list into (RFC 9113 section 8.2.3) as one list. A name that
//! appears twice is refused rather than guessed at: two copies of the session cookie mean a
//! second one was planted (cookie tossing from a sibling domain, or an injected header).
//!
//! Nothing here logs: cookie values and CSRF tokens are credentials.

use http::header::{HeaderName, HeaderValue, COOKIE};
use http::{HeaderMap, Method};
use subtle::ConstantTimeEq;

use super::bearer::trim_spaces;
use super::AuthError;

/// Why a request authenticating by cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The access cookie is missing, duplicated, too large or not text: answered like a bad
    /// bearer token (401).
    Auth(AuthError),
    /// A state-changing request without a CSRF header equal to the CSRF cookie (403).
    Csrf,
}

/// The names cookie mode reads, from the validated `[signin.cookies]`.
#[derive(Debug, Clone)]
pub struct CookieAuth {
    pub access: String,
    pub refresh: String,
    pub csrf: String,
    pub csrf_header: HeaderName,
}

impl CookieAuth {
    /// The access token of a request that has no `Authorization` header. For a method that
    /// is not safe (anything but GET, HEAD, OPTIONS) the CSRF header must equal the CSRF
    /// cookie first. Refuses with [`Refusal::Auth`] (`Missing`: no access cookie;
    /// `Malformed`: two of them, or not UTF-8; `TooLarge`: longer than `max_bytes`) or
    /// [`Refusal::Csrf`].
    pub fn access_token<'h>(
        &self,
        method: &Method,
        headers: &'h HeaderMap,
        max_bytes: usize,
    ) -> Result<&'h str, Refusal> {
        let token = match get(headers, &self.access) {
            Ok(Some(v)) if !v.is_empty() => v,
            Ok(_) => return Err(Refusal::Auth(AuthError::Missing)),
            Err(Duplicate) => return Err(Refusal::Auth(AuthError::Malformed)),
        };
        if token.len() > max_bytes {
            return Err(Refusal::Auth(AuthError::TooLarge));
        }
        // The CSRF check comes before any signature work: a forged cross-site request is
        // turned away at the cost of one comparison.
        if !is_safe(method) && !self.csrf_matches(headers) {
            return Err(Refusal::Csrf);
        }
        std::str::from_utf8(token).map_err(|_| Refusal::Auth(AuthError::Malformed))
    }

    /// The refresh token from the refresh cookie, if the request carries one; spending it
    /// changes state, so the CSRF header must match. `Ok(None)`: no refresh cookie.
    pub fn refresh_token<'h>(&self, headers: &'h HeaderMap) -> Result<Option<&'h str>, Refusal> {
        let token = match get(headers, &self.refresh) {
            Ok(Some(v)) if !v.is_empty() => v,
            Ok(_) => return Ok(None),
            Err(Duplicate) => return Err(Refusal::Auth(AuthError::Malformed)),
        };
        if !self.csrf_matches(headers) {
            return Err(Refusal::Csrf);
        }
        std::str::from_utf8(token)
            .map(Some)
            .map_err(|_| Refusal::Auth(AuthError::Malformed))
    }

    /// The CSRF cookie's value, when there is exactly one.
    pub fn csrf_cookie<'h>(&self, headers: &'h HeaderMap) -> Option<&'h [u8]> {
        get(headers, &self.csrf).ok().flatten()
    }

    /// Double submit: exactly one CSRF header, exactly one CSRF cookie, both non-empty and
    /// equal, compared in constant time. A cross-site page can make the browser send the
    /// cookie but can neither read it nor set a custom header without a CORS preflight.
    pub fn csrf_matches(&self, headers: &HeaderMap) -> bool {
        let mut sent = headers.get_all(&self.csrf_header).iter();
        let (Some(header), None) = (sent.next(), sent.next()) else {
            return false;
        };
        let Some(cookie) = self.csrf_cookie(headers) else {
            return false;
        };
        let header = header.as_bytes();
        !cookie.is_empty() && bool::from(header.ct_eq(cookie))
    }

    /// Remove the access and refresh cookies from the request, so the upstream never sees a
    /// gateway credential; other cookies (the CSRF cookie included) stay, in order. Never
    /// rejects.
    pub fn strip(&self, headers: &mut HeaderMap) {
        strip(headers, &[&self.access, &self.refresh]);
    }
}

/// Safe methods (RFC 9110 section 9.2.1) a browser can send cross-site: they need no CSRF
/// token. TRACE is safe too but is not exempt: browsers cannot send it, so only a non-browser
/// client would, and the gateway cannot know what an upstream does with it.
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A cookie name appeared more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duplicate;

/// The value of cookie `name`: `Ok(None)` when absent, `Err` when it appears twice.
pub fn get<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h [u8]>, Duplicate> {
    let mut found = None;
    for (n, v) in pairs(headers) {
        if n == name.as_bytes() {
            if found.is_some() {
                return Err(Duplicate);
            }
            found = Some(v);
        }
    }
    Ok(found)
}

/// Every `name=value` pair of every `Cookie` field, in order; whitespace around names and
/// values trimmed, pairs without `=` skipped (a user agent never sends one).
fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            Some((trim_spaces(&pair[..eq]), trim_spaces(&pair[eq + 1..])))
        })
}

/// Drop the cookies named in `names` from every `Cookie` field. When one is present, the rest
/// is written back as a single field joined by `; `, which is also what RFC 9113 section
/// 8.2.3 asks of a request going from HTTP/2 to HTTP/1.1. Untouched when none is present.
pub fn strip(headers: &mut HeaderMap, names: &[&str]) {
    let ours = |n: &[u8]| names.iter().any(|x| x.as_bytes() == n);
    if !pairs(headers).any(|(n, _)| ours(n)) {
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for (n, v) in pairs(headers).filter(|(n, _)| !ours(n)) {
        if !kept.is_empty() {
            kept.extend_from_slice(b"; ");
        }
        kept.extend_from_slice(n);
        kept.push(b'=');
        kept.extend_from_slice(v);
    }
    headers.remove(COOKIE);
    if kept.is_empty() {
        return;
    }
    // The bytes came from valid header values, minus some pairs: still a valid value.
    if let Ok(v) = HeaderValue::from_bytes(&kept) {
        headers.insert(COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(COOKIE, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    fn auth() -> CookieAuth {
        CookieAuth {
            access: "__Host-at".into(),
            refresh: "__Secure-rt".into(),
            csrf: "__Host-csrf".into(),
            csrf_header: HeaderName::from_static("x-csrf-token"),
        }
    }

    #[test]
    fn finds_a_cookie_across_separators_and_http2_fields() {
        let h = headers(&["a=1;b=2", " c = 3 ;  d=x=y", "e=5"]);
        assert_eq!(get(&h, "a"), Ok(Some(&b"1"[..])));
        assert_eq!(get(&h, "c"), Ok(Some(&b"3"[..])));
        assert_eq!(
            get(&h, "d"),
            Ok(Some(&b"x=y"[..])),
            "only the first = splits"
        );
        assert_eq!(get(&h, "e"), Ok(Some(&b"5"[..])), "a second Cookie field");
        assert_eq!(get(&h, "f"), Ok(None));
        assert_eq!(get(&h, "A"), Ok(None), "names are case-sensitive");
    }

    #[test]
    fn a_duplicate_name_is_refused_even_across_fields() {
        assert_eq!(get(&headers(&["a=1; a=2"]), "a"), Err(Duplicate));
        assert_eq!(get(&headers(&["a=1", "b=2; a=1"]), "a"), Err(Duplicate));
        let h = headers(&["__Host-at=t1", "__Host-at=t2"]);
        assert_eq!(
            auth().access_token(&Method::GET, &h, 100),
            Err(Refusal::Auth(AuthError::Malformed))
        );
    }

    #[test]
    fn access_cookie_is_bounded_and_required() {
        let a = auth();
        let long = format!("__Host-at={}", "a".repeat(101));
        assert_eq!(
            a.access_token(&Method::GET, &headers(&[&long]), 100),
            Err(Refusal::Auth(AuthError::TooLarge))
        );
        for c in ["other=1", "__Host-at=", "__Host-at"] {
            assert_eq!(
                a.access_token(&Method::GET, &headers(&[c]), 100),
                Err(Refusal::Auth(AuthError::Missing)),
                "{c}"
            );
        }
        assert_eq!(
            a.access_token(&Method::GET, &headers(&["__Host-at=tok"]), 100),
            Ok("tok")
        );
    }

    #[test]
    fn unsafe_methods_need_a_matching_csrf_header() {
        let a = auth();
        let mut h = headers(&["__Host-at=tok; __Host-csrf=s3cret"]);
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert_eq!(a.access_token(&m, &h, 100), Ok("tok"), "{m}");
        }
        for m in [
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::TRACE,
        ] {
            assert_eq!(a.access_token(&m, &h, 100), Err(Refusal::Csrf), "{m}");
        }
        h.insert("x-csrf-token", HeaderValue::from_static("s3creT"));
        assert_eq!(a.access_token(&Method::POST, &h, 100), Err(Refusal::Csrf));
        h.insert("x-csrf-token", HeaderValue::from_static("s3cret"));
        assert_eq!(a.access_token(&Method::POST, &h, 100), Ok("tok"));
        // Two CSRF headers are ambiguous.
        h.append("x-csrf-token", HeaderValue::from_static("s3cret"));
        assert_eq!(a.access_token(&Method::POST, &h, 100), Err(Refusal::Csrf));
    }

    #[test]
    fn csrf_needs_a_cookie_and_a_non_empty_value() {
        let a = auth();
        let mut h = headers(&["__Host-at=tok"]);
        h.insert("x-csrf-token", HeaderValue::from_static(""));
        assert!(!a.csrf_matches(&h), "no CSRF cookie");
        let mut h = headers(&["__Host-at=tok; __Host-csrf="]);
        h.insert("x-csrf-token", HeaderValue::from_static(""));
        assert!(!a.csrf_matches(&h), "empty on both sides");
        let mut h = headers(&["__Host-csrf=v; __Host-csrf=v"]);
        h.insert("x-csrf-token", HeaderValue::from_static("v"));
        assert!(!a.csrf_matches(&h), "two CSRF cookies");
    }

    #[test]
    fn refresh_cookie_is_optional_but_needs_csrf_when_present() {
        let a = auth();
        assert_eq!(a.refresh_token(&headers(&["x=1"])), Ok(None));
        let mut h = headers(&["__Secure-rt=r1; __Host-csrf=c"]);
        assert_eq!(a.refresh_token(&h), Err(Refusal::Csrf));
        h.insert("x-csrf-token", HeaderValue::from_static("c"));
        assert_eq!(a.refresh_token(&h), Ok(Some("r1")));
    }

    #[test]
    fn strip_removes_only_gateway_credentials() {
        let a = auth();
        let mut h = headers(&[
            "theme=dark; __Host-at=tok",
            "__Secure-rt=r; __Host-csrf=c; x=1",
        ]);
        a.strip(&mut h);
        let all: Vec<_> = h.get_all(COOKIE).iter().collect();
        assert_eq!(all, ["theme=dark; __Host-csrf=c; x=1"]);

        let mut only = headers(&["__Host-at=tok"]);
        a.strip(&mut only);
        assert!(only.get(COOKIE).is_none(), "no empty Cookie header left");

        // Without one of ours, the fields are left exactly as they came.
        let mut other = headers(&["a=1", "b=2"]);
        a.strip(&mut other);
        assert_eq!(other.get_all(COOKIE).iter().count(), 2);
    }
}
