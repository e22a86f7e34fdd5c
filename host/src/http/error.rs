//! The one error type of the HTTP API: a status and a typed JSON body
//! `{"error": {"code": "...", "message": "..."}}`. Internals stay in the log.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::{CallError, SdkError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// A WIT error kind (`not-found`, `invalid-input`, ...) or `trap`.
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid bearer token is required",
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", message)
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid-input", message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the host's log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({ "error": { "code": self.code, "message": self.message } })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<SdkError> for ApiError {
    fn from(e: SdkError) -> Self {
        let status = match &e {
            SdkError::NotFound => StatusCode::NOT_FOUND,
            SdkError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            SdkError::InvalidInput(_) => StatusCode::BAD_REQUEST,
            SdkError::Unauthenticated => StatusCode::UNAUTHORIZED,
            SdkError::LimitExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            SdkError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &e {
            SdkError::NotFound => "not found".to_owned(),
            SdkError::Unauthenticated => "unauthenticated".to_owned(),
            SdkError::PermissionDenied(m)
            | SdkError::InvalidInput(m)
            | SdkError::LimitExceeded(m)
            | SdkError::Internal(m) => m.clone(),
        };
        ApiError::new(status, e.kind(), message)
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        let message = e.to_string();
        match e {
            CallError::UnknownModule(_) | CallError::UnknownEntry { .. } => {
                ApiError::not_found(message)
            }
            CallError::InvalidInput(_) => ApiError::invalid_input(message),
            // The module's own answer, passed on as it is.
            CallError::Guest { error, .. } => error.into(),
            CallError::Deadline { .. } => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "limit-exceeded", message)
            }
            CallError::MemoryLimit { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "limit-exceeded", message)
            }
            CallError::Busy(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "limit-exceeded", message)
            }
            CallError::Cancelled { .. } => {
                ApiError::new(StatusCode::CONFLICT, "cancelled", message)
            }
            CallError::Trap { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "trap", message)
            }
            // Only a task's own run parks, never a call through the API.
            CallError::Parked { .. } | CallError::Internal(_) => ApiError::internal(),
        }
    }
}
