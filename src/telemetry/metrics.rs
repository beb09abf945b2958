//! Prometheus metrics: one registry, the series the gateway exports, and cheap recording
//! functions for the request path.
//!
//! Two exposition formats from the one registry: the Prometheus text format 0.0.4 (the
//! default, what `text/plain` parsers expect: counters typed under their `_total` name) and
//! OpenMetrics 1.0 (only when the scraper asks for it in `Accept`). Every family has a
//! series from the start (at zero, for each label value known up front), so a dashboard or
//! an alert on `portcullis_upstream_errors_total` sees 0 rather than "no data".

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

/// Outcomes of `portcullis_config_reloads_total`.
pub const RELOAD_OUTCOMES: [&str; 2] = ["ok", "rejected"];
/// Outcomes of `portcullis_jwks_refreshes_total`.
pub const JWKS_OUTCOMES: [&str; 3] = ["changed", "unchanged", "failed"];
/// Reasons of `portcullis_upstream_errors_total` (the gateway error's reason label).
pub const UPSTREAM_REASONS: [&str; 3] = ["upstream_connect", "upstream_timeout", "upstream_error"];

/// The `Content-Type` of the Prometheus text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The `Content-Type` of OpenMetrics 1.0.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which exposition format a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4.
    Text,
    OpenMetrics,
}

impl Format {
    /// Choose from an `Accept` header: OpenMetrics only when it is asked for with a quality
    /// at least that of the text format (as Prometheus itself asks); text otherwise,
    /// including when there is no `Accept` or nothing in it is recognised.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let (mut open, mut text) = (None::<f32>, None::<f32>);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|v| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let slot = match media.as_str() {
                "application/openmetrics-text" => &mut open,
                "text/plain" | "text/*" | "*/*" => &mut text,
                _ => continue,
            };
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
        match open {
            Some(o) if o > 0.0 && o >= text.unwrap_or(0.0) => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
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
    /// Requests whose fleet-wide rate limit was decided by the local limiter because Redis
    /// did not answer (cluster mode).
    pub rate_limit_fallbacks: Counter<u64, AtomicU64>,
    target_requests: Family<TargetLabels, Counter>,
    target_failures: Family<TargetLabels, Counter>,
    target_ejected: Family<TargetLabels, Gauge<i64, AtomicI64>>,
    /// `[telemetry]` OTLP export: spans the collector accepted.
    pub trace_spans_exported: Counter<u64, AtomicU64>,
    /// Spans dropped because the export queue was full (the request never waits for it).
    pub trace_spans_dropped: Counter<u64, AtomicU64>,
    /// Export requests that failed (no connection, timeout, or a non-2xx answer); their
    /// spans are lost.
    pub trace_export_failures: Counter<u64, AtomicU64>,
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
        for reason in RELOAD_OUTCOMES {
            let _ = reloads.get_or_create(&ReasonLabel { reason });
        }
        for reason in JWKS_OUTCOMES {
            let _ = jwks_refreshes.get_or_create(&ReasonLabel { reason });
        }
        for reason in UPSTREAM_REASONS {
            let _ = upstream_errors.get_or_create(&ReasonLabel { reason });
        }
        let rate_limit_fallbacks = Counter::default();
        registry.register(
            "rate_limit_fallbacks",
            "Rate-limited requests decided by the local limiter because Redis did not answer (cluster mode)",
            rate_limit_fallbacks.clone(),
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
        let trace_spans_exported = Counter::default();
        registry.register(
            "trace_spans_exported",
            "Spans the OTLP collector accepted ([telemetry] otlp_endpoint)",
            trace_spans_exported.clone(),
        );
        let trace_spans_dropped = Counter::default();
        registry.register(
            "trace_spans_dropped",
            "Spans dropped because the OTLP export queue was full",
            trace_spans_dropped.clone(),
        );
        let trace_export_failures = Counter::default();
        registry.register(
            "trace_export_failures",
            "OTLP export requests that failed (connection, timeout or a non-2xx answer); their spans are lost",
            trace_export_failures.clone(),
        );
        Metrics {
            trace_spans_exported,
            trace_spans_dropped,
            trace_export_failures,
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
            rate_limit_fallbacks,
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

    /// Give each of these authentication-failure reasons its series at zero (the gateway
    /// passes every reason it can count; metrics does not know the auth vocabulary).
    pub fn prime_auth_failures(&self, reasons: impl IntoIterator<Item = &'static str>) {
        for reason in reasons {
            let _ = self.auth_failures.get_or_create(&ReasonLabel { reason });
        }
    }

    /// The OpenMetrics 1.0 exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Every series in the format asked for.
    pub fn render_as(&self, format: Format) -> String {
        match format {
            Format::OpenMetrics => self.render(),
            Format::Text => openmetrics_to_text(&self.render()),
        }
    }
}

/// OpenMetrics text as Prometheus text format 0.0.4. The samples are the same; what differs
/// is that 0.0.4 names a counter's `# HELP`/`# TYPE` after its `_total` sample (OpenMetrics
/// names the family without the suffix, which 0.0.4 parsers then type `untyped`), has no
/// `# UNIT` and no `# EOF`, and calls an unknown type `untyped`.
fn openmetrics_to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len() + 256);
    // `# HELP` precedes `# TYPE`: hold it until the type says whether to rename.
    let mut help: Option<&str> = None;
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            if let Some(h) = help.replace(line) {
                out.push_str(h);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" if !name.ends_with("_total") => (format!("{name}_total"), "counter"),
                "unknown" => (name.to_owned(), "untyped"),
                other => (name.to_owned(), other),
            };
            if let Some(h) = help.take() {
                let text = h
                    .strip_prefix("# HELP ")
                    .and_then(|r| r.split_once(' '))
                    .map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if let Some(h) = help.take() {
            out.push_str(h);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(h) = help {
        out.push_str(h);
        out.push('\n');
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_gives_openmetrics_only_when_asked() {
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; version=1.0.0")),
            Format::OpenMetrics
        );
        // Prometheus 2.x's own Accept.
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2")),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0.2,text/plain;q=0.9")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::Text
        );
    }

    #[test]
    fn text_format_names_counters_by_their_total_sample() {
        let m = Metrics::new();
        let text = m.render_as(Format::Text);
        assert!(
            text.contains("# TYPE portcullis_config_reloads_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP portcullis_config_reloads_total Configuration"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_config_reloads_total{reason=\"ok\"} 0\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("# UNIT"));
        let om = m.render_as(Format::OpenMetrics);
        assert!(om.contains("# TYPE portcullis_config_reloads counter\n"));
        assert!(om.ends_with("# EOF\n"));
    }
}
