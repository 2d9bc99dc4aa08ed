//! One request, start to finish: start its sandbox (sandbox/), feed stdin, parse the CGI
//! head, stream the body, and watch the deadline, the client and the sandbox's events; every
//! event goes to an `Invocation` (invocation.rs), which alone decides the outcome; then the
//! sandbox is finished (kill, reap, teardown) and the report logged. No syscall is named here.
//!
//! All of it runs in one spawned task per invocation, so a caller that goes away (a client
//! that disconnects) cannot leak a sandbox: the task notices the dropped receiver and kills.

mod body;
mod invocation;
mod report;
mod stderr;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep_until;

pub use body::{BodyStream, Flushes};
use invocation::{Invocation, Kill};
pub use report::{Outcome, Report, Start, Timing, Trigger};
use stderr::StderrLog;

use crate::auth::Caller;
use crate::cgi::{self, Head, RequestMeta, MAX_HEAD};
use crate::egress::{self, Proxy};
use crate::function::{Function, LandlockMode, Network};
use crate::registry::Loaded;
use crate::sandbox::{self, Event, Host, Launch, Running, SpawnError, Stdio};

/// A response under way: its head and a stream of body chunks.
pub struct Started {
    pub head: Head,
    pub body: BodyStream,
    pub timing: Timing,
}

/// An invocation that ended before a response head.
#[derive(Debug)]
pub struct Failure {
    pub outcome: Outcome,
    pub timing: Timing,
}

/// One call of a function.
pub struct Call {
    pub id: String,
    pub method: http::Method,
    /// What followed `/NAME` in the path.
    pub path_info: String,
    /// Raw query string.
    pub query: String,
    pub headers: HeaderMap,
    pub remote_addr: String,
    /// What started it, for the report.
    pub trigger: Trigger,
    /// Host name the client used.
    pub server_name: String,
    pub server_port: String,
    /// The whole request body (already limited).
    pub body: Bytes,
    /// When the request reached us.
    pub received: Instant,
    /// Concurrency permits.
    pub permits: Permits,
    /// Who called, when the function checks (`[auth]`); None for open functions and for
    /// callers faas trusts without a key (the admin socket, `faas invoke`, schedules).
    pub caller: Option<Caller>,
    /// Served at `http://NAME.DOMAIN/` rather than `/NAME` (SCRIPT_NAME is empty).
    pub own_origin: bool,
}

/// The concurrency slots a request holds (none for `faas invoke`).
#[derive(Default)]
pub struct Permits {
    /// The server's (`max_concurrency`): held until the sandbox is gone.
    #[expect(dead_code, reason = "held for its Drop, which frees the slot")]
    pub server: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The function's (`limits.concurrency`): held while the function works on the request,
    /// given back early once its response is whole and the sandbox killed (the server's slot
    /// still bounds the teardown).
    pub function: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Hook for metrics; the HTTP layer installs one.
pub type ReportSink = Arc<dyn Fn(&Report) + Send + Sync>;

/// Runs `call` on `loaded`. Returns once the response head is known, or the failure.
pub async fn invoke(
    host: Arc<Host>,
    loaded: Arc<Loaded>,
    call: Call,
    sink: Option<ReportSink>,
) -> Result<Started, Failure> {
    let (head_tx, head_rx) = oneshot::channel();
    tokio::spawn(run(host, loaded, call, head_tx, sink));
    match head_rx.await {
        Ok(r) => r,
        Err(_) => Err(Failure {
            outcome: Outcome::SetupFailed("the invocation task ended unexpectedly".into()),
            timing: Timing::default(),
        }),
    }
}

/// How long a request waits for a sandbox uid when every one is leased. A whole response
/// reaches its client before its sandbox is torn down (its uid with it), so a client that sends
/// its next request at once can find them all still leased for that moment.
const UID_WAIT: Duration = Duration::from_millis(500);

/// The request's sandbox (see `start_once`), waiting up to `UID_WAIT` for a uid.
async fn start_sandbox<'a>(
    host: &Arc<Host>,
    loaded: &Arc<Loaded>,
    launch: impl Fn() -> Launch<'a>,
) -> (Result<Running, SpawnError>, Start) {
    let until = tokio::time::Instant::now() + UID_WAIT;
    loop {
        let returned = host.uids.returned();
        match start_once(host, loaded, &launch).await {
            (Err(SpawnError::NoUid), _) if tokio::time::Instant::now() < until => {
                let _ = tokio::time::timeout_at(until, returned).await;
            }
            started => return started,
        }
    }
}

/// A spare a zygote made ahead, else one forked from the zygote now, else a cold start (no
/// zygote ready, or it failed to fork).
async fn start_once<'a>(
    host: &Arc<Host>,
    loaded: &Arc<Loaded>,
    launch: &impl Fn() -> Launch<'a>,
) -> (Result<Running, SpawnError>, Start) {
    if let Some(slot) = &loaded.warm {
        if let Some(mut spare) = slot.next_spare().await {
            let go = spare.go(&launch().envp);
            slot.refill(host, &loaded.sandbox);
            match go {
                Ok(()) => return (Ok(spare), Start::Warm),
                Err(e) => {
                    tracing::warn!(function = %loaded.function.name, "{e}");
                    spare.finish_detached();
                }
            }
        }
        if let Some(zygote) = slot.zygote(host, &loaded.sandbox) {
            match sandbox::start_warm(host, &loaded.sandbox, &zygote, launch()).await {
                // The zygote is stuck or gone: this request starts cold, and a new zygote now.
                // (Its pidfd may not say so yet: a dying zygote closes its sockets first and
                // then waits for its pid namespace to empty.)
                Err(e @ SpawnError::Zygote(_)) => {
                    tracing::warn!(function = %loaded.function.name, "{e}; starting this request cold");
                    slot.lost(&zygote);
                    let _ = slot.zygote(host, &loaded.sandbox);
                }
                Err(e @ SpawnError::ZygoteBusy(_)) => {
                    tracing::warn!(function = %loaded.function.name, "{e}; starting this request cold");
                }
                started => {
                    slot.refill(host, &loaded.sandbox);
                    return (started, Start::Warm);
                }
            }
        }
    }
    (sandbox::start(host, &loaded.sandbox, launch()), Start::Cold)
}

fn unix_ms(after: Duration) -> u128 {
    (SystemTime::now() + after).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

async fn run(
    host: Arc<Host>,
    loaded: Arc<Loaded>,
    mut call: Call,
    head_tx: oneshot::Sender<Result<Started, Failure>>,
    sink: Option<ReportSink>,
) {
    // Held until this task ends, so a slot frees only once the sandbox is gone (or, for the
    // function's, once its response is whole and it is killed).
    let mut permits = std::mem::take(&mut call.permits);
    let f = &loaded.function;
    let timeout = f.limits.timeout.0;
    let deadline = tokio::time::Instant::from_std(call.received) + timeout;
    let mut report = Report {
        function: f.name.clone(),
        id: call.id.clone(),
        outcome: Outcome::Ok,
        status: 200,
        trigger: call.trigger,
        client: call.remote_addr.clone(),
        duration: Duration::ZERO,
        timing: Timing::default(),
        usage: None,
        exit: None,
        bytes_out: 0,
        layers: host.layers.summary.clone(),
        version: loaded.deployed.clone(),
        caller: call.caller.as_ref().map(|c| c.user.clone()),
        egress: Vec::new(),
    };
    let mut inv = Invocation::default();
    let mut end =
        End { report: &mut report, head_tx: Some(head_tx), received: call.received, sink: sink.as_ref(), proxy: None };

    let meta = RequestMeta {
        method: call.method.as_str(),
        function: &f.name,
        path_info: &call.path_info,
        query: &call.query,
        headers: &call.headers,
        content_length: call.body.len(),
        remote_addr: &call.remote_addr,
        server_name: &call.server_name,
        server_port: &call.server_port,
        invocation_id: &call.id,
        deadline_ms: unix_ms(timeout.saturating_sub(call.received.elapsed())),
        caller: call.caller.as_ref(),
        own_origin: call.own_origin,
    };
    let launch = || Launch {
        id: &call.id,
        limits: &f.limits,
        envp: environment(&meta, &loaded),
        landlock_required: f.landlock == LandlockMode::Required,
        spare: false,
        argv: None,
    };
    let (started, start) = start_sandbox(&host, &loaded, launch).await;
    end.report.timing.start = start;
    let mut sandbox = match started {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(function = %f.name, invocation_id = %call.id, "{e}");
            let Kill = inv.on_setup_failed(e.public_reason());
            return end.finish(None, inv).await;
        }
    };
    // The listener is already listening, so a handler that connects before the proxy task
    // first polls waits in its backlog rather than being refused.
    if let Some(listener) = sandbox.take_proxy_listener() {
        match Proxy::start(listener, f.allow.clone(), &f.name, &call.id) {
            Ok(proxy) => end.proxy = Some(proxy),
            Err(e) => {
                tracing::error!(function = %f.name, invocation_id = %call.id, "failed to start the egress proxy: {e}");
                let Kill = inv.on_setup_failed("the egress proxy could not be started".into());
                sandbox.kill();
            }
        }
    }
    let exec = tokio::select! {
        r = sandbox.wait_exec() => Some(r),
        _ = sleep_until(deadline) => None,
    };
    end.report.timing.setup = call.received.elapsed();
    match exec {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            tracing::error!(function = %f.name, invocation_id = %call.id, "{e}");
            let Kill = inv.on_setup_failed(e.public_reason());
        }
        // The deadline is the function's whole budget, set-up included.
        None => {
            let Kill = inv.on_deadline();
        }
    }
    let stdio = sandbox.take_stdio().map(|Stdio { stdin, stdout, stderr }| {
        (
            pipe::Sender::from_owned_fd(stdin),
            pipe::Receiver::from_owned_fd(stdout),
            pipe::Receiver::from_owned_fd(stderr),
        )
    });
    let (stdin, mut stdout, mut stderr) = match stdio {
        Some((Ok(a), Ok(b), Ok(c))) if !inv.doomed() => (a, b, c),
        _ => {
            if !inv.doomed() {
                let Kill = inv.on_setup_failed("the pipes could not be registered".into());
            }
            return end.finish(Some(sandbox), inv).await;
        }
    };
    let exec_at = Instant::now();
    let body = call.body.clone();
    let mut stdin_fut = Box::pin(async move {
        let mut stdin = stdin;
        // EPIPE when the handler does not read its body is fine.
        let _ = stdin.write_all(&body).await;
    });

    let (body_tx, body_rx) = mpsc::channel::<Bytes>(4);
    let cut = Arc::new(AtomicBool::new(false));
    let mut body_tx = Some(body_tx);
    let mut body_rx = Some(BodyStream::new(body_rx, cut.clone()));
    let mut out = BytesMut::with_capacity(16 << 10);
    let mut errlog = StderrLog::new(&f.name, &call.id, f.limits.log.0);
    let (mut stdout_eof, mut stderr_eof, mut stdin_done) = (false, false, false);
    let output_cap = f.limits.output.0;
    // The Content-Length the function gave, and whether that many bytes went out: the body is
    // then whole and ends at once, not when the sandbox has exited (for a Python request that
    // is a millisecond of address-space teardown later), and nothing after can cut it.
    let mut declared: Option<u64> = None;
    let mut whole = false;

    loop {
        let exited = sandbox.exit().is_some();
        if exited && stdout_eof && stderr_eof {
            break;
        }
        tokio::select! {
            _ = sleep_until(deadline), if !exited && !inv.doomed() => {
                let Kill = inv.on_deadline();
                sandbox.kill();
            }
            // The init is gone, so is everything in its pid namespace, yet a pipe is still
            // open: something outside the sandbox holds it. Never wait past the deadline.
            _ = sleep_until(deadline + Duration::from_secs(1)), if exited && !(stdout_eof && stderr_eof) => {
                tracing::warn!(function = %f.name, invocation_id = %call.id, "the sandbox is gone but its output pipes stay open; closing them");
                let Kill = inv.on_deadline();
                sandbox.kill();
                stdout_eof = true;
                stderr_eof = true;
            }
            event = sandbox.event() => match event {
                Event::Exited(status) => inv.on_exit(status),
                Event::Denied(name) => {
                    tracing::warn!(function = %f.name, invocation_id = %call.id, "the function called {name}, which the sandbox refuses; killing it");
                    let Kill = inv.on_denied(name);
                    sandbox.kill();
                }
                // It would go on unsupervised, so it ends here.
                Event::Unsupervised(e) => {
                    tracing::error!(function = %f.name, invocation_id = %call.id, "the seccomp listener failed: {e}; killing the sandbox");
                    let Kill = inv.on_unsupervised();
                    sandbox.kill();
                }
            },
            r = stdout.read_buf(&mut out), if !stdout_eof => {
                if r.unwrap_or_default() == 0 {
                    stdout_eof = true;
                }
                if let Some(tx) = end.head_tx.take() {
                    match take_head(&mut out, stdout_eof) {
                        HeadState::Pending | HeadState::Empty => end.head_tx = Some(tx),
                        HeadState::Bad(why) => {
                            let Kill = inv.on_bad_output(why);
                            sandbox.kill();
                            end.head_tx = Some(tx);
                        }
                        HeadState::Done(head) => {
                            // No body goes out for these, whatever length the head gives.
                            let bodiless = call.method == http::Method::HEAD || matches!(head.status.as_u16(), 204 | 304);
                            declared = head.length.filter(|_| !bodiless);
                            end.report.status = head.status.as_u16();
                            end.report.timing.first_byte = exec_at.elapsed();
                            let started = Started { head, body: body_rx.take().expect("the head is sent once"), timing: end.report.timing };
                            inv.on_head_sent();
                            if tx.send(Ok(started)).is_err() {
                                let Kill = inv.on_client_gone();
                                sandbox.kill();
                            }
                        }
                    }
                }
                if inv.head_sent() && !whole && !out.is_empty() {
                    let mut chunk = out.split().freeze();
                    if let Some(rest) = declared.map(|n| n - end.report.bytes_out) {
                        if chunk.len() as u64 > rest {
                            tracing::warn!(function = %f.name, invocation_id = %call.id, "the function wrote more than its Content-Length of {}; the rest is dropped", declared.unwrap_or_default());
                            chunk.truncate(rest as usize);
                        }
                    }
                    let over = end.report.bytes_out + chunk.len() as u64 > output_cap;
                    if over {
                        chunk.truncate((output_cap - end.report.bytes_out) as usize);
                    }
                    if let Some(tx) = &body_tx {
                        end.report.bytes_out += chunk.len() as u64;
                        let sent = tokio::select! {
                            r = tx.send(chunk) => r.is_ok(),
                            _ = sleep_until(deadline) => {
                                let Kill = inv.on_deadline();
                                sandbox.kill();
                                true
                            }
                        };
                        if !sent {
                            let Kill = inv.on_client_gone();
                            sandbox.kill();
                            body_tx = None;
                        }
                    }
                    if over {
                        let Kill = inv.on_output_over();
                        sandbox.kill();
                        cut.store(true, Ordering::Release);
                        body_tx = None;
                    }
                }
                if inv.head_sent() && !whole && !inv.doomed() {
                    match declared {
                        Some(n) if end.report.bytes_out == n => {
                            // The invocation is over, as when a wrapper exits after its
                            // response: the client's next request need not find the function's
                            // slot still held by this one's teardown.
                            whole = true;
                            body_tx = None;
                            inv.on_whole();
                            sandbox.kill();
                            permits.function = None;
                        }
                        Some(n) if stdout_eof => {
                            let Kill = inv.on_bad_output(format!("the body ended after {} of the {n} bytes its Content-Length gave", end.report.bytes_out));
                            sandbox.kill();
                        }
                        _ => {}
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
            _ = async { end.head_tx.as_mut().expect("guarded by the branch condition").closed().await }, if end.head_tx.is_some() && !inv.doomed() => {
                let Kill = inv.on_client_gone();
                sandbox.kill();
            }
            _ = async { body_tx.as_ref().expect("guarded by the branch condition").closed().await }, if inv.head_sent() && body_tx.is_some() && !inv.doomed() => {
                let Kill = inv.on_client_gone();
                sandbox.kill();
            }
        }
    }
    drop(stdin_fut);
    if inv.head_sent() {
        // The body is complete once the function is gone: the client need not wait for the
        // cgroup teardown. A body that went out in part must not end like a whole one: the
        // stream reads `cut` at its end and reports the body incomplete.
        if inv.verdict() != Outcome::Ok && !whole {
            cut.store(true, Ordering::Release);
        }
        drop(body_tx);
    }
    end.finish(Some(sandbox), inv).await;
}

/// The sandbox's whole environment: the CGI request, the function's own entries, the
/// secrets the function file asked to see there too, and for egress the proxy settings
/// (lowercase too: Python's urllib ignores `HTTP_PROXY` when `REQUEST_METHOD` is set, the
/// httpoxy guard, and reads `http_proxy`).
fn environment(meta: &RequestMeta, loaded: &Loaded) -> Vec<std::ffi::CString> {
    with_extra(cgi::environment(meta, &loaded.function.env), &loaded.function)
}

/// The environment a warm spare imports the handler's module with, before its request comes:
/// the function's own (`env`, secrets in the environment, the egress proxy), without the
/// request's CGI variables, which `environment` adds once it has come.
pub fn function_environment(f: &Function) -> Vec<std::ffi::CString> {
    with_extra(cgi::envp(cgi::base_environment(&f.env)), f)
}

/// `envp` with the secrets a function takes in its environment, and the egress proxy's
/// variables, in place of any entries of the same names.
fn with_extra(mut envp: Vec<std::ffi::CString>, f: &Function) -> Vec<std::ffi::CString> {
    let mut extra: Vec<(String, Vec<u8>)> = Vec::new();
    for s in &f.secrets {
        if let Some(var) = &s.env {
            extra.push((var.clone(), s.value.expose().to_vec()));
        }
    }
    if f.network == Network::Egress {
        for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            extra.push((var.to_owned(), egress::PROXY_URL.as_bytes().to_vec()));
        }
        for var in ["NO_PROXY", "no_proxy"] {
            extra.push((var.to_owned(), Vec::new()));
        }
    }
    envp.retain(|e| {
        let name = e.as_bytes().split(|&b| b == b'=').next().unwrap_or_default();
        !extra.iter().any(|(k, _)| k.as_bytes() == name)
    });
    for (k, v) in extra {
        let mut entry = k.into_bytes();
        entry.push(b'=');
        entry.extend_from_slice(&v);
        // Checked at load: names are plain, secret values for the environment hold no NUL.
        if let Ok(c) = std::ffi::CString::new(entry) {
            envp.push(c);
        }
    }
    envp
}

/// The one way an invocation ends: finish the sandbox (kill, reap, teardown), let the
/// `Invocation` decide, answer a caller still waiting for a head, log the report.
struct End<'a> {
    report: &'a mut Report,
    head_tx: Option<oneshot::Sender<Result<Started, Failure>>>,
    received: Instant,
    sink: Option<&'a ReportSink>,
    /// An egress sandbox's proxy, finished (its listener closed) before the sandbox is.
    proxy: Option<Proxy>,
}

impl End<'_> {
    async fn finish(self, sandbox: Option<Running>, mut inv: Invocation) {
        if let Some(proxy) = self.proxy {
            if let Some(sandbox) = &sandbox {
                sandbox.kill();
            }
            self.report.egress = proxy.finish().await;
        }
        if let Some(sandbox) = sandbox {
            let ended = sandbox.finish().await;
            if let Some(status) = ended.exit {
                inv.on_exit(status);
            }
            if let Some(usage) = &ended.usage {
                inv.on_usage(usage);
            }
            self.report.exit = ended.exit;
            self.report.usage = ended.usage;
        }
        let report = self.report;
        report.outcome = inv.verdict();
        report.duration = self.received.elapsed();
        if let Some(tx) = self.head_tx {
            report.status = report.outcome.status().as_u16();
            let _ = tx.send(Err(Failure { outcome: report.outcome.clone(), timing: report.timing }));
        }
        report.log();
        if let Some(sink) = self.sink {
            sink(report);
        }
    }
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
