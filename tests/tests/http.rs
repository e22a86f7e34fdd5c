//! The HTTP API driven through its `Router`, without a socket.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use modhost::auth::Tokens;
use modhost::db::Db;
use modhost::http::{AppState, router};
use modhost_tests::*;
use tower::ServiceExt;

struct Api {
    app: axum::Router,
    token: String,
    _host: TestHost,
}

async fn api() -> Api {
    let t = TestHost::with("ident", IDENTITY, "").await;
    let (tokens, token) = tokens_of(&principal("alice", "acme")).await;
    let app = router(AppState::new(t.host.clone(), tokens));
    Api {
        app,
        token,
        _host: t,
    }
}

async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, serde_json::Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, json(std::str::from_utf8(&bytes).unwrap()))
}

fn post(uri: &str, token: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::post(uri);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_token_gets_401_with_a_typed_error() {
    let api = api().await;
    let (status, body) = send(
        &api.app,
        post("/v1/modules/ident/actions/whoami", None, "{}"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthenticated");
    let (status, _) = send(
        &api.app,
        Request::get("/v1/modules").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_malformed_token_gets_401() {
    let api = api().await;
    let wrong = format!("mht_{}", "0".repeat(64));
    for token in [wrong.as_str(), "garbage", ""] {
        let (status, body) = send(
            &api.app,
            post("/v1/modules/ident/actions/whoami", Some(token), "{}"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "token {token:?}");
        assert_eq!(body["error"]["code"], "unauthenticated");
    }
    let req = Request::post("/v1/modules/ident/actions/whoami")
        .header("authorization", format!("Basic {}", api.token))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&api.app, req).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_a_module_sees_is_the_tokens_whatever_the_body_says() {
    let api = api().await;
    let body = r#"{"user_id":"mallory","organization_id":"evil"}"#;
    let (status, out) = send(
        &api.app,
        post("/v1/modules/ident/actions/whoami", Some(&api.token), body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["data"]["user_id"], "alice");
    assert_eq!(out["data"]["organization_id"], "acme");
    assert_eq!(out["data"]["request_id"], out["request_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_module_or_action_is_404_with_a_typed_error() {
    let api = api().await;
    for uri in [
        "/v1/modules/nope/actions/whoami",
        "/v1/modules/ident/actions/nope",
    ] {
        let (status, body) = send(&api.app, post(uri, Some(&api.token), "{}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(body["error"]["code"], "not-found");
    }
    let (status, body) = send(
        &api.app,
        Request::get("/v1/modules/nope")
            .header("authorization", format!("Bearer {}", api.token))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_that_are_not_json_are_400() {
    let api = api().await;
    let (status, body) = send(
        &api.app,
        post(
            "/v1/modules/ident/actions/whoami",
            Some(&api.token),
            "{oops",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid-input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_needs_no_token_and_modules_are_listed_with_what_they_offer() {
    let api = api().await;
    let (status, body) = send(
        &api.app,
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let req = Request::get("/v1/modules")
        .header("authorization", format!("Bearer {}", api.token))
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(&api.app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["modules"][0]["name"], "ident");
    assert!(
        body["modules"][0]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "whoami"),
        "{body}"
    );
}

fn uuid_like() -> &'static str {
    "01900000-0000-7000-8000-000000000000"
}

fn get(uri: &str, token: &str) -> Request<Body> {
    Request::get(uri)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_strings_unknown_routes_and_wrong_methods_answer_in_the_one_error_shape() {
    let api = api().await;
    let t = api.token.as_str();
    let cases = [
        (
            get("/v1/modules/ident/tasks?limit=many", t),
            StatusCode::BAD_REQUEST,
        ),
        (
            get("/v1/modules/ident/tasks?colour=red", t),
            StatusCode::BAD_REQUEST,
        ),
        (get("/v1/tasks?status=sleeping", t), StatusCode::BAD_REQUEST),
        (get("/v1/tasks?cursor=forged", t), StatusCode::BAD_REQUEST),
        (
            get("/v1/tasks?scope=organization", t),
            StatusCode::FORBIDDEN,
        ),
        (get("/v1/tasks?module=nope", t), StatusCode::NOT_FOUND),
        (get("/v1/tasks/not-a-uuid", t), StatusCode::BAD_REQUEST),
        (
            get("/v1/audit/subprocesses?limit=-3", t),
            StatusCode::BAD_REQUEST,
        ),
        (get("/v1/no/such/route", t), StatusCode::NOT_FOUND),
        (
            Request::delete("/v1/tasks")
                .header("authorization", format!("Bearer {t}"))
                .body(Body::empty())
                .unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            post("/v1/whoami", Some(t), ""),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            post(
                "/v1/modules/ident/actions/whoami",
                Some(t),
                &"x".repeat(modhost::host::MAX_ARGS_BYTES + 4096),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            post(
                &format!("/v1/tasks/{}/confirmation", uuid_like()),
                Some(t),
                "{not json",
            ),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (req, want) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let (status, body) = send(&api.app, req).await;
        assert_eq!(status, want, "{what}: {body}");
        assert!(body["error"]["code"].is_string(), "{what}: {body}");
        assert!(body["error"]["message"].is_string(), "{what}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_task_list_spans_modules_and_a_tasks_detail_has_its_timeline() {
    let mut t = TestHost::new();
    let long = "[limits]\ntask-deadline-ms = 60000";
    t.load("tb", TASKS_BASIC, long).await;
    t.load("tb2", TASKS_BASIC, long).await;
    t.host.start_tasks().await.unwrap();
    let tokens = Tokens::new(Db::in_memory().unwrap());
    let alice = tokens
        .create(&principal("alice", "acme"), "t")
        .await
        .unwrap()
        .secret;
    let bob = tokens
        .create(&principal("bob", "acme"), "t")
        .await
        .unwrap()
        .secret;
    let app = router(AppState::new(t.host.clone(), tokens));
    let mut ids = Vec::new();
    for (module, token) in [("tb", &alice), ("tb2", &alice), ("tb", &bob)] {
        let (status, body) = send(
            &app,
            post(
                &format!("/v1/modules/{module}/actions/submit"),
                Some(token),
                r#"{"task": "progress"}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        ids.push(body["data"]["id"].as_str().unwrap().to_owned());
    }
    for id in &ids[..2] {
        wait_final(&t.host, id, &principal("alice", "acme")).await;
    }
    let (status, page) = send(&app, get("/v1/tasks?limit=1", &alice)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["tasks"][0]["id"], ids[1].as_str(), "newest first");
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, next) = send(
        &app,
        get(&format!("/v1/tasks?limit=5&cursor={cursor}"), &alice),
    )
    .await;
    let rest: Vec<&str> = next["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(rest, [ids[0].as_str()], "bob's task is not alice's");
    assert!(next["next_cursor"].is_null());
    let (_, only) = send(&app, get("/v1/tasks?module=tb2&status=completed", &alice)).await;
    assert_eq!(only["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(only["tasks"][0]["module"], "tb2");

    let (status, detail) = send(&app, get(&format!("/v1/tasks/{}", ids[0]), &alice)).await;
    assert_eq!(status, StatusCode::OK);
    let events: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["created", "started", "finished"], "{detail}");
    assert_eq!(detail["timeline"][2]["detail"], "completed");
    assert_eq!(detail["checkpoint"], serde_json::json!({"step": 2}));
    let (status, _) = send(&app, get(&format!("/v1/tasks/{}", ids[2]), &alice)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another member's task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_with_a_policy_that_forbids_inline_script_and_markup_from_data() {
    let api = api().await;
    let res = api
        .app
        .clone()
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let html =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    // Every script is a file of the page's own origin; no inline handlers.
    for tag in html.split("<script").skip(1) {
        let open = &tag[..tag.find('>').unwrap()];
        assert!(
            open.contains("src=\"/assets/"),
            "inline script: <script{open}>"
        );
    }
    assert!(!html.contains(" onclick=") && !html.contains(" onload="));
    for asset in ["/assets/app.js", "/assets/app.css"] {
        let (status, _) = {
            let res = api
                .app
                .clone()
                .oneshot(Request::get(asset).body(Body::empty()).unwrap())
                .await
                .unwrap();
            (res.status(), ())
        };
        assert_eq!(status, StatusCode::OK, "{asset}");
    }
}

/// `(method, path)` of every route `router()` registers, read from its source.
fn routes_in_source() -> std::collections::BTreeSet<(String, String)> {
    let src = include_str!("../../host/src/http/mod.rs");
    let mut out = std::collections::BTreeSet::new();
    for chunk in src.split(".route(\"").skip(1) {
        let (path, rest) = chunk.split_once('"').unwrap();
        let call = &rest[..rest.find("))").unwrap()];
        for method in ["get", "post", "put", "delete", "patch"] {
            if call.contains(&format!("{method}(")) {
                out.insert((method.to_owned(), path.to_owned()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_names_every_api_route_of_the_router_and_no_other() {
    let api = api().await;
    let res = api
        .app
        .clone()
        .oneshot(
            Request::get("/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "served without a token");
    let doc =
        json(std::str::from_utf8(&res.into_body().collect().await.unwrap().to_bytes()).unwrap());
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let routed: std::collections::BTreeSet<_> = routes_in_source()
        .into_iter()
        .filter(|(_, p)| p != "/" && !p.starts_with("/assets/"))
        .collect();
    assert!(routed.len() >= 13, "{routed:?}");
    assert_eq!(documented, routed);
}

/// Checks `value` against the subset of JSON Schema the document uses:
/// `$ref`, `allOf`, `type` (one or a list), `required`, `properties`,
/// `items`, `enum`.
fn conforms(
    doc: &serde_json::Value,
    schema: &serde_json::Value,
    value: &serde_json::Value,
    at: &str,
) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return conforms(doc, &doc["components"]["schemas"][name], value, at);
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            conforms(doc, s, value, at);
        }
        return;
    }
    let kind = match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    };
    let types: Vec<&str> = match &schema["type"] {
        serde_json::Value::String(t) => vec![t.as_str()],
        serde_json::Value::Array(ts) => ts.iter().filter_map(|t| t.as_str()).collect(),
        _ => vec![],
    };
    assert!(
        types.is_empty()
            || types.contains(&kind)
            || (kind == "integer" && types.contains(&"number")),
        "{at}: {value} is {kind}, the document says {types:?}"
    );
    if let Some(allowed) = schema["enum"].as_array() {
        assert!(allowed.contains(value), "{at}: {value} not in {allowed:?}");
    }
    if let serde_json::Value::Object(map) = value {
        for r in schema["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap();
            assert!(
                map.contains_key(r),
                "{at}: `{r}` is required but missing in {value}"
            );
        }
        for (k, v) in map {
            if let Some(s) = schema["properties"].get(k) {
                conforms(doc, s, v, &format!("{at}.{k}"));
            }
        }
    }
    if let (serde_json::Value::Array(items), Some(s)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            conforms(doc, s, v, &format!("{at}[{i}]"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_responses_conform_to_the_schemas_the_openapi_document_gives_them() {
    let mut t = TestHost::new();
    t.load("tb", TASKS_BASIC, "[limits]\ntask-deadline-ms = 60000")
        .await;
    t.host.start_tasks().await.unwrap();
    let tokens = Tokens::new(Db::in_memory().unwrap());
    let token = tokens
        .create(&principal("alice", "acme"), "t")
        .await
        .unwrap()
        .secret;
    let app = router(AppState::new(t.host.clone(), tokens));
    let doc: serde_json::Value = json(modhost::http::openapi::DOCUMENT);
    let (_, started) = send(
        &app,
        post(
            "/v1/modules/tb/actions/submit",
            Some(&token),
            r#"{"task": "progress"}"#,
        ),
    )
    .await;
    let id = started["data"]["id"].as_str().unwrap().to_owned();
    wait_final(&t.host, &id, &principal("alice", "acme")).await;
    let response_schema = |path: &str, method: &str, status: &str| {
        doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
            .clone()
    };
    let checks = [
        ("/v1/whoami", "/v1/whoami".to_owned(), "get"),
        ("/v1/modules", "/v1/modules".to_owned(), "get"),
        ("/v1/modules/{module}", "/v1/modules/tb".to_owned(), "get"),
        ("/v1/tasks", "/v1/tasks".to_owned(), "get"),
        (
            "/v1/modules/{module}/tasks",
            "/v1/modules/tb/tasks".to_owned(),
            "get",
        ),
        ("/v1/tasks/{id}", format!("/v1/tasks/{id}"), "get"),
        (
            "/v1/audit/subprocesses",
            "/v1/audit/subprocesses".to_owned(),
            "get",
        ),
    ];
    for (path, uri, method) in checks {
        let (status, body) = send(&app, get(&uri, &token)).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        conforms(&doc, &response_schema(path, method, "200"), &body, &uri);
    }
    let (_, body) = send(
        &app,
        post(
            "/v1/modules/tb/actions/submit",
            Some(&token),
            r#"{"task": "noop"}"#,
        ),
    )
    .await;
    conforms(
        &doc,
        &response_schema("/v1/modules/{module}/actions/{action}", "post", "200"),
        &body,
        "action",
    );
    let (status, body) = send(&app, get("/v1/tasks/not-a-uuid", &token)).await;
    conforms(
        &doc,
        &response_schema("/v1/tasks/{id}", "get", status.as_str()),
        &body,
        "error",
    );
}

/// A server on a real socket, with a token for alice of acme.
async fn served(header_timeout: std::time::Duration) -> (Served, String, TestHost) {
    let t = TestHost::with("ident", IDENTITY, "").await;
    let tokens = Tokens::new(Db::in_memory().unwrap());
    let token = tokens
        .create(&principal("alice", "acme"), "t")
        .await
        .unwrap()
        .secret;
    let served = serve_socket(AppState::new(t.host.clone(), tokens), header_timeout).await;
    (served, token, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_its_headers_is_cut_off_and_a_whole_request_is_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (served, _token, _t) = served(std::time::Duration::from_millis(300)).await;
    let addr = served.addr;
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), slow.read(&mut buf))
        .await
        .expect("the server kept a trickling client past its header timeout");
    assert!(
        matches!(read, Ok(0) | Err(_)) || buf.starts_with(b"HTTP/1.1 408"),
        "{read:?} {:?}",
        String::from_utf8_lossy(&buf)
    );
    let mut whole = tokio::net::TcpStream::connect(addr).await.unwrap();
    whole
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    whole.read_to_end(&mut out).await.unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_ends_its_event_streams_and_returns_promptly() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (served, token, _t) = served(modhost::http::serve::HEADER_READ_TIMEOUT).await;
    let (addr, stop, server) = (served.addr, served.stop, served.server);
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let started = std::time::Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(3), server)
        .await
        .expect("the server waited on an open event stream")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}
