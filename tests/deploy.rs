//! `faas deploy` and friends through the real binary: deploy, redeploy, rollback and rm over
//! the admin unix socket; versions in flight keep serving while new ones switch in, with 0
//! failed requests under load; hostile archives refused with nothing written outside;
//! runtime inference; who may deploy (peer credentials); SSH as the remote transport,
//! through a pipe; `faas logs` with and without a journal; the operator's file winning.

mod common;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{require_root, Daemon, HostDir, Options};

const ROOT: &str = "needs root (the daemon builds sandboxes): sudo -E cargo test -- --include-ignored";

/// A daemon with an admin unix socket (`FAAS_ADMIN_SOCKET`), and a scratch directory for
/// the functions a test deploys.
struct Setup {
    d: Daemon,
    sock: PathBuf,
    work: tempfile::TempDir,
}

/// What one `faas` command did.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self) -> Out {
        assert_eq!(self.code, 0, "faas failed: {self:?}");
        self
    }
}

impl Setup {
    fn start(config_extra: &str) -> Setup {
        require_root();
        let work = tempfile::Builder::new().prefix("faas-deploy-").tempdir().unwrap();
        std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let sock = work.path().join("admin.sock");
        let env = [("FAAS_ADMIN_SOCKET", sock.to_str().unwrap())];
        let d = Daemon::start_opts(&[], Options { config_extra, env: &env, ..Options::default() });
        Setup { d, sock, work }
    }

    fn config(&self) -> PathBuf {
        self.d.dir.path().join("faas.toml")
    }

    /// `faas ARGS` with this daemon's socket and settings; `stdin` fed in.
    fn faas_env(&self, args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Out {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faas"));
        cmd.arg("--config").arg(self.config()).args(args).env("FAAS_ADMIN_SOCKET", &self.sock);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(cmd, stdin)
    }

    fn faas(&self, args: &[&str]) -> Out {
        self.faas_env(args, None, &[])
    }

    /// A directory `name` under the scratch directory with these files (path, mode, text).
    fn dir(&self, name: &str, files: &[(&str, u32, &str)]) -> PathBuf {
        let dir = self.work.path().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (path, mode, text) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        dir
    }

    /// Deploys `dir` as `name`; the full version.
    fn deploy(&self, dir: &Path, name: &str) -> String {
        let out = self.faas(&["deploy", "--name", name, dir.to_str().unwrap()]).ok();
        let line =
            out.stdout.lines().find(|l| l.starts_with(&format!("deployed {name} version "))).unwrap_or_else(|| {
                panic!("no `deployed` line: {out:?}");
            });
        let short = line.split_whitespace().nth(3).unwrap().to_owned();
        self.full_version(name, &short)
    }

    fn full_version(&self, name: &str, short: &str) -> String {
        let versions = self.d.deploy_dir().join("functions").join(name).join("versions");
        let found: Vec<String> = std::fs::read_dir(&versions)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|v| v.starts_with(short))
            .collect();
        assert_eq!(found.len(), 1, "version {short} of {name}: {found:?}");
        found[0].clone()
    }

    fn body(&self, name: &str) -> (u16, String) {
        let r = self.d.get(&format!("/{name}"));
        (r.status, r.text())
    }
}

fn run(mut cmd: Command, stdin: Option<&[u8]>) -> Out {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run faas");
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A sh CGI script answering `text`.
fn answer(text: &str) -> String {
    format!("printf 'Status: 200\\r\\nContent-Type: text/plain\\r\\n\\r\\n%s' '{text}'\n")
}

#[test]
#[ignore = "needs root (the daemon builds sandboxes): sudo -E cargo test -- --include-ignored"]
fn deploy_redeploy_rollback_rm_over_the_admin_socket() {
    let s = Setup::start("");
    let dir = s.dir("hello", &[("main.sh", 0o644, &answer("v1"))]);
    let out = s.faas(&["deploy", dir.to_str().unwrap()]).ok();
    assert!(
        out.stdout.starts_with(&format!("no faas.toml in {}: runtime sh (main.sh, handler main.sh)\n", dir.display())),
        "{out:?}"
    );
    assert!(out.stdout.contains("\n  url: http://127.0.0.1:8080/hello\n"), "{out:?}");
    let v1 = s.full_version("hello", out.stdout.lines().nth(1).unwrap().split_whitespace().nth(3).unwrap());
    assert_eq!(s.body("hello"), (200, "v1".into()));

    // The same content again: the same version, nothing switches.
    let again = s.faas(&["deploy", dir.to_str().unwrap()]).ok();
    assert!(again.stdout.contains(&format!("hello is already at version {} (unchanged)", &v1[..12])), "{again:?}");

    let dir = s.dir("hello", &[("main.sh", 0o644, &answer("v2"))]);
    let v2 = s.deploy(&dir, "hello");
    assert_ne!(v1, v2);
    assert_eq!(s.body("hello"), (200, "v2".into()));

    let versions = s.faas(&["versions", "hello"]).ok().stdout;
    let lines: Vec<&str> = versions.lines().collect();
    assert_eq!(lines.len(), 3, "{versions}");
    assert!(lines[0].starts_with("VERSION") && lines[0].contains("WHO"), "{versions}");
    assert!(
        lines[1].starts_with(&v2[..12]) && lines[1].contains(" root ") && lines[1].ends_with("current"),
        "{versions}"
    );
    assert!(lines[2].starts_with(&v1[..12]) && !lines[2].ends_with("current"), "{versions}");

    let back = s.faas(&["rollback", "hello"]).ok();
    assert!(
        back.stdout.starts_with(&format!("rolled hello back to version {} (from {})", &v1[..12], &v2[..12])),
        "{back:?}"
    );
    assert_eq!(s.body("hello"), (200, "v1".into()));
    // Nothing was deployed before v1.
    let none = s.faas(&["rollback", "hello"]);
    assert_eq!(none.code, 1);
    assert!(
        none.stderr.contains("hello has no version deployed before the current one (409 Conflict, no-older-version)"),
        "{none:?}"
    );
    s.faas(&["rollback", "hello", "--to", &v2[..6]]).ok();
    assert_eq!(s.body("hello"), (200, "v2".into()));
    let missing = s.faas(&["rollback", "hello", "--to", "ffffffffffff"]);
    assert!(missing.code == 1 && missing.stderr.contains("version-not-found"), "{missing:?}");

    // Every REPORT names the version it ran.
    let id = s.d.get("/hello").header("faas-invocation-id").unwrap().to_owned();
    assert!(s.d.report_line(&id).ends_with(&format!(" version={}", &v2[..12])), "{}", s.d.report_line(&id));
    // The deploys are audit entries.
    let logs = s.d.logs();
    assert!(logs.contains(&format!("deploy: root deployed hello version {}", &v2[..12])), "{logs}");
    assert!(
        logs.contains(&format!("deploy: root rolled hello back from version {} to {}", &v2[..12], &v1[..12])),
        "{logs}"
    );

    let ls = s.faas(&["ls"]).ok().stdout;
    let row = ls.lines().find(|l| l.starts_with("hello ")).unwrap_or_else(|| panic!("{ls}"));
    // Five requests ran; the last one's count may still be on its way to the metrics.
    assert!(row.contains(" deployed ") && row.contains(&v2[..12]) && row.contains(" ok "), "{ls}");
    assert!(row.ends_with("ok 4") || row.ends_with("ok 5"), "{ls}");

    let rm = s.faas(&["rm", "hello"]).ok();
    assert_eq!(rm.stdout, format!("removed hello (it was at version {})\n", &v2[..12]));
    let gone = s.d.get("/hello");
    assert_eq!((gone.status, gone.problem()), (404, "function-not-found".to_owned()));
    assert!(!s.d.deploy_dir().join("functions/hello").exists(), "rm leaves the versions behind");
    let again = s.faas(&["rm", "hello"]);
    assert!(
        again.code == 1 && again.stderr.contains("hello is not deployed (404 Not Found, function-not-found)"),
        "{again:?}"
    );
}

#[test]
#[ignore = "needs root (the daemon builds sandboxes): sudo -E cargo test -- --include-ignored"]
fn the_runtime_is_inferred_and_a_function_file_is_honoured() {
    let s = Setup::start("");
    let py = s.dir("py", &[("main.py", 0o644, "def handle(request):\n    return {'from': 'python'}\n")]);
    let out = s.faas(&["deploy", py.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("runtime python (main.py, handler main.handle)"), "{out:?}");
    assert!(out.stdout.contains("deployed py version ") && out.stdout.contains("(python, 1 files, "), "{out:?}");
    assert_eq!(s.body("py"), (200, "{\"from\":\"python\"}".into()));

    let exe = s.dir("exe", &[("main", 0o755, &format!("#!/bin/sh\n{}", answer("exec")))]);
    let out = s.faas(&["deploy", exe.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("runtime exec (main, handler main)"), "{out:?}");
    assert_eq!(s.body("exe"), (200, "exec".into()));

    // A faas.toml: its code is relative to the directory, its limits hold.
    let own = s.dir(
        "own",
        &[
            ("faas.toml", 0o644, "runtime = \"sh\"\ncode = \"src\"\nhandler = \"run.sh\"\nmethods = [\"POST\"]\n"),
            ("src/run.sh", 0o644, &answer("own")),
        ],
    );
    let out = s.faas(&["deploy", own.to_str().unwrap()]).ok();
    assert!(!out.stdout.contains("no faas.toml"), "{out:?}");
    assert_eq!(s.d.post("/own", b"").text(), "own");
    assert_eq!(s.d.get("/own").status, 405);

    // Nothing to infer from: refused here, before anything is sent.
    let empty = s.dir("empty", &[("README", 0o644, "hi")]);
    let out = s.faas(&["deploy", empty.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no faas.toml, and no file to infer the runtime from"), "{out:?}");
    // Two candidates: ambiguous.
    let both = s.dir("both", &[("main.py", 0o644, ""), ("main.sh", 0o644, "")]);
    let out = s.faas(&["deploy", both.to_str().unwrap()]);
    assert!(out.code == 1 && out.stderr.contains("the runtime is ambiguous (main.py, main.sh)"), "{out:?}");
    // An error in faas.toml is told where the user wrote it; --no-check gets the daemon's.
    let bad = s.dir(
        "bad",
        &[("faas.toml", 0o644, "runtime = \"sh\"\nhandler = \"run.sh\"\nbogus = 1\n"), ("run.sh", 0o644, "")],
    );
    let out = s.faas(&["deploy", bad.to_str().unwrap()]);
    assert!(
        out.code == 1
            && out.stderr.contains(&format!("{}:3:1: unknown field `bogus`", bad.join("faas.toml").display())),
        "{out:?}"
    );
    let out = s.faas(&["deploy", "--no-check", bad.to_str().unwrap()]);
    assert!(out.code == 1 && out.stderr.contains("faas: faas.toml:3:1: unknown field `bogus`"), "{out:?}");
    assert!(out.stderr.contains("(422 Unprocessable Entity, function-invalid)"), "{out:?}");
}

/// One tar entry as written: name, type, mode, content, link target.
type TarEntry<'a> = (&'a str, tar::EntryType, u32, &'a [u8], Option<&'a str>);

/// The stdin of `faas deploy -`: a tar built entry by entry, names and types as given.
fn tar_of(entries: &[TarEntry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, mode, data, link) in entries {
        let mut h = tar::Header::new_old();
        {
            let raw = h.as_old_mut();
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                raw.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_entry_type(*kind);
        h.set_mode(*mode);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        z.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap().into_inner()
}

#[test]
#[ignore = "needs root (the daemon builds sandboxes): sudo -E cargo test -- --include-ignored"]
fn hostile_archives_are_refused_and_nothing_lands_outside() {
    use tar::EntryType as T;
    let s = Setup::start("deploy.max_files = 20\ndeploy.max_size = \"2M\"\ndeploy.max_archive = \"3M\"\n");
    let good = s.dir("x", &[("main.sh", 0o644, &answer("good"))]);
    let v = s.deploy(&good, "x");
    let script = answer("evil");
    let main = script.as_bytes();
    let many: Vec<String> = (0..21).map(|i| format!("f{i}")).collect();
    let mut many_entries: Vec<TarEntry> =
        many.iter().map(|n| (n.as_str(), T::Regular, 0o644, &b""[..], None)).collect();
    many_entries.push(("main.sh", T::Regular, 0o644, main, None));
    let big = vec![b'x'; (2 << 20) + 1];
    let zeros = vec![0u8; 4 << 20];
    let bomb = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&tar_of(&[("main.sh", T::Regular, 0o644, main, None), ("z", T::Regular, 0o644, &zeros, None)]))
            .unwrap();
        gz.finish().unwrap()
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "zip slip",
            zip_of(&[("main.sh", main), ("../../../evil", b"x")]),
            "entry \"../../../evil\" is refused: a path with a .. component",
        ),
        (
            "tar traversal",
            tar_of(&[("main.sh", T::Regular, 0o644, main, None), ("a/../../evil", T::Regular, 0o644, b"x", None)]),
            "entry \"a/../../evil\" is refused: a path with a .. component",
        ),
        (
            "absolute",
            tar_of(&[("/tmp/evil", T::Regular, 0o644, b"x", None)]),
            "entry \"/tmp/evil\" is refused: an absolute path",
        ),
        (
            "symlink out",
            tar_of(&[
                ("main.sh", T::Regular, 0o644, main, None),
                ("etc", T::Symlink, 0o777, b"", Some("../../../../../../etc")),
            ]),
            "entry \"etc\" is refused: a symlink pointing outside the archive",
        ),
        (
            "absolute symlink",
            tar_of(&[("etc", T::Symlink, 0o777, b"", Some("/etc"))]),
            "entry \"etc\" is refused: a symlink with an absolute target",
        ),
        (
            "through a link",
            tar_of(&[("d", T::Symlink, 0o777, b"", Some(".")), ("d/evil", T::Regular, 0o644, b"x", None)]),
            "entry \"d/evil\" is refused: a path through a symlink",
        ),
        (
            "hard link",
            tar_of(&[("main.sh", T::Link, 0o644, b"", Some("/etc/shadow"))]),
            "entry \"main.sh\" is refused: a hard link",
        ),
        ("device", tar_of(&[("null", T::Char, 0o666, b"", None)]), "entry \"null\" is refused: a device node"),
        ("fifo", tar_of(&[("p", T::Fifo, 0o644, b"", None)]), "entry \"p\" is refused: a FIFO"),
        (
            "setuid",
            tar_of(&[("main.sh", T::Regular, 0o4755, main, None)]),
            "entry \"main.sh\" is refused: setuid or setgid (mode 4755)",
        ),
        ("too many", tar_of(&many_entries), "the archive holds more than 20 entries"),
        (
            "too large",
            tar_of(&[("main.sh", T::Regular, 0o644, &big, None)]),
            "the archive unpacks to more than 2097152 bytes",
        ),
        ("bomb", bomb, "times its own size (an archive bomb?)"),
        ("not an archive", b"hello".to_vec(), "the upload is neither a tar archive (plain or gzip) nor a zip archive"),
        ("upload too large", vec![0u8; (3 << 20) + 1], "the upload is over 3145728 bytes ([deploy] max_archive)"),
    ];
    let outside = |root: &Path| -> Vec<PathBuf> {
        common::tree(root).into_iter().filter(|p| p.file_name().is_some_and(|n| n == "evil")).collect()
    };
    let before = common::tree(&s.d.deploy_dir());
    for (what, data, why) in cases {
        let out = s.faas_env(&["deploy", "--name", "x", "-"], Some(&data), &[]);
        assert_eq!(out.code, 1, "{what}: {out:?}");
        assert!(out.stderr.contains(why), "{what}: wanted {why:?} in {out:?}");
        assert_eq!(s.body("x"), (200, "good".into()), "{what}: the current version stops serving");
        assert_eq!(common::tree(&s.d.deploy_dir()), before, "{what}: the deploy directory changed");
        assert!(outside(s.d.dir.path()).is_empty(), "{what}: something landed outside");
    }
    assert!(Path::new(&s.d.deploy_dir().join("functions/x/versions").join(&v)).is_dir());
}

#[test]
#[ignore = "needs root (the daemon builds sandboxes): sudo -E cargo test -- --include-ignored"]
fn a_request_in_flight_finishes_on_its_version_and_the_next_gets_the_new_one() {
    let s = Setup::start("deploy.keep = 2\n");
    let host = HostDir::new();
    host.set("hold");
    let slow = s.dir(
        "f",
        &[
            ("faas.toml", 0o644, &format!("runtime = \"sh\"\nhandler = \"main.sh\"\n{}", host.sandbox_toml())),
            ("main.sh", 0o644, &format!("{}\n{}", host.sh_wait_while("hold"), answer("old"))),
        ],
    );
    let old = s.deploy(&slow, "f");
    let url = s.d.url("/f");
    let in_flight = std::thread::spawn(move || {
        let r = common::request_to(&url, "GET", b"", &[]);
        (r.status, r.text())
    });
    s.d.wait_sandboxes(1);
    let new = s.deploy(&s.dir("f", &[("main.sh", 0o644, &answer("new"))]), "f");
    assert_eq!(s.body("f"), (200, "new".into()), "the next request after the deploy");
    // Two more: with keep = 2 the old version is past what is kept, but a request runs on
    // it, so its files stay.
    s.deploy(&s.dir("f", &[("main.sh", 0o644, &answer("newer"))]), "f");
    let newest = s.dir("f", &[("main.sh", 0o644, &answer("newest"))]);
    s.deploy(&newest, "f");
    assert_eq!(s.body("f"), (200, "newest".into()));
    let old_dir = s.d.deploy_dir().join("functions/f/versions").join(&old);
    assert!(old_dir.join("code/main.sh").is_file(), "a version a request runs on was collected");
    assert!(!s.d.deploy_dir().join("functions/f/versions").join(&new).exists(), "keep = 2 kept more");
    host.clear("hold");
    assert_eq!(in_flight.join().unwrap(), (200, "old".into()), "the request in flight");
    // Once nothing runs on it, the next deploy (the same content again: nothing switches,
    // but collection runs) removes it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while old_dir.exists() {
        assert!(Instant::now() < deadline, "the old version was never collected");
        s.faas(&["deploy", "--name", "f", newest.to_str().unwrap()]).ok();
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "needs root (the daemon builds sandboxes): sudo -E cargo test -- --include-ignored"]
fn deploys_and_rollbacks_under_load_fail_no_request() {
    const DEPLOYS: usize = 40;
    const CLIENTS: usize = 6;
    let s = Setup::start("deploy.keep = 3\n");
    let first = s.deploy(&s.dir("f", &[("main.sh", 0o644, &answer("v0"))]), "f");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let url = s.d.url("/f");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, ok, failed, failures, url) =
                (stop.clone(), ok.clone(), failed.clone(), failures.clone(), url.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
                // Bounded: stops when told, or after 2 minutes and 20000 requests at most.
                let until = Instant::now() + Duration::from_secs(120);
                for _ in 0..20_000 {
                    if stop.load(Ordering::Relaxed) || Instant::now() > until {
                        break;
                    }
                    let result = agent.get(&url).call().map_err(|e| e.to_string()).and_then(|r| {
                        let status = r.status();
                        r.into_string().map(|b| (status, b)).map_err(|e| e.to_string())
                    });
                    match result {
                        Ok((200, body)) if body.starts_with('v') => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            failures.lock().unwrap().push(format!("{other:?}"));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    // Load first, then deploy into it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ok.load(Ordering::Relaxed) < 20 {
        assert!(
            Instant::now() < deadline && failed.load(Ordering::Relaxed) == 0,
            "no load: {:?}",
            failures.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut latencies = Vec::new();
    let mut during = Vec::new();
    for i in 1..=DEPLOYS {
        let before = ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
        let dir = s.dir("f", &[("main.sh", 0o644, &answer(&format!("v{i}")))]);
        let started = Instant::now();
        // Every fourth step a rollback instead: the same switch, the other way.
        let expect = if i % 4 == 0 {
            s.faas(&["rollback", "f"]).ok();
            format!("v{}", i - 2)
        } else {
            s.deploy(&dir, "f");
            format!("v{i}")
        };
        latencies.push(started.elapsed());
        // The next request after the switch gets the new version.
        assert_eq!(s.body("f"), (200, expect.clone()), "after step {i}");
        during.push(ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) - before);
        if i % 4 == 0 {
            // Deploy again so the walk goes on from a fresh version.
            s.deploy(&s.dir("f", &[("main.sh", 0o644, &answer(&format!("v{i}")))]), "f");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    latencies.sort();
    eprintln!(
        "{DEPLOYS} deploys/rollbacks under {CLIENTS} clients: {ok} requests ok, {failed} failed; requests per step {during:?}; switch latency p50 {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies.last().unwrap()
    );
    assert_eq!(failed, 0, "failed requests: {:?}", failures.lock().unwrap());
    assert!(
        during.iter().filter(|&&n| n > 0).count() >= DEPLOYS / 2,
        "the load did not overlap the deploys: {during:?}"
    );
    // keep = 3: older versions went once nothing ran on them.
    let kept = std::fs::read_dir(s.d.deploy_dir().join("functions/f/versions")).unwrap().count();
    assert!(kept <= 3 + CLIENTS, "{kept} versions kept with keep = 3");
    assert!(!s.d.deploy_dir().join("functions/f/versions").join(first).exists(), "v0 was never collected");
}

#[test]
#[ignore = "needs root (the daemon builds sandboxes): sudo -E cargo test -- --include-ignored"]
fn only_root_or_the_deploy_group_may_deploy() {
    let s = Setup::start("deploy.group = \"nogroup\"\n");
    let nogroup =
        nix::unistd::Group::from_name("nogroup").unwrap().expect("a nogroup group (Debian has one)").gid.as_raw();
    let meta = std::fs::metadata(&s.sock).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, nogroup), "the socket is not the group's");
    // The binary where a user other than root can run it.
    let bin = s.work.path().join("faas");
    std::fs::copy(env!("CARGO_BIN_EXE_faas"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_user = |uid: u32, gid: u32| {
        let mut cmd = Command::new(&bin);
        cmd.args(["ls"]).env("FAAS_ADMIN_SOCKET", &s.sock).env_remove("HOME").uid(uid).gid(gid).current_dir("/");
        run(cmd, None)
    };
    let (member, stranger) = (common::UID_BASE - 7, common::UID_BASE - 8);
    let out = as_user(member, nogroup);
    assert_eq!(out.code, 0, "a member of the group: {out:?}");
    assert!(out.stdout.starts_with("NAME"), "{out:?}");
    let out = as_user(stranger, stranger);
    assert!(out.code == 1 && out.stderr.contains("Permission denied"), "the socket's mode lets a stranger in: {out:?}");
    // Past the socket's mode, the daemon's own check by peer credentials.
    std::fs::set_permissions(&s.sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_user(stranger, stranger);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "uid {stranger} may not deploy: root may, and members of nogroup (403 Forbidden, deploy-forbidden)"
        )),
        "{out:?}"
    );
    assert!(s.d.logs().contains(&format!("refused a deploy request from uid {stranger}")), "{}", s.d.logs());
    // Never on TCP, admin listener or not: there is no uid to go by.
    let r = common::request_to(&format!("http://127.0.0.1:{}/_/deploy", s.d.admin_port), "GET", b"", &[]);
    assert_eq!((r.status, r.problem()), (403, "deploy-forbidden".to_owned()));
    let r = s.d.request("POST", "/_/deploy/x", b"x");
    assert_eq!((r.status, r.problem()), (404, "not-found".to_owned()));
}

/// A stand-in for ssh: drops the host and runs the command through a shell, as sshd would.
fn fake_ssh(dir: &Path) -> PathBuf {
    let path = dir.join("fake-ssh");
    std::fs::write(&path, "#!/bin/sh\necho \"ssh to $1\" >&2\nshift\nexec /bin/sh -c \"$*\"\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
#[ignore = "needs root (the daemon builds sandboxes): sudo -E cargo test -- --include-ignored"]
fn ssh_is_the_remote_transport_tested_through_a_pipe() {
    let s = Setup::start("");
    let ssh = fake_ssh(s.work.path());
    let env = [("FAAS_SSH", ssh.to_str().unwrap()), ("FAAS_REMOTE_FAAS", env!("CARGO_BIN_EXE_faas"))];
    let dir = s.dir("remote-fn", &[("main.sh", 0o644, &answer("over ssh"))]);
    let out = s.faas_env(&["deploy", "--host", "deploy@server", dir.to_str().unwrap()], None, &env);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("ssh to deploy@server"), "{out:?}");
    assert!(
        out.stdout.contains("sending remote-fn (") && out.stdout.contains("deployed remote-fn version "),
        "{out:?}"
    );
    assert_eq!(s.body("remote-fn"), (200, "over ssh".into()));
    let v1 =
        out.stdout.lines().find(|l| l.starts_with("deployed ")).unwrap().split_whitespace().nth(3).unwrap().to_owned();
    s.dir("remote-fn", &[("main.sh", 0o644, &answer("two"))]);
    s.faas_env(&["deploy", "--host", "deploy@server", dir.to_str().unwrap()], None, &env).ok();
    assert_eq!(s.body("remote-fn"), (200, "two".into()));
    let versions = s.faas_env(&["versions", "remote-fn", "--host", "server"], None, &env).ok();
    assert_eq!(versions.stdout.lines().count(), 3, "{versions:?}");
    s.faas_env(&["rollback", "remote-fn", "--to", &v1, "--host", "server"], None, &env).ok();
    assert_eq!(s.body("remote-fn"), (200, "over ssh".into()));
    // The remote's refusal comes back as its exit code and words.
    let out = s.faas_env(&["rm", "nope", "--host", "server"], None, &env);
    assert!(out.code == 1 && out.stderr.contains("nope is not deployed"), "{out:?}");
    // The archive itself, piped as ssh would: `ssh host faas deploy --name N -`.
    let tarball = Command::new("tar").arg("-C").arg(&dir).args(["-czf", "-", "."]).output().unwrap().stdout;
    let out = s.faas_env(&["deploy", "--name", "piped", "-"], Some(&tarball), &[]).ok();
    assert!(out.stdout.contains("no faas.toml: runtime sh (main.sh, handler main.sh)"), "{out:?}");
    assert_eq!(s.body("piped"), (200, "two".into()));
}

#[test]
#[ignore = "needs root (the daemon builds sandboxes): sudo -E cargo test -- --include-ignored"]
fn logs_come_from_the_journal_fields_and_say_so_when_there_is_none() {
    let s = Setup::start("");
    // Without journald: a clear message, exit 1.
    assert!(
        !Path::new("/run/systemd/journal/socket").exists(),
        "this test checks what `faas logs` says where there is no journald, and this host runs it: run it where /run/systemd/journal/socket is absent"
    );
    let out = s.faas(&["logs", "hello"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(out.stderr.starts_with("faas: faas logs reads the systemd journal, and this host has none (no /run/systemd/journal/socket)\nhint: without journald, faas serve writes its log, the REPORT lines and each function's output to its own stderr (function lines as `<6>hello[INVOCATION-ID]: …`)"), "{out:?}");
    // With a journal (a stand-in for journalctl that records its arguments): the fields
    // asked for, and one line per entry.
    let args_file = s.work.path().join("args");
    let fake = s.work.path().join("journalctl");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$@\" > {}\ncat <<'EOF'\n{}\n{}\nnot json\nEOF\n",
            args_file.display(),
            r#"{"__REALTIME_TIMESTAMP":"1767323045123456","MESSAGE":"hello from the function","SYSLOG_IDENTIFIER":"hello","FAAS_FUNCTION":"hello","FAAS_INVOCATION_ID":"1a2b3c4d-5e6f"}"#,
            r#"{"__REALTIME_TIMESTAMP":"1767323045200000","MESSAGE":"REPORT hello 1a2b3c4d-5e6f outcome=ok status=200","SYSLOG_IDENTIFIER":"faas","FAAS_FUNCTION":"hello","FAAS_INVOCATION_ID":"1a2b3c4d-5e6f"}"#
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = s.faas_env(
        &["logs", "hello", "--invocation", "1a2b3c4d-5e6f", "--since", "1h ago"],
        None,
        &[("FAAS_JOURNALCTL", fake.to_str().unwrap())],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "2026-01-02 03:04:05.123Z 1a2b3c4d hello: hello from the function\n2026-01-02 03:04:05.200Z 1a2b3c4d faas: REPORT hello 1a2b3c4d-5e6f outcome=ok status=200\n"
    );
    assert_eq!(
        std::fs::read_to_string(&args_file).unwrap(),
        "-o json --no-pager FAAS_FUNCTION=hello FAAS_INVOCATION_ID=1a2b3c4d-5e6f --since 1h ago\n"
    );
}

#[test]
#[ignore = "needs root (the daemon builds sandboxes): sudo -E cargo test -- --include-ignored"]
fn the_operators_file_wins_and_check_reports_both() {
    let s = Setup::start("");
    let dir = s.dir("dup", &[("main.sh", 0o644, &answer("deployed"))]);
    let v = s.deploy(&dir, "dup");
    assert_eq!(s.body("dup"), (200, "deployed".into()));
    s.d.write_function("dup", &common::sh(&answer("operator")));
    assert_eq!(s.body("dup"), (200, "operator".into()), "the functions directory's file wins");
    let check = s.faas(&["check"]);
    assert_eq!(check.code, 1, "{check:?}");
    assert!(
        check.stdout.contains(&format!(
            "{}: dup is also deployed (version {}); this file wins",
            s.d.functions_dir().join("dup.toml").display(),
            &v[..12]
        )),
        "{check:?}"
    );
    let ls = s.faas(&["ls"]).ok().stdout;
    let row = ls.lines().find(|l| l.starts_with("dup ")).unwrap_or_else(|| panic!("{ls}"));
    assert!(row.contains(" file ") && row.contains(&format!("(shadows deployed {}: the file wins)", &v[..12])), "{ls}");
    let out = s.faas(&["deploy", dir.to_str().unwrap()]);
    assert!(
        out.code == 1
            && out.stderr.contains(
                "dup is defined in the functions directory, which wins over a deployed function of the same name"
            ),
        "{out:?}"
    );
    assert!(out.stderr.contains("(409 Conflict, name-taken)"), "{out:?}");
    // The operator removes the file: the deployed version serves again.
    std::fs::remove_file(s.d.functions_dir().join("dup.toml")).unwrap();
    assert_eq!(s.body("dup"), (200, "deployed".into()));
    let _ = ROOT;
}
