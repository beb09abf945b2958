//! What picking a target costs a request (issue 16: at most 0.5 us): each `balance` policy
//! over two and three healthy targets, one policy with a target ejected, and the
//! single-target case (`upstream = ..`, which never picks).
//!
//! `cargo bench --bench balance`

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); this covers the helpers here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::atomic::AtomicUsize;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::routing::{Balance, UpstreamTarget};
use portcullis::upstream::balance::{pick, PickContext};
use portcullis::upstream::target::now_ms;
use portcullis::upstream::TargetSet;

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

fn policies(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    let users: Vec<String> = (0..1024)
        .map(|i| format!("user-{i:04}@example.com"))
        .collect();
    for n in [2usize, 3] {
        for balance in [
            Balance::RoundRobin,
            Balance::LeastRequests,
            Balance::UserHash,
        ] {
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

criterion_group!(benches, policies);
criterion_main!(benches);
