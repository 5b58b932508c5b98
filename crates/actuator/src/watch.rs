//! Following a rollout to its outcome: `rollout status --watch` and `rollout start --wait`.
//!
//! Both end with an exit status a CI job can branch on ([`EXIT_COMPLETED`] and the others),
//! survive a daemon restart (they reconnect and say so), and give up after `--timeout`.

use serde_json::Value;
use std::io::Write;
use std::time::Duration;
use tokio::time::Instant;

use crate::cli::{Output, Remote};
use crate::client::{Client, RemoteError, enc};
use crate::output::{rollout_line, rollout_view, short};

/// The rollout completed: the candidate is the stable config.
pub(crate) const EXIT_COMPLETED: u8 = 0;
/// The rollout rolled back, was aborted or failed: the stable config serves every request.
pub(crate) const EXIT_NOT_COMPLETED: u8 = 1;
/// The rollout waits for a person: it is paused, or it awaits a manual promotion.
pub(crate) const EXIT_NEEDS_PERSON: u8 = 2;
/// `--timeout` passed before the rollout reached any of the above.
pub(crate) const EXIT_TIMED_OUT: u8 = 3;

/// Ends the process with `code`, printing `message` on stderr (nothing when it is empty).
#[derive(Debug)]
pub(crate) struct Exit {
    /// The exit status.
    pub(crate) code: u8,
    /// What is printed on stderr.
    pub(crate) message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// Where a rollout stands for someone waiting on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Still moving on its own.
    Running,
    /// Completed.
    Completed,
    /// Rolled back, aborted or failed (the state's name).
    NotCompleted(String),
    /// Paused or awaiting a promotion: why.
    NeedsPerson(String),
}

impl Standing {
    /// The standing of a rollout view.
    pub(crate) fn of(view: &Value) -> Self {
        let id = short(&view["id"]);
        match view["state"].as_str().unwrap_or_default() {
            "completed" => Self::Completed,
            s @ ("rolled_back" | "aborted" | "failed") => Self::NotCompleted(s.to_owned()),
            "paused" => Self::NeedsPerson(format!(
                "the rollout is paused ({}); resume it with `actuator rollout resume {id}`",
                view["paused_reason"].as_str().unwrap_or("no reason given")
            )),
            _ if view["awaiting_promotion"].as_bool() == Some(true) => Self::NeedsPerson(format!(
                "the analysis recommends promotion and automatic promotion is off; promote with `actuator rollout promote {id}`"
            )),
            _ => Self::Running,
        }
    }

    /// The exit status of a follow that ends on this standing (`None` while running).
    pub(crate) const fn exit_code(&self) -> Option<u8> {
        match self {
            Self::Running => None,
            Self::Completed => Some(EXIT_COMPLETED),
            Self::NotCompleted(_) => Some(EXIT_NOT_COMPLETED),
            Self::NeedsPerson(_) => Some(EXIT_NEEDS_PERSON),
        }
    }
}

/// How a follow shows progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Show {
    /// The whole status every second (the screen is cleared on a terminal; `----` between
    /// drawings otherwise).
    Redraw,
    /// One line each time the state, step or share changes, and the whole status at the end.
    Changes,
}

/// Whether an error from the client means the daemon is out of reach for now (restarting,
/// behind a proxy that says so) rather than an answer about the rollout.
fn transient(e: &anyhow::Error) -> bool {
    match e.downcast_ref::<RemoteError>() {
        Some(r) => matches!(r.status.as_u16(), 502..=504),
        None => true,
    }
}

/// Follows rollout `id` until it completes, stops or needs a person, or `timeout` passes.
/// Returns `Ok` for a completed rollout and an [`Exit`] with the matching status otherwise.
pub(crate) async fn follow(
    c: &Client,
    remote: &Remote,
    id: &str,
    show: Show,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let path = format!("/v1/rollouts/{}", enc(id));
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lost = false;
    let mut last_line = String::new();
    let mut last_state = String::from("not yet seen");
    loop {
        tick.tick().await;
        if let Some(d) = deadline
            && Instant::now() >= d
        {
            return Err(Exit {
                code: EXIT_TIMED_OUT,
                message: format!(
                    "timed out after {}s; the rollout is still {last_state}",
                    timeout.map_or(0, |t| t.as_secs())
                ),
            }
            .into());
        }
        let v = match c.get(&path).await {
            Ok(v) => v,
            Err(e) if transient(&e) => {
                if !lost {
                    eprintln!(
                        "lost the daemon at {}: {e:#}; reconnecting every second",
                        remote.server
                    );
                    lost = true;
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        if lost {
            eprintln!("reconnected to {}", remote.server);
            lost = false;
        }
        last_state = short(&v["state"]);
        let standing = Standing::of(&v);
        let done = standing.exit_code().is_some();
        let mut out = std::io::stdout().lock();
        match (remote.output, show) {
            (Output::Json, _) => writeln!(out, "{}", serde_json::to_string(&v)?)?,
            (Output::Human, Show::Redraw) => {
                if tty {
                    // Clear the screen and move the cursor home, then redraw.
                    write!(out, "\x1b[2J\x1b[H")?;
                } else {
                    writeln!(out, "----")?;
                }
                write!(
                    out,
                    "{}",
                    rollout_view(&v, crate::commands::rollout_cmd::TRANSITIONS_SHOWN)
                )?;
                if !done {
                    writeln!(
                        out,
                        "\n{}  refreshing every second; Ctrl-C to stop watching",
                        chrono::Utc::now().format("%H:%M:%S")
                    )?;
                }
            }
            (Output::Human, Show::Changes) => {
                let line = rollout_line(&v);
                if line != last_line {
                    write!(out, "{}  {line}", chrono::Utc::now().format("%H:%M:%S"))?;
                    last_line = line;
                }
                if done {
                    write!(
                        out,
                        "\n{}",
                        rollout_view(&v, crate::commands::rollout_cmd::TRANSITIONS_SHOWN)
                    )?;
                }
            }
        }
        out.flush()?;
        drop(out);
        match standing {
            Standing::Running => {}
            Standing::Completed => {
                if remote.output == Output::Human {
                    println!("\nthe rollout completed");
                }
                return Ok(());
            }
            Standing::NotCompleted(state) => {
                return Err(Exit {
                    code: EXIT_NOT_COMPLETED,
                    message: format!("the rollout ended: {state}"),
                }
                .into());
            }
            Standing::NeedsPerson(why) => {
                return Err(Exit { code: EXIT_NEEDS_PERSON, message: why }.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_outcome_has_its_exit_status() {
        let cases = [
            (json!({"state": "monitoring"}), None),
            (json!({"state": "rolling_back"}), None),
            (json!({"state": "completed"}), Some(EXIT_COMPLETED)),
            (json!({"state": "rolled_back"}), Some(EXIT_NOT_COMPLETED)),
            (json!({"state": "aborted"}), Some(EXIT_NOT_COMPLETED)),
            (json!({"state": "failed"}), Some(EXIT_NOT_COMPLETED)),
            (json!({"state": "paused", "paused_reason": "held"}), Some(EXIT_NEEDS_PERSON)),
            (json!({"state": "monitoring", "awaiting_promotion": true}), Some(EXIT_NEEDS_PERSON)),
        ];
        for (view, code) in cases {
            assert_eq!(Standing::of(&view).exit_code(), code, "{view}");
        }
        match Standing::of(&json!({"id": "r1", "state": "paused", "paused_reason": "by ops"})) {
            Standing::NeedsPerson(why) => {
                assert!(why.contains("by ops") && why.contains("rollout resume r1"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_an_unreachable_daemon_is_waited_for() {
        let remote = |status: u16| {
            anyhow::Error::new(RemoteError {
                status: reqwest::StatusCode::from_u16(status).unwrap(),
                code: "x".into(),
                message: "x".into(),
                details: None,
            })
        };
        assert!(transient(&anyhow::anyhow!("connection refused")));
        assert!(transient(&remote(503)));
        assert!(!transient(&remote(404)), "an unknown rollout ends the watch");
        assert!(!transient(&remote(401)));
    }
}
