//! Admission: how much work the daemon takes on at once, so that it never runs out of file
//! descriptors and no client can hold capacity it does not use.
//!
//! Every fd the daemon opens is counted against `RLIMIT_NOFILE` ahead of time:
//! - a client connection costs one (the socket); connections are capped globally and per
//!   client address (an IPv6 /64 counts as one address), below what the limit leaves;
//! - a sandbox costs at most `FDS_PER_SANDBOX` while it is set up and runs; that many are
//!   kept in reserve for every sandbox slot, and a request enters the sandbox path only with
//!   a slot, so set-up never meets `EMFILE` half-way (a half-built sandbox is how the seccomp
//!   listener got lost in the security review's finding 1);
//! - a connection past a cap is answered (503 or 429, problem+json) and closed on one of a
//!   few `refusal` slots, so even refusing costs a bounded number of fds;
//! - the rest is headroom: the admin listener's connections, function versions loaded after
//!   start (a template namespace and the Landlock rule paths each), journald.
//!
//! Request bodies are read before any concurrency permit is taken (a client that trickles
//! its body must not keep a function at its limit), under a bound of their own.
//!
//! Behind a balancer (`proxy.rs`), "the client address" is the real client's wherever we know
//! it when the cap is taken. On a PROXY protocol listener the header is read before the
//! connection is admitted, so the connection caps count the proxied client. `X-Forwarded-For`
//! arrives with each request, after the connection was admitted: a trusted proxy's own
//! connections (`ClientKey::Balancer`) count against the global cap only (all its clients
//! share its address, so a per-client cap would cap the balancer), and the body caps, taken
//! per request, count the forwarded client.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::config::Config;

/// The most fds one sandbox holds in the daemon at a time. Today 15 at the peak of set-up:
/// stdin, stdout, stderr and error pipes (8), the seccomp socketpair (2), the Landlock
/// ruleset, the cgroup directory, the pidfd and its clone for the event loop, its network
/// namespace; then the seccomp listener replaces the child's halves. A namespace back in the
/// pool is one a slot held before (the pool only grows when every namespace is in use), so
/// it stays within its slot's budget. Raise this with anything set-up opens.
pub const FDS_PER_SANDBOX: usize = 16;

/// Connections the admin listener may have open at once (a root-only unix socket, so no
/// per-client share): its own budget, so a flood on the public port never locks the
/// operator out of `/_/metrics`.
pub const ADMIN_CONNECTIONS: usize = 16;

/// What the daemon takes on at once, derived once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// Open client connections (public listeners).
    pub connections: usize,
    /// Open connections from one client address.
    pub per_client: usize,
    /// Request bodies being received.
    pub bodies: usize,
    /// Request bodies being received from one client address.
    pub bodies_per_client: usize,
    /// Sandboxes at once: `max_concurrency`, or fewer if the fd limit cannot hold them.
    pub sandboxes: usize,
    /// Over-cap connections being answered and closed at once.
    pub refusals: usize,
    /// The open-files limit this was derived from.
    pub nofile: usize,
    /// Fds open when it was derived (listeners, journald, loaded functions).
    pub open: usize,
}

impl Capacity {
    /// Splits the open-files limit `nofile`, of which `open` are in use now, between
    /// connections and sandbox slots. Unset settings take these defaults: connections and
    /// sandbox fds get half each of what is left after headroom (sandboxes no more than
    /// `max_concurrency` need), a client a quarter of the connections, bodies
    /// `max_concurrency`.
    pub fn derive(config: &Config, nofile: u64, open: usize) -> Result<Capacity, CapacityError> {
        // Above a few million nothing here changes; also keeps the sums far from overflow.
        let limit = usize::try_from(nofile).unwrap_or(usize::MAX).min(1 << 24);
        let refusals = (limit / 32).clamp(8, 512);
        let headroom = 32 + limit / 64;
        let spare = refusals + ADMIN_CONNECTIONS + headroom;
        let avail = limit.saturating_sub(open + spare);
        let too_low = |why| CapacityError { limit, open, spare, why };
        let (connections, sandboxes) = match config.max_connections {
            Some(c) => {
                let sandboxes = (avail.saturating_sub(c) / FDS_PER_SANDBOX).min(config.max_concurrency);
                if sandboxes == 0 {
                    return Err(too_low(TooLow::NoSandbox { max_connections: c }));
                }
                (c, sandboxes)
            }
            None => {
                let sandboxes = (avail / 2 / FDS_PER_SANDBOX).min(config.max_concurrency);
                let connections = avail - sandboxes * FDS_PER_SANDBOX;
                if sandboxes == 0 || connections == 0 {
                    return Err(too_low(TooLow::NotOneEach));
                }
                (connections, sandboxes)
            }
        };
        let per_client = config.max_connections_per_client.unwrap_or((connections / 4).max(1)).min(connections);
        let bodies = config.max_bodies.unwrap_or(config.max_concurrency);
        // A client's share of bodies is its share of connections, rounded up.
        let bodies_per_client = (bodies * per_client).div_ceil(connections).clamp(1, bodies);
        Ok(Capacity { connections, per_client, bodies, bodies_per_client, sandboxes, refusals, nofile: limit, open })
    }
}

/// The open-files limit cannot hold what the daemon needs at the least.
#[derive(Debug, thiserror::Error)]
#[error("the open-files limit {limit} is too low: {why} ({open} fds open now, {spare} kept for refusals, the admin socket and new function versions, {FDS_PER_SANDBOX} per sandbox)\nhint: raise LimitNOFILE= (faas.service sets 65536), or lower max_connections")]
pub struct CapacityError {
    limit: usize,
    open: usize,
    spare: usize,
    why: TooLow,
}

/// What the limit cannot hold.
#[derive(Debug)]
enum TooLow {
    /// What `max_connections` leaves is less than one sandbox's fds.
    NoSandbox { max_connections: usize },
    /// Half of what is left does not hold one sandbox, or the other half one connection.
    NotOneEach,
}

impl fmt::Display for TooLow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TooLow::NoSandbox { max_connections } => {
                write!(f, "max_connections = {max_connections} leaves no fds for a sandbox")
            }
            TooLow::NotOneEach => f.write_str("it does not hold one sandbox and one connection"),
        }
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "capacity: {} connections ({} per client address), {} request bodies in flight ({} per client address), {} sandboxes at once, {} refusals at once; open-files limit {}, {} open at start, {} kept per sandbox",
            self.connections, self.per_client, self.bodies, self.bodies_per_client, self.sandboxes, self.refusals, self.nofile, self.open, FDS_PER_SANDBOX
        )
    }
}

/// The fds this process has open now (once at start: it reads `/proc/self/fd`).
pub fn open_fds() -> std::io::Result<usize> {
    // The directory handle itself is one of the entries.
    Ok(std::fs::read_dir("/proc/self/fd")?.count().saturating_sub(1))
}

/// Who a connection counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An IPv4 address (IPv4-mapped IPv6 included).
    V4([u8; 4]),
    /// The /64 of an IPv6 address: one host usually has all of it.
    V6([u8; 8]),
    /// A unix socket peer.
    Local,
    /// A trusted proxy's own connection, whose requests name their clients in
    /// `X-Forwarded-For`: held to the global connection cap only.
    Balancer,
}

impl ClientKey {
    /// The key of a TCP peer.
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    ClientKey::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

/// Why a connection or body was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every connection slot is taken (503).
    Connections,
    /// This client address has its share of connections (429).
    ClientConnections,
    /// Every body slot is taken (503).
    Bodies,
    /// This client address has its share of bodies in flight (429).
    ClientBodies,
    /// A PROXY protocol listener was reached by a peer that is not a trusted proxy (403).
    UntrustedPeer,
}

impl Refusal {
    /// HTTP status, problem type, title and detail.
    pub fn problem(self) -> (http::StatusCode, &'static str, &'static str, &'static str) {
        use http::StatusCode as S;
        match self {
            Refusal::Connections => (
                S::SERVICE_UNAVAILABLE,
                "connection-limit",
                "too many connections",
                "the server has as many open connections as it takes",
            ),
            Refusal::ClientConnections => (
                S::TOO_MANY_REQUESTS,
                "client-connection-limit",
                "too many connections",
                "this client address has as many open connections as one client may",
            ),
            Refusal::Bodies => (
                S::SERVICE_UNAVAILABLE,
                "upload-limit",
                "too many uploads",
                "the server is receiving as many request bodies as it takes",
            ),
            Refusal::ClientBodies => (
                S::TOO_MANY_REQUESTS,
                "client-upload-limit",
                "too many uploads",
                "this client address is sending as many request bodies as one client may",
            ),
            Refusal::UntrustedPeer => (
                S::FORBIDDEN,
                "untrusted-peer",
                "forbidden",
                "this listener takes connections from the configured proxies only",
            ),
        }
    }
}

#[derive(Default)]
struct Counts {
    connections: usize,
    bodies: usize,
}

#[derive(Default)]
struct State {
    total: Counts,
    clients: HashMap<ClientKey, Counts>,
}

/// Connection and body counts of one listener kind, global and per client address.
pub struct Gate {
    connections: usize,
    per_client: usize,
    bodies: usize,
    bodies_per_client: usize,
    state: Mutex<State>,
}

/// A connection slot, given back on drop.
pub struct ConnectionSlot {
    gate: Arc<Gate>,
    key: ClientKey,
}

/// A body slot, given back on drop.
pub struct BodySlot {
    gate: Arc<Gate>,
    key: ClientKey,
}

impl Gate {
    /// The gate of the public listeners.
    pub fn public(c: &Capacity) -> Arc<Gate> {
        Arc::new(Gate {
            connections: c.connections,
            per_client: c.per_client,
            bodies: c.bodies,
            bodies_per_client: c.bodies_per_client,
            state: Mutex::default(),
        })
    }

    /// The admin listener's: its own few connections, bodies shared out as on the public one.
    pub fn admin(c: &Capacity) -> Arc<Gate> {
        Arc::new(Gate {
            connections: ADMIN_CONNECTIONS,
            per_client: ADMIN_CONNECTIONS,
            bodies: c.bodies,
            bodies_per_client: c.bodies,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding it: plain arithmetic and map updates.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a connection slot for `key`, or says which cap is full.
    pub fn admit(self: &Arc<Self>, key: ClientKey) -> Result<ConnectionSlot, Refusal> {
        let mut s = self.lock();
        if s.total.connections >= self.connections {
            return Err(Refusal::Connections);
        }
        let client = s.clients.entry(key).or_default();
        if client.connections >= self.per_client && key != ClientKey::Balancer {
            return Err(Refusal::ClientConnections);
        }
        client.connections += 1;
        s.total.connections += 1;
        Ok(ConnectionSlot { gate: self.clone(), key })
    }

    /// Takes a body slot for `key`, or says which cap is full.
    pub fn start_body(self: &Arc<Self>, key: ClientKey) -> Result<BodySlot, Refusal> {
        let mut s = self.lock();
        if s.total.bodies >= self.bodies {
            return Err(Refusal::Bodies);
        }
        let client = s.clients.entry(key).or_default();
        if client.bodies >= self.bodies_per_client {
            return Err(Refusal::ClientBodies);
        }
        client.bodies += 1;
        s.total.bodies += 1;
        Ok(BodySlot { gate: self.clone(), key })
    }

    fn release(&self, key: ClientKey, body: bool) {
        fn pick(c: &mut Counts, body: bool) -> &mut usize {
            if body {
                &mut c.bodies
            } else {
                &mut c.connections
            }
        }
        let mut s = self.lock();
        *pick(&mut s.total, body) -= 1;
        if let Some(client) = s.clients.get_mut(&key) {
            *pick(client, body) -= 1;
            if client.connections == 0 && client.bodies == 0 {
                s.clients.remove(&key);
            }
        }
    }

    /// Open connections now (for tests and the log).
    #[cfg(test)]
    fn open_connections(&self) -> usize {
        self.lock().total.connections
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.gate.release(self.key, false);
    }
}

impl Drop for BodySlot {
    fn drop(&mut self) {
        self.gate.release(self.key, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::parse(std::path::Path::new("/x/faas.toml"), extra).unwrap()
    }

    #[test]
    fn defaults_under_the_service_limit() {
        let c = Capacity::derive(&config(""), 65536, 40).unwrap();
        assert_eq!(c.sandboxes, 256, "max_concurrency fits");
        assert_eq!(c.refusals, 512);
        // 65536 - 40 open - (512 + 16 + 32 + 1024) spare - 256 * 16 reserved.
        assert_eq!(c.connections, 65536 - 40 - 1584 - 4096);
        assert_eq!(c.per_client, c.connections / 4);
        assert_eq!(c.bodies, 256);
        assert_eq!(c.bodies_per_client, 64);
    }

    #[test]
    fn a_low_limit_lowers_concurrency_not_safety() {
        let c = Capacity::derive(&config(""), 512, 25).unwrap();
        // 512 - 25 - (16 + 16 + 40) = 415 left: half for sandboxes, at 16 fds each.
        assert_eq!(c.sandboxes, 12);
        assert_eq!(c.connections, 415 - 12 * 16);
        assert_eq!(c.per_client, 55);
        let used = c.open + c.connections + c.sandboxes * FDS_PER_SANDBOX + c.refusals + ADMIN_CONNECTIONS;
        assert!(used < 512, "everything at once fits the limit: {used}");
    }

    #[test]
    fn settings_win_and_impossible_ones_are_refused() {
        let c = Capacity::derive(
            &config("max_connections = 1000\nmax_connections_per_client = 1000\nmax_bodies = 10\n"),
            65536,
            40,
        )
        .unwrap();
        assert_eq!(
            (c.connections, c.per_client, c.bodies, c.bodies_per_client, c.sandboxes),
            (1000, 1000, 10, 10, 256)
        );
        let err = Capacity::derive(&config("max_connections = 60000\n"), 20000, 40).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "the open-files limit 20000 is too low: max_connections = 60000 leaves no fds for a sandbox"
            ),
            "{err}"
        );
        assert!(err.contains("\nhint: raise LimitNOFILE="), "{err}");
        assert!(Capacity::derive(&config(""), 64, 20).is_err());
    }

    #[test]
    fn caps_are_global_and_per_client() {
        let c = Capacity {
            connections: 3,
            per_client: 2,
            bodies: 2,
            bodies_per_client: 1,
            sandboxes: 1,
            refusals: 1,
            nofile: 0,
            open: 0,
        };
        let gate = Gate::public(&c);
        let a = ClientKey::of("127.0.0.1".parse().unwrap());
        let b = ClientKey::of("::ffff:127.0.0.2".parse().unwrap());
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).err(), Some(Refusal::ClientConnections));
        let _b1 = gate.admit(b).unwrap();
        assert_eq!(gate.admit(b).err(), Some(Refusal::Connections));
        drop(a1);
        assert_eq!(gate.open_connections(), 2);
        let _b2 = gate.admit(b).unwrap();
        let body = gate.start_body(a).unwrap();
        assert_eq!(gate.start_body(a).err(), Some(Refusal::ClientBodies));
        let _other = gate.start_body(b).unwrap();
        assert_eq!(gate.start_body(ClientKey::Local).err(), Some(Refusal::Bodies));
        drop(body);
        assert!(gate.start_body(a).is_ok());
    }

    #[test]
    fn a_balancer_is_held_to_the_global_cap_only() {
        let c = Capacity {
            connections: 3,
            per_client: 1,
            bodies: 2,
            bodies_per_client: 1,
            sandboxes: 1,
            refusals: 1,
            nofile: 0,
            open: 0,
        };
        let gate = Gate::public(&c);
        let held: Vec<_> = (0..3).map(|_| gate.admit(ClientKey::Balancer).unwrap()).collect();
        assert_eq!(gate.admit(ClientKey::Balancer).err(), Some(Refusal::Connections));
        drop(held);
        let _one = gate.admit(ClientKey::Balancer).unwrap();
        let a = ClientKey::of("192.0.2.1".parse().unwrap());
        let _a = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).err(), Some(Refusal::ClientConnections), "everyone else keeps the per-client cap");
    }

    #[test]
    fn an_ipv6_slash_64_is_one_client() {
        let a = ClientKey::of("2001:db8:1:2::1".parse().unwrap());
        let b = ClientKey::of("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = ClientKey::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(ClientKey::of("::ffff:10.0.0.1".parse().unwrap()), ClientKey::of("10.0.0.1".parse().unwrap()));
    }
}
