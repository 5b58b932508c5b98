//! Rollouts fed by a metric source: one poller task per such rollout reads its queries every
//! `metrics.interval_ms`, turns the deltas into observations ([`crate::metric_feed`]) and
//! records them through [`Engine::report`] (the durable ingestion path, at the current
//! step). A look that misses data holds promotion; `missing_limit` such looks in a row halt
//! the rollout. The pollers run on their own tasks: the control pass never waits for a
//! query, it only reads whether the rollout's promotion is held.

use super::*;
use crate::metric_feed::{self, ArmDelta, ArmReading, MetricFeedView, MissingData};
use actuator_core::metric_query::{QueryVars, le_label, render};
use actuator_core::{MetricSource, MetricsSpec};
use actuator_health::AnalysisMode;
use std::collections::BTreeMap;
use std::sync::Weak;

/// How often the supervisor looks for rollouts that need a poller (ms).
const SUPERVISE_MS: u64 = 250;
/// Queries of one look in flight at once: a look of many arms and bounds never sends the
/// source more than this many at a time.
const MAX_CONCURRENT_QUERIES: usize = 8;
/// The longest a look's queries may take together, whatever the source's own timeout.
const LOOK_DEADLINE: Duration = Duration::from_secs(60);

/// The metric sources and the state of every poller.
#[derive(Default)]
pub(crate) struct Feeds {
    sources: RwLock<BTreeMap<String, Arc<dyn MetricSource>>>,
    views: StdMutex<HashMap<String, MetricFeedView>>,
    supervisor: StdMutex<Option<tokio::task::JoinHandle<()>>>,
}

/// One arm as its queries see it.
struct ArmTarget {
    arm: Arm,
    name: String,
    version: u64,
}

/// What a look needs of the rollout, read under its lock.
struct Target {
    state: DeploymentState,
    step: usize,
    slot: String,
    arms: Vec<ArmTarget>,
}

/// The name resolve gives an arm (`stable` for the control).
fn arm_name(arm: &Arm) -> String {
    match arm {
        Arm::Control => "stable".into(),
        other => other.label().to_owned(),
    }
}

impl Engine {
    /// Sets the metric sources rollouts may name in `metrics.source` (before
    /// [`Engine::start`]; sources set later serve rollouts admitted later).
    pub fn set_metric_sources(&self, sources: BTreeMap<String, Arc<dyn MetricSource>>) {
        *self.inner.feeds.sources.write().unwrap_or_else(|p| p.into_inner()) = sources;
    }

    /// The names of the metric sources.
    pub fn metric_source_names(&self) -> Vec<String> {
        self.inner.feeds.sources.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    fn metric_source(&self, name: &str) -> Option<Arc<dyn MetricSource>> {
        self.inner.feeds.sources.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// Admission's check of `metrics`: the named source exists and the strategy analyses.
    pub(super) fn check_metric_feed(&self, req: &DeploymentRequest) -> Result<(), EngineError> {
        let Some(m) = &req.metrics else { return Ok(()) };
        if req.strategy == DeploymentStrategy::Immediate {
            return Err(EngineError::Invalid(
                "metrics: an immediate rollout has no analysis to feed; use canary, rolling, blue_green, shadow or ab_test".into(),
            ));
        }
        if self.metric_source(&m.source).is_none() {
            let names = self.metric_source_names();
            return Err(EngineError::Invalid(format!(
                "metrics.source: no metric source named {:?}; configured: {}",
                m.source,
                if names.is_empty() { "none".to_owned() } else { names.join(", ") }
            )));
        }
        Ok(())
    }

    /// The feed of rollout `id`, when it has one.
    pub(super) fn feed_view(&self, id: &str) -> Option<MetricFeedView> {
        lock(&self.inner.feeds.views).get(id).cloned()
    }

    /// Why promotion of `rt` is held by its metric feed, if it is: the feed has not read the
    /// current step yet, or its last look missed data.
    pub(super) fn feed_hold(&self, rt: &Runtime) -> Option<String> {
        rt.req.metrics.as_ref()?;
        let views = lock(&self.inner.feeds.views);
        let Some(v) = views.get(&rt.rec.id) else {
            return Some("promotion held: the metric feed has not looked yet".into());
        };
        if let Some(m) = &v.missing {
            return Some(format!(
                "promotion held: metric data missing since {} ({} of {} looks): {} query for {} ({}): {}",
                m.since.to_rfc3339(),
                m.looks,
                m.limit,
                m.field,
                m.arm,
                m.query,
                m.error
            ));
        }
        (v.step_read != Some(rt.st.step)).then(|| {
            format!("promotion held: the metric feed has not read step {} yet", rt.st.step)
        })
    }

    /// Starts the supervisor that gives every active rollout with `metrics` its poller.
    pub(super) fn start_feeds(&self) {
        let mut sup = lock(&self.inner.feeds.supervisor);
        if sup.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        *sup = Some(tokio::spawn(supervise(weak)));
    }

    /// The rollout as a look needs it, or `None` when it is gone.
    async fn feed_target(&self, id: &str) -> Option<(Target, MetricsSpec)> {
        let rt = self.runtime(id)?;
        let g = rt.lock().await;
        let spec = g.req.metrics.clone()?;
        let health = g.st.health.as_ref();
        let no_control = health.is_some_and(|h| matches!(h.mode(), AnalysisMode::NoControl));
        let arms = health
            .map(|h| h.arms())
            .unwrap_or_default()
            .iter()
            .filter(|a| !(no_control && **a == Arm::Control))
            .map(|a| {
                let version = match a {
                    Arm::Control => g.st.stable_version.unwrap_or(0),
                    Arm::Named(n) => {
                        g.st.settings
                            .arms
                            .iter()
                            .find(|s| &s.name == n)
                            .map_or(g.st.candidate_version, |s| s.version)
                    }
                    _ => g.st.candidate_version,
                };
                ArmTarget { arm: a.clone(), name: arm_name(a), version }
            })
            .collect();
        let target =
            Target { state: g.rec.state, step: g.st.step, slot: g.rec.slot.to_string(), arms };
        Some((target, spec))
    }

    /// Makes the control loop look at `id` on its next pass (its feed's hold changed).
    async fn feed_changed(&self, id: &str) {
        if let Some(rt) = self.runtime(id) {
            rt.lock().await.fresh = true;
            self.wake_rollout(id);
            self.wake();
        }
    }

    /// Halts `id` for missing data: a pause with the reason, audited, when it is monitored.
    async fn halt_for_missing(&self, id: &str, reason: &str) -> Result<bool, EngineError> {
        let Some(rt) = self.runtime(id) else { return Ok(false) };
        let mut g = rt.lock().await;
        if g.rec.state != DeploymentState::Monitoring {
            return Ok(false);
        }
        self.pause(&mut g, reason, "engine").await?;
        self.wake_rollout(id);
        Ok(true)
    }
}

/// Gives each active rollout with `metrics` a poller, until the engine stops or is dropped.
async fn supervise(weak: Weak<Inner>) {
    let mut pollers: HashMap<String, Option<tokio::task::JoinHandle<()>>> = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(SUPERVISE_MS)).await;
        let Some(inner) = weak.upgrade() else { return };
        let engine = Engine::from_inner(inner);
        if engine.inner.stopping.load(Ordering::SeqCst) {
            for h in pollers.into_values().flatten() {
                h.abort();
            }
            return;
        }
        // Under the map's read lock: drop what left it, and take only the rollouts that have
        // no poller yet (or whose poller ended): a pass allocates nothing for the others.
        let fresh: Vec<(String, Shared)> = {
            let map = engine.inner.runtimes.read().unwrap_or_else(|p| p.into_inner());
            pollers.retain(|id, _| map.contains(id));
            lock(&engine.inner.feeds.views).retain(|id, _| map.contains(id));
            map.by_id
                .iter()
                .filter(|(id, _)| {
                    pollers.get(*id).is_none_or(|h| h.as_ref().is_some_and(|h| h.is_finished()))
                })
                .map(|(id, e)| (id.clone(), e.rt.clone()))
                .collect()
        };
        for (id, rt) in fresh {
            let spec = rt.lock().await.req.metrics.clone();
            let handle = spec.map(|spec| {
                let source = engine.metric_source(&spec.source);
                tokio::spawn(poll(Arc::downgrade(&engine.inner), id.clone(), spec, source))
            });
            pollers.insert(id, handle);
        }
    }
}

/// One query's answer, as a look needs it.
type Answer = Result<f64, String>;

async fn ask(source: &dyn MetricSource, query: &str) -> Answer {
    match source.query_scalar(query).await {
        Ok(Some(v)) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(Some(v)) => Err(format!("returned {v}; a counter is a finite number at least 0")),
        Ok(None) => Err("returned no data".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A query of a look: the arm, the field, the text.
struct Query {
    arm: usize,
    field: &'static str,
    text: String,
}

/// The queries of a look, arm by arm: requests, errors, then each bucket and `+Inf`.
fn queries(spec: &MetricsSpec, rollout: &str, t: &Target) -> Result<Vec<Query>, String> {
    let mut out = Vec::new();
    let les: Vec<String> = spec
        .latency_buckets_ms
        .iter()
        .map(|b| le_label(*b, spec.latency_unit))
        .chain(std::iter::once("+Inf".to_owned()))
        .collect();
    for (i, a) in t.arms.iter().enumerate() {
        let vars = QueryVars { arm: &a.name, slot: &t.slot, rollout, version: a.version };
        out.push(Query { arm: i, field: "requests", text: render(&spec.requests, &vars, None)? });
        out.push(Query { arm: i, field: "errors", text: render(&spec.errors, &vars, None)? });
        for le in &les {
            out.push(Query {
                arm: i,
                field: "latency_bucket",
                text: render(&spec.latency_bucket, &vars, Some(le))?,
            });
        }
    }
    Ok(out)
}

/// What a poller remembers between looks.
struct PollState {
    /// The step and the readings of the last complete look of that step.
    base: Option<(usize, Vec<ArmReading>)>,
    /// When the current run of missing looks began, and its length.
    missing: Option<(DateTime<Utc>, u32)>,
    looks: u64,
}

/// Reads the queries of rollout `id` every `spec.interval_ms` while it is monitored, until it
/// leaves the engine or the engine stops.
async fn poll(
    weak: Weak<Inner>,
    id: String,
    spec: MetricsSpec,
    source: Option<Arc<dyn MetricSource>>,
) {
    // Request ids of this poller: unique across pollers of the rollout (a restart), so the
    // analysis's de-duplication never takes one look's requests for another's.
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let mut st = PollState { base: None, missing: None, looks: 0 };
    {
        let Some(inner) = weak.upgrade() else { return };
        lock(&inner.feeds.views).insert(
            id.clone(),
            MetricFeedView {
                source: spec.source.clone(),
                looks: 0,
                last_look_at: None,
                fed_requests: 0,
                capped_looks: 0,
                step_read: None,
                missing: None,
            },
        );
    }
    loop {
        tokio::time::sleep(Duration::from_millis(spec.interval_ms)).await;
        let Some(inner) = weak.upgrade() else { return };
        let engine = Engine::from_inner(inner);
        if engine.inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Some((target, _)) = engine.feed_target(&id).await else { return };
        match target.state {
            DeploymentState::RollingOut | DeploymentState::Monitoring | DeploymentState::Paused => {
            }
            // A rollback counts the stable arm's posted outcomes only, and an ended rollout
            // takes none: wait until it leaves the engine (or is retried, when the first look
            // takes the counters' values again).
            _ => {
                st.base = None;
                continue;
            }
        }
        st.looks += 1;
        if let Err(e) = look(&engine, &id, &spec, source.as_ref(), &target, &nonce, &mut st).await {
            tracing::warn!(rollout = %id, error = %e, "metric feed: recording a look failed");
        }
    }
}

/// One look: query, then feed the deltas or count the look as missing data.
async fn look(
    engine: &Engine,
    id: &str,
    spec: &MetricsSpec,
    source: Option<&Arc<dyn MetricSource>>,
    target: &Target,
    nonce: &str,
    st: &mut PollState,
) -> Result<(), EngineError> {
    let now = engine.now();
    let qs = queries(spec, id, target).map_err(EngineError::Invalid)?;
    let gap: Option<(usize, &'static str, String, String)> = match source {
        None => Some((
            0,
            "source",
            String::new(),
            format!("no metric source named {:?} is configured", spec.source),
        )),
        Some(src) => {
            use futures::StreamExt;
            // Each query owns what it needs, so the look's future stays `Send`.
            let calls: Vec<_> = qs
                .iter()
                .map(|q| {
                    let (src, text) = (Arc::clone(src), q.text.clone());
                    async move { ask(src.as_ref(), &text).await }
                })
                .collect();
            let asked =
                futures::stream::iter(calls).buffered(MAX_CONCURRENT_QUERIES).collect::<Vec<_>>();
            match tokio::time::timeout(LOOK_DEADLINE, asked).await {
                Err(_) => Some((
                    0,
                    "queries",
                    String::new(),
                    format!("the look's queries took over {} s", LOOK_DEADLINE.as_secs()),
                )),
                Ok(answers) => {
                    let bad = qs.iter().zip(&answers).find_map(|(q, a)| {
                        a.as_ref().err().map(|e| (q.arm, q.field, q.text.clone(), e.clone()))
                    });
                    match bad {
                        Some(b) => Some(b),
                        None => {
                            let values: Vec<f64> = answers.into_iter().flatten().collect();
                            let readings = readings(&values, target.arms.len(), spec);
                            // A gap of the histogram names the arm's `+Inf` bucket query.
                            feed(engine, id, spec, target, nonce, st, readings).await?.map(
                                |(arm, field, _, error)| {
                                    let q = qs
                                        .iter()
                                        .rfind(|q| q.arm == arm && q.field == field)
                                        .map_or_else(String::new, |q| q.text.clone());
                                    (arm, field, q, error)
                                },
                            )
                        }
                    }
                }
            }
        }
    };
    let before = hold_state(engine, id);
    update_view(engine, id, |v| {
        v.looks = v.looks.saturating_add(1);
        v.last_look_at = Some(now);
    });
    let missed = gap.is_some();
    match gap {
        None => {
            st.missing = None;
            update_view(engine, id, |v| {
                v.missing = None;
                v.step_read = Some(target.step);
            });
        }
        Some((arm, field, query, error)) => {
            let (since, n) = st.missing.map_or((now, 1), |(s, n)| (s, n.saturating_add(1)));
            st.missing = Some((since, n));
            let arm_name = target.arms.get(arm).map_or_else(String::new, |a| a.name.clone());
            let m = MissingData {
                arm: arm_name,
                field: field.into(),
                query,
                error,
                since,
                looks: n,
                limit: spec.missing_limit,
            };
            tracing::warn!(rollout = %id, field = %m.field, arm = %m.arm, query = %m.query,
                error = %m.error, looks = n, "metric feed: missing data");
            let reason = format!(
                "metric data missing for {n} looks in a row (limit {}), since {}: {} query for {} ({}): {}",
                spec.missing_limit,
                since.to_rfc3339(),
                m.field,
                m.arm,
                m.query,
                m.error
            );
            update_view(engine, id, |v| v.missing = Some(m));
            if n >= spec.missing_limit && engine.halt_for_missing(id, &reason).await? {
                // The run of missing looks starts over: a person who resumes gets another
                // `missing_limit` looks before the next halt.
                st.missing = Some((since, 0));
            }
        }
    }
    // What holds promotion changed (or its reason did): the control loop looks again now,
    // not at its next idle look.
    if missed || hold_state(engine, id) != before {
        engine.feed_changed(id).await;
    }
    Ok(())
}

/// What of a feed's status holds promotion: missing data, and the step it read.
fn hold_state(engine: &Engine, id: &str) -> (bool, Option<usize>) {
    lock(&engine.inner.feeds.views)
        .get(id)
        .map_or((false, None), |v| (v.missing.is_some(), v.step_read))
}

fn update_view(engine: &Engine, id: &str, f: impl FnOnce(&mut MetricFeedView)) {
    if let Some(v) = lock(&engine.inner.feeds.views).get_mut(id) {
        f(v);
    }
}

/// The answers of a look, arm by arm, in the order [`queries`] asked them.
fn readings(values: &[f64], arms: usize, spec: &MetricsSpec) -> Vec<ArmReading> {
    let per = 3 + spec.latency_buckets_ms.len();
    (0..arms)
        .map(|i| {
            let v = &values[i * per..(i + 1) * per];
            ArmReading { requests: v[0], errors: v[1], buckets: v[2..].to_vec() }
        })
        .collect()
}

/// Feeds the deltas since the last look of the step; `Some` names a gap (successes without
/// a latency) that makes the look one with missing data.
#[allow(clippy::too_many_arguments)]
async fn feed(
    engine: &Engine,
    id: &str,
    spec: &MetricsSpec,
    target: &Target,
    nonce: &str,
    st: &mut PollState,
    readings: Vec<ArmReading>,
) -> Result<Option<(usize, &'static str, String, String)>, EngineError> {
    // The first look of a step only takes the counters' values: requests served before the
    // step's split belong to no arm of its comparison.
    let prev = match &st.base {
        Some((step, prev)) if *step == target.step && prev.len() == readings.len() => prev,
        _ => {
            st.base = Some((target.step, readings));
            return Ok(None);
        }
    };
    let mut deltas: Vec<ArmDelta> =
        prev.iter().zip(&readings).map(|(p, n)| metric_feed::delta(p, n)).collect();
    let capped = metric_feed::cap_deltas(&mut deltas, spec.max_requests_per_look);
    let phase = u32::try_from(target.step).unwrap_or(u32::MAX);
    let mut obs = Vec::new();
    for (i, (a, d)) in target.arms.iter().zip(&deltas).enumerate() {
        let prefix = format!("metric-feed.{nonce}.{}.{i}", st.looks);
        match metric_feed::observations(id, &a.arm, d, &spec.latency_buckets_ms, phase, &prefix) {
            Ok(mut o) => obs.append(&mut o),
            Err(metric_feed::FeedGap::NoLatency { ok }) => {
                return Ok(Some((
                    i,
                    "latency_bucket",
                    String::new(),
                    format!(
                        "the histogram counted no request while {ok} requests succeeded; no latency to record"
                    ),
                )));
            }
        }
    }
    let n = obs.len() as u64;
    if n > 0 {
        let report = engine.report(obs).await?;
        if report.rejected > 0 {
            tracing::warn!(rollout = %id, rejected = report.rejected,
                first = ?report.results.first(), "metric feed: observations refused");
        }
    }
    // Only a look that was recorded moves the base: a failed write is read again next time.
    st.base = Some((target.step, readings));
    update_view(engine, id, |v| {
        v.fed_requests = v.fed_requests.saturating_add(n);
        v.capped_looks += u64::from(capped);
    });
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actuator_config::ConfigSettings;
    use actuator_core::testing::MemoryStore;
    use actuator_core::{NewSlot, PluginError};
    use actuator_health::{Observation, Outcome};

    /// A source whose every query answers `value` (`None`: no data).
    struct Fixed(StdMutex<Option<f64>>);

    #[async_trait]
    impl MetricSource for Fixed {
        async fn query_scalar(&self, _: &str) -> Result<Option<f64>, PluginError> {
            Ok(*lock(&self.0))
        }
    }

    struct NoRoutes;
    #[async_trait]
    impl RouteSink for NoRoutes {
        async fn refresh_slot(&self, _: &SlotName) {}
    }

    async fn engine(source: Arc<Fixed>) -> Engine {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let config = ConfigManager::new(store, vec![], ConfigSettings::default());
        let slot = SlotName::new("chat").unwrap();
        config
            .create_slot(
                NewSlot { name: slot.clone(), description: String::new(), schema: None },
                "t",
            )
            .await
            .unwrap();
        for (m, activate) in [("a", true), ("b", false)] {
            config
                .apply(ApplyRequest {
                    slot: slot.clone(),
                    document: json!({"model": m}),
                    actor: "t".into(),
                    message: String::new(),
                    dry_run: false,
                    activate,
                    expected_latest: None,
                })
                .await
                .unwrap();
        }
        let settings =
            EngineSettings { tick_ms: 10, validation_secs: 0, ..EngineSettings::default() };
        let e = Engine::new(config, Arc::new(NoRoutes), vec![], settings);
        let src: Arc<dyn MetricSource> = source;
        e.set_metric_sources(BTreeMap::from([("prom".to_owned(), src)]));
        e.start().await.unwrap();
        e
    }

    fn request(source: &str) -> DeploymentRequest {
        serde_json::from_value(json!({
            "slot": "chat", "candidate": {"version": 2}, "strategy": "canary", "actor": "t",
            "canary": {"phases": [
                {"traffic_percent": 50, "min_samples": 300, "min_duration_secs": 0,
                 "margins": {"errors_abs": 0.02, "latency_ratio": 1.2}},
                {"traffic_percent": 100, "min_samples": 1000000, "min_duration_secs": 0}
            ]},
            "success_criteria": {"alpha": 0.001},
            "metrics": {
                "source": source, "interval_ms": 500, "missing_limit": 1000,
                "requests": "r{a=\"{{arm}}\"}", "errors": "e{a=\"{{arm}}\"}",
                "latency_bucket": "b{a=\"{{arm}}\",le=\"{{le}}\"}", "latency_buckets_ms": [100]
            }
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn an_unknown_source_is_refused_at_admission() {
        let e = engine(Arc::new(Fixed(StdMutex::new(None)))).await;
        let err = e.deploy(request("thanos")).await.unwrap_err().to_string();
        assert!(
            err.contains("metrics.source") && err.contains("\"thanos\"") && err.contains("prom"),
            "{err}"
        );
        let mut immediate = request("prom");
        immediate.strategy = DeploymentStrategy::Immediate;
        let err = e.deploy(immediate).await.unwrap_err().to_string();
        assert!(err.contains("metrics") && err.contains("immediate"), "{err}");
        e.stop().await.unwrap();
    }

    #[tokio::test]
    async fn missing_data_holds_a_promotion_the_evidence_would_make_until_data_returns() {
        let source = Arc::new(Fixed(StdMutex::new(None)));
        let e = engine(source.clone()).await;
        let id = e.deploy(request("prom")).await.unwrap().id;
        // Posted outcomes alone are enough to promote: the same on both arms.
        for batch in 0..6 {
            let obs: Vec<Observation> = (0..1000)
                .map(|i| {
                    let arm = if i % 2 == 0 { Arm::Canary } else { Arm::Control };
                    let n = batch * 1000 + i;
                    let outcome = if (n / 2) % 100 == 0 { Outcome::Error } else { Outcome::Ok };
                    let mut o =
                        Observation::new(id.clone(), format!("r{n}"), arm, outcome).phase(0);
                    o.latency_ms = Some(100.0 + f64::from((n % 7) as u32) * 20.0);
                    o
                })
                .collect();
            e.report(obs).await.unwrap();
        }
        // The feed's queries return nothing: the promotion waits, and the status says why.
        let t0 = Instant::now();
        let held = loop {
            let v = e.view(&id).await.unwrap();
            let reasons =
                v.last_decision.as_ref().map(|d| d.reasons.join("; ")).unwrap_or_default();
            if reasons.contains("promotion held: metric data missing") {
                break v;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "not held: {v:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!((held.state, held.phase), (DeploymentState::Monitoring, 0));
        let m = held.metric_feed.as_ref().and_then(|f| f.missing.clone()).expect("missing data");
        assert_eq!((m.field.as_str(), m.query.as_str()), ("requests", "r{a=\"stable\"}"));
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(e.view(&id).await.unwrap().phase, 0, "still held");
        // The data returns: the next look reads every query, and the promotion goes ahead.
        *lock(&source.0) = Some(0.0);
        let t0 = Instant::now();
        loop {
            let v = e.view(&id).await.unwrap();
            if v.phase == 1 {
                assert!(v.metric_feed.as_ref().is_some_and(|f| f.missing.is_none()), "{v:?}");
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "never promoted: {v:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        e.stop().await.unwrap();
    }

    #[test]
    fn arms_are_queried_by_the_names_resolve_gives_them() {
        assert_eq!(arm_name(&Arm::Control), "stable");
        assert_eq!(arm_name(&Arm::Canary), "canary");
        assert_eq!(arm_name(&Arm::Named("b".into())), "b");
    }
}
