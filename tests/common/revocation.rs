//! Revocation helpers shared by the tests that revoke (`revocation.rs`, `revocation_store.rs`,
//! `cluster.rs`, `sentinel.rs`, `sessions.rs`, `forgery_holes.rs`): the config with plain-HTTP
//! proxy and admin listeners on port 0, [`Gw`] (a [`TestGateway`] started on it, with admin
//! and proxy requests), tokens with a `jti`, and the assertions for "revoked" and "passed".
//!
//! Plain HTTP because TLS is covered by the other test files; the binary is run through
//! [`super::GatewayProcess`] and the CLI through [`super::cli`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::tokens::{self, HS256_SECRET};
use super::{hmac_key_toml, portcullis, Reply, Setup, TestGateway, Upstream, CLIENT_TIMEOUT};
use portcullis::revocation::{digest, key_to_hex};
use portcullis::Config;
use serde_json::{json, Value};
use tempfile::TempDir;

/// The admin token every gateway here is configured with.
pub const ADMIN_TOKEN: &str = "admin-token-for-revocation-tests-0123";
/// Upper bound for one HTTP exchange.
pub const TIMEOUT: Duration = CLIENT_TIMEOUT;

/// The config text: plain HTTP proxy and admin listeners on ephemeral loopback ports, one
/// HS256 key, one JWT route to `upstream`, and `extra` appended (e.g. `[revocation]`).
pub fn config_text(upstream: &str, extra: &str) -> String {
    format!(
        r#"[listen]
addr = "127.0.0.1:0"

{keys}
[[routes]]
prefix = "/"
upstream = "{upstream}"
auth = "jwt"

[admin]
addr = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

{extra}
"#,
        keys = hmac_key_toml("hs1", "HS256", HS256_SECRET),
    )
}

/// A gateway started in-process ([`Setup::start_with`]) on [`config_text`], its store under
/// the `dir` it was given.
pub struct Gw {
    gateway: TestGateway,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub http: reqwest::Client,
}

impl Gw {
    /// Start on the config `config_text(upstream, extra)`, relative paths resolving to `dir`
    /// (so the default store is `dir/data/revocations.log`).
    pub async fn start(dir: &Path, upstream: &str, extra: &str) -> Gw {
        let text = config_text(upstream, extra);
        let config = Config::from_toml(&text, dir)
            .unwrap_or_else(|e| panic!("test config is invalid: {e}\n---\n{text}"));
        let gateway = Setup::new().start_with(config).await;
        Gw {
            proxy: gateway.addr,
            admin: gateway.admin_addr().expect("admin listener configured"),
            gateway,
            http: client(),
        }
    }

    pub async fn stop(self) {
        self.gateway.shutdown().await;
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// GET `/api` through the proxy with this bearer token.
    pub async fn get(&self, token: &str) -> Reply {
        proxy_get(&self.http, self.proxy, token).await
    }

    /// An admin request with the right admin token.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self
            .http
            .request(method, self.admin_url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        TestGateway::send(req).await
    }

    /// `POST /revocations` with `body`, asserting 201; returns the stored entry.
    pub async fn revoke(&self, body: Value) -> Value {
        let r = self
            .admin(reqwest::Method::POST, "/revocations", Some(body.clone()))
            .await;
        assert_eq!(r.status, 201, "revoking {body}: {r:?}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        r.json()
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.admin(reqwest::Method::DELETE, path, None).await
    }

    /// `GET /revocations/count` as `(tokens, subjects)`.
    pub async fn count(&self) -> (u64, u64) {
        let r = self
            .admin(reqwest::Method::GET, "/revocations/count", None)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let v = r.json();
        (
            v["tokens"].as_u64().expect("tokens"),
            v["subjects"].as_u64().expect("subjects"),
        )
    }
}

/// A plain HTTP/1.1 client with a timeout and no proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .build()
        .expect("client")
}

/// A client whose connections come from `ip` (any 127.x.y.z is loopback on Linux), so the
/// admin API sees another client address.
pub fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .local_address(Some(ip.parse().expect("ip")))
        .build()
        .expect("client")
}

pub async fn proxy_get(http: &reqwest::Client, proxy: SocketAddr, token: &str) -> Reply {
    TestGateway::send(http.get(format!("http://{proxy}/api")).bearer_auth(token)).await
}

/// Asserts that the request was refused as revoked: 401, `invalid_token`, "token revoked" in
/// the body and in the `WWW-Authenticate` challenge.
pub fn assert_revoked(r: &Reply, what: &str) {
    assert_eq!(
        r.status, 401,
        "{what}: expected 401 token revoked, got {r:?}"
    );
    let body = r.json();
    assert_eq!(body["error"], "invalid_token", "{what}: {r:?}");
    assert_eq!(body["error_description"], "token revoked", "{what}: {r:?}");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer ")
            && challenge.contains("error=\"invalid_token\"")
            && challenge.contains("token revoked"),
        "{what}: challenge {challenge:?}"
    );
}

pub fn assert_passes(r: &Reply, what: &str) {
    assert_eq!(
        r.status, 200,
        "{what}: expected the upstream's 200, got {r:?}"
    );
}

/// An HS256 token for `sub` with this `jti`, issued ten seconds ago, valid ten minutes.
pub fn token(sub: &str, jti: &str) -> String {
    let mut c = tokens::claims(sub);
    c["iat"] = json!(tokens::now() - 10);
    c["jti"] = json!(jti);
    tokens::hs256(Some("hs1"), &c)
}

pub fn token_with(claims: Value) -> String {
    tokens::hs256(Some("hs1"), &claims)
}

/// The key the admin API lists for a `jti` or `sub`.
pub fn key_hex(id: &str) -> String {
    key_to_hex(&digest(id.as_bytes()))
}

pub fn store_path(dir: &Path) -> PathBuf {
    dir.join("data/revocations.log")
}

/// [`super::GatewayProcess`] running `run --config FILE ARGS`, its log beside the config.
pub async fn spawn_process_with(config: &Path, args: &[&str]) -> super::GatewayProcess {
    let config_arg = config.display().to_string();
    let args = [&["run", "--config", config_arg.as_str()], args].concat();
    let cmd = portcullis(&args);
    let log = config.with_file_name("gateway.log");
    tokio::task::spawn_blocking(move || super::GatewayProcess::spawn_command(cmd, &log))
        .await
        .expect("spawn task")
}

/// Runs `portcullis run --config FILE ARGS` expecting it to refuse to start: returns its
/// exit success and stderr, or `None` (after killing it) if it was still running after
/// 15 s, i.e. it started.
pub async fn run_expecting_exit(config: &Path, args: &[&str]) -> Option<(bool, String)> {
    let config_arg = config.display().to_string();
    let mut child = portcullis(&[&["run", "--config", config_arg.as_str()], args].concat())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn portcullis");
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("poll portcullis") {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Some((status.success(), err));
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .expect("wait task")
}

/// A fresh [`Upstream`] and temp dir, and a [`Gw`] on them with `extra` in its config.
/// The temp dir must live as long as the gateway.
pub async fn env(extra: &str) -> (Gw, Upstream, TempDir) {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = Gw::start(dir.path(), &up.url(), extra).await;
    (gw, up, dir)
}
