//! The exec tier: line-delimited JSON-RPC on stdin and stdout.

use std::io::{self, BufRead, Write};

use crate::wire::{ApiVersion, MAX_MESSAGE_BYTES, Response, RpcError, code};
use crate::{Dispatcher, Plugin};

/// Serves plugin `P` on stdin/stdout until stdin closes or the host sends `shutdown`.
///
/// Writes the `hello` line first, then answers one request per line. Logs go to the host as
/// `log` notifications (see [`crate::log`]); a panic in a call is caught and answered as an
/// error (code `PANICKED`) and the plugin keeps serving.
///
/// ```no_run
/// # struct MyPlugin;
/// # impl actuator_plugin_sdk::Plugin for MyPlugin {
/// #     type Config = ();
/// #     const META: actuator_plugin_sdk::PluginMeta = actuator_plugin_sdk::PluginMeta::notifier("my", "0.1.0");
/// #     fn new(_: ()) -> Result<Self, actuator_plugin_sdk::PluginError> { Ok(Self) }
/// # }
/// fn main() -> std::io::Result<()> {
///     actuator_plugin_sdk::serve_stdio::<MyPlugin>()
/// }
/// ```
pub fn serve_stdio<P: Plugin>() -> io::Result<()> {
    serve_stdio_announcing::<P>(ApiVersion::NOTIFIER_AND_METRIC_SOURCE)
}

/// [`serve_stdio`], announcing `api` instead of [`ApiVersion::NOTIFIER_AND_METRIC_SOURCE`]:
/// for testing how a host refuses a plugin of another version, never for a real plugin.
pub fn serve_stdio_announcing<P: Plugin>(api: ApiVersion) -> io::Result<()> {
    crate::log::to_stdout(P::META.name);
    let d = Dispatcher::<P>::new(api);
    let stdin = io::stdin().lock();
    serve_with(&d, stdin, || io::stdout().lock())
}

/// Serves `d` on any reader and writer: the loop behind [`serve_stdio`]. `out` is called
/// for each line written (so the line is written under one lock of the writer).
pub fn serve_with<P: Plugin, R: BufRead, W: Write>(
    d: &Dispatcher<P>,
    mut input: R,
    mut out: impl FnMut() -> W,
) -> io::Result<()> {
    let write_line = |out: &mut dyn FnMut() -> W, mut bytes: Vec<u8>| -> io::Result<()> {
        bytes.push(b'\n');
        let mut w = out();
        w.write_all(&bytes)?;
        w.flush()
    };
    write_line(&mut out, d.hello_message())?;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n =
            io::Read::take(&mut input, MAX_MESSAGE_BYTES as u64 + 1).read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if buf.last() != Some(&b'\n') && buf.len() > MAX_MESSAGE_BYTES {
            // Skip the rest of the oversized line, then refuse it.
            let mut rest = Vec::new();
            input.read_until(b'\n', &mut rest)?;
            let r = Response::err(
                None,
                RpcError::new(
                    code::INVALID_REQUEST,
                    format!("message longer than {MAX_MESSAGE_BYTES} bytes"),
                ),
            );
            write_line(&mut out, serde_json::to_vec(&r).unwrap_or_default())?;
            continue;
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Some(r) = d.handle(line) {
            write_line(&mut out, serde_json::to_vec(&r).unwrap_or_default())?;
        }
        if d.shutdown_requested() {
            return Ok(());
        }
    }
}
