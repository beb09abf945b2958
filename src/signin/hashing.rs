//! Where password hashes are verified: a few dedicated threads at the lowest CPU priority.
//!
//! An argon2id verification is tens of milliseconds of pure CPU by design. Run on tokio's
//! blocking pool at normal priority, a storm of failed logins (50 clients, measured with
//! `scripts/bench-login-storm.py`) takes both cores of a small machine and multiplies the
//! p99 of proxied requests by 12. These threads lower their own nice value to 19 (Linux
//! keeps nice per thread), so the scheduler gives the request path's threads the CPU first
//! and hashing gets what is left; logins slow down under load instead of everything else.
//! There are fewer of them than cores ([`super::default_concurrent_hashes`]): even at the
//! lowest priority, a core busy hashing delays the wake-up of a request thread placed on it.
//! SCHED_IDLE was tried and is worse here: the scheduler counts a core running only
//! SCHED_IDLE work as idle and places request threads there, to wait for the preemption.
//! The semaphore in [`super::SignIn`] bounds how many verifications wait here.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};

/// Nice value of the hashing threads: the lowest priority (Linux range -20..=19).
pub const HASHING_NICE: i32 = 19;

type Job = Box<dyn FnOnce() + Send>;

/// The pool. Dropping it lets its threads finish the jobs already queued, then exit.
#[derive(Debug)]
pub struct HashPool {
    jobs: Mutex<Sender<Job>>,
}

/// The pool's threads are gone (they could not be started, or a job panicked in each).
#[derive(Debug, thiserror::Error)]
#[error("the password hashing threads are not running")]
pub struct PoolGone;

impl HashPool {
    /// Start `threads` hashing threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<HashPool> {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("portcullis-hash-{i}"))
                .spawn(move || work(&rx))?;
        }
        Ok(HashPool {
            jobs: Mutex::new(tx),
        })
    }

    /// Run `f` on a hashing thread and wait for its result without blocking the runtime.
    pub async fn run<T, F>(&self, f: F) -> Result<T, PoolGone>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(job)
            .map_err(|_| PoolGone)?;
        rx.await.map_err(|_| PoolGone)
    }
}

fn work(jobs: &Mutex<Receiver<Job>>) {
    lower_priority();
    loop {
        // The lock is held only while taking a job, never while running one.
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match job {
            Ok(job) => job(),
            Err(_) => return, // the pool was dropped
        }
    }
}

/// Lower the calling thread's CPU priority. Best effort: where it fails (another OS, a
/// sandbox that forbids it), hashing still works, at normal priority.
// The one unsafe block outside tests: libc has no safe wrapper for per-thread priority.
#[allow(unsafe_code)]
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take no pointers; on Linux, PRIO_PROCESS with a
        // thread id sets that thread's nice value only.
        let ok = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, HASHING_NICE) == 0
        };
        if !ok {
            tracing::debug!("could not lower the priority of a password hashing thread");
        }
    }
}

#[cfg(test)]
#[allow(unsafe_code)] // reads thread priorities back through libc (see each SAFETY note)
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_low_priority_threads_and_return_their_result() {
        let pool = HashPool::new(2).unwrap();
        let (name, nice) = pool
            .run(|| {
                let name = std::thread::current().name().map(str::to_owned);
                // SAFETY: reads the calling thread's nice value; no pointers.
                #[cfg(target_os = "linux")]
                let nice = unsafe {
                    let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::getpriority(libc::PRIO_PROCESS, tid)
                };
                #[cfg(not(target_os = "linux"))]
                let nice = HASHING_NICE;
                (name, nice)
            })
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("portcullis-hash-"));
        assert_eq!(nice, HASHING_NICE);
        // The runtime's own thread kept its priority.
        #[cfg(target_os = "linux")]
        assert_ne!(
            unsafe {
                libc::getpriority(
                    libc::PRIO_PROCESS,
                    libc::syscall(libc::SYS_gettid) as libc::id_t,
                )
            },
            HASHING_NICE
        );
    }

    #[tokio::test]
    async fn many_jobs_on_few_threads_all_complete() {
        let pool = HashPool::new(1).unwrap();
        let mut sum = 0;
        for i in 0..20u64 {
            sum += pool.run(move || i * 2).await.unwrap();
        }
        assert_eq!(sum, 380);
    }
}
