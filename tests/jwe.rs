//! Encrypted tokens through the real gateway: tokens written by independent implementations
//! (jwcrypto and node jose, `scripts/gen_jwe_vectors.py`) for every supported alg/enc pair
//! are accepted with the user injected; tampered ones are refused with the same answer as a
//! wrong key, and nothing reaches the upstream. Under public-key management (RSA-OAEP*,
//! ECDH-ES*) only nested signed JWTs pass; bare claims sets are refused.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{Setup, TestGateway, Upstream};
use serde_json::Value;
use sha2::{Digest, Sha512};

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwe_jwcrypto.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture JSON")
}

/// The HS256 key of the nested JWS, derived as `gen_jwe_vectors.py` derives it.
fn nested_hs256_secret() -> String {
    let d = Sha512::digest(b"portcullis-jwe-fixture/nested-hs256");
    URL_SAFE_NO_PAD.encode(&d[..32])
}

/// A gateway configured with every fixture key (JWE) and the nested-JWS HMAC key: the
/// symmetric and RSA keys inline, the ECDH-ES keys through `decryption_jwks_file`, every
/// content encryption accepted.
async fn start(up: &Upstream) -> (TestGateway, Value) {
    let fx = fixture();
    let setup = Setup::new();
    let mut keys = String::new();
    let mut jwks = Vec::new();
    for k in fx["keys"].as_array().expect("keys") {
        if k["alg"].as_str().unwrap().starts_with("ECDH") {
            jwks.push(k["jwk"].clone());
            continue;
        }
        keys.push_str("[[jwt.decryption_keys]]\n");
        keys.push_str(&format!(
            "kid = \"{}\"\nalg = \"{}\"\n",
            k["kid"].as_str().unwrap(),
            k["alg"].as_str().unwrap()
        ));
        if let Some(enc) = k["enc"].as_str() {
            keys.push_str(&format!("enc = \"{enc}\"\n"));
        }
        if let Some(secret) = k["k"].as_str() {
            keys.push_str(&format!("key = \"{secret}\"\n"));
        }
        if let Some(pem) = k["pem"].as_str() {
            let rel = format!("keys/{}.pem", k["kid"].as_str().unwrap());
            setup.write(&rel, pem);
            keys.push_str(&format!("private_key = \"{rel}\"\n"));
        }
    }
    setup.write(
        "keys/enc-keys.json",
        serde_json::json!({ "keys": jwks }).to_string(),
    );
    let template = format!(
        "{{listen}}\n[jwt]\nleeway = \"30s\"\ndecryption_jwks_file = \"keys/enc-keys.json\"\ndecryption_encs = [\"A128GCM\", \"A192GCM\", \"A256GCM\", \"A128CBC-HS256\", \"A192CBC-HS384\", \"A256CBC-HS512\"]\n\n[[jwt.keys]]\nkid = \"nested\"\nalg = \"HS256\"\nsecret = \"{}\"\nsecret_base64 = true\n\n{keys}\n[[routes]]\nprefix = \"/\"\nupstream = \"{{up}}\"\nauth = \"jwt\"\n",
        nested_hs256_secret()
    );
    (setup.var("up", up.url()).start(&template).await, fx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwcrypto_and_jose_tokens_for_every_alg_and_enc_are_accepted() {
    let up = Upstream::start().await;
    let (gw, fx) = start(&up).await;
    let tokens = fx["tokens"].as_array().expect("tokens");
    assert!(
        tokens.len() >= 79,
        "fixture covers every pair plus a nested JWS"
    );
    let mut by = std::collections::BTreeSet::new();
    for t in tokens {
        let what = format!(
            "{} + {} (cty {:?}, by {})",
            t["alg"], t["enc"], t["cty"], t["by"]
        );
        let r = gw.get("/who", Some(t["token"].as_str().unwrap())).await;
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        assert_eq!(r.echo().one("x-user-id"), Some("user-4711"), "{what}");
        by.insert((
            t["by"].as_str().unwrap().to_owned(),
            t["alg"].as_str().unwrap().to_owned(),
        ));
    }
    // node jose made a token for every key management but dir's own (each dir enc too).
    for alg in [
        "A192KW",
        "A128GCMKW",
        "A256GCMKW",
        "RSA-OAEP",
        "ECDH-ES",
        "ECDH-ES+A128KW",
        "ECDH-ES+A192KW",
        "ECDH-ES+A256KW",
        "dir",
    ] {
        assert!(
            by.contains(&("jose".to_owned(), alg.to_owned())),
            "no jose token for {alg}"
        );
    }
    // Bare claims sets under public-key management: anyone with the public key made them.
    for t in fx["bare_asymmetric"].as_array().unwrap() {
        let r = gw.get("/who", Some(t["token"].as_str().unwrap())).await;
        assert_eq!(
            r.status,
            401,
            "bare claims under {}: {}",
            t["alg"],
            r.text()
        );
    }
    gw.shutdown().await;
}

/// Flip one bit in the decoded bytes of segment `seg`.
fn flip(token: &str, seg: usize) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut bytes = URL_SAFE_NO_PAD.decode(&parts[seg]).expect("segment");
    if bytes.is_empty() {
        bytes.push(0);
    } else {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
    }
    parts[seg] = URL_SAFE_NO_PAD.encode(bytes);
    parts.join(".")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_tokens_are_refused_alike_and_never_forwarded() {
    let up = Upstream::start().await;
    let (gw, fx) = start(&up).await;
    let hits = up.hits();
    let mut bodies = Vec::new();
    for t in fx["tokens"].as_array().unwrap() {
        let token = t["token"].as_str().unwrap();
        // Segments 1..=4: encrypted key (empty for dir), IV, ciphertext, tag.
        for seg in 1..=4 {
            if seg == 1 && t["alg"] == "dir" {
                continue;
            }
            let r = gw.get("/who", Some(&flip(token, seg))).await;
            assert_eq!(r.status, 401, "{} segment {seg}: {}", t["alg"], r.text());
            // Every error body names its own request and trace; the rest must not differ.
            let mut body: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
            let ids = body.as_object_mut().unwrap();
            assert!(ids.remove("request_id").is_some() && ids.remove("trace_id").is_some());
            bodies.push(body.to_string());
        }
    }
    assert_eq!(up.hits(), hits, "a tampered token reached the upstream");
    // No oracle: every decryption failure reads the same.
    bodies.sort();
    bodies.dedup();
    assert_eq!(
        bodies.len(),
        1,
        "different answers leak which step failed: {bodies:?}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwe_is_refused_when_no_decryption_key_is_configured() {
    let up = Upstream::start().await;
    let setup = Setup::new();
    let gw = setup
        .var("up", up.url())
        .start("{listen}\n[[jwt.keys]]\nkid = \"h\"\nalg = \"HS256\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n\n[[routes]]\nprefix = \"/\"\nupstream = \"{up}\"\nauth = \"jwt\"\n")
        .await;
    let fx = fixture();
    let token = fx["tokens"][0]["token"].as_str().unwrap();
    let r = gw.get("/who", Some(token)).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(up.hits(), 0);
    gw.shutdown().await;
}
