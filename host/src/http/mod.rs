//! The HTTP API.
//!
//! [`router`] returns the whole API as an axum `Router`, so tests drive it
//! without a socket. Every `/v1` route needs a bearer token; the identity a
//! module sees is the token's, whatever the request says. Errors are one
//! [`ApiError`] shape and never show internals.

mod error;
mod serve;
mod tasks;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use error::ApiError;
pub use serve::{ServeConfig, ServeError, serve};

use crate::Host;
use crate::auth::Tokens;
use crate::identity::{Principal, RequestMeta, new_request_id};
use crate::modules::LoadedModule;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    pub host: Arc<Host>,
    pub tokens: Tokens,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/whoami", get(whoami))
        .route("/v1/modules", get(list_modules))
        .route("/v1/modules/{module}", get(get_module))
        .route("/v1/modules/{module}/actions/{action}", post(call_action))
        .route("/v1/modules/{module}/tasks", get(tasks::list))
        .route("/v1/tasks/{id}", get(tasks::view))
        .route("/v1/tasks/{id}/cancel", post(tasks::cancel))
        .route("/v1/tasks/{id}/confirmation", post(tasks::answer))
        .route("/v1/audit/subprocesses", get(tasks::audit))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(crate::host::MAX_ARGS_BYTES + 1024))
        .with_state(state)
}

/// A request that proved a principal with a bearer token.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Principal,
    /// The token's id: the session the request belongs to.
    pub token_id: String,
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let secret = bearer(&parts.headers).ok_or_else(ApiError::unauthenticated)?;
        match state.tokens.verify_with_id(secret) {
            Ok(Some((token_id, principal))) => Ok(Authenticated {
                principal,
                token_id,
            }),
            Ok(None) => Err(ApiError::unauthenticated()),
            Err(e) => {
                tracing::error!(error = %e, "token lookup failed");
                Err(ApiError::internal())
            }
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
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
    body: Bytes,
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
