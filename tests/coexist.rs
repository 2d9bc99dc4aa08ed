//! Several `faas` processes on one host: a daemon beside `faas invoke`, two daemons, a daemon
//! beside a process a sandbox left behind. Sandbox uids are never shared between them, a uid a
//! live process holds is never leased, `faas invoke` leaves the daemon's state alone, a state
//! directory has one daemon and only root can write to it. Each test has a uid range of its
//! own (`uid_base`/`uid_count` in its faas.toml), so parallel tests never meet by accident.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{descendants, request_to, require_root, sh, sh_with, HostDir};

/// The first of 16 sandbox uids for test number `test` that no other test (here, in
/// tests/common, or in another test process, unless pids collide modulo 4096) uses: above
/// tests/common's 0x7000_0000 + 4 Mi.
fn uid_range(test: u32) -> u32 {
    assert!(test < 16);
    0x7100_0000 + ((std::process::id() % 4096) * 16 + test) * 16
}

/// A `sh` function printing its uid, from inside (`id -u`).
fn who() -> String {
    sh("printf 'Content-Type: text/plain\\n\\n'; id -u")
}

/// A function asking for more open files than any hard limit allows: the kernel caps the
/// hard limit at fs.nr_open, at most 2^30.
fn many_files() -> String {
    sh_with("true", "[limits]\nnofile = 1099511627776")
}

/// A `sh` function that waits until `markers/go` exists, then prints its uid. The marker
/// directory is visible read-only in the sandbox, at the same path.
fn waiter(markers: &Path) -> String {
    format!(
        "runtime = \"sh\"\nsource = '''\nwhile [ ! -e {m}/go ]; do sleep 0.02; done\nprintf 'Content-Type: text/plain\\n\\n'; id -u\n'''\n\
         [limits]\ntimeout = \"60s\"\n[sandbox]\nread_only = [\"{m}\"]\n",
        m = markers.display()
    )
}

/// A test's directory: faas.toml, functions/, state/ (created by faas), logs.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(functions: &[(&str, &str)], uid_base: u32, uid_count: u32) -> Setup {
        let dir = tempfile::Builder::new().prefix("faas-coexist-").tempdir().unwrap();
        let s = Setup { dir };
        std::fs::create_dir(s.path().join("functions")).unwrap();
        for (name, text) in functions {
            std::fs::write(s.path().join("functions").join(format!("{name}.toml")), text).unwrap();
        }
        s.write_config("state", uid_base, uid_count);
        s
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// (Re)writes faas.toml with `state` (relative to the directory) as the state directory.
    fn write_config(&self, state: &str, uid_base: u32, uid_count: u32) {
        std::fs::write(
            self.config(),
            format!(
                "functions_dir = \"functions\"\nstate_dir = \"{state}\"\nwrappers_dir = \"{}\"\nuid_base = {uid_base}\nuid_count = {uid_count}\n",
                common::repo().join("wrappers").display()
            ),
        )
        .unwrap();
    }

    fn config(&self) -> PathBuf {
        self.path().join("faas.toml")
    }

    fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    /// `faas --config … ARGS`, stdout piped, stderr to `log`.
    fn faas(&self, args: &[&str], log: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faas"));
        cmd.arg("--config").arg(self.config()).args(args);
        cmd.env_remove("LISTEN_FDS").env_remove("LISTEN_PID").env_remove("NOTIFY_SOCKET").env_remove("JOURNAL_STREAM");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(std::fs::File::create(self.path().join(log)).unwrap());
        cmd
    }

    fn read(&self, log: &str) -> String {
        std::fs::read_to_string(self.path().join(log)).unwrap_or_default()
    }

    /// Starts `faas serve` with a 127.0.0.1:0 socket as fd 3 (as tests/common does) and waits
    /// for READY=1, or for it to exit: Err(exit code, log).
    fn serve(&self, log: &str) -> Result<Served, (Option<i32>, String)> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let notify_path = self.path().join(format!("{log}.notify"));
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let log_file = std::fs::File::create(self.path().join(log)).unwrap();
        let fd = listener.as_raw_fd();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faas"));
        cmd.arg("--config")
            .arg(self.config())
            .arg("serve")
            .env("LISTEN_FDS", "1")
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        // Between fork and exec this only calls fcntl and dup2, which are async-signal-safe, on
        // an fd that stays open in the parent until spawn returns.
        let move_listener = move || {
            // SAFETY: fcntl on an fd the parent keeps open.
            let parked = unsafe { nix::libc::fcntl(fd, nix::libc::F_DUPFD_CLOEXEC, 100) };
            // SAFETY: dup2 onto 3, which nothing in this child uses.
            if parked < 0 || unsafe { nix::libc::dup2(parked, 3) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: the hook is async-signal-safe (see above).
        unsafe { cmd.pre_exec(move_listener) };
        let mut child = cmd.spawn().expect("start faas serve");
        drop(listener);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = notify.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1") {
                    return Ok(Served { child, port });
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err((status.code(), self.read(log)));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("faas serve neither became ready nor exited within 20 s:\n{}", self.read(log));
            }
        }
    }
}

/// A running daemon; SIGTERM, then SIGKILL, on drop.
struct Served {
    child: Child,
    port: u16,
}

impl Served {
    fn get(&self, path: &str) -> common::Resp {
        request_to(&format!("http://127.0.0.1:{}{path}", self.port), "GET", b"", &[])
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Served {
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

/// Kills (by pid) and reaps a helper process of ours on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until a sandbox runs below `pid`; `what` and `log` explain a failure.
fn wait_for_sandbox(pid: u32, what: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while descendants(pid).is_empty() {
        assert!(Instant::now() < deadline, "no sandbox of {what} started within 20 s:\n{}", log());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The uid a response body (`id -u`) names.
fn uid_of(body: &str, from: &str) -> u32 {
    body.trim().parse().unwrap_or_else(|_| panic!("{from} did not print a uid: {body:?}"))
}

/// Waits for `faas invoke` to end; (exit code, stdout).
fn finish(mut child: Child) -> (Option<i32>, String) {
    let mut out = String::new();
    child.stdout.take().expect("stdout is piped").read_to_string(&mut out).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), out);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("faas invoke did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn daemon_and_invoke_never_share_a_uid() {
    require_root();
    let markers = HostDir::new();
    let base = uid_range(0);
    let s = Setup::new(&[("wait", &waiter(markers.path()))], base, 16);
    let d = s.serve("daemon.log").unwrap_or_else(|e| panic!("faas serve did not start: {e:?}"));
    // faas invoke first: the daemon has locked its first uids at start but runs nothing yet,
    // so no process shows that it holds them; only the lock keeps invoke off them. A state
    // directory of its own, so that only uids are in question (sharing one is
    // invoke_leaves_the_daemon_serving's).
    let other_state = s.path().join("invoke-state");
    let invoke =
        s.faas(&["--state-dir", other_state.to_str().unwrap(), "invoke", "wait"], "invoke.log").spawn().unwrap();
    let invoke_pid = invoke.id();
    wait_for_sandbox(invoke_pid, "faas invoke", || s.read("invoke.log"));
    let url = format!("http://127.0.0.1:{}/wait", d.port);
    let served = std::thread::spawn(move || request_to(&url, "GET", b"", &[]));
    wait_for_sandbox(d.pid(), "the daemon", || s.read("daemon.log"));
    // Both sandboxes are alive now, each waiting for the marker.
    std::fs::write(markers.path().join("go"), "").unwrap();
    let (code, out) = finish(invoke);
    let r = served.join().unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.read("daemon.log"));
    assert_eq!(code, Some(0), "faas invoke failed: {out}\n{}", s.read("invoke.log"));
    let (a, b) = (uid_of(&r.text(), "the daemon's sandbox"), uid_of(&out, "faas invoke's sandbox"));
    assert!((base..base + 16).contains(&a) && (base..base + 16).contains(&b), "uids {a}, {b} outside {base}+16");
    assert_ne!(a, b, "the daemon and faas invoke ran two live sandboxes as the same uid {a}");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn two_daemons_never_share_a_uid() {
    require_root();
    let markers = HostDir::new();
    let base = uid_range(1);
    let one = Setup::new(&[("wait", &waiter(markers.path()))], base, 16);
    let two = Setup::new(&[("wait", &waiter(markers.path()))], base, 16);
    let d1 = one.serve("daemon.log").unwrap_or_else(|e| panic!("first faas serve did not start: {e:?}"));
    let d2 = two.serve("daemon.log").unwrap_or_else(|e| panic!("second faas serve did not start: {e:?}"));
    let requests: Vec<_> = [&d1, &d2]
        .iter()
        .map(|d| {
            let url = format!("http://127.0.0.1:{}/wait", d.port);
            std::thread::spawn(move || request_to(&url, "GET", b"", &[]))
        })
        .collect();
    wait_for_sandbox(d1.pid(), "the first daemon", || one.read("daemon.log"));
    wait_for_sandbox(d2.pid(), "the second daemon", || two.read("daemon.log"));
    std::fs::write(markers.path().join("go"), "").unwrap();
    let uids: Vec<u32> = requests
        .into_iter()
        .map(|t| {
            let r = t.join().unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            uid_of(&r.text(), "a daemon's sandbox")
        })
        .collect();
    assert_ne!(uids[0], uids[1], "two daemons ran live sandboxes as the same uid {}", uids[0]);
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_uid_held_by_a_leftover_process_is_not_leased() {
    require_root();
    let base = uid_range(2);
    // A process left behind as the first uid of the range, as a sandbox of a killed faas
    // whose parent-death signal did not reach it would be.
    let leftover = Reaped(
        Command::new("setpriv")
            .args([
                format!("--reuid={base}"),
                format!("--regid={base}"),
                "--clear-groups".into(),
                "sleep".into(),
                "60".into(),
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("setpriv (util-linux) is needed for this test: install util-linux"),
    );
    let status = format!("/proc/{}/status", leftover.0.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&status).unwrap_or_default();
        if text.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some(&base.to_string())) {
            break;
        }
        assert!(Instant::now() < deadline, "setpriv did not switch to uid {base}:\n{text}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let s = Setup::new(&[("who", &who())], base, 2);
    let d = s.serve("daemon.log").unwrap_or_else(|e| panic!("faas serve did not start: {e:?}"));
    for _ in 0..3 {
        let r = d.get("/who");
        assert_eq!(r.status, 200, "{}\n{}", r.text(), s.read("daemon.log"));
        assert_eq!(uid_of(&r.text(), "the sandbox"), base + 1, "a uid a live process holds was leased");
    }
    drop(leftover);
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn invoke_leaves_the_daemon_serving() {
    require_root();
    let markers = HostDir::new();
    let base = uid_range(3);
    let wait = waiter(markers.path()).replace("timeout = \"60s\"", "timeout = \"10s\"");
    let s = Setup::new(&[("who", &who()), ("wait", &wait)], base, 16);
    let d = s.serve("daemon.log").unwrap_or_else(|e| panic!("faas serve did not start: {e:?}"));
    let r = d.get("/who");
    assert_eq!(r.status, 200, "{}", r.text());
    // A sandbox of the daemon lives while faas invoke comes and goes, on the same state dir.
    let url = format!("http://127.0.0.1:{}/wait", d.port);
    let waiting = std::thread::spawn(move || request_to(&url, "GET", b"", &[]));
    wait_for_sandbox(d.pid(), "the daemon", || s.read("daemon.log"));
    let before = common::tree(&s.state().join("fn"));
    let (code, out) = finish(s.faas(&["invoke", "who"], "invoke.log").spawn().unwrap());
    assert_eq!(code, Some(0), "faas invoke failed: {out}\n{}", s.read("invoke.log"));
    // Review finding 9: the daemon answered 503 "mount" here once invoke had cleared state/fn.
    let r = d.get("/who");
    assert_eq!(r.status, 200, "the daemon stopped serving after faas invoke: {}\n{}", r.text(), s.read("daemon.log"));
    // Deleting the daemon's mount points also detached the marker directory from the live
    // sandbox, which then never saw the marker (504).
    std::fs::write(markers.path().join("go"), "").unwrap();
    let r = waiting.join().unwrap();
    assert_eq!(r.status, 200, "the live sandbox broke during faas invoke: {}\n{}", r.text(), s.read("daemon.log"));
    assert_eq!(common::tree(&s.state().join("fn")), before, "faas invoke changed the daemon's state/fn");
    let left: Vec<_> = std::fs::read_dir(s.state())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("invoke"))
        .collect();
    assert!(left.is_empty(), "faas invoke left its state behind: {left:?}");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_second_daemon_on_the_same_state_dir_refuses_to_start() {
    require_root();
    let base = uid_range(4);
    let s = Setup::new(&[("who", &who())], base, 16);
    let d = s.serve("daemon.log").unwrap_or_else(|e| panic!("faas serve did not start: {e:?}"));
    match s.serve("second.log") {
        Ok(_) => panic!("a second faas serve started on the state directory of a running one"),
        Err((code, log)) => {
            assert_eq!(code, Some(1), "{log}");
            let state = s.state().canonicalize().unwrap();
            assert!(
                log.contains(&format!("{} is in use by another faas serve (pid {})", state.display(), d.pid())),
                "{log}"
            );
            assert!(log.contains("hint: "), "{log}");
        }
    }
    let r = d.get("/who");
    assert_eq!(r.status, 200, "the first daemon stopped serving: {}\n{}", r.text(), s.read("daemon.log"));
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_state_dir_others_can_write_is_refused() {
    require_root();
    let base = uid_range(5);
    let s = Setup::new(&[("who", &who())], base, 16);
    // The state directory itself, then a parent without the sticky bit.
    std::fs::create_dir(s.state()).unwrap();
    std::fs::set_permissions(s.state(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let state = s.state().canonicalize().unwrap();
    let (code, log) = s.serve("daemon.log").err().expect("faas serve started on a world-writable state directory");
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains(&format!("{} is writable by group or others (mode 0777)", state.display())), "{log}");
    assert!(log.contains("hint: "), "{log}");
    let (code, out) = finish(s.faas(&["invoke", "who"], "invoke.log").spawn().unwrap());
    let log = s.read("invoke.log");
    assert_eq!(code, Some(1), "faas invoke ran with a world-writable state directory: {out}\n{log}");
    assert!(log.contains(&format!("{} is writable by group or others", state.display())), "{log}");

    std::fs::set_permissions(s.state(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let open = s.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    s.write_config("open/state", base, 16);
    let (code, log) = s.serve("daemon2.log").err().expect("faas serve started below a world-writable directory");
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!("{} is writable by group or others (mode 0777)", open.canonicalize().unwrap().display())),
        "{log}"
    );
}

#[test]
fn check_warns_when_nofile_is_above_the_hard_limit() {
    let s = Setup::new(&[("many", &many_files())], 0x7000_0000, 16);
    let out = s.faas(&["check"], "check.log").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", s.read("check.log"));
    assert!(
        text.contains("warning: ") && text.contains("nofile 1099511627776 is above the hard open-files limit"),
        "{text}"
    );
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn serve_logs_a_nofile_above_the_hard_limit() {
    require_root();
    let base = uid_range(6);
    let s = Setup::new(&[("many", &many_files())], base, 16);
    let _d = s.serve("daemon.log").unwrap_or_else(|e| panic!("faas serve did not start: {e:?}"));
    let log = s.read("daemon.log");
    assert!(log.contains("nofile 1099511627776 is above the hard open-files limit"), "{log}");
}
