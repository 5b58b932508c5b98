//! Promotion gates: what a rollout awaits (persisted in its status), the range of every
//! gate field, the JSON payload a gate receives, and the HTTP call itself.
//!
//! The engine never makes a call inside its control pass: a pass that finds a gate due
//! spawns [`call`] on a task of its own, and the answer comes back under the rollout's
//! lock (`engine/gates.rs`).

use actuator_core::gate::limits;
use actuator_core::{DeploymentRequest, GateKind, GateSpec};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::EngineError;

/// How one call of a gate ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GateOutcome {
    /// A 2xx answer: the gate allows.
    Allowed,
    /// Any other status.
    Refused,
    /// No answer within the gate's `timeout_ms`.
    Timeout,
    /// No answer at all (connection refused, DNS, TLS, an unset secret).
    Error,
}

/// One answer of a gate, as audited and shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GateAnswer {
    /// The gate's name.
    pub gate: String,
    /// Its kind.
    pub kind: GateKind,
    /// How the call ended.
    pub outcome: GateOutcome,
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// Milliseconds from sending to the answer (or the timeout).
    pub latency_ms: u64,
    /// What went wrong, when the call got no answer.
    pub error: Option<String>,
    /// When the answer came.
    pub at: DateTime<Utc>,
    /// The attempt, from 1.
    pub attempt: u32,
}

impl GateAnswer {
    /// Whether the gate allows.
    pub fn allowed(&self) -> bool {
        self.outcome == GateOutcome::Allowed
    }

    /// The answer for a person: `HTTP 503`, `timeout after 5000 ms`, `error: ...`.
    pub fn summary(&self) -> String {
        match (self.outcome, self.status) {
            (GateOutcome::Timeout, _) => format!("timeout after {} ms", self.latency_ms),
            (GateOutcome::Error, _) => {
                format!("no answer: {}", self.error.as_deref().unwrap_or("unknown error"))
            }
            (_, Some(s)) => format!("HTTP {s}"),
            (_, None) => "no status".to_owned(),
        }
    }

    /// The answer as audit metadata.
    pub fn audit(&self) -> Value {
        json!({"gate_answer": self})
    }
}

/// A gate the rollout waits for, persisted in its status: a restart asks it again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateWait {
    /// Distinct per wait of the rollout: an answer to an earlier wait is only audited.
    pub id: u64,
    /// The kind of the gates awaited.
    pub kind: GateKind,
    /// Index in the request's `gates` of the gate asked now (gates of a kind are asked in
    /// the request's order, each after the previous allowed).
    pub index: usize,
    /// Its name.
    pub gate: String,
    /// The step a pass enters: 0 for `pre_rollout`, the next step for `confirm_promotion`
    /// (past the last step: completion).
    pub target: usize,
    /// What the analysis decided, for the transition a pass allows.
    pub reason: String,
    /// The winning arm of an A/B test the promotion completes with, if any.
    #[serde(default)]
    pub winner: Option<actuator_health::Arm>,
    /// Since when the rollout waits.
    pub since: DateTime<Utc>,
    /// Calls made to the current gate.
    pub attempts: u32,
    /// When the gate is asked next (the rollout stays where it is meanwhile).
    pub next_try_at: DateTime<Utc>,
    /// The last answer of the current gate.
    pub last: Option<GateAnswer>,
}

impl GateWait {
    /// The wait for a person: `awaiting gate X (kind) since T` or `held by gate X: HTTP 503
    /// at T, next try at T2`.
    pub fn message(&self) -> String {
        match &self.last {
            Some(a) if !a.allowed() => format!(
                "held by gate {}: {} at {}, next try at {}",
                self.gate,
                a.summary(),
                a.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                self.next_try_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
            _ => format!(
                "awaiting gate {} ({}) since {}",
                self.gate,
                self.kind.as_str(),
                self.since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
        }
    }
}

/// What the API shows of a gate wait.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GateView {
    /// The gate asked now.
    pub gate: String,
    /// Its kind.
    pub kind: GateKind,
    /// See [`GateWait::message`].
    pub message: String,
    /// Since when the rollout waits.
    pub since: DateTime<Utc>,
    /// Calls made to the gate.
    pub attempts: u32,
    /// When it is asked next.
    pub next_try_at: DateTime<Utc>,
    /// Its last answer.
    pub last: Option<GateAnswer>,
}

impl From<&GateWait> for GateView {
    fn from(w: &GateWait) -> Self {
        Self {
            gate: w.gate.clone(),
            kind: w.kind,
            message: w.message(),
            since: w.since,
            attempts: w.attempts,
            next_try_at: w.next_try_at,
            last: w.last.clone(),
        }
    }
}

/// The gates of `req` of kind `kind`, with their indices, in the request's order.
pub(crate) fn of_kind(req: &DeploymentRequest, kind: GateKind) -> Vec<(usize, &GateSpec)> {
    req.gates.iter().enumerate().filter(|(_, g)| g.kind == kind).collect()
}

/// The first gate of `kind` after index `after` (or from the start).
pub(crate) fn next_of_kind(
    req: &DeploymentRequest,
    kind: GateKind,
    after: Option<usize>,
) -> Option<(usize, &GateSpec)> {
    of_kind(req, kind).into_iter().find(|(i, _)| after.is_none_or(|a| *i > a))
}

fn out_of_range(field: String, range: &str, got: impl std::fmt::Display) -> EngineError {
    EngineError::OutOfRange { field, range: range.to_owned(), got: got.to_string() }
}

/// Checks every gate of `req` against its range: at most [`limits::MAX_GATES`] gates, unique
/// names of 1 to 64 characters, `http`/`https` URLs of at most 2048 bytes with a host,
/// `timeout_ms` 100 to 60,000, `retry_ms` 100 to 3,600,000, `secret_env` a variable name
/// that `env` finds set and non-empty.
///
/// # Errors
/// [`EngineError::OutOfRange`] naming the first field outside its range (`gates[1].url`).
pub(crate) fn check(
    req: &DeploymentRequest,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), EngineError> {
    if req.gates.len() > limits::MAX_GATES {
        return Err(out_of_range(
            "gates".into(),
            &format!("at most {} gates", limits::MAX_GATES),
            format!("{} gates", req.gates.len()),
        ));
    }
    for (i, g) in req.gates.iter().enumerate() {
        let f = |name: &str| format!("gates[{i}].{name}");
        let name_ok = !g.name.is_empty()
            && g.name.len() <= limits::MAX_NAME_BYTES
            && g.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err(out_of_range(
                f("name"),
                "1 to 64 characters of letters, digits, '-', '_' or '.'",
                format!("{:?}", g.name.chars().take(80).collect::<String>()),
            ));
        }
        if req.gates[..i].iter().any(|o| o.name == g.name) {
            return Err(out_of_range(f("name"), "a name no other gate has", &g.name));
        }
        if g.url.len() > limits::MAX_URL_BYTES {
            return Err(out_of_range(
                f("url"),
                &format!("at most {} bytes", limits::MAX_URL_BYTES),
                format!("{} bytes", g.url.len()),
            ));
        }
        match reqwest::Url::parse(&g.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            Ok(u) => {
                return Err(out_of_range(
                    f("url"),
                    "an http or https URL with a host",
                    format!("scheme {:?}", u.scheme()),
                ));
            }
            Err(e) => return Err(out_of_range(f("url"), "an http or https URL", e)),
        }
        let (lo, hi) = limits::TIMEOUT_MS;
        if !(lo..=hi).contains(&g.timeout_ms) {
            return Err(out_of_range(f("timeout_ms"), &format!("{lo}..={hi}"), g.timeout_ms));
        }
        let (lo, hi) = limits::RETRY_MS;
        if !(lo..=hi).contains(&g.retry_ms) {
            return Err(out_of_range(f("retry_ms"), &format!("{lo}..={hi}"), g.retry_ms));
        }
        if let Some(var) = &g.secret_env {
            let ok = !var.is_empty()
                && var.len() <= limits::MAX_ENV_BYTES
                && var.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return Err(out_of_range(
                    f("secret_env"),
                    "1 to 128 characters of A-Z, 0-9 and '_'",
                    format!("{:?}", var.chars().take(80).collect::<String>()),
                ));
            }
            if env(var).is_none_or(|v| v.is_empty()) {
                return Err(out_of_range(
                    f("secret_env"),
                    "the name of an environment variable set in the daemon",
                    format!("{var} is not set"),
                ));
            }
        }
    }
    Ok(())
}

/// What a gate is told about the rollout.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CallContext {
    pub(crate) rollout: String,
    pub(crate) slot: String,
    pub(crate) strategy: String,
    pub(crate) state: String,
    pub(crate) phase: usize,
    pub(crate) next_phase: Option<usize>,
    pub(crate) share_percent: f64,
    pub(crate) stable_version: Option<u64>,
    pub(crate) candidate_version: u64,
    pub(crate) decision: Value,
    pub(crate) attempt: u32,
}

/// The JSON body posted to a gate (documented in docs/user-guide.md, "Promotion gates").
pub(crate) fn payload(gate: &GateSpec, ctx: &CallContext, sent_at: DateTime<Utc>) -> Value {
    json!({
        "gate": gate.name,
        "kind": gate.kind,
        "rollout": ctx.rollout,
        "slot": ctx.slot,
        "strategy": ctx.strategy,
        "state": ctx.state,
        "phase": ctx.phase,
        "next_phase": ctx.next_phase,
        "share_percent": ctx.share_percent,
        "versions": {"stable": ctx.stable_version, "candidate": ctx.candidate_version},
        "decision": ctx.decision,
        "attempt": ctx.attempt,
        "sent_at": sent_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

/// The header that names the gate a call is for.
pub const GATE_HEADER: &str = "X-Actuator-Gate";

fn client() -> Option<&'static reqwest::Client> {
    static CLIENT: OnceLock<Option<reqwest::Client>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| tracing::error!(error = %e, "cannot build the gates' HTTP client"))
                .ok()
        })
        .as_ref()
}

/// Posts the payload to `gate` and waits at most its `timeout_ms` for the status; the body of
/// the answer is not read. `env` reads the secret named by `secret_env`.
pub(crate) async fn call(
    gate: &GateSpec,
    ctx: &CallContext,
    now: DateTime<Utc>,
    env: impl Fn(&str) -> Option<String>,
) -> GateAnswer {
    let started = Instant::now();
    let answer = |outcome, status, error: Option<String>, started: Instant| GateAnswer {
        gate: gate.name.clone(),
        kind: gate.kind,
        outcome,
        status,
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        error,
        at: now
            .checked_add_signed(chrono::TimeDelta::from_std(started.elapsed()).unwrap_or_default())
            .unwrap_or(now),
        attempt: ctx.attempt,
    };
    let Some(client) = client() else {
        return answer(GateOutcome::Error, None, Some("no HTTP client".into()), started);
    };
    let body = match serde_json::to_vec(&payload(gate, ctx, now)) {
        Ok(b) => b,
        Err(e) => return answer(GateOutcome::Error, None, Some(e.to_string()), started),
    };
    let ts = now.timestamp().to_string();
    let mut rq = client
        .post(&gate.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(GATE_HEADER, &gate.name)
        .header("X-Actuator-Timestamp", &ts);
    if let Some(var) = &gate.secret_env {
        let Some(secret) = env(var).filter(|s| !s.is_empty()) else {
            return answer(
                GateOutcome::Error,
                None,
                Some(format!("the secret's variable {var} is not set")),
                started,
            );
        };
        let sig = actuator_notifier_http::Signer::new(&secret).sign(&ts, &body);
        rq = rq.header(actuator_notifier_http::SIGNATURE_HEADER, sig);
    }
    let limit = Duration::from_millis(gate.timeout_ms);
    match tokio::time::timeout(limit, rq.body(body).send()).await {
        Err(_) => answer(GateOutcome::Timeout, None, None, started),
        Ok(Err(e)) if e.is_timeout() => answer(GateOutcome::Timeout, None, None, started),
        Ok(Err(e)) => answer(GateOutcome::Error, None, Some(short(&e.to_string())), started),
        Ok(Ok(resp)) => {
            let s = resp.status();
            let outcome = if s.is_success() { GateOutcome::Allowed } else { GateOutcome::Refused };
            answer(outcome, Some(s.as_u16()), None, started)
        }
    }
}

/// An error message cut to a size worth storing.
fn short(s: &str) -> String {
    s.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(gates: Value) -> DeploymentRequest {
        serde_json::from_value(json!({
            "slot": "chat", "candidate": {"version": 2}, "strategy": "canary", "gates": gates
        }))
        .unwrap()
    }

    fn err(gates: Value) -> String {
        check(&req(gates), |v| (v == "SET_SECRET").then(|| "s3cret".to_owned()))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_and_a_valid_gate() {
        let r = req(
            json!([{"name": "load-test", "kind": "pre_rollout", "url": "http://127.0.0.1:9/x"}]),
        );
        let g = &r.gates[0];
        assert_eq!((g.timeout_ms, g.retry_ms), (5_000, 10_000));
        assert_eq!(g.on_failure, actuator_core::GateFailure::Hold);
        check(&r, |_| None).unwrap();
    }

    #[test]
    fn every_field_is_range_checked_and_named() {
        let g = |extra: Value| {
            let mut base = json!({"name": "g", "kind": "confirm_promotion", "url": "https://gate.example.com/ok"});
            if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
                b.extend(e);
            }
            base
        };
        let cases = [
            (json!([g(json!({"name": ""}))]), "gates[0].name"),
            (json!([g(json!({"name": "a b"}))]), "gates[0].name"),
            (json!([g(json!({})), g(json!({}))]), "gates[1].name"),
            (json!([g(json!({"url": "ftp://x/y"}))]), "gates[0].url"),
            (json!([g(json!({"url": "not a url"}))]), "gates[0].url"),
            (json!([g(json!({"url": format!("http://h/{}", "a".repeat(3000))}))]), "gates[0].url"),
            (json!([g(json!({"timeout_ms": 99}))]), "gates[0].timeout_ms"),
            (json!([g(json!({"timeout_ms": 60_001}))]), "gates[0].timeout_ms"),
            (json!([g(json!({"retry_ms": 0}))]), "gates[0].retry_ms"),
            (json!([g(json!({"secret_env": "lower"}))]), "gates[0].secret_env"),
            (json!([g(json!({"secret_env": "UNSET_VAR"}))]), "UNSET_VAR is not set"),
        ];
        for (gates, want) in cases {
            let e = err(gates);
            assert!(e.contains(want), "{want:?} not in {e}");
        }
        let many: Vec<Value> = (0..11).map(|i| g(json!({"name": format!("g{i}")}))).collect();
        assert!(err(Value::Array(many)).contains("at most 10 gates"));
        check(&req(json!([g(json!({"secret_env": "SET_SECRET"}))])), |v| {
            (v == "SET_SECRET").then(|| "x".into())
        })
        .unwrap();
        // An unknown field is refused by the request's parser.
        let bad: Result<DeploymentRequest, _> = serde_json::from_value(json!({
            "slot": "chat", "candidate": {"version": 2}, "strategy": "canary",
            "gates": [g(json!({"secret": "plain"}))]
        }));
        assert!(bad.unwrap_err().to_string().contains("secret"));
    }

    #[test]
    fn the_payload_names_the_gate_the_rollout_and_the_decision() {
        let r = req(json!([{"name": "qa", "kind": "confirm_promotion", "url": "http://h/"}]));
        let ctx = CallContext {
            rollout: "ro-1".into(),
            slot: "chat".into(),
            strategy: "canary".into(),
            state: "monitoring".into(),
            phase: 1,
            next_phase: Some(2),
            share_percent: 5.0,
            stable_version: Some(1),
            candidate_version: 2,
            decision: json!({"kind": "promote", "rule": "sequential", "reasons": ["ok"]}),
            attempt: 3,
        };
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap().to_utc();
        let p = payload(&r.gates[0], &ctx, at);
        assert_eq!(
            p,
            json!({"gate": "qa", "kind": "confirm_promotion", "rollout": "ro-1", "slot": "chat",
                   "strategy": "canary", "state": "monitoring", "phase": 1, "next_phase": 2,
                   "share_percent": 5.0, "versions": {"stable": 1, "candidate": 2},
                   "decision": {"kind": "promote", "rule": "sequential", "reasons": ["ok"]},
                   "attempt": 3, "sent_at": "2026-01-02T03:04:05.000Z"})
        );
    }

    #[test]
    fn a_held_wait_says_by_whom_what_and_when_next() {
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap().to_utc();
        let mut w = GateWait {
            id: 1,
            kind: GateKind::PreRollout,
            index: 0,
            gate: "smoke".into(),
            target: 0,
            reason: "validated".into(),
            winner: None,
            since: at,
            attempts: 0,
            next_try_at: at,
            last: None,
        };
        assert!(
            w.message().starts_with("awaiting gate smoke (pre_rollout) since 2026-01-02T03:04:05")
        );
        w.last = Some(GateAnswer {
            gate: "smoke".into(),
            kind: GateKind::PreRollout,
            outcome: GateOutcome::Refused,
            status: Some(503),
            latency_ms: 3,
            error: None,
            at,
            attempt: 1,
        });
        w.next_try_at = at + chrono::TimeDelta::seconds(10);
        assert_eq!(
            w.message(),
            "held by gate smoke: HTTP 503 at 2026-01-02T03:04:05.000Z, next try at 2026-01-02T03:04:15.000Z"
        );
    }
}
