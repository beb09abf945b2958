//! The per-request DPoP proof check (RFC 9449): parse, public `jwk` to key, RFC 7638
//! thumbprint, one ES256 (or EdDSA) verification, claims, `ath` (one SHA-256), and the
//! replay-cache insert. Each iteration checks a fresh proof, as a client sends one per
//! request; proofs are signed before the timing loop.
//!
//! `cargo bench --bench dpop`

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use portcullis::auth::dpop::{self, Expect, ReplayCache, Settings};
use portcullis::auth::keys::JwsAlg;
use sha2::{Digest, Sha256};

const HTU: &str = "https://api.example.com/payments";
const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEyMzQ1In0.c2lnbmF0dXJl";

fn now() -> u64 {
    portcullis::clock::unix_now()
}

/// Sign proofs with `sign`, whose public key is `jwk`.
fn proofs(
    alg: &str,
    jwk: serde_json::Value,
    sign: &dyn Fn(&[u8]) -> Vec<u8>,
    n: usize,
) -> Vec<String> {
    let header = serde_json::json!({"typ": "dpop+jwt", "alg": alg, "jwk": jwk});
    let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(TOKEN.as_bytes()));
    (0..n)
        .map(|i| {
            let claims = serde_json::json!({
                "jti": format!("bench-{i}-{}", rand_suffix()), "htm": "GET", "htu": HTU,
                "iat": now(), "ath": ath,
            });
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let sig = sign(input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
        })
        .collect()
}

fn rand_suffix() -> u64 {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).expect("random");
    u64::from_le_bytes(b)
}

fn bench(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let settings = Settings {
        algs: vec![JwsAlg::ES256, JwsAlg::EdDSA],
        max_age: Duration::from_secs(3600),
        leeway: 5,
    };
    let want = Expect {
        method: "GET",
        htu: HTU,
        access_token: Some(TOKEN),
    };

    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let ec =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("key");
    let point = ec.public_key().as_ref().to_vec();
    let ec_jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    });
    let ec_sign = |m: &[u8]| ec.sign(&rng, m).expect("sign").as_ref().to_vec();

    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    let ed = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
    let ed_jwk = serde_json::json!({
        "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(ed.public_key().as_ref()),
    });
    let ed_sign = |m: &[u8]| ed.sign(m).as_ref().to_vec();

    let mut group = c.benchmark_group("dpop_proof");
    for (name, alg, jwk, sign) in [
        (
            "ES256",
            "ES256",
            ec_jwk,
            &ec_sign as &dyn Fn(&[u8]) -> Vec<u8>,
        ),
        (
            "EdDSA",
            "EdDSA",
            ed_jwk,
            &ed_sign as &dyn Fn(&[u8]) -> Vec<u8>,
        ),
    ] {
        let pool = proofs(alg, jwk, sign, 2000);
        let cache = ReplayCache::new();
        let mut next = 0usize;
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    next += 1;
                    pool[next % pool.len()].clone()
                },
                |proof| {
                    let t = now();
                    let p = dpop::check(&proof, &settings, &want, t).expect("valid proof");
                    // A pool proof comes round again; a replay is counted, not an error here.
                    cache.first_use(ReplayCache::key(&p), t + 60, t)
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
