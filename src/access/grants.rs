//! What a verified token grants, extracted once at verification time: its scopes (`scope`, a
//! space-separated string as RFC 8693 section 4.2 and RFC 9068 section 2.2.3 define it, and
//! `scp`, an array or a space-separated string as some issuers send it), its roles (the
//! `[jwt] roles_claim` path: an array of strings or one string) and the scalar value of every
//! claim path an allow rule names.
//!
//! A claim that is missing or of the wrong type grants nothing: it never matches a rule and
//! never fails the token (the token was valid before rules existed and still is).

use serde_json::value::RawValue;
use serde_json::Value;
use smallvec::SmallVec;

/// A claim path: `"org.tier"` is the member `tier` of the object claim `org`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(Vec<String>);

impl ClaimPath {
    /// Split a dotted name into segments; `None` when a segment is empty (`"a..b"`, `".a"`).
    pub fn parse(dotted: &str) -> Option<ClaimPath> {
        let segs: Vec<String> = dotted.split('.').map(str::to_owned).collect();
        if segs.iter().any(String::is_empty) {
            return None;
        }
        Some(ClaimPath(segs))
    }

    /// One top-level member, dots and all.
    pub fn single(name: &str) -> ClaimPath {
        ClaimPath(vec![name.to_owned()])
    }

    /// Walk the path from the top-level member `get(first segment)`.
    fn resolve<'a>(&self, get: &dyn Fn(&str) -> Option<&'a RawValue>) -> Option<Value> {
        let (first, rest) = self.0.split_first()?;
        let mut v: Value = serde_json::from_str(get(first)?.get()).ok()?;
        for seg in rest {
            v = match v {
                Value::Object(mut m) => m.remove(seg)?,
                _ => return None,
            };
        }
        Some(v)
    }
}

/// A claim value a rule can compare with: strings, booleans and numbers.
#[derive(Debug, Clone)]
pub enum Scalar {
    Str(Box<str>),
    Bool(bool),
    Int(i64),
    Float(f64),
}

impl PartialEq for Scalar {
    fn eq(&self, other: &Scalar) -> bool {
        match (self, other) {
            (Scalar::Str(a), Scalar::Str(b)) => a == b,
            (Scalar::Bool(a), Scalar::Bool(b)) => a == b,
            (Scalar::Int(a), Scalar::Int(b)) => a == b,
            // 1 and 1.0 are the same JSON number (RFC 8259 section 6 has one number type).
            (Scalar::Int(a), Scalar::Float(b)) | (Scalar::Float(b), Scalar::Int(a)) => {
                (*a as f64) == *b
            }
            (Scalar::Float(a), Scalar::Float(b)) => a == b,
            _ => false,
        }
    }
}

impl Scalar {
    fn from_json(v: &Value) -> Option<Scalar> {
        match v {
            Value::String(s) => Some(Scalar::Str(s.as_str().into())),
            Value::Bool(b) => Some(Scalar::Bool(*b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Some(Scalar::Int(i)),
                None => n.as_f64().map(Scalar::Float),
            },
            _ => None,
        }
    }
}

/// What to extract from every verified token: built by config from the roles claim and the
/// claim paths of every route's rules (a rule refers to a claim by its index here).
#[derive(Debug, Clone, PartialEq)]
pub struct GrantSpec {
    pub roles: ClaimPath,
    pub claims: Vec<ClaimPath>,
}

/// What one token grants. Small strings, boxed once per verified token (the verified-token
/// cache keeps it with the token).
#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub scopes: SmallVec<[Box<str>; 4]>,
    pub roles: SmallVec<[Box<str>; 4]>,
    /// By index into [`GrantSpec::claims`]; `None` when missing or not a scalar.
    pub claims: SmallVec<[Option<Scalar>; 4]>,
}

impl GrantSpec {
    /// Extract the grants from a claims set given as `get(member name) -> raw JSON`. Never
    /// fails: whatever is missing or mistyped is simply not granted.
    pub fn extract<'a>(&self, get: &dyn Fn(&str) -> Option<&'a RawValue>) -> Grants {
        let mut g = Grants::default();
        if let Some(raw) = get("scope") {
            if let Ok(s) = serde_json::from_str::<&str>(raw.get()) {
                push_words(&mut g.scopes, s);
            } else if let Ok(Value::String(s)) = serde_json::from_str::<Value>(raw.get()) {
                push_words(&mut g.scopes, &s);
            }
        }
        if let Some(raw) = get("scp") {
            match serde_json::from_str::<Value>(raw.get()) {
                Ok(Value::String(s)) => push_words(&mut g.scopes, &s),
                Ok(Value::Array(items)) => {
                    for item in items {
                        if let Value::String(s) = item {
                            g.scopes.push(s.into());
                        }
                    }
                }
                _ => {}
            }
        }
        match self.roles.resolve(get) {
            Some(Value::String(s)) => g.roles.push(s.into()),
            Some(Value::Array(items)) => {
                for item in items {
                    if let Value::String(s) = item {
                        g.roles.push(s.into());
                    }
                }
            }
            _ => {}
        }
        for path in &self.claims {
            g.claims
                .push(path.resolve(get).as_ref().and_then(Scalar::from_json));
        }
        g
    }
}

fn push_words(into: &mut SmallVec<[Box<str>; 4]>, s: &str) {
    into.extend(s.split_ascii_whitespace().map(Box::from));
}

impl Grants {
    pub fn has_scope(&self, s: &str) -> bool {
        self.scopes.iter().any(|x| &**x == s)
    }

    pub fn has_role(&self, r: &str) -> bool {
        self.roles.iter().any(|x| &**x == r)
    }

    pub fn claim(&self, idx: usize) -> Option<&Scalar> {
        self.claims.get(idx).and_then(Option::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(spec: &GrantSpec, json: &str) -> Grants {
        let map: std::collections::HashMap<String, Box<RawValue>> =
            serde_json::from_str(json).unwrap();
        spec.extract(&|name| map.get(name).map(|b| &**b))
    }

    fn spec(roles: &str, claims: &[&str]) -> GrantSpec {
        GrantSpec {
            roles: ClaimPath::parse(roles).unwrap(),
            claims: claims
                .iter()
                .map(|c| ClaimPath::parse(c).unwrap())
                .collect(),
        }
    }

    #[test]
    fn scopes_from_scope_string_and_scp_array_or_string() {
        let s = spec("roles", &[]);
        let g = grants(&s, r#"{"scope":"a  b\tc"}"#);
        assert_eq!(g.scopes.len(), 3);
        assert!(g.has_scope("b") && g.has_scope("c"));
        let g = grants(&s, r#"{"scp":["x","y",3]}"#);
        assert!(g.has_scope("x") && g.has_scope("y") && !g.has_scope("3"));
        let g = grants(&s, r#"{"scp":"x y"}"#);
        assert!(g.has_scope("x") && g.has_scope("y"));
        // Wrong types grant nothing, and do not fail.
        let g = grants(&s, r#"{"scope":["a"],"scp":{"a":1}}"#);
        assert!(g.scopes.is_empty());
    }

    #[test]
    fn roles_from_a_dotted_path_array_or_string() {
        let s = spec("realm_access.roles", &[]);
        let g = grants(&s, r#"{"realm_access":{"roles":["admin","ops"]}}"#);
        assert!(g.has_role("admin") && g.has_role("ops"));
        let g = grants(&s, r#"{"realm_access":{"roles":"admin"}}"#);
        assert!(g.has_role("admin"));
        let g = grants(&s, r#"{"realm_access":["admin"]}"#);
        assert!(g.roles.is_empty());
        let g = grants(&s, r#"{"roles":["admin"]}"#);
        assert!(g.roles.is_empty());
    }

    #[test]
    fn claims_by_path_only_scalars() {
        let s = spec("roles", &["tenant", "org.tier", "n", "obj"]);
        let g = grants(
            &s,
            r#"{"tenant":"acme","org":{"tier":"gold"},"n":2.0,"obj":{"a":1}}"#,
        );
        assert_eq!(g.claim(0), Some(&Scalar::Str("acme".into())));
        assert_eq!(g.claim(1), Some(&Scalar::Str("gold".into())));
        assert_eq!(g.claim(2), Some(&Scalar::Int(2)));
        assert_eq!(g.claim(3), None);
        // A top-level member literally named "org.tier" is not the path.
        let g = grants(&s, r#"{"org.tier":"gold"}"#);
        assert_eq!(g.claim(1), None);
    }

    #[test]
    fn claim_path_refuses_empty_segments() {
        assert!(ClaimPath::parse("a..b").is_none());
        assert!(ClaimPath::parse(".a").is_none());
        assert!(ClaimPath::parse("").is_none());
        assert!(ClaimPath::parse("a.b").is_some());
    }
}
