//! The OpenAPI document: the checked-in copy is what the server serves, and every operation
//! it lists is a route the router answers.

use std::sync::Arc;

use actuator_config::{ConfigManager, ConfigSettings};
use actuator_core::testing::MemoryStore;
use actuator_server::{AppState, RouteBook, router};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

fn app() -> axum::Router {
    let store = Arc::new(MemoryStore::new());
    let config = ConfigManager::new(store.clone(), vec![], ConfigSettings::default());
    router(AppState::new(config, RouteBook::new(store)))
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, Value) {
    let resp = app
        .clone()
        .oneshot(Request::builder().uri(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_checked_in_document_is_what_the_server_serves() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let text = std::fs::read_to_string(path).expect("docs/openapi.json");
    let checked_in: Value = serde_json::from_str(&text).expect("valid JSON");
    let (s, served) = get(&app(), "/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(served, actuator_server::openapi::document());
    assert!(
        checked_in == served,
        "docs/openapi.json is out of date: run `cargo xtask openapi` and commit it"
    );
    assert_eq!(served["openapi"], "3.1.0");
}

#[tokio::test]
async fn every_documented_operation_is_a_route() {
    let doc = actuator_server::openapi::document();
    let app = app();
    let paths = doc["paths"].as_object().expect("paths");
    let mut n = 0;
    for (path, ops) in paths {
        for (method, op) in ops.as_object().expect("operations") {
            let mut uri = path.clone();
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" {
                    let name = p["name"].as_str().unwrap_or("");
                    uri = uri.replace(&format!("{{{name}}}"), p["example"].as_str().unwrap_or("x"));
                }
            }
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let req = Request::builder()
                .method(m.clone())
                .uri(&uri)
                .header("content-type", "application/json")
                .body(Body::from(if m == Method::POST { "{}" } else { "" }))
                .unwrap();
            let resp = app.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let stream = resp
                .headers()
                .get("content-type")
                .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
            if stream {
                // An event stream does not end; its status is what this test checks.
                assert!(op["responses"].get(status.as_str()).is_some(), "{method} {uri}: {status}");
                n += 1;
                continue;
            }
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            let unrouted =
                body["error"]["message"].as_str().is_some_and(|m| m.starts_with("no route"));
            assert!(!unrouted, "{method} {uri} is documented but not routed");
            assert!(
                op["responses"].get(status.as_str()).is_some(),
                "{method} {uri} answered an undocumented {status}"
            );
            n += 1;
        }
    }
    assert!(n >= 34, "{n} operations");
}
