//! Sign-in: the gateway issues its own tokens, so a backend with no token issuer only ever
//! sees an authenticated user id.
//!
//! Endpoints (paths configurable under `[signin]`), answered by the gateway itself before
//! routing (see `pipeline::handle`):
//!
//! | endpoint | takes | does |
//! | --- | --- | --- |
//! | `POST /auth/login` | JSON or form `username`, `password` | verify, start a session family, issue access + refresh token |
//! | `POST /auth/refresh` | JSON or form `refresh_token` | rotate the refresh token, issue a new access token; reuse ends the family |
//! | `POST /auth/logout` | bearer access token | revoke it and end its family |
//! | `POST /auth/logout-all` | bearer access token | end every family of the user, revoking their access tokens |
//!
//! In cookie mode (`[signin.cookies]`, see [`cookies`]) the tokens travel as cookies instead:
//! login and refresh set them, refresh and logout also accept them (with the CSRF header),
//! logout clears them.
//!
//! Files: [`users`] (users file, password hashing), [`sessions`] (refresh tokens and
//! families), [`limits`] (login rate limits), [`issue`] (minting access tokens), [`cookies`]
//! (cookie mode settings and `Set-Cookie`), [`hashing`] (the low-priority threads that verify
//! passwords), [`http`] (the endpoints).

pub mod cookies;
pub mod hashing;
pub mod http;
pub mod issue;
pub mod limits;
pub mod sessions;
pub mod users;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::auth::keys::KeySet;
use crate::config::file;
use crate::revocation::{Backing, Revocations};

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
    pub users: users::UsersFile,
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
    pub cookies: Option<cookies::Settings>,
}

#[derive(Debug, Clone)]
pub struct Paths {
    pub login: String,
    pub refresh: String,
    pub logout: String,
    pub logout_all: String,
}

/// Which sign-in endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Login,
    Refresh,
    Logout,
    LogoutAll,
}

impl Endpoint {
    /// Label for metrics and the access log.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Login => "signin:login",
            Endpoint::Refresh => "signin:refresh",
            Endpoint::Logout => "signin:logout",
            Endpoint::LogoutAll => "signin:logout-all",
        }
    }
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
            Some(s) => match crate::config::parse_duration(s) {
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
            match crate::pipeline::route::normalise_path(p) {
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
        let users_file = if f.users_file.is_absolute() {
            f.users_file.clone()
        } else {
            base.join(&f.users_file)
        };
        let users = match users::UsersFile::load(&users_file) {
            Ok(u) => u,
            Err(e) => {
                problems.push(format!("signin.users_file: {e}"));
                users::UsersFile::default()
            }
        };
        let cookies = f
            .cookies
            .as_ref()
            .and_then(|c| cookies::Settings::validate(c, &paths.refresh, problems));
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

/// The running sign-in service: users, signer, sessions, limits.
#[derive(Debug)]
pub struct SignIn {
    pub paths: Paths,
    pub directory: Arc<users::Directory>,
    pub signer: issue::Signer,
    pub sessions: Arc<dyn sessions::SessionStore>,
    pub limits: limits::LoginLimits,
    /// Bounds password verifications in flight, so a login storm queues here instead of
    /// taking every blocking thread and core from proxied traffic.
    pub hashing: tokio::sync::Semaphore,
    /// Runs those verifications on low-priority threads of their own.
    pub hasher: hashing::HashPool,
    pub refresh_ttl: Duration,
    pub max_sessions_per_user: Option<usize>,
    /// Cookie mode: tokens go to browsers as cookies (see [`cookies`]).
    pub cookies: Option<cookies::Settings>,
}

impl SignIn {
    /// Build from validated settings and the key set (before the validator takes it).
    /// Sessions outlive a config reload: they are kept per revocation service, which a
    /// reload keeps too (rate-limit state starts afresh with the new limits).
    pub fn new(
        s: Settings,
        keys: &KeySet,
        jwt: &crate::config::Jwt,
        revocations: &Arc<Revocations>,
    ) -> Result<SignIn, String> {
        let key = keys
            .signing_key(s.signing_kid.as_deref())
            .ok_or("signin: the signing key has no private material")?;
        if s.cookies.as_ref().is_some_and(|c| !c.secure) {
            tracing::warn!(
                "signin.cookies.secure = false: token cookies may travel over plain HTTP; for local development only"
            );
        }
        Ok(SignIn {
            directory: Arc::new(users::Directory::new(s.users)?),
            signer: issue::Signer::new(key, jwt, s.access_ttl, s.encrypt_kid.as_deref())?,
            sessions: sessions_for(revocations)?,
            limits: limits::LoginLimits::new(s.ip_attempts_per_minute, s.user_attempts_per_minute),
            hashing: tokio::sync::Semaphore::new(s.max_concurrent_hashes),
            hasher: hashing::HashPool::new(s.max_concurrent_hashes)
                .map_err(|e| format!("signin: cannot start the password hashing threads: {e}"))?,
            refresh_ttl: s.refresh_ttl,
            max_sessions_per_user: s.max_sessions_per_user,
            cookies: s.cookies,
            paths: s.paths,
        })
    }

    /// The endpoint a normalised path names, if any.
    pub fn endpoint(&self, path: &str) -> Option<Endpoint> {
        let p = &self.paths;
        if path == p.login {
            Some(Endpoint::Login)
        } else if path == p.refresh {
            Some(Endpoint::Refresh)
        } else if path == p.logout {
            Some(Endpoint::Logout)
        } else if path == p.logout_all {
            Some(Endpoint::LogoutAll)
        } else {
            None
        }
    }
}

/// The session store that goes with a revocation service: opened with the first sign-in
/// service built on it, found again by each one a reload builds, so sessions outlive a
/// reload. (Ending a session revokes through that service, so the two belong together.)
///
/// It lives where the revocations do: in memory for `store = "memory"`, in a journal beside
/// the embedded log (`<store>.sessions`), or in the cluster's Redis. Opening the journal
/// reads it whole, so start-up calls this on a blocking thread before any socket binds
/// (see `server::start`), and a journal that cannot be opened stops the start.
pub fn sessions_for(
    revocations: &Arc<Revocations>,
) -> Result<Arc<dyn sessions::SessionStore>, String> {
    type Entry = (Weak<Revocations>, Arc<dyn sessions::SessionStore>);
    static STORES: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    let mut stores = STORES.lock().unwrap_or_else(|p| p.into_inner());
    stores.retain(|(r, _)| r.strong_count() > 0);
    if let Some((_, s)) = stores
        .iter()
        .find(|(r, _)| std::ptr::eq(r.as_ptr(), Arc::as_ptr(revocations)))
    {
        return Ok(s.clone());
    }
    let store: Arc<dyn sessions::SessionStore> = match revocations.backing() {
        Backing::Memory => Arc::new(sessions::MemorySessions::default()),
        Backing::Log(log) => {
            let path = sessions::journal_path(log);
            let started = std::time::Instant::now();
            let (journal, loaded) = sessions::JournalSessions::open(&path, revocations.recover())?;
            tracing::info!(
                path = %path.display(),
                families = loaded.families,
                spent_tokens = loaded.spent,
                records = loaded.records,
                corrupt = loaded.corrupt,
                truncated_bytes = loaded.truncated,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "sign-in sessions loaded"
            );
            Arc::new(journal)
        }
        Backing::Redis(cluster) => Arc::new(sessions::RedisSessions::new(cluster)),
    };
    stores.push((Arc::downgrade(revocations), store.clone()));
    Ok(store)
}
