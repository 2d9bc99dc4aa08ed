//! The daemon's life under systemd's protocol: READY=1, STATUS=, WATCHDOG=1, STOPPING=1 on
//! SIGTERM with in-flight requests drained, and exit when idle (systemd keeps the socket).

mod common;

use std::time::{Duration, Instant};

use common::{require_root, sh, Daemon};

#[test]
fn idle_daemon_exits_by_itself() {
    let mut d = Daemon::start_with(&[], "idle_exit = \"1s\"");
    assert_eq!(d.get("/_/health").status, 200);
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0), "no idle exit:\n{}", d.logs());
    assert!(d.messages.iter().any(|m| m == "STOPPING=1"), "{:?}", d.messages);
    assert!(d.logs().contains("stopping (idle)"), "{}", d.logs());
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
    let mut d = Daemon::start(&[("slow", &sh("sleep 2; printf 'Content-Type: text/plain\\n\\ndone'"))]);
    let url = d.url("/slow");
    let inflight = std::thread::spawn(move || common::request_to(&url, "GET", b"", &[]));
    let until = Instant::now() + Duration::from_secs(10);
    while d.sandbox_processes().is_empty() {
        assert!(Instant::now() < until, "the request never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let r = inflight.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "done"), "the in-flight request was cut off");
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0), "{}", d.logs());
    assert!(d.messages.iter().any(|m| m == "STOPPING=1"), "{:?}", d.messages);
    assert!(d.logs().contains("stopping (SIGTERM)"), "{}", d.logs());
}
