//! An upstream that fails: resets mid-response or before answering, answers garbage, stalls,
//! or closes a pooled connection under the gateway. The client gets 502 (bad answer), 504
//! (no answer within the route timeout) or a cut stream (the head was already forwarded);
//! no gateway task panics; and the next request on the same route is served, so the
//! connection pool recovered.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::faulty::{FaultyUpstream, RESET_ANNOUNCED_BYTES};
use common::{gateway_panics, Env, TestGateway};

/// Route timeout for the stall test: long enough for a loaded debug build to answer a
/// healthy request, short enough to keep the test quick.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(1);

async fn env() -> Env<FaultyUpstream> {
    Env::faulty("1s").await
}

impl Env<FaultyUpstream> {
    /// A healthy request on the same route: the pool must hand out (or open) a working
    /// connection after whatever happened before.
    async fn healthy(&self, client: &reqwest::Client, what: &str) {
        let r = client
            .get(self.gw.url("/f/ok"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("after {what}: healthy request failed: {e}"));
        let r = TestGateway::reply(r).await;
        assert_eq!(r.status, 200, "after {what}: {}", r.text());
        assert_eq!(r.text(), "ok", "after {what}");
    }

    /// GET `/f/{fault}` and return the status (the body is read and dropped).
    async fn status_of(&self, client: &reqwest::Client, fault: &str) -> u16 {
        let r = client
            .get(self.gw.url(&format!("/f/{fault}")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{fault}: the gateway did not answer: {e}"));
        let status = r.status().as_u16();
        let _ = r.bytes().await;
        status
    }

    fn assert_no_panic(&self) {
        assert_eq!(gateway_panics(), 0, "a gateway task panicked (see the log)");
    }
}

/// Reading a response whose upstream reset after 64 KiB of a 1 MiB body: either the gateway
/// answered 502 (it saw the reset before forwarding the head) or the client got the head and a
/// body cut short with an error. Never the full length, never a silent truncation that looks
/// complete.
async fn assert_cut_or_502(client: &reqwest::Client, url: String) {
    let resp = client.get(url).send().await.expect("head of the response");
    let status = resp.status().as_u16();
    if status == 502 {
        return;
    }
    assert_eq!(status, 200, "reset mid-response: {status}");
    match resp.bytes().await {
        Err(_) => {}
        Ok(body) => panic!(
            "reset mid-response: the client got a complete-looking body of {} bytes (announced {RESET_ANNOUNCED_BYTES})",
            body.len()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_response_cuts_the_stream_over_http1() {
    let env = env().await;
    let client = env.gw.h1();
    assert_cut_or_502(&client, env.gw.url("/f/reset-mid-response")).await;
    env.healthy(&client, "a reset mid-response").await;
    env.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_response_cuts_the_stream_over_http2() {
    let env = env().await;
    let client = env.gw.h2();
    assert_cut_or_502(&client, env.gw.url("/f/reset-mid-response")).await;
    // The HTTP/2 connection itself survives a reset stream: the same client goes on.
    env.healthy(&client, "a reset mid-response").await;
    env.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_before_response_head_is_502() {
    let env = env().await;
    let client = env.gw.h1();
    assert_eq!(env.status_of(&client, "reset-before-head").await, 502);
    env.healthy(&client, "a reset before the head").await;
    env.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_without_response_is_502() {
    let env = env().await;
    let client = env.gw.h1();
    assert_eq!(env.status_of(&client, "close-before-head").await, 502);
    env.healthy(&client, "a close before the head").await;
    env.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_malformed_status_line_is_502() {
    let env = env().await;
    let client = env.gw.h1();
    assert_eq!(env.status_of(&client, "malformed-status").await, 502);
    env.healthy(&client, "a malformed status line").await;
    env.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_speaking_another_protocol_is_502() {
    let env = env().await;
    let client = env.gw.h1();
    assert_eq!(env.status_of(&client, "not-http").await, 502);
    env.healthy(&client, "a non-HTTP answer").await;
    env.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_conflicting_content_lengths_are_502() {
    // Response smuggling towards the client: two framings in one response head.
    let env = env().await;
    let client = env.gw.h1();
    assert_eq!(env.status_of(&client, "conflicting-length").await, 502);
    env.healthy(&client, "conflicting Content-Length").await;
    env.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_endless_response_head_is_502() {
    // The gateway's upstream client must stop reading a head that never ends (bounded
    // buffer), not accumulate megabytes of header lines.
    let env = env().await;
    let client = env.gw.h1();
    let start = Instant::now();
    assert_eq!(env.status_of(&client, "endless-head").await, 502);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    env.healthy(&client, "an endless response head").await;
    env.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_stalling_before_the_head_is_504_after_the_route_timeout() {
    let env = env().await;
    let client = env.gw.h1();
    let start = Instant::now();
    assert_eq!(env.status_of(&client, "stall").await, 504);
    let took = start.elapsed();
    assert!(
        took >= ROUTE_TIMEOUT - Duration::from_millis(50) && took < ROUTE_TIMEOUT * 5,
        "504 after {took:?}, route timeout {ROUTE_TIMEOUT:?}"
    );
    env.healthy(&client, "a stalled upstream").await;
    env.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_an_idle_pooled_connection_is_not_a_502() {
    // The upstream closes each keep-alive connection 100 ms after answering, while it sits
    // idle in the gateway's pool: the next request must get a fresh connection, not the dead
    // one.
    let env = env().await;
    let client = env.gw.h1();
    for round in 0..5 {
        assert_eq!(
            env.status_of(&client, "close-after").await,
            200,
            "round {round}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        env.healthy(&client, &format!("an idle close, round {round}"))
            .await;
    }
    env.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_recovers_after_every_fault_in_turn() {
    let env = env().await;
    let client = env.gw.h1();
    for (fault, want) in [
        ("reset-before-head", 502),
        ("close-before-head", 502),
        ("malformed-status", 502),
        ("not-http", 502),
        ("conflicting-length", 502),
        ("stall", 504),
    ] {
        assert_eq!(env.status_of(&client, fault).await, want, "{fault}");
        env.healthy(&client, fault).await;
    }
    // A burst of concurrent healthy requests after all that: every one is served.
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let client = client.clone();
        let url = env.gw.url("/f/ok");
        tasks.push(tokio::spawn(async move {
            let r = client.get(url).send().await.expect("request");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), (200, "ok".to_owned()));
    }
    assert!(
        env.up.connections() >= 6,
        "each fault used its own connection"
    );
    assert!(env.up.paths().iter().any(|p| p == "/f/stall"));
    env.assert_no_panic();
}
