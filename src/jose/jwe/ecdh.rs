//! ECDH-ES key agreement for JWE (RFC 7518 section 4.6) on P-256, P-384, P-521 and X25519
//! (RFC 8037): the recipient's static private key, the sender's ephemeral public key from
//! the `epk` header, and the Concat KDF of NIST SP 800-56A section 5.8.1 composed from
//! SHA-256 as RFC 7518 section 4.6.2 specifies. The agreement itself is aws-lc-rs's, which
//! checks that the peer's point lies on the curve (an off-curve `epk` would otherwise leak
//! the private key bit by bit: the invalid-curve attack).

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::header::ProtectedHeader;
use super::{JweError, KeyAlg};
use crate::jose::key_checks::KeyError;

/// A curve ECDH-ES may run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcdhCurve {
    P256,
    P384,
    P521,
    X25519,
}

impl EcdhCurve {
    pub fn name(self) -> &'static str {
        match self {
            EcdhCurve::P256 => "P-256",
            EcdhCurve::P384 => "P-384",
            EcdhCurve::P521 => "P-521",
            EcdhCurve::X25519 => "X25519",
        }
    }

    fn from_name(crv: &str) -> Option<Self> {
        [
            EcdhCurve::P256,
            EcdhCurve::P384,
            EcdhCurve::P521,
            EcdhCurve::X25519,
        ]
        .into_iter()
        .find(|c| c.name() == crv)
    }

    fn algorithm(self) -> &'static agreement::Algorithm {
        match self {
            EcdhCurve::P256 => &agreement::ECDH_P256,
            EcdhCurve::P384 => &agreement::ECDH_P384,
            EcdhCurve::P521 => &agreement::ECDH_P521,
            EcdhCurve::X25519 => &agreement::X25519,
        }
    }

    /// Length of a coordinate (or of the X25519 key) in bytes.
    fn coordinate_len(self) -> usize {
        match self {
            EcdhCurve::P256 | EcdhCurve::X25519 => 32,
            EcdhCurve::P384 => 48,
            EcdhCurve::P521 => 66,
        }
    }

    fn kty(self) -> &'static str {
        match self {
            EcdhCurve::X25519 => "OKP",
            _ => "EC",
        }
    }
}

/// The recipient's static ECDH private key.
pub struct EcdhKey {
    pub curve: EcdhCurve,
    key: PrivateKey,
}

/// OID of X25519 keys in PKCS#8 (RFC 8410).
const X25519_OID: &str = "1.3.101.110";

impl EcdhKey {
    /// A PKCS#8 `PRIVATE KEY` (EC or X25519) or SEC1 `EC PRIVATE KEY` PEM; the curve is
    /// the key's own.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        use rsa::pkcs8::der::pem;
        let (label, der) = pem::decode_vec(pem).map_err(KeyError::EcdhPemNotPem)?;
        if label != "PRIVATE KEY" && label != "EC PRIVATE KEY" {
            return Err(KeyError::EcdhPemLabel {
                label: label.into(),
            });
        }
        for curve in [EcdhCurve::P256, EcdhCurve::P384, EcdhCurve::P521] {
            if let Ok(key) = PrivateKey::from_private_key_der(curve.algorithm(), &der) {
                return Ok(EcdhKey { curve, key });
            }
        }
        let info = rsa::pkcs8::PrivateKeyInfo::try_from(der.as_slice())
            .map_err(|_| KeyError::EcdhPemUnknown)?;
        let oid = info.algorithm.oid.to_string();
        if oid != X25519_OID {
            return Err(KeyError::EcdhPemAlgorithm { oid });
        }
        // CurvePrivateKey ::= OCTET STRING (RFC 8410 section 7): 04 20 || 32 bytes.
        let raw = match info.private_key {
            [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
            _ => return Err(KeyError::X25519Malformed),
        };
        let key = PrivateKey::from_private_key(&agreement::X25519, raw)
            .map_err(|_| KeyError::X25519Unusable)?;
        Ok(EcdhKey {
            curve: EcdhCurve::X25519,
            key,
        })
    }

    /// A private JWK (`kty` EC or OKP, `crv`, `d`; `x`/`y` must match `d` when present).
    pub fn from_jwk(jwk: &crate::jose::keys::Jwk) -> Result<Self, KeyError> {
        let crv = jwk.crv.as_deref().unwrap_or("(none)");
        let curve =
            EcdhCurve::from_name(crv).ok_or_else(|| KeyError::EcdhCurve { crv: crv.into() })?;
        if jwk.kty != curve.kty() {
            return Err(KeyError::EcdhKty {
                crv: crv.into(),
                kty: curve.kty(),
            });
        }
        let d = Zeroizing::new(jwk.bytes("d", jwk.d.as_ref())?);
        let key = PrivateKey::from_private_key(curve.algorithm(), &d)
            .map_err(|_| KeyError::EcdhPrivate { crv: crv.into() })?;
        let public = key
            .compute_public_key()
            .map_err(|_| KeyError::EcdhNoPublic)?;
        let x = jwk.bytes("x", jwk.x.as_ref())?;
        let expected = match curve {
            EcdhCurve::X25519 => x,
            _ => {
                let mut p = vec![0x04];
                p.extend(x);
                p.extend(jwk.bytes("y", jwk.y.as_ref())?);
                p
            }
        };
        if public.as_ref() != expected.as_slice() {
            return Err(KeyError::EcdhPublicMismatch);
        }
        Ok(EcdhKey { curve, key })
    }

    /// The key ECDH-ES derives for this token: the CEK (`ECDH-ES`) or the key-wrapping key
    /// (`ECDH-ES+A*KW`). Every failure is `Decrypt`.
    pub(crate) fn derive(
        &self,
        header: &ProtectedHeader,
        alg: KeyAlg,
    ) -> Result<Zeroizing<Vec<u8>>, JweError> {
        let epk = match header.members.get("epk") {
            Some(Value::Object(o)) => o,
            _ => return Err(JweError::Decrypt),
        };
        let field = |name: &str| -> Result<Vec<u8>, JweError> {
            match epk.get(name) {
                Some(Value::String(s)) => URL_SAFE_NO_PAD.decode(s).map_err(|_| JweError::Decrypt),
                _ => Err(JweError::Decrypt),
            }
        };
        let text = |name: &str| epk.get(name).and_then(Value::as_str);
        if text("crv") != Some(self.curve.name()) || text("kty") != Some(self.curve.kty()) {
            return Err(JweError::Decrypt);
        }
        let len = self.curve.coordinate_len();
        let x = field("x")?;
        if x.len() != len {
            return Err(JweError::Decrypt);
        }
        let public = match self.curve {
            EcdhCurve::X25519 => x,
            _ => {
                let y = field("y")?;
                if y.len() != len {
                    return Err(JweError::Decrypt);
                }
                let mut p = Vec::with_capacity(1 + 2 * len);
                p.push(0x04);
                p.extend(x);
                p.extend(y);
                p
            }
        };
        let party = |name: &str| -> Result<Vec<u8>, JweError> {
            match header.members.get(name) {
                None => Ok(Vec::new()),
                Some(Value::String(s)) => URL_SAFE_NO_PAD.decode(s).map_err(|_| JweError::Decrypt),
                Some(_) => Err(JweError::Decrypt),
            }
        };
        let (apu, apv) = (party("apu")?, party("apv")?);
        // RFC 7518 section 4.6.2: AlgorithmID is `enc` for direct agreement, else `alg`.
        let (algorithm_id, key_len) = match alg.kw_len() {
            Some(kw) => (alg.name(), kw),
            None => (header.enc.name(), header.enc.cek_len()),
        };
        agreement::agree(
            &self.key,
            UnparsedPublicKey::new(self.curve.algorithm(), &public),
            JweError::Decrypt,
            |z| Ok(concat_kdf(z, algorithm_id.as_bytes(), &apu, &apv, key_len)),
        )
    }
}

/// Concat KDF (NIST SP 800-56A section 5.8.1) with SHA-256, OtherInfo as RFC 7518
/// section 4.6.2 lays it out: AlgorithmID, PartyUInfo, PartyVInfo each length-prefixed,
/// SuppPubInfo the key length in bits, SuppPrivInfo empty.
pub(crate) fn concat_kdf(
    z: &[u8],
    algorithm_id: &[u8],
    apu: &[u8],
    apv: &[u8],
    key_len: usize,
) -> Zeroizing<Vec<u8>> {
    let prefixed = |h: &mut Sha256, data: &[u8]| {
        h.update((data.len() as u32).to_be_bytes());
        h.update(data);
    };
    let mut out = Zeroizing::new(Vec::with_capacity(key_len + 32));
    let mut counter = 1u32;
    while out.len() < key_len {
        let mut h = Sha256::new();
        h.update(counter.to_be_bytes());
        h.update(z);
        prefixed(&mut h, algorithm_id);
        prefixed(&mut h, apu);
        prefixed(&mut h, apv);
        h.update(((key_len * 8) as u32).to_be_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(key_len);
    out
}

impl std::fmt::Debug for EcdhKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} private key>", self.curve.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::keys::Jwk;

    /// RFC 7518 Appendix C: Bob's key, Alice's ephemeral key, apu "Alice", apv "Bob",
    /// enc A128GCM; the derived CEK is given there.
    #[test]
    fn rfc7518_appendix_c() {
        let bob: Jwk = serde_json::from_str(
            r#"{"kty":"EC","crv":"P-256",
                "x":"weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ",
                "y":"e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck",
                "d":"VEmDZpDXXK8p8N0Cndsxs924q6nS1RXFASRl6BfUqdw"}"#,
        )
        .unwrap();
        let key = EcdhKey::from_jwk(&bob).unwrap();
        let header = super::super::header::parse(
            br#"{"alg":"ECDH-ES","enc":"A128GCM","apu":"QWxpY2U","apv":"Qm9i",
                "epk":{"kty":"EC","crv":"P-256",
                  "x":"gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0",
                  "y":"SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps"}}"#,
        )
        .unwrap();
        let cek = key.derive(&header, KeyAlg::EcdhEs).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.encode(&*cek), "VqqN6vgjbSBcIijNcacQGg");
    }

    #[test]
    fn an_epk_off_the_curve_or_on_another_curve_fails() {
        let bob: Jwk = serde_json::from_str(
            r#"{"kty":"EC","crv":"P-256",
                "x":"weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ",
                "y":"e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck",
                "d":"VEmDZpDXXK8p8N0Cndsxs924q6nS1RXFASRl6BfUqdw"}"#,
        )
        .unwrap();
        let key = EcdhKey::from_jwk(&bob).unwrap();
        for epk in [
            // y changed: not on P-256.
            r#"{"kty":"EC","crv":"P-256","x":"gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0","y":"SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFppt"}"#,
            r#"{"kty":"EC","crv":"P-384","x":"gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0","y":"SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps"}"#,
            r#"{"kty":"OKP","crv":"X25519","x":"gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0"}"#,
        ] {
            let header = super::super::header::parse(
                format!(r#"{{"alg":"ECDH-ES","enc":"A128GCM","epk":{epk}}}"#).as_bytes(),
            )
            .unwrap();
            assert!(key.derive(&header, KeyAlg::EcdhEs).is_err(), "{epk}");
        }
        let mut wrong = bob;
        wrong.x = Some("gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0".into());
        assert!(EcdhKey::from_jwk(&wrong).is_err(), "x, y must match d");
    }
}
