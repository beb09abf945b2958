//! Why a JWE decryption key (`[[jwt.decryption_keys]]`, `jwt.decryption_jwks_file`,
//! `jwt.decryption_encs`) is refused: each variant names the setting and what would be
//! valid; what is wrong with the key material itself is a [`KeyError`].

use super::content::ContentEnc;
use super::keys::{names, KeyAlg};
use crate::jose::key_checks::KeyError;

/// A decryption key, key set or `enc` list that cannot be loaded.
/// Causes are named in the message, not chained as `source()`: a chain printer (`{:#}`, as
/// `main` prints a start-up error) would print them twice.
#[derive(Debug, thiserror::Error)]
pub enum DecryptionKeyError {
    #[error("alg {alg:?} is not supported; valid: {valid}", valid = key_algs())]
    UnsupportedAlg { alg: String },
    #[error("enc {enc:?} is not supported; valid: {valid}", valid = encs())]
    UnsupportedEnc { enc: String },
    /// One entry of `decryption_encs`.
    #[error("`{enc}` is not a supported enc; valid: {valid}", valid = encs())]
    UnsupportedAcceptedEnc { enc: String },
    #[error("alg {alg} takes a private key PEM (private_key), not key/key_file")]
    PemExpected { alg: String },
    #[error("alg {alg} needs a private key PEM (private_key)")]
    PemMissing { alg: String },
    #[error("alg {alg} takes a symmetric key, not a private key PEM")]
    SymmetricExpected { alg: String },
    #[error("set only one of key (base64url) and key_file")]
    KeyAndKeyFile,
    #[error("alg {alg} needs key or key_file")]
    KeyMissing { alg: String },
    #[error("alg dir needs enc (the key is the content key, so enc fixes its length)")]
    DirNeedsEnc,
    #[error("alg {alg} takes no symmetric key")]
    NoSymmetricKey { alg: String },
    /// A configured symmetric key of the wrong length (`enc` set for `dir`, whose key is
    /// the content key).
    #[error("{} needs a {want}-byte key, got {got} bytes", what(alg, *enc))]
    KeyLength {
        alg: String,
        enc: Option<&'static str>,
        want: usize,
        got: usize,
    },
    #[error("key is not valid base64url (alphabet A-Z a-z 0-9 - _, no '+' or '/')")]
    KeyNotBase64url,
    #[error("use {use_:?}: a decryption key has use \"enc\" or none")]
    JwkUse { use_: Option<String> },
    #[error("a decryption JWK needs alg (e.g. \"RSA-OAEP-256\", \"ECDH-ES+A256KW\")")]
    JwkAlgMissing,
    #[error("alg {alg} needs a {want}-byte key, got {got}")]
    JwkKeyLength {
        alg: String,
        want: usize,
        got: usize,
    },
    #[error("kty {kty} cannot be used with alg {alg}")]
    JwkKty { kty: String, alg: String },
    #[error("{file}: not a JWKS document: {error}")]
    NotJwks {
        file: String,
        error: serde_json::Error,
    },
    #[error("{file} keys[{index}]: a decryption key needs a kid")]
    JwksKidMissing { file: String, index: usize },
    /// A key of a `decryption_jwks_file`, `key` naming the file and the kid.
    #[error("{key}: {error}")]
    InJwks {
        key: String,
        error: Box<DecryptionKeyError>,
    },
    #[error("two decryption keys share kid {kid:?}")]
    DuplicateKid { kid: String },
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn key_algs() -> String {
    names(KeyAlg::ALL.map(KeyAlg::name))
}

fn encs() -> String {
    names(ContentEnc::ALL.map(ContentEnc::name))
}

fn what(alg: &str, enc: Option<&str>) -> String {
    match enc {
        Some(e) => format!("alg dir with enc {e}"),
        None => format!("alg {alg}"),
    }
}
