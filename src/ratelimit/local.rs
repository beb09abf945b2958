//! Local token buckets as GCRA (the generic cell rate algorithm, ITU-T I.371): one `u64` per
//! key, the theoretical arrival time of the next request, updated by compare-and-swap. A
//! bucket that has refilled completely carries no information and is dropped by a sweep the
//! request path runs when the map has doubled since the last one, so memory follows the
//! keys active within one burst period, not every key ever seen.
//!
//! Keys are 64-bit hashes under a per-process random key (SipHash via `RandomState`): the
//! map never stores a user id, and a client cannot aim two ids at one bucket.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use dashmap::DashMap;

use super::RateSpec;

/// Sweep no earlier than this many buckets (a sweep walks every shard).
const MIN_SWEEP_AT: usize = 4096;

/// The outcome of one request against its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused; the bucket admits the next request after this many seconds (at least 1).
    Deny {
        retry_after_secs: u64,
    },
}

/// The buckets of one route.
pub struct Limiter {
    pub spec: RateSpec,
    interval: u64,
    /// `burst * interval`: how far ahead of now the arrival time may run.
    tolerance: u64,
    buckets: DashMap<u64, u64>,
    hasher: std::collections::hash_map::RandomState,
    epoch: Instant,
    next_sweep: AtomicUsize,
    /// Buckets dropped by sweeps (for tests and metrics).
    pub dropped: AtomicU64,
}

impl Limiter {
    pub fn new(spec: RateSpec) -> Limiter {
        let interval = spec.interval_nanos();
        Limiter {
            spec,
            interval,
            tolerance: interval.saturating_mul(spec.burst),
            buckets: DashMap::new(),
            hasher: std::collections::hash_map::RandomState::new(),
            epoch: Instant::now(),
            next_sweep: AtomicUsize::new(MIN_SWEEP_AT),
            dropped: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since this limiter was made (monotonic).
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Spend one request of `key`'s budget.
    pub fn check(&self, key: &[u8]) -> Decision {
        self.check_at(key, self.now())
    }

    /// [`Limiter::check`] at a given time (nanoseconds on this limiter's clock).
    pub fn check_at(&self, key: &[u8], now: u64) -> Decision {
        let h = self.hasher.hash_one(key);
        let decision = {
            let mut tat = self.buckets.entry(h).or_insert(now);
            let (d, next) = gcra(*tat, now, self.interval, self.tolerance);
            *tat = next;
            d
        };
        let len = self.buckets.len();
        if len >= self.next_sweep.load(Ordering::Relaxed) {
            self.sweep(now);
        }
        decision
    }

    /// Drop every bucket that has refilled completely by `now`.
    pub fn sweep(&self, now: u64) {
        let before = self.buckets.len();
        self.buckets.retain(|_, tat| *tat > now);
        let after = self.buckets.len();
        self.dropped
            .fetch_add((before - after.min(before)) as u64, Ordering::Relaxed);
        self.next_sweep
            .store((after * 2).max(MIN_SWEEP_AT), Ordering::Relaxed);
    }

    /// Buckets held right now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// One GCRA step: from the stored arrival time `tat`, admit at `now` or not; returns the
/// decision and the arrival time to store.
pub fn gcra(tat: u64, now: u64, interval: u64, tolerance: u64) -> (Decision, u64) {
    let next = tat.max(now).saturating_add(interval);
    if next - now <= tolerance {
        (Decision::Allow, next)
    } else {
        let wait = next - now - tolerance;
        (
            Decision::Deny {
                retry_after_secs: wait.div_ceil(1_000_000_000).max(1),
            },
            tat,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::Per;
    use std::time::Duration;

    const SEC: u64 = 1_000_000_000;

    fn limiter(quota: u64, secs: u64, burst: u64) -> Limiter {
        Limiter::new(RateSpec {
            per: Per::User,
            quota,
            window: Duration::from_secs(secs),
            burst,
        })
    }

    #[test]
    fn burst_then_steady_rate() {
        let l = limiter(10, 1, 5);
        for i in 0..5 {
            assert_eq!(l.check_at(b"a", SEC), Decision::Allow, "burst {i}");
        }
        assert_eq!(
            l.check_at(b"a", SEC),
            Decision::Deny {
                retry_after_secs: 1
            }
        );
        // Another key has its own bucket.
        assert_eq!(l.check_at(b"b", SEC), Decision::Allow);
        // One interval (100 ms) later one more is admitted, not two.
        assert_eq!(l.check_at(b"a", SEC + SEC / 10), Decision::Allow);
        assert!(matches!(
            l.check_at(b"a", SEC + SEC / 10),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn admitted_over_a_long_run_is_rate_times_time_plus_burst() {
        let l = limiter(100, 1, 20);
        let mut ok = 0;
        // 10 s at 400 requests/s.
        for i in 0..4000u64 {
            if l.check_at(b"u", i * SEC / 400) == Decision::Allow {
                ok += 1;
            }
        }
        assert!((1000..=1020).contains(&ok), "{ok}");
    }

    #[test]
    fn retry_after_counts_whole_seconds() {
        let l = limiter(1, 60, 1);
        assert_eq!(l.check_at(b"a", 0), Decision::Allow);
        assert_eq!(
            l.check_at(b"a", SEC),
            Decision::Deny {
                retry_after_secs: 59
            }
        );
    }

    #[test]
    fn idle_buckets_are_swept() {
        let l = limiter(10, 1, 1);
        for i in 0..(MIN_SWEEP_AT as u64 - 1) {
            l.check_at(&i.to_le_bytes(), 0);
        }
        assert_eq!(l.len(), MIN_SWEEP_AT - 1);
        // Much later every bucket is full again: the next new key triggers the sweep.
        l.check_at(b"late", 10 * SEC);
        assert_eq!(l.len(), 1, "only the fresh bucket is left");
        assert_eq!(l.dropped.load(Ordering::Relaxed), MIN_SWEEP_AT as u64 - 1);
    }
}
