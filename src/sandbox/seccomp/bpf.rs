//! A small classic-BPF assembler for seccomp filters (seccomp(2) runs cBPF as filter(2) describes
//! it): instructions with symbolic forward jumps, resolved and range-checked in `finish`. Knows
//! nothing of the policy. For the tests: an interpreter and a disassembler.

use nix::libc;

use super::{BpfProgram, SeccompError};
#[cfg(test)]
use super::{AUDIT_ARCH, X32_SYSCALL_BIT};

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h); all fit in the u16 `code` field.
pub const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
pub const LD_IMM: u16 = (libc::BPF_LD | libc::BPF_IMM) as u16;
pub const ALU_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
pub const ALU_LSH_X: u16 = (libc::BPF_ALU | libc::BPF_LSH | libc::BPF_X) as u16;
pub const MISC_TAX: u16 = (libc::BPF_MISC | libc::BPF_TAX) as u16;
pub const JMP_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
pub const JMP_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
pub const JMP_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
pub const JMP_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
pub const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

// struct seccomp_data (seccomp(2)): nr, arch, instruction_pointer, then args[6] as u64s.
pub const DATA_NR: u32 = 0;
pub const DATA_ARCH: u32 = 4;

/// The offset of argument `i`'s low 32 bits. cBPF loads 32-bit words, and the low word comes
/// first only on a little-endian machine (x86_64; the module refuses to build elsewhere).
pub const fn data_arg_lo(i: u8) -> u32 {
    16 + 8 * i as u32
}

/// The most instructions the kernel accepts in one program (BPF_MAXINSNS).
const MAX_INSNS: usize = libc::BPF_MAXINSNS as usize;

/// A jump target, placed once with [`Asm::place`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// Where a conditional jump goes: the next instruction, or a label further on.
#[derive(Debug, Clone, Copy)]
pub enum To {
    Next,
    Label(Label),
}

enum Insn {
    Stmt {
        code: u16,
        k: u32,
    },
    Jump {
        code: u16,
        k: u32,
        jt: To,
        jf: To,
    },
    /// The unconditional jump: its offset is 32 bits wide, in k.
    Ja(Label),
}

/// Instructions with symbolic forward jumps (cBPF cannot jump backwards).
#[derive(Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    placed_twice: Option<usize>,
}

impl Asm {
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Puts `l` at the next instruction.
    pub fn place(&mut self, l: Label) {
        if self.labels[l.0].replace(self.insns.len()).is_some() {
            self.placed_twice.get_or_insert(l.0);
        }
    }

    /// Whether an instruction so far jumps to `l`.
    pub fn is_target(&self, l: Label) -> bool {
        let to = |t: &To| matches!(t, To::Label(x) if *x == l);
        self.insns.iter().any(|i| match i {
            Insn::Stmt { .. } => false,
            Insn::Jump { jt, jf, .. } => to(jt) || to(jf),
            Insn::Ja(x) => *x == l,
        })
    }

    pub fn stmt(&mut self, code: u16, k: u32) {
        self.insns.push(Insn::Stmt { code, k });
    }

    pub fn jump(&mut self, code: u16, k: u32, jt: To, jf: To) {
        self.insns.push(Insn::Jump { code, k, jt, jf });
    }

    pub fn ja(&mut self, l: Label) {
        self.insns.push(Insn::Ja(l));
    }

    pub fn ret(&mut self, k: u32) {
        self.stmt(RET_K, k);
    }

    /// Resolves the labels. Every jump must go forward to a placed label, and a conditional
    /// jump's offset must fit its 8 bits: nothing is truncated or wrapped.
    pub fn finish(self) -> Result<BpfProgram, SeccompError> {
        if let Some(l) = self.placed_twice {
            return Err(SeccompError::LabelPlacedTwice(l));
        }
        if self.insns.len() > MAX_INSNS {
            return Err(SeccompError::TooLong(self.insns.len()));
        }
        let offset = |pc: usize, l: Label| -> Result<usize, SeccompError> {
            let target = self.labels[l.0].ok_or(SeccompError::LabelNotPlaced(l.0))?;
            target.checked_sub(pc + 1).ok_or(SeccompError::Backward { at: pc })
        };
        let short = |pc: usize, t: To| -> Result<u8, SeccompError> {
            match t {
                To::Next => Ok(0),
                To::Label(l) => {
                    let d = offset(pc, l)?;
                    u8::try_from(d).map_err(|_| SeccompError::TooFar { at: pc, distance: d })
                }
            }
        };
        let mut out = Vec::with_capacity(self.insns.len());
        for (pc, insn) in self.insns.iter().enumerate() {
            out.push(match *insn {
                Insn::Stmt { code, k } => libc::sock_filter { code, jt: 0, jf: 0, k },
                Insn::Jump { code, k, jt, jf } => libc::sock_filter { code, jt: short(pc, jt)?, jf: short(pc, jf)?, k },
                Insn::Ja(l) => {
                    let d = offset(pc, l)?;
                    let k = u32::try_from(d).map_err(|_| SeccompError::TooFar { at: pc, distance: d })?;
                    libc::sock_filter { code: JMP_JA, jt: 0, jf: 0, k }
                }
            });
        }
        Ok(out)
    }
}

/// Runs a cBPF program on a seccomp_data, as the kernel would (for the instructions the
/// generator emits; any other opcode is a test failure).
#[cfg(test)]
pub fn run(prog: &[libc::sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    let word = |off: u32| u32::from_ne_bytes(data[off as usize..off as usize + 4].try_into().unwrap());
    let (mut acc, mut x, mut pc) = (0u32, 0u32, 0usize);
    loop {
        let i = &prog[pc];
        pc += 1;
        let cond = |c: bool| if c { i.jt as usize } else { i.jf as usize };
        match i.code {
            LD_W_ABS => acc = word(i.k),
            LD_IMM => acc = i.k,
            ALU_AND_K => acc &= i.k,
            ALU_LSH_X => acc = acc.wrapping_shl(x),
            MISC_TAX => x = acc,
            JMP_JA => pc += i.k as usize,
            JMP_JEQ_K => pc += cond(acc == i.k),
            JMP_JGE_K => pc += cond(acc >= i.k),
            0x25 => pc += cond(acc > i.k),
            JMP_JSET_K => pc += cond(acc & i.k != 0),
            RET_K => return i.k,
            other => panic!("opcode {other:#x} not in the test interpreter"),
        }
    }
}

/// One instruction per line, jump targets as absolute instruction numbers, and a comment
/// saying what the instruction looks at: it follows, along every path, what the accumulator
/// holds and which syscall numbers can still reach each instruction, so a test of the number
/// (or of its bit in a 32-syscall block) is annotated with the syscalls' names.
#[cfg(test)]
pub fn disassemble(
    prog: &[libc::sock_filter],
    name: &dyn Fn(u32) -> String,
    verdict: &dyn Fn(u32) -> String,
) -> String {
    #[derive(Clone, Copy, PartialEq)]
    enum Val {
        Unknown,
        Nr,
        Arch,
        /// Argument i's low word.
        Arg(u32),
        /// nr % 32.
        NrLow5,
        Imm(u32),
        /// 1 << (nr % 32).
        NrBit,
    }
    /// What holds at an instruction: the accumulator, X, and nr within lo..hi.
    #[derive(Clone, Copy)]
    struct State {
        a: Val,
        x: Val,
        lo: u64,
        hi: u64,
    }
    fn join(s: Option<State>, t: State) -> State {
        let Some(s) = s else { return t };
        let same = |p: Val, q: Val| if p == q { p } else { Val::Unknown };
        State { a: same(s.a, t.a), x: same(s.x, t.x), lo: s.lo.min(t.lo), hi: s.hi.max(t.hi) }
    }

    let mut states: Vec<Option<State>> = vec![None; prog.len() + 1];
    states[0] = Some(State { a: Val::Unknown, x: Val::Unknown, lo: 0, hi: 1 << 32 });
    let mut out = String::new();
    for (pc, i) in prog.iter().enumerate() {
        let Some(s) = states[pc] else {
            out.push_str(&format!("{pc:3}  (unreachable)\n"));
            continue;
        };
        let known_nr = (s.hi - s.lo == 1).then(|| name(s.lo as u32));
        let (jt, jf) = (pc + 1 + i.jt as usize, pc + 1 + i.jf as usize);
        let mut go = |to: usize, st: State| {
            if let Some(slot) = states.get_mut(to) {
                *slot = Some(join(*slot, st));
            }
        };
        let (text, comment) = match i.code {
            LD_W_ABS => {
                let (a, what) = match i.k {
                    DATA_NR => (Val::Nr, "nr".to_owned()),
                    DATA_ARCH => (Val::Arch, "arch".to_owned()),
                    k if k >= 16 && k % 8 == 0 => {
                        let arg = format!("args[{}] (low 32 bits)", (k - 16) / 8);
                        (Val::Arg((k - 16) / 8), known_nr.as_ref().map_or(arg.clone(), |n| format!("{n}: {arg}")))
                    }
                    _ => (Val::Unknown, String::new()),
                };
                go(pc + 1, State { a, ..s });
                (format!("ld   [{}]", i.k), what)
            }
            LD_IMM => {
                go(pc + 1, State { a: Val::Imm(i.k), ..s });
                (format!("ld   #{}", i.k), String::new())
            }
            ALU_AND_K => {
                let a = if s.a == Val::Nr && i.k == 31 { Val::NrLow5 } else { Val::Unknown };
                go(pc + 1, State { a, ..s });
                (format!("and  #{}", i.k), if a == Val::NrLow5 { "nr % 32".to_owned() } else { String::new() })
            }
            MISC_TAX => {
                go(pc + 1, State { x: s.a, ..s });
                ("tax".to_owned(), String::new())
            }
            ALU_LSH_X => {
                let a = if s.a == Val::Imm(1) && s.x == Val::NrLow5 { Val::NrBit } else { Val::Unknown };
                go(pc + 1, State { a, ..s });
                ("lsh  x".to_owned(), if a == Val::NrBit { "1 << (nr % 32)".to_owned() } else { String::new() })
            }
            JMP_JA => {
                go(pc + 1 + i.k as usize, s);
                (format!("ja   {}", pc + 1 + i.k as usize), known_nr.clone().unwrap_or_default())
            }
            RET_K => (format!("ret  #{:#x}", i.k), verdict(i.k)),
            JMP_JEQ_K | JMP_JGE_K | JMP_JSET_K => {
                let op = match i.code {
                    JMP_JEQ_K => "jeq",
                    JMP_JGE_K => "jge",
                    _ => "jset",
                };
                let (mut yes, mut no) = (s, s);
                let (k, comment) = match (s.a, i.code) {
                    (Val::Nr, JMP_JEQ_K) => {
                        (yes.lo, yes.hi) = (u64::from(i.k), u64::from(i.k) + 1);
                        (format!("{}", i.k), name(i.k))
                    }
                    (Val::Nr, JMP_JGE_K) => {
                        yes.lo = s.lo.max(i.k.into());
                        no.hi = s.hi.min(i.k.into());
                        (format!("{}", i.k), format!("nr >= {}", i.k))
                    }
                    (Val::Nr, JMP_JSET_K) if i.k == X32_SYSCALL_BIT => (format!("{:#x}", i.k), "x32 bit".to_owned()),
                    (Val::Arch, JMP_JEQ_K) if i.k == AUDIT_ARCH => {
                        (format!("{:#x}", i.k), "AUDIT_ARCH_X86_64".to_owned())
                    }
                    (Val::NrBit, JMP_JSET_K) => {
                        let names: Vec<String> = (0..32)
                            .filter(|b| i.k & 1 << b != 0)
                            .map(|b| {
                                let nrs: Vec<u64> = (s.lo..s.hi).filter(|n| n % 32 == b).take(2).collect();
                                match nrs[..] {
                                    [n] => name(n as u32),
                                    _ => format!("bit {b}"),
                                }
                            })
                            .collect();
                        (format!("{:#010x}", i.k), names.join(" "))
                    }
                    _ => (format!("{:#x}", i.k), String::new()),
                };
                if yes.lo >= yes.hi {
                    // Cannot be taken: keep the other side's knowledge out of it.
                    yes = s;
                }
                go(jt, yes);
                go(jf, no);
                (format!("{op:<4} #{k:<12} {jt:>3} {jf:>3}"), comment)
            }
            other => (format!("code {other:#06x} #{:#x}", i.k), String::new()),
        };
        let line =
            if comment.is_empty() { format!("{pc:3}  {text}") } else { format!("{pc:3}  {text:<32} ; {comment}") };
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(distance: usize) -> Result<BpfProgram, SeccompError> {
        let mut a = Asm::default();
        let far = a.label();
        a.jump(JMP_JEQ_K, 0, To::Label(far), To::Next);
        for _ in 0..distance {
            a.ret(0);
        }
        a.place(far);
        a.ret(1);
        a.finish()
    }

    #[test]
    fn conditional_jumps_fit_in_eight_bits_or_fail() {
        assert_eq!(program(255).unwrap()[0].jt, 255);
        assert!(matches!(program(256), Err(SeccompError::TooFar { at: 0, distance: 256 })));
    }

    #[test]
    fn long_unconditional_jumps_resolve() {
        let mut a = Asm::default();
        let far = a.label();
        a.ja(far);
        for _ in 0..1000 {
            a.ret(0);
        }
        a.place(far);
        a.ret(1);
        let prog = a.finish().unwrap();
        assert_eq!((prog[0].code, prog[0].k), (JMP_JA, 1000));
        assert_eq!(run(&prog, 0, 0, [0; 6]), 1);
    }

    #[test]
    fn backward_and_dangling_jumps_fail() {
        let mut a = Asm::default();
        let back = a.label();
        a.place(back);
        a.ret(0);
        a.ja(back);
        assert!(matches!(a.finish(), Err(SeccompError::Backward { at: 1 })));

        let mut a = Asm::default();
        let back = a.label();
        a.place(back);
        a.jump(JMP_JEQ_K, 0, To::Next, To::Label(back));
        assert!(matches!(a.finish(), Err(SeccompError::Backward { at: 0 })));

        let mut a = Asm::default();
        let nowhere = a.label();
        a.jump(JMP_JEQ_K, 0, To::Label(nowhere), To::Next);
        a.ret(0);
        assert!(matches!(a.finish(), Err(SeccompError::LabelNotPlaced(_))));

        let mut a = Asm::default();
        let twice = a.label();
        a.place(twice);
        a.ret(0);
        a.place(twice);
        a.ret(1);
        assert!(matches!(a.finish(), Err(SeccompError::LabelPlacedTwice(_))));
    }

    #[test]
    fn programs_over_the_kernel_limit_fail() {
        let mut a = Asm::default();
        for _ in 0..=MAX_INSNS {
            a.ret(0);
        }
        assert!(matches!(a.finish(), Err(SeccompError::TooLong(4097))));
    }
}
