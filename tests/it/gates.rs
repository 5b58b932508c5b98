//! Promotion gates through the real daemon, against webhook receivers on loopback: a
//! `pre_rollout` gate holds all traffic on the stable config until it answers 2xx (also
//! across a SIGKILL), a `confirm_promotion` gate holds a promotion, `on_failure = rollback`
//! rolls back, a hanging gate times out without slowing another rollout, `post_rollback` is
//! told after automatic and manual rollbacks, and every answer is in the audit log.

use actuator_tests::{FAST_ENGINE, TestDaemon, call, http, slot_with_candidate, start_rollout};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
const SECRET: &str = "integration-gate-secret";

/// How a receiver's path answers.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Status(u16),
    /// Never answers.
    Hang,
}

/// One call a receiver took: its path, headers, parsed body and raw body.
type Call = (String, HeaderMap, Value, Bytes);

/// A webhook receiver on loopback: each path answers by its mode (200 when unset), and every
/// call is kept with its headers and body.
#[derive(Clone, Default)]
struct Receiver {
    modes: Arc<Mutex<HashMap<String, Mode>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Receiver {
    async fn start() -> (Self, String) {
        let r = Self::default();
        let app = axum::Router::new().fallback(answer).with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, base)
    }

    fn set(&self, path: &str, mode: Mode) {
        self.modes.lock().unwrap().insert(path.to_owned(), mode);
    }

    fn calls(&self, path: &str) -> Vec<(HeaderMap, Value)> {
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|c| c.0 == path).map(|c| (c.1.clone(), c.2.clone())).collect()
    }

    /// The raw body of the first call to `path`.
    fn first_raw(&self, path: &str) -> Bytes {
        let calls = self.calls.lock().unwrap();
        calls.iter().find(|c| c.0 == path).map(|c| c.3.clone()).unwrap()
    }
}

async fn answer(
    State(r): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let path = uri.path().to_owned();
    let parsed = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.calls.lock().unwrap().push((path.clone(), headers, parsed, body));
    let mode = r.modes.lock().unwrap().get(&path).copied().unwrap_or(Mode::Status(200));
    match mode {
        Mode::Status(s) => StatusCode::from_u16(s).unwrap(),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK
        }
    }
}

async fn setup(c: &reqwest::Client, url: &str, slot: &str) {
    slot_with_candidate(
        c,
        url,
        slot,
        json!({"model": "stable-model"}),
        json!({"model": "candidate-model"}),
    )
    .await;
}

async fn start(c: &reqwest::Client, url: &str, req: Value) -> String {
    start_rollout(c, url, req).await["id"].as_str().unwrap().to_owned()
}

async fn get(c: &reqwest::Client, url: &str, id: &str) -> Value {
    call(c, Method::GET, &format!("{url}/v1/rollouts/{id}"), None).await.1
}

async fn wait_for(
    c: &reqwest::Client,
    url: &str,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = get(c, url, id).await;
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "rollout {id} never got {what}: {v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until(what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !pred() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The versions 200 users are served for `slot`.
async fn served(c: &reqwest::Client, url: &str, slot: &str) -> Vec<u64> {
    let requests: Vec<Value> = (0..200)
        .map(|i| json!({"slot": slot, "context": {"targetingKey": format!("user-{i}")}}))
        .collect();
    let (s, b) =
        call(c, Method::POST, &format!("{url}/v1/resolve"), Some(json!({"requests": requests})))
            .await;
    assert_eq!(s, 200, "{b}");
    b["results"].as_array().unwrap().iter().map(|r| r["config_version"].as_u64().unwrap()).collect()
}

/// The audit entries of rollout `id` that carry a gate's answer.
async fn gate_answers(c: &reqwest::Client, url: &str, id: &str) -> Vec<Value> {
    let (s, b) =
        call(c, Method::GET, &format!("{url}/v1/audit?target={id}&limit=1000&order=asc"), None)
            .await;
    assert_eq!(s, 200, "{b}");
    b["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["metadata"]["gate_answer"].is_object())
        .cloned()
        .collect()
}

fn held(slot: &str, gates: Value) -> Value {
    json!({"slot": slot, "candidate": {"version": 2}, "strategy": "canary",
           "canary": {"phases": [{"traffic_percent": 50, "min_samples": 1000000}]},
           "gates": gates})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_rollout_gate_holds_all_traffic_on_stable_until_it_allows_even_across_a_kill() {
    let (rx, base) = Receiver::start().await;
    rx.set("/pre", Mode::Status(503));
    let tmp = tempfile::tempdir().unwrap();
    let mut d =
        TestDaemon::start_full(tmp.path(), Some(FAST_ENGINE), &[("IT_GATE_SECRET", SECRET)]);
    let c = http();
    setup(&c, &d.url, "chat").await;

    // Bad gates are refused at admission, naming the field, and start nothing.
    for (gate, field) in [
        (
            json!({"name": "pre", "kind": "pre_rollout", "url": format!("{base}/pre"), "timeout_ms": 10}),
            "gates[0].timeout_ms",
        ),
        (
            json!({"name": "pre", "kind": "pre_rollout", "url": "file:///etc/passwd"}),
            "gates[0].url",
        ),
        (
            json!({"name": "pre", "kind": "pre_rollout", "url": format!("{base}/pre"), "secret_env": "IT_UNSET_GATE_SECRET"}),
            "gates[0].secret_env",
        ),
    ] {
        let (s, b) = call(
            &c,
            Method::POST,
            &format!("{}/v1/rollouts", d.url),
            Some(held("chat", json!([gate]))),
        )
        .await;
        assert_eq!(s, 400, "{b}");
        assert!(b.to_string().contains(field), "{field} not in {b}");
    }
    let (_, list) = call(&c, Method::GET, &format!("{}/v1/rollouts", d.url), None).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");

    let gate = json!({"name": "pre", "kind": "pre_rollout", "url": format!("{base}/pre"),
                      "retry_ms": 300, "timeout_ms": 60000, "secret_env": "IT_GATE_SECRET"});
    let id = start(&c, &d.url, held("chat", json!([gate]))).await;
    let v = wait_for(&c, &d.url, &id, "held by the gate", |v| {
        v["gate"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("held by gate pre: HTTP 503 at"))
    })
    .await;
    assert!(v["gate"]["message"].as_str().unwrap().contains("next try at"), "{v:#}");
    assert_eq!((v["state"].as_str(), v["share_percent"].as_f64()), (Some("monitoring"), Some(0.0)));
    assert!(served(&c, &d.url, "chat").await.iter().all(|&v| v == 1), "the candidate got traffic");
    let status = d.cli_ok(&["rollout", "status", &id]);
    assert!(status.contains("gate: held by gate pre: HTTP 503 at"), "{status}");
    // The call is signed and carries the documented payload.
    let (h, p) = rx.calls("/pre")[0].clone();
    assert_eq!(h["x-actuator-gate"], "pre");
    let ts = h["x-actuator-timestamp"].to_str().unwrap();
    let sig = h["x-actuator-signature"].to_str().unwrap();
    let raw = rx.first_raw("/pre");
    assert!(actuator_notifier_http::verify_signature(SECRET, ts, &raw, sig), "bad signature");
    assert_eq!((p["gate"].as_str(), p["kind"].as_str()), (Some("pre"), Some("pre_rollout")));
    assert_eq!((p["rollout"].as_str(), p["slot"].as_str()), (Some(id.as_str()), Some("chat")));
    assert_eq!(p["versions"], json!({"stable": 1, "candidate": 2}));
    assert_eq!(
        (p["phase"].as_u64(), p["next_phase"].as_u64(), p["attempt"].as_u64()),
        (Some(0), Some(0), Some(1))
    );
    // Asked again every 300 ms while it refuses.
    wait_until("a second refusal", || rx.calls("/pre").len() >= 2).await;

    // Killed while a call is in flight (the gate hangs): the answer is lost with the process,
    // and the restarted daemon asks the gate again at once.
    rx.set("/pre", Mode::Hang);
    let before = rx.calls("/pre").len();
    wait_until("a call in flight", || rx.calls("/pre").len() > before).await;
    let in_flight = rx.calls("/pre").len();
    assert!(served(&c, &d.url, "chat").await.iter().all(|&v| v == 1));
    d.kill();
    rx.set("/pre", Mode::Status(200));
    d = TestDaemon::start_full(tmp.path(), Some(FAST_ENGINE), &[("IT_GATE_SECRET", SECRET)]);
    let v =
        wait_for(&c, &d.url, &id, "traffic on the candidate", |v| v["share_percent"] == 50.0).await;
    assert!(v["gate"].is_null(), "{v:#}");
    assert!(rx.calls("/pre").len() > in_flight, "the restart did not ask the gate again");
    let versions = served(&c, &d.url, "chat").await;
    assert!(versions.contains(&2) && versions.contains(&1), "{versions:?}");

    // Every answer is audited (the call cut by the kill never answered): the holds, and the
    // allowing one with the step it opened.
    let calls = rx.calls("/pre").len() - 1;
    let answers = gate_answers(&c, &d.url, &id).await;
    assert_eq!(answers.len(), calls, "{answers:#?}");
    assert!(answers.iter().all(|e| e["actor"] == "gate:pre"), "{answers:#?}");
    let last = answers.last().unwrap();
    assert_eq!(last["action"], "rollout.phase", "{last:#}");
    assert_eq!(last["metadata"]["to"], "rolling_out", "{last:#}");
    assert_eq!(last["metadata"]["gate_answer"]["status"], 200, "{last:#}");
    for e in &answers[..answers.len() - 1] {
        assert_eq!(e["action"], "rollout.gate_held", "{e:#}");
        assert_eq!(e["metadata"]["gate_answer"]["status"], 503, "{e:#}");
        assert!(e["metadata"]["gate_answer"]["latency_ms"].is_u64(), "{e:#}");
    }
}

/// A canary whose phases promote by themselves after 1 s (no traffic, no alarm).
fn promoting(slot: &str, gates: Value) -> Value {
    json!({"slot": slot, "candidate": {"version": 2}, "strategy": "canary",
           "settings": {"inconclusive": "promote_if_no_alarm"},
           "success_criteria": {"min_sample_size": 0},
           "canary": {"phases": [
               {"traffic_percent": 10, "min_samples": 0, "min_duration_secs": 0, "max_duration_secs": 1},
               {"traffic_percent": 100, "min_samples": 0, "min_duration_secs": 0, "max_duration_secs": 1}
           ]},
           "gates": gates})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_promotion_gate_holds_each_promotion_until_it_answers_2xx() {
    let (rx, base) = Receiver::start().await;
    rx.set("/confirm", Mode::Status(503));
    let d = TestDaemon::start_with(FAST_ENGINE);
    let c = http();
    setup(&c, &d.url, "chat").await;
    let gate = json!({"name": "confirm", "kind": "confirm_promotion",
                      "url": format!("{base}/confirm"), "retry_ms": 200});
    let id = start(&c, &d.url, promoting("chat", json!([gate]))).await;
    let v = wait_for(&c, &d.url, &id, "held by the gate", |v| {
        v["gate"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("held by gate confirm: HTTP 503"))
    })
    .await;
    assert_eq!((v["phase"].as_u64(), v["share_percent"].as_f64()), (Some(0), Some(10.0)), "{v:#}");
    // Retried every 200 ms, and never promoted while refused.
    wait_until("three refusals", || rx.calls("/confirm").len() >= 3).await;
    let v = get(&c, &d.url, &id).await;
    assert_eq!((v["phase"].as_u64(), v["state"].as_str()), (Some(0), Some("monitoring")), "{v:#}");
    let (_, p) = rx.calls("/confirm").last().unwrap().clone();
    assert_eq!((p["phase"].as_u64(), p["next_phase"].as_u64()), (Some(0), Some(1)), "{p:#}");
    assert_eq!(p["share_percent"].as_f64(), Some(10.0));
    assert_eq!(p["decision"]["kind"], "inconclusive", "{p:#}");

    // Paused while the gate is pending: the wait stays, and a paused rollout's gate is not
    // asked; a resume asks it again.
    let act = |action: &'static str| {
        let (c, url, id) = (c.clone(), d.url.clone(), id.clone());
        async move {
            call(&c, Method::POST, &format!("{url}/v1/rollouts/{id}/{action}"), Some(json!({})))
                .await
        }
    };
    let (s, b) = act("pause").await;
    assert_eq!(
        (s, b["state"].as_str(), b["gate"]["gate"].as_str()),
        (200, Some("paused"), Some("confirm")),
        "{b}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused_calls = rx.calls("/confirm").len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(rx.calls("/confirm").len(), paused_calls, "a paused rollout's gate was asked");
    let (s, b) = act("resume").await;
    assert_eq!((s, b["phase"].as_u64()), (200, Some(0)), "{b}");
    wait_until("asked again after the resume", || rx.calls("/confirm").len() > paused_calls).await;
    // An operator's promote is a decision of its own: it ends the wait, audited with it.
    let (s, b) = act("promote").await;
    assert_eq!((s, b["phase"].as_u64()), (200, Some(1)), "{b}");
    let (_, audit) =
        call(&c, Method::GET, &format!("{}/v1/audit?target={id}&limit=1000", d.url), None).await;
    let promote = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "rollout.promote")
        .cloned()
        .unwrap();
    assert_eq!(
        promote["metadata"]["gate_cancelled"],
        json!({"gate": "confirm", "kind": "confirm_promotion", "by": "tester"}),
        "{promote:#}"
    );

    // The 100 % phase asks again before completing; allowed, it completes.
    let v = wait_for(&c, &d.url, &id, "held before completing", |v| {
        v["gate"]["message"].as_str().is_some_and(|m| m.starts_with("held by gate confirm"))
    })
    .await;
    assert_eq!((v["phase"].as_u64(), v["share_percent"].as_f64()), (Some(1), Some(100.0)), "{v:#}");
    rx.set("/confirm", Mode::Status(204));
    let v = wait_for(&c, &d.url, &id, "completed", |v| v["state"] == "completed").await;
    assert_eq!(v["outcome"].as_str(), Some("version 2 is now active"), "{v:#}");
    // Every answer is audited (one cut short by the promote comes back later, marked stale).
    let deadline = Instant::now() + WAIT;
    loop {
        let answers = gate_answers(&c, &d.url, &id).await;
        if answers.len() == rx.calls("/confirm").len() {
            let allowed: Vec<&Value> =
                answers.iter().filter(|e| e["metadata"]["gate_answer"]["status"] == 204).collect();
            assert_eq!(allowed.len(), 1, "{answers:#?}");
            assert_eq!(allowed[0]["action"], "rollout.complete", "{answers:#?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} calls, answers: {answers:#?}",
            rx.calls("/confirm").len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_gate_set_to_roll_back_rolls_back_and_post_rollback_gates_are_told() {
    let (rx, base) = Receiver::start().await;
    rx.set("/pre", Mode::Status(500));
    rx.set("/post", Mode::Status(502));
    let d = TestDaemon::start_with(FAST_ENGINE);
    let c = http();
    setup(&c, &d.url, "auto").await;
    setup(&c, &d.url, "manual").await;
    let post = |slot: &str| json!({"name": format!("post-{slot}"), "kind": "post_rollback", "url": format!("{base}/post")});
    let auto = start(&c, &d.url, held("auto", json!([
        {"name": "pre", "kind": "pre_rollout", "url": format!("{base}/pre"), "on_failure": "rollback"},
        post("auto")
    ])))
    .await;
    let v = wait_for(&c, &d.url, &auto, "rolled back", |v| v["state"] == "rolled_back").await;
    assert_eq!(
        v["rollback"]["reason"],
        json!({"kind": "gate", "gate": "pre", "answer": "HTTP 500"}),
        "{v:#}"
    );
    assert!(served(&c, &d.url, "auto").await.iter().all(|&v| v == 1));

    // A manual rollback tells its post_rollback gate too.
    let manual = start(&c, &d.url, held("manual", json!([post("manual")]))).await;
    wait_for(&c, &d.url, &manual, "traffic on the candidate", |v| v["share_percent"] == 50.0).await;
    let (s, b) = call(
        &c,
        Method::POST,
        &format!("{}/v1/rollouts/{manual}/rollback", d.url),
        Some(json!({"reason": "answers got worse"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    wait_for(&c, &d.url, &manual, "rolled back", |v| v["state"] == "rolled_back").await;
    wait_until("both post_rollback calls", || rx.calls("/post").len() >= 2).await;
    let posts = rx.calls("/post");
    let told: Vec<(&str, &str)> = posts
        .iter()
        .map(|(_, p)| (p["rollout"].as_str().unwrap(), p["kind"].as_str().unwrap()))
        .collect();
    assert!(told.contains(&(auto.as_str(), "post_rollback")), "{told:?}");
    assert!(told.contains(&(manual.as_str(), "post_rollback")), "{told:?}");
    assert!(posts.iter().all(|(_, p)| p["state"] == "rolled_back"), "{posts:?}");

    // Every answer audited: the refusal in the rollback's own entry, the post_rollback
    // answers (a 502: outcome failure) in entries of their own.
    let deadline = Instant::now() + WAIT;
    loop {
        let a = gate_answers(&c, &d.url, &auto).await;
        let m = gate_answers(&c, &d.url, &manual).await;
        if a.len() == 2 && m.len() == 1 {
            assert_eq!(a[0]["action"], "rollout.rollback", "{a:#?}");
            assert_eq!(a[0]["metadata"]["gate_answer"]["status"], 500);
            for e in [&a[1], &m[0]] {
                assert_eq!(e["action"], "rollout.gate_answer", "{e:#}");
                assert_eq!(e["outcome"], "failure", "{e:#}");
                assert_eq!(e["metadata"]["gate_answer"]["status"], 502, "{e:#}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "answers not audited: {a:#?} {m:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_gate_times_out_and_holds_without_slowing_another_rollout() {
    let (rx, base) = Receiver::start().await;
    rx.set("/hang", Mode::Hang);
    let d = TestDaemon::start_with(FAST_ENGINE);
    let c = http();
    setup(&c, &d.url, "hung").await;
    setup(&c, &d.url, "free").await;
    let gate = json!({"name": "slow", "kind": "pre_rollout", "url": format!("{base}/hang"),
                      "timeout_ms": 3000, "retry_ms": 100});
    let hung = start(&c, &d.url, held("hung", json!([gate]))).await;
    wait_until("the hanging gate called", || !rx.calls("/hang").is_empty()).await;
    // While its gate hangs, another rollout goes through both phases on its own timers.
    let t0 = Instant::now();
    let free = start(&c, &d.url, promoting("free", json!([]))).await;
    wait_for(&c, &d.url, &free, "completed", |v| v["state"] == "completed").await;
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(10), "the other rollout took {took:?}");
    let v = wait_for(&c, &d.url, &hung, "held by a timeout", |v| {
        v["gate"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("held by gate slow: timeout after"))
    })
    .await;
    assert_eq!((v["state"].as_str(), v["share_percent"].as_f64()), (Some("monitoring"), Some(0.0)));
    let answers = gate_answers(&c, &d.url, &hung).await;
    assert!(!answers.is_empty());
    let a = &answers[0]["metadata"]["gate_answer"];
    assert_eq!((a["outcome"].as_str(), a["status"].as_u64()), (Some("timeout"), None), "{a:#}");
    assert!(a["latency_ms"].as_u64().unwrap() >= 3000, "{a:#}");
    // Paused while a call hangs: its timeout comes back while paused, is audited, and the
    // gate is not asked again until a resume.
    let act = |action: &'static str| {
        let (c, url, id) = (c.clone(), d.url.clone(), hung.clone());
        async move {
            call(&c, Method::POST, &format!("{url}/v1/rollouts/{id}/{action}"), Some(json!({})))
                .await
        }
    };
    let n = rx.calls("/hang").len();
    wait_until("another call in flight", || rx.calls("/hang").len() > n).await;
    let (s, b) = act("pause").await;
    assert_eq!((s, b["state"].as_str()), (200, Some("paused")), "{b}");
    let in_flight = rx.calls("/hang").len();
    let deadline = Instant::now() + WAIT;
    while !gate_answers(&c, &d.url, &hung)
        .await
        .iter()
        .any(|e| e["action"] == "rollout.gate_answer")
    {
        assert!(Instant::now() < deadline, "the answer that came while paused was not audited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.calls("/hang").len(), in_flight, "a paused rollout's gate was asked");
    let v = get(&c, &d.url, &hung).await;
    assert_eq!(
        (v["state"].as_str(), v["gate"]["gate"].as_str()),
        (Some("paused"), Some("slow")),
        "{v:#}"
    );
    let (s, b) = act("resume").await;
    assert_eq!((s, b["state"].as_str()), (200, Some("monitoring")), "{b}");
    wait_until("asked again after the resume", || rx.calls("/hang").len() > in_flight).await;
    // An operator's abort still works while the gate is pending.
    let (s, b) =
        call(&c, Method::POST, &format!("{}/v1/rollouts/{hung}/abort", d.url), Some(json!({})))
            .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("aborted")), "{b}");
    assert!(b["gate"].is_null(), "{b}");
}
