//! Landlock (landlock(7)) for each sandbox: the fixed rules are opened once per function
//! version, a ruleset is made from them per request in the parent, and the child adds the
//! rules only it can name, then calls landlock_restrict_self(2).
//!
//! Rules attach to inodes, and a path walk skips the directory a mount covers, so a rule on
//! the skeleton's `tmp` would not reach the tmpfs mounted on it. What the walk does check is
//! each mount's root and the parents of mount points: the host `/usr` and code directory
//! (bind mounts share their source's inodes) get read+exec, the wrappers read, the skeleton
//! root read-dir, the skeleton's `dev` read+write (the parent of the bound device nodes).
//! `/tmp` and `/proc` are made fresh by the child, so the child opens them and adds their
//! rules (read+write, read) to its own ruleset with two raw landlock_add_rule(2) calls.
//! TCP bind is always denied; TCP connect is denied in an empty network namespace, allowed
//! to the proxy's port only for `network = "egress"`, and anywhere with the host's network;
//! abstract unix sockets and signals are scoped to the sandbox. Best effort: an older ABI enforces a subset, and
//! `Enforcement` says which.

use std::fmt;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope, ABI,
};

use super::sys::landlock_abi;

/// The ABI whose rights we ask for: 6 adds signal and abstract-socket scoping.
const TARGET_ABI: ABI = ABI::V6;

/// How much of our ruleset the running kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Every right we ask for.
    Full,
    /// Some: an older ABI.
    Partial,
    /// None: no Landlock in this kernel.
    Missing,
}

/// What one function version's ruleset really enforces, for the log and each report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforcement {
    /// The kernel's ABI (0: none).
    pub abi: i32,
    /// Overall.
    pub level: Level,
    /// The features this kernel lacks, e.g. `tcp (ABI 4)`.
    pub missing: Vec<&'static str>,
}

impl Enforcement {
    /// What `abi` gives of our ruleset.
    pub fn for_abi(abi: i32) -> Enforcement {
        let mut missing = Vec::new();
        if abi < 1 {
            return Enforcement { abi, level: Level::Missing, missing: vec!["landlock"] };
        }
        for (need, what) in [
            (2, "refer (ABI 2)"),
            (3, "truncate (ABI 3)"),
            (4, "tcp bind/connect (ABI 4)"),
            (5, "device ioctl (ABI 5)"),
            (6, "signal and abstract socket scoping (ABI 6)"),
        ] {
            if abi < need {
                missing.push(what);
            }
        }
        let level = if missing.is_empty() { Level::Full } else { Level::Partial };
        Enforcement { abi, level, missing }
    }

    /// `full`, `partial` or `missing`.
    pub fn word(&self) -> &'static str {
        match self.level {
            Level::Full => "full",
            Level::Partial => "partial",
            Level::Missing => "missing",
        }
    }
}

impl fmt::Display for Enforcement {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.level {
            Level::Full => write!(f, "landlock ABI {}: fully enforced (fs, tcp, scopes)", self.abi),
            Level::Partial => {
                write!(f, "landlock ABI {}: partially enforced, lacking {}", self.abi, self.missing.join(", "))
            }
            Level::Missing => {
                write!(f, "landlock missing: no file system or network restriction beyond mounts and uid")
            }
        }
    }
}

/// Where a sandbox may connect over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    /// Nowhere.
    Nowhere,
    /// To this port only (the egress proxy on the sandbox's loopback).
    Port(u16),
    /// Anywhere (the host's network).
    Anywhere,
}

/// The fixed half of a function version's ruleset: the rules' path fds, opened at load.
pub struct Prepared {
    rules: Vec<(PathFd, BitFlags<AccessFs>)>,
    connect: Connect,
    /// What the rulesets enforce on this kernel.
    pub enforcement: Enforcement,
    /// Rights for the child's own `/tmp` rule, masked to what this kernel handles.
    pub tmp_access: u64,
    /// Rights for the child's own `/proc` rule.
    pub proc_access: u64,
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("Prepared").field("rules", &self.rules.len()).field("enforcement", &self.enforcement).finish()
    }
}

/// Why a ruleset could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    /// The ruleset or a rule was refused.
    #[error("failed to build the landlock ruleset: {0}")]
    Ruleset(#[from] landlock::RulesetError),
    /// A path named in a rule cannot be opened.
    #[error("failed to open {} for a landlock rule: {source}", path.display())]
    Open {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: landlock::PathFdError,
    },
}

/// The paths a ruleset names.
pub struct RulePaths<'a> {
    /// Skeleton root: read-dir for the whole tree, and its `dev` for the device nodes.
    pub root: &'a Path,
    /// Host directories bound read-only with exec: `/usr`, the code, extra read-only paths.
    pub exec: Vec<&'a Path>,
    /// The wrappers directory (read only, no exec).
    pub read: Vec<&'a Path>,
    /// Where TCP connect is allowed.
    pub connect: Connect,
}

fn rule(path: &Path, access: BitFlags<AccessFs>) -> Result<(PathFd, BitFlags<AccessFs>), LandlockError> {
    let fd = PathFd::new(path).map_err(|source| LandlockError::Open { path: path.to_owned(), source })?;
    Ok((fd, access))
}

/// Opens the rule paths of one function version. Rules attach to inodes, and a path walk
/// skips mount points, so `/tmp` and `/proc` (fresh per request) get their rules from the
/// child, which alone can open them (`tmp_access`, `proc_access`).
pub fn prepare(paths: &RulePaths) -> Result<Prepared, LandlockError> {
    let enforcement = Enforcement::for_abi(landlock_abi());
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let exec = read | AccessFs::Execute;
    let mut rules = vec![
        rule(paths.root, AccessFs::ReadDir.into())?,
        rule(&paths.root.join("dev"), AccessFs::ReadFile | AccessFs::WriteFile)?,
    ];
    for p in &paths.exec {
        rules.push(rule(p, exec)?);
    }
    for p in &paths.read {
        rules.push(rule(p, read)?);
    }
    let kernel = ABI::from(enforcement.abi.min(TARGET_ABI as i32));
    let handled = AccessFs::from_all(kernel);
    let tmp = AccessFs::from_all(TARGET_ABI)
        & !(AccessFs::Execute | AccessFs::MakeChar | AccessFs::MakeBlock | AccessFs::IoctlDev);
    Ok(Prepared {
        rules,
        connect: paths.connect,
        tmp_access: (tmp & handled).bits(),
        proc_access: (read & handled).bits(),
        enforcement,
    })
}

impl Prepared {
    /// A fresh ruleset with the fixed rules, for one request (the child adds `/tmp` and
    /// `/proc`, so it cannot be shared). None when the kernel has no Landlock.
    pub fn create_ruleset(&self) -> Result<Option<OwnedFd>, LandlockError> {
        if self.enforcement.level == Level::Missing {
            return Ok(None);
        }
        let abi = TARGET_ABI;
        let net = match self.connect {
            Connect::Anywhere => AccessNet::BindTcp.into(),
            Connect::Nowhere | Connect::Port(_) => AccessNet::from_all(abi),
        };
        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(abi))?
            .handle_access(net)?
            .scope(Scope::from_all(abi))?
            .create()?;
        for (fd, access) in &self.rules {
            ruleset = ruleset.add_rule(PathBeneath::new(fd, *access))?;
        }
        if let Connect::Port(port) = self.connect {
            ruleset = ruleset.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
        }
        Ok(ruleset.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforcement_by_abi() {
        assert_eq!(Enforcement::for_abi(0).level, Level::Missing);
        let e = Enforcement::for_abi(2);
        assert_eq!(e.level, Level::Partial);
        assert!(e.missing.contains(&"tcp bind/connect (ABI 4)"), "{e}");
        assert!(!e.missing.contains(&"refer (ABI 2)"));
        assert_eq!(Enforcement::for_abi(6).level, Level::Full);
        assert_eq!(Enforcement::for_abi(7).level, Level::Full);
        assert!(Enforcement::for_abi(2).to_string().starts_with("landlock ABI 2: partially enforced"));
    }
}
