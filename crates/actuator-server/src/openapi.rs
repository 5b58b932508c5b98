//! The OpenAPI 3.1 document of the API, generated from the handlers' request and response
//! types (their `schemars::JsonSchema` derives follow the same serde attributes the handlers
//! use) and served at `GET /openapi.json`. `docs/openapi.json` is this document, checked in
//! (`cargo xtask openapi` rewrites it; a test compares the two).

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::routes::{config, ofrep, resolve, rollouts, tokens};

/// The error shape every failure answers with.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ErrorResponse {
    /// The error.
    pub(crate) error: ErrorDetail,
}

/// An error's code and message.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ErrorDetail {
    /// Stable, machine-readable code (see the list in docs/api.md).
    pub(crate) code: String,
    /// What went wrong and what to do.
    pub(crate) message: String,
    /// Structured details (validation issues, readiness reasons), when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) details: Option<Value>,
}

/// Every error status a route can answer, with the codes it carries.
const ERRORS: &[(u16, &str)] = &[
    (
        400,
        "malformed_json, invalid_request, invalid_query, out_of_range, targeting_key_missing, invalid_context, batch_too_large",
    ),
    (401, "unauthorized: no token, or an unknown or revoked one"),
    (403, "forbidden (the token's role lacks the route), host_not_allowed"),
    (404, "not_found, slot_not_found, version_not_found, snapshot_not_found"),
    (405, "method_not_allowed"),
    (
        409,
        "conflict, already_exists, rollout_active, rollout_limit, no_active_version, nothing_to_acknowledge, invalid_transition, audit_verify_running, rollback_refused",
    ),
    (413, "payload_too_large"),
    (415, "unsupported_media_type"),
    (422, "invalid_body, validation_failed, invalid_schema"),
    (
        429,
        "ingest_overloaded: an ingestion shard's queue is full; retry after the Retry-After seconds",
    ),
    (500, "store_error, internal"),
    (
        503,
        "store_unavailable, audit_chain_broken, not_ready, not_running, resuming (with Retry-After), too_many_subscribers, metrics_unavailable, not_leader and no_leader (cluster mode, with Retry-After)",
    ),
];

struct Api {
    generator: SchemaGenerator,
    paths: Map<String, Value>,
}

/// A success response: status, description, and media type with schema (none for 304).
type Answer<'a> = (u16, &'a str, Option<(&'a str, Value)>);

/// One operation: what it takes and what it answers.
struct Op<'a> {
    method: &'a str,
    path: &'a str,
    summary: &'a str,
    public: bool,
    query: Option<Value>,
    body: Option<(Value, &'a [&'a str])>,
    ok: Vec<Answer<'a>>,
}

impl<'a> Op<'a> {
    fn new(method: &'a str, path: &'a str, summary: &'a str) -> Self {
        Self { method, path, summary, public: false, query: None, body: None, ok: Vec::new() }
    }
}

/// The query parameters of a query struct, one per property.
fn query_params<T: JsonSchema>() -> Value {
    let settings = SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true);
    let root = settings.into_generator().into_root_schema_for::<T>();
    let v = root.to_value();
    let required: Vec<&str> = v["required"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    if let Some(props) = v["properties"].as_object() {
        for (name, schema) in props {
            out.push(json!({
                "name": name,
                "in": "query",
                "required": required.contains(&name.as_str()),
                "schema": schema,
            }));
        }
    }
    Value::Array(out)
}

impl Api {
    fn new() -> Self {
        let settings = SchemaSettings::draft2020_12().with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        });
        Self { generator: settings.into_generator(), paths: Map::new() }
    }

    fn schema<T: JsonSchema>(&mut self) -> Value {
        let s: Schema = self.generator.subschema_for::<T>();
        s.to_value()
    }

    fn add(&mut self, op: Op<'_>, errors: &Value) {
        let mut params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}, "example": path_example(name)})
            })
            .collect();
        if let Some(Value::Array(q)) = op.query {
            params.extend(q);
        }
        let mut responses = Map::new();
        for (status, description, content) in op.ok {
            let mut r = json!({"description": description});
            if let Some((media, schema)) = content {
                r["content"] = json!({media: {"schema": schema}});
            }
            responses.insert(status.to_string(), r);
        }
        if let Value::Object(e) = errors {
            for (k, v) in e {
                responses.insert(k.clone(), v.clone());
            }
        }
        let mut o = json!({
            "summary": op.summary,
            "operationId": format!("{} {}", op.method, op.path),
            "parameters": params,
            "responses": responses,
        });
        if op.public {
            o["security"] = json!([]);
        }
        if let Some((schema, media)) = op.body {
            let content: Map<String, Value> =
                media.iter().map(|m| ((*m).to_owned(), json!({"schema": schema}))).collect();
            o["requestBody"] = json!({"required": true, "content": content});
        }
        let entry = self.paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        entry[op.method] = o;
    }
}

const JSON: &[&str] = &["application/json"];

/// An example value of a path parameter, for readers and for the fuzzer's first cases.
fn path_example(name: &str) -> &'static str {
    match name {
        "slot" | "key" => "chat",
        "version" => "1",
        "id" => "ro-example",
        "action" => "pause",
        "name" => "ci-deployer",
        _ => "x",
    }
}

/// The whole document.
pub fn document() -> Value {
    let mut api = Api::new();
    let error = api.schema::<ErrorResponse>();
    let errors: Map<String, Value> = ERRORS
        .iter()
        .map(|(status, codes)| {
            (
                status.to_string(),
                json!({"description": format!("error codes: {codes}"), "content": {"application/json": {"schema": error}}}),
            )
        })
        .collect();
    let errors = Value::Object(errors);
    // OFREP answers its own failures in the protocol's shape ({key?, errorCode,
    // errorDetails}); authentication and content-type refusals keep the API's shape.
    let failure = api.schema::<ofrep::FailureBody<'static>>();
    let ofrep_errors: Map<String, Value> = ERRORS
        .iter()
        .map(|(status, codes)| {
            (
                status.to_string(),
                json!({"description": format!("error codes: {codes}; OFREP failures: PARSE_ERROR, FLAG_NOT_FOUND, TARGETING_KEY_MISSING, INVALID_CONTEXT, GENERAL"), "content": {"application/json": {"schema": {"anyOf": [error, failure]}}}}),
            )
        })
        .collect();
    let ofrep_errors = Value::Object(ofrep_errors);
    let j = "application/json";
    let any = json!({});

    macro_rules! body {
        ($t:ty) => {
            Some((api.schema::<$t>(), JSON))
        };
    }
    macro_rules! ok {
        ($status:expr, $desc:expr, $t:ty) => {
            ($status, $desc, Some((j, api.schema::<$t>())))
        };
    }

    let health = Op {
        public: true,
        ok: vec![(200, "up", Some((j, any.clone())))],
        ..Op::new("get", "/healthz", "Liveness")
    };
    api.add(health, &errors);
    let ready = Op {
        public: true,
        ok: vec![(
            200,
            "ready to take writes and the control loop runs; `cluster` holds this replica's role, the leader's id and the epoch",
            Some((j, any.clone())),
        )],
        ..Op::new("get", "/readyz", "Readiness")
    };
    api.add(ready, &errors);
    let spec = Op {
        public: true,
        ok: vec![(200, "this document", Some((j, any.clone())))],
        ..Op::new("get", "/openapi.json", "The OpenAPI document")
    };
    api.add(spec, &errors);
    let metrics = Op {
        ok: vec![(200, "Prometheus text format", Some(("text/plain", json!({"type": "string"}))))],
        ..Op::new("get", "/metrics", "Metrics (viewer)")
    };
    api.add(metrics, &errors);

    // Slots and versions.
    let op = Op {
        body: body!(config::CreateSlot),
        ok: vec![ok!(201, "created", actuator_core::Slot)],
        ..Op::new("post", "/v1/slots", "Create a slot (operator)")
    };
    api.add(op, &errors);
    let op = Op {
        query: Some(query_params::<config::PageQuery>()),
        ok: vec![ok!(200, "a page of slots", actuator_core::Page<actuator_core::Slot>)],
        ..Op::new("get", "/v1/slots", "List slots")
    };
    api.add(op, &errors);
    let op = Op {
        ok: vec![ok!(200, "the slot and its active version (secrets masked)", config::SlotView)],
        ..Op::new("get", "/v1/slots/{slot}", "A slot")
    };
    api.add(op, &errors);
    let op = Op {
        body: body!(config::ApplyBody),
        ok: vec![
            ok!(200, "dry run", actuator_config::ApplyOutcome),
            ok!(201, "written", actuator_config::ApplyOutcome),
        ],
        ..Op::new("post", "/v1/slots/{slot}/versions", "Apply a config version (operator)")
    };
    api.add(op, &errors);
    let op = Op {
        query: Some(query_params::<config::PageQuery>()),
        ok: vec![ok!(200, "a page of versions", actuator_core::Page<actuator_core::ConfigVersion>)],
        ..Op::new("get", "/v1/slots/{slot}/versions", "Version history")
    };
    api.add(op, &errors);
    let op = Op {
        ok: vec![ok!(200, "the version (secrets masked)", actuator_core::ConfigVersion)],
        ..Op::new("get", "/v1/slots/{slot}/versions/{version}", "A version")
    };
    api.add(op, &errors);
    let op = Op {
        query: Some(query_params::<config::DiffQuery>()),
        ok: vec![ok!(200, "the structural diff", actuator_config::Diff)],
        ..Op::new("get", "/v1/slots/{slot}/diff", "Diff two versions")
    };
    api.add(op, &errors);
    let op = Op {
        body: body!(config::RevertBody),
        ok: vec![ok!(200, "the slot", actuator_core::Slot)],
        ..Op::new("post", "/v1/slots/{slot}/revert", "Revert (operator)")
    };
    api.add(op, &errors);
    let op = Op {
        body: body!(config::SnapshotBody),
        ok: vec![ok!(201, "the snapshot", actuator_core::Snapshot)],
        ..Op::new("post", "/v1/slots/{slot}/snapshots", "Take a snapshot (operator)")
    };
    api.add(op, &errors);
    let op = Op {
        query: Some(query_params::<config::PageQuery>()),
        ok: vec![ok!(200, "a page of snapshots", actuator_core::Page<actuator_core::Snapshot>)],
        ..Op::new("get", "/v1/slots/{slot}/snapshots", "A slot's snapshots")
    };
    api.add(op, &errors);
    let op = Op {
        query: Some(query_params::<config::PageQuery>()),
        ok: vec![ok!(200, "a page of snapshots", actuator_core::Page<actuator_core::Snapshot>)],
        ..Op::new("get", "/v1/snapshots", "Every snapshot")
    };
    api.add(op, &errors);
    let op = Op {
        ok: vec![ok!(200, "the snapshot", actuator_core::Snapshot)],
        ..Op::new("get", "/v1/snapshots/{id}", "A snapshot")
    };
    api.add(op, &errors);
    let op = Op {
        body: body!(rollouts::EmptyBody),
        ok: vec![ok!(200, "the slot", actuator_core::Slot)],
        ..Op::new("post", "/v1/snapshots/{id}/restore", "Restore a snapshot (operator)")
    };
    api.add(op, &errors);
    let op = Op {
        query: Some(query_params::<config::AuditParams>()),
        ok: vec![ok!(
            200,
            "a page of audit entries",
            actuator_core::Page<actuator_core::AuditEntry>
        )],
        ..Op::new("get", "/v1/audit", "The audit log")
    };
    api.add(op, &errors);
    let op = Op {
        ok: vec![ok!(200, "the verification", actuator_core::AuditReport)],
        ..Op::new(
            "get",
            "/v1/audit/verify",
            "Verify the audit entries after the last verified head (admin)",
        )
    };
    api.add(op, &errors);
    let op = Op {
        body: body!(rollouts::EmptyBody),
        ok: vec![ok!(202, "the job, started", crate::verify_jobs::VerifyJobView)],
        ..Op::new(
            "post",
            "/v1/audit/verify/full",
            "Start a full verification of the audit chain in the background (admin)",
        )
    };
    api.add(op, &errors);
    let op = Op {
        ok: vec![ok!(
            200,
            "the job's progress, and its report once done",
            crate::verify_jobs::VerifyJobView
        )],
        ..Op::new("get", "/v1/audit/verify/jobs/{id}", "A full verification job (admin)")
    };
    api.add(op, &errors);
    let op = Op {
        body: body!(config::AcknowledgeBody),
        ok: vec![ok!(201, "the acknowledgement", actuator_config::Acknowledgement)],
        ..Op::new("post", "/v1/audit/acknowledge", "Acknowledge a broken chain (admin)")
    };
    api.add(op, &errors);

    // Serving.
    let op = Op {
        body: body!(resolve::ResolveBody),
        ok: vec![(
            200,
            "a resolution, or a batch of them",
            Some((
                j,
                json!({"oneOf": [api.schema::<resolve::Resolved<'static>>(), api.schema::<resolve::BatchResponse<'static>>()]}),
            )),
        )],
        ..Op::new("post", "/v1/resolve", "Which config serves this request (client, viewer+)")
    };
    api.add(op, &errors);
    let op = Op {
        body: body!(ofrep::EvaluationRequest),
        ok: vec![
            ok!(200, "the evaluation", ofrep::Success<'static>),
            (304, "not modified (If-None-Match)", None),
        ],
        ..Op::new("post", "/ofrep/v1/evaluate/flags/{key}", "OFREP: evaluate one flag")
    };
    api.add(op, &ofrep_errors);
    let op = Op {
        body: body!(ofrep::EvaluationRequest),
        ok: vec![
            ok!(200, "every flag", ofrep::BulkResponse<'static>),
            (304, "not modified (If-None-Match)", None),
        ],
        ..Op::new("post", "/ofrep/v1/evaluate/flags", "OFREP: evaluate every flag")
    };
    api.add(op, &ofrep_errors);
    let op = Op {
        ok: vec![(
            200,
            "server-sent refetchEvaluation events",
            Some(("text/event-stream", json!({"type": "string"}))),
        )],
        ..Op::new("get", "/ofrep/v1/events", "OFREP: change events")
    };
    api.add(op, &errors);

    // Rollouts.
    let op = Op {
        body: body!(actuator_core::DeploymentRequest),
        ok: vec![ok!(201, "the rollout", actuator_engine::RolloutView)],
        ..Op::new("post", "/v1/rollouts", "Start a rollout (operator)")
    };
    api.add(op, &errors);
    let op = Op {
        query: Some(query_params::<rollouts::ListQuery>()),
        ok: vec![ok!(200, "a page of rollouts", actuator_core::Page<actuator_engine::RolloutView>)],
        ..Op::new("get", "/v1/rollouts", "List rollouts")
    };
    api.add(op, &errors);
    let op = Op {
        ok: vec![ok!(200, "the rollout", actuator_engine::RolloutView)],
        ..Op::new("get", "/v1/rollouts/{id}", "A rollout")
    };
    api.add(op, &errors);
    let op = Op {
        ok: vec![(200, "the last evaluation and the health history", Some((j, any)))],
        ..Op::new("get", "/v1/rollouts/{id}/health", "A rollout's analysis")
    };
    api.add(op, &errors);
    let op = Op {
        ok: vec![(
            200,
            "server-sent `rollout` events, each {\"view\": RolloutView, \"health\": ...}: one at once, one after every change",
            // The schema of one event (as SSE clients and schemathesis read it).
            Some((
                "text/event-stream",
                json!({
                    "type": "object",
                    "properties": {
                        "event": {"const": "rollout"},
                        "data": {"type": "string", "contentMediaType": "application/json"},
                        "retry": {"type": "integer", "minimum": 0},
                    },
                    "required": ["event", "data"],
                }),
            )),
        )],
        ..Op::new("get", "/v1/rollouts/{id}/events", "A rollout's live updates")
    };
    api.add(op, &errors);
    let op = Op {
        query: Some(query_params::<crate::routes::rollout_events::ListEventsQuery>()),
        ok: vec![(
            200,
            "server-sent `rollouts` events, each {\"items\": [RolloutView, ...]} (the newest rollouts): one at once, one after every change",
            Some((
                "text/event-stream",
                json!({
                    "type": "object",
                    "properties": {
                        "event": {"const": "rollouts"},
                        "data": {"type": "string", "contentMediaType": "application/json"},
                        "retry": {"type": "integer", "minimum": 0},
                    },
                    "required": ["event", "data"],
                }),
            )),
        )],
        ..Op::new("get", "/v1/events/rollouts", "The rollout list's live updates")
    };
    api.add(op, &errors);
    let op = Op {
        body: body!(rollouts::ActBody),
        ok: vec![ok!(200, "the rollout", actuator_engine::RolloutView)],
        ..Op::new(
            "post",
            "/v1/rollouts/{id}/{action}",
            "pause, resume, promote, skip, abort, retry or rollback (operator)",
        )
    };
    api.add(op, &errors);
    let op = Op {
        query: Some(query_params::<rollouts::PageQuery>()),
        ok: vec![ok!(
            200,
            "a page of rollbacks",
            actuator_core::Page<actuator_engine::RollbackView>
        )],
        ..Op::new("get", "/v1/rollbacks", "Rollback history")
    };
    api.add(op, &errors);
    let op = Op {
        ok: vec![ok!(200, "the counters", actuator_core::ActuatorStats)],
        ..Op::new("get", "/v1/stats", "Rollout counters")
    };
    api.add(op, &errors);
    let op = Op {
        ok: vec![ok!(200, "the caller's name and role", crate::routes::session::WhoAmI)],
        ..Op::new("get", "/v1/whoami", "Who the token is (any role)")
    };
    api.add(op, &errors);
    let op = Op {
        ok: vec![ok!(
            200,
            "every plugin with its kind, tier, version and health",
            crate::routes::plugins::PluginList
        )],
        ..Op::new("get", "/v1/plugins", "Plugins and their health")
    };
    api.add(op, &errors);
    let op = Op {
        ok: vec![ok!(
            200,
            "this replica, the leader named by the lease (epoch, since) and every replica's last poll and sync",
            crate::cluster::ClusterStatus
        )],
        ..Op::new("get", "/v1/cluster", "Replicas and their leader (viewer+)")
    };
    api.add(op, &errors);
    let op = Op {
        body: Some((
            json!({"oneOf": [{"type": "array", "items": {"type": "object"}}, {"type": "object"}]}),
            &["application/json", "application/x-ndjson", "application/jsonl"],
        )),
        ok: vec![ok!(200, "what became of each item", actuator_engine::IngestReport)],
        ..Op::new(
            "post",
            "/v1/observations",
            "Report outcomes and quality scores (client, operator+)",
        )
    };
    api.add(op, &errors);

    // Tokens.
    let op = Op {
        ok: vec![ok!(200, "every token", Vec<tokens::TokenView>)],
        ..Op::new("get", "/v1/tokens", "List tokens (admin)")
    };
    api.add(op, &errors);
    let op = Op {
        body: body!(tokens::CreateBody),
        ok: vec![ok!(201, "the token with its secret, shown once", tokens::TokenView)],
        ..Op::new("post", "/v1/tokens", "Create a token (admin)")
    };
    api.add(op, &errors);
    let op = Op {
        ok: vec![ok!(200, "the revoked token", tokens::TokenView)],
        ..Op::new("delete", "/v1/tokens/{name}", "Revoke a token (admin)")
    };
    api.add(op, &errors);

    let schemas = api.generator.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "actuator",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Safe rollouts of LLM configuration: versioned configs, canary analysis, rollback. Errors have one shape, {\"error\": {\"code\", \"message\", \"details\"?}}.",
        },
        "security": [{"bearer": []}],
        "paths": api.paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API token (docs/operations.md, \"Tokens and roles\"); not needed by a daemon that runs open."}},
        },
    })
}

/// `GET /openapi.json`.
pub(crate) async fn serve() -> axum::Json<Value> {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    axum::Json(DOC.get_or_init(document).clone())
}
