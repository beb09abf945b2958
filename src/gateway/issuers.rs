//! The key sets of `[[jwt.issuers]]` in a running gateway: one refresher per issuer (the
//! `[jwt.jwks]` machinery: background refresh, early refetch on an unknown `kid`, the last
//! good set kept on failure), its first fetch at start or reload, and its task.
//!
//! Unlike `[jwt.jwks]`, one issuer that cannot be reached, or whose discovery document names
//! another issuer, does not stop the gateway or refuse a reload: that issuer starts with no
//! key (its tokens are refused, 401), the log says why, its refresher keeps trying as often
//! as its `min_refresh_interval` allows, and every other issuer works.

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tokio::task::AbortHandle;

use crate::auth::jwks::{Refreshed, Refresher};
use crate::config::issuers::IssuerSettings;
use crate::config::jwks::JwksSettings;
use crate::pipeline::Shared;
use crate::server::listener;
use crate::telemetry::metrics::Metrics;

/// A refresher in force and its task.
struct Running {
    name: String,
    settings: JwksSettings,
    refresher: Arc<Refresher>,
    task: AbortHandle,
}

/// One issuer's refresher after [`IssuerKeys::plan`]: kept from the running set, or new.
pub(super) struct Planned {
    name: String,
    settings: JwksSettings,
    refresher: Arc<Refresher>,
    kept: bool,
}

/// Owns the issuers' refresher tasks across reloads.
pub(super) struct IssuerKeys {
    running: Mutex<Vec<Running>>,
    shared: Arc<ArcSwap<Shared>>,
    metrics: Arc<Metrics>,
    shutdown: listener::Shutdown,
}

/// The first key set of one issuer, or an empty refresher that keeps trying (logged).
pub(super) async fn first_fetch(s: &IssuerSettings) -> Arc<Refresher> {
    let k = &s.keys;
    match Refresher::start(
        k.source.clone(),
        k.fetch.clone(),
        k.refresh_interval,
        k.min_refresh_interval,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(
                issuer = %s.name,
                source = %k.source,
                error = %e,
                "jwt.issuers: no key set for this issuer; its tokens are refused until a fetch succeeds (other issuers are not affected)"
            );
            Refresher::new(
                k.source.clone(),
                k.fetch.clone(),
                Vec::new(),
                k.refresh_interval,
                k.min_refresh_interval,
            )
        }
    }
}

/// The refreshers a new request-path state reads, in `[[jwt.issuers]]` order.
pub(super) fn refreshers(plan: &[Planned]) -> Vec<Arc<Refresher>> {
    plan.iter().map(|p| p.refresher.clone()).collect()
}

impl IssuerKeys {
    pub(super) fn new(
        shared: Arc<ArcSwap<Shared>>,
        metrics: Arc<Metrics>,
        shutdown: listener::Shutdown,
    ) -> Self {
        IssuerKeys {
            running: Mutex::new(Vec::new()),
            shared,
            metrics,
            shutdown,
        }
    }

    /// For each wanted issuer, the running refresher of the same name and key source, or a
    /// new one whose first fetch is made now (all at once).
    pub(super) async fn plan(&self, wanted: &[IssuerSettings]) -> Vec<Planned> {
        let fetches = wanted.iter().map(|w| {
            let kept = self
                .lock()
                .iter()
                .find(|r| r.name == w.name && r.settings == w.keys)
                .map(|r| r.refresher.clone());
            async move {
                let (refresher, kept) = match kept {
                    Some(r) => (r, true),
                    None => (first_fetch(w).await, false),
                };
                Planned {
                    name: w.name.clone(),
                    settings: w.keys.clone(),
                    refresher,
                    kept,
                }
            }
        });
        futures_util::future::join_all(fetches).await
    }

    /// At start: run the refreshers whose first fetch [`first_fetch`] made.
    pub(super) fn adopt(&self, wanted: &[IssuerSettings], first: Vec<Arc<Refresher>>) {
        let plan = wanted
            .iter()
            .zip(first)
            .map(|(w, refresher)| Planned {
                name: w.name.clone(),
                settings: w.keys.clone(),
                refresher,
                kept: false,
            })
            .collect();
        self.apply(plan);
    }

    /// A reload re-reads what the config names: each kept issuer's key set is fetched again
    /// now, past its rate limit. A failure keeps the set in force; the notes say so.
    pub(super) async fn refetch(&self, plan: &[Planned]) -> Vec<String> {
        let fetches = plan.iter().filter(|p| p.kept).map(|p| async move {
            let outcome = p.refresher.refresh_now().await;
            super::jwks::fetched(&self.shared, &self.metrics, outcome);
            (outcome == Refreshed::Failed).then(|| {
                format!(
                    "jwt.issuers {}: fetching {} failed; the previous key set stays in force (see the log)",
                    p.name,
                    p.refresher.source()
                )
            })
        });
        futures_util::future::join_all(fetches)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Carry out a plan: stop the tasks of issuers no longer wanted (or whose source
    /// changed), start those of new refreshers.
    pub(super) fn apply(&self, plan: Vec<Planned>) {
        let mut running = self.lock();
        let mut old: Vec<Running> = std::mem::take(&mut *running);
        for p in plan {
            let task = match old
                .iter()
                .position(|r| p.kept && Arc::ptr_eq(&r.refresher, &p.refresher))
            {
                Some(i) => old.swap_remove(i).task,
                None => self.spawn(&p.name, p.refresher.clone()),
            };
            running.push(Running {
                name: p.name,
                settings: p.settings,
                refresher: p.refresher,
                task,
            });
        }
        for r in old {
            r.task.abort();
            tracing::info!(issuer = %r.name, source = %r.settings.source, "issuer key refresher stopped");
        }
    }

    fn spawn(&self, name: &str, refresher: Arc<Refresher>) -> AbortHandle {
        tracing::info!(issuer = %name, source = %refresher.source(), keys = refresher.keys().len(), "issuer key refresher started");
        super::jwks::run(&self.shared, &self.metrics, &self.shutdown, refresher)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
