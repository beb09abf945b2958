//! Prometheus metrics: one registry, the series the gateway exports, and cheap recording
//! functions for the request path.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: &'static str,
}

/// One upstream target of one route (issue 16).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub route: &'static str,
    /// `scheme://host:port`.
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Latency buckets in seconds: 100 us to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabel, Histogram>,
    auth_failures: Family<ReasonLabel, Counter>,
    upstream_errors: Family<ReasonLabel, Counter>,
    pub reloads: Family<ReasonLabel, Counter>,
    pub revocation_entries: Gauge<i64, AtomicI64>,
    pub open_connections: Gauge<i64, AtomicI64>,
    pub tls_handshake_failures: Counter<u64, AtomicU64>,
    pub revocations_total: Counter<u64, AtomicU64>,
    pub store_degraded: Gauge<i64, AtomicI64>,
    pub jwks_refreshes: Family<ReasonLabel, Counter>,
    target_requests: Family<TargetLabels, Counter>,
    target_failures: Family<TargetLabels, Counter>,
    target_ejected: Family<TargetLabels, Gauge<i64, AtomicI64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests served, by route and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS.iter().copied())
        });
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head, by route",
            latency.clone(),
        );
        let auth_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused by authentication, by reason",
            auth_failures.clone(),
        );
        let upstream_errors = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream failures answered 502/504, by reason",
            upstream_errors.clone(),
        );
        let reloads = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads, by outcome (ok, rejected)",
            reloads.clone(),
        );
        let revocation_entries = Gauge::default();
        registry.register(
            "revocation_entries",
            "Entries in the revocation dictionary",
            revocation_entries.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections open now",
            open_connections.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            tls_handshake_failures.clone(),
        );
        let revocations_total = Counter::default();
        registry.register(
            "revocations_applied",
            "Revocations applied to this instance",
            revocations_total.clone(),
        );
        let store_degraded = Gauge::default();
        registry.register(
            "revocation_store_degraded",
            "1 while the revocation store is unreachable",
            store_degraded.clone(),
        );
        let jwks_refreshes = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "jwks_refreshes",
            "[jwt.jwks] fetches after start-up, by outcome (changed, unchanged, failed)",
            jwks_refreshes.clone(),
        );
        let target_requests = Family::<TargetLabels, Counter>::default();
        registry.register(
            "upstream_target_requests",
            "Requests sent to an upstream target (retries included), by route and target",
            target_requests.clone(),
        );
        let target_failures = Family::<TargetLabels, Counter>::default();
        registry.register(
            "upstream_target_failures",
            "Requests to an upstream target that got no response (connect or connection failure), by route and target",
            target_failures.clone(),
        );
        let target_ejected = Family::<TargetLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "upstream_target_ejected",
            "1 while an upstream target is out of rotation (failed health checks or connects), by route and target",
            target_ejected.clone(),
        );
        Metrics {
            target_requests,
            target_failures,
            target_ejected,
            registry,
            requests,
            latency,
            auth_failures,
            upstream_errors,
            reloads,
            revocation_entries,
            open_connections,
            tls_handshake_failures,
            revocations_total,
            store_degraded,
            jwks_refreshes,
        }
    }

    /// Handles for one route's series, so the request path skips the label lookups.
    pub fn route_handles(&self, route: &'static str) -> RouteMetrics {
        RouteMetrics {
            route,
            ok: self
                .requests
                .get_or_create(&RequestLabels { route, status: 200 })
                .clone(),
            latency: self.latency.get_or_create(&RouteLabel { route }).clone(),
            requests: self.requests.clone(),
        }
    }

    /// One upstream target's series: requests, failures and the ejected gauge.
    pub fn target_handles(
        &self,
        labels: &TargetLabels,
    ) -> (Counter, Counter, Gauge<i64, AtomicI64>) {
        (
            self.target_requests.get_or_create(labels).clone(),
            self.target_failures.get_or_create(labels).clone(),
            self.target_ejected.get_or_create(labels).clone(),
        )
    }

    pub fn request(&self, route: &'static str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.latency
            .get_or_create(&RouteLabel { route })
            .observe(elapsed.as_secs_f64());
    }

    pub fn upstream_error(&self, reason: &'static str) {
        self.upstream_errors
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// One route's request counter (status 200 pre-resolved) and latency histogram.
pub struct RouteMetrics {
    route: &'static str,
    ok: Counter,
    latency: Histogram,
    requests: Family<RequestLabels, Counter>,
}

impl RouteMetrics {
    pub fn record(&self, status: u16, elapsed: Duration) {
        if status == 200 {
            self.ok.inc();
        } else {
            self.requests
                .get_or_create(&RequestLabels {
                    route: self.route,
                    status,
                })
                .inc();
        }
        self.latency.observe(elapsed.as_secs_f64());
    }
}
