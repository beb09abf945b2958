//! Cluster mode over real sockets: gateways sharing revocations through a real
//! `redis-server` that each test starts on an ephemeral port (temp dir, no persistence;
//! `.ci/run` installs it). A revoke on one instance is refused by the others; an instance cut
//! off from Redis (through a [`Relay`] the test severs) keeps serving, refuses admin writes,
//! and catches up on reconnect, by the stream or by a full reload; a Redis restart that
//! loses every key fails no request and loses no revocation; a `kill -9`ed instance restarts
//! with the full set; readiness stays 503 until the first load.
//!
//! Timing is asserted only as bounded polling ([`eventually`]); the propagation figures are
//! `scripts/bench-propagation.sh`'s job.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::redis_server::RedisServer;
use common::revocation::{
    assert_passes, assert_revoked, client, config_text, proxy_get, token, Gw, ADMIN_TOKEN,
};
use common::{tokens, GatewayProcess, Upstream};
use common::{Reply, TestGateway};
use portcullis::revocation::{digest, key_to_hex};
use reqwest::Method;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Upper bound for anything the tests wait for (propagation, reconnection, readiness).
const WAIT: Duration = Duration::from_secs(8);
/// Key prefix of the gateways under test (not the default, so it is exercised).
const PREFIX: &str = "pct";

// ---------------------------------------------------------------------------------------
// Harness: a severable TCP relay in front of redis-server (`common::redis_server`),
// gateways configured for cluster mode.
// ---------------------------------------------------------------------------------------

/// A TCP relay in front of Redis: [`Relay::sever`] closes every relayed connection and
/// refuses new ones (accepted, then closed at once), as a network partition seen from the
/// gateway would; [`Relay::restore`] lets connections through again.
struct Relay {
    addr: SocketAddr,
    state: Arc<RelayState>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct RelayState {
    /// `Some` while connections pass; `None` while severed. One lock for the flag and the
    /// list, so no connection slips in while `sever` runs.
    conns: Mutex<Option<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let state = Arc::new(RelayState {
            conns: Mutex::new(Some(Vec::new())),
        });
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let mut conns = st.conns.lock().unwrap();
                let Some(list) = conns.as_mut() else {
                    drop(client);
                    continue;
                };
                list.push(tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        Relay {
            addr,
            state,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    fn sever(&self) {
        if let Some(list) = self.state.conns.lock().unwrap().take() {
            for conn in list {
                conn.abort();
            }
        }
    }

    fn restore(&self) {
        self.state
            .conns
            .lock()
            .unwrap()
            .get_or_insert_with(Vec::new);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.sever();
        self.accept.abort();
    }
}

/// The `[revocation]` (and `[log]`) part of a cluster-mode gateway's config.
fn cluster_toml(url: &str, more: &str) -> String {
    format!(
        "[revocation]\nstore = \"{url}\"\nkey_prefix = \"{PREFIX}\"\ntimeout = \"1s\"\n{more}\n\
         [log]\nformat = \"json\"\n"
    )
}

/// A cluster-mode gateway started in-process, its config folder kept alive beside it.
struct Node {
    gw: Gw,
    _dir: TempDir,
}

impl std::ops::Deref for Node {
    type Target = Gw;
    fn deref(&self) -> &Gw {
        &self.gw
    }
}

async fn node(up: &Upstream, url: &str, more: &str) -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = Gw::start(dir.path(), &up.url(), &cluster_toml(url, more)).await;
    Node { gw, _dir: dir }
}

/// Poll `check` every 10 ms until it holds, failing the test after [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn readyz(gw: &Gw) -> u16 {
    gw.admin(Method::GET, "/readyz", None).await.status
}

/// `portcullis ready` against this instance's admin API: (exit 0, first output line).
async fn ready_cli(gw: &Gw) -> (bool, String) {
    let url = format!("http://{}", gw.admin);
    let mut cmd = common::portcullis(&["ready", "--admin", &url]);
    cmd.env("PORTCULLIS_ADMIN_TOKEN", ADMIN_TOKEN);
    let out = common::process::output(cmd).await;
    let text = out.all();
    let first = text.lines().next().unwrap_or_default().to_owned();
    (out.ok, if out.ok { first } else { text })
}

/// The value of `portcullis_revocation_store_degraded` on this instance.
async fn degraded(gw: &Gw) -> String {
    let r = gw.admin(Method::GET, "/metrics", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_revocation_store_degraded "))
        .unwrap_or_else(|| panic!("no store_degraded gauge in {}", r.text()))
        .to_owned()
}

async fn wait_refused(gw: &Gw, token: &str, what: &str) {
    eventually(what, || async { gw.get(token).await.status == 401 }).await;
    assert_revoked(&gw.get(token).await, what);
}

async fn wait_ready(gw: &Gw, what: &str) {
    eventually(what, || async { readyz(gw).await == 200 }).await;
}

/// `POST /revocations` expected to be refused with 503 (nothing acknowledged).
async fn revoke_refused(gw: &Gw, body: Value) {
    let r = gw
        .admin(Method::POST, "/revocations", Some(body.clone()))
        .await;
    assert_eq!(
        r.status, 503,
        "revoking {body} while cut off from Redis: {r:?}"
    );
    assert!(r.error().contains("nothing was revoked"), "{r:?}");
}

/// A slow Redis (stopped, not dead) makes a revoke time out; the answer must not claim
/// that nothing was revoked, because the write still runs when Redis wakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_that_times_out_says_the_outcome_is_unknown() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let a = node(&up, &redis.url(), "").await;
    let slow = token("sam", "slow-1");
    assert_passes(&a.get(&slow).await, "before");
    // A first revoke loads the write script into Redis, so the next one is a single
    // EVALSHA that a stopped Redis runs when it wakes.
    a.revoke(json!({ "jti": "warm-up" })).await;

    redis.signal("STOP");
    let r = a
        .admin(
            Method::POST,
            "/revocations",
            Some(json!({ "jti": "slow-1" })),
        )
        .await;
    redis.signal("CONT");
    assert_eq!(r.status, 503, "{r:?}");
    let msg = r.error();
    assert!(!msg.contains("nothing was revoked"), "{msg}");
    assert!(
        msg.contains("outcome is unknown") && msg.contains("safe to repeat"),
        "{msg}"
    );

    // Redis woke and ran the write: the revoke took effect after all...
    wait_refused(&a, &slow, "the timed-out revoke, once Redis woke").await;
    // ...and repeating it, as the answer invited, is harmless.
    a.revoke(json!({ "jti": "slow-1" })).await;
    assert_revoked(&a.get(&slow).await, "after the repeat");
}

fn redis_key(kind: &str, id: &str) -> String {
    format!("{PREFIX}:{kind}:{}", key_to_hex(&digest(id.as_bytes())))
}

// ---------------------------------------------------------------------------------------
// Propagation.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_on_one_instance_is_refused_by_the_others() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let nodes = [
        node(&up, &redis.url(), "").await,
        node(&up, &redis.url(), "").await,
        node(&up, &redis.url(), "").await,
    ];
    let [a, b, c] = &nodes;
    let (t1, t2) = (token("alice", "c1"), token("bob", "c2"));
    for n in &nodes {
        assert_eq!(readyz(n).await, 200);
        assert_eq!(degraded(n).await, "0");
        assert_passes(&n.get(&t1).await, "t1 before any revoke");
        assert_passes(&n.get(&t2).await, "t2 before any revoke");
    }

    a.revoke(json!({ "jti": "c1" })).await;
    assert_revoked(&a.get(&t1).await, "t1 on the instance that revoked it");
    wait_refused(b, &t1, "t1 on b").await;
    wait_refused(c, &t1, "t1 on c").await;

    // A subject revoke from another instance, and an un-revoke, travel the same way.
    c.revoke(json!({ "sub": "bob" })).await;
    wait_refused(a, &t2, "bob's token on a").await;
    wait_refused(b, &t2, "bob's token on b").await;
    assert_eq!(b.delete("/revocations/jti/c1").await.status, 204);
    for (n, what) in [(a, "a"), (c, "c")] {
        eventually(&format!("t1 un-revoked on {what}"), || async {
            n.get(&t1).await.status == 200
        })
        .await;
    }
    for n in &nodes {
        assert_eq!(n.count().await, (0, 1));
    }
}

/// A route needing an app key, appended to a node's config.
fn keyed_route(up: &Upstream) -> String {
    format!(
        "\n[[routes]]\nprefix = \"/keyed\"\nupstream = \"{}\"\nauth = \"public\"\napi_key = true\n",
        up.url()
    )
}

/// The status of `GET /keyed` with this app key.
async fn keyed(n: &Gw, key: &str) -> u16 {
    n.http
        .get(format!("http://{}/keyed", n.proxy))
        .header("x-api-key", key)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_shared_through_redis_and_a_revoke_reaches_every_instance() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let route = keyed_route(&up);
    let a = node(&up, &redis.url(), &route).await;
    let b = node(&up, &redis.url(), &route).await;

    let r = a
        .admin(
            Method::POST,
            "/apikeys",
            Some(json!({ "app": "fleet-app" })),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let created = r.json();
    let key = created["key"].as_str().expect("key").to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(
        keyed(&a, &key).await,
        200,
        "at once on the instance that created it"
    );
    eventually("the key works on b", || async {
        keyed(&b, &key).await == 200
    })
    .await;

    // Redis holds the digest under the key id, never the key.
    let mut conn = redis.conn().await;
    let stored: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(format!("{PREFIX}:apikeys"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].0, id);
    assert!(!stored[0].1.contains(&key[4..]), "{stored:?}");

    // An instance started later loads the set before serving.
    let c = node(&up, &redis.url(), &route).await;
    assert_eq!(keyed(&c, &key).await, 200);

    // Revoked through b: refused there on the next request, elsewhere within a poll.
    assert_eq!(b.delete(&format!("/apikeys/{id}")).await.status, 204);
    assert_eq!(keyed(&b, &key).await, 401);
    for (n, what) in [(&a, "a"), (&c, "c")] {
        eventually(&format!("the revoked key refused on {what}"), || async {
            keyed(n, &key).await == 401
        })
        .await;
    }
    // Revocations and keys share the Redis without stepping on each other.
    a.revoke(json!({ "jti": "k1" })).await;
    wait_refused(&b, &token("alice", "k1"), "revocation beside the keys").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_each_revocation_until_its_token_expires() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let a = node(&up, &redis.url(), "").await;
    let mut conn = redis.conn().await;
    let now = tokens::now();
    let key = redis_key("tok", "x1");

    a.revoke(json!({ "jti": "x1", "exp": now + 100 })).await;
    let stored: u64 = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, now + 100);
    // EXAT exp + leeway (30 s by default): the validator accepts a token that long.
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((125..=130).contains(&ttl), "TTL {ttl}");

    // A second revoke never narrows what Redis holds.
    a.revoke(json!({ "jti": "x1", "exp": now + 50 })).await;
    let stored: u64 = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, now + 100);

    let sub = a.revoke(json!({ "sub": "dora" })).await;
    let stored: String = redis::cmd("GET")
        .arg(redis_key("sub", "dora"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        stored,
        format!("{}:{}", sub["revoked_before"], sub["expires"])
    );

    // Every change is on the stream, the un-revoke included; the key goes.
    assert_eq!(a.delete("/revocations/jti/x1").await.status, 204);
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists);
    let len: u64 = redis::cmd("XLEN")
        .arg(format!("{PREFIX}:stream"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 4);
}

// ---------------------------------------------------------------------------------------
// Partitions and restarts.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_from_redis_catches_up_when_it_reconnects() {
    let redis = RedisServer::start();
    let relay = Relay::start(redis.addr()).await;
    let up = Upstream::start().await;
    let a = node(&up, &redis.url(), "").await;
    let b = node(&up, &relay.url(), "").await;
    let (valid, cut) = (token("erin", "valid"), token("erin", "cut-1"));
    assert_eq!(readyz(&b).await, 200);

    assert_eq!(ready_cli(&b).await, (true, "ready".into()));

    relay.sever();
    eventually("b reports the outage", || async { readyz(&b).await == 503 }).await;
    assert_eq!(degraded(&b).await, "1");
    assert_eq!(degraded(&a).await, "0");
    // `portcullis ready`, what container health checks and exec probes run, fails too.
    let (ok, out) = ready_cli(&b).await;
    assert!(!ok && out.contains("503"), "{out}");
    // Requests are still authenticated from memory; revokes are refused, not half-done.
    assert_passes(&b.get(&valid).await, "b while cut off");
    revoke_refused(&b, json!({ "jti": "cut-0" })).await;

    a.revoke(json!({ "jti": "cut-1" })).await;
    relay.restore();
    wait_refused(
        &b,
        &cut,
        "a revoke made while b was cut off, on b after reconnect",
    )
    .await;
    wait_ready(&b, "b ready again").await;
    assert_eq!(degraded(&b).await, "0");
    assert_passes(&b.get(&valid).await, "b after reconnect");
    assert_passes(
        &a.get(&token("erin", "cut-0")).await,
        "the refused revoke left no trace",
    );

    b.revoke(json!({ "jti": "cut-2" })).await;
    wait_refused(
        &a,
        &token("erin", "cut-2"),
        "b's revoke after reconnect, on a",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_long_cut_off_the_full_set_is_reloaded() {
    let redis = RedisServer::start();
    let relay = Relay::start(redis.addr()).await;
    let up = Upstream::start().await;
    let a = node(&up, &redis.url(), "").await;
    let b = node(&up, &relay.url(), "").await;
    let (gone, new) = (token("fay", "gone"), token("fay", "new"));
    a.revoke(json!({ "jti": "gone" })).await;
    wait_refused(&b, &gone, "gone on b").await;

    relay.sever();
    eventually("b reports the outage", || async { readyz(&b).await == 503 }).await;
    assert_eq!(a.delete("/revocations/jti/gone").await.status, 204);
    a.revoke(json!({ "jti": "new" })).await;
    // Stands for an outage longer than the stream keeps: the entries b missed are gone.
    let mut conn = redis.conn().await;
    let _: u64 = redis::cmd("XTRIM")
        .arg(format!("{PREFIX}:stream"))
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();

    relay.restore();
    wait_ready(&b, "b ready after reloading").await;
    assert_revoked(&b.get(&new).await, "revoked while b was away");
    assert_passes(&b.get(&gone).await, "un-revoked while b was away");
    assert_eq!(b.count().await, a.count().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_fails_no_request_and_loses_no_revocation() {
    let mut redis = RedisServer::start();
    let up = Upstream::start().await;
    let nodes = [
        node(&up, &redis.url(), "").await,
        node(&up, &redis.url(), "").await,
        node(&up, &redis.url(), "").await,
    ];
    let [a, b, c] = &nodes;
    let early = token("gus", "early");
    a.revoke(json!({ "jti": "early" })).await;
    for n in &nodes {
        wait_refused(n, &early, "early").await;
    }

    // Authenticated traffic on every instance for the whole restart.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let valid = token("gus", "valid");
    let loaders: Vec<JoinHandle<()>> = nodes
        .iter()
        .map(|n| {
            let (proxy, http, valid) = (n.proxy, client(), valid.clone());
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r: Reply = proxy_get(&http, proxy, &valid).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if r.status != 200 {
                        failed.lock().unwrap().push(r.status);
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.kill_9();
    for n in &nodes {
        eventually("outage reported", || async { readyz(n).await == 503 }).await;
    }
    revoke_refused(b, json!({ "jti": "during" })).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.launch();
    for n in &nodes {
        wait_ready(n, "ready after the restart").await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.await.expect("loader");
    }
    let failed = failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "failed requests during the restart: {failed:?}"
    );
    assert!(
        sent.load(Ordering::Relaxed) > 30,
        "too little traffic to mean anything"
    );

    // The restarted Redis lost every key; the instances wrote theirs back.
    let conn = redis.conn().await;
    eventually("Redis re-seeded", || {
        let (mut conn, key) = (conn.clone(), redis_key("tok", "early"));
        async move {
            redis::cmd("EXISTS")
                .arg(key)
                .query_async::<bool>(&mut conn)
                .await
                .unwrap()
        }
    })
    .await;
    for n in &nodes {
        assert_revoked(&n.get(&early).await, "early, after the restart");
    }
    let d = node(&up, &redis.url(), "").await;
    assert_revoked(
        &d.get(&early).await,
        "early, on an instance started after the restart",
    );
    c.revoke(json!({ "jti": "after" })).await;
    for n in [a, b] {
        wait_refused(n, &token("gus", "after"), "a revoke after the restart").await;
    }
}

/// The real binary running `run --config dir/config.toml` on `config_text` (ports `0`), once
/// it has logged the ports it bound: listeners bind only after the initial load, so it has
/// the full set then. SIGKILLed when dropped.
async fn spawn_process(dir: &Path, config_text: &str) -> GatewayProcess {
    let config = dir.join("config.toml");
    std::fs::write(&config, config_text).expect("write config");
    let mut p = GatewayProcess::spawn(&config).await;
    assert!(p.running(), "the gateway exited:\n{}", p.log());
    p
}

/// An admin request to the process's admin listener, with the right admin token.
async fn process_admin(
    p: &GatewayProcess,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Reply {
    let mut req = client()
        .request(method, format!("http://{}{path}", p.admin_addr()))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    TestGateway::reply(req.send().await.expect("admin request")).await
}

/// GET `/api` through the process's proxy listener with this bearer token.
async fn process_get(p: &GatewayProcess, token: &str) -> Reply {
    proxy_get(&client(), p.addr, token).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_with_sigkill_restarts_with_the_full_set() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let text = config_text(&up.url(), &cluster_toml(&redis.url(), ""));
    let a = node(&up, &redis.url(), "").await;

    let p = spawn_process(dir.path(), &text).await;
    let r = process_admin(
        &p,
        Method::POST,
        "/revocations",
        Some(json!({ "jti": "k1" })),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    wait_refused(&a, &token("hal", "k1"), "k1 on a").await;
    p.kill_9();

    // While it is down, the rest of the fleet carries on.
    a.revoke(json!({ "jti": "k2" })).await;
    a.revoke(json!({ "sub": "ivy" })).await;

    let p = spawn_process(dir.path(), &text).await;
    // No polling from here on: it listens only once the set is loaded.
    assert_eq!(
        process_admin(&p, Method::GET, "/readyz", None).await.status,
        200
    );
    for (t, what) in [
        (token("hal", "k1"), "revoked through the killed instance"),
        (token("hal", "k2"), "revoked while it was down"),
        (token("ivy", "k3"), "subject revoked while it was down"),
    ] {
        assert_revoked(&process_get(&p, &t).await, what);
    }
    assert_passes(&process_get(&p, &token("hal", "k4")).await, "valid");
    p.kill_9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_until_redis_is_reachable_at_start() {
    let redis = RedisServer::start();
    let relay = Relay::start(redis.addr()).await;
    let up = Upstream::start().await;
    let a = node(&up, &redis.url(), "").await;
    a.revoke(json!({ "jti": "early" })).await;

    relay.sever();
    let started = std::time::Instant::now();
    let b = node(&up, &relay.url(), "load_timeout = \"500ms\"").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "start waited too long"
    );
    assert_eq!(readyz(&b).await, 503);
    assert_eq!(degraded(&b).await, "1");
    // Nothing is known about the fleet's revocations yet: every token is refused, and the
    // answer says why (issue 15: not "token revoked", which a client would act on).
    let r = b.get(&token("jo", "valid")).await;
    assert_eq!(r.status, 503);
    let body = r.json();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    let why = body["error_description"].as_str().unwrap();
    assert!(why.contains("revocation state is unavailable"), "{why}");
    assert!(!why.contains("revoked"), "{why}");

    relay.restore();
    wait_ready(&b, "b ready once Redis is reachable").await;
    assert_eq!(degraded(&b).await, "0");
    assert_passes(&b.get(&token("jo", "valid")).await, "valid after the load");
    assert_revoked(
        &b.get(&token("jo", "early")).await,
        "revoked before b started",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_waits_for_redis_within_load_timeout() {
    let redis = RedisServer::start();
    let relay = Arc::new(Relay::start(redis.addr()).await);
    let up = Upstream::start().await;
    let a = node(&up, &redis.url(), "").await;
    a.revoke(json!({ "jti": "early" })).await;

    // Redis becomes reachable a moment after the gateway starts (as in a compose start).
    relay.sever();
    let later = relay.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        later.restore();
    });
    let b = node(&up, &relay.url(), "load_timeout = \"5s\"").await;
    // `start` returned only once the set was loaded: no polling.
    assert_eq!(readyz(&b).await, 200);
    assert_revoked(
        &b.get(&token("kim", "early")).await,
        "revoked before b started",
    );
    assert_passes(&b.get(&token("kim", "valid")).await, "valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_password_and_a_private_ca() {
    let (redis, ca_pem) = RedisServer::start_tls("s3cret-pw");
    let up = Upstream::start().await;
    let url = format!("rediss://:s3cret-pw@localhost:{}/0", redis.port);
    let more = "tls_ca = \"ca.pem\"";
    let a = {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).expect("write CA");
        let gw = Gw::start(dir.path(), &up.url(), &cluster_toml(&url, more)).await;
        Node { gw, _dir: dir }
    };
    let b = {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).expect("write CA");
        let gw = Gw::start(dir.path(), &up.url(), &cluster_toml(&url, more)).await;
        Node { gw, _dir: dir }
    };
    assert_eq!(readyz(&a).await, 200);
    a.revoke(json!({ "jti": "tls-1" })).await;
    wait_refused(&b, &token("lee", "tls-1"), "revoked over TLS, on b").await;

    // Without the CA the server is not trusted: nothing loads, the instance stays unready.
    let dir = tempfile::tempdir().expect("temp dir");
    let c = Gw::start(
        dir.path(),
        &up.url(),
        &cluster_toml(&url, "load_timeout = \"300ms\""),
    )
    .await;
    assert_eq!(readyz(&c).await, 503);
}

#[test]
fn a_bad_cluster_config_names_the_key() {
    let base = Path::new(".");
    let text = |extra: &str| config_text("http://127.0.0.1:9", extra);
    let err = portcullis::Config::from_toml(
        &text("[revocation]\nstore = \"redis://:hunter2@[nope/0\"\nkey_prefix = \"a*b\"\nstream_max_len = 10\n"),
        base,
    )
    .expect_err("invalid cluster config")
    .to_string();
    assert!(err.contains("revocation.store"), "{err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
    assert!(err.contains("revocation.key_prefix"), "{err}");
    assert!(err.contains("revocation.stream_max_len"), "{err}");
    let err = portcullis::Config::from_toml(
        &text("[revocation]\nstore = \"memory\"\nkey_prefix = \"x\"\n"),
        base,
    )
    .expect_err("cluster keys without cluster mode")
    .to_string();
    assert!(err.contains("only applies to cluster mode"), "{err}");
}
