//! Weak-key checks run on every key at load, whatever its source (`[[jwt.keys]]`,
//! `jwt.jwks_file`, `[jwt.jwks]`, `[[jwt.decryption_keys]]`, `jwt.decryption_jwks_file`):
//! a key that fails one is refused with an error naming it, never loaded with a warning.
//!
//! - HMAC secrets at least as long as the hash (RFC 7518 section 3.2), never empty;
//! - RSA moduli of at least 2048 bits (RFC 7518 sections 3.3 and 4.2), an odd public
//!   exponent above 1, and no ROCA fingerprint (CVE-2017-15361);
//! - EC public keys on the curve their algorithm names (a P-256 point is no ES384 key).

use aws_lc_rs::signature::{self, ParsedPublicKey};

pub use super::key_error::KeyError;

/// Smallest RSA modulus accepted, in bits (RFC 7518 sections 3.3, 4.2 and 4.3).
pub const MIN_RSA_BITS: usize = 2048;

/// The curves a JOSE EC key may be on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// The JWK `crv` name (RFC 7518 section 6.2.1.1).
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    pub fn from_name(crv: &str) -> Option<Curve> {
        match crv {
            "P-256" => Some(Curve::P256),
            "P-384" => Some(Curve::P384),
            "P-521" => Some(Curve::P521),
            _ => None,
        }
    }

    /// Length of one coordinate in bytes (RFC 7518 section 6.2.1.2: full length, zero-padded).
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    fn ecdsa(self) -> &'static signature::EcdsaVerificationAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
            Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED,
        }
    }
}

/// An HMAC secret for a hash of `hash_len` bytes: RFC 7518 section 3.2 requires a key of
/// at least the hash size. An empty one lets anyone compute the MAC; a short one is
/// within reach of brute force when it is a password.
pub fn hmac_secret(alg: &str, hash_len: usize, secret: &[u8]) -> Result<(), KeyError> {
    if secret.is_empty() {
        return Err(KeyError::EmptySecret { alg: alg.into() });
    }
    if secret.len() < hash_len {
        return Err(KeyError::ShortSecret {
            alg: alg.into(),
            len: secret.len(),
            min: hash_len,
        });
    }
    Ok(())
}

/// An RSA public key given as big-endian modulus and exponent.
pub fn rsa_public(n: &[u8], e: &[u8]) -> Result<(), KeyError> {
    let n = strip_zeros(n);
    let e = strip_zeros(e);
    let bits = bit_len(n);
    if bits < MIN_RSA_BITS {
        return Err(KeyError::RsaModulusTooSmall {
            bits,
            min: MIN_RSA_BITS,
        });
    }
    if n.last().is_none_or(|b| b & 1 == 0) {
        return Err(KeyError::RsaModulusEven);
    }
    // e = 1 makes "encryption" the identity; an even e is not invertible mod phi(n).
    match e {
        [] | [1] => return Err(KeyError::RsaExponentTrivial),
        [.., last] if last & 1 == 0 => return Err(KeyError::RsaExponentEven),
        _ => {}
    }
    if e.len() > 8 {
        return Err(KeyError::RsaExponentTooLong);
    }
    if roca_fingerprint(n) {
        return Err(KeyError::Roca);
    }
    Ok(())
}

/// An RSA public key in a PEM `PUBLIC KEY` (SPKI) or `RSA PUBLIC KEY` (PKCS#1) block.
pub fn rsa_public_pem(pem: &[u8]) -> Result<(), KeyError> {
    let (n, e) = rsa_components_from_pem(pem)?;
    rsa_public(&n, &e)
}

/// Modulus and exponent (big-endian) of a PEM RSA public key.
pub fn rsa_components_from_pem(pem: &[u8]) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
    use rsa::pkcs1::der::Decode;
    use rsa::pkcs8::der::pem;
    let (label, der) = pem::decode_vec(pem).map_err(KeyError::NotPem)?;
    let pkcs1_der = match label {
        "RSA PUBLIC KEY" => der,
        "PUBLIC KEY" => {
            let spki = rsa::pkcs8::spki::SubjectPublicKeyInfoRef::from_der(&der)
                .map_err(KeyError::NotSpki)?;
            if spki.algorithm.oid != rsa::pkcs1::ALGORITHM_OID {
                return Err(KeyError::NotRsa {
                    oid: spki.algorithm.oid.to_string(),
                });
            }
            spki.subject_public_key.raw_bytes().to_vec()
        }
        other => {
            return Err(KeyError::NotRsaPublicLabel {
                label: other.into(),
            })
        }
    };
    let key = rsa::pkcs1::RsaPublicKey::from_der(&pkcs1_der).map_err(KeyError::NotPkcs1)?;
    Ok((
        key.modulus.as_bytes().to_vec(),
        key.public_exponent.as_bytes().to_vec(),
    ))
}

/// An EC public point (`04 || x || y`) or SubjectPublicKeyInfo DER, which must be a valid
/// point on `curve`; returns the parsed key, ready to verify with.
pub fn ec_public(curve: Curve, key: &[u8]) -> Result<ParsedPublicKey, KeyError> {
    ParsedPublicKey::new(curve.ecdsa(), key).map_err(|_| KeyError::NotOnCurve {
        curve: curve.name(),
    })
}

/// An EC public key in a PEM `PUBLIC KEY` block, on `curve`.
pub fn ec_public_pem(curve: Curve, pem: &[u8]) -> Result<ParsedPublicKey, KeyError> {
    use rsa::pkcs8::der::pem;
    let (label, der) = pem::decode_vec(pem).map_err(KeyError::NotPem)?;
    if label != "PUBLIC KEY" {
        return Err(KeyError::NotPublicKeyLabel {
            label: label.into(),
        });
    }
    ec_public(curve, &der)
}

/// The ROCA fingerprint test published with CVE-2017-15361 (Nemec et al., "The Return of
/// Coppersmith's Attack", CCS 2017, and its `roca-detect` tool): primes made by the flawed
/// library are `k * M + (65537^a mod M)` with `M` the product of small primes, so for each
/// small prime `p` the modulus mod `p` lies in the subgroup of (Z/pZ)* generated by 65537.
/// A random modulus passes all 38 tests with probability about 2^-154; any that fails one is
/// not ROCA.
pub fn roca_fingerprint(n: &[u8]) -> bool {
    ROCA_PRIMES.iter().all(|&p| {
        let r = mod_small(n, p);
        r != 0 && in_subgroup_of_65537(r, p)
    })
}

/// The small primes of the published detector (`roca/detect.py`, `self.primes`).
const ROCA_PRIMES: [u32; 38] = [
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
    101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
];

/// The generator of the fingerprint subgroups.
const ROCA_GENERATOR: u32 = 65537;

/// Is `r` a power of 65537 modulo `p`? (The detector stores these subgroups as bit masks;
/// walking the powers computes the same sets.)
fn in_subgroup_of_65537(r: u32, p: u32) -> bool {
    let g = ROCA_GENERATOR % p;
    let mut x = 1u32;
    for _ in 0..p {
        if x == r {
            return true;
        }
        x = x * g % p;
        if x == 1 {
            return false;
        }
    }
    false
}

/// `n mod p` for a big-endian `n`.
fn mod_small(n: &[u8], p: u32) -> u32 {
    n.iter().fold(0u32, |r, &b| ((r << 8) | u32::from(b)) % p)
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

fn bit_len(n: &[u8]) -> usize {
    match n.first() {
        None => 0,
        Some(&top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The detector's bit masks for the first primes (`roca/detect.py`, `self.prints`):
    /// bit r is set when r is in the subgroup generated by 65537 mod p.
    #[test]
    fn subgroups_match_the_published_detector_masks() {
        let published: [(u32, u128); 10] = [
            (3, 6),
            (5, 30),
            (7, 126),
            (11, 1026),
            (13, 5658),
            (17, 107286),
            (19, 199410),
            (23, 8388606),
            (29, 536870910),
            (31, 2147483646),
        ];
        for (p, mask) in published {
            let ours: u128 = (1..p)
                .filter(|&r| in_subgroup_of_65537(r, p))
                .map(|r| 1u128 << r)
                .sum();
            assert_eq!(ours, mask, "p = {p}");
        }
    }

    /// A modulus built the way the flawed library built its primes is flagged; honest
    /// ones (and small perturbations) are not.
    #[test]
    fn roca_shaped_modulus_is_flagged() {
        let n = roca_shaped(2048);
        assert!(roca_fingerprint(&n));
        let mut m = n.clone();
        let last = m.len() - 1;
        m[last] ^= 2;
        assert!(!roca_fingerprint(&m));
        assert!(rsa_public(&n, &[1, 0, 1])
            .unwrap_err()
            .to_string()
            .to_string()
            .contains("ROCA"));
    }

    /// A 2048-bit odd number congruent to 65537^a mod every detector prime: a product of two
    /// ROCA primes has exactly this property, which is all the fingerprint looks at.
    pub(crate) fn roca_shaped(bits: usize) -> Vec<u8> {
        // Chinese remainder by brute force over the big-endian number: start from 2^(bits-1)
        // and fix each residue by adding multiples of the product of the primes so far.
        use rsa::BigUint;
        let mut n = BigUint::from(1u8) << (bits - 1);
        let mut modulus = BigUint::from(1u8);
        for (i, &p) in ROCA_PRIMES.iter().enumerate() {
            // Target residue: 65537^(i + 3) mod p, a subgroup member.
            let g = ROCA_GENERATOR % p;
            let target = (0..i + 3).fold(1u32, |x, _| x * g % p);
            let mut k = 0u32;
            loop {
                let cand = &n + &modulus * BigUint::from(k);
                if mod_small(&cand.to_bytes_be(), p) == target {
                    n = cand;
                    break;
                }
                k += 1;
            }
            modulus *= BigUint::from(p);
        }
        // Odd: M is odd, so adding M flips the parity while keeping every residue.
        if n.to_bytes_be().last().is_some_and(|b| b & 1 == 0) {
            n += &modulus;
        }
        n.to_bytes_be()
    }

    #[test]
    fn rsa_size_and_exponent_rules() {
        let mut n = vec![0xC5u8; 256];
        n[255] |= 1;
        assert!(rsa_public(&n, &[1, 0, 1]).is_ok());
        assert!(rsa_public(&n[1..], &[1, 0, 1])
            .unwrap_err()
            .to_string()
            .contains("2040 bits"));
        assert!(rsa_public(&n, &[1])
            .unwrap_err()
            .to_string()
            .contains("0 or 1"));
        assert!(rsa_public(&n, &[0, 0])
            .unwrap_err()
            .to_string()
            .contains("0 or 1"));
        assert!(rsa_public(&n, &[1, 0, 2])
            .unwrap_err()
            .to_string()
            .contains("even"));
        let mut even = n.clone();
        even[255] &= 0xFE;
        assert!(rsa_public(&even, &[3])
            .unwrap_err()
            .to_string()
            .contains("even"));
    }

    #[test]
    fn hmac_lengths() {
        assert!(hmac_secret("HS256", 32, b"")
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(hmac_secret("HS256", 32, b"abc")
            .unwrap_err()
            .to_string()
            .contains("3 bytes"));
        assert!(hmac_secret("HS256", 32, &[7; 32]).is_ok());
        assert!(hmac_secret("HS512", 64, &[7; 63]).is_err());
    }
}
