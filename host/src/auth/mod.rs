//! Bearer tokens, each mapped to a [`Principal`].
//!
//! A token is `mht_` followed by 64 hex digits of OS randomness; only its
//! SHA-256 is stored, so the database never holds a usable secret. A token
//! proves a principal; the identity a module sees comes from it, never from
//! the request body.

use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::db::{Db, DbError, now_ms};
use crate::identity::{OrgId, Principal, Role, UserId};

/// The prefix of every token, so leaked tokens are easy to grep for.
pub const TOKEN_PREFIX: &str = "mht_";
/// Longest token accepted on the wire (a real one is 68 bytes).
pub const MAX_TOKEN_BYTES: usize = 256;

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cannot get randomness from the OS: {0}")]
    Random(String),
    #[error("stored token {0} is corrupt")]
    Corrupt(String),
}

impl From<rusqlite::Error> for AuthError {
    fn from(e: rusqlite::Error) -> Self {
        AuthError::Db(DbError::Sql(e))
    }
}

/// A token just created. The secret is shown once and never stored.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub id: String,
    pub secret: String,
    pub principal: Principal,
}

/// A stored token, without its secret.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub principal: Principal,
    pub label: String,
    pub created_at: i64,
    pub revoked: bool,
}

/// The token table.
#[derive(Debug, Clone)]
pub struct Tokens {
    db: Db,
}

fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

impl Tokens {
    pub fn new(db: Db) -> Self {
        Tokens { db }
    }

    /// Creates a token for `principal`.
    pub fn create(&self, principal: &Principal, label: &str) -> Result<NewToken, AuthError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
        let secret = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
        let id = uuid::Uuid::now_v7().to_string();
        self.db.lock().execute(
            "INSERT INTO tokens (id, secret_sha256, user_id, organization_id, role, label, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                digest(&secret),
                principal.user_id.as_str(),
                principal.organization_id.as_str(),
                principal.role.as_str(),
                label,
                now_ms()
            ],
        )?;
        Ok(NewToken {
            id,
            secret,
            principal: principal.clone(),
        })
    }

    /// The principal a presented token proves, if it is a live token.
    pub fn verify(&self, secret: &str) -> Result<Option<Principal>, AuthError> {
        Ok(self.verify_with_id(secret)?.map(|(_, p)| p))
    }

    /// Like [`Tokens::verify`], with the token's id.
    pub fn verify_with_id(&self, secret: &str) -> Result<Option<(String, Principal)>, AuthError> {
        if secret.len() > MAX_TOKEN_BYTES || !secret.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let row = self
            .db
            .lock()
            .query_row(
                "SELECT id, user_id, organization_id, role FROM tokens
                 WHERE secret_sha256 = ?1 AND revoked_at IS NULL",
                params![digest(secret)],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(id, u, o, role)| Ok((id.clone(), principal(&id, u, o, &role)?)))
            .transpose()
    }

    /// Live tokens.
    pub fn count_live(&self) -> Result<u64, AuthError> {
        let n: i64 = self.db.lock().query_row(
            "SELECT count(*) FROM tokens WHERE revoked_at IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// All tokens, newest first.
    pub fn list(&self) -> Result<Vec<TokenInfo>, AuthError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare(
            "SELECT id, user_id, organization_id, role, label, created_at, revoked_at
             FROM tokens ORDER BY created_at DESC, id DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<i64>>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, u, o, role, label, created_at, revoked_at) = row?;
            out.push(TokenInfo {
                principal: principal(&id, u, o, &role)?,
                id,
                label,
                created_at,
                revoked: revoked_at.is_some(),
            });
        }
        Ok(out)
    }

    /// Revokes a token by id. Returns whether a live token was revoked.
    pub fn revoke(&self, id: &str) -> Result<bool, AuthError> {
        let n = self.db.lock().execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now_ms()],
        )?;
        Ok(n == 1)
    }
}

fn principal(id: &str, user: String, org: String, role: &str) -> Result<Principal, AuthError> {
    let corrupt = || AuthError::Corrupt(id.to_owned());
    Ok(Principal {
        user_id: UserId::try_from(user).map_err(|_| corrupt())?,
        organization_id: OrgId::try_from(org).map_err(|_| corrupt())?,
        role: role.parse::<Role>().map_err(|_| corrupt())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Principal {
        Principal {
            user_id: "alice".parse().unwrap(),
            organization_id: "acme".parse().unwrap(),
            role: Role::Admin,
        }
    }

    #[test]
    fn created_token_verifies_to_its_principal_and_only_its_hash_is_stored() {
        let db = Db::in_memory().unwrap();
        let tokens = Tokens::new(db.clone());
        let t = tokens.create(&alice(), "test").unwrap();
        assert_eq!(tokens.verify(&t.secret).unwrap(), Some(alice()));
        let stored: Vec<u8> = db
            .lock()
            .query_row("SELECT secret_sha256 FROM tokens", [], |r| r.get(0))
            .unwrap();
        assert_ne!(stored, t.secret.as_bytes());
    }

    #[test]
    fn unknown_malformed_and_revoked_tokens_do_not_verify() {
        let tokens = Tokens::new(Db::in_memory().unwrap());
        let t = tokens.create(&alice(), "").unwrap();
        assert_eq!(tokens.verify("mht_0000").unwrap(), None);
        assert_eq!(tokens.verify("Bearer x").unwrap(), None);
        assert_eq!(tokens.verify(&"mht_a".repeat(100)).unwrap(), None);
        assert!(tokens.revoke(&t.id).unwrap());
        assert_eq!(tokens.verify(&t.secret).unwrap(), None);
        assert_eq!(tokens.count_live().unwrap(), 0);
    }
}
