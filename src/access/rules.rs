//! `[[routes.allow]]`: the rules of one route. Rules are OR-ed; within a rule every condition
//! holds: the method is listed (or the rule lists none), ALL its scopes are granted, ANY of
//! its roles is granted, and every named claim equals its value exactly.

use http::Method;

use super::grants::{Grants, Scalar};

/// One `[[routes.allow]]` entry, validated (never empty).
#[derive(Debug, Clone)]
pub struct Rule {
    /// `None`: any method.
    pub methods: Option<Vec<Method>>,
    /// All required.
    pub scopes: Vec<Box<str>>,
    /// Any one suffices; empty: no role condition.
    pub roles: Vec<Box<str>>,
    /// `(index into GrantSpec::claims, expected value)`.
    pub claims: Vec<(usize, Scalar)>,
}

impl Rule {
    fn applies_to(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }

    fn allows(&self, g: &Grants) -> bool {
        self.scopes.iter().all(|s| g.has_scope(s))
            && (self.roles.is_empty() || self.roles.iter().any(|r| g.has_role(r)))
            && self
                .claims
                .iter()
                .all(|(i, want)| g.claim(*i) == Some(want))
    }
}

/// The rules of one route (at least one).
#[derive(Debug, Clone)]
pub struct AccessRules {
    pub rules: Vec<Rule>,
}

/// A refusal: the token is good but no rule lets it through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The scopes the rules for this method name, space-separated in rule order without
    /// repeats (RFC 6750 section 3.1 `scope`); `None` when they name none.
    pub scope: Option<String>,
}

impl AccessRules {
    /// Let `method` through for a token granting `grants` (`None`: the token was verified
    /// without extraction, which grants nothing).
    pub fn check(&self, method: &Method, grants: Option<&Grants>) -> Result<(), Denied> {
        if let Some(g) = grants {
            if self
                .rules
                .iter()
                .any(|r| r.applies_to(method) && r.allows(g))
            {
                return Ok(());
            }
        }
        Err(self.denied(method))
    }

    // Only on the refusal path: the allocation is not paid by an allowed request.
    fn denied(&self, method: &Method) -> Denied {
        let mut scopes: Vec<&str> = Vec::new();
        for r in self.rules.iter().filter(|r| r.applies_to(method)) {
            for s in &r.scopes {
                if !scopes.contains(&&**s) {
                    scopes.push(s);
                }
            }
        }
        Denied {
            scope: (!scopes.is_empty()).then(|| scopes.join(" ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smallvec::smallvec;

    fn rules() -> AccessRules {
        AccessRules {
            rules: vec![
                Rule {
                    methods: Some(vec![Method::GET, Method::HEAD]),
                    scopes: vec!["orders:read".into()],
                    roles: vec![],
                    claims: vec![],
                },
                Rule {
                    methods: Some(vec![Method::POST, Method::DELETE]),
                    scopes: vec![],
                    roles: vec!["admin".into(), "ops".into()],
                    claims: vec![(0, Scalar::Str("acme".into())), (1, Scalar::Bool(true))],
                },
            ],
        }
    }

    fn grants(scopes: &[&str], roles: &[&str], claims: Vec<Option<Scalar>>) -> Grants {
        Grants {
            scopes: scopes.iter().map(|s| Box::from(*s)).collect(),
            roles: roles.iter().map(|s| Box::from(*s)).collect(),
            claims: claims.into_iter().collect(),
        }
    }

    #[test]
    fn scope_rule_per_method() {
        let r = rules();
        let g = grants(&["orders:read"], &[], vec![]);
        assert!(r.check(&Method::GET, Some(&g)).is_ok());
        assert!(r.check(&Method::HEAD, Some(&g)).is_ok());
        assert_eq!(
            r.check(&Method::POST, Some(&g)),
            Err(Denied { scope: None }),
            "POST rules name no scope"
        );
        let none = grants(&[], &[], vec![]);
        assert_eq!(
            r.check(&Method::GET, Some(&none)),
            Err(Denied {
                scope: Some("orders:read".into())
            })
        );
        assert!(r.check(&Method::PUT, Some(&g)).is_err(), "no rule for PUT");
    }

    #[test]
    fn roles_any_claims_all() {
        let r = rules();
        let ok = grants(
            &[],
            &["ops"],
            vec![Some(Scalar::Str("acme".into())), Some(Scalar::Bool(true))],
        );
        assert!(r.check(&Method::POST, Some(&ok)).is_ok());
        let wrong_tenant = grants(
            &[],
            &["admin"],
            vec![Some(Scalar::Str("evil".into())), Some(Scalar::Bool(true))],
        );
        assert!(r.check(&Method::POST, Some(&wrong_tenant)).is_err());
        let string_true = grants(
            &[],
            &["admin"],
            vec![
                Some(Scalar::Str("acme".into())),
                Some(Scalar::Str("true".into())),
            ],
        );
        assert!(r.check(&Method::POST, Some(&string_true)).is_err());
        let missing = grants(&[], &["admin"], vec![Some(Scalar::Str("acme".into()))]);
        assert!(r.check(&Method::POST, Some(&missing)).is_err());
        let no_role = Grants {
            claims: smallvec![Some(Scalar::Str("acme".into())), Some(Scalar::Bool(true))],
            ..Grants::default()
        };
        assert!(r.check(&Method::POST, Some(&no_role)).is_err());
        assert!(r.check(&Method::POST, None).is_err());
    }

    #[test]
    fn all_scopes_required_and_listed_once() {
        let r = AccessRules {
            rules: vec![
                Rule {
                    methods: None,
                    scopes: vec!["a".into(), "b".into()],
                    roles: vec![],
                    claims: vec![],
                },
                Rule {
                    methods: None,
                    scopes: vec!["b".into(), "c".into()],
                    roles: vec![],
                    claims: vec![],
                },
            ],
        };
        let only_a = grants(&["a"], &[], vec![]);
        assert_eq!(
            r.check(&Method::GET, Some(&only_a)),
            Err(Denied {
                scope: Some("a b c".into())
            })
        );
        assert!(r
            .check(&Method::GET, Some(&grants(&["c", "b"], &[], vec![])))
            .is_ok());
    }
}
