//! The SQLite store on real files: conformance, durability across reopen and SIGKILL, audit
//! tamper detection, and the plugin factory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actuator_core::audit::{AuditDraft, ChainProblem, ChainVerifier};
use actuator_core::config::{NewSlot, SlotName};
use actuator_core::plugin::{HostContext, PluginError, Registry};
use actuator_core::store::{AppendVersion, AuditQuery, NewSnapshot, PageRequest, Store};
use actuator_store_sqlite::SqliteStore;
use serde_json::json;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

fn name(s: &str) -> SlotName {
    SlotName::new(s).unwrap()
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

async fn raw_connection(path: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path)).await.unwrap()
}

#[tokio::test]
async fn file_store_passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    actuator_core::testing::conformance::run(|| {
        let path = dir.path().join(format!("case{}.db", n.fetch_add(1, Ordering::Relaxed)));
        async move { Arc::new(SqliteStore::open(&path).await.unwrap()) as Arc<dyn Store> }
    })
    .await;
}

#[tokio::test]
async fn data_and_chain_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dirs/actuator.db");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.path(), Some(path.as_path()));
        create_slot(&store, "chat").await;
        for i in 0..3 {
            append(&store, "chat", i).await;
        }
        store
            .create_snapshot(
                NewSnapshot {
                    slot: name("chat"),
                    label: "before".into(),
                    created_by: "t".into(),
                    retention: 5,
                },
                AuditDraft::success("t", "snapshot.create", "chat"),
            )
            .await
            .unwrap();
        store
            .append_audit(AuditDraft::failure("bob", "config.apply", "chat", "nope"))
            .await
            .unwrap();
        store.close().await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let slot = store.get_slot(&name("chat")).await.unwrap().unwrap();
    assert_eq!((slot.latest_version, slot.active_version), (3, Some(3)));
    assert_eq!(slot.schema, Some(json!({"type": "object"})));
    let v2 = store.get_version(&name("chat"), 2).await.unwrap().unwrap();
    assert_eq!(v2.document, json!({"model": "m", "temperature": 0.7, "v": 2}));
    let snaps = store.list_snapshots(None, PageRequest::first(10)).await.unwrap();
    assert_eq!(snaps.items.len(), 1);
    assert_eq!(snaps.items[0].version, 3);
    assert_eq!(verify_chain(&store).await, Ok(6), "slot + 3 versions + snapshot + failure");
    // The chain goes on from the stored head after a reopen.
    append(&store, "chat", 3).await;
    assert_eq!(verify_chain(&store).await, Ok(7));
}

#[tokio::test]
async fn audit_hashes_survive_awkward_json_and_text() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let metadata = json!({
        "floats": [0.1, 0.30000000000000004, 1e-7, 1.2345678901234567e300, 2.2250738585072014e-308,
                   -0.0, 123456.789, 9007199254740993u64],
        "big": u64::MAX,
        "neg": i64::MIN,
        "text": "quote \" backslash \\ newline \n nul \u{0} emoji \u{1F600}",
    });
    let entry = store
        .append_audit(
            AuditDraft::success("ünïcode actor", "config.apply", "chat@1")
                .with_metadata(metadata.clone())
                .with_diff(serde_json::Value::Null),
        )
        .await
        .unwrap();
    let back = store
        .list_audit(AuditQuery { cursor: None, limit: 10, descending: false, target: None })
        .await
        .unwrap();
    assert_eq!(back.items.len(), 1);
    assert_eq!(back.items[0], entry, "the entry reads back equal");
    assert_eq!(back.items[0].diff, Some(serde_json::Value::Null), "Some(null) stays Some(null)");
    assert_eq!(back.items[0].compute_hash(), entry.hash);
    assert_eq!(verify_chain(&store).await, Ok(1));
}

#[tokio::test]
async fn tampered_audit_row_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let store = SqliteStore::open(&path).await.unwrap();
    create_slot(&store, "chat").await;
    for i in 0..3 {
        append(&store, "chat", i).await;
    }
    assert_eq!(verify_chain(&store).await, Ok(4));

    let mut raw = raw_connection(&path).await;
    sqlx::query("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
        .execute(&mut raw)
        .await
        .unwrap();
    assert_eq!(verify_chain(&store).await, Err(ChainProblem::Edited { seq: 2 }));
    sqlx::query("UPDATE audit SET actor = 't' WHERE seq = 2").execute(&mut raw).await.unwrap();
    assert_eq!(verify_chain(&store).await, Ok(4), "restoring the row restores the chain");

    sqlx::query("DELETE FROM audit WHERE seq = 4").execute(&mut raw).await.unwrap();
    assert_eq!(
        verify_chain(&store).await,
        Err(ChainProblem::Truncated { last_seen: 3, head: 4 }),
        "the head catches a deleted tail"
    );
    sqlx::query("DELETE FROM audit WHERE seq = 2").execute(&mut raw).await.unwrap();
    assert_eq!(verify_chain(&store).await, Err(ChainProblem::Missing { expected: 2, found: 3 }));
    raw.close().await.unwrap();
}

#[tokio::test]
async fn concurrent_writers_on_two_stores_of_one_file_keep_one_chain() {
    // Two handles on one file stand for two processes: BEGIN IMMEDIATE and the busy
    // timeout serialise them, and the chain stays whole.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = Arc::new(SqliteStore::open(&path).await.unwrap());
    let b = Arc::new(SqliteStore::open(&path).await.unwrap());
    let mut tasks = Vec::new();
    for (i, s) in [a.clone(), b.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for j in 0..20 {
                s.append_audit(AuditDraft::success("t", "x", format!("w{i}-{j}"))).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(verify_chain(a.as_ref()).await, Ok(40));
    assert_eq!(verify_chain(b.as_ref()).await, Ok(40));
}

/// Environment variable that turns [`sigkill_child_writer`] into the writer process of
/// [`acknowledged_writes_survive_sigkill`].
const CHILD_DB: &str = "ACTUATOR_SQLITE_TEST_SIGKILL_CHILD_DB";

/// Not a test on its own: a no-op unless started by `acknowledged_writes_survive_sigkill`,
/// in which case it appends versions forever, printing each acknowledged one.
#[tokio::test]
async fn sigkill_child_writer() {
    let Some(path) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let store = SqliteStore::open(Path::new(&path)).await.unwrap();
    let mut latest = store.get_slot(&name("chat")).await.unwrap().unwrap().latest_version;
    // Bounded, and println! panics once the parent stops reading, so it never outlives it.
    for _ in 0..100_000 {
        latest = append(&store, "chat", latest).await;
        println!("acked {latest}");
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("kill.db");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        create_slot(&store, "chat").await;
        store.close().await;
    }
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sigkill_child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = 0u64;
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(v) = line.strip_prefix("acked ") {
            acked = v.trim().parse().unwrap();
            if acked >= 25 {
                break;
            }
        }
    }
    assert!(acked >= 25, "the child stopped early after {acked} versions");
    child.kill().await.unwrap(); // SIGKILL, mid-stream of writes
    drop(lines);

    let store = SqliteStore::open(&path).await.unwrap();
    let slot = store.get_slot(&name("chat")).await.unwrap().unwrap();
    assert!(slot.latest_version >= acked, "acknowledged v{acked} lost: {}", slot.latest_version);
    for v in 1..=slot.latest_version {
        assert!(store.get_version(&name("chat"), v).await.unwrap().is_some(), "v{v} missing");
    }
    assert_eq!(
        verify_chain(&store).await,
        Ok(1 + slot.latest_version),
        "one audit entry per committed write, chain whole"
    );
}

fn registry() -> Registry {
    let mut r = Registry::empty();
    actuator_store_sqlite::register(&mut r).unwrap();
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
    let err = r.store("sqlite", json!({"path": 5}), &host).await.err().unwrap();
    let (field, message) = invalid_config(err);
    assert_eq!(field, "path", "{message}");
    let err =
        r.store("sqlite", json!({"path": "/tmp/x.db", "paht": 1}), &host).await.err().unwrap();
    let (field, message) = invalid_config(err.clone());
    assert!(message.contains("unknown field `paht`"), "{err}");
    assert_eq!(field, "paht", "{err}");
    let err = r.store("sqlite", json!({"path": ""}), &host).await.err().unwrap();
    assert_eq!(invalid_config(err).0, "path");
    let err = r.store("sqlite", json!([1]), &host).await.err().unwrap();
    invalid_config(err);
}

#[tokio::test]
async fn factory_opens_the_default_and_the_configured_file() {
    let dir = tempfile::tempdir().unwrap();
    let host = HostContext { data_dir: dir.path().join("data") };
    let r = registry();
    let store = r.store("sqlite", json!({}), &host).await.unwrap();
    create_slot(store.as_ref(), "chat").await;
    assert!(dir.path().join("data/actuator.db").exists(), "default path in the data dir");
    let store = r.store("sqlite", serde_json::Value::Null, &host).await.unwrap();
    assert!(store.get_slot(&name("chat")).await.unwrap().is_some(), "null config is {{}}");
    let custom = dir.path().join("elsewhere/custom.db");
    let store = r.store("sqlite", json!({"path": custom}), &host).await.unwrap();
    assert!(store.get_slot(&name("chat")).await.unwrap().is_none());
    assert!(custom.exists());
    let info = r.describe();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].name, "sqlite");
}

#[tokio::test]
async fn factory_reports_an_unopenable_file() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let err = registry()
        .store("sqlite", json!({"path": blocker.join("x.db")}), &HostContext::default())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, PluginError::Failed { .. }), "{err}");
}

#[test]
fn the_plugin_is_submitted_to_inventory() {
    let r = Registry::from_inventory().unwrap();
    assert!(r.describe().iter().any(|p| p.name == "sqlite"), "{r:?}");
}

#[tokio::test]
async fn sqlite_specific_edges() {
    use actuator_core::deployment::DeploymentStrategy;
    use actuator_core::state::DeploymentState;
    use actuator_core::store::{NewRollout, RolloutFilter, RolloutUpdate, StoreError};

    let store = SqliteStore::open_in_memory().await.unwrap();
    create_slot(&store, "a_b").await;
    create_slot(&store, "axb").await;
    append(&store, "a_b", 0).await;
    append(&store, "axb", 0).await;

    // The target filter treats `_` and `%` literally and matches `t` and `t@…` only.
    store.append_audit(AuditDraft::success("t", "x", "a_b%")).await.unwrap();
    store.append_audit(AuditDraft::success("t", "x", "a_b@")).await.unwrap();
    let q = |target: &str, descending| AuditQuery {
        cursor: None,
        limit: 100,
        descending,
        target: Some(target.into()),
    };
    let hits = store.list_audit(q("a_b", false)).await.unwrap();
    let targets: Vec<_> = hits.items.iter().map(|e| e.target.as_str()).collect();
    assert_eq!(targets, ["a_b", "a_b@1", "a_b@"]);
    let hits = store.list_audit(q("a_b", true)).await.unwrap();
    assert_eq!(hits.items.len(), 3);
    assert_eq!(hits.items[0].target, "a_b@", "descending");

    // Cursors beyond SQLite's integer range select everything instead of failing.
    let all = store
        .list_audit(AuditQuery {
            cursor: Some(u64::MAX),
            limit: 100,
            descending: true,
            target: None,
        })
        .await
        .unwrap();
    assert_eq!(all.items.len(), 6);
    let big = PageRequest { limit: 10, cursor: Some(u64::MAX.to_string()) };
    assert_eq!(store.list_versions(&name("a_b"), big.clone()).await.unwrap().items.len(), 1);
    let bad = PageRequest { limit: 10, cursor: Some("x".into()) };
    assert!(matches!(
        store.list_versions(&name("a_b"), bad.clone()).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.list_rollouts(RolloutFilter::default(), bad).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(store.get_version(&name("a_b"), u64::MAX).await.unwrap().is_none());
    let huge = store
        .activate_version(&name("a_b"), 2, u64::MAX, AuditDraft::success("t", "x", "a_b"))
        .await;
    assert!(matches!(huge, Err(StoreError::NotFound { .. })), "{huge:?}");
    let before = store.audit_head().await.unwrap();
    let zero = store
        .create_snapshot(
            NewSnapshot {
                slot: name("a_b"),
                label: "l".into(),
                created_by: "t".into(),
                retention: 0,
            },
            AuditDraft::success("t", "snapshot.create", "a_b"),
        )
        .await;
    assert!(matches!(zero, Err(StoreError::Invalid(_))));
    assert_eq!(store.audit_head().await.unwrap(), before, "refusals audit nothing");

    // Rollouts: listing filters by slot and activity, paging across the filter.
    let new = |id: &str, slot: &str, state| NewRollout {
        id: id.into(),
        slot: name(slot),
        strategy: DeploymentStrategy::BlueGreen,
        state,
        request: json!({}),
        status: json!({}),
        admission: Default::default(),
    };
    let draft = |id: &str| AuditDraft::success("t", "rollout.start", id);
    store.create_rollout(new("f1", "a_b", DeploymentState::Failed), draft("f1")).await.unwrap();
    store.create_rollout(new("x1", "axb", DeploymentState::Pending), draft("x1")).await.unwrap();
    store.create_rollout(new("f2", "a_b", DeploymentState::Failed), draft("f2")).await.unwrap();
    store.create_rollout(new("a1", "a_b", DeploymentState::Pending), draft("a1")).await.unwrap();
    let slot_only = RolloutFilter { active_only: false, slot: Some(name("a_b")) };
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let page =
            store.list_rollouts(slot_only.clone(), PageRequest { limit: 1, cursor }).await.unwrap();
        ids.extend(page.items.into_iter().map(|r| r.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(ids, ["a1", "f2", "f1"]);
    let got = store.get_rollout("f1").await.unwrap().unwrap();
    assert_eq!(got.strategy, DeploymentStrategy::BlueGreen);

    // Retrying a failed rollout would take a slot another rollout holds: refused.
    let retry = store
        .update_rollout(
            "f1",
            RolloutUpdate {
                expected_revision: 1,
                state: DeploymentState::Pending,
                status: json!({}),
                activate_version: None,
                admission: Default::default(),
            },
            AuditDraft::success("t", "rollout.retry", "f1"),
        )
        .await;
    assert!(matches!(retry, Err(StoreError::AlreadyExists { .. })), "{retry:?}");
    // A status-only update in the same state is allowed, and activation is checked.
    let missing = store
        .update_rollout(
            "a1",
            RolloutUpdate {
                expected_revision: 1,
                state: DeploymentState::Pending,
                status: json!({"n": 1}),
                activate_version: Some(9),
                admission: Default::default(),
            },
            AuditDraft::success("t", "x", "a1"),
        )
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");
    let same = store
        .update_rollout(
            "a1",
            RolloutUpdate {
                expected_revision: 1,
                state: DeploymentState::Pending,
                status: json!({"n": 1}),
                activate_version: None,
                admission: Default::default(),
            },
            AuditDraft::success("t", "x", "a1"),
        )
        .await
        .unwrap();
    assert_eq!((same.revision, same.status.clone()), (2, json!({"n": 1})));
    assert_eq!(store.get_rollout("a1").await.unwrap().unwrap(), same);
    assert_eq!(verify_chain(&store).await.map(|n| n > 0), Ok(true));
}

#[tokio::test]
async fn a_removed_database_file_stops_writes_until_it_is_back() {
    use actuator_core::store::StoreError;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.db");
    let store = SqliteStore::open(&path).await.unwrap();
    create_slot(&store, "chat").await;
    assert!(store.readiness().await.is_empty());
    let away = dir.path().join("away.db");
    std::fs::rename(&path, &away).unwrap();
    let refused = store
        .create_slot(
            NewSlot { name: name("other"), description: String::new(), schema: None },
            AuditDraft::success("t", "slot.create", "other"),
        )
        .await;
    assert!(
        matches!(&refused, Err(StoreError::Unavailable(m)) if m.contains("was removed")),
        "{refused:?}"
    );
    let reasons = store.readiness().await;
    assert!(reasons.len() == 1 && reasons[0].contains("was removed"), "{reasons:?}");
    std::fs::rename(&away, &path).unwrap();
    append(&store, "chat", 0).await;
    assert!(store.readiness().await.is_empty(), "ready again with the same file back");
}

#[tokio::test]
async fn a_changed_document_blocks_writes_until_acknowledged_even_after_reopen() {
    use actuator_core::audit::ACKNOWLEDGE_ACTION;
    use actuator_core::store::StoreError;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    let store = SqliteStore::open(&path).await.unwrap();
    create_slot(&store, "chat").await;
    append(&store, "chat", 0).await;
    append(&store, "chat", 1).await;
    assert!(store.verify_audit().await.unwrap().ok);
    store.close().await;

    let mut raw = raw_connection(&path).await;
    sqlx::query("UPDATE versions SET document = '{\"model\":\"x\"}' WHERE version = 2")
        .execute(&mut raw)
        .await
        .unwrap();
    raw.close().await.unwrap();

    let store = SqliteStore::open(&path).await.unwrap();
    assert!(
        store.readiness().await.is_empty(),
        "the open verifies only after the verified head, which trusts the entry sealing version 2"
    );
    let report = store.verify_audit_full(&|_| {}).await.unwrap();
    assert!(!report.ok && !report.incremental, "{report:?}");
    let reasons = store.readiness().await;
    assert!(
        reasons.len() == 1 && reasons[0].contains("version 2 of slot chat was changed"),
        "found by the full verification: {reasons:?}"
    );
    store.close().await;
    let store = SqliteStore::open(&path).await.unwrap();
    let reasons = store.readiness().await;
    assert!(
        reasons.len() == 1 && reasons[0].contains("version 2 of slot chat was changed"),
        "the full verification moved the verified head back: found again at open: {reasons:?}"
    );
    let refused = store.append_audit(AuditDraft::success("t", "x", "y")).await;
    assert!(matches!(refused, Err(StoreError::ChainBroken(_))), "{refused:?}");
    let report = store.verify_audit().await.unwrap();
    assert!(!report.ok);
    let problem = report.problem.clone().unwrap();
    assert!(
        matches!(&problem, ChainProblem::DocumentChanged { seq: 3, version: 2, .. }),
        "{problem:?}"
    );
    store
        .acknowledge_audit(
            AuditDraft::success("op", ACKNOWLEDGE_ACTION, "audit")
                .with_metadata(json!({"reason": "test", "problems": [problem]})),
        )
        .await
        .unwrap();
    append(&store, "chat", 2).await;
    let report = store.verify_audit().await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.problems[0].acknowledged_by, Some(4));
    store.close().await;
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(store.readiness().await.is_empty(), "the acknowledgement holds after reopen");
}

/// The verified head of `store` (its sequence number).
async fn verified_seq(store: &SqliteStore) -> Option<u64> {
    store.verified_head().await.unwrap().map(|h| h.seq)
}

#[tokio::test]
async fn the_verified_head_is_kept_in_the_file_and_advances_with_each_verification() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(verified_seq(&store).await, None, "an empty log has nothing verified");
    create_slot(&store, "chat").await;
    append(&store, "chat", 0).await;
    let r = store.verify_audit().await.unwrap();
    assert!(r.ok && !r.incremental && r.entries_checked == 2, "{r:?}");
    assert_eq!(verified_seq(&store).await, Some(2));
    append(&store, "chat", 1).await;
    store.close().await;

    // The open walks only entry 3, and remembers it.
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(verified_seq(&store).await, Some(3), "the open verified the new entry");
    append(&store, "chat", 2).await;
    let r = store.verify_audit().await.unwrap();
    assert!(r.ok && r.incremental, "{r:?}");
    assert_eq!((r.from, r.to, r.entries_checked), (4, 4, 1));
    assert_eq!(verified_seq(&store).await, Some(4));
    let head = store.audit_head().await.unwrap();
    assert_eq!(store.verified_head().await.unwrap(), head);
}

#[tokio::test]
async fn an_edit_after_the_verified_head_is_found_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let store = SqliteStore::open(&path).await.unwrap();
    create_slot(&store, "chat").await;
    append(&store, "chat", 0).await;
    assert!(store.verify_audit().await.unwrap().ok);
    append(&store, "chat", 1).await;
    append(&store, "chat", 2).await;
    store.close().await;
    let mut raw = raw_connection(&path).await;
    sqlx::query("UPDATE audit SET actor = 'mallory' WHERE seq = 4")
        .execute(&mut raw)
        .await
        .unwrap();
    raw.close().await.unwrap();

    let store = SqliteStore::open(&path).await.unwrap();
    let reasons = store.readiness().await;
    assert!(
        reasons.len() == 1 && reasons[0].contains("entry 4 was edited"),
        "found at open: {reasons:?}"
    );
    let r = store.verify_audit().await.unwrap();
    assert!(!r.ok && r.incremental, "{r:?}");
    assert_eq!(r.problem, Some(ChainProblem::Edited { seq: 4 }));
    assert_eq!((r.from, r.to), (4, 4), "the open advanced the head through entry 3");
    assert_eq!(verified_seq(&store).await, Some(3), "advanced through the good entry only");
}

#[tokio::test]
async fn an_edit_before_the_verified_head_is_found_only_by_the_full_verification() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let store = SqliteStore::open(&path).await.unwrap();
    create_slot(&store, "chat").await;
    for v in 0..4 {
        append(&store, "chat", v).await;
    }
    assert!(store.verify_audit().await.unwrap().ok);
    assert_eq!(verified_seq(&store).await, Some(5));
    store.close().await;
    // An edit that keeps the links: the entry is re-hashed and so is every later one, up to
    // the head; only the remembered hash of the head could tell, and it is not the last
    // entry's any more once the forger appends one of his own. The simplest such edit here:
    // an entry's content, hash left as it was (found by its own hash).
    let mut raw = raw_connection(&path).await;
    sqlx::query("UPDATE audit SET target = 'other' WHERE seq = 2").execute(&mut raw).await.unwrap();
    raw.close().await.unwrap();

    let store = SqliteStore::open(&path).await.unwrap();
    assert!(store.readiness().await.is_empty(), "the open trusts entries up to the verified head");
    let r = store.verify_audit().await.unwrap();
    assert!(r.ok && r.incremental && r.entries_checked == 0, "{r:?}");
    let seen = std::sync::Mutex::new(Vec::new());
    let r = store.verify_audit_full(&|n| seen.lock().unwrap().push(n)).await.unwrap();
    assert!(!r.ok && !r.incremental, "{r:?}");
    assert_eq!(r.problem, Some(ChainProblem::Edited { seq: 2 }));
    assert_eq!(seen.lock().unwrap().last(), Some(&5), "progress up to the last entry");
    assert_eq!(verified_seq(&store).await, Some(1), "moved back before the edited entry");
    let refused = store.append_audit(AuditDraft::success("t", "x", "y")).await;
    assert!(refused.is_err(), "writes are blocked: {refused:?}");
    // The next incremental verification (and an acknowledgement listing what it finds) sees
    // the problem again.
    let r = store.verify_audit().await.unwrap();
    assert_eq!((r.incremental, r.problem.clone()), (true, Some(ChainProblem::Edited { seq: 2 })));
    store
        .acknowledge_audit(
            AuditDraft::success("op", actuator_core::audit::ACKNOWLEDGE_ACTION, "audit")
                .with_metadata(json!({"reason": "drill", "problems": [r.problem]})),
        )
        .await
        .unwrap();
    let r = store.verify_audit().await.unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(verified_seq(&store).await, Some(6), "advanced through the acknowledgement");
}

#[tokio::test]
async fn a_changed_verified_head_entry_makes_the_verification_walk_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let store = SqliteStore::open(&path).await.unwrap();
    create_slot(&store, "chat").await;
    append(&store, "chat", 0).await;
    append(&store, "chat", 1).await;
    assert!(store.verify_audit().await.unwrap().ok);
    assert_eq!(verified_seq(&store).await, Some(3));
    // Edited under the open store.
    let mut raw = raw_connection(&path).await;
    sqlx::query("UPDATE audit SET actor = 'mallory' WHERE seq = 3")
        .execute(&mut raw)
        .await
        .unwrap();
    raw.close().await.unwrap();
    let r = store.verify_audit().await.unwrap();
    assert!(!r.ok && !r.incremental && r.from == 1, "{r:?}");
    assert_eq!(r.problem, Some(ChainProblem::Edited { seq: 3 }));
    assert!(r.message.contains("whole chain was walked"), "{}", r.message);
    assert_eq!(verified_seq(&store).await, Some(2), "moved back before the edited entry");
    store.close().await;
    let store = SqliteStore::open(&path).await.unwrap();
    let reasons = store.readiness().await;
    assert!(reasons.len() == 1 && reasons[0].contains("entry 3 was edited"), "{reasons:?}");
}
