//! The OTLP/HTTP trace exporter: a task on the gateway's main runtime that takes the
//! finished requests' spans off the queue ([`super::spans`]), batches them (up to
//! `batch_size` spans, or whatever came within `export_interval`), and POSTs each batch as
//! one protobuf `ExportTraceServiceRequest` (`Content-Type: application/x-protobuf`) to
//! `{otlp_endpoint}/v1/traces`, as the OTLP specification's "OTLP/HTTP" section describes.
//!
//! The messages are `opentelemetry-proto`'s generated types (the OpenTelemetry project's own
//! `.proto` files), encoded with `prost`; the request goes out on the same hyper client stack
//! the upstreams use. One export is in flight at a time; a failed one (no connection,
//! timeout, a non-2xx answer) is counted and its spans are dropped, never retried: the
//! request path must not pay for a collector that is down.
//!
//! Span model (OpenTelemetry semantic conventions for HTTP where one applies):
//! - `{method} {route}`, SERVER: `http.request.method`, `url.path` (no query),
//!   `url.scheme`, `network.protocol.version`, `client.address`,
//!   `http.response.status_code`, `portcullis.route`; status ERROR with the refusal's
//!   reason (and `error.type`) when the gateway answered with an error of its own, or for
//!   a 5xx.
//! - `authenticate` and `revocation check`, INTERNAL, ERROR with the reason when they
//!   refused.
//! - `upstream`, CLIENT: `server.address`, `server.port`, `http.request.method`,
//!   `http.response.status_code`, `http.request.resend_count` when retried; ERROR when no
//!   response came or it was 4xx/5xx.
//!
//! No token, cookie, header value or query string is ever written to a span; the user is
//! not either (the access log line carries it, under the same trace id).

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use tokio::sync::mpsc;

use super::metrics::Metrics;
use super::spans::{RequestSpans, Sampler, StepSpan, Tracer};
use crate::config::telemetry::Otlp;

/// `flags` bits of an OTLP span (`SpanFlags` in trace.proto): the W3C sampled flag, and
/// whether the parent is known to be remote (and is).
const FLAG_SAMPLED: u32 = 0x01;
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// Largest collector answer read (an `ExportTraceServiceResponse` is a few bytes; an
/// error page is not worth more).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why the exporter cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    #[error("telemetry.otlp_endpoint: {0}")]
    Tls(String),
}

/// The plain or TLS client the export requests go out on.
enum ExportClient {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
}

impl ExportClient {
    fn new(settings: &Otlp) -> Result<ExportClient, ExporterError> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.timeout));
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(1);
        if settings.url.scheme_str() == Some("https") {
            // The system's roots, as for an https upstream without `upstream_ca_file`.
            let tls = crate::tls::upstream_client_config(None, None).map_err(ExporterError::Tls)?;
            http.enforce_http(false);
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_only()
                .enable_all_versions()
                .wrap_connector(http);
            Ok(ExportClient::Tls(builder.build(connector)))
        } else {
            Ok(ExportClient::Plain(builder.build(http)))
        }
    }

    fn request(&self, req: Request<Full<Bytes>>) -> ResponseFuture {
        match self {
            ExportClient::Plain(c) => c.request(req),
            ExportClient::Tls(c) => c.request(req),
        }
    }
}

/// The export task's state: settings, the queue's receiving end, the client, counters.
pub struct Exporter {
    settings: Otlp,
    queue: mpsc::Receiver<Box<RequestSpans>>,
    client: ExportClient,
    resource: Resource,
    exported: Counter,
    failures: Counter,
    /// The last export failed (so the next failure logs at debug, not warn, and a success
    /// says the collector is back).
    failing: bool,
}

/// The request path's [`Tracer`] and the [`Exporter`] that drains what it queues.
pub fn pipeline(
    settings: &Otlp,
    metrics: &Metrics,
) -> Result<(Arc<Tracer>, Exporter), ExporterError> {
    let (tx, rx) = mpsc::channel(settings.queue_size.max(1));
    let tracer = Tracer::new(
        Sampler::new(settings.sample_ratio),
        tx,
        metrics.trace_spans_dropped.clone(),
    );
    let exporter = Exporter {
        client: ExportClient::new(settings)?,
        resource: Resource {
            attributes: vec![
                string("service.name", &settings.service_name),
                string("service.version", env!("CARGO_PKG_VERSION")),
                string("telemetry.sdk.language", "rust"),
            ],
            ..Resource::default()
        },
        settings: settings.clone(),
        queue: rx,
        exported: metrics.trace_spans_exported.clone(),
        failures: metrics.trace_export_failures.clone(),
        failing: false,
    };
    Ok((Arc::new(tracer), exporter))
}

impl Exporter {
    /// Export until `stop` completes, then export what is queued and return.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut batch: Vec<RequestSpans> = Vec::new();
        let mut spans = 0u64;
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let batch_size = self.settings.batch_size as u64;
        loop {
            tokio::select! {
                biased;
                () = &mut stop => break,
                got = self.queue.recv() => match got {
                    Some(r) => {
                        spans += r.span_count();
                        batch.push(*r);
                        if spans >= batch_size {
                            self.export(std::mem::take(&mut batch)).await;
                            spans = 0;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    if !batch.is_empty() {
                        self.export(std::mem::take(&mut batch)).await;
                        spans = 0;
                    }
                }
            }
        }
        // The last spans: what is queued now, in batches.
        while let Ok(r) = self.queue.try_recv() {
            spans += r.span_count();
            batch.push(*r);
            if spans >= batch_size {
                self.export(std::mem::take(&mut batch)).await;
                spans = 0;
            }
        }
        if !batch.is_empty() {
            self.export(batch).await;
        }
    }

    /// POST one batch; count what the collector took, or the failure.
    async fn export(&mut self, batch: Vec<RequestSpans>) {
        let body = encode(&self.resource, &batch);
        let count: u64 = batch.iter().map(|r| r.span_count()).sum();
        let mut req = Request::post(self.settings.url.clone())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            )
            .body(Full::new(Bytes::from(body)));
        if let Ok(req) = &mut req {
            for (name, value) in &self.settings.headers {
                req.headers_mut().insert(name.clone(), value.clone());
            }
        }
        let outcome = match req {
            Ok(req) => tokio::time::timeout(self.settings.timeout, self.send(req))
                .await
                .unwrap_or_else(|_| Err("no answer in time (telemetry.otlp_timeout)".into())),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(rejected) => {
                self.exported.inc_by(count.saturating_sub(rejected));
                if self.failing {
                    tracing::info!("OTLP trace export works again");
                }
                self.failing = false;
            }
            Err(reason) => {
                self.failures.inc();
                if self.failing {
                    tracing::debug!(spans = count, %reason, "OTLP trace export failed; its spans are dropped");
                } else {
                    tracing::warn!(endpoint = %self.settings.url, spans = count, %reason, "OTLP trace export failed; its spans are dropped");
                }
                self.failing = true;
            }
        }
    }

    /// Send one export request: `Ok(spans the collector says it rejected)` on a 2xx.
    async fn send(&self, req: Request<Full<Bytes>>) -> Result<u64, String> {
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if !status.is_success() {
            return Err(format!("collector answered {status}"));
        }
        // A partial success names the spans it did not take (OTLP "Partial Success").
        let rejected =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(
                body,
            )
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| p.rejected_spans.max(0) as u64);
        Ok(rejected)
    }
}

/// One export request's protobuf body.
pub fn encode(resource: &Resource, batch: &[RequestSpans]) -> Vec<u8> {
    let spans = batch.iter().flat_map(spans_of).collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "portcullis".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

/// The OTLP spans of one request: its SERVER span, then one per step it reached.
fn spans_of(r: &RequestSpans) -> Vec<Span> {
    let mut out = Vec::with_capacity(r.span_count() as usize);
    let mut attributes = vec![
        string("http.request.method", r.method.as_str()),
        string("url.path", &r.path),
        string("url.scheme", if r.tls { "https" } else { "http" }),
        string("network.protocol.version", protocol_version(r.version)),
        string("client.address", &r.peer.to_string()),
        int("http.response.status_code", i64::from(r.status)),
        string("portcullis.route", r.route),
    ];
    let status = match r.error {
        Some(reason) => {
            attributes.push(string("error.type", reason));
            error(reason)
        }
        // SERVER spans: only 5xx is an error (a 4xx is the client's).
        None if r.status >= 500 => error(&r.status.to_string()),
        None => None,
    };
    out.push(Span {
        trace_id: r.trace_id.to_vec(),
        span_id: r.id.to_vec(),
        trace_state: r
            .tracestate
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        parent_span_id: r.parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags: FLAG_SAMPLED
            | FLAG_HAS_IS_REMOTE
            | if r.parent.is_some() {
                FLAG_IS_REMOTE
            } else {
                0
            },
        name: format!("{} {}", r.method, r.route),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: r.start,
        end_time_unix_nano: r.end,
        attributes,
        status,
        ..Span::default()
    });
    let child =
        |s: &StepSpan, name: &str, kind: SpanKind, attributes: Vec<KeyValue>, status| Span {
            trace_id: r.trace_id.to_vec(),
            span_id: s.id.to_vec(),
            parent_span_id: r.id.to_vec(),
            flags: FLAG_SAMPLED | FLAG_HAS_IS_REMOTE,
            name: name.to_owned(),
            kind: kind as i32,
            start_time_unix_nano: s.start,
            // A step cut short (the request's future dropped) ends with the request.
            end_time_unix_nano: if s.end == 0 { r.end } else { s.end },
            attributes,
            status,
            ..Span::default()
        };
    if let Some(s) = &r.authenticate {
        out.push(child(
            s,
            "authenticate",
            SpanKind::Internal,
            Vec::new(),
            s.error.and_then(error),
        ));
    }
    if let Some(s) = &r.revocation {
        out.push(child(
            s,
            "revocation check",
            SpanKind::Internal,
            Vec::new(),
            s.error.and_then(error),
        ));
    }
    if let Some(s) = &r.upstream {
        let call = &r.upstream_call;
        let mut attributes = vec![string("http.request.method", r.method.as_str())];
        if let Some(target) = &call.target {
            attributes.push(string("server.address", target.host()));
            if let Some(port) = target.port_u16() {
                attributes.push(int("server.port", i64::from(port)));
            }
        }
        if let Some(code) = call.status {
            attributes.push(int("http.response.status_code", i64::from(code)));
        }
        if call.attempts > 1 {
            attributes.push(int(
                "http.request.resend_count",
                i64::from(call.attempts - 1),
            ));
        }
        let status = match (s.error, call.status) {
            (Some(reason), _) => {
                attributes.push(string("error.type", reason));
                error(reason)
            }
            // CLIENT spans: 4xx and 5xx are errors.
            (None, Some(code)) if code >= 400 => error(&code.to_string()),
            _ => None,
        };
        out.push(child(s, "upstream", SpanKind::Client, attributes, status));
    }
    out
}

fn error(message: &str) -> Option<Status> {
    Some(Status {
        message: message.to_owned(),
        code: StatusCode::Error as i32,
    })
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..KeyValue::default()
    }
}

fn protocol_version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    /// A request that reached every step and whose upstream could not be reached, retried.
    fn sample_record() -> RequestSpans {
        use crate::telemetry::spans::UpstreamCall;
        RequestSpans {
            trace_id: [7; 16],
            parent: Some([9; 8]),
            tracestate: Some(HeaderValue::from_static("congo=t61rcWkgMzE")),
            id: [1; 8],
            start: 10,
            end: 50,
            method: Method::GET,
            path: "/api/x".into(),
            tls: true,
            version: Version::HTTP_11,
            peer: std::net::IpAddr::from([127, 0, 0, 9]),
            route: "api",
            status: 502,
            error: Some("upstream_connect"),
            authenticate: Some(StepSpan {
                id: [2; 8],
                start: 11,
                end: 20,
                error: None,
            }),
            revocation: Some(StepSpan {
                id: [3; 8],
                start: 21,
                end: 22,
                error: None,
            }),
            upstream: Some(StepSpan {
                id: [4; 8],
                start: 23,
                end: 49,
                error: Some("upstream_connect"),
            }),
            upstream_call: UpstreamCall {
                target: Some("127.0.0.1:9".parse().unwrap()),
                attempts: 2,
                status: None,
            },
        }
    }

    fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    #[test]
    fn a_record_round_trips_through_protobuf_with_its_links() {
        let resource = Resource::default();
        let body = encode(&resource, &[sample_record()]);
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 4);
        let server = &spans[0];
        assert_eq!(server.kind, SpanKind::Server as i32);
        assert_eq!(server.parent_span_id, vec![9; 8]);
        assert_eq!(server.trace_state, "congo=t61rcWkgMzE");
        assert_eq!(server.name, "GET api");
        assert_eq!(
            server.status.as_ref().unwrap().code,
            StatusCode::Error as i32
        );
        assert_eq!(
            attr(server, "url.path"),
            Some(&any_value::Value::StringValue("/api/x".into()))
        );
        for child in &spans[1..] {
            assert_eq!(child.trace_id, vec![7; 16]);
            assert_eq!(child.parent_span_id, vec![1; 8]);
        }
        let up = &spans[3];
        assert_eq!(up.name, "upstream");
        assert_eq!(up.kind, SpanKind::Client as i32);
        assert_eq!(
            attr(up, "server.address"),
            Some(&any_value::Value::StringValue("127.0.0.1".into()))
        );
        assert_eq!(
            attr(up, "http.request.resend_count"),
            Some(&any_value::Value::IntValue(1))
        );
        assert_eq!(up.status.as_ref().unwrap().message, "upstream_connect");
        assert!(spans[1].status.is_none());
    }
}
