//! Tokens built to get past a careless verifier: `alg: none`, algorithm confusion, keys the
//! token brings itself, hostile `kid`s, claims out of their validity window or of the wrong
//! type, ambiguous JSON, odd base64, the wrong number of segments, oversized tokens, non-ASCII
//! bytes. One test per attack, named after it. Each token must be refused (401
//! `invalid_token`, or 431 when the HTTP layer refuses the header first) and none may reach
//! the upstream; each test ends with a well-formed token as control.
//!
//! Duplicate JSON member names, in the header or the payload, are refused (RFC 7515 section
//! 5.2 lets a verifier either refuse or take the last; taking one silently lets two parsers
//! disagree about what was signed).

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use common::tokens::{self, b64, PemPair, HS256_SECRET};
use common::{hmac_key_toml, public_key_toml, Reply, Setup, Upstream, Upstreams};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "api";
const MAX_TOKEN_BYTES: usize = 2048;

/// The upstream behind the gateway and the gateway's RSA and EC key pairs (the tests sign
/// with them): [`common::Env`]'s upstream kit for this file. `{up}` is the upstream; the
/// public keys are written to `keys/rsa.pub.pem` and `keys/ec.pub.pem`.
struct Keyed {
    upstream: Upstream,
    rsa: PemPair,
    ec: PemPair,
}

impl Keyed {
    /// Requests the upstream received.
    fn hits(&self) -> usize {
        self.upstream.hits()
    }
}

impl Upstreams for Keyed {
    fn define(&self, setup: Setup) -> Setup {
        setup.write("keys/rsa.pub.pem", &self.rsa.public_pem);
        setup.write("keys/ec.pub.pem", &self.ec.public_pem);
        self.upstream.define(setup)
    }
}

type Env = common::Env<Keyed>;

/// A gateway with issuer, audience and a small token limit, an HMAC, an RSA and an EC key.
async fn env() -> Env {
    let keyed = Keyed {
        upstream: Upstream::start().await,
        rsa: tokens::rsa(),
        ec: tokens::ec_p256(),
    };
    let keys = [
        hmac_key_toml("hs", "HS256", HS256_SECRET),
        public_key_toml("rsa", "RS256", "keys/rsa.pub.pem".as_ref()),
        public_key_toml("ec", "ES256", "keys/ec.pub.pem".as_ref()),
    ]
    .concat();
    let config = format!(
        r#"{{listen}}
[jwt]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
leeway = "30s"
max_token_bytes = {MAX_TOKEN_BYTES}

{keys}

[[routes]]
prefix = "/"
upstream = "{{up}}"
auth = "jwt"
"#
    );
    Env::start_with(Setup::new(), keyed, &config).await
}

/// Claims the gateway accepts: right issuer and audience, valid for ten minutes.
fn good_claims(sub: &str) -> Value {
    let mut c = tokens::claims(sub);
    c["iss"] = json!(ISSUER);
    c["aud"] = json!(AUDIENCE);
    c
}

fn good_token(sub: &str) -> String {
    tokens::hs256(Some("hs"), &good_claims(sub))
}

/// Assert a 401 with the `invalid_token` challenge and JSON body, and (when given) the
/// client-facing description in both.
fn assert_invalid_token(r: &Reply, description: Option<&str>, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=\"portcullis\", error=\"invalid_token\""),
        "{what}: {challenge}"
    );
    let body = r.json();
    assert_eq!(body["error"], "invalid_token", "{what}: {body}");
    if let Some(d) = description {
        assert!(
            challenge.contains(&format!("error_description=\"{d}\"")),
            "{what}: {challenge}"
        );
        assert_eq!(body["error_description"], d, "{what}: {body}");
    }
}

impl Env {
    /// Present `token`; assert it is refused and the upstream saw nothing.
    async fn refused(&self, token: &str, description: Option<&str>, what: &str) {
        let before = self.up.hits();
        let r = self.gw.get("/resource", Some(token)).await;
        assert_invalid_token(&r, description, what);
        assert_eq!(self.up.hits(), before, "{what}: reached the upstream");
    }

    /// Present `token` bytes verbatim in `Authorization: Bearer ...` (no client library in
    /// between to refuse or escape them); assert a refusal that never reached the upstream.
    /// A refusal is a 401 `invalid_token`, or a 431 (or a closed connection) when the HTTP
    /// layer refused the oversized header before the gateway saw it.
    async fn refused_raw(&self, token: &[u8], what: &str) {
        let before = self.up.hits();
        let mut req =
            b"GET /resource HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ".to_vec();
        req.extend_from_slice(token);
        req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let ex = self.gw.raw_exchange(&req, Duration::from_secs(5)).await;
        let replies = ex.responses();
        assert!(replies.len() <= 1, "{what}: {} responses", replies.len());
        match replies.first() {
            Some(r) if r.status == 431 => {}
            Some(r) => assert_invalid_token(r, None, what),
            None => assert!(ex.closed, "{what}: no response and the connection is open"),
        }
        assert_eq!(self.up.hits(), before, "{what}: reached the upstream");
    }

    /// A token signed with the gateway's HMAC key from this exact header and payload text.
    fn hs(&self, header: &str, payload: &str) -> String {
        tokens::sign_raw(
            header,
            payload,
            Algorithm::HS256,
            &EncodingKey::from_secret(HS256_SECRET.as_bytes()),
        )
    }

    /// A valid token for the gateway's RSA key (kid `rsa`, RS256).
    fn rs256(&self, claims: &Value) -> String {
        tokens::sign(
            Algorithm::RS256,
            Some("rsa"),
            &self.up.rsa.encoding(),
            claims,
        )
    }

    /// A valid token for the gateway's EC key (kid `ec`, ES256).
    fn es256(&self, claims: &Value) -> String {
        tokens::sign(Algorithm::ES256, Some("ec"), &self.up.ec.encoding(), claims)
    }

    /// Present a well-formed token: the gateway still works and forwards the user.
    async fn control(&self) {
        let r = self.gw.get("/resource", Some(&good_token("alice"))).await;
        assert_eq!(r.status, 200, "control: {}", r.text());
        assert_eq!(r.echo().one("x-user-id"), Some("alice"));
    }
}

/// The three segments of a compact token.
fn segments(token: &str) -> [String; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    [parts[0].into(), parts[1].into(), parts[2].into()]
}

/// The token with segment `i` replaced by `f(segment)`.
fn patch_segment(token: &str, i: usize, f: impl Fn(&str) -> String) -> String {
    let mut s = segments(token);
    s[i] = f(&s[i]);
    s.join(".")
}

const SEGMENT_NAMES: [&str; 3] = ["header", "payload", "signature"];

// ---------------------------------------------------------------------------------------
// alg
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_is_refused_in_every_casing() {
    let env = env().await;
    let payload = good_claims("mallory").to_string();
    let real = good_token("mallory");
    let real_sig = real.rsplit('.').next().expect("signature");
    for alg in [
        "none",
        "None",
        "NONE",
        "nOnE",
        "NoNe",
        "none ",
        " none",
        "none\u{0}",
    ] {
        for header in [
            json!({"alg": alg, "typ": "JWT"}).to_string(),
            json!({"alg": alg, "kid": "hs"}).to_string(),
            json!({"alg": alg, "kid": "rsa"}).to_string(),
        ] {
            for sig in ["", "AAAA", real_sig] {
                let token = tokens::with_signature(&header, &payload, sig);
                env.refused(&token, None, &format!("{header} sig={sig:?}"))
                    .await;
            }
        }
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_in_the_wrong_case_or_spelling_is_refused() {
    // Algorithm names are case-sensitive (RFC 7518 section 3.1): `hs256` names no key, even
    // with a signature the real key made.
    let env = env().await;
    let payload = good_claims("mallory").to_string();
    for alg in [
        "hs256",
        "Hs256",
        "HS256 ",
        "HS-256",
        "HMAC256",
        "HS256\u{0}",
    ] {
        let header = json!({"alg": alg, "kid": "hs"}).to_string();
        env.refused(&env.hs(&header, &payload), Some("token is invalid"), alg)
            .await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_that_is_not_a_string_is_refused() {
    let env = env().await;
    let payload = good_claims("mallory").to_string();
    for alg in [
        json!(256),
        json!(null),
        json!(["HS256"]),
        json!({"name": "HS256"}),
    ] {
        let header = json!({"alg": alg, "kid": "hs"}).to_string();
        env.refused(
            &env.hs(&header, &payload),
            Some("token is invalid"),
            &header,
        )
        .await;
    }
    let no_alg = json!({"kid": "hs"}).to_string();
    env.refused(
        &env.hs(&no_alg, &payload),
        Some("token is invalid"),
        "no alg",
    )
    .await;
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

// ---------------------------------------------------------------------------------------
// Algorithm confusion
// ---------------------------------------------------------------------------------------

/// HS256/384/512 tokens keyed with each byte string a confused verifier might take from the
/// configured public key: the PEM file, the PEM without its final newline, the DER.
async fn assert_public_key_as_hmac_secret_refused(env: &Env, kid: &str, pem: &str) {
    let payload = good_claims("mallory").to_string();
    let der = STANDARD
        .decode(
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .expect("PEM body");
    let secrets: [&[u8]; 3] = [pem.as_bytes(), pem.trim_end().as_bytes(), &der];
    for secret in secrets {
        let key = EncodingKey::from_secret(secret);
        for (alg, alg_name) in [
            (Algorithm::HS256, "HS256"),
            (Algorithm::HS384, "HS384"),
            (Algorithm::HS512, "HS512"),
        ] {
            for with_kid in [true, false] {
                let header = if with_kid {
                    json!({"alg": alg_name, "kid": kid}).to_string()
                } else {
                    json!({"alg": alg_name}).to_string()
                };
                let token = tokens::sign_raw(&header, &payload, alg, &key);
                env.refused(
                    &token,
                    Some("token is invalid"),
                    &format!(
                        "{header} keyed with the {kid} public key ({} bytes)",
                        secret.len()
                    ),
                )
                .await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn algorithm_confusion_hmac_keyed_with_the_rsa_public_key_is_refused() {
    let env = env().await;
    let pem = env.up.rsa.public_pem.clone();
    assert_public_key_as_hmac_secret_refused(&env, "rsa", &pem).await;
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn algorithm_confusion_hmac_keyed_with_the_ec_public_key_is_refused() {
    let env = env().await;
    let pem = env.up.ec.public_pem.clone();
    assert_public_key_as_hmac_secret_refused(&env, "ec", &pem).await;
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn algorithm_confusion_between_asymmetric_algorithms_is_refused() {
    // Each key is pinned to one algorithm: a token signed by the real RSA key under another
    // RSA algorithm (PS256, RS512), or an RS token presented for the EC key (and the other
    // way round), is refused.
    let env = env().await;
    let claims = good_claims("mallory");
    let payload = claims.to_string();
    let rsa = env.up.rsa.encoding();
    let ec = env.up.ec.encoding();
    let cases = [
        (
            tokens::sign_raw(
                r#"{"alg":"PS256","kid":"rsa"}"#,
                &payload,
                Algorithm::PS256,
                &rsa,
            ),
            "PS256 by the real RSA key",
        ),
        (
            tokens::sign_raw(
                r#"{"alg":"RS512","kid":"rsa"}"#,
                &payload,
                Algorithm::RS512,
                &rsa,
            ),
            "RS512 by the real RSA key",
        ),
        (
            tokens::sign_raw(
                r#"{"alg":"RS256","kid":"ec"}"#,
                &payload,
                Algorithm::RS256,
                &rsa,
            ),
            "RS256 presented for the EC key",
        ),
        (
            tokens::sign_raw(
                r#"{"alg":"ES256","kid":"rsa"}"#,
                &payload,
                Algorithm::ES256,
                &ec,
            ),
            "ES256 presented for the RSA key",
        ),
        (
            tokens::sign_raw(
                r#"{"alg":"ES384","kid":"ec"}"#,
                &payload,
                Algorithm::ES384,
                &tokens::ec_p384().encoding(),
            ),
            "ES384 presented for the P-256 key",
        ),
        (
            tokens::sign_raw(
                r#"{"alg":"EdDSA","kid":"ec"}"#,
                &payload,
                Algorithm::EdDSA,
                &tokens::ed25519().encoding(),
            ),
            "EdDSA presented for the EC key",
        ),
    ];
    for (token, what) in &cases {
        env.refused(token, Some("token is invalid"), what).await;
    }
    assert_eq!(env.up.hits(), 0);
    // The real keys under their own algorithms pass.
    for token in [
        env.rs256(&good_claims("rita")),
        env.es256(&good_claims("ella")),
    ] {
        assert_eq!(env.gw.get("/resource", Some(&token)).await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_psychic_signature_is_refused() {
    // CVE-2022-21449: a verifier that does not check 0 < r, s < n accepts r = s = 0 for any
    // message. Also r = s = n, and the DER spelling of zero.
    let env = env().await;
    let payload = good_claims("mallory").to_string();
    let header = r#"{"alg":"ES256","kid":"ec"}"#;
    let order = hex_bytes("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    let cases: [(Vec<u8>, &str); 4] = [
        (vec![0; 64], "r = s = 0"),
        ([order.clone(), order.clone()].concat(), "r = s = n"),
        ([vec![0; 32], order].concat(), "r = 0, s = n"),
        (
            vec![0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00],
            "DER r = s = 0",
        ),
    ];
    for (sig, what) in &cases {
        let token = tokens::with_signature(header, &payload, &b64(sig));
        env.refused(&token, Some("token is invalid"), what).await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------

/// One valid token per configured key.
fn valid_tokens(env: &Env) -> [(String, &'static str); 3] {
    [
        (good_token("mallory"), "HS256"),
        (env.rs256(&good_claims("mallory")), "RS256"),
        (env.es256(&good_claims("mallory")), "ES256"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_stripped_is_refused() {
    let env = env().await;
    for (token, alg) in valid_tokens(&env) {
        let stripped = patch_segment(&token, 2, |_| String::new());
        env.refused(&stripped, Some("token is invalid"), &format!("{alg}, h.p."))
            .await;
        let [h, p, _] = segments(&token);
        env.refused(
            &format!("{h}.{p}"),
            Some("token is invalid"),
            &format!("{alg}, h.p"),
        )
        .await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_truncated_is_refused() {
    let env = env().await;
    for (token, alg) in valid_tokens(&env) {
        let sig = segments(&token)[2].clone();
        for keep in [
            sig.len() - 1,
            sig.len() - 2,
            sig.len() - 4,
            sig.len() / 2,
            4,
            1,
        ] {
            let cut = patch_segment(&token, 2, |s| s[..keep].to_owned());
            env.refused(
                &cut,
                Some("token is invalid"),
                &format!("{alg}, {keep} of {} chars", sig.len()),
            )
            .await;
        }
        // And the other way: the right signature with bytes appended.
        let longer = patch_segment(&token, 2, |s| format!("{s}AAAA"));
        env.refused(
            &longer,
            Some("token is invalid"),
            &format!("{alg}, extended"),
        )
        .await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_from_another_key_is_refused() {
    let env = env().await;
    let claims = good_claims("mallory");
    let cases = [
        (
            tokens::sign(
                Algorithm::HS256,
                Some("hs"),
                &EncodingKey::from_secret(b"another-secret-of-the-same-length"),
                &claims,
            ),
            "HS256, another secret",
        ),
        (
            tokens::sign(
                Algorithm::RS256,
                Some("rsa"),
                &tokens::rsa_attacker().encoding(),
                &claims,
            ),
            "RS256, the attacker's RSA key",
        ),
        (
            tokens::sign(
                Algorithm::ES256,
                Some("ec"),
                &tokens::ec_p256().encoding(),
                &claims,
            ),
            "ES256, another P-256 key",
        ),
        (
            tokens::sign(
                Algorithm::RS256,
                None,
                &tokens::rsa_attacker().encoding(),
                &claims,
            ),
            "RS256 without kid, the attacker's RSA key",
        ),
    ];
    for (token, what) in &cases {
        env.refused(token, Some("token is invalid"), what).await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_of_another_token_is_refused() {
    // A genuine signature, spliced onto another payload or header.
    let env = env().await;
    let alice = good_token("alice");
    let admin = good_token("admin");
    let [_, admin_payload, _] = segments(&admin);
    let spliced = patch_segment(&alice, 1, |_| admin_payload.clone());
    env.refused(
        &spliced,
        Some("token is invalid"),
        "alice's signature on admin's payload",
    )
    .await;
    let rs = env.rs256(&good_claims("alice"));
    let [rs_header, _, _] = segments(&rs);
    let spliced = patch_segment(&admin, 0, |_| rs_header.clone());
    env.refused(
        &spliced,
        Some("token is invalid"),
        "RS256 header on an HS256 token",
    )
    .await;
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

// ---------------------------------------------------------------------------------------
// kid
// ---------------------------------------------------------------------------------------

/// An HS256 token with this `kid`, signed with `secret`.
fn with_kid(kid: &Value, secret: &[u8]) -> String {
    let header = json!({"alg": "HS256", "kid": kid}).to_string();
    tokens::sign_raw(
        &header,
        &good_claims("mallory").to_string(),
        Algorithm::HS256,
        &EncodingKey::from_secret(secret),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kid_path_traversal_is_refused() {
    let env = env().await;
    let rsa_pem = env.up.rsa.public_pem.as_bytes().to_vec();
    let cases: [(&str, &[u8]); 8] = [
        // A file-loading verifier would read /dev/null: an empty HMAC secret.
        ("../../../../../../dev/null", b""),
        ("/dev/null", b""),
        ("..%2f..%2f..%2fdev%2fnull", b""),
        ("....//....//dev/null", b""),
        ("file:///dev/null", b""),
        // ... or the configured public key file itself, as an HMAC secret.
        ("keys/rsa.pub.pem", &rsa_pem),
        ("../keys/rsa.pub.pem", &rsa_pem),
        ("./keys/../keys/rsa.pub.pem", &rsa_pem),
    ];
    for (kid, secret) in cases {
        env.refused(
            &with_kid(&json!(kid), secret),
            Some("token is invalid"),
            kid,
        )
        .await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kid_sql_injection_is_refused() {
    // A kid looked up in a database by string concatenation would return the attacker's
    // chosen secret.
    let env = env().await;
    for kid in [
        "x' UNION SELECT 'attacker-secret' --",
        "hs' OR '1'='1",
        "hs'; DROP TABLE keys; --",
        "hs\" OR \"\"=\"",
    ] {
        env.refused(
            &with_kid(&json!(kid), b"attacker-secret"),
            Some("token is invalid"),
            kid,
        )
        .await;
        // Even with the real secret: a kid is an exact name, not a query.
        env.refused(
            &with_kid(&json!(kid), HS256_SECRET.as_bytes()),
            Some("token is invalid"),
            kid,
        )
        .await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_is_refused() {
    let env = env().await;
    let real = HS256_SECRET.as_bytes();
    for kid in [
        "no-such-key",
        "HS",
        "hs ",
        " hs",
        "hs\u{0}",
        "h\u{0455}",
        "",
    ] {
        env.refused(&with_kid(&json!(kid), real), Some("token is invalid"), kid)
            .await;
    }
    // A kid that is not a string names no key either.
    for kid in [json!(1), json!(null), json!(["hs"]), json!({"kid": "hs"})] {
        env.refused(
            &with_kid(&kid, real),
            Some("token is invalid"),
            &kid.to_string(),
        )
        .await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

// ---------------------------------------------------------------------------------------
// Keys the token brings itself
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_jwk_header_is_refused() {
    let env = env().await;
    let payload = good_claims("mallory").to_string();
    let attacker = tokens::rsa_attacker();
    let key = attacker.encoding();
    let jwk = serde_json::to_string(&attacker.jwk(Algorithm::RS256, "rsa")).expect("jwk");
    let oct = json!({"kty": "oct", "k": b64(b"attacker-secret-attacker-secret!")});
    let cases = [
        (
            tokens::sign_raw(&format!(r#"{{"alg":"RS256","jwk":{jwk}}}"#), &payload, Algorithm::RS256, &key),
            "RSA jwk, no kid",
        ),
        (
            tokens::sign_raw(
                &format!(r#"{{"alg":"RS256","kid":"rsa","jwk":{jwk}}}"#),
                &payload,
                Algorithm::RS256,
                &key,
            ),
            "RSA jwk with the configured kid",
        ),
        (
            tokens::sign_raw(
                &json!({"alg": "HS256", "kid": "hs", "jwk": oct}).to_string(),
                &payload,
                Algorithm::HS256,
                &EncodingKey::from_secret(b"attacker-secret-attacker-secret!"),
            ),
            "symmetric jwk",
        ),
        (
            // Even a jwk naming the real key, on a token the real key signed.
            env.hs(
                &json!({"alg": "HS256", "kid": "hs", "jwk": {"kty": "oct", "k": b64(HS256_SECRET)}}).to_string(),
                &payload,
            ),
            "jwk of the real key",
        ),
    ];
    for (token, what) in &cases {
        env.refused(token, Some("token is invalid"), what).await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_jku_header_is_refused() {
    let env = env().await;
    let payload = good_claims("mallory").to_string();
    let key = tokens::rsa_attacker().encoding();
    for header in [
        r#"{"alg":"RS256","jku":"https://attacker.example/jwks.json"}"#,
        r#"{"alg":"RS256","kid":"rsa","jku":"https://attacker.example/jwks.json"}"#,
        r#"{"alg":"RS256","kid":"rsa","jku":"file:///etc/passwd"}"#,
    ] {
        let token = tokens::sign_raw(header, &payload, Algorithm::RS256, &key);
        env.refused(&token, Some("token is invalid"), header).await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_x5u_header_is_refused() {
    let env = env().await;
    let payload = good_claims("mallory").to_string();
    let key = tokens::rsa_attacker().encoding();
    for header in [
        r#"{"alg":"RS256","x5u":"https://attacker.example/cert.pem"}"#,
        r#"{"alg":"RS256","kid":"rsa","x5u":"https://attacker.example/cert.pem"}"#,
    ] {
        let token = tokens::sign_raw(header, &payload, Algorithm::RS256, &key);
        env.refused(&token, Some("token is invalid"), header).await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_x5c_header_is_refused() {
    let env = env().await;
    let payload = good_claims("mallory").to_string();
    // A self-signed certificate for the attacker's own EC key.
    let cert =
        rcgen::generate_simple_self_signed(vec!["attacker.example".to_owned()]).expect("cert");
    let x5c = STANDARD.encode(cert.cert.der());
    let key =
        EncodingKey::from_ec_pem(cert.signing_key.serialize_pem().as_bytes()).expect("ec key");
    for header in [
        json!({"alg": "ES256", "x5c": [x5c]}).to_string(),
        json!({"alg": "ES256", "kid": "ec", "x5c": [x5c]}).to_string(),
    ] {
        let token = tokens::sign_raw(&header, &payload, Algorithm::ES256, &key);
        env.refused(&token, Some("token is invalid"), "x5c").await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

// ---------------------------------------------------------------------------------------
// Header parameters the gateway does not implement
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crit_with_unknown_extensions_is_refused() {
    // RFC 7515 section 4.1.11: a recipient that does not understand a listed extension must
    // refuse the token. The gateway understands none.
    let env = env().await;
    let payload = good_claims("mallory").to_string();
    for header in [
        json!({"alg": "HS256", "kid": "hs", "crit": ["http://example.com/unknown"], "http://example.com/unknown": true}),
        json!({"alg": "HS256", "kid": "hs", "crit": ["exp"]}),
        json!({"alg": "HS256", "kid": "hs", "crit": []}),
        json!({"alg": "HS256", "kid": "hs", "crit": "b64"}),
        json!({"alg": "HS256", "kid": "hs", "crit": null}),
    ] {
        let header = header.to_string();
        env.refused(
            &env.hs(&header, &payload),
            Some("token is invalid"),
            &header,
        )
        .await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b64_false_unencoded_payload_is_refused() {
    // RFC 7797: with `b64: false` the payload travels and is signed unencoded. A verifier
    // that ignores the parameter would decode (or sign-check) something else than what the
    // issuer signed.
    let env = env().await;
    let payload = good_claims("mallory").to_string();
    let header = r#"{"alg":"HS256","kid":"hs","b64":false,"crit":["b64"]}"#;
    let key = EncodingKey::from_secret(HS256_SECRET.as_bytes());
    let sign_unencoded = |payload_segment: &str| {
        let input = format!("{}.{payload_segment}", b64(header));
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).expect("sign");
        format!("{input}.{sig}")
    };
    let cases = [
        // The JSON payload as is, signed as RFC 7797 says.
        (sign_unencoded(&payload), "unencoded JSON payload"),
        // An unencoded payload made only of base64url characters: a verifier that ignored
        // b64 would decode it as the claims.
        (
            sign_unencoded(&b64(&payload)),
            "unencoded payload that looks encoded",
        ),
        // Detached (empty) payload.
        (sign_unencoded(""), "detached payload"),
        // b64 false on an ordinary token, with and without crit.
        (
            env.hs(header, &payload),
            "b64 false with crit, encoded payload",
        ),
        (
            env.hs(r#"{"alg":"HS256","kid":"hs","b64":false}"#, &payload),
            "b64 false without crit",
        ),
        (
            env.hs(r#"{"alg":"HS256","kid":"hs","b64":true}"#, &payload),
            "b64 true",
        ),
    ];
    for (token, what) in &cases {
        env.refused_raw(token.as_bytes(), what).await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

// ---------------------------------------------------------------------------------------
// Ambiguous JSON
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_header_member_is_refused() {
    let env = env().await;
    let payload = good_claims("mallory").to_string();
    for header in [
        r#"{"alg":"HS256","alg":"none","kid":"hs"}"#,
        r#"{"alg":"none","alg":"HS256","kid":"hs"}"#,
        r#"{"alg":"HS256","alg":"HS256","kid":"hs"}"#,
        r#"{"alg":"HS256","kid":"other","kid":"hs"}"#,
        // The same name spelled with an escape is the same name.
        r#"{"alg":"HS256","\u0061lg":"none","kid":"hs"}"#,
        r#"{"alg":"HS256","kid":"hs","k\u0069d":"hs"}"#,
    ] {
        env.refused(&env.hs(header, &payload), Some("token is invalid"), header)
            .await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_payload_member_is_refused() {
    let env = env().await;
    let now = tokens::now();
    let (exp, old) = (now + 600, now - 3600);
    let base = format!(r#""iss":"{ISSUER}","aud":"{AUDIENCE}""#);
    for payload in [
        format!(r#"{{"sub":"alice","sub":"admin",{base},"exp":{exp}}}"#),
        format!(r#"{{"sub":"admin","sub":"alice",{base},"exp":{exp}}}"#),
        format!(r#"{{"sub":"alice","s\u0075b":"admin",{base},"exp":{exp}}}"#),
        format!(r#"{{"sub":"alice",{base},"exp":{old},"exp":{exp}}}"#),
        format!(r#"{{"sub":"alice",{base},"aud":"other","exp":{exp}}}"#),
        format!(r#"{{"sub":"alice",{base},"iss":"https://evil.test","exp":{exp}}}"#),
        format!(r#"{{"sub":"alice",{base},"jti":"a","jti":"b","exp":{exp}}}"#),
    ] {
        env.refused(
            &env.hs(r#"{"alg":"HS256","kid":"hs"}"#, &payload),
            Some("token is invalid"),
            &payload,
        )
        .await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

// ---------------------------------------------------------------------------------------
// Claims of the wrong type or out of range
// ---------------------------------------------------------------------------------------

/// Good claims with `claim` set to each value in turn, signed with the real key: refused
/// with `token claims are invalid`.
async fn assert_claim_values_refused(env: &Env, claim: &str, values: &[Value]) {
    for v in values {
        let mut c = good_claims("mallory");
        c[claim] = v.clone();
        let token = tokens::hs256(Some("hs"), &c);
        env.refused(
            &token,
            Some("token claims are invalid"),
            &format!("{claim} = {v}"),
        )
        .await;
    }
}

/// Good claims with `claim` set to this literal JSON text (for numbers serde_json would
/// reformat), signed with the real key.
async fn assert_claim_literals_refused(env: &Env, claim: &str, literals: &[&str]) {
    for lit in literals {
        let mut c = good_claims("mallory");
        c.as_object_mut().expect("object").remove(claim);
        let text = c.to_string();
        let payload = format!(r#"{},"{claim}":{lit}}}"#, &text[..text.len() - 1]);
        let token = env.hs(r#"{"alg":"HS256","kid":"hs"}"#, &payload);
        env.refused(&token, None, &format!("{claim} = {lit}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_string_sub_is_refused() {
    let env = env().await;
    assert_claim_values_refused(
        &env,
        "sub",
        &[
            json!(42),
            json!(4.2),
            json!(true),
            json!(null),
            json!(["alice"]),
            json!({"id": "alice"}),
            json!(""),
        ],
    )
    .await;
    // A sub that cannot be a header value (CR LF injection) is refused too.
    assert_claim_values_refused(
        &env,
        "sub",
        &[json!("alice\r\nx-admin: 1"), json!("a\u{0}b")],
    )
    .await;
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exp_as_float_is_refused() {
    let env = env().await;
    let exp = tokens::now() + 600;
    assert_claim_literals_refused(
        &env,
        "exp",
        &[
            &format!("{exp}.0"),
            &format!("{exp}.5"),
            &format!("{exp}e0"),
            "1.8e9",
            "1e10",
        ],
    )
    .await;
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exp_as_string_is_refused() {
    let env = env().await;
    let exp = tokens::now() + 600;
    assert_claim_values_refused(
        &env,
        "exp",
        &[
            json!(exp.to_string()),
            json!("never"),
            json!(""),
            json!(null),
            json!(true),
            json!([exp]),
            json!({"at": exp}),
        ],
    )
    .await;
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exp_as_huge_number_is_refused() {
    // Past u64: a verifier that wraps or saturates could read it as any time at all. (An
    // exp that fits in u64, however far away, is the issuer's choice and is honoured.)
    let env = env().await;
    assert_claim_literals_refused(
        &env,
        "exp",
        &[
            "18446744073709551616",
            "99999999999999999999999",
            "340282366920938463463374607431768211456",
            "1e400",
            "1e19",
        ],
    )
    .await;
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exp_negative_is_refused() {
    let env = env().await;
    assert_claim_literals_refused(
        &env,
        "exp",
        &[
            "-1",
            "-9223372036854775808",
            "-18446744073709551615",
            "-0",
            "-1e10",
        ],
    )
    .await;
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbf_in_the_future_is_refused() {
    let env = env().await;
    let now = tokens::now();
    for nbf in [now + 3600, now + 90, u64::MAX] {
        let mut c = good_claims("mallory");
        c["nbf"] = json!(nbf);
        env.refused(
            &tokens::hs256(Some("hs"), &c),
            Some("token not yet valid"),
            &format!("nbf = now + {}", nbf.saturating_sub(now)),
        )
        .await;
    }
    // Within the 30 s leeway it is fine.
    let mut c = good_claims("nina");
    c["nbf"] = json!(now + 5);
    let r = env
        .gw
        .get("/resource", Some(&tokens::hs256(Some("hs"), &c)))
        .await;
    assert_eq!(r.echo().one("x-user-id"), Some("nina"));
    assert_eq!(env.up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iat_in_the_future_is_refused() {
    let env = env().await;
    let mut c = good_claims("mallory");
    c["iat"] = json!(tokens::now() + 3600);
    env.refused(
        &tokens::hs256(Some("hs"), &c),
        Some("token claims are invalid"),
        "iat in an hour",
    )
    .await;
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbf_or_iat_of_the_wrong_type_is_refused() {
    let env = env().await;
    let now = tokens::now();
    for claim in ["nbf", "iat"] {
        assert_claim_values_refused(
            &env,
            claim,
            &[json!(now.to_string()), json!(null), json!(-1), json!([now])],
        )
        .await;
        assert_claim_literals_refused(&env, claim, &[&format!("{now}.5"), "1e400"]).await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

// ---------------------------------------------------------------------------------------
// Shape
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_not_an_object_is_refused() {
    let env = env().await;
    let claims = good_claims("mallory").to_string();
    for payload in [
        format!("[{claims}]"),
        format!("{claims}{claims}"),
        format!("{claims} x"),
        claims[..claims.len() - 1].to_owned(),
        "\"mallory\"".to_owned(),
        "42".to_owned(),
        "null".to_owned(),
        "true".to_owned(),
        String::new(),
        " ".to_owned(),
        "\u{feff}".to_owned() + &claims,
    ] {
        env.refused(
            &env.hs(r#"{"alg":"HS256","kid":"hs"}"#, &payload),
            Some("token is invalid"),
            &payload,
        )
        .await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_not_an_object_is_refused() {
    let env = env().await;
    let payload = good_claims("mallory").to_string();
    let header = r#"{"alg":"HS256","kid":"hs"}"#;
    for h in [
        format!("[{header}]"),
        format!("{header}{header}"),
        "\"HS256\"".to_owned(),
        "null".to_owned(),
        String::new(),
    ] {
        env.refused(&env.hs(&h, &payload), Some("token is invalid"), &h)
            .await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_two_segments_is_refused() {
    let env = env().await;
    let [h, p, s] = segments(&good_token("mallory"));
    for token in [
        format!("{h}.{p}"),
        format!("{h}.{s}"),
        format!("{p}.{s}"),
        format!("{h}{p}.{s}"),
        h.clone(),
    ] {
        env.refused(&token, Some("token is invalid"), &token).await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_four_segments_is_refused() {
    let env = env().await;
    let good = good_token("mallory");
    let [h, p, s] = segments(&good);
    for token in [
        format!("{good}.{s}"),
        format!("{h}.{h}.{p}.{s}"),
        format!("{h}.{p}.{p}.{s}"),
        format!("{good}."),
        format!(".{good}"),
    ] {
        env.refused(&token, Some("token is invalid"), &token).await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_five_segments_is_refused() {
    // The JWE shape (RFC 7516): header, encrypted key, IV, ciphertext, tag.
    let env = env().await;
    let good = good_token("mallory");
    let [h, p, s] = segments(&good);
    let jwe_header = b64(r#"{"alg":"dir","enc":"A256GCM","kid":"hs"}"#);
    for token in [
        format!("{jwe_header}..{}.{p}.{}", b64([0u8; 12]), b64([0u8; 16])),
        format!("{h}.{p}.{s}.{p}.{s}"),
        format!("{good}.."),
        "....".to_owned(),
    ] {
        env.refused(&token, Some("token is invalid"), &token).await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

/// A valid HS256 token whose header, payload and signature segments all contain `-` or `_`
/// and none has a length divisible by 4 (so each has padding and unused bits to play with).
fn token_with_interesting_base64(env: &Env) -> String {
    for n in 0..1000 {
        // `~~~`: one of the three bytes falls on a whole sextet, 0x3e, which is `-`.
        let x = format!("~~~{n}");
        let header = json!({"alg": "HS256", "kid": "hs", "x": x}).to_string();
        let mut c = good_claims("mallory");
        c["x"] = json!(x);
        let token = env.hs(&header, &c.to_string());
        if segments(&token)
            .iter()
            .all(|s| s.contains(['-', '_']) && s.len() % 4 != 0)
        {
            return token;
        }
    }
    panic!("no suitable token in 1000 tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base64_padding_is_refused() {
    let env = env().await;
    let token = token_with_interesting_base64(&env);
    let pad = |s: &str| format!("{s}{}", "=".repeat((4 - s.len() % 4) % 4));
    for (i, name) in SEGMENT_NAMES.iter().enumerate() {
        env.refused(
            &patch_segment(&token, i, pad),
            Some("token is invalid"),
            name,
        )
        .await;
    }
    let all: Vec<String> = segments(&token).iter().map(|s| pad(s)).collect();
    env.refused(&all.join("."), Some("token is invalid"), "all padded")
        .await;
    assert_eq!(env.up.hits(), 0);
    // The unpadded token is the genuine article.
    assert_eq!(env.gw.get("/resource", Some(&token)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base64_standard_alphabet_is_refused() {
    let env = env().await;
    let token = token_with_interesting_base64(&env);
    let standard = |s: &str| s.replace('-', "+").replace('_', "/");
    for (i, name) in SEGMENT_NAMES.iter().enumerate() {
        env.refused_raw(patch_segment(&token, i, standard).as_bytes(), name)
            .await;
    }
    env.refused_raw(standard(&token).as_bytes(), "all segments")
        .await;
    assert_eq!(env.up.hits(), 0);
    assert_eq!(env.gw.get("/resource", Some(&token)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base64_with_non_canonical_trailing_bits_is_refused() {
    // The last character of a segment whose length is not a multiple of 4 carries unused
    // low bits. A lenient decoder maps both spellings to the same bytes, so a verifier using
    // one would accept another spelling of a genuine token: a different string, hence a
    // different revocation key for a jti-less token and a different cache entry, for the
    // same signed claims.
    let env = env().await;
    let token = token_with_interesting_base64(&env);
    const URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let lenient = GeneralPurpose::new(
        &alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireNone),
    );
    let flip_unused_bit = |s: &str| {
        let last = s.as_bytes()[s.len() - 1];
        let idx = URL.iter().position(|c| *c == last).expect("base64url char");
        let mut out = s[..s.len() - 1].to_owned();
        out.push(URL[idx ^ 1] as char);
        out
    };
    for (i, name) in SEGMENT_NAMES.iter().enumerate() {
        let forged = patch_segment(&token, i, flip_unused_bit);
        assert_ne!(forged, token);
        assert_eq!(
            lenient
                .decode(&segments(&forged)[i])
                .expect("lenient decode"),
            lenient
                .decode(&segments(&token)[i])
                .expect("lenient decode"),
            "{name}: the flipped bit must be an unused one"
        );
        env.refused(&forged, Some("token is invalid"), name).await;
    }
    assert_eq!(env.up.hits(), 0);
    assert_eq!(env.gw.get("/resource", Some(&token)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whitespace_inside_the_token_is_refused() {
    let env = env().await;
    let good = good_token("mallory");
    let [h, p, s] = segments(&good);
    for token in [
        format!("{h} .{p}.{s}"),
        format!("{h}.{p}. {s}"),
        format!("{h}.{p}.{s} x"),
        format!("{h}.{}\t{}.{s}", &p[..4], &p[4..]),
    ] {
        env.refused_raw(token.as_bytes(), &token).await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

// ---------------------------------------------------------------------------------------
// Size and bytes
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mebibyte_token_is_refused() {
    let env = env().await;
    // A validly signed token whose padding claim makes it 1 MiB.
    let mut c = good_claims("mallory");
    c["pad"] = json!("p".repeat(768 * 1024));
    let big = tokens::hs256(Some("hs"), &c);
    assert!(big.len() >= 1 << 20, "{}", big.len());

    // HTTP/1.1: 431 from the HTTP layer (or the connection is closed mid-upload).
    env.refused_raw(big.as_bytes(), "1 MiB over HTTP/1.1").await;

    // HTTP/2: the header list is over SETTINGS_MAX_HEADER_LIST_SIZE; the stream is refused
    // (431 or reset), never forwarded.
    match env
        .gw
        .h2()
        .get(env.gw.url("/resource"))
        .bearer_auth(&big)
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            assert!(
                status == 431 || status == 401,
                "1 MiB over HTTP/2: {status}"
            );
        }
        Err(e) => assert!(!e.is_timeout(), "1 MiB over HTTP/2 hung: {e}"),
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

/// Put `bad` (raw bytes, not necessarily UTF-8) in the middle of segment `i` of a genuine
/// token.
fn with_bytes_in_segment(token: &str, i: usize, bad: &[u8]) -> Vec<u8> {
    let segs = segments(token);
    let mut out = Vec::new();
    for (j, seg) in segs.iter().enumerate() {
        if j > 0 {
            out.push(b'.');
        }
        if j == i {
            let mid = seg.len() / 2;
            out.extend_from_slice(&seg.as_bytes()[..mid]);
            out.extend_from_slice(bad);
            out.extend_from_slice(&seg.as_bytes()[mid..]);
        } else {
            out.extend_from_slice(seg.as_bytes());
        }
    }
    out
}

/// Non-ASCII in one segment: UTF-8 letters, look-alikes of base64url characters, invisible
/// code points, and bytes that are not UTF-8 at all.
async fn assert_non_ascii_refused(env: &Env, i: usize) {
    let token = good_token("mallory");
    let cases: [(&[u8], &str); 7] = [
        ("é".as_bytes(), "é"),
        ("\u{ff21}".as_bytes(), "fullwidth A"),
        ("\u{0410}".as_bytes(), "Cyrillic A"),
        ("\u{200b}".as_bytes(), "zero-width space"),
        ("\u{2024}".as_bytes(), "one-dot leader"),
        (b"\xff\xfe", "invalid UTF-8"),
        (b"\xc3", "truncated UTF-8"),
    ];
    for (bad, what) in cases {
        env.refused_raw(
            &with_bytes_in_segment(&token, i, bad),
            &format!("{what} in the {}", SEGMENT_NAMES[i]),
        )
        .await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_in_the_header_segment_is_refused() {
    assert_non_ascii_refused(&env().await, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_in_the_payload_segment_is_refused() {
    assert_non_ascii_refused(&env().await, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_in_the_signature_segment_is_refused() {
    assert_non_ascii_refused(&env().await, 2).await;
}

// ---------------------------------------------------------------------------------------
// Validity window, issuer, audience
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_refused_as_token_expired() {
    let env = env().await;
    let now = tokens::now();
    let mut c = good_claims("mallory");
    c["iat"] = json!(now - 7200);
    c["exp"] = json!(now - 3600);
    env.refused(
        &tokens::hs256(Some("hs"), &c),
        Some("token expired"),
        "exp an hour ago",
    )
    .await;
    // Beyond the 30 s leeway by a minute.
    c["exp"] = json!(now - 90);
    env.refused(
        &tokens::hs256(Some("hs"), &c),
        Some("token expired"),
        "exp 90 s ago",
    )
    .await;
    // exp = 0, the epoch.
    c["exp"] = json!(0);
    env.refused(
        &tokens::hs256(Some("hs"), &c),
        Some("token expired"),
        "exp 0",
    )
    .await;
    assert_eq!(env.up.hits(), 0);

    // Within the leeway the token is still good.
    c["exp"] = json!(now - 5);
    let r = env
        .gw
        .get("/resource", Some(&tokens::hs256(Some("hs"), &c)))
        .await;
    assert_eq!(r.status, 200, "exp 5 s ago, leeway 30 s: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_asymmetric_token_is_refused_even_after_it_was_cached() {
    // RS/ES tokens are cached after verification; the cache must re-check exp. A token that
    // expires (leeway included) while cached is refused on its next use.
    let env = env().await;
    let now = tokens::now();
    let mut c = good_claims("carl");
    // Expired by the clock 27 s ago: inside the 30 s leeway for ~3 s more.
    c["exp"] = json!(now - 27);
    let token = env.rs256(&c);
    let r = env.gw.get("/resource", Some(&token)).await;
    assert_eq!(r.status, 200, "inside the leeway: {}", r.text());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let hits = env.up.hits();
    env.refused(&token, Some("token expired"), "cached, now expired")
        .await;
    assert_eq!(env.up.hits(), hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_issuer_or_audience_is_refused() {
    let env = env().await;
    let wrong = Some("token not intended for this service");
    let cases: [(&str, Value, Option<&str>); 6] = [
        ("iss", json!("https://evil.test"), wrong),
        ("iss", json!("https://issuer.test/"), wrong),
        ("aud", json!("other-api"), wrong),
        ("aud", json!(["x", "y"]), wrong),
        ("aud", json!("API"), wrong),
        ("iss", json!(42), None),
    ];
    for (claim, value, description) in cases {
        let mut c = good_claims("mallory");
        c[claim] = value.clone();
        env.refused(
            &tokens::hs256(Some("hs"), &c),
            description,
            &format!("{claim} = {value}"),
        )
        .await;
    }
    for claim in ["iss", "aud"] {
        let mut c = good_claims("mallory");
        c.as_object_mut().expect("object").remove(claim);
        env.refused(
            &tokens::hs256(Some("hs"), &c),
            wrong,
            &format!("no {claim}"),
        )
        .await;
    }
    assert_eq!(env.up.hits(), 0);

    // An audience list that contains ours is accepted.
    let mut c = good_claims("bob");
    c["aud"] = json!(["other", AUDIENCE]);
    let r = env
        .gw
        .get("/resource", Some(&tokens::hs256(Some("hs"), &c)))
        .await;
    assert_eq!(r.echo().one("x-user-id"), Some("bob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_without_exp_is_refused() {
    let env = env().await;
    let mut c = good_claims("mallory");
    c.as_object_mut().expect("object").remove("exp");
    env.refused(
        &tokens::hs256(Some("hs"), &c),
        Some("token claims are invalid"),
        "no exp",
    )
    .await;
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_larger_than_max_token_bytes_is_refused() {
    let env = env().await;
    let mut c = good_claims("mallory");
    c["pad"] = json!("p".repeat(MAX_TOKEN_BYTES));
    let big = tokens::hs256(Some("hs"), &c);
    assert!(big.len() > MAX_TOKEN_BYTES);
    env.refused(&big, Some("token too large"), "oversized, validly signed")
        .await;
    assert_eq!(env.up.hits(), 0);

    // A padded token under the limit is fine: size, not content, was the reason.
    let mut c = good_claims("carol");
    c["pad"] = json!("p".repeat(MAX_TOKEN_BYTES / 4));
    let r = env
        .gw
        .get("/resource", Some(&tokens::hs256(Some("hs"), &c)))
        .await;
    assert_eq!(r.echo().one("x-user-id"), Some("carol"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_scheme_is_case_insensitive() {
    let env = env().await;
    let token = good_token("dave");
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let line = format!("Authorization: {scheme} {token}");
        let r = env.gw.raw_get("/resource", None, &[&line]).await;
        assert_eq!(r.status, 200, "{scheme}: {}", r.text());
        assert_eq!(r.echo().one("x-user-id"), Some("dave"), "{scheme}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_without_a_bearer_token_gets_the_bare_challenge() {
    let env = env().await;
    let token = good_token("eve");
    let cases: [(&[&str], &str); 4] = [
        (&[], "no Authorization"),
        (
            &["Authorization: Basic YWxpY2U6c2VjcmV0"],
            "Basic credentials",
        ),
        (&["Authorization: Bearer"], "Bearer without a token"),
        (&["X-Access-Token: x"], "token in another header"),
    ];
    for (extra, what) in cases {
        let r = env.gw.raw_get("/resource", None, extra).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"portcullis\""),
            "{what}"
        );
    }
    // A token in the query string is not a bearer token either (RFC 6750 section 2.3 is
    // not supported).
    let r = env
        .gw
        .raw_get(&format!("/resource?access_token={token}"), None, &[])
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"portcullis\"")
    );
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_headers_are_refused() {
    let env = env().await;
    let good = good_token("frank");
    let first = format!("Authorization: Bearer {good}");
    let second = "Authorization: Bearer not-a-token".to_owned();
    for lines in [[&first, &second], [&second, &first], [&first, &first]] {
        let r = env
            .gw
            .raw_get("/resource", None, &[lines[0].as_str(), lines[1].as_str()])
            .await;
        assert_invalid_token(&r, None, "two Authorization headers");
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}
