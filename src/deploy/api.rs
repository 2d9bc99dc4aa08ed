//! The admin socket's deploy endpoints, behind `http.rs`'s `/_/deploy…` route:
//!
//! | request | does |
//! |---|---|
//! | `GET /_/deploy` | every function: where it comes from, version, state, outcomes (`faas ls`) |
//! | `POST /_/deploy/NAME` (body: tar, tar.gz or zip) | deploy (`faas deploy`) |
//! | `GET /_/deploy/NAME` | its versions (`faas versions`) |
//! | `POST /_/deploy/NAME/rollback[?to=VERSION]` | switch back (`faas rollback`) |
//! | `DELETE /_/deploy/NAME` | remove it (`faas rm`) |
//!
//! Only on a unix admin socket, and only for root or `[deploy] group` (the kernel's peer
//! credentials, never anything the client says). A deploy or rollback prepares the version
//! first and switches only once it loads, so a bad upload leaves the current version serving;
//! each is an audit entry in the journal (who, which function, which version). Requests
//! already running keep the version they started with (the registry's `Arc`), and its files,
//! which GC leaves alone while anything runs on them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::archive::{self, ArchiveError};
use super::function_file::{self, FunctionText};
use super::store::{self, Meta, StoreError};
use super::{short, DeployConfig};
use crate::function::{valid_name, Function};
use crate::registry::{Lookup, Registry, State};

/// Who is calling, from the admin socket's SO_PEERCRED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// What went wrong, as a problem response. The detail never names a host path or an errno.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("deploys are taken on the admin unix socket only, where the caller's uid is known")]
    NotUnix,
    #[error("uid {uid} may not deploy: root may, and members of {}", group.as_deref().unwrap_or("a [deploy] group, when one is set"))]
    Forbidden { uid: u32, group: Option<String> },
    #[error("{0:?} is not a valid function name ([a-z0-9][a-z0-9_-]{{0,62}})")]
    BadName(String),
    #[error("{0} is defined in the functions directory, which wins over a deployed function of the same name: deploy under another name, or remove that file")]
    NameTaken(String),
    #[error("this host already has {0} deployed functions ([deploy] max_functions)")]
    TooMany(usize),
    #[error("the upload is over {0} bytes ([deploy] max_archive)")]
    TooLarge(u64),
    #[error("the upload did not arrive in time")]
    BodyTimeout,
    #[error("the upload could not be read")]
    BodyRead,
    #[error("{0}")]
    Archive(ArchiveError),
    #[error("{0}")]
    FunctionFile(#[from] function_file::FunctionFileError),
    /// Its function file does not parse: the text as `faas check` words it.
    #[error("{0}")]
    Invalid(String),
    /// It parsed, but its sandbox could not be prepared (the journal has why).
    #[error("the new version does not load ({0}); the current version keeps serving")]
    Load(String),
    #[error("{0} is not deployed")]
    NotDeployed(String),
    #[error("{name} has no version {version:?}")]
    NoVersion { name: String, version: String },
    #[error("{version:?} names more than one version of {name}; give more digits")]
    Ambiguous { name: String, version: String },
    #[error("{0} has no version deployed before the current one")]
    NoOlder(String),
    #[error("no such deploy endpoint")]
    NoEndpoint,
    /// Ours: the store could not be written or read (the journal has the whole error).
    #[error("the deploy could not be stored; the journal has why")]
    Store(#[source] StoreError),
}

impl DeployError {
    /// (status, problem type slug, title).
    pub fn problem(&self) -> (StatusCode, &'static str, &'static str) {
        use DeployError as E;
        use StatusCode as S;
        match self {
            E::NotUnix | E::Forbidden { .. } => (S::FORBIDDEN, "deploy-forbidden", "not allowed to deploy"),
            E::BadName(_) => (S::BAD_REQUEST, "bad-name", "not a function name"),
            E::NameTaken(_) => (S::CONFLICT, "name-taken", "name taken by a function file"),
            E::TooMany(_) => (S::CONFLICT, "function-limit", "too many deployed functions"),
            E::TooLarge(_) => (S::PAYLOAD_TOO_LARGE, "archive-too-large", "upload too large"),
            E::BodyTimeout => (S::REQUEST_TIMEOUT, "body-timeout", "upload too slow"),
            E::BodyRead => (S::BAD_REQUEST, "bad-request", "bad request"),
            E::Archive(ArchiveError::Write { .. }) | E::Store(_) => {
                (S::INTERNAL_SERVER_ERROR, "deploy-failed", "the deploy could not be stored")
            }
            E::Archive(_) => (S::UNPROCESSABLE_ENTITY, "archive-refused", "upload refused"),
            E::FunctionFile(_) | E::Invalid(_) => {
                (S::UNPROCESSABLE_ENTITY, "function-invalid", "function file is invalid")
            }
            E::Load(_) => (S::UNPROCESSABLE_ENTITY, "function-invalid", "the new version does not load"),
            E::NotDeployed(_) => (S::NOT_FOUND, "function-not-found", "function not deployed"),
            E::NoVersion { .. } => (S::NOT_FOUND, "version-not-found", "no such version"),
            E::Ambiguous { .. } => (S::CONFLICT, "version-ambiguous", "ambiguous version"),
            E::NoOlder(_) => (S::CONFLICT, "no-older-version", "nothing to roll back to"),
            E::NoEndpoint => (S::NOT_FOUND, "not-found", "not found"),
        }
    }

    /// The detail sentence: the message, except for our own failures, whose message names
    /// host paths (it goes to the journal instead).
    pub fn detail(&self) -> String {
        match self {
            DeployError::Archive(ArchiveError::Write { .. }) => {
                "the upload could not be unpacked on this host; the journal has why".into()
            }
            e => e.to_string(),
        }
    }
}

impl From<StoreError> for DeployError {
    fn from(e: StoreError) -> Self {
        DeployError::Store(e)
    }
}

/// One request to the deploy endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    List,
    Deploy { name: String },
    Versions { name: String },
    Rollback { name: String, to: Option<String> },
    Remove { name: String },
}

impl Op {
    /// The operation for `method` on `/_/deploy` + `rest`.
    pub fn parse(method: &http::Method, rest: &str, query: Option<&str>) -> Result<Op, DeployError> {
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        let name = |n: &str| if valid_name(n) { Ok(n.to_owned()) } else { Err(DeployError::BadName(n.to_owned())) };
        use http::Method as M;
        Ok(match (method, parts.as_slice()) {
            (&M::GET, []) => Op::List,
            (&M::POST | &M::PUT, [n]) => Op::Deploy { name: name(n)? },
            (&M::GET, [n]) => Op::Versions { name: name(n)? },
            (&M::DELETE, [n]) => Op::Remove { name: name(n)? },
            (&M::POST, [n, "rollback"]) => {
                let to = query
                    .into_iter()
                    .flat_map(|q| q.split('&'))
                    .find_map(|kv| kv.strip_prefix("to="))
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned);
                Op::Rollback { name: name(n)?, to }
            }
            _ => return Err(DeployError::NoEndpoint),
        })
    }
}

/// The caller's name if it may deploy: root, or a member of `[deploy] group`.
pub fn authorize(config: &DeployConfig, caller: Option<Caller>) -> Result<String, DeployError> {
    let Some(caller) = caller else { return Err(DeployError::NotUnix) };
    let user = nix::unistd::User::from_uid(caller.uid.into()).ok().flatten();
    let who = user.as_ref().map_or_else(|| format!("uid {}", caller.uid), |u| u.name.clone());
    if caller.uid == 0 {
        return Ok(who);
    }
    let refused = || {
        tracing::warn!(
            FAAS_DEPLOY_USER = %who,
            "refused a deploy request from {who} (uid {}, pid {}): not root{}",
            caller.uid,
            caller.pid.map_or("unknown".into(), |p| p.to_string()),
            config.group.as_deref().map(|g| format!(" nor in group {g}")).unwrap_or_default()
        );
        DeployError::Forbidden { uid: caller.uid, group: config.group.clone() }
    };
    let Some(group) = &config.group else { return Err(refused()) };
    let Some(gid) = nix::unistd::Group::from_name(group).ok().flatten().map(|g| g.gid.as_raw()) else {
        tracing::warn!("[deploy] group {group:?} does not exist on this host");
        return Err(refused());
    };
    let member = caller.gid == gid
        || user.is_some_and(|u| {
            std::ffi::CString::new(u.name.clone())
                .ok()
                .and_then(|name| nix::unistd::getgrouplist(&name, u.gid).ok())
                .is_some_and(|groups| groups.iter().any(|g| g.as_raw() == gid))
        });
    if member {
        Ok(who)
    } else {
        Err(refused())
    }
}

/// Runs `op` for `who` (already authorized); `body` is the upload of a deploy, `metrics` the
/// OpenMetrics text `ls` reads outcomes from.
pub async fn run(
    registry: Arc<Registry>,
    op: Op,
    who: String,
    via: Option<String>,
    body: Bytes,
    metrics: String,
) -> Result<Value, DeployError> {
    tokio::task::spawn_blocking(move || match op {
        Op::List => Ok(list(&registry, &metrics)),
        Op::Deploy { name } => deploy(&registry, &name, &body, &who, via),
        Op::Versions { name } => versions(&registry, &name),
        Op::Rollback { name, to } => rollback(&registry, &name, to.as_deref(), &who),
        Op::Remove { name } => remove(&registry, &name, &who),
    })
    .await
    .unwrap_or_else(|e| {
        Err(DeployError::Store(StoreError::Io {
            what: "run",
            path: "deploy task".into(),
            source: std::io::Error::other(e.to_string()),
        }))
    })
}

/// Takes host paths and OS error numbers out of a message meant for the uploader.
fn scrub(text: &str, staging: &Path) -> String {
    let mut out = text.replace(&format!("{}/", staging.display()), "").replace(&staging.display().to_string(), ".");
    while let Some(at) = out.find(" (os error ") {
        let end = out[at..].find(')').map_or(out.len(), |e| at + e + 1);
        out.replace_range(at..end, "");
    }
    out
}

fn deploy(reg: &Registry, name: &str, data: &[u8], who: &str, via: Option<String>) -> Result<Value, DeployError> {
    let started = Instant::now();
    let config = reg.config();
    let settings = &config.deploy;
    if reg.file_names().iter().any(|n| n == name) {
        return Err(DeployError::NameTaken(name.to_owned()));
    }
    let store = reg.store();
    let guard = store.lock()?;
    let previous = store.current(name);
    if previous.is_none() && store.names().len() >= settings.max_functions {
        return Err(DeployError::TooMany(settings.max_functions));
    }
    let staging = store.staging(&guard, name)?;
    let staged = stage(reg, name, data, &staging);
    let (text, unpacked, runtime) = match staged {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            if let DeployError::Archive(ArchiveError::Write { .. }) = &e {
                tracing::error!(function = name, "deploy of {name} failed: {e}");
            }
            return Err(e);
        }
    };
    let mut hasher = Sha256::new();
    hasher.update(b"faas deploy 1\n");
    hasher.update(text.text.as_bytes());
    hasher.update(b"\n");
    unpacked.hash_into(&mut hasher);
    let version = archive::hex(&hasher.finalize());
    let now = store::now();
    let meta = Meta {
        version: version.clone(),
        created: now,
        deployed: now,
        seq: 0,
        who: who.to_owned(),
        via: via.clone(),
        files: unpacked.files(),
        bytes: unpacked.bytes,
        runtime: runtime.to_owned(),
        inferred: text.inferred.clone(),
    };
    let new = store.commit(&guard, name, &staging, meta)?;
    let unchanged = previous.as_deref() == Some(version.as_str());
    if !unchanged {
        switch_to(reg, &guard, name, &version, new)?;
    }
    let in_use = reg.versions_in_use(name);
    let removed = store.collect(&guard, name, settings.keep, &in_use);
    store.record(
        &guard,
        name,
        json!({"time": now, "action": "deploy", "version": version, "previous": previous, "who": who, "via": via}),
    );
    let took = started.elapsed();
    tracing::info!(
        function = name,
        FAAS_DEPLOY_ACTION = "deploy",
        FAAS_DEPLOY_VERSION = %version,
        FAAS_DEPLOY_USER = %who,
        "deploy: {who}{} deployed {name} version {} ({} files, {} bytes{}){}, in {} ms; {} old version(s) removed",
        via.as_deref().map(|v| format!(" ({v})")).unwrap_or_default(),
        short(&version),
        unpacked.files(),
        unpacked.bytes,
        text.inferred.as_deref().map(|i| format!(", inferred {i}")).unwrap_or_default(),
        if unchanged { " (unchanged)" } else { "" },
        took.as_millis(),
        removed.len()
    );
    Ok(json!({
        "name": name,
        "version": version,
        "previous": previous,
        "unchanged": unchanged,
        "runtime": runtime,
        "inferred": text.inferred,
        "files": unpacked.files(),
        "bytes": unpacked.bytes,
        "url": format!("{}/{name}", settings.url.trim_end_matches('/')),
        "removed": removed,
        "took_ms": took.as_secs_f64() * 1e3,
    }))
}

/// Unpacks and checks an upload in `staging`: the stored function text, the tree, the runtime.
fn stage(
    reg: &Registry,
    name: &str,
    data: &[u8],
    staging: &Path,
) -> Result<(FunctionText, archive::Unpacked, &'static str), DeployError> {
    let config = reg.config();
    let unpacked = archive::unpack(data, &staging.join("code"), config.deploy.caps()).map_err(DeployError::Archive)?;
    let text = match unpacked.top_file(function_file::FILE) {
        Some(_) => {
            let path = staging.join("code").join(function_file::FILE);
            let user = std::fs::read(&path)
                .map_err(|source| DeployError::Store(StoreError::Io { what: "read", path: path.clone(), source }))?;
            let user = String::from_utf8(user).map_err(|_| DeployError::Invalid("faas.toml is not UTF-8".into()))?;
            function_file::rewrite(&user, "code")?
        }
        None => function_file::infer("code", |f| unpacked.top_file(f))?,
    };
    let file = staging.join(format!("{name}.toml"));
    store::write_file(&file, text.text.as_bytes(), 0o600)?;
    let shown = if text.inferred.is_some() { "faas.toml (inferred)" } else { function_file::FILE };
    let function = Function::parse(&file, &text.text, config).map_err(|e| {
        DeployError::Invalid(scrub(&function_file::relabel(e, Path::new(shown), text.prepended).to_string(), staging))
    })?;
    Ok((text, unpacked, function.runtime.as_str()))
}

/// Prepares `version`, then makes it current and serves it; a version that does not load
/// is refused (and dropped, if this deploy stored it) with the current one left serving.
fn switch_to(reg: &Registry, guard: &store::Guard, name: &str, version: &str, new: bool) -> Result<(), DeployError> {
    let store = reg.store();
    let state = reg.prepare_version(name, version);
    if let State::Invalid(e) = &state {
        if new {
            store.discard(guard, name, version);
        }
        return Err(DeployError::Load(e.summary()));
    }
    store.switch(guard, name, version)?;
    reg.install(name, version, state);
    Ok(())
}

fn versions(reg: &Registry, name: &str) -> Result<Value, DeployError> {
    let store = reg.store();
    let current = store.current(name).ok_or_else(|| DeployError::NotDeployed(name.to_owned()))?;
    let list: Vec<Value> = store
        .versions(name)
        .into_iter()
        .map(|m| {
            let mut v = serde_json::to_value(&m).expect("meta serializes");
            v["current"] = Value::Bool(m.version == current);
            v
        })
        .collect();
    Ok(json!({"name": name, "current": current, "versions": list}))
}

fn rollback(reg: &Registry, name: &str, to: Option<&str>, who: &str) -> Result<Value, DeployError> {
    let started = Instant::now();
    let store = reg.store();
    let guard = store.lock()?;
    let current = store.current(name).ok_or_else(|| DeployError::NotDeployed(name.to_owned()))?;
    let versions = store.versions(name);
    let target = match to {
        Some(prefix) => {
            let prefix = prefix.to_ascii_lowercase();
            let found: Vec<&Meta> = versions.iter().filter(|m| m.version.starts_with(&prefix)).collect();
            match found.as_slice() {
                [one] => one.version.clone(),
                [] => return Err(DeployError::NoVersion { name: name.to_owned(), version: prefix }),
                _ => return Err(DeployError::Ambiguous { name: name.to_owned(), version: prefix }),
            }
        }
        // The newest one deployed before the current one: rollback after rollback walks back.
        None => versions
            .iter()
            .skip_while(|m| m.version != current)
            .nth(1)
            .map(|m| m.version.clone())
            .ok_or_else(|| DeployError::NoOlder(name.to_owned()))?,
    };
    let unchanged = target == current;
    if !unchanged {
        switch_to(reg, &guard, name, &target, false)?;
    }
    store.record(
        &guard,
        name,
        json!({"time": store::now(), "action": "rollback", "version": target, "previous": current, "who": who}),
    );
    tracing::info!(
        function = name,
        FAAS_DEPLOY_ACTION = "rollback",
        FAAS_DEPLOY_VERSION = %target,
        FAAS_DEPLOY_USER = %who,
        "deploy: {who} rolled {name} back from version {} to {}{}",
        short(&current),
        short(&target),
        if unchanged { " (unchanged)" } else { "" }
    );
    Ok(json!({
        "name": name,
        "version": target,
        "previous": current,
        "unchanged": unchanged,
        "took_ms": started.elapsed().as_secs_f64() * 1e3,
    }))
}

fn remove(reg: &Registry, name: &str, who: &str) -> Result<Value, DeployError> {
    let store = reg.store();
    let guard = store.lock()?;
    let current = store.current(name).ok_or_else(|| DeployError::NotDeployed(name.to_owned()))?;
    let left = store.remove(&guard, name, || {
        reg.forget(name);
        reg.versions_in_use(name)
    })?;
    tracing::info!(
        function = name,
        FAAS_DEPLOY_ACTION = "rm",
        FAAS_DEPLOY_VERSION = %current,
        FAAS_DEPLOY_USER = %who,
        "deploy: {who} removed {name} (was version {}){}",
        short(&current),
        if left > 0 { format!("; {left} version(s) stay until the requests running on them end") } else { String::new() }
    );
    Ok(json!({"name": name, "removed": current, "in_use": left}))
}

/// Invocations by outcome for each function, from the OpenMetrics text.
fn outcomes(metrics: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("faas_invocations_total{") else { continue };
        let Some((labels, count)) = rest.split_once("} ") else { continue };
        let label = |key: &str| {
            labels.split(',').find_map(|kv| kv.strip_prefix(&format!("{key}=\""))?.strip_suffix('"').map(str::to_owned))
        };
        let (Some(function), Some(outcome), Ok(count)) =
            (label("function"), label("outcome"), count.trim().parse::<f64>())
        else {
            continue;
        };
        out.entry(function).or_default().insert(outcome, count as u64);
    }
    out
}

fn list(reg: &Registry, metrics: &str) -> Value {
    let store = reg.store();
    let files = reg.file_names();
    let outcomes = outcomes(metrics);
    let list: Vec<Value> = reg
        .names()
        .into_iter()
        .map(|name| {
            let from_file = files.contains(&name);
            let deployed = store.current(&name);
            let meta = deployed.as_ref().and_then(|v| store.meta(&name, v));
            let mut v = json!({
                "name": name,
                "source": if from_file { "file" } else { "deployed" },
                "version": if from_file { Value::Null } else { json!(deployed) },
                "deployed": meta.as_ref().map(|m| m.deployed),
                "who": meta.as_ref().map(|m| m.who.clone()),
                "outcomes": outcomes.get(&name).cloned().unwrap_or_default(),
            });
            if from_file && deployed.is_some() {
                // The file wins; `faas check` reports the pair.
                v["shadows"] = json!(deployed);
            }
            match reg.lookup(&name) {
                Lookup::Ready(l) => {
                    v["state"] = json!("ok");
                    v["runtime"] = json!(l.function.runtime.as_str());
                }
                Lookup::Invalid(e) => {
                    v["state"] = json!("invalid");
                    v["reason"] = json!(e.to_string());
                }
                Lookup::NotFound => v["state"] = json!("gone"),
            }
            v
        })
        .collect();
    json!({ "functions": list })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        use http::Method as M;
        assert_eq!(Op::parse(&M::GET, "", None).unwrap(), Op::List);
        assert_eq!(Op::parse(&M::POST, "/f", None).unwrap(), Op::Deploy { name: "f".into() });
        assert_eq!(Op::parse(&M::GET, "/f", None).unwrap(), Op::Versions { name: "f".into() });
        assert_eq!(Op::parse(&M::DELETE, "/f", None).unwrap(), Op::Remove { name: "f".into() });
        assert_eq!(
            Op::parse(&M::POST, "/f/rollback", Some("to=ab12")).unwrap(),
            Op::Rollback { name: "f".into(), to: Some("ab12".into()) }
        );
        assert_eq!(Op::parse(&M::POST, "/f/rollback", None).unwrap(), Op::Rollback { name: "f".into(), to: None });
        assert!(matches!(Op::parse(&M::POST, "/..", None), Err(DeployError::BadName(_))));
        assert!(matches!(Op::parse(&M::POST, "/../x", None), Err(DeployError::NoEndpoint)));
        assert!(matches!(Op::parse(&M::PATCH, "/f", None), Err(DeployError::NoEndpoint)));
    }

    #[test]
    fn only_root_and_the_group_may_deploy() {
        let config = DeployConfig::default();
        assert_eq!(authorize(&config, Some(Caller { uid: 0, gid: 0, pid: None })).unwrap(), "root");
        assert!(matches!(authorize(&config, None), Err(DeployError::NotUnix)));
        let nobody = Caller { uid: 65534, gid: 65534, pid: Some(1) };
        assert!(matches!(authorize(&config, Some(nobody)), Err(DeployError::Forbidden { uid: 65534, .. })));
        let root_group = nix::unistd::Group::from_gid(0.into()).unwrap().unwrap().name;
        let with_group = DeployConfig { group: Some(root_group), ..DeployConfig::default() };
        assert!(authorize(&with_group, Some(Caller { uid: 4_000_000, gid: 0, pid: None })).is_ok());
        assert!(authorize(&with_group, Some(nobody)).is_err());
    }

    #[test]
    fn messages_lose_host_paths_and_errnos() {
        let staging = Path::new("/var/lib/faas/functions/f/.staging-1");
        assert_eq!(
            scrub("code directory /var/lib/faas/functions/f/.staging-1/code/src cannot be used: No such file or directory (os error 2)", staging),
            "code directory code/src cannot be used: No such file or directory"
        );
    }

    #[test]
    fn outcomes_come_from_the_metrics_text() {
        let text = "# TYPE faas_invocations counter\nfaas_invocations_total{function=\"a\",outcome=\"ok\"} 3\nfaas_invocations_total{function=\"a\",outcome=\"timeout\"} 1\n";
        let o = outcomes(text);
        assert_eq!(o["a"]["ok"], 3);
        assert_eq!(o["a"]["timeout"], 1);
    }
}
