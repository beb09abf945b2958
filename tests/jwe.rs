//! Encrypted tokens through the real gateway: tokens written by an independent implementation
//! (jwcrypto, `scripts/gen_jwe_vectors.py`) for every supported alg/enc pair are accepted with
//! the user injected; tampered ones are refused with the same answer as a wrong key, and
//! nothing reaches the upstream.

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

/// A gateway configured with every fixture key (JWE) and the nested-JWS HMAC key.
async fn start(up: &Upstream) -> (TestGateway, Value) {
    let fx = fixture();
    let setup = Setup::new();
    let mut keys = String::new();
    for k in fx["keys"].as_array().expect("keys") {
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
    let template = format!(
        "{{listen}}\n[jwt]\nleeway = \"30s\"\n\n[[jwt.keys]]\nkid = \"nested\"\nalg = \"HS256\"\nsecret = \"{}\"\nsecret_base64 = true\n\n{keys}\n[[routes]]\nprefix = \"/\"\nupstream = \"{{up}}\"\nauth = \"jwt\"\n",
        nested_hs256_secret()
    );
    (setup.var("up", up.url()).start(&template).await, fx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwcrypto_tokens_for_every_alg_and_enc_are_accepted() {
    let up = Upstream::start().await;
    let (gw, fx) = start(&up).await;
    let tokens = fx["tokens"].as_array().expect("tokens");
    assert!(
        tokens.len() >= 21,
        "fixture covers every pair plus a nested JWS"
    );
    for t in tokens {
        let what = format!("{} + {} (cty {:?})", t["alg"], t["enc"], t["cty"]);
        let r = gw.get("/who", Some(t["token"].as_str().unwrap())).await;
        let public_key_management = t["alg"].as_str().unwrap().starts_with("RSA");
        if public_key_management && t["cty"] != "JWT" {
            // Anyone with the public key can encrypt a bare claims set: refused.
            assert_eq!(r.status, 401, "{what}: {}", r.text());
            continue;
        }
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        assert_eq!(r.echo().one("x-user-id"), Some("user-4711"), "{what}");
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
            bodies.push(r.text());
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
