//! Forwarding to the upstream: pooled HTTP/1.1 client, hop-by-hop headers removed,
//! `X-Forwarded-*` set, timeouts mapped to 502/504, and `Upgrade` (WebSocket) tunnelled.

use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::error::GatewayError;
use super::route::Route;
use crate::config::Limits;

/// The body sent upstream: the client's, streamed, cut at the route's `max_body_bytes` when set.
pub type UpstreamBody = Either<Incoming, Limited<Incoming>>;
pub type UpstreamClient = Client<HttpConnector, UpstreamBody>;

pub use crate::server::conn::ConnInfo;

/// A pooled client for one route (its connect timeout lives in the connector).
pub fn client(connect_timeout: Duration, limits: &Limits) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(limits.upstream_pool_idle_timeout)
        .pool_max_idle_per_host(limits.upstream_pool_max_idle_per_host)
        .build(http)
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

pub use super::headers::strip_hop_by_hop;

/// Forward `req` (already authenticated, identity injected, hop-by-hop headers removed by
/// [`strip_hop_by_hop`], which returned `upgrade`) to the route's upstream at the normalised
/// `path` (`None`: the request's own path was already normal).
pub async fn forward(
    client: &UpstreamClient,
    route: &Route,
    mut req: Request<Incoming>,
    path: Option<&str>,
    conn: &ConnInfo,
    upgrade: Option<HeaderValue>,
) -> Result<Response<Incoming>, GatewayError> {
    // HTTP/1.1 only: HTTP/2 has no Upgrade (RFC 9113 section 8.6).
    let upgrade = upgrade.filter(|_| req.version() == Version::HTTP_11);

    let host = original_host(&req);
    let uri = upstream_uri(route, path.unwrap_or(req.uri().path()), req.uri())?;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    if let Some(host) = &host {
        if !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, host.clone());
        }
    }
    set_forwarded(headers, conn, host.as_ref());
    if let Some(up) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, up.clone());
    }

    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let req = req.map(|body| match route.max_body_bytes {
        Some(limit) => Either::Right(Limited::new(
            body,
            usize::try_from(limit).unwrap_or(usize::MAX),
        )),
        None => Either::Left(body),
    });
    let resp = match tokio::time::timeout(route.timeout, client.request(req)).await {
        Err(_) => return Err(GatewayError::UpstreamTimeout),
        Ok(Err(e)) if caused_by::<LengthLimitError>(&e) => {
            return Err(GatewayError::PayloadTooLarge)
        }
        Ok(Err(e)) if e.is_connect() => return Err(GatewayError::UpstreamConnect(error_chain(&e))),
        Ok(Err(e)) => return Err(GatewayError::Upstream(error_chain(&e))),
        Ok(Ok(resp)) => resp,
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            return Ok(tunnel(resp, client_upgrade));
        }
        return Err(GatewayError::Upstream(
            "unexpected 101 from upstream".into(),
        ));
    }
    let mut resp = resp;
    strip_hop_by_hop(resp.headers_mut());
    Ok(resp)
}

/// Answer the client's upgrade with the upstream's 101 and splice the two upgraded streams.
fn tunnel(
    mut resp: Response<Incoming>,
    client_upgrade: hyper::upgrade::OnUpgrade,
) -> Response<Incoming> {
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let proto = resp.headers().get(header::UPGRADE).cloned();
    strip_hop_by_hop(resp.headers_mut());
    if let Some(proto) = proto {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        resp.headers_mut().insert(header::UPGRADE, proto);
    }
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, "tunnel closed with error");
        }
    });
    resp
}

fn original_host(req: &Request<Incoming>) -> Option<HeaderValue> {
    if let Some(h) = req.headers().get(header::HOST) {
        return Some(h.clone());
    }
    req.uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
}

fn upstream_uri(route: &Route, path: &str, original: &Uri) -> Result<Uri, GatewayError> {
    let base = &route.upstream.base_path;
    let mut pq =
        String::with_capacity(base.len() + path.len() + 1 + original.query().map_or(0, str::len));
    pq.push_str(base);
    if base.is_empty() || path != "/" {
        pq.push_str(path);
    }
    if let Some(q) = original.query() {
        pq.push('?');
        pq.push_str(q);
    }
    let pq = PathAndQuery::try_from(pq)
        .map_err(|_| GatewayError::BadRequest("invalid request target"))?;
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(route.upstream.authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|_| GatewayError::BadRequest("invalid request target"))
}

/// The gateway is the edge: it replaces whatever forwarding headers a client sent with what
/// it observed itself, so an upstream that trusts them cannot be lied to.
fn set_forwarded(headers: &mut HeaderMap, conn: &ConnInfo, host: Option<&HeaderValue>) {
    headers.remove(&FORWARDED);
    headers.remove(&X_REAL_IP);
    headers.insert(X_FORWARDED_FOR.clone(), conn.forwarded_for.clone());
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
    );
    match host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST.clone(), h.clone());
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
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

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic x"),
        );
        h.insert("x-end-to-end", HeaderValue::from_static("kept"));
        assert!(strip_hop_by_hop(&mut h).is_none());
        assert_eq!(h.len(), 1, "{h:?}");
    }

    #[test]
    fn only_websocket_upgrades_are_reported() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert_eq!(strip_hop_by_hop(&mut h).unwrap(), "WebSocket");
        assert!(h.is_empty());
        for proto in ["h2c", "websocket, h2c", "tls/1.2"] {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONNECTION,
                HeaderValue::from_static("Upgrade, HTTP2-Settings"),
            );
            h.insert(header::UPGRADE, HeaderValue::from_static(proto));
            h.insert(
                "http2-settings",
                HeaderValue::from_static("AAMAAABkAAQAoAAAAAIAAAAA"),
            );
            assert!(strip_hop_by_hop(&mut h).is_none(), "{proto}");
            assert!(h.is_empty(), "{proto}: {h:?}");
        }
    }

    #[test]
    fn connection_cannot_name_host() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("host"));
        h.insert(header::HOST, HeaderValue::from_static("api.example"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h[header::HOST], "api.example");
    }

    #[test]
    fn forwarded_headers_replace_client_values() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        let conn = ConnInfo::new("127.0.0.9:5000".parse().unwrap(), true);
        set_forwarded(
            &mut h,
            &conn,
            Some(&HeaderValue::from_static("api.example")),
        );
        assert_eq!(h["x-forwarded-for"], "127.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.example");
        assert!(h.get("forwarded").is_none() && h.get("x-real-ip").is_none());
    }
}
