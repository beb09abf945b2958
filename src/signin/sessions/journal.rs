//! The embedded session store: the [`Index`] in memory, made durable by an append-only
//! journal beside the revocation log (`<store>.sessions`), replayed at start-up.
//!
//! ```text
//! header  8 bytes   b"PCSESSJ" then the format version (1)
//! record            len u32 LE | body (len bytes) | crc32 u32 LE of len and body
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
//! Crash safety is the revocation log's (`revocation::log`), with the same parts: the group
//! commit of `revocation::commit` (each change is fsynced before the endpoint answers; a
//! change goes to memory and the file in the same order), a torn tail cut off with a warning
//! on open, and compaction by snapshot to `<file>.tmp`, fsync, rename, fsync of the folder.
//! Records are variable-length, so a record whose length field is damaged loses the records
//! after it too (they are cut as torn tail, with a warning naming how many bytes); a record
//! whose body alone is damaged is skipped and the ones after it load.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::{
    Change, FamilyId, Index, IndexStore, Issued, Op, Outcome, RefreshDigest, SessionError,
    SessionFuture,
};
use crate::revocation::commit::Committer;
use crate::revocation::dict::Key;
use crate::revocation::log::{
    cut_torn_tail, io_err, now_unix, open_append_only, reset_to_header, swap_in,
};
use crate::revocation::LogError;

/// First bytes of every journal; the last byte is the format version.
pub const MAGIC: [u8; 8] = *b"PCSESSJ\x01";
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

/// The journal path for the revocation log at `log`: the same name plus `.sessions`.
pub fn journal_path(log: &Path) -> PathBuf {
    let mut p: OsString = log.as_os_str().to_owned();
    p.push(".sessions");
    PathBuf::from(p)
}

/// Append the framed encoding of `c` to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, c: &Change) {
    let mut body = Vec::with_capacity(128);
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
            put_issued(&mut body, access);
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
            put_issued(&mut body, access);
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
                put_issued(&mut body, a);
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
    let len = (body.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(&body);
    out.extend_from_slice(&len);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
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

/// What [`scan`] found in a journal body (the bytes after the header).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    pub records: usize,
    /// Body bytes up to the end of the last intact record.
    pub good_len: usize,
    /// Damaged stretches (one or more records) followed by an intact record: skipped.
    pub corrupt: usize,
    /// Bytes after `good_len`: a torn or damaged tail.
    pub torn: usize,
}

/// Decode every intact record of a journal body, in order. Never panics.
///
/// Where a frame does not check out (its body or its length field damaged), the scan looks
/// for the next intact frame at every later byte, so a damaged length field loses only the
/// records it covers, not every record after it. A false match needs a 32-bit checksum and
/// a well-formed body to line up by chance.
pub(crate) fn scan(body: &[u8], mut f: impl FnMut(Change)) -> Scan {
    let mut out = Scan::default();
    let mut pos = 0usize;
    let mut damaged = false;
    while pos < body.len() {
        match frame_at(body, pos) {
            Some((change, len)) => {
                f(change);
                out.records += 1;
                out.corrupt += usize::from(damaged);
                damaged = false;
                pos += len;
                out.good_len = pos;
            }
            None => {
                damaged = true;
                pos += 1;
            }
        }
    }
    out.torn = body.len() - out.good_len;
    out
}

/// What [`scan`] finds in a journal body, the records themselves dropped (for the fuzz
/// target and tools that only inspect a file).
pub fn scan_only(body: &[u8]) -> Scan {
    scan(body, |_| {})
}

/// The intact record starting at `pos`, and its frame length.
fn frame_at(body: &[u8], pos: usize) -> Option<(Change, usize)> {
    let len_bytes = body.get(pos..pos + 4)?;
    let len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
    if len == 0 || len > MAX_BODY {
        return None;
    }
    let frame = body.get(pos..pos + 4 + len + 4)?;
    // A kind this build writes, before the checksum: a resync tries every byte offset, and
    // most offsets fail here for the price of one comparison.
    if !matches!(frame[4], START | ROTATE | END | FAMILY | SPENT) {
        return None;
    }
    let (head, crc) = frame.split_at(4 + len);
    if crc32fast::hash(head).to_le_bytes() != crc {
        return None;
    }
    decode_body(&head[4..]).map(|change| (change, frame.len()))
}

/// What [`JournalSessions::open`] found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Loaded {
    pub records: usize,
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
    /// Open (creating it if missing) the journal at `path` and replay it, dropping what
    /// expired before now. Blocking: reads the whole file.
    pub fn open(path: &Path) -> Result<(JournalSessions, Loaded), String> {
        Self::open_at(path, now_unix()).map_err(|e| format!("session journal: {e}"))
    }

    /// [`JournalSessions::open`] with an explicit clock.
    pub fn open_at(path: &Path, now: u64) -> Result<(JournalSessions, Loaded), LogError> {
        let path = path.to_path_buf();
        let (mut file, mut bytes, tmp_path) = open_append_only(&path)?;
        if bytes.len() < MAGIC.len() && MAGIC.starts_with(&bytes) {
            // New, or its creator died before the header was durable: holds no record.
            bytes = reset_to_header(&mut file, &path, &MAGIC)?;
        } else if bytes.get(..MAGIC.len()) != Some(&MAGIC[..]) {
            // Refused and left alone, like a revocation log with the wrong header.
            let e = io::Error::new(
                io::ErrorKind::InvalidData,
                "not a portcullis session journal (bad magic bytes or unsupported version)",
            );
            return Err(io_err(&path, "check header")(e));
        }
        let mut index = Index::default();
        let found = scan(&bytes[MAGIC.len()..], |c| index.apply(&c));
        index.sweep(now);
        if found.corrupt > 0 {
            tracing::warn!(
                path = %path.display(),
                damaged_stretches = found.corrupt,
                "session journal has damaged records between intact ones; skipped them \
                 (the session changes they held are lost)"
            );
        }
        let good_end = (MAGIC.len() + found.good_len) as u64;
        cut_torn_tail(
            &file,
            &path,
            "session journal",
            good_end,
            found.torn,
            found.records,
        )?;
        let (families, spent) = index.len();
        let loaded = Loaded {
            records: found.records,
            corrupt: found.corrupt,
            truncated: found.torn,
            families,
            spent,
        };
        let journal = Journal {
            committer: Committer::new(path.clone(), file, good_end),
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
    fn execute(&self, op: Op, now: u64) -> Result<Outcome, LogError> {
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
}

impl Journal {
    /// Decide and apply under the committer's lock (so memory and file agree on the order
    /// of changes), return once the changes are fsynced.
    fn execute(&self, op: Op, now: u64) -> Result<Outcome, LogError> {
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
    fn compact(&self, now: u64) -> Result<(u64, u64), LogError> {
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
        let _ = fs::remove_file(tmp_path);
        let write = || -> io::Result<File> {
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create_new(true)
                .open(tmp_path)?;
            (&file).write_all(&bytes)?;
            file.sync_data()?;
            Ok(file)
        };
        let tmp = write().map_err(|e| {
            let _ = fs::remove_file(tmp_path);
            io_err(tmp_path, "write snapshot")(e)
        })?;
        let (_, result) = self
            .committer
            .swap(|old, end| swap_in(&self.path, tmp_path, old, base, end, tmp));
        result?;
        Ok((base, self.len_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{issued, rotate, session, state, NOW};
    use super::*;
    use crate::signin::sessions::RefreshError;

    fn samples() -> Vec<Change> {
        vec![
            Change::Start {
                id: [1; 16],
                user: "u-1 ünïcode".into(),
                access: issued(1),
                refresh: [1; 32],
                refresh_exp: NOW + 3600,
            },
            Change::Rotate {
                id: [1; 16],
                old: [1; 32],
                old_exp: NOW + 3600,
                next: [2; 32],
                next_exp: NOW + 7200,
                access: issued(2),
            },
            Change::End { id: [1; 16] },
            Change::Family {
                id: [3; 16],
                user: "u-3".into(),
                current: [3; 32],
                current_exp: NOW + 3600,
                access: vec![issued(3), issued(4)],
            },
            Change::Spent {
                digest: [5; 32],
                id: [3; 16],
                until: NOW + 10,
            },
        ]
    }

    fn encoded(changes: &[Change]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in changes {
            encode(&mut out, c);
        }
        out
    }

    fn decoded(body: &[u8]) -> (Vec<Change>, Scan) {
        let mut out = Vec::new();
        let s = scan(body, |c| out.push(c));
        (out, s)
    }

    #[test]
    fn records_round_trip() {
        let body = encoded(&samples());
        let (got, s) = decoded(&body);
        assert_eq!(got, samples());
        assert_eq!(s.good_len, body.len());
        assert_eq!((s.corrupt, s.torn), (0, 0));
    }

    #[test]
    fn every_single_bit_flip_of_a_record_is_rejected() {
        for c in samples() {
            let raw = encoded(std::slice::from_ref(&c));
            for bit in 0..raw.len() * 8 {
                let mut bad = raw.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(decoded(&bad).1.records, 0, "bit {bit} of {c:?}");
            }
        }
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_damaged_middle_record_skipped() {
        let recs = samples();
        let body = encoded(&recs);
        let first = encoded(&recs[..1]).len();
        let last = encoded(&recs[4..]).len();
        // Half of the last record reached the disk.
        let torn = &body[..body.len() - last / 2];
        let (got, s) = decoded(torn);
        assert_eq!(got, recs[..4].to_vec());
        assert_eq!(s.torn, last - last / 2);
        assert_eq!(s.good_len, body.len() - last);
        // The body of the first record is damaged, its length intact: the rest loads.
        let mut damaged = body.clone();
        damaged[first - 6] ^= 0xff;
        let (got, s) = decoded(&damaged);
        assert_eq!(got, recs[1..].to_vec());
        assert_eq!((s.corrupt, s.torn), (1, 0));
    }

    #[test]
    fn a_damaged_length_field_loses_only_its_record() {
        let recs = samples();
        let body = encoded(&recs);
        let first = encoded(&recs[..1]).len();
        let second = encoded(&recs[1..2]).len();
        // The second record's length claims more than it holds (and then less): the scan
        // finds the third record anyway.
        for len in [u32::MAX, 5, (second + 40) as u32] {
            let mut damaged = body.clone();
            damaged[first..first + 4].copy_from_slice(&len.to_le_bytes());
            let (got, s) = decoded(&damaged);
            let mut want = recs.clone();
            want.remove(1);
            assert_eq!(got, want, "length {len}");
            assert_eq!((s.corrupt, s.torn, s.good_len), (1, 0, body.len()));
        }
        // Zeroes (a block the file system never wrote) in the middle: the same.
        let mut zeroed = body.clone();
        zeroed[first..first + second].fill(0);
        let (got, s) = decoded(&zeroed);
        assert_eq!(got.len(), recs.len() - 1);
        assert_eq!((s.corrupt, s.torn), (1, 0));
        // Garbage after the last record is a torn tail, cut at the last intact record.
        let mut tail = body.clone();
        tail.extend_from_slice(&[0xff, 0x01, 0, 0, 7, 7, 7]);
        let (got, s) = decoded(&tail);
        assert_eq!((got.len(), s.torn, s.good_len), (recs.len(), 7, body.len()));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid = encoded(&samples());
        for round in 0..5_000 {
            let mut buf: Vec<u8> = if round % 2 == 0 {
                (0..next() % 300).map(|_| next() as u8).collect()
            } else {
                let mut v = valid.clone();
                v.truncate((next() as usize) % (v.len() + 1));
                for _ in 0..(next() % 4) {
                    if !v.is_empty() {
                        let i = (next() as usize) % v.len();
                        v[i] ^= next() as u8;
                    }
                }
                v
            };
            buf.extend_from_slice(&[0xff; 3]);
            let s = scan(&buf, |_| {});
            assert_eq!(s.good_len + s.torn, buf.len());
        }
    }

    /// Opens the journal at `path` as of [`NOW`].
    fn open(path: &Path) -> (JournalSessions, Loaded) {
        JournalSessions::open_at(path, NOW).expect("open journal")
    }

    fn index_state(j: &JournalSessions) -> Vec<String> {
        state(&j.inner.index.lock().unwrap())
    }

    #[test]
    fn state_survives_reopen_including_spent_tokens_and_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log.sessions");
        let (j, loaded) = open(&path);
        assert_eq!(loaded.records, 0);
        j.execute(Op::Start(session("alice", 1), None), NOW)
            .unwrap();
        j.execute(Op::Start(session("alice", 2), None), NOW)
            .unwrap();
        j.execute(Op::Start(session("bob", 3), None), NOW).unwrap();
        j.execute(rotate(1, 4), NOW).unwrap();
        j.execute(Op::EndByAccess("bob".into(), [3; 16]), NOW)
            .unwrap();
        let before = index_state(&j);
        drop(j);

        let (j, loaded) = open(&path);
        assert_eq!((loaded.families, loaded.spent), (2, 1));
        assert_eq!(index_state(&j), before);
        // The spent token is still known as spent: reuse ends alice's first family.
        assert_eq!(
            j.execute(rotate(1, 9), NOW).unwrap(),
            Outcome::Rotated(Err(RefreshError::Reused(vec![issued(1), issued(4)])))
        );
        // Bob's family stayed ended.
        assert_eq!(
            j.execute(rotate(3, 8), NOW).unwrap(),
            Outcome::Rotated(Err(RefreshError::Invalid))
        );
        assert_eq!(
            j.execute(rotate(2, 5), NOW).unwrap(),
            Outcome::Rotated(Ok("alice".into()))
        );
    }

    #[test]
    fn a_torn_last_record_loses_only_that_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (j, _) = open(&path);
        j.execute(Op::Start(session("alice", 1), None), NOW)
            .unwrap();
        j.execute(rotate(1, 2), NOW).unwrap();
        drop(j);
        let len = fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 10).unwrap();
        drop(file);

        let (j, loaded) = open(&path);
        assert_eq!((loaded.records, loaded.families, loaded.spent), (1, 1, 0));
        assert!(loaded.truncated > 0);
        // The rotation never completed: the old token is still the current one.
        assert_eq!(
            j.execute(rotate(1, 3), NOW).unwrap(),
            Outcome::Rotated(Ok("alice".into()))
        );
        drop(j);
        assert_eq!(open(&path).1.records, 2, "appends after the repair load");
    }

    #[test]
    fn compaction_round_trip_keeps_the_state_and_shrinks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (j, _) = open(&path);
        for n in 0..50u8 {
            j.execute(Op::Start(session(&format!("u{n}"), n), None), NOW)
                .unwrap();
        }
        // Churn: ended families are dead weight in the file.
        for n in 0..40u8 {
            j.execute(Op::EndAll(format!("u{n}")), NOW).unwrap();
        }
        j.execute(rotate(45, 200), NOW).unwrap();
        let before = index_state(&j);
        let (bytes_before, bytes_after) = j.inner.compact(NOW).unwrap();
        assert!(bytes_after < bytes_before, "{bytes_after} < {bytes_before}");
        assert_eq!(fs::metadata(&path).unwrap().len(), bytes_after);
        assert!(!dir.path().join("j.tmp").exists());
        // Appends go to the new file.
        j.execute(rotate(200, 201), NOW).unwrap();
        let after = index_state(&j);
        drop(j);
        let (j, loaded) = open(&path);
        assert_eq!((loaded.families, loaded.spent), (10, 2));
        assert_eq!(index_state(&j), after);
        assert_ne!(before, after);
        assert_eq!(
            j.execute(rotate(45, 9), NOW).unwrap(),
            Outcome::Rotated(Err(RefreshError::Reused(vec![
                issued(45),
                issued(200),
                issued(201)
            ])))
        );
    }

    #[test]
    fn a_file_that_is_not_a_journal_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        fs::write(&path, b"PCRVLOG\x01 a revocation log").unwrap();
        assert!(JournalSessions::open_at(&path, NOW).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"PCRVLOG\x01 a revocation log");
    }

    #[test]
    fn expired_state_is_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (j, _) = open(&path);
        j.execute(Op::Start(session("alice", 1), None), NOW)
            .unwrap();
        j.execute(rotate(1, 2), NOW).unwrap();
        drop(j);
        let (_, loaded) = JournalSessions::open_at(&path, NOW + 100_000).unwrap();
        assert_eq!((loaded.records, loaded.families, loaded.spent), (2, 0, 0));
    }

    #[test]
    fn journal_path_sits_beside_the_log() {
        assert_eq!(
            journal_path(Path::new("data/revocations.log")),
            PathBuf::from("data/revocations.log.sessions")
        );
    }
}
