//! Cluster mode: the revocation set shared by every gateway instance through one Redis.
//!
//! Each instance keeps the whole set in its own [`Dictionary`], so the request path never
//! waits on Redis; Redis holds the shared state and carries the changes between instances.
//!
//! # Layout (`P` is `[revocation] key_prefix`, "portcullis" by default)
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:tok:<32 hex>` | string `exp` | a revoked token, expiring (`EXAT`) at `exp + leeway` |
//! | `P:sub:<32 hex>` | string `revoked_before:expires` | a revoked subject, expiring at `expires + leeway` |
//! | `P:stream` | stream, one field `r` | every change in order: the 37-byte record of `record.rs`, trimmed to about `stream_max_len` entries |
//! | `P:epoch` | string | a random name for this Redis data set, created by the first instance to connect |
//!
//! The keys are the full state (what a starting instance loads); the stream is the change
//! log (what running instances tail). Keys expire when the token would have: `exp` plus the
//! validator's clock-skew leeway, because a token is accepted that long past its `exp`.
//!
//! # A revoke
//!
//! One Lua script ([`APPLY_SCRIPT`]) writes the key and appends the record to the stream,
//! atomically (a script runs alone on the server), so no instance can see one without the
//! other. The admin call is acknowledged once Redis answered and the change is applied to
//! this instance's dictionary: a 2xx means "shared, and in force here". If Redis does not
//! answer within `timeout`, nothing is acknowledged (503).
//!
//! # Keeping up
//!
//! A background task ([`Cluster::run`]) holds a dedicated connection blocked in
//! `XREAD BLOCK` on the stream from the last entry it applied, so a change reaches every
//! instance as soon as Redis has it. On every (re)connect it first decides how to get back
//! in step ([`Cluster::sync`]):
//!
//! * **catch-up**: the stream still holds everything after our position: the tail simply
//!   reads from there (Redis persisted, or the outage was short).
//! * **full load**: first start, or entries after our position may have been trimmed away
//!   (`XINFO STREAM`: the oldest entry left is newer than our position): note the stream's
//!   last ID, `SCAN` every key, apply them, drop local entries Redis no longer has
//!   (un-revoked meanwhile, checked key by key so a concurrent revoke is never dropped),
//!   and tail from the noted ID, replaying whatever changed during the scan.
//! * **re-seed, then full load**: Redis lost data (the epoch key changed or vanished, or the
//!   stream is behind our position: a restart without persistence, a failover to a lagging
//!   replica, a `FLUSHALL`). The instance writes every live entry of its dictionary back
//!   (publishing only what Redis lacked), so the fleet's memory restores the shared set.
//!
//! While the tail is down the instance keeps serving from its dictionary and reports
//! itself degraded (`/readyz` 503, `portcullis_revocation_store_degraded` 1). Until the
//! first full load has succeeded, [`Cluster::is_loaded`] is false and every token counts as
//! revoked: an instance that knows nothing of the fleet's revocations fails closed.
//!
//! Files: this one holds the connections, the admin write and the tail; `sync.rs` the
//! three ways back in step; `wire.rs` key names, the script and reply decoding.

mod sync;
mod wire;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::{AsyncConnectionConfig, RedisError, Value};

use super::dict::Dictionary;
use super::record::Record;
pub use crate::config::redis::{check_url, redact_url, sentinel_url, SentinelUrl};
use crate::config::RedisStore;
use crate::telemetry::metrics::Metrics;
pub use wire::{bulk, items};
use wire::{stream_entries, Keys};
pub use wire::{StreamId, APPLY_SCRIPT};

/// How long one `XREAD` blocks waiting for changes. Short enough that a connection that
/// died silently is noticed within `TAIL_BLOCK + timeout`, long enough to cost nothing idle.
const TAIL_BLOCK: Duration = Duration::from_secs(1);
/// Stream entries read per `XREAD` (catching up on a backlog goes this many at a time).
const TAIL_BATCH: usize = 1024;
/// How often an idle tail checks that Redis still holds the data set it synced with.
const EPOCH_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// First and largest wait between reconnection attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Latest `EXAT` we ask for (9999-12-31): a client may send any `exp`, Redis refuses
/// expiry times that overflow its millisecond clock.
const MAX_EXPIRE_AT: u64 = 253_402_300_799;

/// Which changes a script call publishes on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publish {
    /// Every change (admin writes: the caller is told it is shared).
    Always,
    /// Only changes that altered the stored state (re-seeding after Redis lost data).
    IfChanged,
}

/// Why a tail session ended.
#[derive(Debug)]
enum End {
    /// The connection or Redis failed: degraded until the next successful sync.
    Failed(RedisError),
    /// Redis is fine but the set must be resynchronised (the data set changed under us, or
    /// a stream entry could not be decoded).
    Resync(&'static str),
}

impl From<RedisError> for End {
    fn from(e: RedisError) -> End {
        End::Failed(e)
    }
}

/// Why [`Cluster::write`] failed.
#[derive(Debug)]
pub enum WriteFailure {
    /// Redis answered with an error: nothing was written.
    NotDone(String),
    /// No answer in time, or the connection broke: the write may still take effect.
    Unknown(String),
}

/// The Redis side of cluster mode: connections, key names, and where this instance stands
/// in the change stream. Shared by the admin path ([`Cluster::write`]) and the background
/// task ([`Cluster::run`]).
pub struct Cluster {
    /// The Redis this instance talks to; with Sentinel, the master last discovered
    /// (replaced, with `writer`, when a reconnect finds another one).
    client: Mutex<redis::Client>,
    /// Admin writes; reconnects by itself after a failure.
    writer: Mutex<ConnectionManager>,
    /// `redis+sentinel://`: where to ask for the master.
    sentinel: Option<SentinelUrl>,
    /// The master address `client` points at (Sentinel only).
    master: Mutex<Option<(String, u16)>>,
    /// `WAIT` for this many replicas before acknowledging a write.
    min_replicas_ack: u32,
    writer_config: ConnectionManagerConfig,
    script: redis::Script,
    keys: Keys,
    stream_max_len: u64,
    timeout: Duration,
    load_timeout: Duration,
    leeway: u64,
    redacted_url: String,
    /// The last stream entry applied to the dictionary (by the tail or a full load).
    /// Held only for in-memory work, never across an await.
    pos: Mutex<StreamId>,
    /// The epoch of the data set this instance last synced with.
    epoch: Mutex<Option<String>>,
    /// A full load has completed at least once.
    loaded: AtomicBool,
    /// The tail is connected and in step.
    connected: AtomicBool,
    /// The next sync must do a full load (a stream entry could not be decoded).
    force_full: AtomicBool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("url", &self.redacted_url)
            .field("keys", &self.keys)
            .field("loaded", &self.is_loaded())
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

/// A Redis client for `store` (URL, and the private CA for `rediss://`), not connected yet.
/// Also used by the API-key store, which keeps its hash in the same Redis. With
/// `redis+sentinel://` it asks the sentinels for the current master, blocking up to
/// `timeout` per sentinel (start-up only), and points at that master.
pub fn client(store: &RedisStore) -> Result<redis::Client, RedisError> {
    if let Some(parsed) = sentinel_url(&store.url) {
        let s = parsed.map_err(|e| {
            RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "sentinel URL",
                e.to_string(),
            ))
        })?;
        let (host, port) = discover_blocking(&s, store.timeout)?;
        return redis::Client::open(format!("redis://{host}:{port}/{}", s.db));
    }
    if store.url.starts_with("rediss://") {
        // The redis crate builds its rustls config from the process default provider;
        // make it ours (a no-op when one is already installed).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
    match &store.tls_ca {
        Some(pem) => redis::Client::build_with_tls(
            store.url.as_str(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        None => redis::Client::open(store.url.as_str()),
    }
}

/// The master's address from the first sentinel that knows it (blocking).
fn discover_blocking(s: &SentinelUrl, timeout: Duration) -> Result<(String, u16), RedisError> {
    let mut last = None;
    for (host, port) in &s.sentinels {
        let asked = redis::Client::open(format!("redis://{host}:{port}"))
            .and_then(|c| c.get_connection_with_timeout(timeout))
            .and_then(|mut c| {
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&s.master)
                    .query::<Option<(String, u16)>>(&mut c)
            });
        match asked {
            Ok(Some(addr)) => return Ok(addr),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        RedisError::from((
            redis::ErrorKind::Io,
            "no sentinel knows the master",
            s.master.clone(),
        ))
    }))
}

/// The master's address from the first sentinel that knows it.
async fn discover(s: &SentinelUrl, timeout: Duration) -> Result<(String, u16), RedisError> {
    let mut last = None;
    for (host, port) in &s.sentinels {
        let asked = async {
            let client = redis::Client::open(format!("redis://{host}:{port}"))?;
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout));
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&s.master)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
        };
        match asked.await {
            Ok(Some(addr)) => return Ok(addr),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        RedisError::from((
            redis::ErrorKind::Io,
            "no sentinel knows the master",
            s.master.clone(),
        ))
    }))
}

impl Cluster {
    /// Set up clients without connecting (needs a tokio runtime). With Sentinel, asks for
    /// the current master first (blocking, see [`client`]).
    pub fn new(store: &RedisStore, leeway: u64) -> Result<Cluster, RedisError> {
        let sentinel = match sentinel_url(&store.url) {
            Some(parsed) => Some(parsed.map_err(|e| {
                RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "sentinel URL",
                    e.to_string(),
                ))
            })?),
            None => None,
        };
        let writer_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(store.timeout))
            .set_response_timeout(Some(store.timeout))
            .set_number_of_retries(2)
            .set_max_delay(MAX_BACKOFF);
        // With Sentinel the first discovery happens at the first connect, so an unreachable
        // fleet does not stop the start (the instance starts unready, like a plain URL).
        let client = match &sentinel {
            Some(s) => redis::Client::open(format!(
                "redis://{}:{}/{}",
                s.sentinels.first().map_or("127.0.0.1", |h| h.0.as_str()),
                s.sentinels.first().map_or(1, |h| h.1),
                s.db
            ))?,
            None => client(store)?,
        };
        let writer = client.get_connection_manager_lazy(writer_config.clone())?;
        Ok(Cluster {
            client: Mutex::new(client),
            writer: Mutex::new(writer),
            master: Mutex::new(None),
            min_replicas_ack: store.min_replicas_ack,
            writer_config,
            sentinel,
            script: redis::Script::new(APPLY_SCRIPT),
            keys: Keys::new(&store.key_prefix),
            stream_max_len: store.stream_max_len,
            timeout: store.timeout,
            load_timeout: store.load_timeout,
            leeway,
            redacted_url: store.redacted(),
            pos: Mutex::new(StreamId::default()),
            epoch: Mutex::new(None),
            loaded: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            force_full: AtomicBool::new(false),
        })
    }

    /// Has the full set been loaded at least once? Until then every token counts as revoked.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// What the sign-in session store needs to keep its families in this Redis: the admin
    /// write connection (it reconnects by itself), `P:` (the prefix every key starts with),
    /// and the time Redis has to answer one call.
    pub fn session_link(&self) -> (ConnectionManager, String, Duration) {
        (
            self.writer_connection(),
            self.keys.root.clone(),
            self.timeout,
        )
    }

    /// `P:`, the prefix every key starts with.
    pub fn key_root(&self) -> &str {
        &self.keys.root
    }

    /// A connection of its own for the fleet-wide rate limits (one call per limited request,
    /// kept off the admin write connection), to the current master, connected at first use
    /// and again by itself after a failure.
    pub fn rate_limit_link(&self) -> Result<ConnectionManager, RedisError> {
        let client = self
            .client
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(MAX_BACKOFF);
        client.get_connection_manager_lazy(config)
    }

    /// The admin write connection to the current master (with Sentinel, replaced when a
    /// failover moves the master).
    pub fn writer_connection(&self) -> ConnectionManager {
        self.writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Is the tail connected and in step with Redis?
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Start-up: load the full set into `dict`, waiting at most `load_timeout` for Redis to
    /// answer. On failure the instance starts unready and [`Cluster::run`] keeps trying.
    pub async fn initial_load(&self, dict: &Dictionary) {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.load_timeout;
        let mut backoff = MIN_BACKOFF;
        let mut last_error = String::from("no attempt within load_timeout");
        // Wait up to `load_timeout` for Redis to answer (it may be starting beside us). Once
        // it answers the load runs to its end, each command under its own timeout: a large
        // set that takes longer to read must not make the instance start unready.
        let conn = loop {
            match tokio::time::timeout_at(deadline, self.connect()).await {
                Ok(Ok(conn)) => break Some(conn),
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => break None,
            }
            if tokio::time::Instant::now() + backoff >= deadline {
                break None;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        };
        let Some(mut conn) = conn else {
            tracing::warn!(
                url = %self.redacted_url, error = %last_error, load_timeout = ?self.load_timeout,
                "Redis unreachable at start; serving unready, every token refused until the revocations load"
            );
            return;
        };
        match self.sync(&mut conn, dict).await {
            Ok(report) => {
                self.connected.store(true, Ordering::Relaxed);
                tracing::info!(
                    url = %self.redacted_url,
                    tokens = report.tokens,
                    subjects = report.subjects,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "revocations loaded from Redis"
                );
            }
            Err(e) => tracing::warn!(
                url = %self.redacted_url, error = %e,
                "cannot load revocations from Redis; serving unready, every token refused until they load"
            ),
        }
    }

    /// Make `records` shared (keys + stream, atomically), then apply them to `dict`.
    /// Fails, changing nothing here, when Redis does not confirm within `timeout`; then the
    /// outcome is unknown (a slow Redis may still run the script when it wakes), unless
    /// Redis answered with an error.
    pub async fn write(&self, records: &[Record], dict: &Dictionary) -> Result<(), WriteFailure> {
        // Known cut off (the tail lost Redis and has not got it back): refuse without
        // sending, so the answer can truthfully say nothing changed. The tail retries
        // within `MAX_BACKOFF`, so this holds revokes up only while Redis is unreachable.
        if !self.is_connected() {
            return Err(WriteFailure::NotDone(
                "Redis is unreachable from this instance; nothing was sent".into(),
            ));
        }
        let attempt = async {
            let mut conn = self.writer_connection();
            let ids = match self.invoke(&mut conn, records, Publish::Always).await {
                // The first command after Redis restarted fails on the dead connection
                // while the manager reconnects; one retry rides on the new connection.
                // Replaying the script is harmless: revokes only widen, deletes repeat.
                Err(e) if e.is_unrecoverable_error() || e.is_connection_dropped() => {
                    self.invoke(&mut conn, records, Publish::Always).await
                }
                done => done,
            }?;
            if self.min_replicas_ack > 0 {
                // WAIT counts the replicas that acknowledged every write this connection
                // made so far, ours included.
                let acked: i64 = redis::cmd("WAIT")
                    .arg(self.min_replicas_ack)
                    .arg(self.timeout.as_millis() as u64)
                    .query_async(&mut conn)
                    .await?;
                if acked < i64::from(self.min_replicas_ack) {
                    return Err(RedisError::from((
                        redis::ErrorKind::Io,
                        "not confirmed by enough replicas",
                        format!("{acked} of {} replicas have it", self.min_replicas_ack),
                    )));
                }
            }
            Ok(ids)
        };
        let ids = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(ids)) => ids,
            // An error reply means the script did not run; a dropped connection or an I/O
            // error may have happened after Redis received it.
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                return Err(WriteFailure::Unknown(format!("Redis write failed: {e}")))
            }
            Ok(Err(e)) => return Err(WriteFailure::NotDone(format!("Redis write failed: {e}"))),
            Err(_) => {
                return Err(WriteFailure::Unknown(format!(
                    "no answer from Redis within {:?}",
                    self.timeout
                )))
            }
        };
        let pos = self.pos.lock().unwrap_or_else(PoisonError::into_inner);
        for (record, id) in records.iter().zip(ids) {
            // The tail applies stream entries in order; one it already passed must not be
            // applied again out of order (a later un-revoke would be undone).
            if id.is_some_and(|id| id <= *pos) {
                continue;
            }
            record.apply(dict);
        }
        Ok(())
    }

    /// Keep `dict` in step with Redis for as long as the future is polled: sync, tail the
    /// stream, and on any failure report degraded, back off, reconnect and sync again.
    pub async fn run(&self, dict: &Dictionary, metrics: &Metrics) {
        let mut backoff = MIN_BACKOFF;
        let mut failures = 0u64;
        loop {
            metrics.store_degraded.set(i64::from(!self.is_connected()));
            match self.session(dict, metrics).await {
                End::Resync(why) => {
                    tracing::info!(reason = why, "resynchronising revocations with Redis");
                }
                End::Failed(e) => {
                    let was_connected = self.connected.swap(false, Ordering::Relaxed);
                    metrics.store_degraded.set(1);
                    if was_connected {
                        backoff = MIN_BACKOFF;
                        failures = 0;
                        tracing::warn!(
                            url = %self.redacted_url, error = %e,
                            "lost Redis: serving from memory, admin revokes refused, /readyz 503 until it is back"
                        );
                    } else if failures % 20 == 0 {
                        tracing::warn!(url = %self.redacted_url, error = %e, attempts = failures + 1, "Redis still unreachable");
                    }
                    failures += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// One connection's life: connect, sync, then tail until something breaks.
    async fn session(&self, dict: &Dictionary, metrics: &Metrics) -> End {
        let started = Instant::now();
        let mut conn = match self.connect().await {
            Ok(c) => c,
            Err(e) => return End::Failed(e),
        };
        let report = match self.sync(&mut conn, dict).await {
            Ok(r) => r,
            Err(e) => return End::Failed(e),
        };
        let was_connected = self.connected.swap(true, Ordering::Relaxed);
        metrics.store_degraded.set(0);
        metrics
            .revocation_entries
            .set((dict.len_tokens() + dict.len_subjects()) as i64);
        let line = if was_connected {
            "resynchronised with Redis"
        } else {
            "in step with Redis"
        };
        tracing::info!(
            url = %self.redacted_url,
            mode = report.mode,
            tokens = report.tokens,
            subjects = report.subjects,
            dropped = report.dropped,
            reseeded = report.reseeded,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "{line}"
        );
        match self.tail(&mut conn, dict).await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    /// A dedicated connection for the tail and syncs: its response timeout leaves room for
    /// a blocked `XREAD`.
    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        if let Some(s) = &self.sentinel {
            self.follow_master(s).await?;
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(TAIL_BLOCK + self.timeout));
        let client = self
            .client
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Sentinel: asks where the master is now and, when it moved (a failover), points the
    /// tail and the admin writes at the new one.
    async fn follow_master(&self, s: &SentinelUrl) -> Result<(), RedisError> {
        let addr = discover(s, self.timeout).await?;
        let mut master = self.master.lock().unwrap_or_else(PoisonError::into_inner);
        if master.as_ref() == Some(&addr) {
            return Ok(());
        }
        let client = redis::Client::open(format!("redis://{}:{}/{}", addr.0, addr.1, s.db))?;
        let writer = client.get_connection_manager_lazy(self.writer_config.clone())?;
        tracing::info!(master = %format!("{}:{}", addr.0, addr.1), name = %s.master,
            "following the Redis master the sentinels name");
        *self.client.lock().unwrap_or_else(PoisonError::into_inner) = client;
        *self.writer.lock().unwrap_or_else(PoisonError::into_inner) = writer;
        *master = Some(addr);
        Ok(())
    }

    /// Tail the stream from our position, applying entries in order, until the connection
    /// fails or a resync is needed.
    async fn tail(
        &self,
        conn: &mut MultiplexedConnection,
        dict: &Dictionary,
    ) -> Result<std::convert::Infallible, End> {
        let block_ms = TAIL_BLOCK.as_millis() as u64;
        let mut epoch_checked = Instant::now();
        loop {
            let from = *self.pos.lock().unwrap_or_else(PoisonError::into_inner);
            let reply: Value = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(TAIL_BATCH)
                .arg("BLOCK")
                .arg(block_ms)
                .arg("STREAMS")
                .arg(&self.keys.stream)
                .arg(from.to_string())
                .query_async(conn)
                .await?;
            let entries = stream_entries(reply);
            if entries.is_empty() {
                if epoch_checked.elapsed() >= EPOCH_CHECK_INTERVAL {
                    epoch_checked = Instant::now();
                    let now: Option<String> = redis::cmd("GET")
                        .arg(&self.keys.epoch)
                        .query_async(conn)
                        .await?;
                    let known = self
                        .epoch
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    if now != known {
                        return Err(End::Resync("the Redis data set changed (epoch key)"));
                    }
                }
                continue;
            }
            let mut corrupt = false;
            {
                let mut pos = self.pos.lock().unwrap_or_else(PoisonError::into_inner);
                for (id, record) in entries {
                    if id <= *pos {
                        continue;
                    }
                    match record {
                        Some(r) => r.apply(dict),
                        None => corrupt = true,
                    }
                    *pos = id;
                }
            }
            if corrupt {
                self.force_full.store(true, Ordering::Relaxed);
                return Err(End::Resync("a change-stream entry could not be decoded"));
            }
        }
    }

    /// Run [`APPLY_SCRIPT`] on `records`; per record, the stream ID it was published under.
    async fn invoke<C: ConnectionLike>(
        &self,
        conn: &mut C,
        records: &[Record],
        publish: Publish,
    ) -> Result<Vec<Option<StreamId>>, RedisError> {
        let mut call = self.script.prepare_invoke();
        call.key(&self.keys.stream).arg(self.stream_max_len).arg(
            if publish == Publish::IfChanged {
                "1"
            } else {
                "0"
            },
        );
        for record in records {
            let (op, value, at) = match *record {
                Record::RevokeToken { exp, .. } => ("t", exp.to_string(), self.expire_at(exp)),
                Record::RevokeSubject {
                    revoked_before,
                    expires,
                    ..
                } => (
                    "s",
                    format!("{revoked_before}:{expires}"),
                    self.expire_at(expires),
                ),
                Record::UnrevokeToken { .. } | Record::UnrevokeSubject { .. } => {
                    ("d", String::new(), 1)
                }
            };
            call.key(self.keys.of(record))
                .arg(op)
                .arg(value)
                .arg(at)
                .arg(&record.encode_wire()[..]);
        }
        let reply: Value = call.invoke_async(conn).await?;
        let mut ids: Vec<Option<StreamId>> = items(reply)
            .iter()
            .map(|v| bulk(v).and_then(StreamId::parse))
            .collect();
        ids.resize(records.len(), None);
        Ok(ids)
    }

    /// When Redis may forget an entry expiring at `exp`: once the validator would refuse
    /// the token anyway, i.e. `exp + leeway`.
    fn expire_at(&self, exp: u64) -> u64 {
        exp.saturating_add(self.leeway).clamp(1, MAX_EXPIRE_AT)
    }
}
