//! Any arguments a guest can pass to the host functions of `tasks`, through
//! the checks each runs before anything is stored or started: task keys and
//! prefixes, titles and labels, progress, JSON arguments and checkpoints,
//! task ids, confirmation timeouts. Each is accepted within its documented
//! limit or refused with a typed error, never a panic.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use modhost::tasks::policy;

#[derive(Debug, Arbitrary)]
enum Call {
    Key(String),
    Prefix(String),
    Title(String),
    Label(String),
    Progress(f64),
    Args(String),
    Checkpoint(String),
    TaskId(String),
    ConfirmationTimeout(Option<u64>),
    Limit(u32, u32, u32),
}

fuzz_target!(|calls: Vec<Call>| {
    for call in calls {
        match call {
            Call::Key(k) => {
                if let Ok(k) = policy::task_key(&k) {
                    assert!(k.len() <= policy::MAX_TASK_KEY_BYTES);
                }
            }
            Call::Prefix(p) => {
                if let Ok(p) = policy::key_prefix(&p) {
                    assert!(p.len() <= policy::MAX_TASK_KEY_BYTES);
                }
            }
            Call::Title(t) => {
                if let Ok(t) = policy::short_text("title", &t, policy::MAX_TITLE_BYTES) {
                    assert!(t.len() <= policy::MAX_TITLE_BYTES);
                }
            }
            Call::Label(l) => {
                if let Ok(l) = policy::short_text("label", &l, policy::MAX_LABEL_BYTES) {
                    assert!(l.len() <= policy::MAX_LABEL_BYTES);
                }
            }
            Call::Progress(p) => {
                if let Ok(p) = policy::progress(p) {
                    assert!((0.0..=1.0).contains(&p), "{p}");
                }
            }
            Call::Args(a) => {
                let _ = policy::args(&a);
            }
            Call::Checkpoint(c) => {
                if let Ok(c) = policy::json_text("checkpoint", &c, policy::MAX_CHECKPOINT_BYTES) {
                    assert!(c.len() <= policy::MAX_CHECKPOINT_BYTES);
                }
            }
            Call::TaskId(id) => {
                if let Ok(id) = policy::task_id(&id) {
                    assert_eq!(id.len(), 36, "{id}");
                }
            }
            Call::ConfirmationTimeout(ms) => {
                if let Ok(d) = policy::confirmation_timeout(ms) {
                    assert!(d.as_millis() <= u128::from(policy::MAX_CONFIRMATION_TIMEOUT_MS));
                }
            }
            Call::Limit(requested, default, max) => {
                let _ = policy::limit(requested, default, max);
            }
        }
    }
});
