//! Logging from a plugin, in either tier: records go to the host, which writes them to its
//! own log under the plugin's name.
//!
//! - exec tier ([`crate::serve_stdio`]): each record is a JSON-RPC `log` notification on stdout;
//! - cdylib tier ([`crate::export_plugin!`]): each record goes through the logger the host
//!   passed to `set_logger`;
//! - before either is set up (unit tests): records go to stderr.
//!
//! A plugin never writes to stdout itself: in the exec tier stdout is the protocol.

use std::io::Write;
use std::sync::RwLock;

use crate::wire::{self, LogLevel, LogRecord, Request};

/// The C ABI's logger: `level` is [`LogLevel::as_u8`], `(ptr, len)` a UTF-8 JSON [`LogRecord`].
pub type LoggerFn = extern "C" fn(level: u8, ptr: *const u8, len: usize);

#[derive(Clone, Copy)]
enum Sink {
    Stderr,
    Stdout,
    Host(LoggerFn),
}

static SINK: RwLock<Sink> = RwLock::new(Sink::Stderr);
static PLUGIN: RwLock<&'static str> = RwLock::new("plugin");

fn set(sink: Sink, plugin: &'static str) {
    if let Ok(mut s) = SINK.write() {
        *s = sink;
    }
    if let Ok(mut p) = PLUGIN.write() {
        *p = plugin;
    }
}

pub(crate) fn to_stdout(plugin: &'static str) {
    set(Sink::Stdout, plugin);
}

pub(crate) fn to_host(logger: LoggerFn, plugin: &'static str) {
    set(Sink::Host(logger), plugin);
}

/// Writes one record at `level`.
pub fn write(level: LogLevel, message: &str) {
    let sink = SINK.read().map(|s| *s).unwrap_or(Sink::Stderr);
    let plugin = PLUGIN.read().map(|p| *p).unwrap_or("plugin");
    let record = LogRecord { level, plugin: plugin.to_owned(), message: message.to_owned() };
    match sink {
        Sink::Stderr => eprintln!("[{plugin}] {level:?}: {message}"),
        Sink::Stdout => {
            if let Ok(mut line) =
                serde_json::to_vec(&Request::notification(wire::method::LOG, &record))
            {
                line.push(b'\n');
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&line).and_then(|()| out.flush());
            }
        }
        Sink::Host(f) => {
            if let Ok(bytes) = serde_json::to_vec(&record) {
                f(level.as_u8(), bytes.as_ptr(), bytes.len());
            }
        }
    }
}

/// Logs at error level.
pub fn error(message: &str) {
    write(LogLevel::Error, message);
}

/// Logs at warn level.
pub fn warn(message: &str) {
    write(LogLevel::Warn, message);
}

/// Logs at info level.
pub fn info(message: &str) {
    write(LogLevel::Info, message);
}

/// Logs at debug level.
pub fn debug(message: &str) {
    write(LogLevel::Debug, message);
}
