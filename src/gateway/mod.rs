//! The composition root: open the stores, build the request-path state, bind the
//! listeners and start the workers (through `server`), the admin API, the background tasks
//! (revocation maintenance, API-key sync, the JWKS refresher), and apply a reload.
//!
//! This is the only module that knows every part; each part gets only the handles it needs
//! (the pipeline its state, admin a validator, the stores and a [`admin::Reload`], sign-in its
//! own validator and revocations), so no part reaches into another's state.

mod jwks;
mod reload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::admin::{self, AdminAuth, AdminState};
use crate::apikeys::ApiKeys;
use crate::clock::unix_now;
use crate::config::{ApiKeyStore, Config};
use crate::pipeline::{self, Shared, State};
use crate::revocation::audit::Audit;
use crate::revocation::Revocations;
use crate::server::{self, ConnOptions, Listener, TlsSource};
use crate::telemetry::metrics::Metrics;
pub use reload::{ReloadError, Reloader};

pub use crate::config::DEFAULT_SHUTDOWN_GRACE;

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
        self.reloader.reload().await.map_err(|e| e.to_string())
    }

    /// The request-path state in force now.
    pub fn shared(&self) -> Arc<Shared> {
        self.reloader.shared.load_full()
    }
}

/// The API-key store a config names, for comparing across a reload (no password inside).
fn store_label(store: &ApiKeyStore) -> String {
    match store {
        ApiKeyStore::Memory => "memory".into(),
        ApiKeyStore::File(p) => p.display().to_string(),
        ApiKeyStore::Redis(r) => format!("{} {}", r.redacted(), r.key_prefix),
    }
}

/// The admin credentials of `[admin]`: the single `token` labelled `admin`, and each of
/// `tokens` with its own label (the actor the audit trail records).
pub(crate) fn admin_auth(a: &crate::config::Admin) -> AdminAuth {
    let single = a.token.as_ref().map(|t| ("admin", t.0.as_str()));
    let labelled = a.labelled.iter().map(|(l, t)| (l.as_str(), t.0.as_str()));
    AdminAuth::labelled(single.into_iter().chain(labelled))
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
    // The audit trail sits beside the revocations (issue 17): `PATH.audit`, or `P:audit`.
    let audit = {
        let (r, retention) = (revocations.clone(), config.revocation.audit_retention);
        tokio::task::spawn_blocking(move || Audit::open(r.backing(), retention, unix_now()))
            .await??
    };
    let audit = Arc::new(audit);
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
            crate::tls::server_config(m).map_err(anyhow::Error::msg)?,
        ))),
        None => None,
    };
    let workers = config
        .listen
        .workers
        .unwrap_or_else(server::default_workers)
        .max(1);
    let sockets = server::bind_reuseport(config.listen.addr, workers)
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
        // Each request takes the state in force when it starts; a reload swaps it for later
        // ones.
        let listener = Listener {
            tls: tls.clone(),
            opts: opts.clone(),
            conns: conns.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown_rx.clone(),
            handler: move |req, info| pipeline::handle(state.load_full(), req, info),
        };
        if i == 0 {
            let socket = TcpListener::from_std(socket)?;
            tasks.push(tokio::spawn(listener.serve(socket)));
        } else {
            let thread = listener
                .spawn_thread(format!("portcullis-worker-{i}"), socket)
                .context("cannot start a worker thread")?;
            threads.push(thread);
        }
    }

    let mut admin_state = None;
    let mut admin_tls: Option<TlsSource> = None;
    if let (Some(listener), Some(a)) = (admin_listener, &config.admin) {
        let state = Arc::new(AdminState {
            auth: ArcSwap::from_pointee(admin_auth(a)),
            validator: ArcSwap::new(shared.validator.clone()),
            revocations: revocations.clone(),
            audit,
            api_keys: api_keys.clone(),
            metrics: metrics.clone(),
            reloader: std::sync::OnceLock::new(),
        });
        admin_state = Some(state.clone());
        admin_tls = match &a.tls {
            Some(m) => Some(Arc::new(ArcSwap::from_pointee(
                crate::tls::server_config(m).map_err(anyhow::Error::msg)?,
            ))),
            None => None,
        };
        // The admin listener has its own small connection budget so a flood of proxy
        // connections can never lock the operator out.
        let admin_listener = Listener {
            tls: admin_tls.clone(),
            opts,
            conns: Arc::new(Semaphore::new(64)),
            metrics: metrics.clone(),
            shutdown: shutdown_rx.clone(),
            handler: move |req, info| admin::handle(state.clone(), req, info),
        };
        tasks.push(tokio::spawn(admin_listener.serve(listener)));
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
        let as_reload: Arc<dyn admin::Reload> = reloader.clone();
        let _ = admin.reloader.set(Arc::downgrade(&as_reload));
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
