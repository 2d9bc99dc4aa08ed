//! The way out of a `network = "egress"` sandbox: an HTTP proxy the daemon serves on a
//! listening socket inside the sandbox's own network namespace (made by sandbox/ before the
//! sandbox starts; the namespace has loopback and nothing else, so no packet leaves it by
//! any other way). The handler finds it through `HTTP_PROXY`/`HTTPS_PROXY`
//! (`http://127.0.0.1:3128`), and Landlock lets it connect to that port only.
//!
//! The proxy speaks `CONNECT host:port` (HTTPS, or any TCP) and plain HTTP in absolute form
//! (`GET http://host/path`), one request per connection (it answers with `Connection: close`
//! semantics, so a client cannot reuse a tunnel to reach a second host). It checks the host
//! against the function's allow-list (allow.rs), resolves names itself, refuses special
//! addresses unless an entry names them, and connects. Every connection, allowed or not, is
//! recorded (host, port, bytes each way, verdict) for the invocation's REPORT and the
//! metrics.

mod allow;
mod proxy;

pub use allow::AllowList;
pub use proxy::Proxy;

/// The proxy's port on the sandbox's loopback.
pub const PROXY_PORT: u16 = 3128;

/// The proxy's URL, as the handler's environment names it.
pub const PROXY_URL: &str = "http://127.0.0.1:3128";

/// How one proxied connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Connected and relayed.
    Ok,
    /// Refused by policy: `not-allowed`, or the class of a special address (`loopback`, …).
    Refused(&'static str),
    /// Allowed, but it did not work: `bad-request`, `resolve`, `connect`, `timeout`.
    Failed(&'static str),
}

impl Verdict {
    /// The metrics label: `ok`, `refused` or `failed`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Refused(_) => "refused",
            Verdict::Failed(_) => "failed",
        }
    }
}

/// One connection through the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The host as the request named it (empty when the request could not be read).
    pub host: String,
    pub port: u16,
    /// Bytes from the sandbox to the target.
    pub up: u64,
    /// Bytes from the target to the sandbox.
    pub down: u64,
    pub verdict: Verdict,
}

/// The most connections one REPORT line lists one by one; the rest are counted.
const REPORT_LIST: usize = 16;

/// The connections as one REPORT field: `host:port ok up=N down=N, host:port refused:why, …`.
pub fn summary(conns: &[Connection]) -> String {
    let mut parts: Vec<String> = conns
        .iter()
        .take(REPORT_LIST)
        .map(|c| {
            let target = if c.host.is_empty() { "?".to_owned() } else { format!("{}:{}", c.host, c.port) };
            match c.verdict {
                Verdict::Ok => format!("{target} ok up={} down={}", c.up, c.down),
                Verdict::Refused(why) => format!("{target} refused:{why}"),
                Verdict::Failed(why) => format!("{target} failed:{why} up={} down={}", c.up, c.down),
            }
        })
        .collect();
    if conns.len() > REPORT_LIST {
        parts.push(format!("+{} more", conns.len() - REPORT_LIST));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lists_and_counts() {
        let ok = Connection { host: "api.example.com".into(), port: 443, up: 5, down: 7, verdict: Verdict::Ok };
        let no = Connection { host: "10.0.0.1".into(), port: 80, up: 0, down: 0, verdict: Verdict::Refused("private") };
        assert_eq!(summary(&[ok.clone(), no]), "api.example.com:443 ok up=5 down=7, 10.0.0.1:80 refused:private");
        let many = vec![ok; 20];
        assert!(summary(&many).ends_with(", +4 more"));
    }
}
