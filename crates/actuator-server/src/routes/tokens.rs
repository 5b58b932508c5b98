//! `/v1/tokens`: create (the secret is answered once), list and revoke API tokens. Admin only
//! (or anyone on an open daemon, which is how the first token is made locally).

use actuator_core::AuditDraft;
use actuator_core::token::{
    NewToken, Role, TokenRecord, generate_secret, hash_secret, validate_secret, validate_token_name,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Actor, ApiJson};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tokens", get(list).post(create))
        .route("/v1/tokens/{name}", delete(revoke))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    name: String,
    role: Role,
    /// A secret to use instead of a generated one (24 to 256 visible ASCII characters).
    #[serde(default)]
    secret: Option<String>,
}

/// A token as the API shows it (never the hash).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct TokenView {
    name: String,
    role: Role,
    created_at: chrono::DateTime<chrono::Utc>,
    /// Only in the answer to the create request.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl From<TokenRecord> for TokenView {
    fn from(t: TokenRecord) -> Self {
        Self { name: t.name, role: t.role, created_at: t.created_at, secret: None }
    }
}

async fn refresh(st: &AppState) {
    if let Err(e) = st.reload_tokens().await {
        tracing::warn!(error = %e, "reloading API tokens after a change failed; the resync will retry");
    }
}

async fn create(
    State(st): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<TokenView>), ApiError> {
    validate_token_name(&body.name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let secret = match body.secret {
        Some(s) => {
            validate_secret(&s).map_err(|e| ApiError::bad_request(e.to_string()))?;
            s
        }
        None => generate_secret(),
    };
    let audit = AuditDraft::success(&actor.0, "token.create", &body.name)
        .with_metadata(serde_json::json!({"role": body.role}));
    let rec = st
        .store()
        .create_token(
            NewToken { name: body.name, role: body.role, hash: hash_secret(&secret) },
            audit,
        )
        .await?;
    tracing::info!(token = %rec.name, role = %rec.role, actor = %actor.0, "API token created");
    refresh(&st).await;
    let mut view = TokenView::from(rec);
    view.secret = Some(secret);
    Ok((StatusCode::CREATED, Json(view)))
}

async fn list(State(st): State<AppState>) -> Result<Json<Vec<TokenView>>, ApiError> {
    let all = st.store().list_tokens().await?;
    Ok(Json(all.into_iter().map(TokenView::from).collect()))
}

async fn revoke(
    State(st): State<AppState>,
    Path(name): Path<String>,
    actor: Actor,
) -> Result<Json<TokenView>, ApiError> {
    let audit = AuditDraft::success(&actor.0, "token.revoke", &name);
    let rec = st.store().revoke_token(&name, audit).await?;
    tracing::info!(token = %rec.name, actor = %actor.0, "API token revoked");
    refresh(&st).await;
    Ok(Json(TokenView::from(rec)))
}
