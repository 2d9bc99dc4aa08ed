//! The hyper service: routing (`/NAME[/rest]`, `/_/…`), method and body limits, concurrency
//! limits, and every error as `application/problem+json` (RFC 9457). Also the accept loops
//! over the listeners systemd gave us.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use crate::host::Host;
use crate::invoke::{self, Call, Outcome, Report, ReportSink};
use crate::metrics::Metrics;
use crate::registry::{Lookup, Registry};

/// The response body: either a fixed buffer or a function's streamed stdout.
pub enum ResponseBody {
    /// A whole body.
    Full(Full<Bytes>),
    /// Chunks as the function writes them.
    Stream(invoke::BodyStream),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            ResponseBody::Stream(s) => s.poll_chunk(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(b) => b.size_hint(),
            ResponseBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// Counters shared by the service, sd-notify STATUS and idle exit.
#[derive(Default)]
pub struct Stats {
    /// Invocations running now.
    pub in_flight: AtomicUsize,
    /// Invocations finished since start.
    pub served: AtomicU64,
    /// Milliseconds since `started` of the last request.
    pub last_activity_ms: AtomicU64,
}

/// Everything the service needs.
pub struct App {
    /// The host's sandbox parts.
    pub host: Arc<Host>,
    /// The functions.
    pub registry: Arc<Registry>,
    /// The global concurrency cap.
    pub global: Arc<Semaphore>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// When we started.
    pub started: Instant,
    sink: ReportSink,
}

impl App {
    /// Builds the service state.
    pub fn new(host: Arc<Host>, registry: Arc<Registry>) -> Arc<App> {
        let stats = Arc::new(Stats::default());
        let metrics = Arc::new(Metrics::new());
        let sink: ReportSink = {
            let stats = stats.clone();
            let metrics = metrics.clone();
            Arc::new(move |r: &Report| {
                stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                stats.served.fetch_add(1, Ordering::Relaxed);
                metrics.observe(r);
            })
        };
        Arc::new(App {
            global: Arc::new(Semaphore::new(host.config.max_concurrency)),
            host,
            registry,
            stats,
            metrics,
            started: Instant::now(),
            sink,
        })
    }

    fn touch(&self) {
        self.stats.last_activity_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// What a listener is for.
#[derive(Clone, Debug)]
pub struct ListenerInfo {
    /// Serves `/_/metrics` and `/_/functions`.
    pub admin: bool,
    /// Our port, for SERVER_PORT.
    pub port: String,
}

/// An RFC 9457 problem.
struct Problem {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
    instance: String,
    id: Option<String>,
}

fn problem(status: StatusCode, kind: &'static str, title: &'static str, detail: impl Into<String>, instance: &str) -> Problem {
    Problem { status, kind, title, detail: detail.into(), instance: instance.to_owned(), id: None }
}

impl Problem {
    fn with_id(mut self, id: &str) -> Problem {
        self.id = Some(id.to_owned());
        self
    }

    fn into_response(self) -> Response<ResponseBody> {
        let mut body = serde_json::json!({
            "type": format!("urn:faas:problem:{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
            "instance": self.instance,
        });
        if let Some(id) = &self.id {
            body["invocation_id"] = serde_json::Value::String(id.clone());
        }
        let mut resp = Response::new(ResponseBody::Full(Full::new(Bytes::from(body.to_string() + "\n"))));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(id) = self.id.as_deref().and_then(|id| HeaderValue::from_str(id).ok()) {
            resp.headers_mut().insert("faas-invocation-id", id);
        }
        resp
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::Full(Full::new(Bytes::from(value.to_string() + "\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn title(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Ok => "ok",
        Outcome::Timeout => "function timed out",
        Outcome::OutOfMemory => "function ran out of memory",
        Outcome::SyscallDenied(_) => "function made a forbidden system call",
        Outcome::Crashed(_) => "function crashed",
        Outcome::BadResponse(_) => "function sent an invalid response",
        Outcome::OutputTooLarge => "function output too large",
        Outcome::ClientGone => "client went away",
        Outcome::SetupFailed(_) => "sandbox unavailable",
    }
}

fn server_timing(t: &invoke::Timing) -> HeaderValue {
    let v = format!("setup;dur={:.3}, handler;dur={:.3}", t.setup.as_secs_f64() * 1e3, t.first_byte.as_secs_f64() * 1e3);
    HeaderValue::from_str(&v).expect("digits and ascii only")
}

/// Percent-decodes a path; None if the result is not UTF-8 or holds NUL.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    let s = String::from_utf8(out).ok()?;
    (!s.contains('\0')).then_some(s)
}

/// Handles one request.
pub async fn handle(app: Arc<App>, req: Request<Incoming>, listener: ListenerInfo, remote: String) -> Result<Response<ResponseBody>, Infallible> {
    let received = Instant::now();
    app.touch();
    let path = req.uri().path().to_owned();
    if let Some(ours) = path.strip_prefix("/_/") {
        let admin = listener.admin || app.host.config.admin_on_public;
        return Ok(match ours {
            "health" => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            "metrics" if admin => {
                let mut resp = Response::new(ResponseBody::Full(Full::new(Bytes::from(app.metrics.encode(&app.stats)))));
                resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"));
                resp
            }
            "functions" if admin => json(StatusCode::OK, functions_json(&app)),
            _ => problem(StatusCode::NOT_FOUND, "not-found", "not found", "no such endpoint", &path).into_response(),
        });
    }
    let rest = path.trim_start_matches('/');
    let (name, path_info) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let loaded = match app.registry.lookup(name) {
        Lookup::Ready(l) => l,
        Lookup::NotFound => {
            return Ok(problem(StatusCode::NOT_FOUND, "function-not-found", "function not found", format!("there is no function {name:?}"), &path).into_response())
        }
        Lookup::Invalid(summary) => {
            return Ok(problem(StatusCode::SERVICE_UNAVAILABLE, "function-invalid", "function file is invalid", summary, &path).into_response())
        }
    };
    let f = &loaded.function;
    if !f.allows(req.method()) {
        let allow = f.methods.as_ref().map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")).unwrap_or_default();
        let mut resp = problem(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "method not allowed", format!("{} is not allowed; use {allow}", req.method()), &path).into_response();
        if let Ok(v) = HeaderValue::from_str(&allow) {
            resp.headers_mut().insert(ALLOW, v);
        }
        return Ok(resp);
    }
    let Some(path_info) = percent_decode(path_info) else {
        return Ok(problem(StatusCode::BAD_REQUEST, "bad-request", "bad request", "the path is not valid UTF-8", &path).into_response());
    };
    let limit = f.limits.body.0;
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Ok(problem(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", "request body too large", format!("the body may be at most {} bytes", limit), &path).into_response());
    }
    let retry = |mut resp: Response<ResponseBody>| {
        resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        resp
    };
    let Ok(global) = app.global.clone().try_acquire_owned() else {
        return Ok(retry(problem(StatusCode::TOO_MANY_REQUESTS, "overloaded", "too many requests", "the server is at its concurrency limit", &path).into_response()));
    };
    let Ok(local) = loaded.limiter.clone().try_acquire_owned() else {
        return Ok(retry(problem(StatusCode::TOO_MANY_REQUESTS, "concurrency-limit", "too many requests", format!("{name} runs at most {} requests at once", f.limits.concurrency), &path).into_response()));
    };

    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(app.host.config.body_timeout.0, Limited::new(body, limit as usize).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Ok(problem(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", "request body too large", format!("the body may be at most {limit} bytes"), &path).into_response());
        }
        Ok(Err(_)) => return Ok(problem(StatusCode::BAD_REQUEST, "bad-request", "bad request", "the request body could not be read", &path).into_response()),
        Err(_) => return Ok(problem(StatusCode::REQUEST_TIMEOUT, "body-timeout", "request body too slow", "the request body did not arrive in time", &path).into_response()),
    };

    let id = uuid::Uuid::new_v4().to_string();
    let server_name = parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).map(|h| h.rsplit_once(':').map_or(h, |(n, _)| n).to_owned()).unwrap_or_else(|| "localhost".into());
    let call = Call {
        id: id.clone(),
        method: parts.method,
        path_info,
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: parts.headers,
        remote_addr: remote,
        server_name,
        server_port: listener.port.clone(),
        body,
        received,
        permits: vec![global, local],
    };
    app.stats.in_flight.fetch_add(1, Ordering::Relaxed);
    let result = invoke::invoke(app.host.clone(), loaded.clone(), call, Some(app.sink.clone())).await;
    app.touch();
    let id_header = HeaderValue::from_str(&id).expect("uuids are ascii");
    Ok(match result {
        Ok(started) => {
            let mut resp = Response::new(ResponseBody::Stream(started.body));
            *resp.status_mut() = started.head.status;
            *resp.headers_mut() = started.head.headers;
            resp.headers_mut().insert("faas-invocation-id", id_header);
            resp.headers_mut().append("server-timing", server_timing(&started.timing));
            resp
        }
        Err(failure) => {
            let mut resp = problem(failure.outcome.status(), failure.outcome.slug(), title(&failure.outcome), failure.outcome.detail(), &path).with_id(&id).into_response();
            resp.headers_mut().append("server-timing", server_timing(&failure.timing));
            resp
        }
    })
}

fn functions_json(app: &App) -> serde_json::Value {
    let list: Vec<serde_json::Value> = app
        .registry
        .snapshot()
        .into_iter()
        .map(|(name, state)| match state {
            Ok(l) => serde_json::json!({
                "name": name,
                "status": "ready",
                "runtime": l.function.runtime.as_str(),
                "version": l.version,
                "landlock": l.sandbox.landlock.enforcement.word(),
                "limits": {
                    "timeout": crate::units::Span(l.function.limits.timeout.0).to_string(),
                    "memory": l.function.limits.memory.to_string(),
                    "pids": l.function.limits.pids,
                    "concurrency": l.function.limits.concurrency,
                },
                "network": l.function.network,
            }),
            Err(reason) => serde_json::json!({"name": name, "status": "invalid", "reason": reason}),
        })
        .collect();
    serde_json::json!({ "functions": list, "layers": app.host.layers.summary })
}

/// A listening socket from systemd or `--listen`.
pub enum Listener {
    /// TCP.
    Tcp(tokio::net::TcpListener),
    /// A unix stream socket (the admin socket).
    Unix(tokio::net::UnixListener),
}

/// Accepts on `listener` until `stop` fires; each connection is served with HTTP/1.1
/// keep-alive and watched by `graceful`.
pub async fn serve(
    app: Arc<App>,
    listener: Listener,
    info: ListenerInfo,
    graceful: Arc<hyper_util::server::graceful::GracefulShutdown>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = accept(&listener) => a,
            _ = stop.changed() => return,
        };
        let (io, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        let info = info.clone();
        let service = hyper::service::service_fn(move |req| handle(app.clone(), req, info.clone(), remote.clone()));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .keep_alive(true)
            .serve_connection(io, service);
        let watched = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

type Io = TokioIo<Box<dyn IoStream>>;

/// A connected stream of either kind.
pub trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> IoStream for T {}

async fn accept(listener: &Listener) -> io::Result<(Io, String)> {
    match listener {
        Listener::Tcp(l) => {
            let (s, addr) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((TokioIo::new(Box::new(s) as Box<dyn IoStream>), addr.ip().to_string()))
        }
        Listener::Unix(l) => {
            let (s, _) = l.accept().await?;
            Ok((TokioIo::new(Box::new(s) as Box<dyn IoStream>), "unix".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode() {
        assert_eq!(percent_decode("/a%20b").as_deref(), Some("/a b"));
        assert_eq!(percent_decode("/a%2").as_deref(), Some("/a%2"));
        assert_eq!(percent_decode("/x%00"), None);
        assert_eq!(percent_decode("/%zz").as_deref(), Some("/%zz"));
    }
}
