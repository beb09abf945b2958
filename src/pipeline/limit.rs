//! The rate-limit step: spend one request of the route's budget for this user, app or
//! client IP. Runs after authentication, revocation and authorization, so a request refused
//! by those (401, 403) costs nothing and an unauthenticated flood never reaches a bucket.
//!
//! In cluster mode the budget is the fleet's, in Redis ([`Fleet`]); when Redis does not
//! answer, the route's local limiter decides (the full limit on each instance) and the
//! request is counted in `portcullis_rate_limit_fallbacks_total`: a limit never fails closed.

use std::sync::Arc;

use http::HeaderValue;

use super::error::GatewayError;
use super::forward::ConnInfo;
use crate::ratelimit::{Decision, Fleet, Limiter, Per};
use crate::telemetry::metrics::Metrics;

/// One limiter per route index (`None`: the route has no `rate_limit`).
pub fn limiters(routes: &crate::routing::RouteTable) -> Vec<Option<Arc<Limiter>>> {
    routes
        .iter()
        .map(|r| r.rate_limit.map(|spec| Arc::new(Limiter::new(spec))))
        .collect()
}

/// Where a limited route's budget lives: the route's local limiter, and in cluster mode the
/// fleet's buckets (named by `route`) consulted first.
pub struct Budget<'a> {
    pub local: &'a Limiter,
    pub fleet: Option<&'a Fleet>,
    pub route: &'a str,
    pub metrics: &'a Metrics,
}

/// Admit the request or refuse it with 429. `user` and `app` are what earlier steps
/// established; config guarantees the one the limit is keyed on exists on this route.
/// A route without a limit (`None`) costs one branch and never touches Redis.
pub async fn check(
    budget: Option<Budget<'_>>,
    user: Option<&HeaderValue>,
    app: Option<&HeaderValue>,
    conn: &ConnInfo,
) -> Result<(), GatewayError> {
    let Some(budget) = budget else {
        return Ok(());
    };
    let limiter = budget.local;
    let ip;
    let key: &[u8] = match limiter.spec.per {
        Per::User => user.map(HeaderValue::as_bytes).unwrap_or_default(),
        Per::App => app.map(HeaderValue::as_bytes).unwrap_or_default(),
        Per::Ip => {
            ip = conn.peer.ip().to_canonical().to_string();
            ip.as_bytes()
        }
    };
    let fleet = match budget.fleet {
        Some(fleet) => {
            let decided = fleet.check(budget.route, &limiter.spec, key).await;
            if decided.is_none() {
                budget.metrics.rate_limit_fallbacks.inc();
            }
            decided
        }
        None => None,
    };
    match fleet.unwrap_or_else(|| limiter.check(key)) {
        Decision::Allow => Ok(()),
        Decision::Deny { retry_after_secs } => Err(GatewayError::RateLimited {
            spec: limiter.spec,
            retry_after_secs,
        }),
    }
}
