//! Unit tests of the DPoP proof check: one valid ES256 proof, then each check failing alone.

use super::*;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

const NOW: u64 = 1_800_000_000;
const HTU: &str = "https://api.example.com/payments";
const TOKEN: &str = "header.payload.signature";

struct Client {
    key: EcdsaKeyPair,
    jwk: Value,
}

impl Client {
    fn new() -> Client {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = key.public_key().as_ref().to_vec();
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        Client { key, jwk }
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk})
    }

    fn claims() -> Value {
        json!({
            "jti": "e1j3V_bKic8-LAEB",
            "htm": "GET",
            "htu": HTU,
            "iat": NOW,
            "ath": URL_SAFE_NO_PAD.encode(Sha256::digest(TOKEN.as_bytes())),
        })
    }

    fn jkt(&self) -> String {
        thumbprint(&serde_json::from_value(self.jwk.clone()).unwrap()).unwrap()
    }
}

fn settings() -> Settings {
    Settings {
        algs: vec![JwsAlg::ES256, JwsAlg::EdDSA, JwsAlg::RS256, JwsAlg::PS256],
        max_age: Duration::from_secs(60),
        leeway: 5,
    }
}

fn want() -> Expect<'static> {
    Expect {
        method: "GET",
        htu: HTU,
        access_token: Some(TOKEN),
    }
}

fn run(proof: &str) -> Result<Proof, DpopError> {
    check(proof, &settings(), &want(), NOW)
}

#[test]
fn a_valid_proof_passes_and_names_its_key() {
    let c = Client::new();
    let p = run(&c.sign(&c.header(), &Client::claims())).unwrap();
    assert_eq!(p.jkt, c.jkt());
    assert_eq!(p.jti, "e1j3V_bKic8-LAEB");
    assert_eq!(binds(Some(&c.jkt()), &p), Ok(()));
    assert_eq!(binds(None, &p), Err(DpopError::Binding));
    assert_eq!(
        binds(Some(&Client::new().jkt()), &p),
        Err(DpopError::Binding)
    );
}

#[test]
fn rfc7638_example_thumbprint() {
    // RFC 7638 section 3.1.
    let jwk: Jwk = serde_json::from_value(json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    }))
    .unwrap();
    assert_eq!(
        thumbprint(&jwk).as_deref(),
        Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
    );
}

#[test]
fn each_check_fails_on_its_own() {
    let c = Client::new();
    let with = |f: &dyn Fn(&mut Value, &mut Value)| {
        let (mut h, mut cl) = (c.header(), Client::claims());
        f(&mut h, &mut cl);
        run(&c.sign(&h, &cl))
    };
    let cases: Vec<(&str, Result<Proof, DpopError>, DpopError)> = vec![
        (
            "typ",
            with(&|h, _| h["typ"] = json!("JWT")),
            DpopError::Type,
        ),
        (
            "alg not allowed",
            with(&|h, _| h["alg"] = json!("ES384")),
            DpopError::Algorithm,
        ),
        (
            "alg none",
            with(&|h, _| h["alg"] = json!("none")),
            DpopError::Algorithm,
        ),
        (
            "HS256",
            with(&|h, _| h["alg"] = json!("HS256")),
            DpopError::Algorithm,
        ),
        (
            "private jwk",
            with(&|h, _| h["jwk"]["d"] = json!("AAAA")),
            DpopError::Key,
        ),
        (
            "no jwk",
            with(&|h, _| {
                h.as_object_mut().unwrap().remove("jwk");
            }),
            DpopError::Key,
        ),
        (
            "another key's jwk",
            with(&|h, _| h["jwk"] = Client::new().jwk),
            DpopError::Signature,
        ),
        (
            "htm",
            with(&|_, cl| cl["htm"] = json!("POST")),
            DpopError::Method,
        ),
        (
            "htu host",
            with(&|_, cl| cl["htu"] = json!("https://evil.example.com/payments")),
            DpopError::Uri,
        ),
        (
            "htu query",
            with(&|_, cl| cl["htu"] = json!(format!("{HTU}?a=1"))),
            DpopError::Uri,
        ),
        (
            "old iat",
            with(&|_, cl| cl["iat"] = json!(NOW - 66)),
            DpopError::Time,
        ),
        (
            "future iat",
            with(&|_, cl| cl["iat"] = json!(NOW + 6)),
            DpopError::Time,
        ),
        (
            "no ath",
            with(&|_, cl| {
                cl.as_object_mut().unwrap().remove("ath");
            }),
            DpopError::Ath,
        ),
        (
            "wrong ath",
            with(&|_, cl| cl["ath"] = json!(URL_SAFE_NO_PAD.encode(Sha256::digest(b"other")))),
            DpopError::Ath,
        ),
        (
            "no jti",
            with(&|_, cl| {
                cl.as_object_mut().unwrap().remove("jti");
            }),
            DpopError::Malformed,
        ),
    ];
    for (name, got, want) in cases {
        assert_eq!(got, Err(want), "{name}");
    }
    // Within max_age + leeway at both ends passes.
    assert!(with(&|_, cl| cl["iat"] = json!(NOW - 65)).is_ok());
    assert!(with(&|_, cl| cl["iat"] = json!(NOW + 5)).is_ok());
}

#[test]
fn tampered_and_malformed_proofs() {
    let c = Client::new();
    let good = c.sign(&c.header(), &Client::claims());
    let (input, _) = good.rsplit_once('.').unwrap();
    let other = c.sign(&c.header(), &json!({"jti": "x", "htm": "GET"}));
    let (_, other_sig) = other.rsplit_once('.').unwrap();
    assert_eq!(
        run(&format!("{input}.{other_sig}")),
        Err(DpopError::Signature)
    );
    for bad in ["", "a.b", "a.b.c.d", "..", "!!.!!.!!"] {
        assert!(run(bad).is_err(), "{bad}");
    }
}

#[test]
fn htu_normalisation() {
    assert_eq!(
        normalise_htu("HTTPS://API.example.com:443/payments").as_deref(),
        Some(HTU)
    );
    assert_eq!(
        normalise_htu("https://api.example.com:8443").as_deref(),
        Some("https://api.example.com:8443/")
    );
    for bad in [
        "https://a/x?y",
        "https://a/x#f",
        "/x",
        "ftp://a/x",
        "https://u@a/x",
    ] {
        assert_eq!(normalise_htu(bad), None, "{bad}");
    }
}

#[test]
fn credentials_and_proof_headers() {
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, "DPoP abc".parse().unwrap());
    assert_eq!(credential(&h, 100), Ok(Credential::Dpop("abc")));
    h.insert(AUTHORIZATION, "dpop   abc ".parse().unwrap());
    assert_eq!(credential(&h, 100), Ok(Credential::Dpop("abc")));
    h.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
    assert_eq!(credential(&h, 100), Ok(Credential::Bearer("abc")));
    assert_eq!(proof_header(&h), Err(DpopError::Missing));
    h.append(&DPOP, "a.b.c".parse().unwrap());
    assert_eq!(proof_header(&h), Ok("a.b.c"));
    h.append(&DPOP, "a.b.c".parse().unwrap());
    assert_eq!(proof_header(&h), Err(DpopError::Multiple));
}

#[test]
fn replay_cache_refuses_a_second_use_until_expiry() {
    let c = ReplayCache::new();
    let p = Proof {
        jkt: "k".into(),
        jti: "j".into(),
        iat: NOW,
        nonce: None,
    };
    let k = ReplayCache::key(&p);
    assert!(c.first_use(k, NOW + 60, NOW));
    assert!(!c.first_use(k, NOW + 60, NOW + 1));
    assert!(c.first_use(k, NOW + 200, NOW + 61));
    let other = ReplayCache::key(&Proof {
        jkt: "other".into(),
        ..p
    });
    assert!(c.first_use(other, NOW + 60, NOW));
}
