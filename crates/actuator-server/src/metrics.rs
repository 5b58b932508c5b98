//! `GET /metrics`: Prometheus text format.
//!
//! Counters and histograms are recorded where things happen, through the `metrics` facade
//! (the engine: decisions, rollbacks, observations, control-loop passes; the SQLite store:
//! commits; this crate: HTTP requests and resolutions) and rendered by the Prometheus
//! exporter. The per-rollout gauges are computed from the engine at each scrape, so a
//! finished rollout's series disappear with it.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;
use crate::error::ApiError;

/// Histogram buckets, in seconds, for latencies from sub-millisecond to a minute.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder for the process (once; later calls return the same
/// handle). `None` when another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let built = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .and_then(PrometheusBuilder::install_recorder);
            match built {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "the Prometheus recorder could not be installed; /metrics answers 503");
                    None
                }
            }
        })
        .as_ref()
}

/// Records each request's duration by method, route (as registered) and status.
pub(crate) async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics::histogram!(
        "actuator_http_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => resp.status().as_str().to_owned(),
    )
    .record(started.elapsed().as_secs_f64());
    resp
}

/// Counts a resolution by API and variant.
pub(crate) fn resolved(api: &'static str, variant: &str) {
    metrics::counter!("actuator_resolutions_total", "api" => api, "variant" => variant.to_owned())
        .increment(1);
}

/// A label value as Prometheus's text format wants it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A per-rollout gauge's value.
type Gauge = fn(&actuator_engine::RolloutView) -> f64;

/// The gauges of the rollouts the engine drives now.
async fn rollout_gauges(st: &AppState) -> String {
    let mut out = String::new();
    let Some(engine) = st.engine() else { return out };
    let views = engine.active_views().await;
    let mut by: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for v in &views {
        let state = serde_json::to_value(v.state).ok().and_then(|x| x.as_str().map(str::to_owned));
        let strategy =
            serde_json::to_value(v.strategy).ok().and_then(|x| x.as_str().map(str::to_owned));
        *by.entry((state.unwrap_or_default(), strategy.unwrap_or_default())).or_default() += 1;
    }
    out.push_str("# HELP actuator_rollouts Rollouts the engine drives now, by state and strategy.\n# TYPE actuator_rollouts gauge\n");
    for ((state, strategy), n) in &by {
        let _ = writeln!(
            out,
            "actuator_rollouts{{state=\"{}\",strategy=\"{}\"}} {n}",
            label(state),
            label(strategy)
        );
    }
    let stats = engine.stats();
    out.push_str("# HELP actuator_rollouts_finished Rollouts finished since the store was created, by outcome.\n# TYPE actuator_rollouts_finished gauge\n");
    for (outcome, n) in [
        ("completed", stats.successful_deployments),
        ("failed", stats.failed_deployments),
        ("aborted", stats.aborted_deployments),
    ] {
        let _ = writeln!(out, "actuator_rollouts_finished{{outcome=\"{outcome}\"}} {n}");
    }
    let per_rollout: [(&str, &str, Gauge); 2] = [
        ("actuator_rollout_phase", "Current phase index of each active rollout.", |v| {
            v.phase as f64
        }),
        (
            "actuator_rollout_share_percent",
            "Candidate share of each active rollout, percent.",
            |v| v.share_percent,
        ),
    ];
    for (name, help, value) in per_rollout {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for v in &views {
            let _ = writeln!(
                out,
                "{name}{{rollout=\"{}\",slot=\"{}\"}} {}",
                label(&v.id),
                label(&v.slot),
                value(v)
            );
        }
    }
    out.push_str("# HELP actuator_rollout_log_e ln of the e-value of each compared metric, over the whole rollout (rollback at ln(1/alpha_m)).\n# TYPE actuator_rollout_log_e gauge\n");
    for v in &views {
        for m in &v.metrics {
            if m.log_e_total.is_finite() {
                let _ = writeln!(
                    out,
                    "actuator_rollout_log_e{{rollout=\"{}\",slot=\"{}\",arm=\"{}\",metric=\"{}\"}} {}",
                    label(&v.id),
                    label(&v.slot),
                    label(&m.arm),
                    label(&m.metric),
                    m.log_e_total
                );
            }
        }
    }
    out
}

/// `GET /metrics`.
pub(crate) async fn scrape(State(st): State<AppState>) -> Response {
    let Some(handle) = install() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "another metrics recorder is installed in this process",
        )
        .into_response();
    };
    let mut body = handle.render();
    body.push_str(&rollout_gauges(&st).await);
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
