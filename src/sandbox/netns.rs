//! Network namespaces for sandboxes without `network = true`: each running sandbox has one of
//! its own, so two sandboxes share no abstract unix socket names and see none of each other's
//! sockets in `/proc/net` (network_namespaces(7)).
//!
//! Making a namespace costs ~0.3 ms of kernel work (loopback, per-namespace sysctls), and
//! freeing one is deferred to a kernel worker. So namespaces are recycled: a sandbox that finds
//! none free gets a fresh one from clone3 (CLONE_NEWNET), the parent keeps an fd to it, and
//! after teardown it goes back to the pool. A namespace is reused only once every process of
//! its sandbox is gone: sockets live only as long as some process holds them, the sandbox
//! cannot hand one to anyone outside (no shared abstract names, a private `/tmp`, `read_only`
//! paths hold no sockets, pidfd_getfd and setns are denied), and without CAP_NET_ADMIN it
//! cannot change the namespace's interfaces or sysctls. What the next sandbox gets is the state
//! a new namespace has: only `lo`, and it down.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

/// Free network namespaces, each held by an fd.
#[derive(Debug)]
pub struct NetnsPool {
    free: Mutex<Vec<OwnedFd>>,
    max_free: usize,
}

impl NetnsPool {
    /// A pool that keeps at most `max_free` idle namespaces, seeded with `first`.
    pub fn new(first: OwnedFd, max_free: usize) -> NetnsPool {
        NetnsPool { free: Mutex::new(vec![first]), max_free: max_free.max(1) }
    }

    /// A free namespace, if there is one; otherwise the caller asks clone3 for a new one.
    pub fn take(&self) -> Option<OwnedFd> {
        self.free.lock().expect("netns pool lock is never poisoned: nothing panics under it").pop()
    }

    /// Returns a namespace whose sandbox is gone (see the module docs for why that suffices).
    pub fn give(&self, ns: OwnedFd) {
        let mut free = self.free.lock().expect("netns pool lock is never poisoned");
        if free.len() < self.max_free {
            free.push(ns);
        }
    }
}

/// An fd for the network namespace of the live process `pid` (ours to reap, so the pid
/// cannot have been reused).
pub fn netns_of(pid: i32) -> io::Result<OwnedFd> {
    Ok(File::open(format!("/proc/{pid}/ns/net"))?.into())
}
