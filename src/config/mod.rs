//! Configuration: read `config.toml`, expand `${VAR}`, parse, and validate into a typed
//! [`Config`] before any socket binds.
//!
//! Two layers, as in River: [`file`] mirrors the TOML exactly (with `deny_unknown_fields`);
//! [`Config`] holds typed values (durations, socket addresses, decoded keys, loaded TLS
//! material). Validation collects *every* problem, each naming the key or file it concerns,
//! so `portcullis check` can print them all at once.

pub mod access;
pub mod cors;
pub mod dpop;
pub mod file;
pub mod issuers;
pub mod jwks;
pub mod rate_limit;
pub mod redis;
pub mod signin;
pub mod telemetry;
pub mod upstream;
pub mod users;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::HeaderName;

use crate::jose::keys::{KeyMaterial, KeySet};
pub use crate::routing::Upstream;
use crate::routing::{normalise_prefix, AuthPolicy, Route, RouteTable, WebSocketToken};
pub use crate::tls::TlsMaterial;
pub use redis::RedisStore;

/// Default `jwt.cache_size`: verified tokens cached (about 0.5 KiB each). The same number
/// as `auth::cache::DEFAULT_CACHE_ENTRIES` (a unit test holds them together).
pub const DEFAULT_TOKEN_CACHE_ENTRIES: usize = 65_536;
/// How long shutdown waits for in-flight requests before it gives up on them.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Time allowed for a TLS handshake before the connection is dropped.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a client to send a complete request head (slowloris guard).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Lifetime assumed for a revoked token whose `exp` is unknown.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Largest bearer token accepted, in bytes (larger: 401 without parsing).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Time to establish a TCP connection to an upstream.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time from forwarding a request to receiving the upstream's response head.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle pooled upstream connection is kept.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle pooled connections kept per upstream host.
pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 256;
/// Concurrent client connections; further ones wait in the kernel backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Largest request head (request line + headers), in bytes; larger gets 431.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most request headers accepted on one request.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// HTTP/2 streams a client may have open at once on one connection.
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// How long the revocation audit trail keeps a record: 30 days.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default admin listener.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9443";
/// Default embedded revocation store, relative to the config file's folder.
pub const DEFAULT_REVOCATION_STORE: &str = "data/revocations.log";
/// How often expired revocations are swept from memory.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Request header that carries an app key.
pub const DEFAULT_API_KEY_HEADER: &str = "x-api-key";
/// Header the gateway sets to the app id of an accepted key.
pub const DEFAULT_API_KEY_CLIENT_HEADER: &str = "x-client-id";
/// File name of the embedded API-key store, in the revocation store's folder.
pub const DEFAULT_API_KEY_STORE_FILE: &str = "apikeys.json";
/// Cluster mode: prefix of every Redis key (`portcullis:tok:<hex>`, `portcullis:stream`, ...).
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "portcullis";
/// Cluster mode: change-stream entries kept in Redis (approximate `MAXLEN`), about 50 bytes
/// each. An instance cut off for longer than it takes the fleet to make this many changes
/// reloads the full set on reconnect instead of catching up from the stream.
pub const DEFAULT_REDIS_STREAM_MAX_LEN: u64 = 100_000;
/// Smallest `stream_max_len` accepted, in entries.
pub const MIN_REDIS_STREAM_MAX_LEN: u64 = 1_000;
/// Cluster mode: time allowed for one Redis connect or write (an admin revoke answers 503
/// after this).
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Cluster mode: how long start-up waits for Redis to answer (then for the whole load)
/// before it serves anyway, unready (`/readyz` 503) and refusing tokens, while it keeps
/// retrying.
pub const DEFAULT_REDIS_LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The validated configuration the gateway runs with.
#[derive(Debug)]
pub struct Config {
    /// The file this config was loaded from (what a reload re-reads), if any.
    pub source: Option<PathBuf>,
    /// The config file's folder; relative paths in the file are resolved against it.
    pub base_dir: PathBuf,
    pub listen: Listen,
    pub jwt: Jwt,
    pub identity: Identity,
    pub routes: RouteTable,
    pub admin: Option<Admin>,
    pub revocation: Revocation,
    pub log: Log,
    pub limits: Limits,
    /// `[signin]`: the gateway's own login, refresh and logout endpoints.
    pub signin: Option<signin::Settings>,
    /// `[api_keys]`: header names and where the keys are stored (defaults when absent).
    pub api_keys: ApiKeys,
    /// `[cors]`: cross-origin browser clients; `None` (the default) answers no CORS at all.
    pub cors: Option<cors::Cors>,
    /// `[dpop]`: DPoP proof checks (defaults when absent).
    pub dpop: dpop::Dpop,
    /// `[telemetry]`: the OTLP trace export (off when absent).
    pub telemetry: telemetry::Telemetry,
    /// Files `run` must write before starting (dev material generated in memory).
    pub pending_dev_files: Vec<DevFile>,
    /// What every verified token must have extracted for `[[routes.allow]]` rules; `None`
    /// when no route has rules.
    pub grants: Option<std::sync::Arc<crate::access::GrantSpec>>,
}

#[derive(Debug)]
pub struct Listen {
    pub addr: SocketAddr,
    pub tls: Option<TlsMaterial>,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub workers: Option<usize>,
    pub shutdown_grace: Duration,
    /// `[listen] hsts`: the `Strict-Transport-Security` value for responses over TLS.
    pub hsts: Option<http::HeaderValue>,
}

#[derive(Debug)]
pub struct Jwt {
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub leeway_secs: u64,
    pub require_exp: bool,
    pub max_lifetime: Duration,
    pub max_token_bytes: usize,
    pub cache_size: usize,
    pub keys: KeySet,
    /// Decryption keys for JWE tokens (none: 5-segment tokens are refused).
    pub decryption_keys: Option<std::sync::Arc<crate::jose::jwe::KeyRing>>,
    /// `[jwt.jwks]`: a published key set, fetched by start-up and kept fresh while running.
    pub jwks: Option<jwks::JwksSettings>,
    /// `[[jwt.issuers]]`: more issuers, in file order (issuer number = position + 1).
    pub issuers: Vec<issuers::IssuerSettings>,
}

impl Jwt {
    /// The largest clock-skew leeway any issuer's tokens get, in seconds: how long past its
    /// `exp` a revoked token must stay in the revocation store.
    pub fn max_leeway_secs(&self) -> u64 {
        self.issuers
            .iter()
            .map(|i| i.leeway_secs)
            .fold(self.leeway_secs, u64::max)
    }
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub user_header: HeaderName,
    pub user_claim: String,
    /// Extra claim -> header mappings, in file order.
    pub claims: Vec<(HeaderName, String)>,
    /// `[identity] forward_token`: the default of each route's `forward_token`.
    pub forward_token: bool,
}

#[derive(Debug)]
pub struct Admin {
    pub addr: SocketAddr,
    pub token: Option<Secret>,
    /// `[admin] tokens`: (label, token) pairs; the audit trail names the label as the actor.
    pub labelled: Vec<(String, Secret)>,
    pub tls: Option<TlsMaterial>,
}

#[derive(Debug, Clone)]
pub enum StoreKind {
    /// The embedded append-only log at this path.
    Log(PathBuf),
    /// Keep revocations in memory only (lost on restart); `store = "memory"`.
    Memory,
    /// Cluster mode through Redis (`redis://` or `rediss://`).
    Redis(RedisStore),
}

#[derive(Debug)]
pub struct Revocation {
    pub store: StoreKind,
    pub sweep_interval: Duration,
    /// Open a damaged store anyway, keeping every intact record (`recover = true` or
    /// `portcullis run --recover`).
    pub recover: bool,
    /// How long an audit record is kept (`audit_retention`, 30 days by default).
    pub audit_retention: Duration,
}

/// `[api_keys]`, validated.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    /// The request header a client sends its key in.
    pub header: HeaderName,
    /// The header the upstream receives the app id in (stripped from every client request).
    pub client_header: HeaderName,
    pub store: ApiKeyStore,
}

/// Where API keys are kept.
#[derive(Debug, Clone)]
pub enum ApiKeyStore {
    /// Lost on restart (`store = "memory"`, or the revocation store is `memory`).
    Memory,
    /// A JSON file rewritten atomically on each change.
    File(PathBuf),
    /// Cluster mode: a Redis hash shared by every instance (`{key_prefix}:apikeys`).
    Redis(RedisStore),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
    pub access_log: bool,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub h2_max_concurrent_streams: u32,
    pub upstream_pool_idle_timeout: Duration,
    pub upstream_pool_max_idle_per_host: usize,
}

/// A secret string (admin token) that never prints.
#[derive(Clone)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A development file generated in memory by validation, written by `run` before start.
#[derive(Clone)]
pub struct DevFile {
    pub path: PathBuf,
    pub contents: Vec<u8>,
    pub what: &'static str,
}

impl fmt::Debug for DevFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevFile({}, {})", self.what, self.path.display())
    }
}

/// Every problem found in a config file, each naming the key or path concerned.
#[derive(Debug)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} problem(s)",
            self.file.display(),
            self.problems.len()
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Read, expand, parse and validate the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let fail = |problem: String| ConfigErrors {
            file: path.to_path_buf(),
            problems: vec![problem],
        };
        let bytes =
            std::fs::read(path).map_err(|e| fail(format!("cannot read config file: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let before = &e.as_bytes()[..at];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let column = at
                - before
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |i| i + 1)
                + 1;
            fail(format!(
                "line {line}, column {column} (byte offset {at}): the file is not UTF-8 text \
                 (TOML must be UTF-8; re-save it as UTF-8)"
            ))
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let mut config = Self::from_toml(&text, &base).map_err(|mut e| {
            e.file = path.to_path_buf();
            e
        })?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parse and validate config text; relative paths resolve against `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        let fail = |problems: Vec<String>| ConfigErrors {
            file: PathBuf::from("<config>"),
            problems,
        };
        let mut value: toml::Value = toml::from_str(text).map_err(|e| fail(vec![e.to_string()]))?;
        let mut problems = Vec::new();
        expand_env(&mut value, &mut String::new(), &mut problems);
        // Keys already reported (an unset variable, a value of the wrong type): the later
        // checks would only repeat them, in their own words.
        let mut reported: Vec<String> = problems.iter().filter_map(|p| key_of(p)).collect();
        let file = match deserialize_all(value, &mut problems, &mut reported) {
            Some(file) => validate(file, base_dir).err().unwrap_or_default(),
            None => Vec::new(),
        };
        problems.extend(file.into_iter().filter(|p| {
            key_of(p).is_none_or(|k| {
                !reported.iter().any(|r| {
                    k == *r || k.starts_with(&format!("{r}.")) || k.starts_with(&format!("{r}["))
                })
            })
        }));
        if problems.is_empty() {
            // Valid: build it (validation is pure, so doing it twice only costs time).
            let mut value: toml::Value =
                toml::from_str(text).map_err(|e| fail(vec![e.to_string()]))?;
            expand_env(&mut value, &mut String::new(), &mut problems);
            let file: file::File = serde_path_to_error::deserialize(value).map_err(|e| {
                let path = e.path().to_string();
                fail(vec![format!("{path}: {}", e.into_inner())])
            })?;
            return validate(file, base_dir).map_err(fail);
        }
        Err(fail(with_positions(text, problems)))
    }

    /// Write the development material generated during validation (certificate, secrets),
    /// logging each file so the operator knows it happened.
    pub fn write_dev_files(&mut self) -> anyhow::Result<()> {
        for f in self.pending_dev_files.drain(..) {
            if let Some(dir) = f.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            write_private_file(&f.path, &f.contents)?;
            tracing::warn!(path = %f.path.display(), "generated development {} ([dev] generate_missing = true; do not use in production)", f.what);
        }
        Ok(())
    }
}

fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// The key a problem names: the text before its first `: `, when that looks like a key path.
fn key_of(problem: &str) -> Option<String> {
    let (key, _) = problem.split_once(": ")?;
    let looks_like_key = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-[]\"".contains(&b));
    looks_like_key.then(|| key.to_owned())
}

/// Deserialize the file mirror, collecting every type error rather than the first: a value
/// of the wrong type is reported with its key and taken out, and the rest is tried again
/// (at most 32 times). A missing required field, or a problem inside an array (taking an
/// element out would renumber the ones after it), ends the search: what was found is
/// reported and validation does not run.
fn deserialize_all(
    mut value: toml::Value,
    problems: &mut Vec<String>,
    reported: &mut Vec<String>,
) -> Option<file::File> {
    for _ in 0..32 {
        let err = match serde_path_to_error::deserialize::<_, file::File>(value.clone()) {
            Ok(file) => return Some(file),
            Err(e) => e,
        };
        let path = err.path().to_string();
        // toml's own message may add a line naming the key again: one line is enough.
        let message = err
            .into_inner()
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        // The field a wrong-typed value was taken out of is "missing" now: said already.
        let taken_out = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
            .is_some_and(|field| reported.contains(&format!("{path}.{field}")));
        if !taken_out {
            problems.push(format!("{path}: {message}"));
            reported.push(path.clone());
        }
        let removable = !path.contains('[') && !message.starts_with("missing field");
        if !removable || path == "." || !remove_key(&mut value, &path) {
            return None;
        }
    }
    None
}

/// Remove the table key at dotted `path`; false when there is none.
fn remove_key(value: &mut toml::Value, path: &str) -> bool {
    let mut parts = path.split('.').peekable();
    let mut at = value;
    while let Some(part) = parts.next() {
        let toml::Value::Table(t) = at else {
            return false;
        };
        if parts.peek().is_none() {
            return t.remove(part).is_some();
        }
        let Some(next) = t.get_mut(part) else {
            return false;
        };
        at = next;
    }
    false
}

/// Each problem that names a key the file spells out gets the key's position appended:
/// `(line N, column M)`. TOML syntax errors carry their own position already.
fn with_positions(text: &str, problems: Vec<String>) -> Vec<String> {
    let Ok(doc) = toml::de::DeTable::parse(text) else {
        return problems;
    };
    problems
        .into_iter()
        .map(|p| {
            let span = key_of(&p).and_then(|k| key_span(doc.get_ref(), &k));
            match span {
                Some(offset) => {
                    let before = &text.as_bytes()[..offset.min(text.len())];
                    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
                    let column = offset
                        - before
                            .iter()
                            .rposition(|b| *b == b'\n')
                            .map_or(0, |i| i + 1)
                        + 1;
                    format!("{p} (line {line}, column {column})")
                }
                None => p,
            }
        })
        .collect()
}

/// Where the key (or array element) at `path` (`routes[1].prefix`, `listen.addr`) starts.
fn key_span(table: &toml::de::DeTable<'_>, path: &str) -> Option<usize> {
    let mut segments = Vec::new();
    for part in path.split('.') {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        segments.push((name.trim_matches('"'), None));
        for idx in rest.split('[') {
            if let Some(i) = idx.strip_suffix(']').and_then(|i| i.parse::<usize>().ok()) {
                segments.push(("", Some(i)));
            }
        }
    }
    let mut current: Option<&toml::de::DeValue<'_>> = None;
    let mut span = None;
    let mut top = Some(table);
    for (name, index) in segments {
        match index {
            None => {
                let t = match (top, current) {
                    (Some(t), None) => t,
                    (_, Some(toml::de::DeValue::Table(t))) => t,
                    _ => return span,
                };
                let (k, v) = t.get_key_value(name)?;
                span = Some(k.span().start);
                current = Some(v.get_ref());
                top = None;
            }
            Some(i) => {
                let Some(toml::de::DeValue::Array(a)) = current else {
                    return span;
                };
                let v = a.get(i)?;
                span = Some(v.span().start);
                current = Some(v.get_ref());
            }
        }
    }
    span
}

/// Replace `${VAR}` in every string value with the environment variable's value; `$$`
/// stands for a literal `$`. An unset variable is a problem naming the key.
fn expand_env(value: &mut toml::Value, key: &mut String, problems: &mut Vec<String>) {
    match value {
        toml::Value::String(s) if s.contains('$') => match expand_str(s) {
            Ok(out) => *s = out,
            Err(var) => problems.push(format!(
                "{key}: environment variable `{var}` is not set (the value refers to ${{{var}}})"
            )),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = key.len();
                key.push_str(&format!("[{i}]"));
                expand_env(item, key, problems);
                key.truncate(len);
            }
        }
        toml::Value::Table(table) => {
            for (k, item) in table.iter_mut() {
                let len = key.len();
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(k);
                expand_env(item, key, problems);
                key.truncate(len);
            }
        }
        _ => {}
    }
}

fn expand_str(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(format!("{body} (missing closing brace)"));
            };
            let var = &body[..end];
            match std::env::var(var) {
                Ok(v) => out.push_str(&v),
                Err(_) => return Err(var.to_string()),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Parse a duration such as "30s", "15m", "1h 30m"; a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|e| {
        format!("`{s}` is not a duration ({e}); write e.g. \"500ms\", \"30s\", \"15m\", \"1h\"")
    })
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

struct Checker<'a> {
    base: &'a Path,
    problems: Vec<String>,
    dev_generate: bool,
    dev_files: Vec<DevFile>,
}

impl Checker<'_> {
    fn duration(&mut self, key: &str, v: Option<&String>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => parse_duration(s).unwrap_or_else(|e| {
                self.problems.push(format!("{key}: {e}"));
                default
            }),
        }
    }

    fn addr(&mut self, key: &str, s: &str) -> Option<SocketAddr> {
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                // Allow "localhost:PORT" as a convenience.
                if let Some(port) = s.strip_prefix("localhost:").and_then(|p| p.parse().ok()) {
                    return Some(SocketAddr::from(([127, 0, 0, 1], port)));
                }
                self.problems.push(format!(
                    "{key}: `{s}` is not a socket address; write e.g. \"127.0.0.1:8443\" or \"[::]:8443\""
                ));
                None
            }
        }
    }

    /// Cluster-mode settings for `store = url`. The URL must parse (a password in it is
    /// never echoed back); the key prefix must be safe inside a `SCAN MATCH` pattern.
    fn redis_store(&mut self, url: &str, r: Option<&file::Revocation>) -> RedisStore {
        let redacted = redis::redact_url(url);
        if let Err(e) = redis::check_url(url) {
            self.problems.push(format!(
                "revocation.store: `{redacted}` is not a usable Redis URL ({e}); write e.g. \"redis://127.0.0.1:6379/0\", \"rediss://:PASSWORD@host:6380/0\" or \"redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster/0\""
            ));
        }
        let key_prefix = r
            .and_then(|r| r.key_prefix.clone())
            .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_owned());
        let prefix_ok = (1..=64).contains(&key_prefix.len())
            && key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
        if !prefix_ok {
            self.problems.push(format!(
                "revocation.key_prefix: `{key_prefix}` must be 1 to 64 characters from A-Z a-z 0-9 _ - . : \
                 (the gateway lists its keys with a SCAN pattern, where other characters are special)"
            ));
        }
        let stream_max_len = r
            .and_then(|r| r.stream_max_len)
            .unwrap_or(DEFAULT_REDIS_STREAM_MAX_LEN);
        if stream_max_len < MIN_REDIS_STREAM_MAX_LEN {
            self.problems.push(format!(
                "revocation.stream_max_len: must be at least {MIN_REDIS_STREAM_MAX_LEN}; a shorter stream makes \
                 an instance that missed a few seconds of changes reload the whole set"
            ));
        }
        let timeout = self.duration(
            "revocation.timeout",
            r.and_then(|r| r.timeout.as_ref()),
            DEFAULT_REDIS_TIMEOUT,
        );
        if timeout.is_zero() {
            self.problems
                .push("revocation.timeout: must be more than 0 (e.g. \"2s\")".into());
        }
        let load_timeout = self.duration(
            "revocation.load_timeout",
            r.and_then(|r| r.load_timeout.as_ref()),
            DEFAULT_REDIS_LOAD_TIMEOUT,
        );
        let tls_ca = match r.and_then(|r| r.tls_ca.as_deref()) {
            None => None,
            Some(_) if !url.starts_with("rediss://") => {
                self.problems.push(
                    "revocation.tls_ca: only applies to a rediss:// store (TLS to Redis)".into(),
                );
                None
            }
            Some(p) => self.read("revocation.tls_ca", &resolve(self.base, p)),
        };
        let min_replicas_ack = r.and_then(|r| r.min_replicas_ack).unwrap_or(0);
        RedisStore {
            min_replicas_ack,
            url: url.to_owned(),
            key_prefix,
            stream_max_len,
            timeout,
            load_timeout,
            tls_ca,
        }
    }

    fn read(&mut self, key: &str, path: &Path) -> Option<Vec<u8>> {
        match std::fs::read(path) {
            Ok(b) => Some(b),
            Err(e) => {
                self.problems
                    .push(format!("{key}: cannot read `{}`: {e}", path.display()));
                None
            }
        }
    }

    /// Load a cert/key pair, generating a self-signed localhost pair in memory when both are
    /// missing and `[dev] generate_missing` is on.
    fn tls(&mut self, section: &str, cert: &Path, key: &Path) -> Option<TlsMaterial> {
        let (cert_path, key_path) = (resolve(self.base, cert), resolve(self.base, key));
        if self.dev_generate && !cert_path.exists() && !key_path.exists() {
            match crate::tls::generate_dev_cert() {
                Ok((cert_pem, key_pem)) => {
                    self.dev_files.push(DevFile {
                        path: cert_path.clone(),
                        contents: cert_pem.clone(),
                        what: "self-signed TLS certificate for localhost",
                    });
                    self.dev_files.push(DevFile {
                        path: key_path.clone(),
                        contents: key_pem.clone(),
                        what: "TLS private key",
                    });
                    return Some(TlsMaterial {
                        cert_path,
                        key_path,
                        cert_pem,
                        key_pem,
                    });
                }
                Err(e) => {
                    self.problems
                        .push(format!("{section}: cannot generate a dev certificate: {e}"));
                    return None;
                }
            }
        }
        let cert_pem = self.read(&format!("{section}.tls_cert"), &cert_path)?;
        let key_pem = self.read(&format!("{section}.tls_key"), &key_path)?;
        let material = TlsMaterial {
            cert_path,
            key_path,
            cert_pem,
            key_pem,
        };
        if let Err(e) = crate::tls::server_config(&material) {
            self.problems.push(format!("{section}: {e}"));
            return None;
        }
        Some(material)
    }

    /// A secret read from a file, or generated in memory (dev) when the file is missing.
    fn secret_file(&mut self, key: &str, path: &Path, what: &'static str) -> Option<Vec<u8>> {
        let path = resolve(self.base, path);
        if self.dev_generate && !path.exists() {
            let secret = random_secret();
            self.dev_files.push(DevFile {
                path,
                contents: format!("{secret}\n").into_bytes(),
                what,
            });
            return Some(secret.into_bytes());
        }
        let mut bytes = self.read(key, &path)?;
        // A trailing newline from `echo secret > file` is not part of the secret.
        while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
            bytes.pop();
        }
        if bytes.is_empty() {
            self.problems
                .push(format!("{key}: `{}` is empty", path.display()));
            return None;
        }
        Some(bytes)
    }
}

/// `[admin] tokens`: each label unique, not `admin` when the single `token` is set (that one
/// is labelled `admin`), and each token at least 16 characters.
fn admin_tokens(
    c: &mut Checker<'_>,
    tokens: Vec<file::AdminToken>,
    has_single: bool,
) -> Vec<(String, Secret)> {
    let mut out: Vec<(String, Secret)> = Vec::new();
    for (i, t) in tokens.into_iter().enumerate() {
        let key = format!("admin.tokens[{i}]");
        let label_ok = !t.label.is_empty()
            && t.label.len() <= 64
            && t.label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
        if !label_ok {
            c.problems.push(format!(
                "{key}.label: `{}` must be 1-64 characters of letters, digits, `.`, `_`, `-`, `@`",
                t.label
            ));
            continue;
        }
        if out.iter().any(|(l, _)| *l == t.label) || (has_single && t.label == "admin") {
            c.problems.push(format!(
                "{key}.label: `{}` is used twice (the single `token` is labelled `admin`)",
                t.label
            ));
            continue;
        }
        let Some(bytes) = c.secret_file(&format!("{key}.token_file"), &t.token_file, "admin token")
        else {
            continue;
        };
        let secret = Secret(String::from_utf8_lossy(&bytes).into_owned());
        if secret.0.len() < 16 {
            c.problems.push(format!(
                "{key}.token_file: the token must be at least 16 characters (use e.g. `openssl rand -base64 32`)"
            ));
            continue;
        }
        out.push((t.label, secret));
    }
    out
}

/// 256 bits from the OS CSPRNG, base64url without padding.
pub fn random_secret() -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    rand::fill(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn header_name(c: &mut Checker<'_>, key: &str, s: &str) -> Option<HeaderName> {
    match HeaderName::from_bytes(s.trim().as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            c.problems
                .push(format!("{key}: `{s}` is not a valid HTTP header name"));
            None
        }
    }
}

fn validate(f: file::File, base: &Path) -> Result<Config, Vec<String>> {
    let mut c = Checker {
        base,
        problems: Vec::new(),
        dev_generate: f.dev.generate_missing.unwrap_or(false),
        dev_files: Vec::new(),
    };

    // [listen]
    let addr = c.addr("listen.addr", &f.listen.addr);
    let tls = match (&f.listen.tls_cert, &f.listen.tls_key) {
        (Some(cert), Some(key)) => c.tls("listen", cert, key),
        (None, None) => None,
        _ => {
            c.problems
                .push("listen: set both tls_cert and tls_key (TLS) or neither (plain HTTP)".into());
            None
        }
    };
    let listen = Listen {
        addr: addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        tls,
        handshake_timeout: c.duration(
            "listen.handshake_timeout",
            f.listen.handshake_timeout.as_ref(),
            DEFAULT_HANDSHAKE_TIMEOUT,
        ),
        header_read_timeout: c.duration(
            "listen.header_read_timeout",
            f.listen.header_read_timeout.as_ref(),
            DEFAULT_HEADER_READ_TIMEOUT,
        ),
        workers: f.listen.workers,
        shutdown_grace: c.duration(
            "listen.shutdown_grace",
            f.listen.shutdown_grace.as_ref(),
            DEFAULT_SHUTDOWN_GRACE,
        ),
        hsts: f.listen.hsts.as_deref().and_then(|v| {
            crate::tls::hsts_value(v, f.listen.tls_cert.is_some())
                .map_err(|e| c.problems.push(format!("listen.hsts: {e}")))
                .ok()
        }),
    };

    // [jwt]
    let leeway = c.duration(
        "jwt.leeway",
        f.jwt.leeway.as_ref(),
        Duration::from_secs(DEFAULT_LEEWAY_SECS),
    );
    let mut materials = Vec::new();
    for (i, k) in f.jwt.keys.iter().enumerate() {
        let key = format!("jwt.keys[{i}]");
        let secret = match (&k.secret, &k.secret_file) {
            (Some(s), None) => Some(s.clone().into_bytes()),
            (None, Some(p)) => {
                c.secret_file(&format!("{key}.secret_file"), p, "JWT signing secret")
            }
            (Some(_), Some(_)) => {
                c.problems
                    .push(format!("{key}: set either secret or secret_file, not both"));
                None
            }
            (None, None) => None,
        };
        let public_pem = k
            .public_key
            .as_ref()
            .and_then(|p| c.read(&format!("{key}.public_key"), &resolve(base, p)));
        let private_pem = k
            .private_key
            .as_ref()
            .and_then(|p| c.read(&format!("{key}.private_key"), &resolve(base, p)));
        materials.push(KeyMaterial {
            label: key,
            kid: k.kid.clone(),
            alg: k.alg.clone(),
            secret,
            secret_base64: k.secret_base64.unwrap_or(false),
            public_pem,
            private_pem,
        });
    }
    let jwks = f.jwt.jwks_file.as_ref().and_then(|p| {
        c.read("jwt.jwks_file", &resolve(base, p))
            .map(|doc| (p.display().to_string(), doc))
    });
    let jwks = jwks.as_ref().map(|(p, d)| (p.as_str(), d.as_slice()));
    let mut keys_failed = false;
    let keys = match KeySet::build(materials, jwks) {
        Ok(ks) => ks,
        Err(errs) => {
            c.problems.extend(errs);
            keys_failed = true;
            KeySet::default()
        }
    };
    let mut jwe_keys = Vec::new();
    for (i, k) in f.jwt.decryption_keys.iter().enumerate() {
        let label = format!("jwt.decryption_keys[{i}]");
        let file_bytes = k
            .key_file
            .as_ref()
            .and_then(|p| c.read(&format!("{label}.key_file"), &resolve(base, p)));
        // A key file may hold base64url text (like `key`) or the raw key bytes.
        let file_text = file_bytes
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::trim)
            .filter(|t| {
                !t.is_empty()
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
            });
        let (b64, raw) = match (&k.key, file_text, &file_bytes) {
            (Some(key), _, None) => (Some(key.as_str()), None),
            (None, Some(text), Some(_)) => (Some(text), None),
            (None, None, Some(bytes)) => (None, Some(bytes.as_slice())),
            (Some(_), _, Some(_)) => {
                c.problems
                    .push(format!("{label}: set either key or key_file, not both"));
                continue;
            }
            (None, _, None) => (None, None),
        };
        let pem = k
            .private_key
            .as_ref()
            .and_then(|p| c.read(&format!("{label}.private_key"), &resolve(base, p)));
        match crate::jose::jwe::DecryptionKey::from_config(
            k.kid.clone(),
            &k.alg,
            k.enc.as_deref(),
            b64,
            raw,
            pem.as_deref(),
        ) {
            Ok(mut key) => {
                key.require_nested = k.require_nested.unwrap_or(false);
                jwe_keys.push(key)
            }
            Err(e) => c.problems.push(format!(
                "{label}{}: {e}",
                k.kid
                    .as_ref()
                    .map(|k| format!(" kid {k:?}"))
                    .unwrap_or_default()
            )),
        }
    }
    if let Some(p) = &f.jwt.decryption_jwks_file {
        if let Some(doc) = c.read("jwt.decryption_jwks_file", &resolve(base, p)) {
            let source = format!("decryption_jwks_file {}", p.display());
            match crate::jose::jwe::parse_decryption_jwks(&doc, &source) {
                Ok(mut keys) => jwe_keys.append(&mut keys),
                Err(e) => c.problems.push(format!("jwt.{e}")),
            }
        }
    }
    let encs = crate::jose::jwe::parse_encs(f.jwt.decryption_encs.as_deref())
        .map_err(|e| c.problems.push(format!("jwt.decryption_encs: {e}")))
        .unwrap_or_default();
    let decryption_keys = if jwe_keys.is_empty() {
        None
    } else {
        match crate::jose::jwe::KeyRing::new(jwe_keys) {
            Ok(ring) => Some(std::sync::Arc::new(ring.with_accepted_encs(encs))),
            Err(e) => {
                c.problems.push(format!("jwt.decryption_keys: {e}"));
                None
            }
        }
    };
    let published = f.jwt.jwks.as_ref().and_then(|j| c.jwks(j));
    let has_jwt_route = f.routes.iter().any(|r| r.auth == "jwt");
    let has_default_keys = !keys.is_empty() || f.jwt.jwks.is_some();
    // Judged by what the file configures, not by what loaded: a key with a problem of its
    // own (a duplicate kid, an unreadable file) is reported as that, not as no key at all.
    let configures_keys = !f.jwt.keys.is_empty()
        || f.jwt.jwks_file.is_some()
        || !f.jwt.decryption_keys.is_empty()
        || f.jwt.decryption_jwks_file.is_some();
    if has_jwt_route
        && !configures_keys
        && !has_default_keys
        && decryption_keys.is_none()
        && f.jwt.issuers.is_empty()
    {
        c.problems.push(
            "jwt.keys: a route uses auth = \"jwt\" but no key is configured; add a [[jwt.keys]] entry, jwt.jwks_file, a [jwt.jwks] section or a [[jwt.issuers]] entry".into(),
        );
    }
    let max_token_bytes = f.jwt.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
    if max_token_bytes < 64 {
        c.problems
            .push("jwt.max_token_bytes: must be at least 64".into());
    }
    let mut jwt = Jwt {
        issuer: f.jwt.issuer.clone(),
        audience: f.jwt.audience.map(|a| a.into_vec()).unwrap_or_default(),
        leeway_secs: leeway.as_secs(),
        require_exp: f.jwt.require_exp.unwrap_or(true),
        max_lifetime: c.duration(
            "jwt.max_lifetime",
            f.jwt.max_lifetime.as_ref(),
            DEFAULT_MAX_LIFETIME,
        ),
        max_token_bytes,
        cache_size: f.jwt.cache_size.unwrap_or(DEFAULT_TOKEN_CACHE_ENTRIES),
        keys,
        decryption_keys,
        jwks: published,
        issuers: Vec::new(),
    };

    // [identity]
    let user_header = header_name(
        &mut c,
        "identity.user_header",
        f.identity.user_header.as_deref().unwrap_or("x-user-id"),
    );
    let mut claims = Vec::new();
    for (h, claim) in &f.identity.claims {
        if let Some(name) = header_name(&mut c, &format!("identity.claims.{h}"), h) {
            if claims.iter().any(|(n, _)| n == name) || Some(&name) == user_header.as_ref() {
                c.problems
                    .push(format!("identity.claims.{h}: header mapped twice"));
            }
            claims.push((name, claim.clone()));
        }
    }
    let identity = Identity {
        user_header: user_header.unwrap_or(HeaderName::from_static("x-user-id")),
        user_claim: f.identity.user_claim.unwrap_or_else(|| "sub".into()),
        claims,
        forward_token: f.identity.forward_token.unwrap_or(true),
    };
    jwt.issuers = c.issuers(
        &f.jwt.issuers,
        &issuers::Defaults {
            jwt_issuer: jwt.issuer.as_deref(),
            audience: &jwt.audience,
            user_claim: &identity.user_claim,
            leeway,
        },
    );
    let issuer_names = issuers::IssuerNames {
        default: has_default_keys || jwt.decryption_keys.is_some(),
        issuers: &jwt.issuers,
    };

    // [upstream] defaults and [[routes]]
    let up_connect = c.duration(
        "upstream.connect_timeout",
        f.upstream.connect_timeout.as_ref(),
        DEFAULT_UPSTREAM_CONNECT_TIMEOUT,
    );
    let up_timeout = c.duration(
        "upstream.timeout",
        f.upstream.timeout.as_ref(),
        DEFAULT_UPSTREAM_TIMEOUT,
    );
    if f.routes.is_empty() {
        c.problems.push(
            "routes: no [[routes]] entry; add at least one with prefix, upstream and auth".into(),
        );
    }
    let mut routes = Vec::new();
    let mut access = access::AccessBuilder::new(f.jwt.roles_claim.as_deref(), &mut c.problems);
    for (i, r) in f.routes.iter().enumerate() {
        let key = format!("routes[{i}]");
        // Each key of the route is checked even when an earlier one is wrong, so `check`
        // lists every problem at once; the route is left out only at the end.
        let prefix = normalise_prefix(&r.prefix)
            .map_err(|e| c.problems.push(format!("{key}.prefix: {e}")))
            .ok();
        let auth = match r.auth.as_str() {
            "jwt" => Some(AuthPolicy::Jwt),
            "public" => Some(AuthPolicy::Public),
            other => {
                c.problems.push(format!(
                    "{key}.auth: `{other}` is not a policy; use \"jwt\" or \"public\""
                ));
                None
            }
        };
        let upstream = upstream::validate(c.base, &key, r, &mut c.problems);
        let (Some(prefix), Some(auth), Some(upstream)) = (prefix, auth, upstream) else {
            continue;
        };
        let connect_timeout = c.duration(
            &format!("{key}.connect_timeout"),
            r.connect_timeout.as_ref(),
            up_connect,
        );
        let timeout = c.duration(&format!("{key}.timeout"), r.timeout.as_ref(), up_timeout);
        let host = r.host.as_ref().map(|h| h.to_ascii_lowercase());
        if routes
            .iter()
            .any(|x: &Route| x.prefix == prefix && x.host == host)
        {
            c.problems.push(format!(
                "{key}: another route already has prefix `{prefix}`{}",
                host.as_ref()
                    .map(|h| format!(" for host {h}"))
                    .unwrap_or_default()
            ));
        }
        let allow = access.route(&key, auth, r.allow.as_deref(), &mut c.problems);
        let issuers = issuer_names.route(&key, r.issuers.as_deref(), auth, &mut c.problems);
        let rate_limit = r.rate_limit.as_ref().and_then(|l| {
            rate_limit::validate(&key, l, auth, r.api_key.unwrap_or(false), &mut c.problems)
        });
        let websocket_token = match r.websocket_token.as_deref() {
            None => None,
            Some("subprotocol") => Some(WebSocketToken::Subprotocol),
            Some("query") => Some(WebSocketToken::Query),
            Some(other) => {
                c.problems.push(format!(
                    "{key}.websocket_token: `{other}` is not a place for a token; use \"subprotocol\" or \"query\""
                ));
                None
            }
        };
        if r.forward_token.is_some() && auth != AuthPolicy::Jwt {
            c.problems.push(format!(
                "{key}.forward_token: only meaningful with auth = \"jwt\" (a public route passes Authorization through untouched)"
            ));
        }
        if websocket_token.is_some() && auth != AuthPolicy::Jwt {
            c.problems.push(format!(
                "{key}.websocket_token: only meaningful with auth = \"jwt\" (a public route reads no token)"
            ));
        }
        routes.push(Route {
            name: prefix.clone(),
            prefix,
            host,
            upstream,
            auth,
            connect_timeout,
            timeout,
            max_body_bytes: r.max_body_bytes,
            api_key: r.api_key.unwrap_or(false),
            allow,
            rate_limit,
            cors: r.cors.unwrap_or(true),
            forward_token: r.forward_token.unwrap_or(identity.forward_token),
            websocket_token,
            dpop: match r.dpop.as_deref() {
                None | Some("off") => crate::routing::DpopPolicy::Off,
                Some("optional") => crate::routing::DpopPolicy::Optional,
                Some("required") => crate::routing::DpopPolicy::Required,
                Some(other) => {
                    c.problems.push(format!(
                        "{key}.dpop: `{other}` is not a DPoP policy; use \"required\", \"optional\" or \"off\""
                    ));
                    crate::routing::DpopPolicy::Off
                }
            },
            issuers,
        });
    }

    // [admin]
    let admin = match f.admin {
        None => None,
        Some(a) => {
            let addr = c.addr(
                "admin.addr",
                a.addr.as_deref().unwrap_or(DEFAULT_ADMIN_ADDR),
            );
            let token = match (a.token, &a.token_file) {
                (Some(t), None) => Some(Secret(t)),
                (None, Some(p)) => c
                    .secret_file("admin.token_file", p, "admin token")
                    .map(|b| Secret(String::from_utf8_lossy(&b).into_owned())),
                (Some(_), Some(_)) => {
                    c.problems
                        .push("admin: set either token or token_file, not both".into());
                    None
                }
                (None, None) => None,
            };
            if token.as_ref().is_some_and(|t| t.0.len() < 16) {
                c.problems.push(
                    "admin.token: must be at least 16 characters (use e.g. `openssl rand -base64 32`)".into(),
                );
            }
            let labelled = admin_tokens(&mut c, a.tokens.unwrap_or_default(), token.is_some());
            if token.is_none() && labelled.is_empty() {
                c.problems.push(
                    "admin: an admin token is required (token = \"${PORTCULLIS_ADMIN_TOKEN}\", token_file, or tokens = [{ label, token_file }])".into(),
                );
            }
            let tls = match (&a.tls_cert, &a.tls_key) {
                (Some(cert), Some(key)) => c.tls("admin", cert, key),
                (None, None) => None,
                _ => {
                    c.problems
                        .push("admin: set both tls_cert and tls_key or neither".into());
                    None
                }
            };
            if let Some(addr) = addr {
                // Configured TLS whose files fail to load is reported as that (above), not
                // as a listener without TLS.
                let tls_configured = a.tls_cert.is_some() || a.tls_key.is_some();
                if !addr.ip().is_loopback()
                    && tls.is_none()
                    && !tls_configured
                    && !a.allow_insecure_remote.unwrap_or(false)
                {
                    c.problems.push(format!(
                        "admin.addr: `{addr}` is not a loopback address and the admin listener has no TLS; \
                         add admin.tls_cert/tls_key, bind 127.0.0.1, or set allow_insecure_remote = true"
                    ));
                }
            }
            addr.map(|addr| Admin {
                addr,
                token,
                labelled,
                tls,
            })
        }
    };

    // [revocation]
    let store = match f.revocation.as_ref().and_then(|r| r.store.as_deref()) {
        None => StoreKind::Log(resolve(base, Path::new(DEFAULT_REVOCATION_STORE))),
        Some("memory") => StoreKind::Memory,
        Some(s)
            if s.starts_with("redis://")
                || s.starts_with("rediss://")
                || s.starts_with("redis+sentinel://") =>
        {
            StoreKind::Redis(c.redis_store(s, f.revocation.as_ref()))
        }
        Some(s) => StoreKind::Log(resolve(base, Path::new(s))),
    };
    if let (Some(r), false) = (&f.revocation, matches!(store, StoreKind::Redis(_))) {
        for (key, set) in [
            ("key_prefix", r.key_prefix.is_some()),
            ("stream_max_len", r.stream_max_len.is_some()),
            ("timeout", r.timeout.is_some()),
            ("load_timeout", r.load_timeout.is_some()),
            ("tls_ca", r.tls_ca.is_some()),
            ("min_replicas_ack", r.min_replicas_ack.is_some()),
        ] {
            if set {
                c.problems.push(format!(
                    "revocation.{key}: only applies to cluster mode (store = \"redis://...\" or \"rediss://...\")"
                ));
            }
        }
    }
    let revocation = Revocation {
        recover: f
            .revocation
            .as_ref()
            .and_then(|r| r.recover)
            .unwrap_or(false),
        store,
        sweep_interval: c.duration(
            "revocation.sweep_interval",
            f.revocation
                .as_ref()
                .and_then(|r| r.sweep_interval.as_ref()),
            DEFAULT_SWEEP_INTERVAL,
        ),
        audit_retention: c.duration(
            "revocation.audit_retention",
            f.revocation
                .as_ref()
                .and_then(|r| r.audit_retention.as_ref()),
            DEFAULT_AUDIT_RETENTION,
        ),
    };

    // [dpop]
    let dpop = {
        let mut problems = Vec::new();
        let d = dpop::validate(f.dpop, &mut |k, v, d| c.duration(k, v, d), &mut problems);
        c.problems.extend(problems);
        d
    };

    // [api_keys]
    let api_keys = api_keys(
        &mut c,
        f.api_keys.unwrap_or_default(),
        &identity,
        &revocation,
    );

    // [log]
    let format = match f.log.format.as_deref() {
        None | Some("pretty") => LogFormat::Pretty,
        Some("json") => LogFormat::Json,
        Some(other) => {
            c.problems.push(format!(
                "log.format: `{other}` is not a format; use \"pretty\" or \"json\""
            ));
            LogFormat::Pretty
        }
    };
    let log = Log {
        format,
        level: f.log.level.unwrap_or_else(|| "info".into()),
        access_log: f.log.access_log.unwrap_or(false),
    };

    let limits = Limits {
        max_connections: f.limits.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        max_header_bytes: f
            .limits
            .max_header_bytes
            .unwrap_or(DEFAULT_MAX_HEADER_BYTES),
        max_headers: f.limits.max_headers.unwrap_or(DEFAULT_MAX_HEADERS),
        h2_max_concurrent_streams: f
            .limits
            .h2_max_concurrent_streams
            .unwrap_or(DEFAULT_H2_MAX_CONCURRENT_STREAMS),
        upstream_pool_idle_timeout: c.duration(
            "upstream.pool_idle_timeout",
            f.upstream.pool_idle_timeout.as_ref(),
            DEFAULT_POOL_IDLE_TIMEOUT,
        ),
        upstream_pool_max_idle_per_host: f
            .upstream
            .pool_max_idle_per_host
            .unwrap_or(DEFAULT_POOL_MAX_IDLE_PER_HOST),
    };
    if limits.max_header_bytes < 8192 {
        c.problems
            .push("limits.max_header_bytes: must be at least 8192".into());
    }
    if limits.max_connections == 0 {
        c.problems
            .push("limits.max_connections: must be at least 1".into());
    }

    // [signin]
    let before_signin = c.problems.len();
    let signin = f
        .signin
        .as_ref()
        .and_then(|s| signin::Settings::validate(s, base, &jwt.keys, &mut c.problems));
    if keys_failed {
        // The key set did not load (its problems are listed): "no key with that kid" would
        // be a false second problem.
        let mut i = before_signin;
        while i < c.problems.len() {
            if c.problems[i].starts_with("signin.signing_kid:") {
                c.problems.remove(i);
            } else {
                i += 1;
            }
        }
    }
    let insecure_cookies = signin
        .as_ref()
        .and_then(|s| s.cookies.as_ref())
        .is_some_and(|k| !k.secure);
    if insecure_cookies && listen.tls.is_some() {
        c.problems.push(
            "signin.cookies.secure: false is only for plain-HTTP local development; this listener has TLS, so the cookies must be Secure (remove the key)".into(),
        );
    }

    // Issue 15: 0 used to mean "one per core" silently; a typo for 1 or 10 should not pass.
    if f.listen.workers == Some(0) {
        c.problems.push(
            "listen.workers: 0 is not a number of workers; remove the key for one per core, or give at least 1".into(),
        );
    }

    // [cors]
    let cors = f
        .cors
        .as_ref()
        .and_then(|s| cors::Cors::validate(s, &mut c.problems));

    // [telemetry]
    let telemetry = {
        let mut problems = Vec::new();
        let t = telemetry::validate(
            f.telemetry.as_ref(),
            &mut |k, v, d| c.duration(k, v, d),
            &mut problems,
        );
        c.problems.extend(problems);
        t
    };

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    Ok(Config {
        source: None,
        base_dir: base.to_path_buf(),
        listen,
        jwt,
        identity,
        routes: RouteTable::new(routes),
        admin,
        revocation,
        log,
        limits,
        signin,
        api_keys,
        cors,
        dpop,
        telemetry,
        pending_dev_files: c.dev_files,
        grants: access.finish(),
    })
}

/// Headers an API-key setting may not name: the gateway sets or routes on these itself, or
/// they carry other credentials.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "upgrade",
    "te",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];

/// Validate `[api_keys]`. The two headers must differ from each other, from the identity
/// headers (the key header would be stripped as spoofable before it is read; the client
/// header would overwrite a user claim) and from the headers the gateway handles itself.
/// The store follows `[revocation] store` unless set: a log file puts `apikeys.json` in
/// the same folder, `memory` keeps keys in memory, Redis keeps them in a Redis hash.
fn api_keys(
    c: &mut Checker<'_>,
    f: file::ApiKeys,
    identity: &Identity,
    revocation: &Revocation,
) -> ApiKeys {
    let mut name = |key: &str, value: Option<&str>, default: &'static str| {
        let h = header_name(c, key, value.unwrap_or(default))
            .unwrap_or(HeaderName::from_static(default));
        if RESERVED_HEADERS.contains(&h.as_str()) {
            c.problems.push(format!(
                "{key}: `{h}` is handled by the gateway itself; choose another header name"
            ));
        }
        if h == identity.user_header || identity.claims.iter().any(|(n, _)| *n == h) {
            c.problems.push(format!(
                "{key}: `{h}` is already an identity header ([identity]); choose another name"
            ));
        }
        h
    };
    let header = name(
        "api_keys.header",
        f.header.as_deref(),
        DEFAULT_API_KEY_HEADER,
    );
    let client_header = name(
        "api_keys.client_header",
        f.client_header.as_deref(),
        DEFAULT_API_KEY_CLIENT_HEADER,
    );
    if header == client_header {
        c.problems.push(format!(
            "api_keys.client_header: `{client_header}` is also api_keys.header; the key would be \
             replaced by the app id (or the app id taken from the client)"
        ));
    }
    let store = match f.store.as_deref() {
        Some("memory") => ApiKeyStore::Memory,
        Some("") => {
            c.problems.push(
                "api_keys.store: empty; give a file path or \"memory\" (or leave it out)".into(),
            );
            ApiKeyStore::Memory
        }
        Some(s) if s.starts_with("redis://") || s.starts_with("rediss://") => {
            c.problems.push(
                "api_keys.store: a Redis URL is not accepted here; leave api_keys.store out \
                 and the keys follow revocation.store to Redis"
                    .into(),
            );
            ApiKeyStore::Memory
        }
        Some(s) => ApiKeyStore::File(resolve(c.base, Path::new(s))),
        None => match &revocation.store {
            StoreKind::Memory => ApiKeyStore::Memory,
            StoreKind::Log(log) => ApiKeyStore::File(
                log.parent()
                    .unwrap_or(Path::new("."))
                    .join(DEFAULT_API_KEY_STORE_FILE),
            ),
            StoreKind::Redis(r) => ApiKeyStore::Redis(r.clone()),
        },
    };
    ApiKeys {
        header,
        client_header,
        store,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_cache_default_matches_the_cache() {
        assert_eq!(
            DEFAULT_TOKEN_CACHE_ENTRIES,
            crate::auth::cache::DEFAULT_CACHE_ENTRIES
        );
    }

    const MINIMAL: &str = r#"
[listen]
addr = "127.0.0.1:0"

[[jwt.keys]]
kid = "hs1"
alg = "HS256"
secret = "0123456789abcdef0123456789abcdef"

[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:8080"
auth = "jwt"
"#;

    #[test]
    fn minimal_config_loads_with_defaults() {
        let c = Config::from_toml(MINIMAL, Path::new(".")).unwrap();
        assert!(c.listen.tls.is_none());
        assert_eq!(c.identity.user_header.as_str(), "x-user-id");
        assert_eq!(c.identity.user_claim, "sub");
        assert_eq!(c.jwt.leeway_secs, DEFAULT_LEEWAY_SECS);
        assert!(c.jwt.require_exp);
        assert!(c.admin.is_none());
    }

    #[test]
    fn unknown_key_is_named() {
        let text = MINIMAL.replace("[listen]", "[listen]\nadress = \"x\"");
        let e = Config::from_toml(&text, Path::new(".")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("adress"), "{msg}");
        assert!(msg.contains("listen"), "{msg}");
    }

    #[test]
    fn missing_env_var_is_named() {
        let text = MINIMAL.replace(
            "secret = \"0123456789abcdef0123456789abcdef\"",
            "secret = \"${PORTCULLIS_TEST_SURELY_UNSET}\"",
        );
        let msg = Config::from_toml(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("PORTCULLIS_TEST_SURELY_UNSET"), "{msg}");
        assert!(msg.contains("jwt.keys[0].secret"), "{msg}");
    }

    #[test]
    fn env_expansion() {
        std::env::set_var("PORTCULLIS_TEST_EXPANSION", "abc");
        assert_eq!(
            expand_str("x${PORTCULLIS_TEST_EXPANSION}y").unwrap(),
            "xabcy"
        );
        assert_eq!(expand_str("cost $$5").unwrap(), "cost $5");
        assert_eq!(expand_str("plain").unwrap(), "plain");
        assert!(expand_str("${UNCLOSED").is_err());
    }

    #[test]
    fn missing_key_file_names_path() {
        let text = MINIMAL.replace(
            "secret = \"0123456789abcdef0123456789abcdef\"",
            "secret_file = \"nowhere/secret.txt\"",
        );
        let msg = Config::from_toml(&text, Path::new("/tmp"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("/tmp/nowhere/secret.txt"), "{msg}");
    }

    #[test]
    fn every_problem_is_reported() {
        let text = MINIMAL
            .replace("auth = \"jwt\"", "auth = \"maybe\"")
            .replace("leeway", "x")
            .replace(
                "[listen]\naddr = \"127.0.0.1:0\"",
                "[listen]\naddr = \"nope\"",
            );
        let e = Config::from_toml(&text, Path::new(".")).unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn zero_workers_is_refused() {
        let text = MINIMAL.replace("[listen]\n", "[listen]\nworkers = 0\n");
        assert!(text.contains("workers = 0"), "{text}");
        let msg = Config::from_toml(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("listen.workers"), "{msg}");
    }

    #[test]
    fn labelled_admin_tokens_load_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bob.token"), "bob-admin-token-0123456789\n").unwrap();
        std::fs::write(dir.path().join("short.token"), "short\n").unwrap();
        let ok = format!(
            "{MINIMAL}\n[admin]\ntokens = [{{ label = \"oncall-bob\", token_file = \"bob.token\" }}]\n[revocation]\nstore = \"memory\"\naudit_retention = \"7d\"\n"
        );
        let c = Config::from_toml(&ok, dir.path()).unwrap();
        let a = c.admin.unwrap();
        assert!(a.token.is_none());
        assert_eq!(a.labelled.len(), 1);
        assert_eq!(a.labelled[0].0, "oncall-bob");
        assert_eq!(a.labelled[0].1 .0, "bob-admin-token-0123456789");
        assert_eq!(c.revocation.audit_retention, Duration::from_secs(7 * 86400));
        for (tokens, needle) in [
            (
                "[{ label = \"admin\", token_file = \"bob.token\" }]",
                "used twice",
            ),
            (
                "[{ label = \"a b\", token_file = \"bob.token\" }]",
                "tokens[0].label",
            ),
            (
                "[{ label = \"x\", token_file = \"short.token\" }]",
                "at least 16",
            ),
            (
                "[{ label = \"x\", token_file = \"missing.token\" }]",
                "tokens[0].token_file",
            ),
        ] {
            let text = format!(
                "{MINIMAL}\n[admin]\ntoken = \"0123456789abcdef0123\"\ntokens = {tokens}\n"
            );
            let msg = Config::from_toml(&text, dir.path())
                .unwrap_err()
                .to_string();
            assert!(msg.contains(needle), "{needle} not in {msg}");
        }
    }

    #[test]
    fn remote_admin_without_tls_is_refused() {
        let text = format!(
            "{MINIMAL}\n[admin]\naddr = \"0.0.0.0:9443\"\ntoken = \"0123456789abcdef0123\"\n"
        );
        let msg = Config::from_toml(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("admin.addr"), "{msg}");
    }

    #[test]
    fn signin_section_loads_with_defaults_and_names_its_problems() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users.toml"), "users = []\n").unwrap();
        let text =
            format!("{MINIMAL}\n[signin]\nusers_file = \"users.toml\"\nsigning_kid = \"hs1\"\n");
        let c = Config::from_toml(&text, dir.path()).unwrap();
        let s = c.signin.expect("[signin] is loaded");
        assert_eq!(s.access_ttl, signin::DEFAULT_ACCESS_TTL);
        assert_eq!(s.refresh_ttl, signin::DEFAULT_REFRESH_TTL);
        assert_eq!(s.max_sessions_per_user, None);
        assert_eq!(s.paths.login, "/auth/login");
        assert_eq!(s.paths.logout_all, "/auth/logout-all");

        let bad = text
            .replace(
                "signing_kid = \"hs1\"",
                "signing_kid = \"nope\"\nmax_sessions_per_user = 0\naccess_ttl = \"soon\"",
            )
            .replace("users.toml", "missing.toml");
        let e = Config::from_toml(&bad, dir.path()).unwrap_err();
        let msg = e.to_string();
        for key in [
            "signin.signing_kid",
            "signin.max_sessions_per_user",
            "signin.access_ttl",
            "signin.users_file",
        ] {
            assert!(msg.contains(key), "{key}: {msg}");
        }
    }

    #[test]
    fn api_keys_default_beside_the_revocation_store_and_name_their_problems() {
        let text = MINIMAL.replace("auth = \"jwt\"", "auth = \"public\"\napi_key = true");
        let c = Config::from_toml(&text, Path::new("/srv/gw")).unwrap();
        assert_eq!(c.api_keys.header.as_str(), "x-api-key");
        assert_eq!(c.api_keys.client_header.as_str(), "x-client-id");
        assert!(
            matches!(&c.api_keys.store, ApiKeyStore::File(p) if p == Path::new("/srv/gw/data/apikeys.json")),
            "{:?}",
            c.api_keys.store
        );
        assert!(c.routes.iter().all(|r| r.api_key));

        let memory = format!("{text}\n[revocation]\nstore = \"memory\"\n");
        let c = Config::from_toml(&memory, Path::new(".")).unwrap();
        assert!(matches!(c.api_keys.store, ApiKeyStore::Memory));

        let bad = format!(
            "{text}\n[api_keys]\nheader = \"x-user-id\"\nclient_header = \"bad header\"\nstore = \"redis://x\"\n"
        );
        let msg = Config::from_toml(&bad, Path::new("."))
            .unwrap_err()
            .to_string();
        for key in [
            "api_keys.header",
            "api_keys.client_header",
            "api_keys.store",
        ] {
            assert!(msg.contains(key), "{key}: {msg}");
        }
        let same = format!("{text}\n[api_keys]\nheader = \"x-app\"\nclient_header = \"X-App\"\n");
        let msg = Config::from_toml(&same, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("api_keys.client_header"), "{msg}");
        let unknown = format!("{text}\n[api_keys]\nheadr = \"x\"\n");
        let msg = Config::from_toml(&unknown, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("headr"), "{msg}");
    }
}
