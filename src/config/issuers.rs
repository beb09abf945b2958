//! `[[jwt.issuers]]` and `[[routes]] issuers`: more token issuers, each with its own key set
//! (OpenID Connect discovery or a JWKS URL), validated into [`IssuerSettings`]; and each
//! route's list of issuer names compiled to an [`IssuerSet`].
//!
//! Nothing is fetched here (`portcullis check` stays offline): discovery and the key sets are
//! fetched by `run`. The `[jwt]` issuer (`[[jwt.keys]]`, `[jwt.jwks]`) is the one named
//! `default`.

use std::time::Duration;

use crate::jose::discovery;
use crate::jose::jwks::Source;
use crate::routing::{AuthPolicy, IssuerSet};

use super::jwks::{JwksSettings, Schedule};
use super::{file, Checker};

/// The name routes use for the `[jwt]` issuer.
pub const DEFAULT_ISSUER_NAME: &str = "default";
/// Most `[[jwt.issuers]]` entries (a route's issuer set is one 64-bit word, the `[jwt]`
/// issuer included).
pub const MAX_ISSUERS: usize = IssuerSet::MAX_NUMBER as usize;

/// One `[[jwt.issuers]]` entry, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSettings {
    pub name: String,
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// Where its keys are published (`Source::Discovery` or `Source::Url`) and how often
    /// they are fetched again.
    pub keys: JwksSettings,
    pub audience: Vec<String>,
    pub user_claim: String,
    pub leeway_secs: u64,
}

/// What the entries fall back to.
pub(super) struct Defaults<'a> {
    /// `[jwt] issuer`: no entry may claim the same `iss`.
    pub jwt_issuer: Option<&'a str>,
    pub audience: &'a [String],
    pub user_claim: &'a str,
    pub leeway: Duration,
}

impl Checker<'_> {
    /// Every `[[jwt.issuers]]` entry, each problem naming its key.
    pub(super) fn issuers(
        &mut self,
        list: &[file::Issuer],
        d: &Defaults<'_>,
    ) -> Vec<IssuerSettings> {
        if list.len() > MAX_ISSUERS {
            self.problems.push(format!(
                "jwt.issuers: {} entries; at most {MAX_ISSUERS} are supported",
                list.len()
            ));
        }
        let mut out: Vec<IssuerSettings> = Vec::new();
        for (i, f) in list.iter().enumerate().take(MAX_ISSUERS) {
            let key = format!("jwt.issuers[{i}]");
            if let Some(s) = self.issuer(&key, f, d, &out) {
                out.push(s);
            }
        }
        out
    }

    fn issuer(
        &mut self,
        key: &str,
        f: &file::Issuer,
        d: &Defaults<'_>,
        earlier: &[IssuerSettings],
    ) -> Option<IssuerSettings> {
        let before = self.problems.len();
        let name_ok = !f.name.is_empty()
            && f.name.len() <= 64
            && f.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !name_ok {
            self.problems.push(format!(
                "{key}.name: `{}` must be 1-64 characters of letters, digits, `_`, `-`, `.`",
                f.name
            ));
        } else if f.name == DEFAULT_ISSUER_NAME {
            self.problems.push(format!(
                "{key}.name: `default` is the [jwt] issuer ([[jwt.keys]], [jwt.jwks]); pick another name"
            ));
        } else if earlier.iter().any(|e| e.name == f.name) {
            self.problems
                .push(format!("{key}.name: `{}` is used twice", f.name));
        }
        if f.issuer.is_empty() {
            self.problems.push(format!(
                "{key}.issuer: must be the exact `iss` of its tokens, e.g. \"https://id.example.com/\""
            ));
        } else if earlier.iter().any(|e| e.issuer == f.issuer) || d.jwt_issuer == Some(&f.issuer) {
            self.problems.push(format!(
                "{key}.issuer: `{}` is claimed by another issuer too; a token's iss must select one issuer",
                f.issuer
            ));
        }
        let source = match (f.discovery.unwrap_or(false), &f.jwks_url) {
            (true, Some(_)) => {
                self.problems.push(format!(
                    "{key}: set discovery = true or jwks_url, not both (discovery finds the jwks_uri itself)"
                ));
                None
            }
            (false, None) => {
                self.problems.push(format!(
                    "{key}: set discovery = true (keys from {{issuer}}.well-known/openid-configuration) or jwks_url"
                ));
                None
            }
            (true, None) => match discovery::document_url(&f.issuer) {
                Ok(document) => Some(Source::Discovery {
                    issuer: f.issuer.clone(),
                    document,
                }),
                Err(e) => {
                    self.problems
                        .push(format!("{key}.issuer: `{}`: {e}", f.issuer));
                    None
                }
            },
            (false, Some(url)) => self.jwks_url(&format!("{key}.jwks_url"), url),
        };
        let schedule = Schedule {
            refresh_interval: f.refresh_interval.as_ref(),
            min_refresh_interval: f.min_refresh_interval.as_ref(),
            timeout: f.timeout.as_ref(),
            ca_file: f.ca_file.as_ref(),
        };
        let keys = self.jwks_schedule(key, source, schedule);
        let leeway = self.duration(&format!("{key}.leeway"), f.leeway.as_ref(), d.leeway);
        let user_claim = f.user_claim.clone().unwrap_or_else(|| d.user_claim.into());
        if user_claim.is_empty() {
            self.problems
                .push(format!("{key}.user_claim: must name a claim, e.g. \"sub\""));
        }
        let audience = match &f.audience {
            Some(a) => a.clone().into_vec(),
            None => d.audience.to_vec(),
        };
        if self.problems.len() > before {
            return None;
        }
        Some(IssuerSettings {
            name: f.name.clone(),
            issuer: f.issuer.clone(),
            keys: keys?,
            audience,
            user_claim,
            leeway_secs: leeway.as_secs(),
        })
    }
}

/// The issuer names routes may use: `default` (when the `[jwt]` issuer has keys) and each
/// `[[jwt.issuers]]` name.
pub(super) struct IssuerNames<'a> {
    pub default: bool,
    pub issuers: &'a [IssuerSettings],
}

impl IssuerNames<'_> {
    /// `[[routes]] issuers` of the route at `key`: `None` (absent) accepts every issuer.
    pub fn route(
        &self,
        key: &str,
        names: Option<&[String]>,
        auth: AuthPolicy,
        problems: &mut Vec<String>,
    ) -> Option<IssuerSet> {
        let names = names?;
        if auth != AuthPolicy::Jwt {
            problems.push(format!(
                "{key}.issuers: only meaningful with auth = \"jwt\" (a public route reads no token)"
            ));
            return None;
        }
        if names.is_empty() {
            problems.push(format!(
                "{key}.issuers: an empty list would refuse every token; leave it out to accept every issuer"
            ));
            return None;
        }
        let mut set = IssuerSet::default();
        for name in names {
            if name == DEFAULT_ISSUER_NAME && self.default {
                set.insert(IssuerSet::DEFAULT);
                continue;
            }
            match self.issuers.iter().position(|i| i.name == *name) {
                Some(p) => set.insert(u8::try_from(p + 1).unwrap_or(u8::MAX)),
                None => {
                    let mut known: Vec<&str> = Vec::new();
                    if self.default {
                        known.push(DEFAULT_ISSUER_NAME);
                    }
                    known.extend(self.issuers.iter().map(|i| i.name.as_str()));
                    problems.push(format!(
                        "{key}.issuers: `{name}` is not a configured issuer; configured: {}",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
            }
        }
        Some(set)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::jose::jwks::Source;
    use std::path::Path;

    const HS_KEY: &str = "[[jwt.keys]]\nkid = \"hs\"\nalg = \"HS256\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n";
    const ROUTES: &str =
        "[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:8080\"\nauth = \"jwt\"\n";

    fn load(text: &str) -> Result<Config, String> {
        let text = format!("[listen]\naddr = \"127.0.0.1:0\"\n\n{text}");
        Config::from_toml(&text, Path::new("/nonexistent")).map_err(|e| e.to_string())
    }

    fn issuer(name: &str, iss: &str, how: &str) -> String {
        format!("[[jwt.issuers]]\nname = \"{name}\"\nissuer = \"{iss}\"\n{how}\n")
    }

    #[test]
    fn issuers_alone_satisfy_jwt_routes_and_inherit_the_jwt_defaults() {
        let c = load(&format!(
            "[jwt]\naudience = \"api\"\nleeway = \"45s\"\n[identity]\nuser_claim = \"uid\"\n{}{}{ROUTES}",
            issuer("idp", "https://id.example.com/", "discovery = true"),
            issuer(
                "partner",
                "https://partner.example",
                "jwks_url = \"https://partner.example/keys\"\naudience = [\"p\"]\nuser_claim = \"email\"\nleeway = \"60s\""
            ),
        ))
        .unwrap();
        let [idp, partner] = &c.jwt.issuers[..] else {
            panic!("two issuers: {:?}", c.jwt.issuers)
        };
        assert_eq!(
            idp.keys.source,
            Source::Discovery {
                issuer: "https://id.example.com/".into(),
                document: "https://id.example.com/.well-known/openid-configuration"
                    .parse()
                    .unwrap()
            }
        );
        assert_eq!(
            (
                idp.audience.clone(),
                idp.user_claim.as_str(),
                idp.leeway_secs
            ),
            (vec!["api".to_owned()], "uid", 45)
        );
        assert_eq!(
            (
                partner.audience.clone(),
                partner.user_claim.as_str(),
                partner.leeway_secs
            ),
            (vec!["p".to_owned()], "email", 60)
        );
        assert_eq!(c.jwt.max_leeway_secs(), 60);
    }

    #[test]
    fn route_issuer_lists_compile_to_sets() {
        let c = load(&format!(
            "{}{}{}[[routes]]\nprefix = \"/p\"\nupstream = \"http://127.0.0.1:8080\"\nauth = \"jwt\"\nissuers = [\"b\", \"default\"]\n{ROUTES}",
            HS_KEY,
            issuer("a", "https://a.example/", "discovery = true"),
            issuer("b", "https://b.example/", "discovery = true"),
        ))
        .unwrap();
        let p = c.routes.iter().find(|r| r.prefix == "/p").unwrap();
        let set = p.issuers.unwrap();
        assert!(set.contains(0) && !set.contains(1) && set.contains(2));
        assert!(c
            .routes
            .iter()
            .find(|r| r.prefix == "/")
            .unwrap()
            .issuers
            .is_none());
    }

    #[test]
    fn each_problem_names_its_key() {
        let route_with = |list: &str, auth: &str| {
            format!("[[routes]]\nprefix = \"/r\"\nupstream = \"http://127.0.0.1:8080\"\nauth = \"{auth}\"\nissuers = {list}\n")
        };
        let a = issuer("a", "https://a.example/", "discovery = true");
        for (text, want) in [
            (
                issuer("default", "https://x.example/", "discovery = true"),
                "jwt.issuers[0].name: `default`",
            ),
            (
                issuer("a b", "https://x.example/", "discovery = true"),
                "jwt.issuers[0].name",
            ),
            (format!("{a}{a}"), "jwt.issuers[1].name: `a` is used twice"),
            (
                format!(
                    "{a}{}",
                    issuer("b", "https://a.example/", "discovery = true")
                ),
                "jwt.issuers[1].issuer",
            ),
            (
                format!("[jwt]\nissuer = \"https://a.example/\"\n{a}"),
                "jwt.issuers[0].issuer",
            ),
            (
                issuer("a", "", "discovery = true"),
                "jwt.issuers[0].issuer: must be",
            ),
            (
                issuer("a", "https://a.example/", ""),
                "jwt.issuers[0]: set discovery = true",
            ),
            (
                issuer("a", "https://a.example/", "discovery = false"),
                "jwt.issuers[0]: set discovery = true",
            ),
            (
                issuer(
                    "a",
                    "https://a.example/",
                    "discovery = true\njwks_url = \"https://a.example/k\"",
                ),
                "not both",
            ),
            (
                issuer("a", "http://a.example/", "discovery = true"),
                "jwt.issuers[0].issuer: `http://a.example/`",
            ),
            (
                issuer(
                    "a",
                    "https://a.example/",
                    "jwks_url = \"http://a.example/k\"",
                ),
                "jwt.issuers[0].jwks_url",
            ),
            (
                issuer(
                    "a",
                    "https://a.example/",
                    "discovery = true\nca_file = \"missing.pem\"",
                ),
                "jwt.issuers[0].ca_file",
            ),
            (
                issuer(
                    "a",
                    "https://a.example/",
                    "discovery = true\nleeway = \"soon\"",
                ),
                "jwt.issuers[0].leeway",
            ),
            (
                issuer(
                    "a",
                    "https://a.example/",
                    "discovery = true\nmin_refresh_interval = \"1ms\"",
                ),
                "jwt.issuers[0].min_refresh_interval",
            ),
            (
                issuer(
                    "a",
                    "https://a.example/",
                    "discovery = true\nuser_claim = \"\"",
                ),
                "jwt.issuers[0].user_claim",
            ),
            (
                issuer("a", "https://a.example/", "discovery = true\nkeys = []"),
                "keys",
            ),
            (
                format!("{a}{}", route_with("[\"b\"]", "jwt")),
                "routes[0].issuers: `b` is not a configured issuer; configured: a",
            ),
            // No `[jwt]` key: there is no `default` issuer to name.
            (
                format!("{a}{}", route_with("[\"default\"]", "jwt")),
                "routes[0].issuers: `default`",
            ),
            (
                format!("{a}{}", route_with("[]", "jwt")),
                "routes[0].issuers: an empty list",
            ),
            (
                format!("{a}{}", route_with("[\"a\"]", "public")),
                "routes[0].issuers: only meaningful",
            ),
        ] {
            let e = load(&format!("{text}{ROUTES}")).expect_err(&text);
            assert!(e.contains(want), "{text}\nwant {want} in {e}");
        }
    }
}
