//! JOSE formats and key material (RFC 7515-7518): signing and verification keys and their
//! strength checks ([`keys`]), published key sets ([`jwks`]) and where an OpenID issuer
//! publishes them ([`discovery`]), and the JWE codec ([`jwe`]).
//!
//! A shared leaf: `config` decodes and checks keys here at load time (so a weak key stops the
//! start), `auth` verifies tokens with them and `signin` signs with them. It imports nothing
//! of the gateway.

pub mod discovery;
pub mod jwe;
pub mod jwks;
pub mod key_checks;
mod key_error;
pub mod keys;
