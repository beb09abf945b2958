//! The harness of the revocation tests (`tests/revocation.rs`, `tests/revocation_store.rs`):
//! a gateway with plain-HTTP proxy and admin listeners on ephemeral loopback ports, started
//! in-process ([`Gw`]) or as the real binary ([`Process`]), admin and proxy requests, and
//! the assertions for "revoked" and "passed".
//!
//! Plain HTTP because TLS is covered by the other test files and `common::Setup` speaks TLS
//! only; `common` still provides the upstream and the token signing. Each test binary uses
//! a subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::tokens::{self, HS256_SECRET};
use crate::common::{hmac_key_toml, Upstream};
use portcullis::revocation::{digest, key_to_hex};
use portcullis::{Config, Gateway};
use serde_json::{json, Value};
use tempfile::TempDir;

/// The admin token every gateway here is configured with.
pub const ADMIN_TOKEN: &str = "admin-token-for-revocation-tests-0123";
/// Upper bound for one HTTP exchange or one process start.
pub const TIMEOUT: Duration = Duration::from_secs(20);

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

/// A gateway started in-process with `portcullis::start`, its store under `dir`.
pub struct Gw {
    gateway: Option<Gateway>,
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
        let gateway = portcullis::start(config).await.expect("gateway starts");
        Gw {
            proxy: gateway.addr(),
            admin: gateway.admin_addr().expect("admin listener configured"),
            gateway: Some(gateway),
            http: client(),
        }
    }

    pub async fn stop(mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown_with_grace(Duration::from_secs(5)).await;
        }
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
        reply(req.send().await.expect("admin request")).await
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
    let resp = http
        .get(format!("http://{proxy}/api"))
        .bearer_auth(token)
        .send()
        .await
        .expect("proxy request");
    reply(resp).await
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// The `error` message of an admin error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {}", self.body))
            .to_owned()
    }
}

pub async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.expect("response body");
    Reply {
        status,
        headers,
        body,
    }
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

/// The real binary running `run --config FILE`; killed (SIGKILL) when dropped.
pub struct Process {
    pub child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

impl Process {
    /// Start the binary and wait for its "portcullis listening" log line, which names the
    /// ephemeral ports it bound.
    pub fn spawn(config: &Path) -> Process {
        Self::spawn_with(config, &[])
    }

    /// [`Process::spawn`] with more arguments after `run --config FILE`.
    pub fn spawn_with(config: &Path, args: &[&str]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn portcullis");
        // The gateway logs to stderr.
        let log = child.stderr.take().expect("stderr piped");
        let (tx, rx) = std::sync::mpsc::channel();
        // Keeps draining the log for the life of the process, so a full pipe never blocks it.
        std::thread::spawn(move || {
            for line in BufReader::new(log).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(e) => {
                    let _ = child.kill();
                    panic!("no `portcullis listening` line from the gateway ({e})");
                }
            };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["message"] != "portcullis listening" {
                continue;
            }
            let proxy = v["addr"].as_str().and_then(|a| a.parse().ok());
            // `admin = ?Option<SocketAddr>` is logged as "Some(127.0.0.1:PORT)".
            let admin = v["admin"]
                .as_str()
                .and_then(|a| a.strip_prefix("Some(")?.strip_suffix(')'))
                .and_then(|a| a.parse().ok());
            match (proxy, admin) {
                (Some(proxy), Some(admin)) => {
                    return Process {
                        child,
                        proxy,
                        admin,
                    }
                }
                _ => {
                    let _ = child.kill();
                    panic!("cannot read the listening addresses from {line}");
                }
            }
        }
    }

    /// SIGKILL: no shutdown code runs, nothing is flushed that was not already.
    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// [`Process::spawn_with`] off the async workers (it blocks until the gateway is up).
pub async fn spawn_process_with(config: &Path, args: &[&str]) -> Process {
    let config = config.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Process::spawn_with(&config, &args)
    })
    .await
    .expect("spawn task")
}

/// [`Process::spawn`] off the async workers (it blocks until the gateway is up).
pub async fn spawn_process(config: &Path) -> Process {
    let config = config.to_path_buf();
    tokio::task::spawn_blocking(move || Process::spawn(&config))
        .await
        .expect("spawn task")
}

/// Runs `portcullis run --config FILE ARGS` expecting it to refuse to start: returns its
/// exit success and stderr, or `None` (after killing it) if it was still running after
/// 15 s, i.e. it started.
pub async fn run_expecting_exit(config: &Path, args: &[&str]) -> Option<(bool, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
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

/// Run the CLI with `args`; returns (success, stdout, stderr).
pub async fn cli(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(&args)
            .env_remove("PORTCULLIS_ADMIN_TOKEN")
            .env_remove("RUST_LOG")
            .output()
            .expect("run the portcullis CLI");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("CLI task")
}

pub struct Env {
    pub gw: Gw,
    pub up: Upstream,
    pub dir: TempDir,
}

pub async fn env(extra: &str) -> Env {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = Gw::start(dir.path(), &up.url(), extra).await;
    Env { gw, up, dir }
}
