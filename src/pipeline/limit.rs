//! The rate-limit step: spend one request of the route's budget for this user, app or
//! client IP. Runs after authentication, revocation and authorization, so a request refused
//! by those (401, 403) costs nothing and an unauthenticated flood never reaches a bucket.

use std::sync::Arc;

use http::HeaderValue;

use super::error::GatewayError;
use super::forward::ConnInfo;
use crate::ratelimit::{Decision, Limiter, Per};

/// One limiter per route index (`None`: the route has no `rate_limit`).
pub fn limiters(routes: &crate::routing::RouteTable) -> Vec<Option<Arc<Limiter>>> {
    routes
        .iter()
        .map(|r| r.rate_limit.map(|spec| Arc::new(Limiter::new(spec))))
        .collect()
}

/// Admit the request or refuse it with 429. `user` and `app` are what earlier steps
/// established; config guarantees the one the limit is keyed on exists on this route.
pub fn check(
    limiter: Option<&Limiter>,
    user: Option<&HeaderValue>,
    app: Option<&HeaderValue>,
    conn: &ConnInfo,
) -> Result<(), GatewayError> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    let ip;
    let key: &[u8] = match limiter.spec.per {
        Per::User => user.map(HeaderValue::as_bytes).unwrap_or_default(),
        Per::App => app.map(HeaderValue::as_bytes).unwrap_or_default(),
        Per::Ip => {
            ip = conn.peer.ip().to_canonical().to_string();
            ip.as_bytes()
        }
    };
    match limiter.check(key) {
        Decision::Allow => Ok(()),
        Decision::Deny { retry_after_secs } => Err(GatewayError::RateLimited {
            spec: limiter.spec,
            retry_after_secs,
        }),
    }
}
