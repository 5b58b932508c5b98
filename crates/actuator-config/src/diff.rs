//! Structural diff between two JSON documents, by JSON Pointer path (RFC 6901).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A path present only in the new document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Added {
    /// JSON Pointer of the value.
    pub path: String,
    /// The new value.
    pub value: Value,
}

/// A path present only in the old document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Removed {
    /// JSON Pointer of the value.
    pub path: String,
    /// The old value.
    pub value: Value,
}

/// A path whose value differs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Changed {
    /// JSON Pointer of the value.
    pub path: String,
    /// The old value.
    pub from: Value,
    /// The new value.
    pub to: Value,
}

/// What differs between two documents. Objects are compared key by key and arrays index by
/// index, down to the leaves; a value whose type changes is reported as changed whole.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Diff {
    /// Paths only in the new document.
    pub added: Vec<Added>,
    /// Paths only in the old document.
    pub removed: Vec<Removed>,
    /// Paths in both, with different values.
    pub changed: Vec<Changed>,
}

impl Diff {
    /// The diff from `old` to `new`.
    pub fn between(old: &Value, new: &Value) -> Self {
        let mut d = Self::default();
        walk(&mut String::new(), old, new, &mut d);
        d
    }

    /// Whether the documents are equal.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// Number of differing paths.
    pub fn len(&self) -> usize {
        self.added.len() + self.removed.len() + self.changed.len()
    }

    /// Applies the diff to `old`, giving `new` (used to check the diff is complete).
    pub fn apply_to(&self, old: &Value) -> Value {
        let mut doc = old.clone();
        for c in &self.changed {
            set(&mut doc, &c.path, Some(c.to.clone()));
        }
        // Remove deepest/last indexes first so earlier array indexes stay valid.
        let mut removed: Vec<&Removed> = self.removed.iter().collect();
        removed.sort_by_key(|r| std::cmp::Reverse(path_index_key(&r.path)));
        for r in removed {
            set(&mut doc, &r.path, None);
        }
        for a in &self.added {
            set(&mut doc, &a.path, Some(a.value.clone()));
        }
        doc
    }
}

fn path_index_key(path: &str) -> (usize, Option<usize>) {
    let last = path.rsplit('/').next().and_then(|s| s.parse::<usize>().ok());
    (path.matches('/').count(), last)
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn walk(path: &mut String, old: &Value, new: &Value, d: &mut Diff) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let len = path.len();
                path.push('/');
                path.push_str(&escape(k));
                match b.get(k) {
                    Some(vb) => walk(path, va, vb, d),
                    None => d.removed.push(Removed { path: path.clone(), value: va.clone() }),
                }
                path.truncate(len);
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    d.added
                        .push(Added { path: format!("{path}/{}", escape(k)), value: vb.clone() });
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                match (a.get(i), b.get(i)) {
                    (Some(va), Some(vb)) => walk(path, va, vb, d),
                    (Some(va), None) => {
                        d.removed.push(Removed { path: path.clone(), value: va.clone() })
                    }
                    (None, Some(vb)) => {
                        d.added.push(Added { path: path.clone(), value: vb.clone() })
                    }
                    (None, None) => {}
                }
                path.truncate(len);
            }
        }
        _ if old == new => {}
        _ => d.changed.push(Changed { path: path.clone(), from: old.clone(), to: new.clone() }),
    }
}

fn set(doc: &mut Value, pointer: &str, value: Option<Value>) {
    if pointer.is_empty() {
        if let Some(v) = value {
            *doc = v;
        }
        return;
    }
    let (parent, last) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    let key = last.replace("~1", "/").replace("~0", "~");
    let Some(target) = doc.pointer_mut(parent) else { return };
    match target {
        Value::Object(m) => match value {
            Some(v) => {
                m.insert(key, v);
            }
            None => {
                m.remove(&key);
            }
        },
        Value::Array(arr) => {
            if let Ok(i) = key.parse::<usize>() {
                match value {
                    Some(v) if i < arr.len() => arr[i] = v,
                    Some(v) => arr.push(v),
                    None if i < arr.len() => {
                        arr.remove(i);
                    }
                    None => {}
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn reports_paths() {
        let old =
            json!({"model": "gpt-4o", "temperature": 0.2, "stop": ["a", "b"], "meta": {"x/y": 1}});
        let new = json!({"model": "gpt-4o-mini", "stop": ["a"], "meta": {"x/y": 1, "z": true}, "top_p": 0.9});
        let d = Diff::between(&old, &new);
        assert_eq!(
            d.changed,
            vec![Changed {
                path: "/model".into(),
                from: json!("gpt-4o"),
                to: json!("gpt-4o-mini")
            }]
        );
        let removed: Vec<_> = d.removed.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(removed, ["/stop/1", "/temperature"]);
        let added: Vec<_> = d.added.iter().map(|a| a.path.as_str()).collect();
        assert_eq!(added, ["/meta/z", "/top_p"]);
        assert_eq!(d.apply_to(&old), new);
        assert!(Diff::between(&new, &new).is_empty());
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-100i64..100).prop_map(|n| json!(n)),
            "[a-z]{0,4}".prop_map(Value::String),
        ]
    }

    fn doc() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c/~]{1,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Applying the diff of two documents to the first gives the second.
        #[test]
        fn diff_round_trips(a in doc(), b in doc()) {
            let d = Diff::between(&a, &b);
            prop_assert_eq!(&d.apply_to(&a), &b);
            prop_assert_eq!(d.is_empty(), a == b);
        }
    }
}
