//! The generator: reads the policy table and writes one cBPF program.
//!
//! Layout of the program:
//! 1. The architecture: a foreign one gets [`FOREIGN_ARCH`]. Then the number: an x32 call gets
//!    [`X32`].
//! 2. Each argument-checked rule, in table order: `jeq nr` to its cases, which load the argument
//!    words they test (each only once in a row) and jump to a shared `ret` per verdict. Rules whose
//!    only condition is the policy (bind and listen under the host's network) compile to one `ja`.
//! 3. Every other number: past the table's highest block, [`UNLISTED`]; below it a binary search
//!    down to its 32-syscall block, where `A = 1 << (nr % 32)` and one `jset` per verdict tests
//!    that block's mask for it. What no mask holds is [`UNLISTED`].

use nix::libc;

use super::bpf::{
    data_arg_lo, Asm, Label, To, ALU_AND_K, ALU_LSH_X, DATA_ARCH, DATA_NR, JMP_JEQ_K, JMP_JGE_K, JMP_JSET_K, LD_IMM,
    LD_W_ABS, MISC_TAX,
};
use super::policy::{Cond, Rule, Test, Verdict, FOREIGN_ARCH, RULES, UNLISTED, X32, ZYGOTE_RULES};
use super::{BpfProgram, Policy, SeccompError, AUDIT_ARCH, X32_SYSCALL_BIT};

/// The order in which the shared `ret`s follow the argument checks (only those jumped to).
const RETURNS: [Verdict; 5] = [Verdict::Allow, Verdict::Deny, Verdict::Eperm, Verdict::Eafnosupport, Verdict::Enosys];
/// The order in which a block tests its masks.
const MASKS: [Verdict; 5] = [Verdict::Deny, Verdict::Enosys, Verdict::Eafnosupport, Verdict::Eperm, Verdict::Allow];

/// The value a filter returns for a verdict (seccomp(2)).
pub fn ret_value(v: Verdict, policy: Policy) -> u32 {
    match v {
        // No tracer is ever attached to a zygote: the call fails with ENOSYS, and a request's
        // USER_NOTIF stacked on top outranks it.
        Verdict::Deny if policy.zygote => libc::SECCOMP_RET_TRACE,
        Verdict::Allow => libc::SECCOMP_RET_ALLOW,
        Verdict::Enosys => libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        Verdict::Eperm => libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        Verdict::Eafnosupport => libc::SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32,
        Verdict::Deny => libc::SECCOMP_RET_USER_NOTIF,
    }
}

/// One label per verdict, for the shared `ret`s.
struct Returns([(Verdict, Label); 5]);

impl Returns {
    fn to(&self, v: Verdict) -> Label {
        self.0.iter().find(|(w, _)| *w == v).map(|(_, l)| *l).expect("every verdict has a label")
    }
}

/// Builds the filter for `policy` from [`RULES`].
pub fn compile(policy: Policy) -> Result<BpfProgram, SeccompError> {
    let zygote: &[Rule] = if policy.zygote { ZYGOTE_RULES } else { &[] };
    let rules: Vec<&Rule> = RULES.iter().filter(|r| !zygote.iter().any(|z| z.nr == r.nr)).chain(zygote).collect();
    let (by_args, plain): (Vec<&Rule>, Vec<&Rule>) = rules.iter().partition(|r| !r.cases.is_empty());
    let blocks = rules.iter().map(|r| r.nr).max().unwrap_or(0) / 32 + 1;
    let mut a = Asm::default();
    let returns = Returns(RETURNS.map(|v| (v, a.label())));
    let handlers: Vec<Label> = by_args.iter().map(|_| a.label()).collect();
    let tree = a.label();

    a.stmt(LD_W_ABS, DATA_ARCH);
    a.jump(JMP_JEQ_K, AUDIT_ARCH, To::Next, To::Label(returns.to(FOREIGN_ARCH)));
    a.stmt(LD_W_ABS, DATA_NR);
    a.jump(JMP_JSET_K, X32_SYSCALL_BIT, To::Label(returns.to(X32)), To::Next);
    for (rule, &l) in by_args.iter().zip(&handlers) {
        a.jump(JMP_JEQ_K, rule.nr, To::Label(l), To::Next);
    }
    a.jump(JMP_JGE_K, blocks * 32, To::Label(returns.to(UNLISTED)), To::Next);
    a.ja(tree);

    for (rule, &l) in by_args.iter().zip(&handlers) {
        a.place(l);
        compile_cases(&mut a, rule, policy, &returns);
    }
    for (v, l) in returns.0 {
        if a.is_target(l) {
            a.place(l);
            a.ret(ret_value(v, policy));
        }
    }

    // Binary search on the syscall number down to its 32-syscall block, breadth first.
    let leaves: Vec<Label> = (0..blocks).map(|_| a.label()).collect();
    let mut queue = std::collections::VecDeque::from([(0u32, blocks, tree)]);
    while let Some((lo, hi, l)) = queue.pop_front() {
        a.place(l);
        let mid = (lo + hi) / 2;
        let mut side = |a: &mut Asm, lo: u32, hi: u32| {
            if hi - lo == 1 {
                leaves[lo as usize]
            } else {
                let l = a.label();
                queue.push_back((lo, hi, l));
                l
            }
        };
        let right = side(&mut a, mid, hi);
        let left = side(&mut a, lo, mid);
        a.jump(JMP_JGE_K, mid * 32, To::Label(right), To::Label(left));
    }
    // Each block: A = 1 << (nr % 32), then one bit test per verdict.
    for (block, &l) in (0u32..).zip(&leaves) {
        a.place(l);
        a.stmt(ALU_AND_K, 31);
        a.stmt(MISC_TAX, 0);
        a.stmt(LD_IMM, 1);
        a.stmt(ALU_LSH_X, 0);
        for v in MASKS.into_iter().filter(|&v| v != UNLISTED) {
            let mask =
                plain.iter().filter(|r| r.otherwise == v && r.nr / 32 == block).fold(0u32, |m, r| m | 1 << (r.nr % 32));
            if mask != 0 {
                let skip = a.label();
                a.jump(JMP_JSET_K, mask, To::Next, To::Label(skip));
                a.ret(ret_value(v, policy));
                a.place(skip);
            }
        }
        a.ret(ret_value(UNLISTED, policy));
    }
    a.finish()
}

/// One argument-checked rule: its cases in order, each a chain of tests that all must hold,
/// falling through to the next case and finally to the rule's `otherwise`.
fn compile_cases(a: &mut Asm, rule: &Rule, policy: Policy, returns: &Returns) {
    // The cases that can hold under this policy, with the policy's own conditions taken out.
    let cases: Vec<(Vec<(u8, Test)>, Verdict)> = rule
        .cases
        .iter()
        .filter_map(|case| {
            let mut tests = Vec::new();
            for cond in case.when {
                match *cond {
                    Cond::Arg(i, t) => tests.push((i, t)),
                    Cond::HostNetwork if policy.host_network => {}
                    Cond::HostNetwork => return None,
                }
            }
            Some((tests, case.then))
        })
        .collect();
    // Which argument word the accumulator holds here, on every path (the number, at first).
    let mut loaded: Option<u8> = None;
    for (n, (tests, then)) in cases.iter().enumerate() {
        if tests.is_empty() {
            // Holds always: the cases after it cannot be reached.
            a.ja(returns.to(*then));
            return;
        }
        let last_case = n + 1 == cases.len();
        let miss = if last_case { returns.to(rule.otherwise) } else { a.label() };
        for (m, &(arg, test)) in tests.iter().enumerate() {
            let last_test = m + 1 == tests.len();
            let hit = if last_test { returns.to(*then) } else { a.label() };
            if loaded != Some(arg) {
                a.stmt(LD_W_ABS, data_arg_lo(arg));
                loaded = Some(arg);
            }
            match test {
                Test::Eq(v) => a.jump(JMP_JEQ_K, v, To::Label(hit), To::Label(miss)),
                Test::Ne(v) => a.jump(JMP_JEQ_K, v, To::Label(miss), To::Label(hit)),
                Test::AnyBit(mask) => a.jump(JMP_JSET_K, mask, To::Label(hit), To::Label(miss)),
                Test::In([]) => a.ja(miss),
                Test::In(values) => {
                    for (j, &v) in values.iter().enumerate() {
                        let otherwise = if j + 1 == values.len() { To::Label(miss) } else { To::Next };
                        a.jump(JMP_JEQ_K, v, To::Label(hit), otherwise);
                    }
                }
            }
            if !last_test {
                a.place(hit);
            }
        }
        if !last_case {
            a.place(miss);
            // Every path here failed one of this case's tests, so A holds that test's word:
            // known only if they all test the same one.
            let first = tests[0].0;
            loaded = tests.iter().all(|&(i, _)| i == first).then_some(first);
        }
    }
    if cases.is_empty() {
        a.ja(returns.to(rule.otherwise));
    }
}
