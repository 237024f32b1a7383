//! `conntrack_contents`: the payload of a packet whose connection extracts its direction goes
//! to the `CONTENTS` ring buffer in records of up to `CHUNK_BYTES` (a GSO packet in up to
//! `MAX_CHUNKS` of them), after the per-connection cap (`CONFIG_CONTENTS_CAP`) and the global
//! rate cap (`CONFIG_CONTENTS_RATE`). Every byte not handed over is counted, per connection in
//! `CONTENTS_CONNS` and in `STATS`, so the agent can explain its holes.
//!
//! Runs after the connection was unlocked: the counters are updated with atomic adds. Two CPUs
//! sending the same direction at once may both pass the cap check; the cap can then be exceeded
//! by one packet.

use crate::maps::{
    CONFIG, CONFIG_CONTENTS_CAP, CONFIG_CONTENTS_RATE, CONTENTS, CONTENTS_CONNS, CONTENTS_EXTRACT,
    CONTENTS_FROM_ORIG, CONTENTS_RATE, CONTENTS_SAMPLE, SCRATCH, Scratch,
};
use crate::pkt::Pkt;
use crate::{count, count_n, zero_words};
use aya_ebpf::bindings::{BPF_NOEXIST, BPF_RB_NO_WAKEUP};
use conntrack_common::contents::{
    self, CHUNK_BYTES, CONTENT_FROM_ORIG, ContentCounters, ContentRecord, MAX_CHUNKS,
};
use conntrack_common::proto;
use conntrack_common::stats::Stat;
use core::intrinsics::{AtomicOrdering, atomic_xadd, atomic_xchg};

const ZERO_COUNTERS: ContentCounters = ContentCounters {
    delivered: [0; 2],
    not_delivered: [0; 2],
};

/// Adds `n` to `*p` atomically.
///
/// # Safety
/// `p` points into a map value that lives for the program run.
#[inline(always)]
unsafe fn add(p: *mut u64, n: u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, n) };
}

/// Adds `n` to `*p` atomically and returns the old value. Sequentially consistent: with a
/// relaxed ordering LLVM's BPF backend emits the non-fetching add (the "old value" is then
/// `n` itself).
///
/// # Safety
/// As for [`add`].
#[inline(always)]
unsafe fn fetch_add(p: *mut u64, n: u64) -> u64 {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(p, n) }
}

/// Bytes of `n` the global rate cap admits at `now_ns`.
#[inline(always)]
fn rate_admit(now_ns: u64, n: u32) -> u32 {
    let rate = CONFIG.get(CONFIG_CONTENTS_RATE).copied().unwrap_or(0);
    if rate == 0 {
        return n;
    }
    let (Some(start), Some(bytes)) = (CONTENTS_RATE.get_ptr_mut(0), CONTENTS_RATE.get_ptr_mut(1))
    else {
        return n;
    };
    // SAFETY: Array values live for the program run; races only move the window edge.
    unsafe {
        if now_ns.wrapping_sub(core::ptr::read_volatile(start)) >= 1_000_000_000 {
            core::ptr::write_volatile(start, now_ns);
            atomic_xchg::<u64, { AtomicOrdering::Relaxed }>(bytes, 0);
        }
        let before = fetch_add(bytes, n as u64);
        contents::admit(before, rate, n)
    }
}

/// A service sample: the first `SAMPLE_BYTES` of the payload (at `start` in the frame) in one
/// record flagged `CONTENT_SAMPLE`, outside extraction's caps and counters (a bounded number
/// of packets per connection, `contents::take_sample`).
#[inline(always)]
fn sample<C: Pkt>(ctx: &C, scratch: &Scratch, start: u32, is_orig: bool) {
    let meta = &scratch.meta;
    // A packet cut by the capture (a replay's frame holds what was captured) gives what
    // `sample_take` says.
    let captured = ctx.frame_len().saturating_sub(start);
    let len = contents::sample_take(meta.payload_len, captured, meta.proto == proto::UDP);
    if len == 0 {
        return;
    }
    // As in `run`: a length the verifier knows to be in 1..=SAMPLE_BYTES.
    // SAFETY: reads a local.
    let hidden = unsafe { core::ptr::read_volatile(&len) };
    let len = (hidden.wrapping_sub(1) & (contents::SAMPLE_BYTES - 1)) + 1;
    let Some(mut entry) = CONTENTS.reserve::<ContentRecord>(0) else {
        return count(Stat::ServiceNotDelivered);
    };
    let out: *mut ContentRecord = entry.as_mut_ptr();
    // SAFETY: the reservation holds one record; the header is written in full, the data up to
    // `len` (the agent reads only `len` bytes).
    let loaded = unsafe {
        zero_words(&raw mut (*out).hdr);
        core::ptr::copy_nonoverlapping(&scratch.key, &raw mut (*out).hdr.key, 1);
        (*out).hdr.ts_ns = scratch.now_ns;
        (*out).hdr.seq = contents::record_seq(meta, 0);
        (*out).hdr.len = len;
        (*out).hdr.flags = contents::sample_flags(&scratch.key, meta, is_orig);
        (*out).hdr.proto = meta.proto as u32;
        ctx.load_bytes(start, (&raw mut (*out).data).cast(), len)
    };
    if loaded != 0 {
        entry.discard(0);
        return count(Stat::ServiceNotDelivered);
    }
    // A datagram no UDP rule can read is counted against the budget (`take_sample`) but not
    // handed over; only its first byte says so, hence after the copy.
    // SAFETY: the record's first data byte was just written (len >= 1).
    let first = unsafe { (*out).data[0] };
    if !contents::sample_handed_over(meta, first) {
        entry.discard(0);
        return;
    }
    entry.submit(BPF_RB_NO_WAKEUP as u64);
    count_n(Stat::ServiceBytes, len as u64);
}

// Keys and values by reference: by value they would be copied onto the 512-byte stack.
#[allow(clippy::needless_borrows_for_generic_args)]
#[inline(always)]
pub fn run<C: Pkt>(ctx: &C) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch filled by the earlier stages for this packet.
    let scratch = unsafe { &*scratch };
    let meta = &scratch.meta;
    let total = meta.payload_len;
    let todo = scratch.contents_todo;
    let is_orig = todo & CONTENTS_FROM_ORIG != 0;
    let d = contents::dir_index(is_orig);
    // The payload ends where the IP header says (for a replayed IPv4 total length of 0, the
    // captured length the packet was parsed with: the frame handed to the kernel may be cut
    // shorter). A tunnel's inner packet starts at `base` in the frame: its `l3_offset` counts
    // from there.
    let ip_len = if scratch.ip_len_zero != 0 {
        scratch.ip_len_zero
    } else {
        meta.ip_len
    };
    let end = scratch
        .base
        .wrapping_add(scratch.l3_offset)
        .wrapping_add(ip_len);
    let Some(start) = end.checked_sub(total) else {
        if todo & CONTENTS_SAMPLE != 0 {
            count(Stat::ServiceNotDelivered);
        }
        return count_n(Stat::ContentNotDelivered, total as u64);
    };
    if todo & CONTENTS_SAMPLE != 0 {
        sample(ctx, scratch, start, is_orig);
    }
    if todo & CONTENTS_EXTRACT == 0 {
        return;
    }

    let counters = match CONTENTS_CONNS.get_ptr_mut(&scratch.key) {
        Some(c) => Some(c),
        None => {
            let _ = CONTENTS_CONNS.insert(&scratch.key, &ZERO_COUNTERS, BPF_NOEXIST as u64);
            CONTENTS_CONNS.get_ptr_mut(&scratch.key)
        }
    };
    let Some(counters) = counters else {
        // No room to account for it: hand nothing over rather than bytes nobody can explain.
        return count_n(Stat::ContentNotDelivered, total as u64);
    };
    // SAFETY: a map value pointer, valid for the run; plain reads of a counter.
    let (delivered_p, lost_p) = unsafe {
        (
            (&raw mut (*counters).delivered).cast::<u64>().add(d),
            (&raw mut (*counters).not_delivered).cast::<u64>().add(d),
        )
    };
    let cap = CONFIG.get(CONFIG_CONTENTS_CAP).copied().unwrap_or(0);
    // SAFETY: as above.
    let n = contents::admit(unsafe { core::ptr::read_volatile(delivered_p) }, cap, total);
    let n = rate_admit(scratch.now_ns, n);

    let mut done = 0u32;
    let mut i = 0;
    while i < MAX_CHUNKS {
        if done >= n {
            break;
        }
        let left = n - done;
        let len = if left > CHUNK_BYTES as u32 {
            CHUNK_BYTES as u32
        } else {
            left
        };
        if len == 0 || len > CHUNK_BYTES as u32 {
            break;
        }
        // The helper wants a length the verifier knows to be in 1..=CHUNK_BYTES: LLVM drops
        // the check above, so hide the value and bound it by arithmetic (`len` is unchanged).
        // SAFETY: reads a local.
        let hidden = unsafe { core::ptr::read_volatile(&len) };
        let len = (hidden.wrapping_sub(1) & (CHUNK_BYTES as u32 - 1)) + 1;
        let Some(mut entry) = CONTENTS.reserve::<ContentRecord>(0) else {
            break;
        };
        let out: *mut ContentRecord = entry.as_mut_ptr();
        // SAFETY: the reservation holds one record; the header is written in full, the data up
        // to `len` (the agent reads only `len` bytes).
        let loaded = unsafe {
            zero_words(&raw mut (*out).hdr);
            core::ptr::copy_nonoverlapping(&scratch.key, &raw mut (*out).hdr.key, 1);
            (*out).hdr.ts_ns = scratch.now_ns;
            (*out).hdr.seq = contents::record_seq(meta, done);
            (*out).hdr.len = len;
            (*out).hdr.flags = if is_orig { CONTENT_FROM_ORIG } else { 0 };
            (*out).hdr.proto = meta.proto as u32;
            ctx.load_bytes(start.wrapping_add(done), (&raw mut (*out).data).cast(), len)
        };
        if loaded != 0 {
            entry.discard(0);
            break;
        }
        entry.submit(BPF_RB_NO_WAKEUP as u64);
        done += len;
        i += 1;
    }
    // SAFETY: map value pointers, valid for the run.
    unsafe {
        add(delivered_p, done as u64);
        add(lost_p, (total - done) as u64);
    }
    count_n(Stat::ContentBytes, done as u64);
    count_n(Stat::ContentNotDelivered, (total - done) as u64);
}
