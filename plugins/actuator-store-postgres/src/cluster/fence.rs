//! The fencing token a replica writes with: "the epoch I lead with, or none".

use std::sync::Arc;

use tokio::sync::watch;

/// What a [`Fence`] holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FenceState {
    /// This replica does not lead: fenced writes are refused.
    #[default]
    Follower,
    /// This replica leads with this epoch: a fenced write commits only while the lease row
    /// in the database still carries it.
    Leader(u64),
    /// A fenced write found the lease at `current`, not at `held`: another replica took
    /// over. The holder of the lease steps down when it sees this.
    Deposed {
        /// The epoch this replica led with.
        held: u64,
        /// The epoch found in the lease row.
        current: u64,
    },
}

impl FenceState {
    /// The epoch writes may commit with, `None` unless leading.
    pub fn epoch(self) -> Option<u64> {
        match self {
            Self::Leader(e) => Some(e),
            Self::Follower | Self::Deposed { .. } => None,
        }
    }
}

/// A shared handle on the fencing token of one replica. Cheap to clone; every clone sees the
/// same token. The election sets and clears it; a fenced [`PostgresStore`] reads it in every
/// write transaction and marks it [`FenceState::Deposed`] when the lease moved on.
///
/// [`PostgresStore`]: crate::PostgresStore
#[derive(Clone, Debug)]
pub struct Fence {
    state: Arc<watch::Sender<FenceState>>,
}

impl Default for Fence {
    fn default() -> Self {
        Self::new()
    }
}

impl Fence {
    /// A fence that holds no epoch.
    pub fn new() -> Self {
        Self { state: Arc::new(watch::Sender::new(FenceState::Follower)) }
    }

    /// The current state.
    pub fn state(&self) -> FenceState {
        *self.state.borrow()
    }

    /// The epoch writes may commit with, `None` unless leading.
    pub fn epoch(&self) -> Option<u64> {
        self.state().epoch()
    }

    /// Lets writes commit with `epoch` (on election).
    pub fn lead(&self, epoch: u64) {
        self.state.send_replace(FenceState::Leader(epoch));
    }

    /// Refuses every further write (on stepping down). Returns the epoch held before.
    pub fn clear(&self) -> Option<u64> {
        self.state.send_replace(FenceState::Follower).epoch()
    }

    /// Records that a write found the lease at `current` while this replica held `held`:
    /// further writes are refused and the election is told.
    pub(crate) fn deposed(&self, held: u64, current: u64) {
        self.state.send_if_modified(|s| {
            if *s == FenceState::Leader(held) {
                *s = FenceState::Deposed { held, current };
                true
            } else {
                false
            }
        });
    }

    /// Watches the state.
    pub fn subscribe(&self) -> watch::Receiver<FenceState> {
        self.state.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_leads_clears_and_is_deposed_only_from_its_own_epoch() {
        let f = Fence::new();
        assert_eq!(f.epoch(), None);
        let other = f.clone();
        f.lead(3);
        assert_eq!(other.epoch(), Some(3), "clones share the token");
        f.deposed(2, 4);
        assert_eq!(f.state(), FenceState::Leader(3), "a stale epoch does not depose");
        f.deposed(3, 4);
        assert_eq!(f.state(), FenceState::Deposed { held: 3, current: 4 });
        assert_eq!(f.epoch(), None);
        assert_eq!(f.clear(), None);
        f.lead(5);
        assert_eq!(f.clear(), Some(5));
    }
}
