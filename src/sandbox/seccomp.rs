//! The seccomp policy (seccomp(2)), compiled once with seccompiler into three filters the
//! child installs last, right before execve:
//!
//! 1. `allow`: Docker's default allow-list, trimmed to what the wrappers and ordinary
//!    programs need; anything else answers EPERM ("harmless probes return an errno"). It
//!    also lets the denied calls through, so that filter 3 decides what happens to them.
//! 2. `enosys`: io_uring and clone3 answer ENOSYS, so libuv and glibc fall back cleanly
//!    (clone3's flags sit in memory where BPF cannot look; clone's are a register).
//! 3. `deny`: calls that are never legitimate in a function — new namespaces, ptrace,
//!    mounting, bpf, keyrings, kexec, modules, TIOCSTI — stop the caller and notify the
//!    parent through a user-notification listener (SECCOMP_RET_USER_NOTIF); the parent
//!    names the syscall in the report and kills the sandbox (outcome `syscall-denied`).
//!
//! The kernel runs every filter and takes the most severe verdict (ERRNO outranks
//! USER_NOTIF outranks ALLOW), which is why the allow-list must also allow the denied calls.

use std::collections::BTreeMap;

use nix::libc;
use seccompiler::{SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch};

use super::BpfProgram;

/// Which compiled filter carries the user-notification listener.
pub const NOTIFY_INDEX: usize = 2;

const SECCOMP_RET_TRACE: u32 = 0x7ff0_0000;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
/// seccompiler has no USER_NOTIF action: the deny filter is compiled with TRACE carrying this
/// marker, and every `ret TRACE|MARK` is rewritten to `ret USER_NOTIF` afterwards.
const NOTIF_MARK: u32 = 0x0f4a;
const BPF_RET_K: u16 = 0x06;

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
    SYS_sched_setparam, SYS_sched_setscheduler, SYS_sched_yield, SYS_seccomp, SYS_select,
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
    SYS_waitid, SYS_write, SYS_writev, SYS_clone, SYS_personality, SYS_unshare,
);

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

/// Namespace flags clone(2) and unshare(2) must not carry.
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64, libc::CLONE_NEWCGROUP as u64, libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64, libc::CLONE_NEWUSER as u64, libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64, 0x80, // CLONE_NEWTIME
];

/// Why the policy could not be compiled (a bug, caught by the unit test).
#[derive(Debug, thiserror::Error)]
#[error("failed to compile the seccomp policy: {0}")]
pub struct SeccompError(#[from] seccompiler::BackendError);

/// The name of a syscall number, for reports of denied calls.
pub fn syscall_name(nr: i64) -> String {
    DENIED
        .iter()
        .chain(ALLOWED)
        .chain(ENOSYS)
        .find(|(_, n)| *n == nr)
        .map_or_else(|| format!("syscall {nr}"), |(name, _)| name.trim_start_matches("SYS_").to_owned())
}

fn arch() -> TargetArch {
    std::env::consts::ARCH.try_into().expect("faas builds only for architectures seccompiler supports")
}

fn cond(arg: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    Ok(SeccompCondition::new(arg, len, op, value)?)
}

fn unconditional(list: &[(&str, i64)]) -> BTreeMap<i64, Vec<SeccompRule>> {
    list.iter().map(|&(_, nr)| (nr, vec![])).collect()
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, mismatch: SeccompAction, matched: SeccompAction) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(rules, mismatch, matched, arch())?;
    let prog: seccompiler::BpfProgram = filter.try_into()?;
    Ok(prog.into_iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect())
}

/// Compiles the three filters, in the order the child installs them.
pub fn compile_filters() -> Result<Vec<BpfProgram>, SeccompError> {
    let mut allow = unconditional(ALLOWED);
    allow.extend(unconditional(DENIED));
    allow.extend(unconditional(ENOSYS));
    let allow = compile(allow, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow)?;

    let enosys = compile(unconditional(ENOSYS), SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32))?;

    let mut deny = unconditional(DENIED);
    let mut ns_rules = Vec::new();
    for &flag in NAMESPACE_FLAGS {
        ns_rules.push(SeccompRule::new(vec![cond(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(flag), flag)?])?);
    }
    deny.insert(libc::SYS_clone, ns_rules.clone());
    deny.insert(libc::SYS_unshare, ns_rules);
    deny.insert(
        libc::SYS_ioctl,
        vec![
            SeccompRule::new(vec![cond(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, libc::TIOCSTI)?])?,
            SeccompRule::new(vec![cond(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, libc::TIOCLINUX)?])?,
        ],
    );
    // personality(0xffffffff) only asks; PER_LINUX (0) is what everyone has already.
    deny.insert(
        libc::SYS_personality,
        vec![SeccompRule::new(vec![
            cond(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, 0xffff_ffff)?,
            cond(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, 0)?,
        ])?],
    );
    let mut deny = compile(deny, SeccompAction::Allow, SeccompAction::Trace(NOTIF_MARK))?;
    for insn in &mut deny {
        if insn.code == BPF_RET_K && insn.k == SECCOMP_RET_TRACE | NOTIF_MARK {
            insn.k = SECCOMP_RET_USER_NOTIF;
        }
    }
    Ok(vec![allow, enosys, deny])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_fit_the_bpf_limit() {
        let filters = compile_filters().unwrap();
        assert_eq!(filters.len(), 3);
        for f in &filters {
            // BPF_MAXINSNS (linux/bpf_common.h)
            assert!(f.len() <= 4096, "{} instructions", f.len());
        }
        let notif = filters[NOTIFY_INDEX].iter().filter(|i| i.code == BPF_RET_K && i.k == SECCOMP_RET_USER_NOTIF).count();
        assert!(notif > 0, "the deny filter must notify");
        assert!(!filters[NOTIFY_INDEX].iter().any(|i| i.code == BPF_RET_K && i.k & 0xffff_0000 == SECCOMP_RET_TRACE));
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
