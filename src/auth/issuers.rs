//! Several token issuers (`[[jwt.issuers]]`): which one a token's `iss` selects, and what its
//! tokens are checked against.
//!
//! The selection happens before any signature check, on the `iss` of the still unverified
//! payload, and only the selected issuer's keys are tried: a key of issuer A never verifies a
//! token naming issuer B, whatever `kid` the token carries. Reading `iss` early is safe
//! because it only narrows the keys; the signature check that follows decides.
//!
//! Issuer numbers are what a verified token records ([`super::jws::Verified::issuer`]) and what
//! a route's `issuers` list is compiled to: [`DEFAULT`] is the `[jwt]` issuer (its
//! `[[jwt.keys]]`, `[jwt.jwks]` and decryption keys), `i + 1` the `i`-th `[[jwt.issuers]]`.

use std::sync::Arc;

use super::jwks::Refresher;

/// The issuer number of the `[jwt]` issuer (named `default` in route lists).
pub const DEFAULT: u8 = crate::routing::IssuerSet::DEFAULT;

/// One `[[jwt.issuers]]` entry, ready for the request path.
#[derive(Debug)]
pub struct Issuer {
    pub name: String,
    /// The exact `iss` of its tokens.
    pub iss: String,
    pub audience: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway: u64,
    pub user_claim: String,
    /// Its published key set (discovery or `jwks_url`), empty until a first fetch succeeds.
    pub keys: Arc<Refresher>,
}

/// Every `[[jwt.issuers]]` entry, in file order.
#[derive(Debug, Default)]
pub struct Issuers {
    pub list: Vec<Issuer>,
}

impl Issuers {
    /// The issuer whose `iss` is exactly `iss`, with its number.
    pub fn find(&self, iss: &str) -> Option<(u8, &Issuer)> {
        self.list
            .iter()
            .position(|i| i.iss == iss)
            .and_then(|p| Some((u8::try_from(p + 1).ok()?, &self.list[p])))
    }
}

/// What the claims of one issuer's tokens are checked against.
#[derive(Debug, Clone, Copy)]
pub(super) struct Expect<'a> {
    /// The issuer number recorded in the verified token.
    pub number: u8,
    pub iss: IssCheck<'a>,
    pub audience: &'a [String],
    pub leeway: u64,
    pub user_claim: &'a str,
}

/// How `iss` is checked once the signature verified.
#[derive(Debug, Clone, Copy)]
pub(super) enum IssCheck<'a> {
    /// Any or no `iss` (one issuer, `[jwt] issuer` unset: today's behaviour).
    Any,
    /// Exactly this `iss`.
    Exact(&'a str),
    /// The `[jwt]` issuer without `[jwt] issuer` beside `[[jwt.issuers]]`: only tokens
    /// without `iss` (such as the gateway's own sign-in tokens then); a token naming an
    /// issuer must name a configured one.
    Absent,
}

impl IssCheck<'_> {
    /// Whether a token carrying `iss` (absent: `None`) passes.
    pub fn admits(&self, iss: Option<&str>) -> bool {
        match (self, iss) {
            (IssCheck::Any, _) => true,
            (IssCheck::Exact(want), Some(iss)) => iss == *want,
            (IssCheck::Exact(_), None) => false,
            (IssCheck::Absent, iss) => iss.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::jwks::{FetchOptions, Source};
    use std::time::Duration;

    fn issuer(name: &str, iss: &str) -> Issuer {
        let keys = Refresher::new(
            Source::File("/nonexistent".into()),
            FetchOptions::default(),
            Vec::new(),
            Duration::from_secs(60),
            Duration::from_secs(1),
        );
        Issuer {
            name: name.into(),
            iss: iss.into(),
            audience: Vec::new(),
            leeway: 30,
            user_claim: "sub".into(),
            keys,
        }
    }

    #[test]
    fn selection_is_exact_and_numbers_start_after_default() {
        let set = Issuers {
            list: vec![
                issuer("a", "https://a.example/"),
                issuer("b", "https://b.example/"),
            ],
        };
        assert_eq!(set.find("https://b.example/").map(|(n, _)| n), Some(2));
        assert_eq!(set.find("https://a.example/").map(|(n, _)| n), Some(1));
        assert!(set.find("https://a.example").is_none());
        assert!(set.find("HTTPS://A.EXAMPLE/").is_none());
        assert!(IssCheck::Absent.admits(None));
        assert!(!IssCheck::Absent.admits(Some("https://c.example/")));
        assert!(!IssCheck::Exact("x").admits(None));
        assert!(IssCheck::Any.admits(Some("anything")));
    }
}
