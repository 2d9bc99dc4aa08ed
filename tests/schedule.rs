//! `[[schedule]]`: the daemon runs a function by itself on a systemd calendar, through the
//! same sandbox and with a REPORT (`trigger=schedule`); a changed file changes its schedule
//! within a second, a removed one never fires again; `/_/functions` shows next and last runs.
//! The schedules here fire every 2 s (`*:*:0/2`); every wait has a deadline.

mod common;

use std::time::{Duration, Instant};

use common::{require_root, sh_with, Daemon, HostDir};

/// Every 2 s, as the issue suggests.
const EVERY_2S: &str = "*:*:0/2";

/// A function that logs what it was called with and as whom, and answers.
fn tick(calendar: &str) -> String {
    sh_with(
        "echo \"tick: $REQUEST_METHOD $PATH_INFO $QUERY_STRING uid=$(id -u) body=$(cat)\" >&2; printf 'Content-Type: text/plain\\n\\nok'",
        &format!("[[schedule]]\ncalendar = \"{calendar}\"\nmethod = \"POST\"\npath = \"/run?x=1\"\nbody = \"hello\""),
    )
}

/// Lines of the daemon's log that contain all of `needles`.
fn lines(d: &Daemon, needles: &[&str]) -> Vec<String> {
    d.logs().lines().filter(|l| needles.iter().all(|n| l.contains(n))).map(str::to_owned).collect()
}

/// Waits until at least `n` log lines contain all of `needles`; returns them.
fn wait_lines(d: &Daemon, needles: &[&str], n: usize, limit: Duration) -> Vec<String> {
    let until = Instant::now() + limit;
    loop {
        let found = lines(d, needles);
        if found.len() >= n {
            return found;
        }
        d.assert_alive();
        assert!(Instant::now() < until, "{n} lines with {needles:?} within {limit:?}:\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Watches for `window` and fails if a new log line with all of `needles` shows up.
fn assert_no_new(d: &Daemon, needles: &[&str], window: Duration, why: &str) {
    let before = lines(d, needles).len();
    let until = Instant::now() + window;
    while Instant::now() < until {
        let now = lines(d, needles);
        assert_eq!(now.len(), before, "{why}: {:?}\n{}", &now[before..], d.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn schedules(d: &Daemon, name: &str) -> serde_json::Value {
    let r = d.admin_get("/_/functions");
    assert_eq!(r.status, 200);
    let j = r.json();
    j["functions"].as_array().unwrap().iter().find(|f| f["name"] == name).unwrap_or_else(|| panic!("no {name} in {j}"))
        ["schedules"]
        .clone()
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_schedule_runs_the_function_in_its_sandbox_with_a_report_and_shows_next_and_last() {
    require_root();
    let d = Daemon::start(&[("tick", &tick(EVERY_2S))]);
    let reports = wait_lines(&d, &["REPORT tick ", " trigger=schedule "], 2, Duration::from_secs(20));
    for r in &reports {
        assert!(r.contains(" outcome=ok status=200 trigger=schedule client=127.0.0.1 "), "{r}");
    }
    // What the function saw: the schedule's method, path, query and body, as a sandbox uid.
    let logged = wait_lines(&d, &["tick: POST /run x=1 uid="], 2, Duration::from_secs(5));
    let uid: u32 = logged[0].split("uid=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!((d.uids.0..d.uids.0 + d.uids.1).contains(&uid), "ran as uid {uid}, not a sandbox uid: {}", logged[0]);
    assert!(logged[0].ends_with("body=hello"), "{}", logged[0]);
    // /_/functions: the calendar, the next run after the last, the last with its REPORT's id.
    let s = schedules(&d, "tick");
    let e = &s[0];
    assert_eq!(
        (e["calendar"].as_str(), e["method"].as_str(), e["path"].as_str()),
        (Some(EVERY_2S), Some("POST"), Some("/run?x=1")),
        "{s}"
    );
    let (next, last_at) = (e["next"].as_str().unwrap(), e["last"]["at"].as_str().unwrap());
    assert!(next > last_at, "next {next} is not after the last run {last_at}");
    assert_eq!((e["last"]["outcome"].as_str(), e["last"]["status"].as_u64()), (Some("ok"), Some(200)), "{s}");
    let id = e["last"]["invocation_id"].as_str().unwrap();
    assert!(d.report_line(id).contains("trigger=schedule"), "{}", d.report_line(id));
    // Elapses on the even second, as systemd computes them.
    let secs: u32 = last_at[17..19].parse().unwrap();
    assert_eq!(secs % 2, 0, "last run at {last_at}");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_changed_file_changes_the_schedule_and_a_removed_one_never_fires_again() {
    require_root();
    let d = Daemon::start(&[("tick", &tick(EVERY_2S))]);
    let running = ["schedule *:*:0/2 of tick: running it"];
    wait_lines(&d, &running, 1, Duration::from_secs(20));
    // Yearly now: planned for the 1st of January, and nothing every 2 s any more.
    d.write_function("tick", &tick("yearly"));
    wait_lines(&d, &["schedule yearly of tick (POST /tick/run?x=1): next run "], 1, Duration::from_secs(10));
    let next = schedules(&d, "tick")[0]["next"].as_str().unwrap().to_owned();
    assert!(next.contains("-01-01T"), "yearly next run {next}");
    assert_no_new(&d, &running, Duration::from_secs(5), "the old calendar fired after the file changed");
    // Back to every 2 s: it fires again.
    let before = lines(&d, &running).len();
    d.write_function("tick", &tick(EVERY_2S));
    wait_lines(&d, &running, before + 1, Duration::from_secs(10));
    // Removed: the loop says so, and the schedule never fires again.
    std::fs::remove_file(d.functions_dir().join("tick.toml")).unwrap();
    wait_lines(&d, &["the schedules of tick ended: its function file is gone"], 1, Duration::from_secs(10));
    assert_no_new(&d, &running, Duration::from_secs(5), "a removed function fired");
    let r = d.admin_get("/_/functions");
    assert_eq!(r.json()["functions"].as_array().map(Vec::len), Some(0), "{}", r.text());
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_run_that_finds_no_slot_is_skipped_and_says_so() {
    require_root();
    let marker = HostDir::new();
    marker.set("hold");
    let f = sh_with(
        &format!("{}; printf 'Content-Type: text/plain\\n\\nok'", marker.sh_wait_while("hold")),
        &format!(
            "[limits]\nconcurrency = 1\ntimeout = \"30s\"\n{}\n[[schedule]]\ncalendar = \"{EVERY_2S}\"",
            marker.sandbox_toml()
        ),
    );
    let d = Daemon::start(&[("slow", &f)]);
    // The first run holds the function's one slot; the next elapse finds it taken.
    wait_lines(
        &d,
        &["schedule *:*:0/2 of slow skipped: slow runs at most 1 requests at once"],
        1,
        Duration::from_secs(20),
    );
    let s = schedules(&d, "slow");
    assert_eq!(s[0]["last"]["outcome"].as_str(), Some("skipped"), "{s}");
    assert!(s[0]["last"]["invocation_id"].is_null(), "{s}");
    marker.clear("hold");
    wait_lines(&d, &["REPORT slow ", " outcome=ok ", " trigger=schedule "], 1, Duration::from_secs(20));
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_daemon_with_schedules_does_not_exit_idle() {
    require_root();
    let mut d = Daemon::start_with(&[("tick", &tick(EVERY_2S))], "idle_exit = \"1s\"");
    wait_lines(&d, &["idle_exit is held off while functions have schedules"], 1, Duration::from_secs(10));
    // Three runs 2 s apart, each gap longer than the 1 s idle_exit.
    wait_lines(&d, &["REPORT tick ", " trigger=schedule "], 3, Duration::from_secs(20));
    assert_eq!(d.child.try_wait().unwrap(), None, "exited idle with a schedule:\n{}", d.logs());
    assert!(!d.logs().contains("stopping (idle)"), "{}", d.logs());
    // Without the file's schedules it goes idle and exits.
    d.write_function("tick", &common::sh("printf 'Content-Type: text/plain\\n\\nok'"));
    assert_eq!(d.wait_exit(Duration::from_secs(15)), Some(0), "no idle exit once the schedule went:\n{}", d.logs());
}
