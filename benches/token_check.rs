//! The per-request token check (split, strict base64url, header parse, key selection,
//! signature verification, claims parse and checks), per algorithm.
//!
//! Plus `ES512` (P-521, verified through aws-lc-rs directly), `HS256-beside-issuers` (the same
//! token with `[[jwt.issuers]]` configured: the cost of selecting the issuer by `iss`) and
//! `cache-hit`: a repeat token served by the verified-token cache.
//!
//! `cargo bench --bench token_check`

// A measurement program: a failed unwrap aborts the run, which is what it should do. The
// gateway itself denies these (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::auth::cache::{TokenCache, DEFAULT_CACHE_ENTRIES};
use portcullis::auth::jws::Validator;
use portcullis::auth::keys::{KeyMaterial, KeySet};
use rcgen::{KeyPair, SignatureAlgorithm};

const SECRET: &[u8] = b"bench-secret-0123456789abcdef0123456789abcdef0123456789abcdef012345";

fn claims(now: u64) -> serde_json::Value {
    serde_json::json!({
        "sub": "user-12345", "iat": now, "exp": now + 3600,
        "jti": "0f8fad5b-d9cb-469f-a165-70867728950e", "iss": "https://issuer.example", "aud": "api"
    })
}

/// Two issuers with empty key sets (their keys are never tried for the `[jwt]` issuer's
/// token; only the selection by `iss` is measured).
fn issuers() -> portcullis::auth::issuers::Issuers {
    use portcullis::auth::jwks::{FetchOptions, Refresher, Source};
    let issuer = |name: &str| portcullis::auth::issuers::Issuer {
        name: name.into(),
        iss: format!("https://{name}.example/"),
        audience: vec!["api".into()],
        leeway: 30,
        user_claim: "sub".into(),
        keys: Refresher::new(
            Source::File("/nonexistent".into()),
            FetchOptions::default(),
            Vec::new(),
            std::time::Duration::from_secs(300),
            std::time::Duration::from_secs(10),
        ),
    };
    portcullis::auth::issuers::Issuers {
        list: vec![issuer("idp"), issuer("partner")],
    }
}

fn keypair(alg: Algorithm) -> Option<KeyPair> {
    let a: &SignatureAlgorithm = match alg {
        Algorithm::RS256 | Algorithm::PS256 => &rcgen::PKCS_RSA_SHA256,
        Algorithm::RS384 | Algorithm::PS384 => &rcgen::PKCS_RSA_SHA384,
        Algorithm::RS512 | Algorithm::PS512 => &rcgen::PKCS_RSA_SHA512,
        Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        Algorithm::ES384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        Algorithm::EdDSA => &rcgen::PKCS_ED25519,
        _ => return None,
    };
    Some(KeyPair::generate_for(a).expect("key generation"))
}

fn setup(alg: Algorithm, now: u64) -> (Validator, String) {
    let name = format!("{alg:?}");
    let (material, encoding) = match keypair(alg) {
        None => (
            KeyMaterial {
                label: "bench".into(),
                kid: Some("k".into()),
                alg: name,
                secret: Some(SECRET.to_vec()),
                secret_base64: false,
                public_pem: None,
                private_pem: None,
            },
            EncodingKey::from_secret(SECRET),
        ),
        Some(kp) => {
            let private = kp.serialize_pem();
            let encoding = match alg {
                Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(private.as_bytes()),
                Algorithm::EdDSA => EncodingKey::from_ed_pem(private.as_bytes()),
                _ => EncodingKey::from_rsa_pem(private.as_bytes()),
            }
            .expect("encoding key");
            (
                KeyMaterial {
                    label: "bench".into(),
                    kid: Some("k".into()),
                    alg: name,
                    secret: None,
                    secret_base64: false,
                    public_pem: Some(kp.public_key_pem().into_bytes()),
                    private_pem: None,
                },
                encoding,
            )
        }
    };
    let keys = KeySet::build(vec![material], None).expect("key set");
    let validator = Validator {
        keys,
        issuer: Some("https://issuer.example".into()),
        audience: vec!["api".into()],
        leeway: 30,
        require_exp: true,
        max_token_bytes: 8192,
        user_claim: "sub".into(),
        extra_claims: Vec::new(),
        jwe: None,
        jwks: None,
        grants: None,
        issuers: None,
    };
    let mut header = Header::new(alg);
    header.kid = Some("k".into());
    let token = jsonwebtoken::encode(&header, &claims(now), &encoding).expect("sign");
    (validator, token)
}

/// ES512: `jsonwebtoken` cannot sign it, so the token is signed with aws-lc-rs here.
fn setup_es512(now: u64) -> (Validator, String) {
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P521_SHA512_FIXED_SIGNING};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let kp = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).expect("P-521 key");
    let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P521_SHA512_FIXED_SIGNING, &kp.serialize_der())
        .expect("signing key");
    let keys = KeySet::build(
        vec![KeyMaterial {
            label: "bench".into(),
            kid: Some("k".into()),
            alg: "ES512".into(),
            secret: None,
            secret_base64: false,
            public_pem: Some(kp.public_key_pem().into_bytes()),
            private_pem: None,
        }],
        None,
    )
    .expect("key set");
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"ES512","kid":"k"}"#),
        URL_SAFE_NO_PAD.encode(claims(now).to_string())
    );
    let sig = signer
        .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
        .expect("sign");
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
    let validator = Validator {
        keys,
        issuer: Some("https://issuer.example".into()),
        audience: vec!["api".into()],
        leeway: 30,
        require_exp: true,
        max_token_bytes: 8192,
        user_claim: "sub".into(),
        extra_claims: Vec::new(),
        jwe: None,
        jwks: None,
        grants: None,
        issuers: None,
    };
    (validator, token)
}

fn token_check(c: &mut Criterion) {
    let now = portcullis::pipeline::unix_now();
    let mut group = c.benchmark_group("token_check");
    for alg in [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let (validator, token) = setup(alg, now);
        assert!(
            validator.verify(&token, now).is_ok(),
            "{alg:?} token must verify"
        );
        group.bench_function(format!("{alg:?}"), |b| {
            b.iter(|| validator.verify(std::hint::black_box(&token), now))
        });
    }
    let (validator, token) = setup_es512(now);
    assert!(
        validator.verify(&token, now).is_ok(),
        "ES512 token must verify"
    );
    group.bench_function("ES512", |b| {
        b.iter(|| validator.verify(std::hint::black_box(&token), now))
    });
    // A forged HS256 token: the cost an attacker imposes per request.
    let (validator, token) = setup(Algorithm::HS256, now);
    let forged = format!("{}AAAA", &token[..token.len() - 4]);
    group.bench_function("HS256-forged", |b| {
        b.iter(|| validator.verify(std::hint::black_box(&forged), now))
    });
    // The same HS256 token with two `[[jwt.issuers]]` configured beside the `[jwt]` issuer:
    // what selecting the issuer by `iss` adds (the payload is parsed before the signature).
    let beside = Validator {
        issuers: Some(std::sync::Arc::new(issuers())),
        ..setup(Algorithm::HS256, now).0
    };
    assert!(beside.verify(&token, now).is_ok(), "HS256 beside issuers");
    group.bench_function("HS256-beside-issuers", |b| {
        b.iter(|| beside.verify(std::hint::black_box(&token), now))
    });
    // A repeat token found in the verified-token cache (any algorithm): what the request path
    // pays instead of the rows above once a token has been seen.
    let cache = TokenCache::new(DEFAULT_CACHE_ENTRIES);
    let verified = std::sync::Arc::new(validator.verify(&token, now).expect("verifies"));
    cache.insert(TokenCache::key(&token), verified, cache.generation());
    group.bench_function("cache-hit", |b| {
        b.iter(|| {
            let key = TokenCache::key(std::hint::black_box(&token));
            cache.get(&key, now)
        })
    });
    group.finish();
}

criterion_group!(benches, token_check);
criterion_main!(benches);
