//! One request, start to finish: lease a uid, make the cgroup and pipes, build the
//! `ChildPlan`, spawn, feed stdin, parse the CGI head, stream the body, watch the deadline,
//! the client and the seccomp listener, then kill, reap, read the counters, clean up and
//! log the report.
//!
//! All of it runs in one spawned task per invocation, so a caller that goes away (a client
//! that disconnects) cannot leak a sandbox: the task notices the dropped receiver and kills.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use nix::libc;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep_until;

use crate::cgi::{self, Head, RequestMeta, MAX_HEAD};
use crate::function::LandlockMode;
use crate::host::{Host, UidLease};
use crate::registry::Loaded;
use crate::sandbox::cgroup::{RequestCgroup, Usage};
use crate::sandbox::landlock::Level;
use crate::sandbox::namespaces::CLONE_FLAGS;
use crate::sandbox::spawn::{self, cloexec_pipe, ExitStatus, Spawned, ERROR_RECORD};
use crate::sandbox::{child_error, seccomp, CStringArray, ChildPlan, SpawnError};

/// A line of function stderr longer than this is split: it never stalls the pipe.
pub const MAX_LOG_LINE: usize = 64 << 10;

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

/// A live sandbox and everything of it the parent holds.
struct Sandbox {
    spawned: Spawned,
    pidfd: AsyncFd<OwnedFd>,
    cgroup: Option<RequestCgroup>,
    uid: Option<UidLease>,
    exit: Option<ExitStatus>,
}

/// The parent's ends of a freshly started child.
struct Started0 {
    sandbox: Sandbox,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    err_read: OwnedFd,
    notify: Option<OwnedFd>,
}

fn prepare_err(what: &'static str) -> impl FnOnce(io::Error) -> SpawnError {
    move |source| SpawnError::Prepare { what, source }
}

/// Everything before the first await: lease, cgroup, pipes, plan, clone3. Synchronous so
/// the plan's raw pointers never cross an await point.
fn start_child(host: &Host, loaded: &Loaded, call: &Call, deadline_ms: u128) -> Result<Started0, SpawnError> {
    let f = &loaded.function;
    if f.landlock == LandlockMode::Required && loaded.sandbox.landlock.enforcement.level != Level::Full {
        return Err(SpawnError::Policy(format!("the function requires landlock, and this kernel gives {}", loaded.sandbox.landlock.enforcement)));
    }
    let template_fd = match &loaded.sandbox.template {
        Ok(fd) => fd.as_raw_fd(),
        Err(why) => return Err(SpawnError::Template(why.clone())),
    };
    let uid = host.uids.lease().ok_or_else(|| SpawnError::Policy("every sandbox uid is in use".into()))?;
    let cgroup = match &host.cgroups {
        Some(tree) => Some(tree.create(&call.id, &f.limits).map_err(|e| SpawnError::Prepare { what: "the cgroup", source: io::Error::other(e.to_string()) })?),
        None => None,
    };
    let mut cleanup_cgroup = scopeguard(cgroup);
    let (stdin_r, stdin_w) = cloexec_pipe().map_err(prepare_err("stdin"))?;
    let (stdout_r, stdout_w) = cloexec_pipe().map_err(prepare_err("stdout"))?;
    let (stderr_r, stderr_w) = cloexec_pipe().map_err(prepare_err("stderr"))?;
    let (err_r, err_w) = cloexec_pipe().map_err(prepare_err("the error pipe"))?;
    let seccomp_on = !loaded.sandbox.seccomp.is_empty();
    let (notify_parent, notify_child) = if seccomp_on {
        let (a, b) = spawn::socketpair().map_err(prepare_err("the seccomp socket"))?;
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    let ruleset = loaded.sandbox.landlock.create_ruleset().map_err(|e| SpawnError::Prepare { what: "the landlock ruleset", source: io::Error::other(e.to_string()) })?;

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
        deadline_ms,
    };
    let memory_fallback = host.cgroups.is_none();
    let limit = |v: u64| libc::rlimit { rlim_cur: v, rlim_max: v };
    let mut rlimits = vec![
        (libc::RLIMIT_CORE, limit(0)),
        (libc::RLIMIT_NOFILE, limit(f.limits.nofile)),
        (libc::RLIMIT_FSIZE, limit(f.tmp.0.max(f.limits.output.0))),
        // Counted per real uid, and the uid is this sandbox's alone: the pids limit itself
        // without cgroups; with them a backstop above pids.max, so that pids.max is what
        // stops a fork loop and pids.events says so.
        (libc::RLIMIT_NPROC, limit(u64::from(f.limits.pids) * if memory_fallback { 1 } else { 2 })),
    ];
    if memory_fallback {
        rlimits.push((libc::RLIMIT_DATA, limit(f.limits.memory.0)));
    }
    let plan = ChildPlan {
        sandbox: &loaded.sandbox,
        template_fd,
        clone_flags: CLONE_FLAGS | if cleanup_cgroup.as_ref().is_some() { libc::CLONE_NEWCGROUP as u64 } else { 0 },
        cgroup_fd: cleanup_cgroup.as_ref().and_then(|c| c.dir.as_ref()).map(|d| d.as_raw_fd()),
        netns_fd: if f.network { None } else { host.netns.as_ref().map(|fd| fd.as_raw_fd()) },
        stdio: [stdin_r.as_raw_fd(), stdout_w.as_raw_fd(), stderr_w.as_raw_fd()],
        err_pipe: err_w.as_raw_fd(),
        landlock_fd: ruleset.as_ref().map(|fd| fd.as_raw_fd()),
        landlock_tmp: loaded.sandbox.landlock.tmp_access,
        landlock_proc: loaded.sandbox.landlock.proc_access,
        notify_sock: notify_child.as_ref().map(|fd| fd.as_raw_fd()),
        uid: uid.id,
        gid: uid.id,
        bounding_caps: &host.bounding_caps,
        changed_signals: host.changed_signals.get_or_init(spawn::changed_signals),
        rlimits,
        exe: &loaded.sandbox.exe,
        argv: CStringArray::new(loaded.sandbox.argv.clone()),
        envp: CStringArray::new(cgi::environment(&meta, &f.env)),
    };
    let spawned = spawn::spawn(&plan)?;
    drop(plan);
    // The child has its copies; ours must go now, or EOF would never come.
    drop((stdin_r, stdout_w, stderr_w, err_w, notify_child, ruleset));
    let pidfd = spawn::async_fd(spawned.pidfd.try_clone().map_err(prepare_err("the pidfd"))?).map_err(prepare_err("the pidfd"))?;
    Ok(Started0 {
        sandbox: Sandbox { spawned, pidfd, cgroup: cleanup_cgroup.take(), uid: Some(uid), exit: None },
        stdin: stdin_w,
        stdout: stdout_r,
        stderr: stderr_r,
        err_read: err_r,
        notify: notify_parent,
    })
}

/// Removes a request cgroup if set-up fails before the child owns it.
struct CgroupGuard(Option<RequestCgroup>);

fn scopeguard(cg: Option<RequestCgroup>) -> CgroupGuard {
    CgroupGuard(cg)
}

impl CgroupGuard {
    fn as_ref(&self) -> Option<&RequestCgroup> {
        self.0.as_ref()
    }
    fn take(&mut self) -> Option<RequestCgroup> {
        self.0.take()
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(mut cg) = self.0.take() {
            let _ = cg.remove();
        }
    }
}

impl Sandbox {
    /// Kills everything in the sandbox: its init (which takes the pid namespace along) and,
    /// when there is one, the cgroup.
    fn kill(&self) {
        if self.exit.is_none() {
            if let Err(e) = spawn::kill_pidfd(&self.spawned.pidfd) {
                tracing::warn!("failed to kill sandbox pid {}: {e}", self.spawned.pid);
            }
        }
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cg.kill() {
                tracing::warn!("{e}");
            }
        }
    }

    /// Waits until the init has exited and reaps it.
    async fn reap(&mut self) -> Option<ExitStatus> {
        while self.exit.is_none() {
            match self.pidfd.readable().await {
                Ok(mut guard) => match spawn::try_reap(&self.spawned.pidfd) {
                    Ok(Some(status)) => self.exit = Some(status),
                    Ok(None) => guard.clear_ready(),
                    Err(e) => {
                        tracing::error!("failed to reap sandbox pid {}: {e}", self.spawned.pid);
                        return None;
                    }
                },
                Err(e) => {
                    tracing::error!("failed to wait for sandbox pid {}: {e}", self.spawned.pid);
                    return None;
                }
            }
        }
        self.exit
    }

    /// After the init is reaped: empty and remove the cgroup, return the uid.
    async fn teardown(&mut self) -> Option<Usage> {
        let usage = if let Some(mut cg) = self.cgroup.take() {
            let _ = cg.kill();
            // cgroup.kill is asynchronous; the pid namespace is gone already, so this is short.
            for _ in 0..200 {
                if !cg.populated() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let usage = cg.usage();
            if let Err(e) = cg.remove() {
                tracing::error!("{e}");
            }
            Some(usage)
        } else {
            None
        };
        self.uid.take();
        usage
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Only reached without teardown if the task panicked: never leave a sandbox running.
        if self.exit.is_none() {
            self.kill();
            let pidfd = self.spawned.pidfd.try_clone();
            if let Ok(pidfd) = pidfd {
                std::thread::spawn(move || {
                    while let Ok(None) = spawn::try_reap(&pidfd) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                });
            }
        }
        if let Some(mut cg) = self.cgroup.take() {
            let _ = cg.kill();
            let _ = cg.remove();
        }
    }
}

/// Waits for the child to exec (EOF on the error pipe) or report the step that failed.
async fn wait_exec(err_read: OwnedFd, mounts: &[crate::sandbox::MountOp]) -> Result<(), SpawnError> {
    spawn::set_nonblocking(&err_read).map_err(prepare_err("the error pipe"))?;
    let mut record = [0u8; ERROR_RECORD];
    let mut got = 0;
    if spawn::SPAWN_RETURNS_AFTER_EXEC {
        // clone3 returned only once the child exec'd past the point of no return or exited;
        // an exited child wrote its whole record (one write, under PIPE_BUF) first. So no
        // record now means exec, even if the child has not yet closed its end (which can
        // take a scheduling round and cost ~1 ms of waiting for EOF).
        match nix::unistd::read(err_read.as_raw_fd(), &mut record) {
            Ok(0) | Err(nix::errno::Errno::EAGAIN) => return Ok(()),
            Ok(ERROR_RECORD) => return Err(child_error(mounts, &record)),
            Ok(n) => got = n,
            Err(e) => return Err(SpawnError::Prepare { what: "the error pipe", source: e.into() }),
        }
    }
    let fd = spawn::async_fd(err_read).map_err(prepare_err("the error pipe"))?;
    loop {
        let mut guard = fd.readable().await.map_err(prepare_err("the error pipe"))?;
        match nix::unistd::read(fd.get_ref().as_raw_fd(), &mut record[got..]) {
            Ok(0) if got == 0 => return Ok(()),
            Ok(0) => return Err(SpawnError::Prepare { what: "the error pipe", source: io::Error::other("short error record") }),
            Ok(n) => {
                got += n;
                if got == ERROR_RECORD {
                    return Err(child_error(mounts, &record));
                }
            }
            Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
            Err(e) => return Err(SpawnError::Prepare { what: "the error pipe", source: e.into() }),
        }
    }
}

fn unix_ms(after: Duration) -> u128 {
    (SystemTime::now() + after).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// Function stderr, line by line to the log, capped per invocation.
struct StderrLog<'a> {
    function: &'a str,
    id: &'a str,
    buf: BytesMut,
    logged: u64,
    cap: u64,
    truncated: bool,
}

impl StderrLog<'_> {
    fn emit(&mut self, line: &[u8]) {
        if self.logged >= self.cap {
            if !self.truncated {
                self.truncated = true;
                crate::log::function_line(self.function, self.id, b"[faas: log output truncated at the per-invocation cap]");
            }
            return;
        }
        self.logged += line.len() as u64;
        crate::log::function_line(self.function, self.id, line);
    }

    fn feed(&mut self) {
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line = self.buf.split_to(nl + 1);
            self.emit(&line[..nl]);
        }
        while self.buf.len() >= MAX_LOG_LINE {
            let chunk = self.buf.split_to(MAX_LOG_LINE);
            self.emit(&chunk);
        }
    }

    fn finish(&mut self) {
        if !self.buf.is_empty() {
            let rest = self.buf.split();
            self.emit(&rest);
        }
    }
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
        layers: host.layers.summary(),
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

    // The listener was sent just before exec, so it is waiting in the socket now.
    let listener = match notify.as_ref().map(spawn::recv_fd) {
        Some(Ok(Some(fd))) => spawn::async_fd(fd).ok(),
        Some(Err(e)) => {
            tracing::warn!(function = %f.name, invocation_id = %call.id, "no seccomp listener from the sandbox: {e}");
            None
        }
        _ => None,
    };
    drop(notify);

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
    let mut body_rx = Some(BodyStream { rx: body_rx, cut: cut.clone(), ended: false, flush_wait: None });
    let mut out = BytesMut::with_capacity(16 << 10);
    let mut errlog = StderrLog { function: &f.name, id: &call.id, buf: BytesMut::with_capacity(4 << 10), logged: 0, cap: f.limits.log.0, truncated: false };
    let (mut stdout_eof, mut stderr_eof, mut stdin_done) = (false, false, false);
    let mut outcome: Option<Outcome> = None;
    let mut listener = listener;
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
            ready = async { listener.as_ref().expect("guarded by the branch condition").readable().await }, if listener.is_some() => {
                match ready {
                    Ok(mut guard) => match spawn::recv_notification(guard.get_inner()) {
                        Ok(nr) => {
                            let name = seccomp::syscall_name(nr);
                            tracing::warn!(function = %f.name, invocation_id = %call.id, "the function called {name}, which the sandbox refuses; killing it");
                            outcome.get_or_insert(Outcome::SyscallDenied(name));
                            sandbox.kill();
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                        // ENOENT: the caller died meanwhile; anything else: the filter is gone.
                        Err(_) => { listener = None; }
                    },
                    Err(_) => { listener = None; }
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
