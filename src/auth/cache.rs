//! The verified-token cache: remembers verified tokens until they expire, so a repeat
//! request skips the verification work. That work is public-key arithmetic for RS*, PS*, ES*
//! and EdDSA (30-350 us) and decryption for JWE, but even for HMAC it is base64, an HMAC and
//! two JSON parses (about 7 us) against one SHA-256 of the token and a map lookup on a hit
//! (`cargo bench --bench token_check`): clients send the same token for its whole lifetime,
//! so every algorithm goes through here.
//!
//! Only tokens that passed every check are inserted, so forged tokens never take space; the
//! cache is bounded by entry count (quick_cache evicts cold entries first). A hit still has
//! its `exp` checked here and its revocation status checked by the pipeline, exactly like a
//! freshly verified token. Keys are SHA-256 of the whole token: a token differing in any
//! byte is a different entry.
//!
//! When a published key set (`[jwt.jwks]`) changes, [`TokenCache::clear`] forgets every
//! entry, so a token verified with a key the issuer has since retired stops passing. A
//! verification racing with the change is dropped too: [`TokenCache::insert`] takes the
//! generation read before verifying and keeps nothing verified under an older one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};

use super::jws::Verified;
use super::AuthError;

/// Default number of cached tokens (about 0.5 KiB each).
pub const DEFAULT_CACHE_ENTRIES: usize = 65_536;

pub struct TokenCache {
    entries: Cache<[u8; 32], Arc<Verified>>,
    /// Bumped by every [`TokenCache::clear`].
    generation: AtomicU64,
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
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            entries: Cache::new(capacity.max(1)),
            generation: AtomicU64::new(0),
        }
    }

    pub fn key(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// A cached verification of `token`, if any and not expired at `now` (with the leeway of
    /// the issuer that vouched for it).
    pub fn get(&self, key: &[u8; 32], now: u64) -> Option<Result<Arc<Verified>, AuthError>> {
        let v = self.entries.get(key)?;
        if let Some(exp) = v.exp {
            if now >= exp.saturating_add(v.leeway) {
                self.entries.remove(key);
                return Some(Err(AuthError::Expired));
            }
        }
        Some(Ok(v))
    }

    /// The generation to pass to [`TokenCache::insert`]; read it before verifying.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Remember a verification made with the keys in force at `generation`. If the cache
    /// was cleared since (the keys changed), the entry is dropped again: either the clear
    /// came after the insert and removed it, or the check below sees the new generation.
    pub fn insert(&self, key: [u8; 32], v: Arc<Verified>, generation: u64) {
        self.entries.insert(key, v);
        if self.generation.load(Ordering::SeqCst) != generation {
            self.entries.remove(&key);
        }
    }

    /// Forget every entry (the key set changed).
    pub fn clear(&self) {
        // Bump first: an insert that misses this bump happened before it, so before the
        // clear below, which removes it.
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
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

    fn verified(exp: u64, leeway: u64) -> Arc<Verified> {
        Arc::new(Verified {
            user: HeaderValue::from_static("alice"),
            extra: Default::default(),
            token_key: [0; 16],
            has_jti: false,
            sub_key: None,
            sub: Some("alice".into()),
            iat: None,
            exp: Some(exp),
            grants: None,
            jkt: None,
            issuer: 0,
            leeway,
        })
    }

    #[test]
    fn hit_until_expiry_then_expired() {
        let c = TokenCache::new(10);
        let k = TokenCache::key("a.b.c");
        c.insert(k, verified(100, 5), c.generation());
        assert!(c.get(&k, 104).unwrap().is_ok());
        assert_eq!(c.get(&k, 105).unwrap().unwrap_err(), AuthError::Expired);
        assert!(c.get(&k, 105).is_none(), "expired entry is dropped");
    }

    #[test]
    fn bounded() {
        let c = TokenCache::new(100);
        for i in 0..10_000 {
            c.insert(
                TokenCache::key(&format!("t{i}")),
                verified(u64::MAX, 0),
                c.generation(),
            );
        }
        assert!(c.len() <= 100, "{}", c.len());
    }

    #[test]
    fn clear_forgets_entries_and_stale_inserts() {
        let c = TokenCache::new(10);
        let k = TokenCache::key("a.b.c");
        c.insert(k, verified(u64::MAX, 0), c.generation());
        let before = c.generation();
        c.clear();
        assert!(c.get(&k, 0).is_none(), "cleared");
        // Verified before the clear, inserted after it: not kept.
        c.insert(k, verified(u64::MAX, 0), before);
        assert!(
            c.get(&k, 0).is_none(),
            "a verification from the old key set"
        );
        c.insert(k, verified(u64::MAX, 0), c.generation());
        assert!(c.get(&k, 0).is_some());
    }
}
