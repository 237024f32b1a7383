//! `conntrack_control`: the agent's way to change a connection's thresholds. Never attached;
//! the agent runs it with BPF_PROG_TEST_RUN and a `ThresholdCommand` as the packet data. It
//! takes the connection's spin lock, so the write cannot interleave with a packet's update (a
//! read-modify-write of the map value from userspace would clobber the counters), writes only
//! the threshold slots and checks them as Zeek does when a threshold is set.

use crate::lock;
use crate::maps::FLOWS;
use aya_ebpf::helpers::bpf_skb_load_bytes;
use aya_ebpf::programs::TcContext;
use conntrack_common::threshold::{
    RESULT_APPLIED, RESULT_BAD_COMMAND, RESULT_NOT_FOUND, ThresholdCommand, apply_command,
};
use core::mem::MaybeUninit;

/// Runs the command in the packet data; returns `RESULT_APPLIED | crossed slots` or one of the
/// other `RESULT_*` bits.
// The key by reference: by value it would be copied onto the 512-byte stack.
#[allow(clippy::needless_borrows_for_generic_args)]
#[inline(always)]
pub fn run(ctx: &TcContext) -> u32 {
    let mut cmd = MaybeUninit::<ThresholdCommand>::uninit();
    // SAFETY: the helper writes at most size_of::<ThresholdCommand>() bytes into `cmd`.
    let rc = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            0,
            cmd.as_mut_ptr().cast(),
            size_of::<ThresholdCommand>() as u32,
        )
    };
    if rc != 0 {
        return RESULT_BAD_COMMAND;
    }
    // SAFETY: fully written by the helper (integers only: every bit pattern is valid).
    let cmd = unsafe { cmd.assume_init_ref() };
    let Some(conn) = FLOWS.get_ptr_mut(&cmd.key) else {
        return RESULT_NOT_FOUND;
    };
    // SAFETY: a FLOWS value pointer stays valid for the program run.
    let lock_word = unsafe { &raw mut (*conn).lock };
    // The command waits for the lock like a packet (a lock taken over is counted there).
    unsafe { lock::lock(lock_word) };
    // SAFETY: locked; no other writer.
    let crossed = apply_command(unsafe { &mut *conn }, cmd);
    // SAFETY: taken above.
    unsafe { lock::unlock(lock_word) };
    RESULT_APPLIED | crossed
}
