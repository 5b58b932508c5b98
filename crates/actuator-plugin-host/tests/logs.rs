//! A plugin's stderr lines and log records reach the daemon's log under the plugin's name.
//!
//! Needs the example built first (`cargo xtask test` does it).

use actuator_core::plugin::PluginKind;
use actuator_plugin_host::conformance::{Form, Subject, sample_event};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn artifact(file: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let p = exe.parent().and_then(Path::parent).expect("target dir").join(file);
    assert!(p.exists(), "{} is missing: run `cargo xtask test` first", p.display());
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn stderr_and_log_records_are_logged_with_the_plugin_name() {
    let captured = Captured::default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(captured.clone())
        .with_ansi(false)
        .init();
    let dir = tempfile::tempdir().unwrap();
    let exe = artifact(&format!("actuator-notifier-example{}", std::env::consts::EXE_SUFFIX));
    let lib = artifact(&format!(
        "{}actuator_notifier_example{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    let cfg = json!({"path": dir.path().join("e.jsonl"), "test_triggers": {"test.panic": "panic"}});
    let exec = Subject::new(Form::Exec(exe))
        .build(PluginKind::Notifier, "teams-exec", cfg.clone())
        .await
        .unwrap();
    exec.notifier.notify(&sample_event("test.panic")).await.unwrap_err();
    let lib = Subject::new(Form::Cdylib(lib))
        .build(PluginKind::Notifier, "teams-lib", cfg)
        .await
        .unwrap();
    lib.notifier.notify(&sample_event("ok")).await.unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
        let stderr_line = text.lines().any(|l| {
            l.contains("plugin=teams-exec")
                && l.contains("stderr")
                && l.contains("test trigger: panic on test.panic")
        });
        let exec_record = text.lines().any(|l| {
            l.contains("plugin=teams-exec") && l.contains("configured as notifier \"teams-exec\"")
        });
        let lib_record = text.lines().any(|l| {
            l.contains("plugin=example") && l.contains("configured as notifier \"teams-lib\"")
        });
        if stderr_line && exec_record && lib_record {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stderr line {stderr_line}, exec record {exec_record}, cdylib record {lib_record} in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
