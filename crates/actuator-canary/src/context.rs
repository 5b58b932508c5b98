//! The evaluation context of one request and the choice of stickiness key.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ResolveError;

/// The OFREP name of the targeting key in a context object.
pub const TARGETING_KEY: &str = "targetingKey";

/// What one request knows about itself: a targeting key and free-form attributes.
///
/// Serializes to and from the OFREP context object:
/// `{"targetingKey": "user-123", "region": "eu-west", "tenant": "internal"}`.
/// Attributes used for targeting (the region, a stickiness attribute, an override's attribute)
/// must be strings, numbers or booleans; other attributes are carried but never read, so they
/// may have any type. A `null` attribute counts as absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalContext {
    /// The default stickiness key: a user, session or conversation id. Empty counts as absent.
    #[serde(rename = "targetingKey", default, skip_serializing_if = "Option::is_none")]
    pub targeting_key: Option<String>,
    /// Every other attribute of the request.
    #[serde(flatten)]
    pub attributes: Map<String, Value>,
}

impl EvalContext {
    /// An empty context.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A context with only a targeting key.
    #[must_use]
    pub fn with_key(key: impl Into<String>) -> Self {
        Self { targeting_key: Some(key.into()), attributes: Map::new() }
    }

    /// Adds or replaces an attribute (builder style).
    #[must_use]
    pub fn attr(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// Builds a context from an OFREP context object (the value of `"context"` in a request).
    ///
    /// # Errors
    /// [`ResolveError::Parse`] when `value` is not an object, and
    /// [`ResolveError::InvalidContext`] when `targetingKey` is present but not a string.
    pub fn from_json(value: Value) -> Result<Self, ResolveError> {
        let Value::Object(mut attributes) = value else {
            return Err(ResolveError::Parse(
                "the evaluation context must be a json object like {\"targetingKey\": \"user-1\"}"
                    .into(),
            ));
        };
        let targeting_key = match attributes.remove(TARGETING_KEY) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                return Err(ResolveError::invalid_context(
                    TARGETING_KEY,
                    format!("is {}: send the targeting key as a string", kind(&other)),
                ));
            }
        };
        Ok(Self { targeting_key, attributes })
    }

    /// Parses a context from OFREP context JSON text.
    ///
    /// # Errors
    /// [`ResolveError::Parse`] for malformed JSON, otherwise as [`EvalContext::from_json`].
    pub fn from_json_str(text: &str) -> Result<Self, ResolveError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            ResolveError::Parse(format!(
                "the evaluation context is not valid json ({e}): fix the request body"
            ))
        })?;
        Self::from_json(value)
    }

    /// Checks that every attribute is a string, number, boolean or null.
    ///
    /// Resolution only checks the attributes it reads; call this to reject nested values eagerly.
    ///
    /// # Errors
    /// [`ResolveError::InvalidContext`] naming the first nested attribute.
    pub fn validate(&self) -> Result<(), ResolveError> {
        for (name, value) in &self.attributes {
            scalar(name, value)?;
        }
        Ok(())
    }

    /// The scalar value of attribute `name`; `None` when absent or `null`.
    ///
    /// # Errors
    /// [`ResolveError::InvalidContext`] when the attribute is an object or an array.
    pub fn scalar_attribute(&self, name: &str) -> Result<Option<&Value>, ResolveError> {
        match self.attributes.get(name) {
            None => Ok(None),
            Some(v) => scalar(name, v),
        }
    }

    /// The stickiness key this context offers for `stickiness`, or `None` when it has none.
    ///
    /// String attributes are used as-is; numbers and booleans through their JSON text.
    ///
    /// # Errors
    /// [`ResolveError::InvalidContext`] when the attribute is an object or an array.
    pub fn stickiness_value(
        &self,
        stickiness: &StickinessKey,
    ) -> Result<Option<Cow<'_, str>>, ResolveError> {
        let Some(name) = stickiness.attribute_name() else {
            return Ok(self.targeting_key.as_deref().filter(|k| !k.is_empty()).map(Cow::Borrowed));
        };
        Ok(match self.scalar_attribute(name)? {
            Some(Value::String(s)) if !s.is_empty() => Some(Cow::Borrowed(s.as_str())),
            Some(Value::Number(n)) => Some(Cow::Owned(n.to_string())),
            Some(Value::Bool(b)) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            _ => None,
        })
    }
}

fn scalar<'v>(name: &str, value: &'v Value) -> Result<Option<&'v Value>, ResolveError> {
    match value {
        Value::Null => Ok(None),
        Value::Object(_) | Value::Array(_) => Err(ResolveError::invalid_context(
            name,
            format!("is {}: targeting attributes must be a string, number or boolean", kind(value)),
        )),
        v => Ok(Some(v)),
    }
}

/// The kind of a JSON value for error messages: "a string", "an array", ...
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Which context field keeps a request's assignment sticky.
///
/// Serialized as `"targeting_key"`, `"user"`, `"session"`, `"conversation"` or
/// `{"attribute": "name"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StickinessKey {
    /// The OFREP `targetingKey` (the default).
    #[default]
    TargetingKey,
    /// The `userId` attribute.
    User,
    /// The `sessionId` attribute.
    Session,
    /// The `conversationId` attribute.
    Conversation,
    /// Any named attribute.
    Attribute(String),
}

impl StickinessKey {
    /// The attribute read, or `None` for the targeting key itself.
    #[must_use]
    pub fn attribute_name(&self) -> Option<&str> {
        match self {
            Self::TargetingKey => None,
            Self::User => Some("userId"),
            Self::Session => Some("sessionId"),
            Self::Conversation => Some("conversationId"),
            Self::Attribute(name) => Some(name),
        }
    }

    /// The context field name, as used in error messages.
    #[must_use]
    pub fn field_name(&self) -> &str {
        self.attribute_name().unwrap_or(TARGETING_KEY)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_ofrep_context() {
        let c = EvalContext::from_json(json!({"targetingKey": "u1", "region": "eu"})).unwrap();
        assert_eq!(c.targeting_key.as_deref(), Some("u1"));
        assert_eq!(c.attributes.get("region"), Some(&json!("eu")));
        let back: EvalContext = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn rejects_bad_contexts() {
        assert_eq!(EvalContext::from_json(json!([1])).unwrap_err().code(), "PARSE_ERROR");
        assert_eq!(EvalContext::from_json_str("{").unwrap_err().code(), "PARSE_ERROR");
        let e = EvalContext::from_json(json!({"targetingKey": 5})).unwrap_err();
        assert_eq!(e.code(), "INVALID_CONTEXT");
        let c = EvalContext::new().attr("region", json!({"a": 1}));
        assert_eq!(c.validate().unwrap_err().code(), "INVALID_CONTEXT");
        assert_eq!(c.scalar_attribute("region").unwrap_err().code(), "INVALID_CONTEXT");
    }

    #[test]
    fn stickiness_values() {
        let c = EvalContext::with_key("")
            .attr("sessionId", 42)
            .attr("userId", "alice")
            .attr("conversationId", true);
        assert_eq!(c.stickiness_value(&StickinessKey::TargetingKey).unwrap(), None);
        assert_eq!(c.stickiness_value(&StickinessKey::User).unwrap().as_deref(), Some("alice"));
        assert_eq!(c.stickiness_value(&StickinessKey::Session).unwrap().as_deref(), Some("42"));
        assert_eq!(
            c.stickiness_value(&StickinessKey::Conversation).unwrap().as_deref(),
            Some("true")
        );
        assert_eq!(c.stickiness_value(&StickinessKey::Attribute("x".into())).unwrap(), None);
    }
}
