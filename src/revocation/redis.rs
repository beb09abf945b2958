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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::{AsyncConnectionConfig, RedisError, Value};

use super::dict::{key_from_hex, key_to_hex, Dictionary, Key, SubjectEntry};
use super::log::now_unix;
use super::record::{Record, RECORD_LEN};
use crate::config::RedisStore;
use crate::telemetry::metrics::Metrics;

/// How long one `XREAD` blocks waiting for changes. Short enough that a connection that
/// died silently is noticed within `TAIL_BLOCK + timeout`, long enough to cost nothing idle.
const TAIL_BLOCK: Duration = Duration::from_secs(1);
/// Stream entries read per `XREAD` (catching up on a backlog goes this many at a time).
const TAIL_BATCH: usize = 1024;
/// Keys asked for per `SCAN` and read per `MGET` in a full load.
const SCAN_BATCH: usize = 1000;
/// Records written per script call when re-seeding.
const RESEED_BATCH: usize = 500;
/// How often an idle tail checks that Redis still holds the data set it synced with.
const EPOCH_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// First and largest wait between reconnection attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Latest `EXAT` we ask for (9999-12-31): a client may send any `exp`, Redis refuses
/// expiry times that overflow its millisecond clock.
const MAX_EXPIRE_AT: u64 = 253_402_300_799;

/// Writes changes to the keys and the stream in one atomic step.
///
/// `KEYS[1]` is the stream, `KEYS[1 + i]` the entry key of change `i`. `ARGV[1]` is the
/// stream's approximate `MAXLEN`; `ARGV[2]` is `1` to publish only changes that altered the
/// stored state (re-seeding), `0` to publish every change (admin writes). Then four
/// arguments per change: `t` (revoke token, value `exp`), `s` (revoke subject, value
/// `revoked_before:expires`) or `d` (delete); the value; the `EXAT` time; the record.
///
/// A revoke never narrows what is stored: each number keeps the larger of the stored and
/// the new value, compared as decimal strings so no precision is lost to Lua's doubles.
/// Returns per change the stream ID it was published under, or nil.
pub const APPLY_SCRIPT: &str = r#"
local function bigger(a, b)
  if #a ~= #b then return (#a > #b) and a or b end
  return (a > b) and a or b
end
local out = {}
for i = 1, #KEYS - 1 do
  local at = 3 + (i - 1) * 4
  local op, value, exat, record = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local key = KEYS[i + 1]
  local changed = true
  if op == 'd' then
    changed = redis.call('DEL', key) == 1
  else
    local cur = redis.call('GET', key)
    local keepttl = false
    if cur then
      if op == 't' and string.match(cur, '^%d+$') then
        if bigger(cur, value) == cur then changed = false end
      elseif op == 's' then
        local crb, cex = string.match(cur, '^(%d+):(%d+)$')
        local nrb, nex = string.match(value, '^(%d+):(%d+)$')
        if crb and nrb then
          local rb, ex = bigger(crb, nrb), bigger(cex, nex)
          if rb == crb and ex == cex then
            changed = false
          else
            value = rb .. ':' .. ex
            keepttl = (ex == cex)
          end
        end
      end
    end
    if changed then
      if keepttl then
        redis.call('SET', key, value, 'KEEPTTL')
      else
        redis.call('SET', key, value, 'EXAT', exat)
      end
    end
  end
  if changed or ARGV[2] == '0' then
    out[i] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'r', record)
  else
    out[i] = false
  end
end
return out
"#;

/// An entry ID of a Redis stream: milliseconds, then a sequence number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    /// Parses `MS-SEQ` (a bare `MS` means sequence 0).
    pub fn parse(raw: &[u8]) -> Option<StreamId> {
        let s = std::str::from_utf8(raw).ok()?;
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The URL with the password (if any) replaced by `***`, for logs and config errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// Whether `url` is a Redis URL this build can connect to (`portcullis check` runs this).
/// The message never repeats the URL, which may hold a password.
pub fn check_url(url: &str) -> Result<(), String> {
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| format!("{:?}: {}", e.kind(), e.detail().unwrap_or("invalid URL")))
}

/// Names of the keys one deployment uses.
#[derive(Debug)]
struct Keys {
    /// `P:`, what every key starts with.
    root: String,
    stream: String,
    epoch: String,
    /// `P:tok:` and `P:sub:`, to which a key's hex is appended.
    token: String,
    subject: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys {
            root: format!("{prefix}:"),
            stream: format!("{prefix}:stream"),
            epoch: format!("{prefix}:epoch"),
            token: format!("{prefix}:tok:"),
            subject: format!("{prefix}:sub:"),
        }
    }

    fn of(&self, record: &Record) -> String {
        match record {
            Record::RevokeToken { key, .. } | Record::UnrevokeToken { key } => {
                format!("{}{}", self.token, key_to_hex(key))
            }
            Record::RevokeSubject { key, .. } | Record::UnrevokeSubject { key } => {
                format!("{}{}", self.subject, key_to_hex(key))
            }
        }
    }
}

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

/// The full state read from Redis by a full load.
#[derive(Debug, Default)]
struct Snapshot {
    tokens: Vec<(Key, u64)>,
    subjects: Vec<(Key, SubjectEntry)>,
}

impl Snapshot {
    /// Adds one key and its value; false when either is not what the gateway writes.
    fn add(&mut self, keys: &Keys, name: &[u8], value: &[u8]) -> bool {
        let parse_key = |hex: &[u8]| key_from_hex(std::str::from_utf8(hex).ok()?);
        let text = std::str::from_utf8(value).ok();
        if let Some(hex) = name.strip_prefix(keys.token.as_bytes()) {
            let exp = text.and_then(|t| t.parse::<u64>().ok());
            if let (Some(key), Some(exp)) = (parse_key(hex), exp) {
                self.tokens.push((key, exp));
                return true;
            }
        } else if let Some(hex) = name.strip_prefix(keys.subject.as_bytes()) {
            let entry = text.and_then(|t| {
                let (rb, ex) = t.split_once(':')?;
                Some(SubjectEntry {
                    revoked_before: rb.parse().ok()?,
                    expires: ex.parse().ok()?,
                })
            });
            if let (Some(key), Some(entry)) = (parse_key(hex), entry) {
                self.subjects.push((key, entry));
                return true;
            }
        }
        false
    }
}

/// What `XINFO STREAM` says about the change stream.
#[derive(Debug, Default, Clone, Copy)]
struct StreamInfo {
    /// The last ID ever added (0-0 when the stream does not exist).
    last: StreamId,
    /// The largest ID removed by `XDEL` (Redis 7 and later).
    max_deleted: Option<StreamId>,
    /// The oldest entry still in the stream (none when it is empty).
    first: Option<StreamId>,
}

impl StreamInfo {
    /// May entries after `pos` be gone (so catching up from `pos` would miss them)?
    ///
    /// Trimming removes the oldest entries and, in Redis 7.0 at least, does not move
    /// `max-deleted-entry-id` (only `XDEL` does), so: if the oldest entry left is newer than
    /// `pos`, or the stream is empty although IDs past `pos` were handed out, assume a gap.
    /// This errs one way only: when the trimmed part ends exactly at `pos` it asks for a
    /// full load that catching up would have made unnecessary.
    fn trimmed_after(&self, pos: StreamId) -> bool {
        let trimmed = match self.first {
            Some(first) => first > pos,
            None => self.last > pos,
        };
        trimmed || self.max_deleted.is_some_and(|deleted| deleted > pos)
    }
}

/// How a sync got this instance back in step, for the log line.
#[derive(Debug, Default)]
struct SyncReport {
    mode: &'static str,
    tokens: usize,
    subjects: usize,
    dropped: usize,
    reseeded: usize,
}

/// The Redis side of cluster mode: connections, key names, and where this instance stands
/// in the change stream. Shared by the admin path ([`Cluster::write`]) and the background
/// task ([`Cluster::run`]).
pub struct Cluster {
    client: redis::Client,
    /// Admin writes; reconnects by itself after a failure.
    writer: ConnectionManager,
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

impl Cluster {
    /// Set up clients without connecting (needs a tokio runtime).
    pub fn new(store: &RedisStore, leeway: u64) -> Result<Cluster, RedisError> {
        if store.url.starts_with("rediss://") {
            // The redis crate builds its rustls config from the process default provider;
            // make it ours (a no-op when one is already installed).
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let client = match &store.tls_ca {
            Some(pem) => redis::Client::build_with_tls(
                store.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            )?,
            None => redis::Client::open(store.url.as_str())?,
        };
        let writer = client.get_connection_manager_lazy(
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(store.timeout))
                .set_response_timeout(Some(store.timeout))
                .set_number_of_retries(2)
                .set_max_delay(MAX_BACKOFF),
        )?;
        Ok(Cluster {
            client,
            writer,
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
    /// Fails, changing nothing here, when Redis does not confirm within `timeout`.
    pub async fn write(&self, records: &[Record], dict: &Dictionary) -> Result<(), String> {
        let attempt = async {
            let mut conn = self.writer.clone();
            match self.invoke(&mut conn, records, Publish::Always).await {
                // The first command after Redis restarted fails on the dead connection
                // while the manager reconnects; one retry rides on the new connection.
                // Replaying the script is harmless: revokes only widen, deletes repeat.
                Err(e) if e.is_unrecoverable_error() || e.is_connection_dropped() => {
                    self.invoke(&mut conn, records, Publish::Always).await
                }
                done => done,
            }
        };
        let ids = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(ids)) => ids,
            Ok(Err(e)) => return Err(format!("Redis write failed: {e}")),
            Err(_) => return Err(format!("no answer from Redis within {:?}", self.timeout)),
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
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(TAIL_BLOCK + self.timeout));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Get back in step with Redis after a (re)connect: catch-up, full load, or re-seed
    /// then full load (see the module documentation for when each applies).
    async fn sync(
        &self,
        conn: &mut MultiplexedConnection,
        dict: &Dictionary,
    ) -> Result<SyncReport, RedisError> {
        let epoch = self.current_epoch(conn).await?;
        let info = self.stream_info(conn).await?;
        let known = self
            .epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let pos = *self.pos.lock().unwrap_or_else(PoisonError::into_inner);
        let loaded = self.is_loaded();
        let lost = loaded && (known.as_deref() != Some(epoch.as_str()) || info.last < pos);
        let mut report = SyncReport {
            mode: "catch-up",
            ..SyncReport::default()
        };
        if lost {
            tracing::warn!(
                url = %self.redacted_url,
                "Redis lost revocations (restarted without persistence, failed over, or flushed); writing ours back"
            );
            report.reseeded = self.reseed(conn, dict).await?;
        }
        let full = !loaded
            || lost
            || info.trimmed_after(pos)
            || self.force_full.swap(false, Ordering::Relaxed);
        if full {
            let (tokens, subjects, dropped) = self.full_load(conn, dict, info.last).await?;
            report.mode = if lost {
                "reseed + full load"
            } else {
                "full load"
            };
            (report.tokens, report.subjects, report.dropped) = (tokens, subjects, dropped);
        } else {
            (report.tokens, report.subjects) = (dict.len_tokens(), dict.len_subjects());
        }
        *self.epoch.lock().unwrap_or_else(PoisonError::into_inner) = Some(epoch);
        Ok(report)
    }

    /// The data set's epoch, creating it when this is the first instance to connect (or
    /// Redis lost it).
    async fn current_epoch(&self, conn: &mut MultiplexedConnection) -> Result<String, RedisError> {
        let fresh = format!("{:032x}", rand::random::<u128>());
        let _: Value = redis::cmd("SET")
            .arg(&self.keys.epoch)
            .arg(&fresh)
            .arg("NX")
            .query_async(conn)
            .await?;
        let epoch: Option<String> = redis::cmd("GET")
            .arg(&self.keys.epoch)
            .query_async(conn)
            .await?;
        Ok(epoch.unwrap_or(fresh))
    }

    async fn stream_info(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<StreamInfo, RedisError> {
        let reply = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&self.keys.stream)
            .query_async::<Value>(conn)
            .await;
        let reply = match reply {
            Ok(v) => v,
            // No stream yet: nothing was ever revoked (or Redis lost it).
            Err(e) if e.code() == Some("ERR") && e.to_string().contains("no such key") => {
                return Ok(StreamInfo::default())
            }
            Err(e) => return Err(e),
        };
        let mut info = StreamInfo::default();
        for (name, value) in pairs(reply) {
            match bulk(&name) {
                Some(b"last-generated-id") => {
                    info.last = bulk(&value).and_then(StreamId::parse).unwrap_or_default()
                }
                Some(b"max-deleted-entry-id") => {
                    info.max_deleted = bulk(&value).and_then(StreamId::parse)
                }
                Some(b"first-entry") => {
                    info.first = items(value)
                        .into_iter()
                        .next()
                        .and_then(|id| bulk(&id).and_then(StreamId::parse))
                }
                _ => {}
            }
        }
        Ok(info)
    }

    /// Load every key, apply it, and make `at` (the stream's last ID, read before the
    /// scan) our position, so the tail replays whatever changed while we scanned. Returns
    /// (tokens, subjects, dropped).
    async fn full_load(
        &self,
        conn: &mut MultiplexedConnection,
        dict: &Dictionary,
        at: StreamId,
    ) -> Result<(usize, usize, usize), RedisError> {
        let Snapshot { tokens, subjects } = self.read_all(conn).await?;
        let first = !self.is_loaded();
        {
            let mut pos = self.pos.lock().unwrap_or_else(PoisonError::into_inner);
            for (key, exp) in &tokens {
                dict.revoke_token(*key, *exp);
            }
            for (key, e) in &subjects {
                dict.revoke_subject(*key, e.revoked_before, e.expires);
            }
            *pos = at;
        }
        self.loaded.store(true, Ordering::Release);
        let dropped = if first {
            0
        } else {
            self.drop_absent(conn, dict, &tokens, &subjects).await?
        };
        Ok((tokens.len(), subjects.len(), dropped))
    }

    /// Every token and subject key with its value, in one `SCAN` pass over `P:*`. Each
    /// batch's `MGET` is sent together with the next `SCAN` (both pipelined on the one
    /// connection), so the load costs about one round trip per batch. Values the gateway
    /// did not write are skipped with a warning; keys that expire meanwhile just vanish.
    async fn read_all(&self, conn: &MultiplexedConnection) -> Result<Snapshot, RedisError> {
        let pattern = format!("{}*", self.keys.root);
        let mut snapshot = Snapshot::default();
        let mut cursor = Some(String::from("0"));
        let mut batch: Vec<Vec<u8>> = Vec::new();
        while cursor.is_some() || !batch.is_empty() {
            let scan = async {
                let Some(at) = cursor.as_deref() else {
                    return Ok(None);
                };
                let (next, names): (String, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(at)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_BATCH)
                    .query_async(&mut conn.clone())
                    .await?;
                Ok::<_, RedisError>(Some((next, names)))
            };
            let read = async {
                if batch.is_empty() {
                    return Ok(Vec::new());
                }
                redis::cmd("MGET")
                    .arg(&batch)
                    .query_async::<Vec<Option<Vec<u8>>>>(&mut conn.clone())
                    .await
            };
            let (scanned, values) = tokio::try_join!(scan, read)?;
            for (name, value) in batch.iter().zip(values) {
                if let Some(value) = value {
                    if !snapshot.add(&self.keys, name, &value) {
                        tracing::warn!("skipping a Redis key or value the gateway did not write");
                    }
                }
            }
            batch.clear();
            match scanned {
                Some((next, names)) => {
                    batch = names
                        .into_iter()
                        .filter(|n| {
                            n.starts_with(self.keys.token.as_bytes())
                                || n.starts_with(self.keys.subject.as_bytes())
                        })
                        .collect();
                    cursor = (next != "0").then_some(next);
                }
                None => cursor = None,
            }
        }
        Ok(snapshot)
    }

    /// After a full load: drop the local entries Redis no longer holds (un-revoked while we
    /// were away, or expired). Each candidate is checked again after the scan, so an entry
    /// revoked while the scan ran (Redis first, then memory) is never dropped.
    async fn drop_absent(
        &self,
        conn: &mut MultiplexedConnection,
        dict: &Dictionary,
        tokens: &[(Key, u64)],
        subjects: &[(Key, SubjectEntry)],
    ) -> Result<usize, RedisError> {
        let in_tokens: std::collections::HashSet<Key> = tokens.iter().map(|(k, _)| *k).collect();
        let in_subjects: std::collections::HashSet<Key> =
            subjects.iter().map(|(k, _)| *k).collect();
        let mut candidates: Vec<Record> = Vec::new();
        dict.for_each_live(0, 0, |e| match e {
            super::dict::Entry::Token { key, .. } if !in_tokens.contains(&key) => {
                candidates.push(Record::UnrevokeToken { key })
            }
            super::dict::Entry::Subject { key, .. } if !in_subjects.contains(&key) => {
                candidates.push(Record::UnrevokeSubject { key })
            }
            _ => {}
        });
        let mut dropped = 0;
        for chunk in candidates.chunks(SCAN_BATCH) {
            let names: Vec<String> = chunk.iter().map(|r| self.keys.of(r)).collect();
            let present: Vec<Option<Vec<u8>>> =
                redis::cmd("MGET").arg(&names).query_async(conn).await?;
            for (record, value) in chunk.iter().zip(present) {
                if value.is_none() {
                    record.apply(dict);
                    dropped += 1;
                }
            }
        }
        Ok(dropped)
    }

    /// Write every live local entry back to Redis, publishing only what Redis lacked.
    /// Returns how many entries Redis did not have.
    async fn reseed(
        &self,
        conn: &mut MultiplexedConnection,
        dict: &Dictionary,
    ) -> Result<usize, RedisError> {
        let mut live = Vec::new();
        dict.for_each_live(now_unix(), self.leeway, |e| live.push(Record::from(e)));
        let mut restored = 0;
        for chunk in live.chunks(RESEED_BATCH) {
            let ids = self.invoke(conn, chunk, Publish::IfChanged).await?;
            restored += ids.iter().filter(|id| id.is_some()).count();
        }
        Ok(restored)
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
                .arg(&record.encode()[..]);
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

/// The bytes of a string reply.
fn bulk(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

/// The elements of an array reply (empty for nil or anything else).
fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => Vec::new(),
    }
}

/// Name/value pairs of a map reply: a RESP3 map, or a RESP2 flat array alternating them.
fn pairs(v: Value) -> Vec<(Value, Value)> {
    match v {
        Value::Map(m) => m,
        Value::Array(a) => {
            let mut it = a.into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            out
        }
        _ => Vec::new(),
    }
}

/// The entries of an `XREAD` reply for one stream, in order: ID and decoded record (`None`
/// when the entry is not a record this build understands). Nil (a timeout) gives none.
fn stream_entries(reply: Value) -> Vec<(StreamId, Option<Record>)> {
    // RESP2: [[stream, [[id, [field, value, ...]], ...]]]; RESP3: {stream: [...]}.
    let streams: Vec<Value> = match reply {
        Value::Map(m) => m.into_iter().map(|(_, v)| v).collect(),
        other => items(other)
            .into_iter()
            .filter_map(|s| items(s).into_iter().nth(1))
            .collect(),
    };
    let mut out = Vec::new();
    for entries in streams {
        for entry in items(entries) {
            let mut parts = items(entry).into_iter();
            let Some(id) = parts
                .next()
                .and_then(|v| bulk(&v).and_then(StreamId::parse))
            else {
                continue;
            };
            let record = parts.next().and_then(|fields| {
                pairs(fields).into_iter().find_map(|(name, value)| {
                    if bulk(&name) != Some(b"r") {
                        return None;
                    }
                    let raw: &[u8; RECORD_LEN] = bulk(&value)?.try_into().ok()?;
                    Record::decode(raw)
                })
            });
            out.push((id, record));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::dict::digest;

    #[test]
    fn stream_ids_parse_and_order() {
        assert_eq!(
            StreamId::parse(b"1700000000000-5"),
            Some(StreamId {
                ms: 1_700_000_000_000,
                seq: 5
            })
        );
        assert_eq!(StreamId::parse(b"42"), Some(StreamId { ms: 42, seq: 0 }));
        assert_eq!(StreamId::parse(b"x-1"), None);
        assert_eq!(StreamId::parse(b""), None);
        let a = StreamId::parse(b"5-9").unwrap();
        let b = StreamId::parse(b"6-0").unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "5-9");
    }

    #[test]
    fn passwords_never_print() {
        assert_eq!(
            redact_url("redis://:s3cret@redis:6379/0"),
            "redis://:***@redis:6379/0"
        );
        assert_eq!(
            redact_url("rediss://user:p@ss:w0rd@host:6380/1?x=1"),
            "rediss://user:***@host:6380/1?x=1"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact_url("redis://user@h/0"), "redis://user@h/0");
        assert!(check_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(check_url("rediss://:pw@127.0.0.1:6380/0").is_ok());
        let err = check_url("redis://:hunter2@[bad/0").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_gap_is_assumed_whenever_entries_after_us_may_be_gone() {
        let id = |ms| StreamId { ms, seq: 0 };
        let info = StreamInfo {
            last: id(100),
            max_deleted: None,
            first: Some(id(60)),
        };
        // Caught up, or behind but everything after us is still there.
        assert!(!info.trimmed_after(id(100)));
        assert!(!info.trimmed_after(id(60)));
        assert!(!info.trimmed_after(id(70)));
        // The oldest entry left is newer than us: trimmed (or exactly at the border).
        assert!(info.trimmed_after(id(40)));
        // Trimmed to nothing after we read up to 90.
        let empty = StreamInfo {
            first: None,
            ..info
        };
        assert!(empty.trimmed_after(id(90)));
        assert!(!empty.trimmed_after(id(100)));
        // XDEL of an entry after us.
        let deleted = StreamInfo {
            max_deleted: Some(id(80)),
            ..info
        };
        assert!(deleted.trimmed_after(id(70)));
        assert!(!deleted.trimmed_after(id(80)));
        // No stream at all: nothing to miss.
        assert!(!StreamInfo::default().trimmed_after(StreamId::default()));
    }

    #[test]
    fn xread_replies_decode_in_both_protocols() {
        let rec = Record::RevokeToken {
            key: digest(b"jti"),
            exp: 99,
        };
        let entry = |id: &str, raw: Vec<u8>| {
            Value::Array(vec![
                Value::BulkString(id.as_bytes().to_vec()),
                Value::Array(vec![
                    Value::BulkString(b"r".to_vec()),
                    Value::BulkString(raw),
                ]),
            ])
        };
        let entries = Value::Array(vec![
            entry("1-0", rec.encode().to_vec()),
            entry("1-1", b"garbage".to_vec()),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"p:stream".to_vec()),
            entries.clone(),
        ])]);
        let resp3 = Value::Map(vec![(Value::BulkString(b"p:stream".to_vec()), entries)]);
        for reply in [resp2, resp3] {
            let got = stream_entries(reply);
            assert_eq!(
                got,
                vec![
                    (StreamId { ms: 1, seq: 0 }, Some(rec)),
                    (StreamId { ms: 1, seq: 1 }, None)
                ]
            );
        }
        assert!(stream_entries(Value::Nil).is_empty());
    }

    #[test]
    fn snapshots_take_only_what_the_gateway_writes() {
        let keys = Keys::new("p");
        let key = digest(b"k");
        let name = |kind: &str, hex: &str| format!("p:{kind}:{hex}").into_bytes();
        let hex = key_to_hex(&key);
        let mut snap = Snapshot::default();
        assert!(snap.add(&keys, &name("tok", &hex), b"1700000000"));
        assert!(snap.add(&keys, &name("sub", &hex), b"5:9"));
        assert!(!snap.add(&keys, &name("tok", &hex), b"soon"));
        assert!(!snap.add(&keys, &name("sub", &hex), b"5"));
        assert!(!snap.add(&keys, &name("tok", "xyz"), b"1"));
        assert!(!snap.add(&keys, b"p:epoch", b"abc"));
        assert_eq!(snap.tokens, vec![(key, 1_700_000_000)]);
        assert_eq!(
            snap.subjects,
            vec![(
                key,
                SubjectEntry {
                    revoked_before: 5,
                    expires: 9
                }
            )]
        );
    }

    #[test]
    fn key_names() {
        let keys = Keys::new("pc");
        let key = digest(b"x");
        assert_eq!(
            keys.of(&Record::UnrevokeToken { key }),
            format!("pc:tok:{}", key_to_hex(&key))
        );
        assert_eq!(
            keys.of(&Record::RevokeSubject {
                key,
                revoked_before: 1,
                expires: 2
            }),
            format!("pc:sub:{}", key_to_hex(&key))
        );
        assert_eq!(keys.stream, "pc:stream");
    }
}
