//! The sandbox from the parent's side: everything before the first await (uid lease, cgroup,
//! pipes, `ChildPlan`, clone3), waiting for the exec, and the end (kill, reap, cgroup
//! counters and removal, uid back).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::libc;
use tokio::io::unix::AsyncFd;

use super::Call;
use crate::cgi::{self, RequestMeta};
use crate::function::LandlockMode;
use crate::host::{Host, UidLease};
use crate::registry::Loaded;
use crate::sandbox::cgroup::{RequestCgroup, Usage};
use crate::sandbox::landlock::Level;
use crate::sandbox::namespaces::CLONE_FLAGS;
use crate::sandbox::netns::{self, NetnsPool};
use crate::sandbox::spawn::{self, cloexec_pipe, ExitStatus, Spawned, ERROR_RECORD};
use crate::sandbox::{child_error, CStringArray, ChildPlan, SpawnError};

/// A live sandbox and everything of it the parent holds.
pub(super) struct Sandbox {
    pub(super) spawned: Spawned,
    pub(super) pidfd: AsyncFd<OwnedFd>,
    cgroup: Option<RequestCgroup>,
    uid: Option<UidLease>,
    /// This sandbox's network namespace, back to the pool once everything in it is gone.
    netns: Option<(OwnedFd, Arc<NetnsPool>)>,
    /// How the init ended, once reaped.
    pub(super) exit: Option<ExitStatus>,
}

/// The parent's ends of a freshly started child.
pub(super) struct Started0 {
    pub(super) sandbox: Sandbox,
    pub(super) stdin: OwnedFd,
    pub(super) stdout: OwnedFd,
    pub(super) stderr: OwnedFd,
    pub(super) err_read: OwnedFd,
    pub(super) notify: OwnedFd,
}

pub(super) fn prepare_err(what: &'static str) -> impl FnOnce(io::Error) -> SpawnError {
    move |source| SpawnError::Prepare { what, source }
}

/// Everything before the first await: lease, cgroup, pipes, plan, clone3. Synchronous so
/// the plan's raw pointers never cross an await point.
pub(super) fn start_child(host: &Host, loaded: &Loaded, call: &Call, deadline_ms: u128) -> Result<Started0, SpawnError> {
    let f = &loaded.function;
    if f.landlock == LandlockMode::Required && loaded.sandbox.landlock.enforcement.level != Level::Full {
        return Err(SpawnError::Policy(format!("the function requires landlock, and this kernel gives {}", loaded.sandbox.landlock.enforcement)));
    }
    let template_fd = match &loaded.sandbox.template {
        Ok(fd) => fd.as_raw_fd(),
        Err(why) => return Err(SpawnError::Template(why.clone())),
    };
    // Fail closed: without the filter and its listener nothing stops or reports a deny-listed
    // call, and without the daemon's pidfd a sandbox could outlive a dead daemon unnoticed.
    if loaded.sandbox.seccomp.is_empty() {
        return Err(SpawnError::Policy("the seccomp layer is missing on this host".into()));
    }
    let Some(daemon_pidfd) = host.daemon_pidfd.as_ref() else {
        return Err(SpawnError::Policy("the daemon has no pidfd of its own (pidfd_open)".into()));
    };
    let pool = match (&host.netns, f.network) {
        (_, true) => None,
        (Some(pool), false) => Some(pool.clone()),
        (None, false) => return Err(SpawnError::Policy("network namespaces are missing on this host".into())),
    };
    let pooled_netns = pool.as_ref().and_then(|p| p.take());
    let uid = host.uids.lease().ok_or_else(|| SpawnError::Policy("every sandbox uid is in use".into()))?;
    let cgroup = match &host.cgroups {
        Some(tree) => Some(tree.create(&call.id, &f.limits).map_err(|e| SpawnError::Prepare { what: "the cgroup", source: io::Error::other(e.to_string()) })?),
        None => None,
    };
    let mut cleanup_cgroup = CgroupGuard(cgroup);
    let (stdin_r, stdin_w) = cloexec_pipe().map_err(prepare_err("stdin"))?;
    let (stdout_r, stdout_w) = cloexec_pipe().map_err(prepare_err("stdout"))?;
    let (stderr_r, stderr_w) = cloexec_pipe().map_err(prepare_err("stderr"))?;
    let (err_r, err_w) = cloexec_pipe().map_err(prepare_err("the error pipe"))?;
    let (notify_parent, notify_child) = spawn::socketpair().map_err(prepare_err("the seccomp socket"))?;
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
        // Never above the daemon's own hard limit: raising a hard limit takes
        // CAP_SYS_RESOURCE, so setrlimit would fail and stop every request. `faas check` and
        // the load log warn about such a function.
        (libc::RLIMIT_NOFILE, limit(f.limits.nofile.min(host_nofile_hard()))),
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
        clone_flags: CLONE_FLAGS
            | if cleanup_cgroup.as_ref().is_some() { libc::CLONE_NEWCGROUP as u64 } else { 0 }
            | if pool.is_some() && pooled_netns.is_none() { libc::CLONE_NEWNET as u64 } else { 0 },
        cgroup_fd: cleanup_cgroup.as_ref().and_then(|c| c.dir.as_ref()).map(|d| d.as_raw_fd()),
        netns_fd: pooled_netns.as_ref().map(|fd| fd.as_raw_fd()),
        stdio: [stdin_r.as_raw_fd(), stdout_w.as_raw_fd(), stderr_w.as_raw_fd()],
        err_pipe: err_w.as_raw_fd(),
        landlock_fd: ruleset.as_ref().map(|fd| fd.as_raw_fd()),
        landlock_tmp: loaded.sandbox.landlock.tmp_access,
        landlock_proc: loaded.sandbox.landlock.proc_access,
        notify_sock: Some(notify_child.as_raw_fd()),
        uid: uid.id,
        gid: uid.id,
        cap_last: host.cap_last,
        daemon_pidfd: daemon_pidfd.as_raw_fd(),
        ipc_limits: &loaded.sandbox.ipc_limits,
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
    // A namespace clone3 made is kept for the next sandbox; if the child is already gone it
    // took its namespace along, which is fine.
    let netns = match (pool, pooled_netns) {
        (Some(pool), Some(ns)) => Some((ns, pool)),
        (Some(pool), None) => netns::netns_of(spawned.pid).ok().map(|ns| (ns, pool)),
        (None, _) => None,
    };
    let pidfd = match spawned.pidfd.try_clone().and_then(spawn::async_fd) {
        Ok(fd) => fd,
        Err(e) => {
            // No task can watch a sandbox we cannot wait for: kill and reap it now.
            reap_in_background(&spawned);
            return Err(SpawnError::Prepare { what: "the pidfd", source: e });
        }
    };
    Ok(Started0 {
        sandbox: Sandbox { spawned, pidfd, cgroup: cleanup_cgroup.take(), uid: Some(uid), netns, exit: None },
        stdin: stdin_w,
        stdout: stdout_r,
        stderr: stderr_r,
        err_read: err_r,
        notify: notify_parent,
    })
}

/// This process's hard open-files limit.
fn host_nofile_hard() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(u64::MAX, |(_, hard)| hard)
}

/// Removes a request cgroup if set-up fails before the child owns it.
struct CgroupGuard(Option<RequestCgroup>);

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
    pub(super) fn kill(&self) {
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
    pub(super) async fn reap(&mut self) -> Option<ExitStatus> {
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
    pub(super) async fn teardown(&mut self) -> Option<Usage> {
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
        self.uid.take();
        usage
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Only reached without teardown if the task panicked: never leave a sandbox running.
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
fn reap_in_background(spawned: &Spawned) {
    if let Err(e) = spawn::kill_pidfd(&spawned.pidfd) {
        tracing::warn!("failed to kill sandbox pid {}: {e}", spawned.pid);
    }
    if let Ok(pidfd) = spawned.pidfd.try_clone() {
        std::thread::spawn(move || {
            while let Ok(None) = spawn::try_reap(&pidfd) {
                std::thread::sleep(Duration::from_millis(10));
            }
        });
    }
}

/// Waits for the child to exec (EOF on the error pipe) or report the step that failed.
pub(super) async fn wait_exec(err_read: OwnedFd, mounts: &[crate::sandbox::MountOp]) -> Result<(), SpawnError> {
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
