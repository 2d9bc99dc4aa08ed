//! `[auth]` and `[secrets]` through the real binary: bearer keys and HMAC signatures
//! (GitHub and Stripe style) decided before any sandbox starts, `public = false`, the
//! caller as AUTH_TYPE/REMOTE_USER without the key, secrets as read-only files in that
//! function's sandboxes only, a missing credential as an invalid function, an origin per
//! function, and one test that greps every place the daemon writes for the secret values.

mod common;

use std::process::Command;

use common::{request_to, require_root, sh, sh_with, Daemon, Options, RawConn};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const BEARER_CI: &str = "ci-KEY-4f1d9b0e77";
const BEARER_ALICE: &str = "alice-KEY-0b2c7d";
const GITHUB_SECRET: &str = "gh-HMAC-8c2e91a3";
const STRIPE_SECRET: &str = "whsec_STRIPE-5d1e";
const FILE_SECRET: &str = "tok-FILE-77aa31c9";
const ENV_SECRET: &str = "env-SECRET-93bd05";

/// A credentials directory (root only, as systemd's is) with the test's values, and the
/// faas.toml line that names it.
fn credentials() -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new().prefix("faas-creds-").tempdir().unwrap();
    for (name, value) in [
        ("ci-key", BEARER_CI),
        ("alice-key", BEARER_ALICE),
        ("github-secret", GITHUB_SECRET),
        ("stripe-secret", STRIPE_SECRET),
        ("api-token", FILE_SECRET),
        ("env-token", ENV_SECRET),
    ] {
        // As `echo VALUE > file` writes it: the final newline is not part of the value.
        std::fs::write(dir.path().join(name), format!("{value}\n")).unwrap();
    }
    let line = format!("credentials_dir = \"{}\"\n", dir.path().display());
    (dir, line)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_hex(key: &str, parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    parts.iter().for_each(|p| mac.update(p));
    hex(&mac.finalize().into_bytes())
}

/// Prints who called and whether an Authorization header got through.
const WHO: &str = "printf 'Content-Type: text/plain\\n\\n'\necho \"type=${AUTH_TYPE:-none} user=${REMOTE_USER:-none} authz=${HTTP_AUTHORIZATION:-none}\"";

fn reports(d: &Daemon, function: &str) -> usize {
    d.logs().lines().filter(|l| l.contains(&format!("REPORT {function} "))).count()
}

fn metric(d: &Daemon, prefix: &str) -> Option<f64> {
    d.admin_get("/_/metrics").text().lines().find(|l| l.starts_with(prefix))?.rsplit(' ').next()?.parse().ok()
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn bearer_keys_are_checked_before_any_sandbox_and_never_reach_the_handler() {
    require_root();
    let (_creds, line) = credentials();
    let d = Daemon::start_with(
        &[("keyed", &sh_with(WHO, "[auth]\nbearer = { ci = \"ci-key\", alice = \"alice-key\" }"))],
        &line,
    );
    let url = d.url("/keyed");
    let r = request_to(&url, "GET", b"", &[]);
    assert_eq!((r.status, r.problem()), (401, "unauthorized".into()), "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"keyed\""));
    assert!(r.header("faas-invocation-id").is_some());
    let r = request_to(&url, "POST", b"a body", &[("Authorization", &format!("Bearer {BEARER_CI}x"))]);
    assert_eq!((r.status, r.problem()), (401, "unauthorized".into()));
    assert_eq!(r.json()["detail"], "the credentials in the request are not valid for this function");
    let r = request_to(&url, "GET", b"", &[("Authorization", "Basic Y2k6eA==")]);
    assert_eq!(r.status, 401);
    // Refusals cost no fork: no sandbox, so no REPORT, and the metrics say why.
    assert_eq!(metric(&d, "faas_auth_failures_total{function=\"keyed\",reason=\"missing\"}"), Some(2.0));
    assert_eq!(metric(&d, "faas_auth_failures_total{function=\"keyed\",reason=\"invalid\"}"), Some(1.0));
    assert_eq!(reports(&d, "keyed"), 0, "a refused request started a sandbox:\n{}", d.logs());

    let r = request_to(&url, "GET", b"", &[("Authorization", &format!("Bearer {BEARER_CI}"))]);
    assert_eq!((r.status, r.text().trim()), (200, "type=Bearer user=ci authz=none"));
    let r = request_to(&url, "GET", b"", &[("authorization", &format!("bearer {BEARER_ALICE}"))]);
    assert_eq!((r.status, r.text().trim()), (200, "type=Bearer user=alice authz=none"));
    let id = r.header("faas-invocation-id").unwrap().to_owned();
    assert!(d.report_line(&id).contains(" caller=alice "), "{}", d.report_line(&id));
    assert_eq!(d.wait_reports(2), 2);
    // The admin socket is trusted: no key asked for, none passed on as one.
    let r = request_to(&format!("http://127.0.0.1:{}/keyed", d.admin_port), "GET", b"", &[]);
    assert_eq!((r.status, r.text().trim()), (200, "type=none user=none authz=none"));
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn webhook_signatures_github_and_stripe() {
    require_root();
    let (_creds, line) = credentials();
    let d = Daemon::start_with(
        &[
            ("gh", &sh_with(WHO, "[auth.hmac.github]\nsecret = \"github-secret\"\nstyle = \"github\"")),
            ("st", &sh_with(WHO, "[auth.hmac.stripe]\nsecret = \"stripe-secret\"\nstyle = \"stripe\"")),
        ],
        &line,
    );
    let body = br#"{"action":"opened","number":1}"#;
    let sig = format!("sha256={}", hmac_hex(GITHUB_SECRET, &[body]));
    let r = request_to(&d.url("/gh"), "POST", body, &[("X-Hub-Signature-256", &sig)]);
    assert_eq!((r.status, r.text().trim()), (200, "type=HMAC user=github authz=none"));
    let r = request_to(&d.url("/gh"), "POST", b"{\"action\":\"closed\"}", &[("X-Hub-Signature-256", &sig)]);
    assert_eq!((r.status, r.problem()), (401, "unauthorized".into()), "a signature of another body");
    assert_eq!(r.header("www-authenticate"), Some("Signature realm=\"gh\", header=\"x-hub-signature-256\""));
    let r = request_to(&d.url("/gh"), "POST", body, &[]);
    assert_eq!(r.status, 401);

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let stripe = |t: u64| format!("t={t},v1={}", hmac_hex(STRIPE_SECRET, &[t.to_string().as_bytes(), b".", body]));
    let r = request_to(&d.url("/st"), "POST", body, &[("Stripe-Signature", &stripe(now))]);
    assert_eq!((r.status, r.text().trim()), (200, "type=HMAC user=stripe authz=none"));
    let r = request_to(&d.url("/st"), "POST", body, &[("Stripe-Signature", &stripe(now - 3600))]);
    assert_eq!((r.status, r.problem()), (401, "unauthorized".into()), "an hour-old signature is a replay");
    assert_eq!(r.json()["detail"], "the request's signature is too old (or its clock is off)");
    assert_eq!(metric(&d, "faas_auth_failures_total{function=\"st\",reason=\"stale\"}"), Some(1.0));
    assert_eq!(metric(&d, "faas_auth_failures_total{function=\"gh\",reason=\"invalid\"}"), Some(1.0));
    assert_eq!(metric(&d, "faas_auth_failures_total{function=\"gh\",reason=\"missing\"}"), Some(1.0));
    assert_eq!(d.wait_reports(2), 2, "only the two signed requests ran:\n{}", d.logs());
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_function_that_is_not_public_is_only_on_the_admin_socket() {
    require_root();
    let d = Daemon::start(&[("internal", &sh_with(WHO, "[auth]\npublic = false"))]);
    let r = d.get("/internal");
    assert_eq!((r.status, r.problem()), (404, "function-not-found".into()));
    assert_eq!(r.json()["detail"], "there is no function \"internal\"", "the same answer as for no function");
    let r = request_to(&format!("http://127.0.0.1:{}/internal", d.admin_port), "GET", b"", &[]);
    assert_eq!((r.status, r.text().trim()), (200, "type=none user=none authz=none"));
}

/// What the secrets handler reports about `/run/secrets/token` and its environment.
const SECRET_PROBE: &str = r#"printf 'Content-Type: text/plain\n\n'
f=/run/secrets/token
echo "sha=$(sha256sum <$f | cut -c1-64)"
echo "mode=$(stat -c '%a %u' $f)"
if (echo x >$f) 2>/dev/null; then echo write=allowed; else echo write=refused; fi
if mkdir /run/secrets/x 2>/dev/null; then echo mkdir=allowed; else echo mkdir=refused; fi
echo "in-env=$(env | grep -c -F -f $f)"
echo "env-sha=$(printf %s "${API_TOKEN:-}" | sha256sum | cut -c1-64)"
echo "files=$(ls /run/secrets | tr '\n' ' ')""#;

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn secrets_are_read_only_files_in_their_own_functions_sandboxes() {
    require_root();
    let (_creds, line) = credentials();
    let d = Daemon::start_with(
        &[
            ("vault", &sh_with(SECRET_PROBE, "[secrets]\ntoken = \"api-token\"")),
            (
                "envy",
                &sh_with(
                    SECRET_PROBE,
                    "[secrets]\ntoken = \"api-token\"\napi = { credential = \"env-token\", env = \"API_TOKEN\" }",
                ),
            ),
            ("plain", &sh("printf 'Content-Type: text/plain\\n\\n'; ls -d /run/secrets /run 2>&1; true")),
        ],
        &line,
    );
    let sha = |v: &str| hex(&Sha256::digest(v.as_bytes()));
    let r = d.get("/vault");
    let text = r.text();
    assert_eq!(r.status, 200, "{text}");
    for want in [
        format!("sha={}", sha(FILE_SECRET)),
        "mode=444 0".to_owned(),
        "write=refused".to_owned(),
        "mkdir=refused".to_owned(),
        "in-env=0".to_owned(),
        format!("env-sha={}", sha("")),
        "files=token ".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == want), "{want:?} not in\n{text}");
    }
    let text = d.get("/envy").text();
    assert!(text.lines().any(|l| l == format!("env-sha={}", sha(ENV_SECRET))), "asked for in env: {text}");
    assert!(text.lines().any(|l| l == "files=api token "), "{text}");
    let text = d.get("/plain").text();
    assert!(text.contains("'/run/secrets': No such file or directory"), "another function sees no secrets: {text}");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn a_missing_credential_makes_the_function_invalid_and_check_names_it() {
    require_root();
    let (creds, line) = credentials();
    let broken = sh_with("echo never", "[secrets]\nx = \"absent-cred\"");
    let d = Daemon::start_with(
        &[("broken", &broken), ("keyless", &sh_with(WHO, "[auth]\nbearer = { a = \"nope\" }"))],
        &line,
    );
    let r = d.get("/broken");
    assert_eq!((r.status, r.problem()), (503, "function-invalid".into()));
    assert_eq!(r.json()["detail"], "the function file is invalid (line 6, column 5)");
    let r = d.get("/keyless");
    assert_eq!((r.status, r.problem()), (503, "function-invalid".into()), "never runs without its key");
    let functions = d.admin_get("/_/functions").json();
    let reason = functions["functions"].as_array().unwrap().iter().find(|f| f["name"] == "broken").unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("credential \"absent-cred\" is missing from"), "{reason}");
    assert_eq!(d.wait_reports(1), 0, "nothing ran");

    let config = d.dir.path().join("faas.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_faas"))
        .args(["--config", config.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "broken.toml:6:5: credential \"absent-cred\" is missing from {}\nhint: write the value to a file named absent-cred there",
            creds.path().display()
        )),
        "{stdout}"
    );
    // Under systemd the daemon reads $CREDENTIALS_DIRECTORY, and the hint says LoadCredential=.
    let out = Command::new(env!("CARGO_BIN_EXE_faas"))
        .args(["--config", config.to_str().unwrap(), "check"])
        .env("CREDENTIALS_DIRECTORY", d.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("hint: add LoadCredential=absent-cred:/path"), "{stdout}");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn each_function_can_have_an_origin_of_its_own() {
    require_root();
    let script = "printf 'Content-Type: text/plain\\nSet-Cookie: a=1; Path=/\\nSet-Cookie: b=2; Domain=fn.localhost\\n\\n'\necho \"script=[$SCRIPT_NAME] path=[$PATH_INFO]\"";
    let d = Daemon::start_with(&[("hello", &sh(script))], "domain = \"fn.localhost\"\n");
    let r =
        RawConn::send(d.port, b"GET /x/y?q=1 HTTP/1.1\r\nHost: hello.fn.localhost:8080\r\nConnection: close\r\n\r\n")
            .finish();
    assert_eq!((r.status, r.text().trim()), (200, "script=[] path=[/x/y]"), "{}", r.head);
    assert!(r.head.contains("set-cookie: a=1; path=/\r\n"), "its own origin keeps a cookie for /: {}", r.head);
    assert!(!r.head.contains("b=2"), "a Domain cookie would reach its siblings: {}", r.head);
    let r =
        RawConn::send(d.port, b"GET /nope HTTP/1.1\r\nHost: other.fn.localhost\r\nConnection: close\r\n\r\n").finish();
    assert_eq!(r.status, 404);
    // The shared origin still serves it, with cookies kept under /hello.
    let r = RawConn::get(d.port, "/hello/x", "").finish();
    assert_eq!((r.status, r.text().trim()), (200, "script=[/hello] path=[/x]"));
    assert!(!r.head.contains("a=1"), "{}", r.head);
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn no_secret_value_reaches_logs_metrics_error_bodies_or_functions() {
    require_root();
    let (_creds, line) = credentials();
    let d = Daemon::start_opts(
        &[
            ("keyed", &sh_with(WHO, "[auth]\nbearer = { ci = \"ci-key\" }")),
            ("gh", &sh_with(WHO, "[auth.hmac.github]\nsecret = \"github-secret\"\nstyle = \"github\"")),
            (
                "vault",
                &sh_with(
                    "echo x >&2; exit 3",
                    "[secrets]\ntoken = \"api-token\"\napi = { credential = \"env-token\", env = \"API_TOKEN\" }",
                ),
            ),
            ("broken", &sh_with("true", "[secrets]\nx = \"absent\"\n[auth]\nbearer = { ci = \"ci-key\" }")),
        ],
        Options { config_extra: &line, ..Options::default() },
    );
    let mut seen = String::new();
    let mut keep = |label: &str, text: String| {
        seen.push_str(&format!("--- {label}\n{text}\n"));
    };
    for (path, headers) in [
        ("/keyed", vec![]),
        ("/keyed", vec![("Authorization".to_owned(), format!("Bearer {BEARER_CI}-wrong"))]),
        ("/keyed", vec![("Authorization".to_owned(), format!("Bearer {BEARER_CI}"))]),
        ("/gh", vec![("X-Hub-Signature-256".to_owned(), "sha256=00".to_owned())]),
        ("/vault", vec![]),
        ("/broken", vec![]),
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = request_to(&d.url(path), "POST", b"{}", &h);
        keep(&format!("{path} {}", r.status), format!("{:?}\n{}", r.headers, r.text()));
    }
    d.wait_reports(2);
    keep("metrics", d.admin_get("/_/metrics").text());
    keep("functions", d.admin_get("/_/functions").text());
    keep("log", d.logs());
    let check = Command::new(env!("CARGO_BIN_EXE_faas"))
        .args(["--config", d.dir.path().join("faas.toml").to_str().unwrap(), "check"])
        .output()
        .unwrap();
    keep("check", String::from_utf8_lossy(&check.stdout).into_owned() + &String::from_utf8_lossy(&check.stderr));
    // The places looked at hold what they should, so an empty grep means something.
    assert!(seen.contains("faas_auth_failures_total{function=\"keyed\",reason=\"invalid\"} 1"), "{seen}");
    assert!(seen.contains("\"credential\":\"api-token\""), "{seen}");
    assert!(seen.contains("REPORT vault "), "{seen}");
    assert!(seen.contains("REPORT keyed ") && seen.contains(" caller=ci "), "{seen}");
    for secret in [BEARER_CI, GITHUB_SECRET, FILE_SECRET, ENV_SECRET] {
        let found: Vec<&str> = seen.lines().filter(|l| l.contains(secret)).collect();
        assert!(found.is_empty(), "the secret {secret:?} leaked: {found:?}");
    }
    // Nor on a host file system: the files live in a tmpfs of the template's own.
    let on_disk = Command::new("grep").args(["-rl", FILE_SECRET]).arg(d.state_dir()).output().unwrap();
    assert!(on_disk.stdout.is_empty(), "a secret file is on disk: {}", String::from_utf8_lossy(&on_disk.stdout));
}
