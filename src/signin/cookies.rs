//! Cookie mode (`[signin.cookies]`): sign-in hands browser clients their tokens as cookies
//! instead of in the JSON body, and the gateway reads the access cookie as the bearer token
//! (see `auth::cookie`, which also holds the CSRF check).
//!
//! Three cookies (RFC 6265):
//!
//! | cookie | default name | attributes |
//! | --- | --- | --- |
//! | access token | `__Host-portcullis` | `Path=/; Max-Age=<access_ttl>; HttpOnly; Secure; SameSite` |
//! | refresh token | `__Secure-portcullis-refresh` | `Path=<refresh_path>; Max-Age=<refresh_ttl>; HttpOnly; Secure; SameSite` |
//! | CSRF token | `__Host-portcullis-csrf` | `Path=/; Max-Age=<refresh_ttl>; Secure; SameSite` (not `HttpOnly`: the page reads it) |
//!
//! The refresh cookie is scoped to the refresh endpoint, so it travels on one request in a
//! session rather than on every one; a name with the `__Host-` prefix forces `Path=/`
//! instead. The prefixes (RFC 6265bis section 4.1.3) stop a sibling subdomain or a plain-HTTP
//! page from planting these cookies; they need `Secure`, so with `secure = false` the default
//! names drop them.

use http::header::{HeaderMap, HeaderValue, SET_COOKIE};

use crate::auth::cookie::CookieAuth;

pub use crate::config::signin::{
    SameSite, DEFAULT_ACCESS_COOKIE, DEFAULT_CSRF_COOKIE, DEFAULT_CSRF_HEADER,
    DEFAULT_REFRESH_COOKIE,
};

/// The validated `[signin.cookies]` of an enabled cookie mode.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Cookie names and the CSRF header, as the request path reads them.
    pub names: CookieAuth,
    pub same_site: SameSite,
    pub secure: bool,
    /// `Path` of the refresh cookie: the refresh endpoint, or `/` for a `__Host-` name.
    pub refresh_cookie_path: String,
    /// A login with `token_delivery = "body"`, and a refresh presenting its token in the
    /// body, are answered with the tokens in the body, as without cookie mode.
    pub bearer_clients: bool,
}

/// A `Set-Cookie` value that is not a valid header: names are validated at load and values
/// are base64url tokens, so this is a bug, answered with a generic 503.
#[derive(Debug, thiserror::Error)]
#[error("cookie `{0}`: value is not a valid header")]
pub struct CookieError(pub String);

impl From<crate::config::signin::Cookies> for Settings {
    fn from(c: crate::config::signin::Cookies) -> Self {
        Settings {
            names: CookieAuth {
                access: c.names.access,
                refresh: c.names.refresh,
                csrf: c.names.csrf,
                csrf_header: c.names.csrf_header,
            },
            same_site: c.same_site,
            secure: c.secure,
            refresh_cookie_path: c.refresh_cookie_path,
            bearer_clients: c.bearer_clients,
        }
    }
}

impl Settings {
    /// Append the `Set-Cookie` headers of a new or rotated session: access and refresh
    /// token (`HttpOnly`) and the CSRF token (readable by the page).
    pub fn set_session(
        &self,
        headers: &mut HeaderMap,
        tokens: &SessionCookies<'_>,
    ) -> Result<(), CookieError> {
        let n = &self.names;
        for (name, value, path, max_age, http_only) in [
            (&n.access, tokens.access, "/", tokens.access_ttl, true),
            (
                &n.refresh,
                tokens.refresh,
                self.refresh_cookie_path.as_str(),
                tokens.refresh_ttl,
                true,
            ),
            (&n.csrf, tokens.csrf, "/", tokens.refresh_ttl, false),
        ] {
            headers.append(
                SET_COOKIE,
                self.set_cookie(name, value, path, max_age, http_only)?,
            );
        }
        Ok(())
    }

    /// Append `Set-Cookie` headers that delete all three cookies (`Max-Age=0`, same name,
    /// path and prefix requirements as when they were set).
    pub fn clear_session(&self, headers: &mut HeaderMap) -> Result<(), CookieError> {
        let n = &self.names;
        for (name, path, http_only) in [
            (&n.access, "/", true),
            (&n.refresh, self.refresh_cookie_path.as_str(), true),
            (&n.csrf, "/", false),
        ] {
            headers.append(SET_COOKIE, self.set_cookie(name, "", path, 0, http_only)?);
        }
        Ok(())
    }

    /// One `Set-Cookie` value (RFC 6265 section 4.1).
    fn set_cookie(
        &self,
        name: &str,
        value: &str,
        path: &str,
        max_age: u64,
        http_only: bool,
    ) -> Result<HeaderValue, CookieError> {
        let mut s = format!("{name}={value}; Path={path}; Max-Age={max_age}");
        if http_only {
            s.push_str("; HttpOnly");
        }
        if self.secure {
            s.push_str("; Secure");
        }
        s.push_str("; SameSite=");
        s.push_str(self.same_site.as_str());
        // Values are base64url tokens and names were validated: this only fails on a bug.
        HeaderValue::from_str(&s).map_err(|_| CookieError(name.to_owned()))
    }
}

/// What goes into the cookies of a session.
pub struct SessionCookies<'a> {
    pub access: &'a str,
    pub refresh: &'a str,
    pub csrf: &'a str,
    /// `Max-Age` of the access cookie, in seconds.
    pub access_ttl: u64,
    /// `Max-Age` of the refresh and CSRF cookies, in seconds.
    pub refresh_ttl: u64,
}

/// Is `value` something sign-in could have issued as a CSRF token (base64url, 22 to 128
/// characters: at least 128 bits)? A rotation keeps such a value instead of minting one, so
/// other tabs holding it keep working.
pub fn is_csrf_token(value: &[u8]) -> bool {
    (22..=128).contains(&value.len())
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(text: &str) -> (Option<Settings>, Vec<String>) {
        let f: crate::config::file::Cookies = toml::from_str(text).unwrap();
        let mut problems = Vec::new();
        let s = crate::config::signin::Cookies::validate(&f, "/auth/refresh", &mut problems);
        (s.map(Settings::from), problems)
    }

    #[test]
    fn defaults_use_prefixed_names_and_strict() {
        let (s, p) = validate("enabled = true");
        assert!(p.is_empty(), "{p:?}");
        let s = s.expect("enabled");
        assert_eq!(s.names.access, DEFAULT_ACCESS_COOKIE);
        assert_eq!(s.names.refresh, DEFAULT_REFRESH_COOKIE);
        assert_eq!(s.names.csrf, DEFAULT_CSRF_COOKIE);
        assert_eq!(s.names.csrf_header, "x-csrf-token");
        assert_eq!(s.same_site, SameSite::Strict);
        assert!(s.secure);
        assert_eq!(s.refresh_cookie_path, "/auth/refresh");
        assert!(validate("").0.is_none(), "absent enabled is off");
        assert!(validate("enabled = false").0.is_none());
    }

    #[test]
    fn insecure_dev_mode_drops_the_prefixes() {
        let (s, p) = validate("enabled = true\nsecure = false");
        assert!(p.is_empty(), "{p:?}");
        let s = s.unwrap();
        assert_eq!(s.names.access, "portcullis");
        assert_eq!(s.names.refresh, "portcullis-refresh");
        assert_eq!(s.names.csrf, "portcullis-csrf");
        let (_, p) = validate("enabled = true\nsecure = false\naccess_cookie = \"__Host-x\"");
        assert!(p[0].contains("signin.cookies.access_cookie"), "{p:?}");
    }

    #[test]
    fn each_bad_key_is_named() {
        for (text, key) in [
            ("same_site = \"none\"", "signin.cookies.same_site"),
            ("same_site = \"sometimes\"", "signin.cookies.same_site"),
            (
                "csrf_header = \"content-type\"",
                "signin.cookies.csrf_header",
            ),
            ("csrf_header = \"bad header\"", "signin.cookies.csrf_header"),
            ("access_cookie = \"a;b\"", "signin.cookies.access_cookie"),
            ("csrf_cookie = \"\"", "signin.cookies.csrf_cookie"),
            ("refresh_cookie = \"__Host-portcullis\"", "must differ"),
        ] {
            let (s, p) = validate(&format!("enabled = true\n{text}"));
            assert!(s.is_none(), "{text}");
            assert!(p.iter().any(|e| e.contains(key)), "{text}: {p:?}");
        }
        let e = toml::from_str::<crate::config::file::Cookies>("enabld = true").unwrap_err();
        assert!(e.to_string().contains("enabld"), "{e}");
    }

    #[test]
    fn a_host_prefixed_refresh_cookie_is_sent_everywhere() {
        let (s, _) = validate("enabled = true\nrefresh_cookie = \"__Host-r\"");
        assert_eq!(s.unwrap().refresh_cookie_path, "/");
    }

    #[test]
    fn set_cookie_carries_every_attribute() {
        let (s, _) = validate("enabled = true\nsame_site = \"lax\"");
        let s = s.unwrap();
        let mut h = HeaderMap::new();
        s.set_session(
            &mut h,
            &SessionCookies {
                access: "a.b.c",
                refresh: "r",
                csrf: "c",
                access_ttl: 900,
                refresh_ttl: 3600,
            },
        )
        .unwrap();
        let all: Vec<_> = h
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            all,
            [
                "__Host-portcullis=a.b.c; Path=/; Max-Age=900; HttpOnly; Secure; SameSite=Lax",
                "__Secure-portcullis-refresh=r; Path=/auth/refresh; Max-Age=3600; HttpOnly; Secure; SameSite=Lax",
                "__Host-portcullis-csrf=c; Path=/; Max-Age=3600; Secure; SameSite=Lax",
            ]
        );
        let mut h = HeaderMap::new();
        s.clear_session(&mut h).unwrap();
        let all: Vec<_> = h
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(all.len(), 3);
        assert!(all[1].starts_with("__Secure-portcullis-refresh=; Path=/auth/refresh; Max-Age=0;"));
        assert!(all
            .iter()
            .all(|c| c.contains("Max-Age=0") && c.contains("Secure")));
    }

    #[test]
    fn insecure_cookies_omit_secure() {
        let (s, _) = validate("enabled = true\nsecure = false");
        let v = s.unwrap().set_cookie("n", "v", "/", 1, true).unwrap();
        assert_eq!(v, "n=v; Path=/; Max-Age=1; HttpOnly; SameSite=Strict");
    }

    #[test]
    fn csrf_token_shape() {
        assert!(is_csrf_token(&[b'a'; 43]));
        assert!(!is_csrf_token(b"short"));
        assert!(!is_csrf_token(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;x"));
    }
}
