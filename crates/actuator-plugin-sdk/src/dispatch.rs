//! One plugin type's side of the protocol: builds instances on `configure` and answers the
//! other methods, with every panic caught and turned into a JSON-RPC error.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::any::Any;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::wire::{
    self, ApiVersion, ConfigureParams, ConfigureResult, HealthParams, HealthResult, Hello, Kind,
    NotifyParams, PluginDescriptor, QueryParams, QueryResult, Request, Response, RpcError, code,
};
use crate::{Plugin, PluginError, config};

/// Configured instances one plugin holds at most (a `configure` beyond it is refused).
pub const MAX_INSTANCES: usize = 64;

/// Answers the protocol for the plugin type `P`: the engine behind [`crate::serve_stdio`] and
/// [`crate::export_plugin!`]. Safe to share between threads; a call runs without holding any
/// lock, so one slow call does not hold up another.
#[derive(Debug)]
pub struct Dispatcher<P: Plugin> {
    api: ApiVersion,
    instances: Mutex<BTreeMap<u64, Arc<P>>>,
    next: AtomicU64,
    shutdown: AtomicBool,
}

impl<P: Plugin> Default for Dispatcher<P> {
    fn default() -> Self {
        Self::new(ApiVersion::NOTIFIER_AND_METRIC_SOURCE)
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

fn params<T: DeserializeOwned>(method: &str, v: Value) -> Result<T, RpcError> {
    serde_json::from_value(v).map_err(|e| {
        RpcError::new(code::INVALID_PARAMS, format!("params of `{method}` do not fit: {e}"))
    })
}

fn to_rpc(e: PluginError) -> RpcError {
    match e {
        PluginError::InvalidConfig { field, message } => RpcError {
            code: code::INVALID_CONFIG,
            message: format!("invalid config at `{field}`: {message}"),
            data: Some(json!({ "field": field })),
        },
        PluginError::Failed(m) => RpcError::new(code::FAILED, m),
    }
}

fn ok(v: impl Serialize) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::new(code::FAILED, e.to_string()))
}

impl<P: Plugin> Dispatcher<P> {
    /// A dispatcher that announces `api` in its hello (normally
    /// [`ApiVersion::NOTIFIER_AND_METRIC_SOURCE`]; another value only to test how a host
    /// refuses it).
    pub fn new(api: ApiVersion) -> Self {
        Self {
            api,
            instances: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
            shutdown: AtomicBool::new(false),
        }
    }

    /// The plugin's `hello`.
    pub fn hello(&self) -> Hello {
        Hello {
            protocol: wire::PROTOCOL.to_owned(),
            api: self.api,
            plugin: PluginDescriptor {
                name: P::META.name.to_owned(),
                version: P::META.version.to_owned(),
                kinds: P::META.kinds.to_vec(),
                description: P::META.description.to_owned(),
            },
            features: vec!["health".to_owned()],
            config_schema: config::schema_of::<P::Config>(),
        }
    }

    /// The `hello` notification, serialised.
    pub fn hello_message(&self) -> Vec<u8> {
        serde_json::to_vec(&Request::notification(wire::method::HELLO, self.hello()))
            .unwrap_or_default()
    }

    /// Whether a `shutdown` was answered.
    pub fn shutdown_requested(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Answers one message. A notification from the host (its `hello`) gets no answer
    /// (`None`); anything that is not JSON-RPC gets an error answer with a `null` id.
    pub fn handle(&self, message: &[u8]) -> Option<Response> {
        let req: Request = match serde_json::from_slice(message) {
            Ok(r) => r,
            Err(e) => {
                let code = if serde_json::from_slice::<Value>(message).is_ok() {
                    code::INVALID_REQUEST
                } else {
                    code::PARSE_ERROR
                };
                return Some(Response::err(
                    None,
                    RpcError::new(code, format!("unreadable message: {e}")),
                ));
            }
        };
        let id = req.id?;
        let outcome = catch_unwind(AssertUnwindSafe(|| self.answer(&req.method, req.params)));
        Some(match outcome {
            Ok(Ok(v)) => Response::ok(Some(id), v),
            Ok(Err(e)) => Response::err(Some(id), e),
            Err(payload) => Response::err(
                Some(id),
                RpcError::new(
                    code::PANICKED,
                    format!("plugin {} panicked: {}", P::META.name, panic_message(&*payload)),
                ),
            ),
        })
    }

    /// Answers one message into bytes (a cdylib's `call`); a notification gets an empty buffer.
    pub fn handle_bytes(&self, message: &[u8]) -> Vec<u8> {
        match self.handle(message) {
            Some(r) => serde_json::to_vec(&r).unwrap_or_default(),
            None => Vec::new(),
        }
    }

    fn instance(&self, id: u64) -> Result<Arc<P>, RpcError> {
        self.instances.lock().unwrap_or_else(PoisonError::into_inner).get(&id).cloned().ok_or_else(
            || {
                RpcError::new(
                    code::UNKNOWN_INSTANCE,
                    format!("no instance {id}; call configure first"),
                )
            },
        )
    }

    fn answer(&self, method: &str, p: Value) -> Result<Value, RpcError> {
        match method {
            wire::method::CONFIGURE => {
                let p: ConfigureParams = params(method, p)?;
                if !P::META.kinds.contains(&p.kind) {
                    return Err(RpcError::new(
                        code::UNSUPPORTED_KIND,
                        format!("plugin {} is not a {}", P::META.name, p.kind),
                    ));
                }
                let cfg = config::parse::<P::Config>(p.config).map_err(to_rpc)?;
                let instance = P::new(cfg).map_err(to_rpc)?;
                let supported = match p.kind {
                    Kind::Notifier => instance.as_notifier().is_some(),
                    Kind::MetricSource => instance.as_metric_source().is_some(),
                    Kind::Store => false,
                };
                if !supported {
                    return Err(RpcError::new(
                        code::UNSUPPORTED_KIND,
                        format!(
                            "plugin {} announces {} but does not implement it",
                            P::META.name,
                            p.kind
                        ),
                    ));
                }
                let mut all = self.instances.lock().unwrap_or_else(PoisonError::into_inner);
                if all.len() >= MAX_INSTANCES {
                    return Err(RpcError::new(
                        code::FAILED,
                        format!("plugin {} holds {MAX_INSTANCES} instances already", P::META.name),
                    ));
                }
                let id = self.next.fetch_add(1, Ordering::SeqCst);
                all.insert(id, Arc::new(instance));
                crate::log::debug(&format!("instance {id} configured as {} {:?}", p.kind, p.name));
                ok(ConfigureResult { instance: id })
            }
            wire::method::NOTIFY => {
                let p: NotifyParams = params(method, p)?;
                let inst = self.instance(p.instance)?;
                let n = inst.as_notifier().ok_or_else(|| {
                    RpcError::new(
                        code::UNSUPPORTED_KIND,
                        format!("plugin {} is not a notifier", P::META.name),
                    )
                })?;
                n.notify(&p.event).map_err(to_rpc)?;
                ok(json!({}))
            }
            wire::method::QUERY => {
                let p: QueryParams = params(method, p)?;
                let inst = self.instance(p.instance)?;
                let m = inst.as_metric_source().ok_or_else(|| {
                    RpcError::new(
                        code::UNSUPPORTED_KIND,
                        format!("plugin {} is not a metric source", P::META.name),
                    )
                })?;
                let value = m.query(&p.query).map_err(to_rpc)?;
                ok(QueryResult { value: value.filter(|v| v.is_finite()) })
            }
            wire::method::HEALTH => {
                let p: HealthParams =
                    if p.is_null() { HealthParams::default() } else { params(method, p)? };
                let checked = match p.instance {
                    Some(id) => self.instance(id)?.health(),
                    None => Ok(()),
                };
                ok(match checked {
                    Ok(()) => HealthResult { ok: true, detail: None },
                    Err(e) => HealthResult { ok: false, detail: Some(e.to_string()) },
                })
            }
            wire::method::SHUTDOWN => {
                self.shutdown.store(true, Ordering::SeqCst);
                ok(json!({}))
            }
            other => Err(RpcError::new(code::METHOD_NOT_FOUND, format!("no method `{other}`"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MetricSourcePlugin, NotifierPlugin, PluginMeta};
    use serde::Deserialize;
    use std::sync::atomic::AtomicUsize;

    static DELIVERED: AtomicUsize = AtomicUsize::new(0);

    #[derive(Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        value: f64,
    }

    struct Both(f64);
    impl Plugin for Both {
        type Config = Cfg;
        const META: PluginMeta =
            PluginMeta::notifier("both", "1.2.3").with_kinds(&[Kind::Notifier, Kind::MetricSource]);
        fn new(c: Cfg) -> Result<Self, PluginError> {
            Ok(Self(c.value))
        }
        fn as_notifier(&self) -> Option<&dyn NotifierPlugin> {
            Some(self)
        }
        fn as_metric_source(&self) -> Option<&dyn MetricSourcePlugin> {
            Some(self)
        }
    }
    impl NotifierPlugin for Both {
        fn notify(&self, e: &crate::Event) -> Result<(), PluginError> {
            if e.kind == "boom" {
                panic!("boom event");
            }
            DELIVERED.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
    impl MetricSourcePlugin for Both {
        fn query(&self, q: &str) -> Result<Option<f64>, PluginError> {
            Ok((q == "x").then_some(self.0))
        }
    }

    fn call(d: &Dispatcher<Both>, id: u64, method: &str, p: Value) -> Result<Value, RpcError> {
        let line = serde_json::to_vec(&Request::call(id, method, p)).unwrap();
        let r = d.handle(&line).unwrap();
        assert_eq!(r.id, Some(id));
        r.into_result()
    }

    fn event(kind: &str) -> Value {
        json!({"kind": kind, "severity": "info", "at": "2026-01-01T00:00:00Z", "actor": "a",
               "target": "t", "summary": "s", "details": null})
    }

    #[test]
    fn configure_then_notify_query_and_health() {
        let d = Dispatcher::<Both>::default();
        let hello = d.hello();
        assert_eq!(hello.plugin.name, "both");
        // What a notifier uses is in 1.0: hosts of 1.0 accept it.
        assert_eq!(hello.api, ApiVersion { major: 1, minor: 0 });
        assert_eq!(hello.config_schema["properties"]["value"]["type"], "number");
        let r = call(
            &d,
            1,
            "configure",
            json!({"kind": "metric_source", "name": "m", "config": {"value": 2.5}}),
        )
        .unwrap();
        let inst = r["instance"].as_u64().unwrap();
        assert_eq!(
            call(&d, 2, "query", json!({"instance": inst, "query": "x"})).unwrap()["value"],
            2.5
        );
        assert!(
            call(&d, 3, "query", json!({"instance": inst, "query": "y"})).unwrap()["value"]
                .is_null()
        );
        let before = DELIVERED.load(Ordering::SeqCst);
        call(&d, 4, "notify", json!({"instance": inst, "event": event("config.apply")})).unwrap();
        assert_eq!(DELIVERED.load(Ordering::SeqCst), before + 1);
        assert_eq!(call(&d, 5, "health", json!({"instance": inst})).unwrap()["ok"], true);
        let e = call(&d, 6, "notify", json!({"instance": 99, "event": event("x")})).unwrap_err();
        assert_eq!(e.code, code::UNKNOWN_INSTANCE);
    }

    #[test]
    fn a_panic_becomes_an_error_and_the_next_call_works() {
        let d = Dispatcher::<Both>::default();
        let inst = call(
            &d,
            1,
            "configure",
            json!({"kind": "notifier", "name": "n", "config": {"value": 1}}),
        )
        .unwrap()["instance"]
            .as_u64()
            .unwrap();
        let e =
            call(&d, 2, "notify", json!({"instance": inst, "event": event("boom")})).unwrap_err();
        assert_eq!(e.code, code::PANICKED);
        assert!(e.message.contains("boom event"), "{e}");
        call(&d, 3, "notify", json!({"instance": inst, "event": event("ok")})).unwrap();
    }

    #[test]
    fn bad_config_bad_params_and_unknown_methods_are_told_apart() {
        let d = Dispatcher::<Both>::default();
        let e = call(
            &d,
            1,
            "configure",
            json!({"kind": "notifier", "name": "n", "config": {"value": "high"}}),
        )
        .unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert_eq!(e.data.unwrap()["field"], "value");
        let e = call(&d, 2, "configure", json!({"kind": "notifier"})).unwrap_err();
        assert_eq!(e.code, code::INVALID_PARAMS);
        let e = call(&d, 3, "frobnicate", json!({})).unwrap_err();
        assert_eq!(e.code, code::METHOD_NOT_FOUND);
        let r = d.handle(b"not json").unwrap();
        assert_eq!(r.error.unwrap().code, code::PARSE_ERROR);
        assert!(d.handle(br#"{"jsonrpc":"2.0","method":"hello","params":{}}"#).is_none());
        call(&d, 4, "shutdown", json!({})).unwrap();
        assert!(d.shutdown_requested());
    }
}
