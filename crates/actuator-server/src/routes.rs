//! Route handlers, one module per resource family.

pub(crate) mod config;
pub(crate) mod health;
pub(crate) mod ofrep;
pub(crate) mod resolve;
pub(crate) mod rollouts;

use crate::error::ApiError;

/// Answers unknown paths with the API's error shape.
pub(crate) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}; the API lives under /v1", uri.path()))
}
