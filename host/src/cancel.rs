//! What bounds a call: a [`CancelToken`] that reaches it wherever it waits,
//! and its [`Deadline`].
//!
//! The epoch callback reads both inside wasm; a host call that waits (a
//! confirmation, a child process) awaits [`CancelToken::cancelled`] and
//! bounds itself by [`Deadline::time_left`]. One token per running task,
//! shared by its run and the blocking calls it makes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A cancellation flag with a wake-up. Cheap to clone; every clone is the
/// same token.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    cancelled: AtomicBool,
    wake: Notify,
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels: the flag is set for good and every waiter wakes.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        self.0.wake.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// Resolves once the token is cancelled (at once if it already is).
    pub async fn cancelled(&self) {
        loop {
            let woken = self.0.wake.notified();
            tokio::pin!(woken);
            // Registered before the flag is read, so a cancel in between
            // still wakes this waiter.
            woken.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            woken.await;
        }
    }
}

/// When a call is stopped. Time spent waiting for a user is added back.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    limit: Duration,
    at: Instant,
}

impl Deadline {
    /// A deadline `limit` from now.
    pub fn after(limit: Duration) -> Self {
        Deadline {
            limit,
            at: Instant::now() + limit,
        }
    }

    /// The call's limit as granted (without the time added back).
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// What is left before the call is stopped.
    pub fn time_left(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    /// Pushes the deadline back by `d`: time spent waiting for a user does
    /// not count against the call.
    pub fn extend(&mut self, d: Duration) {
        self.at += d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_wakes_when_the_token_is_cancelled() {
        let token = CancelToken::new();
        let waiter = tokio::spawn({
            let token = token.clone();
            async move { token.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        token.cancel();
        waiter.await.unwrap();
        assert!(token.is_cancelled());
    }

    #[tokio::test]
    async fn waiting_on_a_cancelled_token_returns_at_once() {
        let token = CancelToken::new();
        token.cancel();
        token.cancelled().await;
    }
}
