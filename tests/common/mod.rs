//! The one shared helper of the integration tests: a temp dir with TLS material, the real
//! gateway started in-process on an ephemeral port ([`Setup::start`], [`env::Env`] with its
//! upstreams) or as the real binary reporting the ports it bound ([`process`]), the upstream
//! kit ([`upstream::Upstream`], [`faulty::FaultyUpstream`], [`answer::AnswerServer`], python peers
//! in their own process: [`peer::PeerProcess`]), a throwaway `redis-server`
//! ([`redis_server`]), keys and tokens ([`tokens`]), the revocation tests' gateway and
//! assertions ([`revocation`]), headless Chromium over the DevTools protocol ([`browser`]), DPoP proofs from jwcrypto ([`dpop`]), and clients that speak HTTP/1.1, HTTP/2
//! and raw bytes over TLS.
//!
//! Each test binary uses a subset of this module, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod answer;
pub mod browser;
pub mod dpop;
pub mod env;
pub mod faulty;
pub mod peer;
pub mod process;
pub mod redis_server;
pub mod revocation;
pub mod tokens;
pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use portcullis::{Config, Gateway};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A client's `traceparent` (the W3C Trace Context example): trace
/// 4bf92f3577b34da6a3ce929d0e0e4736, parent 00f067aa0ba902b7, sampled.
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// The `tracestate` sent with [`TRACEPARENT`].
pub const TRACESTATE: &str = "congo=t61rcWkgMzE";

#[allow(unused_imports)]
pub use env::{Env, Upstreams};
#[allow(unused_imports)]
pub use process::{cli, portcullis, CliOutput, GatewayProcess};
#[allow(unused_imports)]
pub use upstream::{Echo, Upstream};

/// Upper bound for any single client exchange; a hung gateway fails the test instead of
/// hanging it.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// A second name the test certificate covers and clients resolve to the gateway, for
/// host-specific routes.
pub const OTHER_HOST: &str = "internal.example";

/// Config files for one test: a temp dir holding a self-signed `localhost` certificate
/// (`tls/cert.pem`, `tls/key.pem`) and whatever else the test writes there.
///
/// Config templates may use `{listen}` (a `[listen]` section on 127.0.0.1:0 with that
/// certificate), `{dir}` (the temp dir) and any name given to [`Setup::var`].
pub struct Setup {
    pub dir: TempDir,
    pub cert_pem: String,
    vars: Vec<(String, String)>,
}

impl Default for Setup {
    fn default() -> Self {
        Self::new()
    }
}

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let cert =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), OTHER_HOST.to_owned()])
                .expect("self-signed cert");
        let cert_pem = cert.cert.pem();
        let setup = Setup {
            dir,
            cert_pem: cert_pem.clone(),
            vars: Vec::new(),
        };
        setup.write("tls/cert.pem", &cert_pem);
        setup.write("tls/key.pem", cert.signing_key.serialize_pem());
        setup
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Write `contents` at `rel` (creating folders) and return the full path.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create dir");
        }
        std::fs::write(&path, contents).expect("write file");
        path
    }

    /// Define `{name}` for templates.
    pub fn var(mut self, name: &str, value: impl Into<String>) -> Setup {
        self.vars.push((name.to_owned(), value.into()));
        self
    }

    /// The template with every known placeholder replaced.
    pub fn render(&self, template: &str) -> String {
        let listen = "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"tls/cert.pem\"\ntls_key = \"tls/key.pem\"\n";
        let mut text = template
            .replace("{listen}", listen)
            .replace("{dir}", &self.dir.path().display().to_string());
        for (name, value) in &self.vars {
            text = text.replace(&format!("{{{name}}}"), value);
        }
        text
    }

    /// Render the template to `config.toml` in the temp dir and return its path.
    pub fn write_config(&self, template: &str) -> PathBuf {
        self.write("config.toml", self.render(template))
    }

    /// Validate the rendered template and start the gateway on an ephemeral port.
    pub async fn start(self, template: &str) -> TestGateway {
        let text = self.render(template);
        let config = Config::from_toml(&text, self.dir.path())
            .unwrap_or_else(|e| panic!("test config is invalid: {e}\n---\n{text}"));
        self.start_with(config).await
    }

    /// Start the gateway with an already loaded config (e.g. `Config::load`). A config
    /// without `tls_cert` gets plain-HTTP clients and URLs; the raw-TLS helpers then panic.
    pub async fn start_with(self, config: Config) -> TestGateway {
        let tls = config.listen.tls.is_some();
        let gateway = portcullis::start(config).await.expect("gateway starts");
        TestGateway {
            tls,
            addr: gateway.addr(),
            gateway: Some(gateway),
            cert_pem: self.cert_pem,
            dir: self.dir,
        }
    }
}

/// A running gateway and the temp dir its config came from.
pub struct TestGateway {
    pub addr: SocketAddr,
    /// The proxy listener speaks TLS (the `{listen}` template); false for plain HTTP.
    pub tls: bool,
    gateway: Option<Gateway>,
    pub cert_pem: String,
    pub dir: TempDir,
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub version: http::Version,
    /// Every header, names lower-case, duplicates kept.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The value of `name`, panicking when it came more than once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let all: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        assert!(all.len() <= 1, "{name} came {} times: {all:?}", all.len());
        all.first().copied()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The message of an error body (`error_description`; `error` is the code).
    pub fn error(&self) -> String {
        self.json()["error_description"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {}", self.text()))
            .to_owned()
    }

    /// The upstream's echo of the forwarded request (panics on any other body).
    pub fn echo(&self) -> Echo {
        assert_eq!(self.status, 200, "expected the upstream echo: {self:?}");
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not an echo ({e}): {}", self.text()))
    }
}

impl TestGateway {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://ADMIN_ADDR`, when the config has an `[admin]` section (plain HTTP).
    pub fn admin_url(&self) -> Option<String> {
        let addr = self.gateway.as_ref()?.admin_addr()?;
        Some(format!("http://{addr}"))
    }

    /// `https://localhost:PORT{path}` (`http://` without TLS); clients resolve `localhost`
    /// to the gateway.
    pub fn url(&self, path: &str) -> String {
        format!("{}://localhost:{}{path}", self.scheme(), self.port())
    }

    /// `https://{OTHER_HOST}:PORT{path}`, also resolved to the gateway.
    pub fn other_host_url(&self, path: &str) -> String {
        format!("{}://{OTHER_HOST}:{}{path}", self.scheme(), self.port())
    }

    fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    fn client_builder(&self) -> reqwest::ClientBuilder {
        https_client(self.addr, &self.cert_pem)
    }

    /// A client that speaks HTTP/1.1 only (ALPN `http/1.1`).
    pub fn h1(&self) -> reqwest::Client {
        self.client_builder().http1_only().build().expect("client")
    }

    /// A client that speaks HTTP/2 only (ALPN `h2`).
    pub fn h2(&self) -> reqwest::Client {
        self.client_builder()
            .http2_prior_knowledge()
            .build()
            .expect("client")
    }

    /// Collect a reqwest response.
    pub async fn reply(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let version = resp.version();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp.bytes().await.expect("response body").to_vec();
        Reply {
            status,
            version,
            headers,
            body,
        }
    }

    /// Send a reqwest request and collect the response (panics when no response came).
    pub async fn send(req: reqwest::RequestBuilder) -> Reply {
        Self::reply(req.send().await.expect("request")).await
    }

    /// GET `path` over HTTP/1.1, with `Authorization: Bearer <token>` when given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut req = self.h1().get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Self::reply(req.send().await.expect("request")).await
    }

    /// A TLS connection to the gateway offering exactly `alpn`.
    pub async fn tls_stream(&self, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        assert!(self.tls, "the gateway was started without TLS");
        tls_connect(self.addr, &[&self.cert_pem], alpn).await
    }

    /// Send `request` byte for byte over TLS (ALPN `http/1.1`), so header casing, duplicates
    /// and unnormalised paths really go on the wire. The request should carry
    /// `Connection: close`; the reply is read to end of stream.
    pub async fn raw(&self, request: &str) -> Reply {
        let mut tls = self.tls_stream(&[b"http/1.1"]).await;
        let exchange = async {
            tls.write_all(request.as_bytes()).await.expect("write");
            tls.flush().await.expect("flush");
            let mut buf = Vec::new();
            // A peer that closes without close_notify is fine here: keep what arrived.
            let _ = tls.read_to_end(&mut buf).await;
            buf
        };
        let buf = tokio::time::timeout(CLIENT_TIMEOUT, exchange)
            .await
            .expect("raw exchange timed out");
        parse_http1(&buf)
    }

    /// Send `request` over TLS (ALPN `http/1.1`) and collect whatever comes back until the
    /// gateway closes the connection or stays quiet for `quiet`. Unlike [`TestGateway::raw`]
    /// this tolerates a gateway that refuses early: a failed write (the gateway closed while
    /// a huge request was still going out) or a reset counts as a close.
    pub async fn raw_exchange(&self, request: &[u8], quiet: Duration) -> RawExchange {
        let tls = self.tls_stream(&[b"http/1.1"]).await;
        exchange_on(tls, request, quiet).await
    }

    /// A raw `GET path` with `Host: localhost`, the optional token and extra header lines.
    pub async fn raw_get(&self, path: &str, token: Option<&str>, extra: &[&str]) -> Reply {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for line in extra {
            req.push_str(line);
            req.push_str("\r\n");
        }
        req.push_str("Connection: close\r\n\r\n");
        self.raw(&req).await
    }

    /// A raw `GET path` with the token and a client's trace context: [`TRACEPARENT`] and
    /// [`TRACESTATE`], the W3C Trace Context specification's examples.
    pub async fn get_with_trace_context(&self, path: &str, token: &str) -> Reply {
        let traceparent = format!("traceparent: {TRACEPARENT}");
        let tracestate = format!("tracestate: {TRACESTATE}");
        self.raw_get(path, Some(token), &[&traceparent, &tracestate])
            .await
    }

    /// The admin listener's address, when the config has `[admin]`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.gateway.as_ref().and_then(Gateway::admin_addr)
    }

    /// Reload the config file the gateway was started from (see `Gateway::reload`).
    pub async fn reload(&self) -> Result<Vec<String>, String> {
        match &self.gateway {
            Some(g) => g.reload().await,
            None => Err("the gateway was shut down".into()),
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown_with_grace(Duration::from_secs(5)).await;
        }
    }
}

/// A reqwest client builder for a TLS gateway at `addr` (in-process or a child process):
/// trusts only `cert_pem`, resolves `localhost` and [`OTHER_HOST`] to `addr`, ignores proxy
/// settings from the environment, and gives up after [`CLIENT_TIMEOUT`].
pub fn https_client(addr: SocketAddr, cert_pem: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("cert"))
        .resolve("localhost", addr)
        .resolve(OTHER_HOST, addr)
        .no_proxy()
        .timeout(CLIENT_TIMEOUT)
}

/// A TLS connection to `addr` as `localhost`, trusting only the certificates in `roots` (PEM)
/// and offering exactly `alpn`.
pub async fn tls_connect(addr: SocketAddr, roots: &[&str], alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut store = rustls::RootCertStore::empty();
    for pem in roots {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            store.add(cert.expect("cert pem")).expect("root");
        }
    }
    // Two providers are compiled in (reqwest brings ring), so name one explicitly.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake")
}

/// A request to an admin API at `base` (`http://ADDR`) with `Authorization: Bearer token`
/// and an optional JSON body.
pub async fn admin_request(
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Reply {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("client");
    let mut req = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    TestGateway::reply(req.send().await.expect("admin request")).await
}

/// `GET /upstreams` on the gateway's admin listener (asserted 200): every route's targets
/// and their state.
pub async fn admin_upstreams(gw: &TestGateway, token: &str) -> serde_json::Value {
    let base = gw.admin_url().expect("the config has an [admin] listener");
    let r = admin_request(&base, token, reqwest::Method::GET, "/upstreams", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Write `request` on `io` (a failed write is the peer refusing, not a test failure), then
/// read until end of stream, an error, or `quiet` without data. Bounded by [`CLIENT_TIMEOUT`].
pub async fn exchange_on<S>(mut io: S, request: &[u8], quiet: Duration) -> RawExchange
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let run = async {
        let write_failed = match io.write_all(request).await {
            Ok(()) => io.flush().await.is_err(),
            Err(_) => true,
        };
        let mut bytes = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let closed = loop {
            match tokio::time::timeout(quiet, io.read(&mut chunk)).await {
                Err(_) => break false,
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
            }
        };
        RawExchange {
            bytes,
            closed,
            write_failed,
        }
    };
    tokio::time::timeout(CLIENT_TIMEOUT, run)
        .await
        .expect("raw exchange timed out")
}

/// What a raw exchange produced.
#[derive(Debug)]
pub struct RawExchange {
    /// Every byte the gateway sent.
    pub bytes: Vec<u8>,
    /// The gateway closed (or reset) the connection; false when it merely went quiet.
    pub closed: bool,
    /// Writing the request failed: the gateway stopped reading and closed first.
    pub write_failed: bool,
}

impl RawExchange {
    /// Every complete HTTP/1.1 response in the bytes, in order.
    pub fn responses(&self) -> Vec<Reply> {
        let mut out = Vec::new();
        let mut rest = self.bytes.as_slice();
        while rest.windows(4).any(|w| w == b"\r\n\r\n") {
            let (reply, used) = parse_http1_prefix(rest);
            out.push(reply);
            rest = &rest[used..];
        }
        out
    }

    /// The statuses of [`RawExchange::responses`].
    pub fn statuses(&self) -> Vec<u16> {
        self.responses().iter().map(|r| r.status).collect()
    }
}

/// Parse one HTTP/1.1 response (Content-Length, chunked, or read-to-close body).
pub fn parse_http1(buf: &[u8]) -> Reply {
    parse_http1_prefix(buf).0
}

/// Parse the first HTTP/1.1 response in `buf`; returns it with the number of bytes it used.
pub fn parse_http1_prefix(buf: &[u8]) -> (Reply, usize) {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let rest = &buf[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let (body, used) = if chunked {
        decode_chunked(rest)
    } else {
        match headers.iter().find(|(n, _)| n == "content-length") {
            Some((_, len)) => {
                let len: usize = len.parse().expect("content-length");
                let len = len.min(rest.len());
                (rest[..len].to_vec(), len)
            }
            None => (rest.to_vec(), rest.len()),
        }
    };
    let reply = Reply {
        status,
        version: http::Version::HTTP_11,
        headers,
        body,
    };
    (reply, split + 4 + used)
}

/// Decode a chunked body; returns it with the bytes used (through the last chunk and the
/// blank line after it, when present).
fn decode_chunked(buf: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut b = buf;
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            break;
        };
        b = &b[eol + 2..];
        if size == 0 {
            // Skip trailer fields up to the blank line.
            match b.windows(2).position(|w| w == b"\r\n") {
                Some(0) => b = &b[2..],
                _ => {
                    if let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") {
                        b = &b[end + 4..];
                    }
                }
            }
            break;
        }
        if b.len() < size {
            b = &b[b.len()..];
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[(size + 2).min(b.len())..];
    }
    (out, buf.len() - b.len())
}

/// The `[[jwt.keys]]` TOML for an HMAC key with this secret.
pub fn hmac_key_toml(kid: &str, alg: &str, secret: &str) -> String {
    format!("[[jwt.keys]]\nkid = \"{kid}\"\nalg = \"{alg}\"\nsecret = \"{secret}\"\n")
}

/// The `[[jwt.keys]]` TOML for a public key file at `path` (relative to the config).
pub fn public_key_toml(kid: &str, alg: &str, path: &Path) -> String {
    format!(
        "[[jwt.keys]]\nkid = \"{kid}\"\nalg = \"{alg}\"\npublic_key = \"{}\"\n",
        path.display()
    )
}

/// Poll `cond` every 50 ms until it holds or `limit` passes; returns whether it held.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

static GATEWAY_PANICS: AtomicUsize = AtomicUsize::new(0);

/// Count panics on the threads the gateway (and the test upstreams) run on: tokio runtime
/// workers and the gateway's own `portcullis-worker-N` threads. A panic in a spawned task is
/// swallowed by tokio, so without this a crashing connection task would go unnoticed.
/// Call at the start of a test, then assert [`gateway_panics`] is still 0 at its end.
pub fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("");
            if name.starts_with("tokio-runtime-worker") || name.starts_with("portcullis-worker") {
                GATEWAY_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// Panics seen on gateway threads since [`watch_panics`] (shared by every test in a binary).
pub fn gateway_panics() -> usize {
    GATEWAY_PANICS.load(Ordering::SeqCst)
}

/// Resident memory of process `pid` (`"self"` for this one) in KiB, from /proc.
pub fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A private CA and a `localhost` server certificate it signed, for TLS servers the tests
/// run themselves (JWKS over https, rediss://).
pub struct PrivateCa {
    pub ca_pem: String,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
}

pub fn private_ca_for_localhost() -> PrivateCa {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("server key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("server cert");
    PrivateCa {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_pem: key.serialize_pem(),
    }
}

/// An argon2id PHC string with a tiny cost (tests only: the real cost is seconds unoptimised).
pub fn cheap_hash(password: &str) -> String {
    use argon2::password_hash::rand_core::OsRng;
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(256, 1, 1, None).expect("params");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .expect("hash")
        .to_string()
}

/// A sign-in users file (TOML) of `(id, username, password)`, hashed with [`cheap_hash`].
pub fn users_toml(users: &[(&str, &str, &str)]) -> String {
    users
        .iter()
        .map(|(id, name, pw)| {
            format!(
                "[[users]]\nid = \"{id}\"\nusername = \"{name}\"\npassword_hash = \"{}\"\n\n",
                cheap_hash(pw)
            )
        })
        .collect()
}
