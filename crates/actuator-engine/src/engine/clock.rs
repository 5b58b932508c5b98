//! Time as the engine sees it: the daemon reads the system clock, a simulation or a test
//! moves a manual one.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use std::sync::Mutex;

/// Where the engine reads the time. Every deadline, phase clock and timestamp of a rollout
/// comes from here, so a simulation can drive the real engine in simulated time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock: what the daemon uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self { now: Mutex::new(start) }
    }

    /// Moves the clock forward by `by` (a negative duration is ignored: time never runs back).
    pub fn advance(&self, by: ChronoDuration) {
        let mut g = self.now.lock().unwrap_or_else(|p| p.into_inner());
        if by > ChronoDuration::zero()
            && let Some(t) = g.checked_add_signed(by)
        {
            *g = t;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}
