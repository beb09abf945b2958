//! ES512 (ECDSA P-521 / SHA-512) through the real gateway: tokens made by PyJWT, jwcrypto
//! and node jose (`scripts/gen_jwe_vectors.py`, committed in `tests/fixtures`) verify with
//! the key configured as a PEM and as a JWK of `jwt.jwks_file`; a tampered copy of each,
//! and the same token checked against an ES384 pin, are refused.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{Setup, TestGateway, Upstream};
use serde_json::{json, Value};

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/es512_interop.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON")
}

async fn start(up: &Upstream, keys: &str, setup: Setup) -> TestGateway {
    setup
        .var("up", up.url())
        .start(&format!(
            "{{listen}}\n[jwt]\nleeway = \"30s\"\n{keys}\n[[routes]]\nprefix = \"/\"\nupstream = \"{{up}}\"\nauth = \"jwt\"\n"
        ))
        .await
}

/// Flip one bit of the decoded segment `seg`.
fn flip(token: &str, seg: usize) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut bytes = URL_SAFE_NO_PAD.decode(&parts[seg]).expect("segment");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    parts[seg] = URL_SAFE_NO_PAD.encode(bytes);
    parts.join(".")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es512_tokens_from_three_libraries_verify_and_tampered_ones_do_not() {
    let fx = fixture();
    let up = Upstream::start().await;
    let by_pem = Setup::new();
    by_pem.write("es512.pem", fx["public_pem"].as_str().unwrap());
    let by_jwks = Setup::new();
    by_jwks.write(
        "keys.json",
        json!({ "keys": [fx["public_jwk"].clone()] }).to_string(),
    );
    let gateways = [
        start(
            &up,
            "\n[[jwt.keys]]\nkid = \"es512\"\nalg = \"ES512\"\npublic_key = \"es512.pem\"\n",
            by_pem,
        )
        .await,
        start(&up, "jwks_file = \"keys.json\"\n", by_jwks).await,
    ];
    let tokens = fx["tokens"].as_array().unwrap();
    for who in ["pyjwt", "jwcrypto", "jose"] {
        assert!(tokens.iter().any(|t| t["by"] == who), "no {who} token");
    }
    for gw in &gateways {
        let hits = up.hits();
        for t in tokens {
            let token = t["token"].as_str().unwrap();
            let r = gw.get("/who", Some(token)).await;
            assert_eq!(r.status, 200, "{} token: {}", t["by"], r.text());
            assert_eq!(r.echo().one("x-user-id"), Some("es512-user"));
            for seg in [1, 2] {
                let r = gw.get("/who", Some(&flip(token, seg))).await;
                assert_eq!(r.status, 401, "{} tampered segment {seg}", t["by"]);
            }
        }
        assert_eq!(
            up.hits(),
            hits + tokens.len(),
            "a tampered token got through"
        );
    }
    for gw in gateways {
        gw.shutdown().await;
    }
}

#[test]
fn an_es512_key_on_another_curve_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p384.pem"),
        common::tokens::ec_p384().public_pem,
    )
    .unwrap();
    let e = portcullis::Config::from_toml(
        "[listen]\naddr = \"127.0.0.1:0\"\n[[jwt.keys]]\nkid = \"k\"\nalg = \"ES512\"\npublic_key = \"p384.pem\"\n[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\nauth = \"jwt\"\n",
        dir.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("kid \"k\"") && e.contains("P-521"), "{e}");
}
