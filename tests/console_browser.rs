//! The console in a real browser: headless Chromium, driven over the DevTools protocol
//! (`common::browser`), opens `/ui/` on the admin listener, types the admin token into the
//! input labelled "Admin token" and clicks "Sign in"; under load through the proxy the
//! requests and auth-failure charts move; it revokes a token with a reason through the
//! revoke form, the proxy then refuses that token, and the audit list shows the actor and
//! the reason. The page must raise no Content-Security-Policy violation, and on a phone-sized
//! screen nothing may overflow sideways. Screenshots go to `target/screenshots/`.
//!
//! Skips, with a printed reason, only where no Chromium binary exists (`.ci/run` installs
//! Debian's `chromium`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::browser::{chromium, launch, screenshot_dir, Page};
use common::revocation::{assert_passes, assert_revoked, client, env, token, ADMIN_TOKEN};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// The latest value a chart's legend shows for `series` (what a reader of the page sees).
fn legend_value(chart: &str, series: &str) -> String {
    format!(
        "(() => {{ const v = document.querySelector('#{chart} li[data-series=\"{series}\"] .value'); return v ? v.dataset.value : null; }})()"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_watches_the_load_and_revokes_a_token_in_a_real_browser() {
    let Some(binary) = chromium() else {
        eprintln!(
            "SKIPPED console_browser: no Chromium binary on PATH (install Debian's `chromium`, or set CHROMIUM=/path/to/chrome); the console's HTTP contract is still covered by tests/console.rs"
        );
        return;
    };
    let (gw, _up, _dir) = env("[revocation]\nstore = \"memory\"\n").await;
    let console = gw.admin_url("/ui/");
    let profile = tempfile::tempdir().expect("profile dir");
    let (_browser, port) = launch(&binary, profile.path(), "about:blank").await;
    let mut page = Page::connect(port, "").await;
    // Record any CSP violation from the first byte of the page on.
    page.call(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": "window.__csp = []; document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"}),
    )
    .await;
    page.call("Page.enable", json!({})).await;
    page.call("Page.navigate", json!({ "url": console })).await;

    // Sign in: the input is found by its label's text, the button by its own.
    page.wait_for(
        "the sign-in form",
        "document.getElementById('signin') && !document.getElementById('signin').hidden",
        WAIT,
    )
    .await;
    let input = page
        .eval("(() => { const l = [...document.querySelectorAll('label')].find(l => l.textContent.trim() === 'Admin token'); return l && l.htmlFor; })()")
        .await;
    let input = input
        .as_str()
        .expect("a label reading \"Admin token\"")
        .to_owned();
    page.type_into(&input, ADMIN_TOKEN).await;
    let button = page
        .eval("(() => { const b = [...document.querySelectorAll('button')].find(b => b.textContent.trim() === 'Sign in'); if (!b) return null; b.id = b.id || 'signin-button'; return '#' + b.id; })()")
        .await;
    page.click(button.as_str().expect("a \"Sign in\" button"))
        .await;
    let actor = page
        .wait_for(
            "the console after sign-in",
            "!document.getElementById('console').hidden && document.getElementById('actor').textContent",
            WAIT,
        )
        .await;
    assert_eq!(actor, "admin");
    let cookie_visible = page.eval("document.cookie").await;
    assert_eq!(cookie_visible, "", "the session cookie is HttpOnly");

    // Charts before the load: the first samples show no traffic.
    let before = page
        .wait_for(
            "a first sample",
            &legend_value("chart-requests", "2xx"),
            WAIT,
        )
        .await;
    assert_eq!(before, "0", "no traffic yet");

    // Load through the proxy until the page shows it: 200s and refused requests.
    let good = token("alice", "browser-good");
    let victim = token("bob", "browser-victim");
    assert_passes(
        &gw.get(&victim).await,
        "the victim's token before the revoke",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, proxy, good) = (stop.clone(), gw.proxy, good.clone());
        tokio::spawn(async move {
            let http = client();
            while !stop.load(Ordering::Relaxed) {
                let _ = http
                    .get(format!("http://{proxy}/api"))
                    .bearer_auth(&good)
                    .send()
                    .await;
                let _ = http.get(format!("http://{proxy}/api")).send().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let moved = page
        .wait_for(
            "the requests chart to move",
            &format!("Number({}) > 0", legend_value("chart-requests", "2xx")),
            WAIT,
        )
        .await;
    assert_eq!(moved, true);
    page.wait_for(
        "the auth-failures chart to show the refused requests",
        &format!("Number({}) > 0", legend_value("chart-auth", "missing")),
        WAIT,
    )
    .await;
    page.wait_for(
        "a latency figure",
        &format!("Number({}) > 0", legend_value("chart-latency", "p50")),
        WAIT,
    )
    .await;
    let route_row = page
        .wait_for(
            "the routes table",
            "(() => { const r = document.querySelector('#routes-table tbody tr th'); return r ? r.textContent : null; })()",
            WAIT,
        )
        .await;
    assert_eq!(route_row, "/");
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    // Revoke the victim's token with a reason, through the form.
    page.eval("document.getElementById('revoke-kind').value = 'token'")
        .await;
    page.type_into("revoke-value", &victim).await;
    page.type_into("revoke-reason", "laptop stolen").await;
    page.click("#revoke-form button[type=submit]").await;
    let result = page
        .wait_for(
            "the revoke's answer",
            "document.getElementById('revoke-result').textContent",
            WAIT,
        )
        .await;
    assert!(result.as_str().unwrap().starts_with("Revoked"), "{result}");
    assert_revoked(&gw.get(&victim).await, "the token revoked in the console");
    assert_passes(&gw.get(&good).await, "another token");

    // The audit list shows who did it and why.
    let row = page
        .wait_for(
            "the audit row of the revoke",
            "(() => { const r = [...document.querySelectorAll('#audit-table tbody tr')].map(tr => [...tr.cells].map(c => c.textContent)).find(c => c[3] === 'browser-victim'); return r || null; })()",
            WAIT,
        )
        .await;
    let cells: Vec<&str> = row
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(cells[1], "revoke", "{cells:?}");
    assert_eq!(cells[2], "token", "{cells:?}");
    assert_eq!(cells[4], "bob", "{cells:?}");
    assert_eq!(cells[5], "admin", "{cells:?}");
    assert_eq!(cells[7], "laptop stolen", "{cells:?}");
    page.wait_for(
        "the revocations chart's data to count the revoke",
        "state.samples.some(s => s.revocations > 0)",
        WAIT,
    )
    .await;

    // An API key: created through the form, shown once, then listed without it.
    page.type_into("key-app", "mobile-ios").await;
    page.click("#key-form button[type=submit]").await;
    let key = page
        .wait_for(
            "the new key, shown once",
            "!document.getElementById('key-new').hidden && document.getElementById('key-value').textContent",
            WAIT,
        )
        .await;
    let key = key.as_str().unwrap().to_owned();
    assert!(key.len() >= 32, "{key}");
    let listed = page
        .wait_for(
            "the key in the list",
            "(() => { const r = [...document.querySelectorAll('#key-table tbody tr')].map(tr => tr.cells[1].textContent); return r.includes('mobile-ios') ? document.getElementById('key-table').textContent : null; })()",
            WAIT,
        )
        .await;
    assert!(
        !listed.as_str().unwrap().contains(&key),
        "the list never shows a key"
    );

    let dir = screenshot_dir();
    let widths = page
        .eval("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        .await;
    assert!(
        widths[0].as_u64() <= widths[1].as_u64(),
        "the page is wider than the desktop window: {widths}"
    );
    page.screenshot(&dir.join("console-desktop.png")).await;

    // A phone-sized screen: nothing overflows sideways.
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let overflow = page
        .eval("[document.documentElement.scrollWidth, window.innerWidth]")
        .await;
    let (scroll, inner) = (overflow[0].as_u64().unwrap(), overflow[1].as_u64().unwrap());
    assert!(
        scroll <= inner,
        "the page is wider than a phone: {scroll} > {inner}"
    );
    page.screenshot(&dir.join("console-phone.png")).await;
    assert!(dir.join("console-phone.png").metadata().unwrap().len() > 1000);

    let violations = page.eval("window.__csp").await;
    assert_eq!(violations, json!([]), "CSP violations on the console");
    gw.stop().await;
}
