//! `[signin]` and `[signin.cookies]`, validated: endpoint paths, token lifetimes, login
//! limits, the users file (read and checked here, so `portcullis check` reports it), and the
//! cookie names and attributes of cookie mode. The running service is `signin`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::HeaderName;

use super::file;
use super::users::UsersFile;
use crate::jose::keys::KeySet;

/// Lifetime of an access token issued at login or refresh.
pub const DEFAULT_ACCESS_TTL: Duration = Duration::from_secs(15 * 60);
/// Lifetime of a refresh token (each rotation issues one with a fresh lifetime).
pub const DEFAULT_REFRESH_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Login attempts per client IP per minute (also the burst).
pub const DEFAULT_IP_ATTEMPTS_PER_MINUTE: u32 = 30;
/// Login attempts per username per minute (also the burst).
pub const DEFAULT_USER_ATTEMPTS_PER_MINUTE: u32 = 10;

pub const DEFAULT_LOGIN_PATH: &str = "/auth/login";
pub const DEFAULT_REFRESH_PATH: &str = "/auth/refresh";
pub const DEFAULT_LOGOUT_PATH: &str = "/auth/logout";
pub const DEFAULT_LOGOUT_ALL_PATH: &str = "/auth/logout-all";

/// Default `max_concurrent_hashes`: one password verification per core but one, at least one.
/// Hashing threads run at the lowest priority ([`hashing`]), but on a machine with every core
/// busy the request path still waits for a core on each wake-up: measured with
/// `scripts/bench-login-storm.py` on 2 cores, 50 clients failing logins took proxied p99 from
/// 0.41 ms to 3.8 ms with two hashing threads, and to 0.57 ms with one.
pub fn default_concurrent_hashes() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(1)
        .max(1)
}

/// The validated `[signin]` section, with the users file already loaded.
#[derive(Debug)]
pub struct Settings {
    pub users_file: PathBuf,
    pub users: UsersFile,
    pub signing_kid: Option<String>,
    pub encrypt_kid: Option<String>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub max_sessions_per_user: Option<usize>,
    pub paths: Paths,
    pub ip_attempts_per_minute: u32,
    pub user_attempts_per_minute: u32,
    pub max_concurrent_hashes: usize,
    /// `[signin.cookies]` when cookie mode is on.
    pub cookies: Option<Cookies>,
}

#[derive(Debug, Clone)]
pub struct Paths {
    pub login: String,
    pub refresh: String,
    pub logout: String,
    pub logout_all: String,
}

impl Settings {
    /// Check `[signin]` against the rest of the config; pushes each problem (naming its
    /// key) and returns `None` when there is one.
    pub fn validate(
        f: &file::SignIn,
        base: &Path,
        keys: &KeySet,
        problems: &mut Vec<String>,
    ) -> Option<Settings> {
        let before = problems.len();
        let mut duration = |key: &str, v: &Option<String>, default: Duration| match v {
            None => default,
            Some(s) => match super::parse_duration(s) {
                Ok(d) if d.as_secs() >= 1 => d,
                Ok(_) => {
                    problems.push(format!("signin.{key}: must be at least 1s"));
                    default
                }
                Err(e) => {
                    problems.push(format!("signin.{key}: {e}"));
                    default
                }
            },
        };
        let access_ttl = duration("access_ttl", &f.access_ttl, DEFAULT_ACCESS_TTL);
        let refresh_ttl = duration("refresh_ttl", &f.refresh_ttl, DEFAULT_REFRESH_TTL);
        if keys.signing_key(f.signing_kid.as_deref()).is_none() {
            problems.push(match &f.signing_kid {
                Some(kid) => format!(
                    "signin.signing_kid: no [[jwt.keys]] entry with kid `{kid}` can sign; give it an HMAC secret or a private_key"
                ),
                None => "signin: no [[jwt.keys]] entry can sign access tokens; add an HMAC key or a private_key and name it in signing_kid".into(),
            });
        }
        if f.max_sessions_per_user == Some(0) {
            problems.push(
                "signin.max_sessions_per_user: must be at least 1 (omit it for unlimited)".into(),
            );
        }
        let mut path = |key: &str, v: &Option<String>, default: &str| -> String {
            let p = v.as_deref().unwrap_or(default);
            match crate::routing::normalise_path(p) {
                Ok(n) if n == p && p != "/" => p.to_owned(),
                _ => {
                    problems.push(format!(
                        "signin.{key}: `{p}` must be a normalised absolute path such as \"{default}\""
                    ));
                    default.to_owned()
                }
            }
        };
        let paths = Paths {
            login: path("login_path", &f.login_path, DEFAULT_LOGIN_PATH),
            refresh: path("refresh_path", &f.refresh_path, DEFAULT_REFRESH_PATH),
            logout: path("logout_path", &f.logout_path, DEFAULT_LOGOUT_PATH),
            logout_all: path(
                "logout_all_path",
                &f.logout_all_path,
                DEFAULT_LOGOUT_ALL_PATH,
            ),
        };
        let all = [
            &paths.login,
            &paths.refresh,
            &paths.logout,
            &paths.logout_all,
        ];
        if (1..all.len()).any(|i| all[..i].contains(&all[i])) {
            problems.push("signin: the four endpoint paths must differ".into());
        }
        let ip = f
            .ip_attempts_per_minute
            .unwrap_or(DEFAULT_IP_ATTEMPTS_PER_MINUTE);
        let user = f
            .user_attempts_per_minute
            .unwrap_or(DEFAULT_USER_ATTEMPTS_PER_MINUTE);
        if ip == 0 || user == 0 {
            problems.push(
                "signin.ip_attempts_per_minute / user_attempts_per_minute: must be at least 1"
                    .into(),
            );
        }
        let max_concurrent_hashes = f
            .max_concurrent_hashes
            .unwrap_or_else(default_concurrent_hashes);
        if max_concurrent_hashes == 0 {
            problems.push("signin.max_concurrent_hashes: must be at least 1".into());
        }
        let users_file = match &f.users_file {
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => base.join(p),
            None => {
                problems.push(
                    "signin.users_file: required; name the users file (TOML or JSON), e.g. users_file = \"users.toml\" (create it with `portcullis users add`)".into(),
                );
                PathBuf::new()
            }
        };
        let users = match &f.users_file {
            None => UsersFile::default(),
            Some(_) => match UsersFile::load(&users_file) {
                Ok(u) => u,
                Err(e) => {
                    problems.push(format!("signin.users_file: {e}"));
                    UsersFile::default()
                }
            },
        };
        let cookies = f
            .cookies
            .as_ref()
            .and_then(|c| Cookies::validate(c, &paths.refresh, problems));
        (problems.len() == before).then(|| Settings {
            users_file,
            users,
            signing_kid: f.signing_kid.clone(),
            encrypt_kid: f.encrypt_kid.clone(),
            access_ttl,
            refresh_ttl,
            max_sessions_per_user: f.max_sessions_per_user,
            paths,
            ip_attempts_per_minute: ip,
            user_attempts_per_minute: user,
            max_concurrent_hashes,
            cookies,
        })
    }
}

pub const DEFAULT_ACCESS_COOKIE: &str = "__Host-portcullis";
pub const DEFAULT_REFRESH_COOKIE: &str = "__Secure-portcullis-refresh";
pub const DEFAULT_CSRF_COOKIE: &str = "__Host-portcullis-csrf";
pub const DEFAULT_CSRF_HEADER: &str = "x-csrf-token";

/// The `SameSite` attribute. `None` is not offered: it would send the cookies on cross-site
/// requests, leaving the CSRF token as the only defence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
        }
    }
}

/// The cookie names cookie mode reads and sets, and the CSRF header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieNames {
    pub access: String,
    pub refresh: String,
    pub csrf: String,
    pub csrf_header: HeaderName,
}

/// The validated `[signin.cookies]` of an enabled cookie mode.
#[derive(Debug, Clone)]
pub struct Cookies {
    pub names: CookieNames,
    pub same_site: SameSite,
    pub secure: bool,
    /// `Path` of the refresh cookie: the refresh endpoint, or `/` for a `__Host-` name.
    pub refresh_cookie_path: String,
    /// A login with `token_delivery = "body"`, and a refresh presenting its token in the
    /// body, are answered with the tokens in the body, as without cookie mode.
    pub bearer_clients: bool,
}

impl Cookies {
    /// Check `[signin.cookies]`; `None` when cookie mode is off or a problem was pushed
    /// (each naming its key). `refresh_path` is the validated refresh endpoint.
    pub fn validate(
        f: &file::Cookies,
        refresh_path: &str,
        problems: &mut Vec<String>,
    ) -> Option<Cookies> {
        let before = problems.len();
        let secure = f.secure.unwrap_or(true);
        let default_name = |name: &'static str| {
            if secure {
                name
            } else {
                // Browsers drop prefixed cookies that are not Secure.
                name.trim_start_matches("__Host-")
                    .trim_start_matches("__Secure-")
            }
        };
        let mut name = |key: &str, v: &Option<String>, default: &'static str| -> String {
            let n = v.as_deref().unwrap_or(default_name(default));
            if let Err(e) = check_name(n, secure) {
                problems.push(format!("signin.cookies.{key}: `{n}` {e}"));
            }
            n.to_owned()
        };
        let access = name("access_cookie", &f.access_cookie, DEFAULT_ACCESS_COOKIE);
        let refresh = name("refresh_cookie", &f.refresh_cookie, DEFAULT_REFRESH_COOKIE);
        let csrf = name("csrf_cookie", &f.csrf_cookie, DEFAULT_CSRF_COOKIE);
        if access == refresh || access == csrf || refresh == csrf {
            problems.push(
                "signin.cookies: access_cookie, refresh_cookie and csrf_cookie must differ".into(),
            );
        }
        let header_text = f.csrf_header.as_deref().unwrap_or(DEFAULT_CSRF_HEADER);
        let csrf_header = match HeaderName::from_bytes(header_text.trim().as_bytes()) {
            Ok(h) if is_preflighted(&h) => h,
            Ok(_) => {
                problems.push(format!(
                    "signin.cookies.csrf_header: `{header_text}` is a header a cross-site request may send or that carries credentials; use a custom name such as \"{DEFAULT_CSRF_HEADER}\""
                ));
                HeaderName::from_static(DEFAULT_CSRF_HEADER)
            }
            Err(_) => {
                problems.push(format!(
                    "signin.cookies.csrf_header: `{header_text}` is not a valid HTTP header name"
                ));
                HeaderName::from_static(DEFAULT_CSRF_HEADER)
            }
        };
        let same_site = match f
            .same_site
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("strict") => SameSite::Strict,
            Some("lax") => SameSite::Lax,
            Some("none") => {
                problems.push(
                    "signin.cookies.same_site: \"none\" is refused: it sends the token cookies on cross-site requests; use \"strict\" or \"lax\"".into(),
                );
                SameSite::Strict
            }
            Some(other) => {
                problems.push(format!(
                    "signin.cookies.same_site: `{other}` is not \"strict\" or \"lax\""
                ));
                SameSite::Strict
            }
        };
        let refresh_cookie_path = if refresh.starts_with("__Host-") {
            "/".to_owned()
        } else {
            refresh_path.to_owned()
        };
        (f.enabled == Some(true) && problems.len() == before).then(|| Cookies {
            names: CookieNames {
                access,
                refresh,
                csrf,
                csrf_header,
            },
            same_site,
            secure,
            refresh_cookie_path,
            bearer_clients: f.bearer_clients == Some(true),
        })
    }
}

/// A cookie name is an RFC 6265 `token`: visible ASCII without separators. A `__Host-` or
/// `__Secure-` prefix needs the `Secure` attribute, or browsers refuse the cookie.
fn check_name(name: &str, secure: bool) -> Result<(), &'static str> {
    const SEPARATORS: &[u8] = b"()<>@,;:\\\"/[]?={} \t";
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !SEPARATORS.contains(&b))
    {
        return Err("is not a valid cookie name (visible ASCII without separators such as ; = , and spaces)");
    }
    let lower = name.to_ascii_lowercase();
    if !secure && (lower.starts_with("__host-") || lower.starts_with("__secure-")) {
        return Err(
            "has a __Host-/__Secure- prefix, which browsers accept only with secure = true",
        );
    }
    Ok(())
}

/// Is `h` a header a cross-site page cannot make a browser send without a CORS preflight,
/// and not one that carries credentials itself? (The CORS-safelisted request headers of the
/// Fetch standard fail the first test.)
fn is_preflighted(h: &HeaderName) -> bool {
    !matches!(
        h.as_str(),
        "accept"
            | "accept-language"
            | "content-language"
            | "content-type"
            | "range"
            | "cookie"
            | "authorization"
            | "host"
            | "origin"
            | "referer"
    )
}
