//! The cluster example (examples/cluster/): three faas in network namespaces of their own
//! behind HAProxy, a function shipped to all three with one command, and a rolling restart of
//! the three under load that loses no request. The script does the work and prints what it
//! measured as JSON; this test holds it to the numbers.
//!
//! All traffic stays inside the four namespaces the script makes (addresses from 198.18.0.0/15
//! exist only there; the load goes to HAProxy on 127.0.0.1 in its namespace), and the load is
//! bounded (4 connections, at most 120 s).

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{repo, require_root, skip_requested};

/// Runs `cluster.sh down` for this cluster when dropped, whatever happened to the test.
struct Down {
    name: String,
    dir: std::path::PathBuf,
}

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("examples/cluster/cluster.sh"))
            .arg("down")
            .env("CLUSTER", &self.name)
            .env("CLUSTER_DIR", &self.dir)
            .stdout(Stdio::null())
            .status();
    }
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
#[ignore = "needs root, ip netns and haproxy: sudo -E cargo test -- --include-ignored"]
fn a_rolling_restart_behind_haproxy_loses_no_request() {
    require_root();
    if !have("haproxy") {
        if skip_requested("haproxy") {
            eprintln!("SKIPPED a_rolling_restart_behind_haproxy_loses_no_request: haproxy is not installed and FAAS_TEST_SKIP names haproxy");
            return;
        }
        panic!("haproxy not found: apt-get install haproxy (.ci/run does), or set FAAS_TEST_SKIP=haproxy to skip this test");
    }
    for tool in ["ip", "nsenter", "curl", "/usr/bin/python3"] {
        assert!(have(tool), "{tool} not found: the cluster example needs iproute2, util-linux, curl and python3");
    }
    let name = format!("fc{}", std::process::id() % 100_000_000);
    let dir = tempfile::Builder::new().prefix("faas-cluster-").tempdir().unwrap();
    let _down = Down { name: name.clone(), dir: dir.path().to_owned() };
    let mut child = Command::new("bash")
        .arg(repo().join("examples/cluster/cluster.sh"))
        .arg("test")
        .env("FAAS", env!("CARGO_BIN_EXE_faas"))
        .env("CLUSTER", &name)
        .env("CLUSTER_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A hang guard only: the run takes about 30 s.
    let until = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cluster.sh test ran past 240 s; logs in {}", dir.path().display());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let logs = || {
        let mut all = String::new();
        for f in ["haproxy.log", "n1/log", "n2/log", "n3/log"] {
            let text = std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().filter(|l| !l.contains("REPORT ")).collect();
            all += &format!("--- {f} (without REPORT lines)\n{}\n", tail[tail.len().saturating_sub(30)..].join("\n"));
        }
        all
    };
    assert!(status.success(), "cluster.sh test failed ({status}):\n{err}\n{out}\n{}", logs());
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no JSON summary ({e}):\n{out}\n{err}"));
    eprintln!("cluster summary: {summary}");

    // Shipped with one command: the function answers from each of the three.
    let shipped: Vec<&str> = summary["shipped"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert!(shipped.iter().all(|s| s.starts_with("200:")), "{shipped:?}");
    for f in ["f1", "f2", "f3"] {
        assert!(shipped.contains(&format!("200:{f}").as_str()), "{f} did not answer the shipped function: {shipped:?}");
    }
    // TLS at the balancer, and the client's address through the PROXY protocol.
    if have("openssl") {
        assert_eq!(summary["tls"].as_str(), Some("hello from 127.0.0.1"), "{summary}");
    }

    // The numbers: every request answered 200 with the client's address, across the roll.
    let load = &summary["load"];
    let requests = load["requests"].as_u64().unwrap();
    assert_eq!(load["failed"].as_u64(), Some(0), "failed requests during the rolling restart: {load}\n{}", logs());
    assert_eq!(load["ok"].as_u64(), Some(requests));
    assert!(requests >= 300, "too little load to say anything: {load}");
    for f in ["f1", "f2", "f3"] {
        assert!(load["served_by"][f].as_u64().unwrap_or(0) > 0, "{f} served nothing: {load}");
    }
    // Each host went: HAProxy saw /_/ready turn 503 and took it out while it still accepted
    // (before the drain delay ran out), then it exited and came back.
    let restarts = summary["restarts"].as_array().unwrap();
    assert_eq!(restarts.len(), 3, "{summary}");
    for (i, r) in restarts.iter().enumerate() {
        assert_eq!(r["instance"].as_u64(), Some(i as u64 + 1), "{r}");
        assert_eq!(
            r["closed_before_down"].as_bool(),
            Some(false),
            "faas {} closed its listener before HAProxy took it out: {r}",
            i + 1
        );
        let (down, exit, up) =
            (r["down_ms"].as_u64().unwrap(), r["exit_ms"].as_u64().unwrap(), r["up_ms"].as_u64().unwrap());
        assert!(down <= exit && exit <= up, "{r}");
    }
}
