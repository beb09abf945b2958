//! Routing: normalise the request path, then pick the route with the longest matching prefix.
//!
//! The gateway routes on the normalised path *and forwards that same path*, so what the
//! policy check saw is exactly what the upstream receives. Normalisation follows RFC 3986
//! section 6.2.2: percent-encoded unreserved characters are decoded, dot segments removed
//! (section 5.2.4), empty segments collapsed. What cannot be normalised safely is refused:
//! an encoded `/` or `\` (`%2F`, `%5C`), a raw `\`, NUL or control bytes, a `..` that climbs
//! above the root, and dot segments hidden behind a `;` parameter (`..;/`, the Tomcat
//! path-parameter trick). That closes the classic path-prefix bypass where
//! `/public/..%2fadmin` passes a `public` route and lands on a protected upstream path.

use std::borrow::Cow;
use std::time::Duration;

/// A route's upstream: `upstream = "http://host:port[/base/path]"`, or several targets
/// (`upstreams = [..]`) sharing one base path, and how to reach them (issue 16).
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `scheme://authority` of the first target, e.g. `http://127.0.0.1:8080`.
    pub origin: String,
    /// The first target's authority.
    pub authority: http::uri::Authority,
    /// Base path prepended to the forwarded path, without trailing slash ("" for none).
    pub base_path: String,
    /// Every target, in the order configured (at least one; the first is `origin`).
    pub targets: Vec<UpstreamTarget>,
    /// `upstream_protocol`.
    pub protocol: UpstreamProtocol,
    /// `balance`: how a request picks among several targets.
    pub balance: Balance,
    /// The TLS client settings for `https://` targets (roots or `upstream_ca_file`, the
    /// optional client certificate); `None` when every target is `http://`.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// `[routes.health]`: active health checks; `None`: passive ejection only.
    pub health: Option<HealthCheck>,
    /// `dns_refresh`: how often targets named by host name are resolved again.
    pub dns_refresh: Duration,
}

/// `dns_refresh` when absent: a target's DNS change reaches traffic within a minute (one
/// period to notice it, at worst, plus the time to reconnect).
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(30);

impl Upstream {
    /// A plain HTTP/1.1 upstream at one `http://` origin (what a bare `upstream` gives).
    pub fn plain(authority: http::uri::Authority, base_path: String) -> Upstream {
        let target = UpstreamTarget::new(http::uri::Scheme::HTTP, authority.clone());
        Upstream {
            origin: target.origin.clone(),
            authority,
            base_path,
            targets: vec![target],
            protocol: UpstreamProtocol::Http1,
            balance: Balance::RoundRobin,
            tls: None,
            health: None,
            dns_refresh: DEFAULT_DNS_REFRESH,
        }
    }
}

/// One place a route's requests can go: `scheme://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    /// `scheme://authority`, the target's name in metrics, logs and `GET /upstreams`.
    pub origin: String,
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// The host is a DNS name, not an IP literal: it is re-resolved while the gateway runs.
    pub named: bool,
}

impl UpstreamTarget {
    pub fn new(scheme: http::uri::Scheme, authority: http::uri::Authority) -> UpstreamTarget {
        let host = authority.host();
        let named = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_err();
        UpstreamTarget {
            origin: format!("{scheme}://{authority}"),
            scheme,
            authority,
            named,
        }
    }

    pub fn is_tls(&self) -> bool {
        self.scheme == http::uri::Scheme::HTTPS
    }
}

/// `upstream_protocol`: what the gateway speaks to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (the default); ALPN offers only `http/1.1` on `https://`.
    #[default]
    Http1,
    /// HTTP/2 only: prior knowledge (h2c) on `http://`, ALPN `h2` on `https://`.
    H2,
    /// `https://`: whatever ALPN settles (`h2` preferred); `http://`: HTTP/1.1, except gRPC
    /// requests, which have no HTTP/1.1 mapping and go over h2c.
    Auto,
}

impl UpstreamProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2 => "h2",
            UpstreamProtocol::Auto => "auto",
        }
    }
}

/// `balance`: how a request picks among a route's healthy targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Each target in turn (the default).
    #[default]
    RoundRobin,
    /// The target with the fewest requests in flight (from every worker).
    LeastRequests,
    /// Sticky by user id (rendezvous hashing): one user, one target while it is healthy;
    /// requests without a user go round robin.
    UserHash,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastRequests => "least_requests",
            Balance::UserHash => "user_hash",
        }
    }
}

/// `[routes.health]`: active checks, `GET path` on every target every `interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Absolute path (and query) requested; any 2xx answer is a success.
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that mark a healthy target unhealthy.
    pub unhealthy_after: u32,
    /// Consecutive successes that mark an unhealthy target healthy again.
    pub healthy_after: u32,
}

/// What a route requires of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPolicy {
    /// A valid bearer token is required.
    Jwt,
    /// Forwarded without authentication (identity headers are still stripped).
    Public,
}

impl AuthPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthPolicy::Jwt => "jwt",
            AuthPolicy::Public => "public",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Label for logs and metrics (the prefix).
    pub name: String,
    /// Normalised prefix: starts with `/`, no trailing `/` unless it is the root.
    pub prefix: String,
    /// Lower-case host (without port) this route is limited to.
    pub host: Option<String>,
    pub upstream: Upstream,
    pub auth: AuthPolicy,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// Largest request body accepted (413 beyond); `None`: unlimited, streamed.
    pub max_body_bytes: Option<u64>,
    /// An app key is required (`[[routes]] api_key = true`), alone or with the token.
    pub api_key: bool,
    /// `[[routes.allow]]`: who may do what; `None`: every authenticated request.
    pub allow: Option<std::sync::Arc<crate::access::AccessRules>>,
    /// `rate_limit`: a bucket per user, app or IP; `None`: unlimited.
    pub rate_limit: Option<crate::ratelimit::RateSpec>,
    /// `[cors]` applies here (`[[routes]] cors = false` turns it off for this route).
    pub cors: bool,
    /// Where a WebSocket upgrade may carry its token besides `Authorization`.
    pub websocket_token: Option<WebSocketToken>,
    /// The upstream receives the client's `Authorization` (`[identity] forward_token`, or
    /// this route's own `forward_token`); `false` removes it once the token is verified.
    pub forward_token: bool,
    /// `[[routes]] dpop`: whether an unbound (bearer) token is accepted here.
    pub dpop: DpopPolicy,
    /// `[[routes]] issuers`: whose tokens are accepted here; `None`: every issuer's.
    pub issuers: Option<IssuerSet>,
}

/// A set of issuer numbers (0 the `[jwt]` issuer, `i + 1` the `i`-th `[[jwt.issuers]]`),
/// one bit each: checking a verified token against a route is one AND.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IssuerSet(u64);

impl IssuerSet {
    /// The number of the `[jwt]` issuer (`default` in route lists).
    pub const DEFAULT: u8 = 0;
    /// Issuer numbers above this do not fit (config refuses more issuers).
    pub const MAX_NUMBER: u8 = 63;

    pub fn insert(&mut self, number: u8) {
        if number <= Self::MAX_NUMBER {
            self.0 |= 1 << number;
        }
    }

    pub fn contains(self, number: u8) -> bool {
        number <= Self::MAX_NUMBER && self.0 & (1 << number) != 0
    }
}

/// `[[routes]] websocket_token`: browsers cannot set `Authorization` on a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebSocketToken {
    /// `Sec-WebSocket-Protocol: bearer, <token>`; the gateway answers `bearer`.
    Subprotocol,
    /// `?access_token=<token>` on the upgrade request.
    Query,
}

/// `[[routes]] dpop`: what a route asks of DPoP (RFC 9449). Whatever the policy, a bound
/// token (`cnf.jkt`) must come with a valid proof; the policy decides about unbound ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DpopPolicy {
    /// Only DPoP-bound tokens with a valid proof.
    Required,
    /// Bound tokens must prove; unbound bearer tokens are accepted.
    Optional,
    /// The default: as `Optional` (bound tokens still must prove, never as bearer).
    #[default]
    Off,
}

/// A path the gateway answers itself instead of forwarding: the `[signin]` endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Login,
    Refresh,
    Logout,
    LogoutAll,
}

impl Endpoint {
    /// Label for metrics and the access log.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Login => "signin:login",
            Endpoint::Refresh => "signin:refresh",
            Endpoint::Logout => "signin:logout",
            Endpoint::LogoutAll => "signin:logout-all",
        }
    }
}

/// Where the table sends a request.
#[derive(Debug, Clone, Copy)]
pub enum Target<'t> {
    /// Forwarded to this route's upstream (the index is the route's position in the table).
    Upstream(usize, &'t Route),
    /// Answered by the gateway itself.
    Gateway(Endpoint),
}

/// The one route table: the gateway's own endpoints (exact paths, any host, checked first)
/// and the proxied routes, ordered for matching: longest prefix first, host-specific before
/// host-less.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    endpoints: Vec<(String, Endpoint)>,
}

impl RouteTable {
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then_with(|| b.host.is_some().cmp(&a.host.is_some()))
        });
        RouteTable {
            routes,
            endpoints: Vec::new(),
        }
    }

    /// The same table with `endpoints` (normalised exact paths) answered by the gateway.
    pub fn with_endpoints(mut self, endpoints: Vec<(String, Endpoint)>) -> Self {
        self.endpoints = endpoints;
        self
    }

    /// Where a request for the normalised `path` on `host` goes: a gateway endpoint when the
    /// path is one, else the route [`Self::find`] picks.
    pub fn target(&self, host: Option<&str>, path: &str) -> Option<Target<'_>> {
        if let Some((_, e)) = self.endpoints.iter().find(|(p, _)| p == path) {
            return Some(Target::Gateway(*e));
        }
        self.find(host, path)
            .map(|(idx, route)| Target::Upstream(idx, route))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route for a normalised `path` on `host` (lower-case, port stripped), if any.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<(usize, &Route)> {
        self.routes.iter().enumerate().find(|(_, r)| {
            prefix_matches(&r.prefix, path)
                && match (&r.host, host) {
                    (None, _) => true,
                    (Some(want), Some(h)) => want == h,
                    (Some(_), None) => false,
                }
        })
    }
}

/// Does `prefix` match `path` on whole segments? `/public` matches `/public` and
/// `/public/x`, never `/publicity`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Normalise a configured prefix the same way request paths are normalised.
pub fn normalise_prefix(prefix: &str) -> Result<String, PrefixError> {
    if !prefix.starts_with('/') {
        return Err(PrefixError::NotAbsolute {
            prefix: prefix.into(),
        });
    }
    let mut p = normalise_path(prefix)
        .map_err(|error| PrefixError::NotNormal {
            prefix: prefix.into(),
            error,
        })?
        .into_owned();
    while p.len() > 1 && p.ends_with('/') {
        p.pop();
    }
    Ok(p)
}

/// Why a configured route prefix is refused.
/// Causes are named in the message, not chained as `source()`: a chain printer (`{:#}`, as
/// `main` prints a start-up error) would print them twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("`{prefix}` must start with /")]
    NotAbsolute { prefix: String },
    #[error("`{prefix}` cannot be normalised: {error}")]
    NotNormal { prefix: String, error: PathError },
}

/// Why a path was refused (always a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with /")]
    NotAbsolute,
    #[error("encoded slash or backslash in path")]
    EncodedSeparator,
    #[error("control character or invalid percent-encoding in path")]
    BadByte,
    #[error("dot segment climbs above the root")]
    AboveRoot,
    #[error("dot segment with path parameter")]
    DotParameter,
}

/// Normalise an origin-form path (without query). Returns the path to route on and forward,
/// borrowed when it was already normal (the common case: no allocation).
pub fn normalise_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Fast path: nothing to decode, no dot or empty segments.
    if is_plain(bytes) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut segments: Vec<String> = Vec::new();
    let trailing_slash = raw.len() > 1 && raw.ends_with('/');
    for seg in raw[1..].split('/') {
        let decoded = decode_segment(seg)?;
        let bare = decoded.split(';').next().unwrap_or("");
        match decoded.as_str() {
            "" | "." => continue,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                continue;
            }
            _ => {}
        }
        if bare == "." || bare == ".." {
            return Err(PathError::DotParameter);
        }
        segments.push(decoded);
    }
    let mut out = String::with_capacity(raw.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

fn is_plain(bytes: &[u8]) -> bool {
    let mut prev = 0u8;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'%' | b'\\' => return false,
            b'.' if prev == b'/' => {
                // `/.` starts a possible dot segment: let the slow path judge it.
                let next = bytes.get(i + 1).copied().unwrap_or(b'/');
                if next == b'/' || next == b'.' || next == b';' {
                    return false;
                }
            }
            b'/' if prev == b'/' => return false,
            0..=0x20 | 0x7f => return false,
            _ => {}
        }
        prev = b;
    }
    true
}

/// Decode the percent-encoded unreserved characters of one segment; keep every other escape
/// (upper-cased) so the upstream decodes exactly what we routed on.
fn decode_segment(seg: &str) -> Result<String, PathError> {
    let b = seg.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                let (Some(h), Some(l)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadByte);
                };
                let c = (h * 16 + l) as u8;
                match c {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0..=0x1f | 0x7f => return Err(PathError::BadByte),
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        out.push(c as char)
                    }
                    _ => {
                        out.push('%');
                        out.push_str(&format!("{c:02X}"));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::EncodedSeparator),
            0..=0x20 | 0x7f => return Err(PathError::BadByte),
            c if c >= 0x80 => return Err(PathError::BadByte),
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_unchanged() {
        for p in ["/", "/api", "/api/v1/users", "/a.b/c..d/.well-known", "/x/"] {
            assert_eq!(normalise_path(p).unwrap(), p);
        }
    }

    #[test]
    fn dot_segments_and_slashes_are_resolved() {
        let cases = [
            ("/public/../admin", "/admin"),
            ("/public/./x", "/public/x"),
            ("//admin", "/admin"),
            ("/public//x///y", "/public/x/y"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2e/admin/", "/admin/"),
            ("/public/.%2e/admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/a/%7euser", "/a/~user"),
            ("/a/b%20c", "/a/b%20c"),
            ("/a/b%3fc", "/a/b%3Fc"),
            ("/public/..", "/"),
            ("/a/.", "/a"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalise_path(raw).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn unsafe_paths_are_refused() {
        let cases = [
            ("/public/..%2fadmin", PathError::EncodedSeparator),
            ("/public%2F..%2Fadmin", PathError::EncodedSeparator),
            ("/public/..%5cadmin", PathError::EncodedSeparator),
            ("/public\\..\\admin", PathError::EncodedSeparator),
            ("/..", PathError::AboveRoot),
            ("/public/../../admin", PathError::AboveRoot),
            ("/public/..;/admin", PathError::DotParameter),
            ("/public/.;x/admin", PathError::DotParameter),
            ("/a%00b", PathError::BadByte),
            ("/a%zz", PathError::BadByte),
            ("/a%2", PathError::BadByte),
            ("*", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
        ];
        for (raw, want) in cases {
            assert_eq!(normalise_path(raw), Err(want), "{raw}");
        }
    }

    #[test]
    fn prefix_matches_whole_segments() {
        assert!(prefix_matches("/public", "/public"));
        assert!(prefix_matches("/public", "/public/x"));
        assert!(!prefix_matches("/public", "/publicity"));
        assert!(!prefix_matches("/public", "/"));
        assert!(prefix_matches("/", "/anything"));
    }

    fn route(prefix: &str, host: Option<&str>) -> Route {
        Route {
            name: prefix.into(),
            prefix: prefix.into(),
            host: host.map(Into::into),
            upstream: Upstream::plain("127.0.0.1:1".parse().unwrap(), String::new()),
            auth: AuthPolicy::Jwt,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_body_bytes: None,
            api_key: false,
            allow: None,
            rate_limit: None,
            cors: true,
            websocket_token: None,
            forward_token: true,
            dpop: DpopPolicy::Off,
            issuers: None,
        }
    }

    #[test]
    fn longest_prefix_and_host_win() {
        let t = RouteTable::new(vec![
            route("/", None),
            route("/api", None),
            route("/api/v2", None),
            route("/api", Some("a.example")),
        ]);
        assert_eq!(t.find(None, "/api/v2/x").unwrap().1.prefix, "/api/v2");
        assert_eq!(t.find(None, "/api/v1").unwrap().1.prefix, "/api");
        assert_eq!(
            t.find(Some("a.example"), "/api/v1")
                .unwrap()
                .1
                .host
                .as_deref(),
            Some("a.example")
        );
        assert_eq!(t.find(None, "/apix").unwrap().1.prefix, "/");
    }

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(normalise_prefix("/api/").unwrap(), "/api");
        assert_eq!(normalise_prefix("/").unwrap(), "/");
        assert!(normalise_prefix("api").is_err());
    }

    #[test]
    fn gateway_endpoints_match_exactly_and_before_routes() {
        let t = RouteTable::new(vec![route("/", None), route("/auth", None)])
            .with_endpoints(vec![("/auth/login".into(), Endpoint::Login)]);
        assert!(matches!(
            t.target(Some("any.example"), "/auth/login"),
            Some(Target::Gateway(Endpoint::Login))
        ));
        match t.target(None, "/auth/login/x") {
            Some(Target::Upstream(_, r)) => assert_eq!(r.prefix, "/auth"),
            other => panic!("{other:?}"),
        }
        let plain = RouteTable::new(vec![route("/", None)]);
        assert!(matches!(
            plain.target(None, "/auth/login"),
            Some(Target::Upstream(0, _))
        ));
    }
}
