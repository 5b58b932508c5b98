//! A small HTTP client for the daemon's API.

use anyhow::{Context, anyhow};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Talks to one daemon.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    actor: String,
    token: Option<String>,
}

/// An error the daemon answered with.
#[derive(Debug)]
pub(crate) struct RemoteError {
    pub(crate) status: StatusCode,
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) details: Option<Value>,
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status.as_u16(), self.message)?;
        for issue in self.details.as_ref().and_then(Value::as_array).into_iter().flatten() {
            if let (Some(p), Some(m)) = (issue["path"].as_str(), issue["message"].as_str()) {
                write!(f, "\n  at {}: {m}", if p.is_empty() { "/" } else { p })?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for RemoteError {}

impl Client {
    pub(crate) fn new(base: &str, actor: Option<&str>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        let actor = actor.map(str::to_owned).unwrap_or_else(|| {
            std::env::var("USER").map(|u| format!("cli:{u}")).unwrap_or_else(|_| "cli".into())
        });
        Ok(Self { http, base: base.trim_end_matches('/').to_owned(), actor, token: None })
    }

    /// Sends `token` as `Authorization: Bearer` with every request.
    pub(crate) fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).header("x-actuator-actor", &self.actor);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the actuator at {} (is `actuator serve` running? set --server or ACTUATOR_URL)", self.base))?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading the response")?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if status.is_success() {
            return Ok(value);
        }
        let err = &value["error"];
        Err(anyhow!(RemoteError {
            status,
            code: err["code"].as_str().unwrap_or("http_error").to_owned(),
            message: err["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string()),
            details: err.get("details").cloned(),
        }))
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }
}

/// Percent-encodes a query value.
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
