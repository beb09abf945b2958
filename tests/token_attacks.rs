//! Tokens built to get past a careless verifier: `alg: none`, algorithm confusion, keys the
//! token brings itself, hostile `kid`s, claims out of their validity window or meant for
//! someone else, oversized tokens. Each must be refused with 401 `invalid_token` and none may
//! reach the upstream; each test ends with a well-formed token as control.

mod common;

use common::tokens::{self, PemPair, HS256_SECRET};
use common::{hmac_key_toml, public_key_toml, Reply, Setup, TestGateway, Upstream};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "api";
const MAX_TOKEN_BYTES: usize = 2048;

/// A gateway with issuer, audience and a small token limit, an HMAC, an RSA and an EC key.
struct Env {
    gw: TestGateway,
    up: Upstream,
    rsa: PemPair,
    ec: PemPair,
}

async fn env() -> Env {
    let up = Upstream::start().await;
    let setup = Setup::new();
    let (rsa, ec) = (tokens::rsa(), tokens::ec_p256());
    setup.write("keys/rsa.pub.pem", &rsa.public_pem);
    setup.write("keys/ec.pub.pem", &ec.public_pem);
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
    let gw = setup.var("up", up.url()).start(&config).await;
    Env { gw, up, rsa, ec }
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

    /// Present a well-formed token: the gateway still works and forwards the user.
    async fn control(&self) {
        let r = self.gw.get("/resource", Some(&good_token("alice"))).await;
        assert_eq!(r.status, 200, "control: {}", r.text());
        assert_eq!(r.echo().one("x-user-id"), Some("alice"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_is_refused_in_every_casing() {
    let env = env().await;
    let payload = good_claims("mallory").to_string();
    let real = good_token("mallory");
    let real_sig = real.rsplit('.').next().expect("signature");
    for alg in ["none", "None", "NONE", "nOnE"] {
        for header in [
            format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#),
            format!(r#"{{"alg":"{alg}","kid":"hs"}}"#),
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
async fn hmac_token_keyed_with_a_configured_public_key_is_refused() {
    let env = env().await;
    let payload = good_claims("mallory").to_string();
    for (name, pem) in [("rsa", &env.rsa.public_pem), ("ec", &env.ec.public_pem)] {
        // The PEM as stored in the file, and without its trailing newline: the two byte
        // strings a confused verifier might use as the HMAC secret.
        for secret in [pem.as_str(), pem.trim_end()] {
            let key = EncodingKey::from_secret(secret.as_bytes());
            for (alg, alg_name) in [
                (Algorithm::HS256, "HS256"),
                (Algorithm::HS384, "HS384"),
                (Algorithm::HS512, "HS512"),
            ] {
                for kid in [Some(name), None] {
                    let header = match kid {
                        Some(k) => format!(r#"{{"alg":"{alg_name}","kid":"{k}"}}"#),
                        None => format!(r#"{{"alg":"{alg_name}"}}"#),
                    };
                    let token = tokens::sign_raw(&header, &payload, alg, &key);
                    env.refused(&token, None, &format!("{alg_name} keyed with {name} PEM"))
                        .await;
                }
            }
        }
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_embedded_in_the_token_header_are_refused() {
    let env = env().await;
    let payload = good_claims("mallory").to_string();
    let attacker = tokens::rsa_attacker();
    let attacker_key = attacker.encoding();
    let jwk = serde_json::to_string(&attacker.jwk(Algorithm::RS256, "rsa")).expect("jwk");
    // A self-signed certificate for the attacker's own EC key, for x5c.
    let cert =
        rcgen::generate_simple_self_signed(vec!["attacker.example".to_owned()]).expect("cert");
    let x5c = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, cert.cert.der());
    let cert_key =
        EncodingKey::from_ec_pem(cert.signing_key.serialize_pem().as_bytes()).expect("ec key");

    let rs256 = |header: &str| tokens::sign_raw(header, &payload, Algorithm::RS256, &attacker_key);
    let cases = [
        (
            rs256(&format!(r#"{{"alg":"RS256","jwk":{jwk}}}"#)),
            "jwk, no kid",
        ),
        (
            rs256(&format!(r#"{{"alg":"RS256","kid":"rsa","jwk":{jwk}}}"#)),
            "jwk with the configured kid",
        ),
        (
            rs256(r#"{"alg":"RS256","jku":"https://attacker.example/jwks.json"}"#),
            "jku",
        ),
        (
            rs256(r#"{"alg":"RS256","kid":"rsa","jku":"https://attacker.example/jwks.json"}"#),
            "jku with the configured kid",
        ),
        (
            rs256(r#"{"alg":"RS256","x5u":"https://attacker.example/cert.pem"}"#),
            "x5u",
        ),
        (
            tokens::sign_raw(
                &format!(r#"{{"alg":"ES256","x5c":["{x5c}"]}}"#),
                &payload,
                Algorithm::ES256,
                &cert_key,
            ),
            "x5c",
        ),
        (
            tokens::sign_raw(
                &format!(r#"{{"alg":"ES256","kid":"ec","x5c":["{x5c}"]}}"#),
                &payload,
                Algorithm::ES256,
                &cert_key,
            ),
            "x5c with the configured kid",
        ),
    ];
    for (token, what) in &cases {
        env.refused(token, Some("token is invalid"), what).await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_path_traversal_kids_are_refused() {
    let env = env().await;
    let payload = good_claims("mallory").to_string();
    let hs = |kid: &str, secret: &[u8]| {
        let header = json!({"alg": "HS256", "kid": kid}).to_string();
        tokens::sign_raw(
            &header,
            &payload,
            Algorithm::HS256,
            &EncodingKey::from_secret(secret),
        )
    };
    let cases = [
        // A kid no key has, signed with the real secret: the kid must name a key.
        (hs("no-such-key", HS256_SECRET.as_bytes()), "unknown kid"),
        // A file-loading verifier would read /dev/null: an empty HMAC secret.
        (
            hs("../../../../../../dev/null", b""),
            "kid traversal to /dev/null",
        ),
        (hs("/dev/null", b""), "absolute kid /dev/null"),
        // ... or the configured public key file itself, as an HMAC secret.
        (
            hs("keys/rsa.pub.pem", env.rsa.public_pem.as_bytes()),
            "kid naming the public key file",
        ),
        (
            hs("../keys/rsa.pub.pem", env.rsa.public_pem.as_bytes()),
            "kid climbing to the public key file",
        ),
        (
            hs("x' UNION SELECT 'attacker-secret", b"attacker-secret"),
            "kid with SQL",
        ),
        // The real kid with a suffix is not the real kid.
        (
            hs("hs\u{0000}", HS256_SECRET.as_bytes()),
            "kid with NUL suffix",
        ),
        (
            hs("hs ", HS256_SECRET.as_bytes()),
            "kid with trailing space",
        ),
    ];
    for (token, what) in &cases {
        env.refused(token, Some("token is invalid"), what).await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
}

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
async fn token_not_yet_valid_is_refused() {
    let env = env().await;
    let now = tokens::now();
    let mut c = good_claims("mallory");
    c["nbf"] = json!(now + 3600);
    env.refused(
        &tokens::hs256(Some("hs"), &c),
        Some("token not yet valid"),
        "nbf in an hour",
    )
    .await;
    let mut c = good_claims("mallory");
    c["iat"] = json!(now + 3600);
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
    for bad in [json!("9999999999"), json!(1.5e10), json!(null), json!(-1)] {
        let mut c = good_claims("mallory");
        c["exp"] = bad.clone();
        env.refused(
            &tokens::hs256(Some("hs"), &c),
            None,
            &format!("exp = {bad}"),
        )
        .await;
    }
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
async fn malformed_and_ambiguous_tokens_are_refused() {
    let env = env().await;
    let good = good_token("mallory");
    let parts: Vec<&str> = good.split('.').collect();
    let now = tokens::now();
    let hs = |header: &str, payload: &str| {
        tokens::sign_raw(
            header,
            payload,
            Algorithm::HS256,
            &EncodingKey::from_secret(HS256_SECRET.as_bytes()),
        )
    };
    let cases = [
        (format!("{}.{}", parts[0], parts[1]), "two segments"),
        (format!("{good}.{}", parts[2]), "four segments"),
        (format!("{good}="), "padded signature"),
        (
            format!("{}.{}.{}", parts[0], parts[1], &parts[2][1..]),
            "cut signature",
        ),
        (
            hs(
                r#"{"alg":"HS256","alg":"none","kid":"hs"}"#,
                &good_claims("m").to_string(),
            ),
            "alg twice in the header",
        ),
        (
            hs(
                r#"{"alg":"HS256","kid":"hs"}"#,
                &format!(
                    r#"{{"sub":"alice","sub":"admin","iss":"{ISSUER}","aud":"{AUDIENCE}","exp":{}}}"#,
                    now + 600
                ),
            ),
            "sub twice in the payload",
        ),
        (
            hs(
                r#"{"alg":"HS256","kid":"hs","crit":["exp"]}"#,
                &good_claims("m").to_string(),
            ),
            "crit header",
        ),
    ];
    for (token, what) in &cases {
        env.refused(token, None, what).await;
    }
    assert_eq!(env.up.hits(), 0);
    env.control().await;
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
