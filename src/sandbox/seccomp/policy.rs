//! The seccomp policy as data: one rule per syscall, each with the reason for its verdict.
//!
//! Read it top to bottom: what stops the sandbox (`Deny`), what answers an errno so the caller
//! takes its fallback, what depends on the arguments, then what is allowed. A syscall the table
//! does not name answers [`UNLISTED`]. The model is Docker's default profile, trimmed to what the
//! wrappers and ordinary programs need. Nothing here knows BPF: `compile.rs` turns the table into
//! the filter, and `filter-isolated.txt` / `filter-host-network.txt` beside this file show the
//! result, so a change here shows in review as a change of the program.

use nix::libc;

/// What the filter answers for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The call runs.
    Allow,
    /// ENOSYS: "not on this kernel", so the caller takes its fallback.
    Enosys,
    /// EPERM: refused, as for any call the table does not name.
    Eperm,
    /// EAFNOSUPPORT: as on a kernel built without that address family.
    Eafnosupport,
    /// SECCOMP_RET_USER_NOTIF: the caller stops, the daemon names the call in the report and kills
    /// the sandbox (outcome `syscall-denied`). For calls only an attack on the sandbox makes.
    Deny,
}

use Verdict::{Allow, Deny, Eafnosupport, Enosys, Eperm};

/// A syscall the table does not name: refused, but not reported. Most programs probe for
/// optional calls and cope with EPERM; a newer kernel's calls land here until someone decides.
pub const UNLISTED: Verdict = Eperm;
/// A syscall of another ABI (i386 through `int 0x80`) has numbers this table does not describe:
/// no ordinary program under an x86_64 interpreter makes one, so it is reported like an attack.
pub const FOREIGN_ARCH: Verdict = Deny;
/// An x32 syscall (x86_64's number space with bit 30 set) would bypass a check on the plain
/// number; x32 binaries are rare and their libc treats EPERM as an error like any other.
pub const X32: Verdict = Eperm;

/// One syscall's rule. `cases` are tried in order and the first whose conditions all hold
/// decides; when none does (or there are none), `otherwise` is the verdict.
#[derive(Debug)]
pub struct Rule {
    /// The x86_64 syscall number (libc's `SYS_*`).
    pub nr: u32,
    /// `libc`'s constant, e.g. `SYS_mount`.
    pub sys: &'static str,
    pub cases: &'static [Case],
    pub otherwise: Verdict,
    /// For the reviewer; the daemon never prints it (a unit test checks every rule has one).
    #[cfg_attr(not(test), allow(dead_code))]
    pub why: &'static str,
}

impl Rule {
    /// The syscall's name as the man pages write it.
    pub fn name(&self) -> &'static str {
        self.sys.trim_start_matches("SYS_")
    }
}

/// A verdict for the calls whose arguments meet every condition in `when`.
#[derive(Debug)]
pub struct Case {
    pub when: &'static [Cond],
    pub then: Verdict,
}

/// What a case looks at.
#[derive(Debug, Clone, Copy)]
pub enum Cond {
    /// Argument `.0` (counting from 0): only its low 32 bits, the only part the filter reads.
    /// Every argument checked here is an int or a flag word whose upper half the kernel ignores
    /// for these calls, or (ioctl's request) truncates to 32 bits itself.
    Arg(u8, Test),
    /// The sandbox shares the host's network namespace (`network = true`).
    HostNetwork,
}

/// A test of an argument's low 32 bits.
#[derive(Debug, Clone, Copy)]
pub enum Test {
    Eq(u32),
    Ne(u32),
    /// Equal to one of these.
    In(&'static [u32]),
    /// At least one of these bits is set.
    AnyBit(u32),
}

use Cond::{Arg, HostNetwork};
use Test::{AnyBit, Eq, In, Ne};

const fn when(when: &'static [Cond], then: Verdict) -> Case {
    Case { when, then }
}

/// `rule!(SYS_x, Verdict, "why")` for a verdict by number alone,
/// `rule!(SYS_x, [when(&[conditions], Verdict), …], otherwise, "why")` for one by arguments.
macro_rules! rule {
    ($sys:ident, $verdict:ident, $why:literal) => {
        rule!($sys, [], $verdict, $why)
    };
    ($sys:ident, [$($case:expr),* $(,)?], $otherwise:ident, $why:literal) => {
        Rule {
            // Checked here, at compile time, so the generator can take it as a u32: x86_64's
            // numbers are small, and bit 30 (x32) is checked apart.
            nr: {
                assert!(libc::$sys >= 0 && libc::$sys < 1 << 30);
                libc::$sys as u32
            },
            sys: stringify!($sys),
            cases: &[$($case),*],
            otherwise: $otherwise,
            why: $why,
        }
    };
}

/// Namespace flags clone(2) must not carry. CLONE_NEWTIME is not here: its bit is part of
/// clone's exit-signal field, and clone(2) cannot make a time namespace anyway.
pub const CLONE_NS_MASK: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;
/// Namespace flags unshare(2) must not carry: the above and CLONE_NEWTIME.
pub const UNSHARE_NS_MASK: u32 = CLONE_NS_MASK | libc::CLONE_NEWTIME as u32;
/// Socket families a function may create (address_families(7)), netlink apart.
pub const FAMILIES: &[u32] = &[libc::AF_UNIX as u32, libc::AF_INET as u32, libc::AF_INET6 as u32];

const SET_MODE_FILTER: u32 = libc::SECCOMP_SET_MODE_FILTER;
const NEW_LISTENER: u32 = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as u32;

/// What the zygote's filter (`Policy::zygote`) allows beyond a request's, each for a step every
/// request's child takes, under the zygote's filter, before its own filter is on (spawn.rs's
/// steps, repeated in wrappers/zygote.py). Everything else is the request's verdict, with `Deny`
/// answered by SECCOMP_RET_TRACE: with no tracer that is ENOSYS, and it ranks below the
/// request filter's USER_NOTIF, so once a child stacks its own filter on this one it gets exactly
/// a request's verdicts (seccomp(2): the most severe action of all filters wins).
pub const ZYGOTE_RULES: &[Rule] = &[
    rule!(SYS_clone3, Allow, "the request's process: CLONE_INTO_CGROUP and CLONE_PIDFD exist only in clone3"),
    rule!(SYS_setns, Allow, "the child joins its network namespace and the version's template mount namespace"),
    rule!(SYS_unshare, Allow, "the child takes a private copy of the template mount namespace"),
    rule!(SYS_mount, Allow, "the child mounts its own /tmp and /proc and masks host-wide /proc files"),
    rule!(SYS_mount_setattr, Allow, "a read-only tree among the request's mounts"),
    rule!(SYS_sethostname, Allow, "the child names its own UTS namespace"),
    rule!(SYS_seccomp, Allow, "the child installs the request's filter with its user-notification listener"),
];

/// The policy. One entry per syscall (a unit test checks); the order matters only for the
/// argument-checked entries, which the filter tests one after another in this order.
pub const RULES: &[Rule] = &[
    // ---- Deny: only an attack on the sandbox makes these; stop it and name the call. ----
    rule!(SYS_mount, Deny, "mounting is the sandbox's job, done before the function starts"),
    rule!(SYS_umount2, Deny, "unmounting would uncover what the sandbox's mounts hide"),
    rule!(SYS_pivot_root, Deny, "changing the root is the sandbox's job"),
    rule!(SYS_move_mount, Deny, "new mount API: mounting is the sandbox's job"),
    rule!(SYS_open_tree, Deny, "new mount API: cloning a mount tree"),
    rule!(SYS_fsopen, Deny, "new mount API: creating a filesystem context"),
    rule!(SYS_fsconfig, Deny, "new mount API: configuring a filesystem context"),
    rule!(SYS_fsmount, Deny, "new mount API: creating a mount"),
    rule!(SYS_fspick, Deny, "new mount API: reconfiguring an existing mount"),
    rule!(SYS_mount_setattr, Deny, "new mount API: changing mount flags such as read-only"),
    rule!(SYS_chroot, Deny, "the sandbox's root is fixed; chroot is a step of classic escapes"),
    rule!(SYS_setns, Deny, "joining another namespace would leave the sandbox's"),
    rule!(SYS_ptrace, Deny, "inspecting or steering another process"),
    rule!(SYS_process_vm_readv, Deny, "reading another process's memory"),
    rule!(SYS_process_vm_writev, Deny, "writing another process's memory"),
    rule!(SYS_pidfd_getfd, Deny, "taking a file descriptor out of another process"),
    rule!(SYS_kcmp, Deny, "comparing kernel objects of other processes leaks their state"),
    rule!(SYS_bpf, Deny, "eBPF programs and maps are kernel attack surface"),
    rule!(SYS_perf_event_open, Deny, "perf events leak kernel addresses and timing; kernel attack surface"),
    rule!(SYS_userfaultfd, Deny, "stalls the kernel mid-copy at will, a common exploit primitive"),
    rule!(SYS_keyctl, Deny, "keyrings are not namespaced: the host's keys"),
    rule!(SYS_add_key, Deny, "keyrings are not namespaced: the host's keys"),
    rule!(SYS_request_key, Deny, "keyrings are not namespaced: the host's keys"),
    rule!(SYS_kexec_load, Deny, "replacing the running kernel"),
    rule!(SYS_kexec_file_load, Deny, "replacing the running kernel"),
    rule!(SYS_init_module, Deny, "loading a kernel module"),
    rule!(SYS_finit_module, Deny, "loading a kernel module"),
    rule!(SYS_delete_module, Deny, "unloading a kernel module"),
    rule!(SYS_reboot, Deny, "rebooting the host"),
    rule!(SYS_swapon, Deny, "changing the host's swap"),
    rule!(SYS_swapoff, Deny, "changing the host's swap"),
    rule!(SYS_acct, Deny, "process accounting is host-wide"),
    rule!(SYS_settimeofday, Deny, "setting the host's clock (the time is not namespaced)"),
    rule!(SYS_clock_settime, Deny, "setting the host's clock (the time is not namespaced)"),
    rule!(SYS_clock_adjtime, Deny, "adjusting the host's clock (the time is not namespaced)"),
    rule!(SYS_adjtimex, Deny, "adjusting the host's clock (the time is not namespaced)"),
    rule!(SYS_syslog, Deny, "the kernel log leaks kernel addresses and other tenants' events"),
    rule!(SYS_quotactl, Deny, "filesystem quotas are the host's"),
    rule!(SYS_iopl, Deny, "direct access to I/O ports"),
    rule!(SYS_ioperm, Deny, "direct access to I/O ports"),
    rule!(SYS_open_by_handle_at, Deny, "opening a file by handle skips path checks (the 'shocker' escape)"),
    rule!(SYS_name_to_handle_at, Deny, "the first half of open_by_handle_at"),
    rule!(SYS_lookup_dcookie, Deny, "kernel profiling support"),
    rule!(SYS_vhangup, Deny, "hanging up the controlling terminal"),
    rule!(SYS_uselib, Deny, "an obsolete a.out loader call, only seen in exploits"),
    rule!(SYS_modify_ldt, Deny, "custom segment descriptors: a history of kernel bugs, no modern use"),
    // ---- An errno the caller expects: it takes its fallback. ----
    rule!(SYS_io_uring_setup, Enosys, "io_uring's operations bypass seccomp; libuv falls back on ENOSYS"),
    rule!(SYS_io_uring_enter, Enosys, "io_uring's operations bypass seccomp; libuv falls back on ENOSYS"),
    rule!(SYS_io_uring_register, Enosys, "io_uring's operations bypass seccomp; libuv falls back on ENOSYS"),
    rule!(SYS_clone3, Enosys, "its flags sit in memory where BPF cannot look; glibc falls back to clone"),
    rule!(SYS_fchmodat2, Enosys, "newer than the allow list; glibc ≥ 2.39 falls back to fchmodat only on ENOSYS"),
    // ---- By argument. These are tested in this order, before the rest. ----
    rule!(
        SYS_clone,
        [when(&[Arg(0, AnyBit(CLONE_NS_MASK))], Deny)],
        Allow,
        "threads and children are fine, new namespaces are not (clone's flags are a register BPF can read)"
    ),
    rule!(
        SYS_unshare,
        [when(&[Arg(0, AnyBit(UNSHARE_NS_MASK))], Deny)],
        Allow,
        "unsharing files or fs is fine, new namespaces are not"
    ),
    rule!(
        SYS_ioctl,
        [when(&[Arg(1, In(&[libc::TIOCSTI as u32, libc::TIOCLINUX as u32]))], Deny)],
        Allow,
        "terminal and device control is needed; TIOCSTI and TIOCLINUX push input into a terminal"
    ),
    rule!(
        SYS_personality,
        [when(&[Arg(0, In(&[0xffff_ffff, 0]))], Allow)],
        Deny,
        "0xffffffff only asks and PER_LINUX (0) is what every process has; the rest weaken ASLR and the like"
    ),
    rule!(
        SYS_seccomp,
        [when(&[Arg(0, Ne(SET_MODE_FILTER))], Allow), when(&[Arg(1, AnyBit(NEW_LISTENER))], Deny),],
        Eperm,
        "strict mode and GET_ACTION_AVAIL only restrict or ask; a stacked filter answering ERRNO outranks \
         USER_NOTIF and would probe the policy unreported, and a listener of its own could answer CONTINUE \
         for its children once the daemon's listener is gone (seccomp_unotify(2))"
    ),
    rule!(
        SYS_prctl,
        [when(&[Arg(0, Eq(libc::PR_SET_SECCOMP as u32))], Eperm)],
        Allow,
        "names, dumpability, death signals are fine; PR_SET_SECCOMP is the older way to stack a filter"
    ),
    rule!(
        SYS_socket,
        [
            when(&[Arg(0, In(FAMILIES))], Allow),
            when(&[Arg(0, Eq(libc::AF_NETLINK as u32)), Arg(2, Eq(libc::NETLINK_ROUTE as u32))], Allow),
        ],
        Eafnosupport,
        "unix and IP sockets, and route netlink for getaddrinfo's look at the host's addresses; the rest \
         (vsock is not network-namespaced, packet, uevent and audit netlink, …) as if not built in"
    ),
    rule!(
        SYS_socketpair,
        [when(&[Arg(0, Eq(libc::AF_UNIX as u32))], Allow)],
        Eafnosupport,
        "only unix socket pairs exist in practice; the rest as if not built in"
    ),
    rule!(
        SYS_bind,
        [when(&[HostNetwork], Eperm)],
        Allow,
        "in its own namespace it may serve itself; on the host's network Landlock sees only explicit TCP \
         binds, not UDP, so the filter keeps it from serving on the host's addresses or squatting its \
         abstract unix socket names"
    ),
    rule!(
        SYS_listen,
        [when(&[HostNetwork], Eperm)],
        Allow,
        "as bind: listen() on an unbound socket binds an ephemeral port Landlock does not see"
    ),
    // ---- Allow: files. Landlock decides which paths; these are the operations. ----
    rule!(SYS_read, Allow, "reading a file, pipe or socket: the request body comes on stdin"),
    rule!(SYS_write, Allow, "writing a file, pipe or socket: the response goes to stdout"),
    rule!(SYS_readv, Allow, "vectored read"),
    rule!(SYS_writev, Allow, "vectored write"),
    rule!(SYS_pread64, Allow, "positioned read"),
    rule!(SYS_pwrite64, Allow, "positioned write"),
    rule!(SYS_preadv, Allow, "positioned vectored read"),
    rule!(SYS_preadv2, Allow, "positioned vectored read with flags"),
    rule!(SYS_pwritev, Allow, "positioned vectored write"),
    rule!(SYS_pwritev2, Allow, "positioned vectored write with flags"),
    rule!(SYS_open, Allow, "opening a file (Landlock decides which)"),
    rule!(SYS_openat, Allow, "opening a file (Landlock decides which)"),
    rule!(SYS_openat2, Allow, "opening a file with resolve flags (Landlock decides which)"),
    rule!(SYS_creat, Allow, "creating a file (Landlock decides where)"),
    rule!(SYS_close, Allow, "closing a file descriptor"),
    rule!(SYS_close_range, Allow, "closing many file descriptors before an exec"),
    rule!(SYS_lseek, Allow, "moving a file offset"),
    rule!(SYS_stat, Allow, "file metadata"),
    rule!(SYS_fstat, Allow, "file metadata"),
    rule!(SYS_lstat, Allow, "file metadata"),
    rule!(SYS_newfstatat, Allow, "file metadata"),
    rule!(SYS_statx, Allow, "file metadata"),
    rule!(SYS_statfs, Allow, "filesystem metadata (free space)"),
    rule!(SYS_fstatfs, Allow, "filesystem metadata (free space)"),
    rule!(SYS_access, Allow, "checking a file's permissions"),
    rule!(SYS_faccessat, Allow, "checking a file's permissions"),
    rule!(SYS_faccessat2, Allow, "checking a file's permissions"),
    rule!(SYS_getdents, Allow, "listing a directory"),
    rule!(SYS_getdents64, Allow, "listing a directory"),
    rule!(SYS_getcwd, Allow, "the working directory"),
    rule!(SYS_chdir, Allow, "changing the working directory"),
    rule!(SYS_fchdir, Allow, "changing the working directory"),
    rule!(SYS_readlink, Allow, "reading a symlink"),
    rule!(SYS_readlinkat, Allow, "reading a symlink"),
    rule!(SYS_mkdir, Allow, "making a directory (Landlock decides where)"),
    rule!(SYS_mkdirat, Allow, "making a directory (Landlock decides where)"),
    rule!(SYS_rmdir, Allow, "removing a directory (Landlock decides where)"),
    rule!(SYS_unlink, Allow, "removing a file (Landlock decides where)"),
    rule!(SYS_unlinkat, Allow, "removing a file (Landlock decides where)"),
    rule!(SYS_rename, Allow, "renaming a file (Landlock decides where)"),
    rule!(SYS_renameat, Allow, "renaming a file (Landlock decides where)"),
    rule!(SYS_renameat2, Allow, "renaming a file (Landlock decides where)"),
    rule!(SYS_link, Allow, "a hard link (Landlock decides where)"),
    rule!(SYS_linkat, Allow, "a hard link (Landlock decides where)"),
    rule!(SYS_symlink, Allow, "a symlink (Landlock decides where)"),
    rule!(SYS_symlinkat, Allow, "a symlink (Landlock decides where)"),
    rule!(SYS_mknod, Allow, "FIFOs and sockets in /tmp; device nodes need a capability it lacks"),
    rule!(SYS_mknodat, Allow, "FIFOs and sockets in /tmp; device nodes need a capability it lacks"),
    rule!(SYS_chmod, Allow, "modes of its own files"),
    rule!(SYS_fchmod, Allow, "modes of its own files"),
    rule!(SYS_fchmodat, Allow, "modes of its own files"),
    rule!(SYS_chown, Allow, "without capabilities only within its own ids"),
    rule!(SYS_fchown, Allow, "without capabilities only within its own ids"),
    rule!(SYS_fchownat, Allow, "without capabilities only within its own ids"),
    rule!(SYS_lchown, Allow, "without capabilities only within its own ids"),
    rule!(SYS_umask, Allow, "the file creation mask"),
    rule!(SYS_truncate, Allow, "setting a file's size"),
    rule!(SYS_ftruncate, Allow, "setting a file's size"),
    rule!(SYS_fallocate, Allow, "reserving file space (tmpfs is size-capped)"),
    rule!(SYS_fadvise64, Allow, "an access-pattern hint"),
    rule!(SYS_readahead, Allow, "an access-pattern hint"),
    rule!(SYS_fsync, Allow, "flushing a file"),
    rule!(SYS_fdatasync, Allow, "flushing a file"),
    rule!(SYS_sync_file_range, Allow, "flushing part of a file"),
    rule!(SYS_syncfs, Allow, "flushing a filesystem"),
    rule!(SYS_sync, Allow, "flushing every filesystem: Docker allows it, it costs only I/O"),
    rule!(SYS_flock, Allow, "advisory file locks"),
    rule!(SYS_fcntl, Allow, "file descriptor flags and record locks"),
    rule!(SYS_dup, Allow, "duplicating a file descriptor"),
    rule!(SYS_dup2, Allow, "duplicating a file descriptor"),
    rule!(SYS_dup3, Allow, "duplicating a file descriptor"),
    rule!(SYS_pipe, Allow, "a pipe"),
    rule!(SYS_pipe2, Allow, "a pipe"),
    rule!(SYS_splice, Allow, "zero-copy I/O between file descriptors"),
    rule!(SYS_tee, Allow, "zero-copy I/O between pipes"),
    rule!(SYS_vmsplice, Allow, "zero-copy I/O from memory into a pipe"),
    rule!(SYS_sendfile, Allow, "zero-copy file to socket"),
    rule!(SYS_copy_file_range, Allow, "in-kernel file copy"),
    rule!(SYS_utime, Allow, "file timestamps"),
    rule!(SYS_utimes, Allow, "file timestamps"),
    rule!(SYS_utimensat, Allow, "file timestamps"),
    rule!(SYS_futimesat, Allow, "file timestamps"),
    rule!(SYS_getxattr, Allow, "extended attributes (reading)"),
    rule!(SYS_lgetxattr, Allow, "extended attributes (reading)"),
    rule!(SYS_fgetxattr, Allow, "extended attributes (reading)"),
    rule!(SYS_listxattr, Allow, "extended attributes (reading)"),
    rule!(SYS_llistxattr, Allow, "extended attributes (reading)"),
    rule!(SYS_flistxattr, Allow, "extended attributes (reading)"),
    rule!(SYS_setxattr, Allow, "extended attributes of its own files (user.* without capabilities)"),
    rule!(SYS_lsetxattr, Allow, "extended attributes of its own files (user.* without capabilities)"),
    rule!(SYS_fsetxattr, Allow, "extended attributes of its own files (user.* without capabilities)"),
    rule!(SYS_removexattr, Allow, "extended attributes of its own files (user.* without capabilities)"),
    rule!(SYS_lremovexattr, Allow, "extended attributes of its own files (user.* without capabilities)"),
    rule!(SYS_fremovexattr, Allow, "extended attributes of its own files (user.* without capabilities)"),
    rule!(SYS_inotify_init, Allow, "watching files (file watchers, reloaders)"),
    rule!(SYS_inotify_init1, Allow, "watching files (file watchers, reloaders)"),
    rule!(SYS_inotify_add_watch, Allow, "watching files (file watchers, reloaders)"),
    rule!(SYS_inotify_rm_watch, Allow, "watching files (file watchers, reloaders)"),
    rule!(SYS_memfd_create, Allow, "anonymous files: JITs and shared memory"),
    // ---- Allow: memory. The cgroup bounds how much. ----
    rule!(SYS_brk, Allow, "the heap"),
    rule!(SYS_mmap, Allow, "mapping memory and files"),
    rule!(SYS_munmap, Allow, "unmapping memory"),
    rule!(SYS_mprotect, Allow, "page protections: loaders and JITs"),
    rule!(SYS_mremap, Allow, "growing a mapping"),
    rule!(SYS_madvise, Allow, "memory usage hints: allocators return memory with it"),
    rule!(SYS_mincore, Allow, "which pages are resident"),
    rule!(SYS_msync, Allow, "flushing a file mapping"),
    rule!(SYS_remap_file_pages, Allow, "a deprecated mapping call that glibc still exposes; emulated by the kernel"),
    rule!(SYS_mlock, Allow, "locking pages, within RLIMIT_MEMLOCK"),
    rule!(SYS_mlock2, Allow, "locking pages, within RLIMIT_MEMLOCK"),
    rule!(SYS_mlockall, Allow, "locking pages, within RLIMIT_MEMLOCK"),
    rule!(SYS_munlock, Allow, "unlocking pages"),
    rule!(SYS_munlockall, Allow, "unlocking pages"),
    rule!(SYS_membarrier, Allow, "memory barriers across threads: runtimes use it"),
    rule!(SYS_pkey_alloc, Allow, "memory protection keys: JITs use them"),
    rule!(SYS_pkey_free, Allow, "memory protection keys: JITs use them"),
    rule!(SYS_pkey_mprotect, Allow, "memory protection keys: JITs use them"),
    // ---- Allow: processes and threads, inside the sandbox's pid namespace and cgroup. ----
    rule!(SYS_fork, Allow, "a child process (the cgroup's pids limit bounds them)"),
    rule!(SYS_vfork, Allow, "a child process (posix_spawn's way)"),
    rule!(SYS_execve, Allow, "running a program (Landlock decides which)"),
    rule!(SYS_execveat, Allow, "running a program (Landlock decides which)"),
    rule!(SYS_exit, Allow, "ending a thread"),
    rule!(SYS_exit_group, Allow, "ending the process"),
    rule!(SYS_wait4, Allow, "reaping a child"),
    rule!(SYS_waitid, Allow, "reaping a child"),
    rule!(SYS_kill, Allow, "signals, within its own pid namespace and uid"),
    rule!(SYS_tkill, Allow, "signals to a thread"),
    rule!(SYS_tgkill, Allow, "signals to a thread"),
    rule!(SYS_pidfd_open, Allow, "a pidfd for a child"),
    rule!(SYS_pidfd_send_signal, Allow, "signals through a pidfd"),
    rule!(SYS_getpid, Allow, "its own ids"),
    rule!(SYS_getppid, Allow, "its own ids"),
    rule!(SYS_gettid, Allow, "its own ids"),
    rule!(SYS_getpgid, Allow, "process groups: shells use them"),
    rule!(SYS_getpgrp, Allow, "process groups: shells use them"),
    rule!(SYS_setpgid, Allow, "process groups: shells use them"),
    rule!(SYS_getsid, Allow, "sessions"),
    rule!(SYS_setsid, Allow, "sessions: daemonising helpers call it"),
    rule!(SYS_set_tid_address, Allow, "thread start-up (glibc, musl)"),
    rule!(SYS_set_robust_list, Allow, "thread start-up (glibc)"),
    rule!(SYS_get_robust_list, Allow, "robust futexes"),
    rule!(SYS_rseq, Allow, "restartable sequences: glibc registers one per thread"),
    rule!(SYS_futex, Allow, "every lock and condition variable"),
    rule!(SYS_futex_waitv, Allow, "waiting on several futexes"),
    rule!(SYS_arch_prctl, Allow, "thread-local storage set-up (FS base)"),
    rule!(SYS_restart_syscall, Allow, "the kernel's restart after a signal"),
    rule!(SYS_capget, Allow, "asking for capabilities (it has none)"),
    rule!(SYS_capset, Allow, "dropping capabilities (it has none to gain)"),
    rule!(SYS_sched_yield, Allow, "scheduling: yield"),
    rule!(SYS_sched_getaffinity, Allow, "scheduling: which CPUs (runtimes size thread pools by it)"),
    rule!(SYS_sched_setaffinity, Allow, "scheduling: pinning to a subset of its CPUs"),
    rule!(SYS_sched_getattr, Allow, "scheduling: reading the policy"),
    rule!(SYS_sched_setattr, Allow, "scheduling: lowering the policy (raising needs a capability)"),
    rule!(SYS_sched_getparam, Allow, "scheduling: reading the policy"),
    rule!(SYS_sched_setparam, Allow, "scheduling: lowering the policy (raising needs a capability)"),
    rule!(SYS_sched_getscheduler, Allow, "scheduling: reading the policy"),
    rule!(SYS_sched_setscheduler, Allow, "scheduling: lowering the policy (raising needs a capability)"),
    rule!(SYS_sched_get_priority_max, Allow, "scheduling: priority ranges"),
    rule!(SYS_sched_get_priority_min, Allow, "scheduling: priority ranges"),
    rule!(SYS_sched_rr_get_interval, Allow, "scheduling: the round-robin slice"),
    rule!(SYS_getpriority, Allow, "nice values"),
    rule!(SYS_setpriority, Allow, "nice values (raising needs a capability)"),
    rule!(SYS_ioprio_get, Allow, "I/O priority"),
    rule!(SYS_ioprio_set, Allow, "I/O priority (raising needs a capability)"),
    rule!(SYS_getcpu, Allow, "which CPU it runs on"),
    rule!(SYS_getrlimit, Allow, "resource limits"),
    rule!(SYS_setrlimit, Allow, "resource limits (lowering; raising needs a capability)"),
    rule!(SYS_prlimit64, Allow, "resource limits (lowering; raising needs a capability)"),
    rule!(SYS_getrusage, Allow, "its own resource usage"),
    rule!(SYS_times, Allow, "its own CPU times"),
    // ---- Allow: credentials. No capabilities, so it can only move among its own ids. ----
    rule!(SYS_getuid, Allow, "its own ids"),
    rule!(SYS_geteuid, Allow, "its own ids"),
    rule!(SYS_getgid, Allow, "its own ids"),
    rule!(SYS_getegid, Allow, "its own ids"),
    rule!(SYS_getgroups, Allow, "its own ids"),
    rule!(SYS_getresuid, Allow, "its own ids"),
    rule!(SYS_getresgid, Allow, "its own ids"),
    rule!(SYS_setuid, Allow, "dropping privileges: without capabilities only to its own ids"),
    rule!(SYS_setgid, Allow, "dropping privileges: without capabilities only to its own ids"),
    rule!(SYS_setreuid, Allow, "dropping privileges: without capabilities only to its own ids"),
    rule!(SYS_setregid, Allow, "dropping privileges: without capabilities only to its own ids"),
    rule!(SYS_setresuid, Allow, "dropping privileges: without capabilities only to its own ids"),
    rule!(SYS_setresgid, Allow, "dropping privileges: without capabilities only to its own ids"),
    rule!(SYS_setgroups, Allow, "dropping groups: without capabilities it fails"),
    rule!(SYS_setfsuid, Allow, "file-system ids: without capabilities only its own"),
    rule!(SYS_setfsgid, Allow, "file-system ids: without capabilities only its own"),
    // ---- Allow: signals and timers. ----
    rule!(SYS_rt_sigaction, Allow, "signal handlers"),
    rule!(SYS_rt_sigprocmask, Allow, "signal masks"),
    rule!(SYS_rt_sigreturn, Allow, "returning from a signal handler"),
    rule!(SYS_rt_sigpending, Allow, "pending signals"),
    rule!(SYS_rt_sigsuspend, Allow, "waiting for a signal"),
    rule!(SYS_rt_sigtimedwait, Allow, "waiting for a signal"),
    rule!(SYS_rt_sigqueueinfo, Allow, "queueing a signal, within its own processes"),
    rule!(SYS_rt_tgsigqueueinfo, Allow, "queueing a signal, within its own processes"),
    rule!(SYS_sigaltstack, Allow, "an alternate signal stack: runtimes catch stack overflow with it"),
    rule!(SYS_signalfd, Allow, "signals as a file descriptor"),
    rule!(SYS_signalfd4, Allow, "signals as a file descriptor"),
    rule!(SYS_pause, Allow, "waiting for a signal"),
    rule!(SYS_alarm, Allow, "a timer signal"),
    rule!(SYS_getitimer, Allow, "interval timers"),
    rule!(SYS_setitimer, Allow, "interval timers"),
    rule!(SYS_clock_gettime, Allow, "reading a clock (mostly in the vDSO)"),
    rule!(SYS_clock_getres, Allow, "a clock's resolution"),
    rule!(SYS_clock_nanosleep, Allow, "sleeping"),
    rule!(SYS_nanosleep, Allow, "sleeping"),
    rule!(SYS_gettimeofday, Allow, "reading the clock"),
    rule!(SYS_time, Allow, "reading the clock"),
    rule!(SYS_timer_create, Allow, "POSIX timers"),
    rule!(SYS_timer_delete, Allow, "POSIX timers"),
    rule!(SYS_timer_getoverrun, Allow, "POSIX timers"),
    rule!(SYS_timer_gettime, Allow, "POSIX timers"),
    rule!(SYS_timer_settime, Allow, "POSIX timers"),
    rule!(SYS_timerfd_create, Allow, "timers as file descriptors: event loops"),
    rule!(SYS_timerfd_gettime, Allow, "timers as file descriptors: event loops"),
    rule!(SYS_timerfd_settime, Allow, "timers as file descriptors: event loops"),
    // ---- Allow: waiting for events. ----
    rule!(SYS_epoll_create, Allow, "event loops (Node, asyncio)"),
    rule!(SYS_epoll_create1, Allow, "event loops (Node, asyncio)"),
    rule!(SYS_epoll_ctl, Allow, "event loops (Node, asyncio)"),
    rule!(SYS_epoll_wait, Allow, "event loops (Node, asyncio)"),
    rule!(SYS_epoll_pwait, Allow, "event loops (Node, asyncio)"),
    rule!(SYS_epoll_pwait2, Allow, "event loops (Node, asyncio)"),
    rule!(SYS_poll, Allow, "waiting on file descriptors"),
    rule!(SYS_ppoll, Allow, "waiting on file descriptors"),
    rule!(SYS_select, Allow, "waiting on file descriptors"),
    rule!(SYS_pselect6, Allow, "waiting on file descriptors"),
    rule!(SYS_eventfd, Allow, "event counters: event loops wake themselves with them"),
    rule!(SYS_eventfd2, Allow, "event counters: event loops wake themselves with them"),
    // ---- Allow: sockets it may create (socket and socketpair are checked by family above). ----
    rule!(SYS_connect, Allow, "outgoing connections, as far as its network namespace reaches"),
    rule!(SYS_accept, Allow, "accepting on a socket it made"),
    rule!(SYS_accept4, Allow, "accepting on a socket it made"),
    rule!(SYS_getsockname, Allow, "socket addresses"),
    rule!(SYS_getpeername, Allow, "socket addresses"),
    rule!(SYS_getsockopt, Allow, "socket options"),
    rule!(SYS_setsockopt, Allow, "socket options (the privileged ones need a capability)"),
    rule!(SYS_sendto, Allow, "sending"),
    rule!(SYS_sendmsg, Allow, "sending"),
    rule!(SYS_sendmmsg, Allow, "sending"),
    rule!(SYS_recvfrom, Allow, "receiving"),
    rule!(SYS_recvmsg, Allow, "receiving"),
    rule!(SYS_recvmmsg, Allow, "receiving"),
    rule!(SYS_shutdown, Allow, "half-closing a connection"),
    // ---- Allow: IPC, in the sandbox's own IPC namespace. ----
    rule!(SYS_msgget, Allow, "System V message queues (own IPC namespace)"),
    rule!(SYS_msgctl, Allow, "System V message queues (own IPC namespace)"),
    rule!(SYS_msgsnd, Allow, "System V message queues (own IPC namespace)"),
    rule!(SYS_msgrcv, Allow, "System V message queues (own IPC namespace)"),
    rule!(SYS_semget, Allow, "System V semaphores (own IPC namespace)"),
    rule!(SYS_semctl, Allow, "System V semaphores (own IPC namespace)"),
    rule!(SYS_semop, Allow, "System V semaphores (own IPC namespace)"),
    rule!(SYS_semtimedop, Allow, "System V semaphores (own IPC namespace)"),
    rule!(SYS_shmget, Allow, "System V shared memory (own IPC namespace)"),
    rule!(SYS_shmat, Allow, "System V shared memory (own IPC namespace)"),
    rule!(SYS_shmdt, Allow, "System V shared memory (own IPC namespace)"),
    rule!(SYS_shmctl, Allow, "System V shared memory (own IPC namespace)"),
    rule!(SYS_mq_open, Allow, "POSIX message queues (own IPC namespace)"),
    rule!(SYS_mq_unlink, Allow, "POSIX message queues (own IPC namespace)"),
    rule!(SYS_mq_timedsend, Allow, "POSIX message queues (own IPC namespace)"),
    rule!(SYS_mq_timedreceive, Allow, "POSIX message queues (own IPC namespace)"),
    rule!(SYS_mq_notify, Allow, "POSIX message queues (own IPC namespace)"),
    rule!(SYS_mq_getsetattr, Allow, "POSIX message queues (own IPC namespace)"),
    // ---- Allow: asynchronous I/O (the old kind; io_uring answers ENOSYS above). ----
    rule!(SYS_io_setup, Allow, "Linux AIO, which goes through ordinary file checks"),
    rule!(SYS_io_submit, Allow, "Linux AIO, which goes through ordinary file checks"),
    rule!(SYS_io_getevents, Allow, "Linux AIO, which goes through ordinary file checks"),
    rule!(SYS_io_cancel, Allow, "Linux AIO, which goes through ordinary file checks"),
    rule!(SYS_io_destroy, Allow, "Linux AIO, which goes through ordinary file checks"),
    // ---- Allow: the rest. ----
    rule!(SYS_uname, Allow, "the kernel's name and version (the hostname is the sandbox's own)"),
    rule!(SYS_sysinfo, Allow, "memory and uptime figures: runtimes size themselves by them"),
    rule!(SYS_getrandom, Allow, "random bytes"),
    rule!(SYS_landlock_create_ruleset, Allow, "a function may restrict itself further"),
    rule!(SYS_landlock_add_rule, Allow, "a function may restrict itself further"),
    rule!(SYS_landlock_restrict_self, Allow, "a function may restrict itself further"),
];
