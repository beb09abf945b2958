//! What `[[routes.allow]]` and `rate_limit` add to a request: a route with three allow rules
//! and a rate limit that is never hit, against a bare route, on the same HS256 token.
//!
//! - `verify/*`: the token check as on a cache miss (with rules the validator also extracts
//!   the token's scopes, roles and rule claims);
//! - `per-request/*`: what every request pays once the token is verified (cache hit): the
//!   rule check and one bucket.
//!
//! `cargo bench --bench access_policy`

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use jsonwebtoken::{EncodingKey, Header};
use portcullis::auth::jws::Validator;
use portcullis::ratelimit::Limiter;
use portcullis::Config;

const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";

fn config() -> Config {
    let text = format!(
        r#"
[listen]
addr = "127.0.0.1:0"

[jwt]
roles_claim = "realm_access.roles"

[[jwt.keys]]
kid = "hs"
alg = "HS256"
secret = "{SECRET}"

[[routes]]
prefix = "/bare"
upstream = "http://127.0.0.1:8080"
auth = "jwt"

[[routes]]
prefix = "/orders"
upstream = "http://127.0.0.1:8080"
auth = "jwt"
rate_limit = {{ per = "user", rate = "1000000/s", burst = 1000000 }}

[[routes.allow]]
methods = ["GET", "HEAD"]
scopes = ["orders:read"]

[[routes.allow]]
methods = ["POST", "PUT", "DELETE"]
roles = ["admin", "ops"]
claims = {{ tenant = "acme", email_verified = true, "org.tier" = "gold" }}

[[routes.allow]]
methods = ["PATCH"]
scopes = ["orders:write", "orders:patch"]
"#
    );
    Config::from_toml(&text, Path::new(".")).expect("bench config")
}

fn validator(config: &mut Config, with_rules: bool) -> Validator {
    Validator {
        keys: std::mem::take(&mut config.jwt.keys),
        issuer: None,
        audience: Vec::new(),
        leeway: 30,
        require_exp: true,
        max_token_bytes: 8192,
        user_claim: "sub".into(),
        extra_claims: Vec::new(),
        jwe: None,
        jwks: None,
        grants: if with_rules {
            config.grants.clone()
        } else {
            None
        },
        issuers: None,
    }
}

fn bench(c: &mut Criterion) {
    let now = portcullis::pipeline::unix_now();
    let claims = serde_json::json!({
        "sub": "user-12345", "iat": now, "exp": now + 3600,
        "scope": "profile orders:read",
        "realm_access": { "roles": ["ops"] },
        "tenant": "acme", "email_verified": true, "org": { "tier": "gold" },
    });
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("hs".into());
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign");

    let mut cfg = config();
    let bare = validator(&mut cfg, false);
    let mut cfg2 = config();
    let ruled = validator(&mut cfg2, true);
    let route = cfg2
        .routes
        .iter()
        .find(|r| r.prefix == "/orders")
        .expect("route")
        .clone();
    let rules = route.allow.clone().expect("rules");
    let limiter = Limiter::new(route.rate_limit.expect("limit"));

    let mut g = c.benchmark_group("access_policy");
    g.bench_function("verify/bare", |b| {
        b.iter(|| bare.verify(&token, now).expect("verifies"))
    });
    g.bench_function("verify/three-rules", |b| {
        b.iter(|| ruled.verify(&token, now).expect("verifies"))
    });
    let v = ruled.verify(&token, now).expect("verifies");
    g.bench_function("per-request/three-rules+limit", |b| {
        b.iter(|| {
            rules
                .check(&Method::POST, v.grants.as_deref())
                .expect("allowed");
            limiter.check(v.user.as_bytes())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
