//! What stops a [`SqliteStore`](crate::SqliteStore) from writing: a database file that was
//! removed or replaced, an unacknowledged break of the audit chain, a write that failed
//! (disk full). Shared by the store's clones.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use actuator_core::store::StoreError;

/// The identity of a file: device and inode on Unix; on other systems only its existence is
/// checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    #[cfg(unix)]
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self { dev: meta.dev(), ino: meta.ino() }
    }

    #[cfg(not(unix))]
    fn of(_meta: &std::fs::Metadata) -> Self {
        Self { dev: 0, ino: 0 }
    }

    /// The identity of the file at `path` now; `None` when it is missing.
    pub(crate) async fn read(path: &Path) -> std::io::Result<Option<Self>> {
        match tokio::fs::metadata(path).await {
            Ok(m) => Ok(Some(Self::of(&m))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fault state of one store.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// The database file and its identity when it was opened (file stores only).
    file: Option<(PathBuf, FileId)>,
    /// The file problem last seen (to log changes once).
    file_problem: Mutex<Option<String>>,
    /// The unacknowledged chain problem that blocks writes.
    chain: Mutex<Option<String>>,
    /// The last write failure of the backend (cleared by the next write that works).
    write_failure: Mutex<Option<String>>,
}

impl Faults {
    /// Faults of a store over the file at `path`, whose identity is `id` now.
    pub(crate) fn for_file(path: PathBuf, id: FileId) -> Self {
        Self { file: Some((path, id)), ..Self::default() }
    }

    /// Checks that the database file is still the one opened; logs when that changes.
    pub(crate) async fn check_file(&self) -> Result<(), StoreError> {
        let Some((path, opened)) = &self.file else { return Ok(()) };
        let problem = match FileId::read(path).await {
            Ok(Some(now)) if now == *opened => None,
            Ok(Some(now)) => Some(format!(
                "the database file {} was replaced (device {} inode {} when opened, now device {} inode {})",
                path.display(),
                opened.dev,
                opened.ino,
                now.dev,
                now.ino
            )),
            Ok(None) => Some(format!("the database file {} was removed", path.display())),
            Err(e) => Some(format!("the database file {} cannot be checked: {e}", path.display())),
        };
        let mut last = lock(&self.file_problem);
        match (&problem, last.as_ref()) {
            (Some(p), prev) if prev != Some(p) => tracing::error!(
                problem = %p,
                "sqlite store: writes stopped; restore the original file, or restart the daemon to open the file now at the path"
            ),
            (None, Some(_)) => {
                tracing::warn!(path = %path.display(), "sqlite store: the database file is back; writes resume")
            }
            _ => {}
        }
        last.clone_from(&problem);
        match problem {
            Some(p) => Err(StoreError::Unavailable(format!(
                "{p}; writes are stopped so nothing is written to a file that is gone: restore the original file, or restart the daemon"
            ))),
            None => Ok(()),
        }
    }

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
        tracing::error!(error = %e, "sqlite store: a write failed; the writer connection was replaced");
        *lock(&self.write_failure) = Some(e.to_string());
    }

    /// Records a write that worked; logs when that ends a run of failures.
    pub(crate) fn write_ok(&self) {
        if lock(&self.write_failure).take().is_some() {
            tracing::warn!("sqlite store: writes work again");
        }
    }

    /// The last write failure, if the last write failed.
    pub(crate) fn write_failure(&self) -> Option<String> {
        lock(&self.write_failure).clone()
    }
}
