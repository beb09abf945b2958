//! Every signature algorithm the gateway supports, local JWKS keys, and key rotation: a token
//! is accepted exactly when a configured key pinned to its algorithm (and named by its `kid`)
//! verifies it, and the upstream then sees the token's user.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use common::tokens::{self, PemPair, HS256_SECRET, HS384_SECRET, HS512_SECRET};
use common::{hmac_key_toml, public_key_toml, Setup, TestGateway, Upstream};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey};

const ROUTES: &str = r#"
[[routes]]
prefix = "/"
upstream = "{up}"
auth = "jwt"
"#;

/// Write `pair`'s public key under `keys/` and return its path relative to the config.
fn write_public(setup: &Setup, name: &str, pair: &PemPair) -> PathBuf {
    let rel = format!("keys/{name}.pub.pem");
    setup.write(&rel, &pair.public_pem);
    PathBuf::from(rel)
}

async fn start(setup: Setup, keys: &str, up: &Upstream) -> TestGateway {
    setup
        .var("up", up.url())
        .start(&format!("{{listen}}\n{keys}\n{ROUTES}"))
        .await
}

/// Assert the token gets through and the upstream sees `sub` as the user.
async fn assert_accepted(gw: &TestGateway, token: &str, sub: &str, what: &str) {
    let r = gw.get("/whoami", Some(token)).await;
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    assert_eq!(r.echo().one("x-user-id"), Some(sub), "{what}");
}

/// Assert the token is refused with `invalid_token` and nothing reaches the upstream.
async fn assert_refused(gw: &TestGateway, up: &Upstream, token: &str, what: &str) {
    let before = up.hits();
    let r = gw.get("/whoami", Some(token)).await;
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains("error=\"invalid_token\""),
        "{what}: {challenge}"
    );
    assert_eq!(up.hits(), before, "{what}: the upstream was reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_is_accepted_with_its_key() {
    let up = Upstream::start().await;
    let setup = Setup::new();
    let (rsa, p256, p384, ed) = (
        tokens::rsa(),
        tokens::ec_p256(),
        tokens::ec_p384(),
        tokens::ed25519(),
    );
    let rsa_path = write_public(&setup, "rsa", &rsa);
    let mut keys = String::new();
    let mut cases: Vec<(Algorithm, &str, EncodingKey)> = Vec::new();
    for (alg, name, secret) in [
        (Algorithm::HS256, "HS256", HS256_SECRET),
        (Algorithm::HS384, "HS384", HS384_SECRET),
        (Algorithm::HS512, "HS512", HS512_SECRET),
    ] {
        keys += &hmac_key_toml(name, name, secret);
        cases.push((alg, name, EncodingKey::from_secret(secret.as_bytes())));
    }
    for (alg, name) in [
        (Algorithm::RS256, "RS256"),
        (Algorithm::RS384, "RS384"),
        (Algorithm::RS512, "RS512"),
        (Algorithm::PS256, "PS256"),
        (Algorithm::PS384, "PS384"),
        (Algorithm::PS512, "PS512"),
    ] {
        keys += &public_key_toml(name, name, &rsa_path);
        cases.push((alg, name, rsa.encoding()));
    }
    for (alg, name, pair) in [
        (Algorithm::ES256, "ES256", &p256),
        (Algorithm::ES384, "ES384", &p384),
        (Algorithm::EdDSA, "EdDSA", &ed),
    ] {
        keys += &public_key_toml(name, name, &write_public(&setup, name, pair));
        cases.push((alg, name, pair.encoding()));
    }
    let gw = start(setup, &keys, &up).await;

    for (alg, name, key) in &cases {
        let sub = format!("user-{name}");
        let token = tokens::sign(*alg, Some(name), key, &tokens::claims(&sub));
        assert_accepted(&gw, &token, &sub, name).await;
    }
    assert_eq!(up.hits(), cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_jwks_file_keys_are_accepted() {
    let up = Upstream::start().await;
    let setup = Setup::new();
    let (rsa, p256, p384) = (tokens::rsa(), tokens::ec_p256(), tokens::ec_p384());
    let mut p384_jwk = p384.jwk(Algorithm::ES384, "jwks-ec384");
    // No `alg`: the gateway infers ES384 from the P-384 curve.
    p384_jwk.common.key_algorithm = None;
    let set = JwkSet {
        keys: vec![
            rsa.jwk(Algorithm::RS256, "jwks-rsa"),
            p256.jwk(Algorithm::ES256, "jwks-ec"),
            p384_jwk,
        ],
    };
    setup.write(
        "keys/jwks.json",
        serde_json::to_vec(&set).expect("jwks json"),
    );
    let gw = start(setup, "[jwt]\njwks_file = \"keys/jwks.json\"\n", &up).await;

    let rs = tokens::sign(
        Algorithm::RS256,
        Some("jwks-rsa"),
        &rsa.encoding(),
        &tokens::claims("rsa-user"),
    );
    assert_accepted(&gw, &rs, "rsa-user", "RS256 from JWKS").await;
    let es = tokens::sign(
        Algorithm::ES256,
        Some("jwks-ec"),
        &p256.encoding(),
        &tokens::claims("ec-user"),
    );
    assert_accepted(&gw, &es, "ec-user", "ES256 from JWKS").await;
    let es384 = tokens::sign(
        Algorithm::ES384,
        Some("jwks-ec384"),
        &p384.encoding(),
        &tokens::claims("ec384-user"),
    );
    assert_accepted(&gw, &es384, "ec384-user", "ES384 inferred from curve").await;

    // The JWKS kid names a key: another key's signature under that kid is refused.
    let forged = tokens::sign(
        Algorithm::RS256,
        Some("jwks-rsa"),
        &tokens::rsa_attacker().encoding(),
        &tokens::claims("mallory"),
    );
    assert_refused(&gw, &up, &forged, "attacker RSA key under a JWKS kid").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_are_both_accepted_and_kid_selects_the_key() {
    let up = Upstream::start().await;
    let setup = Setup::new();
    const OLD: &str = "old-secret-old-secret-old-secret-0";
    const NEW: &str = "new-secret-new-secret-new-secret-1";
    let (ec_old, ec_new) = (tokens::ec_p256(), tokens::ec_p256());
    let keys = [
        hmac_key_toml("hs-old", "HS256", OLD),
        hmac_key_toml("hs-new", "HS256", NEW),
        public_key_toml("ec-old", "ES256", &write_public(&setup, "ec-old", &ec_old)),
        public_key_toml("ec-new", "ES256", &write_public(&setup, "ec-new", &ec_new)),
    ]
    .concat();
    let gw = start(setup, &keys, &up).await;

    let hs = |kid: &str, secret: &str, sub: &str| {
        tokens::sign(
            Algorithm::HS256,
            Some(kid),
            &EncodingKey::from_secret(secret.as_bytes()),
            &tokens::claims(sub),
        )
    };
    let es = |kid: &str, pair: &PemPair, sub: &str| {
        tokens::sign(
            Algorithm::ES256,
            Some(kid),
            &pair.encoding(),
            &tokens::claims(sub),
        )
    };
    assert_accepted(&gw, &hs("hs-old", OLD, "a"), "a", "HS256 old key").await;
    assert_accepted(&gw, &hs("hs-new", NEW, "b"), "b", "HS256 new key").await;
    assert_accepted(&gw, &es("ec-old", &ec_old, "c"), "c", "ES256 old key").await;
    assert_accepted(&gw, &es("ec-new", &ec_new, "d"), "d", "ES256 new key").await;

    // The kid selects exactly one key; a valid signature by its sibling does not count.
    assert_refused(&gw, &up, &hs("hs-old", NEW, "x"), "HS256 kid old, new key").await;
    assert_refused(&gw, &up, &hs("hs-new", OLD, "x"), "HS256 kid new, old key").await;
    assert_refused(
        &gw,
        &up,
        &es("ec-old", &ec_new, "x"),
        "ES256 kid old, new key",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_kid_every_key_pinned_to_the_alg_is_tried() {
    let up = Upstream::start().await;
    let setup = Setup::new();
    const A: &str = "first-secret-first-secret-first-00";
    const B: &str = "second-secret-second-secret-second";
    let rsa = tokens::rsa();
    let keys = [
        hmac_key_toml("a", "HS256", A),
        hmac_key_toml("b", "HS256", B),
        public_key_toml("r", "RS256", &write_public(&setup, "rsa", &rsa)),
    ]
    .concat();
    let gw = start(setup, &keys, &up).await;

    let hs = |secret: &str, sub: &str| {
        tokens::sign(
            Algorithm::HS256,
            None,
            &EncodingKey::from_secret(secret.as_bytes()),
            &tokens::claims(sub),
        )
    };
    assert_accepted(&gw, &hs(A, "first"), "first", "no kid, first HS256 key").await;
    assert_accepted(&gw, &hs(B, "second"), "second", "no kid, second HS256 key").await;
    let rs = tokens::sign(
        Algorithm::RS256,
        None,
        &rsa.encoding(),
        &tokens::claims("rsa"),
    );
    assert_accepted(&gw, &rs, "rsa", "no kid, RS256 key").await;

    let stranger = hs("third-secret-nobody-configured-xx", "x");
    assert_refused(&gw, &up, &stranger, "no kid, unknown HMAC secret").await;
    // An algorithm no key is pinned to finds no key, even with a signature that verifies
    // under some other interpretation.
    let ps = tokens::sign(
        Algorithm::PS256,
        None,
        &rsa.encoding(),
        &tokens::claims("x"),
    );
    assert_refused(&gw, &up, &ps, "no kid, PS256 with only an RS256 key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_signed_by_an_unconfigured_key_is_refused() {
    let up = Upstream::start().await;
    let setup = Setup::new();
    let (rsa, ec, ed) = (tokens::rsa(), tokens::ec_p256(), tokens::ed25519());
    let keys = [
        hmac_key_toml("hs", "HS256", HS256_SECRET),
        public_key_toml("rsa", "RS256", &write_public(&setup, "rsa", &rsa)),
        public_key_toml("ec", "ES256", &write_public(&setup, "ec", &ec)),
        public_key_toml("ed", "EdDSA", &write_public(&setup, "ed", &ed)),
    ]
    .concat();
    let gw = start(setup, &keys, &up).await;

    let claims = tokens::claims("mallory");
    let attacker_rsa = tokens::rsa_attacker().encoding();
    let attacker_ec = tokens::ec_p256().encoding();
    let attacker_ed = tokens::ed25519().encoding();
    let attacker_hs = EncodingKey::from_secret(b"not-the-configured-secret-at-all!");
    let cases = [
        (
            Algorithm::HS256,
            Some("hs"),
            &attacker_hs,
            "HS256 wrong secret",
        ),
        (
            Algorithm::RS256,
            Some("rsa"),
            &attacker_rsa,
            "RS256 with kid",
        ),
        (Algorithm::RS256, None, &attacker_rsa, "RS256 without kid"),
        (Algorithm::ES256, Some("ec"), &attacker_ec, "ES256 with kid"),
        (Algorithm::ES256, None, &attacker_ec, "ES256 without kid"),
        (Algorithm::EdDSA, Some("ed"), &attacker_ed, "EdDSA with kid"),
    ];
    for (alg, kid, key, what) in cases {
        let token = tokens::sign(alg, kid, key, &claims);
        assert_refused(&gw, &up, &token, what).await;
    }
    assert_eq!(up.hits(), 0);

    // Control: the configured keys still work on the same gateway.
    let good = tokens::hs256(Some("hs"), &tokens::claims("alice"));
    assert_accepted(&gw, &good, "alice", "configured HS256 key").await;
}

/// An ES256 gateway with no leeway, for the verified-token cache tests.
async fn start_es256(up: &Upstream) -> (TestGateway, PemPair) {
    let setup = Setup::new();
    let ec = tokens::ec_p256();
    let keys = format!(
        "[jwt]\nleeway = \"0s\"\n\n{}",
        public_key_toml("ec", "ES256", &write_public(&setup, "ec", &ec))
    );
    (start(setup, &keys, up).await, ec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_token_still_expires() {
    let up = Upstream::start().await;
    let (gw, ec) = start_es256(&up).await;
    let mut claims = tokens::claims("alice");
    claims["exp"] = serde_json::json!(tokens::now() + 2);
    let token = tokens::sign(Algorithm::ES256, Some("ec"), &ec.encoding(), &claims);
    // Twice: the second is answered from the verified-token cache.
    assert_accepted(&gw, &token, "alice", "fresh").await;
    assert_accepted(&gw, &token, "alice", "cached").await;

    // Once `exp` passes the token must be refused, cached or not (bounded poll: the clock
    // has to move on by up to two seconds).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = gw.get("/whoami", Some(&token)).await;
        if r.status == 401 {
            assert_eq!(r.json()["error_description"], "token expired");
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            tokio::time::Instant::now() < deadline,
            "a token past its exp is still accepted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let after = up.hits();
    let r = gw.get("/whoami", Some(&token)).await;
    assert_eq!(r.status, 401);
    assert_eq!(up.hits(), after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_token_does_not_vouch_for_a_tampered_copy() {
    let up = Upstream::start().await;
    let (gw, ec) = start_es256(&up).await;
    let token = tokens::sign(
        Algorithm::ES256,
        Some("ec"),
        &ec.encoding(),
        &tokens::claims("alice"),
    );
    assert_accepted(&gw, &token, "alice", "genuine").await;

    // Same header and payload, another key's signature; and the genuine signature with a
    // payload naming someone else.
    let (input, _) = token.rsplit_once('.').expect("three segments");
    let forged_sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &tokens::ec_p256().encoding(),
        Algorithm::ES256,
    )
    .expect("sign");
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = tokens::b64(tokens::claims("mallory").to_string());
    let swapped = parts.join(".");
    assert_refused(
        &gw,
        &up,
        &format!("{input}.{forged_sig}"),
        "foreign signature",
    )
    .await;
    assert_refused(
        &gw,
        &up,
        &swapped,
        "payload swapped under a cached signature",
    )
    .await;
    assert_accepted(&gw, &token, "alice", "genuine again").await;
}
