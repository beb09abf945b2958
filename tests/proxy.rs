//! Forwarding: routing on the normalised path (no prefix bypass), longest prefix and host
//! routes, bodies streamed intact both ways, HTTP/2, WebSocket tunnels, upstream failures
//! mapped to 502/504 without taking the gateway down, hop-by-hop headers dropped.
//!
//! The routes: `/public` (public) and `/admin` (jwt) on different upstreams, so a bypass
//! shows up as a hit on the admin upstream without a token.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::tokens::{self, HS256_SECRET};
use common::upstream::{dead_addr, hex, pseudo_random_bytes, pseudo_random_sha256};
use common::{hmac_key_toml, Env, Setup, TestGateway, Upstream, Upstreams, OTHER_HOST};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The three upstreams of the routes below, as `{public}`, `{admin}` and `{internal}`.
struct Upstreams3 {
    public: Upstream,
    admin: Upstream,
    internal: Upstream,
}

impl Upstreams for Upstreams3 {
    fn define(&self, setup: Setup) -> Setup {
        setup
            .var("public", self.public.url())
            .var("admin", self.admin.url())
            .var("internal", self.internal.url())
    }
}

async fn env() -> Env<Upstreams3> {
    let up = Upstreams3 {
        public: Upstream::start().await,
        admin: Upstream::start().await,
        internal: Upstream::start().await,
    };
    let config = format!(
        r#"{{listen}}
{}
[upstream]
timeout = "10s"

[[routes]]
prefix = "/public"
upstream = "{{public}}"
auth = "public"

[[routes]]
prefix = "/admin"
upstream = "{{admin}}"
auth = "jwt"

[[routes]]
prefix = "/admin/open"
upstream = "{{public}}"
auth = "public"

[[routes]]
prefix = "/admin"
host = "{OTHER_HOST}"
upstream = "{{internal}}"
auth = "public"

[[routes]]
prefix = "/down"
upstream = "http://{}"
auth = "public"
connect_timeout = "2s"

[[routes]]
prefix = "/slow"
upstream = "{{public}}"
auth = "public"
timeout = "1s"
"#,
        hmac_key_toml("hs", "HS256", HS256_SECRET),
        dead_addr()
    );
    Env::start_with(Setup::new(), up, &config).await
}

fn token(sub: &str) -> String {
    tokens::hs256(Some("hs"), &tokens::claims(sub))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_are_resolved_before_routing() {
    let env = env().await;
    let attempts = [
        "/public/../admin/users",
        "/public/%2e%2e/admin/users",
        "/public/%2E%2E/admin/users",
        "/public/.%2e/admin/users",
        "/public/./../admin/users",
        "/public/x/../../admin/users",
        "//admin/users",
        "/public//..//admin/users",
        "/%61dmin/users",
        "/public/..",
    ];
    for path in attempts {
        let r = env.gw.raw_get(path, None, &[]).await;
        // `/public/..` is `/`, which no route serves; the others are `/admin/...`.
        let want = if path == "/public/.." { 404 } else { 401 };
        assert_eq!(r.status, want, "{path}: {}", r.text());
    }
    assert_eq!(
        env.up.admin.hits(),
        0,
        "the admin upstream was reached without a token"
    );
    assert_eq!(
        env.up.public.hits(),
        0,
        "a dot-segment path was routed as /public"
    );

    // With a token they reach the admin upstream, at the path the policy was checked on.
    let t = token("alice");
    for path in attempts.iter().filter(|p| **p != "/public/..") {
        let echo = env.gw.raw_get(path, Some(&t), &[]).await.echo();
        assert_eq!(echo.path, "/admin/users", "{path}");
        assert_eq!(echo.one("x-user-id"), Some("alice"), "{path}");
    }
    assert_eq!(env.up.public.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_that_cannot_be_normalised_safely_are_400() {
    let env = env().await;
    let t = token("alice");
    let attempts = [
        "/public/..%2fadmin/users",
        "/public/..%2Fadmin/users",
        "/public%2f..%2fadmin/users",
        "/public/..;/admin/users",
        "/public/..;x=1/admin/users",
        "/public/%2e%2e;/admin/users",
        "/public/..%5cadmin/users",
        "/public/..%5Cadmin/users",
        "/public/../../admin/users",
        "/..",
        "/public/%00/x",
    ];
    for path in attempts {
        for tok in [None, Some(t.as_str())] {
            let r = env.gw.raw_get(path, tok, &[]).await;
            assert_eq!(
                r.status,
                400,
                "{path} (token: {}): {}",
                tok.is_some(),
                r.text()
            );
            assert_eq!(r.json()["error"], "invalid_request", "{path}");
        }
    }
    assert_eq!(env.up.admin.hits(), 0);
    assert_eq!(env.up.public.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_match_whole_segments_only() {
    let env = env().await;
    for path in ["/publicity", "/public-x/y", "/adminx", "/", "/nothing"] {
        let r = env.gw.get(path, None).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert_eq!(r.json()["error"], "not_found");
    }
    assert_eq!(env.up.public.hits() + env.up.admin.hits(), 0);

    for path in ["/public", "/public/", "/public/a/b"] {
        let echo = env.gw.get(path, None).await.echo();
        assert_eq!(echo.path, path);
    }
    let echo = env.gw.get("/public/search?q=a%20b&x=1", None).await.echo();
    assert_eq!(echo.query.as_deref(), Some("q=a%20b&x=1"));
    assert_eq!(env.up.public.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_prefix_wins() {
    let env = env().await;
    // `/admin/open` is public and more specific than the jwt `/admin`.
    let echo = env.gw.get("/admin/open/doc", None).await.echo();
    assert_eq!(echo.path, "/admin/open/doc");
    assert_eq!(echo.one("x-user-id"), None);
    assert_eq!(env.up.public.hits(), 1);
    // ... but only on whole segments, and not for its parent.
    for path in ["/admin/opener", "/admin/x", "/admin"] {
        assert_eq!(env.gw.get(path, None).await.status, 401, "{path}");
    }
    assert_eq!(env.up.admin.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_specific_route_serves_only_its_host() {
    let env = env().await;
    for host in [OTHER_HOST, "INTERNAL.example", "internal.example:443"] {
        let line = format!("Host: {host}");
        let req = format!("GET /admin/x HTTP/1.1\r\n{line}\r\nConnection: close\r\n\r\n");
        let echo = env.gw.raw(&req).await.echo();
        assert_eq!(echo.path, "/admin/x", "{host}");
    }
    assert_eq!(env.up.internal.hits(), 3);
    // Over HTTP/2 the host is the :authority.
    let r = TestGateway::reply(
        env.gw
            .h2()
            .get(env.gw.other_host_url("/admin/x"))
            .send()
            .await
            .expect("h2"),
    )
    .await;
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.echo().path, "/admin/x");
    assert_eq!(env.up.internal.hits(), 4);

    for host in ["localhost", "internal.example.evil", "xinternal.example"] {
        let req = format!("GET /admin/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        assert_eq!(env.gw.raw(&req).await.status, 401, "{host}");
    }
    assert_eq!(env.up.internal.hits(), 4);
    assert_eq!(env.up.admin.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_intact_both_ways() {
    const SIZE: usize = 32 * 1024 * 1024;
    let env = env().await;
    let data = pseudo_random_bytes(SIZE);
    let want = pseudo_random_sha256(SIZE);

    // Up: a chunked body of 256 KiB pieces.
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..SIZE)
        .step_by(256 * 1024)
        .map(|i| Ok(data.slice(i..SIZE.min(i + 256 * 1024))))
        .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let resp = env
        .gw
        .h1()
        .post(env.gw.url("/admin/upload"))
        .bearer_auth(token("alice"))
        .body(body)
        .send()
        .await
        .expect("upload");
    let echo = TestGateway::reply(resp).await.echo();
    assert_eq!(echo.method, "POST");
    assert_eq!(echo.body_len, SIZE as u64);
    assert_eq!(echo.body_sha256, want);

    // Down: read the stream piece by piece, hashing as it comes.
    let mut resp = env
        .gw
        .h1()
        .get(env.gw.url(&format!("/public/stream/{SIZE}")))
        .send()
        .await
        .expect("download");
    assert_eq!(resp.status(), 200);
    let upstream_sha = resp
        .headers()
        .get("x-body-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut hasher = Sha256::new();
    let mut len = 0usize;
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        hasher.update(&chunk);
        len += chunk.len();
    }
    assert_eq!(len, SIZE);
    assert_eq!(hex(&hasher.finalize()), want);
    assert_eq!(upstream_sha.as_deref(), Some(want.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_are_forwarded_with_identity() {
    let env = env().await;
    let t = token("alice");
    let r = TestGateway::reply(
        env.gw
            .h2()
            .get(env.gw.url("/admin/x?y=1"))
            .bearer_auth(&t)
            .send()
            .await
            .expect("h2 get"),
    )
    .await;
    assert_eq!(r.version, http::Version::HTTP_2);
    let echo = r.echo();
    assert_eq!(echo.path, "/admin/x");
    assert_eq!(echo.query.as_deref(), Some("y=1"));
    assert_eq!(echo.one("x-user-id"), Some("alice"));
    assert_eq!(echo.one("x-forwarded-proto"), Some("https"));

    let body = pseudo_random_bytes(300_000);
    let r = TestGateway::reply(
        env.gw
            .h2()
            .put(env.gw.url("/admin/doc"))
            .bearer_auth(&t)
            .body(body.clone())
            .send()
            .await
            .expect("h2 put"),
    )
    .await;
    assert_eq!(r.version, http::Version::HTTP_2);
    let echo = r.echo();
    assert_eq!(echo.method, "PUT");
    assert_eq!(echo.body_sha256, hex(&Sha256::digest(&body)));

    // Authentication applies to HTTP/2 exactly as to HTTP/1.1.
    let r = TestGateway::reply(
        env.gw
            .h2()
            .get(env.gw.url("/admin/x"))
            .send()
            .await
            .expect("h2 get"),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(env.up.admin.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cookie_fields_reach_an_http1_upstream_as_one() {
    let env = env().await;
    let t = token("alice");
    // Cookies split over several fields, as browsers send them over HTTP/2, reach an
    // HTTP/1.1 upstream as one field (RFC 9113 section 8.2.3), with or without a body.
    for method in [http::Method::GET, http::Method::POST] {
        let r = TestGateway::reply(
            env.gw
                .h2()
                .request(method.clone(), env.gw.url("/admin/c"))
                .bearer_auth(&t)
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .body(if method == http::Method::POST {
                    "x"
                } else {
                    ""
                })
                .send()
                .await
                .expect("h2 cookies"),
        )
        .await;
        assert_eq!(r.echo().all("cookie"), ["a=1; b=2"], "{method}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_tunnelled() {
    let env = env().await;
    let url = format!("wss://localhost:{}/admin/ws", env.gw.port());

    // No token: the handshake is answered 401, nothing reaches the upstream.
    let tls = env.gw.tls_stream(&[b"http/1.1"]).await;
    match tokio_tungstenite::client_async(url.as_str(), tls).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401)
        }
        other => panic!("expected a 401 handshake, got {:?}", other.map(|(_, r)| r)),
    }
    assert_eq!(env.up.admin.hits(), 0);

    let mut req = url.into_client_request().expect("ws request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token("alice"))
            .parse()
            .expect("header"),
    );
    let tls = env.gw.tls_stream(&[b"http/1.1"]).await;
    let (mut ws, resp) = tokio::time::timeout(
        common::CLIENT_TIMEOUT,
        tokio_tungstenite::client_async(req, tls),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    assert_eq!(resp.status(), 101);

    let messages = [
        Message::text("hello through the gateway"),
        Message::binary(pseudo_random_bytes(100_000)),
        Message::text("bye"),
    ];
    for m in messages {
        ws.send(m.clone()).await.expect("send");
        let back = tokio::time::timeout(common::CLIENT_TIMEOUT, ws.next())
            .await
            .expect("echo in time")
            .expect("stream open")
            .expect("message");
        assert_eq!(back, m);
    }
    ws.close(None).await.expect("close");

    let seen = env.up.admin.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/admin/ws");
    assert_eq!(seen[0].one("x-user-id"), Some("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502_and_the_gateway_keeps_serving() {
    let env = env().await;
    for _ in 0..3 {
        let r = env.gw.get("/down/x", None).await;
        assert_eq!(r.status, 502, "{}", r.text());
        assert_eq!(r.json()["error"], "bad_gateway");
        let echo = env.gw.get("/public/x", None).await.echo();
        assert_eq!(echo.path, "/public/x");
    }
    let r = TestGateway::reply(
        env.gw
            .h2()
            .get(env.gw.url("/down/x"))
            .send()
            .await
            .expect("h2"),
    )
    .await;
    assert_eq!(r.status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_slower_than_the_route_timeout_is_504() {
    let env = env().await;
    // The route allows 1 s; the upstream would take 60.
    let r = env.gw.get("/slow/60000", None).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"], "gateway_timeout");
    // The same route answers when the upstream is prompt.
    let echo = env.gw.get("/slow/0", None).await.echo();
    assert_eq!(echo.path, "/slow/0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_not_forwarded() {
    let env = env().await;
    let extra = [
        "Connection: x-foo, X-Bar",
        "X-Foo: secret",
        "X-Bar: 1",
        "Keep-Alive: timeout=5",
        "Proxy-Connection: keep-alive",
        "Proxy-Authorization: Basic YWxpY2U6c2VjcmV0",
        "TE: trailers",
        "X-End-To-End: kept",
    ];
    let r = env.gw.raw_get("/public/hop-response", None, &extra).await;
    let echo = r.echo();
    for gone in [
        "x-foo",
        "x-bar",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
    ] {
        assert_eq!(echo.all(gone), Vec::<&str>::new(), "{gone} was forwarded");
    }
    for c in echo.all("connection") {
        assert!(!c.to_ascii_lowercase().contains("x-foo"), "connection: {c}");
    }
    assert_eq!(echo.all("x-end-to-end"), ["kept"]);

    // The upstream's own hop-by-hop headers stop at the gateway too.
    for gone in ["x-upstream-hop", "keep-alive"] {
        assert!(
            !r.headers.iter().any(|(n, _)| n == gone),
            "{gone} reached the client: {:?}",
            r.headers
        );
    }
    for (n, v) in &r.headers {
        if n == "connection" {
            assert!(!v.contains("x-upstream-hop"), "connection: {v}");
        }
    }
    assert_eq!(r.header("x-end-to-end"), Some("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_websocket_upgrades_are_forwarded() {
    let env = env().await;
    // An `Upgrade: h2c` tunnel (h2c smuggling) would give the client a raw HTTP/2 connection
    // to the upstream, on which every later request skips routing, authentication and
    // identity stripping. Through a public route to an upstream that also serves protected
    // paths, that is a full bypass. The gateway must drop the upgrade (or refuse it).
    let settings = "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA";
    for connection in ["Connection: Upgrade", "Connection: Upgrade, HTTP2-Settings"] {
        for upgrade in ["Upgrade: h2c", "Upgrade: H2C"] {
            let r = env
                .gw
                .raw_get("/public/x", None, &[connection, upgrade, settings])
                .await;
            let what = format!("{connection} / {upgrade}");
            if r.status == 400 {
                continue;
            }
            let echo = r.echo();
            assert_eq!(echo.all("upgrade"), Vec::<&str>::new(), "{what}: forwarded");
            for c in echo.all("connection") {
                assert!(!c.to_ascii_lowercase().contains("upgrade"), "{what}: {c}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_smuggling_cannot_reach_protected_paths() {
    // The shipped layout: `/public` and the jwt `/` share one upstream, which here accepts
    // h2c upgrades like many HTTP/2-capable backends do.
    let shared = Upstream::start().await;
    let config = format!(
        r#"{{listen}}
{}
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
    let gw = Setup::new().var("up", shared.url()).start(&config).await;

    let mut tls = gw.tls_stream(&[b"http/1.1"]).await;
    tls.write_all(
        b"GET /public/h2c HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await
    .expect("write");
    let mut head = Vec::new();
    let read_head = async {
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tls.read_u8().await.expect("read"));
        }
    };
    tokio::time::timeout(common::CLIENT_TIMEOUT, read_head)
        .await
        .expect("response head in time");
    let status_line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();

    if status_line.contains(" 101 ") {
        // The gateway spliced us onto the upstream: speak HTTP/2 straight to it.
        let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(tls))
            .await
            .expect("h2 handshake over the tunnel");
        tokio::spawn(conn);
        let req = http::Request::get("http://localhost/admin/secret")
            .header("x-user-id", "admin")
            .body(http_body_util::Empty::new())
            .expect("request");
        let resp = tokio::time::timeout(common::CLIENT_TIMEOUT, send.send_request(req))
            .await
            .expect("smuggled response in time");
        if let Ok(resp) = resp {
            eprintln!("smuggled request answered {}", resp.status());
        }
    }
    for r in shared.requests() {
        assert!(
            r.path.starts_with("/public/"),
            "the upstream served {} without authentication (after {status_line:?})",
            r.path
        );
        assert_eq!(
            r.one("x-user-id"),
            None,
            "spoofed identity reached {}",
            r.path
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_host_is_refused() {
    let env = env().await;
    // RFC 9112 section 3.2: more than one Host line is a 400. Otherwise the route is chosen
    // by one Host (here the public host route) while an upstream that serves several hosts
    // may act on the other (here the jwt host).
    for hosts in [[OTHER_HOST, "localhost"], ["localhost", OTHER_HOST]] {
        let req = format!(
            "GET /admin/x HTTP/1.1\r\nHost: {}\r\nHost: {}\r\nConnection: close\r\n\r\n",
            hosts[0], hosts[1]
        );
        let r = env.gw.raw(&req).await;
        assert_eq!(r.status, 400, "Host {hosts:?}: {}", r.text());
    }
    assert_eq!(env.up.internal.hits() + env.up.admin.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_request_without_host_is_refused() {
    let env = env().await;
    // RFC 9112 section 3.2: an HTTP/1.1 request without Host is a 400.
    let r = env
        .gw
        .raw("GET /public/x HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(env.up.public.hits(), 0);
}
