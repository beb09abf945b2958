//! `[[routes.allow]]` and `[jwt] roles_claim` validated into [`AccessRules`] per route and
//! one [`GrantSpec`] (what every verified token must have extracted for the rules to read).
//!
//! Every mistake names its key: an `allow` on a public route (there is no token to judge),
//! an unknown method, a rule with no condition (it would allow everything and hide the
//! mistake), a claim value that is an object or an array (equality on those is not defined
//! here; an unquoted dotted key `org.tier = "gold"` is such an object in TOML).

use std::sync::Arc;

use http::Method;

use super::file::AllowRule;
use crate::access::{AccessRules, ClaimPath, GrantSpec, Rule, Scalar};
use crate::routing::AuthPolicy;

/// The methods a rule may name (RFC 9110 section 9 and PATCH, RFC 5789).
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

/// Collects the rules of every route and the claim paths they read.
pub struct AccessBuilder {
    spec: GrantSpec,
    any_rules: bool,
}

impl AccessBuilder {
    /// `roles_claim`: `[jwt] roles_claim` (default "roles").
    pub fn new(roles_claim: Option<&str>, problems: &mut Vec<String>) -> AccessBuilder {
        let text = roles_claim.unwrap_or("roles");
        let roles = ClaimPath::parse(text).unwrap_or_else(|| {
            problems.push(format!(
                "jwt.roles_claim: `{text}` is not a claim path; use a name such as \"roles\" or a dotted path such as \"realm_access.roles\""
            ));
            ClaimPath::single("roles")
        });
        AccessBuilder {
            spec: GrantSpec {
                roles,
                claims: Vec::new(),
            },
            any_rules: false,
        }
    }

    /// Validate the `allow` rules of `routes[i]` (`key`); `None` when it has none.
    pub fn route(
        &mut self,
        key: &str,
        auth: AuthPolicy,
        allow: Option<&[AllowRule]>,
        problems: &mut Vec<String>,
    ) -> Option<Arc<AccessRules>> {
        let allow = allow?;
        if auth == AuthPolicy::Public {
            problems.push(format!(
                "{key}.allow: a public route has no token to check; remove the rules or use auth = \"jwt\""
            ));
            return None;
        }
        if allow.is_empty() {
            return None;
        }
        let mut rules = Vec::with_capacity(allow.len());
        for (j, a) in allow.iter().enumerate() {
            if let Some(rule) = self.rule(&format!("{key}.allow[{j}]"), a, problems) {
                rules.push(rule);
            }
        }
        self.any_rules = true;
        Some(Arc::new(AccessRules { rules }))
    }

    /// The extraction every verified token needs; `None` when no route has rules (then
    /// verification extracts nothing and costs what it did before).
    pub fn finish(self) -> Option<Arc<GrantSpec>> {
        self.any_rules.then(|| Arc::new(self.spec))
    }

    fn rule(&mut self, key: &str, a: &AllowRule, problems: &mut Vec<String>) -> Option<Rule> {
        let before = problems.len();
        let methods = a.methods.as_ref().map(|ms| {
            let mut out = Vec::new();
            for m in ms {
                let upper = m.to_ascii_uppercase();
                match Method::from_bytes(upper.as_bytes()) {
                    Ok(method) if METHODS.contains(&upper.as_str()) => out.push(method),
                    _ => problems.push(format!(
                        "{key}.methods: `{m}` is not an HTTP method; use one of {}",
                        METHODS.join(", ")
                    )),
                }
            }
            out
        });
        let scopes: Vec<Box<str>> = a
            .scopes
            .iter()
            .flatten()
            .map(|s| s.as_str().into())
            .collect();
        let roles: Vec<Box<str>> = a
            .roles
            .iter()
            .flatten()
            .map(|s| s.as_str().into())
            .collect();
        // RFC 6750 section 3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), so a scope can be
        // repeated inside the quoted `scope="..."` of the 403 challenge as it is.
        if scopes.iter().any(|s| {
            s.is_empty()
                || !s
                    .bytes()
                    .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
        }) {
            problems.push(format!(
                "{key}.scopes: a scope is empty or has a space, quote, backslash or non-ASCII character (RFC 6750 scope-token)"
            ));
        }
        if roles.iter().any(|r| r.is_empty()) {
            problems.push(format!("{key}.roles: a role is empty"));
        }
        let mut claims = Vec::new();
        for (name, value) in a.claims.iter().flatten() {
            let ckey = format!("{key}.claims.\"{name}\"");
            let Some(path) = ClaimPath::parse(name) else {
                problems.push(format!(
                    "{ckey}: not a claim name or dotted path (empty segment)"
                ));
                continue;
            };
            let want = match value {
                toml::Value::String(s) => Scalar::Str(s.as_str().into()),
                toml::Value::Boolean(b) => Scalar::Bool(*b),
                toml::Value::Integer(i) => Scalar::Int(*i),
                toml::Value::Float(f) => Scalar::Float(*f),
                other => {
                    problems.push(format!(
                        "{ckey}: a {} cannot be compared; use a string, number or boolean (for a nested claim, quote the dotted key: \"org.tier\" = \"gold\")",
                        other.type_str()
                    ));
                    continue;
                }
            };
            claims.push((self.claim_index(path), want));
        }
        let has_methods = methods.as_ref().is_some_and(|m| !m.is_empty());
        if !has_methods
            && scopes.is_empty()
            && roles.is_empty()
            && a.claims.as_ref().is_none_or(|c| c.is_empty())
        {
            problems.push(format!(
                "{key}: an empty rule would allow every request; give it methods, scopes, roles or claims"
            ));
        }
        if methods.as_ref().is_some_and(Vec::is_empty)
            && a.methods.as_ref().is_some_and(Vec::is_empty)
        {
            problems.push(format!(
                "{key}.methods: an empty list matches no request; remove the key to mean any method"
            ));
        }
        (problems.len() == before).then_some(Rule {
            methods,
            scopes,
            roles,
            claims,
        })
    }

    fn claim_index(&mut self, path: ClaimPath) -> usize {
        match self.spec.claims.iter().position(|p| *p == path) {
            Some(i) => i,
            None => {
                self.spec.claims.push(path);
                self.spec.claims.len() - 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn config(route_extra: &str, jwt_extra: &str) -> Result<Config, String> {
        let text = format!(
            r#"
[listen]
addr = "127.0.0.1:0"

[jwt]
{jwt_extra}

[[jwt.keys]]
kid = "hs1"
alg = "HS256"
secret = "0123456789abcdef0123456789abcdef"

[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:8080"
auth = "jwt"
{route_extra}
"#
        );
        Config::from_toml(&text, Path::new(".")).map_err(|e| e.to_string())
    }

    fn refused(route_extra: &str, needle: &str) {
        let msg = config(route_extra, "").unwrap_err();
        assert!(msg.contains(needle), "expected `{needle}` in: {msg}");
    }

    #[test]
    fn rules_load_with_claim_paths_shared() {
        let c = config(
            r#"
[[routes.allow]]
methods = ["GET", "head"]
scopes = ["orders:read"]

[[routes.allow]]
methods = ["POST"]
roles = ["admin", "ops"]
claims = { tenant = "acme", email_verified = true, "org.tier" = "gold", level = 3 }
"#,
            r#"roles_claim = "realm_access.roles""#,
        )
        .unwrap();
        let route = c.routes.iter().next().unwrap();
        let rules = route.allow.as_ref().unwrap();
        assert_eq!(rules.rules.len(), 2);
        assert_eq!(
            rules.rules[0].methods.as_deref(),
            Some(&[http::Method::GET, http::Method::HEAD][..])
        );
        let spec = c.grants.unwrap();
        assert_eq!(spec.claims.len(), 4);
        assert_eq!(
            spec.roles,
            crate::access::ClaimPath::parse("realm_access.roles").unwrap()
        );
    }

    #[test]
    fn no_rules_extract_nothing() {
        assert!(config("", "").unwrap().grants.is_none());
    }

    #[test]
    fn allow_on_a_public_route_is_named() {
        let msg = config(
            "[[routes]]\nprefix = \"/pub\"\nupstream = \"http://127.0.0.1:1\"\nauth = \"public\"\n[[routes.allow]]\nscopes = [\"a\"]\n",
            "",
        )
        .unwrap_err();
        assert!(msg.contains("routes[1].allow"), "{msg}");
        assert!(msg.contains("public"), "{msg}");
    }

    #[test]
    fn unknown_method_is_named() {
        refused(
            "[[routes.allow]]\nmethods = [\"FETCH\"]\nscopes = [\"a\"]\n",
            "routes[0].allow[0].methods: `FETCH`",
        );
    }

    #[test]
    fn empty_rule_is_named() {
        refused("[[routes.allow]]\n", "routes[0].allow[0]: an empty rule");
        refused(
            "[[routes.allow]]\nscopes = []\nroles = []\nclaims = {}\n",
            "routes[0].allow[0]: an empty rule",
        );
    }

    #[test]
    fn object_or_array_claim_value_is_named() {
        refused(
            "[[routes.allow]]\nclaims = { org.tier = \"gold\" }\n",
            "routes[0].allow[0].claims.\"org\"",
        );
        refused(
            "[[routes.allow]]\nclaims = { tenant = [\"a\"] }\n",
            "routes[0].allow[0].claims.\"tenant\"",
        );
    }

    #[test]
    fn bad_scope_and_roles_claim_are_named() {
        refused(
            "[[routes.allow]]\nscopes = [\"a b\"]\n",
            "routes[0].allow[0].scopes",
        );
        refused(
            "[[routes.allow]]\nscopes = [\"a\\\"b\"]\n",
            "routes[0].allow[0].scopes",
        );
        let msg = config("", "roles_claim = \"a..b\"").unwrap_err();
        assert!(msg.contains("jwt.roles_claim"), "{msg}");
    }

    #[test]
    fn unknown_rule_key_is_named() {
        refused("[[routes.allow]]\nscope = [\"a\"]\n", "scope");
    }
}
