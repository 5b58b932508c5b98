//! `actuator demo`: a daemon on a temporary SQLite file, driven over its real HTTP API.

use anyhow::Context;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::cli::DemoArgs;
use crate::client::{Client, RemoteError};
use crate::output::{diff, short, table};
use crate::settings::Settings;

fn step(n: u32, text: &str) {
    println!("\n== {n}. {text}");
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    crate::daemon::init_logging("text", "warn");
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let settings = Settings { data_dir: dir.path().to_path_buf(), ..Settings::default() };
    let state = crate::daemon::build_state(&settings).await?;
    let listener = TcpListener::bind("127.0.0.1:0").await.context("binding a loopback port")?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(actuator_server::serve(listener, state, async {
        let _ = stop_rx.await;
    }));
    let base = format!("http://{addr}");
    println!(
        "actuator demo: daemon on {base}, SQLite at {}",
        dir.path().join("actuator.db").display()
    );
    let c = Client::new(&base, Some("demo:alice"))?;

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

    if args.keep_running {
        println!(
            "\nthe daemon keeps running on {base}; try `ACTUATOR_URL={base} actuator slot list`; Ctrl-C to stop"
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop_tx.send(());
    server.await.context("joining the server")?.context("serving")?;
    println!("\ndemo finished");
    Ok(())
}
