//! HTTP throughput of OFREP evaluation against a trivial axum handler, both measured with
//! `wrk` on loopback.
//!
//! The actuator runs in-process: the real router over SQLite on a temporary directory, one slot
//! with an active 5% canary rollout (consistent hash) read from a persisted rollout record. The
//! baseline is a bare axum handler answering a fixed small JSON on another port. Both get the
//! same `wrk` script (POST, 1024 distinct targeting keys) with the same connections, on a
//! one-worker runtime, so the ratio isolates what evaluation costs on top of axum itself.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use actuator_canary::{Rollout, Share, VersionedConfig};
use actuator_config::{ApplyRequest, ConfigManager, ConfigSettings};
use actuator_core::{
    AuditDraft, DeploymentState, DeploymentStrategy, NewRollout, NewSlot, SlotName, Store,
};
use actuator_server::AppState;
use actuator_store_sqlite::SqliteStore;
use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::routing::post;
use serde_json::json;
use tokio::net::TcpListener;

use crate::Options;
use crate::table::{Limit, Row, Table};

const SLOT: &str = "llm.chat.default";
/// The OFREP single-flag throughput must be at least this share of the bare handler's.
const TARGET_RATIO: f64 = 0.7;
const CONNECTIONS: u32 = 16;

/// Cycles 1024 request bodies with distinct targeting keys.
const SCRIPT: &str = r#"
local bodies = {}
for i = 0, 1023 do
  bodies[i] = string.format('{"context":{"targetingKey":"user-%08x","region":"eu-west"}}', i)
end
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, bodies[n % 1024])
end
"#;

/// A small fixed answer, about the size of an OFREP evaluation.
const FIXED: &str = r#"{"key":"llm.chat.default","value":{"model":"big","temperature":0.2,"max_tokens":1024,"prompt":"v3"},"reason":"SPLIT","variant":"stable","metadata":{"configVersion":1,"rolloutId":"rollout-0190c0de","phase":1,"bucket":4242}}"#;

/// Adds the HTTP rows to `table`; skips them (with a note) when `wrk` is missing.
pub(crate) fn run(opts: &Options, table: &mut Table) {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!(
            "http: `wrk` not found (apt-get install wrk; `cargo xtask bench` installs it): skipping the HTTP rows"
        );
        return;
    }
    if let Err(e) = measure(opts, table) {
        eprintln!("http: benchmark failed: {e:#}");
        table.push(Row::new(format!("http: failed ({e})"), f64::NAN, "req/s"));
    }
}

fn measure(opts: &Options, table: &mut Table) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("building the server runtime")?;
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let (actuator, baseline) = rt.block_on(start(&dir.path().join("actuator.db")))?;
    let script = dir.path().join("post.lua");
    std::fs::write(&script, SCRIPT).context("writing the wrk script")?;
    let (secs, rounds) = if opts.quick { (3, 3) } else { (5, 5) };
    let resolve_script = dir.path().join("resolve.lua");
    std::fs::write(&resolve_script, resolve_script_for(SLOT)).context("writing the wrk script")?;
    let targets = [
        (&script, format!("http://{baseline}/")),
        (&script, format!("http://{actuator}/ofrep/v1/evaluate/flags/{SLOT}")),
        (&script, format!("http://{actuator}/ofrep/v1/evaluate/flags")),
        (&resolve_script, format!("http://{actuator}/v1/resolve")),
    ];
    // Warm up (connections, allocator, caches), then alternate the targets round after round
    // and keep each one's best: other load on the machine only ever lowers a throughput.
    for (s, url) in &targets {
        wrk(s, url, 1)?;
    }
    let mut best = [0.0f64; 4];
    for _ in 0..rounds {
        for (b, (s, url)) in best.iter_mut().zip(&targets) {
            *b = b.max(wrk(s, url, secs)?);
        }
    }
    let [bare, single, bulk, resolve] = best;

    let label = format!("wrk -t1 -c{CONNECTIONS} -d{secs}s, best of {rounds}");
    table.push(Row::new(
        format!("http: baseline, bare axum handler with a fixed JSON ({label})"),
        bare,
        "req/s",
    ));
    table.push(
        Row::new(format!("http: OFREP single flag, 5% canary rollout ({label})"), single, "req/s")
            .baseline(bare)
            .target(Limit::RatioAtLeast(TARGET_RATIO)),
    );
    table.push(
        Row::new(format!("http: OFREP bulk, 1 flag ({label})"), bulk, "req/s").baseline(bare),
    );
    table.push(
        Row::new(format!("http: POST /v1/resolve, single ({label})"), resolve, "req/s")
            .baseline(bare),
    );
    rt.shutdown_background();
    Ok(())
}

/// The `wrk` script of `POST /v1/resolve` on `slot` with 1024 distinct targeting keys.
pub(crate) fn resolve_script_for(slot: &str) -> String {
    SCRIPT.replace(r#"'{"context":"#, &format!(r#"'{{"slot":"{slot}","context":"#))
}

/// Runs `wrk` and returns its requests per second; fails on errors or non-2xx answers.
pub(crate) fn wrk(script: &Path, url: &str, secs: u32) -> anyhow::Result<f64> {
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{CONNECTIONS}"), &format!("-d{secs}s"), "-s"])
        .arg(script)
        .arg(url)
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed on {url}: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk saw failed requests on {url}:\n{text}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))
}

/// Starts the actuator (with its persisted canary rollout) and the baseline handler.
async fn start(db: &Path) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(db).await?);
    let config = ConfigManager::new(store.clone(), vec![], ConfigSettings::default());
    let slot = SlotName::new(SLOT)?;
    config
        .create_slot(
            NewSlot { name: slot.clone(), description: String::new(), schema: None },
            "bench",
        )
        .await?;
    let doc = |model: &str| json!({"model": model, "temperature": 0.2, "max_tokens": 1024, "prompt": "v3"});
    for (model, activate) in [("big", true), ("small", false)] {
        config
            .apply(ApplyRequest {
                slot: slot.clone(),
                document: doc(model),
                actor: "bench".into(),
                message: String::new(),
                dry_run: false,
                activate,
                expected_latest: None,
            })
            .await?;
    }
    let route = Rollout::canary("rollout-0190c0de", VersionedConfig::new(2, doc("small")))
        .with_share(Share::from_basis_points(500)?)
        .with_phase(1);
    store
        .create_rollout(
            NewRollout {
                id: "rollout-0190c0de".into(),
                slot,
                strategy: DeploymentStrategy::Canary,
                state: DeploymentState::Monitoring,
                request: json!({}),
                status: json!({"route": route}),
                admission: Default::default(),
            },
            AuditDraft::success("bench", "rollout.create", SLOT),
        )
        .await?;
    let state = AppState::load(config).await?;
    if state.routes().snapshot().get(SLOT).and_then(|r| r.rollout.as_ref()).is_none() {
        bail!("the persisted rollout was not routed");
    }

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let actuator = listener.local_addr()?;
    tokio::spawn(actuator_server::serve(listener, state, std::future::pending()));

    let bare = axum::Router::new()
        .route("/", post(|_body: Bytes| async { ([(CONTENT_TYPE, "application/json")], FIXED) }));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let baseline = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, bare).await });
    Ok((actuator, baseline))
}
