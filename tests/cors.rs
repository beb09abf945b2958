//! `[cors]` outside-in, over real TLS with a real upstream: the gateway answers preflights
//! itself (no token, not proxied), refuses a disallowed one with 403 and no
//! `Access-Control-Allow-*`, marks every answer to an allowed origin readable (its own 401,
//! 403, 429 and 502 too), replaces the upstream's own `Access-Control-*`, leaves a
//! `cors = false` route alone, covers the sign-in endpoints, and refuses `*` with credentials.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::tokens::{self, HS256_SECRET};
use common::{hmac_key_toml, upstream::dead_addr, users_toml, Reply, Setup, TestGateway, Upstream};
use portcullis::Config;

const APP: &str = "https://app.example.com";
const EVIL: &str = "https://evil.example.com";

const CORS: &str = r#"
[cors]
allowed_origins = ["https://app.example.com"]
allowed_methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
allowed_headers = ["authorization", "content-type", "x-csrf-token"]
expose_headers = ["x-request-id"]
allow_credentials = true
max_age = "10m"
"#;

struct Env {
    gw: TestGateway,
    up: Upstream,
}

/// Sign-in (alice/wonderland, one login attempt per minute per IP), a JWT route `/api`, a
/// public route `/internal` with `cors = false`, a JWT route `/down` to a dead upstream.
async fn env(cors: &str) -> Env {
    let setup = Setup::new();
    setup.write("users.toml", users_toml(&[("u-1", "alice", "wonderland")]));
    let up = Upstream::start().await;
    let config = format!(
        "{{listen}}\n{key}\n[revocation]\nstore = \"memory\"\n\n[signin]\nusers_file = \"users.toml\"\nsigning_kid = \"hs\"\nip_attempts_per_minute = 1\n\n{cors}\n\n[[routes]]\nprefix = \"/api\"\nupstream = \"{up}\"\nauth = \"jwt\"\n\n[[routes]]\nprefix = \"/internal\"\nupstream = \"{up}\"\nauth = \"public\"\ncors = false\n\n[[routes]]\nprefix = \"/down\"\nupstream = \"http://{dead}\"\nauth = \"public\"\n",
        key = hmac_key_toml("hs", "HS256", HS256_SECRET),
        up = up.url(),
        dead = dead_addr(),
    );
    let gw = setup.start(&config).await;
    Env { gw, up }
}

fn token() -> String {
    tokens::hs256(Some("hs"), &tokens::claims("u-1"))
}

async fn send(gw: &TestGateway, req: reqwest::RequestBuilder) -> Reply {
    let _ = gw;
    TestGateway::reply(req.send().await.expect("request")).await
}

async fn preflight(
    gw: &TestGateway,
    path: &str,
    origin: &str,
    method: &str,
    headers: Option<&str>,
) -> Reply {
    let mut req = gw
        .h1()
        .request(reqwest::Method::OPTIONS, gw.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method);
    if let Some(h) = headers {
        req = req.header("access-control-request-headers", h);
    }
    send(gw, req).await
}

fn access_control(r: &Reply) -> Vec<&(String, String)> {
    r.headers
        .iter()
        .filter(|(n, _)| n.starts_with("access-control-allow-"))
        .collect()
}

fn varies_on_origin(r: &Reply) -> bool {
    r.headers.iter().filter(|(n, _)| n == "vary").any(|(_, v)| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("origin"))
    })
}

/// The headers every answer to the allowed origin must carry.
fn assert_readable(r: &Reply) {
    assert_eq!(r.header("access-control-allow-origin"), Some(APP), "{r:?}");
    assert_eq!(
        r.header("access-control-allow-credentials"),
        Some("true"),
        "{r:?}"
    );
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-request-id"),
        "{r:?}"
    );
    assert!(varies_on_origin(r), "no Vary: Origin: {r:?}");
}

#[tokio::test]
async fn allowed_preflight_is_answered_by_the_gateway_without_a_token() {
    let Env { gw, up } = env(CORS).await;
    let r = preflight(
        &gw,
        "/api/items",
        APP,
        "DELETE",
        Some("authorization, content-type"),
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, HEAD, POST, PUT, PATCH, DELETE")
    );
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("authorization, content-type, x-csrf-token")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert!(varies_on_origin(&r), "{r:?}");
    assert_eq!(up.hits(), 0, "a preflight must not be proxied");
}

#[tokio::test]
async fn disallowed_preflights_get_403_without_allow_headers() {
    let Env { gw, up } = env(CORS).await;
    for (origin, method, headers) in [
        (EVIL, "GET", None),
        ("null", "GET", None),
        (APP, "TRACE", None),
        (APP, "POST", Some("x-secret")),
    ] {
        let r = preflight(&gw, "/api/items", origin, method, headers).await;
        assert_eq!(r.status, 403, "{origin} {method} {headers:?}: {r:?}");
        assert!(access_control(&r).is_empty(), "{r:?}");
        assert_eq!(r.json()["error"], "cors_refused");
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn the_gateways_own_errors_are_readable_by_the_allowed_origin() {
    let Env { gw, .. } = env(CORS).await;
    // 401: no token.
    let r = send(&gw, gw.h1().get(gw.url("/api/items")).header("origin", APP)).await;
    assert_eq!(r.status, 401);
    assert_readable(&r);
    assert_eq!(r.json()["error"], "unauthorized");
    // 502: the upstream is down.
    let r = send(&gw, gw.h1().get(gw.url("/down/x")).header("origin", APP)).await;
    assert_eq!(r.status, 502);
    assert_readable(&r);
    // 404: no route.
    let r = send(&gw, gw.h1().get(gw.url("/nowhere")).header("origin", APP)).await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_readable(&r);
    // A disallowed origin gets no permission to read, but the answer still varies on Origin.
    let r = send(
        &gw,
        gw.h1().get(gw.url("/api/items")).header("origin", EVIL),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.header("access-control-allow-origin").is_none(), "{r:?}");
    assert!(varies_on_origin(&r));
}

#[tokio::test]
async fn upstream_access_control_headers_are_replaced() {
    let Env { gw, .. } = env(CORS).await;
    let req = gw
        .h1()
        .get(gw.url("/api/upstream-cors"))
        .bearer_auth(token())
        .header("origin", APP);
    let r = send(&gw, req).await;
    assert_eq!(r.status, 200);
    assert_readable(&r);
    assert!(r.header("access-control-allow-methods").is_none(), "{r:?}");
    // The upstream's `*` does not leak to an origin the gateway does not allow.
    let req = gw
        .h1()
        .get(gw.url("/api/upstream-cors"))
        .bearer_auth(token())
        .header("origin", EVIL);
    let r = send(&gw, req).await;
    assert_eq!(r.status, 200);
    assert!(access_control(&r).is_empty(), "{r:?}");
}

#[tokio::test]
async fn a_route_with_cors_off_is_left_to_the_upstream() {
    let Env { gw, up } = env(CORS).await;
    let r = preflight(&gw, "/internal/upstream-cors", APP, "GET", None).await;
    assert_eq!(r.status, 200, "the preflight goes upstream: {r:?}");
    assert_eq!(up.requests()[0].method, "OPTIONS");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, POST, DELETE")
    );
    assert!(!varies_on_origin(&r));
}

#[tokio::test]
async fn the_signin_endpoints_are_covered() {
    let Env { gw, .. } = env(CORS).await;
    let r = preflight(&gw, "/auth/login", APP, "POST", Some("content-type")).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    let login = |pw: &str| {
        gw.h1()
            .post(gw.url("/auth/login"))
            .header("origin", APP)
            .json(&serde_json::json!({"username": "alice", "password": pw}))
    };
    let r = send(&gw, login("wrong")).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_readable(&r);
    // One attempt per minute: the second is rate-limited, and the page can read that too.
    let r = send(&gw, login("wonderland")).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_readable(&r);
}

#[tokio::test]
async fn without_cors_nothing_changes() {
    let Env { gw, up } = env("").await;
    let r = preflight(&gw, "/api/items", APP, "GET", None).await;
    assert_eq!(r.status, 401);
    assert!(access_control(&r).is_empty());
    let r = send(
        &gw,
        gw.h1()
            .get(gw.url("/api/upstream-cors"))
            .bearer_auth(token())
            .header("origin", APP),
    )
    .await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(up.hits(), 1);
}

#[test]
fn star_with_credentials_is_refused_at_load() {
    let text = "[listen]\naddr = \"127.0.0.1:0\"\n[cors]\nallowed_origins = [\"*\"]\nallow_credentials = true\n";
    let e = Config::from_toml(text, std::path::Path::new(".")).unwrap_err();
    assert!(e.to_string().contains("cors.allowed_origins"), "{e}");
    let ok = "[listen]\naddr = \"127.0.0.1:0\"\n[cors]\nallowed_origins = [\"*\"]\n";
    // Without credentials `*` is accepted (whatever else this minimal file lacks).
    if let Err(e) = Config::from_toml(ok, std::path::Path::new(".")) {
        assert!(!e.to_string().contains("cors"), "{e}");
    }
}
