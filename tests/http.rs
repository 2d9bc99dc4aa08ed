//! The HTTP surface that needs no sandbox: routing, limits checked before any fork, problem
//! bodies, the admin endpoints, and `faas check`. Runs unprivileged.

mod common;

use common::{sh, sh_with, Daemon};

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
    assert!(!d.logs().contains("REPORT small"), "a sandbox was started:\n{}", d.logs());
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
    std::fs::write(dir.path().join("unit.toml"), "runtime = \"sh\"\nsource = \"echo\"\n[limits]\ntimeout = \"10 parsecs\"\n").unwrap();
    std::fs::write(dir.path().join("nohandler.toml"), "runtime = \"python\"\ncode = \"/tmp\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faas"))
        .arg("check")
        .arg(dir.path())
        .output()
        .unwrap();
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
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faas")).arg("--config").arg(&cfg).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains(&format!("{}:4:1: unknown field `bogus`", cfg.display())), "{text}");
}

#[test]
fn slow_client_body_is_408_and_the_server_keeps_serving() {
    use std::io::{Read, Write};
    let d = Daemon::start_with(&[("f", &sh("cat"))], "body_timeout = \"1s\"");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.write_all(b"POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b").unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("application/problem+json") && got.contains("body-timeout"), "{got}");
    assert_eq!(d.get("/_/health").status, 200);
}

#[test]
fn chunked_body_over_the_limit_is_413() {
    use std::io::{Read, Write};
    let d = Daemon::start(&[("f", &sh_with("cat", "[limits]\nbody = \"1K\""))]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.write_all(b"POST /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n800\r\n").unwrap();
    s.write_all(&[b'a'; 0x800]).unwrap();
    s.write_all(b"\r\n0\r\n\r\n").unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert!(!d.logs().contains("REPORT f"), "a sandbox was started");
}
