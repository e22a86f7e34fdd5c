//! Who is calling, and inside which task: the WIT `context` interface
//! (`wit/context.wit`). Read-only: a module cannot change its identity.

use serde::de::DeserializeOwned;

use crate::__bindings::modhost::sdk::{context as wit, types};
use crate::{Result, TaskId};

/// What a caller may do inside its organization (WIT `role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Viewer,
    Member,
    Admin,
}

/// Who is calling (WIT `identity`), as set by the host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// The module this call runs in.
    pub module: String,
    pub user_id: String,
    pub organization_id: String,
    pub role: Role,
    /// The request that started this work (kept by background and blocking
    /// runs).
    pub request_id: String,
    pub session_id: Option<String>,
}

/// The identity of the current call. See `context.current` in the WIT.
pub fn current() -> Identity {
    let id = wit::current();
    Identity {
        module: id.module,
        user_id: id.user_id,
        organization_id: id.organization_id,
        role: match id.role {
            types::Role::Viewer => Role::Viewer,
            types::Role::Member => Role::Member,
            types::Role::Admin => Role::Admin,
        },
        request_id: id.request_id,
        session_id: id.session_id,
    }
}

/// The background task this call runs, or `None` in an action or a blocking
/// function. See `context.current-task`.
pub fn current_task() -> Option<TaskId> {
    wit::current_task().map(TaskId::from)
}

/// The current task's last checkpoint (see `context.checkpoint`), decoded as
/// `T`. A checkpoint of another shape is [`Error::InvalidInput`](crate::Error).
pub fn checkpoint<T: DeserializeOwned>() -> Result<Option<T>> {
    match wit::checkpoint() {
        Some(json) => Ok(Some(serde_json::from_str(&json)?)),
        None => Ok(None),
    }
}
