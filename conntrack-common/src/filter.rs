//! Capture filters (`-f EXPR`): the classic BPF programs libpcap compiles tcpdump expressions
//! into, run by one interpreter on both engines, so they keep the same packets by
//! construction. The host runs a whole program with [`run`]; the eBPF program runs [`step`]
//! once per `bpf_loop` iteration over the instructions it holds in a map ([`Program`]).
//!
//! The semantics are libpcap's `bpf_filter` (what `pcap_offline_filter`, and so `tcpdump -r`,
//! runs): a load beyond the captured bytes, or a division by zero, ends the program with 0
//! (the packet is rejected); `len` is the packet's length on the wire; a program returns the
//! number of bytes to keep, and any non-zero value keeps the packet. Classic BPF jumps only
//! forward, so a program ends within as many steps as it has instructions.

/// One classic BPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    /// Jump offset when the condition holds.
    pub jt: u8,
    /// Jump offset when it does not.
    pub jf: u8,
    pub k: u32,
}

/// Longest program (libpcap's and Linux's `BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

/// Scratch memory words (`BPF_MEMWORDS`).
pub const MEM_WORDS: usize = 16;

/// A program as the eBPF side holds it (the value of its filter map).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Program {
    /// Instructions in use (1..=`MAX_INSNS`).
    pub len: u32,
    pub _pad: u32,
    pub insns: [Insn; MAX_INSNS],
}

/// The registers of a running program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    /// The accumulator.
    pub a: u32,
    /// The index register.
    pub x: u32,
    /// The next instruction.
    pub pc: u32,
    pub _pad: u32,
    /// `M[]`, the scratch memory.
    pub mem: [u32; MEM_WORDS],
}

/// The bytes a filter reads.
pub trait Packet {
    /// The packet's length on the wire (`len`).
    fn wire_len(&self) -> u32;
    /// `size` (1, 2 or 4) bytes at `off`, big-endian, or `None` beyond the captured bytes.
    fn load(&self, off: u64, size: u32) -> Option<u32>;
}

/// A captured packet in memory (the host's case).
pub struct Captured<'a> {
    pub data: &'a [u8],
    pub wire_len: u32,
}

impl Packet for Captured<'_> {
    #[inline(always)]
    fn wire_len(&self) -> u32 {
        self.wire_len
    }

    #[inline(always)]
    fn load(&self, off: u64, size: u32) -> Option<u32> {
        let start = usize::try_from(off).ok()?;
        let bytes = self.data.get(start..start.checked_add(size as usize)?)?;
        Some(bytes.iter().fold(0u32, |v, &b| v << 8 | b as u32))
    }
}

// Instruction classes and fields (`BPF_CLASS`, `BPF_SIZE`, `BPF_MODE`, `BPF_OP`, `BPF_SRC`).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const STX: u16 = 0x03;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;

const W: u16 = 0x00;
const H: u16 = 0x08;
const B: u16 = 0x10;

const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MEM: u16 = 0x60;
const LEN: u16 = 0x80;
const MSH: u16 = 0xa0;

const ADD: u16 = 0x00;
const SUB: u16 = 0x10;
const MUL: u16 = 0x20;
const DIV: u16 = 0x30;
const OR: u16 = 0x40;
const AND: u16 = 0x50;
const LSH: u16 = 0x60;
const RSH: u16 = 0x70;
const NEG: u16 = 0x80;
const MOD: u16 = 0x90;
const XOR: u16 = 0xa0;

const JA: u16 = 0x00;
const JEQ: u16 = 0x10;
const JGT: u16 = 0x20;
const JGE: u16 = 0x30;
const JSET: u16 = 0x40;

/// `BPF_X`: the operand is X (for RET, `BPF_A`: the accumulator is returned).
const SRC_X: u16 = 0x08;
const RET_A: u16 = 0x10;
const TAX: u16 = 0x00;
const TXA: u16 = 0x80;

/// Runs the instruction at `m.pc`, `insn`: `Some(n)` when the program ends with `n` (0 rejects
/// the packet), `None` when it goes on at the new `m.pc`.
#[inline(always)]
pub fn step<P: Packet>(m: &mut Machine, insn: Insn, pkt: &P) -> Option<u32> {
    let k = insn.k;
    let code = insn.code;
    let next = m.pc.wrapping_add(1);
    m.pc = next;
    match code & 0x07 {
        LD => {
            m.a = match code & 0xe0 {
                IMM => k,
                ABS => match load(pkt, k as u64, code) {
                    Some(v) => v,
                    None => return Some(0),
                },
                IND => match load(pkt, m.x as u64 + k as u64, code) {
                    Some(v) => v,
                    None => return Some(0),
                },
                MEM => mem_get(m, k),
                LEN => pkt.wire_len(),
                _ => return Some(0),
            }
        }
        LDX => {
            m.x = match code & 0xe0 {
                IMM => k,
                MEM => mem_get(m, k),
                LEN => pkt.wire_len(),
                // The IPv4 header length: 4 * the low nibble of the byte at k.
                MSH => match pkt.load(k as u64, 1) {
                    Some(v) => (v & 0xf) << 2,
                    None => return Some(0),
                },
                _ => return Some(0),
            }
        }
        ST => mem_set(m, k, m.a),
        STX => mem_set(m, k, m.x),
        ALU => {
            let v = if code & SRC_X != 0 { m.x } else { k };
            m.a = match code & 0xf0 {
                ADD => m.a.wrapping_add(v),
                SUB => m.a.wrapping_sub(v),
                MUL => m.a.wrapping_mul(v),
                DIV => match m.a.checked_div(v) {
                    Some(q) => q,
                    None => return Some(0),
                },
                MOD => match m.a.checked_rem(v) {
                    Some(r) => r,
                    None => return Some(0),
                },
                OR => m.a | v,
                AND => m.a & v,
                XOR => m.a ^ v,
                // libpcap: a shift by 32 or more gives 0.
                LSH => m.a.checked_shl(v).unwrap_or(0),
                RSH => m.a.checked_shr(v).unwrap_or(0),
                NEG => m.a.wrapping_neg(),
                _ => return Some(0),
            }
        }
        JMP => {
            let v = if code & SRC_X != 0 { m.x } else { k };
            let taken = match code & 0xf0 {
                JA => {
                    m.pc = next.saturating_add(k);
                    return None;
                }
                JEQ => m.a == v,
                JGT => m.a > v,
                JGE => m.a >= v,
                JSET => m.a & v != 0,
                _ => return Some(0),
            };
            let off = if taken { insn.jt } else { insn.jf };
            m.pc = next.saturating_add(off as u32);
        }
        RET => {
            return Some(match code & 0x18 {
                RET_A => m.a,
                0 => k,
                _ => 0,
            });
        }
        MISC => {
            if code & 0xf8 == TXA {
                m.a = m.x;
            } else if code & 0xf8 == TAX {
                m.x = m.a;
            } else {
                return Some(0);
            }
        }
        _ => return Some(0),
    }
    None
}

/// The packet bytes of an `LD` (word, half-word or byte).
#[inline(always)]
fn load<P: Packet>(pkt: &P, off: u64, code: u16) -> Option<u32> {
    let size = match code & 0x18 {
        W => 4,
        H => 2,
        B => 1,
        _ => return None,
    };
    pkt.load(off, size)
}

/// `M[k]`'s index. [`validate`] refuses k >= `MEM_WORDS`; the mask (rather than a bounds
/// check, which LLVM folds onto another register than the verifier looks at) keeps any other
/// program in bounds too.
#[inline(always)]
fn mem_index(k: u32) -> usize {
    const _: () = assert!(MEM_WORDS.is_power_of_two());
    k as usize & (MEM_WORDS - 1)
}

#[inline(always)]
fn mem_get(m: &Machine, k: u32) -> u32 {
    m.mem.get(mem_index(k)).copied().unwrap_or(0)
}

#[inline(always)]
fn mem_set(m: &mut Machine, k: u32, v: u32) {
    if let Some(w) = m.mem.get_mut(mem_index(k)) {
        *w = v;
    }
}

/// Runs `prog` over `pkt` from the start: what it returns (0 rejects the packet). A program
/// that runs off its end rejects the packet.
pub fn run<P: Packet>(prog: &[Insn], pkt: &P) -> u32 {
    let mut m = Machine::default();
    // Every step moves pc forward by at least one: the bound is never reached.
    let mut steps = 0;
    while steps < MAX_INSNS {
        let Some(&insn) = prog.get(m.pc as usize) else {
            return 0;
        };
        if let Some(ret) = step(&mut m, insn, pkt) {
            return ret;
        }
        steps += 1;
    }
    0
}

/// Why a program is refused by [`validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// No instruction, or more than `MAX_INSNS`.
    Length,
    /// The instruction at this index has an unknown code.
    Code(u32),
    /// The instruction at this index jumps past the end.
    Jump(u32),
    /// The instruction at this index uses a scratch word past `MEM_WORDS`.
    Memory(u32),
    /// The instruction at this index divides by the constant 0 or shifts by 32 or more.
    Constant(u32),
    /// The last instruction is not a return.
    NoReturn,
}

/// Checks a program as the kernel's and libpcap's validators do: known codes, jumps that land
/// within the program, scratch words in range, no division by a zero constant, a return at
/// the end. The interpreter is safe on any program; this catches a program that would not
/// mean what libpcap meant.
pub fn validate(prog: &[Insn]) -> Result<(), Invalid> {
    if prog.is_empty() || prog.len() > MAX_INSNS {
        return Err(Invalid::Length);
    }
    let len = prog.len() as u64;
    for (i, insn) in prog.iter().enumerate() {
        let at = i as u32;
        let code = insn.code;
        let rest = len - 1 - i as u64;
        let ok = match code & 0x07 {
            LD => matches!(code & 0xe0, IMM | ABS | IND | MEM | LEN) && code & 0x18 != 0x18,
            LDX => matches!(code & 0xe0, IMM | MEM | LEN | MSH),
            ST | STX => true,
            ALU => {
                let op = code & 0xf0;
                if code & SRC_X == 0 {
                    if matches!(op, DIV | MOD) && insn.k == 0 {
                        return Err(Invalid::Constant(at));
                    }
                    if matches!(op, LSH | RSH) && insn.k >= 32 {
                        return Err(Invalid::Constant(at));
                    }
                }
                op <= XOR
            }
            JMP => {
                let op = code & 0xf0;
                let far = if op == JA {
                    insn.k as u64
                } else {
                    insn.jt.max(insn.jf) as u64
                };
                if far >= rest {
                    return Err(Invalid::Jump(at));
                }
                op <= JSET
            }
            RET => matches!(code & 0x18, 0 | RET_A),
            _ => matches!(code & 0xf8, TAX | TXA),
        };
        if !ok {
            return Err(Invalid::Code(at));
        }
        let uses_mem = matches!(code & 0x07, ST | STX)
            || (matches!(code & 0x07, LD | LDX) && code & 0xe0 == MEM);
        if uses_mem && insn.k as usize >= MEM_WORDS {
            return Err(Invalid::Memory(at));
        }
    }
    match prog.last() {
        Some(last) if last.code & 0x07 == RET => Ok(()),
        _ => Err(Invalid::NoReturn),
    }
}

#[cfg(test)]
mod tests;
