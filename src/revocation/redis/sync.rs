//! Getting an instance back in step with Redis after a (re)connect: reading the stream's
//! state, and the three ways back (catch-up, full load, re-seed then full load) described
//! in the parent module.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;

use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};

use super::wire::{bulk, items, pairs, Keys, StreamId};
use super::{Cluster, Publish};
use crate::revocation::dict::{key_from_hex, Dictionary, Entry, Key, SubjectEntry};
use crate::revocation::log::now_unix;
use crate::revocation::record::Record;

/// Keys asked for per `SCAN` and read per `MGET` in a full load.
const SCAN_BATCH: usize = 1000;
/// Records written per script call when re-seeding.
const RESEED_BATCH: usize = 500;

/// The full state read from Redis by a full load.
#[derive(Debug, Default)]
struct Snapshot {
    tokens: Vec<(Key, u64)>,
    subjects: Vec<(Key, SubjectEntry)>,
}

impl Snapshot {
    /// Adds one key and its value; false when either is not what the gateway writes.
    fn add(&mut self, keys: &Keys, name: &[u8], value: &[u8]) -> bool {
        let parse_key = |hex: &[u8]| key_from_hex(std::str::from_utf8(hex).ok()?);
        let text = std::str::from_utf8(value).ok();
        if let Some(hex) = name.strip_prefix(keys.token.as_bytes()) {
            let exp = text.and_then(|t| t.parse::<u64>().ok());
            if let (Some(key), Some(exp)) = (parse_key(hex), exp) {
                self.tokens.push((key, exp));
                return true;
            }
        } else if let Some(hex) = name.strip_prefix(keys.subject.as_bytes()) {
            let entry = text.and_then(|t| {
                let (rb, ex) = t.split_once(':')?;
                Some(SubjectEntry {
                    revoked_before: rb.parse().ok()?,
                    expires: ex.parse().ok()?,
                })
            });
            if let (Some(key), Some(entry)) = (parse_key(hex), entry) {
                self.subjects.push((key, entry));
                return true;
            }
        }
        false
    }
}

/// What `XINFO STREAM` says about the change stream.
#[derive(Debug, Default, Clone, Copy)]
struct StreamInfo {
    /// The last ID ever added (0-0 when the stream does not exist).
    last: StreamId,
    /// The largest ID removed by `XDEL` (Redis 7 and later).
    max_deleted: Option<StreamId>,
    /// The oldest entry still in the stream (none when it is empty).
    first: Option<StreamId>,
}

impl StreamInfo {
    /// May entries after `pos` be gone (so catching up from `pos` would miss them)?
    ///
    /// Trimming removes the oldest entries and, in Redis 7.0 at least, does not move
    /// `max-deleted-entry-id` (only `XDEL` does), so: if the oldest entry left is newer than
    /// `pos`, or the stream is empty although IDs past `pos` were handed out, assume a gap.
    /// This errs one way only: when the trimmed part ends exactly at `pos` it asks for a
    /// full load that catching up would have made unnecessary.
    fn trimmed_after(&self, pos: StreamId) -> bool {
        let trimmed = match self.first {
            Some(first) => first > pos,
            None => self.last > pos,
        };
        trimmed || self.max_deleted.is_some_and(|deleted| deleted > pos)
    }
}

/// How a sync got this instance back in step, for the log line.
#[derive(Debug, Default)]
pub(super) struct SyncReport {
    pub(super) mode: &'static str,
    pub(super) tokens: usize,
    pub(super) subjects: usize,
    pub(super) dropped: usize,
    pub(super) reseeded: usize,
}

impl Cluster {
    /// Get back in step with Redis after a (re)connect: catch-up, full load, or re-seed
    /// then full load (see the module documentation for when each applies).
    pub(super) async fn sync(
        &self,
        conn: &mut MultiplexedConnection,
        dict: &Dictionary,
    ) -> Result<SyncReport, RedisError> {
        let epoch = self.current_epoch(conn).await?;
        let info = self.stream_info(conn).await?;
        let known = self
            .epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let pos = *self.pos.lock().unwrap_or_else(PoisonError::into_inner);
        let loaded = self.is_loaded();
        let lost = loaded && (known.as_deref() != Some(epoch.as_str()) || info.last < pos);
        let mut report = SyncReport {
            mode: "catch-up",
            ..SyncReport::default()
        };
        if lost {
            tracing::warn!(
                url = %self.redacted_url,
                "Redis lost revocations (restarted without persistence, failed over, or flushed); writing ours back"
            );
            report.reseeded = self.reseed(conn, dict).await?;
        }
        let full = !loaded
            || lost
            || info.trimmed_after(pos)
            || self.force_full.swap(false, Ordering::Relaxed);
        if full {
            let (tokens, subjects, dropped) = self.full_load(conn, dict, info.last).await?;
            report.mode = if lost {
                "reseed + full load"
            } else {
                "full load"
            };
            (report.tokens, report.subjects, report.dropped) = (tokens, subjects, dropped);
        } else {
            (report.tokens, report.subjects) = (dict.len_tokens(), dict.len_subjects());
        }
        *self.epoch.lock().unwrap_or_else(PoisonError::into_inner) = Some(epoch);
        Ok(report)
    }

    /// The data set's epoch, creating it when this is the first instance to connect (or
    /// Redis lost it).
    async fn current_epoch(&self, conn: &mut MultiplexedConnection) -> Result<String, RedisError> {
        let fresh = format!("{:032x}", rand::random::<u128>());
        let _: Value = redis::cmd("SET")
            .arg(&self.keys.epoch)
            .arg(&fresh)
            .arg("NX")
            .query_async(conn)
            .await?;
        let epoch: Option<String> = redis::cmd("GET")
            .arg(&self.keys.epoch)
            .query_async(conn)
            .await?;
        Ok(epoch.unwrap_or(fresh))
    }

    async fn stream_info(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<StreamInfo, RedisError> {
        let reply = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&self.keys.stream)
            .query_async::<Value>(conn)
            .await;
        let reply = match reply {
            Ok(v) => v,
            // No stream yet: nothing was ever revoked (or Redis lost it).
            Err(e) if e.code() == Some("ERR") && e.to_string().contains("no such key") => {
                return Ok(StreamInfo::default())
            }
            Err(e) => return Err(e),
        };
        let mut info = StreamInfo::default();
        for (name, value) in pairs(reply) {
            match bulk(&name) {
                Some(b"last-generated-id") => {
                    info.last = bulk(&value).and_then(StreamId::parse).unwrap_or_default()
                }
                Some(b"max-deleted-entry-id") => {
                    info.max_deleted = bulk(&value).and_then(StreamId::parse)
                }
                Some(b"first-entry") => {
                    info.first = items(value)
                        .into_iter()
                        .next()
                        .and_then(|id| bulk(&id).and_then(StreamId::parse))
                }
                _ => {}
            }
        }
        Ok(info)
    }

    /// Load every key, apply it, and make `at` (the stream's last ID, read before the
    /// scan) our position, so the tail replays whatever changed while we scanned. Returns
    /// (tokens, subjects, dropped).
    async fn full_load(
        &self,
        conn: &mut MultiplexedConnection,
        dict: &Dictionary,
        at: StreamId,
    ) -> Result<(usize, usize, usize), RedisError> {
        let Snapshot { tokens, subjects } = self.read_all(conn).await?;
        let first = !self.is_loaded();
        {
            let mut pos = self.pos.lock().unwrap_or_else(PoisonError::into_inner);
            for (key, exp) in &tokens {
                dict.revoke_token(*key, *exp);
            }
            for (key, e) in &subjects {
                dict.revoke_subject(*key, e.revoked_before, e.expires);
            }
            *pos = at;
        }
        self.loaded.store(true, Ordering::Release);
        let dropped = if first {
            0
        } else {
            self.drop_absent(conn, dict, &tokens, &subjects).await?
        };
        Ok((tokens.len(), subjects.len(), dropped))
    }

    /// Every token and subject key with its value, in one `SCAN` pass over `P:*`. Each
    /// batch's `MGET` is sent together with the next `SCAN` (both pipelined on the one
    /// connection), so the load costs about one round trip per batch. Values the gateway
    /// did not write are skipped with a warning; keys that expire meanwhile just vanish.
    async fn read_all(&self, conn: &MultiplexedConnection) -> Result<Snapshot, RedisError> {
        let pattern = format!("{}*", self.keys.root);
        let mut snapshot = Snapshot::default();
        let mut cursor = Some(String::from("0"));
        let mut batch: Vec<Vec<u8>> = Vec::new();
        while cursor.is_some() || !batch.is_empty() {
            let scan = async {
                let Some(at) = cursor.as_deref() else {
                    return Ok(None);
                };
                let (next, names): (String, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(at)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_BATCH)
                    .query_async(&mut conn.clone())
                    .await?;
                Ok::<_, RedisError>(Some((next, names)))
            };
            let read = async {
                if batch.is_empty() {
                    return Ok(Vec::new());
                }
                redis::cmd("MGET")
                    .arg(&batch)
                    .query_async::<Vec<Option<Vec<u8>>>>(&mut conn.clone())
                    .await
            };
            let (scanned, values) = tokio::try_join!(scan, read)?;
            for (name, value) in batch.iter().zip(values) {
                if let Some(value) = value {
                    if !snapshot.add(&self.keys, name, &value) {
                        tracing::warn!("skipping a Redis key or value the gateway did not write");
                    }
                }
            }
            batch.clear();
            match scanned {
                Some((next, names)) => {
                    batch = names
                        .into_iter()
                        .filter(|n| {
                            n.starts_with(self.keys.token.as_bytes())
                                || n.starts_with(self.keys.subject.as_bytes())
                        })
                        .collect();
                    cursor = (next != "0").then_some(next);
                }
                None => cursor = None,
            }
        }
        Ok(snapshot)
    }

    /// After a full load: drop the local entries Redis no longer holds (un-revoked while we
    /// were away, or expired). Each candidate is checked again after the scan, so an entry
    /// revoked while the scan ran (Redis first, then memory) is never dropped.
    async fn drop_absent(
        &self,
        conn: &mut MultiplexedConnection,
        dict: &Dictionary,
        tokens: &[(Key, u64)],
        subjects: &[(Key, SubjectEntry)],
    ) -> Result<usize, RedisError> {
        let in_tokens: HashSet<Key> = tokens.iter().map(|(k, _)| *k).collect();
        let in_subjects: HashSet<Key> = subjects.iter().map(|(k, _)| *k).collect();
        let mut candidates: Vec<Record> = Vec::new();
        dict.for_each_live(0, 0, |e| match e {
            Entry::Token { key, .. } if !in_tokens.contains(&key) => {
                candidates.push(Record::UnrevokeToken { key })
            }
            Entry::Subject { key, .. } if !in_subjects.contains(&key) => {
                candidates.push(Record::UnrevokeSubject { key })
            }
            _ => {}
        });
        let mut dropped = 0;
        for chunk in candidates.chunks(SCAN_BATCH) {
            let names: Vec<String> = chunk.iter().map(|r| self.keys.of(r)).collect();
            let present: Vec<Option<Vec<u8>>> =
                redis::cmd("MGET").arg(&names).query_async(conn).await?;
            for (record, value) in chunk.iter().zip(present) {
                if value.is_none() {
                    record.apply(dict);
                    dropped += 1;
                }
            }
        }
        Ok(dropped)
    }

    /// Write every live local entry back to Redis, publishing only what Redis lacked.
    /// Returns how many entries Redis did not have.
    async fn reseed(
        &self,
        conn: &mut MultiplexedConnection,
        dict: &Dictionary,
    ) -> Result<usize, RedisError> {
        let mut live = Vec::new();
        dict.for_each_live(now_unix(), self.leeway, |e| live.push(Record::from(e)));
        let mut restored = 0;
        for chunk in live.chunks(RESEED_BATCH) {
            let ids = self.invoke(conn, chunk, Publish::IfChanged).await?;
            restored += ids.iter().filter(|id| id.is_some()).count();
        }
        Ok(restored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::dict::{digest, key_to_hex};

    #[test]
    fn a_gap_is_assumed_whenever_entries_after_us_may_be_gone() {
        let id = |ms| StreamId { ms, seq: 0 };
        let info = StreamInfo {
            last: id(100),
            max_deleted: None,
            first: Some(id(60)),
        };
        // Caught up, or behind but everything after us is still there.
        assert!(!info.trimmed_after(id(100)));
        assert!(!info.trimmed_after(id(60)));
        assert!(!info.trimmed_after(id(70)));
        // The oldest entry left is newer than us: trimmed (or exactly at the border).
        assert!(info.trimmed_after(id(40)));
        // Trimmed to nothing after we read up to 90.
        let empty = StreamInfo {
            first: None,
            ..info
        };
        assert!(empty.trimmed_after(id(90)));
        assert!(!empty.trimmed_after(id(100)));
        // XDEL of an entry after us.
        let deleted = StreamInfo {
            max_deleted: Some(id(80)),
            ..info
        };
        assert!(deleted.trimmed_after(id(70)));
        assert!(!deleted.trimmed_after(id(80)));
        // No stream at all: nothing to miss.
        assert!(!StreamInfo::default().trimmed_after(StreamId::default()));
    }

    #[test]
    fn snapshots_take_only_what_the_gateway_writes() {
        let keys = Keys::new("p");
        let key = digest(b"k");
        let name = |kind: &str, hex: &str| format!("p:{kind}:{hex}").into_bytes();
        let hex = key_to_hex(&key);
        let mut snap = Snapshot::default();
        assert!(snap.add(&keys, &name("tok", &hex), b"1700000000"));
        assert!(snap.add(&keys, &name("sub", &hex), b"5:9"));
        assert!(!snap.add(&keys, &name("tok", &hex), b"soon"));
        assert!(!snap.add(&keys, &name("sub", &hex), b"5"));
        assert!(!snap.add(&keys, &name("tok", "xyz"), b"1"));
        assert!(!snap.add(&keys, b"p:epoch", b"abc"));
        assert_eq!(snap.tokens, vec![(key, 1_700_000_000)]);
        assert_eq!(
            snap.subjects,
            vec![(
                key,
                SubjectEntry {
                    revoked_before: 5,
                    expires: 9
                }
            )]
        );
    }
}
