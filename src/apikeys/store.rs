//! Where API keys are kept: in memory, in a JSON file rewritten atomically on each change,
//! or (cluster mode) in a Redis hash every instance reads.
//!
//! The file (`{"version": 1, "keys": [{"id", "app", "sha256", "created"}]}`) holds digests
//! only, never a key. It is small (one line per app), so each change rewrites it whole:
//! write a temporary file beside it (mode 0600), fsync, rename over the old one, fsync the
//! folder; a crash leaves either the old file or the new one, never a mix.
//!
//! In Redis the hash `{key_prefix}:apikeys` maps a key id to the same JSON object. An admin
//! change writes the hash, then applies here; other instances see it on their next poll
//! (every [`POLL_INTERVAL`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use super::Digest;
use crate::config::{ApiKeyStore, RedisStore};

/// Cluster mode: how often each instance re-reads the shared set. A key revoked through
/// one instance is refused there at once, and by the others within this.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Version written in the file; another version is refused at start-up.
const FILE_VERSION: u32 = 1;

/// Why a change could not be stored (the admin API answers 503 and changes nothing).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The cause is in the message, not chained (see `durable::DurableError`).
    #[error("cannot write the API-key file {}: {cause}", path.display())]
    File {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("Redis did not store the change: {0}")]
    Redis(String),
}

/// Why the API-key file cannot be read at start-up; each names the file.
/// Causes are named in the message, not chained as `source()`: a chain printer (`{:#}`, as
/// `main` prints a start-up error) would print them twice.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read the API-key store {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "the API-key store {} is not valid ({error}); restore it from a backup or move it away \
         (every key in it is then lost)",
        path.display()
    )]
    Invalid {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error(
        "the API-key store {} has version {version}; this gateway reads version {FILE_VERSION}",
        path.display()
    )]
    Version { path: PathBuf, version: u32 },
    #[error("the API-key store {} lists key `{id}` twice", path.display())]
    Duplicate { path: PathBuf, id: String },
}

/// One key as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredKey {
    pub id: String,
    pub app: String,
    #[serde(with = "hex_digest")]
    pub sha256: Digest,
    pub created: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    version: u32,
    keys: Vec<StoredKey>,
}

pub(super) enum Store {
    Memory,
    /// The key file, and the open `<file>.lock` whose exclusive flock keeps a second
    /// gateway off it (the key file itself is replaced by rename on every change, so the
    /// lock lives on a sibling that never moves).
    File(
        PathBuf,
        // INVARIANT: never read; held open for its flock, released when the store drops.
        #[allow(dead_code)] std::sync::Arc<std::fs::File>,
    ),
    Redis {
        conn: ConnectionManager,
        hash: String,
        timeout: Duration,
        redacted_url: String,
    },
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Memory => f.write_str("memory"),
            Store::File(p, _) => write!(f, "{}", p.display()),
            Store::Redis {
                hash, redacted_url, ..
            } => write!(f, "{redacted_url} hash {hash}"),
        }
    }
}

impl Store {
    /// Open the store and read every key in it.
    pub(super) async fn open(kind: &ApiKeyStore) -> anyhow::Result<(Store, Vec<StoredKey>)> {
        match kind {
            ApiKeyStore::Memory => Ok((Store::Memory, Vec::new())),
            ApiKeyStore::File(path) => {
                let owned = path.clone();
                let (lock, keys) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                    let lock = lock_file(&owned).map_err(anyhow::Error::msg)?;
                    Ok((lock, load_file(&owned)?))
                })
                .await??;
                Ok((Store::File(path.clone(), std::sync::Arc::new(lock)), keys))
            }
            ApiKeyStore::Redis(r) => {
                let store = redis_store(r)?;
                let keys = match tokio::time::timeout(r.load_timeout, store.read_shared()).await {
                    Ok(Ok(keys)) => keys,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot load API keys from Redis; every key is refused until they load");
                        Vec::new()
                    }
                    Err(_) => {
                        tracing::warn!(load_timeout = ?r.load_timeout, "Redis did not answer in time; every API key is refused until they load");
                        Vec::new()
                    }
                };
                Ok((store, keys))
            }
        }
    }

    /// Shared with other instances (so worth polling)?
    pub(super) fn is_shared(&self) -> bool {
        matches!(self, Store::Redis { .. })
    }

    /// Store `added`; `all` is the whole set after the change (what a file is rewritten to).
    pub(super) async fn insert(
        &self,
        all: &[StoredKey],
        added: &StoredKey,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory => Ok(()),
            Store::File(path, _) => save_file_async(path, all).await,
            Store::Redis {
                conn,
                hash,
                timeout,
                ..
            } => {
                let json =
                    serde_json::to_string(added).map_err(|e| StoreError::Redis(e.to_string()))?;
                let mut c = conn.clone();
                let mut cmd = redis::cmd("HSET");
                cmd.arg(hash).arg(&added.id).arg(json);
                run(*timeout, cmd.query_async::<i64>(&mut c))
                    .await
                    .map(|_| ())
            }
        }
    }

    /// Remove the key `id`; `all` is the whole set after the change.
    pub(super) async fn remove(&self, all: &[StoredKey], id: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory => Ok(()),
            Store::File(path, _) => save_file_async(path, all).await,
            Store::Redis {
                conn,
                hash,
                timeout,
                ..
            } => {
                let mut c = conn.clone();
                let mut cmd = redis::cmd("HDEL");
                cmd.arg(hash).arg(id);
                run(*timeout, cmd.query_async::<i64>(&mut c))
                    .await
                    .map(|_| ())
            }
        }
    }

    /// Cluster mode: the whole shared set (empty for the other stores, never called there).
    /// An entry that does not parse is skipped with a warning.
    pub(super) async fn read_shared(&self) -> Result<Vec<StoredKey>, StoreError> {
        let Store::Redis {
            conn,
            hash,
            timeout,
            ..
        } = self
        else {
            return Ok(Vec::new());
        };
        let mut c = conn.clone();
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(hash);
        let fields = run(*timeout, cmd.query_async::<Vec<(String, Vec<u8>)>>(&mut c)).await?;
        let mut keys = Vec::with_capacity(fields.len());
        for (id, value) in fields {
            match serde_json::from_slice::<StoredKey>(&value) {
                Ok(k) if k.id == id => keys.push(k),
                _ => {
                    tracing::warn!(%id, %hash, "skipping an API-key entry the gateway did not write")
                }
            }
        }
        Ok(keys)
    }
}

async fn run<T>(
    timeout: Duration,
    cmd: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, cmd).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(StoreError::Redis(e.to_string())),
        Err(_) => Err(StoreError::Redis(format!("no answer within {timeout:?}"))),
    }
}

fn redis_store(r: &RedisStore) -> anyhow::Result<Store> {
    let client = crate::revocation::redis::client(r)
        .map_err(|e| anyhow::anyhow!("revocation.store `{}`: {e}", r.redacted()))?;
    let conn = client
        .get_connection_manager_lazy(
            redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(r.timeout))
                .set_response_timeout(Some(r.timeout))
                .set_number_of_retries(2),
        )
        .map_err(|e| anyhow::anyhow!("revocation.store `{}`: {e}", r.redacted()))?;
    Ok(Store::Redis {
        conn,
        hash: format!("{}:apikeys", r.key_prefix),
        timeout: r.timeout,
        redacted_url: r.redacted(),
    })
}

/// Read the key file; a missing file is an empty set. Anything else that goes wrong is an
/// error naming the file.
pub fn load_file(path: &Path) -> Result<Vec<StoredKey>, KeyFileError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(KeyFileError::Read {
                path: path.to_path_buf(),
                error,
            })
        }
    };
    let file: FileFormat =
        serde_json::from_slice(&bytes).map_err(|error| KeyFileError::Invalid {
            path: path.to_path_buf(),
            error,
        })?;
    if file.version != FILE_VERSION {
        return Err(KeyFileError::Version {
            path: path.to_path_buf(),
            version: file.version,
        });
    }
    let mut ids = std::collections::HashSet::new();
    let mut digests = std::collections::HashSet::new();
    for k in &file.keys {
        if !ids.insert(k.id.as_str()) || !digests.insert(k.sha256) {
            return Err(KeyFileError::Duplicate {
                path: path.to_path_buf(),
                id: k.id.clone(),
            });
        }
    }
    Ok(file.keys)
}

async fn save_file_async(path: &Path, keys: &[StoredKey]) -> Result<(), StoreError> {
    let (p, k) = (path.to_path_buf(), keys.to_vec());
    let result = tokio::task::spawn_blocking(move || save_file(&p, &k))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    result.map_err(|cause| StoreError::File {
        path: path.to_path_buf(),
        cause,
    })
}

/// Takes the exclusive lock on `<path>.lock` (created beside the key file) for as long as
/// the returned file stays open: a second process is refused, naming the file and the PID.
pub fn lock_file(path: &Path) -> Result<std::fs::File, crate::durable::DurableError> {
    let lock_path = crate::durable::sibling(path, ".lock");
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(crate::durable::io_err(path, "create folder"))?;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(crate::durable::io_err(&lock_path, "open"))?;
    crate::durable::lock::lock(&file, &lock_path)?;
    Ok(file)
}

/// Replace the key file with `keys`: tmp file (0600), fsync, rename, fsync the folder.
pub fn save_file(path: &Path, keys: &[StoredKey]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut text = serde_json::to_vec_pretty(&FileFormat {
        version: FILE_VERSION,
        keys: keys.to_vec(),
    })
    .map_err(std::io::Error::other)?;
    text.push(b'\n');
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(&text)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

mod hex_digest {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::hex::encode(d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        crate::hex::decode::<32>(&text)
            .ok_or_else(|| serde::de::Error::custom("sha256 must be 64 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, app: &str) -> StoredKey {
        StoredKey {
            id: id.into(),
            app: app.into(),
            sha256: super::super::digest(super::super::generate().as_bytes()),
            created: 1_700_000_000,
        }
    }

    #[test]
    fn file_round_trip_and_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/apikeys.json");
        assert_eq!(load_file(&path).unwrap(), vec![], "missing file: no keys");
        let keys = vec![key("00aa", "mobile-ios"), key("00bb", "batch")];
        save_file(&path, &keys).unwrap();
        assert_eq!(load_file(&path).unwrap(), keys);
        save_file(&path, &keys[1..]).unwrap();
        assert_eq!(load_file(&path).unwrap(), keys[1..].to_vec());
        assert!(!dir.path().join("sub/apikeys.json.tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_corrupt_or_foreign_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("apikeys.json");
        for text in [
            "{not json".to_string(),
            r#"{"version": 2, "keys": []}"#.to_string(),
            r#"{"version": 1, "keys": [{"id": "a", "app": "x", "sha256": "zz", "created": 1}]}"#
                .to_string(),
            r#"{"version": 1, "keys": [], "extra": true}"#.to_string(),
        ] {
            std::fs::write(&path, &text).unwrap();
            let e = load_file(&path).unwrap_err().to_string();
            assert!(e.contains(&path.display().to_string()), "{text}: {e}");
        }
        let k = key("00aa", "x");
        save_file(&path, &[k.clone(), k]).unwrap();
        assert!(load_file(&path).unwrap_err().to_string().contains("twice"));
    }
}
