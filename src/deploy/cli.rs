//! The client side: `faas deploy`, `versions`, `rollback`, `rm`, `ls` talk to the daemon's
//! admin socket (HTTP over a unix socket, `api.rs` on the other end); with `--host` they run
//! the same command on that host through SSH, a deploy sending its archive on stdin to
//! `faas deploy -` there. `faas logs` reads the journal's fields. Errors stop at this edge as
//! anyhow, with a hint where the fix is known.

use std::io::{BufRead as _, Read as _, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use super::function_file::{self, FunctionText};
use super::short;
use crate::config::Config;
use crate::function::{valid_name, Function};

/// The deploy subcommands, flattened into `faas`'s own.
#[derive(Subcommand, Debug)]
pub enum DeployCommand {
    /// Deploy a directory as a function (its faas.toml, or the runtime inferred), or with `-`
    /// an archive (tar, tar.gz, zip) on stdin; prints the URL and the new version.
    Deploy(DeployArgs),
    /// List a deployed function's versions: hash, when, who, size.
    Versions {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Switch a deployed function back: to the version deployed before the current one, or
    /// --to VERSION (a unique prefix).
    Rollback {
        name: String,
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a deployed function (files in the functions directory are the operator's).
    Rm {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// List every function: where it comes from, version, state, outcomes since the daemon
    /// started.
    Ls {
        #[command(flatten)]
        target: Target,
    },
    /// Show a function's output and REPORT lines from the journal.
    Logs(LogsArgs),
}

/// Where the daemon is.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Run on HOST through ssh (FAAS_SSH names the ssh command, FAAS_REMOTE_FAAS the faas
    /// there); the user there must be root or in [deploy] group.
    #[arg(long)]
    pub host: Option<String>,
    /// The daemon's admin socket.
    #[arg(long, env = "FAAS_ADMIN_SOCKET", default_value = "/run/faas/admin.sock")]
    pub socket: PathBuf,
}

/// `faas deploy` flags.
#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The directory, or `-` for an archive on stdin (what `--host` sends over ssh).
    pub dir: String,
    /// The function's name (default: the directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Skip checking the function file here first (the daemon checks it anyway).
    #[arg(long)]
    pub no_check: bool,
    #[command(flatten)]
    pub target: Target,
}

/// `faas logs` flags.
#[derive(Args, Debug)]
pub struct LogsArgs {
    pub name: String,
    /// Keep printing new entries.
    #[arg(short, long)]
    pub follow: bool,
    /// Only this invocation (the Faas-Invocation-Id header).
    #[arg(long)]
    pub invocation: Option<String>,
    /// Entries since this time, as journalctl takes it ("1h ago", "2026-01-02 10:00", "today").
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many entries (the last ones).
    #[arg(short = 'n', long)]
    pub lines: Option<u64>,
    /// Run on HOST through ssh.
    #[arg(long)]
    pub host: Option<String>,
}

/// The largest archive `faas deploy -` takes on stdin (the daemon's own cap is lower).
const STDIN_CAP: u64 = 1 << 30;

/// Runs one deploy subcommand; the exit code.
pub async fn run(cmd: &DeployCommand, config: &Config) -> anyhow::Result<u8> {
    match cmd {
        DeployCommand::Deploy(args) => deploy(args, config).await,
        DeployCommand::Versions { name, target } => {
            if let Some(host) = &target.host {
                return remote(host, &["versions", name], None);
            }
            let v = match call(&target.socket, http::Method::GET, &format!("/_/deploy/{name}"), None).await? {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            print!("{}", versions_table(&v));
            Ok(0)
        }
        DeployCommand::Rollback { name, to, target } => {
            if let Some(host) = &target.host {
                let mut args = vec!["rollback", name.as_str()];
                if let Some(to) = to {
                    args.extend(["--to", to.as_str()]);
                }
                return remote(host, &args, None);
            }
            let query = to.as_ref().map(|t| format!("?to={t}")).unwrap_or_default();
            let path = format!("/_/deploy/{name}/rollback{query}");
            let v = match call(&target.socket, http::Method::POST, &path, None).await? {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            let (version, previous) = (text(&v["version"]), text(&v["previous"]));
            if v["unchanged"].as_bool() == Some(true) {
                println!("{name} is already at version {}", short(&version));
            } else {
                println!(
                    "rolled {name} back to version {} (from {}) in {:.0} ms",
                    short(&version),
                    short(&previous),
                    v["took_ms"].as_f64().unwrap_or(0.0)
                );
            }
            Ok(0)
        }
        DeployCommand::Rm { name, target } => {
            if let Some(host) = &target.host {
                return remote(host, &["rm", name], None);
            }
            let v = match call(&target.socket, http::Method::DELETE, &format!("/_/deploy/{name}"), None).await? {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            println!("removed {name} (it was at version {})", short(&text(&v["removed"])));
            Ok(0)
        }
        DeployCommand::Ls { target } => {
            if let Some(host) = &target.host {
                return remote(host, &["ls"], None);
            }
            let v = match call(&target.socket, http::Method::GET, "/_/deploy", None).await? {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            print!("{}", ls_table(&v));
            Ok(0)
        }
        DeployCommand::Logs(args) => logs(args),
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_owned()
}

async fn deploy(args: &DeployArgs, config: &Config) -> anyhow::Result<u8> {
    let (name, archive) = if args.dir == "-" {
        if args.target.host.is_some() {
            bail!("--host sends a directory; `-` is what runs on the other end");
        }
        let name = args
            .name
            .clone()
            .ok_or_else(|| anyhow!("faas deploy - needs --name: an archive has no name of its own"))?;
        let mut archive = Vec::new();
        std::io::stdin()
            .take(STDIN_CAP + 1)
            .read_to_end(&mut archive)
            .context("failed to read the archive from stdin")?;
        if archive.len() as u64 > STDIN_CAP {
            bail!("the archive on stdin is over {STDIN_CAP} bytes");
        }
        (name, archive)
    } else {
        let dir = std::path::absolute(&args.dir).with_context(|| format!("failed to resolve {}", args.dir))?;
        if !dir.is_dir() {
            bail!("{} is not a directory", dir.display());
        }
        let name = match &args.name {
            Some(n) => n.clone(),
            None => dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned(),
        };
        if !valid_name(&name) {
            bail!("{name:?} is not a valid function name\nhint: give --name NAME, [a-z0-9][a-z0-9_-]{{0,62}}: it becomes the URL");
        }
        let function = function_text(&dir)?;
        if let Some(inferred) = &function.inferred {
            println!("no faas.toml in {}: runtime {inferred}", dir.display());
        }
        if !args.no_check {
            check_locally(&dir, &name, &function, config)?;
        }
        (name, pack(&dir)?)
    };
    if !valid_name(&name) {
        bail!("{name:?} is not a valid function name");
    }
    if let Some(host) = &args.target.host {
        println!("sending {} ({} bytes) to {host} over ssh", name, archive.len());
        return remote(host, &["deploy", "--name", &name, "-"], Some(archive));
    }
    let via = std::env::var("SSH_CONNECTION")
        .ok()
        .and_then(|c| c.split_whitespace().next().map(|ip| format!("ssh from {ip}")));
    let started = std::time::Instant::now();
    let path = format!("/_/deploy/{name}");
    let v = match call(&args.target.socket, http::Method::POST, &path, Some((archive.into(), via))).await? {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let version = text(&v["version"]);
    if args.dir == "-" {
        if let Some(inferred) = v["inferred"].as_str() {
            println!("no faas.toml: runtime {inferred}");
        }
    }
    if v["unchanged"].as_bool() == Some(true) {
        println!("{name} is already at version {} (unchanged)", short(&version));
    } else {
        println!(
            "deployed {name} version {} ({}, {} files, {}) in {} ms",
            short(&version),
            text(&v["runtime"]),
            v["files"].as_u64().unwrap_or(0),
            human_bytes(v["bytes"].as_u64().unwrap_or(0)),
            started.elapsed().as_millis()
        );
    }
    println!("  url: {}", text(&v["url"]));
    if let Some(prev) = v["previous"].as_str().filter(|p| *p != version) {
        println!("  previous: {} (faas rollback {name} goes back to it)", short(prev));
    }
    Ok(0)
}

/// The directory's function file as the daemon will store it, with `code` pointing at the
/// directory here (for the local check).
fn function_text(dir: &Path) -> anyhow::Result<FunctionText> {
    let file = dir.join(function_file::FILE);
    let code = dir.to_string_lossy().into_owned();
    match std::fs::read_to_string(&file) {
        Ok(t) => Ok(function_file::rewrite(&t, &code).map_err(|e| anyhow!("{}: {e}", dir.display()))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let top_file = |f: &str| {
                let meta = std::fs::symlink_metadata(dir.join(f)).ok()?;
                meta.is_file().then(|| meta.permissions().mode() & 0o111 != 0)
            };
            Ok(function_file::infer(&code, top_file).map_err(|e| anyhow!("{}: {e}", dir.display()))?)
        }
        Err(e) => Err(e).with_context(|| format!("failed to read {}", file.display())),
    }
}

/// Checks the function file here as the daemon will, before anything is sent.
fn check_locally(dir: &Path, name: &str, function: &FunctionText, config: &Config) -> anyhow::Result<()> {
    let virtual_path = dir.join(format!("{name}.toml"));
    if let Err(e) = Function::parse(&virtual_path, &function.text, config) {
        let shown = if function.inferred.is_some() { dir.to_owned() } else { dir.join(function_file::FILE) };
        let e = function_file::relabel(e, &shown, function.prepended);
        bail!("{e}\n(checked here against this host's settings; --no-check leaves it to the daemon)");
    }
    Ok(())
}

/// The directory as a gzip'd tar: files, directories and symlinks (not followed), modes as
/// 0644/0755, no owners or times; `.git` stays behind.
fn pack(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(dir.join(&rel))
            .with_context(|| format!("failed to read {}", dir.join(&rel).display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("failed to read {}", dir.join(&rel).display()))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let r = rel.join(e.file_name());
            if r == Path::new(".git") {
                continue;
            }
            let t = e.file_type().with_context(|| format!("failed to stat {}", e.path().display()))?;
            if t.is_dir() {
                tar.append_dir(&r, e.path()).with_context(|| format!("failed to pack {}", e.path().display()))?;
                stack.push(r);
            } else if t.is_file() || t.is_symlink() {
                tar.append_path_with_name(e.path(), &r)
                    .with_context(|| format!("failed to pack {}", e.path().display()))?;
            } else {
                bail!("{} is neither a file, a directory nor a symlink: a deploy takes only those", e.path().display());
            }
        }
    }
    let gz = tar.into_inner().context("failed to finish the archive")?;
    gz.finish().context("failed to finish the archive")
}

/// One request to the admin socket: the JSON answer, or the exit code after the problem was
/// printed.
async fn call(
    socket: &Path,
    method: http::Method,
    path: &str,
    upload: Option<(Bytes, Option<String>)>,
) -> anyhow::Result<Result<Value, u8>> {
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => "the admin socket is root's (or [deploy] group's): run with sudo, or ask to be in that group",
            _ => "is faas running there? (systemctl status faas-admin.socket) Another socket: --socket or FAAS_ADMIN_SOCKET",
        };
        anyhow!("cannot reach the faas daemon at {}: {e}\nhint: {hint}", socket.display())
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .context("failed to talk HTTP on the admin socket")?;
    tokio::spawn(conn);
    let (body, via) = upload.unwrap_or_default();
    let mut req = http::Request::builder().method(method).uri(path).header(http::header::HOST, "faas");
    if let Some(via) = via {
        req = req.header("faas-deploy-via", via);
    }
    let req = req.body(Full::new(body)).context("failed to build the request")?;
    let resp = sender.send_request(req).await.context("the daemon closed the admin connection")?;
    let status = resp.status();
    let body = resp.into_body().collect().await.context("failed to read the daemon's answer")?.to_bytes();
    let v: Value = serde_json::from_slice(&body)
        .with_context(|| format!("the daemon answered {status} with something that is not JSON"))?;
    if status.is_success() {
        return Ok(Ok(v));
    }
    let kind = v["type"].as_str().unwrap_or("").trim_start_matches("urn:faas:problem:");
    eprintln!("faas: {} ({status}, {kind})", v["detail"].as_str().unwrap_or("the daemon refused"));
    Ok(Err(1))
}

/// Quotes one word for a POSIX shell (what ssh hands the remote command to).
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:@".contains(&b)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Runs `faas ARGS` on `host` through ssh, `stdin` fed to it; its exit code.
fn remote(host: &str, args: &[&str], stdin: Option<Vec<u8>>) -> anyhow::Result<u8> {
    let ssh = std::env::var("FAAS_SSH").unwrap_or_else(|_| "ssh".into());
    let mut words = ssh.split_whitespace();
    let program = words.next().ok_or_else(|| anyhow!("FAAS_SSH is empty"))?;
    let faas = std::env::var("FAAS_REMOTE_FAAS").unwrap_or_else(|_| "faas".into());
    let command: Vec<String> = std::iter::once(faas.as_str()).chain(args.iter().copied()).map(shell_quote).collect();
    let mut cmd = Command::new(program);
    cmd.args(words).arg(host).arg(command.join(" "));
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::inherit() });
    let mut child =
        cmd.spawn().with_context(|| format!("failed to run {program}\nhint: set FAAS_SSH to your ssh command"))?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // On a thread: ssh may answer (an error) before it has read everything.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let status = child.wait().with_context(|| format!("failed to wait for {program}"))?;
    Ok(status.code().map_or(1, |c| u8::try_from(c).unwrap_or(1)))
}

fn human_bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// `YYYY-MM-DD HH:MM:SSZ` for unix seconds (UTC; days to civil dates as in Howard Hinnant's
/// algorithm).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn versions_table(v: &Value) -> String {
    let mut out =
        format!("{:<14}{:<22}{:<12}{:>6}  {:<10}{:<8}\n", "VERSION", "DEPLOYED", "WHO", "FILES", "SIZE", "RUNTIME");
    for m in v["versions"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<14}{:<22}{:<12}{:>6}  {:<10}{:<8}{}\n",
            short(m["version"].as_str().unwrap_or("")),
            utc(m["deployed"].as_u64().unwrap_or(0)),
            m["who"].as_str().unwrap_or("-"),
            m["files"].as_u64().unwrap_or(0),
            human_bytes(m["bytes"].as_u64().unwrap_or(0)),
            m["runtime"].as_str().unwrap_or("-"),
            if m["current"].as_bool() == Some(true) { "  current" } else { "" }
        ));
    }
    out
}

fn ls_table(v: &Value) -> String {
    let mut out = format!("{:<24}{:<10}{:<14}{:<9}{}\n", "NAME", "SOURCE", "VERSION", "STATE", "OUTCOMES SINCE START");
    for f in v["functions"].as_array().into_iter().flatten() {
        let version = f["version"].as_str().map_or("-", short);
        let outcomes: Vec<String> = f["outcomes"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, n)| format!("{k} {}", n.as_u64().unwrap_or(0)))
            .collect();
        let mut tail = if outcomes.is_empty() { "-".to_owned() } else { outcomes.join(", ") };
        if let Some(reason) = f["reason"].as_str() {
            tail = reason.lines().next().unwrap_or("").to_owned();
        }
        if let Some(shadowed) = f["shadows"].as_str() {
            tail.push_str(&format!(" (shadows deployed {}: the file wins)", short(shadowed)));
        }
        out.push_str(&format!(
            "{:<24}{:<10}{:<14}{:<9}{}\n",
            f["name"].as_str().unwrap_or("?"),
            f["source"].as_str().unwrap_or("?"),
            version,
            f["state"].as_str().unwrap_or("?"),
            tail
        ));
    }
    out
}

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// What `faas logs` says on a host without journald.
pub const NO_JOURNAL: &str = "faas logs reads the systemd journal, and this host has none (no /run/systemd/journal/socket)\nhint: without journald, faas serve writes its log, the REPORT lines and each function's output to its own stderr (function lines as `<6>NAME[INVOCATION-ID]: …`): look wherever that goes, e.g. grep 'NAME\\[' on it. FAAS_JOURNALCTL=\"journalctl -D DIR\" reads a journal copied from elsewhere";

fn logs(args: &LogsArgs) -> anyhow::Result<u8> {
    if let Some(host) = &args.host {
        let mut a = vec!["logs".to_owned(), args.name.clone()];
        if args.follow {
            a.push("-f".into());
        }
        for (flag, v) in [("--invocation", &args.invocation), ("--since", &args.since)] {
            if let Some(v) = v {
                a.extend([flag.to_owned(), v.clone()]);
            }
        }
        if let Some(n) = args.lines {
            a.extend(["-n".to_owned(), n.to_string()]);
        }
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        return remote(host, &a, None);
    }
    if !valid_name(&args.name) {
        bail!("{:?} is not a valid function name", args.name);
    }
    let journalctl = std::env::var("FAAS_JOURNALCTL").ok();
    if journalctl.is_none() && !Path::new(JOURNAL_SOCKET).exists() {
        eprintln!("faas: {}", NO_JOURNAL.replace("NAME", &args.name));
        return Ok(1);
    }
    let journalctl = journalctl.unwrap_or_else(|| "journalctl".into());
    let mut words = journalctl.split_whitespace();
    let program = words.next().ok_or_else(|| anyhow!("FAAS_JOURNALCTL is empty"))?;
    let mut cmd = Command::new(program);
    cmd.args(words).args(["-o", "json", "--no-pager"]).arg(format!("FAAS_FUNCTION={}", args.name));
    if let Some(id) = &args.invocation {
        cmd.arg(format!("FAAS_INVOCATION_ID={id}"));
    }
    if let Some(since) = &args.since {
        cmd.args(["--since", since]);
    }
    if let Some(n) = args.lines {
        cmd.args(["-n", &n.to_string()]);
    }
    if args.follow {
        cmd.arg("-f");
    }
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("failed to run {program}\nhint: {NO_JOURNAL}"))?;
    let stdout = child.stdout.take().expect("stdout was piped");
    let mut out = std::io::stdout();
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(text) = serde_json::from_str::<Value>(&line).ok().and_then(|v| format_entry(&v)) {
            if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                break;
            }
        }
    }
    let status = child.wait().with_context(|| format!("failed to wait for {program}"))?;
    Ok(status.code().map_or(1, |c| u8::try_from(c).unwrap_or(1)))
}

/// One journal entry (`journalctl -o json`) as one line: time, invocation, who wrote it
/// (the function's name for its own output, `faas` for REPORT and deploy events), message.
pub fn format_entry(v: &Value) -> Option<String> {
    let message = match &v["MESSAGE"] {
        Value::String(s) => s.clone(),
        // journalctl gives a message that is not UTF-8 as an array of bytes.
        Value::Array(bytes) => {
            String::from_utf8_lossy(&bytes.iter().filter_map(|b| b.as_u64().map(|b| b as u8)).collect::<Vec<_>>())
                .into_owned()
        }
        _ => return None,
    };
    let micros: u64 = v["__REALTIME_TIMESTAMP"].as_str().and_then(|t| t.parse().ok()).unwrap_or(0);
    let time = utc(micros / 1_000_000);
    let time = format!("{}.{:03}Z", time.trim_end_matches('Z'), micros % 1_000_000 / 1000);
    let id = v["FAAS_INVOCATION_ID"].as_str().map_or("-".to_owned(), |i| i.chars().take(8).collect());
    let ident = v["SYSLOG_IDENTIFIER"].as_str().unwrap_or("?");
    Some(format!("{time} {id:<8} {ident}: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(utc(1_767_323_045), "2026-01-02 03:04:05Z");
    }

    #[test]
    fn journal_entries_become_lines() {
        let report = serde_json::json!({
            "__REALTIME_TIMESTAMP": "1767323045123456",
            "MESSAGE": "REPORT hello 1a2b3c4d-0000 outcome=ok status=200",
            "SYSLOG_IDENTIFIER": "faas",
            "FAAS_FUNCTION": "hello",
            "FAAS_INVOCATION_ID": "1a2b3c4d-0000",
        });
        assert_eq!(
            format_entry(&report).unwrap(),
            "2026-01-02 03:04:05.123Z 1a2b3c4d faas: REPORT hello 1a2b3c4d-0000 outcome=ok status=200"
        );
        let binary = serde_json::json!({
            "__REALTIME_TIMESTAMP": "1767323045000000",
            "MESSAGE": [104, 105, 255],
            "SYSLOG_IDENTIFIER": "hello",
            "FAAS_INVOCATION_ID": "ffff0000",
        });
        assert_eq!(format_entry(&binary).unwrap(), "2026-01-02 03:04:05.000Z ffff0000 hello: hi\u{fffd}");
        assert_eq!(format_entry(&serde_json::json!({"X": 1})), None);
    }

    #[test]
    fn words_are_quoted_for_the_remote_shell() {
        assert_eq!(shell_quote("deploy"), "deploy");
        assert_eq!(shell_quote("1h ago"), "'1h ago'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(reboot)"), "'$(reboot)'");
    }
}
