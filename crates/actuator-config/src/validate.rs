//! Validation of a config document before it is written: built-in checks for the common
//! LLM fields, then the slot's JSON Schema when it has one.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One problem found in a document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationIssue {
    /// JSON Pointer of the offending value (`""` for the whole document).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ValidationIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() { "/" } else { &self.path };
        write!(f, "{path}: {}", self.message)
    }
}

/// Where the built-in checks look for sampling parameters: the top level and these objects.
const PARAM_CONTAINERS: [&str; 3] = ["", "/parameters", "/params"];

fn issue(path: String, message: impl Into<String>) -> ValidationIssue {
    ValidationIssue { path, message: message.into() }
}

fn check_range(
    doc: &Value,
    base: &str,
    key: &str,
    lo: f64,
    hi: f64,
    out: &mut Vec<ValidationIssue>,
) {
    let path = format!("{base}/{key}");
    if let Some(v) = doc.pointer(&path) {
        match v.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => {}
            Some(x) => {
                out.push(issue(path, format!("{key} must be between {lo} and {hi}, got {x}")))
            }
            None => out.push(issue(path, format!("{key} must be a number between {lo} and {hi}"))),
        }
    }
}

/// The built-in checks: the document is a JSON object; `model`, if present, is a non-empty
/// string; `temperature` is in 0–2, `top_p` in 0–1 and `max_tokens` a positive integer,
/// at the top level or inside `parameters`/`params`.
pub fn builtin_checks(doc: &Value) -> Vec<ValidationIssue> {
    let mut out = Vec::new();
    if !doc.is_object() {
        out.push(issue(String::new(), "a config document must be a JSON object"));
        return out;
    }
    if let Some(m) = doc.get("model") {
        match m.as_str() {
            Some(s) if !s.trim().is_empty() => {}
            _ => out.push(issue("/model".into(), "model must be a non-empty string")),
        }
    }
    for base in PARAM_CONTAINERS {
        if !base.is_empty() && !doc.pointer(base).is_some_and(Value::is_object) {
            continue;
        }
        check_range(doc, base, "temperature", 0.0, 2.0, &mut out);
        check_range(doc, base, "top_p", 0.0, 1.0, &mut out);
        let path = format!("{base}/max_tokens");
        if let Some(v) = doc.pointer(&path)
            && v.as_u64().is_none_or(|n| n == 0)
        {
            out.push(issue(path, format!("max_tokens must be a positive integer, got {v}")));
        }
    }
    out
}

/// Checks that a slot schema is a valid JSON Schema.
pub fn check_schema(schema: &Value) -> Result<(), String> {
    jsonschema::validator_for(schema).map(|_| ()).map_err(|e| e.to_string())
}

/// Validates `doc` with the built-in checks and, when given, the slot's JSON Schema.
/// Returns every issue found (empty when the document is valid).
pub fn validate(doc: &Value, schema: Option<&Value>) -> Vec<ValidationIssue> {
    let mut out = builtin_checks(doc);
    if let Some(schema) = schema {
        match jsonschema::validator_for(schema) {
            Ok(v) => out.extend(
                v.iter_errors(doc).map(|e| issue(e.instance_path().to_string(), e.to_string())),
            ),
            Err(e) => out.push(issue(String::new(), format!("the slot's schema is invalid: {e}"))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(doc: Value) -> Vec<String> {
        builtin_checks(&doc).into_iter().map(|i| i.path).collect()
    }

    #[test]
    fn builtin_ranges() {
        assert!(
            paths(json!({"model": "m", "temperature": 2, "top_p": 0, "max_tokens": 1})).is_empty()
        );
        assert_eq!(paths(json!({"model": "m", "temperature": 2.5})), ["/temperature"]);
        assert_eq!(paths(json!({"model": "", "top_p": 1.1})), ["/model", "/top_p"]);
        assert_eq!(paths(json!({"max_tokens": 0})), ["/max_tokens"]);
        assert_eq!(paths(json!({"max_tokens": 1.5})), ["/max_tokens"]);
        assert_eq!(paths(json!({"parameters": {"temperature": -1}})), ["/parameters/temperature"]);
        assert_eq!(paths(json!({"temperature": "hot"})), ["/temperature"]);
        assert_eq!(paths(json!([1, 2])), [""]);
    }

    #[test]
    fn messages_name_the_limit() {
        let i = &builtin_checks(&json!({"temperature": 7}))[0];
        assert_eq!(i.to_string(), "/temperature: temperature must be between 0 and 2, got 7");
    }

    #[test]
    fn slot_schema_applies() {
        let schema = json!({"type": "object", "required": ["prompt"], "properties": {"prompt": {"type": "string", "minLength": 1}}});
        assert!(validate(&json!({"prompt": "hi"}), Some(&schema)).is_empty());
        let issues = validate(&json!({"prompt": ""}), Some(&schema));
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].path, "/prompt");
        assert_eq!(validate(&json!({}), Some(&schema)).len(), 1);
        assert!(check_schema(&json!({"type": "nonsense"})).is_err());
    }
}
