//! `/_/metrics` on the admin listener: counters after a few known invocations.

mod common;

use common::{require_root, sh, sh_with, Daemon};

fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in\n{text}"))
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn counters_follow_known_invocations() {
    require_root();
    let d = Daemon::start_with(
        &[
            ("ok", &sh("printf 'Content-Type: text/plain\\n\\nok'")),
            ("boom", &sh("exit 1")),
            ("slow", &sh_with("sleep 10", "[limits]\ntimeout = \"200ms\"")),
        ],
        "",
    );
    for _ in 0..3 {
        let r = d.get("/ok");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    }
    let r = d.get("/boom");
    assert_eq!((r.status, r.problem()), (502, "crashed".into()));
    let r = d.get("/slow");
    assert_eq!((r.status, r.problem()), (504, "timeout".into()));
    // The REPORT (and the counters) come once the sandbox is gone, just after the response.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let text = loop {
        let t = d.admin_get("/_/metrics").text();
        if t.contains("faas_invocations_total{function=\"slow\",outcome=\"timeout\"} 1")
            || std::time::Instant::now() > until
        {
            break t;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(value(&text, "faas_invocations_total{function=\"ok\",outcome=\"ok\"}"), 3.0);
    assert_eq!(value(&text, "faas_invocations_total{function=\"boom\",outcome=\"crashed\"}"), 1.0);
    assert_eq!(value(&text, "faas_invocations_total{function=\"slow\",outcome=\"timeout\"}"), 1.0);
    assert_eq!(value(&text, "faas_invocation_duration_seconds_count{function=\"ok\"}"), 3.0);
    assert_eq!(value(&text, "faas_sandbox_setup_seconds_count{function=\"ok\"}"), 3.0);
    assert_eq!(value(&text, "faas_in_flight"), 0.0);
    assert!(!text.contains("faas_spawn_failures_total{"), "no spawn failed:\n{text}");
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn spawn_failures_are_counted() {
    require_root();
    let d = Daemon::start_with(
        &[("py", "runtime = \"python\"\nsource = 'def handle(r): return 1'\n")],
        "[runtimes]\npython = \"/nonexistent/python3\"\n",
    );
    let r = d.get("/py");
    assert_eq!((r.status, r.problem()), (503, "sandbox-unavailable".into()), "{}", r.text());
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let t = d.admin_get("/_/metrics").text();
        if t.contains("faas_spawn_failures_total{function=\"py\"} 1") {
            break;
        }
        assert!(std::time::Instant::now() < until, "{t}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
