//! Rendering API answers for people.

use serde_json::Value;
use std::fmt::Write as _;

/// A plain aligned table.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let parts: Vec<String> =
            cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(headers.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// A JSON value as a short string (strings unquoted).
pub(crate) fn short(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A diff object (`added`, `removed`, `changed`) as lines `+ path value`, `- path`, `~ path a -> b`.
pub(crate) fn diff(d: &Value) -> String {
    let mut out = String::new();
    for c in d["changed"].as_array().into_iter().flatten() {
        let _ =
            writeln!(out, "  ~ {}: {} -> {}", c["path"].as_str().unwrap_or(""), c["from"], c["to"]);
    }
    for a in d["added"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  + {}: {}", a["path"].as_str().unwrap_or(""), a["value"]);
    }
    for r in d["removed"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  - {}: {}", r["path"].as_str().unwrap_or(""), r["value"]);
    }
    if out.is_empty() {
        out.push_str("  (no changes)\n");
    }
    out
}

/// An ISO timestamp shortened to seconds.
pub(crate) fn when(v: &Value) -> String {
    v.as_str().map(|s| s.get(..19).unwrap_or(s).replace('T', " ")).unwrap_or_default()
}
