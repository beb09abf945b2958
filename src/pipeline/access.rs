//! The authorization step: a verified, unrevoked token against the route's
//! `[[routes.allow]]` rules. Runs after revocation, so a revoked token is always 401 and
//! never 403 (a 403 would tell its holder the token still verifies).

use http::Method;

use super::error::GatewayError;
use crate::auth::jws::Verified;
use crate::routing::Route;

/// Let the request through when the route has no rules or one rule allows it. Rejects with
/// 403 `insufficient_scope` (RFC 6750 section 3.1).
pub fn authorize(route: &Route, method: &Method, v: &Verified) -> Result<(), GatewayError> {
    let Some(rules) = &route.allow else {
        return Ok(());
    };
    rules
        .check(method, v.grants.as_deref())
        .map_err(GatewayError::Forbidden)
}
