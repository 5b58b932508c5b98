//! What the engine benchmarks share: a slot with a stable and a candidate version, the
//! order statistics of a sample, and running a module's async measurement on its own runtime.

use actuator_config::{ApplyRequest, ConfigManager};
use actuator_core::{NewSlot, SlotName};
use serde_json::json;
use std::future::Future;

use crate::table::{Row, Table};

/// The `q` quantile of an ascending sample (nearest rank); NaN when it is empty.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// The median of a sample in any order.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// Creates slot `name` with version 1 `{"model": "stable"}` active and version 2
/// `{"model": "candidate"}` beside it.
pub(crate) async fn two_version_slot(
    config: &ConfigManager,
    name: &str,
) -> Result<SlotName, String> {
    let slot = SlotName::new(name).map_err(|e| e.to_string())?;
    config
        .create_slot(
            NewSlot { name: slot.clone(), description: String::new(), schema: None },
            "bench",
        )
        .await
        .map_err(|e| e.to_string())?;
    for (model, activate) in [("stable", true), ("candidate", false)] {
        config
            .apply(ApplyRequest {
                slot: slot.clone(),
                document: json!({"model": model}),
                actor: "bench".into(),
                message: String::new(),
                dry_run: false,
                activate,
                expected_latest: None,
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(slot)
}

/// Runs module `name`'s measurement on a two-thread runtime and appends its rows; a failure
/// is reported and leaves the table without them.
pub(crate) fn run_rows(
    name: &str,
    table: &mut Table,
    measure: impl Future<Output = Result<Vec<Row>, String>>,
) {
    let rt =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("{name} bench skipped: no runtime: {e}");
                return;
            }
        };
    match rt.block_on(measure) {
        Ok(rows) => rows.into_iter().for_each(|r| table.push(r)),
        Err(e) => eprintln!("{name} bench failed: {e}"),
    }
}
