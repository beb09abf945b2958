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
    let revocations = Arc::new(Revocations::in_memory());
    let state = Arc::new(State::new(&mut config, revocations, metrics.clone()));

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
    let tasks = vec![tokio::spawn(listener::accept_loop(
        listener,
        tls.clone(),
        opts,
        conns.clone(),
        metrics.clone(),
        shutdown_rx,
        handler,
    ))];
    tracing::info!(
        %addr,
        tls = tls.is_some(),
        routes = state.routes.len(),
        keys = state.validator.keys.len(),
        "portcullis listening"
    );
    Ok(Gateway {
        addr,
        admin_addr: None,
        shutdown: shutdown_tx,
        conns,
        max_connections,
        tasks,
        state,
    })
}
