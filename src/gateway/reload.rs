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
use crate::config::{Config, ConfigErrors};

/// Why a reload was refused; the previous configuration then stays in force. The text is
/// what `POST /reload` and the log show.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("this gateway was started from config text, not a file: nothing to reload")]
    NoFile,
    #[error("{0}")]
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
/// and revocation and API-key stores are fixed at start (the keys themselves outlive a
/// reload, like the revocations): changing them needs a restart (a reload says so).
pub struct Reloader {
    pub(super) source: Option<PathBuf>,
    pub(super) shared: Arc<ArcSwap<Shared>>,
    /// `[jwt.jwks]`: the refresher task, restarted when a reload changes the section.
    pub(super) published_keys: jwks::PublishedKeys,
    pub(super) workers: Vec<Arc<ArcSwap<State>>>,
    pub(super) tls: Option<TlsSource>,
    pub(super) admin: Option<Arc<AdminState>>,
    pub(super) admin_tls: Option<TlsSource>,
    pub(super) revocations: Arc<Revocations>,
    pub(super) api_keys: Arc<ApiKeys>,
    /// Where the API keys live (fixed at start; a reload that changes it says so).
    pub(super) api_key_store: String,
    pub(super) metrics: Arc<Metrics>,
    pub(super) listen_addr: SocketAddr,
    pub(super) shutdown_grace: Duration,
    /// One reload at a time.
    pub(super) lock: tokio::sync::Mutex<()>,
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
            Ok(notes) => tracing::info!(?notes, "configuration reloaded"),
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
        let mut notes = Vec::new();
        if config.listen.addr != self.listen_addr && config.listen.addr.port() != 0 {
            notes.push(format!(
                "listen.addr changed to {}: takes effect after a restart",
                config.listen.addr
            ));
        }
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
        if store_label(&config.api_keys.store) != self.api_key_store {
            notes.push(
                "api_keys.store changed: takes effect after a restart (the keys in force stay)"
                    .into(),
            );
        }
        // A new key source is fetched now, so an unreachable one refuses the reload.
        let jwks_plan = self
            .published_keys
            .plan(config.jwt.jwks.as_ref())
            .await
            .map_err(ReloadError::Jwks)?;
        config
            .write_dev_files()
            .map_err(|e| ReloadError::DevFiles(format!("{e:#}")))?;
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
            admin.validator.store(shared.validator.clone());
        }
        notes.extend(self.published_keys.refetch(&jwks_plan).await);
        self.published_keys.apply(jwks_plan);
        Ok(notes)
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
