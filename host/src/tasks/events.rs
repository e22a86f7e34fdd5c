//! The in-process event bus: status, progress and confirmation events of
//! tasks, for whoever watches (the HTTP stream, tests, embedders).
//!
//! `emit-progress` floods are coalesced per task: at most one progress event
//! per [`EMIT_INTERVAL`], carrying the latest value, so a guest emitting in a
//! tight loop costs subscribers nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast;

use super::store::Status;
use crate::ui::Surface;

/// Least time between two live progress events of one task.
pub const EMIT_INTERVAL: Duration = Duration::from_millis(100);
/// Events buffered per subscriber before a slow one starts missing them.
pub const BUS_CAPACITY: usize = 4096;

/// Which task an event is about, and whose it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRef {
    pub task_id: String,
    pub module: String,
    pub organization_id: String,
    pub user_id: String,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum EventKind {
    Status {
        status: String,
    },
    Progress {
        progress: f64,
        label: Option<String>,
        persisted: bool,
    },
    Confirmation {
        surface: Surface,
    },
}

impl EventKind {
    /// A task reached `status`.
    pub fn status(status: Status) -> Self {
        EventKind::Status {
            status: status.as_str().to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskEvent {
    #[serde(flatten)]
    pub task: TaskRef,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Default)]
struct EmitSlot {
    last_sent: Option<Instant>,
    pending: Option<(f64, Option<String>)>,
    flush_scheduled: bool,
}

/// The bus. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<TaskEvent>,
    slots: Arc<Mutex<HashMap<String, EmitSlot>>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        EventBus {
            tx: broadcast::channel(BUS_CAPACITY).0,
            slots: Arc::default(),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<TaskEvent> {
        self.tx.subscribe()
    }

    /// Sends an event now (no subscriber is not an error).
    pub fn send(&self, task: TaskRef, kind: EventKind) {
        let _ = self.tx.send(TaskEvent { task, kind });
    }

    /// A live progress event, coalesced per task.
    pub fn emit_progress(&self, task: TaskRef, progress: f64, label: Option<String>) {
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = slots.entry(task.task_id.clone()).or_default();
        let due = slot
            .last_sent
            .is_none_or(|t| now.duration_since(t) >= EMIT_INTERVAL);
        if due && !slot.flush_scheduled {
            slot.last_sent = Some(now);
            drop(slots);
            self.send(
                task,
                EventKind::Progress {
                    progress,
                    label,
                    persisted: false,
                },
            );
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
        let bus = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let pending = {
                let mut slots = bus.slots.lock().unwrap_or_else(|p| p.into_inner());
                match slots.get_mut(&task.task_id) {
                    Some(slot) => {
                        slot.flush_scheduled = false;
                        slot.last_sent = Some(Instant::now());
                        slot.pending.take()
                    }
                    None => None,
                }
            };
            if let Some((progress, label)) = pending {
                bus.send(
                    task,
                    EventKind::Progress {
                        progress,
                        label,
                        persisted: false,
                    },
                );
            }
        });
    }

    /// Drops a finished task's coalescing state.
    pub fn forget(&self, task_id: &str) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(task_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskRef {
        TaskRef {
            task_id: "t".into(),
            module: "m".into(),
            organization_id: "o".into(),
            user_id: "u".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_emits_becomes_one_event_per_interval_carrying_the_latest_value() {
        let bus = EventBus::new();
        let mut rx = bus.subscribe();
        for i in 0..1000 {
            bus.emit_progress(task(), f64::from(i) / 1000.0, None);
        }
        tokio::time::sleep(EMIT_INTERVAL * 2).await;
        let mut got = Vec::new();
        while let Ok(e) = rx.try_recv() {
            got.push(e);
        }
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(got[0].kind, EventKind::Progress { progress, .. } if progress == 0.0));
        assert!(matches!(got[1].kind, EventKind::Progress { progress, .. } if progress == 0.999));
    }
}
