//! A [`MetricSource`] of the actuator that answers PromQL instant queries from a Prometheus
//! server (`GET <url>/api/v1/query`), for rollouts whose outcomes live in Prometheus.
//!
//! A query must come down to one number: a scalar, or a vector of exactly one series (wrap
//! it in `sum(...)`). An empty vector, and the value `NaN`, are `None` (no data: the engine
//! counts the look as missing data). Everything else is an error naming what came back:
//! Prometheus's own error (`bad_data: parse error ...`), a status other than 2xx, a vector
//! of several series, a matrix, a body over 1 MiB, or no answer within `timeout_ms`.
//!
//! The plugin registers itself as the metric source named `prometheus`; its config is
//! `{ "url": "http://127.0.0.1:9090", "timeout_ms": 5000, "bearer_token": "..." }` (`url`
//! required, `http` or `https`; `timeout_ms` 100 to 60,000, default 5,000; `bearer_token`
//! optional, sent as `Authorization: Bearer`).

use std::sync::Arc;
use std::time::Duration;

use actuator_core::plugin::{
    ApiVersion, HostContext, MetricSource, MetricSourceFactory, PluginError, PluginInfo,
    PluginKind, Registry, parse_config,
};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

/// The plugin's name in configuration files and in the registry.
pub const PLUGIN_NAME: &str = "prometheus";

/// The largest answer read, in bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Configuration of the `prometheus` metric source.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// The server's base URL (`http://127.0.0.1:9090`); `/api/v1/query` is appended.
    pub url: String,
    /// Milliseconds a query may take, connection included (100 to 60,000; 5,000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// A token sent as `Authorization: Bearer <token>` (a proxy in front of Prometheus).
    #[serde(default)]
    pub bearer_token: Option<String>,
}

const fn default_timeout_ms() -> u64 {
    5_000
}

impl PrometheusConfig {
    /// The JSON Schema of this configuration.
    pub fn schema() -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "prometheus metric source",
            "description": "Answers PromQL instant queries from a Prometheus server.",
            "type": "object",
            "additionalProperties": false,
            "required": ["url"],
            "properties": {
                "url": {"type": "string", "description": "Base URL, http or https."},
                "timeout_ms": {"type": "integer", "minimum": 100, "maximum": 60000, "default": 5000},
                "bearer_token": {"type": "string", "minLength": 1}
            }
        })
    }

    fn check(&self) -> Result<reqwest::Url, PluginError> {
        let bad = |field: &str, message: String| PluginError::InvalidConfig {
            plugin: PLUGIN_NAME.into(),
            field: field.into(),
            message,
        };
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err(bad(
                "timeout_ms",
                format!("must be between 100 and 60000, got {}", self.timeout_ms),
            ));
        }
        if self.bearer_token.as_deref().is_some_and(str::is_empty) {
            return Err(bad("bearer_token", "must not be empty".into()));
        }
        let base = reqwest::Url::parse(&self.url)
            .map_err(|e| bad("url", format!("{:?} is not a URL: {e}", self.url)))?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(bad(
                "url",
                format!("{:?} must be an http or https URL with a host", self.url),
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(bad("url", "must have no query or fragment".into()));
        }
        let path = format!("{}/api/v1/query", base.path().trim_end_matches('/'));
        let mut endpoint = base;
        endpoint.set_path(&path);
        Ok(endpoint)
    }
}

/// A Prometheus server's instant-query API.
#[derive(Debug)]
pub struct PrometheusSource {
    endpoint: reqwest::Url,
    client: reqwest::Client,
    bearer: Option<String>,
}

impl PrometheusSource {
    /// A source over the server of `cfg`.
    ///
    /// # Errors
    /// [`PluginError::InvalidConfig`] naming the wrong field.
    pub fn new(cfg: &PrometheusConfig) -> Result<Self, PluginError> {
        let endpoint = cfg.check()?;
        let t = Duration::from_millis(cfg.timeout_ms);
        let client = reqwest::Client::builder()
            .timeout(t)
            .connect_timeout(t)
            .user_agent(concat!("actuator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| failed(format!("building the HTTP client: {e}")))?;
        Ok(Self { endpoint, client, bearer: cfg.bearer_token.clone() })
    }

    /// The URL queries go to.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }
}

fn failed(message: String) -> PluginError {
    PluginError::Failed { plugin: PLUGIN_NAME.into(), message }
}

/// Reads one sample's value: `[<time>, "<value>"]`. `NaN` is no data.
fn sample_value(v: &Value) -> Result<Option<f64>, String> {
    let s = v
        .as_array()
        .and_then(|a| a.get(1))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("a sample is not [time, \"value\"]: {v}"))?;
    match s {
        "NaN" => Ok(None),
        "+Inf" | "-Inf" | "Inf" => Err(format!("the value is {s}")),
        _ => s.parse::<f64>().map(Some).map_err(|_| format!("the value {s:?} is not a number")),
    }
}

/// The number in a successful answer's `data`, `None` when it has none.
pub fn parse_data(data: &Value) -> Result<Option<f64>, String> {
    let kind = data.get("resultType").and_then(Value::as_str).unwrap_or("");
    let result = data.get("result").unwrap_or(&Value::Null);
    match kind {
        "scalar" => sample_value(result),
        "vector" => {
            let series = result.as_array().ok_or("a vector's result is not a list")?;
            match series.as_slice() {
                [] => Ok(None),
                [one] => sample_value(one.get("value").unwrap_or(&Value::Null)),
                many => Err(format!(
                    "the query returned {} series; it must return one number (wrap it in sum(...))",
                    many.len()
                )),
            }
        }
        other => Err(format!(
            "the query returned a {other:?}; it must return a scalar or a one-series vector (an instant query, no range selector)"
        )),
    }
}

/// Reads an answer of at most [`MAX_BODY_BYTES`].
async fn body(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading the answer: {e}"))? {
        if buf.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(format!("the answer is over {MAX_BODY_BYTES} bytes"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

#[async_trait]
impl MetricSource for PrometheusSource {
    async fn query_scalar(&self, query: &str) -> Result<Option<f64>, PluginError> {
        let mut url = self.endpoint.clone();
        url.query_pairs_mut().append_pair("query", query);
        let mut req = self.client.get(url);
        if let Some(t) = &self.bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| {
            let what = if e.is_timeout() { "timed out" } else { "could not be sent" };
            failed(format!("the query to {} {what}: {e}", self.endpoint))
        })?;
        let status = resp.status();
        let bytes = body(resp).await.map_err(failed)?;
        let doc: Value = serde_json::from_slice(&bytes).map_err(|e| {
            failed(format!("answer {status} from {} is not JSON: {e}", self.endpoint))
        })?;
        if doc.get("status").and_then(Value::as_str) != Some("success") || !status.is_success() {
            let kind = doc.get("errorType").and_then(Value::as_str).unwrap_or("error");
            let msg = doc.get("error").and_then(Value::as_str).unwrap_or("no error message");
            return Err(failed(format!("Prometheus answered {status}: {kind}: {msg}")));
        }
        parse_data(doc.get("data").unwrap_or(&Value::Null)).map_err(failed)
    }
}

/// The factory the registry builds the source with.
#[derive(Debug, Default)]
pub struct PrometheusFactory;

impl MetricSourceFactory for PrometheusFactory {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            kind: PluginKind::MetricSource,
            name: PLUGIN_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            api: ApiVersion::HOST,
            description: "Answers PromQL instant queries from a Prometheus server.".into(),
            config_schema: PrometheusConfig::schema(),
        }
    }

    fn build(&self, config: Value, _: &HostContext) -> Result<Arc<dyn MetricSource>, PluginError> {
        let cfg: PrometheusConfig = parse_config(PLUGIN_NAME, config)?;
        Ok(Arc::new(PrometheusSource::new(&cfg)?))
    }
}

/// Adds the `prometheus` metric source to `r`.
///
/// # Errors
/// [`PluginError::Duplicate`] when a metric source of that name is already registered.
pub fn register(r: &mut Registry) -> Result<(), PluginError> {
    r.add_metric_source(Arc::new(PrometheusFactory))
}

inventory::submit! { actuator_core::Registration { register } }

#[cfg(test)]
mod tests {
    use super::*;

    fn build(config: Value) -> Result<Arc<dyn MetricSource>, PluginError> {
        let mut r = Registry::empty();
        register(&mut r).unwrap();
        r.metric_source(PLUGIN_NAME, config, &HostContext::default())
    }

    #[test]
    fn config_errors_name_the_field() {
        for (config, field) in [
            (json!({"url": "ftp://x"}), "url"),
            (json!({"url": "not a url"}), "url"),
            (json!({"url": "http://x?a=1"}), "url"),
            (json!({"url": "http://x", "timeout_ms": 10}), "timeout_ms"),
            (json!({"url": "http://x", "timeout_ms": 60_001}), "timeout_ms"),
            (json!({"url": "http://x", "bearer_token": ""}), "bearer_token"),
            (json!({"url": "http://x", "timeout": 1}), "timeout"),
            (json!({}), "."),
        ] {
            match build(config.clone()).err() {
                Some(PluginError::InvalidConfig { field: f, message, .. }) => {
                    assert_eq!(f, field, "{config}: {message}")
                }
                other => panic!("{config}: {other:?}"),
            }
        }
        let s = PrometheusSource::new(&PrometheusConfig {
            url: "http://127.0.0.1:9090/prom/".into(),
            timeout_ms: 1000,
            bearer_token: None,
        })
        .unwrap();
        assert_eq!(s.endpoint(), "http://127.0.0.1:9090/prom/api/v1/query");
    }

    #[test]
    fn answers_come_down_to_one_number_or_none() {
        let v = |t: &str, r: Value| json!({"resultType": t, "result": r});
        assert_eq!(parse_data(&v("scalar", json!([1.0, "42.5"]))).unwrap(), Some(42.5));
        assert_eq!(parse_data(&v("vector", json!([]))).unwrap(), None);
        assert_eq!(
            parse_data(&v("vector", json!([{"metric": {}, "value": [1.0, "7"]}]))).unwrap(),
            Some(7.0)
        );
        assert_eq!(
            parse_data(&v("vector", json!([{"metric": {}, "value": [1.0, "NaN"]}]))).unwrap(),
            None
        );
        let two = json!([{"metric": {"a": "1"}, "value": [1.0, "1"]}, {"metric": {"a": "2"}, "value": [1.0, "2"]}]);
        assert!(parse_data(&v("vector", two)).unwrap_err().contains("2 series"));
        assert!(parse_data(&v("matrix", json!([]))).unwrap_err().contains("matrix"));
        assert!(parse_data(&v("scalar", json!([1.0, "+Inf"]))).unwrap_err().contains("+Inf"));
        assert!(parse_data(&v("scalar", json!([1.0, "x"]))).unwrap_err().contains("not a number"));
    }
}
