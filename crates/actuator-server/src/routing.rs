//! The routing table, derived from the store.
//!
//! Invariant: the table is a pure function of persisted state. For each slot with an active
//! version it holds `SlotRoute { stable: <active version>, rollout }`, where `rollout` is the
//! `actuator_canary::Rollout` JSON that the slot's active rollout record keeps under
//! `status["route"]` (absent or `null`: no split, everyone gets stable). Slots without an active
//! version are absent. Two processes reading the same store build the same table, hence the
//! same buckets and the same ETags.
//!
//! Requests never touch the store: they resolve against the lock-free [`Router`]. The store is
//! read only by [`RouteBook::rebuild_all`] (startup, periodic resync) and
//! [`RouteBook::refresh_slot`] (after every change).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actuator_canary::{
    EvalContext, ResolveError, Rollout, Router, RoutingTable, SlotRoute, TableGuard,
    VersionedConfig,
};
use actuator_core::{
    ConfigVersion, PageRequest, RolloutFilter, RolloutRoute, Slot, SlotName, Store, StoreError,
};
use serde_json::Value;
use tokio::sync::{Mutex, watch};

/// The evaluation context of a request body's `context` member: absent or `null` is an empty
/// context (a slot whose strategy needs a key then answers `TARGETING_KEY_MISSING`), an object
/// is an OFREP context, anything else is `INVALID_CONTEXT`.
pub(crate) fn eval_context(context: Option<Value>) -> Result<EvalContext, ResolveError> {
    match context {
        None | Some(Value::Null) => Ok(EvalContext::new()),
        Some(v @ Value::Object(_)) => EvalContext::from_json(v),
        Some(other) => Err(ResolveError::InvalidContext {
            attribute: "context".into(),
            problem: format!(
                "is {}: send a JSON object like {{\"targetingKey\": \"user-1\"}}",
                actuator_canary::json_kind(&other)
            ),
        }),
    }
}

/// Why the routing table could not be read from the store.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The store failed; the table is unchanged.
    #[error("reading routes from the store: {0}")]
    Store(#[from] StoreError),
    /// A route was refused by the routing table (a bug: routes are validated when loaded).
    #[error("publishing the route of slot {slot}: {source}")]
    Publish {
        /// The slot.
        slot: String,
        /// Why it was refused.
        source: ResolveError,
    },
}

/// A change of the routing table, as announced to listeners (the SSE stream).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteEvent {
    /// Changes published by this process so far (0 before the first).
    pub seq: u64,
    /// Content hash of the whole table after the change ([`RoutingTable::etag`]); the same in
    /// every replica for the same persisted state.
    pub etag: u64,
    /// Unix time, in seconds, of the change.
    pub at: u64,
    /// The slots whose route changed; empty for a full rebuild.
    pub slots: Vec<String>,
    /// The server is shutting down: streams should end.
    pub closing: bool,
}

/// The routing table and where it comes from. Cheap to clone (shared).
#[derive(Clone)]
pub struct RouteBook {
    inner: Arc<BookInner>,
}

struct BookInner {
    router: Router,
    store: Arc<dyn Store>,
    /// Serializes refreshes, so that a slower refresh never publishes older state over a
    /// newer one. Never taken by requests.
    refresh: Mutex<()>,
    events: watch::Sender<RouteEvent>,
    /// The table has been built from the store at least once ([`RouteBook::rebuild_all`]).
    built: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for RouteBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteBook")
            .field("router", &self.inner.router)
            .field("last_event", &*self.inner.events.borrow())
            .finish_non_exhaustive()
    }
}

/// Unix time in seconds (0 if the clock is before 1970).
pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl RouteBook {
    /// An empty book over `store`; call [`RouteBook::rebuild_all`] before serving.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let (events, _) = watch::channel(RouteEvent::default());
        Self {
            inner: Arc::new(BookInner {
                router: Router::new(),
                store,
                refresh: Mutex::new(()),
                events,
                built: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// A book over `store` with its table built.
    ///
    /// # Errors
    /// [`RouteError::Store`] when the store cannot be read.
    pub async fn load(store: Arc<dyn Store>) -> Result<Self, RouteError> {
        let book = Self::new(store);
        book.rebuild_all().await?;
        Ok(book)
    }

    /// Whether the table has been built from the store at least once.
    pub fn built(&self) -> bool {
        self.inner.built.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The lock-free router requests resolve against.
    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// The current table for one request, without a reference-count increment (see
    /// [`Router::load`]); keep it only for the synchronous part of a request.
    pub fn current(&self) -> TableGuard {
        self.inner.router.load()
    }

    /// The current snapshot of the table.
    pub fn snapshot(&self) -> Arc<RoutingTable> {
        self.inner.router.snapshot()
    }

    /// Listens to changes of the table. The receiver sees only the latest change (changes in
    /// a burst coalesce), which is what a "refetch now" notification needs.
    pub fn subscribe(&self) -> watch::Receiver<RouteEvent> {
        self.inner.events.subscribe()
    }

    /// Tells listeners the server is shutting down, so that long-lived streams end and a
    /// graceful shutdown does not wait for them.
    pub fn close(&self) {
        self.inner.events.send_modify(|e| e.closing = true);
    }

    fn announce(&self, slots: Vec<String>) {
        let etag = self.inner.router.snapshot().etag();
        self.inner.events.send_modify(|e| {
            e.seq += 1;
            e.etag = etag;
            e.at = now_secs();
            e.slots = slots;
        });
    }

    /// Rebuilds the whole table from the store (pages through every slot) and publishes it if
    /// it differs from the current one. Returns whether it changed.
    ///
    /// # Errors
    /// [`RouteError::Store`] when the store cannot be read; the table is then unchanged.
    pub async fn rebuild_all(&self) -> Result<bool, RouteError> {
        let _serial = self.inner.refresh.lock().await;
        let current = self.inner.router.snapshot();
        let mut routes = self.active_routes().await?;
        let mut table = RoutingTable::new();
        let mut cursor = None;
        loop {
            // Each page of slots comes with its active versions (no query per slot).
            let page = self
                .inner
                .store
                .list_slots_with_active_versions(PageRequest {
                    limit: PageRequest::MAX_LIMIT,
                    cursor,
                })
                .await?;
            for (slot, version) in page.items {
                let rollout = routes.remove(&slot.name).unwrap_or(ActiveRoute::None);
                let slot = &slot;
                if let Some(mut route) = Self::route_of(slot, version, rollout) {
                    // An unchanged route is carried over as it is (a round-robin rollout keeps
                    // its position: clones share the counter).
                    if let Some(same) = current.get(slot.name.as_str()).filter(|r| ***r == route) {
                        route = SlotRoute::clone(same);
                    }
                    table.insert(slot.name.as_str(), route).map_err(|source| {
                        RouteError::Publish { slot: slot.name.to_string(), source }
                    })?;
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        if current.etag() == table.etag() && current.len() == table.len() {
            self.inner.built.store(true, std::sync::atomic::Ordering::Release);
            return Ok(false);
        }
        let slots = table.len();
        self.inner
            .router
            .publish(table)
            .map_err(|source| RouteError::Publish { slot: "*".into(), source })?;
        self.inner.built.store(true, std::sync::atomic::Ordering::Release);
        tracing::debug!(slots, "routing table rebuilt from the store");
        self.announce(Vec::new());
        Ok(true)
    }

    /// Re-reads one slot from the store and updates its route (or removes it when the slot has
    /// no active version any more). Returns whether the route changed. Call it after every
    /// change to the slot's active version or to its rollout.
    ///
    /// # Errors
    /// [`RouteError::Store`] when the store cannot be read; the table is then unchanged.
    pub async fn refresh_slot(&self, name: &SlotName) -> Result<bool, RouteError> {
        let _serial = self.inner.refresh.lock().await;
        let route = match self.inner.store.get_slot(name).await? {
            Some(slot) => {
                let rollout = self.active_route_of(name).await?;
                self.build_route(&slot, rollout).await?
            }
            None => None,
        };
        let router = &self.inner.router;
        let current = router.snapshot();
        let changed = match route {
            Some(route) => {
                if current.get(name.as_str()).is_some_and(|r| **r == route) {
                    false
                } else {
                    router
                        .update_slot(name.as_str(), route)
                        .map_err(|source| RouteError::Publish { slot: name.to_string(), source })?;
                    true
                }
            }
            None => {
                current.get(name.as_str()).is_some() && router.remove_slot(name.as_str()).is_ok()
            }
        };
        if changed {
            tracing::debug!(slot = %name, "route refreshed");
            self.announce(vec![name.to_string()]);
        }
        Ok(changed)
    }

    /// Like [`RouteBook::refresh_slot`], logging a failure instead of returning it: for callers
    /// whose own change has already been committed (the periodic resync repairs the table).
    pub async fn refresh_slot_or_log(&self, name: &SlotName) {
        if let Err(e) = self.refresh_slot(name).await {
            tracing::error!(slot = %name, error = %e, "route refresh failed; the resync will retry");
        }
    }

    /// Rebuilds the table every `period` in the background, so that changes written to the
    /// store by another process (another replica, the rollout engine elsewhere) or a refresh
    /// that failed are picked up. Stops when the book is closed.
    pub fn spawn_resync(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let book = self.clone();
        let mut events = self.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = book.rebuild_all().await {
                            tracing::warn!(error = %e, "routing table resync failed");
                        }
                    }
                    changed = events.changed() => {
                        if changed.is_err() || events.borrow_and_update().closing {
                            return;
                        }
                    }
                }
            }
        })
    }

    /// The traffic split of every active rollout, by slot: one paged pass that reads only each
    /// status's `route` ([`Store::list_active_routes`]) instead of a query per slot.
    async fn active_routes(&self) -> Result<HashMap<SlotName, ActiveRoute>, RouteError> {
        let mut out = HashMap::new();
        let mut cursor = None;
        loop {
            let page = self
                .inner
                .store
                .list_active_routes(PageRequest { limit: PageRequest::MAX_LIMIT, cursor })
                .await?;
            for r in page.items {
                out.entry(r.slot.clone()).or_insert_with(|| ActiveRoute::of(r));
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        Ok(out)
    }

    /// The traffic split of the active rollout of one slot.
    async fn active_route_of(&self, name: &SlotName) -> Result<ActiveRoute, RouteError> {
        let records = self
            .inner
            .store
            .list_rollouts(
                RolloutFilter { active_only: true, slot: Some(name.clone()) },
                PageRequest::first(1),
            )
            .await?;
        Ok(records
            .items
            .into_iter()
            .next()
            .map_or(ActiveRoute::None, |r| ActiveRoute::of(RolloutRoute::of_record(r))))
    }

    /// The route of one slot as persisted, `None` when the slot serves nothing.
    async fn build_route(
        &self,
        slot: &Slot,
        rollout: ActiveRoute,
    ) -> Result<Option<SlotRoute>, RouteError> {
        let Some(active) = slot.active_version else { return Ok(None) };
        let version = self.inner.store.get_version(&slot.name, active).await?;
        Ok(Self::route_of(slot, version, rollout))
    }

    /// The route of `slot` from its active version (as read) and its rollout's split.
    fn route_of(
        slot: &Slot,
        version: Option<ConfigVersion>,
        rollout: ActiveRoute,
    ) -> Option<SlotRoute> {
        let active = slot.active_version?;
        let Some(version) = version.filter(|v| v.version == active) else {
            tracing::error!(slot = %slot.name, version = active, "the active version is missing from the store; the slot is not routed");
            return None;
        };
        let stable = SlotRoute::stable(VersionedConfig::new(active, version.document));
        let ActiveRoute::Split { rollout_id, raw } = rollout else { return Some(stable) };
        let rollout = match serde_json::from_value::<Rollout>(raw) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(slot = %slot.name, rollout = %rollout_id, error = %e, "the rollout's route is invalid; serving the stable config to everyone");
                return Some(stable);
            }
        };
        let route = stable.clone().with_rollout(rollout);
        if let Err(e) = route.validate(slot.name.as_str()) {
            tracing::error!(slot = %slot.name, rollout = %rollout_id, error = %e, "the rollout's route is invalid; serving the stable config to everyone");
            return Some(stable);
        }
        Some(route)
    }
}

/// What the active rollout of a slot asks the router to serve.
enum ActiveRoute {
    /// No active rollout, or one that routes no traffic.
    None,
    /// The persisted split (an `actuator_canary::Rollout` in JSON) of rollout `rollout_id`.
    Split { rollout_id: String, raw: Value },
}

impl ActiveRoute {
    fn of(r: RolloutRoute) -> Self {
        match r.route {
            Value::Null => Self::None,
            raw => Self::Split { rollout_id: r.id, raw },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actuator_canary::{EvalContext, Share};
    use actuator_core::testing::MemoryStore;
    use actuator_core::{
        AppendVersion, AuditDraft, DeploymentState, DeploymentStrategy, NewRollout, NewSlot,
        RolloutUpdate,
    };
    use serde_json::json;

    async fn slot_with_versions(store: &MemoryStore, name: &str, docs: &[Value], active: u64) {
        let name = SlotName::new(name).unwrap();
        store
            .create_slot(
                NewSlot { name: name.clone(), description: String::new(), schema: None },
                AuditDraft::success("t", "slot.create", name.as_str()),
            )
            .await
            .unwrap();
        for (i, d) in docs.iter().enumerate() {
            store
                .append_version(
                    AppendVersion {
                        slot: name.clone(),
                        expected_latest: i as u64,
                        document: d.clone(),
                        author: "t".into(),
                        message: String::new(),
                        activate: i as u64 + 1 == active,
                    },
                    AuditDraft::success("t", "config.apply", name.as_str()),
                )
                .await
                .unwrap();
        }
    }

    fn canary_route(bp: u16) -> Value {
        let r = Rollout::canary("r-1", VersionedConfig::new(2, json!({"model": "small"})))
            .with_share(Share::from_basis_points(bp).unwrap())
            .with_phase(1);
        serde_json::to_value(r).unwrap()
    }

    #[tokio::test]
    async fn table_is_a_function_of_the_store() {
        let store = Arc::new(MemoryStore::new());
        slot_with_versions(
            &store,
            "chat",
            &[json!({"model": "big"}), json!({"model": "small"})],
            1,
        )
        .await;
        slot_with_versions(&store, "empty", &[], 0).await;
        store
            .create_rollout(
                NewRollout {
                    id: "r-1".into(),
                    slot: SlotName::new("chat").unwrap(),
                    strategy: DeploymentStrategy::Canary,
                    state: DeploymentState::Pending,
                    request: json!({}),
                    status: json!({"route": canary_route(10_000)}),
                    admission: Default::default(),
                },
                AuditDraft::success("t", "rollout.create", "chat"),
            )
            .await
            .unwrap();
        let book = RouteBook::load(store.clone()).await.unwrap();
        let t = book.snapshot();
        assert_eq!(t.len(), 1, "slots without an active version are absent");
        let r = t.resolve("chat", &EvalContext::with_key("u1")).unwrap();
        assert_eq!((r.variant.name(), r.config.version), ("canary", 2));
        assert_eq!(
            t.resolve("empty", &EvalContext::with_key("u1")).unwrap_err().code(),
            "FLAG_NOT_FOUND"
        );

        // A second book over the same store builds the same table (same etag).
        let other = RouteBook::load(store.clone()).await.unwrap();
        assert_eq!(other.snapshot().etag(), t.etag());
        // Nothing changed: no new revision, no event.
        let mut rx = book.subscribe();
        rx.borrow_and_update();
        assert!(!book.rebuild_all().await.unwrap());
        assert!(!book.refresh_slot(&SlotName::new("chat").unwrap()).await.unwrap());
        assert!(!rx.has_changed().unwrap());

        // The rollout's share moves: a refresh picks it up and announces it.
        let rec = store.get_rollout("r-1").await.unwrap().unwrap();
        store
            .update_rollout(
                "r-1",
                RolloutUpdate {
                    expected_revision: rec.revision,
                    state: DeploymentState::Validating,
                    status: json!({"route": canary_route(0)}),
                    activate_version: None,
                    admission: Default::default(),
                },
                AuditDraft::success("t", "rollout.update", "chat"),
            )
            .await
            .unwrap();
        assert!(book.refresh_slot(&SlotName::new("chat").unwrap()).await.unwrap());
        assert!(rx.has_changed().unwrap());
        let ev = rx.borrow_and_update().clone();
        assert_eq!((ev.seq, ev.slots.as_slice()), (2, ["chat".to_owned()].as_slice()));
        assert_eq!(ev.etag, book.snapshot().etag());
        let r = book.router().resolve("chat", &EvalContext::with_key("u1")).unwrap();
        assert_eq!(r.variant.name(), "stable");
    }

    #[tokio::test]
    async fn invalid_route_json_serves_stable() {
        let store = Arc::new(MemoryStore::new());
        slot_with_versions(&store, "chat", &[json!({"model": "big"})], 1).await;
        store
            .create_rollout(
                NewRollout {
                    id: "r-1".into(),
                    slot: SlotName::new("chat").unwrap(),
                    strategy: DeploymentStrategy::Canary,
                    state: DeploymentState::Pending,
                    request: json!({}),
                    status: json!({"route": {"id": "r-1", "share": 20000, "mode": {"type": "canary"}}}),
                    admission: Default::default(),
                },
                AuditDraft::success("t", "rollout.create", "chat"),
            )
            .await
            .unwrap();
        let book = RouteBook::load(store).await.unwrap();
        let r = book.router().resolve("chat", &EvalContext::new()).unwrap();
        assert_eq!((r.variant.name(), r.rollout_id), ("stable", None));
    }

    #[tokio::test]
    async fn a_rebuild_keeps_unchanged_routes_as_they_are() {
        let store = Arc::new(MemoryStore::new());
        slot_with_versions(&store, "rr", &[json!({"m": 1})], 1).await;
        slot_with_versions(&store, "other", &[json!({"m": 1}), json!({"m": 2})], 1).await;
        let rollout = Rollout::canary("r-rr", VersionedConfig::new(1, json!({"m": 1})))
            .with_share(Share::from_percent(50.0).unwrap())
            .with_strategy(actuator_canary::SplitStrategy::RoundRobin);
        store
            .create_rollout(
                NewRollout {
                    id: "r-rr".into(),
                    slot: SlotName::new("rr").unwrap(),
                    strategy: DeploymentStrategy::Canary,
                    state: DeploymentState::Pending,
                    request: json!({}),
                    status: json!({"route": rollout}),
                    admission: Default::default(),
                },
                AuditDraft::success("t", "rollout.create", "rr"),
            )
            .await
            .unwrap();
        let book = RouteBook::load(store.clone()).await.unwrap();
        let next = || book.router().resolve("rr", &EvalContext::new()).unwrap().variant;
        assert_eq!(next().name(), "stable");
        // Another slot changes behind the book's back; the periodic rebuild picks it up...
        let other = SlotName::new("other").unwrap();
        let slot = store.get_slot(&other).await.unwrap().unwrap();
        store
            .activate_version(&other, slot.revision, 2, AuditDraft::success("t", "x", "other"))
            .await
            .unwrap();
        assert!(book.rebuild_all().await.unwrap());
        // ...and the round-robin slot goes on where it was (1 of every 2 admitted).
        assert_eq!(next().name(), "canary");
        assert_eq!(next().name(), "stable");
    }

    #[tokio::test]
    async fn close_ends_listeners() {
        let book = RouteBook::new(Arc::new(MemoryStore::new()));
        let resync = book.spawn_resync(Duration::from_secs(3600));
        book.close();
        tokio::time::timeout(Duration::from_secs(5), resync).await.unwrap().unwrap();
        assert!(book.subscribe().borrow().closing);
    }
}
