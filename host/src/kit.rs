//! A test kit for the people who write manifests and host policies: parse a
//! module's manifest, take a caller's identity, and ask what this host
//! would decide — may it run this program with these arguments, these
//! variables, in this directory? may this caller read that user's tasks? —
//! through the very checks the host makes at the call, without a server, a
//! component or a child process.
//!
//! ```
//! use modhost::kit::PolicyKit;
//!
//! let kit = PolicyKit::parse(r#"
//!     name = "notes"
//!     version = "0.1.0"
//!     component = "notes.wasm"
//!
//!     [[subprocess.programs]]
//!     program = "git"
//!     args = [["-C", "repo", "log", "-1", "--format=%at"]]
//! "#).unwrap();
//!
//! kit.run(&["git", "-C", "repo", "log", "-1", "--format=%at"]).assert_allowed();
//! kit.run(&["git", "-C", "repo", "log", "-p"]).assert_denied("no granted shape matches");
//! kit.run(&["sh", "-c", "id"]).assert_denied("[[subprocess.programs]]");
//! kit.reads_tasks_of("bob", "acme").assert_denied("own tasks");
//!
//! // A shape that lets a caller choose a command is refused at load.
//! let refused = PolicyKit::parse(r#"
//!     name = "notes"
//!     version = "0.1.0"
//!     component = "notes.wasm"
//!
//!     [[subprocess.programs]]
//!     program = "git"
//!     args = [["-c", "{value}", "status"]]
//! "#);
//! assert!(refused.unwrap_err().to_string().contains("git"));
//! ```
//!
//! What needs the module's data directory — whether a `{path}` or working
//! directory leads out of it through a symlink — and what the kernel then
//! enforces (Landlock, seccomp) is not decided here: the whole-path tests
//! under `tests/` run real children for that.

use std::path::Path;

use crate::identity::{Principal, Role};
use crate::manifest::{LoadEnv, Manifest, ManifestError};
use crate::subprocess::gate::{self, Denied, Request};

/// A manifest, parsed as this host parses it, and the caller asking.
#[derive(Debug, Clone)]
pub struct PolicyKit {
    manifest: Manifest,
    caller: Principal,
}

/// What the host decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// `permission-denied`: not granted; the reason names the grant.
    Denied(String),
    /// `invalid-input`: malformed whatever the manifest says.
    Invalid(String),
}

impl Verdict {
    /// Panics unless allowed.
    #[track_caller]
    pub fn assert_allowed(&self) {
        if *self != Verdict::Allowed {
            panic!("expected the host to allow it, got {self:?}");
        }
    }

    /// Panics unless denied with a reason that contains `reason`.
    #[track_caller]
    pub fn assert_denied(&self, reason: &str) {
        match self {
            Verdict::Denied(r) if r.contains(reason) => {}
            other => panic!("expected a denial mentioning {reason:?}, got {other:?}"),
        }
    }

    /// Panics unless refused as malformed with a reason that contains
    /// `reason`.
    #[track_caller]
    pub fn assert_invalid(&self, reason: &str) {
        match self {
            Verdict::Invalid(r) if r.contains(reason) => {}
            other => panic!("expected invalid input mentioning {reason:?}, got {other:?}"),
        }
    }
}

impl PolicyKit {
    /// Parses `module.toml` text, resolving programs from this host's
    /// search path; the caller is `alice`, a member of `acme`.
    pub fn parse(manifest: &str) -> Result<Self, ManifestError> {
        Self::parse_with(manifest, &LoadEnv::host_default())
    }

    /// Like [`parse`](Self::parse), with the load environment (search path,
    /// refused directories) a host would use.
    pub fn parse_with(manifest: &str, env: &LoadEnv) -> Result<Self, ManifestError> {
        Ok(PolicyKit {
            manifest: crate::manifest::parse(manifest, env)?,
            caller: default_caller(),
        })
    }

    /// Loads the manifest of the module in `dir`.
    pub fn load_dir(dir: &Path) -> Result<Self, ManifestError> {
        Ok(PolicyKit {
            manifest: crate::manifest::load_dir(dir, &LoadEnv::host_default())?,
            caller: default_caller(),
        })
    }

    /// The same manifest asked by `caller`.
    pub fn as_caller(mut self, caller: Principal) -> Self {
        self.caller = caller;
        self
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// What the manifest allows, in plain words (as `modhost check
    /// --explain` prints it).
    pub fn explain(&self) -> Vec<String> {
        self.manifest.policy.in_plain_words()
    }

    /// Whether `run-subprocess` of `argv` (the program, then its arguments)
    /// would be allowed.
    pub fn run(&self, argv: &[&str]) -> Verdict {
        let (program, args) = argv.split_first().unwrap_or((&"", &[]));
        self.request(&Request {
            program: (*program).to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..Request::default()
        })
    }

    /// Whether `request` (with variables, working directory, limits) would
    /// be allowed.
    pub fn request(&self, request: &Request) -> Verdict {
        match gate::check(&self.manifest.policy.subprocess, request) {
            Ok(_) => Verdict::Allowed,
            Err(Denied::NotGranted(r)) => Verdict::Denied(r),
            Err(Denied::Invalid(r) | Denied::Internal(r)) => Verdict::Invalid(r),
        }
    }

    /// Whether the caller may list and look up the tasks of `user` in
    /// `organization` (`list-user-tasks`, key lookups, the read model).
    pub fn reads_tasks_of(&self, user: &str, organization: &str) -> Verdict {
        let read = self.manifest.policy.tasks.read;
        if crate::tasks::policy::may_read_tasks_of(read, &self.caller, user, organization) {
            return Verdict::Allowed;
        }
        if organization != self.caller.organization_id.as_str() {
            Verdict::Denied("another organization's tasks are never visible".into())
        } else {
            Verdict::Denied(
                "[tasks] read = \"own\": a caller sees only their own tasks (grant read = \"organization\")"
                    .into(),
            )
        }
    }
}

fn default_caller() -> Principal {
    Principal {
        user_id: "alice".parse().expect("a valid user id"),
        organization_id: "acme".parse().expect("a valid organization id"),
        role: Role::Member,
    }
}
