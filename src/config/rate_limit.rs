//! `[[routes]] rate_limit = { per, rate, burst }` validated into a [`RateSpec`]. A limit
//! whose key cannot exist on the route (`per = "user"` without a token, `per = "app"`
//! without an app key) is a mistake named here rather than a limit that never applies.

use super::file::RateLimit;
use crate::ratelimit::{Per, RateSpec};
use crate::routing::AuthPolicy;

/// Validate `routes[i].rate_limit` (`key` is `routes[i]`).
pub fn validate(
    key: &str,
    l: &RateLimit,
    auth: AuthPolicy,
    api_key: bool,
    problems: &mut Vec<String>,
) -> Option<RateSpec> {
    let key = format!("{key}.rate_limit");
    let per = match l.per.as_str() {
        "user" => Per::User,
        "app" => Per::App,
        "ip" => Per::Ip,
        other => {
            problems.push(format!(
                "{key}.per: `{other}` is not a key; use \"user\", \"app\" or \"ip\""
            ));
            return None;
        }
    };
    if per == Per::User && auth != AuthPolicy::Jwt {
        problems.push(format!(
            "{key}.per: \"user\" needs auth = \"jwt\" (a public route has no user); use \"ip\""
        ));
    }
    if per == Per::App && !api_key {
        problems.push(format!(
            "{key}.per: \"app\" needs api_key = true on the route (no app id otherwise)"
        ));
    }
    let Some((quota, window)) = RateSpec::parse_rate(&l.rate) else {
        problems.push(format!(
            "{key}.rate: `{}` is not a rate; use N/s, N/m or N/h with N at least 1, e.g. \"100/s\"",
            l.rate
        ));
        return None;
    };
    let burst = match l.burst {
        Some(0) => {
            problems.push(format!(
                "{key}.burst: 0 would refuse every request; use at least 1"
            ));
            return None;
        }
        Some(b) => b,
        None => RateSpec::default_burst(quota, window),
    };
    Some(RateSpec {
        per,
        quota,
        window,
        burst,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn load(auth: &str, extra: &str) -> Result<Config, String> {
        let text = format!(
            r#"
[listen]
addr = "127.0.0.1:0"

[[jwt.keys]]
kid = "hs1"
alg = "HS256"
secret = "0123456789abcdef0123456789abcdef"

[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:8080"
auth = "{auth}"
{extra}
"#
        );
        Config::from_toml(&text, Path::new(".")).map_err(|e| e.to_string())
    }

    #[test]
    fn limit_loads_with_default_burst() {
        let c = load("jwt", r#"rate_limit = { per = "user", rate = "120/m" }"#).unwrap();
        let spec = c.routes.iter().next().unwrap().rate_limit.unwrap();
        assert_eq!(
            (spec.quota, spec.window.as_secs(), spec.burst),
            (120, 60, 2)
        );
        let c = load(
            "jwt",
            r#"rate_limit = { per = "ip", rate = "100/s", burst = 200 }"#,
        )
        .unwrap();
        assert_eq!(
            c.routes.iter().next().unwrap().rate_limit.unwrap().burst,
            200
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (auth, extra, needle) in [
            (
                "jwt",
                r#"rate_limit = { per = "team", rate = "1/s" }"#,
                "routes[0].rate_limit.per",
            ),
            (
                "public",
                r#"rate_limit = { per = "user", rate = "1/s" }"#,
                "routes[0].rate_limit.per",
            ),
            (
                "jwt",
                r#"rate_limit = { per = "app", rate = "1/s" }"#,
                "api_key = true",
            ),
            (
                "jwt",
                r#"rate_limit = { per = "user", rate = "1/d" }"#,
                "routes[0].rate_limit.rate",
            ),
            (
                "jwt",
                r#"rate_limit = { per = "user", rate = "1/s", burst = 0 }"#,
                "routes[0].rate_limit.burst",
            ),
            (
                "jwt",
                r#"rate_limit = { per = "user", rate = "1/s", bust = 2 }"#,
                "bust",
            ),
        ] {
            let msg = load(auth, extra).unwrap_err();
            assert!(msg.contains(needle), "`{needle}` in {msg}");
        }
    }
}
