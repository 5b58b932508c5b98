//! `GET /v1/cluster`: who leads, since when, with which epoch, and each replica's last sync.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::AppState;
use crate::cluster::{ClusterStatus, ReplicaSelf};
use crate::error::ApiError;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/cluster", get(cluster))
}

/// Served by every replica from the store. A daemon not in cluster mode answers as its own
/// leader with no epoch, no leader and no replicas.
async fn cluster(State(st): State<AppState>) -> Result<Json<ClusterStatus>, ApiError> {
    match st.cluster() {
        Some(c) => Ok(Json(c.status().await?)),
        None => Ok(Json(ClusterStatus {
            replica: ReplicaSelf {
                id: "standalone".into(),
                url: String::new(),
                role: "leader".into(),
                epoch: None,
                last_sync: None,
            },
            leader: None,
            replicas: Vec::new(),
        })),
    }
}
