//! Starts the real `faas` binary the way systemd does: a 127.0.0.1:0 socket as fd 3
//! (LISTEN_FDS=1, and an `admin` one as fd 4), NOTIFY_SOCKET on a temp datagram socket, and
//! waits for READY=1. Each test gets its own functions directory, state directory, sandbox uid
//! range and daemon.
//!
//! The helpers are strict, so that a test built on them can fail: a body the daemon cut short
//! is an error unless the test asks for it (`Resp::text_allow_cut`), a dead daemon is never
//! "quiet", every raw socket read has a timeout that fails the test, and a daemon whose log
//! shows a panic fails the test when its `Daemon` is dropped. Skips are asked for, never
//! implied: `FAAS_TEST_SKIP=landlock-abi,cgroup-mode` (see `skip_requested`).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The first sandbox uid in the daemon's default range.
pub const UID_BASE: u32 = 0x7000_0000;

/// Where the harness's own uid ranges start: above the daemon's default range (65536 wide),
/// so a `faas` started with defaults on the same machine never shares a uid with a test.
const HARNESS_UID_BASE: u32 = UID_BASE + 65536;

/// How long a raw socket read may wait for a byte before the test fails as stalled.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The fds the daemon holds per live zygote, its network namespace apart (src/sandbox/zygote.rs:
/// the control socket, the pidfd, the log pipe).
pub const ZYGOTE_FDS: usize = 3;
/// The fds the daemon holds per spare, its network namespace apart (a `Running` made ahead:
/// two pidfds, three stdio pipes, the seccomp listener, the go socket, the zygote's reply
/// socket); a cgroup adds its directory.
pub const SPARE_FDS: usize = 8;

/// Fails with the reason when not root, rather than passing without testing anything.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test builds real sandboxes and needs root: sudo -E cargo test -- --include-ignored"
    );
}

/// Whether `FAAS_TEST_SKIP` (a comma-separated list, as run-standalone.sh reads it) names
/// `what`. Only the `require_*` helpers consult it, and they say what they skipped.
pub fn skip_requested(what: &str) -> bool {
    std::env::var("FAAS_TEST_SKIP").unwrap_or_default().split(',').any(|w| w.trim() == what)
}

/// A running daemon with its own directories.
pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin_port: u16,
    pub log: PathBuf,
    pub notify: UnixDatagram,
    /// Every sd_notify message received so far.
    pub messages: Vec<String>,
    /// Its sandbox uids: `(uid_base, uid_count)`, as written to its faas.toml.
    pub uids: (u32, u32),
}

/// How to start a daemon, beyond its functions. `Default` is what `Daemon::start` does.
#[derive(Default, Clone, Copy)]
pub struct Options<'a> {
    /// Extra faas.toml lines, after the harness's own top-level keys.
    pub config_extra: &'a str,
    /// Extra environment for the daemon.
    pub env: &'a [(&'a str, &'a str)],
    /// `(uid_base, uid_count)`; None: a fresh range of 1024 (`uid_range`).
    pub uids: Option<(u32, u32)>,
    /// The daemon's executable; None: cargo's build of faas.
    pub exe: Option<&'a Path>,
}

/// A response, whatever its status.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body as far as it came; see `body_error`.
    pub body: Vec<u8>,
    /// Why reading the body stopped early: the daemon cut it short (a chunked body without
    /// its last chunk), the connection broke or stalled, or it was larger than 64 MiB.
    pub body_error: Option<String>,
}

impl Resp {
    /// The body as text; panics if it was cut short (see `text_allow_cut`).
    pub fn text(&self) -> String {
        self.assert_whole();
        self.text_allow_cut()
    }

    /// The body as text, also when it was cut short: for tests about cut bodies.
    pub fn text_allow_cut(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body bytes; panics if it was cut short.
    pub fn bytes(&self) -> &[u8] {
        self.assert_whole();
        &self.body
    }

    /// Whether the body ended early (the reason is in `body_error`).
    pub fn body_was_cut(&self) -> bool {
        self.body_error.is_some()
    }

    fn assert_whole(&self) {
        if let Some(e) = &self.body_error {
            panic!(
                "the body of this {} response was cut short ({e}) after {} bytes; a test that expects that uses \
                 text_allow_cut()/body_was_cut(): {:?}",
                self.status,
                self.body.len(),
                String::from_utf8_lossy(&self.body[..self.body.len().min(2000)])
            );
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics if it was cut short or is not JSON.
    pub fn json(&self) -> serde_json::Value {
        self.assert_whole();
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The problem type slug of an application/problem+json body.
    pub fn problem(&self) -> String {
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{self:?}");
        let j = self.json();
        j["type"]
            .as_str()
            .unwrap_or_else(|| panic!("no problem type: {j}"))
            .trim_start_matches("urn:faas:problem:")
            .to_owned()
    }
}

impl Daemon {
    /// Starts a daemon serving `functions` (name, toml text); extra faas.toml lines allowed.
    pub fn start(functions: &[(&str, &str)]) -> Daemon {
        Self::start_opts(functions, Options::default())
    }

    pub fn start_with(functions: &[(&str, &str)], config_extra: &str) -> Daemon {
        Self::start_opts(functions, Options { config_extra, ..Options::default() })
    }

    pub fn start_env(functions: &[(&str, &str)], config_extra: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_opts(functions, Options { config_extra, env, ..Default::default() })
    }

    /// Starts a daemon with every option spelled out (a private uid range, for one).
    pub fn start_opts(functions: &[(&str, &str)], opts: Options) -> Daemon {
        let dir = tempfile::Builder::new().prefix("faas-test-").tempdir().unwrap();
        let fdir = dir.path().join("functions");
        std::fs::create_dir(&fdir).unwrap();
        for (name, text) in functions {
            std::fs::write(fdir.join(format!("{name}.toml")), text).unwrap();
        }
        let config = dir.path().join("faas.toml");
        let uids = opts.uids.unwrap_or_else(uid_range);
        let config_extra = opts.config_extra;
        std::fs::write(
            &config,
            format!(
                "{}state_dir = \"state\"\ndeploy.dir = \"deploy\"\nwrappers_dir = \"{}\"\nuid_base = {}\nuid_count = {}\n{config_extra}\n",
                if config_extra.contains("functions_dir") { "" } else { "functions_dir = \"functions\"\n" },
                repo().join("wrappers").display(),
                uids.0,
                uids.1
            ),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let admin_port = admin.local_addr().unwrap().port();
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let log = dir.path().join("daemon.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let (fd3, fd4) = (listener.as_raw_fd(), admin.as_raw_fd());
        let mut cmd = Command::new(opts.exe.unwrap_or(Path::new(env!("CARGO_BIN_EXE_faas"))));
        cmd.args(["--config", config.to_str().unwrap(), "serve"])
            .env("LISTEN_FDS", "2")
            .env("LISTEN_FDNAMES", "http:admin")
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("LISTEN_PID")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        for (k, v) in opts.env {
            cmd.env(k, v);
        }
        // Between fork and exec this only calls fcntl and dup2, which are async-signal-safe, on
        // fds that stay open in the parent until spawn returns.
        let move_listeners = move || {
            // Park both above the target range first: either may already sit at 3 or 4.
            // SAFETY: fcntl on an fd the parent keeps open.
            let parked3 = unsafe { nix::libc::fcntl(fd3, nix::libc::F_DUPFD_CLOEXEC, 100) };
            // SAFETY: as above.
            let parked4 = unsafe { nix::libc::fcntl(fd4, nix::libc::F_DUPFD_CLOEXEC, 100) };
            for (from, to) in [parked3, parked4].into_iter().zip([3, 4]) {
                // SAFETY: dup2 onto 3 and 4, which nothing in this child uses.
                if from < 0 || unsafe { nix::libc::dup2(from, to) } < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        };
        // SAFETY: the hook is async-signal-safe (see above).
        unsafe { cmd.pre_exec(move_listeners) };
        let child = cmd.spawn().expect("start faas");
        drop((listener, admin));
        let mut d = Daemon { child, dir, port, admin_port, log, notify, messages: Vec::new(), uids };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            d.poll_notify();
            if d.messages.iter().any(|m| m == "READY=1") {
                break;
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("faas exited before READY=1 ({status}):\n{}", d.logs());
            }
            assert!(Instant::now() < deadline, "no READY=1 within 20 s:\n{}", d.logs());
        }
        d
    }

    /// Reads whatever sd_notify messages arrived (waits up to 200 ms for one).
    pub fn poll_notify(&mut self) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.notify.recv(&mut buf) {
            self.messages.extend(String::from_utf8_lossy(&buf[..n]).lines().map(str::to_owned));
            self.notify.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        }
        self.notify.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    }

    /// Waits up to `limit` for the daemon to exit; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.poll_notify();
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn functions_dir(&self) -> PathBuf {
        self.dir.path().join("functions")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Where deployed versions go (`deploy.dir`, beside the state directory).
    pub fn deploy_dir(&self) -> PathBuf {
        self.dir.path().join("deploy")
    }

    pub fn write_function(&self, name: &str, text: &str) {
        // Write and rename, as an operator's tools do, so a lookup never sees half a file.
        let tmp = self.functions_dir().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.functions_dir().join(format!("{name}.toml"))).unwrap();
    }

    /// The daemon's log as far as it has written whole lines: a line read while it is being
    /// written (a REPORT is logged just after its response went out) has no newline yet and is
    /// left out, or a test matching it would see half of it.
    pub fn logs(&self) -> String {
        let mut log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.truncate(log.rfind('\n').map_or(0, |i| i + 1));
        log
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Resp {
        request_to(&self.url(path), method, body, &[])
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, b"")
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Resp {
        self.request("POST", path, body)
    }

    pub fn admin_get(&self, path: &str) -> Resp {
        request_to(&format!("http://127.0.0.1:{}{path}", self.admin_port), "GET", b"", &[])
    }

    /// The processes of this daemon's sandboxes.
    pub fn sandbox_processes(&self) -> BTreeSet<u32> {
        let kept = self.zygotes_and_spares();
        descendants(self.pid()).into_iter().filter(|p| !kept.contains(p)).collect()
    }

    /// The zygotes, and the spares they made ahead (a child of a zygote named `faas-spare`,
    /// waiting for its request): both live as long as their function version is warm.
    pub fn zygotes_and_spares(&self) -> BTreeSet<u32> {
        let mut kept = self.zygotes();
        kept.extend(self.spares());
        kept
    }

    /// Sandboxes a zygote made ahead, waiting for a request.
    pub fn spares(&self) -> BTreeSet<u32> {
        let zygotes = self.zygotes();
        all_processes()
            .into_iter()
            .filter(|p| zygotes.contains(&p.ppid))
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{}/comm", p.pid)).is_ok_and(|c| c.trim() == "faas-spare")
            })
            .map(|p| p.pid)
            .collect()
    }

    /// The inits of live sandboxes: the daemon's children (cold) and its zygotes' (warm).
    pub fn sandbox_inits(&self) -> BTreeSet<u32> {
        let me = self.pid();
        let zygotes = self.zygotes();
        let spares = self.spares();
        all_processes()
            .into_iter()
            .filter(|p| (p.ppid == me && !zygotes.contains(&p.pid)) || zygotes.contains(&p.ppid))
            .filter(|p| !spares.contains(&p.pid))
            .map(|p| p.pid)
            .collect()
    }

    /// The daemon's zygotes (warm Python functions): its children with `FAAS_ZYGOTE` in their
    /// environment. They live as long as their function version is warm, so they are no leak.
    pub fn zygotes(&self) -> BTreeSet<u32> {
        let me = self.pid();
        all_processes()
            .into_iter()
            .filter(|p| p.ppid == me)
            .filter(|p| {
                std::fs::read(format!("/proc/{}/environ", p.pid))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e.starts_with(b"FAAS_ZYGOTE=")))
            })
            .map(|p| p.pid)
            .collect()
    }

    /// Waits (10 s at most) until `n` sandboxes are alive at once.
    pub fn wait_sandboxes(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.sandbox_inits().len() < n {
            self.assert_alive();
            assert!(Instant::now() < deadline, "{n} sandboxes never ran at once:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's open fds, not counting the network namespaces it keeps for reuse (a pool
    /// that grows to the highest concurrency seen; `netns_fds` counts those).
    /// Nor those it holds per live zygote and per spare (`ZYGOTE_FDS`, `SPARE_FDS`).
    pub fn fd_count(&self) -> usize {
        let all = self.fd_links().iter().filter(|l| !l.starts_with("net:[")).count();
        all.saturating_sub(ZYGOTE_FDS * self.zygotes().len() + SPARE_FDS * self.spares().len())
    }

    /// How many network namespaces the daemon holds open (its pool and running sandboxes).
    pub fn netns_fds(&self) -> usize {
        self.fd_links().iter().filter(|l| l.starts_with("net:[")).count()
    }

    /// What a leak message needs to name the leak: every fd of the daemon with its target, and
    /// the zygotes and spares whose fds `fd_count` left out, with their children.
    pub fn fd_report(&self) -> String {
        let mut out = String::from("daemon fds:\n");
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) {
            let mut fds: Vec<(u32, String)> = dir
                .flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_str()?.parse().ok()?;
                    let l = std::fs::read_link(e.path()).ok()?;
                    Some((n, l.to_string_lossy().into_owned()))
                })
                .collect();
            fds.sort();
            for (n, l) in fds {
                out += &format!("  {n} -> {l}\n");
            }
        }
        for z in self.zygotes() {
            out += &format!("zygote {z}; its children:");
            for p in all_processes().into_iter().filter(|p| p.ppid == z) {
                let comm = std::fs::read_to_string(format!("/proc/{}/comm", p.pid)).unwrap_or_default();
                out += &format!(" {} ({})", p.pid, comm.trim());
            }
            out += "\n";
        }
        out
    }

    /// Where each of the daemon's fds points; panics if the daemon is dead or /proc unreadable.
    fn fd_links(&self) -> Vec<String> {
        self.assert_alive();
        match std::fs::read_dir(format!("/proc/{}/fd", self.pid())) {
            Ok(dir) => dir
                .flatten()
                .map(|e| std::fs::read_link(e.path()).map(|l| l.to_string_lossy().into_owned()).unwrap_or_default())
                .collect(),
            Err(e) => panic!("cannot count the daemon's fds in /proc/{}/fd ({e}):\n{}", self.pid(), self.logs()),
        }
    }

    /// Whether the daemon process still runs: not reaped, and not a zombie (a signal 0 `kill`
    /// succeeds on a zombie, so that is no test).
    pub fn alive(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid())) {
            Ok(stat) => stat
                .rfind(") ")
                .and_then(|i| stat[i + 2..].chars().next())
                .is_some_and(|state| state != 'Z' && state != 'X'),
            Err(_) => false,
        }
    }

    /// Panics with the log unless the daemon still runs.
    pub fn assert_alive(&self) {
        assert!(self.alive(), "the daemon (pid {}) has died:\n{}", self.pid(), self.logs());
    }

    /// Waits until no sandbox process is left below the daemon and the fd count is back to
    /// `fds`; fails if the daemon died meanwhile. Only sees the daemon's descendants: add
    /// `wait_gone_from_host` for processes that may have left its tree.
    pub fn wait_quiet(&self, fds: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let procs = self.sandbox_processes();
            let now = self.fd_count();
            if procs.is_empty() && now <= fds {
                self.assert_alive();
                return;
            }
            assert!(
                Instant::now() < deadline,
                "left behind: processes {procs:?}, fds {now} > {fds}\n{}\n{}",
                self.fd_report(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (10 s at most) until no process anywhere on the host runs with one of this
    /// daemon's sandbox uids; kills what is left and panics otherwise.
    pub fn wait_gone_from_host(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = host_processes(self.uids);
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                for p in &left {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p.pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                panic!("processes with this daemon's sandbox uids outlived their requests (killed now): {left:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The REPORT line of invocation `id`, waiting for it (10 s at most): it is written after
    /// teardown, so the response can beat it.
    pub fn report_line(&self, id: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if let Some(line) = logs.lines().find(|l| l.contains("REPORT ") && l.contains(id)) {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "no REPORT line for {id}:\n{logs}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (10 s at most) until the log holds at least `n` REPORT lines; returns how many.
    pub fn wait_reports(&self, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let count = self.logs().lines().filter(|l| l.contains("REPORT ")).count();
            if count >= n || Instant::now() > deadline {
                return count;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's layers summary (`namespaces=enforced … cgroup=missing`) from `/_/functions`.
    pub fn layers(&self) -> String {
        let r = self.admin_get("/_/functions");
        assert_eq!(r.status, 200, "/_/functions: {}", r.text_allow_cut());
        r.json()["layers"].as_str().unwrap_or_else(|| panic!("no layers in /_/functions: {}", r.text())).to_owned()
    }

    /// The `inv-*` request cgroups left beside the daemon's own cgroup (delegated mode).
    pub fn request_cgroups(&self) -> Vec<PathBuf> {
        let own = std::fs::read_to_string(format!("/proc/{}/cgroup", self.pid())).unwrap_or_default();
        let Some(rel) = own.lines().find_map(|l| l.strip_prefix("0::")) else { return Vec::new() };
        let own = Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'));
        let Some(tree) = own.parent() else { return Vec::new() };
        std::fs::read_dir(tree)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("inv-"))
            .map(|e| e.path())
            .collect()
    }
}

/// The panic lines in a daemon log: Rust prints `thread 'NAME' panicked at FILE:LINE:COL:`.
/// Function stderr is prefixed `<6>NAME[ID]: `, so a handler cannot fake one.
pub fn panic_lines(logs: &str) -> Vec<&str> {
    logs.lines().filter(|l| l.starts_with("thread '") && l.contains(" panicked at ")).collect()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut exited = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A panic in a background task (watchdog, notify, teardown) leaves the responses
        // looking right; the log still shows it. Not while unwinding: one panic is enough.
        if !std::thread::panicking() {
            let logs = self.logs();
            let panics = panic_lines(&logs);
            assert!(panics.is_empty(), "the daemon panicked during this test: {panics:?}\n{logs}");
        }
    }
}

/// Sends one request on a fresh connection and returns whatever came back, with the reason
/// in `body_error` if the body did not end cleanly (ureq reports a chunked body without its
/// last chunk as an error, and a stall past the 60 s agent timeout as one too).
pub fn request_to(url: &str, method: &str, body: &[u8], headers: &[(&str, &str)]) -> Resp {
    const MAX_BODY: u64 = 64 << 20;
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).redirects(0).build();
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = if body.is_empty() && method == "GET" { req.call() } else { req.send_bytes(body) };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let headers =
        resp.headers_names().into_iter().map(|n| (n.clone(), resp.header(&n).unwrap_or("").to_owned())).collect();
    let mut body = Vec::new();
    let mut body_error = match resp.into_reader().take(MAX_BODY + 1).read_to_end(&mut body) {
        Ok(_) => None,
        Err(e) => Some(format!("{:?}: {e}", e.kind())),
    };
    if body.len() as u64 > MAX_BODY {
        body.truncate(MAX_BODY as usize);
        body_error.get_or_insert_with(|| "larger than the harness's 64 MiB: reading stopped".into());
    }
    Resp { status, headers, body, body_error }
}

/// One request on a raw connection, read byte for byte with `READ_TIMEOUT` per read: for
/// what ureq hides (chunk boundaries, the last chunk, a body that streams while the handler
/// still runs). A read that times out fails the test: a stalled response is never taken for
/// one that was cut short.
pub struct RawConn {
    stream: TcpStream,
    /// Everything received so far, head included.
    pub raw: Vec<u8>,
    what: String,
}

impl RawConn {
    /// Sends `request` (a whole HTTP/1.1 request) to 127.0.0.1:`port`.
    pub fn send(port: u16, request: &[u8]) -> RawConn {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.write_all(request).unwrap();
        let what =
            String::from_utf8_lossy(&request[..request.iter().position(|&b| b == b'\r').unwrap_or(request.len())])
                .into_owned();
        RawConn { stream, raw: Vec::new(), what }
    }

    /// `GET path` with `Connection: close` and `extra` header lines (each ending in \r\n).
    pub fn get(port: u16, path: &str, extra: &str) -> RawConn {
        RawConn::send(port, format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n").as_bytes())
    }

    /// One read: Some(n) bytes, or None at EOF or a reset. Panics on a timeout.
    fn read_some(&mut self) -> Option<usize> {
        let mut buf = [0u8; 65536];
        match self.stream.read(&mut buf) {
            Ok(0) => None,
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                Some(n)
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => None,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => panic!(
                "{}: stalled, no byte for {READ_TIMEOUT:?} (a hang, not a cut): got {:?}",
                self.what,
                String::from_utf8_lossy(&self.raw[..self.raw.len().min(2000)])
            ),
            Err(e) => panic!("{}: read failed: {e}", self.what),
        }
    }

    /// Reads until `needle` has arrived; panics if the connection ends or stalls first.
    pub fn read_until(&mut self, needle: &str) {
        while !self.raw.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            if self.read_some().is_none() {
                panic!(
                    "{}: the connection ended before {needle:?}: {:?}",
                    self.what,
                    String::from_utf8_lossy(&self.raw)
                );
            }
        }
    }

    /// Reads until the daemon closes the connection, then parses what came.
    pub fn finish(mut self) -> RawResponse {
        while self.read_some().is_some() {}
        parse_response(&self.raw)
    }
}

/// A response as it came over the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The head, lower-cased.
    pub head: String,
    /// The body, de-chunked if it was chunked.
    pub body: Vec<u8>,
    /// Whether the body ended as a whole one: a chunked body with its terminating zero-length
    /// chunk, or a `Content-Length` body with all its bytes.
    pub complete: bool,
}

impl RawResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses a raw HTTP/1.1 response (head, then a chunked or Content-Length body).
pub fn parse_response(raw: &[u8]) -> RawResponse {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)))
        + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let status: u16 =
        head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {head}"));
    let rest = &raw[head_end..];
    if !head.contains("\r\ntransfer-encoding: chunked\r\n") {
        let length =
            head.lines().find_map(|l| l.strip_prefix("content-length:")).map(|v| v.trim().parse::<usize>().unwrap());
        return RawResponse {
            status,
            head: head.clone(),
            body: rest.to_vec(),
            complete: length.is_some_and(|n| n == rest.len()),
        };
    }
    let (mut body, mut at, mut complete) = (Vec::new(), 0, false);
    while let Some(eol) = rest[at..].windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&rest[at..at + eol]).unwrap().trim(), 16).unwrap();
        at += eol + 2;
        if size == 0 {
            complete = rest[at..].starts_with(b"\r\n");
            break;
        }
        let end = (at + size).min(rest.len());
        body.extend_from_slice(&rest[at..end]);
        if end < at + size {
            break;
        }
        at = end + 2;
    }
    RawResponse { status, head, body, complete }
}

/// One process as /proc shows it.
#[derive(Debug, Clone)]
pub struct HostProcess {
    pub pid: u32,
    pub ppid: u32,
    /// Real, effective, saved and file-system uid.
    pub uids: [u32; 4],
    pub comm: String,
}

/// Every process on the host (those that vanish while we look are left out).
pub fn all_processes() -> Vec<HostProcess> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else { continue };
        let field = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_default().to_owned();
        let mut uids = [u32::MAX; 4];
        for (slot, v) in uids.iter_mut().zip(field("Uid:").split_whitespace()) {
            *slot = v.parse().unwrap_or(u32::MAX);
        }
        let Ok(ppid) = field("PPid:").trim().parse() else { continue };
        out.push(HostProcess { pid, ppid, uids, comm: field("Name:").trim().to_owned() });
    }
    out
}

/// Processes anywhere on the host with any of their uids in `range` (`(base, count)`): the
/// host-wide look that also finds what escaped the daemon's process tree (reparented to the
/// host's init or a subreaper), unlike `descendants`.
pub fn host_processes(range: (u32, u32)) -> Vec<HostProcess> {
    let within = |u: u32| u >= range.0 && u - range.0 < range.1;
    all_processes().into_iter().filter(|p| p.uids.iter().any(|&u| within(u)) && !is_spare(p.pid)).collect()
}

/// Whether `pid` is a spare: a sandbox a zygote made ahead (named `faas-spare`, its parent a
/// zygote), which waits for a request for as long as its function version is warm.
pub fn is_spare(pid: u32) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ")?.1.split_whitespace().nth(1)?.parse::<u32>().ok());
    comm.trim() == "faas-spare"
        && ppid.is_some_and(|pp| {
            std::fs::read(format!("/proc/{pp}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e.starts_with(b"FAAS_ZYGOTE=")))
        })
}

/// Every process below `ancestor` (its sandboxes, and anything they left behind: a
/// daemonized grandchild is reparented inside its pid namespace, so it stays below).
pub fn descendants(ancestor: u32) -> BTreeSet<u32> {
    let parent: std::collections::HashMap<u32, u32> = all_processes().into_iter().map(|p| (p.pid, p.ppid)).collect();
    parent
        .keys()
        .copied()
        .filter(|&p| {
            let mut cur = p;
            for _ in 0..64 {
                match parent.get(&cur) {
                    Some(&pp) if pp == ancestor => return true,
                    Some(&pp) if pp > 1 => cur = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

static NEXT_RANGE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A uid range of its own (1024 wide) for each daemon a test process starts, so that
/// parallel tests never share a sandbox uid (RLIMIT_NPROC counts per uid); above the daemon's
/// default range, so `faas` run with defaults never shares one either.
pub fn uid_range() -> (u32, u32) {
    let slot = (std::process::id() % 64) * 64 + NEXT_RANGE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 64;
    (HARNESS_UID_BASE + slot * 1024, 1024)
}

/// A fresh private range of `count` uids (at most 1024), for `Options::uids` or a faas.toml
/// of a test's own (`faas invoke --config`).
pub fn private_uids(count: u32) -> (u32, u32) {
    assert!((1..=1024).contains(&count), "private_uids: 1 to 1024 uids, not {count}");
    (uid_range().0, count)
}

/// The kernel release that brought each Landlock ABI (landlock(7)); index = ABI.
const LANDLOCK_KERNELS: [&str; 8] = ["-", "5.13", "5.19", "6.2", "6.7", "6.10", "6.12", "6.15"];

/// The Landlock ABI the daemon found. `/_/functions` gives the state (`landlock=enforced` is
/// every rule faas asks for, ABI ≥ 6; `missing` is none) and the start-up log the number
/// (`landlock ABI N: …`, in the layer line when partial and in every function's load line).
pub fn landlock_abi(d: &Daemon) -> u32 {
    let layers = d.layers();
    let state = layers
        .split(' ')
        .find_map(|w| w.strip_prefix("landlock="))
        .unwrap_or_else(|| panic!("no landlock= in the layers: {layers}"))
        .to_owned();
    let logs = d.logs();
    let logged = logs
        .split("landlock ABI ")
        .skip(1)
        .find_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u32>().ok());
    match (state.as_str(), logged) {
        ("missing", _) => 0,
        ("enforced", Some(n)) if n >= 6 => n,
        ("enforced", None) => 6,
        ("partial", Some(n)) if (1..6).contains(&n) => n,
        _ => {
            panic!("cannot tell the Landlock ABI: the layers say landlock={state}, the log says ABI {logged:?}\n{logs}")
        }
    }
}

/// True if the daemon's kernel gives Landlock ABI `abi` or newer. Otherwise panics with what
/// is needed ("needs Landlock ABI 4 (Linux ≥ 6.7)"), unless `FAAS_TEST_SKIP` names
/// `landlock-abi`: then it prints SKIPPED with the reason and returns false, and the test
/// returns at once.
pub fn require_landlock_abi(d: &Daemon, abi: u32) -> bool {
    let have = landlock_abi(d);
    if have >= abi {
        return true;
    }
    let kernel = LANDLOCK_KERNELS.get(abi as usize).copied().unwrap_or("?");
    let why = format!("needs Landlock ABI {abi} (Linux ≥ {kernel}); this kernel gives ABI {have}");
    if skip_requested("landlock-abi") {
        eprintln!("SKIPPED: {why} (FAAS_TEST_SKIP=landlock-abi)");
        return false;
    }
    panic!("{why}: run it on a newer kernel, or set FAAS_TEST_SKIP=landlock-abi to skip the tests that need it");
}

/// How the daemon limits a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// No delegated cgroup: rlimits only; every REPORT says ` cgroup=none`.
    None,
    /// A delegated cgroup v2 subtree: an `inv-ID` cgroup per request; REPORTs carry its counters.
    Delegated,
}

/// The cgroup mode, from the newest REPORT line (` cgroup=none`, or the cgroup counters), or
/// from the layers summary (`cgroup=missing|enforced`) before any request.
pub fn cgroup_mode(d: &Daemon) -> CgroupMode {
    let logs = d.logs();
    if let Some(line) = logs.lines().rev().find(|l| l.contains("REPORT ")) {
        return if line.contains(" cgroup=none ") {
            CgroupMode::None
        } else if line.contains(" pids_peak=") {
            CgroupMode::Delegated
        } else {
            panic!("this REPORT has neither cgroup=none nor the cgroup counters: {line}")
        };
    }
    let layers = d.layers();
    match layers.split(' ').find_map(|w| w.strip_prefix("cgroup=")) {
        Some("missing") => CgroupMode::None,
        Some("enforced") => CgroupMode::Delegated,
        other => panic!("cannot tell the cgroup mode: cgroup={other:?} in the layers {layers}"),
    }
}

/// True if the daemon runs in cgroup mode `mode`. Otherwise panics naming both modes, unless
/// `FAAS_TEST_SKIP` names `cgroup-mode`: then it prints SKIPPED and returns false.
pub fn require_cgroup_mode(d: &Daemon, mode: CgroupMode) -> bool {
    let have = cgroup_mode(d);
    if have == mode {
        return true;
    }
    let why = match mode {
        CgroupMode::None => {
            "needs the cgroup-less fallback (cgroup=none: no memory, pids and cpu in the test's cgroup), \
                              but the daemon found a delegated cgroup"
                .to_owned()
        }
        CgroupMode::Delegated => {
            "needs a delegated cgroup v2 (memory, pids, cpu; run under systemd with Delegate=yes or set \
                                  cgroup_root), but the daemon runs with cgroup=none"
                .to_owned()
        }
    };
    if skip_requested("cgroup-mode") {
        eprintln!("SKIPPED: {why} (FAAS_TEST_SKIP=cgroup-mode)");
        return false;
    }
    panic!("{why}; set FAAS_TEST_SKIP=cgroup-mode to skip the tests that need the other mode");
}

/// A host directory a sandbox sees read-only at the same path (`[sandbox] read_only`), for
/// files the test controls: a marker a handler waits on instead of a sleep, or data to read.
/// Under /var/tmp: a read_only path may not cover /tmp, which is the sandbox's own.
pub struct HostDir {
    dir: tempfile::TempDir,
}

impl HostDir {
    pub fn new() -> HostDir {
        let dir = tempfile::Builder::new().prefix("faas-test-ro-").tempdir_in("/var/tmp").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        HostDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `[sandbox]` with this directory in `read_only`, for a function file.
    pub fn sandbox_toml(&self) -> String {
        format!("[sandbox]\nread_only = [\"{}\"]\n", self.path().display())
    }

    /// Creates the marker `name`.
    pub fn set(&self, name: &str) {
        std::fs::write(self.path().join(name), b"").unwrap();
    }

    /// Removes the marker `name`: a handler waiting on it goes on.
    pub fn clear(&self, name: &str) {
        std::fs::remove_file(self.path().join(name)).unwrap();
    }

    /// A CGI script that waits until the marker `name` exists (at most `seconds`, a hang
    /// guard), then answers "done".
    pub fn sh_wait_for_then_done(&self, name: &str, seconds: u32) -> String {
        format!(
            "i=0; while [ ! -e {}/{name} ] && [ $i -lt {} ]; do sleep 0.05; i=$((i+1)); done; printf 'Content-Type: text/plain\\n\\ndone'",
            self.path().display(),
            seconds * 20
        )
    }

    /// A sh loop that waits while the marker `name` exists, 20 s at most (a hang guard).
    pub fn sh_wait_while(&self, name: &str) -> String {
        format!(
            "i=0; while [ -e '{}/{name}' ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done",
            self.path().display()
        )
    }
}

impl Default for HostDir {
    fn default() -> Self {
        Self::new()
    }
}

/// The host's mount table, for before/after comparisons.
pub fn host_mounts() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap()
}

/// Entries under `dir`, recursively (names only), for leftovers checks.
pub fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.insert(p);
        }
    }
    out
}

/// A `sh` function from inline source (a CGI script).
pub fn sh(script: &str) -> String {
    format!("runtime = \"sh\"\nsource = '''\n{script}\n'''\n")
}

/// A `sh` function with extra TOML after the source.
pub fn sh_with(script: &str, extra: &str) -> String {
    format!("runtime = \"sh\"\nsource = '''\n{script}\n'''\n{extra}\n")
}

/// A python function from inline source.
pub fn python(source: &str, extra: &str) -> String {
    format!("runtime = \"python\"\nsource = '''\n{source}\n'''\n{extra}\n")
}

/// Function `name` as the admin `/_/functions` shows it.
pub fn function_info(d: &Daemon, name: &str) -> serde_json::Value {
    let r = d.admin_get("/_/functions");
    assert_eq!(r.status, 200, "/_/functions: {}", r.text_allow_cut());
    let j = r.json();
    j["functions"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no function {name} in /_/functions: {j}"))
}

/// The `zygote` object of warm function `name` in `/_/functions` (`state`, `pid`, `error`, …).
pub fn zygote_info(d: &Daemon, name: &str) -> serde_json::Value {
    function_info(d, name)["zygote"].clone()
}

/// Waits (30 s at most, a hang guard: a zygote imports before it is ready) until the zygote of
/// `name` is in `state` (`ready`, `starting`, `cold`, `failed`); returns its `zygote` object.
/// The zygote is started by a request: send one first.
pub fn wait_zygote(d: &Daemon, name: &str, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        d.assert_alive();
        let z = zygote_info(d, name);
        if z["state"] == state {
            return z;
        }
        assert!(Instant::now() < deadline, "the zygote of {name} is not {state} within 30 s: {z}\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the zygote of `name` is ready (see `wait_zygote`); its pid. Fails at once, with
/// the reason, if the zygote failed.
pub fn wait_warm(d: &Daemon, name: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        d.assert_alive();
        let z = zygote_info(d, name);
        match z["state"].as_str() {
            Some("ready") => {
                return z["pid"].as_u64().and_then(|p| u32::try_from(p).ok()).unwrap_or_else(|| panic!("no pid: {z}"))
            }
            Some("failed") => panic!("the zygote of {name} failed: {z}\n{}", d.logs()),
            Some("starting" | "cold") => {}
            _ => panic!("{name} has no zygote (not a warm function?): {z}"),
        }
        assert!(Instant::now() < deadline, "the zygote of {name} is not ready within 30 s: {z}\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The daemon's zygotes as processes: its children whose environment names a function and
/// version in `FAAS_ZYGOTE` (zygote.rs), as `(pid, "NAME VERSION")`.
pub fn zygote_processes(d: &Daemon) -> Vec<(u32, String)> {
    let me = d.pid();
    all_processes()
        .into_iter()
        .filter(|p| p.ppid == me)
        .filter_map(|p| {
            let env = std::fs::read(format!("/proc/{}/environ", p.pid)).ok()?;
            let which = env.split(|&b| b == 0).find_map(|e| e.strip_prefix(b"FAAS_ZYGOTE="))?;
            Some((p.pid, String::from_utf8_lossy(which).into_owned()))
        })
        .collect()
}
