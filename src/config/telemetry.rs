//! `[telemetry]` validated: the OTLP/HTTP trace export (off unless `otlp_endpoint` is set),
//! its sampling ratio, the collector's headers, and how spans are batched.

use std::fmt;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::Uri;

use super::file;

/// `sample_ratio` when absent: every trace the gateway starts is exported.
pub const DEFAULT_SAMPLE_RATIO: f64 = 1.0;
/// `service.name` of the exported spans when `service_name` is absent.
pub const DEFAULT_SERVICE_NAME: &str = "portcullis";
/// Time allowed for one export request, connect included (the OTLP exporters' default).
pub const DEFAULT_OTLP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a finished span waits for its export request.
pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Spans per export request, at most (the OpenTelemetry batch span processor's default).
pub const DEFAULT_BATCH_SIZE: usize = 512;
/// Traced requests (1 to 4 spans each) waiting for export; past it a request's spans are
/// dropped and counted rather than delaying the request.
pub const DEFAULT_QUEUE_SIZE: usize = 2048;
/// The OTLP/HTTP path of the trace service (OTLP specification, "OTLP/HTTP Request").
pub const TRACES_PATH: &str = "/v1/traces";

/// `[telemetry]`, validated. Export is off unless `otlp` is set.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    pub otlp: Option<Otlp>,
}

/// The OTLP/HTTP trace export.
#[derive(Clone)]
pub struct Otlp {
    /// Where export requests are POSTed: `otlp_endpoint` with `/v1/traces`.
    pub url: Uri,
    /// `otlp_headers`: sent with every export request (a collector's API key, say). The
    /// values are marked sensitive and never shown.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// 0.0 ..= 1.0: the share of the traces the gateway starts that it exports.
    pub sample_ratio: f64,
    pub service_name: String,
    pub timeout: Duration,
    pub interval: Duration,
    pub batch_size: usize,
    pub queue_size: usize,
}

impl fmt::Debug for Otlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

impl Otlp {
    /// Every setting on one line, header values left out (for a reload note and `Debug`).
    pub fn summary(&self) -> String {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        format!(
            "{} (sample_ratio {}, service_name {}, otlp_timeout {}, export_interval {}, batch_size {}, queue_size {}, otlp_headers [{}])",
            self.url,
            self.sample_ratio,
            self.service_name,
            humantime::format_duration(self.timeout),
            humantime::format_duration(self.interval),
            self.batch_size,
            self.queue_size,
            names.join(", ")
        )
    }
}

/// Why `telemetry.otlp_endpoint` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("`{0}` is not a URL; write e.g. \"http://127.0.0.1:4318\"")]
    NotAUrl(String),
    #[error(
        "`{0}` is not an http:// or https:// URL (OTLP/HTTP); write e.g. \"http://127.0.0.1:4318\""
    )]
    Scheme(String),
    #[error("`{0}` carries credentials in the URL; send them with telemetry.otlp_headers instead")]
    UserInfo(String),
    #[error("`{0}` has a query or fragment; write the collector's base URL, e.g. \"http://127.0.0.1:4318\"")]
    Query(String),
}

/// The URL export requests go to: `endpoint` + `/v1/traces` (the OTLP/HTTP rule for a base
/// endpoint), or `endpoint` as it is when its path already ends in `/v1/traces`.
pub fn traces_url(endpoint: &str) -> Result<Uri, EndpointError> {
    let shown = || endpoint.to_owned();
    let uri: Uri = endpoint
        .trim()
        .parse()
        .map_err(|_| EndpointError::NotAUrl(shown()))?;
    let authority = match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(a)) if !a.host().is_empty() => a.clone(),
        (Some("http" | "https"), _) => return Err(EndpointError::NotAUrl(shown())),
        _ => return Err(EndpointError::Scheme(shown())),
    };
    if authority.as_str().contains('@') {
        // Never echo the credentials back.
        let redacted = format!(
            "{}://…@{}",
            uri.scheme_str().unwrap_or("http"),
            authority.host()
        );
        return Err(EndpointError::UserInfo(redacted));
    }
    if uri.query().is_some() || endpoint.contains('#') {
        return Err(EndpointError::Query(shown()));
    }
    let path = uri.path();
    let path = if path.ends_with(TRACES_PATH) {
        path.to_owned()
    } else {
        format!("{}{TRACES_PATH}", path.trim_end_matches('/'))
    };
    Uri::builder()
        .scheme(uri.scheme_str().unwrap_or("http"))
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| EndpointError::NotAUrl(shown()))
}

/// Validate `[telemetry]`; each problem names its key and says what would be valid. The
/// other keys only apply when `otlp_endpoint` is set (they are still checked without it).
pub fn validate(
    f: Option<&file::Telemetry>,
    duration: &mut dyn FnMut(&str, Option<&String>, Duration) -> Duration,
    problems: &mut Vec<String>,
) -> Telemetry {
    let Some(f) = f else {
        return Telemetry::default();
    };
    let sample_ratio = f.sample_ratio.unwrap_or(DEFAULT_SAMPLE_RATIO);
    if !(0.0..=1.0).contains(&sample_ratio) {
        problems.push(format!(
            "telemetry.sample_ratio: `{sample_ratio}` is not a ratio; write a number from 0.0 (only traces a client sampled) to 1.0 (every trace)"
        ));
    }
    let service_name = f
        .service_name
        .clone()
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    if service_name.trim().is_empty() {
        problems.push(
            "telemetry.service_name: empty; remove the key for \"portcullis\" or name the service"
                .into(),
        );
    }
    let timeout = duration(
        "telemetry.otlp_timeout",
        f.otlp_timeout.as_ref(),
        DEFAULT_OTLP_TIMEOUT,
    );
    if timeout.is_zero() {
        problems.push("telemetry.otlp_timeout: must be more than 0, e.g. \"10s\"".into());
    }
    let interval = duration(
        "telemetry.export_interval",
        f.export_interval.as_ref(),
        DEFAULT_EXPORT_INTERVAL,
    );
    if interval < Duration::from_millis(10) {
        problems.push(
            "telemetry.export_interval: must be at least 10ms (one export request per interval at most), e.g. \"1s\"".into(),
        );
    }
    let batch_size = f.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
    if batch_size == 0 {
        problems.push("telemetry.batch_size: must be at least 1 span, e.g. 512".into());
    }
    let queue_size = f.queue_size.unwrap_or(DEFAULT_QUEUE_SIZE);
    if queue_size == 0 {
        problems.push("telemetry.queue_size: must be at least 1 request, e.g. 2048".into());
    }
    let mut headers = Vec::new();
    for (name, value) in &f.otlp_headers {
        let key = format!("telemetry.otlp_headers.{name}");
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(mut v)) => {
                let reserved = [
                    http::header::CONTENT_TYPE,
                    http::header::CONTENT_LENGTH,
                    http::header::HOST,
                ];
                if reserved.contains(&n) {
                    problems.push(format!(
                        "{key}: the exporter sets this header itself; remove it"
                    ));
                }
                v.set_sensitive(true);
                headers.push((n, v));
            }
            (Err(_), _) => problems.push(format!("{key}: not a valid HTTP header name")),
            // The value may be a secret: never echoed.
            (_, Err(_)) => problems.push(format!(
                "{key}: the value is not a valid HTTP header value (visible ASCII only)"
            )),
        }
    }
    let url = match f.otlp_endpoint.as_deref().map(traces_url) {
        None => return Telemetry::default(),
        Some(Ok(u)) => u,
        Some(Err(e)) => {
            problems.push(format!("telemetry.otlp_endpoint: {e}"));
            return Telemetry::default();
        }
    };
    Telemetry {
        otlp: Some(Otlp {
            url,
            headers,
            sample_ratio,
            service_name,
            timeout,
            interval,
            batch_size,
            queue_size,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: file::Telemetry) -> (Telemetry, Vec<String>) {
        let mut problems = Vec::new();
        let mut dur = |_: &str, v: Option<&String>, d: Duration| {
            v.map(|s| crate::config::parse_duration(s).unwrap_or(d))
                .unwrap_or(d)
        };
        let t = validate(Some(&f), &mut dur, &mut problems);
        (t, problems)
    }

    #[test]
    fn the_traces_path_is_added_once() {
        for (given, want) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
            (
                "https://otel.example/otlp",
                "https://otel.example/otlp/v1/traces",
            ),
            (
                "https://otel.example/otlp/",
                "https://otel.example/otlp/v1/traces",
            ),
            ("http://c:4318/v1/traces", "http://c:4318/v1/traces"),
            ("http://c:4318/x/v1/traces", "http://c:4318/x/v1/traces"),
        ] {
            assert_eq!(traces_url(given).unwrap().to_string(), want, "{given}");
        }
    }

    #[test]
    fn endpoints_that_are_not_otlp_http_are_refused_by_reason() {
        assert!(matches!(
            traces_url("127.0.0.1:4318"),
            Err(EndpointError::Scheme(_))
        ));
        assert!(matches!(
            traces_url("grpc://c:4317"),
            Err(EndpointError::Scheme(_))
        ));
        assert!(matches!(
            traces_url("not a url"),
            Err(EndpointError::NotAUrl(_))
        ));
        assert!(matches!(
            traces_url("http://c:4318/?a=b"),
            Err(EndpointError::Query(_))
        ));
        let e = traces_url("https://user:hunter2@c:4318").unwrap_err();
        assert!(matches!(e, EndpointError::UserInfo(_)));
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn defaults_apply_and_absent_endpoint_means_off() {
        let (t, p) = run(file::Telemetry {
            otlp_endpoint: Some("http://127.0.0.1:4318".into()),
            ..Default::default()
        });
        assert!(p.is_empty(), "{p:?}");
        let o = t.otlp.unwrap();
        assert_eq!(o.sample_ratio, DEFAULT_SAMPLE_RATIO);
        assert_eq!(o.service_name, "portcullis");
        assert_eq!(o.batch_size, DEFAULT_BATCH_SIZE);
        assert_eq!(o.interval, DEFAULT_EXPORT_INTERVAL);
        let (t, p) = run(file::Telemetry {
            sample_ratio: Some(0.25),
            ..Default::default()
        });
        assert!(p.is_empty() && t.otlp.is_none(), "{p:?}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (f, key) in [
            (
                file::Telemetry {
                    sample_ratio: Some(1.5),
                    ..Default::default()
                },
                "telemetry.sample_ratio",
            ),
            (
                file::Telemetry {
                    sample_ratio: Some(-0.1),
                    ..Default::default()
                },
                "telemetry.sample_ratio",
            ),
            (
                file::Telemetry {
                    sample_ratio: Some(f64::NAN),
                    ..Default::default()
                },
                "telemetry.sample_ratio",
            ),
            (
                file::Telemetry {
                    batch_size: Some(0),
                    ..Default::default()
                },
                "telemetry.batch_size",
            ),
            (
                file::Telemetry {
                    queue_size: Some(0),
                    ..Default::default()
                },
                "telemetry.queue_size",
            ),
            (
                file::Telemetry {
                    otlp_endpoint: Some("udp://c:4317".into()),
                    ..Default::default()
                },
                "telemetry.otlp_endpoint",
            ),
            (
                file::Telemetry {
                    otlp_timeout: Some("0s".into()),
                    ..Default::default()
                },
                "telemetry.otlp_timeout",
            ),
        ] {
            let (_, p) = run(f);
            assert_eq!(p.len(), 1, "{key}: {p:?}");
            assert!(p[0].starts_with(key), "{key}: {p:?}");
        }
    }

    #[test]
    fn header_values_are_sensitive_and_never_echoed() {
        let mut f = file::Telemetry {
            otlp_endpoint: Some("http://c:4318".into()),
            ..Default::default()
        };
        f.otlp_headers
            .insert("x-api-key".into(), "s3cret-value".into());
        let (t, p) = run(f);
        assert!(p.is_empty(), "{p:?}");
        let o = t.otlp.unwrap();
        assert!(o.headers[0].1.is_sensitive());
        assert!(!format!("{o:?}").contains("s3cret"));
        let mut f = file::Telemetry::default();
        f.otlp_headers
            .insert("x-api-key".into(), "bad\nvalue-s3cret".into());
        let (_, p) = run(f);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(!p[0].contains("s3cret"), "{p:?}");
    }
}
