//! Log lines for rare conditions (aya-log), for `run --kernel-log LEVEL`: a stage that meets one
//! records it in `Scratch::note` and tail-calls `conntrack_note` once the packet is done, so the
//! logging code is verified once, in a program of its own, and no other stage pays for it. With
//! logging off (the default) the agent sets aya-log's level to none and the stage returns after
//! one load.

use crate::maps::{SCRATCH, STAGE_NOTE};
use crate::pkt::Pkt;
use aya_log_ebpf::{debug, error, warn};
use conntrack_common::packet::ParseError;

/// What happened (`Scratch::note`: the kind in the low byte, a detail above it).
#[repr(u32)]
#[derive(Clone, Copy)]
pub enum Note {
    /// A frame's headers could not be parsed; detail: the `ParseError` and where (1 copy, 2 IP
    /// layer, 3 transport).
    ParseError = 1,
    /// The flow table was full: a new connection went to the agent's overflow table.
    TableFull = 2,
    /// A connection's lock was left behind and taken over.
    LockTakenOver = 3,
}

/// Where a parse failed (the note's detail).
pub const IN_COPY: u32 = 1;
pub const IN_IP: u32 = 2;
pub const IN_TRANSPORT: u32 = 3;

/// Records `note` with `detail` for the note stage.
#[inline(always)]
pub fn record(note: Note, detail: u32) {
    record_raw(note as u32 | detail << 8);
}

/// A parse error's note detail: the error code and the layer.
#[inline(always)]
pub fn parse_detail(e: ParseError, layer: u32) -> u32 {
    (e as u32) << 8 | layer
}

/// Hands the packet to the note stage if a note is pending (the packet is done otherwise).
#[inline(always)]
pub fn flush<C: Pkt>(ctx: &C) {
    let pending = SCRATCH
        .get_ptr(0)
        // SAFETY: per-CPU scratch, this packet's.
        .is_some_and(|s| unsafe { (*s).note } != 0);
    if pending {
        ctx.tail_call(STAGE_NOTE);
        // Not installed: forget the note, or a later packet would take it for its own.
        record_raw(0);
    }
}

#[inline(always)]
fn record_raw(v: u32) {
    if let Some(s) = SCRATCH.get_ptr_mut(0) {
        // SAFETY: per-CPU scratch, this packet's.
        unsafe { (*s).note = v };
    }
}

/// The note stage: logs the pending note and clears it.
#[inline(always)]
pub fn run<C: Pkt>(ctx: &C) {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, this packet's.
    let note = unsafe { core::mem::replace(&mut (*s).note, 0) };
    let detail = note >> 8;
    const PARSE_ERROR: u32 = Note::ParseError as u32;
    const TABLE_FULL: u32 = Note::TableFull as u32;
    const LOCK_TAKEN_OVER: u32 = Note::LockTakenOver as u32;
    match note & 0xff {
        PARSE_ERROR => debug!(
            ctx,
            "frame not parsed: error {} (1 truncated, 3 bad IP version, 4 bad header length, \
             5 bad length field, 6 too many VLAN tags, 7 too many IPv6 extension headers) in \
             part {} (1 frame copy, 2 IP layer, 3 transport header)",
            detail >> 8,
            detail & 0xff
        ),
        TABLE_FULL => warn!(
            ctx,
            "flow table full: a new connection goes to the agent's overflow table"
        ),
        LOCK_TAKEN_OVER => error!(
            ctx,
            "a connection lock was left behind and taken over (the packet was applied)"
        ),
        _ => {}
    }
}
