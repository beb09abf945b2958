//! The composition root: open the stores, build the request-path state, bind the
//! listeners and start the workers (through `server`), the admin API, the background tasks
//! (revocation maintenance, API-key sync, the JWKS refresher, the OTLP span exporter), and
//! apply a reload.
//!
//! This is the only module that knows every part; each part gets only the handles it needs
//! (the pipeline its state, admin a validator, the stores and a [`admin::Reload`], sign-in its
//! own validator and revocations), so no part reaches into another's state.

mod issuers;
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
use crate::telemetry::live::Live;
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
    /// `[telemetry] otlp_endpoint`: the exporter task and what tells it to send its last
    /// spans and end (after the listeners, so the last requests' spans go too).
    exporter: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
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
        if let Some((stop, task)) = self.exporter {
            let _ = stop.send(());
            let _ = task.await;
        }
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

/// `GET /upstreams`: the targets of the configuration in force.
struct UpstreamView(Arc<ArcSwap<Shared>>);

impl admin::UpstreamStatus for UpstreamView {
    fn upstreams(&self) -> serde_json::Value {
        let shared = self.0.load();
        serde_json::Value::Array(shared.upstreams.iter().map(|s| s.snapshot()).collect())
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
    metrics.prime_auth_failures(crate::auth::AuthError::ALL.map(crate::auth::AuthError::reason));
    let store = config.revocation.store.clone();
    // A revoked token stays revoked as long as any issuer's leeway could still accept it.
    let (leeway, max_lifetime) = (
        config.jwt.max_leeway_secs(),
        config.jwt.max_lifetime.as_secs(),
    );
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
    // Cluster mode: rate limits are fleet-wide through the revocations' Redis (connected at
    // the first limited request).
    let fleet = match revocations.backing() {
        crate::revocation::Backing::Redis(cluster) => {
            let prefix = cluster.key_root().to_owned();
            let cluster = cluster.clone();
            let link: crate::ratelimit::cluster::Link =
                Box::new(move || cluster.rate_limit_link().map_err(|e| e.to_string()));
            let fleet = crate::ratelimit::Fleet::new(link, &prefix).map_err(|e| {
                anyhow::anyhow!("cannot set up the rate-limit connection to Redis: {e}")
            })?;
            Some(Arc::new(fleet))
        }
        _ => None,
    };
    // Each issuer's first fetch; one that fails leaves only that issuer without keys.
    let issuers_first: Vec<_> =
        futures_util::future::join_all(config.jwt.issuers.iter().map(issuers::first_fetch)).await;
    // The OTLP exporter runs on this (the main) runtime; the workers only queue spans.
    let (tracer, exporter) = match &config.telemetry.otlp {
        Some(settings) => {
            let (tracer, exporter) = crate::telemetry::otlp::pipeline(settings, &metrics)?;
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(exporter.run(async move {
                // A dropped `Gateway` does not stop the workers; nor does it stop this.
                if stop_rx.await.is_err() {
                    std::future::pending::<()>().await;
                }
            }));
            tracing::info!(endpoint = %settings.url, sample_ratio = settings.sample_ratio, "exporting spans over OTLP/HTTP");
            (Some(tracer), Some((stop_tx, task)))
        }
        None => (None, None),
    };
    let shared = Arc::new(
        Shared::new(
            &mut config,
            revocations.clone(),
            api_keys.clone(),
            metrics.clone(),
            jwks_first.as_ref().map(|(_, r)| r.clone()),
            issuers_first.clone(),
            fleet.clone(),
        )
        .with_tracer(tracer.clone()),
    );
    // Published before admin is built, so `GET /upstreams` reads the state in force.
    let shared_now = Arc::new(ArcSwap::new(shared.clone()));

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
        // The console's live view: sampled from the metrics once a second, off the request
        // path (only started where there is an admin listener to show it).
        let live = Arc::new(Live::new());
        let mut live_stop = shutdown_rx.clone();
        tasks.push(live.clone().spawn(metrics.clone(), async move {
            let _ = live_stop.changed().await;
        }));
        // The sign-in sessions the request path uses (they outlive a reload).
        let sessions = shared.signin.as_ref().map(|s| s.sessions.clone());
        let state = Arc::new(AdminState {
            auth: ArcSwap::from_pointee(admin_auth(a)),
            validator: ArcSwap::new(shared.validator.clone()),
            revocations: revocations.clone(),
            audit,
            api_keys: api_keys.clone(),
            metrics: metrics.clone(),
            reloader: std::sync::OnceLock::new(),
            live,
            sessions,
            console: admin::console::Sessions::default(),
            upstreams: Arc::new(UpstreamView(shared_now.clone())),
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
        // Absent fields are left out (an `Option` field records nothing when `None`).
        admin = admin_addr.map(tracing::field::display),
        routes = shared.routes.len(),
        keys = shared.validator.keys.len(),
        jwks = config.jwt.jwks.as_ref().map(|j| tracing::field::display(&j.source)),
        issuers = %config
            .jwt
            .issuers
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(","),
        "portcullis listening"
    );
    // Health checks and DNS re-resolution of the routes' targets (a reload starts new ones;
    // these end with the targets they watch).
    crate::upstream::health::spawn(&shared.upstreams, &shutdown_rx);
    let shared = shared_now;
    let stop = shutdown_rx.clone();
    let published_keys =
        jwks::PublishedKeys::new(shared.clone(), metrics.clone(), shutdown_rx.clone());
    published_keys.apply(jwks::Plan::Replace(jwks_first));
    let issuer_keys = issuers::IssuerKeys::new(shared.clone(), metrics.clone(), shutdown_rx);
    // Nothing runs yet, so every refresher is new: the plan adopts the first fetches above.
    issuer_keys.adopt(&config.jwt.issuers, issuers_first);
    let reloader = Arc::new(Reloader {
        source: config.source.clone(),
        shared,
        published_keys,
        issuer_keys,
        revocation_leeway: leeway,
        fleet,
        workers: worker_states,
        tls,
        admin: admin_state.clone(),
        admin_tls,
        revocations,
        fixed: reload::restart_only(&config),
        tracer,
        api_keys,
        metrics,
        shutdown_grace: config.listen.shutdown_grace,
        lock: tokio::sync::Mutex::new(()),
        stop,
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
        exporter,
    })
}
