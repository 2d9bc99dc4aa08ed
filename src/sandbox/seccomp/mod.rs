//! The seccomp filter (seccomp(2)): one classic-BPF program per kind of sandbox, generated once at
//! start-up from a policy table and installed by the child as its last step before execve.
//!
//! - `policy.rs`: the policy as data, one rule per syscall with its reason. Docker's default
//!   allow-list, trimmed to what the wrappers and ordinary programs need, is allowed; anything not
//!   listed answers EPERM ("harmless probes return an errno").
//! - io_uring and clone3 answer ENOSYS, so libuv and glibc fall back cleanly (clone3's flags
//!   sit in memory where BPF cannot look; clone's are a register).
//! - Calls that are never legitimate in a function — new namespaces, ptrace, mounting, bpf,
//!   keyrings, kexec, modules, TIOCSTI, personality changes, a seccomp listener of its own,
//!   any syscall of a foreign ABI (i386 `int 0x80`) — return SECCOMP_RET_USER_NOTIF: the caller
//!   stops, the parent receives the syscall number on the listener, names it in the report and
//!   kills the sandbox (outcome `syscall-denied`).
//! - A function may not install seccomp filters of its own (EPERM), socket families are an
//!   allow-list (others answer EAFNOSUPPORT), and with the host's network (`network = true`)
//!   `bind(2)` and `listen(2)` answer EPERM: the table says why for each.
//!
//! - `compile.rs`: the generator, which reads the table. Why not seccompiler's output directly:
//!   it compiles each rule as a linear chain (1,655 instructions for this policy), and on attach
//!   the kernel JITs the filter and emulates it for every syscall number to fill its action cache.
//!   That cost 2.7 ms of a 5 ms sandbox set-up. Here the syscall number dispatches through a binary
//!   search to 32-syscall blocks, each of which tests one bit of a mask (180 instructions).
//! - `bpf.rs`: the cBPF assembler; every jump offset is checked, none is truncated.
//! - `filter-isolated.txt`, `filter-host-network.txt`: the generated programs, disassembled. A
//!   unit test regenerates them and fails with a diff when they differ, so a policy change shows
//!   in review as a change of the program; `FAAS_BLESS=1 cargo test seccomp` rewrites them.
//! - seccompiler stays as the reference: a unit test compiles the same table with it and checks,
//!   with a small cBPF interpreter, that both give the same verdict for every syscall number and
//!   argument case. Another test pins what the README promises, independently of the table.

// The table names x86_64's syscall numbers (libc's SYS_* differ per architecture, and some
// do not exist elsewhere), the filter checks AUDIT_ARCH_X86_64 and x32's bit, and arguments are
// read as little-endian words. Another architecture needs its own table and golden files.
#[cfg(not(target_arch = "x86_64"))]
compile_error!("src/sandbox/seccomp supports x86_64 only: its policy table names x86_64 syscall numbers");

mod bpf;
mod compile;
mod policy;
#[cfg(test)]
mod tests;

use super::BpfProgram;

/// AUDIT_ARCH_X86_64 (linux/audit.h): EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
const AUDIT_ARCH: u32 = 0xc000_003e;
/// x32 syscalls on x86_64 carry this bit; they would bypass a check on the plain number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// What differs between the filters of one daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The sandbox shares the host's network namespace: it must not bind or listen there.
    pub host_network: bool,
    /// The filter of a Python zygote (zygote.rs): a request's, plus `ZYGOTE_RULES`, with
    /// `Deny` as SECCOMP_RET_TRACE so that a request's filter stacked on it decides alone.
    pub zygote: bool,
}

/// Why the filter could not be built: a bug in the generator, caught by the unit tests.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("failed to build the seccomp filter: label {0} is jumped to but never placed")]
    LabelNotPlaced(usize),
    #[error("failed to build the seccomp filter: label {0} is placed twice")]
    LabelPlacedTwice(usize),
    #[error("failed to build the seccomp filter: the jump at instruction {at} goes backwards")]
    Backward { at: usize },
    #[error("failed to build the seccomp filter: the jump at instruction {at} spans {distance} instructions, too far for cBPF")]
    TooFar { at: usize, distance: usize },
    #[error("failed to build the seccomp filter: {0} instructions exceed BPF_MAXINSNS")]
    TooLong(usize),
}

/// Builds the filter for `policy`: see the module docs for the policy and the layout.
pub fn build_filter(policy: Policy) -> Result<BpfProgram, SeccompError> {
    compile::compile(policy)
}

/// The name of a denied call, for reports: `arch` is the notification's AUDIT_ARCH_* value.
/// A call of another ABI is `ABI:NUMBER`, e.g. `i386:20` for getpid through `int 0x80`.
pub fn denied_name(nr: i64, arch: u32) -> String {
    const AUDIT_ARCH_I386: u32 = 0x4000_0003;
    match arch {
        AUDIT_ARCH => syscall_name(nr),
        AUDIT_ARCH_I386 => format!("i386:{nr}"),
        other => format!("arch-{other:#x}:{nr}"),
    }
}

/// The name of a syscall number, for reports of denied calls.
pub fn syscall_name(nr: i64) -> String {
    policy::RULES
        .iter()
        .find(|r| i64::from(r.nr) == nr)
        .map_or_else(|| format!("syscall {nr}"), |r| r.name().to_owned())
}
