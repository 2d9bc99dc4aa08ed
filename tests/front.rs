//! The front end under pressure and at its edges: connection and body caps under a low
//! open-files limit, slow bodies against a function's concurrency, the global and per-function
//! 429s, response headers that would act on the whole origin, HEAD, `faas serve --listen`,
//! and a socket that outlives the daemon (as systemd keeps it) across an idle exit.
//!
//! Its own harness (`Front`) starts the binary where `common::Daemon` cannot: under a given
//! RLIMIT_NOFILE, with `--listen` instead of LISTEN_FDS, or on a listening socket the test keeps.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{require_root, sh, sh_with, Daemon, HostDir};

/// Raw reads never wait longer than this: a hang is a failure, not a stall of `cargo test`.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How the binary gets its socket.
enum Socket<'a> {
    /// A listener the test keeps (as systemd does), passed as fd 3 with LISTEN_FDS.
    Kept(&'a TcpListener),
    /// `faas serve --listen 127.0.0.1:PORT`, no LISTEN_FDS at all.
    Listen(u16),
}

/// A daemon started by this file's own harness.
struct Front {
    child: Child,
    _dir: tempfile::TempDir,
    port: u16,
    log: PathBuf,
    notify: UnixDatagram,
}

impl Front {
    fn start(functions: &[(&str, &str)], config_extra: &str, socket: Socket, nofile: Option<u64>) -> Front {
        let dir = tempfile::Builder::new().prefix("faas-front-").tempdir().unwrap();
        let fdir = dir.path().join("functions");
        std::fs::create_dir(&fdir).unwrap();
        for (name, text) in functions {
            std::fs::write(fdir.join(format!("{name}.toml")), text).unwrap();
        }
        // A uid range of its own, past every range tests/common hands out (64 × 64 slots of
        // 1024 from the base), so this harness never shares a sandbox uid with theirs.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let slot = (std::process::id() % 64) * 16 + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 16;
        let uid_base = common::UID_BASE + 4096 * 1024 + slot * 1024;
        let config = dir.path().join("faas.toml");
        std::fs::write(
            &config,
            format!(
                "functions_dir = \"functions\"\nstate_dir = \"state\"\nwrappers_dir = \"{}\"\nuid_base = {uid_base}\nuid_count = 1024\n{config_extra}\n",
                common::repo().join("wrappers").display()
            ),
        )
        .unwrap();
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let log = dir.path().join("daemon.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faas"));
        cmd.args(["--config", config.to_str().unwrap(), "serve"])
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("JOURNAL_STREAM")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        let (port, fd3) = match socket {
            Socket::Kept(l) => {
                cmd.env("LISTEN_FDS", "1").env("LISTEN_FDNAMES", "http");
                (l.local_addr().unwrap().port(), Some(l.as_raw_fd()))
            }
            Socket::Listen(port) => {
                cmd.args(["--listen", &format!("127.0.0.1:{port}")]);
                (port, None)
            }
        };
        let limit = nofile.map(|n| nix::libc::rlimit { rlim_cur: n, rlim_max: n });
        // Between fork and exec this calls only fcntl, dup2 and setrlimit, which are
        // async-signal-safe, on an fd and a value that stay valid in the parent until spawn
        // returns.
        let hook = move || {
            if let Some(fd) = fd3 {
                // SAFETY: fcntl on an fd the parent keeps open.
                let parked = unsafe { nix::libc::fcntl(fd, nix::libc::F_DUPFD_CLOEXEC, 100) };
                // SAFETY: dup2 onto 3, which nothing in this child uses.
                if parked < 0 || unsafe { nix::libc::dup2(parked, 3) } < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Soft and hard: the daemon raises its soft limit to the hard one.
            if let Some(l) = &limit {
                // SAFETY: l is a valid rlimit owned by this closure.
                if unsafe { nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, l) } < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        };
        // SAFETY: the hook is async-signal-safe (see above).
        unsafe { cmd.pre_exec(hook) };
        let child = cmd.spawn().expect("start faas");
        let mut f = Front { child, _dir: dir, port, log, notify };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = f.notify.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1") {
                    break;
                }
            }
            if let Ok(Some(status)) = f.child.try_wait() {
                panic!("faas exited before READY=1 ({status}):\n{}", f.logs());
            }
            assert!(Instant::now() < deadline, "no READY=1 within 20 s:\n{}", f.logs());
        }
        f
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `limit` for the daemon to exit; its exit code.
    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
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

/// A loopback listener with a deep backlog: connections past the caps wait there.
fn listener() -> TcpListener {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    nix::sys::socket::listen(&l, nix::sys::socket::Backlog::MAXALLOWABLE).unwrap();
    l
}

/// A connection to 127.0.0.1:`port` from 127.0.0.`from` (the whole of 127/8 is loopback,
/// so each `from` is a client address of its own).
fn connect_from(from: u8, port: u16) -> TcpStream {
    use nix::libc;
    use std::os::fd::FromRawFd;
    let addr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new fd we own.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: raw is a fresh fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let local = addr(Ipv4Addr::new(127, 0, 0, from), 0);
    // SAFETY: local is a sockaddr_in of size len that lives across the call.
    let r = unsafe { libc::bind(fd.as_raw_fd(), std::ptr::addr_of!(local).cast(), len) };
    assert_eq!(r, 0, "bind 127.0.0.{from}: {}", std::io::Error::last_os_error());
    let remote = addr(Ipv4Addr::LOCALHOST, port);
    // SAFETY: remote is a sockaddr_in of size len that lives across the call.
    let r = unsafe { libc::connect(fd.as_raw_fd(), std::ptr::addr_of!(remote).cast(), len) };
    assert_eq!(r, 0, "connect from 127.0.0.{from}: {}", std::io::Error::last_os_error());
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s
}

/// A response as it came off the wire.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
    /// The problem type of a problem+json answer, after checking that the invocation id in
    /// the header and in the body agree.
    fn problem(&self) -> String {
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{self:?}");
        let j = self.json();
        let id = self.header("faas-invocation-id").unwrap_or_else(|| panic!("no Faas-Invocation-Id: {self:?}"));
        assert_eq!(j["invocation_id"], id, "{self:?}");
        j["type"].as_str().unwrap().trim_start_matches("urn:faas:problem:").to_owned()
    }
}

/// Parses one whole response from `bytes`; None while it is incomplete. `head_only` for a
/// response to HEAD, which has no body whatever its headers say.
fn parse(bytes: &[u8], head_only: bool) -> Option<(Raw, usize)> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).expect("the head is text");
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut at = end + 4;
    let get = |k: &str| headers.iter().find(|(h, _)| h == k).map(|(_, v)| v.as_str());
    let body = if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if let Some(n) = get("content-length") {
        let n: usize = n.parse().ok()?;
        let body = bytes.get(at..at + n)?.to_vec();
        at += n;
        body
    } else if get("transfer-encoding") == Some("chunked") {
        let mut body = Vec::new();
        loop {
            let line_end = at + bytes.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(std::str::from_utf8(&bytes[at..line_end]).ok()?.trim(), 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                bytes.get(at..at + 2)?;
                at += 2;
                break;
            }
            body.extend_from_slice(bytes.get(at..at + size)?);
            at += size + 2;
        }
        body
    } else {
        // Delimited by the close.
        let body = bytes[at..].to_vec();
        at = bytes.len();
        body
    };
    Some((Raw { status, headers, body }, at))
}

/// Sends `request` on `s` and reads one response; a timeout or a connection closed before a
/// whole response is a failure.
fn exchange(s: &mut TcpStream, request: &[u8], head_only: bool) -> Raw {
    // A refusal may already be on its way and the peer closed: a failed write still leaves
    // the answer to read.
    let _ = s.write_all(request);
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let delimited_by_close = got.windows(4).any(|w| w == b"\r\n\r\n")
            && !String::from_utf8_lossy(&got).to_ascii_lowercase().contains("content-length:")
            && !String::from_utf8_lossy(&got).to_ascii_lowercase().contains("transfer-encoding:");
        if !delimited_by_close || head_only {
            if let Some((raw, _)) = parse(&got, head_only) {
                return raw;
            }
        }
        match s.read(&mut buf) {
            Ok(0) => match parse(&got, head_only) {
                Some((raw, _)) => return raw,
                None => panic!("connection closed before a whole response: {:?}", String::from_utf8_lossy(&got)),
            },
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("no whole response within {READ_TIMEOUT:?}: {:?}", String::from_utf8_lossy(&got))
            }
            Err(e) => match parse(&got, head_only) {
                Some((raw, _)) => return raw,
                None => panic!("read failed ({e}) before a whole response: {:?}", String::from_utf8_lossy(&got)),
            },
        }
    }
}

/// One GET on a fresh connection from 127.0.0.`from`.
fn get_from(from: u8, port: u16, path: &str) -> Raw {
    let mut s = connect_from(from, port);
    exchange(&mut s, format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(), false)
}

/// What became of each of `conns`, which sent nothing: the answers of those refused (with
/// their index), once `want` of them have answered (plus a short wait for any more, which
/// would be a bug), or when `within` runs out. Connections the daemon took stay silent.
fn refusals(conns: &mut [TcpStream], want: usize, within: Duration) -> Vec<(usize, Raw)> {
    for c in conns.iter() {
        c.set_nonblocking(true).unwrap();
    }
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); conns.len()];
    let mut done = vec![false; conns.len()];
    let mut answers = Vec::new();
    let deadline = Instant::now() + within;
    let mut linger: Option<Instant> = None;
    let mut buf = [0u8; 4096];
    loop {
        for (i, c) in conns.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            match c.read(&mut buf) {
                Ok(0) => {
                    done[i] = true;
                    if let Some((raw, _)) = parse(&got[i], false) {
                        answers.push((i, raw));
                    } else {
                        assert!(
                            got[i].is_empty(),
                            "closed in the middle of an answer: {:?}",
                            String::from_utf8_lossy(&got[i])
                        );
                    }
                }
                Ok(n) => {
                    got[i].extend_from_slice(&buf[..n]);
                    if let Some((raw, _)) = parse(&got[i], false) {
                        done[i] = true;
                        answers.push((i, raw));
                        // Our close ends the daemon's wait for anything more from us.
                        let _ = c.shutdown(std::net::Shutdown::Write);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!(
                    "a refused connection was reset instead of answered: {e}; had {:?}",
                    String::from_utf8_lossy(&got[i])
                ),
            }
        }
        if answers.len() >= want && linger.is_none() {
            linger = Some(Instant::now() + Duration::from_millis(300));
        }
        if linger.is_some_and(|l| Instant::now() > l) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for c in conns.iter() {
        c.set_nonblocking(false).unwrap();
    }
    answers
}

/// The numbers the daemon logged at start ("capacity: N connections (P per client address),
/// …, S sandboxes at once").
fn capacity(log: &str) -> (usize, usize, usize) {
    let line = log.lines().find(|l| l.contains("capacity: ")).unwrap_or_else(|| panic!("no capacity line:\n{log}"));
    let number_before = |what: &str| -> usize {
        let at = line.find(what).unwrap_or_else(|| panic!("no {what:?} in {line}"));
        line[..at].trim_end().rsplit([' ', '(']).next().unwrap().parse().unwrap()
    };
    (number_before(" connections"), number_before(" per client address)"), number_before(" sandboxes at once"))
}

const OK: &str = "printf 'Content-Type: text/plain\\n\\nok'";

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_connection_flood_under_a_low_fd_limit_is_refused_cleanly() {
    require_root();
    let l = listener();
    let marker = HostDir::new();
    // nofile: a sandbox's RLIMIT_NOFILE may not exceed the daemon's hard limit.
    let limits = "[limits]\nconcurrency = 64\nnofile = 64";
    let held = sh_with(
        &marker.sh_wait_for_then_done("go", 10),
        &format!("{limits}\n[sandbox]\nread_only = [\"{}\"]", marker.path().display()),
    );
    let mut f = Front::start(&[("f", &sh_with(OK, limits)), ("held", &held)], "", Socket::Kept(&l), Some(512));
    let (connections, per_client, sandboxes) = capacity(&f.logs());
    assert!(
        sandboxes < 256 && f.logs().contains("max_concurrency 256 lowered to"),
        "512 fds cannot hold 256 sandboxes:\n{}",
        f.logs()
    );
    assert!(
        connections + 16 * sandboxes < 512,
        "the caps leave no reserve: {connections} connections, {sandboxes} sandboxes"
    );
    let started = Instant::now();

    // One address takes its share; ten more from it are answered 429 and closed.
    let mut a: Vec<TcpStream> = (0..per_client + 10).map(|_| connect_from(1, f.port)).collect();
    let answers = refusals(&mut a, 10, Duration::from_secs(20));
    assert_eq!(answers.len(), 10, "{answers:?}");
    for (_, r) in &answers {
        assert_eq!((r.status, r.problem()), (429, "client-connection-limit".to_owned()), "{r:?}");
        assert_eq!(r.header("retry-after"), Some("1"));
    }

    // Five more addresses, 60 each, interleaved: past the global cap every one is a 503.
    let room = connections - per_client;
    assert!(room < 300 && room / 5 < per_client, "the flood must pass the global cap and no address its share: {room}");
    let mut b: Vec<TcpStream> = (0..300).map(|i| connect_from(2 + (i % 5) as u8, f.port)).collect();
    let answers = refusals(&mut b, 300 - room, Duration::from_secs(20));
    let elapsed = started.elapsed();
    assert_eq!(
        answers.len(),
        300 - room,
        "after {elapsed:?} (admitted idle connections are closed at 10 s): {:?}",
        answers.first()
    );
    for (_, r) in &answers {
        assert_eq!((r.status, r.problem()), (503, "connection-limit".to_owned()), "{r:?}");
    }
    assert!(f.alive(), "{}", f.logs());

    // Now real requests while every other connection slot is held. Free 40; 32 clients at
    // once ask for a function that keeps its sandbox until the marker exists: only as many as
    // the fd reserve holds may run, the rest are refused before any set-up.
    let refused: std::collections::BTreeSet<usize> = answers.iter().map(|(i, _)| *i).collect();
    let mut b: Vec<TcpStream> =
        b.into_iter().enumerate().filter(|(i, _)| !refused.contains(i)).map(|(_, s)| s).collect();
    b.truncate(b.len() - 40);
    let port = f.port;
    let waiting: Vec<_> = (0..32u8).map(|i| std::thread::spawn(move || get_from(7 + i % 2, port, "/held"))).collect();
    let until = Instant::now() + Duration::from_secs(20);
    let mut most = 0;
    loop {
        let running = children(f.child.id());
        most = most.max(running);
        let answered = waiting.iter().filter(|w| w.is_finished()).count();
        if answered + running >= waiting.len() {
            break;
        }
        assert!(
            Instant::now() < until,
            "{answered} answered and {running} running of {}:\n{}",
            waiting.len(),
            f.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(most <= sandboxes, "{most} sandboxes at once, more than the {sandboxes} the fd reserve holds");
    marker.set("go");
    let held: Vec<Raw> = waiting.into_iter().map(|w| w.join().unwrap()).collect();
    // Then churn: 16 clients, 8 short requests each.
    let clients: Vec<_> = (0..16u8)
        .map(|i| std::thread::spawn(move || (0..8).map(|_| get_from(7 + i % 2, port, "/f")).collect::<Vec<_>>()))
        .collect();
    let mut ok = 0;
    for r in held.into_iter().chain(clients.into_iter().flat_map(|c| c.join().unwrap())) {
        {
            match r.status {
                200 => {
                    assert!(["ok", "done"].contains(&r.text().as_str()), "{r:?}");
                    ok += 1;
                }
                429 => assert!(
                    ["overloaded", "concurrency-limit", "client-connection-limit"].contains(&r.problem().as_str()),
                    "{r:?}"
                ),
                503 => {
                    assert_eq!(r.problem(), "connection-limit", "no sandbox may fail half-built: {r:?}\n{}", f.logs())
                }
                _ => panic!("not 200 nor a clean refusal: {r:?}\n{}", f.logs()),
            }
        }
    }
    assert!(ok > 0, "no request got through while the flood held the rest:\n{}", f.logs());
    assert!(f.alive(), "{}", f.logs());

    // Afterwards, everything works again.
    drop((a, b));
    let until = Instant::now() + Duration::from_secs(15);
    while get_from(1, f.port, "/f").status != 200 {
        assert!(Instant::now() < until, "no 200 after the flood:\n{}", f.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..20 {
        let r = get_from(1, f.port, "/f");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{r:?}");
    }
    let logs = f.logs();
    for bad in ["os error 24", "Too many open files", "panicked", "sandbox could not be set up", "sandbox-unavailable"]
    {
        assert!(!logs.contains(bad), "{bad:?} in the log:\n{logs}");
    }
    // Counted once a second, not logged one by one.
    let until = Instant::now() + Duration::from_secs(5);
    while !f.logs().contains("connection(s) or upload(s) past the caps") {
        assert!(Instant::now() < until, "refusals are not counted in the log:\n{}", f.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a request head and part of its body, and waits until the daemon starts reading the
/// body (hyper answers `Expect: 100-continue` then), so the body is in flight for sure.
fn stall_body(from: u8, port: u16, path: &str) -> TcpStream {
    let mut s = connect_from(from, port);
    s.write_all(
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).unwrap_or_else(|e| panic!("no 100 Continue: {e}"));
        assert!(n > 0, "closed instead of 100 Continue: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 100 "), "the body was not awaited: {:?}", String::from_utf8_lossy(&got));
    s.write_all(b"only ten b").unwrap();
    s
}

#[test]
fn connections_past_the_caps_are_answered_and_closed() {
    let l = listener();
    let f = Front::start(&[], "max_connections = 3\nmax_connections_per_client = 2", Socket::Kept(&l), None);
    let health = b"GET /_/health HTTP/1.1\r\nHost: x\r\n\r\n";
    // Two from one address: each answers, so each was taken; a third from it is refused.
    let mut held: Vec<TcpStream> = [1, 1].iter().map(|&from| connect_from(from, f.port)).collect();
    for s in &mut held {
        assert_eq!(exchange(s, health, false).status, 200);
    }
    let refused = |from: u8, status: u16, kind: &str| {
        let mut s = connect_from(from, f.port);
        let r = exchange(&mut s, health, false);
        assert_eq!((r.status, r.problem()), (status, kind.to_owned()), "from 127.0.0.{from}: {r:?}");
        assert_eq!((r.header("retry-after"), r.header("connection")), (Some("1"), Some("close")), "{r:?}");
        // Closed after the answer, with a FIN: not left open, not reset.
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).map_err(|e| e.kind()), Ok(0), "{:?}", String::from_utf8_lossy(&rest));
    };
    refused(1, 429, "client-connection-limit");
    // Another address fills the last slot; past it, everyone is refused.
    held.push(connect_from(2, f.port));
    assert_eq!(exchange(held.last_mut().unwrap(), health, false).status, 200);
    refused(3, 503, "connection-limit");
    // A closed connection gives its slot back.
    drop(held.remove(0));
    let until = Instant::now() + Duration::from_secs(10);
    while get_from(1, f.port, "/_/health").status != 200 {
        assert!(Instant::now() < until, "the slot never came back:\n{}", f.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn uploads_past_the_caps_are_429_and_503_before_any_sandbox() {
    // Bodies: 2 in all, and one per address (an address holds half the connections).
    let f = Front::start(
        &[("big", &sh("cat")), ("tiny", &sh_with("cat", "[limits]\nbody = \"4\""))],
        "max_connections = 8\nmax_connections_per_client = 4\nmax_bodies = 2",
        Socket::Kept(&listener()),
        None,
    );
    // A chunked body of 8 bytes: with a body slot free it is read and found too large (413).
    let probe = |from: u8| {
        let mut s = connect_from(from, f.port);
        exchange(&mut s, b"POST /tiny HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n8\r\n12345678\r\n0\r\n\r\n", false)
    };
    assert_eq!(probe(1).problem(), "body-too-large");
    let first = stall_body(1, f.port, "/big");
    let r = probe(1);
    assert_eq!((r.status, r.problem()), (429, "client-upload-limit".to_owned()), "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    let second = stall_body(2, f.port, "/big");
    let r = probe(3);
    assert_eq!((r.status, r.problem()), (503, "upload-limit".to_owned()), "{r:?}");
    drop((first, second));
    let until = Instant::now() + Duration::from_secs(10);
    while probe(3).status != 413 {
        assert!(Instant::now() < until, "the body slots never came back:\n{}", f.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!f.logs().contains("REPORT"), "no sandbox was started:\n{}", f.logs());
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn trickled_bodies_do_not_hold_a_function_at_its_limit() {
    require_root();
    let d = Daemon::start(&[(
        "one",
        &sh_with("printf 'Content-Type: text/plain\\n\\n'; cat", "[limits]\nconcurrency = 1"),
    )]);
    let stalled: Vec<TcpStream> = (0..4).map(|_| stall_body(1, d.port, "/one")).collect();
    let r = d.post("/one", b"hello");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello"),
        "a trickling client kept the function at its limit: {r:?}"
    );
    let r = d.get("/one");
    assert_eq!(r.status, 200, "{r:?}");
    drop(stalled);
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn full_concurrency_is_429_global_and_per_function() {
    require_root();
    let marker = HostDir::new();
    let gated = sh_with(
        &marker.sh_wait_for_then_done("go", 10),
        &format!("[limits]\nconcurrency = 1\n[sandbox]\nread_only = [\"{}\"]", marker.path().display()),
    );
    let d = Daemon::start_with(&[("hold", &gated), ("hold2", &gated), ("quick", &sh(OK))], "max_concurrency = 2");
    let first = {
        let url = d.url("/hold");
        std::thread::spawn(move || common::request_to(&url, "GET", b"", &[]))
    };
    wait_for_sandboxes(&d, 1);
    let r = d.get("/hold");
    assert_eq!((r.status, r.problem()), (429, "concurrency-limit".to_owned()), "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["invocation_id"].as_str(), r.header("faas-invocation-id"), "{r:?}");
    let second = {
        let url = d.url("/hold2");
        std::thread::spawn(move || common::request_to(&url, "GET", b"", &[]))
    };
    wait_for_sandboxes(&d, 2);
    let r = d.get("/quick");
    assert_eq!((r.status, r.problem()), (429, "overloaded".to_owned()), "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["invocation_id"].as_str(), r.header("faas-invocation-id"), "{r:?}");
    marker.set("go");
    assert_eq!(first.join().unwrap().status, 200);
    assert_eq!(second.join().unwrap().status, 200);
    assert_eq!(d.get("/quick").status, 200);
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn responses_cannot_act_on_the_whole_origin() {
    require_root();
    let head = |lines: &str| sh(&format!("printf '{lines}Content-Type: text/plain\\n\\nbody'"));
    let wide = "Set-Cookie: own=1; Path=/shop/cart\\nSet-Cookie: bare=2\\nSet-Cookie: root=rootsecret3; Path=/\\nSet-Cookie: sub=subsecret4; Domain=example.org; Path=/shop\\nClear-Site-Data: \"*\"\\nStrict-Transport-Security: max-age=63072000\\nAlt-Svc: h3=\":443\"\\nX-Kept: yes\\n";
    let d = Daemon::start(&[
        ("shop", &head(wide)),
        (
            "login",
            &sh_with(
                &format!("printf '{wide}Content-Type: text/plain\\n\\nbody'"),
                "[response]\nallow_headers = [\"strict-transport-security\", \"Set-Cookie\"]",
            ),
        ),
        ("upgrade", &sh("printf 'Status: 101 Switching Protocols\\nUpgrade: websocket\\n\\n'")),
        ("early", &sh("printf 'Status: 103\\nLink: </x>\\n\\n'")),
    ]);
    // Raw, to see every Set-Cookie line.
    let r = get_from(1, d.port, "/shop");
    assert_eq!((r.status, r.text().as_str()), (200, "body"), "{r:?}");
    let cookies: Vec<&str> =
        r.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie")).map(|(_, v)| v.as_str()).collect();
    assert_eq!(cookies, ["own=1; Path=/shop/cart", "bare=2; Path=/shop"], "{r:?}");
    for gone in ["clear-site-data", "strict-transport-security", "alt-svc"] {
        assert_eq!(r.header(gone), None, "{gone} passed: {r:?}");
    }
    assert_eq!(r.header("x-kept"), Some("yes"));
    let id = r.header("faas-invocation-id").unwrap().to_owned();
    let until = Instant::now() + Duration::from_secs(5);
    let line = loop {
        if let Some(l) = d.logs().lines().find(|l| l.contains("dropped response headers") && l.contains(&id)) {
            break l.to_owned();
        }
        assert!(Instant::now() < until, "no log line for {id}:\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(line.contains("function=shop"), "{line}");
    for what in [
        "set-cookie root (Path=/)",
        "set-cookie sub (Domain)",
        "clear-site-data",
        "strict-transport-security",
        "alt-svc",
    ] {
        assert!(line.contains(what), "{what} not in {line}");
    }
    assert!(!line.contains("rootsecret3") && !line.contains("subsecret4"), "cookie values stay out of the log: {line}");
    assert_eq!(d.logs().lines().filter(|l| l.contains(&id) && l.contains("dropped")).count(), 1, "once per invocation");

    let r = get_from(1, d.port, "/login");
    assert_eq!(r.header("strict-transport-security"), Some("max-age=63072000"), "{r:?}");
    let cookies: Vec<&str> =
        r.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie")).map(|(_, v)| v.as_str()).collect();
    assert_eq!(cookies.len(), 4, "allowed cookies pass as written: {r:?}");
    assert!(cookies.contains(&"root=rootsecret3; Path=/"), "{cookies:?}");
    assert_eq!(r.header("clear-site-data"), None, "only what is listed is allowed: {r:?}");

    for f in ["/upgrade", "/early"] {
        let r = d.get(f);
        assert_eq!((r.status, r.problem()), (502, "bad-response".to_owned()), "{f}: {r:?}");
        assert!(r.json()["detail"].as_str().unwrap().contains("from 200 to 599"), "{r:?}");
    }
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn head_gets_the_head_and_no_body() {
    require_root();
    let d = Daemon::start(&[(
        "page",
        &sh("printf 'Content-Type: text/plain\\nX-Seen: %s\\n\\nthe body' \"$REQUEST_METHOD\""),
    )]);
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let r = exchange(&mut s, b"HEAD /page HTTP/1.1\r\nHost: x\r\n\r\n", true);
    assert_eq!((r.status, r.header("x-seen")), (200, Some("HEAD")), "{r:?}");
    assert_eq!(r.header("content-length"), None, "the length of a body that was never measured: {r:?}");
    let id = r.header("faas-invocation-id").expect("an invocation id").to_owned();
    // The function ran to its end: answering HEAD is not the client going away.
    let until = Instant::now() + Duration::from_secs(5);
    while !d.logs().lines().any(|l| l.contains(&format!("REPORT page {id} outcome=ok"))) {
        assert!(Instant::now() < until, "no ok REPORT for {id}:\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    // On the same connection: if any body byte had followed the HEAD's head, this response
    // would not start where it must.
    let r = exchange(&mut s, b"GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false);
    assert_eq!((r.status, r.text().as_str(), r.header("x-seen")), (200, "the body", Some("GET")), "{r:?}");
}

#[test]
fn serve_listen_binds_its_own_socket() {
    // A free port: bound and closed again (nothing else on this host binds 127.0.0.1 ports
    // from the ephemeral range on purpose).
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let f = Front::start(&[("f", &sh(OK))], "", Socket::Listen(port), None);
    assert!(f.logs().contains(&format!("listening on 127.0.0.1:{port} (http)")), "{}", f.logs());
    let r = get_from(1, port, "/_/health");
    assert_eq!(r.status, 200, "{r:?}");
    let r = get_from(1, port, "/nope");
    assert_eq!((r.status, r.problem()), (404, "function-not-found".to_owned()));
}

#[test]
fn no_connection_is_refused_across_an_idle_exit() {
    // The test holds the listening socket, as faas.socket does: the daemon exits when idle,
    // a client connects while no daemon runs, and the next daemon answers it.
    let l = listener();
    let mut f = Front::start(&[], "idle_exit = \"1s\"", Socket::Kept(&l), None);
    assert_eq!(get_from(1, f.port, "/_/health").status, 200);
    assert_eq!(f.wait_exit(Duration::from_secs(10)), Some(0), "no idle exit:\n{}", f.logs());
    assert!(f.logs().contains("stopping (idle)"), "{}", f.logs());
    let mut waiting = connect_from(1, f.port);
    waiting.write_all(b"GET /_/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let next = Front::start(&[], "", Socket::Kept(&l), None);
    let r = exchange(&mut waiting, b"", false);
    assert_eq!(r.status, 200, "the connection made while no daemon ran: {r:?}\n{}", next.logs());
}

/// How many children `pid` has: for the daemon, one init per live sandbox (what a sandbox
/// starts is below its init).
fn children(pid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            stat.rfind(')').and_then(|i| stat[i + 2..].split(' ').nth(1)).and_then(|p| p.parse::<u32>().ok())
                == Some(pid)
        })
        .count()
}

/// Waits until `n` sandboxes run.
fn wait_for_sandboxes(d: &Daemon, n: usize) {
    let until = Instant::now() + Duration::from_secs(10);
    while children(d.pid()) < n {
        assert!(Instant::now() < until, "fewer than {n} sandboxes started:\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}
