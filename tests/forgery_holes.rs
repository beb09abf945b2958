//! The forgery holes of issue 11, tried from the outside against the real gateway:
//! a bare claims set encrypted to the RSA-OAEP public key, ECDSA twins and re-encoded
//! tokens that dodged a revocation, user claims the upstream reads differently, an HTTP/2
//! `:authority` that disagrees with `Host`, and the TLS response headers.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::revocation::{assert_passes, assert_revoked, Gw};
use common::tokens::{self, b64, HS256_SECRET};
use common::{Setup, Upstream};
use jsonwebtoken::{Algorithm, EncodingKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::{BigUint, Oaep, RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};

const RSA_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/jwe_rsa_oaep_test_key.pem"
);

/// The public half of the gateway's RSA-OAEP decryption key: all an attacker needs.
fn oaep_public_key() -> RsaPublicKey {
    let pem = std::fs::read_to_string(RSA_FIXTURE).expect("fixture key");
    RsaPrivateKey::from_pkcs8_pem(&pem)
        .expect("PKCS#8")
        .to_public_key()
}

/// A compact JWE of `plaintext` encrypted to `public` (RSA-OAEP-256 + A256GCM), made with
/// nothing but the public key: the sender picks the content key.
fn encrypt_to_public_key(public: &RsaPublicKey, header: &str, plaintext: &[u8]) -> String {
    let cek = [0x42u8; 32];
    let iv = [7u8; 12];
    let encrypted_key = public
        .encrypt(&mut rand_core_rng(), Oaep::new::<sha2::Sha256>(), &cek)
        .expect("OAEP encrypt");
    let header_b64 = b64(header);
    let mut buf = plaintext.to_vec();
    let tag = Aes256Gcm::new_from_slice(&cek)
        .unwrap()
        .encrypt_in_place_detached((&iv).into(), header_b64.as_bytes(), &mut buf)
        .unwrap();
    format!(
        "{header_b64}.{}.{}.{}.{}",
        b64(encrypted_key),
        b64(iv),
        b64(buf),
        b64(tag)
    )
}

fn rand_core_rng() -> aes_gcm::aead::OsRng {
    aes_gcm::aead::OsRng
}

/// An HS256 issuer key, the RSA-OAEP-256 fixture key, and `more` decryption keys.
fn oaep_gateway_template(more: &str) -> String {
    format!(
        "{{listen}}\n{}\n[[jwt.decryption_keys]]\nkid = \"rsa-1\"\nalg = \"RSA-OAEP-256\"\nprivate_key = \"{RSA_FIXTURE}\"\n\n{more}\n[[routes]]\nprefix = \"/\"\nupstream = \"{{up}}\"\nauth = \"jwt\"\n",
        common::hmac_key_toml("hs1", "HS256", HS256_SECRET),
    )
}

fn symmetric_keys_toml() -> String {
    format!(
        "[[jwt.decryption_keys]]\nkid = \"kw\"\nalg = \"A256KW\"\nkey = \"{}\"\n\n[[jwt.decryption_keys]]\nkid = \"kw-nested\"\nalg = \"A256KW\"\nkey = \"{}\"\nrequire_nested = true\n",
        URL_SAFE_NO_PAD.encode([1u8; 32]),
        URL_SAFE_NO_PAD.encode([2u8; 32]),
    )
}

/// Hole 1: with RSA-OAEP key management a bare claims set proves nothing about its maker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_oaep_bare_claims_minted_with_the_public_key_are_refused() {
    let up = Upstream::start().await;
    let gw = Setup::new()
        .var("up", up.url())
        .start(&oaep_gateway_template(""))
        .await;
    let public = oaep_public_key();
    let claims = tokens::claims("admin").to_string();
    let forged = encrypt_to_public_key(
        &public,
        r#"{"alg":"RSA-OAEP-256","enc":"A256GCM","kid":"rsa-1"}"#,
        claims.as_bytes(),
    );
    let r = gw.get("/who", Some(&forged)).await;
    assert_eq!(r.status, 401, "bare claims under RSA-OAEP: {}", r.text());
    let no_kid = encrypt_to_public_key(
        &public,
        r#"{"alg":"RSA-OAEP-256","enc":"A256GCM"}"#,
        claims.as_bytes(),
    );
    assert_eq!(gw.get("/who", Some(&no_kid)).await.status, 401);
    // A nested JWS signed by an attacker's key is refused too...
    let attacker = tokens::sign(
        Algorithm::HS256,
        Some("hs1"),
        &EncodingKey::from_secret(b"attacker-secret-attacker-secret-0"),
        &tokens::claims("admin"),
    );
    let nested_forged = encrypt_to_public_key(
        &public,
        r#"{"alg":"RSA-OAEP-256","enc":"A256GCM","cty":"JWT"}"#,
        attacker.as_bytes(),
    );
    assert_eq!(gw.get("/who", Some(&nested_forged)).await.status, 401);
    // ...and one signed by the configured issuer key is the way in.
    let nested = encrypt_to_public_key(
        &public,
        r#"{"alg":"RSA-OAEP-256","enc":"A256GCM","cty":"JWT"}"#,
        tokens::hs256(Some("hs1"), &tokens::claims("alice")).as_bytes(),
    );
    let r = gw.get("/who", Some(&nested)).await;
    assert_eq!(r.status, 200, "nested JWS under RSA-OAEP: {}", r.text());
    assert_eq!(r.echo().one("x-user-id"), Some("alice"));
    assert_eq!(up.hits(), 1, "only the nested token reached the upstream");
    gw.shutdown().await;
}

/// With symmetric key management the shared key authenticates: a bare claims set passes,
/// unless the key says `require_nested = true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_bare_claims_pass_unless_the_key_requires_nesting() {
    use portcullis::auth::jwe::{encrypt, DecryptionKey};
    let up = Upstream::start().await;
    let gw = Setup::new()
        .var("up", up.url())
        .start(&oaep_gateway_template(&symmetric_keys_toml()))
        .await;
    let claims = tokens::claims("carol").to_string();
    let key = |kid: &str, byte: u8| {
        DecryptionKey::from_config(
            Some(kid.into()),
            "A256KW",
            None,
            None,
            Some(&[byte; 32]),
            None,
        )
        .unwrap()
    };
    let bare = encrypt(&key("kw", 1), claims.as_bytes(), None, None).unwrap();
    let r = gw.get("/who", Some(&bare)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.echo().one("x-user-id"), Some("carol"));
    let bare = encrypt(&key("kw-nested", 2), claims.as_bytes(), None, None).unwrap();
    assert_eq!(gw.get("/who", Some(&bare)).await.status, 401);
    let inner = tokens::hs256(Some("hs1"), &tokens::claims("carol"));
    let nested = encrypt(&key("kw-nested", 2), inner.as_bytes(), Some("JWT"), None).unwrap();
    assert_eq!(gw.get("/who", Some(&nested)).await.status, 200);
    gw.shutdown().await;
}

/// `(r, n - s)`: the ECDSA twin of a signature, valid for the same key and message.
fn ecdsa_twin(token: &str, order_hex: &str) -> String {
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    let half = sig.len() / 2;
    let n = BigUint::parse_bytes(order_hex.as_bytes(), 16).unwrap();
    let s = BigUint::from_bytes_be(&sig[half..]);
    let twin_s = (&n - &s).to_bytes_be();
    let mut twin = sig[..half].to_vec();
    twin.extend(std::iter::repeat_n(0, half - twin_s.len()));
    twin.extend(twin_s);
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(twin))
}

const P256_ORDER: &str = "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551";
const P384_ORDER: &str = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973";

/// The same segment with its unused trailing bits set: another spelling of the same bytes.
fn non_canonical(segment: &str) -> Option<String> {
    let unused_bits = (segment.len() * 6) % 8;
    if unused_bits == 0 {
        return None;
    }
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = *segment.as_bytes().last()?;
    let value = ALPHABET.iter().position(|&c| c == last)?;
    let changed = ALPHABET[value | ((1 << unused_bits) - 1)] as char;
    Some(format!("{}{changed}", &segment[..segment.len() - 1]))
}

/// Every variant of `token` with one segment re-spelled non-canonically.
fn re_encodings(token: &str) -> Vec<String> {
    let parts: Vec<&str> = token.split('.').collect();
    (0..parts.len())
        .filter_map(|i| {
            let mut p: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
            p[i] = non_canonical(parts[i])?;
            Some(p.join("."))
        })
        .collect()
}

/// Hole 2: revoking a token without `jti` must also revoke its ECDSA twin and every other
/// spelling of it, whether or not they sat in the verified-token cache before the revoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_twins_and_re_encodings_do_not_dodge_a_revocation() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let p256 = tokens::ec_p256();
    let p384 = tokens::ec_p384();
    std::fs::write(dir.path().join("p256.pem"), &p256.public_pem).unwrap();
    std::fs::write(dir.path().join("p384.pem"), &p384.public_pem).unwrap();
    let extra = "[[jwt.keys]]\nkid = \"ec256\"\nalg = \"ES256\"\npublic_key = \"p256.pem\"\n\n[[jwt.keys]]\nkid = \"ec384\"\nalg = \"ES384\"\npublic_key = \"p384.pem\"\n";
    let gw = Gw::start(dir.path(), &up.url(), extra).await;
    for (alg, kid, pair, order) in [
        (Algorithm::ES256, "ec256", &p256, P256_ORDER),
        (Algorithm::ES384, "ec384", &p384, P384_ORDER),
    ] {
        for cached_before_revoke in [true, false] {
            // No jti: revoked by the token itself.
            let mut claims = tokens::claims(&format!("{alg:?}-{cached_before_revoke}"));
            claims["nonce"] = json!(cached_before_revoke);
            let original = tokens::sign(alg, Some(kid), &pair.encoding(), &claims);
            let twin = ecdsa_twin(&original, order);
            assert_ne!(twin, original);
            let mut variants = vec![twin.clone()];
            variants.extend(re_encodings(&original));
            variants.extend(re_encodings(&twin));
            if cached_before_revoke {
                assert_passes(&gw.get(&original).await, "original before the revoke");
                assert_passes(&gw.get(&twin).await, "the twin verifies like the original");
            }
            gw.revoke(json!({ "token": original })).await;
            assert_revoked(&gw.get(&original).await, "original after the revoke");
            assert_revoked(&gw.get(&twin).await, &format!("{alg:?} twin"));
            for v in &variants {
                let r = gw.get(v).await;
                assert_eq!(r.status, 401, "{alg:?} variant {v}: {r:?}");
            }
        }
    }
    gw.stop().await;
}

fn user_claim_token(sub: Value) -> String {
    let mut c = tokens::claims("x");
    c["sub"] = sub;
    tokens::hs256(Some("hs1"), &c)
}

/// Hole 4: the user the upstream reads must be the user the token names, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn padded_blank_and_control_character_users_are_refused() {
    let up = Upstream::start().await;
    let gw = Setup::new()
        .var("up", up.url())
        .start(&format!(
            "{{listen}}\n{}\n[[routes]]\nprefix = \"/\"\nupstream = \"{{up}}\"\nauth = \"jwt\"\n",
            common::hmac_key_toml("hs1", "HS256", HS256_SECRET)
        ))
        .await;
    for bad in [
        " alice ",
        " alice",
        "alice ",
        " ",
        "   ",
        "",
        "\t",
        "alice\t",
        "al\u{7f}ice",
        "alice\u{85}",
        "\u{a0}alice",
        "alice\u{3000}",
        "al\nice",
    ] {
        let r = gw.get("/who", Some(&user_claim_token(json!(bad)))).await;
        assert_eq!(r.status, 401, "sub {bad:?}: {}", r.text());
        assert_eq!(r.json()["error"], "invalid_token", "sub {bad:?}");
    }
    assert_eq!(up.hits(), 0, "a bad user claim reached the upstream");
    for good in ["alice", "a l i c e", "Zoë"] {
        let r = gw.get("/who", Some(&user_claim_token(json!(good)))).await;
        assert_eq!(r.status, 200, "sub {good:?}: {}", r.text());
    }
    gw.shutdown().await;
}

/// Hole 5: an HTTP/2 request whose `Host` names another host than `:authority` is a 400
/// response (RFC 9113 section 8.3.1), never routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_authority_and_host_that_disagree_are_a_400() {
    let up = Upstream::start().await;
    let gw = Setup::new()
        .var("up", up.url())
        .start("{listen}\n[[routes]]\nprefix = \"/\"\nupstream = \"{up}\"\nauth = \"public\"\n")
        .await;
    let h2 = gw.h2();
    let send = |host: Option<&'static str>| {
        let mut req = h2.get(gw.url("/who"));
        if let Some(h) = host {
            req = req.header("host", h);
        }
        async move { common::TestGateway::reply(req.send().await.expect("h2 request")).await }
    };
    let r = send(Some("evil.example")).await;
    assert_eq!(r.version, reqwest::Version::HTTP_2);
    assert_eq!(r.status, 400, "{}", r.text());
    let port_host: &'static str = Box::leak(format!("LOCALHOST:{}", gw.port()).into_boxed_str());
    let r = send(Some(port_host)).await;
    assert_eq!(r.status, 200, "same host, other case: {}", r.text());
    assert_eq!(send(None).await.status, 200);
    assert_eq!(up.hits(), 2, "the mismatched request was never forwarded");
    gw.shutdown().await;
}

/// Hole 6: `[listen] hsts` adds Strict-Transport-Security to every response over TLS,
/// the gateway's own errors included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_is_on_every_tls_response() {
    let up = Upstream::start().await;
    let gw = Setup::new()
        .var("up", up.url())
        .start(&format!(
            "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"tls/cert.pem\"\ntls_key = \"tls/key.pem\"\nhsts = \"max-age=31536000; includeSubDomains\"\n{}\n[[routes]]\nprefix = \"/open\"\nupstream = \"{{up}}\"\nauth = \"public\"\n\n[[routes]]\nprefix = \"/\"\nupstream = \"{{up}}\"\nauth = \"jwt\"\n",
            common::hmac_key_toml("hs1", "HS256", HS256_SECRET)
        ))
        .await;
    for (path, token, status) in [
        ("/open", None, 200),
        ("/api", None, 401),
        ("/api", Some("not-a-token"), 401),
    ] {
        for client in [gw.h1(), gw.h2()] {
            let mut req = client.get(gw.url(path));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = common::TestGateway::reply(req.send().await.unwrap()).await;
            assert_eq!(r.status, status, "{path}");
            assert_eq!(
                r.header("strict-transport-security"),
                Some("max-age=31536000; includeSubDomains"),
                "{path} {:?}",
                r.version
            );
        }
    }
    gw.shutdown().await;
    // Without TLS the setting is refused: browsers ignore HSTS over plain HTTP.
    let e = portcullis::Config::from_toml(
        "[listen]\naddr = \"127.0.0.1:0\"\nhsts = \"max-age=60\"\n",
        std::path::Path::new("/nonexistent"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("listen.hsts"), "{e}");
}
