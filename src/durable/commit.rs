//! Group commit for an append-only store file: the open file handle, and the batching that
//! lets many concurrent appends share one write and one fsync.
//!
//! Callers add their encoded records to `pending`; whoever finds no batch being written
//! becomes the leader, takes everything pending as one batch, and writes and fsyncs it
//! outside the lock while later callers gather the next batch. A caller returns once the
//! batch holding its records is durable. No thread of its own: the callers do the work.
//!
//! A failed write (disk full, an I/O error) fails its batch and puts the file in a degraded
//! state: appends fail at once until a back-off delay has passed (100 ms doubling to 5 s),
//! then the next batch, or [`Committer::probe`], tries again. A retry first cuts the file
//! back to the end of the last durable batch, because after a failed write or fsync nothing
//! is known about what of the failed batch reached the disk; every batch before it was
//! fsynced, so it is still there.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{DurableError, Swap};

/// First wait after a failed write, doubled on each failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Failed batch numbers remembered for their waiters.
const REMEMBERED_FAILURES: u64 = 4096;

pub struct Committer {
    /// For error messages.
    path: PathBuf,
    state: Mutex<State>,
    /// Signalled when a batch is finished and when a file swap ends.
    changed: Condvar,
}

struct Degraded {
    reason: String,
    retry_at: Instant,
    backoff: Duration,
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
    /// Recent failed batches and why.
    failures: BTreeMap<u64, String>,
    /// The last write failed; set until a retry succeeds.
    degraded: Option<Degraded>,
    /// The file may not be the one under the store's name (a rename whose folder fsync
    /// failed): nothing more is written until a restart.
    fatal: Option<String>,
}

impl Committer {
    pub fn new(path: PathBuf, file: File, end: u64) -> Self {
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
                failures: BTreeMap::new(),
                degraded: None,
                fatal: None,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the state is still
        // consistent enough to report failures, so carry on rather than propagate.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(st)
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn fatal(&self, reason: &str) -> DurableError {
        DurableError::Failed {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    fn write_failed(&self, reason: &str) -> DurableError {
        DurableError::WriteFailed {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    /// The file length including every batch handed to a writer, or the fatal failure.
    pub fn end(&self) -> Result<u64, DurableError> {
        let st = self.lock();
        match &st.fatal {
            Some(reason) => Err(self.fatal(reason)),
            None => Ok(st.end),
        }
    }

    /// Whether the last write failed and no retry has succeeded yet (or writes stopped
    /// for good): what readiness and the degraded gauge report.
    pub fn is_degraded(&self) -> bool {
        let st = self.lock();
        st.degraded.is_some() || st.fatal.is_some()
    }

    /// Runs `queue` under the committer's lock, where it appends encoded records to the
    /// pending batch (and applies them to whatever in-memory state they describe, which
    /// therefore changes in file order), and returns its result once those bytes are
    /// written and fsynced. When `queue` appends nothing, returns at once.
    pub fn commit_with<T>(&self, queue: impl FnOnce(&mut Vec<u8>) -> T) -> Result<T, DurableError> {
        let mut st = self.lock();
        if let Some(reason) = &st.fatal {
            return Err(self.fatal(reason));
        }
        if let Some(d) = &st.degraded {
            if Instant::now() < d.retry_at && !st.writing {
                // Fail fast while backing off; nothing was queued, so nothing changed.
                return Err(DurableError::Refused {
                    path: self.path.clone(),
                    reason: d.reason.clone(),
                });
            }
        }
        let before = st.pending.len();
        let out = queue(&mut st.pending);
        if st.pending.len() == before {
            return Ok(out);
        }
        let mine = st.open_batch;
        loop {
            if st.done_batch >= mine {
                return match st.failures.get(&mine) {
                    Some(reason) => Err(self.write_failed(reason)),
                    None => Ok(out),
                };
            }
            if let Some(reason) = &st.fatal {
                return Err(self.fatal(reason));
            }
            if !st.writing && !st.hold {
                // Nobody is writing, so every earlier batch is done and `mine` is the open one.
                let batch = std::mem::take(&mut st.pending);
                st.open_batch += 1;
                let start = st.end;
                let retrying = st.degraded.is_some();
                if let Some(d) = &st.degraded {
                    if Instant::now() < d.retry_at {
                        let reason = d.reason.clone();
                        self.finish(&mut st, mine, Some(reason));
                        continue;
                    }
                }
                st.writing = true;
                st.end += batch.len() as u64;
                let file = Arc::clone(&st.file);
                drop(st);

                let result = (|| {
                    if retrying {
                        // What the failed batch left behind is of unknown content.
                        file.set_len(start)?;
                    }
                    (&*file).write_all(&batch)?;
                    file.sync_data()
                })();

                st = self.lock();
                st.writing = false;
                let failure = result.err().map(|e| {
                    st.end = start;
                    e.to_string()
                });
                self.finish(&mut st, mine, failure);
                continue;
            }
            st = self.wait(st);
        }
    }

    /// Marks `batch` finished, failed with `failure` or durable, and wakes its waiters.
    fn finish(&self, st: &mut State, batch: u64, failure: Option<String>) {
        st.done_batch = batch;
        match failure {
            None => {
                if st.degraded.take().is_some() {
                    tracing::info!(path = %self.path.display(), "store file writable again");
                }
            }
            Some(reason) => {
                self.degrade(st, &reason);
                st.failures.insert(batch, reason);
            }
        }
        let keep_from = batch.saturating_sub(REMEMBERED_FAILURES);
        st.failures = st.failures.split_off(&keep_from);
        self.changed.notify_all();
    }

    fn degrade(&self, st: &mut State, reason: &str) {
        let backoff = match &st.degraded {
            Some(d) => (d.backoff * 2).min(MAX_BACKOFF),
            None => FIRST_BACKOFF,
        };
        if st.degraded.is_none() {
            tracing::error!(path = %self.path.display(), error = %reason,
                "store file write failed; answering 503 to changes and retrying with back-off");
        }
        st.degraded = Some(Degraded {
            reason: reason.to_string(),
            retry_at: Instant::now() + backoff,
            backoff,
        });
    }

    /// While degraded and past the back-off delay, checks whether the file takes writes
    /// again without waiting for a change to arrive: writes and fsyncs a 4 KiB sibling file
    /// (`<path>.probe`, removed again) and cuts the store back to its last durable batch.
    /// Returns whether the store is healthy afterwards.
    pub fn probe(&self) -> bool {
        let mut st = self.lock();
        if st.fatal.is_some() {
            return false;
        }
        match &st.degraded {
            None => return true,
            Some(d) if st.writing || st.hold || Instant::now() < d.retry_at => return false,
            Some(_) => {}
        }
        let mut probe_path = self.path.clone().into_os_string();
        probe_path.push(".probe");
        let probe_path = PathBuf::from(probe_path);
        let result = (|| {
            let mut f = File::create(&probe_path)?;
            f.write_all(&[0u8; 4096])?;
            f.sync_data()?;
            st.file.set_len(st.end)?;
            st.file.sync_data()
        })();
        let _ = std::fs::remove_file(&probe_path);
        match result {
            Ok(()) => {
                st.degraded = None;
                tracing::info!(path = %self.path.display(), "store file writable again");
                true
            }
            Err(e) => {
                self.degrade(&mut st, &e.to_string());
                false
            }
        }
    }

    /// Runs `swap` with no batch in flight and none allowed to start, passing it the current
    /// file and its length, and installs the file it returns. Returns how long appends were
    /// held up.
    pub fn swap(
        &self,
        swap: impl FnOnce(&File, u64) -> Swap,
    ) -> (Duration, Result<(), DurableError>) {
        let mut st = self.lock();
        st.hold = true;
        while st.writing {
            st = self.wait(st);
        }
        let held = Instant::now();
        let result = match &st.fatal {
            Some(reason) => Err(self.fatal(reason)),
            None => match swap(&st.file, st.end) {
                Swap::Keep(e) => Err(e),
                Swap::Replace { file, end, durable } => {
                    st.file = Arc::new(file);
                    st.end = end;
                    // The new file holds every durable record and nothing else.
                    st.degraded = None;
                    if let Err(e) = &durable {
                        st.fatal.get_or_insert(e.to_string());
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
