//! Bad input over real HTTP: each gets a clear 4xx naming the problem, and nothing changes.

use actuator_tests::{TestDaemon, call, http};
use reqwest::Method;
use serde_json::{Value, json};

async fn state(c: &reqwest::Client, url: &str) -> (Value, Value) {
    let (_, slot) = call(c, Method::GET, &format!("{url}/v1/slots/chat"), None).await;
    let (_, versions) =
        call(c, Method::GET, &format!("{url}/v1/slots/chat/versions?limit=100"), None).await;
    (json!([slot["latest_version"], slot["active_version"]]), versions)
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let d = TestDaemon::start();
    let c = http();
    let u = &d.url;
    call(&c, Method::POST, &format!("{u}/v1/slots"), Some(json!({"name": "chat"}))).await;
    let (s, _) = call(
        &c,
        Method::POST,
        &format!("{u}/v1/slots/chat/versions"),
        Some(json!({"document": {"model": "a"}})),
    )
    .await;
    assert_eq!(s, 201);
    let before = state(&c, u).await;

    // Malformed JSON.
    let resp = c
        .post(format!("{u}/v1/slots/chat/versions"))
        .header("content-type", "application/json")
        .body("{\"document\": {")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["error"]["code"], "malformed_json");

    // Unknown field.
    let (s, b) = call(
        &c,
        Method::POST,
        &format!("{u}/v1/slots/chat/versions"),
        Some(json!({"document": {"model": "b"}, "actvate": false})),
    )
    .await;
    assert_eq!(s, 422);
    assert!(b["error"]["message"].as_str().unwrap().contains("unknown field `actvate`"), "{b}");

    // Unknown slot and version.
    let (s, b) = call(
        &c,
        Method::POST,
        &format!("{u}/v1/slots/nope/versions"),
        Some(json!({"document": {"model": "b"}})),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("slot_not_found")));
    let (s, b) = call(&c, Method::GET, &format!("{u}/v1/slots/chat/versions/42"), None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("version_not_found")));
    let (s, _) = call(&c, Method::GET, &format!("{u}/v1/slots/chat/diff?from=1&to=9"), None).await;
    assert_eq!(s, 404);

    // A config that fails validation names the field.
    let (s, b) = call(
        &c,
        Method::POST,
        &format!("{u}/v1/slots/chat/versions"),
        Some(json!({"document": {"model": "b", "top_p": 3}})),
    )
    .await;
    assert_eq!(s, 422);
    assert_eq!(b["error"]["code"], "validation_failed");
    assert_eq!(b["error"]["details"][0]["path"], "/top_p");

    // A body over the 1 MiB limit.
    let big = json!({"document": {"model": "b", "prompt": "x".repeat(1024 * 1024 + 10)}});
    let (s, b) = call(&c, Method::POST, &format!("{u}/v1/slots/chat/versions"), Some(big)).await;
    assert_eq!((s, b["error"]["code"].as_str()), (413, Some("payload_too_large")));
    assert!(b["error"]["message"].as_str().unwrap().contains("1048576"), "{b}");

    assert_eq!(state(&c, u).await, before, "refused requests changed the store");

    // Audit still verifies, with failures recorded.
    let (_, v) = call(&c, Method::GET, &format!("{u}/v1/audit/verify"), None).await;
    assert_eq!(v["ok"], true, "{v}");
}

#[tokio::test]
async fn racing_applies_on_one_slot_end_with_exactly_one_winner() {
    let d = TestDaemon::start();
    let c = http();
    let u = d.url.clone();
    call(&c, Method::POST, &format!("{u}/v1/slots"), Some(json!({"name": "chat"}))).await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (c, u) = (c.clone(), u.clone());
        tasks.push(tokio::spawn(async move {
            call(
                &c,
                Method::POST,
                &format!("{u}/v1/slots/chat/versions"),
                Some(json!({"document": {"model": format!("m{i}")}, "expected_latest": 0})),
            )
            .await
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        let (s, b) = t.await.unwrap();
        if s == 409 {
            assert_eq!(b["error"]["code"], "conflict", "{b}");
        }
        codes.push(s);
    }
    assert_eq!(codes.iter().filter(|&&s| s == 201).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&s| s == 409).count(), 11, "{codes:?}");
    let (_, slot) = call(&c, Method::GET, &format!("{u}/v1/slots/chat"), None).await;
    assert_eq!(slot["latest_version"], 1);
}
