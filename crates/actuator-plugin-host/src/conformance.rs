//! The conformance checks every plugin passes in every tier it is built for.
//!
//! A plugin author runs them from a test of their own crate (with `actuator-plugin-host` as a
//! dev-dependency), after building the executable or the library:
//!
//! ```ignore
//! use actuator_plugin_host::conformance::{Form, Subject, check_notifier};
//! #[tokio::test(flavor = "multi_thread")]
//! async fn conforms() {
//!     let subject = Subject::new(Form::Exec("target/debug/my-notifier".into()));
//!     check_notifier(&subject, serde_json::json!({"url": "http://x"}), serde_json::json!({"url": 3}), "url")
//!         .await
//!         .unwrap();
//! }
//! ```
//!
//! The checks: the plugin starts (handshake and configure), reports a version and is healthy;
//! a malformed config is refused as an invalid config naming the field; a notifier accepts an
//! event; a metric source answers a known query with its value and an unknown one with no
//! data.

use actuator_core::plugin::{
    Event, HostContext, MetricSource, Notifier, PluginError, PluginHealth, PluginKind,
    PluginStatus, Registry, Severity,
};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;

use crate::{FileTier, Hosted, Limits, PluginSpec};

/// How the plugin under test is hosted.
#[derive(Clone)]
pub enum Form {
    /// Compiled in: found by `name` in this registry.
    CompiledIn {
        /// The registry the plugin was added to.
        registry: Arc<Registry>,
        /// Its registry name.
        name: String,
    },
    /// An executable.
    Exec(PathBuf),
    /// A shared library.
    Cdylib(PathBuf),
}

impl std::fmt::Debug for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CompiledIn { name, .. } => write!(f, "compiled-in {name}"),
            Self::Exec(p) => write!(f, "exec {}", p.display()),
            Self::Cdylib(p) => write!(f, "cdylib {}", p.display()),
        }
    }
}

/// A plugin under test: its form and the limits it is hosted with.
#[derive(Clone, Debug)]
pub struct Subject {
    /// Its form.
    pub form: Form,
    /// Its limits (exec and cdylib).
    pub limits: Limits,
}

/// A built plugin: the trait object and, for exec and cdylib, its status.
#[derive(Clone)]
pub struct Built {
    /// As a notifier.
    pub notifier: Arc<dyn Notifier>,
    /// As a metric source.
    pub metric_source: Option<Arc<dyn MetricSource>>,
    /// Its status, for hosted forms.
    pub hosted: Option<Arc<dyn Hosted>>,
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built").field("status", &self.status()).finish()
    }
}

impl Built {
    /// The status of a hosted form (`None` when compiled in).
    pub fn status(&self) -> Option<PluginStatus> {
        self.hosted.as_ref().map(|h| h.status())
    }
}

impl Subject {
    /// A subject with the default limits.
    pub fn new(form: Form) -> Self {
        Self { form, limits: Limits::default() }
    }

    /// The same with other limits.
    pub fn with_limits(self, limits: Limits) -> Self {
        Self { limits, ..self }
    }

    /// Builds the plugin as `kind` named `name` with `config`.
    pub async fn build(
        &self,
        kind: PluginKind,
        name: &str,
        config: Value,
    ) -> Result<Built, PluginError> {
        let spec = |path: &PathBuf, tier| PluginSpec {
            kind,
            name: name.to_owned(),
            path: path.clone(),
            tier: Some(tier),
            args: vec![],
            config: config.clone(),
            limits: self.limits,
        };
        let loaded = match &self.form {
            Form::CompiledIn { registry, name: reg } => {
                let host = HostContext::default();
                return Ok(match kind {
                    PluginKind::MetricSource => {
                        let m = registry.metric_source(reg, config, &host)?;
                        Built {
                            notifier: registry
                                .notifier(reg, json!(null), &host)
                                .unwrap_or_else(|_| Arc::new(Refuse)),
                            metric_source: Some(m),
                            hosted: None,
                        }
                    }
                    _ => Built {
                        notifier: registry.notifier(reg, config, &host)?,
                        metric_source: None,
                        hosted: None,
                    },
                });
            }
            Form::Exec(p) => crate::load(spec(p, FileTier::Exec)).await,
            Form::Cdylib(p) => crate::load(spec(p, FileTier::Cdylib)).await,
        };
        let loaded = loaded.map_err(|e| match e {
            crate::LoadError::Plugin(p) => p,
            other => PluginError::Failed { plugin: name.to_owned(), message: other.to_string() },
        })?;
        Ok(Built {
            notifier: loaded.notifier(),
            metric_source: Some(loaded.metric_source()),
            hosted: Some(loaded.plugin),
        })
    }
}

/// A notifier that refuses every event (stands in where a form has none).
struct Refuse;

#[async_trait::async_trait]
impl Notifier for Refuse {
    async fn notify(&self, _: &Event) -> Result<(), PluginError> {
        Err(PluginError::Failed { plugin: "none".into(), message: "not a notifier".into() })
    }
}

/// A sample event of `kind`.
pub fn sample_event(kind: &str) -> Event {
    Event {
        kind: kind.to_owned(),
        severity: Severity::Info,
        at: chrono::Utc::now(),
        actor: "conformance".to_owned(),
        target: "chat.default".to_owned(),
        summary: format!("{kind} from the conformance suite"),
        details: json!({"from": "conformance"}),
    }
}

fn check_healthy(b: &Built) -> Result<(), String> {
    if let Some(s) = b.status() {
        if s.version.is_empty() {
            return Err(format!("{} reports no version", s.name));
        }
        if s.health != PluginHealth::Healthy {
            return Err(format!(
                "{} is {} after a good call: {:?}",
                s.name, s.health, s.last_error
            ));
        }
    }
    Ok(())
}

/// Checks that `bad` is refused as an invalid config naming `field`.
pub async fn check_bad_config(
    subject: &Subject,
    kind: PluginKind,
    bad: Value,
    field: &str,
) -> Result<(), String> {
    match subject.build(kind, "conformance-bad", bad).await {
        Ok(_) => Err(format!("{:?}: a malformed config was accepted", subject.form)),
        Err(PluginError::InvalidConfig { field: f, .. }) if f == field => Ok(()),
        Err(e) => {
            Err(format!("{:?}: a malformed config should name `{field}`, got: {e}", subject.form))
        }
    }
}

/// The notifier checks: start with `good`, refuse `bad` naming `field`, accept an event, be
/// healthy after.
pub async fn check_notifier(
    subject: &Subject,
    good: Value,
    bad: Value,
    field: &str,
) -> Result<Built, String> {
    let built = subject
        .build(PluginKind::Notifier, "conformance", good)
        .await
        .map_err(|e| format!("{:?}: does not start: {e}", subject.form))?;
    built
        .notifier
        .notify(&sample_event("conformance.notify"))
        .await
        .map_err(|e| format!("{:?}: refused an event: {e}", subject.form))?;
    check_healthy(&built)?;
    check_bad_config(subject, PluginKind::Notifier, bad, field).await?;
    Ok(built)
}

/// The metric source checks: start with `good`, answer `known` with `value` and `unknown`
/// with no data, refuse `bad` naming `field`.
pub async fn check_metric_source(
    subject: &Subject,
    good: Value,
    (known, value): (&str, f64),
    unknown: &str,
    (bad, field): (Value, &str),
) -> Result<Built, String> {
    let built = subject
        .build(PluginKind::MetricSource, "conformance", good)
        .await
        .map_err(|e| format!("{:?}: does not start: {e}", subject.form))?;
    let m = built.metric_source.clone().ok_or("no metric source")?;
    let got = m
        .query_scalar(known)
        .await
        .map_err(|e| format!("{:?}: query failed: {e}", subject.form))?;
    if got != Some(value) {
        return Err(format!("{:?}: query {known:?} gave {got:?}, expected {value}", subject.form));
    }
    let none = m
        .query_scalar(unknown)
        .await
        .map_err(|e| format!("{:?}: query failed: {e}", subject.form))?;
    if none.is_some() {
        return Err(format!(
            "{:?}: query {unknown:?} gave {none:?}, expected no data",
            subject.form
        ));
    }
    check_healthy(&built)?;
    check_bad_config(subject, PluginKind::MetricSource, bad, field).await?;
    Ok(built)
}
