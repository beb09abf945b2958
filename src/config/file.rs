//! The serde mirror of `config.toml`: exactly what the file may say, nothing typed yet.
//!
//! Every struct denies unknown fields, so a typo is an error that names the key instead of a
//! setting silently ignored. Durations and sizes stay strings here; `config::validate` turns
//! them into typed values and says what would be valid when one is wrong.
//!
//! The shape of `[listen]`, `[jwt]`, `[[jwt.keys]]`, `[identity]`, `[[routes]]`, `[admin]`,
//! `[revocation]`, `[signin]` and `[api_keys]` is public interface: extend it, never rename.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub listen: Listen,
    #[serde(default)]
    pub jwt: Jwt,
    #[serde(default)]
    pub identity: Identity,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub admin: Option<Admin>,
    #[serde(default)]
    pub revocation: Option<Revocation>,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub upstream: UpstreamDefaults,
    #[serde(default)]
    pub dev: Dev,
    #[serde(default)]
    pub signin: Option<SignIn>,
    #[serde(default)]
    pub api_keys: Option<ApiKeys>,
    /// `[cors]`: browser origins allowed to call the gateway (issue 15).
    #[serde(default)]
    pub cors: Option<Cors>,
    /// `[dpop]`: DPoP proof checks (RFC 9449); defaults when absent.
    #[serde(default)]
    pub dpop: Option<Dpop>,
    /// `[telemetry]`: the OTLP/HTTP trace export (issue 17); off when absent.
    #[serde(default)]
    pub telemetry: Option<Telemetry>,
}

/// `[telemetry]`: the OTLP/HTTP trace export, off unless `otlp_endpoint` is set; every
/// other key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// The collector's OTLP/HTTP base URL, e.g. "http://127.0.0.1:4318" (spans go to
    /// `/v1/traces` under it).
    pub otlp_endpoint: Option<String>,
    /// 0.0 to 1.0: the share of the traces the gateway starts that it exports; a client's
    /// sampled `traceparent` is always followed. Default 1.0.
    pub sample_ratio: Option<f64>,
    /// `service.name` of the exported spans; default "portcullis".
    pub service_name: Option<String>,
    /// Headers sent with every export request, e.g. { "x-api-key" = "${OTLP_KEY}" }.
    #[serde(default)]
    pub otlp_headers: BTreeMap<String, String>,
    /// Time allowed for one export request, e.g. "10s".
    pub otlp_timeout: Option<String>,
    /// Longest a finished span waits for its export request, e.g. "1s".
    pub export_interval: Option<String>,
    /// Spans per export request, at most; default 512.
    pub batch_size: Option<usize>,
    /// Traced requests waiting for export; past it spans are dropped (and counted).
    pub queue_size: Option<usize>,
}

/// `[dpop]` (RFC 9449 sender-constrained tokens); every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dpop {
    pub max_age: Option<String>,
    pub nonce: Option<bool>,
    pub nonce_interval: Option<String>,
    pub algs: Option<Vec<String>>,
    pub public_origin: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub addr: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Time allowed for a TLS handshake, e.g. "10s".
    pub handshake_timeout: Option<String>,
    /// Time allowed for a client to send a complete request head, e.g. "10s".
    pub header_read_timeout: Option<String>,
    /// Number of worker threads (one single-threaded runtime each), at least 1; absent: one per core.
    pub workers: Option<usize>,
    /// On SIGTERM, how long in-flight requests may take to finish, e.g. "30s".
    pub shutdown_grace: Option<String>,
    /// `Strict-Transport-Security` value added to every response sent over TLS, e.g.
    /// "max-age=31536000; includeSubDomains".
    pub hsts: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    pub issuer: Option<String>,
    pub audience: Option<OneOrMany>,
    pub leeway: Option<String>,
    /// Tokens without `exp` are rejected unless this is false.
    pub require_exp: Option<bool>,
    /// Longest lifetime the gateway assumes for a token it cannot read `exp` from.
    pub max_lifetime: Option<String>,
    /// Largest bearer token accepted, in bytes.
    pub max_token_bytes: Option<usize>,
    /// Verified-token cache size in entries for RS/PS/ES/EdDSA/JWE tokens; 0 disables it.
    pub cache_size: Option<usize>,
    /// A local JWKS file whose keys are added to `keys`.
    pub jwks_file: Option<PathBuf>,
    /// `[jwt.jwks]`: a published key set, fetched at start and refreshed while running.
    pub jwks: Option<Jwks>,
    #[serde(default)]
    pub keys: Vec<Key>,
    /// Keys for encrypted (JWE) tokens.
    #[serde(default)]
    pub decryption_keys: Vec<DecryptionKey>,
    /// A JWKS file of private JWE keys (each with `kid` and `alg`; `use` absent or "enc").
    pub decryption_jwks_file: Option<PathBuf>,
    /// Content encryptions accepted, e.g. ["A128GCM", "A256GCM"]; default
    /// A128GCM, A256GCM, A128CBC-HS256, A256CBC-HS512.
    pub decryption_encs: Option<Vec<String>>,
    /// The claim holding the roles `[[routes.allow]] roles` match, a dotted path such as
    /// "realm_access.roles"; default "roles".
    pub roles_claim: Option<String>,
    /// `[[jwt.issuers]]`: more token issuers, each with its own keys (issue 14).
    #[serde(default)]
    pub issuers: Vec<Issuer>,
}

/// `[[jwt.issuers]]`: one more issuer whose tokens are accepted, selected by the token's
/// `iss`; its keys come from OpenID Connect discovery or a JWKS URL.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    /// What routes call it (`[[routes]] issuers = [...]`); "default" is the `[jwt]` issuer.
    pub name: String,
    /// Exactly the `iss` its tokens carry, e.g. "https://id.example.com/".
    pub issuer: String,
    /// true: find the key set through `{issuer}.well-known/openid-configuration`.
    pub discovery: Option<bool>,
    /// The key set's URL (instead of discovery).
    pub jwks_url: Option<String>,
    /// PEM CA certificate(s) for the issuer's https:// URLs, instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Audiences its tokens must name one of; default `[jwt] audience`.
    pub audience: Option<OneOrMany>,
    /// The claim holding the user id; default `[identity] user_claim`.
    pub user_claim: Option<String>,
    /// Clock skew tolerated on its tokens; default `[jwt] leeway`.
    pub leeway: Option<String>,
    /// As `[jwt.jwks]`: how often the key set is fetched again, e.g. "5m".
    pub refresh_interval: Option<String>,
    /// As `[jwt.jwks]`: least time between two fetches, e.g. "10s".
    pub min_refresh_interval: Option<String>,
    /// As `[jwt.jwks]`: time allowed for one fetch, e.g. "5s".
    pub timeout: Option<String>,
}

/// `[jwt.jwks]`: where the issuer publishes its keys and how often to look.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwks {
    /// `https://...` (or `http://` to a loopback address).
    pub url: Option<String>,
    /// A local JWKS file, re-read on the same schedule (instead of `url`).
    pub file: Option<PathBuf>,
    /// How often the set is fetched again, e.g. "5m".
    pub refresh_interval: Option<String>,
    /// Least time between two fetches (the rate limit on unknown-`kid` refreshes), e.g. "10s".
    pub min_refresh_interval: Option<String>,
    /// Time allowed for one fetch of `url`, e.g. "5s".
    pub timeout: Option<String>,
    /// PEM CA certificate(s) to verify an `https://` url with, instead of the system roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecryptionKey {
    pub kid: Option<String>,
    /// `dir`, `A128KW`, `A256KW` or `RSA-OAEP-256`.
    pub alg: String,
    /// Content encryption this key accepts: `A128GCM`, `A192GCM`, `A256GCM`,
    /// `A128CBC-HS256`, `A256CBC-HS512` (required for `dir`).
    pub enc: Option<String>,
    /// base64url of the raw key (`dir`, `A*KW`).
    pub key: Option<String>,
    /// A file holding the key: base64url text, or the raw key bytes.
    pub key_file: Option<PathBuf>,
    /// PEM RSA private key, for `RSA-OAEP-256`.
    pub private_key: Option<PathBuf>,
    /// Accept only a nested signed JWT (`cty: "JWT"`) even under symmetric key management;
    /// public-key management (RSA-OAEP*, ECDH-ES*) always requires one.
    pub require_nested: Option<bool>,
}

/// A string or an array of strings (`audience = "api"` or `audience = ["a", "b"]`).
/// Deserialized by hand: serde's untagged enums only say "data did not match any variant
/// of untagged enum", which names neither what was found nor what would be valid.
#[derive(Debug, Clone)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany::Many(out))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Key {
    pub kid: Option<String>,
    pub alg: String,
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// The secret is base64url (or standard base64) encoded rather than raw bytes.
    pub secret_base64: Option<bool>,
    pub public_key: Option<PathBuf>,
    /// PEM private key, for `portcullis token` and sign-in with asymmetric algorithms.
    pub private_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub user_header: Option<String>,
    pub user_claim: Option<String>,
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    /// `false`: the upstream does not receive the client's `Authorization` (the token the
    /// gateway verified); default `true`. `[[routes]] forward_token` overrides it per route.
    pub forward_token: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub prefix: String,
    /// One upstream URL (`http://` or `https://`); or `upstreams` for several targets.
    pub upstream: Option<String>,
    /// Several targets sharing the route's requests (issue 16), instead of `upstream`.
    pub upstreams: Option<Vec<String>>,
    /// PEM CA certificate(s) that `https://` targets are verified against (instead of the
    /// system's roots).
    pub upstream_ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) the gateway presents to `https://` targets (mTLS).
    pub upstream_client_cert: Option<PathBuf>,
    /// Its private key.
    pub upstream_client_key: Option<PathBuf>,
    /// `"http1"` (default), `"h2"` or `"auto"`.
    pub upstream_protocol: Option<String>,
    /// `"round_robin"` (default), `"least_requests"` or `"user_hash"`.
    pub balance: Option<String>,
    /// `[routes.health]`: active health checks of every target.
    pub health: Option<Health>,
    /// How often targets named by host name are resolved again (`"30s"` when absent).
    pub dns_refresh: Option<String>,
    pub auth: String,
    pub host: Option<String>,
    pub connect_timeout: Option<String>,
    pub timeout: Option<String>,
    /// Largest request body accepted on this route, in bytes (413 beyond).
    pub max_body_bytes: Option<u64>,
    /// Require an app key (`[api_keys] header`): alone with `auth = "public"`, in addition
    /// to the bearer token with `auth = "jwt"`.
    pub api_key: Option<bool>,
    /// `[[routes.allow]]`: who may do what (issue 14); absent: every authenticated request.
    pub allow: Option<Vec<AllowRule>>,
    /// `rate_limit = { per, rate, burst }`: requests allowed per user, app or IP (issue 14).
    pub rate_limit: Option<RateLimit>,
    /// `false`: this route answers no CORS even when `[cors]` is set (preflights go upstream).
    pub cors: Option<bool>,
    /// Let browser WebSocket clients send their token on the upgrade request:
    /// "subprotocol" (`Sec-WebSocket-Protocol: bearer, <token>`) or "query" (`?access_token=`).
    pub websocket_token: Option<String>,
    /// `"required"`, `"optional"` or `"off"` (default): DPoP proofs on this route.
    pub dpop: Option<String>,
    /// Overrides `[identity] forward_token` for this route (a `jwt` route).
    pub forward_token: Option<bool>,
    /// The issuers whose tokens this route accepts, by name; absent: every configured one.
    pub issuers: Option<Vec<String>>,
}

/// `[routes.health]`: `GET path` on every target every `interval`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub path: String,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    /// Consecutive failed checks before a target is taken out.
    pub unhealthy_after: Option<u32>,
    /// Consecutive good checks before it is taken back.
    pub healthy_after: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub addr: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Permit a non-loopback admin bind without TLS (the token then crosses the network in
    /// clear text; only for a network you trust).
    pub allow_insecure_remote: Option<bool>,
    /// More admin credentials, each with the label the audit trail records as the actor
    /// (issue 17); the single `token` is labelled `admin`.
    pub tokens: Option<Vec<AdminToken>>,
}

/// One labelled admin credential (`[admin] tokens = [{ label, token_file }]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    pub label: String,
    pub token_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// A file path (the embedded log), "memory", or `redis://`/`rediss://` (cluster mode).
    pub store: Option<String>,
    /// How often expired entries are swept from memory, e.g. "60s".
    pub sweep_interval: Option<String>,
    /// How long the audit trail keeps a record, e.g. "30d" (issue 17).
    pub audit_retention: Option<String>,
    /// Cluster mode: the prefix of every Redis key the gateway uses, e.g. "portcullis".
    pub key_prefix: Option<String>,
    /// Cluster mode: change-stream entries Redis keeps (approximately) for catch-up.
    pub stream_max_len: Option<u64>,
    /// Cluster mode: time allowed for one Redis connect or write, e.g. "2s".
    pub timeout: Option<String>,
    /// Cluster mode: how long start-up waits for Redis to answer before it serves unready,
    /// e.g. "10s".
    pub load_timeout: Option<String>,
    /// Cluster mode with `rediss://`: PEM CA certificate(s) to trust instead of the system
    /// roots.
    pub tls_ca: Option<PathBuf>,
    /// Start even if the store file (or the session journal beside it) is damaged: keep
    /// every intact record, preserve the damaged file as `<file>.damaged-<time>`.
    pub recover: Option<bool>,
    /// Cluster mode: a revoke is acknowledged only once this many replicas have it (WAIT).
    pub min_replicas_ack: Option<u32>,
}

/// `[signin]`: the gateway issues tokens itself (login, refresh, logout).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// The users file (TOML or JSON by extension). Required; optional here so that leaving it
    /// out is one problem among the others `check` lists, not the only one.
    pub users_file: Option<PathBuf>,
    /// The `[[jwt.keys]]` kid that signs access tokens (default: the first key that can sign).
    pub signing_kid: Option<String>,
    /// Access token lifetime, e.g. "15m".
    pub access_ttl: Option<String>,
    /// Issue encrypted access tokens: the kid of a `[[jwt.decryption_keys]]` entry; the signed
    /// token is wrapped in a JWE (`cty: "JWT"`) with that key.
    pub encrypt_kid: Option<String>,
    /// Refresh token lifetime, e.g. "30d" (each rotation starts it again).
    pub refresh_ttl: Option<String>,
    /// Live sessions per user; a login beyond it ends the oldest. Absent: unlimited.
    pub max_sessions_per_user: Option<usize>,
    pub login_path: Option<String>,
    pub refresh_path: Option<String>,
    pub logout_path: Option<String>,
    pub logout_all_path: Option<String>,
    /// Login attempts allowed per client IP per minute (also the burst).
    pub ip_attempts_per_minute: Option<u32>,
    /// Login attempts allowed per username per minute (also the burst).
    pub user_attempts_per_minute: Option<u32>,
    /// Password verifications running at once (default: twice the cores).
    pub max_concurrent_hashes: Option<usize>,
    /// `[signin.cookies]`: browser clients get their tokens as cookies.
    pub cookies: Option<Cookies>,
}

/// `[signin.cookies]`: cookie mode for browser clients (tokens in `HttpOnly` cookies, a
/// double-submit CSRF token for state-changing requests).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cookies {
    /// Off unless true (an absent section is off too).
    pub enabled: Option<bool>,
    /// Name of the access token cookie.
    pub access_cookie: Option<String>,
    /// Name of the refresh token cookie.
    pub refresh_cookie: Option<String>,
    /// Name of the CSRF cookie (readable by the page's scripts).
    pub csrf_cookie: Option<String>,
    /// Request header that must repeat the CSRF cookie.
    pub csrf_header: Option<String>,
    /// "strict" (default) or "lax".
    pub same_site: Option<String>,
    /// Mark the cookies `Secure` (default true; false only for plain-HTTP local development).
    pub secure: Option<bool>,
    /// Let non-browser clients (mobile apps, services) of a cookie-mode gateway ask for
    /// their tokens in the body instead (default false).
    pub bearer_clients: Option<bool>,
}

/// `[api_keys]`: app keys for trusted apps (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeys {
    /// The request header carrying the key, e.g. "x-api-key".
    pub header: Option<String>,
    /// The header the gateway sets to the key's app id for the upstream, e.g. "x-client-id".
    pub client_header: Option<String>,
    /// A JSON file path, or "memory". Absent: follows `[revocation] store`.
    pub store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// "pretty" (default) or "json".
    pub format: Option<String>,
    /// A tracing filter such as "info" or "portcullis=debug"; `RUST_LOG` wins when set.
    pub level: Option<String>,
    /// One log line per proxied request (time, route, status, latency, user, request id).
    pub access_log: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_connections: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub h2_max_concurrent_streams: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamDefaults {
    pub connect_timeout: Option<String>,
    pub timeout: Option<String>,
    pub pool_idle_timeout: Option<String>,
    pub pool_max_idle_per_host: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dev {
    /// Create missing development material on start: a self-signed certificate for
    /// `[listen] tls_cert`/`tls_key`, random secrets for `secret_file` keys and the admin
    /// `token_file`. Never enable in production.
    pub generate_missing: Option<bool>,
}

/// `[[routes.allow]]`: one access rule; rules are OR-ed, the conditions of a rule AND-ed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// HTTP methods this rule covers; absent: any method.
    pub methods: Option<Vec<String>>,
    /// Scopes the token must ALL have (`scope` or `scp`).
    pub scopes: Option<Vec<String>>,
    /// Roles of which the token must have ANY (`[jwt] roles_claim`).
    pub roles: Option<Vec<String>>,
    /// Claims that must equal these values exactly; a quoted dotted key is a path.
    pub claims: Option<BTreeMap<String, toml::Value>>,
}

/// `[[routes]] rate_limit`: a token bucket per user, app or client IP.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// "user" (the token's user claim), "app" (the API-key app id) or "ip".
    pub per: String,
    /// "N/s", "N/m" or "N/h".
    pub rate: String,
    /// Requests allowed at once; default the per-second equivalent of `rate`.
    pub burst: Option<u64>,
}

/// `[cors]`: cross-origin browser clients (every key optional; the section itself is opt-in).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Exact origins, e.g. ["https://app.example.com"]; "*" (any) is refused with credentials.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Methods a preflight may ask for; default GET, HEAD, POST.
    pub allowed_methods: Option<Vec<String>>,
    /// Request headers a preflight may ask for, e.g. ["authorization", "content-type"].
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    /// Response headers the page's scripts may read, e.g. ["x-request-id"].
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true` (cookies, `credentials: "include"`).
    pub allow_credentials: Option<bool>,
    /// How long a browser may cache a preflight answer, e.g. "10m".
    pub max_age: Option<String>,
}
