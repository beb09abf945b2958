//! Bodiless requests (GET, HEAD, OPTIONS, PUT, DELETE) go to an `http://` HTTP/1.1 upstream
//! on the gateway's own wire path (`src/upstream/wire.rs`), not through hyper's client. Seen
//! from outside, against an upstream written on raw TCP: every way RFC 9112 frames an answer
//! arrives whole (chunks with extensions and trailers, close-delimited, interim answers, a
//! head that trickles in); a connection is reused after a cleanly framed answer and only
//! then; an answer the upstream sent unasked never reaches the next client; a bad chunk cuts
//! the stream, and the next request is served.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::faulty::{big_body, FaultyUpstream};
use std::time::{Duration, Instant};

use common::{gateway_panics, Env, Setup, TestGateway};

async fn env() -> Env<FaultyUpstream> {
    Env::faulty("2s").await
}

/// The faulty upstream behind a public route, with `upstream` as the `[upstream]` table.
async fn env_with(upstream: &str) -> Env<FaultyUpstream> {
    let config = format!(
        "{{listen}}\n[upstream]\n{upstream}\n[[routes]]\nprefix = \"/\"\nupstream = \"{{up}}\"\nauth = \"public\"\n"
    );
    Env::start_with(Setup::new(), FaultyUpstream::start().await, &config).await
}

/// Wait (up to 5 s) until the upstream has `want` connections open.
async fn open_becomes(env: &Env<FaultyUpstream>, want: usize) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if env.up.open() == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// GET `/f/{fault}` with `client`: status and body text.
async fn get(env: &Env<FaultyUpstream>, client: &reqwest::Client, fault: &str) -> (u16, String) {
    let r = client
        .get(env.gw.url(&format!("/f/{fault}")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{fault}: no answer: {e}"));
    let r = TestGateway::reply(r).await;
    (r.status, r.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_framing_arrives_whole_over_http1_and_http2() {
    let env = env().await;
    for client in [env.gw.h1(), env.gw.h2()] {
        for (fault, body) in [
            ("ok", "ok"),
            ("chunked", "hello, world"),
            ("close-delimited", "until the end"),
            ("te-and-cl", "ok"),
            ("interim", "ok"),
            ("slow-head", "ok"),
        ] {
            assert_eq!(
                get(&env, &client, fault).await,
                (200, body.to_owned()),
                "{fault}"
            );
        }
    }
    assert_eq!(gateway_panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_reused_only_after_a_cleanly_framed_answer() {
    let env = env().await;
    // HTTP/2: one client connection, so one gateway worker and its one pool. (An HTTP/1.1
    // client may open a second connection while the first goes back to its own pool, and
    // land on the other worker's pool.)
    let client = env.gw.h2();
    assert_eq!(get(&env, &client, "ok").await.0, 200);
    let first = env.up.connections();
    // Length and chunked answers leave the connection ready for the next request.
    for fault in ["ok", "chunked", "ok", "interim", "ok"] {
        assert_eq!(get(&env, &client, fault).await.0, 200, "{fault}");
    }
    assert_eq!(
        env.up.connections(),
        first,
        "cleanly framed answers on a keep-alive connection: no new connection"
    );
    // Both framings at once (a smuggling shape): answered, then never reused.
    assert_eq!(get(&env, &client, "te-and-cl").await, (200, "ok".into()));
    assert_eq!(get(&env, &client, "ok").await, (200, "ok".into()));
    assert_eq!(
        env.up.connections(),
        first + 1,
        "the connection that carried both framings was not closed"
    );
    // A HEAD answer has no body whatever its length says; the connection goes on.
    let r = client
        .head(env.gw.url("/f/head-only"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&env, &client, "ok").await, (200, "ok".into()));
    assert_eq!(env.up.connections(), first + 1, "HEAD broke the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_nobody_asked_for_never_reaches_the_next_client() {
    let env = env().await;
    let client = env.gw.h1();
    for round in 0..5 {
        assert_eq!(
            get(&env, &client, "extra-after-body").await,
            (200, "ok".into()),
            "round {round}"
        );
        // The same gateway worker, the next request: it must get its own answer, not the
        // `forged` one that sat behind the last answer on the old connection.
        let (status, body) = get(&env, &client, "ok").await;
        assert_eq!((status, body.as_str()), (200, "ok"), "round {round}");
    }
    assert_eq!(gateway_panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_chunk_cuts_the_stream_and_the_next_request_is_served() {
    let env = env().await;
    for client in [env.gw.h1(), env.gw.h2()] {
        // 502, or a stream cut before or after the head: the gateway had nothing to forward
        // yet when the bad chunk arrived, or had sent the head already. Never a body that
        // looks complete.
        if let Ok(r) = client.get(env.gw.url("/f/bad-chunk")).send().await {
            if r.status() != 502 {
                assert_eq!(r.status(), 200);
                assert!(
                    r.bytes().await.is_err(),
                    "a malformed chunk must not end as a complete-looking body"
                );
            }
        }
        assert_eq!(get(&env, &client, "ok").await, (200, "ok".into()));
    }
    assert_eq!(gateway_panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_methods_all_take_the_wire_and_a_post_still_works() {
    let env = env().await;
    let client = env.gw.h1();
    for method in ["GET", "OPTIONS", "DELETE", "PUT"] {
        let r = client
            .request(method.parse().unwrap(), env.gw.url("/f/ok"))
            .send()
            .await
            .unwrap();
        let r = TestGateway::reply(r).await;
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{method}");
    }
    let r = client
        .post(env.gw.url("/f/ok"))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let paths = env.up.paths();
    assert_eq!(
        paths.iter().filter(|p| *p == "/f/ok").count(),
        5,
        "each request reached the upstream once: {paths:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_past_pool_idle_timeout_is_closed_not_used() {
    let env = env_with("pool_idle_timeout = \"300ms\"").await;
    let client = env.gw.h2();
    assert_eq!(get(&env, &client, "ok").await.0, 200);
    assert_eq!((env.up.connections(), env.up.open()), (1, 1));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(get(&env, &client, "ok").await.0, 200);
    assert_eq!(env.up.connections(), 2, "the expired connection was used");
    assert!(
        open_becomes(&env, 1).await,
        "the expired connection stayed open: {} open",
        env.up.open()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_keeps_at_most_pool_max_idle_per_host_connections() {
    let env = env_with("pool_max_idle_per_host = 1").await;
    // One HTTP/2 connection (one gateway worker), three answers in flight at once: three
    // upstream connections.
    let client = env.gw.h2();
    let calls = (0..3).map(|_| get(&env, &client, "slow-head"));
    for (status, body) in futures_util::future::join_all(calls).await {
        assert_eq!((status, body.as_str()), (200, "ok"));
    }
    assert_eq!(env.up.connections(), 3);
    assert!(
        open_becomes(&env, 1).await,
        "idle connections beyond the cap stayed open: {} open",
        env.up.open()
    );
    // The one kept is used.
    assert_eq!(get(&env, &client, "ok").await.0, 200);
    assert_eq!(env.up.connections(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_arrive_byte_for_byte_and_the_connection_is_reused() {
    let env = env().await;
    let want = big_body();
    let client = env.gw.h2();
    assert_eq!(get(&env, &client, "ok").await.0, 200);
    let first = env.up.connections();
    for fault in ["big", "big-chunked", "big"] {
        let r = client
            .get(env.gw.url(&format!("/f/{fault}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{fault}");
        let body = r.bytes().await.unwrap();
        assert_eq!(body.len(), want.len(), "{fault}");
        assert!(body[..] == want[..], "{fault}: the bytes differ");
    }
    assert_eq!(
        env.up.connections(),
        first,
        "a large answer cost its connection"
    );
}
