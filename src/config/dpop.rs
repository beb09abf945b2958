//! `[dpop]` (RFC 9449 sender-constrained tokens) validated: proof age, server nonces, the
//! accepted proof algorithms and the origin `htu` is checked against.

use std::time::Duration;

use crate::jose::keys::{parse_alg, Family, JwsAlg};

use super::file;

/// Accepted age of a proof's `iat` when `[dpop] max_age` is absent.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);
/// How often the server nonce rotates when `[dpop] nonce_interval` is absent.
pub const DEFAULT_NONCE_INTERVAL: Duration = Duration::from_secs(300);
/// Proof algorithms accepted when `[dpop] algs` is absent.
pub const DEFAULT_ALGS: [JwsAlg; 4] = [JwsAlg::ES256, JwsAlg::EdDSA, JwsAlg::RS256, JwsAlg::PS256];

/// `[dpop]`, validated.
#[derive(Debug, Clone)]
pub struct Dpop {
    pub max_age: Duration,
    /// Require a server nonce in every proof (`use_dpop_nonce` otherwise).
    pub nonce: bool,
    pub nonce_interval: Duration,
    /// Asymmetric algorithms only: a proof key is public by definition.
    pub algs: Vec<JwsAlg>,
    /// `scheme://host[:port]`, lower-case, no trailing slash; `None`: from the request.
    pub public_origin: Option<String>,
}

impl Default for Dpop {
    fn default() -> Self {
        Dpop {
            max_age: DEFAULT_MAX_AGE,
            nonce: false,
            nonce_interval: DEFAULT_NONCE_INTERVAL,
            algs: DEFAULT_ALGS.to_vec(),
            public_origin: None,
        }
    }
}

/// Validate `[dpop]`; each problem names its key and says what would be valid.
pub fn validate(
    f: Option<file::Dpop>,
    duration: &mut dyn FnMut(&str, Option<&String>, Duration) -> Duration,
    problems: &mut Vec<String>,
) -> Dpop {
    let Some(f) = f else {
        return Dpop::default();
    };
    let max_age = duration("dpop.max_age", f.max_age.as_ref(), DEFAULT_MAX_AGE);
    if max_age.is_zero() {
        problems.push("dpop.max_age: must be above zero, e.g. \"60s\"".into());
    }
    let nonce_interval = duration(
        "dpop.nonce_interval",
        f.nonce_interval.as_ref(),
        DEFAULT_NONCE_INTERVAL,
    );
    if nonce_interval.as_secs() == 0 {
        problems.push("dpop.nonce_interval: must be at least one second, e.g. \"5m\"".into());
    }
    let algs = match f.algs {
        None => DEFAULT_ALGS.to_vec(),
        Some(names) => {
            let mut algs = Vec::new();
            for name in &names {
                match parse_alg(name) {
                    Some(a) if a.family() != Family::Hmac => algs.push(a),
                    _ => problems.push(format!(
                        "dpop.algs: `{name}` is not an asymmetric JWS algorithm; use e.g. \
                         \"ES256\", \"EdDSA\", \"RS256\", \"PS256\" (a proof is signed by the \
                         client's private key, never a shared secret)"
                    )),
                }
            }
            if names.is_empty() {
                problems.push("dpop.algs: empty; name at least one, e.g. [\"ES256\"]".into());
            }
            algs
        }
    };
    let public_origin = f.public_origin.and_then(|o| match origin(&o) {
        Ok(o) => Some(o),
        Err(e) => {
            problems.push(format!("dpop.public_origin: {e}"));
            None
        }
    });
    Dpop {
        max_age,
        nonce: f.nonce.unwrap_or(false),
        nonce_interval,
        algs,
        public_origin,
    }
}

/// Why `dpop.public_origin` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("`{value}` is not a URL; write e.g. \"https://api.example.com\"")]
    NotAUrl { value: String },
    #[error(
        "`{value}` is not an origin; write scheme and host only, e.g. \"https://api.example.com\""
    )]
    NotAnOrigin { value: String },
}

/// `https://api.example.com[:port]` as a lower-case origin without trailing slash.
fn origin(s: &str) -> Result<String, OriginError> {
    let uri: http::Uri = s
        .parse()
        .map_err(|_| OriginError::NotAUrl { value: s.into() })?;
    let scheme = uri.scheme_str().map(str::to_ascii_lowercase);
    let path_ok = matches!(uri.path(), "" | "/") && uri.query().is_none();
    match (scheme.as_deref(), uri.authority()) {
        (Some("https" | "http"), Some(a)) if path_ok => Ok(format!(
            "{}://{}",
            scheme.as_deref().unwrap_or("https"),
            a.as_str().to_ascii_lowercase()
        )),
        _ => Err(OriginError::NotAnOrigin { value: s.into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: file::Dpop) -> (Dpop, Vec<String>) {
        let mut problems = Vec::new();
        let mut dur = |_: &str, v: Option<&String>, d: Duration| {
            v.map(|s| crate::config::parse_duration(s).unwrap_or(d))
                .unwrap_or(d)
        };
        let d = validate(Some(f), &mut dur, &mut problems);
        (d, problems)
    }

    #[test]
    fn defaults_and_origins() {
        let (d, p) = run(file::Dpop {
            public_origin: Some("HTTPS://Api.Example.com/".into()),
            ..Default::default()
        });
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(d.public_origin.as_deref(), Some("https://api.example.com"));
        assert_eq!(d.algs, DEFAULT_ALGS);
        assert_eq!(d.max_age, DEFAULT_MAX_AGE);
    }

    #[test]
    fn symmetric_algs_and_paths_are_refused_by_name() {
        let (_, p) = run(file::Dpop {
            algs: Some(vec!["HS256".into(), "none".into()]),
            public_origin: Some("https://x.example/api".into()),
            ..Default::default()
        });
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p.iter().any(|m| m.contains("dpop.algs: `HS256`")));
        assert!(p.iter().any(|m| m.contains("dpop.public_origin")));
    }
}
