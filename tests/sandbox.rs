//! The per-request sandbox, from inside a function and from the outside: namespaces, uid,
//! capabilities, rlimits, the read-only root and extra read-only paths, devices, the
//! function's env, the deadline, crashes, bad responses, streaming and bodies cut short, hot
//! reload, limits, the stderr cap, and that nothing of a request is left behind. Needs root,
//! as CI has.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{python, require_root, sh, sh_with, CgroupMode, Daemon, HostDir, RawConn, UID_BASE};

fn head(script: &str) -> String {
    sh(&format!("printf 'Content-Type: text/plain\\n\\n'\n{script}"))
}

/// `key value` (or `Key:\tvalue`) lines of a probe's output, by key.
fn fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once([' ', '\t'])?;
            Some((k.trim_end_matches(':').to_owned(), v.trim().to_owned()))
        })
        .collect()
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn handler_is_unprivileged_pid_1_in_its_own_namespaces() {
    require_root();
    // The status fields are read by sh itself (a builtin loop), not by a child it forks.
    let probe = "echo uid $(id -u); echo gid $(id -g); echo groups $(id -G); echo pid $$; echo hostname $(hostname)
echo visible $(ls /proc | grep -c '^[0-9]')
while IFS= read -r l; do case $l in Cap*|NoNewPrivs*) echo \"$l\";; esac; done < /proc/self/status
for n in ipc mnt net pid uts; do echo \"ns_$n $(readlink /proc/self/ns/$n)\"; done";
    let d = Daemon::start(&[("probe", &head(probe))]);
    let r = d.get("/probe");
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.text();
    println!("{t}");
    let f = fields(&t);
    let uid: u32 = f["uid"].parse().unwrap();
    assert!(
        uid >= d.uids.0 && uid - d.uids.0 < d.uids.1,
        "uid {uid} is not one of the daemon's sandbox uids {:?}",
        d.uids
    );
    assert_eq!(f["gid"], f["uid"], "gid = uid");
    assert_eq!(f["groups"], f["uid"], "no supplementary groups");
    assert_eq!(f["pid"], "1", "the handler is init of its own pid namespace");
    assert_eq!(f["hostname"], "faas", "own UTS namespace");
    let visible: usize = f["visible"].parse().unwrap();
    assert!(visible <= 4, "{visible} processes visible: host processes leak into /proc");
    assert_eq!(f["NoNewPrivs"], "1");
    for ns in ["ipc", "mnt", "net", "pid", "uts"] {
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let theirs = &f[&format!("ns_{ns}")];
        assert!(theirs.starts_with(&format!("{ns}:[")), "no {ns} namespace id in:\n{t}");
        assert_ne!(theirs.as_str(), ours.to_string_lossy(), "the sandbox shares the test's {ns} namespace");
    }
    // Last, and all at once: the bounding set is the one README.md promises empty.
    let caps: Vec<(&str, &str)> =
        ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"].iter().map(|k| (*k, f[*k].as_str())).collect();
    assert!(caps.iter().all(|(_, v)| *v == "0000000000000000"), "capability sets are not all empty: {caps:?}");

    // The daemon's own bounding set holds no more than what a zygote keeps (setgid, setuid,
    // setpcap, sys_chroot, sys_admin), in every thread (the set is per thread, and sandboxes
    // are cloned from tokio's workers): each child had only those left to drop. What the
    // daemon itself holds is what this test's process holds.
    let set = |status: &str, name: &str| {
        let line = status.lines().find(|l| l.starts_with(&format!("{name}:"))).unwrap();
        u64::from_str_radix(line[name.len() + 1..].trim(), 16).unwrap()
    };
    let zygote_caps: u64 = 1 << 6 | 1 << 7 | 1 << 8 | 1 << 18 | 1 << 21;
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{}/task", d.pid())).unwrap() {
        let Ok(status) = std::fs::read_to_string(task.unwrap().path().join("status")) else { continue };
        threads += 1;
        assert_eq!(
            set(&status, "CapBnd") & !zygote_caps,
            0,
            "a daemon thread's bounding set is wider than a zygote's:\n{status}"
        );
        assert_eq!(set(&status, "CapEff"), set(&ours, "CapEff"), "a daemon thread lost capabilities:\n{status}");
    }
    assert!(threads > 1, "the daemon has {threads} thread(s): its runtime's workers were not seen");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn the_root_holds_only_the_sandbox_skeleton() {
    require_root();
    // What is absent is tested errno by errno in tests/attacks.rs; this pins the whole list.
    let d = Daemon::start(&[("peek", &head("ls /"))]);
    let r = d.get("/peek");
    let t = r.text();
    let root: Vec<&str> = t.lines().collect();
    assert_eq!(root, ["bin", "code", "dev", "etc", "faas", "lib", "lib64", "proc", "sbin", "tmp", "usr"], "{t}");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn only_a_downed_loopback_interface() {
    require_root();
    // Connecting out is tests/attacks.rs's (exact errno, per Landlock ABI); this is the netns.
    let src = r#"
import fcntl, socket, struct
def handle(request):
    names = [n for _, n in socket.if_nameindex()]
    s = socket.socket()
    flags = struct.unpack('16sH', fcntl.ioctl(s, 0x8913, struct.pack('16sH', b'lo', 0)))[1]
    return {'interfaces': names, 'lo_up': bool(flags & 1)}
"#;
    let d = Daemon::start(&[("net", &python(src, ""))]);
    let r = d.get("/net");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), d.logs());
    let j = r.json();
    assert_eq!(j["interfaces"], serde_json::json!(["lo"]));
    assert_eq!(j["lo_up"], false);
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn root_usr_code_and_faas_are_read_only_mounts() {
    require_root();
    // Unprivileged writes fail on root-owned paths whether or not the mount is read-only (and
    // tests/attacks.rs checks each errno), so look at the mount flags themselves.
    let d = Daemon::start(&[("m", &head("cat /proc/self/mountinfo"))]);
    let r = d.get("/m");
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.text();
    // The last mount at a place is the one on top; field 5 is the mount point, field 6 its options.
    let options = |place: &str| -> String {
        t.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.get(4) == Some(&place)).then(|| f[5].to_owned())
            })
            .next_back()
            .unwrap_or_else(|| panic!("nothing mounted at {place}:\n{t}"))
    };
    for place in ["/", "/usr", "/code", "/faas"] {
        let o = options(place);
        assert!(o.split(',').any(|w| w == "ro"), "{place} is mounted {o}, not read-only:\n{t}");
        assert!(o.split(',').any(|w| w == "nosuid"), "{place} is mounted {o}, without nosuid");
    }
    assert!(options("/tmp").split(',').any(|w| w == "rw"), "/tmp must stay writable:\n{t}");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn cgi_status_headers_and_request_meta() {
    require_root();
    let script = "printf 'Status: 201 Created\\nContent-Type: text/plain\\nX-Who: cgi\\n\\n'\necho \"$REQUEST_METHOD $PATH_INFO $QUERY_STRING $CONTENT_LENGTH $HTTP_X_FOO\"\ncat";
    let d = Daemon::start(&[("c", &sh(script)), ("loc", &sh("printf 'Location: /elsewhere\\n\\n'"))]);
    let r = common::request_to(&d.url("/c/a/b?q=1"), "POST", b"the body", &[("X-Foo", "bar")]);
    assert_eq!(r.status, 201);
    assert_eq!(r.header("x-who"), Some("cgi"));
    assert!(r.header("faas-invocation-id").is_some_and(|v| v.len() == 36));
    let timing = r.header("server-timing").unwrap_or_else(|| panic!("no Server-Timing: {:?}", r.headers));
    assert_server_timing(timing);
    assert_eq!(r.text(), "POST /a/b q=1 8 bar\nthe body");
    let r = d.get("/loc");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/elsewhere"));
}

/// `setup;dur=N;desc=cold, handler;dur=N` with decimal milliseconds, as README.md promises
/// (`desc=warm` for a request forked from a zygote; these are sh functions, always cold).
fn assert_server_timing(v: &str) {
    let ms = |part: &str, name: &str| -> f64 {
        let part = if name == "setup" {
            part.strip_suffix(";desc=cold").unwrap_or_else(|| panic!("Server-Timing {v:?}: setup is not desc=cold"))
        } else {
            part
        };
        let n =
            part.strip_prefix(&format!("{name};dur=")).unwrap_or_else(|| panic!("Server-Timing {v:?}: no {name};dur="));
        assert!(
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit() || b == b'.'),
            "Server-Timing {v:?}: {name} is not a number"
        );
        n.parse().unwrap()
    };
    let parts: Vec<&str> = v.split(", ").collect();
    assert_eq!(parts.len(), 2, "Server-Timing {v:?} is not `setup;dur=…, handler;dur=…`");
    let (setup, handler) = (ms(parts[0], "setup"), ms(parts[1], "handler"));
    assert!(setup > 0.0 && handler >= 0.0, "Server-Timing {v:?}");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn timeout_is_504_and_kills_the_whole_sandbox() {
    require_root();
    let d = Daemon::start(&[("slow", &sh_with("(sleep 60 &) ; sleep 60", "[limits]\ntimeout = \"1s\""))]);
    let fds = d.fd_count();
    let r = d.get("/slow");
    assert_eq!(r.status, 504);
    assert_eq!(r.problem(), "timeout");
    assert!(r.json()["invocation_id"].is_string());
    d.wait_quiet(fds);
    d.wait_gone_from_host();
    assert!(d.logs().contains("outcome=timeout"), "{}", d.logs());
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn crashes_and_garbage_are_502_with_distinct_types() {
    require_root();
    let d = Daemon::start(&[
        ("exit3", &sh("echo oops >&2; exit 3")),
        // A real fault: the handler is its namespace's init, which ignores signals it sends
        // itself, but not one the kernel forces on it.
        ("segv", &python("import ctypes\ndef handle(r):\n    return ctypes.string_at(0)", "")),
        ("garbage", &sh("echo hello world")),
        ("silent", &sh("true")),
        ("badstatus", &sh("printf 'Status: 9000\\n\\n'")),
    ]);
    let r = d.get("/exit3");
    assert_eq!((r.status, r.problem()), (502, "crashed".into()));
    assert!(r.json()["detail"].as_str().unwrap().contains("status 3"), "{}", r.text());
    let r = d.get("/segv");
    assert_eq!((r.status, r.problem()), (502, "crashed".into()));
    assert!(r.json()["detail"].as_str().unwrap().contains("SIGSEGV"), "{}", r.text());
    let r = d.get("/garbage");
    assert_eq!((r.status, r.problem()), (502, "bad-response".into()));
    let r = d.get("/silent");
    assert_eq!((r.status, r.problem()), (502, "bad-response".into()));
    let r = d.get("/badstatus");
    assert_eq!((r.status, r.problem()), (502, "bad-response".into()));
    assert!(d.logs().contains("exit3["), "function stderr reaches the log:\n{}", d.logs());
    // The front end keeps serving.
    assert_eq!(d.get("/_/health").status, 200);
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn body_streams_while_the_handler_runs() {
    require_root();
    // The handler holds its second line until the test removes the marker, so "the sandbox is
    // still running when the first line arrives" holds by construction, not by a sleep margin.
    let host = HostDir::new();
    host.set("hold");
    let script =
        format!("printf 'Content-Type: text/plain\\n\\n'\necho first\n{}\necho second", host.sh_wait_while("hold"));
    let d = Daemon::start(&[("stream", &sh_with(&script, &host.sandbox_toml()))]);
    let mut c = RawConn::get(d.port, "/stream", "");
    c.read_until("first\n");
    assert!(!d.sandbox_processes().is_empty(), "the first line came only after the handler exited");
    host.clear("hold");
    let r = c.finish();
    assert_eq!((r.status, r.text().as_str(), r.complete), (200, "first\nsecond\n", true), "{}", d.logs());
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn client_disconnect_kills_the_sandbox() {
    require_root();
    let d = Daemon::start(&[("hang", &sh("sleep 60"))]);
    let fds = d.fd_count();
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.write_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    d.wait_sandboxes(1);
    drop(s);
    d.wait_quiet(fds);
    d.wait_gone_from_host();
    let until = Instant::now() + Duration::from_secs(5);
    while !d.logs().contains("outcome=client-gone") {
        assert!(Instant::now() < until, "{}", d.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn per_function_concurrency_limit_is_429() {
    require_root();
    // The first request holds its slot until the test removes the marker, after the 429.
    let host = HostDir::new();
    host.set("hold");
    let script = format!("{}\nprintf '\\n'", host.sh_wait_while("hold"));
    let d =
        Daemon::start(&[("one", &sh_with(&script, &format!("[limits]\nconcurrency = 1\n{}", host.sandbox_toml())))]);
    let url = d.url("/one");
    let first = std::thread::spawn(move || common::request_to(&url, "GET", b"", &[]).status);
    d.wait_sandboxes(1);
    let r = d.get("/one");
    assert_eq!(r.status, 429);
    assert_eq!(r.problem(), "concurrency-limit");
    assert_eq!(r.header("retry-after"), Some("1"));
    host.clear("hold");
    assert_eq!(first.join().unwrap(), 200);
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn function_files_are_live_without_restart() {
    require_root();
    let d = Daemon::start(&[("other", &head("echo other"))]);
    assert_eq!(d.get("/fresh").status, 404);
    d.write_function("fresh", &head("echo v1"));
    assert_eq!(d.get("/fresh").text(), "v1\n");
    d.write_function("fresh", &head("echo v2"));
    assert_eq!(d.get("/fresh").text(), "v2\n");
    d.write_function("fresh", "runtime = \"sh\"\nsource = 42\n");
    let r = d.get("/fresh");
    assert_eq!(r.status, 503);
    assert!(r.json()["detail"].as_str().unwrap().contains("line 2"), "{}", r.text());
    assert_eq!(d.get("/other").text(), "other\n", "a broken file must not affect other functions");
    std::fs::remove_file(d.functions_dir().join("fresh.toml")).unwrap();
    assert_eq!(d.get("/fresh").status, 404);
    // Only the live version of `other` keeps a sandbox root: none of fresh's three versions.
    let roots: Vec<String> = std::fs::read_dir(d.state_dir().join("fn"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(roots.len(), 1, "{roots:?}");
    assert!(roots[0].starts_with("other-"), "{roots:?}");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn setup_failure_is_503_naming_the_step_in_the_log_only() {
    require_root();
    let d = Daemon::start_with(
        &[("py", &python("def handle(r): return 'x'", ""))],
        "[runtimes]\npython = \"/usr/bin/no-such-python\"\n",
    );
    let r = d.get("/py");
    assert_eq!(r.status, 503);
    assert_eq!(r.problem(), "sandbox-unavailable");
    let detail = r.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("exec the wrapper"), "{detail}");
    assert!(!detail.contains("no-such-python") && !detail.contains("os error"), "host detail leaked: {detail}");
    // The journal names the program it could not run, and where to fix it.
    assert!(
        d.logs()
            .contains("failed to exec the wrapper /usr/bin/no-such-python in the sandbox: No such file or directory"),
        "{}",
        d.logs()
    );
    assert!(d.logs().contains("hint: check [runtimes] in faas.toml"), "{}", d.logs());
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn faas_invoke_runs_the_same_sandbox() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("functions")).unwrap();
    std::fs::write(dir.path().join("functions/who.toml"), head("id -u; echo pid=$$; cat")).unwrap();
    // A uid range of its own: the default one may overlap another test's sandboxes.
    let uids = common::private_uids(4);
    let config = dir.path().join("faas.toml");
    std::fs::write(
        &config,
        format!(
            "functions_dir = \"functions\"\nstate_dir = \"state\"\nwrappers_dir = \"{}\"\nuid_base = {}\nuid_count = {}\n",
            common::repo().join("wrappers").display(),
            uids.0,
            uids.1
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_faas"))
        .arg("--config")
        .arg(&config)
        .args(["invoke", "who"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"from stdin").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{stderr}");
    let mut lines = text.lines();
    let uid: u32 = lines.next().unwrap().parse().unwrap();
    assert!(uid >= uids.0 && uid - uids.0 < uids.1, "uid {uid} is outside the configured range {uids:?}");
    assert_eq!(lines.next(), Some("pid=1"));
    assert_eq!(lines.next(), Some("from stdin"));
    assert!(stderr.contains("REPORT who"), "{stderr}");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn nothing_left_after_200_mixed_requests_at_concurrency_16() {
    require_root();
    let d = Daemon::start(&[
        ("ok", &head("cat /proc/self/status > /tmp/s; echo ok")),
        ("late", &sh_with("sleep 5", "[limits]\ntimeout = \"300ms\"\nconcurrency = 16")),
        ("boom", &sh_with("exit 7", "[limits]\nconcurrency = 16")),
        ("junk", &sh_with("echo not a header", "[limits]\nconcurrency = 16")),
        (
            "bg",
            &sh_with("(setsid sleep 60 </dev/null >/dev/null 2>&1 &); printf '\\nok'", "[limits]\nconcurrency = 16"),
        ),
    ]);
    std::fs::write(
        d.functions_dir().join("ok.toml"),
        format!("{}\n[limits]\nconcurrency = 16\n", head("cat /proc/self/status > /tmp/s; echo ok")),
    )
    .unwrap();
    assert_eq!(d.get("/ok").status, 200);
    let mounts = common::host_mounts();
    let fds = d.fd_count();
    let state = common::tree(&d.state_dir());
    let names = ["ok", "late", "boom", "junk", "bg"];
    let expect = [200, 504, 502, 502, 200];
    let port = d.port;
    let threads: Vec<_> = (0..16)
        .map(|t| {
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                for i in 0..13 {
                    let k = (t + i) % names.len();
                    let r = common::request_to(&format!("http://127.0.0.1:{port}/{}", names[k]), "GET", b"", &[]);
                    seen.push((k, r.status, r.body_error));
                }
                seen
            })
        })
        .collect();
    let mut total = 0;
    for t in threads {
        for (k, status, body_error) in t.join().unwrap() {
            total += 1;
            assert_eq!(status, expect[k], "{} answered {status}", names[k]);
            assert_eq!(body_error, None, "{} answered {status} with a body cut short", names[k]);
        }
    }
    assert_eq!(total, 208);
    d.wait_quiet(fds);
    // Each sandbox had a network namespace of its own; the daemon keeps at most one per
    // concurrent request for reuse, never one per request.
    assert!(d.netns_fds() <= 17, "{} network namespaces held after 16 concurrent requests", d.netns_fds());
    // Host-wide, by uid: `bg` daemonizes, and what escaped the pid namespace would no longer
    // be below the daemon.
    d.wait_gone_from_host();
    assert_eq!(common::host_mounts(), mounts, "mounts leaked to the host");
    assert_eq!(common::tree(&d.state_dir()), state, "per-request files left in the state dir");
    // One REPORT per invocation (the first /ok included); they come after teardown.
    let reports = d.wait_reports(209);
    assert_eq!(reports, 209, "one REPORT per invocation");
    let metrics = d.admin_get("/_/metrics").text();
    assert!(metrics.lines().any(|l| l == "faas_in_flight 0"), "requests still counted in flight:\n{metrics}");
    if common::cgroup_mode(&d) == CgroupMode::Delegated {
        assert_eq!(d.request_cgroups(), Vec::<std::path::PathBuf>::new(), "request cgroups left behind");
    }
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn sandboxes_start_while_the_daemon_holds_more_fds_than_their_nofile() {
    require_root();
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard.min(8192), hard).unwrap();
    // nofile 256: the daemon's fd numbers run far above what the sandbox may keep.
    // All 1100 (and the request) come from 127.0.0.1: more than the default share of one
    // client address on a host whose hard nofile is below ~9000.
    let d = Daemon::start_with(
        &[("f", &sh_with("printf 'Content-Type: text/plain\\n\\nok'", "[limits]\nnofile = 256"))],
        "max_connections_per_client = 1200",
    );
    let idle: Vec<TcpStream> = (0..1100).map(|_| TcpStream::connect(("127.0.0.1", d.port)).unwrap()).collect();
    let until = Instant::now() + Duration::from_secs(10);
    while d.fd_count() < 1100 {
        assert!(Instant::now() < until, "the daemon accepted only {} fds", d.fd_count());
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = d.get("/f");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "ok"),
        "{}",
        d.logs().lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
    drop(idle);
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn sandbox_env_reaches_the_handler() {
    require_root();
    // The shipped hello example, with its [sandbox] env default changed: the example's own
    // value equals the code's fallback, so only a different one shows the env arrived.
    let example = common::repo().join("config/functions");
    let text = std::fs::read_to_string(example.join("hello.toml")).unwrap();
    let changed = text
        .replace("code = \"hello\"", &format!("code = \"{}\"", example.join("hello").display()))
        .replace("GREETING_DEFAULT = \"world\"", "GREETING_DEFAULT = \"from [sandbox] env\"");
    assert!(
        changed.contains("from [sandbox] env") && changed.contains(&example.display().to_string()),
        "hello.toml changed shape:\n{text}"
    );
    let d = Daemon::start(&[("hello", &changed)]);
    let r = d.get("/hello");
    assert_eq!((r.status, r.json()), (200, serde_json::json!({"hello": "from [sandbox] env"})), "{}", d.logs());
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn read_only_paths_are_visible_and_read_only() {
    require_root();
    // The directory and file are writable by anyone, so only the read-only mount can refuse.
    let host = HostDir::new();
    std::fs::write(host.path().join("data.txt"), "from the host\n").unwrap();
    for (p, mode) in [(host.path().to_owned(), 0o777), (host.path().join("data.txt"), 0o666)] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    let src = r#"
import os
def errno_of(f):
    try:
        f()
        return 0
    except OSError as e:
        return e.errno
def handle(request):
    d = request.query["dir"]
    mounts = [l.split(" ") for l in open("/proc/self/mountinfo")]
    return {
        "read": open(d + "/data.txt").read(),
        "write": errno_of(lambda: open(d + "/data.txt", "w")),
        "create": errno_of(lambda: open(d + "/new.txt", "w")),
        "options": [m[5] for m in mounts if m[4] == d],
    }
"#;
    let d = Daemon::start(&[("ro", &python(src, &host.sandbox_toml()))]);
    let r = d.get(&format!("/ro?dir={}", host.path().display()));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), d.logs());
    let j = r.json();
    assert_eq!(j["read"], "from the host\n", "{j}");
    const EROFS: i64 = 30;
    assert_eq!((j["write"].as_i64(), j["create"].as_i64()), (Some(EROFS), Some(EROFS)), "{j}");
    let options = j["options"].as_array().unwrap();
    assert!(options.len() == 1 && options[0].as_str().unwrap().split(',').any(|o| o == "ro"), "{j}");
    assert!(!host.path().join("new.txt").exists());
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn rlimits_core_and_fsize() {
    require_root();
    // RLIMIT_FSIZE is the larger of tmp and output: a file may fill /tmp, or hold a response.
    let limits = "cat /proc/self/limits";
    let d = Daemon::start(&[
        (
            "small_tmp",
            &sh_with(
                &format!("printf 'Content-Type: text/plain\\n\\n'\n{limits}"),
                "[limits]\noutput = \"12M\"\n[sandbox]\ntmp = \"4M\"",
            ),
        ),
        (
            "big_tmp",
            &sh_with(
                &format!("printf 'Content-Type: text/plain\\n\\n'\n{limits}"),
                "[limits]\noutput = \"2M\"\n[sandbox]\ntmp = \"8M\"",
            ),
        ),
    ]);
    for (name, fsize) in [("small_tmp", 12u64 << 20), ("big_tmp", 8 << 20)] {
        let t = d.get(&format!("/{name}")).text();
        let limit = |what: &str| -> (String, String) {
            let line = t.lines().find(|l| l.starts_with(what)).unwrap_or_else(|| panic!("no {what} in\n{t}"));
            let v: Vec<&str> = line[what.len()..].split_whitespace().collect();
            (v[0].to_owned(), v[1].to_owned())
        };
        assert_eq!(limit("Max core file size"), ("0".into(), "0".into()), "{name}:\n{t}");
        assert_eq!(limit("Max file size"), (fsize.to_string(), fsize.to_string()), "{name}:\n{t}");
    }
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn concurrent_sandboxes_have_distinct_uids() {
    require_root();
    // Both handlers note their uid, then wait on the marker: they are alive at once until the
    // test, having seen both, removes it.
    let host = HostDir::new();
    host.set("hold");
    let script =
        format!("u=$(id -u)\n{}\nprintf 'Content-Type: text/plain\\n\\n%s' \"$u\"", host.sh_wait_while("hold"));
    let d = Daemon::start(&[("who", &sh_with(&script, &host.sandbox_toml()))]);
    let urls = [d.url("/who"), d.url("/who")];
    let threads: Vec<_> =
        urls.into_iter().map(|u| std::thread::spawn(move || common::request_to(&u, "GET", b"", &[]))).collect();
    d.wait_sandboxes(2);
    host.clear("hold");
    let uids: Vec<u32> = threads
        .into_iter()
        .map(|t| {
            let r = t.join().unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            r.text().parse().unwrap()
        })
        .collect();
    assert_ne!(uids[0], uids[1], "two live sandboxes shared a uid");
    for u in &uids {
        assert!(*u >= d.uids.0 && u - d.uids.0 < d.uids.1 && *u >= UID_BASE, "uid {u} outside {:?}", d.uids);
    }
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn dev_nodes_behave() {
    require_root();
    let src = r#"
import os
def handle(request):
    def read(p, n):
        with open(p, "rb") as f:
            return f.read(n)
    try:
        with open("/dev/full", "wb", buffering=0) as f:
            f.write(b"x")
        full_write = 0
    except OSError as e:
        full_write = e.errno
    with open("/dev/null", "wb", buffering=0) as f:
        null_write = f.write(b"into the void")
    return {
        "zero": read("/dev/zero", 64) == bytes(64),
        "full_read": read("/dev/full", 64) == bytes(64),
        "full_write": full_write,
        "null_read": read("/dev/null", 64) == b"",
        "null_write": null_write,
        "random": [len(set(read(p, 64))) > 8 for p in ("/dev/random", "/dev/urandom")],
    }
"#;
    let d = Daemon::start(&[("dev", &python(src, ""))]);
    let r = d.get("/dev");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), d.logs());
    const ENOSPC: i64 = 28;
    assert_eq!(
        r.json(),
        serde_json::json!({"zero": true, "full_read": true, "full_write": ENOSPC, "null_read": true, "null_write": 13, "random": [true, true]})
    );
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn stderr_past_limits_log_is_cut_with_a_marker() {
    require_root();
    // 100 lines of exactly 100 bytes against log = 1K: whole lines reach the log until the
    // cap is reached, then one truncation marker, then nothing; the response is unaffected.
    let script = "printf 'Content-Type: text/plain\\n\\n'
i=0; while [ $i -lt 100 ]; do printf 'line %03d %091d\\n' $i 0 >&2; i=$((i+1)); done
echo done";
    let d = Daemon::start(&[("loud", &sh_with(script, "[limits]\nlog = \"1K\""))]);
    let r = d.get("/loud");
    assert_eq!((r.status, r.text().as_str()), (200, "done\n"));
    let id = r.header("faas-invocation-id").unwrap().to_owned();
    d.report_line(&id);
    let prefix = format!("<6>loud[{id}]: ");
    let logs = d.logs();
    let lines: Vec<&str> = logs.lines().filter_map(|l| l.strip_prefix(&prefix)).collect();
    let marker = "[faas: log output truncated at the per-invocation cap]";
    let at = lines
        .iter()
        .position(|l| *l == marker)
        .unwrap_or_else(|| panic!("no truncation marker:\n{}", lines.join("\n")));
    assert_eq!(at, lines.len() - 1, "lines after the marker: {:?}", &lines[at..]);
    let kept = &lines[..at];
    for (i, l) in kept.iter().enumerate() {
        assert!(l.len() == 100 && l.starts_with(&format!("line {i:03} ")), "line {i} is {l:?}");
    }
    let bytes: usize = kept.iter().map(|l| l.len()).sum();
    assert!((1024..1024 + 100).contains(&bytes), "{bytes} bytes of stderr logged with log = 1K ({} lines)", kept.len());
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_body_cut_after_its_head_went_out_ends_without_the_last_chunk() {
    require_root();
    // README.md: "A response cut short after its head went out (timeout, output cap, forbidden
    // syscall, crash) ends without the last chunk". The output cap and the syscall are
    // tests/attacks.rs's; here the deadline, a crash by signal, a non-zero exit, and the
    // Python wrapper's exit status 1 after an exception mid-stream.
    let first = "printf 'Content-Type: text/plain\\n\\n'\necho first";
    let stream_then = |tail: &str| {
        python(&format!("import ctypes\ndef handle(request):\n    def body():\n        yield 'first\\n'\n        {tail}\n        yield 'never\\n'\n    return body()"), "")
    };
    let d = Daemon::start(&[
        ("late", &sh_with(&format!("{first}\nsleep 60"), "[limits]\ntimeout = \"1s\"")),
        ("exits", &sh(&format!("{first}\nexit 3"))),
        ("segv", &stream_then("ctypes.string_at(0)")),
        ("raises", &stream_then("raise RuntimeError('mid-stream')")),
    ]);
    for (name, outcome) in [("late", "timeout"), ("exits", "crashed"), ("segv", "crashed"), ("raises", "crashed")] {
        let r = RawConn::get(d.port, &format!("/{name}"), "").finish();
        assert_eq!(r.status, 200, "{name}: the head went out first");
        assert_eq!(r.text(), "first\n", "{name}: every byte before the cut arrives");
        assert!(!r.complete, "{name}: the body ended with its last chunk, as if whole:\n{}{}", r.head, r.text());
        let id = r.head.lines().find_map(|l| l.strip_prefix("faas-invocation-id: ")).unwrap().trim().to_owned();
        let line = d.report_line(&id);
        assert!(line.contains(&format!(" outcome={outcome} ")), "{name}: {line}");
    }
    // ureq sees the same: a cut body is an error, not a short body.
    let r = d.get("/exits");
    assert!(r.body_was_cut() && r.text_allow_cut() == "first\n", "{r:?}");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_body_with_content_length_is_whole_once_its_bytes_came() {
    require_root();
    // README.md: a head with Content-Length makes the body whole once that many bytes came: the
    // client has it without waiting for the function to exit, and the invocation is over (ok,
    // the sandbox killed, whatever it was still doing). "held" would go on until the test
    // removes the marker; its deadline (3 s) is far inside the marker's hang guard (20 s), so
    // a daemon that waited for the exit would cut the body at the deadline instead.
    let host = HostDir::new();
    host.set("hold");
    let with_length = |n: usize, tail: &str| {
        format!("printf 'Content-Type: text/plain\\nContent-Length: {n}\\n\\n'\necho first\n{tail}")
    };
    let d = Daemon::start(&[
        (
            "held",
            &sh_with(
                &with_length(6, &host.sh_wait_while("hold")),
                &format!("[limits]\ntimeout = \"3s\"\n{}", host.sandbox_toml()),
            ),
        ),
        ("exits", &sh(&with_length(6, "exit 3"))),
        ("short", &sh(&with_length(10, "exit 0"))),
        ("long", &sh(&with_length(3, "echo more"))),
    ]);
    let r = RawConn::get(d.port, "/held", "").finish();
    assert_eq!((r.status, r.text().as_str(), r.complete), (200, "first\n", true), "{}", d.logs());
    host.clear("hold");
    let id = |r: &common::RawResponse| {
        r.head.lines().find_map(|l| l.strip_prefix("faas-invocation-id: ")).unwrap().trim().to_owned()
    };
    assert!(d.report_line(&id(&r)).contains(" outcome=ok "), "{}", d.logs());
    for (name, body, complete, outcome) in
        [("exits", "first\n", true, "ok"), ("short", "first\n", false, "bad-response"), ("long", "fir", true, "ok")]
    {
        let r = RawConn::get(d.port, &format!("/{name}"), "").finish();
        assert_eq!((r.status, r.text().as_str(), r.complete), (200, body, complete), "{name}: {}", d.logs());
        let line = d.report_line(&id(&r));
        assert!(line.contains(&format!(" outcome={outcome} ")), "{name}: {line}");
    }
    assert!(d.logs().contains("wrote more than its Content-Length of 3"), "{}", d.logs());
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn every_report_carries_the_layers_and_the_cgroup_mode() {
    require_root();
    // README.md: the layer states are "in every REPORT", and the cgroup fallback is "reported
    // as `cgroup=none`". Also what require_landlock_abi and require_cgroup_mode read.
    let d = Daemon::start(&[("one", &head("echo one"))]);
    let layers = d.layers();
    let mode = common::cgroup_mode(&d);
    let r = d.get("/one");
    assert_eq!(r.text(), "one\n");
    let line = d.report_line(r.header("faas-invocation-id").unwrap());
    assert!(
        line.ends_with(&format!(" layers=\"{layers}\"")),
        "the REPORT does not carry the layers {layers:?}: {line}"
    );
    assert_eq!(common::cgroup_mode(&d), mode, "the REPORT and the layers disagree on cgroups: {line} / {layers}");
    assert_eq!(line.contains(" cgroup=none "), layers.contains("cgroup=missing"), "{line}");
    // The project's floor is Linux 5.13, which brought Landlock ABI 1.
    assert!(common::require_landlock_abi(&d, 1));
    println!("landlock ABI {}, cgroup mode {mode:?}", common::landlock_abi(&d));
}
