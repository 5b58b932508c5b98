//! The Store conformance suite of `actuator-core` against the example store plugin
//! (`plugins/actuator-store-example`, the SQLite store) in its exec and cdylib forms (the
//! compiled-in form runs it in `plugins/actuator-store-sqlite`), plus the failures of the
//! exec form: a plugin killed with SIGKILL, one that stops answering, and plugins refused at
//! start.
//!
//! Needs the example and the fixtures built first: `cargo xtask test` does it, or
//! `cargo build -p actuator-store-example -p actuator-notifier-example
//! -p actuator-plugin-fixture-future -p actuator-plugin-fixture-badmagic`.

use actuator_core::Store;
use actuator_core::audit::AuditDraft;
use actuator_core::config::{NewSlot, SlotName};
use actuator_core::plugin::{PluginHealth, PluginKind};
use actuator_core::store::StoreError;
use actuator_plugin_host::store::{RemoteStore, load_store};
use actuator_plugin_host::{FileTier, Limits, PluginSpec};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn artifact(file: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(file);
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask test`, or `cargo build -p actuator-store-example -p actuator-notifier-example -p actuator-plugin-fixture-future -p actuator-plugin-fixture-badmagic` first",
        p.display()
    );
    p
}

fn dylib(stem: &str) -> String {
    format!("{}{stem}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)
}

fn exe(stem: &str) -> PathBuf {
    artifact(&format!("{stem}{}", std::env::consts::EXE_SUFFIX))
}

fn limits() -> Limits {
    Limits {
        call_timeout: Duration::from_secs(10),
        start_timeout: Duration::from_secs(20),
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_millis(1600),
    }
}

fn spec(path: PathBuf, tier: FileTier, db: &Path, label: &str) -> PluginSpec {
    PluginSpec {
        kind: PluginKind::Store,
        name: "plugin-store".into(),
        path,
        tier: Some(tier),
        // Ignored by the plugin; lets a test find its own process.
        args: vec![format!("--test-label={label}")],
        config: json!({ "path": db }),
        limits: limits(),
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

async fn open(path: &Path, tier: FileTier, dir: &Path) -> Arc<dyn Store> {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let db = dir.join(format!("store-{n}.db"));
    let store: Arc<RemoteStore> = load_store(spec(path.to_owned(), tier, &db, "conformance"))
        .await
        .expect("the store starts");
    store
}

#[tokio::test(flavor = "multi_thread")]
async fn the_exec_store_passes_the_store_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let path = exe("actuator-store-example");
    actuator_core::testing::conformance::run(|| open(&path, FileTier::Exec, dir.path())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cdylib_store_passes_the_store_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let path = artifact(&dylib("actuator_store_example"));
    actuator_core::testing::conformance::run(|| open(&path, FileTier::Cdylib, dir.path())).await;
}

fn draft(target: &str) -> AuditDraft {
    AuditDraft::success("tester", "slot.create", target)
}

async fn create_slot(store: &dyn Store, name: &str) -> Result<(), StoreError> {
    let slot =
        NewSlot { name: SlotName::new(name).unwrap(), description: String::new(), schema: None };
    store.create_slot(slot, draft(name)).await.map(|_| ())
}

/// The pids of this test process's children started with `--test-label=<label>`.
fn children_labelled(label: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return out };
    for t in tasks.flatten() {
        let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for pid in kids.split_whitespace() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let want = format!("--test-label={label}");
            if cmdline.split(|b| *b == 0).any(|arg| arg == want.as_bytes()) {
                out.push(pid.to_owned());
            }
        }
    }
    out
}

fn signal(label: &str, sig: &str) {
    let pids = children_labelled(label);
    assert_eq!(pids.len(), 1, "one plugin process labelled {label}: {pids:?}");
    let ok = std::process::Command::new("kill").arg(sig).arg(&pids[0]).status().unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_exec_store_fails_fast_is_restarted_with_backoff_and_keeps_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kill.db");
    let store = load_store(spec(exe("actuator-store-example"), FileTier::Exec, &db, "sigkill"))
        .await
        .unwrap();
    create_slot(store.as_ref(), "chat.default").await.unwrap();
    signal("sigkill", "-KILL");

    // The next call fails with Unavailable, at once, not after the call timeout.
    let t0 = Instant::now();
    let mut err = None;
    while t0.elapsed() < Duration::from_secs(2) {
        match store.get_slot(&SlotName::new("chat.default").unwrap()).await {
            Err(e) => {
                err = Some(e);
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let err = err.expect("a call to a killed plugin fails");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
    assert_eq!(store.status().health, PluginHealth::Restarting);

    // During the backoff: refused at once, saying when the next attempt is.
    let t1 = Instant::now();
    let err = create_slot(store.as_ref(), "other").await.unwrap_err();
    assert!(t1.elapsed() < Duration::from_millis(150), "waited {:?}", t1.elapsed());
    assert!(err.to_string().contains("restarting: next attempt in"), "{err}");

    // After it: started again, and the slot acknowledged before the kill is there.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let slot = store.get_slot(&SlotName::new("chat.default").unwrap()).await.unwrap();
    assert!(slot.is_some(), "an acknowledged write survives the plugin's SIGKILL");
    let st = store.status();
    assert_eq!((st.restarts, st.health), (1, PluginHealth::Healthy), "{st:?}");
    assert!(!st.version.is_empty());
    // Errors of the store itself still cross as their own variant.
    let dup = create_slot(store.as_ref(), "chat.default").await.unwrap_err();
    assert!(matches!(dup, StoreError::AlreadyExists { .. }), "{dup:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exec_store_that_stops_answering_times_out_and_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hang.db");
    let mut s = spec(exe("actuator-store-example"), FileTier::Exec, &db, "sigstop");
    s.limits.call_timeout = Duration::from_millis(500);
    let store = load_store(s).await.unwrap();
    create_slot(store.as_ref(), "a.b").await.unwrap();
    signal("sigstop", "-STOP");
    let t0 = Instant::now();
    let err = create_slot(store.as_ref(), "c.d").await.unwrap_err();
    let waited = t0.elapsed();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("no answer to store.create_slot within"), "{err}");
    assert!(err.to_string().contains("re-read before retrying"), "{err}");
    assert!(waited < Duration::from_millis(1500), "the timeout took {waited:?}");
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The stopped process was killed; a new one serves the same file.
    assert!(store.get_slot(&SlotName::new("a.b").unwrap()).await.unwrap().is_some());
    assert_eq!(store.status().restarts, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn store_plugins_of_another_version_magic_or_kind_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let future = [
        (exe("actuator-plugin-fixture-future"), FileTier::Exec),
        (artifact(&dylib("actuator_plugin_fixture_future")), FileTier::Cdylib),
    ];
    for (path, tier) in future {
        let err = load_store(spec(path, tier, &db, "future")).await.unwrap_err().to_string();
        assert!(
            err.contains("plugin API 2.0") && err.contains("this host speaks 1.1"),
            "{tier:?}: {err}"
        );
    }
    // A library whose entry point has the wrong magic: refused before anything is called.
    let bad_magic = artifact(&dylib("actuator_plugin_fixture_badmagic"));
    let err = load_store(spec(bad_magic, FileTier::Cdylib, &db, "magic")).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("with magic 0x21444142, not 0x31544341")
            && msg.contains("not an actuator plugin"),
        "{msg}"
    );
    let notifier = exe("actuator-notifier-example");
    let err = load_store(spec(notifier, FileTier::Exec, &db, "kind")).await.unwrap_err();
    assert!(err.to_string().contains("configured as a store but announces only"), "{err}");
    let fake = dir.path().join("libfake.so");
    std::fs::write(&fake, "not an ELF file").unwrap();
    let err = load_store(spec(fake, FileTier::Cdylib, &db, "fake")).await.unwrap_err();
    assert!(err.to_string().contains("cannot load"), "{err}");
    let mut bad = spec(exe("actuator-store-example"), FileTier::Exec, &db, "badcfg");
    bad.config = json!({ "path": db, "colour": "red" });
    let err = load_store(bad).await.unwrap_err();
    assert!(err.to_string().contains("colour"), "{err}");
    assert!(!db.exists(), "a refused store opens nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_over_the_message_limit_is_refused_before_it_reaches_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let forms = [
        (exe("actuator-store-example"), FileTier::Exec),
        (artifact(&dylib("actuator_store_example")), FileTier::Cdylib),
    ];
    for (path, tier) in forms {
        let db = dir.path().join(format!("{tier:?}.db"));
        let store = load_store(spec(path, tier, &db, "oversize")).await.unwrap();
        let huge = NewSlot {
            name: SlotName::new("a.b").unwrap(),
            description: "x".repeat(17 << 20),
            schema: None,
        };
        let err = store.create_slot(huge, draft("a.b")).await.unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{tier:?}: {err:?}");
        assert!(err.to_string().contains("over the store plugin message limit"), "{err}");
        // Nothing was written, and the plugin serves the next call as before.
        assert!(store.get_slot(&SlotName::new("a.b").unwrap()).await.unwrap().is_none());
        create_slot(store.as_ref(), "a.b").await.unwrap();
        let st = store.status();
        assert_eq!((st.restarts, st.health), (0, PluginHealth::Healthy), "{tier:?}: {st:?}");
    }
}
