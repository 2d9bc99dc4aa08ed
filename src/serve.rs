//! The daemon's life, `faas serve` from the sockets systemd passes to the last drained
//! request: set up the host, load every function, split the fd budget, start the accept
//! loops, tell systemd READY=1 (sd_notify(3)), then keep STATUS= current and the watchdog fed
//! until SIGTERM, SIGINT or the idle exit; then STOPPING=1, stop accepting and drain.
//! Serving the requests themselves is `http.rs`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::server::graceful::GracefulShutdown;
use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::http::{self, App, Capacity, CapacityError, Listener, ListenerInfo};
use crate::registry::{Registry, Role, StateError};
use crate::sandbox::{Host, LayerState};

/// Why the daemon could not start, or stopped other than cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("no listening socket: start faas through faas.socket (systemd passes LISTEN_FDS) or give --listen 127.0.0.1:8080")]
    NoListener,
    #[error(
        "listen fd {fd} ({name}) is neither a TCP nor a unix stream socket\nhint: faas.socket must use ListenStream="
    )]
    ListenFd { fd: usize, name: String },
    #[error("failed to listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    /// The uid lock file or the first batch of uids (its message names the file and a hint).
    #[error("{0}")]
    Uids(String),
    #[error("failed to read the open-files limit: {0}")]
    Nofile(#[source] nix::errno::Errno),
    #[error("failed to count open fds in /proc/self/fd: {0}")]
    CountFds(#[source] std::io::Error),
    #[error(transparent)]
    Capacity(#[from] CapacityError),
    /// Making a listener non-blocking, or registering it with tokio, failed.
    #[error("failed to {what} the {name} listener: {source}")]
    Listener {
        what: &'static str,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to install the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A shutdown handle outlived the accept loops that held it: the drain cannot wait.
    #[error("the accept loops still hold the shutdown handle")]
    ShutdownHandle,
}

/// A named listener from systemd or `--listen`.
pub struct TakenListener {
    /// LISTEN_FDNAMES' name; `admin` serves `/_/metrics` and `/_/functions`.
    name: String,
    socket: TakenSocket,
}

enum TakenSocket {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// Takes systemd's sockets (names from LISTEN_FDNAMES) and binds the `--listen` addresses,
/// each `[NAME=]ADDR` (the name, `http` when left out, is what `proxy.protocol_listeners`
/// refers to). Called from `main` before anything else could open an fd and before threads
/// exist. `admin` is the `--admin-socket` path, bound here too.
pub fn take_listeners(extra: &[String], admin: Option<&Path>) -> Result<Vec<TakenListener>, ServeError> {
    let mut fds = listenfd::ListenFd::from_env();
    let names: Vec<String> =
        std::env::var("LISTEN_FDNAMES").map(|n| n.split(':').map(str::to_owned).collect()).unwrap_or_default();
    let mut out = Vec::new();
    for i in 0..fds.len() {
        let name = names.get(i).cloned().unwrap_or_else(|| "http".into());
        if let Ok(Some(l)) = fds.take_tcp_listener(i) {
            out.push(TakenListener { name, socket: TakenSocket::Tcp(l) });
        } else if let Ok(Some(l)) = fds.take_unix_listener(i) {
            out.push(TakenListener { name, socket: TakenSocket::Unix(l) });
        } else {
            return Err(ServeError::ListenFd { fd: i + 3, name });
        }
    }
    for arg in extra {
        let (name, addr) = match arg.split_once('=') {
            Some((name, addr)) => (name, addr),
            None => ("http", arg.as_str()),
        };
        let l =
            std::net::TcpListener::bind(addr).map_err(|source| ServeError::Listen { addr: addr.to_owned(), source })?;
        out.push(TakenListener { name: name.to_owned(), socket: TakenSocket::Tcp(l) });
    }
    if let Some(path) = admin {
        out.push(TakenListener { name: "admin".into(), socket: TakenSocket::Unix(bind_admin(path)?) });
    }
    Ok(out)
}

/// Binds the admin socket at `path` with mode 0600 from the start (the umask is set around
/// bind(2): no thread exists yet to notice), replacing a socket an earlier daemon left.
fn bind_admin(path: &Path) -> Result<std::os::unix::net::UnixListener, ServeError> {
    use std::os::unix::fs::FileTypeExt;
    let failed = |source| ServeError::Listen { addr: path.display().to_string(), source };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(failed)?,
        Ok(_) => return Err(failed(std::io::Error::from(std::io::ErrorKind::AlreadyExists))),
        Err(_) => {}
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    bound.map_err(failed)
}

/// Gives the admin socket at `path` to `[deploy] group` (mode 0660), so its members can
/// connect; who may deploy is still checked per request from the peer's credentials.
fn share_admin_socket(path: &Path, group: &str) {
    let Some(gid) = nix::unistd::Group::from_name(group).ok().flatten().map(|g| g.gid) else {
        tracing::warn!("[deploy] group {group:?} does not exist: the admin socket {} stays root's", path.display());
        return;
    };
    let shared = nix::unistd::chown(path, None, Some(gid))
        .map_err(std::io::Error::from)
        .and_then(|()| std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o660)));
    if let Err(e) = shared {
        tracing::warn!("failed to give the admin socket {} to group {group}: {e}", path.display());
    }
}

/// Serves on `listeners` until told to stop; returns the exit code. `admin_socket` is the
/// path `--admin-socket` bound, if any.
pub async fn run(config: Config, listeners: Vec<TakenListener>, admin_socket: Option<&Path>) -> Result<u8, ServeError> {
    if listeners.is_empty() {
        return Err(ServeError::NoListener);
    }
    if let (Some(path), Some(group)) = (admin_socket, &config.deploy.group) {
        share_admin_socket(path, group);
    }
    let host = Arc::new(Host::setup(config));
    log_layers(&host);
    let registry = Arc::new(Registry::new(host.clone(), Role::Serve)?);
    if host.privileged {
        // The host-wide uid lock file, and a first batch of uids, before READY=1.
        host.uids.prepare().map_err(ServeError::Uids)?;
    }
    let (ok, bad) = registry.load_all();
    tracing::info!("loaded {ok} function(s) from {} ({bad} invalid)", registry.dir().display());
    let capacity = derive_capacity(&host)?;
    let app = App::new(host, registry, capacity);
    let graceful = Arc::new(GracefulShutdown::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let loops = start_accept_loops(&app, listeners, &graceful, &stop_rx)?;
    let scheduler = tokio::spawn(crate::schedule::run(app.clone(), stop_rx.clone()));
    tokio::spawn(app.registry.warm().clone().watch());
    // Before READY=1: from then on systemd may send SIGTERM, and its default action would
    // skip the drain.
    let mut signals = Signals::install()?;
    let reason = wait_for_stop(&app, &mut signals).await?;
    app.start_draining();
    notify(&[NotifyState::Stopping, NotifyState::Status(&format!("stopping ({reason})"))]);
    let delay = app.host.config.drain_delay.0;
    if !delay.is_zero() && reason != "idle" {
        tracing::info!(
            "stopping ({reason}): /_/ready answers 503; serving {delay:?} more so balancers take this host out; {}",
            status(&app)
        );
        // A second signal cuts the delay short.
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = signals.term.recv() => {}
            _ = signals.int.recv() => {}
        }
    }
    tracing::info!("stopping ({reason}): no new connections; {} to drain", status(&app));
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    let _ = scheduler.await;
    drain(&app, graceful).await?;
    tracing::info!("stopped: {}", status(&app));
    Ok(0)
}

/// Logs once what each sandbox layer gets on this host, and says so when nothing will run.
fn log_layers(host: &Host) {
    for (name, state, hint) in &host.layers.list {
        match state {
            LayerState::Enforced => tracing::info!("sandbox layer {name}: enforced"),
            LayerState::Partial(w) | LayerState::Missing(w) => {
                tracing::warn!("sandbox layer {name}: {}: {w}\nhint: {hint}", state.word())
            }
        }
    }
    if !host.privileged {
        tracing::error!("faas serve is not running as root: every invocation will fail with 503\nhint: run it through faas.service, or with sudo for development");
    }
}

/// Splits the fd budget, once, now that the listeners, journald and the loaded functions
/// hold theirs; `main` raised the soft open-files limit to the hard one before.
fn derive_capacity(host: &Host) -> Result<Capacity, ServeError> {
    let nofile =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_err(ServeError::Nofile)?.0;
    let open = http::open_fds().map_err(ServeError::CountFds)?;
    let capacity = Capacity::derive(&host.config, nofile, open)?;
    if capacity.sandboxes < host.config.max_concurrency {
        tracing::warn!("max_concurrency {} lowered to {}: the open-files limit {nofile} holds no more sandboxes beside the connections\nhint: raise LimitNOFILE=, or set max_connections lower", host.config.max_concurrency, capacity.sandboxes);
    }
    tracing::info!("{capacity}");
    Ok(capacity)
}

/// One accept loop per listener, each watching `stop`.
fn start_accept_loops(
    app: &Arc<App>,
    listeners: Vec<TakenListener>,
    graceful: &Arc<GracefulShutdown>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, ServeError> {
    let mut loops = Vec::new();
    let mut names = Vec::new();
    for l in listeners {
        let name = l.name;
        let failed = |what: &'static str, name: &str| {
            let name = name.to_owned();
            move |source| ServeError::Listener { what, name, source }
        };
        let (listener, port) = match l.socket {
            TakenSocket::Tcp(s) => {
                s.set_nonblocking(true).map_err(failed("make non-blocking", &name))?;
                let port = s.local_addr().map(|a| a.port().to_string()).unwrap_or_default();
                tracing::info!("listening on {} ({name})", s.local_addr().map(|a| a.to_string()).unwrap_or_default());
                (
                    Listener::Tcp(tokio::net::TcpListener::from_std(s).map_err(failed("register with tokio", &name))?),
                    port,
                )
            }
            TakenSocket::Unix(s) => {
                s.set_nonblocking(true).map_err(failed("make non-blocking", &name))?;
                tracing::info!("listening on a unix socket ({name})");
                (
                    Listener::Unix(
                        tokio::net::UnixListener::from_std(s).map_err(failed("register with tokio", &name))?,
                    ),
                    "0".into(),
                )
            }
        };
        let proxy_protocol = app.host.config.proxy.speaks_proxy_protocol(&name);
        if proxy_protocol {
            tracing::info!("the {name} listener expects a PROXY protocol header (v1 or v2) from {}", trusted_list(app));
        }
        let info = ListenerInfo { admin: name == "admin", port, proxy_protocol };
        names.push(name);
        loops.push(tokio::spawn(http::serve(app.clone(), listener, info, graceful.clone(), stop.clone())));
    }
    for name in &app.host.config.proxy.protocol_listeners {
        if !names.contains(name) {
            tracing::warn!("proxy.protocol_listeners names {name:?}, but no listener has that name (listeners: {})\nhint: name sockets with FileDescriptorName= or --listen NAME=ADDR", names.join(", "));
        }
    }
    Ok(loops)
}

fn trusted_list(app: &App) -> String {
    app.host.config.proxy.trusted.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The signals that stop the daemon.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, ServeError> {
        Ok(Signals {
            term: signal_handler("SIGTERM", SignalKind::terminate())?,
            int: signal_handler("SIGINT", SignalKind::interrupt())?,
        })
    }
}

/// Says READY=1, then once a second (or at half the watchdog interval, if that is shorter)
/// updates STATUS=, feeds the watchdog, logs refusals as one count and checks the idle exit;
/// returns why it stopped.
async fn wait_for_stop(app: &App, signals: &mut Signals) -> Result<&'static str, ServeError> {
    let mut last_status = status(app);
    notify(&[NotifyState::Ready, NotifyState::Status(&last_status)]);
    let watchdog = watchdog_interval();
    let mut tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1)));
    let idle = app.host.config.idle_exit.0;
    let mut refused_logged = 0;
    loop {
        tokio::select! {
            _ = signals.term.recv() => return Ok("SIGTERM"),
            _ = signals.int.recv() => return Ok("SIGINT"),
            _ = tick.tick() => {
                let s = status(app);
                if s != last_status {
                    notify(&[NotifyState::Status(&s)]);
                    last_status = s;
                }
                if watchdog.is_some() {
                    notify(&[NotifyState::Watchdog]);
                }
                let refused = app.stats.refused.load(Ordering::Relaxed);
                if refused != refused_logged {
                    tracing::warn!("refused {} connection(s) or upload(s) past the caps in the last second ({refused} since start); {}", refused - refused_logged, app.capacity);
                    refused_logged = refused;
                }
                // A daemon with schedules stays up: nothing would start it for them.
                if !idle.is_zero() && app.stats.in_flight.load(Ordering::Relaxed) == 0 && app.schedules.count() == 0 {
                    let last = Duration::from_millis(app.stats.last_activity_ms.load(Ordering::Relaxed));
                    if app.started.elapsed().saturating_sub(last) >= idle {
                        return Ok("idle");
                    }
                }
            }
        }
    }
}

fn signal_handler(name: &'static str, kind: SignalKind) -> Result<tokio::signal::unix::Signal, ServeError> {
    signal(kind).map_err(|source| ServeError::Signal { signal: name, source })
}

/// Waits up to `drain_grace` for the open connections to finish, then for the invocation
/// tasks (scheduled runs, which have no connection, and teardowns, which follow the last
/// response byte): until the grace ends, and at least 2 s more.
async fn drain(app: &App, graceful: Arc<GracefulShutdown>) -> Result<(), ServeError> {
    let grace = app.host.config.drain_grace.0;
    let grace_ends = Instant::now() + grace;
    let graceful = Arc::try_unwrap(graceful).map_err(|_| ServeError::ShutdownHandle)?;
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("drain grace of {grace:?} ran out; {}", status(app));
    }
    let until = grace_ends.max(Instant::now() + Duration::from_secs(2));
    while app.stats.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The STATUS= line: what `systemctl status faas` shows.
fn status(app: &App) -> String {
    format!(
        "{} in flight, {} served",
        app.stats.in_flight.load(Ordering::Relaxed),
        app.stats.served.load(Ordering::Relaxed)
    )
}

fn notify(states: &[NotifyState]) {
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
