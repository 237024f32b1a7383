//! The interpreter on hand-assembled programs and on libpcap's own output for two tcpdump
//! expressions (`tcpdump -dd`); the agent's tests compare it with libpcap on random packets.

use super::*;
use std::vec::Vec;

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

fn on(prog: &[Insn], data: &[u8]) -> u32 {
    run(
        prog,
        &Captured {
            data,
            wire_len: data.len() as u32,
        },
    )
}

/// The accumulator after `body` then `ret a`.
fn acc(body: &[Insn], data: &[u8]) -> u32 {
    let mut prog: Vec<Insn> = body.to_vec();
    prog.push(stmt(RET | RET_A, 0));
    assert_eq!(validate(&prog), Ok(()), "{prog:?}");
    on(&prog, data)
}

/// `tcpdump -dd 'tcp[tcpflags] & tcp-syn != 0'` (Ethernet).
const TCP_SYN: [Insn; 11] = [
    Insn {
        code: 0x28,
        jt: 0,
        jf: 0,
        k: 12,
    },
    Insn {
        code: 0x15,
        jt: 0,
        jf: 8,
        k: 0x800,
    },
    Insn {
        code: 0x30,
        jt: 0,
        jf: 0,
        k: 23,
    },
    Insn {
        code: 0x15,
        jt: 0,
        jf: 6,
        k: 6,
    },
    Insn {
        code: 0x28,
        jt: 0,
        jf: 0,
        k: 20,
    },
    Insn {
        code: 0x45,
        jt: 4,
        jf: 0,
        k: 0x1fff,
    },
    Insn {
        code: 0xb1,
        jt: 0,
        jf: 0,
        k: 14,
    },
    Insn {
        code: 0x50,
        jt: 0,
        jf: 0,
        k: 27,
    },
    Insn {
        code: 0x45,
        jt: 0,
        jf: 1,
        k: 2,
    },
    Insn {
        code: 0x6,
        jt: 0,
        jf: 0,
        k: 0x40000,
    },
    Insn {
        code: 0x6,
        jt: 0,
        jf: 0,
        k: 0,
    },
];

/// Ethernet + IPv4 (with `ip_options` bytes of options) + a 20-byte TCP header.
fn tcp_frame(flags: u8, ip_options: usize, frag_offset: u16) -> Vec<u8> {
    let mut f = std::vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    let ihl = 20 + ip_options;
    f.push(0x40 | (ihl / 4) as u8);
    f.push(0);
    f.extend_from_slice(&((ihl + 20) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&frag_offset.to_be_bytes());
    f.extend_from_slice(&[64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    f.resize(f.len() + ip_options, 1);
    f.extend_from_slice(&[0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags]);
    f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    f
}

#[test]
fn libpcap_syn_program_keeps_syns_behind_any_ip_header_length() {
    assert_eq!(validate(&TCP_SYN), Ok(()));
    assert_eq!(on(&TCP_SYN, &tcp_frame(0x02, 0, 0)), 0x40000);
    assert_eq!(on(&TCP_SYN, &tcp_frame(0x12, 8, 0)), 0x40000);
    assert_eq!(on(&TCP_SYN, &tcp_frame(0x10, 0, 0)), 0);
    assert_eq!(on(&TCP_SYN, &tcp_frame(0x10, 8, 0)), 0);
    // A later fragment carries no TCP header: rejected whatever its bytes.
    assert_eq!(on(&TCP_SYN, &tcp_frame(0x02, 0, 100)), 0);
}

#[test]
fn a_load_beyond_the_captured_bytes_rejects() {
    let frame = tcp_frame(0x02, 0, 0);
    // Cut inside the TCP flags' byte (offset 14 + 20 + 13).
    assert_eq!(on(&TCP_SYN, &frame[..47]), 0);
    assert_eq!(on(&TCP_SYN, &frame[..48]), 0x40000);
    // Word, half-word and byte at the very end, and one byte further.
    let data = [1, 2, 3, 4];
    assert_eq!(acc(&[stmt(LD | W | ABS, 0)], &data), 0x0102_0304);
    assert_eq!(acc(&[stmt(LD | H | ABS, 2)], &data), 0x0304);
    assert_eq!(acc(&[stmt(LD | B | ABS, 3)], &data), 4);
    assert_eq!(acc(&[stmt(LD | W | ABS, 1)], &data), 0);
    assert_eq!(acc(&[stmt(LD | B | ABS, u32::MAX)], &data), 0);
    // Indexed: X + k past the end, even when the sum overflows 32 bits.
    assert_eq!(
        acc(&[stmt(LDX | IMM, 2), stmt(LD | H | IND, 0)], &data),
        0x0304
    );
    assert_eq!(acc(&[stmt(LDX | IMM, 2), stmt(LD | H | IND, 1)], &data), 0);
    assert_eq!(
        acc(&[stmt(LDX | IMM, u32::MAX), stmt(LD | B | IND, 2)], &data),
        0
    );
}

#[test]
fn len_is_the_wire_length_not_the_captured_one() {
    let prog = [stmt(LD | W | LEN, 0), stmt(RET | RET_A, 0)];
    let pkt = Captured {
        data: &[0; 60],
        wire_len: 1514,
    };
    assert_eq!(run(&prog, &pkt), 1514);
    let prog = [
        stmt(LDX | W | LEN, 0),
        stmt(MISC | TXA, 0),
        stmt(RET | RET_A, 0),
    ];
    assert_eq!(run(&prog, &pkt), 1514);
}

#[test]
fn alu_operations_wrap_and_division_by_zero_rejects() {
    let a = |k| stmt(LD | IMM, k);
    let x = |k| stmt(LDX | IMM, k);
    assert_eq!(acc(&[a(u32::MAX), stmt(ALU | ADD, 2)], &[]), 1);
    assert_eq!(
        acc(&[a(1), x(2), stmt(ALU | SUB | SRC_X, 0)], &[]),
        u32::MAX
    );
    assert_eq!(
        acc(&[a(0x1_0001), stmt(ALU | MUL, 0x1_0001)], &[]),
        0x2_0001
    );
    assert_eq!(acc(&[a(17), stmt(ALU | DIV, 5)], &[]), 3);
    assert_eq!(acc(&[a(17), stmt(ALU | MOD, 5)], &[]), 2);
    assert_eq!(acc(&[a(0xf0), stmt(ALU | AND, 0x3c)], &[]), 0x30);
    assert_eq!(acc(&[a(0xf0), stmt(ALU | OR, 0x0f)], &[]), 0xff);
    assert_eq!(acc(&[a(0xff), stmt(ALU | XOR, 0x0f)], &[]), 0xf0);
    assert_eq!(acc(&[a(1), stmt(ALU | LSH, 31)], &[]), 1 << 31);
    assert_eq!(acc(&[a(1 << 31), stmt(ALU | RSH, 31)], &[]), 1);
    assert_eq!(acc(&[a(5), stmt(ALU | NEG, 0)], &[]), 5u32.wrapping_neg());
    // By X: a shift of 32 or more gives 0; a division by 0 ends the program with 0.
    assert_eq!(acc(&[a(1), x(32), stmt(ALU | LSH | SRC_X, 0)], &[]), 0);
    assert_eq!(acc(&[a(1), x(40), stmt(ALU | RSH | SRC_X, 0)], &[]), 0);
    let by_zero = [a(9), x(0), stmt(ALU | DIV | SRC_X, 0), stmt(RET, 1)];
    assert_eq!(on(&by_zero, &[]), 0);
    let by_zero = [a(9), x(0), stmt(ALU | MOD | SRC_X, 0), stmt(RET, 1)];
    assert_eq!(on(&by_zero, &[]), 0);
}

#[test]
fn scratch_memory_and_register_moves() {
    let prog = [
        stmt(LD | IMM, 7),
        stmt(ST, 3),
        stmt(LDX | IMM, 9),
        stmt(STX, 15),
        stmt(LD | MEM, 15),
        stmt(MISC | TAX, 0),
        stmt(LD | MEM, 3),
        stmt(ALU | ADD | SRC_X, 0),
        stmt(RET | RET_A, 0),
    ];
    assert_eq!(acc(&prog[..8], &[]), 16);
    // `ldxb 4*([k]&0xf)`: the IPv4 header length.
    assert_eq!(
        acc(&[stmt(LDX | B | MSH, 1), stmt(MISC | TXA, 0)], &[0, 0x46]),
        24
    );
    assert_eq!(
        acc(&[stmt(LDX | B | MSH, 2), stmt(MISC | TXA, 0)], &[0, 0x46]),
        0
    );
}

#[test]
fn conditional_jumps_take_jt_or_jf() {
    // ret 1 if the condition holds, else ret 2.
    let test = |a: u32, cond: Insn| {
        let prog = [
            stmt(LD | IMM, a),
            stmt(LDX | IMM, 10),
            cond,
            stmt(RET, 1),
            stmt(RET, 2),
        ];
        assert_eq!(validate(&prog), Ok(()));
        on(&prog, &[])
    };
    assert_eq!(test(10, jump(JMP | JEQ, 10, 0, 1)), 1);
    assert_eq!(test(11, jump(JMP | JEQ, 10, 0, 1)), 2);
    assert_eq!(test(11, jump(JMP | JGT | SRC_X, 0, 0, 1)), 1);
    assert_eq!(test(10, jump(JMP | JGT | SRC_X, 0, 0, 1)), 2);
    assert_eq!(test(10, jump(JMP | JGE, 10, 0, 1)), 1);
    assert_eq!(test(9, jump(JMP | JGE, 10, 0, 1)), 2);
    assert_eq!(test(6, jump(JMP | JSET, 2, 0, 1)), 1);
    assert_eq!(test(5, jump(JMP | JSET, 2, 0, 1)), 2);
    assert_eq!(test(0, jump(JMP | JA, 1, 0, 0)), 2);
}

#[test]
fn validate_refuses_what_would_not_run_as_meant() {
    let ret = stmt(RET, 1);
    assert_eq!(validate(&[]), Err(Invalid::Length));
    assert_eq!(
        validate(&std::vec![ret; MAX_INSNS + 1]),
        Err(Invalid::Length)
    );
    assert_eq!(validate(&[stmt(LD | IMM, 0)]), Err(Invalid::NoReturn));
    assert_eq!(
        validate(&[jump(JMP | JEQ, 0, 1, 0), ret]),
        Err(Invalid::Jump(0))
    );
    assert_eq!(validate(&[stmt(JMP | JA, 1), ret]), Err(Invalid::Jump(0)));
    assert_eq!(validate(&[stmt(ST, 16), ret]), Err(Invalid::Memory(0)));
    assert_eq!(
        validate(&[stmt(LD | MEM, 16), ret]),
        Err(Invalid::Memory(0))
    );
    assert_eq!(
        validate(&[stmt(ALU | DIV, 0), ret]),
        Err(Invalid::Constant(0))
    );
    assert_eq!(
        validate(&[stmt(ALU | LSH, 32), ret]),
        Err(Invalid::Constant(0))
    );
    assert_eq!(validate(&[ret, stmt(0xff, 0), ret]), Err(Invalid::Code(1)));
    assert_eq!(validate(&[stmt(RET | SRC_X, 0)]), Err(Invalid::Code(0)));
}

#[test]
fn running_off_the_end_or_an_unknown_code_rejects() {
    // Unvalidated programs still end, with 0.
    assert_eq!(on(&[stmt(LD | IMM, 1)], &[]), 0);
    assert_eq!(on(&[stmt(0xff, 0), stmt(RET, 1)], &[]), 0);
    assert_eq!(on(&[stmt(JMP | JA, u32::MAX), stmt(RET, 1)], &[]), 0);
}
