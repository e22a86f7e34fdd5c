//! axum's extractors with their rejections in the one [`ApiError`] shape:
//! a bad query string or path is `invalid-input` JSON, never plain text.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A query string, deserialized; unknown or malformed fields are refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::invalid_input(format!("bad query string: {}", e.body_text())))
    }
}

/// Path parameters, deserialized.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::invalid_input(format!("bad path: {}", e.body_text())))
    }
}

/// A request body up to the router's limit; a larger one is 413
/// `limit-exceeded`, not axum's plain text.
#[derive(Debug, Clone, Default)]
pub struct Body(pub axum::body::Bytes);

impl<S> axum::extract::FromRequest<S> for Body
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|e| {
                let status = e.status();
                if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        status,
                        "limit-exceeded",
                        format!(
                            "the body is over the limit of {} bytes",
                            crate::host::MAX_ARGS_BYTES
                        ),
                    )
                } else {
                    ApiError::invalid_input(format!("unreadable body: {}", e.body_text()))
                }
            })
    }
}
