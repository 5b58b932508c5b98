//! Secret fields of a config document, and their masking.
//!
//! A field is secret when the slot's JSON Schema marks it (`writeOnly: true` or
//! `x-secret: true` on the field's schema), or when its name says so: `api_key`, `apikey`,
//! `password`, `secret`, `token`, `private_key`, `access_key`, or a name ending in
//! `_api_key`, `_token`, `_secret` or `_password` (case-insensitive). `x-secret: false` on a field's schema keeps a field of such
//! a name in the clear. Everything inside a secret field is secret.
//!
//! Secrets are stored and served to applications (`client` tokens) as they are; everywhere
//! else (audit diffs, versions, snapshots, rollouts, diffs, and to people's tokens) each
//! secret value is replaced by [`MASK`]. The audit chain still covers the real value: an
//! entry's document hash is computed from the stored document.

use serde_json::Value;

use crate::diff::Diff;

/// What a secret value is shown as.
pub const MASK: &str = "***";

/// Whether a field's name marks it secret by default.
pub fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "api_key" | "apikey" | "password" | "secret" | "token" | "private_key" | "access_key"
    ) || ["_api_key", "_token", "_secret", "_password"].iter().any(|s| n.ends_with(s))
}

/// The schema of property `key` inside an object schema, if the schema says.
fn property<'a>(schema: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    let s = schema?;
    s.get("properties")
        .and_then(|p| p.get(key))
        .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
}

/// The schema of the items of an array schema.
fn items(schema: Option<&Value>) -> Option<&Value> {
    schema?.get("items").filter(|i| i.is_object())
}

/// Whether the field `key` with schema `sub` is secret.
fn secret_field(key: &str, sub: Option<&Value>) -> bool {
    let flag = |k: &str| sub.and_then(|s| s.get(k)).and_then(Value::as_bool);
    match flag("x-secret") {
        Some(explicit) => explicit,
        None => flag("writeOnly") == Some(true) || secret_name(key),
    }
}

/// `doc` with every secret value replaced by [`MASK`] (a `null` stays `null`: there is
/// nothing to hide). `schema` is the slot's JSON Schema, if it has one.
pub fn mask(doc: &Value, schema: Option<&Value>) -> Value {
    match doc {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let sub = property(schema, k);
                    let out = if secret_field(k, sub) && !v.is_null() {
                        Value::String(MASK.into())
                    } else {
                        mask(v, sub)
                    };
                    (k.clone(), out)
                })
                .collect(),
        ),
        Value::Array(a) => {
            let sub = items(schema);
            Value::Array(a.iter().map(|v| mask(v, sub)).collect())
        }
        other => other.clone(),
    }
}

/// Whether `doc` holds any secret value.
pub fn has_secrets(doc: &Value, schema: Option<&Value>) -> bool {
    match doc {
        Value::Object(m) => m.iter().any(|(k, v)| {
            let sub = property(schema, k);
            (secret_field(k, sub) && !v.is_null()) || has_secrets(v, sub)
        }),
        Value::Array(a) => {
            let sub = items(schema);
            a.iter().any(|v| has_secrets(v, sub))
        }
        _ => false,
    }
}

/// Every non-empty string at or under a secret field of `doc`.
fn secret_strings<'a>(
    doc: &'a Value,
    schema: Option<&Value>,
    inside: bool,
    out: &mut Vec<&'a str>,
) {
    match doc {
        Value::String(s) if inside && !s.is_empty() => out.push(s),
        Value::Object(m) => {
            for (k, v) in m {
                let sub = property(schema, k);
                secret_strings(v, sub, inside || secret_field(k, sub), out);
            }
        }
        Value::Array(a) => {
            let sub = items(schema);
            for v in a {
                secret_strings(v, sub, inside, out);
            }
        }
        _ => {}
    }
}

/// `text` (an error message about `doc`, say a validation issue that quotes a value) with
/// every secret string of `doc` replaced by [`MASK`].
pub fn scrub(text: &str, doc: &Value, schema: Option<&Value>) -> String {
    let mut secrets = Vec::new();
    secret_strings(doc, schema, false, &mut secrets);
    // Longest first, so a secret that contains another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for s in secrets {
        out = out.replace(s, MASK);
    }
    out
}

/// Walks a JSON Pointer through the schema: whether a field on the way is secret, and the
/// schema at its end.
fn along<'a>(path: &str, schema: Option<&'a Value>) -> (bool, Option<&'a Value>) {
    let mut s = schema;
    for raw in path.split('/').skip(1) {
        let token = raw.replace("~1", "/").replace("~0", "~");
        let is_index = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
        if is_index && s.and_then(|x| x.get("items")).is_some() {
            s = items(s);
            continue;
        }
        let sub = property(s, &token);
        if secret_field(&token, sub) {
            return (true, sub);
        }
        s = sub;
    }
    (false, s)
}

/// `diff` with secret values masked: an entry at or under a secret field shows [`MASK`]
/// (so a changed secret still shows as changed), other values are masked inside.
pub fn mask_diff(diff: &Diff, schema: Option<&Value>) -> Diff {
    let masked = |path: &str, v: &Value| {
        let (secret, sub) = along(path, schema);
        if secret && !v.is_null() { Value::String(MASK.into()) } else { mask(v, sub) }
    };
    let mut out = diff.clone();
    for a in &mut out.added {
        a.value = masked(&a.path, &a.value);
    }
    for r in &mut out.removed {
        r.value = masked(&r.path, &r.value);
    }
    for c in &mut out.changed {
        c.from = masked(&c.path, &c.from);
        c.to = masked(&c.path, &c.to);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_and_schema_marks_make_fields_secret() {
        let schema = json!({"type": "object", "properties": {
            "endpoint": {"type": "object", "properties": {"auth": {"writeOnly": true}}},
            "signing": {"x-secret": true},
            "max_tokens": {"type": "integer"},
            "session_token": {"x-secret": false},
            "tools": {"type": "array", "items": {"properties": {"bearer": {"x-secret": true}}}}
        }});
        let doc = json!({
            "model": "gpt", "max_tokens": 100, "api_key": "sk-1", "openai_token": "t",
            "endpoint": {"url": "u", "auth": {"user": "a", "pass": "b"}},
            "signing": "s", "session_token": "public", "cache_key": "k", "empty_secret": null,
            "tools": [{"name": "x", "bearer": "b1"}], "nested": [{"Password": "p"}]
        });
        let m = mask(&doc, Some(&schema));
        assert_eq!(m["model"], "gpt");
        assert_eq!(m["max_tokens"], 100, "a name ending in _tokens is not a token");
        for p in [
            "/api_key",
            "/openai_token",
            "/endpoint/auth",
            "/signing",
            "/tools/0/bearer",
            "/nested/0/Password",
        ] {
            assert_eq!(m.pointer(p), Some(&json!(MASK)), "{p}: {m}");
        }
        assert_eq!(m["endpoint"]["url"], "u");
        assert_eq!(m["session_token"], "public", "x-secret: false keeps it in the clear");
        assert_eq!(m["cache_key"], "k", "a key is not a secret by name alone");
        assert_eq!(m["empty_secret"], Value::Null);
        assert!(has_secrets(&doc, Some(&schema)));
        assert!(!has_secrets(&m, None) || m.to_string().contains(MASK));
        assert!(!m.to_string().contains("sk-1") && !m.to_string().contains("b1"));
        assert!(!has_secrets(&json!({"model": "m", "temperature": 0.2}), None));
    }

    #[test]
    fn scrubbed_messages_do_not_quote_secrets() {
        let doc = json!({"api_key": "sk-live-123", "model": "m", "auth": {"password": ["pw1"]}});
        let msg = "/api_key: \"sk-live-123\" is too long; /auth/password/0: \"pw1\" bad; model m";
        let s = scrub(msg, &doc, None);
        assert!(!s.contains("sk-live-123") && !s.contains("pw1"), "{s}");
        assert!(s.contains("model m"));
    }

    #[test]
    fn a_masked_diff_shows_that_a_secret_changed_but_not_its_values() {
        let old = json!({"model": "a", "api_key": "sk-old", "auth": {"user": "u"}});
        let new = json!({"model": "b", "api_key": "sk-new", "auth": {"user": "u", "client_secret": "c"},
            "extra": {"password": "p", "x": 1}});
        let d = mask_diff(&Diff::between(&old, &new), None);
        let text = serde_json::to_string(&d).unwrap();
        for s in ["sk-old", "sk-new", "\"c\"", "\"p\""] {
            assert!(!text.contains(s), "{s} leaked: {text}");
        }
        assert!(d.changed.iter().any(|c| c.path == "/api_key" && c.from == MASK && c.to == MASK));
        assert!(d.changed.iter().any(|c| c.path == "/model" && c.to == "b"));
        assert!(d.added.iter().any(|a| a.path == "/auth/client_secret" && a.value == MASK));
        let extra = d.added.iter().find(|a| a.path == "/extra").map(|a| a.value.clone());
        assert_eq!(extra, Some(json!({"password": MASK, "x": 1})));
    }
}
