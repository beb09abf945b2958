//! The cross-origin single-page-app flow in a real browser: headless Chromium, driven over
//! the DevTools protocol, loads a page from one origin (a small HTTP server this test starts)
//! that calls the gateway on another origin with `fetch(..., {credentials: "include"})`.
//! The browser itself enforces CORS, so this is the check that the headers are what browsers
//! need, not what we think they need: the page reads the upstream's JSON (after the browser's
//! own preflight for `Authorization`), reads the gateway's 401 error body, reads an exposed
//! header, and is blocked from reading a route with `cors = false`.
//!
//! Skips, with a printed reason, only where no Chromium binary exists (`.ci/run` installs
//! Debian's `chromium`).

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::browser::{chromium, evaluate, launch};
use common::tokens::{self, HS256_SECRET};
use common::{hmac_key_toml, Setup, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serve `html` to every request on 127.0.0.1:0; returns the page's origin.
async fn page_server(html: String) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind page server");
    let origin = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let html = html.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = sock.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    html.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(html.as_bytes()).await;
            });
        }
    });
    (origin, task)
}

#[tokio::test]
async fn a_page_on_another_origin_reads_json_and_errors_with_credentials() {
    let Some(binary) = chromium() else {
        eprintln!(
            "SKIPPED browser_cors: no Chromium binary on PATH (install Debian's `chromium`, or set CHROMIUM=/path/to/chrome); the CORS rules are still covered by tests/cors.rs"
        );
        return;
    };
    let setup = Setup::new();
    let up = Upstream::start().await;
    let token = tokens::hs256(Some("hs"), &tokens::claims("u-1"));
    // The page is served before the gateway starts: its origin goes into the config. The
    // gateway URL is filled in by the page from its own query string.
    let html = format!(
        r#"<!doctype html><title>spa</title><script>
const GW = new URLSearchParams(location.search).get("gw");
window.result = (async () => {{
  const out = {{}};
  const ok = await fetch(GW + "/api/items", {{credentials: "include", headers: {{authorization: "Bearer {token}"}}}});
  out.ok_status = ok.status;
  out.ok_json = await ok.json();
  out.request_id = ok.headers.get("x-request-id");
  const err = await fetch(GW + "/api/items", {{credentials: "include"}});
  out.err_status = err.status;
  out.err_json = await err.json();
  try {{ await fetch(GW + "/internal/x", {{credentials: "include"}}); out.cors_off = "readable"; }}
  catch (e) {{ out.cors_off = "blocked"; }}
  return out;
}})().catch(e => ({{error: String(e)}}));
</script>"#
    );
    let (page_origin, _server) = page_server(html).await;
    let config = format!(
        "{{listen}}\n{key}\n[revocation]\nstore = \"memory\"\n\n[cors]\nallowed_origins = [\"{page_origin}\"]\nallowed_methods = [\"GET\", \"POST\"]\nallowed_headers = [\"authorization\", \"content-type\"]\nexpose_headers = [\"x-request-id\"]\nallow_credentials = true\n\n[[routes]]\nprefix = \"/api\"\nupstream = \"{up}\"\nauth = \"jwt\"\n\n[[routes]]\nprefix = \"/internal\"\nupstream = \"{up}\"\nauth = \"public\"\ncors = false\n",
        key = hmac_key_toml("hs", "HS256", HS256_SECRET),
        up = up.url(),
    );
    let gw = setup.start(&config).await;
    let profile = tempfile::tempdir().expect("profile dir");
    let page = format!("{page_origin}/?gw={}", gw.url(""));
    let (_browser, port) = launch(&binary, profile.path(), &page).await;
    let wait = "new Promise(r => { const w = () => window.result ? window.result.then(r) : setTimeout(w, 50); w(); })";
    let out = evaluate(port, &page_origin, wait).await;

    assert!(out.get("error").is_none(), "the page failed: {out}");
    assert_eq!(out["ok_status"], 200, "{out}");
    assert_eq!(out["ok_json"]["path"], "/api/items", "{out}");
    assert_eq!(out["ok_json"]["method"], "GET", "{out}");
    assert!(
        out["request_id"].is_string(),
        "x-request-id not exposed: {out}"
    );
    assert_eq!(out["err_status"], 401, "{out}");
    assert_eq!(out["err_json"]["error"], "unauthorized", "{out}");
    assert_eq!(out["cors_off"], "blocked", "{out}");
    // The browser's preflight was answered by the gateway: only real requests went upstream.
    assert!(up
        .requests()
        .iter()
        .all(|r| r.method != "OPTIONS" || r.path.starts_with("/internal")));
}
