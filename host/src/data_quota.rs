//! The byte quota of a data directory: each module has one directory per
//! organization (`data/<module>/org-<id>`), and each may hold at most its
//! quota (`[filesystem] max-mib`, or the host's default).
//!
//! A directory is measured by walking it ([`measure`]): every file,
//! directory and symlink inside counts its length or the disk space it
//! takes, whichever is larger (a sparse file counts its length), and
//! symlinks are never followed. A walk runs on the blocking pool, never on
//! an async worker; [`DataUsage`] keeps the result and walks again only when
//! it is older than [`DataQuotaOptions::measure_every`], or a call that could
//! write to the directory has ended since and the measurement is older than
//! [`DataQuotaOptions::min_remeasure`]. Callers asking at once share one
//! walk.
//!
//! What a full directory (at or over its quota) gets is decided by the
//! host at the call boundary; see [`crate::Host`]: new background tasks
//! are refused and calls see `/data` read-only. Because the check is made
//! when a call starts, a call that was let write can overshoot the quota
//! by what it writes before it ends, and calls starting within
//! `min_remeasure` of a write by what they write.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// The quota of a data directory whose manifest names none: a GiB per
/// module and organization holds the reports, exports and caches modules
/// keep, while a host with a few modules and a hundred organizations still
/// fits on one disk.
pub const DEFAULT_MAX_BYTES: u64 = 1024 * MIB;

/// How long a measurement is reused when nothing wrote since: a walk per
/// call would cost a large directory's owner on every call, and five
/// seconds bounds how long a change made outside a call (by the operator,
/// by a child still running) goes unseen.
pub const DEFAULT_MEASURE_EVERY: Duration = Duration::from_secs(5);

/// How recent a measurement may be and still be reused after a call wrote:
/// a busy module calling many times a second walks its directory at most
/// four times a second, not once a call (a walk of a repository of ten
/// thousand files takes milliseconds).
pub const DEFAULT_MIN_REMEASURE: Duration = Duration::from_millis(250);

/// The host's data quota settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataQuotaOptions {
    /// The quota of a (module, organization) directory whose manifest has
    /// no `[filesystem] max-mib` (default [`DEFAULT_MAX_BYTES`]).
    pub default_max_bytes: u64,
    /// How long a measurement is reused (default
    /// [`DEFAULT_MEASURE_EVERY`]).
    pub measure_every: Duration,
    /// How recent a measurement is still reused after a call wrote
    /// (default [`DEFAULT_MIN_REMEASURE`]).
    pub min_remeasure: Duration,
}

impl Default for DataQuotaOptions {
    fn default() -> Self {
        DataQuotaOptions {
            default_max_bytes: DEFAULT_MAX_BYTES,
            measure_every: DEFAULT_MEASURE_EVERY,
            min_remeasure: DEFAULT_MIN_REMEASURE,
        }
    }
}

/// A directory at or over its quota, or one that could not be measured
/// (which counts as full, so nothing can hide bytes from the walk).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    #[error(
        "the data directory of this module for this organization holds {bytes} bytes, at or over its quota of {max_bytes} bytes"
    )]
    AtQuota { bytes: u64, max_bytes: u64 },
    #[error(
        "the data directory of this module for this organization could not be measured against its quota of {max_bytes} bytes"
    )]
    Unmeasured { max_bytes: u64 },
}

/// The bytes `dir` holds: every entry below it counts the larger of its
/// length and its allocated blocks; symlinks count themselves, never their
/// target. A missing `dir` holds nothing. An entry that vanishes during the
/// walk is skipped; a directory inside that cannot be read is an error.
pub fn measure(dir: &Path) -> io::Result<u64> {
    let mut total: u64 = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            // `DirEntry::metadata` does not follow a symlink.
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            total = total.saturating_add(meta.len().max(meta.blocks().saturating_mul(512)));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// One directory's last measurement.
#[derive(Debug, Default)]
struct Slot {
    /// Set when a call that could write to the directory ends.
    written: AtomicBool,
    /// Bytes and when they were measured; held while a walk runs, so
    /// concurrent checks wait for it instead of walking again.
    measured: tokio::sync::Mutex<Option<(u64, Instant)>>,
}

/// The measured size of data directories, shared by the calls of a host.
#[derive(Debug)]
pub struct DataUsage {
    measure_every: Duration,
    min_remeasure: Duration,
    slots: Mutex<HashMap<PathBuf, Arc<Slot>>>,
}

impl DataUsage {
    pub fn new(measure_every: Duration, min_remeasure: Duration) -> Self {
        DataUsage {
            measure_every,
            min_remeasure,
            slots: Mutex::default(),
        }
    }

    fn slot(&self, dir: &Path) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(dir.to_path_buf()).or_default().clone()
    }

    /// The bytes `dir` holds, as last measured if that is recent and
    /// nothing wrote since (or it is younger than the minimum), else
    /// measured now on the blocking pool.
    pub async fn bytes(&self, dir: &Path) -> io::Result<u64> {
        let slot = self.slot(dir);
        let mut measured = slot.measured.lock().await;
        if let Some((bytes, at)) = *measured
            && at.elapsed() < self.measure_every
            && (!slot.written.load(Ordering::SeqCst) || at.elapsed() < self.min_remeasure)
        {
            return Ok(bytes);
        }
        // Cleared before the walk: a call ending during it sets it again.
        slot.written.store(false, Ordering::SeqCst);
        let path = dir.to_path_buf();
        let bytes = tokio::task::spawn_blocking(move || measure(&path))
            .await
            .map_err(io::Error::other)??;
        *measured = Some((bytes, Instant::now()));
        Ok(bytes)
    }

    /// `Err` when `dir` is at or over `max_bytes`, or cannot be measured.
    pub async fn check(&self, dir: &Path, max_bytes: u64) -> Result<u64, Full> {
        match self.bytes(dir).await {
            Ok(bytes) if bytes < max_bytes => Ok(bytes),
            Ok(bytes) => Err(Full::AtQuota { bytes, max_bytes }),
            Err(error) => {
                tracing::error!(dir = %dir.display(), %error, "cannot measure a data directory; it counts as full");
                Err(Full::Unmeasured { max_bytes })
            }
        }
    }

    /// A call that could write to `dir` ended: the next check measures
    /// again, however recent the last measurement.
    pub fn written(&self, dir: &Path) {
        self.slot(dir).written.store(true, Ordering::SeqCst);
    }
}

/// Marks a directory written when dropped: a call that could write marks
/// its directory however it ends (returned, trapped, dropped).
#[derive(Debug)]
pub struct WriteGuard {
    usage: Arc<DataUsage>,
    dir: PathBuf,
}

impl WriteGuard {
    pub fn new(usage: Arc<DataUsage>, dir: PathBuf) -> Self {
        WriteGuard { usage, dir }
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        self.usage.written(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_counts_every_file_below_and_never_a_symlinks_target() {
        let dir = tempfile::tempdir().unwrap();
        let empty = measure(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/deep.bin"), vec![1u8; 300_000]).unwrap();
        std::fs::write(dir.path().join("top.bin"), vec![1u8; 100_000]).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("huge.bin"), vec![1u8; 2_000_000]).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let bytes = measure(dir.path()).unwrap();
        assert!(bytes >= empty + 400_000, "{bytes}");
        assert!(
            bytes < 1_000_000,
            "the symlink's target was counted: {bytes}"
        );
        assert_eq!(measure(&dir.path().join("missing")).unwrap(), 0);
    }

    #[test]
    fn a_sparse_file_counts_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("sparse")).unwrap();
        file.set_len(50 * MIB).unwrap();
        assert!(measure(dir.path()).unwrap() >= 50 * MIB);
    }

    #[tokio::test]
    async fn a_measurement_is_reused_until_a_call_wrote_or_it_is_old() {
        let dir = tempfile::tempdir().unwrap();
        let usage = Arc::new(DataUsage::new(Duration::from_secs(3600), Duration::ZERO));
        let before = usage.bytes(dir.path()).await.unwrap();
        std::fs::write(dir.path().join("f"), vec![1u8; 200_000]).unwrap();
        assert_eq!(
            usage.bytes(dir.path()).await.unwrap(),
            before,
            "reused: nothing marked it written"
        );
        // A call that could write ends (its guard drops): measured again.
        drop(WriteGuard::new(usage.clone(), dir.path().into()));
        assert!(usage.bytes(dir.path()).await.unwrap() >= before + 200_000);

        let eager = DataUsage::new(Duration::ZERO, Duration::ZERO);
        let first = eager.bytes(dir.path()).await.unwrap();
        std::fs::remove_file(dir.path().join("f")).unwrap();
        assert!(
            eager.bytes(dir.path()).await.unwrap() < first,
            "old: measured again"
        );
    }

    #[tokio::test]
    async fn a_directory_is_full_at_its_quota() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), vec![1u8; 100_000]).unwrap();
        let usage = DataUsage::new(Duration::ZERO, Duration::ZERO);
        let bytes = usage.check(dir.path(), 10 * MIB).await.unwrap();
        assert!(
            matches!(usage.check(dir.path(), bytes).await, Err(Full::AtQuota { max_bytes, .. }) if max_bytes == bytes)
        );
        let message = usage.check(dir.path(), 1).await.unwrap_err().to_string();
        assert!(
            message.contains("at or over its quota of 1 bytes"),
            "{message}"
        );
    }
}
