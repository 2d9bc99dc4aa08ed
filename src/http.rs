//! The hyper service: routing (`/NAME[/rest]`, `/_/…`), method and body limits, concurrency
//! limits, and every error as `application/problem+json` (RFC 9457). Also the accept loops
//! over the listeners systemd gave us, with the connection caps of `admission`.
//!
//! Every response carries `Faas-Invocation-Id`, made when the request arrives; a problem body
//! carries it too, so a caller can quote it and an operator find it in the journal.
//!
//! `/_/health` says the process answers (liveness); `/_/ready` says it takes work: 503 once
//! SIGTERM started the drain and while every sandbox slot is taken, so a balancer's health
//! check moves traffic away before this host would refuse it. Behind a balancer the client's
//! address comes from the PROXY protocol or `X-Forwarded-For`, believed from trusted peers
//! only (`proxy.rs`).

mod admission;

use std::convert::Infallible;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use admission::{open_fds, Capacity, CapacityError};
use admission::{ClientKey, ConnectionSlot, Gate, Refusal};

use crate::invoke::{self, Call, Flushes, Report, ReportSink};
use crate::metrics::{Metrics, Stats};
use crate::proxy::{self, Parsed, ProxiedSource};
use crate::registry::{Lookup, Registry, State};
use crate::sandbox::Host;

/// The response body: either a fixed buffer or a function's streamed stdout.
pub enum ResponseBody {
    Full(Full<Bytes>),
    /// Chunks as the function writes them.
    Stream(invoke::BodyStream),
    /// Nothing, of unknown length: the answer to HEAD, whose body hyper never sends.
    Head,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            ResponseBody::Stream(s) => s.poll_chunk(cx).map(|o| o.map(|r| r.map(Frame::data))),
            ResponseBody::Head => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(b) => b.size_hint(),
            ResponseBody::Stream(_) | ResponseBody::Head => SizeHint::default(),
        }
    }
}

/// Everything the service needs.
pub struct App {
    pub host: Arc<Host>,
    pub registry: Arc<Registry>,
    /// The global concurrency cap: one permit per sandbox slot, whose fds are kept in reserve.
    pub global: Arc<Semaphore>,
    pub capacity: Capacity,
    gate: Arc<Gate>,
    admin_gate: Arc<Gate>,
    refusals: Arc<Semaphore>,
    pub stats: Arc<Stats>,
    pub metrics: Arc<Metrics>,
    /// What `stats.last_activity_ms` counts from.
    pub started: Instant,
    /// Counts every finished invocation into stats and metrics; scheduled runs use it too.
    pub sink: ReportSink,
    /// SIGTERM came: `/_/ready` answers 503 from now on.
    draining: AtomicBool,
    /// `[[schedule]]` entries with their next and last runs.
    pub schedules: crate::schedule::Table,
}

impl App {
    /// Builds the service state.
    pub fn new(host: Arc<Host>, registry: Arc<Registry>, capacity: Capacity) -> Arc<App> {
        let stats = Arc::new(Stats::default());
        let metrics = Arc::new(Metrics::new(stats.clone()));
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
            global: Arc::new(Semaphore::new(capacity.sandboxes)),
            gate: Gate::public(&capacity),
            admin_gate: Gate::admin(&capacity),
            refusals: Arc::new(Semaphore::new(capacity.refusals)),
            capacity,
            host,
            registry,
            stats,
            metrics,
            started: Instant::now(),
            sink,
            draining: AtomicBool::new(false),
            schedules: crate::schedule::Table::default(),
        })
    }

    /// From now on `/_/ready` answers 503: the daemon is going away.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Why this host should get no new work now, if it should not.
    fn not_ready(&self) -> Option<(&'static str, &'static str, &'static str)> {
        if self.draining.load(Ordering::Relaxed) {
            Some(("draining", "draining", "the server is shutting down and finishing what it has"))
        } else if self.global.available_permits() == 0 {
            Some(("overloaded", "at capacity", "every sandbox slot is in use"))
        } else {
            None
        }
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
    /// Every connection starts with a PROXY protocol header (`proxy.protocol_listeners`).
    pub proxy_protocol: bool,
}

/// An RFC 9457 problem body; `instance` is the request path when there was a request.
fn problem_body(status: StatusCode, kind: &str, title: &str, detail: &str, instance: Option<&str>, id: &str) -> String {
    let mut body = serde_json::json!({
        "type": format!("urn:faas:problem:{kind}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
        "invocation_id": id,
    });
    if let Some(path) = instance {
        body["instance"] = serde_json::Value::String(path.to_owned());
    }
    body.to_string() + "\n"
}

/// One request's identity, for the problems answered to it.
struct Ctx<'a> {
    id: &'a str,
    path: &'a str,
}

impl Ctx<'_> {
    fn problem(&self, status: StatusCode, kind: &str, title: &str, detail: &str) -> Response<ResponseBody> {
        let mut resp = Response::new(ResponseBody::Full(Full::new(Bytes::from(problem_body(
            status,
            kind,
            title,
            detail,
            Some(self.path),
            self.id,
        )))));
        *resp.status_mut() = status;
        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        resp
    }

    /// A problem that says "try again shortly".
    fn busy(&self, status: StatusCode, kind: &str, title: &str, detail: &str) -> Response<ResponseBody> {
        let mut resp = self.problem(status, kind, title, detail);
        resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        resp
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::Full(Full::new(Bytes::from(value.to_string() + "\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn server_timing(t: &invoke::Timing) -> HeaderValue {
    let v = format!(
        "setup;dur={:.3};desc={}, handler;dur={:.3}",
        t.setup.as_secs_f64() * 1e3,
        t.start.as_str(),
        t.first_byte.as_secs_f64() * 1e3
    );
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

/// Who is on the other end of a connection.
#[derive(Clone, Debug)]
pub struct Client {
    /// For REMOTE_ADDR.
    pub addr: String,
    /// What the connection caps count it against.
    key: ClientKey,
    /// On a unix socket, who the kernel says connected (SO_PEERCRED): deploys go by it.
    peer: Option<crate::deploy::api::Caller>,
    /// The address (the proxied client's on a PROXY listener); None on a unix socket.
    ip: Option<IpAddr>,
}

impl Client {
    /// A TCP client at `ip`: a trusted proxy's own connection is the balancer (`ClientKey`).
    fn tcp(ip: IpAddr, proxy: &proxy::ProxySettings) -> Client {
        let ip = proxy::canonical(ip);
        let key = if proxy.trusts(ip) { ClientKey::Balancer } else { ClientKey::of(ip) };
        Client { addr: ip.to_string(), key, ip: Some(ip), peer: None }
    }

    /// Who sent this request: the connection's client, or the one its trusted proxy names in
    /// `X-Forwarded-For`.
    fn of_request(&self, headers: &http::HeaderMap, proxy: &proxy::ProxySettings) -> Client {
        match self.ip.and_then(|ip| proxy::forwarded_for(ip, headers, proxy)) {
            Some(ip) => Client { addr: ip.to_string(), key: ClientKey::of(ip), ip: Some(ip), peer: None },
            None => self.clone(),
        }
    }
}

/// Handles one request.
pub async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
    listener: ListenerInfo,
    client: Client,
    flushes: Arc<Flushes>,
) -> Result<Response<ResponseBody>, Infallible> {
    // Made at arrival, so that every answer carries it: 404s, refusals and `/_/…` included.
    let id = uuid::Uuid::new_v4().to_string();
    let mut resp = route(&app, req, &listener, &client, &id).await;
    if let ResponseBody::Stream(stream) = resp.body_mut() {
        stream.watch_flushes(flushes);
    }
    resp.headers_mut().insert("faas-invocation-id", HeaderValue::from_str(&id).expect("uuids are ascii"));
    Ok(resp)
}

async fn route(
    app: &Arc<App>,
    req: Request<Incoming>,
    listener: &ListenerInfo,
    client: &Client,
    id: &str,
) -> Response<ResponseBody> {
    app.touch();
    let path = req.uri().path().to_owned();
    let ctx = Ctx { id, path: &path };
    if let Some(ours) = path.strip_prefix("/_/") {
        if listener.admin && (ours == "deploy" || ours.starts_with("deploy/")) {
            return deploy_endpoint(app, req, client, &ctx).await;
        }
        let admin = listener.admin || app.host.config.admin_on_public;
        return match ours {
            "health" => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            "ready" => match app.not_ready() {
                None => json(StatusCode::OK, serde_json::json!({"status": "ready"})),
                Some((kind, title, detail)) => ctx.busy(StatusCode::SERVICE_UNAVAILABLE, kind, title, detail),
            },
            "metrics" if admin => {
                let mut resp = Response::new(ResponseBody::Full(Full::new(Bytes::from(app.metrics.encode()))));
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                );
                resp
            }
            "functions" if admin => json(StatusCode::OK, functions_json(app)),
            _ => ctx.problem(StatusCode::NOT_FOUND, "not-found", "not found", "no such endpoint"),
        };
    }
    let own = own_origin(req.headers(), app.host.config.domain.as_deref());
    let own_origin = own.is_some();
    let client = &client.of_request(req.headers(), &app.host.config.proxy);
    let rest = path.trim_start_matches('/');
    let (name, path_info) = match (&own, rest.find('/')) {
        (Some(name), _) => (name.as_str(), path.as_str()),
        (None, Some(i)) => (&rest[..i], &rest[i..]),
        (None, None) => (rest, ""),
    };
    let loaded = match app.registry.lookup(name) {
        Lookup::Ready(l) => l,
        Lookup::NotFound => {
            return ctx.problem(
                StatusCode::NOT_FOUND,
                "function-not-found",
                "function not found",
                &format!("there is no function {name:?}"),
            )
        }
        // Only where: the message may hold host paths and OS errors (it is in the journal,
        // and on the admin listener's /_/functions).
        Lookup::Invalid(e) => {
            return ctx.problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "function-invalid",
                "function file is invalid",
                &e.summary(),
            )
        }
    };
    let f = &loaded.function;
    // Not public: as if it did not exist, except to trusted callers.
    if !f.auth.public && !listener.admin {
        return ctx.problem(
            StatusCode::NOT_FOUND,
            "function-not-found",
            "function not found",
            &format!("there is no function {name:?}"),
        );
    }
    if !f.allows(req.method()) {
        let allow =
            f.methods.as_ref().map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")).unwrap_or_default();
        let mut resp = ctx.problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "method not allowed",
            &format!("{} is not allowed; use {allow}", req.method()),
        );
        if let Ok(v) = HeaderValue::from_str(&allow) {
            resp.headers_mut().insert(ALLOW, v);
        }
        return resp;
    }
    let Some(path_info) = percent_decode(path_info) else {
        return ctx.problem(StatusCode::BAD_REQUEST, "bad-request", "bad request", "the path is not valid UTF-8");
    };
    let limit = f.limits.body.0;
    let too_large = || {
        ctx.problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "request body too large",
            &format!("the body may be at most {limit} bytes"),
        )
    };
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }

    // A bearer key is decided before the body is read: an unauthenticated client never holds
    // a body slot of a function that takes keys only.
    let mut caller = None;
    if checks_auth(f, listener) && !f.auth.needs_body() {
        match f.auth.check_bearer(req.headers()) {
            Ok(c) => caller = Some(c),
            Err(denial) => return unauthorized(app, &ctx, f, denial),
        }
    }

    // The whole body first, under its own bound, and only then the concurrency permits: a
    // client that trickles its body holds a body slot, never a function's capacity.
    let (mut parts, body) = req.into_parts();
    let body = if body.is_end_stream() {
        Bytes::new()
    } else {
        let gate = if listener.admin { &app.admin_gate } else { &app.gate };
        let _slot = match gate.start_body(client.key) {
            Ok(slot) => slot,
            Err(refusal) => {
                app.stats.refused.fetch_add(1, Ordering::Relaxed);
                let (status, kind, title, detail) = refusal.problem();
                return ctx.busy(status, kind, title, detail);
            }
        };
        match tokio::time::timeout(app.host.config.body_timeout.0, Limited::new(body, limit as usize).collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return too_large(),
            Ok(Err(_)) => {
                return ctx.problem(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    "bad request",
                    "the request body could not be read",
                )
            }
            Err(_) => {
                return ctx.problem(
                    StatusCode::REQUEST_TIMEOUT,
                    "body-timeout",
                    "request body too slow",
                    "the request body did not arrive in time",
                )
            }
        }
    };
    if checks_auth(f, listener) && f.auth.needs_body() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        match f.auth.check(&parts.headers, &body, now) {
            Ok(c) => caller = c,
            Err(denial) => return unauthorized(app, &ctx, f, denial),
        }
    }
    if f.auth.uses_bearer() {
        // The key is faas's: the handler learns the caller (REMOTE_USER), never the key.
        parts.headers.remove(http::header::AUTHORIZATION);
    }
    let Ok(global) = app.global.clone().try_acquire_owned() else {
        return ctx.busy(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            "too many requests",
            "the server is at its concurrency limit",
        );
    };
    let Ok(local) = loaded.limiter.clone().try_acquire_owned() else {
        return ctx.busy(
            StatusCode::TOO_MANY_REQUESTS,
            "concurrency-limit",
            "too many requests",
            &format!("{name} runs at most {} requests at once", f.limits.concurrency),
        );
    };

    let head_only = parts.method == http::Method::HEAD;
    let server_name = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map_or(h, |(n, _)| n).to_owned())
        .unwrap_or_else(|| "localhost".into());
    let call = Call {
        id: id.to_owned(),
        method: parts.method,
        path_info,
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: parts.headers,
        remote_addr: client.addr.clone(),
        trigger: invoke::Trigger::Http,
        server_name,
        server_port: listener.port.clone(),
        body,
        // The function's clock starts once its request is whole: a slow upload is the
        // client's time (bounded by body_timeout), not the function's.
        received: Instant::now(),
        permits: invoke::Permits { server: Some(global), function: Some(local) },
        caller,
        own_origin,
    };
    app.stats.in_flight.fetch_add(1, Ordering::Relaxed);
    let result = invoke::invoke(app.host.clone(), loaded.clone(), call, Some(app.sink.clone())).await;
    app.touch();
    match result {
        Ok(started) => {
            let mut head = started.head;
            let dropped = if own_origin {
                crate::cgi::scope_headers_own_origin(&mut head.headers, &f.allow_headers)
            } else {
                crate::cgi::scope_headers(&mut head.headers, &f.name, &f.allow_headers)
            };
            if !dropped.is_empty() {
                tracing::warn!(
                    function = %f.name,
                    invocation_id = %id,
                    "dropped response headers that would act beyond /{} (allow them with [response] allow_headers): {}",
                    f.name,
                    dropped.join(", ")
                );
            }
            let body = if head_only {
                // hyper sends no body to HEAD and would drop the stream, which reads as the
                // client leaving and kills the sandbox: let the function finish (its timeout
                // and output limit still hold) and throw its output away.
                let mut stream = started.body;
                tokio::spawn(async move { while stream.next_chunk().await.is_some() {} });
                ResponseBody::Head
            } else {
                ResponseBody::Stream(started.body)
            };
            let mut resp = Response::new(body);
            *resp.status_mut() = head.status;
            *resp.headers_mut() = head.headers;
            resp.headers_mut().append("server-timing", server_timing(&started.timing));
            resp
        }
        Err(failure) => {
            let p = failure.outcome.problem();
            let mut resp = ctx.problem(p.status, p.slug, p.title, &p.detail);
            resp.headers_mut().append("server-timing", server_timing(&failure.timing));
            resp
        }
    }
}

/// `/_/deploy…` on the admin listener (never a public one, whatever `admin_on_public` says):
/// deploy, versions, rollback, rm, ls, for root or `[deploy] group` on a unix socket
/// (`deploy::api`). The upload is read here, under `[deploy] max_archive`.
async fn deploy_endpoint(
    app: &Arc<App>,
    req: Request<Incoming>,
    client: &Client,
    ctx: &Ctx<'_>,
) -> Response<ResponseBody> {
    use crate::deploy::api::{self, DeployError, Op};
    let fail = |e: DeployError| {
        let (status, kind, title) = e.problem();
        ctx.problem(status, kind, title, &e.detail())
    };
    let settings = &app.host.config.deploy;
    let who = match api::authorize(settings, client.peer) {
        Ok(who) => who,
        Err(e) => return fail(e),
    };
    let rest = req.uri().path().trim_start_matches("/_/deploy");
    let op = match Op::parse(req.method(), rest, req.uri().query()) {
        Ok(op) => op,
        Err(e) => return fail(e),
    };
    let via = req.headers().get("faas-deploy-via").and_then(|v| v.to_str().ok()).map(|v| v.chars().take(200).collect());
    let body = if matches!(op, Op::Deploy { .. }) {
        // A large upload over a slow link may take a while; a stalled one may not.
        let wait = app.host.config.body_timeout.0.max(Duration::from_secs(120));
        match tokio::time::timeout(wait, read_upload(req.into_body(), settings.max_archive.0)).await {
            Ok(Ok(Some(body))) => body,
            Ok(Ok(None)) => return fail(DeployError::TooLarge(settings.max_archive.0)),
            Ok(Err(_)) => return fail(DeployError::BodyRead),
            Err(_) => return fail(DeployError::BodyTimeout),
        }
    } else {
        Bytes::new()
    };
    let metrics = if op == Op::List { app.metrics.encode() } else { String::new() };
    match api::run(app.registry.clone(), op, who, via, body, metrics).await {
        Ok(value) => json(StatusCode::OK, value),
        Err(e) => {
            if let DeployError::Store(inner) = &e {
                tracing::error!("deploy request failed: {inner}");
            }
            fail(e)
        }
    }
}

/// The function NAME when the request's `Host` is `NAME.DOMAIN` (any port, any case) and
/// faas.toml sets `domain`: then the function has the origin to itself.
fn own_origin(headers: &http::HeaderMap, domain: Option<&str>) -> Option<String> {
    let domain = domain?;
    let host = headers.get(http::header::HOST)?.to_str().ok()?;
    let host = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let name = host.strip_suffix(domain)?.strip_suffix('.')?;
    (!name.is_empty() && !name.contains('.')).then(|| name.to_owned())
}

/// Whether this request must pass the function's `[auth]`: on the public listeners, for a
/// function that has keys or signatures. The admin socket (root only) is trusted as
/// `faas invoke` and schedules are.
fn checks_auth(f: &crate::function::Function, listener: &ListenerInfo) -> bool {
    !listener.admin && !f.auth.open()
}

/// The 401 for a refused request, with its challenges, counted; no sandbox was started.
fn unauthorized(
    app: &App,
    ctx: &Ctx,
    f: &crate::function::Function,
    denial: crate::auth::Denial,
) -> Response<ResponseBody> {
    app.metrics.auth_failed(&f.name, denial.reason());
    tracing::debug!(function = %f.name, invocation_id = %ctx.id, "refused: {} credentials", denial.reason());
    let mut resp = ctx.problem(StatusCode::UNAUTHORIZED, "unauthorized", "unauthorized", denial.detail());
    for challenge in f.auth.challenges(&f.name) {
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            resp.headers_mut().append(http::header::WWW_AUTHENTICATE, v);
        }
    }
    resp
}

/// An upload of at most `limit` bytes; `None` when it is larger. What is over the limit is
/// still read (and thrown away, up to 1 GiB): a client still writing when the connection
/// closed would lose the answer to a broken pipe and never learn why.
async fn read_upload(mut body: Incoming, limit: u64) -> Result<Option<Bytes>, hyper::Error> {
    let mut buf = bytes::BytesMut::new();
    let mut seen: u64 = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            seen += data.len() as u64;
            if seen <= limit {
                buf.extend_from_slice(data);
            } else if seen > 1 << 30 {
                break;
            }
        }
    }
    Ok((seen <= limit).then(|| buf.freeze()))
}

fn functions_json(app: &App) -> serde_json::Value {
    let list: Vec<serde_json::Value> = app
        .registry
        .snapshot()
        .into_iter()
        .map(|(name, state)| match state {
            State::Ready(l) => serde_json::json!({
                "name": name,
                "status": "ready",
                "runtime": l.function.runtime.as_str(),
                "version": l.version,
                "landlock": l.sandbox.landlock_word(),
                "limits": {
                    "timeout": crate::units::Span(l.function.limits.timeout.0).to_string(),
                    "memory": l.function.limits.memory.to_string(),
                    "pids": l.function.limits.pids,
                    "concurrency": l.function.limits.concurrency,
                },
                "network": l.function.network.as_str(),
                "start": if l.warm.is_some() { "warm" } else { "cold" },
                "zygote": l.warm.as_ref().map(|w| w.info()),
                "schedules": app.schedules.describe(&name),
                "allow": l.function.allow.texts(),
                "auth": l.function.auth.describe(),
                // Names only: where each file is and which credential fills it.
                "secrets": l.function.secrets.iter().map(|s| serde_json::json!({
                    "name": s.name,
                    "credential": s.credential,
                    "env": s.env,
                })).collect::<Vec<_>>(),
            }),
            State::Invalid(reason) => {
                serde_json::json!({"name": name, "status": "invalid", "reason": reason.to_string()})
            }
        })
        .collect();
    serde_json::json!({
        "functions": list,
        "layers": app.host.layers.summary,
        "zygotes": app.registry.warm().report(),
        "zygote_resident_bytes": app.registry.warm().resident(),
    })
}

/// A listening socket from systemd or `--listen`.
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    /// A unix stream socket (the admin socket).
    Unix(tokio::net::UnixListener),
}

/// How long a refused connection may take to receive its answer.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// How long a refused connection is read (and what it sent thrown away) after its answer,
/// so that closing it does not meet unread data, which the kernel answers with a reset
/// that can destroy the answer before the client reads it.
const REFUSAL_DRAIN: Duration = Duration::from_millis(250);

/// How long a trusted proxy may take to send its PROXY header (haproxy sends it at once).
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts on `listener` until `stop` fires; each connection within the caps is served with
/// HTTP/1.1 keep-alive and watched by `graceful`, each one past them is refused. On a PROXY
/// protocol listener a connection is admitted once its header named the client, so the caps
/// count the client, not the balancer; the headers are read beside the accept loop.
pub async fn serve(
    app: Arc<App>,
    listener: Listener,
    info: ListenerInfo,
    graceful: Arc<hyper_util::server::graceful::GracefulShutdown>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let gate = if info.admin { app.admin_gate.clone() } else { app.gate.clone() };
    // Connections whose PROXY header is on its way, each with its refusal slot; dropped
    // (and so closed) when the loop ends.
    let mut headers: tokio::task::JoinSet<Option<(Io, Client, OwnedSemaphorePermit)>> = tokio::task::JoinSet::new();
    loop {
        // Every accept costs an fd before we know whether the connection is within the caps,
        // so it takes a refusal slot first: past the caps, connections then wait in the
        // kernel's backlog (where systemd's socket keeps them) instead of costing fds.
        let next = async {
            let token = app.refusals.clone().acquire_owned().await.expect("the refusal semaphore is never closed");
            (accept(&listener, &app.host.config.proxy).await, token)
        };
        let (accepted, token) = tokio::select! {
            a = next => a,
            Some(done) = headers.join_next(), if !headers.is_empty() => {
                if let Ok(Some((io, client, token))) = done {
                    admit(&app, &gate, io, client, token, &info, &graceful);
                }
                continue;
            }
            _ = stop.changed() => return,
        };
        let (io, client) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                drop(token);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !info.proxy_protocol {
            admit(&app, &gate, io, client, token, &info, &graceful);
            continue;
        }
        if client.key != ClientKey::Balancer {
            app.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("refused {}: not a trusted proxy, on a PROXY protocol listener", client.addr);
            tokio::spawn(refuse(io, Refusal::UntrustedPeer, token));
            continue;
        }
        let app = app.clone();
        headers.spawn(async move {
            let peer = client.addr.clone();
            match tokio::time::timeout(PROXY_HEADER_TIMEOUT, read_proxy_header(io, client, &app)).await {
                Ok(Ok((io, client))) => Some((io, client, token)),
                Ok(Err(e)) => {
                    app.stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("closed a connection from the proxy {peer}: {e}");
                    None
                }
                Err(_) => {
                    app.stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "closed a connection from the proxy {peer}: no PROXY header within {PROXY_HEADER_TIMEOUT:?}"
                    );
                    None
                }
            }
        });
    }
}

/// Serves `io` if `gate` has room for `client`, else refuses it; `token` is its fd's budget
/// until then.
fn admit(
    app: &Arc<App>,
    gate: &Arc<Gate>,
    io: Io,
    client: Client,
    token: OwnedSemaphorePermit,
    info: &ListenerInfo,
    graceful: &hyper_util::server::graceful::GracefulShutdown,
) {
    let slot: ConnectionSlot = match gate.admit(client.key) {
        Ok(slot) => slot,
        Err(refusal) => {
            app.stats.refused.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(refuse(io, refusal, token));
            return;
        }
    };
    drop(token);
    let app = app.clone();
    let info = info.clone();
    let flushes = io.inner().flushes.clone();
    let service =
        hyper::service::service_fn(move |req| handle(app.clone(), req, info.clone(), client.clone(), flushes.clone()));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .keep_alive(true)
        .serve_connection(io, service);
    let watched = graceful.watch(conn);
    tokio::spawn(async move {
        // The slot is given back when the connection ends.
        let _slot = slot;
        if let Err(e) = watched.await {
            tracing::debug!("connection ended: {e}");
        }
    });
}

/// Reads the PROXY header a trusted proxy starts its connection with; the client it names
/// replaces the proxy as the connection's client. The bytes after the header are the HTTP
/// request, and the returned stream gives them first.
async fn read_proxy_header(io: Io, client: Client, app: &App) -> Result<(Io, Client), proxy::HeaderError> {
    let mut stream = io.into_inner();
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        match proxy::parse_header(&buf)? {
            Parsed::Incomplete => {}
            Parsed::Done(source, used) => {
                let client = match source {
                    ProxiedSource::Client(addr) => Client::tcp(addr.ip(), &app.host.config.proxy),
                    // The proxy's own connection (a health check): the proxy is the client.
                    ProxiedSource::Peer => client,
                };
                stream.rest = bytes::Bytes::copy_from_slice(&buf[used..]);
                return Ok((TokioIo::new(stream), client));
            }
        }
        // Never read past the longest header by much: what follows belongs to HTTP, and is
        // handed on, but a proxy that sends nothing else must not fill memory.
        if buf.len() > proxy::V2_MAX_PAYLOAD + 16 {
            return Err(proxy::HeaderError::Missing);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(proxy::HeaderError::Missing),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Answers a connection past a cap without waiting for its request (a client that sent one
/// reads the answer as the response to it; one that sent nothing gets it as servers send a
/// 408 on an idle connection), then closes it. Holds `_token` (its fd's budget) throughout.
async fn refuse(io: Io, refusal: Refusal, _token: OwnedSemaphorePermit) {
    let mut stream = io.into_inner();
    let id = uuid::Uuid::new_v4().to_string();
    let (status, kind, title, detail) = refusal.problem();
    let body = problem_body(status, kind, title, detail, None, &id);
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nretry-after: 1\r\nfaas-invocation-id: {id}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let answer = async {
        stream.write_all((head + &body).as_bytes()).await?;
        stream.shutdown().await
    };
    if !matches!(tokio::time::timeout(REFUSAL_WRITE, answer).await, Ok(Ok(()))) {
        return;
    }
    let mut buf = [0u8; 4096];
    let drain = async {
        let mut total = 0;
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            total += n;
            if total > 64 << 10 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_DRAIN, drain).await;
}

type Io = TokioIo<Conn>;

/// One accepted connection's stream. Bytes already read past a PROXY header (`rest`) are
/// read first; every completed flush is counted, so a body cut short can wait until hyper has
/// written out everything before it (`invoke::Flushes`).
struct Conn {
    inner: Box<dyn IoStream>,
    rest: bytes::Bytes,
    flushes: Arc<Flushes>,
}

impl Conn {
    fn new(inner: Box<dyn IoStream>) -> Io {
        TokioIo::new(Conn { inner, rest: bytes::Bytes::new(), flushes: Arc::new(Flushes::default()) })
    }
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.rest.is_empty() {
            let n = self.rest.len().min(buf.remaining());
            let head = self.rest.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper flushes its own buffer into the socket before it flushes the socket, so a
        // flush that completes means every byte before it has been written.
        let done = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(done, Poll::Ready(Ok(()))) {
            self.flushes.flushed();
        }
        done
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connected stream of either kind.
pub trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> IoStream for T {}

async fn accept(listener: &Listener, proxy: &proxy::ProxySettings) -> io::Result<(Io, Client)> {
    match listener {
        Listener::Tcp(l) => {
            let (s, addr) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((Conn::new(Box::new(s)), Client::tcp(addr.ip(), proxy)))
        }
        Listener::Unix(l) => {
            let (s, _) = l.accept().await?;
            let peer =
                s.peer_cred().ok().map(|c| crate::deploy::api::Caller { uid: c.uid(), gid: c.gid(), pid: c.pid() });
            let client = Client { addr: "unix".into(), key: ClientKey::Local, ip: None, peer };
            Ok((Conn::new(Box::new(s)), client))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_origin_names() {
        let h = |host: &str| {
            let mut m = http::HeaderMap::new();
            m.insert(http::header::HOST, HeaderValue::from_str(host).unwrap());
            m
        };
        assert_eq!(own_origin(&h("hello.fn.localhost:8080"), Some("fn.localhost")).as_deref(), Some("hello"));
        assert_eq!(own_origin(&h("Hello.FN.localhost."), Some("fn.localhost")).as_deref(), Some("hello"));
        assert_eq!(own_origin(&h("fn.localhost"), Some("fn.localhost")), None);
        assert_eq!(own_origin(&h("a.b.fn.localhost"), Some("fn.localhost")), None);
        assert_eq!(own_origin(&h("hellofn.localhost"), Some("fn.localhost")), None);
        assert_eq!(own_origin(&h("hello.fn.localhost"), None), None);
    }

    #[test]
    fn decode() {
        assert_eq!(percent_decode("/a%20b").as_deref(), Some("/a b"));
        assert_eq!(percent_decode("/a%2").as_deref(), Some("/a%2"));
        assert_eq!(percent_decode("/x%00"), None);
        assert_eq!(percent_decode("/%zz").as_deref(), Some("/%zz"));
    }
}
