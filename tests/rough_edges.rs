//! Issue 15 part 3, the smaller things a new user hits, each tested from the outside:
//! `/metrics` content negotiation, `[identity] forward_token`, reload notes for every
//! restart-only setting, the `kind` vocabulary of the revocation API, and what a gateway
//! whose revocation state is not loaded tells a client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::tokens::{self, HS256_SECRET};
use common::{admin_request, hmac_key_toml, Env, Setup, TRACEPARENT, TRACESTATE};
use reqwest::Method;

const ADMIN_TOKEN: &str = "rough-edges-admin-token-0123456789";

fn config(extra_route: &str, extra: &str) -> String {
    format!(
        r#"{{listen}}
{keys}
[admin]
addr = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[revocation]
store = "memory"
{extra}
{extra_route}
[[routes]]
prefix = "/"
upstream = "{{up}}"
auth = "jwt"
"#,
        keys = hmac_key_toml("hs", "HS256", HS256_SECRET)
    )
}

async fn scrape(admin: &str, accept: Option<&str>) -> (String, String) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = client
        .get(format!("{admin}/metrics"))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
    (ctype, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_speak_prometheus_text_unless_openmetrics_is_asked_for() {
    let Env { gw, .. } = Env::start(Setup::new(), &config("", "")).await;
    let admin = gw.admin_url().unwrap();

    for accept in [None, Some("text/plain;version=0.0.4"), Some("*/*")] {
        let (ctype, text) = scrape(&admin, accept).await;
        assert!(
            ctype.starts_with("text/plain") && ctype.contains("version=0.0.4"),
            "{accept:?}: {ctype}"
        );
        assert!(
            !text.contains("# EOF"),
            "{accept:?}: OpenMetrics trailer in 0.0.4"
        );
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        // Present from the start, at zero, and typed as counters (not `untyped`).
        for family in [
            "portcullis_upstream_errors_total",
            "portcullis_config_reloads_total",
            "portcullis_auth_failures_total",
            "portcullis_jwks_refreshes_total",
            "portcullis_requests_total",
        ] {
            let samples: Vec<_> = scrape
                .samples
                .iter()
                .filter(|s| s.metric == family)
                .collect();
            assert!(!samples.is_empty(), "{family} missing at start:\n{text}");
            for s in samples {
                assert!(
                    matches!(s.value, prometheus_parse::Value::Counter(_)),
                    "{family} is not typed counter: {:?}",
                    s.value
                );
            }
        }
        let reloads_ok = scrape.samples.iter().find(|s| {
            s.metric == "portcullis_config_reloads_total" && s.labels.get("reason") == Some("ok")
        });
        assert!(
            matches!(reloads_ok.map(|s| &s.value), Some(prometheus_parse::Value::Counter(v)) if *v == 0.0)
        );
    }

    let (ctype, text) = scrape(
        &admin,
        Some("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3"),
    )
    .await;
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(text.ends_with("# EOF\n"));
    assert!(text.contains("# TYPE portcullis_upstream_errors counter"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_token_false_keeps_the_token_from_the_upstream_per_route_too() {
    // Default: today's behaviour, the upstream gets the client's Authorization.
    let Env { gw, .. } = Env::start(Setup::new(), &config("", "")).await;
    let token = tokens::hs256(Some("hs"), &tokens::claims("alice"));
    let r = gw.get("/api", Some(&token)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.echo().one("authorization"),
        Some(format!("Bearer {token}").as_str())
    );

    // `[identity] forward_token = false`, with one route turning it back on.
    let keep = r#"[[routes]]
prefix = "/keep"
upstream = "{up}"
auth = "jwt"
forward_token = true
"#;
    let Env { gw, .. } = Env::start(
        Setup::new(),
        &config(keep, "\n[identity]\nforward_token = false\n"),
    )
    .await;
    let r = gw.get("/api", Some(&token)).await;
    assert_eq!(r.status, 200);
    let echo = r.echo();
    assert_eq!(echo.one("authorization"), None, "token forwarded");
    assert_eq!(echo.one("x-user-id"), Some("alice"));
    let r = gw.get("/keep/x", Some(&token)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.echo().one("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_restart_only_setting_changed_by_a_reload_gets_a_note() {
    let Env { gw, up } = Env::start_from_file(Setup::new(), &config("", "")).await;
    let path = gw.dir.path().join("config.toml");
    let was = std::fs::read_to_string(&path).unwrap();
    // Unchanged: no notes.
    assert_eq!(gw.reload().await.unwrap(), Vec::<String>::new());

    let changed = was
        .replace(
            "[admin]\naddr = \"127.0.0.1:0\"",
            "[admin]\naddr = \"127.0.0.1:1\"",
        )
        .replace(
            "addr = \"127.0.0.1:0\"\ntls_cert",
            "addr = \"127.0.0.1:0\"\nworkers = 3\ntls_cert",
        )
        .replace("store = \"memory\"", "store = \"other.log\"")
        + "\n[limits]\nmax_connections = 77\n";
    assert_ne!(changed, was);
    std::fs::write(&path, changed).unwrap();
    let notes = gw.reload().await.unwrap();
    for key in [
        "admin.addr",
        "listen.workers",
        "limits.max_connections",
        "revocation.store",
    ] {
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with(key) && n.contains("restart")),
            "no note for {key}: {notes:?}"
        );
    }
    // The same through the admin API: notes as a JSON array.
    let r = admin_request(
        &gw.admin_url().unwrap(),
        ADMIN_TOKEN,
        Method::POST,
        "/reload",
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.json()["notes"].as_array().unwrap().len() >= 4,
        "{:?}",
        r.json()
    );
    drop(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_has_one_vocabulary_in_answers_filters_and_lists() {
    let Env { gw, .. } = Env::start(Setup::new(), &config("", "")).await;
    let admin = gw.admin_url().unwrap();
    let post = |body: serde_json::Value| {
        let admin = admin.clone();
        async move {
            let r = admin_request(
                &admin,
                ADMIN_TOKEN,
                Method::POST,
                "/revocations",
                Some(body),
            )
            .await;
            assert_eq!(r.status, 201, "{}", r.text());
            r.json()
        }
    };
    assert_eq!(post(serde_json::json!({"jti": "v-1"})).await["kind"], "jti");
    assert_eq!(
        post(serde_json::json!({"sub": "vera"})).await["kind"],
        "sub"
    );
    let mut claims = tokens::claims("walt");
    claims["jti"] = serde_json::json!("w-1");
    let whole = tokens::hs256(Some("hs"), &claims);
    assert_eq!(
        post(serde_json::json!({"token": whole})).await["kind"],
        "token"
    );

    let list = |q: &'static str| {
        let admin = admin.clone();
        async move { admin_request(&admin, ADMIN_TOKEN, Method::GET, q, None).await }
    };
    let kinds = |v: serde_json::Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut tokens_kinds = kinds(list("/revocations?kind=jti").await.json());
    tokens_kinds.sort();
    assert_eq!(tokens_kinds, ["jti", "token"]);
    assert_eq!(kinds(list("/revocations?kind=sub").await.json()), ["sub"]);
    assert_eq!(list("/revocations?kind=token").await.status, 200);
    // The other vocabulary is gone.
    let r = list("/revocations?kind=subject").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("jti, sub or token"), "{}", r.text());
    let audit = list("/audit").await.json();
    let mut audit_kinds = kinds(audit);
    audit_kinds.sort();
    assert_eq!(audit_kinds, ["jti", "sub", "token"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_is_kept_when_sent_and_created_when_not() {
    let Env { gw, .. } = Env::start(Setup::new(), &config("", "")).await;
    let token = tokens::hs256(Some("hs"), &tokens::claims("tara"));

    // Sent: the upstream gets it (and tracestate) as sent.
    let r = gw.get_with_trace_context("/t", &token).await;
    assert_eq!(r.status, 200);
    let echo = r.echo();
    assert_eq!(echo.one("traceparent"), Some(TRACEPARENT));
    assert_eq!(echo.one("tracestate"), Some(TRACESTATE));

    // Not sent (or invalid): created, well-formed, and sampled.
    for extra in [&[][..], &["traceparent: 00-garbage", "tracestate: a=b"][..]] {
        let r = gw.raw_get("/t", Some(&token), extra).await;
        assert_eq!(r.status, 200);
        let echo = r.echo();
        let tp = echo.one("traceparent").expect("a traceparent was created");
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!((parts[0], parts[3]), ("00", "01"), "{tp}");
        assert_eq!((parts[1].len(), parts[2].len()), (32, 16), "{tp}");
        assert!(tp[3..].bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
        assert_ne!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(echo.one("tracestate"), None, "tracestate of no trace kept");
        // The request id the client gets is the new trace's id.
        assert_eq!(r.header("x-request-id"), Some(parts[1]));
    }

    // An error body names the request and the trace it belongs to.
    let r = gw
        .raw_get(
            "/t",
            None,
            &[
                format!("traceparent: {TRACEPARENT}").as_str(),
                "x-request-id: req-42",
            ],
        )
        .await;
    assert_eq!(r.status, 401);
    let body = r.json();
    assert_eq!(body["request_id"], "req-42", "{body}");
    assert_eq!(
        body["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{body}"
    );
    assert_eq!(body["error"], "unauthorized", "{body}");
}

/// A plain-HTTP gateway process (binary) with sign-in, the access log and an admin API.
fn process_config(setup: &Setup, up: &str, format: &str) -> std::path::PathBuf {
    setup.write(
        "users.toml",
        common::users_toml(&[("u-1", "alice", "wonderland")]),
    );
    setup.write_config(&format!(
        r#"[listen]
addr = "127.0.0.1:0"

[log]
format = "{format}"
access_log = true

{keys}
[admin]
addr = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[revocation]
store = "memory"

[signin]
users_file = "users.toml"
signing_kid = "hs"

[[routes]]
prefix = "/"
upstream = "{up}"
auth = "jwt"
"#,
        keys = hmac_key_toml("hs", "HS256", HS256_SECRET)
    ))
}

/// The process log once `ready` holds of it (lines are copied to the file as written).
async fn wait_for_log(p: &common::GatewayProcess, ready: impl Fn(&str) -> bool) -> String {
    for _ in 0..200 {
        let log = p.log();
        if ready(&log) {
            return log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the log never got there:\n{}", p.log());
}

fn spawn_with_colour_default(config: &std::path::Path) -> common::GatewayProcess {
    // As an operator runs it: no NO_COLOR, stderr to a pipe (not a terminal).
    let mut cmd = common::portcullis(&["run", "--config", &config.display().to_string()]);
    cmd.env_remove("NO_COLOR");
    common::GatewayProcess::spawn_command(cmd, &config.with_file_name("gateway.log"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_log_has_no_colours_off_a_terminal_and_no_debug_values() {
    let up = common::Upstream::start().await;
    let setup = Setup::new();
    let path = process_config(&setup, &up.url(), "pretty");
    let p = tokio::task::spawn_blocking(move || spawn_with_colour_default(&path))
        .await
        .unwrap();
    let log = wait_for_log(&p, |log| log.contains("token --config")).await;
    assert!(
        !log.contains('\u{1b}'),
        "ANSI colours in a piped log:\n{log}"
    );
    let start = log
        .lines()
        .find(|l| l.contains("portcullis listening"))
        .unwrap();
    assert!(
        !start.contains("Some(") && !start.contains("None"),
        "Debug values in the start line: {start}"
    );
    assert!(
        start.contains(&format!("admin={}", p.admin.unwrap())),
        "{start}"
    );
    // The one command that mints a test token.
    assert!(
        log.lines()
            .any(|l| l.contains("token --config") && l.contains("--sub alice")),
        "no token command in the start log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_notes_as_an_array_the_signed_in_user_and_the_trace_id() {
    let up = common::Upstream::start().await;
    let setup = Setup::new();
    let path = process_config(&setup, &up.url(), "json");
    let p = common::GatewayProcess::spawn(&path).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{}", p.addr);

    let login = client
        .post(format!("{base}/auth/login"))
        .json(&serde_json::json!({"username": "alice", "password": "wonderland"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let token = tokens::hs256(Some("hs"), &tokens::claims("tara"));
    let r = client
        .get(format!("{base}/traced"))
        .bearer_auth(&token)
        .header("traceparent", TRACEPARENT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    std::fs::write(
        &path,
        std::fs::read_to_string(&path).unwrap() + "\n[limits]\nmax_connections = 77\n",
    )
    .unwrap();
    let r = admin_request(
        &format!("http://{}", p.admin.unwrap()),
        ADMIN_TOKEN,
        Method::POST,
        "/reload",
        None,
    )
    .await;
    assert_eq!(r.status, 200);

    let lines: Vec<serde_json::Value> = wait_for_log(&p, |log| {
        log.contains("configuration reloaded") && log.contains("/traced")
    })
    .await
    .lines()
    .filter_map(|l| serde_json::from_str(l).ok())
    .collect();
    let reload = lines
        .iter()
        .find(|l| l["message"] == "configuration reloaded")
        .unwrap();
    let notes = reload["notes"].as_array().expect("notes is an array");
    assert!(
        notes
            .iter()
            .any(|n| n.as_str().unwrap().starts_with("limits.max_connections")),
        "{reload}"
    );
    let access = |path: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "access" && l["path"] == path)
            .unwrap_or_else(|| panic!("no access line for {path}"))
            .clone()
    };
    assert_eq!(access("/auth/login")["user"], "u-1");
    let traced = access("/traced");
    assert_eq!(traced["user"], "tara");
    assert_eq!(traced["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
}
