//! One request, start to finish: lease a uid, make the cgroup and pipes, build the
//! `ChildPlan`, spawn, feed stdin, parse the CGI head, stream the body, watch the deadline,
//! the client and the seccomp listener, then kill, reap, read the counters, clean up and
//! log the report.
//!
//! All of it runs in one spawned task per invocation, so a caller that goes away (a client
//! that disconnects) cannot leak a sandbox: the task notices the dropped receiver and kills.

mod body;
mod child;
mod stderr;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep_until;

pub use body::{BodyStream, Flushes};
use child::{start_child, wait_exec, Started0};
use stderr::StderrLog;

use crate::cgi::{self, Head, MAX_HEAD};
use crate::host::Host;
use crate::registry::Loaded;
use crate::sandbox::cgroup::Usage;
use crate::sandbox::spawn::{self, ExitStatus};
use crate::sandbox::{seccomp, SpawnError};

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

impl Outcome {
    /// The problem type slug and the FAAS_OUTCOME value.
    pub fn slug(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Timeout => "timeout",
            Outcome::OutOfMemory => "out-of-memory",
            Outcome::SyscallDenied(_) => "syscall-denied",
            Outcome::Crashed(_) => "crashed",
            Outcome::BadResponse(_) => "bad-response",
            Outcome::OutputTooLarge => "output-too-large",
            Outcome::ClientGone => "client-gone",
            Outcome::SetupFailed(_) => "sandbox-unavailable",
        }
    }

    /// The status a caller gets when this happens before the response head.
    pub fn status(&self) -> StatusCode {
        match self {
            Outcome::Ok => StatusCode::OK,
            Outcome::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Outcome::SetupFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
            Outcome::ClientGone => StatusCode::from_u16(499).expect("499 is a valid code"),
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// One sentence for the caller: what happened, never a host path or errno.
    pub fn detail(&self) -> String {
        match self {
            Outcome::Ok => "ok".into(),
            Outcome::Timeout => "the function ran past its timeout and was stopped".into(),
            Outcome::OutOfMemory => "the function exceeded its memory limit and was stopped".into(),
            Outcome::SyscallDenied(s) => format!("the function made a forbidden system call ({s}) and was stopped"),
            Outcome::Crashed(how) => format!("the function {how} before sending a response"),
            Outcome::BadResponse(why) => format!("the function's response was not valid CGI: {why}"),
            Outcome::OutputTooLarge => "the function's response exceeded its output limit".into(),
            Outcome::ClientGone => "the client went away".into(),
            Outcome::SetupFailed(why) => format!("the sandbox could not be set up: {why}"),
        }
    }
}

/// Set-up and handler times, for Server-Timing and the report.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    /// From the request reaching us to the wrapper's exec.
    pub setup: Duration,
    /// From exec to the response head.
    pub first_byte: Duration,
}

/// A response under way: its head and a stream of body chunks.
pub struct Started {
    /// Status and headers.
    pub head: Head,
    /// Body chunks.
    pub body: BodyStream,
    /// Timings so far.
    pub timing: Timing,
}

/// An invocation that ended before a response head.
#[derive(Debug)]
pub struct Failure {
    /// What happened.
    pub outcome: Outcome,
    /// Timings so far.
    pub timing: Timing,
}

/// One call of a function.
pub struct Call {
    /// The invocation id.
    pub id: String,
    /// Method.
    pub method: http::Method,
    /// What followed `/NAME` in the path.
    pub path_info: String,
    /// Raw query string.
    pub query: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// The client.
    pub remote_addr: String,
    /// Host name the client used.
    pub server_name: String,
    /// Our port.
    pub server_port: String,
    /// The whole request body (already limited).
    pub body: Bytes,
    /// When the request reached us.
    pub received: Instant,
    /// Concurrency permits, held until the sandbox is gone.
    pub permits: Vec<tokio::sync::OwnedSemaphorePermit>,
}

/// What the report of every invocation carries; also fed to metrics.
#[derive(Debug, Clone)]
pub struct Report {
    /// Function name.
    pub function: String,
    /// Invocation id.
    pub id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The status sent (or that would have been).
    pub status: u16,
    /// Whole duration.
    pub duration: Duration,
    /// Timings.
    pub timing: Timing,
    /// cgroup counters (None without cgroups).
    pub usage: Option<Usage>,
    /// Exit status of the sandbox's init.
    pub exit: Option<ExitStatus>,
    /// Body bytes sent.
    pub bytes_out: u64,
    /// The layers, as `ns=enforced …`.
    pub layers: String,
}

/// Hook for metrics; the HTTP layer installs one.
pub type ReportSink = Arc<dyn Fn(&Report) + Send + Sync>;

/// Runs `call` on `loaded`. Returns once the response head is known, or the failure.
pub async fn invoke(host: Arc<Host>, loaded: Arc<Loaded>, call: Call, sink: Option<ReportSink>) -> Result<Started, Failure> {
    let (head_tx, head_rx) = oneshot::channel();
    tokio::spawn(run(host, loaded, call, head_tx, sink));
    match head_rx.await {
        Ok(r) => r,
        Err(_) => Err(Failure { outcome: Outcome::SetupFailed("the invocation task ended unexpectedly".into()), timing: Timing::default() }),
    }
}

fn unix_ms(after: Duration) -> u128 {
    (SystemTime::now() + after).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

async fn run(host: Arc<Host>, loaded: Arc<Loaded>, mut call: Call, head_tx: oneshot::Sender<Result<Started, Failure>>, sink: Option<ReportSink>) {
    // Held until this task ends, so a slot frees only once the sandbox is gone.
    let _permits = std::mem::take(&mut call.permits);
    let f = &loaded.function;
    let timeout = f.limits.timeout.0;
    let deadline = tokio::time::Instant::from_std(call.received) + timeout;
    let mut report = Report {
        function: f.name.clone(),
        id: call.id.clone(),
        outcome: Outcome::Ok,
        status: 200,
        duration: Duration::ZERO,
        timing: Timing::default(),
        usage: None,
        exit: None,
        bytes_out: 0,
        layers: host.layers.summary.clone(),
    };
    let finish = |mut report: Report, head_tx: Option<oneshot::Sender<Result<Started, Failure>>>| {
        report.duration = call.received.elapsed();
        if let Some(tx) = head_tx {
            report.status = report.outcome.status().as_u16();
            let _ = tx.send(Err(Failure { outcome: report.outcome.clone(), timing: report.timing }));
        }
        crate::log::report(&report);
        if let Some(sink) = &sink {
            sink(&report);
        }
    };

    let started = match start_child(&host, &loaded, &call, unix_ms(timeout.saturating_sub(call.received.elapsed()))) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(function = %f.name, invocation_id = %call.id, "{e}");
            report.outcome = Outcome::SetupFailed(setup_reason(&e));
            return finish(report, Some(head_tx));
        }
    };
    let Started0 { mut sandbox, stdin, stdout, stderr, err_read, notify } = started;
    let exec = tokio::select! {
        r = wait_exec(err_read, &loaded.sandbox.request_mounts) => Some(r),
        _ = sleep_until(deadline) => None,
    };
    report.timing.setup = call.received.elapsed();
    let failed = match exec {
        Some(Ok(())) => None,
        Some(Err(e)) => {
            tracing::error!(function = %f.name, invocation_id = %call.id, "{e}");
            Some(Outcome::SetupFailed(setup_reason(&e)))
        }
        // The deadline is the function's whole budget, set-up included.
        None => Some(Outcome::Timeout),
    };
    if let Some(outcome) = failed {
        sandbox.kill();
        report.exit = sandbox.reap().await;
        report.usage = sandbox.teardown().await;
        report.outcome = outcome;
        return finish(report, Some(head_tx));
    }
    let exec_at = Instant::now();

    // The listener was sent just before exec, so it is waiting in the socket now. Without it
    // the filter's deny-listed calls would fail unseen, and once nobody holds a listener the
    // sandbox could install one of its own (seccomp_unotify(2)): no listener, no sandbox.
    let listener = spawn::recv_fd(&notify)
        .and_then(|fd| fd.ok_or_else(|| std::io::Error::other("no listener in the message (was it cut: out of fds?)")))
        .and_then(spawn::async_fd);
    drop(notify);
    // Tests only: lose the listener as an exhausted fd table would, to prove the sandbox dies.
    #[cfg(debug_assertions)]
    let listener = listener.and_then(|l| match std::env::var_os("FAAS_TEST_FAULT") {
        Some(v) if v == "lose-seccomp-listener" => Err(std::io::Error::other(format!("fault injected, dropped listener fd {l:?}"))),
        _ => Ok(l),
    });
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(function = %f.name, invocation_id = %call.id, "failed to take the seccomp listener from the sandbox: {e}; killing it");
            sandbox.kill();
            report.exit = sandbox.reap().await;
            report.usage = sandbox.teardown().await;
            report.outcome = Outcome::SetupFailed("step \"take the seccomp listener\" failed".into());
            return finish(report, Some(head_tx));
        }
    };

    let (stdin, stdout, stderr) = match (
        pipe::Sender::from_owned_fd(stdin),
        pipe::Receiver::from_owned_fd(stdout),
        pipe::Receiver::from_owned_fd(stderr),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        _ => {
            sandbox.kill();
            report.exit = sandbox.reap().await;
            report.usage = sandbox.teardown().await;
            report.outcome = Outcome::SetupFailed("pipes".into());
            return finish(report, Some(head_tx));
        }
    };
    let mut stdout = stdout;
    let mut stderr = stderr;
    let body = call.body.clone();
    let mut stdin_fut = Box::pin(async move {
        let mut stdin = stdin;
        // EPIPE when the handler does not read its body is fine.
        let _ = stdin.write_all(&body).await;
    });

    let mut head_tx = Some(head_tx);
    let (body_tx, body_rx) = mpsc::channel::<Bytes>(4);
    let cut = Arc::new(AtomicBool::new(false));
    let mut body_tx = Some(body_tx);
    let mut body_rx = Some(BodyStream::new(body_rx, cut.clone()));
    let mut out = BytesMut::with_capacity(16 << 10);
    let mut errlog = StderrLog::new(&f.name, &call.id, f.limits.log.0);
    let (mut stdout_eof, mut stderr_eof, mut stdin_done) = (false, false, false);
    let mut outcome: Option<Outcome> = None;
    let mut listener = Some(listener);
    let output_cap = f.limits.output.0;

    loop {
        if sandbox.exit.is_some() && stdout_eof && stderr_eof {
            break;
        }
        tokio::select! {
            _ = sleep_until(deadline), if sandbox.exit.is_none() && outcome.is_none() => {
                outcome = Some(Outcome::Timeout);
                sandbox.kill();
            }
            // The init is gone, so is everything in its pid namespace, yet a pipe is still
            // open: something outside the sandbox holds it. Never wait past the deadline.
            _ = sleep_until(deadline + Duration::from_secs(1)), if sandbox.exit.is_some() && !(stdout_eof && stderr_eof) => {
                tracing::warn!(function = %f.name, invocation_id = %call.id, "the sandbox is gone but its output pipes stay open; closing them");
                outcome.get_or_insert(Outcome::Timeout);
                sandbox.kill();
                stdout_eof = true;
                stderr_eof = true;
            }
            ready = async { listener.as_ref().expect("guarded by the branch condition").readable().await }, if listener.is_some() => {
                match ready.map(|guard| (spawn::take_notification(guard.get_inner()), guard)) {
                    Ok((Ok(spawn::Notification::Syscall(nr, arch)), _)) => {
                        let name = seccomp::denied_name(nr, arch);
                        tracing::warn!(function = %f.name, invocation_id = %call.id, "the function called {name}, which the sandbox refuses; killing it");
                        outcome.get_or_insert(Outcome::SyscallDenied(name));
                        sandbox.kill();
                    }
                    Ok((Ok(spawn::Notification::Nothing), mut guard)) => guard.clear_ready(),
                    // Every task of the filter is gone: nothing more can come.
                    Ok((Ok(spawn::Notification::Gone), _)) => listener = None,
                    // The listener broke while the sandbox may still run: it would go on
                    // unsupervised, so it ends here.
                    Ok((Err(e), _)) | Err(e) => {
                        listener = None;
                        if sandbox.exit.is_none() {
                            tracing::error!(function = %f.name, invocation_id = %call.id, "the seccomp listener failed: {e}; killing the sandbox");
                            outcome.get_or_insert(Outcome::SetupFailed("the sandbox lost its seccomp supervisor".into()));
                            sandbox.kill();
                        }
                    }
                }
            }
            ready = sandbox.pidfd.readable(), if sandbox.exit.is_none() => {
                if let Ok(mut guard) = ready {
                    match spawn::try_reap(&sandbox.spawned.pidfd) {
                        Ok(Some(status)) => sandbox.exit = Some(status),
                        Ok(None) => guard.clear_ready(),
                        Err(e) => {
                            tracing::error!("failed to reap sandbox pid {}: {e}", sandbox.spawned.pid);
                            sandbox.exit = Some(ExitStatus::Signaled(0));
                        }
                    }
                }
                if sandbox.exit.is_some() {
                    // Init is gone, so is its pid namespace; the cgroup may hold nothing more,
                    // but a kill costs nothing and makes sure.
                    sandbox.kill();
                }
            }
            r = stdout.read_buf(&mut out), if !stdout_eof => {
                let n = r.unwrap_or_default();
                if n == 0 {
                    stdout_eof = true;
                }
                if let Some(tx) = head_tx.take() {
                    match take_head(&mut out, stdout_eof) {
                        HeadState::Pending => head_tx = Some(tx),
                        HeadState::Bad(why) => {
                            outcome.get_or_insert(Outcome::BadResponse(why));
                            sandbox.kill();
                            head_tx = Some(tx);
                        }
                        HeadState::Empty => head_tx = Some(tx),
                        HeadState::Done(head) => {
                            report.status = head.status.as_u16();
                            report.timing.first_byte = exec_at.elapsed();
                            let started = Started { head, body: body_rx.take().expect("the head is sent once"), timing: report.timing };
                            if tx.send(Ok(started)).is_err() {
                                outcome.get_or_insert(Outcome::ClientGone);
                                sandbox.kill();
                            }
                        }
                    }
                }
                if head_tx.is_none() && !out.is_empty() {
                    let mut chunk = out.split().freeze();
                    let over = report.bytes_out + chunk.len() as u64 > output_cap;
                    if over {
                        chunk.truncate((output_cap - report.bytes_out) as usize);
                    }
                    if let Some(tx) = &body_tx {
                        report.bytes_out += chunk.len() as u64;
                        let sent = tokio::select! {
                            r = tx.send(chunk) => r.is_ok(),
                            _ = sleep_until(deadline) => {
                                outcome.get_or_insert(Outcome::Timeout);
                                sandbox.kill();
                                true
                            }
                        };
                        if !sent {
                            outcome.get_or_insert(Outcome::ClientGone);
                            sandbox.kill();
                            body_tx = None;
                        }
                    }
                    if over {
                        outcome.get_or_insert(Outcome::OutputTooLarge);
                        sandbox.kill();
                        cut.store(true, Ordering::Release);
                        body_tx = None;
                    }
                }
            }
            r = stderr.read_buf(&mut errlog.buf), if !stderr_eof => {
                match r {
                    Ok(0) | Err(_) => { stderr_eof = true; errlog.finish(); }
                    Ok(_) => errlog.feed(),
                }
            }
            _ = &mut stdin_fut, if !stdin_done => { stdin_done = true; }
            _ = async { head_tx.as_mut().expect("guarded by the branch condition").closed().await }, if head_tx.is_some() && outcome.is_none() => {
                outcome = Some(Outcome::ClientGone);
                sandbox.kill();
            }
            _ = async { body_tx.as_ref().expect("guarded by the branch condition").closed().await }, if head_tx.is_none() && body_tx.is_some() && outcome.is_none() => {
                outcome = Some(Outcome::ClientGone);
                sandbox.kill();
            }
        }
    }
    drop(stdin_fut);
    report.exit = sandbox.exit;
    let mut final_outcome = match outcome.take() {
        Some(o) => o,
        None => match (head_tx.is_some(), sandbox.exit) {
            (false, Some(ExitStatus::Exited(0))) => Outcome::Ok,
            (true, Some(ExitStatus::Exited(0))) => Outcome::BadResponse("the function exited without writing a response".into()),
            (_, Some(ExitStatus::Exited(code))) => Outcome::Crashed(format!("exited with status {code}")),
            (_, Some(ExitStatus::Signaled(sig))) => Outcome::Crashed(format!("was killed by signal {}", signal_name(sig))),
            (_, None) => Outcome::Crashed("vanished".into()),
        },
    };
    if head_tx.is_none() {
        // The body is complete once the function is gone: the client need not wait for the
        // cgroup teardown. A body that went out in part must not end like a whole one: the
        // stream reads `cut` at its end and reports the body incomplete.
        if final_outcome != Outcome::Ok {
            cut.store(true, Ordering::Release);
        }
        drop(body_tx);
    }
    report.usage = sandbox.teardown().await;
    // The OOM killer may have ended a process whose failure showed only as a crash.
    if report.usage.as_ref().is_some_and(|u| u.oom_kills > 0) && !matches!(final_outcome, Outcome::SyscallDenied(_) | Outcome::Ok) {
        final_outcome = Outcome::OutOfMemory;
    }
    report.outcome = final_outcome;
    finish(report, head_tx);
}

enum HeadState {
    Pending,
    Empty,
    Bad(String),
    Done(Head),
}

/// Looks for a complete head in `out`; on success leaves only body bytes in `out`.
fn take_head(out: &mut BytesMut, eof: bool) -> HeadState {
    if let Some((head_len, body_at)) = cgi::find_head_end(out) {
        let head = out.split_to(body_at);
        return match cgi::parse_head(&head[..head_len]) {
            Ok(h) => HeadState::Done(h),
            Err(why) => HeadState::Bad(why),
        };
    }
    if out.len() > MAX_HEAD {
        return HeadState::Bad(format!("no blank line ending the head within {} KiB", MAX_HEAD >> 10));
    }
    if eof {
        if out.is_empty() {
            return HeadState::Empty;
        }
        // A head with no blank line and no body: accept it if every line is a header.
        let head = out.split();
        return match cgi::parse_head(&head) {
            Ok(h) => HeadState::Done(h),
            Err(why) => HeadState::Bad(why),
        };
    }
    HeadState::Pending
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.as_str().to_owned())
}

/// The caller-facing reason for a set-up failure: the step, never the path or errno.
fn setup_reason(e: &SpawnError) -> String {
    match e {
        SpawnError::Child { step, .. } => format!("step \"{step}\" failed"),
        SpawnError::Clone(_) => "the sandbox process could not be created".into(),
        SpawnError::Prepare { what, .. } => format!("{what} could not be prepared"),
        SpawnError::Policy(why) => why.clone(),
        SpawnError::Template(_) => "the function's sandbox root could not be built".into(),
    }
}
