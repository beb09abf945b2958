//! Admin authentication: the bearer token compared in constant time, and a penalty box that
//! refuses a client for a while after repeated failures.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::header::AUTHORIZATION;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::bearer;

/// Failed admin authentications allowed per client IP per minute before the penalty box.
pub const FAILURES_PER_MINUTE: u32 = 10;
/// How long a client stays refused once it exceeded the failure rate.
pub const PENALTY: Duration = Duration::from_secs(60);

pub enum Outcome {
    /// The credential's label (the actor the audit trail records).
    Allowed(Arc<str>),
    Denied,
    /// Refused without looking at the token; retry after this many seconds.
    Throttled(u64),
}

pub struct AdminAuth {
    /// SHA-256 of each token with its label: comparing digests keeps the comparison
    /// constant-time and independent of the token's length.
    tokens: Vec<([u8; 32], Arc<str>)>,
    failures: DefaultKeyedRateLimiter<IpAddr>,
    penalty: DashMap<IpAddr, Instant>,
}

impl AdminAuth {
    /// One token, labelled `admin`.
    pub fn new(token: &str) -> Self {
        Self::labelled([("admin", token)])
    }

    /// Several tokens, each with the label the audit trail records as the actor.
    pub fn labelled<'a>(tokens: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let quota =
            Quota::per_minute(NonZeroU32::new(FAILURES_PER_MINUTE).unwrap_or(NonZeroU32::MIN));
        AdminAuth {
            tokens: tokens
                .into_iter()
                .map(|(label, t)| (Sha256::digest(t.as_bytes()).into(), Arc::from(label)))
                .collect(),
            failures: RateLimiter::keyed(quota),
            penalty: DashMap::new(),
        }
    }

    /// Check the request's admin token; count a failure against `ip`.
    pub fn check(&self, headers: &HeaderMap, ip: IpAddr) -> Outcome {
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|v| bearer::parse(v.as_bytes(), 4096).ok());
        self.check_token(presented, ip)
    }

    /// Whether a credential with this label is configured now (a console session signed in
    /// with a credential that a reload removed ends with it).
    pub fn has_label(&self, label: &str) -> bool {
        self.tokens.iter().any(|(_, l)| &**l == label)
    }

    /// Check a presented admin token (the console's sign-in form sends it in its body);
    /// count a failure against `ip`, through the same penalty box as the bearer header.
    pub fn check_token(&self, presented: Option<&str>, ip: IpAddr) -> Outcome {
        let now = Instant::now();
        if let Some(until) = self.penalty.get(&ip).map(|e| *e) {
            if now < until {
                return Outcome::Throttled((until - now).as_secs().max(1));
            }
            self.penalty.remove(&ip);
        }
        if let Some(t) = presented.filter(|t| t.len() <= 4096) {
            let d: [u8; 32] = Sha256::digest(t.as_bytes()).into();
            // Compare against every token, so the time taken does not say which one matched.
            let mut found = None;
            for (digest, label) in &self.tokens {
                if bool::from(d.ct_eq(digest)) {
                    found = Some(label.clone());
                }
            }
            if let Some(label) = found {
                return Outcome::Allowed(label);
            }
        }
        if self.failures.check_key(&ip).is_err() {
            self.penalty.insert(ip, now + PENALTY);
            self.failures.retain_recent();
            tracing::warn!(%ip, "admin authentication failing repeatedly; refusing this client for {PENALTY:?}");
            return Outcome::Throttled(PENALTY.as_secs());
        }
        Outcome::Denied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn right_token_passes_wrong_fails() {
        let a = AdminAuth::new("correct-horse-battery-staple");
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(matches!(
            a.check(&headers("Bearer correct-horse-battery-staple"), ip),
            Outcome::Allowed(l) if &*l == "admin"
        ));
        assert!(matches!(
            a.check(&headers("Bearer correct-horse-battery-stapl"), ip),
            Outcome::Denied
        ));
        assert!(matches!(a.check(&HeaderMap::new(), ip), Outcome::Denied));
    }

    #[test]
    fn brute_force_is_throttled_even_with_the_right_token() {
        let a = AdminAuth::new("correct-horse-battery-staple");
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let mut throttled = false;
        for _ in 0..(FAILURES_PER_MINUTE + 2) {
            if matches!(a.check(&headers("Bearer guess"), ip), Outcome::Throttled(_)) {
                throttled = true;
            }
        }
        assert!(throttled);
        assert!(matches!(
            a.check(&headers("Bearer correct-horse-battery-staple"), ip),
            Outcome::Throttled(_)
        ));
        let other: IpAddr = "127.0.0.3".parse().unwrap();
        assert!(matches!(
            a.check(&headers("Bearer correct-horse-battery-staple"), other),
            Outcome::Allowed(_)
        ));
    }

    #[test]
    fn each_labelled_token_names_its_actor() {
        let a = AdminAuth::labelled([
            ("admin", "correct-horse-battery-staple"),
            ("oncall-bob", "another-long-admin-token-1"),
        ]);
        let ip: IpAddr = "127.0.0.4".parse().unwrap();
        assert!(matches!(
            a.check(&headers("Bearer another-long-admin-token-1"), ip),
            Outcome::Allowed(l) if &*l == "oncall-bob"
        ));
        assert!(matches!(
            a.check(&headers("Bearer correct-horse-battery-staple"), ip),
            Outcome::Allowed(l) if &*l == "admin"
        ));
    }
}
