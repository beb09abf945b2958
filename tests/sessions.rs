//! Sign-in sessions kept in the revocation store, over real sockets. Embedded store: refresh
//! sessions survive a restart of the gateway (in-process, and `kill -9` of the real binary):
//! the current refresh token still rotates, a token spent before the restart is still
//! detected as reuse, a logout before the restart stays in force; a file in the journal's
//! place that is not a journal stops the start untouched. Cluster mode, with a real
//! `redis-server`: a login on one instance refreshes on another, reuse detected on one ends
//! the family on all, two instances spending one token at once leave exactly one winner,
//! `max_sessions_per_user` holds across instances, and sign-in answers 503 while Redis is
//! down.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::redis_server::RedisServer;
use common::revocation::{client, config_text, Gw};
use common::Upstream;
use serde_json::{json, Value};
use sha2::Digest;

/// Upper bound for a revocation made on one instance to reach another.
const WAIT: Duration = Duration::from_secs(8);

/// alice/wonderland = u-1, bob/builder = u-2, hashed with a tiny argon2id cost.
fn write_users(dir: &Path) {
    let text = common::users_toml(&[("u-1", "alice", "wonderland"), ("u-2", "bob", "builder")]);
    std::fs::write(dir.join("users.toml"), text).expect("write users");
}

fn signin_toml(extra: &str) -> String {
    format!("[signin]\nusers_file = \"users.toml\"\nsigning_kid = \"hs1\"\n{extra}\n")
}

async fn post(at: SocketAddr, path: &str, body: Value, bearer: Option<&str>) -> (u16, Value) {
    let mut req = client().post(format!("http://{at}{path}")).json(&body);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Log in, asserting 200; returns `(access_token, refresh_token)`.
async fn login(at: SocketAddr, user: &str, password: &str) -> (String, String) {
    let (status, body) = post(
        at,
        "/auth/login",
        json!({ "username": user, "password": password }),
        None,
    )
    .await;
    assert_eq!(status, 200, "login {user}: {body}");
    tokens_of(&body)
}

fn tokens_of(body: &Value) -> (String, String) {
    (
        body["access_token"].as_str().expect("access_token").into(),
        body["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .into(),
    )
}

async fn refresh(at: SocketAddr, token: &str) -> (u16, Value) {
    post(at, "/auth/refresh", json!({ "refresh_token": token }), None).await
}

/// Refresh, asserting 200; returns the new `(access_token, refresh_token)`.
async fn rotate(at: SocketAddr, token: &str, what: &str) -> (String, String) {
    let (status, body) = refresh(at, token).await;
    assert_eq!(status, 200, "{what}: {body}");
    tokens_of(&body)
}

async fn assert_refused(at: SocketAddr, token: &str, what: &str) {
    let (status, body) = refresh(at, token).await;
    assert_eq!(status, 401, "{what}: {body}");
    assert_eq!(body["error"], "invalid_grant", "{what}");
}

/// The status of a proxied request with this access token.
async fn proxied(at: SocketAddr, token: &str) -> u16 {
    client()
        .get(format!("http://{at}/api"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

/// Poll until the access token is refused at `at` (revocations reach other instances
/// through the Redis change stream), failing after [`WAIT`].
async fn wait_refused(at: SocketAddr, token: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = proxied(at, token).await;
        if status == 401 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still {status} after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Embedded store.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_sessions_survive_a_restart_of_the_embedded_store() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    write_users(dir.path());
    let extra = signin_toml("");
    let gw = Gw::start(dir.path(), &up.url(), &extra).await;
    let (a1, r1) = login(gw.proxy, "alice", "wonderland").await;
    let (_, other_refresh) = login(gw.proxy, "alice", "wonderland").await;
    let (bob, bob_refresh) = login(gw.proxy, "bob", "builder").await;
    let (a2, r2) = rotate(gw.proxy, &r1, "before the restart").await;
    let (status, body) = post(gw.proxy, "/auth/logout", json!({}), Some(&bob)).await;
    assert_eq!(status, 200, "{body}");
    gw.stop().await;

    // Only digests reach the disk.
    let journal = std::fs::read(dir.path().join("data/revocations.log.sessions"))
        .expect("the journal beside the revocation log");
    for token in [&r1, &r2, &other_refresh] {
        let raw = token.as_bytes();
        assert!(!journal.windows(raw.len()).any(|w| w == raw));
        let digest = sha2::Sha256::digest(raw);
        assert!(journal.windows(32).any(|w| w == digest.as_slice()));
    }

    let gw = Gw::start(dir.path(), &up.url(), &extra).await;
    let (a3, r3) = rotate(gw.proxy, &r2, "the current token after the restart").await;
    assert_eq!(proxied(gw.proxy, &a3).await, 200);
    assert_refused(gw.proxy, &bob_refresh, "logged out before the restart").await;
    // r1 was spent before the restart: reuse ends the family, with every access token of
    // it, issued before the restart or after.
    assert_refused(gw.proxy, &r1, "spent before the restart").await;
    for (t, what) in [(&a1, "a1"), (&a2, "a2"), (&a3, "a3")] {
        assert_eq!(proxied(gw.proxy, t).await, 401, "{what}");
    }
    assert_refused(gw.proxy, &r3, "the ended family's current token").await;
    let (other, other_refresh) = rotate(gw.proxy, &other_refresh, "alice's other family").await;
    gw.stop().await;

    // The family ended after the first restart stays ended after the second.
    let gw = Gw::start(dir.path(), &up.url(), &extra).await;
    assert_refused(gw.proxy, &r3, "ended before the second restart").await;
    assert_eq!(proxied(gw.proxy, &other).await, 200);
    rotate(
        gw.proxy,
        &other_refresh,
        "the other family, twice restarted",
    )
    .await;
    gw.stop().await;
}

/// Bytes inserted inside the first record of the journal: the start is refused (naming the
/// journal, the offset and `--recover`) and nothing changes; with `recover = true` every
/// intact session is kept and the damaged journal preserved beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_journal_refuses_the_start_and_recover_keeps_every_intact_session() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    write_users(dir.path());
    let extra = signin_toml("");
    let gw = Gw::start(dir.path(), &up.url(), &extra).await;
    let (_, alice) = login(gw.proxy, "alice", "wonderland").await;
    let (_, bob) = login(gw.proxy, "bob", "builder").await;
    gw.stop().await;

    let path = dir.path().join("data/revocations.log.sessions");
    let mut bytes = std::fs::read(&path).expect("journal");
    bytes.splice(13..13, *b"junk!");
    std::fs::write(&path, &bytes).expect("write");

    let config = portcullis::Config::from_toml(&config_text(&up.url(), &extra), dir.path())
        .expect("valid config");
    let err = match portcullis::start(config).await {
        Ok(_) => panic!("started on a damaged session journal without recover"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("session journal") && err.contains(&path.display().to_string()),
        "{err}"
    );
    assert!(err.contains("offset") && err.contains("--recover"), "{err}");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        bytes,
        "changed without recover"
    );

    let recover = format!("{extra}\n[revocation]\nrecover = true\n");
    let gw = Gw::start(dir.path(), &up.url(), &recover).await;
    assert_refused(gw.proxy, &alice, "the damaged record's session").await;
    rotate(gw.proxy, &bob, "an intact session after recovery").await;
    gw.stop().await;
    let copies: Vec<_> = std::fs::read_dir(dir.path().join("data"))
        .expect("data")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("revocations.log.sessions.damaged-")
        })
        .collect();
    assert_eq!(copies.len(), 1);
    assert_eq!(std::fs::read(copies[0].path()).expect("copy"), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_session_journal_stops_the_start_and_is_kept() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    write_users(dir.path());
    let path = dir.path().join("data/revocations.log.sessions");
    std::fs::create_dir_all(path.parent().expect("folder")).expect("mkdir");
    std::fs::write(&path, b"someone else's file").expect("write");
    let text = config_text(&up.url(), &signin_toml(""));
    let config = portcullis::Config::from_toml(&text, dir.path()).expect("valid config");
    let err = match portcullis::start(config).await {
        Ok(_) => panic!("started over a file that is not a session journal"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("session journal"), "{err}");
    assert_eq!(std::fs::read(&path).expect("read"), b"someone else's file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_every_answered_login_and_refresh() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    write_users(dir.path());
    let config = dir.path().join("config.toml");
    let text = config_text(
        &up.url(),
        &format!("{}\n[log]\nformat = \"json\"\n", signin_toml("")),
    );
    std::fs::write(&config, text).expect("write config");

    let p = common::GatewayProcess::spawn(&config).await;
    let mut current = Vec::new();
    let mut spent = Vec::new();
    for i in 0..6 {
        let (_, r) = login(p.addr, "alice", "wonderland").await;
        if i % 2 == 0 {
            let (_, next) = rotate(p.addr, &r, "before the kill").await;
            spent.push(r);
            current.push(next);
        } else {
            current.push(r);
        }
    }
    // Answered means fsynced: nothing is flushed at exit.
    tokio::task::spawn_blocking(move || p.kill_9())
        .await
        .expect("kill");

    let p = common::GatewayProcess::spawn(&config).await;
    for (i, r) in current.iter().enumerate() {
        rotate(p.addr, r, &format!("session {i} after kill -9")).await;
    }
    for r in &spent {
        assert_refused(p.addr, r, "spent before kill -9").await;
    }
}

// ---------------------------------------------------------------------------------------
// Cluster mode.
// ---------------------------------------------------------------------------------------

/// A cluster-mode gateway with sign-in, its config folder kept alive beside it.
struct Node {
    gw: Gw,
    _dir: tempfile::TempDir,
}

async fn node(up: &Upstream, redis: &RedisServer, signin_extra: &str) -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    write_users(dir.path());
    let extra = format!(
        "[revocation]\nstore = \"{}\"\nkey_prefix = \"pcs\"\ntimeout = \"1s\"\n\n{}",
        redis.url(),
        signin_toml(signin_extra)
    );
    let gw = Gw::start(dir.path(), &up.url(), &extra).await;
    Node { gw, _dir: dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_one_instance_refreshes_on_another_and_reuse_ends_it_everywhere() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let (a, b) = (node(&up, &redis, "").await, node(&up, &redis, "").await);
    let (a1, r1) = login(a.gw.proxy, "alice", "wonderland").await;
    let (a2, r2) = rotate(b.gw.proxy, &r1, "A's login refreshed on B").await;
    assert_eq!(proxied(a.gw.proxy, &a2).await, 200);
    let (_, other) = login(b.gw.proxy, "alice", "wonderland").await;

    // Redis holds the digest of the refresh token, never the token.
    let mut conn = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("pcs:rt:*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let digest_hex: String = sha2::Sha256::digest(r2.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(keys.contains(&format!("pcs:rt:{digest_hex}")), "{keys:?}");
    assert!(!keys.iter().any(|k| k.contains(&r2)));

    // The token B spent, replayed on A: reuse, the family ends on every instance.
    assert_refused(a.gw.proxy, &r1, "spent on B, replayed on A").await;
    for at in [a.gw.proxy, b.gw.proxy] {
        wait_refused(at, &a1, "a1").await;
        wait_refused(at, &a2, "a2").await;
        assert_refused(at, &r2, "the ended family's current token").await;
    }
    // A third instance started afterwards shares the same families.
    let c = node(&up, &redis, "").await;
    rotate(c.gw.proxy, &other, "the other family, on a new instance").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_spending_one_token_at_once_leave_one_winner_and_end_the_family() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let (a, b) = (node(&up, &redis, "").await, node(&up, &redis, "").await);
    for round in 0..5 {
        let (_, r) = login(a.gw.proxy, "alice", "wonderland").await;
        let (on_a, on_b) = tokio::join!(refresh(a.gw.proxy, &r), refresh(b.gw.proxy, &r));
        let mut statuses = [on_a.0, on_b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 401], "round {round}: {on_a:?} {on_b:?}");
        // The loser counted as reuse: the winner's tokens died with the family.
        let winner = if on_a.0 == 200 { &on_a.1 } else { &on_b.1 };
        let (access, next) = tokens_of(winner);
        assert_refused(a.gw.proxy, &next, "the winner's refresh token").await;
        wait_refused(a.gw.proxy, &access, "the winner's access token").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_per_user_holds_across_instances() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let limit = "max_sessions_per_user = 1";
    let (a, b) = (
        node(&up, &redis, limit).await,
        node(&up, &redis, limit).await,
    );
    let (first, first_refresh) = login(a.gw.proxy, "alice", "wonderland").await;
    let (bob, _) = login(a.gw.proxy, "bob", "builder").await;
    let (second, _) = login(b.gw.proxy, "alice", "wonderland").await;
    for at in [a.gw.proxy, b.gw.proxy] {
        wait_refused(at, &first, "the first session's token").await;
        assert_eq!(proxied(at, &second).await, 200);
        assert_eq!(proxied(at, &bob).await, 200, "other users keep theirs");
    }
    assert_refused(
        a.gw.proxy,
        &first_refresh,
        "the first session's refresh token",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_answers_503_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let up = Upstream::start().await;
    let a = node(&up, &redis, "").await;
    let (_, r) = login(a.gw.proxy, "alice", "wonderland").await;
    redis.kill_9();
    let (status, body) = refresh(a.gw.proxy, &r).await;
    assert_eq!(status, 503, "refresh with Redis down: {body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    let (status, body) = post(
        a.gw.proxy,
        "/auth/login",
        json!({ "username": "bob", "password": "builder" }),
        None,
    )
    .await;
    assert_eq!(status, 503, "login with Redis down: {body}");
    assert!(body.get("refresh_token").is_none());
}
