//! `interface background-tasks`: the read model of tasks.
//!
//! Served by the durable task runtime, which this host version does not
//! include yet; calls are refused with a typed error, never a trap.

use crate::bindings::background_tasks as bt;
use crate::error::{HostError, SdkError};
use crate::sandbox::SandboxState;

impl bt::Host for SandboxState {
    async fn list(
        &mut self,
        _filter: bt::TaskFilter,
        _cursor: Option<String>,
        _limit: u32,
    ) -> Result<bt::TaskPage, HostError> {
        Err(SdkError::Internal(
            "background-tasks.list is not available in this host version".into(),
        )
        .into())
    }

    async fn get(&mut self, _id: String) -> Result<bt::TaskView, HostError> {
        Err(
            SdkError::Internal("background-tasks.get is not available in this host version".into())
                .into(),
        )
    }
}
