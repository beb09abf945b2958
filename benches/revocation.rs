//! The revocation check on the request path (`Revocations::is_revoked`, what
//! `pipeline::check_revocation` calls) with 1M revoked tokens: a hit, a miss (which also
//! probes the subject map), the `jti` digest plus lookup, and a mixed stream from 1 and from
//! 2 threads at once.
//!
//! `cargo bench --bench revocation`. Memory per entry and restart time are not criterion
//! figures: `cargo run --release --example revocation_measure`.

// A measurement program: a failed unwrap aborts the run, which is what it should do. The
// gateway itself denies these (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::HeaderValue;
use portcullis::auth::jws::Verified;
use portcullis::revocation::{digest, Key, Revocations};

const ENTRIES: u64 = 1_000_000;
/// Distinct probe keys per kind: as many as there are entries, so successive probes land
/// in different cache lines (the request path sees unrelated tokens one after another).
const PROBES: u64 = 1_000_000;
/// Revoked subjects besides the tokens, so a miss pays for a real second probe.
const SUBJECTS: u64 = 10_000;

fn key(i: u64) -> Key {
    digest(format!("{i:032x}-jti").as_bytes())
}

fn sub_key(i: u64) -> Key {
    digest(format!("user-{i}").as_bytes())
}

/// 1M revoked tokens (and some subjects) in the service the gateway uses.
fn revocations() -> Revocations {
    let revs = Revocations::in_memory(30, 86_400);
    let far = portcullis::revocation::now_unix() + 86_400;
    for i in 0..ENTRIES {
        revs.dict().revoke_token(key(i), far);
    }
    for i in 0..SUBJECTS {
        revs.dict().revoke_subject(sub_key(i), 1, far);
    }
    assert_eq!(revs.dict().len_tokens(), ENTRIES as usize);
    revs
}

/// What authentication hands to the revocation check; only the keys and `iat` matter.
fn verified() -> Verified {
    Verified {
        user: HeaderValue::from_static("user"),
        extra: Default::default(),
        token_key: [0; 16],
        has_jti: true,
        sub_key: Some([0; 16]),
        sub: Some("user".into()),
        iat: Some(portcullis::revocation::now_unix()),
        exp: None,
        grants: None,
        jkt: None,
        issuer: 0,
        leeway: 30,
    }
}

/// Probe keys: revoked ones (`hit`) or never revoked ones, with subjects that are not
/// revoked, in an order unrelated to insertion.
fn probes(hit: bool) -> Vec<(Key, Key)> {
    (0..PROBES)
        .map(|i| {
            let j = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % ENTRIES;
            let token = if hit { key(j) } else { key(ENTRIES + j) };
            (token, sub_key(SUBJECTS + j))
        })
        .collect()
}

fn lookups(c: &mut Criterion) {
    let revs = revocations();
    let mut group = c.benchmark_group("is_revoked_1M");
    group.throughput(Throughput::Elements(1));
    for (name, hit) in [("hit", true), ("miss", false)] {
        let keys = probes(hit);
        let mut v = verified();
        let mut i = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                let (t, s) = keys[i % keys.len()];
                i = i.wrapping_add(1);
                v.token_key = t;
                v.sub_key = Some(s);
                let r = revs.is_revoked(black_box(&v.ids()));
                debug_assert_eq!(r, hit);
                r
            })
        });
    }

    // What the request path pays when it starts from the claim text: SHA-256 of a
    // UUID-sized jti (done by the validator) plus the lookup.
    let jtis: Vec<String> = (0..PROBES)
        .map(|i| format!("{:08x}-9dad-11d1-80b4-{:012x}", i, i * 7))
        .collect();
    let mut v = verified();
    let mut i = 0usize;
    group.bench_function("digest_36B_jti_then_miss", |b| {
        b.iter(|| {
            let jti = &jtis[i % jtis.len()];
            i = i.wrapping_add(1);
            v.token_key = digest(black_box(jti.as_bytes()));
            revs.is_revoked(&v.ids())
        })
    });

    // The same mixed stream (alternately a hit and a miss) from 1 thread, then from 2 at
    // once: lookups/s across all threads, and how far it scales on two cores.
    let mixed: Vec<(Key, Key)> = probes(true)
        .into_iter()
        .zip(probes(false))
        .flat_map(|(h, m)| [h, m])
        .collect();
    for threads in [1u64, 2] {
        group.throughput(Throughput::Elements(threads));
        group.bench_function(format!("half_hits_threads_{threads}"), |b| {
            b.iter_custom(|iters| concurrent_lookups(&revs, &mixed, threads as usize, iters))
        });
    }
    group.finish();
}

/// `threads` threads each doing `iters` lookups from their own offset into `keys`; returns
/// the wall time from the moment all are ready until the last one finishes.
fn concurrent_lookups(
    revs: &Revocations,
    keys: &[(Key, Key)],
    threads: usize,
    iters: u64,
) -> Duration {
    let start = Barrier::new(threads + 1);
    // The scope joins every thread before it returns, so `t0.elapsed()` afterwards covers
    // all their work and excludes spawning them.
    let t0 = std::thread::scope(|s| {
        for t in 0..threads {
            let start = &start;
            s.spawn(move || {
                let mut v = verified();
                let mut n = 0usize;
                let offset = t * keys.len() / threads;
                start.wait();
                for i in 0..iters as usize {
                    let (k, sk) = keys[(offset + i) % keys.len()];
                    v.token_key = k;
                    v.sub_key = Some(sk);
                    n += usize::from(revs.is_revoked(black_box(&v.ids())));
                }
                black_box(n);
            });
        }
        start.wait();
        Instant::now()
    });
    t0.elapsed()
}

criterion_group! {
    name = benches;
    // Short runs: the box is shared; these figures are about orders of magnitude.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = lookups
}
criterion_main!(benches);
