//! `run-blocking`: synchronous work off the event loop while the caller
//! waits, on a bounded pool of threads (never on an async worker), of which
//! one module holds at most half, so it cannot keep the others out.
//!
//! On a multi-threaded runtime the call runs on the caller's own thread,
//! which gives up its async work to another thread for the call
//! (`block_in_place`): no hand-off to a pool thread and back stands between
//! the caller and its call, and the pool's bound is its count of permits. A
//! current-thread runtime hands the call to a thread of its blocking pool.

use std::sync::Arc;

use super::policy;
use super::service::{BlockingCall, ModuleTasks, TaskScope, TaskService};
use crate::cancel::{CancelToken, Deadline};
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

/// What stops a blocking call with its caller: the caller's cancel token
/// (a task's), and its deadline (an action's or a run's). The host's own
/// calls have neither.
#[derive(Debug, Clone, Default)]
pub struct CallerStops {
    pub cancel: Option<CancelToken>,
    pub deadline: Option<Deadline>,
}

impl TaskService {
    /// Runs a blocking function of `module` in a fresh instance on the pool
    /// and waits for it. The identity and task scope are the caller's; a
    /// full pool answers `limit-exceeded` at once. The call stops with its
    /// caller (`stops`).
    pub async fn run_blocking(
        self: &Arc<Self>,
        module: &ModuleTasks,
        identity: Arc<Identity>,
        task: Option<TaskScope>,
        stops: CallerStops,
        function: &str,
        args_json: &str,
    ) -> Result<String, SdkError> {
        let CallerStops { cancel, deadline } = stops;
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
        let run = move || {
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
        };
        if tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread
        {
            // The caller's thread becomes the pool thread for this call:
            // its other async work moves to another thread first, so the
            // event loop keeps turning, and no hand-off to a pool thread
            // and back stands between the caller and its call.
            // The caller cannot watch while its thread runs the call: a
            // task of its own stops the call with the caller.
            let stop_with_caller = (cancel.is_some() || deadline.is_some()).then(|| {
                let token = token.clone();
                tokio::spawn(async move {
                    let cancelled = async {
                        match &cancel {
                            Some(c) => c.cancelled().await,
                            None => std::future::pending().await,
                        }
                    };
                    let expired = async {
                        match &deadline {
                            Some(d) => d.expired().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        () = cancelled => {}
                        () = expired => {}
                    }
                    token.cancel();
                })
            });
            let returned = tokio::task::block_in_place(|| {
                let _permit = permit;
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
            });
            if let Some(watch) = stop_with_caller {
                watch.abort();
            }
            return returned.unwrap_or_else(|_| {
                tracing::error!("blocking call panicked");
                Err(SdkError::Internal(
                    "the blocking call failed; see the host's log".into(),
                ))
            });
        }
        // A current-thread runtime has no other thread to move its work to.
        let mut joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            run()
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
