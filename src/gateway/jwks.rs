//! The `[jwt.jwks]` refresher of a running gateway: the first fetch (before anything binds,
//! or before a reload changes anything), the background task that keeps the set fresh, and
//! its restart when a reload changes the section (or a fresh fetch when it does not).
//!
//! Fail closed: without a first key set the gateway does not start (like a missing key
//! file) and a reload is refused; once running, a failed refresh keeps the set in force.

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tokio::task::AbortHandle;

use crate::auth::jwks::{JwksError, Refreshed, Refresher};
use crate::config::jwks::JwksSettings;
use crate::pipeline::Shared;
use crate::telemetry::metrics::{Metrics, ReasonLabel};

use crate::server::listener;

/// The first key set of a `[jwt.jwks]` source could not be had: the gateway does not start,
/// a reload is refused. The cause is named in the message, not chained as `source()`.
#[derive(Debug, thiserror::Error)]
#[error("jwt.jwks: cannot fetch the key set from {from}: {error}")]
pub struct FirstFetchError {
    /// The source, as it prints (a URL or a file).
    from: String,
    error: JwksError,
}

/// Fetch the first key set of `settings`; the error names the source.
pub(super) async fn first_fetch(
    settings: &JwksSettings,
) -> Result<Arc<Refresher>, FirstFetchError> {
    Refresher::start(
        settings.source.clone(),
        settings.fetch.clone(),
        settings.refresh_interval,
        settings.min_refresh_interval,
    )
    .await
    .map_err(|error| FirstFetchError {
        from: settings.source.to_string(),
        error,
    })
}

/// The refresher in force and its task.
struct Running {
    settings: JwksSettings,
    refresher: Arc<Refresher>,
    task: AbortHandle,
}

/// Owns the refresher task across reloads.
pub(super) struct PublishedKeys {
    running: Mutex<Option<Running>>,
    /// The request-path state in force, whose verified-token cache a key change clears.
    shared: Arc<ArcSwap<Shared>>,
    metrics: Arc<Metrics>,
    shutdown: listener::Shutdown,
}

/// What a reload will do with `[jwt.jwks]`, decided (and fetched) before anything changes.
pub(super) enum Plan {
    /// Unchanged section (or none before and after): keep the refresher and its set
    /// ([`PublishedKeys::refetch`] then fetches it again).
    Keep(Option<Arc<Refresher>>),
    /// New or changed section, first set already fetched; or `None`: section removed.
    Replace(Option<(JwksSettings, Arc<Refresher>)>),
}

impl Plan {
    /// The refresher the new request-path state should read.
    pub(super) fn refresher(&self) -> Option<Arc<Refresher>> {
        match self {
            Plan::Keep(r) => r.clone(),
            Plan::Replace(r) => r.as_ref().map(|(_, r)| r.clone()),
        }
    }
}

impl PublishedKeys {
    pub(super) fn new(
        shared: Arc<ArcSwap<Shared>>,
        metrics: Arc<Metrics>,
        shutdown: listener::Shutdown,
    ) -> Self {
        PublishedKeys {
            running: Mutex::new(None),
            shared,
            metrics,
            shutdown,
        }
    }

    /// Decide what a reload to `wanted` does; fetches the first set of a new source, so a
    /// reload to an unreachable one is refused before anything changes.
    pub(super) async fn plan(
        &self,
        wanted: Option<&JwksSettings>,
    ) -> Result<Plan, FirstFetchError> {
        let current = {
            let running = self.lock();
            running
                .as_ref()
                .map(|r| (r.settings.clone(), r.refresher.clone()))
        };
        match (current, wanted) {
            (None, None) => Ok(Plan::Keep(None)),
            (Some((settings, refresher)), Some(w)) if settings == *w => {
                Ok(Plan::Keep(Some(refresher)))
            }
            (_, None) => Ok(Plan::Replace(None)),
            (_, Some(w)) => {
                let refresher = first_fetch(w).await?;
                Ok(Plan::Replace(Some((w.clone(), refresher))))
            }
        }
    }

    /// Carry out a plan: stop the old task and start the new one (nothing to do on `Keep`).
    pub(super) fn apply(&self, plan: Plan) {
        let Plan::Replace(next) = plan else {
            return;
        };
        let mut running = self.lock();
        if let Some(old) = running.take() {
            old.task.abort();
            tracing::info!(source = %old.settings.source, "JWKS refresher stopped");
        }
        *running = next.map(|(settings, refresher)| {
            let task = self.spawn(refresher.clone());
            Running {
                settings,
                refresher,
                task,
            }
        });
    }

    /// A reload re-reads everything the config names, the published key set too: an
    /// unchanged source is fetched again now, past the rate limit, so that publishing a set
    /// without a compromised key and reloading retires that key at once. A failed fetch keeps
    /// the set in force and does not refuse the reload; the returned note says so.
    pub(super) async fn refetch(&self, plan: &Plan) -> Option<String> {
        let Plan::Keep(Some(refresher)) = plan else {
            return None;
        };
        let outcome = refresher.refresh_now().await;
        fetched(&self.shared, &self.metrics, outcome);
        (outcome == Refreshed::Failed).then(|| {
            format!(
                "jwt.jwks: fetching {} failed; the previous key set stays in force (see the log)",
                refresher.source()
            )
        })
    }

    /// Start refreshing on the current runtime until shutdown or the next [`Self::apply`].
    fn spawn(&self, refresher: Arc<Refresher>) -> AbortHandle {
        tracing::info!(source = %refresher.source(), keys = refresher.keys().len(), "JWKS refresher started");
        run(&self.shared, &self.metrics, &self.shutdown, refresher)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Run `refresher` until shutdown, counting each fetch and applying key changes
/// ([`fetched`]); shared by the `[jwt.jwks]` refresher and each issuer's.
pub(super) fn run(
    shared: &Arc<ArcSwap<Shared>>,
    metrics: &Arc<Metrics>,
    shutdown: &listener::Shutdown,
    refresher: Arc<Refresher>,
) -> AbortHandle {
    let shared = shared.clone();
    let metrics = metrics.clone();
    let on_fetch = move |outcome: Refreshed| fetched(&shared, &metrics, outcome);
    let mut stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = refresher.run(on_fetch) => {}
            _ = stop.changed() => {}
        }
    })
    .abort_handle()
}

/// Count a fetch; after a change, forget verifications made with keys no longer published.
pub(super) fn fetched(shared: &ArcSwap<Shared>, metrics: &Metrics, outcome: Refreshed) {
    metrics
        .jwks_refreshes
        .get_or_create(&ReasonLabel {
            reason: outcome.label(),
        })
        .inc();
    if outcome == Refreshed::Changed {
        shared.load().key_set_changed();
    }
}
