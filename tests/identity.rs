//! Identity headers: whatever a client sends as `x-user-id` (any casing, any number of copies,
//! `_` for `-`) or as a mapped claim header never reaches the upstream; on a jwt route the
//! upstream sees exactly the verified token's values, on a public route none at all. The
//! spoofed headers go on the wire byte for byte (raw HTTP/1.1 over TLS), so casing and
//! duplicates are what the gateway really parses.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::tokens::{self, HS256_SECRET};
use common::{hmac_key_toml, Echo, Env, Setup, TestGateway};
use serde_json::json;

/// Every spelling of the identity headers a client might try.
const SPOOFS: &[&str] = &[
    "X-User-Id: admin",
    "x-user-id: root",
    "X-USER-ID: root2",
    "x-UsEr-iD: root3",
    "x_user_id: underscore1",
    "X_User_Id: underscore2",
    "X-User_Id: underscore3",
    "X-User-Roles: admin,superuser",
    "x_user_roles: admin",
    "X-User-Email: admin@evil.example",
];

/// Identity headers from `sub`, `roles` and `email`; `/public` public, the rest jwt.
async fn env() -> Env {
    let config = format!(
        r#"{{listen}}
{}
[identity]
user_header = "x-user-id"
user_claim = "sub"

[identity.claims]
"x-user-roles" = "roles"
"x-user-email" = "email"

[[routes]]
prefix = "/public"
upstream = "{{up}}"
auth = "public"

[[routes]]
prefix = "/"
upstream = "{{up}}"
auth = "jwt"
"#,
        hmac_key_toml("hs", "HS256", HS256_SECRET)
    );
    Env::start(Setup::new(), &config).await
}

/// Every identity-header spelling the upstream received, as (name, value).
fn identity_headers(echo: &Echo) -> Vec<(String, String)> {
    ["x-user-id", "x-user-roles", "x-user-email"]
        .iter()
        .flat_map(|h| echo.spellings_of(h))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_are_replaced_by_the_token_on_a_jwt_route() {
    let Env { gw, .. } = env().await;
    let mut claims = tokens::claims("alice");
    claims["roles"] = json!(["reader", "writer"]);
    let token = tokens::hs256(Some("hs"), &claims);

    let r = gw.raw_get("/api/me", Some(&token), SPOOFS).await;
    let echo = r.echo();
    assert_eq!(echo.path, "/api/me");
    assert_eq!(echo.spellings_of("x-user-id"), [("x-user-id", "alice")]);
    assert_eq!(
        echo.spellings_of("x-user-roles"),
        [("x-user-roles", "reader,writer")]
    );
    // The token has no email claim: the spoofed header is gone and nothing replaces it.
    assert_eq!(echo.spellings_of("x-user-email"), []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_route_forwards_no_identity_header() {
    let Env { gw, up } = env().await;
    let token = tokens::hs256(Some("hs"), &tokens::claims("alice"));

    // Without a token, and with one: a public route authenticates nobody.
    for t in [None, Some(token.as_str())] {
        let r = gw.raw_get("/public/page", t, SPOOFS).await;
        let echo = r.echo();
        assert_eq!(echo.path, "/public/page");
        assert_eq!(identity_headers(&echo), [], "token: {}", t.is_some());
    }
    assert_eq!(up.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_over_http2_is_stripped() {
    let Env { gw, .. } = env().await;
    let token = tokens::hs256(Some("hs"), &tokens::claims("alice"));
    let send = |path: &str, token: Option<&str>| {
        let mut req = gw
            .h2()
            .get(gw.url(path))
            .header("x-user-id", "admin")
            .header("x_user_id", "admin2")
            .header("x-user-roles", "admin");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };

    let r = TestGateway::reply(send("/api/me", Some(&token)).await.expect("h2")).await;
    assert_eq!(r.version, http::Version::HTTP_2);
    let echo = r.echo();
    assert_eq!(
        identity_headers(&echo),
        [("x-user-id".to_owned(), "alice".to_owned())]
    );

    let r = TestGateway::reply(send("/public/page", None).await.expect("h2")).await;
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(identity_headers(&r.echo()), []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_become_header_values() {
    let Env { gw, up } = env().await;
    let cases = [
        (json!(["a", "b", "c"]), Some("a,b,c")),
        (json!(["solo"]), Some("solo")),
        (json!("one-role"), Some("one-role")),
        (json!([1, true, "x"]), Some("1,true,x")),
        (json!(null), None),
    ];
    for (roles, want) in cases {
        let mut claims = tokens::claims("alice");
        claims["roles"] = roles.clone();
        claims["email"] = json!("alice@example.test");
        let token = tokens::hs256(Some("hs"), &claims);
        let echo = gw.get("/api/me", Some(&token)).await.echo();
        assert_eq!(echo.one("x-user-id"), Some("alice"), "{roles}");
        assert_eq!(echo.one("x-user-roles"), want, "roles = {roles}");
        assert_eq!(echo.one("x-user-email"), Some("alice@example.test"));
    }

    // A claim that cannot be a header value (an object, a newline) refuses the token
    // rather than forwarding a partial identity.
    for roles in [json!({"admin": true}), json!("a\r\nx-user-id: root")] {
        let mut claims = tokens::claims("alice");
        claims["roles"] = roles.clone();
        let before = up.hits();
        let r = gw
            .get("/api/me", Some(&tokens::hs256(Some("hs"), &claims)))
            .await;
        assert_eq!(r.status, 401, "roles = {roles}: {}", r.text());
        assert_eq!(up.hits(), before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_replaced_by_what_the_gateway_saw() {
    let Env { gw, .. } = env().await;
    let spoofs = [
        "X-Forwarded-For: 6.6.6.6",
        "x-forwarded-for: 10.0.0.1, 10.0.0.2",
        "X-Forwarded-Proto: http",
        "X-Forwarded-Host: evil.example",
        "Forwarded: for=6.6.6.6;proto=http",
        "X-Real-IP: 6.6.6.6",
    ];
    for path in ["/public/page", "/api/me"] {
        let token = tokens::hs256(Some("hs"), &tokens::claims("alice"));
        let echo = gw.raw_get(path, Some(&token), &spoofs).await.echo();
        assert_eq!(echo.all("x-forwarded-for"), ["127.0.0.1"], "{path}");
        assert_eq!(echo.all("x-forwarded-proto"), ["https"], "{path}");
        assert_eq!(echo.all("x-forwarded-host"), ["localhost"], "{path}");
        assert_eq!(echo.all("forwarded"), Vec::<&str>::new(), "{path}");
        assert_eq!(echo.all("x-real-ip"), Vec::<&str>::new(), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_header_lines_cannot_smuggle_a_user_header() {
    let Env { gw, .. } = env().await;
    let token = tokens::hs256(Some("hs"), &tokens::claims("alice"));
    let cases: [&[&str]; 3] = [
        // obs-fold: a continuation line that looks like a header.
        &["X-Note: hello", " x-user-id: admin"],
        // Whitespace before the colon (RFC 9112 section 5.1 says reject).
        &["X-User-Id : admin"],
        &["X-User-Id\t: admin"],
    ];
    for extra in cases {
        for path in ["/api/me", "/public/page"] {
            let r = gw.raw_get(path, Some(&token), extra).await;
            if r.status == 200 {
                let want: &[(String, String)] = if path == "/api/me" {
                    &[("x-user-id".to_owned(), "alice".to_owned())]
                } else {
                    &[]
                };
                assert_eq!(identity_headers(&r.echo()), want, "{extra:?} on {path}");
            } else {
                assert_eq!(r.status, 400, "{extra:?} on {path}: {}", r.text());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_header_cannot_remove_the_injected_identity() {
    let Env { gw, up } = env().await;
    let mut claims = tokens::claims("alice");
    claims["roles"] = json!(["reader"]);
    let token = tokens::hs256(Some("hs"), &claims);
    // RFC 9110 section 7.6.1 lets a client name any header as hop-by-hop; naming the identity
    // headers must not make the gateway drop the values it injected itself.
    for connection in [
        "Connection: x-user-id",
        "Connection: X-User-Roles",
        "Connection: keep-alive, x-user-id, x-user-roles",
    ] {
        let before = up.hits();
        let r = gw.raw_get("/api/me", Some(&token), &[connection]).await;
        if r.status == 400 {
            assert_eq!(up.hits(), before, "{connection}: refused but forwarded");
            continue;
        }
        let echo = r.echo();
        assert_eq!(
            echo.spellings_of("x-user-id"),
            [("x-user-id", "alice")],
            "{connection}"
        );
        assert_eq!(
            echo.spellings_of("x-user-roles"),
            [("x-user-roles", "reader")],
            "{connection}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_in_trailers_do_not_reach_the_upstream() {
    let Env { gw, .. } = env().await;
    let token = tokens::hs256(Some("hs"), &tokens::claims("alice"));
    for path in ["/api/me", "/public/page"] {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
             Transfer-Encoding: chunked\r\nTrailer: x-user-id, x_user_id, x-user-roles\r\n\
             Connection: close\r\n\r\n\
             5\r\nhello\r\n0\r\nx-user-id: admin\r\nX_User_Id: admin\r\nX-User-Roles: admin\r\n\r\n"
        );
        let echo = gw.raw(&req).await.echo();
        assert_eq!(echo.body_len, 5, "{path}");
        let spoofed: Vec<_> = echo
            .trailers
            .iter()
            .filter(|(n, _)| n.replace('_', "-").starts_with("x-user-"))
            .collect();
        assert_eq!(spoofed, Vec::<&(String, String)>::new(), "{path}");
        let want: &[(String, String)] = if path == "/api/me" {
            &[("x-user-id".to_owned(), "alice".to_owned())]
        } else {
            &[]
        };
        assert_eq!(identity_headers(&echo), want, "{path}");
    }
}
