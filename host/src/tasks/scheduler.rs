//! The running slots of this host, and what it may claim to fill them.
//!
//! Pure state: [`Scheduler::wants`] says how many pending tasks of which
//! modules the host may claim from the store now, under the global and
//! per-module limits, modules served round robin so a busy one cannot
//! starve the others; [`Scheduler::claimed`] takes the slots of what the
//! claim returned, and [`Scheduler::done`] gives one back. A task waiting
//! for a user gives its slot up for the wait ([`Scheduler::park`]).
//!
//! Which modules have pending tasks is a hint, not a queue: the store holds
//! the queue, shared with other hosts. A module is marked when a task of it
//! is submitted or released here, when another host says so, or on the
//! claimer's slow poll, and unmarked when a claim returns less than it
//! asked for.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::store::{Claimed, Want};

/// Who holds which running slot, and which modules may have pending tasks.
#[derive(Debug)]
pub struct Scheduler {
    max_running: u32,
    state: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    /// Each configured module's `[tasks] max-concurrent`.
    caps: BTreeMap<String, u32>,
    running_by_module: BTreeMap<String, u32>,
    running: u32,
    /// Modules that may have pending tasks in the store, each with how
    /// often it was marked: a claim unmarks a module only if no mark came
    /// while it ran.
    pending: BTreeMap<String, u64>,
    /// The marks of each module when [`Scheduler::wants`] last read them.
    seen: BTreeMap<String, u64>,
    /// The module served first last time, so the next round starts after it.
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

    fn state(&self) -> MutexGuard<'_, Slots> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets how many tasks of `module` may run at once. A module without a
    /// cap runs nothing here: its tasks wait for a host that has it.
    pub fn set_cap(&self, module: &str, cap: u32) {
        let mut s = self.state();
        s.caps.insert(module.to_owned(), cap);
        *s.pending.entry(module.to_owned()).or_default() += 1;
    }

    /// Notes that `module` may have pending tasks.
    pub fn mark(&self, module: &str) {
        let mut s = self.state();
        if s.caps.contains_key(module) {
            *s.pending.entry(module.to_owned()).or_default() += 1;
        }
    }

    /// Notes that `module` has no pending task to claim now (its oldest
    /// could not start; it is marked again when it may).
    pub fn unmark(&self, module: &str) {
        self.state().pending.remove(module);
    }

    /// Notes that every configured module may have pending tasks.
    pub fn mark_all(&self) {
        let mut s = self.state();
        let all: Vec<String> = s.caps.keys().cloned().collect();
        for module in all {
            *s.pending.entry(module).or_default() += 1;
        }
    }

    /// How many pending tasks of which modules may be claimed now; empty
    /// when the host is full or no module is marked.
    pub fn wants(&self) -> Vec<Want> {
        let mut s = self.state();
        let mut free = self.max_running.saturating_sub(s.running);
        if free == 0 || s.pending.is_empty() {
            return Vec::new();
        }
        let marked: Vec<String> = s.pending.keys().cloned().collect();
        s.seen = s.pending.clone();
        let start = s
            .last
            .as_ref()
            .and_then(|l| marked.iter().position(|m| m > l))
            .unwrap_or(0);
        let mut wants = Vec::new();
        for i in 0..marked.len() {
            let name = &marked[(start + i) % marked.len()];
            let granted = s.caps.get(name).copied().unwrap_or(0);
            // While other modules wait, no module may hold more than half
            // the host's slots, so tasks parked in confirmations cannot
            // starve them; alone, a module may use its whole grant.
            let cap = if marked.len() > 1 {
                granted.min((self.max_running / 2).max(1))
            } else {
                granted
            };
            let running = s.running_by_module.get(name).copied().unwrap_or(0);
            let room = cap.saturating_sub(running).min(free);
            if room > 0 {
                free -= room;
                wants.push(Want {
                    module: name.clone(),
                    max: room,
                });
            }
            if free == 0 {
                break;
            }
        }
        if let Some(first) = wants.first() {
            s.last = Some(first.module.clone());
        }
        wants
    }

    /// Takes a slot for each task a claim of `wants` returned, and unmarks
    /// the modules of which it returned less than wanted (none left).
    pub fn claimed(&self, wants: &[Want], claimed: &[Claimed]) {
        let mut s = self.state();
        for want in wants {
            let got = claimed
                .iter()
                .filter(|c| c.row.module == want.module)
                .count();
            let got = u32::try_from(got).unwrap_or(u32::MAX);
            s.running += got;
            *s.running_by_module.entry(want.module.clone()).or_default() += got;
            let unmarked_since = s.pending.get(&want.module) == s.seen.get(&want.module);
            if got < want.max && unmarked_since {
                s.pending.remove(&want.module);
            }
        }
    }

    /// Gives back the slot a task of `module` held.
    pub fn done(&self, module: &str) {
        let mut s = self.state();
        s.running = s.running.saturating_sub(1);
        if let Some(n) = s.running_by_module.get_mut(module) {
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
        let mut s = self.state();
        s.running += 1;
        *s.running_by_module.entry(module.to_owned()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::store::{Lease, TaskRow};

    /// What a store would return for a claim of `n` tasks of `module`.
    fn claim(module: &str, n: u32) -> Vec<Claimed> {
        (0..n)
            .map(|i| {
                let mut row: TaskRow = serde_json::from_value(serde_json::json!({
                    "id": format!("{module}{i}"), "module": module, "task_name": "t",
                    "task_key": null, "title": null, "status": "running", "progress": 0.0,
                    "label": null, "checkpoint_json": null, "args_json": "{}",
                    "result_json": null, "failure_kind": null, "failure_message": null,
                    "resumable": false, "user_id": "u", "organization_id": "o", "role": "member",
                    "request_id": "r", "session_id": null, "created_at": 0, "updated_at": 0,
                    "started_at": 0, "finished_at": null, "attempts": 1, "confirmation": null,
                    "host": "local"
                }))
                .unwrap();
                row.id = format!("{module}{i}");
                Claimed {
                    lease: Lease {
                        task_id: row.id.clone(),
                        version: 1,
                    },
                    row,
                }
            })
            .collect()
    }

    fn wanted(wants: &[Want]) -> Vec<(&str, u32)> {
        wants.iter().map(|w| (w.module.as_str(), w.max)).collect()
    }

    #[test]
    fn modules_waiting_together_share_the_host_within_their_caps() {
        let s = Scheduler::new(8);
        s.set_cap("a", 1);
        s.set_cap("b", 8);
        assert_eq!(
            wanted(&s.wants()),
            [("a", 1), ("b", 4)],
            "b gets half while a waits"
        );
        s.claimed(&s.wants(), &[]);
        assert!(s.wants().is_empty(), "nothing is pending any more");
    }

    #[test]
    fn a_module_alone_may_use_its_whole_grant_and_no_more_than_the_host() {
        let s = Scheduler::new(8);
        s.set_cap("b", 20);
        let wants = s.wants();
        assert_eq!(wanted(&wants), [("b", 8)]);
        s.claimed(&wants, &claim("b", 8));
        s.mark("b");
        assert!(s.wants().is_empty(), "the host is full");
        s.done("b");
        assert_eq!(wanted(&s.wants()), [("b", 1)]);
    }

    #[test]
    fn rounds_start_after_the_module_served_first_last_time() {
        let s = Scheduler::new(1);
        s.set_cap("a", 1);
        s.set_cap("b", 1);
        let first = s.wants();
        assert_eq!(wanted(&first), [("a", 1)]);
        s.claimed(&first, &claim("a", 1));
        s.done("a");
        assert_eq!(wanted(&s.wants()), [("b", 1)]);
    }

    #[test]
    fn a_module_that_is_not_configured_is_never_wanted() {
        let s = Scheduler::new(8);
        s.mark("unknown");
        assert!(s.wants().is_empty());
        s.set_cap("unknown", 1);
        assert_eq!(wanted(&s.wants()), [("unknown", 1)]);
    }

    #[test]
    fn a_claim_that_returns_less_than_wanted_unmarks_the_module() {
        let s = Scheduler::new(8);
        s.set_cap("m", 4);
        let wants = s.wants();
        s.claimed(&wants, &claim("m", 2));
        assert!(s.wants().is_empty(), "the store had only two");
        s.mark_all();
        assert_eq!(wanted(&s.wants()), [("m", 2)], "two slots are taken");
    }

    #[test]
    fn a_mark_made_while_a_claim_ran_survives_the_claim_that_found_nothing() {
        let s = Scheduler::new(8);
        s.set_cap("m", 4);
        let wants = s.wants();
        s.mark("m"); // a submission committed after the claim's snapshot
        s.claimed(&wants, &[]);
        assert_eq!(wanted(&s.wants()), [("m", 4)]);
        s.claimed(&s.wants(), &[]);
        assert!(s.wants().is_empty());
    }

    #[test]
    fn a_parked_task_frees_its_slot_until_it_resumes() {
        let s = Scheduler::new(1);
        s.set_cap("m", 4);
        let wants = s.wants();
        s.claimed(&wants, &claim("m", 1));
        s.mark("m");
        assert!(s.wants().is_empty(), "the host is full");
        s.park("m");
        assert_eq!(wanted(&s.wants()), [("m", 1)]);
        s.unpark("m");
        assert!(s.wants().is_empty());
    }
}
