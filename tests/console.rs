//! The console on the admin listener, outside-in over real sockets: the page loads without
//! credentials under a strict Content-Security-Policy (no inline script or style anywhere);
//! sign-in sets an `HttpOnly`, `SameSite=Strict` cookie scoped to `/ui/`; the console API
//! refuses calls without a session, changes without the CSRF header or from another origin;
//! a change made through it is audited under the credential's label; sign-out ends the
//! session; `/stats` moves under load; a user's sign-in sessions are listed and "log out
//! everywhere" ends them (embedded store and Redis). The browser test is console_browser.rs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::redis_server::RedisServer;
use common::revocation::{self, assert_revoked, client, env, token, Gw, ADMIN_TOKEN};
use common::{Reply, TestGateway, Upstream};
use reqwest::Method;
use serde_json::{json, Value};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A request to the admin listener with optional console cookie, CSRF header and JSON body.
async fn call(
    gw: &Gw,
    method: Method,
    path: &str,
    cookie: Option<&str>,
    csrf: Option<&str>,
    body: Option<Value>,
) -> Reply {
    call_at(&gw.admin_url(""), method, path, cookie, csrf, body).await
}

/// [`call`] on the admin listener at `base` (`http://ADDR`).
async fn call_at(
    base: &str,
    method: Method,
    path: &str,
    cookie: Option<&str>,
    csrf: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut req = client().request(method, format!("{base}{path}"));
    if let Some(c) = cookie {
        req = req.header("cookie", format!("portcullis_console={c}"));
    }
    if let Some(t) = csrf {
        req = req.header("x-portcullis-csrf", t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    TestGateway::send(req).await
}

/// Sign in with the admin token; returns (cookie value, CSRF token) and the reply.
async fn sign_in(gw: &Gw) -> (String, String, Reply) {
    sign_in_at(&gw.admin_url(""), ADMIN_TOKEN).await
}

/// Sign in at the admin listener `base` with `token`.
async fn sign_in_at(base: &str, token: &str) -> (String, String, Reply) {
    let r = call_at(
        base,
        Method::POST,
        "/ui/session",
        None,
        None,
        Some(json!({ "token": token })),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let set = r.header("set-cookie").expect("set-cookie").to_owned();
    let value = set
        .strip_prefix("portcullis_console=")
        .and_then(|v| v.split(';').next())
        .expect("cookie value")
        .to_owned();
    let csrf = r.json()["csrf"].as_str().expect("csrf").to_owned();
    (value, csrf, r)
}

fn assert_csp(r: &Reply, what: &str) {
    assert_eq!(r.header("content-security-policy"), Some(CSP), "{what}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
}

#[tokio::test]
async fn the_page_loads_without_credentials_under_a_strict_csp() {
    let (gw, _up, _dir) = env("").await;
    let page = call(&gw, Method::GET, "/ui/", None, None, None).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_csp(&page, "the page");
    let html = page.text();
    assert!(html.contains(r#"<label for="token">Admin token</label>"#));
    assert!(html.contains(r#"<button type="submit">Sign in</button>"#));
    // No inline script or style: every <script> has a src, no style attribute or element.
    for script in html.split("<script").skip(1) {
        let tag = script.split('>').next().unwrap();
        assert!(tag.contains("src=\"/ui/"), "inline script: <script{tag}>");
    }
    assert!(!html.contains("style=") && !html.contains("<style"));
    // Nothing from elsewhere (no CDN).
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"));
    for (path, ctype) in [
        ("/ui/console.js", "text/javascript; charset=utf-8"),
        ("/ui/console.css", "text/css; charset=utf-8"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let r = call(&gw, Method::GET, path, None, None, None).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(ctype), "{path}");
        assert_csp(&r, path);
    }
    let js = call(&gw, Method::GET, "/ui/console.js", None, None, None)
        .await
        .text();
    assert!(
        !js.contains("innerHTML") && !js.contains("eval("),
        "the script builds the DOM with textContent only"
    );
    // Every console answer carries the policy, refusals included.
    for (m, path) in [
        (Method::GET, "/ui/nope"),
        (Method::GET, "/ui/api/revocations"),
        (Method::GET, "/ui/session"),
        (Method::GET, "/ui"),
    ] {
        let r = call(&gw, m, path, None, None, None).await;
        assert_csp(&r, path);
    }
    let no_follow = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = TestGateway::send(no_follow.get(gw.admin_url("/ui"))).await;
    assert_eq!(redirect.status, 308);
    assert_eq!(redirect.header("location"), Some("/ui/"));
    gw.stop().await;
}

#[tokio::test]
async fn sign_in_sets_an_httponly_samesite_strict_cookie_for_the_console_only() {
    let (gw, _up, _dir) = env("").await;
    let (cookie, csrf, r) = sign_in(&gw).await;
    let set = r.header("set-cookie").unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui/", "Max-Age="] {
        assert!(set.contains(flag), "{flag} missing: {set}");
    }
    assert!(!set.contains("Domain"), "host-only cookie: {set}");
    assert!(!set.contains("Secure"), "plain-HTTP admin listener: {set}");
    assert_eq!(cookie.len(), 64);
    assert_eq!(r.json()["actor"], "admin");
    assert!(!r.text().contains(ADMIN_TOKEN) && !set.contains(ADMIN_TOKEN));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // The session answers who is signed in, with the same CSRF token.
    let who = call(&gw, Method::GET, "/ui/session", Some(&cookie), None, None).await;
    assert_eq!(who.status, 200);
    assert_eq!(who.json()["csrf"], csrf.as_str());

    // A wrong token: 401 and no cookie.
    let bad = call(
        &gw,
        Method::POST,
        "/ui/session",
        None,
        None,
        Some(json!({"token": "wrong-token-of-some-length"})),
    )
    .await;
    assert_eq!(bad.status, 401);
    assert!(bad.header("set-cookie").is_none());
    // A form post (what a cross-site page could send): refused before the token is looked at.
    let form = TestGateway::send(
        client()
            .post(gw.admin_url("/ui/session"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={ADMIN_TOKEN}")),
    )
    .await;
    assert_eq!(form.status, 400);
    assert!(form.header("set-cookie").is_none());
    gw.stop().await;
}

#[tokio::test]
async fn the_console_api_refuses_calls_without_a_session() {
    let (gw, _up, _dir) = env("").await;
    let none = call(&gw, Method::GET, "/ui/api/revocations", None, None, None).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["error"], "unauthorized");
    let forged = "ab".repeat(32);
    let r = call(&gw, Method::GET, "/ui/api/audit", Some(&forged), None, None).await;
    assert_eq!(r.status, 401);
    // The bearer token opens the admin API, not the console's: the console is cookie-only.
    let bearer = TestGateway::send(
        client()
            .get(gw.admin_url("/ui/api/revocations"))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(bearer.status, 401);
    // And the cookie does not open the bearer API.
    let (cookie, _, _) = sign_in(&gw).await;
    let r = call(&gw, Method::GET, "/revocations", Some(&cookie), None, None).await;
    assert_eq!(r.status, 401);
    let stats = call(&gw, Method::GET, "/stats", None, None, None).await;
    assert_eq!(stats.status, 401);
    gw.stop().await;
}

#[tokio::test]
async fn a_change_needs_the_csrf_header_and_the_consoles_own_origin() {
    let (gw, _up, _dir) = env("").await;
    let (cookie, csrf, _) = sign_in(&gw).await;
    let body = json!({"jti": "csrf-1", "reason": "test"});
    let none = call(
        &gw,
        Method::POST,
        "/ui/api/revocations",
        Some(&cookie),
        None,
        Some(body.clone()),
    )
    .await;
    assert_eq!(none.status, 403, "{none:?}");
    assert!(none.error().contains("x-portcullis-csrf"));
    let wrong = call(
        &gw,
        Method::POST,
        "/ui/api/revocations",
        Some(&cookie),
        Some(&"0".repeat(64)),
        Some(body.clone()),
    )
    .await;
    assert_eq!(wrong.status, 403);
    let foreign = TestGateway::send(
        client()
            .post(gw.admin_url("/ui/api/revocations"))
            .header("cookie", format!("portcullis_console={cookie}"))
            .header("x-portcullis-csrf", &csrf)
            .header("origin", "http://evil.example")
            .json(&body),
    )
    .await;
    assert_eq!(foreign.status, 403);
    assert_eq!(
        gw.count().await,
        (0, 0),
        "nothing was revoked by the refused calls"
    );

    // Reads need no CSRF header; the right header makes the change, audited as the label.
    let list = call(
        &gw,
        Method::GET,
        "/ui/api/revocations?jti=csrf-1",
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(list.status, 200);
    let same_origin = TestGateway::send(
        client()
            .post(gw.admin_url("/ui/api/revocations"))
            .header("cookie", format!("portcullis_console={cookie}"))
            .header("x-portcullis-csrf", &csrf)
            .header("origin", format!("http://{}", gw.admin))
            .json(&body),
    )
    .await;
    assert_eq!(same_origin.status, 201, "{same_origin:?}");
    assert_eq!(same_origin.json()["actor"], "admin");
    let audit = gw
        .admin(Method::GET, "/audit?jti=csrf-1", None)
        .await
        .json();
    assert_eq!(audit["items"][0]["actor"], "admin");
    assert_eq!(audit["items"][0]["reason"], "test");
    assert_eq!(gw.count().await, (1, 0));

    // Sign-out needs the CSRF header too, then the cookie opens nothing.
    let out = call(
        &gw,
        Method::DELETE,
        "/ui/session",
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(out.status, 403);
    let out = call(
        &gw,
        Method::DELETE,
        "/ui/session",
        Some(&cookie),
        Some(&csrf),
        None,
    )
    .await;
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = call(
        &gw,
        Method::GET,
        "/ui/api/revocations",
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(after.status, 401);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_samples_move_under_load() {
    let (gw, _up, _dir) = env("").await;
    let good = token("alice", "stats-1");
    // Until a sample shows the traffic: 200s, and 401s counted by reason.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let (mut ok, mut missing) = (0u64, 0u64);
    while (ok == 0 || missing == 0) && tokio::time::Instant::now() < deadline {
        for _ in 0..5 {
            assert_eq!(gw.get(&good).await.status, 200);
            let r = TestGateway::send(client().get(format!("http://{}/api", gw.proxy))).await;
            assert_eq!(r.status, 401);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let s = gw.admin(Method::GET, "/stats", None).await;
        assert_eq!(s.status, 200);
        let s = s.json();
        assert_eq!(s["window_secs"], 900);
        for sample in s["samples"].as_array().unwrap() {
            ok += sample["status"]["2xx"].as_u64().unwrap();
            missing += sample["auth_failures"]["missing"].as_u64().unwrap_or(0);
            if sample["status"]["2xx"].as_u64().unwrap() > 0 {
                assert!(sample["p50_ms"].as_f64().is_some(), "{sample}");
            }
        }
    }
    assert!(
        ok > 0 && missing > 0,
        "no sample saw the load (2xx {ok}, missing {missing})"
    );
    let s = gw.admin(Method::GET, "/stats", None).await.json();
    let routes = s["routes"].as_array().unwrap();
    assert!(
        routes
            .iter()
            .any(|r| r["route"] == "/" && r["requests_total"].as_u64() > Some(0)),
        "{routes:?}"
    );
    // `since` returns only newer samples.
    let last = s["samples"].as_array().unwrap().last().unwrap()["t"]
        .as_u64()
        .unwrap();
    let newer = gw
        .admin(Method::GET, &format!("/stats?since={last}"), None)
        .await
        .json();
    assert!(newer["samples"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["t"].as_u64() > Some(last)));
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------
// A user's sessions and "log out everywhere".
// ---------------------------------------------------------------------------------------

async fn login(proxy: SocketAddr) -> (String, String) {
    let r = TestGateway::send(
        client()
            .post(format!("http://{proxy}/auth/login"))
            .json(&json!({"username": "alice", "password": "wonderland"})),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let b = r.json();
    (
        b["access_token"].as_str().unwrap().to_owned(),
        b["refresh_token"].as_str().unwrap().to_owned(),
    )
}

async fn sessions_and_logout_everywhere(store: &str) {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let users = common::users_toml(&[("u-1", "alice", "wonderland")]);
    std::fs::write(dir.path().join("users.toml"), users).unwrap();
    let extra = format!("{store}\n[signin]\nusers_file = \"users.toml\"\nsigning_kid = \"hs1\"\n");
    let gw = Gw::start(dir.path(), &up.url(), &extra).await;
    let (a1, _) = login(gw.proxy).await;
    let (a2, r2) = login(gw.proxy).await;
    let (cookie, csrf, _) = sign_in(&gw).await;
    let list = call(
        &gw,
        Method::GET,
        "/ui/api/users/u-1/sessions",
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(list.status, 200, "{list:?}");
    let list = list.json();
    assert_eq!(list["count"], 2, "{list}");
    assert_eq!(list["sessions"][0]["access_tokens"], 1);
    assert!(!list.to_string().contains(&r2), "never a refresh token");
    let nobody = gw.admin(Method::GET, "/users/nobody/sessions", None).await;
    assert_eq!(nobody.json()["count"], 0);

    let out = call(
        &gw,
        Method::POST,
        "/ui/api/users/u-1/logout",
        Some(&cookie),
        Some(&csrf),
        Some(json!({"reason": "phone stolen"})),
    )
    .await;
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.json()["actor"], "admin");
    for t in [&a1, &a2] {
        assert_revoked(&gw.get(t).await, "an access token of a logged-out user");
    }
    let refresh = TestGateway::send(
        client()
            .post(format!("http://{}/auth/refresh", gw.proxy))
            .json(&json!({"refresh_token": r2})),
    )
    .await;
    assert_eq!(refresh.status, 401, "the session ended: {refresh:?}");
    let list = gw
        .admin(Method::GET, "/users/u-1/sessions", None)
        .await
        .json();
    assert_eq!(list["count"], 0, "{list}");
    let audit = gw.admin(Method::GET, "/audit?sub=u-1", None).await.json();
    let rec = &audit["items"][0];
    assert_eq!(
        (
            rec["kind"].as_str(),
            rec["actor"].as_str(),
            rec["reason"].as_str()
        ),
        (Some("sub"), Some("admin"), Some("phone stolen"))
    );
    // A new login afterwards works (the subject revocation covers tokens up to now only).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (fresh, _) = login(gw.proxy).await;
    assert_eq!(gw.get(&fresh).await.status, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_sessions_are_listed_and_logged_out_everywhere_embedded_store() {
    sessions_and_logout_everywhere("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_sessions_are_listed_and_logged_out_everywhere_in_redis() {
    let redis = RedisServer::start();
    let store = format!(
        "[revocation]\nstore = \"{}\"\nkey_prefix = \"pcs\"\ntimeout = \"2s\"\n",
        redis.url()
    );
    sessions_and_logout_everywhere(&store).await;
}

#[tokio::test]
async fn without_signin_the_sessions_endpoint_says_so() {
    let (gw, _up, _dir) = env("").await;
    let r = gw.admin(Method::GET, "/users/u-1/sessions", None).await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("[signin]"));
    // Log out everywhere still revokes the subject (tokens not issued by sign-in).
    let t = revocation::token("u-1", "x-1");
    let r = gw.admin(Method::POST, "/users/u-1/logout", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_revoked(&gw.get(&t).await, "the subject was revoked");
    gw.stop().await;
}

#[tokio::test]
async fn reload_from_the_console_shows_notes_or_the_refusal_and_a_removed_credential_ends_its_sessions(
) {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bob_token = "bob-admin-token-0123456789";
    std::fs::write(dir.path().join("bob.admin"), bob_token).unwrap();
    // Keys right after `config_text`'s `[admin]` table belong to it.
    let with_bob = revocation::config_text(
        &up.url(),
        "tokens = [{ label = \"oncall-bob\", token_file = \"bob.admin\" }]\n",
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &with_bob).unwrap();
    let config = portcullis::Config::load(&path).unwrap();
    let gw = common::Setup::new().start_with(config).await;
    let base = format!("http://{}", gw.admin_addr().unwrap());
    let (bob, _, r) = sign_in_at(&base, bob_token).await;
    assert_eq!(r.json()["actor"], "oncall-bob");
    let (admin, csrf, _) = sign_in_at(&base, ADMIN_TOKEN).await;

    let ok = call_at(
        &base,
        Method::POST,
        "/ui/api/reload",
        Some(&admin),
        Some(&csrf),
        None,
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["status"], "reloaded");
    assert!(ok.json()["notes"].is_array());

    // Bob's credential removed: his console session ends with it, the other one lives on.
    std::fs::write(&path, revocation::config_text(&up.url(), "")).unwrap();
    let ok = call_at(
        &base,
        Method::POST,
        "/ui/api/reload",
        Some(&admin),
        Some(&csrf),
        None,
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let r = call_at(&base, Method::GET, "/ui/api/audit", Some(&bob), None, None).await;
    assert_eq!(r.status, 401, "a session of a removed credential: {r:?}");
    let r = call_at(
        &base,
        Method::GET,
        "/ui/api/audit",
        Some(&admin),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 200);

    // A broken file: refused with the reason, the running config stays.
    std::fs::write(&path, "[listen]\naddr = 12\n").unwrap();
    let refused = call_at(
        &base,
        Method::POST,
        "/ui/api/reload",
        Some(&admin),
        Some(&csrf),
        None,
    )
    .await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(
        refused.json()["reason"].as_str().unwrap().contains("addr"),
        "{refused:?}"
    );
    let r = call_at(
        &base,
        Method::GET,
        "/ui/api/audit",
        Some(&admin),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "the previous configuration stays in force");
    gw.shutdown().await;
}
