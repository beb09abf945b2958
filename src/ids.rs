//! Revocation keys: what the dictionary, the log, Redis and the sessions store instead of a
//! `jti` or `sub`. A leaf, so `auth` (which computes a token's key) and `revocation` (which
//! stores it) never import each other.

use sha2::{Digest, Sha256};

/// What the dictionary stores instead of a `jti` or `sub`: the first 16 bytes of its SHA-256.
///
/// A client picks its own `jti`, so storing the string would let one long `jti` cost
/// unbounded memory; a fixed digest costs 16 bytes whatever the input, is the same on every
/// instance and across restarts (so it can go in the log and in Redis), and 128 bits keep
/// accidental collisions out of reach at any realistic number of revocations.
pub type Key = [u8; 16];

/// The dictionary key for a `jti` or `sub` value (raw bytes, as they appear in the claim).
pub fn digest(s: &[u8]) -> Key {
    let full = Sha256::digest(s);
    let mut key = [0u8; 16];
    key.copy_from_slice(&full[..16]);
    key
}

/// Lower-case hex of a key, for admin listings, paging cursors and log lines.
pub fn key_to_hex(key: &Key) -> String {
    crate::hex::encode(key)
}

/// Parses 32 hex digits (either case) back into a key; `None` for anything else.
pub fn key_from_hex(s: &str) -> Option<Key> {
    crate::hex::decode::<16>(s)
}

/// The revocation identity of one verified token: what `is_revoked` needs, whatever kind of
/// token it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenIds {
    /// `digest(jti)`, or of the whole token when it has no `jti`.
    pub token: Key,
    /// `digest(sub)`, when the token names a subject.
    pub subject: Option<Key>,
    /// `iat`, when present (a subject revocation covers tokens issued before it).
    pub iat: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_the_sha256_prefix_and_hex_round_trips() {
        // SHA-256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 ...
        let k = digest(b"abc");
        assert_eq!(key_to_hex(&k), "ba7816bf8f01cfea414140de5dae2223");
        assert_eq!(key_from_hex(&key_to_hex(&k)), Some(k));
        assert_eq!(key_from_hex("BA7816BF8F01CFEA414140DE5DAE2223"), Some(k));
        assert_eq!(key_from_hex("ba78"), None);
    }
}
