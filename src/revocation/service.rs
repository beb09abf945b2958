//! The revocation service: the dictionary the request path reads, kept in step with the
//! durable store, plus the background work (sweep, compaction, and in cluster mode the
//! Redis tail).
//!
//! Order of a revoke: the record is made durable first (fsynced to the log, or confirmed by
//! Redis in cluster mode), then applied in memory, then acknowledged; so a 2xx means
//! "stored and in force here", and a crash between the two steps only replays something the
//! client never heard acknowledged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::dict::{Dictionary, Key};
use super::log::{Log, LogError};
use super::record::Record;
use super::redis::Cluster;
use crate::auth::jws::Verified;
use crate::config::StoreKind;
use crate::telemetry::metrics::Metrics;

/// How often a degraded log checks whether the disk takes writes again (the probe itself
/// backs off, see `crate::durable::commit`).
const LOG_PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// Why a change could not be made durable (the admin API answers 503).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Log(#[from] LogError),
    /// Known not to have happened anywhere.
    #[error("the revocation store is not available: {0}")]
    Unavailable(String),
    /// The store did not confirm in time: the change may still take effect (a slow Redis
    /// that wakes up). Repeating it is safe: revocations are idempotent.
    #[error("the revocation store did not confirm the change: {0}")]
    OutcomeUnknown(String),
}

impl StoreError {
    /// Whether the change is known to have been made nowhere (so an answer may say
    /// "nothing changed").
    pub fn nothing_changed(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Log(e) => matches!(e, LogError::Refused { .. }),
            StoreError::OutcomeUnknown(_) => false,
        }
    }
}

enum Store {
    Log(Box<Log>),
    Memory,
    /// Cluster mode: shared through Redis, tailed by the maintenance task.
    Redis(Arc<Cluster>),
}

/// Where a [`Revocations`] keeps its state, for the sign-in session store that sits beside
/// it (`signin::sessions`): same kind of store, same place.
pub enum Backing<'a> {
    Memory,
    /// The embedded log at this path.
    Log(&'a std::path::Path),
    Redis(&'a Arc<Cluster>),
}

/// The revocation dictionary and its store.
pub struct Revocations {
    dict: Dictionary,
    store: Store,
    /// Seconds of clock skew tolerated by the validator; sweeps keep entries that long.
    leeway: u64,
    /// Lifetime assumed for tokens whose `exp` is unknown.
    max_lifetime: u64,
    ready: AtomicBool,
    /// Open damaged store files anyway (see `Log::open_with`); the session journal follows.
    recover: bool,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("tokens", &self.dict.len_tokens())
            .field("subjects", &self.dict.len_subjects())
            .finish_non_exhaustive()
    }
}

impl Revocations {
    /// An instance with nothing stored anywhere (tests, `store = "memory"`).
    pub fn in_memory(leeway: u64, max_lifetime: u64) -> Self {
        Revocations {
            dict: Dictionary::new(),
            store: Store::Memory,
            leeway,
            max_lifetime,
            ready: AtomicBool::new(true),
            recover: false,
        }
    }

    /// Open the configured store, refusing a damaged store file (see
    /// [`Revocations::open_recovering`]).
    pub async fn open(kind: &StoreKind, leeway: u64, max_lifetime: u64) -> anyhow::Result<Self> {
        Self::open_recovering(kind, false, leeway, max_lifetime).await
    }

    /// Whether damaged store files are opened anyway (`[revocation] recover`).
    pub fn recover(&self) -> bool {
        self.recover
    }

    /// Open the configured store and load every revocation in force (the log is read on a
    /// blocking thread).
    ///
    /// Cluster mode waits up to `load_timeout` for Redis to answer, then for the whole load.
    /// If Redis does not answer in time the instance still starts, unready and refusing
    /// every token (nothing proves a token was not revoked), while
    /// [`Revocations::spawn_maintenance`] keeps trying: an orchestrator sees `/readyz` 503
    /// instead of a crash loop.
    /// A damaged log refuses the start with a message naming the file, the offset and how to
    /// recover, unless `recover`: then every intact record loads and the damaged file is
    /// preserved beside it.
    pub async fn open_recovering(
        kind: &StoreKind,
        recover: bool,
        leeway: u64,
        max_lifetime: u64,
    ) -> anyhow::Result<Self> {
        match kind {
            StoreKind::Memory => Ok(Self::in_memory(leeway, max_lifetime)),
            StoreKind::Log(path) => {
                let started = std::time::Instant::now();
                let owned = path.clone();
                let (log, replay) = tokio::task::spawn_blocking(move || {
                    Log::open_with(owned, super::now_unix(), super::REPLAY_LEEWAY, recover)
                })
                .await??;
                tracing::info!(
                    path = %path.display(),
                    tokens = replay.dict.len_tokens(),
                    subjects = replay.dict.len_subjects(),
                    records = replay.records,
                    expired = replay.expired,
                    corrupt = replay.corrupt,
                    truncated_bytes = replay.truncated,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "revocation store loaded"
                );
                Ok(Revocations {
                    dict: replay.dict,
                    store: Store::Log(Box::new(log)),
                    leeway,
                    max_lifetime,
                    ready: AtomicBool::new(true),
                    recover,
                })
            }
            StoreKind::Redis(store) => {
                let cluster = Cluster::new(store, leeway)
                    .map_err(|e| anyhow::anyhow!("revocation.store `{}`: {e}", store.redacted()))?;
                let dict = Dictionary::new();
                cluster.initial_load(&dict).await;
                Ok(Revocations {
                    dict,
                    store: Store::Redis(Arc::new(cluster)),
                    leeway,
                    max_lifetime,
                    ready: AtomicBool::new(true),
                    recover,
                })
            }
        }
    }

    /// Is this verified token revoked? O(1): one or two sharded map reads. In cluster mode,
    /// before the first full load from Redis, every token counts as revoked (fail closed).
    pub fn is_revoked(&self, v: &Verified) -> bool {
        if !self.is_loaded() {
            return true;
        }
        self.dict
            .is_revoked(v.token_key, v.sub_key, v.iat)
            .is_some()
    }

    /// Does the dictionary hold every revocation in force? False only in cluster mode
    /// before the first full load from Redis (then [`Self::is_revoked`] refuses everything;
    /// the request path may prefer to answer 503 rather than 401 while this is false).
    pub fn is_loaded(&self) -> bool {
        match &self.store {
            Store::Redis(cluster) => cluster.is_loaded(),
            Store::Log(_) | Store::Memory => true,
        }
    }

    pub fn dict(&self) -> &Dictionary {
        &self.dict
    }

    /// Loaded, and (cluster mode) in step with Redis: what `/readyz` reports.
    pub fn is_ready(&self) -> bool {
        match &self.store {
            Store::Redis(cluster) => cluster.is_loaded() && cluster.is_connected(),
            Store::Log(log) => self.ready.load(Ordering::Relaxed) && !log.is_degraded(),
            Store::Memory => self.ready.load(Ordering::Relaxed),
        }
    }

    pub fn max_lifetime(&self) -> u64 {
        self.max_lifetime
    }

    /// The store behind this service.
    pub fn backing(&self) -> Backing<'_> {
        match &self.store {
            Store::Memory => Backing::Memory,
            Store::Log(log) => Backing::Log(log.path()),
            Store::Redis(cluster) => Backing::Redis(cluster),
        }
    }

    /// Make `records` durable, then apply them. Returns once both are done.
    pub async fn apply(self: &Arc<Self>, records: Vec<Record>) -> Result<(), StoreError> {
        match &self.store {
            Store::Memory => {
                for r in &records {
                    r.apply(&self.dict);
                }
                Ok(())
            }
            Store::Log(_) => {
                let me = self.clone();
                tokio::task::spawn_blocking(move || match &me.store {
                    Store::Log(log) => log.append_and_apply(&records, &me.dict),
                    Store::Memory | Store::Redis(_) => Ok(()),
                })
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?
                .map_err(StoreError::from)
            }
            Store::Redis(cluster) => {
                cluster
                    .write(&records, &self.dict)
                    .await
                    .map_err(|e| match e {
                        super::redis::WriteFailure::NotDone(e) => StoreError::Unavailable(e),
                        super::redis::WriteFailure::Unknown(e) => StoreError::OutcomeUnknown(e),
                    })
            }
        }
    }

    /// Revoke one token by key until `exp` (or `now + max_lifetime` when unknown).
    pub async fn revoke_token(
        self: &Arc<Self>,
        key: Key,
        exp: Option<u64>,
        now: u64,
    ) -> Result<u64, StoreError> {
        let exp = exp.unwrap_or(now.saturating_add(self.max_lifetime));
        self.apply(vec![Record::RevokeToken { key, exp }]).await?;
        Ok(exp)
    }

    /// Revoke every token of a subject issued before `revoked_before`.
    pub async fn revoke_subject(
        self: &Arc<Self>,
        key: Key,
        revoked_before: u64,
    ) -> Result<u64, StoreError> {
        let expires = revoked_before.saturating_add(self.max_lifetime);
        self.apply(vec![Record::RevokeSubject {
            key,
            revoked_before,
            expires,
        }])
        .await?;
        Ok(expires)
    }

    /// Sweep expired entries every `interval` and compact the log when it has grown well
    /// past the live set; in cluster mode also keep the dictionary in step with Redis
    /// ([`Cluster::run`]). Until `stop` completes.
    pub fn spawn_maintenance(
        self: Arc<Self>,
        interval: Duration,
        metrics: Arc<Metrics>,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let sweep = async {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let me = self.clone();
                    let metrics = metrics.clone();
                    let _ = tokio::task::spawn_blocking(move || me.maintain(&metrics)).await;
                }
            };
            let sync = async {
                match &self.store {
                    Store::Redis(cluster) => cluster.run(&self.dict, &metrics).await,
                    Store::Log(_) => self.watch_log(&metrics).await,
                    Store::Memory => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sweep => {}
                _ = sync => {}
                _ = stop => {}
            }
        })
    }

    /// After a failed write (disk full) the log is degraded: `/readyz` 503 and the gauge 1
    /// until a probe or a revoke finds the disk writable again, with no restart.
    async fn watch_log(self: &Arc<Self>, metrics: &Metrics) {
        loop {
            tokio::time::sleep(LOG_PROBE_INTERVAL).await;
            let degraded = match &self.store {
                Store::Log(log) if log.is_degraded() => {
                    let me = self.clone();
                    let healthy = tokio::task::spawn_blocking(move || match &me.store {
                        Store::Log(log) => log.probe(),
                        Store::Memory | Store::Redis(_) => true,
                    })
                    .await
                    .unwrap_or(false);
                    !healthy
                }
                _ => false,
            };
            metrics.store_degraded.set(i64::from(degraded));
        }
    }

    fn maintain(&self, metrics: &Metrics) {
        let now = crate::pipeline::unix_now();
        let dropped = self.dict.sweep(now, self.leeway);
        let live = self.dict.len_tokens() + self.dict.len_subjects();
        metrics.revocation_entries.set(live as i64);
        if dropped > 0 {
            tracing::debug!(dropped, live, "swept expired revocations");
        }
        if let Store::Log(log) = &self.store {
            if log.needs_compaction(live) {
                match log.compact(&self.dict, now, self.leeway) {
                    Ok(stats) => tracing::info!(?stats, "revocation log compacted"),
                    Err(e) => tracing::warn!(error = %e, "revocation log compaction failed"),
                }
            }
        }
    }
}
