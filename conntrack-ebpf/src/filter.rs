//! The capture filter (`run -f EXPR`): the first thing stage 1 does when the agent set
//! `CONFIG_FILTER`. libpcap's classic BPF program, held in [`FILTER`], is interpreted by
//! conntrack-common's `filter::step`, one instruction per `bpf_loop` iteration (the verifier
//! checks the callback once, whatever the program's length; classic BPF jumps only forward, so
//! the program ends within its length). The host's `read -f` runs the same `step`.
//!
//! Packet bytes are read with the load helper, as libpcap reads a captured packet: any offset
//! of the frame, linear or not; a load past its end rejects the packet. Without a filter,
//! stage 1 pays one bit test of the flags word it reads anyway.

use crate::pkt::Pkt;
use aya_ebpf::bindings::{__sk_buff, xdp_md};
use aya_ebpf::helpers::bpf_loop;
use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, PerCpuArray};
use aya_ebpf::programs::{TcContext, XdpContext};
use conntrack_common::filter::{MAX_INSNS, Machine, Packet, Program, step};
use core::ffi::c_void;

/// The compiled filter, written by the agent before it attaches the programs (the agent's
/// `datapath/kernel/filter.rs`).
#[map]
pub static FILTER: Array<Program> = Array::with_max_entries(1, 0);

/// The registers of the running filter (too large for the entry program's stack, which
/// shares the 256-byte limit of programs that tail-call).
#[map]
static FILTER_MACHINE: PerCpuArray<Machine> = PerCpuArray::with_max_entries(1, 0);

/// What the `bpf_loop` callback works on (on the caller's stack, as the helper requires).
#[repr(C)]
struct Run {
    ctx: *mut c_void,
    prog: *const Program,
    machine: *mut Machine,
    wire_len: u32,
    /// What the program returned (0: rejected).
    ret: u32,
}

/// A context rebuilt in the callback from its pointer.
pub trait FromRaw: Pkt {
    /// # Safety
    /// `p` is this program type's context pointer.
    unsafe fn from_raw(p: *mut c_void) -> Self;
}

impl FromRaw for TcContext {
    #[inline(always)]
    unsafe fn from_raw(p: *mut c_void) -> Self {
        TcContext::new(p.cast::<__sk_buff>())
    }
}

impl FromRaw for XdpContext {
    #[inline(always)]
    unsafe fn from_raw(p: *mut c_void) -> Self {
        XdpContext::new(p.cast::<xdp_md>())
    }
}

/// The frame as the filter sees it.
struct Frame<C> {
    ctx: C,
    wire_len: u32,
}

impl<C: Pkt> Packet for Frame<C> {
    #[inline(always)]
    fn wire_len(&self) -> u32 {
        self.wire_len
    }

    #[inline(always)]
    fn load(&self, off: u64, size: u32) -> Option<u32> {
        if off > u32::MAX as u64 {
            return None;
        }
        let off = off as u32;
        let mut buf = [0u8; 4];
        let dst = buf.as_mut_ptr().cast::<c_void>();
        // A constant length in each branch, as the helper's verifier check wants.
        // SAFETY: `buf` has 4 bytes; the helper checks the frame's bounds.
        let rc = unsafe {
            match size {
                4 => self.ctx.load_bytes(off, dst, 4),
                2 => self.ctx.load_bytes(off, dst, 2),
                _ => self.ctx.load_bytes(off, dst, 1),
            }
        };
        if rc != 0 {
            return None;
        }
        Some(match size {
            4 => u32::from_be_bytes(buf),
            2 => u16::from_be_bytes([buf[0], buf[1]]) as u32,
            _ => buf[0] as u32,
        })
    }
}

/// `bpf_loop` callback: one instruction; 1 stops the loop.
extern "C" fn filter_step<C: FromRaw>(_index: u64, arg: *mut c_void) -> i64 {
    let run = arg.cast::<Run>();
    // SAFETY: `arg` is the caller's `Run`; its pointers are the program's context and two
    // map values, valid for the whole run.
    unsafe {
        let machine = &mut *(*run).machine;
        let Some(&insn) = (*(*run).prog).insns.get(machine.pc as usize) else {
            (*run).ret = 0;
            return 1;
        };
        let frame = Frame {
            ctx: C::from_raw((*run).ctx),
            wire_len: (*run).wire_len,
        };
        match step(machine, insn, &frame) {
            Some(ret) => {
                (*run).ret = ret;
                1
            }
            None => 0,
        }
    }
}

/// Whether the filter keeps this frame.
#[inline(always)]
pub fn accepts<C: FromRaw>(ctx: &C) -> bool {
    let (Some(prog), Some(machine)) = (FILTER.get_ptr(0), FILTER_MACHINE.get_ptr_mut(0)) else {
        return false;
    };
    // SAFETY: map values of this run (the machine per-CPU).
    let len = unsafe {
        crate::zero_words(machine);
        (*prog).len
    };
    let len = if len as usize > MAX_INSNS {
        MAX_INSNS as u32
    } else {
        len
    };
    let mut run = Run {
        ctx: ctx.as_ptr(),
        prog,
        machine,
        wire_len: ctx.frame_len(),
        ret: 0,
    };
    // SAFETY: the callback and its context follow bpf_loop's contract.
    unsafe {
        bpf_loop(
            len,
            filter_step::<C> as *mut c_void,
            (&raw mut run).cast(),
            0,
        )
    };
    // The read of `ret` must follow the helper's writes through the pointer.
    // SAFETY: a plain local.
    unsafe { core::ptr::read_volatile(&run.ret) != 0 }
}
