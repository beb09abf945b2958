//! The request path, in order:
//!
//! ```text
//! route -> strip spoofable headers -> check app key -> authenticate -> check issuer
//!       -> check revocation -> authorize (`[[routes.allow]]`) -> inject identity
//!       -> rate limit -> strip gateway cookies -> forward
//! ```
//!
//! The app key (routes with `api_key = true`) is checked before the bearer token: a map
//! lookup is far cheaper than a signature check, so a request without a valid key is
//! refused before it can spend the gateway's CPU on token verification.
//!
//! [`handle`] is the outer layer: it runs [`handle_inner`], logs a failure once and turns it
//! into a response. Each step below is one function that says what it may reject.
//!
//! With `[telemetry] otlp_endpoint` set, [`handle`] records the request's span and
//! [`proxy`] marks the authenticate, revocation check and upstream steps on the same
//! [`Recording`] (`telemetry::spans`); without it, each mark is one branch on an empty one.
//!
//! The `[signin]` endpoints (login, refresh, logout) are entries of the same route table,
//! answered by the gateway itself (`signin::http`): every request is routed once, on its
//! path normalised once, and counted and logged in one place ([`handle`]).

pub mod access;
pub mod cors;
pub mod dpop;
pub mod error;
pub mod forward;
pub mod headers;
pub mod identity;
pub mod limit;
pub mod websocket;
/// Route table and path normalisation live in the `routing` leaf (config builds the table).
pub use crate::routing as route;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::apikeys::{ApiKeyError, ApiKeys};
use crate::auth::cache::TokenCache;
use crate::auth::cookie::CookieAuth;
use crate::auth::dpop::Credential;
use crate::auth::issuers::{Issuer, Issuers};
use crate::auth::jwks::Refresher;
use crate::auth::jws::{Validator, Verified};
use crate::auth::AuthError;
use crate::config::{Config, Identity};
use crate::revocation::Revocations;
use crate::signin::SignIn;
use crate::telemetry::metrics::{Metrics, RouteMetrics};
use crate::telemetry::spans::{Recording, RequestInfo, Step, Tracer, UpstreamCall};
use crate::telemetry::trace::{TraceContext, TRACEPARENT};
use crate::upstream::TargetSet;
use error::GatewayError;
use forward::{ConnInfo, UpstreamClient};
use identity::Protected;
use route::{AuthPolicy, Endpoint, Route, RouteTable, Target};

/// The body of every response the gateway sends: the upstream's, streamed, or its own.
pub type ResBody = Either<crate::upstream::ResponseBody, Full<Bytes>>;

/// What every worker shares: routes, keys, caches, revocations, metrics.
pub struct Shared {
    pub routes: RouteTable,
    pub validator: Arc<Validator>,
    /// The verified-token cache (`jwt.cache_size`; absent when it is 0).
    cache: Option<TokenCache>,
    pub identity: Identity,
    protected: Protected,
    pub revocations: Arc<Revocations>,
    /// App keys; the same set across reloads.
    pub api_keys: Arc<ApiKeys>,
    /// `[api_keys] header`: where a client sends its app key.
    api_key_header: HeaderName,
    /// `[api_keys] client_header`: where the upstream gets the app id.
    client_header: HeaderName,
    pub metrics: Arc<Metrics>,
    /// Route labels for metrics and logs, same order as `routes`.
    route_labels: Vec<&'static str>,
    access_log: bool,
    /// `[signin]`: login, refresh and logout answered by the gateway itself.
    pub signin: Option<Arc<SignIn>>,
    /// `[signin.cookies]`: cookie mode is on (and sign-in started), so a request without
    /// `Authorization` may authenticate by cookie.
    cookie_auth: Option<CookieAuth>,
    /// `rate_limit` buckets by route index (shared by every worker; new with each config).
    limiters: Vec<Option<Arc<crate::ratelimit::Limiter>>>,
    /// Cluster mode: the fleet-wide buckets in Redis (the same across reloads).
    fleet: Option<Arc<crate::ratelimit::Fleet>>,
    /// `[cors]`: cross-origin browser clients (see [`cors`]); `None` costs one branch.
    cors: Option<crate::config::cors::Cors>,
    /// `[dpop]`: proofs for DPoP-bound tokens (RFC 9449) and their replay cache.
    dpop: dpop::DpopGate,
    /// Each route's upstream targets (same order as `routes`), shared by every worker, the
    /// health checker and admin's `GET /upstreams`.
    pub upstreams: Vec<Arc<TargetSet>>,
    /// `[telemetry] otlp_endpoint`: the span recorder (the same across reloads); `None`
    /// costs one branch per request.
    tracer: Option<Arc<Tracer>>,
}

impl Shared {
    /// Build the shared request-path state; `config.jwt.keys` moves into the validator, and
    /// `jwks` (the running `[jwt.jwks]` refresher, owned by the server) joins it, as do
    /// `issuer_keys`, the refreshers of `config.jwt.issuers` in the same order; `fleet` is
    /// the cluster-mode rate-limit link (the same across reloads).
    pub fn new(
        config: &mut Config,
        revocations: Arc<Revocations>,
        api_keys: Arc<ApiKeys>,
        metrics: Arc<Metrics>,
        jwks: Option<Arc<Refresher>>,
        issuer_keys: Vec<Arc<Refresher>>,
        fleet: Option<Arc<crate::ratelimit::Fleet>>,
    ) -> Self {
        let keys = std::mem::take(&mut config.jwt.keys);
        let issuers = (!config.jwt.issuers.is_empty()).then(|| {
            let list = config
                .jwt
                .issuers
                .iter()
                .zip(issuer_keys)
                .map(|(s, keys)| Issuer {
                    name: s.name.clone(),
                    iss: s.issuer.clone(),
                    audience: s.audience.clone(),
                    leeway: s.leeway_secs,
                    user_claim: s.user_claim.clone(),
                    keys,
                })
                .collect();
            Arc::new(Issuers { list })
        });
        let validator = Arc::new(Validator {
            keys,
            issuer: config.jwt.issuer.clone(),
            audience: config.jwt.audience.clone(),
            leeway: config.jwt.leeway_secs,
            require_exp: config.jwt.require_exp,
            max_token_bytes: config.jwt.max_token_bytes,
            user_claim: config.identity.user_claim.clone(),
            extra_claims: config
                .identity
                .claims
                .iter()
                .map(|(_, c)| c.clone())
                .collect(),
            jwe: config.jwt.decryption_keys.clone(),
            jwks,
            grants: config.grants.clone(),
            issuers,
        });
        // Sign-in signs with a key of the validator's set and verifies logouts with it.
        let signin = config.signin.take().and_then(|settings| {
            match SignIn::new(settings, validator.clone(), &config.jwt, &revocations) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    tracing::error!(error = %e, "sign-in cannot start; its endpoints are disabled");
                    None
                }
            }
        });
        // Every algorithm, HMAC too: a hit (SHA-256 of the token, one map lookup) costs a
        // fraction of parsing, decoding and checking the token again (see `auth::cache`).
        let cache = (config.jwt.cache_size > 0).then(|| TokenCache::new(config.jwt.cache_size));
        let cookie_auth = signin
            .as_ref()
            .and_then(|s| s.cookies.as_ref())
            .map(|c| c.names.clone());
        let route_labels: Vec<&'static str> =
            config.routes.iter().map(|r| intern(&r.name)).collect();
        let upstreams = config
            .routes
            .iter()
            .zip(&route_labels)
            .map(|(r, label)| Arc::new(TargetSet::new(label, r, &config.limits, &metrics)))
            .collect();
        Shared {
            tracer: None,
            upstreams,
            limiters: limit::limiters(&config.routes),
            fleet,
            cors: config.cors.clone(),
            dpop: dpop::DpopGate::new(
                &config.dpop,
                config.jwt.leeway_secs,
                match revocations.backing() {
                    crate::revocation::Backing::Redis(cluster) => {
                        Some(dpop::SharedReplay::new(cluster))
                    }
                    _ => None,
                },
            ),
            cookie_auth,
            route_labels,
            access_log: config.log.access_log,
            // Sign-in's endpoints are entries of the one table, so a request is routed once.
            routes: match &signin {
                Some(s) => config.routes.clone().with_endpoints(s.endpoints()),
                None => config.routes.clone(),
            },
            // The client header is an identity header too: stripped on every route.
            protected: Protected::new(
                &config.identity,
                std::slice::from_ref(&config.api_keys.client_header),
            ),
            api_key_header: config.api_keys.header.clone(),
            client_header: config.api_keys.client_header.clone(),
            api_keys,
            identity: config.identity.clone(),
            validator,
            cache,
            revocations,
            metrics,
            signin,
        }
    }
}

impl Shared {
    /// Record and export spans through `tracer` (the gateway's one exporter).
    pub fn with_tracer(mut self, tracer: Option<Arc<Tracer>>) -> Self {
        self.tracer = tracer;
        self
    }

    /// The `[jwt.jwks]` key set changed: forget cached verifications, so a token signed by a
    /// key the issuer retired stops passing now rather than at its `exp`.
    pub fn key_set_changed(&self) {
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }

    pub fn route_label(&self, idx: usize) -> &'static str {
        self.route_labels.get(idx).copied().unwrap_or("-")
    }
}

/// Route labels live for the process (metrics label sets need `'static`); interning keeps a
/// reload that repeats a route name from leaking it again.
fn intern(name: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(n) = names.get(name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// One worker's request-path state: the shared part plus its own upstream connection pools
/// (a pooled connection is driven by a task on the runtime that opened it, so each
/// thread-per-core worker keeps its own).
pub struct State {
    pub shared: Arc<Shared>,
    /// One upstream pool per route, same order as `shared.routes`.
    clients: Vec<UpstreamClient>,
    /// Metric handles per route, resolved once instead of looked up per request.
    route_metrics: Vec<RouteMetrics>,
}

impl State {
    pub fn new(shared: Arc<Shared>) -> Self {
        let clients = shared
            .upstreams
            .iter()
            .map(|set| UpstreamClient::new(set.clone()))
            .collect();
        let route_metrics = shared
            .route_labels
            .iter()
            .map(|label| shared.metrics.route_handles(label))
            .collect();
        State {
            shared,
            clients,
            route_metrics,
        }
    }
}

impl std::ops::Deref for State {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// What the outer layer needs to know about a request once the checklist has run.
struct Outcome {
    route: &'static str,
    route_idx: Option<usize>,
    user: Option<HeaderValue>,
    result: Result<Response<ResBody>, GatewayError>,
    /// `[cors]` applies to this response: [`cors::decorate`] runs on it.
    cors: bool,
}

/// Serve one request: never fails, every error becomes a response. Logs once (and writes the
/// access log line when enabled), counts, and returns the request id to the client.
pub async fn handle(
    state: Arc<State>,
    mut req: Request<Incoming>,
    conn: ConnInfo,
) -> Result<Response<ResBody>, Infallible> {
    let start = Instant::now();
    let method = req.method().clone();
    let trace = match &state.tracer {
        Some(tracer) => tracer.trace_of(req.headers_mut()),
        None => TraceContext::of_request(req.headers_mut()),
    };
    let request_id = request_id(req.headers_mut(), &trace);
    let mut spans = match &state.tracer {
        Some(tracer) => {
            let info = RequestInfo {
                method: &method,
                path: req.uri().path(),
                tls: conn.tls,
                version: req.version(),
                peer: conn.peer.ip(),
            };
            tracer.begin(&trace, req.headers(), info)
        }
        None => Recording::OFF,
    };
    let access = state.access_log.then(|| req.uri().path().to_owned());
    let grpc = forward::is_grpc(&req);
    let origin = match &state.cors {
        Some(_) => req.headers().get(http::header::ORIGIN).cloned(),
        None => None,
    };
    let Outcome {
        route,
        route_idx,
        user,
        result,
        cors,
    } = handle_inner(&state, req, &conn, &mut spans).await;
    let mut refusal = None;
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            refusal = Some(e.reason());
            match &e {
                GatewayError::UpstreamConnect(_)
                | GatewayError::Upstream(_)
                | GatewayError::UpstreamTimeout => {
                    state.metrics.upstream_error(e.reason());
                    tracing::warn!(route, %method, reason = e.reason(), error = %e, request_id = request_id.to_str().unwrap_or("-"), trace_id = trace.trace_id(), "upstream failure")
                }
                GatewayError::Auth(_)
                | GatewayError::Csrf
                | GatewayError::ApiKey(_)
                | GatewayError::Forbidden(_)
                | GatewayError::Dpop(_) => {
                    state.metrics.auth_failure(e.reason());
                    tracing::debug!(route, %method, reason = e.reason(), request_id = request_id.to_str().unwrap_or("-"), trace_id = trace.trace_id(), "request refused")
                }
                _ => {
                    tracing::debug!(route, %method, reason = e.reason(), request_id = request_id.to_str().unwrap_or("-"), trace_id = trace.trace_id(), "request refused")
                }
            }
            if grpc {
                e.to_grpc_response().map(Either::Right)
            } else {
                error::with_context(e.to_response(), &request_id, trace.trace_id())
                    .map(Either::Right)
            }
        }
    };
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    match route_idx.and_then(|i| state.route_metrics.get(i)) {
        Some(m) => m.record(status, elapsed),
        None => state.metrics.request(route, status, elapsed),
    }
    if let Some(tracer) = &state.tracer {
        tracer.finish(spans, route, status, refusal);
    }
    if let Some(path) = access {
        // The path as the client sent it (no query: it may carry secrets); never a token.
        tracing::info!(
            target: "portcullis::access",
            route,
            %method,
            path,
            status,
            latency_us = elapsed.as_micros() as u64,
            user = user.as_ref().and_then(|u| u.to_str().ok()).unwrap_or("-"),
            request_id = request_id.to_str().unwrap_or("-"),
            trace_id = trace.trace_id(),
            peer = %conn.peer.ip(),
            "access"
        );
    }
    if let (true, Some(settings)) = (cors, &state.cors) {
        cors::decorate(settings, origin.as_ref(), resp.headers_mut());
    }
    resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
    Ok(resp)
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id: the client's `x-request-id` when it is a sane token (1-128 visible
/// ASCII characters), otherwise 128 random bits in hex: the trace id when the gateway just
/// started the trace (this request is its root, so the id is as unique and one draw serves
/// both). Set on the request, so the upstream sees the same id the client gets back.
fn request_id(headers: &mut http::HeaderMap, trace: &TraceContext) -> HeaderValue {
    let mut given = headers.get_all(&X_REQUEST_ID).iter();
    if let (Some(v), None) = (given.next(), given.next()) {
        let b = v.as_bytes();
        if (1..=128).contains(&b.len()) && b.iter().all(|c| c.is_ascii_graphic()) {
            let mut v = v.clone();
            v.set_sensitive(true);
            return v;
        }
    }
    let mut v = if trace.created {
        HeaderValue::from_str(trace.trace_id()).unwrap_or(HeaderValue::from_static("-"))
    } else {
        let id: [u8; 16] = rand::random();
        let mut text = [0u8; 32];
        crate::hex::encode_into(&id, &mut text);
        HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("-"))
    };
    // Unique per request: "sensitive" keeps HPACK from inserting it into the HTTP/2 dynamic
    // table, where every new id evicted a useful entry and lengthened the encoder's search
    // (RFC 7541 section 7.1.3 never-indexed literal; no effect on HTTP/1.1).
    v.set_sensitive(true);
    headers.insert(X_REQUEST_ID.clone(), v.clone());
    v
}

/// The one walk: route once, then either the gateway's own endpoint or the checklist.
async fn handle_inner(
    state: &State,
    req: Request<Incoming>,
    conn: &ConnInfo,
    spans: &mut Recording,
) -> Outcome {
    let (target, path) = match route(state, &req) {
        Ok(found) => found,
        Err(e) => {
            return Outcome {
                route: "-",
                route_idx: None,
                user: None,
                result: Err(e),
                cors: state.cors.is_some(),
            }
        }
    };
    if let Some(answer) = answer_preflight(state, &target, &req) {
        return answer;
    }
    match target {
        Target::Gateway(endpoint) => answer_endpoint(state, endpoint, req, conn).await,
        Target::Upstream(idx, route) => proxy(state, idx, route, path, req, conn, spans).await,
    }
}

/// `[cors]` on and the route not opted out: a preflight is answered here, before the
/// checklist (it carries no credentials). The answer is complete, so it is not decorated
/// again; a refused one (403) must carry no `Access-Control-Allow-*` at all.
fn answer_preflight(
    state: &State,
    target: &Target<'_>,
    req: &Request<Incoming>,
) -> Option<Outcome> {
    let settings = state.cors.as_ref()?;
    let (route, route_idx) = match target {
        Target::Upstream(idx, route) if route.cors => (state.route_label(*idx), Some(*idx)),
        Target::Upstream(..) => return None,
        Target::Gateway(endpoint) => (endpoint.label(), None),
    };
    if !cors::is_preflight(req) {
        return None;
    }
    Some(Outcome {
        route,
        route_idx,
        user: None,
        result: cors::preflight(settings, req).map(|r| r.map(Either::Right)),
        cors: false,
    })
}

/// A `[signin]` endpoint: answered by sign-in, which logs its own refusals (never with a
/// credential); counted and access-logged by [`handle`] like every request.
async fn answer_endpoint(
    state: &State,
    endpoint: Endpoint,
    req: Request<Incoming>,
    conn: &ConnInfo,
) -> Outcome {
    let (result, user) = match &state.signin {
        Some(signin) => {
            // Login and refresh bind what they issue to a DPoP key the request proves.
            let proof = match endpoint {
                Endpoint::Login | Endpoint::Refresh => {
                    let now = unix_now();
                    let (proof, ticket) = state.dpop.signin_proof(&req, conn.tls, now);
                    state.dpop.confirm_signin(proof, ticket, now).await
                }
                _ => crate::signin::dpop::Proof::Absent,
            };
            // Boxed: sign-in's future (password hashing, session stores) is larger than the
            // whole proxy path's, and every request's future would otherwise carry its size.
            let (resp, user) = Box::pin(crate::signin::http::serve(
                signin,
                endpoint,
                req,
                conn.peer.ip(),
                proof,
            ))
            .await;
            let user = user.and_then(|u| HeaderValue::from_str(&u).ok());
            (Ok(resp.map(Either::Right)), user)
        }
        // The table names sign-in endpoints only when sign-in started.
        None => (Err(GatewayError::NoRoute), None),
    };
    Outcome {
        route: endpoint.label(),
        route_idx: None,
        user,
        result,
        cors: state.cors.is_some(),
    }
}

/// The checklist of a proxied route: body size, headers, app key, token, revocation,
/// identity, forward. `spans` records the authenticate, revocation and upstream steps.
async fn proxy(
    state: &State,
    idx: usize,
    route: &Route,
    path: Option<String>,
    mut req: Request<Incoming>,
    conn: &ConnInfo,
    spans: &mut Recording,
) -> Outcome {
    let label = state.route_label(idx);
    let cors = state.cors.is_some() && route.cors;
    let fail = |e: GatewayError, user| Outcome {
        route: label,
        route_idx: Some(idx),
        user,
        result: Err(e),
        cors,
    };
    if let Err(e) = check_body_size(route, &req) {
        return fail(e, None);
    }
    // Hop-by-hop headers go first: a client naming `x-user-id` in `Connection` must not be
    // able to delete the identity the gateway is about to inject.
    let headers::HopByHop {
        upgrade,
        te_trailers,
    } = headers::strip_request_hop_by_hop(req.headers_mut());
    strip_spoofable(state, &mut req);
    let app = if route.api_key {
        match check_api_key(state, &mut req) {
            Ok(app) => Some(app),
            Err(e) => return fail(e.into(), None),
        }
    } else {
        None
    };
    let mut user = None;
    let mut answer_bearer = false;
    if route.auth == AuthPolicy::Jwt {
        // `websocket_token`: taken out of the request here, so it is never forwarded.
        let ws_token = match (&upgrade, route.websocket_token) {
            (Some(_), Some(mode)) => {
                match websocket::take_token(mode, &mut req, state.validator.max_token_bytes) {
                    Ok(t) => t.map(|t| (mode, t)),
                    Err(e) => return fail(e.into(), None),
                }
            }
            _ => None,
        };
        // Before the token: a hijacked upgrade must not even learn whether the cookie is valid.
        if upgrade.is_some()
            && ws_token.is_none()
            && websocket::by_cookie(state.cookie_auth.is_some(), req.headers())
        {
            if let Err(e) = websocket::check_origin(req.headers(), conn.tls, state.cors.as_ref()) {
                return fail(e, None);
            }
        }
        spans.start(Step::Authenticate);
        let found = match &ws_token {
            // A token from the upgrade request is a bearer credential: a DPoP-bound one is
            // refused here as it would be in `Authorization: Bearer`.
            // A bearer credential never carries a proof, so it never needs a ticket.
            Some((_, t)) => verify(state, t).map_err(GatewayError::from).and_then(|v| {
                let _no_proof = state.dpop.check(
                    route.dpop,
                    &req,
                    conn.tls,
                    crate::auth::dpop::Credential::Bearer(t),
                    &v,
                    unix_now(),
                )?;
                Ok(v)
            }),
            None => match authenticate(state, route, &req, conn) {
                // Boxed: the shared replay check (a Redis call) would otherwise add its
                // size to every request's future; only DPoP requests pay for the box.
                Ok((v, Some(ticket))) => Box::pin(state.dpop.confirm(ticket, unix_now()))
                    .await
                    .map(|()| v)
                    .map_err(GatewayError::from),
                Ok((v, None)) => Ok(v),
                Err(e) => Err(e),
            },
        };
        answer_bearer = matches!(ws_token, Some((route::WebSocketToken::Subprotocol, _)));
        let found = found.and_then(|v| check_issuer(route, v).map_err(GatewayError::from));
        spans.end(
            Step::Authenticate,
            found.as_ref().err().map(GatewayError::reason),
        );
        let verified = found.and_then(|v| {
            spans.start(Step::Revocation);
            let checked = check_revocation(state, v);
            spans.end(
                Step::Revocation,
                checked.as_ref().err().map(GatewayError::reason),
            );
            checked
        });
        let verified = match verified {
            Ok(v) => v,
            Err(e) => return fail(e, None),
        };
        if let Err(e) = access::authorize(route, req.method(), &verified) {
            return fail(e, Some(verified.user.clone()));
        }
        inject_identity(state, &mut req, &verified);
        if !route.forward_token {
            strip_token(&mut req);
        }
        user = Some(verified.user.clone());
    }
    let budget = state
        .limiters
        .get(idx)
        .and_then(Option::as_deref)
        .map(|local| limit::Budget {
            local,
            fleet: state.fleet.as_deref(),
            route: label,
            metrics: &state.metrics,
        });
    if let Err(e) = limit::check(budget, user.as_ref(), app.as_ref(), conn).await {
        return fail(e, user);
    }
    if let Some(app) = app {
        inject_client(state, &mut req, app);
    }
    strip_gateway_cookies(state, &mut req);
    dpop::strip(req.headers_mut());
    // Export on and sampled: the upstream's span hangs under the gateway's `upstream` span.
    if let Some(traceparent) = spans.start_upstream() {
        req.headers_mut().insert(TRACEPARENT.clone(), traceparent);
    }
    let mut report = crate::upstream::SendReport::default();
    let result = forward::forward(
        &state.clients[idx],
        route,
        req,
        path.as_deref(),
        conn,
        upgrade,
        te_trailers,
        user.as_ref(),
        &mut report,
    )
    .await;
    spans.end_upstream(
        || UpstreamCall {
            target: report
                .target
                .and_then(|i| state.upstreams.get(idx)?.targets.get(i))
                .map(|t| t.target.authority.clone()),
            attempts: report.attempts,
            status: result.as_ref().ok().map(|r| r.status().as_u16()),
        },
        result.as_ref().err().map(GatewayError::reason),
    );
    let result = result.map(|r| r.map(Either::Left));
    // The client offered `bearer, <token>`: a browser fails the handshake unless the server
    // selects one of the offered subprotocols (RFC 6455 section 4.1), and the upstream never
    // saw those two.
    let result = match result {
        Ok(mut r) if answer_bearer && r.status() == http::StatusCode::SWITCHING_PROTOCOLS => {
            if !r
                .headers()
                .contains_key(http::header::SEC_WEBSOCKET_PROTOCOL)
            {
                r.headers_mut().insert(
                    http::header::SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_static(websocket::BEARER_PROTOCOL),
                );
            }
            Ok(r)
        }
        other => other,
    };
    Outcome {
        route: label,
        route_idx: Some(idx),
        user,
        result,
        cors,
    }
}

/// Refuse a body the route does not allow, when its size is declared up front. Rejects with
/// 413; a chunked body is cut at the limit while streaming instead (see `forward`).
fn check_body_size(route: &Route, req: &Request<Incoming>) -> Result<(), GatewayError> {
    let Some(limit) = route.max_body_bytes else {
        return Ok(());
    };
    match req.body().size_hint().exact() {
        Some(n) if n > limit => Err(GatewayError::PayloadTooLarge),
        _ => Ok(()),
    }
}

/// Normalise the path (the only time it is normalised) and find where it goes: a gateway
/// endpoint or a route. Rejects: 400 for a path that cannot be normalised safely, for an
/// HTTP/1.1 request without exactly one `Host` (RFC 9112 section 3.2: a second copy could
/// steer an upstream to another virtual host than the one routed on), for an HTTP/2 request
/// whose `Host` disagrees with `:authority` ([`check_authority`]), 404 when nothing matches.
fn route<'s>(
    state: &'s State,
    req: &Request<Incoming>,
) -> Result<(Target<'s>, Option<String>), GatewayError> {
    let path = route::normalise_path(req.uri().path())?;
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(GatewayError::BadRequest("more than one Host header")),
        (None, _) if req.version() == http::Version::HTTP_11 => {
            return Err(GatewayError::BadRequest("Host header required"))
        }
        _ => {}
    }
    check_authority(req)?;
    let host = request_host(req);
    let target = state
        .routes
        .target(host.as_deref(), &path)
        .ok_or(GatewayError::NoRoute)?;
    // `None`: the path was already normal and is forwarded as it came.
    let rewritten = match path {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(p) => Some(p),
    };
    Ok((target, rewritten))
}

/// An HTTP/2 request carrying both `:authority` and a `Host` that names another host is
/// malformed (RFC 9113 section 8.3.1): routing reads one, the upstream and the logs could
/// read the other. Rejects with 400 (a response, not a stream reset). Compared
/// case-insensitively, port included.
fn check_authority(req: &Request<Incoming>) -> Result<(), GatewayError> {
    if req.version() != http::Version::HTTP_2 {
        return Ok(());
    }
    let (Some(authority), Some(host)) =
        (req.uri().authority(), req.headers().get(http::header::HOST))
    else {
        return Ok(());
    };
    if host
        .as_bytes()
        .eq_ignore_ascii_case(authority.as_str().as_bytes())
    {
        Ok(())
    } else {
        Err(GatewayError::BadRequest(
            ":authority and Host name different hosts",
        ))
    }
}

/// Remove every client-supplied identity header. Runs on every route, public ones too.
/// Never rejects.
fn strip_spoofable(state: &State, req: &mut Request<Incoming>) {
    state.protected.strip(req.headers_mut());
}

/// Take the app key out of the request (the upstream never needs the secret) and find its
/// app. Rejects with 401: no key (`ApiKey` challenge), or a key that is malformed, sent
/// twice, wrong or revoked (`error="invalid_key"`, one answer for all of them).
fn check_api_key(state: &State, req: &mut Request<Incoming>) -> Result<HeaderValue, ApiKeyError> {
    let app = state.api_keys.check(req.headers(), &state.api_key_header);
    req.headers_mut().remove(&state.api_key_header);
    app
}

/// Set the client header to the accepted key's app id. Never rejects.
fn inject_client(state: &State, req: &mut Request<Incoming>, app: HeaderValue) {
    req.headers_mut().insert(state.client_header.clone(), app);
}

/// A verified token, fresh from verification or shared from the cache.
// Lives on the stack for one request; boxing `Fresh` would add an allocation to the HMAC path.
#[allow(clippy::large_enum_variant)]
enum Authenticated {
    Fresh(Verified),
    Cached(Arc<Verified>),
}

impl std::ops::Deref for Authenticated {
    type Target = Verified;
    fn deref(&self) -> &Verified {
        match self {
            Authenticated::Fresh(v) => v,
            Authenticated::Cached(v) => v,
        }
    }
}

/// Find and verify the bearer token (or find it in the verified-token cache, where `exp` is
/// checked again), then apply the DPoP rules. Rejects with 401: no token (bare challenge), a
/// token that fails any check (`invalid_token`), or a DPoP rule failing (`DPoP` challenge,
/// see [`dpop::DpopGate::check`]).
///
/// The token is the `Authorization: Bearer` or `Authorization: DPoP` one. In cookie mode a
/// request with no `Authorization` header at all uses the access cookie instead (a bearer
/// credential), and a state-changing one (not GET, HEAD, OPTIONS) must then carry the CSRF
/// header matching the CSRF cookie, else 403. A request with `Authorization` is never read
/// for cookies, so it is never subject to CSRF; a browser attaches cookies on its own, not
/// that header.
/// A proof that passed comes back with its [`dpop::Ticket`], which the caller confirms
/// (cluster-wide replay cache) before the request goes on.
fn authenticate(
    state: &State,
    route: &Route,
    req: &Request<Incoming>,
    conn: &ConnInfo,
) -> Result<(Authenticated, Option<dpop::Ticket>), GatewayError> {
    let headers = req.headers();
    let max = state.validator.max_token_bytes;
    let credential = match &state.cookie_auth {
        Some(cookies) if !headers.contains_key(http::header::AUTHORIZATION) => {
            Credential::Bearer(cookies.access_token(req.method(), headers, max)?)
        }
        _ => crate::auth::dpop::credential(headers, max)?,
    };
    let token = match credential {
        Credential::Bearer(t) | Credential::Dpop(t) => t,
    };
    let verified = verify(state, token)?;
    let ticket = state
        .dpop
        .check(route.dpop, req, conn.tls, credential, &verified, unix_now())?;
    Ok((verified, ticket))
}

/// Verify `token`, through the verified-token cache when there is one.
fn verify(state: &State, token: &str) -> Result<Authenticated, AuthError> {
    let now = unix_now();
    let Some(cache) = &state.cache else {
        return state.validator.verify(token, now).map(Authenticated::Fresh);
    };
    let key = TokenCache::key(token);
    if let Some(hit) = cache.get(&key, now) {
        return hit.map(Authenticated::Cached);
    }
    let generation = cache.generation();
    let v = Arc::new(state.validator.verify(token, now)?);
    cache.insert(key, v.clone(), generation);
    Ok(Authenticated::Cached(v))
}

/// `[[routes]] issuers`: the token's issuer must be one the route accepts. Rejects with 401
/// `invalid_token` (as a token of an unknown issuer is): to this route it is not a token.
fn check_issuer(route: &Route, v: Authenticated) -> Result<Authenticated, AuthError> {
    match route.issuers {
        Some(set) if !set.contains(v.issuer) => Err(AuthError::Issuer),
        _ => Ok(v),
    }
}

/// Consult the revocation dictionary (O(1), lock-free reads). Rejects with 401
/// `token revoked`, or, in cluster mode before the first load from Redis (when every token
/// counts as revoked), with 503: the revocation state is unavailable, not the token revoked.
fn check_revocation(state: &State, v: Authenticated) -> Result<Authenticated, GatewayError> {
    if state.revocations.is_revoked(&v.ids()) {
        if !state.revocations.is_loaded() {
            return Err(GatewayError::RevocationUnavailable);
        }
        return Err(AuthError::Revoked.into());
    }
    Ok(v)
}

/// Set the user and claim headers from the verified token. Never rejects.
fn inject_identity(state: &State, req: &mut Request<Incoming>, v: &Verified) {
    identity::inject(req.headers_mut(), &state.identity, v);
}

/// `forward_token = false`: remove the `Authorization` the token came in (bearer or DPoP),
/// so upstream logs and debug dumps never hold a live token. Runs after `authenticate` on
/// a `jwt` route (a public route's `Authorization` is the upstream's business). Never
/// rejects.
fn strip_token(req: &mut Request<Incoming>) {
    req.headers_mut().remove(http::header::AUTHORIZATION);
}

/// Cookie mode: remove the access and refresh cookies, so no upstream ever holds a gateway
/// credential. Runs on every route, public ones too, after `authenticate` has read them.
/// Never rejects.
fn strip_gateway_cookies(state: &State, req: &mut Request<Incoming>) {
    if let Some(cookies) = &state.cookie_auth {
        cookies.strip(req.headers_mut());
    }
}

/// The request's host, lower-cased and without port: `Host` for HTTP/1.1, the URI authority
/// (`:authority`) for HTTP/2.
/// Borrowed when it is already lower-case (nearly always), so routing allocates nothing.
fn request_host(req: &Request<Incoming>) -> Option<std::borrow::Cow<'_, str>> {
    let raw = match req.headers().get(http::header::HOST) {
        Some(h) => h.to_str().ok()?,
        None => req.uri().authority()?.as_str(),
    };
    let host = match raw.strip_prefix('[') {
        // IPv6 literal: `[::1]:8443`.
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        },
    };
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    })
}

pub use crate::clock::unix_now;
