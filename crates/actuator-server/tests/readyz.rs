//! `/readyz` fails, with the reason, while the rollout control loop is not running.

use std::sync::Arc;

use actuator_config::{ConfigManager, ConfigSettings};
use actuator_core::testing::MemoryStore;
use actuator_engine::{Engine, EngineSettings};
use actuator_server::{AppState, RouteBook, router};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

async fn readyz(app: &axum::Router) -> (StatusCode, Value) {
    let resp = app
        .clone()
        .oneshot(Request::builder().uri("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn readyz_follows_the_control_loop() {
    let store = Arc::new(MemoryStore::new());
    let config = ConfigManager::new(store.clone(), vec![], ConfigSettings::default());
    let state = AppState::new(config.clone(), RouteBook::new(store));
    let engine = Engine::new(
        config,
        Arc::new(state.routes().clone()),
        vec![],
        EngineSettings { tick_ms: 10, ..EngineSettings::default() },
    );
    state.attach_engine(engine.clone());
    let app = router(state);
    // Attached but not started: no loop looks at any rollout.
    let (s, b) = readyz(&app).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("control loop is not running"), "{b}");
    engine.start().await.unwrap();
    let (s, b) = readyz(&app).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    engine.stop().await.unwrap();
    let (s, _) = readyz(&app).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
}
