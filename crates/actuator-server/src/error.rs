//! The API's error type and its JSON shape.

use actuator_canary::ResolveError;
use actuator_config::ConfigError;
use actuator_core::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An error answered as `{"error": {"code", "message", "details"?}}` with an HTTP status.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What went wrong and what to do.
    pub message: String,
    /// Structured details (validation issues, ...).
    pub details: Option<Value>,
    /// Seconds the caller should wait before trying again, sent as `Retry-After`.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with no details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: None, retry_after_secs: None }
    }

    /// The same error with a `Retry-After` of `secs` seconds.
    #[must_use]
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// 400 with code `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 404 with code `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if let Some(d) = self.details {
            body["error"]["details"] = d;
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        let code = e.code();
        let status = match &e {
            ConfigError::UnknownSlot(_)
            | ConfigError::UnknownVersion { .. }
            | ConfigError::UnknownSnapshot(_) => StatusCode::NOT_FOUND,
            ConfigError::Invalid { .. } | ConfigError::InvalidSchema { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ConfigError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ConfigError::NoActiveVersion(_)
            | ConfigError::RolloutActive { .. }
            | ConfigError::NothingToAcknowledge(_) => StatusCode::CONFLICT,
            ConfigError::Core(_) => StatusCode::BAD_REQUEST,
            ConfigError::Store(s) => return s.clone().into(),
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let details = match &e {
            ConfigError::Invalid { issues, .. } => serde_json::to_value(issues).ok(),
            _ => None,
        };
        Self { status, code, message: e.to_string(), details, retry_after_secs: None }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, code) = match &e {
            StoreError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            StoreError::AlreadyExists { .. } => (StatusCode::CONFLICT, "already_exists"),
            StoreError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            StoreError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            StoreError::Limit { .. } => (StatusCode::CONFLICT, "rollout_limit"),
            StoreError::SlotHeld { .. } => (StatusCode::CONFLICT, "rollout_active"),
            StoreError::StableChanged { .. } => (StatusCode::CONFLICT, "conflict"),
            StoreError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            StoreError::ChainBroken(_) => (StatusCode::SERVICE_UNAVAILABLE, "audit_chain_broken"),
            StoreError::Fenced { .. } => {
                return Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_leader", e.to_string())
                    .retry_after(1);
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<ResolveError> for ApiError {
    fn from(e: ResolveError) -> Self {
        let (status, code) = match &e {
            ResolveError::FlagNotFound { .. } => (StatusCode::NOT_FOUND, "slot_not_found"),
            ResolveError::TargetingKeyMissing { .. } => {
                (StatusCode::BAD_REQUEST, "targeting_key_missing")
            }
            ResolveError::InvalidContext { .. } => (StatusCode::BAD_REQUEST, "invalid_context"),
            ResolveError::Parse(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ResolveError::General(_) => (StatusCode::INTERNAL_SERVER_ERROR, "resolve_failed"),
        };
        Self::new(status, code, e.to_string())
    }
}
