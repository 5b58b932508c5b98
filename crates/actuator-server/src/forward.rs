//! Forwarding on a follower: every request only the leader can serve (writes under `/v1/`
//! and the reads that need the rollout engine) is sent to the leader's URL with the
//! caller's headers (its `Authorization` included: the leader authenticates and audits the
//! caller itself, once), and the leader's answer is streamed back as it comes.
//!
//! A request is forwarded at most once: it carries [`FORWARDED_BY_HEADER`], and a replica
//! that gets a forwarded request it cannot serve answers 503 `not_leader`. With no leader
//! known, or the leader unreachable, the answer is 503 `no_leader` with `Retry-After: 1`.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;

/// The header a follower marks a forwarded request with; its value is the follower's
/// replica id.
pub const FORWARDED_BY_HEADER: &str = "x-actuator-forwarded-by";

/// How long the leader has to answer a forwarded request's headers, and to send each next
/// piece of its body.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting to the leader may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether `method path` (a route pattern such as `/v1/rollouts/{id}`) is served only by
/// the leader: every non-GET under `/v1/` but resolve, and the reads that need the rollout
/// engine (rollouts, rollbacks, stats, rollout events) or write (audit verification).
pub fn needs_leader(method: &Method, path: &str) -> bool {
    if !path.starts_with("/v1/") || path == "/v1/resolve" {
        return false;
    }
    if method != Method::GET && method != Method::HEAD {
        return true;
    }
    path.starts_with("/v1/rollouts")
        || path.starts_with("/v1/events/rollouts")
        || path.starts_with("/v1/audit/verify")
        || path == "/v1/rollbacks"
        || path == "/v1/stats"
}

/// Hop-by-hop headers (and the ones the client recomputes): never passed on.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !hop_by_hop(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

fn no_leader(message: String) -> Response {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", message)
        .retry_after(1)
        .into_response()
}

/// The HTTP client of forwarded requests.
#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    client: Option<reqwest::Client>,
}

impl Forwarder {
    pub(crate) fn new() -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build();
        match client {
            Ok(c) => Self { client: Some(c) },
            Err(e) => {
                tracing::error!(error = %e, "cannot build the client that forwards to the leader");
                Self { client: None }
            }
        }
    }

    /// Sends `req` (its body already read: `body`) to `leader` and streams its answer back.
    async fn send(&self, req: Request, body: bytes::Bytes, leader: &str, me: &str) -> Response {
        let Some(client) = &self.client else {
            return no_leader("this replica cannot forward to the leader (no HTTP client)".into());
        };
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let url = format!("{}{path}", leader.trim_end_matches('/'));
        let mut headers = HeaderMap::new();
        copy_headers(req.headers(), &mut headers);
        let Ok(mark) = header::HeaderValue::from_str(me) else {
            return no_leader("this replica's id cannot be sent as a header".into());
        };
        headers.insert(FORWARDED_BY_HEADER, mark);
        let sent = client.request(req.method().clone(), &url).headers(headers).body(body).send();
        let resp = match tokio::time::timeout(FORWARD_TIMEOUT, sent).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(leader, error = %e, "forwarding to the leader failed");
                return no_leader(format!(
                    "the leader at {leader} cannot be reached ({e}); retry shortly"
                ));
            }
            Err(_) => {
                tracing::warn!(leader, "the leader did not answer a forwarded request in time");
                return no_leader(format!(
                    "the leader at {leader} did not answer within {} s; retry shortly (a write may have been applied: read before repeating it)",
                    FORWARD_TIMEOUT.as_secs()
                ));
            }
        };
        let status = resp.status();
        let mut out_headers = HeaderMap::new();
        copy_headers(resp.headers(), &mut out_headers);
        let stream = futures::stream::unfold(Some(resp), |state| async move {
            let mut r = state?;
            match tokio::time::timeout(FORWARD_TIMEOUT, r.chunk()).await {
                Ok(Ok(Some(c))) => Some((Ok(c), Some(r))),
                Ok(Ok(None)) => None,
                Ok(Err(e)) => Some((Err(std::io::Error::other(e)), None)),
                Err(_) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the leader stopped sending the body",
                    )),
                    None,
                )),
            }
        });
        let mut out = Response::new(Body::from_stream(stream));
        *out.status_mut() = status;
        *out.headers_mut() = out_headers;
        out
    }
}

/// The middleware: forwards what only the leader serves when this replica follows.
pub(crate) async fn forward(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(cluster) = st.cluster() else { return next.run(req).await };
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |m| m.as_str().to_owned());
    if !needs_leader(req.method(), &path) || cluster.leading_epoch().is_some() {
        return next.run(req).await;
    }
    if let Some(by) = req.headers().get(FORWARDED_BY_HEADER) {
        let by = by.to_str().unwrap_or("another replica");
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_leader",
            format!(
                "replica {} does not lead (it was forwarded this request by {by}, which believed it did); retry shortly",
                cluster.replica_id()
            ),
        )
        .retry_after(1)
        .into_response();
    }
    let Some(leader) = cluster.leader_url() else {
        return no_leader("no replica leads now (an election is under way); retry shortly".into());
    };
    // The limits that apply on the leader apply here first: nothing larger is sent on.
    let limit = if path == "/v1/observations" {
        crate::MAX_OBSERVATION_BODY_BYTES
    } else {
        crate::MAX_BODY_BYTES
    };
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, limit).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is over the limit of {limit} bytes"),
        )
        .into_response();
    };
    let req = Request::from_parts(parts, Body::empty());
    st.forwarder().send(req, body, &leader, cluster.replica_id()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_leader_serves_is_forwarded() {
        let get = Method::GET;
        let post = Method::POST;
        assert!(!needs_leader(&post, "/v1/resolve"));
        assert!(!needs_leader(&post, "/ofrep/v1/evaluate/flags"));
        assert!(!needs_leader(&get, "/v1/slots/{slot}"));
        assert!(!needs_leader(&get, "/v1/cluster"));
        assert!(!needs_leader(&get, "/v1/audit"));
        assert!(!needs_leader(&get, "/readyz"));
        assert!(needs_leader(&post, "/v1/slots/{slot}/versions"));
        assert!(needs_leader(&post, "/v1/observations"));
        assert!(needs_leader(&Method::DELETE, "/v1/tokens/{name}"));
        assert!(needs_leader(&get, "/v1/rollouts/{id}"));
        assert!(needs_leader(&get, "/v1/rollouts"));
        assert!(needs_leader(&get, "/v1/stats"));
        assert!(needs_leader(&get, "/v1/events/rollouts"));
        assert!(needs_leader(&get, "/v1/audit/verify"));
    }
}
