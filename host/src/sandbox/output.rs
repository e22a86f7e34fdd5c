//! What a guest writes to its stdout and stderr: kept, as the last few KiB
//! of each call, so a panic message or a traceback reaches the host's log
//! and the error of a call that trapped instead of being dropped.
//!
//! The guest's writes always succeed at once and never block it: beyond
//! [`TAIL_BYTES`] the oldest bytes give way.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use crate::text::terminal_safe;

/// How much of a call's output is kept: its last bytes.
pub const TAIL_BYTES: usize = 4096;

/// How much of that tail the error of a trapped call quotes, as shown
/// (escapes included): task summaries show the first 1,024 bytes of a
/// failure, so the quote stays short enough to fit after the trap's own
/// message.
pub const QUOTED_TAIL_BYTES: usize = 640;

/// The output of one call, stdout and stderr interleaved as written.
#[derive(Clone, Default)]
pub struct GuestOutput(Arc<Mutex<Tail>>);

#[derive(Default)]
struct Tail {
    bytes: std::collections::VecDeque<u8>,
    /// Bytes that gave way to newer ones.
    dropped: u64,
}

impl GuestOutput {
    fn push(&self, data: &[u8]) {
        let mut tail = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let keep = data.len().min(TAIL_BYTES);
        let skipped = data.len() - keep;
        let overflow = (tail.bytes.len() + keep).saturating_sub(TAIL_BYTES);
        tail.bytes.drain(..overflow);
        tail.bytes.extend(&data[skipped..]);
        tail.dropped += (skipped + overflow) as u64;
    }

    /// The end of what was written as text safe to log and show, at most
    /// `max` bytes of it once shown: invalid UTF-8 replaced, control
    /// characters other than newlines escaped, a leading `…` when older
    /// output gave way. `None` when the guest wrote nothing.
    pub fn tail(&self, max: usize) -> Option<String> {
        let tail = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if tail.bytes.is_empty() {
            return None;
        }
        let bytes: Vec<u8> = tail.bytes.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        let shown = terminal_safe(text.trim_end_matches('\n'));
        let mut start = shown.len().saturating_sub(max);
        while !shown.is_char_boundary(start) {
            start += 1;
        }
        let cut = tail.dropped > 0 || start > 0;
        Some(format!("{}{}", if cut { "…" } else { "" }, &shown[start..]))
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(TAIL_BYTES)
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_bytes_and_says_when_older_ones_gave_way() {
        let out = GuestOutput::default();
        assert_eq!(out.tail(TAIL_BYTES), None);
        out.push(b"first line\n");
        assert_eq!(out.tail(TAIL_BYTES).as_deref(), Some("first line"));
        out.push(&vec![b'x'; TAIL_BYTES]);
        out.push(b"\x1b[31mlast\n");
        let tail = out.tail(TAIL_BYTES).unwrap();
        assert!(tail.starts_with('…'), "{tail}");
        assert!(tail.ends_with("\\u{1b}[31mlast"), "{tail}");
        // The bound holds for the text as shown, escapes included.
        let quoted = out.tail(12).unwrap();
        assert_eq!(quoted, "…{1b}[31mlast");
        assert!(!tail.contains("first"));
        // The newline that ends the output is not shown.
        assert_eq!(out.tail(4).as_deref(), Some("…last"));
    }
}
