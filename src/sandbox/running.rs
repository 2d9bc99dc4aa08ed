//! One request's sandbox from the parent's side: `start` (everything before the first await:
//! uid lease, cgroup, network namespace, pipes, the `ChildPlan`, clone3), then a `Running`
//! sandbox that owns the rest: waiting for the exec and the seccomp listener, its exit and
//! denied-syscall notifications as events, the kill, and the teardown (reap, cgroup counters
//! and removal, network namespace back to the pool, uid back).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use nix::libc;
use tokio::io::unix::AsyncFd;

use super::cgroup::{RequestCgroup, Usage};
use super::host::Host;
use super::landlock::Level;
use super::namespaces::CLONE_FLAGS;
use super::netns::{self, NetnsPool};
use super::spawn::{self, CStringArray, Spawned, ERROR_RECORD};
use super::sys::{self, ExitStatus, Notification};
use super::uids::UidLease;
use super::zygote::{self, Zygote};
use super::{child_error, seccomp, ChildPlan, Network, PreparedSandbox, SpawnError};
use crate::config::Limits;

/// What one request brings to its sandbox.
pub struct Launch<'a> {
    /// The invocation id: names the request's cgroup.
    pub id: &'a str,
    pub limits: &'a Limits,
    /// The CGI environment, as `NAME=value`.
    pub envp: Vec<std::ffi::CString>,
    /// Refuse to start unless Landlock is fully enforced.
    pub landlock_required: bool,
    /// A spare made ahead of its request (zygote.rs): its cgroup is `spare-ID`, not `inv-ID`,
    /// since no invocation has it yet.
    pub spare: bool,
    /// In place of the function's argv (the same program): the compile sandbox's (bytecode.rs).
    pub argv: Option<Vec<std::ffi::CString>>,
}

/// The parent's ends of the sandbox's stdin, stdout and stderr.
pub struct Stdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// What a running sandbox reports.
#[derive(Debug)]
pub enum Event {
    /// Its init exited (and with it everything in its pid namespace); it has been reaped.
    Exited(ExitStatus),
    /// It made a deny-listed call (named) and is stopped there until killed.
    Denied(String),
    /// Its seccomp listener broke while it may still run: it must not go on unsupervised.
    Unsupervised(io::Error),
}

/// A started sandbox. Dropping it without `finish` (a panic) still kills and reaps it.
pub struct Running {
    prepared: Arc<PreparedSandbox>,
    spawned: Spawned,
    pidfd: AsyncFd<OwnedFd>,
    reaper: Reaper,
    cgroup: Option<RequestCgroup>,
    uid: Option<UidLease>,
    /// Its network namespace, back to the pool once everything in it is gone.
    netns: Option<(OwnedFd, Arc<NetnsPool>)>,
    /// An egress sandbox's own namespace (never pooled: see `start`), dropped at teardown.
    egress_netns: Option<OwnedFd>,
    /// The egress proxy's listening socket in that namespace, until the caller takes it.
    proxy_listener: Option<OwnedFd>,
    stdio: Option<Stdio>,
    err_read: Option<OwnedFd>,
    notify: Option<OwnedFd>,
    listener: Option<AsyncFd<OwnedFd>>,
    exit: Option<ExitStatus>,
    /// A spare's end of the socket its request's environment goes on (`go`).
    go: Option<OwnedFd>,
}

/// How a finished sandbox ended.
#[derive(Debug, Default)]
pub struct Ended {
    /// How the init ended, if it was reaped.
    pub exit: Option<ExitStatus>,
    /// cgroup counters (None without cgroups).
    pub usage: Option<Usage>,
}

fn prepare_err(what: &'static str) -> impl FnOnce(io::Error) -> SpawnError {
    move |source| SpawnError::Prepare { what, source }
}

/// Starts one request's sandbox. Synchronous, so the plan's raw pointers never cross an await.
/// Fails closed: a layer this sandbox needs that the host lacks stops it here.
pub fn start(host: &Host, prepared: &Arc<PreparedSandbox>, launch: Launch) -> Result<Running, SpawnError> {
    let parts = Parts::acquire(host, prepared, &launch)?;
    let c = &parts.child;
    let plan = ChildPlan {
        sandbox: prepared,
        template_fd: parts.base.template_fd,
        clone_flags: CLONE_FLAGS | parts.clone_flags,
        cgroup_fd: parts.cgroup_fd(),
        netns_fd: parts.netns_fd(),
        stdio: [c.stdin.as_raw_fd(), c.stdout.as_raw_fd(), c.stderr.as_raw_fd()],
        err_pipe: c.err.as_raw_fd(),
        landlock_fd: c.ruleset.as_ref().map(|fd| fd.as_raw_fd()),
        landlock_tmp: prepared.landlock.tmp_access,
        landlock_proc: prepared.landlock.proc_access,
        notify_sock: c.notify.as_raw_fd(),
        filter: &prepared.seccomp,
        listener: true,
        keep_caps: 0,
        uid: parts.uid.id,
        gid: parts.uid.id,
        cap_last: host.cap_last,
        daemon_pidfd: parts.base.daemon_pidfd,
        ipc_limits: &prepared.ipc_limits,
        changed_signals: host.changed_signals.get_or_init(sys::changed_signals),
        rlimits: parts.rlimits.clone(),
        exe: &prepared.exe,
        argv: CStringArray::new(launch.argv.unwrap_or_else(|| prepared.argv.clone())),
        envp: CStringArray::new(launch.envp),
    };
    let spawned = spawn::spawn(&plan)?;
    drop(plan);
    parts.into_running(prepared, spawned, Reaper::Daemon)
}

/// The child's ends of its stdio, error pipe and seccomp socket, and its Landlock ruleset:
/// ours are closed once the child has its copies, or EOF would never come.
pub(super) struct ChildEnds {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub err: OwnedFd,
    pub notify: OwnedFd,
    pub ruleset: Option<OwnedFd>,
}

/// What every sandbox process needs of its function version and of the host, checked: none
/// starts without it (fail closed). The fds are the version's and the daemon's, held open by
/// them for longer than any sandbox is being started.
pub(super) struct Base {
    /// The version's template mount namespace.
    pub template_fd: RawFd,
    /// The daemon's own pidfd, which children poll after arming their parent-death signal.
    pub daemon_pidfd: RawFd,
}

impl Base {
    pub fn check(host: &Host, prepared: &PreparedSandbox) -> Result<Base, SpawnError> {
        let template_fd = match &prepared.template {
            Ok(fd) => fd.as_raw_fd(),
            Err(e) => return Err(SpawnError::Template(e.clone())),
        };
        // Without the filter and its listener nothing stops or reports a deny-listed call, and
        // without the daemon's pidfd a sandbox could outlive a dead daemon unnoticed.
        if prepared.seccomp.is_empty() {
            return Err(SpawnError::Missing("the seccomp layer is missing on this host".into()));
        }
        let Some(daemon_pidfd) = host.daemon_pidfd.as_ref() else {
            return Err(SpawnError::Missing("the daemon has no pidfd of its own (pidfd_open)".into()));
        };
        Ok(Base { template_fd, daemon_pidfd: daemon_pidfd.as_raw_fd() })
    }
}

/// Everything one request's sandbox holds before its process exists, whichever way that
/// process is made (the daemon's clone3, or a zygote's).
pub(super) struct Parts {
    pub base: Base,
    uid: UidLease,
    cgroup: CgroupGuard,
    pool: Option<Arc<NetnsPool>>,
    pooled_netns: Option<OwnedFd>,
    egress_netns: Option<OwnedFd>,
    proxy_listener: Option<OwnedFd>,
    pub child: ChildEnds,
    stdio: Stdio,
    err_read: OwnedFd,
    notify: OwnedFd,
    /// (resource, limit) pairs the child sets last.
    pub rlimits: Vec<(libc::__rlimit_resource_t, libc::rlimit)>,
    /// CLONE_NEWCGROUP and CLONE_NEWNET as this request needs them, beyond `CLONE_FLAGS`.
    pub clone_flags: u64,
}

impl Parts {
    /// Takes a uid, makes the cgroup, picks the network namespace, the pipes and the ruleset.
    /// Fails closed: a layer this sandbox needs that the host lacks stops it here.
    pub fn acquire(host: &Host, prepared: &PreparedSandbox, launch: &Launch) -> Result<Parts, SpawnError> {
        if launch.landlock_required && prepared.landlock.enforcement.level != Level::Full {
            return Err(SpawnError::Missing(format!(
                "the function requires landlock, and this kernel gives {}",
                prepared.landlock.enforcement
            )));
        }
        let base = Base::check(host, prepared)?;
        let pool = match (&host.netns, prepared.network) {
            (_, Network::Host) => None,
            (Some(pool), Network::None) => Some(pool.clone()),
            (Some(_), Network::Egress { .. }) => None,
            (None, _) => return Err(SpawnError::Missing("network namespaces are missing on this host".into())),
        };
        let pooled_netns = pool.as_ref().and_then(|p| p.take());
        // An egress namespace is made fresh for each sandbox, never reused: a pooled one would
        // still hold the last sandbox's proxy listener (and the connections queued on it) until
        // the daemon's proxy task let go of it, and the next sandbox could reach that proxy,
        // which checks another function's allow-list. Fresh, the only listener in it is this
        // sandbox's own.
        let (egress_netns, proxy_listener) = match prepared.network {
            Network::Egress { proxy_port } => {
                let (ns, listener) =
                    sys::create_egress_netns(proxy_port).map_err(prepare_err("the egress network namespace"))?;
                (Some(ns), Some(listener))
            }
            Network::None | Network::Host => (None, None),
        };
        let uid = host.uids.lease().ok_or(SpawnError::NoUid)?;
        let cgroup = CgroupGuard(match &host.cgroups {
            Some(tree) if launch.spare => Some(tree.create_named(&format!("spare-{}", launch.id), launch.limits)?),
            Some(tree) => Some(tree.create(launch.id, launch.limits)?),
            None => None,
        });
        let (stdin_r, stdin_w) = sys::cloexec_pipe().map_err(prepare_err("stdin"))?;
        let (stdout_r, stdout_w) = sys::cloexec_pipe().map_err(prepare_err("stdout"))?;
        let (stderr_r, stderr_w) = sys::cloexec_pipe().map_err(prepare_err("stderr"))?;
        let (err_r, err_w) = sys::cloexec_pipe().map_err(prepare_err("the error pipe"))?;
        let (notify_parent, notify_child) = sys::listener_socketpair().map_err(prepare_err("the seccomp socket"))?;
        let ruleset = prepared.landlock.create_ruleset()?;

        let limits = launch.limits;
        let memory_fallback = host.cgroups.is_none();
        let limit = |v: u64| libc::rlimit { rlim_cur: v, rlim_max: v };
        let mut rlimits = vec![
            (libc::RLIMIT_CORE, limit(0)),
            // Never above the daemon's own hard limit: raising a hard limit takes
            // CAP_SYS_RESOURCE, so setrlimit would fail and stop every request. `faas check`
            // and the load log warn about such a function.
            (libc::RLIMIT_NOFILE, limit(host.nofile_hard.map_or(limits.nofile, |hard| limits.nofile.min(hard)))),
            (libc::RLIMIT_FSIZE, limit(prepared.tmp_bytes.max(limits.output.0))),
            // Counted per real uid, and the uid is this sandbox's alone: the pids limit itself
            // without cgroups; with them a backstop above pids.max, so that pids.max is what
            // stops a fork loop and pids.events says so.
            (libc::RLIMIT_NPROC, limit(u64::from(limits.pids) * if memory_fallback { 1 } else { 2 })),
        ];
        if memory_fallback {
            rlimits.push((libc::RLIMIT_DATA, limit(limits.memory.0)));
        }
        let clone_flags = if cgroup.0.is_some() { libc::CLONE_NEWCGROUP as u64 } else { 0 }
            | if pool.is_some() && pooled_netns.is_none() { libc::CLONE_NEWNET as u64 } else { 0 };
        Ok(Parts {
            base,
            uid,
            cgroup,
            pool,
            pooled_netns,
            egress_netns,
            proxy_listener,
            child: ChildEnds {
                stdin: stdin_r,
                stdout: stdout_w,
                stderr: stderr_w,
                err: err_w,
                notify: notify_child,
                ruleset,
            },
            stdio: Stdio { stdin: stdin_w, stdout: stdout_r, stderr: stderr_r },
            err_read: err_r,
            notify: notify_parent,
            rlimits,
            clone_flags,
        })
    }

    /// Makes the network namespace now if the pool had none, instead of CLONE_NEWNET: a
    /// zygote's child is not ours to reap, so its pid could be reused before we read its
    /// namespace from `/proc`.
    pub fn own_netns(&mut self) -> Result<(), SpawnError> {
        if self.pool.is_some() && self.pooled_netns.is_none() {
            self.pooled_netns = Some(sys::create_empty_netns().map_err(prepare_err("a network namespace"))?);
            self.clone_flags &= !(libc::CLONE_NEWNET as u64);
        }
        Ok(())
    }

    /// The sandbox's uid (and gid).
    pub fn uid_id(&self) -> u32 {
        self.uid.id
    }

    /// The request's cgroup directory, for CLONE_INTO_CGROUP.
    pub fn cgroup_fd(&self) -> Option<RawFd> {
        self.cgroup.0.as_ref().and_then(|c| c.dir.as_ref()).map(|d| d.as_raw_fd())
    }

    /// The network namespace the child joins: pooled, or this request's egress one.
    pub fn netns_fd(&self) -> Option<RawFd> {
        self.pooled_netns.as_ref().or(self.egress_netns.as_ref()).map(|fd| fd.as_raw_fd())
    }

    /// Once the child exists (and has its copies of `child`): the running sandbox.
    pub fn into_running(
        self,
        prepared: &Arc<PreparedSandbox>,
        spawned: Spawned,
        reaper: Reaper,
    ) -> Result<Running, SpawnError> {
        let Parts {
            uid,
            mut cgroup,
            pool,
            pooled_netns,
            egress_netns,
            proxy_listener,
            child,
            stdio,
            err_read,
            notify,
            ..
        } = self;
        // The child has its copies; ours must go now, or EOF would never come.
        drop(child);
        // A namespace clone3 made is kept for the next sandbox; if the child is already gone
        // it took its namespace along, which is fine.
        let netns = match (pool, pooled_netns) {
            (Some(pool), Some(ns)) => Some((ns, pool)),
            (Some(pool), None) => netns::netns_of(spawned.pid).ok().map(|ns| (ns, pool)),
            (None, _) => None,
        };
        let pidfd = match spawned.pidfd.try_clone().and_then(sys::async_fd) {
            Ok(fd) => fd,
            Err(e) => {
                // No task can watch a sandbox we cannot wait for: kill and reap it now.
                reap_in_background(&spawned);
                return Err(SpawnError::Prepare { what: "the pidfd", source: e });
            }
        };
        Ok(Running {
            prepared: prepared.clone(),
            spawned,
            pidfd,
            reaper,
            cgroup: cgroup.0.take(),
            uid: Some(uid),
            netns,
            egress_netns,
            proxy_listener,
            stdio: Some(stdio),
            err_read: Some(err_read),
            notify: Some(notify),
            listener: None,
            exit: None,
            go: None,
        })
    }
}

/// Who reaps a sandbox's init and so learns how it ended.
pub(super) enum Reaper {
    /// The daemon: the init is its own child, reaped through the pidfd.
    Daemon,
    /// A zygote, whose child the init is: it sends the wait status on `reply` once it has
    /// reaped it. The zygote (and with it the init's pid namespace) lives as long as this.
    /// A `spare` was made ahead: it waits, every layer on, for `go` and its request.
    Zygote { reply: AsyncFd<OwnedFd>, zygote: Arc<Zygote>, spare: bool },
}

/// Removes a request cgroup if set-up fails before the child owns it.
struct CgroupGuard(Option<RequestCgroup>);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(mut cg) = self.0.take() {
            let _ = cg.remove();
        }
    }
}

impl Running {
    /// Waits for the child to exec (or report the step that failed), then takes the seccomp
    /// listener it sent just before. Without the listener the filter's deny-listed calls
    /// would fail unseen, and once nobody holds one the sandbox could install its own
    /// (seccomp_unotify(2)): no listener, no sandbox. On `Err` the caller ends it with
    /// `finish`.
    pub async fn wait_exec(&mut self) -> Result<(), SpawnError> {
        // A spare (zygote.rs) was waited for when it was made.
        let Some(err_read) = self.err_read.take() else { return Ok(()) };
        let returns_after_exec = spawn::SPAWN_RETURNS_AFTER_EXEC && matches!(self.reaper, Reaper::Daemon);
        wait_for_exec(err_read, &self.prepared, returns_after_exec).await?;
        let notify = self.notify.take().expect("wait_exec is called once");
        let listener = sys::recv_fd(&notify)
            .and_then(|fd| fd.ok_or_else(|| io::Error::other("no listener in the message (was it cut: out of fds?)")))
            .and_then(sys::async_fd);
        // Tests only: lose the listener as an exhausted fd table would, to prove the sandbox dies.
        #[cfg(debug_assertions)]
        let listener = listener.and_then(|l| match std::env::var_os("FAAS_TEST_FAULT") {
            Some(v) if v == "lose-seccomp-listener" => {
                Err(io::Error::other(format!("fault injected, dropped listener fd {l:?}")))
            }
            _ => Ok(l),
        });
        self.listener = Some(listener.map_err(SpawnError::Listener)?);
        if matches!(self.reaper, Reaper::Zygote { spare: true, .. }) {
            self.go = Some(notify);
        }
        Ok(())
    }

    /// Whether its init still runs (no exit seen, and its pidfd not readable).
    pub fn alive(&self) -> bool {
        self.exit.is_none() && sys::pidfd_running(&self.spawned.pidfd)
    }

    /// Starts the request in a spare (a sandbox a zygote made ahead, every layer applied and
    /// waiting): sends it the request's environment, once.
    pub fn go(&mut self, envp: &[std::ffi::CString]) -> Result<(), SpawnError> {
        let sock = self.go.take().ok_or_else(|| SpawnError::Zygote("not a waiting spare".into()))?;
        zygote::send_env(&sock, envp).map_err(|e| SpawnError::Zygote(format!("the spare takes no request: {e}")))
    }

    /// The listening socket of an egress sandbox's proxy (127.0.0.1 in its network
    /// namespace), once: the caller serves it (egress/) for as long as the sandbox runs.
    pub fn take_proxy_listener(&mut self) -> Option<OwnedFd> {
        self.proxy_listener.take()
    }

    /// The parent's ends of the sandbox's stdio, once.
    pub fn take_stdio(&mut self) -> Option<Stdio> {
        self.stdio.take()
    }

    /// How the init ended, once it has.
    pub fn exit(&self) -> Option<ExitStatus> {
        self.exit
    }

    /// The next thing the sandbox reports. Cancel-safe (it only waits for readiness), so it
    /// can sit in a `select!`; pending for good once the init has exited and the listener
    /// has nothing more to say.
    pub async fn event(&mut self) -> Event {
        loop {
            let exited = self.exit.is_some();
            tokio::select! {
                status = self.wait_exit(), if !exited => {
                    self.exit = Some(status);
                    // The init is gone, so is its pid namespace; the cgroup may hold nothing
                    // more, but a kill costs nothing and makes sure.
                    self.kill();
                    return Event::Exited(status);
                }
                ready = async { self.listener.as_ref().expect("guarded by the branch condition").readable().await }, if self.listener.is_some() => {
                    match ready.map(|guard| (sys::take_notification(guard.get_inner()), guard)) {
                        Ok((Ok(Notification::Syscall(nr, arch)), _)) => return Event::Denied(seccomp::denied_name(nr, arch)),
                        Ok((Ok(Notification::Nothing), mut guard)) => guard.clear_ready(),
                        // Every task of the filter is gone: nothing more can come.
                        Ok((Ok(Notification::Gone), _)) => self.listener = None,
                        Ok((Err(e), _)) | Err(e) => {
                            self.listener = None;
                            if self.exit.is_none() {
                                return Event::Unsupervised(e);
                            }
                        }
                    }
                }
                () = std::future::pending(), if exited && self.listener.is_none() => {}
            }
        }
    }

    /// Kills everything in the sandbox: its init (which takes the pid namespace along) and,
    /// when there is one, the cgroup. Idempotent.
    pub fn kill(&self) {
        if self.exit.is_none() {
            if let Err(e) = sys::kill_pidfd(&self.spawned.pidfd) {
                tracing::warn!("failed to kill sandbox pid {}: {e}", self.spawned.pid);
            }
        }
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cg.kill() {
                tracing::warn!("{e}");
            }
        }
    }

    /// Kill, reap, teardown, the one way a sandbox ends: everything of it is gone afterwards
    /// (its processes, cgroup and uid lease; its network namespace goes back to the pool).
    pub async fn finish(mut self) -> Ended {
        self.kill();
        let exit = self.reap().await;
        let usage = self.teardown().await;
        Ended { exit, usage }
    }

    /// `finish` on a task of its own, for a sandbox nobody waits for (an unused spare). With no
    /// runtime left (the daemon is exiting), Drop still kills and reaps it.
    pub fn finish_detached(self) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(self.finish());
        }
    }

    /// Waits until the init has exited and reaps it.
    async fn reap(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = Some(self.wait_exit().await);
        }
        // A zygote's child: its status may come as EOF from a zygote that died, before the
        // kernel has finished killing this init. Its uid and namespace go back only once it has
        // exited (its pidfd is readable), and with it everything in its pid namespace.
        if matches!(self.reaper, Reaper::Zygote { .. }) {
            let exited = tokio::time::timeout(Duration::from_secs(10), self.pidfd.readable()).await;
            if !matches!(exited, Ok(Ok(_))) {
                tracing::error!("sandbox pid {} did not end within 10 s of its zygote's report", self.spawned.pid);
            }
        }
        self.exit
    }

    /// How the init ended, once it has: reaped by us, or as its zygote reports it. A failure
    /// to learn it is logged and answered as a kill (signal 0 for "unknown"). Cancel-safe: it
    /// waits for readiness, then reads without blocking.
    async fn wait_exit(&self) -> ExitStatus {
        let pid = self.spawned.pid;
        let got = match &self.reaper {
            Reaper::Daemon => loop {
                match self.pidfd.readable().await {
                    Ok(mut guard) => match sys::try_reap(&self.spawned.pidfd) {
                        Ok(Some(status)) => break Ok(status),
                        Ok(None) => guard.clear_ready(),
                        Err(e) => break Err(e),
                    },
                    Err(e) => break Err(e),
                }
            },
            Reaper::Zygote { reply, zygote, .. } => loop {
                match reply.readable().await {
                    Ok(mut guard) => match zygote::take_exit(reply.get_ref()) {
                        Ok(Some(status)) => break Ok(status),
                        Ok(None) => guard.clear_ready(),
                        Err(e) => {
                            // The zygote died (its pid namespace, and this init, with it).
                            zygote.kill();
                            break Err(e);
                        }
                    },
                    Err(e) => break Err(e),
                }
            },
        };
        got.unwrap_or_else(|e| {
            tracing::error!("failed to learn how sandbox pid {pid} ended: {e}");
            ExitStatus::Signaled(0)
        })
    }

    /// After the init is reaped: empty and remove the cgroup, give back the network
    /// namespace and the uid.
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
        // Everything of the sandbox is gone now (its pid namespace with its init, and the
        // cgroup is empty), so its network namespace holds nothing of it any more.
        if let Some((ns, pool)) = self.netns.take() {
            pool.give(ns);
        }
        self.egress_netns.take();
        self.uid.take();
        usage
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Only reached without `finish` if the task panicked: never leave a sandbox running.
        if self.exit.is_none() {
            reap_in_background(&self.spawned);
        }
        if let Some(mut cg) = self.cgroup.take() {
            let _ = cg.kill();
            let _ = cg.remove();
        }
    }
}

/// Kills a sandbox's init (its pid namespace goes with it) and reaps it on a thread of its own,
/// for paths that cannot await.
pub(super) fn reap_in_background(spawned: &Spawned) {
    if let Err(e) = sys::kill_pidfd(&spawned.pidfd) {
        tracing::warn!("failed to kill sandbox pid {}: {e}", spawned.pid);
    }
    if let Ok(pidfd) = spawned.pidfd.try_clone() {
        std::thread::spawn(move || {
            while let Ok(None) = sys::try_reap(&pidfd) {
                std::thread::sleep(Duration::from_millis(10));
            }
        });
    }
}

/// Waits for the child to exec (EOF on the error pipe) or report the step that failed.
async fn wait_for_exec(
    err_read: OwnedFd,
    prepared: &PreparedSandbox,
    returns_after_exec: bool,
) -> Result<(), SpawnError> {
    sys::set_nonblocking(&err_read).map_err(prepare_err("the error pipe"))?;
    let mut record = [0u8; ERROR_RECORD];
    let mut got = 0;
    if returns_after_exec {
        // clone3 returned only once the child exec'd past the point of no return or exited;
        // an exited child wrote its whole record (one write, under PIPE_BUF) first. So no
        // record now means exec, even if the child has not yet closed its end (which can
        // take a scheduling round and cost ~1 ms of waiting for EOF).
        match nix::unistd::read(err_read.as_raw_fd(), &mut record) {
            Ok(0) | Err(nix::errno::Errno::EAGAIN) => return Ok(()),
            Ok(ERROR_RECORD) => return Err(child_error(prepared, &record)),
            Ok(n) => got = n,
            Err(e) => return Err(SpawnError::Prepare { what: "the error pipe", source: e.into() }),
        }
    }
    let fd = sys::async_fd(err_read).map_err(prepare_err("the error pipe"))?;
    loop {
        let mut guard = fd.readable().await.map_err(prepare_err("the error pipe"))?;
        match nix::unistd::read(fd.get_ref().as_raw_fd(), &mut record[got..]) {
            Ok(0) if got == 0 => return Ok(()),
            Ok(0) => {
                return Err(SpawnError::Prepare {
                    what: "the error pipe",
                    source: io::Error::other("short error record"),
                })
            }
            Ok(n) => {
                got += n;
                if got == ERROR_RECORD {
                    return Err(child_error(prepared, &record));
                }
            }
            Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
            Err(e) => return Err(SpawnError::Prepare { what: "the error pipe", source: e.into() }),
        }
    }
}
