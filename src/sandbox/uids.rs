//! Sandbox uids, leased so that no two live sandboxes on the host share one: not within this
//! process, not across `faas` processes (a daemon and `faas invoke`, two daemons, a daemon
//! restarted while sandboxes of the old one live), and never a uid some live process still has.
//! RLIMIT_NPROC and signal permissions go by uid, so a shared uid lets one sandbox starve or
//! reach another.
//!
//! **Across processes: one lock file, one byte per uid.** Every `faas` process locks byte `uid`
//! of [`LOCK_FILE`] with an open file description lock (`F_OFD_SETLK`, fcntl(2)) for as long
//! as it holds that uid. The kernel drops the locks when the process dies, so a crashed daemon
//! frees its uids by itself. The lock is on the uid, not on a range, so daemons configured
//! with different but overlapping ranges still see each other; one file rather than a file
//! per uid (flock(2)) means one fd per process and no directory of up to 65,536 inodes. OFD
//! locks, unlike classic record locks, belong to the open file, not the process: closing some
//! other fd of the file drops nothing, and two pools in one process conflict as two processes
//! would (the unit tests rely on it). The file is host-wide and not a setting on purpose:
//! processes that named different files would not see each other. It is not in the state
//! directory, because two daemons (or `faas invoke --state-dir`) may use different ones.
//! `/run/faas` is what faas.service's `RuntimeDirectory=` keeps writable under
//! `ProtectSystem=strict` and keeps across restarts (`RuntimeDirectoryPreserve=yes`); it and
//! every directory above it must be writable by root only, as for the state directory.
//!
//! **Live processes: a /proc scan, rarely.** A lock speaks only for live `faas` processes; a
//! sandbox that outlived its `faas` (review finding 4) holds its uid with no lock. So a uid is
//! taken into use only after a scan of `/proc/*/status` finds no process whose real, effective,
//! saved or filesystem uid or gid is that uid. The scan reads every process's status (about
//! 8 µs each: 0.9 ms for 110 processes here, more on a busy host): far too slow for every
//! request, and not needed for every request either. A uid this process has locked and found
//! free stays locked when its sandbox ends (the lease is returned only once every process of
//! the sandbox is gone, so the uid is still free, and no other `faas` can start a process as
//! it while we hold the lock) and goes back to an idle queue; a lease takes the uid idle
//! longest, which costs no system call at all. Only when the queue is empty does a lease lock
//! new uids, a batch at a time (1/64 of the range, at most 16), with one scan for the batch:
//! when more sandboxes are alive at once than this process holds uids for. `faas serve` takes
//! its first batch at start. Idle uids beyond one batch are unlocked after [`IDLE_HOLD`]
//! unused, so a burst does not keep part of a shared range from other processes (the next
//! burst scans again). A uid a process was found holding is not tried again for
//! [`BUSY_RETRY`]. Measured (`lease_cost` below, release build, 110 processes): a lease and
//! its return from the idle queue take 0.1 µs; while a pool grows to 64 live sandboxes, 30 to
//! 115 µs per lease on average (one scan per 16 new uids), then 0.1 µs again. A scan holds the
//! pool's mutex, so other leases wait for it: rarely, and for about a millisecond.
//!
//! What the scan cannot see: with `hidepid=` on /proc (faas.service's `ProtectProc=invisible`)
//! root without CAP_SYS_PTRACE sees no process of another uid, leftovers included; this is
//! logged once. Under the unit, systemd kills whatever a stopped or crashed daemon left in its
//! cgroup before starting the next one (`KillMode=mixed`), which covers the daemon's own
//! leftovers. A process forked by a leftover can be missed if its pid wraps below the scan's
//! position and its parent exits during the scan; both would be a leftover of a leftover.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;

/// The host-wide lock file every `faas` process leases sandbox uids through.
pub const LOCK_FILE: &str = "/run/faas/uids.lock";

/// How long an idle uid beyond the first batch stays locked by this process.
pub const IDLE_HOLD: Duration = Duration::from_secs(30);

/// How long a uid some process was found holding is skipped.
pub const BUSY_RETRY: Duration = Duration::from_secs(1);

/// The most uids locked (and scanned for) at once.
const MAX_BATCH: u32 = 16;

/// A pool of sandbox uids, shared with every other `faas` process on the host through
/// [`LOCK_FILE`].
#[derive(Debug)]
pub struct UidPool {
    base: u32,
    count: u32,
    batch: usize,
    idle_hold: Duration,
    lock_path: PathBuf,
    proc_root: PathBuf,
    state: Mutex<PoolState>,
    /// Woken each time a lease comes back.
    returned: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct PoolState {
    /// The lock file, opened at the first lease (`faas doctor` and `check` never open it).
    lock: Option<Result<File, String>>,
    /// Offset from `base` where the search for new uids goes on.
    next: u32,
    /// Lent out.
    leased: HashSet<u32>,
    /// Locked by us, found free, not lent: the one idle longest first.
    idle: VecDeque<(u32, Instant)>,
    /// Held by some process outside our locks: not tried again before the instant.
    busy: HashMap<u32, Instant>,
    /// Whether the hidepid warning was logged.
    warned_hidden: bool,
}

/// A uid (and the gid of the same number) lent to one sandbox; returned on drop, which the
/// invocation does only after every process of the sandbox is gone.
#[derive(Debug)]
pub struct UidLease {
    pool: Arc<UidPool>,
    /// The uid and gid.
    pub id: u32,
}

impl UidPool {
    /// A pool of `count` ids from `base`, coordinated through [`LOCK_FILE`].
    pub fn new(base: u32, count: u32) -> Arc<UidPool> {
        Self::with_paths(base, count, LOCK_FILE.into(), "/proc".into(), IDLE_HOLD)
    }

    /// A pool with its own lock file, process table and idle hold (for tests).
    pub fn with_paths(
        base: u32,
        count: u32,
        lock_path: PathBuf,
        proc_root: PathBuf,
        idle_hold: Duration,
    ) -> Arc<UidPool> {
        let batch = (count / 64).clamp(1, MAX_BATCH) as usize;
        Arc::new(UidPool {
            base,
            count,
            batch,
            idle_hold,
            lock_path,
            proc_root,
            state: Mutex::default(),
            returned: tokio::sync::Notify::new(),
        })
    }

    /// Opens the lock file and locks a first batch of uids, so that the first requests do
    /// not pay for the scan; `faas serve` calls it at start and stops on an error.
    pub fn prepare(&self) -> Result<(), String> {
        let mut st = self.state();
        if st.idle.is_empty() {
            self.claim(&mut st, Instant::now());
        }
        match &st.lock {
            Some(Err(e)) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    /// Lends a uid no live process has and no other `faas` process holds, or None when
    /// there is none (or the lock file cannot be used: logged once). Never waits for a lock.
    /// A future that is ready once a lease comes back after this call (whether or not it has
    /// been polled by then).
    pub fn returned(&self) -> tokio::sync::futures::Notified<'_> {
        self.returned.notified()
    }

    pub fn lease(self: &Arc<Self>) -> Option<UidLease> {
        let mut st = self.state();
        let now = Instant::now();
        self.expire(&mut st, now);
        if st.idle.is_empty() {
            self.claim(&mut st, now);
        }
        let (id, _) = st.idle.pop_front()?;
        st.leased.insert(id);
        Some(UidLease { pool: self.clone(), id })
    }

    /// How many ids are lent out.
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.state().leased.len()
    }

    /// How many ids this process has locked (lent or idle).
    #[cfg(test)]
    pub fn locked(&self) -> usize {
        let st = self.state();
        st.leased.len() + st.idle.len()
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        // Nothing under the lock panics; a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Unlocks idle uids beyond one batch that have been idle for `idle_hold`.
    fn expire(&self, st: &mut PoolState, now: Instant) {
        while st.idle.len() > self.batch
            && st.idle.front().is_some_and(|(_, since)| now.duration_since(*since) >= self.idle_hold)
        {
            if let (Some((id, _)), Some(Ok(file))) = (st.idle.pop_front(), &st.lock) {
                unlock(file, id);
            }
        }
    }

    /// Locks up to one batch of new uids, scans /proc for them once, and queues the free ones.
    fn claim(&self, st: &mut PoolState, now: Instant) {
        if st.lock.is_none() {
            let opened = open_lock_file(&self.lock_path);
            if let Err(e) = &opened {
                tracing::error!("{e}");
            }
            st.lock = Some(opened);
        }
        let Some(Ok(file)) = &st.lock else { return };
        st.busy.retain(|_, until| *until > now);
        // Batch after batch until one uid is free or every uid of the range was looked at.
        let mut visited = 0;
        while st.idle.is_empty() && visited < self.count {
            let mut locked = Vec::new();
            while locked.len() < self.batch && visited < self.count {
                visited += 1;
                let id = self.base + st.next;
                st.next = (st.next + 1) % self.count;
                if st.leased.contains(&id) || st.busy.contains_key(&id) || st.idle.iter().any(|(i, _)| *i == id) {
                    continue;
                }
                match try_lock(file, id) {
                    Ok(true) => locked.push(id),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!("failed to lock uid {id} in {}: {e}", self.lock_path.display());
                        visited = self.count;
                    }
                }
            }
            if locked.is_empty() {
                return;
            }
            let held = match held_ids(&self.proc_root, &locked) {
                Ok(scan) => {
                    if let (Some(option), false) = (&scan.hidden, st.warned_hidden) {
                        st.warned_hidden = true;
                        tracing::warn!(
                            "{} is mounted with {option}: processes of other uids are hidden, so a sandbox uid that a process left behind by a dead faas still holds cannot be noticed\nhint: under faas.service systemd kills what a previous daemon left in its cgroup",
                            self.proc_root.display()
                        );
                    }
                    scan.held
                }
                Err(e) => {
                    // Fail closed: a uid nobody can vouch for is not lent.
                    tracing::error!("failed to scan {} for processes of sandbox uids: {e}", self.proc_root.display());
                    locked.iter().copied().collect()
                }
            };
            for id in locked {
                if held.contains(&id) {
                    tracing::warn!("sandbox uid {id} is held by a process outside faas (left behind by a faas that died?); skipping it");
                    unlock(file, id);
                    st.busy.insert(id, now + BUSY_RETRY);
                } else {
                    st.idle.push_back((id, now));
                }
            }
        }
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        let mut st = self.pool.state();
        if st.leased.remove(&self.id) {
            let now = Instant::now();
            st.idle.push_back((self.id, now));
            self.pool.expire(&mut st, now);
        }
        drop(st);
        self.pool.returned.notify_waiters();
    }
}

/// Opens (creating it and its directory) the lock file, after checking that only root can
/// change or replace it: whoever could would decide which uids look free.
fn open_lock_file(path: &Path) -> Result<File, String> {
    const HINT: &str = "hint: every faas process on the host leases sandbox uids through this file; it and every directory above it must be writable by root only";
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        format!("failed to {what} the sandbox uid lock file {}: {e}\n{HINT}", path.display())
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| fail("create the directory of", &e))?;
    check_private_dir(dir)
        .map_err(|e| format!("the sandbox uid lock file {} is not safe: {e}\n{HINT}", path.display()))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| fail("open", &e))?;
    let meta = file.metadata().map_err(|e| fail("look at", &e))?;
    if !meta.is_file() || !trusted_owner(meta.uid()) || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "the sandbox uid lock file {} is not safe: owner uid {}, mode {:04o}, not a regular file only root can write\n{HINT}",
            path.display(),
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    Ok(file)
}

fn byte_lock(kind: libc::c_int, id: u32) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: libc::off_t::from(id),
        l_len: 1,
        l_pid: 0,
    }
}

/// Locks byte `id` of the lock file without waiting: Ok(false) when another open file
/// (another `faas` process) holds it.
fn try_lock(file: &File, id: u32) -> io::Result<bool> {
    match fcntl(file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&byte_lock(libc::F_WRLCK, id))) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn unlock(file: &File, id: u32) {
    if let Err(e) = fcntl(file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&byte_lock(libc::F_UNLCK, id))) {
        // Only EBADF/EINVAL could come back, and neither can happen on an open lock file.
        tracing::warn!("failed to unlock sandbox uid {id}: {e}");
    }
}

/// What one scan of the process table found.
#[derive(Debug, Default)]
struct Scan {
    /// The ids asked about that some process has as a uid or gid.
    held: HashSet<u32>,
    /// The hidepid= option, when /proc hides other users' processes.
    hidden: Option<String>,
}

/// Which of `ids` a process under `proc_root` has as its real, effective, saved or fs uid or
/// gid.
fn held_ids(proc_root: &Path, ids: &[u32]) -> io::Result<Scan> {
    let wanted: HashSet<u32> = ids.iter().copied().collect();
    let mut scan = Scan::default();
    let mut buf = Vec::with_capacity(2048);
    for entry in std::fs::read_dir(proc_root)? {
        let entry = entry?;
        let name = entry.file_name();
        if !name.as_encoded_bytes().first().is_some_and(u8::is_ascii_digit) {
            continue;
        }
        buf.clear();
        let read = File::open(entry.path().join("status")).and_then(|mut f| f.read_to_end(&mut buf));
        match read {
            Ok(_) => {
                for line in buf.split(|&b| b == b'\n') {
                    let ids = line.strip_prefix(b"Uid:").or_else(|| line.strip_prefix(b"Gid:"));
                    for field in ids.into_iter().flat_map(|rest| rest.split(u8::is_ascii_whitespace)) {
                        if let Some(id) = std::str::from_utf8(field).ok().and_then(|f| f.parse::<u32>().ok()) {
                            if wanted.contains(&id) {
                                scan.held.insert(id);
                            }
                        }
                    }
                }
            }
            // Gone since readdir.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) || e.raw_os_error() == Some(libc::ESRCH) => {}
            // hidepid=noaccess: the owner (the effective uid, or root for a non-dumpable
            // process) is all there is to see.
            Err(_) => {
                if let Ok(meta) = entry.metadata() {
                    if wanted.contains(&meta.uid()) {
                        scan.held.insert(meta.uid());
                    }
                }
            }
        }
    }
    if proc_root == Path::new("/proc") {
        scan.hidden = hidepid(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    }
    Ok(scan)
}

/// The `hidepid=` option of the /proc mount in `mountinfo` (proc(5)), unless it hides nothing.
fn hidepid(mountinfo: &str) -> Option<String> {
    let line = mountinfo.lines().find(|l| l.split(' ').nth(4) == Some("/proc") && l.contains(" - proc "))?;
    let options = line.rsplit(' ').next()?;
    options
        .split(',')
        .find(|o| o.starts_with("hidepid=") && !matches!(*o, "hidepid=0" | "hidepid=off"))
        .map(str::to_owned)
}

/// Why a directory that faas trusts is not safe to trust.
#[derive(Debug, thiserror::Error)]
pub enum UnsafeDir {
    /// A path component could not be looked at.
    #[error("cannot look at {}: {source}", path.display())]
    Stat {
        /// The component.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A component is owned by someone other than root (or us).
    #[error("{} is owned by uid {uid}, not root", path.display())]
    Owner {
        /// The component.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// A component others can write to, without the sticky bit that would keep them from
    /// renaming what is in it.
    #[error("{} is writable by group or others (mode {mode:04o})", path.display())]
    Writable {
        /// The component.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// Checks that only root (or our own uid) can change `dir` or swap it for something else, as
/// sshd's StrictModes does: `dir` and every directory above it, up to `/`, is owned by root
/// (or us) and not writable by group or others. A directory above it may be writable by
/// others if it has the sticky bit (as /tmp has), since then no one else can rename or remove
/// what we own in it. Returns the path with symlinks resolved, which is what the caller should
/// use from then on (a symlink in the path could be changed later).
pub fn check_private_dir(dir: &Path) -> Result<PathBuf, UnsafeDir> {
    let canonical = std::fs::canonicalize(dir).map_err(|source| UnsafeDir::Stat { path: dir.to_owned(), source })?;
    for (depth, path) in canonical.ancestors().enumerate() {
        let meta =
            std::fs::symlink_metadata(path).map_err(|source| UnsafeDir::Stat { path: path.to_owned(), source })?;
        if !trusted_owner(meta.uid()) {
            return Err(UnsafeDir::Owner { path: path.to_owned(), uid: meta.uid() });
        }
        let mode = meta.mode() & 0o7777;
        let sticky = mode & 0o1000 != 0 && depth > 0;
        if mode & 0o022 != 0 && !sticky {
            return Err(UnsafeDir::Writable { path: path.to_owned(), mode });
        }
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A pool on a lock file of its own and an empty process table.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("proc")).unwrap();
            Fixture { dir }
        }

        fn pool(&self, base: u32, count: u32, hold: Duration) -> Arc<UidPool> {
            UidPool::with_paths(base, count, self.dir.path().join("run/uids.lock"), self.dir.path().join("proc"), hold)
        }

        /// A process whose status has these uid and gid lines.
        fn process(&self, pid: u32, uids: [u32; 4], gids: [u32; 4]) {
            let d = self.dir.path().join("proc").join(pid.to_string());
            std::fs::create_dir(&d).unwrap();
            let line = |ids: [u32; 4]| ids.map(|i| i.to_string()).join("\t");
            std::fs::write(
                d.join("status"),
                format!(
                    "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t{}\nGid:\t{}\nGroups:\t\n",
                    line(uids),
                    line(gids)
                ),
            )
            .unwrap();
        }
    }

    #[test]
    fn uids_are_unique_while_leased_and_reused_oldest_first() {
        let f = Fixture::new();
        let pool = f.pool(100_000, 3, IDLE_HOLD);
        let a = pool.lease().unwrap();
        let b = pool.lease().unwrap();
        let c = pool.lease().unwrap();
        assert!(pool.lease().is_none());
        assert_eq!([a.id, b.id, c.id], [100_000, 100_001, 100_002]);
        drop(b);
        assert_eq!(pool.in_use(), 2);
        let d = pool.lease().unwrap();
        assert_eq!(d.id, 100_001);
        drop((c, a, d));
        let e = pool.lease().unwrap();
        assert_eq!(e.id, 100_002, "the uid idle longest, not the lowest free one");
    }

    #[test]
    fn two_pools_on_one_lock_file_never_share_a_uid() {
        // Two open files of one lock file conflict as two processes would.
        let f = Fixture::new();
        let (one, two) = (f.pool(100_000, 4, IDLE_HOLD), f.pool(100_000, 4, IDLE_HOLD));
        let mut seen = HashSet::new();
        let mut leases = Vec::new();
        for pool in [&one, &two, &one, &two] {
            let l = pool.lease().unwrap();
            assert!(seen.insert(l.id), "uid {} lent twice", l.id);
            leases.push(l);
        }
        assert!(one.lease().is_none() && two.lease().is_none(), "every uid of the range is lent");
        // A returned uid stays with its pool (still locked), so the other cannot take it.
        let first = leases.remove(0);
        let id = first.id;
        drop(first);
        assert!(two.lease().is_none(), "uid {id} went to the other pool while this one holds it");
        assert_eq!(one.lease().map(|l| l.id), Some(id));
    }

    #[test]
    fn a_dead_pool_frees_its_uids() {
        let f = Fixture::new();
        let one = f.pool(100_000, 2, IDLE_HOLD);
        let leases = [one.lease().unwrap(), one.lease().unwrap()];
        let two = f.pool(100_000, 2, IDLE_HOLD);
        assert!(two.lease().is_none());
        // The process dies: its file closes and the kernel drops its locks.
        drop((leases, one));
        assert!(two.lease().is_some());
    }

    #[test]
    fn idle_uids_beyond_one_batch_are_unlocked_after_the_hold() {
        let f = Fixture::new();
        let one = f.pool(100_000, 4, Duration::ZERO);
        let leases: Vec<_> = (0..4).map(|_| one.lease().unwrap()).collect();
        drop(leases);
        assert_eq!(one.locked(), 1, "one batch (of 1, for 4 uids) stays locked");
        let two = f.pool(100_000, 4, IDLE_HOLD);
        let got: Vec<_> = (0..4).filter_map(|_| two.lease()).collect();
        assert_eq!(got.iter().map(|l| l.id).collect::<Vec<_>>(), [100_000, 100_001, 100_002]);
    }

    #[test]
    fn a_uid_a_process_holds_is_skipped() {
        let f = Fixture::new();
        f.process(4242, [100_000; 4], [100_000; 4]);
        // Only the saved uid, only the fs gid: held all the same.
        f.process(4243, [0, 0, 100_002, 0], [0; 4]);
        f.process(4244, [0; 4], [0, 0, 0, 100_003]);
        let pool = f.pool(100_000, 5, IDLE_HOLD);
        let a = pool.lease().unwrap();
        let b = pool.lease().unwrap();
        assert_eq!([a.id, b.id], [100_001, 100_004]);
        assert!(pool.lease().is_none());
    }

    #[test]
    fn busy_uids_are_tried_again_later() {
        let f = Fixture::new();
        f.process(4242, [100_000; 4], [100_000; 4]);
        let pool = f.pool(100_000, 1, IDLE_HOLD);
        assert!(pool.lease().is_none());
        std::fs::remove_dir_all(f.dir.path().join("proc/4242")).unwrap();
        // Still within BUSY_RETRY: not scanned again.
        assert!(pool.lease().is_none());
        pool.state().busy.clear();
        assert_eq!(pool.lease().map(|l| l.id), Some(100_000));
    }

    #[test]
    fn an_unsafe_lock_directory_means_no_uid() {
        let f = Fixture::new();
        let run = f.dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
        let pool = f.pool(100_000, 2, IDLE_HOLD);
        let err = pool.prepare().unwrap_err();
        assert!(err.contains("is writable by group or others (mode 0777)") && err.contains("\nhint: "), "{err}");
        assert!(pool.lease().is_none());
    }

    #[test]
    fn private_dirs() {
        let f = Fixture::new();
        let d = f.dir.path().join("a/b");
        std::fs::create_dir_all(&d).unwrap();
        assert_eq!(check_private_dir(&d).unwrap(), d.canonicalize().unwrap());
        // The directory itself: no sticky exception.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = check_private_dir(&d).unwrap_err().to_string();
        assert_eq!(err, format!("{} is writable by group or others (mode 1777)", d.canonicalize().unwrap().display()));
        // Above it: group-writable refused, sticky accepted.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let a = f.dir.path().join("a");
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(matches!(check_private_dir(&d), Err(UnsafeDir::Writable { mode: 0o775, .. })));
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(check_private_dir(&d).is_ok());
        // A symlink is followed, and the target is what is checked and returned.
        let link = f.dir.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert_eq!(check_private_dir(&link).unwrap(), d.canonicalize().unwrap());
    }

    #[test]
    fn hidepid_is_read_from_mountinfo() {
        let plain = "22 28 0:5 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n";
        assert_eq!(hidepid(plain), None);
        let unit = "22 28 0:5 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw,hidepid=invisible\n";
        assert_eq!(hidepid(unit).as_deref(), Some("hidepid=invisible"));
        assert_eq!(hidepid("1 2 0:5 / /proc rw - proc proc rw,hidepid=0\n"), None);
    }

    #[test]
    #[ignore = "a measurement: cargo test --release --bin faas lease_cost -- --ignored --nocapture"]
    fn lease_cost() {
        let f = Fixture::new();
        let n = 20_000u32;
        // The real process table, for the scan.
        let pool =
            UidPool::with_paths(0x7f00_0000, 65_536, f.dir.path().join("run/uids.lock"), "/proc".into(), IDLE_HOLD);
        let processes = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(|c: char| c.is_ascii_digit()))
            .count();
        let t = Instant::now();
        let scan = held_ids(Path::new("/proc"), &[1]).unwrap();
        let scan_time = t.elapsed();
        assert!(scan.held.is_empty() || scan.held.contains(&1));
        let t = Instant::now();
        for _ in 0..n {
            drop(pool.lease().unwrap());
        }
        let one_at_a_time = t.elapsed() / n;
        // 64 alive at once: the pool grows to 64 uids (4 batches, 3 more scans), then reuses them.
        let t = Instant::now();
        let live: Vec<_> = (0..64).map(|_| pool.lease().unwrap()).collect();
        drop(live);
        let growing = t.elapsed() / 64;
        let t = Instant::now();
        for _ in 0..n / 64 {
            let live: Vec<_> = (0..64).map(|_| pool.lease().unwrap()).collect();
            drop(live);
        }
        let sixty_four = t.elapsed() / (n / 64 * 64);
        println!(
            "scan of {processes} processes: {scan_time:?}; per lease and return: one live {one_at_a_time:?} (the first lease scanned); \
             64 live, while the pool grows to 64: {growing:?}, then {sixty_four:?}"
        );
    }
}
