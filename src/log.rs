//! Logging. Under systemd the front end's own events go to journald as structured entries
//! (tracing-journald, field names as given: `FAAS_FUNCTION`, `FAAS_INVOCATION_ID`, …), and
//! each line a function writes to stderr becomes its own entry with the function's name as
//! `SYSLOG_IDENTIFIER`, so `journalctl -t hello` shows one function's log. Without journald
//! every line goes to stderr with an `<N>` priority prefix (sd-daemon(3)), which journald
//! also understands when stderr is a stream to it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

static JOURNAL: OnceLock<Option<UnixDatagram>> = OnceLock::new();

/// Whether stderr is connected to journald (systemd sets JOURNAL_STREAM to its dev:inode).
fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = stream.split_once(':') else { return false };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else { return false };
    use std::os::unix::fs::MetadataExt;
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Sets up the subscriber: journald when we run under it, `<N>`-prefixed stderr otherwise.
/// `verbose` also shows debug events.
pub fn init(verbose: bool) {
    let level = if verbose { Level::DEBUG } else { Level::INFO };
    let journald = if stderr_is_journal() { tracing_journald::layer().ok() } else { None };
    let _ = JOURNAL.set(if journald.is_some() { UnixDatagram::unbound().ok() } else { None });
    let filter = tracing_subscriber::filter::LevelFilter::from_level(level);
    match journald {
        Some(j) => {
            let j = j.with_field_prefix(None).with_syslog_identifier("faas".into());
            let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(j.with_filter(filter)));
        }
        None => {
            let _ = tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(StderrLayer.with_filter(filter)),
            );
        }
    }
}

/// Writes events to stderr as `<N>message key=value …`, one line each.
struct StderrLayer;

struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else if !field.name().starts_with("FAAS_") {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else if !field.name().starts_with("FAAS_") {
            // The REPORT message already says all of these in words.
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
}

fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

impl<S: Subscriber> Layer<S> for StderrLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields { message: String::new(), rest: String::new() };
        event.record(&mut f);
        let p = priority(event.metadata().level());
        // Multi-line messages (error chains with hints) keep their priority on every line.
        let mut out = String::new();
        for (i, line) in f.message.lines().enumerate() {
            let _ = write!(out, "<{p}>{line}");
            if i == 0 {
                out.push_str(&f.rest);
            }
            out.push('\n');
        }
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
    }
}

/// Appends one field in journald's native protocol (systemd.journal-fields(7)): `KEY=value\n`,
/// or `KEY\n` + little-endian u64 length + value + `\n` when the value holds a newline.
fn journal_field(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    buf.extend_from_slice(key.as_bytes());
    if value.contains(&b'\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// Logs one line of a function's stderr under the function's own name.
pub fn function_line(function: &str, id: &str, line: &[u8]) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let Some(Some(sock)) = JOURNAL.get() {
        let mut buf = Vec::with_capacity(line.len() + 128);
        journal_field(&mut buf, "MESSAGE", line);
        journal_field(&mut buf, "PRIORITY", b"6");
        journal_field(&mut buf, "SYSLOG_IDENTIFIER", function.as_bytes());
        journal_field(&mut buf, "FAAS_FUNCTION", function.as_bytes());
        journal_field(&mut buf, "FAAS_INVOCATION_ID", id.as_bytes());
        if sock.send_to(&buf, JOURNAL_SOCKET).is_ok() {
            return;
        }
    }
    let mut out = Vec::with_capacity(line.len() + 64);
    let _ = write!(out, "<6>{function}[{id}]: ");
    out.extend_from_slice(line);
    out.push(b'\n');
    let _ = std::io::stderr().lock().write_all(&out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_fields_binary_safe() {
        let mut buf = Vec::new();
        journal_field(&mut buf, "MESSAGE", b"one line");
        assert_eq!(buf, b"MESSAGE=one line\n");
        buf.clear();
        journal_field(&mut buf, "MESSAGE", b"a\nb");
        let mut want = b"MESSAGE\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\n");
        assert_eq!(buf, want);
    }
}
