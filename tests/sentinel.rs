//! Cluster mode on a Redis that fails over: a real master, a replica and three
//! `redis-sentinel` processes on loopback; two gateways on `redis+sentinel://` with
//! `min_replicas_ack = 1`; revokes flowing while the master is killed with `kill -9`.
//! Every acknowledged revocation survives, proxied requests keep succeeding, revokes resume
//! once the new master has a replica again.
//!
//! Every Redis process is a [`RedisServer`] (Sentinels run as `redis-server CONF --sentinel`):
//! its port chosen and checked there, and it answers PING before the test goes on.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::revocation::{assert_revoked, client, proxy_get, token, Gw, ADMIN_TOKEN};
use common::Upstream;
use serde_json::json;

const MASTER: &str = "mymaster";
const WAIT: Duration = Duration::from_secs(40);

/// A Sentinel watching the master on `master_port` (quorum 2, fast failover).
fn sentinel(master_port: u16) -> RedisServer {
    RedisServer::start_sentinel(&format!(
        "sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n\
         sentinel down-after-milliseconds {MASTER} 1000\n\
         sentinel failover-timeout {MASTER} 4000\n\
         sentinel parallel-syncs {MASTER} 1\n"
    ))
}

async fn query(port: u16, cmd: &[&str]) -> Option<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let mut c = redis::cmd(cmd[0]);
    for a in &cmd[1..] {
        c.arg(*a);
    }
    c.query_async(&mut conn).await.ok()
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_loses_no_acknowledged_revocation() {
    let mut master = RedisServer::start();
    let replica = RedisServer::start_replica_of(master.port);
    let (s1, s2, s3) = (
        sentinel(master.port),
        sentinel(master.port),
        sentinel(master.port),
    );
    let sentinels = [&s1, &s2, &s3];
    eventually("the replica is in sync", || async {
        matches!(query(replica.port, &["INFO", "replication"]).await,
            Some(redis::Value::BulkString(b)) if String::from_utf8_lossy(&b).contains("master_link_status:up"))
    })
    .await;
    eventually("the sentinels know the replica", || async {
        matches!(query(s1.port, &["SENTINEL", "replicas", MASTER]).await,
            Some(redis::Value::Array(a)) if !a.is_empty())
    })
    .await;

    let url = format!(
        "redis+sentinel://{}/{MASTER}/0",
        sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    );
    let up = Upstream::start().await;
    let extra = format!(
        "[revocation]\nstore = \"{url}\"\nkey_prefix = \"sent\"\ntimeout = \"1s\"\nmin_replicas_ack = 1\n\n[log]\nformat = \"json\"\n"
    );
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Gw::start(d1.path(), &up.url(), &extra).await;
    let b = Gw::start(d2.path(), &up.url(), &extra).await;
    eventually("both ready", || async {
        a.admin(reqwest::Method::GET, "/readyz", None).await.status == 200
            && b.admin(reqwest::Method::GET, "/readyz", None).await.status == 200
    })
    .await;

    // Proxied requests on both instances, all the way through.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let valid = token("vera", "valid");
    let mut loaders = Vec::new();
    for proxy in [a.proxy, b.proxy] {
        let (stop, failed, sent, valid) =
            (stop.clone(), failed.clone(), sent.clone(), valid.clone());
        loaders.push(tokio::spawn(async move {
            let http = client();
            while !stop.load(Ordering::Relaxed) {
                let r = proxy_get(&http, proxy, &valid).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if r.status != 200 {
                    failed.lock().unwrap().push(r.status);
                }
            }
        }));
    }
    // Revokes flowing through instance a.
    let acked = Arc::new(Mutex::new(Vec::<(String, Instant)>::new()));
    let revoker = {
        let (stop, acked, admin) = (stop.clone(), acked.clone(), a.admin);
        tokio::spawn(async move {
            let http = client();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let jti = format!("fo-{i}");
                i += 1;
                let r = http
                    .post(format!("http://{admin}/revocations"))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&json!({ "jti": jti }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 201 => acked.lock().unwrap().push((jti, Instant::now())),
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = acked.lock().unwrap().len();
    assert!(before > 0, "no revoke acknowledged before the failover");

    let old_port = master.port;
    master.kill_9();
    let killed = Instant::now();
    // The old master comes back empty; the sentinels make it a replica of the new master,
    // which is what min_replicas_ack = 1 waits for.
    eventually("a sentinel names a new master", || async {
        matches!(query(s1.port, &["SENTINEL", "get-master-addr-by-name", MASTER]).await,
            Some(redis::Value::Array(a)) if a.get(1).is_some_and(|p| *p != redis::Value::BulkString(old_port.to_string().into_bytes())))
    })
    .await;
    master.launch();
    eventually("revokes resume after the failover", || async {
        acked.lock().unwrap().iter().any(|(_, at)| *at > killed)
    })
    .await;
    let resumed = acked
        .lock()
        .unwrap()
        .iter()
        .find(|(_, at)| *at > killed)
        .map(|(_, at)| at.duration_since(killed));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    revoker.await.unwrap();
    for l in loaders {
        l.await.unwrap();
    }
    let acked: Vec<String> = acked
        .lock()
        .unwrap()
        .iter()
        .map(|(j, _)| j.clone())
        .collect();
    eprintln!(
        "failover: {} revokes acknowledged ({before} before the kill); revokes resumed {:?} after kill -9; {} proxied requests",
        acked.len(),
        resumed,
        sent.load(Ordering::Relaxed)
    );
    assert!(
        failed.lock().unwrap().is_empty(),
        "proxied requests failed: {:?}",
        failed.lock().unwrap()
    );

    // Every acknowledged revocation is in force on both instances and on a new one that
    // loads from the new master.
    let c = Gw::start(tempfile::tempdir().unwrap().path(), &up.url(), &extra).await;
    for gw in [&a, &b, &c] {
        eventually("acknowledged revocations in force", || async {
            gw.get(&token("vera", acked.last().unwrap())).await.status == 401
        })
        .await;
        for jti in &acked {
            assert_revoked(&gw.get(&token("vera", jti)).await, jti);
        }
    }
    for gw in [a, b, c] {
        gw.stop().await;
    }
}
