//! Behind a load balancer: `/_/ready` (200 while serving, 503 while draining or at capacity),
//! and the real client address from the PROXY protocol (v1, v2) and `X-Forwarded-For`,
//! believed from trusted peers only. The "balancer" is a raw TCP client bound to 127.0.0.2
//! (all of 127/8 is loopback), an untrusted client one bound to 127.0.0.3; both connect to
//! the daemon on 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use common::{parse_response, require_root, sh, HostDir, Options, RawResponse, READ_TIMEOUT};

/// The trusted proxy's address.
const BALANCER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Someone else's.
const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// A function that answers `REMOTE_ADDR|HTTP_X_FORWARDED_FOR`.
fn who() -> String {
    sh("printf 'Content-Type: text/plain\\n\\n%s|%s' \"$REMOTE_ADDR\" \"$HTTP_X_FORWARDED_FOR\"")
}

/// A TCP connection to 127.0.0.1:`port` from `from` (bound before connecting).
fn connect_from(from: Ipv4Addr, port: u16) -> TcpStream {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd: OwnedFd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(SocketAddrV4::new(from, 0))).unwrap();
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)))
        .unwrap_or_else(|e| panic!("connect from {from} to 127.0.0.1:{port}: {e}"));
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s
}

/// Sends `bytes` and reads until the daemon closes; the raw bytes.
fn exchange(mut s: TcpStream, bytes: &[u8]) -> Vec<u8> {
    s.write_all(bytes).unwrap();
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("read failed ({e}) after {:?}", String::from_utf8_lossy(&raw)),
    }
    raw
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

fn with_header(header: &[u8], request: &[u8]) -> Vec<u8> {
    [header, request].concat()
}

/// A v2 PROXY header: PROXY (`command` 1) or LOCAL (0), TCP over IPv4 (0x11) or IPv6 (0x21).
fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn v2_tcp4(src: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut p = src.octets().to_vec();
    p.extend_from_slice(&[127, 0, 0, 1]);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    v2(1, 0x11, &p)
}

fn v2_tcp6(src: std::net::Ipv6Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut p = src.octets().to_vec();
    p.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    v2(1, 0x21, &p)
}

/// The body of a single whole 200 response.
fn ok_body(raw: &[u8]) -> String {
    let r: RawResponse = parse_response(raw);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(raw));
    r.text()
}

fn sigterm(pid: u32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
}

fn wait_for(what: &str, d: &common::Daemon, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < until, "{what} within 20 s:\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ready_answers_on_every_listener_and_health_stays_liveness() {
    let d = common::Daemon::start(&[]);
    for r in [d.get("/_/ready"), d.admin_get("/_/ready")] {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["status"], "ready");
    }
    assert_eq!(d.get("/_/health").status, 200);
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn ready_says_503_from_sigterm_while_the_daemon_still_serves_for_the_drain_delay() {
    require_root();
    let mut d = common::Daemon::start_with(&[("who", &who())], "drain_delay = \"60s\"");
    assert_eq!(d.get("/_/ready").status, 200);
    sigterm(d.pid());
    wait_for("/_/ready answering 503", &d, || d.get("/_/ready").status == 503);
    let r = d.get("/_/ready");
    assert_eq!((r.status, r.problem().as_str()), (503, "draining"));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(d.admin_get("/_/ready").status, 503, "every listener says so");
    // Still taking work: new connections, health, functions.
    assert_eq!(d.get("/_/health").status, 200, "liveness stays 200 while draining");
    let r = d.get("/who");
    assert_eq!((r.status, r.text().as_str()), (200, "127.0.0.1|"), "a request during the drain delay");
    assert!(d.logs().contains("stopping (SIGTERM): /_/ready answers 503"), "{}", d.logs());
    assert_eq!(d.child.try_wait().unwrap(), None, "exited inside the 60 s drain delay:\n{}", d.logs());
    // A second SIGTERM ends the delay: the daemon stops accepting and exits.
    sigterm(d.pid());
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0), "{}", d.logs());
    assert!(d.messages.iter().any(|m| m == "STOPPING=1"), "{:?}", d.messages);
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn ready_says_503_while_every_sandbox_slot_is_taken() {
    require_root();
    let marker = HostDir::new();
    marker.set("hold");
    let f = common::sh_with(
        &format!("{}; printf 'Content-Type: text/plain\\n\\ndone'", marker.sh_wait_while("hold")),
        &format!("[limits]\ntimeout = \"30s\"\n{}", marker.sandbox_toml()),
    );
    let d = common::Daemon::start_with(&[("hold", &f)], "max_concurrency = 1");
    assert_eq!(d.get("/_/ready").status, 200);
    let url = d.url("/hold");
    let inflight = std::thread::spawn(move || common::request_to(&url, "GET", b"", &[]));
    d.wait_sandboxes(1);
    let r = d.get("/_/ready");
    assert_eq!((r.status, r.problem().as_str()), (503, "overloaded"), "{}", r.text());
    assert_eq!(d.get("/_/health").status, 200);
    marker.clear("hold");
    let r = inflight.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "done"));
    // The slot is given back once the sandbox is torn down, after the response.
    wait_for("/_/ready back at 200", &d, || d.get("/_/ready").status == 200);
}

/// A daemon whose fd 3 is the `lb` listener, which expects PROXY headers from 127.0.0.2.
fn proxied_daemon(functions: &[(&str, &str)], extra: &str) -> common::Daemon {
    let config = format!("{extra}\n[proxy]\ntrusted = [\"127.0.0.2\"]\nprotocol_listeners = [\"lb\"]\n");
    common::Daemon::start_opts(
        functions,
        Options { config_extra: &config, env: &[("LISTEN_FDNAMES", "lb:admin")], ..Options::default() },
    )
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn proxy_protocol_v1_and_v2_give_the_client_address_to_the_function_and_the_report() {
    require_root();
    let d = proxied_daemon(&[("who", &who())], "");
    let port = d.port;
    assert!(d.logs().contains("the lb listener expects a PROXY protocol header"), "{}", d.logs());

    let v1 = format!("PROXY TCP4 192.0.2.9 127.0.0.1 5555 {port}\r\n");
    let raw = exchange(connect_from(BALANCER, port), &with_header(v1.as_bytes(), &get("/who")));
    assert_eq!(ok_body(&raw), "192.0.2.9|");
    let id = parse_response(&raw).head.lines().find_map(|l| l.strip_prefix("faas-invocation-id: ")).unwrap().to_owned();
    let report = d.report_line(id.trim());
    assert!(report.contains(" client=192.0.2.9 ") && report.contains(" trigger=http "), "{report}");

    let raw = exchange(
        connect_from(BALANCER, port),
        &with_header(&v2_tcp4(Ipv4Addr::new(198, 51, 100, 4), 1, port), &get("/who")),
    );
    assert_eq!(ok_body(&raw), "198.51.100.4|");
    let raw = exchange(
        connect_from(BALANCER, port),
        &with_header(&v2_tcp6("2001:db8::7".parse().unwrap(), 1, port), &get("/who")),
    );
    assert_eq!(ok_body(&raw), "2001:db8::7|");
    // The proxy's own connection (LOCAL, and v1 UNKNOWN): the proxy is the client.
    let raw = exchange(connect_from(BALANCER, port), &with_header(&v2(0, 0, &[]), &get("/who")));
    assert_eq!(ok_body(&raw), "127.0.0.2|");
    let raw = exchange(connect_from(BALANCER, port), &with_header(b"PROXY UNKNOWN\r\n", &get("/_/ready")));
    assert_eq!(parse_response(&raw).status, 200, "a health check through the PROXY listener");

    // Keep-alive: both requests of one connection carry the header's client.
    let first = b"GET /who HTTP/1.1\r\nHost: x\r\n\r\n";
    let pipelined = [v1.as_bytes(), first, &get("/who")].concat();
    let raw = String::from_utf8_lossy(&exchange(connect_from(BALANCER, port), &pipelined)).into_owned();
    assert_eq!(raw.matches("HTTP/1.1 200").count(), 2, "{raw}");
    assert_eq!(raw.matches("192.0.2.9|").count(), 2, "{raw}");
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn proxy_protocol_is_refused_from_strangers_and_required_from_the_proxy() {
    require_root();
    let d = proxied_daemon(&[("who", &who())], "");
    let port = d.port;
    // A stranger that claims to be someone else: 403, whatever it sends.
    let v1 = format!("PROXY TCP4 192.0.2.9 127.0.0.1 5555 {port}\r\n");
    let raw = exchange(connect_from(STRANGER, port), &with_header(v1.as_bytes(), &get("/who")));
    let r = parse_response(&raw);
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&raw));
    assert!(r.text().contains("urn:faas:problem:untrusted-peer"), "{}", r.text());
    let raw = exchange(connect_from(STRANGER, port), &get("/who"));
    assert_eq!(parse_response(&raw).status, 403);
    // The proxy without a header, and with a broken one: closed, no answer, no invocation.
    for (bad, why) in [
        (get("/who"), "the connection does not start with a PROXY protocol header"),
        (with_header(b"PROXY TCP4 192.0.2.9 127.0.0.1 01 2\r\n", &get("/who")), "the v1 header is not"),
        (with_header(&v2(3, 0x11, &[0; 12]), &get("/who")), "the v2 header has an unknown command"),
    ] {
        let raw = exchange(connect_from(BALANCER, port), &bad);
        assert!(raw.is_empty(), "answered a connection without a valid header: {:?}", String::from_utf8_lossy(&raw));
        let want = format!("closed a connection from the proxy 127.0.0.2: {why}");
        wait_for(&want, &d, || d.logs().contains(&want));
    }
    // A proxy that sends nothing is closed after the header timeout (5 s), not kept.
    let mut idle = connect_from(BALANCER, port);
    let mut buf = [0u8; 16];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "an idle proxy connection got bytes");
    // Logged just after the close.
    wait_for("the timeout's log line", &d, || d.logs().contains("127.0.0.2: no PROXY header within 5s"));
    assert!(!d.logs().contains("REPORT "), "nothing ran:\n{}", d.logs());
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn the_per_client_connection_cap_counts_the_proxied_client() {
    require_root();
    let d = proxied_daemon(&[("who", &who())], "max_connections = 100\nmax_connections_per_client = 1");
    let port = d.port;
    let header = |ip: Ipv4Addr| v2_tcp4(ip, 1000, port);
    let a = Ipv4Addr::new(192, 0, 2, 1);
    // One open connection for client A (a keep-alive request answered, connection kept).
    let mut held = connect_from(BALANCER, port);
    held.write_all(&with_header(&header(a), b"GET /_/ready HTTP/1.1\r\nHost: x\r\n\r\n")).unwrap();
    let mut buf = [0u8; 512];
    let n = held.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    // A second one for A is over A's share; B, through the same balancer, is not.
    let raw = exchange(connect_from(BALANCER, port), &with_header(&header(a), &get("/who")));
    let r = parse_response(&raw);
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&raw));
    assert!(r.text().contains("client-connection-limit"), "{}", r.text());
    let raw = exchange(connect_from(BALANCER, port), &with_header(&header(Ipv4Addr::new(192, 0, 2, 2)), &get("/who")));
    assert_eq!(ok_body(&raw), "192.0.2.2|");
    drop(held);
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn x_forwarded_for_counts_from_trusted_peers_only() {
    require_root();
    let d = common::Daemon::start_with(
        &[("who", &who())],
        "max_connections = 100\nmax_connections_per_client = 1\n[proxy]\ntrusted = [\"127.0.0.2\"]",
    );
    let port = d.port;
    let request = |xff: &str| {
        format!("GET /who HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {xff}\r\nConnection: close\r\n\r\n").into_bytes()
    };
    // The balancer appends the client it saw; a client-sent lie to its left is not read.
    let raw = exchange(connect_from(BALANCER, port), &request("6.6.6.6, 198.51.100.7"));
    assert_eq!(ok_body(&raw), "198.51.100.7|6.6.6.6, 198.51.100.7");
    let id = parse_response(&raw).head.lines().find_map(|l| l.strip_prefix("faas-invocation-id: ")).unwrap().to_owned();
    assert!(d.report_line(id.trim()).contains(" client=198.51.100.7 "), "{}", d.report_line(id.trim()));
    // A stranger's header is the function's to read, not REMOTE_ADDR.
    let raw = exchange(connect_from(STRANGER, port), &request("198.51.100.7"));
    assert_eq!(ok_body(&raw), "127.0.0.3|198.51.100.7");
    // The balancer's own connections are not held to one client's share of connections: two
    // open at once from it are served, where a second one from the stranger is refused.
    for (from, second) in [(BALANCER, 200), (STRANGER, 429)] {
        let mut first = connect_from(from, port);
        first.write_all(b"GET /_/ready HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = first.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));
        let raw = exchange(connect_from(from, port), &get("/_/ready"));
        assert_eq!(parse_response(&raw).status, second, "second connection from {from}");
    }
}
