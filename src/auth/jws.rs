//! JWS compact-serialization verification: parse strictly, pin the algorithm, verify the
//! signature with `jsonwebtoken`, then check the claims.
//!
//! The order is deliberate. The header is parsed first (it selects the key), the signature is
//! verified before the payload is parsed (so the claims parser only ever sees data the issuer
//! signed), and claim checks come last.
//!
//! Parsing rules, all fail-closed:
//! - exactly three segments, each strict base64url without padding (RFC 7515 section 2);
//! - header and payload are JSON objects; a member name that appears twice is rejected
//!   (RFC 7515 section 5.2 allows either rejecting or taking the last; taking one silently
//!   lets two parsers disagree about what was signed);
//! - header parameters `jwk`, `jku`, `x5u`, `x5c` (keys the token brings itself), `crit` (no
//!   extension is understood), `b64` (RFC 7797), `enc`/`zip` (JWE parameters) are rejected;
//! - `exp`, `nbf`, `iat` must be non-negative integers (NumericDate without fractions);
//! - `sub` and the user claim must be strings; `iss` a string; `aud` a string or strings.

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use smallvec::SmallVec;

use super::issuers::{self, Expect, IssCheck, Issuers};
use super::jwe::{self, JweError, KeyRing};
use super::jwks::Refresher;
use super::keys::{parse_alg, KeySet, VerifyKey};
use super::AuthError;

/// Most members accepted in a header or payload object.
const MAX_MEMBERS: usize = 64;

/// A 128-bit digest used as the revocation key of a `jti`, a subject, or a whole token.
pub use crate::ids::{digest as digest128, Key as Digest128};

/// The claim checks that apply to every token.
#[derive(Debug)]
pub struct Validator {
    pub keys: KeySet,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub leeway: u64,
    pub require_exp: bool,
    pub max_token_bytes: usize,
    pub user_claim: String,
    /// Claims copied to headers, by position in `identity.claims`.
    pub extra_claims: Vec<String>,
    /// Keys for encrypted (JWE) tokens; `None` refuses five-segment tokens.
    pub jwe: Option<std::sync::Arc<KeyRing>>,
    /// `[jwt.jwks]`: the published key set, tried after `keys`; `None` costs nothing.
    pub jwks: Option<std::sync::Arc<Refresher>>,
    /// What `[[routes.allow]]` rules read from a token; `None` (no rules) extracts nothing.
    pub grants: Option<std::sync::Arc<crate::access::GrantSpec>>,
    /// `[[jwt.issuers]]`: more issuers, selected by `iss`; `None` (the usual single-issuer
    /// gateway) costs one branch.
    pub issuers: Option<std::sync::Arc<Issuers>>,
}

/// What a verified token says about its bearer.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The user id, ready to be a header value.
    pub user: HeaderValue,
    /// `(index into Validator::extra_claims, value)` for each mapped claim present.
    pub extra: SmallVec<[(usize, HeaderValue); 4]>,
    /// Revocation key: digest of `jti`, or of the whole token when it has none.
    pub token_key: Digest128,
    /// Whether `token_key` came from a `jti`.
    pub has_jti: bool,
    pub sub_key: Option<Digest128>,
    pub sub: Option<String>,
    pub iat: Option<u64>,
    pub exp: Option<u64>,
    /// Scopes, roles and rule claims, when some route has `[[routes.allow]]` rules.
    pub grants: Option<Box<crate::access::Grants>>,
    /// `cnf.jkt` (RFC 9449 section 6.1): the token is bound to the DPoP key with this
    /// RFC 7638 thumbprint and is accepted only with a proof by that key.
    pub jkt: Option<String>,
    /// Which issuer vouched for it ([`issuers::DEFAULT`] or `1 +` its `[[jwt.issuers]]`
    /// position), for the routes that accept only some.
    pub issuer: u8,
    /// That issuer's clock-skew leeway in seconds (the cache checks `exp` again with it).
    pub leeway: u64,
}

impl Validator {
    /// Verify a compact JWS and check its claims at time `now` (unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Verified, AuthError> {
        self.verify_at(token, Some(now))
    }

    /// Verify signature and claim types but not `exp`/`nbf`/`iat` against the clock: for
    /// revoking a token, where an expired one is fine.
    pub fn verify_ignoring_time(&self, token: &str) -> Result<Verified, AuthError> {
        self.verify_at(token, None)
    }

    fn verify_at(&self, token: &str, now: Option<u64>) -> Result<Verified, AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::TooLarge);
        }
        if jwe::is_jwe(token) {
            return self.verify_jwe(token, now);
        }
        self.verify_jws(token, now)
    }

    /// Decrypt a compact JWE, then check what it carries: a nested JWS (`cty: "JWT"`),
    /// verified like any bearer token, or a bare claims set. Every decryption failure is the
    /// same error, so responses are no decryption oracle.
    ///
    /// A bare claims set is accepted only under symmetric key management (`dir`, `A*KW`,
    /// `A*GCMKW`) from a key without `require_nested`: there the shared secret proves who
    /// made the token. Under RSA-OAEP* or ECDH-ES* the sender picks the content key and
    /// anyone holding the *public* key can encrypt, so only a nested JWS signed by a
    /// configured verification key says who issued it.
    fn verify_jwe(&self, token: &str, now: Option<u64>) -> Result<Verified, AuthError> {
        let ring = self.jwe.as_ref().ok_or(AuthError::Malformed)?;
        let d = jwe::decrypt(ring, token).map_err(|e| match e {
            JweError::Malformed => AuthError::Malformed,
            JweError::Unsupported => AuthError::Algorithm,
            JweError::Decrypt | JweError::Encrypt => AuthError::Decrypt,
        })?;
        let v = if d.cty_jwt {
            let inner = std::str::from_utf8(&d.plaintext).map_err(|_| AuthError::Malformed)?;
            // One layer of nesting only: a JWE inside a JWE is refused.
            self.verify_jws(inner, now)?
        } else if d.nested_required {
            return Err(AuthError::NestedRequired);
        } else {
            let claims = JsonObject::parse(&d.plaintext)?;
            // The revocation identity is what the AEAD authenticated, not the token text.
            // Decryption keys are the `[jwt]` issuer's, so only its tokens may come this way.
            self.check_claims(&claims, &d.plaintext, now, &self.default_expect())?
        };
        Ok(v)
    }

    fn verify_jws(&self, token: &str, now: Option<u64>) -> Result<Verified, AuthError> {
        let (signing_input, signature) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let (header_b64, payload_b64) =
            signing_input.split_once('.').ok_or(AuthError::Malformed)?;
        if payload_b64.contains('.') {
            // Four or more segments: not a JWS (a JWE has five and is handled elsewhere).
            return Err(AuthError::Malformed);
        }
        for seg in [header_b64, payload_b64, signature] {
            if seg.is_empty() || !is_base64url(seg) {
                return Err(AuthError::Malformed);
            }
        }

        let header_json = b64(header_b64)?;
        let header = JsonObject::parse(&header_json)?;
        let alg = header.get("alg").ok_or(AuthError::Malformed)?;
        let alg: Cow<'_, str> =
            serde_json::from_str(alg.get()).map_err(|_| AuthError::Malformed)?;
        let alg = parse_alg(&alg).ok_or(AuthError::Algorithm)?;
        for forbidden in ["jwk", "jku", "x5u", "x5c", "crit", "b64", "enc", "zip"] {
            if header.get(forbidden).is_some() {
                return Err(AuthError::ForbiddenHeader);
            }
        }
        let kid: Option<Cow<'_, str>> = match header.get("kid") {
            None => None,
            Some(raw) => Some(serde_json::from_str(raw.get()).map_err(|_| AuthError::Malformed)?),
        };

        // Several issuers: the unverified `iss` picks whose keys may verify the token (see
        // `auth::issuers`); the payload is then parsed once, before the signature check.
        let (early_json, late_json): (Vec<u8>, Vec<u8>);
        let mut early_claims = None;
        let expect = match &self.issuers {
            None => self.default_expect(),
            Some(set) => {
                early_json = b64(payload_b64)?;
                let claims = JsonObject::parse(&early_json)?;
                let iss = string_claim(&claims, "iss")?;
                let expect = self.select(set, iss.as_deref())?;
                early_claims = Some(claims);
                expect
            }
        };
        let (keys, published) = match expect.number {
            issuers::DEFAULT => (Some(&self.keys), self.jwks.as_deref()),
            n => {
                let set = self.issuers.as_deref().ok_or(AuthError::Issuer)?;
                let issuer = set.list.get(usize::from(n) - 1).ok_or(AuthError::Issuer)?;
                (None, Some(&*issuer.keys))
            }
        };
        check_signature(
            keys,
            published,
            kid.as_deref(),
            alg,
            signing_input,
            signature,
        )?;

        let claims = match early_claims {
            Some(c) => c,
            None => {
                late_json = b64(payload_b64)?;
                JsonObject::parse(&late_json)?
            }
        };
        // The revocation identity is the signing input, never the token text: an ECDSA
        // signature (r, s) has a twin (r, n - s) that verifies as well, and base64 can spell
        // one signature more than one way; both would dodge a revocation keyed on the text.
        self.check_claims(&claims, signing_input.as_bytes(), now, &expect)
    }

    /// What tokens of the `[jwt]` issuer are checked against.
    fn default_expect(&self) -> Expect<'_> {
        let iss = match (&self.issuer, &self.issuers) {
            (Some(want), _) => IssCheck::Exact(want),
            (None, Some(_)) => IssCheck::Absent,
            (None, None) => IssCheck::Any,
        };
        Expect {
            number: issuers::DEFAULT,
            iss,
            audience: &self.audience,
            leeway: self.leeway,
            user_claim: &self.user_claim,
        }
    }

    /// The issuer a token naming `iss` belongs to. Refused (`Issuer`, 401) when `iss` names
    /// no configured issuer (the `[jwt]` one included, which without `[jwt] issuer` takes only
    /// tokens without `iss`), or the `[jwt]` issuer it selects has no keys to try.
    fn select<'v>(&'v self, set: &'v Issuers, iss: Option<&str>) -> Result<Expect<'v>, AuthError> {
        if let Some((number, i)) = iss.and_then(|iss| set.find(iss)) {
            return Ok(Expect {
                number,
                iss: IssCheck::Exact(&i.iss),
                audience: &i.audience,
                leeway: i.leeway,
                user_claim: &i.user_claim,
            });
        }
        let default = self.default_expect();
        let has_keys = !self.keys.is_empty() || self.jwks.is_some();
        if has_keys && default.iss.admits(iss) {
            Ok(default)
        } else {
            Err(AuthError::Issuer)
        }
    }

    fn check_times(
        &self,
        leeway: u64,
        now: u64,
        exp: Option<u64>,
        nbf: Option<u64>,
        iat: Option<u64>,
    ) -> Result<(), AuthError> {
        match exp {
            Some(exp) if now >= exp.saturating_add(leeway) => return Err(AuthError::Expired),
            None if self.require_exp => return Err(AuthError::MissingExp),
            _ => {}
        }
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(AuthError::NotYetValid);
        }
        if iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
            return Err(AuthError::IssuedInFuture);
        }
        Ok(())
    }

    fn check_claims(
        &self,
        c: &JsonObject<'_>,
        signed: &[u8],
        now: Option<u64>,
        expect: &Expect<'_>,
    ) -> Result<Verified, AuthError> {
        let exp = numeric_date(c, "exp")?;
        let nbf = numeric_date(c, "nbf")?;
        let iat = numeric_date(c, "iat")?;
        if let Some(now) = now {
            self.check_times(expect.leeway, now, exp, nbf, iat)?;
        }
        if !matches!(expect.iss, IssCheck::Any) {
            let iss = string_claim(c, "iss")?;
            if !expect.iss.admits(iss.as_deref()) {
                return Err(AuthError::Issuer);
            }
        }
        if !expect.audience.is_empty() {
            let raw = c.get("aud").ok_or(AuthError::Audience)?;
            let auds: OneOrMany<'_> =
                serde_json::from_str(raw.get()).map_err(|_| AuthError::Claims)?;
            let hit = match &auds {
                OneOrMany::One(a) => expect.audience.iter().any(|w| w == a),
                OneOrMany::Many(v) => v.iter().any(|a| expect.audience.iter().any(|w| w == a)),
            };
            if !hit {
                return Err(AuthError::Audience);
            }
        }
        let sub = string_claim(c, "sub")?;
        let user = if expect.user_claim == "sub" {
            sub.clone()
        } else {
            string_claim(c, expect.user_claim)?
        };
        let user = user_header_value(user.as_deref())?;

        let jkt = confirmation_jkt(c)?;
        let mut extra = SmallVec::new();
        for (i, name) in self.extra_claims.iter().enumerate() {
            // `[identity.claims]` may name the DPoP thumbprint, which sits inside `cnf`.
            if name == "cnf.jkt" {
                if let Some(jkt) = &jkt {
                    extra.push((
                        i,
                        HeaderValue::from_str(jkt).map_err(|_| AuthError::Claims)?,
                    ));
                }
                continue;
            }
            if let Some(raw) = c.get(name) {
                if let Some(v) = claim_header_value(raw)? {
                    extra.push((i, v));
                }
            }
        }

        let (token_key, has_jti) = match string_claim(c, "jti")? {
            Some(jti) => (digest128(jti.as_bytes()), true),
            None => (token_digest(signed), false),
        };
        Ok(Verified {
            user,
            extra,
            token_key,
            has_jti,
            sub_key: sub.as_ref().map(|s| digest128(s.as_bytes())),
            sub: sub.map(Cow::into_owned),
            iat,
            exp,
            grants: self
                .grants
                .as_ref()
                .map(|spec| Box::new(spec.extract(&|name| c.get(name)))),
            jkt,
            issuer: expect.number,
            leeway: expect.leeway,
        })
    }
}

/// Verify `signature` over `signing_input` with one issuer's keys: its configured `keys`
/// first, then its `published` set (read only when the configured keys did not verify, so a
/// gateway without `[jwt.jwks]` pays one branch). Refused: `Algorithm` (no key for this
/// alg, or a known kid under another alg), `UnknownKey` (a kid nobody has: an early,
/// rate-limited refresh of the published set is asked for), `Signature`.
fn check_signature(
    keys: Option<&KeySet>,
    published: Option<&Refresher>,
    kid: Option<&str>,
    alg: crate::jose::keys::JwsAlg,
    signing_input: &str,
    signature: &str,
) -> Result<(), AuthError> {
    let verifies = |key: &VerifyKey| key.verifies(signing_input.as_bytes(), signature);
    let mut tried = false;
    if let Some(keys) = keys {
        for key in keys.candidates(kid, alg) {
            tried = true;
            if verifies(key) {
                return Ok(());
            }
        }
    }
    let set = published.map(Refresher::current);
    if let Some(set) = &set {
        for key in set.iter().filter(|k| k.may_verify(kid, alg)) {
            tried = true;
            if verifies(key) {
                return Ok(());
            }
        }
    }
    if tried {
        return Err(AuthError::Signature);
    }
    // A kid we know under another alg is an algorithm mismatch; otherwise unknown.
    let known = |k: &str| {
        keys.is_some_and(|ks| ks.has_kid(k))
            || set
                .as_ref()
                .is_some_and(|p| p.iter().any(|key| key.kid.as_deref() == Some(k)))
    };
    Err(match kid {
        Some(k) if known(k) => AuthError::Algorithm,
        Some(_) => {
            // Perhaps the issuer published a new key since the last fetch: ask for an early
            // (rate-limited) refresh. This request is refused all the same.
            if let Some(published) = published {
                published.unknown_kid();
            }
            AuthError::UnknownKey
        }
        None => AuthError::Algorithm,
    })
}

/// `cnf.jkt` of a claims set: absent, or a base64url SHA-256 thumbprint (43 characters). A
/// `cnf` that is not an object, or a `jkt` that is not such a string, refuses the token: a
/// binding we cannot read must not turn the token into a bearer token.
fn confirmation_jkt(c: &JsonObject<'_>) -> Result<Option<String>, AuthError> {
    let Some(raw) = c.get("cnf") else {
        return Ok(None);
    };
    let cnf = JsonObject::parse(raw.get().as_bytes()).map_err(|_| AuthError::Claims)?;
    match string_claim(&cnf, "jkt")? {
        None => Ok(None),
        Some(j) if j.len() == 43 && is_base64url(&j) => Ok(Some(j.into_owned())),
        Some(_) => Err(AuthError::Claims),
    }
}

/// The revocation key of a token without `jti`: a digest of what its issuer signed (the JWS
/// signing input) or encrypted (a bare JWE claims set), domain-separated from `jti` and
/// subject keys.
pub fn token_digest(signed: &[u8]) -> Digest128 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"portcullis token v2\0");
    h.update(signed);
    let full = h.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&full[..16]);
    key
}

/// The user claim as the upstream will read it. Refused (401 `invalid_token`): absent,
/// empty, only whitespace, leading or trailing whitespace (HTTP parsers trim header values,
/// RFC 9110 section 5.5, so `" alice "` would reach the upstream as `alice` while revocation
/// is keyed on the padded text), or any control character (tab, CR, LF, DEL, C1).
fn user_header_value(user: Option<&str>) -> Result<HeaderValue, AuthError> {
    let user = user.ok_or(AuthError::Claims)?;
    let trimmed = user.trim_matches(char::is_whitespace);
    if trimmed.is_empty() || trimmed.len() != user.len() || user.chars().any(char::is_control) {
        return Err(AuthError::Claims);
    }
    HeaderValue::from_str(user).map_err(|_| AuthError::Claims)
}

fn is_base64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn b64(s: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| AuthError::Malformed)
}

/// A NumericDate claim: absent, or a non-negative integer number of seconds.
fn numeric_date(c: &JsonObject<'_>, name: &str) -> Result<Option<u64>, AuthError> {
    match c.get(name) {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<u64>(raw.get())
            .map(Some)
            .map_err(|_| AuthError::Claims),
    }
}

fn string_claim<'a>(c: &JsonObject<'a>, name: &str) -> Result<Option<Cow<'a, str>>, AuthError> {
    match c.get(name) {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<Cow<'a, str>>(raw.get())
            .map(Some)
            .map_err(|_| AuthError::Claims),
    }
}

/// A claim as a header value: strings as-is, numbers and booleans as JSON text, arrays of
/// those joined by commas; `null` means no header. Objects cannot be expressed and reject the
/// token rather than be silently dropped.
fn claim_header_value(raw: &RawValue) -> Result<Option<HeaderValue>, AuthError> {
    let v: serde_json::Value = serde_json::from_str(raw.get()).map_err(|_| AuthError::Claims)?;
    fn scalar(v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    let text = match &v {
        serde_json::Value::Null => return Ok(None),
        serde_json::Value::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                parts.push(scalar(item).ok_or(AuthError::Claims)?);
            }
            parts.join(",")
        }
        other => scalar(other).ok_or(AuthError::Claims)?,
    };
    HeaderValue::from_str(&text)
        .map(Some)
        .map_err(|_| AuthError::Claims)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<'a> {
    #[serde(borrow)]
    One(Cow<'a, str>),
    #[serde(borrow)]
    Many(Vec<Cow<'a, str>>),
}

/// A JSON object kept as raw member values, refusing duplicate member names.
pub struct JsonObject<'a> {
    members: SmallVec<[(Cow<'a, str>, &'a RawValue); 12]>,
}

impl<'a> JsonObject<'a> {
    /// Parse `bytes` as one JSON object; anything else (array, string, trailing data,
    /// duplicate names, more than `MAX_MEMBERS` members) is malformed.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, AuthError> {
        serde_json::from_slice(bytes).map_err(|_| AuthError::Malformed)
    }

    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.members
            .iter()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| *v)
    }
}

impl<'de> Deserialize<'de> for JsonObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = JsonObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members: SmallVec<[(Cow<'de, str>, &'de RawValue); 12]> = SmallVec::new();
                while let Some(MemberName(name)) = map.next_key()? {
                    if members.len() == MAX_MEMBERS {
                        return Err(de::Error::custom("too many members"));
                    }
                    if members.iter().any(|(k, _)| *k == name) {
                        return Err(de::Error::custom("duplicate member name"));
                    }
                    let value: &'de RawValue = map.next_value()?;
                    members.push((name, value));
                }
                Ok(JsonObject { members })
            }
        }
        d.deserialize_map(ObjectVisitor)
    }
}

/// A member name borrowed from the input when it has no escapes.
struct MemberName<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for MemberName<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = MemberName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(NameVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::KeyMaterial;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn validator() -> Validator {
        let keys = KeySet::build(
            vec![KeyMaterial {
                label: "k".into(),
                kid: Some("hs1".into()),
                alg: "HS256".into(),
                secret: Some(SECRET.to_vec()),
                secret_base64: false,
                public_pem: None,
                private_pem: None,
            }],
            None,
        )
        .unwrap();
        Validator {
            keys,
            issuer: Some("https://issuer.example".into()),
            audience: vec!["api".into()],
            leeway: 30,
            require_exp: true,
            max_token_bytes: 8192,
            user_claim: "sub".into(),
            extra_claims: vec!["roles".into()],
            jwe: None,
            jwks: None,
            grants: None,
            issuers: None,
        }
    }

    fn sign(claims: serde_json::Value) -> String {
        let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some("hs1".into());
        encode(&h, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn good() -> serde_json::Value {
        json!({"sub": "alice", "exp": NOW + 60, "iat": NOW, "iss": "https://issuer.example", "aud": "api", "jti": "j1", "roles": ["a", "b"]})
    }

    /// Re-sign arbitrary header and payload JSON text with the configured secret.
    fn raw(header: &str, payload: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let sig = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(SECRET),
            jsonwebtoken::Algorithm::HS256,
        )
        .unwrap();
        format!("{input}.{sig}")
    }

    #[test]
    fn accepts_good_token() {
        let v = validator().verify(&sign(good()), NOW).unwrap();
        assert_eq!(v.user, "alice");
        assert_eq!(v.extra[0].1, "a,b");
        assert!(v.has_jti);
        assert_eq!(v.iat, Some(NOW));
    }

    #[test]
    fn claim_checks() {
        let val = validator();
        let cases: Vec<(serde_json::Value, AuthError)> = vec![
            (json!({"exp": NOW - 31}), AuthError::Expired),
            (json!({"exp": serde_json::Value::Null}), AuthError::Claims),
            (json!({"nbf": NOW + 31}), AuthError::NotYetValid),
            (json!({"iat": NOW + 31}), AuthError::IssuedInFuture),
            (json!({"iss": "https://evil.example"}), AuthError::Issuer),
            (json!({"aud": "other"}), AuthError::Audience),
            (json!({"aud": ["x", "y"]}), AuthError::Audience),
            (json!({"sub": 42}), AuthError::Claims),
            (json!({"sub": ""}), AuthError::Claims),
            (json!({"exp": 1.8e9}), AuthError::Claims),
            (json!({"exp": "1800000060"}), AuthError::Claims),
            (json!({"exp": -5}), AuthError::Claims),
            (json!({"roles": {"nested": true}}), AuthError::Claims),
        ];
        for (patch, want) in cases {
            let mut c = good();
            for (k, v) in patch.as_object().unwrap() {
                c[k] = v.clone();
            }
            assert_eq!(val.verify(&sign(c.clone()), NOW).unwrap_err(), want, "{c}");
        }
        let mut c = good();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            val.verify(&sign(c), NOW).unwrap_err(),
            AuthError::MissingExp
        );
        // Within leeway is fine.
        let mut c = good();
        c["exp"] = json!(NOW - 10);
        assert!(val.verify(&sign(c), NOW).is_ok());
        // Audience as array with one match.
        let mut c = good();
        c["aud"] = json!(["x", "api"]);
        assert!(val.verify(&sign(c), NOW).is_ok());
    }

    #[test]
    fn huge_exp_is_rejected() {
        let tok = raw(
            r#"{"alg":"HS256","kid":"hs1"}"#,
            r#"{"sub":"alice","exp":99999999999999999999999,"iss":"https://issuer.example","aud":"api"}"#,
        );
        assert_eq!(
            validator().verify(&tok, NOW).unwrap_err(),
            AuthError::Claims
        );
    }

    #[test]
    fn alg_none_in_every_casing_is_refused() {
        let val = validator();
        for alg in ["none", "None", "NONE", "nOnE"] {
            let h = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"hs1"}}"#));
            let p = URL_SAFE_NO_PAD.encode(good().to_string());
            for tok in [format!("{h}.{p}."), format!("{h}.{p}.AAAA")] {
                let e = val.verify(&tok, NOW).unwrap_err();
                assert!(
                    matches!(e, AuthError::Malformed | AuthError::Algorithm),
                    "{alg}: {e:?}"
                );
            }
        }
    }

    #[test]
    fn forbidden_headers() {
        for extra in [
            r#""jwk":{"kty":"oct","k":"AAAA"}"#,
            r#""jku":"https://evil.example/jwks""#,
            r#""x5u":"https://evil.example/cert""#,
            r#""x5c":["MIIB"]"#,
            r#""crit":["exp"]"#,
            r#""b64":false"#,
            r#""enc":"A256GCM""#,
        ] {
            let tok = raw(
                &format!(r#"{{"alg":"HS256","kid":"hs1",{extra}}}"#),
                &good().to_string(),
            );
            assert_eq!(
                validator().verify(&tok, NOW).unwrap_err(),
                AuthError::ForbiddenHeader,
                "{extra}"
            );
        }
    }

    #[test]
    fn duplicate_members_are_malformed() {
        let tok = raw(
            r#"{"alg":"HS256","alg":"HS256","kid":"hs1"}"#,
            &good().to_string(),
        );
        assert_eq!(
            validator().verify(&tok, NOW).unwrap_err(),
            AuthError::Malformed
        );
        let tok = raw(
            r#"{"alg":"HS256","kid":"hs1"}"#,
            &format!(
                r#"{{"sub":"alice","sub":"admin","exp":{},"iss":"https://issuer.example","aud":"api"}}"#,
                NOW + 60
            ),
        );
        assert_eq!(
            validator().verify(&tok, NOW).unwrap_err(),
            AuthError::Malformed
        );
    }

    #[test]
    fn shape_attacks() {
        let val = validator();
        let good = sign(good());
        let parts: Vec<&str> = good.split('.').collect();
        let cases = [
            format!("{}.{}", parts[0], parts[1]),
            format!("{good}.x"),
            format!("{good}.x.y"),
            format!("{}.{}.", parts[0], parts[1]),
            format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
            format!("{}.{}+.{}", parts[0], parts[1], parts[2]),
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                &parts[2][..parts[2].len() - 4]
            ),
            format!("{}é.{}.{}", parts[0], parts[1], parts[2]),
            String::new(),
        ];
        for tok in cases {
            assert!(val.verify(&tok, NOW).is_err(), "{tok}");
        }
        let not_object = raw(r#"{"alg":"HS256","kid":"hs1"}"#, r#"["sub","alice"]"#);
        assert_eq!(
            val.verify(&not_object, NOW).unwrap_err(),
            AuthError::Malformed
        );
        let big = format!("{}.{}.{}", parts[0], "A".repeat(9000), parts[2]);
        assert_eq!(val.verify(&big, NOW).unwrap_err(), AuthError::TooLarge);
    }

    #[test]
    fn unknown_kid_and_wrong_key() {
        let tok = raw(
            r#"{"alg":"HS256","kid":"../../etc/passwd"}"#,
            &good().to_string(),
        );
        assert_eq!(
            validator().verify(&tok, NOW).unwrap_err(),
            AuthError::UnknownKey
        );
        let other = encode(
            &Header {
                kid: Some("hs1".into()),
                ..Header::new(jsonwebtoken::Algorithm::HS256)
            },
            &good(),
            &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
        )
        .unwrap();
        assert_eq!(
            validator().verify(&other, NOW).unwrap_err(),
            AuthError::Signature
        );
        let hs384 = raw(r#"{"alg":"HS384","kid":"hs1"}"#, &good().to_string());
        assert_eq!(
            validator().verify(&hs384, NOW).unwrap_err(),
            AuthError::Algorithm
        );
    }

    #[test]
    fn jti_less_token_is_keyed_by_token_digest() {
        let mut c = good();
        c.as_object_mut().unwrap().remove("jti");
        let tok = sign(c);
        let v = validator().verify(&tok, NOW).unwrap();
        assert!(!v.has_jti);
        let signing_input = tok.rsplit_once('.').unwrap().0;
        assert_eq!(v.token_key, token_digest(signing_input.as_bytes()));
    }

    /// A validator with `[[jwt.issuers]]` A and B, whose HS256 keys share the kid `k`.
    fn with_issuers() -> Validator {
        use crate::jose::jwks::{FetchOptions, Source};
        let issuer = |name: &str, iss: &str, secret: &str| {
            let doc = format!(
                r#"{{"keys":[{{"kty":"oct","kid":"k","alg":"HS256","k":"{}"}}]}}"#,
                URL_SAFE_NO_PAD.encode(secret)
            );
            let keys = crate::jose::keys::parse_jwks(doc.as_bytes(), "test").unwrap();
            crate::auth::issuers::Issuer {
                name: name.into(),
                iss: iss.into(),
                audience: vec!["api".into()],
                leeway: 30,
                user_claim: "sub".into(),
                keys: Refresher::new(
                    Source::File("/nonexistent".into()),
                    FetchOptions::default(),
                    keys,
                    std::time::Duration::from_secs(60),
                    std::time::Duration::from_secs(1),
                ),
            }
        };
        Validator {
            issuers: Some(std::sync::Arc::new(Issuers {
                list: vec![
                    issuer("a", "https://a.example/", SECRET_A),
                    issuer("b", "https://b.example/", SECRET_B),
                ],
            })),
            ..validator()
        }
    }

    const SECRET_A: &str = "issuer-a-secret-issuer-a-secret-";
    const SECRET_B: &str = "issuer-b-secret-issuer-b-secret-";

    fn sign_with(secret: &[u8], kid: &str, claims: serde_json::Value) -> String {
        let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(kid.into());
        encode(&h, &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn claims_of(iss: Option<&str>) -> serde_json::Value {
        let mut c = good();
        match iss {
            Some(iss) => c["iss"] = iss.into(),
            None => {
                c.as_object_mut().unwrap().remove("iss");
            }
        }
        c
    }

    #[test]
    fn the_iss_selects_the_issuer_whose_keys_alone_may_verify() {
        let v = with_issuers();
        let a = v
            .verify(
                &sign_with(
                    SECRET_A.as_bytes(),
                    "k",
                    claims_of(Some("https://a.example/")),
                ),
                NOW,
            )
            .unwrap();
        assert_eq!(a.issuer, 1);
        let b = v
            .verify(
                &sign_with(
                    SECRET_B.as_bytes(),
                    "k",
                    claims_of(Some("https://b.example/")),
                ),
                NOW,
            )
            .unwrap();
        assert_eq!(b.issuer, 2);
        let own = v.verify(&sign(good()), NOW).unwrap();
        assert_eq!(own.issuer, crate::auth::issuers::DEFAULT);
        // A's key (same kid as B's) claiming B; the default key claiming A; A's key claiming
        // the default issuer, no issuer, or an unknown one.
        for (token, want) in [
            (
                sign_with(
                    SECRET_A.as_bytes(),
                    "k",
                    claims_of(Some("https://b.example/")),
                ),
                AuthError::Signature,
            ),
            (
                sign_with(SECRET, "hs1", claims_of(Some("https://a.example/"))),
                AuthError::UnknownKey,
            ),
            (
                sign_with(
                    SECRET_A.as_bytes(),
                    "k",
                    claims_of(Some("https://issuer.example")),
                ),
                AuthError::UnknownKey,
            ),
            (
                sign_with(SECRET_A.as_bytes(), "k", claims_of(None)),
                AuthError::Issuer,
            ),
            (
                sign_with(
                    SECRET_A.as_bytes(),
                    "k",
                    claims_of(Some("https://c.example/")),
                ),
                AuthError::Issuer,
            ),
            (
                sign_with(
                    SECRET_A.as_bytes(),
                    "k",
                    json!({"iss": 7, "sub": "x", "exp": NOW + 60}),
                ),
                AuthError::Claims,
            ),
        ] {
            assert_eq!(v.verify(&token, NOW).unwrap_err(), want);
        }
    }

    #[test]
    fn without_a_pinned_jwt_issuer_the_default_takes_only_tokens_without_iss() {
        let v = Validator {
            issuer: None,
            ..with_issuers()
        };
        assert!(v.verify(&sign(claims_of(None)), NOW).is_ok());
        assert_eq!(
            v.verify(&sign(claims_of(Some("https://c.example/"))), NOW)
                .unwrap_err(),
            AuthError::Issuer
        );
        assert_eq!(
            v.verify(&sign(claims_of(Some("https://b.example/"))), NOW)
                .unwrap_err(),
            AuthError::UnknownKey
        );
    }
}
