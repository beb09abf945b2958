//! The spans of one request, recorded while it runs and queued for the OTLP exporter
//! ([`super::otlp`]) when it ends: a SERVER span for the request and, under it, the
//! `authenticate`, `revocation check` and `upstream` (CLIENT) spans of the steps it reached.
//!
//! Cost. Export off: the pipeline holds an empty [`Recording`] (one null pointer) and each
//! mark is a branch on it. Export on, trace not sampled: the same, after the sampler's
//! decision (a few compares). Sampled: one allocation for the record, a clock read per span
//! boundary, a copy of the path, and one `try_send` on a bounded channel when the request
//! ends; a full channel drops the request's spans (counted in
//! `portcullis_trace_spans_dropped_total`), it never waits.
//!
//! Sampling is parent-based, as OpenTelemetry's `ParentBased(TraceIdRatioBased)`: a
//! client's `traceparent` decides by its sampled flag; a trace the gateway starts is
//! exported when its trace id falls under `sample_ratio` ([`Sampler`]).

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderValue};
use http::uri::Authority;
use http::{Method, Version};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use super::trace::{child_traceparent, new_span_id, TraceContext, TRACESTATE};

/// Nanoseconds since the Unix epoch (what OTLP's `*_time_unix_nano` fields hold).
fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `ParentBased(TraceIdRatioBased(sample_ratio))`.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    /// A trace id whose lower 63 bits (of its last 8 bytes) fall below this is sampled;
    /// `None`: every one is (ratio 1.0).
    bound: Option<u64>,
}

impl Sampler {
    pub fn new(ratio: f64) -> Sampler {
        if ratio >= 1.0 {
            return Sampler { bound: None };
        }
        // The OpenTelemetry SDKs' rule, so a trace id gets the same decision here as in a
        // service behind the gateway with the same ratio.
        let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
        Sampler { bound: Some(bound) }
    }

    /// The ratio's decision for a trace the gateway starts, from its trace id (a client's
    /// trace keeps its own flag: [`Tracer::trace_of`]).
    pub fn by_trace_id(&self, trace_id: &[u8; 16]) -> bool {
        let Some(bound) = self.bound else {
            return true;
        };
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        (u64::from_be_bytes(low) >> 1) < bound
    }
}

/// A step of the checklist that gets a span of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Finding and verifying the credential (token, DPoP proof, the route's issuer).
    Authenticate,
    /// The revocation dictionary.
    Revocation,
    /// Forwarding, from the request sent to the response head (retries included).
    Upstream,
}

/// One child span's times and outcome.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepSpan {
    pub id: [u8; 8],
    pub start: u64,
    pub end: u64,
    /// The refusal's reason (the gateway error's reason label) when the step refused.
    pub error: Option<&'static str>,
}

/// What the upstream span says beyond its times.
#[derive(Debug, Clone, Default)]
pub struct UpstreamCall {
    /// The target that answered (or failed last).
    pub target: Option<Authority>,
    /// Requests sent: 2 when retried on another target.
    pub attempts: u8,
    /// The upstream's status.
    pub status: Option<u16>,
}

/// Everything the exporter needs to write a request's spans.
#[derive(Debug, Clone)]
pub struct RequestSpans {
    pub trace_id: [u8; 16],
    /// The client's parent span id; `None` when the gateway started the trace.
    pub parent: Option<[u8; 8]>,
    /// The client's `tracestate`, written on the SERVER span.
    pub tracestate: Option<HeaderValue>,
    pub id: [u8; 8],
    pub start: u64,
    pub end: u64,
    pub method: Method,
    /// The path as the client sent it, without the query (it may carry secrets).
    pub path: String,
    pub tls: bool,
    pub version: Version,
    pub peer: IpAddr,
    /// The route's name (the metrics' and access log's `route`).
    pub route: &'static str,
    pub status: u16,
    /// The refusal's reason when the gateway answered with an error of its own.
    pub error: Option<&'static str>,
    pub authenticate: Option<StepSpan>,
    pub revocation: Option<StepSpan>,
    pub upstream: Option<StepSpan>,
    pub upstream_call: UpstreamCall,
}

impl RequestSpans {
    /// Spans this record turns into: the request's and one per step reached.
    pub fn span_count(&self) -> u64 {
        1 + [&self.authenticate, &self.revocation, &self.upstream]
            .iter()
            .filter(|s| s.is_some())
            .count() as u64
    }

    fn slot(&mut self, step: Step) -> &mut Option<StepSpan> {
        match step {
            Step::Authenticate => &mut self.authenticate,
            Step::Revocation => &mut self.revocation,
            Step::Upstream => &mut self.upstream,
        }
    }
}

/// One request's recording: empty (one null pointer, each mark a branch) when the export
/// is off or the trace is not sampled.
#[derive(Debug, Default)]
pub struct Recording(Option<Box<RequestSpans>>);

impl Recording {
    /// Export off.
    pub const OFF: Recording = Recording(None);

    /// This request's spans are being recorded.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// `step` starts now.
    #[inline]
    pub fn start(&mut self, step: Step) {
        if let Some(r) = &mut self.0 {
            *r.slot(step) = Some(StepSpan {
                id: new_span_id(),
                start: now_nanos(),
                ..StepSpan::default()
            });
        }
    }

    /// `step` ended now, refused for `error` (a reason label) or passed.
    #[inline]
    pub fn end(&mut self, step: Step, error: Option<&'static str>) {
        if let Some(r) = &mut self.0 {
            if let Some(s) = r.slot(step) {
                s.end = now_nanos();
                s.error = error;
            }
        }
    }

    /// Start the `upstream` span; returns the `traceparent` the upstream must get (this
    /// span as its parent), or `None` when not recording (the request's own goes as it is).
    #[inline]
    pub fn start_upstream(&mut self) -> Option<HeaderValue> {
        self.start(Step::Upstream);
        let r = self.0.as_ref()?;
        let span = r.upstream.as_ref()?;
        Some(child_traceparent(&r.trace_id, &span.id))
    }

    /// The upstream call ended: who answered, after how many attempts, with what.
    #[inline]
    pub fn end_upstream(
        &mut self,
        call: impl FnOnce() -> UpstreamCall,
        error: Option<&'static str>,
    ) {
        if let Some(r) = &mut self.0 {
            r.upstream_call = call();
        }
        self.end(Step::Upstream, error);
    }
}

/// The request path's handle on the export: the sampler and the queue to the exporter.
pub struct Tracer {
    sampler: Sampler,
    queue: mpsc::Sender<Box<RequestSpans>>,
    dropped: Counter,
}

/// What a request was, for its SERVER span (taken before the request moves on).
pub struct RequestInfo<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub tls: bool,
    pub version: Version,
    pub peer: IpAddr,
}

impl Tracer {
    /// A tracer queueing into `queue`; `dropped` counts the spans a full queue refused.
    pub fn new(
        sampler: Sampler,
        queue: mpsc::Sender<Box<RequestSpans>>,
        dropped: Counter,
    ) -> Tracer {
        Tracer {
            sampler,
            queue,
            dropped,
        }
    }

    /// The request's trace context, sampled parent-based: a client's `traceparent` keeps
    /// its flag, a trace started here gets the ratio's decision in its flags (`-01`/`-00`).
    pub fn trace_of(&self, headers: &mut HeaderMap) -> TraceContext {
        TraceContext::of_request_with(headers, |id| self.sampler.by_trace_id(id))
    }

    /// Start recording this request's spans when its trace ([`Tracer::trace_of`]) is
    /// sampled; otherwise the empty recording.
    pub fn begin(
        &self,
        trace: &TraceContext,
        headers: &HeaderMap,
        info: RequestInfo<'_>,
    ) -> Recording {
        if !trace.sampled() {
            return Recording::OFF;
        }
        let (trace_id, parent, _) = trace.ids();
        let (parent, tracestate) = if trace.created {
            (None, None)
        } else {
            (Some(parent), headers.get(&TRACESTATE).cloned())
        };
        Recording(Some(Box::new(RequestSpans {
            trace_id,
            parent,
            tracestate,
            id: new_span_id(),
            start: now_nanos(),
            end: 0,
            method: info.method.clone(),
            path: info.path.to_owned(),
            tls: info.tls,
            version: info.version,
            peer: info.peer,
            route: "-",
            status: 0,
            error: None,
            authenticate: None,
            revocation: None,
            upstream: None,
            upstream_call: UpstreamCall::default(),
        })))
    }

    /// The request was answered with `status` (`error`: the gateway's refusal reason): end
    /// its SERVER span and queue its spans, or drop and count them when the queue is full.
    pub fn finish(
        &self,
        rec: Recording,
        route: &'static str,
        status: u16,
        error: Option<&'static str>,
    ) {
        let Some(mut r) = rec.0 else {
            return;
        };
        r.end = now_nanos();
        r.route = route;
        r.status = status;
        r.error = error;
        if let Err(e) = self.queue.try_send(r) {
            let r = match e {
                mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
            };
            self.dropped.inc_by(r.span_count());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracer(ratio: f64) -> (Tracer, mpsc::Receiver<Box<RequestSpans>>, Counter) {
        let (tx, rx) = mpsc::channel(1);
        let dropped = Counter::default();
        (
            Tracer::new(Sampler::new(ratio), tx, dropped.clone()),
            rx,
            dropped,
        )
    }

    fn trace(tracer: &Tracer, header: Option<&str>) -> (TraceContext, HeaderMap) {
        let mut h = HeaderMap::new();
        if let Some(v) = header {
            h.insert("traceparent", HeaderValue::from_str(v).unwrap());
        }
        (tracer.trace_of(&mut h), h)
    }

    fn info() -> RequestInfo<'static> {
        static GET: Method = Method::GET;
        RequestInfo {
            method: &GET,
            path: "/x",
            tls: true,
            version: Version::HTTP_2,
            peer: IpAddr::from([127, 0, 0, 1]),
        }
    }

    #[test]
    fn a_clients_flag_decides_whatever_the_ratio() {
        let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        for ratio in [0.0, 0.5, 1.0] {
            let (t, ..) = tracer(ratio);
            assert!(trace(&t, Some(sampled)).0.sampled(), "{ratio}");
            let (unsampled, h) = trace(&t, Some(unsampled));
            assert!(!unsampled.sampled(), "{ratio}");
            assert!(!t.begin(&unsampled, &h, info()).is_on());
        }
    }

    #[test]
    fn the_ratio_decides_for_traces_the_gateway_starts() {
        let (all, ..) = tracer(1.0);
        assert!((0..100).all(|_| trace(&all, None).0.sampled()));
        let (none, ..) = tracer(0.0);
        assert!((0..100).all(|_| !trace(&none, None).0.sampled()));
        // On the trace id's last 8 bytes, shifted: ids spread evenly over them give the
        // ratio exactly.
        let s = Sampler::new(0.25);
        let n = 1u64 << 12;
        let kept = (0..n)
            .filter(|i| {
                let mut id = [0u8; 16];
                id[8..].copy_from_slice(&(i << 52).to_be_bytes());
                s.by_trace_id(&id)
            })
            .count() as u64;
        assert_eq!(kept, n / 4);
    }

    #[test]
    fn unsampled_traces_the_gateway_starts_say_so_upstream() {
        let (tracer, mut rx, _) = tracer(0.0);
        let (t, h) = trace(&tracer, None);
        let rec = tracer.begin(&t, &h, info());
        assert!(!rec.is_on());
        assert!(h["traceparent"].to_str().unwrap().ends_with("-00"));
        tracer.finish(rec, "r", 200, None);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (tracer, mut rx, dropped) = tracer(1.0);
        for _ in 0..3 {
            let (t, h) = trace(&tracer, None);
            let mut rec = tracer.begin(&t, &h, info());
            rec.start(Step::Authenticate);
            rec.end(Step::Authenticate, Some("invalid_token"));
            tracer.finish(rec, "r", 401, Some("invalid_token"));
        }
        let got = rx.try_recv().unwrap();
        assert_eq!(got.span_count(), 2);
        assert_eq!(got.authenticate.unwrap().error, Some("invalid_token"));
        assert_eq!(dropped.get(), 4);
    }
}
