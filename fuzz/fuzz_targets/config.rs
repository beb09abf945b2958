//! Arbitrary text as `config.toml`: `Config::from_toml` must never panic, whatever the TOML,
//! the types, the durations, the URLs or the `${VAR}` references; it answers a config or a
//! list of problems.
//!
//! Relative paths resolve against an empty temp dir. Inputs naming special files (`/dev`,
//! `/proc`, `/sys`) are skipped: the loader reads whatever file the operator names, and
//! `/dev/zero` never ends. That is the operator's trust domain, not an input to fuzz.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use portcullis::Config;

static BASE: LazyLock<tempfile::TempDir> = LazyLock::new(|| tempfile::tempdir().expect("temp dir"));

fn names_special_file(v: &toml::Value) -> bool {
    match v {
        toml::Value::String(s) => ["dev", "proc", "sys"].iter().any(|w| s.contains(w)),
        toml::Value::Array(items) => items.iter().any(names_special_file),
        toml::Value::Table(t) => t.values().any(names_special_file),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(value) = toml::from_str::<toml::Value>(text) {
        if names_special_file(&value) {
            return;
        }
    }
    match Config::from_toml(text, BASE.path()) {
        Ok(_) => {}
        Err(e) => assert!(!e.problems.is_empty(), "an error without a problem"),
    }
});
