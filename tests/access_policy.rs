//! `[[routes.allow]]` outside in, over TLS: scopes from a `scope` string or an `scp` array,
//! roles from a dotted `roles_claim` path, exact claims with a quoted dotted key, rules per
//! method, the exact 403 (`WWW-Authenticate: Bearer error="insufficient_scope"`, `scope`,
//! JSON body), revocation answered before authorization, missing or mistyped claims that
//! never match, and rules that change with a reload.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

mod common;

use common::tokens::{self, HS256_SECRET};
use common::{hmac_key_toml, Reply, Setup, TestGateway, Upstream};
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef0123456789";

fn config(rules: &str) -> String {
    format!(
        r#"{{listen}}
[jwt]
roles_claim = "realm_access.roles"

{key}

[admin]
addr = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[revocation]
store = "memory"

[[routes]]
prefix = "/orders"
upstream = "{{up}}"
auth = "jwt"
{rules}

[[routes]]
prefix = "/open"
upstream = "{{up}}"
auth = "jwt"
"#,
        key = hmac_key_toml("hs", "HS256", HS256_SECRET)
    )
}

const RULES: &str = r#"
[[routes.allow]]
methods = ["GET", "HEAD"]
scopes = ["orders:read"]

[[routes.allow]]
methods = ["POST", "PUT", "DELETE"]
roles = ["admin", "ops"]
claims = { tenant = "acme", email_verified = true, "org.tier" = "gold" }
"#;

async fn start(up: &Upstream, rules: &str) -> TestGateway {
    Setup::new().var("up", up.url()).start(&config(rules)).await
}

fn token(extra: Value) -> String {
    let mut c = tokens::claims("alice");
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    tokens::hs256(Some("hs"), &c)
}

async fn call(gw: &TestGateway, method: &str, path: &str, token: &str) -> Reply {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let resp = gw
        .h1()
        .request(m, gw.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    TestGateway::reply(resp).await
}

fn writer_claims() -> Value {
    json!({
        "realm_access": { "roles": ["ops"] },
        "tenant": "acme",
        "email_verified": true,
        "org": { "tier": "gold" },
    })
}

fn assert_forbidden(r: &Reply, challenge: &str, what: &str) {
    assert_eq!(r.status, 403, "{what}: {r:?}");
    assert_eq!(r.header("www-authenticate"), Some(challenge), "{what}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    let body = r.json();
    assert_eq!(body["error"], "insufficient_scope", "{what}: {body}");
    assert!(body["error_description"].is_string(), "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_string_or_scp_array_lets_a_read_through() {
    let up = Upstream::start().await;
    let gw = start(&up, RULES).await;
    for (what, claims) in [
        ("scope string", json!({ "scope": "profile orders:read" })),
        ("scp array", json!({ "scp": ["orders:read", "x"] })),
        ("scp string", json!({ "scp": "x orders:read" })),
    ] {
        let r = call(&gw, "GET", "/orders/1", &token(claims)).await;
        assert_eq!(r.status, 200, "{what}: {r:?}");
        assert_eq!(r.echo().path, "/orders/1");
        let r = call(
            &gw,
            "HEAD",
            "/orders/1",
            &token(json!({ "scp": ["orders:read"] })),
        )
        .await;
        assert_eq!(r.status, 200, "{what} HEAD");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_rule_is_403_with_the_exact_challenge_and_body_and_no_upstream_call() {
    let up = Upstream::start().await;
    let gw = start(&up, RULES).await;
    let hits = up.hits();

    // GET rules name a scope: the challenge says which.
    let r = call(
        &gw,
        "GET",
        "/orders/1",
        &token(json!({ "scope": "orders:write" })),
    )
    .await;
    assert_forbidden(
        &r,
        r#"Bearer error="insufficient_scope", scope="orders:read""#,
        "GET without the scope",
    );
    // A read scope does not let a write through: POST rules name no scope.
    let r = call(
        &gw,
        "POST",
        "/orders",
        &token(json!({ "scope": "orders:read" })),
    )
    .await;
    assert_forbidden(
        &r,
        r#"Bearer error="insufficient_scope""#,
        "POST with a read scope",
    );
    // No rule at all for PATCH.
    let r = call(&gw, "PATCH", "/orders/1", &token(writer_claims())).await;
    assert_forbidden(&r, r#"Bearer error="insufficient_scope""#, "PATCH");
    assert_eq!(up.hits(), hits, "a forbidden request reached the upstream");

    // A route without rules lets every authenticated request through.
    let r = call(&gw, "PATCH", "/open/x", &token(json!({}))).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_on_a_dotted_path_and_exact_claims_for_writes() {
    let up = Upstream::start().await;
    let gw = start(&up, RULES).await;
    for m in ["POST", "PUT", "DELETE"] {
        let r = call(&gw, m, "/orders/1", &token(writer_claims())).await;
        assert_eq!(r.status, 200, "{m} by an ops writer: {r:?}");
    }
    let mut admin_string = writer_claims();
    admin_string["realm_access"]["roles"] = json!("admin");
    let r = call(&gw, "POST", "/orders", &token(admin_string)).await;
    assert_eq!(r.status, 200, "a single-string role");

    // Each condition of the rule must hold; a missing or mistyped claim never matches.
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "other role",
            Box::new(|c| c["realm_access"]["roles"] = json!(["reader"])),
        ),
        (
            "roles at the top level",
            Box::new(|c| {
                c["roles"] = json!(["admin"]);
                c["realm_access"] = json!({});
            }),
        ),
        (
            "roles an object",
            Box::new(|c| c["realm_access"]["roles"] = json!({"admin": true})),
        ),
        ("other tenant", Box::new(|c| c["tenant"] = json!("evil"))),
        (
            "tenant missing",
            Box::new(|c| {
                if let Some(o) = c.as_object_mut() {
                    o.remove("tenant");
                }
            }),
        ),
        (
            "email_verified a string",
            Box::new(|c| c["email_verified"] = json!("true")),
        ),
        (
            "email_verified false",
            Box::new(|c| c["email_verified"] = json!(false)),
        ),
        (
            "tier at the top level, dotted",
            Box::new(|c| {
                c["org"] = json!({});
                c["org.tier"] = json!("gold");
            }),
        ),
        ("org a string", Box::new(|c| c["org"] = json!("gold"))),
    ];
    for (what, edit) in cases {
        let mut c = writer_claims();
        edit(&mut c);
        let r = call(&gw, "POST", "/orders", &token(c)).await;
        assert_forbidden(&r, r#"Bearer error="insufficient_scope""#, what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_401_never_403() {
    let up = Upstream::start().await;
    let gw = start(&up, RULES).await;
    let mut c = json!({ "scope": "nothing", "jti": "revoked-1" });
    let t = token(c.take());
    let r = call(&gw, "GET", "/orders/1", &t).await;
    assert_eq!(r.status, 403, "before the revocation");

    let admin = gw.admin_url().expect("admin listener");
    let resp = reqwest::Client::new()
        .post(format!("{admin}/revocations"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "jti": "revoked-1", "exp": tokens::now() + 600 }))
        .send()
        .await
        .expect("revoke");
    assert_eq!(resp.status().as_u16(), 201);

    let r = call(&gw, "GET", "/orders/1", &t).await;
    assert_eq!(r.status, 401, "revoked and forbidden: revoked wins: {r:?}");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(challenge.contains("invalid_token"), "{challenge}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_change_with_a_reload() {
    let up = Upstream::start().await;
    let setup = Setup::new().var("up", up.url());
    let path = setup.write_config(&config(RULES));
    let stricter = setup.render(&config(&RULES.replace(
        r#"scopes = ["orders:read"]"#,
        r#"scopes = ["orders:read", "orders:list"]"#,
    )));
    let loaded = portcullis::Config::load(&path).expect("test config is valid");
    let gw = setup.start_with(loaded).await;
    let t = token(json!({ "scope": "orders:read" }));
    assert_eq!(call(&gw, "GET", "/orders/1", &t).await.status, 200);

    std::fs::write(&path, stricter).expect("write config");
    gw.reload().await.expect("reload");

    let r = call(&gw, "GET", "/orders/1", &t).await;
    assert_forbidden(
        &r,
        r#"Bearer error="insufficient_scope", scope="orders:read orders:list""#,
        "after the reload",
    );
    let both = token(json!({ "scope": "orders:list orders:read" }));
    assert_eq!(call(&gw, "GET", "/orders/1", &both).await.status, 200);
}
