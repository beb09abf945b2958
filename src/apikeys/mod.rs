//! API keys for trusted apps: the key format, the digest-keyed map the request path reads,
//! and the operations behind the admin API (create, revoke, list). Persistence is in
//! [`store`].
//!
//! # Why SHA-256 and not a password hash
//!
//! A key is 256 bits from the OS CSPRNG ([`generate`]), not something a person chose, so
//! the digest cannot be reversed by guessing: there is no dictionary to try, and 2^256
//! candidates are out of reach however fast the hash is. A slow hash (argon2, bcrypt)
//! protects *low*-entropy secrets; here it would only cost every request milliseconds of
//! CPU and make the request path a denial-of-service lever, while adding no security.
//! What a stolen store file gives away is the same as for a salted slow hash: nothing usable.
//!
//! # Why a wrong key tells nothing by timing
//!
//! The presented key is hashed first, and the map is probed with that digest. Whatever the
//! probe's timing reveals (the bucket, a matching digest prefix) is about the SHA-256 of the
//! attacker's own guess, which says nothing about any stored key's bytes: learning that a
//! stored digest starts like the digest of a guess does not help find its preimage. The
//! format check before it (prefix, length, alphabet) only depends on public rules.
//!
//! # Request path cost
//!
//! One SHA-256 of 47 bytes and one `HashMap` probe on an `ArcSwap` snapshot: no lock, no
//! contention with admin writes (a write builds a new map and swaps it in, so a revoke is
//! in force for the very next request).

pub mod store;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use sha2::{Digest as _, Sha256};

use crate::config::{ApiKeyStore, Secret};
pub use store::StoreError;
use store::{Store, StoredKey};

/// What every key starts with, so a leaked key is recognisable (secret scanners, logs).
pub const PREFIX: &str = "pck_";
/// Random bytes in a key (256 bits).
pub const SECRET_BYTES: usize = 32;
/// Length of a key: the prefix and 43 base64url characters (no padding).
pub const KEY_LEN: usize = PREFIX.len() + 43;
/// Longest app id, in bytes.
pub const MAX_APP_LEN: usize = 128;

/// SHA-256 of the whole key text (prefix included).
pub type Digest = [u8; 32];

/// Why an app key was not accepted. Each variant is one metrics label; the client sees 401
/// and a generic text for all but `Missing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("no API key")]
    Missing,
    #[error("API key is not in the gateway's format, or sent more than once")]
    Malformed,
    #[error("API key is unknown or revoked")]
    Unknown,
}

impl ApiKeyError {
    /// Short stable name, used as the metrics label and in logs.
    pub fn reason(self) -> &'static str {
        match self {
            ApiKeyError::Missing => "api_key_missing",
            ApiKeyError::Malformed => "api_key_malformed",
            ApiKeyError::Unknown => "api_key_unknown",
        }
    }

    /// What the client is told: a wrong and a revoked key read the same.
    pub fn description(self) -> &'static str {
        match self {
            ApiKeyError::Missing => "API key required",
            ApiKeyError::Malformed | ApiKeyError::Unknown => "API key is invalid",
        }
    }
}

/// What the gateway knows about a key; never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    /// Random, short, hex: names the key in the admin API.
    pub id: String,
    /// The app id the upstream receives in the client header.
    pub app: String,
    /// Unix seconds.
    pub created: u64,
}

/// One accepted key in the request-path map.
#[derive(Debug)]
struct Entry {
    info: KeyInfo,
    /// `info.app`, ready to insert.
    app: HeaderValue,
}

/// A key just created: the only time its text exists outside the client that asked.
#[derive(Debug)]
pub struct NewKey {
    pub info: KeyInfo,
    pub key: Secret,
}

/// A fresh key: `pck_` and 256 bits from the OS CSPRNG, base64url.
pub fn generate() -> String {
    let mut b = [0u8; SECRET_BYTES];
    rand::fill(&mut b);
    let mut key = String::with_capacity(KEY_LEN);
    key.push_str(PREFIX);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(b, &mut key);
    key
}

/// Is `text` shaped like a key this gateway issues (prefix, length, base64url alphabet)?
pub fn well_formed(text: &[u8]) -> bool {
    text.len() == KEY_LEN
        && text.starts_with(PREFIX.as_bytes())
        && text[PREFIX.len()..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

pub fn digest(key: &[u8]) -> Digest {
    Sha256::digest(key).into()
}

/// Check an app id given to `create`: 1 to 128 visible ASCII characters (it becomes a
/// header value for the upstream and a label in logs).
pub fn check_app(app: &str) -> Result<HeaderValue, AppIdError> {
    if app.is_empty() || app.len() > MAX_APP_LEN {
        return Err(AppIdError::Length);
    }
    if !app.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AppIdError::Characters);
    }
    HeaderValue::from_str(app).map_err(|_| AppIdError::NotAHeaderValue)
}

/// Why an app id is refused (`POST /apikeys` answers 400 with this text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppIdError {
    #[error("app must be 1 to {MAX_APP_LEN} characters")]
    Length,
    #[error("app must be visible ASCII characters without spaces")]
    Characters,
    #[error("app is not a valid header value")]
    NotAHeaderValue,
}

/// Random key id: 64 bits, hex.
fn new_id() -> String {
    let b: [u8; 8] = rand::random();
    crate::hex::encode(&b)
}

type Map = HashMap<Digest, Arc<Entry>>;

/// The API keys in force and their store. Outlives a config reload, like the revocations.
pub struct ApiKeys {
    map: ArcSwap<Map>,
    store: Store,
    /// One change at a time: read-modify-write of the whole set, persisted before the swap.
    writes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("keys", &self.map.load().len())
            .finish_non_exhaustive()
    }
}

impl ApiKeys {
    /// Keys kept in memory only.
    pub fn in_memory() -> Self {
        ApiKeys::with(Store::Memory, Vec::new())
    }

    /// Open the configured store and load every key. A file that cannot be read or parsed
    /// is an error naming it (the gateway does not start with keys it cannot see). In
    /// cluster mode an unreachable Redis is not: the set starts empty (every key refused)
    /// and [`ApiKeys::spawn_sync`] loads it once Redis answers.
    pub async fn open(kind: &ApiKeyStore) -> anyhow::Result<Self> {
        let (store, keys) = Store::open(kind).await?;
        let me = ApiKeys::with(store, keys);
        tracing::info!(keys = me.map.load().len(), store = %me.store, "API keys loaded");
        Ok(me)
    }

    fn with(store: Store, keys: Vec<StoredKey>) -> Self {
        ApiKeys {
            map: ArcSwap::from_pointee(build_map(keys)),
            store,
            writes: tokio::sync::Mutex::new(()),
        }
    }

    /// The app id of the key in `headers[name]`. Rejects: no header (`Missing`), more than
    /// one copy or not a key this gateway could have issued (`Malformed`), a key not in the
    /// set, i.e. wrong or revoked (`Unknown`).
    pub fn check(
        &self,
        headers: &HeaderMap,
        name: &HeaderName,
    ) -> Result<HeaderValue, ApiKeyError> {
        let mut all = headers.get_all(name).iter();
        let presented = match (all.next(), all.next()) {
            (None, _) => return Err(ApiKeyError::Missing),
            (Some(_), Some(_)) => return Err(ApiKeyError::Malformed),
            (Some(v), None) => v.as_bytes(),
        };
        if !well_formed(presented) {
            return Err(ApiKeyError::Malformed);
        }
        match self.map.load().get(&digest(presented)) {
            Some(e) => Ok(e.app.clone()),
            None => Err(ApiKeyError::Unknown),
        }
    }

    /// Every key, oldest first (no secret, no digest).
    pub fn list(&self) -> Vec<KeyInfo> {
        let mut out: Vec<KeyInfo> = self.map.load().values().map(|e| e.info.clone()).collect();
        out.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        out
    }

    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Create a key for `app` (checked with [`check_app`] by the caller). Stored first, then
    /// in force here, then returned.
    pub async fn create(&self, app: &str, now: u64) -> Result<NewKey, StoreError> {
        let _one = self.writes.lock().await;
        let current = self.map.load_full();
        let key = generate();
        let mut id = new_id();
        while current.values().any(|e| e.info.id == id) {
            id = new_id();
        }
        let stored = StoredKey {
            id,
            app: app.to_owned(),
            sha256: digest(key.as_bytes()),
            created: now,
        };
        let mut next: Vec<StoredKey> = current.iter().map(|(d, e)| stored_of(d, e)).collect();
        next.push(stored.clone());
        self.store.insert(&next, &stored).await?;
        self.map.store(Arc::new(build_map(next)));
        Ok(NewKey {
            info: KeyInfo {
                id: stored.id,
                app: stored.app,
                created: stored.created,
            },
            key: Secret(key),
        })
    }

    /// Revoke the key `id`: removed from the store, then from the map, so the next request
    /// carrying it is refused. `Ok(None)` when there is no such key.
    pub async fn revoke(&self, id: &str) -> Result<Option<KeyInfo>, StoreError> {
        let _one = self.writes.lock().await;
        let current = self.map.load_full();
        let Some(gone) = current.values().find(|e| e.info.id == id).cloned() else {
            return Ok(None);
        };
        let next: Vec<StoredKey> = current
            .iter()
            .filter(|(_, e)| e.info.id != id)
            .map(|(d, e)| stored_of(d, e))
            .collect();
        self.store.remove(&next, id).await?;
        self.map.store(Arc::new(build_map(next)));
        Ok(Some(gone.info.clone()))
    }

    /// Cluster mode: re-read the shared set every [`store::POLL_INTERVAL`] so keys created
    /// or revoked through another instance apply here too, until `stop` completes. A no-op
    /// task for the file and memory stores.
    pub fn spawn_sync(
        self: Arc<Self>,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if !self.store.is_shared() {
                return;
            }
            let poll = async {
                let mut tick = tokio::time::interval(store::POLL_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    self.refresh().await;
                }
            };
            tokio::select! {
                _ = poll => {}
                _ = stop => {}
            }
        })
    }

    /// Replace the map with the shared set (held against local writes, so a key created
    /// here a moment ago is never swapped out by an older read).
    async fn refresh(&self) {
        let _one = self.writes.lock().await;
        match self.store.read_shared().await {
            Ok(keys) => {
                let changed = {
                    let current = self.map.load();
                    keys.len() != current.len()
                        || keys.iter().any(|k| {
                            current
                                .get(&k.sha256)
                                .is_none_or(|e| e.info.id != k.id || e.info.app != k.app)
                        })
                };
                if changed {
                    tracing::info!(keys = keys.len(), "API keys changed in Redis; applied");
                    self.map.store(Arc::new(build_map(keys)));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read API keys from Redis; keeping the last set")
            }
        }
    }
}

fn stored_of(digest: &Digest, e: &Entry) -> StoredKey {
    StoredKey {
        id: e.info.id.clone(),
        app: e.info.app.clone(),
        sha256: *digest,
        created: e.info.created,
    }
}

/// The request-path map; a stored app id that is not a valid header value (edited by hand)
/// is skipped with a warning rather than injected.
fn build_map(keys: Vec<StoredKey>) -> Map {
    let mut map = HashMap::with_capacity(keys.len());
    for k in keys {
        let Ok(app) = check_app(&k.app) else {
            tracing::warn!(id = %k.id, "API key skipped: its app id is not a valid header value");
            continue;
        };
        map.insert(
            k.sha256,
            Arc::new(Entry {
                info: KeyInfo {
                    id: k.id,
                    app: k.app,
                    created: k.created,
                },
                app,
            }),
        );
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        for k in [&a, &b] {
            assert_eq!(k.len(), KEY_LEN, "{k}");
            assert!(k.starts_with("pck_"), "{k}");
            assert!(well_formed(k.as_bytes()), "{k}");
        }
        assert!(!well_formed(b"pck_short"));
        assert!(!well_formed(a.replacen("pck_", "pcx_", 1).as_bytes()));
        let mut bad = a.clone().into_bytes();
        bad[10] = b'+';
        assert!(!well_formed(&bad));
    }

    #[test]
    fn app_ids_must_be_header_safe() {
        assert!(check_app("mobile-ios").is_ok());
        assert!(check_app("").is_err());
        assert!(check_app("has space").is_err());
        assert!(check_app("new\nline").is_err());
        assert!(check_app("é").is_err());
        assert!(check_app(&"a".repeat(MAX_APP_LEN + 1)).is_err());
    }

    #[tokio::test]
    async fn create_check_revoke() {
        let keys = ApiKeys::in_memory();
        let name = HeaderName::from_static("x-api-key");
        let new = keys.create("mobile-ios", 1_700_000_000).await.unwrap();
        let k = new.key.0.as_str();
        assert_eq!(
            keys.check(&headers(&[("x-api-key", k)]), &name).unwrap(),
            "mobile-ios"
        );
        assert_eq!(
            keys.check(&HeaderMap::new(), &name),
            Err(ApiKeyError::Missing)
        );
        assert_eq!(
            keys.check(&headers(&[("x-api-key", k), ("x-api-key", k)]), &name),
            Err(ApiKeyError::Malformed)
        );
        assert_eq!(
            keys.check(&headers(&[("x-api-key", &generate())]), &name),
            Err(ApiKeyError::Unknown)
        );
        assert_eq!(keys.list(), vec![new.info.clone()]);
        assert_eq!(keys.revoke("nope").await.unwrap(), None);
        assert_eq!(keys.revoke(&new.info.id).await.unwrap(), Some(new.info));
        assert_eq!(
            keys.check(&headers(&[("x-api-key", k)]), &name),
            Err(ApiKeyError::Unknown)
        );
        assert!(keys.is_empty());
    }

    #[test]
    fn debug_never_shows_a_key() {
        let new = NewKey {
            info: KeyInfo {
                id: "0011".into(),
                app: "a".into(),
                created: 1,
            },
            key: Secret(generate()),
        };
        let text = format!("{new:?}");
        assert!(!text.contains("pck_"), "{text}");
    }
}
