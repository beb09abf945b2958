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
#[path = "jws_tests.rs"]
mod tests;
