//! The PostgreSQL store on a real server: the core conformance suite (each case in its own
//! database, dropped after), durability across reconnecting, one chain under writers in
//! several stores, tamper detection, and the plugin factory.
//!
//! The server is the local one (`postgres://postgres@127.0.0.1:5432`, trust auth, or
//! `ACTUATOR_TEST_POSTGRES_URL`). CI starts one and these tests fail there without it; on a
//! developer machine with none they say so and pass as skipped.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use actuator_core::audit::{AuditDraft, ChainProblem, ChainVerifier};
use actuator_core::config::{NewSlot, SlotName};
use actuator_core::deployment::DeploymentStrategy;
use actuator_core::plugin::{HostContext, PluginError, Registry};
use actuator_core::state::DeploymentState;
use actuator_core::store::{
    Admission, AppendVersion, AuditQuery, CheckpointWrite, NewObservationBatch, NewRollout,
    PageRequest, RolloutFilter, Store, StoreError,
};
use actuator_store_postgres::PostgresStore;
use actuator_store_postgres::testing::TestDatabase;
use serde_json::json;
use sqlx::{Connection, PgConnection};

fn name(s: &str) -> SlotName {
    SlotName::new(s).unwrap()
}

async fn open(db: &TestDatabase) -> PostgresStore {
    PostgresStore::connect(db.url(), 4).await.unwrap()
}

async fn create_slot(store: &dyn Store, n: &str) {
    store
        .create_slot(
            NewSlot {
                name: name(n),
                description: "d".into(),
                schema: Some(json!({"type": "object"})),
            },
            AuditDraft::success("t", "slot.create", n),
        )
        .await
        .unwrap();
}

async fn append(store: &dyn Store, n: &str, expected: u64) -> u64 {
    store
        .append_version(
            AppendVersion {
                slot: name(n),
                expected_latest: expected,
                document: json!({"model": "m", "temperature": 0.7, "v": expected + 1}),
                author: "t".into(),
                message: format!("v{}", expected + 1),
                activate: true,
            },
            AuditDraft::success("t", "config.apply", format!("{n}@{}", expected + 1))
                .with_diff(json!({"temperature": [0.5, 0.7]})),
        )
        .await
        .unwrap()
        .version
}

/// Verifies the whole audit chain against the recorded head, paging through it.
async fn verify_chain(store: &dyn Store) -> Result<u64, ChainProblem> {
    let mut v = ChainVerifier::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_audit(AuditQuery { cursor, limit: 7, descending: false, target: None })
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
    v.finish(store.audit_head().await.unwrap().as_ref())
}

#[tokio::test]
async fn postgres_store_passes_conformance() {
    if TestDatabase::create().await.is_none() {
        return;
    }
    // Every case gets its own database; all are dropped when the test ends, passed or not.
    let dbs: Arc<Mutex<Vec<(PostgresStore, TestDatabase)>>> = Arc::default();
    actuator_core::testing::conformance::run(|| {
        let dbs = dbs.clone();
        async move {
            let db = TestDatabase::create().await.expect("the server answered a moment ago");
            let store = open(&db).await;
            dbs.lock().unwrap().push((store.clone(), db));
            Arc::new(store) as Arc<dyn Store>
        }
    })
    .await;
    let done = std::mem::take(&mut *dbs.lock().unwrap());
    let mut left = Vec::with_capacity(done.len());
    for (store, db) in done {
        store.close().await;
        left.push(db);
    }
    // Each drop waits for a checkpoint of the server: side by side they share them.
    std::thread::scope(|s| {
        for db in left {
            s.spawn(move || drop(db));
        }
    });
}

#[tokio::test]
async fn data_and_chain_survive_reconnecting() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    create_slot(&store, "chat").await;
    append(&store, "chat", 0).await;
    append(&store, "chat", 1).await;
    store.close().await;
    let again = open(&db).await;
    let slot = again.get_slot(&name("chat")).await.unwrap().unwrap();
    assert_eq!((slot.latest_version, slot.active_version), (2, Some(2)));
    assert_eq!(verify_chain(&again).await, Ok(3));
    assert!(again.readiness().await.is_empty());
}

#[tokio::test]
async fn concurrent_writers_on_two_stores_of_one_database_keep_one_chain() {
    // Two stores on one database stand for two processes: the write lock serialises them.
    let Some(db) = TestDatabase::create().await else { return };
    let a = Arc::new(open(&db).await);
    let b = Arc::new(open(&db).await);
    let mut tasks = Vec::new();
    for (i, s) in [a.clone(), b.clone(), a.clone(), b.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for j in 0..15 {
                s.append_audit(AuditDraft::success("t", "x", format!("w{i}-{j}"))).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(verify_chain(a.as_ref()).await, Ok(60));
    assert_eq!(verify_chain(b.as_ref()).await, Ok(60));
}

#[tokio::test]
async fn a_tampered_audit_row_blocks_writes_until_acknowledged() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    create_slot(&store, "chat").await;
    append(&store, "chat", 0).await;
    store.close().await;
    let mut raw = PgConnection::connect(db.url()).await.unwrap();
    sqlx::query("UPDATE audit SET actor = 'mallory' WHERE seq = 1")
        .execute(&mut raw)
        .await
        .unwrap();
    raw.close().await.unwrap();
    let store = open(&db).await;
    let problems = store.readiness().await;
    assert!(problems.iter().any(|p| p.contains("audit chain broken")), "{problems:?}");
    let err = store.append_audit(AuditDraft::success("t", "x", "y")).await.unwrap_err();
    assert!(matches!(err, StoreError::ChainBroken(_)), "{err}");
    store.acknowledge_audit(AuditDraft::success("op", "audit.acknowledge", "audit")).await.unwrap();
    store.append_audit(AuditDraft::success("t", "x", "y")).await.unwrap();
    assert!(store.readiness().await.is_empty());
}

/// A slot `slot` with an active version and a monitored rollout `id` on it.
async fn rollout_on(store: &dyn Store, slot: &str, id: &str) {
    create_slot(store, slot).await;
    append(store, slot, 0).await;
    store
        .create_rollout(
            NewRollout {
                id: id.into(),
                slot: name(slot),
                strategy: DeploymentStrategy::Canary,
                state: DeploymentState::Monitoring,
                request: json!({}),
                status: json!({"n": 0}),
                admission: Default::default(),
            },
            AuditDraft::success("t", "rollout.start", id),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_group_checkpoint_writes_every_item_but_the_one_that_conflicts() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    for (slot, id) in [("a", "ra"), ("b", "rb"), ("c", "rc")] {
        rollout_on(&store, slot, id).await;
    }
    let seqs = store
        .append_observation_batches(
            ["ra", "rb", "rc"]
                .iter()
                .map(|r| NewObservationBatch { rollout_id: (*r).into(), items: "{}".into() })
                .collect(),
        )
        .await
        .unwrap();
    let rev = store.get_rollout("rb").await.unwrap().unwrap().revision;
    let item = |id: &str, expected_revision: u64, n: u64, folded_through: u64| CheckpointWrite {
        id: id.into(),
        expected_revision,
        status: json!({"n": n}),
        folded_through,
    };
    let out = store
        .checkpoint_rollouts(vec![
            item("ra", rev, 1, seqs[0]),
            item("rb", rev + 7, 2, seqs[1]),
            item("rc", rev, 3, seqs[2]),
            item("gone", 1, 4, 0),
        ])
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap().status, json!({"n": 1}));
    assert!(matches!(out[1], Err(StoreError::Conflict { .. })), "{:?}", out[1]);
    assert_eq!(out[2].as_ref().unwrap().status, json!({"n": 3}));
    assert!(matches!(out[3], Err(StoreError::NotFound { .. })), "{:?}", out[3]);
    store.close().await;
    let again = open(&db).await;
    for (id, n, batches) in [("ra", 1, 0), ("rb", 0, 1), ("rc", 3, 0)] {
        let rec = again.get_rollout(id).await.unwrap().unwrap();
        assert_eq!(rec.status, json!({"n": n}), "{id}");
        assert_eq!(again.list_observation_batches(id, 0, 10).await.unwrap().len(), batches, "{id}");
    }
}

fn new_rollout(slot: &str, id: &str, max_active: Option<u64>) -> NewRollout {
    NewRollout {
        id: id.into(),
        slot: name(slot),
        strategy: DeploymentStrategy::Canary,
        state: DeploymentState::Monitoring,
        request: json!({}),
        status: json!({}),
        admission: Admission { max_active, expected_stable: None },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admissions_racing_from_three_stores_on_one_database_never_exceed_the_limit() {
    // Three stores stand for three daemons on one database: each checks the limit in its own
    // transaction, and the write lock makes those checks see each other's commits.
    let Some(db) = TestDatabase::create().await else { return };
    let stores = [Arc::new(open(&db).await), Arc::new(open(&db).await), Arc::new(open(&db).await)];
    for i in 0..24 {
        create_slot(stores[0].as_ref(), &format!("s{i}")).await;
        append(stores[0].as_ref(), &format!("s{i}"), 0).await;
    }
    create_slot(stores[0].as_ref(), "solo").await;
    append(stores[0].as_ref(), "solo", 0).await;
    // 24 slots, limit 3; then 9 starts on slot solo alone, with no limit: one wins.
    let mut tasks = Vec::new();
    for i in 0..24 {
        let s = stores[i % 3].clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("limit-{i}");
            s.create_rollout(
                new_rollout(&format!("s{i}"), &id, Some(3)),
                AuditDraft::success("t", "rollout.start", &id),
            )
            .await
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(admitted, 3, "{results:?}");
    assert!(
        results.iter().all(|r| r.is_ok()
            || matches!(
                r,
                Err(StoreError::Limit { limit: 3, .. }) | Err(StoreError::AlreadyExists { .. })
            )),
        "{results:?}"
    );
    let mut tasks = Vec::new();
    for i in 0..9 {
        let s = stores[i % 3].clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("same-{i}");
            s.create_rollout(
                new_rollout("solo", &id, None),
                AuditDraft::success("t", "rollout.start", &id),
            )
            .await
        }));
    }
    let mut same = Vec::new();
    for t in tasks {
        same.push(t.await.unwrap());
    }
    let won = same.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "one active rollout per slot: {same:?}");
    assert!(
        same.iter().all(|r| r.is_ok() || matches!(r, Err(StoreError::AlreadyExists { .. }))),
        "{same:?}"
    );
    let active = stores[1]
        .list_rollouts(RolloutFilter { active_only: true, slot: None }, PageRequest::first(100))
        .await
        .unwrap();
    assert_eq!(active.items.len(), 4);
    // Slots and versions (25 each) and the 4 admitted starts: refused starts wrote nothing.
    assert_eq!(verify_chain(stores[2].as_ref()).await, Ok(54));
}

#[tokio::test]
async fn a_nul_character_is_refused_as_invalid_and_writes_go_on() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    let err = store
        .create_slot(
            NewSlot { name: name("chat"), description: "a\0b".into(), schema: None },
            AuditDraft::success("t", "slot.create", "chat"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert!(store.get_slot(&name("chat")).await.unwrap().is_none());
    assert!(store.readiness().await.is_empty(), "not a store fault");
    create_slot(&store, "chat").await;
    assert_eq!(verify_chain(&store).await, Ok(1));
}

fn registry() -> Registry {
    let mut r = Registry::empty();
    actuator_store_postgres::register(&mut r).unwrap();
    r
}

fn invalid_config(err: PluginError) -> (String, String) {
    match err {
        PluginError::InvalidConfig { field, message, .. } => (field, message),
        other => panic!("expected an invalid config error, got {other}"),
    }
}

#[tokio::test]
async fn factory_refuses_bad_config_naming_the_field() {
    let r = registry();
    let host = HostContext { data_dir: PathBuf::from("/nonexistent") };
    let err = r.store("postgres", json!({"url": 5}), &host).await.err().unwrap();
    assert_eq!(invalid_config(err).0, "url");
    let err = r.store("postgres", json!({"url": "postgres://h/d", "ulr": 1}), &host).await.err();
    let (field, message) = invalid_config(err.unwrap());
    assert_eq!(field, "ulr", "{message}");
    let err = r.store("postgres", json!({"url": "file:///x"}), &host).await.err().unwrap();
    assert_eq!(invalid_config(err).0, "url");
    let err = r
        .store("postgres", json!({"url": "postgres://h/d", "max_connections": 0}), &host)
        .await
        .err()
        .unwrap();
    assert_eq!(invalid_config(err).0, "max_connections");
}

#[tokio::test]
async fn factory_names_an_unreachable_server_without_its_password() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let err = registry()
        .store(
            "postgres",
            json!({"url": "postgres://u:hunter2@127.0.0.1:1/actuator"}),
            &HostContext::default(),
        )
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, PluginError::Failed { .. }), "{msg}");
    assert!(msg.contains("127.0.0.1:1/actuator"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[tokio::test]
async fn factory_opens_the_configured_database() {
    let Some(db) = TestDatabase::create().await else { return };
    let r = registry();
    let store = r.store("postgres", json!({"url": db.url()}), &HostContext::default()).await;
    let store = store.unwrap();
    create_slot(store.as_ref(), "chat").await;
    let tables: i64 = {
        let mut raw = PgConnection::connect(db.url()).await.unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM slots").fetch_one(&mut raw).await.unwrap()
    };
    assert_eq!(tables, 1);
}

#[test]
fn the_plugin_is_submitted_to_inventory() {
    let r = Registry::from_inventory().unwrap();
    assert!(r.describe().iter().any(|p| p.name == "postgres"), "{r:?}");
}
