//! Telemetry: log setup ([`init_logging`]), Prometheus [`metrics`], the console's
//! [`live`] ring (the last 15 minutes, sampled from those metrics once a second), W3C
//! [`trace`] context, and the optional OTLP trace export: [`spans`] recorded on the request
//! path, [`otlp`] batching and sending them.

pub mod live;
pub mod metrics;
pub mod otlp;
pub mod spans;
pub mod trace;

use std::fmt;
use std::io::IsTerminal;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Install the global tracing subscriber: `RUST_LOG` wins over `level`. Safe to call twice
/// (the second call is ignored), so tests can start several gateways in one process.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives(level)));
    // Logs go to stderr: stdout is for command output (`portcullis token` prints the token).
    // Colours only for a person at a terminal: a file, a pipe or a log collector gets plain
    // text (and `NO_COLOR`, https://no-color.org, turns them off anywhere).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .map_event_format(JsonLists)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// A list of strings for a log field: `notes = %JsonList(&notes)`. Written as a JSON array,
/// which the JSON log format then embeds as an array (see [`JsonLists`]) rather than as a
/// string; the pretty format shows the same array text.
pub struct JsonList<'a>(pub &'a [String]);

impl fmt::Display for JsonList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(self.0).map_err(|_| fmt::Error)?)
    }
}

/// Log fields that carry a [`JsonList`].
const LIST_FIELDS: [&str; 1] = ["notes"];

/// The JSON event format, with each [`LIST_FIELDS`] value embedded as a JSON array: tracing
/// records a field as a string, so `{"notes":"[]"}` becomes `{"notes":[]}`. Only lines that
/// carry such a field are parsed again; every other line passes through as written.
struct JsonLists<E>(E);

impl<S, N, E> FormatEvent<S, N> for JsonLists<E>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    E: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let has_list = event
            .metadata()
            .fields()
            .iter()
            .any(|f| LIST_FIELDS.contains(&f.name()));
        if !has_list {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&embed_lists(&line))
    }
}

/// `line` (one JSON object and a newline) with each list field's string value replaced by
/// the array it spells; unchanged when it does not parse.
fn embed_lists(line: &str) -> String {
    let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_str(line.trim_end()) else {
        return line.to_owned();
    };
    for name in LIST_FIELDS {
        let parsed = match obj.get(name) {
            Some(serde_json::Value::String(s)) => serde_json::from_str::<serde_json::Value>(s).ok(),
            _ => None,
        };
        if let Some(list @ serde_json::Value::Array(_)) = parsed {
            obj.insert(name.to_owned(), list);
        }
    }
    format!("{}\n", serde_json::Value::Object(obj))
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
    fn list_fields_become_json_arrays() {
        let notes = vec!["a \"b\"".to_owned()];
        let text = JsonList(&notes).to_string();
        let line = serde_json::json!({"message": "configuration reloaded", "notes": text});
        let out: serde_json::Value =
            serde_json::from_str(&embed_lists(&format!("{line}\n"))).unwrap();
        assert_eq!(out["notes"], serde_json::json!(["a \"b\""]));
        let empty = serde_json::json!({"notes": JsonList(&[]).to_string()});
        let out: serde_json::Value =
            serde_json::from_str(&embed_lists(&format!("{empty}\n"))).unwrap();
        assert_eq!(out["notes"], serde_json::json!([]));
    }

    #[test]
    fn rustls_peer_warnings_are_quiet_unless_asked_for() {
        assert_eq!(directives("info"), "info,rustls=error");
        assert_eq!(directives("debug,rustls=trace"), "debug,rustls=trace");
        assert!(EnvFilter::try_new(directives("warn")).is_ok());
    }
}
