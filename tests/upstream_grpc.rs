//! HTTP/2 to the upstream (issue 16): h2c by prior knowledge with `upstream_protocol = "h2"`,
//! and gRPC end to end with a real grpcio server and client (tests/fixtures/grpc_peer.py):
//! unary and server-streaming calls through the gateway, trailers forwarded, the identity
//! header visible to the server as metadata, and the gateway's own refusals answered as
//! gRPC statuses (UNAUTHENTICATED, UNAVAILABLE) that a gRPC client can read.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::peer::PeerProcess;
use common::upstream::dead_addr;
use common::{hmac_key_toml, tokens, Setup, TestGateway, Upstream};
use serde_json::Value;

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/grpc_peer.py");

/// `python3` with grpcio, or `None` (the test then skips with a notice; .ci/run installs it).
fn grpc_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import grpc"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: python3 with grpcio is not installed (pip install grpcio)");
    }
    ok
}

/// The grpcio server, killed when dropped.
fn grpc_server() -> PeerProcess {
    PeerProcess::python(&[PEER, "serve"])
}

/// One call through the grpcio client: `{"code", "details", "responses", "trailers"}`.
async fn call(gw: &TestGateway, method: &str, payload: &str, token: Option<&str>) -> Value {
    let mut args = vec![
        PEER.to_owned(),
        "call".into(),
        format!("127.0.0.1:{}", gw.port()),
        method.into(),
        payload.into(),
    ];
    args.extend(token.map(str::to_owned));
    let out =
        tokio::task::spawn_blocking(move || Command::new("python3").args(&args).output().unwrap())
            .await
            .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "client output is not JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A plain-HTTP gateway (gRPC clients speak h2c to it) with a jwt route to the grpcio
/// server over h2c, and one to nowhere.
async fn gateway(grpc_port: u16, protocol: &str) -> TestGateway {
    let config = format!(
        r#"[listen]
addr = "127.0.0.1:0"

{}
[[routes]]
prefix = "/test.Echo"
upstream = "http://127.0.0.1:{grpc_port}"
upstream_protocol = "{protocol}"
auth = "jwt"

[[routes]]
prefix = "/down.Echo"
upstream = "http://{}"
upstream_protocol = "h2"
auth = "public"
"#,
        hmac_key_toml("hs", "HS256", tokens::HS256_SECRET),
        dead_addr()
    );
    Setup::new().start(&config).await
}

fn token(sub: &str) -> String {
    tokens::hs256(Some("hs"), &tokens::claims(sub))
}

#[tokio::test]
async fn h2_upstream_protocol_speaks_h2c_by_prior_knowledge() {
    let up = Upstream::start_auto(None).await;
    let config = format!(
        r#"{{listen}}
[[routes]]
prefix = "/"
upstream = "{}"
upstream_protocol = "h2"
auth = "public"
"#,
        up.url()
    );
    let gw = Setup::new().start(&config).await;
    // An HTTP/1.1 client, an HTTP/2 upstream connection.
    let r = gw.get("/h2c/one", None).await;
    let echo = r.echo();
    assert_eq!(echo.version, "HTTP/2.0");
    assert_eq!(echo.path, "/h2c/one");
    // `:authority` names the target; a different `Host` beside it would be malformed
    // (RFC 9113 section 8.3.1), so the client's host travels in X-Forwarded-Host.
    assert!(echo.all("host").is_empty(), "{:?}", echo.all("host"));
    let client_host = format!("localhost:{}", gw.port());
    assert_eq!(echo.one("x-forwarded-host"), Some(client_host.as_str()));
    // A body and a second request on the same multiplexed connection.
    let r = TestGateway::send(gw.h2().post(gw.url("/h2c/two")).body(vec![7u8; 100_000])).await;
    assert_eq!(r.echo().body_len, 100_000);
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn grpc_unary_and_streaming_calls_pass_with_identity_and_trailers() {
    if !grpc_available() {
        return;
    }
    let server = grpc_server();
    for protocol in ["h2", "auto"] {
        let gw = gateway(server.port, protocol).await;
        let t = token("grpc-user");

        let r = call(&gw, "Unary", "hello", Some(&t)).await;
        assert_eq!(r["code"], "OK", "{protocol}: {r}");
        let msg: Value = serde_json::from_str(r["responses"][0].as_str().unwrap()).unwrap();
        assert_eq!(msg["echo"], "hello");
        assert_eq!(
            msg["metadata"]["x-user-id"], "grpc-user",
            "{protocol}: the identity header reaches the server as metadata: {msg}"
        );
        assert!(
            msg["metadata"].get("authorization").is_some(),
            "the token is forwarded as sent"
        );
        assert_eq!(r["trailers"]["x-trailer"], "unary-done", "{protocol}: {r}");

        let r = call(&gw, "Stream", "5", Some(&t)).await;
        assert_eq!(r["code"], "OK", "{protocol}: {r}");
        assert_eq!(r["responses"], serde_json::json!(["0", "1", "2", "3", "4"]));
        assert_eq!(r["trailers"]["x-trailer"], "stream-done", "{protocol}: {r}");
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn gateway_refusals_are_grpc_statuses() {
    if !grpc_available() {
        return;
    }
    let server = grpc_server();
    let gw = gateway(server.port, "h2").await;

    let r = call(&gw, "Unary", "no token", None).await;
    assert_eq!(r["code"], "UNAUTHENTICATED", "{r}");
    assert!(!r["details"].as_str().unwrap().is_empty(), "{r}");

    let r = call(&gw, "Unary", "bad token", Some("not.a.token")).await;
    assert_eq!(r["code"], "UNAUTHENTICATED", "{r}");

    // /down.Echo/Unary: the route's upstream refuses connections. The grpcio client here
    // only calls /test.Echo, so this call is made by hand, as gRPC frames it.
    let resp = gw
        .h2()
        .post(format!("http://127.0.0.1:{}/down.Echo/Unary", gw.port()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    let r = TestGateway::reply(resp).await;
    assert_eq!(r.status, 200, "gRPC refusals are HTTP 200: {r:?}");
    assert_eq!(r.header("content-type"), Some("application/grpc"));
    assert_eq!(r.header("grpc-status"), Some("14"), "{r:?}");
    assert!(r.body.is_empty(), "trailers-only: {r:?}");

    // The same refusal to a plain HTTP client stays the JSON error.
    let r = TestGateway::send(
        gw.h2()
            .post(format!("http://127.0.0.1:{}/down.Echo/Unary", gw.port())),
    )
    .await;
    assert_eq!(r.status, 502);
}
