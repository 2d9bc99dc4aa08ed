//! Warm Python functions (issue 11): every request forked from the function version's zygote
//! still gets a fresh sandbox of its own. From outside (Server-Timing, REPORT, metrics,
//! `/_/functions`, the host's /proc) and from inside the handler: the same layers as a cold
//! start, no state from another request, nothing left behind, and a zygote that is replaced
//! when it dies, changes with the function file, exits when idle and stays within the budget.
//! Needs root, as CI has: `sudo -E cargo test --test warm -- --include-ignored`.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{
    python, require_root, wait_warm, wait_zygote, zygote_info, zygote_processes, CgroupMode, Daemon, HostDir, Resp,
};
use serde_json::Value;

// errno values (asm-generic/errno-base.h): what the handlers report back.
const ENOENT: i64 = 2;
const EACCES: i64 = 13;
const EROFS: i64 = 30;

const HELLO: &str = "def handle(request):\n    return 'hello'";

/// `warm` or `cold`, from `Server-Timing: setup;dur=X;desc=warm, handler;dur=Y`.
fn start_of(r: &Resp) -> String {
    let timing = r.header("server-timing").unwrap_or_else(|| panic!("no Server-Timing: {r:?}"));
    let setup = timing.split(", ").next().unwrap_or_default();
    setup
        .split(';')
        .find_map(|p| p.strip_prefix("desc="))
        .unwrap_or_else(|| panic!("Server-Timing {timing:?} has no desc= on setup"))
        .to_owned()
}

fn invocation_id(r: &Resp) -> String {
    r.header("faas-invocation-id").unwrap_or_else(|| panic!("no Faas-Invocation-Id: {r:?}")).to_owned()
}

/// The response was served `start` (`warm` or `cold`), in the header and in its REPORT line.
fn assert_start(d: &Daemon, r: &Resp, start: &str) {
    assert_eq!(start_of(r), start, "Server-Timing of {r:?}\n{}", d.logs());
    let line = d.report_line(&invocation_id(r));
    assert!(line.contains(&format!(" start={start} ")), "the REPORT does not say start={start}: {line}");
}

/// GET `path`: 200 and served `start`; the response.
fn ok(d: &Daemon, path: &str, start: &str) -> Resp {
    let r = d.get(path);
    assert_eq!(r.status, 200, "{path}: {}\n{}", r.text(), d.logs());
    assert_start(d, &r, start);
    r
}

/// The sample `name` in the admin `/_/metrics`, 0 when the series does not exist (yet).
fn metric(d: &Daemon, name: &str) -> f64 {
    let text = d.admin_get("/_/metrics").text();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap_or_else(|_| panic!("{name}: not a number in {text}")))
}

/// Whether `pid` runs (exists and is not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(") ").map(|i| !s[i + 2..].starts_with(['Z', 'X'])))
        .unwrap_or(false)
}

/// Waits (10 s at most) until `pid` no longer runs.
fn wait_not_running(d: &Daemon, pid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(pid) {
        assert!(Instant::now() < deadline, "{what} (pid {pid}) still runs after 10 s:\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The processes a zygote forked that still exist: each request's init.
fn zygote_children(zygote: u32) -> Vec<u32> {
    common::all_processes().into_iter().filter(|p| p.ppid == zygote).map(|p| p.pid).collect()
}

/// Waits (20 s at most) until the log holds a `ready TAG` line of function stderr for every
/// tag: each of those handlers has done its work and now waits on a marker.
fn wait_ready_lines(d: &Daemon, tags: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs = d.logs();
        let missing: Vec<&String> = tags.iter().filter(|t| !logs.contains(&format!("]: ready {t}\n"))).collect();
        if missing.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "handlers {missing:?} never said ready:\n{logs}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Python that waits while the marker `go` is missing from `marker` (20 s at most, a hang
/// guard), after saying `ready TAG` on stderr: `hold(tag)`.
fn hold_py(marker: &HostDir) -> String {
    format!(
        r#"
import os as _os, sys as _sys, time as _time
def hold(tag):
    print("ready " + tag, file=_sys.stderr, flush=True)
    for _ in range(400):
        if _os.path.exists("{}/go"):
            return
        _time.sleep(0.05)
    raise TimeoutError("the test never set the marker")
"#,
        marker.path().display()
    )
}

/// Starts `path` in a thread; the response comes from `join`.
fn spawn_get(d: &Daemon, path: &str) -> std::thread::JoinHandle<Resp> {
    let url = d.url(path);
    std::thread::spawn(move || common::request_to(&url, "GET", b"", &[]))
}

// ---------------------------------------------------------------------------------------------
// Warm or cold
// ---------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn every_request_after_the_zygote_is_ready_is_warm_and_warm_false_is_cold() {
    require_root();
    let d = Daemon::start(&[("w", &python(HELLO, "")), ("c", &python(HELLO, "[sandbox]\nwarm = false"))]);
    assert_eq!(common::function_info(&d, "w")["start"], "warm");
    assert_eq!(common::function_info(&d, "c")["start"], "cold");
    assert_eq!(zygote_info(&d, "c"), Value::Null, "a warm = false function has no zygote");
    // The first request of a version starts its zygote and is served cold.
    let r = ok(&d, "/w", "cold");
    assert_eq!(r.text(), "hello");
    let pid = wait_warm(&d, "w");
    for _ in 0..5 {
        let r = ok(&d, "/w", "warm");
        assert_eq!(r.text(), "hello");
    }
    let z = zygote_info(&d, "w");
    assert_eq!(
        (z["state"].as_str(), z["pid"].as_u64(), z["requests"].as_u64()),
        (Some("ready"), Some(pid.into()), Some(5)),
        "{z}"
    );
    for _ in 0..3 {
        let r = ok(&d, "/c", "cold");
        assert_eq!(r.text(), "hello");
    }
    assert_eq!(zygote_info(&d, "c"), Value::Null);
    let zygotes: Vec<String> = zygote_processes(&d).into_iter().map(|(_, which)| which).collect();
    let version = &common::function_info(&d, "w")["version"];
    assert_eq!(zygotes, [format!("w {version}")], "one zygote, for w's version");
    assert_eq!(metric(&d, "faas_sandbox_starts_total{function=\"w\",start=\"warm\"}"), 5.0);
    assert_eq!(metric(&d, "faas_sandbox_starts_total{function=\"w\",start=\"cold\"}"), 1.0);
    assert_eq!(metric(&d, "faas_sandbox_starts_total{function=\"c\",start=\"cold\"}"), 3.0);
    assert_eq!(metric(&d, "faas_sandbox_starts_total{function=\"c\",start=\"warm\"}"), 0.0);
}

// ---------------------------------------------------------------------------------------------
// No request sees another's state
// ---------------------------------------------------------------------------------------------

/// Looks at every kind of process state a request could leave behind (`before`), then leaves
/// one of each (a module global, a file in /tmp, an environment variable, signal
/// dispositions and mask, a thread, an open fd, a module in sys.modules, a wakeup fd) and
/// looks again (`after`), which shows the probe sees each of them.
const STATE: &str = r#"
import os, signal, sys, threading, time
GLOBAL = {"writes": 0}

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split()[1]

def disposition(h):
    return getattr(h, "__qualname__", str(h))

def snapshot():
    wakeup = signal.set_wakeup_fd(-1)
    if wakeup != -1:
        signal.set_wakeup_fd(wakeup)
    return {
        "global": GLOBAL["writes"],
        "tmp": sorted(os.listdir("/tmp")),
        "env": sorted(k for k in os.environ if k not in ("FAAS_INVOCATION_ID", "FAAS_DEADLINE_MS")),
        "leak_env": os.environ.get("FAAS_LEAK"),
        "signals": {signal.Signals(s).name: disposition(signal.getsignal(s)) for s in
                    (signal.SIGUSR1, signal.SIGTERM, signal.SIGCHLD, signal.SIGINT, signal.SIGPIPE, signal.SIGHUP)},
        "sig_ign": status("SigIgn"),
        "sig_cgt": status("SigCgt"),
        "sig_blk": status("SigBlk"),
        "wakeup_fd": wakeup,
        "threads": threading.active_count(),
        "os_threads": status("Threads"),
        "fds": sorted(int(f) for f in os.listdir("/proc/self/fd")),
        "module": "faas_leak" in sys.modules,
    }

def pollute():
    GLOBAL["writes"] += 1
    with open("/tmp/leak", "w") as f:
        f.write("x")
    os.environ["FAAS_LEAK"] = "1"
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *a: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
    os.open("/tmp/leak", os.O_RDONLY)
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)
    sys.modules["faas_leak"] = GLOBAL

def handle(request):
    before = snapshot()
    pollute()
    return {"before": before, "after": snapshot()}
"#;

/// Request N leaves state of every kind behind, and request N+1, forked from the same zygote,
/// sees none of it: its view is the one a cold start of the same handler has.
fn no_state_crosses_requests(extra: &str) {
    require_root();
    let d = Daemon::start(&[("state", &python(STATE, extra))]);
    let cold = ok(&d, "/state", "cold").json();
    let pristine = &cold["before"];
    // What "pristine" means, spelled out: the probe is no tautology.
    assert_eq!(pristine["global"], 0, "{cold}");
    assert_eq!(pristine["tmp"], serde_json::json!([]), "{cold}");
    assert_eq!(pristine["leak_env"], Value::Null, "{cold}");
    assert_eq!(pristine["signals"]["SIGUSR1"], "0", "SIG_DFL: {cold}");
    assert_eq!(pristine["wakeup_fd"], -1, "{cold}");
    assert_eq!((pristine["threads"].as_u64(), pristine["os_threads"].as_str()), (Some(1), Some("1")), "{cold}");
    assert_eq!(pristine["module"], false, "{cold}");
    // And the probe sees each kind of state once it is there.
    let after = &cold["after"];
    for key in [
        "global",
        "tmp",
        "leak_env",
        "signals",
        "sig_ign",
        "sig_cgt",
        "sig_blk",
        "wakeup_fd",
        "threads",
        "fds",
        "module",
    ] {
        assert_ne!(after[key], pristine[key], "the probe does not see {key} change: {cold}");
    }
    let zygote = wait_warm(&d, "state");
    for n in 1..=3 {
        let warm = ok(&d, "/state", "warm").json();
        assert_eq!(warm["before"], *pristine, "warm request {n} does not start from what a cold start sees");
        assert_eq!(warm["after"], *after, "warm request {n} changed state differently from a cold start");
        let z = zygote_info(&d, "state");
        assert_eq!((z["pid"].as_u64(), z["requests"].as_u64()), (Some(zygote.into()), Some(n)), "the same zygote: {z}");
    }
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn no_state_crosses_warm_requests() {
    no_state_crosses_requests("");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn no_state_crosses_warm_requests_with_the_handler_imported_in_the_zygote() {
    // The module (and its GLOBAL) lives in the zygote; each request writes its own copy.
    no_state_crosses_requests("[sandbox]\npreload_handler = true");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn concurrent_warm_requests_do_not_see_each_other() {
    require_root();
    const N: usize = 8;
    let marker = HostDir::new();
    let src = format!(
        r#"{}
import os
SEEN = []
def handle(request):
    me = request.query.get("id")
    if me is None:
        return "warming up"
    SEEN.append(me)
    with open("/tmp/" + me, "w") as f:
        f.write(me)
    hold(me)
    return {{
        "id": me,
        "global": SEEN,
        "tmp": sorted(os.listdir("/tmp")),
        "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "pid": os.getpid(),
        "uid": os.getuid(),
        "ns": {{n: os.readlink("/proc/self/ns/" + n) for n in ("pid", "mnt", "net", "ipc", "uts")}},
    }}
"#,
        hold_py(&marker)
    );
    let d = Daemon::start(&[("par", &python(&src, &marker.sandbox_toml()))]);
    ok(&d, "/par", "cold");
    let zygote = wait_warm(&d, "par");
    let ids: Vec<String> = (0..N).map(|i| format!("r{i}")).collect();
    let threads: Vec<_> = ids.iter().map(|id| spawn_get(&d, &format!("/par?id={id}"))).collect();
    // Every handler has written its file and global and waits: they all overlap now.
    wait_ready_lines(&d, &ids);
    assert_eq!(zygote_children(zygote).len(), N, "{N} requests forked from the zygote at once");
    marker.set("go");
    let answers: Vec<Value> = threads
        .into_iter()
        .map(|t| {
            let r = t.join().unwrap();
            assert_eq!(r.status, 200, "{}\n{}", r.text(), d.logs());
            assert_start(&d, &r, "warm");
            r.json()
        })
        .collect();
    let mut uids = BTreeSet::new();
    let mut namespaces = BTreeSet::new();
    for j in &answers {
        let me = j["id"].as_str().unwrap();
        assert_eq!(j["global"], serde_json::json!([me]), "another request's global: {j}");
        assert_eq!(j["tmp"], serde_json::json!([me]), "another request's /tmp: {j}");
        assert_eq!(
            (j["pid"].as_i64(), &j["procs"]),
            (Some(1), &serde_json::json!([1])),
            "another request's processes: {j}"
        );
        uids.insert(j["uid"].as_u64().unwrap());
        for ns in j["ns"].as_object().unwrap().values() {
            assert!(
                namespaces.insert(ns.as_str().unwrap().to_owned()),
                "a namespace shared by two requests: {ns} in {answers:?}"
            );
        }
    }
    assert_eq!(uids.len(), N, "concurrent requests share a uid: {uids:?}");
    assert_eq!(zygote_info(&d, "par")["pid"].as_u64(), Some(zygote.into()));
}
