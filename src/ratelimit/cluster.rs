//! Fleet-wide rate limits (cluster mode): the GCRA bucket of each key lives in the Redis that
//! holds the revocations, so every gateway instance spends from the same budget.
//!
//! One Lua script ([`GCRA_SCRIPT`]) reads the bucket, decides and writes it back atomically (a
//! script runs alone on the server), with Redis `TIME` as the clock: instances whose clocks
//! disagree still agree on every bucket. A bucket is one string, `P:rl:<route>:<sha256 hex of
//! the key>` (`P` is `[revocation] key_prefix`), holding the theoretical arrival time in
//! microseconds and expiring when the bucket would be full again, so Redis keeps only the
//! keys active within one burst period. The key is a SHA-256 so every instance names the same
//! bucket without Redis ever holding a user id.
//!
//! A rate limit never fails closed: when Redis does not answer (down, unreachable, slower
//! than [`CALL_TIMEOUT`]) the caller decides with its local limiter instead ([`Fleet::check`]
//! returns `None`). After a failure Redis is left alone for [`RETRY_AFTER`], then one request
//! at a time probes it, on a connection asked afresh from the revocation store (which knows
//! the current master after a Sentinel failover), while the others stay local: an outage
//! costs the request path one atomic load. The first failure of an outage is logged, and so
//! is the recovery.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

use super::{Decision, RateSpec};

/// Longest wait for one Redis answer on the request path before the local limiter decides.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failed call, how long requests go straight to the local limiter.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// GCRA on Redis: `KEYS[1]` the bucket, `ARGV[1]` the emission interval and `ARGV[2]` the
/// tolerance (`burst * interval`), both in microseconds. Returns `{1, 0}` (admitted) or
/// `{0, wait}` (refused; microseconds until a request would be admitted).
pub const GCRA_SCRIPT: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
if tat < now then tat = now end
local nxt = tat + interval
if nxt - now <= tolerance then
  redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.floor((nxt - now) / 1000) + 1)
  return {1, 0}
end
return {0, nxt - now - tolerance}
"#;

/// Makes a connection to the Redis that holds the buckets (the current master).
pub type Link = Box<dyn Fn() -> Result<ConnectionManager, String> + Send + Sync>;

/// The Redis side of every limited route of one instance.
pub struct Fleet {
    conn: ArcSwap<ConnectionManager>,
    link: Link,
    /// `P:rl:`.
    root: String,
    script: redis::Script,
    epoch: Instant,
    /// Milliseconds since `epoch` before which Redis is not asked.
    skip_until: AtomicU64,
    /// The last call failed: the next one is a probe, and its success is logged.
    down: AtomicBool,
    /// A probe is in flight (the other requests stay local meanwhile).
    probing: AtomicBool,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("root", &self.root)
            .field("down", &self.down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Buckets under `prefix` (the revocation store's `P:`, colon included), on connections
    /// made by `link` (one now, connected at first use; a new one for each probe).
    pub fn new(link: Link, prefix: &str) -> Result<Fleet, String> {
        let conn = link()?;
        Ok(Fleet {
            conn: ArcSwap::from_pointee(conn),
            link,
            root: format!("{prefix}rl:"),
            script: redis::Script::new(GCRA_SCRIPT),
            epoch: Instant::now(),
            skip_until: AtomicU64::new(0),
            down: AtomicBool::new(false),
            probing: AtomicBool::new(false),
        })
    }

    /// The Redis key of `key`'s bucket on `route`.
    pub fn bucket(&self, route: &str, key: &[u8]) -> String {
        let digest = Sha256::digest(key);
        format!("{}{route}:{}", self.root, crate::hex::encode(&digest))
    }

    /// Spend one request of `key`'s fleet-wide budget on `route`; `None` when Redis cannot
    /// say (the caller's local limiter decides).
    pub async fn check(&self, route: &str, spec: &RateSpec, key: &[u8]) -> Option<Decision> {
        let now = self.millis();
        if now < self.skip_until.load(Ordering::Relaxed) {
            return None;
        }
        // After a failure, one probe at a time; released however this call ends (a request
        // dropped mid-call included).
        let _probe = if self.down.load(Ordering::Relaxed) {
            if self
                .probing
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                return None;
            }
            // Perhaps the master moved: probe on a fresh connection to the current one.
            match (self.link)() {
                Ok(conn) => self.conn.store(Arc::new(conn)),
                Err(e) => tracing::debug!(error = %e, "rate limits: no new Redis connection"),
            }
            Some(Release(&self.probing))
        } else {
            None
        };
        let interval = (spec.interval_nanos() / 1000).max(1);
        let tolerance = interval.saturating_mul(spec.burst);
        let mut conn = ConnectionManager::clone(&self.conn.load());
        let mut call = self.script.key(self.bucket(route, key));
        call.arg(interval).arg(tolerance);
        let answer =
            tokio::time::timeout(CALL_TIMEOUT, call.invoke_async::<(i64, i64)>(&mut conn)).await;
        let outcome = match answer {
            Ok(Ok((1, _))) => Ok(Decision::Allow),
            Ok(Ok((_, wait_us))) => Ok(Decision::Deny {
                retry_after_secs: u64::try_from(wait_us)
                    .unwrap_or(0)
                    .div_ceil(1_000_000)
                    .max(1),
            }),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
        };
        match outcome {
            Ok(decision) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate limits: Redis answers again; limits are fleet-wide again");
                }
                Some(decision)
            }
            Err(error) => {
                self.skip_until.store(
                    self.millis() + RETRY_AFTER.as_millis() as u64,
                    Ordering::Relaxed,
                );
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "rate limits: Redis unavailable; each instance limits locally (the full limit per instance) until it answers again");
                }
                None
            }
        }
    }

    fn millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// Clears the flag when dropped.
struct Release<'a>(&'a AtomicBool);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
