//! JWE decryption keys: config validation, the key ring that selects keys by
//! `kid`/`alg`/`enc`, and key management (`alg`: dir, AES key wrap, AES-GCM key wrap,
//! RSA-OAEP and RSA-OAEP-256; ECDH-ES in [`super::ecdh`]).

use std::fmt;

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::OsRng;
use aes_kw::Kek;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::ecdh::EcdhKey;
use super::key_error::DecryptionKeyError;
use super::{ContentEnc, JweError};
use crate::jose::key_checks::KeyError;

/// Smallest RSA modulus accepted for RSA-OAEP-256, in bits (RFC 7518 section 4.3).
pub const MIN_RSA_BITS: usize = 2048;

/// Largest accepted compact token, in bytes, unless the ring says otherwise.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Key management algorithm (`alg` header value) this module supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlg {
    /// The key is the CEK (RFC 7518 section 4.5).
    Dir,
    /// AES-128 Key Wrap, RFC 3394 (RFC 7518 section 4.4).
    A128Kw,
    /// AES-192 Key Wrap.
    A192Kw,
    /// AES-256 Key Wrap, RFC 3394 (RFC 7518 section 4.4).
    A256Kw,
    /// AES-GCM key wrap, `iv` and `tag` in the header (RFC 7518 section 4.7).
    A128GcmKw,
    A192GcmKw,
    A256GcmKw,
    /// RSAES-OAEP with SHA-1 and MGF1-SHA-1 (RFC 7518 section 4.3): still what many
    /// issuers send; OAEP's security does not rest on SHA-1's collision resistance.
    RsaOaep,
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256 (RFC 7518 section 4.3).
    RsaOaep256,
    /// ECDH-ES direct key agreement (RFC 7518 section 4.6): the derived key is the CEK.
    EcdhEs,
    /// ECDH-ES, the derived key wrapping the CEK with AES key wrap.
    EcdhEsA128Kw,
    EcdhEsA192Kw,
    EcdhEsA256Kw,
}

impl KeyAlg {
    /// Every supported `alg`, in the order config errors list them.
    pub const ALL: [KeyAlg; 13] = [
        KeyAlg::Dir,
        KeyAlg::A128Kw,
        KeyAlg::A192Kw,
        KeyAlg::A256Kw,
        KeyAlg::A128GcmKw,
        KeyAlg::A192GcmKw,
        KeyAlg::A256GcmKw,
        KeyAlg::RsaOaep,
        KeyAlg::RsaOaep256,
        KeyAlg::EcdhEs,
        KeyAlg::EcdhEsA128Kw,
        KeyAlg::EcdhEsA192Kw,
        KeyAlg::EcdhEsA256Kw,
    ];

    /// Parses an `alg` value. Names are case-sensitive (RFC 7516 section 4.1.1).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Public-key management: the sender chooses the CEK and needs only the public key,
    /// so a successful decryption proves nothing about who made the token.
    pub fn is_asymmetric(self) -> bool {
        self.is_rsa() || self.is_ecdh()
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, KeyAlg::RsaOaep | KeyAlg::RsaOaep256)
    }

    pub fn is_ecdh(self) -> bool {
        matches!(
            self,
            KeyAlg::EcdhEs | KeyAlg::EcdhEsA128Kw | KeyAlg::EcdhEsA192Kw | KeyAlg::EcdhEsA256Kw
        )
    }

    /// The AES key-wrap key length in bytes, for the algorithms that wrap the CEK with
    /// RFC 3394 (directly or after ECDH-ES).
    pub fn kw_len(self) -> Option<usize> {
        match self {
            KeyAlg::A128Kw | KeyAlg::EcdhEsA128Kw => Some(16),
            KeyAlg::A192Kw | KeyAlg::EcdhEsA192Kw => Some(24),
            KeyAlg::A256Kw | KeyAlg::EcdhEsA256Kw => Some(32),
            _ => None,
        }
    }

    /// The AES-GCM key-wrap key length in bytes.
    pub fn gcmkw_len(self) -> Option<usize> {
        match self {
            KeyAlg::A128GcmKw => Some(16),
            KeyAlg::A192GcmKw => Some(24),
            KeyAlg::A256GcmKw => Some(32),
            _ => None,
        }
    }

    /// The registered `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            KeyAlg::Dir => "dir",
            KeyAlg::A128Kw => "A128KW",
            KeyAlg::A192Kw => "A192KW",
            KeyAlg::A256Kw => "A256KW",
            KeyAlg::A128GcmKw => "A128GCMKW",
            KeyAlg::A192GcmKw => "A192GCMKW",
            KeyAlg::A256GcmKw => "A256GCMKW",
            KeyAlg::RsaOaep => "RSA-OAEP",
            KeyAlg::RsaOaep256 => "RSA-OAEP-256",
            KeyAlg::EcdhEs => "ECDH-ES",
            KeyAlg::EcdhEsA128Kw => "ECDH-ES+A128KW",
            KeyAlg::EcdhEsA192Kw => "ECDH-ES+A192KW",
            KeyAlg::EcdhEsA256Kw => "ECDH-ES+A256KW",
        }
    }
}

enum Material {
    /// dir: the CEK itself; KW: the key-encryption key.
    Symmetric(Zeroizing<Vec<u8>>),
    /// Zeroized on drop by the `rsa` crate.
    Rsa(Box<RsaPrivateKey>),
    /// The recipient's static ECDH key (aws-lc-rs frees and clears it).
    Ecdh(EcdhKey),
}

/// One configured JWE key (`[[jwt.decryption_keys]]`).
pub struct DecryptionKey {
    pub kid: Option<String>,
    pub alg: KeyAlg,
    /// Required for `dir` (it fixes the key length); for the other `alg`s an
    /// optional restriction to one `enc`, `None` allowing every supported one.
    pub enc: Option<ContentEnc>,
    /// Accept only a nested JWS even under symmetric key management
    /// (`require_nested = true`); asymmetric key management always requires one.
    pub require_nested: bool,
    material: Material,
}

impl fmt::Debug for DecryptionKey {
    // Key material never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let material = match &self.material {
            Material::Symmetric(k) => format!("<{} secret bytes>", k.len()),
            Material::Rsa(k) => format!("<RSA-{} private key>", k.size() * 8),
            Material::Ecdh(k) => format!("<{} private key>", k.curve.name()),
        };
        f.debug_struct("DecryptionKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("enc", &self.enc)
            .field("material", &material)
            .finish()
    }
}

impl DecryptionKey {
    /// Builds a key from its config entry, checking the key against `alg`/`enc`.
    ///
    /// Symmetric keys (`dir`, `A128KW`, `A256KW`) come from exactly one of
    /// `key_b64url` (base64url of the raw key; surrounding whitespace and
    /// trailing `=` tolerated) or `key_bytes` (raw, e.g. read from `key_file`).
    /// `RSA-OAEP-256` takes `rsa_private_pem` (PKCS#8 or PKCS#1, >= 2048 bits).
    /// Lengths: `dir` needs the `enc` CEK length (A128GCM 16, A192GCM 24,
    /// A256GCM 32, A128CBC-HS256 32, A256CBC-HS512 64 bytes); A128KW 16; A256KW 32.
    /// Errors name the offending setting and what would be valid; they never
    /// contain key material.
    pub fn from_config(
        kid: Option<String>,
        alg: &str,
        enc: Option<&str>,
        key_b64url: Option<&str>,
        key_bytes: Option<&[u8]>,
        rsa_private_pem: Option<&[u8]>,
    ) -> Result<Self, DecryptionKeyError> {
        let alg_parsed = KeyAlg::from_name(alg)
            .ok_or_else(|| DecryptionKeyError::UnsupportedAlg { alg: alg.into() })?;
        let enc = enc
            .map(|e| {
                ContentEnc::from_name(e)
                    .ok_or_else(|| DecryptionKeyError::UnsupportedEnc { enc: e.into() })
            })
            .transpose()?;
        let material = if alg_parsed.is_asymmetric() {
            if key_b64url.is_some() || key_bytes.is_some() {
                return Err(DecryptionKeyError::PemExpected { alg: alg.into() });
            }
            let pem = rsa_private_pem
                .ok_or_else(|| DecryptionKeyError::PemMissing { alg: alg.into() })?;
            if alg_parsed.is_rsa() {
                Material::Rsa(Box::new(parse_rsa_private_pem(pem)?))
            } else {
                Material::Ecdh(EcdhKey::from_pem(pem)?)
            }
        } else {
            if rsa_private_pem.is_some() {
                return Err(DecryptionKeyError::SymmetricExpected { alg: alg.into() });
            }
            let key = match (key_b64url, key_bytes) {
                (Some(b64), None) => decode_config_b64url(b64)?,
                (None, Some(raw)) => Zeroizing::new(raw.to_vec()),
                (Some(_), Some(_)) => return Err(DecryptionKeyError::KeyAndKeyFile),
                (None, None) => return Err(DecryptionKeyError::KeyMissing { alg: alg.into() }),
            };
            let want = match alg_parsed {
                KeyAlg::Dir => enc.ok_or(DecryptionKeyError::DirNeedsEnc)?.cek_len(),
                other => other
                    .kw_len()
                    .or(other.gcmkw_len())
                    .ok_or_else(|| DecryptionKeyError::NoSymmetricKey { alg: alg.into() })?,
            };
            if key.len() != want {
                return Err(DecryptionKeyError::KeyLength {
                    alg: alg.into(),
                    enc: enc
                        .filter(|_| alg_parsed == KeyAlg::Dir)
                        .map(ContentEnc::name),
                    want,
                    got: key.len(),
                });
            }
            Material::Symmetric(key)
        };
        Ok(DecryptionKey {
            kid,
            alg: alg_parsed,
            enc,
            require_nested: false,
            material,
        })
    }

    /// A key from a private JWK of `decryption_jwks_file` (its `alg` required, `use`
    /// absent or `enc`). Checked like a configured key.
    pub fn from_jwk(jwk: &crate::jose::keys::Jwk) -> Result<Self, DecryptionKeyError> {
        if jwk.use_.as_deref().is_some_and(|u| u != "enc") {
            return Err(DecryptionKeyError::JwkUse {
                use_: jwk.use_.clone(),
            });
        }
        let alg = jwk
            .alg
            .as_deref()
            .ok_or(DecryptionKeyError::JwkAlgMissing)?;
        let alg_parsed = KeyAlg::from_name(alg)
            .ok_or_else(|| DecryptionKeyError::UnsupportedAlg { alg: alg.into() })?;
        let material = match jwk.kty.as_str() {
            "oct" if !alg_parsed.is_asymmetric() && alg_parsed != KeyAlg::Dir => {
                let k = Zeroizing::new(jwk.bytes("k", jwk.k.as_ref())?);
                let want = alg_parsed
                    .kw_len()
                    .or(alg_parsed.gcmkw_len())
                    .ok_or_else(|| DecryptionKeyError::NoSymmetricKey { alg: alg.into() })?;
                if k.len() != want {
                    return Err(DecryptionKeyError::JwkKeyLength {
                        alg: alg.into(),
                        want,
                        got: k.len(),
                    });
                }
                Material::Symmetric(k)
            }
            "RSA" if alg_parsed.is_rsa() => {
                use rsa::BigUint;
                let int = |name: &str, v: Option<&String>| {
                    jwk.bytes(name, v).map(|b| BigUint::from_bytes_be(&b))
                };
                let key = RsaPrivateKey::from_components(
                    int("n", jwk.n.as_ref())?,
                    int("e", jwk.e.as_ref())?,
                    int("d", jwk.d.as_ref())?,
                    vec![int("p", jwk.p.as_ref())?, int("q", jwk.q.as_ref())?],
                )
                .map_err(KeyError::RsaPrivateComponents)?;
                Material::Rsa(Box::new(check_rsa_private(key)?))
            }
            "EC" | "OKP" if alg_parsed.is_ecdh() => Material::Ecdh(EcdhKey::from_jwk(jwk)?),
            kty => {
                return Err(DecryptionKeyError::JwkKty {
                    kty: kty.into(),
                    alg: alg.into(),
                })
            }
        };
        Ok(DecryptionKey {
            kid: jwk.kid.clone(),
            alg: alg_parsed,
            enc: None,
            require_nested: false,
            material,
        })
    }

    /// Whether a token with this `alg`/`enc` may be decrypted with this key.
    pub fn accepts(&self, alg: KeyAlg, enc: ContentEnc) -> bool {
        self.alg == alg && self.enc.is_none_or(|allowed| allowed == enc)
    }

    /// Recovers the CEK from the JWE Encrypted Key. Every failure is `Decrypt`.
    pub(crate) fn unwrap_cek(
        &self,
        header: &super::header::ProtectedHeader,
        encrypted_key: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, JweError> {
        let enc = header.enc;
        match (&self.material, self.alg) {
            (Material::Symmetric(key), KeyAlg::Dir) if encrypted_key.is_empty() => Ok(key.clone()),
            (Material::Symmetric(kek), alg) if alg.kw_len().is_some() => {
                kw_unwrap_any(kek, enc, encrypted_key)
            }
            (Material::Symmetric(kek), alg) if alg.gcmkw_len().is_some() => {
                gcmkw_unwrap(kek, header, enc, encrypted_key)
            }
            (Material::Rsa(key), KeyAlg::RsaOaep) => Ok(rsa_unwrap(
                key,
                Oaep::new::<sha1::Sha1>(),
                enc,
                encrypted_key,
            )),
            (Material::Rsa(key), KeyAlg::RsaOaep256) => {
                Ok(rsa_unwrap(key, Oaep::new::<Sha256>(), enc, encrypted_key))
            }
            (Material::Ecdh(key), alg) => {
                let derived = key.derive(header, alg)?;
                match alg {
                    KeyAlg::EcdhEs if encrypted_key.is_empty() => Ok(derived),
                    KeyAlg::EcdhEs => Err(JweError::Decrypt),
                    _ => kw_unwrap_any(&derived, enc, encrypted_key),
                }
            }
            _ => Err(JweError::Decrypt),
        }
    }

    /// [`DecryptionKey::unwrap_cek`] for a header holding only this key's `alg` and `enc`.
    #[cfg(test)]
    pub(crate) fn unwrap_cek_for(
        &self,
        enc: ContentEnc,
        encrypted_key: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, JweError> {
        let json = format!(r#"{{"alg":"{}","enc":"{}"}}"#, self.alg.name(), enc.name());
        let header = super::header::parse(json.as_bytes())?;
        self.unwrap_cek(&header, encrypted_key)
    }

    /// Produces the JWE Encrypted Key for `cek` (empty for `dir`, whose CEK
    /// must be the key itself).
    pub(crate) fn wrap_cek(&self, cek: &[u8]) -> Result<Vec<u8>, JweError> {
        match (&self.material, self.alg) {
            (Material::Symmetric(key), KeyAlg::Dir) if key.as_slice() == cek => Ok(Vec::new()),
            (Material::Symmetric(kek), KeyAlg::A128Kw) => kw_wrap::<aes::Aes128>(kek, cek),
            (Material::Symmetric(kek), KeyAlg::A192Kw) => kw_wrap::<aes::Aes192>(kek, cek),
            (Material::Symmetric(kek), KeyAlg::A256Kw) => kw_wrap::<aes::Aes256>(kek, cek),
            (Material::Rsa(key), KeyAlg::RsaOaep) => RsaPublicKey::from(key.as_ref())
                .encrypt(&mut OsRng, Oaep::new::<sha1::Sha1>(), cek)
                .map_err(|_| JweError::Encrypt),
            (Material::Rsa(key), KeyAlg::RsaOaep256) => RsaPublicKey::from(key.as_ref())
                .encrypt(&mut OsRng, Oaep::new::<Sha256>(), cek)
                .map_err(|_| JweError::Encrypt),
            _ => Err(JweError::Encrypt),
        }
    }

    /// For `dir` keys, the CEK; `None` for the other algorithms.
    pub(crate) fn direct_cek(&self) -> Option<&[u8]> {
        match (&self.material, self.alg) {
            (Material::Symmetric(key), KeyAlg::Dir) => Some(key),
            _ => None,
        }
    }
}

/// RFC 3394 unwrap with the AES size the KEK's length names (16, 24 or 32 bytes).
fn kw_unwrap_any(
    kek: &[u8],
    enc: ContentEnc,
    encrypted_key: &[u8],
) -> Result<Zeroizing<Vec<u8>>, JweError> {
    match kek.len() {
        16 => kw_unwrap::<aes::Aes128>(kek, enc, encrypted_key),
        24 => kw_unwrap::<aes::Aes192>(kek, enc, encrypted_key),
        32 => kw_unwrap::<aes::Aes256>(kek, enc, encrypted_key),
        _ => Err(JweError::Decrypt),
    }
}

/// RFC 7518 section 4.7: the CEK is AES-GCM encrypted under the key with the header's
/// `iv` (96 bits) and `tag` (128 bits) and no AAD. The header is integrity-protected by the
/// content encryption, so a changed `iv`/`tag` fails here or there.
fn gcmkw_unwrap(
    kek: &[u8],
    header: &super::header::ProtectedHeader,
    enc: ContentEnc,
    encrypted_key: &[u8],
) -> Result<Zeroizing<Vec<u8>>, JweError> {
    use aes_gcm::aead::consts::U12;
    use aes_gcm::{AeadInPlace, AesGcm, KeyInit};
    let param = |name: &str| -> Result<Vec<u8>, JweError> {
        match header.members.get(name) {
            Some(serde_json::Value::String(s)) => {
                URL_SAFE_NO_PAD.decode(s).map_err(|_| JweError::Decrypt)
            }
            _ => Err(JweError::Decrypt),
        }
    };
    let (iv, tag) = (param("iv")?, param("tag")?);
    if iv.len() != 12 || tag.len() != 16 || encrypted_key.len() != enc.cek_len() {
        return Err(JweError::Decrypt);
    }
    let mut cek = Zeroizing::new(encrypted_key.to_vec());
    let result = match kek.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(kek)
            .map_err(|_| JweError::Decrypt)?
            .decrypt_in_place_detached(iv.as_slice().into(), b"", &mut cek, tag.as_slice().into()),
        24 => AesGcm::<aes::Aes192, U12>::new_from_slice(kek)
            .map_err(|_| JweError::Decrypt)?
            .decrypt_in_place_detached(iv.as_slice().into(), b"", &mut cek, tag.as_slice().into()),
        32 => aes_gcm::Aes256Gcm::new_from_slice(kek)
            .map_err(|_| JweError::Decrypt)?
            .decrypt_in_place_detached(iv.as_slice().into(), b"", &mut cek, tag.as_slice().into()),
        _ => return Err(JweError::Decrypt),
    };
    result.map_err(|_| JweError::Decrypt)?;
    Ok(cek)
}

fn kw_unwrap<A>(
    kek: &[u8],
    enc: ContentEnc,
    encrypted_key: &[u8],
) -> Result<Zeroizing<Vec<u8>>, JweError>
where
    Kek<A>: for<'a> TryFrom<&'a [u8]>,
    A: aes::cipher::BlockCipher
        + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>
        + aes::cipher::BlockEncrypt
        + aes::cipher::BlockDecrypt
        + aes::cipher::KeyInit,
{
    // The wrapped CEK is one 64-bit semiblock longer than the CEK (RFC 3394).
    if encrypted_key.len() != enc.cek_len() + 8 {
        return Err(JweError::Decrypt);
    }
    let kek = Kek::<A>::try_from(kek).map_err(|_| JweError::Decrypt)?;
    // Zeroizing: on an integrity failure the buffer holds unverified key bytes.
    let mut cek = Zeroizing::new(vec![0u8; enc.cek_len()]);
    kek.unwrap(encrypted_key, &mut cek)
        .map_err(|_| JweError::Decrypt)?;
    Ok(cek)
}

fn kw_wrap<A>(kek: &[u8], cek: &[u8]) -> Result<Vec<u8>, JweError>
where
    Kek<A>: for<'a> TryFrom<&'a [u8]>,
    A: aes::cipher::BlockCipher
        + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>
        + aes::cipher::BlockEncrypt
        + aes::cipher::BlockDecrypt
        + aes::cipher::KeyInit,
{
    let kek = Kek::<A>::try_from(kek).map_err(|_| JweError::Encrypt)?;
    let mut out = vec![0u8; cek.len() + 8];
    kek.wrap(cek, &mut out).map_err(|_| JweError::Encrypt)?;
    Ok(out)
}

/// RSA-OAEP-256 unwrap that never fails on its own: a malformed, badly
/// padded or wrong-length encrypted key yields a random CEK, so the token then
/// fails the content tag check like any other wrong key. RFC 7516 section
/// 11.5: recipients must not distinguish these cases (Bleichenbacher/Manger).
fn rsa_unwrap(
    key: &RsaPrivateKey,
    padding: Oaep,
    enc: ContentEnc,
    encrypted_key: &[u8],
) -> Zeroizing<Vec<u8>> {
    // Drawn before decrypting so both outcomes do the same work.
    let mut random_cek = Zeroizing::new(vec![0u8; enc.cek_len()]);
    OsRng.fill_bytes(&mut random_cek);
    match key.decrypt_blinded(&mut OsRng, padding, encrypted_key) {
        Ok(cek) if cek.len() == enc.cek_len() => Zeroizing::new(cek),
        Ok(mut wrong_len) => {
            zeroize::Zeroize::zeroize(&mut wrong_len);
            random_cek
        }
        Err(_) => random_cek,
    }
}

fn parse_rsa_private_pem(pem: &[u8]) -> Result<RsaPrivateKey, KeyError> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    let pem = std::str::from_utf8(pem).map_err(|_| KeyError::RsaPrivatePemNotUtf8)?;
    let key = RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
        .map_err(|_| KeyError::RsaPrivatePemLabel)?;
    check_rsa_private(key)
}

/// The checks every RSA decryption key passes, from a PEM or a JWK.
fn check_rsa_private(key: RsaPrivateKey) -> Result<RsaPrivateKey, KeyError> {
    key.validate().map_err(KeyError::RsaPrivateInconsistent)?;
    let bits = key.size() * 8;
    if bits < MIN_RSA_BITS {
        return Err(KeyError::RsaPrivateTooSmall {
            bits,
            min: MIN_RSA_BITS,
        });
    }
    // The same weak-key rules as verification keys (exponent, ROCA).
    crate::jose::key_checks::rsa_public(&key.n().to_bytes_be(), &key.e().to_bytes_be())?;
    Ok(key)
}

fn decode_config_b64url(text: &str) -> Result<Zeroizing<Vec<u8>>, DecryptionKeyError> {
    let trimmed = text.trim().trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(trimmed)
        .map(Zeroizing::new)
        .map_err(|_| DecryptionKeyError::KeyNotBase64url)
}

pub(super) fn names<const N: usize>(list: [&str; N]) -> String {
    list.join(", ")
}

/// The private keys of a `decryption_jwks_file`, each checked like a configured key;
/// errors name the file and the key's kid.
pub fn parse_decryption_jwks(
    bytes: &[u8],
    source: &str,
) -> Result<Vec<DecryptionKey>, DecryptionKeyError> {
    let set: crate::jose::keys::JwkSetDoc =
        serde_json::from_slice(bytes).map_err(|error| DecryptionKeyError::NotJwks {
            file: source.into(),
            error,
        })?;
    let mut out = Vec::new();
    for (index, jwk) in set.keys.iter().enumerate() {
        let Some(kid) = &jwk.kid else {
            return Err(DecryptionKeyError::JwksKidMissing {
                file: source.into(),
                index,
            });
        };
        out.push(
            DecryptionKey::from_jwk(jwk).map_err(|error| DecryptionKeyError::InJwks {
                key: format!("{source} kid {kid:?}"),
                error: Box::new(error),
            })?,
        );
    }
    Ok(out)
}

/// `[jwt] decryption_encs`, validated; `None` gives the default list.
pub fn parse_encs(names: Option<&[String]>) -> Result<Vec<ContentEnc>, DecryptionKeyError> {
    let Some(names) = names else {
        return Ok(ContentEnc::DEFAULT_ACCEPTED.to_vec());
    };
    names
        .iter()
        .map(|n| {
            ContentEnc::from_name(n)
                .ok_or_else(|| DecryptionKeyError::UnsupportedAcceptedEnc { enc: n.clone() })
        })
        .collect()
}

/// The configured JWE keys plus the token size bound.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<DecryptionKey>,
    max_token_bytes: usize,
    /// `[jwt] decryption_encs`: the content encryptions accepted (a key's own pinned
    /// `enc` is accepted for that key whatever this says).
    encs: Vec<ContentEnc>,
}

impl KeyRing {
    /// A ring of `keys`; two keys may not share a `kid`, since `kid` selects
    /// exactly one key.
    pub fn new(keys: Vec<DecryptionKey>) -> Result<Self, DecryptionKeyError> {
        for (i, key) in keys.iter().enumerate() {
            if let Some(kid) = &key.kid {
                if keys[..i].iter().any(|k| k.kid.as_ref() == Some(kid)) {
                    return Err(DecryptionKeyError::DuplicateKid { kid: kid.clone() });
                }
            }
        }
        Ok(KeyRing {
            keys,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            encs: ContentEnc::DEFAULT_ACCEPTED.to_vec(),
        })
    }

    /// Sets the largest compact token (in bytes) that `decrypt` will look at.
    pub fn with_max_token_bytes(mut self, max_token_bytes: usize) -> Self {
        self.max_token_bytes = max_token_bytes;
        self
    }

    /// Sets the accepted content encryptions (`[jwt] decryption_encs`).
    pub fn with_accepted_encs(mut self, encs: Vec<ContentEnc>) -> Self {
        self.encs = encs;
        self
    }

    pub fn max_token_bytes(&self) -> usize {
        self.max_token_bytes
    }

    pub fn keys(&self) -> &[DecryptionKey] {
        &self.keys
    }

    /// Keys to try, in config order. A token `kid` selects only the key with
    /// that `kid` (no fallback to the others); without one, every key whose
    /// `alg`/`enc` allow the token is a candidate.
    pub(crate) fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: KeyAlg,
        enc: ContentEnc,
    ) -> impl Iterator<Item = &'a DecryptionKey> + 'a {
        self.keys.iter().filter(move |key| {
            kid.is_none_or(|kid| key.kid.as_deref() == Some(kid))
                && key.accepts(alg, enc)
                && (key.enc == Some(enc) || self.encs.contains(&enc))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(kid: Option<&str>, alg: &str, enc: Option<&str>, key: &[u8]) -> DecryptionKey {
        DecryptionKey::from_config(kid.map(str::to_owned), alg, enc, None, Some(key), None).unwrap()
    }

    fn config_err(alg: &str, enc: Option<&str>, b64: Option<&str>, raw: Option<&[u8]>) -> String {
        DecryptionKey::from_config(None, alg, enc, b64, raw, None)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn dir_key_length_must_match_enc() {
        for (enc, len) in [
            ("A128GCM", 16),
            ("A192GCM", 24),
            ("A256GCM", 32),
            ("A128CBC-HS256", 32),
            ("A256CBC-HS512", 64),
        ] {
            let ok =
                DecryptionKey::from_config(None, "dir", Some(enc), None, Some(&vec![1; len]), None);
            assert!(ok.is_ok(), "{enc} with {len} bytes");
            for bad in [len - 1, len + 1, 0] {
                let e = config_err("dir", Some(enc), None, Some(&vec![1; bad]));
                assert!(
                    e.contains(&format!("needs a {len}-byte key")),
                    "{enc}/{bad}: {e}"
                );
            }
        }
        assert!(config_err("dir", None, None, Some(&[1; 32])).contains("needs enc"));
    }

    #[test]
    fn key_wrap_lengths_and_config_errors() {
        assert!(
            DecryptionKey::from_config(None, "A128KW", None, None, Some(&[1; 16]), None).is_ok()
        );
        assert!(DecryptionKey::from_config(
            None,
            "A256KW",
            Some("A128GCM"),
            None,
            Some(&[1; 32]),
            None
        )
        .is_ok());
        assert!(config_err("A128KW", None, None, Some(&[1; 32])).contains("16-byte"));
        assert!(config_err("A256KW", None, None, Some(&[1; 16])).contains("32-byte"));
        assert!(config_err("A192KW", None, None, Some(&[1; 16])).contains("24-byte"));
        assert!(config_err("A128GCMKW", None, None, Some(&[1; 24])).contains("16-byte"));
        assert!(config_err("RSA1_5", None, None, None).contains("not supported"));
        assert!(DecryptionKey::from_config(
            None,
            "dir",
            Some("A192CBC-HS384"),
            None,
            Some(&[1; 48]),
            None
        )
        .is_ok());
        assert!(config_err("A128KW", None, None, None).contains("needs key"));
        assert!(config_err(
            "A128KW",
            None,
            Some("AAAAAAAAAAAAAAAAAAAAAA"),
            Some(&[1; 16])
        )
        .contains("only one"));
        let pem_for_sym =
            DecryptionKey::from_config(None, "A128KW", None, None, Some(&[1; 16]), Some(b"x"));
        assert!(pem_for_sym
            .unwrap_err()
            .to_string()
            .contains("not a private key PEM"));
        let sym_for_rsa =
            DecryptionKey::from_config(None, "RSA-OAEP-256", None, None, Some(&[1; 16]), None);
        assert!(sym_for_rsa
            .unwrap_err()
            .to_string()
            .contains("not key/key_file"));
        let bad_pem = DecryptionKey::from_config(
            None,
            "RSA-OAEP-256",
            None,
            None,
            None,
            Some(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
        );
        assert!(bad_pem.unwrap_err().to_string().contains("PKCS#8"));
    }

    #[test]
    fn config_base64url_is_decoded_and_strict_about_the_alphabet() {
        // RFC 7520 section 5.6's key.
        let k = DecryptionKey::from_config(
            None,
            "dir",
            Some("A128GCM"),
            Some(" XctOhJAkA-pD9Lh7ZgW_2A==\n"),
            None,
            None,
        )
        .unwrap();
        assert_eq!(k.direct_cek().unwrap().len(), 16);
        // Standard-alphabet characters are not base64url.
        assert!(
            config_err("dir", Some("A128GCM"), Some("XctOhJAkA+pD9Lh7ZgW/2A"), None)
                .contains("base64url")
        );
        assert!(config_err("dir", Some("A128GCM"), Some("!!!!"), None).contains("base64url"));
    }

    #[test]
    fn debug_output_redacts_key_material() {
        let k = sym(Some("k"), "dir", Some("A128GCM"), &[0xAB; 16]);
        let shown = format!("{k:?}");
        assert!(shown.contains("<16 secret bytes>"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }

    #[test]
    fn enc_allow_list_and_kid_selection() {
        let ring = KeyRing::new(vec![
            sym(Some("a"), "dir", Some("A256GCM"), &[1; 32]),
            sym(Some("b"), "A128KW", None, &[2; 16]),
            sym(None, "A128KW", Some("A128GCM"), &[3; 16]),
        ])
        .unwrap();
        let kids = |kid, alg, enc| {
            ring.candidates(kid, alg, enc)
                .map(|k| k.kid.clone().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert_eq!(kids(None, KeyAlg::Dir, ContentEnc::A256Gcm), ["a"]);
        assert!(kids(None, KeyAlg::Dir, ContentEnc::A128Gcm).is_empty());
        assert_eq!(kids(None, KeyAlg::A128Kw, ContentEnc::A128Gcm), ["b", ""]);
        assert_eq!(kids(None, KeyAlg::A128Kw, ContentEnc::A256CbcHs512), ["b"]);
        assert_eq!(kids(Some("b"), KeyAlg::A128Kw, ContentEnc::A128Gcm), ["b"]);
        assert!(kids(Some("a"), KeyAlg::A128Kw, ContentEnc::A128Gcm).is_empty());
        assert!(kids(Some("zzz"), KeyAlg::Dir, ContentEnc::A256Gcm).is_empty());
        assert!(KeyRing::new(vec![
            sym(Some("a"), "dir", Some("A256GCM"), &[1; 32]),
            sym(Some("a"), "A128KW", None, &[2; 16]),
        ])
        .unwrap_err()
        .to_string()
        .contains("share kid"));
    }

    #[test]
    fn key_wrap_rejects_wrong_length_and_tampered_wrapped_keys() {
        let k = sym(None, "A128KW", None, &[7; 16]);
        let cek = [5u8; 32];
        let wrapped = k.wrap_cek(&cek).unwrap();
        assert_eq!(
            k.unwrap_cek_for(ContentEnc::A128CbcHs256, &wrapped)
                .unwrap()
                .as_slice(),
            cek
        );
        // Same wrapped key, but the header claims an enc with another CEK length.
        assert_eq!(
            k.unwrap_cek_for(ContentEnc::A128Gcm, &wrapped),
            Err(JweError::Decrypt)
        );
        let mut bad = wrapped.clone();
        bad[3] ^= 0x80;
        assert_eq!(
            k.unwrap_cek_for(ContentEnc::A128CbcHs256, &bad),
            Err(JweError::Decrypt)
        );
        let other = sym(None, "A128KW", None, &[8; 16]);
        assert_eq!(
            other.unwrap_cek_for(ContentEnc::A128CbcHs256, &wrapped),
            Err(JweError::Decrypt)
        );
    }
}
