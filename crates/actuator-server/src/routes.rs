//! Route handlers, one module per resource family.

pub(crate) mod cluster;
pub(crate) mod config;
pub(crate) mod health;
pub(crate) mod ofrep;
pub(crate) mod plugins;
pub(crate) mod resolve;
pub(crate) mod rollout_events;
pub(crate) mod rollouts;
pub(crate) mod session;
pub(crate) mod tokens;
pub(crate) mod ui;

use crate::error::ApiError;

/// Answers unknown paths with the API's error shape.
pub(crate) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}; the API lives under /v1", uri.path()))
}

/// Answers a known path with the wrong method with the API's error shape.
pub(crate) async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not answer {method}", uri.path()),
    )
}
