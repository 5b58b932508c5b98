//! Test fixture: a notifier that announces plugin API 2.0, as a cdylib and as an executable,
//! so the conformance suite can check that a host of API 1 refuses it at start.

use actuator_plugin_sdk::{ApiVersion, Event, NotifierPlugin, Plugin, PluginError, PluginMeta};

/// The version this fixture announces.
pub const ANNOUNCED: ApiVersion = ApiVersion { major: 2, minor: 0 };

/// Its config: nothing.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// A notifier that accepts every event.
#[derive(Debug)]
pub struct Future;

impl Plugin for Future {
    type Config = NoConfig;
    const META: PluginMeta = PluginMeta::notifier("future", env!("CARGO_PKG_VERSION"));

    fn new(_: NoConfig) -> Result<Self, PluginError> {
        Ok(Self)
    }

    fn as_notifier(&self) -> Option<&dyn NotifierPlugin> {
        Some(self)
    }
}

impl NotifierPlugin for Future {
    fn notify(&self, _event: &Event) -> Result<(), PluginError> {
        Ok(())
    }
}

actuator_plugin_sdk::export_plugin!(Future, api = ANNOUNCED);
