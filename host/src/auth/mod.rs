//! Bearer tokens, each mapped to a [`Principal`].
//!
//! A token is `mht_` followed by 64 hex digits of OS randomness; only its
//! SHA-256 is stored, so the database never holds a usable secret. A token
//! proves a principal; the identity a module sees comes from it, never from
//! the request body.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::db::{Db, DbError, now_ms};
use crate::identity::{OrgId, Principal, Role, UserId};
use crate::pg::{PgDatabase, PgError, PgWriteError};

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
    #[error(transparent)]
    Postgres(#[from] PgError),
}

impl From<tokio_postgres::Error> for AuthError {
    fn from(e: tokio_postgres::Error) -> Self {
        AuthError::Postgres(PgError::Sql(e))
    }
}

impl From<PgWriteError> for AuthError {
    fn from(e: PgWriteError) -> Self {
        AuthError::Postgres(PgError::Write(e))
    }
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

/// The token table: in the host's SQLite file, or in the PostgreSQL
/// database the hosts share, so any of them authenticates any user.
#[derive(Debug, Clone)]
pub struct Tokens {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(Db),
    Postgres(Arc<PgDatabase>),
}

/// The token table on PostgreSQL, owner [`crate::db::HOST_OWNER`] there as
/// in SQLite ([`crate::db::HOST_MIGRATIONS`]).
pub const PG_MIGRATIONS: &[&str] = &["CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    secret_sha256 BYTEA NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'member', 'admin')),
    label TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);"];

fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// A stored token's columns: id, user, organization, role, label,
/// created, revoked.
type Stored = (String, String, String, String, String, i64, Option<i64>);

impl Tokens {
    /// The tokens of the host's SQLite file.
    pub fn new(db: Db) -> Self {
        Tokens {
            backend: Backend::Sqlite(db),
        }
    }

    /// The tokens of a shared PostgreSQL database, migrating its table.
    pub async fn on_postgres(db: Arc<PgDatabase>) -> Result<Self, AuthError> {
        db.migrate(crate::db::HOST_OWNER, PG_MIGRATIONS).await?;
        Ok(Tokens {
            backend: Backend::Postgres(db),
        })
    }

    /// Creates a token for `principal`.
    pub async fn create(&self, principal: &Principal, label: &str) -> Result<NewToken, AuthError> {
        let made = self.insert(principal, label, false).await?;
        made.ok_or_else(|| AuthError::Corrupt("a token that was not stored".into()))
    }

    /// Creates a token for `principal` only if there is no live token at
    /// all (the development token of a first start): hosts starting at once
    /// on one shared database make one, not one each.
    pub async fn create_first(
        &self,
        principal: &Principal,
        label: &str,
    ) -> Result<Option<NewToken>, AuthError> {
        self.insert(principal, label, true).await
    }

    async fn insert(
        &self,
        principal: &Principal,
        label: &str,
        only_first: bool,
    ) -> Result<Option<NewToken>, AuthError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
        let secret = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
        let id = uuid::Uuid::now_v7().to_string();
        let (user, org, role) = (
            principal.user_id.as_str(),
            principal.organization_id.as_str(),
            principal.role.as_str(),
        );
        let stored = match &self.backend {
            // One statement under the file's one writer: atomic.
            Backend::Sqlite(db) => db.lock().execute(
                "INSERT INTO tokens (id, secret_sha256, user_id, organization_id, role, label, created_at)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
                 WHERE NOT ?8 OR NOT EXISTS (SELECT 1 FROM tokens WHERE revoked_at IS NULL)",
                params![id, digest(&secret), user, org, role, label, now_ms(), only_first],
            )? == 1,
            Backend::Postgres(db) => {
                let mut client = db.reader().await?;
                let tx = client.transaction().await?;
                // Hosts making a first token take turns.
                tx.execute("SELECT pg_advisory_xact_lock(7305118258)", &[])
                    .await?;
                let n = tx
                    .execute(
                        "INSERT INTO tokens (id, secret_sha256, user_id, organization_id, role, label, created_at)
                         SELECT $1, $2, $3, $4, $5, $6, $7
                         WHERE NOT $8 OR NOT EXISTS (SELECT 1 FROM tokens WHERE revoked_at IS NULL)",
                        &[&id, &digest(&secret), &user, &org, &role, &label, &now_ms(), &only_first],
                    )
                    .await?;
                tx.commit().await?;
                n == 1
            }
        };
        Ok(stored.then(|| NewToken {
            id,
            secret,
            principal: principal.clone(),
        }))
    }

    /// The principal a presented token proves, if it is a live token.
    pub async fn verify(&self, secret: &str) -> Result<Option<Principal>, AuthError> {
        Ok(self.verify_with_id(secret).await?.map(|(_, p)| p))
    }

    /// Like [`Tokens::verify`], with the token's id.
    pub async fn verify_with_id(
        &self,
        secret: &str,
    ) -> Result<Option<(String, Principal)>, AuthError> {
        if secret.len() > MAX_TOKEN_BYTES || !secret.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let row: Option<(String, String, String, String)> = match &self.backend {
            Backend::Sqlite(db) => db
                .lock()
                .query_row(
                    "SELECT id, user_id, organization_id, role FROM tokens
                     WHERE secret_sha256 = ?1 AND revoked_at IS NULL",
                    params![digest(secret)],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?,
            Backend::Postgres(db) => {
                let client = db.reader().await?;
                let statement = client
                    .prepare_cached(
                        "SELECT id, user_id, organization_id, role FROM tokens
                         WHERE secret_sha256 = $1 AND revoked_at IS NULL",
                    )
                    .await?;
                client
                    .query_opt(&statement, &[&digest(secret)])
                    .await?
                    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            }
        };
        row.map(|(id, u, o, role)| Ok((id.clone(), principal(&id, u, o, &role)?)))
            .transpose()
    }

    /// Live tokens.
    pub async fn count_live(&self) -> Result<u64, AuthError> {
        const SQL: &str = "SELECT count(*) FROM tokens WHERE revoked_at IS NULL";
        let n: i64 = match &self.backend {
            Backend::Sqlite(db) => db.lock().query_row(SQL, [], |r| r.get(0))?,
            Backend::Postgres(db) => db.reader().await?.query_one(SQL, &[]).await?.get(0),
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// All tokens, newest first.
    pub async fn list(&self) -> Result<Vec<TokenInfo>, AuthError> {
        const SQL: &str = "SELECT id, user_id, organization_id, role, label, created_at, revoked_at
             FROM tokens ORDER BY created_at DESC, id DESC";
        let rows: Vec<Stored> = match &self.backend {
            Backend::Sqlite(db) => {
                let conn = db.lock();
                let mut stmt = conn.prepare(SQL)?;
                stmt.query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })?
                .collect::<rusqlite::Result<_>>()?
            }
            Backend::Postgres(db) => db
                .reader()
                .await?
                .query(SQL, &[])
                .await?
                .iter()
                .map(|r| {
                    (
                        r.get(0),
                        r.get(1),
                        r.get(2),
                        r.get(3),
                        r.get(4),
                        r.get(5),
                        r.get(6),
                    )
                })
                .collect(),
        };
        rows.into_iter()
            .map(|(id, u, o, role, label, created_at, revoked_at)| {
                Ok(TokenInfo {
                    principal: principal(&id, u, o, &role)?,
                    id,
                    label,
                    created_at,
                    revoked: revoked_at.is_some(),
                })
            })
            .collect()
    }

    /// Revokes a token by id. Returns whether a live token was revoked.
    pub async fn revoke(&self, id: &str) -> Result<bool, AuthError> {
        let n = match &self.backend {
            Backend::Sqlite(db) => db.lock().execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, now_ms()],
            )?,
            Backend::Postgres(db) => {
                let n = db
                    .reader()
                    .await?
                    .execute(
                        "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                        &[&id, &now_ms()],
                    )
                    .await?;
                usize::try_from(n).unwrap_or(usize::MAX)
            }
        };
        Ok(n == 1)
    }
}

/// The organizations of the live tokens in a host's SQLite file: whom the
/// host may serve.
pub fn live_organizations(db: &Db) -> Result<Vec<OrgId>, AuthError> {
    let conn = db.lock();
    let mut stmt = conn.prepare(
        "SELECT DISTINCT organization_id FROM tokens WHERE revoked_at IS NULL ORDER BY organization_id",
    )?;
    let orgs: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    orgs.into_iter()
        .map(|org| OrgId::try_from(org.clone()).map_err(|_| AuthError::Corrupt(org)))
        .collect()
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

    #[tokio::test]
    async fn created_token_verifies_to_its_principal_and_only_its_hash_is_stored() {
        let db = Db::in_memory().unwrap();
        let tokens = Tokens::new(db.clone());
        let t = tokens.create(&alice(), "test").await.unwrap();
        assert_eq!(tokens.verify(&t.secret).await.unwrap(), Some(alice()));
        let stored: Vec<u8> = db
            .lock()
            .query_row("SELECT secret_sha256 FROM tokens", [], |r| r.get(0))
            .unwrap();
        assert_ne!(stored, t.secret.as_bytes());
    }

    #[tokio::test]
    async fn unknown_malformed_and_revoked_tokens_do_not_verify() {
        let tokens = Tokens::new(Db::in_memory().unwrap());
        let t = tokens.create(&alice(), "").await.unwrap();
        assert_eq!(tokens.verify("mht_0000").await.unwrap(), None);
        assert_eq!(tokens.verify("Bearer x").await.unwrap(), None);
        assert_eq!(tokens.verify(&"mht_a".repeat(100)).await.unwrap(), None);
        assert!(tokens.revoke(&t.id).await.unwrap());
        assert_eq!(tokens.verify(&t.secret).await.unwrap(), None);
        assert_eq!(tokens.count_live().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_first_token_is_made_only_while_there_is_no_live_token() {
        let tokens = Tokens::new(Db::in_memory().unwrap());
        let first = tokens.create_first(&alice(), "first").await.unwrap();
        assert!(first.is_some());
        assert!(
            tokens
                .create_first(&alice(), "again")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(tokens.count_live().await.unwrap(), 1);
    }
}
