//! Reloading a running gateway: the new file is validated whole, the new JWKS source is
//! fetched, and only then is anything swapped; admin reaches this through [`admin::Reload`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::{jwks, store_label};
use crate::admin::{self, AdminState};
use crate::apikeys::ApiKeys;
use crate::config::{Config, ConfigErrors, LogFormat, StoreKind};

/// Why a reload was refused; the previous configuration then stays in force. The text is
/// what `POST /reload` and the log show.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("this gateway was started from config text, not a file: nothing to reload")]
    NoFile,
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// A certificate or key that does not build a TLS configuration.
    #[error("{0}")]
    Tls(crate::tls::TlsError),
    #[error("{0} on or off needs a restart; nothing was changed")]
    TlsSwitch(&'static str),
    /// The new `[jwt.jwks]` source could not be fetched.
    #[error("{0}; nothing was changed")]
    Jwks(jwks::FirstFetchError),
    #[error("{0}")]
    DevFiles(String),
    #[error("{0}")]
    Task(String),
}
use crate::pipeline::{Shared, State};
use crate::revocation::Revocations;
use crate::server::TlsSource;
use crate::telemetry::metrics::{Metrics, ReasonLabel};

/// Applies a new configuration to a running gateway: routes, JWT keys, identity mapping,
/// limits on the request path, TLS certificates, and the admin token. The new file is fully
/// validated first; an invalid one changes nothing and the reason is returned. Requests in
/// flight finish with the state they started with; open connections keep their certificate,
/// new ones get the new one. The listen and admin addresses, worker count, connection limit
/// revocation and API-key stores and the OTLP export (`[telemetry]`) are fixed at start (the keys themselves outlive a
/// reload, like the revocations): changing them needs a restart (a reload says so).
pub struct Reloader {
    pub(super) source: Option<PathBuf>,
    pub(super) shared: Arc<ArcSwap<Shared>>,
    /// `[jwt.jwks]`: the refresher task, restarted when a reload changes the section.
    pub(super) published_keys: jwks::PublishedKeys,
    /// `[[jwt.issuers]]`: a refresher task per issuer, restarted when its source changes.
    pub(super) issuer_keys: super::issuers::IssuerKeys,
    /// How long past `exp` the revocation store keeps a token (the largest leeway at start).
    pub(super) revocation_leeway: u64,
    /// Cluster mode: the fleet-wide rate-limit link, kept across reloads.
    pub(super) fleet: Option<Arc<crate::ratelimit::Fleet>>,
    pub(super) workers: Vec<Arc<ArcSwap<State>>>,
    pub(super) tls: Option<TlsSource>,
    pub(super) admin: Option<Arc<AdminState>>,
    pub(super) admin_tls: Option<TlsSource>,
    pub(super) revocations: Arc<Revocations>,
    pub(super) api_keys: Arc<ApiKeys>,
    /// The restart-only settings as started ([`restart_only`]); a reload that changes one
    /// says so in a note.
    pub(super) fixed: Vec<(&'static str, String)>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) shutdown_grace: Duration,
    /// One reload at a time.
    pub(super) lock: tokio::sync::Mutex<()>,
    /// `[telemetry]`: the span recorder started with the gateway (restart-only).
    pub(super) tracer: Option<Arc<crate::telemetry::spans::Tracer>>,
    /// Changes when the gateway stops (ends the upstream health checks a reload starts).
    pub(super) stop: tokio::sync::watch::Receiver<Option<Duration>>,
}

impl Reloader {
    /// Reload from the file the gateway was started with. Returns notes about settings that
    /// only a restart applies, or the reason the new config was rejected.
    pub async fn reload(&self) -> Result<Vec<String>, ReloadError> {
        let _one = self.lock.lock().await;
        let result = self.reload_inner().await;
        let outcome = if result.is_ok() { "ok" } else { "rejected" };
        self.metrics
            .reloads
            .get_or_create(&ReasonLabel { reason: outcome })
            .inc();
        match &result {
            Ok(notes) => tracing::info!(
                notes = %crate::telemetry::JsonList(notes),
                "configuration reloaded"
            ),
            Err(e) => {
                tracing::error!(error = %e, "configuration reload rejected; the previous configuration stays in force")
            }
        }
        result
    }

    async fn reload_inner(&self) -> Result<Vec<String>, ReloadError> {
        let path = self.source.clone().ok_or(ReloadError::NoFile)?;
        let mut config = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|e| ReloadError::Task(e.to_string()))??;
        let mut notes = restart_notes(&self.fixed, &restart_only(&config));
        let tls = match (&self.tls, &config.listen.tls) {
            (Some(_), Some(m)) => Some(Arc::new(
                crate::tls::server_config(m).map_err(ReloadError::Tls)?,
            )),
            (None, None) => None,
            _ => return Err(ReloadError::TlsSwitch("listen: switching TLS")),
        };
        let admin_tls = match (
            &self.admin_tls,
            config.admin.as_ref().and_then(|a| a.tls.as_ref()),
        ) {
            (Some(_), Some(m)) => Some(Arc::new(
                crate::tls::server_config(m).map_err(ReloadError::Tls)?,
            )),
            (None, None) => None,
            _ => return Err(ReloadError::TlsSwitch("admin: switching admin TLS")),
        };
        // A new key source is fetched now, so an unreachable one refuses the reload.
        let jwks_plan = self
            .published_keys
            .plan(config.jwt.jwks.as_ref())
            .await
            .map_err(ReloadError::Jwks)?;
        config
            .write_dev_files()
            .map_err(|e| ReloadError::DevFiles(format!("{e:#}")))?;
        if config.jwt.max_leeway_secs() > self.revocation_leeway {
            notes.push(format!(
                "a leeway above {}s keeps revoked tokens in the revocation store longer only after a restart",
                self.revocation_leeway
            ));
        }
        // Issuers never refuse a reload: one that cannot be fetched starts without keys.
        let issuer_plan = self.issuer_keys.plan(&config.jwt.issuers).await;
        // Everything validated: swap.
        if let (Some(src), Some(cfg)) = (&self.tls, tls) {
            src.store(cfg);
        }
        if let (Some(src), Some(cfg)) = (&self.admin_tls, admin_tls) {
            src.store(cfg);
        }
        if let (Some(admin), Some(a)) = (&self.admin, &config.admin) {
            admin.auth.store(Arc::new(super::admin_auth(a)));
        }
        let shared = Arc::new(
            Shared::new(
                &mut config,
                self.revocations.clone(),
                self.api_keys.clone(),
                self.metrics.clone(),
                jwks_plan.refresher(),
                super::issuers::refreshers(&issuer_plan),
                self.fleet.clone(),
            )
            .with_tracer(self.tracer.clone()),
        );
        for w in &self.workers {
            w.store(Arc::new(State::new(shared.clone())));
        }
        // The previous targets' checks end once the last request using them is done.
        crate::upstream::health::spawn(&shared.upstreams, &self.stop);
        self.shared.store(shared.clone());
        if let Some(admin) = &self.admin {
            admin.validator.store(shared.validator.clone());
        }
        notes.extend(self.published_keys.refetch(&jwks_plan).await);
        self.published_keys.apply(jwks_plan);
        notes.extend(self.issuer_keys.refetch(&issuer_plan).await);
        self.issuer_keys.apply(issuer_plan);
        Ok(notes)
    }
}

/// The settings only a start applies, as (key, value shown in a note): the listeners and
/// their sockets, the worker threads, the connection budget and per-connection limits
/// (fixed in the transport), the stores opened at start, the log subscriber and the OTLP
/// exporter (`[telemetry]`). A value
/// is what the file says (never a password: store URLs are redacted), compared as text.
pub(super) fn restart_only(c: &Config) -> Vec<(&'static str, String)> {
    let secs = |d: Duration| humantime::format_duration(d).to_string();
    let admin = c.admin.as_ref();
    vec![
        ("listen.addr", c.listen.addr.to_string()),
        (
            "listen.workers",
            c.listen
                .workers
                .map_or("one per core".into(), |w| w.to_string()),
        ),
        ("listen.handshake_timeout", secs(c.listen.handshake_timeout)),
        (
            "listen.header_read_timeout",
            secs(c.listen.header_read_timeout),
        ),
        ("listen.shutdown_grace", secs(c.listen.shutdown_grace)),
        (
            "listen.hsts",
            c.listen
                .hsts
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .unwrap_or("off")
                .to_owned(),
        ),
        ("admin", if admin.is_some() { "on" } else { "off" }.into()),
        (
            "admin.addr",
            admin.map_or("-".into(), |a| a.addr.to_string()),
        ),
        (
            "limits.max_connections",
            c.limits.max_connections.to_string(),
        ),
        (
            "limits.max_header_bytes",
            c.limits.max_header_bytes.to_string(),
        ),
        ("limits.max_headers", c.limits.max_headers.to_string()),
        (
            "limits.h2_max_concurrent_streams",
            c.limits.h2_max_concurrent_streams.to_string(),
        ),
        (
            "revocation.store",
            revocation_store_label(&c.revocation.store),
        ),
        (
            "revocation.sweep_interval",
            secs(c.revocation.sweep_interval),
        ),
        (
            "revocation.audit_retention",
            secs(c.revocation.audit_retention),
        ),
        ("api_keys.store", store_label(&c.api_keys.store)),
        (
            "log.format",
            match c.log.format {
                LogFormat::Pretty => "pretty",
                LogFormat::Json => "json",
            }
            .into(),
        ),
        ("log.level", c.log.level.clone()),
        (
            "telemetry",
            c.telemetry
                .otlp
                .as_ref()
                .map_or("off".into(), |o| o.summary()),
        ),
    ]
}

/// One note per restart-only setting whose value changed. An address whose new port is 0
/// ("any port", as tests write it) is not a change of address.
fn restart_notes(was: &[(&'static str, String)], now: &[(&'static str, String)]) -> Vec<String> {
    let mut notes = Vec::new();
    for ((key, old), (_, new)) in was.iter().zip(now) {
        if old == new {
            continue;
        }
        let any_port = new.parse::<SocketAddr>().is_ok_and(|a| a.port() == 0);
        if key.ends_with(".addr") && any_port {
            continue;
        }
        let tail = match *key {
            "api_keys.store" => " (the keys in force stay)",
            "revocation.store" => " (the revocations in force stay)",
            _ => "",
        };
        notes.push(format!(
            "{key} changed to {new}: takes effect after a restart{tail}"
        ));
    }
    notes
}

fn revocation_store_label(s: &StoreKind) -> String {
    match s {
        StoreKind::Memory => "memory".into(),
        StoreKind::Log(p) => p.display().to_string(),
        StoreKind::Redis(r) => format!("{} {}", r.redacted(), r.key_prefix),
    }
}

impl admin::Reload for Reloader {
    fn reload(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<String>, String>> + Send + '_>>
    {
        Box::pin(async move { Reloader::reload(self).await.map_err(|e| e.to_string()) })
    }
}
