//! What stops a [`PostgresStore`](crate::PostgresStore) from writing: an unacknowledged break
//! of the audit chain, a write that failed (the server unreachable). Shared by the store's
//! clones.

use std::sync::Mutex;

use actuator_core::store::StoreError;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fault state of one store.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// The unacknowledged chain problem that blocks writes.
    chain: Mutex<Option<String>>,
    /// The last write failure of the backend (cleared by the next write that works).
    write_failure: Mutex<Option<String>>,
}

impl Faults {
    /// Refuses writes while the chain is broken and unacknowledged.
    pub(crate) fn check_chain(&self) -> Result<(), StoreError> {
        match lock(&self.chain).as_ref() {
            Some(p) => Err(StoreError::ChainBroken(p.clone())),
            None => Ok(()),
        }
    }

    /// Records the outcome of verifying the chain.
    pub(crate) fn set_chain(&self, problem: Option<String>) {
        if let Some(p) = &problem {
            tracing::error!(
                problem = %p,
                "audit chain broken: writes are refused until an operator acknowledges it (actuator audit acknowledge --reason ...)"
            );
        }
        *lock(&self.chain) = problem;
    }

    /// The chain problem that blocks writes, if any.
    pub(crate) fn chain(&self) -> Option<String> {
        lock(&self.chain).clone()
    }

    /// Records a failed write.
    pub(crate) fn write_failed(&self, e: &StoreError) {
        tracing::error!(error = %e, "postgres store: a write failed; it was rolled back");
        *lock(&self.write_failure) = Some(e.to_string());
    }

    /// Records a write that worked; logs when that ends a run of failures.
    pub(crate) fn write_ok(&self) {
        if lock(&self.write_failure).take().is_some() {
            tracing::warn!("postgres store: writes work again");
        }
    }

    /// The last write failure, if the last write failed.
    pub(crate) fn write_failure(&self) -> Option<String> {
        lock(&self.write_failure).clone()
    }
}
