//! DPoP proofs (RFC 9449): the `Authorization: DPoP` credential, the check of one proof JWT
//! (section 4.3) against the request and the access token, the RFC 7638 thumbprint a bound
//! token names in `cnf.jkt`, and the in-memory `jti` replay cache. A pure function of the
//! proof, the request's method and URI, the token and the clock: no request path, no store.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use dashmap::DashMap;
use http::header::AUTHORIZATION;
use http::HeaderMap;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::bearer;
use super::jws::JsonObject;
use super::keys::{jwk_verify_key, parse_alg, Jwk, JwsAlg};
use super::AuthError;

/// The request header carrying the proof (RFC 9449 section 4.1).
pub const DPOP: http::HeaderName = http::HeaderName::from_static("dpop");
/// The response header carrying a server nonce (RFC 9449 section 8).
pub const DPOP_NONCE: http::HeaderName = http::HeaderName::from_static("dpop-nonce");
/// Largest proof accepted, in bytes: an RSA-4096 `jwk` plus signature fits in ~2 KiB.
pub const MAX_PROOF_BYTES: usize = 8 * 1024;
/// Longest `jti` accepted (RFC 9449 section 11.1 asks for 96 bits of randomness).
const MAX_JTI_BYTES: usize = 256;

/// Why a DPoP proof (or the lack of one) was refused. The variant is the log and metrics
/// label; the client always reads `invalid_dpop_proof` (or `use_dpop_nonce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("a DPoP proof is required (bound token, DPoP scheme, or dpop = \"required\")")]
    Missing,
    #[error("more than one DPoP header")]
    Multiple,
    #[error("the proof is not a well-formed JWS compact serialization")]
    Malformed,
    #[error("the proof's typ is not dpop+jwt")]
    Type,
    #[error("the proof's alg is not one of [dpop] algs")]
    Algorithm,
    #[error("the proof's jwk is missing, private, weak or unsupported")]
    Key,
    #[error("the proof's signature does not verify with its jwk")]
    Signature,
    #[error("the proof's htm is not the request method")]
    Method,
    #[error("the proof's htu is not the request URI")]
    Uri,
    #[error("the proof's iat is outside [dpop] max_age (plus leeway)")]
    Time,
    #[error("the proof's ath is missing or not the hash of the access token")]
    Ath,
    #[error("the token's cnf.jkt is not the thumbprint of the proof's key (or is absent)")]
    Binding,
    #[error("the proof's jti was seen before")]
    Replay,
    #[error("a DPoP-bound token was sent as a bearer token")]
    BoundAsBearer,
    #[error("the proof carries no valid server nonce")]
    UseNonce,
}

impl DpopError {
    /// Short stable name, used as the metrics label and in logs.
    pub fn reason(self) -> &'static str {
        match self {
            DpopError::Missing => "dpop_missing",
            DpopError::Multiple => "dpop_multiple",
            DpopError::Malformed => "dpop_malformed",
            DpopError::Type => "dpop_typ",
            DpopError::Algorithm => "dpop_alg",
            DpopError::Key => "dpop_key",
            DpopError::Signature => "dpop_signature",
            DpopError::Method => "dpop_htm",
            DpopError::Uri => "dpop_htu",
            DpopError::Time => "dpop_iat",
            DpopError::Ath => "dpop_ath",
            DpopError::Binding => "dpop_binding",
            DpopError::Replay => "dpop_replay",
            DpopError::BoundAsBearer => "dpop_bound_as_bearer",
            DpopError::UseNonce => "dpop_nonce",
        }
    }

    /// The `error` of the `DPoP` challenge (RFC 9449 sections 7.1 and 8).
    pub fn code(self) -> &'static str {
        match self {
            DpopError::UseNonce => "use_dpop_nonce",
            _ => "invalid_dpop_proof",
        }
    }

    /// What the client reads in `error_description`: enough to fix an honest client.
    pub fn description(self) -> &'static str {
        match self {
            DpopError::UseNonce => "a DPoP proof with the server nonce is required",
            DpopError::BoundAsBearer => "this token is DPoP-bound; send it with a DPoP proof",
            DpopError::Missing => "a DPoP proof is required",
            _ => "the DPoP proof is invalid",
        }
    }
}

/// The access token of a request and the scheme it came under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    Bearer(&'a str),
    /// `Authorization: DPoP <token>` (RFC 9449 section 7.1).
    Dpop(&'a str),
}

/// The token of the one `Authorization` header, under the `Bearer` or the `DPoP` scheme
/// (both names case-insensitive). Two headers are malformed, as for bearer tokens.
pub fn credential(headers: &HeaderMap, max_bytes: usize) -> Result<Credential<'_>, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::Missing);
    };
    if values.next().is_some() {
        return Err(AuthError::Malformed);
    }
    let v = value.as_bytes();
    const SCHEME: &[u8] = b"dpop ";
    if v.len() > SCHEME.len() && v[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        let token = bearer::trim_spaces(&v[SCHEME.len()..]);
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > max_bytes {
            return Err(AuthError::TooLarge);
        }
        let token = std::str::from_utf8(token).map_err(|_| AuthError::Malformed)?;
        return Ok(Credential::Dpop(token));
    }
    bearer::parse(v, max_bytes).map(Credential::Bearer)
}

/// The one `DPoP` header of a request: none is `Missing`, two are `Multiple` (RFC 9449
/// section 4.3: "not more than one DPoP HTTP request header field").
pub fn proof_header(headers: &HeaderMap) -> Result<&str, DpopError> {
    let mut values = headers.get_all(&DPOP).iter();
    let Some(v) = values.next() else {
        return Err(DpopError::Missing);
    };
    if values.next().is_some() {
        return Err(DpopError::Multiple);
    }
    if v.len() > MAX_PROOF_BYTES {
        return Err(DpopError::Malformed);
    }
    v.to_str().map_err(|_| DpopError::Malformed)
}

/// `[dpop]` as the check needs it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub algs: Vec<JwsAlg>,
    pub max_age: Duration,
    /// `[jwt] leeway`, in seconds: clock skew allowed both ways.
    pub leeway: u64,
}

/// What the proof must match: the request and the token it accompanies.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The request method, e.g. `GET`.
    pub method: &'a str,
    /// The request URI without query and fragment, as [`htu`] builds it.
    pub htu: &'a str,
    /// The access token; `None` at a sign-in endpoint, where the proof carries no `ath`.
    pub access_token: Option<&'a str>,
}

/// A proof that passed every check but the replay cache and the nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// RFC 7638 thumbprint of the proof's key, base64url.
    pub jkt: String,
    pub jti: String,
    pub iat: u64,
    pub nonce: Option<String>,
}

/// Check one proof (RFC 9449 section 4.3, steps 2-11 except the nonce and the replay
/// cache, which need state): structure, `typ`, `alg`, a public `jwk`, the signature, `htm`,
/// `htu`, `iat` and `ath`. `now` is unix seconds.
pub fn check(proof: &str, s: &Settings, want: &Expect<'_>, now: u64) -> Result<Proof, DpopError> {
    let (signing_input, signature) = proof.rsplit_once('.').ok_or(DpopError::Malformed)?;
    let (header_b64, payload_b64) = signing_input.split_once('.').ok_or(DpopError::Malformed)?;
    if payload_b64.contains('.') || [header_b64, payload_b64, signature].contains(&"") {
        return Err(DpopError::Malformed);
    }
    let header_json = b64(header_b64)?;
    let header = JsonObject::parse(&header_json).map_err(|_| DpopError::Malformed)?;
    if string(&header, "typ")?.as_deref() != Some("dpop+jwt") {
        return Err(DpopError::Type);
    }
    let alg = string(&header, "alg")?.ok_or(DpopError::Malformed)?;
    let alg = parse_alg(&alg)
        .filter(|a| s.algs.contains(a))
        .ok_or(DpopError::Algorithm)?;
    // Critical extensions we do not implement must refuse the proof (RFC 7515 4.1.11).
    if header.get("crit").is_some() {
        return Err(DpopError::Malformed);
    }
    let jwk = header.get("jwk").ok_or(DpopError::Key)?;
    let (key, jkt) = public_key(jwk, alg)?;
    if !key.verifies(signing_input.as_bytes(), signature) {
        return Err(DpopError::Signature);
    }

    let payload_json = b64(payload_b64)?;
    let claims = JsonObject::parse(&payload_json).map_err(|_| DpopError::Malformed)?;
    let jti = string(&claims, "jti")?.ok_or(DpopError::Malformed)?;
    if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
        return Err(DpopError::Malformed);
    }
    if string(&claims, "htm")?.as_deref() != Some(want.method) {
        return Err(DpopError::Method);
    }
    let htu_claim = string(&claims, "htu")?.ok_or(DpopError::Uri)?;
    match normalise_htu(&htu_claim) {
        Some(h) if h == want.htu => {}
        _ => return Err(DpopError::Uri),
    }
    let iat = claims
        .get("iat")
        .and_then(|raw| serde_json::from_str::<u64>(raw.get()).ok())
        .ok_or(DpopError::Time)?;
    let oldest = now.saturating_sub(s.max_age.as_secs().saturating_add(s.leeway));
    if iat < oldest || iat > now.saturating_add(s.leeway) {
        return Err(DpopError::Time);
    }
    let ath = string(&claims, "ath")?;
    match (want.access_token, ath) {
        (None, _) => {}
        (Some(_), None) => return Err(DpopError::Ath),
        (Some(token), Some(ath)) => {
            let want_ath = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
            if !bool::from(want_ath.as_bytes().ct_eq(ath.as_bytes())) {
                return Err(DpopError::Ath);
            }
        }
    }
    let nonce = string(&claims, "nonce")?;
    Ok(Proof {
        jkt,
        jti,
        iat,
        nonce,
    })
}

/// Does the token's `cnf.jkt` name the proof's key? Thumbprints are public, but the
/// comparison is constant-time all the same: it costs nothing.
pub fn binds(token_jkt: Option<&str>, proof: &Proof) -> Result<(), DpopError> {
    match token_jkt {
        Some(j) if bool::from(j.as_bytes().ct_eq(proof.jkt.as_bytes())) => Ok(()),
        _ => Err(DpopError::Binding),
    }
}

/// The proof's `jwk` as a verification key pinned to `alg`, and its thumbprint. Refused: a
/// private member (RFC 9449 section 4.3 step 7), a symmetric key, a key whose own `alg`
/// says otherwise, and any key a configured key would be refused for (weak RSA, a point
/// off the curve).
fn public_key(jwk: &RawValue, alg: JwsAlg) -> Result<(super::keys::VerifyKey, String), DpopError> {
    let members = JsonObject::parse(jwk.get().as_bytes()).map_err(|_| DpopError::Key)?;
    for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
        if members.get(private).is_some() {
            return Err(DpopError::Key);
        }
    }
    let mut parsed: Jwk = serde_json::from_str(jwk.get()).map_err(|_| DpopError::Key)?;
    match parsed.alg.as_deref() {
        Some(a) if a != alg.name() => return Err(DpopError::Key),
        _ => parsed.alg = Some(alg.name().to_owned()),
    }
    let key = jwk_verify_key(&parsed).map_err(|_| DpopError::Key)?;
    let jkt = thumbprint(&parsed).ok_or(DpopError::Key)?;
    Ok((key, jkt))
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url): the required members of the key type in
/// lexicographic order, no whitespace.
pub fn thumbprint(jwk: &Jwk) -> Option<String> {
    let q = |v: &Option<String>| v.as_deref().map(|s| serde_json::Value::from(s).to_string());
    let canonical = match jwk.kty.as_str() {
        "EC" => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            q(&jwk.crv)?,
            q(&jwk.x)?,
            q(&jwk.y)?
        ),
        "RSA" => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, q(&jwk.e)?, q(&jwk.n)?),
        "OKP" => format!(
            r#"{{"crv":{},"kty":"OKP","x":{}}}"#,
            q(&jwk.crv)?,
            q(&jwk.x)?
        ),
        _ => return None,
    };
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

/// `htu` in the form compared (RFC 9449 section 4.3 step 9, RFC 3986 section 6.2.2-3):
/// scheme and host lower-case, the default port dropped, an empty path as `/`. `None` for
/// anything that is not an absolute http(s) URI without query and fragment.
pub fn normalise_htu(s: &str) -> Option<String> {
    if s.contains(['?', '#']) {
        return None;
    }
    let uri: http::Uri = s.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    let path = match uri.path() {
        "" => "/",
        p => p,
    };
    Some(match authority.port_u16() {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}{path}"),
        _ => format!("{scheme}://{host}{path}"),
    })
}

/// The `htu` a request must carry: `origin` (`[dpop] public_origin`, or the listener's
/// scheme and the request's `Host`/`:authority`, never a forwarding header) and the path
/// the client sent, normalised like the proof's.
pub fn htu(origin: &str, path: &str) -> Option<String> {
    normalise_htu(&format!("{origin}{path}"))
}

/// `jti`s seen within their proofs' lifetime (RFC 9449 section 11.1), one process. Keys are
/// digests of thumbprint and `jti`, so memory per entry is fixed whatever a client sends.
#[derive(Debug, Default)]
pub struct ReplayCache {
    seen: DashMap<[u8; 16], u64>,
}

/// Entries kept before expired ones are swept on insert.
const SWEEP_ABOVE: usize = 100_000;

impl ReplayCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The digest a proof is remembered by (shared with a cluster-wide cache).
    pub fn key(proof: &Proof) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update(b"portcullis dpop jti v1\0");
        h.update(proof.jkt.as_bytes());
        h.update([0]);
        h.update(proof.jti.as_bytes());
        let full = h.finalize();
        let mut k = [0u8; 16];
        k.copy_from_slice(&full[..16]);
        k
    }

    /// Record a proof; `false` when it was seen before and has not expired. `expires` is
    /// when the proof stops passing the `iat` check anyway.
    pub fn first_use(&self, key: [u8; 16], expires: u64, now: u64) -> bool {
        if self.seen.len() > SWEEP_ABOVE {
            self.seen.retain(|_, exp| *exp > now);
        }
        match self.seen.entry(key) {
            dashmap::Entry::Occupied(mut e) => {
                if *e.get() > now {
                    false
                } else {
                    e.insert(expires);
                    true
                }
            }
            dashmap::Entry::Vacant(e) => {
                e.insert(expires);
                true
            }
        }
    }
}

fn b64(s: &str) -> Result<Vec<u8>, DpopError> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| DpopError::Malformed)
}

fn string(o: &JsonObject<'_>, name: &str) -> Result<Option<String>, DpopError> {
    match o.get(name) {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<String>(raw.get())
            .map(Some)
            .map_err(|_| DpopError::Malformed),
    }
}

#[cfg(test)]
#[path = "dpop_tests.rs"]
mod tests;
