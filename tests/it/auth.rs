//! Tokens and roles against the real daemon: every route with no token, a wrong token and
//! each role; the audit actor is the token's name; what a web page can and cannot make an
//! open daemon do; a public address needs tokens; OpenFeature clients send their token.

use actuator_tests::{TestDaemon, actuator_bin, http};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

const ADMIN: &str = "test-admin-secret-0123456789abcdef";

use actuator_tests::call_as as req;

async fn make_token(c: &reqwest::Client, url: &str, name: &str, role: &str) -> String {
    let (s, b) = req(
        c,
        Method::POST,
        &format!("{url}/v1/tokens"),
        Some(ADMIN),
        Some(json!({"name": name, "role": role})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["role"], role);
    b["secret"].as_str().expect("the secret is answered once").to_owned()
}

/// A daemon that requires tokens, with one token per role and a slot `chat` (version 1
/// active, version 2 the candidate).
async fn secured() -> (TestDaemon, Vec<(&'static str, String)>) {
    let d = TestDaemon::start_env(&[("ACTUATOR_ADMIN_TOKEN", ADMIN)]);
    let c = http();
    let mut tokens = vec![("admin", ADMIN.to_owned())];
    for role in ["operator", "viewer", "client"] {
        tokens.push((role, make_token(&c, &d.url, &format!("{role}-bot"), role).await));
    }
    let u = &d.url;
    let (s, b) =
        req(&c, Method::POST, &format!("{u}/v1/slots"), Some(ADMIN), Some(json!({"name": "chat"})))
            .await;
    assert_eq!(s, 201, "{b}");
    for (model, activate) in [("small", true), ("big", false)] {
        let body = json!({"document": {"model": model}, "activate": activate});
        let (s, b) =
            req(&c, Method::POST, &format!("{u}/v1/slots/chat/versions"), Some(ADMIN), Some(body))
                .await;
        assert_eq!(s, 201, "{b}");
    }
    (d, tokens)
}

/// Every route: method, path, body, and the roles that may call it.
fn routes() -> Vec<(Method, &'static str, Option<Value>, &'static [&'static str])> {
    const ALL: &[&str] = &["admin", "operator", "viewer", "client"];
    const READ: &[&str] = &["admin", "operator", "viewer"];
    const OPERATE: &[&str] = &["admin", "operator"];
    const ADMIN_ONLY: &[&str] = &["admin"];
    const RESOLVE: &[&str] = ALL;
    const REPORT: &[&str] = &["admin", "operator", "client"];
    let ctx = json!({"context": {"targetingKey": "u1"}});
    vec![
        (Method::GET, "/healthz", None, &[]),
        (Method::GET, "/readyz", None, &[]),
        (Method::GET, "/v1/slots", None, READ),
        (Method::POST, "/v1/slots", Some(json!({"name": "chat"})), OPERATE),
        (Method::GET, "/v1/slots/chat", None, READ),
        (Method::GET, "/v1/slots/chat/versions", None, READ),
        (
            Method::POST,
            "/v1/slots/chat/versions",
            Some(json!({"document": {"model": "x"}, "dry_run": true})),
            OPERATE,
        ),
        (Method::GET, "/v1/slots/chat/versions/1", None, READ),
        (Method::GET, "/v1/slots/chat/diff?from=1&to=2", None, READ),
        (Method::POST, "/v1/slots/chat/revert", Some(json!({"to": 99})), OPERATE),
        (Method::POST, "/v1/slots/chat/snapshots", Some(json!({"label": "t"})), OPERATE),
        (Method::GET, "/v1/slots/chat/snapshots", None, READ),
        (Method::GET, "/v1/snapshots", None, READ),
        (Method::GET, "/v1/snapshots/nope", None, READ),
        (Method::POST, "/v1/snapshots/nope/restore", Some(json!({})), OPERATE),
        (Method::GET, "/v1/audit", None, READ),
        (Method::GET, "/v1/audit/verify", None, ADMIN_ONLY),
        (Method::POST, "/v1/audit/verify/full", Some(json!({})), ADMIN_ONLY),
        (Method::GET, "/v1/audit/verify/jobs/nope", None, ADMIN_ONLY),
        (Method::POST, "/v1/audit/acknowledge", Some(json!({"reason": "r"})), ADMIN_ONLY),
        (Method::POST, "/v1/resolve", Some(json!({"slot": "chat", "context": {}})), RESOLVE),
        (Method::POST, "/ofrep/v1/evaluate/flags/chat", Some(ctx.clone()), RESOLVE),
        (Method::POST, "/ofrep/v1/evaluate/flags", Some(ctx), RESOLVE),
        (Method::GET, "/v1/rollouts", None, READ),
        (
            Method::POST,
            "/v1/rollouts",
            Some(json!({"slot": "nope", "candidate": {"version": 2}})),
            OPERATE,
        ),
        (Method::GET, "/v1/rollouts/nope", None, READ),
        (Method::GET, "/v1/rollouts/nope/health", None, READ),
        (Method::POST, "/v1/rollouts/nope/pause", Some(json!({})), OPERATE),
        (Method::POST, "/v1/rollouts/nope/abort", Some(json!({})), OPERATE),
        (Method::GET, "/v1/rollbacks", None, READ),
        (Method::GET, "/v1/stats", None, READ),
        (Method::POST, "/v1/observations", Some(json!({"items": []})), REPORT),
        (Method::GET, "/v1/tokens", None, ADMIN_ONLY),
        (
            Method::POST,
            "/v1/tokens",
            Some(json!({"name": "bad name", "role": "viewer"})),
            ADMIN_ONLY,
        ),
        (Method::DELETE, "/v1/tokens/nobody", None, ADMIN_ONLY),
    ]
}

#[tokio::test]
async fn every_route_answers_each_role_as_its_table_says() {
    let (d, tokens) = secured().await;
    let c = http();
    for (method, path, body, roles) in routes() {
        let url = format!("{}{path}", d.url);
        let public = roles.is_empty();
        let (s, b) = req(&c, method.clone(), &url, None, body.clone()).await;
        if public {
            assert!(s != 401 && s != 403, "{method} {path} is public: {s} {b}");
        } else {
            assert_eq!(s, 401, "{method} {path} without a token: {b}");
            assert_eq!(b["error"]["code"], "unauthorized", "{method} {path}: {b}");
        }
        let (s, b) =
            req(&c, method.clone(), &url, Some("act_wrong_token_0000000000000"), body.clone())
                .await;
        assert_eq!(s, 401, "{method} {path} with a wrong token: {b}");
        for (role, secret) in &tokens {
            let (s, b) = req(&c, method.clone(), &url, Some(secret), body.clone()).await;
            if public || roles.contains(role) {
                assert!(s != 401 && s != 403, "{method} {path} as {role}: {s} {b}");
                assert!(s < 500, "{method} {path} as {role}: {s} {b}");
            } else {
                assert_eq!(s, 403, "{method} {path} as {role}: {b}");
                assert_eq!(b["error"]["code"], "forbidden", "{method} {path}: {b}");
                assert!(b["error"]["message"].as_str().unwrap_or("").contains(role), "{b}");
            }
        }
    }
}

#[tokio::test]
async fn the_audit_actor_is_the_token_name_whatever_the_request_says() {
    let (d, tokens) = secured().await;
    let c = http();
    let operator = &tokens.iter().find(|(r, _)| *r == "operator").expect("operator").1;
    // The header names an actor (`tester`), and the rollout body names one of its own.
    let body = json!({"slot": "chat", "candidate": {"version": 2}, "strategy": "canary",
        "actor": "root\nlevel=info msg=forged"});
    let (s, b) =
        req(&c, Method::POST, &format!("{}/v1/rollouts", d.url), Some(operator), Some(body)).await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_str().expect("id").to_owned();
    let (s, b) = req(
        &c,
        Method::POST,
        &format!("{}/v1/rollouts/{id}/abort", d.url),
        Some(operator),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (_, audit) =
        req(&c, Method::GET, &format!("{}/v1/audit?limit=100", d.url), Some(ADMIN), None).await;
    let entries = audit["items"].as_array().expect("items");
    let mine: Vec<&Value> =
        entries.iter().filter(|e| e["target"].as_str().is_some_and(|t| t.contains(&id))).collect();
    assert!(mine.len() >= 2, "{audit}");
    for e in &mine {
        let actor = e["actor"].as_str().unwrap_or("");
        assert!(actor == "operator-bot" || actor == "engine", "{e}");
    }
    assert!(mine.iter().any(|e| e["action"] == "rollout.start" && e["actor"] == "operator-bot"));
    assert!(entries.iter().all(|e| e["actor"] != "tester" && e["actor"] != "root"));
    let made: Vec<&Value> = entries.iter().filter(|e| e["action"] == "token.create").collect();
    assert!(made.iter().any(|e| e["actor"] == "admin-env" && e["target"] == "viewer-bot"));
}

#[tokio::test]
async fn a_web_page_cannot_steer_an_open_daemon() {
    let d = TestDaemon::start();
    let c = http();
    let u = &d.url;
    for (path, body) in [
        ("/v1/slots", json!({"name": "chat"})),
        ("/v1/slots/chat/versions", json!({"document": {"model": "a"}, "activate": true})),
        ("/v1/slots/chat/versions", json!({"document": {"model": "b"}, "activate": false})),
    ] {
        let (s, b) = req(&c, Method::POST, &format!("{u}{path}"), None, Some(body)).await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = req(
        &c,
        Method::POST,
        &format!("{u}/v1/rollouts"),
        None,
        Some(json!({"slot": "chat", "candidate": {"version": 2}, "strategy": "canary"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_str().expect("id").to_owned();
    // What a form or `fetch(..., {mode: "no-cors"})` can send cross-site: text/plain.
    for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"] {
        let r = c
            .post(format!("{u}/v1/rollouts/{id}/abort"))
            .header("content-type", ct)
            .body("{}")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 415, "{ct}");
        let b: Value = r.json().await.expect("JSON error");
        assert_eq!(b["error"]["code"], "unsupported_media_type");
    }
    let r = c.post(format!("{u}/v1/rollouts/{id}/abort")).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 415, "no content type at all");
    // A rebound DNS name pointing at 127.0.0.1 is not a name this daemon answers.
    let r = c
        .get(format!("{u}/v1/rollouts/{id}"))
        .header("host", "evil.example")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 403);
    let (_, v) = req(&c, Method::GET, &format!("{u}/v1/rollouts/{id}"), None, None).await;
    assert_ne!(v["state"], "aborted", "nothing reached the rollout: {v}");
    // No CORS grant by default: a preflight gets no Access-Control-Allow-Origin.
    let r = c
        .request(Method::OPTIONS, format!("{u}/v1/rollouts/{id}/abort"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("send");
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // A wrong method gets the JSON error shape.
    let (s, b) = req(&c, Method::DELETE, &format!("{u}/v1/slots"), None, None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (405, Some("method_not_allowed")), "{b}");
}

#[test]
fn a_daemon_on_a_public_address_refuses_to_start_without_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(actuator_bin())
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .env_remove("ACTUATOR_ADMIN_TOKEN")
        .output()
        .expect("run serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without API tokens") && err.contains("--init-admin-token"), "{err}");
}

#[test]
fn init_admin_token_prints_a_working_secret_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(actuator_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--init-admin-token", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut secret = None;
    let mut url = None;
    for line in lines.by_ref() {
        let line = line.expect("line");
        if let Some(rest) = line.strip_prefix("admin token admin (shown only now): ") {
            secret = Some(rest.trim().to_owned());
        }
        if let Some(u) = line.strip_prefix("actuator listening on ") {
            url = Some(u.trim().to_owned());
            break;
        }
    }
    let (secret, url) = (secret.expect("the secret is printed"), url.expect("listening"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let c = http();
        let (s, b) = req(&c, Method::GET, &format!("{url}/v1/tokens"), Some(&secret), None).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b[0]["name"], "admin");
        assert!(b[0].get("hash").is_none() && b[0].get("secret").is_none(), "{b}");
        let (s, _) = req(&c, Method::GET, &format!("{url}/v1/slots"), None, None).await;
        assert_eq!(s, 401, "the daemon is no longer open");
    });
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn tokens_are_made_listed_and_revoked_from_the_cli() {
    let d = TestDaemon::start_env(&[("ACTUATOR_ADMIN_TOKEN", ADMIN)]);
    let cli = |args: &[&str], token: &str| {
        Command::new(actuator_bin())
            .args(args)
            .args(["--server", &d.url])
            .env("ACTUATOR_TOKEN", token)
            .output()
            .expect("run the cli")
    };
    let out = cli(&["token", "create", "ci-deployer", "--role", "operator", "-o", "json"], ADMIN);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let made: Value = serde_json::from_slice(&out.stdout).expect("json");
    let secret = made["secret"].as_str().expect("secret").to_owned();
    let out = cli(&["slot", "create", "chat"], &secret);
    assert!(out.status.success(), "the new token works: {}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&["token", "list"], ADMIN);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ci-deployer") && text.contains("operator"), "{text}");
    assert!(!text.contains(&secret), "a list never shows a secret");
    let out = cli(&["token", "list"], &secret);
    assert!(!out.status.success(), "an operator cannot list tokens");
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
    let out = cli(&["token", "revoke", "ci-deployer"], ADMIN);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&["slot", "list"], &secret);
    assert!(!out.status.success(), "a revoked token stops working at once");
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

/// The venv Python with the OpenFeature SDK (made by `cargo xtask test`); see ofrep.rs.
fn test_python() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("ACTUATOR_TEST_PYTHON") {
        return Some(p.into());
    }
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "ACTUATOR_TEST_PYTHON is unset under CI: run the tests through `cargo xtask test`"
    );
    eprintln!("note: skipping the Python OpenFeature token test: ACTUATOR_TEST_PYTHON is unset");
    None
}

#[tokio::test]
async fn openfeature_clients_send_their_client_token() {
    use open_feature::provider::FeatureProvider;
    use open_feature::{EvaluationContext, StructValue};
    use open_feature_ofrep::{OfrepOptions, OfrepProvider};

    let (d, tokens) = secured().await;
    let client = tokens.iter().find(|(r, _)| *r == "client").expect("client").1.clone();
    let ctx = EvaluationContext::default().with_targeting_key("u1");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {client}").parse().expect("header value"),
    );
    let with = OfrepProvider::new(OfrepOptions {
        base_url: d.url.clone(),
        headers,
        ..OfrepOptions::default()
    })
    .await
    .expect("provider");
    let got = with.resolve_struct_value("chat", &ctx).await.expect("resolved with the token");
    let v: &StructValue = &got.value;
    assert_eq!(v.fields.get("model").and_then(|m| m.as_str()), Some("small"));
    let without =
        OfrepProvider::new(OfrepOptions { base_url: d.url.clone(), ..OfrepOptions::default() })
            .await
            .expect("provider");
    assert!(without.resolve_struct_value("chat", &ctx).await.is_err(), "no token, no config");

    let Some(python) = test_python() else { return };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("it/ofrep_token_client.py");
    for (token, expect_ok) in [(client.as_str(), true), ("act_not_a_token_00000000000000", false)] {
        let out = Command::new(&python)
            .arg(&script)
            .arg(&d.url)
            .env("OFREP_TOKEN", token)
            .output()
            .expect("run python");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r: Value = serde_json::from_slice(&out.stdout).expect("json");
        if expect_ok {
            assert_eq!(r["value"]["model"], "small", "{r}");
            assert_eq!(r["error_code"], Value::Null, "{r}");
        } else {
            assert_eq!(r["value"], json!({"fallback": true}), "{r}");
            assert_ne!(r["error_code"], Value::Null, "{r}");
        }
    }
}

#[tokio::test]
async fn cors_grants_only_the_configured_origins() {
    let d = TestDaemon::start_with("[server]\ncors_origins = [\"https://ops.example.com\"]\n");
    let c = http();
    let preflight = |origin: &'static str| {
        c.request(Method::OPTIONS, format!("{}/v1/slots", d.url))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    let ok = preflight("https://ops.example.com").await.expect("preflight");
    assert_eq!(
        ok.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()),
        Some("https://ops.example.com")
    );
    let other = preflight("https://evil.example").await.expect("preflight");
    assert!(other.headers().get("access-control-allow-origin").is_none());
}
