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

/// The processes a zygote forked that still exist, the spare it keeps ready apart: each
/// request's init.
fn zygote_children(zygote: u32) -> Vec<u32> {
    common::all_processes()
        .into_iter()
        .filter(|p| p.ppid == zygote && !common::is_spare(p.pid))
        .map(|p| p.pid)
        .collect()
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

/// Waits (30 s at most) until the zygote of `name` has a spare sandbox made ahead and no
/// request in flight (a spare being made, or a request not yet reaped, counts as one).
fn wait_idle_with_spare(d: &Daemon, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let z = zygote_info(d, name);
        if z["spare"] == true && z["in_flight"] == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the zygote of {name} is not idle with a spare after 30 s: {z}\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `path` in a thread; the response comes from `join`.
fn spawn_get(d: &Daemon, path: &str) -> std::thread::JoinHandle<Resp> {
    let url = d.url(path);
    std::thread::spawn(move || common::request_to(&url, "GET", b"", &[]))
}

/// The JSON answers of requests started with `spawn_get`, each a 200 served warm.
fn warm_answers(d: &Daemon, threads: Vec<std::thread::JoinHandle<Resp>>) -> Vec<Value> {
    threads
        .into_iter()
        .map(|t| {
            let r = t.join().unwrap();
            assert_eq!(r.status, 200, "{}\n{}", r.text(), d.logs());
            assert_start(d, &r, "warm");
            r.json()
        })
        .collect()
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
    // `requests` counts the zygote's forks, spares made ahead included: one at least per
    // warm request, as no process serves two.
    let z = zygote_info(&d, "w");
    assert_eq!((z["state"].as_str(), z["pid"].as_u64()), (Some("ready"), Some(pid.into())), "{z}");
    assert!(z["requests"].as_u64().unwrap_or(0) >= 5, "{z}");
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
import ctypes, os, signal, subprocess, sys, threading, time
GLOBAL = {"writes": 0}
SKIP = ("FAAS_INVOCATION_ID", "FAAS_DEADLINE_MS")

def libc_environ():
    # C's view (getenv, exec*): the NULL-terminated array libc's environ points at.
    environ = ctypes.POINTER(ctypes.c_char_p).in_dll(ctypes.CDLL(None), "environ")
    names, i = [], 0
    while environ[i] is not None:
        names.append(environ[i].split(b"=", 1)[0].decode())
        i += 1
    return sorted(n for n in names if n not in SKIP)

def child_environ():
    out = subprocess.run(["/usr/bin/env", "-0"], capture_output=True, env=None, check=True).stdout
    return sorted(e.split(b"=", 1)[0].decode() for e in out.split(b"\0") if e and e.split(b"=", 1)[0].decode() not in SKIP)

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
        "libc_env": libc_environ(),
        "child_env": child_environ(),
        "proc_environ": sorted(e.split(b"=", 1)[0].decode() for e in open("/proc/self/environ", "rb").read().split(b"\0")
                               if e and not e.startswith((b"FAAS_INVOCATION_ID=", b"FAAS_DEADLINE_MS="))),
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
        "libc_env",
        "child_env",
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
        assert_eq!(z["pid"].as_u64(), Some(zygote.into()), "the same zygote: {z}");
        assert!(z["requests"].as_u64().unwrap_or(0) >= n, "a fork per warm request: {z}");
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
    // A spare being made is a child too until it names itself faas-spare (after its import).
    let deadline = Instant::now() + Duration::from_secs(10);
    while zygote_children(zygote).len() != N && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(zygote_children(zygote).len(), N, "{N} requests forked from the zygote at once");
    marker.set("go");
    let answers = warm_answers(&d, threads);
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

// ---------------------------------------------------------------------------------------------
// The layers of each warm request
// ---------------------------------------------------------------------------------------------

/// What a handler sees of its own sandbox; `?tag=T` holds it on the marker after it looked.
const GUARANTEES: &str = r#"
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
PR_GET_DUMPABLE = 3
def errno_of(f):
    try:
        f()
        return 0
    except OSError as e:
        return e.errno

def bind():
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 8080))
    finally:
        s.close()

def handle(request):
    status = dict(l.rstrip("\n").split(":\t", 1) for l in open("/proc/self/status") if ":\t" in l)
    mounts = {l.split()[4]: l.split(" - ")[1].split()[0] for l in open("/proc/self/mountinfo")}
    out = {
        "pid": os.getpid(),
        "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
        "caps": {k: status[k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
        "no_new_privs": status["NoNewPrivs"],
        "seccomp": status["Seccomp"],
        "hostname": socket.gethostname(),
        "fds": sorted(int(f) for f in os.listdir("/proc/self/fd")),
        "ns": {n: os.readlink("/proc/self/ns/" + n) for n in ("pid", "mnt", "net", "ipc", "uts")},
        "tmp": os.listdir("/tmp"),
        "tmp_fs": mounts.get("/tmp"),
        "proc_fs": mounts.get("/proc"),
        "write_tmp": errno_of(lambda: open("/tmp/mine", "w").close()),
        "write_root": errno_of(lambda: open("/x", "w").close()),
        "write_code": errno_of(lambda: open("/code/x", "w").close()),
        "write_usr": errno_of(lambda: open("/usr/x", "w").close()),
        "read_shadow": errno_of(lambda: open("/etc/shadow").read()),
        "tcp_bind": errno_of(bind),
        # Dumpable, as after an exec: its /proc/self files are its own (a setuid without an
        # exec would leave them root's).
        "dumpable": libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0),
        "read_environ": errno_of(lambda: open("/proc/self/environ", "rb").read()),
    }
    tag = request.query.get("tag")
    if tag:
        hold(tag)
    return out
"#;

/// The keys of a GUARANTEES answer that are the same for every request, warm or cold.
const SAME_FOR_ALL: &[&str] = &[
    "pid",
    "procs",
    "groups",
    "caps",
    "no_new_privs",
    "seccomp",
    "hostname",
    "fds",
    "tmp",
    "tmp_fs",
    "proc_fs",
    "write_tmp",
    "write_root",
    "write_code",
    "write_usr",
    "read_shadow",
    "tcp_bind",
    "dumpable",
    "read_environ",
];

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn each_warm_request_gets_every_layer_of_a_cold_one() {
    require_root();
    let marker = HostDir::new();
    let src = format!("{}\n{GUARANTEES}", hold_py(&marker));
    let d = Daemon::start(&[("layers", &python(&src, &marker.sandbox_toml()))]);
    // A TCP bind refused with EACCES in the sandbox's own network namespace is Landlock's doing.
    if !common::require_landlock_abi(&d, 4) {
        return;
    }
    let cold = ok(&d, "/layers", "cold").json();
    println!("cold: {cold}");
    let zygote = wait_warm(&d, "layers");
    // Two at once, so that their uids and namespaces can be told apart.
    let tags = ["a".to_owned(), "b".to_owned()];
    let threads: Vec<_> = tags.iter().map(|t| spawn_get(&d, &format!("/layers?tag={t}"))).collect();
    wait_ready_lines(&d, &tags);
    marker.set("go");
    let warm = warm_answers(&d, threads);
    let ns_of = |pid: u32, ns: &str| std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
    for j in warm.iter().chain([&cold]) {
        assert_eq!(j["pid"], 1, "pid 1 of its own pid namespace: {j}");
        assert_eq!(j["procs"], serde_json::json!([1]), "/proc shows its own processes only: {j}");
        let uid = j["uid"].as_u64().unwrap() as u32;
        assert!(uid >= d.uids.0 && uid - d.uids.0 < d.uids.1, "uid {uid} is not from the pool {:?}: {j}", d.uids);
        assert_eq!((&j["euid"], &j["gid"]), (&j["uid"], &j["uid"]), "{j}");
        assert_eq!(j["groups"], serde_json::json!([]), "no supplementary groups: {j}");
        for (set, value) in j["caps"].as_object().unwrap() {
            assert_eq!(value, "0000000000000000", "{set} is not empty: {j}");
        }
        assert_eq!((j["no_new_privs"].as_str(), j["seccomp"].as_str()), (Some("1"), Some("2")), "{j}");
        assert_eq!(j["hostname"], "faas", "{j}");
        assert_eq!((j["tmp_fs"].as_str(), j["proc_fs"].as_str()), (Some("tmpfs"), Some("proc")), "{j}");
        assert_eq!(j["tmp"], serde_json::json!([]), "a fresh /tmp: {j}");
        assert_eq!(j["write_tmp"], 0, "{j}");
        for key in ["write_root", "write_code", "write_usr"] {
            assert!([EACCES, EROFS].contains(&j[key].as_i64().unwrap()), "{key}: {j}");
        }
        assert_eq!(j["read_shadow"], ENOENT, "{j}");
        assert_eq!(j["tcp_bind"], EACCES, "Landlock: {j}");
        assert_eq!((&j["dumpable"], &j["read_environ"]), (&Value::from(1), &Value::from(0)), "{j}");
        // Beside python's own (the wrapper's stdout and listdir's), only stdin, stdout and stderr.
        let fds: Vec<u64> = j["fds"].as_array().unwrap().iter().map(|f| f.as_u64().unwrap()).collect();
        assert_eq!(&fds[..3], [0, 1, 2], "{j}");
        assert!(fds.len() <= 5, "more fds than python opens itself: {j}");
    }
    for j in &warm {
        for key in SAME_FOR_ALL {
            assert_eq!(j[key], cold[key], "{key} differs between a warm request and a cold one");
        }
        // Nothing shared with the zygote it was forked from, nor with the host.
        for (ns, id) in j["ns"].as_object().unwrap() {
            assert_ne!(ns_of(zygote, ns).to_string_lossy(), id.as_str().unwrap(), "{ns} namespace of the zygote: {j}");
            assert_ne!(
                ns_of(std::process::id(), ns).to_string_lossy(),
                id.as_str().unwrap(),
                "{ns} namespace of the host: {j}"
            );
        }
    }
    assert_ne!(warm[0]["uid"], warm[1]["uid"], "two requests at once share a uid");
    for (ns, id) in warm[0]["ns"].as_object().unwrap() {
        assert_ne!(*id, warm[1]["ns"][ns], "two requests at once share a {ns} namespace");
    }
}

// ---------------------------------------------------------------------------------------------
// The deadline
// ---------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn the_deadline_kills_a_warm_request_and_nothing_of_it_remains() {
    require_root();
    // `?sleep=1`: a child of its own that sleeps too, which must go with the request.
    let src = r#"
import os, time
def handle(request):
    if request.query.get("sleep"):
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        time.sleep(60)
    return "ok"
"#;
    let d = Daemon::start(&[("slow", &python(src, "[limits]\ntimeout = \"2s\""))]);
    ok(&d, "/slow", "cold");
    let zygote = wait_warm(&d, "slow");
    ok(&d, "/slow", "warm");
    let r = d.get("/slow?sleep=1");
    assert_eq!((r.status, r.problem()), (504, "timeout".to_owned()), "{}", d.logs());
    let line = d.report_line(&invocation_id(&r));
    assert!(line.contains(" outcome=timeout ") && line.contains(" start=warm "), "{line}");
    d.wait_gone_from_host();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !zygote_children(zygote).is_empty() {
        assert!(Instant::now() < deadline, "the zygote still has children: {:?}", zygote_children(zygote));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(running(zygote), "the zygote went with the request:\n{}", d.logs());
    let r = ok(&d, "/slow", "warm");
    assert_eq!(r.text(), "ok");
    assert_eq!(zygote_info(&d, "slow")["pid"].as_u64(), Some(zygote.into()));
}

// ---------------------------------------------------------------------------------------------
// The zygote's life
// ---------------------------------------------------------------------------------------------

fn sigkill(pid: u32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_killed_zygote_is_replaced() {
    require_root();
    let d = Daemon::start(&[("k", &python(HELLO, ""))]);
    ok(&d, "/k", "cold");
    let first = wait_warm(&d, "k");
    ok(&d, "/k", "warm");
    sigkill(first);
    wait_not_running(&d, first, "the killed zygote");
    // The daemon learns of it on the next request, which starts cold and a new zygote.
    assert_eq!(ok(&d, "/k", "cold").text(), "hello");
    let second = wait_warm(&d, "k");
    assert_ne!(first, second, "the same zygote pid after a kill");
    for _ in 0..3 {
        assert_eq!(ok(&d, "/k", "warm").text(), "hello");
    }
    assert_eq!(zygote_processes(&d).len(), 1, "{:?}", zygote_processes(&d));
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_request_in_flight_when_its_zygote_dies_ends_with_a_problem() {
    require_root();
    let marker = HostDir::new();
    let src = format!(
        "{}\ndef handle(request):\n    if request.query.get('hold'):\n        hold('k')\n    return 'done'\n",
        hold_py(&marker)
    );
    let d = Daemon::start(&[("k", &python(&src, &marker.sandbox_toml()))]);
    ok(&d, "/k", "cold");
    let zygote = wait_warm(&d, "k");
    let t = spawn_get(&d, "/k?hold=1");
    wait_ready_lines(&d, &["k".to_owned()]);
    sigkill(zygote);
    let started = Instant::now();
    let r = t.join().unwrap();
    // The harness's client would fail the test at 60 s; the request ends well before its own
    // deadline (the default 30 s) because its sandbox is gone, not because time ran out.
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert!(r.status >= 500, "{} {}\n{}", r.status, r.text(), d.logs());
    println!("in flight when the zygote died: {} {}", r.status, r.text());
    let problem = r.problem();
    assert_eq!((r.status, problem.as_str()), (502, "crashed"), "{}", r.text());
    let line = d.report_line(&invocation_id(&r));
    assert!(line.contains(" start=warm "), "{line}");
    d.wait_gone_from_host();
    marker.set("go");
    assert_eq!(ok(&d, "/k", "cold").text(), "done");
    let second = wait_warm(&d, "k");
    assert_ne!(zygote, second);
    assert_eq!(ok(&d, "/k", "warm").text(), "done");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_changed_function_file_gets_a_new_zygote_and_the_old_one_ends_after_its_request() {
    require_root();
    let marker = HostDir::new();
    let function = |answer: &str| {
        python(
            &format!("{}\ndef handle(request):\n    if request.query.get('hold'):\n        hold('old')\n    return '{answer}'\n", hold_py(&marker)),
            &marker.sandbox_toml(),
        )
    };
    let d = Daemon::start(&[("v", &function("one"))]);
    assert_eq!(ok(&d, "/v", "cold").text(), "one");
    let old = wait_warm(&d, "v");
    let old_version = common::function_info(&d, "v")["version"].clone();
    let t = spawn_get(&d, "/v?hold=1");
    wait_ready_lines(&d, &["old".to_owned()]);
    d.write_function("v", &function("two"));
    // The new version's first request is cold; it starts the new version's zygote.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = d.get("/v");
        assert_eq!(r.status, 200, "{}", r.text());
        if r.text() == "two" {
            assert_start(&d, &r, "cold");
            break;
        }
        assert!(Instant::now() < deadline, "the changed file was never loaded:\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(common::function_info(&d, "v")["version"], old_version);
    let new = wait_warm(&d, "v");
    assert_ne!(old, new, "the new version has the old version's zygote");
    assert_eq!(ok(&d, "/v", "warm").text(), "two");
    // The old zygote stays while its request runs, and goes once it is done.
    assert!(running(old), "the old zygote ended with its request in flight:\n{}", d.logs());
    marker.set("go");
    let r = t.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "one"), "{}", d.logs());
    assert_start(&d, &r, "warm");
    wait_not_running(&d, old, "the old version's zygote");
    let zygotes = zygote_processes(&d);
    assert_eq!(zygotes.iter().map(|z| z.0).collect::<Vec<_>>(), [new], "{zygotes:?}");
    let listed = d.admin_get("/_/functions").json()["zygotes"].clone();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "the old version is still listed: {listed}");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn an_idle_zygote_exits_and_comes_back_on_use() {
    require_root();
    let d = Daemon::start_with(&[("idle", &python(HELLO, ""))], "[warm]\nidle_exit = \"1s\"");
    ok(&d, "/idle", "cold");
    let first = wait_warm(&d, "idle");
    ok(&d, "/idle", "warm");
    let z = wait_zygote(&d, "idle", "cold");
    assert_eq!(z["pid"], Value::Null, "{z}");
    wait_not_running(&d, first, "the idle zygote");
    assert_eq!(zygote_processes(&d), []);
    ok(&d, "/idle", "cold");
    let second = wait_warm(&d, "idle");
    assert_ne!(first, second);
    ok(&d, "/idle", "warm");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_full_memory_budget_keeps_one_zygote_and_serves_the_rest_cold() {
    require_root();
    let marker = HostDir::new();
    let src = format!(
        "{}\ndef handle(request):\n    if request.query.get('hold'):\n        hold('b')\n    return 'ok'\n",
        hold_py(&marker)
    );
    let f = python(&src, &marker.sandbox_toml());
    // One byte: any ready zygote fills it.
    let d = Daemon::start_with(&[("a", &f), ("b", &f)], "[warm]\nmemory = \"1\"");
    let ready = |d: &Daemon| -> Vec<String> {
        let listed = d.admin_get("/_/functions").json()["zygotes"].clone();
        listed.as_array().unwrap().iter().filter(|z| z["state"] == "ready").map(|z| z["function"].to_string()).collect()
    };
    ok(&d, "/a", "cold");
    let a = wait_warm(&d, "a");
    ok(&d, "/a", "warm");
    // b's zygote takes the budget from a's, which is idle: a's stops. Idle once it has made
    // the spares that replace the one the request took and the request's sandbox is reaped
    // (its answer, whole at its Content-Length, came first): until then a's zygote counts as busy.
    wait_idle_with_spare(&d, "a");
    ok(&d, "/b", "cold");
    let b = wait_warm(&d, "b");
    wait_not_running(&d, a, "a's zygote, stopped for b's");
    assert_eq!(zygote_info(&d, "a")["state"], "cold");
    assert_eq!(zygote_processes(&d).iter().map(|z| z.0).collect::<Vec<_>>(), [b]);
    // With a request in flight b's zygote is not idle: a is served cold, and says why.
    let t = spawn_get(&d, "/b?hold=1");
    wait_ready_lines(&d, &["b".to_owned()]);
    for _ in 0..3 {
        ok(&d, "/a", "cold");
        let z = zygote_info(&d, "a");
        assert_eq!(z["state"], "failed", "{z}");
        assert!(z["error"].as_str().unwrap_or_default().contains("[warm] memory"), "{z}");
        assert_eq!(ready(&d).len(), 1, "{:?}", ready(&d));
    }
    assert!(running(b), "b's zygote was stopped with a request in flight");
    marker.set("go");
    let r = t.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_start(&d, &r, "warm");
    assert_eq!(zygote_processes(&d).iter().map(|z| z.0).collect::<Vec<_>>(), [b]);
}

// ---------------------------------------------------------------------------------------------
// seccomp
// ---------------------------------------------------------------------------------------------

/// 502, problem type syscall-denied naming `syscall`, and the REPORT line says so and `start`.
fn assert_syscall_denied(d: &Daemon, r: &Resp, syscall: &str, start: &str) {
    assert_eq!(
        r.status,
        502,
        "{start} {syscall}: expected syscall-denied, got {}: {}\n{}",
        r.status,
        r.text(),
        d.logs()
    );
    assert_eq!(r.problem(), "syscall-denied", "{}", r.text());
    let detail = r.json()["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains(&format!("({syscall})")), "detail does not name {syscall}: {detail}");
    let line = d.report_line(&invocation_id(r));
    assert!(
        line.contains(" outcome=syscall-denied ") && line.contains(&format!(" syscall={syscall} ")),
        "REPORT does not say outcome=syscall-denied syscall={syscall}: {line}"
    );
    assert!(line.contains(&format!(" start={start} ")), "{line}");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_denied_syscall_from_a_warm_handler_is_reported_as_from_a_cold_one() {
    require_root();
    // mount and unshare are allowed by the zygote's own filter (its children need them), bpf
    // is denied there too: the request's filter must decide alone either way.
    let src = format!(
        r#"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def handle(request):
    call = request.query.get("call")
    if call == "mount":
        return {{"returned": libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)}}
    if call == "unshare":
        return {{"returned": libc.unshare(0x10000000)}}
    if call == "bpf":
        return {{"returned": libc.syscall({}, 5, None, 0)}}
    return "ok"
"#,
        nix::libc::SYS_bpf
    );
    let d = Daemon::start(&[("sys", &python(&src, "")), ("cold", &python(&src, "[sandbox]\nwarm = false"))]);
    ok(&d, "/sys", "cold");
    let zygote = wait_warm(&d, "sys");
    for (call, syscall) in [("mount", "mount"), ("unshare", "unshare"), ("bpf", "bpf")] {
        let r = d.get(&format!("/sys?call={call}"));
        assert_syscall_denied(&d, &r, syscall, "warm");
        let r = d.get(&format!("/cold?call={call}"));
        assert_syscall_denied(&d, &r, syscall, "cold");
    }
    assert_eq!(zygote_info(&d, "sys")["pid"].as_u64(), Some(zygote.into()), "the zygote went with the request");
    ok(&d, "/sys", "warm");
}

// ---------------------------------------------------------------------------------------------
// preload
// ---------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn preload_imports_in_the_zygote_and_a_missing_module_serves_cold() {
    require_root();
    let d = Daemon::start(&[
        ("json", &python(HELLO, "[sandbox]\npreload = [\"json\"]")),
        ("missing", &python(HELLO, "[sandbox]\npreload = [\"faas_no_such_module\"]")),
    ]);
    ok(&d, "/json", "cold");
    wait_warm(&d, "json");
    assert_eq!(ok(&d, "/json", "warm").text(), "hello");
    assert_eq!(ok(&d, "/missing", "cold").text(), "hello");
    // Starting, then failed (never ready).
    let deadline = Instant::now() + Duration::from_secs(30);
    let z = loop {
        let z = zygote_info(&d, "missing");
        if z["state"] != "starting" {
            break z;
        }
        assert!(Instant::now() < deadline, "still starting after 30 s: {z}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(z["state"], "failed", "{z}");
    let error = z["error"].as_str().unwrap_or_default();
    assert!(error.contains("faas_no_such_module"), "the error does not name the module: {z}");
    assert_eq!(z["pid"], Value::Null, "{z}");
    for _ in 0..3 {
        assert_eq!(ok(&d, "/missing", "cold").text(), "hello");
    }
    let zygotes: Vec<String> = zygote_processes(&d).into_iter().map(|z| z.1).collect();
    assert!(zygotes.iter().all(|z| z.starts_with("json ")), "{zygotes:?}");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn without_the_native_steps_no_zygote_starts_and_requests_are_served_cold() {
    require_root();
    // A copy of the daemon where it finds no libfaas_zygote.so: not beside it, not in ../lib/faas.
    let bin = tempfile::tempdir().unwrap();
    let exe = bin.path().join("faas");
    std::fs::copy(env!("CARGO_BIN_EXE_faas"), &exe).unwrap();
    let d = Daemon::start_opts(&[("w", &python(HELLO, ""))], common::Options { exe: Some(&exe), ..Default::default() });
    assert_eq!(ok(&d, "/w", "cold").text(), "hello");
    let z = wait_zygote(&d, "w", "failed");
    let error = z["error"].as_str().unwrap_or_default();
    assert!(error.contains("libfaas_zygote.so") && error.contains("missing"), "the error does not say so: {z}");
    assert_eq!(z["pid"], Value::Null, "{z}");
    for _ in 0..3 {
        assert_eq!(ok(&d, "/w", "cold").text(), "hello");
    }
    assert_eq!(zygote_processes(&d), [], "a zygote runs without its native steps");
    assert!(d.logs().contains("libfaas_zygote.so"), "the log does not name the library:\n{}", d.logs());
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn random_numbers_do_not_repeat_across_warm_requests() {
    require_root();
    // random and numpy seed their global generators when imported: preloaded, every request's
    // copy of the zygote would draw the same numbers unless each child seeds them again.
    // OpenSSL's generator must not repeat either (it seeds on first use, and a fork check by
    // pid would not see one: zygote and child are both pid 1 of their namespaces).
    let probe = std::process::Command::new("/usr/bin/python3").args(["-c", "import numpy"]).status().unwrap();
    assert!(probe.success(), "this test needs numpy for /usr/bin/python3: apt-get install python3-numpy");
    let src = "import random, ssl\nimport numpy\n\ndef handle(request):\n    \
               return {'random': random.random(), 'numpy': float(numpy.random.rand()), 'ssl': ssl.RAND_bytes(8).hex()}";
    // tls: OpenSSL's generator already used in the zygote (an SSLContext made at import, with
    // preload_handler), as by a preloaded client library.
    let tls = "import ssl, tempfile\nCTX = ssl.create_default_context()\nssl.RAND_bytes(8)\n\
               NAME = next(tempfile._get_candidate_names())\n\
               def handle(request):\n    \
               return {'ssl': ssl.RAND_bytes(8).hex(), 'tempfile': next(tempfile._get_candidate_names())}";
    let d = Daemon::start(&[
        ("rnd", &python(src, "[sandbox]\npreload = [\"random\", \"numpy\"]")),
        ("tls", &python(tls, "[sandbox]\npreload_handler = true")),
    ]);
    for (name, keys) in [("rnd", &["random", "numpy", "ssl"][..]), ("tls", &["ssl", "tempfile"][..])] {
        ok(&d, &format!("/{name}"), "cold");
        wait_warm(&d, name);
        let draws: Vec<serde_json::Value> = (0..4).map(|_| ok(&d, &format!("/{name}"), "warm").json()).collect();
        for key in keys {
            let values: std::collections::BTreeSet<String> = draws.iter().map(|j| j[key].to_string()).collect();
            assert_eq!(values.len(), draws.len(), "{name}: {key} repeats across warm requests: {draws:?}");
        }
    }
    // Each child gave random's and numpy's generators their fresh state in place, not through
    // the slower seeding zygote.py falls back to (and says so).
    assert!(!d.logs().contains("each child reseeds it with"), "a fallback:\n{}", d.logs());
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn preload_handler_runs_the_module_once_in_the_zygote() {
    require_root();
    // IMPORTED is when the module's top level ran; CALLS counts calls in this process.
    let src = r#"
import time
IMPORTED = time.time_ns()
CALLS = 0
def handle(request):
    global CALLS
    CALLS += 1
    return {"imported": IMPORTED, "calls": CALLS}
"#;
    let d = Daemon::start(&[("pre", &python(src, "[sandbox]\npreload_handler = true")), ("each", &python(src, ""))]);
    let answers = |name: &str| -> Vec<Value> {
        ok(&d, &format!("/{name}"), "cold");
        wait_warm(&d, name);
        (0..3).map(|_| ok(&d, &format!("/{name}"), "warm").json()).collect()
    };
    let pre = answers("pre");
    let each = answers("each");
    for j in pre.iter().chain(&each) {
        assert_eq!(j["calls"], 1, "a request saw another's call: {j}");
    }
    let imported = |js: &[Value]| js.iter().map(|j| j["imported"].as_u64().unwrap()).collect::<BTreeSet<_>>();
    assert_eq!(imported(&pre).len(), 1, "preload_handler: imported once, in the zygote: {pre:?}");
    assert_eq!(imported(&each).len(), 3, "without preload_handler each request imports it: {each:?}");
}

/// The zygote forks without CPython's after-fork work (wrappers/zygote.py, child()): an at-fork
/// hook a module registered in the zygote still runs in each child, once, and threads still
/// work there (what the skipped re-initialisation is for).
#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn at_fork_hooks_of_the_zygotes_modules_run_in_each_child_and_threads_work() {
    require_root();
    let src = r#"
import os, threading
RAN = []
os.register_at_fork(after_in_child=lambda: RAN.append(os.getpid()))
LOCK = threading.Lock()
os.register_at_fork(before=LOCK.acquire, after_in_child=LOCK.release)
def handle(request):
    seen = []
    t = threading.Thread(target=lambda: seen.append(threading.current_thread() is not threading.main_thread()))
    t.start()
    t.join(5)
    return {"ran": RAN, "pid": os.getpid(), "thread": seen, "main": threading.current_thread() is threading.main_thread(), "lock": LOCK.locked()}
"#;
    let d = Daemon::start(&[("hooks", &python(src, "[sandbox]\npreload_handler = true"))]);
    ok(&d, "/hooks", "cold");
    wait_warm(&d, "hooks");
    for _ in 0..3 {
        let j = ok(&d, "/hooks", "warm").json();
        assert_eq!(j["ran"], serde_json::json!([j["pid"]]), "the hook ran once, in this child: {j}");
        assert_eq!(j["thread"], serde_json::json!([true]), "a thread ran, and knew it was not the main one: {j}");
        assert_eq!(j["main"], true, "{j}");
        assert_eq!(j["lock"], false, "a before/after pair left its lock as it found it: {j}");
    }
    assert!(!d.logs().contains("at-fork hook failed"), "a hook failed in a child:\n{}", d.logs());
}

/// A request whose environment is larger than one datagram to the zygote may be (8 headers of
/// 32 KB are enough) is served cold, and the zygote stays: a client must not be able to kill
/// it, and every request in it, at will.
#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_request_too_large_for_the_zygote_is_served_cold_and_the_zygote_stays() {
    require_root();
    let src = "import os\ndef handle(request):\n    return str(sum(len(v) for k, v in os.environ.items() if k.startswith('HTTP_X_BIG')))\n";
    let d = Daemon::start(&[("big", &python(src, ""))]);
    ok(&d, "/big", "cold");
    let zygote = wait_warm(&d, "big");
    ok(&d, "/big", "warm");
    let value = "a".repeat(32 << 10);
    let names: Vec<String> = (0..8).map(|i| format!("x-big-{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), value.as_str())).collect();
    let r = common::request_to(&d.url("/big"), "GET", b"", &headers);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), d.logs());
    assert_start(&d, &r, "cold");
    assert_eq!(r.text(), (8 * value.len()).to_string());
    assert_eq!(wait_warm(&d, "big"), zygote, "the zygote was replaced:\n{}", d.logs());
    ok(&d, "/big", "warm");
}

/// asyncio, half a zygote's memory, is imported in the zygote only for a handler module with an
/// `async def` (or when `preload` names it); an async handler then finds it there.
#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn the_zygote_imports_asyncio_only_for_an_async_handler() {
    require_root();
    let sync =
        "import sys\nAT_IMPORT = 'asyncio' in sys.modules\ndef handle(request):\n    return {'asyncio': AT_IMPORT}\n";
    let asy = "import sys\nAT_IMPORT = 'asyncio' in sys.modules\nasync def handle(request):\n    return {'asyncio': AT_IMPORT}\n";
    let d = Daemon::start(&[
        ("sync", &python(sync, "")),
        ("asy", &python(asy, "")),
        ("listed", &python(sync, "[sandbox]\npreload = [\"asyncio\"]")),
    ]);
    for (name, want) in [("sync", false), ("asy", true), ("listed", true)] {
        ok(&d, &format!("/{name}"), "cold");
        wait_warm(&d, name);
        let j = ok(&d, &format!("/{name}"), "warm").json();
        assert_eq!(j["asyncio"], want, "{name}: asyncio imported before the handler's module: {j}");
    }
}

/// A spare imports the module before its request: the top level sees the function's `env`
/// (and not a request's CGI variables, which no request has brought yet), `handle()` sees the
/// request's. Cold, the module is imported with the request's environment.
#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_spare_imports_the_module_with_the_functions_environment_and_handle_sees_the_requests() {
    require_root();
    let src = r#"
import os
AT_IMPORT = {k: os.environ.get(k) for k in ("GREETING", "REQUEST_METHOD", "QUERY_STRING")}
def handle(request):
    return {"import": AT_IMPORT, "handle": {k: os.environ.get(k) for k in ("GREETING", "REQUEST_METHOD", "QUERY_STRING")}}
"#;
    let d = Daemon::start(&[("env", &python(src, "[sandbox]\nenv = { GREETING = \"hi\" }"))]);
    let cold = ok(&d, "/env?n=0", "cold").json();
    assert_eq!(cold["import"], serde_json::json!({"GREETING": "hi", "REQUEST_METHOD": "GET", "QUERY_STRING": "n=0"}));
    wait_warm(&d, "env");
    let deadline = Instant::now() + Duration::from_secs(30);
    while zygote_info(&d, "env")["spare"] != true {
        assert!(Instant::now() < deadline, "no spare within 30 s: {}", zygote_info(&d, "env"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let warm = ok(&d, "/env?n=1", "warm").json();
    assert_eq!(warm["import"], serde_json::json!({"GREETING": "hi", "REQUEST_METHOD": null, "QUERY_STRING": null}));
    assert_eq!(warm["handle"], serde_json::json!({"GREETING": "hi", "REQUEST_METHOD": "GET", "QUERY_STRING": "n=1"}));
}

// ---------------------------------------------------------------------------------------------
// Leaks
// ---------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_hundred_warm_requests_leave_nothing_behind() {
    require_root();
    const REQUESTS: usize = 100;
    const CONCURRENCY: usize = 8;
    let d = Daemon::start(&[("leak", &python(HELLO, ""))]);
    ok(&d, "/leak", "cold");
    let zygote = wait_warm(&d, "leak");
    for _ in 0..CONCURRENCY {
        ok(&d, "/leak", "warm");
    }
    d.wait_reports(1 + CONCURRENCY);
    let fds = d.fd_count();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..CONCURRENCY {
            s.spawn(|| {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < REQUESTS {
                    let r = d.get("/leak");
                    assert_eq!((r.status, r.text().as_str()), (200, "hello"), "{}", d.logs());
                    assert_eq!(start_of(&r), "warm");
                }
            });
        }
    });
    assert_eq!(d.wait_reports(1 + CONCURRENCY + REQUESTS), 1 + CONCURRENCY + REQUESTS, "{}", d.logs());
    d.wait_gone_from_host();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (children, cgroups, now) = (zygote_children(zygote), d.request_cgroups(), d.fd_count());
        if children.is_empty() && cgroups.is_empty() && now <= fds {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: zygote children {children:?}, request cgroups {cgroups:?}, daemon fds {now} > {fds}\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    if common::cgroup_mode(&d) == CgroupMode::None {
        println!("no delegated cgroup here: the request cgroups were not checked");
    }
    let z = zygote_info(&d, "leak");
    assert!(z["requests"].as_u64().unwrap_or(0) >= (CONCURRENCY + REQUESTS) as u64, "a fork per warm request: {z}");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn zygotes_starting_at_once_stay_within_the_memory_budget() {
    require_root();
    const FUNCTIONS: [&str; 3] = ["a", "b", "c"];
    let f = python(HELLO, "");
    let functions: Vec<(&str, &str)> = FUNCTIONS.iter().map(|n| (*n, f.as_str())).collect();
    let d = Daemon::start_with(&functions, "[warm]\nmemory = \"1\"");
    // The first requests of all three at once: each would start a zygote.
    let barrier = std::sync::Barrier::new(FUNCTIONS.len());
    std::thread::scope(|s| {
        for name in FUNCTIONS {
            let (d, barrier) = (&d, &barrier);
            s.spawn(move || {
                barrier.wait();
                assert_eq!(ok(d, &format!("/{name}"), "cold").text(), "hello");
            });
        }
    });
    // Until none is starting any more, never more than one is ready.
    let deadline = Instant::now() + Duration::from_secs(30);
    let states = loop {
        let listed = d.admin_get("/_/functions").json()["zygotes"].clone();
        let states: Vec<String> =
            listed.as_array().unwrap().iter().map(|z| z["state"].as_str().unwrap().to_owned()).collect();
        assert!(
            states.iter().filter(|s| *s == "ready").count() <= 1,
            "a budget of one byte holds two zygotes: {listed}"
        );
        if !states.iter().any(|s| s == "starting") {
            break states;
        }
        assert!(Instant::now() < deadline, "zygotes still starting after 30 s: {listed}\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(states.iter().filter(|s| *s == "ready").count(), 1, "{states:?}\n{}", d.logs());
    assert_eq!(zygote_processes(&d).len(), 1, "{:?}", zygote_processes(&d));
}

/// The function's modules are compiled once, in a sandbox of their own, before its zygote starts
/// (src/bytecode.rs): a warm request imports them without compiling, and still never runs a
/// stale one: a module edited in place (same size, so within a second its mtime may not tell)
/// is compiled again from what the request sees.
#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn warm_requests_import_the_functions_modules_compiled_and_never_stale() {
    require_root();
    let code = HostDir::new();
    // compile() as the import system calls it, counted while `helper` is imported.
    let main = r#"
import builtins
def handle(request):
    compiled = []
    real = builtins.compile
    def counting(source, filename, *args, **kwargs):
        compiled.append(filename)
        return real(source, filename, *args, **kwargs)
    builtins.compile = counting
    try:
        import helper
    finally:
        builtins.compile = real
    return {"main": __cached__, "helper": helper.__cached__, "value": helper.VALUE, "compiled": compiled}
"#;
    std::fs::write(code.path().join("main.py"), main).unwrap();
    std::fs::write(code.path().join("helper.py"), "VALUE = 1\n").unwrap();
    let file = format!("runtime = \"python\"\ncode = \"{}\"\nhandler = \"main.handle\"\n", code.path().display());
    let d = Daemon::start(&[("mods", &file)]);
    ok(&d, "/mods", "cold");
    wait_warm(&d, "mods");
    assert_eq!(zygote_info(&d, "mods")["compiled_modules"], 2, "{}", d.logs());
    for _ in 0..2 {
        let j = ok(&d, "/mods", "warm").json();
        assert_eq!(j["main"], "faas-bytecode:/code/main.py", "{j}");
        assert_eq!(j["helper"], "faas-bytecode:/code/helper.py", "{j}");
        assert_eq!((j["value"].as_i64(), j["compiled"].clone()), (Some(1), serde_json::json!([])), "{j}");
    }
    std::fs::write(code.path().join("helper.py"), "VALUE = 2\n").unwrap();
    for _ in 0..2 {
        let j = ok(&d, "/mods", "warm").json();
        assert_eq!(j["value"], 2, "a stale module ran: {j}");
        assert_eq!(j["compiled"], serde_json::json!(["/code/helper.py"]), "{j}");
    }
}

/// A code directory whose compiled code would not fit the zygote's limit (8 MiB) is compiled as
/// far as it fits, in order, and the rest is compiled by each request that imports it.
#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn code_beyond_the_bytecode_limit_is_compiled_by_the_requests_and_the_rest_is_cached() {
    require_root();
    let code = HostDir::new();
    std::fs::write(code.path().join("a.py"), "def handle(request):\n    import b\n    return len(b.BIG)\n").unwrap();
    // One constant of 9 MiB: its pyc alone is past the limit.
    std::fs::write(code.path().join("b.py"), format!("BIG = '{}'\n", "x".repeat(9 << 20))).unwrap();
    let file = format!("runtime = \"python\"\ncode = \"{}\"\nhandler = \"a.handle\"\n", code.path().display());
    let d = Daemon::start(&[("big", &file)]);
    ok(&d, "/big", "cold");
    wait_warm(&d, "big");
    assert_eq!(zygote_info(&d, "big")["compiled_modules"], 1, "a.py, and not b.py:\n{}", d.logs());
    assert_eq!(ok(&d, "/big", "warm").text(), (9 << 20).to_string());
}

/// The zygote's Python objects live in transparent huge pages (zygote/src/arenas.rs and
/// zygote.py's collapse_huge_pages), and its children allocate and free through the same
/// arena allocator: requests that free the zygote's objects and churn through fresh ones (the
/// allocator's free list and new chunks, in each child) are answered right.
#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn the_zygotes_objects_are_in_huge_pages_and_its_children_allocate_and_free_through_them() {
    require_root();
    // Made in the zygote (preload_handler): 12 MB of small objects, with a read-only mapping
    // (address space only) made after each megabyte, as numpy's import maps its libraries
    // between its objects. CPython's own arenas (1 MiB each) would then sit alone, none of them
    // covering an aligned 2 MiB: 0 of the 120 objects below would be in huge pages.
    let src = r#"
import mmap
KEEP = []
DATA = []
for _ in range(12):
    DATA.append([str(i) * 3 for i in range(15000)])
    KEEP.append(mmap.mmap(-1, 1 << 20, prot=mmap.PROT_READ))
def handle(request):
    seen = (sum(map(len, DATA)), DATA[-1][-1])
    ids = [id(part[i]) for part in DATA for i in range(0, 15000, 1500)]
    DATA.clear()
    total = 0
    for _ in range(3):
        churn = [(i, str(i)) for i in range(200000)]
        total += len(churn)
        del churn
    with open("/proc/self/smaps") as f:
        text = f.readline().split()
        huge = next(int(l.split()[1]) for l in f if l.startswith("AnonHugePages:"))
    return {"seen": list(seen), "total": total, "ids": ids, "text": text, "text_huge_kb": huge}
"#;
    let d = Daemon::start(&[("big", &python(src, "[sandbox]\npreload_handler = true"))]);
    ok(&d, "/big", "cold");
    let zygote = wait_warm(&d, "big");
    let huge_before = zygote_info(&d, "big")["huge_page_bytes"].as_u64().unwrap_or(0);
    let mut ids = Vec::new();
    let mut texts = Vec::new();
    for _ in 0..20 {
        let j = ok(&d, "/big", "warm").json();
        assert_eq!(j["seen"], serde_json::json!([180000, "149991499914999"]), "a request saw another's state: {j}");
        assert_eq!(j["total"], 600000, "{j}");
        ids = j["ids"].as_array().unwrap().iter().filter_map(Value::as_u64).collect();
        texts.push((j["text"].clone(), j["text_huge_kb"].as_u64().unwrap_or(0)));
    }
    let logs = d.logs();
    let ready = logs.lines().find(|l| l.contains("zygote ready")).unwrap_or_else(|| panic!("no ready line:\n{logs}"));
    if ready.contains("no huge pages: ") {
        // THP `never` on this host, or a kernel before 6.1 (no MADV_COLLAPSE).
        eprintln!("SKIPPED the huge-page checks: the zygote has none here: {ready}");
        return;
    }
    assert!(ready.contains("KiB in huge pages"), "{ready}");
    // Serving, the zygote writes only to memory of its own (zygote.py's own_mapping, the stack):
    // a write to a huge page its children share would split its mapping of it. (khugepaged
    // may add some meanwhile, under THP `always`.)
    let huge_after = zygote_info(&d, "big")["huge_page_bytes"].as_u64().unwrap_or(0);
    assert!(
        huge_after >= huge_before,
        "the zygote's huge pages: {huge_before} bytes, then {huge_after} after 20 requests"
    );
    // Each object's mapping in the zygote, and whether it is in huge pages.
    let smaps = std::fs::read_to_string(format!("/proc/{zygote}/smaps")).unwrap();
    let mut maps: Vec<(u64, u64, u64)> = Vec::new();
    for line in smaps.lines() {
        let range = line.split(' ').next().and_then(|r| r.split_once('-'));
        if let Some((a, b)) =
            range.and_then(|(a, b)| Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?)))
        {
            maps.push((a, b, 0));
        } else if let (Some(kb), Some(last)) = (line.strip_prefix("AnonHugePages:"), maps.last_mut()) {
            last.2 = kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
        }
    }
    let huge = ids.iter().filter(|&&id| maps.iter().any(|&(a, b, kb)| (a..b).contains(&id) && kb > 0)).count();
    assert_eq!(ids.len(), 120);
    assert!(huge * 10 >= ids.len() * 9, "{huge} of {} of the zygote's objects in huge pages: {ready}", ids.len());
    // The interpreter's code (zygote.py's text_in_huge_page): python3.11's first mapping, from
    // its header through its text, is anonymous memory with a huge page in it, in the zygote
    // and in every request forked from it. Without it, the first mapping is the file's.
    assert!(ready.contains("its code among them"), "{ready}");
    let maps = std::fs::read_to_string(format!("/proc/{zygote}/maps")).unwrap();
    let first = maps.lines().next().unwrap();
    let (range, rest) = first.split_once(' ').unwrap();
    assert!(rest.starts_with("r-xp") && !rest.contains('/'), "the zygote's first mapping: {first}");
    let text_kb = anon_huge_kib(&smaps, &format!("{range} "));
    assert!(text_kb >= 2048, "{text_kb} KiB of the zygote's code in huge pages: {first}");
    for (text, kb) in texts {
        // (A kernel with CONFIG_ANON_VMA_NAME adds zygote.py's name for it: `[anon:python3.11 text]`.)
        let text: Vec<&str> = text.as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(
            text[0] == range && text[1] == "r-xp" && !text.iter().any(|f| f.starts_with('/')),
            "a request's first mapping: {text:?}"
        );
        assert!(kb >= 2048, "{kb} KiB of a request's code in huge pages: {text:?}");
    }
}

/// The `AnonHugePages` (KiB) of the mapping `range` ("start-end" as in /proc/PID/maps) in a smaps.
fn anon_huge_kib(smaps: &str, range: &str) -> u64 {
    smaps
        .lines()
        .skip_while(|l| !l.starts_with(range))
        .skip(1)
        .take_while(|l| !l.starts_with("VmFlags"))
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .map_or(0, |v| v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0))
}
