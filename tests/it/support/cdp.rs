//! A small Chrome DevTools Protocol client for the browser tests: starts headless
//! Chromium with a fresh profile, attaches to one page and sends commands over the
//! DevTools WebSocket (tokio-tungstenite). Chromium is killed when [`Browser`] drops.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// Where Debian's `chromium` package puts the browser (`AULA_CHROMIUM` overrides).
pub fn chromium_path() -> PathBuf {
    std::env::var_os("AULA_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// The browser, installed first when it is missing: on a fresh Debian machine (CI runs
/// as root) the README's test command installs Debian's `chromium` package itself, so
/// the browser tests run instead of failing for want of a browser. Without root, or
/// with `AULA_CHROMIUM` set, nothing is installed and a missing binary fails the test.
pub fn ensure_chromium() -> PathBuf {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    let binary = chromium_path();
    if binary.exists()
        || std::env::var_os("AULA_CHROMIUM").is_some()
        // SAFETY: geteuid has no preconditions and cannot fail.
        || unsafe { libc::geteuid() } != 0
    {
        return binary;
    }
    INSTALL.call_once(|| {
        eprintln!(
            "chromium not found: installing Debian's `chromium` package for the browser tests"
        );
        let apt = |args: &[&str]| {
            std::process::Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(std::process::Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        let install = ["install", "-y", "--no-install-recommends", "chromium"];
        if !apt(&install) {
            let _ = apt(&["update"]);
            let _ = apt(&install);
        }
    });
    binary
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A running headless Chromium and a session attached to one page.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    outgoing: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: AtomicU64,
    session: String,
    /// Uncaught exceptions and `console.error` calls of the page.
    pub page_errors: Arc<Mutex<Vec<String>>>,
    /// The browser's own error entries (`Log.entryAdded`): a request that failed (a
    /// 404, a refused answer), a blocked resource. Apart from `page_errors`, as a test
    /// may cause a refused request on purpose.
    pub log_errors: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    /// Starts Chromium and opens a blank page. Panics with a clear message when the
    /// binary is missing: the browser tests must never pass without a browser.
    pub async fn start() -> Browser {
        let binary = chromium_path();
        assert!(
            binary.exists(),
            "headless Chromium is required for the dashboard tests and was not found at {} \
             (install Debian's `chromium` package: `apt-get install -y chromium`, or set AULA_CHROMIUM)",
            binary.display()
        );
        let profile = std::env::temp_dir().join(format!(
            "aula-chromium-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&profile).expect("creating the Chromium profile folder");
        let mut child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-quic",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let (found, endpoint) = std::sync::mpsc::channel::<String>();
        // Reads the DevTools address, then keeps draining so Chromium never blocks on it.
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    if let Some(found) = found.take() {
                        let _ = found.send(url.trim().to_owned());
                    }
                } else if std::env::var_os("AULA_CHROMIUM_LOG").is_some() {
                    eprintln!("chromium: {line}");
                }
            }
        });
        let url = match endpoint.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("Chromium did not print its DevTools address within 60 s");
            }
        };
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("connecting to the DevTools WebSocket");
        let (mut write, mut read) = socket.split();
        let (outgoing, mut queue) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                if write.send(message).await.is_err() {
                    return;
                }
            }
        });
        let pending: Pending = Arc::default();
        let page_errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let log_errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let (replies, errors, logged) = (pending.clone(), page_errors.clone(), log_errors.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = read.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                if let Some(id) = value.get("id").and_then(Value::as_u64) {
                    if let Some(reply) = replies.lock().unwrap().remove(&id) {
                        let _ = reply.send(value);
                    }
                    continue;
                }
                match value["method"].as_str() {
                    Some("Runtime.exceptionThrown") => {
                        let details = &value["params"]["exceptionDetails"];
                        errors.lock().unwrap().push(format!(
                            "{} {}",
                            details["text"].as_str().unwrap_or(""),
                            details["exception"]["description"].as_str().unwrap_or("")
                        ));
                    }
                    Some("Runtime.consoleAPICalled") if value["params"]["type"] == "error" => {
                        errors
                            .lock()
                            .unwrap()
                            .push(format!("console.error: {}", value["params"]["args"]));
                    }
                    Some("Log.entryAdded") if value["params"]["entry"]["level"] == "error" => {
                        let entry = &value["params"]["entry"];
                        logged.lock().unwrap().push(format!(
                            "{}: {} {}",
                            entry["source"].as_str().unwrap_or(""),
                            entry["text"].as_str().unwrap_or(""),
                            entry["url"].as_str().unwrap_or("")
                        ));
                    }
                    _ => {}
                }
            }
        });
        let mut browser = Browser {
            child,
            profile,
            outgoing,
            pending,
            next_id: AtomicU64::new(1),
            session: String::new(),
            page_errors,
            log_errors,
        };
        let target = browser
            .command("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached = browser
            .command(
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.send(domain, json!({})).await;
        }
        browser
    }

    async fn raw(&self, method: &str, params: Value, session: Option<&str>) -> Value {
        match self.raw_result(method, params, session).await {
            Ok(result) => result,
            Err(error) => panic!("DevTools {method} failed: {error}"),
        }
    }

    /// [`raw`](Self::raw), with DevTools' error as a value.
    async fn raw_result(
        &self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Result<Value, Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        self.outgoing
            .send(Message::Text(message.to_string().into()))
            .expect("the DevTools connection is open");
        let reply = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .unwrap_or_else(|_| panic!("DevTools did not answer {method} within 60 s"))
            .expect("the DevTools connection closed");
        if let Some(error) = reply.get("error") {
            return Err(error.clone());
        }
        Ok(reply["result"].clone())
    }

    /// A browser-level command (no page session).
    async fn command(&self, method: &str, params: Value) -> Value {
        self.raw(method, params, None).await
    }

    /// A command to the attached page.
    pub async fn send(&self, method: &str, params: Value) -> Value {
        self.raw(method, params, Some(&self.session)).await
    }

    /// The rendered text of the element whose id is `id` (its `innerText`).
    pub async fn text_of(&self, id: &str) -> String {
        let text = self
            .eval(&format!("document.getElementById('{id}').innerText"))
            .await;
        text.as_str()
            .unwrap_or_else(|| panic!("no text in #{id}: {text}"))
            .to_owned()
    }

    /// Evaluates `expression` in the page (promises awaited) and returns its value.
    pub async fn eval(&self, expression: &str) -> Value {
        let result = self
            .send(
                "Runtime.evaluate",
                json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        if let Some(details) = result.get("exceptionDetails") {
            panic!(
                "the page threw while evaluating `{expression}`: {}",
                details["exception"]["description"]
                    .as_str()
                    .unwrap_or(&details.to_string())
            );
        }
        result["result"]["value"].clone()
    }

    pub async fn navigate(&self, url: &str) {
        self.send("Page.navigate", json!({ "url": url })).await;
    }

    /// The viewport: `width` CSS pixels wide, as a phone when `mobile`.
    pub async fn viewport(&self, width: u32, height: u32, mobile: bool) {
        self.send(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .await;
    }

    /// Types text into the focused element, as a keyboard would.
    pub async fn type_text(&self, text: &str) {
        self.send("Input.insertText", json!({ "text": text })).await;
    }

    /// Empties the input `#id`, focuses it and types `text` into it, as a person would.
    pub async fn fill(&self, id: &str, text: &str) {
        let id = serde_json::to_string(id).unwrap();
        self.eval(&format!(
            "(() => {{ const e = document.getElementById({id}); e.value = ''; e.focus(); return true; }})()"
        ))
        .await;
        self.type_text(text).await;
    }

    /// Asserts the page reported no error (uncaught exception or console error) so far.
    pub fn assert_no_page_errors(&self) {
        let errors = self.page_errors.lock().unwrap().clone();
        assert!(errors.is_empty(), "the page reported errors: {errors:?}");
    }

    /// Asserts the page reported no error so far and the browser logged none either (no
    /// failed request, not even the icon's, no blocked resource).
    pub fn assert_clean_console(&self) {
        self.assert_no_page_errors();
        let logged = self.log_errors.lock().unwrap().clone();
        assert!(logged.is_empty(), "the browser logged errors: {logged:?}");
    }

    /// Presses and releases one key (`Escape`, `Tab`, `Enter`).
    pub async fn press(&self, key: &str) {
        let (code, key_code) = match key {
            "Escape" => ("Escape", 27),
            "Tab" => ("Tab", 9),
            "Enter" => ("Enter", 13),
            other => panic!("no key code for {other}"),
        };
        for kind in ["rawKeyDown", "keyUp"] {
            self.send(
                "Input.dispatchKeyEvent",
                json!({ "type": kind, "key": key, "code": code,
                        "windowsVirtualKeyCode": key_code, "nativeVirtualKeyCode": key_code }),
            )
            .await;
        }
    }

    /// Polls a JavaScript condition until it is truthy (a hang guard of `timeout`, not
    /// a timing assertion). On timeout, saves a screenshot next to `shots` and panics
    /// with what the page shows.
    pub async fn wait_for(&self, condition: &str, what: &str, shots: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let probe = format!(
            "(() => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }})()"
        );
        loop {
            // While the page (re)loads, DevTools refuses to evaluate ("Inspected target
            // navigated or closed", "Execution context was destroyed"): not yet.
            let reply = self
                .raw_result(
                    "Runtime.evaluate",
                    json!({ "expression": probe, "awaitPromise": true, "returnByValue": true }),
                    Some(&self.session),
                )
                .await;
            let navigating = |error: &Value| {
                let message = error["message"].as_str().unwrap_or_default();
                message.contains("navigated") || message.contains("context")
            };
            match reply {
                Ok(result) if result.get("exceptionDetails").is_some() => {
                    panic!("the page threw while evaluating `{probe}`: {result}")
                }
                Ok(result) if result["result"]["value"] == Value::Bool(true) => return,
                Ok(_) => {}
                Err(error) if navigating(&error) => {}
                Err(error) => panic!("DevTools Runtime.evaluate failed: {error}"),
            }
            if Instant::now() > deadline {
                let name = format!(
                    "timeout-{}.png",
                    what.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
                );
                self.screenshot(&shots.join(&name)).await;
                let page = self
                    .eval("location.href + '\\n' + document.body.innerText.slice(0, 3000)")
                    .await;
                panic!(
                    "timed out after 60 s waiting for {what} ({condition}); screenshot {}; page:\n{}\npage errors: {:?}",
                    shots.join(name).display(),
                    page.as_str().unwrap_or(""),
                    self.page_errors.lock().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens `url`, then waits for `condition` as [`Browser::wait_for`] does.
    pub async fn navigate_then_wait(&self, url: &str, condition: &str, what: &str, shots: &Path) {
        self.navigate(url).await;
        self.wait_for(condition, what, shots).await;
    }

    /// Clicks `selector` (it must exist), then waits for `condition` as
    /// [`Browser::wait_for`] does.
    pub async fn click_then_wait(&self, selector: &str, condition: &str, what: &str, shots: &Path) {
        self.eval(&click(selector)).await;
        self.wait_for(condition, what, shots).await;
    }

    /// Saves a PNG of the viewport.
    pub async fn screenshot(&self, path: &Path) {
        let shot = self
            .send("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Headless Chromium, installed if need be; the test fails (never passes silently)
/// without it.
pub fn require_chromium() {
    let chromium = ensure_chromium();
    assert!(
        chromium.exists(),
        "headless Chromium is required and was not found at {} (apt-get install -y chromium)",
        chromium.display()
    );
}

/// The JavaScript that clicks the element `selector` (it must exist).
pub fn click(selector: &str) -> String {
    format!(
        "(() => {{ const n = document.querySelector({sel}); if (!n) throw new Error('no ' + {sel}); n.click(); return true; }})()",
        sel = serde_json::to_string(selector).unwrap()
    )
}
