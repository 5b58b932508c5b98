//! Verifying the audit chain: a full verification of N entries against an incremental one
//! after 100 new entries (it walks only the entries after the verified head the full one
//! left), on one SQLite store. One entry in 100 is a version write, so the full verification
//! also checks documents.
//!
//! The store lives in memory: filling a file store commits each entry with an fsync, which
//! would take minutes for 100,000 entries and measures the disk, not the verification.
//!
//! `--audit-entries N` sets the chain's length (100,000 by default, 10,000 with `--quick`).

use actuator_core::audit::AuditDraft;
use actuator_core::config::{NewSlot, SlotName};
use actuator_core::store::{AppendVersion, Store};
use actuator_store_sqlite::SqliteStore;
use serde_json::json;
use std::time::Instant;

use crate::Options;
use crate::engine_rig::{median, run_rows};
use crate::table::{Limit, Row, Table};

/// Entries appended before each incremental verification.
const NEW_ENTRIES: u64 = 100;

/// Appends `n` entries: one version write in 100, notes with a small diff otherwise.
async fn fill(store: &SqliteStore, slot: &SlotName, n: u64) -> Result<(), String> {
    let mut latest =
        store.get_slot(slot).await.map_err(|e| e.to_string())?.map_or(0, |s| s.latest_version);
    for i in 0..n {
        if i % 100 == 0 {
            store
                .append_version(
                    AppendVersion {
                        slot: slot.clone(),
                        expected_latest: latest,
                        document: json!({"model": "m", "temperature": 0.2, "v": latest + 1}),
                        author: "bench".into(),
                        message: format!("v{}", latest + 1),
                        activate: true,
                    },
                    AuditDraft::success("bench", "config.apply", format!("{slot}@{}", latest + 1)),
                )
                .await
                .map_err(|e| e.to_string())?;
            latest += 1;
        } else {
            store
                .append_audit(
                    AuditDraft::success("bench", "rollout.checkpoint", format!("ro-{}", i % 97))
                        .with_diff(json!({"share": [i % 100, (i + 1) % 100]})),
                )
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

async fn measure(opts: &Options) -> Result<Vec<Row>, String> {
    let n = opts.audit_entries.unwrap_or(if opts.quick { 10_000 } else { 100_000 });
    let runs = if opts.quick { 1 } else { 3 };
    let store = SqliteStore::open_in_memory().await.map_err(|e| e.to_string())?;
    let slot = SlotName::new("chat").map_err(|e| e.to_string())?;
    store
        .create_slot(
            NewSlot { name: slot.clone(), description: String::new(), schema: None },
            AuditDraft::success("bench", "slot.create", "chat"),
        )
        .await
        .map_err(|e| e.to_string())?;
    fill(&store, &slot, n - 1).await?;

    let mut full = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let r = store.verify_audit_full(&|_| {}).await.map_err(|e| e.to_string())?;
        full.push(t0.elapsed().as_secs_f64());
        if !r.ok || r.entries_checked < n {
            return Err(format!("the full verification failed: {}", r.message));
        }
    }
    let full_s = median(full);

    let mut incremental = Vec::new();
    for _ in 0..5 {
        fill(&store, &slot, NEW_ENTRIES).await?;
        let t0 = Instant::now();
        let r = store.verify_audit().await.map_err(|e| e.to_string())?;
        incremental.push(t0.elapsed().as_secs_f64());
        if !r.ok || !r.incremental || r.entries_checked != NEW_ENTRIES {
            return Err(format!(
                "the incremental verification did not walk just the new entries: {r:?}"
            ));
        }
    }
    let inc_s = median(incremental);
    // Walking 100 of n entries costs 100/n of the whole walk; the target allows five times
    // that for the fixed costs (reading the heads, one page, remembering the new head).
    let allowed = 5.0 * NEW_ENTRIES as f64 / n as f64;
    Ok(vec![
        Row::new(format!("audit: full verification of {n} entries"), full_s, "s"),
        Row::new(format!("audit: full verification of {n} entries, throughput"), n as f64 / full_s, "entries/s"),
        Row::new(
            format!("audit: incremental verification after {NEW_ENTRIES} new entries ({n}+ in the chain)"),
            inc_s * 1000.0,
            "ms",
        )
        .baseline(full_s * 1000.0)
        .target(Limit::RatioAtMost(allowed)),
        Row::new("audit: incremental verification time, share of the full one", 100.0 * inc_s / full_s, "%")
            .target(Limit::ValueAtMost(100.0 * allowed)),
    ])
}

/// Appends the audit rows.
pub(crate) fn run(opts: &Options, table: &mut Table) {
    run_rows("audit", table, measure(opts));
}
