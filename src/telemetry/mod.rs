//! Telemetry: log setup ([`init_logging`]), Prometheus [`metrics`], and the console's
//! [`live`] ring (the last 15 minutes, sampled from those metrics once a second).

pub mod live;
pub mod metrics;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Install the global tracing subscriber: `RUST_LOG` wins over `level`. Safe to call twice
/// (the second call is ignored), so tests can start several gateways in one process.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives(level)));
    // Logs go to stderr: stdout is for command output (`portcullis token` prints the token).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// The filter for a configured `level`. rustls logs a warning for things any client can do
/// (an IP address sent as SNI, as wrk and many HTTP libraries do); at warn that is one log
/// line per connection an attacker opens, so its own messages are kept to errors unless the
/// operator names `rustls` in the level. Handshake failures are counted in the metrics.
fn directives(level: &str) -> String {
    if level.contains("rustls") {
        level.to_owned()
    } else {
        format!("{level},rustls=error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_peer_warnings_are_quiet_unless_asked_for() {
        assert_eq!(directives("info"), "info,rustls=error");
        assert_eq!(directives("debug,rustls=trace"), "debug,rustls=trace");
        assert!(EnvFilter::try_new(directives("warn")).is_ok());
    }
}
