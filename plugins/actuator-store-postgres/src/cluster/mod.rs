//! Several replicas on one database, one of them leading: an advisory-lock lease with a
//! fencing token ([`lease`]), the change feed every replica listens to ([`listen`]), and the
//! replicas' own rows ([`replicas`]).
//!
//! * **Election.** Each replica keeps one dedicated connection (not from the pools) and
//!   tries `pg_try_advisory_lock(LEADER_KEY)` every lease/5. The winner bumps the lease
//!   row's `epoch` (holding the write lock, so no write of the deposed leader commits after
//!   it): that epoch is its fencing token.
//! * **Renewal.** The leader moves `renewed_at` (the database's clock) every lease/3 on its
//!   dedicated connection; a renewal that fails, times out or finds the epoch moved makes it
//!   stop at once: the fence is cleared before anything else.
//! * **Takeover.** A follower that finds `renewed_at` older than the lease ends the backend
//!   holding the leader's lock (`pg_terminate_backend`): a paused leader keeps its TCP
//!   connection open, so PostgreSQL would keep its lock forever.
//! * **Fencing.** A store [fenced](crate::PostgresStore::with_fence) with the node's
//!   [`Fence`] refuses every write unless this replica leads and the lease still carries its
//!   epoch ([`StoreError::Fenced`](actuator_core::StoreError::Fenced)).

mod fence;
pub mod lease;
pub mod listen;
pub mod replicas;

pub use fence::{Fence, FenceState};
pub use lease::{ClusterNode, ClusterOptions, LEADER_KEY, LEASE_MS_RANGE, LeaseRow, Role};
pub use listen::{ChangeEvent, ChangeSink, spawn_listener};
pub use replicas::ReplicaRow;
