//! What bounds a call: a [`CancelToken`] that reaches it wherever it waits,
//! and its [`Deadline`].
//!
//! The epoch callback reads both inside wasm; the watchdog around every
//! call (`modules::invoke`) awaits both, so they hold wherever the guest
//! waits; a host call that waits (a confirmation, a child process) awaits
//! [`CancelToken::cancelled`] and bounds itself by [`Deadline::time_left`].
//! One token per running task, shared by its run and the blocking calls it
//! makes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

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

/// When a call is stopped, shared by everything that watches the call: the
/// epoch callback inside wasm, the watchdog around the call that holds
/// wherever the guest waits, and host calls that bound their own waits.
/// Time spent waiting for a user ([`Deadline::pause`]) is added back.
#[derive(Debug, Clone)]
pub struct Deadline(Arc<DeadlineInner>);

#[derive(Debug)]
struct DeadlineInner {
    limit: Duration,
    state: Mutex<DeadlineState>,
    /// Woken when a pause ends and the deadline moves.
    changed: Notify,
}

#[derive(Debug, Clone, Copy)]
struct DeadlineState {
    at: Instant,
    paused_since: Option<Instant>,
}

impl Deadline {
    /// A deadline `limit` from now.
    pub fn after(limit: Duration) -> Self {
        Deadline(Arc::new(DeadlineInner {
            limit,
            state: Mutex::new(DeadlineState {
                at: Instant::now() + limit,
                paused_since: None,
            }),
            changed: Notify::new(),
        }))
    }

    fn state(&self) -> DeadlineState {
        *self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The call's limit as granted (without the time added back).
    pub fn limit(&self) -> Duration {
        self.0.limit
    }

    /// What is left before the call is stopped (frozen while paused).
    pub fn time_left(&self) -> Duration {
        let s = self.state();
        let now = s.paused_since.unwrap_or_else(Instant::now);
        s.at.saturating_duration_since(now)
    }

    /// Whether the call is past its deadline; never while paused.
    pub fn passed(&self) -> bool {
        let s = self.state();
        s.paused_since.is_none() && Instant::now() >= s.at
    }

    /// Stops the clock until the guard is dropped: time spent waiting for a
    /// user does not count against the call.
    pub fn pause(&self) -> Paused<'_> {
        let mut s = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        let nested = s.paused_since.is_some();
        if !nested {
            s.paused_since = Some(Instant::now());
        }
        Paused {
            deadline: self,
            nested,
        }
    }

    /// Resolves once the deadline has passed (never while paused).
    pub async fn expired(&self) {
        loop {
            let changed = self.0.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let s = self.state();
            if s.paused_since.is_some() {
                changed.await;
                continue;
            }
            if Instant::now() >= s.at {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(s.at) => {}
                () = changed => {}
            }
        }
    }
}

/// A paused [`Deadline`]; the pause ends, and the deadline moves by its
/// length, when this is dropped.
#[derive(Debug)]
pub struct Paused<'a> {
    deadline: &'a Deadline,
    nested: bool,
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        if self.nested {
            return;
        }
        let inner = &self.deadline.0;
        let mut s = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(since) = s.paused_since.take() {
            s.at += since.elapsed();
        }
        drop(s);
        inner.changed.notify_waiters();
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

    #[tokio::test(start_paused = true)]
    async fn a_deadline_expires_after_its_limit_and_not_while_paused() {
        let deadline = Deadline::after(Duration::from_secs(10));
        let watcher = tokio::spawn({
            let deadline = deadline.clone();
            async move { deadline.expired().await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        let paused = deadline.pause();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!deadline.passed());
        assert!(!watcher.is_finished(), "expired while paused");
        drop(paused);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!watcher.is_finished(), "the pause was not added back");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(watcher.is_finished());
        assert_eq!(deadline.limit(), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn waiting_on_a_cancelled_token_returns_at_once() {
        let token = CancelToken::new();
        token.cancel();
        token.cancelled().await;
    }
}
