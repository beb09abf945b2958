//! Telemetry: log setup ([`init_logging`]) and Prometheus [`metrics`].

pub mod metrics;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Install the global tracing subscriber: `RUST_LOG` wins over `level`. Safe to call twice
/// (the second call is ignored), so tests can start several gateways in one process.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
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
