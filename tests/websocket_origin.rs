//! Cross-site WebSocket hijacking, outside-in: in cookie mode an upgrade authenticated by the
//! access cookie must carry an `Origin` naming the gateway itself or a `[cors]` origin (403
//! otherwise, and with no `Origin` at all); an upgrade with `Authorization` is not affected.
//! Real TLS, a real WebSocket client (tokio-tungstenite) and the real echo upstream.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{hmac_key_toml, users_toml, Reply, Setup, TestGateway, Upstream};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const ACCESS: &str = "__Host-portcullis";
const APP: &str = "https://app.example.com";

async fn env(cors: bool) -> (TestGateway, Upstream) {
    let setup = Setup::new();
    setup.write("users.toml", users_toml(&[("u-1", "alice", "wonderland")]));
    let up = Upstream::start().await;
    let cors = if cors {
        "[cors]\nallowed_origins = [\"https://app.example.com\"]\nallow_credentials = true\n"
    } else {
        ""
    };
    let config = format!(
        "{{listen}}\n{}\n[revocation]\nstore = \"memory\"\n\n[signin]\nusers_file = \"users.toml\"\nsigning_kid = \"hs1\"\n\n[signin.cookies]\nenabled = true\n\n{cors}\n[[routes]]\nprefix = \"/\"\nupstream = \"{up}\"\nauth = \"jwt\"\n",
        hmac_key_toml("hs1", "HS256", SECRET),
        up = up.url()
    );
    (setup.start(&config).await, up)
}

/// Log in by cookie; returns the access token (the cookie's value).
async fn access_cookie(gw: &TestGateway) -> String {
    let req = gw
        .h1()
        .post(gw.url("/auth/login"))
        .json(&json!({ "username": "alice", "password": "wonderland" }));
    let r: Reply = TestGateway::reply(req.send().await.expect("login")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .find_map(|(_, v)| v.strip_prefix(&format!("{ACCESS}=")))
        .and_then(|v| v.split(';').next())
        .expect("access cookie")
        .to_owned()
}

/// Open `/ws` with `headers`; the handshake status (101 on success).
async fn upgrade(gw: &TestGateway, headers: &[(&str, String)]) -> u16 {
    let url = format!("wss://localhost:{}/ws", gw.port());
    let mut req = url.into_client_request().expect("ws request");
    for (n, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().expect("header"),
        );
    }
    let tls = gw.tls_stream(&[b"http/1.1"]).await;
    match tokio::time::timeout(
        common::CLIENT_TIMEOUT,
        tokio_tungstenite::client_async(req, tls),
    )
    .await
    .expect("handshake in time")
    {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("handshake: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_upgrades_need_an_allowed_origin() {
    let (gw, up) = env(false).await;
    let cookie = format!("{ACCESS}={}", access_cookie(&gw).await);
    let own = format!("https://localhost:{}", gw.port());
    let c = || ("cookie", cookie.clone());

    // A sibling origin of the same site, another port, and no Origin at all: refused.
    for origin in [
        Some(format!("https://evil.localhost:{}", gw.port())),
        Some("https://localhost:1".to_owned()),
        Some("null".to_owned()),
        None,
    ] {
        let mut h = vec![c()];
        if let Some(o) = &origin {
            h.push(("origin", o.clone()));
        }
        assert_eq!(upgrade(&gw, &h).await, 403, "{origin:?}");
    }
    assert_eq!(
        up.hits(),
        0,
        "a refused upgrade must not reach the upstream"
    );
    // The gateway's own origin: accepted.
    assert_eq!(upgrade(&gw, &[c(), ("origin", own)]).await, 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cors_origin_may_upgrade_by_cookie_and_authorization_is_unaffected() {
    let (gw, _up) = env(true).await;
    let token = access_cookie(&gw).await;
    let cookie = format!("{ACCESS}={token}");
    assert_eq!(
        upgrade(&gw, &[("cookie", cookie.clone()), ("origin", APP.into())]).await,
        101
    );
    assert_eq!(
        upgrade(
            &gw,
            &[
                ("cookie", cookie),
                ("origin", "https://evil.example".into())
            ]
        )
        .await,
        403
    );
    // Authorization: not a cookie flow, no Origin rule.
    let bearer = ("authorization", format!("Bearer {token}"));
    assert_eq!(upgrade(&gw, std::slice::from_ref(&bearer)).await, 101);
    assert_eq!(
        upgrade(&gw, &[bearer, ("origin", "https://evil.example".into())]).await,
        101
    );
}

/// No cookie mode; `/sub` takes the token in the subprotocol, `/q` in the query, `/plain`
/// neither.
async fn token_env() -> (TestGateway, Upstream) {
    let setup = Setup::new();
    let up = Upstream::start().await;
    let config = format!(
        "{{listen}}\n{}\n[revocation]\nstore = \"memory\"\n\n[[routes]]\nprefix = \"/sub\"\nupstream = \"{up}\"\nauth = \"jwt\"\nwebsocket_token = \"subprotocol\"\n\n[[routes]]\nprefix = \"/q\"\nupstream = \"{up}\"\nauth = \"jwt\"\nwebsocket_token = \"query\"\n\n[[routes]]\nprefix = \"/plain\"\nupstream = \"{up}\"\nauth = \"jwt\"\n",
        hmac_key_toml("hs1", "HS256", SECRET),
        up = up.url()
    );
    (setup.start(&config).await, up)
}

fn hs_token() -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    common::tokens::sign(
        jsonwebtoken::Algorithm::HS256,
        Some("hs1"),
        &key,
        &common::tokens::claims("u-1"),
    )
}

/// Open `path` with `headers`; the handshake status and the answered subprotocol.
async fn open(gw: &TestGateway, path: &str, headers: &[(&str, String)]) -> (u16, Option<String>) {
    let url = format!("wss://localhost:{}{path}", gw.port());
    let mut req = url.into_client_request().expect("ws request");
    for (n, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().expect("header"),
        );
    }
    let tls = gw.tls_stream(&[b"http/1.1"]).await;
    let resp = match tokio::time::timeout(
        common::CLIENT_TIMEOUT,
        tokio_tungstenite::client_async(req, tls),
    )
    .await
    .expect("handshake in time")
    {
        Ok((_, resp)) => resp.map(|_| ()),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.map(|_| ()),
        Err(e) => panic!("handshake: {e}"),
    };
    let proto = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status().as_u16(), proto)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_token_authenticates_and_is_not_forwarded() {
    let (gw, up) = token_env().await;
    let t = hs_token();
    let offer = ("sec-websocket-protocol", format!("bearer, {t}"));
    let (status, proto) = open(&gw, "/sub/ws", std::slice::from_ref(&offer)).await;
    assert_eq!(status, 101);
    assert_eq!(proto.as_deref(), Some("bearer"));
    let seen = &up.requests()[0];
    assert!(
        seen.headers.iter().all(|(_, v)| !v.contains(&t)),
        "token forwarded: {seen:?}"
    );
    // A bad token in the subprotocol is refused; a route without the opt-in ignores it.
    let bad = ("sec-websocket-protocol", "bearer, not.a.token".to_owned());
    assert_eq!(open(&gw, "/sub/ws", &[bad]).await.0, 401);
    assert_eq!(open(&gw, "/plain/ws", &[offer]).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_token_authenticates_and_is_removed_from_the_url() {
    let (gw, up) = token_env().await;
    let t = hs_token();
    let (status, _) = open(&gw, &format!("/q/ws?room=7&access_token={t}"), &[]).await;
    assert_eq!(status, 101);
    let seen = &up.requests()[0];
    assert_eq!(seen.query.as_deref(), Some("room=7"), "{seen:?}");
    assert!(
        seen.headers.iter().all(|(_, v)| !v.contains(&t)),
        "{seen:?}"
    );
    // Only on upgrades, and only where the route opts in.
    let r = gw.get(&format!("/q/x?access_token={t}"), None).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        open(&gw, &format!("/plain/ws?access_token={t}"), &[])
            .await
            .0,
        401
    );
}
