//! What the waits for confirmations on this host hold: instances, within a
//! cap, and the expiries of the questions parked here (see `confirm.rs`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::db::now_ms;

/// The waits for confirmations of one host.
#[derive(Debug)]
pub struct Waits {
    /// How long a resumable wait keeps its instance.
    pub grace: Duration,
    /// Most waits holding an instance at once.
    pub max_held: u32,
    held: AtomicU32,
    /// Expiries (ms since the epoch) of the questions parked here.
    expiries: Mutex<BinaryHeap<Reverse<i64>>>,
    /// Rung when an expiry earlier than every other one is added.
    sooner: Notify,
}

impl Waits {
    pub fn new(grace: Duration, max_held: u32) -> Self {
        Waits {
            grace,
            max_held,
            held: AtomicU32::new(0),
            expiries: Mutex::default(),
            sooner: Notify::new(),
        }
    }

    /// An instance held by a wait, if the cap leaves one.
    pub fn hold(self: &Arc<Self>) -> Option<Held> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_held).then_some(n + 1)
            })
            .ok()
            .map(|_| Held(self.clone()))
    }

    fn expiries(&self) -> MutexGuard<'_, BinaryHeap<Reverse<i64>>> {
        self.expiries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that a question parked here expires at `at`.
    pub fn expires_at(&self, at: i64) {
        let mut expiries = self.expiries();
        let sooner = expiries.peek().is_none_or(|Reverse(first)| at < *first);
        expiries.push(Reverse(at));
        drop(expiries);
        if sooner {
            self.sooner.notify_one();
        }
    }

    /// Resolves once a question parked here has expired, forgetting every
    /// expiry that has passed by then.
    pub async fn next_expiry(&self) {
        loop {
            let first = self.expiries().peek().map(|Reverse(at)| *at);
            let sleep = async {
                match first {
                    Some(at) => {
                        let left = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
                        tokio::time::sleep(Duration::from_millis(left)).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.sooner.notified() => continue,
                () = sleep => {}
            }
            let now = now_ms();
            let mut expiries = self.expiries();
            while expiries.peek().is_some_and(|Reverse(at)| *at <= now) {
                expiries.pop();
            }
            return;
        }
    }
}

/// One instance held by a wait, given back when dropped.
#[derive(Debug)]
pub struct Held(Arc<Waits>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_hold_instances_up_to_the_cap_and_give_them_back_when_dropped() {
        let waits = Arc::new(Waits::new(Duration::ZERO, 2));
        let (a, b) = (waits.hold(), waits.hold());
        assert!(a.is_some() && b.is_some());
        assert!(waits.hold().is_none(), "the cap is reached");
        drop(a);
        assert!(waits.hold().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_expiry_is_the_soonest_even_when_added_while_waiting() {
        let waits = Arc::new(Waits::new(Duration::ZERO, 1));
        waits.expires_at(now_ms() + 60_000);
        let waiting = tokio::spawn({
            let waits = waits.clone();
            async move { waits.next_expiry().await }
        });
        tokio::task::yield_now().await;
        waits.expires_at(now_ms() + 10);
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the sooner expiry wakes it")
            .unwrap();
    }
}
