//! Minting the tokens sign-in hands out: JWT access tokens signed with the `signing_kid`
//! key (so they verify through the gateway's own validator), and opaque refresh tokens.

use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::auth::jws::digest128;
use crate::auth::keys::VerifyKey;
use crate::hex::encode as hex;
use crate::signin::sessions::Issued;

/// Why a token could not be minted. Reaches a client only as a generic 503 (sign-in maps it
/// to `SignInError::Unavailable`); the text goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The signer cannot be built from the configured keys (start-up, or a reload).
    #[error("{0}")]
    Config(String),
    #[error("the OS random source failed: {0}")]
    Random(String),
    #[error("cannot sign the access token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error("cannot encrypt the access token: {0}")]
    Encrypt(String),
}

/// Signs access tokens.
pub struct Signer {
    alg: Algorithm,
    kid: Option<String>,
    key: EncodingKey,
    issuer: Option<String>,
    audience: Vec<String>,
    pub access_ttl: Duration,
    /// `[signin] encrypt_kid`: the ring and the index of the key access tokens are encrypted to.
    encrypt: Option<(std::sync::Arc<crate::auth::jwe::KeyRing>, usize)>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// An access token about to be issued: its `jti` is drawn before the user is known (a
/// refresh learns the user only when it spends the refresh token).
pub struct Pending {
    jti: String,
    iat: u64,
    pub issued: Issued,
}

impl Signer {
    pub fn new(
        key: &VerifyKey,
        jwt: &crate::config::Jwt,
        access_ttl: Duration,
        encrypt_kid: Option<&str>,
    ) -> Result<Signer, IssueError> {
        let encoding = key
            .encoding
            .clone()
            .ok_or_else(|| IssueError::Config("signin: the signing key cannot sign".into()))?;
        let encrypt = match encrypt_kid {
            None => None,
            Some(kid) => {
                let ring = jwt.decryption_keys.clone().ok_or_else(|| {
                    IssueError::Config(format!(
                        "signin.encrypt_kid: `{kid}` names no [[jwt.decryption_keys]] entry"
                    ))
                })?;
                let idx = ring
                    .keys()
                    .iter()
                    .position(|k| k.kid.as_deref() == Some(kid))
                    .ok_or_else(|| {
                        IssueError::Config(format!(
                            "signin.encrypt_kid: `{kid}` names no [[jwt.decryption_keys]] entry"
                        ))
                    })?;
                Some((ring, idx))
            }
        };
        Ok(Signer {
            alg: key.alg.jwt().ok_or_else(|| {
                IssueError::Config("signin: the signing key's algorithm cannot sign".into())
            })?,
            kid: key.kid.clone(),
            key: encoding,
            issuer: jwt.issuer.clone(),
            audience: jwt.audience.clone(),
            access_ttl,
            encrypt,
        })
    }

    /// Draw a `jti` (128 bits from the OS CSPRNG, hex) and fix `iat`/`exp`.
    pub fn prepare(&self, now: u64) -> Result<Pending, IssueError> {
        let jti = hex(&os_random::<16>()?);
        let exp = now.saturating_add(self.access_ttl.as_secs());
        Ok(Pending {
            issued: Issued {
                key: digest128(jti.as_bytes()),
                exp,
            },
            jti,
            iat: now,
        })
    }

    /// Sign the access token for `user`: `sub`, `jti`, `iat`, `exp`, and `iss`/`aud` when
    /// `[jwt]` names them.
    pub fn sign(&self, p: &Pending, user: &str) -> Result<String, IssueError> {
        self.sign_with(p, user, serde_json::Map::new())
    }

    /// [`Self::sign`] with more claims, set after the standard ones (so they may replace
    /// them): for `portcullis token --claim`, which mints test tokens with this signer.
    pub fn sign_with(
        &self,
        p: &Pending,
        user: &str,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, IssueError> {
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), user.into());
        claims.insert("iat".into(), p.iat.into());
        claims.insert("exp".into(), p.issued.exp.into());
        claims.insert("jti".into(), p.jti.clone().into());
        if let Some(iss) = &self.issuer {
            claims.insert("iss".into(), iss.clone().into());
        }
        match self.audience.as_slice() {
            [] => {}
            [one] => {
                claims.insert("aud".into(), one.clone().into());
            }
            many => {
                claims.insert("aud".into(), many.to_vec().into());
            }
        }
        claims.extend(extra);
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        let jws = jsonwebtoken::encode(&header, &claims, &self.key)?;
        match &self.encrypt {
            None => Ok(jws),
            // A nested JWT (RFC 7519 section 5.2): the signed token inside a JWE.
            Some((ring, idx)) => {
                let key = &ring.keys()[*idx];
                crate::auth::jwe::encrypt(key, jws.as_bytes(), Some("JWT"), None)
                    .map_err(|e| IssueError::Encrypt(format!("{e:?}")))
            }
        }
    }
}

/// An opaque refresh token: 256 bits from the OS CSPRNG, base64url without padding.
pub fn refresh_token() -> Result<String, IssueError> {
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(os_random::<32>()?))
}

/// A CSRF token for cookie mode: 256 bits from the OS CSPRNG, base64url without padding.
pub fn csrf_token() -> Result<String, IssueError> {
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(os_random::<32>()?))
}

/// `N` bytes straight from the operating system's CSPRNG (`getrandom`).
fn os_random<const N: usize>() -> Result<[u8; N], IssueError> {
    use rand::TryRngCore as _;
    let mut b = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut b)
        .map_err(|e| IssueError::Random(e.to_string()))?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_values_have_the_promised_size() {
        assert_eq!(hex(&os_random::<16>().unwrap()).len(), 32);
        let r = refresh_token().unwrap();
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&r)
                .unwrap()
                .len(),
            32
        );
        assert_ne!(refresh_token().unwrap(), r);
        let c = csrf_token().unwrap();
        assert!(crate::signin::cookies::is_csrf_token(c.as_bytes()), "{c}");
        assert_ne!(csrf_token().unwrap(), c);
    }
}
