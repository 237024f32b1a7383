//! Where a stage gets the packet's bytes from: the stages are generic over [`Pkt`], so the TC
//! programs (`__sk_buff`) and the sensor-mode XDP programs (`xdp_md`) run the same stage code.
//! Each program type tail-calls through its own program array (the kernel refuses a tail call
//! into a program of another type).

use crate::fast::Direct;
use crate::maps::{STAGES, XDP_STAGES};
use aya_ebpf::EbpfContext;
use aya_ebpf::bindings::__sk_buff;
use aya_ebpf::helpers::{bpf_skb_load_bytes, bpf_xdp_get_buff_len, bpf_xdp_load_bytes};
use aya_ebpf::maps::ProgramArray;
use aya_ebpf::programs::{TcContext, XdpContext};
use core::ffi::c_void;

/// What stage 1 takes from the context besides the bytes.
pub struct Fields {
    /// `__sk_buff.tstamp` (0 where there is none).
    pub tstamp: u64,
    /// `__sk_buff.cb[0]` (replay flags; 0 where there is none).
    pub cb0: u32,
    /// `__sk_buff.cb[1]` (replay: the inner layers' verdicts; 0 where there is none).
    pub cb1: u32,
    /// `__sk_buff.wire_len` (replay: the captured frame's length, which the bytes handed to
    /// the program may be clipped short of; 0 where there is none).
    pub wire_len: u32,
    /// Packets this buffer stands for (GSO/GRO segments; 1 where there are none).
    pub gso_segs: u32,
    /// The interface the packet was seen on.
    pub ifindex: u32,
}

/// A packet context the stages can read and tail-call from.
pub trait Pkt: EbpfContext + Sized {
    /// The program array holding this program type's stages.
    fn stages(&self) -> &'static ProgramArray;
    /// Bytes of the frame (from the Ethernet header on).
    fn frame_len(&self) -> u32;
    /// Copies `len` bytes at `off` to `dst`; 0 on success, a negative error otherwise.
    ///
    /// # Safety
    /// `dst` is valid for `len` bytes of writes.
    unsafe fn load_bytes(&self, off: u32, dst: *mut c_void, len: u32) -> i64;
    /// Stage 1's metadata.
    fn fields(&self) -> Fields;
    /// The linear bytes of the packet, for reading in place.
    fn direct(&self) -> Direct;

    /// The byte at `off`, if the packet has it.
    #[inline(always)]
    fn load_u8(&self, off: u32) -> Option<u8> {
        let mut b = 0u8;
        // SAFETY: one byte into a local.
        let rc = unsafe { self.load_bytes(off, (&raw mut b).cast(), 1) };
        (rc == 0).then_some(b)
    }

    /// Tail-calls stage `index` of this program type; returns only if it is not installed.
    #[inline(always)]
    fn tail_call(&self, index: u32) {
        // SAFETY: a valid context and program array; on success this does not return.
        unsafe { self.stages().tail_call(self, index) };
    }
}

impl Pkt for TcContext {
    #[inline(always)]
    fn stages(&self) -> &'static ProgramArray {
        &STAGES
    }
    #[inline(always)]
    fn frame_len(&self) -> u32 {
        self.len()
    }
    #[inline(always)]
    unsafe fn load_bytes(&self, off: u32, dst: *mut c_void, len: u32) -> i64 {
        // SAFETY: per the contract; the helper checks the packet bounds (and reads non-linear
        // skbs).
        unsafe { bpf_skb_load_bytes(self.skb.skb.cast(), off, dst, len) }
    }
    #[inline(always)]
    fn fields(&self) -> Fields {
        let skb: *mut __sk_buff = self.skb.skb;
        // SAFETY: the context pointer is valid for the run; plain field reads.
        unsafe {
            Fields {
                tstamp: (*skb).tstamp,
                cb0: (*skb).cb[0],
                cb1: (*skb).cb[1],
                wire_len: (*skb).wire_len,
                gso_segs: (*skb).gso_segs,
                ifindex: (*skb).ifindex,
            }
        }
    }
    #[inline(always)]
    fn direct(&self) -> Direct {
        Direct {
            data: self.data(),
            end: self.data_end(),
        }
    }
}

impl Pkt for XdpContext {
    #[inline(always)]
    fn stages(&self) -> &'static ProgramArray {
        &XDP_STAGES
    }
    #[inline(always)]
    fn frame_len(&self) -> u32 {
        // The helper rather than `data_end - data`: the verifier refuses arithmetic between
        // packet-end and packet pointers.
        // SAFETY: a valid context.
        unsafe { bpf_xdp_get_buff_len(self.ctx) as u32 }
    }
    #[inline(always)]
    unsafe fn load_bytes(&self, off: u32, dst: *mut c_void, len: u32) -> i64 {
        // SAFETY: per the contract; the helper checks the buffer bounds.
        unsafe { bpf_xdp_load_bytes(self.ctx, off, dst, len) }
    }
    #[inline(always)]
    fn fields(&self) -> Fields {
        // XDP sees frames off the wire (or the driver): one packet each, no timestamp, no cb.
        Fields {
            tstamp: 0,
            cb0: 0,
            cb1: 0,
            wire_len: 0,
            gso_segs: 1,
            ifindex: self.ingress_ifindex() as u32,
        }
    }
    #[inline(always)]
    fn direct(&self) -> Direct {
        Direct {
            data: self.data(),
            end: self.data_end(),
        }
    }
}
