//! The warm Python zygote's request loop and child steps, in native code (issue 11).
//!
//! wrappers/zygote.py loads this library once, at the zygote's start, builds the plan, and
//! hands over to `faas_serve`, which returns only in a child (with every layer on) or when the
//! daemon lets go. Done in Python, the loop and every step wrote to refcounts and dicts on
//! pages the children share with the zygote, and each written page was a copy-on-write fault,
//! in the zygote and in the child. Here the child touches only its own stack and the plan, and
//! the zygote only the plan, the request buffer and its list of children.
//!
//! The steps are spawn.rs's child_main, in the same order, with the same `Step` numbers and
//! indices in the 12-byte error record (step, index, errno), so the daemon reads a warm child's
//! failure exactly as a cold one's: Stdio, Signals (the mask: the zygote changed no
//! disposition, and blocks SIGCHLD and SIGINT in `faas_serve`), Session, NetNs, Hostname,
//! MountNs, Mount, Chdir, IpcLimits, CapBound, Groups, Gid, Uid, Caps, ParentDeath, NoNewPrivs,
//! Landlock, CloseFds, Seccomp, SendListener, Rlimit. On the first failure the record goes to
//! the error pipe and the process exits 127. What follows (the environment, dumpable, closing
//! the error pipe as the "exec") stays in zygote.py.
//!
//! The child's steps make raw syscalls only: no allocation, no std I/O, and nothing that can
//! panic (no indexing, no unwrap, no overflowing arithmetic): a panic would abort the process
//! (it cannot unwind out of an `extern "C"` function) without the error record. The whole crate is unsafe by nature; every unsafe block says why it holds.
//!
//! The plan's layout is checked by zygote.py at load (`faas_layout`), field by field against its
//! ctypes structures: a mismatch and the zygote does not start.

pub mod arenas;

use core::ffi::{c_char, c_int, c_long};
use core::mem::{offset_of, size_of};

/// The steps of a sandbox's child, in order: a failure names one of them, by its number, in the
/// 12-byte error record (step, index, errno). One list for the daemon's cold child
/// (src/sandbox/spawn.rs: all of them) and the zygote's (`run`: Stdio through Rlimit; zygote.py
/// reports Exec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// dup2 of the stdio pipes.
    Stdio = 1,
    /// Signal mask and dispositions.
    Signals,
    /// setsid.
    Session,
    /// setns into the network namespace.
    NetNs,
    /// sethostname.
    Hostname,
    /// Joining the template mount namespace and unsharing a copy of it.
    MountNs,
    /// One of this request's own mounts (the index says which).
    Mount,
    /// chdir to /code.
    Chdir,
    /// The IPC namespace's SysV limits (without a memory cgroup).
    IpcLimits,
    /// Emptying the capability bounding set.
    CapBound,
    /// setgroups.
    Groups,
    /// setresgid.
    Gid,
    /// setresuid.
    Uid,
    /// Clearing inheritable and ambient capabilities.
    Caps,
    /// PR_SET_PDEATHSIG and the check that the daemon still lives.
    ParentDeath,
    /// PR_SET_NO_NEW_PRIVS.
    NoNewPrivs,
    /// landlock_restrict_self.
    Landlock,
    /// close_range.
    CloseFds,
    /// Installing the seccomp filter.
    Seccomp,
    /// Sending the seccomp listener to the parent.
    SendListener,
    /// setrlimit.
    Rlimit,
    /// execve (for a warm child: what stands for it, in zygote.py).
    Exec,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 22] = {
        use Step::*;
        [
            Stdio,
            Signals,
            Session,
            NetNs,
            Hostname,
            MountNs,
            Mount,
            Chdir,
            IpcLimits,
            CapBound,
            Groups,
            Gid,
            Uid,
            Caps,
            ParentDeath,
            NoNewPrivs,
            Landlock,
            CloseFds,
            Seccomp,
            SendListener,
            Rlimit,
            Exec,
        ]
    };

    /// The step an error record names.
    pub fn from_u32(v: u32) -> Option<Step> {
        Step::ALL.into_iter().find(|s| *s as u32 == v)
    }
}

impl core::fmt::Display for Step {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        let s = match self {
            Step::Stdio => "set up stdio",
            Step::Signals => "reset signals",
            Step::NetNs => "join the sandbox's network namespace",
            Step::Hostname => "set the hostname",
            Step::MountNs => "enter a copy of the function's mount namespace",
            Step::Mount => "mount",
            Step::Chdir => "enter /code",
            Step::Rlimit => "set rlimits",
            Step::CapBound => "drop the capability bounding set",
            Step::Groups => "drop supplementary groups",
            Step::Gid => "switch to the sandbox gid",
            Step::Uid => "switch to the sandbox uid",
            Step::Caps => "clear capabilities",
            Step::NoNewPrivs => "set no_new_privs",
            Step::Landlock => "apply the landlock ruleset",
            Step::CloseFds => "close inherited fds",
            Step::Seccomp => "install the seccomp filter",
            Step::SendListener => "hand over the seccomp listener",
            Step::Exec => "exec the wrapper",
            Step::Session => "start a new session",
            Step::IpcLimits => "set the ipc namespace limits",
            Step::ParentDeath => "arm the parent-death signal",
        };
        f.write_str(s)
    }
}

/// One of the request's own mounts (`MountOp` in src/sandbox/mod.rs).
#[repr(C)]
pub struct MountOp {
    /// 0: mount(2) with the four strings and `flags`; 1: make `target` read-only, nosuid and
    /// nodev, recursively (mount_setattr(2)).
    pub kind: u32,
    pub pad: u32,
    pub flags: u64,
    /// NUL-terminated, or NULL (not `target`).
    pub source: *const c_char,
    pub target: *const c_char,
    pub fstype: *const c_char,
    pub data: *const c_char,
}

/// One SysV IPC limit, written to its file under the child's own `/proc`.
#[repr(C)]
pub struct IpcLimit {
    /// NUL-terminated.
    pub path: *const c_char,
    pub value: *const u8,
    pub len: usize,
}

/// One resource limit, soft and hard alike.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rlimit {
    pub resource: u32,
    pub pad: u32,
    pub value: u64,
}

/// Everything the child's steps read. zygote.py builds the init-time part once; `faas_serve`
/// fills in the request's part before clone3; every pointer stays valid in the child (its
/// copy of the zygote's memory). An fd of -1 means "none".
#[repr(C)]
pub struct Plan {
    // The request's.
    /// stdin, stdout, stderr: dup2'ed onto 0, 1, 2.
    pub stdio: [c_int; 3],
    /// The error pipe: one record on a failed step.
    pub err: c_int,
    /// The socket the seccomp listener goes to.
    pub notify: c_int,
    /// The request's network namespace, or -1 (the zygote's own, or the host's).
    pub netns: c_int,
    /// The Landlock ruleset the daemon made, or -1.
    pub ruleset: c_int,
    pub uid: u32,
    pub gid: u32,
    pub pad: u32,
    pub rlimits: *const Rlimit,
    pub rlimits_len: usize,
    // The zygote's, for every request.
    /// The function version's template mount namespace.
    pub template: c_int,
    /// A pidfd of the daemon: readable once it has exited.
    pub daemon_pidfd: c_int,
    pub hostname: *const u8,
    pub hostname_len: usize,
    pub mounts: *const MountOp,
    pub mounts_len: usize,
    pub ipc_limits: *const IpcLimit,
    pub ipc_limits_len: usize,
    /// The capabilities left in the zygote's bounding set: dropping them empties it.
    pub caps: *const u32,
    pub caps_len: usize,
    /// Landlock access rights for the child's own `/tmp` and `/proc`.
    pub landlock_tmp: u64,
    pub landlock_proc: u64,
    /// The request's seccomp filter: `filter_len` sock_filter instructions.
    pub filter: *const libc::sock_filter,
    pub filter_len: usize,
    // Set by faas_serve, read by no step: CLOCK_MONOTONIC when the request's message was read
    // and just before clone3, for bench/zygote_timed.py's profile of a warm set-up (two vDSO
    // reads a request).
    pub received_ns: u64,
    pub cloned_ns: u64,
}

/// How many rlimits a request may carry (the daemon sends at most five).
pub const MAX_RLIMITS: usize = 8;
/// `Request::flags`: which optional fds follow the six every request has, in this order.
pub const REQ_CGROUP: u32 = 1;
pub const REQ_NETNS: u32 = 2;
pub const REQ_LANDLOCK: u32 = 4;
/// The request is a spare's: its layers go on now, its request comes later (zygote.py).
pub const REQ_SPARE: u32 = 8;

/// A request's fixed head, as the daemon sends it on the zygote's control socket; the
/// environment block (`NAME=value\0` each, as execve's) follows it. With it come the fds: the
/// reply socket, stdin, stdout, stderr, the error pipe, the seccomp socket, then the cgroup
/// directory, network namespace and Landlock ruleset as `flags` says.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Request {
    pub uid: u32,
    pub gid: u32,
    pub flags: u32,
    pub rlimits_len: u32,
    pub rlimits: [Rlimit; MAX_RLIMITS],
}

impl Request {
    /// Its bytes on the wire: the fields in order, native-endian, no padding (there is none).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(size_of::<Request>());
        for word in [self.uid, self.gid, self.flags, self.rlimits_len] {
            out.extend_from_slice(&word.to_ne_bytes());
        }
        for r in &self.rlimits {
            out.extend_from_slice(&r.resource.to_ne_bytes());
            out.extend_from_slice(&r.pad.to_ne_bytes());
            out.extend_from_slice(&r.value.to_ne_bytes());
        }
        out
    }

    /// The head of `bytes`, or None if they are too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Request> {
        let head = bytes.get(..size_of::<Request>())?;
        let (words, rest) = head.split_at(16);
        let u32_at =
            |b: &[u8], i: usize| -> Option<u32> { Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?)) };
        let mut req = Request {
            uid: u32_at(words, 0)?,
            gid: u32_at(words, 4)?,
            flags: u32_at(words, 8)?,
            rlimits_len: u32_at(words, 12)?,
            rlimits: [Rlimit::default(); MAX_RLIMITS],
        };
        for (r, chunk) in req.rlimits.iter_mut().zip(rest.chunks_exact(size_of::<Rlimit>())) {
            r.resource = u32_at(chunk, 0)?;
            r.pad = u32_at(chunk, 4)?;
            r.value = u64::from_ne_bytes(chunk.get(8..16)?.try_into().ok()?);
        }
        Some(req)
    }

    /// How many fds come with it.
    pub fn fds(&self) -> usize {
        6 + [REQ_CGROUP, REQ_NETNS, REQ_LANDLOCK].iter().filter(|&&bit| self.flags & bit != 0).count()
    }
}

/// Every struct's size and every field's offset, by name: what zygote.py compares its ctypes
/// structures with.
static LAYOUT: &[(&core::ffi::CStr, usize)] = &[
    (c"Plan", size_of::<Plan>()),
    (c"Plan.stdio", offset_of!(Plan, stdio)),
    (c"Plan.err", offset_of!(Plan, err)),
    (c"Plan.notify", offset_of!(Plan, notify)),
    (c"Plan.netns", offset_of!(Plan, netns)),
    (c"Plan.ruleset", offset_of!(Plan, ruleset)),
    (c"Plan.uid", offset_of!(Plan, uid)),
    (c"Plan.gid", offset_of!(Plan, gid)),
    (c"Plan.pad", offset_of!(Plan, pad)),
    (c"Plan.rlimits", offset_of!(Plan, rlimits)),
    (c"Plan.rlimits_len", offset_of!(Plan, rlimits_len)),
    (c"Plan.template", offset_of!(Plan, template)),
    (c"Plan.daemon_pidfd", offset_of!(Plan, daemon_pidfd)),
    (c"Plan.hostname", offset_of!(Plan, hostname)),
    (c"Plan.hostname_len", offset_of!(Plan, hostname_len)),
    (c"Plan.mounts", offset_of!(Plan, mounts)),
    (c"Plan.mounts_len", offset_of!(Plan, mounts_len)),
    (c"Plan.ipc_limits", offset_of!(Plan, ipc_limits)),
    (c"Plan.ipc_limits_len", offset_of!(Plan, ipc_limits_len)),
    (c"Plan.caps", offset_of!(Plan, caps)),
    (c"Plan.caps_len", offset_of!(Plan, caps_len)),
    (c"Plan.landlock_tmp", offset_of!(Plan, landlock_tmp)),
    (c"Plan.landlock_proc", offset_of!(Plan, landlock_proc)),
    (c"Plan.filter", offset_of!(Plan, filter)),
    (c"Plan.filter_len", offset_of!(Plan, filter_len)),
    (c"Plan.received_ns", offset_of!(Plan, received_ns)),
    (c"Plan.cloned_ns", offset_of!(Plan, cloned_ns)),
    (c"MountOp", size_of::<MountOp>()),
    (c"MountOp.kind", offset_of!(MountOp, kind)),
    (c"MountOp.pad", offset_of!(MountOp, pad)),
    (c"MountOp.flags", offset_of!(MountOp, flags)),
    (c"MountOp.source", offset_of!(MountOp, source)),
    (c"MountOp.target", offset_of!(MountOp, target)),
    (c"MountOp.fstype", offset_of!(MountOp, fstype)),
    (c"MountOp.data", offset_of!(MountOp, data)),
    (c"IpcLimit", size_of::<IpcLimit>()),
    (c"IpcLimit.path", offset_of!(IpcLimit, path)),
    (c"IpcLimit.value", offset_of!(IpcLimit, value)),
    (c"IpcLimit.len", offset_of!(IpcLimit, len)),
    (c"Request", size_of::<Request>()),
    (c"Request.uid", offset_of!(Request, uid)),
    (c"Request.gid", offset_of!(Request, gid)),
    (c"Request.flags", offset_of!(Request, flags)),
    (c"Request.rlimits_len", offset_of!(Request, rlimits_len)),
    (c"Request.rlimits", offset_of!(Request, rlimits)),
    (c"Rlimit", size_of::<Rlimit>()),
    (c"Rlimit.resource", offset_of!(Rlimit, resource)),
    (c"Rlimit.pad", offset_of!(Rlimit, pad)),
    (c"Rlimit.value", offset_of!(Rlimit, value)),
];

/// Entry `i` of the layout table: its name (NULL past the end) and, in `*value`, the size or
/// offset it names.
///
/// # Safety
/// `value` is NULL or points to a writable usize.
#[no_mangle]
pub unsafe extern "C" fn faas_layout(i: usize, value: *mut usize) -> *const c_char {
    let Some((name, v)) = LAYOUT.get(i) else { return core::ptr::null() };
    // SAFETY: the caller passes NULL or a valid usize to write.
    if let Some(out) = unsafe { value.as_mut() } {
        *out = *v;
    }
    name.as_ptr()
}

/// Words in an MT19937 state: the generator of CPython's `random` and numpy's legacy one.
const MT_WORDS: usize = 624;

/// Gives an MT19937 generator a fresh state from the kernel, in place: a first word of
/// 0x80000000 (what seeding ends with, so the state is never all zero) and 623 random ones at
/// `key`, and `MT_WORDS` at `pos` (the next draw regenerates the whole state first). The same
/// distribution as seeding it with 624 words from the kernel, without the seeding code:
/// `random.seed()` and numpy's `set_state()` ran Python and Cython in each child, and every
/// object they touched was a page copied (~20 faults each). Returns 0, or the errno of
/// getrandom(2): EAGAIN while the kernel's pool is not ready yet (early in boot), when
/// zygote.py seeds the generator as before, which does not wait.
///
/// # Safety
/// `key` points to `MT_WORDS` writable words and `pos` to a writable int, of a generator
/// nothing else uses meanwhile (zygote.py checked the addresses against the generator's own
/// `getstate()` in the zygote).
#[no_mangle]
pub unsafe extern "C" fn faas_mt19937_fill(key: *mut u32, pos: *mut c_int) -> c_int {
    let rest = (MT_WORDS - 1) * 4;
    let mut got = 0;
    while got < rest {
        let at = key.wrapping_add(1).cast::<u8>().wrapping_add(got);
        // SAFETY: key + 1 .. key + MT_WORDS is writable (the caller's promise), and at is in it
        // with rest - got bytes after it.
        let n = unsafe { libc::getrandom(at.cast(), rest - got, libc::GRND_NONBLOCK) };
        if n < 0 {
            match errno() {
                libc::EINTR => continue,
                errno => return errno,
            }
        }
        got += n as usize;
    }
    // SAFETY: key and pos are writable (the caller's promise).
    unsafe { key.write_unaligned(0x8000_0000) };
    // SAFETY: as above.
    unsafe { pos.write_unaligned(MT_WORDS as c_int) };
    0
}

/// The zygote's request loop: takes each request from the daemon on `ctl`, forks its child
/// (clone3 with `clone_flags`, a pidfd, into the request's cgroup), and in that child runs
/// the steps; reaps the children and tells the daemon each one's wait status. In Rust, not
/// Python, because the zygote's own Python objects stay untouched after its start: a Python
/// loop wrote refcounts and dicts on pages every child shares, and each such write was a
/// copy-on-write fault in the zygote (~180 a request) and the objects' pages copied again in
/// the next child. Nothing of CPython runs around the fork (no PyOS_BeforeFork): the zygote
/// is single-threaded (zygote.py checks) and holds no Python lock while it waits here; nor
/// after it in the child (no PyOS_AfterFork_Child): zygote.py runs the at-fork hooks that are
/// not moot itself (child()).
///
/// To the daemon, on each request's reply socket: `pid N` with a pidfd of the child, or
/// `fail ERRNO` if none was forked (`busy N` if it has N children already); then `exit STATUS`,
/// a wait status, once it is reaped.
///
/// Returns 0 in a child, with every layer on, the request in `buf` (`Request`, then the
/// environment block) and its length in `*got`; 1 in the zygote once the daemon has closed
/// `ctl`; -1 if the zygote cannot go on (the reason on fd 2). The signal mask of the zygote
/// blocks SIGCHLD (a signalfd reads it) and SIGINT from the first call on; the child's steps empty it.
///
/// # Safety
/// Call from the zygote's only thread, with a plan whose init-time part is filled in (see
/// `Plan`), and `buf` valid for `buf_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn faas_serve(
    ctl: c_int,
    plan: *mut Plan,
    clone_flags: u64,
    buf: *mut u8,
    buf_len: usize,
    got: *mut usize,
) -> c_int {
    // SAFETY: the caller passes a valid plan and buffer, and `got` valid to write.
    let (Some(plan), Some(got)) = (unsafe { plan.as_mut() }, unsafe { got.as_mut() }) else { return -1 };
    if buf.is_null() {
        return -1;
    }
    // SAFETY: as the caller promises; nothing else refers to the buffer while we run.
    let buf = unsafe { core::slice::from_raw_parts_mut(buf, buf_len) };
    // SAFETY: a sigset on our stack, filled by sigemptyset/sigaddset before use.
    let mut chld: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: chld is a valid sigset_t.
    unsafe {
        libc::sigemptyset(&mut chld);
    }
    // SAFETY: as above.
    unsafe {
        libc::sigaddset(&mut chld, libc::SIGCHLD);
    }
    // SIGINT too: CPython's handler would only mark it "tripped" for the interpreter, which no
    // longer runs here, and every child, forked without PyOS_AfterFork_Child (which clears the
    // mark), would raise KeyboardInterrupt on its first bytecode. Blocked, a SIGINT stays
    // pending in the zygote, and a child starts with none pending (fork(2)).
    let mut blocked = chld;
    // SAFETY: blocked is a valid sigset_t, a copy of chld.
    unsafe {
        libc::sigaddset(&mut blocked, libc::SIGINT);
    }
    // SAFETY: blocks two signals in this thread; no old set asked for.
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &blocked, core::ptr::null_mut()) } != 0 {
        return log_fatal("sigprocmask");
    }
    // SAFETY: a new signalfd for the set above.
    let sfd = unsafe { libc::signalfd(-1, &chld, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if sfd < 0 {
        return log_fatal("signalfd");
    }
    let mut children = Children { list: [(0, 0); MAX_CHILDREN], len: 0 };
    let rc = loop {
        let mut fds = [
            libc::pollfd { fd: ctl, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: sfd, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two pollfds on our stack.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            break log_fatal("poll");
        }
        if fds[1].revents != 0 {
            reap(sfd, &mut children);
        }
        if fds[0].revents == 0 {
            continue;
        }
        match take_request(ctl, buf) {
            Taken::Nothing => continue,
            Taken::Closed => break 1,
            Taken::Failed => break log_fatal("recvmsg on the control socket"),
            Taken::Request { req, len, fds, count } => {
                plan.received_ns = monotonic_ns();
                // SAFETY: fds are the request's, received just now and ours.
                if let Some(pid) = unsafe { fork(plan, clone_flags, &req, &fds[..count], &mut children) } {
                    if pid == 0 {
                        // SAFETY: a fresh child of the zygote, the plan filled in for this request
                        // (its rlimits point into `req`, alive on this stack until we return).
                        unsafe { run(plan) };
                        *got = len;
                        return 0;
                    }
                }
            }
        }
    };
    // SAFETY: our own signalfd.
    unsafe { libc::close(sfd) };
    rc
}

/// What one read of the control socket brought.
#[allow(clippy::large_enum_variant, reason = "one at a time, on the stack: no box, no allocation")]
enum Taken {
    /// Nothing to do (interrupted, or a broken request refused and answered).
    Nothing,
    /// EOF: the daemon let go of this zygote.
    Closed,
    Failed,
    Request {
        req: Request,
        len: usize,
        fds: [c_int; MAX_FDS],
        count: usize,
    },
}

/// The most fds a request brings (nine) and room for more, which are refused.
const MAX_FDS: usize = 16;

/// `CMSG_SPACE(MAX_FDS * sizeof(int))`, aligned for a cmsghdr.
#[repr(C)]
struct Fds {
    header: libc::cmsghdr,
    fds: [c_int; MAX_FDS],
}

/// One datagram from the daemon into `buf`, with its fds; a request that cannot be served as
/// sent (cut short, fds missing or extra, too many rlimits) is answered `fail` and its fds
/// closed, here.
fn take_request(ctl: c_int, buf: &mut [u8]) -> Taken {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: all-zero cmsghdr and fds are valid values.
    let mut control: Fds = unsafe { core::mem::zeroed() };
    // SAFETY: an all-zero msghdr is valid; the fields we use are set below.
    let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = &mut control as *mut Fds as *mut libc::c_void;
    msg.msg_controllen = size_of::<Fds>() as _;
    // SAFETY: msg and everything it points to are live; the kernel writes within the lengths.
    let n = unsafe { libc::recvmsg(ctl, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return match errno() {
            libc::EINTR | libc::EAGAIN => Taken::Nothing,
            _ => Taken::Failed,
        };
    }
    if n == 0 {
        return Taken::Closed;
    }
    let mut fds = [-1; MAX_FDS];
    let mut count = 0;
    // SAFETY: msg is the header recvmsg filled in; CMSG_* walk only within msg_controllen.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: a header within the control buffer (CMSG_FIRSTHDR/NXTHDR checked its bounds).
        let c = unsafe { &*cmsg };
        if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) only computes a size.
            let payload = c.cmsg_len as usize - unsafe { libc::CMSG_LEN(0) } as usize;
            // SAFETY: the fds follow the header, payload bytes of them, within the buffer.
            let data = unsafe { libc::CMSG_DATA(cmsg) } as *const c_int;
            for i in 0..payload / size_of::<c_int>() {
                // SAFETY: i is within the payload.
                let at = unsafe { data.add(i) };
                // SAFETY: an int of the payload; CMSG_DATA need not be aligned for c_int.
                let fd = unsafe { at.read_unaligned() };
                if let Some(slot) = fds.get_mut(count) {
                    *slot = fd;
                    count += 1;
                } else {
                    // SAFETY: an fd we were just given and have nowhere to keep.
                    unsafe { libc::close(fd) };
                }
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    let len = n as usize;
    let req = Request::from_bytes(buf.get(..len).unwrap_or(&[]));
    let refuse = match req {
        _ if msg.msg_flags & libc::MSG_TRUNC != 0 => {
            Some((libc::E2BIG, format!("a request longer than {} bytes", buf.len())))
        }
        _ if msg.msg_flags & libc::MSG_CTRUNC != 0 => {
            Some((libc::EMFILE, format!("a request with more than {MAX_FDS} fds, or fds cut short")))
        }
        None => Some((libc::EINVAL, format!("a request of {len} bytes, shorter than its head"))),
        Some(r) if r.fds() != count => Some((libc::EMFILE, format!("a request with {count} fds, not {}", r.fds()))),
        Some(r) if r.rlimits_len as usize > MAX_RLIMITS => {
            Some((libc::E2BIG, format!("a request with {} rlimits", r.rlimits_len)))
        }
        Some(_) => None,
    };
    match (req, refuse) {
        (Some(req), None) => Taken::Request { req, len, fds, count },
        (_, Some((errno, what))) => {
            log(&format!("{what}; refused"));
            if count > 0 {
                answer(fds[0], format_args!("fail {errno}"), -1);
            }
            for &fd in fds.iter().take(count) {
                // SAFETY: fds we were given with the refused request.
                unsafe { libc::close(fd) };
            }
            Taken::Nothing
        }
        (None, None) => Taken::Nothing,
    }
}

/// Forks the request's child: Some(0) in the child, Some(pid) in the zygote (which has answered
/// `pid N` and keeps the reply socket for `exit`), None if no child was made (answered `fail`).
/// The zygote closes the request's fds but the reply socket; the child keeps them all.
///
/// # Safety
/// `fds` are the request's, ours to close; the plan's init-time part is filled in.
unsafe fn fork(
    plan: &mut Plan,
    clone_flags: u64,
    req: &Request,
    fds: &[c_int],
    children: &mut Children,
) -> Option<c_int> {
    let fd = |i: usize| fds.get(i).copied().unwrap_or(-1);
    if children.len >= MAX_CHILDREN {
        answer(fd(0), format_args!("busy {MAX_CHILDREN}"), -1);
        for &f in fds {
            // SAFETY: the request's fds, ours to close: no child will have them.
            unsafe { libc::close(f) };
        }
        return None;
    }
    let mut extra = 6;
    let mut next = |bit: u32| {
        if req.flags & bit == 0 {
            return -1;
        }
        extra += 1;
        fd(extra - 1)
    };
    let (cgroup, netns, ruleset) = (next(REQ_CGROUP), next(REQ_NETNS), next(REQ_LANDLOCK));
    plan.stdio = [fd(1), fd(2), fd(3)];
    plan.err = fd(4);
    plan.notify = fd(5);
    plan.netns = netns;
    plan.ruleset = ruleset;
    plan.uid = req.uid;
    plan.gid = req.gid;
    plan.rlimits = req.rlimits.as_ptr();
    plan.rlimits_len = (req.rlimits_len as usize).min(MAX_RLIMITS);
    let mut pidfd: c_int = -1;
    plan.cloned_ns = monotonic_ns();
    let mut args = CloneArgs {
        flags: clone_flags | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if cgroup >= 0 {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cgroup as u64;
    }
    // SAFETY: clone_args of the size given, no stack (the child runs on its copy of ours);
    // the child only runs the steps on the plan, then returns into the interpreter.
    let pid = unsafe {
        sys(libc::SYS_clone3, &args as *const CloneArgs as c_long, size_of::<CloneArgs>() as c_long, 0, 0, 0)
    };
    if pid == 0 {
        return Some(0);
    }
    let failed = errno();
    let reply = fd(0);
    for &f in fds.iter().skip(1) {
        // SAFETY: the request's fds, the child has its own copies.
        unsafe { libc::close(f) };
    }
    if pid < 0 {
        answer(reply, format_args!("fail {failed}"), -1);
        // SAFETY: the reply socket, done with.
        unsafe { libc::close(reply) };
        return None;
    }
    let pid = pid as c_int;
    // There is room: fork() answered `busy` above when there was none.
    children.push(pid, reply);
    // A daemon that gave up on the request never gets the pidfd; the child dies with the
    // zygote's pid namespace or on its deadline, whichever the daemon set.
    answer(reply, format_args!("pid {pid}"), pidfd);
    // SAFETY: our pidfd of the child; the daemon has its own now.
    unsafe { libc::close(pidfd) };
    Some(pid)
}

/// Reaps every child that has ended and sends each one's wait status on its reply socket.
fn reap(sfd: c_int, children: &mut Children) {
    // SAFETY: an all-zero signalfd_siginfo is valid; reading drains the queued SIGCHLDs.
    let mut info: libc::signalfd_siginfo = unsafe { core::mem::zeroed() };
    loop {
        // SAFETY: reads at most one siginfo into ours.
        let n = unsafe {
            libc::read(
                sfd,
                &mut info as *mut libc::signalfd_siginfo as *mut libc::c_void,
                size_of::<libc::signalfd_siginfo>(),
            )
        };
        if n <= 0 {
            break;
        }
    }
    loop {
        let mut status: c_int = 0;
        // SAFETY: any child, status on our stack, no rusage.
        let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, core::ptr::null_mut()) };
        if pid <= 0 {
            return;
        }
        if let Some(reply) = children.remove(pid) {
            answer(reply, format_args!("exit {status}"), -1);
            // SAFETY: the reply socket, done with.
            unsafe { libc::close(reply) };
        }
    }
}

/// One datagram on a reply socket, with `fd` if it is not -1. A failure is the daemon's
/// having given up on the request: nothing to do. Formatted on the stack, as the zygote
/// allocates nothing for a request it serves (only a refused one's log line does): a malloc
/// writes to the heap, whose pages every child shares, so each write there copies a page in
/// the zygote and splits its huge page (zygote.py's collapse_huge_pages).
fn answer(sock: c_int, text: core::fmt::Arguments, fd: c_int) {
    let mut line = Line { buf: [0; 32], len: 0 };
    if core::fmt::Write::write_fmt(&mut line, text).is_ok() {
        send_with_fd(sock, line.buf.get(..line.len).unwrap_or(&[]), fd, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT);
    }
}

/// A reply (`pid N`, `exit STATUS`, `fail ERRNO`), on the stack.
struct Line {
    buf: [u8; 32],
    len: usize,
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(core::fmt::Error)?;
        self.buf.get_mut(self.len..end).ok_or(core::fmt::Error)?.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The most children a zygote has at once (spares and requests); past it a request is answered
/// `busy N` and served cold.
const MAX_CHILDREN: usize = 4096;

/// The zygote's children that run, with each one's reply socket: on faas_serve's stack, not
/// the heap (see `answer`).
struct Children {
    list: [(c_int, c_int); MAX_CHILDREN],
    len: usize,
}

impl Children {
    /// Adds a child, if there is room (false if not).
    fn push(&mut self, pid: c_int, reply: c_int) -> bool {
        let Some(slot) = self.list.get_mut(self.len) else { return false };
        *slot = (pid, reply);
        self.len += 1;
        true
    }

    /// Takes `pid` off the list; its reply socket.
    fn remove(&mut self, pid: c_int) -> Option<c_int> {
        let live = self.list.get(..self.len)?;
        let i = live.iter().position(|&(p, _)| p == pid)?;
        let last = self.len.checked_sub(1)?;
        self.list.swap(i, last);
        self.len = last;
        self.list.get(last).map(|&(_, reply)| reply)
    }
}

/// One datagram of `bytes` on the unix socket `sock`, with `fd` (SCM_RIGHTS) unless it is -1:
/// sendmsg(2)'s result. Raw syscalls on locals only, for the child's steps too.
fn send_with_fd(sock: c_int, bytes: &[u8], fd: c_int, flags: c_int) -> c_long {
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    // SAFETY: an all-zero cmsghdr is valid; the fields are set below.
    let mut control: OneFd = unsafe { core::mem::zeroed() };
    // SAFETY: an all-zero msghdr is valid; the fields we use are set below.
    let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if fd >= 0 {
        control.header.cmsg_level = libc::SOL_SOCKET;
        control.header.cmsg_type = libc::SCM_RIGHTS;
        // CMSG_LEN(sizeof(int)): the header (a multiple of the alignment) and the fd.
        control.header.cmsg_len = (size_of::<libc::cmsghdr>() + size_of::<c_int>()) as _;
        control.fd = fd;
        msg.msg_control = &mut control as *mut OneFd as *mut libc::c_void;
        // CMSG_SPACE(sizeof(int)).
        msg.msg_controllen = size_of::<OneFd>() as _;
    }
    // SAFETY: msg and everything it points to are live locals.
    unsafe { sys(libc::SYS_sendmsg, sock as c_long, &msg as *const libc::msghdr as c_long, flags as c_long, 0, 0) }
}

/// CLOCK_MONOTONIC in ns (Python's time.monotonic_ns), 0 if it cannot be read.
fn monotonic_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a timespec on our stack.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) } != 0 {
        return 0;
    }
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

/// A line on the zygote's log (fd 2), which the daemon forwards.
fn log(line: &str) {
    let line = format!("faas zygote: {line}\n");
    // SAFETY: a live buffer of that length; a failed write loses only the line.
    unsafe { libc::write(2, line.as_ptr() as *const libc::c_void, line.len()) };
}

/// Logs a failed call with its errno; returns faas_serve's -1.
fn log_fatal(what: &str) -> c_int {
    log(&format!("{what} failed: {}", std::io::Error::from_raw_os_error(errno())));
    -1
}

/// syscall(2): negative with errno set on failure.
///
/// # Safety
/// Whatever syscall `nr` requires of its arguments.
unsafe fn sys(nr: c_long, a: c_long, b: c_long, c: c_long, d: c_long, e: c_long) -> c_long {
    // SAFETY: passed on from the caller.
    unsafe { libc::syscall(nr, a, b, c, d, e) }
}

fn errno() -> c_int {
    // SAFETY: __errno_location only returns this thread's errno slot.
    let slot = unsafe { libc::__errno_location() };
    // SAFETY: the slot is always valid to read.
    unsafe { *slot }
}

fn exit(code: c_long) -> ! {
    loop {
        // SAFETY: exit_group ends the process at once, no teardown (the memory is a copy of
        // the zygote's); the loop only satisfies the type.
        unsafe { sys(libc::SYS_exit_group, code, 0, 0, 0, 0) };
    }
}

/// A slice from the plan's pointer and length; empty for NULL.
///
/// # Safety
/// `ptr` is NULL or points to `len` valid values that outlive 'a.
unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() {
        return &[];
    }
    // SAFETY: passed on from the caller.
    unsafe { core::slice::from_raw_parts(ptr, len) }
}

/// Ends the child on the first failed step.
struct Fail {
    err: c_int,
}

impl Fail {
    /// The 12-byte record (step, index, errno), then exit 127: spawn.rs's child_fail.
    fn fail(&self, step: Step, index: u32, errno: c_int) -> ! {
        let number = step as u32;
        let mut record = [0u8; 12];
        for (to, from) in record
            .iter_mut()
            .zip(number.to_ne_bytes().into_iter().chain(index.to_ne_bytes()).chain(errno.to_ne_bytes()))
        {
            *to = from;
        }
        // SAFETY: record is a live 12-byte buffer; a short or failed write only loses the detail.
        unsafe { sys(libc::SYS_write, self.err as c_long, record.as_ptr() as c_long, 12, 0, 0) };
        exit(127)
    }

    /// Fails the step if `rc` (a syscall's result) is negative.
    fn check(&self, step: Step, index: usize, rc: c_long) -> c_long {
        if rc < 0 {
            self.fail(step, index as u32, errno());
        }
        rc
    }
}

/// Which bytes of an fd range are closed around the kept ones: [3, ∞) minus `keep` (each > 2).
fn close_ranges(keep: [c_int; 2]) -> [(u32, u32); 3] {
    let (a, b) = if keep[0] <= keep[1] { (keep[0], keep[1]) } else { (keep[1], keep[0]) };
    let (a, b) = (a.max(2) as u32, b.max(2) as u32);
    // (first, last); first > last means nothing to close.
    [(3, a.saturating_sub(1)), (a.saturating_add(1), b.saturating_sub(1)), (b.saturating_add(1), u32::MAX)]
}

/// The kernel's structures and constants that the libc crate lacks, for the zygote's child
/// steps here and the daemon's cold start (src/sandbox/spawn.rs) alike. Constants that go
/// into syscall(2) are `c_long`: it reads every argument as a long.
pub mod abi {
    use core::ffi::{c_int, c_long};

    /// `struct clone_args` from linux/sched.h (clone3(2)), version 2 (with `cgroup`).
    #[repr(C)]
    #[derive(Default)]
    pub struct CloneArgs {
        pub flags: u64,
        pub pidfd: u64,
        pub child_tid: u64,
        pub parent_tid: u64,
        pub exit_signal: u64,
        pub stack: u64,
        pub stack_size: u64,
        pub tls: u64,
        pub set_tid: u64,
        pub set_tid_size: u64,
        pub cgroup: u64,
    }

    pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    pub const AT_RECURSIVE: c_long = 0x8000;
    pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
    pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
    pub const MOUNT_ATTR_NODEV: u64 = 0x4;
    pub const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    pub const SECCOMP_SET_MODE_FILTER: c_long = 1;
    pub const SECCOMP_FILTER_FLAG_NEW_LISTENER: c_long = 1 << 3;
    pub const LANDLOCK_RULE_PATH_BENEATH: c_long = 1;

    /// `struct mount_attr` (mount_setattr(2)).
    #[repr(C)]
    pub struct MountAttr {
        pub attr_set: u64,
        pub attr_clr: u64,
        pub propagation: u64,
        pub userns_fd: u64,
    }

    impl MountAttr {
        /// What a read-only tree of the sandbox gets (`MountOp::ReadOnlyTree`).
        pub const READ_ONLY_NOSUID_NODEV: MountAttr = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
    }

    /// `struct landlock_path_beneath_attr`, packed as in the uapi header.
    #[repr(C, packed)]
    pub struct PathBeneathAttr {
        pub allowed_access: u64,
        pub parent_fd: i32,
    }

    /// `struct __user_cap_header_struct` (capset(2), version 3 takes two data structs).
    #[repr(C)]
    pub struct CapHeader {
        pub version: u32,
        pub pid: c_int,
    }

    /// `struct __user_cap_data_struct`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct CapData {
        pub effective: u32,
        pub permitted: u32,
        pub inheritable: u32,
    }
}

use abi::*;

/// A control message with one fd: cmsghdr, then the fd, padded to CMSG_SPACE(4).
#[repr(C)]
struct OneFd {
    header: libc::cmsghdr,
    fd: c_int,
    pad: c_int,
}

/// `struct rlimit64` (prlimit(2)).
#[repr(C)]
struct Rlimit64 {
    cur: u64,
    max: u64,
}

/// The child's steps, from Stdio to Rlimit: returns with every layer on; on a failed step it
/// does not return (record on the error pipe, exit 127), nor if the daemon is gone (exit 127).
///
/// # Safety
/// Only in a freshly forked child of the zygote, once, with a plan whose every pointer and
/// length is valid (see `Plan`).
unsafe fn run(p: &Plan) {
    let f = Fail { err: p.err };

    for (target, &fd) in p.stdio.iter().enumerate() {
        // SAFETY: dup2 on fds the zygote received for this request; target is 0, 1 or 2.
        f.check(Step::Stdio, target, unsafe { sys(libc::SYS_dup2, fd as c_long, target as c_long, 0, 0, 0) });
    }
    // The zygote changed no disposition (CPython's own, SIGPIPE ignored and SIGINT raising, are
    // what a fresh interpreter has); its mask blocks SIGCHLD, for faas_serve's signalfd.
    let empty: u64 = 0;
    // SAFETY: an empty 8-byte sigset, no old-set pointer.
    let rc =
        unsafe { sys(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK as c_long, &empty as *const u64 as c_long, 0, 8, 0) };
    f.check(Step::Signals, 0, rc);
    // SAFETY: no arguments; a fresh child is no process group leader.
    f.check(Step::Session, 0, unsafe { sys(libc::SYS_setsid, 0, 0, 0, 0, 0) });

    if p.netns >= 0 {
        // SAFETY: an fd of a network namespace the zygote received for this request.
        let rc = unsafe { sys(libc::SYS_setns, p.netns as c_long, libc::CLONE_NEWNET as c_long, 0, 0, 0) };
        f.check(Step::NetNs, 0, rc);
    }
    // SAFETY: the plan's hostname points to hostname_len bytes.
    let rc = unsafe { sys(libc::SYS_sethostname, p.hostname as c_long, p.hostname_len as c_long, 0, 0, 0) };
    f.check(Step::Hostname, 0, rc);

    // SAFETY: the template mount namespace fd the zygote holds.
    let rc = unsafe { sys(libc::SYS_setns, p.template as c_long, libc::CLONE_NEWNS as c_long, 0, 0, 0) };
    f.check(Step::MountNs, 0, rc);
    // SAFETY: a flag argument only: a private copy of the template.
    f.check(Step::MountNs, 1, unsafe { sys(libc::SYS_unshare, libc::CLONE_NEWNS as c_long, 0, 0, 0, 0) });
    // SAFETY: the plan's mounts point to mounts_len entries.
    for (i, op) in unsafe { slice(p.mounts, p.mounts_len) }.iter().enumerate() {
        let rc = match op.kind {
            // SAFETY: every pointer is NULL or a NUL-terminated string the zygote keeps.
            0 => unsafe {
                sys(
                    libc::SYS_mount,
                    op.source as c_long,
                    op.target as c_long,
                    op.fstype as c_long,
                    op.flags as c_long,
                    op.data as c_long,
                )
            },
            1 => {
                let attr = MountAttr::READ_ONLY_NOSUID_NODEV;
                // SAFETY: target is a NUL-terminated path; attr a mount_attr of the size given.
                unsafe {
                    sys(
                        libc::SYS_mount_setattr,
                        libc::AT_FDCWD as c_long,
                        op.target as c_long,
                        AT_RECURSIVE,
                        &attr as *const MountAttr as c_long,
                        size_of::<MountAttr>() as c_long,
                    )
                }
            }
            _ => f.fail(Step::Mount, i as u32, libc::EINVAL),
        };
        f.check(Step::Mount, i, rc);
    }
    // SAFETY: a NUL-terminated literal path.
    f.check(Step::Chdir, 0, unsafe { sys(libc::SYS_chdir, c"/code".as_ptr() as c_long, 0, 0, 0, 0) });
    // SAFETY: the plan's ipc_limits point to ipc_limits_len entries.
    for (i, limit) in unsafe { slice(p.ipc_limits, p.ipc_limits_len) }.iter().enumerate() {
        // SAFETY: a NUL-terminated path the zygote keeps.
        let fd = unsafe {
            sys(
                libc::SYS_openat,
                libc::AT_FDCWD as c_long,
                limit.path as c_long,
                (libc::O_WRONLY | libc::O_CLOEXEC) as c_long,
                0,
                0,
            )
        };
        f.check(Step::IpcLimits, i, fd);
        // SAFETY: value points to len bytes the zygote keeps.
        let n = unsafe { sys(libc::SYS_write, fd, limit.value as c_long, limit.len as c_long, 0, 0) };
        let written = errno();
        // SAFETY: fd was opened just above and is ours.
        unsafe { sys(libc::SYS_close, fd, 0, 0, 0, 0) };
        if n < 0 {
            f.fail(Step::IpcLimits, i as u32, written);
        }
        if n as usize != limit.len {
            f.fail(Step::IpcLimits, i as u32, libc::EIO);
        }
    }

    // SAFETY: the plan's caps point to caps_len capability numbers.
    for &cap in unsafe { slice(p.caps, p.caps_len) } {
        // SAFETY: PR_CAPBSET_DROP takes a capability number; we still hold CAP_SETPCAP.
        let rc = unsafe { sys(libc::SYS_prctl, libc::PR_CAPBSET_DROP as c_long, cap as c_long, 0, 0, 0) };
        f.check(Step::CapBound, cap as usize, rc);
    }
    // SAFETY: an empty list: size 0 and a NULL pointer.
    f.check(Step::Groups, 0, unsafe { sys(libc::SYS_setgroups, 0, 0, 0, 0, 0) });
    let (uid, gid) = (p.uid as c_long, p.gid as c_long);
    // SAFETY: integer arguments.
    f.check(Step::Gid, 0, unsafe { sys(libc::SYS_setresgid, gid, gid, gid, 0, 0) });
    // SAFETY: integer arguments; after this we are no longer root.
    f.check(Step::Uid, 0, unsafe { sys(libc::SYS_setresuid, uid, uid, uid, 0, 0) });
    let header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [
        CapData { effective: 0, permitted: 0, inheritable: 0 },
        CapData { effective: 0, permitted: 0, inheritable: 0 },
    ];
    // SAFETY: a header and two data structs, as version 3 of capset(2) expects.
    let rc = unsafe { sys(libc::SYS_capset, &header as *const CapHeader as c_long, data.as_ptr() as c_long, 0, 0, 0) };
    f.check(Step::Caps, 0, rc);
    // SAFETY: integer arguments.
    let rc = unsafe {
        sys(libc::SYS_prctl, libc::PR_CAP_AMBIENT as c_long, libc::PR_CAP_AMBIENT_CLEAR_ALL as c_long, 0, 0, 0)
    };
    f.check(Step::Caps, 1, rc);
    // Our parent is the zygote, whose death takes this pid namespace along anyway; the daemon's
    // pidfd says whether anyone is left to supervise us. Armed only now: a change of uid clears it.
    // SAFETY: a signal number, nothing else.
    let rc = unsafe { sys(libc::SYS_prctl, libc::PR_SET_PDEATHSIG as c_long, libc::SIGKILL as c_long, 0, 0, 0) };
    f.check(Step::ParentDeath, 0, rc);
    let mut daemon = libc::pollfd { fd: p.daemon_pidfd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd on our stack, zero timeout.
    let rc = unsafe { sys(libc::SYS_poll, &mut daemon as *mut libc::pollfd as c_long, 1, 0, 0, 0) };
    if f.check(Step::ParentDeath, 1, rc) > 0 {
        exit(127);
    }
    // SAFETY: integer arguments.
    f.check(Step::NoNewPrivs, 0, unsafe { sys(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS as c_long, 1, 0, 0, 0) });

    if p.ruleset >= 0 {
        for (i, (path, access)) in [(c"/tmp", p.landlock_tmp), (c"/proc", p.landlock_proc)].into_iter().enumerate() {
            // SAFETY: a NUL-terminated literal path.
            let fd = unsafe {
                sys(
                    libc::SYS_openat,
                    libc::AT_FDCWD as c_long,
                    path.as_ptr() as c_long,
                    (libc::O_PATH | libc::O_CLOEXEC) as c_long,
                    0,
                    0,
                )
            };
            f.check(Step::Landlock, i, fd);
            let attr = PathBeneathAttr { allowed_access: access, parent_fd: fd as i32 };
            // SAFETY: attr is a landlock_path_beneath_attr for rule type PATH_BENEATH; flags 0.
            let rc = unsafe {
                sys(
                    libc::SYS_landlock_add_rule,
                    p.ruleset as c_long,
                    LANDLOCK_RULE_PATH_BENEATH,
                    &attr as *const PathBeneathAttr as c_long,
                    0,
                    0,
                )
            };
            f.check(Step::Landlock, i, rc);
            // SAFETY: fd was opened just above and is ours.
            unsafe { sys(libc::SYS_close, fd, 0, 0, 0, 0) };
        }
        // SAFETY: a ruleset fd; flags must be 0.
        let rc = unsafe { sys(libc::SYS_landlock_restrict_self, p.ruleset as c_long, 0, 0, 0, 0) };
        f.check(Step::Landlock, 2, rc);
    }

    // Nothing of the zygote's stays open: not its control socket, not another request's reply
    // socket, not the template or the daemon's pidfd. Closed, not close-on-exec: there is no exec.
    for (i, (first, last)) in close_ranges([p.err, p.notify]).into_iter().enumerate() {
        if first <= last {
            // SAFETY: integer arguments; the interpreter's objects that name these fds are
            // never closed (the child ends with _exit).
            let rc = unsafe { sys(libc::SYS_close_range, first as c_long, last as c_long, 0, 0, 0) };
            f.check(Step::CloseFds, i, rc);
        }
    }

    let prog = libc::sock_fprog { len: p.filter_len as u16, filter: p.filter as *mut libc::sock_filter };
    // SAFETY: prog points at filter_len instructions the zygote keeps.
    let listener = unsafe {
        sys(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog as c_long,
            0,
            0,
        )
    };
    f.check(Step::Seccomp, 0, listener);
    send_fd(&f, p.notify, listener as c_int);
    // SAFETY: the listener is ours; the daemon has its own copy now.
    unsafe { sys(libc::SYS_close, listener, 0, 0, 0, 0) };

    // After every fd we open: a lowered nofile refuses every new fd number above it.
    // SAFETY: the plan's rlimits point to rlimits_len entries.
    for (i, r) in unsafe { slice(p.rlimits, p.rlimits_len) }.iter().enumerate() {
        let limit = Rlimit64 { cur: r.value, max: r.value };
        // SAFETY: pid 0 (ourselves), a valid rlimit64, no old-limit pointer.
        let rc =
            unsafe { sys(libc::SYS_prlimit64, 0, r.resource as c_long, &limit as *const Rlimit64 as c_long, 0, 0) };
        f.check(Step::Rlimit, i, rc);
    }
}

/// Sends `fd` with one byte "\0" over the unix socket `sock` (SCM_RIGHTS).
fn send_fd(f: &Fail, sock: c_int, fd: c_int) {
    f.check(Step::SendListener, 0, send_with_fd(sock, &[0], fd, libc::MSG_NOSIGNAL));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mt19937_state_is_filled_from_the_kernel_with_its_guard_word_and_position() {
        let mut states = [[0u32; MT_WORDS]; 2];
        let mut pos = [0 as c_int; 2];
        for (key, pos) in states.iter_mut().zip(pos.iter_mut()) {
            // SAFETY: MT_WORDS words and an int, ours.
            assert_eq!(unsafe { faas_mt19937_fill(key.as_mut_ptr(), pos) }, 0);
            assert_eq!((key[0], *pos), (0x8000_0000, MT_WORDS as c_int));
            assert!(key[1..].iter().filter(|&&w| w == 0).count() < 4, "words left unfilled");
        }
        assert_ne!(states[0][1..], states[1][1..], "two fills drew the same state");
    }

    #[test]
    fn children_are_taken_off_by_pid_and_replies_fit_their_line() {
        let mut c = Children { list: [(0, 0); MAX_CHILDREN], len: 0 };
        for (pid, reply) in [(10, 100), (11, 101), (12, 102)] {
            assert!(c.push(pid, reply));
        }
        assert_eq!(c.remove(11), Some(101));
        assert_eq!(c.remove(11), None, "taken off once");
        assert_eq!((c.remove(12), c.remove(10), c.len), (Some(102), Some(100), 0));
        assert_eq!(c.remove(10), None);
        while c.len < MAX_CHILDREN {
            assert!(c.push(1, 1));
        }
        assert!(!c.push(2, 2), "no room past MAX_CHILDREN");

        let mut line = Line { buf: [0; 32], len: 0 };
        core::fmt::Write::write_fmt(&mut line, format_args!("exit {}", i32::MIN)).unwrap();
        assert_eq!(&line.buf[..line.len], b"exit -2147483648");
        let mut line = Line { buf: [0; 32], len: 0 };
        assert!(core::fmt::Write::write_fmt(&mut line, format_args!("{}", "x".repeat(33))).is_err());
    }

    #[test]
    fn steps_number_from_one_in_order() {
        for (i, step) in Step::ALL.into_iter().enumerate() {
            assert_eq!(step as u32, i as u32 + 1);
            assert_eq!(Step::from_u32(step as u32), Some(step));
        }
        assert_eq!(Step::from_u32(0), None);
    }

    #[test]
    fn a_control_message_with_one_fd_is_cmsg_space_of_an_int() {
        // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes.
        let space = unsafe { libc::CMSG_SPACE(4) };
        // SAFETY: as above.
        let len = unsafe { libc::CMSG_LEN(4) };
        assert_eq!(size_of::<OneFd>(), space as usize);
        assert_eq!(size_of::<libc::cmsghdr>() + 4, len as usize);
        assert_eq!(offset_of!(OneFd, fd), len as usize - 4);
    }

    #[test]
    fn a_request_head_goes_through_its_bytes_unchanged() {
        let mut req =
            Request { uid: 7, gid: 8, flags: REQ_CGROUP | REQ_LANDLOCK, rlimits_len: 2, ..Default::default() };
        req.rlimits[0] = Rlimit { resource: 4, pad: 0, value: 0 };
        req.rlimits[1] = Rlimit { resource: 7, pad: 0, value: u64::MAX - 1 };
        let mut bytes = req.to_bytes();
        assert_eq!(bytes.len(), size_of::<Request>());
        assert_eq!(Request::from_bytes(&bytes), Some(req));
        assert_eq!(req.fds(), 8, "six, the cgroup and the ruleset");
        bytes.extend_from_slice(b"A=1\0");
        assert_eq!(Request::from_bytes(&bytes), Some(req), "the environment after the head is not read");
        assert_eq!(Request::from_bytes(&bytes[..size_of::<Request>() - 1]), None, "cut short");
    }

    #[test]
    fn the_kept_fds_split_the_ranges_closed() {
        assert_eq!(close_ranges([7, 5]), [(3, 4), (6, 6), (8, u32::MAX)]);
        assert_eq!(close_ranges([3, 4]), [(3, 2), (4, 3), (5, u32::MAX)]);
        assert_eq!(close_ranges([9, 9]), [(3, 8), (10, 8), (10, u32::MAX)]);
    }
}
