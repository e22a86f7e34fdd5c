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
    let tokens = Tokens::new(Db::in_memory().unwrap());
    let token = tokens
        .create(&principal("alice", "acme"), "test")
        .unwrap()
        .secret;
    let app = router(AppState {
        host: t.host.clone(),
        tokens,
    });
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
