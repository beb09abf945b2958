//! The embedded durable store: an append-only file of checksummed records (format in
//! `record.rs`), replayed into a [`Dictionary`] at start-up, appended to with group commit,
//! and rewritten to the live set by compaction.
//!
//! Blocking API on purpose: every call ends in an fsync, so async callers go through
//! `tokio::task::spawn_blocking`; `Log` is `Send + Sync` and shared as `Arc<Log>`.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use super::commit::{Committer, Swap};
use super::dict::{expired, Dictionary};
use super::record::{
    check_header, estimate_live, scan, Header, HeaderError, Record, HEADER_LEN, MAGIC, RECORD_LEN,
};

/// Leeway [`Log::open`] replays with: expired revocations younger than this are kept.
/// Generous on purpose: replay does not know the validator's clock-skew allowance, and
/// dropping too early could let a revoked token back in; keeping too long only costs memory
/// until the first [`Dictionary::sweep`], which runs with the real leeway.
pub const REPLAY_LEEWAY: u64 = 3600;

#[derive(Debug, Error)]
pub enum LogError {
    #[error("store file {}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("store file {}: {source}", path.display())]
    Header {
        path: PathBuf,
        #[source]
        source: HeaderError,
    },
    /// After a failed write or fsync nothing is known about what reached the disk (the
    /// kernel may have dropped the dirty pages), so the log refuses further writes; a
    /// restart replays what is really there and repairs the tail.
    #[error("store file {} refuses writes after an earlier failure ({reason}); restart to recover", path.display())]
    Failed { path: PathBuf, reason: String },
}

/// What [`Log::open`] found.
#[derive(Debug)]
pub struct Replay {
    /// The revocations in force, ready to be shared with the request path.
    pub dict: Dictionary,
    /// Intact records read.
    pub records: usize,
    /// Revocations skipped because they had already expired.
    pub expired: usize,
    /// Damaged records in the middle of the file, skipped (each was warned about).
    pub corrupt: usize,
    /// Bytes of torn tail cut off the end of the file.
    pub truncated: usize,
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

/// Open an append-only file (log or journal), creating it and its folder, and read it whole.
/// First removes the `.tmp` sibling that compaction writes to, a leftover from a compaction
/// that died before its rename (the file itself is whole then). Returns the file, its bytes
/// and that `.tmp` path.
pub(crate) fn open_append_only(path: &Path) -> Result<(File, Vec<u8>, PathBuf), LogError> {
    let mut tmp: OsString = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp_path = PathBuf::from(tmp);
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err(path, "create folder"))?;
    }
    match fs::remove_file(&tmp_path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io_err(&tmp_path, "remove stale compaction file")(e))
        }
        _ => {}
    }
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_err(path, "open"))?;
    let size = file.metadata().map_or(0, |m| m.len());
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(io_err(path, "read"))?;
    Ok((file, bytes, tmp_path))
}

/// Make `file` hold only `magic`, durably (file and folder fsynced): for a new file, or one
/// whose creator died before its header was durable. Returns the bytes it now holds.
pub(crate) fn reset_to_header(
    file: &mut File,
    path: &Path,
    magic: &[u8],
) -> Result<Vec<u8>, LogError> {
    file.set_len(0).map_err(io_err(path, "truncate"))?;
    file.write_all(magic)
        .map_err(io_err(path, "write header"))?;
    file.sync_all().map_err(io_err(path, "fsync"))?;
    sync_parent(path).map_err(io_err(path, "fsync folder"))?;
    Ok(magic.to_vec())
}

/// A torn or damaged last record (a crash during a write) is cut off, durably, so the next
/// append lands on a record boundary; `good_end` is where the intact records end. `kind`
/// names the file in the warning.
pub(crate) fn cut_torn_tail(
    file: &File,
    path: &Path,
    kind: &'static str,
    good_end: u64,
    torn_bytes: usize,
    kept_records: usize,
) -> Result<(), LogError> {
    if torn_bytes == 0 {
        return Ok(());
    }
    tracing::warn!(
        path = %path.display(),
        file = kind,
        torn_bytes,
        kept_records,
        "{kind} ends in a torn or damaged record (crash during a write?); truncating to the last intact record"
    );
    file.set_len(good_end)
        .map_err(io_err(path, "truncate torn tail"))?;
    file.sync_all().map_err(io_err(path, "fsync"))
}

pub(crate) fn io_err<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Unix seconds now; a clock before 1970 counts as 0 (replay then drops nothing).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Makes a rename or a new directory entry in `path`'s folder durable.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

impl Log {
    /// Opens (creating it and its folder if missing) the log at `path` and replays it,
    /// keeping revocations that expired less than [`REPLAY_LEEWAY`] ago.
    pub fn open(path: impl AsRef<Path>) -> Result<(Log, Replay), LogError> {
        Self::open_at(path, now_unix(), REPLAY_LEEWAY)
    }

    /// [`Log::open`] with an explicit clock and leeway.
    ///
    /// A torn tail (a crash mid-write leaves a partial record, or full-size records that
    /// fail their checksum, at the very end) is warned about and cut off, so the next
    /// append lands on a record boundary. A damaged record followed by intact ones is
    /// skipped with a warning and left in place; earlier and later records all load, and
    /// the next compaction drops it. Skipping loses only that one change (if it was a
    /// revocation, that token is live again, which is why it is warned about), where
    /// stopping there would lose every change after it. A file that is not a log at all
    /// is refused and left untouched.
    pub fn open_at(
        path: impl AsRef<Path>,
        now: u64,
        leeway: u64,
    ) -> Result<(Log, Replay), LogError> {
        let path = path.as_ref().to_path_buf();
        let (mut file, mut bytes, tmp_path) = open_append_only(&path)?;
        match check_header(&bytes) {
            Err(source) => return Err(LogError::Header { path, source }),
            Ok(Header::Valid) => {}
            Ok(Header::Incomplete) => {
                // New file, or one whose creator died before the header was durable.
                bytes = reset_to_header(&mut file, &path, &MAGIC)?;
            }
        }
        let body = bytes.get(HEADER_LEN..).unwrap_or_default();

        // Sized up front: rehashing on the way to 1M entries would cost more than the
        // extra pass over the bytes.
        let (tokens, subjects) = estimate_live(body, now, leeway);
        let dict = Dictionary::with_capacity(tokens, subjects);
        let mut skipped = 0usize;
        let found = scan(body, |r| match r {
            Record::RevokeToken { exp, .. } | Record::RevokeSubject { expires: exp, .. }
                if expired(exp, now, leeway) =>
            {
                skipped += 1
            }
            r => r.apply(&dict),
        });
        drop(bytes);

        if found.corrupt > 0 {
            tracing::warn!(
                path = %path.display(),
                damaged = found.corrupt,
                "revocation log has damaged records between intact ones; skipped them \
                 (the changes they held are lost), the next compaction drops them"
            );
        }
        let good_end = (HEADER_LEN + found.good_len) as u64;
        cut_torn_tail(
            &file,
            &path,
            "revocation log",
            good_end,
            found.torn,
            found.records,
        )?;

        let log = Log {
            committer: Committer::new(path.clone(), file, good_end),
            path,
            tmp_path,
            compacting: Mutex::new(()),
        };
        let replay = Replay {
            dict,
            records: found.records,
            expired: skipped,
            corrupt: found.corrupt,
            truncated: found.torn,
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

    /// Whether the file has grown to more than twice what `live_entries` records need
    /// (plus 1 MiB, so small logs are left alone): the caller's cue to [`Log::compact`].
    pub fn needs_compaction(&self, live_entries: usize) -> bool {
        let live = (HEADER_LEN + live_entries * RECORD_LEN) as u64;
        self.len_bytes() > live.saturating_mul(2) + (1 << 20)
    }

    /// Appends records and returns once they are written and fsynced. Concurrent callers
    /// share one fsync (group commit).
    pub fn append(&self, records: &[Record]) -> Result<(), LogError> {
        self.committer.commit(records, None)
    }

    /// [`Log::append`], also applying the records to `dict` in the order they take in the
    /// file. Use this rather than touching the dictionary separately: with two concurrent
    /// admin calls on one key, the dictionary and the file could otherwise disagree on
    /// which came last, and a restart would silently flip the outcome. The change is
    /// visible to requests before it is durable; if the write then fails the caller gets
    /// the error, and the change holds until a restart.
    pub fn append_and_apply(&self, records: &[Record], dict: &Dictionary) -> Result<(), LogError> {
        self.committer.commit(records, Some(dict))
    }

    /// Rewrites the file to the entries of `dict` not expired at `now` (with `leeway`), so
    /// it stops growing with revocations that were undone or have lapsed.
    ///
    /// Crash-safe: the live set goes to `<path>.tmp`, which is fsynced, renamed over the log,
    /// and the folder fsynced; a crash at any point leaves either the old or the new file
    /// whole. Appends keep flowing during the rewrite; they are held up only for the final
    /// swap, which copies the records appended meanwhile, fsyncs, and renames. Some of
    /// those records may already show in the snapshot; replaying them over it is harmless,
    /// because an unrevoke is idempotent and a revoke keeps the later of two expiries, so a
    /// change applied twice in file order gives what applying it once does. `dict` must be the dictionary this log's
    /// [`Log::append_and_apply`] calls feed.
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
            let swap = self.swap(old, base, end, tmp);
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
    fn rewrite(&self, dict: &Dictionary, now: u64, leeway: u64) -> Result<(File, usize), LogError> {
        let tmp = &self.tmp_path;
        let _ = fs::remove_file(tmp);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(tmp)
            .map_err(io_err(tmp, "create"))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut live = 0usize;
        let mut write_err = out.write_all(&MAGIC).err();
        dict.for_each_live(now, leeway, |e| {
            if write_err.is_none() {
                live += 1;
                write_err = out.write_all(&Record::from(e).encode()).err();
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

    /// Copies the records appended between `base` and `end` from the old file, fsyncs,
    /// renames over the log, and fsyncs the folder. Runs with appends held.
    fn swap(&self, old: &File, base: u64, end: u64, tmp: File) -> Swap {
        swap_in(&self.path, &self.tmp_path, old, base, end, tmp)
    }
}

/// The end of a compaction, shared with the session journal: copies the bytes appended to
/// `old` between `base` and `end` onto the fsynced snapshot `tmp` (at `tmp_path`), fsyncs,
/// renames it over `path`, and fsyncs the folder. Runs with appends held.
pub(crate) fn swap_in(
    path: &Path,
    tmp_path: &Path,
    old: &File,
    base: u64,
    end: u64,
    tmp: File,
) -> Swap {
    let copy = || -> io::Result<u64> {
        let tail_len = end.saturating_sub(base);
        let mut tail = Vec::with_capacity(usize::try_from(tail_len).unwrap_or(0));
        let mut old = old;
        old.seek(SeekFrom::Start(base))?;
        old.take(tail_len).read_to_end(&mut tail)?;
        if tail.len() as u64 != tail_len {
            let msg = "log is shorter than what was written to it";
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg));
        }
        (&tmp).write_all(&tail)?;
        tmp.sync_data()?;
        tmp.metadata().map(|m| m.len())
    };
    let new_end = match copy() {
        Ok(n) => n,
        Err(e) => {
            let _ = fs::remove_file(tmp_path);
            return Swap::Keep(io_err(tmp_path, "copy appended records")(e));
        }
    };
    if let Err(e) = fs::rename(tmp_path, path) {
        let _ = fs::remove_file(tmp_path);
        return Swap::Keep(io_err(path, "rename compacted log")(e));
    }
    // If the folder is not synced the rename may not survive a crash, and appends to
    // the new file would be lost with it: the committer then refuses further writes.
    Swap::Replace {
        file: tmp,
        end: new_end,
        durable: sync_parent(path).map_err(io_err(path, "fsync folder")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::dict::{digest, Entry, Kind};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tracing::{span, Event, Level, Metadata};

    /// Counts WARN events, so tests can assert that a repair was reported.
    struct WarnCounter(Arc<AtomicUsize>);

    impl tracing::Subscriber for WarnCounter {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
            span::Id::from_u64(1)
        }
        fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
        fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
        fn event(&self, e: &Event<'_>) {
            if *e.metadata().level() == Level::WARN {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        fn enter(&self, _: &span::Id) {}
        fn exit(&self, _: &span::Id) {}
    }

    fn warnings<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let n = Arc::new(AtomicUsize::new(0));
        let out = tracing::subscriber::with_default(WarnCounter(Arc::clone(&n)), f);
        (out, n.load(Ordering::SeqCst))
    }

    const NOW: u64 = 1_000_000;

    fn open(path: &Path) -> (Log, Replay) {
        match Log::open_at(path, NOW, 0) {
            Ok(x) => x,
            Err(e) => panic!("open {}: {e}", path.display()),
        }
    }

    fn key(n: u64) -> crate::revocation::Key {
        digest(&n.to_le_bytes())
    }

    /// A mix of every record kind, all live at NOW.
    fn workload(n: u64) -> Vec<Record> {
        (0..n)
            .map(|i| match i % 10 {
                0..=5 => Record::RevokeToken {
                    key: key(i),
                    exp: NOW + i,
                },
                6 => Record::UnrevokeToken { key: key(i - 6) },
                7 | 8 => Record::RevokeSubject {
                    key: key(i),
                    revoked_before: i,
                    expires: NOW + 10 * i,
                },
                _ => Record::UnrevokeSubject { key: key(i - 1) },
            })
            .collect()
    }

    fn listing(d: &Dictionary) -> Vec<Entry> {
        let mut all = d.page(Kind::Token, None, usize::MAX);
        all.extend(d.page(Kind::Subject, None, usize::MAX));
        all
    }

    fn applied(records: &[Record]) -> Vec<Entry> {
        let d = Dictionary::new();
        records.iter().for_each(|r| r.apply(&d));
        listing(&d)
    }

    fn write_log(path: &Path, records: &[Record]) {
        let (log, _) = open(path);
        for chunk in records.chunks(7) {
            log.append(chunk).unwrap();
        }
    }

    #[test]
    fn reopen_rebuilds_the_same_dictionary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/revocations.log");
        let recs = workload(500);
        write_log(&path, &recs);
        let ((_, replay), warned) = warnings(|| open(&path));
        assert_eq!(warned, 0);
        assert_eq!(replay.records, 500);
        assert_eq!((replay.corrupt, replay.truncated), (0, 0));
        assert_eq!(listing(&replay.dict), applied(&recs));
        let size = fs::metadata(&path).unwrap().len();
        assert_eq!(size, (HEADER_LEN + 500 * RECORD_LEN) as u64);
    }

    #[test]
    fn replay_skips_expired_revocations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        let recs = [
            Record::RevokeToken {
                key: key(1),
                exp: NOW - 100,
            },
            Record::RevokeToken {
                key: key(2),
                exp: NOW + 1,
            },
            Record::RevokeSubject {
                key: key(3),
                revoked_before: 1,
                expires: NOW - 100,
            },
        ];
        write_log(&path, &recs);
        let (_, r) = open(&path);
        assert_eq!(
            (r.dict.len_tokens(), r.dict.len_subjects(), r.expired),
            (1, 0, 2)
        );
        // Within the leeway they are still in force.
        let (_, r) = Log::open_at(&path, NOW, 100).unwrap();
        assert_eq!(
            (r.dict.len_tokens(), r.dict.len_subjects(), r.expired),
            (2, 1, 0)
        );
    }

    #[test]
    fn torn_last_record_is_cut_at_every_offset_and_the_log_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("full.log");
        let recs = workload(40);
        write_log(&full, &recs);
        let bytes = fs::read(&full).unwrap();
        let last_start = HEADER_LEN + 39 * RECORD_LEN;
        assert_eq!(bytes.len(), last_start + RECORD_LEN);

        for cut in 0..RECORD_LEN {
            let path = dir.path().join(format!("cut{cut}.log"));
            fs::write(&path, &bytes[..last_start + cut]).unwrap();
            let ((log, replay), warned) = warnings(|| open(&path));
            assert_eq!(replay.records, 39, "cut {cut}");
            assert_eq!(replay.truncated, cut);
            assert_eq!(warned, usize::from(cut > 0), "cut {cut}");
            assert_eq!(listing(&replay.dict), applied(&recs[..39]));
            assert_eq!(fs::metadata(&path).unwrap().len(), last_start as u64);

            log.append(&recs[39..]).unwrap();
            drop(log);
            let ((_, replay), warned) = warnings(|| open(&path));
            assert_eq!((replay.records, warned), (40, 0), "cut {cut}");
            assert_eq!(listing(&replay.dict), applied(&recs));
            assert_eq!(fs::read(&path).unwrap(), bytes);
        }
    }

    #[test]
    fn damaged_whole_records_at_the_end_are_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        let recs = workload(10);
        write_log(&path, &recs);
        // A crash can extend the file before the data lands: zeros where records should be.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0u8; 2 * RECORD_LEN + 5]).unwrap();
        drop(f);
        let ((_, replay), warned) = warnings(|| open(&path));
        assert_eq!(
            (replay.records, replay.corrupt, replay.truncated),
            (10, 0, 2 * RECORD_LEN + 5)
        );
        assert_eq!(warned, 1);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            (HEADER_LEN + 10 * RECORD_LEN) as u64
        );
    }

    #[test]
    fn damaged_middle_record_is_skipped_and_later_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        let recs = workload(20);
        write_log(&path, &recs);
        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER_LEN + 4 * RECORD_LEN + 20] ^= 0x40; // record 4 (a RevokeToken)
        fs::write(&path, &bytes).unwrap();

        let ((log, replay), warned) = warnings(|| open(&path));
        assert_eq!(warned, 1);
        assert_eq!(
            (replay.records, replay.corrupt, replay.truncated),
            (19, 1, 0)
        );
        let mut without = recs.clone();
        without.remove(4);
        assert_eq!(listing(&replay.dict), applied(&without));
        // Left in place (only compaction rewrites the file)...
        assert_eq!(fs::read(&path).unwrap(), bytes);
        // ...and appends still land after it.
        let extra = Record::RevokeToken {
            key: key(999),
            exp: NOW + 5,
        };
        log.append_and_apply(&[extra], &replay.dict).unwrap();
        log.compact(&replay.dict, NOW, 0).unwrap();
        drop(log);
        let ((_, again), warned) = warnings(|| open(&path));
        assert_eq!((again.corrupt, warned), (0, 0));
        without.push(extra);
        assert_eq!(listing(&again.dict), applied(&without));
    }

    #[test]
    fn compaction_keeps_the_live_set_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        let mut recs = workload(300);
        recs.push(Record::RevokeToken {
            key: key(7777),
            exp: NOW - 10,
        });
        recs.push(Record::RevokeSubject {
            key: key(8888),
            revoked_before: 1,
            expires: NOW - 10,
        });
        let (log, replay) = open(&path);
        log.append_and_apply(&recs, &replay.dict).unwrap();
        let before = log.len_bytes();
        let stats = log.compact(&replay.dict, NOW, 0).unwrap();
        drop(log);

        let live: Vec<Entry> = applied(&recs)
            .into_iter()
            .filter(|e| e.key() != key(7777) && e.key() != key(8888))
            .collect();
        assert_eq!(stats.live, live.len());
        assert_eq!(stats.bytes_before, before);
        assert_eq!(
            stats.bytes_after,
            (HEADER_LEN + live.len() * RECORD_LEN) as u64
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), stats.bytes_after);
        let (_, again) = Log::open_at(&path, NOW, 1000).unwrap();
        assert_eq!(again.expired, 0, "expired entries were not written");
        assert_eq!(listing(&again.dict), live);
        assert!(!Path::new(&format!("{}.tmp", path.display())).exists());
    }

    #[test]
    fn appends_during_compaction_survive_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        let (log, replay) = open(&path);
        let dict = replay.dict;
        log.append_and_apply(&workload(2000), &dict).unwrap();
        let recs: Vec<Vec<Record>> = (0..4u64)
            .map(|t| workload(400).into_iter().map(|r| shift(r, t)).collect())
            .collect();
        std::thread::scope(|s| {
            for mine in &recs {
                let (log, dict) = (&log, &dict);
                s.spawn(move || {
                    for r in mine {
                        log.append_and_apply(std::slice::from_ref(r), dict).unwrap();
                    }
                });
            }
            for _ in 0..5 {
                log.compact(&dict, NOW, 0).unwrap();
            }
        });
        drop(log);
        let (_, again) = open(&path);
        assert_eq!(listing(&again.dict), listing(&dict));
        assert!(again.dict.len_tokens() > 4 * 200);
    }

    /// Moves a record to keys of its own per thread.
    fn shift(r: Record, t: u64) -> Record {
        let k = |k: crate::revocation::Key| {
            let mut k = k;
            k[0] ^= 0x80 | t as u8;
            k
        };
        match r {
            Record::RevokeToken { key, exp } => Record::RevokeToken { key: k(key), exp },
            Record::UnrevokeToken { key } => Record::UnrevokeToken { key: k(key) },
            Record::RevokeSubject {
                key,
                revoked_before,
                expires,
            } => Record::RevokeSubject {
                key: k(key),
                revoked_before,
                expires,
            },
            Record::UnrevokeSubject { key } => Record::UnrevokeSubject { key: k(key) },
        }
    }

    #[test]
    fn a_file_that_is_not_a_log_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        fs::write(&path, b"[revocation]\nstore = \"x\"\n").unwrap();
        let err = Log::open_at(&path, NOW, 0).unwrap_err();
        assert!(
            matches!(
                err,
                LogError::Header {
                    source: HeaderError::NotALog,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap(), b"[revocation]\nstore = \"x\"\n");
    }

    #[test]
    fn partial_header_and_stale_tmp_are_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        fs::write(&path, &MAGIC[..3]).unwrap();
        let tmp = dir.path().join("r.log.tmp");
        fs::write(&tmp, b"half a compaction").unwrap();
        let (log, replay) = open(&path);
        assert_eq!(replay.records, 0);
        assert!(!tmp.exists());
        assert_eq!(fs::read(&path).unwrap(), MAGIC);
        log.append(&workload(3)).unwrap();
        drop(log);
        assert_eq!(open(&path).1.records, 3);
    }

    #[test]
    fn needs_compaction_tracks_dead_weight() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(&dir.path().join("r.log"));
        let churn: Vec<Record> = (0..40_000)
            .flat_map(|i| {
                [
                    Record::RevokeToken {
                        key: key(i),
                        exp: NOW,
                    },
                    Record::UnrevokeToken { key: key(i) },
                ]
            })
            .collect();
        assert!(!log.needs_compaction(0));
        log.append(&churn).unwrap();
        assert!(log.needs_compaction(0));
        assert!(!log.needs_compaction(80_000));
    }
}
