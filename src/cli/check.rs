//! `portcullis check`: validate a config file offline and print every problem (exit 2), or
//! what `run` will do beyond what was checked.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;
use crate::jose::jwks::Source;

/// Validate `path`: exit 0 and a summary, or every problem on stderr and exit 2.
pub fn check(path: PathBuf) -> ExitCode {
    match Config::load(&path) {
        Ok(c) => {
            println!(
                "{}: ok ({} route(s), {} key(s), {})",
                path.display(),
                c.routes.len(),
                c.jwt.keys.len(),
                if c.listen.tls.is_some() {
                    "TLS"
                } else {
                    "plain HTTP"
                }
            );
            if let Some(j) = &c.jwt.jwks {
                // `check` stays offline: say what `run` will fetch instead of fetching it.
                match &j.source {
                    Source::Url(u) => println!(
                        "  note: `run` will fetch the key set from {u} before it binds (not fetched by check), then every {}",
                        humantime::format_duration(j.refresh_interval)
                    ),
                    Source::File(p) => println!(
                        "  note: key set file {} parses; `run` re-reads it every {}",
                        p.display(),
                        humantime::format_duration(j.refresh_interval)
                    ),
                    Source::Discovery { document, .. } => println!(
                        "  note: `run` will discover the key set at {document} (not fetched by check)"
                    ),
                }
            }
            for i in &c.jwt.issuers {
                let how = match &i.keys.source {
                    Source::Discovery { document, .. } => format!("discovery at {document}"),
                    other => other.to_string(),
                };
                println!(
                    "  note: issuer `{}` ({}): `run` will fetch its keys from {how} (not fetched by check), then every {}",
                    i.name,
                    i.issuer,
                    humantime::format_duration(i.keys.refresh_interval)
                );
            }
            for f in &c.pending_dev_files {
                println!(
                    "  note: `run` will generate {} at {}",
                    f.what,
                    f.path.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
