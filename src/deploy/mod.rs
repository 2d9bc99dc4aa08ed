//! Shipping a function from a laptop: `faas deploy DIR` packs a directory, the daemon checks
//! and unpacks it into a content-addressed version, prepares it, and switches to it at once;
//! `versions`, `rollback`, `rm`, `ls` and `logs` go with it.
//!
//! - `archive.rs`: unpacking an upload that is hostile until proven otherwise.
//! - `function_file.rs`: the deployed directory's `faas.toml`, or the runtime inferred.
//! - `store.rs`: versions on disk under `[deploy] dir`, the `current` switch, GC.
//! - `api.rs`: the admin socket's `/_/deploy…` endpoints (who may, and what each does).
//! - `cli.rs`: the client side: packing, the admin socket, SSH to another host, the journal.
//!
//! Transport: the admin unix socket, where the kernel tells us who is calling (SO_PEERCRED:
//! root, or a member of `[deploy] group`). Another host is reached through SSH, running
//! `faas deploy -` there with the archive on stdin, which then uses that host's admin socket
//! as its user: no listener of ours on the network, no token to hand out and rotate, and
//! SSH's keys, encryption and logging instead of ones we would have to write (faas has no
//! TLS, so a token over an admin TCP listener would cross the network in clear).

pub mod api;
pub mod archive;
pub mod cli;
pub mod function_file;
pub mod store;

use std::path::PathBuf;

use serde::Deserialize;

use crate::units::Bytes;

pub use store::Store;

/// `[deploy]` in faas.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployConfig {
    /// Where deployed versions live: persistent, root's (systemd's `StateDirectory=faas`).
    pub dir: PathBuf,
    /// Versions kept per function, the current one included; older ones are removed once no
    /// request runs on them.
    pub keep: usize,
    /// Besides root, the members of this group may deploy over the admin socket (give the
    /// socket to the group too: `SocketGroup=`, `SocketMode=0660`).
    pub group: Option<String>,
    /// Largest upload, packed.
    pub max_archive: Bytes,
    /// Largest upload, unpacked (file contents).
    pub max_size: Bytes,
    /// Most entries (files, directories, links) in an upload.
    pub max_files: u64,
    /// Most unpacked bytes per packed byte (beyond 1 MiB): archive bombs.
    pub max_ratio: u64,
    /// Most deployed functions on this host.
    pub max_functions: usize,
    /// The public base URL printed after a deploy (`URL/NAME`).
    pub url: String,
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            dir: "/var/lib/faas".into(),
            keep: 5,
            group: None,
            max_archive: Bytes(64 << 20),
            max_size: Bytes(256 << 20),
            max_files: 10_000,
            max_ratio: 100,
            max_functions: 256,
            url: "http://127.0.0.1:8080".into(),
        }
    }
}

impl DeployConfig {
    /// What is wrong with these settings: (message, hint).
    pub fn check(&self) -> Result<(), (String, &'static str)> {
        if self.keep < 2 {
            return Err((
                format!("deploy.keep {} is below 2", self.keep),
                "keep the current version and at least one to roll back to",
            ));
        }
        if self.max_archive.0 == 0 || self.max_size.0 == 0 || self.max_files == 0 || self.max_ratio == 0 {
            return Err((
                "deploy.max_archive, max_size, max_files and max_ratio must be above 0".into(),
                "the defaults are 64M, 256M, 10000 and 100",
            ));
        }
        Ok(())
    }

    /// The caps an upload is held to.
    pub fn caps(&self) -> archive::Caps {
        archive::Caps { entries: self.max_files, bytes: self.max_size.0, ratio: self.max_ratio }
    }
}

/// The first 12 hex digits of a version: what people read and type.
pub fn short(version: &str) -> &str {
    &version[..version.len().min(12)]
}

/// Names both in the functions directory and deployed, as `faas check` reports them: the
/// file wins, but one of the two is a mistake.
pub fn conflicts(config: &crate::config::Config) -> Vec<String> {
    let store = Store::new(config.deploy.dir.clone());
    store
        .names()
        .into_iter()
        .filter_map(|name| {
            let file = config.functions_dir.join(format!("{name}.toml"));
            let version = store.current(&name)?;
            file.is_file().then(|| {
                format!(
                    "{}: {name} is also deployed (version {}); this file wins\nhint: remove one: faas rm {name}, or this file",
                    file.display(),
                    short(&version)
                )
            })
        })
        .collect()
}
