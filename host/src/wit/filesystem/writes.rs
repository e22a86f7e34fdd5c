//! The output stream a guest writes a file of its data directory through
//! (`descriptor.write-via-stream` and `append-via-stream`, which wasi-libc,
//! and so Rust's and Python's standard libraries, use for every `write` to
//! a file).
//!
//! wasmtime-wasi's own file stream hands each write to the blocking pool
//! and the flush that follows waits for it: two thread hand-offs for every
//! 64 KiB, which held a guest's download into its data directory to about
//! half the rate of the same bytes written by the host. Here a write goes
//! to the file at once, on the thread that runs the guest, as the guest's
//! own computation does: one write of at most [`CAPACITY`] bytes to the
//! page cache, at the stream's position or at the file's end. What may take long on a disk — `sync`,
//! `sync-data`, opening, listing — stays on the blocking pool.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// The most bytes one write may carry: what wasmtime-wasi's stream allows,
/// so a guest's writes are split as they were.
pub const CAPACITY: usize = 64 * 1024;

/// A file written write by write, from a position on or at its end.
pub struct FileWriter {
    file: Arc<std::fs::File>,
    /// Where the next write goes; `None`: at the end, whatever else
    /// wrote to the file meanwhile.
    position: Option<u64>,
    closed: bool,
}

impl FileWriter {
    pub fn at(file: Arc<std::fs::File>, position: u64) -> Self {
        FileWriter {
            file,
            position: Some(position),
            closed: false,
        }
    }

    pub fn appending(file: Arc<std::fs::File>) -> Self {
        FileWriter {
            file,
            position: None,
            closed: false,
        }
    }

    /// Writes all of `bytes`; a failure closes the stream, and the guest
    /// reads its error code from the error.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let written = match self.position {
                Some(at) => self.file.write_at(rest, at),
                None => append(&self.file, rest),
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    rest = &rest[n..];
                    if let Some(at) = &mut self.position {
                        *at += n as u64;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `Closed` once a write failed.
    fn open(&self) -> StreamResult<()> {
        if self.closed {
            return Err(StreamError::Closed);
        }
        Ok(())
    }
}

/// One write at the file's end (`pwritev2` with `RWF_APPEND`, Linux 4.16),
/// leaving the description's own flags alone.
fn append(file: &std::fs::File, data: &[u8]) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: one iovec over `data`, which outlives the call; the offset
    // is ignored with RWF_APPEND.
    let n = unsafe { libc::pwritev2(file.as_raw_fd(), &iov, 1, -1, libc::RWF_APPEND) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[wasmtime_wasi::async_trait]
impl OutputStream for FileWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.open()?;
        if bytes.len() > CAPACITY {
            return Err(StreamError::trap(
                "write not permitted: more than check-write allowed",
            ));
        }
        self.write_all(&bytes).map_err(|e| {
            self.closed = true;
            StreamError::LastOperationFailed(e.into())
        })
    }

    /// Nothing is held back: every write reached the file.
    fn flush(&mut self) -> StreamResult<()> {
        self.open()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.open()?;
        Ok(CAPACITY)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for FileWriter {
    /// Always ready: no write is ever pending.
    async fn ready(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &tempfile::TempDir, position: u64) -> (FileWriter, std::path::PathBuf) {
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        (FileWriter::at(Arc::new(file), position), path)
    }

    #[test]
    fn writes_land_one_after_another_from_the_position_asked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"0123456789").unwrap();
        let (mut w, path) = writer(&dir, 4);
        w.write(Bytes::from_static(b"ab")).unwrap();
        w.write(Bytes::from_static(b"cdefgh")).unwrap();
        w.flush().unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"0123abcdefgh");
    }

    #[test]
    fn appended_writes_land_at_the_end_even_after_the_file_grew_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, path) = writer(&dir, 0);
        let mut a = FileWriter::appending(w.file.clone());
        a.write(Bytes::from_static(b"one ")).unwrap();
        w.write(Bytes::from_static(b"ONE OF")).unwrap();
        a.write(Bytes::from_static(b"two")).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"ONE OFtwo");
    }

    #[test]
    fn a_write_larger_than_the_permit_is_a_trap_not_a_partial_write() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, path) = writer(&dir, 0);
        assert_eq!(w.check_write().unwrap(), CAPACITY);
        let err = w.write(Bytes::from(vec![1u8; CAPACITY + 1])).unwrap_err();
        assert!(matches!(err, StreamError::Trap(_)), "{err:?}");
        assert_eq!(std::fs::read(path).unwrap().len(), 0);
    }

    #[test]
    fn a_failed_write_reports_its_os_error_once_and_closes_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro");
        std::fs::write(&path, b"x").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let mut w = FileWriter::at(Arc::new(file), 0);
        match w.write(Bytes::from_static(b"y")).unwrap_err() {
            StreamError::LastOperationFailed(e) => {
                assert!(e.downcast_ref::<io::Error>().is_some(), "{e:?}");
            }
            other => panic!("expected the OS error, got {other:?}"),
        }
        assert!(matches!(w.check_write(), Err(StreamError::Closed)));
        assert!(matches!(w.flush(), Err(StreamError::Closed)));
    }
}
