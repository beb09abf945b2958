//! Attacks on the HTTP layer, sent as raw bytes over TLS so that nothing normalises them on
//! the way: request smuggling (conflicting or obfuscated framing, bad chunk sizes), oversized
//! heads, slowloris, a client that stops reading, idle connections past the cap, and HTTP/2
//! abuse (rapid reset, oversized header lists, CONTINUATION floods, HPACK bombs) written
//! frame by frame.
//!
//! The smuggling route is public on purpose: if the gateway ever read a second request out of
//! a body (or a body out of a second request), the upstream would see `/smuggled`.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::BinaryGateway;
use common::{
    exchange_on, gateway_panics, rss_kib, watch_panics, Env, RawExchange, Reply, Setup,
    TestGateway, Upstream,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Request head limit configured for these tests (the smallest the config allows).
const MAX_HEADER_BYTES: usize = 8192;
const MAX_HEADERS: usize = 50;
/// `[listen] header_read_timeout` for these tests.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// A request the upstream must never receive: it exists only inside another request.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// A gateway with one public route to a recording upstream, small head limits and a 1 s
/// header read timeout.
async fn env() -> Env {
    watch_panics();
    let config = format!(
        "{{listen}}header_read_timeout = \"{}ms\"\nhandshake_timeout = \"1s\"\n\n[limits]\nmax_header_bytes = {MAX_HEADER_BYTES}\nmax_headers = {MAX_HEADERS}\n\n[[routes]]\nprefix = \"/\"\nupstream = \"{{up}}\"\nauth = \"public\"\n",
        HEADER_READ_TIMEOUT.as_millis(),
    );
    Env::start(Setup::new(), &config).await
}

impl Env {
    /// The gateway still answers an honest request, and no gateway task panicked.
    async fn still_serving(&self) {
        let r = self.gw.get("/honest", None).await;
        assert_eq!(r.echo().path, "/honest");
        assert_eq!(gateway_panics(), 0, "a gateway task panicked (see the log)");
    }

    fn upstream_paths(&self) -> Vec<String> {
        self.up.requests().into_iter().map(|e| e.path).collect()
    }
}

// ---------------------------------------------------------------------------------------
// Request smuggling
// ---------------------------------------------------------------------------------------

/// What the gateway may do with an ambiguous or malformed request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// 400 and nothing reaches the upstream.
    Reject,
    /// 400, or the request is read one way (as chunked, RFC 9112 section 6.3) and answered,
    /// after which the connection is closed, so nothing after the body is ever read as a
    /// request.
    RejectOrCloseAfter,
}

/// The body of a CL.TE attempt: read as chunked it ends after `0`, leaving [`SMUGGLED`];
/// read by its Content-Length it is all body.
fn cl_te_body() -> String {
    format!("0\r\n\r\n{SMUGGLED}")
}

/// The body of a TE.CL attempt, sent with `Content-Length: 4`: read by Content-Length the
/// body is the chunk-size line and [`SMUGGLED`] follows; read as chunked it is all body.
fn te_cl_body() -> String {
    let size = format!("{:x}\r\n", SMUGGLED.len());
    assert_eq!(
        size.len(),
        4,
        "the chunk-size line must be exactly Content-Length bytes"
    );
    format!("{size}{SMUGGLED}\r\n0\r\n\r\n")
}

/// POST `/first` with these framing header lines and this body, on a keep-alive connection.
async fn send_framed(env: &Env, framing: &[&str], body: &str) -> RawExchange {
    let mut req = String::from("POST /first HTTP/1.1\r\nHost: localhost\r\n");
    for line in framing {
        req.push_str(line);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    env.gw
        .raw_exchange(req.as_bytes(), HEADER_READ_TIMEOUT * 2)
        .await
}

/// Send both attempts (CL.TE and TE.CL) with these transfer-coding header lines and check
/// the outcome of each.
async fn assert_not_smuggled(env: &Env, te_lines: &[&str], expect: Expect) {
    let cl_te = cl_te_body();
    let cl_te_len = format!("Content-Length: {}", cl_te.len());
    let attempts: [(Vec<&str>, String, &str); 4] = [
        (
            [&[cl_te_len.as_str()][..], te_lines].concat(),
            cl_te.clone(),
            "CL.TE, Content-Length first",
        ),
        (
            [te_lines, &[cl_te_len.as_str()][..]].concat(),
            cl_te,
            "CL.TE, Content-Length last",
        ),
        (
            [&["Content-Length: 4"][..], te_lines].concat(),
            te_cl_body(),
            "TE.CL, Content-Length first",
        ),
        (
            [te_lines, &["Content-Length: 4"][..]].concat(),
            te_cl_body(),
            "TE.CL, Content-Length last",
        ),
    ];
    for (framing, body, what) in attempts {
        let hits_before = env.up.hits();
        let ex = send_framed(env, &framing, &body).await;
        let statuses = ex.statuses();
        let what = format!("{te_lines:?}, {what}: statuses {statuses:?}");
        assert!(
            !env.upstream_paths().iter().any(|p| p == "/smuggled"),
            "{what}: the upstream received the smuggled request: {:?}",
            env.upstream_paths()
        );
        assert!(statuses.len() <= 1, "{what}: more than one response");
        match expect {
            Expect::Reject => {
                assert_eq!(statuses, [400], "{what}");
                assert_eq!(env.up.hits(), hits_before, "{what}: reached the upstream");
            }
            Expect::RejectOrCloseAfter => {
                assert!(
                    statuses == [400] || statuses == [200],
                    "{what}: want 400, or 200 for the request read as chunked"
                );
                assert!(
                    ex.closed,
                    "{what}: the connection stayed open after an ambiguous request"
                );
                assert!(env.up.hits() <= hits_before + 1, "{what}");
            }
        }
        if statuses == [200] {
            // Read as chunked: the upstream got one request whose body is exactly the chunk
            // data, framed by the gateway (no Content-Length left over from the client).
            let echo = env.up.requests().pop().expect("the forwarded request");
            assert_eq!(echo.path, "/first", "{what}");
            if let Some(cl) = echo.one("content-length") {
                assert_eq!(
                    cl,
                    echo.body_len.to_string(),
                    "{what}: stale Content-Length"
                );
            }
            assert!(echo
                .one("transfer-encoding")
                .is_none_or(|te| te == "chunked"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_together_with_transfer_encoding_is_not_smuggled() {
    let env = env().await;
    assert_not_smuggled(
        &env,
        &["Transfer-Encoding: chunked"],
        Expect::RejectOrCloseAfter,
    )
    .await;
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_xchunked_is_400() {
    let env = env().await;
    assert_not_smuggled(&env, &["Transfer-Encoding: xchunked"], Expect::Reject).await;
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_with_extra_leading_space_is_not_smuggled() {
    let env = env().await;
    assert_not_smuggled(
        &env,
        &["Transfer-Encoding:  chunked"],
        Expect::RejectOrCloseAfter,
    )
    .await;
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_after_a_tab_is_not_smuggled() {
    let env = env().await;
    assert_not_smuggled(
        &env,
        &["Transfer-Encoding:\tchunked"],
        Expect::RejectOrCloseAfter,
    )
    .await;
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_chunked_then_identity_is_400() {
    // `chunked` must be the final coding of a request (RFC 9112 section 6.3).
    let env = env().await;
    assert_not_smuggled(
        &env,
        &["Transfer-Encoding: chunked, identity"],
        Expect::Reject,
    )
    .await;
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_duplicated_is_not_smuggled() {
    let env = env().await;
    // The last line decides: not chunked, refused.
    assert_not_smuggled(
        &env,
        &["Transfer-Encoding: chunked", "Transfer-Encoding: identity"],
        Expect::Reject,
    )
    .await;
    assert_not_smuggled(
        &env,
        &["Transfer-Encoding: chunked", "Transfer-Encoding: x"],
        Expect::Reject,
    )
    .await;
    // Chunked last: read as chunked, then the connection closes.
    assert_not_smuggled(
        &env,
        &["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
        Expect::RejectOrCloseAfter,
    )
    .await;
    assert_not_smuggled(
        &env,
        &["Transfer-Encoding: identity", "Transfer-Encoding: chunked"],
        Expect::RejectOrCloseAfter,
    )
    .await;
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_with_space_before_the_colon_is_400() {
    // RFC 9112 section 5.1: a server MUST reject whitespace between field name and colon.
    let env = env().await;
    assert_not_smuggled(&env, &["Transfer-Encoding : chunked"], Expect::Reject).await;
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_quoted_or_with_parameters_is_400() {
    let env = env().await;
    for te in [
        "Transfer-Encoding: \"chunked\"",
        "Transfer-Encoding: chunked;q=1",
        "Transfer-Encoding: chunk",
    ] {
        assert_not_smuggled(&env, &[te], Expect::Reject).await;
    }
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_in_http10_is_400() {
    // HTTP/1.0 has no transfer codings (RFC 9112 section 6.1).
    let env = env().await;
    let body = cl_te_body();
    let req = format!(
        "POST /first HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    let ex = env
        .gw
        .raw_exchange(req.as_bytes(), HEADER_READ_TIMEOUT * 2)
        .await;
    assert_eq!(ex.statuses(), [400]);
    assert_eq!(env.up.hits(), 0);
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_headers_spelled_with_underscores_are_not_forwarded() {
    // `Transfer_Encoding` and `Content_Length` are no framing headers to the gateway, which
    // frames the body by the real one; a CGI-style upstream (`_` read as `-`, as for the
    // identity headers the gateway already strips in every spelling) would see a second,
    // conflicting framing and could disagree with the gateway about where the request ends.
    let env = env().await;
    let te_cl = te_cl_body();
    let cl_te = cl_te_body();
    let cases = [
        (
            format!(
                "Transfer_Encoding: chunked\r\nContent-Length: {}",
                te_cl.len()
            ),
            &te_cl,
            "transfer-encoding",
        ),
        (
            format!(
                "transfer_encoding: chunked\r\nContent-Length: {}",
                te_cl.len()
            ),
            &te_cl,
            "transfer-encoding",
        ),
        (
            "Content_Length: 4\r\nTransfer-Encoding: chunked".to_owned(),
            &cl_te,
            "content-length",
        ),
    ];
    for (lines, body, name) in cases {
        let req = format!(
            "POST /first HTTP/1.1\r\nHost: localhost\r\n{lines}\r\nConnection: close\r\n\r\n{body}"
        );
        let ex = env
            .gw
            .raw_exchange(req.as_bytes(), HEADER_READ_TIMEOUT * 2)
            .await;
        let statuses = ex.statuses();
        let what = lines.replace("\r\n", " | ");
        assert!(
            statuses == [400] || statuses == [200],
            "{what}: {statuses:?}"
        );
        if statuses == [200] {
            let echo = env.up.requests().pop().expect("forwarded request");
            let spellings: Vec<_> = echo
                .spellings_of(name)
                .into_iter()
                .filter(|(n, _)| n.contains('_'))
                .collect();
            assert!(
                spellings.is_empty(),
                "{what}: the upstream got {spellings:?} next to the gateway's own framing"
            );
        }
    }
    assert!(!env.upstream_paths().iter().any(|p| p == "/smuggled"));
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_content_length_with_different_values_is_400() {
    let env = env().await;
    let body = te_cl_body();
    let n = body.len();
    for framing in [
        vec![
            "Content-Length: 4".to_owned(),
            format!("Content-Length: {n}"),
        ],
        vec![
            format!("Content-Length: {n}"),
            "Content-Length: 4".to_owned(),
        ],
        vec![format!("Content-Length: 4, {n}")],
        vec![format!("Content-Length: {n}, 4")],
    ] {
        let lines: Vec<&str> = framing.iter().map(String::as_str).collect();
        let ex = send_framed(&env, &lines, &body).await;
        assert_eq!(ex.statuses(), [400], "{framing:?}");
    }
    assert_eq!(env.up.hits(), 0, "{:?}", env.upstream_paths());
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_content_length_is_400() {
    let env = env().await;
    let body = te_cl_body();
    for value in [
        "+4",
        "-4",
        "0x4",
        "4 4",
        "4.0",
        "",
        "four",
        "99999999999999999999999",
    ] {
        let line = format!("Content-Length: {value}");
        let ex = send_framed(&env, &[&line], &body).await;
        assert_eq!(ex.statuses(), [400], "{line}");
    }
    assert_eq!(env.up.hits(), 0, "{:?}", env.upstream_paths());
    env.still_serving().await;
}

/// A chunked request whose first chunk-size line is `size_line`, followed by data that holds
/// [`SMUGGLED`] whichever way a lenient parser might read the size.
async fn assert_bad_chunk_refused(env: &Env, size_line: &str) {
    let body = format!("{size_line}\r\n{SMUGGLED}\r\n0\r\n\r\n{SMUGGLED}");
    let ex = send_framed(env, &["Transfer-Encoding: chunked"], &body).await;
    let statuses = ex.statuses();
    // The head may already be on its way upstream when the body turns out to be malformed
    // (bodies are streamed): the client then gets 400 or 502, or the connection is closed.
    assert!(
        statuses.iter().all(|s| *s == 400 || *s == 502),
        "chunk size {size_line:?}: {statuses:?}"
    );
    assert!(
        statuses.len() <= 1,
        "chunk size {size_line:?}: {statuses:?}"
    );
    assert!(ex.closed, "chunk size {size_line:?}: connection kept open");
    let paths = env.upstream_paths();
    assert!(
        !paths.iter().any(|p| p == "/smuggled"),
        "chunk size {size_line:?}: {paths:?}"
    );
    // Whatever reached the upstream was never a complete, successful request.
    for echo in env.up.requests() {
        assert_ne!(
            echo.body_len as usize,
            SMUGGLED.len(),
            "chunk size {size_line:?}: the upstream got a complete body"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_size_with_0x_prefix_is_refused() {
    let env = env().await;
    assert_bad_chunk_refused(&env, &format!("0x{:x}", SMUGGLED.len())).await;
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_chunk_size_is_refused() {
    let env = env().await;
    assert_bad_chunk_refused(&env, "-1").await;
    assert_bad_chunk_refused(&env, &format!("-{:x}", SMUGGLED.len())).await;
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_chunk_size_is_refused() {
    let env = env().await;
    // Past u64: a parser that wraps would read a small size.
    assert_bad_chunk_refused(&env, "1000000000000000000000000000002c").await;
    assert_bad_chunk_refused(&env, "ffffffffffffffffff").await;
    // Leading zeros are legal but not without end.
    assert_bad_chunk_refused(&env, &format!("{}2c", "0".repeat(10_000))).await;
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_size_with_garbage_is_refused() {
    let env = env().await;
    for size in ["2c 2c", "2c\u{0}", "g", " ", ""] {
        assert_bad_chunk_refused(&env, size).await;
    }
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_chunk_extensions_are_refused() {
    // Chunk extensions are skipped by the parser; unbounded ones would be a way to make it
    // read forever without producing body bytes.
    let env = env().await;
    assert_bad_chunk_refused(&env, &format!("2c;{}", "x".repeat(64 * 1024))).await;
    env.still_serving().await;
}

// ---------------------------------------------------------------------------------------
// Oversized heads
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_header_is_431() {
    let env = env().await;
    let big = format!("X-Big: {}", "b".repeat(MAX_HEADER_BYTES * 2));
    let req = format!("GET /big HTTP/1.1\r\nHost: localhost\r\n{big}\r\nConnection: close\r\n\r\n");
    let ex = env
        .gw
        .raw_exchange(req.as_bytes(), HEADER_READ_TIMEOUT * 2)
        .await;
    assert_eq!(
        ex.statuses(),
        [431],
        "{:?}",
        String::from_utf8_lossy(&ex.bytes)
    );
    assert_eq!(env.up.hits(), 0);
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_headers_over_the_byte_limit_are_431() {
    let env = env().await;
    let mut req = String::from("GET /big HTTP/1.1\r\nHost: localhost\r\n");
    // Fewer than MAX_HEADERS lines, but together over MAX_HEADER_BYTES.
    for i in 0..(MAX_HEADERS - 5) {
        req.push_str(&format!("X-H{i}: {}\r\n", "v".repeat(400)));
    }
    req.push_str("Connection: close\r\n\r\n");
    assert!(req.len() > MAX_HEADER_BYTES);
    let ex = env
        .gw
        .raw_exchange(req.as_bytes(), HEADER_READ_TIMEOUT * 2)
        .await;
    assert_eq!(ex.statuses(), [431]);
    assert_eq!(env.up.hits(), 0);
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_is_431() {
    let env = env().await;
    let mut req = String::from("GET /many HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..MAX_HEADERS + 10 {
        req.push_str(&format!("X-{i}: v\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    assert!(req.len() < MAX_HEADER_BYTES, "only the count is over");
    let ex = env
        .gw
        .raw_exchange(req.as_bytes(), HEADER_READ_TIMEOUT * 2)
        .await;
    assert_eq!(ex.statuses(), [431]);
    assert_eq!(env.up.hits(), 0);
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_line_is_refused() {
    let env = env().await;
    let req = format!(
        "GET /{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        "a".repeat(MAX_HEADER_BYTES * 2)
    );
    let ex = env
        .gw
        .raw_exchange(req.as_bytes(), HEADER_READ_TIMEOUT * 2)
        .await;
    let statuses = ex.statuses();
    assert!(statuses == [431] || statuses == [414], "{statuses:?}");
    assert_eq!(env.up.hits(), 0);
    env.still_serving().await;
}

// ---------------------------------------------------------------------------------------
// Slow clients
// ---------------------------------------------------------------------------------------

/// Keep writing `prefix` then one byte of `trickle` every 100 ms until the gateway closes the
/// connection; returns how long after the first byte that happened and what it sent.
async fn trickle_until_closed<S>(io: S, prefix: &[u8], trickle: &[u8]) -> (Duration, Vec<u8>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let _ = rd.read_to_end(&mut got).await;
        (start.elapsed(), got)
    });
    let _ = wr.write_all(prefix).await;
    let _ = wr.flush().await;
    for b in trickle.iter().cycle() {
        if reader.is_finished() || start.elapsed() > Duration::from_secs(8) {
            break;
        }
        if wr.write_all(&[*b]).await.is_err() || wr.flush().await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::timeout(Duration::from_secs(2), reader)
        .await
        .expect("the gateway never closed the trickling connection")
        .expect("reader task")
}

/// The gateway cut the connection within a bounded time of the timeout and sent no
/// response other than 408.
fn assert_cut(took: Duration, got: &[u8], timeout: Duration, what: &str) {
    assert!(
        took >= timeout - Duration::from_millis(100) && took < timeout * 3,
        "{what}: closed after {took:?}, timeout {timeout:?}"
    );
    if !got.is_empty() {
        let r = common::parse_http1(got);
        assert_eq!(r.status, 408, "{what}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_by_header_read_timeout() {
    let env = env().await;
    let tls = env.gw.tls_stream(&[b"http/1.1"]).await;
    let honest = async {
        // An honest client is served while the slow one trickles.
        tokio::time::sleep(Duration::from_millis(300)).await;
        env.gw.get("/honest-during", None).await
    };
    let ((took, got), honest) = tokio::join!(
        trickle_until_closed(
            tls,
            b"GET /slow HTTP/1.1\r\nHost: localhost\r\n",
            b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n"
        ),
        honest
    );
    assert_cut(took, &got, HEADER_READ_TIMEOUT, "slowloris");
    assert_eq!(honest.echo().path, "/honest-during");
    assert!(!env.upstream_paths().iter().any(|p| p == "/slow"));
    env.still_serving().await;
}

/// Open a TLS connection offering `alpn`, send nothing, and return how long the gateway
/// took to close it and what it sent (panics if it is still open after 5 s).
async fn silent_connection(gw: &TestGateway, alpn: &[u8]) -> (Duration, Vec<u8>) {
    let mut tls = gw.tls_stream(&[alpn]).await;
    let start = Instant::now();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut got))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "a TLS connection (ALPN {}) that never sent a byte is still open after 5 s (header_read_timeout {HEADER_READ_TIMEOUT:?})",
                String::from_utf8_lossy(alpn)
            )
        });
    (start.elapsed(), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed_by_header_read_timeout() {
    // Slowloris at its cheapest: complete the TLS handshake, then send nothing at all. Each
    // such connection holds one of `max_connections` until the gateway closes it.
    let env = env().await;
    let (took, got) = silent_connection(&env.gw, b"http/1.1").await;
    assert_cut(took, &got, HEADER_READ_TIMEOUT, "silent, http/1.1");
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_http2_connection_is_closed_by_header_read_timeout() {
    // The same over ALPN h2: no connection preface ever arrives. (The gateway's SETTINGS
    // frame may come back first; it is not inspected.)
    let env = env().await;
    let (took, _) = silent_connection(&env.gw, b"h2").await;
    assert!(
        took < HEADER_READ_TIMEOUT * 3,
        "silent, h2: closed after {took:?}, header_read_timeout {HEADER_READ_TIMEOUT:?}"
    );
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_tls_handshake_is_cut_by_handshake_timeout() {
    let env = env().await;
    let tcp = TcpStream::connect(env.gw.addr).await.expect("connect");
    // A TLS record header announcing a 512-byte handshake record (a ClientHello), whose
    // bytes then arrive one per 100 ms: the record is never complete before the timeout.
    let (took, got) =
        trickle_until_closed(tcp, &[0x16, 0x03, 0x01, 0x02, 0x00], &[0x01, 0x00]).await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "closed after {took:?}, handshake_timeout 1s"
    );
    assert!(
        got.is_empty() || got[0] == 0x15,
        "only a TLS alert may come back"
    );
    env.still_serving().await;
}

// ---------------------------------------------------------------------------------------
// A client that stops reading
// ---------------------------------------------------------------------------------------

/// The `portcullis` binary running as its own process, so its memory can be measured alone.
async fn spawn_gateway(upstream: &str) -> BinaryGateway {
    Setup::new()
        .spawn(&format!(
            "{{listen}}\n[revocation]\nstore = \"memory\"\n\n[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nauth = \"public\"\n"
        ))
        .await
}

/// How much more resident memory the gateway may use while a client refuses to read a
/// response many times larger.
const RSS_GROWTH_LIMIT_KIB: u64 = 64 * 1024;
/// The response the client refuses to read.
const HUGE_RESPONSE: usize = 2 * 1024 * 1024 * 1024;

async fn assert_memory_bounded_while_client_stalls(http2: bool) {
    let up = Upstream::start().await;
    let gw = spawn_gateway(&up.url()).await;
    let c = if http2 {
        gw.builder().http2_prior_knowledge().build()
    } else {
        gw.builder().http1_only().build()
    }
    .expect("client");
    // Warm up (TLS, pools, a small streamed response), then take the baseline.
    let warm = c
        .get(gw.url("/zeros/1048576"))
        .send()
        .await
        .expect("warm-up");
    assert_eq!(warm.bytes().await.expect("warm-up body").len(), 1 << 20);
    let before = rss_kib(&gw.pid().to_string());

    let resp = c
        .get(gw.url(&format!("/zeros/{HUGE_RESPONSE}")))
        .send()
        .await
        .expect("response head");
    assert_eq!(resp.status(), 200);
    // Hold the response without reading its body while the upstream could send gigabytes.
    let mut peak = before;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak = peak.max(rss_kib(&gw.pid().to_string()));
    }
    // Other clients are served meanwhile.
    let other = gw.builder().build().expect("client");
    let r = other
        .get(gw.url("/other"))
        .send()
        .await
        .expect("other request");
    assert_eq!(r.status(), 200);
    drop(resp);
    eprintln!(
        "http2={http2}: gateway RSS {before} KiB before, peak {peak} KiB while the client stalled"
    );
    assert!(
        peak - before < RSS_GROWTH_LIMIT_KIB,
        "gateway RSS grew from {before} KiB to {peak} KiB while a client stalled on a {HUGE_RESPONSE}-byte response"
    );
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_stops_reading_does_not_grow_gateway_memory_over_http1() {
    assert_memory_bounded_while_client_stalls(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_stops_reading_does_not_grow_gateway_memory_over_http2() {
    assert_memory_bounded_while_client_stalls(true).await;
}

// ---------------------------------------------------------------------------------------
// Connection cap
// ---------------------------------------------------------------------------------------

/// One keep-alive request on an open connection; returns the response.
async fn request_on<S>(io: &mut S, path: &str) -> Reply
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    io.write_all(req.as_bytes()).await.expect("write");
    io.flush().await.expect("flush");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("a response with Content-Length");
            if buf.len() >= end + 4 + len {
                return common::parse_http1(&buf);
            }
        }
        let n = io.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed before the response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

const MAX_CONNECTIONS: usize = 8;
/// Close-one-admit-one rounds of the connection cap test.
const ROUNDS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped_by_max_connections() {
    watch_panics();
    // The header read timeout closes idle keep-alive connections; this test holds them for
    // a few seconds, so its gateway has a longer one.
    let up = Upstream::start().await;
    let config = format!(
        "{{listen}}header_read_timeout = \"20s\"\n\n[limits]\nmax_connections = {MAX_CONNECTIONS}\n\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nauth = \"public\"\n",
        up.url()
    );
    let gw = Arc::new(Setup::new().start(&config).await);

    // Up to the cap, every connection is served.
    let mut held = Vec::new();
    for i in 0..MAX_CONNECTIONS {
        let open = async {
            let mut tls = gw.tls_stream(&[b"http/1.1"]).await;
            let r = request_on(&mut tls, &format!("/conn-{i}")).await;
            (tls, r)
        };
        let (tls, r) = tokio::time::timeout(Duration::from_secs(3), open)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "connection {} of {MAX_CONNECTIONS} was not served with {i} open",
                    i + 1
                )
            });
        assert_eq!(r.status, 200, "connection {}", i + 1);
        held.push(tls);
    }

    // One more is not served while the cap is reached, and is served as soon as one of the
    // held connections closes. Several rounds: with one accept loop per worker, which worker
    // gets the connection is up to the kernel, and the slot must follow it either way.
    for round in 0..ROUNDS {
        let path = format!("/over-the-cap-{round}");
        let gw2 = gw.clone();
        let p = path.clone();
        let extra = tokio::spawn(async move {
            let mut tls = gw2.tls_stream(&[b"http/1.1"]).await;
            let r = request_on(&mut tls, &p).await;
            (tls, r)
        });
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(
            !extra.is_finished(),
            "round {round}: a connection over max_connections = {MAX_CONNECTIONS} was served"
        );
        assert!(!up.requests().iter().any(|e| e.path == path));

        let mut closing = held.remove(0);
        let _ = closing.shutdown().await;
        drop(closing);
        let (tls, r) = tokio::time::timeout(Duration::from_secs(3), extra)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "round {round}: the waiting connection was not served within 3 s after one of the {MAX_CONNECTIONS} held connections closed"
                )
            })
            .expect("task");
        assert_eq!(r.status, 200);
        held.push(tls);
    }
    drop(held);
    assert_eq!(gateway_panics(), 0);
}

// ---------------------------------------------------------------------------------------
// HTTP/2, frame by frame
// ---------------------------------------------------------------------------------------

mod h2 {
    //! Just enough HTTP/2 to misbehave: frames and HPACK literals without Huffman coding.

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const CANCEL: u32 = 0x8;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;

    pub fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        assert!(len < 1 << 24);
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
        f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// HPACK integer with an `n`-bit prefix (RFC 7541 section 5.1).
    pub fn int(n: u32, flags: u8, mut v: usize) -> Vec<u8> {
        let max = (1usize << n) - 1;
        if v < max {
            return vec![flags | v as u8];
        }
        let mut out = vec![flags | max as u8];
        v -= max;
        while v >= 128 {
            out.push((v % 128) as u8 | 0x80);
            v /= 128;
        }
        out.push(v as u8);
        out
    }

    fn string(s: &[u8]) -> Vec<u8> {
        let mut out = int(7, 0, s.len());
        out.extend_from_slice(s);
        out
    }

    /// Literal header field without indexing, name from the static table.
    pub fn literal_indexed_name(index: usize, value: &[u8]) -> Vec<u8> {
        let mut out = int(4, 0x00, index);
        out.extend(string(value));
        out
    }

    /// Literal header field without indexing, new name.
    pub fn literal(name: &str, value: &[u8]) -> Vec<u8> {
        let mut out = vec![0x00];
        out.extend(string(name.as_bytes()));
        out.extend(string(value));
        out
    }

    /// Literal header field with incremental indexing, new name: enters the dynamic table.
    pub fn literal_indexed(name: &str, value: &[u8]) -> Vec<u8> {
        let mut out = vec![0x40];
        out.extend(string(name.as_bytes()));
        out.extend(string(value));
        out
    }

    /// Indexed header field (static 1-61, dynamic from 62).
    pub fn indexed(index: usize) -> Vec<u8> {
        int(7, 0x80, index)
    }

    /// `GET https://localhost{path}` as a header block fragment.
    pub fn get(path: &str) -> Vec<u8> {
        let mut b = vec![0x82, 0x87]; // :method GET, :scheme https
        b.extend(literal_indexed_name(4, path.as_bytes())); // :path
        b.extend(literal_indexed_name(1, b"localhost")); // :authority
        b
    }

    #[derive(Debug)]
    pub struct Frame {
        pub ty: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    /// Split complete frames off the front of `buf`.
    pub fn parse(buf: &mut Vec<u8>) -> Vec<Frame> {
        let mut out = Vec::new();
        while buf.len() >= 9 {
            let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
            if buf.len() < 9 + len {
                break;
            }
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            out.push(Frame {
                ty: buf[3],
                flags: buf[4],
                stream,
                payload: buf[9..9 + len].to_vec(),
            });
            buf.drain(..9 + len);
        }
        out
    }
}

/// Everything an HTTP/2 abuse attempt got back.
#[derive(Debug, Default)]
struct H2Outcome {
    frames: Vec<h2::Frame>,
    closed: bool,
    write_failed: bool,
}

impl H2Outcome {
    fn goaway(&self) -> Option<u32> {
        self.frames
            .iter()
            .find(|f| f.ty == h2::GOAWAY && f.payload.len() >= 8)
            .map(|f| u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]))
    }

    fn count(&self, ty: u8) -> usize {
        self.frames.iter().filter(|f| f.ty == ty).count()
    }

    /// Streams that got response HEADERS.
    fn answered_streams(&self) -> Vec<u32> {
        self.frames
            .iter()
            .filter(|f| f.ty == h2::HEADERS)
            .map(|f| f.stream)
            .collect()
    }
}

/// Open an h2 connection, send the preface and an empty SETTINGS, acknowledge the server's,
/// then send `attack` and collect what comes back until close or 2 s of quiet.
async fn h2_attack(gw: &TestGateway, attack: &[u8]) -> H2Outcome {
    let mut tls = gw.tls_stream(&[b"h2"]).await;
    let mut start = h2::PREFACE.to_vec();
    start.extend(h2::frame(h2::SETTINGS, 0, 0, &[]));
    tls.write_all(&start).await.expect("preface");
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut early = Vec::new();
    'settings: loop {
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut chunk))
            .await
            .expect("server SETTINGS")
            .expect("read");
        assert!(n > 0, "closed before SETTINGS");
        buf.extend_from_slice(&chunk[..n]);
        for f in h2::parse(&mut buf) {
            let is_settings = f.ty == h2::SETTINGS && f.flags & h2::ACK == 0;
            early.push(f);
            if is_settings {
                break 'settings;
            }
        }
    }
    tls.write_all(&h2::frame(h2::SETTINGS, h2::ACK, 0, &[]))
        .await
        .expect("settings ack");
    let ex = exchange_on(tls, attack, Duration::from_secs(2)).await;
    let mut rest = buf;
    rest.extend_from_slice(&ex.bytes);
    let mut frames = early;
    frames.extend(h2::parse(&mut rest));
    H2Outcome {
        frames,
        closed: ex.closed,
        write_failed: ex.write_failed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_is_bounded() {
    // CVE-2023-44487: open a stream and cancel it at once, thousands of times, so the server
    // keeps starting work nobody waits for. The gateway must cut the connection (GOAWAY) and
    // not pass thousands of requests upstream.
    const STREAMS: u32 = 5000;
    let env = env().await;
    let block = h2::get("/slow/200");
    let mut attack = Vec::new();
    for i in 0..STREAMS {
        let id = 2 * i + 1;
        attack.extend(h2::frame(
            h2::HEADERS,
            h2::END_HEADERS | h2::END_STREAM,
            id,
            &block,
        ));
        attack.extend(h2::frame(h2::RST_STREAM, 0, id, &h2::CANCEL.to_be_bytes()));
    }
    let start = Instant::now();
    let out = h2_attack(&env.gw, &attack).await;
    let hits = env.up.hits();
    eprintln!(
        "rapid reset: GOAWAY {:?}, closed {}, write failed {}, {} RST_STREAM and {} HEADERS back, {hits} upstream hits, {:?}",
        out.goaway(),
        out.closed,
        out.write_failed,
        out.count(h2::RST_STREAM),
        out.count(h2::HEADERS),
        start.elapsed()
    );
    assert!(
        out.goaway().is_some() || out.closed,
        "rapid reset: no GOAWAY and the connection stayed open ({} frames back)",
        out.frames.len()
    );
    if let Some(code) = out.goaway() {
        assert_eq!(code, h2::ENHANCE_YOUR_CALM, "GOAWAY code");
    }
    assert!(
        (hits as u32) < STREAMS / 10,
        "rapid reset: {hits} of {STREAMS} cancelled requests reached the upstream"
    );
    assert!(start.elapsed() < Duration::from_secs(8));
    // The gateway still serves HTTP/2 clients.
    let r = TestGateway::reply(
        env.gw
            .h2()
            .get(env.gw.url("/after-reset"))
            .send()
            .await
            .expect("h2 request after the attack"),
    )
    .await;
    assert_eq!(r.echo().path, "/after-reset");
    env.still_serving().await;
}

/// HEADERS then CONTINUATION frames carrying `block` in 16 KiB pieces (the default maximum
/// frame size), END_HEADERS on the last one.
fn headers_in_pieces(stream: u32, block: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let pieces: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        let (ty, mut flags) = if i == 0 {
            (h2::HEADERS, h2::END_STREAM)
        } else {
            (h2::CONTINUATION, 0)
        };
        if last {
            flags |= h2::END_HEADERS;
        }
        out.extend(h2::frame(ty, flags, stream, piece));
    }
    out
}

/// The stream was refused (431, RST_STREAM or GOAWAY), never forwarded.
fn assert_stream_refused(out: &H2Outcome, env: &Env, what: &str) {
    let refused = out.count(h2::RST_STREAM) > 0 || out.goaway().is_some() || out.closed;
    let answered = out.answered_streams();
    assert!(
        refused || !answered.is_empty(),
        "{what}: no answer at all: {out:?}"
    );
    assert_eq!(env.up.hits(), 0, "{what}: reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_oversized_header_list_is_refused() {
    let env = env().await;
    let mut block = h2::get("/big");
    block.extend(h2::literal("x-big", &vec![b'b'; MAX_HEADER_BYTES * 4]));
    let out = h2_attack(&env.gw, &headers_in_pieces(1, &block)).await;
    assert_stream_refused(&out, &env, "one huge header");
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_too_many_headers_is_refused() {
    let env = env().await;
    let mut block = h2::get("/many");
    for i in 0..2000 {
        block.extend(h2::literal(&format!("x-{i}"), b"v"));
    }
    let out = h2_attack(&env.gw, &headers_in_pieces(1, &block)).await;
    assert_stream_refused(&out, &env, "2000 headers");
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_hpack_bomb_is_refused() {
    // CVE-2016-6581: one 4 KiB header enters the dynamic table, then each one-byte reference
    // to it adds 4 KiB to the decoded list. 4000 references would decode to 16 MB.
    let env = env().await;
    let mut block = h2::get("/bomb");
    block.extend(h2::literal_indexed("x-bomb", &[b'b'; 4000]));
    for _ in 0..4000 {
        block.extend(h2::indexed(62));
    }
    let out = h2_attack(&env.gw, &headers_in_pieces(1, &block)).await;
    assert_stream_refused(&out, &env, "HPACK bomb");
    env.still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_flood_is_cut() {
    // CVE-2024-27316 and friends: HEADERS without END_HEADERS, then CONTINUATION frames
    // without end. The server must give up on the connection, not buffer them all.
    let env = env().await;
    let mut attack = h2::frame(h2::HEADERS, h2::END_STREAM, 1, &h2::get("/flood"));
    let filler = h2::literal("x-flood", &[b'f'; 16 * 1024 - 16]);
    for _ in 0..2048 {
        // 32 MiB of header block in all.
        attack.extend(h2::frame(h2::CONTINUATION, 0, 1, &filler));
    }
    let start = Instant::now();
    let out = h2_attack(&env.gw, &attack).await;
    assert!(
        out.closed || out.goaway().is_some() || out.count(h2::RST_STREAM) > 0,
        "CONTINUATION flood: the connection was neither closed nor refused: {} frames",
        out.frames.len()
    );
    assert!(
        out.write_failed || out.goaway().is_some() || out.count(h2::RST_STREAM) > 0,
        "CONTINUATION flood: the gateway read all 32 MiB"
    );
    assert!(start.elapsed() < Duration::from_secs(8));
    assert_eq!(env.up.hits(), 0);
    env.still_serving().await;
}
