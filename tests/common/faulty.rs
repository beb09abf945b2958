//! A misbehaving upstream written against raw TCP, for what a well-behaved HTTP server
//! library cannot be made to do: reset mid-response, answer garbage, stall, send an endless
//! head, close a pooled connection under the gateway.
//!
//! It speaks just enough HTTP/1.1 to read request heads (and skip `Content-Length` or
//! chunked bodies) on a keep-alive connection. The fault is chosen by the last path segment:
//!
//! | segment | behaviour |
//! | --- | --- |
//! | `reset-mid-response` | head with `Content-Length: 1 MiB`, 64 KiB of body, then a TCP reset |
//! | `reset-before-head` | a TCP reset right after reading the request |
//! | `close-before-head` | a clean close (FIN) without any response |
//! | `malformed-status` | `HTTP/1.1 2OO OK` |
//! | `not-http` | an SSH banner instead of a response |
//! | `conflicting-length` | two `Content-Length` headers that disagree |
//! | `endless-head` | header lines without end (up to 8 MiB, until the gateway stops reading) |
//! | `stall` | reads the request and never answers (until the gateway gives up on the connection) |
//! | `close-after` | a normal answer, then the connection is closed 100 ms later, idle in the pool |
//! | `chunked` | `hello, world` in chunks sent apart, a chunk extension, a trailer; keep-alive |
//! | `bad-chunk` | a head announcing chunks, then a chunk size that is not hex |
//! | `close-delimited` | no length: the body runs until the upstream closes |
//! | `te-and-cl` | both `Transfer-Encoding: chunked` and `Content-Length` (a smuggling shape) |
//! | `extra-after-body` | a normal answer followed at once by a second, unasked-for one (`forged`) |
//! | `interim` | `100 Continue` and `103 Early Hints` before the answer |
//! | `slow-head` | the answer one byte at a time |
//! | `head-only` | a head announcing 2 bytes and no body (the answer to a HEAD) |
//! | `big` | [`BIG_BYTES`] of [`big_body`] with `Content-Length`, written 64 KiB at a time |
//! | `big-chunked` | the same body in 64 KiB chunks |
//! | anything else | `200 OK`, body `ok`, keep-alive |

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Body size announced by `reset-mid-response`.
pub const RESET_ANNOUNCED_BYTES: usize = 1024 * 1024;
/// Body bytes `reset-mid-response` sends before the reset.
pub const RESET_SENT_BYTES: usize = 64 * 1024;

/// Size of the `big` and `big-chunked` answers.
pub const BIG_BYTES: usize = 3 * 1024 * 1024 + 17;

/// The body of the `big` answers: a pattern no two 64 KiB pieces share, so a lost, repeated
/// or reordered piece changes it.
pub fn big_body() -> Vec<u8> {
    (0..BIG_BYTES)
        .map(|i| (i % 251) as u8 ^ (i / 65536) as u8)
        .collect()
}

/// A running faulty upstream.
pub struct FaultyUpstream {
    pub addr: SocketAddr,
    seen: Arc<Seen>,
}

#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    /// Connections accepted and not yet ended (by either side).
    open: AtomicUsize,
    /// Request paths in arrival order.
    paths: Mutex<Vec<String>>,
}

impl FaultyUpstream {
    /// Bind 127.0.0.1:0 and serve until the runtime shuts down.
    pub async fn start() -> FaultyUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let state = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                state.connections.fetch_add(1, Ordering::SeqCst);
                state.open.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                tokio::spawn(async move {
                    serve(stream, state.clone()).await;
                    state.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        FaultyUpstream { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    /// TCP connections open now (accepted, and neither side has ended them yet).
    pub fn open(&self) -> usize {
        self.seen.open.load(Ordering::SeqCst)
    }

    /// Paths of every request head read so far.
    pub fn paths(&self) -> Vec<String> {
        self.seen.paths.lock().expect("lock").clone()
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";

async fn serve(mut stream: TcpStream, seen: Arc<Seen>) {
    let mut buf = Vec::new();
    while let Some(path) = read_request(&mut stream, &mut buf).await {
        seen.paths.lock().expect("lock").push(path.clone());
        let fault = path.rsplit('/').next().unwrap_or("").to_owned();
        match fault.as_str() {
            "reset-mid-response" => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {RESET_ANNOUNCED_BYTES}\r\ncontent-type: application/octet-stream\r\n\r\n"
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&[b'x'; RESET_SENT_BYTES]).await;
                let _ = stream.flush().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                reset(stream);
                return;
            }
            "reset-before-head" => {
                reset(stream);
                return;
            }
            "close-before-head" => {
                let _ = stream.shutdown().await;
                return;
            }
            "malformed-status" => {
                let _ = stream
                    .write_all(b"HTTP/1.1 2OO OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                let _ = stream.shutdown().await;
                return;
            }
            "not-http" => {
                let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await;
                let _ = stream.shutdown().await;
                return;
            }
            "conflicting-length" => {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 40\r\n\r\nok",
                    )
                    .await;
                let _ = stream.shutdown().await;
                return;
            }
            "endless-head" => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n").await;
                let line = format!("x-filler: {}\r\n", "f".repeat(1000));
                for _ in 0..8 * 1024 {
                    if stream.write_all(line.as_bytes()).await.is_err() {
                        break;
                    }
                }
                return;
            }
            "stall" => {
                // Hold the connection until the gateway drops it (or 30 s pass).
                let mut one = [0u8; 1];
                let _ = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut one)).await;
                return;
            }
            "close-after" => {
                if stream.write_all(OK).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = stream.shutdown().await;
                return;
            }
            "chunked" => {
                for part in [
                    &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"[..],
                    b"5\r\nhello\r\n",
                    b"7;ext=1\r\n, world\r\n",
                    b"0\r\nx-trailer: t\r\n\r\n",
                ] {
                    if stream.write_all(part).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            "bad-chunk" => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n")
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
            "close-delimited" => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil ").await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = stream.write_all(b"the end").await;
                let _ = stream.shutdown().await;
                return;
            }
            "te-and-cl" => {
                if stream
                    .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 40\r\n\r\n2\r\nok\r\n0\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
            }
            "extra-after-body" => {
                let mut both = OK.to_vec();
                both.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged");
                if stream.write_all(&both).await.is_err() {
                    return;
                }
            }
            "interim" => {
                let mut all = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\n".to_vec();
                all.extend_from_slice(OK);
                if stream.write_all(&all).await.is_err() {
                    return;
                }
            }
            "slow-head" => {
                for b in OK {
                    if stream.write_all(&[*b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            "big" | "big-chunked" => {
                let chunked = fault == "big-chunked";
                let head = if chunked {
                    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_owned()
                } else {
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG_BYTES}\r\n\r\n")
                };
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for piece in big_body().chunks(64 * 1024) {
                    let mut out = Vec::with_capacity(piece.len() + 16);
                    if chunked {
                        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    }
                    out.extend_from_slice(piece);
                    if chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                    if stream.write_all(&out).await.is_err() {
                        return;
                    }
                }
                if chunked && stream.write_all(b"0\r\n\r\n").await.is_err() {
                    return;
                }
            }
            "head-only" => {
                if stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
            }
            _ => {
                if stream.write_all(OK).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Close with a TCP reset (SO_LINGER 0) instead of a FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Read one request head (and skip its body); returns its path, or `None` at end of stream.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if !fill(stream, buf).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.ends_with("chunked")) {
        // Skip chunks up to the last one and its blank line (no trailers expected).
        loop {
            if let Some(i) = buf.windows(5).position(|w| w == b"0\r\n\r\n") {
                buf.drain(..i + 5);
                break;
            }
            if !fill(stream, buf).await {
                return None;
            }
        }
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while buf.len() < len {
            if !fill(stream, buf).await {
                return None;
            }
        }
        buf.drain(..len);
    }
    Some(path)
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}
