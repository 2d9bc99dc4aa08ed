//! One function file: `FunctionDef` as written in TOML, checked into a `Function` with typed
//! limits and absolute paths. Nothing here touches the sandbox; the registry prepares that.

use std::collections::BTreeMap;
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::auth::{credential_error, Auth, AuthDef};
use crate::config::{resolve, Config, ConfigError, Limits};
use crate::egress::AllowList;
use crate::schedule::{Schedule, ScheduleDef};
use crate::secrets::{self, Secret, Source};
use crate::units::{Bytes, Percent, Span};

/// The language a function is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// `module.function` in Python 3, through wrappers/python.py.
    Python,
    /// `module.function` in Node.js, through wrappers/node.js.
    Node,
    /// A CGI script run by `/bin/sh`.
    Sh,
    /// Any CGI executable.
    Exec,
}

impl Runtime {
    /// The name used in files, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Python => "python",
            Runtime::Node => "node",
            Runtime::Sh => "sh",
            Runtime::Exec => "exec",
        }
    }
}

/// Whether a function may run when Landlock is not fully enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LandlockMode {
    /// Enforce what the kernel supports; report the rest.
    #[default]
    BestEffort,
    /// Refuse to run (503) unless every rule is enforced.
    Required,
}

/// A function file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionDef {
    runtime: Spanned<Runtime>,
    code: Option<Spanned<PathBuf>>,
    handler: Option<Spanned<String>>,
    source: Option<Spanned<String>>,
    methods: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    limits: LimitsDef,
    #[serde(default)]
    sandbox: SandboxDef,
    #[serde(default)]
    response: ResponseDef,
    /// `[[schedule]]` entries.
    #[serde(default)]
    schedule: Vec<ScheduleDef>,
    #[serde(default)]
    auth: AuthDef,
    /// File name under `/run/secrets` → credential.
    #[serde(default)]
    secrets: BTreeMap<String, Spanned<SecretDef>>,
}

/// One `[secrets]` entry: a credential name, or a table that also asks for an env variable.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SecretDef {
    Credential(String),
    Table(SecretTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretTable {
    credential: String,
    /// Also put the value in this environment variable (off unless asked for).
    env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseDef {
    #[serde(default)]
    allow_headers: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsDef {
    timeout: Option<Spanned<Span>>,
    memory: Option<Spanned<Bytes>>,
    pids: Option<Spanned<u32>>,
    cpu: Option<Percent>,
    body: Option<Bytes>,
    output: Option<Bytes>,
    concurrency: Option<Spanned<usize>>,
    nofile: Option<u64>,
    log: Option<Bytes>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SandboxDef {
    network: Option<Spanned<toml::Value>>,
    /// `host:port` entries a `network = "egress"` sandbox may reach through the proxy.
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    tmp: Option<Bytes>,
    #[serde(default)]
    read_only: Vec<Spanned<PathBuf>>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    landlock: Option<LandlockMode>,
    /// Fork each request from a warm interpreter (python only; on by default there).
    warm: Option<Spanned<bool>>,
    /// Modules of the interpreter's own the zygote imports.
    #[serde(default)]
    preload: Vec<Spanned<String>>,
    /// Import the function's own module in the zygote too.
    preload_handler: Option<Spanned<bool>>,
}

/// Where the handler's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    /// A host directory, mounted read-only at `/code`.
    Dir(PathBuf),
    /// Source text from the function file; the registry writes it to a directory of its own.
    Inline(String),
}

/// What network a function's sandboxes get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// A network namespace of its own with nothing in it (`network = "none"` or `false`).
    None,
    /// Its own namespace with loopback up and faas's HTTP proxy on it: out only to `allow`.
    Egress,
    /// The host's network namespace (`network = "host"` or `true`).
    Host,
}

impl Network {
    /// The name used in files and `/_/functions`.
    pub fn as_str(self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Egress => "egress",
            Network::Host => "host",
        }
    }
}

/// One `[secrets]` entry, read: shown at `/run/secrets/NAME` in the function's sandboxes.
#[derive(Debug, Clone)]
pub struct SecretFile {
    /// The file name under `/run/secrets`.
    pub name: String,
    /// The credential it was read from (for `/_/functions`, the log and errors).
    pub credential: String,
    pub value: Secret,
    /// An environment variable the function file asked to get the value in as well.
    pub env: Option<String>,
}

/// A checked function, ready for the registry to prepare a sandbox for.
#[derive(Debug, Clone)]
pub struct Function {
    /// The name, from the file name; also its URL.
    pub name: String,
    pub path: PathBuf,
    pub runtime: Runtime,
    pub code: Code,
    /// `module.function`, or a file in the code directory for sh/exec.
    pub handler: String,
    /// Allowed methods; `None` allows every method.
    pub methods: Option<Vec<http::Method>>,
    /// Limits, with faas.toml's defaults filled in.
    pub limits: Limits,
    /// Which network its sandboxes get.
    pub network: Network,
    /// Where a `Network::Egress` sandbox may connect through the proxy (empty otherwise).
    pub allow: AllowList,
    /// Who may call it.
    pub auth: Auth,
    /// Credentials shown as files in its sandboxes.
    pub secrets: Vec<SecretFile>,
    /// Size of the private `/tmp`.
    pub tmp: Bytes,
    /// Extra host paths, read-only at the same place; faas.toml's defaults included.
    pub read_only: Vec<PathBuf>,
    /// The function's own environment entries.
    pub env: Vec<(String, String)>,
    /// Whether partial Landlock is acceptable.
    pub landlock: LandlockMode,
    /// Origin-wide response headers (`cgi::ORIGIN_WIDE`, lowercase) this function may send
    /// unscoped.
    pub allow_headers: Vec<String>,
    /// When the daemon runs it by itself (`schedule/`).
    pub schedules: Vec<Schedule>,
    /// Forked from a warm interpreter (`warm.rs`); None: each request starts cold.
    pub warm: Option<Warm>,
}

/// What a warm function's zygote keeps imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warm {
    /// Modules of the interpreter's own, imported in the zygote.
    pub preload: Vec<String>,
    /// The function's own module is imported in the zygote as well: its top-level code runs
    /// once there, outside any request's sandbox, and every request starts from its state.
    pub preload_handler: bool,
}

/// File names that may be functions: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// Environment names the daemon sets itself; a function may not override them.
const RESERVED_ENV: &[&str] = &[
    "REQUEST_METHOD",
    "PATH_INFO",
    "QUERY_STRING",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "REMOTE_ADDR",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "SERVER_SOFTWARE",
    "GATEWAY_INTERFACE",
    "SCRIPT_NAME",
    "PATH_TRANSLATED",
    "REMOTE_HOST",
    "AUTH_TYPE",
    "REMOTE_USER",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
];

/// Host places a `read_only` path may not name: sockets and device files live there.
const LIVE_HOST: &[&str] = &["/run", "/var/run", "/sys", "/dev", "/proc"];

/// The most entries `find_socket` looks at before it gives up (and the path is refused).
const SOCKET_WALK_LIMIT: usize = 100_000;

/// The first unix socket at or below `path`, without following symlinks: a read-only bind
/// mount does not stop connect(2), so such a path would hand the sandbox a host service.
fn find_socket(path: &Path) -> std::io::Result<Option<PathBuf>> {
    use std::os::unix::fs::FileTypeExt;
    let mut stack = vec![path.to_path_buf()];
    let mut seen = 0;
    while let Some(p) = stack.pop() {
        seen += 1;
        if seen > SOCKET_WALK_LIMIT {
            return Err(std::io::Error::other(format!("more than {SOCKET_WALK_LIMIT} entries")));
        }
        // The top path itself is mounted through its symlink; below it, links resolve inside.
        let meta = if p == path { std::fs::metadata(&p)? } else { std::fs::symlink_metadata(&p)? };
        if meta.file_type().is_socket() {
            return Ok(Some(p));
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&p)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(None)
}

/// Sandbox places a `read_only` path may not cover.
const SANDBOX_OWNED: &[&str] = &["/", "/code", "/faas", "/tmp", "/proc", "/dev", "/usr"];

/// Builds the errors of one function file: its path and text, for line and column.
struct At<'a> {
    path: &'a Path,
    text: &'a str,
}

impl At<'_> {
    /// An error at `span` (the whole file when None), with a hint unless `hint` is empty.
    fn err(&self, span: Option<Range<usize>>, msg: String, hint: &str) -> ConfigError {
        ConfigError::at(self.path, self.text, span, msg, (!hint.is_empty()).then(|| hint.to_owned()))
    }
}

impl Function {
    /// Parses and checks `text`, read from `path`, against the daemon's defaults.
    pub fn parse(path: &Path, text: &str, config: &Config) -> Result<Function, ConfigError> {
        let at = At { path, text };
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        if !valid_name(&name) {
            return Err(at.err(
                None,
                format!("{name:?} is not a valid function name"),
                "name the file [a-z0-9][a-z0-9_-]{0,62}.toml; the name becomes the URL",
            ));
        }
        let def: FunctionDef = toml::from_str(text).map_err(|e| ConfigError::from_toml(path, text, &e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let runtime = *def.runtime.get_ref();
        let (code, handler) = parse_code(&at, base, &def.runtime, def.code, def.handler, def.source)?;
        let methods = parse_methods(&at, def.methods)?;
        let schedules = def
            .schedule
            .into_iter()
            .map(|s| {
                Schedule::from_def(s, methods.as_deref()).map_err(|(span, msg, hint)| at.err(Some(span), msg, hint))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let limits = merge_limits(&at, def.limits, &config.limits)?;
        let sandbox = def.sandbox;
        let read_only = check_read_only(&at, &sandbox.read_only, &config.sandbox.read_only)?;
        let env = check_env(&at, sandbox.env)?;
        let allow_headers = check_allow_headers(&at, def.response.allow_headers)?;
        let (network, allow) = parse_network(&at, sandbox.network, sandbox.allow)?;
        let source = Source::find(config.credentials_dir.as_deref());
        let err = |span, msg, hint: &str| at.err(span, msg, hint);
        let auth = Auth::parse(def.auth, &source, &err)?;
        let secrets = parse_secrets(&at, def.secrets, &source, &env)?;
        let warm = parse_warm(&at, runtime, sandbox.warm, sandbox.preload, sandbox.preload_handler)?;
        Ok(Function {
            name,
            path: path.to_owned(),
            runtime,
            code,
            handler,
            methods,
            limits,
            network,
            allow,
            auth,
            secrets,
            tmp: sandbox.tmp.unwrap_or(config.sandbox.tmp),
            read_only,
            env,
            landlock: sandbox.landlock.unwrap_or_default(),
            allow_headers,
            schedules,
            warm,
        })
    }

    /// Whether `method` may call this function.
    pub fn allows(&self, method: &http::Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }
}

/// Where the code comes from (`code` with `handler`, or inline `source`) and the handler.
fn parse_code(
    at: &At,
    base: &Path,
    runtime: &Spanned<Runtime>,
    code: Option<Spanned<PathBuf>>,
    handler: Option<Spanned<String>>,
    source: Option<Spanned<String>>,
) -> Result<(Code, String), ConfigError> {
    let kind = *runtime.get_ref();
    let handler_err =
        |span: Range<usize>| move |e: HandlerError| at.err(Some(span), e.to_string(), &e.hint().unwrap_or_default());
    match (code, handler, source) {
        (Some(code), Some(handler), None) => {
            let dir = resolve(base, code.get_ref());
            let meta = std::fs::metadata(&dir).map_err(|e| {
                at.err(Some(code.span()), format!("code directory {} cannot be used: {e}", dir.display()), "")
            })?;
            if !meta.is_dir() {
                return Err(at.err(Some(code.span()), format!("code {} is not a directory", dir.display()), ""));
            }
            let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
            check_handler(kind, handler.get_ref(), Some(&dir)).map_err(handler_err(handler.span()))?;
            Ok((Code::Dir(dir), handler.into_inner()))
        }
        (None, handler, Some(source)) => {
            let handler = match handler {
                Some(h) => {
                    check_handler(kind, h.get_ref(), None).map_err(handler_err(h.span()))?;
                    h.into_inner()
                }
                None => inline_handler(kind).to_owned(),
            };
            if matches!(kind, Runtime::Exec) && !source.get_ref().starts_with("#!") {
                return Err(at.err(
                    Some(source.span()),
                    "inline source for the exec runtime must start with #!".into(),
                    "name its interpreter, e.g. #!/bin/sh, or use runtime = \"sh\"",
                ));
            }
            Ok((Code::Inline(source.into_inner()), handler))
        }
        (Some(code), _, Some(_)) => {
            Err(at.err(Some(code.span()), "set either code (with handler) or source, not both".into(), ""))
        }
        (Some(code), None, None) => Err(at.err(
            Some(code.span()),
            "code needs a handler".into(),
            "e.g. handler = \"main.handle\" (python, node) or handler = \"run.sh\" (sh, exec)",
        )),
        (None, _, None) => Err(at.err(
            Some(runtime.span()),
            "a function needs code and handler, or inline source".into(),
            "code = \"/srv/faas/NAME\" with handler = \"main.handle\", or source = '''…'''",
        )),
    }
}

/// The allowed methods, upper-cased; `None` (the key left out) allows every method.
fn parse_methods(at: &At, methods: Option<Spanned<Vec<String>>>) -> Result<Option<Vec<http::Method>>, ConfigError> {
    let Some(m) = methods else { return Ok(None) };
    let span = m.span();
    let mut out = Vec::new();
    for s in m.into_inner() {
        let method = http::Method::from_bytes(s.to_ascii_uppercase().as_bytes())
            .map_err(|_| at.err(Some(span.clone()), format!("{s:?} is not an HTTP method"), ""))?;
        out.push(method);
    }
    if out.is_empty() {
        return Err(at.err(
            Some(span),
            "methods is empty, so nothing could call this function".into(),
            "leave it out to allow every method",
        ));
    }
    Ok(Some(out))
}

/// The function's limits over faas.toml's defaults `d`, each within what can run.
fn merge_limits(at: &At, l: LimitsDef, d: &Limits) -> Result<Limits, ConfigError> {
    let limits = Limits {
        timeout: l.timeout.as_ref().map_or(d.timeout, |s| *s.get_ref()),
        memory: l.memory.as_ref().map_or(d.memory, |s| *s.get_ref()),
        pids: l.pids.as_ref().map_or(d.pids, |s| *s.get_ref()),
        cpu: l.cpu.unwrap_or(d.cpu),
        body: l.body.unwrap_or(d.body),
        output: l.output.unwrap_or(d.output),
        concurrency: l.concurrency.as_ref().map_or(d.concurrency, |s| *s.get_ref()),
        nofile: l.nofile.unwrap_or(d.nofile),
        log: l.log.unwrap_or(d.log),
    };
    if limits.timeout.0.is_zero() {
        return Err(at.err(l.timeout.map(|s| s.span()), "timeout must be above 0".into(), ""));
    }
    if limits.memory.0 < (4 << 20) {
        return Err(at.err(
            l.memory.map(|s| s.span()),
            format!("memory {} is too small to start an interpreter", limits.memory),
            "use at least \"4M\"",
        ));
    }
    if limits.pids == 0 {
        return Err(at.err(l.pids.map(|s| s.span()), "pids must be at least 1".into(), ""));
    }
    if limits.concurrency == 0 {
        return Err(at.err(l.concurrency.map(|s| s.span()), "concurrency must be at least 1".into(), ""));
    }
    Ok(limits)
}

/// faas.toml's `defaults` and the function's own read-only paths, each refused if it would
/// cover a sandbox place, does not exist, or could hand the sandbox a host socket.
fn check_read_only(at: &At, paths: &[Spanned<PathBuf>], defaults: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigError> {
    let mut read_only = defaults.to_vec();
    for p in paths {
        let path_ref = p.get_ref();
        if !path_ref.is_absolute() || path_ref.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(at.err(
                Some(p.span()),
                format!("read_only path {} must be absolute, without ..", path_ref.display()),
                "",
            ));
        }
        if SANDBOX_OWNED.iter().any(|o| path_ref == Path::new(o) || path_ref.starts_with(o) && *o != "/") {
            return Err(at.err(
                Some(p.span()),
                format!("read_only path {} would cover a place the sandbox owns", path_ref.display()),
                "/usr is always there; /code, /faas, /tmp, /proc and /dev are the sandbox's own",
            ));
        }
        if let Err(e) = std::fs::metadata(path_ref) {
            return Err(at.err(
                Some(p.span()),
                format!("read_only path {} cannot be used: {e}", path_ref.display()),
                "",
            ));
        }
        if LIVE_HOST.iter().any(|o| path_ref.starts_with(o)) {
            return Err(at.err(
                Some(p.span()),
                format!("read_only path {} is live host state", path_ref.display()),
                "/run, /var/run and /sys hold the host's sockets and devices; name the files the function needs elsewhere",
            ));
        }
        match find_socket(path_ref) {
            Ok(None) => {}
            Ok(Some(sock)) => {
                return Err(at.err(
                    Some(p.span()),
                    format!("read_only path {} holds a unix socket ({})", path_ref.display(), sock.display()),
                    "a read-only mount does not stop connect(2) to a socket, and Landlock cannot either: name a path without sockets",
                ))
            }
            Err(e) => return Err(at.err(Some(p.span()), format!("read_only path {} cannot be checked: {e}", path_ref.display()), "")),
        }
        read_only.push(path_ref.clone());
    }
    Ok(read_only)
}

/// The function's environment entries, none of them a name the daemon sets or the loader reads.
fn check_env(at: &At, env: BTreeMap<String, Spanned<String>>) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (k, v) in env {
        let valid = !k.is_empty()
            && !k.as_bytes()[0].is_ascii_digit()
            && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
        if !valid || RESERVED_ENV.contains(&k.as_str()) || k.starts_with("HTTP_") || k.starts_with("FAAS_") {
            return Err(at.err(
                Some(v.span()),
                format!("environment name {k:?} cannot be set by a function"),
                "names are [A-Za-z_][A-Za-z0-9_]*; CGI variables, HTTP_*, FAAS_* and LD_* loader settings are the daemon's",
            ));
        }
        if v.get_ref().contains('\0') {
            return Err(at.err(Some(v.span()), format!("environment value of {k} contains a NUL byte"), ""));
        }
        out.push((k, v.into_inner()));
    }
    Ok(out)
}

/// `network` (a word, or the older true/false) and the egress allow-list that goes with it.
fn parse_network(
    at: &At,
    network: Option<Spanned<toml::Value>>,
    allow: Vec<Spanned<String>>,
) -> Result<(Network, AllowList), ConfigError> {
    let hint = "network is \"none\", \"egress\" (with allow = [\"host:port\", …]) or \"host\"; true and false mean host and none";
    let (mode, span) = match network {
        None => (Network::None, None),
        Some(v) => {
            let span = v.span();
            let mode = match v.into_inner() {
                toml::Value::Boolean(false) => Network::None,
                toml::Value::Boolean(true) => Network::Host,
                toml::Value::String(s) if s == "none" => Network::None,
                toml::Value::String(s) if s == "egress" => Network::Egress,
                toml::Value::String(s) if s == "host" => Network::Host,
                other => return Err(at.err(Some(span), format!("network = {other} is not a network mode"), hint)),
            };
            (mode, Some(span))
        }
    };
    if mode != Network::Egress {
        if let Some(first) = allow.first() {
            return Err(at.err(Some(first.span()), "allow needs network = \"egress\"".into(), hint));
        }
        return Ok((mode, AllowList::default()));
    }
    let texts: Vec<&str> = allow.iter().map(|a| a.get_ref().as_str()).collect();
    let list = AllowList::parse(&texts).map_err(|(i, why)| {
        at.err(
            Some(allow[i].span()),
            why,
            "entries are host:port, *.domain:port, an IP address with a port ([v6]:port), or * for any host; the port may be *",
        )
    })?;
    if list.is_empty() {
        return Err(at.err(
            span,
            "network = \"egress\" with an empty allow list reaches nothing".into(),
            "list where the function may connect, e.g. allow = [\"api.example.com:443\"], or use network = \"none\"",
        ));
    }
    Ok((mode, list))
}

/// File names a secret may have under `/run/secrets`.
fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// `[secrets]`: each credential read now, so a missing one makes the function invalid (and
/// `faas check` names it) instead of a sandbox without it.
fn parse_secrets(
    at: &At,
    defs: BTreeMap<String, Spanned<SecretDef>>,
    source: &Source,
    env: &[(String, String)],
) -> Result<Vec<SecretFile>, ConfigError> {
    let mut out = Vec::new();
    for (name, def) in defs {
        let span = def.span();
        if !valid_secret_name(&name) {
            return Err(at.err(
                Some(span),
                format!("secret name {name:?} cannot be a file name under /run/secrets"),
                "names are [A-Za-z0-9_.-], at most 64 bytes, not starting with a dot",
            ));
        }
        let (credential, var) = match def.into_inner() {
            SecretDef::Credential(c) => (c, None),
            SecretDef::Table(SecretTable { credential, env }) => (credential, env),
        };
        if let Some(var) = &var {
            // The same rules as [sandbox] env, and no name given twice.
            let probe = BTreeMap::from([(var.clone(), Spanned::new(span.clone(), String::new()))]);
            check_env(at, probe)?;
            if env.iter().any(|(k, _)| k == var) || out.iter().any(|s: &SecretFile| s.env.as_ref() == Some(var)) {
                return Err(at.err(Some(span), format!("environment name {var:?} is set twice"), ""));
            }
        }
        let value = secrets::read(source, &credential).map_err(|e| {
            let err = |span, msg, hint: &str| at.err(span, msg, hint);
            credential_error(&err, span.clone(), &e)
        })?;
        if var.is_some() && value.expose().contains(&0) {
            return Err(at.err(
                Some(span),
                format!("credential {credential:?} holds a NUL byte, so it cannot be an environment variable"),
                "leave out env and read /run/secrets/NAME",
            ));
        }
        out.push(SecretFile { name, credential, value, env: var });
    }
    Ok(out)
}

/// `warm`, `preload` and `preload_handler`: on by default for python, refused elsewhere.
fn parse_warm(
    at: &At,
    runtime: Runtime,
    warm: Option<Spanned<bool>>,
    preload: Vec<Spanned<String>>,
    preload_handler: Option<Spanned<bool>>,
) -> Result<Option<Warm>, ConfigError> {
    let python = runtime == Runtime::Python;
    if let Some(w) = warm.as_ref().filter(|w| *w.get_ref() && !python) {
        return Err(at.err(
            Some(w.span()),
            "warm = true needs runtime = \"python\"".into(),
            "only Python functions are forked from a warm interpreter; others start cold",
        ));
    }
    let on = python && warm.as_ref().is_none_or(|w| *w.get_ref());
    let first = preload.first().map(|p| p.span()).or(preload_handler.as_ref().map(|p| p.span()));
    if !on {
        if let Some(span) = first {
            return Err(at.err(
                Some(span),
                "preload and preload_handler need a warm python function".into(),
                "remove them, or set runtime = \"python\" without warm = false",
            ));
        }
        return Ok(None);
    }
    let mut names = Vec::new();
    for p in preload {
        let name = p.get_ref();
        let ok = !name.is_empty()
            && name.split('.').all(|part| {
                part.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        if !ok {
            return Err(at.err(
                Some(p.span()),
                format!("preload lists {name:?}, which is not a module name"),
                "list importable module names, e.g. preload = [\"numpy\", \"email.parser\"]",
            ));
        }
        names.push(name.clone());
    }
    Ok(Some(Warm { preload: names, preload_handler: preload_handler.is_some_and(|p| *p.get_ref()) }))
}

/// The origin-wide response headers the function may send unscoped, lowercase.
fn check_allow_headers(at: &At, headers: Vec<Spanned<String>>) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    for h in headers {
        let name = h.get_ref().to_ascii_lowercase();
        if !crate::cgi::ORIGIN_WIDE.contains(&name.as_str()) {
            return Err(at.err(
                Some(h.span()),
                format!("allow_headers lists {:?}, which is not an origin-wide header", h.get_ref()),
                &format!(
                    "only these are held back, so only these can be allowed: {}",
                    crate::cgi::ORIGIN_WIDE.join(", ")
                ),
            ));
        }
        out.push(name);
    }
    Ok(out)
}

/// Why a handler cannot be used.
#[derive(Debug, thiserror::Error)]
enum HandlerError {
    #[error("handler {0:?} is not module.function")]
    NotModuleFunction(String),
    #[error("handler {0:?} must be a file inside the code directory")]
    NotInCodeDir(String),
    #[error("handler file {} cannot be used: {source}", file.display())]
    Unusable {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("handler {} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("handler {} is not executable", .0.display())]
    NotExecutable(PathBuf),
}

impl HandlerError {
    /// How to fix it, when known.
    fn hint(&self) -> Option<String> {
        match self {
            HandlerError::NotModuleFunction(_) => {
                Some("e.g. handler = \"main.handle\" calls handle() in main.py or main.js".into())
            }
            HandlerError::NotInCodeDir(_) => {
                Some("a relative path such as \"run.sh\", without .. or a leading /".into())
            }
            HandlerError::NotExecutable(file) => Some(format!("chmod +x {}", file.display())),
            HandlerError::Unusable { .. } | HandlerError::NotAFile(_) => None,
        }
    }
}

/// The handler an inline `source` gets: the file the registry writes it to.
pub fn inline_handler(runtime: Runtime) -> &'static str {
    match runtime {
        Runtime::Python | Runtime::Node => "main.handle",
        Runtime::Sh | Runtime::Exec => "main",
    }
}

/// The file inline source is written to, in its own code directory.
pub fn inline_file(runtime: Runtime, handler: &str) -> String {
    match runtime {
        Runtime::Python => format!("{}.py", handler.rsplit_once('.').map_or(handler, |(m, _)| m).replace('.', "/")),
        Runtime::Node => format!("{}.js", handler.rsplit_once('.').map_or(handler, |(m, _)| m).replace('.', "/")),
        Runtime::Sh | Runtime::Exec => handler.to_owned(),
    }
}

fn check_handler(runtime: Runtime, handler: &str, dir: Option<&Path>) -> Result<(), HandlerError> {
    match runtime {
        Runtime::Python | Runtime::Node => {
            let ident = |s: &str| {
                !s.is_empty()
                    && !s.as_bytes()[0].is_ascii_digit()
                    && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$')
            };
            match handler.rsplit_once('.') {
                Some((module, func)) if module.split('.').all(ident) && ident(func) => Ok(()),
                _ => Err(HandlerError::NotModuleFunction(handler.to_owned())),
            }
        }
        Runtime::Sh | Runtime::Exec => {
            let rel = Path::new(handler);
            if handler.is_empty() || rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
                return Err(HandlerError::NotInCodeDir(handler.to_owned()));
            }
            let Some(dir) = dir else { return Ok(()) };
            let file = dir.join(rel);
            let meta = match std::fs::metadata(&file) {
                Ok(meta) => meta,
                Err(source) => return Err(HandlerError::Unusable { file, source }),
            };
            if !meta.is_file() {
                return Err(HandlerError::NotAFile(file));
            }
            if runtime == Runtime::Exec && meta.permissions().mode() & 0o111 == 0 {
                return Err(HandlerError::NotExecutable(file));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Function, ConfigError> {
        Function::parse(Path::new("/etc/faas/functions/hello.toml"), text, &Config::default())
    }

    #[test]
    fn names() {
        assert!(valid_name("hello"));
        assert!(valid_name("a-b_9"));
        assert!(!valid_name("_admin"));
        assert!(!valid_name("Hello"));
        assert!(!valid_name("../etc"));
        assert!(!valid_name(&"a".repeat(64)));
    }

    #[test]
    fn inline_python_gets_defaults() {
        let f = parse("runtime = \"python\"\nsource = 'def handle(r): return \"hi\"'\n[limits]\nmemory = \"64M\"\n")
            .unwrap();
        assert_eq!(f.handler, "main.handle");
        assert_eq!(f.limits.memory, Bytes(64 << 20));
        assert_eq!(f.limits.timeout, Config::default().limits.timeout);
        assert_eq!(f.network, Network::None);
        assert_eq!(inline_file(f.runtime, &f.handler), "main.py");
    }

    #[test]
    fn code_dir_must_exist() {
        let err = parse("runtime = \"python\"\ncode = \"/nonexistent/x\"\nhandler = \"main.handle\"\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("/etc/faas/functions/hello.toml:2:8: code directory /nonexistent/x cannot be used"),
            "{text}"
        );
    }

    #[test]
    fn unknown_runtime_is_named() {
        let err = parse("runtime = \"ruby\"\nsource = \"x\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains(":1:11: unknown variant `ruby`"), "{text}");
        assert!(text.contains("hint: runtime is one of python, node, sh, exec"), "{text}");
    }

    #[test]
    fn unknown_limit_key_is_refused() {
        let err = parse("runtime = \"sh\"\nsource = \"x\"\n[limits]\nmemroy = \"1M\"\n").unwrap_err();
        assert!(err.to_string().contains(":4:1: unknown field `memroy`"), "{err}");
    }

    #[test]
    fn reserved_env_is_refused() {
        let err =
            parse("runtime = \"sh\"\nsource = \"x\"\n[sandbox]\nenv = { LD_PRELOAD = \"/tmp/x.so\" }\n").unwrap_err();
        assert!(err.to_string().contains("LD_PRELOAD"), "{err}");
    }

    #[test]
    fn read_only_may_not_cover_sandbox_paths() {
        let err = parse("runtime = \"sh\"\nsource = \"x\"\n[sandbox]\nread_only = [\"/tmp/x\"]\n").unwrap_err();
        assert!(err.to_string().contains("cover a place the sandbox owns"), "{err}");
    }

    #[test]
    fn bad_handler_shapes() {
        assert!(check_handler(Runtime::Python, "main", None).is_err());
        assert!(check_handler(Runtime::Python, "pkg.mod.fn", None).is_ok());
        assert!(check_handler(Runtime::Sh, "../x.sh", None).is_err());
        assert!(check_handler(Runtime::Exec, "/bin/sh", None).is_err());
    }

    #[test]
    fn handler_errors_name_the_file_and_the_fix() {
        let err = parse("runtime = \"python\"\nsource = \"x\"\nhandler = \"main\"\n").unwrap_err().to_string();
        assert_eq!(
            err,
            "/etc/faas/functions/hello.toml:3:11: handler \"main\" is not module.function\nhint: e.g. handler = \"main.handle\" calls handle() in main.py or main.js"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("run"), "#!/bin/sh\n").unwrap();
        let text = format!("runtime = \"exec\"\ncode = \"{}\"\nhandler = \"run\"\n", dir.path().display());
        let err = parse(&text).unwrap_err().to_string();
        let file = dir.path().canonicalize().unwrap().join("run");
        assert!(
            err.ends_with(&format!(
                ":3:11: handler {} is not executable\nhint: chmod +x {}",
                file.display(),
                file.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn response_headers_opt_in() {
        let f = parse("runtime = \"sh\"\nsource = \"x\"\n").unwrap();
        assert!(f.allow_headers.is_empty());
        let f = parse("runtime = \"sh\"\nsource = \"x\"\n[response]\nallow_headers = [\"Strict-Transport-Security\", \"set-cookie\"]\n").unwrap();
        assert_eq!(f.allow_headers, ["strict-transport-security", "set-cookie"]);
        let err =
            parse("runtime = \"sh\"\nsource = \"x\"\n[response]\nallow_headers = [\"x-frame-options\"]\n").unwrap_err();
        assert!(
            err.to_string()
                .contains(":4:18: allow_headers lists \"x-frame-options\", which is not an origin-wide header"),
            "{err}"
        );
        let err = parse("runtime = \"sh\"\nsource = \"x\"\n[response]\nallow = [\"alt-svc\"]\n").unwrap_err();
        assert!(err.to_string().contains(":4:1: unknown field `allow`"), "{err}");
    }

    #[test]
    fn warm_is_pythons_default_and_refused_elsewhere() {
        let f = parse("runtime = \"python\"\nsource = \"x\"\n").unwrap();
        assert_eq!(f.warm, Some(Warm { preload: vec![], preload_handler: false }));
        let f = parse("runtime = \"python\"\nsource = \"x\"\n[sandbox]\nwarm = false\n").unwrap();
        assert_eq!(f.warm, None);
        let f = parse(
            "runtime = \"python\"\nsource = \"x\"\n[sandbox]\npreload = [\"numpy\", \"email.parser\"]\npreload_handler = true\n",
        )
        .unwrap();
        assert_eq!(f.warm, Some(Warm { preload: vec!["numpy".into(), "email.parser".into()], preload_handler: true }));
        assert_eq!(parse("runtime = \"sh\"\nsource = \"x\"\n").unwrap().warm, None);
        let err = parse("runtime = \"sh\"\nsource = \"x\"\n[sandbox]\nwarm = true\n").unwrap_err();
        assert!(err.to_string().contains(":4:8: warm = true needs runtime = \"python\""), "{err}");
        let err = parse("runtime = \"node\"\nsource = \"x\"\n[sandbox]\npreload = [\"fs\"]\n").unwrap_err();
        assert!(err.to_string().contains(":4:12: preload and preload_handler need a warm python function"), "{err}");
        let err = parse("runtime = \"python\"\nsource = \"x\"\n[sandbox]\nwarm = false\npreload_handler = true\n")
            .unwrap_err();
        assert!(err.to_string().contains("preload and preload_handler need a warm python function"), "{err}");
        for bad in ["", "os.", ".os", "1x", "os path", "a-b", "__import__('os')"] {
            let text = format!("runtime = \"python\"\nsource = \"x\"\n[sandbox]\npreload = [{bad:?}]\n");
            let err = parse(&text).unwrap_err();
            assert!(err.to_string().contains("which is not a module name"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn network_modes() {
        let f = parse("runtime = \"sh\"\nsource = \"x\"\n[sandbox]\nnetwork = true\n").unwrap();
        assert_eq!(f.network, Network::Host);
        let f = parse("runtime = \"sh\"\nsource = \"x\"\n[sandbox]\nnetwork = \"none\"\n").unwrap();
        assert_eq!(f.network, Network::None);
        let f = parse(
            "runtime = \"sh\"\nsource = \"x\"\n[sandbox]\nnetwork = \"egress\"\nallow = [\"api.example.com:443\"]\n",
        )
        .unwrap();
        assert_eq!(f.network, Network::Egress);
        assert!(!f.allow.is_empty());
        let err = parse("runtime = \"sh\"\nsource = \"x\"\n[sandbox]\nnetwork = \"lan\"\n").unwrap_err();
        assert!(err.to_string().contains(":4:11: network = \"lan\" is not a network mode"), "{err}");
        let err = parse("runtime = \"sh\"\nsource = \"x\"\n[sandbox]\nallow = [\"a:1\"]\n").unwrap_err();
        assert!(err.to_string().contains("allow needs network = \"egress\""), "{err}");
        let err = parse("runtime = \"sh\"\nsource = \"x\"\n[sandbox]\nnetwork = \"egress\"\n").unwrap_err();
        assert!(err.to_string().contains("empty allow list"), "{err}");
        let err = parse("runtime = \"sh\"\nsource = \"x\"\n[sandbox]\nnetwork = \"egress\"\nallow = [\"a.com\"]\n")
            .unwrap_err();
        assert!(err.to_string().contains(":5:10: "), "{err}");
    }

    #[test]
    fn secrets_are_read_and_missing_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db-password"), "pw\n").unwrap();
        let config = Config { credentials_dir: Some(dir.path().to_owned()), ..Config::default() };
        let path = Path::new("/etc/faas/functions/hello.toml");
        let text = "runtime = \"sh\"\nsource = \"x\"\n[secrets]\ndb = \"db-password\"\ntoken = { credential = \"db-password\", env = \"DB_PW\" }\n";
        let f = Function::parse(path, text, &config).unwrap();
        assert_eq!(f.secrets.len(), 2);
        assert_eq!((f.secrets[0].name.as_str(), f.secrets[0].value.expose()), ("db", &b"pw"[..]));
        assert_eq!(f.secrets[1].env.as_deref(), Some("DB_PW"));
        assert!(!format!("{f:?}").contains("\"pw"), "{f:?}");
        let text = "runtime = \"sh\"\nsource = \"x\"\n[secrets]\ndb = \"nope\"\n";
        let err = Function::parse(path, text, &config).unwrap_err().to_string();
        assert!(err.starts_with("/etc/faas/functions/hello.toml:4:6: credential \"nope\" is missing from "), "{err}");
        let text = "runtime = \"sh\"\nsource = \"x\"\n[secrets]\n\".hidden\" = \"db-password\"\n";
        assert!(Function::parse(path, text, &config).unwrap_err().to_string().contains("cannot be a file name"));
        let text =
            "runtime = \"sh\"\nsource = \"x\"\n[secrets]\nx = { credential = \"db-password\", env = \"PATH_INFO\" }\n";
        assert!(Function::parse(path, text, &config).unwrap_err().to_string().contains("cannot be set by a function"));
    }

    #[test]
    fn methods_are_checked() {
        let f = parse("runtime = \"sh\"\nsource = \"x\"\nmethods = [\"get\", \"POST\"]\n").unwrap();
        assert!(f.allows(&http::Method::GET));
        assert!(!f.allows(&http::Method::DELETE));
        assert!(parse("runtime = \"sh\"\nsource = \"x\"\nmethods = []\n").is_err());
    }

    #[test]
    fn schedules_are_checked_where_they_are_written() {
        let f = parse("runtime = \"sh\"\nsource = \"x\"\n[[schedule]]\ncalendar = \"hourly\"\n[[schedule]]\ncalendar = \"Mon 9:00\"\nmethod = \"post\"\n")
            .unwrap();
        assert_eq!(f.schedules.len(), 2);
        assert_eq!((f.schedules[1].calendar.to_string(), f.schedules[1].method.as_str()), ("Mon 9:00".into(), "POST"));
        let err =
            parse("runtime = \"sh\"\nsource = \"x\"\n[[schedule]]\ncalendar = \"*:*/5\"\n").unwrap_err().to_string();
        assert!(
            err.starts_with("/etc/faas/functions/hello.toml:4:12: calendar \"*:*/5\": minute \"*/5\": write the start of a repetition, e.g. 0/5\nhint: systemd.time(7)"),
            "{err}"
        );
        let err =
            parse("runtime = \"sh\"\nsource = \"x\"\n[[schedule]]\ncalendar = \"hourly\"\nevery = 2\n").unwrap_err();
        assert!(err.to_string().starts_with("/etc/faas/functions/hello.toml:5:1: unknown field `every`"), "{err}");
    }
}
