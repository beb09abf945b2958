//! Per-route rate limits (`[[routes]] rate_limit = { per, rate, burst }`): the typed spec
//! config builds ([`RateSpec`]), the local token buckets that enforce it ([`Limiter`]), and
//! in cluster mode the fleet-wide buckets in Redis ([`Fleet`]), with the local ones as the
//! fallback when Redis does not answer.
//!
//! A shared leaf: config builds the spec, the pipeline owns one [`Limiter`] per limited
//! route (and the gateway one [`Fleet`] in cluster mode) and asks after authentication and
//! authorization, so a request refused earlier (401, 403) never spends budget.

pub mod cluster;
pub mod local;

pub use cluster::Fleet;
pub use local::{Decision, Limiter};

use std::time::Duration;

/// Whose budget a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// The user claim of the verified token.
    User,
    /// The API-key app id.
    App,
    /// The client IP.
    Ip,
}

impl Per {
    pub fn as_str(self) -> &'static str {
        match self {
            Per::User => "user",
            Per::App => "app",
            Per::Ip => "ip",
        }
    }
}

/// `rate = "N/s|N/m|N/h"` and `burst`, validated (all non-zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub per: Per,
    /// Requests per window.
    pub quota: u64,
    /// The window: 1 s, 60 s or 3600 s.
    pub window: Duration,
    /// Requests allowed at once from a full bucket.
    pub burst: u64,
}

impl RateSpec {
    /// Parse `"N/s"`, `"N/m"` or `"N/h"` into `(N, window)`; `None` when it is not one.
    pub fn parse_rate(text: &str) -> Option<(u64, Duration)> {
        let (n, unit) = text.trim().split_once('/')?;
        let n: u64 = n.trim().parse().ok().filter(|n| *n > 0)?;
        let window = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return None,
        };
        Some((n, window))
    }

    /// The default burst: the per-second equivalent of the rate, at least 1.
    pub fn default_burst(quota: u64, window: Duration) -> u64 {
        quota.div_ceil(window.as_secs().max(1)).max(1)
    }

    /// Nanoseconds between two requests at the steady rate (the emission interval).
    pub fn interval_nanos(&self) -> u64 {
        (self.window.as_nanos() / u128::from(self.quota.max(1))).max(1) as u64
    }

    /// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers, structured-field form).
    pub fn policy_header(&self) -> String {
        format!("\"route\";q={};w={}", self.quota, self.window.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(
            RateSpec::parse_rate("100/s"),
            Some((100, Duration::from_secs(1)))
        );
        assert_eq!(
            RateSpec::parse_rate("5/m"),
            Some((5, Duration::from_secs(60)))
        );
        assert_eq!(
            RateSpec::parse_rate("7/h"),
            Some((7, Duration::from_secs(3600)))
        );
        for bad in ["0/s", "10", "10/d", "x/s", "-1/s", "1.5/s", ""] {
            assert_eq!(RateSpec::parse_rate(bad), None, "{bad}");
        }
    }

    #[test]
    fn default_burst_is_the_per_second_rate() {
        assert_eq!(RateSpec::default_burst(100, Duration::from_secs(1)), 100);
        assert_eq!(RateSpec::default_burst(120, Duration::from_secs(60)), 2);
        assert_eq!(RateSpec::default_burst(10, Duration::from_secs(60)), 1);
        assert_eq!(RateSpec::default_burst(3, Duration::from_secs(3600)), 1);
    }
}
