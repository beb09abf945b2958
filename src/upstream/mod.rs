//! The upstream client: where a forwarded request goes and how it gets there.
//!
//! - [`target`]: a route's targets shared by every worker (health, passive ejection with
//!   back-off, requests in flight, per-target metrics);
//! - [`balance`]: picking a target (round robin, least requests, user hash);
//! - [`connect`]: pooled connections to one target (HTTP/1.1, h2c, TLS with ALPN);
//! - [`h1`], [`wire`], [`idle`]: HTTP/1.1 to `http://` targets (hyper's connections, the
//!   bodiless requests written and read on the wire, the idle stacks both keep);
//! - [`health`]: the active health checks and DNS re-resolution, run by the gateway;
//! - [`body`]: the request body, reclaimable for a retry.
//!
//! [`Pool::send`] is the one entry point the pipeline uses. A request that could not
//! connect, or an idempotent one whose connection failed before any response byte and whose
//! body was not yet streamed, is retried once on another target; a POST or PATCH is retried
//! only when its connection could not be made (nothing was sent).

pub mod balance;
pub mod body;
pub mod connect;
pub mod h1;
pub mod health;
pub mod idle;
pub mod target;
pub mod wire;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::{PathAndQuery, Uri};
use http::{HeaderMap, Method, Request, Response, Version};
use http_body::Body as _;
use http_body_util::LengthLimitError;

pub use balance::PickContext;
pub use body::{ResponseBody, UpstreamBody};
use connect::{RequestError, Transport};
pub use target::{TargetSet, TargetState};

/// Why a request got no response from its upstream. The text is the reason for the log
/// (the client sees a generic 502/504).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, TLS handshake or certificate).
    #[error("{0}")]
    Connect(String),
    /// The connection failed or the upstream broke the protocol before a response head.
    #[error("{0}")]
    Failed(String),
    #[error("upstream did not answer in time")]
    Timeout,
    #[error("request body larger than the route allows")]
    BodyTooLarge,
}

/// Where a request went, for the `upstream` span: the target that answered (or failed
/// last) and how many requests were sent. Written by [`Pool::send_reporting`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SendReport {
    /// Index into the route's targets.
    pub target: Option<usize>,
    pub attempts: u8,
}

/// One target's clients in one worker.
struct TargetClient {
    transport: ArcSwap<Transport>,
    /// The target's DNS generation these clients were built for.
    generation: AtomicU64,
}

/// One worker's view of a route's upstream: the shared targets and this worker's pooled
/// connections to each (a pooled connection is driven by a task on the runtime that opened
/// it, so each worker keeps its own).
pub struct Pool {
    set: Arc<TargetSet>,
    clients: Vec<TargetClient>,
    /// This worker's rotation counter.
    rr: AtomicUsize,
}

/// A request as the pipeline hands it over: headers final, the URI's path and query only.
pub struct Outgoing {
    pub req: Request<UpstreamBody>,
    pub path: PathAndQuery,
    /// `content-type: application/grpc*`.
    pub grpc: bool,
}

impl Pool {
    pub fn new(set: Arc<TargetSet>) -> Pool {
        let clients = set
            .targets
            .iter()
            .map(|t| TargetClient {
                transport: ArcSwap::from_pointee(Transport::new(&t.target, &set.settings)),
                generation: AtomicU64::new(t.dns_generation.load(Ordering::Relaxed)),
            })
            .collect();
        Pool {
            set,
            clients,
            rr: AtomicUsize::new(0),
        }
    }

    pub fn targets(&self) -> &Arc<TargetSet> {
        &self.set
    }

    /// Send the request to a target the route's policy picks, retrying once on another as
    /// the module doc says, all within `timeout` (to the response head).
    pub async fn send(
        &self,
        out: Outgoing,
        user: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Response<ResponseBody>, SendError> {
        self.send_reporting(out, user, timeout, &mut SendReport::default())
            .await
    }

    /// [`Pool::send`], saying in `report` which target was used and how often.
    pub async fn send_reporting(
        &self,
        out: Outgoing,
        user: Option<&[u8]>,
        timeout: Duration,
        report: &mut SendReport,
    ) -> Result<Response<ResponseBody>, SendError> {
        // Boxed: the attempt's future is kilobytes (hyper's, the retry's state), and every
        // async fn above this one would otherwise hold it inline and copy it whole each time
        // it is created and moved (memcpy was 8.7% of an HTTP/2 request's CPU under perf).
        let inner = Box::pin(self.send_inner(out, user, report));
        match tokio::time::timeout(timeout, inner).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Timeout),
        }
    }

    async fn send_inner(
        &self,
        out: Outgoing,
        user: Option<&[u8]>,
        report: &mut SendReport,
    ) -> Result<Response<ResponseBody>, SendError> {
        let Outgoing { req, path, grpc } = out;
        if self.clients.len() == 1 {
            // One target: nowhere to retry, nothing to pick (the path of `upstream = ..`).
            *report = SendReport {
                target: Some(0),
                attempts: 1,
            };
            return self.attempt(0, req, path, grpc).await.map_err(|(e, _)| e);
        }
        let Some((first, mut ctx, now)) = self.pick_first(user) else {
            return Err(SendError::Connect("no upstream target".into()));
        };
        let (req, retry) = Retry::keep(req, &path);
        *report = SendReport {
            target: Some(first),
            attempts: 1,
        };
        let (err, connected) = match self.attempt(first, req, path, grpc).await {
            Ok(resp) => return Ok(resp),
            Err(e) => e,
        };
        let Some((req, retry_path)) = retry.request(&err, connected) else {
            return Err(err);
        };
        ctx.exclude = Some(first);
        let Some(second) = balance::pick(self.set.balance, &self.set.targets, now, &self.rr, ctx)
        else {
            return Err(err);
        };
        tracing::debug!(route = self.set.route, error = %err, from = %self.set.targets[first].target.origin, to = %self.set.targets[second].target.origin, "retrying on another upstream target");
        *report = SendReport {
            target: Some(second),
            attempts: 2,
        };
        self.attempt(second, req, retry_path, grpc)
            .await
            .map_err(|(e, _)| e)
    }

    /// The first target for a request on a route with several: the index, the pick's
    /// context (a retry excludes the index) and the clock it read.
    #[inline]
    fn pick_first<'u>(&self, user: Option<&'u [u8]>) -> Option<(usize, PickContext<'u>, u64)> {
        let now = target::now_ms();
        let ctx = PickContext {
            user,
            exclude: None,
        };
        let first = balance::pick(self.set.balance, &self.set.targets, now, &self.rr, ctx)?;
        Some((first, ctx, now))
    }

    /// What a request costs this pool besides its network I/O, for `benches/balance.rs`: on
    /// a route with several targets, the pick and the state kept for a retry (what
    /// [`Pool::send`] does before its first attempt); then, on any route, an attempt's work
    /// short of sending (the URI, the target's clients, its request counter, the in-flight
    /// count under `least_requests`, the answer's bookkeeping). Returns the target and the
    /// request as it would be sent.
    pub fn dry_run(
        &self,
        req: Request<UpstreamBody>,
        path: PathAndQuery,
        user: Option<&[u8]>,
    ) -> Result<(usize, Request<UpstreamBody>), SendError> {
        let (i, mut req, retry) = if self.clients.len() == 1 {
            (0, req, None)
        } else {
            let (first, _, _) = self
                .pick_first(user)
                .ok_or_else(|| SendError::Connect("no upstream target".into()))?;
            let (req, retry) = Retry::keep(req, &path);
            (first, req, Some(retry))
        };
        let (Some(state), Some(client)) = (self.set.targets.get(i), self.clients.get(i)) else {
            return Err(SendError::Connect("no upstream target".into()));
        };
        *req.uri_mut() = uri(&state.target, path).map_err(|(e, _)| e)?;
        let transport = client.current(state, &self.set);
        let in_flight = state.start(self.set.balance == crate::routing::Balance::LeastRequests);
        std::hint::black_box(&*transport);
        drop(in_flight);
        state.answered();
        drop(retry);
        Ok((i, req))
    }

    /// One attempt on target `i`. On error, also says whether a connection was made (so a
    /// failure after connecting can be told from one while connecting).
    async fn attempt(
        &self,
        i: usize,
        mut req: Request<UpstreamBody>,
        path: PathAndQuery,
        grpc: bool,
    ) -> Result<Response<ResponseBody>, (SendError, bool)> {
        let (Some(state), Some(client)) = (self.set.targets.get(i), self.clients.get(i)) else {
            return Err((SendError::Connect("no upstream target".into()), false));
        };
        *req.uri_mut() = uri(&state.target, path)?;
        let transport = client.current(state, &self.set);
        let _in_flight = state.start(self.set.balance == crate::routing::Balance::LeastRequests);
        match transport.request(req, grpc).await {
            Ok(resp) => {
                state.answered();
                Ok(resp)
            }
            Err(RequestError::Failed(e)) if caused_by::<LengthLimitError>(e.as_ref()) => {
                Err((SendError::BodyTooLarge, true))
            }
            Err(RequestError::Connect(e)) => {
                state.connect_failed(target::now_ms());
                Err((SendError::Connect(e), false))
            }
            Err(RequestError::Failed(e)) => {
                state.request_failed();
                Err((SendError::Failed(error_chain(e.as_ref())), true))
            }
        }
    }
}

impl TargetClient {
    /// The clients to use now: rebuilt first when the target's name resolved to other
    /// addresses since they were made (their pooled connections go to the old ones).
    #[inline]
    fn current(&self, state: &TargetState, set: &TargetSet) -> arc_swap::Guard<Arc<Transport>> {
        if state.target.named {
            let g = state.dns_generation.load(Ordering::Relaxed);
            if g != self.generation.swap(g, Ordering::Relaxed) {
                self.transport
                    .store(Arc::new(Transport::new(&state.target, &set.settings)));
            }
        }
        self.transport.load()
    }
}

/// What a second attempt needs, kept before the first: the head, the path, and the body if
/// it comes back unread.
struct Retry {
    method: Method,
    version: Version,
    headers: HeaderMap,
    path: PathAndQuery,
    /// The request had no body (nothing to take back).
    bodyless: bool,
    slot: Option<body::Slot>,
}

impl Retry {
    /// Keep what a retry of `req` needs; `req` comes back with its body made reclaimable.
    fn keep(req: Request<UpstreamBody>, path: &PathAndQuery) -> (Request<UpstreamBody>, Retry) {
        let (parts, body) = req.into_parts();
        let bodyless = body.is_end_stream();
        let (body, slot) = if bodyless {
            (body, None)
        } else {
            let (b, s) = body.reclaimable();
            (b, Some(s))
        };
        let retry = Retry {
            method: parts.method.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            path: path.clone(),
            bodyless,
            slot,
        };
        (Request::from_parts(parts, body), retry)
    }

    /// The request again, when the first attempt's failure allows a retry (see the module
    /// doc): a connection that could not be made, or an idempotent request whose connection
    /// failed, and in both cases a body that was not streamed.
    fn request(
        self,
        err: &SendError,
        connected: bool,
    ) -> Option<(Request<UpstreamBody>, PathAndQuery)> {
        let idempotent = matches!(
            self.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
        );
        let retry = match err {
            SendError::Connect(_) => true,
            SendError::Failed(_) => idempotent && connected,
            SendError::Timeout | SendError::BodyTooLarge => false,
        };
        if !retry {
            return None;
        }
        let body = if self.bodyless {
            UpstreamBody::empty()
        } else {
            // Part of the body went out: never send it again.
            UpstreamBody::from_source(self.slot.as_ref().and_then(body::take_back)?)
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers;
        Some((req, self.path))
    }
}

/// The absolute URI for `target` (the path moved in, not cloned: a clone of a fresh `Bytes`
/// allocates, and the single-target path must not).
fn uri(
    target: &crate::routing::UpstreamTarget,
    path: PathAndQuery,
) -> Result<Uri, (SendError, bool)> {
    Uri::builder()
        .scheme(target.scheme.clone())
        .authority(target.authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|e| (SendError::Failed(format!("upstream URI: {e}")), false))
}

/// Is `T` anywhere in the error's source chain?
fn caused_by<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<T>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The error and every source, `: `-separated (what the log shows, e.g. the certificate
/// problem behind a failed handshake).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{Balance, UpstreamTarget};
    use http::uri::Scheme;
    use http::HeaderValue;

    #[tokio::test]
    async fn a_dns_change_rebuilds_the_clients_of_a_named_target_only() {
        let set = Arc::new(TargetSet::detached(
            Balance::RoundRobin,
            vec![
                UpstreamTarget::new(Scheme::HTTP, "api.internal:8080".parse().unwrap()),
                UpstreamTarget::new(Scheme::HTTP, "10.0.0.1:8080".parse().unwrap()),
            ],
        ));
        let pool = Pool::new(set.clone());
        let ptr = |i: usize| Arc::as_ptr(&*pool.clients[i].current(&set.targets[i], &set));
        let (named, literal) = (ptr(0), ptr(1));
        assert_eq!(
            ptr(0),
            named,
            "no change, same clients (same pooled connections)"
        );
        for t in &set.targets {
            t.dns_generation.fetch_add(1, Ordering::Relaxed);
        }
        assert_ne!(ptr(0), named, "new addresses: new clients");
        assert_eq!(ptr(1), literal, "an IP literal never resolves");
        let rebuilt = ptr(0);
        assert_eq!(ptr(0), rebuilt, "rebuilt once per change");
    }

    #[test]
    fn a_retry_sends_the_same_head_repeated_fields_and_their_order_included() {
        let mut req = Request::new(UpstreamBody::empty());
        *req.method_mut() = Method::PUT;
        *req.version_mut() = Version::HTTP_2;
        let h = req.headers_mut();
        h.append("accept", HeaderValue::from_static("text/plain"));
        h.append("x-trace", HeaderValue::from_static("one"));
        h.append("accept", HeaderValue::from_static("application/json"));
        h.append("x-trace", HeaderValue::from_static("two"));
        let sent = req.headers().clone();
        let path = PathAndQuery::from_static("/orders/7?x=1");
        let (_first, retry) = Retry::keep(req, &path);
        let (again, again_path) = retry
            .request(&SendError::Connect("refused".into()), false)
            .expect("a refused connection is retried");
        assert_eq!(again.method(), Method::PUT);
        assert_eq!(again.version(), Version::HTTP_2);
        assert_eq!(again_path, path);
        assert_eq!(again.headers(), &sent);
        let accept: Vec<_> = again.headers().get_all("accept").iter().collect();
        assert_eq!(accept, ["text/plain", "application/json"], "order kept");
        assert_eq!(again.headers().len(), 4);
    }

    #[test]
    fn a_post_whose_connection_failed_after_connecting_is_not_retried() {
        let mut req = Request::new(UpstreamBody::empty());
        *req.method_mut() = Method::POST;
        let (_first, retry) = Retry::keep(req, &PathAndQuery::from_static("/pay"));
        assert!(retry
            .request(&SendError::Failed("reset".into()), true)
            .is_none());
    }
}
