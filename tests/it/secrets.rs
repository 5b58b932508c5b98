//! Secret config fields against the real daemon: stored and served to applications, masked
//! everywhere people look (versions, diffs, snapshots, the audit log, resolutions for
//! people's tokens), while the audit chain still covers the real values.

use actuator_tests::{TestDaemon, http};
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "secrets-admin-secret-0123456789abc";
const KEY: &str = "sk-live-abcdef123456";
const PASS: &str = "hunter2-correct-horse";

async fn req(
    c: &reqwest::Client,
    method: Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    actuator_tests::call_as(c, method, url, Some(token), body).await
}

async fn token(c: &reqwest::Client, url: &str, name: &str, role: &str) -> String {
    let body = json!({"name": name, "role": role});
    let (s, b) = req(c, Method::POST, &format!("{url}/v1/tokens"), ADMIN, Some(body)).await;
    assert_eq!(s, 201, "{b}");
    b["secret"].as_str().expect("secret").to_owned()
}

#[tokio::test]
async fn secrets_are_served_to_clients_and_masked_everywhere_else() {
    let d = TestDaemon::start_env(&[("ACTUATOR_ADMIN_TOKEN", ADMIN)]);
    let c = http();
    let u = d.url.clone();
    let viewer = token(&c, &u, "viewer-bot", "viewer").await;
    let client = token(&c, &u, "app", "client").await;
    // `endpoint.auth` is secret by the schema; `api_key` by its name.
    let schema = json!({"type": "object", "properties": {
        "endpoint": {"type": "object", "properties": {"auth": {"type": "string", "writeOnly": true, "maxLength": 24}}},
        "api_key": {"type": "string"}
    }});
    let (s, b) = req(
        &c,
        Method::POST,
        &format!("{u}/v1/slots"),
        ADMIN,
        Some(json!({"name": "chat", "schema": schema})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let doc = |model: &str, key: &str| json!({"model": model, "api_key": key, "endpoint": {"url": "https://llm", "auth": PASS}});
    let versions = format!("{u}/v1/slots/chat/versions");
    let (s, b) =
        req(&c, Method::POST, &versions, ADMIN, Some(json!({"document": doc("a", KEY)}))).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["version"]["document"]["api_key"], "***", "{b}");
    let (s, _) = req(
        &c,
        Method::POST,
        &format!("{u}/v1/slots/chat/snapshots"),
        ADMIN,
        Some(json!({"label": "s"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, b) = req(
        &c,
        Method::POST,
        &versions,
        ADMIN,
        Some(json!({"document": doc("b", "sk-live-rotated-99")})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    // A refused apply whose error would quote the secret.
    let bad = json!({"document": {"model": "c", "api_key": KEY, "endpoint": {"auth": "this-secret-is-far-too-long-for-it"}}});
    let (s, _) = req(&c, Method::POST, &versions, ADMIN, Some(bad)).await;
    assert_eq!(s, 422);

    // Everything a person reads.
    let mut seen = String::new();
    for path in [
        "/v1/slots/chat",
        "/v1/slots/chat/versions",
        "/v1/slots/chat/versions/1",
        "/v1/slots/chat/diff?from=1&to=2",
        "/v1/slots/chat/snapshots",
        "/v1/snapshots",
        "/v1/audit?limit=100",
    ] {
        for t in [ADMIN, viewer.as_str()] {
            let (s, b) = req(&c, Method::GET, &format!("{u}{path}"), t, None).await;
            assert_eq!(s, 200, "{path}: {b}");
            seen.push_str(&b.to_string());
        }
    }
    let (_, v1) = req(&c, Method::GET, &format!("{u}/v1/slots/chat/versions/1"), ADMIN, None).await;
    assert_eq!(v1["document"]["endpoint"], json!({"url": "https://llm", "auth": "***"}));
    let (_, diff) =
        req(&c, Method::GET, &format!("{u}/v1/slots/chat/diff?from=1&to=2"), ADMIN, None).await;
    let changed = diff["changed"].as_array().expect("changed");
    assert!(
        changed.iter().any(|x| x["path"] == "/api_key" && x["from"] == "***" && x["to"] == "***"),
        "a changed secret shows as changed: {diff}"
    );
    // Resolutions for people's tokens.
    for t in [ADMIN, viewer.as_str()] {
        let (s, b) = req(
            &c,
            Method::POST,
            &format!("{u}/v1/resolve"),
            t,
            Some(json!({"slot": "chat", "context": {"targetingKey": "u1"}})),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["config"]["api_key"], "***", "{b}");
        seen.push_str(&b.to_string());
        let (s, b) = req(
            &c,
            Method::POST,
            &format!("{u}/ofrep/v1/evaluate/flags/chat"),
            t,
            Some(json!({"context": {"targetingKey": "u1"}})),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        seen.push_str(&b.to_string());
    }
    for secret in [KEY, PASS, "sk-live-rotated-99", "this-secret-is-far-too-long-for-it"] {
        assert!(!seen.contains(secret), "{secret} leaked to a person");
    }
    assert!(seen.contains("\"***\""));

    // The application gets the real values.
    let (s, b) = req(
        &c,
        Method::POST,
        &format!("{u}/v1/resolve"),
        &client,
        Some(json!({"slot": "chat", "context": {"targetingKey": "u1"}})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["config"]["api_key"], "sk-live-rotated-99");
    assert_eq!(b["config"]["endpoint"]["auth"], PASS);
    let (s, b) = req(
        &c,
        Method::POST,
        &format!("{u}/ofrep/v1/evaluate/flags"),
        &client,
        Some(json!({"context": {"targetingKey": "u1"}})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["flags"][0]["value"]["endpoint"]["auth"], PASS, "{b}");

    // A restore of the snapshot brings the real first key back to the application, and the
    // audit chain (which covers the stored documents) verifies.
    let (_, snaps) =
        req(&c, Method::GET, &format!("{u}/v1/slots/chat/snapshots"), ADMIN, None).await;
    let id = snaps["items"][0]["id"].as_str().expect("snapshot id").to_owned();
    let (s, b) =
        req(&c, Method::POST, &format!("{u}/v1/snapshots/{id}/restore"), ADMIN, Some(json!({})))
            .await;
    assert_eq!(s, 200, "{b}");
    let (_, b) = req(
        &c,
        Method::POST,
        &format!("{u}/v1/resolve"),
        &client,
        Some(json!({"slot": "chat", "context": {"targetingKey": "u1"}})),
    )
    .await;
    assert_eq!(b["config"]["api_key"], KEY);
    let (s, b) = req(&c, Method::GET, &format!("{u}/v1/audit/verify"), ADMIN, None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["ok"], true, "{b}");
}
