//! The sandbox, behind one front door of three entry points:
//!
//! - [`Host::probe`] (host.rs): what this kernel and host give, found once: the network
//!   namespace pool, the uid pool, the cgroup subtree, the seccomp filters, which layers hold.
//! - [`prepare`]: one function version's shared parts, built at load from a plain [`Spec`]:
//!   root skeleton and template mount namespace, request mounts, Landlock rules, argv.
//! - [`start`] (running.rs): one request's sandbox, from a [`Launch`]; it returns a
//!   [`Running`] sandbox that owns waiting for the exec, its exit, denied-syscall
//!   notifications, the kill and the teardown.
//!
//! Everything the child needs is built before the fork (`ChildPlan`), so the child itself only
//! makes raw syscalls (spawn.rs). The rest of the crate names no syscall and no submodule.
//! Unsafe code lives in spawn.rs (the fork path) and sys.rs (the parent's raw calls) only.

mod cgroup;
mod host;
mod landlock;
mod namespaces;
mod netns;
mod running;
mod seccomp;
#[allow(unsafe_code)]
mod spawn;
#[allow(unsafe_code)]
mod sys;
mod uids;
mod zygote;

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::libc;

pub use cgroup::{own_cgroup, Usage};
pub use host::{Host, LayerState, FALLBACK_BOUNDS};
pub use landlock::LandlockError;
pub use running::{start, Event, Launch, Running, Stdio};
pub use sys::{nofile_hard_limit, openat2, ExitStatus};
pub use uids::{check_private_dir, UnsafeDir};
pub use zygote::{native_library, start_warm, Zygote, ZygoteSpec, ZYGOTE_ENV};

use spawn::CStringArray;

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

/// The steps of a child, in order (shared with the zygote's native steps, which report the
/// same numbers).
pub use faas_zygote::Step;

/// Why a sandbox could not be started. Goes to the journal in full; the caller gets a 503
/// naming the step (`public_reason`).
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A per-request resource (pipe, socket, pidfd) could not be made.
    #[error("failed to prepare {what} for the sandbox: {source}")]
    Prepare {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The request's cgroup could not be made.
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    /// The request's Landlock ruleset could not be made.
    #[error(transparent)]
    Landlock(#[from] LandlockError),
    /// clone3 itself failed.
    #[error("failed to clone the sandbox process: {0}{h}", h = hint(None, .0))]
    Clone(#[source] io::Error),
    /// A step in the child failed; `detail` names the mount, rlimit or program.
    #[error("failed to {step}{detail} in the sandbox: {source}{}", hint(Some(*step), .source))]
    Child {
        step: Step,
        detail: String,
        #[source]
        source: io::Error,
    },
    /// A layer this request needs is missing on this host (seccomp, pidfds, network
    /// namespaces, or Landlock for a function that requires it).
    #[error("{0}")]
    Missing(String),
    /// Every sandbox uid is leased.
    #[error("every sandbox uid is in use")]
    NoUid,
    /// The function version's template mount namespace could not be built at load.
    #[error("failed to build the sandbox root: {0}")]
    Template(#[source] Arc<io::Error>),
    /// The function version's zygote could not fork this request (gone, stuck, or never ready).
    #[error("the zygote failed: {0}")]
    Zygote(String),
    /// The zygote runs but cannot take this request: its queue is full, or the request's
    /// environment is larger than one datagram may be. The request starts cold; the zygote
    /// stays (a client must not be able to kill it, and every request in it, at will).
    #[error("the zygote cannot take this request: {0}")]
    ZygoteBusy(String),
    /// The daemon lost the seccomp listener: the sandbox was killed, never run unsupervised.
    #[error("failed to take the seccomp listener from the sandbox: {0}")]
    Listener(#[source] io::Error),
}

impl SpawnError {
    /// What the caller may read: the step, never a path or an errno.
    pub fn public_reason(&self) -> String {
        match self {
            SpawnError::Child { step, .. } => format!("step \"{step}\" failed"),
            SpawnError::Clone(_) => "the sandbox process could not be created".into(),
            SpawnError::Prepare { what, .. } => format!("{what} could not be prepared"),
            SpawnError::Cgroup(_) => "the cgroup could not be prepared".into(),
            SpawnError::Landlock(_) => "the landlock ruleset could not be prepared".into(),
            SpawnError::Missing(why) => why.clone(),
            SpawnError::NoUid => "every sandbox uid is in use".into(),
            SpawnError::Template(_) => "the function's sandbox root could not be built".into(),
            SpawnError::Listener(_) => "step \"take the seccomp listener\" failed".into(),
            SpawnError::Zygote(_) => "the function's warm interpreter failed".into(),
            SpawnError::ZygoteBusy(_) => "the function's warm interpreter could not take the request".into(),
        }
    }
}

fn hint(step: Option<Step>, e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::EACCES) if step == Some(Step::Exec) => {
            "\nhint: check [runtimes] in faas.toml and that the program exists and is executable"
        }
        Some(libc::EPERM) => "\nhint: building sandboxes needs root (CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID)",
        Some(libc::ENOSPC) => "\nhint: a namespace or pid limit is exhausted (user.max_*_namespaces, pids)",
        _ => "",
    }
}

/// A BPF program in the kernel's layout.
pub type BpfProgram = Vec<libc::sock_filter>;

/// What every request of one function version shares: built by [`prepare`] at load.
pub struct PreparedSandbox {
    #[allow(
        dead_code,
        reason = "held for its Drop, which removes the version directory once the last request is gone"
    )]
    skeleton: namespaces::Skeleton,
    /// The template mount namespace: the read-only root, already pivoted into. An error (not
    /// root, say) is kept and answered per request, so the function still loads.
    template: Result<OwnedFd, Arc<io::Error>>,
    hostname: CString,
    /// Each request's own mounts (tmpfs `/tmp`, `/proc`, masks), made in a copy of the template.
    request_mounts: Vec<MountOp>,
    landlock: landlock::Prepared,
    /// The filter for this function's network mode; empty when the host has no seccomp.
    seccomp: Arc<BpfProgram>,
    /// Without a memory cgroup: (sysctl under `/proc`, value) bounding SysV IPC memory in the
    /// sandbox's own IPC namespace.
    ipc_limits: Vec<(CString, Vec<u8>)>,
    /// Which network namespace its sandboxes get.
    network: Network,
    /// Size of `/tmp`, which (with the output limit) bounds a file the sandbox writes.
    tmp_bytes: u64,
    exe: CString,
    argv: Vec<CString>,
}

impl PreparedSandbox {
    /// How much of Landlock this version's sandboxes get: `enforced`, `partial` or `missing`.
    pub fn landlock_word(&self) -> &'static str {
        self.landlock.enforcement.word()
    }

    /// What Landlock enforces here, in a sentence (`landlock ABI 7: fully enforced …`).
    pub fn landlock_summary(&self) -> String {
        self.landlock.enforcement.to_string()
    }
}

/// Where a function's code comes from.
pub enum CodeSource<'a> {
    /// A directory on the host, bound read-only at `/code`.
    Dir(&'a Path),
    /// One file written into the version directory: its path under `/code`, its text, and
    /// whether it is a program.
    Inline { file: &'a Path, text: &'a str, executable: bool },
}

/// What network a sandbox gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// A network namespace of its own with nothing in it (pooled; loopback down).
    None,
    /// A fresh network namespace with loopback up and a listening socket on
    /// 127.0.0.1:`proxy_port` that the daemon serves ([`Running::take_proxy_listener`]);
    /// Landlock allows TCP connect to that port only.
    Egress { proxy_port: u16 },
    /// The host's network namespace.
    Host,
}

/// A file for the sandbox's `/run/secrets` (read-only, mode 0444, on a tmpfs of the
/// function version's own).
pub struct SecretFile<'a> {
    /// Its name under `/run/secrets`: a plain file name.
    pub name: &'a str,
    pub value: &'a [u8],
}

/// What one function version's sandbox is built from: plain data, nothing of function files.
pub struct Spec<'a> {
    /// For the log.
    pub name: &'a str,
    /// The version's own directory under this process's state directory; the sandbox owns it
    /// and removes it when the prepared sandbox is dropped.
    pub dir: PathBuf,
    pub code: CodeSource<'a>,
    /// Host paths bound read-only at the same place.
    pub read_only: &'a [PathBuf],
    /// Size of `/tmp` in bytes.
    pub tmp_bytes: u64,
    /// The memory limit, which bounds SysV IPC when there is no memory cgroup.
    pub memory: u64,
    /// Which network its sandboxes get.
    pub network: Network,
    /// Files shown read-only under `/run/secrets`.
    pub secrets: &'a [SecretFile<'a>],
    /// The program to exec and its argv (argv[0] included).
    pub exe: CString,
    pub argv: Vec<CString>,
}

/// Why a function version's sandbox could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Writing inline source or the root skeleton failed.
    #[error("failed to prepare the sandbox root for {name} in {}: {source}", dir.display())]
    Root {
        name: String,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The Landlock rules could not be built.
    #[error(transparent)]
    Landlock(#[from] LandlockError),
}

/// Builds the parts every request of one function version shares. A template mount namespace
/// that cannot be built (not root, say) is kept as an error and answered per request, so the
/// function still loads and says why.
pub fn prepare(host: &Host, spec: Spec) -> Result<PreparedSandbox, PrepareError> {
    let dir = &spec.dir;
    let root_err = |source| PrepareError::Root { name: spec.name.to_owned(), dir: dir.clone(), source };
    let code_dir = match spec.code {
        CodeSource::Dir(d) => d.to_path_buf(),
        CodeSource::Inline { file, text, executable } => {
            let code = dir.join("code");
            let file = code.join(file);
            std::fs::create_dir_all(file.parent().unwrap_or(&code)).map_err(root_err)?;
            std::fs::write(&file, text).map_err(root_err)?;
            let mode = if executable { 0o755 } else { 0o644 };
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).map_err(root_err)?;
            code
        }
    };
    let wrappers = &host.config.wrappers_dir;
    let secrets: Vec<(&str, &[u8])> = spec.secrets.iter().map(|s| (s.name, s.value)).collect();
    let root = namespaces::RootSpec {
        code: &code_dir,
        wrappers,
        read_only: spec.read_only,
        tmp_bytes: spec.tmp_bytes,
        secrets: &secrets,
    };
    let skeleton = namespaces::build_skeleton(dir, &root).map_err(root_err)?;
    let template = sys::create_mount_template(
        &namespaces::template_plan(&skeleton, &root),
        &namespaces::secret_files(&skeleton, &root),
        &namespaces::seal_secrets(&skeleton, &root),
        &namespaces::cstr(&skeleton.root),
    )
    .map_err(Arc::new);
    if let Err(e) = &template {
        tracing::error!(function = %spec.name, "failed to build the sandbox root: {e}");
    }
    let mut exec: Vec<&Path> = skeleton.system_dirs.iter().map(PathBuf::as_path).collect();
    exec.push(&code_dir);
    exec.extend(skeleton.read_only.iter().map(PathBuf::as_path));
    // The secrets tmpfs is mounted on the skeleton's run/secrets: a path walk checks the
    // parent of a mount point, so the rule goes on run (landlock.rs).
    let run = skeleton.root.join("run");
    let mut read = vec![wrappers.as_path()];
    if !secrets.is_empty() {
        read.push(&run);
    }
    let connect = match spec.network {
        Network::None => landlock::Connect::Nowhere,
        Network::Egress { proxy_port } => landlock::Connect::Port(proxy_port),
        Network::Host => landlock::Connect::Anywhere,
    };
    let landlock = landlock::prepare(&landlock::RulePaths { root: &skeleton.root, exec, read, connect })?;
    Ok(PreparedSandbox {
        template,
        hostname: c"faas".into(),
        request_mounts: namespaces::request_mounts(&root),
        landlock,
        // An egress sandbox has a namespace of its own: the isolated filter, not the host's.
        seccomp: if spec.network == Network::Host { host.seccomp.1.clone() } else { host.seccomp.0.clone() },
        ipc_limits: if host.cgroups.is_none() { namespaces::ipc_limits(spec.memory) } else { Vec::new() },
        network: spec.network,
        tmp_bytes: spec.tmp_bytes,
        exe: spec.exe,
        argv: spec.argv,
        skeleton,
    })
}

/// Everything one child needs, prepared by the parent before clone3.
struct ChildPlan<'a> {
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
    pub notify_sock: RawFd,
    /// The seccomp filter to install last.
    pub filter: &'a BpfProgram,
    /// Whether the filter gets a user-notification listener, sent on `notify_sock`.
    pub listener: bool,
    /// Capabilities (a mask of the first 32) kept in the bounding, permitted and effective
    /// sets: none for a request, what forking requests needs for a zygote.
    pub keep_caps: u32,
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

/// Turns an error record from the child into a `SpawnError` naming the step (and, for exec,
/// the program).
fn child_error(prepared: &PreparedSandbox, record: &[u8; spawn::ERROR_RECORD]) -> SpawnError {
    let (step, index, errno) = spawn::decode_error(record);
    let step = Step::from_u32(step).unwrap_or(Step::Exec);
    let detail = match step {
        Step::Mount => {
            prepared.request_mounts.get(index as usize).map_or_else(String::new, |m| format!(" ({})", m.describe()))
        }
        Step::Exec => format!(" {}", prepared.exe.to_string_lossy()),
        Step::Rlimit | Step::Seccomp | Step::CapBound | Step::IpcLimits | Step::ParentDeath => format!(" (#{index})"),
        Step::MountNs => [" (setns)", " (unshare)"].get(index as usize).unwrap_or(&"").to_string(),
        _ => String::new(),
    };
    SpawnError::Child { step, detail, source: io::Error::from_raw_os_error(errno) }
}

/// Narrows the daemon's capability bounding set to what a zygote keeps, the only capabilities
/// anything the daemon execs may hold (requests and compile sandboxes keep none), as
/// faas.service's `CapabilityBoundingSet=` does under systemd: every sandbox child empties its
/// own set one capability at a time, and each drop makes new credentials, so a child of a
/// daemon started with the full set (by hand, `make run`) made 41 where it now makes 5.
/// The daemon's own capabilities (effective, permitted) are untouched. Call before any thread
/// exists: the set is per thread. A process without CAP_SETPCAP keeps its set (Err).
pub fn narrow_bounding_set() -> io::Result<()> {
    sys::narrow_bounding_set(zygote::ZYGOTE_CAPS, cap_last())
}

/// Reads the highest capability number the kernel supports.
fn cap_last() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40)
}
