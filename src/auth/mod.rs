//! Authentication: where a token comes from ([`bearer`], or [`cookie`] in cookie mode), the
//! keys it may be signed with ([`keys`]), and how it is verified ([`jws`]). App keys for trusted apps
//! are their own module (`apikeys`).

pub mod bearer;
pub mod cache;
pub mod challenge;
pub mod cookie;
pub mod dpop;
pub mod dpop_nonce;
pub mod issuers;
pub mod jws;

/// Key material, key sets and JWE live in the `jose` leaf (config checks keys at load);
/// re-exported so `auth::keys`, `auth::jwe` and `auth::jwks` keep their paths.
pub use crate::jose::{jwe, jwks, key_checks, keys};

/// Why a request was not authenticated. Each variant maps to one status and one generic
/// client-facing description in `pipeline::error`; the variant name is the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("token larger than jwt.max_token_bytes")]
    TooLarge,
    #[error("token is not a well-formed JWS compact serialization")]
    Malformed,
    #[error("token algorithm is not accepted (alg none, unknown, or not pinned to any key)")]
    Algorithm,
    #[error("token header carries a forbidden or unsupported parameter (jwk, jku, x5u, x5c, crit, b64, enc, zip)")]
    ForbiddenHeader,
    #[error("no configured key matches the token's kid and alg")]
    UnknownKey,
    #[error("encrypted token under public-key management carries no nested signed JWT (or the key requires one)")]
    NestedRequired,
    #[error("signature does not verify")]
    Signature,
    #[error("encrypted token cannot be decrypted with any configured key (or was tampered with)")]
    Decrypt,
    #[error("token has expired")]
    Expired,
    #[error("token is missing the exp claim")]
    MissingExp,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token issued in the future (iat)")]
    IssuedInFuture,
    #[error("issuer does not match jwt.issuer, names no [[jwt.issuers]] entry, or is not accepted on this route")]
    Issuer,
    #[error("audience does not match jwt.audience")]
    Audience,
    #[error("a claim has the wrong type, or the user claim is missing")]
    Claims,
    #[error("token has been revoked")]
    Revoked,
}

impl AuthError {
    /// Every variant, so the metrics can show each reason at zero from the start.
    pub const ALL: [AuthError; 17] = [
        AuthError::Missing,
        AuthError::TooLarge,
        AuthError::Malformed,
        AuthError::Algorithm,
        AuthError::ForbiddenHeader,
        AuthError::UnknownKey,
        AuthError::NestedRequired,
        AuthError::Signature,
        AuthError::Decrypt,
        AuthError::Expired,
        AuthError::MissingExp,
        AuthError::NotYetValid,
        AuthError::IssuedInFuture,
        AuthError::Issuer,
        AuthError::Audience,
        AuthError::Claims,
        AuthError::Revoked,
    ];

    /// Short stable name, used as the metrics label and in logs.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::TooLarge => "too_large",
            AuthError::Malformed => "malformed",
            AuthError::Algorithm => "algorithm",
            AuthError::ForbiddenHeader => "forbidden_header",
            AuthError::UnknownKey => "unknown_key",
            AuthError::NestedRequired => "nested_required",
            AuthError::Signature => "signature",
            AuthError::Decrypt => "decrypt",
            AuthError::Expired => "expired",
            AuthError::MissingExp => "missing_exp",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::IssuedInFuture => "issued_in_future",
            AuthError::Issuer => "issuer",
            AuthError::Audience => "audience",
            AuthError::Claims => "claims",
            AuthError::Revoked => "revoked",
        }
    }

    /// What the client is told in `error_description`: enough to fix an honest mistake
    /// (expired, wrong audience), nothing that helps forge a token.
    pub fn description(self) -> &'static str {
        match self {
            AuthError::Missing => "bearer token required",
            AuthError::TooLarge => "token too large",
            AuthError::Expired => "token expired",
            AuthError::NotYetValid => "token not yet valid",
            AuthError::Revoked => "token revoked",
            AuthError::Issuer | AuthError::Audience => "token not intended for this service",
            AuthError::MissingExp | AuthError::IssuedInFuture | AuthError::Claims => {
                "token claims are invalid"
            }
            AuthError::Malformed
            | AuthError::Algorithm
            | AuthError::ForbiddenHeader
            | AuthError::UnknownKey
            | AuthError::Signature
            | AuthError::NestedRequired
            | AuthError::Decrypt => "token is invalid",
        }
    }
}

impl jws::Verified {
    /// The token's revocation identity, what `revocation` checks (`ids` is the leaf both
    /// sides share, so neither imports the other).
    pub fn ids(&self) -> crate::ids::TokenIds {
        crate::ids::TokenIds {
            token: self.token_key,
            subject: self.sub_key,
            iat: self.iat,
        }
    }
}
