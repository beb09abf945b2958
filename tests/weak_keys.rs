//! Keys the gateway refuses at load, through every source that can carry them:
//! `[[jwt.keys]]`, `jwt.jwks_file`, `[jwt.jwks] file`, `[jwt.jwks] url` (a real HTTP server
//! on loopback), each refusal naming the key (source and kid); `portcullis check` says the
//! same, and a reload to a weak key is refused with the old keys still serving.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::tokens::{self, HS256_SECRET};
use common::{Setup, Upstream};
use jsonwebtoken::Algorithm;
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn b64(b: &[u8]) -> String {
    tokens::b64(b)
}

/// The test RSA key's modulus and exponent.
fn good_rsa() -> (Vec<u8>, Vec<u8>) {
    let k = RsaPublicKey::from_public_key_pem(&tokens::rsa().public_pem).unwrap();
    (k.n().to_bytes_be(), k.e().to_bytes_be())
}

fn rsa_jwk(kid: &str, n: &[u8], e: &[u8]) -> Value {
    json!({"kty": "RSA", "kid": kid, "alg": "RS256", "n": b64(n), "e": b64(e)})
}

/// A PEM public key for any (n, e), however weak: what a careless operator might configure.
fn rsa_pem(n: &[u8], e: &[u8]) -> String {
    RsaPublicKey::new_unchecked(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

/// An odd modulus of `bits` bits (its factors do not matter to the checks).
fn odd_modulus(bits: usize) -> Vec<u8> {
    let mut n = vec![0xA7u8; bits / 8];
    n[0] |= 0x80;
    let last = n.len() - 1;
    n[last] |= 1;
    n
}

/// The ROCA detector's primes (roca/detect.py): a modulus congruent to a power of 65537
/// modulo each of them carries the fingerprint of CVE-2017-15361.
const ROCA_PRIMES: [u32; 38] = [
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
    101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
];

/// A 2048-bit odd modulus with the ROCA fingerprint: the product of two primes from the
/// flawed generator, `p = k*M + 65537^a mod M`, is congruent to `65537^(a+b)` mod every
/// prime of `M`, which is all the published test looks at; built here by the Chinese
/// remainder theorem.
fn roca_modulus() -> Vec<u8> {
    let mut n = BigUint::from(1u8) << 2047;
    let mut m = BigUint::from(1u8);
    for (i, &p) in ROCA_PRIMES.iter().enumerate() {
        let target = (0..i + 5).fold(1u64, |x, _| x * (65537 % p as u64) % p as u64);
        let bp = BigUint::from(p);
        let mut k = 0u32;
        while (&n + &m * BigUint::from(k)) % &bp != BigUint::from(target) {
            k += 1;
        }
        n += &m * BigUint::from(k);
        m *= bp;
    }
    if n.to_bytes_be().last().unwrap() & 1 == 0 {
        n += &m;
    }
    n.to_bytes_be()
}

fn ec_jwk(pair: &tokens::PemPair, alg: Algorithm, kid: &str) -> Value {
    serde_json::to_value(pair.jwk(alg, kid)).unwrap()
}

/// Weak or contradictory JWKs, each with a kid naming it and what the error must mention.
fn weak_jwks() -> Vec<(Value, &'static str)> {
    let (n, e) = good_rsa();
    let p256 = tokens::ec_p256();
    let mut crv_mismatch = ec_jwk(&p256, Algorithm::ES256, "ec-crv");
    crv_mismatch["crv"] = json!("P-384");
    let mut p256_as_es384 = ec_jwk(&p256, Algorithm::ES256, "ec-p256-as-384");
    p256_as_es384["crv"] = json!("P-384");
    p256_as_es384["alg"] = json!("ES384");
    let mut off_curve = ec_jwk(&p256, Algorithm::ES256, "ec-off-curve");
    let mut y = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        off_curve["y"].as_str().unwrap(),
    )
    .unwrap();
    y[31] ^= 1;
    off_curve["y"] = json!(b64(&y));
    let mut enc_ops = rsa_jwk("rsa-ops", &n, &e);
    enc_ops["key_ops"] = json!(["encrypt"]);
    let mut enc_use = ec_jwk(&p256, Algorithm::ES256, "ec-use-enc");
    enc_use["use"] = json!("enc");
    vec![
        (rsa_jwk("rsa-1024", &odd_modulus(1024), &e), "1024 bits"),
        (rsa_jwk("rsa-e1", &n, &[1]), "0 or 1"),
        (rsa_jwk("rsa-e-even", &n, &[1, 0, 0]), "even"),
        (rsa_jwk("rsa-roca", &roca_modulus(), &e), "ROCA"),
        (crv_mismatch, "crv P-384 does not match alg ES256"),
        (p256_as_es384, "P-384"),
        (off_curve, "not a point on P-256"),
        (enc_ops, "may not verify"),
        (enc_use, "may not verify"),
    ]
}

/// Weak symmetric JWKs (allowed from files, never from a URL).
fn weak_oct_jwks() -> Vec<(Value, &'static str)> {
    vec![
        (
            json!({"kty": "oct", "kid": "oct-empty", "alg": "HS256", "k": ""}),
            "empty",
        ),
        (
            json!({"kty": "oct", "kid": "oct-short", "alg": "HS256", "k": b64(b"abc")}),
            "3 bytes",
        ),
        (
            json!({"kty": "oct", "kid": "oct-short-512", "alg": "HS512", "k": b64(&[7; 32])}),
            "at least 64",
        ),
    ]
}

fn doc(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

const ROUTE: &str =
    "\n[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\nauth = \"jwt\"\n";

fn load(dir: &Path, text: &str) -> Result<portcullis::Config, String> {
    portcullis::Config::from_toml(
        &format!("[listen]\naddr = \"127.0.0.1:0\"\n{text}{ROUTE}"),
        dir,
    )
    .map_err(|e| format!("{e:#}"))
}

fn assert_refused(r: Result<portcullis::Config, String>, source: &str, kid: &str, why: &str) {
    let e = match r {
        Ok(_) => panic!("{source} kid {kid:?} was loaded; it must be refused ({why})"),
        Err(e) => e,
    };
    assert!(
        e.contains(source) && e.contains(&format!("kid \"{kid}\"")) && e.contains(why),
        "{source} kid {kid:?}: want source, kid and `{why}` in: {e}"
    );
}

#[test]
fn weak_jwks_are_refused_from_jwks_file_and_jwks_section_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = weak_jwks();
    all.extend(weak_oct_jwks());
    for (jwk, why) in all {
        let kid = jwk["kid"].as_str().unwrap().to_owned();
        std::fs::write(dir.path().join("keys.json"), doc(&[jwk])).unwrap();
        assert_refused(
            load(dir.path(), "[jwt]\njwks_file = \"keys.json\"\n"),
            "jwks_file keys.json",
            &kid,
            why,
        );
        assert_refused(
            load(dir.path(), "[jwt.jwks]\nfile = \"keys.json\"\n"),
            "[jwt.jwks] file",
            &kid,
            why,
        );
    }
}

#[test]
fn a_set_mixing_symmetric_and_asymmetric_keys_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (n, e) = good_rsa();
    let mixed = doc(&[
        json!({"kty": "oct", "kid": "h", "alg": "HS256", "k": b64(HS256_SECRET.as_bytes())}),
        rsa_jwk("r", &n, &e),
    ]);
    std::fs::write(dir.path().join("keys.json"), mixed).unwrap();
    for section in [
        "[jwt]\njwks_file = \"keys.json\"\n",
        "[jwt.jwks]\nfile = \"keys.json\"\n",
    ] {
        let Err(e) = load(dir.path(), section) else {
            panic!("mixed set loaded: {section}");
        };
        assert!(e.contains("mixes symmetric"), "{e}");
    }
    // Each half alone loads.
    std::fs::write(dir.path().join("rsa.json"), doc(&[rsa_jwk("r", &n, &e)])).unwrap();
    load(dir.path(), "[jwt]\njwks_file = \"rsa.json\"\n").expect("RSA alone");
}

#[test]
fn weak_configured_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (n, e) = good_rsa();
    let p256 = tokens::ec_p256();
    std::fs::write(dir.path().join("p256.pem"), &p256.public_pem).unwrap();
    let pems = [
        ("rsa-1024", rsa_pem(&odd_modulus(1024), &e), "1024 bits"),
        ("rsa-e1", rsa_pem(&n, &[1]), "0 or 1"),
        ("rsa-e-even", rsa_pem(&n, &[1, 0, 0]), "even"),
        ("rsa-roca", rsa_pem(&roca_modulus(), &e), "ROCA"),
    ];
    for (kid, pem, why) in pems {
        std::fs::write(dir.path().join(format!("{kid}.pem")), pem).unwrap();
        let text =
            format!("[[jwt.keys]]\nkid = \"{kid}\"\nalg = \"RS256\"\npublic_key = \"{kid}.pem\"\n");
        assert_refused(load(dir.path(), &text), "jwt.keys[0]", kid, why);
    }
    // A P-256 key configured for ES384.
    let text = "[[jwt.keys]]\nkid = \"ec\"\nalg = \"ES384\"\npublic_key = \"p256.pem\"\n";
    assert_refused(load(dir.path(), text), "jwt.keys[0]", "ec", "P-384");
    for (alg, secret, why) in [
        ("HS256", "", "empty"),
        ("HS256", "abc", "3 bytes"),
        ("HS384", "0123456789abcdef0123456789abcdef", "at least 48"),
    ] {
        let text = format!("[[jwt.keys]]\nkid = \"h\"\nalg = \"{alg}\"\nsecret = \"{secret}\"\n");
        assert_refused(load(dir.path(), &text), "jwt.keys[0]", "h", why);
    }
}

/// A plain-HTTP server on loopback answering every request with `body`.
async fn serve_jwks(body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tcp.write_all(head.as_bytes()).await;
                let _ = tcp.write_all(body.as_bytes()).await;
            });
        }
    });
    format!("http://127.0.0.1:{port}/jwks.json")
}

async fn start_error(url: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = load(dir.path(), &format!("[jwt.jwks]\nurl = \"{url}\"\n")).expect("config");
    match portcullis::start(config).await {
        Ok(_) => panic!("started with a weak key from {url}"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_and_symmetric_keys_are_refused_from_a_jwks_url() {
    let mut all = weak_jwks();
    all.extend(weak_oct_jwks());
    // A sound shared secret is refused from a URL too: a published secret is no secret.
    all.push((
        json!({"kty": "oct", "kid": "oct-published", "alg": "HS256", "k": b64(HS256_SECRET.as_bytes())}),
        "symmetric",
    ));
    for (jwk, why) in all {
        let kid = jwk["kid"].as_str().unwrap().to_owned();
        let url = serve_jwks(doc(&[jwk])).await;
        let e = start_error(&url).await;
        assert!(
            e.contains("[jwt.jwks] url")
                && e.contains(&format!("kid \"{kid}\""))
                && e.contains(why),
            "kid {kid:?}: want the url, kid and `{why}` in: {e}"
        );
    }
}

#[test]
fn check_names_the_refused_key_and_its_source() {
    let setup = Setup::new();
    setup.write(
        "certs/keys.json",
        doc(&[json!({"kty": "oct", "kid": "k1", "alg": "HS256", "k": ""})]),
    );
    let path = setup.write_config(&format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[jwt]\njwks_file = \"certs/keys.json\"\n{ROUTE}"
    ));
    let out = common::portcullis(&["check", "--config", &path.display().to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("jwks_file certs/keys.json kid \"k1\"") && stderr.contains("empty"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_a_weak_key_is_refused_and_the_old_key_keeps_serving() {
    let up = Upstream::start().await;
    let setup = Setup::new();
    let template = |secret: &str| {
        format!(
            "{{listen}}\n[[jwt.keys]]\nkid = \"hs1\"\nalg = \"HS256\"\nsecret = \"{secret}\"\n\n[[routes]]\nprefix = \"/\"\nupstream = \"{{up}}\"\nauth = \"jwt\"\n"
        )
    };
    let setup = setup.var("up", up.url());
    let path = setup.write_config(&template(HS256_SECRET));
    let config = portcullis::Config::load(&path).expect("config");
    let dir = setup.dir.path().to_path_buf();
    let gw = setup.start_with(config).await;
    let good = tokens::hs256(Some("hs1"), &tokens::claims("alice"));
    assert_eq!(gw.get("/who", Some(&good)).await.status, 200);
    // The operator "rotates" to a three-byte secret.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(HS256_SECRET, "abc");
    std::fs::write(dir.join("config.toml"), text).unwrap();
    let e = gw.reload().await.expect_err("reload to a weak key");
    assert!(
        e.contains("jwt.keys[0] kid \"hs1\"") && e.contains("3 bytes"),
        "{e}"
    );
    assert_eq!(
        gw.get("/who", Some(&good)).await.status,
        200,
        "old key serves"
    );
    let weak = tokens::sign(
        Algorithm::HS256,
        Some("hs1"),
        &jsonwebtoken::EncodingKey::from_secret(b"abc"),
        &tokens::claims("mallory"),
    );
    assert_eq!(gw.get("/who", Some(&weak)).await.status, 401);
    gw.shutdown().await;
}
