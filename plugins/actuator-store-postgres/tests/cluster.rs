//! Replicas on one database (the local PostgreSQL, each test in its own database): the
//! election, the leader's renewal and its step-down, the takeover of a stuck leader with
//! `pg_terminate_backend`, fenced writes refused with nothing committed, and the change
//! notifications every replica listens to.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actuator_core::audit::{AuditDraft, ChainVerifier};
use actuator_core::config::{NewSlot, SlotName};
use actuator_core::store::{AppendVersion, AuditQuery, Store, StoreError};
use actuator_core::token::{NewToken, Role as TokenRole};
use actuator_store_postgres::cluster::{
    ChangeEvent, ChangeSink, ClusterNode, ClusterOptions, Fence, FenceState, LEADER_KEY, Role,
    spawn_listener,
};
use actuator_store_postgres::testing::TestDatabase;
use actuator_store_postgres::{PostgresStore, WRITE_LOCK_KEY};
use sqlx::{Connection, Executor, PgConnection};

const LEASE: Duration = Duration::from_millis(1000);

fn name(s: &str) -> SlotName {
    SlotName::new(s).unwrap()
}

fn options(id: &str) -> ClusterOptions {
    ClusterOptions { replica_id: id.into(), url: format!("http://{id}.test:7070"), lease: LEASE }
}

async fn open(db: &TestDatabase) -> PostgresStore {
    PostgresStore::connect(db.url(), 4).await.unwrap()
}

async fn slot_with_version(store: &dyn Store, n: &str) {
    store
        .create_slot(
            NewSlot { name: name(n), description: "d".into(), schema: None },
            AuditDraft::success("t", "slot.create", n),
        )
        .await
        .unwrap();
    append(store, n, 0, true).await.unwrap();
}

async fn append(
    store: &dyn Store,
    n: &str,
    expected: u64,
    activate: bool,
) -> Result<u64, StoreError> {
    store
        .append_version(
            AppendVersion {
                slot: name(n),
                expected_latest: expected,
                document: serde_json::json!({"model": "m", "v": expected + 1}),
                author: "t".into(),
                message: String::new(),
                activate,
            },
            AuditDraft::success("t", "config.apply", format!("{n}@{}", expected + 1)),
        )
        .await
        .map(|v| v.version)
}

/// Waits up to `within` for `f` to hold.
async fn until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < within, "{what} did not happen within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The whole audit chain verified against the head; returns its length.
async fn chain_len(store: &dyn Store) -> u64 {
    let mut v = ChainVerifier::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_audit(AuditQuery { cursor, limit: 100, descending: false, target: None })
            .await
            .unwrap();
        for e in &page.items {
            v.push(e);
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c.parse().unwrap()),
            None => break,
        }
    }
    v.finish(store.audit_head().await.unwrap().as_ref()).expect("the chain verifies")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_replicas_leads_renews_and_the_other_follows_it() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    let a = ClusterNode::start(&store, options("a"), Fence::new()).unwrap();
    until(Duration::from_secs(5), "an election", || a.role() != Role::Follower).await;
    assert_eq!(a.role(), Role::Leader { epoch: 1 });
    assert_eq!(a.fence().epoch(), Some(1));
    let b = ClusterNode::start(&store, options("b"), Fence::new()).unwrap();
    until(Duration::from_secs(5), "b reading the lease", || b.last_lease().is_some()).await;
    assert_eq!(b.role(), Role::Follower);
    assert_eq!(b.fence().epoch(), None);
    assert_eq!(b.leader_url().as_deref(), Some("http://a.test:7070"));
    let first = a.read_lease().await.unwrap();
    assert_eq!((first.epoch, first.holder.as_deref()), (1, Some("a")));
    // Three lease lengths later a still leads with the same epoch: it renewed.
    tokio::time::sleep(LEASE * 3).await;
    let later = a.read_lease().await.unwrap();
    assert_eq!((later.epoch, later.holder.as_deref(), later.expired), (1, Some("a"), false));
    assert!(later.renewed_at > first.renewed_at, "{later:?} after {first:?}");
    assert_eq!((a.role(), b.role()), (Role::Leader { epoch: 1 }, Role::Follower));
    // Both recorded themselves.
    let rows = b.replicas().await.unwrap();
    let roles: Vec<_> = rows.iter().map(|r| (r.id.as_str(), r.role.as_str())).collect();
    assert_eq!(roles, [("a", "leader"), ("b", "follower")]);
    // The leader stops: it lets go of the lock and b leads within a poll or two.
    a.stop().await;
    assert_eq!(a.fence().epoch(), None);
    until(Duration::from_secs(3), "b's election", || b.role() == Role::Leader { epoch: 2 }).await;
    let rows = b.replicas().await.unwrap();
    assert_eq!(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["b"]);
    b.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_connection_dies_steps_down_at_once() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    let fence = Fence::new();
    let mut watch = fence.subscribe();
    let a = ClusterNode::start(&store, options("a"), fence.clone()).unwrap();
    until(Duration::from_secs(5), "an election", || a.role() == Role::Leader { epoch: 1 }).await;
    watch.borrow_and_update();
    // Its lease connection is ended from outside (a network cut, a restarted server).
    let mut admin = PgConnection::connect(db.url()).await.unwrap();
    let ended: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(backend_pid)) FROM cluster_lease",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(ended, 1);
    // The next renewal (lease/3) fails: the fence is cleared, then it is elected again.
    tokio::time::timeout(LEASE, watch.changed()).await.expect("the fence moved").unwrap();
    assert_eq!(*watch.borrow(), FenceState::Follower, "the fence is cleared first");
    until(Duration::from_secs(5), "a new election", || a.role() == Role::Leader { epoch: 2 }).await;
    a.stop().await;
    store.close().await;
}

/// A leader stopped mid-write: it holds the leader's lock on one connection and, on another,
/// a write transaction holding the write lock; its lease is long expired. Returns both
/// connections (kept open, as a SIGSTOPped process keeps them).
async fn stuck_leader(db: &TestDatabase, fence: &Fence) -> (PgConnection, PgConnection) {
    let mut lease = PgConnection::connect(db.url()).await.unwrap();
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LEADER_KEY)
        .fetch_one(&mut lease)
        .await
        .unwrap();
    assert!(got);
    let epoch: i64 = sqlx::query_scalar(
        "UPDATE cluster_lease SET epoch = epoch + 1, holder = 'stuck', url = 'http://stuck', \
         backend_pid = pg_backend_pid(), since = '2026-01-01T00:00:00.000000Z', \
         renewed_at = now() - interval '1 hour' WHERE id = 1 RETURNING epoch",
    )
    .fetch_one(&mut lease)
    .await
    .unwrap();
    fence.lead(u64::try_from(epoch).unwrap());
    let mut write = PgConnection::connect(db.url()).await.unwrap();
    write.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WRITE_LOCK_KEY)
        .execute(&mut write)
        .await
        .unwrap();
    write
        .execute("UPDATE slots SET description = 'stale write' WHERE name = 'chat'")
        .await
        .unwrap();
    (lease, write)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_leader_is_taken_over_and_its_writes_are_fenced_off() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    slot_with_version(&store, "chat").await;
    let fence_a = Fence::new();
    let a = store.with_fence(fence_a.clone());
    // Not leading: a fenced write is refused and writes nothing.
    let e = append(&a, "chat", 1, true).await.unwrap_err();
    assert_eq!(e, StoreError::Fenced { held: None, current: 0 });
    assert!(e.to_string().contains("not the leader"), "{e}");
    let (mut lease_a, mut pending_a) = stuck_leader(&db, &fence_a).await;
    assert_eq!(fence_a.epoch(), Some(1));
    let before = chain_len(&store).await;
    // b sees the expired lease, ends the stuck leader's lease backend and, for its
    // election, the transaction that holds the write lock; it leads with epoch 2.
    let b = ClusterNode::start(&store, options("b"), Fence::new()).unwrap();
    until(Duration::from_secs(10), "b's takeover", || b.role() == Role::Leader { epoch: 2 }).await;
    let lease = b.read_lease().await.unwrap();
    assert_eq!((lease.epoch, lease.holder.as_deref(), lease.expired), (2, Some("b"), false));
    assert!(
        sqlx::query("SELECT 1").execute(&mut lease_a).await.is_err(),
        "the lease backend ended"
    );
    assert!(pending_a.execute("COMMIT").await.is_err(), "the pending write was ended");
    // The stuck leader wakes up: its next write is refused, nothing of it committed.
    let e = append(&a, "chat", 1, true).await.unwrap_err();
    assert_eq!(e, StoreError::Fenced { held: Some(1), current: 2 });
    assert_eq!(fence_a.state(), FenceState::Deposed { held: 1, current: 2 });
    assert_eq!(
        append(&a, "chat", 1, true).await.unwrap_err(),
        StoreError::Fenced { held: None, current: 2 },
        "deposed, it refuses every further write"
    );
    let slot = store.get_slot(&name("chat")).await.unwrap().unwrap();
    assert_eq!((slot.latest_version, slot.description.as_str()), (1, "d"));
    assert_eq!(chain_len(&store).await, before, "one history: none of a's writes is in it");
    // The leader's fenced store writes.
    let fenced_b = b.fenced_store();
    assert_eq!(append(&fenced_b, "chat", 1, true).await.unwrap(), 2);
    assert_eq!(chain_len(&store).await, before + 1);
    b.stop().await;
    assert_eq!(
        append(&fenced_b, "chat", 2, true).await.unwrap_err(),
        StoreError::Fenced { held: None, current: 2 }
    );
    store.close().await;
}

/// Collects what the listener delivers.
#[derive(Default)]
struct Collect(Mutex<Vec<ChangeEvent>>);

#[async_trait::async_trait]
impl ChangeSink for Collect {
    async fn changed(&self, change: ChangeEvent) {
        self.0.lock().unwrap().push(change);
    }
}

impl Collect {
    fn seen(&self) -> Vec<ChangeEvent> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_changes_are_notified_by_slot_and_for_tokens() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    let sink = Arc::new(Collect::default());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = spawn_listener(&store, sink.clone(), stop_rx);
    until(Duration::from_secs(5), "listening", || !sink.seen().is_empty()).await;
    assert_eq!(sink.seen(), [ChangeEvent::Resync], "a (re)connection resynchronises fully");
    // A slot without an active version, and a version staged without activation, change
    // nothing a replica serves: no notification.
    slot_with_version(&store, "quiet").await;
    append(&store, "quiet", 1, false).await.unwrap();
    store
        .create_slot(
            NewSlot { name: name("chat"), description: String::new(), schema: None },
            AuditDraft::success("t", "slot.create", "chat"),
        )
        .await
        .unwrap();
    append(&store, "chat", 0, true).await.unwrap();
    // A refused write notifies nothing either.
    assert!(append(&store, "chat", 0, true).await.is_err());
    let token = NewToken { name: "ci".into(), role: TokenRole::Operator, hash: "ab".repeat(32) };
    store.create_token(token, AuditDraft::success("t", "token.create", "ci")).await.unwrap();
    store.revoke_token("ci", AuditDraft::success("t", "token.revoke", "ci")).await.unwrap();
    let slot = store.get_slot(&name("chat")).await.unwrap().unwrap();
    store
        .activate_version(&name("chat"), slot.revision, 1, AuditDraft::success("t", "x", "chat"))
        .await
        .unwrap();
    until(Duration::from_secs(5), "the notifications", || sink.seen().len() >= 6).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let quiet = ChangeEvent::Slot("quiet".into());
    let chat = ChangeEvent::Slot("chat".into());
    assert_eq!(
        sink.seen(),
        [ChangeEvent::Resync, quiet, chat.clone(), ChangeEvent::Tokens, ChangeEvent::Tokens, chat]
    );
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    store.close().await;
}
