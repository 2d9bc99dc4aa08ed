//! The parent's side of the kernel interfaces a sandbox uses: pipes and the listener socket,
//! receiving the seccomp listener, reaping and killing through pidfds, seccomp notifications,
//! the Landlock ABI, network and mount namespaces made on throwaway threads. nix's safe forms
//! where it has one; raw calls (with a `SAFETY:` note each) only where it has none:
//! `pidfd_open`, `pidfd_send_signal`, `SECCOMP_IOCTL_NOTIF_RECV`, the Landlock ABI query, a
//! query-only `sigaction`, `PR_CAPBSET_DROP` (the daemon's own bounding set, at its start),
//! registering an fd with tokio, and owning the fd `openat2` returns (for deploy's unpacking,
//! which is no sandbox's). Nothing here runs in a child.

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::libc;
use nix::sched::{unshare, CloneFlags};
use nix::sys::socket::{recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};

use super::spawn::apply_mount;
use super::MountOp;

/// openat2(2) of `path` relative to `dir`, resolved as `resolve` says (RESOLVE_BENEATH,
/// RESOLVE_NO_SYMLINKS: a deploy writes an upload's entries with these, so no entry can
/// reach outside its version directory or through a link); the new fd, owned.
pub fn openat2(
    dir: &impl AsFd,
    path: &std::path::Path,
    flags: OFlag,
    mode: nix::sys::stat::Mode,
    resolve: nix::fcntl::ResolveFlag,
) -> io::Result<OwnedFd> {
    let how = nix::fcntl::OpenHow::new().flags(flags | OFlag::O_CLOEXEC).mode(mode).resolve(resolve);
    let fd = nix::fcntl::openat2(dir.as_fd().as_raw_fd(), path, how)?;
    // SAFETY: openat2 just returned this fd; nothing else has or closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// This process's hard open-files limit, or None when it is unlimited (or unreadable): no
/// sandbox may be given more, since raising a hard limit takes CAP_SYS_RESOURCE.
pub fn nofile_hard_limit() -> Option<u64> {
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).ok()?;
    (hard != libc::RLIM_INFINITY).then_some(hard)
}

/// Makes a pipe whose both ends are close-on-exec: (read, write).
pub fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// A connected pair of unix seqpacket sockets, both close-on-exec: the child sends its
/// seccomp listener on one, the parent receives it on the other.
pub fn listener_socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?)
}

/// Sets O_NONBLOCK on one end of a pipe (each end is its own open file description).
pub fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Receives one fd sent with SCM_RIGHTS on `sock`, without blocking (WouldBlock if none yet).
/// `Ok(None)` when a message came without one: MSG_CTRUNC, we were out of fds.
pub fn recv_fd(sock: &OwnedFd) -> io::Result<Option<OwnedFd>> {
    recv_with_fd(sock).map(|(_, fd)| fd)
}

/// Whether the process behind a pidfd still runs (its pidfd is readable once it has exited).
pub fn pidfd_running(pidfd: &OwnedFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
}

/// The pid (in our pid namespace) of the process behind a pidfd, from its fdinfo.
pub fn pidfd_pid(pidfd: &OwnedFd) -> io::Result<i32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:")?.trim().parse::<i32>().ok())
        .filter(|&pid| pid > 0)
        .ok_or_else(|| io::Error::other("the process behind the pidfd is gone"))
}

/// One datagram and the first fd that came with it (any others are closed; none when the
/// kernel cut them, MSG_CTRUNC: we were out of fds), without blocking; EOF is an error.
pub fn recv_with_fd(sock: &OwnedFd) -> io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut buf = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )?;
    let mut first = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for &raw in &fds {
                // SAFETY: the kernel installed these fds for us alone with this message.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                first.get_or_insert(owned);
            }
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        first = None;
    }
    let n = msg.bytes;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the socket"));
    }
    Ok((buf[..n].to_vec(), first))
}

/// How a child ended, from waitid(2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// exit(code).
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

/// Reaps the child behind `pidfd` without blocking; `None` if it has not exited yet.
pub fn try_reap(pidfd: &OwnedFd) -> io::Result<Option<ExitStatus>> {
    match waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG)? {
        WaitStatus::Exited(_, code) => Ok(Some(ExitStatus::Exited(code))),
        WaitStatus::Signaled(_, sig, _) => Ok(Some(ExitStatus::Signaled(sig as i32))),
        _ => Ok(None),
    }
}

/// Sends SIGKILL through a pidfd: no pid reuse race, and to a namespace's init it ends the
/// whole namespace (pid_namespaces(7)). Already dead is fine.
pub fn kill_pidfd(pidfd: &OwnedFd) -> io::Result<()> {
    // SAFETY: pidfd is a live pidfd; no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 && Errno::last() != Errno::ESRCH {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pidfd for this process (pidfd_open(2)): children poll it to learn whether we died.
pub fn pidfd_self() -> io::Result<OwnedFd> {
    let pid = std::process::id() as libc::pid_t;
    // SAFETY: pidfd_open with our own pid and no flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Creates a network namespace with nothing in it, held by the returned fd. It is made on a
/// throwaway thread because unshare(CLONE_NEWNET) changes only the calling thread.
pub fn create_empty_netns() -> io::Result<OwnedFd> {
    std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET)?;
        Ok(File::open("/proc/thread-self/ns/net")?.into())
    })
    .join()
    .map_err(|_| io::Error::other("netns thread panicked"))?
}

/// Creates the network namespace of one `network = "egress"` sandbox, on a throwaway thread
/// like `create_empty_netns`: loopback brought up, and a TCP socket listening on
/// 127.0.0.1:`port` in it, which the daemon serves (egress/) while the sandbox runs. A socket
/// stays in the namespace it was made in, so the listener needs no process in there.
/// Returns (the namespace, the listener).
pub fn create_egress_netns(port: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET)?;
        let ns: OwnedFd = File::open("/proc/thread-self/ns/net")?.into();
        set_loopback_up()?;
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))?;
        Ok((ns, listener.into()))
    })
    .join()
    .map_err(|_| io::Error::other("netns thread panicked"))?
}

/// Brings `lo` up in this thread's network namespace (netdevice(7): SIOCGIFFLAGS, then
/// SIOCSIFFLAGS with IFF_UP); without it 127.0.0.1 is not an address there.
fn set_loopback_up() -> io::Result<()> {
    let sock = nix::sys::socket::socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    // SAFETY: an all-zero ifreq is valid: an empty name and a zero union.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills req's flags for the NUL-terminated name in it; req outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req as *mut libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS just wrote the flags member of the union, so reading it is defined.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the name and flags from req, which outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req as *const libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Builds a function version's template mount namespace: on a throwaway thread (mount
/// namespaces are per task; CLONE_FS too, so the daemon's own root is untouched) it unshares
/// a new mount namespace, runs `ops` (which start by making `/` private and bind the
/// skeleton `root` onto itself), pivots into `root` and detaches the host's tree. What is
/// left is the sandbox's read-only root and nothing else; children setns into it and take a
/// private copy (namespaces.rs). `files` are written after `ops` (into the secrets tmpfs
/// they mount; read-only to everyone, mode 0444), then `seal` runs (which makes that tmpfs
/// read-only): the files exist only in this namespace, never on a host file system.
pub fn create_mount_template(
    ops: &[MountOp],
    files: &[(std::path::PathBuf, &[u8])],
    seal: &[MountOp],
    root: &CStr,
) -> io::Result<OwnedFd> {
    let fail = |what: String| move |e: Errno| io::Error::new(io::Error::from(e).kind(), format!("{what}: {e}"));
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS)
                    .map_err(fail("failed to unshare a mount namespace".into()))?;
                // Opened while /proc is still reachable; it names the namespace, not a path.
                let ns: OwnedFd = File::open("/proc/thread-self/ns/mnt")
                    .map_err(|e| io::Error::new(e.kind(), format!("failed to open the template mount namespace: {e}")))?
                    .into();
                for op in ops {
                    if apply_mount(op) < 0 {
                        return Err(fail(format!("failed to {}", op.describe()))(Errno::last()));
                    }
                }
                for (path, bytes) in files {
                    use std::io::Write as _;
                    use std::os::unix::fs::OpenOptionsExt as _;
                    let write = || {
                        std::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o444)
                            .open(path)?
                            .write_all(bytes)
                    };
                    // The path, never the bytes.
                    write()
                        .map_err(|e| io::Error::new(e.kind(), format!("failed to write {}: {e}", path.display())))?;
                }
                for op in seal {
                    if apply_mount(op) < 0 {
                        return Err(fail(format!("failed to {}", op.describe()))(Errno::last()));
                    }
                }
                // pivot_root(".", ".") stacks the old root on the new one; MNT_DETACH drops it.
                let pivot = || -> nix::Result<()> {
                    nix::unistd::chdir(root)?;
                    nix::unistd::pivot_root(".", ".")?;
                    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
                };
                pivot().map_err(fail(format!("failed to pivot into {}", root.to_string_lossy())))?;
                Ok(ns)
            })
            .join()
            .map_err(|_| io::Error::other("the mount template thread panicked"))?
    })
}

/// Drops from this thread's capability bounding set every capability up to `cap_last` but
/// those in `keep` (a mask of the first 32). The bounding set limits what an execve may grant
/// (and what capset may add to the inheritable set), never what this process holds, and is
/// inherited by every thread and child made after: called before any other thread exists.
/// Stops at the first failure (EPERM without CAP_SETPCAP).
pub fn narrow_bounding_set(keep: u32, cap_last: u32) -> io::Result<()> {
    for cap in super::spawn::caps_to_drop(keep, cap_last) {
        // SAFETY: PR_CAPBSET_DROP takes a capability number; it changes only this thread's creds.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap)) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The signals whose disposition is not the default in this process now (handlers and
/// SIG_IGN): what a child must reset. Read in the parent, never in a child.
pub fn changed_signals() -> Vec<libc::c_int> {
    (1..=64)
        .filter(|&sig| sig != libc::SIGKILL && sig != libc::SIGSTOP)
        .filter(|&sig| {
            // SAFETY: an all-zero sigaction is a valid out-parameter; no new action is set.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: querying only (NULL act); glibc refuses its internal signals with EINVAL.
            let rc = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
            rc == 0 && old.sa_sigaction != libc::SIG_DFL
        })
        .collect()
}

/// The kernel's Landlock ABI version (landlock_create_ruleset(2) with
/// LANDLOCK_CREATE_RULESET_VERSION), or 0 when Landlock is missing or disabled.
pub fn landlock_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: a NULL attr with size 0 and the VERSION flag only queries the ABI.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    v.max(0) as i32
}

/// `struct seccomp_notif` (seccomp_unotify(2)).
#[repr(C)]
struct SeccompNotif {
    id: u64,
    pid: u32,
    flags: u32,
    nr: libc::c_int,
    arch: u32,
    instruction_pointer: u64,
    args: [u64; 6],
}

/// SECCOMP_IOCTL_NOTIF_RECV: _IOWR('!', 0, struct seccomp_notif).
const SECCOMP_IOCTL_NOTIF_RECV: libc::c_ulong = 0xc050_2100;

/// What a seccomp listener has for us.
#[derive(Debug, PartialEq, Eq)]
pub enum Notification {
    /// A refused syscall: its number and AUDIT_ARCH_* value.
    Syscall(i64, u32),
    /// Nothing yet.
    Nothing,
    /// Every task of the filter is gone: nothing will ever come.
    Gone,
}

/// Takes one pending notification from a seccomp listener, never blocking. The caller kills
/// the sandbox, so the call is never answered.
///
/// SECCOMP_IOCTL_NOTIF_RECV ignores O_NONBLOCK and, on some kernels (6.1), waits for good once
/// the filter's last task has gone, which polls as HUP — "readable" to an event loop. So it is
/// only called when poll(2) says POLLIN: a notification is queued, and the request semaphore
/// it raised stays up even if its task dies first (RECV then answers ENOENT).
pub fn take_notification(listener: &OwnedFd) -> io::Result<Notification> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO)?;
    let revents = fds[0].revents().unwrap_or(PollFlags::empty());
    if !revents.contains(PollFlags::POLLIN) {
        let gone = revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL);
        return Ok(if gone { Notification::Gone } else { Notification::Nothing });
    }
    // SAFETY: seccomp_unotify(2) requires a zeroed struct; all-zero is a valid SeccompNotif.
    let mut notif: SeccompNotif = unsafe { std::mem::zeroed() };
    // SAFETY: listener is a seccomp listener fd and notif a correctly sized out-parameter.
    let rc = unsafe { libc::ioctl(listener.as_raw_fd(), SECCOMP_IOCTL_NOTIF_RECV, &mut notif as *mut SeccompNotif) };
    match rc {
        0 => Ok(Notification::Syscall(i64::from(notif.nr), notif.arch)),
        _ if Errno::last() == Errno::ENOENT => Ok(Notification::Nothing),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Registers an owned fd with the tokio reactor.
pub fn async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd stays open and refers to the same file description until the AsyncFd
    // that owns it is dropped, and as_raw_fd always returns that one fd.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}
