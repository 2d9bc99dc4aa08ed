//! What this host gives the sandboxes, found once at start: the empty network namespace, the
//! sandbox uid pool, the cgroup subtree, the compiled seccomp filters, and which layers will
//! be enforced. `faas doctor` prints it; the log says it once; every report carries it.

use std::fmt::Write as _;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::cgroup::CgroupTree;
use super::landlock::{Enforcement, Level};
use super::netns::NetnsPool;
use super::uids::UidPool;
use super::{seccomp, sys, BpfProgram};
use crate::config::Config;

/// How one layer stands on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerState {
    /// Applied to every sandbox.
    Enforced,
    /// Applied in part; says what is missing.
    Partial(String),
    /// Not applied; says why.
    Missing(String),
}

impl LayerState {
    /// `enforced`, `partial` or `missing`.
    pub fn word(&self) -> &'static str {
        match self {
            LayerState::Enforced => "enforced",
            LayerState::Partial(_) => "partial",
            LayerState::Missing(_) => "missing",
        }
    }
}

/// Every sandbox layer and how it stands.
#[derive(Debug, Clone)]
pub struct Layers {
    /// (name, state, hint) per layer.
    pub list: Vec<(&'static str, LayerState, &'static str)>,
    /// `namespaces=enforced uid=enforced landlock=partial …`, for every report; made once.
    pub summary: String,
}

impl Layers {
    fn new(list: Vec<(&'static str, LayerState, &'static str)>) -> Layers {
        let mut summary = String::new();
        for (name, state, _) in &list {
            let _ = write!(summary, "{}{name}={}", if summary.is_empty() { "" } else { " " }, state.word());
        }
        Layers { list, summary }
    }

    /// Whether every layer is enforced.
    pub fn all_enforced(&self) -> bool {
        self.list.iter().all(|(_, s, _)| *s == LayerState::Enforced)
    }
}

/// What the sandboxes are built from on this host.
pub struct Host {
    /// Daemon settings.
    pub config: Config,
    /// Network namespaces for sandboxes without `network = true`, one per running sandbox.
    pub netns: Option<Arc<NetnsPool>>,
    /// A pidfd of this process, which children poll after arming their parent-death signal.
    pub daemon_pidfd: Option<OwnedFd>,
    /// Sandbox uids.
    pub uids: Arc<UidPool>,
    /// The cgroup subtree, when delegated.
    pub cgroups: Option<CgroupTree>,
    /// The seccomp filters, compiled once: (no network, host network). Empty when the kernel
    /// cannot run them, and then no sandbox starts.
    pub seccomp: (Arc<BpfProgram>, Arc<BpfProgram>),
    /// The highest capability number: every child empties its bounding set up to it.
    pub cap_last: u32,
    /// Our hard open-files limit (None: unlimited), read once: no sandbox gets more.
    pub nofile_hard: Option<u64>,
    /// Signals with a non-default disposition, which every child resets. Read at the first
    /// spawn, after tokio has installed its handlers.
    pub changed_signals: std::sync::OnceLock<Vec<i32>>,
    /// What each layer gives.
    pub layers: Layers,
    /// Landlock on this kernel.
    pub landlock: Enforcement,
    /// Whether we can build sandboxes at all (root).
    pub privileged: bool,
}

impl Host {
    /// Looks at the host and prepares what it can; never fails: a missing layer is recorded.
    /// What `faas doctor` and `faas check` see: probes every layer and changes nothing (no
    /// cgroup is set up, so this process is moved nowhere).
    pub fn probe(config: Config) -> Host {
        Host::new(config, false)
    }

    /// What `faas serve` and `faas invoke` build sandboxes from: as `probe`, and it sets up the
    /// cgroup subtree (moving this process into its `supervisor` leaf) when one is delegated.
    pub fn setup(config: Config) -> Host {
        Host::new(config, true)
    }

    fn new(config: Config, setup_cgroups: bool) -> Host {
        let missing_caps = missing_capabilities();
        let privileged = nix::unistd::geteuid().is_root() && missing_caps.is_empty();
        let mut list = Vec::new();
        let ns_state = if !nix::unistd::geteuid().is_root() {
            LayerState::Missing("not root: cannot create namespaces, mount or switch uid".into())
        } else if !missing_caps.is_empty() {
            LayerState::Missing(format!("root without {}: sandboxes cannot be built", missing_caps.join(", ")))
        } else {
            LayerState::Enforced
        };
        list.push((
            "namespaces",
            ns_state.clone(),
            "faas serve runs as root (the unit does); sandboxes drop everything",
        ));
        list.push(("uid", ns_state, "each sandbox runs as its own uid from uid_base"));

        let netns = match sys::create_empty_netns() {
            Ok(fd) => {
                list.push((
                    "network",
                    LayerState::Enforced,
                    "an empty network namespace of its own per sandbox: loopback only, and down",
                ));
                Some(Arc::new(NetnsPool::new(fd, config.max_concurrency)))
            }
            Err(e) => {
                list.push((
                    "network",
                    LayerState::Missing(format!("cannot create a network namespace: {e}")),
                    "needs CAP_SYS_ADMIN",
                ));
                None
            }
        };

        let landlock = Enforcement::for_abi(sys::landlock_abi());
        let ll_state = match landlock.level {
            Level::Full => LayerState::Enforced,
            Level::Partial => LayerState::Partial(landlock.to_string()),
            Level::Missing => LayerState::Missing(landlock.to_string()),
        };
        list.push(("landlock", ll_state, "Linux ≥ 6.12 with lsm=…,landlock gives every rule"));

        let build = |host_network| seccomp::build_filter(seccomp::Policy { host_network, zygote: false });
        let (seccomp, seccomp_state) = match (build(false), build(true)) {
            (Ok(isolated), Ok(host)) if seccomp_supported() => ((isolated, host), LayerState::Enforced),
            (Ok(_), Ok(_)) => (
                (Vec::new(), Vec::new()),
                LayerState::Missing("the kernel has no seccomp user notification: no sandbox will start".into()),
            ),
            (Err(e), _) | (_, Err(e)) => ((Vec::new(), Vec::new()), LayerState::Missing(e.to_string())),
        };
        list.push(("seccomp", seccomp_state, "CONFIG_SECCOMP_FILTER with user notification (Linux ≥ 5.0)"));

        let cgroups = if setup_cgroups && privileged {
            match CgroupTree::setup(config.cgroup_root.as_deref()) {
                Ok(tree) => {
                    list.push(("cgroup", LayerState::Enforced, "memory, pids and cpu per request"));
                    Some(tree)
                }
                Err(e) => {
                    list.push((
                        "cgroup",
                        LayerState::Missing(format!(
                            "{e}; falling back to rlimits (RLIMIT_NPROC per sandbox uid, RLIMIT_DATA)"
                        )),
                        "Delegate=yes in the unit, or cgroup_root in faas.toml",
                    ));
                    None
                }
            }
        } else {
            let state = match probe_cgroup(&config) {
                Ok(()) => LayerState::Enforced,
                Err(e) => LayerState::Missing(e),
            };
            list.push(("cgroup", state, "Delegate=yes in the unit, or cgroup_root in faas.toml"));
            None
        };

        Host {
            uids: sandbox_uids(&config),
            config,
            netns,
            daemon_pidfd: sys::pidfd_self().ok(),
            cgroups,
            seccomp: (Arc::new(seccomp.0), Arc::new(seccomp.1)),
            cap_last: super::cap_last(),
            nofile_hard: sys::nofile_hard_limit(),
            changed_signals: std::sync::OnceLock::new(),
            layers: Layers::new(list),
            landlock,
            privileged,
        }
    }
}

/// What limits hold when there is no delegated cgroup, for `faas doctor` and the README: the
/// fallback is per process and per uid, so it bounds less than a cgroup does.
pub const FALLBACK_BOUNDS: &[(&str, &str)] = &[
    ("bounded", "processes: RLIMIT_NPROC on the sandbox's own uid = limits.pids"),
    ("bounded", "each process's heap and private mappings: RLIMIT_DATA = limits.memory"),
    ("bounded", "SysV shared memory and message queues: its own IPC namespace, shmall = limits.memory, 16 queues"),
    ("bounded", "/tmp: its size (sandbox.tmp); each file written: RLIMIT_FSIZE; open files per process: limits.nofile"),
    ("NOT bounded", "total memory across processes (up to limits.pids × limits.memory)"),
    ("NOT bounded", "memfd and shared anonymous memory (outside RLIMIT_DATA)"),
    ("NOT bounded", "CPU time (cpu.max needs the cpu controller)"),
];

/// Capabilities building a sandbox takes, by number (capability.h): SYS_ADMIN for namespaces
/// and mounts, SYS_CHROOT for setns into a mount namespace, SETUID/SETGID/SETPCAP for the
/// uid drop, KILL to signal sandboxes of other uids.
const NEEDED_CAPS: &[(u32, &str)] = &[
    (21, "CAP_SYS_ADMIN"),
    (18, "CAP_SYS_CHROOT"),
    (7, "CAP_SETUID"),
    (6, "CAP_SETGID"),
    (8, "CAP_SETPCAP"),
    (5, "CAP_KILL"),
];

/// The needed capabilities missing from our effective set (a unit's
/// CapabilityBoundingSet= can take one away even from root).
fn missing_capabilities() -> Vec<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    NEEDED_CAPS.iter().filter(|(bit, _)| eff & (1 << bit) == 0).map(|(_, name)| *name).collect()
}

fn sandbox_uids(config: &Config) -> Arc<UidPool> {
    UidPool::new(config.uid_base, config.uid_count)
}

/// What `setup` would find, without changing anything.
fn probe_cgroup(config: &Config) -> Result<(), String> {
    super::cgroup::delegated_root(config.cgroup_root.as_deref())
        .map(drop)
        // The first line: doctor prints the layer's own hint beneath it.
        .map_err(|e| format!("{}; falling back to rlimits", e.to_string().lines().next().unwrap_or_default()))
}

/// Whether the kernel takes seccomp filters with user notification (Linux ≥ 5.0).
fn seccomp_supported() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
        && std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail")
            .is_ok_and(|a| a.split_whitespace().any(|w| w == "user_notif"))
}
