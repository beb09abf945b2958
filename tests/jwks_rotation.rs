//! Keys across the fleet (`[jwt.jwks] url = ...`): a real HTTPS key server whose document
//! the test swaps, the real gateway fetching it through a private CA (`ca_file`). Rotation
//! (new key published, then the old one retired) fails no request in between; an unknown
//! `kid` refreshes early but a flood of them is rate-limited; a failing key server leaves
//! the previous set in force; reload fetches an unchanged source again and restarts a changed one.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::answer::AnswerServer;
use common::tokens::{self, PemPair};
use common::{Setup, TestGateway, Upstream};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::Algorithm;

const ADMIN_TOKEN: &str = "jwks-test-admin-token-0123456789";

/// The key server: an [`AnswerServer`] publishing a JWKS document.
struct KeyServer {
    url: String,
    ca_pem: String,
    server: AnswerServer,
}

impl KeyServer {
    async fn start(keys: &[Jwk]) -> KeyServer {
        let server = AnswerServer::start(200, &document(keys)).await;
        KeyServer {
            url: format!("{}/.well-known/jwks.json", server.base),
            ca_pem: server.ca_pem.clone(),
            server,
        }
    }

    fn publish(&self, keys: &[Jwk]) {
        self.answer_with(200, &document(keys));
    }

    fn answer_with(&self, status: u16, body: &str) {
        self.server.answer_with(status, body);
    }

    fn hits(&self) -> usize {
        self.server.hits()
    }

    /// Wait until the gateway has fetched `more` more times than `since`.
    async fn wait_for_fetches(&self, since: usize, more: usize) {
        let ok = common::wait_until(Duration::from_secs(10), || self.hits() >= since + more).await;
        assert!(
            ok,
            "the gateway fetched {} times, not {more}",
            self.hits() - since
        );
    }
}

fn document(keys: &[Jwk]) -> String {
    serde_json::to_string(&JwkSet {
        keys: keys.to_vec(),
    })
    .expect("jwks json")
}

/// An ES256 key and its public JWK under `kid`.
struct Key {
    kid: &'static str,
    pair: PemPair,
}

impl Key {
    fn new(kid: &'static str) -> Key {
        Key {
            kid,
            pair: tokens::ec_p256(),
        }
    }

    fn jwk(&self) -> Jwk {
        self.pair.jwk(Algorithm::ES256, self.kid)
    }

    /// A token no request has carried before (each verification is real, not a cache hit).
    fn token(&self, sub: &str) -> String {
        self.token_with_kid(self.kid, sub)
    }

    fn token_with_kid(&self, kid: &str, sub: &str) -> String {
        static SERIAL: AtomicUsize = AtomicUsize::new(0);
        let mut claims = tokens::claims(sub);
        claims["jti"] = format!("t{}", SERIAL.fetch_add(1, Ordering::SeqCst)).into();
        tokens::sign(Algorithm::ES256, Some(kid), &self.pair.encoding(), &claims)
    }
}

/// Start the gateway on `server` with these `[jwt.jwks]` intervals; the config is a file, so
/// it can be reloaded.
async fn start(server: &KeyServer, up: &Upstream, intervals: &str) -> TestGateway {
    let setup = Setup::new();
    setup.write("jwks-ca.pem", &server.ca_pem);
    let path = setup.write_config(&config(&server.url, &up.url(), intervals));
    let config = portcullis::Config::load(&path).expect("config");
    setup.start_with(config).await
}

fn config(jwks_url: &str, up: &str, intervals: &str) -> String {
    format!(
        r#"{{listen}}
[jwt.jwks]
url = "{jwks_url}"
ca_file = "jwks-ca.pem"
{intervals}

[[routes]]
prefix = "/"
upstream = "{up}"
auth = "jwt"

[admin]
addr = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"
"#
    )
}

async fn status(gw: &TestGateway, token: &str) -> u16 {
    gw.get("/whoami", Some(token)).await.status
}

/// Poll with fresh tokens from `key` until the gateway answers `want`; returns how many
/// requests were answered otherwise first.
async fn until_status(gw: &TestGateway, key: &Key, want: u16, what: &str) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut others = 0;
    loop {
        if status(gw, &key.token("poll")).await == want {
            return others;
        }
        others += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still not {want}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn metrics(gw: &TestGateway) -> String {
    let addr = gw.admin_addr().expect("admin listener");
    reqwest::Client::new()
        .get(format!("http://{addr}/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin")
        .text()
        .await
        .expect("metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_fails_no_request_and_a_retired_key_stops_vouching() {
    common::watch_panics();
    let up = Upstream::start().await;
    let (a, b) = (Key::new("key-a"), Key::new("key-b"));
    let server = KeyServer::start(&[a.jwk()]).await;
    let gw = start(
        &server,
        &up,
        "refresh_interval = \"1s\"\nmin_refresh_interval = \"250ms\"",
    )
    .await;

    // One A token used again and again: after its first use it is answered from the
    // verified-token cache.
    let a_cached = a.token("alice");
    assert_eq!(status(&gw, &a_cached).await, 200);
    assert_eq!(status(&gw, &a_cached).await, 200);

    // A client sending A tokens (fresh ones and the cached one) through the whole rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let client = gw.h1();
    let url = gw.url("/loop");
    let looper = {
        let (stop, sent, a_cached) = (stop.clone(), sent.clone(), a_cached.clone());
        let fresh = Key {
            kid: a.kid,
            pair: a.pair.clone(),
        };
        tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let n = sent.fetch_add(1, Ordering::SeqCst);
                let token = if n % 2 == 0 {
                    fresh.token("alice")
                } else {
                    a_cached.clone()
                };
                match client.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => failures.push(format!("request {n}: {}", r.status())),
                    Err(e) => failures.push(format!("request {n}: {e}")),
                }
            }
            failures
        })
    };

    // Publish B beside A: a B token passes once the gateway has fetched the new set (at
    // worst after the unknown-kid refresh its first use asks for).
    server.publish(&[a.jwk(), b.jwk()]);
    until_status(&gw, &b, 200, "B token after publishing {A, B}").await;
    // Several more periodic refreshes of the same document while A traffic continues.
    let fetched = server.hits();
    server.wait_for_fetches(fetched, 2).await;
    assert_eq!(status(&gw, &b.token("bob")).await, 200);

    stop.store(true, Ordering::SeqCst);
    let failures = looper.await.expect("client loop");
    let sent = sent.load(Ordering::SeqCst);
    assert!(sent >= 20, "the client loop sent only {sent} requests");
    assert!(
        failures.is_empty(),
        "{} of {sent} A requests failed during the rotation: {failures:?}",
        failures.len()
    );

    // Retire A: once the gateway has the new set, fresh A tokens are refused, and so is the
    // cached one (the cache must not vouch for a retired key), while B keeps passing.
    server.publish(&[b.jwk()]);
    until_status(&gw, &a, 401, "fresh A token after retiring A").await;
    let before = up.hits();
    let r = gw.get("/whoami", Some(&a_cached)).await;
    assert_eq!(r.status, 401, "a cached A token still passes: {}", r.text());
    assert_eq!(up.hits(), before, "the upstream was reached");
    let r = gw.get("/whoami", Some(&b.token("bob"))).await;
    assert_eq!(r.echo().one("x-user-id"), Some("bob"));

    let m = metrics(&gw).await;
    assert!(
        m.contains("portcullis_jwks_refreshes_total{reason=\"changed\"} 2"),
        "{m}"
    );
    // Present at zero from the start: the fetches must have counted.
    assert!(
        m.contains("portcullis_jwks_refreshes_total{reason=\"unchanged\"} ")
            && !m.contains("portcullis_jwks_refreshes_total{reason=\"unchanged\"} 0\n"),
        "{m}"
    );
    assert_eq!(common::gateway_panics(), 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_refreshes_early_and_a_flood_of_them_is_rate_limited() {
    let up = Upstream::start().await;
    let (a, b) = (Key::new("key-a"), Key::new("key-b"));
    let server = KeyServer::start(&[a.jwk()]).await;
    // No periodic refresh during the test: only unknown kids can cause a fetch.
    let gw = start(
        &server,
        &up,
        "refresh_interval = \"1h\"\nmin_refresh_interval = \"500ms\"",
    )
    .await;
    assert_eq!(server.hits(), 1, "start-up fetches once");
    assert_eq!(status(&gw, &a.token("alice")).await, 200);

    server.publish(&[a.jwk(), b.jwk()]);
    // Fail closed: the request naming the unknown kid is refused, and asks for a refresh.
    assert_eq!(status(&gw, &b.token("bob")).await, 401);
    until_status(&gw, &b, 200, "B token after its unknown-kid refresh").await;
    assert_eq!(server.hits(), 2, "one early fetch");

    // A flood of random kids: at most one fetch per min_refresh_interval.
    let before = server.hits();
    let started = tokio::time::Instant::now();
    let mut flood = Vec::new();
    for worker in 0..4 {
        let client = gw.h1();
        let url = gw.url("/flood");
        let key = Key {
            kid: "unused",
            pair: a.pair.clone(),
        };
        flood.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut i = 0;
            while started.elapsed() < Duration::from_secs(2) {
                let token = key.token_with_kid(&format!("random-{worker}-{i}"), "mallory");
                i += 1;
                let r = client
                    .get(&url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("send");
                statuses.push(r.status().as_u16());
            }
            statuses
        }));
    }
    let mut sent = 0;
    for f in flood {
        let statuses = f.await.expect("flood task");
        sent += statuses.len();
        assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    }
    // Let a fetch asked for at the very end happen before counting.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let elapsed = started.elapsed();
    let fetches = server.hits() - before;
    // Fetches at least 500 ms apart within `elapsed`.
    let allowed = (elapsed.as_millis() / 500) as usize + 1;
    assert!(sent >= 40, "the flood sent only {sent} requests");
    assert!(
        (1..=allowed).contains(&fetches),
        "{sent} unknown-kid requests in {elapsed:?} caused {fetches} fetches (allowed 1..={allowed})"
    );
    assert_eq!(status(&gw, &a.token("alice")).await, 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_key_server_leaves_the_previous_set_in_force() {
    let up = Upstream::start().await;
    let (a, b) = (Key::new("key-a"), Key::new("key-b"));
    let server = KeyServer::start(&[a.jwk()]).await;
    let gw = start(
        &server,
        &up,
        "refresh_interval = \"300ms\"\nmin_refresh_interval = \"200ms\"",
    )
    .await;
    assert_eq!(status(&gw, &a.token("alice")).await, 200);

    // An HMAC key on a public endpoint would let anyone sign: refused like garbage.
    let oct = r#"{"keys":[{"kty":"oct","kid":"h","alg":"HS256","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAxMjM0NQ"}]}"#;
    for (status_code, body) in [
        (500, "down for maintenance"),
        (200, "<html>not json</html>"),
        (200, r#"{"keys": []}"#),
        (200, oct),
        (404, "gone"),
    ] {
        server.answer_with(status_code, body);
        let since = server.hits();
        server.wait_for_fetches(since, 2).await;
        for _ in 0..3 {
            assert_eq!(
                status(&gw, &a.token("alice")).await,
                200,
                "after answering {status_code} {body}"
            );
        }
    }
    let m = metrics(&gw).await;
    // Present at zero from the start: the fetches must have counted.
    assert!(
        m.contains("portcullis_jwks_refreshes_total{reason=\"failed\"} ")
            && !m.contains("portcullis_jwks_refreshes_total{reason=\"failed\"} 0\n"),
        "{m}"
    );
    // Every outcome has its series from the start (issue 15); none of these changed the set.
    assert!(
        m.contains("portcullis_jwks_refreshes_total{reason=\"changed\"} 0\n"),
        "{m}"
    );

    // The refresher is still alive: a real new set is taken.
    server.publish(&[b.jwk()]);
    until_status(&gw, &a, 401, "A after the server recovered with {B}").await;
    assert_eq!(status(&gw, &b.token("bob")).await, 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_fails_closed_when_the_first_fetch_fails() {
    let up = Upstream::start().await;
    let server = KeyServer::start(&[]).await;
    server.answer_with(503, "not yet");
    let setup = Setup::new();
    setup.write("jwks-ca.pem", &server.ca_pem);
    let path = setup.write_config(&config(&server.url, &up.url(), ""));
    let config = portcullis::Config::load(&path).expect("config is valid offline");
    let e = portcullis::start(config)
        .await
        .err()
        .expect("start-up must fail without a first key set")
        .to_string();
    assert!(e.contains("jwt.jwks") && e.contains(&server.url), "{e}");
    assert!(e.contains("503"), "{e}");
    assert_eq!(server.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refetches_an_unchanged_source_and_restarts_a_changed_one() {
    let up = Upstream::start().await;
    let (a, b) = (Key::new("key-a"), Key::new("key-b"));
    let first = KeyServer::start(&[a.jwk()]).await;
    // A long interval and rate limit: only a reload can fetch within this test.
    let intervals = "refresh_interval = \"1h\"\nmin_refresh_interval = \"1h\"";
    let gw = start(&first, &up, intervals).await;
    assert_eq!(status(&gw, &a.token("alice")).await, 200);

    // Same section: the same refresher fetches again on every reload, past its rate limit;
    // the same document changes nothing.
    for _ in 0..3 {
        let notes = gw.reload().await.expect("reload");
        assert!(notes.is_empty(), "{notes:?}");
    }
    assert_eq!(
        first.hits(),
        4,
        "each reload fetches the published set once"
    );
    assert_eq!(status(&gw, &a.token("alice")).await, 200);

    // The key server fails: the reload goes through, says so, and the set stays.
    first.answer_with(503, "down");
    let notes = gw
        .reload()
        .await
        .expect("a failed refetch does not refuse the reload");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("jwt.jwks") && n.contains("failed")),
        "{notes:?}"
    );
    assert_eq!(status(&gw, &a.token("alice")).await, 200);

    // Emergency retirement: publish a set without key A and reload. A's tokens, cached ones
    // included, are refused at once, not after the hour-long interval.
    first.publish(&[b.jwk()]);
    gw.reload().await.expect("reload");
    assert_eq!(status(&gw, &a.token("alice")).await, 401);
    assert_eq!(status(&gw, &b.token("bob")).await, 200);
    first.publish(&[a.jwk()]);
    gw.reload().await.expect("reload");
    assert_eq!(status(&gw, &a.token("alice")).await, 200);
    let fetched = first.hits();

    // Another source whose first fetch fails: the reload is refused, nothing changes.
    let broken = KeyServer::start(&[]).await;
    broken.answer_with(500, "no");
    let write = |server: &KeyServer| {
        std::fs::write(gw.dir.path().join("jwks-ca.pem"), &server.ca_pem).expect("ca");
        // A short rate limit from here on: an unknown kid refreshes early.
        let intervals = "refresh_interval = \"1h\"\nmin_refresh_interval = \"100ms\"";
        let text = config(&server.url, &up.url(), intervals).replace(
            "{listen}",
            "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"tls/cert.pem\"\ntls_key = \"tls/key.pem\"\n",
        );
        std::fs::write(gw.dir.path().join("config.toml"), text).expect("config");
    };
    write(&broken);
    let e = gw.reload().await.expect_err("reload to a failing source");
    assert!(e.contains("jwt.jwks") && e.contains(&broken.url), "{e}");
    assert_eq!(status(&gw, &a.token("alice")).await, 200);

    // Another source that answers: its set replaces the old one, and the old source is no
    // longer asked (an unknown kid now refreshes from the new one).
    let second = KeyServer::start(&[b.jwk()]).await;
    write(&second);
    gw.reload().await.expect("reload to a new source");
    assert_eq!(second.hits(), 1);
    assert_eq!(status(&gw, &b.token("bob")).await, 200);
    assert_eq!(status(&gw, &a.token("alice")).await, 401);
    second.wait_for_fetches(1, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(first.hits(), fetched, "the replaced refresher still runs");
    gw.shutdown().await;
}

#[test]
fn both_url_and_file_are_refused_naming_the_key() {
    let text = r#"
[listen]
addr = "127.0.0.1:0"

[jwt.jwks]
url = "https://issuer.example/.well-known/jwks.json"
file = "keys/jwks.json"

[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:8080"
auth = "jwt"
"#;
    let e = portcullis::Config::from_toml(text, std::path::Path::new("."))
        .expect_err("both url and file")
        .to_string();
    assert!(e.contains("jwt.jwks"), "{e}");
    assert!(e.contains("url") && e.contains("file"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_validates_offline_and_says_what_run_will_fetch() {
    let up = Upstream::start().await;
    let server = KeyServer::start(&[Key::new("key-a").jwk()]).await;
    let setup = Setup::new();
    setup.write("jwks-ca.pem", &server.ca_pem);
    let path = setup.write_config(&config(&server.url, &up.url(), ""));
    // Blocking, off the runtime that serves the key server.
    let out = common::cli(&["check", "--config", &path.display().to_string()]).await;
    let stdout = &out.stdout;
    assert!(out.ok, "{}", out.all());
    assert!(
        stdout.contains("will fetch") && stdout.contains(&server.url),
        "{stdout}"
    );
    assert_eq!(server.hits(), 0, "check fetched from the network");
}
