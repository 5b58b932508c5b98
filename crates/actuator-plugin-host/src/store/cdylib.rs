//! A store plugin in a shared library: calls run on tokio's blocking threads (the library
//! runs its store on a runtime of its own), at most [`MAX_STORE_IN_FLIGHT`] at once, each
//! bounded by the call timeout.
//!
//! A call that gets no answer in time fails with [`StoreError::Unavailable`]; its thread
//! stays with the library until the store returns. A store that aborts the process (a crash
//! in its code, not a panic, which is caught) ends the daemon: this tier is for stores the
//! operator trusts as much as the daemon itself.

use actuator_core::plugin::{PluginError, PluginHealth, PluginStatus, PluginTier};
use actuator_core::store::StoreError;
use actuator_plugin_sdk::wire::{self, Request, Response};
use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

use super::{Transport, check_size, with_instance};
use crate::cdylib::{Entry, blocking, connect};
use crate::{HealthCell, PluginSpec};

/// Calls of one cdylib store running at once, at most; more wait (within their timeout).
pub const MAX_STORE_IN_FLIGHT: usize = 16;

/// A store plugin library, the transport of a [`super::RemoteStore`].
pub struct CdylibStore {
    name: String,
    entry: Entry,
    instance: u64,
    timeout: Duration,
    in_flight: Arc<Semaphore>,
    next_id: AtomicU64,
    health: Arc<HealthCell>,
}

impl std::fmt::Debug for CdylibStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdylibStore").field("name", &self.name).finish()
    }
}

impl CdylibStore {
    /// Loads the library (magic and version checked first), checks its hello and opens its
    /// store.
    pub async fn load(spec: PluginSpec) -> Result<Self, PluginError> {
        let (entry, hello, instance) = connect(&spec, wire::Kind::Store).await?;
        let health =
            Arc::new(HealthCell::new(spec.kind, &spec.name, PluginTier::Cdylib, Some(&spec.path)));
        health.set_version(&hello.plugin.version);
        Ok(Self {
            name: spec.name,
            entry,
            instance,
            timeout: spec.limits.call_timeout,
            in_flight: Arc::new(Semaphore::new(MAX_STORE_IN_FLIGHT)),
            next_id: AtomicU64::new(1),
            health,
        })
    }

    fn unavailable(&self, message: impl std::fmt::Display) -> StoreError {
        let e = StoreError::Unavailable(format!("store plugin {}: {message}", self.name));
        self.health.fail(PluginHealth::Failed, &e.to_string());
        e
    }
}

#[async_trait]
impl Transport for CdylibStore {
    async fn call(&self, method: &'static str, params: Value) -> Result<Response, StoreError> {
        let started = tokio::time::Instant::now();
        let Ok(Ok(permit)) =
            tokio::time::timeout(self.timeout, self.in_flight.clone().acquire_owned()).await
        else {
            return Err(self.unavailable(format!(
                "{MAX_STORE_IN_FLIGHT} calls still running after {:?} (hung?); {method} refused",
                self.timeout
            )));
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let req =
            serde_json::to_vec(&Request::call(id, method, with_instance(params, self.instance)))
                .map_err(|e| StoreError::Invalid(format!("encoding {method}: {e}")))?;
        check_size(method, req.len())?;
        let entry = self.entry;
        let left = self.timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        let answer = blocking(&self.name, left, method, move || {
            let out = entry.exchange(&req);
            drop(permit);
            out
        })
        .await
        .map_err(|e| {
            self.unavailable(format!(
                "{e}; whether it was applied is unknown: re-read before retrying"
            ))
        })?;
        match serde_json::from_slice::<Response>(&answer) {
            Ok(r) => {
                self.health.ok();
                Ok(r)
            }
            Err(e) => Err(self.unavailable(format!("unreadable answer to {method}: {e}"))),
        }
    }

    fn status(&self) -> PluginStatus {
        self.health.get()
    }
}

impl Drop for CdylibStore {
    /// Releases the library's store instance (its connections), off the caller's thread.
    fn drop(&mut self) {
        let req = serde_json::to_vec(&Request::call(
            0,
            wire::store::CLOSE,
            json!({ "instance": self.instance }),
        ))
        .unwrap_or_default();
        let entry = self.entry;
        let _ = std::thread::Builder::new()
            .name("store-close".into())
            .spawn(move || drop(entry.exchange(&req)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RemoteStore;
    use actuator_core::Store;
    use actuator_core::config::SlotName;
    use actuator_core::plugin::PluginKind;
    use actuator_plugin_sdk::abi::{ActuatorPluginV1, Buf, MAGIC, free_buf};
    use std::time::Instant;

    extern "C" fn manifest() -> Buf {
        Buf::empty()
    }

    /// A store that takes 1.5 s to answer anything.
    extern "C" fn slow_call(_req: *const u8, _len: usize) -> Buf {
        std::thread::sleep(Duration::from_millis(1500));
        Buf::from_vec(br#"{"jsonrpc":"2.0","id":1,"result":null}"#.to_vec())
    }

    extern "C" fn set_logger(_: actuator_plugin_sdk::log::LoggerFn) {}

    static SLOW: ActuatorPluginV1 = ActuatorPluginV1 {
        magic: MAGIC,
        api_major: 1,
        api_minor: 1,
        manifest,
        call: slow_call,
        free: free_buf,
        set_logger,
    };

    #[tokio::test(flavor = "multi_thread")]
    async fn a_cdylib_store_call_without_an_answer_in_time_is_unavailable_not_a_hang() {
        let health = Arc::new(HealthCell::new(PluginKind::Store, "slow", PluginTier::Cdylib, None));
        let transport = CdylibStore {
            name: "slow".into(),
            entry: Entry::of_static(&SLOW),
            instance: 1,
            timeout: Duration::from_millis(200),
            in_flight: Arc::new(Semaphore::new(MAX_STORE_IN_FLIGHT)),
            next_id: AtomicU64::new(1),
            health,
        };
        let store = RemoteStore { name: "slow".into(), transport: Box::new(transport) };
        let t0 = Instant::now();
        let err = store.get_slot(&SlotName::new("a.b").unwrap()).await.unwrap_err();
        assert!(t0.elapsed() < Duration::from_millis(1000), "waited {:?}", t0.elapsed());
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(err.to_string().contains("no answer to store.get_slot within"), "{err}");
        assert!(err.to_string().contains("re-read before retrying"), "{err}");
        assert_eq!(store.status().health, PluginHealth::Failed);
        // The readiness probe reports the plugin instead of hanging.
        let why = store.readiness().await;
        assert!(why.len() == 1 && why[0].contains("store plugin slow"), "{why:?}");
    }
}
