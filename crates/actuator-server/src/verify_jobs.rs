//! Full verifications of the audit chain as background jobs: `POST /v1/audit/verify/full`
//! starts one, `GET /v1/audit/verify/jobs/{id}` follows it.
//!
//! One job runs at a time (it holds the same guard as `GET /v1/audit/verify`). The server
//! keeps the last [`MAX_VERIFY_JOBS`] jobs in memory, the running one included; older finished
//! jobs are forgotten, and so is every job when the daemon stops.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use actuator_config::{AuditReport, ConfigError};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Most verification jobs the server remembers (the oldest finished one is forgotten first).
pub const MAX_VERIFY_JOBS: usize = 16;

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JobState {
    /// Walking the chain.
    Running,
    /// Walked the whole chain: `report` says whether it is intact (`report.ok`).
    Succeeded,
    /// Could not finish (the store failed): `error` says why.
    Failed,
}

/// A verification job as the API shows it.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct VerifyJobView {
    /// The job's id.
    pub(crate) id: String,
    /// Running, succeeded or failed.
    pub(crate) state: JobState,
    /// Entries checked so far.
    pub(crate) entries_checked: u64,
    /// Entries in the chain when the job started (entries appended since are checked too, so
    /// `entries_checked` may end above it).
    pub(crate) total: u64,
    /// When it started.
    pub(crate) started_at: DateTime<Utc>,
    /// When it ended.
    pub(crate) finished_at: Option<DateTime<Utc>>,
    /// The verification's report, once it succeeded.
    pub(crate) report: Option<AuditReport>,
    /// Why it failed.
    pub(crate) error: Option<String>,
}

/// How a job ended.
#[derive(Debug)]
struct Outcome {
    at: DateTime<Utc>,
    result: Result<AuditReport, String>,
}

/// One job: its progress counter is written by the verification, read by the API.
#[derive(Debug)]
pub(crate) struct Job {
    id: String,
    total: u64,
    started_at: DateTime<Utc>,
    checked: AtomicU64,
    outcome: Mutex<Option<Outcome>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Job {
    /// The job's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Records the entries checked so far.
    pub(crate) fn progress(&self, checked: u64) {
        self.checked.store(checked, Ordering::Relaxed);
    }

    /// Records the end of the verification.
    pub(crate) fn finish(&self, result: Result<AuditReport, ConfigError>) {
        let result = result.map_err(|e| e.to_string());
        if let Ok(r) = &result {
            self.progress(r.entries_checked);
        }
        let mut o = lock(&self.outcome);
        if o.is_none() {
            *o = Some(Outcome { at: Utc::now(), result });
        }
    }

    fn is_running(&self) -> bool {
        lock(&self.outcome).is_none()
    }

    /// The job as the API shows it.
    pub(crate) fn view(&self) -> VerifyJobView {
        let o = lock(&self.outcome);
        let (state, report, error) = match o.as_ref().map(|o| &o.result) {
            None => (JobState::Running, None, None),
            Some(Ok(r)) => (JobState::Succeeded, Some(r.clone()), None),
            Some(Err(e)) => (JobState::Failed, None, Some(e.clone())),
        };
        VerifyJobView {
            id: self.id.clone(),
            state,
            entries_checked: self.checked.load(Ordering::Relaxed),
            total: self.total,
            started_at: self.started_at,
            finished_at: o.as_ref().map(|o| o.at),
            report,
            error,
        }
    }
}

/// Ends a job as failed if its task stops before it recorded an outcome (a panic, or the
/// runtime shutting down), so no job stays `running` for ever.
#[derive(Debug)]
pub(crate) struct FinishOnDrop(pub(crate) Arc<Job>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        let mut o = lock(&self.0.outcome);
        if o.is_none() {
            *o = Some(Outcome {
                at: Utc::now(),
                result: Err("the verification stopped before it finished".to_owned()),
            });
        }
    }
}

/// The last [`MAX_VERIFY_JOBS`] jobs, oldest first.
#[derive(Debug, Default)]
pub(crate) struct VerifyJobs {
    jobs: Mutex<VecDeque<Arc<Job>>>,
}

impl VerifyJobs {
    /// Registers a new running job over a chain of `total` entries, forgetting the oldest
    /// finished job when [`MAX_VERIFY_JOBS`] are kept.
    pub(crate) fn start(&self, total: u64) -> Arc<Job> {
        let job = Arc::new(Job {
            id: format!("av-{}", uuid::Uuid::now_v7()),
            total,
            started_at: Utc::now(),
            checked: AtomicU64::new(0),
            outcome: Mutex::new(None),
        });
        let mut jobs = lock(&self.jobs);
        while jobs.len() >= MAX_VERIFY_JOBS {
            match jobs.iter().position(|j| !j.is_running()) {
                Some(i) => {
                    jobs.remove(i);
                }
                None => break,
            }
        }
        jobs.push_back(Arc::clone(&job));
        job
    }

    /// The job with this id, if it is still kept.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Job>> {
        lock(&self.jobs).iter().find(|j| j.id == id).cloned()
    }

    /// The id of the running job, if one runs.
    pub(crate) fn running(&self) -> Option<String> {
        lock(&self.jobs).iter().find(|j| j.is_running()).map(|j| j.id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(n: u64) -> AuditReport {
        AuditReport {
            ok: true,
            entries_checked: n,
            incremental: false,
            from: 1,
            to: n,
            problem: None,
            problems: Vec::new(),
            problems_found: 0,
            message: "m".into(),
        }
    }

    #[test]
    fn jobs_are_bounded_and_keep_the_running_one() {
        let jobs = VerifyJobs::default();
        let first = jobs.start(1);
        let first_id = first.id().to_owned();
        assert_eq!(jobs.running(), Some(first_id.clone()));
        let mut last = None;
        for i in 0..(MAX_VERIFY_JOBS as u64 + 3) {
            let j = jobs.start(i);
            j.finish(Ok(report(i)));
            last = Some(j.id().to_owned());
        }
        assert_eq!(lock(&jobs.jobs).len(), MAX_VERIFY_JOBS);
        assert!(jobs.get(&first_id).is_some(), "a running job is never forgotten");
        assert!(jobs.get(last.as_deref().unwrap()).is_some(), "the newest is kept");
        first.finish(Ok(report(1)));
        assert_eq!(jobs.running(), None);
        jobs.start(0);
        assert!(jobs.get(&first_id).is_none(), "the oldest finished job went first");
    }

    #[test]
    fn a_job_reports_progress_then_its_outcome() {
        let jobs = VerifyJobs::default();
        let j = jobs.start(10);
        j.progress(4);
        let v = j.view();
        assert_eq!((v.state, v.entries_checked, v.total), (JobState::Running, 4, 10));
        assert!(v.report.is_none() && v.finished_at.is_none());
        j.finish(Ok(report(10)));
        let v = j.view();
        assert_eq!((v.state, v.entries_checked), (JobState::Succeeded, 10));
        assert!(v.report.is_some() && v.finished_at.is_some());
        let k = jobs.start(3);
        drop(FinishOnDrop(Arc::clone(&k)));
        let v = k.view();
        assert_eq!(v.state, JobState::Failed);
        assert!(v.error.unwrap().contains("stopped"));
    }
}
