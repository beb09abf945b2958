//! Connections to one target: a pooled hyper client over plain TCP (`http://`) or rustls
//! (`https://`, SNI from the URL host, ALPN from `upstream_protocol`), speaking HTTP/1.1,
//! HTTP/2 by prior knowledge (h2c) or whatever ALPN settles.

use std::time::Duration;

use http::header::{HeaderValue, COOKIE};
use http::{Request, Response, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::{ResponseBody, UpstreamBody};
use super::h1::H1Pool;
use super::target::ClientSettings;
use crate::routing::{UpstreamProtocol, UpstreamTarget};

/// The pooled clients of one target, as one worker holds them.
pub struct Transport {
    /// Every request but those `grpc` takes.
    main: Conn,
    /// `upstream_protocol = "auto"` on `http://`: gRPC requests, which have no HTTP/1.1
    /// mapping, go over h2c.
    grpc: Option<Conn>,
}

/// Why a request got no response, as the pool tells connect failures from the rest.
#[derive(Debug)]
pub enum RequestError {
    /// No connection could be made (nothing was sent).
    Connect(String),
    /// The connection failed, or the upstream broke the protocol, after connecting.
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl RequestError {
    fn from_client(e: hyper_util::client::legacy::Error) -> RequestError {
        if e.is_connect() {
            RequestError::Connect(super::error_chain(&e))
        } else {
            RequestError::Failed(Box::new(e))
        }
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Connect(e) => f.write_str(e),
            RequestError::Failed(e) => f.write_str(&super::error_chain(e.as_ref())),
        }
    }
}

enum Conn {
    /// `http://` over HTTP/1.1: our own pool (see [`super::h1`]).
    Http1(H1Pool),
    Plain {
        client: Client<HttpConnector, UpstreamBody>,
        version: Version,
    },
    Tls {
        client: Client<HttpsConnector<HttpConnector>, UpstreamBody>,
        version: Version,
        /// ALPN may settle on HTTP/2 (`h2` or `auto`).
        may_be_h2: bool,
    },
}

impl Transport {
    pub fn new(target: &UpstreamTarget, s: &ClientSettings) -> Transport {
        match (target.is_tls(), s.protocol) {
            (false, UpstreamProtocol::Http1) => Transport {
                main: Conn::Http1(H1Pool::new(&target.authority, s)),
                grpc: None,
            },
            (false, UpstreamProtocol::H2) => Transport {
                main: plain(s, true),
                grpc: None,
            },
            (false, UpstreamProtocol::Auto) => Transport {
                main: Conn::Http1(H1Pool::new(&target.authority, s)),
                grpc: Some(plain(s, true)),
            },
            (true, p) => Transport {
                main: tls(s, p),
                grpc: None,
            },
        }
    }

    /// Send `req` (absolute URI: the target's scheme and authority). `grpc`: the request
    /// is a gRPC call.
    pub async fn request(
        &self,
        mut req: Request<UpstreamBody>,
        grpc: bool,
    ) -> Result<Response<ResponseBody>, RequestError> {
        join_cookies(req.headers_mut());
        let conn = match (&self.grpc, grpc) {
            (Some(h2c), true) => h2c,
            _ => &self.main,
        };
        // An HTTP/2 hop carries the authority in `:authority`, the target's (it also picks
        // the pooled connection); a `Host` naming the client's host beside it is a request
        // strict servers refuse as malformed (RFC 9113 section 8.3.1), so it goes, and the
        // upstream reads the client's host from `X-Forwarded-Host`. HTTP/1.1 hops keep it.
        match conn {
            Conn::Http1(pool) => {
                *req.version_mut() = Version::HTTP_11;
                pool.send(req).await
            }
            Conn::Plain { client, version } => {
                *req.version_mut() = *version;
                if *version == Version::HTTP_2 {
                    req.headers_mut().remove(http::header::HOST);
                }
                client
                    .request(req)
                    .await
                    .map(|r| r.map(ResponseBody::Left))
                    .map_err(RequestError::from_client)
            }
            Conn::Tls {
                client,
                version,
                may_be_h2,
            } => {
                *req.version_mut() = *version;
                if *may_be_h2 {
                    req.headers_mut().remove(http::header::HOST);
                }
                client
                    .request(req)
                    .await
                    .map(|r| r.map(ResponseBody::Left))
                    .map_err(RequestError::from_client)
            }
        }
    }
}

fn builder(s: &ClientSettings, h2_only: bool) -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(s.pool_idle_timeout)
        .pool_max_idle_per_host(s.pool_max_idle_per_host);
    if h2_only {
        b.http2_only(true)
            // A dead h2 connection is noticed between requests, not by the next request.
            .http2_keep_alive_interval(Duration::from_secs(20))
            .http2_keep_alive_timeout(Duration::from_secs(10));
    }
    b
}

fn tcp(s: &ClientSettings) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(s.connect_timeout));
    http.enforce_http(false);
    http
}

fn plain(s: &ClientSettings, h2: bool) -> Conn {
    let mut http = tcp(s);
    http.enforce_http(true);
    Conn::Plain {
        client: builder(s, h2).build(http),
        version: if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        },
    }
}

fn tls(s: &ClientSettings, protocol: UpstreamProtocol) -> Conn {
    let Some(config) = s.tls.as_deref().cloned() else {
        // INVARIANT: config validation builds a TLS configuration for every route with an
        // https target. Without one, never connect unverified: a plain client that only
        // speaks http:// fails every https request as a connect error (502).
        tracing::error!("https upstream without a TLS configuration; its requests will fail");
        return plain(s, false);
    };
    let b = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only();
    let (connector, h2_only) = match protocol {
        UpstreamProtocol::Http1 => (b.enable_http1().wrap_connector(tcp(s)), false),
        UpstreamProtocol::H2 => (b.enable_http2().wrap_connector(tcp(s)), true),
        UpstreamProtocol::Auto => (b.enable_all_versions().wrap_connector(tcp(s)), false),
    };
    Conn::Tls {
        client: builder(s, h2_only).build(connector),
        may_be_h2: protocol != UpstreamProtocol::Http1,
        // With ALPN the pooled connection decides; HTTP/1.1 requests travel on either.
        version: if h2_only {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        },
    }
}

/// One `Cookie` field: an HTTP/2 client may split its cookies over several fields (browsers
/// do, for compression), which must be joined with `; ` before the request travels over
/// HTTP/1.1 (RFC 9113 section 8.2.3), where a server may read only the first `Cookie` line.
/// Done for every hop: one field is as valid on an HTTP/2 hop, and an `https://` hop's
/// protocol is only known once ALPN has settled.
fn join_cookies(headers: &mut http::HeaderMap) {
    let mut all = headers.get_all(COOKIE).iter();
    let (Some(first), Some(_)) = (all.next(), all.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    // Joined from valid field values with `; `: valid too; kept as sent if not.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_fields_are_joined_for_http1() {
        let mut h = http::HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1"));
        h.append(COOKIE, HeaderValue::from_static("b=2; c=3"));
        h.append(COOKIE, HeaderValue::from_static("d=4"));
        join_cookies(&mut h);
        let all: Vec<_> = h.get_all(COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3; d=4"]);
        let mut one = http::HeaderMap::new();
        one.append(COOKIE, HeaderValue::from_static("a=1"));
        join_cookies(&mut one);
        assert_eq!(one[COOKIE], "a=1");
    }
}
