//! `actuator serve` as one replica of several on one PostgreSQL database (`[cluster]`).
//!
//! Every replica serves resolve, OFREP and the reads it can answer from its routing table
//! and the store, and keeps the table in step through the change feed (a full resync on
//! every reconnection, and every 5 s as a net). Only the leader runs a rollout engine: a
//! fresh one at each election, over the store fenced at its epoch; when it stops leading the
//! engine is detached and stopped and the replica goes on as a follower. Followers forward
//! what only the leader serves (see `actuator_server::needs_leader`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actuator_core::StoreError;
use actuator_server::{AppState, ClusterStatus, ClusterView, LeaderInfo, ReplicaInfo, ReplicaSelf};
use actuator_store_postgres::cluster::{ChangeEvent, ChangeSink, spawn_listener};
use actuator_store_postgres::{ClusterNode, ClusterOptions, Role};
use anyhow::Context;
use async_trait::async_trait;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::daemon::{ClusterParts, EngineFactory, ROUTE_RESYNC};
use crate::settings::Settings;

/// The server's view of this replica's election.
struct View {
    node: ClusterNode,
}

#[async_trait]
impl ClusterView for View {
    fn replica_id(&self) -> &str {
        &self.node.options().replica_id
    }

    fn leading_epoch(&self) -> Option<u64> {
        // The fence is cleared first when the replica steps down.
        self.node.fence().epoch()
    }

    fn leader_url(&self) -> Option<String> {
        self.node.leader_url()
    }

    fn last_leader(&self) -> Option<(String, u64)> {
        let lease = self.node.last_lease()?;
        if lease.expired {
            return None;
        }
        Some((lease.holder?, lease.epoch))
    }

    async fn status(&self) -> Result<ClusterStatus, StoreError> {
        let lease = self.node.read_lease().await?;
        let replicas = self.node.replicas().await?;
        let o = self.node.options();
        let epoch = self.leading_epoch();
        let leader = match (&lease.holder, &lease.url, &lease.since) {
            (Some(id), Some(url), Some(since)) if !lease.expired => Some(LeaderInfo {
                id: id.clone(),
                url: url.clone(),
                epoch: lease.epoch,
                since: since.clone(),
            }),
            _ => None,
        };
        Ok(ClusterStatus {
            replica: ReplicaSelf {
                id: o.replica_id.clone(),
                url: o.url.clone(),
                role: if epoch.is_some() { "leader" } else { "follower" }.to_owned(),
                epoch,
                last_sync: self
                    .node
                    .last_sync()
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            },
            leader,
            replicas: replicas
                .into_iter()
                .map(|r| ReplicaInfo {
                    id: r.id,
                    url: r.url,
                    role: r.role,
                    last_seen: r.last_seen,
                    last_sync: r.last_sync,
                })
                .collect(),
        })
    }
}

/// Applies the change feed to the routing table and the token table.
struct Sink {
    state: AppState,
    node: ClusterNode,
}

#[async_trait]
impl ChangeSink for Sink {
    async fn changed(&self, change: ChangeEvent) {
        match change {
            ChangeEvent::Slot(name) => match actuator_core::SlotName::new(&name) {
                Ok(slot) => match self.state.routes().refresh_slot(&slot).await {
                    Ok(_) => self.node.mark_synced(),
                    Err(e) => {
                        tracing::warn!(slot = %name, error = %e, "change feed: refreshing a slot failed; the resync will retry");
                    }
                },
                Err(e) => {
                    tracing::warn!(slot = %name, error = %e, "change feed: a notification names no valid slot")
                }
            },
            ChangeEvent::Tokens => {
                if let Err(e) = self.state.reload_tokens().await {
                    tracing::warn!(error = %e, "change feed: reloading the tokens failed; the resync will retry");
                }
            }
            ChangeEvent::Resync => resync(&self.state, &self.node).await,
        }
    }
}

/// Rebuilds the routing table and the token table from the store.
async fn resync(state: &AppState, node: &ClusterNode) {
    let routes = state.routes().rebuild_all().await;
    let tokens = state.reload_tokens().await;
    match (routes, tokens) {
        (Ok(_), Ok(_)) => node.mark_synced(),
        (Err(e), _) => tracing::warn!(error = %e, "routing table resync failed"),
        (_, Err(e)) => tracing::warn!(error = %e, "token table resync failed"),
    }
}

/// Runs an engine while this replica leads: a fresh one at each election, detached and
/// stopped when it stops leading. Ends (stopping the engine it runs) when `stop` turns true.
async fn supervise(
    state: AppState,
    node: ClusterNode,
    engines: EngineFactory,
    mut stop: watch::Receiver<bool>,
) {
    let mut roles = node.subscribe_role();
    loop {
        let role = *roles.borrow_and_update();
        match role {
            Role::Leader { epoch } if state.engine().is_none() => {
                state.mark_resuming();
                let engine = engines.build();
                let t0 = std::time::Instant::now();
                match engine.start().await {
                    Ok(()) if node.fence().epoch() == Some(epoch) => {
                        state.attach_engine(engine);
                        tracing::info!(
                            epoch,
                            secs = t0.elapsed().as_secs_f64(),
                            "leading: the rollout engine resumed the stored rollouts"
                        );
                    }
                    Ok(()) => {
                        // The lease was lost while the engine resumed.
                        let _ = engine.stop().await;
                    }
                    Err(e) => {
                        state.detach_engine();
                        tracing::error!(epoch, error = %e, "leading, but the rollout engine cannot resume the stored rollouts; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = stop.changed() => {}
                        }
                        if *stop.borrow() {
                            break;
                        }
                        continue;
                    }
                }
            }
            Role::Leader { .. } => {}
            Role::Follower => {
                if let Some(engine) = state.detach_engine() {
                    // Its last checkpoint writes are refused by the fence: the new leader
                    // resumes from what the store holds.
                    let _ = engine.stop().await;
                    tracing::info!("following: the rollout engine is stopped");
                }
            }
        }
        tokio::select! {
            changed = roles.changed() => if changed.is_err() { break },
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
}

/// Serves as a replica until Ctrl-C or SIGTERM, then stops the engine (while still
/// leading, so its last checkpoint commits), lets go of the lease and drains.
pub(crate) async fn serve(
    settings: Settings,
    state: AppState,
    engines: EngineFactory,
    parts: ClusterParts,
    listener: TcpListener,
    addr: SocketAddr,
) -> anyhow::Result<()> {
    let (replica_id, url) = settings.cluster.resolve(&settings.store, addr)?;
    let options = ClusterOptions {
        replica_id: replica_id.clone(),
        url: url.clone(),
        lease: Duration::from_millis(settings.cluster.lease_ms),
    };
    let node = ClusterNode::start(&parts.store, options, parts.fence.clone())
        .context("joining the cluster")?;
    state.set_cluster(Arc::new(View { node: node.clone() }));
    let (stop_tx, stop_rx) = watch::channel(false);
    let sink = Arc::new(Sink { state: state.clone(), node: node.clone() });
    let feed = spawn_listener(&parts.store, sink, stop_rx.clone());
    let net = {
        let (state, node, mut stop) = (state.clone(), node.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ROUTE_RESYNC);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => resync(&state, &node).await,
                    _ = stop.changed() => return,
                }
            }
        })
    };
    let supervisor = tokio::spawn(supervise(state.clone(), node.clone(), engines, stop_rx.clone()));
    tracing::info!(%addr, replica = %replica_id, advertise_url = %url, lease_ms = settings.cluster.lease_ms, "actuator listening as a cluster replica");
    println!("actuator listening on http://{addr}");
    let server =
        actuator_server::serve(listener, state.clone(), crate::daemon::shutdown_signal()).await;
    stop_tx.send_replace(true);
    let _ = supervisor.await;
    if let Some(engine) = state.detach_engine() {
        engine.stop().await.context("stopping the rollout engine")?;
    }
    node.stop().await;
    let _ = feed.await;
    let _ = net.await;
    server.context("serving HTTP")?;
    tracing::info!("actuator stopped");
    Ok(())
}
