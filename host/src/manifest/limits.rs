//! `[tasks]`, `[limits]` and the caps of `[network]`: numeric grants, each
//! with a default and a range.

use std::time::Duration;

use serde::Deserialize;

use super::error::ManifestError;
use super::network::NetworkGrant;

/// A numeric manifest key: the value used when it is absent and the range it
/// must fall in. Out-of-range values are refused, never clamped, so a typo
/// cannot silently become a different grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The key as the error names it, e.g. `[limits] memory-mib`.
    pub key: &'static str,
    pub default: u64,
    pub min: u64,
    pub max: u64,
}

impl Setting {
    /// The value of this key in a manifest: its default when absent.
    pub(crate) fn read(&self, value: Option<i64>) -> Result<u64, ManifestError> {
        let Some(value) = value else {
            return Ok(self.default);
        };
        match u64::try_from(value) {
            Ok(v) if (self.min..=self.max).contains(&v) => Ok(v),
            _ => Err(ManifestError::OutOfRange {
                key: self.key,
                value,
                min: self.min,
                max: self.max,
            }),
        }
    }

    /// As [`Setting::read`], for keys whose maximum fits in `u32`.
    pub(crate) fn read_u32(&self, value: Option<i64>) -> Result<u32, ManifestError> {
        let v = self.read(value)?;
        u32::try_from(v).map_err(|_| ManifestError::OutOfRange {
            key: self.key,
            value: value.unwrap_or_default(),
            min: self.min,
            max: self.max,
        })
    }
}

/// Active (not finished) background tasks one user may have in this module:
/// keeps one user from filling the queue.
pub const MAX_ACTIVE_PER_USER: Setting = Setting {
    key: "[tasks] max-active-per-user",
    default: 16,
    min: 1,
    max: 10_000,
};

/// Active background tasks of this module in one organization, across its
/// users: bounds the rows one organization holds for one module, and one
/// organization never uses up another's (the name predates the
/// per-organization count and is kept so manifests stay valid).
pub const MAX_ACTIVE_PER_MODULE: Setting = Setting {
    key: "[tasks] max-active-per-module",
    default: 1_000,
    min: 1,
    max: 1_000_000,
};

/// Background tasks of this module running at once: each holds an instance
/// and its linear memory.
pub const MAX_CONCURRENT_TASKS: Setting = Setting {
    key: "[tasks] max-concurrent",
    default: 4,
    min: 1,
    max: 256,
};

/// Linear memory of one instance, in MiB: the pooling allocator reserves
/// this much per slot, so the ceiling bounds the host's address space.
pub const MEMORY_MIB: Setting = Setting {
    key: "[limits] memory-mib",
    default: 64,
    min: 1,
    max: 1024,
};

/// Deadline of one `handle-action` call, in ms: a user is waiting on it.
pub const CALL_DEADLINE_MS: Setting = Setting {
    key: "[limits] call-deadline-ms",
    default: 10_000,
    min: 1,
    max: 600_000,
};

/// Deadline of one `run-task` run, in ms: a day at most, so a stuck task is
/// eventually reclaimed.
pub const TASK_DEADLINE_MS: Setting = Setting {
    key: "[limits] task-deadline-ms",
    default: 3_600_000,
    min: 1,
    max: 86_400_000,
};

/// Deadline of one `call-blocking` run, in ms: its caller waits, so an hour
/// at most.
pub const BLOCKING_DEADLINE_MS: Setting = Setting {
    key: "[limits] blocking-deadline-ms",
    default: 60_000,
    min: 1,
    max: 3_600_000,
};

/// Bytes one organization's data directory of this module may hold, in MiB
/// (`[filesystem] max-mib`); when absent, the host's default applies
/// (1,024 MiB unless the operator says otherwise). At most a TiB: more is a
/// disk of its own, not a quota.
pub const DATA_MAX_MIB: Setting = Setting {
    key: "[filesystem] max-mib",
    default: 1024,
    min: 1,
    max: 1024 * 1024,
};

pub(crate) const MIB: u64 = 1024 * 1024;

/// Whose tasks of this module a caller may list and view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadScope {
    /// Only the caller's own tasks (the default).
    #[default]
    Own,
    /// Every user's tasks of this module, within the caller's organization.
    Organization,
}

/// `[tasks]`: how many background tasks, and whose tasks are visible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TasksGrant {
    /// Active tasks per user of this module, in one organization.
    pub max_active_per_user: u32,
    /// Active tasks of this module per organization.
    pub max_active_per_module: u32,
    pub max_concurrent: u32,
    pub read: ReadScope,
}

impl Default for TasksGrant {
    fn default() -> Self {
        Self::from_raw(RawTasks::default()).expect("the defaults are in range")
    }
}

/// `[limits]`: memory and deadlines of each kind of call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub call_deadline: Duration,
    pub task_deadline: Duration,
    pub blocking_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self::from_raw(RawLimits::default()).expect("the defaults are in range")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawTasks {
    max_active_per_user: Option<i64>,
    max_active_per_module: Option<i64>,
    max_concurrent: Option<i64>,
    read: Option<ReadScope>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawLimits {
    memory_mib: Option<i64>,
    call_deadline_ms: Option<i64>,
    task_deadline_ms: Option<i64>,
    blocking_deadline_ms: Option<i64>,
}

impl TasksGrant {
    pub(crate) fn from_raw(raw: RawTasks) -> Result<Self, ManifestError> {
        let max_active_per_user = MAX_ACTIVE_PER_USER.read_u32(raw.max_active_per_user)?;
        let max_active_per_module = MAX_ACTIVE_PER_MODULE.read_u32(raw.max_active_per_module)?;
        if max_active_per_module < max_active_per_user {
            return Err(ManifestError::PerModuleBelowPerUser {
                per_module: max_active_per_module,
                per_user: max_active_per_user,
            });
        }
        Ok(Self {
            max_active_per_user,
            max_active_per_module,
            max_concurrent: MAX_CONCURRENT_TASKS.read_u32(raw.max_concurrent)?,
            read: raw.read.unwrap_or_default(),
        })
    }
}

impl Limits {
    pub(crate) fn from_raw(raw: RawLimits) -> Result<Self, ManifestError> {
        Ok(Self {
            memory_bytes: MEMORY_MIB.read(raw.memory_mib)? * MIB,
            call_deadline: Duration::from_millis(CALL_DEADLINE_MS.read(raw.call_deadline_ms)?),
            task_deadline: Duration::from_millis(TASK_DEADLINE_MS.read(raw.task_deadline_ms)?),
            blocking_deadline: Duration::from_millis(
                BLOCKING_DEADLINE_MS.read(raw.blocking_deadline_ms)?,
            ),
        })
    }
}

/// The largest response body one request may read, in MiB: a download
/// bigger than the default names the key that allows it.
pub const MAX_RESPONSE_MIB: Setting = Setting {
    key: "[network] max-response-mib",
    default: 64,
    min: 1,
    max: 1 << 20,
};

/// How long a request may wait for the response's headers, in ms.
pub const FIRST_BYTE_TIMEOUT_MS: Setting = Setting {
    key: "[network] first-byte-timeout-ms",
    default: 30_000,
    min: 10,
    max: 600_000,
};

/// How long one request may take from connecting to its body's last byte,
/// in ms: a day at most, for the largest downloads.
pub const REQUEST_TIMEOUT_MS: Setting = Setting {
    key: "[network] timeout-ms",
    default: 300_000,
    min: 10,
    max: 86_400_000,
};

/// Requests of one module open at once, host-wide: a request holds its
/// place until its body is read or dropped.
pub const MAX_CONCURRENT_REQUESTS: Setting = Setting {
    key: "[network] max-concurrent",
    default: 8,
    min: 1,
    max: 1024,
};

impl Default for NetworkGrant {
    fn default() -> Self {
        NetworkGrant {
            allow: Vec::new(),
            max_response_bytes: MAX_RESPONSE_MIB.default << 20,
            first_byte_timeout: Duration::from_millis(FIRST_BYTE_TIMEOUT_MS.default),
            timeout: Duration::from_millis(REQUEST_TIMEOUT_MS.default),
            max_concurrent: u32::try_from(MAX_CONCURRENT_REQUESTS.default)
                .expect("the default fits in u32"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_uses_default_when_absent_and_refuses_outside_range() {
        assert_eq!(MEMORY_MIB.read(None).unwrap(), 64);
        assert_eq!(MEMORY_MIB.read(Some(1024)).unwrap(), 1024);
        for bad in [0, -1, 1025, i64::MIN, i64::MAX] {
            let err = MEMORY_MIB.read(Some(bad)).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("module.toml: [limits] memory-mib = {bad} is out of range 1..=1024")
            );
        }
    }

    #[test]
    fn default_limits_match_the_documented_defaults() {
        let limits = Limits::default();
        assert_eq!(limits.memory_bytes, 64 * MIB);
        assert_eq!(limits.call_deadline, Duration::from_secs(10));
        assert_eq!(limits.task_deadline, Duration::from_secs(3600));
        assert_eq!(limits.blocking_deadline, Duration::from_secs(60));
        let tasks = TasksGrant::default();
        assert_eq!(
            (tasks.max_active_per_user, tasks.max_active_per_module),
            (16, 1000)
        );
        assert_eq!(tasks.max_concurrent, 4);
        assert_eq!(tasks.read, ReadScope::Own);
    }
}
