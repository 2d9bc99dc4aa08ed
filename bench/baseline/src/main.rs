//! The benchmark's baseline: an HTTP server that, for every request, forks and execs the same
//! CGI handler faas would run, with `std::process::Command` and no sandbox at all. Same
//! wrappers, same argv shape, same CGI/1.1 environment and stdin body, the CGI head parsed
//! into the HTTP response. Everything faas adds on top (namespaces, mounts, uid, Landlock,
//! seccomp, its own bookkeeping) is what the ratio measures.
//!
//! Usage:
//!   baseline --listen 127.0.0.1:PORT --wrappers DIR [--python BIN] [--node BIN] [--sh BIN]
//!            NAME=RUNTIME:CODE_DIR:HANDLER ...
//! RUNTIME is sh | exec | python | node; `/NAME[/rest][?query]` runs that function.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX_BODY: usize = 1 << 20;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Runtime {
    Sh,
    Exec,
    Python,
    Node,
}

struct Function {
    runtime: Runtime,
    code: PathBuf,
    handler: String,
}

struct App {
    functions: HashMap<String, Function>,
    wrappers: PathBuf,
    python: PathBuf,
    node: PathBuf,
    sh: PathBuf,
    port: String,
    counter: AtomicU64,
}

fn usage(msg: &str) -> ! {
    eprintln!("baseline: {msg}");
    eprintln!("usage: baseline --listen ADDR --wrappers DIR [--python BIN] [--node BIN] [--sh BIN] NAME=RUNTIME:CODE_DIR:HANDLER ...");
    std::process::exit(2);
}

fn parse_args() -> (String, App) {
    let mut args = std::env::args().skip(1);
    let mut listen = None;
    let mut app = App {
        functions: HashMap::new(),
        wrappers: PathBuf::new(),
        python: "/usr/bin/python3".into(),
        node: "/usr/bin/node".into(),
        sh: "/bin/sh".into(),
        port: String::new(),
        counter: AtomicU64::new(0),
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{a} needs a value")));
        match a.as_str() {
            "--listen" => listen = Some(value()),
            "--wrappers" => app.wrappers = value().into(),
            "--python" => app.python = value().into(),
            "--node" => app.node = value().into(),
            "--sh" => app.sh = value().into(),
            spec => {
                let (name, rest) = spec.split_once('=').unwrap_or_else(|| usage(&format!("bad function spec {spec:?}")));
                let mut parts = rest.splitn(3, ':');
                let (Some(rt), Some(code), Some(handler)) = (parts.next(), parts.next(), parts.next()) else {
                    usage(&format!("bad function spec {spec:?}"))
                };
                let runtime = match rt {
                    "sh" => Runtime::Sh,
                    "exec" => Runtime::Exec,
                    "python" => Runtime::Python,
                    "node" => Runtime::Node,
                    _ => usage(&format!("unknown runtime {rt:?}")),
                };
                let code = std::fs::canonicalize(code).unwrap_or_else(|e| usage(&format!("{code}: {e}")));
                app.functions.insert(name.to_owned(), Function { runtime, code, handler: handler.to_owned() });
            }
        }
    }
    let listen = listen.unwrap_or_else(|| usage("--listen is required"));
    if app.wrappers.as_os_str().is_empty() {
        usage("--wrappers is required");
    }
    app.port = listen.rsplit_once(':').map_or("80", |(_, p)| p).to_owned();
    (listen, app)
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", HeaderValue::from_static("text/plain"));
    r
}

/// The command faas would exec for `f`, with the same argv shape (paths on the host here).
fn command(app: &App, f: &Function) -> Command {
    let code = f.code.to_string_lossy().into_owned();
    let mut cmd = match f.runtime {
        Runtime::Sh => {
            let mut c = Command::new(&app.sh);
            c.arg(f.code.join(&f.handler));
            c
        }
        Runtime::Exec => Command::new(f.code.join(&f.handler)),
        Runtime::Python => {
            let mut c = Command::new(&app.python);
            c.args(["-I", "-B"]).arg(app.wrappers.join("python.py")).arg(&code).arg(&f.handler);
            c
        }
        Runtime::Node => {
            let mut c = Command::new(&app.node);
            c.arg(app.wrappers.join("node.js")).arg(&code).arg(&f.handler);
            c
        }
    };
    cmd.current_dir(&f.code);
    cmd
}

/// Finds the blank line ending the CGI head: (head length, body offset). LF or CRLF.
fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\n' {
            let line = &buf[line_start..i];
            if line.is_empty() || line == b"\r" {
                return Some((line_start, i + 1));
            }
            line_start = i + 1;
        }
    }
    None
}

fn cgi_response(out: Vec<u8>) -> Response<Full<Bytes>> {
    let (head_len, body_at) = find_head_end(&out).unwrap_or((out.len(), out.len()));
    let Ok(head) = std::str::from_utf8(&out[..head_len]) else {
        return text(StatusCode::BAD_GATEWAY, "bad response head\n");
    };
    let mut status = StatusCode::OK;
    let mut headers = Vec::new();
    for raw in head.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return text(StatusCode::BAD_GATEWAY, "bad response head\n");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            match value.split_whitespace().next().and_then(|c| c.parse::<u16>().ok()).and_then(|c| StatusCode::from_u16(c).ok()) {
                Some(s) => status = s,
                None => return text(StatusCode::BAD_GATEWAY, "bad Status\n"),
            }
            continue;
        }
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            (Ok(n), Ok(v)) => headers.push((n, v)),
            _ => return text(StatusCode::BAD_GATEWAY, "bad header\n"),
        }
    }
    let body = Bytes::from(out).slice(body_at..);
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    for (n, v) in headers {
        if !matches!(n.as_str(), "connection" | "transfer-encoding" | "content-length") {
            r.headers_mut().append(n, v);
        }
    }
    r
}

async fn handle(app: Arc<App>, req: Request<Incoming>, remote: String) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/_/health" {
        return Ok(text(StatusCode::OK, "ok\n"));
    }
    let rest = path.trim_start_matches('/');
    let (name, path_info) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let Some(f) = app.functions.get(name) else {
        return Ok(text(StatusCode::NOT_FOUND, "no such function\n"));
    };
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n")),
    };

    let mut cmd = command(&app, f);
    cmd.env_clear();
    let n = app.counter.fetch_add(1, Ordering::Relaxed);
    let deadline = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis()) + 10_000;
    let server_name = parts.headers.get("host").and_then(|h| h.to_str().ok()).map(|h| h.rsplit_once(':').map_or(h, |(n, _)| n).to_owned()).unwrap_or_else(|| "localhost".into());
    cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/tmp")
        .env("TMPDIR", "/tmp")
        .env("LANG", "C.UTF-8")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("SERVER_SOFTWARE", "faas-bench-baseline/0.1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("SCRIPT_NAME", format!("/{name}"))
        .env("PATH_INFO", path_info)
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("REMOTE_ADDR", &remote)
        .env("SERVER_NAME", server_name)
        .env("SERVER_PORT", &app.port)
        .env("FAAS_FUNCTION", name)
        .env("FAAS_INVOCATION_ID", format!("baseline-{n}"))
        .env("FAAS_DEADLINE_MS", deadline.to_string());
    if !body.is_empty() || parts.headers.contains_key("content-length") {
        cmd.env("CONTENT_LENGTH", body.len().to_string());
    }
    if let Some(ct) = parts.headers.get("content-type").and_then(|v| v.to_str().ok()) {
        cmd.env("CONTENT_TYPE", ct);
    }
    for (hname, value) in &parts.headers {
        if matches!(hname.as_str(), "proxy" | "content-type" | "content-length" | "authorization" | "connection") {
            continue;
        }
        if let Ok(v) = value.to_str() {
            cmd.env(format!("HTTP_{}", hname.as_str().to_ascii_uppercase().replace('-', "_")), v);
        }
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());

    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Ok(text(StatusCode::SERVICE_UNAVAILABLE, &format!("spawn failed: {e}\n"))),
    };
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let feed = async move {
        // EPIPE when the handler does not read its body is fine.
        let _ = stdin.write_all(&body).await;
    };
    let mut out = Vec::with_capacity(4096);
    let read = stdout.read_to_end(&mut out);
    let (_, read) = tokio::join!(feed, read);
    let status = child.wait().await;
    if read.is_err() || !status.map(|s| s.success()).unwrap_or(false) {
        return Ok(text(StatusCode::BAD_GATEWAY, "handler failed\n"));
    }
    Ok(cgi_response(out))
}

fn main() {
    let (listen, app) = parse_args();
    let app = Arc::new(app);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await.unwrap_or_else(|e| usage(&format!("bind {listen}: {e}")));
        eprintln!("baseline: listening on {listen}");
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("baseline: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let app = app.clone();
            let remote = addr.ip().to_string();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(app.clone(), req, remote.clone()));
                let _ = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
}
