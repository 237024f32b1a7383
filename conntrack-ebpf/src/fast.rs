//! The fast path, in stage 1: an ordinary packet of an existing connection (an in-order
//! segment or pure ACK of an established stream, a datagram of a UDP flow both sides already
//! used, an ICMP echo) is read in place, applied with `engine::fast_update` under the
//! connection's lock, and done: no scratch copy, no tail call, no event.
//!
//! Every other packet (new connections, SYN/FIN/RST, anything that adds a history letter,
//! retransmissions, gaps, fragments, IP options, extension headers, a threshold it could cross,
//! extraction, a replayed packet with a bad checksum) takes the stage chain unchanged:
//! `packet::fast_parse::parse_fast` or `fast_update` says so before anything is written (the
//! lock is released first: the chain takes it again).

use crate::lock;
use crate::maps::FLOWS;
use crate::note::{self, Note};
use crate::pkt::Pkt;
use crate::{count, count_n};
use conntrack_common::engine::{Fast, fast_update};
use conntrack_common::key::FlowKey;
use conntrack_common::packet::fast_parse::{Header, HeaderSource, parse_fast};
use conntrack_common::stats::Stat;

/// The packet's linear bytes, read in place (direct packet access): `[data, end)`.
pub struct Direct {
    pub data: usize,
    pub end: usize,
}

impl HeaderSource for Direct {
    #[inline(always)]
    fn header<T: Header>(&self, off: usize) -> Option<T> {
        let start = self.data + off;
        // The verifier knows the packet's bytes only up to a comparison with `end`.
        if start + size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: the bytes lie inside the packet (checked above), and any bytes are a
        // valid `T` (`Header`).
        Some(unsafe { core::ptr::read_unaligned(start as *const T) })
    }
}

/// Applies the packet if it is ordinary: `Some(noted)`, where `noted` says a note waits for the
/// note stage (a lock taken over); `None` if it needs the stage chain (nothing was written
/// then). `frame_len` is the whole frame's length, `gso_segs` the packets it stands for.
#[inline(always)]
pub fn try_apply<C: Pkt>(ctx: &C, frame_len: u32, gso_segs: u32, now_ns: u64) -> Option<bool> {
    let m = parse_fast(&ctx.direct(), frame_len, gso_segs)?;
    let key = FlowKey::from_fast(&m);
    let conn = FLOWS.get_ptr_mut(&key)?;
    // SAFETY: a FLOWS value pointer stays valid for the program run.
    let lock_word = unsafe { &raw mut (*conn).lock };
    let taken_over = unsafe { lock::lock(lock_word) } == lock::Taken::TakenOver;
    if taken_over {
        count(Stat::LockBusy);
        note::record(Note::LockTakenOver, 0);
    }
    // SAFETY: locked; no other writer.
    let applied = fast_update(unsafe { &mut *conn }, &m, now_ns) == Fast::Applied;
    // SAFETY: taken above.
    unsafe { lock::unlock(lock_word) };
    if !applied {
        return None;
    }
    count(Stat::FastPath);
    count_n(Stat::IpBytes, m.ip_bytes as u64);
    Some(taken_over)
}

/// The part of [`try_apply`] before the connection is touched: parse and lookup, for the
/// bench's floor (`floor_lookup`). True if the connection exists.
#[inline(always)]
pub fn lookup_only<C: Pkt>(ctx: &C, frame_len: u32, now_ns: u64) -> bool {
    let Some(m) = parse_fast(&ctx.direct(), frame_len, 1) else {
        return false;
    };
    // The time as the update would use it: keeps the clock read.
    now_ns != 0 && FLOWS.get_ptr(&FlowKey::from_fast(&m)).is_some()
}
