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
//!
//! Bodiless idempotent requests skip hyper's connection task: they go out on a second stack
//! of plain sockets, written and read by the request's own task ([`super::wire`]). Each stack
//! keeps up to `pool_max_idle_per_host` connections.

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, HOST};
use http::{Method, Request, Response, Uri};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::{ResponseBody, UpstreamBody};
use super::connect::RequestError;
use super::idle::Stack;
use super::target::ClientSettings;
use super::wire::{self, WireBody, WireConn};

type Sender = http1::SendRequest<UpstreamBody>;

/// One worker's HTTP/1.1 connections to one target.
pub struct H1Pool {
    /// The host to connect to, without IPv6 brackets, and the port.
    host: String,
    port: u16,
    /// The target's authority, the `Host` of a request that came without one (an HTTP/2
    /// request whose client sent no `:authority`).
    authority: HeaderValue,
    /// hyper's connections, for requests with a body or an upgrade.
    idle: Arc<Stack<Sender>>,
    /// Plain sockets for the requests [`wire::eligible`] lets through.
    wire: Arc<Stack<WireConn>>,
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
            idle: Arc::new(Stack::new(s.pool_max_idle_per_host, s.pool_idle_timeout)),
            wire: Arc::new(Stack::new(s.pool_max_idle_per_host, s.pool_idle_timeout)),
            connect_timeout: s.connect_timeout,
        }
    }

    /// Send `req` (its URI may be absolute; the origin form is what goes on the wire).
    pub async fn send(
        &self,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<ResponseBody>, RequestError> {
        origin_form(req.uri_mut());
        if !req.headers().contains_key(HOST) {
            req.headers_mut().insert(HOST, self.authority.clone());
        }
        if wire::eligible(&req) {
            return self.send_wire(req).await;
        }
        let (sender, reused) = match self.checkout() {
            Some(sender) => (sender, true),
            None => (Box::pin(self.connect()).await?, false),
        };
        self.sent(sender, reused, req)
            .await
            .map(|r| r.map(ResponseBody::Left))
    }

    /// A bodiless idempotent request on a plain socket (see [`super::wire`]). When a reused
    /// connection gave nothing back at all (the upstream closed it while it sat idle), the
    /// request goes again, once, on a new connection.
    async fn send_wire(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<ResponseBody>, RequestError> {
        let mut head = Vec::with_capacity(256);
        wire::encode_head(&req, &mut head);
        let head_request = req.method() == Method::HEAD;
        drop(req);
        let (conn, reused) = match self.wire.pop(WireConn::is_idle_and_open) {
            Some(conn) => (conn, true),
            None => (WireConn::new(Box::pin(self.dial()).await?), false),
        };
        let (answer, conn) = match conn.exchange(&head, head_request).await {
            Ok(done) => done,
            Err((_, true)) if reused => {
                let conn = WireConn::new(Box::pin(self.dial()).await?);
                conn.exchange(&head, head_request)
                    .await
                    .map_err(|(e, _)| RequestError::Failed(Box::new(e)))?
            }
            Err((e, _)) => return Err(RequestError::Failed(Box::new(e))),
        };
        let body = WireBody::new(conn, answer.framing, answer.reusable, self.wire.clone());
        Ok(answer.response.map(|()| ResponseBody::Right(body)))
    }

    /// Send on `sender` and hand it back. The resend after a refusal is a boxed future of
    /// its own: inline, its state (the refused request, the error, a second send) would
    /// double the size of this future, which every request creates and moves.
    async fn sent(
        &self,
        mut sender: Sender,
        reused: bool,
        req: Request<UpstreamBody>,
    ) -> Result<Response<hyper::body::Incoming>, RequestError> {
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

    async fn resend(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<hyper::body::Incoming>, RequestError> {
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
        self.idle.pop(Sender::is_ready)
    }

    /// A new TCP connection to the target, under the connect timeout, without Nagle.
    async fn dial(&self) -> Result<TcpStream, RequestError> {
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
        Ok(stream)
    }

    async fn connect(&self) -> Result<Sender, RequestError> {
        let stream = self.dial().await?;
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
        if sender.is_ready() {
            self.idle.push(sender);
            return;
        }
        let idle = self.idle.clone();
        let mut sender = sender;
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                idle.push(sender);
            }
        });
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
