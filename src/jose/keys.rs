//! Verification (and optional signing) keys: loaded from config and a local JWKS file, each
//! pinned to exactly one algorithm.
//!
//! Pinning is what defeats algorithm confusion: a token is only ever checked with a key whose
//! configured `alg` equals the token's `alg`, so an HS256 token "signed" with an RSA public key
//! finds no HMAC key holding that public key, and `alg: none` finds no key at all.

use std::fmt;

use aws_lc_rs::signature::ParsedPublicKey;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde::Deserialize;

use super::key_checks::{self, Curve, KeyError};

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

/// A JWS algorithm a key may be pinned to (RFC 7518 section 3.1; never `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwsAlg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    /// ECDSA P-521 / SHA-512: verified with aws-lc-rs, which `jsonwebtoken` lacks.
    ES512,
    EdDSA,
}

/// The key type an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

impl JwsAlg {
    pub const ALL: [JwsAlg; 13] = [
        JwsAlg::HS256,
        JwsAlg::HS384,
        JwsAlg::HS512,
        JwsAlg::RS256,
        JwsAlg::RS384,
        JwsAlg::RS512,
        JwsAlg::PS256,
        JwsAlg::PS384,
        JwsAlg::PS512,
        JwsAlg::ES256,
        JwsAlg::ES384,
        JwsAlg::ES512,
        JwsAlg::EdDSA,
    ];

    /// The JWA name, exactly as registered (case-sensitive).
    pub fn name(self) -> &'static str {
        match self {
            JwsAlg::HS256 => "HS256",
            JwsAlg::HS384 => "HS384",
            JwsAlg::HS512 => "HS512",
            JwsAlg::RS256 => "RS256",
            JwsAlg::RS384 => "RS384",
            JwsAlg::RS512 => "RS512",
            JwsAlg::PS256 => "PS256",
            JwsAlg::PS384 => "PS384",
            JwsAlg::PS512 => "PS512",
            JwsAlg::ES256 => "ES256",
            JwsAlg::ES384 => "ES384",
            JwsAlg::ES512 => "ES512",
            JwsAlg::EdDSA => "EdDSA",
        }
    }

    /// The `jsonwebtoken` algorithm, for every alg but ES512.
    pub fn jwt(self) -> Option<Algorithm> {
        Some(match self {
            JwsAlg::HS256 => Algorithm::HS256,
            JwsAlg::HS384 => Algorithm::HS384,
            JwsAlg::HS512 => Algorithm::HS512,
            JwsAlg::RS256 => Algorithm::RS256,
            JwsAlg::RS384 => Algorithm::RS384,
            JwsAlg::RS512 => Algorithm::RS512,
            JwsAlg::PS256 => Algorithm::PS256,
            JwsAlg::PS384 => Algorithm::PS384,
            JwsAlg::PS512 => Algorithm::PS512,
            JwsAlg::ES256 => Algorithm::ES256,
            JwsAlg::ES384 => Algorithm::ES384,
            JwsAlg::EdDSA => Algorithm::EdDSA,
            JwsAlg::ES512 => return None,
        })
    }

    pub fn family(self) -> Family {
        match self {
            JwsAlg::HS256 | JwsAlg::HS384 | JwsAlg::HS512 => Family::Hmac,
            JwsAlg::RS256
            | JwsAlg::RS384
            | JwsAlg::RS512
            | JwsAlg::PS256
            | JwsAlg::PS384
            | JwsAlg::PS512 => Family::Rsa,
            JwsAlg::ES256 | JwsAlg::ES384 | JwsAlg::ES512 => Family::Ec,
            JwsAlg::EdDSA => Family::Ed,
        }
    }

    /// The curve of an ECDSA algorithm (RFC 7518 section 3.4).
    pub fn curve(self) -> Option<Curve> {
        match self {
            JwsAlg::ES256 => Some(Curve::P256),
            JwsAlg::ES384 => Some(Curve::P384),
            JwsAlg::ES512 => Some(Curve::P521),
            _ => None,
        }
    }

    /// Minimum HMAC secret length in bytes (RFC 7518 section 3.2: the hash size).
    fn hmac_len(self) -> usize {
        match self {
            JwsAlg::HS384 => 48,
            JwsAlg::HS512 => 64,
            _ => 32,
        }
    }
}

impl fmt::Display for JwsAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a key checks a signature.
#[derive(Clone)]
pub enum Verifier {
    /// Through `jsonwebtoken` (every alg but ES512).
    Jwt(DecodingKey),
    /// Through aws-lc-rs directly, with the point validated at load (ES512).
    Ecdsa(ParsedPublicKey),
}

/// One verification key with its pinned algorithm.
pub struct VerifyKey {
    pub kid: Option<String>,
    pub alg: JwsAlg,
    pub verifier: Verifier,
    /// Present when the key can also sign (HMAC secrets, configured private keys).
    pub encoding: Option<EncodingKey>,
}

impl VerifyKey {
    /// May a token with this header be verified with this key: same algorithm, and the same
    /// `kid` when the token names one?
    pub fn may_verify(&self, kid: Option<&str>, alg: JwsAlg) -> bool {
        self.alg == alg
            && match kid {
                Some(kid) => self.kid.as_deref() == Some(kid),
                None => true,
            }
    }

    /// Does `signature` (base64url, as in the token) verify over `signing_input`?
    pub fn verifies(&self, signing_input: &[u8], signature: &str) -> bool {
        match (&self.verifier, self.alg.jwt()) {
            (Verifier::Jwt(key), Some(alg)) => {
                jsonwebtoken::crypto::verify(signature, signing_input, key, alg).unwrap_or(false)
            }
            (Verifier::Ecdsa(key), _) => match URL_SAFE_NO_PAD.decode(signature) {
                Ok(sig) => key.verify_sig(signing_input, &sig).is_ok(),
                Err(_) => false,
            },
            (Verifier::Jwt(_), None) => false,
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
    "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA";

/// Parse an algorithm name exactly as JWA spells it; `none` and unknown names are refused.
pub fn parse_alg(s: &str) -> Option<JwsAlg> {
    JwsAlg::ALL.into_iter().find(|a| a.name() == s)
}

/// How a key is named in errors: its source and, when it has one, its kid.
fn key_name(source: &str, kid: Option<&str>) -> String {
    match kid {
        Some(kid) => format!("{source} kid {kid:?}"),
        None => source.to_owned(),
    }
}

impl KeySet {
    /// Decode every configured key; returns every problem, each naming its key.
    /// `jwks` is the `jwt.jwks_file` document with the path it was read from.
    pub fn build(
        materials: Vec<KeyMaterial>,
        jwks: Option<(&str, &[u8])>,
    ) -> Result<KeySet, Vec<String>> {
        let mut keys = Vec::new();
        let mut problems = Vec::new();
        for m in materials {
            match decode_material(&m) {
                Ok(k) => keys.push(k),
                Err(e) => problems.push(format!("{}: {e}", key_name(&m.label, m.kid.as_deref()))),
            }
        }
        if let Some((path, bytes)) = jwks {
            match parse_jwks(bytes, &format!("jwks_file {path}")) {
                Ok(mut ks) => keys.append(&mut ks),
                Err(e) => problems.push(format!("jwt.{e}")),
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
        alg: JwsAlg,
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
            .filter(|k| k.encoding.is_some() && k.alg.jwt().is_some())
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
    if family == Family::Hmac {
        if m.public_pem.is_some() || m.private_pem.is_some() {
            return Err(format!(
                "{alg} is an HMAC algorithm: give secret or secret_file, not public_key/private_key"
            ));
        }
        let raw = m
            .secret
            .as_ref()
            .ok_or_else(|| format!("{alg} needs secret or secret_file"))?;
        let secret = if m.secret_base64 {
            decode_base64_secret(raw)?
        } else {
            raw.clone()
        };
        key_checks::hmac_secret(alg.name(), alg.hmac_len(), &secret)?;
        return Ok(VerifyKey {
            kid: m.kid.clone(),
            alg,
            verifier: Verifier::Jwt(DecodingKey::from_secret(&secret)),
            encoding: Some(EncodingKey::from_secret(&secret)),
        });
    }
    if m.secret.is_some() {
        return Err(format!(
            "{alg} is an asymmetric algorithm: give public_key (PEM), not a secret"
        ));
    }
    let pem = m
        .public_pem
        .as_ref()
        .ok_or_else(|| format!("{alg} needs public_key (a PEM public key file)"))?;
    let verifier = match (family, alg.curve()) {
        (Family::Rsa, _) => {
            key_checks::rsa_public_pem(pem).map_err(|e| format!("public_key: {e}"))?;
            DecodingKey::from_rsa_pem(pem).map(Verifier::Jwt)
        }
        (Family::Ec, Some(curve)) => {
            let parsed = key_checks::ec_public_pem(curve, pem)
                .map_err(|e| format!("public_key for {alg}: {e}"))?;
            if alg == JwsAlg::ES512 {
                Ok(Verifier::Ecdsa(parsed))
            } else {
                DecodingKey::from_ec_pem(pem).map(Verifier::Jwt)
            }
        }
        _ => DecodingKey::from_ed_pem(pem).map(Verifier::Jwt),
    }
    .map_err(|e| format!("public_key is not a {family:?} public key for {alg}: {e}"))?;
    let encoding = match &m.private_pem {
        None => None,
        Some(_) if alg.jwt().is_none() => {
            return Err(format!(
                "{alg} keys verify only; private_key is not supported for {alg}"
            ))
        }
        Some(pem) => Some(
            match family {
                Family::Rsa => EncodingKey::from_rsa_pem(pem),
                Family::Ec => EncodingKey::from_ec_pem(pem),
                _ => EncodingKey::from_ed_pem(pem),
            }
            .map_err(|e| format!("private_key is not a {family:?} private key: {e}"))?,
        ),
    };
    let key = VerifyKey {
        kid: m.kid.clone(),
        alg,
        verifier,
        encoding,
    };
    if key.encoding.is_some() {
        self_test(&key)?;
    }
    Ok(key)
}

/// Sign and verify a probe so a private key that does not match its public key (or its
/// algorithm) is a start-up error rather than a stream of 401s.
fn self_test(key: &VerifyKey) -> Result<(), String> {
    let (Some(enc), Some(alg)) = (&key.encoding, key.alg.jwt()) else {
        return Ok(());
    };
    let msg = b"portcullis key self-test";
    let sig = jsonwebtoken::crypto::sign(msg, enc, alg)
        .map_err(|e| format!("private_key cannot sign {alg:?}: {e}"))?;
    if key.verifies(msg, &sig) {
        Ok(())
    } else {
        Err("private_key does not match public_key".into())
    }
}

fn decode_base64_secret(raw: &[u8]) -> Result<Vec<u8>, String> {
    use base64::engine::general_purpose::STANDARD;
    let s = std::str::from_utf8(raw).map_err(|_| "secret is not base64 text".to_string())?;
    let s = s.trim();
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .or_else(|_| STANDARD.decode(s))
        .map_err(|e| format!("secret_base64 = true but the secret is not base64: {e}"))
}

/// The members of a JWK (RFC 7517 section 4, RFC 7518 section 6) this gateway reads.
#[derive(Debug, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub kid: Option<String>,
    pub alg: Option<String>,
    #[serde(rename = "use")]
    pub use_: Option<String>,
    pub key_ops: Option<Vec<String>>,
    pub crv: Option<String>,
    pub x: Option<String>,
    pub y: Option<String>,
    pub n: Option<String>,
    pub e: Option<String>,
    pub k: Option<String>,
    /// Private parts (decryption keys only; a verification key never needs them).
    pub d: Option<String>,
    pub p: Option<String>,
    pub q: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct JwkSetDoc {
    pub keys: Vec<Jwk>,
}

impl Jwk {
    /// May this key verify signatures by its own account? `use` other than `sig`, or
    /// `key_ops` without `verify` (RFC 7517 sections 4.2 and 4.3), say it may not.
    pub fn is_for_verification(&self) -> bool {
        self.use_.as_deref().is_none_or(|u| u == "sig")
            && self
                .key_ops
                .as_ref()
                .is_none_or(|ops| ops.iter().any(|o| o == "verify"))
    }

    /// A base64url member, decoded (padding tolerated, other alphabets not).
    pub fn bytes(&self, name: &str, value: Option<&String>) -> Result<Vec<u8>, KeyError> {
        let v = value.ok_or_else(|| KeyError::JwkMemberMissing {
            kty: self.kty.clone(),
            member: name.into(),
        })?;
        URL_SAFE_NO_PAD
            .decode(v.trim_end_matches('='))
            .map_err(|_| KeyError::JwkMemberNotBase64url {
                member: name.into(),
            })
    }
}

/// Keys from a JWKS document, `source` naming it in errors (e.g. `jwks_file keys.json`).
///
/// Each key's algorithm comes from its `alg`; without one it is inferred only where
/// unambiguous (EC curve, Ed25519) or RS256 for RSA keys, the JOSE default. A key that says
/// it is not for verification (`use` other than `sig`, `key_ops` without `verify`) is
/// skipped when it names no signature algorithm (an encryption key published alongside)
/// and refused when it does (it contradicts itself). Every key passes the weak-key checks
/// of [`key_checks`]; a set may not mix symmetric and asymmetric keys.
pub fn parse_jwks(bytes: &[u8], source: &str) -> Result<Vec<VerifyKey>, String> {
    let set: JwkSetDoc =
        serde_json::from_slice(bytes).map_err(|e| format!("{source}: not a JWKS document: {e}"))?;
    let mut out = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let name = match &jwk.kid {
            Some(kid) => format!("{source} kid {kid:?}"),
            None => format!("{source} keys[{i}]"),
        };
        let named_alg = jwk.alg.as_deref().map(|a| (a, parse_alg(a)));
        // An encryption key published in the same set (`alg` a JWE key management): never a
        // verification key, and no reason to refuse the set.
        let encryption_alg = jwk
            .alg
            .as_deref()
            .is_some_and(|a| a == "RSA1_5" || crate::jose::jwe::KeyAlg::from_name(a).is_some());
        if encryption_alg && !matches!(named_alg, Some((_, Some(_)))) {
            continue;
        }
        if !jwk.is_for_verification() {
            match named_alg {
                Some((a, Some(_))) => {
                    return Err(format!(
                        "{name}: alg {a} is a signature algorithm but use/key_ops say the key \
                         may not verify; fix use (\"sig\") or key_ops ([\"verify\"])"
                    ))
                }
                _ => continue,
            }
        }
        let key = jwk_verify_key(jwk).map_err(|e| format!("{name}: {e}"))?;
        out.push(key);
    }
    let symmetric = out
        .iter()
        .filter(|k| k.alg.family() == Family::Hmac)
        .count();
    if symmetric > 0 && symmetric < out.len() {
        return Err(format!(
            "{source}: the set mixes symmetric (oct) and asymmetric keys; a published set \
             holds public keys only, a shared secret belongs in its own file"
        ));
    }
    Ok(out)
}

/// One JWK as a verification key, checked like a configured key.
pub fn jwk_verify_key(jwk: &Jwk) -> Result<VerifyKey, String> {
    let alg = match jwk.alg.as_deref() {
        Some(a) => parse_alg(a).ok_or_else(|| {
            format!("alg {a:?} is not a signature algorithm; use one of {SUPPORTED_ALGS}")
        })?,
        None => match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("EC", Some("P-256")) => JwsAlg::ES256,
            ("EC", Some("P-384")) => JwsAlg::ES384,
            ("EC", Some("P-521")) => JwsAlg::ES512,
            ("OKP", Some("Ed25519")) => JwsAlg::EdDSA,
            ("RSA", _) => JwsAlg::RS256,
            ("oct", _) => return Err("a symmetric JWK needs an explicit alg".into()),
            (kty, crv) => return Err(format!("key type {kty} (crv {crv:?}) is not supported")),
        },
    };
    let want_kty = match alg.family() {
        Family::Hmac => "oct",
        Family::Rsa => "RSA",
        Family::Ec => "EC",
        Family::Ed => "OKP",
    };
    if jwk.kty != want_kty {
        return Err(format!(
            "key type {} does not match alg {alg} (needs kty {want_kty})",
            jwk.kty
        ));
    }
    let verifier = match alg.family() {
        Family::Hmac => {
            let secret = jwk.bytes("k", jwk.k.as_ref())?;
            key_checks::hmac_secret(alg.name(), alg.hmac_len(), &secret)?;
            Verifier::Jwt(DecodingKey::from_secret(&secret))
        }
        Family::Rsa => {
            let n = jwk.bytes("n", jwk.n.as_ref())?;
            let e = jwk.bytes("e", jwk.e.as_ref())?;
            key_checks::rsa_public(&n, &e)?;
            Verifier::Jwt(DecodingKey::from_rsa_raw_components(&n, &e))
        }
        Family::Ec => {
            let curve = alg.curve().ok_or("no curve")?;
            let crv = jwk.crv.as_deref().unwrap_or("(none)");
            if Curve::from_name(crv) != Some(curve) {
                return Err(format!(
                    "crv {crv} does not match alg {alg}, which needs {}",
                    curve.name()
                ));
            }
            let point = ec_point(jwk, curve)?;
            let parsed = key_checks::ec_public(curve, &point)?;
            if alg == JwsAlg::ES512 {
                Verifier::Ecdsa(parsed)
            } else {
                Verifier::Jwt(DecodingKey::from_ec_der(&point))
            }
        }
        Family::Ed => {
            if jwk.crv.as_deref() != Some("Ed25519") {
                return Err(format!(
                    "crv {:?} is not supported for EdDSA (only Ed25519)",
                    jwk.crv
                ));
            }
            let x = jwk.bytes("x", jwk.x.as_ref())?;
            if x.len() != 32 {
                return Err("an Ed25519 `x` is 32 bytes".into());
            }
            Verifier::Jwt(DecodingKey::from_ed_der(&x))
        }
    };
    Ok(VerifyKey {
        kid: jwk.kid.clone(),
        alg,
        verifier,
        encoding: None,
    })
}

/// `04 || x || y` from an EC JWK, each coordinate the curve's full length.
pub fn ec_point(jwk: &Jwk, curve: Curve) -> Result<Vec<u8>, String> {
    let x = jwk.bytes("x", jwk.x.as_ref())?;
    let y = jwk.bytes("y", jwk.y.as_ref())?;
    let len = curve.coordinate_len();
    if x.len() != len || y.len() != len {
        return Err(format!(
            "x and y of a {} key are {len} bytes each (got {} and {})",
            curve.name(),
            x.len(),
            y.len()
        ));
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Ok(point)
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
        assert_eq!(ks.candidates(Some("a"), JwsAlg::HS256).count(), 1);
        assert_eq!(ks.candidates(Some("a"), JwsAlg::HS512).count(), 0);
        assert_eq!(ks.candidates(None, JwsAlg::HS512).count(), 1);
        assert_eq!(ks.candidates(None, JwsAlg::RS256).count(), 0);
        assert_eq!(ks.candidates(Some("zzz"), JwsAlg::HS256).count(), 0);
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
    fn jwks_encryption_keys_are_skipped_and_contradictions_refused() {
        let doc = br#"{"keys":[{"kty":"RSA","alg":"RSA-OAEP","use":"enc","n":"AQAB","e":"AQAB","kid":"enc"}]}"#;
        assert!(parse_jwks(doc, "t").unwrap().is_empty());
        let doc = br#"{"keys":[{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB","kid":"enc"}]}"#;
        assert!(parse_jwks(doc, "t").unwrap().is_empty());
        let doc = br#"{"keys":[{"kty":"RSA","alg":"RS256","key_ops":["encrypt"],"n":"AQAB","e":"AQAB","kid":"x"}]}"#;
        let e = parse_jwks(doc, "src").unwrap_err();
        assert!(
            e.contains("src kid \"x\"") && e.contains("may not verify"),
            "{e}"
        );
    }

    #[test]
    fn jwks_symmetric_needs_alg() {
        let doc = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0","kid":"o"}]}"#;
        assert!(parse_jwks(doc, "t").is_err());
        // 24 bytes: shorter than the SHA-256 output, refused (RFC 7518 section 3.2).
        let doc = br#"{"keys":[{"kty":"oct","alg":"HS256","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0","kid":"o"}]}"#;
        assert!(parse_jwks(doc, "t").unwrap_err().contains("24 bytes"));
        let doc = br#"{"keys":[{"kty":"oct","alg":"HS256","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI","kid":"o"}]}"#;
        let keys = parse_jwks(doc, "t").unwrap();
        assert_eq!(keys[0].alg, JwsAlg::HS256);
    }
}
