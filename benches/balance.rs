//! What load balancing costs a request (issue 16: at most 0.5 us).
//!
//! - `pick/*`: the selection alone (clock read and `balance::pick`), each policy over two and
//!   three healthy targets, and round robin with a target ejected.
//! - `request/*`: what `upstream::Pool` does for a GET besides its network I/O
//!   (`Pool::dry_run`, the same functions `Pool::send` runs): on a route with several targets
//!   the pick and the head kept for a retry, then the attempt's URI, client lookup, request
//!   counter, in-flight count (`least_requests`) and answer bookkeeping. `request/one target`
//!   is the `upstream = ..` path, which picks nothing and keeps nothing: the cost of balancing
//!   is a policy's figure minus that one. The request's head is what the pipeline hands over
//!   (client headers parsed into one buffer, the gateway's own added one by one), built
//!   outside the timing.
//!
//! `cargo bench --bench balance`

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); this covers the helpers here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Method, Request, Version};
use portcullis::routing::{Balance, UpstreamTarget};
use portcullis::upstream::balance::{pick, PickContext};
use portcullis::upstream::target::now_ms;
use portcullis::upstream::{Pool, TargetSet, UpstreamBody};

// The allocator the gateway binary runs with (src/main.rs): the retry's copy of the head is
// allocations, and what they cost is the binary's figure, not the system allocator's.
#[global_allocator]
static ALLOCATOR: portcullis::allocator::SplitAllocator = portcullis::allocator::SplitAllocator;

const POLICIES: [Balance; 3] = [
    Balance::RoundRobin,
    Balance::LeastRequests,
    Balance::UserHash,
];

fn set(balance: Balance, n: usize) -> TargetSet {
    let targets = (0..n)
        .map(|i| {
            UpstreamTarget::new(
                http::uri::Scheme::HTTP,
                format!("10.0.0.{}:8080", i + 1).parse().unwrap(),
            )
        })
        .collect();
    TargetSet::detached(balance, targets)
}

fn users() -> Vec<String> {
    (0..1024)
        .map(|i| format!("user-{i:04}@example.com"))
        .collect()
}

fn policies(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    let users = users();
    for n in [2usize, 3] {
        for balance in POLICIES {
            let s = set(balance, n);
            let rr = AtomicUsize::new(0);
            let mut u = 0usize;
            g.bench_function(format!("{}/{n}", balance.as_str()), |b| {
                b.iter(|| {
                    u = (u + 1) & 1023;
                    let ctx = PickContext {
                        user: Some(users[u].as_bytes()),
                        exclude: None,
                    };
                    // The clock read is part of what a request pays for a pick.
                    black_box(pick(balance, &s.targets, now_ms(), &rr, black_box(ctx)))
                })
            });
        }
    }
    let s = set(Balance::RoundRobin, 3);
    s.targets[1].connect_failed(now_ms());
    let rr = AtomicUsize::new(0);
    g.bench_function("round_robin/3, one ejected", |b| {
        b.iter(|| {
            black_box(pick(
                Balance::RoundRobin,
                &s.targets,
                now_ms(),
                &rr,
                PickContext::default(),
            ))
        })
    });
    g.finish();
}

/// A GET as the pipeline hands it to the pool: the client's headers as hyper parses them
/// (slices of one read buffer), then what the gateway sets (`X-Forwarded-For` a clone of the
/// connection's value, `X-Forwarded-Proto` static, `X-Forwarded-Host` the client's host, the
/// request id and user id freshly made), and the path built into a fresh `String`, as
/// `pipeline::forward` does.
fn request(forwarded_for: &HeaderValue) -> (Request<UpstreamBody>, PathAndQuery) {
    let token = format!(
        "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{}.{}",
        "e".repeat(180),
        "s".repeat(43)
    );
    let values = [
        "api.example.com",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
        "application/json",
        token.as_str(),
        "gzip, deflate, br",
    ];
    let wire = Bytes::from(values.join("|"));
    let mut req = Request::new(UpstreamBody::empty());
    *req.method_mut() = Method::GET;
    *req.version_mut() = Version::HTTP_11;
    let h = req.headers_mut();
    let mut at = 0;
    for (name, value) in [
        "host",
        "user-agent",
        "accept",
        "authorization",
        "accept-encoding",
    ]
    .into_iter()
    .zip(values)
    {
        let v = HeaderValue::from_maybe_shared(wire.slice(at..at + value.len())).unwrap();
        at += value.len() + 1;
        h.insert(HeaderName::from_static(name), v);
    }
    let host = h.get("host").unwrap().clone();
    h.insert("x-forwarded-for", forwarded_for.clone());
    h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    h.insert("x-forwarded-host", host);
    h.insert(
        "x-request-id",
        HeaderValue::from_str("01J9ZQ4T7X3M5K8N2P6R4S1V0W").unwrap(),
    );
    h.insert(
        "x-user-id",
        HeaderValue::from_str("user-0042@example.com").unwrap(),
    );
    let path = PathAndQuery::try_from(String::from("/api/v1/orders/12345?expand=items")).unwrap();
    (req, path)
}

fn request_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("request");
    let users = users();
    let mut cases: Vec<(String, Pool)> = vec![(
        "one target".into(),
        Pool::new(Arc::new(set(Balance::RoundRobin, 1))),
    )];
    for n in [2usize, 3] {
        for balance in POLICIES {
            cases.push((
                format!("{}/{n}", balance.as_str()),
                Pool::new(Arc::new(set(balance, n))),
            ));
        }
    }
    let forwarded_for = HeaderValue::from_str("203.0.113.7").unwrap();
    for (name, pool) in &cases {
        let mut u = 0usize;
        g.bench_function(name.as_str(), |b| {
            b.iter_batched(
                || request(&forwarded_for),
                |(req, path)| {
                    u = (u + 1) & 1023;
                    // Returned, so the request's own drop stays outside the timing (the
                    // retry state's drop, a cost of balancing, is inside).
                    pool.dry_run(req, path, Some(users[u].as_bytes())).unwrap()
                },
                BatchSize::SmallInput,
            )
        });
    }
    // The part of the above that keeps a retry possible: the head's headers copied and
    // dropped (where the difference between one target and several mostly goes).
    g.bench_function("retry head alone", |b| {
        b.iter_batched(
            || request(&forwarded_for),
            |(req, path)| {
                drop(black_box(req.headers().clone()));
                (req, path)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, policies, request_path);
criterion_main!(benches);
