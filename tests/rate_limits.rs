//! `rate_limit = { per, rate, burst }` outside in, over TLS: a user's burst is admitted and
//! the next request is 429 with `Retry-After`, `RateLimit-Policy` and `RateLimit`, without
//! reaching the upstream; other users keep their own budget; requests refused before the
//! limit (401, 403) spend nothing; `per = "ip"` on a public route.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::tokens::{self, HS256_SECRET};
use common::{hmac_key_toml, Setup, TestGateway, Upstream};
use serde_json::json;

fn config() -> String {
    format!(
        r#"{{listen}}
{key}

[[routes]]
prefix = "/api"
upstream = "{{up}}"
auth = "jwt"
rate_limit = {{ per = "user", rate = "2/m", burst = 2 }}

[[routes.allow]]
scopes = ["api"]

[[routes]]
prefix = "/open"
upstream = "{{up}}"
auth = "public"
rate_limit = {{ per = "ip", rate = "1/h" }}
"#,
        key = hmac_key_toml("hs", "HS256", HS256_SECRET)
    )
}

async fn start(up: &Upstream) -> TestGateway {
    Setup::new().var("up", up.url()).start(&config()).await
}

fn token(sub: &str, scope: &str) -> String {
    let mut c = tokens::claims(sub);
    c["scope"] = json!(scope);
    tokens::hs256(Some("hs"), &c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_is_429_with_the_rate_limit_fields_and_no_upstream_call() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let alice = token("alice", "api");
    for i in 0..2 {
        let r = gw.get("/api/x", Some(&alice)).await;
        assert_eq!(r.status, 200, "request {i} within the burst");
    }
    let hits = up.hits();
    let r = gw.get("/api/x", Some(&alice)).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(up.hits(), hits, "a limited request reached the upstream");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("integer seconds");
    // 2 per minute: the next request fits in about 30 s.
    assert!((1..=30).contains(&retry), "{retry}");
    assert_eq!(r.header("ratelimit-policy"), Some(r#""route";q=2;w=60"#));
    assert_eq!(
        r.header("ratelimit").map(str::to_owned),
        Some(format!(r#""route";r=0;t={retry}"#))
    );
    assert_eq!(r.json()["error"], "rate_limited");

    // Another user has a budget of their own.
    assert_eq!(
        gw.get("/api/x", Some(&token("bob", "api"))).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_limit_spend_no_budget() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let forbidden = token("carol", "other");
    for _ in 0..5 {
        assert_eq!(gw.get("/api/x", Some(&forbidden)).await.status, 403);
        assert_eq!(gw.get("/api/x", Some("not-a-token")).await.status, 401);
        assert_eq!(gw.get("/api/x", None).await.status, 401);
    }
    let good = token("carol", "api");
    for i in 0..2 {
        assert_eq!(
            gw.get("/api/x", Some(&good)).await.status,
            200,
            "request {i}: the refused ones spent carol's budget"
        );
    }
    assert_eq!(gw.get("/api/x", Some(&good)).await.status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_on_a_public_route() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    assert_eq!(gw.get("/open/x", None).await.status, 200);
    let r = gw.get("/open/x", None).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("ratelimit-policy"), Some(r#""route";q=1;w=3600"#));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 3000, "{retry}");
}
