//! The only unsafe code: `clone3`, the child's path to `execve`, and the error pipe.
//!
//! The parent is a multi-threaded tokio process, so between `clone3` and `execve` the child may
//! only make async-signal-safe calls on data the parent prepared (`ChildPlan`). The child's
//! steps, in this order (each failure writes `(step, index, errno)` to the error pipe and
//! `_exit(127)`s):
//!
//! 1. `Stdio`: dup2 the pipes onto 0/1/2.
//! 2. `Signals`: empty the signal mask, reset dispositions the daemon changed (Rust ignores
//!    SIGPIPE), then `setsid()`: a session and process group of its own, so nothing in it can
//!    signal the daemon's group or reach its terminal (bubblewrap's `--new-session`).
//! 3. `NetNs`: `setns` into the empty network namespace made at start-up, while still root in
//!    the initial user namespace (setns(2) needs CAP_SYS_ADMIN over the namespace's owner).
//! 4. `Hostname`: the sandbox's own UTS namespace gets a fixed name, not the host's.
//! 5. `MountNs`: setns into the function version's template mount namespace (its read-only
//!    root is built and pivoted into once, by `create_mount_template`), then unshare a
//!    private copy of it.
//! 6. `Mount`: this request's own mounts on that copy: a fresh tmpfs `/tmp`, a fresh `/proc`
//!    (it shows the new pid namespace because we mount it from inside) with host-wide files
//!    masked, then chdir to /code. `IpcLimits`: without a memory cgroup, the IPC namespace's
//!    SysV limits (shmmax, shmall, shmmni, msgmnb) are written through that `/proc`.
//! 7. `CapBound`, `Groups`, `Gid`, `Uid`, `Caps`: empty the whole bounding set (every
//!    capability up to cap_last_cap that this child's own set still holds, read here: the
//!    daemon's set is per thread, so nothing read there says what this thread holds) while we
//!    still hold CAP_SETPCAP, drop supplementary groups,
//!    then gid, then uid (capabilities(7): a setuid away from 0 clears permitted and
//!    effective), then inheritable and ambient.
//!    `ParentDeath`: `PR_SET_PDEATHSIG(SIGKILL)` only now, since any change of euid or egid
//!    clears it (prctl(2)); then the daemon's pidfd is polled: if the daemon died before the
//!    signal was armed, nobody would send it, so we exit instead. The parent is the thread
//!    that called clone3, a tokio worker that lives as long as the runtime.
//! 8. `NoNewPrivs`, `Landlock`: add the rules for this sandbox's own `/tmp` and `/proc` to
//!    the ruleset the parent made (landlock.rs says why the child must), then
//!    landlock_restrict_self(2).
//! 9. `CloseFds`: close_range(3, ~0, CLOSE_RANGE_CLOEXEC): every inherited fd goes at exec,
//!    the error pipe last of all.
//! 10. `Seccomp`: the filter, late, so it only needs to allow what the wrapper needs; its
//!     user-notification listener goes to the parent. The parent kills the sandbox if the
//!     listener does not arrive: without it, deny-listed calls would fail with ENOSYS unseen.
//! 11. `Rlimit`: core 0, nofile, fsize, nproc (per uid, and the uid is this sandbox's alone),
//!     after the last fd we open: the daemon may hold more fds than the sandbox's nofile.
//! 12. `Exec`: execve(2) with the prepared pointers.

use std::ffi::{c_char, c_int, c_long, CStr, CString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::libc;

use faas_zygote::abi::{
    CapData, CapHeader, CloneArgs, MountAttr, PathBeneathAttr, AT_RECURSIVE, CLONE_INTO_CGROUP,
    LANDLOCK_RULE_PATH_BENEATH, LINUX_CAPABILITY_VERSION_3, SECCOMP_FILTER_FLAG_NEW_LISTENER, SECCOMP_SET_MODE_FILTER,
};

use super::{ChildPlan, MountOp, SpawnError, Step};

/// Size of one error record on the error pipe: step, index, errno.
pub const ERROR_RECORD: usize = 12;

/// A NULL-terminated array of C strings, as execve(2) wants argv and envp.
pub struct CStringArray {
    #[allow(dead_code, reason = "never read, only owned: ptrs point into these strings")]
    strings: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

impl CStringArray {
    /// Builds the array; the pointers stay valid as long as `self` lives and is not mutated.
    pub fn new(strings: Vec<CString>) -> Self {
        let mut ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        CStringArray { strings, ptrs }
    }

    fn as_ptr(&self) -> *const *const c_char {
        self.ptrs.as_ptr()
    }
}

/// A child that execve'd or is about to: its pid (in our namespace) and a pidfd for it.
#[derive(Debug)]
pub struct Spawned {
    /// The child's pid as the daemon sees it.
    pub pid: i32,
    /// A pidfd (clone3 `CLONE_PIDFD`), readable once the child has exited.
    pub pidfd: OwnedFd,
}

/// Starts the child described by `plan`. On x86_64 the child shares our memory
/// (CLONE_VM | CLONE_VFORK, as posix_spawn does): no page tables are copied and no
/// copy-on-write faults follow, and this thread waits until the child has exec'd or died.
/// Returns once clone3 has returned in the parent; the caller closes its copies of the
/// child's fds and reads `plan.err_pipe`'s other end to learn whether exec happened (EOF) or
/// which step failed (a record).
pub fn spawn(plan: &ChildPlan) -> Result<Spawned, SpawnError> {
    let mut pidfd: c_int = -1;
    let mut args = CloneArgs {
        flags: plan.clone_flags | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = plan.cgroup_fd {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // Until the child has reset every handler, a signal must not run one of ours there (in
    // our memory, or writing to the daemon's signal pipe it shares): block all here, the
    // child unblocks after resetting them.
    let mut all = unsafe_zeroed();
    let mut old = unsafe_zeroed();
    // SAFETY: all is a valid sigset_t to fill.
    unsafe { libc::sigfillset(&mut all) };
    // SAFETY: valid sets; affects this thread only.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old) };
    let pid = clone_child(&mut args, plan);
    // SAFETY: restoring the mask read above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    let pid = pid.map_err(SpawnError::Clone)?;
    // SAFETY: CLONE_PIDFD made the kernel store a fresh pidfd that only we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Spawned { pid, pidfd })
}

/// Whether `spawn` returns only after the child exec'd or exited (CLONE_VFORK).
pub const SPAWN_RETURNS_AFTER_EXEC: bool = cfg!(target_arch = "x86_64");

/// The child's stack for CLONE_VM: one per thread, reused, since CLONE_VFORK keeps this
/// thread waiting until the child no longer needs it. An mmap'ed region whose lowest page is
/// PROT_NONE: an overflow faults in the child instead of writing into the daemon's heap,
/// which the child shares.
#[cfg(target_arch = "x86_64")]
struct ChildStack {
    base: *mut libc::c_void,
}
#[cfg(target_arch = "x86_64")]
const CHILD_STACK: usize = 64 << 10;
#[cfg(target_arch = "x86_64")]
const GUARD: usize = 4096;

#[cfg(target_arch = "x86_64")]
impl ChildStack {
    fn new() -> io::Result<ChildStack> {
        // SAFETY: a fresh anonymous private mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                GUARD + CHILD_STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack { base };
        // SAFETY: the first page of the mapping made just above; nothing lives there.
        if unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The usable part: above the guard page, page-aligned (so 16-byte aligned).
    fn bottom(&self) -> u64 {
        self.base as u64 + GUARD as u64
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the whole mapping made in new(); no child runs on it (CLONE_VFORK returned).
        unsafe { libc::munmap(self.base, GUARD + CHILD_STACK) };
    }
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    static STACK: std::cell::RefCell<Option<ChildStack>> = const { std::cell::RefCell::new(None) };
}

/// Where the child starts on its own stack.
#[cfg(target_arch = "x86_64")]
extern "C" fn child_entry(plan: *const ChildPlan) -> ! {
    // SAFETY: plan points at the parent's ChildPlan, alive while CLONE_VFORK holds the parent.
    let plan = unsafe { &*plan };
    // SAFETY: we are the child, straight after clone3.
    unsafe { child_main(plan) }
}

/// clone3 with CLONE_VM | CLONE_VFORK, the child calling child_entry(plan) on its own stack.
/// Returns the child's pid.
#[cfg(target_arch = "x86_64")]
fn clone_child(args: &mut CloneArgs, plan: &ChildPlan) -> io::Result<i32> {
    STACK.with(|stack| {
        let mut stack = stack.borrow_mut();
        if stack.is_none() {
            *stack = Some(ChildStack::new()?);
        }
        let stack = stack.as_ref().expect("set just above");
        args.flags |= (libc::CLONE_VM | libc::CLONE_VFORK) as u64;
        args.stack = stack.bottom();
        args.stack_size = CHILD_STACK as u64;
        let ret: c_long;
        // SAFETY: clone3(2) with a valid clone_args of the given size. In the child the
        // kernel has switched to the fresh, 16-byte aligned stack (stack + stack_size); it
        // clears the frame pointer and calls child_entry(plan), which never returns. In the
        // parent, which CLONE_VFORK resumes only after the child exec'd or exited, rax holds
        // the result; syscall clobbers rcx and r11.
        unsafe {
            std::arch::asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                "xor ebp, ebp",
                "mov rdi, r12",
                "call r13",
                "ud2",
                "2:",
                inlateout("rax") libc::SYS_clone3 => ret,
                in("rdi") args as *mut CloneArgs,
                in("rsi") std::mem::size_of::<CloneArgs>(),
                in("r12") plan as *const ChildPlan,
                in("r13") child_entry as extern "C" fn(*const ChildPlan) -> !,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        // The raw syscall returns -errno.
        if ret < 0 {
            return Err(io::Error::from_raw_os_error(-ret as i32));
        }
        Ok(ret as i32)
    })
}

/// Plain clone3 elsewhere: the child gets a copy of our memory.
#[cfg(not(target_arch = "x86_64"))]
fn clone_child(args: &mut CloneArgs, plan: &ChildPlan) -> io::Result<i32> {
    // SAFETY: args is a valid clone_args of the size we pass. The child gets a copy of this
    // address space and only runs child_main, which touches nothing but `plan` (alive in its
    // copy) and raw syscalls, then execs or exits.
    let rc = unsafe { libc::syscall(libc::SYS_clone3, args as *mut CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if rc == 0 {
        // SAFETY: we are the child, straight after clone3, as child_main requires.
        unsafe { child_main(plan) }
    }
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as i32)
}

fn unsafe_zeroed() -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid (empty) set.
    unsafe { std::mem::zeroed() }
}

const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
/// Writes the failed step to the error pipe and exits without running any Rust or libc
/// teardown (the heap and locks are a copy of a multi-threaded parent's).
fn child_fail(err_pipe: RawFd, step: Step, index: u32) -> ! {
    // SAFETY: __errno_location only returns this thread's errno slot.
    let slot = unsafe { libc::__errno_location() };
    // SAFETY: the slot is always valid to read.
    let errno = unsafe { *slot };
    let mut record = [0u8; ERROR_RECORD];
    record[0..4].copy_from_slice(&(step as u32).to_ne_bytes());
    record[4..8].copy_from_slice(&index.to_ne_bytes());
    record[8..12].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: record is a live 12-byte buffer; a short or failed write only loses the detail.
    unsafe { libc::write(err_pipe, record.as_ptr().cast(), ERROR_RECORD) };
    // SAFETY: _exit ends the process at once, which is all that is safe here.
    unsafe { libc::_exit(127) }
}

fn opt_ptr(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
}

/// The child's whole life between clone3 and execve; see the module docs for the steps.
///
/// # Safety
/// Call only in the child, straight after clone3 returned 0 there. It never returns: it execs
/// or `_exit`s. Everything it reads lives in `plan`, built before the clone.
///
/// On x86_64 the child shares the daemon's memory (CLONE_VM) while the thread that cloned it
/// waits (CLONE_VFORK), and the daemon's other threads run on. So the child may write only to
/// its own stack (the guarded mapping `clone_child` gives it) and to the errno slot of the
/// thread it was cloned from (whose TLS it inherits, and which is suspended); it reads `plan`
/// and nothing else, allocates nothing, takes no lock, and drops nothing. Every kernel-side
/// change it makes (credentials, namespaces, fd table, signal dispositions) is its own: clone3
/// gave it its own fd table, signal handlers (reset here) and credentials, since none of
/// CLONE_FILES, CLONE_SIGHAND or CLONE_THREAD is set.
unsafe fn child_main(plan: &ChildPlan) -> ! {
    let ep = plan.err_pipe;
    macro_rules! check {
        ($step:expr, $index:expr, $call:expr) => {
            if $call < 0 {
                child_fail(ep, $step, $index as u32)
            }
        };
    }

    for (target, &fd) in plan.stdio.iter().enumerate() {
        // SAFETY: dup2 on fds the parent opened for us; target is 0, 1 or 2.
        check!(Step::Stdio, target, unsafe { libc::dup2(fd, target as c_int) });
    }

    // Every disposition the daemon changed back to default before unblocking: our handlers
    // (tokio's, Rust's stack-overflow one) must never run here, and SIG_IGN would survive
    // exec (Rust ignores SIGPIPE).
    for &sig in plan.changed_signals {
        // SAFETY: resetting a catchable signal to its default disposition.
        if unsafe { libc::signal(sig, libc::SIG_DFL) } == libc::SIG_ERR {
            child_fail(ep, Step::Signals, sig as u32);
        }
    }
    let empty = unsafe_zeroed();
    // SAFETY: empty is a valid set; we pass no old-set pointer.
    check!(Step::Signals, 0, unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) });
    // SAFETY: no arguments; we are not a process group leader (a fresh child), so it succeeds.
    check!(Step::Session, 0, unsafe { libc::setsid() });

    if let Some(fd) = plan.netns_fd {
        // SAFETY: fd refers to a network namespace the parent holds open.
        check!(Step::NetNs, 0, unsafe { libc::setns(fd, libc::CLONE_NEWNET) });
    }

    let host = plan.sandbox.hostname.as_bytes();
    // SAFETY: host points to host.len() readable bytes.
    check!(Step::Hostname, 0, unsafe { libc::sethostname(host.as_ptr().cast(), host.len()) });

    // SAFETY: template_fd is a mount namespace fd the parent holds open.
    check!(Step::MountNs, 0, unsafe { libc::setns(plan.template_fd, libc::CLONE_NEWNS) });
    // SAFETY: plain flag argument; gives us a private copy of the template.
    check!(Step::MountNs, 1, unsafe { libc::unshare(libc::CLONE_NEWNS) });
    for (i, op) in plan.sandbox.request_mounts.iter().enumerate() {
        check!(Step::Mount, i, apply_mount(op));
    }
    // SAFETY: a NUL-terminated literal path inside the sandbox root.
    check!(Step::Chdir, 0, unsafe { libc::chdir(c"/code".as_ptr()) });
    for (i, (path, value)) in plan.ipc_limits.iter().enumerate() {
        check!(Step::IpcLimits, i, child_write_file(path, value));
    }

    for cap in caps_to_drop(plan.keep_caps, plan.cap_last) {
        // Each drop makes new credentials; one already out of the set (the daemon's narrowed
        // one, `narrow_bounding_set`) is skipped. A failed read (-1) still drops, and fails.
        // SAFETY: PR_CAPBSET_READ takes a capability number and changes nothing.
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong) } == 0 {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number; we still hold CAP_SETPCAP.
        check!(Step::CapBound, cap, unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong) });
    }
    // The raw syscalls, not glibc's wrappers: those broadcast the change to every thread
    // glibc believes this process has (the daemon's, copied into our memory) via signals.
    // SAFETY: an empty list: size 0 and a NULL pointer.
    check!(Step::Groups, 0, unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) });
    // SAFETY: plain integer arguments.
    check!(Step::Gid, 0, unsafe { libc::syscall(libc::SYS_setresgid, plan.gid, plan.gid, plan.gid) });
    // SAFETY: plain integer arguments; after this we are no longer root.
    check!(Step::Uid, 0, unsafe { libc::syscall(libc::SYS_setresuid, plan.uid, plan.uid, plan.uid) });
    let header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    // Nothing for a request; a zygote keeps what forking a request's child needs (zygote.rs).
    let data = [
        CapData { effective: plan.keep_caps, permitted: plan.keep_caps, inheritable: 0 },
        CapData { effective: 0, permitted: 0, inheritable: 0 },
    ];
    // SAFETY: header and two data structs, as version 3 of capset(2) expects.
    check!(Step::Caps, 0, unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) });
    // SAFETY: plain integer arguments.
    check!(Step::Caps, 1, unsafe {
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0)
    });
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and nothing else.
    check!(Step::ParentDeath, 0, unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) });
    let mut daemon = libc::pollfd { fd: plan.daemon_pidfd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd on the daemon's pidfd, zero timeout: readable once it has exited.
    check!(Step::ParentDeath, 1, unsafe { libc::poll(&mut daemon, 1, 0) });
    if daemon.revents != 0 {
        // Nobody is left to wait for us: leave before running anything.
        // SAFETY: _exit ends the process at once.
        unsafe { libc::_exit(127) }
    }

    // SAFETY: plain integer arguments.
    check!(Step::NoNewPrivs, 0, unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) });
    if let Some(ruleset) = plan.landlock_fd {
        for (i, (path, access)) in
            [(c"/tmp", plan.landlock_tmp), (c"/proc", plan.landlock_proc)].into_iter().enumerate()
        {
            // SAFETY: a NUL-terminated literal path inside the sandbox root.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
            check!(Step::Landlock, i, fd);
            let attr = PathBeneathAttr { allowed_access: access, parent_fd: fd };
            // SAFETY: attr is a landlock_path_beneath_attr for rule type PATH_BENEATH; flags 0.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_landlock_add_rule,
                    ruleset,
                    LANDLOCK_RULE_PATH_BENEATH,
                    &attr as *const PathBeneathAttr,
                    0,
                )
            };
            check!(Step::Landlock, i, rc);
            // SAFETY: fd was opened just above and is ours.
            unsafe { libc::close(fd) };
        }
        // SAFETY: ruleset is a landlock ruleset fd this child owns a copy of; flags must be 0.
        check!(Step::Landlock, 2, unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0) });
    }

    // SAFETY: plain integer arguments: mark every fd from 3 up close-on-exec.
    check!(Step::CloseFds, 0, unsafe {
        libc::syscall(libc::SYS_close_range, 3, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC)
    });

    let filter = plan.filter;
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut libc::sock_filter };
    // A zygote's filter has no listener: its children stack their own, with one, on top.
    let flags = if plan.listener { SECCOMP_FILTER_FLAG_NEW_LISTENER } else { 0 };
    // SAFETY: prog points at a BPF program compiled at start-up, alive in plan.
    let listener =
        unsafe { libc::syscall(libc::SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog as *const libc::sock_fprog) };
    check!(Step::Seccomp, 0, listener);
    if plan.listener {
        child_send_fd(ep, plan.notify_sock, listener as c_int);
    }

    // After every fd we open, the seccomp listener included: the daemon may hold more fds
    // than the sandbox's nofile, and a lowered limit refuses every new fd number above it.
    // The filter allows setrlimit, as every program may lower its own limits.
    for (i, (resource, limit)) in plan.rlimits.iter().enumerate() {
        // SAFETY: limit is a valid rlimit; only lowering, which needs no privilege.
        check!(Step::Rlimit, i, unsafe { libc::setrlimit(*resource, limit) });
    }

    // SAFETY: exe, argv and envp are NUL-terminated, and both arrays end with NULL; they live
    // in plan for the whole call. execve returns only on failure.
    unsafe { libc::execve(plan.exe.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr()) };
    child_fail(ep, Step::Exec, 0)
}

/// The capabilities a bounding set is emptied of: 0..=`cap_last` but those in `keep` (a mask
/// of the first 32). Arithmetic only: the child iterates it between clone3 and exec, and the
/// daemon narrows its own set with it (`sys::narrow_bounding_set`).
pub(super) fn caps_to_drop(keep: u32, cap_last: u32) -> impl Iterator<Item = u32> {
    (0..=cap_last).filter(move |&cap| cap >= 32 || keep & (1 << cap) == 0)
}

/// Writes `value` to the file at `path` (a sysctl under the sandbox's own `/proc`); negative
/// with errno set on failure. Async-signal-safe.
fn child_write_file(path: &CStr, value: &[u8]) -> c_long {
    // SAFETY: a NUL-terminated path; flags only.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return -1;
    }
    // SAFETY: value is a live buffer of value.len() bytes.
    let n = unsafe { libc::write(fd, value.as_ptr().cast(), value.len()) };
    // SAFETY: __errno_location only returns this thread's errno slot.
    let slot = unsafe { libc::__errno_location() };
    // SAFETY: the slot is always valid to read; a failed write's errno is kept for the record.
    let errno = unsafe { *slot };
    // SAFETY: fd was opened just above and is ours.
    unsafe { libc::close(fd) };
    if n != value.len() as isize {
        // SAFETY: restoring the write's errno after close, in this thread's own slot.
        unsafe { *slot = if n < 0 { errno } else { libc::EIO } };
        return -1;
    }
    0
}

/// Runs one mount step; returns the syscall's result (negative on failure, errno set).
/// Async-signal-safe: the child calls it between clone3 and execve.
pub(super) fn apply_mount(op: &MountOp) -> c_long {
    match op {
        MountOp::Mount { source, target, fstype, flags, data } => {
            // SAFETY: every pointer is NULL or a NUL-terminated string that outlives the call.
            c_long::from(unsafe {
                libc::mount(opt_ptr(source), target.as_ptr(), opt_ptr(fstype), *flags, opt_ptr(data).cast())
            })
        }
        MountOp::ReadOnlyTree { target } => {
            let attr = MountAttr::READ_ONLY_NOSUID_NODEV;
            // SAFETY: target is a NUL-terminated path; attr is a mount_attr of the size given.
            unsafe {
                libc::syscall(
                    libc::SYS_mount_setattr,
                    libc::AT_FDCWD,
                    target.as_ptr(),
                    AT_RECURSIVE,
                    &attr as *const MountAttr,
                    std::mem::size_of::<MountAttr>(),
                )
            }
        }
    }
}

/// Sends `fd` over the unix socket `sock` with SCM_RIGHTS, then closes our copy.
fn child_send_fd(ep: RawFd, sock: RawFd, fd: c_int) {
    // A u64 array keeps the control buffer aligned for cmsghdr.
    let mut control = [0u64; 4];
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // SAFETY: an all-zero msghdr is valid; we fill in the fields we use.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<c_int>() as u32) } as usize;
    // SAFETY: msg_control points at a buffer of at least CMSG_SPACE(4) bytes.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    // SAFETY: CMSG_LEN only computes a size.
    let len = unsafe { libc::CMSG_LEN(std::mem::size_of::<c_int>() as u32) } as usize;
    // SAFETY: cmsg points into control, which has room for the header and one fd.
    let header = unsafe { &mut *cmsg };
    header.cmsg_level = libc::SOL_SOCKET;
    header.cmsg_type = libc::SCM_RIGHTS;
    header.cmsg_len = len;
    // SAFETY: CMSG_DATA only computes the address just past the header, inside control.
    let data = unsafe { libc::CMSG_DATA(cmsg) };
    // SAFETY: data has room for one c_int (CMSG_SPACE above); it may be unaligned.
    unsafe { std::ptr::write_unaligned(data.cast::<c_int>(), fd) };
    // SAFETY: msg and everything it points to are live locals.
    if unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) } < 0 {
        child_fail(ep, Step::SendListener, 0);
    }
    // SAFETY: fd is the listener seccomp just gave us; the parent has its own copy now.
    unsafe { libc::close(fd) };
}

/// Decodes one error record from the pipe into (step, index, errno).
pub fn decode_error(record: &[u8; ERROR_RECORD]) -> (u32, u32, i32) {
    let word = |i: usize| [record[i], record[i + 1], record[i + 2], record[i + 3]];
    (u32::from_ne_bytes(word(0)), u32::from_ne_bytes(word(4)), i32::from_ne_bytes(word(8)))
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn the_child_stack_has_a_guard_page_below_it() {
        let stack = ChildStack::new().unwrap();
        let base = stack.base as u64;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let perms_at = |addr: u64| {
            maps.lines()
                .find_map(|l| {
                    let (range, rest) = l.split_once(' ')?;
                    let (lo, hi) = range.split_once('-')?;
                    let (lo, hi) = (u64::from_str_radix(lo, 16).ok()?, u64::from_str_radix(hi, 16).ok()?);
                    (lo <= addr && addr < hi).then(|| rest.split(' ').next().unwrap_or("").to_owned())
                })
                .unwrap_or_else(|| panic!("{addr:#x} is not mapped"))
        };
        assert_eq!(perms_at(base), "---p", "the lowest page faults");
        assert_eq!(perms_at(stack.bottom()), "rw-p");
        assert_eq!(perms_at(stack.bottom() + CHILD_STACK as u64 - 1), "rw-p");
        assert_eq!(stack.bottom() % 16, 0);
    }
}
