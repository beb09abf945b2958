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
//! passwords), [`http`] (the endpoints), [`dpop`] (tokens bound to a DPoP key, RFC 9449).

pub mod cookies;
pub mod dpop;
pub mod hashing;
pub mod http;
pub mod issue;
pub mod limits;
pub mod sessions;
pub mod users;

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::auth::jws::Validator;
use crate::revocation::{Backing, Revocations};

pub use crate::config::signin::{
    default_concurrent_hashes, Paths, Settings, DEFAULT_ACCESS_TTL, DEFAULT_IP_ATTEMPTS_PER_MINUTE,
    DEFAULT_LOGIN_PATH, DEFAULT_LOGOUT_ALL_PATH, DEFAULT_LOGOUT_PATH, DEFAULT_REFRESH_PATH,
    DEFAULT_REFRESH_TTL, DEFAULT_USER_ATTEMPTS_PER_MINUTE,
};

/// Which sign-in endpoint a request is for: an entry of the one route table.
pub use crate::routing::Endpoint;

/// Why sign-in cannot start: the start stops (sessions) or its endpoints stay disabled.
/// Causes are named in the message, not chained as `source()`.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("signin: the signing key has no private material")]
    NoSigningKey,
    #[error(transparent)]
    Directory(#[from] users::DummyHashError),
    #[error(transparent)]
    Signer(#[from] issue::IssueError),
    #[error("session journal: {0}")]
    Journal(crate::durable::DurableError),
    #[error("signin: cannot start the password hashing threads: {0}")]
    HashThreads(std::io::Error),
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
    /// Verifies the access token a logout presents (the request path's validator).
    pub validator: Arc<Validator>,
    /// Where logouts and refresh-token reuse revoke access tokens.
    pub revocations: Arc<Revocations>,
}

impl SignIn {
    /// Build from validated settings and the request path's validator (whose key set holds
    /// the signing key).
    /// Sessions outlive a config reload: they are kept per revocation service, which a
    /// reload keeps too (rate-limit state starts afresh with the new limits).
    pub fn new(
        s: Settings,
        validator: Arc<Validator>,
        jwt: &crate::config::Jwt,
        revocations: &Arc<Revocations>,
    ) -> Result<SignIn, StartError> {
        let key = validator
            .keys
            .signing_key(s.signing_kid.as_deref())
            .ok_or(StartError::NoSigningKey)?;
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
                .map_err(StartError::HashThreads)?,
            refresh_ttl: s.refresh_ttl,
            max_sessions_per_user: s.max_sessions_per_user,
            cookies: s.cookies.map(cookies::Settings::from),
            paths: s.paths,
            validator,
            revocations: revocations.clone(),
        })
    }

    /// The four endpoints as route-table entries (exact, normalised paths).
    pub fn endpoints(&self) -> Vec<(String, Endpoint)> {
        let p = &self.paths;
        vec![
            (p.login.clone(), Endpoint::Login),
            (p.refresh.clone(), Endpoint::Refresh),
            (p.logout.clone(), Endpoint::Logout),
            (p.logout_all.clone(), Endpoint::LogoutAll),
        ]
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
) -> Result<Arc<dyn sessions::SessionStore>, StartError> {
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
            let (journal, loaded) = sessions::JournalSessions::open(&path, revocations.recover())
                .map_err(StartError::Journal)?;
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
