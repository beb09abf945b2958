//! Several targets behind one route (issue 16): a target killed with `kill -9` under steady
//! GET load costs no failed request (retries on another target), is taken out of rotation
//! (passively, then by the health checks) and comes back once it answers again; `user_hash`
//! keeps a user on one target; a POST is never sent twice; a request that could not connect
//! is retried elsewhere with its body intact; admin `GET /upstreams` and the metrics show
//! each target.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::faulty::FaultyUpstream;
use common::peer::PeerProcess;
use common::upstream::{dead_addr, pseudo_random_bytes, pseudo_random_sha256};
use common::{hmac_key_toml, tokens, wait_until, Setup, TestGateway, Upstream};
use serde_json::Value;

const TARGET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/http_target.py");
const ADMIN_TOKEN: &str = "admin-token-0123456789";
const ADMIN: &str = r#"
[admin]
addr = "127.0.0.1:0"
token = "admin-token-0123456789"
"#;

/// A python HTTP target in its own process (so it can really be killed with SIGKILL),
/// on `port` (0: any free one).
fn py_target(name: &str, port: u16) -> PeerProcess {
    PeerProcess::python(&[TARGET, name, &port.to_string()])
}

async fn admin_upstreams(gw: &TestGateway) -> Value {
    common::admin_upstreams(gw, ADMIN_TOKEN).await
}

/// The state `GET /upstreams` gives the target at `origin` on the first route.
async fn target_state(gw: &TestGateway, origin: &str) -> String {
    let v = admin_upstreams(gw).await;
    v["routes"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == origin)
        .unwrap_or_else(|| panic!("{origin} not listed: {v}"))["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn wait_for_state(gw: &TestGateway, origin: &str, want: &[&str], limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if want.contains(&target_state(gw, origin).await.as_str()) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_target_costs_no_get_and_comes_back() {
    let mut targets: Vec<PeerProcess> = ["a", "b", "c"].iter().map(|n| py_target(n, 0)).collect();
    let urls: Vec<String> = targets
        .iter()
        .map(|t| format!("\"http://127.0.0.1:{}\"", t.port))
        .collect();
    let interval = Duration::from_secs(1);
    let config = format!(
        r#"{{listen}}
{ADMIN}
[[routes]]
prefix = "/"
upstreams = [{}]
auth = "public"
connect_timeout = "1s"

[routes.health]
path = "/healthz"
interval = "1s"
timeout = "500ms"
unhealthy_after = 2
healthy_after = 2
"#,
        urls.join(", ")
    );
    let gw = Arc::new(Setup::new().start(&config).await);

    // Steady GET load: four clients in a loop until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
    let mut load = Vec::new();
    for _ in 0..4 {
        let (gw, stop, outcomes) = (gw.clone(), stop.clone(), outcomes.clone());
        load.push(tokio::spawn(async move {
            let client = gw.h1();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let r = match client.get(gw.url(&format!("/load/{i}"))).send().await {
                    Ok(r) => TestGateway::reply(r).await,
                    Err(e) => {
                        outcomes.lock().unwrap().push((0, e.to_string()));
                        continue;
                    }
                };
                let who = if r.status == 200 {
                    r.json()["target"].as_str().unwrap_or("?").to_owned()
                } else {
                    r.text()
                };
                outcomes.lock().unwrap().push((r.status, who));
            }
        }));
    }
    let served_by = |name: &str, from: usize| {
        outcomes.lock().unwrap()[from..]
            .iter()
            .filter(|(s, w)| *s == 200 && w == name)
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(20), || served_by("b", 0) >= 5).await,
        "b never served"
    );

    let b = format!("http://127.0.0.1:{}", targets[1].port);
    targets[1].kill_9();
    assert!(
        wait_for_state(&gw, &b, &["ejected", "unhealthy"], 2 * interval).await,
        "the dead target was not taken out within two health intervals"
    );
    assert!(
        wait_for_state(&gw, &b, &["unhealthy"], 6 * interval).await,
        "the health checks never marked the dead target unhealthy"
    );
    let during = outcomes.lock().unwrap().len();
    tokio::time::sleep(interval).await;
    assert_eq!(served_by("b", during), 0, "a dead target served?");

    // Back on the same port: healthy again after `healthy_after` good checks, and in rotation.
    let port = targets[1].port;
    targets[1] = py_target("b", port);
    assert!(
        wait_for_state(&gw, &b, &["up"], 10 * interval).await,
        "the restarted target never came back"
    );
    let back = outcomes.lock().unwrap().len();
    assert!(
        wait_until(Duration::from_secs(20), || served_by("b", back) >= 5).await,
        "the restarted target gets no traffic"
    );

    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (failed, total): (Vec<_>, usize) = {
        let all = outcomes.lock().unwrap();
        let failed = all.iter().filter(|(s, _)| *s != 200).cloned().collect();
        (failed, all.len())
    };
    assert!(
        failed.is_empty(),
        "{} of {total} GETs failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    for name in ["a", "c"] {
        assert!(served_by(name, 0) > 0, "{name} served nothing");
    }
}

#[tokio::test]
async fn user_hash_keeps_each_user_on_one_target() {
    let ups = [
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    ];
    let config = format!(
        r#"{{listen}}
{}
[[routes]]
prefix = "/"
upstreams = ["{}", "{}", "{}"]
balance = "user_hash"
auth = "jwt"
"#,
        hmac_key_toml("hs", "HS256", tokens::HS256_SECRET),
        ups[0].url(),
        ups[1].url(),
        ups[2].url()
    );
    let gw = Setup::new().start(&config).await;
    let users: Vec<String> = (0..12).map(|i| format!("user-{i}")).collect();
    for round in 0..4 {
        for u in &users {
            let t = tokens::hs256(Some("hs"), &tokens::claims(u));
            let r = gw.get(&format!("/sticky/{round}"), Some(&t)).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    let mut used = 0;
    for u in &users {
        let holders: Vec<usize> = ups
            .iter()
            .enumerate()
            .filter(|(_, up)| {
                up.requests()
                    .iter()
                    .any(|e| e.one("x-user-id") == Some(u.as_str()))
            })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(holders.len(), 1, "{u} went to targets {holders:?}");
    }
    for up in &ups {
        used += usize::from(up.hits() > 0);
    }
    assert!(used >= 2, "12 users all hashed to one target");
}

#[tokio::test]
async fn a_post_is_never_sent_twice_but_an_unconnected_one_is_retried_whole() {
    let faulty = FaultyUpstream::start().await;
    let echo = Upstream::start().await;
    let config = format!(
        r#"{{listen}}
{ADMIN}
[[routes]]
prefix = "/f"
upstreams = ["{}", "{}"]
auth = "public"

[[routes]]
prefix = "/retry"
upstreams = ["http://{}", "{}"]
auth = "public"
"#,
        faulty.url(),
        echo.url(),
        dead_addr(),
        echo.url()
    );
    let gw = Setup::new().start(&config).await;
    let client = gw.h1();

    // The faulty target reads the whole request, then closes without answering: the POST
    // may have been processed, so it is not sent again (502), whichever target comes first.
    let body = pseudo_random_bytes(10_000);
    let mut bad_gateway = 0;
    for _ in 0..6 {
        let r = TestGateway::send(
            client
                .post(gw.url("/f/close-before-head"))
                .body(body.clone()),
        )
        .await;
        match r.status {
            200 => assert_eq!(r.echo().method, "POST"),
            502 => bad_gateway += 1,
            other => panic!("POST: {other} {}", r.text()),
        }
    }
    let at_faulty = faulty
        .paths()
        .iter()
        .filter(|p| p.ends_with("close-before-head"))
        .count();
    let at_echo = echo
        .requests()
        .iter()
        .filter(|e| e.method == "POST")
        .count();
    assert_eq!(at_faulty + at_echo, 6, "a POST reached the upstreams twice");
    assert_eq!(bad_gateway, at_faulty);
    assert!(at_faulty > 0, "round robin never tried the faulty target");

    // The same failure for a GET (idempotent, no body) is retried on the other target.
    for _ in 0..6 {
        let r = gw.get("/f/close-before-head", None).await;
        assert_eq!(r.echo().method, "GET");
    }

    // A target that refuses connections: nothing was sent, so even a POST goes to the other
    // one, with its body complete.
    for _ in 0..4 {
        let r = TestGateway::send(client.post(gw.url("/retry/post")).body(body.clone())).await;
        let echo = r.echo();
        assert_eq!(echo.body_len, 10_000);
        assert_eq!(echo.body_sha256, pseudo_random_sha256(10_000));
    }

    let v = admin_upstreams(&gw).await;
    let retry = &v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "/retry")
        .unwrap()["targets"];
    assert!(retry[0]["failures"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(retry[1]["requests"], 4, "{v}");

    let metrics = common::admin_request(
        &gw.admin_url().unwrap(),
        ADMIN_TOKEN,
        reqwest::Method::GET,
        "/metrics",
        None,
    )
    .await
    .text();
    let line = format!(
        "portcullis_upstream_target_requests_total{{route=\"/retry\",target=\"{}\"}} 4",
        echo.url()
    );
    assert!(metrics.contains(&line), "no `{line}` in\n{metrics}");
}

#[tokio::test]
async fn least_requests_avoids_a_busy_target() {
    let slow = Upstream::start().await;
    let fast = Upstream::start().await;
    let config = format!(
        r#"{{listen}}
[[routes]]
prefix = "/"
upstreams = ["{}", "{}"]
balance = "least_requests"
auth = "public"
"#,
        slow.url(),
        fast.url()
    );
    let gw = Arc::new(Setup::new().start(&config).await);
    // Hold requests open on whichever target they land, one after another: each goes to
    // the target with fewer in flight.
    let mut held = Vec::new();
    for n in 1..=4 {
        let gw2 = gw.clone();
        held.push(tokio::spawn(
            async move { gw2.get("/slow/3000", None).await },
        ));
        assert!(
            wait_until(Duration::from_secs(10), || slow.hits() + fast.hits() >= n).await,
            "held request {n} never arrived"
        );
    }
    // Round robin could do the same by luck; least requests must.
    assert_eq!(slow.hits(), 2);
    assert_eq!(fast.hits(), 2);
    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
}

#[tokio::test]
async fn a_reload_applies_new_targets() {
    let one = Upstream::start().await;
    let two = Upstream::start().await;
    let route = |targets: &str| {
        format!(
            r#"{{listen}}
{ADMIN}
[[routes]]
prefix = "/"
upstreams = [{targets}]
auth = "public"
"#
        )
    };
    let setup = Setup::new();
    let path = setup.write_config(&route(&format!("\"{}\"", one.url())));
    let both = setup.render(&route(&format!("\"{}\", \"{}\"", one.url(), two.url())));
    let config = portcullis::Config::load(&path).unwrap();
    let gw = setup.start_with(config).await;
    assert_eq!(gw.get("/a", None).await.status, 200);
    assert_eq!(one.hits(), 1);

    std::fs::write(&path, both).unwrap();
    gw.reload().await.unwrap();
    // Each worker keeps its own rotation, and each of these requests opens a connection
    // (any worker may take it): ten are enough for the new target to get a turn.
    for _ in 0..10 {
        assert_eq!(gw.get("/b", None).await.status, 200);
    }
    assert!(two.hits() >= 1, "the new target never took a turn");
    let v = admin_upstreams(&gw).await;
    assert_eq!(
        v["routes"][0]["targets"].as_array().unwrap().len(),
        2,
        "{v}"
    );
}
