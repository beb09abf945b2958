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
    /// A revoke is acknowledged only once this many replicas have it (`WAIT`); 0: the
    /// master's answer is enough.
    pub min_replicas_ack: u32,
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
            .field("min_replicas_ack", &self.min_replicas_ack)
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

/// A `redis+sentinel://HOST:PORT,HOST:PORT,.../MASTER_NAME/DB` store URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// Sentinel addresses, asked in order for the current master.
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the master under.
    pub master: String,
    pub db: i64,
}

/// Why a store URL is not one this build can connect to. No variant holds the URL, which
/// may carry a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisUrlError {
    #[error("no master name: write redis+sentinel://HOST:PORT,HOST:PORT/MASTER_NAME/DB")]
    NoMaster,
    #[error("the database must be a number")]
    DbNotANumber,
    #[error("passwords are not supported in a sentinel URL")]
    SentinelPassword,
    #[error("each sentinel needs HOST:PORT")]
    SentinelNoPort,
    #[error("a sentinel port is not a number")]
    SentinelPortNotANumber,
    #[error("a sentinel host is empty")]
    SentinelHostEmpty,
    /// Refused by the redis client (its kind, and its detail, which omits the URL).
    #[error("{kind:?}: {detail}")]
    Client {
        kind: redis::ErrorKind,
        detail: String,
    },
}

/// `Some` for a `redis+sentinel://` URL: parsed, or why it does not parse.
pub fn sentinel_url(url: &str) -> Option<Result<SentinelUrl, RedisUrlError>> {
    let rest = url.strip_prefix("redis+sentinel://")?;
    Some((|| {
        let mut parts = rest.splitn(3, '/');
        let hosts = parts.next().unwrap_or_default();
        let master = parts
            .next()
            .filter(|m| !m.is_empty())
            .ok_or(RedisUrlError::NoMaster)?;
        let db = match parts.next() {
            None | Some("") => 0,
            Some(d) => d.parse().map_err(|_| RedisUrlError::DbNotANumber)?,
        };
        if hosts.contains('@') {
            return Err(RedisUrlError::SentinelPassword);
        }
        let sentinels = hosts
            .split(',')
            .map(|h| {
                let (host, port) = h.rsplit_once(':').ok_or(RedisUrlError::SentinelNoPort)?;
                let port = port
                    .parse()
                    .map_err(|_| RedisUrlError::SentinelPortNotANumber)?;
                if host.is_empty() {
                    return Err(RedisUrlError::SentinelHostEmpty);
                }
                Ok((host.to_string(), port))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SentinelUrl {
            sentinels,
            master: master.to_string(),
            db,
        })
    })())
}

/// Whether `url` is a Redis URL this build can connect to (`portcullis check` runs this).
/// The message never repeats the URL, which may hold a password.
pub fn check_url(url: &str) -> Result<(), RedisUrlError> {
    if let Some(parsed) = sentinel_url(url) {
        return parsed.map(drop);
    }
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| RedisUrlError::Client {
            kind: e.kind(),
            detail: e.detail().unwrap_or("invalid URL").to_owned(),
        })
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
        let err = check_url("redis://:hunter2@[bad/0")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
