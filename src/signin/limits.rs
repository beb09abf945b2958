//! Login rate limits: per client IP and per username (GCRA through `governor`), checked
//! before any password work. A refused attempt gets 429 with `Retry-After`.
//!
//! Both limits count every attempt, successful or not: counting failures only would need
//! the hash verified first, which is the cost the limit exists to cap.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Keys kept per limiter before idle ones are dropped (bounds memory under a spray of
/// usernames or addresses).
const RETAIN_THRESHOLD: usize = 10_000;
/// Longest username used as a limiter key, in bytes (longer ones share a key by prefix).
const MAX_USERNAME_KEY: usize = 256;

/// The two login limiters; clones share state.
#[derive(Clone)]
pub struct LoginLimits {
    ip: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    user: Arc<DefaultKeyedRateLimiter<String>>,
}

impl std::fmt::Debug for LoginLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginLimits").finish_non_exhaustive()
    }
}

impl LoginLimits {
    pub fn new(ip_per_minute: u32, user_per_minute: u32) -> Self {
        let quota = |n: u32| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        LoginLimits {
            ip: Arc::new(RateLimiter::keyed(quota(ip_per_minute))),
            user: Arc::new(RateLimiter::keyed(quota(user_per_minute))),
        }
    }

    /// Take one attempt from `ip`'s and `username`'s budgets. `Err(wait)`: refused, retry
    /// after `wait`.
    pub fn check(&self, ip: IpAddr, username: &str) -> Result<(), Duration> {
        let clock = DefaultClock::default();
        if self.ip.len() > RETAIN_THRESHOLD {
            self.ip.retain_recent();
        }
        if let Err(not_until) = self.ip.check_key(&ip) {
            return Err(not_until.wait_time_from(clock.now()));
        }
        if self.user.len() > RETAIN_THRESHOLD {
            self.user.retain_recent();
        }
        let mut end = username.len().min(MAX_USERNAME_KEY);
        while !username.is_char_boundary(end) {
            end -= 1;
        }
        if let Err(not_until) = self.user.check_key(&username[..end].to_owned()) {
            return Err(not_until.wait_time_from(clock.now()));
        }
        Ok(())
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_limit_is_independent_of_ip_and_other_users() {
        let l = LoginLimits::new(100, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!(l.check(a, "alice").is_ok());
        assert!(l.check(b, "alice").is_ok());
        let wait = l.check(a, "alice").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(l.check(a, "bob").is_ok());
    }

    #[test]
    fn per_ip_limit_covers_every_username() {
        let l = LoginLimits::new(2, 100);
        let a: IpAddr = [10, 0, 0, 1].into();
        assert!(l.check(a, "u1").is_ok());
        assert!(l.check(a, "u2").is_ok());
        assert!(l.check(a, "u3").is_err());
        assert!(l.check([10, 0, 0, 2].into(), "u3").is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(29_001)), 30);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
