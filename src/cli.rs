//! The subcommands: `serve` (the daemon, in serve.rs), `check` (validate files), `invoke`
//! (one run from the shell through the same sandbox path), `doctor` (what this host gives), and
//! the hidden ones packaging and shell completion use (`man`, `completions`,
//! `complete-functions`). The command-line edge: errors from below are typed, and gain their
//! context here (anyhow).

mod completion;
mod man;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::invoke::{self, Call, Outcome, Report};
use crate::registry::{self, Lookup, Registry, Role};
use crate::sandbox::{Host, LayerState};
use crate::serve::{self, TakenListener};

/// faas — run a function per HTTP request, each in a fresh sandbox.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    /// Daemon settings (default /etc/faas/faas.toml; built-in defaults when it is missing).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Functions directory, overriding faas.toml.
    #[arg(long, global = true)]
    pub functions: Option<PathBuf>,
    /// Wrappers directory, overriding faas.toml.
    #[arg(long, global = true)]
    pub wrappers: Option<PathBuf>,
    /// State directory, overriding faas.toml.
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    /// Also log debug events.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve HTTP on the sockets systemd passes (LISTEN_FDS) or on --listen.
    Serve(ServeArgs),
    /// Check faas.toml and function files; print every problem; exit 1 on any.
    Check {
        /// Function files or directories (default: the functions directory).
        paths: Vec<PathBuf>,
    },
    /// Run one function once through the sandbox: body on stdin, response on stdout.
    Invoke(InvokeArgs),
    /// Show which sandbox layers this host enforces; exit 1 unless all are.
    Doctor,
    /// deploy, versions, rollback, rm, ls, logs (src/deploy/cli.rs).
    #[command(flatten)]
    Deploy(crate::deploy::cli::DeployCommand),
    /// Write faas.1 and faas-SUBCOMMAND.1 into DIR (for packaging; see `make deb`).
    #[command(hide = true)]
    Man {
        /// Directory for the pages; created if missing.
        dir: PathBuf,
    },
    /// Print the completion script for SHELL (for packaging).
    #[command(hide = true)]
    Completions {
        /// bash, zsh or fish.
        shell: completion::CompletionShell,
    },
    /// Print the function names, one a line, for shell completion: those the running daemon
    /// has loaded when its admin socket answers quickly, else the functions directory's files.
    #[command(hide = true)]
    CompleteFunctions,
}

/// `faas serve` flags.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Listen on ADDR (host:port) as well as on systemd's sockets; NAME=ADDR names the listener
    /// (default http), as proxy.protocol_listeners refers to it.
    #[arg(long)]
    pub listen: Vec<String>,
    /// Serve the admin endpoints on a unix socket at PATH (mode 0600, or 0660 for [deploy]
    /// group), as well as on systemd's `admin` socket.
    #[arg(long, env = "FAAS_ADMIN_SOCKET")]
    pub admin_socket: Option<PathBuf>,
}

/// `faas invoke` flags.
#[derive(Args, Debug)]
pub struct InvokeArgs {
    /// The function.
    pub name: String,
    /// HTTP method.
    #[arg(short = 'X', long, default_value = "POST")]
    pub method: String,
    /// PATH_INFO.
    #[arg(long, default_value = "")]
    pub path: String,
    /// QUERY_STRING.
    #[arg(long, default_value = "")]
    pub query: String,
    /// Request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Print the status line and headers before the body.
    #[arg(short, long)]
    pub include: bool,
}

fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    let mut config = Config::load(cli.config.as_deref())?;
    let abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
    if let Some(p) = &cli.functions {
        config.functions_dir = abs(p);
    }
    if let Some(p) = &cli.wrappers {
        config.wrappers_dir = abs(p);
    }
    if let Some(p) = &cli.state_dir {
        config.state_dir = abs(p);
    }
    Ok(config)
}

/// Runs the subcommand; returns the exit code.
pub async fn run(cli: Cli, listeners: Vec<TakenListener>) -> anyhow::Result<u8> {
    // Before the settings are read: a build host's broken faas.toml must not stop the man
    // pages, and completion must stay silent whatever the settings say.
    match &cli.command {
        Command::Man { dir } => return man::write_pages(dir).map(|()| 0).context("failed to write the man pages"),
        Command::Completions { shell } => return completion::print_script(*shell).map(|()| 0).map_err(|e| anyhow!(e)),
        Command::CompleteFunctions => {
            completion::print_function_names(&cli, || load_config(&cli).ok());
            return Ok(0);
        }
        _ => {}
    }
    let config = load_config(&cli)?;
    match &cli.command {
        Command::Serve(args) => Ok(serve::run(config, listeners, args.admin_socket.as_deref()).await?),
        Command::Check { paths } => Ok(check(&config, paths)),
        Command::Invoke(args) => invoke_once(config, args).await,
        Command::Doctor => Ok(doctor(config)),
        Command::Deploy(cmd) => crate::deploy::cli::run(cmd, &config).await,
        // Answered above, before the settings.
        Command::Man { .. } | Command::Completions { .. } | Command::CompleteFunctions => Ok(0),
    }
}

fn check(config: &Config, paths: &[PathBuf]) -> u8 {
    let mut errors = Vec::new();
    let mut count = 0;
    let hard_nofile = crate::sandbox::nofile_hard_limit();
    let targets: Vec<PathBuf> = if paths.is_empty() { vec![config.functions_dir.clone()] } else { paths.to_vec() };
    for p in &targets {
        let files = if p.is_dir() {
            match registry::function_files(p) {
                Ok(files) => files,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            }
        } else {
            vec![p.clone()]
        };
        for file in files {
            count += 1;
            match registry::check_file(&file, config) {
                // A warning, not a problem: the daemon's hard limit may differ from ours.
                Ok(f) => {
                    if let Some(w) = registry::nofile_warning(&f, hard_nofile) {
                        println!("{}: warning: {w}", file.display());
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }
    for e in &errors {
        println!("{e}");
    }
    let conflicts = if paths.is_empty() { crate::deploy::conflicts(config) } else { Vec::new() };
    for c in &conflicts {
        println!("{c}");
    }
    if errors.is_empty() && conflicts.is_empty() {
        println!("ok: {count} function file(s) checked");
        0
    } else {
        println!("{} of {count} function file(s) have problems", errors.len() + conflicts.len());
        1
    }
}

fn doctor(config: Config) -> u8 {
    let host = Host::probe(config);
    println!("faas {} doctor", env!("CARGO_PKG_VERSION"));
    println!("  running as root:   {}", if host.privileged { "yes" } else { "no" });
    println!("  landlock ABI:      {}", host.landlock.abi);
    let userns =
        std::fs::read_to_string("/proc/sys/user/max_user_namespaces").map_or("unknown".into(), |s| s.trim().to_owned());
    println!("  user namespaces:   max {userns} (sandboxes do not need them when faas runs as root)");
    let actions = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    println!("  seccomp actions:   {}", actions.trim());
    let cgroup = crate::sandbox::own_cgroup().map_or_else(|e| e.to_string(), |p| p.display().to_string());
    println!("  our cgroup:        {cgroup}");
    let journald = std::path::Path::new("/run/systemd/journal/socket").exists();
    println!("  journald:          {}", if journald { "socket present" } else { "absent: logs go to stderr" });
    for (name, path) in [
        ("python", &host.config.runtimes.python),
        ("node", &host.config.runtimes.node),
        ("sh", &host.config.runtimes.sh),
    ] {
        let found = if path.exists() { "found" } else { "MISSING" };
        println!("  runtime {name:7}    {} ({found})", path.display());
    }
    println!(
        "  wrappers:          {} ({})",
        host.config.wrappers_dir.display(),
        if host.config.wrappers_dir.join("python.py").exists() { "found" } else { "MISSING" }
    );
    match crate::sandbox::native_library() {
        Ok(path) => println!("  zygote steps:      {} (found)", path.display()),
        Err(why) => println!("  zygote steps:      MISSING: {why}; warm Python functions run cold"),
    }
    println!();
    for (name, state, hint) in &host.layers.list {
        let why = match state {
            LayerState::Enforced => String::new(),
            LayerState::Partial(w) | LayerState::Missing(w) => format!(": {w}"),
        };
        println!("  {name:11} {:8}{why}", state.word());
        if *state != LayerState::Enforced {
            println!("  {:11} hint: {hint}", "");
        }
    }
    if host.layers.list.iter().any(|(name, state, _)| *name == "cgroup" && *state != LayerState::Enforced) {
        println!();
        println!("  without a cgroup, the limits fall back to rlimits, per sandbox:");
        for (what, limit) in crate::sandbox::FALLBACK_BOUNDS {
            println!("    {what:11} {limit}");
        }
    }
    let zygotes = crate::warm::running_zygotes();
    println!();
    println!("  zygotes (warm Python functions; requests and state per zygote: /_/functions):");
    if zygotes.is_empty() {
        println!("    none running");
    }
    for z in zygotes {
        println!(
            "    pid {:<8} {:24} {:>6} MiB resident, up {}",
            z.pid,
            z.function,
            z.rss_bytes >> 20,
            crate::units::Span(std::time::Duration::from_secs(z.age.as_secs()))
        );
    }
    if host.layers.all_enforced() {
        0
    } else {
        1
    }
}

async fn invoke_once(config: Config, args: &InvokeArgs) -> anyhow::Result<u8> {
    let host = Arc::new(Host::probe(config));
    // A directory of its own in the state directory, so that a daemon using the same one is
    // left alone (review finding 9).
    let registry = Registry::new(host.clone(), Role::Invoke)?;
    let loaded = match registry.lookup(&args.name) {
        Lookup::Ready(l) => l,
        Lookup::NotFound => bail!("no function {:?} in {}", args.name, registry.dir().display()),
        Lookup::Invalid(_) => {
            // The registry logged the full error with file and line.
            return Ok(1);
        }
    };
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body).context("failed to read the body from stdin")?;
    let mut headers = ::http::HeaderMap::new();
    for h in &args.headers {
        let bad = || anyhow!("header {h:?} is not `Name: value`");
        let (k, v) = h.split_once(':').ok_or_else(bad)?;
        let name = ::http::header::HeaderName::from_bytes(k.trim().as_bytes()).map_err(|_| bad())?;
        let value = ::http::header::HeaderValue::from_str(v.trim()).map_err(|_| bad())?;
        headers.append(name, value);
    }
    let method =
        args.method.parse::<::http::Method>().map_err(|_| anyhow!("{:?} is not an HTTP method", args.method))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Report>();
    let sink: invoke::ReportSink = Arc::new(move |r: &Report| {
        let _ = tx.send(r.clone());
    });
    let call = Call {
        id: uuid::Uuid::new_v4().to_string(),
        method,
        path_info: args.path.clone(),
        query: args.query.clone(),
        headers,
        remote_addr: "127.0.0.1".into(),
        trigger: invoke::Trigger::Invoke,
        server_name: "localhost".into(),
        server_port: "0".into(),
        body: body.into(),
        received: Instant::now(),
        permits: invoke::Permits::default(),
        // The shell's root is trusted: no key is asked for (and none is passed on as one).
        caller: None,
        own_origin: false,
    };
    let mut stdout = std::io::stdout();
    match invoke::invoke(host, loaded, call, Some(sink)).await {
        Ok(mut started) => {
            if args.include {
                let _ = writeln!(stdout, "HTTP/1.1 {}", started.head.status);
                for (k, v) in &started.head.headers {
                    let _ = writeln!(stdout, "{k}: {}", v.to_str().unwrap_or("<binary>"));
                }
                let _ = writeln!(stdout);
            }
            while let Some(chunk) = started.body.next_chunk().await {
                match chunk {
                    Ok(b) => {
                        let _ = stdout.write_all(&b);
                    }
                    Err(e) => {
                        let _ = stdout.flush();
                        eprintln!("faas: response cut short: {e}");
                        break;
                    }
                }
            }
            let _ = stdout.flush();
            let report = rx.recv().await;
            Ok(match report {
                Some(r) if r.outcome == Outcome::Ok && r.status < 500 => 0,
                _ => 1,
            })
        }
        Err(failure) => {
            let _ = rx.recv().await;
            let p = failure.outcome.problem();
            let _ = writeln!(stdout, "{} {}: {}", p.status, p.slug, p.detail);
            Ok(1)
        }
    }
}
