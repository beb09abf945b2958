//! The embedded durable store: an append-only file of framed records (format in
//! `record.rs`, framing, recovery, locking and group commit in `crate::durable`), replayed
//! into a [`Dictionary`] at start-up, appended to with group commit, and rewritten to the
//! live set by compaction.
//!
//! Blocking API on purpose: every call ends in an fsync, so async callers go through
//! `tokio::task::spawn_blocking`; `Log` is `Send + Sync` and shared as `Arc<Log>`.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::durable::store::{self, Header, Opened, Recovery, Swap};
use crate::durable::{io_err, Committer, DurableError};

use super::dict::{expired, Dictionary};
use super::record::{
    check_header, decode_v1, estimate_live, HeaderError, Record, HEADER_LEN, KIND, MAGIC,
    RECORD_LEN,
};

/// Leeway [`Log::open`] replays with: expired revocations younger than this are kept.
/// Generous on purpose: replay does not know the validator's clock-skew allowance, and
/// dropping too early could let a revoked token back in; keeping too long only costs memory
/// until the first [`Dictionary::sweep`], which runs with the real leeway.
pub const REPLAY_LEEWAY: u64 = 3600;

/// Every way the log can fail: the durable layer's errors.
pub type LogError = DurableError;

/// What [`Log::open`] found.
#[derive(Debug)]
pub struct Replay {
    /// The revocations in force, ready to be shared with the request path.
    pub dict: Dictionary,
    /// Intact records read.
    pub records: usize,
    /// Revocations skipped because they had already expired.
    pub expired: usize,
    /// Damaged stretches skipped under `recover` (zero otherwise: damage refuses the open).
    pub corrupt: usize,
    /// Bytes of torn final write cut off the end of the file.
    pub truncated: usize,
    /// The damage found and what was done about it.
    pub recovery: Recovery,
}

/// What [`Log::compact`] did.
#[derive(Debug, Clone, Copy)]
pub struct CompactStats {
    /// Live entries written from the dictionary.
    pub live: usize,
    /// Records appended while the rewrite ran, carried over to the new file.
    pub carried: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// How long appends were held up (the final swap only).
    pub pause: Duration,
}

pub struct Log {
    path: PathBuf,
    tmp_path: PathBuf,
    committer: Committer,
    /// One compaction at a time.
    compacting: Mutex<()>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Unix seconds now (the one clock, `clock::unix_now`); a clock before 1970 counts as 0
/// (replay then drops nothing).
pub use crate::clock::unix_now as now_unix;

/// Brings the header of an opened log to the current version: writes it into a new file,
/// rewrites a version 1 log as version 2 (the original kept beside it as `<path>.v1-<time>`),
/// refuses anything else.
fn upgrade(opened: &mut Opened) -> Result<(), LogError> {
    match check_header(&opened.bytes, &KIND) {
        Err(cause) => Err(LogError::Header {
            path: opened.path.clone(),
            cause,
        }),
        Ok(Header::Valid) => Ok(()),
        Ok(Header::Incomplete) => store::reset_to_header(opened, &KIND),
        Ok(Header::Version(1)) => {
            let records = decode_v1(opened.bytes.get(HEADER_LEN..).unwrap_or_default());
            let kept = store::preserve(&opened.path, &opened.bytes, "v1")?;
            let mut contents = Vec::with_capacity(HEADER_LEN + records.len() * RECORD_LEN);
            contents.extend_from_slice(&MAGIC);
            for r in &records {
                r.encode_into(&mut contents);
            }
            store::replace(opened, contents)?;
            tracing::info!(path = %opened.path.display(), records = records.len(),
                original = %kept.display(), "revocation log converted from format version 1 to 2");
            Ok(())
        }
        Ok(Header::Version(found)) => Err(LogError::Header {
            path: opened.path.clone(),
            cause: HeaderError::UnsupportedVersion {
                kind: KIND.name,
                found,
                supported: MAGIC[HEADER_LEN - 1],
            },
        }),
    }
}

impl Log {
    /// Opens (creating it and its folder if missing) the log at `path` and replays it,
    /// keeping revocations that expired less than [`REPLAY_LEEWAY`] ago. Damage other
    /// than a torn final write refuses the open (see [`Log::open_with`]).
    pub fn open(path: impl AsRef<Path>) -> Result<(Log, Replay), LogError> {
        Self::open_with(path, now_unix(), REPLAY_LEEWAY, false)
    }

    /// [`Log::open`] with an explicit clock and leeway.
    pub fn open_at(
        path: impl AsRef<Path>,
        now: u64,
        leeway: u64,
    ) -> Result<(Log, Replay), LogError> {
        Self::open_with(path, now, leeway, false)
    }

    /// Opens the log under its exclusive lock (a second process is refused with
    /// [`LogError::Locked`]) and replays every intact record, wherever damage sits between
    /// them.
    ///
    /// A torn final write (a crash mid-append) is warned about and cut off, so the next
    /// append lands on a record boundary. Any other damage refuses the open with
    /// [`LogError::Damaged`] (file, offset, the command to recover) and leaves the file
    /// untouched, unless `recover`: then the damaged file is preserved beside the log,
    /// the log is rewritten to its intact records, and the damage is reported. A file that
    /// is not a log at all is refused and left untouched.
    pub fn open_with(
        path: impl AsRef<Path>,
        now: u64,
        leeway: u64,
        recover: bool,
    ) -> Result<(Log, Replay), LogError> {
        let path = path.as_ref().to_path_buf();
        let mut opened = store::open_locked(&path)?;
        upgrade(&mut opened)?;
        let body = opened.bytes.get(HEADER_LEN..).unwrap_or_default();
        // Sized up front: rehashing on the way to 1M entries would cost more than the
        // extra pass over the bytes.
        let (tokens, subjects) = estimate_live(body, now, leeway);
        let dict = Dictionary::with_capacity(tokens, subjects);
        let mut skipped = 0usize;
        let (end, recovery) = store::load(&mut opened, &KIND, recover, |p| {
            match Record::from_payload(p) {
                Some(
                    Record::RevokeToken { exp, .. } | Record::RevokeSubject { expires: exp, .. },
                ) if expired(exp, now, leeway) => skipped += 1,
                Some(r) => r.apply(&dict),
                None => return false,
            }
            true
        })?;
        let Opened { file, tmp_path, .. } = opened;
        let log = Log {
            committer: Committer::new(path.clone(), file, end),
            path,
            tmp_path,
            compacting: Mutex::new(()),
        };
        let replay = Replay {
            dict,
            records: recovery.records,
            expired: skipped,
            corrupt: recovery.damaged.len(),
            truncated: recovery.truncated,
            recovery,
        };
        Ok((log, replay))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current file size in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.committer.end().unwrap_or(0)
    }

    /// Whether the last write failed and no retry has succeeded since (disk full, I/O
    /// error): revokes are answered 503 meanwhile, and readiness reports it.
    pub fn is_degraded(&self) -> bool {
        self.committer.is_degraded()
    }

    /// While degraded, checks whether the disk takes writes again (see
    /// [`Committer::probe`]); returns whether the log is healthy.
    pub fn probe(&self) -> bool {
        self.committer.probe()
    }

    /// Whether the file has grown to more than twice what `live_entries` records need
    /// (plus 1 MiB, so small logs are left alone): the caller's cue to [`Log::compact`].
    pub fn needs_compaction(&self, live_entries: usize) -> bool {
        let live = (HEADER_LEN + live_entries * RECORD_LEN) as u64;
        self.len_bytes() > live.saturating_mul(2) + (1 << 20)
    }

    /// Appends records and returns once they are written and fsynced. Concurrent callers
    /// share one fsync (group commit).
    pub fn append(&self, records: &[Record]) -> Result<(), LogError> {
        super::commit::commit(&self.committer, records, None)
    }

    /// [`Log::append`], also applying the records to `dict` in the order they take in the
    /// file. Use this rather than touching the dictionary separately: with two concurrent
    /// admin calls on one key, the dictionary and the file could otherwise disagree on
    /// which came last, and a restart would silently flip the outcome. The change is
    /// visible to requests before it is durable; if the write then fails the caller gets
    /// the error, and the change holds until a restart.
    pub fn append_and_apply(&self, records: &[Record], dict: &Dictionary) -> Result<(), LogError> {
        super::commit::commit(&self.committer, records, Some(dict))
    }

    /// Rewrites the file to the entries of `dict` not expired at `now` (with `leeway`), so
    /// it stops growing with revocations that were undone or have lapsed.
    ///
    /// Crash-safe: the live set goes to `<path>.tmp` (locked before it is renamed, so the
    /// store's lock carries over), which is fsynced, renamed over the log, and the folder
    /// fsynced; a crash at any point leaves either the old or the new file whole. Appends
    /// keep flowing during the rewrite; they are held up only for the final swap, which
    /// copies the records appended meanwhile, fsyncs, and renames. Some of those records
    /// may already show in the snapshot; replaying them over it is harmless, because an
    /// unrevoke is idempotent and a revoke keeps the later of two expiries, so a change
    /// applied twice in file order gives what applying it once does. `dict` must be the
    /// dictionary this log's [`Log::append_and_apply`] calls feed.
    pub fn compact(
        &self,
        dict: &Dictionary,
        now: u64,
        leeway: u64,
    ) -> Result<CompactStats, LogError> {
        let _one = self
            .compacting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Every record before `base` was applied to `dict` before it was queued, so the
        // snapshot below covers it; records after it are copied over at the swap.
        let base = self.committer.end()?;

        let (tmp, live) = self.rewrite(dict, now, leeway).inspect_err(|_| {
            let _ = fs::remove_file(&self.tmp_path);
        })?;
        let mut carried = 0;
        let mut bytes_after = 0;
        let (pause, result) = self.committer.swap(|old, end| {
            carried = (end.saturating_sub(base) / RECORD_LEN as u64) as usize;
            let swap = store::swap_in(&self.path, &self.tmp_path, old, base, end, tmp);
            if let Swap::Replace { end, .. } = &swap {
                bytes_after = *end;
            }
            swap
        });
        result?;
        Ok(CompactStats {
            live,
            carried,
            bytes_before: base,
            bytes_after,
            pause,
        })
    }

    /// Writes header + live set to the tmp file and fsyncs it.
    fn rewrite(
        &self,
        dict: &Dictionary,
        now: u64,
        leeway: u64,
    ) -> Result<(std::fs::File, usize), LogError> {
        let tmp = &self.tmp_path;
        let file = store::create_tmp(tmp)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut live = 0usize;
        let mut write_err = out.write_all(&MAGIC).err();
        let mut buf = Vec::with_capacity(RECORD_LEN);
        dict.for_each_live(now, leeway, |e| {
            if write_err.is_none() {
                live += 1;
                buf.clear();
                Record::from(e).encode_into(&mut buf);
                write_err = out.write_all(&buf).err();
            }
        });
        if let Some(e) = write_err {
            return Err(io_err(tmp, "write")(e));
        }
        let file = out
            .into_inner()
            .map_err(|e| io_err(tmp, "write")(e.into_error()))?;
        file.sync_data().map_err(io_err(tmp, "fsync"))?;
        Ok((file, live))
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
