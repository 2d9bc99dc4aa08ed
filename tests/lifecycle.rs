//! The daemon's life under systemd's protocol: READY=1, STATUS=, WATCHDOG=1, STOPPING=1 on
//! SIGTERM with in-flight requests drained (and cut off once `drain_grace` runs out), and exit
//! when idle (systemd keeps the socket), not while a request is in flight.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{require_root, sh_with, Daemon, HostDir};

/// A function that waits until the test creates the marker `go` in `marker` (at most
/// `seconds`), then answers "done": the test, not a sleep, decides when it ends.
fn held_function(marker: &HostDir, seconds: u32) -> String {
    sh_with(
        &marker.sh_wait_for_then_done("go", seconds),
        &format!("[limits]\ntimeout = \"{}s\"\n{}", seconds + 5, marker.sandbox_toml()),
    )
}

/// The daemon's children: one init per live sandbox.
fn sandboxes(d: &Daemon) -> Vec<u32> {
    children(d.pid())
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid: u32 = stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

/// Whether `pid` is a live process (not gone, not a zombie waiting for its reaper).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

fn wait_for(what: &str, d: &Daemon, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < until, "{what} within 10 s:\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm(d: &Daemon) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
}

#[test]
fn idle_daemon_exits_by_itself() {
    let mut d = Daemon::start_with(&[], "idle_exit = \"3s\"");
    let before = Instant::now();
    assert_eq!(d.get("/_/health").status, 200);
    let after = Instant::now();
    assert_eq!(d.wait_exit(Duration::from_secs(15)), Some(0), "no idle exit:\n{}", d.logs());
    // The request reached the daemon after `before`, so it may go 3 s after that at the
    // earliest; it checks once a second, so 10 s after the answer is a generous latest.
    let (since_before, since_after) = (before.elapsed(), after.elapsed());
    assert!(
        since_before >= Duration::from_secs(3),
        "exited {since_before:?} after the request was sent:\n{}",
        d.logs()
    );
    assert!(since_after <= Duration::from_secs(10), "exited {since_after:?} after the last answer:\n{}", d.logs());
    assert!(d.messages.iter().any(|m| m == "STOPPING=1"), "{:?}", d.messages);
    assert!(d.logs().contains("stopping (idle)"), "{}", d.logs());
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_request_in_flight_keeps_an_idle_daemon_up() {
    require_root();
    let marker = HostDir::new();
    let mut d = Daemon::start_with(&[("wait", &held_function(&marker, 20))], "idle_exit = \"1s\"");
    let url = d.url("/wait");
    let inflight = std::thread::spawn(move || common::request_to(&url, "GET", b"", &[]));
    wait_for("a sandbox", &d, || !sandboxes(&d).is_empty());
    // Three idle periods with a request in flight: the daemon neither stops nor exits.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(!d.logs().contains("stopping"), "stopped with a request in flight:\n{}", d.logs());
        assert_eq!(d.child.try_wait().unwrap(), None, "exited with a request in flight:\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    marker.set("go");
    let r = inflight.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "done"));
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0), "no idle exit after the request:\n{}", d.logs());
}

#[test]
fn watchdog_and_status_are_sent() {
    let mut d = Daemon::start_env(&[], "", &[("WATCHDOG_USEC", "400000")]);
    let until = Instant::now() + Duration::from_secs(5);
    while d.messages.iter().filter(|m| *m == "WATCHDOG=1").count() < 2 {
        assert!(Instant::now() < until, "no WATCHDOG=1: {:?}", d.messages);
        d.poll_notify();
    }
    assert!(d.messages.iter().any(|m| m.starts_with("STATUS=0 in flight, 0 served")), "{:?}", d.messages);
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn sigterm_drains_in_flight_requests() {
    require_root();
    let marker = HostDir::new();
    let mut d = Daemon::start(&[("slow", &held_function(&marker, 10))]);
    let url = d.url("/slow");
    let inflight = std::thread::spawn(move || common::request_to(&url, "GET", b"", &[]));
    wait_for("a sandbox", &d, || !sandboxes(&d).is_empty());
    let sandbox = sandboxes(&d);
    sigterm(&d);
    wait_for("the drain", &d, || d.logs().contains("stopping (SIGTERM)"));
    // Draining, not killing: for 3 s (past the 2 s the daemon gives teardown after the
    // grace), with the handler blocked on the marker, the daemon and the sandbox stay.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(sandbox.iter().all(|&p| running(p)), "SIGTERM ended the sandbox {sandbox:?}:\n{}", d.logs());
        assert_eq!(d.child.try_wait().unwrap(), None, "exited before the request finished:\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    marker.set("go");
    let r = inflight.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "done"), "the in-flight request was cut off");
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0), "{}", d.logs());
    assert!(d.messages.iter().any(|m| m == "STOPPING=1"), "{:?}", d.messages);
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn drain_grace_cuts_off_what_does_not_finish() {
    require_root();
    let marker = HostDir::new();
    let mut d = Daemon::start_with(&[("stuck", &held_function(&marker, 30))], "drain_grace = \"1s\"");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /stuck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    wait_for("a sandbox", &d, || !sandboxes(&d).is_empty());
    let sandbox = sandboxes(&d);
    let t = Instant::now();
    sigterm(&d);
    assert_eq!(d.wait_exit(Duration::from_secs(15)), Some(0), "{}", d.logs());
    let took = t.elapsed();
    // The grace, plus at most 2 s for teardown; far below the handler's 30 s.
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "exited {took:?} after SIGTERM:\n{}",
        d.logs()
    );
    assert!(d.logs().contains("drain grace of 1s ran out"), "{}", d.logs());
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the client was left hanging ({e}): {:?}", String::from_utf8_lossy(&got)),
    }
    assert!(
        !String::from_utf8_lossy(&got).contains("done"),
        "the handler was not cut off: {:?}",
        String::from_utf8_lossy(&got)
    );
    // Nothing of the sandbox outlives the daemon.
    let until = Instant::now() + Duration::from_secs(5);
    while sandbox.iter().any(|&p| running(p)) {
        assert!(Instant::now() < until, "the sandbox {sandbox:?} outlived the daemon");
        std::thread::sleep(Duration::from_millis(20));
    }
}
