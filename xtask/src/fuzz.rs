//! schemathesis against a live daemon: the OpenAPI document it serves is the contract, an
//! operator token the credential, and every route is fuzzed with inputs drawn from its
//! schema. Checks: no server error, every status code and content type documented, every
//! body valid against its schema.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The checks that must pass (schemathesis names).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

/// Generated cases per operation.
const MAX_EXAMPLES: &str = "40";

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn actuator(target: &Path) -> std::path::PathBuf {
    target.join("debug").join(format!("actuator{}", std::env::consts::EXE_SUFFIX))
}

/// Runs the CLI against the daemon with `token`; returns stdout.
fn cli(bin: &Path, url: &str, token: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(args)
        .args(["--server", url, "--output", "json"])
        .env("ACTUATOR_TOKEN", token)
        .output()
        .with_context(|| format!("running actuator {args:?}"))?;
    if !out.status.success() {
        bail!("actuator {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts a daemon on a fresh data directory, seeds a slot and a rollout, and runs
/// schemathesis from the venv at `python`.
pub(crate) fn schemathesis(python: &Path, target: &Path) -> anyhow::Result<()> {
    let bin = actuator(target);
    let dir = std::env::temp_dir().join(format!("actuator-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).context("a data directory for the fuzzed daemon")?;
    let admin = format!("fuzz-admin-{:032x}", std::process::id() as u128 * 0x9e37_79b9_7f4a_7c15);
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("ACTUATOR_ADMIN_TOKEN", &admin)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("the daemon's stdout")?;
    let daemon = Daemon(child);
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(u) = line.strip_prefix("actuator listening on ") {
                    break u.trim().to_owned();
                }
            }
            _ => bail!("the daemon exited before listening"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let made = cli(&bin, &url, &admin, &["token", "create", "fuzzer", "--role", "operator"])?;
    let made: serde_json::Value = serde_json::from_str(&made).context("the token's JSON")?;
    let operator = made["secret"].as_str().context("the operator token's secret")?.to_owned();
    cli(&bin, &url, &operator, &["slot", "create", "chat"])?;
    for (file, doc) in [("v1.json", r#"{"model": "small"}"#), ("v2.json", r#"{"model": "big"}"#)] {
        let path = dir.join(file);
        std::fs::write(&path, doc).context("a seed document")?;
        let p = path.to_string_lossy().into_owned();
        cli(&bin, &url, &operator, &["config", "apply", &p, "--slot", "chat"])?;
    }
    // A rollout under the id the document's examples use, so its routes meet real data.
    let start = dir.join("rollout.json");
    std::fs::write(
        &start,
        r#"{"id": "ro-example", "slot": "chat", "candidate": {"version": 1}, "strategy": "canary"}"#,
    )
    .context("the seed rollout")?;
    cli(&bin, &url, &operator, &["rollout", "start", &start.to_string_lossy()])?;
    let exe = python.with_file_name(format!("schemathesis{}", std::env::consts::EXE_SUFFIX));
    let mut c = Command::new(&exe);
    c.args(["run", &format!("{url}/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {operator}")])
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--request-timeout", "20"])
        // The event streams stay open (a rollout's while it lives, the list's always) (keep-alives included),
        // which a fuzzer waiting for the end of a body cannot read; the integration tests
        // cover it (`tests/it/dashboard.rs`).
        .args(["--exclude-path", "/v1/rollouts/{id}/events"])
        .args(["--exclude-path", "/v1/events/rollouts"])
        .args(["--seed", "20261202"])
        .arg("--no-color");
    eprintln!("$ {c:?}");
    let status = c.status().with_context(|| format!("starting {}", exe.display()))?;
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        bail!("schemathesis found failures (see above)");
    }
    Ok(())
}
