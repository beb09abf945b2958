//! `[[routes]]` upstream keys (issue 16): `upstream` or `upstreams`, `upstream_ca_file`,
//! `upstream_client_cert`/`upstream_client_key`, `upstream_protocol`, `balance`,
//! `dns_refresh` and `[routes.health]`, validated into a typed [`Upstream`]. The TLS client
//! configuration is built here, so a CA file or client key that cannot be used stops the
//! start (or a reload) instead of failing requests later.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{PathAndQuery, Scheme};
use http::Uri;

use super::{file, parse_duration, resolve};
use crate::routing::{
    Balance, HealthCheck, Upstream, UpstreamProtocol, UpstreamTarget, DEFAULT_DNS_REFRESH,
};

/// `[routes.health] interval` when absent.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// `[routes.health] timeout` when absent.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// `[routes.health] unhealthy_after` / `healthy_after` when absent (consecutive checks).
pub const DEFAULT_HEALTH_THRESHOLD: u32 = 2;
/// The shortest `dns_refresh`: DNS answers live for seconds at least, and each refresh is a
/// resolver query per named target.
pub const MIN_DNS_REFRESH: Duration = Duration::from_secs(1);

/// Validate one route's upstream keys; `key` is `routes[i]`. Every problem is pushed, each
/// naming its key; `None` when the route cannot be built.
pub(super) fn validate(
    base: &Path,
    key: &str,
    r: &file::Route,
    problems: &mut Vec<String>,
) -> Option<Upstream> {
    let urls: Vec<(String, &str)> = match (&r.upstream, &r.upstreams) {
        (Some(one), None) => vec![(format!("{key}.upstream"), one.as_str())],
        (None, Some(many)) if !many.is_empty() => many
            .iter()
            .enumerate()
            .map(|(i, u)| (format!("{key}.upstreams[{i}]"), u.as_str()))
            .collect(),
        (None, Some(_)) => {
            problems.push(format!(
                "{key}.upstreams: empty; list at least one URL, e.g. [\"http://10.0.0.5:8080\"]"
            ));
            return None;
        }
        (Some(_), Some(_)) => {
            problems.push(format!(
                "{key}: set either upstream (one URL) or upstreams (several), not both"
            ));
            return None;
        }
        (None, None) => {
            problems.push(format!(
                "{key}: no upstream; set upstream = \"http://host:port\" or upstreams = [..]"
            ));
            return None;
        }
    };
    let mut targets: Vec<UpstreamTarget> = Vec::with_capacity(urls.len());
    let mut base_path: Option<String> = None;
    let mut ok = true;
    for (url_key, url) in &urls {
        match parse_target(url) {
            Ok((target, path)) => {
                if targets.iter().any(|t| t.origin == target.origin) {
                    problems.push(format!("{url_key}: `{url}` is listed twice"));
                    ok = false;
                }
                match &base_path {
                    Some(p) if *p != path => {
                        problems.push(format!(
                            "{url_key}: `{url}` has another path than the first target (`{p}`); \
                             every target of a route must share one base path"
                        ));
                        ok = false;
                    }
                    _ => base_path = Some(path),
                }
                targets.push(target);
            }
            Err(e) => {
                problems.push(format!("{url_key}: {e}"));
                ok = false;
            }
        }
    }

    let protocol = match r.upstream_protocol.as_deref() {
        None | Some("http1") => UpstreamProtocol::Http1,
        Some("h2") => UpstreamProtocol::H2,
        Some("auto") => UpstreamProtocol::Auto,
        Some(other) => {
            problems.push(format!(
                "{key}.upstream_protocol: `{other}` is not a protocol; use \"http1\", \"h2\" or \"auto\""
            ));
            ok = false;
            UpstreamProtocol::Http1
        }
    };
    let balance = match r.balance.as_deref() {
        None | Some("round_robin") => Balance::RoundRobin,
        Some("least_requests") => Balance::LeastRequests,
        Some("user_hash") => Balance::UserHash,
        Some(other) => {
            problems.push(format!(
                "{key}.balance: `{other}` is not a policy; use \"round_robin\", \"least_requests\" or \"user_hash\""
            ));
            ok = false;
            Balance::RoundRobin
        }
    };

    let any_tls = targets.iter().any(UpstreamTarget::is_tls);
    let tls = tls_settings(base, key, r, any_tls, problems, &mut ok);
    let health = r.health.as_ref().and_then(|h| health(key, h, problems));
    if r.health.is_some() && health.is_none() {
        ok = false;
    }
    let dns_refresh = dns_refresh(key, r, &targets, problems, &mut ok);
    if !ok {
        return None;
    }
    let first = targets.first()?.clone();
    Some(Upstream {
        origin: first.origin,
        authority: first.authority,
        base_path: base_path.unwrap_or_default(),
        targets,
        protocol,
        balance,
        tls,
        health,
        dns_refresh,
    })
}

/// `dns_refresh`: a duration of at least [`MIN_DNS_REFRESH`], on a route with a target
/// named by host name (IP literals are never resolved, so the key would do nothing).
fn dns_refresh(
    key: &str,
    r: &file::Route,
    targets: &[UpstreamTarget],
    problems: &mut Vec<String>,
    ok: &mut bool,
) -> Duration {
    let Some(s) = &r.dns_refresh else {
        return DEFAULT_DNS_REFRESH;
    };
    let mut fail = |why: String| {
        problems.push(format!("{key}.dns_refresh: {why}"));
        *ok = false;
        DEFAULT_DNS_REFRESH
    };
    match parse_duration(s) {
        Err(e) => fail(e),
        Ok(d) if d < MIN_DNS_REFRESH => fail(format!(
            "`{s}` is shorter than {}s; each refresh queries the resolver for every named target",
            MIN_DNS_REFRESH.as_secs()
        )),
        Ok(_) if !targets.is_empty() && targets.iter().all(|t| !t.named) => fail(
            "only applies to targets named by host name; every target of this route is an IP address"
                .into(),
        ),
        Ok(d) => d,
    }
}

/// The TLS client settings: only meaningful (and then always built) when a target is
/// `https://`.
fn tls_settings(
    base: &Path,
    key: &str,
    r: &file::Route,
    any_tls: bool,
    problems: &mut Vec<String>,
    ok: &mut bool,
) -> Option<Arc<rustls::ClientConfig>> {
    let tls_keys = [
        ("upstream_ca_file", r.upstream_ca_file.is_some()),
        ("upstream_client_cert", r.upstream_client_cert.is_some()),
        ("upstream_client_key", r.upstream_client_key.is_some()),
    ];
    if !any_tls {
        for (name, set) in tls_keys {
            if set {
                problems.push(format!(
                    "{key}.{name}: only applies to https:// upstreams; this route has none"
                ));
                *ok = false;
            }
        }
        return None;
    }
    let mut read = |name: &str, p: &Path| match std::fs::read(resolve(base, p)) {
        Ok(b) => Some(b),
        Err(e) => {
            problems.push(format!(
                "{key}.{name}: cannot read `{}`: {e}",
                resolve(base, p).display()
            ));
            None
        }
    };
    let ca = match &r.upstream_ca_file {
        Some(p) => Some(read("upstream_ca_file", p)?),
        None => None,
    };
    let client = match (&r.upstream_client_cert, &r.upstream_client_key) {
        (Some(c), Some(k)) => Some((
            read("upstream_client_cert", c)?,
            read("upstream_client_key", k)?,
        )),
        (None, None) => None,
        _ => {
            problems.push(format!(
                "{key}: set both upstream_client_cert and upstream_client_key, or neither"
            ));
            *ok = false;
            return None;
        }
    };
    match crate::tls::upstream_client_config(
        ca.as_deref(),
        client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
    ) {
        Ok(cfg) => Some(Arc::new(cfg)),
        Err(e) => {
            problems.push(format!("{key}: {e}"));
            *ok = false;
            None
        }
    }
}

fn health(key: &str, h: &file::Health, problems: &mut Vec<String>) -> Option<HealthCheck> {
    let before = problems.len();
    let path = match PathAndQuery::try_from(h.path.as_str()) {
        Ok(p) if h.path.starts_with('/') => Some(p),
        _ => {
            problems.push(format!(
                "{key}.health.path: `{}` is not an absolute path; write e.g. \"/healthz\"",
                h.path
            ));
            None
        }
    };
    let mut duration = |name: &str, v: Option<&String>, default: Duration| match v {
        None => default,
        Some(s) => match parse_duration(s) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                problems.push(format!("{key}.health.{name}: must be more than 0"));
                default
            }
            Err(e) => {
                problems.push(format!("{key}.health.{name}: {e}"));
                default
            }
        },
    };
    let interval = duration("interval", h.interval.as_ref(), DEFAULT_HEALTH_INTERVAL);
    let timeout = duration("timeout", h.timeout.as_ref(), DEFAULT_HEALTH_TIMEOUT);
    let unhealthy_after = h.unhealthy_after.unwrap_or(DEFAULT_HEALTH_THRESHOLD);
    let healthy_after = h.healthy_after.unwrap_or(DEFAULT_HEALTH_THRESHOLD);
    for (name, n) in [
        ("unhealthy_after", unhealthy_after),
        ("healthy_after", healthy_after),
    ] {
        if n == 0 {
            problems.push(format!(
                "{key}.health.{name}: must be at least 1 (a number of consecutive checks)"
            ));
        }
    }
    if timeout > interval {
        problems.push(format!(
            "{key}.health.timeout: longer than the interval; a check would still run when the next one starts"
        ));
    }
    if problems.len() != before {
        return None;
    }
    Some(HealthCheck {
        path: path?,
        interval,
        timeout,
        unhealthy_after,
        healthy_after,
    })
}

/// One target URL: `http://` or `https://`, a host, no query; returns the target and its
/// base path (without trailing slash).
fn parse_target(s: &str) -> Result<(UpstreamTarget, String), String> {
    let uri: Uri = s
        .parse()
        .map_err(|e| format!("`{s}` is not a URL ({e}); write e.g. \"http://127.0.0.1:8080\""))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => return Err(format!("`{s}` must start with http:// or https://")),
    };
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("`{s}` has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "`{s}`: credentials in an upstream URL are not supported"
        ));
    }
    if uri.query().is_some() {
        return Err(format!("`{s}`: an upstream URL cannot have a query"));
    }
    let base_path = uri.path().trim_end_matches('/').to_string();
    Ok((UpstreamTarget::new(scheme, authority), base_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(extra: &str) -> file::Route {
        toml::from_str(&format!("prefix = \"/\"\nauth = \"public\"\n{extra}")).unwrap()
    }

    fn check(extra: &str) -> Result<Upstream, Vec<String>> {
        let mut problems = Vec::new();
        let up = validate(Path::new("."), "routes[0]", &route(extra), &mut problems);
        match up {
            Some(u) if problems.is_empty() => Ok(u),
            _ => Err(problems),
        }
    }

    #[test]
    fn one_upstream_is_a_plain_http1_target() {
        let u = check("upstream = \"http://127.0.0.1:8080/api/\"").unwrap();
        assert_eq!(u.origin, "http://127.0.0.1:8080");
        assert_eq!(u.base_path, "/api");
        assert_eq!(u.targets.len(), 1);
        assert!(!u.targets[0].named);
        assert_eq!(u.protocol, UpstreamProtocol::Http1);
        assert!(u.tls.is_none());
    }

    #[test]
    fn several_targets_share_one_path() {
        let u = check(
            "upstreams = [\"http://10.0.0.5:8080\", \"http://api.internal:8080\"]\nbalance = \"user_hash\"",
        )
        .unwrap();
        assert_eq!(u.targets.len(), 2);
        assert!(u.targets[1].named);
        assert_eq!(u.balance, Balance::UserHash);
        let e = check("upstreams = [\"http://a:1/x\", \"http://b:1/y\"]").unwrap_err();
        assert!(
            e[0].contains("upstreams[1]") && e[0].contains("base path"),
            "{e:?}"
        );
        let e = check("upstreams = [\"http://a:1\", \"http://a:1\"]").unwrap_err();
        assert!(e[0].contains("twice"), "{e:?}");
    }

    #[test]
    fn bad_shapes_name_their_key() {
        let cases = [
            ("", "no upstream"),
            ("upstream = \"http://a:1\"\nupstreams = [\"http://b:1\"]", "not both"),
            ("upstreams = []", "upstreams: empty"),
            ("upstream = \"ftp://a\"", "routes[0].upstream:"),
            ("upstream = \"http://a:1/?q=1\"", "query"),
            ("upstream = \"http://a:1\"\nupstream_protocol = \"h3\"", "upstream_protocol"),
            ("upstream = \"http://a:1\"\nbalance = \"random\"", "routes[0].balance"),
            (
                "upstream = \"http://a:1\"\nupstream_ca_file = \"ca.pem\"",
                "only applies to https",
            ),
            (
                "upstream = \"https://a:1\"\nupstream_ca_file = \"/nonexistent/ca.pem\"",
                "upstream_ca_file: cannot read",
            ),
            (
                "upstream = \"https://a:1\"\nupstream_client_cert = \"c.pem\"",
                "both upstream_client_cert and upstream_client_key",
            ),
            (
                "upstream = \"http://a:1\"\ndns_refresh = \"500ms\"",
                "routes[0].dns_refresh: `500ms` is shorter than 1s",
            ),
            (
                "upstream = \"http://a:1\"\ndns_refresh = \"soon\"",
                "routes[0].dns_refresh",
            ),
            (
                "upstreams = [\"http://10.0.0.5:80\", \"http://[::1]:80\"]\ndns_refresh = \"5s\"",
                "dns_refresh: only applies to targets named by host name",
            ),
            (
                "upstream = \"http://a:1\"\n[health]\npath = \"healthz\"",
                "health.path",
            ),
            (
                "upstream = \"http://a:1\"\n[health]\npath = \"/h\"\nunhealthy_after = 0",
                "health.unhealthy_after",
            ),
            (
                "upstream = \"http://a:1\"\n[health]\npath = \"/h\"\ninterval = \"1s\"\ntimeout = \"2s\"",
                "health.timeout",
            ),
        ];
        for (extra, want) in cases {
            let e = check(extra).unwrap_err();
            assert!(e.iter().any(|p| p.contains(want)), "{extra}: {e:?}");
        }
    }

    #[test]
    fn dns_refresh_defaults_and_overrides() {
        let u = check("upstream = \"http://api.internal:1\"").unwrap();
        assert_eq!(u.dns_refresh, DEFAULT_DNS_REFRESH);
        let u = check(
            "upstreams = [\"http://10.0.0.5:80\", \"http://api.internal:80\"]\ndns_refresh = \"5s\"",
        )
        .unwrap();
        assert_eq!(u.dns_refresh, Duration::from_secs(5));
    }

    #[test]
    fn health_defaults() {
        let u = check("upstream = \"http://a:1\"\n[health]\npath = \"/healthz\"").unwrap();
        let h = u.health.unwrap();
        assert_eq!(h.interval, DEFAULT_HEALTH_INTERVAL);
        assert_eq!(h.unhealthy_after, DEFAULT_HEALTH_THRESHOLD);
        assert_eq!(h.path.as_str(), "/healthz");
    }

    #[test]
    fn https_with_a_private_ca_builds_a_client_config() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
        let mut problems = Vec::new();
        let r = route("upstream = \"https://localhost:8443\"\nupstream_ca_file = \"ca.pem\"");
        let u = validate(dir.path(), "routes[0]", &r, &mut problems).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert!(u.tls.is_some());
        assert!(u.targets[0].is_tls());
    }
}
