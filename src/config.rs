//! Daemon settings from `/etc/faas/faas.toml`. Every field has a default, so the daemon runs
//! with no file at all; relative paths in the file are taken relative to the file's directory.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::proxy::ProxySettings;
use crate::units::{Bytes, Percent, Span};

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/faas/faas.toml";

/// First sandbox uid: 0x70000000. systemd (docs/UIDS-GIDS.md) leaves 1879048192–2147352575
/// unused: above the container range nspawn picks from (524288–1879048191), far above
/// DynamicUser (61184–65519) and the /etc/subuid ranges useradd hands out (100000 upward).
pub const DEFAULT_UID_BASE: u32 = 0x7000_0000;

/// Daemon settings, as checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory of `NAME.toml` function files.
    pub functions_dir: PathBuf,
    /// Directory holding `python.py` and `node.js`, mounted at `/faas` in every sandbox.
    pub wrappers_dir: PathBuf,
    /// Runtime state: per-function sandbox roots and inline sources.
    pub state_dir: PathBuf,
    /// Requests in flight across all functions; beyond it → 429. Lowered at start when the
    /// open-files limit cannot hold this many sandboxes (see `http::admission`).
    pub max_concurrency: usize,
    /// Open client connections at once; beyond it a new connection gets 503 and is closed.
    /// Unset: derived from the open-files limit (`http::admission`).
    pub max_connections: Option<usize>,
    /// Open connections from one client address (an IPv6 /64 counts as one); beyond it 429.
    /// Unset: a quarter of `max_connections`.
    pub max_connections_per_client: Option<usize>,
    /// Request bodies being received at once; beyond it 503, and beyond a client's share
    /// (the same share as of connections) 429. Unset: `max_concurrency`.
    pub max_bodies: Option<usize>,
    /// Sandbox uids/gids: `uid_base .. uid_base + uid_count`, one per live sandbox.
    pub uid_base: u32,
    /// How many sandbox uids there are (and so at most how many sandboxes live at once).
    pub uid_count: u32,
    /// A cgroup v2 directory to build our subtree in when not started by systemd.
    pub cgroup_root: Option<PathBuf>,
    /// Exit after this long without requests (systemd keeps the socket); `"0"` never.
    pub idle_exit: Span,
    /// On SIGTERM, how long in-flight requests get to finish.
    pub drain_grace: Span,
    /// On SIGTERM, how long to go on accepting and serving, with `/_/ready` answering 503,
    /// before the listeners close: long enough for a balancer's health checks to take this
    /// host out (a few check intervals). `"0"`: close at once.
    pub drain_delay: Span,
    /// How long a client may take to send its request body.
    pub body_timeout: Span,
    /// Serve `/_/metrics` and `/_/functions` on every listener, not just the `admin` one.
    pub admin_on_public: bool,
    /// Where named credentials are read when systemd gives none (`$CREDENTIALS_DIRECTORY`
    /// wins): a development stand-in for `LoadCredential=` (secrets.rs).
    pub credentials_dir: Option<PathBuf>,
    /// Serve each function at `http://NAME.DOMAIN/` too, an origin of its own.
    pub domain: Option<String>,
    /// Default limits for functions that do not set their own.
    pub limits: Limits,
    pub runtimes: Runtimes,
    pub sandbox: SandboxDefaults,
    /// Trusted proxies and PROXY protocol listeners (`proxy.rs`).
    pub proxy: ProxySettings,
    /// `[deploy]`: where deployed versions live, how many are kept, who may deploy.
    pub deploy: crate::deploy::DeployConfig,
    /// `[warm]`: the zygotes of warm Python functions (warm.rs).
    pub warm: WarmConfig,
}

/// `[warm]` in faas.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarmConfig {
    /// What all zygotes together may hold resident; past it the least recently used idle one
    /// is stopped, and with none idle a function is served cold.
    pub memory: Bytes,
    /// One zygote's memory limit (memory.max of its cgroup; RLIMIT_DATA without cgroups).
    pub zygote_memory: Bytes,
    /// A zygote that has forked nothing for this long exits; the next request starts cold
    /// and starts it again. `"0"`: never.
    pub idle_exit: Span,
}

impl Default for WarmConfig {
    fn default() -> Self {
        WarmConfig {
            memory: Bytes(1 << 30),
            zygote_memory: Bytes(256 << 20),
            idle_exit: Span(std::time::Duration::from_secs(600)),
        }
    }
}

/// Resource limits; in function files every key is optional and falls back to faas.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall clock; the whole sandbox is killed at the deadline.
    pub timeout: Span,
    /// memory.max (swap 0); RLIMIT_DATA without cgroups.
    pub memory: Bytes,
    /// pids.max; RLIMIT_NPROC on the sandbox's own uid without cgroups.
    pub pids: u32,
    /// cpu.max; 100% is one core.
    pub cpu: Percent,
    /// Largest request body.
    pub body: Bytes,
    /// Largest response body.
    pub output: Bytes,
    /// Requests in flight at once for one function.
    pub concurrency: usize,
    /// Open files (RLIMIT_NOFILE).
    pub nofile: u64,
    /// The function's stderr that reaches the journal per invocation.
    pub log: Bytes,
}

/// Interpreters; the sandbox sees them at the same paths under its read-only `/usr`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtimes {
    /// The Python 3 interpreter.
    pub python: PathBuf,
    pub node: PathBuf,
    /// The shell for the `sh` runtime.
    pub sh: PathBuf,
}

/// Sandbox settings for all functions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxDefaults {
    /// Host paths every sandbox sees read-only at the same place (beside `/usr`).
    pub read_only: Vec<PathBuf>,
    /// Size of each sandbox's private `/tmp`.
    pub tmp: Bytes,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            functions_dir: "/etc/faas/functions".into(),
            wrappers_dir: "/usr/local/lib/faas/wrappers".into(),
            state_dir: "/run/faas".into(),
            max_concurrency: 256,
            max_connections: None,
            max_connections_per_client: None,
            max_bodies: None,
            uid_base: DEFAULT_UID_BASE,
            uid_count: 65536,
            cgroup_root: None,
            idle_exit: Span(std::time::Duration::ZERO),
            drain_grace: Span(std::time::Duration::from_secs(10)),
            drain_delay: Span(std::time::Duration::ZERO),
            body_timeout: Span(std::time::Duration::from_secs(10)),
            admin_on_public: false,
            credentials_dir: None,
            domain: None,
            limits: Limits::default(),
            runtimes: Runtimes::default(),
            sandbox: SandboxDefaults::default(),
            proxy: ProxySettings::default(),
            deploy: crate::deploy::DeployConfig::default(),
            warm: WarmConfig::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Span(std::time::Duration::from_secs(10)),
            memory: Bytes(128 << 20),
            pids: 64,
            cpu: Percent(100),
            body: Bytes(1 << 20),
            output: Bytes(6 << 20),
            concurrency: 8,
            nofile: 1024,
            log: Bytes(256 << 10),
        }
    }
}

impl Default for Runtimes {
    fn default() -> Self {
        Runtimes { python: "/usr/bin/python3".into(), node: "/usr/bin/node".into(), sh: "/bin/sh".into() }
    }
}

impl Default for SandboxDefaults {
    fn default() -> Self {
        SandboxDefaults {
            // The loader cache and the time zone: what a dynamically linked interpreter reads
            // from /etc on start. Debian's alternatives symlinks live there too.
            read_only: vec!["/etc/ld.so.cache".into(), "/etc/localtime".into(), "/etc/alternatives".into()],
            tmp: Bytes(16 << 20),
        }
    }
}

/// A problem with a config or function file, already rendered with file, line and column.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{}:{line}:{column}: {message}{}", path.display(), hint_line(hint))]
    Invalid {
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        message: String,
        /// How to fix it, when known.
        hint: Option<String>,
    },
}

fn hint_line(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!("\nhint: {h}")).unwrap_or_default()
}

impl ConfigError {
    /// An error at a byte range of `source` (the whole file when `span` is None).
    pub fn at(path: &Path, source: &str, span: Option<Range<usize>>, message: String, hint: Option<String>) -> Self {
        let (line, column) = line_column(source, span.map_or(0, |s| s.start));
        ConfigError::Invalid { path: path.to_owned(), line, column, message, hint }
    }

    /// Converts toml's error, keeping its position and adding a hint for common mistakes.
    pub fn from_toml(path: &Path, source: &str, err: &toml::de::Error) -> Self {
        let message = err.message().trim().to_owned();
        let hint = if message.contains("unknown field") {
            Some("keys are checked strictly; see \"Writing a function\" in the README for a function file, config/faas.toml for the daemon's settings".to_owned())
        } else if message.contains("unknown variant") && message.contains("python") {
            Some("runtime is one of python, node, sh, exec".to_owned())
        } else {
            None
        };
        Self::at(path, source, err.span(), message, hint)
    }

    /// One line for a public HTTP 503 body: where, never what. The message may name host
    /// paths (a code directory) and OS errors, so it stays in the journal and on the admin
    /// listener's `/_/functions`.
    pub fn summary(&self) -> String {
        match self {
            ConfigError::Read { .. } => "the function file cannot be read".to_owned(),
            ConfigError::Invalid { line, column, .. } => {
                format!("the function file is invalid (line {line}, column {column})")
            }
        }
    }
}

/// Whether `name` is a DNS name of letters, digits and hyphens (RFC 1123 labels).
pub fn valid_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

/// 1-based line and column of a byte offset.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, column)
}

/// Makes `p` absolute against `base` (the directory of the file that named it).
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

impl Config {
    /// Loads `path`, or the default location; a missing default file means built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let explicit = path.is_some();
        let path = path.unwrap_or(Path::new(DEFAULT_CONFIG));
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(Config::default()),
            Err(source) => return Err(ConfigError::Read { path: path.to_owned(), source }),
        };
        Self::parse(path, &text)
    }

    /// Parses settings from `text`, which was read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::from_toml(path, text, &e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_owned());
        for p in [&mut config.functions_dir, &mut config.wrappers_dir, &mut config.state_dir, &mut config.deploy.dir] {
            *p = resolve(&base, p);
        }
        if let Some(root) = &mut config.cgroup_root {
            *root = resolve(&base, root);
        }
        if let Some(dir) = &mut config.credentials_dir {
            *dir = resolve(&base, dir);
        }
        let whole = |message: String, hint: &str| ConfigError::at(path, text, None, message, Some(hint.to_owned()));
        if config.uid_count == 0 || config.uid_base.checked_add(config.uid_count).is_none() {
            return Err(whole(
                "uid_base + uid_count must fit in 32 bits and uid_count be above 0".into(),
                "the default range is 1879048192 + 65536",
            ));
        }
        if config.uid_base < 65536 {
            return Err(whole(
                format!("uid_base {} overlaps the host's regular and system users", config.uid_base),
                "pick a range no account, DynamicUser or /etc/subuid entry uses, such as the default 1879048192",
            ));
        }
        if let Err((message, hint)) = config.deploy.check() {
            return Err(whole(message, hint));
        }
        if config.max_concurrency == 0 {
            return Err(whole("max_concurrency must be at least 1".into(), "the default is 256"));
        }
        for (key, value) in [
            ("max_connections", config.max_connections),
            ("max_connections_per_client", config.max_connections_per_client),
            ("max_bodies", config.max_bodies),
        ] {
            if value == Some(0) {
                return Err(whole(
                    format!("{key} must be at least 1"),
                    "leave it out to derive it from the open-files limit",
                ));
            }
        }
        if let Some(domain) = &mut config.domain {
            *domain = domain.trim_end_matches('.').to_ascii_lowercase();
            if !valid_domain(domain) {
                return Err(whole(
                    format!("domain {domain:?} is not a DNS name"),
                    "e.g. domain = \"fn.example.com\" serves function NAME at http://NAME.fn.example.com/",
                ));
            }
        }
        if let (Some(all), Some(one)) = (config.max_connections, config.max_connections_per_client) {
            if one > all {
                return Err(whole(
                    format!("max_connections_per_client {one} is above max_connections {all}"),
                    "one client address can never hold more than every connection",
                ));
            }
        }
        if let Some((message, hint)) = config.proxy.check() {
            return Err(whole(message, hint));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::parse(Path::new("/etc/faas/faas.toml"), "").unwrap();
        assert_eq!(c.limits.memory, Bytes(128 << 20));
        assert_eq!(c.uid_base, DEFAULT_UID_BASE);
        assert_eq!(c.functions_dir, Path::new("/etc/faas/functions"));
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let c = Config::parse(Path::new("/nonexistent/conf/faas.toml"), "functions_dir = \"fns\"").unwrap();
        assert_eq!(c.functions_dir, Path::new("/nonexistent/conf/fns"));
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let err = Config::parse(Path::new("/x/faas.toml"), "max_concurrency = 4\nfunctons_dir = \"a\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/x/faas.toml:2:1: unknown field `functons_dir`"), "{text}");
        assert!(text.contains("\nhint: "), "{text}");
    }

    #[test]
    fn bad_unit_is_reported_where_it_is() {
        let err = Config::parse(Path::new("/x/faas.toml"), "[limits]\nmemory = \"12Q\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/x/faas.toml:2:10: "), "{text}");
        assert!(text.contains("unknown size suffix"), "{text}");
    }

    #[test]
    fn connection_settings_are_checked() {
        let c = Config::parse(
            Path::new("/x/faas.toml"),
            "max_connections = 100\nmax_connections_per_client = 10\nmax_bodies = 7\n",
        )
        .unwrap();
        assert_eq!((c.max_connections, c.max_connections_per_client, c.max_bodies), (Some(100), Some(10), Some(7)));
        let c = Config::parse(Path::new("/x/faas.toml"), "").unwrap();
        assert_eq!((c.max_connections, c.max_connections_per_client, c.max_bodies), (None, None, None));
        let err = Config::parse(Path::new("/x/faas.toml"), "max_bodies = 0\n").unwrap_err();
        assert!(err.to_string().starts_with("/x/faas.toml:1:1: max_bodies must be at least 1"), "{err}");
        let err = Config::parse(Path::new("/x/faas.toml"), "max_connections = 10\nmax_connections_per_client = 11\n")
            .unwrap_err();
        assert!(err.to_string().contains("above max_connections 10"), "{err}");
    }

    #[test]
    fn summary_keeps_position_and_drops_the_message() {
        let err = ConfigError::at(
            Path::new("/srv/tenant-secret/f.toml"),
            "runtime = \"sh\"\ncode = \"/srv/tenant-secret/x\"\n",
            Some(22..44),
            "code directory /srv/tenant-secret/x cannot be used: No such file or directory (os error 2)".into(),
            None,
        );
        assert_eq!(err.summary(), "the function file is invalid (line 2, column 8)");
        assert!(err.to_string().contains("/srv/tenant-secret/x cannot be used"), "the full text keeps it: {err}");
        let read = ConfigError::Read {
            path: "/srv/tenant-secret/f.toml".into(),
            source: std::io::Error::from_raw_os_error(13),
        };
        assert_eq!(read.summary(), "the function file cannot be read");
    }

    #[test]
    fn proxy_settings_are_checked() {
        let c = Config::parse(
            Path::new("/x/faas.toml"),
            "drain_delay = \"5s\"\n[proxy]\ntrusted = [\"10.0.0.0/8\", \"fd00::1\"]\nprotocol_listeners = [\"lb\"]\n",
        )
        .unwrap();
        assert_eq!(c.drain_delay, Span(std::time::Duration::from_secs(5)));
        assert!(c.proxy.trusts("10.9.8.7".parse().unwrap()) && !c.proxy.trusts("192.0.2.1".parse().unwrap()));
        assert!(c.proxy.speaks_proxy_protocol("lb") && !c.proxy.speaks_proxy_protocol("http"));
        let err = Config::parse(Path::new("/x/faas.toml"), "[proxy]\ntrusted = [\"10.0.0/8\"]\n").unwrap_err();
        assert!(
            err.to_string().starts_with("/x/faas.toml:2:11: \"10.0.0/8\" is not an address or CIDR block"),
            "{err}"
        );
        let err = Config::parse(Path::new("/x/faas.toml"), "[proxy]\nprotocol_listeners = [\"lb\"]\n").unwrap_err();
        assert!(
            err.to_string().contains("proxy.protocol_listeners names lb but proxy.trusted is empty\nhint: "),
            "{err}"
        );
    }

    #[test]
    fn domain_and_credentials_dir() {
        let c = Config::parse(Path::new("/x/faas.toml"), "domain = \"Fn.Localhost.\"\ncredentials_dir = \"creds\"\n")
            .unwrap();
        assert_eq!(c.domain.as_deref(), Some("fn.localhost"));
        assert_eq!(c.credentials_dir.as_deref(), Some(Path::new("/x/creds")));
        let err = Config::parse(Path::new("/x/faas.toml"), "domain = \"a_b.test\"\n").unwrap_err();
        assert!(err.to_string().contains("is not a DNS name"), "{err}");
    }

    #[test]
    fn low_uid_base_is_refused() {
        let err = Config::parse(Path::new("/x/faas.toml"), "uid_base = 1000\n").unwrap_err();
        assert!(err.to_string().contains("overlaps"), "{err}");
    }
}
