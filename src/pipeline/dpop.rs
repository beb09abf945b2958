//! The DPoP step of the checklist (RFC 9449 section 7): after the token is verified, a bound
//! token (`cnf.jkt`) or an `Authorization: DPoP` request must carry one valid proof by the
//! bound key; a `dpop = "required"` route takes nothing else. The proof check itself is
//! `auth::dpop`; this step supplies the request's method and URI, the clock, the replay
//! cache and the refusal (401 with a `DPoP` challenge).
//!
//! The replay cache is in memory; in cluster mode a proof that passed it is also recorded
//! in the shared Redis ([`SharedReplay`], one `SET NX` per proof), so a proof replayed
//! against another instance is refused too. That call needs `await`, so a check that
//! passed locally hands back a [`Ticket`] for [`DpopGate::confirm`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;

use crate::auth::dpop::{self as proofs, Credential, DpopError, Expect, ReplayCache, Settings};
use crate::auth::dpop_nonce::Nonces;
use crate::auth::jws::Verified;
use crate::auth::keys::JwsAlg;
use crate::config::dpop::Dpop;
use crate::response;
use crate::revocation::redis::Cluster;
use crate::routing::DpopPolicy;
use crate::signin::dpop::Proof as SignInProof;

use super::error::GatewayError;

/// What the step keeps between requests: the settings and the `jti`s seen.
pub struct DpopGate {
    settings: Settings,
    public_origin: Option<String>,
    replay: ReplayCache,
    /// `[dpop] nonce = true`: every proof must carry a current server nonce.
    nonces: Option<Nonces>,
    /// The `algs` parameter of every challenge, e.g. `ES256 EdDSA`.
    algs: String,
    /// Cluster mode: the replay cache every instance shares.
    shared: Option<SharedReplay>,
}

/// A proof that passed every check on this instance; in cluster mode it still has to be
/// new to the shared replay cache ([`DpopGate::confirm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a DPoP proof is accepted only once the ticket is confirmed"]
pub struct Ticket {
    key: [u8; 16],
    /// When the proof stops passing the `iat` check anyway (unix seconds).
    expires: u64,
}

impl DpopGate {
    pub fn new(config: &Dpop, leeway: u64, shared: Option<SharedReplay>) -> Self {
        DpopGate {
            shared,
            settings: Settings {
                algs: config.algs.clone(),
                max_age: config.max_age,
                leeway,
            },
            public_origin: config.public_origin.clone(),
            replay: ReplayCache::new(),
            nonces: config.nonce.then(|| Nonces::new(config.nonce_interval)),
            algs: config
                .algs
                .iter()
                .map(|a| JwsAlg::name(*a))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    /// Check the DPoP rules for a verified token. Rejects with 401 (`DpopRefusal`): a bound
    /// token sent as `Bearer` (on every route: a bound token must never work as a bearer
    /// token), a `DPoP` token without a valid proof by its bound key, or a bearer token on a
    /// `dpop = "required"` route.
    pub fn check<B>(
        &self,
        policy: DpopPolicy,
        req: &Request<B>,
        tls: bool,
        credential: Credential<'_>,
        token: &Verified,
        now: u64,
    ) -> Result<Option<Ticket>, DpopRefusal> {
        let token_text = match credential {
            Credential::Dpop(t) => t,
            Credential::Bearer(_) if token.jkt.is_some() => {
                return Err(self.refuse(DpopError::BoundAsBearer, now))
            }
            Credential::Bearer(_) if policy == DpopPolicy::Required => {
                return Err(self.refuse(DpopError::Missing, now))
            }
            Credential::Bearer(_) => return Ok(None),
        };
        self.check_proof(req, tls, Some(token_text), Some(token.jkt.as_deref()), now)
            .map(|(_, ticket)| Some(ticket))
            .map_err(|e| self.refuse(e, now))
    }

    /// The second half of a proof check: in cluster mode, the proof must be new to the
    /// shared replay cache too (401 `invalid_dpop_proof` if another instance saw it). With
    /// Redis unreachable the local cache alone decides (as revocations do; logged once).
    pub async fn confirm(&self, ticket: Ticket, now: u64) -> Result<(), DpopRefusal> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        match shared.first_use(ticket).await {
            Some(false) => Err(self.refuse(DpopError::Replay, now)),
            Some(true) | None => Ok(()),
        }
    }

    /// The proof a sign-in request (login, refresh) carries, checked as at the proxy but
    /// with no access token (so no `ath` and no `cnf.jkt` to match): sign-in binds the
    /// tokens it issues to the proof's key (RFC 9449 section 5).
    /// A valid proof comes with its [`Ticket`] for [`DpopGate::confirm_signin`].
    pub fn signin_proof<B>(
        &self,
        req: &Request<B>,
        tls: bool,
        now: u64,
    ) -> (SignInProof, Option<Ticket>) {
        if !req.headers().contains_key(proofs::DPOP) {
            return (SignInProof::Absent, None);
        }
        match self.check_proof(req, tls, None, None, now) {
            Ok((jkt, ticket)) => (SignInProof::Valid(jkt), Some(ticket)),
            Err(error) => (self.signin_refusal(error, now), None),
        }
    }

    /// [`DpopGate::confirm`] for a sign-in proof: a replay seen by another instance turns
    /// the valid proof into an invalid one.
    pub async fn confirm_signin(
        &self,
        proof: SignInProof,
        ticket: Option<Ticket>,
        now: u64,
    ) -> SignInProof {
        match ticket {
            Some(t) if self.confirm(t, now).await.is_err() => {
                self.signin_refusal(DpopError::Replay, now)
            }
            _ => proof,
        }
    }

    fn signin_refusal(&self, error: DpopError, now: u64) -> SignInProof {
        SignInProof::Invalid {
            error,
            nonce: self.nonces.as_ref().map(|n| n.current(now)),
        }
    }

    /// Check the request's one proof; returns its key's thumbprint. `token_text` is the
    /// access token it accompanies (`None` at sign-in); `binding` the token's `cnf.jkt` the
    /// key must match (`None` at sign-in, where nothing is bound yet).
    fn check_proof<B>(
        &self,
        req: &Request<B>,
        tls: bool,
        token_text: Option<&str>,
        binding: Option<Option<&str>>,
        now: u64,
    ) -> Result<(String, Ticket), DpopError> {
        let proof = proofs::proof_header(req.headers())?;
        let htu = self.htu(req, tls).ok_or(DpopError::Uri)?;
        let want = Expect {
            method: req.method().as_str(),
            htu: &htu,
            access_token: token_text,
        };
        let checked = proofs::check(proof, &self.settings, &want, now)?;
        if let Some(token_jkt) = binding {
            proofs::binds(token_jkt, &checked)?;
        }
        // RFC 9449 section 8: without a current nonce the client is told to retry with one.
        if let Some(nonces) = &self.nonces {
            match checked.nonce.as_deref() {
                Some(n) if nonces.accepts(n, now) => {}
                _ => return Err(DpopError::UseNonce),
            }
        }
        // Last, so a proof refused for another reason does not use up its `jti`. Remembered
        // until its `iat` would fail the age check anyway.
        let expires = checked
            .iat
            .saturating_add(self.settings.max_age.as_secs())
            .saturating_add(2 * self.settings.leeway)
            .saturating_add(1);
        let key = ReplayCache::key(&checked);
        if !self.replay.first_use(key, expires, now) {
            return Err(DpopError::Replay);
        }
        Ok((checked.jkt, Ticket { key, expires }))
    }

    /// The `htu` this request must be signed for: `[dpop] public_origin`, or the listener's
    /// scheme and the request's `Host` (HTTP/1.1) or `:authority` (HTTP/2); never
    /// `X-Forwarded-Host` or `Forwarded`, which any client can write. The path as sent.
    fn htu<B>(&self, req: &Request<B>, tls: bool) -> Option<String> {
        let path = req.uri().path();
        match &self.public_origin {
            Some(origin) => proofs::htu(origin, path),
            None => {
                let host = match req.headers().get(http::header::HOST) {
                    Some(h) => h.to_str().ok()?,
                    None => req.uri().authority()?.as_str(),
                };
                let scheme = if tls { "https" } else { "http" };
                proofs::htu(&format!("{scheme}://{host}"), path)
            }
        }
    }

    /// The refusal for `error`; with nonces on, every DPoP refusal carries the current
    /// nonce, so one round trip is enough to retry.
    fn refuse(&self, error: DpopError, now: u64) -> DpopRefusal {
        let text = format!(
            "DPoP realm=\"{}\", error=\"{}\", error_description=\"{}\", algs=\"{}\"",
            crate::auth::challenge::REALM,
            error.code(),
            error.description(),
            self.algs
        );
        DpopRefusal {
            error,
            challenge: HeaderValue::from_str(&text)
                .unwrap_or_else(|_| HeaderValue::from_static("DPoP")),
            nonce: self
                .nonces
                .as_ref()
                .and_then(|n| HeaderValue::from_str(&n.current(now)).ok()),
        }
    }
}

/// A refused DPoP request: the reason (for the log) and the challenge the client gets.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error}")]
pub struct DpopRefusal {
    pub error: DpopError,
    challenge: HeaderValue,
    /// A fresh `DPoP-Nonce` for a `use_dpop_nonce` refusal.
    nonce: Option<HeaderValue>,
}

impl DpopRefusal {
    /// 401, the one JSON error shape, `WWW-Authenticate: DPoP ...` (RFC 9449 section 7.1).
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let mut r = response::error(
            StatusCode::UNAUTHORIZED,
            self.error.code(),
            self.error.description(),
        );
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, self.challenge.clone());
        if let Some(n) = &self.nonce {
            r.headers_mut().insert(proofs::DPOP_NONCE, n.clone());
        }
        r
    }
}

impl From<DpopRefusal> for GatewayError {
    fn from(r: DpopRefusal) -> Self {
        GatewayError::Dpop(Box::new(r))
    }
}

/// The replay cache every instance of a cluster shares: one Redis key per proof,
/// `P:dpop:<32 hex>` (the digest of the key's thumbprint and the proof's `jti`), set with
/// `NX` and expiring (`EXAT`) when the proof would fail the `iat` check anyway.
pub struct SharedReplay {
    cluster: Arc<Cluster>,
    /// `P:dpop:`
    prefix: String,
    /// `[revocation] timeout`: how long Redis has to answer.
    timeout: Duration,
    /// Redis did not answer the last call: proofs are checked against the local cache only.
    degraded: AtomicBool,
}

impl SharedReplay {
    pub fn new(cluster: &Arc<Cluster>) -> SharedReplay {
        let (_, root, timeout) = cluster.session_link();
        SharedReplay {
            cluster: cluster.clone(),
            prefix: format!("{root}dpop:"),
            timeout,
            degraded: AtomicBool::new(false),
        }
    }

    /// `Some(true)` when no instance saw the proof before, `Some(false)` when one did,
    /// `None` when Redis did not answer in time.
    async fn first_use(&self, t: Ticket) -> Option<bool> {
        let mut conn = self.cluster.writer_connection();
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{}{}", self.prefix, crate::hex::encode(&t.key)))
            .arg(1)
            .arg("NX")
            .arg("EXAT")
            .arg(t.expires.max(1));
        let answer =
            tokio::time::timeout(self.timeout, cmd.query_async::<redis::Value>(&mut conn)).await;
        match answer {
            Ok(Ok(v)) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        "DPoP replay cache: Redis answers again; proofs are checked cluster-wide"
                    );
                }
                Some(!matches!(v, redis::Value::Nil))
            }
            Ok(Err(e)) => {
                self.degrade(&e.to_string());
                None
            }
            Err(_) => {
                self.degrade("no answer in time");
                None
            }
        }
    }

    fn degrade(&self, why: &str) {
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %why, "DPoP replay cache: Redis unreachable; proofs are checked against this instance's cache only until it answers");
        }
    }
}

/// Remove the proof: the upstream never needs it, and a proof is a credential for the
/// next `max_age` seconds to anyone who can replay it elsewhere. Runs on every route.
pub fn strip(headers: &mut HeaderMap) {
    headers.remove(proofs::DPOP);
}
