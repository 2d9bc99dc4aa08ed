//! One sandbox's proxy: accepts on the listener sandbox/ made in the sandbox's network
//! namespace, and serves each connection in a task of its own until the invocation ends.
//! See mod.rs for the protocol and the policy.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::allow::{special, split_host_port, AllowList, Match, Target};
use super::{Connection, Verdict};

/// Connections one sandbox may have through the proxy at once: each costs the daemon two
/// fds. More wait in the listener's backlog.
const MAX_CONNECTIONS: usize = 8;

/// The largest request head the proxy reads.
const MAX_HEAD: usize = 16 << 10;

/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long resolving and connecting to a target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long relays may go on finishing once the sandbox is gone.
const FINISH_GRACE: Duration = Duration::from_millis(250);

/// A running proxy for one sandbox. Dropping it stops it too (without waiting).
pub struct Proxy {
    task: JoinHandle<()>,
    stop: oneshot::Sender<()>,
    log: Log,
}

type Log = Arc<Mutex<Vec<Arc<Mutex<Connection>>>>>;

impl Proxy {
    /// Serves `listener` (a listening TCP socket, already bound in the sandbox's namespace)
    /// with `allow`; `function` and `id` name the invocation in the log.
    pub fn start(listener: OwnedFd, allow: AllowList, function: &str, id: &str) -> std::io::Result<Proxy> {
        let std_listener = std::net::TcpListener::from(listener);
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        let log: Log = Arc::default();
        let ctx = Arc::new(Ctx { allow, function: function.to_owned(), id: id.to_owned() });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, ctx, log.clone(), stopped));
        Ok(Proxy { task, stop, log })
    }

    /// Stops accepting and closes the listener, gives the relays `FINISH_GRACE` to end on
    /// their own (a sandbox that is gone closed its side), ends the rest, and returns every
    /// connection as recorded.
    pub async fn finish(self) -> Vec<Connection> {
        let _ = self.stop.send(());
        let _ = self.task.await;
        let log = self.log.lock().expect("proxy log lock is never poisoned");
        log.iter().map(|c| c.lock().expect("connection lock is never poisoned").clone()).collect()
    }
}

struct Ctx {
    allow: AllowList,
    function: String,
    id: String,
}

/// Accepts until told to stop (or the `Proxy` is dropped), then winds the relays down.
async fn serve(listener: TcpListener, ctx: Arc<Ctx>, log: Log, mut stop: oneshot::Receiver<()>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut relays = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            a = async {
                let slot = slots.clone().acquire_owned().await;
                (slot, listener.accept().await)
            } => a,
        };
        let stream = match accepted {
            (Ok(slot), Ok((stream, _))) => (slot, stream),
            (_, Err(e)) => {
                tracing::warn!(function = %ctx.function, invocation_id = %ctx.id, "egress proxy accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            (Err(_), _) => break,
        };
        let (slot, stream) = stream;
        let conn = Arc::new(Mutex::new(Connection {
            host: String::new(),
            port: 0,
            up: 0,
            down: 0,
            verdict: Verdict::Failed("bad-request"),
        }));
        log.lock().expect("proxy log lock is never poisoned").push(conn.clone());
        let ctx = ctx.clone();
        relays.spawn(async move {
            let _slot = slot;
            handle(stream, &ctx, &conn).await;
        });
        while relays.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = tokio::time::timeout(FINISH_GRACE, async { while relays.join_next().await.is_some() {} }).await;
    relays.abort_all();
    while relays.join_next().await.is_some() {}
}

/// A request the proxy understood.
struct Request {
    connect: bool,
    host: String,
    port: u16,
    /// Plain HTTP: the head to send upstream (origin-form, `Connection: close`).
    head: Vec<u8>,
}

async fn handle(mut client: TcpStream, ctx: &Ctx, conn: &Mutex<Connection>) {
    let set = |f: &dyn Fn(&mut Connection)| f(&mut conn.lock().expect("connection lock is never poisoned"));
    let mut buf = Vec::with_capacity(2048);
    let head_len = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client, &mut buf)).await {
        Ok(Some(n)) => n,
        _ => {
            let _ = answer(&mut client, 400, "the proxy could not read a request head").await;
            return;
        }
    };
    let req = match parse_request(&buf[..head_len]) {
        Ok(r) => r,
        Err(why) => {
            let _ = answer(&mut client, 400, why).await;
            return;
        }
    };
    let rest = buf[head_len..].to_vec();
    set(&|c| {
        c.host = req.host.clone();
        c.port = req.port;
    });
    let refuse = |why: &'static str| {
        tracing::info!(
            function = %ctx.function,
            invocation_id = %ctx.id,
            "egress refused {}:{} ({why})",
            req.host,
            req.port
        );
        set(&|c| c.verdict = Verdict::Refused(why));
    };
    let Some(target) = Target::parse(&req.host) else {
        let _ = answer(&mut client, 400, "the request names no valid host").await;
        return;
    };
    let matched = ctx.allow.check(&target, req.port);
    if matched == Match::No {
        refuse("not-allowed");
        let _ = answer(&mut client, 403, "this host and port are not on the function's egress allow list").await;
        return;
    }
    let addrs: Vec<SocketAddr> = match &target {
        Target::Ip(ip) => vec![SocketAddr::new(*ip, req.port)],
        Target::Name(name) => {
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((name.as_str(), req.port))).await {
                Ok(Ok(a)) => a.collect(),
                _ => Vec::new(),
            }
        }
    };
    if addrs.is_empty() {
        set(&|c| c.verdict = Verdict::Failed("resolve"));
        let _ = answer(&mut client, 502, "the host name could not be resolved").await;
        return;
    }
    // Every address is checked, not just the first: a name that resolves to one public and
    // one private address must not reach the private one on a retry.
    if let Some((class, _)) = addrs.iter().find_map(|a| refused_class(a.ip(), matched)) {
        refuse(class);
        let _ = answer(&mut client, 403, "the host resolves to an address the function may not reach").await;
        return;
    }
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addrs[..])).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => {
            set(&|c| c.verdict = Verdict::Failed("connect"));
            let _ = answer(&mut client, 502, "the target refused or could not be reached").await;
            return;
        }
        Err(_) => {
            set(&|c| c.verdict = Verdict::Failed("timeout"));
            let _ = answer(&mut client, 504, "connecting to the target timed out").await;
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    set(&|c| c.verdict = Verdict::Ok);
    tracing::debug!(function = %ctx.function, invocation_id = %ctx.id, "egress to {}:{}", req.host, req.port);
    let mut upstream = upstream;
    let first = if req.connect {
        if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_err() {
            return;
        }
        rest
    } else {
        let mut first = req.head;
        first.extend_from_slice(&rest);
        first
    };
    if !first.is_empty() {
        if upstream.write_all(&first).await.is_err() {
            set(&|c| c.verdict = Verdict::Failed("connect"));
            return;
        }
        set(&|c| c.up += first.len() as u64);
    }
    relay(client, upstream, conn).await;
}

/// Whether `ip` must be refused for a request that matched as `matched`: its class.
fn refused_class(ip: IpAddr, matched: Match) -> Option<(&'static str, bool)> {
    special(ip).filter(|&(_, never)| never || matched != Match::Named)
}

/// Copies both ways until both are done, counting bytes as they go.
async fn relay(client: TcpStream, upstream: TcpStream, conn: &Mutex<Connection>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 << 10];
        while let Ok(n @ 1..) = cr.read(&mut buf).await {
            if uw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            conn.lock().expect("connection lock is never poisoned").up += n as u64;
        }
        let _ = uw.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 16 << 10];
        while let Ok(n @ 1..) = ur.read(&mut buf).await {
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            conn.lock().expect("connection lock is never poisoned").down += n as u64;
        }
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

/// Reads until the end of the head; returns its length (body bytes may follow in `buf`).
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(end + 4);
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1) and the proxy's own, dropped on the way up.
const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "upgrade"];

fn parse_request(head: &[u8]) -> Result<Request, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "the request head is not text")?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the request line is not METHOD TARGET VERSION");
    };
    if !version.starts_with("HTTP/1.") {
        return Err("the proxy speaks HTTP/1.x");
    }
    if method == "CONNECT" {
        let (host, port) = split_host_port(target).ok_or("CONNECT needs host:port")?;
        let port = port.parse::<u16>().map_err(|_| "CONNECT needs host:port")?;
        return Ok(Request { connect: true, host: host.to_owned(), port, head: Vec::new() });
    }
    let rest = target
        .strip_prefix("http://")
        .ok_or("a proxied request needs an absolute http:// URL (use CONNECT for https)")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') { format!("/{path}") } else { path.to_owned() };
    if authority.contains('@') {
        return Err("user information in the URL is not passed on");
    }
    let (host, port) = match split_host_port(authority) {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| "the URL's port is not a number")?),
        None => (authority, 80),
    };
    let mut out = format!("{method} {path} {version}\r\n");
    let mut has_host = false;
    for l in lines.filter(|l| !l.is_empty()) {
        let name = l.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        has_host |= name == "host";
        out.push_str(l);
        out.push_str("\r\n");
    }
    if !has_host {
        out.push_str(&format!("Host: {authority}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    Ok(Request { connect: false, host: host.to_owned(), port, head: out.into_bytes() })
}

/// Answers the client with `status` and a one-line reason, then closes.
async fn answer(client: &mut TcpStream, status: u16, why: &str) -> std::io::Result<()> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        502 => "Bad Gateway",
        _ => "Gateway Timeout",
    };
    let body = format!("faas egress proxy: {why}\n");
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(text.as_bytes()).await?;
    client.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_as_proxies_read_them() {
        let r = parse_request(b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n").unwrap();
        assert!(r.connect);
        assert_eq!((r.host.as_str(), r.port), ("api.example.com", 443));
        let r = parse_request(b"CONNECT [::1]:8443 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("[::1]", 8443));
        let r = parse_request(
            b"GET http://127.0.0.1:8080/a?b=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nProxy-Connection: keep-alive\r\nConnection: keep-alive\r\nX-A: 1\r\n\r\n",
        )
        .unwrap();
        assert!(!r.connect);
        assert_eq!((r.host.as_str(), r.port), ("127.0.0.1", 8080));
        assert_eq!(
            String::from_utf8(r.head).unwrap(),
            "GET /a?b=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-A: 1\r\nConnection: close\r\n\r\n"
        );
        let r = parse_request(b"GET http://example.com?q HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(r.port, 80);
        assert_eq!(
            String::from_utf8(r.head).unwrap(),
            "GET /?q HTTP/1.0\r\nHost: example.com\r\nConnection: close\r\n\r\n"
        );
        assert!(parse_request(b"GET /local HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request(b"GET https://x/ HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request(b"GET http://u:p@x/ HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request(b"CONNECT x HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    fn named_entries_reach_special_addresses_and_wildcards_do_not() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(refused_class(lo, Match::Named), None);
        assert_eq!(refused_class(lo, Match::Wildcard), Some(("loopback", false)));
        assert_eq!(refused_class("0.0.0.0".parse().unwrap(), Match::Named), Some(("unspecified", true)));
        assert_eq!(refused_class("93.184.216.34".parse().unwrap(), Match::Wildcard), None);
    }
}
