//! Unit tests of JWS verification: claim checks, shape attacks, keys, and issuer selection.

use super::*;
use crate::auth::keys::KeyMaterial;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_800_000_000;

fn validator() -> Validator {
    let keys = KeySet::build(
        vec![KeyMaterial {
            label: "k".into(),
            kid: Some("hs1".into()),
            alg: "HS256".into(),
            secret: Some(SECRET.to_vec()),
            secret_base64: false,
            public_pem: None,
            private_pem: None,
        }],
        None,
    )
    .unwrap();
    Validator {
        keys,
        issuer: Some("https://issuer.example".into()),
        audience: vec!["api".into()],
        leeway: 30,
        require_exp: true,
        max_token_bytes: 8192,
        user_claim: "sub".into(),
        extra_claims: vec!["roles".into()],
        jwe: None,
        jwks: None,
        grants: None,
        issuers: None,
    }
}

fn sign(claims: serde_json::Value) -> String {
    let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some("hs1".into());
    encode(&h, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

fn good() -> serde_json::Value {
    json!({"sub": "alice", "exp": NOW + 60, "iat": NOW, "iss": "https://issuer.example", "aud": "api", "jti": "j1", "roles": ["a", "b"]})
}

/// Re-sign arbitrary header and payload JSON text with the configured secret.
fn raw(header: &str, payload: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &EncodingKey::from_secret(SECRET),
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    format!("{input}.{sig}")
}

#[test]
fn accepts_good_token() {
    let v = validator().verify(&sign(good()), NOW).unwrap();
    assert_eq!(v.user, "alice");
    assert_eq!(v.extra[0].1, "a,b");
    assert!(v.has_jti);
    assert_eq!(v.iat, Some(NOW));
}

#[test]
fn claim_checks() {
    let val = validator();
    let cases: Vec<(serde_json::Value, AuthError)> = vec![
        (json!({"exp": NOW - 31}), AuthError::Expired),
        (json!({"exp": serde_json::Value::Null}), AuthError::Claims),
        (json!({"nbf": NOW + 31}), AuthError::NotYetValid),
        (json!({"iat": NOW + 31}), AuthError::IssuedInFuture),
        (json!({"iss": "https://evil.example"}), AuthError::Issuer),
        (json!({"aud": "other"}), AuthError::Audience),
        (json!({"aud": ["x", "y"]}), AuthError::Audience),
        (json!({"sub": 42}), AuthError::Claims),
        (json!({"sub": ""}), AuthError::Claims),
        (json!({"exp": 1.8e9}), AuthError::Claims),
        (json!({"exp": "1800000060"}), AuthError::Claims),
        (json!({"exp": -5}), AuthError::Claims),
        (json!({"roles": {"nested": true}}), AuthError::Claims),
    ];
    for (patch, want) in cases {
        let mut c = good();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        assert_eq!(val.verify(&sign(c.clone()), NOW).unwrap_err(), want, "{c}");
    }
    let mut c = good();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        val.verify(&sign(c), NOW).unwrap_err(),
        AuthError::MissingExp
    );
    // Within leeway is fine.
    let mut c = good();
    c["exp"] = json!(NOW - 10);
    assert!(val.verify(&sign(c), NOW).is_ok());
    // Audience as array with one match.
    let mut c = good();
    c["aud"] = json!(["x", "api"]);
    assert!(val.verify(&sign(c), NOW).is_ok());
}

#[test]
fn huge_exp_is_rejected() {
    let tok = raw(
        r#"{"alg":"HS256","kid":"hs1"}"#,
        r#"{"sub":"alice","exp":99999999999999999999999,"iss":"https://issuer.example","aud":"api"}"#,
    );
    assert_eq!(
        validator().verify(&tok, NOW).unwrap_err(),
        AuthError::Claims
    );
}

#[test]
fn alg_none_in_every_casing_is_refused() {
    let val = validator();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"hs1"}}"#));
        let p = URL_SAFE_NO_PAD.encode(good().to_string());
        for tok in [format!("{h}.{p}."), format!("{h}.{p}.AAAA")] {
            let e = val.verify(&tok, NOW).unwrap_err();
            assert!(
                matches!(e, AuthError::Malformed | AuthError::Algorithm),
                "{alg}: {e:?}"
            );
        }
    }
}

#[test]
fn forbidden_headers() {
    for extra in [
        r#""jwk":{"kty":"oct","k":"AAAA"}"#,
        r#""jku":"https://evil.example/jwks""#,
        r#""x5u":"https://evil.example/cert""#,
        r#""x5c":["MIIB"]"#,
        r#""crit":["exp"]"#,
        r#""b64":false"#,
        r#""enc":"A256GCM""#,
    ] {
        let tok = raw(
            &format!(r#"{{"alg":"HS256","kid":"hs1",{extra}}}"#),
            &good().to_string(),
        );
        assert_eq!(
            validator().verify(&tok, NOW).unwrap_err(),
            AuthError::ForbiddenHeader,
            "{extra}"
        );
    }
}

#[test]
fn duplicate_members_are_malformed() {
    let tok = raw(
        r#"{"alg":"HS256","alg":"HS256","kid":"hs1"}"#,
        &good().to_string(),
    );
    assert_eq!(
        validator().verify(&tok, NOW).unwrap_err(),
        AuthError::Malformed
    );
    let tok = raw(
        r#"{"alg":"HS256","kid":"hs1"}"#,
        &format!(
            r#"{{"sub":"alice","sub":"admin","exp":{},"iss":"https://issuer.example","aud":"api"}}"#,
            NOW + 60
        ),
    );
    assert_eq!(
        validator().verify(&tok, NOW).unwrap_err(),
        AuthError::Malformed
    );
}

#[test]
fn shape_attacks() {
    let val = validator();
    let good = sign(good());
    let parts: Vec<&str> = good.split('.').collect();
    let cases = [
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.x"),
        format!("{good}.x.y"),
        format!("{}.{}.", parts[0], parts[1]),
        format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
        format!("{}.{}+.{}", parts[0], parts[1], parts[2]),
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            &parts[2][..parts[2].len() - 4]
        ),
        format!("{}é.{}.{}", parts[0], parts[1], parts[2]),
        String::new(),
    ];
    for tok in cases {
        assert!(val.verify(&tok, NOW).is_err(), "{tok}");
    }
    let not_object = raw(r#"{"alg":"HS256","kid":"hs1"}"#, r#"["sub","alice"]"#);
    assert_eq!(
        val.verify(&not_object, NOW).unwrap_err(),
        AuthError::Malformed
    );
    let big = format!("{}.{}.{}", parts[0], "A".repeat(9000), parts[2]);
    assert_eq!(val.verify(&big, NOW).unwrap_err(), AuthError::TooLarge);
}

#[test]
fn unknown_kid_and_wrong_key() {
    let tok = raw(
        r#"{"alg":"HS256","kid":"../../etc/passwd"}"#,
        &good().to_string(),
    );
    assert_eq!(
        validator().verify(&tok, NOW).unwrap_err(),
        AuthError::UnknownKey
    );
    let other = encode(
        &Header {
            kid: Some("hs1".into()),
            ..Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &good(),
        &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
    )
    .unwrap();
    assert_eq!(
        validator().verify(&other, NOW).unwrap_err(),
        AuthError::Signature
    );
    let hs384 = raw(r#"{"alg":"HS384","kid":"hs1"}"#, &good().to_string());
    assert_eq!(
        validator().verify(&hs384, NOW).unwrap_err(),
        AuthError::Algorithm
    );
}

#[test]
fn jti_less_token_is_keyed_by_token_digest() {
    let mut c = good();
    c.as_object_mut().unwrap().remove("jti");
    let tok = sign(c);
    let v = validator().verify(&tok, NOW).unwrap();
    assert!(!v.has_jti);
    let signing_input = tok.rsplit_once('.').unwrap().0;
    assert_eq!(v.token_key, token_digest(signing_input.as_bytes()));
}

/// A validator with `[[jwt.issuers]]` A and B, whose HS256 keys share the kid `k`.
fn with_issuers() -> Validator {
    use crate::jose::jwks::{FetchOptions, Source};
    let issuer = |name: &str, iss: &str, secret: &str| {
        let doc = format!(
            r#"{{"keys":[{{"kty":"oct","kid":"k","alg":"HS256","k":"{}"}}]}}"#,
            URL_SAFE_NO_PAD.encode(secret)
        );
        let keys = crate::jose::keys::parse_jwks(doc.as_bytes(), "test").unwrap();
        crate::auth::issuers::Issuer {
            name: name.into(),
            iss: iss.into(),
            audience: vec!["api".into()],
            leeway: 30,
            user_claim: "sub".into(),
            keys: Refresher::new(
                Source::File("/nonexistent".into()),
                FetchOptions::default(),
                keys,
                std::time::Duration::from_secs(60),
                std::time::Duration::from_secs(1),
            ),
        }
    };
    Validator {
        issuers: Some(std::sync::Arc::new(Issuers {
            list: vec![
                issuer("a", "https://a.example/", SECRET_A),
                issuer("b", "https://b.example/", SECRET_B),
            ],
        })),
        ..validator()
    }
}

const SECRET_A: &str = "issuer-a-secret-issuer-a-secret-";
const SECRET_B: &str = "issuer-b-secret-issuer-b-secret-";

fn sign_with(secret: &[u8], kid: &str, claims: serde_json::Value) -> String {
    let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(kid.into());
    encode(&h, &claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn claims_of(iss: Option<&str>) -> serde_json::Value {
    let mut c = good();
    match iss {
        Some(iss) => c["iss"] = iss.into(),
        None => {
            c.as_object_mut().unwrap().remove("iss");
        }
    }
    c
}

#[test]
fn the_iss_selects_the_issuer_whose_keys_alone_may_verify() {
    let v = with_issuers();
    let a = v
        .verify(
            &sign_with(
                SECRET_A.as_bytes(),
                "k",
                claims_of(Some("https://a.example/")),
            ),
            NOW,
        )
        .unwrap();
    assert_eq!(a.issuer, 1);
    let b = v
        .verify(
            &sign_with(
                SECRET_B.as_bytes(),
                "k",
                claims_of(Some("https://b.example/")),
            ),
            NOW,
        )
        .unwrap();
    assert_eq!(b.issuer, 2);
    let own = v.verify(&sign(good()), NOW).unwrap();
    assert_eq!(own.issuer, crate::auth::issuers::DEFAULT);
    // A's key (same kid as B's) claiming B; the default key claiming A; A's key claiming
    // the default issuer, no issuer, or an unknown one.
    for (token, want) in [
        (
            sign_with(
                SECRET_A.as_bytes(),
                "k",
                claims_of(Some("https://b.example/")),
            ),
            AuthError::Signature,
        ),
        (
            sign_with(SECRET, "hs1", claims_of(Some("https://a.example/"))),
            AuthError::UnknownKey,
        ),
        (
            sign_with(
                SECRET_A.as_bytes(),
                "k",
                claims_of(Some("https://issuer.example")),
            ),
            AuthError::UnknownKey,
        ),
        (
            sign_with(SECRET_A.as_bytes(), "k", claims_of(None)),
            AuthError::Issuer,
        ),
        (
            sign_with(
                SECRET_A.as_bytes(),
                "k",
                claims_of(Some("https://c.example/")),
            ),
            AuthError::Issuer,
        ),
        (
            sign_with(
                SECRET_A.as_bytes(),
                "k",
                json!({"iss": 7, "sub": "x", "exp": NOW + 60}),
            ),
            AuthError::Claims,
        ),
    ] {
        assert_eq!(v.verify(&token, NOW).unwrap_err(), want);
    }
}

#[test]
fn without_a_pinned_jwt_issuer_the_default_takes_only_tokens_without_iss() {
    let v = Validator {
        issuer: None,
        ..with_issuers()
    };
    assert!(v.verify(&sign(claims_of(None)), NOW).is_ok());
    assert_eq!(
        v.verify(&sign(claims_of(Some("https://c.example/"))), NOW)
            .unwrap_err(),
        AuthError::Issuer
    );
    assert_eq!(
        v.verify(&sign(claims_of(Some("https://b.example/"))), NOW)
            .unwrap_err(),
        AuthError::UnknownKey
    );
}
