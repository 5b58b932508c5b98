//! Turning the operator's JSON config into a plugin's typed config, naming the wrong field.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::PluginError;

/// The JSON Schema of a config type, as `hello` publishes it.
pub fn schema_of<C: JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(C)).unwrap_or(Value::Null)
}

/// Parses `config` into `C`. On failure the error names the field: the one serde reports
/// (an unknown or missing field), else the first top-level property whose value, or a value
/// nested in it, breaks the schema's `type`, `enum`, `const`, `minimum` or `maximum`, else `.`
/// (the whole document).
pub fn parse<C: DeserializeOwned + JsonSchema>(config: Value) -> Result<C, PluginError> {
    let probe = config.clone();
    serde_json::from_value::<C>(config).map_err(|e| {
        let message = e.to_string();
        let field = field_in_message(&message)
            .or_else(|| field_against_schema(&schema_of::<C>(), &probe))
            .unwrap_or_else(|| ".".to_owned());
        PluginError::InvalidConfig { field, message }
    })
}

/// `unknown field `x`` and `missing field `x`` name their field.
fn field_in_message(message: &str) -> Option<String> {
    for prefix in ["unknown field `", "missing field `", "duplicate field `"] {
        if let Some(rest) = message.split(prefix).nth(1) {
            return rest.split('`').next().map(str::to_owned);
        }
    }
    None
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => r.strip_prefix('#').and_then(|ptr| root.pointer(ptr)).unwrap_or(schema),
        None => schema,
    }
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        _ => true,
    }
}

fn breaks(root: &Value, schema: &Value, v: &Value) -> bool {
    let schema = resolve(root, schema);
    let wrong_type = match schema.get("type") {
        Some(Value::String(t)) => !type_matches(t, v),
        Some(Value::Array(ts)) => !ts.iter().filter_map(Value::as_str).any(|t| type_matches(t, v)),
        _ => false,
    };
    let not_listed =
        matches!(schema.get("enum"), Some(Value::Array(allowed)) if !allowed.contains(v));
    let no_alternative = matches!(
        schema.get("oneOf").or_else(|| schema.get("anyOf")),
        Some(Value::Array(alts)) if !alts.iter().any(|alt| !breaks(root, alt, v))
    );
    let x = v.as_f64();
    let below =
        matches!((x, schema.get("minimum").and_then(Value::as_f64)), (Some(x), Some(m)) if x < m);
    let above =
        matches!((x, schema.get("maximum").and_then(Value::as_f64)), (Some(x), Some(m)) if x > m);
    let other_const = schema.get("const").is_some_and(|c| c != v);
    if wrong_type || not_listed || no_alternative || below || above || other_const {
        return true;
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        let extra = schema.get("additionalProperties").filter(|a| a.is_object());
        if obj.iter().any(|(k, item)| {
            props.and_then(|p| p.get(k)).or(extra).is_some_and(|s| breaks(root, s, item))
        }) {
            return true;
        }
    }
    match (schema.get("items").filter(|i| i.is_object()), v.as_array()) {
        (Some(items), Some(arr)) => arr.iter().any(|item| breaks(root, items, item)),
        _ => false,
    }
}

fn field_against_schema(root: &Value, config: &Value) -> Option<String> {
    let props = root.get("properties")?.as_object()?;
    let given = config.as_object()?;
    let mut names: Vec<&String> = given.keys().collect();
    names.sort();
    names
        .into_iter()
        .find(|name| props.get(*name).is_some_and(|s| breaks(root, s, &given[*name])))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cfg {
        path: String,
        retries: u8,
        #[serde(default)]
        mode: Option<Mode>,
        #[serde(default)]
        tags: std::collections::BTreeMap<String, String>,
    }

    #[derive(Debug, Deserialize, JsonSchema)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Fast,
        Slow,
    }

    fn field(v: Value) -> String {
        match parse::<Cfg>(v) {
            Err(PluginError::InvalidConfig { field, .. }) => field,
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn every_kind_of_mistake_names_its_field() {
        assert_eq!(field(json!({"path": "x", "retries": 1, "colour": 2})), "colour");
        assert_eq!(field(json!({"retries": 1})), "path");
        assert_eq!(field(json!({"path": 3, "retries": 1})), "path");
        assert_eq!(field(json!({"path": "x", "retries": 300})), "retries");
        assert_eq!(field(json!({"path": "x", "retries": -1})), "retries");
        assert_eq!(field(json!({"path": "x", "retries": 1, "mode": "warp"})), "mode");
        assert_eq!(field(json!([1, 2])), ".");
        assert_eq!(field(json!({"path": "x", "retries": 1, "tags": {"a": 1}})), "tags");
        assert!(parse::<Cfg>(json!({"path": "x", "retries": 1, "mode": "slow"})).is_ok());
    }
}
