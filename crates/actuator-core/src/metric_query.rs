//! A rollout whose outcomes come from a metrics system: the request's `metrics` field
//! ([`MetricsSpec`]), its query templates and how they are filled in per arm.
//!
//! A template is PromQL text with placeholders `{{arm}}`, `{{slot}}`, `{{rollout}}` and
//! `{{version}}` (and `{{le}}` in the latency bucket query). Each value is escaped for a
//! double-quoted PromQL label string (`\` → `\\`, `"` → `\"`, newline → `\n`), so a template
//! writes `arm="{{arm}}"` and no value can end the string it sits in.

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// Longest query template, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 4096;
/// Most latency bucket bounds.
pub const MAX_LATENCY_BUCKETS: usize = 32;
/// Most requests fed into the analysis per look (all arms together).
pub const MAX_REQUESTS_PER_LOOK: u64 = 10_000;

/// Where a rollout's outcomes come from when they are read from a metrics system instead of
/// posted: the source, the cadence, and the queries, templated per arm.
///
/// Ranges: `source` 1 to 64 characters; `interval_ms` 500 to 300,000 (5,000);
/// `missing_limit` 1 to 1,000 (3); `max_requests_per_look` 1 to 10,000 (10,000); each
/// template 1 to 4,096 bytes with only the known placeholders; `latency_buckets_ms` 1 to 32
/// finite bounds above 0, strictly increasing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsSpec {
    /// The metric source, by the name the daemon's `[[metric_sources]]` gives it.
    pub source: String,
    /// Milliseconds between two looks at the queries (5,000).
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Consecutive looks with missing data after which the rollout is halted (paused) (3).
    #[serde(default = "default_missing_limit")]
    pub missing_limit: u32,
    /// Most requests fed into the analysis per look, all arms together (10,000): a larger
    /// delta is scaled down, every arm by the same factor.
    #[serde(default = "default_max_per_look")]
    pub max_requests_per_look: u64,
    /// Cumulative count of requests served by one arm (a counter), e.g.
    /// `sum(app_requests_total{arm="{{arm}}"})`.
    pub requests: String,
    /// Cumulative count of failed requests of one arm (a counter, a subset of `requests`).
    pub errors: String,
    /// Cumulative count of one arm's successful requests at most `{{le}}` long (a histogram's
    /// bucket), e.g. `sum(app_latency_seconds_bucket{arm="{{arm}}",le="{{le}}"})`.
    pub latency_bucket: String,
    /// The bucket bounds to read, in milliseconds, strictly increasing; `+Inf` is always
    /// read too.
    pub latency_buckets_ms: Vec<f64>,
    /// The unit of the histogram's `le` label (`seconds`, the Prometheus convention).
    #[serde(default)]
    pub latency_unit: LatencyUnit,
}

/// The unit of a histogram's `le` label.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LatencyUnit {
    /// `le="0.25"` is 250 ms.
    #[default]
    Seconds,
    /// `le="250"` is 250 ms.
    Milliseconds,
}

const fn default_interval_ms() -> u64 {
    5_000
}
const fn default_missing_limit() -> u32 {
    3
}
const fn default_max_per_look() -> u64 {
    MAX_REQUESTS_PER_LOOK
}

/// The values a template is filled with, for one arm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryVars<'a> {
    /// The arm as resolve names it: `stable`, `canary`, `shadow` or an A/B arm.
    pub arm: &'a str,
    /// The slot.
    pub slot: &'a str,
    /// The rollout id.
    pub rollout: &'a str,
    /// The config version the arm serves.
    pub version: u64,
}

/// Escapes `v` for a double-quoted PromQL string.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

/// The placeholders of `template`, in order, or the first malformed one.
fn placeholders(template: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let Some(end) = after.find("}}") else {
            return Err("`{{` without its closing `}}`".into());
        };
        out.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    Ok(out)
}

/// Fills `template` in: each placeholder replaced by its escaped value; `le` is the bucket
/// bound's label value when the template is a bucket query.
///
/// # Errors
/// A message when the template has an unknown or malformed placeholder (admission checks
/// templates with [`MetricsSpec::validate`], so a stored template renders).
pub fn render(template: &str, vars: &QueryVars<'_>, le: Option<&str>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find("}}") else {
            return Err("`{{` without its closing `}}`".into());
        };
        match (after[..end].trim(), le) {
            ("arm", _) => out.push_str(&escape_label_value(vars.arm)),
            ("slot", _) => out.push_str(&escape_label_value(vars.slot)),
            ("rollout", _) => out.push_str(&escape_label_value(vars.rollout)),
            ("version", _) => out.push_str(&vars.version.to_string()),
            ("le", Some(le)) => out.push_str(&escape_label_value(le)),
            (other, _) => return Err(format!("unknown placeholder {{{{{other}}}}}")),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The `le` label value of a bound of `ms` milliseconds in `unit`, written as Prometheus
/// clients write it (shortest form: `0.25`, `1`, `2.5`).
pub fn le_label(ms: f64, unit: LatencyUnit) -> String {
    let v = match unit {
        LatencyUnit::Seconds => ms / 1000.0,
        LatencyUnit::Milliseconds => ms,
    };
    format!("{v}")
}

fn bad(field: &str, msg: impl std::fmt::Display) -> CoreError {
    CoreError::InvalidRequest(format!("metrics.{field}: {msg}"))
}

impl MetricsSpec {
    /// Checks every field against its range, naming the field (`metrics.interval_ms`).
    ///
    /// # Errors
    /// [`CoreError::InvalidRequest`] for the first field out of its range.
    pub fn validate(&self) -> Result<(), CoreError> {
        let s = self.source.trim();
        if s.is_empty() || s.len() > 64 || s != self.source {
            return Err(bad("source", "must be 1 to 64 characters without surrounding spaces"));
        }
        if !(500..=300_000).contains(&self.interval_ms) {
            return Err(bad(
                "interval_ms",
                format!("must be between 500 and 300000, got {}", self.interval_ms),
            ));
        }
        if !(1..=1000).contains(&self.missing_limit) {
            return Err(bad(
                "missing_limit",
                format!("must be between 1 and 1000, got {}", self.missing_limit),
            ));
        }
        if !(1..=MAX_REQUESTS_PER_LOOK).contains(&self.max_requests_per_look) {
            return Err(bad(
                "max_requests_per_look",
                format!(
                    "must be between 1 and {MAX_REQUESTS_PER_LOOK}, got {}",
                    self.max_requests_per_look
                ),
            ));
        }
        for (field, t, bucket) in [
            ("requests", &self.requests, false),
            ("errors", &self.errors, false),
            ("latency_bucket", &self.latency_bucket, true),
        ] {
            if t.trim().is_empty() || t.len() > MAX_TEMPLATE_BYTES {
                return Err(bad(
                    field,
                    format!("must be 1 to {MAX_TEMPLATE_BYTES} bytes of PromQL"),
                ));
            }
            let names = placeholders(t).map_err(|m| bad(field, m))?;
            for n in &names {
                let known =
                    matches!(*n, "arm" | "slot" | "rollout" | "version") || (bucket && *n == "le");
                if !known {
                    let allowed = if bucket {
                        "{{arm}}, {{slot}}, {{rollout}}, {{version}} and {{le}}"
                    } else {
                        "{{arm}}, {{slot}}, {{rollout}} and {{version}}"
                    };
                    return Err(bad(
                        field,
                        format!("unknown placeholder {{{{{n}}}}}; use {allowed}"),
                    ));
                }
            }
            if !names.contains(&"arm") {
                return Err(bad(field, "must contain {{arm}}: each arm is queried on its own"));
            }
            if bucket && !names.contains(&"le") {
                return Err(bad(field, "must contain {{le}}: each bucket bound is queried"));
            }
        }
        let b = &self.latency_buckets_ms;
        if b.is_empty() || b.len() > MAX_LATENCY_BUCKETS {
            return Err(bad(
                "latency_buckets_ms",
                format!("must list 1 to {MAX_LATENCY_BUCKETS} bounds, got {}", b.len()),
            ));
        }
        for (i, v) in b.iter().enumerate() {
            if !v.is_finite() || *v <= 0.0 || *v > 86_400_000.0 {
                return Err(bad(
                    &format!("latency_buckets_ms[{i}]"),
                    format!("must be above 0 and at most 86400000 ms, got {v}"),
                ));
            }
            if i > 0 && *v <= b[i - 1] {
                return Err(bad(
                    &format!("latency_buckets_ms[{i}]"),
                    format!("bounds must be strictly increasing, got {v} after {}", b[i - 1]),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> MetricsSpec {
        serde_json::from_value(serde_json::json!({
            "source": "prometheus",
            "requests": "sum(req_total{arm=\"{{arm}}\",slot=\"{{slot}}\"})",
            "errors": "sum(err_total{arm=\"{{ arm }}\"})",
            "latency_bucket": "sum(lat_bucket{arm=\"{{arm}}\",le=\"{{le}}\"})",
            "latency_buckets_ms": [50, 100, 250]
        }))
        .unwrap()
    }

    #[test]
    fn templates_fill_in_escaped_values() {
        let vars = QueryVars { arm: "canary", slot: "chat.default", rollout: "ro-1", version: 7 };
        let s = spec();
        assert_eq!(
            render(&s.requests, &vars, None).unwrap(),
            "sum(req_total{arm=\"canary\",slot=\"chat.default\"})"
        );
        assert_eq!(render(&s.errors, &vars, None).unwrap(), "sum(err_total{arm=\"canary\"})");
        assert_eq!(
            render(&s.latency_bucket, &vars, Some("0.25")).unwrap(),
            "sum(lat_bucket{arm=\"canary\",le=\"0.25\"})"
        );
        assert_eq!(render("v{{version}}/{{rollout}}", &vars, None).unwrap(), "v7/ro-1");
        // A hostile value cannot end the label string it sits in.
        let evil = QueryVars { arm: "a\"} or vector(1) #\\\n", ..vars };
        let q = render("x{arm=\"{{arm}}\"}", &evil, None).unwrap();
        assert_eq!(q, "x{arm=\"a\\\"} or vector(1) #\\\\\\n\"}");
        assert!(render("{{nope}}", &vars, None).unwrap_err().contains("nope"));
        assert!(render("{{le}}", &vars, None).is_err(), "le only in a bucket query");
        assert!(render("{{arm", &vars, None).is_err());
    }

    #[test]
    fn le_labels_are_written_as_clients_write_them() {
        assert_eq!(le_label(250.0, LatencyUnit::Seconds), "0.25");
        assert_eq!(le_label(1000.0, LatencyUnit::Seconds), "1");
        assert_eq!(le_label(2500.0, LatencyUnit::Seconds), "2.5");
        assert_eq!(le_label(250.0, LatencyUnit::Milliseconds), "250");
    }

    #[test]
    fn every_field_is_checked_by_name() {
        spec().validate().unwrap();
        type Change = Box<dyn Fn(&mut MetricsSpec)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|s| s.source = String::new()), "metrics.source"),
            (Box::new(|s| s.interval_ms = 100), "metrics.interval_ms"),
            (Box::new(|s| s.interval_ms = 300_001), "metrics.interval_ms"),
            (Box::new(|s| s.missing_limit = 0), "metrics.missing_limit"),
            (Box::new(|s| s.max_requests_per_look = 10_001), "metrics.max_requests_per_look"),
            (Box::new(|s| s.requests = "sum(x)".into()), "metrics.requests: must contain {{arm}}"),
            (Box::new(|s| s.errors = "x{a=\"{{bogus}}\"}".into()), "metrics.errors: unknown"),
            (Box::new(|s| s.errors = "x{{arm}".into()), "metrics.errors"),
            (Box::new(|s| s.requests = "{{le}}{{arm}}".into()), "metrics.requests: unknown"),
            (Box::new(|s| s.latency_bucket = "x{{arm}}".into()), "metrics.latency_bucket"),
            (Box::new(|s| s.requests = "x".repeat(5000)), "metrics.requests"),
            (Box::new(|s| s.latency_buckets_ms.clear()), "metrics.latency_buckets_ms"),
            (Box::new(|s| s.latency_buckets_ms[1] = 50.0), "metrics.latency_buckets_ms[1]"),
            (Box::new(|s| s.latency_buckets_ms[0] = f64::NAN), "metrics.latency_buckets_ms[0]"),
            (Box::new(|s| s.latency_buckets_ms[0] = -1.0), "metrics.latency_buckets_ms[0]"),
            (Box::new(|s| s.latency_buckets_ms = vec![1.0; 33]), "metrics.latency_buckets_ms"),
        ];
        for (change, field) in cases {
            let mut s = spec();
            change(&mut s);
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(field), "expected {field} in {e}");
        }
        let unknown = serde_json::from_value::<MetricsSpec>(serde_json::json!({
            "source": "p", "requests": "{{arm}}", "errors": "{{arm}}",
            "latency_bucket": "{{arm}}{{le}}", "latency_buckets_ms": [1], "query": "x"
        }));
        assert!(unknown.unwrap_err().to_string().contains("unknown field `query`"));
    }
}
