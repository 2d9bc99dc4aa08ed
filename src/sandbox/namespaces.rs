//! Namespaces and the sandbox's file system: the clone flags, the root skeleton made once per
//! function version, and the mount list the child runs inside its own mount namespace.
//!
//! The skeleton is a directory of empty mount points on the host (`STATE/fn/NAME-V/root`).
//! Once per function version, a template mount namespace binds it onto itself, mounts
//! `/usr`, `/code`, `/faas`, a few `/etc` files and device nodes onto it, makes it read-only
//! and pivots into it (`template_plan`, run by `spawn::create_mount_template`). Each child
//! then joins the template, unshares a private copy, and adds only what must be its own: a
//! fresh tmpfs `/tmp` and a fresh `/proc` (`request_mounts`). Nothing is mounted in the
//! daemon's namespace, and a copy of the template holds a dozen mounts, not the host's.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::libc;

use super::MountOp;

/// Namespaces every sandbox gets from clone3. The network namespace is joined, not created,
/// and the mount namespace is a copy of the template, made by the child itself.
pub const CLONE_FLAGS: u64 = (libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS) as u64;

/// Device nodes bound into the sandbox's `/dev`.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// Top-level host directories that merged-/usr systems make symlinks into `/usr`.
const USR_LINKS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// What a sandbox root is built from.
pub struct RootSpec<'a> {
    /// The function's code, mounted at `/code`.
    pub code: &'a Path,
    /// The wrappers directory, mounted at `/faas`.
    pub wrappers: &'a Path,
    /// Extra host paths, read-only at the same place.
    pub read_only: &'a [PathBuf],
    /// Size of `/tmp` in bytes.
    pub tmp_bytes: u64,
    /// Files for `/run/secrets`: (name, value).
    pub secrets: &'a [(&'a str, &'a [u8])],
}

/// Where a sandbox finds its secrets.
pub const SECRETS_DIR: &str = "/run/secrets";

/// A root skeleton on disk; removed with its version directory when dropped.
#[derive(Debug)]
pub struct Skeleton {
    /// The version directory that holds `root/` (and `code/` for inline source).
    pub dir: PathBuf,
    /// The skeleton root.
    pub root: PathBuf,
    /// Host directories bound read-only at the same path (`/usr`, and `/bin` etc. where they
    /// are real directories), for the mount list and the Landlock rules.
    pub system_dirs: Vec<PathBuf>,
    /// The extra read-only paths that exist on this host.
    pub read_only: Vec<PathBuf>,
}

impl Drop for Skeleton {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!("failed to remove sandbox root {}: {e}", self.dir.display());
            }
        }
    }
}

fn touch_mountpoint(target: &Path, like: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(like)?;
    if meta.is_dir() {
        std::fs::create_dir_all(target)
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(target).map(drop)
    }
}

/// Inside the sandbox root, the place for host path `p`.
fn inside(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// Builds the skeleton for one function version under `dir`.
pub fn build_skeleton(dir: &Path, spec: &RootSpec) -> io::Result<Skeleton> {
    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let mut system_dirs = vec![PathBuf::from("/usr")];
    for d in ["usr", "code", "faas", "tmp", "proc", "dev"] {
        std::fs::create_dir(root.join(d))?;
    }
    for name in USR_LINKS {
        let host = Path::new("/").join(name);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                std::os::unix::fs::symlink(std::fs::read_link(&host)?, root.join(name))?;
            }
            Ok(m) if m.is_dir() => {
                std::fs::create_dir(root.join(name))?;
                system_dirs.push(host);
            }
            _ => {}
        }
    }
    for dev in DEVICES {
        std::fs::File::create(root.join("dev").join(dev))?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, root.join("dev").join(link))?;
    }
    if !spec.secrets.is_empty() {
        std::fs::create_dir_all(inside(&root, Path::new(SECRETS_DIR)))?;
    }
    let mut read_only = Vec::new();
    for p in spec.read_only {
        // Defaults from faas.toml name files a host may lack; function files were checked.
        if std::fs::metadata(p).is_err() {
            continue;
        }
        touch_mountpoint(&inside(&root, p), p)?;
        read_only.push(p.clone());
    }
    read_only.sort();
    Ok(Skeleton { dir: dir.to_owned(), root, system_dirs, read_only })
}

/// A path as a C string, for the syscalls that take one.
pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths from the file system contain no NUL")
}

fn bind_read_only(ops: &mut Vec<MountOp>, source: &Path, target: &Path) {
    ops.push(MountOp::Mount {
        source: Some(cstr(source)),
        target: cstr(target),
        fstype: None,
        flags: libc::MS_BIND | libc::MS_REC,
        data: None,
    });
    ops.push(MountOp::ReadOnlyTree { target: cstr(target) });
}

/// The template namespace's mount list for `skeleton`, in order (then it pivots in).
pub fn template_plan(skeleton: &Skeleton, spec: &RootSpec) -> Vec<MountOp> {
    let root = &skeleton.root;
    let mut ops = vec![
        // systemd mounts / shared; without this every mount below would show up on the host.
        MountOp::Mount {
            source: None,
            target: c"/".into(),
            fstype: None,
            flags: libc::MS_REC | libc::MS_PRIVATE,
            data: None,
        },
        // pivot_root needs the new root to be a mount point.
        MountOp::Mount { source: Some(cstr(root)), target: cstr(root), fstype: None, flags: libc::MS_BIND, data: None },
    ];
    for dir in &skeleton.system_dirs {
        bind_read_only(&mut ops, dir, &inside(root, dir));
    }
    bind_read_only(&mut ops, spec.code, &root.join("code"));
    bind_read_only(&mut ops, spec.wrappers, &root.join("faas"));
    for p in &skeleton.read_only {
        bind_read_only(&mut ops, p, &inside(root, p));
    }
    for dev in DEVICES {
        ops.push(MountOp::Mount {
            source: Some(cstr(&Path::new("/dev").join(dev))),
            target: cstr(&root.join("dev").join(dev)),
            fstype: None,
            flags: libc::MS_BIND,
            data: None,
        });
    }
    if !spec.secrets.is_empty() {
        // A tmpfs of the template's own for the secrets: written once by
        // `create_mount_template` and sealed (`seal_secrets`), seen only by this function's
        // sandboxes, never on a host file system.
        let bytes: usize = spec.secrets.iter().map(|(_, v)| v.len().div_ceil(4096) * 4096).sum();
        ops.push(MountOp::Mount {
            source: Some(c"tmpfs".into()),
            target: cstr(&inside(root, Path::new(SECRETS_DIR))),
            fstype: Some(c"tmpfs".into()),
            flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data: Some(
                CString::new(format!("size={},nr_inodes={},mode=0555", bytes + 4096, spec.secrets.len() + 8))
                    .expect("digits hold no NUL"),
            ),
        });
    }
    // Last: the root itself read-only (not recursive: the device nodes stay writable).
    ops.push(MountOp::Mount {
        source: None,
        target: cstr(root),
        fstype: None,
        flags: libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        data: None,
    });
    ops
}

/// The secret files to write into the template's `/run/secrets` tmpfs: (host-side path in
/// the not yet pivoted template, value).
pub fn secret_files<'a>(skeleton: &Skeleton, spec: &RootSpec<'a>) -> Vec<(PathBuf, &'a [u8])> {
    let dir = inside(&skeleton.root, Path::new(SECRETS_DIR));
    spec.secrets.iter().map(|(name, value)| (dir.join(name), *value)).collect()
}

/// Makes the secrets tmpfs read-only once its files are written (none without secrets).
pub fn seal_secrets(skeleton: &Skeleton, spec: &RootSpec) -> Vec<MountOp> {
    if spec.secrets.is_empty() {
        return Vec::new();
    }
    vec![MountOp::Mount {
        source: None,
        target: cstr(&inside(&skeleton.root, Path::new(SECRETS_DIR))),
        fstype: None,
        flags: libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: None,
    }]
}

/// Host-wide files in `/proc` that no runtime needs and that tell a function about the host
/// or its other tenants: kernel config and boot arguments, other users' keys, interrupt and
/// disk activity (side channels), kernel symbols and modules, the memory map. Each one that
/// exists on this kernel is covered with `/dev/null`, as Docker masks paths; a procfs
/// `subset=pid` mount would hide them all, but also `/proc/meminfo`, `/proc/stat` and
/// `/proc/cpuinfo`, which Node and libuv read.
pub const MASKED_PROC: &[&str] = &[
    "config.gz",
    "cmdline",
    "bootconfig",
    "key-users",
    "keys",
    "interrupts",
    "softirqs",
    "kallsyms",
    "modules",
    "timer_list",
    "sched_debug",
    "schedstat",
    "diskstats",
    "partitions",
    "swaps",
    "iomem",
    "ioports",
    "kcore",
    "sysrq-trigger",
];

/// Each request's own mounts, made inside its copy of the template (paths as the sandbox
/// sees them): `/tmp` (never executable: what a function writes there is data, and Landlock
/// also refuses exec below it), `/proc`, and the masks over `/proc`'s host-wide files.
pub fn request_mounts(spec: &RootSpec) -> Vec<MountOp> {
    let inodes = (spec.tmp_bytes / 4096).max(1024);
    let mut ops = vec![
        MountOp::Mount {
            source: Some(c"tmpfs".into()),
            target: c"/tmp".into(),
            fstype: Some(c"tmpfs".into()),
            flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data: Some(
                CString::new(format!("size={},nr_inodes={inodes},mode=1777", spec.tmp_bytes))
                    .expect("digits hold no NUL"),
            ),
        },
        // Mounted from inside the new pid namespace, so it shows that one.
        MountOp::Mount {
            source: Some(c"proc".into()),
            target: c"/proc".into(),
            fstype: Some(c"proc".into()),
            flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data: None,
        },
    ];
    // Every procfs instance has the same host-wide files, so the host's says which exist.
    for name in MASKED_PROC.iter().filter(|n| Path::new("/proc").join(n).exists()) {
        ops.push(MountOp::Mount {
            source: Some(c"/dev/null".into()),
            target: CString::new(format!("/proc/{name}")).expect("names hold no NUL"),
            fstype: None,
            flags: libc::MS_BIND,
            data: None,
        });
    }
    ops
}

/// Without a memory cgroup nothing charges SysV shared memory or message queues to the
/// sandbox, and a fresh IPC namespace allows 2^64 bytes of shm: cap the namespace (which is
/// the sandbox's alone) at the function's memory, and message queues at 16 × 16 KiB
/// (ipc_namespaces(7), proc(5)).
pub fn ipc_limits(memory: u64) -> Vec<(CString, Vec<u8>)> {
    let pages = memory.div_ceil(4096).max(1);
    [("shmmax", memory.max(1)), ("shmall", pages), ("msgmni", 16)]
        .into_iter()
        .map(|(name, v)| {
            (CString::new(format!("/proc/sys/kernel/{name}")).expect("no NUL"), v.to_string().into_bytes())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skeleton_and_plan() {
        let tmp = tempfile::tempdir().unwrap();
        let code = tmp.path().join("code");
        std::fs::create_dir(&code).unwrap();
        let spec = RootSpec {
            code: &code,
            wrappers: tmp.path(),
            read_only: &[PathBuf::from("/etc/hostname"), PathBuf::from("/nonexistent/x")],
            tmp_bytes: 16 << 20,
            secrets: &[("token", b"abc")],
        };
        let sk = build_skeleton(&tmp.path().join("v1"), &spec).unwrap();
        assert!(sk.root.join("dev/null").is_file());
        assert!(sk.root.join("tmp").is_dir());
        assert_eq!(sk.read_only, vec![PathBuf::from("/etc/hostname")]);
        let plan = template_plan(&sk, &spec);
        let first = plan[0].describe();
        assert_eq!(first, "mount (none) on /");
        let texts: Vec<String> = plan.iter().map(|m| m.describe()).collect();
        assert!(texts.iter().any(|t| t.ends_with("/root/etc/hostname")), "{texts:?}");
        assert!(
            texts.iter().any(|t| t == &format!("make {}/v1/root/usr read-only", tmp.path().display())),
            "{texts:?}"
        );
        assert!(texts.last().unwrap().ends_with("/v1/root"));
        let secrets = format!("mount tmpfs on {}/v1/root/run/secrets", tmp.path().display());
        assert!(texts.contains(&secrets), "{texts:?}");
        assert!(sk.root.join("run/secrets").is_dir());
        let files = secret_files(&sk, &spec);
        assert_eq!(files, [(sk.root.join("run/secrets/token"), &b"abc"[..])]);
        assert_eq!(seal_secrets(&sk, &spec).len(), 1);
        let own: Vec<String> = request_mounts(&spec).iter().map(|m| m.describe()).collect();
        assert_eq!(own[..2], ["mount tmpfs on /tmp", "mount proc on /proc"]);
        assert!(own.contains(&"mount /dev/null on /proc/cmdline".to_owned()), "{own:?}");
        let dir = sk.dir.clone();
        drop(sk);
        assert!(!dir.exists());
    }
}
