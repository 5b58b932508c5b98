//! What a replica knows of its cluster: the trait the daemon implements over its election,
//! and the shapes of `GET /v1/cluster` and of `/readyz`'s `cluster` member.

use actuator_core::StoreError;
use serde::{Deserialize, Serialize};

/// This daemon's view of the cluster it is a replica of (see
/// [`AppState::set_cluster`](crate::AppState::set_cluster)).
#[async_trait::async_trait]
pub trait ClusterView: Send + Sync + 'static {
    /// This replica's id.
    fn replica_id(&self) -> &str;

    /// The epoch this replica leads with, `None` when it follows.
    fn leading_epoch(&self) -> Option<u64>;

    /// The URL of the leader to forward to, when another replica leads (as last read).
    fn leader_url(&self) -> Option<String>;

    /// The leader and its epoch as last read, without asking the store: `(id, epoch)`.
    fn last_leader(&self) -> Option<(String, u64)>;

    /// The whole picture, read from the store.
    async fn status(&self) -> Result<ClusterStatus, StoreError>;
}

/// `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClusterStatus {
    /// The replica that answers.
    pub replica: ReplicaSelf,
    /// The leader, as the lease in the store names it; `null` before the first election,
    /// when its lease expired, and on a daemon not in cluster mode.
    pub leader: Option<LeaderInfo>,
    /// Every replica that recorded itself, by id (at most 100); empty outside cluster mode.
    pub replicas: Vec<ReplicaInfo>,
}

/// The replica that answers `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReplicaSelf {
    /// Its id (`[cluster] replica_id`).
    pub id: String,
    /// How the other replicas reach it (`[cluster] advertise_url`).
    pub url: String,
    /// `leader` or `follower`; a daemon not in cluster mode is its own leader.
    pub role: String,
    /// The epoch it leads with; `null` when it follows or is not in cluster mode.
    pub epoch: Option<u64>,
    /// When its routing table last fully resynchronised or applied a change (RFC 3339);
    /// `null` outside cluster mode.
    pub last_sync: Option<String>,
}

/// The leader named by the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LeaderInfo {
    /// Its replica id.
    pub id: String,
    /// Its URL.
    pub url: String,
    /// Its epoch: the fencing token every one of its writes is conditional on.
    pub epoch: u64,
    /// When it was elected (RFC 3339).
    pub since: String,
}

/// One replica as its last poll recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReplicaInfo {
    /// Its id.
    pub id: String,
    /// Its URL.
    pub url: String,
    /// `leader` or `follower`, at its last poll.
    pub role: String,
    /// Its last poll (RFC 3339): every lease/5, or lease/3 while it leads.
    pub last_seen: String,
    /// When its routing table last synchronised (RFC 3339).
    pub last_sync: Option<String>,
}
