//! The host's event hub: what happens to tasks and subprocess calls, for
//! whoever watches (the HTTP event stream, the CLI, embedders, tests).
//!
//! Every event gets an id one higher than the last, starting at the boot's
//! time in microseconds, so ids also rise across restarts. The newest
//! [`RING_CAPACITY`] events stay in a ring: a subscriber is only a cursor
//! into it, so a slow or stuck watcher costs the publisher nothing (a push
//! and a wake-up) and simply falls behind; one that falls out of the ring is
//! told so ([`Missed`]) instead of silently skipping events. A subscriber
//! can start after an id it saw before (`Last-Event-ID`).
//!
//! `emit-progress` floods are coalesced per task: at most one live progress
//! event per [`EMIT_INTERVAL`], carrying the latest value.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::text::truncate;

/// Least time between two live progress events of one task.
pub const EMIT_INTERVAL: Duration = Duration::from_millis(100);
/// Events kept for subscribers that are behind or resume: about a minute of
/// a busy host's events.
pub const RING_CAPACITY: usize = 16 * 1024;
/// Bytes the ring may hold, whatever the events' sizes: the oldest go first.
pub const RING_BYTES: usize = 32 * 1024 * 1024;
/// Longest text an event quotes from a guest (a program name, a reason):
/// events tell what happened; the full record is the audit trail's.
pub const MAX_EVENT_TEXT_BYTES: usize = 512;

/// Whose event it is: the identity that started the work, and the task when
/// there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    pub module: String,
    pub organization_id: String,
    pub user_id: String,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum EventKind {
    /// A task was stored.
    TaskCreated {
        task_name: String,
        title: Option<String>,
    },
    /// A task reached `status`; `host`, the host running it, when it is its
    /// run that got there (`running` and the run's end).
    Status {
        status: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// Progress: `persisted` for `update-progress`, not for `emit-progress`.
    Progress {
        progress: f64,
        label: Option<String>,
        persisted: bool,
    },
    /// A task asks its user a question (the surface titled `title`; the
    /// task's detail holds the whole surface).
    ConfirmationAsked { title: String, asked_at: i64 },
    /// The confirmation was answered.
    ConfirmationAnswered { button: String, answered_by: String },
    /// Nobody answered in time.
    ConfirmationTimedOut,
    /// The subprocess gate decided on a call.
    Subprocess {
        program: String,
        decision: String,
        reason: Option<String>,
    },
}

impl EventKind {
    /// A subprocess decision, its guest-chosen text cut to
    /// [`MAX_EVENT_TEXT_BYTES`].
    pub fn subprocess(program: &str, decision: &str, reason: Option<&str>) -> Self {
        EventKind::Subprocess {
            program: truncate(program, MAX_EVENT_TEXT_BYTES).to_owned(),
            decision: decision.to_owned(),
            reason: reason.map(|r| truncate(r, MAX_EVENT_TEXT_BYTES).to_owned()),
        }
    }

    /// The event's name on the wire (SSE `event:` field).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::TaskCreated { .. } => "task-created",
            EventKind::Status { .. } => "status",
            EventKind::Progress { .. } => "progress",
            EventKind::ConfirmationAsked { .. } => "confirmation-asked",
            EventKind::ConfirmationAnswered { .. } => "confirmation-answered",
            EventKind::ConfirmationTimedOut => "confirmation-timed-out",
            EventKind::Subprocess { .. } => "subprocess",
        }
    }
}

/// One event as subscribers get it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: u64,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    #[serde(flatten)]
    pub subject: Subject,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// An event with its wire form made once for every watcher: the
/// Server-Sent Event `id: …\nevent: …\ndata: JSON\n\n`, whose data is the
/// event as one line of JSON (serde escapes newlines inside strings).
#[derive(Debug)]
pub struct Published {
    pub event: Event,
    sse: String,
    json: std::ops::Range<usize>,
}

impl Published {
    fn new(event: Event) -> Self {
        let json = serde_json::to_string(&event).unwrap_or_else(|_| "{}".to_owned());
        let head = format!("id: {}\nevent: {}\ndata: ", event.id, event.kind.name());
        let range = head.len()..head.len() + json.len();
        Published {
            event,
            sse: format!("{head}{json}\n\n"),
            json: range,
        }
    }

    /// The event as JSON.
    pub fn json(&self) -> &str {
        &self.sse[self.json.clone()]
    }

    /// The event as a Server-Sent Event, blank line included.
    pub fn sse(&self) -> &str {
        &self.sse
    }
}

/// A subscriber fell out of the ring: events after `after` are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("events after {after} are no longer kept; the oldest kept is {oldest}")]
pub struct Missed {
    pub after: u64,
    pub oldest: u64,
}

/// Why a resume point was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("event id `{0}` is not a number")]
    NotAnId(String),
    #[error("event id {0} has not happened yet")]
    Future(u64),
}

struct Ring {
    /// Id of `events[0]`; the next id is `first + events.len()`.
    first: u64,
    events: VecDeque<Arc<Published>>,
    /// Bytes of the events' wire forms.
    bytes: usize,
}

impl Ring {
    fn next_id(&self) -> u64 {
        self.first + self.events.len() as u64
    }
}

#[derive(Debug, Default)]
struct EmitSlot {
    last_sent: Option<Instant>,
    pending: Option<(f64, Option<String>)>,
    flush_scheduled: bool,
}

struct Inner {
    ring: RwLock<Ring>,
    /// The id of the newest event, for waking subscribers.
    newest: watch::Sender<u64>,
    slots: Mutex<HashMap<String, EmitSlot>>,
}

/// The hub. Cheap to clone.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("newest", &*self.inner.newest.borrow())
            .finish_non_exhaustive()
    }
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    pub fn new() -> Self {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
        EventHub {
            inner: Arc::new(Inner {
                ring: RwLock::new(Ring {
                    first: boot,
                    events: VecDeque::with_capacity(RING_CAPACITY),
                    bytes: 0,
                }),
                newest: watch::channel(boot - 1).0,
                slots: Mutex::default(),
            }),
        }
    }

    /// The id of the newest event (one below the first when there is none).
    pub fn newest(&self) -> u64 {
        *self.inner.newest.borrow()
    }

    /// Publishes an event now.
    pub fn send(&self, subject: Subject, kind: EventKind) {
        let mut ring = self.inner.ring.write().unwrap_or_else(|p| p.into_inner());
        let event = Event {
            id: ring.next_id(),
            at: crate::db::now_ms(),
            subject,
            kind,
        };
        let id = event.id;
        let published = Arc::new(Published::new(event));
        ring.bytes += published.sse.len();
        ring.events.push_back(published);
        while ring.events.len() > RING_CAPACITY
            || (ring.bytes > RING_BYTES && ring.events.len() > 1)
        {
            if let Some(old) = ring.events.pop_front() {
                ring.bytes -= old.sse.len();
                ring.first += 1;
            }
        }
        drop(ring);
        self.inner.newest.send_replace(id);
    }

    /// Watches events from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            hub: Arc::downgrade(&self.inner),
            after: self.newest(),
            wake: self.inner.newest.subscribe(),
        }
    }

    /// Watches the events after `last_seen` (an id as the client sent it),
    /// then live ones. An id older than the ring starts a subscription whose
    /// first call answers [`Missed`].
    pub fn subscribe_after(&self, last_seen: &str) -> Result<Subscription, ResumeError> {
        let after: u64 = last_seen
            .trim()
            .parse()
            .map_err(|_| ResumeError::NotAnId(crate::text::truncate(last_seen, 40).to_owned()))?;
        if after > self.newest() {
            return Err(ResumeError::Future(after));
        }
        Ok(Subscription {
            hub: Arc::downgrade(&self.inner),
            after,
            wake: self.inner.newest.subscribe(),
        })
    }

    /// A live progress event, coalesced per task.
    pub fn emit_progress(&self, subject: Subject, progress: f64, label: Option<String>) {
        let key = subject.task_id.clone().unwrap_or_default();
        let now = Instant::now();
        let mut slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = slots.entry(key.clone()).or_default();
        let due = slot
            .last_sent
            .is_none_or(|t| now.duration_since(t) >= EMIT_INTERVAL);
        let live = |progress, label| EventKind::Progress {
            progress,
            label,
            persisted: false,
        };
        if due && !slot.flush_scheduled {
            slot.last_sent = Some(now);
            drop(slots);
            self.send(subject, live(progress, label));
            return;
        }
        slot.pending = Some((progress, label));
        if slot.flush_scheduled {
            return;
        }
        slot.flush_scheduled = true;
        let wait = slot
            .last_sent
            .map(|t| EMIT_INTERVAL.saturating_sub(now.duration_since(t)))
            .unwrap_or_default();
        drop(slots);
        let hub = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let pending = {
                let mut slots = hub.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
                match slots.get_mut(&key) {
                    Some(slot) => {
                        slot.flush_scheduled = false;
                        slot.last_sent = Some(Instant::now());
                        slot.pending.take()
                    }
                    None => None,
                }
            };
            if let Some((progress, label)) = pending {
                hub.send(subject, live(progress, label));
            }
        });
    }

    /// Drops a finished task's coalescing state.
    pub fn forget(&self, task_id: &str) {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(task_id);
    }
}

/// A cursor into the hub: the events after the last one it returned.
#[derive(Debug)]
pub struct Subscription {
    /// Weak, so watchers never keep a stopped host's hub alive.
    hub: std::sync::Weak<Inner>,
    after: u64,
    wake: watch::Receiver<u64>,
}

impl Subscription {
    /// The id of the last event returned (or the resume point).
    pub fn position(&self) -> u64 {
        self.after
    }

    /// Calls `f` on the events after the cursor that are already there, at
    /// most `max`, without waiting, and moves the cursor past them; returns
    /// how many there were. `f` runs under the ring's read lock, so it only
    /// copies. After [`Missed`] the cursor has moved to the oldest kept
    /// event, so the next call goes on from there.
    pub fn try_visit(
        &mut self,
        max: usize,
        mut f: impl FnMut(&Arc<Published>),
    ) -> Result<usize, Missed> {
        let Some(hub) = self.hub.upgrade() else {
            return Ok(0);
        };
        let ring = hub.ring.read().unwrap_or_else(|p| p.into_inner());
        let start = self.after + 1;
        if start < ring.first {
            let missed = Missed {
                after: self.after,
                oldest: ring.first,
            };
            self.after = ring.first - 1;
            return Err(missed);
        }
        let offset = usize::try_from(start - ring.first).unwrap_or(usize::MAX);
        let mut seen = 0;
        for p in ring.events.iter().skip(offset).take(max) {
            f(p);
            self.after = p.event.id;
            seen += 1;
        }
        Ok(seen)
    }

    /// The events after the cursor that are already there, at most `max`.
    pub fn try_batch(&mut self, max: usize) -> Result<Vec<Arc<Published>>, Missed> {
        let mut batch = Vec::new();
        self.try_visit(max, |p| batch.push(p.clone()))?;
        Ok(batch)
    }

    /// Waits until there are events after the cursor (or it fell out of the
    /// ring); false when the hub is gone.
    pub async fn ready(&mut self) -> bool {
        loop {
            // The last id stays readable after the hub is gone.
            if self.hub.strong_count() == 0 {
                return false;
            }
            if *self.wake.borrow_and_update() > self.after {
                return true;
            }
            if self.wake.changed().await.is_err() {
                return false;
            }
        }
    }

    /// Waits until there are events after the cursor and returns up to `max`
    /// of them. Returns an empty batch only when the hub is gone.
    pub async fn batch(&mut self, max: usize) -> Result<Vec<Arc<Published>>, Missed> {
        loop {
            if !self.ready().await {
                return Ok(Vec::new());
            }
            let batch = self.try_batch(max)?;
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }

    /// The next event, waiting for it. `None` when the hub is gone.
    pub async fn recv(&mut self) -> Result<Option<Arc<Published>>, Missed> {
        Ok(self.batch(1).await?.pop())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> Subject {
        Subject {
            task_id: Some(id.into()),
            module: "m".into(),
            organization_id: "o".into(),
            user_id: "u".into(),
        }
    }

    fn status(s: &str) -> EventKind {
        EventKind::Status {
            status: s.into(),
            host: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_emits_becomes_one_event_per_interval_carrying_the_latest_value() {
        let hub = EventHub::new();
        let mut sub = hub.subscribe();
        for i in 0..1000 {
            hub.emit_progress(task("t"), f64::from(i) / 1000.0, None);
        }
        tokio::time::sleep(EMIT_INTERVAL * 2).await;
        let got = sub.try_batch(100).unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        let progress = |i: usize| match got[i].event.kind {
            EventKind::Progress { progress, .. } => progress,
            _ => f64::NAN,
        };
        assert_eq!(progress(0), 0.0);
        assert_eq!(progress(1), 0.999);
    }

    #[test]
    fn ids_rise_by_one_and_a_resumed_subscription_gets_exactly_what_came_after() {
        let hub = EventHub::new();
        for s in ["pending", "running", "completed"] {
            hub.send(task("t"), status(s));
        }
        let newest = hub.newest();
        let mut all = hub.subscribe_after(&(newest - 3).to_string()).unwrap();
        let ids: Vec<u64> = all
            .try_batch(10)
            .unwrap()
            .iter()
            .map(|p| p.event.id)
            .collect();
        assert_eq!(ids, [newest - 2, newest - 1, newest]);
        let mut resumed = hub.subscribe_after(&(newest - 1).to_string()).unwrap();
        let got = resumed.try_batch(10).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event.kind, status("completed"));
        assert!(
            got[0].json().contains("\"type\":\"status\""),
            "{}",
            got[0].json()
        );
        assert_eq!(
            got[0].sse(),
            format!("id: {}\nevent: status\ndata: {}\n\n", newest, got[0].json())
        );
    }

    #[test]
    fn a_resume_point_in_the_future_or_not_a_number_is_refused() {
        let hub = EventHub::new();
        hub.send(task("t"), status("pending"));
        let next = (hub.newest() + 1).to_string();
        assert!(matches!(
            hub.subscribe_after(&next),
            Err(ResumeError::Future(_))
        ));
        assert!(matches!(
            hub.subscribe_after("12; DROP"),
            Err(ResumeError::NotAnId(_))
        ));
    }

    #[test]
    fn a_subscriber_that_fell_out_of_the_ring_is_told_and_goes_on_from_the_oldest_kept() {
        let hub = EventHub::new();
        let mut slow = hub.subscribe();
        for _ in 0..RING_CAPACITY + 10 {
            hub.send(task("t"), status("running"));
        }
        let missed = slow.try_batch(10).unwrap_err();
        assert_eq!(missed.oldest, hub.newest() + 1 - RING_CAPACITY as u64);
        let next = slow.try_batch(10).unwrap();
        assert_eq!(next[0].event.id, missed.oldest);
    }

    #[test]
    fn the_ring_holds_a_bounded_number_of_bytes_and_guest_text_in_events_is_cut() {
        let hub = EventHub::new();
        let mut sub = hub.subscribe();
        let big = "x".repeat(8 * 1024);
        for _ in 0..RING_BYTES / big.len() + 100 {
            hub.send(task("t"), status(&big));
        }
        let bytes = hub.inner.ring.read().unwrap().bytes;
        assert!(bytes <= RING_BYTES, "{bytes}");
        assert!(sub.try_batch(1).is_err(), "the oldest were dropped");
        let huge = "p".repeat(1 << 20);
        let EventKind::Subprocess {
            program, reason, ..
        } = EventKind::subprocess(&huge, "denied", Some(&huge))
        else {
            unreachable!()
        };
        assert_eq!(program.len(), MAX_EVENT_TEXT_BYTES);
        assert_eq!(reason.map(|r| r.len()), Some(MAX_EVENT_TEXT_BYTES));
    }

    #[tokio::test]
    async fn a_subscription_ends_when_the_hub_is_gone_even_with_events_unread() {
        let hub = EventHub::new();
        let mut sub = hub.subscribe();
        hub.send(task("t"), status("running"));
        drop(hub);
        let end = tokio::time::timeout(Duration::from_secs(5), sub.recv()).await;
        assert!(matches!(end, Ok(Ok(None))), "{end:?}");
    }

    #[tokio::test]
    async fn a_waiting_subscriber_wakes_for_the_next_event() {
        let hub = EventHub::new();
        let mut sub = hub.subscribe();
        let sender = hub.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            sender.send(task("t"), status("running"));
        });
        let got = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got.event.kind, status("running"));
    }
}
