//! What every handler shares ([`AppState`]) and what a request proved
//! ([`Authenticated`], from its bearer token).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use super::error::ApiError;
use super::streams::{StreamLimits, Streams};
use crate::Host;
use crate::auth::Tokens;
use crate::cancel::CancelToken;
use crate::identity::Principal;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    pub host: Arc<Host>,
    pub tokens: Tokens,
    /// The event streams open now, under their caps.
    pub streams: Arc<Streams>,
    /// Cancelled when the server stops: event streams end, so a graceful
    /// shutdown does not wait for clients that never hang up.
    pub closing: CancelToken,
}

impl AppState {
    /// The state of a server with the default stream caps.
    pub fn new(host: Arc<Host>, tokens: Tokens) -> Self {
        Self::with_stream_limits(host, tokens, StreamLimits::default())
    }

    pub fn with_stream_limits(host: Arc<Host>, tokens: Tokens, limits: StreamLimits) -> Self {
        AppState {
            host,
            tokens,
            streams: Arc::new(Streams::new(limits)),
            closing: CancelToken::new(),
        }
    }
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
        match state.tokens.verify_with_id(secret).await {
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

pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
