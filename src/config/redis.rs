//! `[revocation] store = "redis://..."` (cluster mode): the settings, the URL checks `check`
//! runs, password redaction for every message, and the client the settings describe (used
//! by the revocation cluster and the API-key store alike).

use std::fmt;
use std::time::Duration;

/// Cluster mode settings: `[revocation] store = "redis://..."` and the keys beside it.
#[derive(Clone)]
pub struct RedisStore {
    /// The URL as written; may carry a password, so it never prints (see [`Self::redacted`]).
    pub url: String,
    pub key_prefix: String,
    pub stream_max_len: u64,
    pub timeout: Duration,
    pub load_timeout: Duration,
    /// PEM CA certificates for `rediss://`, instead of the system roots.
    pub tls_ca: Option<Vec<u8>>,
}

impl RedisStore {
    /// The URL with any password replaced by `***`, for log lines and messages.
    pub fn redacted(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.redacted())
            .field("key_prefix", &self.key_prefix)
            .field("stream_max_len", &self.stream_max_len)
            .field("timeout", &self.timeout)
            .field("load_timeout", &self.load_timeout)
            .field("tls_ca", &self.tls_ca.is_some())
            .finish()
    }
}

/// The URL with the password (if any) replaced by `***`, for logs and config errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// Whether `url` is a Redis URL this build can connect to (`portcullis check` runs this).
/// The message never repeats the URL, which may hold a password.
pub fn check_url(url: &str) -> Result<(), String> {
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| format!("{:?}: {}", e.kind(), e.detail().unwrap_or("invalid URL")))
}

/// A Redis client for `store` (URL, and the private CA for `rediss://`), not connected yet.
/// Also used by the API-key store, which keeps its hash in the same Redis.
pub fn client(store: &RedisStore) -> Result<redis::Client, redis::RedisError> {
    if store.url.starts_with("rediss://") {
        // The redis crate builds its rustls config from the process default provider;
        // make it ours (a no-op when one is already installed).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
    match &store.tls_ca {
        Some(pem) => redis::Client::build_with_tls(
            store.url.as_str(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        None => redis::Client::open(store.url.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print() {
        assert_eq!(
            redact_url("redis://:s3cret@redis:6379/0"),
            "redis://:***@redis:6379/0"
        );
        assert_eq!(
            redact_url("rediss://user:p@ss:w0rd@host:6380/1?x=1"),
            "rediss://user:***@host:6380/1?x=1"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact_url("redis://user@h/0"), "redis://user@h/0");
        assert!(check_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(check_url("rediss://:pw@127.0.0.1:6380/0").is_ok());
        let err = check_url("redis://:hunter2@[bad/0").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
