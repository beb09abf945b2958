//! The verified-token cache: remembers tokens whose verification is expensive (RS*, PS*,
//! ES*, EdDSA, JWE) until they expire, so a repeat request skips the public-key work.
//!
//! Only tokens that passed every check are inserted, so forged tokens never take space; the
//! cache is bounded by entry count (quick_cache evicts cold entries first). A hit still has
//! its `exp` checked here and its revocation status checked by the pipeline, exactly like a
//! freshly verified token. Keys are SHA-256 of the whole token: a token differing in any
//! byte is a different entry.

use std::sync::Arc;

use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};

use super::jws::Verified;
use super::AuthError;

/// Default number of cached tokens (about 0.5 KiB each).
pub const DEFAULT_CACHE_ENTRIES: usize = 65_536;

pub struct TokenCache {
    entries: Cache<[u8; 32], Arc<Verified>>,
    leeway: u64,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("len", &self.entries.len())
            .field("capacity", &self.entries.capacity())
            .finish()
    }
}

impl TokenCache {
    pub fn new(capacity: usize, leeway: u64) -> Self {
        TokenCache {
            entries: Cache::new(capacity.max(1)),
            leeway,
        }
    }

    pub fn key(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// A cached verification of `token`, if any and not expired at `now`.
    pub fn get(&self, key: &[u8; 32], now: u64) -> Option<Result<Arc<Verified>, AuthError>> {
        let v = self.entries.get(key)?;
        if let Some(exp) = v.exp {
            if now >= exp.saturating_add(self.leeway) {
                self.entries.remove(key);
                return Some(Err(AuthError::Expired));
            }
        }
        Some(Ok(v))
    }

    pub fn insert(&self, key: [u8; 32], v: Arc<Verified>) {
        self.entries.insert(key, v);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn verified(exp: u64) -> Arc<Verified> {
        Arc::new(Verified {
            user: HeaderValue::from_static("alice"),
            extra: Default::default(),
            token_key: [0; 16],
            has_jti: false,
            sub_key: None,
            sub: Some("alice".into()),
            iat: None,
            exp: Some(exp),
            cacheable: true,
        })
    }

    #[test]
    fn hit_until_expiry_then_expired() {
        let c = TokenCache::new(10, 5);
        let k = TokenCache::key("a.b.c");
        c.insert(k, verified(100));
        assert!(c.get(&k, 104).unwrap().is_ok());
        assert_eq!(c.get(&k, 105).unwrap().unwrap_err(), AuthError::Expired);
        assert!(c.get(&k, 105).is_none(), "expired entry is dropped");
    }

    #[test]
    fn bounded() {
        let c = TokenCache::new(100, 0);
        for i in 0..10_000 {
            c.insert(TokenCache::key(&format!("t{i}")), verified(u64::MAX));
        }
        assert!(c.len() <= 100, "{}", c.len());
    }
}
