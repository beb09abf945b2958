//! The `portcullis` binary: `check` exits 0 on a valid config and 2 with every problem named
//! (the key, the file path, the variable); `token` mints tokens the gateway accepts; `run`
//! with `[dev] generate_missing` writes and uses development material for the shipped config.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::process::strip_ansi;
use common::tokens::{self, HS256_SECRET};
use common::{hmac_key_toml, portcullis, GatewayProcess, Setup, TestGateway, Upstream};
use portcullis::Config;

/// A valid config: TLS listener, an HMAC key, one jwt route.
const VALID: &str = r#"{listen}
[jwt]
leeway = "30s"

[[jwt.keys]]
kid = "hs"
alg = "HS256"
secret = "hs256-secret-for-tests-0123456789"

[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:9"
auth = "jwt"
"#;

fn run_check(config: &Path) -> Output {
    portcullis(&["check", "--config", &config.display().to_string()])
        .output()
        .expect("run portcullis check")
}

/// Run `check` on `text`, expect exit 2, and return stderr.
fn check_fails(setup: &Setup, text: &str) -> String {
    let out = run_check(&setup.write_config(text));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    stderr
}

#[test]
fn check_accepts_a_valid_config() {
    let setup = Setup::new();
    let out = run_check(&setup.write_config(VALID));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok"), "{stdout}");
}

#[test]
fn check_names_an_unknown_key() {
    let setup = Setup::new();
    let text = VALID.replace("leeway = \"30s\"", "leeway = \"30s\"\nleway_typo = \"5s\"");
    let stderr = check_fails(&setup, &text);
    assert!(stderr.contains("leway_typo"), "{stderr}");
    assert!(stderr.contains("jwt"), "{stderr}");
}

#[test]
fn check_names_a_missing_key_file() {
    let setup = Setup::new();
    let text = VALID.replace(
        "secret = \"hs256-secret-for-tests-0123456789\"",
        "secret_file = \"keys/missing-secret\"",
    )
        + "\n[[jwt.keys]]\nkid = \"rsa\"\nalg = \"RS256\"\npublic_key = \"keys/missing.pem\"\n";
    let stderr = check_fails(&setup, &text);
    for missing in ["keys/missing-secret", "keys/missing.pem"] {
        let full = setup.path(missing).display().to_string();
        assert!(stderr.contains(&full), "{missing}: {stderr}");
    }
}

#[test]
fn check_names_an_unset_variable() {
    const VAR: &str = "PORTCULLIS_IT_SURELY_UNSET_7F3A";
    let setup = Setup::new();
    let text = VALID.replace(
        "secret = \"hs256-secret-for-tests-0123456789\"",
        &format!("secret = \"${{{VAR}}}\""),
    );
    let out = portcullis(&[
        "check",
        "--config",
        &setup.write_config(&text).display().to_string(),
    ])
    .env_remove(VAR)
    .output()
    .expect("run check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(VAR), "{stderr}");
    assert!(stderr.contains("jwt.keys[0].secret"), "{stderr}");

    // Set, the same file is valid.
    let out = portcullis(&[
        "check",
        "--config",
        &setup.path("config.toml").display().to_string(),
    ])
    .env(VAR, HS256_SECRET)
    .output()
    .expect("run check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_names_a_bad_duration() {
    let setup = Setup::new();
    let stderr = check_fails(&setup, &VALID.replace("\"30s\"", "\"soon\""));
    assert!(stderr.contains("jwt.leeway"), "{stderr}");
    assert!(stderr.contains("soon"), "{stderr}");
}

#[test]
fn check_refuses_half_a_tls_pair() {
    let setup = Setup::new();
    for (drop, keep) in [("tls_key", "tls_cert"), ("tls_cert", "tls_key")] {
        let text: String = setup
            .render(VALID)
            .lines()
            .filter(|l| !l.starts_with(drop))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(text.contains(keep));
        let stderr = check_fails(&setup, &text);
        assert!(
            stderr.contains("tls_cert") && stderr.contains("tls_key"),
            "without {drop}: {stderr}"
        );
    }
}

#[test]
fn check_reports_every_problem_at_once() {
    let setup = Setup::new();
    let text = setup
        .render(VALID)
        .replace("\"30s\"", "\"soon\"")
        .replace("tls_key = \"tls/key.pem\"\n", "")
        + "\n[[jwt.keys]]\nkid = \"rsa\"\nalg = \"RS256\"\npublic_key = \"keys/missing.pem\"\n";
    let stderr = check_fails(&setup, &text);
    assert!(stderr.contains("soon"), "{stderr}");
    assert!(stderr.contains("tls_key"), "{stderr}");
    assert!(stderr.contains("missing.pem"), "{stderr}");
}

/// Issue 15: no problem hides another, none is reported falsely, and each names its key and
/// where it is in the file.
#[test]
fn check_lists_every_problem_with_its_key_and_position_and_no_false_ones() {
    const VAR: &str = "PORTCULLIS_IT_UNSET_B81C";
    let setup = Setup::new();
    let text = format!(
        r#"{{listen}}
[jwt]
audience = 5

[[jwt.keys]]
kid = "dup"
alg = "HS256"
secret = "hs256-secret-for-tests-0123456789"

[[jwt.keys]]
kid = "dup"
alg = "HS256"
secret = "hs256-secret-for-tests-0123456789"

[admin]
addr = "0.0.0.0:9443"
token = "${{{VAR}}}"
tls_cert = "missing/admin-cert.pem"
tls_key = "missing/admin-key.pem"

[signin]
signing_kid = "dup"

[[routes]]
prefix = "no-leading-slash"
upstream = "http://127.0.0.1:9"
auth = "sometimes"
"#
    );
    let out = portcullis(&[
        "check",
        "--config",
        &setup.write_config(&text).display().to_string(),
    ])
    .env_remove(VAR)
    .output()
    .expect("run check");
    let stderr = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for want in [
        VAR,
        "admin.token",
        "jwt.audience",
        "a string or an array of strings",
        "signin.users_file",
        "routes[0].prefix",
        "routes[0].auth",
        "dup",
        "admin.tls_cert",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    for never in [
        "untagged enum",
        "no key is configured",
        "has no TLS",
        "missing field",
    ] {
        assert!(
            !stderr.contains(never),
            "false or raw {never:?} in:\n{stderr}"
        );
    }
    // Positions: the route's prefix is on line 27 of the rendered file.
    let prefix_line = setup
        .render(&text)
        .lines()
        .position(|l| l.starts_with("prefix = \"no-leading-slash\""))
        .unwrap()
        + 1;
    let line = stderr
        .lines()
        .find(|l| l.contains("routes[0].prefix"))
        .unwrap();
    assert!(
        line.contains(&format!("(line {prefix_line}, column 1)")),
        "{line}"
    );
}

#[test]
fn check_names_the_line_and_byte_of_a_non_utf8_file() {
    let setup = Setup::new();
    let mut bytes = setup.render(VALID).into_bytes();
    let at = bytes.len();
    bytes.extend_from_slice(b"# caf\xe9\n");
    let path = setup.write("config.toml", &bytes);
    let out = run_check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
    assert!(
        stderr.contains(&format!("line {lines}, column 6 (byte offset {})", at + 5)),
        "{stderr}"
    );
    assert!(stderr.contains("UTF-8"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mints_tokens_the_gateway_accepts() {
    let up = Upstream::start().await;
    let setup = Setup::new().var("up", up.url());
    let rsa = tokens::rsa();
    setup.write("keys/rsa.pem", &rsa.private_pem);
    setup.write("keys/rsa.pub.pem", &rsa.public_pem);
    let config = format!(
        r#"{{listen}}
[jwt]
issuer = "https://issuer.test"
audience = "api"

{}
[[jwt.keys]]
kid = "rsa"
alg = "RS256"
public_key = "keys/rsa.pub.pem"
private_key = "keys/rsa.pem"

[identity.claims]
"x-user-roles" = "roles"

[[routes]]
prefix = "/"
upstream = "{{up}}"
auth = "jwt"
"#,
        hmac_key_toml("hs", "HS256", HS256_SECRET)
    );
    let path = setup.write_config(&config);
    let mint = |args: &[&str]| {
        let mut all = vec!["token", "--config", path.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        let out = portcullis(&all).output().expect("run token");
        assert!(
            out.status.success(),
            "token {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8 token")
            .trim()
            .to_owned()
    };
    let hs = mint(&["--sub", "alice", "--claim", r#"roles=["a","b"]"#]);
    let rs = mint(&["--sub", "bob", "--kid", "rsa", "--ttl", "5m"]);
    let header: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            rs.split('.').next().expect("header"),
        )
        .expect("base64"),
    )
    .expect("header json");
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], "rsa");

    let config = Config::load(&path).expect("config loads");
    let gw = setup.start_with(config).await;
    let echo = gw.get("/me", Some(&hs)).await.echo();
    assert_eq!(echo.one("x-user-id"), Some("alice"));
    assert_eq!(echo.one("x-user-roles"), Some("a,b"));
    let echo = gw.get("/me", Some(&rs)).await.echo();
    assert_eq!(echo.one("x-user-id"), Some("bob"));
}

/// The shipped `config.toml` with its listen and admin addresses on ephemeral loopback ports,
/// and every upstream replaced.
fn shipped_config(upstream: &str) -> String {
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml"))
            .expect("read shipped config.toml");
    let mut section = String::new();
    let mut out = String::new();
    for line in shipped.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            section = t.trim_matches(|c| c == '[' || c == ']').to_owned();
        }
        let line = if t.starts_with("addr") && (section == "listen" || section == "admin") {
            "addr = \"127.0.0.1:0\"".to_owned()
        } else if t.starts_with("upstream") {
            format!("upstream = \"{upstream}\"")
        } else {
            line.to_owned()
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The files `[dev] generate_missing` may create for `config`, as absolute paths.
fn dev_material(dir: &Path, config: &str) -> Vec<PathBuf> {
    let v: toml::Value = toml::from_str(config).expect("toml");
    let mut rel: Vec<String> = Vec::new();
    for key in ["tls_cert", "tls_key"] {
        if let Some(p) = v["listen"].get(key).and_then(|p| p.as_str()) {
            rel.push(p.to_owned());
        }
    }
    if let Some(keys) = v
        .get("jwt")
        .and_then(|j| j.get("keys"))
        .and_then(|k| k.as_array())
    {
        for k in keys {
            if let Some(p) = k.get("secret_file").and_then(|p| p.as_str()) {
                rel.push(p.to_owned());
            }
        }
    }
    if let Some(p) = v
        .get("admin")
        .and_then(|a| a.get("token_file"))
        .and_then(|p| p.as_str())
    {
        rel.push(p.to_owned());
    }
    rel.iter().map(|p| dir.join(p)).collect()
}

#[test]
fn shipped_config_passes_check_without_writing_anything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = shipped_config("http://127.0.0.1:9");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).expect("write");
    let out = run_check(&path);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let material = dev_material(dir.path(), &text);
    assert!(
        !material.is_empty(),
        "the shipped config generates nothing?"
    );
    for f in material {
        assert!(!f.exists(), "check wrote {}", f.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_generates_missing_dev_material_and_serves_with_it() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let text = shipped_config(&up.url());
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).expect("write");
    let material = dev_material(dir.path(), &text);

    let gw = GatewayProcess::spawn(&path).await;
    let port = gw.addr.port();
    for f in &material {
        let len = std::fs::metadata(f)
            .unwrap_or_else(|e| panic!("{} was not generated: {e}", f.display()))
            .len();
        assert!(len > 0, "{} is empty", f.display());
    }
    let logs = strip_ansi(&gw.log());
    for f in &material {
        let name = f.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(
            logs.lines()
                .any(|l| l.contains("generated development") && l.contains(name)),
            "no log line says {name} was generated:\n{logs}"
        );
    }

    // The generated certificate and secret are the ones in use: a token minted by
    // `portcullis token` from the same files gets through, over TLS that trusts the cert.
    let token = {
        let p = path.clone();
        tokio::task::spawn_blocking(move || {
            portcullis(&[
                "token",
                "--config",
                p.to_str().expect("utf-8"),
                "--sub",
                "alice",
            ])
            .output()
            .expect("token")
        })
        .await
        .expect("token task")
    };
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8(token.stdout).expect("utf-8");
    let cert = std::fs::read_to_string(&material[0]).expect("generated cert");
    let client = common::https_client(gw.addr, &cert)
        .build()
        .expect("client");
    let resp = client
        .get(format!("https://localhost:{port}/api/me"))
        .bearer_auth(token.trim())
        .send()
        .await
        .expect("request to portcullis run");
    let echo = TestGateway::reply(resp).await.echo();
    assert_eq!(echo.one("x-user-id"), Some("alice"));
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_cleanly_on_sigterm() {
    let setup = Setup::new();
    let path = setup.write_config(VALID);
    let gw = GatewayProcess::spawn(&path).await;
    gw.sigterm();
    let (status, logs) = gw.wait_exit_async(Duration::from_secs(15)).await;
    assert!(status.success(), "run exited with {status}:\n{logs}");
}
