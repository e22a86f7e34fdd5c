//! `GET /v1/openapi.json`: the API's reference. The document is written by
//! hand beside the handlers; `tests/tests/http.rs` checks it against the
//! router's routes and against real responses, so it cannot drift.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The OpenAPI 3.1 document.
pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn document() -> Response {
    let mut r = DOCUMENT.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
