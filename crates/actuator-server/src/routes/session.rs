//! `GET /v1/whoami`: who the caller is (the token's name and role), so that a client such as
//! the dashboard can show only the controls its token may use.

use axum::Json;
use axum::Router;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/whoami", get(whoami))
}

/// The answer of `GET /v1/whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub(crate) struct WhoAmI {
    /// The audit actor: the token's name, or on an open daemon `anonymous` (or the
    /// `X-Actuator-Actor` the request names).
    pub(crate) name: String,
    /// `client`, `viewer`, `operator` or `admin`; `open` when the daemon has no token (every
    /// request then acts with every role).
    pub(crate) role: String,
    /// Whether the daemon runs without tokens.
    pub(crate) open: bool,
}

impl WhoAmI {
    fn of(p: &Principal) -> Self {
        match p {
            Principal::Open { actor } => {
                Self { name: actor.clone(), role: "open".into(), open: true }
            }
            Principal::Token { name, role } => {
                Self { name: name.clone(), role: role.as_str().into(), open: false }
            }
        }
    }
}

async fn whoami(principal: Option<axum::Extension<Principal>>) -> Result<Json<WhoAmI>, ApiError> {
    match principal {
        Some(axum::Extension(p)) => Ok(Json(WhoAmI::of(&p))),
        None => Err(ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request reached a handler without passing the authorization check",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actuator_core::token::Role;

    #[test]
    fn names_the_role_or_says_open() {
        let t = WhoAmI::of(&Principal::Token { name: "ci".into(), role: Role::Viewer });
        assert_eq!((t.name.as_str(), t.role.as_str(), t.open), ("ci", "viewer", false));
        let o = WhoAmI::of(&Principal::Open { actor: "anonymous".into() });
        assert_eq!((o.role.as_str(), o.open), ("open", true));
    }
}
