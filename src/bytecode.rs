//! The handler's code, compiled once per zygote instead of once per request.
//!
//! A warm request still imports the function's own modules in its sandbox (the zygote runs
//! trusted code only), and without a bytecode cache each import compiled them from source:
//! `/code` is read-only and every sandbox starts with no `__pycache__` of its own. Compiling
//! was a fifth of a warm hello's CPU (bench/results/WARM-PROFILE.md).
//!
//! So before a zygote starts, one sandbox like a request's (the function's own uid, namespaces,
//! Landlock and seccomp, no environment of the function's and no request) runs
//! `zygote.py --compile`, which compiles every `.py` under `/code` and writes the results to
//! its stdout. The daemon checks the stream's framing, copies it to a sealed memfd, and gives
//! that to the zygote, which keeps the bytes without reading them (`zygote.py`, `install_pyc`).
//! Each request's import then takes its module's bytes from there: unmarshalled in the
//! request's sandbox, and only if they were compiled from the source it sees now (checked
//! hash-based pycs, PEP 552: an edit in place is never served stale).
//!
//! The compiler never runs in the zygote or the daemon. What the compile sandbox wrote reaches
//! only this function version's requests, which run its code anyway.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::cgi;
use crate::function::{Function, LandlockMode};
use crate::runtime;
use crate::sandbox::{self, Host, Launch, PreparedSandbox, Stdio};

/// At most this much compiled code per function version: it lives in the zygote's memory.
/// A code directory with more is compiled only as far as it fits; requests compile the rest.
pub const MAX_BYTES: usize = 8 << 20;
/// At most this many modules.
pub const MAX_MODULES: usize = 4096;
/// How long the compile sandbox may take; a zygote then starts without the cache.
const TIMEOUT: Duration = Duration::from_secs(20);

/// The compiled modules, in a sealed memfd for the zygote.
pub struct Compiled {
    pub fd: OwnedFd,
    pub modules: usize,
    pub bytes: usize,
    pub took: Duration,
}

/// Compiles the function's code in a sandbox of its own. Err says why there is no cache (the
/// zygote then starts without one: slower, never wrong).
pub async fn compile(host: &Arc<Host>, prepared: &Arc<PreparedSandbox>, f: &Function) -> Result<Compiled, String> {
    let started = Instant::now();
    let id = format!("compile-{}", uuid::Uuid::new_v4());
    let launch = Launch {
        id: &id,
        limits: &f.limits,
        // The base environment only: no secrets, since no handler runs.
        envp: cgi::envp(cgi::base_environment(&[])),
        landlock_required: f.landlock == LandlockMode::Required,
        spare: false,
        argv: Some(runtime::compile_argv(&host.config.runtimes)),
    };
    let mut sandbox = sandbox::start(host, prepared, launch).map_err(|e| e.to_string())?;
    let read = async {
        sandbox.wait_exec().await.map_err(|e| e.to_string())?;
        let Some(Stdio { stdin, stdout, stderr }) = sandbox.take_stdio() else {
            return Err("no stdio".to_owned());
        };
        drop(stdin);
        let pipe = |fd| tokio::net::unix::pipe::Receiver::from_owned_fd(fd).map_err(|e| e.to_string());
        // One byte past the limit tells a stream that does not fit from one that just does.
        let (mut out, mut err) = (pipe(stdout)?.take(MAX_BYTES as u64 + 1), pipe(stderr)?.take(4096));
        let (mut stream, mut log) = (Vec::new(), Vec::new());
        let (o, e) = tokio::join!(out.read_to_end(&mut stream), err.read_to_end(&mut log));
        o.and(e).map_err(|e| e.to_string())?;
        Ok((stream, log))
    };
    let read = tokio::time::timeout(TIMEOUT, read).await;
    let ended = sandbox.finish().await;
    let (stream, log) = read.map_err(|_| format!("not done within {TIMEOUT:?}"))??;
    if ended.exit != Some(sandbox::ExitStatus::Exited(0)) {
        let log = String::from_utf8_lossy(&log);
        return Err(format!("the compile sandbox ended {:?}: {}", ended.exit, log.trim()));
    }
    let modules = parse(&stream)?;
    let fd = sealed(&stream).map_err(|e| format!("memfd: {e}"))?;
    Ok(Compiled { fd, modules: modules.len(), bytes: stream.len(), took: started.elapsed() })
}

/// The stream's records, `(path, pyc)`: each a little-endian u32 length and the path (under
/// `/code/`, ending `.py`, no `..`), then a u32 length and the bytes. Checked here so that the
/// zygote's reader trusts only its framing.
pub fn parse(mut stream: &[u8]) -> Result<Vec<(&str, &[u8])>, String> {
    if stream.len() > MAX_BYTES {
        return Err(format!("more than {MAX_BYTES} bytes of compiled code"));
    }
    fn field<'a>(stream: &mut &'a [u8]) -> Result<&'a [u8], String> {
        let (len, rest) = stream.split_first_chunk::<4>().ok_or("a record cut short")?;
        let len = u32::from_le_bytes(*len) as usize;
        let (value, rest) = rest.split_at_checked(len).ok_or("a record cut short")?;
        *stream = rest;
        Ok(value)
    }
    let mut out = Vec::new();
    while !stream.is_empty() {
        let path = field(&mut stream)?;
        let pyc = field(&mut stream)?;
        let path = std::str::from_utf8(path).map_err(|_| "a path that is not UTF-8")?;
        let ok = path.starts_with("/code/")
            && path.ends_with(".py")
            && !path.contains('\0')
            && !path.split('/').any(|c| c == ".." || c == ".");
        if !ok {
            return Err(format!("a path outside /code: {path:?}"));
        }
        out.push((path, pyc));
        if out.len() > MAX_MODULES {
            return Err(format!("more than {MAX_MODULES} modules"));
        }
    }
    Ok(out)
}

/// A memfd holding `bytes`, sealed against any change: the zygote reads what was checked.
fn sealed(bytes: &[u8]) -> std::io::Result<OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    let fd = memfd_create(c"faas-bytecode", MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    let seals = SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL;
    fcntl(std::os::fd::AsRawFd::as_raw_fd(&file), FcntlArg::F_ADD_SEALS(seals))?;
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, pyc: &[u8]) -> Vec<u8> {
        let mut out = (path.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(&(pyc.len() as u32).to_le_bytes());
        out.extend_from_slice(pyc);
        out
    }

    #[test]
    fn records_under_code_parse() {
        let mut s = record("/code/main.py", b"abc");
        s.extend(record("/code/pkg/__init__.py", b""));
        assert_eq!(parse(&s).unwrap(), vec![("/code/main.py", &b"abc"[..]), ("/code/pkg/__init__.py", &b""[..])]);
        assert!(parse(b"").unwrap().is_empty());
    }

    #[test]
    fn paths_outside_code_and_cut_records_are_refused() {
        for path in
            ["/etc/passwd.py", "/code/../etc/x.py", "/code/./x.py", "/code/main.pyc", "code/x.py", "/code/a\0.py"]
        {
            assert!(parse(&record(path, b"x")).is_err(), "{path:?}");
        }
        let whole = record("/code/main.py", b"abcdef");
        for cut in 1..whole.len() {
            assert!(parse(&whole[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = whole.clone();
        bad.push(0);
        assert!(parse(&bad).is_err(), "a stray byte after the last record");
    }

    #[test]
    fn the_memfd_is_sealed() {
        let fd = sealed(b"pyc").unwrap();
        let mut file = std::fs::File::from(fd);
        assert!(file.write_all(b"more").is_err(), "a sealed memfd took a write");
        let mut back = String::new();
        use std::io::{Read, Seek};
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        file.read_to_string(&mut back).unwrap();
        assert_eq!(back, "pyc");
    }
}
