//! `interface context`: who is calling, and inside which task.
//!
//! Read-only by construction: the interface has no setter, and the values come
//! from the sandbox the host built for this call.

use super::bindings::{context, types};
use crate::identity::{Identity, Role};
use crate::sandbox::SandboxState;
use crate::tasks::TaskScope;

/// What `context` sees of a call.
pub struct ContextView<'a> {
    pub identity: &'a Identity,
    pub task: Option<&'a TaskScope>,
}

impl ContextView<'_> {
    /// The projection `context` is linked with.
    pub fn of(s: &mut SandboxState) -> ContextView<'_> {
        ContextView {
            identity: &s.identity,
            task: s.task.as_ref(),
        }
    }
}

impl context::Host for ContextView<'_> {
    async fn current(&mut self) -> wasmtime::Result<types::Identity> {
        Ok(self.identity.to_wit())
    }

    async fn current_task(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.task.map(|t| t.task_id().to_owned()))
    }

    async fn checkpoint(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.task.and_then(|t| t.checkpoint.clone()))
    }
}

impl Identity {
    /// The WIT record `context.current` returns.
    pub fn to_wit(&self) -> types::Identity {
        types::Identity {
            module: self.module.clone(),
            user_id: self.principal.user_id.to_string(),
            organization_id: self.principal.organization_id.to_string(),
            role: match self.principal.role {
                Role::Viewer => types::Role::Viewer,
                Role::Member => types::Role::Member,
                Role::Admin => types::Role::Admin,
            },
            request_id: self.request_id.clone(),
            session_id: self.session_id.clone(),
        }
    }
}
