//! API keys for trusted apps over real sockets: keys created through the admin API (and the
//! `portcullis apikey` CLI), accepted on key routes with the app id injected and the key
//! itself kept from the upstream; missing, wrong, malformed and revoked keys refused with
//! 401; routes needing both a token and a key; `x-client-id` never reaching an upstream
//! from a client; keys surviving a restart and a reload, with only digests on disk.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::upstream::hex;
use common::{hmac_key_toml, tokens, Env, Reply, Setup, TestGateway, Upstream, Upstreams};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const ADMIN_TOKEN: &str = "admin-token-for-api-key-tests";

/// Routes: `/open` public, `/keyed` key alone, `/user` token alone, `/both` token and key.
fn config(store: &str) -> String {
    let route = |prefix: &str, auth: &str, key: bool| {
        format!(
            "[[routes]]\nprefix = \"{prefix}\"\nupstream = \"{{up}}\"\nauth = \"{auth}\"\napi_key = {key}\n\n"
        )
    };
    format!(
        "{{listen}}\n{}\n[admin]\naddr = \"127.0.0.1:0\"\ntoken = \"{ADMIN_TOKEN}\"\n\n[revocation]\nstore = \"{store}\"\n\n{}{}{}{}",
        hmac_key_toml("hs1", "HS256", SECRET),
        route("/open", "public", false),
        route("/keyed", "public", true),
        route("/user", "jwt", false),
        route("/both", "jwt", true),
    )
}

/// A gateway with the memory store in front of a fresh upstream.
async fn env() -> Env {
    start(Setup::new(), Upstream::start().await, "memory").await
}

/// Start from a config file (so `POST /reload` has something to re-read).
async fn start<U: Upstreams>(setup: Setup, up: U, store: &str) -> Env<U> {
    Env::start_from_file_with(setup, up, &config(store)).await
}

/// The admin listener's base URL.
fn admin_of(gw: &TestGateway) -> String {
    gw.admin_url().expect("admin listener")
}

fn token(sub: &str) -> String {
    tokens::sign(
        Algorithm::HS256,
        Some("hs1"),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        &tokens::claims(sub),
    )
}

async fn admin_call(
    admin: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Reply {
    common::admin_request(admin, ADMIN_TOKEN, method, path, body).await
}

/// Create a key for `app` through the admin API; returns the whole 201 body.
async fn create(admin: &str, app: &str) -> Value {
    let r = admin_call(
        admin,
        reqwest::Method::POST,
        "/apikeys",
        Some(json!({ "app": app })),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

/// GET `path` with the key (when given) in `x-api-key` and the token (when given).
async fn get(gw: &TestGateway, path: &str, key: Option<&str>, token: Option<&str>) -> Reply {
    let mut req = gw.h1().get(gw.url(path));
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    TestGateway::send(req).await
}

fn assert_key_refused(r: &Reply, what: &str, missing: bool) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    let j = r.json();
    if missing {
        assert_eq!(j["error"], "unauthorized", "{what}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("ApiKey realm=\"portcullis\""),
            "{what}"
        );
    } else {
        assert_eq!(j["error"], "invalid_api_key", "{what}");
        assert_eq!(j["error_description"], "API key is invalid", "{what}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("ApiKey realm=\"portcullis\", error=\"invalid_key\""),
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_key_is_accepted_and_the_upstream_sees_the_app_not_the_key() {
    let Env { gw, up } = env().await;
    let admin = admin_of(&gw);
    let created = create(&admin, "mobile-ios").await;
    let key = created["key"].as_str().expect("key");
    assert!(key.starts_with("pck_") && key.len() == 47, "{key}");
    assert_eq!(created["app"], "mobile-ios");
    let id = created["id"].as_str().expect("id");
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert!(created["created"].as_u64().unwrap() >= tokens::now() - 5);

    let echo = get(&gw, "/keyed/orders", Some(key), None).await.echo();
    assert_eq!(echo.one("x-client-id"), Some("mobile-ios"));
    assert!(
        echo.spellings_of("x-api-key").is_empty(),
        "the key reached the upstream: {echo:?}"
    );
    assert_eq!(echo.path, "/keyed/orders");
    // h2 too.
    let r = gw
        .h2()
        .get(gw.url("/keyed/h2"))
        .header("X-Api-Key", key)
        .send()
        .await
        .unwrap();
    let echo = TestGateway::reply(r).await.echo();
    assert_eq!(echo.one("x-client-id"), Some("mobile-ios"));
    assert!(echo.all("x-api-key").is_empty());

    // A route that does not check keys forwards the header untouched (it may be the
    // upstream's own), and never invents a client id.
    let echo = get(&gw, "/open/x", Some(key), None).await.echo();
    assert_eq!(echo.one("x-api-key"), Some(key));
    assert!(echo.all("x-client-id").is_empty());
    assert_eq!(up.hits(), 3);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_wrong_malformed_and_revoked_keys_are_refused() {
    let Env { gw, up } = env().await;
    let admin = admin_of(&gw);
    let created = create(&admin, "batch").await;
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let other = create(&admin, "other-app").await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(get(&gw, "/keyed", Some(&key), None).await.status, 200);
    let hits = up.hits();

    assert_key_refused(&get(&gw, "/keyed", None, None).await, "missing", true);
    // Right format, unknown: a key of another gateway, or a guess.
    let mut wrong = key.clone().into_bytes();
    wrong[10] = if wrong[10] == b'A' { b'B' } else { b'A' };
    let wrong = String::from_utf8(wrong).unwrap();
    assert_key_refused(
        &get(&gw, "/keyed", Some(&wrong), None).await,
        "wrong",
        false,
    );
    assert_key_refused(
        &get(&gw, "/keyed", Some("letmein"), None).await,
        "malformed",
        false,
    );
    assert_key_refused(
        &get(&gw, "/keyed", Some(&format!("{key}A")), None).await,
        "one character longer",
        false,
    );
    let two = gw
        .raw_get(
            "/keyed",
            None,
            &[&format!("X-Api-Key: {key}"), &format!("x-api-key: {other}")],
        )
        .await;
    assert_key_refused(&two, "two copies", false);
    // The key as a bearer token is not a key.
    assert_key_refused(
        &get(&gw, "/keyed", None, Some(&key)).await,
        "key as bearer",
        true,
    );
    assert_eq!(up.hits(), hits, "a refused request reached the upstream");

    let r = admin_call(
        &admin,
        reqwest::Method::DELETE,
        &format!("/apikeys/{id}"),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_key_refused(
        &get(&gw, "/keyed", Some(&key), None).await,
        "revoked, very next request",
        false,
    );
    let r = admin_call(
        &admin,
        reqwest::Method::DELETE,
        &format!("/apikeys/{id}"),
        None,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(
        get(&gw, "/keyed", Some(&other), None).await.status,
        200,
        "the other key stays"
    );

    let metrics = admin_call(&admin, reqwest::Method::GET, "/metrics", None)
        .await
        .text();
    for reason in ["api_key_missing", "api_key_unknown", "api_key_malformed"] {
        assert!(
            metrics.contains(&format!(
                "portcullis_auth_failures_total{{reason=\"{reason}\"}}"
            )),
            "{reason}: {metrics}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_jwt_and_api_key_needs_both() {
    let Env { gw, up } = env().await;
    let admin = admin_of(&gw);
    let key = create(&admin, "web").await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let t = token("alice");
    let hits = up.hits();
    assert_key_refused(
        &get(&gw, "/both", None, Some(&t)).await,
        "token alone",
        true,
    );
    let key_alone = get(&gw, "/both", Some(&key), None).await;
    assert_eq!(key_alone.status, 401, "{}", key_alone.text());
    assert_eq!(
        key_alone.header("www-authenticate"),
        Some("Bearer realm=\"portcullis\"")
    );
    let forged = tokens::sign(
        Algorithm::HS256,
        Some("hs1"),
        &EncodingKey::from_secret(b"not-the-secret-not-the-secret-00"),
        &tokens::claims("alice"),
    );
    assert_eq!(
        get(&gw, "/both", Some(&key), Some(&forged)).await.status,
        401
    );
    assert_key_refused(
        &get(&gw, "/both", Some("pck_nope"), Some(&t)).await,
        "bad key, good token",
        false,
    );
    assert_eq!(up.hits(), hits, "a refused request reached the upstream");

    let echo = get(&gw, "/both/x", Some(&key), Some(&t)).await.echo();
    assert_eq!(echo.one("x-user-id"), Some("alice"));
    assert_eq!(echo.one("x-client-id"), Some("web"));
    assert!(echo.all("x-api-key").is_empty());
    // A token route without api_key ignores keys.
    let echo = get(&gw, "/user", None, Some(&t)).await.echo();
    assert_eq!(echo.one("x-user-id"), Some("alice"));
    assert!(echo.all("x-client-id").is_empty());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sent_client_id_never_reaches_the_upstream() {
    let Env { gw, .. } = env().await;
    let admin = admin_of(&gw);
    let key = create(&admin, "real-app").await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let t = token("bob");
    let spoof = [
        "x-client-id: evil-1",
        "X-Client-Id: evil-2",
        "X-CLIENT-ID: evil-3",
        "x_client_id: evil-4",
        "X_Client-Id: evil-5",
    ];
    let key_line = format!("X-Api-Key: {key}");
    for (path, token, with_key, want) in [
        ("/open", None, false, None),
        ("/user", Some(t.as_str()), false, None),
        ("/keyed", None, true, Some("real-app")),
        ("/both", Some(t.as_str()), true, Some("real-app")),
    ] {
        let mut extra: Vec<&str> = spoof.to_vec();
        if with_key {
            extra.push(&key_line);
        }
        let r = gw.raw_get(path, token, &extra).await;
        let echo = r.echo();
        let seen = echo.spellings_of("x-client-id");
        match want {
            None => assert!(seen.is_empty(), "{path}: {seen:?}"),
            Some(app) => assert_eq!(seen, vec![("x-client-id", app)], "{path}"),
        }
        // Over HTTP/2 as well, several copies.
        let mut req = gw.h2().get(gw.url(path));
        for v in ["evil-6", "evil-7"] {
            req = req.header("x-client-id", v);
        }
        if with_key {
            req = req.header("x-api-key", &key);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let echo = TestGateway::reply(req.send().await.unwrap()).await.echo();
        assert_eq!(
            echo.all("x-client-id"),
            want.into_iter().collect::<Vec<_>>(),
            "{path} h2"
        );
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_a_restart_and_a_reload_and_only_digests_are_stored() {
    let up = Upstream::start().await;
    let persist = tempfile::tempdir().unwrap();
    let store = persist.path().join("revocations.log");
    let store = store.to_str().unwrap();
    let Env { gw, .. } = start(Setup::new(), &up, store).await;
    let admin = admin_of(&gw);
    let kept = create(&admin, "kept-app").await;
    let gone = create(&admin, "gone-app").await;
    let kept_key = kept["key"].as_str().unwrap().to_owned();
    let gone_key = gone["key"].as_str().unwrap().to_owned();
    let r = admin_call(
        &admin,
        reqwest::Method::DELETE,
        &format!("/apikeys/{}", gone["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(r.status, 204);

    // A reload keeps the set.
    let r = admin_call(&admin, reqwest::Method::POST, "/reload", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        get(&gw, "/keyed", Some(&kept_key), None).await.status,
        200,
        "after reload"
    );

    // Listing shows ids and apps, never a key or digest.
    let list = admin_call(&admin, reqwest::Method::GET, "/apikeys", None).await;
    assert_eq!(list.status, 200);
    let j = list.json();
    assert_eq!(j["count"], 1, "{j}");
    assert_eq!(j["items"][0]["id"], kept["id"]);
    assert_eq!(j["items"][0]["app"], "kept-app");
    assert_eq!(j["items"][0]["created"], kept["created"]);
    assert!(j["items"][0].get("key").is_none(), "{j}");
    assert!(!list.text().contains("pck_"), "{}", list.text());
    gw.shutdown().await;

    // Beside the revocation log: digests only, private.
    let file = persist.path().join("apikeys.json");
    let text = std::fs::read_to_string(&file).expect("the key file is beside the revocation log");
    assert!(
        !text.contains(&kept_key) && !text.contains("pck_"),
        "{text}"
    );
    assert!(!text.contains(&kept_key[4..]), "{text}");
    let stored: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(stored["keys"].as_array().unwrap().len(), 1, "{text}");
    let digest = sha2_hex(kept_key.as_bytes());
    assert_eq!(stored["keys"][0]["sha256"], digest);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let Env { gw, .. } = start(Setup::new(), &up, store).await;
    let echo = get(&gw, "/keyed", Some(&kept_key), None).await.echo();
    assert_eq!(echo.one("x-client-id"), Some("kept-app"), "after restart");
    assert_key_refused(
        &get(&gw, "/keyed", Some(&gone_key), None).await,
        "revoked before restart",
        false,
    );
    gw.shutdown().await;

    // A damaged file stops the gateway from starting, naming it.
    std::fs::write(&file, "{ not json").unwrap();
    let setup = up.define(Setup::new());
    let path = setup.write_config(&config(store));
    let err = portcullis::start(portcullis::Config::load(&path).unwrap())
        .await
        .err()
        .expect("a corrupt key file is a start-up error");
    assert!(
        format!("{err:#}").contains(&file.display().to_string()),
        "{err:#}"
    );
}

fn sha2_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_refuses_bad_input_and_missing_credentials() {
    let Env { gw, .. } = env().await;
    let admin = admin_of(&gw);
    for (body, what) in [
        ("{not json", "bad JSON"),
        ("{}", "missing app"),
        (r#"{"app": ""}"#, "empty app"),
        (r#"{"app": "two words"}"#, "space"),
        (r#"{"app": "line\nbreak"}"#, "control character"),
        (r#"{"app": 7}"#, "not a string"),
        (r#"{"app": "a", "key": "pck_chosen"}"#, "unknown field"),
    ] {
        let r = reqwest::Client::new()
            .post(format!("{admin}/apikeys"))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{what}");
    }
    let r = reqwest::Client::new()
        .post(format!("{admin}/apikeys"))
        .json(&json!({"app": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = reqwest::Client::new()
        .get(format!("{admin}/apikeys"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let list = admin_call(&admin, reqwest::Method::GET, "/apikeys", None).await;
    assert_eq!(list.json()["count"], 0, "nothing was created");
    let r = admin_call(&admin, reqwest::Method::PUT, "/apikeys", None).await;
    assert_eq!(r.status, 405);
    gw.shutdown().await;
}

/// `portcullis apikey ...` against the running gateway; returns (success, stdout, stderr).
async fn cli(args: Vec<String>) -> (bool, String, String) {
    let mut cmd = common::portcullis(&["apikey"]);
    cmd.args(&args);
    let out = common::process::output(cmd).await;
    (out.ok, out.stdout, out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_lists_and_revokes_keys() {
    let Env { gw, .. } = env().await;
    let admin = admin_of(&gw);
    let common = |cmd: &str| -> Vec<String> {
        vec![
            cmd.into(),
            "--admin".into(),
            admin.clone(),
            "--admin-token".into(),
            ADMIN_TOKEN.into(),
        ]
    };
    let mut args = common("create");
    args.extend(["--app".into(), "cli-app".into()]);
    let (ok, out, err) = cli(args).await;
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(out.trim()).expect("JSON on stdout");
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(!err.contains(&key), "the key goes to stdout only: {err}");
    assert_eq!(
        get(&gw, "/keyed", Some(&key), None)
            .await
            .echo()
            .one("x-client-id"),
        Some("cli-app")
    );

    let (ok, out, err) = cli(common("list")).await;
    assert!(ok, "{err}");
    assert!(out.contains(&id) && out.contains("cli-app"), "{out}");
    assert!(!out.contains("pck_"), "{out}");

    let mut args = common("revoke");
    args.extend(["--id".into(), id.clone()]);
    let (ok, _, err) = cli(args.clone()).await;
    assert!(ok, "{err}");
    assert_key_refused(
        &get(&gw, "/keyed", Some(&key), None).await,
        "revoked by the CLI",
        false,
    );
    let (ok, _, err) = cli(args).await;
    assert!(!ok, "revoking twice fails");
    assert!(err.contains("404"), "{err}");

    let mut args = common("create");
    args.extend(["--app".into(), "bad app".into()]);
    let (ok, _, err) = cli(args).await;
    assert!(!ok && err.contains("400"), "{err}");
    gw.shutdown().await;
}
