//! Starting and stopping the gateway: bind the listeners, start the workers, drain on
//! shutdown.
//!
//! Runtime shape: thread per core. Each worker is a single-threaded tokio runtime with its own
//! `SO_REUSEPORT` listening socket (the kernel spreads new connections across them) and its own
//! upstream connection pools, so a request never hops threads: the client connection, the
//! upstream connection and their wake-ups stay on one core. Measured here against tokio's
//! work-stealing runtime with the same thread count, this cut CPU per proxied request by about
//! a quarter (cross-thread wake-ups were the largest cost in the profile). Worker 0 runs on the
//! caller's runtime, together with the admin listener and background tasks.

pub mod listener;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admin::{self, AdminAuth, AdminState};
use crate::config::Config;
use crate::pipeline::{self, Shared, State};
use crate::revocation::Revocations;
use crate::telemetry::metrics::Metrics;
use listener::ConnOptions;

/// How long shutdown waits for in-flight requests before it gives up on them.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Pending connections the kernel queues per listening socket.
const LISTEN_BACKLOG: i32 = 1024;

/// A running gateway. Dropping it does not stop it; call [`Gateway::shutdown`].
pub struct Gateway {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shutdown: watch::Sender<Option<Duration>>,
    tasks: Vec<JoinHandle<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    pub shared: Arc<Shared>,
}

impl Gateway {
    /// The address the proxy listener is bound to (the real port when the config said 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address, when `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Stop accepting, let in-flight requests finish (up to `grace`), then return.
    pub async fn shutdown_with_grace(self, grace: Duration) {
        let _ = self.shutdown.send(Some(grace));
        for t in self.tasks {
            let _ = t.await;
        }
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        tracing::info!("all listeners stopped");
    }

    pub async fn shutdown(self) {
        self.shutdown_with_grace(DEFAULT_SHUTDOWN_GRACE).await
    }
}

/// Bind `workers` listening sockets on one address with `SO_REUSEPORT` (the first one
/// resolves port 0, the rest join it).
fn bind_reuseport(addr: SocketAddr, workers: usize) -> anyhow::Result<Vec<std::net::TcpListener>> {
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

/// Bind every listener and start serving. Nothing binds unless the whole config is valid
/// (validation happened in `Config::load`).
pub async fn start(mut config: Config) -> anyhow::Result<Gateway> {
    let metrics = Arc::new(Metrics::new(config.routes.iter().map(|r| r.name.clone())));
    let store = config.revocation.store.clone();
    let (leeway, max_lifetime) = (config.jwt.leeway_secs, config.jwt.max_lifetime.as_secs());
    let revocations =
        tokio::task::spawn_blocking(move || Revocations::open(&store, leeway, max_lifetime))
            .await??;
    let revocations = Arc::new(revocations);
    metrics
        .revocation_entries
        .set((revocations.dict().len_tokens() + revocations.dict().len_subjects()) as i64);
    let shared = Arc::new(Shared::new(
        &mut config,
        revocations.clone(),
        metrics.clone(),
    ));

    let tls = match &config.listen.tls {
        Some(m) => {
            let cfg = tls::server_config(m).map_err(anyhow::Error::msg)?;
            Some(TlsAcceptor::from(Arc::new(cfg)))
        }
        None => None,
    };
    let workers = config
        .listen
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let sockets = bind_reuseport(config.listen.addr, workers)
        .with_context(|| format!("cannot bind listen.addr {}", config.listen.addr))?;
    let addr = sockets[0].local_addr()?;
    let admin_listener = match &config.admin {
        Some(a) => Some(
            TcpListener::bind(a.addr)
                .await
                .with_context(|| format!("cannot bind admin.addr {}", a.addr))?,
        ),
        None => None,
    };
    let admin_addr = admin_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;

    let (shutdown_tx, shutdown_rx) = watch::channel(None);
    // One budget for the whole process, shared by every worker.
    let conns = Arc::new(Semaphore::new(config.limits.max_connections));
    let opts = Arc::new(ConnOptions::new(
        config.listen.handshake_timeout,
        config.listen.header_read_timeout,
        &config.limits,
    ));

    let mut tasks = Vec::new();
    let mut threads = Vec::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        let worker = Worker {
            socket,
            tls: tls.clone(),
            opts: opts.clone(),
            conns: conns.clone(),
            shared: shared.clone(),
            shutdown: shutdown_rx.clone(),
        };
        if i == 0 {
            let listener = TcpListener::from_std(worker.socket)?;
            tasks.push(tokio::spawn(worker_loop(
                listener,
                worker.tls,
                worker.opts,
                worker.conns,
                worker.shared,
                worker.shutdown,
            )));
        } else {
            let thread = std::thread::Builder::new()
                .name(format!("portcullis-worker-{i}"))
                .spawn(move || worker.run())
                .context("cannot start a worker thread")?;
            threads.push(thread);
        }
    }

    if let (Some(listener), Some(a)) = (admin_listener, &config.admin) {
        let token = a.token.as_ref().map(|t| t.0.as_str()).unwrap_or_default();
        let admin_state = Arc::new(AdminState {
            auth: AdminAuth::new(token),
            gateway: shared.clone(),
            revocations: revocations.clone(),
            metrics: metrics.clone(),
        });
        let admin_tls = match &a.tls {
            Some(m) => Some(TlsAcceptor::from(Arc::new(
                tls::server_config(m).map_err(anyhow::Error::msg)?,
            ))),
            None => None,
        };
        let handler = move |req, info| admin::handle(admin_state.clone(), req, info);
        // The admin listener has its own small connection budget so a flood of proxy
        // connections can never lock the operator out.
        tasks.push(tokio::spawn(listener::accept_loop(
            listener,
            admin_tls,
            opts,
            Arc::new(Semaphore::new(64)),
            metrics.clone(),
            shutdown_rx.clone(),
            handler,
        )));
    }
    let mut maintenance_stop = shutdown_rx.clone();
    let maintenance = revocations.clone().spawn_maintenance(
        config.revocation.sweep_interval,
        metrics.clone(),
        async move {
            let _ = maintenance_stop.changed().await;
        },
    );
    tasks.push(maintenance);

    tracing::info!(
        %addr,
        tls = tls.is_some(),
        workers,
        admin = ?admin_addr,
        routes = shared.routes.len(),
        keys = shared.validator.keys.len(),
        "portcullis listening"
    );
    Ok(Gateway {
        addr,
        admin_addr,
        shutdown: shutdown_tx,
        tasks,
        threads,
        shared,
    })
}

/// One thread-per-core worker: a listening socket and everything needed to serve it.
struct Worker {
    socket: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    opts: Arc<ConnOptions>,
    conns: Arc<Semaphore>,
    shared: Arc<Shared>,
    shutdown: listener::Shutdown,
}

impl Worker {
    /// Run on a dedicated thread with its own single-threaded runtime until shutdown has
    /// drained this worker's connections.
    fn run(self) {
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
            match TcpListener::from_std(self.socket) {
                Ok(listener) => {
                    worker_loop(
                        listener,
                        self.tls,
                        self.opts,
                        self.conns,
                        self.shared,
                        self.shutdown,
                    )
                    .await
                }
                Err(e) => tracing::error!(error = %e, "worker cannot use its socket"),
            }
        });
    }
}

async fn worker_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    opts: Arc<ConnOptions>,
    conns: Arc<Semaphore>,
    shared: Arc<Shared>,
    shutdown: listener::Shutdown,
) {
    let metrics = shared.metrics.clone();
    let state = Arc::new(State::new(shared));
    let handler = move |req, info| pipeline::handle(state.clone(), req, info);
    listener::accept_loop(listener, tls, opts, conns, metrics, shutdown, handler).await
}
