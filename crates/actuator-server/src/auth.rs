//! Who may call what: bearer tokens with roles, checked on every route from one table
//! ([`access`]); the browser-safety checks (JSON-only mutations, the `Host` of an open
//! daemon); the in-memory token table, rebuilt from the store.
//!
//! With no token stored the daemon is *open*: every request acts with every role, as
//! `anonymous` or the `X-Actuator-Actor` it names. [`AuthSettings::allow_open`] says whether
//! that is allowed at all (the binary allows it only on a loopback address).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actuator_core::token::{Role, hash_secret};
use actuator_core::{Store, StoreError};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;

/// The audit actor of a request in an open daemon that does not name one.
pub const OPEN_ACTOR: &str = "anonymous";

/// How requests are authenticated and which hosts an open daemon answers.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// Whether the daemon may run without tokens (when none is stored). The binary sets it
    /// only when it listens on a loopback address.
    pub allow_open: bool,
    /// Host names (without port) an open daemon answers besides `localhost`, `127.0.0.1`
    /// and `::1`: a check against DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://ops.example.com`) whose web pages may call the API (CORS). Empty,
    /// the default: no cross-origin access.
    pub cors_origins: Vec<String>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self { allow_open: true, allowed_hosts: Vec::new(), cors_origins: Vec::new() }
    }
}

impl AuthSettings {
    /// The CORS layer for [`AuthSettings::cors_origins`], or `None` when there is none.
    ///
    /// # Errors
    /// An origin that is not a valid header value.
    pub fn cors(&self) -> Result<Option<tower_http::cors::CorsLayer>, String> {
        if self.cors_origins.is_empty() {
            return Ok(None);
        }
        let origins = self
            .cors_origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o.trim_end_matches('/'))
                    .map_err(|_| format!("server.cors_origins: {o:?} is not a valid origin"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::POST, Method::DELETE])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                .max_age(Duration::from_secs(600)),
        ))
    }
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// An open daemon: every role; the actor is what the caller says (or `anonymous`).
    Open {
        /// The audit actor.
        actor: String,
    },
    /// A token.
    Token {
        /// The token's name: the audit actor.
        name: String,
        /// Its role.
        role: Role,
    },
}

impl Principal {
    /// The audit actor.
    pub fn actor(&self) -> &str {
        match self {
            Self::Open { actor } => actor,
            Self::Token { name, .. } => name,
        }
    }

    /// Whether it may see secret config fields (clients, and anyone on an open daemon).
    pub fn sees_secrets(&self) -> bool {
        match self {
            Self::Open { .. } => true,
            Self::Token { role, .. } => *role == Role::Client,
        }
    }

    fn may(&self, access: Access) -> bool {
        let role = match self {
            Self::Open { .. } => return true,
            Self::Token { role, .. } => *role,
        };
        match access {
            Access::Public => true,
            Access::Read => role.includes(Role::Viewer),
            Access::Operate => role.includes(Role::Operator),
            Access::Admin => role.includes(Role::Admin),
            Access::Resolve => role == Role::Client || role.includes(Role::Viewer),
            Access::Report => role == Role::Client || role.includes(Role::Operator),
        }
    }
}

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone (liveness and readiness probes).
    Public,
    /// `viewer` or above.
    Read,
    /// `operator` or above.
    Operate,
    /// `admin`.
    Admin,
    /// Resolving a config: `client`, or `viewer` and above (who get secrets masked).
    Resolve,
    /// Reporting observations: `client`, or `operator` and above.
    Report,
}

impl Access {
    /// The roles that have it, for error messages and the docs.
    pub fn roles(self) -> &'static str {
        match self {
            Self::Public => "none",
            Self::Read => "viewer, operator or admin",
            Self::Operate => "operator or admin",
            Self::Admin => "admin",
            Self::Resolve => "client, viewer, operator or admin",
            Self::Report => "client, operator or admin",
        }
    }
}

/// What `method` on the route `path` (as registered, e.g. `/v1/rollouts/{id}`) needs. One
/// table for every route, so the table-driven tests and the docs read the same rules.
pub fn access(method: &Method, path: &str) -> Access {
    match path {
        "/healthz" | "/readyz" | "/openapi.json" => Access::Public,
        // The dashboard's files hold no data; its data calls carry the token.
        "/ui" | "/ui/" | "/ui/{*file}" => Access::Public,
        // Any token may ask who it is.
        "/v1/whoami" => Access::Resolve,
        "/metrics" => Access::Read,
        "/v1/resolve" => Access::Resolve,
        p if p.starts_with("/ofrep/") => Access::Resolve,
        "/v1/observations" => Access::Report,
        "/v1/audit/verify"
        | "/v1/audit/verify/full"
        | "/v1/audit/verify/jobs/{id}"
        | "/v1/audit/acknowledge" => Access::Admin,
        p if p.starts_with("/v1/tokens") => Access::Admin,
        _ if method == Method::GET || method == Method::HEAD => Access::Read,
        _ => Access::Operate,
    }
}

/// The tokens the server knows, by the hash of their secret; rebuilt from the store.
#[derive(Clone, Debug, Default)]
pub struct TokenTable {
    inner: Arc<RwLock<HashMap<String, (String, Role)>>>,
}

impl TokenTable {
    /// Reads every token from the store.
    ///
    /// # Errors
    /// The store's error; the table keeps what it had.
    pub async fn reload(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let tokens = store.list_tokens().await?;
        let map: HashMap<String, (String, Role)> =
            tokens.into_iter().map(|t| (t.hash, (t.name, t.role))).collect();
        let n = map.len();
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(n)
    }

    /// Whether no token is known (the daemon is open, if that is allowed).
    pub fn is_empty(&self) -> bool {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    fn lookup(&self, secret: &str) -> Option<(String, Role)> {
        let h = hash_secret(secret);
        self.inner.read().unwrap_or_else(|p| p.into_inner()).get(&h).cloned()
    }

    /// Rebuilds the table from the store every `every`, to pick up tokens created or
    /// revoked by another process sharing the store. Stops with the returned handle.
    pub fn spawn_resync(
        &self,
        store: Arc<dyn Store>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let table = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = table.reload(store.as_ref()).await {
                    tracing::warn!(error = %e, "reloading API tokens failed; keeping the last table");
                }
            }
        })
    }
}

fn unauthorized(message: impl Into<String>) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Whether the `Host` of a request to an open daemon is a loopback name or an allowed one.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host }
        })
    };
    let name = name.to_ascii_lowercase();
    matches!(name.as_str(), "localhost" | "127.0.0.1" | "::1")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(&name))
}

/// A mutation must say it sends JSON (or NDJSON, for observations): a web page cannot send
/// that cross-site without a CORS preflight, which the daemon does not grant by default.
fn json_body(req: &Request, path: &str) -> Result<(), ApiError> {
    if req.method() != Method::POST && req.method() != Method::PUT && req.method() != Method::PATCH
    {
        return Ok(());
    }
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let ok = ct == "application/json"
        || (path == "/v1/observations"
            && (ct == "application/x-ndjson" || ct == "application/jsonl"));
    if ok {
        Ok(())
    } else {
        let what = if path == "/v1/observations" {
            "`application/json`, `application/x-ndjson` or `application/jsonl`"
        } else {
            "`application/json`"
        };
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "a {} to {path} must be sent with Content-Type {what} (got {:?}); other types are refused so that a web page cannot send it cross-site",
                req.method(),
                if ct.is_empty() { "none" } else { ct.as_str() }
            ),
        ))
    }
}

/// The open daemon's actor: a valid `X-Actuator-Actor`, else [`OPEN_ACTOR`].
fn open_actor(req: &Request) -> Result<String, ApiError> {
    match req.headers().get("x-actuator-actor") {
        None => Ok(OPEN_ACTOR.into()),
        Some(v) => match v.to_str() {
            Ok(s) if !s.trim().is_empty() && s.len() <= 128 => Ok(s.trim().to_owned()),
            _ => Err(ApiError::bad_request(
                "the X-Actuator-Actor header must be 1 to 128 visible ASCII characters",
            )),
        },
    }
}

/// The middleware on every route: authenticates, checks the route's [`access`], the
/// content type of mutations, and (open daemon) the `Host`; puts the [`Principal`] in the
/// request's extensions.
pub(crate) async fn authorize(
    State(st): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |m| m.as_str().to_owned());
    let need = access(req.method(), &path);
    if let Err(e) = json_body(&req, &path) {
        return e.into_response();
    }
    let auth = st.auth();
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().ok().and_then(|s| s.strip_prefix("Bearer ")).map(str::trim));
    let principal = if auth.tokens.is_empty() {
        if !auth.settings.allow_open {
            return unauthorized(
                "this daemon has no API tokens and may not run open; create one (`actuator serve --init-admin-token` or ACTUATOR_ADMIN_TOKEN)",
            );
        }
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
        if let Some(h) = host
            && !host_allowed(&h, &auth.settings.allowed_hosts)
        {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                format!(
                    "this daemon runs without tokens and answers only loopback names or server.allowed_hosts; Host {h:?} is neither"
                ),
            )
            .into_response();
        }
        match open_actor(&req) {
            Ok(actor) => Principal::Open { actor },
            Err(e) => return e.into_response(),
        }
    } else {
        match bearer {
            None if need == Access::Public => Principal::Open { actor: OPEN_ACTOR.into() },
            None => {
                return unauthorized(format!(
                    "{path} needs a token ({}): send `Authorization: Bearer <token>`",
                    need.roles()
                ));
            }
            Some(None) => {
                return unauthorized("the Authorization header must be `Bearer <token>`");
            }
            Some(Some(secret)) => match auth.tokens.lookup(secret) {
                Some((name, role)) => Principal::Token { name, role },
                None => return unauthorized("the token is not valid (unknown or revoked)"),
            },
        }
    };
    if !principal.may(need) {
        let role = match &principal {
            Principal::Token { role, .. } => role.as_str(),
            Principal::Open { .. } => "open",
        };
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {:?} has role {role}; {} {path} needs {}",
                principal.actor(),
                req.method(),
                need.roles()
            ),
        )
        .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// The server's authentication state.
#[derive(Debug, Default)]
pub(crate) struct Auth {
    pub(crate) settings: AuthSettings,
    pub(crate) tokens: TokenTable,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_family_has_its_access() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(access(&get, "/healthz"), Access::Public);
        assert_eq!(access(&post, "/v1/resolve"), Access::Resolve);
        assert_eq!(access(&post, "/ofrep/v1/evaluate/flags"), Access::Resolve);
        assert_eq!(access(&post, "/v1/observations"), Access::Report);
        assert_eq!(access(&get, "/v1/audit/verify"), Access::Admin);
        assert_eq!(access(&Method::POST, "/v1/audit/verify/full"), Access::Admin);
        assert_eq!(access(&get, "/v1/audit/verify/jobs/{id}"), Access::Admin);
        assert_eq!(access(&get, "/v1/tokens"), Access::Admin);
        assert_eq!(access(&get, "/v1/rollouts/{id}"), Access::Read);
        assert_eq!(access(&post, "/v1/rollouts/{id}/{action}"), Access::Operate);
        assert_eq!(access(&Method::DELETE, "/v1/tokens/{name}"), Access::Admin);
        assert_eq!(access(&get, "/v1/rollouts/{id}/events"), Access::Read);
        assert_eq!(access(&get, "/v1/events/rollouts"), Access::Read);
        assert_eq!(access(&get, "/v1/whoami"), Access::Resolve);
        assert_eq!(access(&get, "/ui/{*file}"), Access::Public);
        assert_eq!(access(&get, "/ui"), Access::Public);
    }

    #[test]
    fn roles_meet_the_routes_they_should() {
        let t = |role| Principal::Token { name: "t".into(), role };
        assert!(t(Role::Viewer).may(Access::Read) && !t(Role::Viewer).may(Access::Operate));
        assert!(t(Role::Operator).may(Access::Operate) && !t(Role::Operator).may(Access::Admin));
        assert!(t(Role::Client).may(Access::Resolve) && t(Role::Client).may(Access::Report));
        assert!(!t(Role::Client).may(Access::Read) && !t(Role::Viewer).may(Access::Report));
        assert!(t(Role::Admin).may(Access::Admin) && t(Role::Admin).may(Access::Report));
        assert!(t(Role::Client).sees_secrets() && !t(Role::Admin).sees_secrets());
    }

    #[test]
    fn an_open_daemon_answers_loopback_names_and_the_allowed_ones() {
        let allowed = vec!["actuator.internal".to_owned()];
        for ok in ["localhost:8080", "127.0.0.1", "[::1]:80", "LOCALHOST", "actuator.internal:1"] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in ["evil.example", "evil.example:8080", "127.0.0.1.evil.example", "[::2]:80"] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
    }
}
