//! The handler contract end to end: the shipped examples, what each return type of a Python
//! or Node handler becomes, and the wrappers' promises in wrappers/README.md that are
//! behaviour (environment, lazy imports, module resolution, repeated headers, the `faas: `
//! log prefix, what a client going away does), through the real daemon and sandbox.
//! What only shows without the daemon (exit status 2, non-blocking pipes, one write per
//! chunk, `finally` on a closed stdout) is in tests/wrappers/run-standalone.sh.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{python, require_root, Daemon, RawConn};

fn examples() -> Daemon {
    let dir = common::repo().join("config/functions");
    Daemon::start_with(&[], &format!("functions_dir = \"{}\"\n[limits]\nconcurrency = 4\n", dir.display()))
}

fn node(source: &str) -> String {
    format!("runtime = \"node\"\nsource = '''\n{source}\n'''\n")
}

/// A code directory the sandbox uid can read (tempdirs are 0700), with `files` in it.
fn code_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("faas-wrapper-code-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent().filter(|p| !p.exists()) {
            std::fs::create_dir_all(parent).unwrap();
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(&path, text).unwrap();
    }
    dir
}

fn code_function(runtime: &str, dir: &Path, handler: &str) -> String {
    format!("runtime = \"{runtime}\"\ncode = \"{}\"\nhandler = \"{handler}\"\n", dir.display())
}

/// The wrapper's own log lines for invocation `id` (its stderr, after the REPORT is out).
fn function_log(d: &Daemon, function: &str, id: &str) -> Vec<String> {
    d.report_line(id);
    let prefix = format!("<6>{function}[{id}]: ");
    d.logs().lines().filter_map(|l| l.strip_prefix(&prefix)).map(str::to_owned).collect()
}

fn id_of(r: &common::Resp) -> String {
    r.header("faas-invocation-id").unwrap_or_else(|| panic!("no invocation id: {r:?}")).to_owned()
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn shipped_examples_answer() {
    require_root();
    let d = examples();
    let r = d.get("/hello?name=ada");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), d.logs());
    assert_eq!(r.json()["hello"], "ada");
    let r = d.post("/hello", br#"{"x": [1, 2]}"#);
    assert_eq!(r.json()["echo"], serde_json::json!({"x": [1, 2]}), "{}", r.text());
    let r = d.request("DELETE", "/hello", b"");
    assert_eq!((r.status, r.problem()), (405, "method-not-allowed".into()));
    let r = common::request_to(&d.url("/echo-node/a/b?q=1"), "PUT", b"payload", &[("X-Trace", "t1")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(
        (j["method"].as_str(), j["path"].as_str(), j["body"].as_str()),
        (Some("PUT"), Some("/a/b"), Some("payload")),
        "{j}"
    );
    let r = d.get("/env-sh?a=b");
    assert!(r.text().contains("QUERY_STRING=a=b") && r.text().contains("REQUEST_METHOD=GET"), "{}", r.text());
    let r = d.get("/cgi-exec");
    assert_eq!((r.status, r.header("x-example")), (201, Some("cgi")), "{}", r.text());
    let r = d.get("/inline?name=ada");
    assert_eq!((r.status, r.text().as_str()), (200, "hello from an inline handler, ada\n"));
    assert!(d.logs().contains("hello["), "the hello handler's stderr reaches the log:\n{}", d.logs());
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn python_return_types() {
    require_root();
    let src = r#"
def handle(request):
    kind = request.query.get("kind")
    if kind == "dict": return {"a": 1}
    if kind == "str": return "text"
    if kind == "bytes": return b"\x00\x01"
    if kind == "none": return None
    if kind == "tuple": return 201, {"X-A": "1", "Location": "/x"}, {"made": True}
    if kind == "stream":
        def chunks():
            yield "one\n"
            yield "two\n"
        return chunks()
    if kind == "inject": return 200, {"X-A": "1\r\nX-B: 2"}, "x"
    if kind == "raise": raise RuntimeError("secret detail")
    if kind == "json": return request.json()
    if kind == "print":
        print("stray print")
        return "ok"
"#;
    let d = Daemon::start(&[("p", &python(src, ""))]);
    let r = d.get("/p?kind=dict");
    assert_eq!((r.status, r.header("content-type"), r.text().as_str()), (200, Some("application/json"), r#"{"a":1}"#));
    let r = d.get("/p?kind=str");
    assert_eq!((r.header("content-type"), r.text().as_str()), (Some("text/plain; charset=utf-8"), "text"));
    let r = d.get("/p?kind=bytes");
    assert_eq!((r.header("content-type"), r.bytes()), (Some("application/octet-stream"), &b"\x00\x01"[..]));
    assert_eq!(d.get("/p?kind=none").status, 204);
    let r = d.get("/p?kind=tuple");
    assert_eq!((r.status, r.header("x-a"), r.header("location")), (201, Some("1"), Some("/x")));
    // text() fails on a body the daemon marked cut short, so this is a whole stream.
    assert_eq!(d.get("/p?kind=stream").text(), "one\ntwo\n");
    let r = d.get("/p?kind=inject");
    assert_eq!(
        (r.status, r.problem()),
        (500, "handler-error".into()),
        "header injection must be refused: {:?}",
        r.headers
    );
    assert!(r.header("x-b").is_none());
    let r = d.get("/p?kind=raise");
    assert_eq!((r.status, r.problem()), (500, "handler-error".into()));
    assert!(!r.text().contains("secret detail") && !r.text().contains("Traceback"), "traceback leaked: {}", r.text());
    let log = function_log(&d, "p", &id_of(&r));
    // wrappers/README.md: "Lines from the wrapper itself start with `faas: `".
    assert!(log.iter().any(|l| l == "faas: handler raised an exception"), "{log:#?}");
    assert!(
        log.iter().any(|l| l.contains("Traceback")) && log.iter().any(|l| l.contains("secret detail")),
        "traceback missing from the log: {log:#?}"
    );
    let r = d.post("/p?kind=json", b"{not json");
    assert_eq!((r.status, r.problem()), (400, "bad-request".into()), "{}", r.text());
    let r = d.get("/p?kind=print");
    assert_eq!(r.text(), "ok");
    assert!(function_log(&d, "p", &id_of(&r)).iter().any(|l| l == "stray print"));
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn node_return_types() {
    require_root();
    let src = r#"
exports.handle = async (request) => {
  switch (request.query.kind) {
    case 'obj': return { a: 1 };
    case 'str': return 'text';
    case 'none': return undefined;
    case 'resp': return { status: 202, headers: { 'X-A': '1' }, body: 'accepted' };
    case 'map': return { status: 200, headers: new Map([['X-Map', 'm'], ['Set-Cookie', ['a=1', 'b=2']]]), body: 'map' };
    case 'headers': return { status: 200, headers: new Headers([['X-Web', 'w'], ['Set-Cookie', 'a=1'], ['Set-Cookie', 'b=2']]), body: 'headers' };
    case 'stream': return (async function* () { yield 'one\n'; yield 'two\n'; })();
    case 'raise': throw new Error('secret detail');
    case 'reject': return Promise.reject(new Error('rejected detail'));
  }
};
"#;
    let d = Daemon::start(&[("n", &node(src))]);
    let r = d.get("/n?kind=obj");
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"a":1}"#), "{}", d.logs());
    assert_eq!(d.get("/n?kind=str").text(), "text");
    assert_eq!(d.get("/n?kind=none").status, 204);
    let r = d.get("/n?kind=resp");
    assert_eq!((r.status, r.header("x-a"), r.text().as_str()), (202, Some("1"), "accepted"));
    // Headers as a Map or a fetch Headers; Set-Cookie stays two header lines either way.
    for (kind, name, value) in [("map", "x-map", "m"), ("headers", "x-web", "w")] {
        let raw = RawConn::get(d.port, &format!("/n?kind={kind}"), "").finish();
        assert_eq!((raw.status, raw.text().as_str(), raw.complete), (200, kind, true), "{}", raw.head);
        assert!(raw.head.contains(&format!("\r\n{name}: {value}\r\n")), "{kind}: {}", raw.head);
        assert_eq!(raw.head.matches("\r\nset-cookie: ").count(), 2, "{kind}: {}", raw.head);
    }
    assert_eq!(d.get("/n?kind=stream").text(), "one\ntwo\n");
    for (kind, detail) in [("raise", "secret detail"), ("reject", "rejected detail")] {
        let r = d.get(&format!("/n?kind={kind}"));
        assert_eq!((r.status, r.problem()), (500, "handler-error".into()), "{kind}");
        let t = r.text();
        assert!(
            !t.contains("secret detail")
                && !t.contains("rejected detail")
                && !t.contains(" at ")
                && !t.contains("Error:"),
            "{kind} leaked: {t}"
        );
        let log = function_log(&d, "n", &id_of(&r));
        assert!(log.iter().any(|l| l.starts_with("faas: ")), "no `faas: ` line from the wrapper: {log:#?}");
        assert!(log.iter().any(|l| l.contains(detail)), "{kind}: {detail} missing from the log: {log:#?}");
    }
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn node_module_resolution() {
    require_root();
    // wrappers/README.md: `/code/MODULE.js`, `.cjs` or `.mjs`, or a directory with an
    // `index.js`/`package.json`; `.js` under `"type": "module"` is an ES module.
    let code = code_dir(&[
        ("plain.cjs", "exports.handle = () => 'cjs';"),
        ("withindex/index.js", "exports.handle = () => 'index.js';"),
        ("withpkg/package.json", r#"{"main": "lib/entry.js"}"#),
        ("withpkg/lib/entry.js", "exports.handle = () => 'package.json main';"),
        ("esm/package.json", r#"{"type": "module"}"#),
        ("esm/mod.js", "export async function handle(request) { return `esm ${typeof require}`; }"),
    ]);
    let d = Daemon::start(&[
        ("cjs", &code_function("node", code.path(), "plain.handle")),
        ("index", &code_function("node", code.path(), "withindex.handle")),
        ("pkg", &code_function("node", code.path(), "withpkg.handle")),
        ("esm", &code_function("node", code.path(), "esm.mod.handle")),
    ]);
    for (name, body) in [("cjs", "cjs"), ("index", "index.js"), ("pkg", "package.json main"), ("esm", "esm undefined")]
    {
        let r = d.get(&format!("/{name}"));
        assert_eq!((r.status, r.text().as_str()), (200, body), "{name}:\n{}", d.logs());
    }
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn wrapper_environment() {
    require_root();
    // wrappers/README.md: "`HOME` and `TMPDIR` are `/tmp`, `LANG=C.UTF-8`", plus [sandbox] env.
    let extra = "[sandbox]\nenv = { MY_SETTING = \"42\" }";
    let py = "import os\ndef handle(request):\n    return {k: request.env.get(k) for k in ('HOME', 'TMPDIR', 'LANG', 'MY_SETTING')}";
    let js = "exports.handle = (r) => Object.fromEntries(['HOME', 'TMPDIR', 'LANG', 'MY_SETTING'].map((k) => [k, r.env[k] ?? null]));";
    let d = Daemon::start(&[("py", &python(py, extra)), ("js", &format!("{}{extra}\n", node(js)))]);
    for name in ["py", "js"] {
        let r = d.get(&format!("/{name}"));
        assert_eq!(r.status, 200, "{name}: {}\n{}", r.text(), d.logs());
        assert_eq!(
            r.json(),
            serde_json::json!({"HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8", "MY_SETTING": "42"}),
            "{name}"
        );
    }
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn python_imports_json_traceback_and_asyncio_only_when_needed() {
    require_root();
    // wrappers/README.md: "`json`, `traceback` and `asyncio` are imported by the Python
    // wrapper only when a handler needs them"; a str return needs none of them.
    let src = "import sys\ndef handle(request):\n    return ' '.join(m for m in ('json', 'traceback', 'asyncio') if m in sys.modules) or 'none'";
    let d = Daemon::start(&[("lazy", &python(src, ""))]);
    let r = d.get("/lazy");
    assert_eq!((r.status, r.text().as_str()), (200, "none"), "{}", d.logs());
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_header_sent_twice_arrives_joined() {
    require_root();
    // wrappers/README.md: "A header sent more than once arrives as one value joined by `", "`".
    let d = Daemon::start(&[
        ("py", &python("def handle(request):\n    return request.headers['X-Multi']", "")),
        ("js", &node("exports.handle = (r) => r.headers['x-multi'];")),
        ("cgi", &common::sh("printf 'Content-Type: text/plain\\n\\n%s' \"$HTTP_X_MULTI\"")),
    ]);
    for name in ["py", "js", "cgi"] {
        let r = RawConn::get(d.port, &format!("/{name}"), "X-Multi: first\r\nX-Multi: second\r\n").finish();
        assert_eq!((r.status, r.text().as_str(), r.complete), (200, "first, second", true), "{name}:\n{}", d.logs());
    }
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn lingering_threads_timers_sockets_and_atexit_do_not_keep_the_sandbox() {
    require_root();
    // wrappers/README.md: "The process ends when the response is complete: threads, timers,
    // open sockets and `atexit` hooks do not keep it alive". Each would hold it for 60 s; the
    // timeout is 30 s, so a sandbox kept alive ends as a timeout instead of ok.
    let py = r#"
import atexit, socket, threading, time
def handle(request):
    threading.Thread(target=time.sleep, args=(60,)).start()
    threading.Timer(60, print).start()
    keep = socket.socketpair()
    atexit.register(time.sleep, 60)
    return "done"
"#;
    let js = r#"
exports.handle = async () => {
  setInterval(() => {}, 1000);
  setTimeout(() => {}, 60000);
  const server = require('net').createServer();
  await new Promise((listening, failed) => { server.on('error', failed); server.listen('/tmp/lingering.sock', listening); });
  return 'done';
};
"#;
    let limits = "[limits]\ntimeout = \"30s\"";
    let d = Daemon::start(&[("py", &python(py, limits)), ("js", &format!("{}{limits}\n", node(js)))]);
    for name in ["py", "js"] {
        let r = d.get(&format!("/{name}"));
        assert_eq!((r.status, r.text().as_str()), (200, "done"), "{name}:\n{}", d.logs());
        let line = d.report_line(&id_of(&r));
        assert!(line.contains(" outcome=ok "), "{name}: {line}");
    }
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_client_gone_mid_stream_ends_the_sandbox_without_finally() {
    require_root();
    // wrappers/README.md: under faas, a client that goes away ends the whole sandbox at once,
    // so a generator's `finally` does not run then (only a closed stdout closes the generator,
    // see run-standalone.sh). If the daemon ever lets it run, update the README.
    let src = r#"
import sys, time
def handle(request):
    def body():
        try:
            yield "first\n"
            while True:
                time.sleep(0.05)
                yield "more\n"
        finally:
            sys.stderr.write("finally ran\n")
            sys.stderr.flush()
    return body()
"#;
    let d = Daemon::start(&[("gen", &python(src, ""))]);
    let fds = d.fd_count();
    let mut c = RawConn::get(d.port, "/gen", "");
    c.read_until("first\n");
    let raw = String::from_utf8_lossy(&c.raw).to_ascii_lowercase();
    let id = raw.lines().find_map(|l| l.strip_prefix("faas-invocation-id: ")).unwrap().trim().to_owned();
    drop(c);
    let line = d.report_line(&id);
    assert!(line.contains(" outcome=client-gone "), "{line}");
    d.wait_quiet(fds);
    d.wait_gone_from_host();
    let log = function_log(&d, "gen", &id);
    assert!(
        !log.iter().any(|l| l == "finally ran"),
        "the generator's finally ran: wrappers/README.md says it does not under faas: {log:#?}"
    );
}
