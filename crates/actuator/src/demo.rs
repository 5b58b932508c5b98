//! `actuator demo`: a daemon on a temporary SQLite file, driven over its real HTTP API.

use anyhow::Context;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

use crate::cli::DemoArgs;
use crate::client::{Client, RemoteError};
use crate::commands::simulate::run_traffic;
use crate::output::{
    arms_table, decision, decision_headline, diff, has_comparison, is_terminal, metrics_table,
    phase, rollback_line, rollout_view, share, short, table,
};
use crate::settings::Settings;

fn step(n: u32, text: &str) {
    println!("\n== {n}. {text}");
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    // The demo prints what happens itself; the log notifier's event lines would repeat it.
    crate::daemon::init_logging("text", "warn,actuator::event=off");
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let mut settings = Settings { data_dir: dir.path().to_path_buf(), ..Settings::default() };
    // A brisk engine so the rollouts finish within the demo: a look every 200 ms, and 3 s of
    // post-rollback validation instead of 30.
    settings.engine.tick_ms = 200;
    settings.engine.validation_secs = 3;
    let listener = TcpListener::bind("127.0.0.1:0").await.context("binding a loopback port")?;
    let addr = listener.local_addr()?;
    // A webhook receiver of the demo's own, told about rollbacks: it checks each delivery's
    // signature with the shared secret and keeps what it got for step 13.
    let secret = uuid_secret();
    let receiver = Receiver::start(secret.clone()).await?;
    settings.notifiers.push(crate::settings::NotifierChoice {
        plugin: "webhook".into(),
        config: json!({"url": receiver.url, "secret": secret, "public_url": format!("http://{addr}"),
                       "delivery": {"initial_backoff_ms": 100, "max_backoff_ms": 2000}}),
        events: Some(vec!["rolled_back".into()]),
    });
    let state = crate::daemon::build_state(&settings).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(actuator_server::serve(listener, state.clone(), async {
        let _ = stop_rx.await;
    }));
    let base = format!("http://{addr}");
    println!(
        "actuator demo: daemon on {base}, SQLite at {}",
        dir.path().join("actuator.db").display()
    );
    // A token made for the demo: from here on the daemon requires one, and everything the
    // demo does is audited under the token's name.
    let open = Client::new(&base, None)?;
    let made = open
        .post("/v1/tokens", &json!({"name": "demo:alice", "role": "admin"}))
        .await
        .context("making the demo's API token")?;
    let secret = made["secret"].as_str().context("the token's secret")?.to_owned();
    println!("  made the admin token demo:alice (the daemon now requires a token)");
    let c = Client::new(&base, None)?.with_token(Some(secret));

    step(1, "create the slot chat.default (a named LLM configuration)");
    c.post(
        "/v1/slots",
        &json!({"name": "chat.default", "description": "the assistant's chat config"}),
    )
    .await?;
    println!("created slot chat.default");

    step(2, "apply version 1");
    let v1 = json!({"model": "gpt-4o", "temperature": 0.2, "max_tokens": 800,
                    "prompt_template": "You are a helpful assistant.\n{input}"});
    let out = c
        .post(
            "/v1/slots/chat.default/versions",
            &json!({"document": v1, "message": "first config"}),
        )
        .await?;
    println!("applied version {}", short(&out["version_number"]));

    step(3, "dry-run a cheaper model: validated and diffed, nothing written");
    let v2 = json!({"model": "gpt-4o-mini", "temperature": 0.3, "max_tokens": 800,
                    "prompt_template": "You are a concise, helpful assistant.\n{input}"});
    let dry = c
        .post(
            "/v1/slots/chat.default/versions",
            &json!({"document": v2, "message": "cheaper model", "dry_run": true}),
        )
        .await?;
    print!("would become version {}:\n{}", short(&dry["version_number"]), diff(&dry["diff"]));

    step(4, "snapshot the stable config, then apply version 2");
    let snap = c
        .post("/v1/slots/chat.default/snapshots", &json!({"label": "before the cheaper model"}))
        .await?;
    println!("snapshot {} holds version {}", short(&snap["id"]), short(&snap["version"]));
    let out = c
        .post(
            "/v1/slots/chat.default/versions",
            &json!({"document": v2, "message": "cheaper model"}),
        )
        .await?;
    println!("applied version {}", short(&out["version_number"]));

    step(5, "try an invalid config: refused with the field named, nothing written");
    let bad = json!({"model": "gpt-4o-mini", "temperature": 3.5, "max_tokens": 0});
    match c.post("/v1/slots/chat.default/versions", &json!({"document": bad})).await {
        Ok(_) => anyhow::bail!("the invalid config was accepted"),
        Err(e) => match e.downcast_ref::<RemoteError>() {
            Some(r) => println!("refused ({}): {}", r.code, r.message),
            None => return Err(e),
        },
    }

    step(6, "diff version 1 against version 2");
    let d = c.get("/v1/slots/chat.default/diff?from=1&to=2").await?;
    print!("{}", diff(&d));

    step(7, "restore the snapshot: version 1 serves again");
    let restored =
        c.post(&format!("/v1/snapshots/{}/restore", short(&snap["id"])), &json!({})).await?;
    let slot = c.get("/v1/slots/chat.default").await?;
    println!(
        "active version {} (latest {}), model {}",
        short(&restored["active_version"]),
        short(&slot["latest_version"]),
        short(&slot["current"]["document"]["model"])
    );

    step(8, "the audit log, newest first");
    let audit = c.get("/v1/audit?limit=20").await?;
    print!(
        "{}",
        table(
            &["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "OUTCOME", "ERROR"],
            &crate::commands::audit_rows(&audit["items"])
        )
    );

    step(9, "verify the audit hash chain");
    let report: Value = c.get("/v1/audit/verify").await?;
    println!("{}", short(&report["message"]));
    if report["ok"] != json!(true) {
        anyhow::bail!("the audit chain did not verify");
    }

    rollouts(&c).await?;

    step(13, "the rollback, as the webhook receiver got it");
    receiver.show().await;

    if args.keep_running {
        println!(
            "\nthe daemon keeps running on {base}; try `ACTUATOR_URL={base} actuator rollout list --all`; Ctrl-C to stop"
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop_tx.send(());
    server.await.context("joining the server")?.context("serving")?;
    if let Some(engine) = state.engine() {
        engine.stop().await.context("stopping the rollout engine")?;
    }
    println!("\ndemo finished");
    Ok(())
}

/// Requests the simulated application sends per tick, over both slots.
const REQUESTS_PER_TICK: usize = 1000;
/// The simulator's tick.
const TICK: Duration = Duration::from_millis(100);
/// Transitions shown per rollout at the end: enough for every phase of a five-phase canary.
const TRANSITIONS_SHOWN: usize = 12;
/// A phase without a decision after this many seconds is inconclusive.
const PHASE_MAX_SECS: u64 = 8;
/// The rollouts must end well within the demo's two minutes.
const ROLLOUT_DEADLINE: Duration = Duration::from_secs(90);

/// Steps 10–12: two canary rollouts side by side, driven by simulated traffic.
async fn rollouts(c: &Client) -> anyhow::Result<()> {
    step(10, "two canary rollouts side by side: a good candidate and a bad one");
    // chat.default: version 1 (gpt-4o) serves; the candidate (gpt-4o-mini) is cheaper with the
    // same error rate, latency and quality.
    // summarize.default: a cheaper model with twice the error rate and slower answers.
    // The `sim` field tunes the traffic simulator's model of a config (the daemon stores it
    // like any other field): the simulated gpt-4o-mini scores 0.05 lower on quality than
    // gpt-4o, a drop the analysis detects (and rolls back) given enough judged requests.
    c.post(
        "/v1/slots",
        &json!({"name": "summarize.default", "description": "the summarizer's config"}),
    )
    .await?;
    c.post(
        "/v1/slots/summarize.default/versions",
        &json!({"document": {"model": "gpt-4o", "temperature": 0.0, "max_tokens": 400,
                             "prompt_template": "Summarize in three sentences:\n{input}"},
                "message": "first config"}),
    )
    .await?;
    let mut ids = Vec::new();
    for (slot, candidate, description) in [
        (
            "chat.default",
            json!({"document": {"model": "gpt-4o-mini", "temperature": 0.3, "max_tokens": 800,
                                "prompt_template": "You are a concise, helpful assistant.\n{input}",
                                "sim": {"quality": 4.2}}}),
            "gpt-4o -> gpt-4o-mini: cheaper, as reliable, as good",
        ),
        (
            "summarize.default",
            json!({"document": {"model": "tiny-fast", "temperature": 0.0, "max_tokens": 400,
                                "prompt_template": "Summarize in three sentences:\n{input}",
                                "sim": {"error_rate": 0.02}}}),
            "gpt-4o -> tiny-fast: much cheaper, but more errors and slower",
        ),
    ] {
        let phases: Vec<Value> = [1, 5, 25, 50, 100]
            .into_iter()
            .map(|p| {
                json!({"traffic_percent": p, "min_samples": 300, "min_duration_secs": 2,
                       "max_duration_secs": PHASE_MAX_SECS})
            })
            .collect();
        let v = c
            .post(
                "/v1/rollouts",
                &json!({"slot": slot, "candidate": candidate, "strategy": "canary",
                        "canary": {"phases": phases},
                        "settings": {"inconclusive": "promote_if_no_alarm"},
                        "description": description}),
            )
            .await?;
        println!(
            "started {} on {slot}: version {} -> {} ({description})",
            short(&v["id"]),
            short(&v["stable_version"]),
            short(&v["candidate_version"])
        );
        ids.push(short(&v["id"]));
    }
    println!(
        "phases 1% -> 5% -> 25% -> 50% -> 100%: each lasts at least 2 s and 300 canary requests;\n\
         it is promoted once the candidate is shown non-inferior on every metric, or after {PHASE_MAX_SECS} s\n\
         without any alarm (settings.inconclusive = promote_if_no_alarm); any alarm rolls back"
    );

    step(11, "simulated users resolve their config and report outcomes; the engine decides");
    let done = AtomicBool::new(false);
    let traffic =
        run_traffic(c, &["chat.default", "summarize.default"], REQUESTS_PER_TICK, TICK, |_| {
            done.load(Ordering::Relaxed)
        });
    let watch = async {
        let r = follow(c, &ids).await;
        done.store(true, Ordering::Relaxed);
        r
    };
    let (traffic, followed) = tokio::join!(traffic, watch);
    let sim = traffic?;
    let (views, compared) = followed?;
    println!(
        "the simulator resolved {} requests and reported {} outcomes ({} accepted)",
        sim.requests, sim.reported, sim.accepted
    );

    step(12, "outcomes and the analysis behind them");
    for (v, seen) in views.iter().zip(&compared) {
        print!("\n{}", rollout_view(v, TRANSITIONS_SHOWN));
        // At 100% no control is left; show the last comparison the demo saw on the way up.
        if let Some(c) = seen.as_ref().filter(|_| !has_comparison(v)) {
            print!(
                "\nthe last comparison with control the demo saw (phase {} at {}):\n{}\n{}",
                phase(c),
                share(c),
                arms_table(c),
                metrics_table(c)
            );
        }
    }
    println!();
    for v in &views {
        let slot = short(&v["slot"]);
        let s = c.get(&format!("/v1/slots/{slot}")).await?;
        let served = format!(
            "version {} ({}) serves everyone",
            short(&s["active_version"]),
            short(&s["current"]["document"]["model"])
        );
        println!("{slot}: {} at phase {}: {served}", short(&v["state"]).to_uppercase(), phase(v));
        print!("  last decision: {}", decision(&v["last_decision"]).replace("\n  - ", "\n    - "));
        if !v["rollback"].is_null() {
            println!("  {}", rollback_line(&v["rollback"]));
        }
    }
    let history = c.get("/v1/rollbacks?limit=5").await?;
    for r in history["items"].as_array().into_iter().flatten() {
        println!(
            "rollback history: {} on {}: {}",
            short(&r["rollout_id"]),
            short(&r["slot"]),
            rollback_line(r)
        );
    }
    Ok(())
}

/// Prints one line per second per rollout until all end, are paused for a person, or the
/// deadline passes; returns the last views, and per rollout the last view that compared the
/// candidate with control.
async fn follow(c: &Client, ids: &[String]) -> anyhow::Result<(Vec<Value>, Vec<Option<Value>>)> {
    let started = Instant::now();
    let mut compared: Vec<Option<Value>> = vec![None; ids.len()];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut settled = vec![false; ids.len()];
    loop {
        tick.tick().await;
        let mut views = Vec::with_capacity(ids.len());
        for id in ids {
            views.push(c.get(&format!("/v1/rollouts/{id}")).await?);
        }
        for (v, seen) in views.iter().zip(compared.iter_mut()) {
            if has_comparison(v) {
                *seen = Some(v.clone());
            }
        }
        let secs = started.elapsed().as_secs();
        for (v, settled) in views.iter().zip(settled.iter_mut()) {
            if *settled {
                continue;
            }
            let arms: Vec<String> = v["arms"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| format!("{} {}", short(&a["arm"]), short(&a["requests"])))
                .collect();
            println!(
                "[{secs:>3}s] {:<17} {:<12} phase {:<4} {:>4}  {:<28} last: {}",
                short(&v["slot"]),
                short(&v["state"]),
                phase(v),
                share(v),
                if arms.is_empty() { "-".into() } else { arms.join(" / ") },
                decision_headline(&v["last_decision"]),
            );
            // A paused rollout waits for a person: nothing more will happen by itself.
            *settled = is_terminal(&v["state"]) || v["state"] == "paused";
        }
        if settled.iter().all(|s| *s) {
            return Ok((views, compared));
        }
        if started.elapsed() > ROLLOUT_DEADLINE {
            println!(
                "the rollouts did not finish within {}s; showing where they stand",
                ROLLOUT_DEADLINE.as_secs()
            );
            return Ok((views, compared));
        }
    }
}

/// A random secret for the demo's webhook (64 hex digits).
fn uuid_secret() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{b}")
}

/// What the demo's webhook receiver got: the payload and whether its signature verified.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(Value, bool)>>>;

/// The demo's webhook receiver on a loopback port.
struct Receiver {
    url: String,
    got: Received,
}

impl Receiver {
    async fn start(secret: String) -> anyhow::Result<Self> {
        use axum::http::{HeaderMap, StatusCode};
        let got: Received = Default::default();
        let sink = got.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                let secret = secret.clone();
                async move {
                    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
                    let ok = actuator_notifier_http::verify_signature(
                        &secret,
                        h(actuator_notifier_http::TIMESTAMP_HEADER),
                        &body,
                        h(actuator_notifier_http::SIGNATURE_HEADER),
                    );
                    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push((payload, ok));
                    if ok { StatusCode::NO_CONTENT } else { StatusCode::UNAUTHORIZED }
                }
            }),
        );
        let listener =
            TcpListener::bind("127.0.0.1:0").await.context("binding the webhook receiver")?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, got })
    }

    /// Waits up to 10 s for a finished rollback's delivery, then prints every delivery.
    async fn show(&self) {
        let finished =
            |got: &[(Value, bool)]| got.iter().any(|(p, _)| p["kind"] == "rollout.rolled_back");
        for _ in 0..100 {
            if finished(&self.got.lock().unwrap_or_else(|p| p.into_inner())) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let got = self.got.lock().unwrap_or_else(|p| p.into_inner()).clone();
        println!(
            "the receiver at {} got {} deliveries (events = [\"rolled_back\"]):",
            self.url,
            got.len()
        );
        for (p, ok) in &got {
            let r = &p["rollout"];
            println!(
                "- {} ({}) rollout {} on {}: version {} -> {}; signature {}",
                short(&p["kind"]),
                short(&p["severity"]),
                short(&r["id"]),
                short(&r["slot"]),
                short(&r["stable_version"]),
                short(&r["candidate_version"]),
                if *ok { "verified" } else { "INVALID" }
            );
            println!("  {}", short(&p["summary"]));
            // The decision and its reasons once, with the rollback that acted on them.
            if p["kind"] == "rollout.rollback" && !p["decision"].is_null() {
                println!(
                    "  decision: {} ({})",
                    short(&p["decision"]["kind"]),
                    short(&p["decision"]["rule"])
                );
            }
            if p["kind"] == "rollout.rollback" {
                for reason in p["reasons"].as_array().into_iter().flatten().take(3) {
                    println!("  - {}", short(reason));
                }
            }
            println!("  status: {}", short(&r["url"]));
        }
    }
}
