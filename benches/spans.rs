//! What the OTLP span recording costs the request path (`src/telemetry/spans.rs`).
//!
//! - `request_spans/baseline`: what every request paid before the export existed: the
//!   `traceparent` created (`TraceContext::of_request`).
//! - `request_spans/off`: export off: the same, plus the marks a proxied request makes on an
//!   empty [`Recording`] (what every request pays when `[telemetry]` is absent).
//! - `request_spans/unsampled`: export on, a trace the gateway starts and does not sample
//!   (`sample_ratio = 0.0`): the sampler's decision written as `-00`, then the same marks.
//! - `request_spans/sampled`: export on at ratio 1.0: the record, a clock read per span
//!   boundary, the upstream's `traceparent`, and the queue (drained by the bench as the
//!   export task would, so it never fills).
//!
//! `cargo bench --bench spans`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Method, Version};
use portcullis::telemetry::spans::{Recording, RequestInfo, Sampler, Step, Tracer, UpstreamCall};
use portcullis::telemetry::trace::TraceContext;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

/// The marks `pipeline::proxy` makes on one authenticated, forwarded request.
fn marks(rec: &mut Recording) {
    rec.start(Step::Authenticate);
    rec.end(Step::Authenticate, None);
    rec.start(Step::Revocation);
    rec.end(Step::Revocation, None);
    let tp = rec.start_upstream();
    std::hint::black_box(tp);
    rec.end_upstream(
        || UpstreamCall {
            target: None,
            attempts: 1,
            status: Some(200),
        },
        None,
    );
}

fn one_request(tracer: &Tracer) {
    let mut headers = HeaderMap::new();
    let trace = tracer.trace_of(&mut headers);
    let info = RequestInfo {
        method: &Method::GET,
        path: "/api/orders/42",
        tls: true,
        version: Version::HTTP_11,
        peer: IpAddr::from([127, 0, 0, 1]),
    };
    let mut rec = tracer.begin(&trace, &headers, info);
    marks(&mut rec);
    tracer.finish(rec, "api", 200, None);
}

fn request_spans(c: &mut Criterion) {
    let mut g = c.benchmark_group("request_spans");
    g.bench_function("baseline", |b| {
        b.iter(|| {
            let mut headers = HeaderMap::new();
            std::hint::black_box(TraceContext::of_request(&mut headers));
        })
    });
    g.bench_function("off", |b| {
        b.iter(|| {
            let mut headers = HeaderMap::new();
            let trace = TraceContext::of_request(&mut headers);
            let mut rec = std::hint::black_box(Recording::OFF);
            marks(&mut rec);
            std::hint::black_box((trace, rec));
        })
    });
    let (tx, _rx) = mpsc::channel(16);
    let unsampled = Tracer::new(Sampler::new(0.0), tx, Counter::default());
    g.bench_function("unsampled", |b| b.iter(|| one_request(&unsampled)));
    let (tx, mut rx) = mpsc::channel(1024);
    let sampled = Tracer::new(Sampler::new(1.0), tx, Counter::default());
    g.bench_function("sampled", |b| {
        b.iter(|| {
            one_request(&sampled);
            while let Ok(r) = rx.try_recv() {
                drop(r);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, request_spans);
criterion_main!(benches);
