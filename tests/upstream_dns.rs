//! A target named by host name follows its DNS changes while the gateway runs (issue 16: "a
//! target that is a name follows its DNS changes within a minute"). The name moves from one
//! loopback address to another, same port, each with its own upstream; requests follow,
//! although the gateway's pooled connection to the old address is still open and the old
//! server still answers on it (a gateway that never re-resolves keeps using it).
//!
//! The name lives in a private `/etc/hosts`, which glibc's `getaddrinfo` reads on every
//! lookup (the resolver behind both the gateway's connections and its re-resolution): the
//! gateway binary runs in its own mount namespace (`unshare`) with a file of the test's
//! bind-mounted over `/etc/hosts`. The test tries an unprivileged user namespace first
//! (`unshare --user --map-root-user --mount`), then root's `unshare --mount`; where neither
//! works it prints why and skips.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::process::{portcullis_via, BinaryGateway, GatewayProcess};
use common::{Setup, Upstream};
use tokio::net::TcpListener;

/// The target's host name (`.test` is reserved: it never resolves anywhere else).
const NAME: &str = "api.dns-change.test";
const OLD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const NEW: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// How long the test waits for traffic to move: many `dns_refresh` periods (1 s here).
const FOLLOW_LIMIT: Duration = Duration::from_secs(30);

/// Bind-mounts `$0` over `/etc/hosts`, then runs the rest of the command line.
const WITH_HOSTS: &str = r#"mount --bind "$0" /etc/hosts && exec "$@""#;

/// The `unshare` options under which `hosts` can be bind-mounted over `/etc/hosts` (the
/// least privileged that works), or why none can.
fn private_hosts_namespace(hosts: &Path) -> Result<&'static [&'static str], String> {
    let want = std::fs::read_to_string(hosts).unwrap();
    let mut why = Vec::new();
    let attempts: [&'static [&'static str]; 2] = [
        &["unshare", "--user", "--map-root-user", "--mount"],
        &["unshare", "--mount"],
    ];
    for flags in attempts {
        let out = Command::new(flags[0])
            .args(&flags[1..])
            .args(["sh", "-c", WITH_HOSTS])
            .arg(hosts)
            .args(["cat", "/etc/hosts"])
            .output();
        match out {
            Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout) == want => {
                return Ok(flags)
            }
            Ok(o) => why.push(format!(
                "`{}`: {} {}",
                flags.join(" "),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => why.push(format!("`{}`: {e}", flags.join(" "))),
        }
    }
    Err(why.join("; "))
}

/// Listeners on `a` and `b` with one port number (the target's URL names one port). The
/// kernel picks the port for `a`; if another socket holds it on `b`, try again.
async fn same_port(a: Ipv4Addr, b: Ipv4Addr) -> (TcpListener, TcpListener) {
    for _ in 0..20 {
        let first = TcpListener::bind((a, 0))
            .await
            .expect("bind a loopback address");
        let port = first.local_addr().unwrap().port();
        if let Ok(second) = TcpListener::bind((b, port)).await {
            return (first, second);
        }
    }
    panic!("no port free on both {a} and {b}");
}

/// The machine's hosts file with `NAME` at `addr` (same length for either address).
fn hosts_text(system: &str, addr: Ipv4Addr) -> String {
    format!("{system}\n{addr} {NAME}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_target_follows_its_dns_change() {
    let setup = Setup::new();
    let system = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let hosts = setup.write("hosts", hosts_text(&system, OLD));
    let flags = match private_hosts_namespace(&hosts) {
        Ok(flags) => flags,
        Err(why) => {
            eprintln!(
                "SKIPPED a_named_target_follows_its_dns_change: cannot give the gateway a \
                 private /etc/hosts (needs unshare with user namespaces, or root): {why}"
            );
            return;
        }
    };

    let (old_listener, new_listener) = same_port(OLD, NEW).await;
    let port = old_listener.local_addr().unwrap().port();
    let old = Upstream::serve(old_listener);
    let new = Upstream::serve(new_listener);
    let config = setup.write_config(&format!(
        r#"{{listen}}
[[routes]]
prefix = "/"
upstream = "http://{NAME}:{port}"
auth = "public"
dns_refresh = "1s"
"#
    ));
    let mut wrapper: Vec<&str> = flags.to_vec();
    wrapper.extend(["sh", "-c", WITH_HOSTS, hosts.to_str().unwrap()]);
    let cmd = portcullis_via(&wrapper, &["run", "--config", config.to_str().unwrap()]);
    let log = setup.path("gateway.log");
    let process = tokio::task::spawn_blocking(move || GatewayProcess::spawn_command(cmd, &log))
        .await
        .unwrap();
    let gw = BinaryGateway { process, setup };
    let http = gw
        .builder()
        .timeout(common::CLIENT_TIMEOUT)
        .build()
        .unwrap();
    let get = |n: usize| {
        let (http, url) = (http.clone(), gw.url(&format!("/who/{n}")));
        async move {
            let r = http
                .get(url)
                .send()
                .await
                .expect("request through the gateway");
            r.status().as_u16()
        }
    };

    for n in 0..5 {
        assert_eq!(get(n).await, 200, "{}", gw.process.log());
    }
    assert_eq!(
        (old.hits(), new.hits()),
        (5, 0),
        "{NAME} resolves to {OLD}: every request goes there"
    );

    // The new text differs in one byte and has the same length, written over the old in
    // place: the bind mount follows the file's inode (a rename would leave it on the old
    // one), and a lookup reading during the write sees one address or the other.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(gw.setup.path("hosts"))
        .unwrap();
    f.write_all(hosts_text(&system, NEW).as_bytes()).unwrap();
    f.sync_all().unwrap();
    drop(f);

    // Requests keep going (keeping the pooled connection to the old address busy, and the
    // old server keeps answering) until one reaches the new address.
    let deadline = tokio::time::Instant::now() + FOLLOW_LIMIT;
    let mut n = 5;
    while new.hits() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "traffic still goes to {OLD} {FOLLOW_LIMIT:?} after {NAME} moved to {NEW} \
             (dns_refresh = 1s); old hits {}:\n{}",
            old.hits(),
            gw.process.log()
        );
        assert_eq!(get(n).await, 200, "a request during the move failed");
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old_hits = old.hits();
    for k in 0..10 {
        assert_eq!(get(n + k).await, 200);
    }
    assert_eq!(
        old.hits(),
        old_hits,
        "a request went to the old address after the move"
    );
    assert!(new.hits() >= 11, "new address hits: {}", new.hits());
    assert!(
        gw.process
            .log()
            .contains("upstream target resolves to new addresses"),
        "the move is logged:\n{}",
        gw.process.log()
    );
}
