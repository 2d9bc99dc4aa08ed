//! Who the client is when faas sits behind a load balancer: the `[proxy]` settings (trusted
//! proxies as CIDRs, the listeners that speak the PROXY protocol), the PROXY protocol header
//! itself (v1 text and v2 binary, as haproxy's doc/proxy-protocol.txt defines them), and
//! `X-Forwarded-For`.
//!
//! Both ways of learning the client's address are believed only from a trusted peer: a PROXY
//! listener refuses every other peer, and `X-Forwarded-For` from any other peer is left to the
//! function as a plain header (REMOTE_ADDR stays the peer's address).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// The `[proxy]` table of faas.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// Peers whose `X-Forwarded-For` and PROXY headers are believed.
    pub trusted: Vec<Cidr>,
    /// Listeners (`LISTEN_FDNAMES` names, or `NAME=` in `--listen NAME=ADDR`) whose every
    /// connection starts with a PROXY protocol header.
    pub protocol_listeners: Vec<String>,
}

impl ProxySettings {
    /// Whether `peer` is one of the trusted proxies.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(peer))
    }

    /// Whether connections on the listener `name` start with a PROXY header.
    pub fn speaks_proxy_protocol(&self, name: &str) -> bool {
        self.protocol_listeners.iter().any(|l| l == name)
    }

    /// What is wrong with the settings as a whole: (message, hint).
    pub fn check(&self) -> Option<(String, &'static str)> {
        if !self.protocol_listeners.is_empty() && self.trusted.is_empty() {
            return Some((
                format!(
                    "proxy.protocol_listeners names {} but proxy.trusted is empty",
                    self.protocol_listeners.join(", ")
                ),
                "list the balancer's addresses in proxy.trusted (e.g. [\"10.0.0.2\"]); a PROXY header is believed from those peers only",
            ));
        }
        None
    }
}

/// An address block: `10.0.0.0/8`, `fd00::/8`, or one address (`192.0.2.1`, a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in the block; an IPv4-mapped IPv6 address counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address as IPv4 (a dual-stack socket reports IPv4 peers that way).
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not an address or CIDR block: write it like \"10.0.0.0/8\" or \"fd00::1\"");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = canonical(addr.trim().parse::<IpAddr>().map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// The client's address from `X-Forwarded-For`, when `peer` is a trusted proxy.
///
/// Each proxy appends the address it got the request from, so the list is read from the
/// right: the peer is trusted, so its last entry is believed; while that entry is a trusted
/// proxy too, the one before it is believed as well. The first untrusted address is the
/// client (a client can put anything to the left of it, which is never read). An entry that
/// is not an address (`unknown`, an obfuscated name) stops the walk at the last proxy. Every
/// `X-Forwarded-For` header counts, in order, as one list. None: the peer is not trusted or
/// sent no usable entry, and the peer is the client.
pub fn forwarded_for(peer: IpAddr, headers: &http::HeaderMap, proxy: &ProxySettings) -> Option<IpAddr> {
    if !proxy.trusts(peer) {
        return None;
    }
    let values: Vec<&str> =
        headers.get_all("x-forwarded-for").iter().map(|v| v.to_str().unwrap_or("unknown")).collect();
    let mut found = None;
    for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        let Some(ip) = parse_forwarded_entry(entry) else { break };
        found = Some(ip);
        if !proxy.trusts(ip) {
            break;
        }
    }
    found
}

/// One `X-Forwarded-For` entry: an address, with or without a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`, as some proxies write it).
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = e.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    e.strip_prefix('[').and_then(|r| r.strip_suffix(']')).and_then(|v6| v6.parse::<Ipv6Addr>().ok()).map(IpAddr::V6)
}

/// The v2 signature, the first 12 bytes of a binary header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v1 header, `\r\n` included (the spec's bound).
const V1_MAX: usize = 107;

/// The most address and TLV bytes a v2 header may carry here: addresses take 216 at most,
/// the rest are TLVs (SSL details, a unique id) we skip; haproxy sends far fewer.
pub const V2_MAX_PAYLOAD: usize = 4096;

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxiedSource {
    /// The client's address and port as the proxy saw them.
    Client(SocketAddr),
    /// A connection of the proxy's own (v2 LOCAL, a health check) or of a family we do not
    /// relay (v1 UNKNOWN, v2 UNSPEC or unix): the peer is the client.
    Peer,
}

/// Why a PROXY header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    #[error("the v1 header is not `PROXY TCP4|TCP6|UNKNOWN src dst sport dport\\r\\n` within 107 bytes")]
    BadV1,
    #[error("the v2 header {0}")]
    BadV2(&'static str),
}

/// How far a header has arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed (at least this many more, for v2; one at a time for v1).
    Incomplete,
    /// The header, and how many bytes it took: what follows is the HTTP request.
    Done(ProxiedSource, usize),
}

/// Parses the PROXY header at the start of `buf`, which holds what has arrived so far.
pub fn parse_header(buf: &[u8]) -> Result<Parsed, HeaderError> {
    let v2_prefix = buf.len().min(V2_SIGNATURE.len());
    if buf.len() >= 6 && buf[..6] == *b"PROXY " {
        return parse_v1(buf);
    }
    if buf[..v2_prefix] == V2_SIGNATURE[..v2_prefix] {
        return parse_v2(buf);
    }
    if b"PROXY "[..buf.len().min(6)] == buf[..buf.len().min(6)] {
        return Ok(Parsed::Incomplete);
    }
    Err(HeaderError::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, HeaderError> {
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX { Err(HeaderError::BadV1) } else { Ok(Parsed::Incomplete) };
    };
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| HeaderError::BadV1)?;
    let parts: Vec<&str> = line.split(' ').collect();
    let source = match parts.as_slice() {
        ["UNKNOWN", ..] => ProxiedSource::Peer,
        [family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v4 = *family == "TCP4";
            let addr = |s: &str| -> Result<IpAddr, HeaderError> {
                let ip = if v4 {
                    IpAddr::V4(s.parse::<Ipv4Addr>().map_err(|_| HeaderError::BadV1)?)
                } else {
                    IpAddr::V6(s.parse::<Ipv6Addr>().map_err(|_| HeaderError::BadV1)?)
                };
                Ok(ip)
            };
            // Ports are decimal without leading zeros, 0..=65535.
            let port = |s: &str| -> Result<u16, HeaderError> {
                if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(HeaderError::BadV1);
                }
                s.parse::<u16>().map_err(|_| HeaderError::BadV1)
            };
            let (src, _dst, sport, _dport) = (addr(src)?, addr(dst)?, port(sport)?, port(dport)?);
            ProxiedSource::Client(SocketAddr::new(canonical(src), sport))
        }
        _ => return Err(HeaderError::BadV1),
    };
    Ok(Parsed::Done(source, end + 2))
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, HeaderError> {
    if buf.len() < 16 {
        return Ok(Parsed::Incomplete);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(HeaderError::BadV2("has a version other than 2"));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_PAYLOAD {
        return Err(HeaderError::BadV2("is longer than 4096 bytes"));
    }
    if buf.len() < 16 + len {
        return Ok(Parsed::Incomplete);
    }
    let payload = &buf[16..16 + len];
    let source = match command {
        // LOCAL: the proxy's own connection; the addresses (if any) are to be ignored.
        0x0 => ProxiedSource::Peer,
        0x1 => match buf[13] {
            // TCP over IPv4, TCP over IPv6.
            0x11 => {
                if payload.len() < 12 {
                    return Err(HeaderError::BadV2("is too short for two IPv4 addresses and ports"));
                }
                let ip = Ipv4Addr::new(payload[0], payload[1], payload[2], payload[3]);
                let port = u16::from_be_bytes([payload[8], payload[9]]);
                ProxiedSource::Client(SocketAddr::new(IpAddr::V4(ip), port))
            }
            0x21 => {
                if payload.len() < 36 {
                    return Err(HeaderError::BadV2("is too short for two IPv6 addresses and ports"));
                }
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&payload[..16]);
                let port = u16::from_be_bytes([payload[32], payload[33]]);
                ProxiedSource::Client(SocketAddr::new(canonical(IpAddr::V6(Ipv6Addr::from(octets))), port))
            }
            // UNSPEC and unix sockets: nothing to relay. UDP does not reach an HTTP listener.
            0x00 | 0x31 => ProxiedSource::Peer,
            _ => return Err(HeaderError::BadV2("has an unsupported address family")),
        },
        _ => return Err(HeaderError::BadV2("has an unknown command")),
    };
    Ok(Parsed::Done(source, 16 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(trusted: &[&str]) -> ProxySettings {
        ProxySettings { trusted: trusted.iter().map(|s| s.parse().unwrap()).collect(), protocol_listeners: vec![] }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.255.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped counts as IPv4");
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")) && !v6.contains(ip("10.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        for bad in ["10.0.0.0/33", "10.0.0/8", "example.com", "::/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(
            "10.0.0/8".parse::<Cidr>().unwrap_err(),
            "\"10.0.0/8\" is not an address or CIDR block: write it like \"10.0.0.0/8\" or \"fd00::1\""
        );
    }

    fn headers(xff: &[&str]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_read_from_the_right_and_only_from_trusted_peers() {
        let p = settings(&["10.0.0.0/24"]);
        let h = headers(&["203.0.113.5"]);
        assert_eq!(forwarded_for(ip("10.0.0.2"), &h, &p), Some(ip("203.0.113.5")));
        assert_eq!(forwarded_for(ip("198.51.100.1"), &h, &p), None, "untrusted peer");
        // A client prepends a lie; the balancer appends the truth.
        let h = headers(&["1.2.3.4, 203.0.113.5"]);
        assert_eq!(forwarded_for(ip("10.0.0.2"), &h, &p), Some(ip("203.0.113.5")));
        // Two trusted hops: the second proxy's entry is the first proxy, which is trusted.
        let h = headers(&["1.2.3.4, 203.0.113.5", "10.0.0.7"]);
        assert_eq!(forwarded_for(ip("10.0.0.2"), &h, &p), Some(ip("203.0.113.5")));
        // Garbage stops the walk at the last proxy.
        let h = headers(&["203.0.113.5, unknown, 10.0.0.7"]);
        assert_eq!(forwarded_for(ip("10.0.0.2"), &h, &p), Some(ip("10.0.0.7")));
        assert_eq!(forwarded_for(ip("10.0.0.2"), &headers(&["unknown"]), &p), None);
        assert_eq!(forwarded_for(ip("10.0.0.2"), &headers(&[]), &p), None);
        // Ports and brackets.
        assert_eq!(forwarded_for(ip("10.0.0.2"), &headers(&["203.0.113.5:4711"]), &p), Some(ip("203.0.113.5")));
        assert_eq!(forwarded_for(ip("10.0.0.2"), &headers(&["[2001:db8::1]:80"]), &p), Some(ip("2001:db8::1")));
        assert_eq!(forwarded_for(ip("10.0.0.2"), &headers(&["[2001:db8::1]"]), &p), Some(ip("2001:db8::1")));
        assert_eq!(forwarded_for(ip("::ffff:10.0.0.2"), &headers(&["::ffff:192.0.2.1"]), &p), Some(ip("192.0.2.1")));
    }

    #[test]
    fn v1_headers() {
        let h = b"PROXY TCP4 192.0.2.1 10.0.0.1 56324 8080\r\nGET / HTTP/1.1\r\n";
        assert_eq!(parse_header(h), Ok(Parsed::Done(ProxiedSource::Client("192.0.2.1:56324".parse().unwrap()), 42)));
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 80\r\n";
        assert_eq!(
            parse_header(h),
            Ok(Parsed::Done(ProxiedSource::Client("[2001:db8::1]:1".parse().unwrap()), h.len()))
        );
        assert_eq!(parse_header(b"PROXY UNKNOWN\r\n"), Ok(Parsed::Done(ProxiedSource::Peer, 15)));
        assert_eq!(parse_header(b"PROXY UNKNOWN 1.2.3.4 x y z\r\n").map(|_| ()), Ok(()));
        for partial in [&b"PR"[..], b"PROXY", b"PROXY TCP4 192.0.2.1 10.0"] {
            assert_eq!(parse_header(partial), Ok(Parsed::Incomplete), "{partial:?}");
        }
        for bad in [
            &b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n"[..],
            b"PROXY TCP4 192.0.2.1 10.0.0.1 01 2\r\n",
            b"PROXY TCP4 192.0.2.1 10.0.0.1 65536 2\r\n",
            b"PROXY TCP4 192.0.2.1 10.0.0.1 1\r\n",
            b"PROXY TCP5 192.0.2.1 10.0.0.1 1 2\r\n",
            b"PROXY  TCP4 192.0.2.1 10.0.0.1 1 2\r\n",
        ] {
            assert_eq!(parse_header(bad), Err(HeaderError::BadV1), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = [b"PROXY ".as_slice(), &[b'A'; 120]].concat();
        assert_eq!(parse_header(&long), Err(HeaderError::BadV1));
        assert_eq!(parse_header(b"GET / HTTP/1.1\r\n"), Err(HeaderError::Missing));
        assert_eq!(parse_header(b"\r\n\r\nX"), Err(HeaderError::Missing));
    }

    /// A v2 header as haproxy writes it.
    pub fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    #[test]
    fn v2_headers() {
        let v4 = [192, 0, 2, 1, 10, 0, 0, 1, 0xdc, 0x04, 0x1f, 0x90];
        let h = v2(1, 0x11, &v4);
        assert_eq!(parse_header(&h), Ok(Parsed::Done(ProxiedSource::Client("192.0.2.1:56324".parse().unwrap()), 28)));
        // With a TLV after the addresses, and the request behind it.
        let mut with_tlv = v4.to_vec();
        with_tlv.extend_from_slice(&[0x05, 0x00, 0x02, b'i', b'd']);
        let mut h = v2(1, 0x11, &with_tlv);
        let len = h.len();
        h.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert!(matches!(parse_header(&h), Ok(Parsed::Done(ProxiedSource::Client(_), n)) if n == len));
        let mut v6 = [0u8; 36];
        v6[..16].copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        v6[32..34].copy_from_slice(&443u16.to_be_bytes());
        assert_eq!(
            parse_header(&v2(1, 0x21, &v6)),
            Ok(Parsed::Done(ProxiedSource::Client("[2001:db8::1]:443".parse().unwrap()), 52))
        );
        assert_eq!(parse_header(&v2(0, 0x00, &[])), Ok(Parsed::Done(ProxiedSource::Peer, 16)), "LOCAL");
        assert_eq!(
            parse_header(&v2(0, 0x11, &v4)),
            Ok(Parsed::Done(ProxiedSource::Peer, 28)),
            "LOCAL ignores addresses"
        );
        let whole = v2(1, 0x11, &v4);
        for cut in [1, 12, 15, 20] {
            assert_eq!(parse_header(&whole[..cut]), Ok(Parsed::Incomplete), "{cut} bytes");
        }
        assert_eq!(
            parse_header(&v2(1, 0x11, &v4[..8])),
            Err(HeaderError::BadV2("is too short for two IPv4 addresses and ports"))
        );
        assert_eq!(parse_header(&v2(2, 0x11, &v4)), Err(HeaderError::BadV2("has an unknown command")));
        let mut v1_version = v2(1, 0x11, &v4);
        v1_version[12] = 0x11;
        assert_eq!(parse_header(&v1_version), Err(HeaderError::BadV2("has a version other than 2")));
        let mut huge = v2(1, 0x11, &v4);
        huge[14..16].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(parse_header(&huge), Err(HeaderError::BadV2("is longer than 4096 bytes")));
        assert_eq!(parse_header(&v2(1, 0x41, &v4)), Err(HeaderError::BadV2("has an unsupported address family")));
    }

    #[test]
    fn protocol_listeners_need_trusted_peers() {
        let p = ProxySettings { trusted: vec![], protocol_listeners: vec!["lb".into()] };
        assert_eq!(p.check().unwrap().0, "proxy.protocol_listeners names lb but proxy.trusted is empty");
        assert!(settings(&["10.0.0.1"]).check().is_none());
    }
}
