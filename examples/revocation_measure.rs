//! Measures the revocation figures criterion does not: resident memory per entry at 1M
//! entries, restart time (replaying the store) with 1M entries on disk, the gateway's
//! start-up with that store, and a sweep of 1M entries.
//!
//! `cargo run --release --example revocation_measure [-- N]` (N defaults to 1,000,000).
//! Each memory figure is taken in a fresh process (the example re-runs itself), so memory
//! freed by an earlier step cannot be reused and hide the real cost.

// A measurement program: a failed unwrap aborts the run, which is what it should do. The
// gateway itself denies these (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use portcullis::revocation::{digest, now_unix, Dictionary, Key, Log, Record};

// The allocator the gateway binary runs with (src/main.rs): the figures are the binary's.
#[global_allocator]
static ALLOCATOR: portcullis::allocator::SplitAllocator = portcullis::allocator::SplitAllocator;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn key(i: u64) -> Key {
    digest(format!("measure-{i}").as_bytes())
}

fn per_entry(before: u64, after: u64, n: u64) -> f64 {
    after.saturating_sub(before) as f64 * 1024.0 / n as f64
}

/// `mem KIND N [PATH]`, in a child process.
fn memory(kind: &str, n: u64, path: Option<&str>) {
    let far = now_unix() + 86_400;
    match kind {
        // What a restart builds: the log replayed into a dictionary pre-sized from it.
        "replay" => {
            let path = path.expect("replay needs the log path");
            let before = rss_kib();
            let (log, replay) = Log::open(path).expect("open log");
            let after = rss_kib();
            println!(
                "memory, {n} tokens replayed from the log (what a restart holds): {:.1} B/entry \
                 resident (VmRSS {before} -> {after} KiB, {} entries)",
                per_entry(before, after, n),
                replay.dict.len_tokens()
            );
            drop((log, replay));
        }
        _ => {
            let keys: Vec<Key> = (0..n).map(key).collect();
            let before = rss_kib();
            let d = match kind {
                "tokens-presized" => Dictionary::with_capacity(n as usize, 0),
                "subjects" => Dictionary::with_capacity(0, n as usize),
                _ => Dictionary::new(),
            };
            for (i, k) in keys.iter().enumerate() {
                if kind == "subjects" {
                    d.revoke_subject(*k, 1, far + i as u64);
                } else {
                    d.revoke_token(*k, far + i as u64);
                }
            }
            let after = rss_kib();
            println!(
                "memory, {n} {kind} revoked one by one: {:.1} B/entry resident (VmRSS {before} -> {after} KiB)",
                per_entry(before, after, n)
            );
            drop(d);
        }
    }
}

fn write_log(path: &Path, n: u64) {
    let far = now_unix() + 86_400;
    let (log, _) = Log::open(path).expect("create log");
    let records: Vec<Record> = (0..n)
        .map(|i| Record::RevokeToken {
            key: key(i),
            exp: far + i % 3600,
        })
        .collect();
    for chunk in records.chunks(100_000) {
        log.append(chunk).expect("append");
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Replays the log `runs` times; returns (min, median) and the number of entries.
fn time_open(path: &Path, runs: usize) -> (Duration, Duration, usize) {
    let mut times = Vec::new();
    let mut entries = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let (log, replay) = Log::open(path).expect("open");
        times.push(t.elapsed());
        entries = replay.dict.len_tokens();
        drop((log, replay));
    }
    let min = *times.iter().min().expect("runs > 0");
    (min, median(times), entries)
}

/// `portcullis::start` on a config whose store is `store`, until the listeners are bound.
fn time_gateway_start(store: &Path) -> Duration {
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n\n[[jwt.keys]]\nkid = \"k\"\nalg = \"HS256\"\n\
         secret = \"measure-secret-0123456789abcdef0123\"\n\n[[routes]]\nprefix = \"/\"\n\
         upstream = \"http://127.0.0.1:9\"\nauth = \"jwt\"\n\n[revocation]\nstore = \"{}\"\n",
        store.display()
    );
    let config = portcullis::Config::from_toml(&text, Path::new(".")).expect("config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let t = Instant::now();
        let gateway = portcullis::start(config).await.expect("gateway starts");
        let took = t.elapsed();
        gateway.shutdown_with_grace(Duration::from_secs(1)).await;
        took
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("mem") {
        let n = args[3].parse().expect("N");
        memory(&args[2], n, args.get(4).map(String::as_str));
        return;
    }
    let n: u64 = args
        .get(1)
        .map(|s| s.replace('_', "").parse().expect("N is a number"))
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("temp dir");
    let path = dir.path().join("revocations.log");
    let t = Instant::now();
    write_log(&path, n);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "store: {n} revocations, {:.1} MB, written in {:.0} ms",
        size as f64 / 1e6,
        ms(t.elapsed())
    );

    let exe = std::env::current_exe().expect("own path");
    let n_arg = n.to_string();
    for kind in ["replay", "tokens-grown", "tokens-presized", "subjects"] {
        let mut cmd = Command::new(&exe);
        cmd.args(["mem", kind, &n_arg]);
        if kind == "replay" {
            cmd.arg(&path);
        }
        let status = cmd.status().expect("re-run self");
        assert!(status.success(), "memory measurement {kind} failed");
    }

    // Restart: the file is in the page cache (just written or read), as on a restart of a
    // running service; a cold start adds one sequential read of the file.
    let (min, med, entries) = time_open(&path, 5);
    println!(
        "restart: Log::open + replay of {entries} entries in append order: min {:.0} ms, median {:.0} ms (5 runs)",
        ms(min),
        ms(med)
    );
    let empty = dir.path().join("empty.log");
    println!(
        "restart: portcullis::start until listening, empty store {:.0} ms, {n} entries {:.0} ms",
        ms(time_gateway_start(&empty)),
        ms(time_gateway_start(&path))
    );

    // After a compaction the file lists keys in table order, which replays faster.
    let (log, replay) = Log::open(&path).expect("open");
    let t = Instant::now();
    let stats = log
        .compact(&replay.dict, now_unix(), 30)
        .expect("compaction");
    println!(
        "compaction: {} live entries rewritten in {:.0} ms (appends held {:.1} ms)",
        stats.live,
        ms(t.elapsed()),
        ms(stats.pause)
    );
    let t = Instant::now();
    let dropped = replay.dict.sweep(now_unix(), 30);
    println!(
        "sweep: {} entries scanned, {dropped} dropped, {:.1} ms",
        replay.dict.len_tokens(),
        ms(t.elapsed())
    );
    drop((log, replay));
    let (min, med, entries) = time_open(&path, 5);
    println!(
        "restart: Log::open + replay of {entries} entries just compacted: min {:.0} ms, median {:.0} ms (5 runs)",
        ms(min),
        ms(med)
    );
}
