//! `bench_flood` (never attached): the scale bench's traffic generator. The bench runs it with
//! BPF_PROG_TEST_RUN in live-frame mode (`BPF_F_TEST_XDP_LIVE_FRAMES`): the kernel runs it on
//! page-pool frames over and over and transmits each frame it returns `XDP_TX` for out of the
//! run's ingress interface (the sending veth), so one syscall sends a whole step of flows
//! without a copy or an skb on the sending side.
//!
//! Each run sends the next new flow when it is due (`conntrack_common::flood::pace`): it writes
//! the flow's headers (`flood::header`; the pages are recycled with whatever an earlier run
//! left in them, so all of the headers every time) and returns `XDP_TX`. Otherwise (not yet
//! due, or the step is over) it returns `XDP_DROP`, and the kernel recycles the frame.

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::helpers::bpf_ktime_get_ns;
use aya_ebpf::programs::XdpContext;
use conntrack_common::flood::{HEADER_LEN, NEXT, header, pace, sent};

use crate::maps::FLOOD;

#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + HEADER_LEN > end {
        return xdp_action::XDP_ABORTED;
    }
    let Some(state) = FLOOD.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: a valid pointer into the map's one entry, written by no one else while the
    // program runs: the bench drives it from one thread, BPF_PROG_TEST_RUN runs the repeats
    // one after another, and the bench writes the entry only between calls.
    let state = unsafe { &mut *state };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if !pace(state, now) {
        return xdp_action::XDP_DROP;
    }
    let h = header(state[NEXT]);
    sent(state, now);
    // SAFETY: `HEADER_LEN` bytes from `start` are inside the packet (checked above).
    unsafe { core::ptr::copy_nonoverlapping(h.as_ptr(), start as *mut u8, HEADER_LEN) };
    xdp_action::XDP_TX
}
