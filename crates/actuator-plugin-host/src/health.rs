//! What each hosted plugin reports about itself.

use actuator_core::plugin::{PluginHealth, PluginKind, PluginStatus, PluginTier};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

/// The status of one hosted plugin, updated after each call.
#[derive(Debug)]
pub struct HealthCell {
    inner: Mutex<PluginStatus>,
}

/// Longest error text kept in a status.
const MAX_ERROR_CHARS: usize = 1000;

impl HealthCell {
    /// A healthy plugin.
    pub fn new(kind: PluginKind, name: &str, tier: PluginTier, path: Option<&Path>) -> Self {
        Self {
            inner: Mutex::new(PluginStatus {
                kind,
                name: name.to_owned(),
                tier,
                version: String::new(),
                health: PluginHealth::Healthy,
                last_error: None,
                restarts: 0,
                in_use: true,
                path: path.map(|p| p.display().to_string()),
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut PluginStatus) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A copy of the status.
    pub fn get(&self) -> PluginStatus {
        self.with(|s| s.clone())
    }

    /// The plugin's own version, from its hello.
    pub fn set_version(&self, v: &str) {
        self.with(|s| s.version = v.to_owned());
    }

    /// A call or a start succeeded.
    pub fn ok(&self) {
        self.with(|s| s.health = PluginHealth::Healthy);
    }

    /// A call or a start failed, leaving the plugin in `health`.
    pub fn fail(&self, health: PluginHealth, error: &str) {
        self.with(|s| {
            s.health = health;
            s.last_error = Some(error.chars().take(MAX_ERROR_CHARS).collect());
        });
    }

    /// The process was started again.
    pub fn restarted(&self) {
        self.with(|s| s.restarts += 1);
    }
}
