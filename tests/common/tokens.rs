//! Keys for every algorithm the gateway accepts, and token signing: well-formed tokens
//! through `jsonwebtoken::encode`, attack tokens from arbitrary header and payload text.

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde_json::{json, Value};

/// HMAC secrets as long as each hash (RFC 7518 section 3.2).
pub const HS256_SECRET: &str = "hs256-secret-for-tests-0123456789";
pub const HS384_SECRET: &str = "hs384-secret-for-tests-0123456789abcdefghijklmnop";
pub const HS512_SECRET: &str = "hs512-secret-for-tests-0123456789abcdefghijklmnopqrstuvwxyz0123456";

/// A PEM key pair: PKCS#8 private key and SPKI public key.
#[derive(Clone)]
pub struct PemPair {
    pub family: AlgorithmFamily,
    pub private_pem: String,
    pub public_pem: String,
}

impl PemPair {
    fn generate(alg: &'static rcgen::SignatureAlgorithm, family: AlgorithmFamily) -> PemPair {
        let kp = rcgen::KeyPair::generate_for(alg).expect("generate key pair");
        PemPair {
            family,
            private_pem: kp.serialize_pem(),
            public_pem: kp.public_key_pem(),
        }
    }

    /// The private key, ready to sign with.
    pub fn encoding(&self) -> EncodingKey {
        let pem = self.private_pem.as_bytes();
        match self.family {
            AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(pem),
            AlgorithmFamily::Ec => EncodingKey::from_ec_pem(pem),
            AlgorithmFamily::Ed => EncodingKey::from_ed_pem(pem),
            AlgorithmFamily::Hmac => unreachable!("an HMAC key is no PEM pair"),
        }
        .expect("private key PEM")
    }

    /// The public half as a JWK carrying `alg` and `kid`.
    pub fn jwk(&self, alg: Algorithm, kid: &str) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.encoding(), alg).expect("jwk");
        jwk.common.key_id = Some(kid.to_owned());
        jwk
    }
}

// RSA generation is the slow one: one key for the gateway, one for the attacker, per process.
static RSA: LazyLock<PemPair> =
    LazyLock::new(|| PemPair::generate(&rcgen::PKCS_RSA_SHA256, AlgorithmFamily::Rsa));
static RSA_ATTACKER: LazyLock<PemPair> =
    LazyLock::new(|| PemPair::generate(&rcgen::PKCS_RSA_SHA256, AlgorithmFamily::Rsa));

/// The RSA 2048 key pair (shared by every test in one binary), for RS* and PS*.
pub fn rsa() -> PemPair {
    RSA.clone()
}

/// A second RSA key pair the gateway is never configured with.
pub fn rsa_attacker() -> PemPair {
    RSA_ATTACKER.clone()
}

pub fn ec_p256() -> PemPair {
    PemPair::generate(&rcgen::PKCS_ECDSA_P256_SHA256, AlgorithmFamily::Ec)
}

pub fn ec_p384() -> PemPair {
    PemPair::generate(&rcgen::PKCS_ECDSA_P384_SHA384, AlgorithmFamily::Ec)
}

pub fn ed25519() -> PemPair {
    PemPair::generate(&rcgen::PKCS_ED25519, AlgorithmFamily::Ed)
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Claims of a token valid for ten minutes for `sub`.
pub fn claims(sub: &str) -> Value {
    let now = now();
    json!({ "sub": sub, "iat": now, "exp": now + 600 })
}

/// A compact JWS of `claims` with header `{alg, kid}`, signed by `key`.
pub fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign token")
}

/// An HS256 token signed with [`HS256_SECRET`].
pub fn hs256(kid: Option<&str>, claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        kid,
        &EncodingKey::from_secret(HS256_SECRET.as_bytes()),
        claims,
    )
}

/// base64url without padding.
pub fn b64(data: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// A token from exactly this header and payload text, signed by `key` with `alg`
/// (whatever the header claims).
pub fn sign_raw(header: &str, payload: &str, alg: Algorithm, key: &EncodingKey) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).expect("sign");
    format!("{input}.{sig}")
}

/// A token from this header and payload text with a literal signature segment.
pub fn with_signature(header: &str, payload: &str, signature: &str) -> String {
    format!("{}.{}.{signature}", b64(header), b64(payload))
}
