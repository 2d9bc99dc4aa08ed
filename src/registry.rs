//! The functions directory: `NAME.toml` files, looked up by name on every request. A lookup
//! stats the file and re-reads it only when it changed, so dropping, editing or deleting a
//! file takes effect on the next request. Each version of a function owns its prepared
//! sandbox parts (root skeleton, mount list, Landlock rules, argv) for as long as any request
//! uses it. A file that does not load is remembered with its error: that function answers
//! 503 and nothing else is affected.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::config::ConfigError;
use crate::function::{inline_file, valid_name, Code, Function, Runtime};
use crate::host::Host;
use crate::runtime;
use crate::sandbox::landlock::{self, RulePaths};
use crate::sandbox::namespaces::{self, build_skeleton, cstr, request_mounts, template_plan, RootSpec};
use crate::sandbox::spawn;
use crate::sandbox::{version_dir, PreparedSandbox};

/// A function ready to run: the checked definition and its prepared sandbox.
pub struct Loaded {
    /// The definition.
    pub function: Function,
    /// Its sandbox parts.
    pub sandbox: PreparedSandbox,
    /// Increases with every load, across all functions.
    pub version: u64,
    /// Per-function concurrency limit (kept across versions).
    pub limiter: Arc<Semaphore>,
}

/// What a lookup found.
pub enum Lookup {
    /// No such file.
    NotFound,
    /// The file does not load: the whole error, for the journal and `/_/functions`; its
    /// `summary()` is all a public caller may see.
    Invalid(Arc<ConfigError>),
    /// Ready.
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

#[derive(Clone)]
enum State {
    Ready(Arc<Loaded>),
    Invalid(Arc<ConfigError>),
}

struct Entry {
    stamp: Stamp,
    state: State,
}

/// The set of functions, keyed by name.
pub struct Registry {
    host: Arc<Host>,
    dir: PathBuf,
    entries: Mutex<HashMap<String, Entry>>,
    limiters: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
    versions: AtomicU64,
}

/// Why a checked function could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Writing inline source or the root skeleton failed.
    #[error("failed to prepare the sandbox root for {name} in {}: {source}", dir.display())]
    Root {
        /// The function.
        name: String,
        /// Where.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Landlock rules could not be built.
    #[error(transparent)]
    Landlock(#[from] landlock::LandlockError),
}

impl Registry {
    /// A registry over `host.config.functions_dir`; clears stale state from earlier runs.
    pub fn new(host: Arc<Host>) -> Registry {
        let dir = host.config.functions_dir.clone();
        let fn_state = host.config.state_dir.join("fn");
        if let Err(e) = std::fs::remove_dir_all(&fn_state) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("failed to clear stale sandbox roots in {}: {e}", fn_state.display());
            }
        }
        Registry { host, dir, entries: Mutex::default(), limiters: Mutex::default(), versions: AtomicU64::new(1) }
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
        let path = self.dir.join(format!("{name}.toml"));
        let meta = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            _ => {
                if self.entries.lock().expect("registry lock is never poisoned").remove(name).is_some() {
                    tracing::info!(function = name, "function removed");
                }
                return Lookup::NotFound;
            }
        };
        let stamp = Stamp::of(&meta);
        if let Some(entry) = self.entries.lock().expect("registry lock is never poisoned").get(name) {
            if entry.stamp == stamp {
                return to_lookup(&entry.state);
            }
        }
        let state = self.load(name, &path);
        let lookup = to_lookup(&state);
        self.entries.lock().expect("registry lock is never poisoned").insert(name.to_owned(), Entry { stamp, state });
        lookup
    }

    fn load(&self, name: &str, path: &Path) -> State {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(source) => return self.invalid(name, ConfigError::Read { path: path.to_owned(), source }),
        };
        let function = match Function::parse(path, &text, &self.host.config) {
            Ok(f) => f,
            Err(e) => return self.invalid(name, e),
        };
        let version = self.versions.fetch_add(1, Ordering::Relaxed);
        let sandbox = match prepare(&self.host, &function, version) {
            Ok(s) => s,
            Err(e) => {
                let err = ConfigError::at(path, &text, None, e.to_string(), None);
                return self.invalid(name, err);
            }
        };
        let limiter = {
            let mut limiters = self.limiters.lock().expect("registry lock is never poisoned");
            let slot = limiters
                .entry(name.to_owned())
                .or_insert_with(|| (function.limits.concurrency, Arc::new(Semaphore::new(function.limits.concurrency))));
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
            sandbox.landlock.enforcement
        );
        State::Ready(Arc::new(Loaded { function, sandbox, version, limiter }))
    }

    fn invalid(&self, name: &str, err: ConfigError) -> State {
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

    /// Names of the function files in the directory, sorted.
    pub fn names(&self) -> Vec<String> {
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

    /// Every function and its state, for `/_/functions`.
    pub fn snapshot(&self) -> Vec<(String, Result<Arc<Loaded>, String>)> {
        self.names()
            .into_iter()
            .filter_map(|n| match self.lookup(&n) {
                Lookup::Ready(l) => Some((n, Ok(l))),
                Lookup::Invalid(e) => Some((n, Err(e.to_string()))),
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

/// Checks every `*.toml` in `dir` without preparing anything, for `faas check`: how many
/// files there were, and their problems.
pub fn check_dir(dir: &Path, config: &crate::config::Config) -> (usize, Vec<ConfigError>) {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect(),
        Err(source) => return (0, vec![ConfigError::Read { path: dir.to_owned(), source }]),
    };
    files.sort();
    (files.len(), files.iter().filter_map(|p| check_file(p, config).err()).collect())
}

/// Checks one function file.
pub fn check_file(path: &Path, config: &crate::config::Config) -> Result<Function, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    Function::parse(path, &text, config)
}

/// Builds the sandbox parts of one function version.
fn prepare(host: &Host, f: &Function, version: u64) -> Result<PreparedSandbox, PrepareError> {
    let dir = version_dir(&host.config.state_dir, &f.name, version);
    let root_err = |source| PrepareError::Root { name: f.name.clone(), dir: dir.clone(), source };
    let code_dir = match &f.code {
        Code::Dir(d) => d.clone(),
        Code::Inline(source) => {
            let code = dir.join("code");
            let file = code.join(inline_file(f.runtime, &f.handler));
            std::fs::create_dir_all(file.parent().unwrap_or(&code)).map_err(root_err)?;
            std::fs::write(&file, source).map_err(root_err)?;
            let mode = if matches!(f.runtime, Runtime::Exec) { 0o755 } else { 0o644 };
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).map_err(root_err)?;
            code
        }
    };
    let spec = RootSpec { code: &code_dir, wrappers: &host.config.wrappers_dir, read_only: &f.read_only, tmp_bytes: f.tmp.0 };
    let skeleton = build_skeleton(&dir, &spec).map_err(root_err)?;
    let template = spawn::create_mount_template(&template_plan(&skeleton, &spec), &cstr(&skeleton.root))
        .map_err(|e| format!("failed to build the sandbox root: {e}"));
    if let Err(e) = &template {
        tracing::error!(function = %f.name, "{e}");
    }
    let mut exec: Vec<&Path> = skeleton.system_dirs.iter().map(PathBuf::as_path).collect();
    exec.push(&code_dir);
    exec.extend(skeleton.read_only.iter().map(PathBuf::as_path));
    let landlock = landlock::prepare(&RulePaths {
        root: &skeleton.root,
        exec,
        read: vec![&host.config.wrappers_dir],
        network: f.network,
    })?;
    let (exe, argv) = runtime::command(f.runtime, &f.handler, &host.config.runtimes);
    Ok(PreparedSandbox {
        skeleton,
        template,
        hostname: c"faas".into(),
        request_mounts: request_mounts(&spec),
        landlock,
        seccomp: if f.network { host.seccomp.1.clone() } else { host.seccomp.0.clone() },
        seccomp_notify_index: 0,
        ipc_limits: if host.cgroups.is_none() { namespaces::ipc_limits(f.limits.memory.0) } else { Vec::new() },
        exe,
        argv,
    })
}
