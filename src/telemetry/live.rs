//! The console's live view: a ring of the last 15 minutes, one sample a second, read from
//! the metric counters the request path already keeps.
//!
//! The request path does not know this exists. Once a second a background task renders the
//! Prometheus exposition ([`Metrics::render`], the same text `GET /metrics` serves), reads
//! the counters back from it, and stores the difference from the previous second. So the
//! only cost on the request path is what the counters already cost; the sampler takes each
//! metric family's read lock for the microseconds its encoding takes, as a scrape does.
//!
//! Reading the text back (instead of the families themselves) is deliberate: the metrics
//! crate exposes no way to list a family's label sets or a histogram's buckets, and the
//! exposition is its stable, documented interface.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::metrics::Metrics;
use crate::clock::unix_now;

/// Seconds between samples.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Samples kept: 15 minutes at one a second.
pub const WINDOW: usize = 900;
/// Seconds the per-route table covers.
pub const ROUTE_WINDOW: usize = 60;

/// What one second saw (each count is the change over that second, so also a rate per
/// second).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Unix seconds at the end of the second.
    pub t: u64,
    /// Requests answered, by status class `1xx`..`5xx`.
    pub status: BTreeMap<&'static str, u64>,
    /// Latency percentiles of the requests answered in this second (milliseconds, from the
    /// histogram buckets, interpolated as Prometheus' `histogram_quantile` does); `null`
    /// when none were answered.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Requests refused by authentication, by reason (non-zero ones only).
    pub auth_failures: BTreeMap<String, u64>,
    /// Requests answered 429 (rate limits).
    pub rate_limited: u64,
    /// Upstream failures answered 502/504.
    pub upstream_errors: u64,
    /// Revocations made on this instance.
    pub revocations: u64,
}

/// One route's counters as read from the exposition.
#[derive(Debug, Clone, Default, PartialEq)]
struct RouteReading {
    /// Requests by status class (index 0 is 1xx).
    classes: [u64; 5],
    rate_limited: u64,
    /// Cumulative bucket counts in export order: (upper bound in seconds, count); the last
    /// is `+Inf`.
    buckets: Vec<(f64, u64)>,
}

/// Every counter the live view reads, at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Reading {
    routes: BTreeMap<String, RouteReading>,
    auth_failures: BTreeMap<String, u64>,
    upstream_errors: u64,
    revocations: u64,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Reading {
    /// Read the counters out of the text exposition. Lines it does not know are ignored,
    /// so a new metric never breaks the console.
    pub(crate) fn parse(text: &str) -> Reading {
        let mut r = Reading::default();
        for line in text.lines() {
            let Some((name, labels, value)) = split_sample(line) else {
                continue;
            };
            let label = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            match name {
                "portcullis_requests_total" => {
                    let (Some(route), Some(status)) = (label("route"), label("status")) else {
                        continue;
                    };
                    let status: u16 = status.parse().unwrap_or(0);
                    let entry = r.routes.entry(route).or_default();
                    if let Some(c) = (status / 100)
                        .checked_sub(1)
                        .and_then(|i| entry.classes.get_mut(usize::from(i)))
                    {
                        *c += value as u64;
                    }
                    if status == 429 {
                        entry.rate_limited += value as u64;
                    }
                }
                "portcullis_request_duration_seconds_bucket" => {
                    let (Some(route), Some(le)) = (label("route"), label("le")) else {
                        continue;
                    };
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap_or(f64::INFINITY)
                    };
                    r.routes
                        .entry(route)
                        .or_default()
                        .buckets
                        .push((le, value as u64));
                }
                "portcullis_auth_failures_total" => {
                    if let Some(reason) = label("reason") {
                        *r.auth_failures.entry(reason).or_default() += value as u64;
                    }
                }
                "portcullis_upstream_errors_total" => r.upstream_errors += value as u64,
                "portcullis_revocations_applied_total" => r.revocations += value as u64,
                _ => {}
            }
        }
        r
    }

    /// The sample for the second from `prev` to `self` (counters only grow; a smaller value
    /// counts as no change).
    fn since(&self, prev: &Reading, t: u64) -> Sample {
        let mut classes = [0u64; 5];
        let mut rate_limited = 0;
        let mut buckets: Vec<(f64, u64)> = Vec::new();
        for (route, now) in &self.routes {
            let before = prev.routes.get(route);
            for (i, c) in classes.iter_mut().enumerate() {
                *c += now.classes[i].saturating_sub(before.map_or(0, |b| b.classes[i]));
            }
            rate_limited += now
                .rate_limited
                .saturating_sub(before.map_or(0, |b| b.rate_limited));
            add_bucket_deltas(&mut buckets, &now.buckets, before.map(|b| &b.buckets[..]));
        }
        let auth_failures = self
            .auth_failures
            .iter()
            .filter_map(|(reason, n)| {
                let d = n.saturating_sub(prev.auth_failures.get(reason).copied().unwrap_or(0));
                (d > 0).then(|| (reason.clone(), d))
            })
            .collect();
        Sample {
            t,
            status: CLASSES.iter().copied().zip(classes).collect(),
            p50_ms: quantile_ms(&buckets, 0.5),
            p99_ms: quantile_ms(&buckets, 0.99),
            auth_failures,
            rate_limited,
            upstream_errors: self.upstream_errors.saturating_sub(prev.upstream_errors),
            revocations: self.revocations.saturating_sub(prev.revocations),
        }
    }
}

/// Add `now - before` bucket by bucket into `sum` (every route has the same buckets; one
/// whose layout differs is left out rather than mixed in wrongly).
fn add_bucket_deltas(sum: &mut Vec<(f64, u64)>, now: &[(f64, u64)], before: Option<&[(f64, u64)]>) {
    if sum.is_empty() {
        sum.extend(now.iter().map(|(le, _)| (*le, 0)));
    }
    if sum.len() != now.len() || before.is_some_and(|b| b.len() != now.len()) {
        return;
    }
    for (i, (s, (_, n))) in sum.iter_mut().zip(now).enumerate() {
        s.1 += n.saturating_sub(before.map_or(0, |b| b[i].1));
    }
}

/// The `q` quantile in milliseconds of cumulative buckets, interpolated linearly inside the
/// bucket it falls in (as `histogram_quantile` does); in the `+Inf` bucket, the largest
/// finite bound. `None` without observations.
fn quantile_ms(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(le, cum) in buckets {
        if cum as f64 >= rank {
            if le.is_infinite() {
                return Some(lower.0 * 1000.0);
            }
            let inside = (cum - lower.1) as f64;
            let frac = if inside > 0.0 {
                (rank - lower.1 as f64) / inside
            } else {
                1.0
            };
            let v = lower.0 + (le - lower.0) * frac;
            return Some((v * 1_000_000.0).round() / 1000.0);
        }
        lower = (le, cum);
    }
    None
}

/// One exposition line: metric name, labels (name, value), value.
type Line<'a> = (&'a str, Vec<(String, String)>, f64);

/// Split `name{a="x",b="y"} value` into its parts (label values unescaped).
fn split_sample(line: &str) -> Option<Line<'_>> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => {
            let (name, value) = line.split_once(' ')?;
            return Some((name, Vec::new(), value.trim().parse().ok()?));
        }
    };
    let mut labels = Vec::new();
    let mut chars = rest.char_indices();
    let mut key = String::new();
    let value_text = loop {
        let (i, c) = chars.next()?;
        match c {
            '}' => break rest.get(i + 1..)?,
            ',' | ' ' => {}
            '=' => {
                if chars.next()?.1 != '"' {
                    return None;
                }
                let mut value = String::new();
                loop {
                    match chars.next()?.1 {
                        '"' => break,
                        '\\' => match chars.next()?.1 {
                            'n' => value.push('\n'),
                            other => value.push(other),
                        },
                        other => value.push(other),
                    }
                }
                labels.push((std::mem::take(&mut key), value));
            }
            other => key.push(other),
        }
    };
    let value = value_text.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

#[derive(Debug, Default)]
struct Inner {
    samples: VecDeque<Sample>,
    /// The last [`ROUTE_WINDOW`] + 1 readings with their times, for the per-route table.
    readings: VecDeque<(u64, Reading)>,
}

/// The ring. Written once a second by [`Live::spawn`]'s task, read by the console.
#[derive(Debug, Default)]
pub struct Live {
    inner: Mutex<Inner>,
}

impl Live {
    pub fn new() -> Live {
        Live::default()
    }

    /// Take one reading of the exposition `text` at unix second `t`: the first one is the
    /// baseline, each later one adds a sample.
    pub fn record(&self, text: &str, t: u64) {
        let reading = Reading::parse(text);
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let inner = &mut *guard;
        if let Some((_, prev)) = inner.readings.back() {
            let sample = reading.since(prev, t);
            if inner.samples.len() == WINDOW {
                inner.samples.pop_front();
            }
            inner.samples.push_back(sample);
        }
        if inner.readings.len() > ROUTE_WINDOW {
            inner.readings.pop_front();
        }
        inner.readings.push_back((t, reading));
    }

    /// Samples newer than `since` (all of them without it), oldest first.
    pub fn samples_since(&self, since: Option<u64>) -> Vec<Sample> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .samples
            .iter()
            .filter(|s| since.is_none_or(|t| s.t > t))
            .cloned()
            .collect()
    }

    /// The per-route table over the last minute: requests per second, by status class,
    /// and p50/p99 latency.
    pub fn routes(&self) -> serde_json::Value {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (Some((t0, first)), Some((t1, last))) = (inner.readings.front(), inner.readings.back())
        else {
            return json!([]);
        };
        let secs = t1.saturating_sub(*t0).max(1) as f64;
        let rows: Vec<serde_json::Value> = last
            .routes
            .iter()
            .map(|(route, now)| {
                let before = first.routes.get(route);
                let mut buckets = Vec::new();
                add_bucket_deltas(&mut buckets, &now.buckets, before.map(|b| &b.buckets[..]));
                let classes: BTreeMap<&str, u64> = CLASSES
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        (
                            *c,
                            now.classes[i].saturating_sub(before.map_or(0, |b| b.classes[i])),
                        )
                    })
                    .collect();
                let total: u64 = classes.values().sum();
                json!({
                    "route": route,
                    "requests_total": now.classes.iter().sum::<u64>(),
                    "rps": (total as f64 / secs * 100.0).round() / 100.0,
                    "status": classes,
                    "p50_ms": quantile_ms(&buckets, 0.5),
                    "p99_ms": quantile_ms(&buckets, 0.99),
                })
            })
            .collect();
        json!(rows)
    }

    /// Sample `metrics` every [`INTERVAL`] until `stop` resolves.
    pub fn spawn(
        self: Arc<Self>,
        metrics: Arc<Metrics>,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tick.tick() => self.record(&metrics.render(), unix_now()),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_series_the_console_charts_from_a_real_exposition() {
        let m = Metrics::new();
        let route = m.route_handles("/api");
        route.record(200, Duration::from_micros(300));
        route.record(429, Duration::from_millis(3));
        route.record(502, Duration::from_millis(30));
        m.request("sign-in", 401, Duration::from_millis(1));
        m.auth_failure("expired");
        m.auth_failure("expired");
        m.auth_failure("bad_signature");
        m.upstream_error("upstream_connect");
        m.revocations_total.inc();
        let r = Reading::parse(&m.render());
        let api = &r.routes["/api"];
        assert_eq!(api.classes, [0, 1, 0, 1, 1]);
        assert_eq!(api.rate_limited, 1);
        assert_eq!(api.buckets.last(), Some(&(f64::INFINITY, 3)));
        assert_eq!(r.routes["sign-in"].classes[3], 1);
        assert_eq!(r.auth_failures["expired"], 2);
        assert_eq!(r.auth_failures["bad_signature"], 1);
        assert_eq!(r.upstream_errors, 1);
        assert_eq!(r.revocations, 1);
    }

    #[test]
    fn a_sample_is_the_change_over_one_second() {
        let m = Metrics::new();
        let live = Live::new();
        live.record(&m.render(), 100);
        assert!(
            live.samples_since(None).is_empty(),
            "the first reading is the baseline"
        );
        let route = m.route_handles("/api");
        for _ in 0..3 {
            route.record(200, Duration::from_micros(200));
        }
        m.auth_failure("revoked");
        live.record(&m.render(), 101);
        live.record(&m.render(), 102);
        let s = live.samples_since(None);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].t, 101);
        assert_eq!(s[0].status["2xx"], 3);
        assert_eq!(s[0].auth_failures["revoked"], 1);
        assert_eq!(
            s[1].status["2xx"], 0,
            "nothing happened in the second second"
        );
        assert_eq!(s[1].p50_ms, None);
        assert!(s[0].p50_ms.is_some_and(|v| v > 0.1 && v <= 0.25), "{s:?}");
        assert_eq!(live.samples_since(Some(101)).len(), 1);
        let routes = live.routes();
        assert_eq!(routes[0]["route"], "/api");
        assert_eq!(routes[0]["status"]["2xx"], 3);
    }

    #[test]
    fn the_ring_keeps_fifteen_minutes() {
        let m = Metrics::new();
        let live = Live::new();
        for t in 0..(WINDOW as u64 + 10) {
            live.record(&m.render(), t);
        }
        let s = live.samples_since(None);
        assert_eq!(s.len(), WINDOW);
        assert_eq!(s[0].t, 10);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let b = [(0.001, 0), (0.002, 100), (f64::INFINITY, 100)];
        assert_eq!(quantile_ms(&b, 0.5), Some(1.5));
        let inf = [(0.001, 0), (f64::INFINITY, 10)];
        assert_eq!(quantile_ms(&inf, 0.99), Some(1.0));
        assert_eq!(quantile_ms(&[(f64::INFINITY, 0)], 0.5), None);
    }

    #[test]
    fn labels_with_escapes_parse() {
        let (name, labels, v) =
            split_sample(r#"portcullis_requests_total{route="/a\"b",status="200"} 7"#).unwrap();
        assert_eq!(name, "portcullis_requests_total");
        assert_eq!(labels[0], ("route".into(), "/a\"b".into()));
        assert_eq!(v, 7.0);
        assert!(split_sample("# HELP x").is_none());
        assert_eq!(split_sample("x_total 3").map(|s| s.2), Some(3.0));
    }
}
