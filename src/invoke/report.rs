//! How an invocation ended and what is said about it: the `Outcome` with the one table that
//! maps it to a problem response, the `Timing` and `Report` of every invocation, and the
//! REPORT line it becomes in the journal (in the spirit of Lambda's REPORT line). Metrics
//! read the same `Report`.

use std::borrow::Cow;
use std::time::Duration;

use http::StatusCode;

use crate::sandbox::{ExitStatus, Usage};

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler answered and exited 0.
    Ok,
    /// Killed at the deadline.
    Timeout,
    /// The kernel's OOM killer ended it at memory.max.
    OutOfMemory,
    /// It tried a refused syscall (named).
    SyscallDenied(String),
    /// It exited non-zero or by a signal (how).
    Crashed(String),
    /// Its stdout was not a CGI response (why).
    BadResponse(String),
    /// It wrote more than limits.output.
    OutputTooLarge,
    /// The client went away first.
    ClientGone,
    /// The sandbox could not be set up (why, without host paths).
    SetupFailed(String),
}

/// What a caller is told when an outcome ends a request before its response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    /// The problem type (`urn:faas:problem:SLUG`); also FAAS_OUTCOME and the metrics label.
    pub slug: &'static str,
    pub title: &'static str,
    /// One sentence: what happened, never a host path or errno.
    pub detail: Cow<'static, str>,
}

impl Outcome {
    /// The problem response for this outcome: the one table of status, slug, title and detail.
    pub fn problem(&self) -> Problem {
        use StatusCode as S;
        let (status, slug, title, detail): (S, &'static str, &'static str, Cow<'static, str>) = match self {
            Outcome::Ok => (S::OK, "ok", "ok", "ok".into()),
            Outcome::Timeout => (
                S::GATEWAY_TIMEOUT,
                "timeout",
                "function timed out",
                "the function ran past its timeout and was stopped".into(),
            ),
            Outcome::OutOfMemory => (
                S::BAD_GATEWAY,
                "out-of-memory",
                "function ran out of memory",
                "the function exceeded its memory limit and was stopped".into(),
            ),
            Outcome::SyscallDenied(s) => (
                S::BAD_GATEWAY,
                "syscall-denied",
                "function made a forbidden system call",
                format!("the function made a forbidden system call ({s}) and was stopped").into(),
            ),
            Outcome::Crashed(how) => (
                S::BAD_GATEWAY,
                "crashed",
                "function crashed",
                format!("the function {how} before sending a response").into(),
            ),
            Outcome::BadResponse(why) => (
                S::BAD_GATEWAY,
                "bad-response",
                "function sent an invalid response",
                format!("the function's response was not valid CGI: {why}").into(),
            ),
            Outcome::OutputTooLarge => (
                S::BAD_GATEWAY,
                "output-too-large",
                "function output too large",
                "the function's response exceeded its output limit".into(),
            ),
            // nginx's "client closed request": there is no one left to send it to.
            Outcome::ClientGone => (
                S::from_u16(499).expect("499 is a valid code"),
                "client-gone",
                "client went away",
                "the client went away".into(),
            ),
            Outcome::SetupFailed(why) => (
                S::SERVICE_UNAVAILABLE,
                "sandbox-unavailable",
                "sandbox unavailable",
                format!("the sandbox could not be set up: {why}").into(),
            ),
        };
        Problem { status, slug, title, detail }
    }

    /// The problem type slug and the FAAS_OUTCOME value.
    pub fn slug(&self) -> &'static str {
        self.problem().slug
    }

    /// The status a caller gets when this happens before the response head.
    pub fn status(&self) -> StatusCode {
        self.problem().status
    }
}

/// What started an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// An HTTP request.
    Http,
    /// A `[[schedule]]` entry of the function file.
    Schedule,
    /// `faas invoke` from a shell.
    Invoke,
}

impl Trigger {
    /// The word in the REPORT line and FAAS_TRIGGER.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Http => "http",
            Trigger::Schedule => "schedule",
            Trigger::Invoke => "invoke",
        }
    }
}

/// How a request's sandbox process was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Start {
    /// Cloned by the daemon and exec'd: the interpreter starts from nothing.
    #[default]
    Cold,
    /// Forked from the function version's zygote (warm.rs), its interpreter already started.
    Warm,
}

impl Start {
    pub fn as_str(self) -> &'static str {
        match self {
            Start::Cold => "cold",
            Start::Warm => "warm",
        }
    }
}

/// Set-up and handler times, for Server-Timing and the report.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    /// Warm or cold.
    pub start: Start,
    /// From the request reaching us to the wrapper's exec.
    pub setup: Duration,
    /// From exec to the response head.
    pub first_byte: Duration,
}

/// What the report of every invocation carries; also fed to metrics.
#[derive(Debug, Clone)]
pub struct Report {
    pub function: String,
    pub id: String,
    pub outcome: Outcome,
    /// The status sent (or that would have been).
    pub status: u16,
    pub trigger: Trigger,
    /// The client's address as REMOTE_ADDR had it (behind a trusted proxy, the proxied one).
    pub client: String,
    /// From the request reaching us to the sandbox gone.
    pub duration: Duration,
    pub timing: Timing,
    /// cgroup counters (None without cgroups).
    pub usage: Option<Usage>,
    /// Exit status of the sandbox's init.
    pub exit: Option<ExitStatus>,
    /// Body bytes sent.
    pub bytes_out: u64,
    /// The layers, as `ns=enforced …`.
    pub layers: String,
    /// The caller's key or signing scheme name, when the function checks (`[auth]`).
    pub caller: Option<String>,
    /// Every connection through the egress proxy.
    pub egress: Vec<crate::egress::Connection>,
    /// The deployed version (sha256 hex) it ran, for a deployed function.
    pub version: Option<String>,
}

impl Report {
    /// Logs the REPORT entry: one line in words, and the same as `FAAS_*` journal fields.
    pub fn log(&self) {
        let r = self;
        let duration_ms = r.duration.as_secs_f64() * 1e3;
        let setup_us = r.timing.setup.as_micros() as u64;
        let (cpu, peak) = match &r.usage {
            Some(u) => (u.cpu_usec.to_string(), u.memory_peak.map_or("unknown".into(), |p| p.to_string())),
            None => ("none".into(), "none".into()),
        };
        let cgroup = match &r.usage {
            Some(u) => format!(
                " pids_peak={} pids_max_hits={} oom_kills={} throttled={}",
                u.pids_peak.map_or("unknown".into(), |p| p.to_string()),
                u.pids_max_hits,
                u.oom_kills,
                u.throttled
            ),
            None => " cgroup=none".into(),
        };
        let detail = match &r.outcome {
            Outcome::SyscallDenied(s) => format!(" syscall={s}"),
            Outcome::Crashed(how) | Outcome::BadResponse(how) | Outcome::SetupFailed(how) => {
                format!(" reason=\"{how}\"")
            }
            _ => String::new(),
        };
        let version = r.version.as_deref().map_or("", |v| &v[..v.len().min(12)]);
        let caller = r.caller.as_ref().map_or(String::new(), |c| format!(" caller={c}"));
        let egress = crate::egress::summary(&r.egress);
        let egress_field = if r.egress.is_empty() { String::new() } else { format!(" egress=\"{egress}\"") };
        let message = format!(
            "REPORT {} {} outcome={} status={} trigger={} client={} duration={duration_ms:.2}ms setup={setup_us}us start={} cpu_us={cpu} memory_peak={peak} bytes_out={}{cgroup}{detail}{caller}{egress_field} layers=\"{}\"{}",
            r.function,
            r.id,
            r.outcome.slug(),
            r.status,
            r.trigger.as_str(),
            r.client,
            r.timing.start.as_str(),
            r.bytes_out,
            r.layers,
            if version.is_empty() { String::new() } else { format!(" version={version}") }
        );
        let level_warn = !matches!(r.outcome, Outcome::Ok);
        macro_rules! emit {
            ($lvl:ident) => {
                tracing::$lvl!(
                    FAAS_FUNCTION = %r.function,
                    FAAS_INVOCATION_ID = %r.id,
                    FAAS_OUTCOME = r.outcome.slug(),
                    FAAS_STATUS = r.status,
                    FAAS_TRIGGER = r.trigger.as_str(),
                    FAAS_CLIENT = %r.client,
                    FAAS_DURATION_MS = format_args!("{duration_ms:.3}"),
                    FAAS_SETUP_US = setup_us,
                    FAAS_START = r.timing.start.as_str(),
                    FAAS_CPU_USEC = %cpu,
                    FAAS_MEMORY_PEAK = %peak,
                    FAAS_LAYERS = %r.layers,
                    FAAS_PIDS_MAX_HITS = r.usage.as_ref().map_or(0, |u| u.pids_max_hits),
                    FAAS_CALLER = r.caller.as_deref().unwrap_or(""),
                    FAAS_EGRESS = %egress,
                    FAAS_VERSION = version,
                    "{message}"
                )
            };
        }
        if level_warn {
            emit!(warn);
        } else {
            emit!(info);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_one_problem() {
        let all = [
            Outcome::Ok,
            Outcome::Timeout,
            Outcome::OutOfMemory,
            Outcome::SyscallDenied("ptrace".into()),
            Outcome::Crashed("exited with status 3".into()),
            Outcome::BadResponse("no Status".into()),
            Outcome::OutputTooLarge,
            Outcome::ClientGone,
            Outcome::SetupFailed("no uid".into()),
        ];
        let slugs: std::collections::BTreeSet<_> = all.iter().map(Outcome::slug).collect();
        assert_eq!(slugs.len(), all.len(), "slugs are distinct");
        let p = Outcome::SyscallDenied("ptrace".into()).problem();
        assert_eq!(
            (p.status, p.slug, p.title),
            (StatusCode::BAD_GATEWAY, "syscall-denied", "function made a forbidden system call")
        );
        assert_eq!(p.detail, "the function made a forbidden system call (ptrace) and was stopped");
        assert_eq!(Outcome::Timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(Outcome::SetupFailed("x".into()).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(Outcome::ClientGone.status().as_u16(), 499);
    }
}
