//! The HTTP surface that needs no sandbox: routing, limits checked before any fork, problem
//! bodies, the admin endpoints, and `faas check`. Runs unprivileged.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{sh, sh_with, Daemon, Resp};

/// A raw read never waits longer than this: a hang fails the test instead of stalling the run.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `request` on a fresh connection and reads until the daemon closes it.
fn raw(d: &Daemon, request: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.write_all(request).unwrap();
    let mut got = Vec::new();
    if let Err(e) = s.read_to_end(&mut got) {
        panic!("no whole answer within {READ_TIMEOUT:?} ({e}): {:?}", String::from_utf8_lossy(&got));
    }
    String::from_utf8(got).unwrap()
}

/// The value of `name` in a raw response head.
fn raw_header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = &response[..response.find("\r\n\r\n")?];
    head.lines().filter_map(|l| l.split_once(':')).find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
}

/// The problem body of a raw response (after its head).
fn raw_problem(response: &str) -> serde_json::Value {
    let body = &response[response.find("\r\n\r\n").expect("a head") + 4..];
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not a problem body ({e}): {response}"))
}

/// Asserts that `r` carries an invocation id, and that a problem body carries the same one.
fn assert_id(what: &str, r: &Resp) {
    let id = r.header("faas-invocation-id").unwrap_or_else(|| panic!("{what}: no Faas-Invocation-Id: {r:?}"));
    assert!(uuid_like(id), "{what}: {id}");
    if r.header("content-type") == Some("application/problem+json") {
        assert_eq!(r.json()["invocation_id"], id, "{what}: {r:?}");
    }
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36
        && id.bytes().filter(|&b| b == b'-').count() == 4
        && id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
}

/// Polls `/_/metrics` for a second: nothing of `function` may appear (no sandbox was made).
fn assert_never_forked(d: &Daemon, function: &str) {
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        let m = d.admin_get("/_/metrics").text();
        assert!(!m.contains(&format!("function=\"{function}\"")), "a sandbox was started for {function}:\n{m}");
        assert!(!m.contains("faas_sandbox_setup_seconds_count"), "a sandbox was set up:\n{m}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn unknown_function_is_404_problem() {
    let d = Daemon::start(&[]);
    let r = d.get("/nope");
    assert_eq!(r.status, 404);
    assert_eq!(r.problem(), "function-not-found");
    assert_eq!(r.json()["instance"], "/nope");
    for path in ["/Upper", "/..%2Fetc", "/a%00b", "/"] {
        assert_eq!(d.get(path).status, 404, "{path}");
    }
}

#[test]
fn health_answers_on_every_listener() {
    let d = Daemon::start(&[]);
    assert_eq!(d.get("/_/health").status, 200);
    assert_eq!(d.admin_get("/_/health").status, 200);
}

#[test]
fn admin_endpoints_only_on_the_admin_listener() {
    let d = Daemon::start(&[("fn1", &sh("echo"))]);
    assert_eq!(d.get("/_/metrics").status, 404);
    assert_eq!(d.get("/_/functions").status, 404);
    let m = d.admin_get("/_/metrics");
    assert_eq!(m.status, 200);
    assert!(m.text().contains("faas_in_flight"), "{}", m.text());
    let f = d.admin_get("/_/functions");
    assert_eq!(f.status, 200);
    assert_eq!(f.json()["functions"][0]["name"], "fn1");
    assert_eq!(f.json()["functions"][0]["status"], "ready");
}

#[test]
fn method_not_allowed_names_the_allowed_ones() {
    let d = Daemon::start(&[("getonly", &sh_with("echo", "methods = [\"GET\"]"))]);
    let r = d.request("DELETE", "/getonly", b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.problem(), "method-not-allowed");
    assert_eq!(r.header("allow"), Some("GET"));
}

#[test]
fn oversized_body_is_413_before_any_fork() {
    let d = Daemon::start(&[("small", &sh_with("cat", "[limits]\nbody = \"1K\""))]);
    let r = d.post("/small", &[b'x'; 4096]);
    assert_eq!(r.status, 413);
    assert_eq!(r.problem(), "body-too-large");
    assert_never_forked(&d, "small");
}

#[test]
fn public_503_names_no_host_path_and_admin_keeps_the_reason() {
    let d =
        Daemon::start(&[("x", "runtime = \"python\"\ncode = \"/srv/tenant-secret/x\"\nhandler = \"main.handle\"\n")]);
    assert!(!std::path::Path::new("/srv/tenant-secret").exists(), "the test needs /srv/tenant-secret not to exist");
    let r = d.get("/x");
    assert_eq!((r.status, r.problem()), (503, "function-invalid".to_owned()));
    assert_eq!(r.json()["detail"], "the function file is invalid (line 2, column 8)", "{}", r.text());
    for secret in ["tenant-secret", "os error", "No such file"] {
        assert!(!r.text().contains(secret), "{secret:?} reached the public body: {}", r.text());
    }
    let f = d.admin_get("/_/functions");
    let reason = f.json()["functions"][0]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.contains("/srv/tenant-secret/x cannot be used"),
        "the admin listener keeps the whole reason: {}",
        f.text()
    );
    assert!(d.logs().contains("/srv/tenant-secret/x cannot be used"), "and so does the journal:\n{}", d.logs());
}

#[test]
fn admin_on_public_serves_the_admin_endpoints_there() {
    let d = Daemon::start_with(&[("fn1", &sh("echo"))], "admin_on_public = true");
    let m = d.get("/_/metrics");
    assert_eq!(m.status, 200);
    assert!(m.text().contains("faas_in_flight"), "{}", m.text());
    let f = d.get("/_/functions");
    assert_eq!((f.status, &f.json()["functions"][0]["name"]), (200, &serde_json::json!("fn1")));
}

#[test]
fn every_response_carries_its_invocation_id() {
    let d = Daemon::start_with(
        &[
            ("getonly", &sh_with("echo", "methods = [\"GET\"]")),
            ("small", &sh_with("cat", "[limits]\nbody = \"1K\"")),
            ("bad", "runtime = \"sh\"\nsource = \"echo\"\n[limits]\nmemory = \"lots\"\n"),
        ],
        "body_timeout = \"1s\"",
    );
    let cases: [(&str, Resp, u16, &str); 9] = [
        ("health", d.get("/_/health"), 200, ""),
        ("admin", d.admin_get("/_/metrics"), 200, ""),
        ("ours", d.get("/_/nope"), 404, "not-found"),
        ("admin on public", d.get("/_/functions"), 404, "not-found"),
        ("unknown", d.get("/nope"), 404, "function-not-found"),
        ("method", d.request("DELETE", "/getonly", b""), 405, "method-not-allowed"),
        ("path", d.get("/getonly/%ff"), 400, "bad-request"),
        ("size", d.post("/small", &[b'x'; 2048]), 413, "body-too-large"),
        ("invalid", d.get("/bad"), 503, "function-invalid"),
    ];
    let mut ids = std::collections::BTreeSet::new();
    for (what, r, status, kind) in &cases {
        assert_eq!(r.status, *status, "{what}: {r:?}");
        if !kind.is_empty() {
            assert_eq!(r.problem(), *kind, "{what}");
        }
        assert_id(what, r);
        ids.insert(r.header("faas-invocation-id").unwrap().to_owned());
    }
    assert_eq!(ids.len(), cases.len(), "each response has an id of its own");
    // The raw paths: a body too slow (408) and a chunked body too large (413).
    for (what, request, status, kind) in [
        (
            "slow",
            &b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b"[..],
            "408",
            "body-timeout",
        ),
        (
            "chunked",
            b"POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n800\r\n",
            "413",
            "body-too-large",
        ),
    ] {
        let mut request = request.to_vec();
        if what == "chunked" {
            request.extend_from_slice(&[b'a'; 0x800]);
            request.extend_from_slice(b"\r\n0\r\n\r\n");
        }
        let got = raw(&d, &request);
        assert!(got.starts_with(&format!("HTTP/1.1 {status} ")), "{what}: {got}");
        let id = raw_header(&got, "faas-invocation-id").unwrap_or_else(|| panic!("{what}: no id: {got}"));
        let p = raw_problem(&got);
        assert_eq!(
            (p["type"].as_str(), p["invocation_id"].as_str()),
            (Some(&*format!("urn:faas:problem:{kind}")), Some(id)),
            "{what}: {got}"
        );
    }
}

#[test]
fn broken_file_is_503_with_line_and_others_keep_serving() {
    let d = Daemon::start(&[
        ("good", &sh_with("echo", "methods = [\"GET\"]")),
        ("bad", "runtime = \"sh\"\nsource = \"echo\"\n[limits]\nmemory = \"lots\"\n"),
    ]);
    let r = d.get("/bad");
    assert_eq!(r.status, 503);
    assert_eq!(r.problem(), "function-invalid");
    let detail = r.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("line 4"), "{detail}");
    assert!(!detail.contains(d.dir.path().to_str().unwrap()), "a host path leaked: {detail}");
    // The good one is loaded: it answers 405 to a method it does not allow, without a fork.
    assert_eq!(d.request("PUT", "/good", b"").status, 405);
    assert!(d.logs().contains("bad.toml:4:10"), "the log names file, line, column:\n{}", d.logs());
}

#[test]
fn check_lists_every_problem_with_file_line_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ok.toml"), sh("echo")).unwrap();
    std::fs::write(dir.path().join("typo.toml"), "runtime = \"sh\"\nsource = \"echo\"\ntimout = \"1s\"\n").unwrap();
    std::fs::write(
        dir.path().join("unit.toml"),
        "runtime = \"sh\"\nsource = \"echo\"\n[limits]\ntimeout = \"10 parsecs\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("nohandler.toml"), "runtime = \"python\"\ncode = \"/tmp\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faas")).arg("check").arg(dir.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let p = dir.path().display();
    assert!(text.contains(&format!("{p}/typo.toml:3:1: unknown field `timout`")), "{text}");
    assert!(text.contains(&format!("{p}/unit.toml:4:11: ")), "{text}");
    assert!(text.contains("unknown time unit \"parsecs\""), "{text}");
    assert!(text.contains(&format!("{p}/nohandler.toml:2:8: code needs a handler")), "{text}");
    assert!(text.contains("hint: "), "{text}");
    assert!(!text.contains("ok.toml"), "{text}");
    assert!(text.contains("3 of 4 function file(s) have problems"), "{text}");
}

#[test]
fn check_accepts_the_shipped_examples() {
    let root = common::repo();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faas"))
        .arg("--config")
        .arg(root.join("config/faas.toml"))
        .arg("check")
        .arg(root.join("config/functions"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn broken_config_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("faas.toml");
    std::fs::write(&cfg, "max_concurrency = 4\n[limits]\nmemory = 12\nbogus = 1\n").unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_faas")).arg("--config").arg(&cfg).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains(&format!("{}:4:1: unknown field `bogus`", cfg.display())), "{text}");
}

#[test]
fn slow_client_body_is_408_and_the_server_keeps_serving() {
    let d = Daemon::start_with(&[("f", &sh("cat"))], "body_timeout = \"1s\"");
    let got = raw(&d, b"POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b");
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("application/problem+json") && got.contains("body-timeout"), "{got}");
    assert_eq!(d.get("/_/health").status, 200);
}

#[test]
fn chunked_body_over_the_limit_is_413() {
    let d = Daemon::start(&[("f", &sh_with("cat", "[limits]\nbody = \"1K\""))]);
    let mut request =
        b"POST /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n800\r\n".to_vec();
    request.extend_from_slice(&[b'a'; 0x800]);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    let got = raw(&d, &request);
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert_eq!(raw_problem(&got)["type"], "urn:faas:problem:body-too-large", "{got}");
    assert_never_forked(&d, "f");
}
