//! The HTTP API.
//!
//! [`router`] returns the whole API as an axum `Router`, so tests drive it
//! without a socket. Every `/v1` route needs a bearer token; the identity a
//! module sees is the token's, whatever the request says. Errors are one
//! [`ApiError`] shape and never show internals.

mod dashboard;
mod error;
pub mod events;
mod extract;
pub mod openapi;
pub mod serve;
mod state;
mod streams;
mod tasks;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use dashboard::CONTENT_SECURITY_POLICY;
pub use error::ApiError;
pub use state::{AppState, Authenticated};
pub use streams::{StreamLimits, Streams};

use extract::{Body, Path};

use crate::identity::{RequestMeta, new_request_id};
use crate::modules::LoadedModule;

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard::index))
        .route("/assets/app.js", get(dashboard::app_js))
        .route("/assets/app.css", get(dashboard::app_css))
        .route("/healthz", get(healthz))
        .route("/v1/whoami", get(whoami))
        .route("/v1/modules", get(list_modules))
        .route("/v1/modules/{module}", get(get_module))
        .route("/v1/modules/{module}/actions/{action}", post(call_action))
        .route("/v1/modules/{module}/tasks", get(tasks::list))
        .route("/v1/tasks", get(tasks::list_all))
        .route("/v1/tasks/{id}", get(tasks::view))
        .route("/v1/tasks/{id}/cancel", post(tasks::cancel))
        .route("/v1/tasks/{id}/confirmation", post(tasks::answer))
        .route("/v1/audit", get(tasks::audit))
        .route("/v1/audit/subprocesses", get(tasks::subprocess_audit))
        .route("/v1/events", get(events::stream))
        .route("/v1/openapi.json", get(openapi::document))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid-input",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(crate::host::MAX_ARGS_BYTES + 1024))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "modules": state.host.module_names().len() }))
}

async fn whoami(auth: Authenticated) -> Json<serde_json::Value> {
    Json(json!({
        "user_id": auth.principal.user_id,
        "organization_id": auth.principal.organization_id,
        "role": auth.principal.role,
    }))
}

fn module_json(m: &LoadedModule) -> serde_json::Value {
    json!({
        "name": m.name(),
        "version": m.manifest.version,
        "description": m.manifest.description,
        "actions": m.description.actions,
        "tasks": m.description.tasks,
        "blocking": m.description.blocking,
        "grants": m.manifest.policy.in_plain_words(),
    })
}

async fn list_modules(
    _auth: Authenticated,
    State(state): State<AppState>,
) -> Json<serde_json::Value> {
    let modules: Vec<_> = state
        .host
        .modules()
        .iter()
        .map(|m| module_json(m))
        .collect();
    Json(json!({ "modules": modules }))
}

async fn get_module(
    _auth: Authenticated,
    State(state): State<AppState>,
    Path(module): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let m = state
        .host
        .module(&module)
        .ok_or_else(|| ApiError::not_found(format!("module `{module}` not found")))?;
    Ok(Json(module_json(&m)))
}

async fn call_action(
    auth: Authenticated,
    State(state): State<AppState>,
    Path((module, action)): Path<(String, String)>,
    Body(body): Body,
) -> Response {
    let request_id = new_request_id();
    let args = if body.iter().all(u8::is_ascii_whitespace) {
        "{}"
    } else {
        match std::str::from_utf8(&body) {
            Ok(s) => s,
            Err(_) => {
                return with_request_id(
                    ApiError::invalid_input("body is not UTF-8").into_response(),
                    &request_id,
                );
            }
        }
    };
    let meta = RequestMeta {
        request_id: request_id.clone(),
        session_id: Some(auth.token_id.clone()),
    };
    let response = match state
        .host
        .call_action(&module, &action, args, &auth.principal, meta)
        .await
    {
        Ok(out) => Json(json!({
            "data": out.data,
            "effects": out.effects,
            "request_id": request_id,
        }))
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    };
    with_request_id(response, &request_id)
}

fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}
