//! Pooled HTTP/1.1 connections to one plain-TCP target (`upstream_protocol = "http1"`, the
//! default), on hyper's connection API directly.
//!
//! hyper-util's generic client races a pool checkout against a new connection on every
//! request, keys its pool by scheme and authority behind a shared lock, and rewrites the URI
//! and `Host`: about a tenth of a proxied request's instructions under callgrind. A pool of
//! one target in one worker needs none of that: a stack of idle senders (the most recently
//! used first, whose socket is warmest), a connection made when the stack has no ready one,
//! and the sender handed back once its response has been read.
//!
//! What it keeps from hyper-util: a request that a reused connection refused before sending
//! anything (the upstream closed it as the request went out) is sent again on a new
//! connection; at most `pool_max_idle_per_host` idle connections are kept; one idle past
//! `pool_idle_timeout` is closed when the pool is next used (there is no timer: a pool
//! nobody uses keeps its sockets until the upstream's own keep-alive timeout closes them);
//! WebSocket upgrades work (connections are driven with upgrades).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{HeaderValue, HOST};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::UpstreamBody;
use super::connect::RequestError;
use super::target::ClientSettings;

type Sender = http1::SendRequest<UpstreamBody>;

struct Idle {
    sender: Sender,
    since: Instant,
}

/// One worker's HTTP/1.1 connections to one target.
pub struct H1Pool {
    /// The host to connect to, without IPv6 brackets, and the port.
    host: String,
    port: u16,
    /// The target's authority, the `Host` of a request that came without one (an HTTP/2
    /// request whose client sent no `:authority`).
    authority: HeaderValue,
    idle: Arc<Mutex<VecDeque<Idle>>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

impl H1Pool {
    pub fn new(authority: &http::uri::Authority, s: &ClientSettings) -> H1Pool {
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        H1Pool {
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: HeaderValue::from_str(authority.as_str())
                .unwrap_or(HeaderValue::from_static("localhost")),
            idle: Arc::new(Mutex::new(VecDeque::new())),
            max_idle: s.pool_max_idle_per_host,
            idle_timeout: s.pool_idle_timeout,
            connect_timeout: s.connect_timeout,
        }
    }

    /// Send `req` (its URI may be absolute; the origin form is what goes on the wire).
    pub async fn send(
        &self,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, RequestError> {
        origin_form(req.uri_mut());
        if !req.headers().contains_key(HOST) {
            req.headers_mut().insert(HOST, self.authority.clone());
        }
        let (sender, reused) = match self.checkout() {
            Some(sender) => (sender, true),
            None => (Box::pin(self.connect()).await?, false),
        };
        self.sent(sender, reused, req).await
    }

    /// Send on `sender` and hand it back. The resend after a refusal is a boxed future of
    /// its own: inline, its state (the refused request, the error, a second send) would
    /// double the size of this future, which every request creates and moves.
    async fn sent(
        &self,
        mut sender: Sender,
        reused: bool,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, RequestError> {
        match sender.try_send_request(req).await {
            Ok(resp) => {
                self.give_back(sender);
                Ok(resp)
            }
            Err(mut e) => match e.take_message() {
                // Refused before a byte went out, on a connection the upstream had just
                // closed: safe to send again, once, on a new connection.
                Some(req) if reused => {
                    drop(sender);
                    Box::pin(self.resend(req)).await
                }
                _ => Err(RequestError::Failed(Box::new(e.into_error()))),
            },
        }
    }

    async fn resend(&self, req: Request<UpstreamBody>) -> Result<Response<Incoming>, RequestError> {
        let mut sender = self.connect().await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| RequestError::Failed(Box::new(e)))?;
        self.give_back(sender);
        Ok(resp)
    }

    /// The most recently used idle connection that can take a request now; closed and
    /// expired ones are dropped on the way.
    fn checkout(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(entry) = idle.pop_back() {
            if entry.sender.is_ready() && entry.since.elapsed() < self.idle_timeout {
                return Some(entry.sender);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Sender, RequestError> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(RequestError::Connect(format!(
                    "connect to {}:{}: {e}",
                    self.host, self.port
                )))
            }
            Err(_) => {
                return Err(RequestError::Connect(format!(
                    "connect to {}:{}: timed out after {:?}",
                    self.host, self.port, self.connect_timeout
                )))
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| RequestError::Connect(format!("HTTP/1.1 handshake: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with error");
            }
        });
        Ok(sender)
    }

    /// Back on the idle stack once the connection can take the next request: at once when
    /// the response had no body to read, otherwise when hyper reports it ready (a task that
    /// waits for the body to be read; a connection that closes instead is dropped).
    fn give_back(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let idle = self.idle.clone();
        let (max, timeout) = (self.max_idle, self.idle_timeout);
        if sender.is_ready() {
            push(&idle, max, timeout, sender);
            return;
        }
        let mut sender = sender;
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                push(&idle, max, timeout, sender);
            }
        });
    }
}

/// On top of the stack (the next checkout takes it), after closing the connections at the
/// bottom that sat idle past `timeout`: under steady traffic the bottom is never reached by
/// a checkout, and without this its sockets would stay open until the upstream closes them.
fn push(idle: &Mutex<VecDeque<Idle>>, max: usize, timeout: Duration, sender: Sender) {
    let now = Instant::now();
    let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
    while idle
        .front()
        .is_some_and(|oldest| now.duration_since(oldest.since) >= timeout)
    {
        idle.pop_front();
    }
    if idle.len() < max {
        idle.push_back(Idle { sender, since: now });
    }
}

/// The request target as HTTP/1.1 sends it to an origin server (RFC 9112 section 3.2.1).
fn origin_form(uri: &mut Uri) {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return;
    }
    // Moved out, not cloned: the path was built for this request.
    *uri = std::mem::take(uri)
        .into_parts()
        .path_and_query
        .map_or_else(Uri::default, Uri::from);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_uris_go_out_in_origin_form() {
        let mut u: Uri = "http://10.0.0.1:8080/a/b?c=d".parse().unwrap();
        origin_form(&mut u);
        assert_eq!(u.to_string(), "/a/b?c=d");
        let mut u: Uri = "http://api.internal/".parse().unwrap();
        origin_form(&mut u);
        assert_eq!(u.to_string(), "/");
        let mut u: Uri = "/already?x".parse().unwrap();
        origin_form(&mut u);
        assert_eq!(u.to_string(), "/already?x");
    }

    #[test]
    fn an_ipv6_literal_is_dialled_without_brackets() {
        let s = ClientSettings {
            connect_timeout: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 8,
            protocol: crate::routing::UpstreamProtocol::Http1,
            tls: None,
        };
        let p = H1Pool::new(&"[::1]:8080".parse().unwrap(), &s);
        assert_eq!((p.host.as_str(), p.port), ("::1", 8080));
        assert_eq!(p.authority, "[::1]:8080");
        let p = H1Pool::new(&"api.internal".parse().unwrap(), &s);
        assert_eq!((p.host.as_str(), p.port), ("api.internal", 80));
    }
}
