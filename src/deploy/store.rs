//! Deployed versions on disk, content-addressed, under `[deploy] dir` (default
//! `/var/lib/faas`, systemd's `StateDirectory=faas`: it must outlive reboots and daemon
//! restarts, which `state_dir` under /run does not, and the daemon clears part of that):
//!
//! ```text
//! DIR/lock                                flock(2) held by whoever changes anything below
//! DIR/functions/NAME/current           -> versions/SHA256 (a symlink, replaced by rename(2))
//! DIR/functions/NAME/versions/SHA256/NAME.toml   the function file as stored (0600)
//! DIR/functions/NAME/versions/SHA256/code/       the upload, unpacked (read-only to all)
//! DIR/functions/NAME/versions/SHA256/meta.json   when, who, size
//! DIR/functions/NAME/history                     one JSON line per deploy, rollback
//! DIR/functions/NAME/.staging-UUID/              an upload being checked
//! ```
//!
//! A version never changes once its directory has its name; switching is one rename of
//! `current`, so a lookup sees the old version or the new one, never half of either. A
//! version some request still runs on is never removed (the registry says which are live).
//! `/etc/faas/functions` stays the operator's: nothing here writes there.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::function::valid_name;

/// What one version is, as `faas versions` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    /// sha256 of the stored function file and the unpacked tree, hex.
    pub version: String,
    /// Unix seconds: first stored.
    pub created: u64,
    /// Unix seconds: last deployed (a rollback does not change it).
    pub deployed: u64,
    /// Deploy order within the function (seconds tie): the last deploy has the highest.
    #[serde(default)]
    pub seq: u64,
    /// The deploying user, from the admin socket's peer credentials.
    pub who: String,
    /// What the client said it came through (`ssh from 192.0.2.1`), unverified.
    #[serde(default)]
    pub via: Option<String>,
    pub files: u64,
    /// Content bytes, unpacked.
    pub bytes: u64,
    pub runtime: String,
    /// What was inferred, when the upload had no faas.toml.
    #[serde(default)]
    pub inferred: Option<String>,
}

/// Why the store could not do what was asked; the journal gets the whole message, a caller
/// a 500 without it (it names host paths).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the deploy directory {} is not safe: {source}\nhint: only root may be able to write to it and every directory above it", path.display())]
    Unsafe {
        path: PathBuf,
        #[source]
        source: crate::sandbox::UnsafeDir,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io { what, path, source }
}

/// The versions of every deployed function.
pub struct Store {
    dir: PathBuf,
    /// Within this process; `DIR/lock` is across processes.
    mutex: Mutex<()>,
}

/// Held while the store is changed.
pub struct Guard<'a> {
    _inner: std::sync::MutexGuard<'a, ()>,
    _flock: Flock<File>,
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Whether `s` is a version as stored (64 lower-case hex digits).
fn is_version(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Store {
    /// The store at `dir`; nothing is touched until something is deployed.
    pub fn new(dir: PathBuf) -> Store {
        Store { dir, mutex: Mutex::new(()) }
    }

    fn function_dir(&self, name: &str) -> PathBuf {
        self.dir.join("functions").join(name)
    }

    /// A version's directory.
    pub fn version_dir(&self, name: &str, version: &str) -> PathBuf {
        self.function_dir(name).join("versions").join(version)
    }

    /// The stored function file of a version.
    pub fn version_file(&self, name: &str, version: &str) -> PathBuf {
        self.version_dir(name, version).join(format!("{name}.toml"))
    }

    /// Creates the directory (root's, 0755) if needed, checks that only root can change it,
    /// and takes the lock.
    pub fn lock(&self) -> Result<Guard<'_>, StoreError> {
        let inner = self.mutex.lock().expect("store lock is never poisoned");
        for d in [self.dir.clone(), self.dir.join("functions")] {
            std::fs::DirBuilder::new().recursive(true).mode(0o755).create(&d).map_err(io_err("create", &d))?;
        }
        crate::sandbox::check_private_dir(&self.dir)
            .map_err(|source| StoreError::Unsafe { path: self.dir.clone(), source })?;
        let path = self.dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let flock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| StoreError::Io {
            what: "lock",
            path,
            source: e.into(),
        })?;
        Ok(Guard { _inner: inner, _flock: flock })
    }

    /// The current version of `name`, if it is deployed.
    pub fn current(&self, name: &str) -> Option<String> {
        if !valid_name(name) {
            return None;
        }
        let link = std::fs::read_link(self.function_dir(name).join("current")).ok()?;
        let version = link.strip_prefix("versions").ok()?.to_str()?;
        is_version(version).then(|| version.to_owned())
    }

    /// Every deployed function, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.join("functions"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| valid_name(n) && self.current(n).is_some())
            .collect();
        names.sort();
        names
    }

    /// A fresh staging directory for an upload of `name`, with an empty `code/` in it.
    pub fn staging(&self, _guard: &Guard, name: &str) -> Result<PathBuf, StoreError> {
        let fdir = self.function_dir(name);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(fdir.join("versions"))
            .map_err(io_err("create", &fdir))?;
        let staging = fdir.join(format!(".staging-{}", uuid::Uuid::new_v4()));
        std::fs::DirBuilder::new().mode(0o700).create(&staging).map_err(io_err("create", &staging))?;
        let code = staging.join("code");
        std::fs::DirBuilder::new().mode(0o755).create(&code).map_err(io_err("create", &code))?;
        std::fs::set_permissions(&code, std::fs::Permissions::from_mode(0o755)).map_err(io_err("chmod", &code))?;
        Ok(staging)
    }

    /// Gives a checked staging directory its version's name (or drops it, when that version
    /// is already stored) and records `meta`; whether the version is new.
    pub fn commit(&self, _guard: &Guard, name: &str, staging: &Path, mut meta: Meta) -> Result<bool, StoreError> {
        let target = self.version_dir(name, &meta.version);
        meta.seq = self.versions(name).iter().map(|m| m.seq).max().unwrap_or(0) + 1;
        let new = !target.exists();
        if new {
            std::fs::set_permissions(staging, std::fs::Permissions::from_mode(0o755))
                .map_err(io_err("chmod", staging))?;
            std::fs::rename(staging, &target).map_err(io_err("rename into place", staging))?;
        } else {
            remove_tree(staging);
            if let Some(old) = self.meta(name, &meta.version) {
                meta.created = old.created;
            }
        }
        self.write_meta(&meta, name)?;
        sync_dir(&target.join(".."));
        Ok(new)
    }

    fn write_meta(&self, meta: &Meta, name: &str) -> Result<(), StoreError> {
        let dir = self.version_dir(name, &meta.version);
        let tmp = dir.join(".meta.json.tmp");
        let text = serde_json::to_string_pretty(meta).expect("meta serializes") + "\n";
        write_file(&tmp, text.as_bytes(), 0o644)?;
        std::fs::rename(&tmp, dir.join("meta.json")).map_err(io_err("rename into place", &tmp))
    }

    /// One version's record.
    pub fn meta(&self, name: &str, version: &str) -> Option<Meta> {
        let text = std::fs::read_to_string(self.version_dir(name, version).join("meta.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Every stored version of `name`, last deployed first.
    pub fn versions(&self, name: &str) -> Vec<Meta> {
        let mut list: Vec<Meta> = std::fs::read_dir(self.function_dir(name).join("versions"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|v| is_version(v))
            .filter_map(|v| self.meta(name, &v))
            .collect();
        list.sort_by(|a, b| (b.seq, b.deployed, &b.version).cmp(&(a.seq, a.deployed, &a.version)));
        list
    }

    /// Makes `version` the current one of `name`: a new symlink renamed over `current`.
    pub fn switch(&self, _guard: &Guard, name: &str, version: &str) -> Result<(), StoreError> {
        let fdir = self.function_dir(name);
        let tmp = fdir.join(format!(".current-{}", uuid::Uuid::new_v4()));
        std::os::unix::fs::symlink(Path::new("versions").join(version), &tmp).map_err(io_err("symlink", &tmp))?;
        if let Err(e) = std::fs::rename(&tmp, fdir.join("current")) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err("rename into place", &tmp)(e));
        }
        sync_dir(&fdir);
        Ok(())
    }

    /// Appends one line to the function's history.
    pub fn record(&self, _guard: &Guard, name: &str, event: serde_json::Value) {
        let path = self.function_dir(name).join("history");
        let line = event.to_string() + "\n";
        let appended = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            tracing::warn!(function = name, "failed to append to {}: {e}", path.display());
        }
    }

    /// Removes the versions of `name` beyond the `keep` last deployed, except the current one
    /// and those in `in_use`; the versions removed.
    pub fn collect(&self, _guard: &Guard, name: &str, keep: usize, in_use: &HashSet<String>) -> Vec<String> {
        let current = self.current(name);
        let mut removed = Vec::new();
        for meta in self.versions(name).into_iter().skip(keep) {
            if Some(&meta.version) == current.as_ref() || in_use.contains(&meta.version) {
                continue;
            }
            if remove_tree(&self.version_dir(name, &meta.version)) {
                removed.push(meta.version);
            }
        }
        removed
    }

    /// Removes a version that was stored but never served (its function did not load).
    pub fn discard(&self, _guard: &Guard, name: &str, version: &str) {
        remove_tree(&self.version_dir(name, version));
    }

    /// Takes `name` out of service (its `current` link), then removes every version not in
    /// `in_use()` (asked once the link is gone), and the function's directory once nothing is
    /// left; how many versions stay because a request still runs on them.
    pub fn remove(
        &self,
        _guard: &Guard,
        name: &str,
        in_use: impl FnOnce() -> HashSet<String>,
    ) -> Result<usize, StoreError> {
        let fdir = self.function_dir(name);
        let link = fdir.join("current");
        match std::fs::remove_file(&link) {
            Ok(()) => sync_dir(&fdir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &link)(e)),
        }
        Ok(self.clear_unused(name, &in_use()))
    }

    /// For a function without `current`: removes what is not in use; how many stay.
    fn clear_unused(&self, name: &str, in_use: &HashSet<String>) -> usize {
        let fdir = self.function_dir(name);
        let versions = fdir.join("versions");
        let mut left = 0;
        for entry in std::fs::read_dir(&versions).into_iter().flatten().flatten() {
            let v = entry.file_name().to_string_lossy().into_owned();
            if in_use.contains(&v) || !remove_tree(&entry.path()) {
                left += 1;
            }
        }
        if left == 0 {
            remove_tree(&fdir);
        }
        left
    }

    /// At the daemon's start (nothing runs yet): removes staging directories and stray
    /// links, functions left without `current` by an `rm` whose versions were still in
    /// use, and versions beyond `keep`.
    pub fn sweep(&self, keep: usize) {
        let root = self.dir.join("functions");
        if !root.is_dir() {
            return;
        }
        let guard = match self.lock() {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!("not tidying the deploy directory: {e}");
                return;
            }
        };
        let none = HashSet::new();
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if !valid_name(&name) {
                continue;
            }
            for inner in std::fs::read_dir(entry.path()).into_iter().flatten().flatten() {
                let n = inner.file_name();
                let n = n.to_string_lossy();
                if n.starts_with(".staging-") {
                    remove_tree(&inner.path());
                } else if n.starts_with(".current-") {
                    let _ = std::fs::remove_file(inner.path());
                }
            }
            if self.current(&name).is_none() {
                self.clear_unused(&name, &none);
            } else {
                let removed = self.collect(&guard, &name, keep, &none);
                if !removed.is_empty() {
                    tracing::info!(function = %name, "removed {} old version(s) of {name}", removed.len());
                }
            }
        }
    }
}

/// Writes a new file (refusing a link in its place) with `mode`.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), StoreError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("create", path))?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(io_err("write", path))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))
}

/// remove_dir_all (which never follows a symlink), logged when it fails; whether it went.
fn remove_tree(path: &Path) -> bool {
    match std::fs::remove_dir_all(path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            tracing::warn!("failed to remove {}: {e}", path.display());
            false
        }
    }
}

/// fsync(2) on a directory, so a rename in it survives a crash; failure only costs that.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(version: &str, deployed: u64) -> Meta {
        Meta {
            version: version.into(),
            created: deployed,
            deployed,
            seq: 0,
            who: "root".into(),
            via: None,
            files: 1,
            bytes: 1,
            runtime: "sh".into(),
            inferred: None,
        }
    }

    fn v(c: char) -> String {
        c.to_string().repeat(64)
    }

    /// Stages and commits an empty version.
    fn put(store: &Store, name: &str, version: &str, deployed: u64) {
        let g = store.lock().unwrap();
        let staging = store.staging(&g, name).unwrap();
        store.commit(&g, name, &staging, meta(version, deployed)).unwrap();
    }

    #[test]
    fn switch_collect_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("deploy"));
        assert_eq!(store.current("f"), None);
        for (i, c) in ['a', 'b', 'c', 'd'].into_iter().enumerate() {
            put(&store, "f", &v(c), 100 + i as u64);
        }
        let g = store.lock().unwrap();
        store.switch(&g, "f", &v('b')).unwrap();
        assert_eq!(store.current("f"), Some(v('b')));
        assert_eq!(store.names(), ["f"]);
        let order: Vec<String> = store.versions("f").into_iter().map(|m| m.version).collect();
        assert_eq!(order, [v('d'), v('c'), v('b'), v('a')]);
        // Keep 1: d stays as the newest, b as current, c as in use; a goes.
        let in_use: HashSet<String> = [v('c')].into();
        assert_eq!(store.collect(&g, "f", 1, &in_use), [v('a')]);
        // Removing keeps what is in use, until it is not.
        assert_eq!(store.remove(&g, "f", || in_use).unwrap(), 1);
        assert_eq!(store.current("f"), None);
        assert!(store.names().is_empty());
        assert!(store.version_dir("f", &v('c')).is_dir());
        drop(g);
        store.sweep(5);
        assert!(!dir.path().join("deploy/functions/f").exists());
    }

    #[test]
    fn a_redeploy_of_stored_content_keeps_its_creation_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("deploy"));
        put(&store, "f", &v('a'), 100);
        let g = store.lock().unwrap();
        let staging = store.staging(&g, "f").unwrap();
        assert!(!store.commit(&g, "f", &staging, meta(&v('a'), 200)).unwrap());
        assert!(!staging.exists());
        let m = store.meta("f", &v('a')).unwrap();
        assert_eq!((m.created, m.deployed), (100, 200));
    }

    #[test]
    fn a_deploy_dir_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("deploy");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = Store::new(d).lock().err().expect("a world-writable deploy dir").to_string();
        assert!(err.contains("is not safe") && err.contains("writable by group or others"), "{err}");
    }
}
