//! Revocation propagation across a cluster: revoke a fresh token on instance A, then poll
//! instance C with it until C refuses it (401), and time the gap from A's 201 to C's 401.
//!
//! Driven by `scripts/bench-propagation.sh`, which starts Redis and the gateways:
//!
//! ```text
//! bench_propagation --admin-a 127.0.0.1:P --proxy-c 127.0.0.1:Q --admin-token T \
//!     --secret S [--count 1000]
//! ```
//!
//! Each round mints a new HS256 token (`jti` unique per round), checks that C lets it
//! through (anything but 401: the gateways' upstream may be down, the token is still
//! accepted), revokes its `jti` through A's admin API, takes the time when the 201 arrives,
//! then sends the token to C back to back on one keep-alive connection until a 401 comes
//! back; the propagation figure is the time that 401 arrived. It therefore includes one
//! request round trip to C, so it overstates the true figure by up to that much.

// A measurement program: a failed unwrap aborts the run, which is what it should do. The
// gateway itself denies these (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

struct Args {
    admin_a: String,
    proxy_c: String,
    admin_token: String,
    secret: String,
    count: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let (mut admin_a, mut proxy_c, mut admin_token, mut secret) = (None, None, None, None);
    let mut count = 1000;
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--admin-a" => admin_a = Some(value),
            "--proxy-c" => proxy_c = Some(value),
            "--admin-token" => admin_token = Some(value),
            "--secret" => secret = Some(value),
            "--count" => count = value.parse().context("--count")?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(Args {
        admin_a: admin_a.context("--admin-a")?,
        proxy_c: proxy_c.context("--proxy-c")?,
        admin_token: admin_token.context("--admin-token")?,
        secret: secret.context("--secret")?,
        count,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let key = EncodingKey::from_secret(args.secret.as_bytes());
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k".into());
    // One connection to each side, kept alive: the rounds measure the gateways, not TCP.
    let http = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(5))
        .build()?;
    let revoke_url = format!("http://{}/revocations", args.admin_a);
    let proxy_url = format!("http://{}/bench", args.proxy_c);
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();

    let mut propagation = Vec::with_capacity(args.count);
    let mut admin = Vec::with_capacity(args.count);
    let mut polls = 0u64;
    let started = Instant::now();
    for round in 0..args.count {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let jti = format!("bench-{run}-{round}");
        let claims = json!({ "sub": "bench", "jti": jti, "iat": now, "exp": now + 600 });
        let token = encode(&header, &claims, &key)?;

        let before = http.get(&proxy_url).bearer_auth(&token).send().await?;
        if before.status() == 401 {
            bail!("round {round}: instance C refused the token before it was revoked");
        }
        before.bytes().await?;

        let sent = Instant::now();
        let r = http
            .post(&revoke_url)
            .bearer_auth(&args.admin_token)
            .json(&json!({ "jti": jti, "exp": now + 600 }))
            .send()
            .await?;
        if r.status() != 201 {
            bail!("round {round}: revoke answered {}", r.status());
        }
        r.bytes().await?;
        let acked = Instant::now();
        admin.push(acked - sent);

        loop {
            let r = http.get(&proxy_url).bearer_auth(&token).send().await?;
            polls += 1;
            let status = r.status();
            r.bytes().await?;
            if status == 401 {
                propagation.push(acked.elapsed());
                break;
            }
            if acked.elapsed() > Duration::from_secs(5) {
                bail!("round {round}: instance C still accepts the token 5 s after the revoke");
            }
        }
    }
    let elapsed = started.elapsed();
    propagation.sort();
    admin.sort();
    println!(
        "{} revokes on A, each until C refused the token ({:.1} s, {:.1} polls of C per revoke)",
        args.count,
        elapsed.as_secs_f64(),
        polls as f64 / args.count as f64
    );
    for (name, v) in [
        ("propagation A 201 -> C 401", &propagation),
        ("admin revoke on A (to 201)", &admin),
    ] {
        println!(
            "{name}: p50 {}  p90 {}  p99 {}  max {}",
            ms(percentile(v, 50.0)),
            ms(percentile(v, 90.0)),
            ms(percentile(v, 99.0)),
            ms(percentile(v, 100.0)),
        );
    }
    Ok(())
}
