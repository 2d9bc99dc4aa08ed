//! Starts the real `faas` binary the way systemd does: a 127.0.0.1:0 socket as fd 3
//! (LISTEN_FDS=1, and an `admin` one as fd 4), NOTIFY_SOCKET on a temp datagram socket, and
//! waits for READY=1. Each test gets its own functions directory, state directory and daemon.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Read;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
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

/// Fails with the reason when not root, rather than passing without testing anything.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test builds real sandboxes and needs root: sudo -E cargo test -- --include-ignored"
    );
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
}

/// A response, whatever its status.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// The problem type slug of an application/problem+json body.
    pub fn problem(&self) -> String {
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{self:?}");
        let j = self.json();
        j["type"].as_str().unwrap().trim_start_matches("urn:faas:problem:").to_owned()
    }
}

impl Daemon {
    /// Starts a daemon serving `functions` (name, toml text); extra faas.toml lines allowed.
    pub fn start(functions: &[(&str, &str)]) -> Daemon {
        Self::start_with(functions, "")
    }

    pub fn start_with(functions: &[(&str, &str)], config_extra: &str) -> Daemon {
        Self::start_env(functions, config_extra, &[])
    }

    pub fn start_env(functions: &[(&str, &str)], config_extra: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::Builder::new().prefix("faas-test-").tempdir().unwrap();
        let fdir = dir.path().join("functions");
        std::fs::create_dir(&fdir).unwrap();
        for (name, text) in functions {
            std::fs::write(fdir.join(format!("{name}.toml")), text).unwrap();
        }
        let config = dir.path().join("faas.toml");
        let uids = uid_range();
        std::fs::write(
            &config,
            format!(
                "{}state_dir = \"state\"\nwrappers_dir = \"{}\"\nuid_base = {}\nuid_count = {}\n{config_extra}\n",
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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faas"));
        cmd.args(["--config", config.to_str().unwrap(), "serve"])
            .env("LISTEN_FDS", "2")
            .env("LISTEN_FDNAMES", "http:admin")
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("LISTEN_PID")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: between fork and exec this only calls fcntl and dup2, which are
        // async-signal-safe, on fds that stay open in the parent until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                // Park both above the target range first: either may already sit at 3 or 4.
                let parked = [
                    nix::libc::fcntl(fd3, nix::libc::F_DUPFD_CLOEXEC, 100),
                    nix::libc::fcntl(fd4, nix::libc::F_DUPFD_CLOEXEC, 100),
                ];
                for (from, to) in parked.into_iter().zip([3, 4]) {
                    if from < 0 || nix::libc::dup2(from, to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start faas");
        drop((listener, admin));
        let mut d = Daemon { child, dir, port, admin_port, log, notify, messages: Vec::new() };
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

    pub fn write_function(&self, name: &str, text: &str) {
        // Write and rename, as an operator's tools do, so a lookup never sees half a file.
        let tmp = self.functions_dir().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.functions_dir().join(format!("{name}.toml"))).unwrap();
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
        descendants(self.pid())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's open fds, not counting the network namespaces it keeps for reuse (a pool
    /// that grows to the highest concurrency seen; `netns_fds` counts those).
    pub fn fd_count(&self) -> usize {
        self.fd_links().iter().filter(|l| !l.starts_with("net:[")).count()
    }

    /// How many network namespaces the daemon holds open (its pool and running sandboxes).
    pub fn netns_fds(&self) -> usize {
        self.fd_links().iter().filter(|l| l.starts_with("net:[")).count()
    }

    fn fd_links(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) else { return Vec::new() };
        dir.flatten().map(|e| std::fs::read_link(e.path()).map(|l| l.to_string_lossy().into_owned()).unwrap_or_default()).collect()
    }

    /// Waits until no sandbox process is left and the fd count is back to `fds`.
    pub fn wait_quiet(&self, fds: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let procs = self.sandbox_processes();
            let now = self.fd_count();
            if procs.is_empty() && now <= fds {
                return;
            }
            assert!(Instant::now() < deadline, "left behind: processes {procs:?}, fds {now} > {fds}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one request on a fresh connection and returns whatever came back.
pub fn request_to(url: &str, method: &str, body: &[u8], headers: &[(&str, &str)]) -> Resp {
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
    let headers = resp.headers_names().into_iter().map(|n| (n.clone(), resp.header(&n).unwrap_or("").to_owned())).collect();
    let mut body = Vec::new();
    let _ = resp.into_reader().take(64 << 20).read_to_end(&mut body);
    Resp { status, headers, body }
}

/// Every process below `ancestor` (its sandboxes, and anything they left behind: a
/// daemonized grandchild is reparented inside its pid namespace, so it stays below).
pub fn descendants(ancestor: u32) -> BTreeSet<u32> {
    let mut parent = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // The comm field may hold spaces and parentheses; ppid follows the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        if let Some(ppid) = rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok()) {
            parent.insert(pid, ppid);
        }
    }
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

/// A uid range of its own for each daemon a test process starts, so that parallel tests
/// never share a sandbox uid (RLIMIT_NPROC counts per uid).
fn uid_range() -> (u32, u32) {
    let slot = (std::process::id() % 64) * 64 + NEXT_RANGE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 64;
    (UID_BASE + slot * 1024, 1024)
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
