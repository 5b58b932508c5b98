//! A small W3C WebDriver client over reqwest: the few commands the dashboard test needs
//! (navigate, find, click, type, run a script, take a screenshot), against a chromedriver
//! this module starts and stops.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The key of an element reference in W3C WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one headless Chromium session on it.
pub(crate) struct Browser {
    http: reqwest::Client,
    session: String,
    base: String,
    driver: Child,
}

/// Where Debian installs Chromium and its driver.
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
/// The driver.
pub(crate) const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless session.
    pub(crate) async fn start() -> Self {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "{CHROMIUM} and {CHROMEDRIVER} are needed: `apt-get install chromium chromium-driver` (cargo xtask test installs them)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1800"],
            },
        }}});
        let mut b = Self { http, session: String::new(), base, driver };
        let v = b.send(reqwest::Method::POST, "/session", Some(caps)).await;
        b.session = v["sessionId"].as_str().expect("a session id").to_owned();
        b
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let mut r = self.http.request(method, &url);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "WebDriver {path}: {status} {v}");
        v["value"].clone()
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url`.
    pub(crate) async fn goto(&self, url: &str) {
        self.send(reqwest::Method::POST, &self.at("/url"), Some(json!({"url": url}))).await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub(crate) async fn js(&self, script: &str, args: Value) -> Value {
        self.send(
            reqwest::Method::POST,
            &self.at("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Waits until `script` returns something other than `null`, `false` or `""`, and returns
    /// it; panics with `what` after `secs` seconds.
    pub(crate) async fn wait_for(&self, what: &str, secs: u64, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.js(script, json!([])).await;
            if !(v.is_null() || v == json!(false) || v == json!("")) {
                return v;
            }
            if Instant::now() > deadline {
                let text = self.js("return document.body.innerText", json!([])).await;
                panic!(
                    "timed out waiting for {what}; the page shows:\n{}",
                    text.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .send(
                reqwest::Method::POST,
                &self.at("/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_owned()
    }

    /// Clicks the element `css` selects (as a user would: the driver checks it is visible
    /// and enabled).
    pub(crate) async fn click(&self, css: &str) {
        self.act(css, "click", json!({})).await;
    }

    /// Runs the element command `command` on the element `css` selects. Live pages redraw: an
    /// element replaced (or not yet shown) between finding and acting on it is found again.
    async fn act(&self, css: &str, command: &str, body: Value) {
        let mut last = Value::Null;
        for _ in 0..10 {
            let e = self.element(css).await;
            let url = format!("{}{}", self.base, self.at(&format!("/element/{e}/{command}")));
            let resp = self.http.post(&url).json(&body).send().await.expect(command);
            let status = resp.status();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                return;
            }
            let error = v["value"]["error"].as_str().unwrap_or_default();
            if !matches!(error, "stale element reference" | "element not interactable") {
                panic!("WebDriver {command} on {css}: {status} {v}");
            }
            last = v;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{command} on {css} failed every time: {last}");
    }

    /// Types `text` into the element `css` selects (found again if a redraw replaced it).
    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        self.act(css, "value", json!({"text": text})).await;
    }

    /// A PNG of the window.
    pub(crate) async fn screenshot(&self) -> Vec<u8> {
        let v = self.send(reqwest::Method::GET, &self.at("/screenshot"), None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 PNG"))
            .expect("a valid base64 PNG")
    }
}

impl Drop for Browser {
    /// Ends the session (so that the driver closes Chromium) even when a test panics, then
    /// the driver.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let addr = self.base.trim_start_matches("http://").to_owned();
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let req = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
                self.session
            );
            if s.write_all(req.as_bytes()).is_ok() {
                let _ = s.read(&mut [0u8; 512]);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
