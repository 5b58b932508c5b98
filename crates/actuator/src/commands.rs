//! Runs a parsed command.

use anyhow::Context;
use serde_json::{Value, json};
use std::io::Read;
use std::path::Path;

// The rollout verbs and the traffic simulator live in their own files, declared here so that
// `main.rs` stays as it is.
#[path = "rollout_cmd.rs"]
pub(crate) mod rollout_cmd;
#[path = "simulate.rs"]
pub(crate) mod simulate;

use crate::cli::{
    AuditCmd, Cli, Command, ConfigCmd, Output, PluginsCmd, Remote, SlotCmd, SnapshotCmd, TokenCmd,
};
use crate::client::{Client, enc};
use crate::output::{diff, short, table, when};
use crate::settings::Settings;

pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let settings = Settings::load(&args)?;
            crate::daemon::init_logging(&settings.log.format, &settings.log.filter);
            crate::daemon::serve(settings, args.init_admin_token).await
        }
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Plugins(PluginsCmd::List { compiled_in: true, .. }) => {
            let r = actuator_core::Registry::from_inventory()?;
            let rows: Vec<Vec<String>> = r
                .describe()
                .into_iter()
                .map(|p| {
                    vec![p.kind.to_string(), p.name, p.version, p.api.to_string(), p.description]
                })
                .collect();
            print!("{}", table(&["KIND", "NAME", "VERSION", "API", "DESCRIPTION"], &rows));
            Ok(())
        }
        Command::Plugins(PluginsCmd::List { remote, .. }) => plugins(&remote).await,
        Command::Slot(c) => slot(c).await,
        Command::Config(c) => config(c).await,
        Command::Snapshot(c) => snapshot(c).await,
        Command::Audit(c) => audit(c).await,
        Command::Token(c) => token(c).await,
        Command::Rollout(c) => rollout_cmd::run(c).await,
        Command::Stats { remote } => rollout_cmd::stats(&remote).await,
        Command::Cluster { remote } => rollout_cmd::cluster(&remote).await,
        Command::Simulate(args) => simulate::run(args).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "actuator", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir: None } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .context("writing the man page")
        }
        Command::Man { dir: Some(dir) } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("writing the man pages into {}", dir.display()))?;
            println!("wrote the man pages into {}", dir.display());
            Ok(())
        }
    }
}

/// `actuator plugins list`: the running daemon's plugins with their health.
async fn plugins(remote: &Remote) -> anyhow::Result<()> {
    let v = client(remote)?.get("/v1/plugins").await?;
    emit(remote, &v, |v| {
        let text = |x: &Value| x.as_str().unwrap_or("").to_owned();
        let rows: Vec<Vec<String>> = v["plugins"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|p| {
                let health = if p["in_use"] == Value::Bool(false) {
                    "unused".to_owned()
                } else {
                    text(&p["health"])
                };
                vec![
                    text(&p["kind"]),
                    text(&p["name"]),
                    text(&p["tier"]),
                    text(&p["version"]),
                    health,
                    p["restarts"].as_u64().unwrap_or(0).to_string(),
                    text(&p["last_error"]),
                ]
            })
            .collect();
        table(&["KIND", "NAME", "TIER", "VERSION", "HEALTH", "RESTARTS", "LAST ERROR"], &rows)
    });
    Ok(())
}

pub(crate) fn client(r: &Remote) -> anyhow::Result<Client> {
    Ok(Client::new(&r.server, r.actor.as_deref())?.with_token(r.token.clone()))
}

/// Prints JSON for `--output json`, else the human rendering.
/// `path?limit=N`, with `&cursor=C` to continue a listing.
pub(crate) fn paged(path: &str, limit: u32, cursor: Option<&str>) -> String {
    match cursor {
        Some(c) => format!("{path}?limit={limit}&cursor={}", enc(c)),
        None => format!("{path}?limit={limit}"),
    }
}

/// The hint under a page that is not the last: how to get the next one.
pub(crate) fn more(page: &Value) -> String {
    match page["next_cursor"].as_str() {
        Some(c) => format!("more: add --cursor {c}\n"),
        None => String::new(),
    }
}

pub(crate) fn emit(r: &Remote, v: &Value, human: impl FnOnce(&Value) -> String) {
    match r.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Output::Human => print!("{}", human(v)),
    }
}

pub(crate) fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading stdin")?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn slot_rows(items: &Value) -> Vec<Vec<String>> {
    items
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            vec![
                short(&s["name"]),
                short(&s["active_version"]),
                short(&s["latest_version"]),
                when(&s["updated_at"]),
                short(&s["description"]),
            ]
        })
        .collect()
}

async fn slot(c: SlotCmd) -> anyhow::Result<()> {
    match c {
        SlotCmd::Create { name, description, schema, remote } => {
            let schema = schema.as_deref().map(read_json).transpose()?;
            let v = client(&remote)?
                .post(
                    "/v1/slots",
                    &json!({"name": name, "description": description, "schema": schema}),
                )
                .await?;
            emit(&remote, &v, |v| format!("created slot {}\n", short(&v["name"])));
        }
        SlotCmd::List { limit, cursor, remote } => {
            let v = client(&remote)?.get(&paged("/v1/slots", limit, cursor.as_deref())).await?;
            emit(&remote, &v, |v| {
                table(
                    &["SLOT", "ACTIVE", "LATEST", "UPDATED", "DESCRIPTION"],
                    &slot_rows(&v["items"]),
                ) + &more(v)
            });
        }
        SlotCmd::Get { slot, remote } => {
            let name = slot.name();
            let v = client(&remote)?.get(&format!("/v1/slots/{}", enc(&name))).await?;
            emit(&remote, &v, |v| {
                format!(
                    "slot {}\n  active version: {}\n  latest version: {}\n  description: {}\n  config: {}\n",
                    short(&v["name"]),
                    short(&v["active_version"]),
                    short(&v["latest_version"]),
                    short(&v["description"]),
                    serde_json::to_string_pretty(&v["current"]["document"]).unwrap_or_default()
                )
            });
        }
    }
    Ok(())
}

async fn config(c: ConfigCmd) -> anyhow::Result<()> {
    match c {
        ConfigCmd::Apply { file, slot, message, dry_run, force, remote } => {
            let doc = read_json(&file)?;
            let (slot, document, message) = match slot {
                Some(s) => (s, doc, message),
                None => {
                    let s = doc["slot"].as_str().map(str::to_owned).context(
                        "name the slot with --slot, or give an envelope {\"slot\", \"document\", \"message\"}",
                    )?;
                    let m = doc["message"].as_str().map_or(message, str::to_owned);
                    (s, doc["document"].clone(), m)
                }
            };
            let v = client(&remote)?
                .post(
                    &format!("/v1/slots/{}/versions", enc(&slot)),
                    &json!({"document": document, "message": message, "dry_run": dry_run, "force": force}),
                )
                .await?;
            emit(&remote, &v, |v| {
                if v["unchanged"] == json!(true) {
                    return format!(
                        "unchanged: {slot} version {} already has this document (nothing written; --force writes it again)\n",
                        short(&v["version_number"])
                    );
                }
                let head = if dry_run {
                    format!(
                        "dry run: {slot} would get version {} (nothing written)\n",
                        short(&v["version_number"])
                    )
                } else {
                    format!(
                        "applied {slot} version {} (was {})\n",
                        short(&v["version_number"]),
                        short(&v["previous_version"])
                    )
                };
                head + &diff(&v["diff"])
            });
        }
        ConfigCmd::History { slot, limit, cursor, remote } => {
            let slot = slot.name();
            let c = client(&remote)?;
            let s = c.get(&format!("/v1/slots/{}", enc(&slot))).await?;
            let path = format!("/v1/slots/{}/versions", enc(&slot));
            let v = c.get(&paged(&path, limit, cursor.as_deref())).await?;
            emit(&remote, &v, |v| {
                let rows: Vec<Vec<String>> = v["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| {
                        let active = if x["version"] == s["active_version"] { "*" } else { "" };
                        vec![
                            format!("{}{active}", short(&x["version"])),
                            when(&x["created_at"]),
                            short(&x["author"]),
                            short(&x["message"]),
                        ]
                    })
                    .collect();
                table(&["VERSION", "CREATED", "AUTHOR", "MESSAGE"], &rows)
                    + "(* = active)\n"
                    + &more(v)
            });
        }
        ConfigCmd::Diff { args, slot, remote } => {
            let (slot, from, to) =
                crate::cli::diff_args(&args, slot.as_deref()).map_err(anyhow::Error::msg)?;
            let v = client(&remote)?
                .get(&format!("/v1/slots/{}/diff?from={from}&to={to}", enc(&slot)))
                .await?;
            emit(&remote, &v, |v| format!("{slot}: version {from} -> {to}\n{}", diff(v)));
        }
        ConfigCmd::Revert { slot, to, reason, remote } => {
            let slot = slot.name();
            let v = client(&remote)?
                .post(
                    &format!("/v1/slots/{}/revert", enc(&slot)),
                    &json!({"to": to, "reason": reason}),
                )
                .await?;
            emit(&remote, &v, |v| {
                format!("{slot}: version {} is active again\n", short(&v["active_version"]))
            });
        }
    }
    Ok(())
}

async fn snapshot(c: SnapshotCmd) -> anyhow::Result<()> {
    match c {
        SnapshotCmd::Create { slot, label, remote } => {
            let slot = slot.name();
            let v = client(&remote)?
                .post(&format!("/v1/slots/{}/snapshots", enc(&slot)), &json!({"label": label}))
                .await?;
            emit(&remote, &v, |v| {
                format!("snapshot {} of {slot} version {}\n", short(&v["id"]), short(&v["version"]))
            });
        }
        SnapshotCmd::List { slot_name, slot, limit, cursor, remote } => {
            let slot = slot.or(slot_name);
            let path = match &slot {
                Some(s) => format!("/v1/slots/{}/snapshots", enc(s)),
                None => "/v1/snapshots".to_owned(),
            };
            let v = client(&remote)?.get(&paged(&path, limit, cursor.as_deref())).await?;
            emit(&remote, &v, |v| {
                let rows: Vec<Vec<String>> = v["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| {
                        vec![
                            short(&s["id"]),
                            short(&s["slot"]),
                            short(&s["version"]),
                            when(&s["created_at"]),
                            short(&s["label"]),
                        ]
                    })
                    .collect();
                table(&["ID", "SLOT", "VERSION", "CREATED", "LABEL"], &rows) + &more(v)
            });
        }
        SnapshotCmd::Restore { id: wanted, remote } => {
            let c = client(&remote)?;
            let id = find_snapshot(&c, &wanted).await?;
            let v = c.post(&format!("/v1/snapshots/{}/restore", enc(&id)), &json!({})).await?;
            emit(&remote, &v, |v| {
                format!(
                    "restored snapshot {id}: {} is at version {}\n",
                    short(&v["name"]),
                    short(&v["active_version"])
                )
            });
        }
    }
    Ok(())
}

/// Most snapshots `snapshot restore` reads to find one by label or prefix.
const SNAPSHOT_SEARCH_LIMIT: usize = 100_000;

/// The id of the snapshot `wanted` names: a whole id as it is; otherwise the one snapshot
/// whose id starts with it or whose label is it. Several matches are refused with their ids.
async fn find_snapshot(c: &Client, wanted: &str) -> anyhow::Result<String> {
    let wanted = wanted.trim();
    if wanted.is_empty() {
        anyhow::bail!("name the snapshot by its id, a unique prefix of it, or its label");
    }
    if uuid::Uuid::parse_str(wanted).is_ok() {
        return Ok(wanted.to_owned());
    }
    let mut matches: Vec<(String, String)> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut seen = 0usize;
    loop {
        let page = c.get(&paged("/v1/snapshots", 1000, cursor.as_deref())).await?;
        for s in page["items"].as_array().into_iter().flatten() {
            seen += 1;
            let id = s["id"].as_str().unwrap_or_default();
            let label = s["label"].as_str().unwrap_or_default();
            if id.starts_with(wanted) || label == wanted {
                matches.push((id.to_owned(), label.to_owned()));
            }
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() || seen >= SNAPSHOT_SEARCH_LIMIT {
            break;
        }
    }
    match matches.as_slice() {
        [(id, _)] => Ok(id.clone()),
        [] => anyhow::bail!("no snapshot has the id prefix or label {wanted:?}"),
        many => {
            let list: Vec<String> = many
                .iter()
                .map(
                    |(id, label)| {
                        if label.is_empty() { id.clone() } else { format!("{id} ({label})") }
                    },
                )
                .collect();
            anyhow::bail!(
                "{wanted:?} names {} snapshots: {}; give more of the id",
                many.len(),
                list.join(", ")
            )
        }
    }
}

pub(crate) fn audit_rows(items: &Value) -> Vec<Vec<String>> {
    items
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                short(&e["seq"]),
                when(&e["at"]),
                short(&e["actor"]),
                short(&e["action"]),
                short(&e["target"]),
                short(&e["outcome"]),
                short(&e["error"]),
            ]
        })
        .collect()
}

async fn audit(c: AuditCmd) -> anyhow::Result<()> {
    match c {
        AuditCmd::List { limit, cursor, target, remote } => {
            let mut path = paged("/v1/audit", limit, cursor.as_deref());
            if let Some(t) = &target {
                path.push_str(&format!("&target={}", enc(t)));
            }
            let v = client(&remote)?.get(&path).await?;
            emit(&remote, &v, |v| {
                table(
                    &["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "OUTCOME", "ERROR"],
                    &audit_rows(&v["items"]),
                ) + &more(v)
            });
        }
        AuditCmd::Verify { full, job, wait, remote } => {
            let c = client(&remote)?;
            let job = match (full, job) {
                (true, _) => Some(c.post("/v1/audit/verify/full", &json!({})).await?),
                (false, Some(id)) => Some(c.get(&verify_job_path(&id)).await?),
                (false, None) if wait => {
                    anyhow::bail!("--wait follows a job: pass --full or --job ID with it")
                }
                (false, None) => None,
            };
            let Some(mut job) = job else {
                let v = c.get("/v1/audit/verify").await?;
                emit(&remote, &v, |v| format!("{}\n", short(&v["message"])));
                if v["ok"] != json!(true) {
                    anyhow::bail!("the audit chain does not verify");
                }
                return Ok(());
            };
            if wait {
                let id = short(&job["id"]);
                while job["state"] == "running" {
                    tokio::time::sleep(VERIFY_POLL).await;
                    job = c.get(&verify_job_path(&id)).await?;
                }
            }
            emit(&remote, &job, verify_job_line);
            match job["state"].as_str() {
                Some("failed") => {
                    anyhow::bail!("the verification job failed: {}", short(&job["error"]))
                }
                Some("succeeded") if job["report"]["ok"] != json!(true) => {
                    anyhow::bail!("the audit chain does not verify")
                }
                _ => {}
            }
        }
        AuditCmd::Acknowledge { reason, remote } => {
            let v =
                client(&remote)?.post("/v1/audit/acknowledge", &json!({"reason": reason})).await?;
            emit(&remote, &v, |v| {
                format!(
                    "acknowledged as audit entry {}; {}\n",
                    short(&v["entry"]["seq"]),
                    short(&v["report"]["message"])
                )
            });
        }
    }
    Ok(())
}

/// How often `audit verify --wait` polls the job.
const VERIFY_POLL: std::time::Duration = std::time::Duration::from_millis(500);

fn verify_job_path(id: &str) -> String {
    format!("/v1/audit/verify/jobs/{}", enc(id))
}

/// A verification job for a person: its progress while it runs, its report once done.
fn verify_job_line(j: &Value) -> String {
    match j["state"].as_str() {
        Some("running") => format!(
            "full verification job {} running: {} of {} entries checked (follow it with `actuator audit verify --job {} --wait`)\n",
            short(&j["id"]),
            short(&j["entries_checked"]),
            short(&j["total"]),
            short(&j["id"]),
        ),
        Some("succeeded") => {
            format!(
                "full verification job {}: {}\n",
                short(&j["id"]),
                short(&j["report"]["message"])
            )
        }
        _ => format!("full verification job {} failed: {}\n", short(&j["id"]), short(&j["error"])),
    }
}

async fn token(cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create { name, role, secret, remote } => {
            let mut body = serde_json::json!({"name": name, "role": role});
            if let Some(s) = secret {
                body["secret"] = Value::String(s);
            }
            let v = client(&remote)?.post("/v1/tokens", &body).await?;
            emit(&remote, &v, |v| {
                format!(
                    "created token {} (role {}); its secret is shown only now:\n{}\n",
                    short(&v["name"]),
                    short(&v["role"]),
                    v["secret"].as_str().unwrap_or("")
                )
            });
        }
        TokenCmd::List { remote } => {
            let v = client(&remote)?.get("/v1/tokens").await?;
            emit(&remote, &v, |v| {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| vec![short(&t["name"]), short(&t["role"]), short(&t["created_at"])])
                    .collect();
                crate::output::table(&["NAME", "ROLE", "CREATED"], &rows)
            });
        }
        TokenCmd::Revoke { name, remote } => {
            let path = format!("/v1/tokens/{}", crate::client::enc(&name));
            let v = client(&remote)?.call(reqwest::Method::DELETE, &path, None).await?;
            emit(&remote, &v, |v| format!("revoked token {}\n", short(&v["name"])));
        }
    }
    Ok(())
}
