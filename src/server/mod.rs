//! Transport only: listening sockets, the accept loop, the TLS handshake under a timeout,
//! HTTP/1.1 and HTTP/2 connections, and the drain at shutdown. What a request means is the
//! handler's business: the composition root (`gateway`) hands each listener one, so this
//! module imports no pipeline, auth, revocation, sign-in or admin code.
//!
//! Runtime shape: thread per core. Each worker is a single-threaded tokio runtime with its own
//! `SO_REUSEPORT` listening socket (the kernel spreads new connections across them), so a
//! request never hops threads: the client connection, the upstream connection and their
//! wake-ups stay on one core. Measured here against tokio's work-stealing runtime with the
//! same thread count, this cut CPU per proxied request by about a quarter (cross-thread
//! wake-ups were the largest cost in the profile). Worker 0 runs on the caller's runtime.

pub mod conn;
pub mod listener;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use conn::ConnInfo;
pub use listener::{ConnOptions, Shutdown, TlsSource};

use crate::telemetry::metrics::Metrics;

/// Pending connections the kernel queues per listening socket.
const LISTEN_BACKLOG: i32 = 1024;

/// Default `[listen] workers`: one per core. Measured with `../shared/bench/peers.py` on 2
/// cores shared with the load generator and nginx (2026-12-03, split allocator, HS256): under
/// HTTP/2 one worker saturates its core and reached x0.70-0.73 of HAProxy's requests/s, two
/// reached x0.97-1.07 at 5-15% less CPU per request; under HTTP/1.1 two workers kept the
/// request rate (x1.05-1.08 of HAProxy's) at 3-4% more CPU per request (x0.87-0.91 against
/// x0.84-0.87).
/// Until then the default was one per core but one, which had saved about 10% of CPU per
/// HTTP/1.1 request with the system allocator. A host that runs other busy work beside the
/// gateway can leave it cores with a smaller `workers`.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Bind `workers` listening sockets on one address with `SO_REUSEPORT` (the first one
/// resolves port 0, the rest join it).
pub fn bind_reuseport(
    addr: SocketAddr,
    workers: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(workers);
    let mut bind_addr = addr;
    for _ in 0..workers {
        let socket = Socket::new(
            Domain::for_address(bind_addr),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        #[cfg(unix)]
        socket.set_reuse_port(workers > 1)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bind_addr.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        let listener: std::net::TcpListener = socket.into();
        bind_addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// Everything one listening socket is served with: TLS, connection settings, the
/// connection budget it draws from, the shutdown signal, and the request handler.
pub struct Listener<S> {
    pub tls: Option<TlsSource>,
    pub opts: Arc<ConnOptions>,
    pub conns: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
    pub handler: S,
}

impl<S, F, B> Listener<S>
where
    S: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, std::convert::Infallible>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Serve `socket` on the current runtime until shutdown has drained its connections.
    pub async fn serve(self, socket: TcpListener) {
        listener::accept_loop(
            socket,
            self.tls,
            self.opts,
            self.conns,
            self.metrics,
            self.shutdown,
            self.handler,
        )
        .await
    }

    /// Serve `socket` on a dedicated thread with its own single-threaded runtime (one
    /// thread-per-core worker) until shutdown has drained its connections.
    pub fn spawn_thread(
        self,
        name: String,
        socket: std::net::TcpListener,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name(name).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "worker runtime failed to start; this worker will not serve");
                    return;
                }
            };
            rt.block_on(async move {
                match TcpListener::from_std(socket) {
                    Ok(listener) => self.serve(listener).await,
                    Err(e) => tracing::error!(error = %e, "worker cannot use its socket"),
                }
            });
        })
    }
}
