//! What the console's live ring costs (`src/telemetry/live.rs`).
//!
//! - `sample`: one sampler tick (render the exposition of 20 routes with a few statuses
//!   each, read it back, store the second's difference): paid once a second, off the
//!   request path.
//! - `request_counters/alone` and `request_counters/sampler_running`: the request path's
//!   own metric recording (a counter and a histogram observation), alone and while another
//!   thread renders the exposition back to back, i.e. thousands of times more often than
//!   the sampler's once a second. The difference bounds what the sampler can cost a request.
//!
//! `cargo bench --bench console_ring`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::telemetry::live::Live;
use portcullis::telemetry::metrics::Metrics;

const ROUTES: [&str; 20] = [
    "/r00", "/r01", "/r02", "/r03", "/r04", "/r05", "/r06", "/r07", "/r08", "/r09", "/r10", "/r11",
    "/r12", "/r13", "/r14", "/r15", "/r16", "/r17", "/r18", "/r19",
];

fn busy_metrics() -> Arc<Metrics> {
    let m = Arc::new(Metrics::new());
    for route in ROUTES {
        let h = m.route_handles(route);
        for status in [200, 201, 304, 401, 403, 429, 502] {
            h.record(status, Duration::from_micros(700));
        }
    }
    for reason in ["missing", "expired", "signature", "revoked", "dpop_replay"] {
        m.auth_failure(reason);
    }
    m.upstream_error("upstream_connect");
    m
}

fn sample(c: &mut Criterion) {
    let m = busy_metrics();
    let live = Live::new();
    let mut t = 0;
    c.bench_function("sample", |b| {
        b.iter(|| {
            t += 1;
            live.record(&m.render(), t);
        })
    });
}

fn request_counters(c: &mut Criterion) {
    let m = busy_metrics();
    let route = m.route_handles("/r07");
    let mut g = c.benchmark_group("request_counters");
    g.bench_function("alone", |b| {
        b.iter(|| route.record(200, Duration::from_micros(650)))
    });
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (m, stop) = (m.clone(), stop.clone());
        std::thread::spawn(move || {
            let live = Live::new();
            let mut t = 0;
            while !stop.load(Ordering::Relaxed) {
                t += 1;
                live.record(&m.render(), t);
            }
        })
    };
    g.bench_function("sampler_running", |b| {
        b.iter(|| route.record(200, Duration::from_micros(650)))
    });
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    g.finish();
}

criterion_group!(benches, sample, request_counters);
criterion_main!(benches);
