//! Operating the gateway: hot reload (new certificate while a streaming response and a
//! WebSocket stay open; an invalid config refused while traffic continues), SIGTERM with a
//! request in flight, `/metrics` as Prometheus text, and JSON access log lines without tokens.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::{GatewayProcess, Upstream};
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{EncodingKey, Header};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "operations-test-secret-0123456789abcdef";
const ADMIN_TOKEN: &str = "operations-admin-token-0123456789";

fn token(sub: &str) -> String {
    let now = portcullis::pipeline::unix_now();
    let claims = serde_json::json!({"sub": sub, "iat": now, "exp": now + 600, "jti": format!("op-{sub}-{now}")});
    let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some("hs".into());
    jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(SECRET.as_bytes())).expect("sign")
}

/// A self-signed localhost certificate as (cert PEM, key PEM).
fn cert() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    (c.cert.pem(), c.signing_key.serialize_pem())
}

fn config_text(tls: bool, drip: &str, echo: &str, extra: &str) -> String {
    let tls = if tls {
        "tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n"
    } else {
        ""
    };
    format!(
        r#"[listen]
addr = "127.0.0.1:0"
{tls}shutdown_grace = "10s"

[[jwt.keys]]
kid = "hs"
alg = "HS256"
secret = "{SECRET}"

[admin]
addr = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[revocation]
store = "memory"

[[routes]]
prefix = "/drip"
upstream = "{drip}"
auth = "jwt"

[[routes]]
prefix = "/"
upstream = "{echo}"
auth = "jwt"
{extra}"#
    )
}

/// A TLS client trusting `roots`; returns the stream and the certificate the server showed.
async fn tls_connect(
    addr: SocketAddr,
    roots: &[&str],
    alpn: &[u8],
) -> (TlsStream<TcpStream>, Vec<u8>) {
    let tls = common::tls_connect(addr, roots, &[alpn]).await;
    let shown = tls.get_ref().1.peer_certificates().expect("server cert")[0].to_vec();
    (tls, shown)
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("pem")
        .to_vec()
}

/// One HTTP/1.1 request over `io`; the response with its body still streaming.
async fn send<I>(io: I, req: Request<Full<Bytes>>) -> Response<hyper::body::Incoming>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("h1");
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender.send_request(req).await.expect("response")
}

fn get(path: &str, bearer: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::get(path).header("host", "localhost");
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Full::new(Bytes::new())).expect("request")
}

/// Call the admin API over plain HTTP.
async fn admin(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let method = method.parse().expect("method");
    let r = common::admin_request(&format!("http://{addr}"), ADMIN_TOKEN, method, path, None).await;
    (r.status, r.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_certificate_while_a_stream_and_a_websocket_stay_open() {
    let dir = tempfile::tempdir().expect("tmp");
    let (cert_a, key_a) = cert();
    std::fs::write(dir.path().join("cert.pem"), &cert_a).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key_a).unwrap();
    let up = Upstream::start().await;
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config_text(true, &up.url(), &up.url(), "")).unwrap();
    let gw = portcullis::start(portcullis::Config::load(&path).expect("config"))
        .await
        .expect("start");
    let tok = token("alice");

    // A long streaming response, read in the background.
    let (tls, shown) = tls_connect(gw.addr(), &[&cert_a], b"http/1.1").await;
    assert_eq!(shown, der(&cert_a));
    let resp = send(tls, get("/drip", Some(&tok))).await;
    assert_eq!(resp.status(), 200);
    let stream =
        tokio::spawn(async move { resp.into_body().collect().await.map(|b| b.to_bytes().len()) });

    // An open WebSocket.
    let (tls, _) = tls_connect(gw.addr(), &[&cert_a], b"http/1.1").await;
    let mut ws_req = "wss://localhost/ws"
        .into_client_request()
        .expect("ws request");
    ws_req
        .headers_mut()
        .insert("authorization", format!("Bearer {tok}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(ws_req, tls)
        .await
        .expect("websocket");
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().into_text().unwrap(),
        "before"
    );

    // New certificate on disk, then reload through the admin API.
    let (cert_b, key_b) = cert();
    std::fs::write(dir.path().join("cert.pem"), &cert_b).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key_b).unwrap();
    let (status, body) = admin(gw.admin_addr().unwrap(), "POST", "/reload").await;
    assert_eq!(status, 200, "{body}");

    // New connections get the new certificate...
    let (tls, shown) = tls_connect(gw.addr(), &[&cert_a, &cert_b], b"http/1.1").await;
    assert_eq!(
        shown,
        der(&cert_b),
        "a new connection must see the reloaded certificate"
    );
    let r = send(tls, get("/x", Some(&tok))).await;
    assert_eq!(r.status(), 200);

    // ...while the open WebSocket and the stream carry on.
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().into_text().unwrap(),
        "after"
    );
    let n = stream
        .await
        .unwrap()
        .expect("stream completes without error");
    assert_eq!(
        n,
        common::upstream::DRIP_CHUNKS * 1024,
        "the streaming response was cut by the reload"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_is_refused_and_traffic_continues() {
    let dir = tempfile::tempdir().expect("tmp");
    let (c, k) = cert();
    std::fs::write(dir.path().join("cert.pem"), &c).unwrap();
    std::fs::write(dir.path().join("key.pem"), &k).unwrap();
    let up = Upstream::start().await;
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config_text(true, &up.url(), &up.url(), "")).unwrap();
    let gw = portcullis::start(portcullis::Config::load(&path).expect("config"))
        .await
        .expect("start");
    let tok = token("bob");

    // An open keep-alive connection, used before and after the failed reload.
    let (tls, _) = tls_connect(gw.addr(), &[&c], b"http/1.1").await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(
        sender
            .send_request(get("/a", Some(&tok)))
            .await
            .unwrap()
            .status(),
        200
    );

    std::fs::write(
        &path,
        config_text(true, &up.url(), &up.url(), "\n[surprise]\nkey = 1\n"),
    )
    .unwrap();
    let (status, body) = admin(gw.admin_addr().unwrap(), "POST", "/reload").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("surprise"),
        "the reason names the bad key: {body}"
    );
    // The CLI's `reload` fails the same way and prints the reason.
    let (ok, out) = reload_cli(gw.admin_addr().unwrap()).await;
    assert!(!ok, "`portcullis reload` succeeded on a bad config: {out}");
    assert!(out.contains("surprise") && out.contains("400"), "{out}");

    let r = sender.send_request(get("/b", Some(&tok))).await.unwrap();
    assert_eq!(r.status(), 200, "the open connection keeps working");
    let (tls, _) = tls_connect(gw.addr(), &[&c], b"http/1.1").await;
    assert_eq!(
        send(tls, get("/c", Some(&tok))).await.status(),
        200,
        "new connections too"
    );
    std::fs::write(&path, config_text(true, &up.url(), &up.url(), "")).unwrap();
    let (ok, out) = reload_cli(gw.admin_addr().unwrap()).await;
    assert!(ok && out.contains("reloaded"), "{out}");
    let (_, metrics) = admin(gw.admin_addr().unwrap(), "GET", "/metrics").await;
    assert!(
        metrics.contains("portcullis_config_reloads_total{reason=\"rejected\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_config_reloads_total{reason=\"ok\"} 1"),
        "{metrics}"
    );
    gw.shutdown().await;
}

/// `portcullis reload` against the admin API at `addr`: (success, stdout and stderr).
async fn reload_cli(addr: SocketAddr) -> (bool, String) {
    let mut cmd = common::portcullis(&["reload", "--admin", &format!("http://{addr}")]);
    cmd.env("PORTCULLIS_ADMIN_TOKEN", ADMIN_TOKEN);
    let out = common::process::output(cmd).await;
    (out.ok, out.all())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_carry_the_series() {
    let dir = tempfile::tempdir().expect("tmp");
    let (c, k) = cert();
    std::fs::write(dir.path().join("cert.pem"), &c).unwrap();
    std::fs::write(dir.path().join("key.pem"), &k).unwrap();
    let up = Upstream::start().await;
    let dead = common::upstream::dead_addr();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        config_text(true, &format!("http://{dead}"), &up.url(), ""),
    )
    .unwrap();
    let gw = portcullis::start(portcullis::Config::load(&path).expect("config"))
        .await
        .expect("start");

    // One of each: proxied, refused, upstream failure, failed TLS handshake.
    let (tls, _) = tls_connect(gw.addr(), &[&c], b"http/1.1").await;
    assert_eq!(
        send(tls, get("/ok", Some(&token("carol")))).await.status(),
        200
    );
    let (tls, _) = tls_connect(gw.addr(), &[&c], b"http/1.1").await;
    assert_eq!(
        send(tls, get("/ok", Some("not-a-token"))).await.status(),
        401
    );
    let (tls, _) = tls_connect(gw.addr(), &[&c], b"http/1.1").await;
    assert_eq!(
        send(tls, get("/drip", Some(&token("carol"))))
            .await
            .status(),
        502
    );
    {
        use tokio::io::AsyncWriteExt;
        let mut raw = TcpStream::connect(gw.addr()).await.unwrap();
        raw.write_all(b"this is not TLS\r\n\r\n").await.unwrap();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::io::AsyncReadExt::read(&mut raw, &mut [0u8; 64]),
        )
        .await;
    }

    let (status, text) = admin(gw.admin_addr().unwrap(), "GET", "/metrics").await;
    assert_eq!(status, 200);
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("metrics parse as Prometheus text");
    let names: std::collections::HashSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for want in [
        "portcullis_requests_total",
        "portcullis_request_duration_seconds",
        "portcullis_auth_failures_total",
        "portcullis_upstream_errors_total",
        "portcullis_revocation_entries",
        "portcullis_open_connections",
        "portcullis_tls_handshake_failures_total",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "missing {want} in {names:?}"
        );
    }
    let value = |name: &str, label: (&str, &str)| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert_eq!(value("portcullis_requests_total", ("status", "200")), 1.0);
    assert_eq!(value("portcullis_requests_total", ("status", "401")), 1.0);
    assert_eq!(
        value("portcullis_auth_failures_total", ("reason", "malformed")),
        1.0
    );
    assert_eq!(
        value(
            "portcullis_upstream_errors_total",
            ("reason", "upstream_connect")
        ),
        1.0
    );
    gw.shutdown().await;
}

/// The real binary, run on `config` written to `dir/config.toml`, its log in `dir`.
async fn spawn_binary(dir: &Path, config: &str) -> GatewayProcess {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    GatewayProcess::spawn(&path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_complete_then_exits_zero() {
    let dir = tempfile::tempdir().expect("tmp");
    let up = Upstream::start().await;
    let gw = spawn_binary(dir.path(), &config_text(false, &up.url(), &up.url(), "")).await;
    let addr = gw.addr;
    let tok = token("dave");
    let tcp = TcpStream::connect(addr).await.unwrap();
    let in_flight = tokio::spawn(async move {
        let resp = send(tcp, get("/slow/1500", Some(&tok))).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes().len());
        (status, body)
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    gw.sigterm();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(
        status,
        200,
        "the in-flight request must complete: {}",
        gw.log()
    );
    assert!(body.expect("whole body") > 0);
    let (exit, _) = gw.wait_exit_async(Duration::from_secs(15)).await;
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener must be closed after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_are_json_with_the_fields_and_never_the_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let up = Upstream::start().await;
    let config = config_text(
        false,
        &up.url(),
        &up.url(),
        "\n[log]\nformat = \"json\"\naccess_log = true\n",
    );
    let gw = spawn_binary(dir.path(), &config).await;
    let addr = gw.addr;
    let tok = token("erin");
    for (path, bearer) in [("/hello?secret=q", Some(tok.as_str())), ("/nope", None)] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let resp = send(tcp, get(path, bearer)).await;
        let _ = resp.into_body().collect().await;
    }
    gw.sigterm();
    let (_, text) = gw.wait_exit_async(Duration::from_secs(15)).await;
    assert!(!text.contains(&tok), "a token reached the log");
    assert!(
        !text.contains("secret=q"),
        "the query string reached the log"
    );
    let mut access = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["message"] == "access" {
            access.push(v);
        }
    }
    assert_eq!(access.len(), 2, "one line per request: {text}");
    let ok = &access[0];
    for field in [
        "timestamp",
        "route",
        "method",
        "path",
        "status",
        "latency_us",
        "user",
        "request_id",
    ] {
        assert!(!ok[field].is_null(), "missing {field}: {ok}");
    }
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["user"], "erin");
    assert_eq!(access[1]["status"], 401);
    assert_eq!(access[1]["user"], "-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_never_reach_the_log_even_at_debug() {
    let dir = tempfile::tempdir().expect("tmp");
    let up = Upstream::start().await;
    let extra = format!(
        "\n[log]\nformat = \"json\"\nlevel = \"debug\"\naccess_log = true\n\n[[routes]]\nprefix = \"/keyed\"\nupstream = \"{}\"\nauth = \"public\"\napi_key = true\n",
        up.url()
    );
    let config = config_text(false, &up.url(), &up.url(), &extra);
    let gw = spawn_binary(dir.path(), &config).await;
    let (addr, admin_addr) = (gw.addr, gw.admin_addr());
    let tcp = TcpStream::connect(admin_addr).await.expect("admin connect");
    let req = Request::post("/apikeys")
        .header("host", "admin")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"app":"mobile"}"#)))
        .expect("request");
    let resp = send(tcp, req).await;
    assert_eq!(resp.status(), 201);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let created: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let key = created["key"].as_str().expect("the key").to_owned();
    // The right key, then a wrong one that differs in its last characters only: both are
    // logged (access line, debug refusal), neither may be.
    let wrong = format!("{}AAAA", &key[..key.len() - 4]);
    let mut statuses = Vec::new();
    for k in [&key, &wrong] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let req = Request::get("/keyed/x")
            .header("host", "localhost")
            .header("x-api-key", k.as_str())
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = send(tcp, req).await;
        statuses.push(resp.status().as_u16());
        let _ = resp.into_body().collect().await;
    }
    assert_eq!(statuses, [200, 401]);
    gw.sigterm();
    let (_, text) = gw.wait_exit_async(Duration::from_secs(15)).await;
    // The secret part of a key, not the common `pck_` prefix.
    for k in [&key, &wrong] {
        assert!(
            !text.contains(&k[4..]),
            "an API key reached the log: {text}"
        );
    }
    let access = text
        .lines()
        .filter(|l| l.contains("\"message\":\"access\"") && l.contains("/keyed/x"))
        .count();
    assert_eq!(access, 2, "both requests are in the access log: {text}");
}
