//! Conversions between PostgreSQL values and the domain types: integers, timestamps, JSON
//! text, and whole rows.

use actuator_core::audit::{AuditEntry, AuditOutcome};
use actuator_core::config::{ConfigVersion, Slot, SlotName, Snapshot};
use actuator_core::deployment::DeploymentStrategy;
use actuator_core::state::DeploymentState;
use actuator_core::store::{RolloutRecord, StoreError};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;

/// Wraps a sqlx error as a store error, saying what was being done: a lost or refused
/// connection, a pool that cannot hand one out in time, a server shutting down or out of disk
/// is [`StoreError::Unavailable`] (writes resume once the server is back), text PostgreSQL
/// cannot hold (a NUL character) is [`StoreError::Invalid`], anything else
/// [`StoreError::Backend`].
pub(crate) fn backend(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| {
        let unavailable = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // Class 08: connection exception; 53: insufficient resources (disk full, out of
            // memory, too many connections); 57P: operator intervention (shutdown, crash).
            sqlx::Error::Database(d) => d.code().is_some_and(|c| {
                c.starts_with("08") || c.starts_with("53") || c.starts_with("57P")
            }),
            _ => false,
        };
        // 22021: a NUL character (or invalid UTF-8), which PostgreSQL text cannot hold.
        let bad_text =
            matches!(&e, sqlx::Error::Database(d) if d.code().as_deref() == Some("22021"));
        if bad_text {
            return StoreError::Invalid(format!(
                "postgres: {context}: a text value holds a NUL character, which PostgreSQL cannot store"
            ));
        }
        if unavailable {
            StoreError::Unavailable(format!(
                "postgres: {context}: the database cannot be reached or is out of resources ({e}); writes resume once it is back"
            ))
        } else {
            StoreError::Backend(format!("postgres: {context}: {e}"))
        }
    }
}

/// A corrupt or unreadable row.
fn corrupt(table: &str, column: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("postgres: corrupt value in {table}.{column}: {detail}"))
}

/// A `u64` as a BIGINT, or `None` when it does not fit (no stored value can
/// equal it then).
pub(crate) fn to_i64(v: u64) -> Option<i64> {
    i64::try_from(v).ok()
}

/// A `u64` as a BIGINT, saturating: for cursors, where "everything below
/// `u64::MAX`" and "everything below `i64::MAX`" select the same rows.
pub(crate) fn to_i64_saturating(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A count or number the store is about to write, refused when a BIGINT cannot hold it.
pub(crate) fn to_i64_checked(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{what} {v} is too large")))
}

/// The text form of a timestamp: RFC 3339, UTC, microseconds. It sorts as text.
pub(crate) fn fmt_ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A JSON value as text.
/// The columns derived from a status at each write: its route (JSON text, `None` when it has
/// none) and the (automatic, manual) rollbacks it records.
pub(crate) fn derived(status: &Value) -> Result<(Option<String>, i64, i64), StoreError> {
    let route = match status.get("route") {
        Some(r @ Value::Object(_)) => Some(to_json(r)?),
        _ => None,
    };
    let (auto, manual) = actuator_core::rollback_counts(status);
    Ok((route, to_i64_saturating(auto), to_i64_saturating(manual)))
}

pub(crate) fn to_json(v: &Value) -> Result<String, StoreError> {
    serde_json::to_string(v)
        .map_err(|e| StoreError::Backend(format!("postgres: encoding JSON: {e}")))
}

/// Typed access to the columns of a row of `table`, with errors that name the column.
pub(crate) struct Cols<'r> {
    row: &'r PgRow,
    table: &'static str,
}

impl<'r> Cols<'r> {
    pub(crate) fn new(row: &'r PgRow, table: &'static str) -> Self {
        Self { row, table }
    }

    fn get<T>(&self, col: &str) -> Result<T, StoreError>
    where
        T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        self.row.try_get(col).map_err(|e| corrupt(self.table, col, e))
    }

    pub(crate) fn text(&self, col: &str) -> Result<String, StoreError> {
        self.get(col)
    }

    pub(crate) fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        self.get(col)
    }

    pub(crate) fn u64(&self, col: &str) -> Result<u64, StoreError> {
        let v: i64 = self.get(col)?;
        u64::try_from(v).map_err(|_| corrupt(self.table, col, format!("negative number {v}")))
    }

    pub(crate) fn opt_u64(&self, col: &str) -> Result<Option<u64>, StoreError> {
        let v: Option<i64> = self.get(col)?;
        v.map(|v| {
            u64::try_from(v).map_err(|_| corrupt(self.table, col, format!("negative number {v}")))
        })
        .transpose()
    }

    pub(crate) fn ts(&self, col: &str) -> Result<DateTime<Utc>, StoreError> {
        let s = self.text(col)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|e| corrupt(self.table, col, format!("timestamp {s:?}: {e}")))
    }

    pub(crate) fn json(&self, col: &str) -> Result<Value, StoreError> {
        let s = self.text(col)?;
        serde_json::from_str(&s).map_err(|e| corrupt(self.table, col, format!("JSON: {e}")))
    }

    pub(crate) fn opt_json(&self, col: &str) -> Result<Option<Value>, StoreError> {
        self.opt_text(col)?
            .map(|s| {
                serde_json::from_str(&s).map_err(|e| corrupt(self.table, col, format!("JSON: {e}")))
            })
            .transpose()
    }

    pub(crate) fn slot_name(&self, col: &str) -> Result<SlotName, StoreError> {
        let s = self.text(col)?;
        SlotName::new(s).map_err(|e| corrupt(self.table, col, e))
    }
}

pub(crate) fn slot(row: &PgRow) -> Result<Slot, StoreError> {
    let c = Cols::new(row, "slots");
    Ok(Slot {
        name: c.slot_name("name")?,
        description: c.text("description")?,
        schema: c.opt_json("schema")?,
        active_version: c.opt_u64("active_version")?,
        latest_version: c.u64("latest_version")?,
        revision: c.u64("revision")?,
        created_at: c.ts("created_at")?,
        updated_at: c.ts("updated_at")?,
    })
}

pub(crate) fn version(row: &PgRow) -> Result<ConfigVersion, StoreError> {
    let c = Cols::new(row, "versions");
    Ok(ConfigVersion {
        slot: c.slot_name("slot")?,
        version: c.u64("version")?,
        document: c.json("document")?,
        author: c.text("author")?,
        message: c.text("message")?,
        created_at: c.ts("created_at")?,
    })
}

pub(crate) fn snapshot(row: &PgRow) -> Result<Snapshot, StoreError> {
    let c = Cols::new(row, "snapshots");
    Ok(Snapshot {
        id: c.text("id")?,
        slot: c.slot_name("slot")?,
        version: c.u64("version")?,
        document: c.json("document")?,
        label: c.text("label")?,
        created_by: c.text("created_by")?,
        created_at: c.ts("created_at")?,
    })
}

pub(crate) fn audit_entry(row: &PgRow) -> Result<AuditEntry, StoreError> {
    let c = Cols::new(row, "audit");
    let outcome = c.text("outcome")?;
    Ok(AuditEntry {
        seq: c.u64("seq")?,
        id: c.text("id")?,
        at: c.ts("at")?,
        actor: c.text("actor")?,
        action: c.text("action")?,
        target: c.text("target")?,
        diff: c.opt_json("diff")?,
        outcome: AuditOutcome::parse(&outcome)
            .ok_or_else(|| corrupt("audit", "outcome", format!("{outcome:?}")))?,
        error: c.opt_text("error")?,
        metadata: c.json("metadata")?,
        prev_hash: c.text("prev_hash")?,
        hash: c.text("hash")?,
    })
}

pub(crate) fn rollout(row: &PgRow) -> Result<RolloutRecord, StoreError> {
    let status = Cols::new(row, "rollouts").json("status")?;
    rollout_with(row, status)
}

/// A rollout record from a row holding at least the columns of [`ROLLOUT_META`], with
/// `status` as its status.
pub(crate) fn rollout_with(row: &PgRow, status: Value) -> Result<RolloutRecord, StoreError> {
    let request = Cols::new(row, "rollouts").json("request")?;
    rollout_from(row, request, status)
}

/// A rollout record from a row holding at least the columns of [`ROLLOUT_META`] but
/// `request`, with the given documents.
pub(crate) fn rollout_from(
    row: &PgRow,
    request: Value,
    status: Value,
) -> Result<RolloutRecord, StoreError> {
    let c = Cols::new(row, "rollouts");
    let (strategy, state) = strategy_and_state(&c)?;
    Ok(RolloutRecord {
        id: c.text("id")?,
        slot: c.slot_name("slot")?,
        strategy,
        state,
        request,
        status,
        revision: c.u64("revision")?,
        stable_version: c.opt_u64("stable_version")?,
        created_at: c.ts("created_at")?,
        updated_at: c.ts("updated_at")?,
    })
}

/// A rollout row's `strategy` and `state` columns.
pub(crate) fn strategy_and_state(
    c: &Cols<'_>,
) -> Result<(DeploymentStrategy, DeploymentState), StoreError> {
    let strategy = c.text("strategy")?;
    let state = c.text("state")?;
    Ok((
        DeploymentStrategy::ALL
            .into_iter()
            .find(|s| s.as_str() == strategy)
            .ok_or_else(|| corrupt("rollouts", "strategy", format!("{strategy:?}")))?,
        DeploymentState::parse(&state)
            .ok_or_else(|| corrupt("rollouts", "state", format!("{state:?}")))?,
    ))
}

/// The columns of a rollout read by [`rollout_with`]: all but its status, which a write is
/// about to replace (reading and decoding the old one would be wasted).
pub(crate) const ROLLOUT_META: &str = "SELECT id, slot, strategy, state, request, revision, \
     stable_version, created_at, updated_at, route FROM rollouts WHERE id = $1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_at_microseconds() {
        let at = actuator_core::audit::truncate_to_micros(Utc::now());
        let s = fmt_ts(at);
        assert!(s.ends_with('Z') && s.len() == "2024-01-01T00:00:00.000000Z".len(), "{s}");
        let back = DateTime::parse_from_rfc3339(&s).unwrap().with_timezone(&Utc);
        assert_eq!(back, at);
    }

    #[test]
    fn integer_conversions() {
        assert_eq!(to_i64(5), Some(5));
        assert_eq!(to_i64(u64::MAX), None);
        assert_eq!(to_i64_saturating(u64::MAX), i64::MAX);
        assert!(to_i64_checked(u64::MAX, "version").is_err());
    }

    #[test]
    fn strategies_have_distinct_string_forms() {
        for s in DeploymentStrategy::ALL {
            let json = serde_json::to_value(s).unwrap();
            assert_eq!(json, s.as_str(), "the stored form is the JSON form");
        }
    }
}
