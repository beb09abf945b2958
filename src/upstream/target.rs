//! A route's targets as every worker sees them: health (active checks), passive ejection
//! after connect failures with an exponential back-off, requests in flight, the DNS
//! generation, and the per-target metric handles. Shared by all workers (`Arc<TargetSet>`);
//! every field a request touches is an atomic.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::config::Limits;
use crate::routing::{Balance, HealthCheck, Route, UpstreamProtocol, UpstreamTarget};
use crate::telemetry::metrics::{Metrics, TargetLabels};

/// The first passive ejection lasts this long; each further consecutive connect failure
/// doubles it, up to [`MAX_EJECTION`].
pub const BASE_EJECTION: Duration = Duration::from_secs(1);
/// The longest passive ejection (active health checks, when configured, end it sooner).
pub const MAX_EJECTION: Duration = Duration::from_secs(30);

/// Milliseconds on a monotonic clock that starts with the process (ejection deadlines).
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // +1: 0 means "not ejected".
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// One target and what the gateway knows about it now.
pub struct TargetState {
    pub target: UpstreamTarget,
    /// Requests sent and not yet answered (their response head), from every worker.
    in_flight: AtomicUsize,
    /// Connect failures since the last success.
    connect_failures: AtomicU32,
    /// [`now_ms`] until which the target is out of rotation (0: never ejected).
    ejected_until: AtomicU64,
    /// The active health checks' verdict (always true without `[routes.health]`).
    healthy: AtomicBool,
    /// Bumped when the target's name resolves to other addresses: workers then drop their
    /// pooled connections to it.
    pub(super) dns_generation: AtomicU64,
    /// The target's own seed for rendezvous hashing (stable across restarts and reorders).
    pub(super) seed: u64,
    requests: Counter,
    failures: Counter,
    ejected: Gauge<i64, AtomicI64>,
}

impl TargetState {
    /// A target with its own (unregistered) metric handles: for benchmarks and unit tests.
    pub fn new(target: UpstreamTarget) -> TargetState {
        TargetState {
            seed: super::balance::hash64(target.origin.as_bytes()),
            target,
            in_flight: AtomicUsize::new(0),
            connect_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            dns_generation: AtomicU64::new(0),
            requests: Counter::default(),
            failures: Counter::default(),
            ejected: Gauge::default(),
        }
    }

    /// In rotation at `now`: healthy (active checks) and not passively ejected.
    #[inline]
    pub fn available(&self, now: u64) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.ejected_until.load(Ordering::Relaxed) <= now
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Passively ejected at `now`.
    pub fn ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// A connection to the target could not be made: out of rotation for a back-off that
    /// doubles with each consecutive failure.
    pub fn connect_failed(&self, now: u64) {
        self.failures.inc();
        let n = self.connect_failures.fetch_add(1, Ordering::Relaxed);
        let factor = 1u32 << n.min(5);
        let backoff = BASE_EJECTION.saturating_mul(factor).min(MAX_EJECTION);
        let until = now.saturating_add(u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX));
        self.ejected_until.store(until, Ordering::Relaxed);
        self.ejected.set(1);
        if n == 0 {
            tracing::warn!(target = %self.target.origin, backoff_ms = backoff.as_millis() as u64, "upstream target ejected after a connect failure");
        }
    }

    /// The target failed a request after connecting (counted, not ejected).
    pub fn request_failed(&self) {
        self.failures.inc();
    }

    /// The target answered: a passive ejection ends (cheap when there was none).
    #[inline]
    pub fn answered(&self) {
        if self.connect_failures.load(Ordering::Relaxed) != 0 {
            self.connect_failures.store(0, Ordering::Relaxed);
            self.ejected_until.store(0, Ordering::Relaxed);
            if self.healthy() {
                self.ejected.set(0);
            }
            tracing::info!(target = %self.target.origin, "upstream target answers again");
        }
    }

    /// Active health checks changed their verdict. A good check also ends a passive
    /// ejection: the target accepts connections again.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
        if healthy {
            self.connect_failures.store(0, Ordering::Relaxed);
            self.ejected_until.store(0, Ordering::Relaxed);
        }
        self.ejected.set(i64::from(!healthy));
    }

    /// Count a request sent to the target; the guard keeps it in flight until dropped.
    #[inline]
    pub fn start(&self, track_in_flight: bool) -> InFlight<'_> {
        self.requests.inc();
        if track_in_flight {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        InFlight {
            target: track_in_flight.then_some(self),
        }
    }
}

/// A request in flight to a target (only counted under `least_requests`).
pub struct InFlight<'a> {
    target: Option<&'a TargetState>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.target {
            t.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// How the per-worker clients of a route are built.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub protocol: UpstreamProtocol,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// One route's targets, shared by every worker, the health checker and admin.
pub struct TargetSet {
    /// The route's label (its prefix).
    pub route: &'static str,
    pub balance: Balance,
    pub health: Option<HealthCheck>,
    /// How often the targets named by host name are resolved again.
    pub dns_refresh: Duration,
    pub targets: Vec<TargetState>,
    pub(super) settings: ClientSettings,
}

impl TargetSet {
    /// The targets of `route`, their metric series registered under `label`.
    pub fn new(label: &'static str, route: &Route, limits: &Limits, metrics: &Metrics) -> Self {
        let up = &route.upstream;
        let targets = up
            .targets
            .iter()
            .map(|t| {
                let mut state = TargetState::new(t.clone());
                let labels = TargetLabels {
                    route: label,
                    target: t.origin.clone(),
                };
                let (requests, failures, ejected) = metrics.target_handles(&labels);
                state.requests = requests;
                state.failures = failures;
                state.ejected = ejected;
                state.ejected.set(0);
                state
            })
            .collect();
        TargetSet {
            route: label,
            balance: up.balance,
            health: up.health.clone(),
            dns_refresh: up.dns_refresh,
            targets,
            settings: ClientSettings {
                connect_timeout: route.connect_timeout,
                pool_idle_timeout: limits.upstream_pool_idle_timeout,
                pool_max_idle_per_host: limits.upstream_pool_max_idle_per_host,
                protocol: up.protocol,
                tls: up.tls.clone(),
            },
        }
    }

    /// A set of bare targets (no metrics registry, default client settings): benchmarks
    /// and unit tests.
    pub fn detached(balance: Balance, targets: Vec<UpstreamTarget>) -> Self {
        TargetSet {
            route: "-",
            balance,
            health: None,
            dns_refresh: crate::routing::DEFAULT_DNS_REFRESH,
            targets: targets.into_iter().map(TargetState::new).collect(),
            settings: ClientSettings {
                connect_timeout: Duration::from_secs(1),
                pool_idle_timeout: Duration::from_secs(90),
                pool_max_idle_per_host: 8,
                protocol: UpstreamProtocol::Http1,
                tls: None,
            },
        }
    }

    /// What `GET /upstreams` shows of this route.
    pub fn snapshot(&self) -> serde_json::Value {
        let now = now_ms();
        let targets: Vec<serde_json::Value> = self
            .targets
            .iter()
            .map(|t| {
                let ejected = t.ejected(now);
                let healthy = t.healthy();
                serde_json::json!({
                    "target": t.target.origin,
                    "state": if !healthy { "unhealthy" } else if ejected { "ejected" } else { "up" },
                    "healthy": healthy,
                    "ejected": ejected,
                    "in_flight": t.in_flight(),
                    "requests": t.requests.get(),
                    "failures": t.failures.get(),
                })
            })
            .collect();
        serde_json::json!({
            "route": self.route,
            "balance": self.balance.as_str(),
            "protocol": self.settings.protocol.as_str(),
            "health_checks": self.health.as_ref().map(|h| h.path.as_str()),
            "targets": targets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> TargetState {
        TargetState::new(UpstreamTarget::new(
            http::uri::Scheme::HTTP,
            "127.0.0.1:1".parse().unwrap(),
        ))
    }

    #[test]
    fn ejection_backs_off_and_ends_on_an_answer() {
        let t = target();
        let now = 1_000;
        assert!(t.available(now));
        t.connect_failed(now);
        assert!(!t.available(now));
        assert!(
            t.available(now + 1_000),
            "first ejection lasts BASE_EJECTION"
        );
        t.connect_failed(now + 1_000);
        assert!(!t.available(now + 2_500), "second one twice as long");
        assert!(t.available(now + 3_000));
        for _ in 0..20 {
            t.connect_failed(now);
        }
        assert!(!t.available(now + 29_000));
        assert!(t.available(now + 30_000), "capped at MAX_EJECTION");
        t.answered();
        assert!(t.available(now));
    }

    #[test]
    fn health_verdict_gates_and_a_good_check_ends_ejection() {
        let t = target();
        t.set_healthy(false);
        assert!(!t.available(u64::MAX));
        t.connect_failed(10);
        t.set_healthy(true);
        assert!(t.available(10));
    }

    #[test]
    fn in_flight_counts_only_when_tracked() {
        let t = target();
        {
            let _a = t.start(true);
            let _b = t.start(false);
            assert_eq!(t.in_flight(), 1);
        }
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.requests.get(), 2);
    }
}
