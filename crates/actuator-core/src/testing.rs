//! Test support (feature `testing`): an in-memory [`Store`](crate::Store) for unit tests,
//! and the conformance suite every store plugin runs.

pub mod conformance;
mod memory;

pub use memory::MemoryStore;
