//! Sign-in issuing DPoP-bound tokens (RFC 9449 section 5), outside in, with proofs made by
//! jwcrypto (`common::dpop`): a login with a proof gets `token_type: "DPoP"`, an access token
//! with `cnf.jkt` of the proof's key (refused as a bearer token, accepted with a proof) and a
//! refresh token bound to that key; a refresh with a proof by that key rotates; a refresh
//! without one, or with another key's, is refused and ends the whole session (its access
//! tokens revoked), in the embedded store and in Redis; a bad or replayed login proof is a
//! 400 `invalid_dpop_proof`; a nonce challenge at login and refresh ends nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use common::dpop::Client;
use common::redis_server::RedisServer;
use common::revocation::{client, Gw};
use common::{Reply, TestGateway, Upstream};
use serde_json::{json, Value};

struct Env {
    gw: Gw,
    _up: Upstream,
    _dir: tempfile::TempDir,
}

/// Sign-in (alice/wonderland = u-1) with `store` (a `[revocation]` section or "") and
/// `dpop` appended to `[dpop]`.
async fn start(store: &str, dpop: &str) -> Env {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let users = common::users_toml(&[("u-1", "alice", "wonderland")]);
    std::fs::write(dir.path().join("users.toml"), users).unwrap();
    let extra = format!(
        "{store}\n[signin]\nusers_file = \"users.toml\"\nsigning_kid = \"hs1\"\n\n[dpop]\nmax_age = \"60s\"\n{dpop}\n"
    );
    let gw = Gw::start(dir.path(), &up.url(), &extra).await;
    Env {
        gw,
        _up: up,
        _dir: dir,
    }
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.proxy)
    }

    /// A proof by `key` for `method` on `path` (with the token's `ath` and a nonce if given).
    fn proof(
        &self,
        key: &Client,
        method: &str,
        path: &str,
        token: Option<&str>,
        nonce: Option<&str>,
    ) -> String {
        let mut spec = json!({ "htm": method, "htu": self.url(path) });
        if let Some(t) = token {
            spec["token"] = json!(t);
        }
        if let Some(n) = nonce {
            spec["nonce"] = json!(n);
        }
        key.proof(spec)
    }

    async fn post(&self, path: &str, body: Value, proof: Option<&str>) -> Reply {
        let mut req = client().post(self.url(path)).json(&body);
        if let Some(p) = proof {
            req = req.header("dpop", p);
        }
        TestGateway::send(req).await
    }

    async fn login(&self, proof: Option<&str>) -> Reply {
        self.post(
            "/auth/login",
            json!({"username": "alice", "password": "wonderland"}),
            proof,
        )
        .await
    }

    async fn refresh(&self, token: &str, proof: Option<&str>) -> Reply {
        self.post("/auth/refresh", json!({ "refresh_token": token }), proof)
            .await
    }

    /// GET /api with `Authorization: DPoP` and a fresh proof by `key`.
    async fn api(&self, key: &Client, token: &str) -> Reply {
        let proof = self.proof(key, "GET", "/api", Some(token), None);
        TestGateway::send(
            client()
                .get(self.url("/api"))
                .header("authorization", format!("DPoP {token}"))
                .header("dpop", proof),
        )
        .await
    }
}

fn tokens(r: &Reply) -> (String, String) {
    assert_eq!(r.status, 200, "{r:?}");
    let b = r.json();
    (
        b["access_token"].as_str().unwrap().to_owned(),
        b["refresh_token"].as_str().unwrap().to_owned(),
    )
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn assert_dpop_400(r: &Reply, code: &str, what: &str) {
    assert_eq!(r.status, 400, "{what}: {r:?}");
    assert_eq!(r.json()["error"], code, "{what}: {r:?}");
    assert!(r.json().get("access_token").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_with_a_proof_gets_tokens_bound_to_that_key() {
    let Some(key) = Client::new("EC") else { return };
    let env = start("", "").await;
    let proof = env.proof(&key, "POST", "/auth/login", None, None);
    let r = env.login(Some(&proof)).await;
    assert_eq!(r.json()["token_type"], "DPoP", "{r:?}");
    let (access, refresh) = tokens(&r);
    assert_eq!(claims(&access)["cnf"]["jkt"], key.jkt.as_str());
    assert!(
        refresh.ends_with(&format!(".{}", key.jkt)),
        "bound refresh token: {refresh}"
    );

    // The bound token is no bearer token; with a proof by its key it passes.
    let bearer = env.gw.get(&access).await;
    assert_eq!(bearer.status, 401, "{bearer:?}");
    assert_eq!(env.api(&key, &access).await.status, 200);
    let other = Client::new("EC").unwrap();
    assert_eq!(
        env.api(&other, &access).await.status,
        401,
        "another key's proof"
    );

    // The same login proof again: replayed.
    assert_dpop_400(
        &env.login(Some(&proof)).await,
        "invalid_dpop_proof",
        "a replayed login proof",
    );
    // A proof for another URL, or another method.
    let elsewhere = env.proof(&key, "POST", "/auth/elsewhere", None, None);
    assert_dpop_400(
        &env.login(Some(&elsewhere)).await,
        "invalid_dpop_proof",
        "htu of another endpoint",
    );
    let get = env.proof(&key, "GET", "/auth/login", None, None);
    assert_dpop_400(
        &env.login(Some(&get)).await,
        "invalid_dpop_proof",
        "htm GET",
    );
    // A private key in the proof's header.
    let private =
        key.proof(json!({"htm": "POST", "htu": env.url("/auth/login"), "variant": "private_jwk"}));
    assert_dpop_400(
        &env.login(Some(&private)).await,
        "invalid_dpop_proof",
        "private jwk",
    );

    // No proof: bearer tokens as before.
    let plain = env.login(None).await;
    assert_eq!(plain.json()["token_type"], "Bearer");
    let (access, refresh) = tokens(&plain);
    assert!(claims(&access).get("cnf").is_none());
    assert!(!refresh.contains('.'));
    assert_eq!(env.gw.get(&access).await.status, 200);
    env.gw.stop().await;
}

/// Refresh by the key rotates; without a proof, or with another key's, the session ends.
async fn bound_refresh(store: &str) {
    let Some(key) = Client::new("EC") else { return };
    let other = Client::new("EC").unwrap();
    let env = start(store, "").await;
    let login = env.proof(&key, "POST", "/auth/login", None, None);
    let (a1, r1) = tokens(&env.login(Some(&login)).await);

    let p = env.proof(&key, "POST", "/auth/refresh", None, None);
    let r = env.refresh(&r1, Some(&p)).await;
    assert_eq!(r.json()["token_type"], "DPoP", "{r:?}");
    let (a2, r2) = tokens(&r);
    assert_eq!(claims(&a2)["cnf"]["jkt"], key.jkt.as_str());
    assert!(r2.ends_with(&format!(".{}", key.jkt)));
    assert_eq!(env.api(&key, &a2).await.status, 200);

    // Another key's proof: refused, and the session is over for the rightful holder too.
    let stolen = env.proof(&other, "POST", "/auth/refresh", None, None);
    let r = env.refresh(&r2, Some(&stolen)).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.json()["error"], "invalid_grant");
    for t in [&a1, &a2] {
        let r = env.api(&key, t).await;
        assert_eq!(r.status, 401, "an access token of the ended session: {r:?}");
        assert_eq!(r.json()["error_description"], "token revoked");
    }
    let p = env.proof(&key, "POST", "/auth/refresh", None, None);
    assert_eq!(
        env.refresh(&r2, Some(&p)).await.status,
        401,
        "the family ended"
    );

    // No proof at all: the same.
    let login = env.proof(&key, "POST", "/auth/login", None, None);
    let (a3, r3) = tokens(&env.login(Some(&login)).await);
    let r = env.refresh(&r3, None).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        env.api(&key, &a3).await.json()["error_description"],
        "token revoked"
    );
    let p = env.proof(&key, "POST", "/auth/refresh", None, None);
    assert_eq!(env.refresh(&r3, Some(&p)).await.status, 401);
    // The binding cannot be stripped: the bare random part is an unknown token.
    let login = env.proof(&key, "POST", "/auth/login", None, None);
    let (_, r4) = tokens(&env.login(Some(&login)).await);
    let bare = r4.split('.').next().unwrap();
    assert_eq!(env.refresh(bare, None).await.status, 401);
    env.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_refresh_needs_a_proof_by_its_key_or_the_session_ends() {
    bound_refresh("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_refresh_needs_a_proof_by_its_key_or_the_session_ends_in_redis() {
    let redis = RedisServer::start();
    let store = format!(
        "[revocation]\nstore = \"{}\"\nkey_prefix = \"pcs\"\ntimeout = \"2s\"\n",
        redis.url()
    );
    bound_refresh(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_challenge_at_login_and_refresh_ends_nothing() {
    let Some(key) = Client::new("EC") else { return };
    let env = start("", "nonce = true\n").await;
    let p = env.proof(&key, "POST", "/auth/login", None, None);
    let r = env.login(Some(&p)).await;
    assert_dpop_400(&r, "use_dpop_nonce", "login without a nonce");
    let nonce = r.header("dpop-nonce").expect("DPoP-Nonce").to_owned();
    let p = env.proof(&key, "POST", "/auth/login", None, Some(&nonce));
    let (_, r1) = tokens(&env.login(Some(&p)).await);

    let p = env.proof(&key, "POST", "/auth/refresh", None, None);
    let r = env.refresh(&r1, Some(&p)).await;
    assert_dpop_400(&r, "use_dpop_nonce", "refresh without a nonce");
    let nonce = r.header("dpop-nonce").unwrap().to_owned();
    let p = env.proof(&key, "POST", "/auth/refresh", None, Some(&nonce));
    let r = env.refresh(&r1, Some(&p)).await;
    assert_eq!(
        r.status, 200,
        "the challenge did not end the session: {r:?}"
    );
    env.gw.stop().await;
}
