//! The seccomp policy (seccomp(2)): one classic-BPF filter, generated once at start-up and
//! installed by the child as its last step before execve.
//!
//! - Docker's default allow-list, trimmed to what the wrappers and ordinary programs need, is
//!   allowed; anything not listed answers EPERM ("harmless probes return an errno").
//! - io_uring and clone3 answer ENOSYS, so libuv and glibc fall back cleanly (clone3's flags
//!   sit in memory where BPF cannot look; clone's are a register).
//! - Calls that are never legitimate in a function — new namespaces, ptrace, mounting, bpf,
//!   keyrings, kexec, modules, TIOCSTI, personality changes, a seccomp listener of its own,
//!   any syscall of a foreign ABI (i386 `int 0x80`) — return SECCOMP_RET_USER_NOTIF: the caller
//!   stops, the parent receives the syscall number on the listener, names it in the report and
//!   kills the sandbox (outcome `syscall-denied`).
//! - A function may not install seccomp filters of its own (EPERM). A stacked filter could
//!   answer ERRNO for a deny-listed call, which outranks USER_NOTIF, and so probe the policy
//!   without being reported; and `SECCOMP_FILTER_FLAG_NEW_LISTENER` would hand the sandbox a
//!   supervisor that can answer CONTINUE for its own children the moment the daemon's listener
//!   is gone (seccomp_unotify(2)). Few programs a function runs install filters, and those that
//!   do treat EPERM as "no sandboxing here".
//! - Socket families are an allow-list: `AF_UNIX`, `AF_INET`, `AF_INET6`, and `AF_NETLINK`
//!   with `NETLINK_ROUTE` only (glibc's getaddrinfo asks it for the host's addresses); the rest
//!   (vsock, which is not network-namespaced, packet, uevent and audit netlink, …) answer
//!   EAFNOSUPPORT, as for a kernel built without them.
//! - With the host's network (`network = true`), `bind(2)` and `listen(2)` answer EPERM: Landlock
//!   sees only explicit TCP binds, not the ephemeral bind `listen()` does on an unbound socket,
//!   and has no UDP rights at all, so the filter is what keeps a function from serving on the
//!   host's addresses (or squatting the host's abstract unix socket names).
//!
//! Why not seccompiler's output directly: it compiles each rule as a linear chain (1,655
//! instructions for this policy), and on attach the kernel JITs the filter and emulates it for
//! every syscall number to fill its action cache. That cost 2.7 ms of a 5 ms sandbox set-up.
//! Here the syscall number dispatches through a binary search to 32-syscall blocks, each of
//! which tests one bit of a mask (about 170 instructions in all). seccompiler stays as the
//! reference: a unit test compiles the same policy with it and checks, with a small cBPF
//! interpreter, that both give the same verdict for every syscall number and argument case.

use nix::libc;

use super::BpfProgram;

const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

macro_rules! syscalls {
    ($($name:ident),* $(,)?) => { &[$((stringify!($name), libc::$name as i64)),*] };
}

/// Docker's default profile, unconditional part, minus what a function has no use for.
const ALLOWED: &[(&str, i64)] = syscalls!(
    SYS_accept, SYS_accept4, SYS_access, SYS_alarm, SYS_arch_prctl, SYS_bind, SYS_brk, SYS_capget,
    SYS_capset, SYS_chdir, SYS_chmod, SYS_chown, SYS_clock_getres, SYS_clock_gettime,
    SYS_clock_nanosleep, SYS_close, SYS_close_range, SYS_connect, SYS_copy_file_range, SYS_creat,
    SYS_dup, SYS_dup2, SYS_dup3, SYS_epoll_create, SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_pwait,
    SYS_epoll_pwait2, SYS_epoll_wait, SYS_eventfd, SYS_eventfd2, SYS_execve, SYS_execveat, SYS_exit,
    SYS_exit_group, SYS_faccessat, SYS_faccessat2, SYS_fadvise64, SYS_fallocate, SYS_fchdir,
    SYS_fchmod, SYS_fchmodat, SYS_fchown, SYS_fchownat, SYS_fcntl, SYS_fdatasync, SYS_fgetxattr,
    SYS_flistxattr, SYS_flock, SYS_fork, SYS_fremovexattr, SYS_fsetxattr, SYS_fstat, SYS_fstatfs,
    SYS_fsync, SYS_ftruncate, SYS_futex, SYS_futex_waitv, SYS_futimesat, SYS_getcpu, SYS_getcwd,
    SYS_getdents, SYS_getdents64, SYS_getegid, SYS_geteuid, SYS_getgid, SYS_getgroups, SYS_getitimer,
    SYS_getpeername, SYS_getpgid, SYS_getpgrp, SYS_getpid, SYS_getppid, SYS_getpriority,
    SYS_getrandom, SYS_getresgid, SYS_getresuid, SYS_getrlimit, SYS_get_robust_list, SYS_getrusage,
    SYS_getsid, SYS_getsockname, SYS_getsockopt, SYS_gettid, SYS_gettimeofday, SYS_getuid,
    SYS_getxattr, SYS_inotify_add_watch, SYS_inotify_init, SYS_inotify_init1, SYS_inotify_rm_watch,
    SYS_io_cancel, SYS_ioctl, SYS_io_destroy, SYS_io_getevents, SYS_ioprio_get,
    SYS_ioprio_set, SYS_io_setup, SYS_io_submit, SYS_kill, SYS_landlock_add_rule,
    SYS_landlock_create_ruleset, SYS_landlock_restrict_self, SYS_lchown, SYS_lgetxattr, SYS_link,
    SYS_linkat, SYS_listen, SYS_listxattr, SYS_llistxattr, SYS_lremovexattr, SYS_lseek,
    SYS_lsetxattr, SYS_lstat, SYS_madvise, SYS_membarrier, SYS_memfd_create, SYS_mincore, SYS_mkdir,
    SYS_mkdirat, SYS_mknod, SYS_mknodat, SYS_mlock, SYS_mlock2, SYS_mlockall, SYS_mmap,
    SYS_mprotect, SYS_mq_getsetattr, SYS_mq_notify, SYS_mq_open, SYS_mq_timedreceive,
    SYS_mq_timedsend, SYS_mq_unlink, SYS_mremap, SYS_msgctl, SYS_msgget, SYS_msgrcv, SYS_msgsnd,
    SYS_msync, SYS_munlock, SYS_munlockall, SYS_munmap, SYS_nanosleep, SYS_newfstatat, SYS_open,
    SYS_openat, SYS_openat2, SYS_pause, SYS_pidfd_open, SYS_pidfd_send_signal, SYS_pipe, SYS_pipe2,
    SYS_pkey_alloc, SYS_pkey_free, SYS_pkey_mprotect, SYS_poll, SYS_ppoll, SYS_prctl, SYS_pread64,
    SYS_preadv, SYS_preadv2, SYS_prlimit64, SYS_pselect6, SYS_pwrite64, SYS_pwritev, SYS_pwritev2,
    SYS_read, SYS_readahead, SYS_readlink, SYS_readlinkat, SYS_readv, SYS_recvfrom, SYS_recvmmsg,
    SYS_recvmsg, SYS_remap_file_pages, SYS_removexattr, SYS_rename, SYS_renameat, SYS_renameat2,
    SYS_restart_syscall, SYS_rmdir, SYS_rseq, SYS_rt_sigaction, SYS_rt_sigpending,
    SYS_rt_sigprocmask, SYS_rt_sigqueueinfo, SYS_rt_sigreturn, SYS_rt_sigsuspend,
    SYS_rt_sigtimedwait, SYS_rt_tgsigqueueinfo, SYS_sched_getaffinity, SYS_sched_getattr,
    SYS_sched_getparam, SYS_sched_get_priority_max, SYS_sched_get_priority_min,
    SYS_sched_getscheduler, SYS_sched_rr_get_interval, SYS_sched_setaffinity, SYS_sched_setattr,
    SYS_sched_setparam, SYS_sched_setscheduler, SYS_sched_yield, SYS_select,
    SYS_semctl, SYS_semget, SYS_semop, SYS_semtimedop, SYS_sendfile, SYS_sendmmsg, SYS_sendmsg,
    SYS_sendto, SYS_setfsgid, SYS_setfsuid, SYS_setgid, SYS_setgroups, SYS_setitimer, SYS_setpgid,
    SYS_setpriority, SYS_setregid, SYS_setresgid, SYS_setresuid, SYS_setreuid, SYS_setrlimit,
    SYS_set_robust_list, SYS_setsid, SYS_setsockopt, SYS_set_tid_address, SYS_setuid, SYS_setxattr,
    SYS_shmat, SYS_shmctl, SYS_shmdt, SYS_shmget, SYS_shutdown, SYS_sigaltstack, SYS_signalfd,
    SYS_signalfd4, SYS_socket, SYS_socketpair, SYS_splice, SYS_stat, SYS_statfs, SYS_statx,
    SYS_symlink, SYS_symlinkat, SYS_sync, SYS_sync_file_range, SYS_syncfs, SYS_sysinfo, SYS_tee,
    SYS_tgkill, SYS_time, SYS_timer_create, SYS_timer_delete, SYS_timer_getoverrun,
    SYS_timer_gettime, SYS_timer_settime, SYS_timerfd_create, SYS_timerfd_gettime,
    SYS_timerfd_settime, SYS_times, SYS_tkill, SYS_truncate, SYS_umask, SYS_uname, SYS_unlink,
    SYS_unlinkat, SYS_utime, SYS_utimensat, SYS_utimes, SYS_vfork, SYS_vmsplice, SYS_wait4,
    SYS_waitid, SYS_write, SYS_writev, SYS_clone, SYS_personality, SYS_unshare, SYS_seccomp,
);

/// Checked by argument before the table: the number alone does not decide their verdict.
const BY_ARGUMENT: &[i64] = &[
    libc::SYS_clone,
    libc::SYS_unshare,
    libc::SYS_ioctl,
    libc::SYS_personality,
    libc::SYS_seccomp,
    libc::SYS_prctl,
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_bind,
    libc::SYS_listen,
];

/// Socket families a function may create (address_families(7)); others answer EAFNOSUPPORT.
const FAMILIES: &[u32] = &[libc::AF_UNIX as u32, libc::AF_INET as u32, libc::AF_INET6 as u32];

/// What differs between the filters of one daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The sandbox shares the host's network namespace: it must not bind or listen there.
    pub host_network: bool,
}

/// Refused outright: a function calling one of these is attacking the sandbox.
const DENIED: &[(&str, i64)] = syscalls!(
    SYS_mount, SYS_umount2, SYS_pivot_root, SYS_move_mount, SYS_open_tree, SYS_fsopen, SYS_fsconfig,
    SYS_fsmount, SYS_fspick, SYS_mount_setattr, SYS_setns, SYS_ptrace, SYS_process_vm_readv,
    SYS_process_vm_writev, SYS_bpf, SYS_perf_event_open, SYS_userfaultfd, SYS_keyctl, SYS_add_key,
    SYS_request_key, SYS_kexec_load, SYS_kexec_file_load, SYS_init_module, SYS_finit_module,
    SYS_delete_module, SYS_reboot, SYS_swapon, SYS_swapoff, SYS_chroot, SYS_acct,
    SYS_settimeofday, SYS_clock_settime, SYS_clock_adjtime, SYS_adjtimex, SYS_syslog,
    SYS_quotactl, SYS_iopl, SYS_ioperm, SYS_open_by_handle_at, SYS_name_to_handle_at,
    SYS_pidfd_getfd, SYS_kcmp, SYS_lookup_dcookie, SYS_vhangup, SYS_uselib, SYS_modify_ldt,
);

/// Answer ENOSYS: "not here, use the fallback".
const ENOSYS: &[(&str, i64)] = syscalls!(SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register, SYS_clone3);

/// Namespace flags clone(2) must not carry (CLONE_NEWTIME's bit is part of clone's exit
/// signal field there, and clone(2) cannot make a time namespace anyway).
const CLONE_NS_MASK: u32 = (libc::CLONE_NEWNS | libc::CLONE_NEWCGROUP | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNET) as u32;
/// Namespace flags unshare(2) must not carry: the above and CLONE_NEWTIME.
const UNSHARE_NS_MASK: u32 = CLONE_NS_MASK | 0x80;

const SECCOMP_SET_MODE_FILTER: u32 = 1;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: u32 = 1 << 3;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;
/// x32 syscalls on x86_64 carry this bit; they would bypass a check on the plain number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Why the filter could not be built (a bug, caught by the unit tests).
#[derive(Debug, thiserror::Error)]
#[error("failed to build the seccomp filter: {0}")]
pub struct SeccompError(String);

/// The name of a denied call, for reports: `arch` is the notification's AUDIT_ARCH_* value.
/// A call of another ABI is `ABI:NUMBER`, e.g. `i386:20` for getpid through `int 0x80`.
pub fn denied_name(nr: i64, arch: u32) -> String {
    const AUDIT_ARCH_I386: u32 = 0x4000_0003;
    match arch {
        AUDIT_ARCH => syscall_name(nr),
        AUDIT_ARCH_I386 => format!("i386:{nr}"),
        other => format!("arch-{other:#x}:{nr}"),
    }
}

/// The name of a syscall number, for reports of denied calls.
pub fn syscall_name(nr: i64) -> String {
    DENIED
        .iter()
        .chain(ALLOWED)
        .chain(ENOSYS)
        .find(|(_, n)| *n == nr)
        .map_or_else(|| format!("syscall {nr}"), |(name, _)| name.trim_start_matches("SYS_").to_owned())
}

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20;
const LD_IMM: u16 = 0x00;
const ALU_AND_K: u16 = 0x54;
const ALU_LSH_X: u16 = 0x6c;
const MISC_TAX: u16 = 0x07;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGE_K: u16 = 0x35;
const JMP_JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

// struct seccomp_data offsets.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARG0_LO: u32 = 16;
const DATA_ARG1_LO: u32 = 24;
const DATA_ARG2_LO: u32 = 32;

#[derive(Clone, Copy)]
enum To {
    Next,
    Label(usize),
}

struct Insn {
    code: u16,
    jt: To,
    jf: To,
    k: u32,
}

/// A few lines of assembler: instructions with symbolic forward jumps.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }
    fn place(&mut self, l: usize) {
        self.labels[l] = Some(self.insns.len());
    }
    fn stmt(&mut self, code: u16, k: u32) {
        self.insns.push(Insn { code, jt: To::Next, jf: To::Next, k });
    }
    fn jump(&mut self, code: u16, k: u32, jt: To, jf: To) {
        self.insns.push(Insn { code, jt, jf, k });
    }
    /// An unconditional jump: its 32-bit offset sits in k, resolved in `finish`.
    fn ja(&mut self, l: usize) {
        self.insns.push(Insn { code: JMP_JA, jt: To::Next, jf: To::Next, k: l as u32 });
    }
    fn ret(&mut self, k: u32) {
        self.stmt(RET_K, k);
    }
    fn finish(self) -> Result<BpfProgram, SeccompError> {
        let at = |l: usize| self.labels[l].ok_or_else(|| SeccompError(format!("label {l} never placed")));
        let mut out = Vec::with_capacity(self.insns.len());
        for (pc, i) in self.insns.iter().enumerate() {
            let off = |t: To| -> Result<u8, SeccompError> {
                match t {
                    To::Next => Ok(0),
                    To::Label(l) => {
                        let d = at(l)?.checked_sub(pc + 1).ok_or_else(|| SeccompError("backward jump".into()))?;
                        u8::try_from(d).map_err(|_| SeccompError(format!("jump of {d} at {pc} is too long for cBPF")))
                    }
                }
            };
            let k = if i.code == JMP_JA { (at(i.k as usize)? - (pc + 1)) as u32 } else { i.k };
            out.push(libc::sock_filter { code: i.code, jt: off(i.jt)?, jf: off(i.jf)?, k });
        }
        if out.len() > 4096 {
            return Err(SeccompError(format!("{} instructions exceed BPF_MAXINSNS", out.len())));
        }
        Ok(out)
    }
}

fn mask_of(list: &[(&str, i64)], block: u32) -> u32 {
    list.iter()
        .filter(|(_, nr)| (*nr as u32) / 32 == block)
        .fold(0, |m, (_, nr)| m | 1 << (*nr as u32 % 32))
}

/// Builds the filter for `policy`: see the module docs for the policy and the layout.
pub fn build_filter(policy: Policy) -> Result<BpfProgram, SeccompError> {
    let max_nr = ALLOWED.iter().chain(DENIED).chain(ENOSYS).map(|(_, n)| *n as u32).max().unwrap_or(0);
    let blocks = max_nr / 32 + 1;
    let mut a = Asm::default();
    let (allow, notif, eperm, eafnosupport) = (a.label(), a.label(), a.label(), a.label());
    let by_arg: Vec<usize> = BY_ARGUMENT.iter().map(|_| a.label()).collect();
    let tree = a.label();
    let at = |nr: i64| by_arg[BY_ARGUMENT.iter().position(|&n| n == nr).expect("listed in BY_ARGUMENT")];

    a.stmt(LD_W_ABS, DATA_ARCH);
    // A foreign ABI (i386 via int 0x80 on x86_64) has its own syscall numbers, which this
    // filter does not describe: stop and report it like a deny-listed call.
    a.jump(JMP_JEQ_K, AUDIT_ARCH, To::Next, To::Label(notif));
    a.stmt(LD_W_ABS, DATA_NR);
    if cfg!(target_arch = "x86_64") {
        a.jump(JMP_JSET_K, X32_SYSCALL_BIT, To::Label(eperm), To::Next);
    }
    for (&nr, &l) in BY_ARGUMENT.iter().zip(&by_arg) {
        a.jump(JMP_JEQ_K, nr as u32, To::Label(l), To::Next);
    }
    a.jump(JMP_JGE_K, blocks * 32, To::Label(eperm), To::Next);
    a.ja(tree);

    a.place(at(libc::SYS_clone));
    a.stmt(LD_W_ABS, DATA_ARG0_LO);
    a.jump(JMP_JSET_K, CLONE_NS_MASK, To::Label(notif), To::Label(allow));
    a.place(at(libc::SYS_unshare));
    a.stmt(LD_W_ABS, DATA_ARG0_LO);
    a.jump(JMP_JSET_K, UNSHARE_NS_MASK, To::Label(notif), To::Label(allow));
    a.place(at(libc::SYS_ioctl));
    a.stmt(LD_W_ABS, DATA_ARG1_LO);
    a.jump(JMP_JEQ_K, libc::TIOCSTI as u32, To::Label(notif), To::Next);
    a.jump(JMP_JEQ_K, libc::TIOCLINUX as u32, To::Label(notif), To::Label(allow));
    // personality(0xffffffff) only asks, and PER_LINUX (0) is what every process has.
    a.place(at(libc::SYS_personality));
    a.stmt(LD_W_ABS, DATA_ARG0_LO);
    a.jump(JMP_JEQ_K, 0xffff_ffff, To::Label(allow), To::Next);
    a.jump(JMP_JEQ_K, 0, To::Label(allow), To::Label(notif));
    // seccomp(SET_MODE_FILTER, flags, …): a listener of its own is an attack, any other filter
    // is refused; the other operations (strict mode, GET_ACTION_AVAIL, …) only ask or restrict.
    a.place(at(libc::SYS_seccomp));
    a.stmt(LD_W_ABS, DATA_ARG0_LO);
    a.jump(JMP_JEQ_K, SECCOMP_SET_MODE_FILTER, To::Next, To::Label(allow));
    a.stmt(LD_W_ABS, DATA_ARG1_LO);
    a.jump(JMP_JSET_K, SECCOMP_FILTER_FLAG_NEW_LISTENER, To::Label(notif), To::Label(eperm));
    // prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, …) is the older way to stack a filter.
    a.place(at(libc::SYS_prctl));
    a.stmt(LD_W_ABS, DATA_ARG0_LO);
    a.jump(JMP_JEQ_K, libc::PR_SET_SECCOMP as u32, To::Label(eperm), To::Label(allow));
    a.place(at(libc::SYS_socket));
    a.stmt(LD_W_ABS, DATA_ARG0_LO);
    for &family in FAMILIES {
        a.jump(JMP_JEQ_K, family, To::Label(allow), To::Next);
    }
    a.jump(JMP_JEQ_K, libc::AF_NETLINK as u32, To::Next, To::Label(eafnosupport));
    a.stmt(LD_W_ABS, DATA_ARG2_LO);
    a.jump(JMP_JEQ_K, libc::NETLINK_ROUTE as u32, To::Label(allow), To::Label(eafnosupport));
    a.place(at(libc::SYS_socketpair));
    a.stmt(LD_W_ABS, DATA_ARG0_LO);
    a.jump(JMP_JEQ_K, libc::AF_UNIX as u32, To::Label(allow), To::Label(eafnosupport));
    for nr in [libc::SYS_bind, libc::SYS_listen] {
        a.place(at(nr));
        if policy.host_network {
            a.ja(eperm);
        } else {
            a.ja(allow);
        }
    }

    a.place(allow);
    a.ret(SECCOMP_RET_ALLOW);
    a.place(notif);
    a.ret(SECCOMP_RET_USER_NOTIF);
    a.place(eperm);
    a.ret(SECCOMP_RET_ERRNO | libc::EPERM as u32);
    a.place(eafnosupport);
    a.ret(SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32);

    // Binary search on the syscall number down to its 32-syscall block.
    let leaves: Vec<usize> = (0..blocks).map(|_| a.label()).collect();
    let mut queue = std::collections::VecDeque::from([(0u32, blocks, tree)]);
    while let Some((lo, hi, l)) = queue.pop_front() {
        a.place(l);
        let mid = (lo + hi) / 2;
        let side = |a: &mut Asm, q: &mut std::collections::VecDeque<(u32, u32, usize)>, lo: u32, hi: u32| {
            if hi - lo == 1 {
                leaves[lo as usize]
            } else {
                let l = a.label();
                q.push_back((lo, hi, l));
                l
            }
        };
        let right = side(&mut a, &mut queue, mid, hi);
        let left = side(&mut a, &mut queue, lo, mid);
        a.jump(JMP_JGE_K, mid * 32, To::Label(right), To::Label(left));
    }
    // Each block: A = 1 << (nr % 32), then one bit test per verdict.
    for (b, &l) in leaves.iter().enumerate() {
        let b = b as u32;
        a.place(l);
        a.stmt(ALU_AND_K, 31);
        a.stmt(MISC_TAX, 0);
        a.stmt(LD_IMM, 1);
        a.stmt(ALU_LSH_X, 0);
        for (mask, verdict) in [
            (mask_of(DENIED, b), SECCOMP_RET_USER_NOTIF),
            (mask_of(ENOSYS, b), SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
            (mask_of(ALLOWED, b), SECCOMP_RET_ALLOW),
        ] {
            if mask != 0 {
                let skip = a.label();
                a.jump(JMP_JSET_K, mask, To::Next, To::Label(skip));
                a.ret(verdict);
                a.place(skip);
            }
        }
        a.ret(SECCOMP_RET_ERRNO | libc::EPERM as u32);
    }
    a.finish()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use seccompiler::{SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition, SeccompFilter, SeccompRule};

    use super::*;

    const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;

    /// Runs a classic BPF program on a seccomp_data, as the kernel would.
    fn run(prog: &[libc::sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        let word = |off: u32| u32::from_ne_bytes(data[off as usize..off as usize + 4].try_into().unwrap());
        let (mut acc, mut x, mut pc) = (0u32, 0u32, 0usize);
        loop {
            let i = &prog[pc];
            pc += 1;
            let cond = |c: bool| if c { i.jt as usize } else { i.jf as usize };
            match i.code {
                LD_W_ABS => acc = word(i.k),
                LD_IMM => acc = i.k,
                ALU_AND_K => acc &= i.k,
                ALU_LSH_X => acc = acc.wrapping_shl(x),
                MISC_TAX => x = acc,
                JMP_JA => pc += i.k as usize,
                JMP_JEQ_K => pc += cond(acc == i.k),
                JMP_JGE_K => pc += cond(acc >= i.k),
                0x25 => pc += cond(acc > i.k),
                JMP_JSET_K => pc += cond(acc & i.k != 0),
                RET_K => return i.k,
                other => panic!("opcode {other:#x} not in the test interpreter"),
            }
        }
    }

    /// How severe a verdict is (seccomp(2): the most severe of all filters wins).
    fn severity(v: u32) -> u32 {
        match v & 0xffff_0000 {
            SECCOMP_RET_KILL_PROCESS => 7,
            0 => 6,
            0x0003_0000 => 5,
            SECCOMP_RET_ERRNO => 4,
            SECCOMP_RET_USER_NOTIF => 3,
            0x7ff0_0000 => 2,
            0x7ffc_0000 => 1,
            _ => 0,
        }
    }

    /// The same policy, written the plain way with seccompiler: four filters.
    fn reference(policy: Policy) -> Vec<Vec<libc::sock_filter>> {
        let arch = std::env::consts::ARCH.try_into().unwrap();
        let plain = |list: &[(&str, i64)]| list.iter().map(|&(_, nr)| (nr, vec![])).collect::<BTreeMap<i64, Vec<SeccompRule>>>();
        let compile = |rules, miss, hit| -> Vec<libc::sock_filter> {
            let prog: seccompiler::BpfProgram = SeccompFilter::new(rules, miss, hit, arch).unwrap().try_into().unwrap();
            prog.into_iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect()
        };
        let c = |arg, len, op, v| SeccompCondition::new(arg, len, op, v).unwrap();
        let rule = |conds| SeccompRule::new(conds).unwrap();
        let nl = u64::from(SECCOMP_FILTER_FLAG_NEW_LISTENER);
        let mut allow = plain(ALLOWED);
        allow.extend(plain(DENIED));
        allow.extend(plain(ENOSYS));
        // Allowed unless a stacked filter (seccomp with a listener is allowed here so that the
        // deny filter's USER_NOTIF, less severe than ERRNO, decides it).
        allow.insert(libc::SYS_seccomp, vec![rule(vec![c(0, Len::Dword, Op::Ne, 1)]), rule(vec![c(1, Len::Dword, Op::MaskedEq(nl), nl)])]);
        allow.insert(libc::SYS_prctl, vec![rule(vec![c(0, Len::Dword, Op::Ne, libc::PR_SET_SECCOMP as u64)])]);
        if policy.host_network {
            allow.remove(&libc::SYS_bind);
            allow.remove(&libc::SYS_listen);
        }
        let mut deny = plain(DENIED);
        let ns = |mask: u32| (0..32).filter(|b| mask & 1 << b != 0).map(|b| rule(vec![c(0, Len::Dword, Op::MaskedEq(1 << b), 1 << b)])).collect::<Vec<_>>();
        deny.insert(libc::SYS_clone, ns(CLONE_NS_MASK));
        deny.insert(libc::SYS_unshare, ns(UNSHARE_NS_MASK));
        deny.insert(libc::SYS_ioctl, vec![rule(vec![c(1, Len::Dword, Op::Eq, libc::TIOCSTI)]), rule(vec![c(1, Len::Dword, Op::Eq, libc::TIOCLINUX)])]);
        deny.insert(libc::SYS_personality, vec![rule(vec![c(0, Len::Dword, Op::Ne, 0xffff_ffff), c(0, Len::Dword, Op::Ne, 0)])]);
        deny.insert(libc::SYS_seccomp, vec![rule(vec![c(0, Len::Dword, Op::Eq, 1), c(1, Len::Dword, Op::MaskedEq(nl), nl)])]);
        // seccompiler has no USER_NOTIF action; TRACE stands in and is mapped below.
        let mut deny = compile(deny, SeccompAction::Allow, SeccompAction::Trace(1));
        for i in &mut deny {
            if i.code == RET_K && i.k == 0x7ff0_0001 {
                i.k = SECCOMP_RET_USER_NOTIF;
            }
        }
        let mut families = BTreeMap::new();
        let mut other_family = vec![c(2, Len::Dword, Op::Ne, 0)];
        other_family.insert(0, c(0, Len::Dword, Op::Eq, libc::AF_NETLINK as u64));
        let not_listed = FAMILIES.iter().chain(&[libc::AF_NETLINK as u32]).map(|&f| c(0, Len::Dword, Op::Ne, u64::from(f))).collect();
        families.insert(libc::SYS_socket, vec![rule(not_listed), rule(other_family)]);
        families.insert(libc::SYS_socketpair, vec![rule(vec![c(0, Len::Dword, Op::Ne, libc::AF_UNIX as u64)])]);
        vec![
            compile(allow, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow),
            compile(plain(ENOSYS), SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32)),
            compile(families, SeccompAction::Allow, SeccompAction::Errno(libc::EAFNOSUPPORT as u32)),
            deny,
        ]
    }

    #[test]
    fn same_verdicts_as_the_seccompiler_reference() {
        let cases: Vec<[u64; 6]> = vec![
            [0; 6],
            [libc::SIGCHLD as u64, 0, 0, 0, 0, 0],
            [(libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0],
            [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
            [libc::CLONE_NEWNET as u64 | libc::SIGCHLD as u64, 0, 0, 0, 0, 0],
            [0x80, 0, 0, 0, 0, 0],
            [0, libc::TIOCSTI, 0, 0, 0, 0],
            [0, libc::TIOCLINUX, 0, 0, 0, 0],
            [0, libc::TCGETS, 0, 0, 0, 0],
            [0xffff_ffff, 0, 0, 0, 0, 0],
            [0x0040000, 0, 0, 0, 0, 0],
            // seccomp(SET_MODE_FILTER, 0 | NEW_LISTENER | TSYNC), seccomp(GET_ACTION_AVAIL)
            [1, 0, 0, 0, 0, 0],
            [1, 1 << 3, 0, 0, 0, 0],
            [1, 1 << 3 | 1, 0, 0, 0, 0],
            [2, 0, 0, 0, 0, 0],
            // prctl(PR_SET_SECCOMP, 2), prctl(PR_SET_NAME)
            [libc::PR_SET_SECCOMP as u64, 2, 0, 0, 0, 0],
            [libc::PR_SET_NAME as u64, 0, 0, 0, 0, 0],
            // socket(family, type, protocol)
            [libc::AF_UNIX as u64, 1, 0, 0, 0, 0],
            [libc::AF_INET as u64, 2, 0, 0, 0, 0],
            [libc::AF_INET6 as u64, 1, 0, 0, 0, 0],
            [libc::AF_NETLINK as u64, 3, libc::NETLINK_ROUTE as u64, 0, 0, 0],
            [libc::AF_NETLINK as u64, 3, libc::NETLINK_KOBJECT_UEVENT as u64, 0, 0, 0],
            [libc::AF_NETLINK as u64, 3, libc::NETLINK_AUDIT as u64, 0, 0, 0],
            [libc::AF_VSOCK as u64, 1, 0, 0, 0, 0],
            [libc::AF_PACKET as u64, 3, 0, 0, 0, 0],
            [libc::AF_ALG as u64, 5, 0, 0, 0, 0],
            [1 << 32 | libc::AF_UNIX as u64, 1, 0, 0, 0, 0],
        ];
        for host_network in [false, true] {
            let policy = Policy { host_network };
            let ours = build_filter(policy).unwrap();
            let reference = reference(policy);
            for nr in 0..600u32 {
                for args in &cases {
                    let theirs = reference.iter().map(|f| run(f, nr, AUDIT_ARCH, *args)).max_by_key(|v| severity(*v)).unwrap();
                    assert_eq!(run(&ours, nr, AUDIT_ARCH, *args), theirs, "syscall {nr} ({}) with args {args:x?}, {policy:?}", syscall_name(nr.into()));
                }
            }
            assert!(ours.len() < 320, "{} instructions", ours.len());
        }
    }

    /// The policy itself, not only its compilation: what the README names as refused is on the
    /// deny list (a typo moving one to ALLOWED would pass the reference test above, which is
    /// built from the same tables).
    #[test]
    fn the_policy_refuses_what_the_readme_names() {
        let f = build_filter(Policy { host_network: false }).unwrap();
        let host = build_filter(Policy { host_network: true }).unwrap();
        let verdict = |f: &BpfProgram, nr: i64, args: [u64; 6]| run(f, nr as u32, AUDIT_ARCH, args);
        let eperm = SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let eafnosupport = SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32;
        for nr in [
            libc::SYS_mount, libc::SYS_umount2, libc::SYS_pivot_root, libc::SYS_move_mount, libc::SYS_open_tree,
            libc::SYS_fsopen, libc::SYS_fsmount, libc::SYS_setns, libc::SYS_ptrace, libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev, libc::SYS_bpf, libc::SYS_perf_event_open, libc::SYS_userfaultfd,
            libc::SYS_keyctl, libc::SYS_add_key, libc::SYS_request_key, libc::SYS_kexec_load, libc::SYS_kexec_file_load,
            libc::SYS_init_module, libc::SYS_finit_module, libc::SYS_delete_module, libc::SYS_reboot, libc::SYS_chroot,
            libc::SYS_open_by_handle_at, libc::SYS_name_to_handle_at, libc::SYS_pidfd_getfd, libc::SYS_kcmp,
            libc::SYS_syslog, libc::SYS_iopl, libc::SYS_ioperm, libc::SYS_modify_ldt, libc::SYS_swapon,
        ] {
            assert_eq!(verdict(&f, nr, [0; 6]), SECCOMP_RET_USER_NOTIF, "{} must be denied and reported", syscall_name(nr));
        }
        for flag in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWNET, libc::CLONE_NEWPID] {
            assert_eq!(verdict(&f, libc::SYS_unshare, [flag as u64, 0, 0, 0, 0, 0]), SECCOMP_RET_USER_NOTIF);
            assert_eq!(verdict(&f, libc::SYS_clone, [flag as u64, 0, 0, 0, 0, 0]), SECCOMP_RET_USER_NOTIF);
        }
        assert_eq!(verdict(&f, libc::SYS_ioctl, [0, libc::TIOCSTI, 0, 0, 0, 0]), SECCOMP_RET_USER_NOTIF);
        assert_eq!(verdict(&f, libc::SYS_personality, [8, 0, 0, 0, 0, 0]), SECCOMP_RET_USER_NOTIF);
        assert_eq!(verdict(&f, libc::SYS_seccomp, [1, 1 << 3, 0, 0, 0, 0]), SECCOMP_RET_USER_NOTIF, "own listener");
        assert_eq!(verdict(&f, libc::SYS_seccomp, [1, 0, 0, 0, 0, 0]), eperm, "stacked filter");
        assert_eq!(verdict(&f, libc::SYS_prctl, [libc::PR_SET_SECCOMP as u64, 2, 0, 0, 0, 0]), eperm);
        for nr in [libc::SYS_io_uring_setup, libc::SYS_clone3] {
            assert_eq!(verdict(&f, nr, [0; 6]), SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
        }
        for family in [libc::AF_VSOCK, libc::AF_PACKET, libc::AF_ALG, libc::AF_KEY, libc::AF_BLUETOOTH, libc::AF_TIPC] {
            assert_eq!(verdict(&f, libc::SYS_socket, [family as u64, 1, 0, 0, 0, 0]), eafnosupport, "family {family}");
        }
        for proto in [libc::NETLINK_KOBJECT_UEVENT, libc::NETLINK_AUDIT, libc::NETLINK_SOCK_DIAG, libc::NETLINK_NETFILTER] {
            assert_eq!(verdict(&f, libc::SYS_socket, [libc::AF_NETLINK as u64, 3, proto as u64, 0, 0, 0]), eafnosupport, "netlink {proto}");
        }
        for nr in [libc::SYS_bind, libc::SYS_listen] {
            assert_eq!(verdict(&f, nr, [3, 0, 0, 0, 0, 0]), SECCOMP_RET_ALLOW, "no network: an empty namespace");
            assert_eq!(verdict(&host, nr, [3, 0, 0, 0, 0, 0]), eperm, "host network");
        }
    }

    #[test]
    fn foreign_arch_is_reported_and_x32_refused() {
        let ours = build_filter(Policy { host_network: false }).unwrap();
        assert_eq!(run(&ours, libc::SYS_read as u32, 0x4000_0003, [0; 6]), SECCOMP_RET_USER_NOTIF, "reported, not a bare SIGSYS");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(run(&ours, libc::SYS_read as u32 | X32_SYSCALL_BIT, AUDIT_ARCH, [0; 6]), SECCOMP_RET_ERRNO | libc::EPERM as u32);
        }
    }

    #[test]
    fn lists_do_not_overlap() {
        for (name, nr) in DENIED.iter().chain(ENOSYS) {
            assert!(!ALLOWED.iter().any(|(_, n)| n == nr), "{name} is both allowed and refused");
        }
    }

    #[test]
    fn names() {
        assert_eq!(syscall_name(libc::SYS_mount), "mount");
        assert_eq!(syscall_name(libc::SYS_ptrace), "ptrace");
        assert_eq!(syscall_name(99999), "syscall 99999");
    }
}
