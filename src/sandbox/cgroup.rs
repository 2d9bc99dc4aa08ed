//! cgroup v2 (cgroups(7)): the delegated subtree, one `inv-ID` cgroup per request with its
//! limits, the directory fd clone3 starts the child in (CLONE_INTO_CGROUP), and the end of a
//! request: `cgroup.kill`, read the counters, rmdir.
//!
//! Under systemd the unit has `Delegate=yes`: we move ourselves into a `supervisor` leaf
//! (a cgroup with children may not hold processes) and enable the controllers for the
//! subtree. Every path is relative to a root given as a parameter, so tests run on a tempdir.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::config::Limits;

/// Controllers each request cgroup needs.
pub const CONTROLLERS: &[&str] = &["memory", "pids", "cpu"];

/// Why cgroups cannot be used, or a step that failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup v2 mount, or our cgroup cannot be found.
    #[error("no cgroup v2 hierarchy: {0}")]
    NoHierarchy(String),
    /// The controllers are not available to us.
    #[error("cgroup {} is not delegated: {reason}\nhint: run under systemd with Delegate=yes, or set cgroup_root in faas.toml to a cgroup v2 directory with memory, pids and cpu", path.display())]
    NotDelegated {
        /// Our cgroup.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// A file operation on a cgroup failed.
    #[error("failed to {what} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        what: &'static str,
        /// On which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io { what, path: path.to_owned(), source }
}

/// Our delegated subtree: request cgroups are made directly under `root`.
#[derive(Debug)]
pub struct CgroupTree {
    /// The subtree's root directory.
    pub root: PathBuf,
}

/// Finds the cgroup v2 mount and our own cgroup from /proc/self/{mountinfo,cgroup}.
pub fn own_cgroup() -> Result<PathBuf, CgroupError> {
    let cgroup = fs::read_to_string("/proc/self/cgroup").map_err(|e| CgroupError::NoHierarchy(e.to_string()))?;
    let rel = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| CgroupError::NoHierarchy("/proc/self/cgroup has no v2 entry".into()))?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| CgroupError::NoHierarchy(e.to_string()))?;
    let mount = mountinfo
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            post.starts_with("cgroup2 ").then(|| pre.split(' ').nth(4).map(PathBuf::from))?
        })
        .ok_or_else(|| CgroupError::NoHierarchy("cgroup2 is not mounted".into()))?;
    Ok(mount.join(rel.trim_start_matches('/')))
}

/// The cgroup to build our subtree in (`configured`, or our own) if memory, pids and cpu are
/// available there; changes nothing, so `faas doctor` can ask too.
pub fn delegated_root(configured: Option<&Path>) -> Result<PathBuf, CgroupError> {
    let root = match configured {
        Some(p) => p.to_owned(),
        None => own_cgroup()?,
    };
    let path = root.join("cgroup.controllers");
    let have = fs::read_to_string(&path).map_err(io_err("read", &path))?;
    let missing: Vec<&str> =
        CONTROLLERS.iter().copied().filter(|c| !have.split_whitespace().any(|h| h == *c)).collect();
    if !missing.is_empty() {
        return Err(CgroupError::NotDelegated {
            path: root,
            reason: format!("{} not in cgroup.controllers", missing.join(", ")),
        });
    }
    Ok(root)
}

impl CgroupTree {
    /// Sets up the subtree: in `configured` if given (made if missing), else in our own
    /// cgroup, moving this process into a `supervisor` leaf beside the request cgroups.
    pub fn setup(configured: Option<&Path>) -> Result<CgroupTree, CgroupError> {
        if let Some(p) = configured {
            fs::create_dir_all(p).map_err(io_err("create", p))?;
        }
        let root = delegated_root(configured)?;
        let procs = root.join("cgroup.procs");
        let ours = fs::read_to_string(&procs).map_err(io_err("read", &procs))?;
        if configured.is_none() || !ours.trim().is_empty() {
            let supervisor = root.join("supervisor");
            match fs::create_dir(&supervisor) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(io_err("create", &supervisor)(e)),
                _ => {}
            }
            // Everything in root, not just us: systemd may have started helpers beside us.
            for pid in ours.lines().filter(|l| !l.is_empty()) {
                let target = supervisor.join("cgroup.procs");
                match fs::write(&target, pid) {
                    Err(e) if e.raw_os_error() != Some(nix::libc::ESRCH) => {
                        return Err(io_err("move into", &target)(e))
                    }
                    _ => {}
                }
            }
        }
        let control = root.join("cgroup.subtree_control");
        let enable: String = CONTROLLERS.iter().map(|c| format!("+{c} ")).collect();
        fs::write(&control, enable.trim()).map_err(io_err("enable controllers in", &control))?;
        let tree = CgroupTree { root };
        tree.remove_stale();
        Ok(tree)
    }

    /// Kills and removes `inv-*` cgroups an earlier run left (it was SIGKILLed mid-request).
    fn remove_stale(&self) {
        let Ok(entries) = fs::read_dir(&self.root) else { return };
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with("inv-") {
                continue;
            }
            let mut cg = RequestCgroup { path: e.path(), dir: None };
            let _ = cg.kill();
            for _ in 0..100 {
                if !cg.populated() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            match cg.remove() {
                Ok(()) => tracing::warn!("removed a request cgroup left by an earlier run: {}", cg.path.display()),
                Err(e) => tracing::error!("{e}"),
            }
        }
    }

    /// Creates `inv-ID` with the function's limits and opens it for CLONE_INTO_CGROUP.
    pub fn create(&self, id: &str, limits: &Limits) -> Result<RequestCgroup, CgroupError> {
        self.create_named(&format!("inv-{id}"), limits)
    }

    /// A cgroup of this name under the subtree, with these limits (a zygote's: `zygote-…`).
    pub fn create_named(&self, name: &str, limits: &Limits) -> Result<RequestCgroup, CgroupError> {
        let path = self.root.join(name);
        fs::create_dir(&path).map_err(io_err("create", &path))?;
        let cg = RequestCgroup { dir: None, path };
        for (file, value) in limit_files(limits) {
            let p = cg.path.join(file);
            match fs::write(&p, value) {
                // memory.swap.max is absent without swap accounting; nothing to limit then.
                Err(e) if file == "memory.swap.max" && e.kind() == io::ErrorKind::NotFound => {}
                r => r.map_err(io_err("write", &p))?,
            }
        }
        let dir = fs::File::open(&cg.path).map_err(io_err("open", &cg.path))?;
        Ok(RequestCgroup { dir: Some(dir.into()), ..cg })
    }
}

/// The limit files of a request cgroup and their contents.
pub fn limit_files(limits: &Limits) -> Vec<(&'static str, String)> {
    const PERIOD: u64 = 100_000;
    vec![
        ("memory.max", limits.memory.0.to_string()),
        ("memory.swap.max", "0".into()),
        ("pids.max", limits.pids.to_string()),
        ("cpu.max", format!("{} {PERIOD}", PERIOD * u64::from(limits.cpu.0) / 100)),
    ]
}

/// What a request used, read just before its cgroup goes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Usage {
    /// memory.peak in bytes.
    pub memory_peak: Option<u64>,
    /// memory.events oom_kill.
    pub oom_kills: u64,
    /// pids.peak.
    pub pids_peak: Option<u64>,
    /// pids.events max: forks refused at pids.max.
    pub pids_max_hits: u64,
    /// cpu.stat usage_usec.
    pub cpu_usec: u64,
    /// cpu.stat user_usec.
    pub user_usec: u64,
    /// cpu.stat system_usec.
    pub system_usec: u64,
    /// cpu.stat nr_throttled.
    pub throttled: u64,
}

/// One request's cgroup. Dropping it without `remove` leaves it behind, so the invocation
/// always calls `kill` and `remove`.
#[derive(Debug)]
pub struct RequestCgroup {
    /// Its directory.
    pub path: PathBuf,
    /// An fd to the directory for clone3.
    pub dir: Option<OwnedFd>,
}

fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

impl RequestCgroup {
    /// Kills every process in the cgroup (cgroup.kill, Linux 5.14).
    pub fn kill(&self) -> Result<(), CgroupError> {
        let p = self.path.join("cgroup.kill");
        fs::write(&p, "1").map_err(io_err("write", &p))
    }

    /// Reads the counters.
    pub fn usage(&self) -> Usage {
        let read = |f: &str| fs::read_to_string(self.path.join(f)).unwrap_or_default();
        let memory_events = read("memory.events");
        let pids_events = read("pids.events");
        let cpu = read("cpu.stat");
        Usage {
            memory_peak: read("memory.peak").trim().parse().ok(),
            oom_kills: keyed(&memory_events, "oom_kill").unwrap_or(0),
            pids_peak: read("pids.peak").trim().parse().ok(),
            pids_max_hits: keyed(&pids_events, "max").unwrap_or(0),
            cpu_usec: keyed(&cpu, "usage_usec").unwrap_or(0),
            user_usec: keyed(&cpu, "user_usec").unwrap_or(0),
            system_usec: keyed(&cpu, "system_usec").unwrap_or(0),
            throttled: keyed(&cpu, "nr_throttled").unwrap_or(0),
        }
    }

    /// Whether any process is still in it (cgroup.events `populated`).
    pub fn populated(&self) -> bool {
        let events = fs::read_to_string(self.path.join("cgroup.events")).unwrap_or_default();
        keyed(&events, "populated").unwrap_or(0) != 0
    }

    /// Removes the (empty) cgroup.
    pub fn remove(&mut self) -> Result<(), CgroupError> {
        self.dir = None;
        fs::remove_dir(&self.path).map_err(io_err("remove", &self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::{Bytes, Percent};

    #[test]
    fn limit_files_follow_the_function() {
        let limits = Limits { memory: Bytes(64 << 20), pids: 16, cpu: Percent(50), ..Limits::default() };
        let files = limit_files(&limits);
        assert!(files.contains(&("memory.max", "67108864".into())));
        assert!(files.contains(&("memory.swap.max", "0".into())));
        assert!(files.contains(&("pids.max", "16".into())));
        assert!(files.contains(&("cpu.max", "50000 100000".into())));
    }

    #[test]
    fn usage_reads_the_counters() {
        let dir = tempfile::tempdir().unwrap();
        let w = |f: &str, s: &str| fs::write(dir.path().join(f), s).unwrap();
        w("memory.peak", "1234\n");
        w("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
        w("pids.events", "max 7\n");
        w("cpu.stat", "usage_usec 500\nuser_usec 300\nsystem_usec 200\nnr_periods 1\nnr_throttled 2\n");
        let cg = RequestCgroup { path: dir.path().to_owned(), dir: None };
        let u = cg.usage();
        assert_eq!(u.memory_peak, Some(1234));
        assert_eq!(u.oom_kills, 1);
        assert_eq!(u.pids_max_hits, 7);
        assert_eq!(u.pids_peak, None);
        assert_eq!((u.cpu_usec, u.user_usec, u.system_usec, u.throttled), (500, 300, 200, 2));
    }

    #[test]
    fn setup_refuses_a_tree_without_controllers() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cgroup.controllers"), "cpu io\n").unwrap();
        let err = CgroupTree::setup(Some(dir.path())).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("memory, pids not in cgroup.controllers"), "{text}");
        assert!(text.contains("hint: run under systemd with Delegate=yes"), "{text}");
    }
}
