//! W3C Trace Context (https://www.w3.org/TR/trace-context/): a request's `traceparent` is
//! kept and forwarded when the client sends a valid one (with its `tracestate`), and created
//! when it does not, so the upstream and the gateway's own logs share one trace id.
//!
//! With the OTLP export off (no `[telemetry] otlp_endpoint`), the gateway records no spans,
//! so it forwards a client's `traceparent` unchanged: a parent id of its own would point the
//! upstream's span at a span nobody recorded. A trace the gateway starts is marked sampled
//! (`-01`), so the upstream's parent-based sampler records it as it would a request that
//! came without one.
//!
//! With the export on ([`super::spans`]), a sampled request's `traceparent` goes upstream
//! with the gateway's own `upstream` span as its parent id ([`child_traceparent`]), so the
//! upstream's span hangs under a span the collector has; and a trace the gateway starts
//! carries the sampler's decision in its flags (`-00` when not sampled,
//! [`TraceContext::of_request_with`]). A client's unsampled trace is forwarded unchanged, as
//! with export off.
//!
//! Cost on the request path: a valid header is checked in place (no allocation); a new one
//! is 24 bytes from a thread-local xoshiro generator and one header value.

use std::cell::RefCell;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `00-` + 32 + `-` + 16 + `-` + 2.
const LEN: usize = 55;

/// The trace a request belongs to: its `traceparent` value (the client's, or the one the
/// gateway created and set on the request).
#[derive(Debug, Clone)]
pub struct TraceContext {
    header: HeaderValue,
    /// The gateway started this trace (no valid `traceparent` came with the request).
    pub created: bool,
}

impl TraceContext {
    /// Keep the request's valid `traceparent` (and `tracestate`), or replace an absent,
    /// repeated or invalid one with a new trace (dropping `tracestate`, which belongs to the
    /// trace it came with: the spec's rule for a `traceparent` that does not parse).
    pub fn of_request(headers: &mut HeaderMap) -> TraceContext {
        Self::of_request_with(headers, |_| true)
    }

    /// [`TraceContext::of_request`], with `sample` deciding the sampled flag of a trace the
    /// gateway starts (from its new trace id); a client's `traceparent` keeps its own.
    pub fn of_request_with(
        headers: &mut HeaderMap,
        sample: impl FnOnce(&[u8; 16]) -> bool,
    ) -> TraceContext {
        let mut given = headers.get_all(&TRACEPARENT).iter();
        if let (Some(v), None) = (given.next(), given.next()) {
            if is_valid(v.as_bytes()) {
                return TraceContext {
                    header: v.clone(),
                    created: false,
                };
            }
        }
        headers.remove(&TRACESTATE);
        let header = new_traceparent(sample);
        headers.insert(TRACEPARENT.clone(), header.clone());
        TraceContext {
            header,
            created: true,
        }
    }

    /// The 32 lower-case hex digits of the trace id.
    pub fn trace_id(&self) -> &str {
        // Checked (or written) as ASCII hex at 3..35; the fallback is unreachable.
        self.header
            .to_str()
            .ok()
            .and_then(|s| s.get(3..35))
            .unwrap_or("-")
    }

    /// The `traceparent` value.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// The trace id, parent id and flags as bytes (the header was checked as hex, so the
    /// fallbacks are unreachable). For a trace the gateway started, the parent id is the
    /// random one it wrote, not a recorded span.
    pub fn ids(&self) -> ([u8; 16], [u8; 8], u8) {
        let s = self.header.to_str().unwrap_or("");
        let trace = s.get(3..35).and_then(crate::hex::decode).unwrap_or([0; 16]);
        let parent = s.get(36..52).and_then(crate::hex::decode).unwrap_or([0; 8]);
        let flags = s
            .get(53..55)
            .and_then(crate::hex::decode::<1>)
            .map_or(0, |f| f[0]);
        (trace, parent, flags)
    }

    /// The `sampled` flag (bit 0 of trace-flags) is set: the low bit of the flags' second
    /// hex digit (checked lower-case hex).
    pub fn sampled(&self) -> bool {
        self.header
            .as_bytes()
            .get(54)
            .is_some_and(|c| b"13579bdf".contains(c))
    }
}

/// `00-<trace>-<span>-01`: the `traceparent` that makes `span` (a recorded, sampled span of
/// the gateway) the parent of what the upstream records. Version 00, as the spec asks of a
/// vendor that changes the parent id, whatever version came in.
pub fn child_traceparent(trace: &[u8; 16], span: &[u8; 8]) -> HeaderValue {
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-01";
    crate::hex::encode_into(trace, &mut text[3..35]);
    crate::hex::encode_into(span, &mut text[36..52]);
    let mut v = HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static(
        "00-00000000000000000000000000000001-0000000000000001-01",
    ));
    v.set_sensitive(true);
    v
}

/// A new span id: 8 random bytes, never all zero (an invalid id).
pub fn new_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    IDS.with(|rng| rng.borrow_mut().fill_bytes(&mut id));
    if id == [0; 8] {
        id[7] = 1;
    }
    id
}

/// A `traceparent` this gateway can keep: version 00 exactly as specified, or a later
/// version whose first 55 bytes have the version-00 shape (and a `-` after them when longer,
/// as the spec asks of future versions); never version `ff`, an all-zero trace or parent id,
/// or upper-case hex.
fn is_valid(v: &[u8]) -> bool {
    if v.len() < LEN || (v.len() > LEN && (v[..2] == *b"00" || v[LEN] != b'-')) {
        return false;
    }
    let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let nonzero = |s: &[u8]| s.iter().any(|c| *c != b'0');
    let (version, trace, parent, flags) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
    v[2] == b'-'
        && v[35] == b'-'
        && v[52] == b'-'
        && hex(version)
        && version != b"ff"
        && hex(trace)
        && nonzero(trace)
        && hex(parent)
        && nonzero(parent)
        && hex(flags)
}

thread_local! {
    /// Trace and span ids need to be unique, not secret: a fast non-cryptographic generator,
    /// seeded once per thread from the OS.
    static IDS: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// `00-<new trace id>-<new parent id>-01`, or `-00` when `sample` says no.
fn new_traceparent(sample: impl FnOnce(&[u8; 16]) -> bool) -> HeaderValue {
    let mut ids = [0u8; 24];
    IDS.with(|rng| rng.borrow_mut().fill_bytes(&mut ids));
    // An all-zero id is invalid; the odds are 2^-64 at worst, but the fix is one store.
    if ids[..16].iter().all(|b| *b == 0) {
        ids[15] = 1;
    }
    if ids[16..].iter().all(|b| *b == 0) {
        ids[23] = 1;
    }
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-01";
    crate::hex::encode_into(&ids[..16], &mut text[3..35]);
    crate::hex::encode_into(&ids[16..], &mut text[36..52]);
    let mut trace = [0u8; 16];
    trace.copy_from_slice(&ids[..16]);
    if !sample(&trace) {
        text[54] = b'0';
    }
    let mut v = HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static(
        "00-00000000000000000000000000000001-0000000000000001-01",
    ));
    // New per request: never worth a slot in an HTTP/2 upstream's HPACK table.
    v.set_sensitive(true);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_and_its_tracestate_are_kept() {
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_static(GOOD));
        h.insert(&TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        let t = TraceContext::of_request(&mut h);
        assert!(!t.created);
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(h[&TRACEPARENT], GOOD);
        assert_eq!(h[&TRACESTATE], "congo=t61rcWkgMzE");
    }

    #[test]
    fn invalid_or_missing_ones_are_replaced_by_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let mut h = HeaderMap::new();
            h.insert(&TRACEPARENT, HeaderValue::from_static(bad));
            h.insert(&TRACESTATE, HeaderValue::from_static("a=b"));
            let t = TraceContext::of_request(&mut h);
            assert!(t.created, "{bad:?} was kept");
            assert!(is_valid(h[&TRACEPARENT].as_bytes()));
            assert!(h.get(&TRACESTATE).is_none());
        }
        // A later version may carry more fields after a `-`.
        let mut h = HeaderMap::new();
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what";
        h.insert(&TRACEPARENT, HeaderValue::from_static(future));
        assert!(!TraceContext::of_request(&mut h).created);
    }

    #[test]
    fn ids_flags_and_child_headers() {
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_static(GOOD));
        let t = TraceContext::of_request(&mut h);
        let (trace, parent, flags) = t.ids();
        assert_eq!(
            crate::hex::encode(&trace),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(crate::hex::encode(&parent), "00f067aa0ba902b7");
        assert_eq!(flags, 1);
        assert!(t.sampled());
        let child = child_traceparent(&trace, &[0xab; 8]);
        assert_eq!(
            child,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-abababababababab-01"
        );

        assert!(TraceContext::of_request(&mut HeaderMap::new()).sampled());
        let mut h = HeaderMap::new();
        let t = TraceContext::of_request_with(&mut h, |_| false);
        assert!(!t.sampled());
        assert!(h[&TRACEPARENT].to_str().unwrap().ends_with("-00"));
        assert_eq!(h[&TRACEPARENT], *t.header());
        // A client's trace keeps its flags whatever the sampler says.
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_static(GOOD));
        assert!(TraceContext::of_request_with(&mut h, |_| false).sampled());
        assert_eq!(h[&TRACEPARENT], GOOD);
        assert_ne!(new_span_id(), new_span_id());
    }

    #[test]
    fn created_traces_differ() {
        let (mut a, mut b) = (HeaderMap::new(), HeaderMap::new());
        let (ta, tb) = (
            TraceContext::of_request(&mut a),
            TraceContext::of_request(&mut b),
        );
        assert_ne!(ta.trace_id(), tb.trace_id());
        assert_eq!(ta.trace_id().len(), 32);
        assert!(a[&TRACEPARENT].to_str().unwrap().ends_with("-01"));
    }
}
