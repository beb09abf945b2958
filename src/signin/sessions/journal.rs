//! The embedded session store: the [`Index`] in memory, made durable by an append-only
//! journal beside the revocation log (`<store>.sessions`), replayed at start-up.
//!
//! ```text
//! header  8 bytes   b"PCSESSJ" then the format version (2)
//! record            a durable frame (`crate::durable::frame`: magic, length, body, crc32)
//!   body = kind u8, then
//!   1 Start   id [16] | access key [16] | access exp u64 | refresh [32] | refresh exp u64 | user
//!   2 Rotate  id [16] | old [32] | old exp u64 | next [32] | next exp u64 | access key [16] | access exp u64
//!   3 End     id [16]
//!   4 Family  id [16] | current [32] | current exp u64 | n u32 | n x (access key [16] | exp u64) | user
//!   5 Spent   digest [32] | id [16] | until u64
//! ```
//!
//! Integers are little-endian; `user` is UTF-8 and runs to the end of the body. Refresh
//! tokens appear only as SHA-256 digests. Kinds 4 and 5 are written by compaction only.
//!
//! Crash safety, recovery after damage, the exclusive lock and group commit are
//! `crate::durable`'s, as for the revocation log: each change is fsynced before the endpoint
//! answers and goes to memory and the file in the same order; a torn final write is cut on
//! open, other damage refuses the open unless told to recover (every intact record is
//! kept, the damaged file preserved beside the journal); compaction is snapshot to
//! `<file>.tmp`, fsync, rename, fsync of the folder.
//!
//! Version 1 framed records without a magic (`len | body | crc32`), so a scan could only
//! resynchronise by trying every byte; a version 1 journal is read with that scan
//! ([`scan_v1`]) and rewritten as version 2 at open (the original kept beside it).

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::{
    Change, FamilyId, Index, IndexStore, Issued, Op, Outcome, RefreshDigest, SessionError,
    SessionFuture,
};
use crate::durable::store::{self, Header, Opened, Recovery};
use crate::durable::{frame, io_err, Committer, DurableError, FileKind, HeaderError};
use crate::ids::Key;
use crate::revocation::now_unix;

/// Every way the journal can fail: the durable layer's errors.
pub type JournalError = DurableError;

/// First bytes of every journal; the last byte is the format version.
pub const MAGIC: [u8; 8] = *b"PCSESSJ\x02";
/// Largest record body accepted: a family snapshot holds one entry per live access token.
const MAX_BODY: usize = 1 << 24;
/// Rough bytes a family and a spent token take in a compacted journal, to tell when the
/// journal has grown well past its live state.
const FAMILY_BYTES: u64 = 120;
const SPENT_BYTES: u64 = 65;

const START: u8 = 1;
const ROTATE: u8 = 2;
const END: u8 = 3;
const FAMILY: u8 = 4;
const SPENT: u8 = 5;

const KIND: FileKind = FileKind {
    name: "session journal",
    header: MAGIC,
    max_payload: MAX_BODY,
};

/// The journal path for the revocation log at `log`: the same name plus `.sessions`.
pub fn journal_path(log: &Path) -> PathBuf {
    let mut p: OsString = log.as_os_str().to_owned();
    p.push(".sessions");
    PathBuf::from(p)
}

/// Append the framed encoding of `c` to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, c: &Change) {
    frame::encode_with(out, |body| encode_body(body, c));
}

fn encode_body(body: &mut Vec<u8>, c: &Change) {
    match c {
        Change::Start {
            id,
            user,
            access,
            refresh,
            refresh_exp,
        } => {
            body.push(START);
            body.extend_from_slice(id);
            put_issued(body, access);
            body.extend_from_slice(refresh);
            body.extend_from_slice(&refresh_exp.to_le_bytes());
            body.extend_from_slice(user.as_bytes());
        }
        Change::Rotate {
            id,
            old,
            old_exp,
            next,
            next_exp,
            access,
        } => {
            body.push(ROTATE);
            body.extend_from_slice(id);
            body.extend_from_slice(old);
            body.extend_from_slice(&old_exp.to_le_bytes());
            body.extend_from_slice(next);
            body.extend_from_slice(&next_exp.to_le_bytes());
            put_issued(body, access);
        }
        Change::End { id } => {
            body.push(END);
            body.extend_from_slice(id);
        }
        Change::Family {
            id,
            user,
            current,
            current_exp,
            access,
        } => {
            body.push(FAMILY);
            body.extend_from_slice(id);
            body.extend_from_slice(current);
            body.extend_from_slice(&current_exp.to_le_bytes());
            body.extend_from_slice(&(access.len() as u32).to_le_bytes());
            for a in access {
                put_issued(body, a);
            }
            body.extend_from_slice(user.as_bytes());
        }
        Change::Spent { digest, id, until } => {
            body.push(SPENT);
            body.extend_from_slice(digest);
            body.extend_from_slice(id);
            body.extend_from_slice(&until.to_le_bytes());
        }
    }
}

fn put_issued(body: &mut Vec<u8>, a: &Issued) {
    body.extend_from_slice(&a.key);
    body.extend_from_slice(&a.exp.to_le_bytes());
}

/// Reads fixed-size fields off a record body.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u64(&mut self) -> Option<u64> {
        self.array::<8>().map(u64::from_le_bytes)
    }
    fn issued(&mut self) -> Option<Issued> {
        let key: Key = self.array()?;
        Some(Issued {
            key,
            exp: self.u64()?,
        })
    }
    fn rest_str(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.0);
        std::str::from_utf8(rest).ok().map(str::to_owned)
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// Decode one record body (checksum already checked); `None` when it is not a change this
/// build writes.
fn decode_body(body: &[u8]) -> Option<Change> {
    let (&kind, rest) = body.split_first()?;
    let mut f = Fields(rest);
    let change = match kind {
        START => {
            let id: FamilyId = f.array()?;
            let access = f.issued()?;
            let refresh: RefreshDigest = f.array()?;
            let refresh_exp = f.u64()?;
            Change::Start {
                id,
                access,
                refresh,
                refresh_exp,
                user: f.rest_str()?,
            }
        }
        ROTATE => Change::Rotate {
            id: f.array()?,
            old: f.array()?,
            old_exp: f.u64()?,
            next: f.array()?,
            next_exp: f.u64()?,
            access: f.issued()?,
        },
        END => Change::End { id: f.array()? },
        FAMILY => {
            let id: FamilyId = f.array()?;
            let current: RefreshDigest = f.array()?;
            let current_exp = f.u64()?;
            let n = u32::from_le_bytes(f.array()?) as usize;
            // Bounded by the body length, so a bogus count cannot allocate much.
            let mut access = Vec::with_capacity(n.min(rest.len() / 24));
            for _ in 0..n {
                access.push(f.issued()?);
            }
            Change::Family {
                id,
                current,
                current_exp,
                access,
                user: f.rest_str()?,
            }
        }
        SPENT => Change::Spent {
            digest: f.array()?,
            id: f.array()?,
            until: f.u64()?,
        },
        _ => return None,
    };
    // Every byte of a body is accounted for; anything left over is not a record we wrote.
    f.done().then_some(change)
}

pub use crate::durable::frame::Scan;

/// Decode every intact record of a journal body, in order, wherever damage sits between
/// them (see `crate::durable::frame::scan`). Never panics.
pub(crate) fn scan(body: &[u8], mut f: impl FnMut(Change)) -> Scan {
    frame::scan(body, MAX_BODY, |p| match decode_body(p) {
        Some(c) => {
            f(c);
            true
        }
        None => false,
    })
}

/// What [`scan`] finds in a journal body, the records themselves dropped (for the fuzz
/// target and tools that only inspect a file).
pub fn scan_only(body: &[u8]) -> Scan {
    scan(body, |_| {})
}

/// The records of a version 1 journal body (`len | body | crc32`, no magic): where a frame
/// does not check out, every later byte is tried.
pub fn scan_v1(body: &[u8]) -> Vec<Change> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < body.len() {
        match frame_at_v1(body, pos) {
            Some((change, len)) => {
                out.push(change);
                pos += len;
            }
            None => pos += 1,
        }
    }
    out
}

fn frame_at_v1(body: &[u8], pos: usize) -> Option<(Change, usize)> {
    let len_bytes = body.get(pos..pos + 4)?;
    let len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
    if len == 0 || len > MAX_BODY {
        return None;
    }
    let frame = body.get(pos..pos + 4 + len + 4)?;
    let (head, crc) = frame.split_at(4 + len);
    if crc32fast::hash(head).to_le_bytes() != crc {
        return None;
    }
    decode_body(&head[4..]).map(|change| (change, frame.len()))
}

/// Brings an opened journal to the current format (see [`upgrade`] of the revocation log).
fn upgrade(opened: &mut Opened) -> Result<(), JournalError> {
    match store::check_header(&opened.bytes, &KIND) {
        Err(cause) => Err(JournalError::Header {
            path: opened.path.clone(),
            cause,
        }),
        Ok(Header::Valid) => Ok(()),
        Ok(Header::Incomplete) => store::reset_to_header(opened, &KIND),
        Ok(Header::Version(1)) => {
            let changes = scan_v1(opened.bytes.get(MAGIC.len()..).unwrap_or_default());
            let kept = store::preserve(&opened.path, &opened.bytes, "v1")?;
            let mut contents = MAGIC.to_vec();
            for c in &changes {
                encode(&mut contents, c);
            }
            store::replace(opened, contents)?;
            tracing::info!(path = %opened.path.display(), records = changes.len(),
                original = %kept.display(), "session journal converted from format version 1 to 2");
            Ok(())
        }
        Ok(Header::Version(found)) => Err(JournalError::Header {
            path: opened.path.clone(),
            cause: HeaderError::UnsupportedVersion {
                kind: KIND.name,
                found,
                supported: MAGIC[MAGIC.len() - 1],
            },
        }),
    }
}

/// What [`JournalSessions::open`] found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Loaded {
    pub records: usize,
    /// Damaged stretches skipped under `recover` (damage refuses the open otherwise).
    pub corrupt: usize,
    pub truncated: usize,
    pub families: usize,
    pub spent: usize,
}

/// Families in memory, every change journalled and fsynced first (`store = "<path>"`).
#[derive(Debug, Clone)]
pub struct JournalSessions {
    inner: Arc<Journal>,
}

struct Journal {
    path: PathBuf,
    tmp_path: PathBuf,
    committer: Committer,
    index: Mutex<Index>,
    /// One compaction at a time.
    compacting: Mutex<()>,
    /// A compaction is scheduled or running.
    compaction_queued: AtomicBool,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl JournalSessions {
    /// Open (creating it if missing) the journal at `path` under its exclusive lock and
    /// replay it, dropping what expired before now. Damage other than a torn final write
    /// refuses the open unless `recover` (see `crate::durable::store::load`). Blocking: reads
    /// the whole file.
    pub fn open(path: &Path, recover: bool) -> Result<(JournalSessions, Loaded), JournalError> {
        Self::open_with(path, now_unix(), recover)
    }

    /// [`JournalSessions::open`] with an explicit clock, refusing damage.
    pub fn open_at(path: &Path, now: u64) -> Result<(JournalSessions, Loaded), JournalError> {
        Self::open_with(path, now, false)
    }

    /// [`JournalSessions::open`] with an explicit clock.
    pub fn open_with(
        path: &Path,
        now: u64,
        recover: bool,
    ) -> Result<(JournalSessions, Loaded), JournalError> {
        let path = path.to_path_buf();
        let mut opened = store::open_locked(&path)?;
        upgrade(&mut opened)?;
        let mut index = Index::default();
        let (end, recovery): (u64, Recovery) =
            store::load(&mut opened, &KIND, recover, |p| match decode_body(p) {
                Some(c) => {
                    index.apply(&c);
                    true
                }
                None => false,
            })?;
        index.sweep(now);
        let (families, spent) = index.len();
        let loaded = Loaded {
            records: recovery.records,
            corrupt: recovery.damaged.len(),
            truncated: recovery.truncated,
            families,
            spent,
        };
        let Opened { file, tmp_path, .. } = opened;
        let journal = Journal {
            committer: Committer::new(path.clone(), file, end),
            path,
            tmp_path,
            index: Mutex::new(index),
            compacting: Mutex::new(()),
            compaction_queued: AtomicBool::new(false),
        };
        Ok((
            JournalSessions {
                inner: Arc::new(journal),
            },
            loaded,
        ))
    }

    #[cfg(test)]
    fn execute(&self, op: Op, now: u64) -> Result<Outcome, JournalError> {
        self.inner.execute(op, now)
    }
}

impl IndexStore for JournalSessions {
    /// Run `op` on a blocking thread (it ends in an fsync); then start a compaction in the
    /// background when the journal has grown well past the live state.
    fn run(&self, op: Op, now: u64) -> SessionFuture<'_, Outcome> {
        let journal = self.inner.clone();
        Box::pin(async move {
            let out = tokio::task::spawn_blocking(move || journal.execute(op, now))
                .await
                .map_err(|e| SessionError(e.to_string()))?
                .map_err(|e| SessionError(e.to_string()))?;
            if self.inner.needs_compaction()
                && !self.inner.compaction_queued.swap(true, Ordering::AcqRel)
            {
                let journal = self.inner.clone();
                tokio::task::spawn_blocking(move || {
                    match journal.compact(now_unix()) {
                        Ok((before, after)) => tracing::info!(
                            path = %journal.path.display(), bytes_before = before, bytes_after = after,
                            "session journal compacted"
                        ),
                        Err(e) => tracing::warn!(error = %e, "session journal compaction failed"),
                    }
                    journal.compaction_queued.store(false, Ordering::Release);
                });
            }
            Ok(out)
        })
    }

    fn list(&self, user: &str, now: u64) -> Vec<super::SessionInfo> {
        let index = self
            .inner
            .index
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        index.list(user, now)
    }
}

impl Journal {
    /// Decide and apply under the committer's lock (so memory and file agree on the order
    /// of changes), return once the changes are fsynced.
    fn execute(&self, op: Op, now: u64) -> Result<Outcome, JournalError> {
        self.committer.commit_with(|pending| {
            let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
            let (outcome, changes) = index.execute(op, now);
            for c in &changes {
                encode(pending, c);
            }
            outcome
        })
    }

    fn len_bytes(&self) -> u64 {
        self.committer.end().unwrap_or(0)
    }

    /// More than twice what the live state needs, plus 1 MiB so small journals stay put.
    fn needs_compaction(&self) -> bool {
        let (families, spent) = self
            .index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        let live = MAGIC.len() as u64 + families as u64 * FAMILY_BYTES + spent as u64 * SPENT_BYTES;
        self.len_bytes() > live.saturating_mul(2) + (1 << 20)
    }

    /// Rewrite the journal to the live state. Changes appended while the snapshot is
    /// written are copied after it; some may already be in the snapshot, which is harmless
    /// because replaying a suffix of the history over a state that holds it changes nothing
    /// (see [`Change`]). Returns the sizes before and after.
    fn compact(&self, now: u64) -> Result<(u64, u64), JournalError> {
        let _one = self
            .compacting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Every change before `base` was applied to the index before it was queued.
        let base = self.committer.end()?;
        let snapshot = {
            let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
            index.sweep(now);
            index.snapshot()
        };
        let mut bytes = MAGIC.to_vec();
        for c in &snapshot {
            encode(&mut bytes, c);
        }
        let tmp_path = &self.tmp_path;
        let tmp = store::create_tmp(tmp_path)?;
        (&tmp)
            .write_all(&bytes)
            .and_then(|()| tmp.sync_data())
            .map_err(|e| {
                let _ = fs::remove_file(tmp_path);
                io_err(tmp_path, "write snapshot")(e)
            })?;
        let (_, result) = self
            .committer
            .swap(|old, end| store::swap_in(&self.path, tmp_path, old, base, end, tmp));
        result?;
        Ok((base, self.len_bytes()))
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
