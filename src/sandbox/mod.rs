//! The sandbox a request runs in: `PreparedSandbox` (built once per function version: root
//! skeleton, mount list, Landlock ruleset, seccomp filters) and `ChildPlan` (per request: fds,
//! uid, argv, envp) — everything the child needs, built before the fork, so the child itself
//! only makes raw syscalls (spawn.rs).

pub mod cgroup;
pub mod landlock;
pub mod namespaces;
pub mod netns;
pub mod seccomp;
#[allow(unsafe_code)]
pub mod spawn;

use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;

use nix::libc;

pub use spawn::CStringArray;

/// One step of the child's mount list, with every argument already a C string.
#[derive(Debug)]
pub enum MountOp {
    /// mount(2) with these arguments.
    Mount {
        /// Source path or fs name.
        source: Option<CString>,
        /// Mount point.
        target: CString,
        /// Filesystem type.
        fstype: Option<CString>,
        /// MS_* flags.
        flags: libc::c_ulong,
        /// fs options.
        data: Option<CString>,
    },
    /// mount_setattr(2) on a whole tree: read-only, nosuid, nodev.
    ReadOnlyTree {
        /// Mount point.
        target: CString,
    },
}

impl MountOp {
    /// What this step does, for error messages.
    pub fn describe(&self) -> String {
        match self {
            MountOp::Mount { source, target, fstype, .. } => format!(
                "mount {} on {}",
                source.as_ref().or(fstype.as_ref()).map_or("(none)".into(), |s| s.to_string_lossy()),
                target.to_string_lossy()
            ),
            MountOp::ReadOnlyTree { target } => format!("make {} read-only", target.to_string_lossy()),
        }
    }
}

/// The steps of child_main, in order; a failure names one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// dup2 of the stdio pipes.
    Stdio = 1,
    /// Signal mask, dispositions, parent-death signal.
    Signals,
    /// setns into the empty network namespace.
    NetNs,
    /// sethostname.
    Hostname,
    /// Joining the template mount namespace and unsharing a copy of it.
    MountNs,
    /// One of this request's own mounts.
    Mount,
    /// setrlimit.
    Rlimit,
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
    /// PR_SET_NO_NEW_PRIVS.
    NoNewPrivs,
    /// landlock_restrict_self.
    Landlock,
    /// close_range.
    CloseFds,
    /// Installing a seccomp filter.
    Seccomp,
    /// Sending the seccomp listener to the parent.
    SendListener,
    /// execve.
    Exec,
    /// setsid.
    Session,
    /// The IPC namespace's SysV limits (without a memory cgroup).
    IpcLimits,
    /// PR_SET_PDEATHSIG and the check that the daemon still lives.
    ParentDeath,
}

impl Step {
    fn from_u32(v: u32) -> Option<Step> {
        use Step::*;
        [
            Stdio, Signals, NetNs, Hostname, MountNs, Mount, Rlimit, CapBound, Groups, Gid, Uid, Caps, NoNewPrivs, Landlock, CloseFds, Seccomp,
            SendListener, Exec, Session, IpcLimits, ParentDeath,
        ]
            .into_iter()
            .find(|s| *s as u32 == v)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let s = match self {
            Step::Stdio => "set up stdio",
            Step::Signals => "reset signals",
            Step::NetNs => "join the empty network namespace",
            Step::Hostname => "set the hostname",
            Step::MountNs => "enter a copy of the function's mount namespace",
            Step::Mount => "mount",
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

/// Why a sandbox could not be started. Goes to the journal in full; the caller gets a 503.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A per-request resource (pipe, socket, uid, cgroup) could not be made.
    #[error("failed to prepare {what} for the sandbox: {source}")]
    Prepare {
        /// What.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// clone3 itself failed.
    #[error("failed to clone the sandbox process: {0}{h}", h = hint(.0))]
    Clone(#[source] io::Error),
    /// A step in the child failed.
    #[error("failed to {step}{detail} in the sandbox: {source}{}", hint(.source))]
    Child {
        /// The step.
        step: Step,
        /// Which mount, rlimit or filter, when the step has several.
        detail: String,
        /// errno from the child.
        #[source]
        source: io::Error,
    },
    /// The function's policy cannot be met on this host.
    #[error("{0}")]
    Policy(String),
    /// The function version's template mount namespace could not be built at load.
    #[error("{0}")]
    Template(String),
}

fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) => "\nhint: building sandboxes needs root (CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID)",
        Some(libc::ENOSPC) => "\nhint: a namespace or pid limit is exhausted (user.max_*_namespaces, pids)",
        _ => "",
    }
}

/// A BPF program in the kernel's layout.
pub type BpfProgram = Vec<libc::sock_filter>;

/// What every request of one function version shares: built at registry load.
pub struct PreparedSandbox {
    /// Root skeleton (removed when the last invocation using it is gone).
    #[allow(dead_code, reason = "held for its Drop, which removes the version directory")]
    pub skeleton: namespaces::Skeleton,
    /// The template mount namespace: the read-only root, already pivoted into. An error
    /// (not root, say) is kept and answered per request, so the function still loads.
    pub template: Result<OwnedFd, String>,
    /// The sandbox's hostname.
    pub hostname: CString,
    /// Each request's own mounts (tmpfs `/tmp`, `/proc`), run inside a copy of the template.
    pub request_mounts: Vec<MountOp>,
    /// The Landlock ruleset, when the kernel has Landlock.
    pub landlock: landlock::Prepared,
    /// seccomp filters to install, in order.
    pub seccomp: Arc<Vec<BpfProgram>>,
    /// Which filter carries the user-notification listener.
    pub seccomp_notify_index: usize,
    /// Without a memory cgroup: (sysctl under `/proc`, value) bounding SysV IPC memory in the
    /// sandbox's own IPC namespace.
    pub ipc_limits: Vec<(CString, Vec<u8>)>,
    /// The program to exec.
    pub exe: CString,
    /// argv, the same for every request.
    pub argv: Vec<CString>,
}

/// Everything one child needs, prepared by the parent before clone3.
pub struct ChildPlan<'a> {
    /// The function version's shared parts.
    pub sandbox: &'a PreparedSandbox,
    /// Namespace flags for clone3.
    pub clone_flags: u64,
    /// The function version's template mount namespace.
    pub template_fd: RawFd,
    /// The request's cgroup directory, for CLONE_INTO_CGROUP.
    pub cgroup_fd: Option<RawFd>,
    /// The empty network namespace to join; None for host network.
    pub netns_fd: Option<RawFd>,
    /// Child ends of stdin, stdout, stderr.
    pub stdio: [RawFd; 3],
    /// Write end of the close-on-exec error pipe.
    pub err_pipe: RawFd,
    /// This request's Landlock ruleset, with the fixed rules in it.
    pub landlock_fd: Option<RawFd>,
    /// Rights for the child's `/tmp` rule.
    pub landlock_tmp: u64,
    /// Rights for the child's `/proc` rule.
    pub landlock_proc: u64,
    /// Socket to send the seccomp listener on.
    pub notify_sock: Option<RawFd>,
    /// The sandbox's uid, gid.
    pub uid: libc::uid_t,
    /// The sandbox's gid.
    pub gid: libc::gid_t,
    /// The highest capability number: the child drops 0..=cap_last from its bounding set.
    pub cap_last: u32,
    /// A pidfd of the daemon process, to see whether it died before PR_SET_PDEATHSIG was armed.
    pub daemon_pidfd: RawFd,
    /// (sysctl path under the sandbox's `/proc`, value) pairs to write before dropping root.
    pub ipc_limits: &'a [(CString, Vec<u8>)],
    /// Signals whose disposition the daemon changed, to reset.
    pub changed_signals: &'a [libc::c_int],
    /// (resource, limit) pairs.
    pub rlimits: Vec<(libc::__rlimit_resource_t, libc::rlimit)>,
    /// The program to exec.
    pub exe: &'a CStr,
    /// argv.
    pub argv: CStringArray,
    /// envp.
    pub envp: CStringArray,
}

/// Turns an error record from the child into a `SpawnError` naming the step.
pub fn child_error(plan_mounts: &[MountOp], record: &[u8; spawn::ERROR_RECORD]) -> SpawnError {
    let (step, index, errno) = spawn::decode_error(record);
    let step = Step::from_u32(step).unwrap_or(Step::Exec);
    let detail = match step {
        Step::Mount => plan_mounts.get(index as usize).map_or_else(|| " (chdir /code)".to_owned(), |m| format!(" ({})", m.describe())),
        Step::Rlimit | Step::Seccomp | Step::CapBound | Step::IpcLimits | Step::ParentDeath => format!(" (#{index})"),
        Step::MountNs => [" (setns)", " (unshare)"].get(index as usize).unwrap_or(&"").to_string(),
        _ => String::new(),
    };
    SpawnError::Child { step, detail, source: io::Error::from_raw_os_error(errno) }
}

/// Reads the highest capability number the kernel supports.
pub fn cap_last() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Where the state for one function version lives.
pub fn version_dir(state_dir: &std::path::Path, name: &str, version: u64) -> PathBuf {
    state_dir.join("fn").join(format!("{name}-{version}"))
}
