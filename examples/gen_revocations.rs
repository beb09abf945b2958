//! Writes a revocation store with N live token revocations, for load tests and restart
//! measurements: `cargo run --release --example gen_revocations -- N PATH [--ttl SECS]
//! [--subjects M] [--force]`.
//!
//! The file is written through the gateway's own log writer (`Log::append`), so it is
//! exactly what a gateway that had received N revokes would hold. Keys are digests of
//! `gen-revocation-<i>`, expiries spread over an hour after `now + ttl` (default 1 day).

// A measurement program: a failed unwrap aborts the run, which is what it should do. The
// gateway itself denies these (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use portcullis::revocation::{digest, now_unix, Log, Record};

/// Records per `Log::append` call (each call is one write and one fsync).
const CHUNK: usize = 100_000;

struct Args {
    tokens: usize,
    subjects: usize,
    path: PathBuf,
    ttl: u64,
    force: bool,
}

fn usage() -> ExitCode {
    eprintln!("usage: gen_revocations N PATH [--ttl SECS] [--subjects M] [--force]");
    ExitCode::from(2)
}

fn parse() -> Option<Args> {
    let mut positional = Vec::new();
    let mut ttl = 86_400;
    let mut subjects = 0;
    let mut force = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--ttl" => ttl = it.next()?.parse().ok()?,
            "--subjects" => subjects = it.next()?.parse().ok()?,
            "--force" => force = true,
            _ => positional.push(a),
        }
    }
    let [n, path] = <[String; 2]>::try_from(positional).ok()?;
    Some(Args {
        tokens: n.replace('_', "").parse().ok()?,
        subjects,
        path: path.into(),
        ttl,
        force,
    })
}

fn main() -> ExitCode {
    let Some(args) = parse() else {
        return usage();
    };
    if args.path.exists() {
        if !args.force {
            eprintln!(
                "gen_revocations: {} exists; pass --force to replace it",
                args.path.display()
            );
            return ExitCode::FAILURE;
        }
        if let Err(e) = std::fs::remove_file(&args.path) {
            eprintln!(
                "gen_revocations: cannot remove {}: {e}",
                args.path.display()
            );
            return ExitCode::FAILURE;
        }
    }
    let started = Instant::now();
    let (log, _) = match Log::open(&args.path) {
        Ok(opened) => opened,
        Err(e) => {
            eprintln!("gen_revocations: {e}");
            return ExitCode::FAILURE;
        }
    };
    let base = now_unix() + args.ttl;
    let tokens = (0..args.tokens).map(|i| Record::RevokeToken {
        key: digest(format!("gen-revocation-{i}").as_bytes()),
        exp: base + (i as u64 % 3600),
    });
    let subjects = (0..args.subjects).map(|i| Record::RevokeSubject {
        key: digest(format!("gen-subject-{i}").as_bytes()),
        revoked_before: base - args.ttl,
        expires: base + (i as u64 % 3600),
    });
    let records: Vec<Record> = tokens.chain(subjects).collect();
    for chunk in records.chunks(CHUNK) {
        if let Err(e) = log.append(chunk) {
            eprintln!("gen_revocations: {e}");
            return ExitCode::FAILURE;
        }
    }
    eprintln!(
        "gen_revocations: wrote {} token and {} subject revocations to {} ({} bytes) in {:.2} s",
        args.tokens,
        args.subjects,
        args.path.display(),
        log.len_bytes(),
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
