//! faas: a systemd-socket-activated HTTP front end that runs every request in a fresh sandbox.
//! `main` parses flags, takes the listening sockets systemd passed, then builds the tokio
//! runtime and hands over to `cli::run`; the one error that comes back becomes a log line
//! (the whole cause chain) and an exit code.

#![deny(unsafe_code)]

mod auth;
mod bytecode;
mod cgi;
mod cli;
mod config;
mod deploy;
mod egress;
mod function;
mod http;
mod invoke;
mod log;
mod metrics;
mod proxy;
mod registry;
mod runtime;
mod sandbox;
mod schedule;
mod secrets;
mod serve;
mod units;
mod warm;

use clap::Parser;

/// Raises the soft open-files limit to the hard one (systemd's default soft limit is 1024,
/// and every connection and every sandbox's pipes take fds). Sandboxes get their own
/// `limits.nofile`, so nothing of this reaches a function.
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("failed to raise the open-files limit from {soft} to {hard}: {e}");
            }
        }
    }
}

/// Makes sure fds 0, 1 and 2 are open (on /dev/null if they were not): otherwise the first
/// pipe we make could land on one of them, and a child's dup2 onto 0/1/2 would clobber it.
fn ensure_stdio() {
    use std::os::fd::IntoRawFd;
    for fd in 0..3 {
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD) == Err(nix::errno::Errno::EBADF) {
            // open(2) returns the lowest free fd, which is this one; it stays open for good.
            if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
                let _ = null.into_raw_fd();
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    ensure_stdio();
    let args = cli::Cli::parse();
    log::init(args.verbose);
    raise_nofile();
    // Listen fds first, before anything could open an fd and before threads exist.
    let listeners = match &args.command {
        cli::Command::Serve(serve) => match serve::take_listeners(&serve.listen, serve.admin_socket.as_deref()) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("{}", chain(&e.into()));
                return std::process::ExitCode::from(1);
            }
        },
        _ => Vec::new(),
    };
    // The commands that make sandboxes, before the runtime's threads, which inherit it. Not
    // the others: they may run the operator's own tools (ssh for a remote deploy).
    if matches!(args.command, cli::Command::Serve(_) | cli::Command::Invoke(_)) {
        if let Err(e) = sandbox::narrow_bounding_set() {
            tracing::debug!("the capability bounding set stays as it is: {e}");
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("failed to start the tokio runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(args, listeners)) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            tracing::error!("{}", chain(&e));
            std::process::ExitCode::from(1)
        }
    }
}

/// The error and its causes, as `{e:#}` writes them (`what failed: why: why`), except that a
/// cause the message before it already quotes is not said twice: our error enums put their
/// source in their own message, so that a journal line written with `{e}` is whole, and
/// return it from `source()` as well.
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.is_empty() {
            out = text;
        } else if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let os = || std::io::Error::from_raw_os_error(98);
        // A typed error that quotes its source: the source is not said again.
        let typed = serve::ServeError::Listen { addr: "127.0.0.1:80".into(), source: os() };
        assert_eq!(chain(&typed.into()), format!("failed to listen on 127.0.0.1:80: {}", os()));
        // Context over a bare OS error: the cause follows, as with `{e:#}`.
        let bare = anyhow::Error::new(os()).context("failed to read the body from stdin");
        assert_eq!(chain(&bare), format!("failed to read the body from stdin: {}", os()));
    }
}
