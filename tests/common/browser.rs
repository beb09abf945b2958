//! Headless Chromium driven over the DevTools protocol (no webdriver in between): find the
//! binary ([`chromium`]), start it with its DevTools port chosen by the browser
//! ([`launch`]), evaluate a script in a page by its origin ([`evaluate`]), or hold a
//! DevTools session on the page ([`Page`]: navigate, type, evaluate, wait, screenshot).
//! Used by `browser_cors.rs` and `console_browser.rs`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The Chromium binary: `$CHROMIUM`, else `chromium`, `chromium-browser` or `google-chrome`
/// on `PATH`. `None` makes a browser test skip with a printed reason.
pub fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .map(move |dir| dir.join(name))
        })
        .find(|p| p.is_file())
}

/// Kills the browser when the test ends, however it ends.
pub struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start headless Chromium on `url`; the DevTools port is chosen by the browser (port 0) and
/// read back from `DevToolsActivePort` in its profile folder.
pub async fn launch(binary: &Path, profile: &Path, url: &str) -> (Browser, u16) {
    let child = Command::new(binary)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--window-size=1280,900",
            // The gateway's certificate is the test's own self-signed one.
            "--ignore-certificate-errors",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let browser = Browser(child);
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            if let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
                return (browser, port);
            }
        }
        assert!(
            Instant::now() < deadline,
            "chromium did not open its DevTools port"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The DevTools WebSocket URL of the first page whose URL starts with `prefix`.
async fn page_socket_url(port: u16, prefix: &str) -> Option<String> {
    let targets: Vec<Value> = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/json/list"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .unwrap_or_default();
    targets.iter().find_map(|t| {
        let url = t["url"].as_str()?;
        (t["type"] == "page" && url.starts_with(prefix))
            .then(|| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))?
    })
}

/// Evaluate `expression` (a promise) in the page whose URL starts with `page_origin`,
/// retrying while the page is still loading; returns its JSON value.
pub async fn evaluate(port: u16, page_origin: &str, expression: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        assert!(
            Instant::now() < deadline,
            "the page never produced a result"
        );
        let Some(ws) = page_socket_url(port, page_origin).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut page = Page::connect_to(&ws).await;
        let v = page.try_eval(expression).await;
        if let Ok(value) = v {
            if !value.is_null() {
                return value;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A DevTools session on one page.
pub struct Page {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Page {
    /// A session on the first page whose URL starts with `prefix` (`""`: any page).
    pub async fn connect(port: u16, prefix: &str) -> Page {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(ws) = page_socket_url(port, prefix).await {
                return Page::connect_to(&ws).await;
            }
            assert!(Instant::now() < deadline, "no page target in chromium");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn connect_to(ws: &str) -> Page {
        let (socket, _) = tokio_tungstenite::connect_async(ws)
            .await
            .expect("DevTools socket");
        Page { socket, next_id: 0 }
    }

    /// Send one DevTools command and wait for its answer (events in between are skipped);
    /// `Err` carries the protocol's error.
    pub async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let call = json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::text(call.to_string()))
            .await
            .expect("DevTools send");
        let answer = async {
            while let Some(msg) = self.socket.next().await {
                let Ok(Message::Text(text)) = msg else {
                    continue;
                };
                let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
                if v["id"] == id {
                    return v;
                }
            }
            panic!("DevTools socket closed during {method}");
        };
        let v = tokio::time::timeout(Duration::from_secs(30), answer)
            .await
            .unwrap_or_else(|_| panic!("no DevTools answer to {method}"));
        match v.get("error") {
            Some(e) => Err(e.clone()),
            None => Ok(v["result"].clone()),
        }
    }

    /// [`Page::try_call`], panicking on a protocol error.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params.clone())
            .await
            .unwrap_or_else(|e| panic!("{method} {params} failed: {e}"))
    }

    /// Evaluate `expression` (awaiting a promise); `Err` when it threw.
    pub async fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        let r = self
            .try_call(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await?;
        match r.get("exceptionDetails") {
            Some(e) => Err(e.clone()),
            None => Ok(r["result"].get("value").cloned().unwrap_or(Value::Null)),
        }
    }

    /// Evaluate `expression`, panicking when it throws.
    pub async fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression)
            .await
            .unwrap_or_else(|e| panic!("{expression} threw: {e}"))
    }

    /// Evaluate `expression` every 100 ms until its value is truthy (not null, false, 0 or
    /// ""); returns that value, or panics naming `what` after `limit`.
    pub async fn wait_for(&mut self, what: &str, expression: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        let mut last = Value::Null;
        loop {
            if let Ok(v) = self.try_eval(expression).await {
                let truthy = match &v {
                    Value::Null | Value::Bool(false) => false,
                    Value::String(s) => !s.is_empty(),
                    Value::Number(n) => n.as_f64() != Some(0.0),
                    _ => true,
                };
                if truthy {
                    return v;
                }
                last = v;
            }
            assert!(
                Instant::now() < deadline,
                "waited {limit:?} for {what}; last value {last}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Focus the element with id `id` and type `text` into it as keyboard input.
    pub async fn type_into(&mut self, id: &str, text: &str) {
        self.eval(&format!(
            "(() => {{ const e = document.getElementById({}); e.focus(); e.select && e.select(); return true; }})()",
            json!(id)
        ))
        .await;
        self.call("Input.insertText", json!({ "text": text })).await;
    }

    /// Click the centre of the first element `selector` matches, as a mouse would.
    pub async fn click(&mut self, selector: &str) {
        let at = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({}); e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
                json!(selector)
            ))
            .await;
        let (x, y) = (at[0].as_f64().expect("x"), at[1].as_f64().expect("y"));
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await;
        }
    }

    /// A PNG of the whole page, written to `path`.
    pub async fn screenshot(&mut self, path: &Path) {
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

/// Where a browser test writes its screenshots: `$CARGO_TARGET_DIR`, else `target/`.
pub fn screenshot_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("screenshots")
}
