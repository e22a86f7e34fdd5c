//! `wasi:filesystem/types`, audited: the operations are wasmtime-wasi's own
//! (on the data directory the sandbox preopened, through cap-std), and an
//! operation on a path that the host refuses — one leading out of the data
//! directory (`..`, an absolute path, a symlink climbing out), a write to a
//! directory that is read-only because it is at its quota, one the OS
//! forbids — goes to the audit trail before the guest gets its error code.
//! The host's own are the streams a file is written or appended through
//! ([`writes`]): the same checks, without the blocking pool.
//!
//! A guest can ask for refusals as fast as it can loop, so one call records
//! at most [`MAX_RECORDED_REFUSALS`]; past that, one line in the host's log
//! says so.

use std::sync::Arc;

use wasmtime::component::Resource;
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, ErrorCode, HostDescriptor, HostDirectoryEntryStream,
};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, FsError, FsResult};

use crate::audit::{AuditEntry, AuditTrail, Decision, Detail, FilesystemDetail};
use crate::identity::Identity;

use crate::audit::MAX_RECORDED_REFUSALS;

mod writes;

/// The longest path a record keeps.
const MAX_RECORDED_PATH_BYTES: usize = 1024;

/// One call's refusals: where they go and how many went.
#[derive(Debug)]
pub struct FsRefusals {
    audit: Option<AuditTrail>,
    identity: Arc<Identity>,
    task_id: Option<Arc<str>>,
    /// Whether the data directory was preopened read-write: when not, a
    /// refused write is the quota's doing.
    writable: bool,
    recorded: u32,
    /// Record the call's first path operation as allowed by learning: the
    /// manifest grants no data directory, and the host learns the module.
    learns_data: bool,
}

impl FsRefusals {
    pub fn new(
        audit: Option<AuditTrail>,
        identity: Arc<Identity>,
        task_id: Option<&str>,
        writable: bool,
    ) -> Self {
        FsRefusals {
            audit,
            identity,
            task_id: task_id.map(Arc::from),
            writable,
            recorded: 0,
            learns_data: false,
        }
    }

    /// The same, recording the call's first path operation as a use of the
    /// data directory that only learning allowed.
    pub fn learning_data(mut self, learns: bool) -> Self {
        self.learns_data = learns;
        self
    }

    /// The record of the call's first path operation, when the host learns
    /// that the module uses a data directory its manifest does not grant.
    fn learned(
        &mut self,
        operation: &str,
        path: &str,
        error: Option<ErrorCode>,
    ) -> Option<AuditEntry> {
        if !std::mem::take(&mut self.learns_data) {
            return None;
        }
        let error = error.map(|c| c.name()).unwrap_or_default();
        Some(self.record(
            operation,
            path,
            error,
            Decision::Allowed,
            crate::audit::LEARNED,
        ))
    }

    /// The record of `operation` on `path`, answered with `error` (empty
    /// when it succeeded).
    fn record(
        &self,
        operation: &str,
        path: &str,
        error: &str,
        decision: Decision,
        reason: &str,
    ) -> AuditEntry {
        let path = crate::text::recorded(crate::text::truncate(path, MAX_RECORDED_PATH_BYTES));
        let mut entry = AuditEntry::new(
            &self.identity,
            self.task_id.as_deref(),
            path,
            Detail::Filesystem(FilesystemDetail {
                operation: operation.to_owned(),
                error: error.to_owned(),
            }),
        );
        entry.decision = decision;
        entry.reason = Some(reason.to_owned());
        entry
    }

    /// The record of `operation` on `path` failing with `code`, if that is
    /// a refusal this call may still record.
    fn entry(
        &mut self,
        operation: &str,
        path: &str,
        writes: bool,
        code: ErrorCode,
    ) -> Option<AuditEntry> {
        let (decision, reason) = refusal(code, writes && !self.writable, path)?;
        self.recorded += 1;
        if self.recorded > MAX_RECORDED_REFUSALS {
            if self.recorded == MAX_RECORDED_REFUSALS + 1 {
                tracing::warn!(module = %self.identity.module, "a call was refused more than {MAX_RECORDED_REFUSALS} file operations; the rest are not recorded");
            }
            return None;
        }
        Some(self.record(operation, path, code.name(), decision, reason))
    }
}

/// Whether an error code is the host refusing the operation (rather than
/// the file system answering it: not found, exists, not empty, …), and
/// what the refusal is. `at_quota`: the operation writes, and the data
/// directory is read-only because it is at its quota. `not-permitted` is
/// both the sandbox refusing an escape and the OS refusing the operation
/// (`EPERM`): only a path that climbs out as written is called one.
fn refusal(code: ErrorCode, at_quota: bool, path: &str) -> Option<(Decision, &'static str)> {
    match code {
        ErrorCode::NotPermitted | ErrorCode::ReadOnly if at_quota => Some((
            Decision::Limited,
            "the module's data directory is read-only while it is at its quota ([filesystem] max-mib)",
        )),
        ErrorCode::NotPermitted if climbs_out(path) => Some((
            Decision::Denied,
            "the path leads outside the module's data directory",
        )),
        ErrorCode::NotPermitted => Some((
            Decision::Denied,
            "not permitted: a symbolic link on the path leads outside the module's data directory, or the operating system forbids the operation",
        )),
        ErrorCode::ReadOnly => Some((Decision::Denied, "the file system is read-only")),
        ErrorCode::Access => Some((Decision::Denied, "the host's file permissions forbid it")),
        _ => None,
    }
}

/// Whether `path`, as written, leaves the directory it is resolved in: it
/// is absolute, or its `..` climb above where it starts.
fn climbs_out(path: &str) -> bool {
    if path.starts_with('/') {
        return true;
    }
    let mut depth = 0usize;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

/// What `wasi:filesystem/types` sees: wasmtime-wasi's view of the call's
/// files, and where its refusals go.
pub struct FilesystemView<'a> {
    pub inner: WasiFilesystemCtxView<'a>,
    pub refusals: &'a mut FsRefusals,
}

impl FilesystemView<'_> {
    /// Records `result`'s refusal of `operation` on `path`, then hands it
    /// on.
    async fn noted<T>(
        &mut self,
        operation: &str,
        path: &str,
        writes: bool,
        result: FsResult<T>,
    ) -> FsResult<T> {
        if self.refusals.learns_data
            && let Some(audit) = self.refusals.audit.clone()
        {
            let code = result
                .as_ref()
                .err()
                .and_then(|e| e.downcast_ref().copied());
            // A refused operation is recorded as such, not as a use.
            let refused = code.is_some_and(|c| refusal(c, false, path).is_some());
            if !refused && let Some(entry) = self.refusals.learned(operation, path, code) {
                tracing::info!(module = %entry.module, operation, "data directory used while learning: not granted by the manifest");
                audit.record_or_log(entry).await;
            }
        }
        if let Err(e) = &result
            && let Some(audit) = self.refusals.audit.clone()
            && let Some(code) = e.downcast_ref().copied()
            && let Some(entry) = self.refusals.entry(operation, path, writes, code)
        {
            tracing::info!(module = %entry.module, operation, path = %entry.subject, "file operation refused");
            audit.record_or_log(entry).await;
        }
        result
    }
}

impl types::Host for FilesystemView<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.inner, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        types::Host::filesystem_error_code(&mut self.inner, err)
    }
}

/// The file behind a descriptor a stream may write, with wasmtime-wasi's
/// checks: not a directory, not under a read-only preopen.
fn writable(descriptor: &Descriptor) -> FsResult<&wasmtime_wasi::filesystem::File> {
    let file = match descriptor {
        Descriptor::File(f) => f,
        Descriptor::Dir(_) => return Err(ErrorCode::BadDescriptor.into()),
    };
    if file.perms.write_not_permitted() {
        return Err(ErrorCode::NotPermitted.into());
    }
    Ok(file)
}

impl HostDescriptor for FilesystemView<'_> {
    async fn advise(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        self.inner.advise(fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.inner.sync_data(fd).await
    }

    async fn get_flags(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::DescriptorFlags> {
        self.inner.get_flags(fd).await
    }

    async fn get_type(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::DescriptorType> {
        self.inner.get_type(fd).await
    }

    async fn set_size(
        &mut self,
        fd: Resource<types::Descriptor>,
        size: types::Filesize,
    ) -> FsResult<()> {
        self.inner.set_size(fd, size).await
    }

    async fn set_times(
        &mut self,
        fd: Resource<types::Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.inner.set_times(fd, atim, mtim).await
    }

    async fn read(
        &mut self,
        fd: Resource<types::Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        self.inner.read(fd, len, offset).await
    }

    async fn write(
        &mut self,
        fd: Resource<types::Descriptor>,
        buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        self.inner.write(fd, buf, offset).await
    }

    async fn read_directory(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        self.inner.read_directory(fd).await
    }

    async fn sync(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.inner.sync(fd).await
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let result = self.inner.create_directory_at(fd, path.clone()).await;
        self.noted("create-directory-at", &path, true, result).await
    }

    async fn stat(&mut self, fd: Resource<types::Descriptor>) -> FsResult<types::DescriptorStat> {
        self.inner.stat(fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        let result = self.inner.stat_at(fd, path_flags, path.clone()).await;
        self.noted("stat-at", &path, false, result).await
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        let result = self
            .inner
            .set_times_at(fd, path_flags, path.clone(), atim, mtim)
            .await;
        self.noted("set-times-at", &path, true, result).await
    }

    async fn link_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_descriptor: Resource<types::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let result = self
            .inner
            .link_at(
                fd,
                old_path_flags,
                old_path.clone(),
                new_descriptor,
                new_path.clone(),
            )
            .await;
        self.noted(
            "link-at",
            &format!("{old_path} -> {new_path}"),
            true,
            result,
        )
        .await
    }

    async fn open_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        oflags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Resource<types::Descriptor>> {
        let writes = flags.contains(types::DescriptorFlags::WRITE)
            || oflags.intersects(types::OpenFlags::CREATE | types::OpenFlags::TRUNCATE);
        let result = self
            .inner
            .open_at(fd, path_flags, path.clone(), oflags, flags)
            .await;
        self.noted("open-at", &path, writes, result).await
    }

    fn drop(&mut self, fd: Resource<types::Descriptor>) -> wasmtime::Result<()> {
        HostDescriptor::drop(&mut self.inner, fd)
    }

    async fn readlink_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<String> {
        let result = self.inner.readlink_at(fd, path.clone()).await;
        self.noted("readlink-at", &path, false, result).await
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let result = self.inner.remove_directory_at(fd, path.clone()).await;
        self.noted("remove-directory-at", &path, true, result).await
    }

    async fn rename_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        old_path: String,
        new_fd: Resource<types::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let result = self
            .inner
            .rename_at(fd, old_path.clone(), new_fd, new_path.clone())
            .await;
        self.noted(
            "rename-at",
            &format!("{old_path} -> {new_path}"),
            true,
            result,
        )
        .await
    }

    async fn symlink_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        let result = self
            .inner
            .symlink_at(fd, src_path.clone(), dest_path.clone())
            .await;
        self.noted(
            "symlink-at",
            &format!("{dest_path} -> {src_path}"),
            true,
            result,
        )
        .await
    }

    async fn unlink_file_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let result = self.inner.unlink_file_at(fd, path.clone()).await;
        self.noted("unlink-file-at", &path, true, result).await
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        self.inner.read_via_stream(fd, offset)
    }

    /// The guest's writes go to the file on its own thread
    /// ([`writes::FileWriter`]); the checks are wasmtime-wasi's.
    fn write_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        let file = writable(self.inner.table.get(&fd)?)?;
        let writer: DynOutputStream = Box::new(writes::FileWriter::at(file.file.clone(), offset));
        Ok(self.inner.table.push(writer)?)
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let file = writable(self.inner.table.get(&fd)?)?;
        let writer: DynOutputStream = Box::new(writes::FileWriter::appending(file.file.clone()));
        Ok(self.inner.table.push(writer)?)
    }

    async fn is_same_object(
        &mut self,
        a: Resource<types::Descriptor>,
        b: Resource<types::Descriptor>,
    ) -> wasmtime::Result<bool> {
        self.inner.is_same_object(a, b).await
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        self.inner.metadata_hash(fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        let result = self
            .inner
            .metadata_hash_at(fd, path_flags, path.clone())
            .await;
        self.noted("metadata-hash-at", &path, false, result).await
    }
}

impl HostDirectoryEntryStream for FilesystemView<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        self.inner.read_directory_entry(stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.inner, stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_out_of_the_data_directory_is_a_denial_and_a_missing_file_is_none() {
        assert_eq!(
            refusal(ErrorCode::NotPermitted, false, "../x"),
            Some((
                Decision::Denied,
                "the path leads outside the module's data directory"
            ))
        );
        assert_eq!(refusal(ErrorCode::NoEntry, false, "x"), None);
        assert_eq!(refusal(ErrorCode::Exist, true, "x"), None);
    }

    #[test]
    fn only_a_path_that_climbs_out_as_written_is_called_an_escape() {
        for out in ["/etc/passwd", "..", "a/../../b", "./../b"] {
            assert!(climbs_out(out), "{out}");
        }
        for inside in ["a", "a/../b", "a/b/../../c", "./a", ""] {
            assert!(!climbs_out(inside), "{inside}");
        }
        let (_, reason) = refusal(ErrorCode::NotPermitted, false, "link/file").unwrap();
        assert!(
            reason.contains("or the operating system forbids"),
            "{reason}"
        );
    }

    #[test]
    fn a_write_refused_at_the_quota_is_a_limit() {
        let (decision, reason) = refusal(ErrorCode::NotPermitted, true, "x").unwrap();
        assert_eq!(decision, Decision::Limited);
        assert!(reason.contains("max-mib"), "{reason}");
    }
}
