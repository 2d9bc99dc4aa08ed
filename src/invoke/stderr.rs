//! A function's stderr, line by line to the journal under its own name, capped per
//! invocation; a line longer than `MAX_LOG_LINE` is split so it never stalls the pipe.

use bytes::BytesMut;

/// A line of function stderr longer than this is split: it never stalls the pipe.
pub(super) const MAX_LOG_LINE: usize = 64 << 10;

/// Function stderr, line by line to the log, capped per invocation.
pub(super) struct StderrLog<'a> {
    function: &'a str,
    id: &'a str,
    /// What was read and not yet logged.
    pub(super) buf: BytesMut,
    logged: u64,
    cap: u64,
    truncated: bool,
}

impl<'a> StderrLog<'a> {
    /// A log for one invocation, keeping at most `cap` bytes.
    pub(super) fn new(function: &'a str, id: &'a str, cap: u64) -> Self {
        StderrLog { function, id, buf: BytesMut::with_capacity(4 << 10), logged: 0, cap, truncated: false }
    }

    fn emit(&mut self, line: &[u8]) {
        if self.logged >= self.cap {
            if !self.truncated {
                self.truncated = true;
                crate::log::function_line(
                    self.function,
                    self.id,
                    b"[faas: log output truncated at the per-invocation cap]",
                );
            }
            return;
        }
        self.logged += line.len() as u64;
        crate::log::function_line(self.function, self.id, line);
    }

    /// Logs every complete line in `buf`, and any 64 KiB without a newline.
    pub(super) fn feed(&mut self) {
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line = self.buf.split_to(nl + 1);
            self.emit(&line[..nl]);
        }
        while self.buf.len() >= MAX_LOG_LINE {
            let chunk = self.buf.split_to(MAX_LOG_LINE);
            self.emit(&chunk);
        }
    }

    /// Logs what is left at EOF.
    pub(super) fn finish(&mut self) {
        if !self.buf.is_empty() {
            let rest = self.buf.split();
            self.emit(&rest);
        }
    }
}
