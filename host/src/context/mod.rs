//! `interface context`: who is calling, and inside which task.
//!
//! Read-only by construction: the interface has no setter, and the values come
//! from the sandbox the host built for this call.

use crate::bindings::{context, types};
use crate::sandbox::SandboxState;

impl context::Host for SandboxState {
    async fn current(&mut self) -> wasmtime::Result<types::Identity> {
        Ok(self.identity().to_wit())
    }

    async fn current_task(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.task().map(|t| t.task_id.clone()))
    }

    async fn checkpoint(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.task().and_then(|t| t.checkpoint.clone()))
    }
}

impl types::Host for SandboxState {
    fn convert_error(&mut self, err: crate::error::HostError) -> wasmtime::Result<types::Error> {
        match err {
            crate::error::HostError::Sdk(e) => Ok(e.into()),
            crate::error::HostError::Trap(e) => Err(e),
        }
    }
}

impl crate::bindings::ui::Host for SandboxState {}
