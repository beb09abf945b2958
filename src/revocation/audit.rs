//! The revocation audit trail: one record per revoke and un-revoke (who, from where, why,
//! what was named), kept beside the revocations and apart from the dictionary the request
//! path reads, so the hot map keeps its 16-byte keys whatever the operators write here.
//!
//! # Where the records live
//!
//! | revocation store | audit store |
//! | --- | --- |
//! | `memory` | a `Vec` in this process (lost on restart, as the revocations are) |
//! | embedded log at `PATH` | `PATH.audit`: JSON Lines, one [`AuditRecord`] a line, each append fsynced before the admin call answers |
//! | Redis (`P` = key prefix) | the list `P:audit`, one JSON record per element, `RPUSH`ed |
//!
//! The journal is a file of its own, never rewritten by the revocation log's compaction: a
//! compaction drops what has expired from the dictionary, the trail keeps the history for
//! `[revocation] audit_retention` (30 days by default). Records older than that are pruned
//! at open and then at most once an hour, by write-tmp / fsync / rename (file) or `LPOP`
//! (Redis). A torn last line (a crash mid-append) is cut off at open; a line that does not
//! parse is skipped with a warning.
//!
//! The interface is [`Audit::append`] and [`Audit::records`]; moving the file onto the
//! framed `durable/` layer changes `FileJournal` only.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use super::redis::Cluster;
use super::service::Backing;

/// Longest `reason` accepted, in bytes.
pub const MAX_REASON_BYTES: usize = 256;
/// Seconds between two retention prunes.
const PRUNE_EVERY: u64 = 3600;

/// `revoke` or `unrevoke`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Revoke,
    Unrevoke,
}

/// What was named: a `jti`, a subject, or a whole token (by its `jti`, or its digest when it
/// has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    Jti,
    Sub,
    Token,
}

/// One audit record. The field names are a public interface (`GET /audit`,
/// `GET /revocations`, `portcullis revocations list --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Unix seconds.
    pub time: u64,
    pub action: Action,
    pub kind: AuditKind,
    /// The original identifier: the `jti`, the subject, or a token's digest (hex).
    pub id: String,
    /// The revocation key (hex) the dictionary holds for `id`.
    pub key: String,
    /// The token's subject, when known (subject and whole-token revokes).
    #[serde(default)]
    pub sub: Option<String>,
    /// The admin credential's label.
    pub actor: String,
    /// The client IP the admin call came from.
    pub ip: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// Until when the revocation is in force (unix seconds); none for an un-revoke.
    #[serde(default)]
    pub exp: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The cause is in the message, not chained (see `durable::DurableError`).
    #[error("audit journal `{}`: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("audit list in Redis: {0}")]
    Redis(String),
}

/// The audit trail of one gateway (shared by every admin call).
pub struct Audit {
    store: Store,
    retention: u64,
    /// Unix seconds of the last prune.
    pruned: AtomicU64,
}

enum Store {
    Memory(Mutex<Vec<AuditRecord>>),
    File(Mutex<FileJournal>),
    Redis {
        conn: ConnectionManager,
        key: String,
        timeout: Duration,
    },
}

struct FileJournal {
    path: PathBuf,
    file: File,
}

/// The journal's path for a revocation log at `log`.
pub fn journal_path(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".audit");
    PathBuf::from(p)
}

impl Audit {
    /// An audit trail kept in memory only.
    pub fn in_memory(retention: Duration) -> Self {
        Audit {
            store: Store::Memory(Mutex::new(Vec::new())),
            retention: retention.as_secs(),
            pruned: AtomicU64::new(0),
        }
    }

    /// Open the trail that sits beside `backing` (blocking: call at start-up).
    pub fn open(backing: Backing<'_>, retention: Duration, now: u64) -> Result<Self, AuditError> {
        let store = match backing {
            Backing::Memory => return Ok(Self::in_memory(retention)),
            Backing::Log(log) => Store::File(Mutex::new(FileJournal::open(&journal_path(log))?)),
            Backing::Redis(cluster) => redis_store(cluster),
        };
        let audit = Audit {
            store,
            retention: retention.as_secs(),
            pruned: AtomicU64::new(0),
        };
        if let Store::File(j) = &audit.store {
            let mut j = lock(j);
            j.prune(now.saturating_sub(audit.retention))?;
            audit.pruned.store(now, Ordering::Relaxed);
        }
        Ok(audit)
    }

    /// Make `record` durable (fsynced, or stored by Redis) before returning.
    pub async fn append(self: &Arc<Self>, record: AuditRecord) -> Result<(), AuditError> {
        let now = record.time;
        let prune = now.saturating_sub(self.pruned.load(Ordering::Relaxed)) >= PRUNE_EVERY;
        if prune {
            self.pruned.store(now, Ordering::Relaxed);
        }
        let cutoff = now.saturating_sub(self.retention);
        match &self.store {
            Store::Memory(v) => {
                let mut v = lock(v);
                v.push(record);
                if prune {
                    v.retain(|r| r.time >= cutoff);
                }
                Ok(())
            }
            Store::File(_) => {
                let me = self.clone();
                tokio::task::spawn_blocking(move || {
                    let Store::File(j) = &me.store else {
                        return Ok(());
                    };
                    let mut j = lock(j);
                    j.append(&record)?;
                    if prune {
                        j.prune(cutoff)?;
                    }
                    Ok(())
                })
                .await
                .map_err(|e| AuditError::Redis(format!("audit append task failed: {e}")))?
            }
            Store::Redis { conn, key, timeout } => {
                let line =
                    serde_json::to_string(&record).map_err(|e| AuditError::Redis(e.to_string()))?;
                let mut c = conn.clone();
                let fut = async {
                    redis::cmd("RPUSH")
                        .arg(key)
                        .arg(line)
                        .query_async::<i64>(&mut c)
                        .await?;
                    if prune {
                        prune_redis(&mut c, key, cutoff).await?;
                    }
                    Ok::<_, redis::RedisError>(())
                };
                tokio::time::timeout(*timeout, fut)
                    .await
                    .map_err(|_| AuditError::Redis("Redis did not answer in time".into()))?
                    .map_err(|e| AuditError::Redis(e.to_string()))
            }
        }
    }

    /// Every record kept, in time (append) order.
    pub async fn records(self: &Arc<Self>) -> Result<Vec<AuditRecord>, AuditError> {
        match &self.store {
            Store::Memory(v) => Ok(lock(v).clone()),
            Store::File(_) => {
                let me = self.clone();
                tokio::task::spawn_blocking(move || match &me.store {
                    Store::File(j) => lock(j).read_all(),
                    Store::Memory(_) | Store::Redis { .. } => Ok(Vec::new()),
                })
                .await
                .map_err(|e| AuditError::Redis(format!("audit read task failed: {e}")))?
            }
            Store::Redis { conn, key, timeout } => {
                let mut c = conn.clone();
                let lines = tokio::time::timeout(
                    *timeout,
                    redis::cmd("LRANGE")
                        .arg(key)
                        .arg(0)
                        .arg(-1)
                        .query_async::<Vec<String>>(&mut c),
                )
                .await
                .map_err(|_| AuditError::Redis("Redis did not answer in time".into()))?
                .map_err(|e| AuditError::Redis(e.to_string()))?;
                Ok(parse_lines(lines.iter().map(String::as_str)))
            }
        }
    }
}

fn redis_store(cluster: &Arc<Cluster>) -> Store {
    let (conn, prefix, timeout) = cluster.session_link();
    Store::Redis {
        conn,
        key: format!("{prefix}audit"),
        timeout,
    }
}

/// Drop records older than `cutoff` from the head of the list (records are pushed in time
/// order, so the old ones are at the head).
async fn prune_redis(
    c: &mut ConnectionManager,
    key: &str,
    cutoff: u64,
) -> Result<(), redis::RedisError> {
    loop {
        let head: Option<String> = redis::cmd("LINDEX").arg(key).arg(0).query_async(c).await?;
        let old = head
            .and_then(|h| serde_json::from_str::<AuditRecord>(&h).ok())
            .is_some_and(|r| r.time < cutoff);
        if !old {
            return Ok(());
        }
        redis::cmd("LPOP").arg(key).query_async::<()>(c).await?;
    }
}

/// A poisoned lock only means another admin call panicked mid-append; the data behind it
/// is a file handle or a list that stays usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn parse_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(r) => out.push(r),
            Err(e) => tracing::warn!(error = %e, "skipping an audit record that does not parse"),
        }
    }
    out
}

impl FileJournal {
    /// Open (or create) the journal and cut a torn last line off.
    fn open(path: &Path) -> Result<Self, AuditError> {
        let io = |cause| AuditError::Io {
            path: path.to_path_buf(),
            cause,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        if bytes.last().is_some_and(|b| *b != b'\n') {
            let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            tracing::warn!(path = %path.display(), dropped = bytes.len() - keep, "audit journal: cutting off a torn last record");
            file.set_len(keep as u64).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        Ok(FileJournal {
            path: path.to_path_buf(),
            file,
        })
    }

    fn io(&self, cause: std::io::Error) -> AuditError {
        AuditError::Io {
            path: self.path.clone(),
            cause,
        }
    }

    fn append(&mut self, record: &AuditRecord) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(record).map_err(|e| self.io(e.into()))?;
        line.push(b'\n');
        // One write of the whole line: a crash leaves it whole or torn at the end, and a
        // torn end is cut at the next open.
        self.file.write_all(&line).map_err(|e| self.io(e))?;
        self.file.sync_data().map_err(|e| self.io(e))
    }

    fn read_all(&mut self) -> Result<Vec<AuditRecord>, AuditError> {
        // Through the handle held since open, not the path: the journal stays readable if
        // its folder is renamed or removed under a running gateway. Appends still go to the
        // end (O_APPEND), whatever the read position.
        let mut text = String::new();
        self.file.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
        self.file
            .read_to_string(&mut text)
            .map_err(|e| self.io(e))?;
        Ok(parse_lines(text.lines()))
    }

    /// Rewrite the journal without the records older than `cutoff` (write-tmp, fsync,
    /// rename, fsync the folder), if there are any.
    fn prune(&mut self, cutoff: u64) -> Result<(), AuditError> {
        let all = self.read_all()?;
        if !all.iter().any(|r| r.time < cutoff) {
            return Ok(());
        }
        let tmp = {
            let mut p = self.path.as_os_str().to_owned();
            p.push(".tmp");
            PathBuf::from(p)
        };
        let mut out = Vec::new();
        for r in all.iter().filter(|r| r.time >= cutoff) {
            let mut line = serde_json::to_vec(r).map_err(|e| self.io(e.into()))?;
            line.push(b'\n');
            out.extend_from_slice(&line);
        }
        let mut f = File::create(&tmp).map_err(|e| self.io(e))?;
        f.write_all(&out).map_err(|e| self.io(e))?;
        f.sync_all().map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.file = OpenOptions::new()
            .append(true)
            .read(true)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        tracing::info!(path = %self.path.display(), dropped = all.len() - all.iter().filter(|r| r.time >= cutoff).count(), "audit journal pruned");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(time: u64, id: &str) -> AuditRecord {
        AuditRecord {
            time,
            action: Action::Revoke,
            kind: AuditKind::Jti,
            id: id.into(),
            key: "00".into(),
            sub: None,
            actor: "admin".into(),
            ip: "127.0.0.1".into(),
            reason: Some("why".into()),
            exp: Some(time + 60),
        }
    }

    #[test]
    fn a_torn_last_line_is_cut_and_earlier_records_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log.audit");
        let mut j = FileJournal::open(&path).unwrap();
        j.append(&rec(100, "a")).unwrap();
        j.append(&rec(101, "b")).unwrap();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"time\":102,\"act").unwrap();
        drop(f);
        let mut j = FileJournal::open(&path).unwrap();
        let all = j.read_all().unwrap();
        assert_eq!(all, vec![rec(100, "a"), rec(101, "b")]);
        j.append(&rec(103, "c")).unwrap();
        assert_eq!(j.read_all().unwrap().len(), 3);
    }

    #[test]
    fn prune_drops_only_records_past_retention() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log.audit");
        let mut j = FileJournal::open(&path).unwrap();
        for t in [10, 20, 30] {
            j.append(&rec(t, "x")).unwrap();
        }
        j.prune(20).unwrap();
        assert_eq!(
            j.read_all()
                .unwrap()
                .iter()
                .map(|r| r.time)
                .collect::<Vec<_>>(),
            vec![20, 30]
        );
        j.append(&rec(40, "y")).unwrap();
        assert_eq!(j.read_all().unwrap().len(), 3);
    }

    #[test]
    fn field_names_are_the_public_ones() {
        let v = serde_json::to_value(rec(5, "j")).unwrap();
        for f in [
            "time", "action", "kind", "id", "sub", "actor", "ip", "reason", "exp",
        ] {
            assert!(v.get(f).is_some(), "{f} missing from {v}");
        }
        assert_eq!(v["action"], "revoke");
        assert_eq!(v["kind"], "jti");
    }
}
