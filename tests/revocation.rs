//! Revocation through the admin API, over real sockets: revoke by `jti`, by the token
//! itself and by subject, and see 401 `token revoked` on the very next request; un-revoke;
//! admin authentication and its brute-force penalty; input validation; paging, health and
//! metrics; and the `portcullis revoke` / `portcullis revocations` CLI clients.
//!
//! Durability and expiry are in `revocation_store.rs`; the harness is `common::revocation`.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use common::revocation::{
    assert_passes, assert_revoked, client_from, env, key_hex, token, token_with, Gw, ADMIN_TOKEN,
};
use common::TestGateway;
use common::{public_key_toml, tokens, Upstream};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Revoking through the admin API.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_jti_refuses_that_token_on_the_next_request_and_spares_the_others() {
    let (gw, up, _dir) = env("").await;
    let revoked = token("alice", "alice-session-1");
    let same_user = token("alice", "alice-session-2");
    assert_passes(&gw.get(&revoked).await, "before the revocation");
    assert_passes(&gw.get(&same_user).await, "before the revocation");

    let exp = tokens::now() + 600;
    let entry = gw
        .revoke(json!({ "jti": "alice-session-1", "exp": exp }))
        .await;
    assert_eq!(entry["kind"], "jti");
    assert_eq!(entry["jti"], "alice-session-1");
    assert_eq!(entry["exp"], exp);
    assert_eq!(entry["key"], key_hex("alice-session-1"));

    let hits = up.hits();
    assert_revoked(&gw.get(&revoked).await, "the revoked jti");
    assert_eq!(up.hits(), hits, "a revoked token reached the upstream");
    assert_passes(&gw.get(&same_user).await, "another token of the same user");
    assert_eq!(gw.count().await, (1, 0));

    // Without `exp` the entry lives for jwt.max_lifetime (24 h by default).
    let now = tokens::now();
    let entry = gw.revoke(json!({ "jti": "no-exp-given" })).await;
    let stored = entry["exp"].as_u64().expect("exp");
    assert!(
        (now + 24 * 3600..=now + 24 * 3600 + 5).contains(&stored),
        "exp defaulted to {stored}, now {now}"
    );
    assert_revoked(
        &gw.get(&token("bob", "no-exp-given")).await,
        "jti without exp",
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_by_token_uses_its_jti_or_else_a_digest_of_the_token() {
    let (gw, _up, _dir) = env("").await;

    // A token with a jti: revoked by jti, with the token's exp.
    let mut claims = tokens::claims("erin");
    claims["jti"] = json!("erin-1");
    let with_jti = token_with(claims.clone());
    let sibling = token("erin", "erin-2");
    let entry = gw.revoke(json!({ "token": with_jti })).await;
    // One `kind` vocabulary (issue 15): a whole-token revoke is `token` wherever it shows.
    assert_eq!(entry["kind"], "token");
    assert_eq!(entry["id"], "erin-1");
    assert_eq!(entry["key"], key_hex("erin-1"));
    assert_eq!(entry["exp"], claims["exp"]);
    assert_revoked(&gw.get(&with_jti).await, "token handed over with a jti");
    assert_passes(&gw.get(&sibling).await, "another token of the same user");

    // Without a jti: revoked by a digest of what was signed (the JWS signing input, so a
    // re-encoded twin is the same revocation); other tokens of the user pass.
    let no_jti = token_with(tokens::claims("frank"));
    let mut other = tokens::claims("frank");
    other["iat"] = json!(tokens::now() - 100);
    let other = token_with(other);
    assert_passes(&gw.get(&no_jti).await, "before the revocation");
    let entry = gw.revoke(json!({ "token": no_jti })).await;
    assert_eq!(entry["kind"], "token");
    let signing_input = no_jti.rsplit_once('.').unwrap().0;
    assert_eq!(
        entry["key"],
        portcullis::revocation::key_to_hex(&portcullis::auth::jws::token_digest(
            signing_input.as_bytes()
        ))
    );
    assert_revoked(&gw.get(&no_jti).await, "token without jti");
    assert_passes(&gw.get(&other).await, "another jti-less token of the user");

    // An expired token of ours can still be revoked (a no-op that expires at once)...
    let mut expired = tokens::claims("gina");
    expired["exp"] = json!(tokens::now() - 3600);
    expired["jti"] = json!("gina-old");
    gw.revoke(json!({ "token": token_with(expired) })).await;

    // ...but a token that does not verify is refused, and nothing is stored.
    let before = gw.count().await;
    let forged = tokens::sign(
        jsonwebtoken::Algorithm::HS256,
        Some("hs1"),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-gateway-secret-0123456789"),
        &tokens::claims("mallory"),
    );
    for bad in [forged.as_str(), "not.a.token", ""] {
        let r = gw
            .admin(
                reqwest::Method::POST,
                "/revocations",
                Some(json!({ "token": bad })),
            )
            .await;
        assert_eq!(r.status, 400, "{bad:?}: {r:?}");
        assert!(r.error().contains("does not verify"), "{r:?}");
    }
    assert_eq!(gw.count().await, before);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_subject_refuses_its_older_tokens_and_spares_later_ones() {
    let (gw, up, _dir) = env("").await;
    let now = tokens::now();
    let old = token("bob", "bob-old");
    let mut no_iat = tokens::claims("bob");
    no_iat.as_object_mut().expect("object").remove("iat");
    let no_iat = token_with(no_iat);
    let other_user = token("carol", "carol-1");
    for t in [&old, &no_iat, &other_user] {
        assert_passes(&gw.get(t).await, "before the revocation");
    }

    let entry = gw.revoke(json!({ "sub": "bob" })).await;
    assert_eq!(entry["kind"], "sub");
    assert_eq!(entry["sub"], "bob");
    assert_eq!(entry["key"], key_hex("bob"));
    let before = entry["revoked_before"].as_u64().expect("revoked_before");
    // Whole seconds, failing closed: everything issued up to the revocation's second is out.
    assert!(
        (now + 1..=now + 3).contains(&before),
        "revoked_before {before}, now {now}"
    );
    assert_eq!(
        entry["expires"].as_u64(),
        Some(before + 24 * 3600),
        "{entry}"
    );

    let hits = up.hits();
    assert_revoked(&gw.get(&old).await, "token issued before the revocation");
    let mut last_second = tokens::claims("bob");
    last_second["iat"] = json!(before - 1);
    assert_revoked(
        &gw.get(&token_with(last_second)).await,
        "token issued in the revocation's second",
    );
    // The documented rule: no iat means nothing proves the token is newer, so it is revoked.
    assert_revoked(&gw.get(&no_iat).await, "token without iat");
    assert_eq!(up.hits(), hits, "a revoked token reached the upstream");

    let mut later = tokens::claims("bob");
    later["iat"] = json!(before);
    later["jti"] = json!("bob-new");
    assert_passes(
        &gw.get(&token_with(later)).await,
        "token issued at revoked_before",
    );
    assert_passes(&gw.get(&other_user).await, "another subject");
    assert_eq!(gw.count().await, (0, 1));

    // Listing subjects shows the entry.
    let page = gw
        .admin(reqwest::Method::GET, "/revocations?kind=sub", None)
        .await;
    assert_eq!(page.status, 200, "{page:?}");
    let items = page.json()["items"].clone();
    assert_eq!(items.as_array().map(Vec::len), Some(1), "{items}");
    assert_eq!(items[0]["key"], key_hex("bob"));
    assert_eq!(items[0]["revoked_before"], before);
    gw.stop().await;
}

/// RS256 tokens go through the verified-token cache; a cached token must still be checked
/// against the revocation dictionary on every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_served_from_the_verification_cache_is_still_revoked() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let rsa = tokens::rsa();
    std::fs::create_dir_all(dir.path().join("keys")).expect("mkdir");
    std::fs::write(dir.path().join("keys/rsa.pub.pem"), &rsa.public_pem).expect("write key");
    let extra = public_key_toml("rsa", "RS256", Path::new("keys/rsa.pub.pem"));
    let gw = Gw::start(dir.path(), &up.url(), &extra).await;
    let rs256 = |sub: &str, jti: &str| {
        let mut c = tokens::claims(sub);
        c["iat"] = json!(tokens::now() - 10);
        c["jti"] = json!(jti);
        tokens::sign(Algorithm::RS256, Some("rsa"), &rsa.encoding(), &c)
    };

    // Each token is verified once, then served from the cache.
    let by_jti = rs256("rita", "rs-1");
    let by_sub = rs256("rita", "rs-2");
    let by_token = rs256("sven", "rs-3");
    for t in [&by_jti, &by_sub, &by_token] {
        assert_passes(&gw.get(t).await, "first use (verified)");
        assert_passes(&gw.get(t).await, "second use (cached)");
    }
    gw.revoke(json!({ "jti": "rs-1" })).await;
    assert_revoked(&gw.get(&by_jti).await, "cached token revoked by jti");
    assert_passes(&gw.get(&by_sub).await, "other cached token of the user");
    gw.revoke(json!({ "sub": "rita" })).await;
    assert_revoked(&gw.get(&by_sub).await, "cached token revoked by subject");
    gw.revoke(json!({ "token": by_token })).await;
    assert_revoked(&gw.get(&by_token).await, "cached token revoked by token");

    // Un-revoking lets the cached token through again.
    assert_eq!(gw.delete("/revocations/sub/rita").await.status, 204);
    assert_passes(&gw.get(&by_sub).await, "cached token after un-revoke");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_unrevokes_with_204_and_answers_404_when_absent() {
    let (gw, _up, _dir) = env("").await;
    let t = token("dave", "dave-1");
    gw.revoke(json!({ "jti": "dave-1" })).await;
    assert_revoked(&gw.get(&t).await, "revoked");
    let r = gw.delete("/revocations/jti/dave-1").await;
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.body.is_empty(), "{r:?}");
    assert_passes(&gw.get(&t).await, "un-revoked");
    let r = gw.delete("/revocations/jti/dave-1").await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.error(), "not revoked");

    // Ids are percent-decoded: a jti with a space and a slash.
    let odd = "odd id/with slash";
    let t = token("dave", odd);
    gw.revoke(json!({ "jti": odd })).await;
    assert_revoked(&gw.get(&t).await, "odd jti revoked");
    let r = gw.delete("/revocations/jti/odd%20id%2Fwith%20slash").await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_passes(&gw.get(&t).await, "odd jti un-revoked");

    // Subjects.
    let old = token("ella", "ella-1");
    gw.revoke(json!({ "sub": "ella" })).await;
    assert_revoked(&gw.get(&old).await, "subject revoked");
    assert_eq!(gw.delete("/revocations/sub/ella").await.status, 204);
    assert_passes(&gw.get(&old).await, "subject un-revoked");
    let r = gw.delete("/revocations/sub/ella").await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = gw.delete("/revocations/sub/nobody-at-all").await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(gw.count().await, (0, 0));
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------
// Admin authentication and input validation.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requests_without_the_right_token_get_401_and_change_nothing() {
    let (gw, _up, _dir) = env("").await;
    let victim = token("henry", "henry-1");
    let kept = token("henry", "henry-kept");
    gw.revoke(json!({ "jti": "henry-kept" })).await;

    let url = gw.admin_url("/revocations");
    let attempts: Vec<(&str, Option<String>)> = vec![
        ("no Authorization", None),
        ("wrong token", Some(format!("Bearer {ADMIN_TOKEN}x"))),
        (
            "prefix of the token",
            Some(format!("Bearer {}", &ADMIN_TOKEN[..10])),
        ),
        ("empty bearer", Some("Bearer ".into())),
        ("wrong scheme", Some(format!("Basic {ADMIN_TOKEN}"))),
    ];
    for (what, auth) in &attempts {
        let mut req = gw
            .http
            .post(&url)
            .json(&json!({ "jti": "henry-1" }))
            .header("content-type", "application/json");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = TestGateway::reply(req.send().await.expect("request")).await;
        assert_eq!(r.status, 401, "{what}: {r:?}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"portcullis-admin\""),
            "{what}"
        );
        assert_eq!(r.error(), "admin token required", "{what}");
    }
    // A DELETE and a listing without the token are refused too.
    let r = TestGateway::reply(
        gw.http
            .delete(gw.admin_url("/revocations/jti/henry-kept"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    // From another loopback address: 11 failures from one address would (rightly) trip
    // the brute-force penalty, which has its own test.
    let other = client_from("127.0.0.3");
    for path in [
        "/revocations",
        "/revocations/count",
        "/metrics",
        "/readyz",
        "/nowhere",
    ] {
        let r = TestGateway::reply(
            other
                .get(gw.admin_url(path))
                .bearer_auth("wrong-admin-token-0123456789")
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(r.status, 401, "{path}: {r:?}");
    }

    // Nothing changed: the victim still passes, the revoked token is still revoked.
    assert_passes(&gw.get(&victim).await, "token targeted without admin auth");
    assert_revoked(
        &gw.get(&kept).await,
        "revocation targeted by an unauthorised DELETE",
    );
    assert_eq!(gw.count().await, (1, 0));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_admin_auth_failures_lock_that_address_out_even_with_the_right_token() {
    let (gw, _up, _dir) = env("").await;
    let victim = token("ivan", "ivan-1");
    let url = gw.admin_url("/revocations");
    let post = |c: &reqwest::Client, bearer: &str| {
        c.post(&url)
            .bearer_auth(bearer)
            .json(&json!({ "jti": "ivan-1" }))
            .send()
    };
    for i in 1..=10 {
        let r =
            TestGateway::reply(post(&gw.http, "guess-0123456789").await.expect("request")).await;
        assert_eq!(r.status, 401, "failure {i} is only a 401: {r:?}");
    }
    let r = TestGateway::reply(post(&gw.http, "guess-0123456789").await.expect("request")).await;
    assert_eq!(r.status, 429, "the 11th failure within a minute: {r:?}");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a numeric Retry-After: {r:?}"));
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert!(r.error().contains("too many"), "{r:?}");

    // Now even the right token is refused from this address, and nothing is revoked.
    let r = TestGateway::reply(post(&gw.http, ADMIN_TOKEN).await.expect("request")).await;
    assert_eq!(
        r.status, 429,
        "right token from a locked-out address: {r:?}"
    );
    assert!(r.header("retry-after").is_some());
    assert_passes(&gw.get(&victim).await, "revocation sent while locked out");
    // /healthz stays open.
    let r = TestGateway::reply(
        gw.http
            .get(gw.admin_url("/healthz"))
            .send()
            .await
            .expect("healthz"),
    )
    .await;
    assert_eq!(r.status, 200);

    // Another loopback address is not locked out (the penalty is per client address).
    let other = client_from("127.0.0.2");
    let r = TestGateway::reply(
        post(&other, ADMIN_TOKEN)
            .await
            .expect("request from 127.0.0.2"),
    )
    .await;
    assert_eq!(r.status, 201, "right token from another address: {r:?}");
    assert_revoked(&gw.get(&victim).await, "revoked from the other address");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_input_gets_400_or_405_with_a_clear_message() {
    let (gw, _up, _dir) = env("").await;
    let url = gw.admin_url("/revocations");
    let post_raw = |body: &'static str| {
        gw.http
            .post(&url)
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases: [(&str, u16, &str); 14] = [
        ("{not json", 400, "not valid JSON"),
        ("", 400, "not valid JSON"),
        ("[1, 2]", 400, "expected one of"),
        ("{}", 400, "expected one of"),
        (r#"{"user": "x"}"#, 400, "expected one of"),
        (r#"{"jti": 5}"#, 400, "expected one of"),
        (r#"{"jti": "a", "exp": "tomorrow"}"#, 400, "expected one of"),
        (r#"{"jti": "a", "exp": -1}"#, 400, "expected one of"),
        (r#"{"jti": "a", "color": "red"}"#, 400, "expected one of"),
        (r#"{"jti": "a", "sub": "b"}"#, 400, "expected one of"),
        (r#"{"sub": "b", "token": "c"}"#, 400, "expected one of"),
        (r#"{"jti": ""}"#, 400, "jti must not be empty"),
        (r#"{"sub": ""}"#, 400, "sub must not be empty"),
        (r#"{"token": "x.y.z"}"#, 400, "does not verify"),
    ];
    for (body, status, message) in cases {
        let r = TestGateway::reply(post_raw(body).await.expect("request")).await;
        assert_eq!(r.status, status, "{body:?}: {r:?}");
        assert!(
            r.error().contains(message),
            "{body:?}: message {:?} does not say {message:?}",
            r.error()
        );
    }
    // A body over 64 KiB.
    let big = format!(r#"{{"jti": "{}"}}"#, "x".repeat(70 * 1024));
    let r = TestGateway::reply(
        gw.http
            .post(&url)
            .bearer_auth(ADMIN_TOKEN)
            .body(big)
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(r.status, 413, "{r:?}");

    // Wrong methods on known paths: 405; unknown paths: 404.
    use reqwest::Method;
    for (method, path) in [
        (Method::PUT, "/revocations"),
        (Method::PATCH, "/revocations"),
        (Method::DELETE, "/revocations"),
        (Method::GET, "/revocations/jti/abc"),
        (Method::POST, "/revocations/count"),
        (Method::POST, "/metrics"),
        (Method::DELETE, "/readyz"),
    ] {
        let r = gw.admin(method.clone(), path, None).await;
        assert_eq!(r.status, 405, "{method} {path}: {r:?}");
        assert!(r.error().contains("method not allowed"), "{r:?}");
    }
    let r = gw.admin(Method::GET, "/nowhere", None).await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = gw.admin(Method::DELETE, "/revocations/kid/abc", None).await;
    assert_eq!(r.status, 405, "{r:?}");

    // Bad listing parameters.
    for (query, message) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("cursor=zz", "cursor"),
        ("kind=kid", "kind"),
        ("page=2", "unknown query parameter"),
    ] {
        let r = gw
            .admin(Method::GET, &format!("/revocations?{query}"), None)
            .await;
        assert_eq!(r.status, 400, "{query}: {r:?}");
        assert!(r.error().contains(message), "{query}: {r:?}");
    }

    // None of it stored anything.
    assert_eq!(gw.count().await, (0, 0));
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------
// Listing, health and metrics.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_walks_every_entry_exactly_once() {
    let (gw, _up, _dir) = env("").await;
    const N: usize = 250;
    let exp = tokens::now() + 3600;
    let jtis: Vec<String> = (0..N).map(|i| format!("page-{i}")).collect();
    // 16 at a time: also exercises group commit under the admin API.
    let gw = Arc::new(gw);
    let mut tasks = Vec::new();
    for chunk in jtis.chunks(N.div_ceil(16)) {
        let (gw, chunk) = (gw.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for jti in chunk {
                gw.revoke(json!({ "jti": jti, "exp": exp })).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("revoke task");
    }
    let expected: HashSet<String> = jtis.iter().map(|j| key_hex(j)).collect();

    for limit in [100usize, 1, 125, 1000] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/revocations?limit={limit}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let r = gw.admin(reqwest::Method::GET, &path, None).await;
            assert_eq!(r.status, 200, "{r:?}");
            let v = r.json();
            assert_eq!(v["count"], json!({ "tokens": N, "subjects": 0 }));
            let items = v["items"].as_array().expect("items").clone();
            assert!(items.len() <= limit);
            for item in &items {
                assert_eq!(item["kind"], "jti", "{item}");
                assert_eq!(item["exp"], exp, "{item}");
                seen.push(item["key"].as_str().expect("key").to_owned());
            }
            pages += 1;
            assert!(pages <= N + 2, "paging does not terminate");
            match v["next_cursor"].as_str() {
                Some(c) => {
                    assert_eq!(items.len(), limit, "a short page with a next_cursor");
                    cursor = Some(c.to_owned());
                }
                None => break,
            }
        }
        let unique: HashSet<String> = seen.iter().cloned().collect();
        assert_eq!(seen.len(), N, "limit {limit}: an entry was listed twice");
        assert_eq!(unique, expected, "limit {limit}: listing differs");
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted, "limit {limit}: not in key order");
    }
    Arc::into_inner(gw).expect("last reference").stop().await;
}

/// Checks that `text` is Prometheus/OpenMetrics text: `# ` comment lines, and samples of
/// the form `name{labels} value` with a valid metric name and a numeric value. Returns the
/// samples as (name with labels, value).
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            assert!(
                comment == " EOF"
                    || comment.starts_with(" HELP ")
                    || comment.starts_with(" TYPE ")
                    || comment.starts_with(" UNIT "),
                "unexpected comment line {line:?}"
            );
            continue;
        }
        let (series, value) = match line.find('}') {
            Some(end) => (&line[..=end], line[end + 1..].trim()),
            None => line.split_once(' ').expect("sample has a value"),
        };
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in {line:?}"
        );
        // A sample may carry a timestamp after the value.
        let value = value.split(' ').next().unwrap_or_default();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.push((series.to_owned(), value));
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_open_and_metrics_is_prometheus_text() {
    let (gw, _up, _dir) = env("").await;
    let r = TestGateway::reply(
        gw.http
            .get(gw.admin_url("/healthz"))
            .send()
            .await
            .expect("healthz"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "ok\n");

    let r = gw.admin(reqwest::Method::GET, "/readyz", None).await;
    assert_eq!(r.status, 200, "{r:?}");

    // Some traffic for the counters: a pass, a refusal, a revocation.
    let t = token("kate", "kate-1");
    assert_passes(&gw.get(&t).await, "before");
    gw.revoke(json!({ "jti": "kate-1" })).await;
    assert_revoked(&gw.get(&t).await, "after");

    let r = gw.admin(reqwest::Method::GET, "/metrics", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let ctype = r.header("content-type").unwrap_or_default();
    // Issue 15: the Prometheus text format unless OpenMetrics is asked for (see
    // tests/rough_edges.rs for the negotiation).
    assert!(
        ctype.starts_with("text/plain") && ctype.contains("version=0.0.4"),
        "{ctype}"
    );
    assert!(!r.text().contains("# EOF"), "{}", r.text());
    let samples = parse_prometheus(&r.text());
    let value = |name: &str| {
        samples
            .iter()
            .find(|(s, _)| s == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no sample {name} in\n{}", r.text()))
    };
    value("portcullis_revocation_entries");
    assert_eq!(value("portcullis_revocations_applied_total"), 1.0);
    assert!(
        samples
            .iter()
            .any(|(s, v)| s.starts_with("portcullis_auth_failures_total{")
                && s.contains("reason=\"revoked\"")
                && *v >= 1.0),
        "no revoked auth failure counted:\n{}",
        r.text()
    );
    assert!(
        samples
            .iter()
            .any(|(s, _)| s.starts_with("portcullis_request_duration_seconds_bucket{")),
        "no latency histogram:\n{}",
        r.text()
    );
    gw.stop().await;
}

/// `portcullis_revocation_entries` follows each revoke and un-revoke at once (it used to be
/// refreshed only by the sweep, every `sweep_interval`, and lagged up to a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_entries_gauge_follows_revokes_and_unrevokes() {
    let (gw, _up, _dir) = env("").await;
    let entries = |gw: &Gw| {
        let gw_admin = gw.admin_url("/metrics");
        let http = gw.http.clone();
        async move {
            let r = TestGateway::reply(
                http.get(gw_admin)
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await
                    .expect("metrics"),
            )
            .await;
            parse_prometheus(&r.text())
                .into_iter()
                .find(|(s, _)| s == "portcullis_revocation_entries")
                .map(|(_, v)| v)
                .expect("gauge present")
        }
    };
    assert_eq!(entries(&gw).await, 0.0);
    gw.revoke(json!({ "jti": "gauge-1" })).await;
    gw.revoke(json!({ "sub": "gauge-user" })).await;
    assert_eq!(entries(&gw).await, 2.0, "after two revocations");
    assert_eq!(gw.delete("/revocations/jti/gauge-1").await.status, 204);
    assert_eq!(entries(&gw).await, 1.0, "after an un-revoke");
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------
// The CLI clients.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_revoke_and_list_against_a_running_gateway() {
    let (gw, _up, _dir) = env("").await;
    let admin_url = format!("http://{}", gw.admin);
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        a.extend(["--admin".into(), admin_url.clone()]);
        a.extend(["--admin-token".into(), ADMIN_TOKEN.into()]);
        a
    };

    // --jti, with --exp.
    let t = token("quinn", "cli-jti-1");
    assert_passes(&gw.get(&t).await, "before");
    let exp = (tokens::now() + 600).to_string();
    let (ok, out, err) = run_cli(args(&["revoke", "--jti", "cli-jti-1", "--exp", &exp])).await;
    assert!(ok, "revoke --jti failed: {err}");
    let entry: Value = serde_json::from_str(out.trim()).expect("revoke prints the entry");
    assert_eq!(entry["kind"], "jti");
    assert_eq!(entry["exp"].to_string(), exp);
    assert_revoked(&gw.get(&t).await, "revoked with the CLI");

    // --sub.
    let old = token("rosa", "rosa-1");
    let (ok, out, err) = run_cli(args(&["revoke", "--sub", "rosa"])).await;
    assert!(ok, "revoke --sub failed: {err}");
    assert!(out.contains("revoked_before"), "{out}");
    assert_revoked(&gw.get(&old).await, "subject revoked with the CLI");

    // --token.
    let whole = token("sam", "sam-1");
    let (ok, _, err) = run_cli(args(&["revoke", "--token", &whole])).await;
    assert!(ok, "revoke --token failed: {err}");
    assert_revoked(&gw.get(&whole).await, "token revoked with the CLI");

    // list and count.
    let (ok, out, err) = run_cli(args(&["revocations", "list"])).await;
    assert!(ok, "revocations list failed: {err}");
    let page: Value = serde_json::from_str(out.trim()).expect("list prints JSON");
    let keys: HashSet<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["key"].as_str())
        .collect();
    assert_eq!(
        keys,
        HashSet::from([key_hex("cli-jti-1").as_str(), key_hex("sam-1").as_str()])
    );
    let (ok, out, _) = run_cli(args(&["revocations", "list", "--kind", "sub"])).await;
    assert!(ok);
    assert!(out.contains(&key_hex("rosa")), "{out}");
    let (ok, out, _) = run_cli(args(&["revocations", "count"])).await;
    assert!(ok);
    let count: Value = serde_json::from_str(out.trim()).expect("count prints JSON");
    assert_eq!(count, json!({ "tokens": 2, "subjects": 1 }));

    // Paging through the CLI: --limit 1 then --cursor.
    let (ok, out, _) = run_cli(args(&["revocations", "list", "--limit", "1"])).await;
    assert!(ok);
    let first: Value = serde_json::from_str(out.trim()).expect("json");
    let cursor = first["next_cursor"].as_str().expect("cursor").to_owned();
    let (ok, out, _) = run_cli(args(&[
        "revocations",
        "list",
        "--limit",
        "1",
        "--cursor",
        &cursor,
    ]))
    .await;
    assert!(ok);
    let second: Value = serde_json::from_str(out.trim()).expect("json");
    assert_ne!(first["items"][0]["key"], second["items"][0]["key"]);

    // A wrong admin token: the CLI fails, says why, and nothing is revoked.
    let victim = token("tom", "cli-victim");
    let (ok, _, err) = run_cli(vec![
        "revoke".into(),
        "--admin".into(),
        admin_url.clone(),
        "--admin-token".into(),
        "wrong-admin-token-0123456789".into(),
        "--jti".into(),
        "cli-victim".into(),
    ])
    .await;
    assert!(!ok, "the CLI succeeded with a wrong admin token");
    assert!(err.contains("401"), "{err}");
    assert_passes(&gw.get(&victim).await, "revoke refused");
    // An unreachable admin API is an error, not a hang.
    let (ok, _, err) = run_cli(vec![
        "revocations".into(),
        "count".into(),
        "--admin".into(),
        format!("http://{}", common::upstream::dead_addr()),
        "--admin-token".into(),
        ADMIN_TOKEN.into(),
    ])
    .await;
    assert!(!ok);
    assert!(err.contains("cannot connect"), "{err}");
    gw.stop().await;
}

/// `portcullis ARGS` through [`common::cli`], as (success, stdout, stderr).
async fn run_cli(args: Vec<String>) -> (bool, String, String) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = common::cli(&args).await;
    (out.ok, out.stdout, out.stderr)
}
