//! The cdylib tier: a shared library exporting `ACTUATOR_PLUGIN_V1` (see
//! `actuator_plugin_sdk::abi`).
//!
//! The magic and the API version are read before any function of the library is called; a
//! wrong one is refused with a message naming both. Calls run on tokio's blocking threads
//! with a timeout; at most [`MAX_IN_FLIGHT`] calls of one plugin run at once, so a plugin whose
//! calls hang costs a bounded number of threads and its further calls fail at once. A loaded
//! library is never unloaded: it is kept in a process-wide list until the process exits.

#![allow(unsafe_code)]

use actuator_core::plugin::{
    Event, MetricSource, Notifier, PluginError, PluginHealth, PluginStatus, PluginTier,
};
use actuator_plugin_sdk::abi::{ActuatorPluginV1, Buf, MAGIC, SYMBOL};
use actuator_plugin_sdk::wire::{
    self, ApiVersion, ConfigureParams, ConfigureResult, Hello, LogLevel, LogRecord, NotifyParams,
    PluginMessage, QueryParams, QueryResult, Request, Response,
};
use async_trait::async_trait;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;
use tokio::sync::Semaphore;

use crate::{HealthCell, Hosted, PluginSpec, check_hello, failed, from_rpc, wire_kind};

/// Calls of one cdylib plugin running at once, at most.
pub const MAX_IN_FLIGHT: usize = 4;

/// Every library loaded so far: never dropped, so never unloaded.
static LIBRARIES: OnceLock<Mutex<Vec<libloading::Library>>> = OnceLock::new();

/// The plugin's entry point, valid for the life of the process.
#[derive(Clone, Copy)]
pub(crate) struct Entry(&'static ActuatorPluginV1);

// SAFETY: the entry is an immutable static of a library that is never unloaded; its
// functions are made to be called from any thread (the SDK's dispatcher is Sync).
unsafe impl Send for Entry {}
// SAFETY: as above.
unsafe impl Sync for Entry {}

impl Entry {
    /// An entry point that lives in this binary (a test's stand-in for a library).
    #[cfg(test)]
    pub(crate) fn of_static(entry: &'static ActuatorPluginV1) -> Self {
        Self(entry)
    }

    /// Sends one message and copies the plugin's answer, freeing its buffer with its own
    /// `free`.
    pub(crate) fn exchange(self, message: &[u8]) -> Vec<u8> {
        let buf: Buf = (self.0.call)(message.as_ptr(), message.len());
        copy_and_free(self, buf)
    }

    fn manifest(self) -> Vec<u8> {
        let buf = (self.0.manifest)();
        copy_and_free(self, buf)
    }
}

fn copy_and_free(e: Entry, buf: Buf) -> Vec<u8> {
    let out = if buf.ptr.is_null() || buf.len == 0 {
        Vec::new()
    } else {
        // SAFETY: the plugin returned this buffer: `len` initialised bytes at `ptr`, alive until
        // it is handed back to the plugin's `free` just below.
        unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) }.to_vec()
    };
    (e.0.free)(buf);
    out
}

extern "C" fn host_logger(level: u8, ptr: *const u8, len: usize) {
    let _ = std::panic::catch_unwind(|| {
        if ptr.is_null() || len > wire::MAX_MESSAGE_BYTES {
            return;
        }
        // SAFETY: the plugin passes `len` bytes at `ptr`, alive for the duration of this call.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
        let rec: LogRecord = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(_) => LogRecord {
                level: LogLevel::from_u8(level),
                plugin: "cdylib".into(),
                message: String::from_utf8_lossy(bytes).into_owned(),
            },
        };
        let (p, m) = (rec.plugin.as_str(), rec.message.as_str());
        match rec.level {
            LogLevel::Error => tracing::error!(target: "actuator::plugin", plugin = %p, "{m}"),
            LogLevel::Warn => tracing::warn!(target: "actuator::plugin", plugin = %p, "{m}"),
            LogLevel::Info => tracing::info!(target: "actuator::plugin", plugin = %p, "{m}"),
            LogLevel::Debug => tracing::debug!(target: "actuator::plugin", plugin = %p, "{m}"),
            LogLevel::Trace => tracing::trace!(target: "actuator::plugin", plugin = %p, "{m}"),
        }
    });
}

/// Opens the library, finds its entry point and checks the magic and the API version before
/// anything else is read.
fn open(name: &str, path: &std::path::Path) -> Result<Entry, PluginError> {
    // SAFETY: loading a library runs its initialisers; the operator named this file in the
    // daemon's settings as a trusted plugin.
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| failed(name, format!("cannot load {}: {e}", path.display())))?;
    let symbol = format!("{SYMBOL}\0");
    // SAFETY: the symbol is looked up as a plain address; nothing is read through it yet.
    let ptr: *const ActuatorPluginV1 =
        unsafe { lib.get::<*const ActuatorPluginV1>(symbol.as_bytes()) }.map(|s| *s).map_err(
            |_| {
                failed(
                    name,
                    format!("{} is not an actuator plugin: it exports no {SYMBOL}", path.display()),
                )
            },
        )?;
    if ptr.is_null() {
        return Err(failed(name, format!("{SYMBOL} in {} is null", path.display())));
    }
    // SAFETY: every version of the entry point starts with `magic: u32`, `api_major: u16`,
    // `api_minor: u16`; only these are read before they are checked.
    let (magic, major, minor) = unsafe {
        let p = ptr.cast::<u8>();
        (
            p.cast::<u32>().read_unaligned(),
            p.add(4).cast::<u16>().read_unaligned(),
            p.add(6).cast::<u16>().read_unaligned(),
        )
    };
    if magic != MAGIC {
        return Err(failed(
            name,
            format!(
                "{} exports {SYMBOL} with magic {magic:#010x}, not {MAGIC:#010x} (\"ACT1\"): not an actuator plugin",
                path.display()
            ),
        ));
    }
    let api = ApiVersion { major, minor };
    if !crate::HOST_API.accepts(api) {
        return Err(failed(
            name,
            format!(
                "{} speaks plugin API {api} by its C ABI; this host speaks {}: rebuild it against actuator-plugin-sdk {}.x",
                path.display(),
                crate::HOST_API,
                crate::HOST_API.major
            ),
        ));
    }
    LIBRARIES
        .get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(lib);
    // SAFETY: the magic and the major version match this layout, and the library that holds
    // the static is kept loaded for the rest of the process (pushed above).
    Ok(Entry(unsafe { &*ptr }))
}

/// A configured instance of a cdylib plugin behind the [`Notifier`] and [`MetricSource`]
/// traits.
pub struct CdylibPlugin {
    name: String,
    entry: Entry,
    instance: u64,
    timeout: Duration,
    in_flight: Arc<Semaphore>,
    next_id: AtomicU64,
    health: Arc<HealthCell>,
}

impl std::fmt::Debug for CdylibPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdylibPlugin")
            .field("name", &self.name)
            .field("instance", &self.instance)
            .finish()
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    name: &str,
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PluginError> {
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failed(name, format!("{what} failed on its thread: {e}"))),
        Err(_) => Err(failed(name, format!("no answer to {what} within {limit:?}"))),
    }
}

fn parse_response(name: &str, bytes: &[u8]) -> Result<Value, PluginError> {
    match serde_json::from_slice::<Response>(bytes) {
        Ok(r) => r.into_result().map_err(|e| from_rpc(name, e)),
        Err(e) => Err(failed(name, format!("unreadable answer: {e}"))),
    }
}

/// Loads the library (checking magic and version), installs the logger, reads and checks its
/// hello, and configures one instance as `kind`: the start of every cdylib plugin.
pub(crate) async fn connect(
    spec: &PluginSpec,
    kind: wire::Kind,
) -> Result<(Entry, Hello, u64), PluginError> {
    let name = spec.name.clone();
    let limit = spec.limits.start_timeout;
    let path = spec.path.clone();
    let n = name.clone();
    let (entry, hello_bytes) = blocking(&name, limit, "loading", move || {
        let entry = open(&n, &path)?;
        (entry.0.set_logger)(host_logger);
        Ok::<_, PluginError>((entry, entry.manifest()))
    })
    .await??;
    let hello = match serde_json::from_slice::<PluginMessage>(&hello_bytes) {
        Ok(PluginMessage::Notification(Request { method, params, .. }))
            if method == wire::method::HELLO =>
        {
            serde_json::from_value::<Hello>(params)
                .map_err(|e| failed(&name, format!("its manifest is not a hello: {e}")))?
        }
        _ => return Err(failed(&name, "its manifest is not a hello notification")),
    };
    check_hello(&name, &hello, kind)?;
    let params = ConfigureParams { kind, name: name.clone(), config: spec.config.clone() };
    let req =
        serde_json::to_vec(&Request::call(0, wire::method::CONFIGURE, params)).unwrap_or_default();
    let answer = blocking(&name, limit, "configure", move || entry.exchange(&req)).await?;
    let r: ConfigureResult = serde_json::from_value(parse_response(&name, &answer)?)
        .map_err(|e| failed(&name, format!("unreadable configure result: {e}")))?;
    tracing::info!(plugin = %name, path = %spec.path.display(), version = %hello.plugin.version, "cdylib plugin loaded");
    Ok((entry, hello, r.instance))
}

impl CdylibPlugin {
    /// Loads the library (checking magic and version), reads its hello, installs the logger,
    /// and configures one instance.
    pub async fn load(spec: PluginSpec) -> Result<Self, PluginError> {
        let kind = wire_kind(spec.kind).ok_or_else(|| {
            failed(&spec.name, format!("kind {} cannot be a cdylib plugin", spec.kind))
        })?;
        let (entry, hello, instance) = connect(&spec, kind).await?;
        let name = spec.name.clone();
        let health =
            Arc::new(HealthCell::new(spec.kind, &name, PluginTier::Cdylib, Some(&spec.path)));
        health.set_version(&hello.plugin.version);
        Ok(Self {
            name,
            entry,
            instance,
            timeout: spec.limits.call_timeout,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            next_id: AtomicU64::new(1),
            health,
        })
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value, PluginError> {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            let e = failed(
                &self.name,
                format!("{MAX_IN_FLIGHT} calls are still running (hung?); this one is refused"),
            );
            self.health.fail(PluginHealth::Failed, &e.to_string());
            return Err(e);
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let req = serde_json::to_vec(&Request::call(id, method, params)).unwrap_or_default();
        let entry = self.entry;
        let answer = blocking(&self.name, self.timeout, method, move || {
            let out = entry.exchange(&req);
            drop(permit);
            out
        })
        .await;
        let result = answer.and_then(|bytes| parse_response(&self.name, &bytes));
        match &result {
            Ok(_) => self.health.ok(),
            Err(e) => self.health.fail(PluginHealth::Failed, &e.to_string()),
        }
        result
    }
}

#[async_trait]
impl Notifier for CdylibPlugin {
    async fn notify(&self, event: &Event) -> Result<(), PluginError> {
        let p = NotifyParams { instance: self.instance, event: crate::wire_event(event) };
        self.call(wire::method::NOTIFY, serde_json::to_value(p).unwrap_or(Value::Null))
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl MetricSource for CdylibPlugin {
    async fn query_scalar(&self, query: &str) -> Result<Option<f64>, PluginError> {
        let p = QueryParams { instance: self.instance, query: query.to_owned() };
        let v =
            self.call(wire::method::QUERY, serde_json::to_value(p).unwrap_or(Value::Null)).await?;
        let r: QueryResult = serde_json::from_value(v)
            .map_err(|e| failed(&self.name, format!("unreadable query result: {e}")))?;
        Ok(r.value)
    }
}

impl Hosted for CdylibPlugin {
    fn status(&self) -> PluginStatus {
        self.health.get()
    }
}
