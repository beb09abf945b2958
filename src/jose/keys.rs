//! Verification (and optional signing) keys: loaded from config and a local JWKS file, each
//! pinned to exactly one algorithm.
//!
//! Pinning is what defeats algorithm confusion: a token is only ever checked with a key whose
//! configured `alg` equals the token's `alg`, so an HS256 token "signed" with an RSA public key
//! finds no HMAC key holding that public key, and `alg: none` finds no key at all.

use std::fmt;
use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};

/// Raw key material from the config file, before it is decoded.
pub struct KeyMaterial {
    /// Where the key came from, e.g. `jwt.keys[0]`, for error messages.
    pub label: String,
    pub kid: Option<String>,
    pub alg: String,
    pub secret: Option<Vec<u8>>,
    pub secret_base64: bool,
    pub public_pem: Option<Vec<u8>>,
    pub private_pem: Option<Vec<u8>>,
}

/// One verification key with its pinned algorithm.
pub struct VerifyKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub decoding: DecodingKey,
    /// Present when the key can also sign (HMAC secrets, configured private keys).
    pub encoding: Option<EncodingKey>,
}

impl VerifyKey {
    /// May a token with this header be verified with this key: same algorithm, and the same
    /// `kid` when the token names one?
    pub fn may_verify(&self, kid: Option<&str>, alg: Algorithm) -> bool {
        self.alg == alg
            && match kid {
                Some(kid) => self.kid.as_deref() == Some(kid),
                None => true,
            }
    }
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("can_sign", &self.encoding.is_some())
            .finish()
    }
}

/// All keys the gateway accepts tokens from.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

/// The JWS algorithms a key may be pinned to (no `none`, ever).
pub const SUPPORTED_ALGS: &str =
    "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

/// Parse an algorithm name exactly as JWA spells it; `none` and unknown names are refused.
pub fn parse_alg(s: &str) -> Option<Algorithm> {
    match s {
        "HS256" | "HS384" | "HS512" | "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512"
        | "ES256" | "ES384" | "EdDSA" => Algorithm::from_str(s).ok(),
        _ => None,
    }
}

/// Minimum HMAC secret length in bytes recommended by RFC 7518 section 3.2 (the hash size).
fn hmac_recommended_len(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

impl KeySet {
    /// Decode every configured key; returns every problem, each naming its key.
    pub fn build(materials: Vec<KeyMaterial>, jwks: Option<&[u8]>) -> Result<KeySet, Vec<String>> {
        let mut keys = Vec::new();
        let mut problems = Vec::new();
        for m in materials {
            match decode_material(&m) {
                Ok(k) => keys.push(k),
                Err(e) => problems.push(format!("{}: {e}", m.label)),
            }
        }
        if let Some(bytes) = jwks {
            match parse_jwks(bytes) {
                Ok(mut ks) => keys.append(&mut ks),
                Err(e) => problems.push(format!("jwt.jwks_file: {e}")),
            }
        }
        for (i, k) in keys.iter().enumerate() {
            if let Some(kid) = &k.kid {
                if keys[..i].iter().any(|o| o.kid.as_ref() == Some(kid)) {
                    problems.push(format!(
                        "jwt.keys: kid `{kid}` is used by more than one key"
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(KeySet { keys })
        } else {
            Err(problems)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &VerifyKey> {
        self.keys.iter()
    }

    /// The keys a token with this header may be verified with: the key named by `kid` if its
    /// algorithm matches, or without a `kid` every key pinned to `alg`.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a VerifyKey> + 'a {
        self.keys.iter().filter(move |k| k.may_verify(kid, alg))
    }

    /// Is there any key with this kid (whatever its algorithm)?
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// A key that can sign: the one with `kid`, or the first that can sign.
    pub fn signing_key(&self, kid: Option<&str>) -> Option<&VerifyKey> {
        self.keys
            .iter()
            .filter(|k| k.encoding.is_some())
            .find(|k| kid.is_none() || k.kid.as_deref() == kid)
    }
}

fn decode_material(m: &KeyMaterial) -> Result<VerifyKey, String> {
    let alg = parse_alg(&m.alg).ok_or_else(|| {
        format!(
            "alg `{}` is not supported; use one of {SUPPORTED_ALGS}",
            m.alg
        )
    })?;
    let family = alg.family();
    match family {
        AlgorithmFamily::Hmac => {
            if m.public_pem.is_some() || m.private_pem.is_some() {
                return Err(format!(
                    "{} is an HMAC algorithm: give secret or secret_file, not public_key/private_key",
                    m.alg
                ));
            }
            let raw = m
                .secret
                .as_ref()
                .ok_or_else(|| format!("{} needs secret or secret_file", m.alg))?;
            let secret = if m.secret_base64 {
                decode_base64_secret(raw)?
            } else {
                raw.clone()
            };
            if secret.is_empty() {
                return Err("the secret is empty".into());
            }
            if secret.len() < hmac_recommended_len(alg) {
                tracing::warn!(
                    key = %m.label,
                    "HMAC secret is {} bytes; RFC 7518 asks for at least {} for {:?}",
                    secret.len(),
                    hmac_recommended_len(alg),
                    alg
                );
            }
            Ok(VerifyKey {
                kid: m.kid.clone(),
                alg,
                decoding: DecodingKey::from_secret(&secret),
                encoding: Some(EncodingKey::from_secret(&secret)),
            })
        }
        _ => {
            if m.secret.is_some() {
                return Err(format!(
                    "{} is an asymmetric algorithm: give public_key (PEM), not a secret",
                    m.alg
                ));
            }
            let pem = m
                .public_pem
                .as_ref()
                .ok_or_else(|| format!("{} needs public_key (a PEM public key file)", m.alg))?;
            let decoding = match family {
                AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
                AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
                AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
                AlgorithmFamily::Hmac => unreachable!("handled above"),
            }
            .map_err(|e| {
                format!(
                    "public_key is not a {family:?} public key for {}: {e}",
                    m.alg
                )
            })?;
            let encoding = match &m.private_pem {
                None => None,
                Some(pem) => Some(
                    match family {
                        AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(pem),
                        AlgorithmFamily::Ec => EncodingKey::from_ec_pem(pem),
                        _ => EncodingKey::from_ed_pem(pem),
                    }
                    .map_err(|e| format!("private_key is not a {family:?} private key: {e}"))?,
                ),
            };
            let key = VerifyKey {
                kid: m.kid.clone(),
                alg,
                decoding,
                encoding,
            };
            if key.encoding.is_some() {
                self_test(&key)?;
            }
            Ok(key)
        }
    }
}

/// Sign and verify a probe so a private key that does not match its public key (or its
/// algorithm) is a start-up error rather than a stream of 401s.
fn self_test(key: &VerifyKey) -> Result<(), String> {
    let Some(enc) = &key.encoding else {
        return Ok(());
    };
    let msg = b"portcullis key self-test";
    let sig = jsonwebtoken::crypto::sign(msg, enc, key.alg)
        .map_err(|e| format!("private_key cannot sign {:?}: {e}", key.alg))?;
    match jsonwebtoken::crypto::verify(&sig, msg, &key.decoding, key.alg) {
        Ok(true) => Ok(()),
        _ => Err("private_key does not match public_key".into()),
    }
}

fn decode_base64_secret(raw: &[u8]) -> Result<Vec<u8>, String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine;
    let s = std::str::from_utf8(raw).map_err(|_| "secret is not base64 text".to_string())?;
    let s = s.trim();
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .or_else(|_| STANDARD.decode(s))
        .map_err(|e| format!("secret_base64 = true but the secret is not base64: {e}"))
}

/// Keys from a JWKS document. Each key's algorithm comes from its `alg`; without one it is
/// inferred only where unambiguous (EC curve, Ed25519) or RS256 for RSA keys, the JOSE
/// default. Keys marked `"use": "enc"` are skipped.
pub fn parse_jwks(bytes: &[u8]) -> Result<Vec<VerifyKey>, String> {
    let set: JwkSet =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut out = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let alg = match jwk.common.key_algorithm {
            Some(ka) => key_algorithm(ka)
                .ok_or_else(|| format!("keys[{i}]: alg {ka:?} is not a signature algorithm"))?,
            None => match &jwk.algorithm {
                AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                    EllipticCurve::P256 => Algorithm::ES256,
                    EllipticCurve::P384 => Algorithm::ES384,
                    ref c => return Err(format!("keys[{i}]: curve {c:?} is not supported")),
                },
                AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::OctetKey(_) => {
                    return Err(format!("keys[{i}]: a symmetric JWK needs an explicit alg"))
                }
                _ => return Err(format!("keys[{i}]: unsupported key type")),
            },
        };
        let decoding =
            DecodingKey::from_jwk(jwk).map_err(|e| format!("keys[{i}]: unusable key: {e}"))?;
        if decoding.family() != alg.family() {
            return Err(format!("keys[{i}]: key type does not match alg {alg:?}"));
        }
        out.push(VerifyKey {
            kid: jwk.common.key_id.clone(),
            alg,
            decoding,
            encoding: None,
        });
    }
    Ok(out)
}

fn key_algorithm(ka: KeyAlgorithm) -> Option<Algorithm> {
    Some(match ka {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(kid: &str, alg: &str) -> KeyMaterial {
        KeyMaterial {
            label: "test".into(),
            kid: Some(kid.into()),
            alg: alg.into(),
            secret: Some(
                b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".to_vec(),
            ),
            secret_base64: false,
            public_pem: None,
            private_pem: None,
        }
    }

    #[test]
    fn none_and_unknown_algs_are_refused() {
        for alg in ["none", "None", "NONE", "hs256", "HS1", ""] {
            assert!(parse_alg(alg).is_none(), "{alg}");
            assert!(KeySet::build(vec![hs("k", alg)], None).is_err(), "{alg}");
        }
    }

    #[test]
    fn candidates_are_pinned_to_alg_and_kid() {
        let ks = KeySet::build(vec![hs("a", "HS256"), hs("b", "HS512")], None).unwrap();
        assert_eq!(ks.candidates(Some("a"), Algorithm::HS256).count(), 1);
        assert_eq!(ks.candidates(Some("a"), Algorithm::HS512).count(), 0);
        assert_eq!(ks.candidates(None, Algorithm::HS512).count(), 1);
        assert_eq!(ks.candidates(None, Algorithm::RS256).count(), 0);
        assert_eq!(ks.candidates(Some("zzz"), Algorithm::HS256).count(), 0);
    }

    #[test]
    fn duplicate_kid_is_an_error() {
        let e = KeySet::build(vec![hs("a", "HS256"), hs("a", "HS384")], None).unwrap_err();
        assert!(e[0].contains("kid `a`"), "{e:?}");
    }

    #[test]
    fn hmac_key_with_public_key_is_refused() {
        let mut m = hs("a", "HS256");
        m.public_pem = Some(b"-----BEGIN PUBLIC KEY-----".to_vec());
        assert!(KeySet::build(vec![m], None).is_err());
    }

    #[test]
    fn asymmetric_key_needs_public_key() {
        let mut m = hs("a", "RS256");
        m.secret = None;
        let e = KeySet::build(vec![m], None).unwrap_err();
        assert!(e[0].contains("public_key"), "{e:?}");
    }

    #[test]
    fn jwks_symmetric_needs_alg() {
        let doc = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0","kid":"o"}]}"#;
        assert!(parse_jwks(doc).is_err());
        let doc = br#"{"keys":[{"kty":"oct","alg":"HS256","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0","kid":"o"}]}"#;
        let keys = parse_jwks(doc).unwrap();
        assert_eq!(keys[0].alg, Algorithm::HS256);
    }
}
