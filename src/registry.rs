//! The functions directory: `NAME.toml` files, looked up by name on every request; and the
//! deployed functions (`deploy::Store`), the current version of each. A name in the
//! functions directory wins over a deployed one of the same name: that directory is the
//! operator's and config management's, a deploy may not shadow it (`faas deploy` refuses the
//! name, `faas check` reports both). A lookup
//! stats the file and re-reads it only when it changed, so dropping, editing or deleting a
//! file takes effect on the next request. Each version of a function owns its prepared
//! sandbox parts (root skeleton, mount list, Landlock rules, argv) for as long as any request
//! uses it. A file that does not load is remembered with its error: that function answers
//! 503 and nothing else is affected.
//!
//! The state directory holds what a process prepares: `fn/NAME-VERSION/` for `faas serve`,
//! `invoke-PID/fn/…` for each `faas invoke`, so that an invoke beside a running daemon never
//! touches the daemon's sandbox roots (deleting a mount point detaches the mounts on it in
//! every namespace: the daemon's templates, and live sandboxes). One daemon per state
//! directory: it holds flock(2) on `lock` for its life, and only then clears `fn/`. Each
//! invoke holds flock(2) on its own directory; whoever starts next removes the directories
//! of invokes that are gone (their lock is free), never those of live ones. The kernel drops
//! a dead process's flocks, so nothing depends on pids not being reused. The state directory
//! and every directory above it must be writable by root only ([`check_private_dir`]):
//! otherwise a local user could swap in symlinks for the parts the daemon mounts as root.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tokio::sync::Semaphore;

use crate::config::ConfigError;
use crate::deploy::Store;
use crate::function::{inline_file, valid_name, Code, Function, Network, Runtime};
use crate::runtime;
use crate::sandbox::{self, check_private_dir, CodeSource, Host, PrepareError, PreparedSandbox, Spec, UnsafeDir};

/// A function ready to run: the checked definition and its prepared sandbox.
pub struct Loaded {
    pub function: Function,
    /// Its sandbox parts, shared with every running sandbox of this version.
    pub sandbox: Arc<PreparedSandbox>,
    /// Increases with every load, across all functions.
    pub version: u64,
    /// Per-function concurrency limit (kept across versions).
    pub limiter: Arc<Semaphore>,
    /// The deployed version (sha256, hex) when it came from the deploy store.
    pub deployed: Option<String>,
    /// Its zygote, for a warm function.
    pub warm: Option<Arc<crate::warm::Slot>>,
}

/// What a lookup found.
pub enum Lookup {
    NotFound,
    /// The file does not load: the whole error, for the journal and `/_/functions`; its
    /// `summary()` is all a public caller may see.
    Invalid(Arc<LoadError>),
    Ready(Arc<Loaded>),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

/// Why a function file does not load: the file itself, or the sandbox parts of its version.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    File(#[from] ConfigError),
    #[error("{}: {source}", path.display())]
    Prepare {
        path: PathBuf,
        #[source]
        source: PrepareError,
    },
}

impl LoadError {
    /// One line for a public HTTP 503 body: never a host path or an OS error.
    pub fn summary(&self) -> String {
        match self {
            LoadError::File(e) => e.summary(),
            LoadError::Prepare { .. } => "the function's sandbox could not be prepared".to_owned(),
        }
    }
}

/// A function file once loaded: ready, or why it does not load.
#[derive(Clone)]
pub enum State {
    Ready(Arc<Loaded>),
    Invalid(Arc<LoadError>),
}

struct Entry {
    /// The file it was loaded from: the functions directory's or a deployed version's.
    path: PathBuf,
    stamp: Stamp,
    state: State,
}

/// The set of functions, keyed by name.
pub struct Registry {
    host: Arc<Host>,
    dir: PathBuf,
    state: StateDir,
    entries: Mutex<HashMap<String, Entry>>,
    limiters: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
    versions: AtomicU64,
    store: Store,
    /// Every deployed version loaded and maybe still running: (name, version, it).
    live: Mutex<Vec<(String, String, Weak<Loaded>)>>,
    /// The zygotes of warm functions.
    warm: Arc<crate::warm::Pool>,
}

/// Which process the registry is for; each owns a different part of the state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `faas serve`: the state directory's `fn/`, one daemon at a time.
    Serve,
    /// `faas invoke`: an `invoke-PID/` of its own, removed when it ends.
    Invoke,
}

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("failed to create the state directory {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Someone other than root could change it or a directory above it.
    #[error("the state directory {} is not safe: {source}\nhint: faas mounts what it prepares there as root, so only root may be able to write to it and to every directory above it (a directory with the sticky bit, such as /tmp, excepted): chown root and chmod go-w, or set state_dir to a directory under /run", path.display())]
    Unsafe {
        path: PathBuf,
        /// Which part is not safe.
        #[source]
        source: UnsafeDir,
    },
    /// Another daemon holds it.
    #[error("the state directory {} is in use by another faas serve (pid {pid})\nhint: give each daemon its own state_dir (or --state-dir), or stop the other one", path.display())]
    Busy {
        path: PathBuf,
        /// The other daemon, as it wrote itself into the lock file.
        pid: String,
    },
    /// Locking it, or making a directory of our own in it, failed.
    #[error("failed to {what} in the state directory {}: {source}", path.display())]
    Own {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// This process's part of the state directory, held for its life.
struct StateDir {
    /// Where this process's `fn/` goes: the state directory (serve) or its `invoke-PID/`.
    own: PathBuf,
    /// `lock` (serve) or the `invoke-PID/` directory (invoke), flocked.
    _lock: Flock<File>,
    /// Whether `own` goes when we do (invoke).
    remove: bool,
}

impl StateDir {
    fn open(state: &Path, role: Role) -> Result<StateDir, StateError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(state)
            .map_err(|source| StateError::Create { path: state.to_owned(), source })?;
        let state = check_private_dir(state).map_err(|source| StateError::Unsafe { path: state.to_owned(), source })?;
        let own_err = |what: &'static str| {
            let path = state.clone();
            move |source| StateError::Own { what, path, source }
        };
        match role {
            Role::Serve => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(state.join("lock"))
                    .map_err(own_err("open the lock file"))?;
                let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                    Ok(lock) => lock,
                    Err((mut file, Errno::EWOULDBLOCK)) => {
                        let mut pid = String::new();
                        let _ = file.read_to_string(&mut pid);
                        let pid = if pid.trim().is_empty() { "unknown".to_owned() } else { pid.trim().to_owned() };
                        return Err(StateError::Busy { path: state, pid });
                    }
                    Err((_, e)) => return Err(own_err("lock the lock file")(e.into())),
                };
                // For the error message of a second daemon.
                lock.set_len(0)
                    .and_then(|()| lock.rewind())
                    .and_then(|()| writeln!(lock, "{}", std::process::id()))
                    .map_err(own_err("write our pid into the lock file"))?;
                // Ours alone now: whatever is in fn/ was left by an earlier daemon.
                let fn_state = state.join("fn");
                if let Err(e) = std::fs::remove_dir_all(&fn_state) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!("failed to clear stale sandbox roots in {}: {e}", fn_state.display());
                    }
                }
                remove_dead_invokes(&state);
                Ok(StateDir { own: state, _lock: lock, remove: false })
            }
            Role::Invoke => {
                remove_dead_invokes(&state);
                let (own, lock) = make_invoke_dir(&state).map_err(own_err("make a directory of our own"))?;
                Ok(StateDir { own, _lock: lock, remove: true })
            }
        }
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if self.remove {
            // Still under our flock, so no one else is removing it at the same time.
            if let Err(e) = std::fs::remove_dir_all(&self.own) {
                tracing::warn!("failed to remove {}: {e}", self.own.display());
            }
        }
    }
}

/// Makes `state/invoke-PID` (or `invoke-PID-N` if that is taken) and flocks it.
fn make_invoke_dir(state: &Path) -> std::io::Result<(PathBuf, Flock<File>)> {
    let pid = std::process::id();
    let mut last = None;
    for attempt in 0..8 {
        let own = state.join(if attempt == 0 { format!("invoke-{pid}") } else { format!("invoke-{pid}-{attempt}") });
        match std::fs::DirBuilder::new().mode(0o755).create(&own) {
            Ok(()) => {}
            // A live invoke's (in another pid namespace), or being made or removed right now.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        let lock = match File::open(&own).map(|f| Flock::lock(f, FlockArg::LockExclusiveNonblock)) {
            Ok(Ok(lock)) => lock,
            Ok(Err((_, e))) => {
                last = Some(std::io::Error::from(e));
                continue;
            }
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        // Another process's clean-up may have taken it for a dead invoke's between our
        // mkdir and our flock, and removed it: then the path is gone or another directory.
        let ours = lock.metadata()?;
        match std::fs::symlink_metadata(&own) {
            Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => return Ok((own, lock)),
            _ => continue,
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AlreadyExists)))
}

/// Removes the `invoke-*` directories in `state` whose invoke is gone (its flock is free).
fn remove_dead_invokes(state: &Path) {
    let Ok(entries) = std::fs::read_dir(state) else { return };
    for entry in entries.flatten() {
        if !entry.file_name().as_encoded_bytes().starts_with(b"invoke-") || !entry.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        let path = entry.path();
        // A live invoke holds the flock; EWOULDBLOCK leaves its directory alone.
        let Ok(Ok(_lock)) = File::open(&path).map(|f| Flock::lock(f, FlockArg::LockExclusiveNonblock)) else {
            continue;
        };
        match std::fs::remove_dir_all(&path) {
            Ok(()) => tracing::info!("removed {}, left by a faas invoke that is gone", path.display()),
            Err(e) => tracing::warn!("failed to remove {}, left by a faas invoke that is gone: {e}", path.display()),
        }
    }
}

/// Why every request of `f` would fail, if its `nofile` is above the hard open-files limit
/// `hard`: the sandbox cannot raise its hard limit once it has dropped root (setrlimit(2)).
pub fn nofile_warning(f: &Function, hard: Option<u64>) -> Option<String> {
    let hard = hard?;
    (f.limits.nofile > hard).then(|| {
        format!(
            "nofile {} is above the hard open-files limit of {hard}: every request would fail at \"set rlimits\"\nhint: lower limits.nofile, or raise the daemon's hard limit (LimitNOFILE= in faas.service; faas check compares with its own)",
            f.limits.nofile
        )
    })
}

impl Registry {
    /// A registry over `host.config.functions_dir`, preparing into this process's part of the
    /// state directory (see the module docs); `Serve` clears what an earlier daemon left.
    pub fn new(host: Arc<Host>, role: Role) -> Result<Registry, StateError> {
        let dir = host.config.functions_dir.clone();
        let host_warm = host.config.warm.clone();
        let state = StateDir::open(&host.config.state_dir, role)?;
        let store = Store::new(host.config.deploy.dir.clone());
        if role == Role::Serve {
            store.sweep(host.config.deploy.keep);
        }
        Ok(Registry {
            host,
            dir,
            state,
            entries: Mutex::default(),
            limiters: Mutex::default(),
            versions: AtomicU64::new(1),
            store,
            live: Mutex::default(),
            warm: crate::warm::Pool::new(host_warm),
        })
    }

    /// The zygotes of warm functions.
    pub fn warm(&self) -> &Arc<crate::warm::Pool> {
        &self.warm
    }

    /// The deployed functions' versions.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The daemon's settings.
    pub fn config(&self) -> &crate::config::Config {
        &self.host.config
    }

    /// Where `name` comes from: the functions directory's file if there is one (it wins),
    /// else the current deployed version's file.
    fn locate(&self, name: &str) -> Option<(PathBuf, Option<String>)> {
        let path = self.dir.join(format!("{name}.toml"));
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            return Some((path, None));
        }
        let version = self.store.current(name)?;
        Some((self.store.version_file(name, &version), Some(version)))
    }

    /// Loads one deployed version of `name` without serving it: a deploy or rollback
    /// prepares the version before it switches, so no request waits for that and a version
    /// that does not load never serves.
    pub fn prepare_version(&self, name: &str, version: &str) -> State {
        self.load(name, &self.store.version_file(name, version), Some(version.to_owned()))
    }

    /// Serves `state` (from `prepare_version`) for `name` from now on, as if a lookup had
    /// loaded it after the switch.
    pub fn install(&self, name: &str, version: &str, state: State) {
        let path = self.store.version_file(name, version);
        if let Ok(meta) = std::fs::metadata(&path) {
            let entry = Entry { path, stamp: Stamp::of(&meta), state };
            self.entries.lock().expect("registry lock is never poisoned").insert(name.to_owned(), entry);
        }
    }

    /// Drops what is loaded for `name` (after `rm`): only running requests hold it now.
    pub fn forget(&self, name: &str) {
        self.entries.lock().expect("registry lock is never poisoned").remove(name);
    }

    /// The deployed versions of `name` that something still holds: the one being served,
    /// requests running on older ones.
    pub fn versions_in_use(&self, name: &str) -> std::collections::HashSet<String> {
        let mut live = self.live.lock().expect("registry lock is never poisoned");
        live.retain(|(_, _, l)| l.strong_count() > 0);
        live.iter().filter(|(n, _, _)| n == name).map(|(_, v, _)| v.clone()).collect()
    }

    /// The functions directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Finds `name`, (re)loading its file if it changed since the last lookup.
    pub fn lookup(&self, name: &str) -> Lookup {
        if !valid_name(name) {
            return Lookup::NotFound;
        }
        let gone = || {
            if self.entries.lock().expect("registry lock is never poisoned").remove(name).is_some() {
                tracing::info!(function = name, "function removed");
            }
            Lookup::NotFound
        };
        let Some((path, deployed)) = self.locate(name) else { return gone() };
        let meta = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            _ => return gone(),
        };
        let stamp = Stamp::of(&meta);
        if let Some(entry) = self.entries.lock().expect("registry lock is never poisoned").get(name) {
            if entry.stamp == stamp && entry.path == path {
                return to_lookup(&entry.state);
            }
        }
        let state = self.load(name, &path, deployed);
        let lookup = to_lookup(&state);
        self.entries
            .lock()
            .expect("registry lock is never poisoned")
            .insert(name.to_owned(), Entry { path, stamp, state });
        lookup
    }

    fn load(&self, name: &str, path: &Path, deployed: Option<String>) -> State {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(source) => return self.invalid(name, ConfigError::Read { path: path.to_owned(), source }.into()),
        };
        let function = match Function::parse(path, &text, &self.host.config) {
            Ok(f) => f,
            Err(e) => return self.invalid(name, e.into()),
        };
        if let Some(warning) = nofile_warning(&function, self.host.nofile_hard) {
            tracing::warn!(function = name, "function {name}: {warning}");
        }
        let version = self.versions.fetch_add(1, Ordering::Relaxed);
        let sandbox = match prepare(&self.host, &self.state.own, &function, version) {
            Ok(s) => Arc::new(s),
            Err(source) => return self.invalid(name, LoadError::Prepare { path: path.to_owned(), source }),
        };
        let limiter = {
            let mut limiters = self.limiters.lock().expect("registry lock is never poisoned");
            let slot = limiters.entry(name.to_owned()).or_insert_with(|| {
                (function.limits.concurrency, Arc::new(Semaphore::new(function.limits.concurrency)))
            });
            if slot.0 != function.limits.concurrency {
                *slot = (function.limits.concurrency, Arc::new(Semaphore::new(function.limits.concurrency)));
            }
            slot.1.clone()
        };
        tracing::info!(
            function = name,
            version,
            runtime = function.runtime.as_str(),
            "loaded function {name} (version {version}) from {}; {}",
            function.path.display(),
            sandbox.landlock_summary()
        );
        // Only a daemon keeps zygotes: `faas invoke` runs one request, cold.
        let warm = if !self.state.remove { self.warm.slot(&function, version) } else { None };
        let loaded = Arc::new(Loaded { function, sandbox, version, limiter, deployed: deployed.clone(), warm });
        if let Some(v) = deployed {
            let mut live = self.live.lock().expect("registry lock is never poisoned");
            live.retain(|(_, _, l)| l.strong_count() > 0);
            live.push((name.to_owned(), v, Arc::downgrade(&loaded)));
        }
        State::Ready(loaded)
    }

    fn invalid(&self, name: &str, err: LoadError) -> State {
        tracing::error!(function = name, "function {name} is not served: {err}");
        State::Invalid(Arc::new(err))
    }

    /// Loads every function file now (at start-up, before READY=1); returns (ok, invalid).
    pub fn load_all(&self) -> (usize, usize) {
        let (mut ok, mut bad) = (0, 0);
        for name in self.names() {
            match self.lookup(&name) {
                Lookup::Ready(_) => ok += 1,
                Lookup::Invalid(_) => bad += 1,
                Lookup::NotFound => {}
            }
        }
        (ok, bad)
    }

    /// Names of the function files in the directory and of the deployed functions, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.file_names();
        names.extend(self.store.names());
        names.sort();
        names.dedup();
        names
    }

    /// Names of the function files in the directory, sorted.
    pub fn file_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_suffix(".toml")?.to_owned();
                valid_name(&name).then_some(name)
            })
            .collect();
        names.sort();
        names
    }

    /// Every function and whether it loads, for `/_/functions`.
    pub fn snapshot(&self) -> Vec<(String, State)> {
        self.names()
            .into_iter()
            .filter_map(|n| match self.lookup(&n) {
                Lookup::Ready(l) => Some((n, State::Ready(l))),
                Lookup::Invalid(e) => Some((n, State::Invalid(e))),
                Lookup::NotFound => None,
            })
            .collect()
    }
}

fn to_lookup(state: &State) -> Lookup {
    match state {
        State::Ready(l) => Lookup::Ready(l.clone()),
        State::Invalid(e) => Lookup::Invalid(e.clone()),
    }
}

/// Every `*.toml` in `dir`, sorted, for `faas check`.
pub fn function_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect(),
        Err(source) => return Err(ConfigError::Read { path: dir.to_owned(), source }),
    };
    files.sort();
    Ok(files)
}

/// Checks one function file.
pub fn check_file(path: &Path, config: &crate::config::Config) -> Result<Function, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    Function::parse(path, &text, config)
}

/// Builds the sandbox parts of one function version under `state`, this process's part of
/// the state directory.
fn prepare(host: &Host, state: &Path, f: &Function, version: u64) -> Result<PreparedSandbox, PrepareError> {
    let inline;
    let code = match &f.code {
        Code::Dir(d) => CodeSource::Dir(d),
        Code::Inline(text) => {
            inline = inline_file(f.runtime, &f.handler);
            CodeSource::Inline { file: Path::new(&inline), text, executable: matches!(f.runtime, Runtime::Exec) }
        }
    };
    let (exe, argv) = runtime::command(f.runtime, &f.handler, &host.config.runtimes);
    let secrets: Vec<sandbox::SecretFile> =
        f.secrets.iter().map(|s| sandbox::SecretFile { name: &s.name, value: s.value.expose() }).collect();
    let network = match f.network {
        Network::None => sandbox::Network::None,
        Network::Egress => sandbox::Network::Egress { proxy_port: crate::egress::PROXY_PORT },
        Network::Host => sandbox::Network::Host,
    };
    sandbox::prepare(
        host,
        Spec {
            name: &f.name,
            dir: version_dir(state, &f.name, version),
            code,
            read_only: &f.read_only,
            tmp_bytes: f.tmp.0,
            memory: f.limits.memory.0,
            network,
            secrets: &secrets,
            exe,
            argv,
        },
    )
}

/// Where the state for one function version lives.
fn version_dir(state_dir: &Path, name: &str, version: u64) -> PathBuf {
    state_dir.join("fn").join(format!("{name}-{version}"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn invokes(state: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(state)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("invoke-"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn one_daemon_per_state_dir_and_it_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = StateDir::open(&state, Role::Serve).unwrap();
        let err = StateDir::open(&state, Role::Serve).err().expect("a second daemon on the same state dir");
        let canonical = state.canonicalize().unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "the state directory {} is in use by another faas serve (pid {})\nhint: give each daemon its own state_dir (or --state-dir), or stop the other one",
                canonical.display(),
                std::process::id()
            )
        );
        drop(first);
        assert!(StateDir::open(&state, Role::Serve).is_ok(), "the lock goes with its holder");
    }

    #[test]
    fn a_daemon_clears_its_fn_and_dead_invokes_but_not_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let live = StateDir::open(&state, Role::Invoke).unwrap();
        std::fs::create_dir_all(live.own.join("fn/x-1")).unwrap();
        std::fs::create_dir_all(state.join("invoke-999999999/fn/x-1")).unwrap();
        std::fs::create_dir_all(state.join("fn/old-3/root")).unwrap();
        let daemon = StateDir::open(&state, Role::Serve).unwrap();
        assert!(!state.join("fn").exists(), "an earlier daemon's fn/ stays");
        let own = live.own.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(invokes(&state), [own], "a dead invoke's directory stays, or a live one's went");
        assert!(live.own.join("fn/x-1").is_dir());
        drop(daemon);
        drop(live);
        assert!(invokes(&state).is_empty(), "faas invoke leaves its directory behind");
    }

    #[test]
    fn invokes_get_directories_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (one, two) = (StateDir::open(&state, Role::Invoke).unwrap(), StateDir::open(&state, Role::Invoke).unwrap());
        assert_ne!(one.own, two.own);
        assert!(one.own.starts_with(state.canonicalize().unwrap()) && two.own.is_dir());
    }

    #[test]
    fn a_state_dir_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o775)).unwrap();
        for role in [Role::Serve, Role::Invoke] {
            let err = StateDir::open(&state, role).err().expect("a group-writable state dir").to_string();
            let canonical = state.canonicalize().unwrap();
            assert!(
                err.starts_with(&format!(
                    "the state directory {} is not safe: {} is writable by group or others (mode 0775)\nhint: ",
                    state.display(),
                    canonical.display()
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn nofile_above_the_hard_limit_is_named() {
        let config = crate::config::Config::default();
        let f = Function::parse(
            Path::new("/x/many.toml"),
            "runtime = \"sh\"\nsource = \"true\"\n[limits]\nnofile = 4096\n",
            &config,
        )
        .unwrap();
        assert_eq!(nofile_warning(&f, None), None);
        assert_eq!(nofile_warning(&f, Some(4096)), None);
        let w = nofile_warning(&f, Some(1024)).unwrap();
        assert!(w.starts_with("nofile 4096 is above the hard open-files limit of 1024: every request would fail at \"set rlimits\"\nhint: "), "{w}");
    }
}
