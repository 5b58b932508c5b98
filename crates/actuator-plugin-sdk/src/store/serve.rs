//! The plugin's side of the store kind: [`StoreDispatcher`] answers `hello`, `configure`,
//! `health`, `shutdown` and the `store.*` methods; [`serve_store_stdio`] serves it on stdio
//! with calls answered concurrently; `export_store_plugin!` exports it from a cdylib.

use actuator_core::Store;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::wire::{self as sw, MAX_STORE_MESSAGE_BYTES, store_error_to_rpc};
use super::{MAX_CONCURRENT_CALLS, MAX_STORES, StorePlugin};
use crate::wire::{
    self, ApiVersion, ConfigureParams, ConfigureResult, HealthParams, HealthResult, Hello, Kind,
    PluginDescriptor, Request, Response, RpcError, code,
};
use crate::{PluginError, config};

/// Answers the protocol for the store plugin `P`: the engine behind [`serve_store_stdio`] and
/// `export_store_plugin!`. Each call runs as its own task, so calls are answered concurrently
/// and a panic in one is caught and answered as an error (code `PANICKED`).
pub struct StoreDispatcher<P: StorePlugin> {
    api: ApiVersion,
    stores: Mutex<BTreeMap<u64, Arc<dyn Store>>>,
    next: AtomicU64,
    shutdown: AtomicBool,
    runtime: Option<tokio::runtime::Runtime>,
    _p: PhantomData<fn() -> P>,
}

impl<P: StorePlugin> std::fmt::Debug for StoreDispatcher<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreDispatcher").field("plugin", &P::META.name).finish()
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

fn out<T: Serialize>(r: Result<T, actuator_core::StoreError>) -> Result<Value, RpcError> {
    match r {
        Ok(v) => serde_json::to_value(v).map_err(|e| RpcError::new(code::FAILED, e.to_string())),
        Err(e) => Err(store_error_to_rpc(&e)),
    }
}

/// A response as bytes; one over [`MAX_STORE_MESSAGE_BYTES`] becomes a store error that says
/// so (a page too large to cross).
fn encode(r: &Response) -> Vec<u8> {
    let bytes = serde_json::to_vec(r).unwrap_or_default();
    if bytes.len() <= MAX_STORE_MESSAGE_BYTES {
        return bytes;
    }
    let e = actuator_core::StoreError::Invalid(format!(
        "the answer is {} bytes, over the store plugin message limit of {MAX_STORE_MESSAGE_BYTES}; ask for a smaller page",
        bytes.len()
    ));
    serde_json::to_vec(&Response::err(r.id, store_error_to_rpc(&e))).unwrap_or_default()
}

impl<P: StorePlugin> StoreDispatcher<P> {
    /// A dispatcher that announces `api` (normally [`ApiVersion::CURRENT`]; another value
    /// only to test how a host refuses it). Calls run on the caller's tokio runtime.
    pub fn new(api: ApiVersion) -> Self {
        Self {
            api,
            stores: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
            shutdown: AtomicBool::new(false),
            runtime: None,
            _p: PhantomData,
        }
    }

    /// The same with a tokio runtime of its own, for [`StoreDispatcher::call_blocking`] (the
    /// cdylib tier, whose host threads have no runtime of the library's).
    pub fn with_runtime(api: ApiVersion) -> io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("{}-store", P::META.name))
            .enable_all()
            .build()?;
        Ok(Self { runtime: Some(rt), ..Self::new(api) })
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

    /// Answers one message on the current tokio runtime. A notification gets no answer
    /// (`None`); anything that is not JSON-RPC gets an error answer with a `null` id.
    pub async fn handle(self: Arc<Self>, message: &[u8]) -> Option<Response> {
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
        let me = self.clone();
        let task = tokio::spawn(async move { me.answer(&req.method, req.params).await });
        Some(match task.await {
            Ok(Ok(v)) => Response::ok(Some(id), v),
            Ok(Err(e)) => Response::err(Some(id), e),
            Err(e) => Response::err(
                Some(id),
                RpcError::new(code::PANICKED, format!("plugin {} panicked: {e}", P::META.name)),
            ),
        })
    }

    /// Answers one message into bytes on the dispatcher's own runtime, blocking the calling
    /// thread (a cdylib's `call`); a notification gets an empty buffer.
    pub fn call_blocking(self: &Arc<Self>, message: &[u8]) -> Vec<u8> {
        let Some(rt) = &self.runtime else {
            let e = RpcError::new(code::FAILED, "the store plugin has no runtime");
            return serde_json::to_vec(&Response::err(None, e)).unwrap_or_default();
        };
        match rt.block_on(self.clone().handle(message)) {
            Some(r) => encode(&r),
            None => Vec::new(),
        }
    }

    fn store(&self, id: u64) -> Result<Arc<dyn Store>, RpcError> {
        self.stores.lock().unwrap_or_else(PoisonError::into_inner).get(&id).cloned().ok_or_else(
            || {
                RpcError::new(
                    code::UNKNOWN_INSTANCE,
                    format!("no store instance {id}; call configure first"),
                )
            },
        )
    }

    async fn configure(&self, p: Value) -> Result<Value, RpcError> {
        let p: ConfigureParams = params(wire::method::CONFIGURE, p)?;
        if p.kind != Kind::Store || !P::META.kinds.contains(&Kind::Store) {
            return Err(RpcError::new(
                code::UNSUPPORTED_KIND,
                format!("plugin {} serves only a store, not a {}", P::META.name, p.kind),
            ));
        }
        if self.stores.lock().unwrap_or_else(PoisonError::into_inner).len() >= MAX_STORES {
            return Err(RpcError::new(
                code::FAILED,
                format!("plugin {} holds {MAX_STORES} stores already", P::META.name),
            ));
        }
        let cfg = config::parse::<P::Config>(p.config).map_err(to_rpc)?;
        let store = P::open(cfg).await.map_err(to_rpc)?;
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        self.stores.lock().unwrap_or_else(PoisonError::into_inner).insert(id, store);
        crate::log::debug(&format!("store instance {id} opened as {:?}", p.name));
        Ok(json!(ConfigureResult { instance: id }))
    }

    async fn answer(&self, method: &str, p: Value) -> Result<Value, RpcError> {
        let m = method;
        match method {
            wire::method::CONFIGURE => return self.configure(p).await,
            wire::method::HEALTH => {
                let p: HealthParams =
                    if p.is_null() { HealthParams::default() } else { params(m, p)? };
                let problems = match p.instance {
                    Some(id) => self.store(id)?.readiness().await,
                    None => Vec::new(),
                };
                let r = if problems.is_empty() {
                    HealthResult { ok: true, detail: None }
                } else {
                    HealthResult { ok: false, detail: Some(problems.join("; ")) }
                };
                return Ok(json!(r));
            }
            wire::method::SHUTDOWN => {
                self.shutdown.store(true, Ordering::SeqCst);
                return Ok(json!({}));
            }
            wire::store::CLOSE => {
                let a: sw::Instance = params(m, p)?;
                let gone =
                    self.stores.lock().unwrap_or_else(PoisonError::into_inner).remove(&a.instance);
                return Ok(json!({ "closed": gone.is_some() }));
            }
            _ => {}
        }
        let instance = p.get("instance").and_then(Value::as_u64).ok_or_else(|| {
            RpcError::new(code::INVALID_PARAMS, format!("params of `{m}` need an `instance`"))
        })?;
        let s = self.store(instance)?;
        match method {
            "store.create_slot" => {
                let a: sw::CreateSlot = params(m, p)?;
                out(s.create_slot(a.slot, a.audit).await)
            }
            "store.get_slot" => {
                let a: sw::GetSlot = params(m, p)?;
                out(s.get_slot(&a.name).await)
            }
            "store.list_slots" => {
                let a: sw::Paged = params(m, p)?;
                out(s.list_slots(a.page).await)
            }
            "store.list_slots_with_active_versions" => {
                let a: sw::Paged = params(m, p)?;
                out(s.list_slots_with_active_versions(a.page).await)
            }
            "store.append_version" => {
                let a: sw::Append = params(m, p)?;
                out(s.append_version(a.req, a.audit).await)
            }
            "store.activate_version" => {
                let a: sw::Activate = params(m, p)?;
                out(s.activate_version(&a.slot, a.expected_revision, a.version, a.audit).await)
            }
            "store.get_version" => {
                let a: sw::GetVersion = params(m, p)?;
                out(s.get_version(&a.slot, a.version).await)
            }
            "store.list_versions" => {
                let a: sw::ListVersions = params(m, p)?;
                out(s.list_versions(&a.slot, a.page).await)
            }
            "store.create_snapshot" => {
                let a: sw::CreateSnapshot = params(m, p)?;
                out(s.create_snapshot(a.req, a.audit).await)
            }
            "store.get_snapshot" => {
                let a: sw::ById = params(m, p)?;
                out(s.get_snapshot(&a.id).await)
            }
            "store.list_snapshots" => {
                let a: sw::ListSnapshots = params(m, p)?;
                out(s.list_snapshots(a.slot.as_ref(), a.page).await)
            }
            "store.append_audit" => {
                let a: sw::Audit = params(m, p)?;
                out(s.append_audit(a.audit).await)
            }
            "store.list_audit" => {
                let a: sw::ListAudit = params(m, p)?;
                out(s.list_audit(a.query).await)
            }
            "store.audit_head" => out(s.audit_head().await),
            "store.verified_head" => out(s.verified_head().await),
            "store.set_verified_head" => {
                let a: sw::SetVerifiedHead = params(m, p)?;
                out(s.set_verified_head(a.head).await)
            }
            "store.verify_audit" => out(s.verify_audit().await),
            "store.verify_audit_full" => out(s.verify_audit_full(&|_| {}).await),
            "store.acknowledge_audit" => {
                let a: sw::Audit = params(m, p)?;
                out(s.acknowledge_audit(a.audit).await)
            }
            "store.create_token" => {
                let a: sw::CreateToken = params(m, p)?;
                out(s.create_token(a.token, a.audit).await.map(sw::WireToken::from))
            }
            "store.list_tokens" => out(s
                .list_tokens()
                .await
                .map(|v| v.into_iter().map(sw::WireToken::from).collect::<Vec<_>>())),
            "store.revoke_token" => {
                let a: sw::RevokeToken = params(m, p)?;
                out(s.revoke_token(&a.name, a.audit).await.map(sw::WireToken::from))
            }
            "store.readiness" => out(Ok(s.readiness().await)),
            "store.create_rollout" => {
                let a: sw::CreateRollout = params(m, p)?;
                out(s.create_rollout(a.rollout, a.audit).await)
            }
            "store.get_rollout" => {
                let a: sw::ById = params(m, p)?;
                out(s.get_rollout(&a.id).await)
            }
            "store.list_rollouts" => {
                let a: sw::ListRollouts = params(m, p)?;
                out(s.list_rollouts(a.filter, a.page).await)
            }
            "store.list_active_routes" => {
                let a: sw::Paged = params(m, p)?;
                out(s.list_active_routes(a.page).await)
            }
            "store.list_active_rollouts_encoded" => {
                let a: sw::Paged = params(m, p)?;
                out(s.list_active_rollouts_encoded(a.page).await)
            }
            "store.rollout_counts" => out(s.rollout_counts().await),
            "store.rollouts_with_batches" => out(s.rollouts_with_batches().await),
            "store.save_rollout_status" => {
                let a: sw::SaveStatus = params(m, p)?;
                out(s.save_rollout_status(&a.id, a.expected_revision, a.status).await)
            }
            "store.update_rollout" => {
                let a: sw::UpdateRollout = params(m, p)?;
                out(s.update_rollout(&a.id, a.update, a.audit).await)
            }
            "store.append_observation_batches" => {
                let a: sw::AppendBatches = params(m, p)?;
                out(s.append_observation_batches(a.batches).await)
            }
            "store.list_observation_batches" => {
                let a: sw::ListBatches = params(m, p)?;
                out(s.list_observation_batches(&a.rollout_id, a.after, a.limit).await)
            }
            "store.checkpoint_rollout" => {
                let a: sw::Checkpoint = params(m, p)?;
                out(s
                    .checkpoint_rollout(&a.id, a.expected_revision, a.status, a.folded_through)
                    .await)
            }
            "store.checkpoint_rollouts" => {
                let a: sw::Checkpoints = params(m, p)?;
                out(s.checkpoint_rollouts(a.items).await.map(|items| {
                    items
                        .into_iter()
                        .map(|r| match r {
                            Ok(rec) => sw::ItemResult::Ok(rec),
                            Err(e) => sw::ItemResult::Err(e),
                        })
                        .collect::<Vec<_>>()
                }))
            }
            "store.prune_observation_batches" => {
                let a: sw::Prune = params(m, p)?;
                out(s.prune_observation_batches(&a.rollout_id, a.through).await)
            }
            other => Err(RpcError::new(code::METHOD_NOT_FOUND, format!("no method `{other}`"))),
        }
    }
}

/// Serves the store plugin `P` on stdin/stdout until stdin closes or the host sends
/// `shutdown`, on a tokio runtime of its own.
///
/// Writes the `hello` line first, then reads one request per line and answers each as soon
/// as the store returns (answers may come in another order than the requests; the host
/// matches them by id). At most [`MAX_CONCURRENT_CALLS`] run at once. When stdin closes,
/// the calls still running are finished and answered before it returns.
///
/// ```no_run
/// # use std::sync::Arc;
/// # struct MyStore;
/// # impl actuator_plugin_sdk::store::StorePlugin for MyStore {
/// #     type Config = ();
/// #     const META: actuator_plugin_sdk::PluginMeta = actuator_plugin_sdk::PluginMeta::store("my", "0.1.0");
/// #     async fn open(_: ()) -> Result<Arc<dyn actuator_core::Store>, actuator_plugin_sdk::PluginError> {
/// #         Err(actuator_plugin_sdk::PluginError::failed("example"))
/// #     }
/// # }
/// fn main() -> std::io::Result<()> {
///     actuator_plugin_sdk::store::serve_store_stdio::<MyStore>()
/// }
/// ```
pub fn serve_store_stdio<P: StorePlugin>() -> io::Result<()> {
    serve_store_stdio_announcing::<P>(ApiVersion::CURRENT)
}

fn write_line(bytes: &[u8]) -> io::Result<()> {
    let mut w = io::stdout().lock();
    w.write_all(bytes)?;
    w.write_all(b"\n")?;
    w.flush()
}

/// [`serve_store_stdio`], announcing `api` instead of the SDK's version: for testing how a
/// host refuses a plugin of another version, never for a real plugin.
pub fn serve_store_stdio_announcing<P: StorePlugin>(api: ApiVersion) -> io::Result<()> {
    crate::log::to_stdout(P::META.name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(format!("{}-store", P::META.name))
        .enable_all()
        .build()?;
    let d = Arc::new(StoreDispatcher::<P>::new(api));
    write_line(&d.hello_message())?;
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_CALLS));
    let mut input = io::stdin().lock();
    let mut buf = Vec::new();
    let result = loop {
        buf.clear();
        let n = match io::Read::take(&mut input, MAX_STORE_MESSAGE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
        {
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        if n == 0 {
            break Ok(());
        }
        if buf.last() != Some(&b'\n') && buf.len() > MAX_STORE_MESSAGE_BYTES {
            let mut rest = Vec::new();
            if let Err(e) = input.read_until(b'\n', &mut rest) {
                break Err(e);
            }
            let r = Response::err(
                None,
                RpcError::new(
                    code::INVALID_REQUEST,
                    format!("message longer than {MAX_STORE_MESSAGE_BYTES} bytes"),
                ),
            );
            if let Err(e) = write_line(&encode(&r)) {
                break Err(e);
            }
            continue;
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf).to_vec();
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let is_shutdown = serde_json::from_slice::<Request>(&line)
            .is_ok_and(|r| r.method == wire::method::SHUTDOWN);
        if is_shutdown {
            // Finish what runs, then answer and stop.
            let _all = rt.block_on(permits.acquire_many(MAX_CONCURRENT_CALLS as u32));
            if let Some(r) = rt.block_on(d.handle(&line)) {
                let _ = write_line(&encode(&r));
            }
            return Ok(());
        }
        let Ok(permit) = rt.block_on(permits.clone().acquire_owned()) else {
            break Ok(());
        };
        let d = d.clone();
        rt.spawn(async move {
            if let Some(r) = d.handle(&line).await {
                let bytes = encode(&r);
                if let Err(e) = tokio::task::spawn_blocking(move || write_line(&bytes)).await {
                    crate::log::error(&format!("writing an answer: {e}"));
                }
            }
            drop(permit);
        });
    };
    // stdin closed: answer the calls still running before exiting.
    let _all = rt.block_on(permits.acquire_many(MAX_CONCURRENT_CALLS as u32));
    result
}

/// Exports the store plugin type `$ty` from a cdylib: emits the `#[no_mangle]` static
/// `ACTUATOR_PLUGIN_V1` ([`crate::abi::ActuatorPluginV1`]) whose every function catches
/// panics. The store runs on a tokio runtime the library makes at its first call; `call`
/// blocks the host's thread until the store answered.
///
/// ```ignore
/// actuator_plugin_sdk::export_store_plugin!(MyStore);
/// ```
///
/// A store that aborts the process (a `panic = "abort"` build, a crash in a C library it
/// links) ends the daemon with it: prefer the exec tier unless the store is trusted.
#[macro_export]
macro_rules! export_store_plugin {
    ($ty:ty) => {
        $crate::export_store_plugin!($ty, api = $crate::ApiVersion::CURRENT);
    };
    ($ty:ty, api = $api:expr) => {
        const _: () = {
            const API: $crate::ApiVersion = $api;
            static DISPATCHER: ::std::sync::OnceLock<
                ::std::option::Option<::std::sync::Arc<$crate::store::StoreDispatcher<$ty>>>,
            > = ::std::sync::OnceLock::new();
            fn dispatcher()
            -> ::std::option::Option<&'static ::std::sync::Arc<$crate::store::StoreDispatcher<$ty>>>
            {
                DISPATCHER
                    .get_or_init(|| {
                        $crate::store::StoreDispatcher::with_runtime(API)
                            .ok()
                            .map(::std::sync::Arc::new)
                    })
                    .as_ref()
            }
            fn name() -> &'static str {
                <$ty as $crate::store::StorePlugin>::META.name
            }
            extern "C" fn manifest() -> $crate::abi::Buf {
                $crate::abi::guarded(name(), || {
                    $crate::store::StoreDispatcher::<$ty>::new(API).hello_message()
                })
            }
            extern "C" fn call(req: *const u8, len: usize) -> $crate::abi::Buf {
                $crate::abi::guarded(name(), || {
                    // SAFETY: the host passes its own live request buffer of `len` bytes.
                    #[allow(unsafe_code)]
                    let bytes = unsafe { $crate::abi::request_bytes(req, len) };
                    match dispatcher() {
                        Some(d) => d.call_blocking(bytes),
                        None => $crate::store::runtime_failed(name()),
                    }
                })
            }
            extern "C" fn set_logger(logger: $crate::log::LoggerFn) {
                let _ = ::std::panic::catch_unwind(|| $crate::abi::install_logger(logger, name()));
            }
            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub static ACTUATOR_PLUGIN_V1: $crate::abi::ActuatorPluginV1 =
                $crate::abi::ActuatorPluginV1 {
                    magic: $crate::abi::MAGIC,
                    api_major: API.major,
                    api_minor: API.minor,
                    manifest,
                    call,
                    free: $crate::abi::free_buf,
                    set_logger,
                };
        };
    };
}

/// The answer of a cdylib store whose runtime could not be made.
#[doc(hidden)]
pub fn runtime_failed(plugin: &str) -> Vec<u8> {
    let e = RpcError::new(code::FAILED, format!("store plugin {plugin}: no tokio runtime"));
    serde_json::to_vec(&Response::err(None, e)).unwrap_or_default()
}
