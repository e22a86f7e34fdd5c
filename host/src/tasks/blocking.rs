//! `run-blocking`: synchronous work off the event loop while the caller
//! waits, on a bounded pool of threads (never on an async worker), of which
//! one module holds at most half, so it cannot keep the others out.

use std::sync::Arc;

use super::policy;
use super::service::{BlockingCall, ModuleTasks, TaskScope, TaskService};
use crate::cancel::CancelToken;
use crate::error::SdkError;
use crate::identity::Identity;
use crate::share::Refused;

/// Cancels a token when dropped.
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl TaskService {
    /// Runs a blocking function of `module` in a fresh instance on the pool
    /// and waits for it. The identity and task scope are the caller's; a
    /// full pool answers `limit-exceeded` at once.
    pub async fn run_blocking(
        self: &Arc<Self>,
        module: &ModuleTasks,
        identity: Arc<Identity>,
        task: Option<TaskScope>,
        cancel: Option<CancelToken>,
        function: &str,
        args_json: &str,
    ) -> Result<String, SdkError> {
        module.offers(&module.blocking, "blocking function", function)?;
        policy::args(args_json)?;
        let threads = self.blocking.total();
        let share = (threads / 2).max(1);
        let permit = self
            .blocking
            .take(&module.name, share)
            .map_err(|refused| {
                SdkError::LimitExceeded(match refused {
                    Refused::Owner => format!(
                        "module `{}` holds its share of the blocking pool: {share} of its {threads} threads",
                        module.name
                    ),
                    Refused::Total => format!("the blocking pool's {threads} threads are all busy"),
                })
            })?;
        // The call has a token of its own: cancelled with the caller's task,
        // and when the caller is gone (stopped from outside), so the pool
        // thread is never held for a caller that stopped waiting.
        let token = CancelToken::new();
        let _stop_when_dropped = CancelOnDrop(token.clone());
        let call = BlockingCall {
            identity,
            // A blocking call made from a task knows the task, but cannot
            // pause it: it holds a pool thread.
            task: task.map(|t| TaskScope { is_run: false, ..t }),
            cancel: Some(token.clone()),
            function: function.to_owned(),
            args_json: args_json.to_owned(),
        };
        let service = self.clone();
        let handle = tokio::runtime::Handle::current();
        let mut joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let returned =
                handle.block_on(service.runner.clone().call_blocking(service.clone(), call));
            match returned {
                Ok(Ok(json)) => {
                    policy::json_text("blocking result", &json, policy::MAX_RESULT_BYTES)
                        .map(|_| json.clone())
                        .map_err(|e| {
                            SdkError::Internal(format!("module returned an invalid result: {e}"))
                        })
                }
                Ok(Err(e)) => Err(e),
                Err(e) => Err(e.to_sdk()),
            }
        });
        let joined = match &cancel {
            Some(task) => tokio::select! {
                joined = &mut joined => joined,
                () = task.cancelled() => {
                    token.cancel();
                    joined.await
                }
            },
            None => joined.await,
        };
        joined.unwrap_or_else(|e| {
            tracing::error!(error = %e, "blocking call panicked");
            Err(SdkError::Internal(
                "the blocking call failed; see the host's log".into(),
            ))
        })
    }
}
