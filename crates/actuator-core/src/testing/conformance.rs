//! The behaviour every [`Store`] must have, as one suite. A store plugin runs it with a
//! factory that opens a fresh, empty store per case:
//!
//! ```text
//! actuator_core::testing::conformance::run(|| async { Arc::new(open_fresh().await) as Arc<dyn Store> }).await;
//! ```

use serde_json::json;
use std::future::Future;
use std::sync::Arc;

use crate::audit::{ACKNOWLEDGE_ACTION, AuditDraft, ChainVerifier, document_sha256};
use crate::config::{NewSlot, SlotName};
use crate::deployment::DeploymentStrategy;
use crate::state::DeploymentState;
use crate::store::*;

fn name(s: &str) -> SlotName {
    SlotName::new(s).expect("valid slot name")
}

fn draft(action: &str, target: &str) -> AuditDraft {
    AuditDraft::success("tester", action, target)
}

async fn slot(store: &dyn Store, n: &str) {
    store
        .create_slot(
            NewSlot { name: name(n), description: format!("slot {n}"), schema: None },
            draft("slot.create", n),
        )
        .await
        .expect("create slot");
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
                document: json!({"model": "m", "v": expected + 1, "nested": {"t": 0.5}}),
                author: "tester".into(),
                message: format!("v{}", expected + 1),
                activate,
            },
            draft("config.apply", n),
        )
        .await
        .map(|v| v.version)
}

async fn audit_count(store: &dyn Store) -> u64 {
    store.audit_head().await.expect("head").map_or(0, |h| h.seq)
}

/// Runs every case, each on a fresh store from `make`. Panics naming the case that failed.
pub async fn run<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    slots(make().await.as_ref()).await;
    versions(make().await.as_ref()).await;
    activation(make().await.as_ref()).await;
    snapshots(make().await.as_ref()).await;
    audit_chain(make().await.as_ref()).await;
    rollouts(make().await.as_ref()).await;
    rollout_retry(make().await.as_ref()).await;
    rollout_checkpoints(make().await.as_ref()).await;
    observation_batches(make().await.as_ref()).await;
    observation_checkpoints(make().await.as_ref()).await;
    racing_appends(make().await).await;
    racing_rollout_updates(make().await).await;
    admission_limit(make().await.as_ref()).await;
    stable_version_in_the_transaction(make().await.as_ref()).await;
    no_direct_activation_under_a_rollout(make().await.as_ref()).await;
    documents_in_the_chain(make().await.as_ref()).await;
    verified_head(make().await.as_ref()).await;
    racing_admissions(make().await).await;
    tokens(make().await.as_ref()).await;
    summaries(make().await.as_ref()).await;
}

/// API tokens: created with their audit entry, names and secrets unique, listed by name,
/// revoked with their audit entry; the secret's hash is kept, never the secret.
pub async fn tokens(store: &dyn Store) {
    use crate::token::{NewToken, Role, hash_secret};
    let before = audit_count(store).await;
    let new = |name: &str, role, secret: &str| NewToken {
        name: name.into(),
        role,
        hash: hash_secret(secret),
    };
    let b = store
        .create_token(new("b-ci", Role::Operator, "secret-b"), draft("token.create", "b-ci"))
        .await
        .expect("create a token");
    assert_eq!((b.name.as_str(), b.role), ("b-ci", Role::Operator));
    assert_eq!(b.hash, hash_secret("secret-b"));
    store
        .create_token(new("a-app", Role::Client, "secret-a"), draft("token.create", "a-app"))
        .await
        .expect("create a second token");
    assert_eq!(audit_count(store).await, before + 2, "each token is audited");
    let dup =
        store.create_token(new("b-ci", Role::Viewer, "other"), draft("token.create", "b-ci")).await;
    assert!(matches!(dup, Err(StoreError::AlreadyExists { .. })), "{dup:?}");
    let same_secret =
        store.create_token(new("c", Role::Viewer, "secret-a"), draft("token.create", "c")).await;
    assert!(matches!(same_secret, Err(StoreError::AlreadyExists { .. })), "{same_secret:?}");
    let bad =
        store.create_token(new("has space", Role::Viewer, "s3"), draft("token.create", "x")).await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");
    assert_eq!(audit_count(store).await, before + 2, "refusals write nothing");
    let all = store.list_tokens().await.expect("list tokens");
    let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a-app", "b-ci"]);
    assert_eq!(all[0].role, Role::Client);
    let gone = store.revoke_token("b-ci", draft("token.revoke", "b-ci")).await.expect("revoke");
    assert_eq!(gone.name, "b-ci");
    assert_eq!(audit_count(store).await, before + 3);
    let again = store.revoke_token("b-ci", draft("token.revoke", "b-ci")).await;
    assert!(matches!(again, Err(StoreError::NotFound { .. })), "{again:?}");
    assert_eq!(store.list_tokens().await.expect("list").len(), 1);
}

/// Slots: create, read, duplicates refused, listing by name with pages.
pub async fn slots(store: &dyn Store) {
    for n in ["b.chat", "a.chat", "c.chat"] {
        slot(store, n).await;
    }
    let s =
        store.get_slot(&name("a.chat")).await.unwrap().expect("slots: created slot is readable");
    assert_eq!(s.latest_version, 0, "slots: a new slot has no version");
    assert_eq!(s.active_version, None, "slots: a new slot has no active version");
    assert!(store.get_slot(&name("zzz")).await.unwrap().is_none(), "slots: unknown slot is None");
    let before = audit_count(store).await;
    let dup = store
        .create_slot(
            NewSlot { name: name("a.chat"), description: String::new(), schema: None },
            draft("slot.create", "a.chat"),
        )
        .await;
    assert!(
        matches!(dup, Err(StoreError::AlreadyExists { .. })),
        "slots: duplicate refused, got {dup:?}"
    );
    assert_eq!(audit_count(store).await, before, "slots: a refused write audits nothing itself");
    let p1 = store.list_slots(PageRequest::first(2)).await.unwrap();
    let names: Vec<_> = p1.items.iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["a.chat", "b.chat"], "slots: listed by name");
    let p2 =
        store.list_slots(PageRequest { limit: 2, cursor: p1.next_cursor.clone() }).await.unwrap();
    assert_eq!(p2.items.len(), 1, "slots: second page");
    assert_eq!(p2.items[0].name.as_str(), "c.chat");
    assert!(p2.next_cursor.is_none(), "slots: last page has no cursor");
    let bad = store.list_slots(PageRequest::first(PageRequest::MAX_LIMIT + 1)).await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))), "slots: oversize page refused");
}

/// Versions rise by one, are immutable, and a stale `expected_latest` changes nothing.
pub async fn versions(store: &dyn Store) {
    slot(store, "chat").await;
    for i in 0..5 {
        assert_eq!(append(store, "chat", i, i == 0).await.unwrap(), i + 1, "versions: numbering");
    }
    let s = store.get_slot(&name("chat")).await.unwrap().unwrap();
    assert_eq!(s.latest_version, 5);
    assert_eq!(s.active_version, Some(1), "versions: only the activated version is active");
    let before = audit_count(store).await;
    let stale = append(store, "chat", 3, true).await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { expected: 3, actual: 5, .. })),
        "versions: stale expected_latest is a conflict, got {stale:?}"
    );
    assert_eq!(audit_count(store).await, before, "versions: refused write audits nothing");
    let s2 = store.get_slot(&name("chat")).await.unwrap().unwrap();
    assert_eq!((s2.latest_version, s2.active_version), (5, Some(1)), "versions: store unchanged");
    let v3 = store.get_version(&name("chat"), 3).await.unwrap().expect("versions: v3 readable");
    assert_eq!(v3.document, json!({"model": "m", "v": 3, "nested": {"t": 0.5}}));
    assert_eq!(v3.message, "v3");
    assert!(store.get_version(&name("chat"), 9).await.unwrap().is_none());
    let p = store.list_versions(&name("chat"), PageRequest::first(2)).await.unwrap();
    assert_eq!(
        p.items.iter().map(|v| v.version).collect::<Vec<_>>(),
        [5, 4],
        "versions: newest first"
    );
    let p = store
        .list_versions(&name("chat"), PageRequest { limit: 10, cursor: p.next_cursor })
        .await
        .unwrap();
    assert_eq!(p.items.iter().map(|v| v.version).collect::<Vec<_>>(), [3, 2, 1]);
    assert!(p.next_cursor.is_none());
    let missing = append(store, "nope", 0, true).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "versions: unknown slot, got {missing:?}"
    );
}

/// Activation moves the active pointer under the slot's revision.
pub async fn activation(store: &dyn Store) {
    slot(store, "chat").await;
    append(store, "chat", 0, true).await.unwrap();
    append(store, "chat", 1, true).await.unwrap();
    let s = store.get_slot(&name("chat")).await.unwrap().unwrap();
    assert_eq!(s.active_version, Some(2));
    let s2 = store
        .activate_version(&name("chat"), s.revision, 1, draft("config.revert", "chat"))
        .await
        .expect("activation: revert to v1");
    assert_eq!(s2.active_version, Some(1));
    assert!(s2.revision > s.revision, "activation: revision bumped");
    let stale =
        store.activate_version(&name("chat"), s.revision, 2, draft("config.revert", "chat")).await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "activation: stale revision, got {stale:?}"
    );
    let missing =
        store.activate_version(&name("chat"), s2.revision, 7, draft("config.revert", "chat")).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "activation: unknown version, got {missing:?}"
    );
    let now = store.get_slot(&name("chat")).await.unwrap().unwrap();
    assert_eq!(now.active_version, Some(1), "activation: failures change nothing");
}

/// Snapshots copy the active version and respect retention.
pub async fn snapshots(store: &dyn Store) {
    slot(store, "chat").await;
    slot(store, "other").await;
    let none = store
        .create_snapshot(
            NewSnapshot {
                slot: name("chat"),
                label: "x".into(),
                created_by: "t".into(),
                retention: 3,
            },
            draft("snapshot.create", "chat"),
        )
        .await;
    assert!(none.is_err(), "snapshots: a slot with no active version cannot be snapshotted");
    append(store, "chat", 0, true).await.unwrap();
    append(store, "other", 0, true).await.unwrap();
    store
        .create_snapshot(
            NewSnapshot {
                slot: name("other"),
                label: "o".into(),
                created_by: "t".into(),
                retention: 3,
            },
            draft("snapshot.create", "other"),
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..5u64 {
        append(store, "chat", i + 1, true).await.unwrap();
        let s = store
            .create_snapshot(
                NewSnapshot {
                    slot: name("chat"),
                    label: format!("s{i}"),
                    created_by: "t".into(),
                    retention: 3,
                },
                draft("snapshot.create", "chat"),
            )
            .await
            .unwrap();
        assert_eq!(s.version, i + 2, "snapshots: records the active version");
        assert_eq!(s.document["v"], json!(i + 2), "snapshots: copies its document");
        ids.push(s.id);
    }
    let listed = store.list_snapshots(Some(&name("chat")), PageRequest::first(10)).await.unwrap();
    let labels: Vec<_> = listed.items.iter().map(|s| s.label.clone()).collect();
    assert_eq!(labels, ["s4", "s3", "s2"], "snapshots: retention keeps the newest 3, newest first");
    assert!(store.get_snapshot(&ids[0]).await.unwrap().is_none(), "snapshots: oldest deleted");
    assert!(store.get_snapshot(&ids[4]).await.unwrap().is_some());
    let all = store.list_snapshots(None, PageRequest::first(10)).await.unwrap();
    assert_eq!(all.items.len(), 4, "snapshots: retention is per slot");
    let p1 = store.list_snapshots(Some(&name("chat")), PageRequest::first(2)).await.unwrap();
    let p2 = store
        .list_snapshots(Some(&name("chat")), PageRequest { limit: 2, cursor: p1.next_cursor })
        .await
        .unwrap();
    assert_eq!(p2.items.len(), 1, "snapshots: pagination");
    assert_eq!(p2.items[0].label, "s2");
}

/// Every write is audited once, in a chain that verifies, with pagination both ways.
pub async fn audit_chain(store: &dyn Store) {
    slot(store, "chat").await;
    append(store, "chat", 0, true).await.unwrap();
    store
        .append_audit(
            AuditDraft::failure("bob", "config.apply", "chat", "temperature 7 is above 2")
                .with_metadata(json!({"k": [1, 2.5, "x"]})),
        )
        .await
        .unwrap();
    slot(store, "chat2").await;
    assert_eq!(audit_count(store).await, 4, "audit: one entry per write");
    let asc = store
        .list_audit(AuditQuery { cursor: None, limit: 3, descending: false, target: None })
        .await
        .unwrap();
    assert_eq!(asc.items.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    let rest = store
        .list_audit(AuditQuery {
            cursor: asc.next_cursor.as_deref().map(|c| c.parse().unwrap()),
            limit: 3,
            descending: false,
            target: None,
        })
        .await
        .unwrap();
    assert_eq!(rest.items.iter().map(|e| e.seq).collect::<Vec<_>>(), [4]);
    let desc = store
        .list_audit(AuditQuery { cursor: None, limit: 2, descending: true, target: None })
        .await
        .unwrap();
    assert_eq!(desc.items.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 3], "audit: newest first");
    let failure = &asc.items[2];
    assert_eq!(failure.error.as_deref(), Some("temperature 7 is above 2"));
    assert_eq!(failure.metadata, json!({"k": [1, 2.5, "x"]}));
    let only = store
        .list_audit(AuditQuery {
            cursor: None,
            limit: 10,
            descending: false,
            target: Some("chat".into()),
        })
        .await
        .unwrap();
    assert_eq!(only.items.len(), 3, "audit: target filter excludes chat2");
    let mut v = ChainVerifier::new();
    for e in &asc.items {
        assert!(v.push(e), "audit: entry {} verifies", e.seq);
    }
    for e in &rest.items {
        assert!(v.push(e));
    }
    let head = store.audit_head().await.unwrap();
    assert_eq!(v.finish(head.as_ref()), Ok(4), "audit: chain verifies against the head");
}

/// Rollouts: one active per slot, optimistic updates, transitions checked, atomic activation.
pub async fn rollouts(store: &dyn Store) {
    slot(store, "chat").await;
    append(store, "chat", 0, true).await.unwrap();
    append(store, "chat", 1, false).await.unwrap();
    let new = |id: &str| NewRollout {
        id: id.into(),
        slot: name("chat"),
        strategy: DeploymentStrategy::Canary,
        state: DeploymentState::Pending,
        request: json!({"candidate": {"version": 2}}),
        status: json!({"phase": 0}),
        admission: Admission::default(),
    };
    let r = store.create_rollout(new("r1"), draft("rollout.start", "r1")).await.unwrap();
    assert_eq!(r.revision, 1);
    let dup = store.create_rollout(new("r2"), draft("rollout.start", "r2")).await;
    assert!(
        matches!(dup, Err(StoreError::AlreadyExists { .. })),
        "rollouts: one active per slot, got {dup:?}"
    );
    let upd = |rev, state, activate| RolloutUpdate {
        expected_revision: rev,
        state,
        status: json!({"phase": rev}),
        activate_version: activate,
        admission: Admission::default(),
    };
    let r = store
        .update_rollout(
            "r1",
            upd(1, DeploymentState::Validating, None),
            draft("rollout.validate", "r1"),
        )
        .await
        .unwrap();
    let stale = store
        .update_rollout("r1", upd(1, DeploymentState::RollingOut, None), draft("x", "r1"))
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "rollouts: stale revision, got {stale:?}"
    );
    let bad = store
        .update_rollout("r1", upd(r.revision, DeploymentState::Completed, None), draft("x", "r1"))
        .await;
    assert!(
        matches!(bad, Err(StoreError::Invalid(_))),
        "rollouts: invalid transition refused, got {bad:?}"
    );
    let mut rev = r.revision;
    for st in
        [DeploymentState::RollingOut, DeploymentState::Monitoring, DeploymentState::Monitoring]
    {
        rev = store
            .update_rollout("r1", upd(rev, st, None), draft("rollout.step", "r1"))
            .await
            .unwrap()
            .revision;
    }
    let done = store
        .update_rollout(
            "r1",
            upd(rev, DeploymentState::Completed, Some(2)),
            draft("rollout.complete", "r1"),
        )
        .await
        .unwrap();
    assert_eq!(done.state, DeploymentState::Completed);
    assert_eq!(done.status, json!({"phase": rev}));
    let s = store.get_slot(&name("chat")).await.unwrap().unwrap();
    assert_eq!(s.active_version, Some(2), "rollouts: activation committed with the update");
    let r2 = store
        .create_rollout(new("r2"), draft("rollout.start", "r2"))
        .await
        .expect("rollouts: slot free after completion");
    let got = store.get_rollout("r2").await.unwrap().unwrap();
    assert_eq!(got, r2, "rollouts: read back equal");
    let active = store
        .list_rollouts(RolloutFilter { active_only: true, slot: None }, PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(active.items.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["r2"]);
    let all = store.list_rollouts(RolloutFilter::default(), PageRequest::first(1)).await.unwrap();
    assert_eq!(all.items[0].id, "r2", "rollouts: newest first");
    let next = store
        .list_rollouts(RolloutFilter::default(), PageRequest { limit: 1, cursor: all.next_cursor })
        .await
        .unwrap();
    assert_eq!(next.items[0].id, "r1");
    assert!(store.get_rollout("nope").await.unwrap().is_none());
}

/// What a start reads instead of whole records: the routes of active rollouts, the counts
/// by strategy and state with the rollbacks the statuses record, and the rollouts holding
/// batches; each follows every kind of write (create, update, status save, checkpoint).
pub async fn summaries(store: &dyn Store) {
    for s in ["a", "b", "c"] {
        slot(store, s).await;
        append(store, s, 0, true).await.unwrap();
        append(store, s, 1, false).await.unwrap();
    }
    // A page of slots with their active versions: what one read of each would give.
    slot(store, "d").await;
    let with = store.list_slots_with_active_versions(PageRequest::first(2)).await.unwrap();
    let rest = store
        .list_slots_with_active_versions(PageRequest {
            limit: 10,
            cursor: with.next_cursor.clone(),
        })
        .await
        .unwrap();
    let all: Vec<_> = with.items.into_iter().chain(rest.items).collect();
    assert_eq!(all.iter().map(|(s, _)| s.name.as_str()).collect::<Vec<_>>(), ["a", "b", "c", "d"]);
    for (s, v) in &all {
        let one = match s.active_version {
            Some(a) => store.get_version(&s.name, a).await.unwrap(),
            None => None,
        };
        assert_eq!(v, &one, "summaries: the active version of {}", s.name);
    }
    assert!(
        all[0].1.is_some() && all[3].1.is_none(),
        "summaries: a slot with no active version has none"
    );
    let route = json!({"slot": "a", "share_bp": 100});
    let new = |id: &str, s: &str, strategy| NewRollout {
        id: id.into(),
        slot: name(s),
        strategy,
        state: DeploymentState::Pending,
        request: json!({"candidate": {"version": 2}}),
        status: json!({"route": route}),
        admission: Admission::default(),
    };
    let a = store
        .create_rollout(new("ra", "a", DeploymentStrategy::Canary), draft("rollout.start", "ra"))
        .await
        .unwrap();
    store
        .create_rollout(new("rb", "b", DeploymentStrategy::Canary), draft("rollout.start", "rb"))
        .await
        .unwrap();
    let c = store
        .create_rollout(new("rc", "c", DeploymentStrategy::BlueGreen), draft("rollout.start", "rc"))
        .await
        .unwrap();
    let routes = store.list_active_routes(PageRequest::first(10)).await.unwrap();
    assert_eq!(routes.items.len(), 3, "summaries: every active route");
    assert!(routes.items.iter().all(|r| r.route == route), "summaries: routes as written");
    // ra rolls back automatically after a manual rollback of an earlier try; rc is aborted.
    let rolled = json!({
        "route": null,
        "rollback": {"automatic": true, "reason": {"kind": "sequential"}},
        "past_rollbacks": [{"automatic": false, "reason": {"kind": "manual"}}]
    });
    let mut rev = a.revision;
    for st in [
        DeploymentState::Validating,
        DeploymentState::RollingOut,
        DeploymentState::Monitoring,
        DeploymentState::RollingBack,
    ] {
        rev = store
            .update_rollout(
                "ra",
                RolloutUpdate {
                    expected_revision: rev,
                    state: st,
                    status: rolled.clone(),
                    activate_version: None,
                    admission: Admission::default(),
                },
                draft("rollout.step", "ra"),
            )
            .await
            .unwrap()
            .revision;
    }
    let aborted = json!({"rollback": {"automatic": false, "reason": {"kind": "aborted"}}});
    let mut rev = c.revision;
    for st in [DeploymentState::Validating, DeploymentState::RollingOut, DeploymentState::Aborted] {
        rev = store
            .update_rollout(
                "rc",
                RolloutUpdate {
                    expected_revision: rev,
                    state: st,
                    status: aborted.clone(),
                    activate_version: None,
                    admission: Admission::default(),
                },
                draft("rollout.step", "rc"),
            )
            .await
            .unwrap()
            .revision;
    }
    // rb's checkpoint moves its route.
    let moved = json!({"slot": "b", "share_bp": 500});
    let b = store.get_rollout("rb").await.unwrap().unwrap();
    store.save_rollout_status("rb", b.revision, json!({"route": moved})).await.unwrap();
    store
        .append_observation_batches(vec![NewObservationBatch {
            rollout_id: "rb".into(),
            items: r#"[{"x":1}]"#.into(),
        }])
        .await
        .unwrap();
    let holders = store.rollouts_with_batches().await.unwrap();
    if let Some(h) = &holders {
        assert_eq!(
            h.iter().map(String::as_str).collect::<Vec<_>>(),
            ["rb"],
            "summaries: batch holders"
        );
    }
    let mut routes = store.list_active_routes(PageRequest::first(10)).await.unwrap().items;
    routes.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(
        routes.iter().map(|r| (r.id.as_str(), r.route.clone())).collect::<Vec<_>>(),
        [("ra", serde_json::Value::Null), ("rb", moved)],
        "summaries: routes follow updates and saves"
    );
    // The encoded listing holds what the full records hold, documents as text.
    let full = store
        .list_rollouts(RolloutFilter { active_only: true, slot: None }, PageRequest::first(10))
        .await
        .unwrap();
    let encoded = store.list_active_rollouts_encoded(PageRequest::first(10)).await.unwrap();
    assert_eq!(encoded.items.len(), full.items.len(), "summaries: encoded listing");
    for (e, f) in encoded.items.iter().zip(&full.items) {
        assert_eq!(e.record.id, f.id, "summaries: same order");
        assert_eq!((e.record.state, e.record.revision), (f.state, f.revision));
        assert!(e.record.status.is_null() && e.record.request.is_null());
        assert_eq!(serde_json::from_str::<serde_json::Value>(&e.status).unwrap(), f.status);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&e.request).unwrap(), f.request);
    }
    let counts = store.rollout_counts().await.unwrap();
    let mut kinds = counts.by_kind.clone();
    kinds.sort_by_key(|&(s, st, _)| (s.as_str(), st.as_str()));
    assert_eq!(
        kinds,
        [
            (DeploymentStrategy::BlueGreen, DeploymentState::Aborted, 1),
            (DeploymentStrategy::Canary, DeploymentState::Pending, 1),
            (DeploymentStrategy::Canary, DeploymentState::RollingBack, 1),
        ],
        "summaries: counts by strategy and state"
    );
    assert_eq!(
        (counts.automatic_rollbacks, counts.manual_rollbacks),
        (1, 1),
        "summaries: rollbacks, aborts left out"
    );
}

/// A retry (terminal back to pending) is refused while another rollout holds the slot.
pub async fn rollout_retry(store: &dyn Store) {
    slot(store, "chat").await;
    append(store, "chat", 0, true).await.unwrap();
    let new = |id: &str| NewRollout {
        id: id.into(),
        slot: name("chat"),
        strategy: DeploymentStrategy::Canary,
        state: DeploymentState::Monitoring,
        request: json!({}),
        status: json!({}),
        admission: Admission::default(),
    };
    let upd = |rev, state| RolloutUpdate {
        expected_revision: rev,
        state,
        status: json!({}),
        activate_version: None,
        admission: Admission::default(),
    };
    let a = store.create_rollout(new("a"), draft("rollout.start", "a")).await.unwrap();
    let a = store
        .update_rollout("a", upd(a.revision, DeploymentState::Failed), draft("rollout.fail", "a"))
        .await
        .unwrap();
    let b = store.create_rollout(new("b"), draft("rollout.start", "b")).await.unwrap();
    let retry = store
        .update_rollout("a", upd(a.revision, DeploymentState::Pending), draft("rollout.retry", "a"))
        .await;
    assert!(
        matches!(retry, Err(StoreError::AlreadyExists { .. })),
        "rollout retry: refused while b is active, got {retry:?}"
    );
    store
        .update_rollout(
            "b",
            upd(b.revision, DeploymentState::RollingBack),
            draft("rollout.abort", "b"),
        )
        .await
        .unwrap();
    let b = store.get_rollout("b").await.unwrap().unwrap();
    store
        .update_rollout(
            "b",
            upd(b.revision, DeploymentState::RolledBack),
            draft("rollout.abort", "b"),
        )
        .await
        .unwrap();
    let again = store
        .update_rollout("a", upd(a.revision, DeploymentState::Pending), draft("rollout.retry", "a"))
        .await
        .expect("rollout retry: allowed once the slot is free");
    assert_eq!(again.state, DeploymentState::Pending);
}

/// Checkpoints save the engine state under the revision rule, with no audit entry.
pub async fn rollout_checkpoints(store: &dyn Store) {
    slot(store, "chat").await;
    append(store, "chat", 0, true).await.unwrap();
    let r = store
        .create_rollout(
            NewRollout {
                id: "r".into(),
                slot: name("chat"),
                strategy: DeploymentStrategy::Canary,
                state: DeploymentState::Monitoring,
                request: json!({}),
                status: json!({"n": 0}),
                admission: Admission::default(),
            },
            draft("rollout.start", "r"),
        )
        .await
        .unwrap();
    let before = audit_count(store).await;
    let saved = store.save_rollout_status("r", r.revision, json!({"n": 1})).await.unwrap();
    assert_eq!(saved.revision, r.revision + 1, "checkpoints: revision bumped");
    assert_eq!(saved.state, DeploymentState::Monitoring, "checkpoints: state unchanged");
    assert_eq!(audit_count(store).await, before, "checkpoints: not audited");
    let stale = store.save_rollout_status("r", r.revision, json!({"n": 2})).await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "checkpoints: stale revision, got {stale:?}"
    );
    let got = store.get_rollout("r").await.unwrap().unwrap();
    assert_eq!(got.status, json!({"n": 1}), "checkpoints: read back");
    let missing = store.save_rollout_status("nope", 1, json!({})).await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })));
}

async fn monitored_rollout(store: &dyn Store, id: &str, slot_name: &str) -> RolloutRecord {
    slot(store, slot_name).await;
    append(store, slot_name, 0, true).await.unwrap();
    store
        .create_rollout(
            NewRollout {
                id: id.into(),
                slot: name(slot_name),
                strategy: DeploymentStrategy::Canary,
                state: DeploymentState::Monitoring,
                request: json!({}),
                status: json!({"n": 0}),
                admission: Admission::default(),
            },
            draft("rollout.start", id),
        )
        .await
        .unwrap()
}

fn seqs(batches: &[ObservationBatch]) -> Vec<u64> {
    batches.iter().map(|b| b.seq).collect()
}

/// Observation batches: appended all or none, sequence numbers rising, listed per rollout
/// in order with pages, pruned per rollout.
pub async fn observation_batches(store: &dyn Store) {
    monitored_rollout(store, "a", "chat").await;
    monitored_rollout(store, "b", "search").await;
    let batch = |r: &str, n: u64| NewObservationBatch {
        rollout_id: r.into(),
        items: format!("{{\"n\": {n}}}"),
    };
    let empty = store.append_observation_batches(vec![]).await;
    assert!(matches!(empty, Err(StoreError::Invalid(_))), "batches: empty append, got {empty:?}");
    let first = store.append_observation_batches(vec![batch("a", 1), batch("b", 2)]).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(first[0] < first[1], "batches: sequence numbers rise in the order given: {first:?}");
    let unknown = store.append_observation_batches(vec![batch("a", 9), batch("nope", 9)]).await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound { .. })),
        "batches: unknown rollout refused, got {unknown:?}"
    );
    let third = store.append_observation_batches(vec![batch("a", 3)]).await.unwrap()[0];
    assert!(third > first[1], "batches: later appends get higher numbers");
    let a = store.list_observation_batches("a", 0, 10).await.unwrap();
    assert_eq!(seqs(&a), [first[0], third], "batches: the failed append kept nothing");
    assert_eq!(a[0].items, "{\"n\": 1}", "batches: items read back byte for byte");
    assert_eq!(a[0].rollout_id, "a");
    assert_eq!(seqs(&store.list_observation_batches("a", first[0], 10).await.unwrap()), [third]);
    assert_eq!(seqs(&store.list_observation_batches("a", 0, 1).await.unwrap()), [first[0]]);
    assert_eq!(seqs(&store.list_observation_batches("b", 0, 10).await.unwrap()), [first[1]]);
    assert!(store.list_observation_batches("nope", 0, 10).await.unwrap().is_empty());
    let bad = store.list_observation_batches("a", 0, 0).await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))), "batches: limit 0, got {bad:?}");
    assert_eq!(store.prune_observation_batches("b", first[1]).await.unwrap(), 1);
    assert_eq!(store.prune_observation_batches("b", first[1]).await.unwrap(), 0);
    assert!(store.list_observation_batches("b", 0, 10).await.unwrap().is_empty());
    assert_eq!(
        seqs(&store.list_observation_batches("a", 0, 10).await.unwrap()),
        [first[0], third],
        "batches: pruning one rollout leaves the others"
    );
}

/// A checkpoint saves the state and deletes the folded batches in one transaction; a stale
/// one changes nothing; numbers are never reused after deletion.
pub async fn observation_checkpoints(store: &dyn Store) {
    let r = monitored_rollout(store, "a", "chat").await;
    monitored_rollout(store, "b", "search").await;
    let batch = |r: &str, n: u64| NewObservationBatch {
        rollout_id: r.into(),
        items: format!("{{\"n\": {n}}}"),
    };
    let s = store
        .append_observation_batches(vec![batch("a", 1), batch("a", 2), batch("b", 3)])
        .await
        .unwrap();
    let before = audit_count(store).await;
    let saved = store.checkpoint_rollout("a", r.revision, json!({"n": 1}), s[0]).await.unwrap();
    assert_eq!(saved.revision, r.revision + 1, "checkpoint: revision bumped");
    assert_eq!(saved.status, json!({"n": 1}));
    assert_eq!(audit_count(store).await, before, "checkpoint: not audited");
    assert_eq!(
        seqs(&store.list_observation_batches("a", 0, 10).await.unwrap()),
        [s[1]],
        "checkpoint: the folded batch is gone, the later one stays"
    );
    assert_eq!(seqs(&store.list_observation_batches("b", 0, 10).await.unwrap()), [s[2]]);
    let stale = store.checkpoint_rollout("a", r.revision, json!({"n": 2}), s[1]).await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "checkpoint: stale revision, got {stale:?}"
    );
    assert_eq!(
        seqs(&store.list_observation_batches("a", 0, 10).await.unwrap()),
        [s[1]],
        "checkpoint: a refused checkpoint deletes nothing"
    );
    assert_eq!(store.get_rollout("a").await.unwrap().unwrap().status, json!({"n": 1}));
    store.checkpoint_rollout("a", saved.revision, json!({"n": 2}), s[1]).await.unwrap();
    assert!(store.list_observation_batches("a", 0, 10).await.unwrap().is_empty());
    store.prune_observation_batches("b", s[2]).await.unwrap();
    let again = store.append_observation_batches(vec![batch("a", 4)]).await.unwrap()[0];
    assert!(again > s[2], "checkpoint: numbers are never reused after deletion ({again})");
    let missing = store.checkpoint_rollout("nope", 1, json!({}), 0).await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })), "got {missing:?}");
}

/// Ten appends racing on one slot: exactly one wins, the rest are conflicts.
pub async fn racing_appends(store: Arc<dyn Store>) {
    slot(store.as_ref(), "race").await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let s = store.clone();
        tasks.push(async move { append(s.as_ref(), "race", 0, true).await });
    }
    let results = futures_join_all(tasks).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "racing appends: exactly one wins, got {results:?}");
    assert!(results.iter().all(|r| r.is_ok() || matches!(r, Err(StoreError::Conflict { .. }))));
    assert_eq!(store.get_slot(&name("race")).await.unwrap().unwrap().latest_version, 1);
    assert_eq!(audit_count(store.as_ref()).await, 2, "racing appends: only the winner is audited");
}

/// An abort racing a promotion on one rollout revision: exactly one lands.
pub async fn racing_rollout_updates(store: Arc<dyn Store>) {
    slot(store.as_ref(), "race").await;
    append(store.as_ref(), "race", 0, true).await.unwrap();
    let r = store
        .create_rollout(
            NewRollout {
                id: "r".into(),
                slot: name("race"),
                strategy: DeploymentStrategy::Canary,
                state: DeploymentState::Monitoring,
                request: json!({}),
                status: json!({}),
                admission: Admission::default(),
            },
            draft("rollout.start", "r"),
        )
        .await
        .unwrap();
    let a = {
        let s = store.clone();
        async move {
            s.update_rollout(
                "r",
                RolloutUpdate {
                    expected_revision: r.revision,
                    state: DeploymentState::RollingBack,
                    status: json!({"by": "abort"}),
                    activate_version: None,
                    admission: Admission::default(),
                },
                draft("rollout.abort", "r"),
            )
            .await
        }
    };
    let b = {
        let s = store.clone();
        async move {
            s.update_rollout(
                "r",
                RolloutUpdate {
                    expected_revision: r.revision,
                    state: DeploymentState::RollingOut,
                    status: json!({"by": "promote"}),
                    activate_version: None,
                    admission: Admission::default(),
                },
                draft("rollout.promote", "r"),
            )
            .await
        }
    };
    let results = futures_join_all(vec![
        Box::pin(a) as std::pin::Pin<Box<dyn Future<Output = _> + Send>>,
        Box::pin(b),
    ])
    .await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "racing updates: exactly one lands, got {results:?}"
    );
    let now = store.get_rollout("r").await.unwrap().unwrap();
    assert_eq!(now.revision, r.revision + 1);
    let winner = results.into_iter().find_map(Result::ok).unwrap();
    assert_eq!(now.state, winner.state, "racing updates: the stored state is the winner's");
}

/// Polls every future concurrently (no runtime dependency: a tiny join-all).
async fn futures_join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    struct JoinAll<F: Future> {
        futs: Vec<Option<Pin<Box<F>>>>,
        out: Vec<Option<Box<F::Output>>>,
    }
    impl<F: Future> Future for JoinAll<F> {
        type Output = Vec<F::Output>;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            // Every field is Unpin (boxed futures, boxed outputs), so no unsafe is needed.
            let this = unpinned(self);
            let mut pending = false;
            for (i, slot) in this.futs.iter_mut().enumerate() {
                if let Some(f) = slot {
                    match f.as_mut().poll(cx) {
                        Poll::Ready(v) => {
                            this.out[i] = Some(Box::new(v));
                            *slot = None;
                        }
                        Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(
                    this.out.iter_mut().map(|o| *o.take().expect("output present")).collect(),
                )
            }
        }
    }
    fn unpinned<T: Unpin>(p: Pin<&mut T>) -> &mut T {
        Pin::into_inner(p)
    }
    let n = futs.len();
    JoinAll {
        futs: futs.into_iter().map(|f| Some(Box::pin(f))).collect(),
        out: (0..n).map(|_| None).collect(),
    }
    .await
}

fn rollout_in(slot: &str, id: &str, admission: Admission) -> NewRollout {
    NewRollout {
        id: id.into(),
        slot: name(slot),
        strategy: DeploymentStrategy::Canary,
        state: DeploymentState::Pending,
        request: json!({}),
        status: json!({}),
        admission,
    }
}

fn limit(n: u64) -> Admission {
    Admission { max_active: Some(n), expected_stable: None }
}

/// The limit of active rollouts is checked where the rollout is created and where a retry
/// makes a finished one active again.
pub async fn admission_limit(store: &dyn Store) {
    for s in ["a", "b", "c"] {
        slot(store, s).await;
        append(store, s, 0, true).await.unwrap();
    }
    store
        .create_rollout(rollout_in("a", "ra", limit(2)), draft("rollout.start", "ra"))
        .await
        .unwrap();
    let rb = store
        .create_rollout(rollout_in("b", "rb", limit(2)), draft("rollout.start", "rb"))
        .await
        .unwrap();
    let before = audit_count(store).await;
    let over =
        store.create_rollout(rollout_in("c", "rc", limit(2)), draft("rollout.start", "rc")).await;
    assert_eq!(
        over,
        Err(StoreError::Limit { active: 2, limit: 2 }),
        "admission: a third rollout over a limit of 2 is refused"
    );
    assert_eq!(audit_count(store).await, before, "admission: a refused start audits nothing");
    assert!(store.get_rollout("rc").await.unwrap().is_none(), "admission: nothing created");
    let unlimited = store
        .create_rollout(rollout_in("c", "rc", Admission::default()), draft("rollout.start", "rc"))
        .await
        .expect("admission: no limit given, none applied");
    // rb fails; with ra and rc active, a retry of rb under a limit of 2 is refused.
    let upd = |rev, state, admission| RolloutUpdate {
        expected_revision: rev,
        state,
        status: json!({}),
        activate_version: None,
        admission,
    };
    let rb = store
        .update_rollout("rb", upd(rb.revision, DeploymentState::Failed, limit(2)), draft("x", "rb"))
        .await
        .expect("admission: a move to a terminal state is never limited");
    let retry = store
        .update_rollout(
            "rb",
            upd(rb.revision, DeploymentState::Pending, limit(2)),
            draft("x", "rb"),
        )
        .await;
    assert_eq!(retry, Err(StoreError::Limit { active: 2, limit: 2 }), "admission: retry limited");
    store
        .update_rollout(
            "rc",
            upd(unlimited.revision, DeploymentState::Failed, Admission::default()),
            draft("x", "rc"),
        )
        .await
        .unwrap();
    let again = store
        .update_rollout(
            "rb",
            upd(rb.revision, DeploymentState::Pending, limit(2)),
            draft("x", "rb"),
        )
        .await
        .expect("admission: retry admitted under the limit");
    assert_eq!(again.state, DeploymentState::Pending);
}

/// The stable version is the slot's active version read in the admitting transaction.
pub async fn stable_version_in_the_transaction(store: &dyn Store) {
    slot(store, "chat").await;
    append(store, "chat", 0, true).await.unwrap();
    append(store, "chat", 1, true).await.unwrap();
    let expect = |v| Admission { max_active: None, expected_stable: Some(v) };
    let stale =
        store.create_rollout(rollout_in("chat", "r", expect(Some(1))), draft("x", "r")).await;
    assert_eq!(
        stale,
        Err(StoreError::StableChanged { slot: "chat".into(), expected: Some(1), actual: Some(2) }),
        "stable: refused when the active version moved"
    );
    let r = store
        .create_rollout(rollout_in("chat", "r", expect(Some(2))), draft("x", "r"))
        .await
        .unwrap();
    assert_eq!(r.stable_version, Some(2), "stable: recorded");
    assert_eq!(store.get_rollout("r").await.unwrap().unwrap().stable_version, Some(2));
    let upd = |rev, state, admission| RolloutUpdate {
        expected_revision: rev,
        state,
        status: json!({}),
        activate_version: None,
        admission,
    };
    let r = store
        .update_rollout(
            "r",
            upd(r.revision, DeploymentState::Failed, Admission::default()),
            draft("x", "r"),
        )
        .await
        .unwrap();
    append(store, "chat", 2, true).await.unwrap();
    let stale = store
        .update_rollout(
            "r",
            upd(r.revision, DeploymentState::Pending, expect(Some(2))),
            draft("x", "r"),
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::StableChanged { .. })),
        "stable: retry checks it, got {stale:?}"
    );
    let again = store
        .update_rollout(
            "r",
            upd(r.revision, DeploymentState::Pending, expect(Some(3))),
            draft("x", "r"),
        )
        .await
        .unwrap();
    assert_eq!(again.stable_version, Some(3), "stable: read again on retry");
}

/// While a rollout holds a slot, direct activations are refused; staging and the rollout's
/// own activation are not.
pub async fn no_direct_activation_under_a_rollout(store: &dyn Store) {
    slot(store, "chat").await;
    append(store, "chat", 0, true).await.unwrap();
    let r = store
        .create_rollout(
            NewRollout {
                state: DeploymentState::Monitoring,
                ..rollout_in("chat", "r", Admission::default())
            },
            draft("rollout.start", "r"),
        )
        .await
        .unwrap();
    let before = audit_count(store).await;
    let held = append(store, "chat", 1, true).await;
    assert_eq!(
        held,
        Err(StoreError::SlotHeld { slot: "chat".into(), rollout: "r".into() }),
        "held: a direct apply is refused"
    );
    assert_eq!(audit_count(store).await, before, "held: the refused apply audits nothing");
    assert_eq!(append(store, "chat", 1, false).await, Ok(2), "held: staging a version is allowed");
    let s = store.get_slot(&name("chat")).await.unwrap().unwrap();
    let held =
        store.activate_version(&name("chat"), s.revision, 2, draft("config.revert", "chat")).await;
    assert!(
        matches!(held, Err(StoreError::SlotHeld { .. })),
        "held: activation refused, got {held:?}"
    );
    assert_eq!(store.get_slot(&name("chat")).await.unwrap().unwrap().active_version, Some(1));
    let done = store
        .update_rollout(
            "r",
            RolloutUpdate {
                expected_revision: r.revision,
                state: DeploymentState::Completed,
                status: json!({}),
                activate_version: Some(2),
                admission: Admission::default(),
            },
            draft("rollout.complete", "r"),
        )
        .await;
    assert!(done.is_ok(), "held: the rollout activates its own candidate, got {done:?}");
    assert_eq!(store.get_slot(&name("chat")).await.unwrap().unwrap().active_version, Some(2));
    let s = store.get_slot(&name("chat")).await.unwrap().unwrap();
    store
        .activate_version(&name("chat"), s.revision, 1, draft("config.revert", "chat"))
        .await
        .expect("held: free again once the rollout finished");
}

/// Version writes seal the document's SHA-256 in their audit entry; verification and
/// acknowledgement.
pub async fn documents_in_the_chain(store: &dyn Store) {
    slot(store, "chat").await;
    append(store, "chat", 0, true).await.unwrap();
    let v = store.get_version(&name("chat"), 1).await.unwrap().unwrap();
    let head = store.audit_head().await.unwrap().unwrap();
    let entry = store
        .list_audit(AuditQuery { cursor: None, limit: 1, descending: true, target: None })
        .await
        .unwrap()
        .items
        .remove(0);
    assert_eq!(entry.seq, head.seq);
    assert_eq!(
        entry.metadata["document"],
        json!({"slot": "chat", "version": 1, "sha256": document_sha256(&v.document)}),
        "documents: the version write seals the document's digest"
    );
    let report = store.verify_audit().await.unwrap();
    assert!(report.ok && report.problems.is_empty(), "documents: intact, got {report:?}");
    assert_eq!(report.entries_checked, head.seq);
    assert!(store.readiness().await.is_empty(), "documents: an intact store is ready");
    let ack = store
        .acknowledge_audit(
            AuditDraft::success("op", ACKNOWLEDGE_ACTION, "audit")
                .with_metadata(json!({"reason": "drill"})),
        )
        .await
        .unwrap();
    assert_eq!(ack.seq, head.seq + 1, "documents: an acknowledgement is an entry of the chain");
    assert!(store.verify_audit().await.unwrap().ok);
    append(store, "chat", 1, true).await.expect("documents: writes go on");
}

/// The verified head: remembered after a verification, an incremental verification walks
/// only the entries after it, a full one walks everything and reports its progress.
pub async fn verified_head(store: &dyn Store) {
    slot(store, "chat").await;
    append(store, "chat", 0, true).await.unwrap();
    assert_eq!(store.verified_head().await.unwrap(), None, "verified head: none at first");
    let report = store.verify_audit().await.unwrap();
    assert!(report.ok, "verified head: {report:?}");
    assert_eq!(
        (report.incremental, report.from, report.to, report.entries_checked),
        (false, 1, 2, 2)
    );
    let head = store.audit_head().await.unwrap();
    assert_eq!(store.verified_head().await.unwrap(), head, "verified head: remembered");
    for i in 0..3 {
        store.append_audit(draft("note", &format!("n{i}"))).await.unwrap();
    }
    let report = store.verify_audit().await.unwrap();
    assert!(report.ok, "verified head: {report:?}");
    assert_eq!(
        (report.incremental, report.from, report.to, report.entries_checked),
        (true, 3, 5, 3),
        "verified head: only the new entries"
    );
    let head = store.audit_head().await.unwrap();
    assert_eq!(store.verified_head().await.unwrap(), head, "verified head: advanced");
    let report = store.verify_audit().await.unwrap();
    assert_eq!((report.incremental, report.entries_checked, report.to), (true, 0, 5));
    let seen = std::sync::Mutex::new(Vec::new());
    let record = |n: u64| seen.lock().unwrap_or_else(|p| p.into_inner()).push(n);
    let report = store.verify_audit_full(&record).await.unwrap();
    assert!(report.ok, "verified head: {report:?}");
    assert_eq!(
        (report.incremental, report.from, report.to, report.entries_checked),
        (false, 1, 5, 5)
    );
    let seen = seen.into_inner().unwrap_or_else(|p| p.into_inner());
    assert_eq!(seen.last(), Some(&5), "verified head: progress reaches the total");
    assert_eq!(store.verified_head().await.unwrap(), head);
}

/// Twenty creations racing under a limit of three on twenty slots: exactly three land.
pub async fn racing_admissions(store: Arc<dyn Store>) {
    for i in 0..20 {
        let s = format!("s{i}");
        slot(store.as_ref(), &s).await;
        append(store.as_ref(), &s, 0, true).await.unwrap();
    }
    let tasks = (0..20)
        .map(|i| {
            let s = store.clone();
            async move {
                let id = format!("r{i}");
                s.create_rollout(
                    rollout_in(&format!("s{i}"), &id, limit(3)),
                    draft("rollout.start", &id),
                )
                .await
            }
        })
        .collect();
    let results = futures_join_all(tasks).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3, "racing admissions: {results:?}");
    assert!(
        results.iter().all(|r| r.is_ok() || matches!(r, Err(StoreError::Limit { limit: 3, .. })))
    );
    let active = store
        .list_rollouts(RolloutFilter { active_only: true, slot: None }, PageRequest::first(100))
        .await
        .unwrap();
    assert_eq!(active.items.len(), 3);
}
