//! The CGI/1.1 side (RFC 3875): the request as meta-variables for the sandbox's environment,
//! and the response head a function writes to stdout (`Status:`, `Content-Type:`,
//! `Location:`, other header lines, a blank line, then the body). Also what a function's
//! head may not do to the origin it shares with every other function (`scope_headers`).

use std::ffi::CString;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

/// Largest response head we wait for before calling the response bad.
pub const MAX_HEAD: usize = 64 << 10;

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    /// From `Status:`, 302 for a bare `Location:`, else 200.
    pub status: StatusCode,
    /// Every other header the function set, minus hop-by-hop ones.
    pub headers: HeaderMap,
    /// The body's length, when the function gave one (`Content-Length`): we frame the body
    /// ourselves, but once this many bytes came the response is whole, whatever the function
    /// does next.
    pub length: Option<u64>,
}

/// Finds the end of the head: returns (head length, body offset). Accepts LF and CRLF.
pub fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(pos) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + pos;
        // The line that ends at nl is empty if it is "" or "\r".
        let line_start = buf[..nl].iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let line = &buf[line_start..nl];
        if line.is_empty() || line == b"\r" {
            return Some((line_start, nl + 1));
        }
        i = nl + 1;
    }
    None
}

/// Headers a function may not set: they belong to the connection or to us.
fn reserved(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "upgrade"
            | "te"
            | "trailer"
            | "proxy-connection"
            | "proxy-authenticate"
            | "faas-invocation-id"
    )
}

/// Parses the head (without the blank line).
pub fn parse_head(head: &[u8]) -> Result<Head, String> {
    let text = std::str::from_utf8(head).map_err(|_| "the response head is not UTF-8".to_owned())?;
    let mut status = None;
    let mut location = false;
    let mut length = None;
    let mut headers = HeaderMap::new();
    for (n, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("line {} of the response head is not a header: {:?}", n + 1, truncate(line)));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            // 1xx is the connection's business: a 101 would tell a proxy in front that the
            // connection now speaks another protocol (and hyper answers other 1xx with 500).
            let code = value.split_whitespace().next().unwrap_or("");
            let parsed = code.parse::<u16>().ok().and_then(|c| (200..=599).contains(&c).then_some(c));
            let code =
                parsed.ok_or_else(|| format!("Status: {:?} is not a status code from 200 to 599", truncate(value)))?;
            status = Some(StatusCode::from_u16(code).map_err(|e| e.to_string())?);
            continue;
        }
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{:?} is not a header name", truncate(name)))?;
        if name == http::header::CONTENT_LENGTH {
            // RFC 9110 section 8.6: digits only, and a repeated header must agree.
            let n = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| format!("Content-Length: {:?} is not a length", truncate(value)))?;
            if length.is_some_and(|l| l != n) {
                return Err("two different Content-Length headers".into());
            }
            length = Some(n);
        }
        let value =
            HeaderValue::from_str(value).map_err(|_| format!("the value of {name} is not a valid header value"))?;
        if name == http::header::LOCATION {
            location = true;
        }
        if !reserved(&name) {
            headers.append(name, value);
        }
    }
    let status = status.unwrap_or(if location { StatusCode::FOUND } else { StatusCode::OK });
    Ok(Head { status, headers, length })
}

/// Response headers that act on the whole origin, which every function shares, rather than
/// on `/NAME`: a cookie for `/` or another host, wiping the origin's storage, pinning it to
/// HTTPS, sending its clients to another server. Dropped unless the function file lists the
/// name in `[response] allow_headers`.
pub const ORIGIN_WIDE: &[&str] = &["set-cookie", "clear-site-data", "strict-transport-security", "alt-svc"];

/// Keeps a function's response headers to its own `/NAME`: drops the `ORIGIN_WIDE` ones not in
/// `allowed`, except `Set-Cookie` scoped under `/NAME` (a `Path` of `/NAME` or below it, no
/// `Domain`). A cookie without a usable `Path` gets `Path=/NAME` appended: the browser's
/// default would be the request's directory, `/` for a request to `/NAME` itself.
/// Returns what was dropped, one entry per header (cookie names, never values), for the log.
pub fn scope_headers(headers: &mut HeaderMap, function: &str, allowed: &[String]) -> Vec<String> {
    let mut dropped = Vec::new();
    for &name in ORIGIN_WIDE {
        if !headers.contains_key(name) || allowed.iter().any(|a| a == name) {
            continue;
        }
        if name != "set-cookie" {
            headers.remove(name);
            dropped.push(name.to_owned());
            continue;
        }
        let cookies: Vec<HeaderValue> = headers.get_all(name).iter().cloned().collect();
        headers.remove(name);
        for value in cookies {
            match scope_cookie(&value, function) {
                Ok(rewritten) => {
                    headers.append(http::header::SET_COOKIE, rewritten.unwrap_or(value));
                }
                Err(why) => dropped.push(format!("set-cookie {} ({why})", cookie_name(&value))),
            }
        }
    }
    dropped
}

/// The same for a function served on an origin of its own (`http://NAME.DOMAIN/`): every
/// header acts on that origin alone, except a `Set-Cookie` with a `Domain`, which would reach
/// the sibling functions' origins under DOMAIN (cookie tossing) and is dropped unless allowed.
pub fn scope_headers_own_origin(headers: &mut HeaderMap, allowed: &[String]) -> Vec<String> {
    if !headers.contains_key(http::header::SET_COOKIE) || allowed.iter().any(|a| a == "set-cookie") {
        return Vec::new();
    }
    let mut dropped = Vec::new();
    let cookies: Vec<HeaderValue> = headers.get_all(http::header::SET_COOKIE).iter().cloned().collect();
    headers.remove(http::header::SET_COOKIE);
    for value in cookies {
        let has_domain = value.to_str().map_or(true, |t| {
            t.split(';').skip(1).any(|a| {
                let (k, v) = a.split_once('=').unwrap_or((a, ""));
                k.trim().eq_ignore_ascii_case("domain") && !v.trim().is_empty()
            })
        });
        if has_domain {
            dropped.push(format!("set-cookie {} (Domain)", cookie_name(&value)));
        } else {
            headers.append(http::header::SET_COOKIE, value);
        }
    }
    dropped
}

/// `Ok(None)`: in scope as it is; `Ok(Some(v))`: in scope once `Path=/NAME` is appended;
/// `Err(why)`: reaches beyond the function. Attributes as RFC 6265 section 5.2 reads them.
fn scope_cookie(value: &HeaderValue, function: &str) -> Result<Option<HeaderValue>, String> {
    let Ok(text) = value.to_str() else { return Err("not text".into()) };
    let mut has_path = false;
    for attr in text.split(';').skip(1) {
        let (key, val) = attr.split_once('=').unwrap_or((attr, ""));
        let (key, val) = (key.trim(), val.trim());
        if key.eq_ignore_ascii_case("domain") && !val.is_empty() {
            return Err("Domain".into());
        }
        // A Path that does not start with `/` is ignored by the browser, as if absent.
        if key.eq_ignore_ascii_case("path") && val.starts_with('/') {
            let under = val[1..].strip_prefix(function).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            if !under {
                return Err(format!("Path={}", truncate(val)));
            }
            has_path = true;
        }
    }
    if has_path {
        return Ok(None);
    }
    HeaderValue::from_str(&format!("{text}; Path=/{function}")).map(Some).map_err(|_| "not text".into())
}

fn cookie_name(value: &HeaderValue) -> String {
    let text = value.to_str().unwrap_or("");
    let name = text.split(';').next().and_then(|p| p.split_once('=')).map_or("", |(n, _)| n.trim());
    truncate(name).to_owned()
}

fn truncate(s: &str) -> &str {
    let end = s.char_indices().nth(80).map_or(s.len(), |(i, _)| i);
    &s[..end]
}

/// The request, as RFC 3875 hands it to a script.
pub struct RequestMeta<'a> {
    /// Method.
    pub method: &'a str,
    /// The function's name; SCRIPT_NAME is `/NAME`.
    pub function: &'a str,
    /// What followed `/NAME` in the path.
    pub path_info: &'a str,
    /// The raw query string.
    pub query: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Body length.
    pub content_length: usize,
    /// The client's address.
    pub remote_addr: &'a str,
    /// Our host name as the client used it.
    pub server_name: &'a str,
    /// Our port.
    pub server_port: &'a str,
    /// The invocation id.
    pub invocation_id: &'a str,
    /// Unix time in ms when the sandbox will be killed.
    pub deadline_ms: u128,
    /// Who called, when the function checks (`[auth]`): AUTH_TYPE and REMOTE_USER.
    pub caller: Option<&'a crate::auth::Caller>,
    /// Served at `http://NAME.DOMAIN/`: SCRIPT_NAME is empty, the whole path is PATH_INFO.
    pub own_origin: bool,
}

/// Builds the sandbox's whole environment: CGI meta-variables, FAAS_*, the function's own
/// entries and a fixed base. Nothing of the daemon's own environment gets in.
/// What every process of a function has, whatever its request: PATH, HOME, TMPDIR, LANG and
/// the function's own `env`, which may override the first four.
pub fn base_environment(function_env: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("HOME".into(), "/tmp".into()),
        ("TMPDIR".into(), "/tmp".into()),
        ("LANG".into(), "C.UTF-8".into()),
    ];
    for (k, v) in function_env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

pub fn environment(meta: &RequestMeta, function_env: &[(String, String)]) -> Vec<CString> {
    let mut env = base_environment(function_env);
    let mut push = |k: &str, v: &str| env.push((k.to_owned(), v.to_owned()));
    push("GATEWAY_INTERFACE", "CGI/1.1");
    push("SERVER_PROTOCOL", "HTTP/1.1");
    push("SERVER_SOFTWARE", concat!("faas/", env!("CARGO_PKG_VERSION")));
    push("REQUEST_METHOD", meta.method);
    push("SCRIPT_NAME", &if meta.own_origin { String::new() } else { format!("/{}", meta.function) });
    if let Some(caller) = meta.caller {
        push("AUTH_TYPE", caller.auth_type);
        push("REMOTE_USER", &caller.user);
    }
    push("PATH_INFO", meta.path_info);
    push("QUERY_STRING", meta.query);
    push("REMOTE_ADDR", meta.remote_addr);
    push("SERVER_NAME", meta.server_name);
    push("SERVER_PORT", meta.server_port);
    if meta.content_length > 0 || meta.headers.contains_key(http::header::CONTENT_LENGTH) {
        push("CONTENT_LENGTH", &meta.content_length.to_string());
    }
    if let Some(ct) = meta.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        push("CONTENT_TYPE", ct);
    }
    push("FAAS_FUNCTION", meta.function);
    push("FAAS_INVOCATION_ID", meta.invocation_id);
    push("FAAS_DEADLINE_MS", &meta.deadline_ms.to_string());
    let mut http_vars: Vec<(String, String)> = Vec::new();
    for (name, value) in meta.headers {
        // httpoxy: a client-sent Proxy header must never become HTTP_PROXY. A name with `_`
        // would map onto the same variable as its `-` twin and could spoof it (nginx drops
        // those too). Authorization is the handler's unless faas checked a bearer key in it,
        // and then the HTTP layer has taken it out of the headers already.
        if matches!(name.as_str(), "proxy" | "content-type" | "content-length" | "connection")
            || name.as_str().contains('_')
        {
            continue;
        }
        let Ok(value) = value.to_str() else { continue };
        let key = format!("HTTP_{}", name.as_str().to_ascii_uppercase().replace('-', "_"));
        match http_vars.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => {
                v.push_str(if name == http::header::COOKIE { "; " } else { ", " });
                v.push_str(value);
            }
            None => http_vars.push((key, value.to_owned())),
        }
    }
    env.extend(http_vars);
    envp(env)
}

/// `NAME=value` entries for execve (or a zygote's child); an entry with a NUL is left out.
pub fn envp(env: Vec<(String, String)>) -> Vec<CString> {
    env.into_iter().filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_lf_and_crlf() {
        assert_eq!(find_head_end(b"Content-Type: a\n\nbody"), Some((16, 17)));
        assert_eq!(find_head_end(b"Content-Type: a\r\n\r\nbody"), Some((17, 19)));
        assert_eq!(find_head_end(b"\nbody"), Some((0, 1)));
        assert_eq!(find_head_end(b"Content-Type: a\n"), None);
    }

    #[test]
    fn status_location_and_passthrough() {
        let h =
            parse_head(b"Status: 201 Created\nContent-Type: text/plain\nX-A: 1\nX-A: 2\nContent-Length: 99\n").unwrap();
        assert_eq!(h.status, StatusCode::CREATED);
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        assert!(h.headers.get("content-length").is_none(), "we frame the body ourselves");
        assert_eq!(h.length, Some(99));
        assert_eq!(parse_head(b"Content-Length: 0\ncontent-length: 0\n").unwrap().length, Some(0));
        assert_eq!(parse_head(b"X: 1\n").unwrap().length, None);
        let h = parse_head(b"Location: https://example.org/\n").unwrap();
        assert_eq!(h.status, StatusCode::FOUND);
        assert_eq!(parse_head(b"").unwrap().status, StatusCode::OK);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let e = parse_head(b"hello world").unwrap_err();
        assert_eq!(e, "line 1 of the response head is not a header: \"hello world\"");
        assert!(parse_head(b"Status: 999 Nope").unwrap_err().contains("not a status code"));
        assert!(parse_head(b"Status: abc").is_err());
        assert!(parse_head(b"Bad Name: x").unwrap_err().contains("not a header name"));
        assert!(parse_head(b"X: \x01").is_err());
        assert!(parse_head(b"X-Ok: \xff\xfe").is_err());
        assert_eq!(parse_head(b"Content-Length: -1").unwrap_err(), "Content-Length: \"-1\" is not a length");
        assert!(parse_head(b"Content-Length: 1, 1").is_err());
        assert!(parse_head(b"Content-Length: 99999999999999999999999").is_err());
        assert_eq!(
            parse_head(b"Content-Length: 1\nContent-Length: 2").unwrap_err(),
            "two different Content-Length headers"
        );
    }

    #[test]
    fn informational_status_is_refused() {
        for code in ["100", "101 Switching Protocols", "103", "199"] {
            let e = parse_head(format!("Status: {code}\nUpgrade: websocket\n").as_bytes()).unwrap_err();
            assert!(e.contains("not a status code from 200 to 599"), "{code}: {e}");
        }
        assert_eq!(parse_head(b"Status: 200").unwrap().status, StatusCode::OK);
        assert_eq!(parse_head(b"Status: 599").unwrap().status.as_u16(), 599);
    }

    fn head_of(lines: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in lines {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn origin_wide_headers_are_dropped() {
        let mut h = head_of(&[
            ("content-type", "text/plain"),
            ("clear-site-data", "\"*\""),
            ("strict-transport-security", "max-age=63072000; includeSubDomains"),
            ("alt-svc", "h3=\":443\""),
            ("x-other", "kept"),
        ]);
        let dropped = scope_headers(&mut h, "shop", &[]);
        assert_eq!(dropped, ["clear-site-data", "strict-transport-security", "alt-svc"]);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["x-other"], "kept");
    }

    #[test]
    fn cookies_stay_under_the_function() {
        let mut h = head_of(&[
            ("set-cookie", "a=1; Path=/shop"),
            ("set-cookie", "b=2; path=/shop/cart; HttpOnly"),
            ("set-cookie", "c=3; Path=/"),
            ("set-cookie", "d=4; Path=/shopping"),
            ("set-cookie", "e=5; Path=/shop; Domain=example.org"),
            ("set-cookie", "f=6; Secure"),
            ("set-cookie", "g=7; Path=relative"),
            ("set-cookie", "h=8; Path=/shop; Path=/"),
            ("set-cookie", "i=9; Domain="),
        ]);
        let dropped = scope_headers(&mut h, "shop", &[]);
        assert_eq!(
            dropped,
            [
                "set-cookie c (Path=/)",
                "set-cookie d (Path=/shopping)",
                "set-cookie e (Domain)",
                "set-cookie h (Path=/)"
            ]
        );
        let kept: Vec<&str> = h.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(
            kept,
            [
                "a=1; Path=/shop",
                "b=2; path=/shop/cart; HttpOnly",
                "f=6; Secure; Path=/shop",
                "g=7; Path=relative; Path=/shop",
                "i=9; Domain=; Path=/shop"
            ]
        );
    }

    #[test]
    fn a_function_may_opt_back_in() {
        let mut h = head_of(&[
            ("set-cookie", "sid=1; Path=/; Domain=example.org"),
            ("strict-transport-security", "max-age=1"),
            ("alt-svc", "clear"),
        ]);
        let allowed = ["set-cookie".to_owned(), "strict-transport-security".to_owned()];
        assert_eq!(scope_headers(&mut h, "login", &allowed), ["alt-svc"]);
        assert_eq!(h["set-cookie"], "sid=1; Path=/; Domain=example.org");
        assert_eq!(h["strict-transport-security"], "max-age=1");
    }

    #[test]
    fn own_origin_keeps_all_but_domain_cookies() {
        let mut h = HeaderMap::new();
        h.append("set-cookie", "a=1; Path=/".parse().unwrap());
        h.append("set-cookie", "b=2; Domain=fn.localhost".parse().unwrap());
        h.append("strict-transport-security", "max-age=60".parse().unwrap());
        assert_eq!(scope_headers_own_origin(&mut h, &[]), ["set-cookie b (Domain)"]);
        assert_eq!(h.get_all("set-cookie").iter().collect::<Vec<_>>(), ["a=1; Path=/"]);
        assert!(h.contains_key("strict-transport-security"));
    }

    #[test]
    fn environment_is_cgi() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("x-trace", "abc".parse().unwrap());
        headers.insert("proxy", "http://evil:8080".parse().unwrap());
        headers.insert("x_trace", "spoof".parse().unwrap());
        headers.append("cookie", "a=1".parse().unwrap());
        headers.append("cookie", "b=2".parse().unwrap());
        let meta = RequestMeta {
            method: "POST",
            function: "hello",
            path_info: "/a/b",
            query: "name=ada",
            headers: &headers,
            content_length: 5,
            remote_addr: "127.0.0.1",
            server_name: "localhost",
            server_port: "8080",
            invocation_id: "id-1",
            deadline_ms: 42,
            caller: None,
            own_origin: false,
        };
        let env: Vec<String> = environment(&meta, &[("GREETING".into(), "hi".into())])
            .into_iter()
            .map(|c| c.into_string().unwrap())
            .collect();
        for want in [
            "REQUEST_METHOD=POST",
            "PATH_INFO=/a/b",
            "QUERY_STRING=name=ada",
            "CONTENT_LENGTH=5",
            "CONTENT_TYPE=application/json",
            "HTTP_X_TRACE=abc",
            "FAAS_FUNCTION=hello",
            "FAAS_INVOCATION_ID=id-1",
            "FAAS_DEADLINE_MS=42",
            "SCRIPT_NAME=/hello",
            "GREETING=hi",
            "HOME=/tmp",
        ] {
            assert!(env.contains(&want.to_owned()), "{want} missing from {env:?}");
        }
        assert!(!env.iter().any(|e| e.starts_with("HTTP_PROXY")), "httpoxy");
        assert!(env.contains(&"HTTP_COOKIE=a=1; b=2".to_owned()), "{env:?}");
        assert!(!env.contains(&"HTTP_X_TRACE=spoof".to_owned()), "underscore twin spoofed a header: {env:?}");
        assert!(!env.iter().any(|e| e.starts_with("HTTP_CONTENT_TYPE")));
        assert!(!env.iter().any(|e| e.starts_with("AUTH_TYPE=") || e.starts_with("REMOTE_USER=")));
        let caller = crate::auth::Caller { auth_type: "Bearer", user: "ci".into() };
        let meta = RequestMeta { caller: Some(&caller), own_origin: true, ..meta };
        let env: Vec<String> = environment(&meta, &[]).into_iter().map(|c| c.into_string().unwrap()).collect();
        for want in ["AUTH_TYPE=Bearer", "REMOTE_USER=ci", "SCRIPT_NAME="] {
            assert!(env.contains(&want.to_owned()), "{want} missing from {env:?}");
        }
    }
}
