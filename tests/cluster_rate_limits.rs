//! Fleet-wide rate limits (issue 14 section 2, cluster mode): three gateway instances share
//! one real `redis-server` (the revocation store); one user's requests, spread unevenly over
//! them at twice the limit for 10 s, are admitted within the issue's bounds
//! (at most 1.1 x rate x seconds + burst, at least 0.9 x rate x seconds), where three
//! independent limiters would admit far more; the bucket is `P:rl:<route>:<sha256(user)>`.
//! With Redis stopped each instance limits locally (the full limit each): requests are
//! limited, never refused wholesale, and counted in `portcullis_rate_limit_fallbacks_total`;
//! once Redis is back the limit is fleet-wide again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::redis_server::RedisServer;
use common::tokens::{self, HS256_SECRET};
use common::{hmac_key_toml, Setup, TestGateway, Upstream};
use sha2::{Digest, Sha256};

const ADMIN_TOKEN: &str = "rate-limit-admin-token-0123456789";
const PREFIX: &str = "rltest";

/// `limit` is the inside of `rate_limit = { per = "user", ... }`.
fn config(up: &Upstream, redis_url: &str, limit: &str) -> String {
    format!(
        r#"[listen]
addr = "127.0.0.1:0"
workers = 1

{key}
[[routes]]
prefix = "/api"
upstream = "{up}"
auth = "jwt"
rate_limit = {{ per = "user", {limit} }}

[admin]
addr = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[revocation]
store = "{redis_url}"
key_prefix = "{PREFIX}"
timeout = "1s"
"#,
        key = hmac_key_toml("hs", "HS256", HS256_SECRET),
        up = up.url(),
    )
}

async fn instance(up: &Upstream, redis: &RedisServer, limit: &str) -> TestGateway {
    let setup = Setup::new();
    let text = config(up, &redis.url(), limit);
    let config = portcullis::Config::from_toml(&text, setup.dir.path()).expect("config");
    let gw = setup.start_with(config).await;
    // Until the revocation set is loaded every token counts as revoked.
    let token = tokens::hs256(Some("hs"), &tokens::claims("warm-up"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gw.get("/api/x", Some(&token)).await.status != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw
}

/// The Redis key of `user`'s bucket on `/api`.
fn bucket(user: &str) -> String {
    let digest = Sha256::digest(user.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{PREFIX}:rl:/api:{hex}")
}

async fn exists(redis: &RedisServer, key: &str) -> bool {
    let mut conn = redis.conn().await;
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(&mut conn)
        .await
        .expect("EXISTS")
        == 1
}

async fn metric(gw: &TestGateway, name: &str) -> u64 {
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", gw.admin_url().expect("admin")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim()
        .parse()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_limit_within_ten_percent() {
    common::watch_panics();
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    const RATE: u64 = 20;
    const BURST: u64 = 20; // the default: the per-second rate
    const SECONDS: u64 = 10;
    let gws = Arc::new([
        instance(&up, &redis, "rate = \"20/s\"").await,
        instance(&up, &redis, "rate = \"20/s\"").await,
        instance(&up, &redis, "rate = \"20/s\"").await,
    ]);
    // One client and URL per instance, reused (connections kept alive).
    let targets: Arc<Vec<(reqwest::Client, String)>> =
        Arc::new(gws.iter().map(|g| (g.h1(), g.url("/api/x"))).collect());
    let token = Arc::new(tokens::hs256(Some("hs"), &tokens::claims("alice")));
    // Twice the limit, spread 1/2, 1/3, 1/6 over the instances: alone, the first would
    // admit its 20/s, the others everything they get (about 2 x rate x seconds in all).
    let offered = 2 * RATE * SECONDS;
    let spacing = Duration::from_secs(SECONDS) / offered as u32;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..offered {
        tokio::time::sleep_until(start + spacing * i as u32).await;
        let which = match i % 6 {
            0..=2 => 0,
            3 | 4 => 1,
            _ => 2,
        };
        let (targets, token) = (targets.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let (client, url) = &targets[which];
            let r = client.get(url).bearer_auth(&*token).send().await;
            r.expect("request").status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("request task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let admitted = statuses.iter().filter(|s| **s == 200).count() as f64;
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        admitted as usize + refused,
        statuses.len(),
        "only 200 and 429: {statuses:?}"
    );
    let most = 1.1 * RATE as f64 * elapsed + BURST as f64;
    let least = 0.9 * RATE as f64 * SECONDS as f64;
    eprintln!("offered {offered} in {elapsed:.2}s, admitted {admitted}, bounds {least}..{most:.0}");
    assert!(
        admitted <= most && admitted >= least,
        "admitted {admitted} of {offered} in {elapsed:.2}s; want {least}..={most:.0}"
    );
    assert!(
        exists(&redis, &bucket("alice")).await,
        "{}",
        bucket("alice")
    );
    for gw in gws.iter() {
        assert_eq!(metric(gw, "portcullis_rate_limit_fallbacks_total").await, 0);
    }
    assert_eq!(common::gateway_panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_each_instance_limits_locally_and_never_refuses_wholesale() {
    let mut redis = RedisServer::start();
    let up = Upstream::start().await;
    let a = instance(&up, &redis, "rate = \"5/m\", burst = 5").await;
    let b = instance(&up, &redis, "rate = \"5/m\", burst = 5").await;
    let token = tokens::hs256(Some("hs"), &tokens::claims("bob"));
    // Fleet-wide first: 5 admitted across both instances, then 429 on both.
    let mut admitted = 0;
    for i in 0..8 {
        let gw = if i % 2 == 0 { &a } else { &b };
        match gw.get("/api/x", Some(&token)).await.status {
            200 => admitted += 1,
            429 => {}
            other => panic!("request {i}: {other}"),
        }
    }
    assert_eq!(admitted, 5, "one budget for the fleet");
    assert!(exists(&redis, &bucket("bob")).await);

    redis.kill_9();
    // Each instance now has its own full budget (burst 5, one more every 12 s): requests
    // are limited locally, answered 200 or 429, never refused wholesale.
    for gw in [&a, &b] {
        let mut statuses = Vec::new();
        for _ in 0..7 {
            statuses.push(gw.get("/api/x", Some(&token)).await.status);
        }
        assert_eq!(
            statuses[..5],
            [200; 5],
            "the local budget is full: {statuses:?}"
        );
        assert_eq!(statuses[5..], [429; 2], "and limited: {statuses:?}");
        assert!(metric(gw, "portcullis_rate_limit_fallbacks_total").await >= 7);
    }

    // Redis back (empty: no persistence): the next probe finds it and the limit is
    // fleet-wide again, its bucket in Redis.
    redis.launch();
    let carol = tokens::hs256(Some("hs"), &tokens::claims("carol"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = a.get("/api/x", Some(&carol)).await.status;
        assert!(status == 200 || status == 429, "{status}");
        if exists(&redis, &bucket("carol")).await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the limit never went back to Redis"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
