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

mod jwks;
pub mod listener;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::admin::{self, AdminAuth, AdminState};
use crate::auth::apikey::ApiKeys;
use crate::config::Config;
use crate::pipeline::{self, Shared, State};
use crate::revocation::Revocations;
use crate::telemetry::metrics::Metrics;
use listener::{ConnOptions, TlsSource};

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
    reloader: Arc<Reloader>,
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

    /// Stop with the configured `listen.shutdown_grace`.
    pub async fn shutdown(self) {
        let grace = self.reloader.shutdown_grace;
        self.shutdown_with_grace(grace).await
    }

    /// Re-read the config file and apply it (see [`Reloader::reload`]).
    pub async fn reload(&self) -> Result<Vec<String>, String> {
        self.reloader.reload().await
    }

    /// The request-path state in force now.
    pub fn shared(&self) -> Arc<Shared> {
        self.reloader.shared.load_full()
    }
}

/// Applies a new configuration to a running gateway: routes, JWT keys, identity mapping,
/// limits on the request path, TLS certificates, and the admin token. The new file is fully
/// validated first; an invalid one changes nothing and the reason is returned. Requests in
/// flight finish with the state they started with; open connections keep their certificate,
/// new ones get the new one. The listen and admin addresses, worker count, connection limit
/// and revocation and API-key stores are fixed at start (the keys themselves outlive a
/// reload, like the revocations): changing them needs a restart (a reload says so).
pub struct Reloader {
    source: Option<PathBuf>,
    shared: Arc<ArcSwap<Shared>>,
    /// `[jwt.jwks]`: the refresher task, restarted when a reload changes the section.
    published_keys: jwks::PublishedKeys,
    workers: Vec<Arc<ArcSwap<State>>>,
    tls: Option<TlsSource>,
    admin: Option<Arc<AdminState>>,
    admin_tls: Option<TlsSource>,
    revocations: Arc<Revocations>,
    api_keys: Arc<ApiKeys>,
    /// Where the API keys live (fixed at start; a reload that changes it says so).
    api_key_store: String,
    metrics: Arc<Metrics>,
    listen_addr: SocketAddr,
    shutdown_grace: Duration,
    /// One reload at a time.
    lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// Reload from the file the gateway was started with. Returns notes about settings that
    /// only a restart applies, or the reason the new config was rejected.
    pub async fn reload(&self) -> Result<Vec<String>, String> {
        let _one = self.lock.lock().await;
        let result = self.reload_inner().await;
        let outcome = if result.is_ok() { "ok" } else { "rejected" };
        self.metrics
            .reloads
            .get_or_create(&crate::telemetry::metrics::ReasonLabel { reason: outcome })
            .inc();
        match &result {
            Ok(notes) => tracing::info!(?notes, "configuration reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "configuration reload rejected; the previous configuration stays in force")
            }
        }
        result
    }

    async fn reload_inner(&self) -> Result<Vec<String>, String> {
        let path = self
            .source
            .clone()
            .ok_or("this gateway was started from config text, not a file: nothing to reload")?;
        let mut config = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let mut notes = Vec::new();
        if config.listen.addr != self.listen_addr && config.listen.addr.port() != 0 {
            notes.push(format!(
                "listen.addr changed to {}: takes effect after a restart",
                config.listen.addr
            ));
        }
        let tls = match (&self.tls, &config.listen.tls) {
            (Some(_), Some(m)) => Some(Arc::new(tls::server_config(m)?)),
            (None, None) => None,
            _ => {
                return Err(
                    "listen: switching TLS on or off needs a restart; nothing was changed".into(),
                )
            }
        };
        let admin_tls = match (
            &self.admin_tls,
            config.admin.as_ref().and_then(|a| a.tls.as_ref()),
        ) {
            (Some(_), Some(m)) => Some(Arc::new(tls::server_config(m)?)),
            (None, None) => None,
            _ => {
                return Err(
                    "admin: switching admin TLS on or off needs a restart; nothing was changed"
                        .into(),
                )
            }
        };
        if store_label(&config.api_keys.store) != self.api_key_store {
            notes.push(
                "api_keys.store changed: takes effect after a restart (the keys in force stay)"
                    .into(),
            );
        }
        // A new key source is fetched now, so an unreachable one refuses the reload.
        let jwks_plan = self.published_keys.plan(config.jwt.jwks.as_ref()).await?;
        config.write_dev_files().map_err(|e| e.to_string())?;
        // Everything validated: swap.
        if let (Some(src), Some(cfg)) = (&self.tls, tls) {
            src.store(cfg);
        }
        if let (Some(src), Some(cfg)) = (&self.admin_tls, admin_tls) {
            src.store(cfg);
        }
        if let (Some(admin), Some(a)) = (&self.admin, &config.admin) {
            let token = a.token.as_ref().map(|t| t.0.as_str()).unwrap_or_default();
            admin.auth.store(Arc::new(AdminAuth::new(token)));
        }
        let shared = Arc::new(Shared::new(
            &mut config,
            self.revocations.clone(),
            self.api_keys.clone(),
            self.metrics.clone(),
            jwks_plan.refresher(),
        ));
        for w in &self.workers {
            w.store(Arc::new(State::new(shared.clone())));
        }
        self.shared.store(shared.clone());
        if let Some(admin) = &self.admin {
            admin.gateway.store(shared);
        }
        notes.extend(self.published_keys.refetch(&jwks_plan).await);
        self.published_keys.apply(jwks_plan);
        Ok(notes)
    }
}

/// The API-key store a config names, for comparing across a reload (no password inside).
fn store_label(store: &crate::config::ApiKeyStore) -> String {
    use crate::config::ApiKeyStore;
    match store {
        ApiKeyStore::Memory => "memory".into(),
        ApiKeyStore::File(p) => p.display().to_string(),
        ApiKeyStore::Redis(r) => format!("{} {}", r.redacted(), r.key_prefix),
    }
}

/// Default `[listen] workers`: one per core but one, at least one. A gateway shares its host
/// with the kernel's network processing and usually with more (the upstream, sidecars, the
/// sign-in hashing threads); a worker per core then competes for every core and pays in
/// context switches. Measured with `../shared/bench/peers.py` on 2 cores (wrk and nginx on
/// the same box): one worker spent x0.79-0.80 of HAProxy's CPU per HS256 request at x1.10-1.13
/// its requests/s, two workers x0.88-0.92 at x1.04-1.07. A dedicated many-core host loses one
/// core in `cores`; set `workers` there.
fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(1)
        .max(1)
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
    let metrics = Arc::new(Metrics::new());
    let store = config.revocation.store.clone();
    let (leeway, max_lifetime) = (config.jwt.leeway_secs, config.jwt.max_lifetime.as_secs());
    let revocations =
        Revocations::open_recovering(&store, config.revocation.recover, leeway, max_lifetime)
            .await?;
    let revocations = Arc::new(revocations);
    if config.signin.is_some() {
        // Sign-in sessions live beside the revocations (a journal file, or Redis); open them
        // now, off the runtime, so one that cannot be read stops the start before any bind.
        let r = revocations.clone();
        tokio::task::spawn_blocking(move || crate::signin::sessions_for(&r).map(drop))
            .await?
            .map_err(anyhow::Error::msg)?;
    }
    metrics
        .revocation_entries
        .set((revocations.dict().len_tokens() + revocations.dict().len_subjects()) as i64);
    let api_keys = Arc::new(ApiKeys::open(&config.api_keys.store).await?);
    // Fail closed: without a first key set no token could verify, so do not start.
    let jwks_first = match &config.jwt.jwks {
        Some(settings) => Some((
            settings.clone(),
            jwks::first_fetch(settings)
                .await
                .map_err(anyhow::Error::msg)?,
        )),
        None => None,
    };
    let shared = Arc::new(Shared::new(
        &mut config,
        revocations.clone(),
        api_keys.clone(),
        metrics.clone(),
        jwks_first.as_ref().map(|(_, r)| r.clone()),
    ));

    let tls: Option<TlsSource> = match &config.listen.tls {
        Some(m) => Some(Arc::new(ArcSwap::from_pointee(
            tls::server_config(m).map_err(anyhow::Error::msg)?,
        ))),
        None => None,
    };
    let workers = config.listen.workers.unwrap_or_else(default_workers).max(1);
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
    let mut opts = ConnOptions::new(
        config.listen.handshake_timeout,
        config.listen.header_read_timeout,
        &config.limits,
    );
    opts.hsts = config.listen.hsts.clone();
    let opts = Arc::new(opts);

    let mut tasks = Vec::new();
    let mut threads = Vec::new();
    let mut worker_states = Vec::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        let state = Arc::new(ArcSwap::from_pointee(State::new(shared.clone())));
        worker_states.push(state.clone());
        let worker = Worker {
            socket,
            tls: tls.clone(),
            opts: opts.clone(),
            conns: conns.clone(),
            state,
            metrics: metrics.clone(),
            shutdown: shutdown_rx.clone(),
        };
        if i == 0 {
            let listener = TcpListener::from_std(worker.socket)?;
            tasks.push(tokio::spawn(worker_loop(
                listener,
                worker.tls,
                worker.opts,
                worker.conns,
                worker.state,
                worker.metrics,
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

    let mut admin_state = None;
    let mut admin_tls: Option<TlsSource> = None;
    if let (Some(listener), Some(a)) = (admin_listener, &config.admin) {
        let token = a.token.as_ref().map(|t| t.0.as_str()).unwrap_or_default();
        let state = Arc::new(AdminState {
            auth: ArcSwap::from_pointee(AdminAuth::new(token)),
            gateway: ArcSwap::new(shared.clone()),
            revocations: revocations.clone(),
            api_keys: api_keys.clone(),
            metrics: metrics.clone(),
            reloader: std::sync::OnceLock::new(),
        });
        admin_state = Some(state.clone());
        admin_tls = match &a.tls {
            Some(m) => Some(Arc::new(ArcSwap::from_pointee(
                tls::server_config(m).map_err(anyhow::Error::msg)?,
            ))),
            None => None,
        };
        let handler = move |req, info| admin::handle(state.clone(), req, info);
        // The admin listener has its own small connection budget so a flood of proxy
        // connections can never lock the operator out.
        tasks.push(tokio::spawn(listener::accept_loop(
            listener,
            admin_tls.clone(),
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
    let mut api_keys_stop = shutdown_rx.clone();
    tasks.push(api_keys.clone().spawn_sync(async move {
        let _ = api_keys_stop.changed().await;
    }));

    tracing::info!(
        %addr,
        tls = tls.is_some(),
        workers,
        admin = ?admin_addr,
        routes = shared.routes.len(),
        keys = shared.validator.keys.len(),
        jwks = ?config.jwt.jwks.as_ref().map(|j| j.source.to_string()),
        "portcullis listening"
    );
    let shared = Arc::new(ArcSwap::new(shared));
    let published_keys = jwks::PublishedKeys::new(shared.clone(), metrics.clone(), shutdown_rx);
    published_keys.apply(jwks::Plan::Replace(jwks_first));
    let reloader = Arc::new(Reloader {
        source: config.source.clone(),
        shared,
        published_keys,
        workers: worker_states,
        tls,
        admin: admin_state.clone(),
        admin_tls,
        revocations,
        api_key_store: store_label(&config.api_keys.store),
        api_keys,
        metrics,
        listen_addr: config.listen.addr,
        shutdown_grace: config.listen.shutdown_grace,
        lock: tokio::sync::Mutex::new(()),
    });
    if let Some(admin) = &admin_state {
        let _ = admin.reloader.set(Arc::downgrade(&reloader));
    }
    Ok(Gateway {
        addr,
        admin_addr,
        shutdown: shutdown_tx,
        tasks,
        threads,
        reloader,
    })
}

/// One thread-per-core worker: a listening socket and everything needed to serve it.
struct Worker {
    socket: std::net::TcpListener,
    tls: Option<TlsSource>,
    opts: Arc<ConnOptions>,
    conns: Arc<Semaphore>,
    state: Arc<ArcSwap<State>>,
    metrics: Arc<Metrics>,
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
                        self.state,
                        self.metrics,
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
    tls: Option<TlsSource>,
    opts: Arc<ConnOptions>,
    conns: Arc<Semaphore>,
    state: Arc<ArcSwap<State>>,
    metrics: Arc<Metrics>,
    shutdown: listener::Shutdown,
) {
    // Each request takes the state in force when it starts; a reload swaps it for later ones.
    let handler = move |req, info| pipeline::handle(state.load_full(), req, info);
    listener::accept_loop(listener, tls, opts, conns, metrics, shutdown, handler).await
}
