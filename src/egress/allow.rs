//! The allow-list of a `network = "egress"` function, and which addresses it may reach.
//!
//! An entry is `host:port`: an exact name (`api.example.com:443`), a wildcard over
//! subdomains (`*.example.org:443`, which does not match `example.org` itself), any name
//! (`*:443`), or an IP address (`10.1.2.3:5432`, `[fd00::1]:80`); the port may be `*`.
//! The proxy resolves names itself and refuses loopback, private, shared (CGNAT),
//! link-local and cloud-metadata addresses unless the entry that let the request through
//! names the host exactly (its name, or the address itself): a wildcard never reaches them,
//! so `*:443` cannot be turned on the host's own services or the LAN by a DNS answer.
//! Unspecified, multicast, broadcast and reserved addresses are never reached.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Which hosts an entry covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// `*`: any host name or address.
    Any,
    /// `*.example.org`: stored as `.example.org`; any name ending in it.
    Suffix(String),
    /// One host name, lowercase, without a trailing dot.
    Exact(String),
    /// One address.
    Ip(IpAddr),
}

/// One `host:port` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    host: HostPattern,
    /// None: any port.
    port: Option<u16>,
}

/// A function's egress allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
    /// As written, for `/_/functions`.
    texts: Vec<String>,
}

/// How a target matched the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Match {
    /// No entry covers it.
    No,
    /// Only a wildcard entry covers it: special addresses stay refused.
    Wildcard,
    /// An entry names this host (or address) exactly.
    Named,
}

/// A host as a request names it: lowercase, no trailing dot, an address parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Name(String),
    Ip(IpAddr),
}

impl Target {
    /// Parses a host from a request (`[v6]` brackets allowed); None if it is no host at all.
    pub fn parse(host: &str) -> Option<Target> {
        if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return v6.parse::<Ipv6Addr>().ok().map(|ip| Target::Ip(IpAddr::V6(ip)));
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Some(Target::Ip(ip));
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        valid_host_name(&name).then_some(Target::Name(name))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Target::Name(n) => f.write_str(n),
            Target::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Target::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
}

/// Splits `host:port` (`[v6]:port` for IPv6).
pub fn split_host_port(text: &str) -> Option<(&str, &str)> {
    if text.starts_with('[') {
        let end = text.find(']')?;
        let port = text[end + 1..].strip_prefix(':')?;
        return Some((&text[..=end], port));
    }
    text.rsplit_once(':').filter(|(h, _)| !h.contains(':'))
}

impl AllowList {
    /// Parses the entries; on error, the index of the bad one and why.
    pub fn parse(texts: &[&str]) -> Result<AllowList, (usize, String)> {
        let mut entries = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let bad = |why: &str| (i, format!("allow entry {text:?} {why}"));
            let (host, port) = split_host_port(text).ok_or_else(|| bad("needs a port: host:port"))?;
            let port = match port {
                "*" => None,
                p => Some(p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| bad("has no valid port"))?),
            };
            let host = if host == "*" {
                HostPattern::Any
            } else if let Some(suffix) = host.strip_prefix("*.") {
                match Target::parse(suffix) {
                    Some(Target::Name(n)) => HostPattern::Suffix(format!(".{n}")),
                    _ => return Err(bad("has a wildcard over something that is not a domain")),
                }
            } else {
                match Target::parse(host) {
                    Some(Target::Name(n)) => HostPattern::Exact(n),
                    Some(Target::Ip(ip)) => HostPattern::Ip(ip),
                    None => return Err(bad("is not a host name or address")),
                }
            };
            entries.push(Entry { host, port });
        }
        Ok(AllowList { entries, texts: texts.iter().map(|t| (*t).to_owned()).collect() })
    }

    /// Whether no entry is there.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries as written.
    pub fn texts(&self) -> &[String] {
        &self.texts
    }

    /// The best match of any entry for `target` on `port`.
    pub fn check(&self, target: &Target, port: u16) -> Match {
        let mut best = Match::No;
        for e in &self.entries {
            if e.port.is_some_and(|p| p != port) {
                continue;
            }
            let m = match (&e.host, target) {
                (HostPattern::Any, _) => Match::Wildcard,
                (HostPattern::Suffix(s), Target::Name(n)) if n.ends_with(s.as_str()) => Match::Wildcard,
                (HostPattern::Exact(x), Target::Name(n)) if x == n => Match::Named,
                (HostPattern::Ip(a), Target::Ip(b)) if same_ip(*a, *b) => Match::Named,
                _ => Match::No,
            };
            best = best.max(m);
        }
        best
    }
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    canonical(a) == canonical(b)
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why an address is special, if it is: `Some((class, never))`, where `never` means no
/// entry can allow it.
pub fn special(ip: IpAddr) -> Option<(&'static str, bool)> {
    match canonical(ip) {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            // NAT64 (64:ff9b::/96) reaches the IPv4 address it embeds.
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b, c, d] = [seg[6] >> 8, seg[6] & 0xff, seg[7] >> 8, seg[7] & 0xff].map(|x| x as u8);
                return special_v4(Ipv4Addr::new(a, b, c, d));
            }
            if v6.is_unspecified() {
                Some(("unspecified", true))
            } else if v6.is_loopback() {
                Some(("loopback", false))
            } else if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some(("metadata", false))
            } else if seg[0] & 0xfe00 == 0xfc00 {
                Some(("private", false))
            } else if seg[0] & 0xffc0 == 0xfe80 {
                Some(("link-local", false))
            } else if seg[0] & 0xff00 == 0xff00 {
                Some(("multicast", true))
            } else {
                None
            }
        }
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<(&'static str, bool)> {
    let [a, b, ..] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        Some(("metadata", false))
    } else if a == 0 {
        // 0.0.0.0 connects to the local host on Linux.
        Some(("unspecified", true))
    } else if ip.is_loopback() {
        Some(("loopback", false))
    } else if ip.is_private() {
        Some(("private", false))
    } else if a == 100 && (64..128).contains(&b) {
        Some(("shared", false))
    } else if ip.is_link_local() {
        Some(("link-local", false))
    } else if ip.is_multicast() {
        Some(("multicast", true))
    } else if a >= 240 {
        Some(("reserved", true))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(entries).unwrap()
    }

    fn name(n: &str) -> Target {
        Target::parse(n).unwrap()
    }

    #[test]
    fn entries_and_matches() {
        let l = list(&["api.example.com:443", "*.example.org:443", "10.0.0.5:5432", "[::1]:8080", "*:80"]);
        assert_eq!(l.check(&name("API.example.com."), 443), Match::Named);
        assert_eq!(l.check(&name("api.example.com"), 80), Match::Wildcard);
        assert_eq!(l.check(&name("api.example.com"), 8443), Match::No);
        assert_eq!(l.check(&name("a.b.example.org"), 443), Match::Wildcard);
        assert_eq!(l.check(&name("example.org"), 443), Match::No);
        assert_eq!(l.check(&name("evil-example.org"), 443), Match::No);
        assert_eq!(l.check(&name("10.0.0.5"), 5432), Match::Named);
        assert_eq!(l.check(&name("::ffff:10.0.0.5"), 5432), Match::Named);
        assert_eq!(l.check(&name("[::1]"), 8080), Match::Named);
        assert_eq!(l.check(&name("10.0.0.6"), 5432), Match::No);
        assert_eq!(list(&["*:*"]).check(&name("x"), 1), Match::Wildcard);
    }

    #[test]
    fn bad_entries_are_named() {
        for (text, why) in [
            ("api.example.com", "needs a port"),
            ("a:0", "no valid port"),
            ("a:x", "no valid port"),
            ("*.1.2.3.4:1", "not a domain"),
            ("a b:1", "not a host name"),
            ("[::1:80", "needs a port"),
        ] {
            let (i, msg) = AllowList::parse(&["ok:1", text]).unwrap_err();
            assert_eq!(i, 1);
            assert!(msg.contains(why), "{text}: {msg}");
        }
    }

    #[test]
    fn special_addresses() {
        let class = |s: &str| special(s.parse().unwrap()).map(|(c, _)| c);
        assert_eq!(class("127.0.0.1"), Some("loopback"));
        assert_eq!(class("::1"), Some("loopback"));
        assert_eq!(class("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(class("64:ff9b::7f00:1"), Some("loopback"));
        assert_eq!(class("10.1.2.3"), Some("private"));
        assert_eq!(class("172.31.0.1"), Some("private"));
        assert_eq!(class("192.168.1.1"), Some("private"));
        assert_eq!(class("fd12::1"), Some("private"));
        assert_eq!(class("100.64.0.1"), Some("shared"));
        assert_eq!(class("169.254.169.254"), Some("metadata"));
        assert_eq!(class("fd00:ec2::254"), Some("metadata"));
        assert_eq!(class("169.254.1.1"), Some("link-local"));
        assert_eq!(class("fe80::1"), Some("link-local"));
        assert_eq!(special("0.0.0.0".parse().unwrap()), Some(("unspecified", true)));
        assert_eq!(special("224.0.0.1".parse().unwrap()), Some(("multicast", true)));
        assert_eq!(class("93.184.216.34"), None);
        assert_eq!(class("2606:2800:220:1::1"), None);
    }
}
