//! HTTP/1.1 on the wire for requests without a body: the request's own task writes the head
//! to a pooled socket and reads the answer, and the answer's body reads the same socket and
//! hands it back to the pool at its last byte.
//!
//! Why a second HTTP/1.1 client beside hyper's: hyper drives each connection from a task of
//! its own. A request reaches that task through a channel, its answer comes back through a
//! oneshot, the body through another channel, and the connection returns to the pool through
//! a task spawned per request. Under `perf` (h2load over HTTP/2, 2026-12-04) that machinery
//! was about a tenth of the gateway's CPU, beside hyper's encoding and parsing, which this
//! module has to do as well.
//!
//! What takes this path ([`eligible`]): GET, HEAD, OPTIONS, PUT and DELETE with no body, no
//! `Content-Length` but `0`, no `Transfer-Encoding` and no upgrade: most reads of a REST API.
//! Being idempotent and bodiless, such a request may be sent again on a new connection when a
//! pooled one turns out to have been closed by the upstream before any answer came (RFC 9110
//! section 9.2.2); a request with a body, a POST or a WebSocket upgrade goes through hyper.
//!
//! Answers are framed as RFC 9112 section 6.3 says, strictly: a conflicting or malformed
//! `Content-Length`, `Transfer-Encoding` on HTTP/1.0, a bad chunk, a head over
//! [`MAX_HEAD_BYTES`] or more than [`MAX_HEADERS`] fields are a failed exchange (502), never a
//! guess. A connection goes back to the pool only when its answer was read to the exact end,
//! with nothing after it, on HTTP/1.1 without `Connection: close`, and without both
//! `Transfer-Encoding` and `Content-Length` (a smuggling attempt, section 6.3 point 3): a
//! misread length would hand one client's answer to the next.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::idle::Stack;

/// The largest answer head read (status line and fields), as hyper's default would refuse.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields in an answer head.
pub const MAX_HEADERS: usize = 100;
/// The longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4096;
/// The most bytes of trailer fields after the last chunk (read and dropped: an HTTP/1.1 hop
/// carries no gRPC, and nothing else on this path needs them).
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Room made in the read buffer before the first read of an answer.
const READ_SIZE: usize = 8 * 1024;
/// The most room made for one read of a body: reads that fill the room double it up to this
/// (as hyper's adaptive reads do), so a large download is not read 8 KiB at a time.
const MAX_READ_SIZE: usize = 256 * 1024;

/// Why an exchange on the wire failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("upstream I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("upstream closed the connection before a complete answer")]
    Closed,
    #[error("invalid upstream answer: {0}")]
    Invalid(&'static str),
}

/// May `req` take the wire path? See the module doc.
pub fn eligible<B: Body>(req: &Request<B>) -> bool {
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE | Method::PUT
    ) && req.body().is_end_stream()
        && !req.headers().contains_key(header::UPGRADE)
        && !req.headers().contains_key(header::TRANSFER_ENCODING)
        && req
            .headers()
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .all(|v| v.as_bytes() == b"0")
}

/// The request head as HTTP/1.1 writes it (RFC 9112 sections 3 and 5): the request line with
/// the origin-form target, each field as it is in the map (lowercase names, as hyper writes
/// them), and `Content-Length: 0` on a bodiless PUT, whose method gives content a meaning
/// (RFC 9110 section 8.6).
pub fn encode_head<B>(req: &Request<B>, out: &mut Vec<u8>) {
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(if target.is_empty() { "/" } else { target }.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if req.method() == Method::PUT && !req.headers().contains_key(header::CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How an answer's body ends (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a HEAD request, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Read until the upstream closes.
    Close,
}

/// An answer head, parsed.
#[derive(Debug)]
pub struct Head {
    pub response: Response<()>,
    pub framing: Framing,
    /// The connection may carry another request once the body is read to its end.
    pub reusable: bool,
}

/// Parse the answer head at the start of `buf`. `Ok(None)`: incomplete, read more. On
/// success the head's bytes are taken off `buf` (the field values point into them, no copy)
/// and an interim (1xx) answer is skipped. `head_request`: the request was HEAD.
pub fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, WireError> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut fields);
        let len = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
                return Err(WireError::Invalid("head too large"))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(WireError::Invalid("too many header fields"))
            }
            Err(_) => return Err(WireError::Invalid("malformed head")),
        };
        if len > MAX_HEAD_BYTES {
            return Err(WireError::Invalid("head too large"));
        }
        let code = parsed.code.unwrap_or(0);
        let status =
            StatusCode::from_u16(code).map_err(|_| WireError::Invalid("bad status code"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            // Nothing on this path asked for an upgrade.
            return Err(WireError::Invalid("unexpected 101"));
        }
        if status.is_informational() {
            // 100 Continue, 103 Early Hints: the final answer follows (RFC 9110 15.2).
            buf.advance(len);
            continue;
        }
        let version = match parsed.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        // Offsets into the head, taken before it is split off `buf` (the fields borrow it).
        let base = buf.as_ptr() as usize;
        let mut spans: smallvec::SmallVec<[(HeaderName, usize, usize); 16]> =
            smallvec::SmallVec::new();
        for f in parsed.headers.iter() {
            let name = HeaderName::from_bytes(f.name.as_bytes())
                .map_err(|_| WireError::Invalid("bad header name"))?;
            let start = f.value.as_ptr() as usize - base;
            spans.push((name, start, start + f.value.len()));
        }
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(spans.len());
        for (name, start, end) in spans {
            let value = HeaderValue::from_maybe_shared(head.slice(start..end))
                .map_err(|_| WireError::Invalid("bad header value"))?;
            headers.append(name, value);
        }
        let (framing, reusable) = framing(&headers, status, version, head_request)?;
        if headers.contains_key(header::TRANSFER_ENCODING) {
            // The coding frames the body, not the length beside it: a proxy removes that
            // before forwarding (RFC 9112 section 6.3, point 3).
            headers.remove(header::CONTENT_LENGTH);
        }
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        return Ok(Some(Head {
            response,
            framing,
            reusable,
        }));
    }
}

/// The body's framing and whether the connection may be reused (RFC 9112 sections 6.3 and
/// 9.3).
fn framing(
    headers: &HeaderMap,
    status: StatusCode,
    version: Version,
    head_request: bool,
) -> Result<(Framing, bool), WireError> {
    let keep_alive = version == Version::HTTP_11
        && !headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v.as_bytes(), b"close"));
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Empty, keep_alive));
    }
    let has_length = headers.contains_key(header::CONTENT_LENGTH);
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if version != Version::HTTP_11 {
            return Err(WireError::Invalid("transfer-encoding on HTTP/1.0"));
        }
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(trim)
            .rfind(|c| !c.is_empty());
        return Ok(match last {
            Some(c) if c.eq_ignore_ascii_case(b"chunked") => {
                (Framing::Chunked, keep_alive && !has_length)
            }
            _ => (Framing::Close, false),
        });
    }
    if has_length {
        let mut length: Option<u64> = None;
        for v in headers.get_all(header::CONTENT_LENGTH) {
            for part in v.as_bytes().split(|b| *b == b',').map(trim) {
                let n = parse_decimal(part).ok_or(WireError::Invalid("bad content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(WireError::Invalid("conflicting content-length"));
                }
                length = Some(n);
            }
        }
        let n = length.ok_or(WireError::Invalid("bad content-length"))?;
        return Ok((Framing::Length(n), keep_alive));
    }
    Ok((Framing::Close, false))
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

fn has_token(list: &[u8], token: &[u8]) -> bool {
    list.split(|b| *b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token))
}

/// `1*DIGIT` that fits in a u64.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The chunked transfer coding, decoded from a buffer (RFC 9112 section 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk: bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields (bytes of them read so far) up to an empty line.
    Trailers(usize),
    Done,
}

/// What a step of the decoder produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Data(Bytes),
    /// `buf` holds no complete next element: read more.
    More,
    Done,
}

impl Chunked {
    /// Decode from the front of `buf` until data, the end, or a need for more bytes.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, WireError> {
        loop {
            match *self {
                Chunked::Done => return Ok(Step::Done),
                Chunked::Size => {
                    let Some(nl) = line_end(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Step::More);
                    };
                    let size = chunk_size(&buf[..nl - 1])?;
                    buf.advance(nl + 1);
                    *self = if size == 0 {
                        Chunked::Trailers(0)
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Step::Data(data));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(WireError::Invalid("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers(seen) => {
                    let room = MAX_TRAILER_BYTES.saturating_sub(seen);
                    let Some(nl) = line_end(buf, room)? else {
                        return Ok(Step::More);
                    };
                    let empty = nl == 1;
                    buf.advance(nl + 1);
                    *self = if empty {
                        Chunked::Done
                    } else {
                        Chunked::Trailers(seen + nl + 1)
                    };
                }
            }
        }
    }
}

/// The index of the `\n` ending the CRLF-terminated line at the start of `buf`; `None` when
/// it has not arrived and `limit` bytes are not yet exceeded.
fn line_end(buf: &[u8], limit: usize) -> Result<Option<usize>, WireError> {
    match buf.iter().take(limit).position(|b| *b == b'\n') {
        Some(nl) if nl >= 1 && buf[nl - 1] == b'\r' => Ok(Some(nl)),
        Some(_) => Err(WireError::Invalid("line not ended by CRLF")),
        None if buf.len() >= limit => Err(WireError::Invalid("chunk line or trailers too long")),
        None => Ok(None),
    }
}

/// `chunk-size [ chunk-ext ]`: hex digits, then nothing or `;` extensions (ignored, RFC 9112
/// section 7.1.1), optionally after spaces.
fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(WireError::Invalid("bad chunk size"));
    }
    let rest = trim(&line[digits..]);
    if !rest.is_empty() && rest[0] != b';' {
        return Err(WireError::Invalid("bad chunk size"));
    }
    line[..digits].iter().try_fold(0u64, |n, d| {
        let v = (*d as char).to_digit(16).unwrap_or(0);
        n.checked_mul(16)
            .map(|n| n | u64::from(v))
            .ok_or(WireError::Invalid("chunk size overflows"))
    })
}

/// A pooled connection: the socket and what was read past the last answer (nothing, when it
/// is idle).
pub struct WireConn {
    io: TcpStream,
    buf: BytesMut,
    /// Room to make for the next body read (see [`MAX_READ_SIZE`]).
    read_size: usize,
}

impl WireConn {
    pub fn new(io: TcpStream) -> WireConn {
        WireConn {
            io,
            buf: BytesMut::new(),
            read_size: READ_SIZE,
        }
    }

    /// Still open, with nothing unasked-for waiting: the upstream has not closed it while it
    /// sat idle. Free when nothing happened on the socket (tokio knows it is not readable
    /// and makes no system call).
    pub fn is_idle_and_open(&self) -> bool {
        let mut probe = [0u8; 1];
        self.buf.is_empty()
            && matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Write the head; read the answer head. `Err((e, true))`: nothing at all came back
    /// (the write failed, or the upstream closed without a byte), which on a reused
    /// connection means it was closed while idle and the request may go again.
    pub async fn exchange(
        mut self,
        head: &[u8],
        head_request: bool,
    ) -> Result<(Head, WireConn), (WireError, bool)> {
        if let Err(e) = self.io.write_all(head).await {
            return Err((e.into(), true));
        }
        self.read_size = READ_SIZE;
        loop {
            if !self.buf.is_empty() {
                match parse_head(&mut self.buf, head_request) {
                    Ok(Some(h)) => return Ok((h, self)),
                    Ok(None) => {}
                    Err(e) => return Err((e, false)),
                }
            }
            if self.buf.capacity() - self.buf.len() < READ_SIZE / 2 {
                self.buf.reserve(READ_SIZE);
            }
            let nothing_yet = self.buf.is_empty();
            match tokio::io::AsyncReadExt::read_buf(&mut self.io, &mut self.buf).await {
                Ok(0) => return Err((WireError::Closed, nothing_yet)),
                Ok(_) => {}
                Err(e) => return Err((e.into(), nothing_yet)),
            }
        }
    }

    /// Read more into the buffer; `Ok(0)` at the end of the stream. A read that fills the
    /// room it was given doubles the room for the next one, up to [`MAX_READ_SIZE`].
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < self.read_size / 2 {
            self.buf.reserve(self.read_size);
        }
        let room = self.buf.capacity() - self.buf.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.buf
        ))?;
        if n == room {
            self.read_size = (self.read_size * 2).min(MAX_READ_SIZE);
        }
        Poll::Ready(Ok(n))
    }
}

/// An answer's body, read from the connection by whoever polls it; the connection goes back
/// to the pool at the last byte (or is closed, when it may not be reused or the body is
/// dropped before its end).
pub struct WireBody {
    conn: Option<WireConn>,
    state: State,
    reusable: bool,
    /// Where the connection goes back when its answer has been read to the end.
    pool: Option<Arc<Stack<WireConn>>>,
}

/// What the next poll does, decided while the state is borrowed.
enum Next {
    /// Data; `true`: the body's last.
    Data(Bytes, bool),
    End,
    Read,
}

enum State {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

impl WireBody {
    /// The body framed by `framing` on `conn`; an empty one gives the connection back now.
    pub fn new(
        conn: WireConn,
        framing: Framing,
        reusable: bool,
        pool: Arc<Stack<WireConn>>,
    ) -> WireBody {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunked::Size),
            Framing::Close => State::Close,
        };
        let mut body = WireBody {
            conn: Some(conn),
            state,
            reusable,
            pool: Some(pool),
        };
        if matches!(body.state, State::Done) {
            body.finish();
        }
        body
    }

    /// The end was reached: the connection goes back when it may carry another request and
    /// nothing was sent past the answer.
    fn finish(&mut self) {
        self.state = State::Done;
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.take()) {
            if self.reusable && conn.buf.is_empty() {
                pool.push(conn);
            }
        }
    }

    fn fail(&mut self, e: WireError) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for WireBody {
    type Data = Bytes;
    type Error = WireError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let next = match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Length(_) | State::Close if conn.buf.is_empty() => Next::Read,
                State::Length(left) => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(conn.buf.len());
                    *left -= n as u64;
                    Next::Data(conn.buf.split_to(n).freeze(), *left == 0)
                }
                State::Close => Next::Data(conn.buf.split().freeze(), false),
                State::Chunked(dec) => match dec.step(&mut conn.buf) {
                    Ok(Step::Data(data)) => Next::Data(data, false),
                    Ok(Step::Done) => Next::End,
                    Ok(Step::More) => Next::Read,
                    Err(e) => return this.fail(e),
                },
            };
            match next {
                Next::Data(data, last) => {
                    if last {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Next::End => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Next::Read => {}
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.state, State::Close) => {
                    this.reusable = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(WireError::Closed),
                Ok(_) => {}
                Err(e) => return this.fail(e.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str, head_request: bool) -> Result<Option<Head>, WireError> {
        let mut buf = BytesMut::from(raw.as_bytes());
        parse_head(&mut buf, head_request)
    }

    fn framed(raw: &str) -> (Framing, bool) {
        let h = parse(raw, false).unwrap().unwrap();
        (h.framing, h.reusable)
    }

    #[test]
    fn the_request_head_is_origin_form_with_every_field() {
        let mut req = Request::get("/a/b?c=d").body(()).unwrap();
        req.headers_mut()
            .insert("host", HeaderValue::from_static("up:8080"));
        req.headers_mut()
            .append("x-user-id", HeaderValue::from_static("alice"));
        let mut out = Vec::new();
        encode_head(&req, &mut out);
        assert_eq!(
            out,
            b"GET /a/b?c=d HTTP/1.1\r\nhost: up:8080\r\nx-user-id: alice\r\n\r\n"
        );
        let req = Request::put("/x").body(()).unwrap();
        let mut out = Vec::new();
        encode_head(&req, &mut out);
        assert_eq!(out, b"PUT /x HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    }

    #[test]
    fn only_bodiless_idempotent_requests_take_the_wire() {
        let empty = http_body_util::Empty::<Bytes>::new();
        let full = http_body_util::Full::new(Bytes::from_static(b"x"));
        assert!(eligible(&Request::get("/").body(empty).unwrap()));
        assert!(!eligible(&Request::post("/").body(empty).unwrap()));
        assert!(!eligible(&Request::put("/").body(full).unwrap()));
        let mut up = Request::get("/").body(empty).unwrap();
        up.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!eligible(&up));
        let mut cl = Request::get("/").body(empty).unwrap();
        cl.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(
            !eligible(&cl),
            "a length the body does not have would desync"
        );
        cl.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(eligible(&cl));
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
            (Framing::Length(2), true)
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            (Framing::Chunked, true)
        );
        // Both: chunked wins and the connection is not reused (smuggling, point 3).
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n"),
            (Framing::Chunked, false)
        );
        let h = parse(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(h.response.headers().get("content-length").is_none());
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n"),
            (Framing::Close, false)
        );
        assert_eq!(framed("HTTP/1.1 200 OK\r\n\r\n"), (Framing::Close, false));
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: Keep-Alive, close\r\n\r\n"),
            (Framing::Length(3), false)
        );
        assert_eq!(
            framed("HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\n"),
            (Framing::Length(3), false)
        );
        assert_eq!(
            framed("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n"),
            (Framing::Empty, true)
        );
        assert_eq!(
            framed("HTTP/1.1 304 Not Modified\r\n\r\n"),
            (Framing::Empty, true)
        );
        let h = parse("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Empty, "the answer to HEAD has no body");
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\ncontent-length: 4, 4\r\ncontent-length: 4\r\n\r\n"),
            (Framing::Length(4), true)
        );
    }

    #[test]
    fn bad_framing_is_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 4, 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 2OO OK\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "SSH-2.0-OpenSSH_9.2\r\n\r\n",
        ] {
            assert!(parse(raw, false).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn heads_arrive_in_pieces_and_interim_answers_are_skipped() {
        let raw =
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 2\r\n\r\nok";
        for cut in 0..raw.len() - 2 {
            let mut buf = BytesMut::from(&raw.as_bytes()[..cut]);
            if let Some(h) = parse_head(&mut buf, false).unwrap() {
                panic!("complete at {cut}: {:?}", h.response);
            }
        }
        let mut buf = BytesMut::from(raw.as_bytes());
        let h = parse_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(h.response.status(), 200);
        assert_eq!(h.response.headers()["x-a"], "1");
        assert_eq!(&buf[..], b"ok", "the body stays in the buffer");
    }

    #[test]
    fn an_endless_head_is_refused_at_the_limit() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
        while buf.len() < MAX_HEAD_BYTES {
            buf.extend_from_slice(b"x-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(parse_head(&mut buf, false).is_err());
    }

    fn decode_all(raw: &[u8], split: usize) -> Result<(Vec<u8>, BytesMut), WireError> {
        let mut dec = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut chunks = raw.chunks(split.max(1));
        loop {
            match dec.step(&mut buf)? {
                Step::Data(d) => out.extend_from_slice(&d),
                Step::Done => return Ok((out, buf)),
                Step::More => match chunks.next() {
                    Some(c) => buf.extend_from_slice(c),
                    None => return Err(WireError::Closed),
                },
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_however_they_are_cut() {
        let raw = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: t\r\n\r\nNEXT";
        for split in 1..raw.len() {
            let (body, rest) = decode_all(raw, split).unwrap();
            assert_eq!(body, b"hello, world", "split {split}");
            // What follows the body is left for the caller, who refuses to reuse.
            assert!(b"NEXT".starts_with(&rest), "split {split}");
        }
        let (body, rest) = decode_all(b"A \r\n0123456789\r\n0\r\n\r\n", 64).unwrap();
        assert_eq!((body.len(), rest.len()), (10, 0));
    }

    #[test]
    fn bad_chunks_are_refused() {
        for raw in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5 x\r\nhello\r\n",
            b"-5\r\n",
        ] {
            assert!(
                decode_all(raw, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let mut long = vec![b'1'; 1];
        long.extend(std::iter::repeat_n(b';', MAX_CHUNK_LINE));
        assert!(decode_all(&long, 64).is_err());
        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() < MAX_TRAILER_BYTES + 100 {
            trailers.extend_from_slice(b"x-t: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(decode_all(&trailers, 512).is_err());
    }
}
