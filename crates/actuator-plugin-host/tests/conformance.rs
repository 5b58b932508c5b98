//! The conformance suite against the example plugin in its three forms (compiled in, exec,
//! cdylib), plus the failure cases: another major version, a panic, a hang, a crash.
//!
//! Needs the example and the fixture built first: `cargo xtask test` does it, or
//! `cargo build -p actuator-notifier-example -p actuator-plugin-fixture-future`.

use actuator_core::plugin::{PluginError, PluginHealth, PluginKind, Registry};
use actuator_notifier_example::JsonLines;
use actuator_plugin_host::conformance::{
    Form, Subject, check_bad_config, check_metric_source, check_notifier, sample_event,
};
use actuator_plugin_host::inproc::InProcessFactory;
use actuator_plugin_host::{FileTier, Limits, LoadError, PluginSpec, load};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn artifact(file: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(file);
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask test`, or `cargo build -p actuator-notifier-example -p actuator-plugin-fixture-future` first",
        p.display()
    );
    p
}

fn dylib(stem: &str) -> String {
    format!("{}{stem}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)
}

fn forms() -> Vec<Form> {
    let mut r = Registry::empty();
    let f = Arc::new(InProcessFactory::<JsonLines>::new(Duration::from_millis(400)));
    r.add_notifier(f.clone()).unwrap();
    r.add_metric_source(f).unwrap();
    vec![
        Form::CompiledIn { registry: Arc::new(r), name: "example".into() },
        Form::Exec(artifact(&format!("actuator-notifier-example{}", std::env::consts::EXE_SUFFIX))),
        Form::Cdylib(artifact(&dylib("actuator_notifier_example"))),
    ]
}

fn quick() -> Limits {
    Limits {
        call_timeout: Duration::from_millis(400),
        start_timeout: Duration::from_secs(10),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_form_starts_delivers_and_refuses_a_malformed_config_by_its_field() {
    for form in forms() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("events.jsonl");
        let s = Subject::new(form.clone()).with_limits(quick());
        let bad = json!({"path": file, "hang_ms": "soon"});
        check_notifier(&s, json!({"path": file}), bad, "hang_ms").await.unwrap();
        let got = lines(&file);
        assert_eq!(got.len(), 1, "{form:?}: {got:?}");
        assert_eq!(got[0]["kind"], "conformance.notify");
        assert_eq!(got[0]["target"], "chat.default");
        assert_eq!(got[0]["details"]["from"], "conformance");
        // An unknown field, a missing one and a bad value found by the plugin itself.
        check_bad_config(&s, PluginKind::Notifier, json!({"path": file, "colour": 1}), "colour")
            .await
            .unwrap();
        check_bad_config(&s, PluginKind::Notifier, json!({}), "path").await.unwrap();
        check_bad_config(
            &s,
            PluginKind::Notifier,
            json!({"path": "/nonexistent-dir/e.jsonl"}),
            "path",
        )
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_form_answers_metric_queries() {
    for form in forms() {
        let dir = tempfile::tempdir().unwrap();
        let s = Subject::new(form).with_limits(quick());
        let good = json!({"path": dir.path().join("e.jsonl"), "metrics": {"errors{arm=\"canary\"}": 0.25}});
        let bad = json!({"path": dir.path().join("e.jsonl"), "metrics": {"x": "high"}});
        check_metric_source(
            &s,
            good,
            ("errors{arm=\"canary\"}", 0.25),
            "latency",
            (bad, "metrics"),
        )
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_of_another_major_version_is_refused_in_both_tiers() {
    let forms = [
        Form::Exec(artifact(&format!(
            "actuator-plugin-fixture-future{}",
            std::env::consts::EXE_SUFFIX
        ))),
        Form::Cdylib(artifact(&dylib("actuator_plugin_fixture_future"))),
    ];
    for form in forms {
        let err = Subject::new(form.clone())
            .build(PluginKind::Notifier, "future", json!({}))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("plugin API 2.0") && msg.contains("this host speaks 1.1"),
            "{form:?}: {msg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_plugin_returns_an_error_and_the_host_lives() {
    for form in forms() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("e.jsonl");
        let s = Subject::new(form.clone()).with_limits(quick());
        let b = s
            .build(
                PluginKind::Notifier,
                "p",
                json!({"path": file, "test_triggers": {"test.panic": "panic"}}),
            )
            .await
            .unwrap();
        let err = b.notifier.notify(&sample_event("test.panic")).await.unwrap_err();
        assert!(err.to_string().contains("panicked"), "{form:?}: {err}");
        if let Some(st) = b.status() {
            assert_eq!(st.health, PluginHealth::Failed, "{form:?}");
            assert!(st.last_error.unwrap_or_default().contains("panicked"));
        }
        b.notifier.notify(&sample_event("after.panic")).await.unwrap();
        assert_eq!(lines(&file).len(), 1, "{form:?}");
        if let Some(st) = b.status() {
            assert_eq!(st.health, PluginHealth::Healthy, "{form:?}");
            assert_eq!(st.restarts, 0, "{form:?}: a caught panic needs no restart");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_plugin_times_out_and_the_next_call_works() {
    for form in forms() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("e.jsonl");
        let s = Subject::new(form.clone()).with_limits(quick());
        let cfg = json!({"path": file, "test_triggers": {"test.hang": "hang"}, "hang_ms": 1500});
        let b = s.build(PluginKind::Notifier, "h", cfg).await.unwrap();
        let t0 = Instant::now();
        let err = b.notifier.notify(&sample_event("test.hang")).await.unwrap_err();
        let waited = t0.elapsed();
        assert!(err.to_string().contains("no answer to notify within"), "{form:?}: {err}");
        assert!(waited < Duration::from_millis(1200), "{form:?}: the timeout took {waited:?}");
        // The exec form was killed: past its backoff it is started again.
        tokio::time::sleep(Duration::from_millis(120)).await;
        b.notifier.notify(&sample_event("after.hang")).await.unwrap();
        let kinds: Vec<Value> = lines(&file).iter().map(|l| l["kind"].clone()).collect();
        assert!(kinds.contains(&json!("after.hang")), "{form:?}: {kinds:?}");
        if let (Form::Exec(_), Some(st)) = (&form, b.status()) {
            assert_eq!(st.restarts, 1, "{st:?}");
            assert_eq!(st.health, PluginHealth::Healthy);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_exec_plugin_is_restarted_with_backoff_and_calls_meanwhile_fail_fast() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("e.jsonl");
    let limits = Limits {
        call_timeout: Duration::from_secs(2),
        start_timeout: Duration::from_secs(10),
        backoff_initial: Duration::from_millis(300),
        backoff_max: Duration::from_millis(1200),
    };
    let exe = artifact(&format!("actuator-notifier-example{}", std::env::consts::EXE_SUFFIX));
    let s = Subject::new(Form::Exec(exe)).with_limits(limits);
    let b = s
        .build(
            PluginKind::Notifier,
            "c",
            json!({"path": file, "test_triggers": {"test.crash": "crash"}}),
        )
        .await
        .unwrap();
    let err = b.notifier.notify(&sample_event("test.crash")).await.unwrap_err();
    assert!(err.to_string().contains("exited"), "{err}");
    assert_eq!(b.status().unwrap().health, PluginHealth::Restarting);

    // During the backoff a call fails at once, saying when the next attempt is.
    let t0 = Instant::now();
    let err = b.notifier.notify(&sample_event("during.backoff")).await.unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "a call during backoff waited {:?}",
        t0.elapsed()
    );
    assert!(err.to_string().contains("restarting: next attempt in"), "{err}");

    tokio::time::sleep(Duration::from_millis(350)).await;
    b.notifier.notify(&sample_event("after.restart")).await.unwrap();
    let st = b.status().unwrap();
    assert_eq!((st.restarts, st.health), (1, PluginHealth::Healthy), "{st:?}");

    // Crash twice without a good call between: the second wait is doubled.
    b.notifier.notify(&sample_event("test.crash")).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(350)).await;
    b.notifier.notify(&sample_event("test.crash")).await.unwrap_err();
    let err = b.notifier.notify(&sample_event("during.backoff")).await.unwrap_err().to_string();
    let ms: u64 = err
        .split("next attempt in ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no delay in {err}"));
    assert!(ms > 300 && ms <= 600, "the second backoff should be 600 ms, got {ms} ms: {err}");
    let kinds: Vec<Value> = lines(&file).iter().map(|l| l["kind"].clone()).collect();
    assert_eq!(kinds, vec![json!("after.restart")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_file_a_file_that_is_not_executable_and_a_non_library_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spec = |path: PathBuf, tier| PluginSpec {
        kind: PluginKind::Notifier,
        name: "teams".into(),
        path,
        tier,
        args: vec![],
        config: json!({}),
        limits: Limits::default(),
    };
    let err = load(spec(dir.path().join("nope"), None)).await.unwrap_err();
    assert!(matches!(err, LoadError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    let err = load(spec(plain, None)).await.unwrap_err();
    assert!(err.to_string().contains("is not executable"), "{err}");
    let fake = dir.path().join("libfake.so");
    std::fs::write(&fake, "not an ELF file").unwrap();
    let err = load(spec(fake.clone(), None)).await.unwrap_err();
    assert!(err.to_string().contains("cannot load"), "{err}");
    let err = load(spec(fake, Some(FileTier::Exec))).await.unwrap_err();
    assert!(err.to_string().contains("is not executable"), "{err}");
    let mut store = spec(dir.path().join("x"), None);
    store.kind = PluginKind::Store;
    let err = load(store).await.unwrap_err();
    assert!(err.to_string().contains("stores are loaded with store::load_store"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_error_keeps_the_plugin_healthy_enough_to_be_called_again() {
    for form in forms() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("e.jsonl");
        let s = Subject::new(form.clone()).with_limits(quick());
        let b = s
            .build(
                PluginKind::Notifier,
                "f",
                json!({"path": file, "test_triggers": {"test.fail": "fail"}}),
            )
            .await
            .unwrap();
        let err = b.notifier.notify(&sample_event("test.fail")).await.unwrap_err();
        assert!(matches!(err, PluginError::Failed { .. }), "{form:?}: {err}");
        assert!(err.to_string().contains("test trigger: fail on test.fail"), "{form:?}: {err}");
        b.notifier.notify(&sample_event("ok")).await.unwrap();
    }
}
