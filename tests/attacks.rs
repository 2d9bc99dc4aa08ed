//! The hostile corpus: each test is one function attacking one thing the sandbox forbids, and
//! asserts the exact failure — the errno the handler saw (reported back in JSON), or, for the
//! calls the seccomp deny list stops, 502 with problem type `syscall-denied` and the REPORT line
//! naming the syscall. Every test ends by checking that the front end still serves.
//!
//! Attacks that would hurt the host if the sandbox were missing (kill(-1), fork and memory
//! bombs, signalling other processes) first run a harmless probe of the same function and
//! refuse to go on unless it shows pid 1 of a private pid namespace and a non-root uid.
//!
//! Every attack with a Python handler runs twice (`cold_and_warm!`): `NAME::cold` with
//! `[sandbox] warm = false`, and `NAME::warm` forked from the function version's zygote, which
//! `serve` starts and waits for before the attack; the expectations are the same. A warm
//! variant fails unless every request its Python functions served after the warm-up was
//! forked from that zygote (`Target`'s drop), and its safety probe must itself have been warm.
//! Needs root, as CI has: `sudo -E cargo test --test attacks -- --include-ignored`.

mod common;

use std::cell::Cell;
use std::io::ErrorKind;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{python, require_root, sh, sh_with, Daemon, HostDir, Resp, UID_BASE};
use nix::libc;

// errno values (asm-generic/errno-base.h, errno.h): what the handlers report back.
const EPERM: i64 = 1;
const ENOENT: i64 = 2;
const ESRCH: i64 = 3;
const EAGAIN: i64 = 11;
const ENOMEM: i64 = 12;
const EACCES: i64 = 13;
const EXDEV: i64 = 18;
const EMFILE: i64 = 24;
const ENOSPC: i64 = 28;
const EROFS: i64 = 30;
const ENOSYS: i64 = 38;
const ENETUNREACH: i64 = 101;
const ECONNREFUSED: i64 = 111;

/// Shared by every Python attack: raw syscalls through libc (numbers from this target's libc,
/// in `NR`, so the corpus is not tied to x86_64), and the safety probe.
const PRELUDE: &str = r#"
import ctypes, errno, os, signal, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)

def errno_of(f):
    """0 if f() succeeds, else the errno it failed with."""
    try:
        f()
        return 0
    except OSError as e:
        return e.errno

def raw(nr, *args):
    """A raw syscall: (return value, errno)."""
    ctypes.set_errno(0)
    rc = libc.syscall(nr, *args)
    return [rc, ctypes.get_errno() if rc == -1 else 0]

def probe():
    return {"pid": os.getpid(), "uid": os.getuid(), "euid": os.geteuid()}
"#;

/// A Python function: PRELUDE, the syscall numbers, then `body` (which defines `handle`),
/// then extra TOML. The handler answers a warm-up request (`?warmup`) without attacking.
fn py(body: &str, extra: &str) -> String {
    let nr: Vec<String> = SYSCALLS.iter().map(|(name, nr)| format!("'{name}': {nr}")).collect();
    python(&format!("{PRELUDE}\nNR = {{{}}}\n{body}\n{WARM_UP}", nr.join(", ")), extra)
}

/// Wraps the handler `py` builds: the request that starts a warm variant's zygote must not
/// run the attack (cold, before the probe) or block (the sleepers).
const WARM_UP: &str = r#"
_attack = handle
def handle(request):
    if "warmup" in request.query:
        return "warm-up"
    return _attack(request)
"#;

/// The raw syscalls the corpus makes, by name.
const SYSCALLS: &[(&str, i64)] = &[
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("clone", libc::SYS_clone),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("add_key", libc::SYS_add_key),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("personality", libc::SYS_personality),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("clone3", libc::SYS_clone3),
    ("get_mempolicy", libc::SYS_get_mempolicy),
    ("sched_yield", libc::SYS_sched_yield),
    ("seccomp", libc::SYS_seccomp),
    ("prctl", libc::SYS_prctl),
    ("ptrace", libc::SYS_ptrace),
    ("socketpair", libc::SYS_socketpair),
    #[cfg(target_arch = "x86_64")]
    ("sysfs", libc::SYS_sysfs),
];

/// How an attack's Python functions start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// `[sandbox] warm = false`: every request execs a fresh interpreter.
    Cold,
    /// Forked from the function version's zygote, warmed by `serve` before the attack.
    Warm,
}

impl Start {
    /// The function file with `warm` set for this start; other runtimes are left as they are.
    fn file(self, function: &str) -> String {
        if !is_python(function) {
            return function.to_owned();
        }
        let key = format!("warm = {}\n", self == Start::Warm);
        // After the inline source, if any: only the TOML's own [sandbox] table counts.
        let toml_from = function.rfind("'''").unwrap_or(0);
        match function[toml_from..].find("\n[sandbox]\n") {
            Some(at) => {
                let at = toml_from + at + "\n[sandbox]\n".len();
                format!("{}{key}{}", &function[..at], &function[at..])
            }
            None => format!("{function}\n[sandbox]\n{key}"),
        }
    }
}

fn is_python(function: &str) -> bool {
    function.lines().any(|l| l == "runtime = \"python\"")
}

/// One test per start for the attack `fn NAME(start: Start)`: `NAME::cold` and `NAME::warm`.
macro_rules! cold_and_warm {
    ($name:ident) => {
        mod $name {
            #[test]
            #[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
            fn cold() {
                super::$name(super::Start::Cold);
            }

            #[test]
            #[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
            fn warm() {
                super::$name(super::Start::Warm);
            }
        }
    };
}

/// The daemon an attack runs against. Warm: its Python functions were warmed before the
/// attack, and when it is dropped every request they served since must have been forked from
/// the very zygote the warm-up started (so the attack met the warm path and did not kill it).
struct Target {
    d: Daemon,
    start: Start,
    /// Warm: each attacked function and its zygote's pid.
    zygotes: Vec<(String, serde_json::Value)>,
    /// The warm check ran, or cannot run (the test skipped, or killed the daemon itself).
    checked: Cell<bool>,
    /// The zygote may fail to make spares (a fault the test injects): each is one more fork.
    spares_may_fail: bool,
}

impl std::ops::Deref for Target {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.d
    }
}

impl std::ops::DerefMut for Target {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.d
    }
}

impl Target {
    /// `common::require_landlock_abi`; a skipped warm variant attacked nothing to check.
    fn require_landlock_abi(&self, abi: u32) -> bool {
        let run = common::require_landlock_abi(&self.d, abi);
        self.checked.set(!run);
        run
    }

    /// `common::require_cgroup_mode`, likewise.
    fn require_cgroup_mode(&self, mode: common::CgroupMode) -> bool {
        let run = common::require_cgroup_mode(&self.d, mode);
        self.checked.set(!run);
        run
    }

    /// Warm: every request of each attacked function after its warm-up was forked from the
    /// zygote the warm-up started (directly or as its spare), which still runs, and there was
    /// at least one.
    fn assert_served_warm(&self) {
        self.checked.set(true);
        for (name, pid) in &self.zygotes {
            let z = zygote_of(&self.d, name);
            assert!(
                z["state"] == "ready" && z["pid"] == *pid,
                "{name}: the zygote warmed for the attack (pid {pid}) is gone: {z}\n{}",
                self.logs()
            );
            // Each request since the warm-up was forked from it (or took the spare it forked
            // ahead) and is reported warm; one spare may be waiting. A REPORT is written once
            // the sandbox is gone: wait until none is in flight and the counts add up.
            let marker = format!("REPORT {name} ");
            let failed_spare =
                |l: &&str| l.contains("the zygote could not make a spare") && l.ends_with(&format!(" function={name}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            let (reports, warm, forks, spare, failed) = loop {
                let z = zygote_of(&self.d, name);
                let logs = self.logs();
                let reports: Vec<String> = logs.lines().filter(|l| l.contains(&marker)).map(str::to_owned).collect();
                let warm = reports.iter().filter(|l| l.contains(" start=warm ")).count() as u64;
                let (forks, spare) = (z["requests"].as_u64().unwrap_or(0), z["spares"].as_u64().unwrap_or(0));
                let failed = logs.lines().filter(failed_spare).count() as u64;
                if (z["in_flight"] == 0 && warm + spare + failed >= forks) || Instant::now() > deadline {
                    break (reports, warm, forks, spare, failed);
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            assert!(warm > 0, "{name}: no request was served warm: the attack never met the zygote\n{}", self.logs());
            // A failed spare may or may not have been forked: exact counts only without one.
            assert!(
                (self.spares_may_fail || failed == 0) && (failed > 0 || warm + spare == forks),
                "{name}: the zygote forked {forks} (spare waiting: {spare}, spares failed: {failed}), {warm} \
                 REPORTs say warm\n{}",
                self.logs()
            );
            // One is the warm-up's, cold by design (it started the zygote).
            let cold: Vec<&String> = reports.iter().filter(|l| !l.contains(" start=warm ")).collect();
            assert_eq!(cold.len(), 1, "{name}: served cold after the warm-up (only the warm-up may be): {cold:#?}");
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.start == Start::Warm && !self.checked.get() && !std::thread::panicking() {
            self.assert_served_warm();
        }
    }
}

/// Starts a daemon with `functions` plus `hello`, the ordinary function every test ends with.
fn serve(start: Start, functions: &[(&str, &str)]) -> Target {
    serve_opts(start, functions, common::Options::default())
}

/// `serve` with daemon options. Warm: one harmless request to each Python function (on the
/// admin listener, which serves every function, as a POST, which every one takes) starts its
/// zygote, then the attack waits until each says ready. Handlers `py` built only answer
/// "warm-up"; the others (the ordinary work, the setuid `id`, the code runner's empty snippet)
/// run once, cold, as harmless as they are.
fn serve_opts(start: Start, functions: &[(&str, &str)], opts: common::Options) -> Target {
    let hello = python("def handle(request):\n    return 'hello'", "");
    let files: Vec<(&str, String)> =
        functions.iter().copied().chain([("hello", hello.as_str())]).map(|(n, f)| (n, start.file(f))).collect();
    let files: Vec<(&str, &str)> = files.iter().map(|(n, f)| (*n, f.as_str())).collect();
    let d = Daemon::start_opts(&files, opts);
    let mut t = Target { d, start, zygotes: Vec::new(), checked: Cell::new(false), spares_may_fail: false };
    if start == Start::Warm {
        let python: Vec<&str> = functions.iter().filter(|(_, f)| is_python(f)).map(|(n, _)| *n).collect();
        assert!(!python.is_empty(), "a warm variant without a Python function attacks nothing warm");
        for name in &python {
            let url = format!("http://127.0.0.1:{}/{name}?warmup=1", t.admin_port);
            common::request_to(&url, "POST", b"", &[]);
        }
        for name in python {
            let pid = await_zygote_ready(&t.d, name);
            t.zygotes.push((name.to_owned(), pid));
        }
    }
    t
}

/// `/_/functions`' `zygote` of function `name` (null when it has none).
fn zygote_of(d: &Daemon, name: &str) -> serde_json::Value {
    let r = d.admin_get("/_/functions");
    assert_eq!(r.status, 200, "/_/functions: {}", r.text());
    let j = r.json();
    let f = j["functions"].as_array().and_then(|fs| fs.iter().find(|f| f["name"] == name).cloned());
    f.unwrap_or_else(|| panic!("{name} is not in /_/functions: {j}"))["zygote"].clone()
}

/// Waits (20 s at most) until function `name`'s zygote says ready; its pid.
fn await_zygote_ready(d: &Daemon, name: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let z = zygote_of(d, name);
        match z["state"].as_str() {
            Some("ready") => return z["pid"].clone(),
            Some("failed") => panic!("the zygote of {name} did not start: {z}\n{}", d.logs()),
            _ => assert!(Instant::now() < deadline, "the zygote of {name} not ready after 20 s: {z}\n{}", d.logs()),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the daemon says it forked this response's sandbox from a zygote.
fn served_warm(r: &Resp) -> bool {
    r.header("server-timing").is_some_and(|t| t.contains(";desc=warm,"))
}

/// The front end survived the attack: health answers, and an ordinary function still runs.
fn assert_still_serves(d: &Daemon) {
    assert!(daemon_alive(d), "the front end died:\n{}", d.logs());
    assert_eq!(d.get("/_/health").status, 200, "{}", d.logs());
    let r = d.get("/hello");
    assert_eq!((r.status, r.text()), (200, "hello".to_owned()), "{}", d.logs());
}

/// The daemon runs: its /proc entry exists and is not a zombie (signal 0 would succeed on an
/// unreaped zombie, so a crashed daemon would look alive).
fn daemon_alive(d: &Daemon) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", d.pid())).unwrap_or_default();
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    matches!(state, Some(s) if s != 'Z' && s != 'X')
}

/// Runs `path?probe=1` and panics unless the handler is pid 1 of its own pid namespace and not
/// root: without both, a kill(-1) or a bomb would hit the host, the test runner included.
/// Warm, the probe itself must have been forked from the zygote, as the attack will be.
fn require_sandboxed(d: &Target, path: &str) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let r = d.get(&format!("{path}{sep}probe=1"));
    assert_eq!(r.status, 200, "REFUSING to attack: the safety probe of {path} failed: {}\n{}", r.text(), d.logs());
    assert!(
        d.start == Start::Cold || served_warm(&r),
        "REFUSING to attack {path}: the probe was not forked from the zygote (Server-Timing {:?}), so it says \
         nothing of the warm sandbox the attack would run in",
        r.header("server-timing")
    );
    let j = r.json();
    let (pid, uid, euid) = (j["pid"].as_i64(), j["uid"].as_i64(), j["euid"].as_i64());
    assert!(
        pid == Some(1) && uid.is_some_and(|u| u >= i64::from(UID_BASE)) && euid == uid,
        "REFUSING to attack {path}: the probe shows pid {pid:?}, uid {uid:?}, euid {euid:?}; without a private \
         pid namespace and an unprivileged uid this attack would hit the host itself"
    );
}

/// The REPORT line of invocation `id`, waiting for it: the response can beat the log line.
fn report_line(d: &Daemon, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = d.logs();
        if let Some(line) = logs.lines().find(|l| l.contains("REPORT ") && l.contains(id)) {
            return line.to_owned();
        }
        assert!(Instant::now() < deadline, "no REPORT line for {id}:\n{logs}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn invocation_id(r: &Resp) -> String {
    r.header("faas-invocation-id").unwrap_or_else(|| panic!("no Faas-Invocation-Id: {r:?}")).to_owned()
}

/// 502, problem type syscall-denied naming `syscall`, and the REPORT line says so.
fn assert_syscall_denied(d: &Daemon, r: &Resp, syscall: &str) {
    assert_eq!(r.status, 502, "expected syscall-denied, got {}: {}\n{}", r.status, r.text(), d.logs());
    assert_eq!(r.problem(), "syscall-denied", "{}", r.text());
    let detail = r.json()["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains(&format!("({syscall})")), "detail does not name {syscall}: {detail}");
    let line = report_line(d, &invocation_id(r));
    assert!(
        line.contains(" outcome=syscall-denied ") && line.contains(&format!(" syscall={syscall} ")),
        "REPORT does not say outcome=syscall-denied syscall={syscall}: {line}"
    );
}

/// A 200 JSON answer from a handler.
fn ok_json(d: &Daemon, path: &str) -> serde_json::Value {
    let r = d.get(path);
    assert_eq!(r.status, 200, "{path}: {}\n{}", r.text(), d.logs());
    r.json()
}

/// A code directory the sandbox uid can read (tempdirs are 0700).
fn code_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("faas-attack-code-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn code_function(runtime: &str, dir: &Path, extra: &str) -> String {
    format!("runtime = \"{runtime}\"\ncode = \"{}\"\nhandler = \"main.handle\"\n{extra}\n", dir.display())
}

/// The daemon's sandbox uid range, from the faas.toml the harness wrote.
fn uid_range(d: &Daemon) -> (u32, u32) {
    let text = std::fs::read_to_string(d.dir.path().join("faas.toml")).unwrap();
    let value = |key: &str| -> u32 {
        let line = text.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key} in faas.toml"));
        line.split('=').nth(1).unwrap().trim().parse().unwrap()
    };
    (value("uid_base"), value("uid_count"))
}

/// Host processes whose real uid is in `range`, or whose name is `comm`.
fn host_processes(range: (u32, u32), comm: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if common::is_spare(pid) {
            continue;
        }
        let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default().trim().to_owned();
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let uid = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|u| u.parse::<u32>().ok());
        if name == comm || uid.is_some_and(|u| u >= range.0 && u < range.0 + range.1) {
            found.push((pid, name));
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// File system
// ---------------------------------------------------------------------------------------------

cold_and_warm!(read_etc_shadow_is_enoent);
fn read_etc_shadow_is_enoent(start: Start) {
    require_root();
    let src = r#"
def handle(request):
    def read(p):
        return lambda: open(p, "rb").read()
    return {p: errno_of(read(p)) for p in ["/etc/shadow", "/etc/gshadow", "/etc/passwd", "/proc/self/root/etc/shadow", "/proc/1/root/etc/shadow"]}
"#;
    let d = serve(start, &[("shadow", &py(src, ""))]);
    let j = ok_json(&d, "/shadow");
    for p in ["/etc/shadow", "/etc/gshadow", "/etc/passwd", "/proc/self/root/etc/shadow", "/proc/1/root/etc/shadow"] {
        assert_eq!(j[p], ENOENT, "{p}: {j}");
    }
    assert_still_serves(&d);
}

cold_and_warm!(host_root_and_home_are_enoent);
fn host_root_and_home_are_enoent(start: Start) {
    require_root();
    let src = r#"
def handle(request):
    return {p: errno_of(lambda: os.listdir(p)) for p in ["/root", "/home", "/var", "/run", "/proc/self/root/root", "/proc/1/cwd/../root"]}
"#;
    let d = serve(start, &[("homes", &py(src, ""))]);
    let j = ok_json(&d, "/homes");
    for p in ["/root", "/home", "/var", "/run", "/proc/self/root/root", "/proc/1/cwd/../root"] {
        assert_eq!(j[p], ENOENT, "{p}: {j}");
    }
    assert_still_serves(&d);
}

cold_and_warm!(front_end_config_and_environment_are_out_of_reach);
fn front_end_config_and_environment_are_out_of_reach(start: Start) {
    require_root();
    let src = r#"
def handle(request):
    pid = request.query["pid"]
    try:
        own = open("/proc/1/environ", "rb").read().split(b"\0")
    except OSError as e:
        own = [f"unreadable:{errno.errorcode[e.errno]}".encode()]
    names = sorted(v.split(b"=", 1)[0].decode() for v in own if v)
    return {
        "config": errno_of(lambda: open(request.query["config"], "rb").read()),
        "functions_dir": errno_of(lambda: os.listdir(request.query["fdir"])),
        "daemon_environ": errno_of(lambda: open(f"/proc/{pid}/environ", "rb").read()),
        "daemon_cmdline": errno_of(lambda: open(f"/proc/{pid}/cmdline", "rb").read()),
        "daemon_fd": errno_of(lambda: os.listdir(f"/proc/{pid}/fd")),
        "proc1_environ_names": names,
        "proc1_is_me": os.readlink("/proc/self") == "1",
        "env_names": sorted(os.environ),
        "home": os.environ.get("HOME"),
    }
"#;
    let d = serve(start, &[("front", &py(src, ""))]);
    let config = d.dir.path().join("faas.toml");
    let j = ok_json(
        &d,
        &format!("/front?pid={}&config={}&fdir={}", d.pid(), config.display(), d.functions_dir().display()),
    );
    assert_eq!(j["config"], ENOENT, "{j}");
    assert_eq!(j["functions_dir"], ENOENT, "{j}");
    assert_eq!(j["daemon_environ"], ENOENT, "the daemon's /proc entry is visible: {j}");
    assert_eq!(j["daemon_cmdline"], ENOENT, "{j}");
    assert_eq!(j["daemon_fd"], ENOENT, "{j}");
    // /proc/1 is the handler itself, not the host's init: its environment is the CGI one the
    // daemon built, and nothing of the daemon's own (NOTIFY_SOCKET, LISTEN_FDS, the test's env).
    assert_eq!(j["proc1_is_me"], true, "{j}");
    const CGI: &[&str] = &[
        "GATEWAY_INTERFACE",
        "PATH_INFO",
        "QUERY_STRING",
        "REMOTE_ADDR",
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "SERVER_SOFTWARE",
        "CONTENT_TYPE",
        "CONTENT_LENGTH",
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
    ];
    for (what, list) in [("/proc/1/environ", &j["proc1_environ_names"]), ("os.environ", &j["env_names"])] {
        let names: Vec<&str> = list.as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
        assert!(names.contains(&"FAAS_INVOCATION_ID"), "{what}: {names:?}");
        for name in &names {
            assert!(
                CGI.contains(name) || name.starts_with("HTTP_") || name.starts_with("FAAS_"),
                "{what} carries {name}, which is not a CGI meta-variable: {names:?}"
            );
        }
    }
    assert_eq!(j["home"], "/tmp", "{j}");
    assert_still_serves(&d);
}

cold_and_warm!(writes_outside_tmp_are_erofs_or_eacces);
fn writes_outside_tmp_are_erofs_or_eacces(start: Start) {
    require_root();
    let src = r#"
def handle(request):
    out = {}
    for p in ["/x", "/code/x", "/usr/x", "/usr/bin/x", "/etc/x", "/faas/x", "/dev/x", "/proc/x", "/tmp/x", "/dev/null"]:
        out["create " + p] = errno_of(lambda: open(p, "ab").close())
    for p in ["/code/main.py", "/usr/bin/python3", "/faas/python.py", "/etc/ld.so.cache"]:
        out["modify " + p] = errno_of(lambda: open(p, "r+b").close())
    out["mkdir /usr/d"] = errno_of(lambda: os.mkdir("/usr/d"))
    out["unlink /code/main.py"] = errno_of(lambda: os.unlink("/code/main.py"))
    out["rename /code/main.py"] = errno_of(lambda: os.rename("/code/main.py", "/code/x"))
    out["link /usr/bin/python3 /tmp/p"] = errno_of(lambda: os.link("/usr/bin/python3", "/tmp/p"))
    return out
"#;
    let d = serve(start, &[("w", &py(src, ""))]);
    let j = ok_json(&d, "/w");
    let want = [
        ("create /x", EROFS),
        ("create /code/x", EROFS),
        ("create /usr/x", EROFS),
        ("create /usr/bin/x", EROFS),
        ("create /etc/x", EROFS),
        ("create /faas/x", EROFS),
        ("create /dev/x", EROFS),
        ("create /proc/x", ENOENT),
        ("modify /code/main.py", EACCES),
        ("modify /usr/bin/python3", EACCES),
        ("modify /faas/python.py", EACCES),
        ("modify /etc/ld.so.cache", EACCES),
        ("mkdir /usr/d", EROFS),
        ("unlink /code/main.py", EROFS),
        ("rename /code/main.py", EROFS),
        // Cross-mount, and Landlock would refuse it too (no LANDLOCK_ACCESS_FS_REFER).
        ("link /usr/bin/python3 /tmp/p", EXDEV),
        ("create /tmp/x", 0),
        ("create /dev/null", 0),
    ];
    for (what, errno) in want {
        assert_eq!(j[what], errno, "{what}: {j}");
    }
    assert_still_serves(&d);
}

cold_and_warm!(filling_tmp_past_its_size_is_enospc);
fn filling_tmp_past_its_size_is_enospc(start: Start) {
    require_root();
    let src = r#"
def handle(request):
    written, err = 0, 0
    chunk = b"x" * 65536
    fd = os.open("/tmp/fill", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while written < (8 << 20):
            written += os.write(fd, chunk)
    except OSError as e:
        err = e.errno
    st = os.statvfs("/tmp")
    return {"errno": err, "written": written, "size": st.f_blocks * st.f_frsize}
"#;
    let d = serve(start, &[("fill", &py(src, "[sandbox]\ntmp = \"1M\""))]);
    let j = ok_json(&d, "/fill");
    assert_eq!(j["errno"], ENOSPC, "{j}");
    assert_eq!(j["size"], 1 << 20, "{j}");
    assert!(j["written"].as_i64().unwrap() <= 1 << 20, "{j}");
    assert_still_serves(&d);
}

cold_and_warm!(setuid_binaries_do_not_raise_the_euid);
fn setuid_binaries_do_not_raise_the_euid(start: Start) {
    require_root();
    // A real setuid-root program in /code (owned by root, mode 4755: `id` prints euid= when it
    // differs from uid), and a setuid copy the handler makes itself in /tmp.
    let main = r#"
import os, shutil, stat, subprocess
def handle(request):
    out = {"uid": os.getuid(), "euid": os.geteuid()}
    out["code_id"] = subprocess.run(["/code/id"], capture_output=True, text=True).stdout.strip()
    shutil.copy("/usr/bin/id", "/tmp/id")
    os.chmod("/tmp/id", 0o4755)
    out["tmp_suid_bit"] = bool(os.stat("/tmp/id").st_mode & stat.S_ISUID)
    out["tmp_nosuid"] = bool(os.statvfs("/tmp").f_flag & os.ST_NOSUID)
    out["code_nosuid"] = bool(os.statvfs("/code").f_flag & os.ST_NOSUID)
    try:
        out["tmp_exec"] = subprocess.run(["/tmp/id"], capture_output=True, text=True).stdout.strip()
    except OSError as e:
        out["tmp_exec"] = e.errno
    out["no_new_privs"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0]
    return out
"#;
    let code = code_dir(&[("main.py", main)]);
    let id = code.path().join("id");
    std::fs::copy("/usr/bin/id", &id).unwrap();
    std::os::unix::fs::chown(&id, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let d = serve(start, &[("suid", &code_function("python", code.path(), ""))]);
    let j = ok_json(&d, "/suid");
    let uid = j["uid"].as_i64().unwrap();
    assert!(uid >= i64::from(UID_BASE), "{j}");
    assert_eq!(j["euid"], uid, "{j}");
    assert_eq!(
        j["code_id"],
        format!("uid={uid} gid={uid} groups={uid}"),
        "a setuid-root program changed the euid: {j}"
    );
    assert_eq!(j["tmp_suid_bit"], true, "{j}");
    assert_eq!(j["tmp_nosuid"], true, "{j}");
    assert_eq!(j["code_nosuid"], true, "{j}");
    assert_eq!(j["tmp_exec"], EACCES, "/tmp must not be executable (landlock): {j}");
    assert_eq!(j["no_new_privs"], "1", "{j}");
    assert_still_serves(&d);
}

// ---------------------------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------------------------

const TCP_CONNECT: &str = r#"
def handle(request):
    s = socket.socket()
    s.settimeout(3)
    return {"errno": errno_of(lambda: s.connect((request.query["host"], int(request.query["port"]))))}
"#;

cold_and_warm!(tcp_connect_to_the_front_end_is_eacces);
fn tcp_connect_to_the_front_end_is_eacces(start: Start) {
    require_root();
    let d = serve(start, &[("tcp", &py(TCP_CONNECT, ""))]);
    if !d.require_landlock_abi(4) {
        return;
    }
    let j = ok_json(&d, &format!("/tcp?host=127.0.0.1&port={}", d.port));
    assert_eq!(j["errno"], EACCES, "{j}");
    let j = ok_json(&d, &format!("/tcp?host=127.0.0.1&port={}", d.admin_port));
    assert_eq!(j["errno"], EACCES, "the admin listener: {j}");
    assert_still_serves(&d);
}

cold_and_warm!(tcp_connect_outside_is_eacces);
fn tcp_connect_outside_is_eacces(start: Start) {
    require_root();
    // 203.0.113.1 is TEST-NET-3 (RFC 5737): documentation only, never a real host. (Not
    // TEST-NET-1: some CI hosts, this project's among them, number their own LAN 192.0.2.0/24.)
    let d = serve(start, &[("tcp", &py(TCP_CONNECT, ""))]);
    if !d.require_landlock_abi(4) {
        return;
    }
    let j = ok_json(&d, "/tcp?host=203.0.113.1&port=80");
    assert_eq!(j["errno"], EACCES, "{j}");
    assert_still_serves(&d);
}

cold_and_warm!(udp_send_has_no_route);
fn udp_send_has_no_route(start: Start) {
    require_root();
    // Landlock does not cover UDP: here only the empty network namespace stands in the way.
    // Nothing can leave the host even if it failed: the datagram goes to loopback, and the
    // outside address is only connect()ed, which looks up a route and sends nothing.
    let src = r#"
def handle(request):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return {
        "send_loopback": errno_of(lambda: s.sendto(b"x", ("127.0.0.1", int(request.query["port"])))),
        "route_outside": errno_of(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect(("203.0.113.1", 9))),
    }
"#;
    let d = serve(start, &[("udp", &py(src, ""))]);
    let j = ok_json(&d, &format!("/udp?port={}", d.port));
    assert_eq!(j["send_loopback"], ENETUNREACH, "{j}");
    assert_eq!(j["route_outside"], ENETUNREACH, "{j}");
    assert_still_serves(&d);
}

cold_and_warm!(tcp_bind_is_refused_with_and_without_host_network);
fn tcp_bind_is_refused_with_and_without_host_network(start: Start) {
    require_root();
    // Loopback only: with the host network, a failed layer must not open a port to the LAN.
    let src = r#"
def handle(request):
    def bind(addr):
        s = socket.socket()
        s.bind(addr)
        s.listen()
    return {a: errno_of(lambda: bind((a.split(":")[0], int(a.split(":")[1])))) for a in ["127.0.0.1:8080", "127.0.0.1:0"]}
"#;
    let d = serve(start, &[("bind", &py(src, "")), ("bindnet", &py(src, "[sandbox]\nnetwork = true"))]);
    if !d.require_landlock_abi(4) {
        return;
    }
    // Landlock refuses the bind in a sandbox's own namespace; with the host's network the
    // seccomp filter refuses bind(2) before Landlock is asked.
    for (f, errno) in [("/bind", EACCES), ("/bindnet", EPERM)] {
        let j = ok_json(&d, f);
        for a in ["127.0.0.1:8080", "127.0.0.1:0"] {
            assert_eq!(j[a], errno, "{f} {a}: {j}");
        }
    }
    assert_still_serves(&d);
}

const ABSTRACT_CONNECT: &str = r#"
def handle(request):
    out = {}
    s = socket.socket(socket.AF_UNIX)
    out["host"] = errno_of(lambda: s.connect("\0" + request.query["name"]))
    # The sandbox's own abstract sockets still work: scoping, not a blanket ban.
    inner = "\0faas-inner-" + str(time.time_ns())
    srv = socket.socket(socket.AF_UNIX)
    out["own"] = errno_of(lambda: (srv.bind(inner), srv.listen(), socket.socket(socket.AF_UNIX).connect(inner)))
    return out
"#;

/// Listens on a fresh abstract unix socket in the host's network namespace.
fn abstract_listener(tag: &str) -> (UnixListener, String) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let name = format!("faas-attack-{tag}-{}-{nanos}", std::process::id());
    let l = UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    l.set_nonblocking(true).unwrap();
    (l, name)
}

cold_and_warm!(abstract_socket_of_the_host_is_not_in_the_sandbox_netns);
fn abstract_socket_of_the_host_is_not_in_the_sandbox_netns(start: Start) {
    require_root();
    let (l, name) = abstract_listener("netns");
    let d = serve(start, &[("abs", &py(ABSTRACT_CONNECT, ""))]);
    let j = ok_json(&d, &format!("/abs?name={name}"));
    // Abstract names are per network namespace: the empty one has no such name at all.
    assert_eq!(j["host"], ECONNREFUSED, "{j}");
    assert_eq!(j["own"], 0, "{j}");
    assert_eq!(
        l.accept().map(|_| ()).map_err(|e| e.kind()),
        Err(ErrorKind::WouldBlock),
        "the sandbox reached the host's socket"
    );
    assert_still_serves(&d);
}

cold_and_warm!(abstract_socket_with_host_network_is_eperm_from_landlock_scope);
fn abstract_socket_with_host_network_is_eperm_from_landlock_scope(start: Start) {
    require_root();
    let (l, name) = abstract_listener("scope");
    let d = serve(start, &[("abs", &py(ABSTRACT_CONNECT, "[sandbox]\nnetwork = true"))]);
    if !d.require_landlock_abi(6) {
        return;
    }
    let j = ok_json(&d, &format!("/abs?name={name}"));
    // Same network namespace, so the name resolves; LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET refuses.
    assert_eq!(j["host"], EPERM, "{j}");
    // With the host's network a sandbox binds nothing, its own abstract names included.
    assert_eq!(j["own"], EPERM, "{j}");
    assert_eq!(
        l.accept().map(|_| ()).map_err(|e| e.kind()),
        Err(ErrorKind::WouldBlock),
        "the sandbox reached the host's socket"
    );
    assert_still_serves(&d);
}

// ---------------------------------------------------------------------------------------------
// Privilege: the seccomp deny list stops the caller, the daemon kills the sandbox.
// ---------------------------------------------------------------------------------------------

/// A function whose handler runs `call` (Python using PRELUDE) and returns what it got, which
/// it never should: the call must be stopped by the deny filter.
fn denied_function(call: &str) -> String {
    py(&format!("def handle(request):\n    return {{'returned': {call}}}\n"), "")
}

cold_and_warm!(ptrace_attach_to_a_sibling_is_syscall_denied);
fn ptrace_attach_to_a_sibling_is_syscall_denied(start: Start) {
    require_root();
    let src = r#"
def handle(request):
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    PTRACE_ATTACH = 16
    rc = libc.ptrace(PTRACE_ATTACH, child, None, None)
    return {"ptrace": rc, "errno": ctypes.get_errno()}
"#;
    let d = serve(start, &[("ptrace", &py(src, ""))]);
    let fds = d.fd_count();
    let r = d.get("/ptrace");
    assert_syscall_denied(&d, &r, "ptrace");
    d.wait_quiet(fds);
    assert_still_serves(&d);
}

cold_and_warm!(process_vm_readv_of_a_sibling_is_syscall_denied);
fn process_vm_readv_of_a_sibling_is_syscall_denied(start: Start) {
    require_root();
    let src = r#"
def handle(request):
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    buf = ctypes.create_string_buffer(16)
    iov = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 16)
    return {"returned": raw(NR['process_vm_readv'], child, iov, 1, iov, 1, 0)}
"#;
    let d = serve(start, &[("vm", &py(src, ""))]);
    let r = d.get("/vm");
    assert_syscall_denied(&d, &r, "process_vm_readv");
    assert_still_serves(&d);
}

/// One test per forbidden call: a function that makes it gets 502 `syscall-denied`, and the
/// REPORT names the syscall.
macro_rules! denied {
    ($test:ident, $name:literal, $call:literal, $syscall:literal) => {
        cold_and_warm!($test);
        fn $test(start: Start) {
            require_root();
            let d = serve(start, &[($name, &denied_function($call))]);
            let r = d.get(concat!("/", $name));
            assert_syscall_denied(&d, &r, $syscall);
            assert_still_serves(&d);
        }
    };
}

denied!(mount_is_syscall_denied, "mount", "libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)", "mount");
// CLONE_NEWUSER: the usual first step of a namespace escape.
denied!(unshare_newuser_is_syscall_denied, "unshare", "libc.unshare(0x10000000)", "unshare");
// clone(CLONE_NEWNET | SIGCHLD): the flags are a register, so the filter sees them.
denied!(clone_with_newnet_is_syscall_denied, "clone", "raw(NR['clone'], 0x40000000 | 17, 0, 0, 0, 0)", "clone");

cold_and_warm!(setns_is_syscall_denied);
fn setns_is_syscall_denied(start: Start) {
    require_root();
    let src = r#"
def handle(request):
    try:
        fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    except OSError:
        fd = 0
    return {"returned": libc.setns(fd, 0)}
"#;
    let d = serve(start, &[("setns", &py(src, ""))]);
    let r = d.get("/setns");
    assert_syscall_denied(&d, &r, "setns");
    assert_still_serves(&d);
}

cold_and_warm!(tiocsti_is_syscall_denied_and_there_is_no_tty);
fn tiocsti_is_syscall_denied_and_there_is_no_tty(start: Start) {
    require_root();
    let src = r#"
import fcntl, termios
def handle(request):
    if request.query.get("step") == "tty":
        return {"isatty": [os.isatty(0), os.isatty(1), os.isatty(2)], "dev_tty": errno_of(lambda: os.open("/dev/tty", os.O_RDWR))}
    # Push a keystroke into whatever terminal fd 0 might be.
    return {"returned": fcntl.ioctl(0, termios.TIOCSTI, b"x")}
"#;
    let d = serve(start, &[("tty", &py(src, ""))]);
    let j = ok_json(&d, "/tty?step=tty");
    assert_eq!(j["isatty"], serde_json::json!([false, false, false]), "{j}");
    assert_eq!(j["dev_tty"], ENOENT, "{j}");
    let r = d.get("/tty?step=ioctl");
    assert_syscall_denied(&d, &r, "ioctl");
    assert_still_serves(&d);
}

// bpf(BPF_PROG_LOAD, NULL, 0)
denied!(bpf_is_syscall_denied, "bpf", "raw(NR['bpf'], 5, None, 0)", "bpf");
denied!(
    perf_event_open_is_syscall_denied,
    "perf",
    "raw(NR['perf_event_open'], ctypes.create_string_buffer(128), 0, -1, -1, 0)",
    "perf_event_open"
);
// add_key("user", "faas", "x", 1, KEY_SPEC_PROCESS_KEYRING)
denied!(add_key_is_syscall_denied, "key", "raw(NR['add_key'], b'user', b'faas', b'x', 1, -2)", "add_key");
denied!(userfaultfd_is_syscall_denied, "uffd", "raw(NR['userfaultfd'], 0)", "userfaultfd");
// ADDR_NO_RANDOMIZE: turning ASLR off for what the process execs next.
denied!(personality_change_is_syscall_denied, "pers", "raw(NR['personality'], 0x0040000)", "personality");

// ---------------------------------------------------------------------------------------------
// Syscalls that fail softly: ENOSYS for the fallback-friendly, EPERM for the unlisted.
// ---------------------------------------------------------------------------------------------

cold_and_warm!(io_uring_setup_is_enosys_not_a_kill);
fn io_uring_setup_is_enosys_not_a_kill(start: Start) {
    require_root();
    let src = r#"
def handle(request):
    params = ctypes.create_string_buffer(120)
    return {"io_uring_setup": raw(NR['io_uring_setup'], 8, params)}
"#;
    let d = serve(start, &[("uring", &py(src, ""))]);
    let j = ok_json(&d, "/uring");
    assert_eq!(j["io_uring_setup"], serde_json::json!([-1, ENOSYS]), "{j}");
    assert_still_serves(&d);
}

cold_and_warm!(clone3_is_enosys_not_a_kill);
fn clone3_is_enosys_not_a_kill(start: Start) {
    require_root();
    // clone3 with CLONE_NEWUSER in memory, where BPF cannot look: refused before it is read.
    let src = r#"
def handle(request):
    args = (ctypes.c_uint64 * 11)()
    args[0] = 0x10000000
    args[4] = 17
    return {"clone3": raw(NR['clone3'], args, ctypes.sizeof(args))}
"#;
    let d = serve(start, &[("clone3", &py(src, ""))]);
    let j = ok_json(&d, "/clone3");
    assert_eq!(j["clone3"], serde_json::json!([-1, ENOSYS]), "{j}");
    assert_still_serves(&d);
}

cold_and_warm!(unlisted_syscalls_are_eperm);
fn unlisted_syscalls_are_eperm(start: Start) {
    require_root();
    // Neither allowed nor on the deny list (seccomp.rs): sysfs(3) counts file system types,
    // get_mempolicy reads the NUMA policy. Harmless, and refused with EPERM.
    let src = r#"
def handle(request):
    mode = ctypes.c_int(0)
    return {"sysfs": raw(NR['sysfs'], 3), "get_mempolicy": raw(NR['get_mempolicy'], ctypes.byref(mode), None, 0, None, 0), "sched_yield": raw(NR['sched_yield'])}
"#;
    let d = serve(start, &[("unlisted", &py(src, ""))]);
    let j = ok_json(&d, "/unlisted");
    assert_eq!(j["sysfs"], serde_json::json!([-1, EPERM]), "{j}");
    assert_eq!(j["get_mempolicy"], serde_json::json!([-1, EPERM]), "{j}");
    assert_eq!(j["sched_yield"], serde_json::json!([0, 0]), "an allowed call as the control: {j}");
    assert_still_serves(&d);
}

// ---------------------------------------------------------------------------------------------
// Signals and resources
// ---------------------------------------------------------------------------------------------

/// A host process that must outlive an attack; killed when the test ends, pass or fail.
struct Bystander(std::process::Child);

impl Bystander {
    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

cold_and_warm!(killing_the_front_end_is_esrch_and_kill_minus_one_stays_inside);
fn killing_the_front_end_is_esrch_and_kill_minus_one_stays_inside(start: Start) {
    require_root();
    let src = r#"
def handle(request):
    if "probe" in request.query:
        return probe()
    out = {"kill_daemon": errno_of(lambda: os.kill(int(request.query["pid"]), signal.SIGKILL)),
           "pidfd_daemon": errno_of(lambda: os.pidfd_open(int(request.query["pid"])))}
    children = []
    for _ in range(3):
        c = os.fork()
        if c == 0:
            time.sleep(30)
            os._exit(0)
        children.append(c)
    out["kill_all"] = errno_of(lambda: os.kill(-1, signal.SIGKILL))
    out["children"] = [os.waitpid(c, 0)[1] for c in children]
    return out
"#;
    // One sandbox uid only, so the bystander outside has the very uid the attacking sandbox
    // runs as: only the pid namespace keeps kill(-1) from reaching it, not a uid check.
    let uids = common::private_uids(1);
    let mut d =
        serve_opts(start, &[("killer", &py(src, ""))], common::Options { uids: Some(uids), ..Default::default() });
    // Warm, the zygote's spare needs a uid of its own while a request holds the one there is.
    d.spares_may_fail = true;
    require_sandboxed(&d, "/killer");
    let base = uids.0;
    let mut bystander =
        Bystander(std::process::Command::new("/bin/sleep").arg("120").uid(base).gid(base).spawn().unwrap());
    let j = ok_json(&d, &format!("/killer?pid={}", d.pid()));
    assert_eq!(j["kill_daemon"], ESRCH, "{j}");
    assert_eq!(j["pidfd_daemon"], ESRCH, "{j}");
    assert_eq!(j["kill_all"], 0, "{j}");
    // Each child died of SIGKILL (wait status 9), and the handler that sent it lived to answer.
    assert_eq!(j["children"], serde_json::json!([9, 9, 9]), "{j}");
    assert!(bystander.alive(), "kill(-1) reached a process outside the sandbox");
    drop(bystander);
    assert_still_serves(&d);
}

cold_and_warm!(a_sandbox_sees_and_reaches_no_sibling_sandbox);
fn a_sandbox_sees_and_reaches_no_sibling_sandbox(start: Start) {
    require_root();
    // The victim runs until the test releases it, so it is provably alive while the attacker
    // works. The attacker looks for it by its host pid and by scanning its own /proc, then
    // sends SIGKILL to everything it can (kill(-1)).
    let mark = HostDir::new();
    let victim = py(
        &format!(
            "def handle(request):\n    libc.prctl(15, b'faas-victim', 0, 0, 0)\n    deadline = time.time() + 20\n    \
             while not os.path.exists('{}/go') and time.time() < deadline:\n        \
             time.sleep(0.02)\n    return {{'victim': 'survived'}}\n",
            mark.path().display()
        ),
        &format!("[sandbox]\nread_only = [\"{}\"]\n", mark.path().display()),
    );
    let attacker = r#"
def handle(request):
    if "probe" in request.query:
        return probe()
    pid = int(request.query["pid"])
    out = {"kill": errno_of(lambda: os.kill(pid, signal.SIGKILL)),
           "pidfd_open": errno_of(lambda: os.pidfd_open(pid)),
           "proc": errno_of(lambda: open(f"/proc/{pid}/status").read())}
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    out["visible"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    out["child"] = child
    out["kill_all"] = errno_of(lambda: os.kill(-1, signal.SIGKILL))
    out["child_status"] = os.waitpid(child, 0)[1]
    return out
"#;
    let d = serve(start, &[("victim", &victim), ("attacker", &py(attacker, ""))]);
    require_sandboxed(&d, "/attacker");
    let url = d.url("/victim");
    let first = std::thread::spawn(move || common::request_to(&url, "GET", b"", &[]));
    let until = Instant::now() + Duration::from_secs(20);
    // Found by the name it gives itself: warm, a spare being made is a sandbox process too.
    let victim_pid = loop {
        let named =
            |p: &&u32| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "faas-victim");
        if let Some(&p) = d.sandbox_processes().iter().find(named) {
            break p;
        }
        assert!(Instant::now() < until, "the victim never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    let j = ok_json(&d, &format!("/attacker?pid={victim_pid}"));
    // The victim's host pid names nothing in the attacker's pid namespace...
    assert_eq!(j["kill"], ESRCH, "{j}");
    assert_eq!(j["pidfd_open"], ESRCH, "{j}");
    assert_eq!(j["proc"], ENOENT, "{j}");
    // ...which holds the attacker (pid 1) and its own child, nothing else.
    assert_eq!(j["visible"], serde_json::json!([1, j["child"]]), "{j}");
    assert_eq!(j["kill_all"], 0, "{j}");
    assert_eq!(j["child_status"], 9, "kill(-1) reached the attacker's own child: {j}");
    assert!(d.sandbox_processes().contains(&victim_pid), "kill(-1) in one sandbox killed another");
    std::fs::write(mark.path().join("go"), "").unwrap();
    let r = first.join().unwrap();
    assert_eq!(r.status, 200, "the victim was hurt: {}", r.text());
    assert_eq!(r.json()["victim"], "survived");
    assert_still_serves(&d);
}

cold_and_warm!(fork_bomb_hits_rlimit_nproc_with_eagain);
fn fork_bomb_hits_rlimit_nproc_with_eagain(start: Start) {
    require_root();
    let src = r#"
def handle(request):
    if "probe" in request.query:
        return probe()
    if os.fork() == 0:
        while True:  # every process forks forever: the classic bomb
            try:
                os.fork()
            except OSError:
                time.sleep(0.05)
    # The control fork: retried until the bomb has filled the limit (EAGAIN), for at most 10 s.
    err, deadline = 0, time.time() + 10
    while err == 0 and time.time() < deadline:
        try:
            c = os.fork()
            if c == 0:
                os._exit(0)
            os.waitpid(c, 0)
            time.sleep(0.05)
        except OSError as e:
            err = e.errno
    procs = len([p for p in os.listdir("/proc") if p.isdigit()])
    return {"errno": err, "procs": procs}
"#;
    let d = serve(start, &[("bomb", &py(src, "[limits]\npids = 16"))]);
    require_sandboxed(&d, "/bomb");
    let fds = d.fd_count();
    let j = ok_json(&d, "/bomb");
    assert_eq!(j["errno"], EAGAIN, "{j}");
    let procs = j["procs"].as_i64().unwrap();
    assert!((2..=16).contains(&procs), "{procs} processes with pids = 16: {j}");
    d.wait_quiet(fds);
    assert_still_serves(&d);
}

cold_and_warm!(memory_bomb_hits_rlimit_data_with_enomem);
fn memory_bomb_hits_rlimit_data_with_enomem(start: Start) {
    require_root();
    let src = r#"
import mmap
def handle(request):
    if "probe" in request.query:
        return probe()
    out = {}
    try:
        m = mmap.mmap(-1, 512 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        out["mmap"] = 0
    except OSError as e:
        out["mmap"] = e.errno
    try:
        b = bytearray(512 << 20)
        out["bytearray"] = "allocated"
    except MemoryError:
        out["bytearray"] = "MemoryError"
    return out
"#;
    let d = serve(start, &[("mem", &py(src, "[limits]\nmemory = \"64M\""))]);
    // RLIMIT_DATA is the fallback without a memory cgroup; with one, memory.max stops the
    // bomb instead (the VM tier tests that).
    if !d.require_cgroup_mode(common::CgroupMode::None) {
        return;
    }
    require_sandboxed(&d, "/mem");
    let j = ok_json(&d, "/mem");
    assert_eq!(j["mmap"], ENOMEM, "{j}");
    assert_eq!(j["bytearray"], "MemoryError", "{j}");
    assert_still_serves(&d);
}

cold_and_warm!(ten_thousand_files_hit_emfile_at_nofile);
fn ten_thousand_files_hit_emfile_at_nofile(start: Start) {
    require_root();
    let src = r#"
def handle(request):
    fds, err = [], 0
    try:
        for _ in range(10000):
            fds.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as e:
        err = e.errno
    for fd in fds:
        os.close(fd)
    return {"errno": err, "opened": len(fds)}
"#;
    let d = serve(start, &[("files", &py(src, "[limits]\nnofile = 256"))]);
    let j = ok_json(&d, "/files");
    assert_eq!(j["errno"], EMFILE, "{j}");
    let opened = j["opened"].as_i64().unwrap();
    assert!((200..256).contains(&opened), "opened {opened} with nofile = 256: {j}");
    assert_still_serves(&d);
}

/// One GET on a raw connection, read to EOF or error: (status, body bytes after de-chunking,
/// whether the body ended with the terminating zero-length chunk). ureq hides the difference
/// between a body that ended and one that was cut off; this does not.
/// With `pause`, it stops reading for that long after the first bytes: a slow client.
fn get_raw_chunked(d: &Daemon, path: &str, pause: Duration) -> (u16, Vec<u8>, bool) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            // The daemon ends a cut body by closing (or resetting) the connection.
            Ok(0) => break,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            // A stall is a hang, never "cut short": the daemon must end the body itself.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{path}: the daemon left the client waiting for 30 s after {} bytes", raw.len())
            }
            Err(e) => panic!("{path}: reading the response failed: {e}"),
            Ok(n) => {
                if raw.is_empty() {
                    std::thread::sleep(pause);
                }
                raw.extend_from_slice(&buf[..n]);
            }
        }
    }
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("no response head") + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let (mut body, mut at, mut terminated) = (Vec::new(), head_end, false);
    while let Some(eol) = raw[at..].windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&raw[at..at + eol]).unwrap().trim(), 16).unwrap();
        at += eol + 2;
        if size == 0 {
            terminated = raw[at..].starts_with(b"\r\n");
            break;
        }
        let end = (at + size).min(raw.len());
        body.extend_from_slice(&raw[at..end]);
        if end < at + size {
            break;
        }
        at = end + 2;
    }
    (status, body, terminated)
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn two_gib_on_stdout_stop_at_exactly_the_output_limit_and_end_cut() {
    require_root();
    // The client must get exactly the first limits.output bytes, every one of them, and then
    // see the body cut short, never a clean last chunk: a truncated response must not pass for
    // a complete one. Half of the requests read slowly, so the cut meets a full socket and a
    // full channel. (Regressions: the cut was lost when a slow client let the channel fill up;
    // hyper dropped what it still buffered when the body ended with an error.)
    let d = serve(
        Start::Cold,
        &[(
            "flood",
            &sh_with(
                "printf 'Content-Type: application/octet-stream\\n\\n'\nhead -c 2G /dev/zero",
                "[limits]\noutput = \"1M\"",
            ),
        )],
    );
    let fds = d.fd_count();
    let (mut cleanly_ended, mut short) = (Vec::new(), Vec::new());
    for i in 0..10 {
        let t = Instant::now();
        let pause = Duration::from_millis(if i % 2 == 0 { 0 } else { 300 });
        let (status, body, terminated) = get_raw_chunked(&d, "/flood", pause);
        assert_eq!(status, 200, "the head went out before the limit");
        assert!(body.len() <= 1 << 20, "request {i}: {} bytes passed limits.output = 1M", body.len());
        assert!(body.iter().all(|&b| b == 0));
        // A guard against a hang, not a speed target: 2 GiB would take far longer.
        assert!(t.elapsed() < Duration::from_secs(30), "took {:?}", t.elapsed());
        if terminated {
            cleanly_ended.push((i, body.len()));
        }
        if body.len() != 1 << 20 {
            short.push((i, body.len()));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let logs = d.logs();
        if logs.matches("REPORT flood ").count() >= 10 || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let reports: Vec<&str> = logs.lines().filter(|l| l.contains("REPORT flood ")).collect();
    assert_eq!(reports.len(), 10, "{reports:?}");
    for line in &reports {
        assert!(
            line.contains(" outcome=output-too-large ") && line.contains(&format!(" bytes_out={} ", 1 << 20)),
            "{line}"
        );
    }
    d.wait_quiet(fds);
    assert_still_serves(&d);
    assert!(
        cleanly_ended.is_empty(),
        "a body cut at limits.output ended with the terminating chunk, as if complete (request, bytes): {cleanly_ended:?}"
    );
    assert!(short.is_empty(), "limits.output = 1M, but the client got fewer bytes (request, bytes): {short:?}");
}

cold_and_warm!(syscall_denied_mid_stream_cuts_the_body_short);
fn syscall_denied_mid_stream_cuts_the_body_short(start: Start) {
    require_root();
    // Once the head is out, a sandbox killed for a forbidden syscall must leave the client an
    // incomplete body, never a clean end of the chunked body that passes half a response for a
    // whole one (wrappers/README.md: "the client sees an incomplete body"). The handler makes
    // the call only once the client has read the first part (a marker file the test writes),
    // so the first part provably went out before the kill.
    let mark = HostDir::new();
    let go = mark.path().join("go");
    let src = format!(
        r#"
def handle(request):
    def stream():
        yield "first part\n"
        deadline = time.time() + 20
        while not os.path.exists("{go}") and time.time() < deadline:
            time.sleep(0.02)
        libc.ptrace(16, 1, None, None)
        yield "never sent\n"
    return stream()
"#,
        go = go.display()
    );
    let d =
        serve(start, &[("midway", &py(&src, &format!("[sandbox]\nread_only = [\"{}\"]\n", mark.path().display())))]);
    let mut conn = common::RawConn::get(d.port, "/midway", "");
    conn.read_until("first part\n");
    std::fs::write(&go, "").unwrap();
    let resp = conn.finish();
    assert_eq!(resp.status, 200, "the head went out before the attack");
    assert_eq!(String::from_utf8_lossy(&resp.body), "first part\n");
    let id = resp.head.lines().find_map(|l| l.strip_prefix("faas-invocation-id:")).map(str::trim);
    let line = report_line(&d, id.unwrap_or_else(|| panic!("no Faas-Invocation-Id: {}", resp.head)));
    assert!(line.contains(" outcome=syscall-denied ") && line.contains(" syscall=ptrace "), "{line}");
    assert_still_serves(&d);
    assert!(!resp.complete, "the body of a sandbox killed mid-response ended cleanly, as if complete");
}

cold_and_warm!(a_one_mib_stderr_line_does_not_stall);
fn a_one_mib_stderr_line_does_not_stall(start: Start) {
    require_root();
    let src = r#"
def handle(request):
    sys.stderr.flush()
    sys.stderr.buffer.write(b"A" * (1 << 20) + b"\n")
    sys.stderr.flush()
    return "done"
"#;
    let d = serve(start, &[("loud", &py(src, "[limits]\nlog = \"2M\"\ntimeout = \"5s\""))]);
    let r = d.get("/loud");
    assert_eq!((r.status, r.text()), (200, "done".to_owned()), "{}", d.logs());
    let id = invocation_id(&r);
    report_line(&d, &id);
    let prefix = format!("<6>loud[{id}]: ");
    let logs = d.logs();
    let pieces: Vec<&str> = logs.lines().filter_map(|l| l.strip_prefix(&prefix)).filter(|l| !l.is_empty()).collect();
    assert_eq!(pieces.len(), 16, "1 MiB in 64 KiB pieces: {:?}", pieces.iter().map(|p| p.len()).collect::<Vec<_>>());
    assert!(
        pieces.iter().all(|p| p.len() == 64 << 10 && p.bytes().all(|b| b == b'A')),
        "pieces are not 64 KiB of the line"
    );
    assert_still_serves(&d);
}

// ---------------------------------------------------------------------------------------------
// Leftovers
// ---------------------------------------------------------------------------------------------

cold_and_warm!(daemonized_grandchild_is_gone_after_the_response);
fn daemonized_grandchild_is_gone_after_the_response(start: Start) {
    require_root();
    let src = r#"
def handle(request):
    child = os.fork()
    if child == 0:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        libc.prctl(15, b"faas-leftover", 0, 0, 0)  # PR_SET_NAME
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, 65536)
        time.sleep(120)
        os._exit(0)
    os.waitpid(child, 0)
    time.sleep(0.3)
    return {"detached": True}
"#;
    let d = serve(start, &[("daemonize", &py(src, ""))]);
    let fds = d.fd_count();
    let j = ok_json(&d, "/daemonize");
    assert_eq!(j["detached"], true);
    d.wait_quiet(fds);
    // Also look host-wide: a grandchild that escaped the pid namespace would be reparented to
    // the host's init and no longer be below the daemon.
    let range = uid_range(&d);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = host_processes(range, "faas-leftover");
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            for (pid, _) in &left {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), nix::sys::signal::Signal::SIGKILL);
            }
            panic!("sandbox processes outlived the response: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_still_serves(&d);
}

// ---------------------------------------------------------------------------------------------
// Ordinary work still runs unchanged
// ---------------------------------------------------------------------------------------------

const DATA_JSON: &str = r#"{"items": [1, 2, 3], "name": "ordinary"}"#;

cold_and_warm!(ordinary_python_work_runs);
fn ordinary_python_work_runs(start: Start) {
    require_root();
    let main = r#"
import hashlib, json, os, re, subprocess, threading

def handle(request):
    data = json.load(open("/code/data.json"))
    with open("/tmp/out.txt", "w") as f:
        f.write("written")
    back = open("/tmp/out.txt").read()
    m = re.fullmatch(r"(?P<word>[a-z]+)-(?P<n>\d+)", "item-42")
    sums = [0] * 8
    def work(i):
        sums[i] = sum(range(i * 1000))
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sh = subprocess.run(["/bin/sh", "-c", "echo $((6 * 7)); id -u"], capture_output=True, text=True, check=True).stdout.split()
    return {
        "data": data,
        "echo": request.json(),
        "tmp": back,
        "regex": [m["word"], int(m["n"])],
        "threads": sums[7],
        "sh": sh,
        "uid": os.getuid(),
        "sha": hashlib.sha256(b"abc").hexdigest()[:8],
    }
"#;
    let code = code_dir(&[("main.py", main), ("data.json", DATA_JSON)]);
    let d = serve(start, &[("ordinary", &code_function("python", code.path(), ""))]);
    let r = d.post("/ordinary", br#"{"ping": "pong"}"#);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), d.logs());
    let j = r.json();
    let uid = j["uid"].as_i64().unwrap();
    assert!(uid >= i64::from(UID_BASE), "{j}");
    assert_eq!(j["data"], serde_json::from_str::<serde_json::Value>(DATA_JSON).unwrap());
    assert_eq!(j["echo"], serde_json::json!({"ping": "pong"}));
    assert_eq!(j["tmp"], "written");
    assert_eq!(j["regex"], serde_json::json!(["item", 42]));
    assert_eq!(j["threads"], (0..7000).sum::<i64>());
    assert_eq!(j["sh"], serde_json::json!(["42", uid.to_string()]));
    assert_eq!(j["sha"], "ba7816bf");
    assert_still_serves(&d);
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn ordinary_node_work_runs() {
    require_root();
    let main = r#"
const fs = require('fs');
const cp = require('child_process');
const crypto = require('crypto');
const { Worker } = require('worker_threads');

exports.handle = async (request) => {
  const data = JSON.parse(await fs.promises.readFile('/code/data.json', 'utf8'));
  fs.writeFileSync('/tmp/out.txt', 'written');
  const back = await fs.promises.readFile('/tmp/out.txt', 'utf8');
  const m = /^(?<word>[a-z]+)-(?<n>\d+)$/.exec('item-42');
  const sh = cp.execFileSync('/bin/sh', ['-c', 'echo $((6 * 7)); id -u']).toString().split(/\s+/).filter(Boolean);
  const worker = await new Promise((resolve, reject) => {
    const w = new Worker('require("worker_threads").parentPort.postMessage(6 * 7)', { eval: true });
    w.on('message', resolve);
    w.on('error', reject);
  });
  const sha = crypto.createHash('sha256').update('abc').digest('hex').slice(0, 8);
  return { data, echo: request.json(), tmp: back, regex: [m.groups.word, Number(m.groups.n)], sh, worker, sha, uid: process.getuid() };
};
"#;
    let code = code_dir(&[("main.js", main), ("data.json", DATA_JSON)]);
    let d = serve(Start::Cold, &[("ordinary", &code_function("node", code.path(), ""))]);
    let r = d.post("/ordinary", br#"{"ping": "pong"}"#);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), d.logs());
    let j = r.json();
    let uid = j["uid"].as_i64().unwrap();
    assert!(uid >= i64::from(UID_BASE), "{j}");
    assert_eq!(j["data"], serde_json::from_str::<serde_json::Value>(DATA_JSON).unwrap());
    assert_eq!(j["echo"], serde_json::json!({"ping": "pong"}));
    assert_eq!(j["tmp"], "written");
    assert_eq!(j["regex"], serde_json::json!(["item", 42]));
    assert_eq!(j["sh"], serde_json::json!(["42", uid.to_string()]));
    assert_eq!(j["worker"], 42);
    assert_eq!(j["sha"], "ba7816bf");
    assert_still_serves(&d);
}

cold_and_warm!(a_run_of_attacks_against_one_daemon_leaves_it_serving);
fn a_run_of_attacks_against_one_daemon_leaves_it_serving(start: Start) {
    require_root();
    // Several attacks against one front end, one after another, each with its exact outcome,
    // then an ordinary request: no attack may leave the front end worse for the next.
    let listener = format!("{OWN_FILTER}\ndef handle(request):\n    return {{'returned': own_filter(NEW_LISTENER)}}\n");
    let d = serve(start, &[
        ("ptrace", &denied_function("libc.ptrace(16, 1, None, None)")),
        ("mount", &denied_function("libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)")),
        ("listener", &py(&listener, "")),
        ("flood", &sh_with("printf '\\n'\nhead -c 64M /dev/zero", "[limits]\noutput = \"64K\"")),
        ("crash", &sh("exit 3")),
        ("files", &py("def handle(request):\n    fds = []\n    try:\n        while True:\n            fds.append(os.open('/dev/null', 0))\n    finally:\n        for fd in fds:\n            os.close(fd)", "")),
    ]);
    let fds = d.fd_count();
    assert_syscall_denied(&d, &d.get("/ptrace"), "ptrace");
    assert_syscall_denied(&d, &d.get("/mount"), "mount");
    assert_syscall_denied(&d, &d.get("/listener"), "seccomp");
    let (status, body, terminated) = get_raw_chunked(&d, "/flood", Duration::ZERO);
    assert_eq!(
        (status, body.len(), terminated),
        (200, 64 << 10, false),
        "the flood is cut at exactly 64K and ends unclean"
    );
    let r = d.get("/crash");
    assert_eq!((r.status, r.problem()), (502, "crashed".to_owned()), "{}", r.text());
    // EMFILE raised in the handler: the wrapper's 500, the function's own failure.
    let r = d.get("/files");
    assert_eq!((r.status, r.problem()), (500, "handler-error".to_owned()), "{}", r.text());
    d.wait_quiet(fds);
    assert_still_serves(&d);
}

// ---------------------------------------------------------------------------------------------
// Fail closed (issue 8): seccomp supervision, socket families, host network, capabilities,
// network namespaces, daemon death, /proc and /tmp, IPC memory, read_only sockets.
// ---------------------------------------------------------------------------------------------

/// A one-instruction filter (RET ALLOW) and raw seccomp(2)/prctl(2) calls to install it.
const OWN_FILTER: &str = r#"
class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]
class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]
def prog(ret):
    insns = (SockFilter * 1)(SockFilter(0x06, 0, 0, ret))
    p = SockFprog(1, insns)
    p._keep = insns
    return p
SECCOMP_SET_MODE_FILTER, NEW_LISTENER, PR_SET_SECCOMP = 1, 1 << 3, 22
def own_filter(flags, ret=0x7fff0000):
    p = prog(ret)
    return raw(NR['seccomp'], SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(p))
"#;

cold_and_warm!(a_seccomp_listener_of_its_own_is_syscall_denied);
fn a_seccomp_listener_of_its_own_is_syscall_denied(start: Start) {
    require_root();
    // With a listener of its own a sandbox could answer CONTINUE for its children's
    // deny-listed calls once the daemon's listener is gone (review finding 1).
    let src = format!("{OWN_FILTER}\ndef handle(request):\n    return {{'returned': own_filter(NEW_LISTENER)}}\n");
    let d = serve(start, &[("listener", &py(&src, ""))]);
    let r = d.get("/listener");
    assert_syscall_denied(&d, &r, "seccomp");
    assert_still_serves(&d);
}

cold_and_warm!(a_stacked_filter_is_eperm_so_denied_calls_stay_reported);
fn a_stacked_filter_is_eperm_so_denied_calls_stay_reported(start: Start) {
    require_root();
    // An own filter answering ERRNO would outrank USER_NOTIF and silence the report (finding
    // 11): stacking is refused, so the ptrace below is still stopped and named.
    let src = format!(
        "{OWN_FILTER}\ndef handle(request):\n    if request.query.get('step') == 'stack':\n        \
         p = prog(0x00050001)\n        return {{'seccomp': own_filter(0, 0x00050001), 'prctl': raw(NR['prctl'], PR_SET_SECCOMP, 2, ctypes.byref(p))}}\n    \
         own_filter(0, 0x00050001)\n    return {{'returned': raw(NR['ptrace'], 0, 0, 0, 0)}}\n"
    );
    let d = serve(start, &[("stack", &py(&src, ""))]);
    let j = ok_json(&d, "/stack?step=stack");
    assert_eq!(j["seccomp"], serde_json::json!([-1, EPERM]), "{j}");
    assert_eq!(j["prctl"], serde_json::json!([-1, EPERM]), "{j}");
    let r = d.get("/stack?step=ptrace");
    assert_syscall_denied(&d, &r, "ptrace");
    assert_still_serves(&d);
}

cold_and_warm!(losing_the_seccomp_listener_kills_the_sandbox_with_503);
fn losing_the_seccomp_listener_kills_the_sandbox_with_503(start: Start) {
    require_root();
    // FAAS_TEST_FAULT (debug builds only) drops the listener right after it arrives, as an
    // exhausted fd table does (recvmsg truncates SCM_RIGHTS at EMFILE). The handler would
    // sleep 60 s if it ran on: it must be killed and the request answered 503 at once.
    let env = [("FAAS_TEST_FAULT", "lose-seccomp-listener")];
    let mut d = serve_opts(start, &[("nap", &py(SLEEPER, ""))], common::Options { env: &env, ..Default::default() });
    // Warm, the zygote's spares lose their listeners too: the request is forked then.
    d.spares_may_fail = true;
    let t = Instant::now();
    let r = d.get("/nap");
    assert_eq!(r.status, 503, "{}\n{}", r.text(), d.logs());
    assert_eq!(r.problem(), "sandbox-unavailable", "{}", r.text());
    assert!(r.text().contains("seccomp"), "the detail names the step: {}", r.text());
    assert!(t.elapsed() < Duration::from_secs(20), "the sandbox ran on after losing its supervisor");
    let line = report_line(&d, &invocation_id(&r));
    assert!(line.contains("outcome=sandbox-unavailable"), "{line}");
    assert!(d.logs().contains("failed to take the seccomp listener"), "the cause is logged:\n{}", d.logs());
    d.wait_quiet(d.fd_count());
    assert!(host_processes(uid_range(&d), NO_NAME).is_empty(), "a sandbox outlived its lost listener");
}

#[cfg(target_arch = "x86_64")]
cold_and_warm!(an_int_0x80_syscall_is_reported_as_syscall_denied);
#[cfg(target_arch = "x86_64")]
fn an_int_0x80_syscall_is_reported_as_syscall_denied(start: Start) {
    require_root();
    // getpid through the i386 ABI: mov eax, 20; int 0x80; ret — from an executable page.
    let src = r#"
import mmap
def handle(request):
    code = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"
    m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    m.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    return {"returned": ctypes.CFUNCTYPE(ctypes.c_int)(addr)()}
"#;
    let d = serve(start, &[("i386", &py(src, ""))]);
    let r = d.get("/i386");
    assert_syscall_denied(&d, &r, "i386:20");
    assert_still_serves(&d);
}

cold_and_warm!(socket_families_are_an_allow_list);
fn socket_families_are_an_allow_list(start: Start) {
    require_root();
    let src = r#"
def handle(request):
    def sock(family, kind, proto=0):
        return errno_of(lambda: socket.socket(family, kind, proto).close())
    return {
        "unix": sock(socket.AF_UNIX, socket.SOCK_STREAM),
        "inet": sock(socket.AF_INET, socket.SOCK_DGRAM),
        "inet6": sock(socket.AF_INET6, socket.SOCK_STREAM),
        "netlink_route": sock(16, socket.SOCK_RAW, 0),
        "netlink_uevent": sock(16, socket.SOCK_DGRAM, 15),
        "netlink_audit": sock(16, socket.SOCK_RAW, 9),
        "vsock": sock(40, socket.SOCK_STREAM),
        "packet": sock(17, socket.SOCK_RAW),
        "alg": sock(38, socket.SOCK_SEQPACKET),
        "socketpair_inet": raw(NR['socketpair'], socket.AF_INET, socket.SOCK_STREAM, 0, ctypes.create_string_buffer(8))[1],
    }
"#;
    let d = serve(start, &[("fam", &py(src, ""))]);
    let j = ok_json(&d, "/fam");
    const EAFNOSUPPORT: i64 = 97;
    for ok in ["unix", "inet", "inet6", "netlink_route"] {
        assert_eq!(j[ok], 0, "{ok}: {j}");
    }
    // vsock is not network-namespaced: on a VM guest it would leave a "no network" sandbox.
    for refused in ["netlink_uevent", "netlink_audit", "vsock", "packet", "alg", "socketpair_inet"] {
        assert_eq!(j[refused], EAFNOSUPPORT, "{refused}: {j}");
    }
    assert_still_serves(&d);
}

cold_and_warm!(host_network_cannot_listen_or_bind_but_connects_out);
fn host_network_cannot_listen_or_bind_but_connects_out(start: Start) {
    require_root();
    // listen() on an unbound socket binds an ephemeral port past Landlock's bind hook, and
    // Landlock has no UDP rights (finding 2): with the host's network the filter refuses both.
    let src = r#"
def handle(request):
    out = {}
    s = socket.socket()
    out["listen_unbound"] = errno_of(lambda: s.listen())
    out["udp_bind"] = errno_of(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(("0.0.0.0", 0)))
    out["unix_abstract_bind"] = errno_of(lambda: socket.socket(socket.AF_UNIX).bind("\0faas-squat"))
    c = socket.create_connection(("127.0.0.1", int(request.query["port"])), timeout=5)
    c.sendall(b"GET /_/health HTTP/1.0\r\n\r\n")
    out["front_end"] = c.recv(64).decode(errors="replace").split("\r\n")[0]
    return out
"#;
    let d = serve(start, &[("net", &py(src, "[sandbox]\nnetwork = true"))]);
    let j = ok_json(&d, &format!("/net?port={}", d.port));
    assert_eq!(j["listen_unbound"], EPERM, "{j}");
    assert_eq!(j["udp_bind"], EPERM, "{j}");
    assert_eq!(j["unix_abstract_bind"], EPERM, "{j}");
    assert_eq!(j["front_end"], "HTTP/1.0 200 OK", "network = true connects out: {j}");
    assert_still_serves(&d);
}

/// Reads the five capability sets and the session from inside.
const CAPS: &str = r#"
def handle(request):
    status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
    return {k: status[k].strip() for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"]} | {
        "sid": os.getsid(0), "pgrp": os.getpgrp(), "pdeathsig": raw(NR['prctl'], 2, ctypes.byref(ctypes.c_int(0)), 0, 0, 0)}
"#;

fn assert_no_capabilities(j: &serde_json::Value) {
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(j[set], "0000000000000000", "{set}: {j}");
    }
    assert_eq!(j["NoNewPrivs"], "1", "{j}");
    // setsid(): its own session and process group (bubblewrap's --new-session).
    assert_eq!((j["sid"].as_i64(), j["pgrp"].as_i64()), (Some(1), Some(1)), "{j}");
}

cold_and_warm!(every_capability_set_is_empty_under_faas_serve);
fn every_capability_set_is_empty_under_faas_serve(start: Start) {
    require_root();
    // The bounding set is per thread: sandboxes are cloned from tokio workers, not from the
    // thread that started the daemon.
    let d = serve(start, &[("caps", &py(CAPS, ""))]);
    for _ in 0..4 {
        assert_no_capabilities(&ok_json(&d, "/caps"));
    }
    assert_still_serves(&d);
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn every_capability_set_is_empty_under_faas_invoke() {
    require_root();
    // faas invoke never forks from a zygote: cold only.
    let d = serve(Start::Cold, &[("caps", &py(CAPS, ""))]);
    let out = invoke_beside(&d, "caps", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_no_capabilities(&serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")));
}

/// `faas invoke NAME` with the daemon's functions, its own state dir and a uid range of its
/// own (above the daemon's), so it never meets the daemon's sandboxes.
fn invoke_beside(d: &Daemon, name: &str, args: &[&str]) -> std::process::Output {
    invoke_command(d, name, args).output().unwrap()
}

fn invoke_command(d: &Daemon, name: &str, args: &[&str]) -> std::process::Command {
    let (base, count) = uid_range(d);
    let cfg = d.dir.path().join("invoke.toml");
    std::fs::write(
        &cfg,
        format!(
            "uid_base = {}\nuid_count = {count}\nwrappers_dir = \"{}\"\n",
            base + count,
            common::repo().join("wrappers").display()
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_faas"));
    cmd.arg("--config")
        .arg(&cfg)
        .arg("--functions")
        .arg(d.functions_dir())
        .arg("--state-dir")
        .arg(d.dir.path().join("invoke-state"));
    cmd.arg("invoke").arg(name).args(args).stdin(std::process::Stdio::null());
    cmd
}

/// No process has this name: `host_processes(range, NO_NAME)` matches by uid only.
const NO_NAME: &str = "\u{0}";

/// Waits until the daemon's log has `needle`, at most 20 s.
fn wait_log(d: &Daemon, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.logs().contains(needle) {
        assert!(Instant::now() < deadline, "never logged {needle:?}:\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

cold_and_warm!(concurrent_sandboxes_share_no_network_namespace);
fn concurrent_sandboxes_share_no_network_namespace(start: Start) {
    require_root();
    // Sandbox a binds an abstract name and stays; sandbox b, at the same time, must be able to
    // bind the same name and must not see a's socket in /proc/net/unix (finding 10).
    let src = r#"
def handle(request):
    role = request.query["role"]
    name = "\0faas-squat-" + request.query["tag"]
    s = socket.socket(socket.AF_UNIX)
    out = {"role": role, "netns": os.readlink("/proc/self/ns/net"), "bind": errno_of(lambda: s.bind(name))}
    s.listen()
    out["sees"] = [l for l in open("/proc/net/unix").read().splitlines() if "faas-squat" in l]
    if role == "a":
        sys.stderr.write("a-is-bound-" + request.query["tag"] + "\n")
        sys.stderr.flush()
        deadline = time.time() + 20
        while not os.path.exists("/mark/go") and time.time() < deadline:
            time.sleep(0.02)
    return out
"#;
    let mark = HostDir::new();
    let extra = format!("[sandbox]\nread_only = [\"{}\"]\n", mark.path().display());
    let f = py(&src.replace("/mark/go", &format!("{}/go", mark.path().display())), &extra);
    let d = serve(start, &[("ns", &f), ("ns2", &f)]);
    let tag = format!("{}", std::process::id());
    let url = d.url(&format!("/ns?role=a&tag={tag}"));
    let a = std::thread::spawn(move || common::request_to(&url, "GET", b"", &[]));
    wait_log(&d, &format!("a-is-bound-{tag}"));
    // Another function and the same one: neither may share a's namespace.
    let b1 = ok_json(&d, &format!("/ns2?role=b&tag={tag}"));
    let b2 = ok_json(&d, &format!("/ns?role=b&tag={tag}"));
    std::fs::write(mark.path().join("go"), "").unwrap();
    let a = a.join().unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    let a = a.json();
    assert_eq!(a["bind"], 0, "{a}");
    for b in [&b1, &b2] {
        assert_eq!(b["bind"], 0, "the name a holds was taken in b's namespace too: {b}");
        assert_ne!(b["netns"], a["netns"], "a and b share a network namespace: {a} {b}");
        assert_eq!(b["sees"].as_array().map(Vec::len), Some(1), "b sees only its own socket: {b}");
    }
    assert_still_serves(&d);
}

/// Sandbox processes of `d`'s uid range that are still alive, waiting up to `limit` for
/// them to go.
fn sandboxes_left(range: (u32, u32), limit: Duration) -> Vec<(u32, String)> {
    let deadline = Instant::now() + limit;
    loop {
        let left = host_processes(range, NO_NAME);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill_all(left: &[(u32, String)]) {
    for (pid, _) in left {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), nix::sys::signal::Signal::SIGKILL);
    }
}

const SLEEPER: &str = r#"
def handle(request):
    sys.stderr.write("sleeper-started\n")
    sys.stderr.flush()
    time.sleep(60)
    return "woke"
"#;

cold_and_warm!(killing_faas_serve_leaves_no_sandbox_behind);
fn killing_faas_serve_leaves_no_sandbox_behind(start: Start) {
    require_root();
    // The parent-death signal is armed after the uid switch, which would clear it (finding 4).
    let mut d = serve(start, &[("sleeper", &py(SLEEPER, ""))]);
    let range = uid_range(&d);
    let url = d.url("/sleeper");
    let _req = std::thread::spawn(move || common::request_to(&url, "GET", b"", &[]));
    wait_log(&d, "sleeper-started");
    assert!(!host_processes(range, NO_NAME).is_empty(), "the sleeper is not running");
    // Warm, the sleeper's REPORT never comes (the daemon dies first): its parent shows it was
    // forked from the zygote instead. The zygote (uid 0, out of the sandbox range) must go too.
    let zygotes = d.zygotes();
    if start == Start::Warm {
        assert_eq!(zygotes.len(), 1, "one zygote: {zygotes:?}");
        let sleepers: Vec<u32> = host_processes(range, NO_NAME).iter().map(|(pid, _)| *pid).collect();
        let parents: Vec<u32> =
            common::all_processes().iter().filter(|p| sleepers.contains(&p.pid)).map(|p| p.ppid).collect();
        assert!(
            !parents.is_empty() && parents.iter().all(|p| zygotes.contains(p)),
            "the sleeper was not forked from the zygote {zygotes:?}: its parent is {parents:?}"
        );
        d.checked.set(true);
    }
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    let left = sandboxes_left(range, Duration::from_secs(10));
    kill_all(&left);
    assert!(left.is_empty(), "sandboxes outlived kill -9 of faas serve: {left:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let alive = |pid: &u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with(['Z', 'X']))
    };
    while zygotes.iter().any(alive) {
        if Instant::now() > deadline {
            kill_all(&zygotes.iter().map(|&p| (p, String::new())).collect::<Vec<_>>());
            panic!("a zygote outlived kill -9 of faas serve: {zygotes:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn killing_faas_invoke_leaves_no_sandbox_behind() {
    require_root();
    // faas invoke never forks from a zygote: cold only.
    let d = serve(Start::Cold, &[("sleeper", &py(SLEEPER, ""))]);
    let (base, count) = uid_range(&d);
    let range = (base + count, count);
    let mut inv = invoke_command(&d, "sleeper", &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while host_processes(range, NO_NAME).is_empty() {
        assert!(Instant::now() < deadline, "faas invoke never started the sleeper");
        std::thread::sleep(Duration::from_millis(20));
    }
    inv.kill().unwrap();
    inv.wait().unwrap();
    let left = sandboxes_left(range, Duration::from_secs(10));
    kill_all(&left);
    assert!(left.is_empty(), "sandboxes outlived kill -9 of faas invoke: {left:?}");
}

cold_and_warm!(proc_hides_host_wide_files_and_tmp_is_noexec);
fn proc_hides_host_wide_files_and_tmp_is_noexec(start: Start) {
    require_root();
    let src = r#"
import mmap
def handle(request):
    def size(p):
        try:
            with open(p, "rb") as f:
                return len(f.read())
        except OSError as e:
            return -e.errno
    out = {p: size("/proc/" + p) for p in request.query["masked"].split(",") + ["meminfo", "stat", "cpuinfo"]}
    # A file in /tmp cannot be mapped executable (MS_NOEXEC), which Landlock does not cover.
    with open("/tmp/code", "wb") as f:
        f.write(b"\xc3" * 4096)
    fd = os.open("/tmp/code", os.O_RDONLY)
    out["mmap_exec_tmp"] = errno_of(lambda: mmap.mmap(fd, 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC))
    out["tmp_flags"] = [l.split()[3] for l in open("/proc/self/mounts") if l.split()[1] == "/tmp"]
    return out
"#;
    // Only what this kernel has (config.gz needs CONFIG_IKCONFIG_PROC).
    let masked: Vec<&str> = ["cmdline", "key-users", "interrupts", "kallsyms", "modules", "diskstats", "config.gz"]
        .into_iter()
        .filter(|p| Path::new("/proc").join(p).exists())
        .collect();
    let d = serve(start, &[("proc", &py(src, ""))]);
    let j = ok_json(&d, &format!("/proc?masked={}", masked.join(",")));
    for p in &masked {
        assert_eq!(j[*p], 0, "/proc/{p} is readable inside: {j}");
    }
    for p in ["meminfo", "stat", "cpuinfo"] {
        assert!(j[p].as_i64().unwrap_or(0) > 0, "/proc/{p} is what runtimes read and must stay: {j}");
    }
    assert_eq!(j["mmap_exec_tmp"], EPERM, "{j}");
    assert!(j["tmp_flags"][0].as_str().unwrap_or("").split(',').any(|f| f == "noexec"), "{j}");
    assert_still_serves(&d);
}

cold_and_warm!(sysv_shared_memory_is_capped_without_a_cgroup);
fn sysv_shared_memory_is_capped_without_a_cgroup(start: Start) {
    require_root();
    // Without a memory cgroup RLIMIT_DATA does not see SysV shm (finding 8): the sandbox's own
    // IPC namespace is capped at the function's memory instead.
    let src = r#"
def handle(request):
    libc.shmget.restype = ctypes.c_int
    def shm(size):
        ctypes.set_errno(0)
        rc = libc.shmget(0, ctypes.c_size_t(size), 0o1600)
        return 0 if rc >= 0 else ctypes.get_errno()
    return {"small": shm(1 << 20), "over": shm(256 << 20), "shmall": open("/proc/sys/kernel/shmall").read().strip()}
"#;
    let d = serve(start, &[("shm", &py(src, "[limits]\nmemory = \"64M\""))]);
    if !d.require_cgroup_mode(common::CgroupMode::None) {
        return;
    }
    let r = d.get("/shm");
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["small"], 0, "{j}");
    const EINVAL: i64 = 22;
    assert_eq!(j["over"], EINVAL, "a 256M segment in a 64M sandbox: {j}");
    assert_eq!(j["shmall"], ((64 << 20) / 4096).to_string(), "{j}");
    assert_still_serves(&d);
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn read_only_paths_with_sockets_are_refused_at_load() {
    require_root();
    // A read-only bind mount does not stop connect(2) (finding 14).
    let dir = HostDir::new();
    let _sock = std::os::unix::net::UnixListener::bind(dir.path().join("svc.sock")).unwrap();
    let hello = python("def handle(request):\n    return 'x'", "");
    let with_sock = hello.clone() + &format!("[sandbox]\nread_only = [\"{}\"]\n", dir.path().display());
    let with_run = hello + "[sandbox]\nread_only = [\"/run\"]\n";
    let d = serve(Start::Cold, &[("sock", &with_sock), ("run", &with_run)]);
    for f in ["/sock", "/run"] {
        let r = d.get(f);
        assert_eq!(r.status, 503, "{f}: {}", r.text());
        assert_eq!(r.problem(), "function-invalid", "{f}: {}", r.text());
    }
    assert!(d.logs().contains("holds a unix socket"), "{}", d.logs());
    assert!(d.logs().contains("is live host state"), "{}", d.logs());
    assert_still_serves(&d);
}

cold_and_warm!(a_landlock_required_function_runs_where_landlock_is_complete);
fn a_landlock_required_function_runs_where_landlock_is_complete(start: Start) {
    require_root();
    // The other half of `landlock = "required"` (the VM tier, on ABI 2, sees only the 503):
    // where the kernel gives every rule, the function runs, with the rules in force.
    let src = r#"
def handle(request):
    return {"write_usr": errno_of(lambda: open("/usr/faas-required", "w")), "uid": os.getuid()}
"#;
    let d = serve(start, &[("req", &py(src, "[sandbox]\nlandlock = \"required\""))]);
    if !d.require_landlock_abi(6) {
        return;
    }
    let j = ok_json(&d, "/req");
    assert!(j["write_usr"] == EROFS || j["write_usr"] == EACCES, "{j}");
    assert_still_serves(&d);
}

/// POSTs `body` to the shipped `coderunner` example (kept off the public listener: it is on the
/// admin one) and returns the answer.
fn run_snippet(d: &Daemon, lang: &str, body: &str) -> Resp {
    common::request_to(
        &format!("http://127.0.0.1:{}/coderunner?lang={lang}", d.admin_port),
        "POST",
        body.as_bytes(),
        &[],
    )
}

cold_and_warm!(the_coderunner_example_holds_against_the_corpus_sent_as_bodies);
fn the_coderunner_example_holds_against_the_corpus_sent_as_bodies(start: Start) {
    require_root();
    // The shipped example runs whatever it is sent: it is safe only because each request is a
    // sandbox of its own. The attacks of this file, as snippets.
    let code = common::repo().join("config/functions/coderunner");
    let text = std::fs::read_to_string(common::repo().join("config/functions/coderunner.toml")).unwrap();
    let text = text.replace("code = \"coderunner\"", &format!("code = \"{}\"", code.display()));
    let d = serve(start, &[("coderunner", &text)]);
    assert_eq!(d.get("/coderunner").status, 404, "kept off the public listener");
    // The guard: the snippet's sandbox is a private pid namespace and an unprivileged uid.
    let r = run_snippet(
        &d,
        "python",
        "import os; print(len([p for p in os.listdir('/proc') if p.isdigit()]), os.getuid())",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json()["stdout"].as_str().unwrap_or("").to_owned();
    let (procs, uid) = out.trim().split_once(' ').unwrap_or(("0", "0"));
    assert!(
        procs.parse::<u32>().is_ok_and(|n| (1..10).contains(&n)) && uid.parse::<u32>().is_ok_and(|u| u >= UID_BASE),
        "REFUSING to attack: the snippet sees {procs} processes as uid {uid}"
    );
    assert!(
        start == Start::Cold || served_warm(&r),
        "REFUSING to attack: the guard's snippet was not forked from the zygote (Server-Timing {:?})",
        r.header("server-timing")
    );
    let ok = |lang: &str, snippet: &str| -> serde_json::Value {
        let r = run_snippet(&d, lang, snippet);
        assert_eq!(r.status, 200, "{snippet}: {}", r.text());
        r.json()
    };
    let j = ok("python", "open('/etc/shadow').read()");
    assert!(j["stderr"].as_str().unwrap_or("").contains("No such file or directory"), "{j}");
    let j = ok("sh", "echo x > /usr/owned && echo WROTE");
    assert!(!j["stdout"].as_str().unwrap_or("").contains("WROTE") && j["exit"] != 0, "{j}");
    let j = ok("python", &format!("import socket; socket.create_connection(('127.0.0.1', {}))", d.port));
    assert!(j["stderr"].as_str().unwrap_or("").contains("Permission denied"), "connect out: {j}");
    // kill(-1) reaches only the snippet's own namespace: the handler (its init) answers.
    // (ESRCH when there is nothing else it may signal: the handler is init, which it cannot.)
    let j = ok("python", "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept ProcessLookupError:\n    pass\nprint('alive')");
    assert_eq!(j["stdout"], "alive\n", "{j}");
    // Deny-listed calls stop the whole request and are reported.
    assert_syscall_denied(
        &d,
        &run_snippet(&d, "python", "import ctypes; ctypes.CDLL(None).unshare(0x10000000)"),
        "unshare",
    );
    assert_syscall_denied(
        &d,
        &run_snippet(&d, "python", "import ctypes; ctypes.CDLL(None).mount(b'none', b'/tmp', b'tmpfs', 0, None)"),
        "mount",
    );
    let j = ok("python", "print(sum(range(10)))");
    assert_eq!((j["exit"].as_i64(), j["stdout"].as_str()), (Some(0), Some("45\n")), "{j}");
    assert_still_serves(&d);
}
