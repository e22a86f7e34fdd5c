//! The queues of pending tasks on this host, and their running slots.
//!
//! Pure state: [`Scheduler::next`] picks what may start now under the global
//! and per-module limits, modules served round robin so a busy one cannot
//! starve the others; whoever starts the pick (the task service) gives the
//! slot back with [`Scheduler::done`]. A task waiting for a user gives its
//! slot up for the wait ([`Scheduler::park`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

/// Pending task ids per module, and who holds which running slot.
#[derive(Debug)]
pub struct Scheduler {
    max_running: u32,
    state: Mutex<Queues>,
}

#[derive(Debug, Default)]
struct Queues {
    by_module: BTreeMap<String, VecDeque<String>>,
    running_by_module: HashMap<String, u32>,
    /// Each module's `[tasks] max-concurrent`.
    caps: HashMap<String, u32>,
    running: u32,
    /// The module served last, so the next pick starts after it (round robin).
    last: Option<String>,
}

impl Scheduler {
    /// At most `max_running` (at least 1) tasks run at once.
    pub fn new(max_running: u32) -> Self {
        Scheduler {
            max_running: max_running.max(1),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, Queues> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets how many tasks of `module` may run at once. A module without a
    /// cap runs nothing: its tasks wait until it is configured here.
    pub fn set_cap(&self, module: &str, cap: u32) {
        self.state().caps.insert(module.to_owned(), cap);
    }

    pub fn enqueue(&self, module: &str, id: String) {
        self.state()
            .by_module
            .entry(module.to_owned())
            .or_default()
            .push_back(id);
    }

    /// The next task that may start now, its slot taken; `None` when the
    /// host is full or nothing queued may run.
    pub fn next(&self) -> Option<(String, String)> {
        let mut q = self.state();
        if q.running >= self.max_running {
            return None;
        }
        let modules: Vec<String> = q.by_module.keys().cloned().collect();
        let start = q
            .last
            .as_ref()
            .and_then(|l| modules.iter().position(|m| m > l))
            .unwrap_or(0);
        let mut pick = None;
        for i in 0..modules.len() {
            let name = &modules[(start + i) % modules.len()];
            let Some(&granted) = q.caps.get(name) else {
                continue;
            };
            // While other modules wait, no module may hold more than half
            // the host's slots, so tasks parked in confirmations cannot
            // starve them; alone, a module may use its whole grant.
            let others_waiting = q
                .by_module
                .iter()
                .any(|(other, queue)| other != name && !queue.is_empty());
            let mut cap = granted;
            if others_waiting {
                cap = cap.min((self.max_running / 2).max(1));
            }
            if q.running_by_module.get(name).copied().unwrap_or(0) >= cap {
                continue;
            }
            if let Some(id) = q.by_module.get_mut(name).and_then(VecDeque::pop_front) {
                pick = Some((name.clone(), id));
                break;
            }
        }
        q.by_module.retain(|_, v| !v.is_empty());
        let (module, id) = pick?;
        q.running += 1;
        *q.running_by_module.entry(module.clone()).or_default() += 1;
        q.last = Some(module.clone());
        Some((module, id))
    }

    /// Gives back the slot a task of `module` held.
    pub fn done(&self, module: &str) {
        let mut q = self.state();
        q.running = q.running.saturating_sub(1);
        if let Some(n) = q.running_by_module.get_mut(module) {
            *n = n.saturating_sub(1);
        }
    }

    /// Gives back a running task's slot while it waits for a user: a parked
    /// task holds an instance, not a CPU. [`Scheduler::unpark`] takes it back
    /// (for a moment the host may then run one task over its limit).
    pub fn park(&self, module: &str) {
        self.done(module);
    }

    pub fn unpark(&self, module: &str) {
        let mut q = self.state();
        q.running += 1;
        *q.running_by_module.entry(module.to_owned()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_served_round_robin_within_their_caps() {
        let s = Scheduler::new(8);
        s.set_cap("a", 1);
        s.set_cap("b", 8);
        for i in 0..3 {
            s.enqueue("a", format!("a{i}"));
            s.enqueue("b", format!("b{i}"));
        }
        let picks: Vec<String> = std::iter::from_fn(|| s.next()).map(|(_, id)| id).collect();
        assert_eq!(picks, ["a0", "b0", "b1", "b2"], "a is at its cap of 1");
        s.done("a");
        assert_eq!(s.next().map(|(_, id)| id).as_deref(), Some("a1"));
    }

    #[test]
    fn a_module_that_is_not_configured_runs_nothing() {
        let s = Scheduler::new(8);
        s.enqueue("unknown", "t".into());
        assert_eq!(s.next(), None);
        s.set_cap("unknown", 1);
        assert_eq!(s.next(), Some(("unknown".into(), "t".into())));
    }

    #[test]
    fn a_parked_task_frees_its_slot_until_it_resumes() {
        let s = Scheduler::new(1);
        s.set_cap("m", 4);
        s.enqueue("m", "first".into());
        s.enqueue("m", "second".into());
        assert!(s.next().is_some());
        assert_eq!(s.next(), None, "the host is full");
        s.park("m");
        assert_eq!(s.next().map(|(_, id)| id).as_deref(), Some("second"));
        s.unpark("m");
        s.done("m");
        s.done("m");
        s.enqueue("m", "third".into());
        assert!(s.next().is_some());
    }
}
