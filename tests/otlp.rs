//! Issue 17, the OTLP trace export: a real OTLP/HTTP receiver (a hyper server on port 0
//! decoding `ExportTraceServiceRequest` with the `opentelemetry-proto` types) and the gateway
//! exporting to it. The spans of each step arrive linked to the request's SERVER span, the
//! upstream's `traceparent` points at the gateway's `upstream` span, sampling is parent-based
//! with `sample_ratio` for the traces the gateway starts, a refusal still exports its
//! request span (with an error status), and a collector that is down costs the requests
//! nothing but a failure counter.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use common::tokens::{self, HS256_SECRET};
use common::upstream::{dead_addr, hex};
use common::{admin_request, hmac_key_toml, wait_until, Env, Setup, TRACEPARENT, TRACESTATE};

const ADMIN_TOKEN: &str = "otlp-test-admin-token-0123456789abcdef";
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_PARENT: &str = "00f067aa0ba902b7";

/// What the receiver saw: every span, and each export request's path, content type and
/// `service.name`.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    requests: Vec<(String, String, String)>,
}

/// A minimal OTLP/HTTP trace receiver: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`, answered with an empty `ExportTraceServiceResponse`.
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Received>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Received::default()));
        let store = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let store = store.clone();
                        async move { Ok::<_, hyper::Error>(receive(req, &store).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span of `trace` (hex) received so far.
    fn trace(&self, trace: &str) -> Vec<Span> {
        self.seen
            .lock()
            .unwrap()
            .spans
            .iter()
            .filter(|s| hex(&s.trace_id) == trace)
            .cloned()
            .collect()
    }

    /// Wait (bounded) for the SERVER span of `trace`; a request's spans come in one export
    /// request, so its children are there too. Returns every span of the trace.
    async fn wait_for(&self, trace: &str) -> Vec<Span> {
        let found = wait_until(Duration::from_secs(15), || {
            self.trace(trace)
                .iter()
                .any(|s| s.kind == SpanKind::Server as i32)
        })
        .await;
        assert!(found, "no request span of trace {trace} arrived");
        self.trace(trace)
    }
}

async fn receive(req: Request<Incoming>, store: &Mutex<Received>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let ctype = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
        return Response::builder()
            .status(400)
            .body(Full::default())
            .unwrap();
    };
    let mut seen = store.lock().unwrap();
    for rs in export.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.clone());
        let service = match service {
            Some(Value::StringValue(s)) => s,
            _ => String::new(),
        };
        seen.requests.push((path.clone(), ctype.clone(), service));
        for ss in rs.scope_spans {
            seen.spans.extend(ss.spans);
        }
    }
    Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(
            ExportTraceServiceResponse::default().encode_to_vec(),
        )))
        .unwrap()
}

fn config(otlp: &str, extra: &str) -> String {
    format!(
        r#"{{listen}}
{keys}
[admin]
addr = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[revocation]
store = "memory"

[telemetry]
otlp_endpoint = "{otlp}"
export_interval = "50ms"
{extra}

[[routes]]
prefix = "/"
upstream = "{{up}}"
auth = "jwt"
"#,
        keys = hmac_key_toml("hs", "HS256", HS256_SECRET)
    )
}

fn named<'a>(spans: &'a [Span], name: &str) -> Option<&'a Span> {
    spans.iter().find(|s| s.name == name)
}

fn attr(s: &Span, key: &str) -> Option<Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.clone())
}

/// `00-<trace>-<parent>-<flags>` split into its parts.
fn parts(traceparent: &str) -> (String, String, String) {
    let p: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(p.len(), 4, "{traceparent}");
    (p[1].to_owned(), p[2].to_owned(), p[3].to_owned())
}

async fn metric(gw: &common::TestGateway, name: &str) -> f64 {
    let r = admin_request(
        &gw.admin_url().unwrap(),
        ADMIN_TOKEN,
        reqwest::Method::GET,
        "/metrics",
        None,
    )
    .await;
    let text = r.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_has_a_span_under_the_request_span_and_the_upstream_points_at_its_own() {
    common::watch_panics();
    let receiver = Receiver::start().await;
    let Env { gw, .. } = Env::start(Setup::new(), &config(&receiver.url(), "")).await;
    let token = tokens::hs256(Some("hs"), &tokens::claims("tara"));

    // No traceparent: the gateway starts the trace (sample_ratio defaults to 1.0).
    let r = gw.raw_get("/orders?secret=1", Some(&token), &[]).await;
    assert_eq!(r.status, 200);
    let echo = r.echo();
    let (trace, up_parent, flags) = parts(echo.one("traceparent").unwrap());
    assert_eq!(flags, "01");
    let spans = receiver.wait_for(&trace).await;
    assert_eq!(spans.len(), 4, "{spans:#?}");

    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    assert!(server.parent_span_id.is_empty(), "a root span: {server:?}");
    assert_eq!(
        attr(server, "url.path"),
        Some(Value::StringValue("/orders".into()))
    );
    assert_eq!(
        attr(server, "http.request.method"),
        Some(Value::StringValue("GET".into()))
    );
    assert_eq!(
        attr(server, "http.response.status_code"),
        Some(Value::IntValue(200))
    );
    assert!(server
        .status
        .as_ref()
        .is_none_or(|s| s.code != StatusCode::Error as i32));
    for name in ["authenticate", "revocation check", "upstream"] {
        let s = named(&spans, name).unwrap_or_else(|| panic!("no {name} span: {spans:#?}"));
        assert_eq!(
            s.parent_span_id, server.span_id,
            "{name} is not under the request span"
        );
        assert!(
            s.start_time_unix_nano >= server.start_time_unix_nano,
            "{name}"
        );
        assert!(s.end_time_unix_nano <= server.end_time_unix_nano, "{name}");
    }
    let upstream = named(&spans, "upstream").unwrap();
    assert_eq!(upstream.kind, SpanKind::Client as i32);
    assert_eq!(
        hex(&upstream.span_id),
        up_parent,
        "the upstream's parent is the upstream span"
    );
    assert_eq!(
        attr(upstream, "server.address"),
        Some(Value::StringValue("127.0.0.1".into()))
    );
    // Authentication ran before the revocation check, which ran before the upstream call.
    let (a, v) = (
        named(&spans, "authenticate").unwrap(),
        named(&spans, "revocation check").unwrap(),
    );
    assert!(a.end_time_unix_nano <= v.start_time_unix_nano);
    assert!(v.end_time_unix_nano <= upstream.start_time_unix_nano);

    // Nothing secret in any span: no token, no query.
    let all = format!("{spans:?}");
    assert!(!all.contains(&token) && !all.contains("secret=1"));
    {
        let seen = receiver.seen.lock().unwrap();
        let (path, ctype, service) = &seen.requests[0];
        assert_eq!(path, "/v1/traces");
        assert_eq!(ctype, "application/x-protobuf");
        assert_eq!(service, "portcullis");
    }
    assert!(metric(&gw, "portcullis_trace_spans_exported_total").await >= 4.0);
    assert_eq!(common::gateway_panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_sampled_traceparent_parents_the_request_span() {
    let receiver = Receiver::start().await;
    let Env { gw, .. } = Env::start(Setup::new(), &config(&receiver.url(), "")).await;
    let token = tokens::hs256(Some("hs"), &tokens::claims("tara"));

    let r = gw.get_with_trace_context("/t", &token).await;
    assert_eq!(r.status, 200);
    let echo = r.echo();
    let (trace, up_parent, flags) = parts(echo.one("traceparent").unwrap());
    assert_eq!((trace.as_str(), flags.as_str()), (CLIENT_TRACE, "01"));
    assert_ne!(
        up_parent, CLIENT_PARENT,
        "the upstream's parent is the gateway's span now"
    );
    assert_eq!(echo.one("tracestate"), Some(TRACESTATE));

    let spans = receiver.wait_for(CLIENT_TRACE).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    assert_eq!(hex(&server.parent_span_id), CLIENT_PARENT);
    assert_eq!(server.trace_state, TRACESTATE);
    let upstream = named(&spans, "upstream").unwrap();
    assert_eq!(hex(&upstream.span_id), up_parent);
    assert_eq!(upstream.parent_span_id, server.span_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratio_zero_exports_only_what_a_client_sampled() {
    let receiver = Receiver::start().await;
    let Env { gw, .. } =
        Env::start(Setup::new(), &config(&receiver.url(), "sample_ratio = 0.0")).await;
    let token = tokens::hs256(Some("hs"), &tokens::claims("tara"));

    // Started here, not sampled: the upstream is told so, and nothing is exported.
    let r = gw.raw_get("/t", Some(&token), &[]).await;
    let (dropped_trace, _, flags) = parts(r.echo().one("traceparent").unwrap());
    assert_eq!(flags, "00");
    // A client's unsampled trace: forwarded as it came, not exported.
    let unsampled = "00-11111111111111111111111111111111-2222222222222222-00";
    let r = gw
        .raw_get(
            "/t",
            Some(&token),
            &[format!("traceparent: {unsampled}").as_str()],
        )
        .await;
    assert_eq!(r.echo().one("traceparent"), Some(unsampled));

    // A client's sampled trace is exported whatever the ratio.
    let r = gw
        .raw_get(
            "/t",
            Some(&token),
            &[format!("traceparent: {TRACEPARENT}").as_str()],
        )
        .await;
    assert_eq!(r.status, 200);
    let spans = receiver.wait_for(CLIENT_TRACE).await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    // One queue, in order: had the earlier requests been exported, they would be here.
    assert!(receiver.trace(&dropped_trace).is_empty());
    assert!(receiver
        .trace("11111111111111111111111111111111")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_exports_its_span_with_an_error_status_and_no_upstream_span() {
    let receiver = Receiver::start().await;
    let Env { gw, up } = Env::start(Setup::new(), &config(&receiver.url(), "")).await;

    let r = gw.raw_get("/t", Some("not-a-token"), &[]).await;
    assert_eq!(r.status, 401);
    let trace = r.json()["trace_id"].as_str().unwrap().to_owned();
    let spans = receiver.wait_for(&trace).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    let status = server.status.as_ref().expect("an error status");
    assert_eq!(status.code, StatusCode::Error as i32);
    assert_eq!(
        attr(server, "http.response.status_code"),
        Some(Value::IntValue(401))
    );
    let auth = named(&spans, "authenticate").expect("the authenticate span");
    assert_eq!(auth.status.as_ref().unwrap().code, StatusCode::Error as i32);
    assert!(named(&spans, "upstream").is_none(), "{spans:#?}");
    assert!(named(&spans, "revocation check").is_none(), "{spans:#?}");
    assert_eq!(up.hits(), 0);

    // An upstream that cannot be reached: 502, and the upstream span says why.
    let dead = dead_addr();
    let receiver2 = Receiver::start().await;
    let Env { gw, .. } = Env::start(
        Setup::new(),
        &config(&receiver2.url(), "").replace("{up}", &format!("http://{dead}")),
    )
    .await;
    let token = tokens::hs256(Some("hs"), &tokens::claims("tara"));
    let r = gw.raw_get("/t", Some(&token), &[]).await;
    assert_eq!(r.status, 502);
    let trace = r.json()["trace_id"].as_str().unwrap().to_owned();
    let spans = receiver2.wait_for(&trace).await;
    let upstream = named(&spans, "upstream").expect("the upstream span");
    let status = upstream.status.as_ref().expect("an error status");
    assert_eq!(status.code, StatusCode::Error as i32);
    assert_eq!(status.message, "upstream_connect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_the_requests_nothing_but_a_counter() {
    let dead = dead_addr();
    let Env { gw, .. } = Env::start(
        Setup::new(),
        &config(&format!("http://{dead}"), "otlp_timeout = \"2s\""),
    )
    .await;
    let token = tokens::hs256(Some("hs"), &tokens::claims("tara"));
    for _ in 0..3 {
        let r = gw.raw_get("/t", Some(&token), &[]).await;
        assert_eq!(r.status, 200);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if metric(&gw, "portcullis_trace_export_failures_total").await >= 1.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no export failure counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(&gw, "portcullis_trace_spans_exported_total").await,
        0.0
    );
    let r = gw.raw_get("/t", Some(&token), &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_what_is_queued_and_a_reload_says_telemetry_needs_a_restart() {
    let receiver = Receiver::start().await;
    // An interval no test waits for: only the shutdown's last export can send these spans.
    let Env { gw, .. } = Env::start_from_file(
        Setup::new(),
        &config(&receiver.url(), "").replace("\"50ms\"", "\"1h\""),
    )
    .await;
    let path = gw.dir.path().join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("export_interval = \"1h\"", "sample_ratio = 0.5"),
    )
    .unwrap();
    let notes = gw.reload().await.unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("telemetry") && n.contains("restart")),
        "{notes:?}"
    );

    let token = tokens::hs256(Some("hs"), &tokens::claims("tara"));
    let r = gw.raw_get("/t", Some(&token), &[]).await;
    assert_eq!(r.status, 200);
    let (trace, _, _) = parts(r.echo().one("traceparent").unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        receiver.trace(&trace).is_empty(),
        "exported before the interval"
    );
    gw.shutdown().await;
    assert_eq!(receiver.trace(&trace).len(), 4);
}
