//! JWE decryption per key-management `alg` and content `enc`, for a ~300-byte claims payload.
//!
//! `cargo bench --bench jwe`

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::auth::jwe::{decrypt, encrypt, ContentEnc, DecryptionKey, KeyRing};

/// Roughly what an access token carries (300 bytes).
const CLAIMS: &str = r#"{"iss":"https://issuer.example","sub":"user-4711","aud":"portcullis","exp":4102444800,"iat":1700000000,"nbf":1700000000,"jti":"8f14e45f-ceea-467f-a8b5-6c2a3a4d5e6f","name":"Zoe Example","email":"zoe@example.org","roles":["reader","writer","admin"],"tenant":"acme-corp","scope":"read write"}"#;

const FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/jwe_jwcrypto.json"
));

fn jwe(c: &mut Criterion) {
    let mut rows: Vec<(String, DecryptionKey)> = ContentEnc::ALL
        .into_iter()
        .map(|enc| {
            let key = vec![0x42; enc.cek_len()];
            let k =
                DecryptionKey::from_config(None, "dir", Some(enc.name()), None, Some(&key), None);
            (format!("dir+{}", enc.name()), k.expect("dir key"))
        })
        .collect();
    for (alg, len, enc) in [("A128KW", 16, "A128GCM"), ("A256KW", 32, "A256GCM")] {
        let k = DecryptionKey::from_config(None, alg, Some(enc), None, Some(&vec![7; len]), None);
        rows.push((format!("{alg}+{enc}"), k.expect("kw key")));
    }
    let fixture: serde_json::Value = serde_json::from_str(FIXTURE).expect("fixture JSON");
    let pem = fixture["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find_map(|k| k["pem"].as_str()))
        .expect("RSA key in fixture");
    let rsa = DecryptionKey::from_config(
        None,
        "RSA-OAEP-256",
        Some("A256GCM"),
        None,
        None,
        Some(pem.as_bytes()),
    );
    rows.push(("RSA-OAEP-256+A256GCM".to_owned(), rsa.expect("rsa key")));

    let mut group = c.benchmark_group("jwe_decrypt");
    for (name, key) in rows {
        let token = encrypt(&key, CLAIMS.as_bytes(), None, None).expect("encrypt");
        let ring = KeyRing::new(vec![key]).expect("ring");
        assert_eq!(
            decrypt(&ring, &token).expect("decrypt").plaintext,
            CLAIMS.as_bytes()
        );
        if name.starts_with("RSA") {
            group.sample_size(10);
        }
        group.bench_function(name, |b| {
            b.iter(|| decrypt(&ring, std::hint::black_box(&token)))
        });
    }
    // The modes added in issue 11 are decryption only: their tokens come from the fixture
    // (written by jwcrypto), one per key-management mode and curve, plus A192CBC-HS384.
    for k in fixture["keys"].as_array().expect("keys") {
        let alg = k["alg"].as_str().expect("alg");
        let kid = k["kid"].as_str().expect("kid");
        let enc = if kid == "dir-A192CBC-HS384" {
            "A192CBC-HS384"
        } else if ["dir", "A128KW", "A256KW", "RSA-OAEP-256"].contains(&alg) {
            continue;
        } else {
            "A256GCM"
        };
        let token = fixture["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .find(|t| {
                t["alg"] == alg
                    && t["enc"] == enc
                    && t["by"] == "jwcrypto"
                    && (t["kid"] == kid || t["kid"].is_null())
            })
            .and_then(|t| t["token"].as_str())
            .expect("fixture token");
        let key = DecryptionKey::from_config(
            Some(kid.to_owned()),
            alg,
            k["enc"].as_str(),
            k["k"].as_str(),
            None,
            k["pem"].as_str().map(str::as_bytes),
        )
        .expect("fixture key");
        let ring = KeyRing::new(vec![key])
            .expect("ring")
            .with_accepted_encs(ContentEnc::ALL.to_vec());
        if let Err(e) = decrypt(&ring, token) {
            panic!("{kid}: fixture token does not decrypt: {e:?}");
        }
        if alg.starts_with("RSA") {
            group.sample_size(10);
        } else {
            group.sample_size(100);
        }
        group.bench_function(format!("{kid}+{enc}"), |b| {
            b.iter(|| decrypt(&ring, std::hint::black_box(token)))
        });
    }
    group.finish();
}

criterion_group!(benches, jwe);
criterion_main!(benches);
