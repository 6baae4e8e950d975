//! A real headless Chromium, driven over WebDriver (Debian's `chromium` and `chromium-driver`,
//! which `scripts/test` installs). Every host name resolves to 127.0.0.1 inside the browser, so
//! a page can be asked for by its zone's name on the node's port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{client, request_full, temp_dir, Proc, TempDir};

pub struct Browser {
    driver: SocketAddr,
    session: String,
    _proc: Proc,
    _profile: TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn call(driver: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let (status, _, text) = request_full(
        &client(),
        method,
        &format!("http://{driver}{path}"),
        &[("content-type", "application/json")],
        body,
    )
    .await;
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(status, 200, "webdriver {method} {path}: {text}");
    v["value"].clone()
}

impl Browser {
    /// Starts chromedriver and a Chromium session; `javascript` false switches scripts off.
    pub async fn start(javascript: bool) -> Browser {
        Browser::start_with(javascript, &[]).await
    }

    /// As [`Browser::start`], with more Chromium flags.
    pub async fn start_with(javascript: bool, extra: &[&str]) -> Browser {
        for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                std::path::Path::new(tool).exists(),
                "{tool} is missing: `./scripts/test` installs Debian's chromium and chromium-driver"
            );
        }
        let port = free_port();
        let proc =
            Proc::spawn_program("/usr/bin/chromedriver", &[&format!("--port={port}"), "--allowed-ips=127.0.0.1"]);
        let driver: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        proc.wait_line("started successfully");
        let profile = temp_dir("chromium-profile");
        // The flags that keep Chromium off the network it does not have (see the machine notes),
        // and every name resolved to loopback.
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1024,768".into(),
            "--host-resolver-rules=MAP * 127.0.0.1".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let args: Vec<String> = args.into_iter().chain(extra.iter().map(|a| a.to_string())).collect();
        let mut options = json!({ "binary": "/usr/bin/chromium", "args": args });
        if !javascript {
            options["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": options,
        }}});
        let v = call(driver, "POST", "/session", Some(caps)).await;
        let session = v["sessionId"].as_str().expect("a session id").to_string();
        Browser { driver, session, _proc: proc, _profile: profile }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        call(self.driver, method, &format!("/session/{}{path}", self.session), body).await
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn url(&self) -> String {
        self.call("GET", "/url", None).await.as_str().unwrap_or_default().to_string()
    }

    /// The page's text as the browser shows it.
    pub async fn text(&self) -> String {
        let v = self
            .call(
                "POST",
                "/execute/sync",
                Some(json!({ "script": "return document.body ? document.body.innerText : ''", "args": [] })),
            )
            .await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// The first element matching a CSS selector (WebDriver's element ID).
    async fn element(&self, css: &str) -> String {
        let v = self.call("POST", "/element", Some(json!({ "using": "css selector", "value": css }))).await;
        v.as_object().and_then(|o| o.values().next()).and_then(|id| id.as_str()).unwrap_or_default().to_string()
    }

    /// Replaces the value of the element matching `css` with `text`, typed.
    pub async fn fill(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call("POST", &format!("/element/{id}/clear"), Some(json!({}))).await;
        self.call("POST", &format!("/element/{id}/value"), Some(json!({ "text": text }))).await;
    }

    /// Clicks the element matching `css` (a button submits its form, as a person's click would).
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call("POST", &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    /// The page's source (works with scripts switched off).
    pub async fn source(&self) -> String {
        self.call("GET", "/source", None).await.as_str().unwrap_or_default().to_string()
    }

    /// Waits until the page source contains `needle`; returns how long it took.
    pub async fn wait_for(&self, needle: &str, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.source().await.contains(needle) {
                return start.elapsed();
            }
            if start.elapsed() >= within {
                let text = self.text().await;
                panic!("the page never showed {needle:?}; it is at {}, showing:\n{text}", self.url().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Cookies the browser holds for the current page: (name, value).
    pub async fn cookies(&self) -> Vec<(String, String)> {
        let v = self.call("GET", "/cookie", None).await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        (c["name"].as_str().unwrap_or("").to_string(), c["value"].as_str().unwrap_or("").to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Saves a screenshot as `target/screenshots/NAME.png` (for a person to look at).
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let v = self.call("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
        let dir = target.join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends Chromium with the session; chromedriver itself is killed with its Proc.
        let (driver, session) = (self.driver, self.session.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        request_full(
                            &client(),
                            "DELETE",
                            &format!("http://{driver}/session/{session}"),
                            &[],
                            Vec::new(),
                        ),
                    )
                    .await;
                });
            }
        })
        .join();
    }
}
