//! The audit trail: one record per capability decision the host makes for a
//! module — a `run-subprocess` call, an outbound HTTP request, a refused
//! file operation, a task submission, a confirmation answered — with who
//! asked, what, what was decided and why. It is how an operator learns what
//! a module really does, so refusals are kept as carefully as what was
//! allowed.
//!
//! The rooms that decide write here; nothing here decides. One table holds
//! every capability ([`sqlite`], [`pg`]): the columns every record has are
//! columns (so the trail filters by module, user, capability and decision
//! along an index), and what only one capability knows is its [`Detail`].
//! A decision never changes once written; a subprocess record is completed
//! with how its child ended ([`AuditEnd`]).

pub mod pg;
mod record;
pub mod sqlite;

pub use pg::PgAuditStore;
#[cfg(test)]
pub(crate) use record::decided_at;
pub use record::{
    AuditEnd, AuditEntry, AuditError, AuditFilter, AuditRecord, AuditStore, AuditTrail, BoxFuture,
    Capability, ConfirmationDetail, Decision, Detail, Ended, FilesystemDetail, HttpDetail, LEARNED,
    MAX_AUDIT_LIMIT, MAX_AUDIT_TEXT_BYTES, MAX_RECORDED_REFUSALS, OWNER, SubprocessDetail,
    TaskDetail,
};
pub use sqlite::{MIGRATION_LIST, MIGRATIONS, SqliteAuditStore};
