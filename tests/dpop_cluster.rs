//! The DPoP replay cache shared through Redis in cluster mode: a proof (jwcrypto, through
//! `common::dpop`) accepted by one instance is refused when replayed against another one
//! sharing the Redis, at the proxy and at sign-in; with Redis gone, each instance still
//! refuses what it saw itself and keeps accepting fresh proofs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::dpop::Client;
use common::redis_server::RedisServer;
use common::revocation::{client, token_with, Gw};
use common::{tokens, Reply, TestGateway, Upstream};
use serde_json::json;

/// Both instances sign and check `htu` for this origin, so one proof is valid at either.
const ORIGIN: &str = "https://api.example.com";

struct Node {
    gw: Gw,
    _dir: tempfile::TempDir,
}

async fn node(up: &Upstream, redis: &RedisServer) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let users = common::users_toml(&[("u-1", "alice", "wonderland")]);
    std::fs::write(dir.path().join("users.toml"), users).unwrap();
    let extra = format!(
        "[revocation]\nstore = \"{}\"\nkey_prefix = \"pcs\"\ntimeout = \"1s\"\n\n[signin]\nusers_file = \"users.toml\"\nsigning_kid = \"hs1\"\n\n[dpop]\nmax_age = \"60s\"\npublic_origin = \"{ORIGIN}\"\n",
        redis.url()
    );
    let gw = Gw::start(dir.path(), &up.url(), &extra).await;
    Node { gw, _dir: dir }
}

async fn call(node: &Node, token: &str, proof: &str) -> Reply {
    TestGateway::send(
        client()
            .get(format!("http://{}/api", node.gw.proxy))
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof),
    )
    .await
}

fn assert_refused(r: &Reply, what: &str) {
    assert_eq!(r.status, 401, "{what}: {r:?}");
    assert_eq!(r.json()["error"], "invalid_dpop_proof", "{what}: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_replayed_against_another_instance_is_refused() {
    let Some(key) = Client::new("EC") else { return };
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let (a, b) = (node(&up, &redis).await, node(&up, &redis).await);
    let mut claims = tokens::claims("u-1");
    claims["cnf"] = json!({ "jkt": key.jkt });
    let token = token_with(claims);
    let spec = |t: &str| json!({"htm": "GET", "htu": format!("{ORIGIN}/api"), "token": t});

    let p = key.proof(spec(&token));
    assert_eq!(call(&a, &token, &p).await.status, 200);
    assert_refused(
        &call(&b, &token, &p).await,
        "replayed on the other instance",
    );
    assert_refused(&call(&a, &token, &p).await, "replayed on the same instance");
    let fresh = key.proof(spec(&token));
    assert_eq!(
        call(&b, &token, &fresh).await.status,
        200,
        "a fresh proof passes"
    );

    // Sign-in too: a login proof used at A cannot log in again at B.
    let login = key.proof(json!({"htm": "POST", "htu": format!("{ORIGIN}/auth/login")}));
    let body = json!({"username": "alice", "password": "wonderland"});
    let post = |n: &Node| {
        client()
            .post(format!("http://{}/auth/login", n.gw.proxy))
            .header("dpop", &login)
            .json(&body)
    };
    let first = TestGateway::send(post(&a)).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.json()["token_type"], "DPoP");
    let again = TestGateway::send(post(&b)).await;
    assert_eq!(again.status, 400, "{again:?}");
    assert_eq!(again.json()["error"], "invalid_dpop_proof");

    // Redis holds digests, never a proof or a jti.
    let mut conn = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("pcs:dpop:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys.iter().all(|k| k.len() == "pcs:dpop:".len() + 32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_gone_each_instance_still_refuses_what_it_saw() {
    let Some(key) = Client::new("EC") else { return };
    let mut redis = RedisServer::start();
    let up = Upstream::start().await;
    let a = node(&up, &redis).await;
    let mut claims = tokens::claims("u-1");
    claims["cnf"] = json!({ "jkt": key.jkt });
    let token = token_with(claims);
    redis.kill_9();
    let p = key.proof(json!({"htm": "GET", "htu": format!("{ORIGIN}/api"), "token": token}));
    assert_eq!(
        call(&a, &token, &p).await.status,
        200,
        "degraded: the local cache decides"
    );
    assert_refused(&call(&a, &token, &p).await, "replayed on the same instance");
}
