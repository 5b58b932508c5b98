//! Test fixture: a library whose `ACTUATOR_PLUGIN_V1` starts with the magic `BAD!` instead of
//! `ACT1`, then API 1.1. A host reads the first eight bytes, sees the wrong magic and refuses
//! the library without calling anything (there is nothing to call).

#![allow(unsafe_code)]

/// The layout a host reads before it trusts anything: magic, API major, API minor.
#[repr(C)]
#[derive(Debug)]
pub struct Prefix {
    /// Not `ACT1`.
    pub magic: u32,
    /// 1.
    pub api_major: u16,
    /// 1.
    pub api_minor: u16,
}

/// The wrong magic: the bytes `BAD!` as a little-endian `u32`.
pub const WRONG_MAGIC: u32 = u32::from_le_bytes(*b"BAD!");

/// The exported entry point, with the wrong magic.
#[unsafe(no_mangle)]
pub static ACTUATOR_PLUGIN_V1: Prefix = Prefix { magic: WRONG_MAGIC, api_major: 1, api_minor: 1 };
