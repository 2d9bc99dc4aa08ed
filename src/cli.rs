//! The subcommands: `serve` (the daemon), `check` (validate files), `invoke` (one run from
//! the shell through the same sandbox path), `doctor` (what this host gives), and the hidden
//! ones packaging and shell completion use (`man`, `completions`, `complete-functions`).

mod completion;
mod man;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, ConfigError};
use crate::host::{Host, LayerState};
use crate::http::{self, App, Listener, ListenerInfo};
use crate::invoke::{self, Call, Outcome, Report};
use crate::registry::{self, Lookup, Registry, Role};

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
    /// Listen on ADDR (host:port) as well as on systemd's sockets.
    #[arg(long)]
    pub listen: Vec<String>,
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

/// A named listener from systemd or --listen.
pub struct TakenListener {
    name: String,
    socket: TakenSocket,
}

enum TakenSocket {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// Takes systemd's sockets (names from LISTEN_FDNAMES) and binds `--listen` addresses.
pub fn take_listeners(extra: &[String]) -> Result<Vec<TakenListener>, String> {
    let mut fds = listenfd::ListenFd::from_env();
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES").map(|n| n.split(':').map(str::to_owned).collect()).unwrap_or_default();
    let mut out = Vec::new();
    for i in 0..fds.len() {
        let name = names.get(i).cloned().unwrap_or_else(|| "http".into());
        if let Ok(Some(l)) = fds.take_tcp_listener(i) {
            out.push(TakenListener { name, socket: TakenSocket::Tcp(l) });
        } else if let Ok(Some(l)) = fds.take_unix_listener(i) {
            out.push(TakenListener { name, socket: TakenSocket::Unix(l) });
        } else {
            return Err(format!("listen fd {} ({name}) is neither a TCP nor a unix stream socket\nhint: faas.socket must use ListenStream=", i + 3));
        }
    }
    for addr in extra {
        let l = std::net::TcpListener::bind(addr).map_err(|e| format!("failed to listen on {addr}: {e}"))?;
        out.push(TakenListener { name: "http".into(), socket: TakenSocket::Tcp(l) });
    }
    Ok(out)
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
pub async fn run(cli: Cli, listeners: Vec<TakenListener>) -> Result<u8, String> {
    // Before the settings are read: a build host's broken faas.toml must not stop the man
    // pages, and completion must stay silent whatever the settings say.
    match &cli.command {
        Command::Man { dir } => return man::write_pages(dir).map(|()| 0).map_err(|e| e.to_string()),
        Command::Completions { shell } => return completion::print_script(*shell).map(|()| 0),
        Command::CompleteFunctions => {
            completion::print_function_names(&cli, || load_config(&cli).ok());
            return Ok(0);
        }
        _ => {}
    }
    let config = load_config(&cli).map_err(|e| e.to_string())?;
    match &cli.command {
        Command::Serve(_) => serve(config, listeners).await,
        Command::Check { paths } => Ok(check(&config, paths)),
        Command::Invoke(args) => invoke_once(config, args).await,
        Command::Doctor => Ok(doctor(config)),
        // Answered above, before the settings.
        Command::Man { .. } | Command::Completions { .. } | Command::CompleteFunctions => Ok(0),
    }
}

fn check(config: &Config, paths: &[PathBuf]) -> u8 {
    let mut errors = Vec::new();
    let mut count = 0;
    let hard_nofile = registry::hard_nofile();
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
    if errors.is_empty() {
        println!("ok: {count} function file(s) checked");
        0
    } else {
        println!("{} of {count} function file(s) have problems", errors.len());
        1
    }
}

fn doctor(config: Config) -> u8 {
    let host = Host::new(config, false);
    println!("faas {} doctor", env!("CARGO_PKG_VERSION"));
    println!("  running as root:   {}", if host.privileged { "yes" } else { "no" });
    println!("  landlock ABI:      {}", host.landlock.abi);
    let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").map_or("unknown".into(), |s| s.trim().to_owned());
    println!("  user namespaces:   max {userns} (sandboxes do not need them when faas runs as root)");
    let actions = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    println!("  seccomp actions:   {}", actions.trim());
    let cgroup = crate::sandbox::cgroup::own_cgroup().map_or_else(|e| e.to_string(), |p| p.display().to_string());
    println!("  our cgroup:        {cgroup}");
    let journald = std::path::Path::new("/run/systemd/journal/socket").exists();
    println!("  journald:          {}", if journald { "socket present" } else { "absent: logs go to stderr" });
    for (name, path) in [("python", &host.config.runtimes.python), ("node", &host.config.runtimes.node), ("sh", &host.config.runtimes.sh)] {
        let found = if path.exists() { "found" } else { "MISSING" };
        println!("  runtime {name:7}    {} ({found})", path.display());
    }
    println!("  wrappers:          {} ({})", host.config.wrappers_dir.display(), if host.config.wrappers_dir.join("python.py").exists() { "found" } else { "MISSING" });
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
        for (what, limit) in crate::host::FALLBACK_BOUNDS {
            println!("    {what:11} {limit}");
        }
    }
    if host.layers.all_enforced() {
        0
    } else {
        1
    }
}

async fn invoke_once(config: Config, args: &InvokeArgs) -> Result<u8, String> {
    let host = Arc::new(Host::new(config, false));
    // A directory of its own in the state directory, so that a daemon using the same one is
    // left alone (review finding 9).
    let registry = Registry::new(host.clone(), Role::Invoke).map_err(|e| e.to_string())?;
    let loaded = match registry.lookup(&args.name) {
        Lookup::Ready(l) => l,
        Lookup::NotFound => return Err(format!("no function {:?} in {}", args.name, registry.dir().display())),
        Lookup::Invalid(_) => {
            // The registry logged the full error with file and line.
            return Ok(1);
        }
    };
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body).map_err(|e| format!("failed to read the body from stdin: {e}"))?;
    let mut headers = ::http::HeaderMap::new();
    for h in &args.headers {
        let bad = || format!("header {h:?} is not `Name: value`");
        let (k, v) = h.split_once(':').ok_or_else(bad)?;
        let name = ::http::header::HeaderName::from_bytes(k.trim().as_bytes()).map_err(|_| bad())?;
        let value = ::http::header::HeaderValue::from_str(v.trim()).map_err(|_| bad())?;
        headers.append(name, value);
    }
    let method = args.method.parse::<::http::Method>().map_err(|_| format!("{:?} is not an HTTP method", args.method))?;
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
        server_name: "localhost".into(),
        server_port: "0".into(),
        body: body.into(),
        received: Instant::now(),
        permits: Vec::new(),
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
            let _ = writeln!(stdout, "{} {}: {}", failure.outcome.status(), failure.outcome.slug(), failure.outcome.detail());
            Ok(1)
        }
    }
}

fn notify(states: &[sd_notify::NotifyState]) {
    // Outside systemd NOTIFY_SOCKET is unset and this does nothing.
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}

/// Half of WATCHDOG_USEC when systemd asks for keep-alives, as sd_watchdog_enabled(3) reads
/// it: WATCHDOG_PID, when set, must be us (sd-notify's own check insists on it being set).
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

async fn serve(config: Config, listeners: Vec<TakenListener>) -> Result<u8, String> {
    if listeners.is_empty() {
        return Err("no listening socket: start faas through faas.socket (systemd passes LISTEN_FDS) or give --listen 127.0.0.1:8080".into());
    }
    let host = Arc::new(Host::new(config, true));
    for (name, state, hint) in &host.layers.list {
        match state {
            LayerState::Enforced => tracing::info!("sandbox layer {name}: enforced"),
            LayerState::Partial(w) | LayerState::Missing(w) => tracing::warn!("sandbox layer {name}: {}: {w}\nhint: {hint}", state.word()),
        }
    }
    if !host.privileged {
        tracing::error!("faas serve is not running as root: every invocation will fail with 503\nhint: run it through faas.service, or with sudo for development");
    }
    let registry = Arc::new(Registry::new(host.clone(), Role::Serve).map_err(|e| e.to_string())?);
    if host.privileged {
        // The host-wide uid lock file, and a first batch of uids, before READY=1.
        host.uids.prepare()?;
    }
    let (ok, bad) = registry.load_all();
    tracing::info!("loaded {ok} function(s) from {} ({bad} invalid)", registry.dir().display());
    // The fd budget is split once, now that listeners, journald and the loaded functions
    // hold theirs; main raised the soft limit to the hard one before.
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_err(|e| format!("failed to read the open-files limit: {e}"))?.0;
    let open = http::open_fds().map_err(|e| format!("failed to count open fds in /proc/self/fd: {e}"))?;
    let capacity = http::Capacity::derive(&host.config, nofile, open)?;
    if capacity.sandboxes < host.config.max_concurrency {
        tracing::warn!("max_concurrency {} lowered to {}: the open-files limit {nofile} holds no more sandboxes beside the connections\nhint: raise LimitNOFILE=, or set max_connections lower", host.config.max_concurrency, capacity.sandboxes);
    }
    tracing::info!("{capacity}");
    let app = App::new(host.clone(), registry, capacity);
    let graceful = Arc::new(hyper_util::server::graceful::GracefulShutdown::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut loops = Vec::new();
    for l in listeners {
        let (listener, port) = match l.socket {
            TakenSocket::Tcp(s) => {
                s.set_nonblocking(true).map_err(|e| e.to_string())?;
                let port = s.local_addr().map(|a| a.port().to_string()).unwrap_or_default();
                tracing::info!("listening on {} ({})", s.local_addr().map(|a| a.to_string()).unwrap_or_default(), l.name);
                (Listener::Tcp(tokio::net::TcpListener::from_std(s).map_err(|e| e.to_string())?), port)
            }
            TakenSocket::Unix(s) => {
                s.set_nonblocking(true).map_err(|e| e.to_string())?;
                tracing::info!("listening on a unix socket ({})", l.name);
                (Listener::Unix(tokio::net::UnixListener::from_std(s).map_err(|e| e.to_string())?), "0".into())
            }
        };
        let info = ListenerInfo { admin: l.name == "admin", port };
        loops.push(tokio::spawn(http::serve(app.clone(), listener, info, graceful.clone(), stop_rx.clone())));
    }

    let status = |app: &App| {
        format!("{} in flight, {} served", app.stats.in_flight.load(Ordering::Relaxed), app.stats.served.load(Ordering::Relaxed))
    };
    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&status(&app))]);
    let watchdog = watchdog_interval();
    let mut tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1)));
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let idle = host.config.idle_exit.0;
    let mut last_status = status(&app);
    let mut refused_logged = 0;
    let reason = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = tick.tick() => {
                let s = status(&app);
                if s != last_status {
                    notify(&[sd_notify::NotifyState::Status(&s)]);
                    last_status = s;
                }
                if watchdog.is_some() {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                }
                let refused = app.stats.refused.load(Ordering::Relaxed);
                if refused != refused_logged {
                    tracing::warn!("refused {} connection(s) or upload(s) past the caps in the last second ({refused} since start); {}", refused - refused_logged, app.capacity);
                    refused_logged = refused;
                }
                if !idle.is_zero() && app.stats.in_flight.load(Ordering::Relaxed) == 0 {
                    let last = Duration::from_millis(app.stats.last_activity_ms.load(Ordering::Relaxed));
                    if app.started.elapsed().saturating_sub(last) >= idle {
                        break "idle";
                    }
                }
            }
        }
    };
    tracing::info!("stopping ({reason}): no new connections; {} to drain", status(&app));
    notify(&[sd_notify::NotifyState::Stopping, sd_notify::NotifyState::Status(&format!("stopping ({reason})"))]);
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    let grace = app.host.config.drain_grace.0;
    let graceful = Arc::try_unwrap(graceful).map_err(|_| "the accept loops still hold the shutdown handle".to_owned())?;
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("drain grace of {grace:?} ran out; {}", status(&app));
    }
    // Invocation tasks finish their teardown after the last response byte.
    let until = Instant::now() + Duration::from_secs(2);
    while app.stats.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!("stopped: {}", status(&app));
    Ok(0)
}
