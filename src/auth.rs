//! Who may call a function: `[auth]` in its file. Bearer keys (`Authorization: Bearer KEY`,
//! RFC 6750) and HMAC request signatures for webhooks (GitHub's `X-Hub-Signature-256`,
//! Stripe's `Stripe-Signature`, or any header, prefix, hash and encoding), each key or secret
//! a named credential (secrets.rs), never a literal in the file. `public = false` keeps a
//! function off the public listeners altogether.
//!
//! The check runs in the HTTP layer before any sandbox starts, in constant time: a presented
//! bearer key is hashed (SHA-256) and the digest compared with every key's digest with
//! `subtle`, so neither the time nor the lengths compared depend on how much of a key was
//! right; a signature is compared with `hmac`'s constant-time `verify_slice`. The handler
//! learns who called (`AUTH_TYPE`, `REMOTE_USER`: the key's or the scheme's name, RFC 3875
//! section 4.1), never the key.

use std::collections::BTreeMap;
use std::ops::Range;

use hmac::{Hmac, Mac};
use http::header::{HeaderMap, HeaderName, AUTHORIZATION};
use serde::Deserialize;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;
use toml::Spanned;

use crate::config::ConfigError;
use crate::secrets::{self, Secret, Source};
use crate::units::Span;

/// `[auth]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthDef {
    public: Option<bool>,
    /// Key name (the caller's REMOTE_USER) → credential name.
    #[serde(default)]
    bearer: BTreeMap<String, Spanned<String>>,
    /// Scheme name (REMOTE_USER) → how requests are signed.
    #[serde(default)]
    hmac: BTreeMap<String, Spanned<HmacDef>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HmacDef {
    /// Credential name of the shared secret.
    secret: Spanned<String>,
    style: Option<Style>,
    header: Option<Spanned<String>>,
    prefix: Option<String>,
    hash: Option<Hash>,
    encoding: Option<Encoding>,
    tolerance: Option<Span>,
}

/// Presets for the common webhook senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Style {
    /// `X-Hub-Signature-256: sha256=HEX` over the body.
    Github,
    /// `Stripe-Signature: t=UNIX,v1=HEX[,v1=HEX…]` over `UNIX.body`, within a tolerance.
    Stripe,
    /// `header`, `prefix`, `hash` and `encoding` as given, over the body.
    Plain,
}

/// The HMAC hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hash {
    Sha256,
    Sha512,
}

/// How the signature is written in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Hex,
    Base64,
}

/// Stripe's default tolerance between the signed timestamp and now.
const STRIPE_TOLERANCE: u64 = 300;

/// A checked `[auth]`.
#[derive(Debug, Clone)]
pub struct Auth {
    /// Reachable on the public listeners (else only the admin socket, `faas invoke` and
    /// schedules).
    pub public: bool,
    bearer: Vec<BearerKey>,
    hmac: Vec<HmacScheme>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth { public: true, bearer: Vec::new(), hmac: Vec::new() }
    }
}

#[derive(Debug, Clone)]
struct BearerKey {
    name: String,
    /// SHA-256 of the key: what a presented key's digest is compared with.
    digest: [u8; 32],
}

#[derive(Debug, Clone)]
struct HmacScheme {
    name: String,
    secret: Secret,
    header: HeaderName,
    hash: Hash,
    format: Format,
}

#[derive(Debug, Clone)]
enum Format {
    /// `PREFIX` then the encoded MAC of the body.
    Prefixed { prefix: String, encoding: Encoding },
    /// Stripe's `t=…,v1=…` over `t.body`, `t` within `tolerance` seconds of now.
    Stripe { tolerance: u64 },
}

/// Who called, as the handler learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `AUTH_TYPE`: `Bearer` or `HMAC`.
    pub auth_type: &'static str,
    /// `REMOTE_USER`: the key's or the signing scheme's name from the function file.
    pub user: String,
}

/// Why a request was refused (the metrics label and the problem's detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Nothing this function accepts was presented.
    Missing,
    /// A key or signature was presented and is wrong.
    Invalid,
    /// A valid signature whose timestamp is outside the tolerance (a replay, or a clock off).
    Stale,
}

impl Denial {
    /// The metrics label.
    pub fn reason(self) -> &'static str {
        match self {
            Denial::Missing => "missing",
            Denial::Invalid => "invalid",
            Denial::Stale => "stale",
        }
    }

    /// The problem's detail: what was wrong, never which key came close.
    pub fn detail(self) -> &'static str {
        match self {
            Denial::Missing => "this function needs credentials, and the request carries none it accepts",
            Denial::Invalid => "the credentials in the request are not valid for this function",
            Denial::Stale => "the request's signature is too old (or its clock is off)",
        }
    }
}

/// Names a key or scheme may have: they become REMOTE_USER.
fn valid_user(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'@'))
}

/// Builds a `ConfigError` at a span of the function file (the whole file when None).
pub type ErrAt<'a> = &'a dyn Fn(Option<Range<usize>>, String, &str) -> ConfigError;

/// A credential's error as a function-file error at `span`: its message, and its hint.
pub fn credential_error(err: ErrAt, span: Range<usize>, e: &secrets::CredentialError) -> ConfigError {
    let text = e.to_string();
    let (msg, hint) = text.split_once("\nhint: ").unwrap_or((&text, ""));
    err(Some(span), msg.to_owned(), hint)
}

impl Auth {
    /// Checks `[auth]` and reads every key and secret it names from `source`.
    pub fn parse(def: AuthDef, source: &Source, err: ErrAt) -> Result<Auth, ConfigError> {
        let mut bearer = Vec::new();
        for (name, cred) in def.bearer {
            if !valid_user(&name) {
                return Err(err(
                    Some(cred.span()),
                    format!("bearer key name {name:?} cannot be a REMOTE_USER"),
                    "names are [A-Za-z0-9_.@-], at most 64 bytes",
                ));
            }
            let key = secrets::read(source, cred.get_ref()).map_err(|e| credential_error(err, cred.span(), &e))?;
            if key.expose().is_empty() {
                return Err(err(Some(cred.span()), format!("credential {:?} is empty", cred.get_ref()), ""));
            }
            bearer.push(BearerKey { name, digest: Sha256::digest(key.expose()).into() });
        }
        let mut hmac = Vec::new();
        for (name, def) in def.hmac {
            let span = def.span();
            let def = def.into_inner();
            if !valid_user(&name) {
                return Err(err(
                    Some(span),
                    format!("hmac scheme name {name:?} cannot be a REMOTE_USER"),
                    "names are [A-Za-z0-9_.@-], at most 64 bytes",
                ));
            }
            hmac.push(parse_hmac(name, def, span, source, err)?);
        }
        Ok(Auth { public: def.public.unwrap_or(true), bearer, hmac })
    }

    /// Whether anyone may call (no keys, no signatures).
    pub fn open(&self) -> bool {
        self.bearer.is_empty() && self.hmac.is_empty()
    }

    /// Whether bearer keys are configured: then `Authorization` is faas's and never reaches
    /// the handler.
    pub fn uses_bearer(&self) -> bool {
        !self.bearer.is_empty()
    }

    /// Whether the body is needed to decide (a signature scheme is configured).
    pub fn needs_body(&self) -> bool {
        !self.hmac.is_empty()
    }

    /// The bearer key in `headers`, if one of ours: decided before the body is read.
    pub fn check_bearer(&self, headers: &HeaderMap) -> Result<Caller, Denial> {
        let Some(value) = headers.get(AUTHORIZATION) else { return Err(Denial::Missing) };
        let token = value.as_bytes();
        let Some(token) =
            token.get(..7).filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer ")).map(|_| token[7..].trim_ascii())
        else {
            return Err(Denial::Missing);
        };
        let digest: [u8; 32] = Sha256::digest(token).into();
        // Every key is compared, the match or not: the time taken says nothing about which.
        let mut found = None;
        for key in &self.bearer {
            let equal: bool = key.digest.ct_eq(&digest).into();
            if equal && found.is_none() {
                found = Some(key);
            }
        }
        match found {
            Some(key) => Ok(Caller { auth_type: "Bearer", user: key.name.clone() }),
            None => Err(Denial::Invalid),
        }
    }

    /// A signature of ours over `body` in `headers`; `now` in Unix seconds.
    pub fn check_signature(&self, headers: &HeaderMap, body: &[u8], now: u64) -> Result<Caller, Denial> {
        let mut denial = Denial::Missing;
        for scheme in &self.hmac {
            let Some(value) = headers.get(&scheme.header) else { continue };
            match scheme.verify(value.as_bytes(), body, now) {
                Ok(()) => return Ok(Caller { auth_type: "HMAC", user: scheme.name.clone() }),
                Err(d) => denial = worse(denial, d),
            }
        }
        Err(denial)
    }

    /// The whole decision: `Ok(None)` when the function is open, the caller when a key or
    /// signature of ours was presented, else why not.
    pub fn check(&self, headers: &HeaderMap, body: &[u8], now: u64) -> Result<Option<Caller>, Denial> {
        if self.open() {
            return Ok(None);
        }
        let mut denial = Denial::Missing;
        if self.uses_bearer() {
            match self.check_bearer(headers) {
                Ok(c) => return Ok(Some(c)),
                Err(d) => denial = worse(denial, d),
            }
        }
        if self.needs_body() {
            match self.check_signature(headers, body, now) {
                Ok(c) => return Ok(Some(c)),
                Err(d) => denial = worse(denial, d),
            }
        }
        Err(denial)
    }

    /// The `WWW-Authenticate` challenges (RFC 9110 section 11.6.1): one per way in.
    pub fn challenges(&self, realm: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.uses_bearer() {
            out.push(format!("Bearer realm=\"{realm}\""));
        }
        for s in &self.hmac {
            out.push(format!("Signature realm=\"{realm}\", header=\"{}\"", s.header));
        }
        out
    }

    /// What `/_/functions` may show: the names, never the keys.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "public": self.public,
            "bearer": self.bearer.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
            "hmac": self.hmac.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        })
    }
}

/// The more telling of two denials: a wrong key says more than none at all.
fn worse(a: Denial, b: Denial) -> Denial {
    match (a, b) {
        (Denial::Invalid, _) | (_, Denial::Invalid) => Denial::Invalid,
        (Denial::Stale, _) | (_, Denial::Stale) => Denial::Stale,
        _ => Denial::Missing,
    }
}

fn parse_hmac(
    name: String,
    def: HmacDef,
    span: Range<usize>,
    source: &Source,
    err: ErrAt,
) -> Result<HmacScheme, ConfigError> {
    let style = def.style.unwrap_or(Style::Plain);
    let secret =
        secrets::read(source, def.secret.get_ref()).map_err(|e| credential_error(err, def.secret.span(), &e))?;
    if secret.expose().is_empty() {
        return Err(err(Some(def.secret.span()), format!("credential {:?} is empty", def.secret.get_ref()), ""));
    }
    let header_span = def.header.as_ref().map_or(span.clone(), |h| h.span());
    let header = match (style, def.header.as_ref().map(|h| h.get_ref().as_str())) {
        (_, Some(h)) => h,
        (Style::Github, None) => "X-Hub-Signature-256",
        (Style::Stripe, None) => "Stripe-Signature",
        (Style::Plain, None) => {
            return Err(err(
                Some(span),
                format!("hmac scheme {name:?} needs a header"),
                "e.g. header = \"X-Signature\", or style = \"github\" or \"stripe\"",
            ))
        }
    };
    let header = HeaderName::from_bytes(header.as_bytes())
        .map_err(|_| err(Some(header_span), format!("{header:?} is not a header name"), ""))?;
    let misplaced = |key: &str| {
        err(Some(span.clone()), format!("{key} does not apply to style = \"stripe\""), "Stripe signs t.body in hex")
    };
    let format = match style {
        Style::Stripe => {
            if def.prefix.is_some() {
                return Err(misplaced("prefix"));
            }
            if def.encoding.is_some() {
                return Err(misplaced("encoding"));
            }
            Format::Stripe { tolerance: def.tolerance.map_or(STRIPE_TOLERANCE, |t| t.0.as_secs()) }
        }
        Style::Github | Style::Plain => {
            if def.tolerance.is_some() {
                return Err(err(
                    Some(span),
                    "tolerance applies only to style = \"stripe\"".into(),
                    "a signature over the body alone carries no time",
                ));
            }
            let prefix =
                def.prefix.unwrap_or_else(|| if style == Style::Github { "sha256=".into() } else { String::new() });
            Format::Prefixed { prefix, encoding: def.encoding.unwrap_or(Encoding::Hex) }
        }
    };
    Ok(HmacScheme { name, secret, header, hash: def.hash.unwrap_or(Hash::Sha256), format })
}

impl HmacScheme {
    /// Whether `value` (the header as sent) signs `body`.
    fn verify(&self, value: &[u8], body: &[u8], now: u64) -> Result<(), Denial> {
        match &self.format {
            Format::Prefixed { prefix, encoding } => {
                let sig = value.trim_ascii().strip_prefix(prefix.as_bytes()).ok_or(Denial::Invalid)?;
                let sig = match encoding {
                    Encoding::Hex => decode_hex(sig),
                    Encoding::Base64 => decode_base64(sig),
                }
                .ok_or(Denial::Invalid)?;
                self.mac_matches(&[body], &sig).then_some(()).ok_or(Denial::Invalid)
            }
            Format::Stripe { tolerance } => {
                let text = std::str::from_utf8(value).map_err(|_| Denial::Invalid)?;
                let mut stamp = None;
                let mut sigs = Vec::new();
                for part in text.split(',') {
                    match part.trim().split_once('=') {
                        Some(("t", t)) => stamp = Some(t),
                        Some(("v1", s)) => sigs.push(s),
                        _ => {}
                    }
                }
                let stamp = stamp.ok_or(Denial::Invalid)?;
                let t: u64 = stamp.parse().map_err(|_| Denial::Invalid)?;
                let signed = [stamp.as_bytes(), b".", body];
                // Every v1 is checked (a sender rolling its secret sends two).
                let mut ok = false;
                for s in sigs {
                    let Some(sig) = decode_hex(s.as_bytes()) else { continue };
                    ok |= self.mac_matches(&signed, &sig);
                }
                if !ok {
                    return Err(Denial::Invalid);
                }
                if now.abs_diff(t) > *tolerance {
                    return Err(Denial::Stale);
                }
                Ok(())
            }
        }
    }

    /// HMAC of the parts, compared in constant time with `sig`.
    fn mac_matches(&self, parts: &[&[u8]], sig: &[u8]) -> bool {
        match self.hash {
            Hash::Sha256 => {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(self.secret.expose()).expect("HMAC takes keys of any size");
                parts.iter().for_each(|p| mac.update(p));
                mac.verify_slice(sig).is_ok()
            }
            Hash::Sha512 => {
                let mut mac =
                    Hmac::<Sha512>::new_from_slice(self.secret.expose()).expect("HMAC takes keys of any size");
                parts.iter().for_each(|p| mac.update(p));
                mac.verify_slice(sig).is_ok()
            }
        }
    }
}

fn decode_hex(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || s.len() > 256 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.chunks(2).map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect()
}

/// Standard base64 (RFC 4648 section 4), padding optional.
fn decode_base64(s: &[u8]) -> Option<Vec<u8>> {
    let s = s.strip_suffix(b"==").or_else(|| s.strip_suffix(b"=")).unwrap_or(s);
    if s.len() > 256 || s.len() % 4 == 1 {
        return None;
    }
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc: u32 = 0;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= u32::from(value(c)?) << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use http::HeaderValue;

    use super::*;

    fn creds(files: &[(&str, &str)]) -> (tempfile::TempDir, Source) {
        let dir = tempfile::tempdir().unwrap();
        for (name, value) in files {
            std::fs::write(dir.path().join(name), value).unwrap();
        }
        let source = Source::Config(dir.path().to_owned());
        (dir, source)
    }

    fn parse(text: &str, source: &Source) -> Result<Auth, ConfigError> {
        #[derive(Deserialize)]
        struct File {
            auth: AuthDef,
        }
        let path = Path::new("/f/x.toml");
        let file: File = toml::from_str(text).map_err(|e| ConfigError::from_toml(path, text, &e))?;
        let err =
            |span, msg, hint: &str| ConfigError::at(path, text, span, msg, (!hint.is_empty()).then(|| hint.to_owned()));
        Auth::parse(file.auth, source, &err)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn sign(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        parts.iter().for_each(|p| mac.update(p));
        mac.finalize().into_bytes().to_vec()
    }

    #[test]
    fn bearer_keys_name_the_caller() {
        let (_d, source) = creds(&[("ci-key", "s3cret-ci\n"), ("alice-key", "alice-123")]);
        let auth = parse("[auth]\nbearer = { ci = \"ci-key\", alice = \"alice-key\" }\n", &source).unwrap();
        assert!(!auth.open() && auth.public);
        let ok = auth.check(&headers(&[("authorization", "Bearer s3cret-ci")]), b"", 0).unwrap();
        assert_eq!(ok, Some(Caller { auth_type: "Bearer", user: "ci".into() }));
        let ok = auth.check(&headers(&[("authorization", "bearer alice-123")]), b"", 0).unwrap();
        assert_eq!(ok.unwrap().user, "alice");
        assert_eq!(auth.check(&headers(&[]), b"", 0), Err(Denial::Missing));
        assert_eq!(auth.check(&headers(&[("authorization", "Basic eDp5")]), b"", 0), Err(Denial::Missing));
        assert_eq!(auth.check(&headers(&[("authorization", "Bearer s3cret-c")]), b"", 0), Err(Denial::Invalid));
        assert_eq!(auth.challenges("hello"), ["Bearer realm=\"hello\""]);
        assert!(!format!("{auth:?}").contains("s3cret"), "{auth:?}");
    }

    #[test]
    fn github_and_stripe_signatures() {
        let (_d, source) = creds(&[("gh", "gh-secret"), ("st", "whsec_abc")]);
        let auth = parse(
            "[auth.hmac.github]\nsecret = \"gh\"\nstyle = \"github\"\n[auth.hmac.stripe]\nsecret = \"st\"\nstyle = \"stripe\"\n",
            &source,
        )
        .unwrap();
        let body = b"{\"action\":\"opened\"}";
        let gh = format!("sha256={}", hex(&sign(b"gh-secret", &[body])));
        let caller = auth.check(&headers(&[("x-hub-signature-256", &gh)]), body, 0).unwrap().unwrap();
        assert_eq!(caller, Caller { auth_type: "HMAC", user: "github".into() });
        assert_eq!(auth.check(&headers(&[("x-hub-signature-256", &gh)]), b"other", 0), Err(Denial::Invalid));
        let now = 1_700_000_000u64;
        let t = now.to_string();
        let v1 = hex(&sign(b"whsec_abc", &[t.as_bytes(), b".", body]));
        let st = format!("t={t},v1=00,v1={v1},v0=ignored");
        assert_eq!(auth.check(&headers(&[("stripe-signature", &st)]), body, now + 10).unwrap().unwrap().user, "stripe");
        assert_eq!(auth.check(&headers(&[("stripe-signature", &st)]), body, now + 301), Err(Denial::Stale));
        assert_eq!(auth.check(&headers(&[("stripe-signature", &st)]), b"x", now), Err(Denial::Invalid));
        assert_eq!(auth.check(&headers(&[]), body, now), Err(Denial::Missing));
    }

    #[test]
    fn plain_base64_sha512() {
        let (_d, source) = creds(&[("k", "key")]);
        let auth = parse(
            "[auth.hmac.shop]\nsecret = \"k\"\nheader = \"X-Sig\"\nhash = \"sha512\"\nencoding = \"base64\"\n",
            &source,
        )
        .unwrap();
        let mut mac = Hmac::<Sha512>::new_from_slice(b"key").unwrap();
        mac.update(b"body");
        let sig = mac.finalize().into_bytes();
        let b64 = encode_base64(&sig);
        assert_eq!(decode_base64(b64.as_bytes()).unwrap(), sig.to_vec());
        assert!(auth.check(&headers(&[("x-sig", &b64)]), b"body", 0).is_ok());
        assert_eq!(auth.check(&headers(&[("x-sig", &b64)]), b"bodY", 0), Err(Denial::Invalid));
    }

    fn encode_base64(b: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &c)| acc | u32::from(c) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        while out.len() % 4 != 0 {
            out.push('=');
        }
        out
    }

    #[test]
    fn file_errors_name_the_credential() {
        let (d, source) = creds(&[]);
        let err = parse("[auth]\nbearer = { ci = \"ci-key\" }\n", &source).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "/f/x.toml:2:17: credential \"ci-key\" is missing from {}\nhint: write the value to a file named ci-key there, readable by root only (chmod 0400)",
                d.path().display()
            )
        );
        let err = parse("[auth.hmac.x]\nsecret = \"k\"\n", &creds(&[("k", "v")]).1).unwrap_err().to_string();
        assert!(err.contains("hmac scheme \"x\" needs a header"), "{err}");
        let err = parse("[auth]\nbearer = { \"a b\" = \"k\" }\n", &creds(&[("k", "v")]).1).unwrap_err().to_string();
        assert!(err.contains("cannot be a REMOTE_USER"), "{err}");
        let err = parse("[auth]\nkeys = {}\n", &source).unwrap_err().to_string();
        assert!(err.contains("unknown field `keys`"), "{err}");
    }

    #[test]
    fn decoders() {
        assert_eq!(decode_hex(b"00ff10").unwrap(), [0, 255, 16]);
        assert!(decode_hex(b"0g").is_none() && decode_hex(b"abc").is_none());
        assert_eq!(decode_base64(b"aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64(b"aGk").unwrap(), b"hi");
        assert!(decode_base64(b"a").is_none());
    }
}
