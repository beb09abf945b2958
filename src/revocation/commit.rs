//! Group commit for the revocation log (and the sign-in session journal): the open file handle, and the batching that lets
//! many concurrent appends share one write and one fsync.
//!
//! Callers add their encoded records to `pending`; whoever finds no batch being written
//! becomes the leader, takes everything pending as one batch, and writes and fsyncs it
//! outside the lock while later callers gather the next batch. A caller returns once the
//! batch holding its records is durable. No thread of its own: the callers do the work.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::dict::Dictionary;
use super::log::LogError;
use super::record::{Record, RECORD_LEN};

pub(crate) struct Committer {
    /// For error messages.
    path: PathBuf,
    state: Mutex<State>,
    /// Signalled when a batch is finished and when a file swap ends.
    changed: Condvar,
}

struct State {
    /// Opened in append mode; the leader writes through its own clone of the `Arc`.
    file: Arc<File>,
    /// File length once every batch handed to a leader is written.
    end: u64,
    pending: Vec<u8>,
    /// Number of the batch that `pending` will be written as.
    open_batch: u64,
    /// Every batch up to this one is finished (durable, or failed).
    done_batch: u64,
    /// A leader is writing a batch.
    writing: bool,
    /// A file swap is waiting for the batch in flight: no new batch may start, or a steady
    /// stream of appends could keep the swap waiting indefinitely.
    hold: bool,
    /// The first failed batch and why; nothing is written after it.
    failed: Option<(u64, String)>,
}

/// What a swap closure decided.
pub(crate) enum Swap {
    /// Nothing changed; appends go on to the old file.
    Keep(LogError),
    /// The new file is in place under the log's name: appends go to it from now on. If
    /// `durable` is an error, the switch may not survive a crash, so the committer stops
    /// accepting writes.
    Replace {
        file: File,
        end: u64,
        durable: Result<(), LogError>,
    },
}

impl Committer {
    pub(crate) fn new(path: PathBuf, file: File, end: u64) -> Self {
        Committer {
            path,
            state: Mutex::new(State {
                file: Arc::new(file),
                end,
                pending: Vec::new(),
                open_batch: 1,
                done_batch: 0,
                writing: false,
                hold: false,
                failed: None,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the state is still
        // consistent enough to report `failed`, so carry on rather than propagate.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(st)
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn failed(&self, reason: &str) -> LogError {
        LogError::Failed {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    /// The file length including every batch handed to a writer, or the earlier failure.
    pub(crate) fn end(&self) -> Result<u64, LogError> {
        let st = self.lock();
        match &st.failed {
            Some((_, reason)) => Err(self.failed(reason)),
            None => Ok(st.end),
        }
    }

    /// Appends `records` (applying them to `dict` in file order, if given) and returns once
    /// they are written and fsynced.
    pub(super) fn commit(
        &self,
        records: &[Record],
        dict: Option<&Dictionary>,
    ) -> Result<(), LogError> {
        if records.is_empty() {
            return Ok(());
        }
        self.commit_with(|pending| {
            pending.reserve(records.len() * RECORD_LEN);
            for r in records {
                pending.extend_from_slice(&r.encode());
                if let Some(dict) = dict {
                    r.apply(dict);
                }
            }
        })
    }

    /// Runs `queue` under the committer's lock, where it appends encoded records to the
    /// pending batch (and applies them to whatever in-memory state they describe, which
    /// therefore changes in file order), and returns its result once those bytes are
    /// written and fsynced. Nothing runs after an earlier failure. When `queue` appends
    /// nothing, returns at once. The session journal (`signin::sessions::journal`) shares
    /// this group commit.
    pub(crate) fn commit_with<T>(
        &self,
        queue: impl FnOnce(&mut Vec<u8>) -> T,
    ) -> Result<T, LogError> {
        let mut st = self.lock();
        if let Some((_, reason)) = &st.failed {
            return Err(self.failed(reason));
        }
        let before = st.pending.len();
        let out = queue(&mut st.pending);
        if st.pending.len() == before {
            return Ok(out);
        }
        let mine = st.open_batch;
        loop {
            if let Some((batch, reason)) = &st.failed {
                // Batches before the failure are durable; anything later was never written.
                if st.done_batch >= mine && mine < *batch {
                    return Ok(out);
                }
                return Err(self.failed(reason));
            }
            if st.done_batch >= mine {
                return Ok(out);
            }
            if !st.writing && !st.hold {
                // Nobody is writing, so every earlier batch is done and `mine` is the open one.
                let batch = std::mem::take(&mut st.pending);
                st.open_batch += 1;
                st.writing = true;
                st.end += batch.len() as u64;
                let file = Arc::clone(&st.file);
                drop(st);

                let result = (&*file).write_all(&batch).and_then(|()| file.sync_data());

                st = self.lock();
                st.writing = false;
                st.done_batch = mine;
                if let Err(e) = result {
                    tracing::error!(path = %self.path.display(), error = %e,
                        "store file write failed; refusing further writes");
                    st.failed.get_or_insert((mine, e.to_string()));
                }
                self.changed.notify_all();
                continue;
            }
            st = self.wait(st);
        }
    }

    /// Runs `swap` with no batch in flight and none allowed to start, passing it the current
    /// file and its length, and installs the file it returns. Returns how long appends were
    /// held up.
    pub(crate) fn swap(
        &self,
        swap: impl FnOnce(&File, u64) -> Swap,
    ) -> (Duration, Result<(), LogError>) {
        let mut st = self.lock();
        st.hold = true;
        while st.writing {
            st = self.wait(st);
        }
        let held = Instant::now();
        let result = match &st.failed {
            Some((_, reason)) => Err(self.failed(reason)),
            None => match swap(&st.file, st.end) {
                Swap::Keep(e) => Err(e),
                Swap::Replace { file, end, durable } => {
                    st.file = Arc::new(file);
                    st.end = end;
                    if let Err(e) = &durable {
                        let batch = st.open_batch;
                        st.failed.get_or_insert((batch, e.to_string()));
                    }
                    durable
                }
            },
        };
        st.hold = false;
        let held = held.elapsed();
        drop(st);
        self.changed.notify_all();
        (held, result)
    }
}

#[cfg(test)]
mod tests {
    use super::super::dict::digest;
    use super::super::log::Log;
    use super::*;

    #[test]
    fn concurrent_appends_from_8_threads_are_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        let (log, _) = Log::open_at(&path, 0, 0).unwrap();
        let key = |t: u64, i: u64| digest(&(t * 1000 + i).to_le_bytes());
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let log = &log;
                s.spawn(move || {
                    for i in 0..50 {
                        let r = Record::RevokeToken {
                            key: key(t, i),
                            exp: 10 + i,
                        };
                        log.append(&[r]).unwrap();
                    }
                });
            }
        });
        drop(log);
        let (_, replay) = Log::open_at(&path, 0, 0).unwrap();
        assert_eq!(replay.records, 400);
        for t in 0..8u64 {
            for i in 0..50 {
                assert!(replay.dict.is_revoked(key(t, i), None, None).is_some());
            }
        }
    }

    #[test]
    fn dictionary_follows_file_order_under_contention() {
        // Each round, threads released together revoke and unrevoke one key; the dictionary
        // must then agree with the last record the file holds for it, as a replay would.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        let (log, replay) = Log::open_at(&path, 0, 0).unwrap();
        let dict = replay.dict;
        let key = digest(b"contended");
        for round in 0..100 {
            let start = std::sync::Barrier::new(4);
            std::thread::scope(|s| {
                for t in 0..4 {
                    let (log, dict, start) = (&log, &dict, &start);
                    s.spawn(move || {
                        let r = if t % 2 == 0 {
                            Record::RevokeToken { key, exp: 99 }
                        } else {
                            Record::UnrevokeToken { key }
                        };
                        start.wait();
                        log.append_and_apply(&[r], dict).unwrap();
                    });
                }
            });
            let bytes = std::fs::read(&path).unwrap();
            let (records, _) = super::super::record::decode_file(&bytes).unwrap();
            let revoked_on_disk = matches!(records.last(), Some(Record::RevokeToken { .. }));
            let revoked_in_memory = dict.is_revoked(key, None, None).is_some();
            assert_eq!(revoked_in_memory, revoked_on_disk, "round {round}");
        }
    }
}
