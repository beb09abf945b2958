//! Sign-in over real sockets: login (JSON and form), the same answer for a wrong password
//! and an unknown user, rate limits with `Retry-After`, the single-session policy, refresh
//! rotation and reuse detection, logout and logout-all, and `portcullis users` editing the
//! users file that the gateway then signs in from.
//!
//! Users files are written here with cheap argon2id parameters (in the PHC string), so
//! password checks stay fast; the gateway verifies with whatever cost a hash names.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Stdio;

use base64::Engine as _;
use common::{hmac_key_toml, users_toml, Env, Reply, Setup, TestGateway};
use serde_json::{json, Value};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A gateway with sign-in (alice/wonderland = u-1, bob/builder = u-2), `extra` lines in
/// `[signin]`, and one JWT route to an echoing upstream.
async fn env(extra: &str) -> Env {
    let setup = Setup::new();
    setup.write(
        "users.toml",
        users_toml(&[("u-1", "alice", "wonderland"), ("u-2", "bob", "builder")]),
    );
    start(setup, "users.toml", extra).await
}

async fn start(setup: Setup, users_file: &str, extra: &str) -> Env {
    Env::start(setup, &config(users_file, extra)).await
}

/// Sign-in from `users_file` with `extra` lines in `[signin]`, one JWT route to `{up}`.
fn config(users_file: &str, extra: &str) -> String {
    format!(
        "{{listen}}\n{}\n[revocation]\nstore = \"memory\"\n\n[signin]\nusers_file = \"{users_file}\"\nsigning_kid = \"hs1\"\n{extra}\n\n[[routes]]\nprefix = \"/\"\nupstream = \"{{up}}\"\nauth = \"jwt\"\n",
        hmac_key_toml("hs1", "HS256", SECRET),
    )
}

async fn post(gw: &TestGateway, path: &str, body: Value, bearer: Option<&str>) -> Reply {
    let mut req = gw.h1().post(gw.url(path)).json(&body);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    TestGateway::send(req).await
}

async fn login(gw: &TestGateway, username: &str, password: &str) -> Reply {
    post(
        gw,
        "/auth/login",
        json!({ "username": username, "password": password }),
        None,
    )
    .await
}

/// Log in and return `(access_token, refresh_token)`, failing the test on anything but 200.
async fn session(gw: &TestGateway, username: &str, password: &str) -> (String, String) {
    let r = login(gw, username, password).await;
    assert_eq!(r.status, 200, "login {username}: {}", r.text());
    let j = r.json();
    (
        j["access_token"].as_str().expect("access_token").to_owned(),
        j["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned(),
    )
}

async fn refresh(gw: &TestGateway, refresh_token: &str) -> Reply {
    post(
        gw,
        "/auth/refresh",
        json!({ "refresh_token": refresh_token }),
        None,
    )
    .await
}

/// The status of a proxied request made with `token`.
async fn proxied(gw: &TestGateway, token: &str) -> u16 {
    gw.get("/api/me", Some(token)).await.status
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("three segments");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
}

fn assert_invalid_grant(r: &Reply, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    assert_eq!(r.json()["error"], "invalid_grant", "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_issues_a_token_the_gateway_accepts_and_the_upstream_sees_the_user() {
    let Env { gw, up } = env("").await;
    let r = login(&gw, "alice", "wonderland").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let j = r.json();
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["expires_in"], 900, "access_ttl defaults to 15m");
    let refresh_token = j["refresh_token"].as_str().expect("refresh_token");
    assert_eq!(refresh_token.len(), 43, "256 bits, base64url");
    let access = j["access_token"].as_str().expect("access_token");
    let c = claims(access);
    assert_eq!(c["sub"], "u-1");
    let jti = c["jti"].as_str().expect("jti");
    assert_eq!(jti.len(), 32);
    assert!(jti.bytes().all(|b| b.is_ascii_hexdigit()), "{jti}");
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 900);
    assert_eq!(up.hits(), 0, "sign-in is answered by the gateway itself");

    let echo = gw.get("/api/me", Some(access)).await.echo();
    assert_eq!(echo.one("x-user-id"), Some("u-1"));

    // A form body works too, and each login gets its own jti.
    let form = gw
        .h1()
        .post(gw.url("/auth/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=bob&password=builder")
        .send()
        .await
        .expect("request");
    let form = TestGateway::reply(form).await;
    assert_eq!(form.status, 200, "{}", form.text());
    let bob = form.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&bob)["sub"], "u-2");
    assert_ne!(claims(&bob)["jti"], c["jti"]);

    // Only POST.
    let get = gw.get("/auth/login", None).await;
    assert_eq!(get.status, 405);
    assert_eq!(get.header("allow"), Some("POST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let Env { gw, up } = env("").await;
    let wrong = login(&gw, "alice", "not-it").await;
    let unknown = login(&gw, "mallory", "wonderland").await;
    assert_invalid_grant(&wrong, "wrong password");
    assert_eq!(wrong.status, unknown.status);
    assert_eq!(wrong.body, unknown.body, "{}", unknown.text());
    assert!(wrong.json().get("access_token").is_none());
    let missing = post(&gw, "/auth/login", json!({ "username": "alice" }), None).await;
    assert_eq!(missing.status, 400, "{}", missing.text());
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_attempts_are_rate_limited_per_username_with_retry_after() {
    let Env { gw, .. } = env("user_attempts_per_minute = 3").await;
    for i in 0..3 {
        assert_invalid_grant(&login(&gw, "alice", "guess").await, &format!("attempt {i}"));
    }
    let limited = login(&gw, "alice", "wonderland").await;
    assert_eq!(limited.status, 429, "{}", limited.text());
    let retry: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    // Another username from the same address is not affected.
    session(&gw, "bob", "builder").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_attempts_are_rate_limited_per_client_ip() {
    let Env { gw, .. } = env("ip_attempts_per_minute = 2").await;
    assert_invalid_grant(&login(&gw, "u1", "x").await, "first");
    assert_invalid_grant(&login(&gw, "u2", "x").await, "second");
    let limited = login(&gw, "alice", "wonderland").await;
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert!(limited.header("retry-after").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_session_per_user_a_new_login_revokes_the_previous_token() {
    let Env { gw, .. } = env("max_sessions_per_user = 1").await;
    let (first, first_refresh) = session(&gw, "alice", "wonderland").await;
    let (bob, _) = session(&gw, "bob", "builder").await;
    assert_eq!(proxied(&gw, &first).await, 200);
    let (second, _) = session(&gw, "alice", "wonderland").await;
    assert_eq!(
        proxied(&gw, &first).await,
        401,
        "the first token is revoked"
    );
    assert_eq!(proxied(&gw, &second).await, 200);
    assert_eq!(proxied(&gw, &bob).await, 200, "other users keep theirs");
    assert_invalid_grant(
        &refresh(&gw, &first_refresh).await,
        "the first session's refresh token",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_limit_both_logins_stay_valid() {
    let Env { gw, .. } = env("").await;
    let (first, _) = session(&gw, "alice", "wonderland").await;
    let (second, _) = session(&gw, "alice", "wonderland").await;
    assert_eq!(proxied(&gw, &first).await, 200);
    assert_eq!(proxied(&gw, &second).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_reuse_ends_the_whole_family() {
    let Env { gw, .. } = env("").await;
    let (a1, r1) = session(&gw, "alice", "wonderland").await;
    let (other, other_refresh) = session(&gw, "alice", "wonderland").await;

    let rotated = refresh(&gw, &r1).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let j = rotated.json();
    assert_eq!(j["token_type"], "Bearer");
    let a2 = j["access_token"].as_str().unwrap().to_owned();
    let r2 = j["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r2, r1, "rotated");
    assert_eq!(claims(&a2)["sub"], "u-1");
    assert_ne!(claims(&a2)["jti"], claims(&a1)["jti"]);
    assert_eq!(proxied(&gw, &a2).await, 200);

    // The spent token again: refused, and the family ends with every access token in it.
    assert_invalid_grant(&refresh(&gw, &r1).await, "reused refresh token");
    assert_eq!(proxied(&gw, &a2).await, 401);
    assert_eq!(proxied(&gw, &a1).await, 401);
    assert_invalid_grant(&refresh(&gw, &r2).await, "the family's current token");
    // Another session of the same user is a separate family.
    assert_eq!(proxied(&gw, &other).await, 200);
    assert_eq!(refresh(&gw, &other_refresh).await.status, 200);

    assert_invalid_grant(&refresh(&gw, "made-up").await, "unknown refresh token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_token_and_its_refresh_family_only() {
    let Env { gw, .. } = env("").await;
    let (a1, r1) = session(&gw, "alice", "wonderland").await;
    let (a2, r2) = session(&gw, "alice", "wonderland").await;
    let out = post(&gw, "/auth/logout", json!({}), Some(&a1)).await;
    assert_eq!(out.status, 200, "{}", out.text());
    assert_eq!(proxied(&gw, &a1).await, 401);
    assert_invalid_grant(&refresh(&gw, &r1).await, "the logged-out family");
    assert_eq!(proxied(&gw, &a2).await, 200, "the other session stays");
    assert_eq!(refresh(&gw, &r2).await.status, 200);
    // Logging out again with the revoked token, or with none, is refused.
    assert_eq!(
        post(&gw, "/auth/logout", json!({}), Some(&a1)).await.status,
        401
    );
    assert_eq!(post(&gw, "/auth/logout", json!({}), None).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_revokes_every_session_of_the_user() {
    let Env { gw, .. } = env("").await;
    let (a1, _) = session(&gw, "alice", "wonderland").await;
    let (a2, r2) = session(&gw, "alice", "wonderland").await;
    let (bob, bob_refresh) = session(&gw, "bob", "builder").await;
    let out = post(&gw, "/auth/logout-all", json!({}), Some(&a1)).await;
    assert_eq!(out.status, 200, "{}", out.text());
    assert_eq!(proxied(&gw, &a1).await, 401);
    assert_eq!(proxied(&gw, &a2).await, 401);
    assert_invalid_grant(&refresh(&gw, &r2).await, "alice's other family");
    assert_eq!(proxied(&gw, &bob).await, 200);
    assert_eq!(refresh(&gw, &bob_refresh).await.status, 200);
    // Signing in again afterwards works.
    let (fresh, _) = session(&gw, "alice", "wonderland").await;
    assert_eq!(proxied(&gw, &fresh).await, 200);
}

/// `portcullis users ...` with `stdin` piped in; returns (success, stderr).
fn users_cli(args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = common::portcullis(&["users"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run portcullis");
    // The CLI may refuse (a taken username) and exit before it reads the password, so a
    // broken pipe here is expected and the exit status tells what happened.
    match child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("write stdin: {e}"),
        _ => {}
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_cli_edits_the_file_the_gateway_signs_in_from() {
    let setup = Setup::new();
    let file = setup.path("users.toml");
    let f = file.to_str().unwrap();
    let add = |id: &'static str, name: &'static str, pw: &'static str| {
        users_cli(&["add", "--file", f, "--id", id, "--username", name], pw)
    };
    let (ok, err) = add("u-9", "carol", "first-pass\n");
    assert!(ok, "{err}");
    let (ok, err) = add("u-10", "dave", "dave-pass\n");
    assert!(ok, "{err}");
    let (ok, err) = add("u-11", "carol", "x\n");
    assert!(!ok, "a taken username is refused");
    assert!(err.contains("carol"), "{err}");
    let (ok, err) = users_cli(
        &["passwd", "--file", f, "--username", "carol"],
        "second-pass\n",
    );
    assert!(ok, "{err}");
    let (ok, err) = users_cli(&["remove", "--file", f, "--username", "dave"], "");
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("$argon2id$"), "{text}");
    assert!(!text.contains("second-pass"), "only the hash is stored");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let Env { gw, .. } = start(setup, "users.toml", "").await;
    let (token, _) = session(&gw, "carol", "second-pass").await;
    assert_eq!(claims(&token)["sub"], "u-9");
    assert_invalid_grant(&login(&gw, "carol", "first-pass").await, "old password");
    assert_invalid_grant(&login(&gw, "dave", "dave-pass").await, "removed user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_bcrypt_hashes_sign_in() {
    let setup = Setup::new();
    let hash = bcrypt::hash("legacy-pass", 4)
        .expect("bcrypt")
        .replacen("$2b$", "$2y$", 1);
    setup.write(
        "users.json",
        json!({ "users": [{ "id": "u-7", "username": "erin", "password_hash": hash }] })
            .to_string(),
    );
    let Env { gw, .. } = start(setup, "users.json", "").await;
    let (token, _) = session(&gw, "erin", "legacy-pass").await;
    assert_eq!(proxied(&gw, &token).await, 200);
    assert_invalid_grant(&login(&gw, "erin", "legacy-pas").await, "wrong password");
}

/// A config reload re-reads the users file but keeps the live sessions: a refresh token
/// issued before the reload still rotates, and the single-session policy still ends a
/// session started before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_picks_up_new_users_and_keeps_sessions() {
    let setup = Setup::new();
    setup.write("users.toml", users_toml(&[("u-1", "alice", "wonderland")]));
    let Env { gw, .. } =
        Env::start_from_file(setup, &config("users.toml", "max_sessions_per_user = 1\n")).await;

    let (before_access, before_refresh) = session(&gw, "alice", "wonderland").await;
    let r = login(&gw, "carol", "c-pass").await;
    assert_eq!(r.status, 401, "carol does not exist yet");

    let dir = gw.dir.path();
    std::fs::write(
        dir.join("users.toml"),
        users_toml(&[("u-1", "alice", "wonderland"), ("u-3", "carol", "c-pass")]),
    )
    .expect("write users");
    gw.reload().await.expect("reload");

    let carol = login(&gw, "carol", "c-pass").await;
    assert_eq!(carol.status, 200, "the reload read the new users file");
    let carol_refresh = carol.json()["refresh_token"].as_str().unwrap().to_owned();
    let rotated = refresh(&gw, &before_refresh).await;
    assert_eq!(
        rotated.status,
        200,
        "a session from before the reload: {}",
        rotated.text()
    );
    let rotated_access = rotated.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(proxied(&gw, &rotated_access).await, 200);
    let r = login(&gw, "alice", "wonderland").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        proxied(&gw, &rotated_access).await,
        401,
        "single-session policy across the reload"
    );
    assert_eq!(proxied(&gw, &before_access).await, 401);

    // A user removed from the file cannot refresh any more.
    std::fs::write(
        dir.join("users.toml"),
        users_toml(&[("u-1", "alice", "wonderland")]),
    )
    .expect("write users");
    gw.reload().await.expect("reload");
    let r = refresh(&gw, &carol_refresh).await;
    assert_eq!(r.status, 401, "{}", r.text());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_can_issue_encrypted_access_tokens() {
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]);
    let env = env(&format!(
        "encrypt_kid = \"enc1\"\n\n[[jwt.decryption_keys]]\nkid = \"enc1\"\nalg = \"dir\"\nenc = \"A256GCM\"\nkey = \"{key}\"\n"
    ))
    .await;
    let (access, _) = session(&env.gw, "alice", "wonderland").await;
    let parts: Vec<&str> = access.split('.').collect();
    assert_eq!(parts.len(), 5, "a compact JWE: {access}");
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[0])
            .expect("header"),
    )
    .expect("header JSON");
    assert_eq!(header["alg"], "dir");
    assert_eq!(header["enc"], "A256GCM");
    assert_eq!(header["cty"], "JWT");
    assert!(!access.contains("u-1"), "the user id must not be readable");
    let r = env.gw.get("/api/me", Some(&access)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.echo().one("x-user-id"), Some("u-1"));
    let r = post(&env.gw, "/auth/logout", json!({}), Some(&access)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        proxied(&env.gw, &access).await,
        401,
        "logout revokes the encrypted token"
    );
    let _ = &env.up;
}
