//! Revokes per second through a Sentinel-managed Redis, with `min_replicas_ack = 0` and
//! `= 1`: starts a master, a replica and three `redis-sentinel` processes on loopback, then
//! for each setting a gateway in-process on `redis+sentinel://`, and drives its admin API
//! with `C` concurrent revokers for `S` seconds.
//!
//! `cargo run --release --example sentinel_revokes [-- C S]` (defaults 16 and 5). Needs
//! `redis-server` and `redis-sentinel` on PATH.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "admin-token-for-the-sentinel-measure";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("ephemeral port")
}

fn wait_up(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn server(dir: &std::path::Path, port: u16, of: Option<u16>) -> Proc {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(["--dbfilename", &format!("dump-{port}.rdb")])
        .stdout(Stdio::null());
    if let Some(m) = of {
        cmd.args(["--replicaof", "127.0.0.1", &m.to_string()]);
    }
    let p = Proc(cmd.spawn().expect("redis-server"));
    wait_up(port);
    p
}

fn sentinel(dir: &std::path::Path, master: u16) -> (Proc, u16) {
    let port = port();
    let conf = dir.join(format!("sentinel-{port}.conf"));
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {master} 2\n\
             sentinel down-after-milliseconds mymaster 1000\n",
            dir.display()
        ),
    )
    .expect("conf");
    let p = Proc(
        Command::new("redis-sentinel")
            .arg(&conf)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-sentinel"),
    );
    wait_up(port);
    (p, port)
}

async fn measure(url: &str, ack: u32, concurrency: usize, secs: u64) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n\n[[jwt.keys]]\nkid = \"k\"\nalg = \"HS256\"\n\
         secret = \"hs256-secret-for-the-sentinel-measure-0123\"\n\n[[routes]]\nprefix = \"/\"\n\
         upstream = \"http://127.0.0.1:9\"\nauth = \"jwt\"\n\n[admin]\naddr = \"127.0.0.1:0\"\n\
         token = \"{ADMIN_TOKEN}\"\n\n[revocation]\nstore = \"{url}\"\nkey_prefix = \"m{ack}\"\n\
         min_replicas_ack = {ack}\n\n[log]\nlevel = \"warn\"\n"
    );
    let config =
        portcullis::Config::from_toml(&text, dir.path()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let gw = portcullis::start(config).await?;
    let admin = gw.admin_addr().expect("admin");
    let http = reqwest::Client::new();
    // Wait until the instance is in step with Redis.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = http
            .get(format!("http://{admin}/readyz"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?;
        if r.status() == 200 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let (http, done, failed) = (http.clone(), done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < end {
                let r = http
                    .post(format!("http://{admin}/revocations"))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&serde_json::json!({ "jti": format!("m-{t}-{i}") }))
                    .send()
                    .await;
                i += 1;
                match r {
                    Ok(r) if r.status() == 201 => done.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await?;
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!(
        "min_replicas_ack = {ack}: {rate:.0} revokes/s ({} acknowledged, {} not, {concurrency} concurrent, {secs} s)",
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    gw.shutdown_with_grace(Duration::from_secs(2)).await;
    Ok(rate)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let concurrency: usize = args.next().map_or(Ok(16), |a| a.parse())?;
    let secs: u64 = args.next().map_or(Ok(5), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let (mp, rp) = (port(), port());
    let _master = server(dir.path(), mp, None);
    let _replica = server(dir.path(), rp, Some(mp));
    let sentinels: Vec<(Proc, u16)> = (0..3).map(|_| sentinel(dir.path(), mp)).collect();
    let url = format!(
        "redis+sentinel://{}/mymaster/0",
        sentinels
            .iter()
            .map(|(_, p)| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    std::thread::sleep(Duration::from_secs(2));
    for ack in [0, 1, 0, 1] {
        measure(&url, ack, concurrency, secs).await?;
    }
    Ok(())
}
