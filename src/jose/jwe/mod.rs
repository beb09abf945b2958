//! Encrypted tokens: compact JWE (RFC 7516) decryption and encryption.
//!
//! Supported `alg`: `dir`, `A128KW`, `A192KW`, `A256KW` (RFC 3394 key wrap),
//! `A128GCMKW`, `A192GCMKW`, `A256GCMKW`, `RSA-OAEP`, `RSA-OAEP-256`, `ECDH-ES` and
//! `ECDH-ES+A128KW`/`+A192KW`/`+A256KW` on P-256, P-384, P-521 and X25519; `enc`:
//! `A128GCM`, `A192GCM`, `A256GCM`, `A128CBC-HS256`, `A192CBC-HS384`, `A256CBC-HS512`
//! (RFC 7518 sections 4 and 5). Never `RSA1_5`: PKCS#1 v1.5 decryption is a
//! Bleichenbacher oracle unless every error path is constant-time, which no JOSE
//! stack reliably is (RFC 7516 section 11.5). No `zip`, no `crit`, no JSON
//! serialization. All primitives come from RustCrypto crates and aws-lc-rs (ECDH);
//! this module only composes them as RFC 7518 specifies. The GCMKW and ECDH-ES
//! modes are decryption only ([`encrypt`] refuses them).
//!
//! `decrypt` fails closed, in this order, and each step needs only what the
//! steps before it checked:
//! 1. size bound, then exactly five `.`-separated segments, each strict
//!    base64url without padding ([`JweError::Malformed`]);
//! 2. the protected header: a JSON object without duplicate member names,
//!    a known `alg`/`enc`, no `zip`, no `crit` (`Malformed` / `Unsupported`);
//! 3. shapes fixed by the header: empty encrypted key for `dir`, non-empty
//!    otherwise (AES-KW: exactly CEK + 8 bytes), exact IV and tag lengths
//!    (`Malformed`);
//! 4. key selection (`kid`, else every key allowing this `alg`/`enc`), CEK
//!    recovery and authenticated decryption with AAD = the header segment's
//!    ASCII (RFC 7516 section 5.2 step 14) - every failure here is the one
//!    [`JweError::Decrypt`], so responses cannot become a padding or
//!    decryption oracle.
//!
//! `Malformed` and `Unsupported` depend only on the token's public structure,
//! never on a key, so telling them apart leaks nothing about key material.

mod content;
mod ecdh;
mod header;
mod key_error;
mod keys;

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::OsRng;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

pub use content::ContentEnc;
pub use key_error::DecryptionKeyError;
pub use keys::{
    parse_decryption_jwks, parse_encs, DecryptionKey, KeyAlg, KeyRing, DEFAULT_MAX_TOKEN_BYTES,
    MIN_RSA_BITS,
};

/// `enc` used by [`encrypt`] when the key does not pin one.
pub const DEFAULT_ENC: ContentEnc = ContentEnc::A256Gcm;

/// Why a JWE was rejected or could not be produced. Client-facing messages
/// stay generic; `Display` says no more than the variant name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JweError {
    /// Not a well-formed compact JWE: size, segment count, base64url, header
    /// JSON, or an encrypted key / IV / tag length that contradicts the header.
    #[error("malformed JWE")]
    Malformed,
    /// Well-formed, but asks for something this module never accepts: an
    /// unknown `alg` or `enc`, `zip`, or `crit`.
    #[error("unsupported JWE algorithm or header parameter")]
    Unsupported,
    /// No configured key decrypts it: no key for this `kid`/`alg`/`enc`,
    /// wrong key, bad tag, tampered header/IV/ciphertext, bad padding.
    #[error("JWE decryption failed")]
    Decrypt,
    /// Encryption input rejected: header `alg`/`enc` not allowed for the key,
    /// wrong CEK or IV length, or a `dir` CEK that is not the key.
    #[error("JWE encryption failed")]
    Encrypt,
}

/// A successfully decrypted token.
#[derive(Debug, Clone)]
pub struct Decrypted {
    /// Every member of the protected header, as sent.
    pub header: Map<String, Value>,
    pub alg: KeyAlg,
    pub enc: ContentEnc,
    /// `cty` is "JWT" (case-insensitive, "application/" optional): the
    /// plaintext is a nested JWS that must be verified as usual.
    pub cty_jwt: bool,
    /// The key that decrypted it accepts only a nested JWS: always under public-key
    /// management (anyone with the public key can encrypt), or when configured so.
    pub nested_required: bool,
    pub plaintext: Vec<u8>,
}

/// Cheap shape test used to route a bearer token: five segments (a JWS has three).
pub fn is_jwe(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 4
}

/// Decrypts a compact JWE with the first key of `ring` that accepts it.
pub fn decrypt(ring: &KeyRing, token: &str) -> Result<Decrypted, JweError> {
    if token.len() > ring.max_token_bytes() {
        return Err(JweError::Malformed);
    }
    let [header_b64, encrypted_key, iv, ciphertext, tag] = split_compact(token)?;
    let header = header::parse(&b64(header_b64)?)?;
    let encrypted_key = b64(encrypted_key)?;
    let iv = b64(iv)?;
    let ciphertext = b64(ciphertext)?;
    let tag = b64(tag)?;
    check_shapes(header.alg, header.enc, &encrypted_key, &iv, &tag)?;

    let aad = header_b64.as_bytes();
    for key in ring.candidates(header.kid.as_deref(), header.alg, header.enc) {
        let Ok(cek) = key.unwrap_cek(&header, &encrypted_key) else {
            continue;
        };
        if let Ok(plaintext) = content::open(header.enc, &cek, &iv, aad, &ciphertext, &tag) {
            return Ok(Decrypted {
                header: header.members.clone(),
                alg: header.alg,
                enc: header.enc,
                cty_jwt: header.cty_jwt,
                nested_required: key.alg.is_asymmetric() || key.require_nested,
                plaintext,
            });
        }
    }
    Err(JweError::Decrypt)
}

/// Encrypts `plaintext` under `key` with a fresh CEK (except `dir`) and IV
/// from the OS RNG. The header is `{"alg","enc"[,"kid"][,"cty"]}`; `enc` is
/// the key's, or [`DEFAULT_ENC`] if the key allows any; `kid` defaults to the
/// key's own.
pub fn encrypt(
    key: &DecryptionKey,
    plaintext: &[u8],
    cty: Option<&str>,
    kid: Option<&str>,
) -> Result<String, JweError> {
    #[derive(Serialize)]
    struct Header<'a> {
        alg: &'a str,
        enc: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        kid: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cty: Option<&'a str>,
    }
    let enc = key.enc.unwrap_or(DEFAULT_ENC);
    let header_json = serde_json::to_string(&Header {
        alg: key.alg.name(),
        enc: enc.name(),
        kid: kid.or(key.kid.as_deref()),
        cty,
    })
    .map_err(|_| JweError::Encrypt)?;
    let cek = match key.direct_cek() {
        Some(k) => Zeroizing::new(k.to_vec()),
        None => random_bytes(enc.cek_len()),
    };
    let iv = random_bytes(enc.iv_len());
    seal_compact(key, plaintext, &header_json, &cek, &iv)
}

/// Deterministic encryption for test vectors: the protected header is used
/// byte for byte as given, and the caller supplies the IV and (except for
/// `dir`, where it must be `None`) optionally the CEK. The header goes
/// through the same checks as on decryption, so `zip`/`crit` or an
/// `alg`/`enc` the key does not allow are refused. RSA-OAEP output is still
/// randomized by OAEP itself.
pub fn encrypt_with(
    key: &DecryptionKey,
    plaintext: &[u8],
    protected_header_json: &str,
    cek: Option<&[u8]>,
    iv: &[u8],
) -> Result<String, JweError> {
    let enc = header::parse(protected_header_json.as_bytes())?.enc;
    let cek = match (key.direct_cek(), cek) {
        (Some(direct), None) => Zeroizing::new(direct.to_vec()),
        (Some(_), Some(_)) => return Err(JweError::Encrypt),
        (None, Some(given)) => Zeroizing::new(given.to_vec()),
        (None, None) => random_bytes(enc.cek_len()),
    };
    seal_compact(key, plaintext, protected_header_json, &cek, iv)
}

fn seal_compact(
    key: &DecryptionKey,
    plaintext: &[u8],
    header_json: &str,
    cek: &[u8],
    iv: &[u8],
) -> Result<String, JweError> {
    let header = header::parse(header_json.as_bytes())?;
    if !key.accepts(header.alg, header.enc)
        || cek.len() != header.enc.cek_len()
        || iv.len() != header.enc.iv_len()
    {
        return Err(JweError::Encrypt);
    }
    let encrypted_key = key.wrap_cek(cek)?;
    let header_b64 = URL_SAFE_NO_PAD.encode(header_json);
    let (ciphertext, tag) = content::seal(header.enc, cek, iv, header_b64.as_bytes(), plaintext)?;
    Ok([
        header_b64,
        URL_SAFE_NO_PAD.encode(encrypted_key),
        URL_SAFE_NO_PAD.encode(iv),
        URL_SAFE_NO_PAD.encode(ciphertext),
        URL_SAFE_NO_PAD.encode(tag),
    ]
    .join("."))
}

fn split_compact(token: &str) -> Result<[&str; 5], JweError> {
    let mut segments = token.split('.');
    let mut out = [""; 5];
    for slot in &mut out {
        *slot = segments.next().ok_or(JweError::Malformed)?;
    }
    if segments.next().is_some() {
        return Err(JweError::Malformed);
    }
    Ok(out)
}

/// Strict base64url: URL-safe alphabet only, no padding, no whitespace, and
/// canonical trailing bits (so one token has exactly one encoding).
fn b64(segment: &str) -> Result<Vec<u8>, JweError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JweError::Malformed)
}

/// Lengths that the header alone fixes, checked before any key is touched.
fn check_shapes(
    alg: KeyAlg,
    enc: ContentEnc,
    encrypted_key: &[u8],
    iv: &[u8],
    tag: &[u8],
) -> Result<(), JweError> {
    let key_ok = match alg {
        // RFC 7518 sections 4.5 and 4.6: the encrypted key is the empty octet sequence.
        KeyAlg::Dir | KeyAlg::EcdhEs => encrypted_key.is_empty(),
        // RFC 3394: one 64-bit semiblock longer than the CEK.
        a if a.kw_len().is_some() => encrypted_key.len() == enc.cek_len() + 8,
        // AES-GCM without its tag (which travels in the header): as long as the CEK.
        a if a.gcmkw_len().is_some() => encrypted_key.len() == enc.cek_len(),
        // Its exact length is the modulus size, which depends on the key; a
        // wrong one is handled like any other bad RSA ciphertext (random CEK).
        _ => !encrypted_key.is_empty(),
    };
    if key_ok && iv.len() == enc.iv_len() && tag.len() == enc.tag_len() {
        Ok(())
    } else {
        Err(JweError::Malformed)
    }
}

fn random_bytes(len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(vec![0u8; len]);
    OsRng.fill_bytes(&mut out);
    out
}

#[cfg(test)]
mod tests;
