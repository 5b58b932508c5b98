//! SIGKILL in the middle of a stream of applies: every acknowledged version survives and
//! the audit chain verifies after restart.

use actuator_tests::{TestDaemon, call, http};
use reqwest::Method;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_daemon_keeps_every_acknowledged_version() {
    let dir = tempfile::tempdir().unwrap();
    let c = http();
    let mut d = TestDaemon::start_in(dir.path());
    call(&c, Method::POST, &format!("{}/v1/slots", d.url), Some(json!({"name": "chat"}))).await;
    let acked: Arc<Mutex<BTreeMap<u64, String>>> = Arc::default();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for round in 0..6 {
        let url = d.url.clone();
        let (c2, acked2) = (c.clone(), acked.clone());
        let writer = tokio::spawn(async move {
            for i in 0.. {
                let model = format!("round{round}-apply{i}");
                let r = c2
                    .post(format!("{url}/v1/slots/chat/versions"))
                    .header("x-actuator-actor", "writer")
                    .json(&json!({"document": {"model": model}, "message": "stream"}))
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().as_u16() == 201 => {
                        let v: serde_json::Value = resp.json().await.unwrap_or_default();
                        if let Some(n) = v["version_number"].as_u64() {
                            acked2.lock().unwrap().insert(n, model);
                        }
                    }
                    _ => break,
                }
            }
        });
        // xorshift: a different kill moment each round, 30 to 330 ms in.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(30 + seed % 300)).await;
        d.kill();
        let _ = writer.await;
        d = TestDaemon::start_in(dir.path());
        let acked_now = acked.lock().unwrap().clone();
        for (version, model) in &acked_now {
            let (s, v) =
                call(&c, Method::GET, &format!("{}/v1/slots/chat/versions/{version}", d.url), None)
                    .await;
            assert_eq!(s, 200, "round {round}: acknowledged version {version} lost");
            assert_eq!(
                v["document"]["model"],
                json!(model),
                "round {round}: version {version} changed"
            );
        }
        let (_, report) = call(&c, Method::GET, &format!("{}/v1/audit/verify", d.url), None).await;
        assert_eq!(report["ok"], true, "round {round}: {report}");
    }
    assert!(acked.lock().unwrap().len() > 6, "the writer should have landed some versions");
}
