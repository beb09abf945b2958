//! A real upstream for the gateway to forward to: a hyper 1 HTTP/1.1 server on an ephemeral
//! port that records every request it receives, so a test can assert on what actually got
//! through the gateway, not only on the status the client saw.
//!
//! Endpoints, matched on the last segments of the path (the gateway forwards the full path,
//! prefix included):
//! - `.../stream/<N>`: N deterministic pseudo-random bytes in 64 KiB chunks, with their
//!   SHA-256 in `x-body-sha256`;
//! - `.../zeros/<N>`: N zero bytes, generated chunk by chunk as the client reads (constant
//!   memory on the upstream side, however large N is);
//! - `.../slow/<ms>`: sleeps, then echoes;
//! - `.../drip`: a streaming answer of [`DRIP_CHUNKS`] chunks of 1 KiB, [`DRIP_INTERVAL`]
//!   apart (a response still in flight while the test does something else);
//! - `.../hop-response`: echoes, with hop-by-hop headers on the response;
//! - `.../upstream-cors`: echoes, with the upstream's own permissive `Access-Control-*`
//!   headers on the response (which the gateway must replace where `[cors]` is on);
//! - `.../ws`: WebSocket echo (text and binary messages are sent back unchanged);
//! - `.../h2c` with `Upgrade: h2c`: switches to HTTP/2 (RFC 7540 section 3.2) and serves these
//!   same endpoints on the upgraded connection, as an h2c-capable backend would;
//! - anything else: echo, a JSON [`Echo`] computed while streaming the request body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

/// Size of each chunk `/stream/<N>` writes.
const STREAM_CHUNK_BYTES: usize = 64 * 1024;
/// Chunks of 1 KiB `.../drip` sends.
pub const DRIP_CHUNKS: usize = 20;
/// The pause before each `.../drip` chunk (1.5 s in all).
pub const DRIP_INTERVAL: Duration = Duration::from_millis(75);

/// What the echo endpoint answers: the request exactly as the upstream received it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Echo {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Every header in arrival order, duplicates kept, names lower-case (hyper's parse).
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    /// Lower-case hex.
    pub body_sha256: String,
    /// Trailer fields that arrived after the body, if any.
    #[serde(default)]
    pub trailers: Vec<(String, String)>,
    /// The HTTP version the request arrived in (`HTTP/1.1`, `HTTP/2.0`).
    #[serde(default)]
    pub version: String,
}

impl Echo {
    /// Every value of the header `name` (case-insensitive).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of `name`, panicking when the upstream received more than one copy.
    pub fn one(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(
            all.len() <= 1,
            "upstream got {name} {} times: {all:?}",
            all.len()
        );
        all.first().copied()
    }

    /// Every header whose name equals `name` once `_` is read as `-` and case is ignored:
    /// the spellings a CGI-style upstream would treat as the same header.
    pub fn spellings_of(&self, name: &str) -> Vec<(&str, &str)> {
        let want = name.replace('_', "-").to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| n.replace('_', "-").to_ascii_lowercase() == want)
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }
}

/// A running upstream. Dropping it leaves the server running until the test's runtime ends.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Seen>,
}

#[derive(Default)]
struct Seen {
    hits: AtomicUsize,
    requests: Mutex<Vec<Echo>>,
}

impl Upstream {
    /// Bind 127.0.0.1:0 and serve until the runtime shuts down.
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        Upstream::serve(listener)
    }

    /// Serve on a listener the test bound itself (another loopback address, say) until the
    /// runtime shuts down.
    pub fn serve(listener: TcpListener) -> Upstream {
        let addr = listener.local_addr().expect("upstream addr");
        let seen = Arc::new(Seen::default());
        let state = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream { addr, seen }
    }

    /// Like [`Upstream::start`], but speaking HTTP/1.1 and HTTP/2 (h2c by prior knowledge on
    /// plain TCP; over TLS when `tls` is given, ALPN deciding), the same endpoints.
    pub async fn start_auto(tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let seen = Arc::new(Seen::default());
        let state = seen.clone();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                .await;
                        }
                        Some(acceptor) => {
                            // A failed handshake (wrong CA, no client certificate) just
                            // closes the connection, as a real server would.
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        Upstream { addr, seen }
    }

    /// `https://localhost:PORT` (the name test certificates are issued for).
    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// `http://127.0.0.1:PORT`, for a route's `upstream`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests (of any kind) reached this upstream.
    pub fn hits(&self) -> usize {
        self.seen.hits.load(Ordering::SeqCst)
    }

    /// Every request this upstream received, in order (body fields filled in once read).
    pub fn requests(&self) -> Vec<Echo> {
        self.seen.requests.lock().expect("lock").clone()
    }
}

/// An address nothing listens on, and nothing else can take: a socket bound to an ephemeral
/// port but never listening (so a connection is refused with a reset), kept open for the life
/// of the test process. Closing it instead would hand the port back to the kernel, and a busy
/// machine may give it to the next test's listener.
pub fn dead_addr() -> SocketAddr {
    use socket2::{Domain, Protocol, Socket, Type};
    static HELD: Mutex<Vec<Socket>> = Mutex::new(Vec::new());
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .expect("socket for a dead port");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind a dead port");
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("dead port address");
    HELD.lock().expect("lock").push(socket);
    addr
}

type UpBody = BoxBody<Bytes, Infallible>;

async fn handle(seen: Arc<Seen>, req: Request<Incoming>) -> Result<Response<UpBody>, Infallible> {
    seen.hits.fetch_add(1, Ordering::SeqCst);
    let segments: Vec<String> = req
        .uri()
        .path()
        .rsplit('/')
        .take(2)
        .map(str::to_owned)
        .collect();
    let (last, before) = (
        segments.first().map(String::as_str).unwrap_or(""),
        segments.get(1).map(String::as_str).unwrap_or(""),
    );
    if last == "ws" && req.headers().contains_key(header::UPGRADE) {
        record(&seen, &req, 0, String::new());
        return Ok(websocket(req));
    }
    let upgrade = req.headers().get(header::UPGRADE);
    if last == "h2c" && upgrade.is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"h2c")) {
        record(&seen, &req, 0, String::new());
        return Ok(h2c(seen, req));
    }
    if before == "stream" {
        if let Ok(n) = last.parse::<usize>() {
            record(&seen, &req, 0, String::new());
            return Ok(stream_response(n));
        }
    }
    if before == "zeros" {
        if let Ok(n) = last.parse::<usize>() {
            record(&seen, &req, 0, String::new());
            return Ok(zeros_response(n));
        }
    }
    if last == "drip" {
        record(&seen, &req, 0, String::new());
        return Ok(drip_response());
    }
    if before == "slow" {
        if let Ok(ms) = last.parse::<u64>() {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
    let hop = last == "hop-response";
    let echo = echo(&seen, req).await;
    let body = serde_json::to_vec(&echo).expect("echo json");
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-upstream", "echo");
    if last == "upstream-cors" {
        resp = resp
            .header("access-control-allow-origin", "*")
            .header("access-control-allow-methods", "GET, POST, DELETE")
            .header("access-control-allow-credentials", "true");
    }
    if hop {
        resp = resp
            .header(header::CONNECTION, "x-upstream-hop")
            .header("x-upstream-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("x-end-to-end", "kept");
    }
    Ok(resp.body(full(body)).expect("response"))
}

fn full(b: impl Into<Bytes>) -> UpBody {
    Full::new(b.into()).boxed()
}

fn header_pairs(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn record(seen: &Seen, req: &Request<Incoming>, body_len: u64, body_sha256: String) -> Echo {
    let echo = Echo {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        headers: header_pairs(req.headers()),
        body_len,
        body_sha256,
        trailers: Vec::new(),
        version: format!("{:?}", req.version()),
    };
    seen.requests.lock().expect("lock").push(echo.clone());
    echo
}

/// Read the body frame by frame, hashing as it streams (never buffering it whole).
async fn echo(seen: &Seen, req: Request<Incoming>) -> Echo {
    let (parts, mut body) = req.into_parts();
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let mut trailers = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        match frame.into_data() {
            Ok(data) => {
                hasher.update(&data);
                len += data.len() as u64;
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers.extend(header_pairs(&t));
                }
            }
        }
    }
    let req = Request::from_parts(parts, ());
    let echo = Echo {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        headers: header_pairs(req.headers()),
        body_len: len,
        body_sha256: hex(&hasher.finalize()),
        trailers,
        version: format!("{:?}", req.version()),
    };
    seen.requests.lock().expect("lock").push(echo.clone());
    echo
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` deterministic pseudo-random bytes (xorshift64*, fixed seed): the same on both ends.
pub fn pseudo_random_bytes(n: usize) -> Bytes {
    pseudo_random(n).0
}

/// SHA-256 (hex) of [`pseudo_random_bytes`]`(n)`.
pub fn pseudo_random_sha256(n: usize) -> String {
    pseudo_random(n).1
}

/// Generating and hashing tens of MiB is slow in a debug build: do it once per size.
fn pseudo_random(n: usize) -> (Bytes, String) {
    static CACHE: Mutex<Vec<(usize, Bytes, String)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().expect("lock");
    if let Some((_, data, sha)) = cache.iter().find(|(len, _, _)| *len == n) {
        return (data.clone(), sha.clone());
    }
    let mut out = Vec::with_capacity(n + 8);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    let data = Bytes::from(out);
    let sha = hex(&Sha256::digest(&data));
    cache.push((n, data.clone(), sha.clone()));
    (data, sha)
}

fn stream_response(n: usize) -> Response<UpBody> {
    let (data, sha) = pseudo_random(n);
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = (0..n)
        .step_by(STREAM_CHUNK_BYTES)
        .map(|i| Ok(Frame::data(data.slice(i..n.min(i + STREAM_CHUNK_BYTES)))))
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    Response::builder()
        .header("x-body-sha256", sha)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(BodyExt::boxed(body))
        .expect("response")
}

/// [`DRIP_CHUNKS`] chunks of 1 KiB of `x`, each after [`DRIP_INTERVAL`].
fn drip_response() -> Response<UpBody> {
    let chunks = futures_util::stream::unfold(0usize, |i| async move {
        if i == DRIP_CHUNKS {
            return None;
        }
        tokio::time::sleep(DRIP_INTERVAL).await;
        Some((
            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; 1024]))),
            i + 1,
        ))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(BodyExt::boxed(StreamBody::new(chunks)))
        .expect("response")
}

static ZEROS: [u8; STREAM_CHUNK_BYTES] = [0; STREAM_CHUNK_BYTES];

/// `n` zero bytes; each chunk is produced only when the connection asks for it.
fn zeros_response(n: usize) -> Response<UpBody> {
    let chunks = (0..n).step_by(STREAM_CHUNK_BYTES).map(move |i| {
        let len = STREAM_CHUNK_BYTES.min(n - i);
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(&ZEROS[..len])))
    });
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    Response::builder()
        .header(header::CONTENT_LENGTH, n)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(BodyExt::boxed(body))
        .expect("response")
}

/// Switch to cleartext HTTP/2 and serve every later request on the connection.
fn h2c(seen: Arc<Seen>, mut req: Request<Incoming>) -> Response<UpBody> {
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let svc = service_fn(move |req| handle(seen.clone(), req));
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(upgraded, svc)
            .await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "h2c")
        .body(full(Bytes::new()))
        .expect("response")
}

/// Answer a WebSocket upgrade (RFC 6455 section 4.2.2) and echo every data message.
fn websocket(mut req: Request<Incoming>) -> Response<UpBody> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(full("missing sec-websocket-key"))
            .expect("response");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    break;
                }
            } else if msg.is_close() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .body(full(Bytes::new()))
        .expect("response")
}
