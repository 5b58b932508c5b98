//! A plugin written against `actuator-plugin-sdk` and linked into the daemon: the compiled-in
//! tier of an SDK plugin, with the guards of the other tiers (config checked the same way,
//! calls on a blocking thread with a timeout, panics caught).

use actuator_core::plugin::{
    ApiVersion as CoreApi, Event, HostContext, MetricSource, MetricSourceFactory, Notifier,
    NotifierFactory, PluginError, PluginHealth, PluginInfo, PluginKind, PluginStatus, PluginTier,
};
use actuator_plugin_sdk::{Plugin, config};
use async_trait::async_trait;
use serde_json::Value;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use crate::{HealthCell, Hosted, failed};

/// An instance of `P` behind the core traits.
pub struct InProcess<P: Plugin> {
    plugin: Arc<P>,
    timeout: Duration,
    health: Arc<HealthCell>,
}

impl<P: Plugin> std::fmt::Debug for InProcess<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess").field("plugin", &P::META.name).finish()
    }
}

fn from_sdk(name: &str, e: actuator_plugin_sdk::PluginError) -> PluginError {
    match e {
        actuator_plugin_sdk::PluginError::InvalidConfig { field, message } => {
            PluginError::InvalidConfig { plugin: name.to_owned(), field, message }
        }
        other => failed(name, other.to_string()),
    }
}

impl<P: Plugin> InProcess<P> {
    /// Builds an instance of `P` from JSON config, refusing a bad one with the field named.
    pub fn build(kind: PluginKind, config: Value, timeout: Duration) -> Result<Self, PluginError> {
        let name = P::META.name;
        let cfg = config::parse::<P::Config>(config).map_err(|e| from_sdk(name, e))?;
        let plugin = catch_unwind(AssertUnwindSafe(|| P::new(cfg)))
            .map_err(|_| failed(name, "panicked while being built"))?
            .map_err(|e| from_sdk(name, e))?;
        let implements = match kind {
            PluginKind::Notifier => plugin.as_notifier().is_some(),
            PluginKind::MetricSource => plugin.as_metric_source().is_some(),
            _ => false,
        };
        if !implements {
            return Err(failed(name, format!("does not implement {kind}")));
        }
        let health = Arc::new(HealthCell::new(kind, name, PluginTier::CompiledIn, None));
        health.set_version(P::META.version);
        Ok(Self { plugin: Arc::new(plugin), timeout, health })
    }

    async fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&P) -> Result<T, actuator_plugin_sdk::PluginError> + Send + 'static,
    ) -> Result<T, PluginError> {
        let name = P::META.name;
        let p = self.plugin.clone();
        let job = tokio::task::spawn_blocking(move || catch_unwind(AssertUnwindSafe(|| f(&p))));
        let r = match tokio::time::timeout(self.timeout, job).await {
            Err(_) => Err(failed(name, format!("no answer to {what} within {:?}", self.timeout))),
            Ok(Err(e)) => Err(failed(name, format!("{what} failed on its thread: {e}"))),
            Ok(Ok(Err(_))) => Err(failed(name, format!("plugin {name} panicked in {what}"))),
            Ok(Ok(Ok(r))) => r.map_err(|e| from_sdk(name, e)),
        };
        match &r {
            Ok(_) => self.health.ok(),
            Err(e) => self.health.fail(PluginHealth::Failed, &e.to_string()),
        }
        r
    }
}

#[async_trait]
impl<P: Plugin> Notifier for InProcess<P> {
    async fn notify(&self, event: &Event) -> Result<(), PluginError> {
        let e = crate::wire_event(event);
        self.run("notify", move |p| match p.as_notifier() {
            Some(n) => n.notify(&e),
            None => Err(actuator_plugin_sdk::PluginError::failed("not a notifier")),
        })
        .await
    }
}

#[async_trait]
impl<P: Plugin> MetricSource for InProcess<P> {
    async fn query_scalar(&self, query: &str) -> Result<Option<f64>, PluginError> {
        let q = query.to_owned();
        self.run("query", move |p| match p.as_metric_source() {
            Some(m) => m.query(&q).map(|v| v.filter(|x| x.is_finite())),
            None => Err(actuator_plugin_sdk::PluginError::failed("not a metric source")),
        })
        .await
    }
}

impl<P: Plugin> Hosted for InProcess<P> {
    fn status(&self) -> PluginStatus {
        self.health.get()
    }
}

/// Registers `P` in a core `Registry` as a compiled-in notifier or metric source.
pub struct InProcessFactory<P: Plugin> {
    timeout: Duration,
    _p: PhantomData<fn() -> P>,
}

impl<P: Plugin> std::fmt::Debug for InProcessFactory<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessFactory").field("plugin", &P::META.name).finish()
    }
}

impl<P: Plugin> InProcessFactory<P> {
    /// A factory whose instances time calls out after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, _p: PhantomData }
    }

    fn info_as(&self, kind: PluginKind) -> PluginInfo {
        PluginInfo {
            kind,
            name: P::META.name.to_owned(),
            version: P::META.version.to_owned(),
            // The adapter implements the core traits of this build: its API is the registry's
            // (the wire protocol's version does not apply to a plugin linked in).
            api: CoreApi::HOST,
            description: P::META.description.to_owned(),
            config_schema: config::schema_of::<P::Config>(),
        }
    }
}

impl<P: Plugin> NotifierFactory for InProcessFactory<P> {
    fn info(&self) -> PluginInfo {
        self.info_as(PluginKind::Notifier)
    }

    fn build(&self, config: Value, _host: &HostContext) -> Result<Arc<dyn Notifier>, PluginError> {
        Ok(Arc::new(InProcess::<P>::build(PluginKind::Notifier, config, self.timeout)?))
    }
}

impl<P: Plugin> MetricSourceFactory for InProcessFactory<P> {
    fn info(&self) -> PluginInfo {
        self.info_as(PluginKind::MetricSource)
    }

    fn build(
        &self,
        config: Value,
        _host: &HostContext,
    ) -> Result<Arc<dyn MetricSource>, PluginError> {
        Ok(Arc::new(InProcess::<P>::build(PluginKind::MetricSource, config, self.timeout)?))
    }
}
