//! The filter against seccompiler (built from the same table, the plain way), against the
//! README (built from nothing but libc's constants), and against its checked-in disassembly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use nix::libc;
use seccompiler::{
    SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition, SeccompFilter, SeccompRule,
};

use super::bpf::{disassemble, run, RET_K};
use super::compile::ret_value;
use super::policy::{Cond, Rule, Test, Verdict, RULES, UNLISTED, ZYGOTE_RULES};
use super::*;

// Written out, not taken from the generator, so the pin test below stays independent of it.
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

/// How severe a verdict is (seccomp(2): the most severe of all filters wins).
fn severity(v: u32) -> u32 {
    match v & 0xffff_0000 {
        SECCOMP_RET_KILL_PROCESS => 7,
        0 => 6,
        0x0003_0000 => 5,
        SECCOMP_RET_ERRNO => 4,
        SECCOMP_RET_USER_NOTIF => 3,
        0x7ff0_0000 => 2,
        0x7ffc_0000 => 1,
        _ => 0,
    }
}

/// A condition on the arguments as a disjunction of conjunctions of seccompiler conditions:
/// `[]` never holds, `[[]]` always does.
type Dnf = Vec<Vec<SeccompCondition>>;

fn and(p: &Dnf, q: &Dnf) -> Dnf {
    p.iter().flat_map(|x| q.iter().map(move |y| [x.clone(), y.clone()].concat())).collect()
}

/// `cond`, or its negation, in seccompiler's terms (it has no "any bit" test: one rule per bit).
fn literal(cond: Cond, holds: bool, policy: Policy) -> Dnf {
    let c = |arg, op, v| SeccompCondition::new(arg, Len::Dword, op, v).unwrap();
    let bits = |m: u32| (0..32).map(|b| 1u64 << b).filter(move |b| u64::from(m) & b != 0);
    match (cond, holds) {
        (Cond::HostNetwork, holds) => {
            if policy.host_network == holds {
                vec![vec![]]
            } else {
                vec![]
            }
        }
        (Cond::Arg(i, Test::Eq(v)), true) | (Cond::Arg(i, Test::Ne(v)), false) => vec![vec![c(i, Op::Eq, v.into())]],
        (Cond::Arg(i, Test::Ne(v)), true) | (Cond::Arg(i, Test::Eq(v)), false) => vec![vec![c(i, Op::Ne, v.into())]],
        (Cond::Arg(i, Test::In(vs)), true) => vs.iter().map(|&v| vec![c(i, Op::Eq, v.into())]).collect(),
        (Cond::Arg(i, Test::In(vs)), false) => vec![vs.iter().map(|&v| c(i, Op::Ne, v.into())).collect()],
        (Cond::Arg(i, Test::AnyBit(m)), true) => bits(m).map(|b| vec![c(i, Op::MaskedEq(b), b)]).collect(),
        (Cond::Arg(i, Test::AnyBit(m)), false) => vec![vec![c(i, Op::MaskedEq(m.into()), 0)]],
    }
}

/// When `rule` answers `v`: a case decides if its conditions hold and no earlier case's did.
fn when_verdict(rule: &Rule, v: Verdict, policy: Policy) -> Dnf {
    let mut out = Dnf::new();
    let mut none_before: Dnf = vec![vec![]];
    for case in rule.cases {
        let holds = case.when.iter().fold(vec![vec![]], |acc, &c| and(&acc, &literal(c, true, policy)));
        let fails: Dnf = case.when.iter().flat_map(|&c| literal(c, false, policy)).collect();
        if case.then == v {
            out.extend(and(&none_before, &holds));
        }
        none_before = and(&none_before, &fails);
    }
    if rule.otherwise == v {
        out.extend(none_before);
    }
    out
}

/// One seccompiler filter per verdict other than the unlisted one, each matching exactly the
/// calls the table gives that verdict, plus one answering UNLISTED to everything the others
/// do not claim; the kernel's rule (most severe wins) combines them.
fn reference(policy: Policy) -> Vec<Vec<libc::sock_filter>> {
    let arch = std::env::consts::ARCH.try_into().unwrap();
    let compile = |verdicts: &[Verdict], miss, hit| -> Vec<libc::sock_filter> {
        let mut rules = BTreeMap::new();
        for rule in RULES {
            let dnf: Dnf = verdicts.iter().flat_map(|&v| when_verdict(rule, v, policy)).collect();
            if dnf.is_empty() {
                continue;
            }
            let chain = if dnf.iter().any(Vec::is_empty) {
                vec![]
            } else {
                dnf.into_iter().map(|conj| SeccompRule::new(conj).unwrap()).collect()
            };
            rules.insert(i64::from(rule.nr), chain);
        }
        let prog: seccompiler::BpfProgram = SeccompFilter::new(rules, miss, hit, arch).unwrap().try_into().unwrap();
        prog.into_iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect()
    };
    let action = |v: Verdict| match v {
        Verdict::Allow => SeccompAction::Allow,
        Verdict::Enosys => SeccompAction::Errno(libc::ENOSYS as u32),
        Verdict::Eperm => SeccompAction::Errno(libc::EPERM as u32),
        Verdict::Eafnosupport => SeccompAction::Errno(libc::EAFNOSUPPORT as u32),
        // seccompiler has no USER_NOTIF action; TRACE stands in and is mapped below.
        Verdict::Deny => SeccompAction::Trace(1),
    };
    let all = [Verdict::Allow, Verdict::Enosys, Verdict::Eperm, Verdict::Eafnosupport, Verdict::Deny];
    let listed: Vec<Verdict> = all.into_iter().filter(|&v| v != UNLISTED).collect();
    let mut filters = vec![compile(&listed, action(UNLISTED), SeccompAction::Allow)];
    for v in listed.into_iter().filter(|&v| v != Verdict::Allow) {
        filters.push(compile(&[v], SeccompAction::Allow, action(v)));
    }
    for i in filters.iter_mut().flatten() {
        if i.code == RET_K && i.k == 0x7ff0_0001 {
            i.k = SECCOMP_RET_USER_NOTIF;
        }
    }
    filters
}

/// Argument sets for one argument-checked rule: for every argument it looks at, zero, all ones,
/// every single bit, each constant the rule names (also with the high word set, which the
/// filter must ignore), in every combination.
fn sweep(rule: &Rule) -> Vec<[u64; 6]> {
    let mut per_arg: BTreeMap<u8, BTreeSet<u64>> = BTreeMap::new();
    for cond in rule.cases.iter().flat_map(|c| c.when) {
        let Cond::Arg(i, test) = *cond else { continue };
        let values = per_arg.entry(i).or_insert_with(|| {
            let mut v: BTreeSet<u64> = (0..33).map(|b| 1u64 << b).collect();
            v.extend([0, 0xffff_ffff, 0xffff_ffff_0000_0000]);
            v
        });
        let named: Vec<u32> = match test {
            Test::Eq(v) | Test::Ne(v) | Test::AnyBit(v) => vec![v],
            Test::In(vs) => vs.to_vec(),
        };
        for v in named {
            values.extend([u64::from(v), u64::from(v) | 1 << 32]);
        }
    }
    let mut out = vec![[0u64; 6]];
    for (&i, values) in &per_arg {
        out = out
            .iter()
            .flat_map(|args| {
                values.iter().map(move |&v| {
                    let mut a = *args;
                    a[usize::from(i)] = v;
                    a
                })
            })
            .collect();
    }
    out
}

#[test]
fn same_verdicts_as_the_seccompiler_reference() {
    let cases: Vec<[u64; 6]> = vec![
        [0; 6],
        [libc::SIGCHLD as u64, 0, 0, 0, 0, 0],
        [(libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0],
        [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
        [libc::CLONE_NEWNET as u64 | libc::SIGCHLD as u64, 0, 0, 0, 0, 0],
        [0x80, 0, 0, 0, 0, 0],
        [0, libc::TIOCSTI, 0, 0, 0, 0],
        [0, libc::TIOCLINUX, 0, 0, 0, 0],
        [0, libc::TCGETS, 0, 0, 0, 0],
        [0xffff_ffff, 0, 0, 0, 0, 0],
        [0x0040000, 0, 0, 0, 0, 0],
        // seccomp(SET_MODE_FILTER, 0 | NEW_LISTENER | TSYNC), seccomp(GET_ACTION_AVAIL)
        [1, 0, 0, 0, 0, 0],
        [1, 1 << 3, 0, 0, 0, 0],
        [1, 1 << 3 | 1, 0, 0, 0, 0],
        [2, 0, 0, 0, 0, 0],
        // prctl(PR_SET_SECCOMP, 2), prctl(PR_SET_NAME)
        [libc::PR_SET_SECCOMP as u64, 2, 0, 0, 0, 0],
        [libc::PR_SET_NAME as u64, 0, 0, 0, 0, 0],
        // socket(family, type, protocol)
        [libc::AF_UNIX as u64, 1, 0, 0, 0, 0],
        [libc::AF_INET as u64, 2, 0, 0, 0, 0],
        [libc::AF_INET6 as u64, 1, 0, 0, 0, 0],
        [libc::AF_NETLINK as u64, 3, libc::NETLINK_ROUTE as u64, 0, 0, 0],
        [libc::AF_NETLINK as u64, 3, libc::NETLINK_KOBJECT_UEVENT as u64, 0, 0, 0],
        [libc::AF_NETLINK as u64, 3, libc::NETLINK_AUDIT as u64, 0, 0, 0],
        [libc::AF_VSOCK as u64, 1, 0, 0, 0, 0],
        [libc::AF_PACKET as u64, 3, 0, 0, 0, 0],
        [libc::AF_ALG as u64, 5, 0, 0, 0, 0],
        [1 << 32 | libc::AF_UNIX as u64, 1, 0, 0, 0, 0],
    ];
    let numbers = (0..600u32).chain([1000, 0x3fff_ffff]);
    let sweeps: BTreeMap<u32, Vec<[u64; 6]>> =
        RULES.iter().filter(|r| !r.cases.is_empty()).map(|r| (r.nr, sweep(r))).collect();
    for host_network in [false, true] {
        let policy = Policy { host_network, zygote: false };
        let ours = build_filter(policy).unwrap();
        let zygote = build_filter(Policy { host_network, zygote: true }).unwrap();
        let reference = reference(policy);
        for nr in numbers.clone() {
            for args in cases.iter().chain(sweeps.get(&nr).into_iter().flatten()) {
                let theirs =
                    reference.iter().map(|f| run(f, nr, AUDIT_ARCH, *args)).max_by_key(|v| severity(*v)).unwrap();
                let verdict = run(&ours, nr, AUDIT_ARCH, *args);
                assert_eq!(
                    verdict,
                    theirs,
                    "syscall {nr} ({}) with args {args:x?}, {policy:?}",
                    syscall_name(nr.into())
                );
                // A zygote's child stacks the request's filter on the zygote's: the kernel takes
                // the most severe verdict, which must be the request's alone.
                let stacked = [verdict, run(&zygote, nr, AUDIT_ARCH, *args)].into_iter().max_by_key(|v| severity(*v));
                assert_eq!(
                    stacked,
                    Some(verdict),
                    "syscall {nr} ({}) with args {args:x?}: a zygote's child gets another verdict than a request",
                    syscall_name(nr.into())
                );
            }
        }
        for rule in ZYGOTE_RULES {
            let nr = rule.nr;
            for args in cases.iter().chain(sweeps.get(&nr).into_iter().flatten()) {
                assert_eq!(run(&zygote, nr, AUDIT_ARCH, *args), SECCOMP_RET_ALLOW, "the zygote may {}", rule.name());
            }
        }
        // Any call a request is refused (and reported) the zygote is refused too, unreported.
        for nr in [libc::SYS_ptrace, libc::SYS_bpf, libc::SYS_kexec_load, libc::SYS_init_module, libc::SYS_umount2] {
            assert_eq!(run(&zygote, nr as u32, AUDIT_ARCH, [0; 6]), libc::SECCOMP_RET_TRACE, "{nr}");
        }
        assert!(ours.len() < 320, "{} instructions", ours.len());
    }
}

/// The policy itself, not only its compilation: what the README names as refused is denied
/// (a typo turning one into `Allow` in the table would pass the reference test above, which is
/// built from the same table). Written with libc's constants only, never with the table.
#[test]
fn the_policy_refuses_what_the_readme_names() {
    let f = build_filter(Policy { host_network: false, zygote: false }).unwrap();
    let host = build_filter(Policy { host_network: true, zygote: false }).unwrap();
    let verdict = |f: &BpfProgram, nr: i64, args: [u64; 6]| run(f, nr as u32, AUDIT_ARCH, args);
    let eperm = SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let eafnosupport = SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32;
    for nr in [
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_setns,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_reboot,
        libc::SYS_chroot,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_pidfd_getfd,
        libc::SYS_kcmp,
        libc::SYS_syslog,
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS_modify_ldt,
        libc::SYS_swapon,
    ] {
        assert_eq!(verdict(&f, nr, [0; 6]), SECCOMP_RET_USER_NOTIF, "{} must be denied and reported", syscall_name(nr));
    }
    for flag in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWNET, libc::CLONE_NEWPID] {
        assert_eq!(verdict(&f, libc::SYS_unshare, [flag as u64, 0, 0, 0, 0, 0]), SECCOMP_RET_USER_NOTIF);
        assert_eq!(verdict(&f, libc::SYS_clone, [flag as u64, 0, 0, 0, 0, 0]), SECCOMP_RET_USER_NOTIF);
    }
    assert_eq!(verdict(&f, libc::SYS_ioctl, [0, libc::TIOCSTI, 0, 0, 0, 0]), SECCOMP_RET_USER_NOTIF);
    assert_eq!(verdict(&f, libc::SYS_personality, [8, 0, 0, 0, 0, 0]), SECCOMP_RET_USER_NOTIF);
    assert_eq!(verdict(&f, libc::SYS_seccomp, [1, 1 << 3, 0, 0, 0, 0]), SECCOMP_RET_USER_NOTIF, "own listener");
    assert_eq!(verdict(&f, libc::SYS_seccomp, [1, 0, 0, 0, 0, 0]), eperm, "stacked filter");
    assert_eq!(verdict(&f, libc::SYS_prctl, [libc::PR_SET_SECCOMP as u64, 2, 0, 0, 0, 0]), eperm);
    for nr in [libc::SYS_io_uring_setup, libc::SYS_clone3] {
        assert_eq!(verdict(&f, nr, [0; 6]), SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
    }
    for family in [libc::AF_VSOCK, libc::AF_PACKET, libc::AF_ALG, libc::AF_KEY, libc::AF_BLUETOOTH, libc::AF_TIPC] {
        assert_eq!(verdict(&f, libc::SYS_socket, [family as u64, 1, 0, 0, 0, 0]), eafnosupport, "family {family}");
    }
    for proto in [libc::NETLINK_KOBJECT_UEVENT, libc::NETLINK_AUDIT, libc::NETLINK_SOCK_DIAG, libc::NETLINK_NETFILTER] {
        assert_eq!(
            verdict(&f, libc::SYS_socket, [libc::AF_NETLINK as u64, 3, proto as u64, 0, 0, 0]),
            eafnosupport,
            "netlink {proto}"
        );
    }
    for nr in [libc::SYS_bind, libc::SYS_listen] {
        assert_eq!(verdict(&f, nr, [3, 0, 0, 0, 0, 0]), SECCOMP_RET_ALLOW, "no network: an empty namespace");
        assert_eq!(verdict(&host, nr, [3, 0, 0, 0, 0, 0]), eperm, "host network");
    }
}

#[test]
fn foreign_arch_is_reported_and_x32_refused() {
    let ours = build_filter(Policy { host_network: false, zygote: false }).unwrap();
    assert_eq!(
        run(&ours, libc::SYS_read as u32, 0x4000_0003, [0; 6]),
        SECCOMP_RET_USER_NOTIF,
        "reported, not a bare SIGSYS"
    );
    assert_eq!(
        run(&ours, libc::SYS_read as u32 | X32_SYSCALL_BIT, AUDIT_ARCH, [0; 6]),
        SECCOMP_RET_ERRNO | libc::EPERM as u32
    );
}

#[test]
fn one_rule_per_syscall_each_with_a_reason() {
    let mut seen = BTreeMap::new();
    for rule in RULES {
        if let Some(other) = seen.insert(rule.nr, rule.sys) {
            panic!("{} and {other} are both syscall {}", rule.sys, rule.nr);
        }
        assert!(rule.sys.starts_with("SYS_") && !rule.why.trim().is_empty(), "{}: no reason given", rule.sys);
        for case in rule.cases {
            assert!(!case.when.is_empty(), "{}: a case without a condition belongs in `otherwise`", rule.sys);
        }
    }
}

#[test]
fn names() {
    assert_eq!(syscall_name(libc::SYS_mount), "mount");
    assert_eq!(syscall_name(libc::SYS_ptrace), "ptrace");
    assert_eq!(syscall_name(99999), "syscall 99999");
    assert_eq!(denied_name(libc::SYS_mount, AUDIT_ARCH), "mount");
    assert_eq!(denied_name(20, 0x4000_0003), "i386:20");
}

/// What a golden file holds: a header, then the disassembly.
fn listing(policy: Policy) -> String {
    let prog = build_filter(policy).unwrap();
    let name = |nr: u32| syscall_name(nr.into());
    let verdict = |k: u32| {
        let all = [Verdict::Allow, Verdict::Enosys, Verdict::Eperm, Verdict::Eafnosupport, Verdict::Deny];
        all.into_iter().find(|&v| ret_value(v, policy) == k).map_or_else(String::new, |v| format!("{v:?}"))
    };
    format!(
        "# The seccomp filter for {policy:?}: {} instructions, generated from policy.rs.\n\
         # `FAAS_BLESS=1 cargo test seccomp` rewrites this file; a unit test checks it is current.\n\
         # Each line: index, instruction, operand, then for a conditional jump the index it goes to\n\
         # if true and if false; after `;` what the instruction looks at. Deny is SECCOMP_RET_USER_NOTIF:\n\
         # the call stops, the daemon names it and kills the sandbox.\n\
         {}",
        prog.len(),
        disassemble(&prog, &name, &verdict)
    )
}

/// A line diff (longest common subsequence), changed lines with two lines of context.
fn diff(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut ops = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let near_change = |k: usize| ops[k.saturating_sub(2)..(k + 3).min(ops.len())].iter().any(|(c, _)| *c != ' ');
    let mut out = String::new();
    let mut skipped = false;
    for (k, (c, line)) in ops.iter().enumerate() {
        if near_change(k) {
            if skipped {
                out.push_str("  ...\n");
                skipped = false;
            }
            out.push_str(&format!("{c} {line}\n"));
        } else {
            skipped = true;
        }
    }
    out
}

#[test]
fn the_checked_in_disassembly_is_current() {
    let bless = std::env::var_os("FAAS_BLESS").is_some_and(|v| !v.is_empty() && v != "0");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sandbox/seccomp");
    let mut stale = Vec::new();
    for (file, host_network, zygote) in [
        ("filter-isolated.txt", false, false),
        ("filter-host-network.txt", true, false),
        ("filter-zygote.txt", false, true),
    ] {
        let path = dir.join(file);
        let now = listing(Policy { host_network, zygote });
        if bless {
            std::fs::write(&path, &now).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            continue;
        }
        let kept = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("cannot read {}: {e}; `FAAS_BLESS=1 cargo test seccomp` writes it", path.display())
        });
        if kept != now {
            stale.push(format!("--- {file} (checked in)\n+++ {file} (generated now)\n{}", diff(&kept, &now)));
        }
    }
    assert!(
        stale.is_empty(),
        "the seccomp program differs from its checked-in disassembly. If the policy change is intended, run \
         `FAAS_BLESS=1 cargo test seccomp` and commit the files, so the change shows in review.\n\n{}",
        stale.join("\n")
    );
}
