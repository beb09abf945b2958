//! The JWE Protected Header: strict JSON parsing (no duplicate members) and
//! the fail-closed checks on `alg`, `enc`, `zip` and `crit`.

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::{ContentEnc, JweError, KeyAlg};

/// A protected header that passed every check that needs no key.
#[derive(Debug, Clone)]
pub(crate) struct ProtectedHeader {
    pub alg: KeyAlg,
    pub enc: ContentEnc,
    pub kid: Option<String>,
    pub cty_jwt: bool,
    pub members: Map<String, Value>,
}

/// Parses and checks a decoded protected header.
///
/// `Malformed`: not a JSON object, a duplicate member name, or `alg`, `enc`,
/// `kid` or `cty` of the wrong JSON type / missing. `Unsupported`: an `alg`
/// or `enc` this module does not implement, any `zip` (no compression
/// support, RFC 7516 section 4.1.3), any `crit` (we understand no extension,
/// and RFC 7515 section 4.1.11 says to reject what we do not understand).
pub(crate) fn parse(json: &[u8]) -> Result<ProtectedHeader, JweError> {
    let UniqueObject(members) = serde_json::from_slice(json).map_err(|_| JweError::Malformed)?;
    let alg = required_str(&members, "alg")?;
    let enc = required_str(&members, "enc")?;
    let kid = optional_str(&members, "kid")?.map(str::to_owned);
    let cty = optional_str(&members, "cty")?;
    if members.contains_key("zip") || members.contains_key("crit") {
        return Err(JweError::Unsupported);
    }
    let alg = KeyAlg::from_name(alg).ok_or(JweError::Unsupported)?;
    let enc = ContentEnc::from_name(enc).ok_or(JweError::Unsupported)?;
    let cty_jwt = cty.is_some_and(is_jwt_media_type);
    Ok(ProtectedHeader {
        alg,
        enc,
        kid,
        cty_jwt,
        members,
    })
}

/// `cty` names a nested JWT: "JWT" or "application/JWT", case-insensitively,
/// since a `cty` without '/' has "application/" implied (RFC 7515 section
/// 4.1.10) and media types compare case-insensitively (RFC 7519 section 5.2).
fn is_jwt_media_type(cty: &str) -> bool {
    let subtype = match cty.split_once('/') {
        Some((top, sub)) if top.eq_ignore_ascii_case("application") => sub,
        Some(_) => return false,
        None => cty,
    };
    subtype.eq_ignore_ascii_case("JWT")
}

fn required_str<'a>(members: &'a Map<String, Value>, name: &str) -> Result<&'a str, JweError> {
    optional_str(members, name)?.ok_or(JweError::Malformed)
}

fn optional_str<'a>(
    members: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, JweError> {
    match members.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(JweError::Malformed),
    }
}

/// A JSON object whose member names are unique. serde_json's own `Map`
/// silently keeps the last duplicate; RFC 7516 section 4 allows rejecting
/// instead, and rejecting means two parsers can never disagree on `alg`/`enc`.
struct UniqueObject(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;

        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = UniqueObject;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object with unique member names")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<UniqueObject, A::Error> {
                let mut members = Map::new();
                // Names are compared after JSON unescaping, so "a\u006cg" and
                // "alg" count as the same member.
                while let Some(name) = access.next_key::<String>()? {
                    if members.contains_key(&name) {
                        return Err(A::Error::custom("duplicate member name"));
                    }
                    let value: Value = access.next_value()?;
                    members.insert(name, value);
                }
                Ok(UniqueObject(members))
            }
        }

        deserializer.deserialize_map(ObjectVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> JweError {
        parse(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn accepts_a_minimal_header_and_keeps_every_member() {
        let h = parse(br#"{"alg":"dir","enc":"A256GCM","kid":"k1","typ":"JWT","x":[1]}"#).unwrap();
        assert_eq!((h.alg, h.enc), (KeyAlg::Dir, ContentEnc::A256Gcm));
        assert_eq!(h.kid.as_deref(), Some("k1"));
        assert!(!h.cty_jwt);
        assert_eq!(h.members.len(), 5);
    }

    #[test]
    fn rejects_non_objects_and_broken_json_as_malformed() {
        for json in [
            "",
            "null",
            "[]",
            r#""alg""#,
            r#"{"alg":"dir","enc":"A256GCM""#,
            r#"{"alg":"dir","enc":"A256GCM"}x"#,
            r#"{"alg":"dir","enc":"A256GCM"}{}"#,
            r#"{"alg":"dir",,"enc":"A256GCM"}"#,
        ] {
            assert_eq!(err(json), JweError::Malformed, "{json:?}");
        }
        assert_eq!(
            parse(b"{\"alg\":\"dir\",\"enc\":\"A256GCM\",\"k\":\"\xff\"}").unwrap_err(),
            JweError::Malformed
        );
    }

    #[test]
    fn rejects_duplicate_members_including_escaped_spellings() {
        assert_eq!(
            err(r#"{"alg":"dir","enc":"A256GCM","alg":"A128KW"}"#),
            JweError::Malformed
        );
        assert_eq!(
            err(r#"{"alg":"dir","enc":"A256GCM","a\u006cg":"dir"}"#),
            JweError::Malformed
        );
        assert_eq!(
            err(r#"{"alg":"dir","enc":"A256GCM","kid":"a","kid":"a"}"#),
            JweError::Malformed
        );
    }

    #[test]
    fn rejects_missing_or_mistyped_members_as_malformed() {
        assert_eq!(err(r#"{"enc":"A256GCM"}"#), JweError::Malformed);
        assert_eq!(err(r#"{"alg":"dir"}"#), JweError::Malformed);
        assert_eq!(err(r#"{"alg":1,"enc":"A256GCM"}"#), JweError::Malformed);
        assert_eq!(err(r#"{"alg":"dir","enc":null}"#), JweError::Malformed);
        assert_eq!(
            err(r#"{"alg":"dir","enc":"A256GCM","kid":7}"#),
            JweError::Malformed
        );
        assert_eq!(
            err(r#"{"alg":"dir","enc":"A256GCM","cty":{}}"#),
            JweError::Malformed
        );
    }

    #[test]
    fn rejects_unknown_algorithms_zip_and_crit_as_unsupported() {
        for json in [
            r#"{"alg":"none","enc":"A256GCM"}"#,
            r#"{"alg":"RSA1_5","enc":"A256GCM"}"#,
            r#"{"alg":"PBES2-HS256+A128KW","enc":"A256GCM"}"#,
            r#"{"alg":"dir","enc":"A192CBC-HS256"}"#,
            r#"{"alg":"DIR","enc":"A256GCM"}"#,
            r#"{"alg":"dir","enc":"a256gcm"}"#,
            r#"{"alg":"dir","enc":"A256GCM","zip":"DEF"}"#,
            r#"{"alg":"dir","enc":"A256GCM","zip":null}"#,
            r#"{"alg":"dir","enc":"A256GCM","crit":["exp"],"exp":1}"#,
            r#"{"alg":"dir","enc":"A256GCM","crit":[]}"#,
        ] {
            assert_eq!(err(json), JweError::Unsupported, "{json}");
        }
    }

    #[test]
    fn cty_jwt_follows_rfc7515_media_type_rules() {
        let cty = |v: &str| {
            parse(format!(r#"{{"alg":"dir","enc":"A256GCM","cty":"{v}"}}"#).as_bytes())
                .unwrap()
                .cty_jwt
        };
        assert!(cty("JWT"));
        assert!(cty("jwt"));
        assert!(cty("application/JWT"));
        assert!(cty("Application/jwt"));
        assert!(!cty("text/JWT"));
        assert!(!cty("JWT+json"));
        assert!(!cty("application/json"));
        assert!(!cty(""));
    }
}
