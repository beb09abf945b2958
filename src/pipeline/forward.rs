//! Forwarding to the upstream: hop-by-hop headers removed, `X-Forwarded-*` set, the request
//! handed to the route's [`upstream::Pool`] (target picking, retries, TLS, HTTP/2), its
//! failures mapped to 502/504, and `Upgrade` (WebSocket) tunnelled.

use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::error::GatewayError;
use super::route::Route;
use crate::routing::UpstreamProtocol;
use crate::upstream::{self, Outgoing, ResponseBody, SendError, UpstreamBody};

pub use crate::upstream::Pool as UpstreamClient;

pub use crate::server::conn::ConnInfo;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

pub use super::headers::strip_hop_by_hop;

/// Forward `req` (already authenticated, identity injected, hop-by-hop headers removed by
/// [`strip_hop_by_hop`], which returned `upgrade` and whether the client sent `TE: trailers`)
/// to a target of the route's upstream at the normalised `path` (`None`: the request's own
/// path was already normal). `user` is the authenticated user (for `balance = "user_hash"`).
/// `report` says afterwards which target was used and how often (for the `upstream` span).
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    pool: &upstream::Pool,
    route: &Route,
    mut req: Request<Incoming>,
    path: Option<&str>,
    conn: &ConnInfo,
    upgrade: Option<HeaderValue>,
    te_trailers: bool,
    user: Option<&HeaderValue>,
    report: &mut upstream::SendReport,
) -> Result<Response<ResponseBody>, GatewayError> {
    // HTTP/1.1 only: HTTP/2 has no Upgrade (RFC 9113 section 8.6).
    let upgrade = upgrade.filter(|_| req.version() == Version::HTTP_11);
    let grpc = is_grpc(&req);

    let host = original_host(&req);
    let pq = upstream_path(route, path.unwrap_or(req.uri().path()), req.uri())?;
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
    // `TE: trailers` says the client takes trailers; gRPC servers require it. Sent on where
    // the upstream hop is HTTP/2 (RFC 9113 section 8.2.2 allows exactly this value there):
    // `upstream_protocol = "h2"`, or a gRPC call (which only ever travels over HTTP/2). On
    // HTTP/1.1 it stays a hop-by-hop header that ends here.
    if te_trailers && (grpc || route.upstream.protocol == UpstreamProtocol::H2) {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }

    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let req = req.map(|body| UpstreamBody::new(body, route.max_body_bytes));
    let user = user.map(HeaderValue::as_bytes);
    let out = Outgoing {
        req,
        path: pq,
        grpc,
    };
    let resp = match pool.send_reporting(out, user, route.timeout, report).await {
        Ok(resp) => resp,
        Err(SendError::Timeout) => return Err(GatewayError::UpstreamTimeout),
        Err(SendError::BodyTooLarge) => return Err(GatewayError::PayloadTooLarge),
        Err(SendError::Connect(e)) => return Err(GatewayError::UpstreamConnect(e)),
        Err(SendError::Failed(e)) => return Err(GatewayError::Upstream(e)),
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

/// A gRPC request (`content-type: application/grpc`, `application/grpc+proto`, ...): its
/// refusals are gRPC statuses, and under `upstream_protocol = "auto"` it travels over h2c.
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_2
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Answer the client's upgrade with the upstream's 101 and splice the two upgraded streams.
fn tunnel(
    mut resp: Response<ResponseBody>,
    client_upgrade: hyper::upgrade::OnUpgrade,
) -> Response<ResponseBody> {
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

/// The path and query sent upstream: the route's base path, then the (normalised) path.
fn upstream_path(route: &Route, path: &str, original: &Uri) -> Result<PathAndQuery, GatewayError> {
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
    PathAndQuery::try_from(pq).map_err(|_| GatewayError::BadRequest("invalid request target"))
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
