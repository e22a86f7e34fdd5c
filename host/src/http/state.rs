//! What every handler shares ([`AppState`]) and what a request proved
//! ([`Authenticated`], from its bearer token).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use super::error::ApiError;
use crate::Host;
use crate::auth::Tokens;
use crate::identity::Principal;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    pub host: Arc<Host>,
    pub tokens: Tokens,
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
