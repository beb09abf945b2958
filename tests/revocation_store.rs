//! The durable revocation store, over real sockets: every acknowledged revocation survives
//! `kill -9` of the real binary; a torn last record, damaged records and trailing garbage
//! lose only what they damaged; a file that is not a store is refused; expired entries are
//! swept while live ones stay in force.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::revocation::{
    assert_passes, assert_revoked, client, config_text, env, key_hex, proxy_get,
    run_expecting_exit, spawn_process_with, store_path, token, token_with, Gw, ADMIN_TOKEN,
    TIMEOUT,
};
use common::{tokens, wait_until, Upstream};
use portcullis::revocation::record::{HEADER_LEN, RECORD_LEN};
use portcullis::Config;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Expiry and durability.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_entries_are_swept_and_live_ones_kept() {
    let (gw, _up, _dir) =
        env("[jwt]\nleeway = \"0s\"\n\n[revocation]\nsweep_interval = \"1s\"\n").await;
    let now = tokens::now();
    gw.revoke(json!({ "jti": "short-lived", "exp": now + 2 }))
        .await;
    gw.revoke(json!({ "jti": "long-lived", "exp": now + 3600 }))
        .await;
    // A token whose exp already passed (leeway 0) goes at the next sweep.
    gw.revoke(json!({ "jti": "already-expired", "exp": now - 5 }))
        .await;
    // Until its token expires, the short-lived entry is in force.
    let mut short = tokens::claims("lena");
    short["exp"] = json!(now + 2);
    short["jti"] = json!("short-lived");
    assert_revoked(
        &gw.get(&token_with(short)).await,
        "short-lived, not yet expired",
    );
    let mut counts = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let c = gw.count().await;
        counts.push(c.0);
        if c == (1, 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expired entries not swept within 15 s (token counts seen: {counts:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // What is left is the live one, still in force.
    let page = gw
        .admin(reqwest::Method::GET, "/revocations", None)
        .await
        .json();
    assert_eq!(page["items"][0]["key"], key_hex("long-lived"), "{page}");
    assert_revoked(&gw.get(&token("lena", "long-lived")).await, "live entry");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_is_skipped_and_every_earlier_one_loads() {
    const K: usize = 12;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let jtis: Vec<String> = (0..K).map(|i| format!("torn-{i}")).collect();
    let gw = Gw::start(dir.path(), &up.url(), "").await;
    // One at a time, so record i in the file is jtis[i].
    for jti in &jtis {
        gw.revoke(json!({ "jti": jti })).await;
    }
    gw.stop().await;

    let path = store_path(dir.path());
    let full = (HEADER_LEN + K * RECORD_LEN) as u64;
    assert_eq!(std::fs::metadata(&path).expect("store").len(), full);
    // A crash in the middle of writing the last record: half of it reached the disk.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open store");
    file.set_len(full - (RECORD_LEN as u64) / 2)
        .expect("truncate");
    drop(file);

    let gw = Gw::start(dir.path(), &up.url(), "").await;
    for jti in &jtis[..K - 1] {
        assert_revoked(&gw.get(&token("mia", jti)).await, jti);
    }
    assert_passes(
        &gw.get(&token("mia", &jtis[K - 1])).await,
        "the torn revocation was never complete",
    );
    assert_passes(&gw.get(&token("mia", "never-revoked")).await, "control");
    assert_eq!(gw.count().await, ((K - 1) as u64, 0));
    // The torn tail was cut, so the next append lands on a record boundary...
    assert_eq!(
        std::fs::metadata(&path).expect("store").len(),
        full - RECORD_LEN as u64
    );
    gw.revoke(json!({ "jti": "after-repair" })).await;
    gw.stop().await;

    // ...and survives the next restart with everything else.
    let gw = Gw::start(dir.path(), &up.url(), "").await;
    assert_revoked(
        &gw.get(&token("mia", "after-repair")).await,
        "appended after repair",
    );
    assert_revoked(&gw.get(&token("mia", &jtis[0])).await, "first record");
    assert_eq!(gw.count().await, (K as u64, 0));
    gw.stop().await;
}

/// Revokes `jtis` one at a time (so record i in the file is jtis[i]) on a gateway over
/// `dir`, then stops it.
async fn revoke_all(dir: &std::path::Path, up: &Upstream, jtis: &[String]) {
    let gw = Gw::start(dir, &up.url(), "").await;
    for jti in jtis {
        gw.revoke(json!({ "jti": jti })).await;
    }
    gw.stop().await;
}

/// The `*.damaged-*` copies beside the store.
fn damaged_copies(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.join("data"))
        .expect("store folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains(".damaged-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_the_middle_refuses_the_start_and_recover_keeps_every_intact_record() {
    const K: usize = 40;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let jtis: Vec<String> = (0..K).map(|i| format!("garbled-{i}")).collect();
    revoke_all(dir.path(), &up, &jtis).await;

    // Flip a byte inside record 3, insert 7 bytes inside record 10 (which misaligns every
    // later record for a reader of fixed-size records), and append garbage.
    let path = store_path(dir.path());
    let mut bytes = std::fs::read(&path).expect("read store");
    bytes[HEADER_LEN + 3 * RECORD_LEN + 5] ^= 0xff;
    let at = HEADER_LEN + 10 * RECORD_LEN + 3;
    bytes.splice(at..at, [0x55u8; 7]);
    bytes.extend_from_slice(&[0xab; 50]);
    std::fs::write(&path, &bytes).expect("write store");

    // Without `recover`: refused, with the file, the offset and the way out; nothing changed.
    let config = Config::from_toml(&config_text(&up.url(), ""), dir.path()).expect("config");
    let err = match portcullis::start(config).await {
        Ok(_) => panic!("started on a damaged store without being told to recover"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(&path.display().to_string()), "{err}");
    let first = HEADER_LEN + 3 * RECORD_LEN;
    assert!(err.contains(&format!("offset {first}")), "{err}");
    assert!(err.contains("portcullis run --recover"), "{err}");
    assert!(err.contains("recover = true"), "{err}");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        bytes,
        "the store was changed"
    );
    assert!(damaged_copies(dir.path()).is_empty());

    // With `recover = true`: every intact record is in force, the damage preserved.
    let gw = Gw::start(dir.path(), &up.url(), "[revocation]\nrecover = true\n").await;
    for (i, jti) in jtis.iter().enumerate() {
        let r = gw.get(&token("noah", jti)).await;
        if i == 3 || i == 10 {
            assert_passes(&r, "the damaged record is lost (and reported)");
        } else {
            assert_revoked(&r, jti);
        }
    }
    assert_eq!(gw.count().await, ((K - 2) as u64, 0));
    gw.revoke(json!({ "jti": "after-recovery" })).await;
    gw.stop().await;
    let copies = damaged_copies(dir.path());
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(std::fs::read(&copies[0]).expect("read copy"), bytes);

    // The store is clean now: a plain restart loads it.
    let gw = Gw::start(dir.path(), &up.url(), "").await;
    assert_revoked(
        &gw.get(&token("noah", "after-recovery")).await,
        "after recovery",
    );
    assert_eq!(gw.count().await, ((K - 1) as u64, 0));
    gw.stop().await;

    // A file that is not a revocation log at all is refused, not overwritten.
    std::fs::write(&path, b"this is not a revocation log, do not eat it").expect("write");
    let config = Config::from_toml(&config_text(&up.url(), ""), dir.path()).expect("config");
    let err = match portcullis::start(config).await {
        Ok(_) => panic!("started on a file that is not a revocation log"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("revocation"), "{err}");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        b"this is not a revocation log, do not eat it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_a_damaged_store_and_starts_with_recover() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let jtis: Vec<String> = (0..20).map(|i| format!("bin-{i}")).collect();
    revoke_all(dir.path(), &up, &jtis).await;
    let path = store_path(dir.path());
    let mut bytes = std::fs::read(&path).expect("read store");
    let at = HEADER_LEN + 5 * RECORD_LEN + 1;
    bytes.splice(at..at, *b"inserted");
    std::fs::write(&path, &bytes).expect("write store");
    let config = dir.path().join("config.toml");
    let text = config_text(&up.url(), "[log]\nformat = \"json\"\n");
    std::fs::write(&config, text).expect("write config");

    let (ok, stderr) = run_expecting_exit(&config, &[])
        .await
        .expect("the gateway started on a damaged store");
    assert!(!ok);
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains("--recover"), "{stderr}");

    let p = spawn_process_with(&config, &["--recover"]).await;
    let http = client();
    for (i, jti) in jtis.iter().enumerate() {
        let r = proxy_get(&http, p.addr, &token("olga", jti)).await;
        if i == 5 {
            assert_passes(&r, "the record the bytes went into");
        } else {
            assert_revoked(&r, jti);
        }
    }
    drop(p);
    assert_eq!(damaged_copies(dir.path()).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_on_the_same_store_is_refused_naming_the_file_and_pid() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.toml");
    let text = config_text(&up.url(), "[log]\nformat = \"json\"\n");
    std::fs::write(&config, text).expect("write config");
    let first = common::GatewayProcess::spawn(&config).await;
    let pid = first.pid();
    let path = store_path(dir.path());

    let (ok, stderr) = run_expecting_exit(&config, &[])
        .await
        .expect("a second gateway started on a store another one holds");
    assert!(!ok);
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains(&format!("PID {pid}")), "{stderr}");

    // In-process too, and the first one keeps serving revokes.
    let cfg = Config::from_toml(&config_text(&up.url(), ""), dir.path()).expect("config");
    let err = match portcullis::start(cfg).await {
        Ok(_) => panic!("a second in-process gateway opened a store another process holds"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("in use by another process"), "{err}");
    let http = client();
    let r = http
        .post(format!("http://{}/revocations", first.admin_addr()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "jti": "still-mine" }))
        .send()
        .await
        .expect("revoke");
    assert!(r.status().is_success(), "{}", r.status());

    // The lock goes with the process, however it ends: the next one starts at once.
    first.kill_9();
    let gw = Gw::start(dir.path(), &up.url(), "").await;
    assert_revoked(
        &gw.get(&token("pia", "still-mine")).await,
        "kept across the hand-over",
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_every_acknowledged_revocation() {
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
    let admin = |addr: SocketAddr, path: &str| format!("http://{addr}{path}");

    // Before the crash: a subject revocation, and a revocation that is undone.
    let old_token = token("olga", "olga-1");
    let undone = token("olga-friend", "undone-1");
    for body in [json!({ "sub": "olga" }), json!({ "jti": "undone-1" })] {
        let r = http
            .post(admin(gw.admin_addr(), "/revocations"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("revoke");
        assert_eq!(r.status().as_u16(), 201);
    }
    let r = http
        .delete(admin(gw.admin_addr(), "/revocations/jti/undone-1"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("unrevoke");
    assert_eq!(r.status().as_u16(), 204);

    // Eight clients revoke as fast as they can; the process is killed with revocations in
    // flight, once at least 40 have been acknowledged.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..8 {
        let (http, acked, url) = (
            http.clone(),
            acked.clone(),
            admin(gw.admin_addr(), "/revocations"),
        );
        workers.push(tokio::spawn(async move {
            for i in 0.. {
                let jti = format!("crash-{w}-{i}");
                let sent = http
                    .post(&url)
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&json!({ "jti": jti }))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().as_u16() == 201 => {
                        acked.lock().expect("lock").push(jti);
                    }
                    Ok(r) => panic!("revoke answered {}", r.status()),
                    // The process died under us.
                    Err(_) => return,
                }
            }
        }));
    }
    let enough = wait_until(TIMEOUT, || acked.lock().expect("lock").len() >= 40).await;
    assert!(enough, "40 revocations not acknowledged within {TIMEOUT:?}");
    let pid = gw.pid();
    tokio::task::spawn_blocking(move || gw.kill_9())
        .await
        .expect("kill");
    for w in workers {
        w.await.expect("worker");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 40);

    // Restart on the same store: every acknowledged revocation is in force.
    let gw = common::GatewayProcess::spawn(&config).await;
    assert_ne!(gw.pid(), pid);
    for jti in &acked {
        let r = proxy_get(&http, gw.addr, &token("paul", jti)).await;
        assert_revoked(&r, &format!("acknowledged {jti} after kill -9"));
    }
    assert_revoked(
        &proxy_get(&http, gw.addr, &old_token).await,
        "subject revoked before kill -9",
    );
    assert_passes(
        &proxy_get(&http, gw.addr, &undone).await,
        "revocation undone before kill -9",
    );
    assert_passes(
        &proxy_get(&http, gw.addr, &token("paul", "never-revoked")).await,
        "control",
    );
    let count: Value = http
        .get(admin(gw.admin_addr(), "/revocations/count"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("count")
        .json()
        .await
        .expect("count json");
    let tokens_in_force = count["tokens"].as_u64().expect("tokens") as usize;
    // In-flight revocations may or may not have landed; acknowledged ones all did.
    assert!(tokens_in_force >= acked.len(), "{count} < {}", acked.len());
    assert!(tokens_in_force <= acked.len() + 8, "{count}");
    assert_eq!(count["subjects"], 1);
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_revokes_without_a_file_and_forgets_on_restart() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let extra = "[revocation]\nstore = \"memory\"\n";
    let gw = Gw::start(dir.path(), &up.url(), extra).await;
    let t = token("uma", "memory-1");
    gw.revoke(json!({ "jti": "memory-1" })).await;
    gw.revoke(json!({ "sub": "uma" })).await;
    assert_revoked(&gw.get(&t).await, "revoked in memory");
    assert_eq!(gw.delete("/revocations/jti/memory-1").await.status, 204);
    assert_revoked(&gw.get(&t).await, "still revoked through its subject");
    gw.stop().await;
    assert!(
        !dir.path().join("data").exists(),
        "the memory store wrote files"
    );

    // Documented: `store = "memory"` keeps nothing across a restart.
    let gw = Gw::start(dir.path(), &up.url(), extra).await;
    assert_eq!(gw.count().await, (0, 0));
    assert_passes(&gw.get(&t).await, "after a restart of a memory store");
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------
// A full disk.
// ---------------------------------------------------------------------------------------

/// Unmounts the test's tmpfs however the test ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Polls `check` every 50 ms until it holds, failing the test after [`TIMEOUT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of `portcullis_revocation_store_degraded`.
async fn degraded_gauge(gw: &Gw) -> String {
    let r = gw.admin(reqwest::Method::GET, "/metrics", None).await;
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_revocation_store_degraded "))
        .unwrap_or("missing")
        .to_owned()
}

/// Disk full: revokes are answered 503 and the instance reports itself degraded; once space
/// is freed it recovers by itself (no restart), and every acknowledged revocation holds.
/// Needs a small tmpfs, so root; skipped with a message where `mount` is not allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_degrades_the_store_and_it_recovers_once_space_is_freed() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mnt = dir.path().join("small-disk");
    std::fs::create_dir(&mnt).expect("mount point");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!(
            "SKIPPED: cannot mount a 256 KiB tmpfs here (needs root); disk-full test not run"
        );
        return;
    }
    let _unmount = Mounted(mnt.clone());
    let store = mnt.join("revocations.log");
    let extra = format!("[revocation]\nstore = \"{}\"\n", store.display());
    let gw = Gw::start(dir.path(), &up.url(), &extra).await;
    let mut acknowledged = vec!["before-full".to_string()];
    gw.revoke(json!({ "jti": "before-full" })).await;
    assert_eq!(
        gw.admin(reqwest::Method::GET, "/readyz", None).await.status,
        200
    );

    // Fill the disk.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let block = vec![0x5au8; 4096];
        while f.write_all(&block).and_then(|()| f.sync_all()).is_ok() {}
    }
    // The log's last page may still have room for a few records: revoke until refused.
    let mut refused = None;
    for i in 0..400 {
        let jti = format!("full-{i}");
        let r = gw
            .admin(
                reqwest::Method::POST,
                "/revocations",
                Some(json!({ "jti": jti })),
            )
            .await;
        match r.status {
            201 => acknowledged.push(jti),
            503 => {
                refused = Some(r);
                break;
            }
            other => panic!("revoke on a full disk answered {other}: {r:?}"),
        }
    }
    let refused = refused.expect("no revoke was refused on a full disk");
    assert!(
        refused.error().contains("safe to repeat")
            || refused.error().contains("nothing was revoked"),
        "{refused:?}"
    );
    assert_eq!(
        gw.admin(reqwest::Method::GET, "/readyz", None).await.status,
        503
    );
    eventually("degraded gauge 1", || async {
        degraded_gauge(&gw).await == "1"
    })
    .await;
    // Still refused while the disk stays full (after the back-off too).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = gw
        .admin(
            reqwest::Method::POST,
            "/revocations",
            Some(json!({ "jti": "still-full" })),
        )
        .await;
    assert_eq!(r.status, 503, "{r:?}");

    // Free the space: the store recovers by itself.
    std::fs::remove_file(&filler).expect("free space");
    eventually("ready again", || async {
        gw.admin(reqwest::Method::GET, "/readyz", None).await.status == 200
    })
    .await;
    eventually("degraded gauge 0", || async {
        degraded_gauge(&gw).await == "0"
    })
    .await;
    gw.revoke(json!({ "jti": "after-free" })).await;
    acknowledged.push("after-free".into());
    gw.stop().await;

    let gw = Gw::start(dir.path(), &up.url(), &extra).await;
    for jti in &acknowledged {
        assert_revoked(&gw.get(&token("uma", jti)).await, jti);
    }
    gw.stop().await;
}
