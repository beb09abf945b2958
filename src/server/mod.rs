//! Starting and stopping the gateway: bind the listeners, spawn the accept loops, and drain
//! on shutdown.

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
use crate::pipeline::{self, State};
use crate::revocation::Revocations;
use crate::telemetry::metrics::Metrics;
use listener::ConnOptions;

/// How long shutdown waits for in-flight requests before it gives up on them.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A running gateway. Dropping it does not stop it; call [`Gateway::shutdown`].
pub struct Gateway {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    conns: Arc<Semaphore>,
    max_connections: usize,
    tasks: Vec<JoinHandle<()>>,
    pub state: Arc<State>,
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
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        // Every connection holds one permit; all permits back means all connections closed.
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        match tokio::time::timeout(grace, self.conns.acquire_many(all)).await {
            Ok(_) => tracing::info!("all connections drained"),
            Err(_) => tracing::warn!(
                ?grace,
                "shutdown grace period over; closing remaining connections"
            ),
        }
    }

    pub async fn shutdown(self) {
        self.shutdown_with_grace(DEFAULT_SHUTDOWN_GRACE).await
    }
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
    let state = Arc::new(State::new(
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
    let listener = TcpListener::bind(config.listen.addr)
        .await
        .with_context(|| format!("cannot bind listen.addr {}", config.listen.addr))?;
    let addr = listener.local_addr()?;
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

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let max_connections = config.limits.max_connections;
    let conns = Arc::new(Semaphore::new(max_connections));
    let opts = Arc::new(ConnOptions::new(
        config.listen.handshake_timeout,
        config.listen.header_read_timeout,
        &config.limits,
    ));
    let handler_state = state.clone();
    let handler = move |req, info| pipeline::handle(handler_state.clone(), req, info);
    let mut tasks = vec![tokio::spawn(listener::accept_loop(
        listener,
        tls.clone(),
        opts.clone(),
        conns.clone(),
        metrics.clone(),
        shutdown_rx.clone(),
        handler,
    ))];

    if let (Some(listener), Some(a)) = (admin_listener, &config.admin) {
        let token = a.token.as_ref().map(|t| t.0.as_str()).unwrap_or_default();
        let admin_state = Arc::new(AdminState {
            auth: AdminAuth::new(token),
            gateway: state.clone(),
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
    revocations.clone().spawn_maintenance(
        config.revocation.sweep_interval,
        metrics.clone(),
        shutdown_rx,
    );

    tracing::info!(
        %addr,
        tls = tls.is_some(),
        admin = ?admin_addr,
        routes = state.routes.len(),
        keys = state.validator.keys.len(),
        "portcullis listening"
    );
    Ok(Gateway {
        addr,
        admin_addr,
        shutdown: shutdown_tx,
        conns,
        max_connections,
        tasks,
        state,
    })
}
