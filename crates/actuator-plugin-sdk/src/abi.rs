//! The cdylib tier's C ABI: one `#[repr(C)]` static, [`ActuatorPluginV1`], exported under the
//! symbol [`SYMBOL`] by [`crate::export_plugin!`].
//!
//! Only integers, function pointers and `(ptr, len, cap)` byte buffers cross; every buffer a
//! plugin returns is freed by the plugin's own `free`. The host reads `magic` and the API
//! version before it calls anything.

#![allow(unsafe_code)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::log::LoggerFn;
use crate::wire::{Response, RpcError, code};

/// The symbol name of the exported static (without the trailing NUL).
pub const SYMBOL: &str = "ACTUATOR_PLUGIN_V1";

/// `magic`: the bytes `ACT1` read as a little-endian `u32`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"ACT1");

/// A byte buffer the plugin allocated: a `Vec<u8>`'s parts. Hand it back to the plugin's
/// `free` exactly once.
#[repr(C)]
#[derive(Debug)]
pub struct Buf {
    /// Start of the bytes (null for an empty buffer).
    pub ptr: *mut u8,
    /// Bytes in use.
    pub len: usize,
    /// Bytes allocated.
    pub cap: usize,
}

impl Buf {
    /// Gives up `v`'s allocation to a buffer.
    pub fn from_vec(v: Vec<u8>) -> Self {
        let mut v = std::mem::ManuallyDrop::new(v);
        Self { ptr: v.as_mut_ptr(), len: v.len(), cap: v.capacity() }
    }

    /// An empty buffer (nothing to free).
    pub fn empty() -> Self {
        Self { ptr: std::ptr::null_mut(), len: 0, cap: 0 }
    }
}

/// The entry point of a cdylib plugin, API major 1.
#[repr(C)]
#[derive(Debug)]
pub struct ActuatorPluginV1 {
    /// Always [`MAGIC`].
    pub magic: u32,
    /// The API major version the plugin speaks.
    pub api_major: u16,
    /// The API minor version the plugin speaks.
    pub api_minor: u16,
    /// Returns the plugin's `hello` message (JSON).
    pub manifest: extern "C" fn() -> Buf,
    /// Answers one JSON-RPC request `(ptr, len)`; returns the JSON response (empty for a
    /// notification).
    pub call: extern "C" fn(req: *const u8, len: usize) -> Buf,
    /// Frees a buffer this plugin returned.
    pub free: extern "C" fn(buf: Buf),
    /// Sets the function the plugin's log records go to.
    pub set_logger: extern "C" fn(logger: LoggerFn),
}

/// Frees a buffer made by [`Buf::from_vec`] in this library: the `free` of every plugin.
pub extern "C" fn free_buf(buf: Buf) {
    if buf.ptr.is_null() {
        return;
    }
    // SAFETY: `buf` came from `Buf::from_vec` in this same library (the host hands back only
    // what this plugin's `manifest` or `call` returned), so its parts are a live Vec's.
    let _ = catch_unwind(|| unsafe { drop(Vec::from_raw_parts(buf.ptr, buf.len, buf.cap)) });
}

/// Runs `f` with panics caught: a panic becomes a JSON-RPC error response.
pub fn guarded(plugin: &str, f: impl FnOnce() -> Vec<u8>) -> Buf {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Buf::from_vec(v),
        Err(_) => {
            let r = Response::err(
                None,
                RpcError::new(code::PANICKED, format!("plugin {plugin} panicked at the boundary")),
            );
            Buf::from_vec(serde_json::to_vec(&r).unwrap_or_default())
        }
    }
}

/// Reads the request bytes the host passed to `call`.
///
/// # Safety
/// `ptr` must point to `len` readable bytes that stay valid for the returned borrow (the
/// host's request buffer, alive for the whole call), or be null with `len == 0`.
pub unsafe fn request_bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: the caller's contract above.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// Installs the host's logger for this library's [`crate::log`] records.
pub fn install_logger(logger: LoggerFn, plugin: &'static str) {
    crate::log::to_host(logger, plugin);
}

/// Exports plugin type `$ty` as a cdylib: emits the `#[no_mangle]` static
/// `ACTUATOR_PLUGIN_V1` ([`ActuatorPluginV1`]) whose every function catches panics.
///
/// ```ignore
/// actuator_plugin_sdk::export_plugin!(Teams);
/// // To test a host's refusal only: announce another version.
/// actuator_plugin_sdk::export_plugin!(Teams, api = actuator_plugin_sdk::ApiVersion { major: 2, minor: 0 });
/// ```
///
/// Build the library with `crate-type = ["cdylib"]` and `panic = "unwind"` (the default):
/// with `panic = "abort"` no panic can be caught and one aborts the host.
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty) => {
        $crate::export_plugin!($ty, api = $crate::ApiVersion::NOTIFIER_AND_METRIC_SOURCE);
    };
    ($ty:ty, api = $api:expr) => {
        const _: () = {
            const API: $crate::ApiVersion = $api;
            static DISPATCHER: ::std::sync::OnceLock<$crate::Dispatcher<$ty>> =
                ::std::sync::OnceLock::new();
            fn dispatcher() -> &'static $crate::Dispatcher<$ty> {
                DISPATCHER.get_or_init(|| $crate::Dispatcher::new(API))
            }
            fn name() -> &'static str {
                <$ty as $crate::Plugin>::META.name
            }
            extern "C" fn manifest() -> $crate::abi::Buf {
                $crate::abi::guarded(name(), || dispatcher().hello_message())
            }
            extern "C" fn call(req: *const u8, len: usize) -> $crate::abi::Buf {
                $crate::abi::guarded(name(), || {
                    // SAFETY: the host passes its own live request buffer of `len` bytes.
                    #[allow(unsafe_code)]
                    let bytes = unsafe { $crate::abi::request_bytes(req, len) };
                    dispatcher().handle_bytes(bytes)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_is_act1() {
        assert_eq!(MAGIC.to_le_bytes(), *b"ACT1");
    }

    #[test]
    fn a_buffer_round_trips_through_free() {
        let b = Buf::from_vec(b"hello".to_vec());
        assert_eq!(b.len, 5);
        // SAFETY: `b` is a live buffer of 5 bytes made just above.
        let s = unsafe { request_bytes(b.ptr, b.len) }.to_vec();
        assert_eq!(s, b"hello");
        free_buf(b);
        free_buf(Buf::empty());
        let panicked = guarded("p", || panic!("inside"));
        // SAFETY: as above.
        let text = unsafe { request_bytes(panicked.ptr, panicked.len) }.to_vec();
        let r: Response = serde_json::from_slice(&text).unwrap();
        assert_eq!(r.error.unwrap().code, code::PANICKED);
        free_buf(panicked);
    }
}
