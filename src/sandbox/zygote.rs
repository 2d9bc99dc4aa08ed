//! The second way to start a request's sandbox: forked from a warm interpreter (a zygote)
//! instead of exec'd cold. The request gets the same sandbox: `Parts::acquire` takes its uid,
//! cgroup, network namespace, pipes and Landlock ruleset exactly as for a cold start, and the
//! zygote's child repeats child_main's steps in the same order, reporting a failed step on the
//! same error pipe. Only the process comes from elsewhere. Those steps are native code
//! (zygote/src/lib.rs, `libfaas_zygote.so`), which the daemon finds (`native_library`) and
//! sends to the zygote with its init message; without it no zygote starts and requests go cold.
//!
//! The zygote itself is started like a request, through `spawn::spawn`, with these differences,
//! each what forking a request's child needs:
//! - It keeps CAP_SYS_ADMIN (new namespaces, setns, mounts, sethostname), CAP_SYS_CHROOT (setns
//!   into a mount namespace), CAP_SETUID, CAP_SETGID (the request's uid) and CAP_SETPCAP (the
//!   request empties its bounding set), and stays uid 0 without a uid lease: moving a child into
//!   the request's cgroup (CLONE_INTO_CGROUP) takes write access to root-owned cgroup files.
//!   Every other capability is out of all its sets, as for a request.
//! - No Landlock: a Landlock-restricted process cannot mount (landlock(7)), and its children
//!   must mount their own `/tmp` and `/proc` before restricting themselves.
//! - Its seccomp filter is the request's, plus clone3, setns, unshare, mount, mount_setattr,
//!   sethostname and seccomp (`ZYGOTE_RULES`), with deny-listed calls answered by
//!   SECCOMP_RET_TRACE (ENOSYS here): it has no listener, because a child cannot stack a
//!   filter with a listener on one that has one, and a child's filter decides alone (policy.rs).
//! - It stays in the daemon's cgroup namespace (a namespace rooted at its own cgroup could not
//!   name the request's), in a cgroup of its own (`zygote-…`).
//! - Its network namespace is an empty one of its own, or the host's for a `network = "host"`
//!   function, whose children stay in it.
//!   It has its own pid, mount (a copy of the version's template, with its own `/tmp` and
//!   `/proc`), IPC and UTS namespaces, no_new_privs, the parent-death signal and the daemon's
//!   pidfd check, as a request has. It is pid 1 of its pid namespace, so its death takes every
//!   request it forked along.
//!
//! It runs only trusted code (the interpreter, the standard library, the wrapper and the
//! function file's `preload` list) and never a request: the function's module is imported in
//! the request's child, after every layer, unless the function file sets `preload_handler`.

use std::ffi::CString;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};

use super::cgroup::RequestCgroup;
use super::host::Host;
use super::running::{reap_in_background, Base, Launch, Parts, Reaper, Running};
use super::spawn::{self, CStringArray, Spawned, ERROR_RECORD};
use super::sys::{self, ExitStatus};
use super::{child_error, seccomp, ChildPlan, MountOp, Network, PreparedSandbox, SpawnError, Step};
use crate::config::Limits;
use crate::units::Bytes;

/// What one function version's zygote imports and serves.
pub struct ZygoteSpec<'a> {
    /// The function's name and version, for the log, the cgroup and `faas doctor`.
    pub name: &'a str,
    pub version: u64,
    /// The interpreter and the zygote script: `[python3, -I, -B, /faas/zygote.py]`.
    pub exe: CString,
    pub argv: Vec<CString>,
    /// `module.function`, imported from `/code` by each request's child.
    pub handler: &'a str,
    /// Modules of the interpreter's own to import in the zygote.
    pub preload: &'a [String],
    /// Import the function's own module in the zygote too (its top-level code then runs there).
    pub preload_handler: bool,
    /// The zygote's memory limit (its cgroup's memory.max; RLIMIT_DATA without cgroups).
    pub memory: u64,
    /// The function's limits: cpu and nofile for the zygote.
    pub limits: &'a Limits,
    /// The function's code compiled (bytecode.rs), for its requests' imports, and how many
    /// modules that holds.
    pub bytecode: Option<(OwnedFd, usize)>,
}

/// The environment variable that names a zygote's function and version.
pub const ZYGOTE_ENV: &str = "FAAS_ZYGOTE";

/// Capabilities a zygote keeps: see the module docs.
pub(super) const ZYGOTE_CAPS: u32 = 1 << 6 | 1 << 7 | 1 << 8 | 1 << 18 | 1 << 21;
/// How long a zygote may take to import its preloads and say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a zygote may take to fork a request's child; past it the zygote is stuck.
const FORK_TIMEOUT: Duration = Duration::from_secs(2);

/// The native child steps' file name.
pub const NATIVE_LIBRARY: &str = "libfaas_zygote.so";

/// Where the native library may be, in order: beside our executable (cargo's target/*/deps,
/// where building the daemon builds it, a dependency, first; then target/*/ itself), then our
/// prefix's lib/faas (make install: /usr/local/lib/faas; the .deb: /usr/lib/faas). deps first:
/// it is never older than its copy one level up.
pub fn native_library_candidates() -> Vec<PathBuf> {
    let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) else {
        return Vec::new();
    };
    let mut found = vec![dir.join("deps").join(NATIVE_LIBRARY), dir.join(NATIVE_LIBRARY)];
    if let Some(prefix) = dir.parent() {
        found.push(prefix.join("lib/faas").join(NATIVE_LIBRARY));
    }
    found
}

/// The native child steps' path, or why there are none.
pub fn native_library() -> Result<PathBuf, String> {
    let candidates = native_library_candidates();
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(format!("{NATIVE_LIBRARY} (the zygote's native child steps) is missing: looked for {}", looked.join(", ")))
}

/// A running zygote. Dropping the last reference kills it (and anything it forked that still
/// runs), reaps it and removes its cgroup.
pub struct Zygote {
    /// Its pid in the daemon's pid namespace.
    pub pid: i32,
    spawned: Option<Spawned>,
    ctl: OwnedFd,
    cgroup: Mutex<Option<RequestCgroup>>,
    #[allow(dead_code, reason = "held: its network namespace lives as long as it does")]
    netns: Option<OwnedFd>,
    started: Instant,
    served: AtomicU64,
    /// Its resident memory when it said it was ready.
    pub ready_rss: u64,
    /// How much of it was in huge pages, or why none are (zygote.py's collapse_huge_pages).
    pub ready_huge_pages: Result<u64, String>,
    /// Why the interpreter's code is not in a huge page, if it is not (zygote.py's
    /// text_in_huge_page).
    pub ready_no_huge_text: Option<String>,
    /// The function's modules its requests import compiled (bytecode.rs).
    pub compiled_modules: usize,
}

impl Zygote {
    /// Starts a zygote for `prepared` and waits until it has imported what it keeps warm.
    pub async fn start(host: &Host, prepared: &PreparedSandbox, spec: ZygoteSpec<'_>) -> Result<Zygote, SpawnError> {
        let Base { template_fd, daemon_pidfd } = Base::check(host, prepared)?;
        let err = |what| move |source| SpawnError::Prepare { what, source };
        // Never the steps in Python instead: one implementation of them.
        let native = native_library().map_err(SpawnError::Zygote)?;
        // std opens it O_CLOEXEC; the zygote gets it as an SCM_RIGHTS fd.
        let native = std::fs::File::open(&native)
            .map_err(|e| SpawnError::Zygote(format!("cannot open {}: {e}", native.display())))?;
        let filter =
            seccomp::build_filter(seccomp::Policy { host_network: prepared.network == Network::Host, zygote: true })
                .map_err(|e| SpawnError::Missing(e.to_string()))?;
        let netns = match prepared.network {
            Network::Host => None,
            Network::None | Network::Egress { .. } => {
                Some(sys::create_empty_netns().map_err(err("the zygote's network namespace"))?)
            }
        };
        let zlimits = Limits { memory: Bytes(spec.memory), pids: 8, ..spec.limits.clone() };
        let cgroup = match &host.cgroups {
            Some(tree) => Some(tree.create_named(&format!("zygote-{}-{}", spec.name, spec.version), &zlimits)?),
            None => None,
        };
        let (ctl, ctl_child) = sys::listener_socketpair().map_err(err("the zygote's control socket"))?;
        let (log_r, log_w) = sys::cloexec_pipe().map_err(err("the zygote's log pipe"))?;
        let (err_r, err_w) = sys::cloexec_pipe().map_err(err("the error pipe"))?;
        let limit = |v: u64| libc::rlimit { rlim_cur: v, rlim_max: v };
        let mut rlimits = vec![(libc::RLIMIT_CORE, limit(0))];
        if host.cgroups.is_none() {
            rlimits.push((libc::RLIMIT_DATA, limit(spec.memory)));
        }
        // A BLAS or OpenMP pool started at import would leave each forked child with its
        // threads missing and their locks held: the zygote refuses to serve with threads.
        // FAAS_ZYGOTE names it for `faas doctor`, which finds zygotes in /proc.
        let envp = [
            "OPENBLAS_NUM_THREADS=1".to_owned(),
            "OMP_NUM_THREADS=1".to_owned(),
            "MKL_NUM_THREADS=1".to_owned(),
            format!("{ZYGOTE_ENV}={} {}", spec.name, spec.version),
        ]
        .map(|s| CString::new(s).expect("names and digits hold no NUL"))
        .to_vec();
        // In a block of its own: the plan's raw pointers must not live across an await.
        let spawned = {
            let plan = ChildPlan {
                sandbox: prepared,
                template_fd,
                clone_flags: super::namespaces::CLONE_FLAGS,
                cgroup_fd: cgroup.as_ref().and_then(|c| c.dir.as_ref()).map(|d| d.as_raw_fd()),
                netns_fd: netns.as_ref().map(|fd| fd.as_raw_fd()),
                stdio: [ctl_child.as_raw_fd(), log_w.as_raw_fd(), log_w.as_raw_fd()],
                err_pipe: err_w.as_raw_fd(),
                landlock_fd: None,
                landlock_tmp: 0,
                landlock_proc: 0,
                notify_sock: ctl_child.as_raw_fd(),
                filter: &filter,
                listener: false,
                keep_caps: ZYGOTE_CAPS,
                uid: 0,
                gid: 0,
                cap_last: host.cap_last,
                daemon_pidfd,
                ipc_limits: &prepared.ipc_limits,
                changed_signals: host.changed_signals.get_or_init(sys::changed_signals),
                rlimits,
                exe: &spec.exe,
                argv: CStringArray::new(spec.argv.clone()),
                envp: CStringArray::new(envp),
            };
            spawn::spawn(&plan)
        };
        drop((ctl_child, log_w, err_w));
        let spawned = match spawned {
            Ok(s) => s,
            Err(e) => {
                if let Some(mut cg) = cgroup {
                    let _ = cg.remove();
                }
                return Err(e);
            }
        };
        let mut zygote = Zygote {
            pid: spawned.pid,
            spawned: Some(spawned),
            ctl,
            cgroup: Mutex::new(cgroup),
            netns,
            started: Instant::now(),
            served: AtomicU64::new(0),
            ready_rss: 0,
            ready_huge_pages: Ok(0),
            ready_no_huge_text: None,
            compiled_modules: spec.bytecode.as_ref().map_or(0, |(_, n)| *n),
        };
        forward_log(log_r, spec.name.to_owned());
        // Like a cold start's exec: clone3 returned after the exec or the failed step's record.
        let mut record = [0u8; ERROR_RECORD];
        if let Ok(ERROR_RECORD) = nix::unistd::read(err_r.as_raw_fd(), &mut record) {
            return Err(child_error(prepared, &record));
        }
        drop(err_r);
        let init = init_message(host, prepared, &spec);
        let mut fds = vec![template_fd, daemon_pidfd, native.as_raw_fd()];
        fds.extend(spec.bytecode.as_ref().map(|(fd, _)| fd.as_raw_fd()));
        send(&zygote.ctl, init.as_bytes(), &fds).map_err(err("the zygote's init message"))?;
        drop((native, spec.bytecode));
        let ctl = sys::async_fd(zygote.ctl.try_clone().map_err(err("the zygote's control socket"))?)
            .map_err(err("the zygote's control socket"))?;
        let answer = tokio::time::timeout(READY_TIMEOUT, async {
            loop {
                let mut guard = ctl.readable().await?;
                let mut buf = [0u8; 4096];
                match nix::sys::socket::recv(ctl.get_ref().as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                    Ok(n) => return Ok(buf[..n].to_vec()),
                    Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                    Err(e) => return Err(io::Error::from(e)),
                }
            }
        })
        .await;
        let answer = match answer {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return Err(SpawnError::Zygote(format!("no answer from the zygote: {e}"))),
            Err(_) => return Err(SpawnError::Zygote(format!("not ready after {READY_TIMEOUT:?}"))),
        };
        let answer: serde_json::Value = serde_json::from_slice(&answer)
            .map_err(|_| SpawnError::Zygote("the zygote ended before it was ready (see its log)".into()))?;
        if let Some(why) = answer.get("error").and_then(|e| e.as_str()) {
            return Err(SpawnError::Zygote(why.to_owned()));
        }
        zygote.ready_rss = answer.get("rss").and_then(|r| r.as_u64()).unwrap_or(0);
        zygote.ready_huge_pages = match answer.get("no_huge_pages").and_then(|e| e.as_str()) {
            Some(why) => Err(why.to_owned()),
            None => Ok(answer.get("huge_pages").and_then(|r| r.as_u64()).unwrap_or(0)),
        };
        zygote.ready_no_huge_text = answer.get("no_huge_text").and_then(|e| e.as_str()).map(str::to_owned);
        sys::set_nonblocking(&zygote.ctl).map_err(err("the zygote's control socket"))?;
        Ok(zygote)
    }

    /// Whether it still runs (and so can fork).
    pub fn alive(&self) -> bool {
        self.spawned.as_ref().is_some_and(|s| sys::pidfd_running(&s.pidfd))
    }

    /// Kills it, and with it every request it forked that still runs.
    pub fn kill(&self) {
        if let Some(spawned) = &self.spawned {
            let _ = sys::kill_pidfd(&spawned.pidfd);
        }
    }

    /// How long it has run.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// How many requests it has forked.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Its resident memory now, in bytes (0 once it is gone).
    pub fn rss(&self) -> u64 {
        proc_kib(&format!("/proc/{}/status", self.pid), "VmRSS:")
    }

    /// How much of its memory is in transparent huge pages (zygote.py's collapse_huge_pages).
    pub fn huge_pages(&self) -> u64 {
        proc_kib(&format!("/proc/{}/smaps_rollup", self.pid), "AnonHugePages:")
    }
}

/// A `NAME: N kB` line of a /proc file, in bytes (0 if it cannot be read).
fn proc_kib(path: &str, name: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

impl Drop for Zygote {
    fn drop(&mut self) {
        let Some(spawned) = self.spawned.take() else { return };
        reap_in_background(&spawned);
        let cgroup = self.cgroup.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut cg) = cgroup {
            std::thread::spawn(move || {
                let _ = cg.kill();
                for _ in 0..400 {
                    if !cg.populated() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                if let Err(e) = cg.remove() {
                    tracing::error!("{e}");
                }
            });
        }
    }
}

/// Starts one request's sandbox as a child of `zygote`: the same parts as a cold start, the
/// process forked from the warm interpreter. `SpawnError::Zygote` means the zygote could not
/// fork (it is killed if stuck): the caller may start the request cold instead.
///
/// A spare (`launch.spare`) is made ahead of its request: it applies every layer, then waits (its
/// `launch.envp` unused) until `Running::go` sends the request's environment; only then does
/// it import the handler's module and call it, as any warm request does.
pub async fn start_warm(
    host: &Host,
    prepared: &Arc<PreparedSandbox>,
    zygote: &Arc<Zygote>,
    launch: Launch<'_>,
) -> Result<Running, SpawnError> {
    let spare = launch.spare;
    let mut parts = Parts::acquire(host, prepared, &launch)?;
    parts.own_netns()?;
    let err = |what| move |source| SpawnError::Prepare { what, source };
    let (reply, reply_child) = sys::listener_socketpair().map_err(err("the zygote's reply socket"))?;
    let c = &parts.child;
    let mut fds: Vec<RawFd> = vec![
        reply_child.as_raw_fd(),
        c.stdin.as_raw_fd(),
        c.stdout.as_raw_fd(),
        c.stderr.as_raw_fd(),
        c.err.as_raw_fd(),
        c.notify.as_raw_fd(),
    ];
    fds.extend(parts.cgroup_fd());
    fds.extend(parts.netns_fd());
    fds.extend(c.ruleset.as_ref().map(|fd| fd.as_raw_fd()));
    let mut head = faas_zygote::Request { uid: parts.uid_id(), gid: parts.uid_id(), ..Default::default() };
    for (bit, on) in [
        (faas_zygote::REQ_CGROUP, parts.cgroup_fd().is_some()),
        (faas_zygote::REQ_NETNS, parts.netns_fd().is_some()),
        (faas_zygote::REQ_LANDLOCK, c.ruleset.is_some()),
        (faas_zygote::REQ_SPARE, spare),
    ] {
        if on {
            head.flags |= bit;
        }
    }
    if parts.rlimits.len() > head.rlimits.len() {
        return Err(SpawnError::Zygote(format!("{} rlimits, more than a zygote takes", parts.rlimits.len())));
    }
    for (slot, (resource, limit)) in head.rlimits.iter_mut().zip(&parts.rlimits) {
        *slot = faas_zygote::Rlimit { resource: *resource, pad: 0, value: limit.rlim_cur };
    }
    head.rlimits_len = parts.rlimits.len() as u32;
    let mut request = head.to_bytes();
    request.extend(env_block(&launch.envp));
    send(&zygote.ctl, &request, &fds).map_err(|e| match e.raw_os_error() {
        Some(libc::EMSGSIZE | libc::EAGAIN | libc::ENOBUFS) => {
            SpawnError::ZygoteBusy(format!("a request of {} bytes: {e}", request.len()))
        }
        _ => SpawnError::Zygote(format!("the zygote takes no request: {e}")),
    })?;
    drop(reply_child);
    let reply = sys::async_fd(reply).map_err(err("the zygote's reply socket"))?;
    let started = tokio::time::timeout(FORK_TIMEOUT, async {
        loop {
            let mut guard = reply.readable().await?;
            match sys::recv_with_fd(reply.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                other => return other,
            }
        }
    })
    .await;
    let (text, pidfd) = match started {
        Ok(Ok(got)) => got,
        Ok(Err(e)) => return Err(SpawnError::Zygote(format!("no answer from the zygote: {e}"))),
        Err(_) => {
            zygote.kill();
            return Err(SpawnError::Zygote(format!("the zygote did not fork within {FORK_TIMEOUT:?}; killed")));
        }
    };
    let text = String::from_utf8_lossy(&text);
    let pidfd = match (text.split_once(' '), pidfd) {
        (Some(("pid", _)), Some(fd)) => fd,
        (Some(("fail", errno)), _) => {
            return Err(SpawnError::Clone(io::Error::from_raw_os_error(errno.parse().unwrap_or(libc::EIO))));
        }
        (Some(("busy", most)), _) => return Err(SpawnError::ZygoteBusy(format!("{most} children already"))),
        _ => return Err(SpawnError::Zygote(format!("the zygote answered {text:?}"))),
    };
    zygote.served.fetch_add(1, Ordering::Relaxed);
    // Only for the log and a new network namespace: a child that already ended (a failed
    // step, reported on the error pipe) has none, and its namespace went with it.
    let pid = sys::pidfd_pid(&pidfd).unwrap_or(0);
    parts.into_running(prepared, Spawned { pid, pidfd }, Reaper::Zygote { reply, zygote: zygote.clone(), spare })
}

/// An environment block, as execve builds one: `NAME=value\0` each.
fn env_block(envp: &[CString]) -> Vec<u8> {
    envp.iter().flat_map(|e| e.as_bytes_with_nul().iter().copied()).collect()
}

/// A spare's request environment, on its go socket. Never empty (a CGI environment has
/// REQUEST_METHOD at least): an empty datagram would read as the daemon's letting go.
pub fn send_env(sock: &OwnedFd, envp: &[CString]) -> io::Result<()> {
    send(sock, &env_block(envp), &[])
}

/// The wait status a zygote sends once it has reaped a request's init. `Ok(None)`: not yet;
/// an error (EOF included) means the zygote is gone, and the init with it.
pub fn take_exit(reply: &OwnedFd) -> io::Result<Option<ExitStatus>> {
    let mut buf = [0u8; 64];
    match nix::sys::socket::recv(reply.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
        Ok(0) => Err(io::Error::other("the zygote closed the reply socket without an exit status")),
        Ok(n) => {
            let text = String::from_utf8_lossy(&buf[..n]);
            match text.strip_prefix("exit ").and_then(|s| s.parse::<i32>().ok()) {
                Some(status) => Ok(Some(decode_wait_status(status))),
                // The "pid" message is taken by start_warm; anything else is a broken zygote.
                None => Err(io::Error::other(format!("the zygote sent {text:?}"))),
            }
        }
        Err(nix::errno::Errno::EAGAIN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A wait(2) status as an `ExitStatus`.
fn decode_wait_status(status: i32) -> ExitStatus {
    if libc::WIFEXITED(status) {
        ExitStatus::Exited(libc::WEXITSTATUS(status))
    } else {
        ExitStatus::Signaled(libc::WTERMSIG(status))
    }
}

/// One datagram with these fds.
fn send(sock: &OwnedFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(data)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let n = sendmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &iov,
        if fds.is_empty() { &[] } else { &cmsg },
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    if n != data.len() {
        return Err(io::Error::other("short send"));
    }
    Ok(())
}

/// The init message: what every child of this zygote does, as zygote.py reads it.
fn init_message(host: &Host, prepared: &PreparedSandbox, spec: &ZygoteSpec) -> String {
    let s = |c: &Option<CString>| c.as_ref().map(|c| c.to_string_lossy().into_owned());
    let mounts: Vec<serde_json::Value> = prepared
        .request_mounts
        .iter()
        .map(|op| match op {
            MountOp::Mount { source, target, fstype, flags, data } => serde_json::json!({
                "source": s(source), "target": target.to_string_lossy(), "fstype": s(fstype),
                "flags": flags, "data": s(data),
            }),
            MountOp::ReadOnlyTree { target } => serde_json::json!({ "read_only_tree": target.to_string_lossy() }),
        })
        .collect();
    let filter: String = prepared
        .seccomp
        .iter()
        .flat_map(|i| {
            let mut b = Vec::with_capacity(8);
            b.extend(i.code.to_ne_bytes());
            b.push(i.jt);
            b.push(i.jf);
            b.extend(i.k.to_ne_bytes());
            b
        })
        .map(|x| format!("{x:02x}"))
        .collect();
    let steps: serde_json::Map<String, serde_json::Value> =
        Step::ALL.iter().map(|s| (format!("{s:?}"), serde_json::Value::from(*s as u32))).collect();
    serde_json::json!({
        "steps": steps,
        "hostname": prepared.hostname.to_string_lossy(),
        "mounts": mounts,
        "ipc_limits": prepared.ipc_limits.iter()
            .map(|(p, v)| (p.to_string_lossy().into_owned(), String::from_utf8_lossy(v).into_owned()))
            .collect::<Vec<_>>(),
        "cap_last": host.cap_last,
        "landlock": [prepared.landlock.tmp_access, prepared.landlock.proc_access],
        "filter": filter,
        "clone_flags": super::namespaces::CLONE_FLAGS
            | if host.cgroups.is_some() { libc::CLONE_NEWCGROUP as u64 } else { 0 },
        "code_dir": "/code",
        "handler": spec.handler,
        "preload": spec.preload,
        "preload_handler": spec.preload_handler,
        "huge_pages": !thp_never(),
    })
    .to_string()
}

/// Whether the host's transparent huge pages are `never`: MADV_COLLAPSE would make them all
/// the same, but an operator who turned them off meant it (zygote.py then collapses nothing).
fn thp_never() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").is_ok_and(|s| s.contains("[never]"))
}

/// The zygote's stderr, line by line, into the daemon's log.
fn forward_log(log: OwnedFd, name: String) {
    use tokio::io::AsyncBufReadExt;
    let Ok(pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(log) else { return };
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::warn!(function = %name, "zygote: {line}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// zygote.py names the kernel's constants itself; each must be libc's.
    #[test]
    fn zygote_py_constants_are_the_kernels() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/wrappers/zygote.py")).unwrap();
        let value = |name: &str| -> i64 {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{name} = ")))
                .unwrap_or_else(|| panic!("zygote.py has no {name}"));
            let v = line.split_once(" = ").unwrap().1.trim();
            let parsed = if let Some(h) = v.strip_prefix("0x") {
                i64::from_str_radix(h, 16)
            } else if let Some(o) = v.strip_prefix("0o") {
                i64::from_str_radix(o, 8)
            } else {
                v.parse()
            };
            parsed.unwrap_or_else(|_| panic!("{name} = {v} is not a number"))
        };
        let expected: &[(&str, i64)] = &[
            ("MAX_RLIMITS", faas_zygote::MAX_RLIMITS as i64),
            ("REQ_SPARE", faas_zygote::REQ_SPARE as i64),
            ("PR_CAPBSET_READ", libc::PR_CAPBSET_READ as i64),
            ("PR_SET_DUMPABLE", libc::PR_SET_DUMPABLE as i64),
            ("PR_SET_MM", libc::PR_SET_MM as i64),
            ("PR_SET_MM_MAP", libc::PR_SET_MM_MAP as i64),
            ("PR_SET_NAME", libc::PR_SET_NAME as i64),
            ("MADV_HUGEPAGE", libc::MADV_HUGEPAGE as i64),
            ("MADV_NOHUGEPAGE", libc::MADV_NOHUGEPAGE as i64),
            ("MREMAP_MAYMOVE", libc::MREMAP_MAYMOVE as i64),
            ("MREMAP_FIXED", libc::MREMAP_FIXED as i64),
            ("PR_SET_VMA", libc::PR_SET_VMA as i64),
            ("PR_SET_VMA_ANON_NAME", libc::PR_SET_VMA_ANON_NAME as i64),
            ("MADV_COLLAPSE", libc::MADV_COLLAPSE as i64),
        ];
        for &(name, want) in expected {
            assert_eq!(value(name), want, "zygote.py's {name}");
        }
    }

    /// zygote.py's ctypes structures and the library's agree, field by field (what the zygote
    /// checks at start).
    #[test]
    fn zygote_py_and_the_native_library_agree_on_their_structures() {
        let lib = native_library().expect("cargo builds the library with the daemon (a dependency)");
        let script = format!(
            "import ctypes, sys\nsys.path.insert(0, {wrappers:?})\nimport zygote\n\
             print(zygote.layout_mismatch(ctypes.PyDLL({lib:?})))\n",
            wrappers = concat!(env!("CARGO_MANIFEST_DIR"), "/wrappers"),
            lib = lib.to_str().unwrap(),
        );
        let out = std::process::Command::new("python3").args(["-I", "-B", "-c", &script]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(stdout.trim(), "None", "the layouts differ");
    }

    #[test]
    fn wait_statuses_decode() {
        assert_eq!(decode_wait_status(0), ExitStatus::Exited(0));
        assert_eq!(decode_wait_status(3 << 8), ExitStatus::Exited(3));
        assert_eq!(decode_wait_status(9), ExitStatus::Signaled(9));
    }
}
