//! The body of a response under way: chunks as the function writes them, and an error at
//! the end when the invocation failed after its head went out, so the client sees the body
//! cut short instead of a clean last chunk.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

/// The body of a response under way, chunk by chunk as the function writes it.
pub struct BodyStream {
    rx: mpsc::Receiver<Bytes>,
    cut: Arc<AtomicBool>,
    ended: bool,
    flush_wait: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

/// How long a cut-short body waits before reporting its error. hyper closes the connection
/// on a body error without writing out what it still buffers; while the body is pending, its
/// write loop flushes. Only failed responses pay this.
const CUT_FLUSH_WAIT: Duration = Duration::from_millis(250);

impl BodyStream {
    /// A stream of what `rx` receives; `cut`, set before the sender goes, marks it incomplete.
    pub(super) fn new(rx: mpsc::Receiver<Bytes>, cut: Arc<AtomicBool>) -> Self {
        BodyStream { rx, cut, ended: false, flush_wait: None }
    }

    /// The next chunk; `Err` once at the end if the invocation failed after the head went
    /// out (the body is incomplete), then `None`.
    pub fn poll_chunk(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<io::Result<Bytes>>> {
        if let Some(wait) = &mut self.flush_wait {
            std::task::ready!(wait.as_mut().poll(cx));
            self.flush_wait = None;
            self.ended = true;
            return std::task::Poll::Ready(Some(Err(io::Error::other("the function failed mid-response; the body is incomplete"))));
        }
        if self.ended {
            return std::task::Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            std::task::Poll::Ready(None) if self.cut.load(Ordering::Acquire) => {
                self.flush_wait = Some(Box::pin(tokio::time::sleep(CUT_FLUSH_WAIT)));
                self.poll_chunk(cx)
            }
            std::task::Poll::Ready(None) => {
                self.ended = true;
                std::task::Poll::Ready(None)
            }
            other => other.map(|o| o.map(Ok)),
        }
    }

    /// The next chunk, awaited.
    pub async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }
}

