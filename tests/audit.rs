//! The revocation audit trail (issue 17), outside-in: `POST /revocations` with a reason,
//! labelled admin credentials as the actor, the client IP, `GET /revocations` by original
//! identifier with every filter and the cursor, `GET /audit` in time order, the trail
//! across `kill -9` of the real binary and across a compaction of the revocation log, and
//! `portcullis revocations list --sub` as a table and as JSON.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;

use common::revocation::{
    assert_passes, assert_revoked, client, client_from, config_text, env, store_path, token,
    token_with, Gw, ADMIN_TOKEN,
};
use common::{tokens, TestGateway, Upstream};
use serde_json::{json, Value};

const BOB_TOKEN: &str = "bob-oncall-admin-token-0123456789";

/// `[admin] tokens`: a second credential labelled `oncall-bob` (the text lands in the
/// `[admin]` table of `config_text`).
const BOB: &str = "tokens = [{ label = \"oncall-bob\", token_file = \"bob.token\" }]\n";

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn ids(v: &Value) -> HashSet<String> {
    items(v)
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_revocations_shows_the_jti_just_revoked_with_who_when_and_why() {
    let (gw, _up, _dir) = env("").await;
    let before = tokens::now();
    let entry = gw
        .revoke(json!({ "jti": "incident-42", "reason": "laptop stolen" }))
        .await;
    assert_eq!(entry["reason"], "laptop stolen");
    assert_eq!(entry["actor"], "admin");
    assert_eq!(entry["audited"], true);
    assert_revoked(&gw.get(&token("alice", "incident-42")).await, "revoked jti");

    let page = gw
        .admin(reqwest::Method::GET, "/revocations", None)
        .await
        .json();
    let list = items(&page);
    assert_eq!(list.len(), 1, "{page}");
    let item = &list[0];
    assert_eq!(item["id"], "incident-42", "{item}");
    assert_eq!(item["kind"], "jti");
    assert_eq!(item["action"], "revoke");
    assert_eq!(item["actor"], "admin");
    assert_eq!(item["ip"], "127.0.0.1");
    assert_eq!(item["reason"], "laptop stolen");
    assert_eq!(item["exp"], entry["exp"]);
    let time = item["time"].as_u64().expect("time");
    assert!(time >= before && time <= tokens::now(), "{item}");
    assert!(
        item.get("sub").is_some(),
        "sub is present (null: unknown) {item}"
    );

    let audit = gw.admin(reqwest::Method::GET, "/audit", None).await;
    assert_eq!(audit.status, 200, "{audit:?}");
    let records = items(&audit.json());
    assert_eq!(records.len(), 1);
    for field in [
        "time", "action", "kind", "id", "sub", "actor", "ip", "reason", "exp",
    ] {
        assert!(records[0].get(field).is_some(), "{field} in {}", records[0]);
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_credentials_are_the_actor_and_every_filter_selects() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("bob.token"), format!("{BOB_TOKEN}\n")).expect("token");
    let gw = Gw::start(dir.path(), &up.url(), BOB).await;
    let t0 = tokens::now();

    // Bob, from another address, revokes alice's every session.
    let bob = client_from("127.0.0.7");
    let r = TestGateway::reply(
        bob.post(gw.admin_url("/revocations"))
            .bearer_auth(BOB_TOKEN)
            .json(&json!({ "sub": "alice", "reason": "phished" }))
            .send()
            .await
            .expect("bob revokes"),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    // The admin revokes one of carol's tokens by handing it over (sub known), and a bare jti.
    let mut claims = tokens::claims("carol");
    claims["jti"] = json!("carol-7");
    claims["iat"] = json!(t0 - 5);
    gw.revoke(json!({ "token": token_with(claims), "reason": "token in a log file" }))
        .await;
    gw.revoke(json!({ "jti": "x-9" })).await;

    let get = |q: &str| {
        let path = format!("/revocations?{q}");
        let gw = &gw;
        async move {
            let r = gw.admin(reqwest::Method::GET, &path, None).await;
            assert_eq!(r.status, 200, "{path}: {r:?}");
            r.json()
        }
    };
    let v = get("sub=alice").await;
    assert_eq!(ids(&v), HashSet::from(["alice".to_owned()]), "{v}");
    let alice = &items(&v)[0];
    assert_eq!(alice["kind"], "sub");
    assert_eq!(alice["actor"], "oncall-bob");
    assert_eq!(alice["ip"], "127.0.0.7");
    assert_eq!(alice["reason"], "phished");

    let v = get("sub=carol").await;
    assert_eq!(ids(&v), HashSet::from(["carol-7".to_owned()]), "{v}");
    assert_eq!(items(&v)[0]["kind"], "token");
    assert_eq!(items(&v)[0]["sub"], "carol");
    let v = get("jti=carol-7").await;
    assert_eq!(ids(&v), HashSet::from(["carol-7".to_owned()]), "{v}");
    let v = get("jti=x-9").await;
    assert_eq!(ids(&v), HashSet::from(["x-9".to_owned()]), "{v}");
    let v = get("actor=oncall-bob").await;
    assert_eq!(ids(&v), HashSet::from(["alice".to_owned()]), "{v}");
    let v = get("actor=admin").await;
    assert_eq!(
        ids(&v),
        HashSet::from(["carol-7".to_owned(), "x-9".to_owned()])
    );
    let v = get(&format!("since={}", t0 + 3600)).await;
    assert!(items(&v).is_empty(), "{v}");
    let v = get("since=2020-01-01T00:00:00Z").await;
    assert_eq!(ids(&v).len(), 3, "{v}");
    let v = get("kind=sub&since=2020-01-01T00:00:00Z").await;
    assert_eq!(ids(&v), HashSet::from(["alice".to_owned()]), "{v}");

    // The same filters on the trail.
    let a = gw
        .admin(reqwest::Method::GET, "/audit?actor=oncall-bob", None)
        .await
        .json();
    assert_eq!(ids(&a), HashSet::from(["alice".to_owned()]), "{a}");
    let a = gw
        .admin(reqwest::Method::GET, "/audit?sub=carol", None)
        .await
        .json();
    assert_eq!(ids(&a), HashSet::from(["carol-7".to_owned()]), "{a}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrevoke_is_audited_and_leaves_the_listing() {
    let (gw, _up, _dir) = env("").await;
    gw.revoke(json!({ "jti": "oops-1", "reason": "wrong token" }))
        .await;
    gw.revoke(json!({ "sub": "dora" })).await;
    assert_eq!(gw.delete("/revocations/jti/oops-1").await.status, 204);
    assert_eq!(gw.delete("/revocations/sub/dora").await.status, 204);
    assert_passes(&gw.get(&token("eve", "oops-1")).await, "un-revoked");

    let v = gw
        .admin(reqwest::Method::GET, "/revocations?jti=oops-1", None)
        .await
        .json();
    assert!(items(&v).is_empty(), "{v}");
    let v = gw
        .admin(reqwest::Method::GET, "/revocations", None)
        .await
        .json();
    assert!(items(&v).is_empty(), "{v}");

    let a = gw.admin(reqwest::Method::GET, "/audit", None).await.json();
    let seen: Vec<(String, String)> = items(&a)
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or("").to_owned(),
                r["id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("revoke".into(), "oops-1".into()),
            ("revoke".into(), "dora".into()),
            ("unrevoke".into(), "oops-1".into()),
            ("unrevoke".into(), "dora".into()),
        ]
    );
    let times: Vec<u64> = items(&a)
        .iter()
        .filter_map(|r| r["time"].as_u64())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert_eq!(items(&a)[2]["actor"], "admin");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_listings_page_with_a_cursor() {
    let (gw, _up, _dir) = env("").await;
    let n = 7;
    for i in 0..n {
        gw.revoke(json!({ "jti": format!("page-{i}"), "reason": "batch" }))
            .await;
    }
    for (base, expect_order) in [("/audit?", true), ("/revocations?actor=admin&", false)] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..=n {
            let mut path = format!("{base}limit=2");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let v = gw.admin(reqwest::Method::GET, &path, None).await;
            assert_eq!(v.status, 200, "{path}: {v:?}");
            let v = v.json();
            assert!(items(&v).len() <= 2);
            seen.extend(
                items(&v)
                    .iter()
                    .filter_map(|i| i["id"].as_str().map(str::to_owned)),
            );
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let expected: Vec<String> = (0..n).map(|i| format!("page-{i}")).collect();
        if expect_order {
            assert_eq!(seen, expected, "{base}: the trail pages in time order");
        } else {
            let got: HashSet<_> = seen.iter().cloned().collect();
            assert_eq!(got.len(), seen.len(), "{base}: an entry on two pages");
            assert_eq!(got, expected.into_iter().collect::<HashSet<_>>(), "{base}");
        }
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reasons_and_queries_are_refused_and_change_nothing() {
    let (gw, _up, _dir) = env("").await;
    let long = "x".repeat(257);
    let r = gw
        .admin(
            reqwest::Method::POST,
            "/revocations",
            Some(json!({ "jti": "too-long", "reason": long })),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("256"), "{r:?}");
    assert_eq!(gw.count().await, (0, 0));
    // Exactly 256 bytes is fine.
    gw.revoke(json!({ "jti": "just-fits", "reason": "y".repeat(256) }))
        .await;
    for path in [
        "/revocations?since=yesterday",
        "/revocations?colour=red",
        "/audit?kind=jti",
        "/audit?limit=0",
        "/audit?cursor=nonsense",
    ] {
        let r = gw.admin(reqwest::Method::GET, path, None).await;
        assert_eq!(r.status, 400, "{path}: {r:?}");
    }
    let r = TestGateway::reply(
        client()
            .get(gw.admin_url("/audit"))
            .send()
            .await
            .expect("audit"),
    )
    .await;
    assert_eq!(r.status, 401, "the trail needs the admin token");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_survives_kill_9_and_a_compaction_of_the_revocation_log() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_text(&up.url(), "[log]\nformat = \"json\"\nlevel = \"info\"\n"),
    )
    .expect("write config");
    let http = client();
    let gw = common::GatewayProcess::spawn(&config).await;
    for (jti, reason) in [("k-1", "first"), ("k-2", "second"), ("k-3", "undone")] {
        let r = http
            .post(format!("http://{}/revocations", gw.admin_addr()))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "jti": jti, "reason": reason }))
            .send()
            .await
            .expect("revoke");
        assert_eq!(r.status().as_u16(), 201);
    }
    let r = http
        .delete(format!("http://{}/revocations/jti/k-3", gw.admin_addr()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("unrevoke");
    assert_eq!(r.status().as_u16(), 204);
    tokio::task::spawn_blocking(move || gw.kill_9())
        .await
        .expect("kill");

    // The journal is a file of its own beside the log.
    let journal = dir.path().join("data/revocations.log.audit");
    assert!(journal.exists(), "{} missing", journal.display());

    let gw = common::GatewayProcess::spawn(&config).await;
    let audit: Value = http
        .get(format!("http://{}/audit", gw.admin_addr()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    let reasons: Vec<String> = items(&audit)
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or("-").to_owned())
        .collect();
    assert_eq!(reasons.len(), 4, "{audit}");
    assert_eq!(&reasons[..3], ["first", "second", "undone"], "{audit}");
    drop(gw);

    // Compact the revocation log (what the maintenance task does when it has grown), then
    // start again: the metadata is still there and the revocations still in force.
    {
        let (log, replay) = portcullis::revocation::Log::open(store_path(dir.path())).expect("log");
        log.compact(&replay.dict, tokens::now(), 60)
            .expect("compaction");
    }
    let gw = Gw::start(dir.path(), &up.url(), "").await;
    let v = gw
        .admin(reqwest::Method::GET, "/revocations", None)
        .await
        .json();
    assert_eq!(
        ids(&v),
        HashSet::from(["k-1".to_owned(), "k-2".to_owned()]),
        "{v}"
    );
    assert!(items(&v).iter().all(|i| i["reason"].is_string()), "{v}");
    assert_revoked(&gw.get(&token("zed", "k-1")).await, "after compaction");
    assert_passes(&gw.get(&token("zed", "k-3")).await, "undone stays undone");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_a_subjects_revocations_as_a_table_and_as_json() {
    let (gw, _up, _dir) = env("").await;
    let admin_url = format!("http://{}", gw.admin);
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        a.extend(["--admin".into(), admin_url.clone()]);
        a.extend(["--admin-token".into(), ADMIN_TOKEN.into()]);
        a
    };
    let (ok, _, err) = cli(args(&[
        "revoke",
        "--sub",
        "alice",
        "--reason",
        "left the company",
    ]))
    .await;
    assert!(ok, "{err}");
    let mut claims = tokens::claims("alice");
    claims["jti"] = json!("alice-phone");
    gw.revoke(json!({ "token": token_with(claims) })).await;
    gw.revoke(json!({ "sub": "mallory" })).await;

    let (ok, out, err) = cli(args(&["revocations", "list", "--sub", "alice"])).await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("TIME"), "{out}");
    for col in [
        "ACTION", "KIND", "ID", "SUB", "ACTOR", "IP", "REASON", "EXP",
    ] {
        assert!(lines[0].contains(col), "{col} in {out}");
    }
    assert_eq!(lines.len(), 3, "header and two rows: {out}");
    assert!(out.contains("left the company"), "{out}");
    assert!(out.contains("alice-phone"), "{out}");
    assert!(!out.contains("mallory"), "{out}");

    let (ok, out, err) = cli(args(&["revocations", "list", "--sub", "alice", "--json"])).await;
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).expect("--json prints JSON");
    assert_eq!(
        ids(&v),
        HashSet::from(["alice".to_owned(), "alice-phone".to_owned()])
    );

    let (ok, out, err) = cli(args(&["revocations", "audit", "--actor", "admin"])).await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 4, "header and three records: {out}");
    gw.stop().await;
}

/// Cluster mode: the trail is the Redis list `P:audit`, so a revoke made on one instance is
/// listed, with its actor and reason, by another, and survives both restarting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cluster_mode_every_instance_lists_the_shared_trail() {
    let redis = common::redis_server::RedisServer::start();
    let up = Upstream::start().await;
    let extra = format!(
        "[revocation]\nstore = \"{}\"\nkey_prefix = \"audit-test\"\ntimeout = \"1s\"\n",
        redis.url()
    );
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = Gw::start(da.path(), &up.url(), &extra).await;
    let b = Gw::start(db.path(), &up.url(), &extra).await;
    a.revoke(json!({ "jti": "shared-1", "reason": "seen on a paste site" }))
        .await;
    let v = b
        .admin(reqwest::Method::GET, "/revocations?jti=shared-1", None)
        .await;
    assert_eq!(v.status, 200, "{v:?}");
    let v = v.json();
    assert_eq!(ids(&v), HashSet::from(["shared-1".to_owned()]), "{v}");
    assert_eq!(items(&v)[0]["reason"], "seen on a paste site");
    assert_eq!(b.delete("/revocations/jti/shared-1").await.status, 204);
    a.stop().await;
    b.stop().await;

    let c = Gw::start(da.path(), &up.url(), &extra).await;
    let trail = c.admin(reqwest::Method::GET, "/audit", None).await.json();
    let actions: Vec<&str> = items(&trail)
        .iter()
        .map(|r| {
            if r["action"] == "revoke" {
                "revoke"
            } else {
                "unrevoke"
            }
        })
        .collect();
    assert_eq!(actions, ["revoke", "unrevoke"], "{trail}");
    c.stop().await;
}

/// The CLI as the old revocation helper ran it: (success, stdout, stderr).
async fn cli(args: Vec<String>) -> (bool, String, String) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = common::cli(&args).await;
    (out.ok, out.stdout, out.stderr)
}
