//! Arbitrary bytes as a bearer token: `Validator::verify` (and the clock-free variant used
//! for revocation) must never panic, and must only accept what the fixed keys signed or
//! encrypted: JWS (HS256, RS256) and JWE (`dir`/A256GCM, A128KW), nested or not.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use portcullis::auth::jwe::{DecryptionKey, KeyRing};
use portcullis::auth::jws::Validator;
use portcullis::auth::keys::{KeyMaterial, KeySet};

/// Keep in sync with scripts/make_seeds.py.
const HS_SECRET: &[u8] = b"fuzz-hs256-secret-0123456789abcdef";
const NOW: u64 = 1_800_000_000;
const RSA_PUBLIC_PEM: &[u8] = include_bytes!("../keys/rsa.pub.pem");
/// JWE keys, base64url: `dir` with A256GCM (bytes 0..32) and A128KW (bytes 0..16).
const JWE_DIR_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
const JWE_KW_KEY: &str = "AAECAwQFBgcICQoLDA0ODw";

static VALIDATOR: LazyLock<Validator> = LazyLock::new(|| {
    let keys = KeySet::build(
        vec![
            KeyMaterial {
                label: "fuzz-hs".into(),
                kid: Some("hs".into()),
                alg: "HS256".into(),
                secret: Some(HS_SECRET.to_vec()),
                secret_base64: false,
                public_pem: None,
                private_pem: None,
            },
            KeyMaterial {
                label: "fuzz-rsa".into(),
                kid: Some("rsa".into()),
                alg: "RS256".into(),
                secret: None,
                secret_base64: false,
                public_pem: Some(RSA_PUBLIC_PEM.to_vec()),
                private_pem: None,
            },
        ],
        None,
    )
    .expect("fuzz key set");
    Validator {
        keys,
        issuer: Some("https://issuer.fuzz".into()),
        audience: vec!["api".into()],
        leeway: 30,
        require_exp: true,
        max_token_bytes: 8192,
        user_claim: "sub".into(),
        extra_claims: vec!["roles".into(), "email".into()],
        jwe: Some(Arc::new(
            KeyRing::new(vec![
                DecryptionKey::from_config(
                    Some("jwe".into()),
                    "dir",
                    Some("A256GCM"),
                    Some(JWE_DIR_KEY),
                    None,
                    None,
                )
                .expect("dir key"),
                DecryptionKey::from_config(
                    Some("kw".into()),
                    "A128KW",
                    None,
                    Some(JWE_KW_KEY),
                    None,
                    None,
                )
                .expect("A128KW key"),
            ])
            .expect("key ring"),
        )),
        jwks: None,
        grants: None,
        issuers: None,
    }
});

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let timed = VALIDATOR.verify(token, NOW);
    let untimed = VALIDATOR.verify_ignoring_time(token);
    if let Ok(v) = &timed {
        // Only a strict base64url JWS (three segments) or JWE (five) can have verified.
        let segments = token.split('.').count();
        assert!(segments == 3 || segments == 5, "{token:?}");
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
            "{token:?}"
        );
        assert!(!v.user.is_empty());
        // What verifies at a time also verifies without the clock.
        assert!(untimed.is_ok(), "{token:?}");
    }
});
