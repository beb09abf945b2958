//! The accept loop and per-connection tasks: connection cap, TLS handshake under a timeout,
//! HTTP/1.1 and HTTP/2 (`hyper_util::server::conn::auto`) with upgrades, graceful drain.
//!
//! The accept loop never awaits anything a client controls: the handshake and every read
//! happen in the connection's own task, so a slow or broken client holds one permit, not the
//! listener.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use super::conn::ConnInfo;
use crate::config::Limits;
use crate::telemetry::metrics::Metrics;

/// Connection-level settings shared by every connection of one listener.
pub struct ConnOptions {
    pub handshake_timeout: Duration,
    /// A connection that sends no byte within this is closed (the header read timeout).
    pub first_byte_timeout: Duration,
    pub builder: auto::Builder<TokioExecutor>,
    /// `Strict-Transport-Security` added to every response on a TLS connection.
    pub hsts: Option<http::HeaderValue>,
}

impl ConnOptions {
    pub fn new(
        handshake_timeout: Duration,
        header_read_timeout: Duration,
        limits: &Limits,
    ) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // Cuts slowloris: the whole request head must arrive within this time, and an
            // idle keep-alive connection is closed after it.
            .header_read_timeout(header_read_timeout)
            // A request head larger than this is answered 431.
            .max_buf_size(limits.max_header_bytes)
            .max_headers(limits.max_headers)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .max_header_list_size(limits.max_header_bytes as u32)
            // Bound the work a client can cause with reset streams (CVE-2023-44487).
            .max_pending_accept_reset_streams(Some(50))
            .max_local_error_reset_streams(Some(256))
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        ConnOptions {
            handshake_timeout,
            first_byte_timeout: header_read_timeout,
            builder,
            hsts: None,
        }
    }
}

/// The shutdown signal: `None` while serving, `Some(grace)` once the gateway is stopping.
pub type Shutdown = watch::Receiver<Option<Duration>>;

/// The TLS configuration new connections are accepted with; a reload swaps it, connections
/// already open keep the one they were accepted with.
pub type TlsSource = Arc<arc_swap::ArcSwap<rustls::ServerConfig>>;

/// Accept connections until `shutdown` says stop, then wait (up to the grace period) for
/// this loop's connections to finish their in-flight requests, and return. Each connection
/// holds a permit of `conns` while open.
#[allow(clippy::too_many_arguments)]
pub async fn accept_loop<S, F, B>(
    listener: TcpListener,
    tls: Option<TlsSource>,
    opts: Arc<ConnOptions>,
    conns: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    handler: S,
) where
    S: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, std::convert::Infallible>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut stop = shutdown.clone();
    let tracker = TaskTracker::new();
    loop {
        // Accept first, then wait for a permit: with several workers sharing one budget, a
        // permit taken before `accept` would sit idle in a worker the kernel sends no
        // connection to, and the cap would bite early.
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let permit = tokio::select! {
            p = conns.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let tls = tls.as_ref().map(|t| TlsAcceptor::from(t.load_full()));
        let opts = opts.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        let handler = handler.clone();
        tracker.spawn(async move {
            let _permit = permit;
            metrics.open_connections.inc();
            serve_tcp(stream, peer, tls, &opts, &metrics, shutdown, handler).await;
            metrics.open_connections.dec();
        });
    }
    tracker.close();
    let grace = stop.borrow().unwrap_or(Duration::ZERO);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            ?grace,
            open = tracker.len(),
            "shutdown grace period over; dropping remaining connections"
        );
    }
}

async fn serve_tcp<S, F, B>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    opts: &ConnOptions,
    metrics: &Metrics,
    shutdown: Shutdown,
    handler: S,
) where
    S: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, std::convert::Infallible>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _ = stream.set_nodelay(true);
    let info = ConnInfo::new(peer, tls.is_some());
    match tls {
        None => serve_io(stream, info, opts, shutdown, handler).await,
        Some(acceptor) => {
            match tokio::time::timeout(opts.handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => serve_io(tls_stream, info, opts, shutdown, handler).await,
                Ok(Err(e)) => {
                    metrics.tls_handshake_failures.inc();
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    metrics.tls_handshake_failures.inc();
                    tracing::debug!(%peer, "TLS handshake timed out");
                }
            }
        }
    }
}

async fn serve_io<I, S, F, B>(
    io: I,
    info: ConnInfo,
    opts: &ConnOptions,
    mut shutdown: Shutdown,
    handler: S,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, std::convert::Infallible>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if shutdown.borrow().is_some() {
        return;
    }
    // hyper's header timer starts only once it knows the protocol; a client that sends
    // nothing at all is cut by this instead.
    let io = FirstByteTimeout::new(io, opts.first_byte_timeout);
    let peer = info.peer;
    // HSTS on every response of a TLS connection, errors included (RFC 6797 section 7.1);
    // never over plain HTTP, where a browser must ignore it (section 8.1).
    let hsts = opts.hsts.clone().filter(|_| info.tls);
    // The handler's future is boxed once and then moved as a pointer: unboxed, hyper copies
    // it (kilobytes) into its dispatcher, and over HTTP/2 into a spawned task per stream
    // several times; those copies were the largest cost per request under callgrind.
    let svc = service_fn(move |req| {
        let hsts = hsts.clone();
        Box::pin(handler(req, info.clone())).map(move |result| {
            result.map(|mut response| {
                if let Some(v) = hsts {
                    response
                        .headers_mut()
                        .insert(http::header::STRICT_TRANSPORT_SECURITY, v);
                }
                response
            })
        })
    });
    let conn = opts
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with error");
            }
        }
        _ = shutdown.changed() => {
            // Finish in-flight requests, refuse new ones (HTTP/2 GOAWAY, HTTP/1.1 close).
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Fails reads with `TimedOut` if the first byte does not arrive within the deadline;
/// harmless afterwards (hyper's own timers take over once a request has started).
struct FirstByteTimeout<I> {
    io: I,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<I> FirstByteTimeout<I> {
    fn new(io: I, after: Duration) -> Self {
        FirstByteTimeout {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(after))),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstByteTimeout<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let before = buf.filled().len();
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let expired = match this.deadline.as_mut() {
                    Some(d) => d.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if expired {
                    Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no request within the header read timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstByteTimeout<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
