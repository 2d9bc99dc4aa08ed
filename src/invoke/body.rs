//! The body of a response under way: chunks as the function writes them, and an error at
//! the end when the invocation failed after its head went out, so the client sees the body
//! cut short instead of a clean last chunk.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

/// The body of a response under way, chunk by chunk as the function writes it.
pub struct BodyStream {
    rx: mpsc::Receiver<Bytes>,
    cut: Arc<AtomicBool>,
    ended: bool,
    flushes: Option<Arc<Flushes>>,
    /// Once cut: the flush count when the cut was seen, and the longest we wait for one more.
    cut_wait: Option<(u64, std::pin::Pin<Box<tokio::time::Sleep>>)>,
}

/// The longest a cut-short body waits for the connection to flush before it reports its
/// error: a client that stops reading must not hold the connection for ever.
const CUT_FLUSH_LIMIT: Duration = Duration::from_secs(10);
/// Without a flush signal (a connection we did not wrap), a short wait is all we can do.
const CUT_FLUSH_GUESS: Duration = Duration::from_millis(250);

/// Counts the completed flushes of one connection's writes (see `http::Conn`). hyper
/// drops what it still buffers when a body ends with an error, so a cut-short body waits,
/// pending, until a flush completes after its last chunk: hyper flushes while the body is
/// pending, and a completed flush means everything before it reached the socket.
#[derive(Debug, Default)]
pub struct Flushes {
    done: AtomicU64,
    waiter: Mutex<Option<Waker>>,
}

impl Flushes {
    /// Called by the connection after each flush that completed.
    pub fn flushed(&self) {
        self.done.fetch_add(1, Ordering::AcqRel);
        if let Some(w) = self.waiter.lock().expect("flush waiter lock is never poisoned").take() {
            w.wake();
        }
    }

    fn count(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }

    /// Whether a flush completed since `since`; if not, `cx` is woken by the next one.
    fn since(&self, since: u64, cx: &Context<'_>) -> bool {
        *self.waiter.lock().expect("flush waiter lock is never poisoned") = Some(cx.waker().clone());
        self.count() > since
    }
}

impl BodyStream {
    /// A stream of what `rx` receives; `cut`, set before the sender goes, marks it incomplete.
    pub(super) fn new(rx: mpsc::Receiver<Bytes>, cut: Arc<AtomicBool>) -> Self {
        BodyStream { rx, cut, ended: false, flushes: None, cut_wait: None }
    }

    /// Lets a cut-short end wait for the connection's writes to drain (see `Flushes`).
    pub fn watch_flushes(&mut self, flushes: Arc<Flushes>) {
        self.flushes = Some(flushes);
    }

    /// The next chunk; `Err` once at the end if the invocation failed after the head went
    /// out (the body is incomplete), then `None`.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if let Some((since, limit)) = &mut self.cut_wait {
            let drained = self.flushes.as_ref().is_some_and(|f| f.since(*since, cx));
            if !drained && limit.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.cut_wait = None;
            self.ended = true;
            return Poll::Ready(Some(Err(io::Error::other(
                "the function failed mid-response; the body is incomplete",
            ))));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(None) if self.cut.load(Ordering::Acquire) => {
                let since = self.flushes.as_ref().map_or(0, |f| f.count());
                let limit = if self.flushes.is_some() { CUT_FLUSH_LIMIT } else { CUT_FLUSH_GUESS };
                self.cut_wait = Some((since, Box::pin(tokio::time::sleep(limit))));
                self.poll_chunk(cx)
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            other => other.map(|o| o.map(Ok)),
        }
    }

    /// The next chunk, awaited.
    pub async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }
}
