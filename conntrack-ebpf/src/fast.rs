//! The fast paths, in stage 1, for the packets that make up most traffic:
//! - an ordinary packet of an existing connection (an in-order segment or pure ACK of an
//!   established stream, a datagram of a UDP flow both sides already used, an ICMP echo) is
//!   read in place, applied with `engine::fast_update` under the connection's lock, and done:
//!   no scratch copy, no tail call, no event;
//! - a plain SYN or a datagram that opens a connection is read in place, the connection is
//!   built whole with `engine::fast_open` in per-CPU scratch and inserted, and its NewConn
//!   event sent: one hash operation (a datagram: after the lookup that missed) instead of the
//!   stage chain's three, and no tail call.
//!
//! Every other packet (SYN-ACK/FIN/RST, a SYN for a key that exists (reuse), a first datagram
//! that flips the roles or meets an analyzer (DNS, NTP) or, with decapsulation on, may carry
//! Teredo or AYIYA (then so does the rest of a flow found to carry them), anything that adds
//! a history letter, retransmissions, gaps, fragments, IP options, extension headers, a
//! threshold it could cross, extraction, a replayed packet with a bad checksum, a full table)
//! takes the stage chain unchanged: `packet::fast_parse::parse_view`, the view's checks or
//! `fast_update` say so before anything is written (the lock is released first: the chain takes
//! it again; a failed insert wrote nothing).

use crate::flow::BpfPorts;
use crate::lock;
use crate::maps::{EVENTS, FLOWS, SCRATCH};
use crate::note::{self, Note};
use crate::pkt::Pkt;
use crate::{count, count_n};
use aya_ebpf::bindings::BPF_NOEXIST;
use conntrack_common::conn::Conn;
use conntrack_common::engine::{Changes, Fast, FastMeta, fast_open, fast_update};
use conntrack_common::event::{ConnChange, EventKind};
use conntrack_common::key::FlowKey;
use conntrack_common::packet::NO_WINDOW_SCALE;
use conntrack_common::packet::fast_parse::{Header, HeaderSource, parse_fast, parse_view};
use conntrack_common::proto;
use conntrack_common::stats::Stat;
use conntrack_common::tunnel;

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

/// Takes the packet if a fast path can: `Some(noted)`, where `noted` says a note waits for
/// the note stage (a lock taken over); `None` if it needs the stage chain (nothing was written
/// then). `frame_len` is the whole frame's length, `gso_segs` the packets it stands for,
/// `ifindex` the interface recorded in a new connection (0 in replays). `l2`: NewConn events
/// carry the link layer (`CONFIG_L2`); the stage chain, which has the frame's copy, opens every
/// connection then, so the fast open's event stays one fixed-size record. `tunnels`:
/// decapsulation is on.
#[inline(always)]
pub fn try_fast<C: Pkt>(
    ctx: &C,
    frame_len: u32,
    gso_segs: u32,
    now_ns: u64,
    ifindex: u32,
    l2: bool,
    tunnels: bool,
) -> Option<bool> {
    let (m, l4) = parse_view(&ctx.direct(), frame_len, gso_segs)?;
    // With decapsulation on, a datagram on a tunnel's port goes to the stage chain, whose
    // tunnel stage opens it.
    if tunnels
        && m.proto == proto::UDP
        && (tunnel::is_tunnel_port(m.sport) || tunnel::is_tunnel_port(m.dport))
    {
        return None;
    }
    if m.may_apply() {
        let key = FlowKey::from_fast(&m);
        match FLOWS.get_ptr_mut(&key) {
            Some(conn) => try_apply(conn, &m, now_ns),
            // A datagram of a new flow (a plain SYN never gets here: `may_apply` refuses SYNs).
            None if m.opens() && !l2 && !(tunnels && may_carry_tunnel(ctx, &m, l4)) => {
                try_open(ctx, &m, l4, now_ns, ifindex)
            }
            None => None,
        }
    } else if m.opens() && !l2 {
        // A plain SYN: no lookup, the insert finds an existing key.
        try_open(ctx, &m, l4, now_ns, ifindex)
    } else {
        None
    }
}

/// A new UDP flow's first datagram that may carry Teredo or AYIYA off their ports
/// (`tunnel::may_be_detected` on its first payload bytes): it takes the stage chain, whose
/// tunnel stage runs Zeek's detection (and, if it opens the datagram, keeps the flow's later
/// ones off the fast path: `CONN_TUNNEL_DETECTED`).
#[inline(always)]
fn may_carry_tunnel<C: Pkt>(ctx: &C, m: &FastMeta, l4: usize) -> bool {
    if m.proto != proto::UDP {
        return false;
    }
    let mut first = [0u8; 4];
    // SAFETY: `first` has room for the 4 bytes asked.
    let rc = unsafe { ctx.load_bytes((l4 + 8) as u32, first.as_mut_ptr().cast(), 4) };
    rc == 0 && tunnel::may_be_detected(first)
}

/// The ordinary packet `m` of the existing connection `conn`, applied under its lock (see
/// [`try_fast`]).
#[inline(always)]
fn try_apply(conn: *mut Conn, m: &FastMeta, now_ns: u64) -> Option<bool> {
    // SAFETY: a FLOWS value pointer stays valid for the program run.
    let lock_word = unsafe { &raw mut (*conn).lock };
    let taken_over = unsafe { lock::lock(lock_word) } == lock::Taken::TakenOver;
    if taken_over {
        count(Stat::LockBusy);
        note::record(Note::LockTakenOver, 0);
    }
    // SAFETY: locked; no other writer.
    let applied = fast_update(unsafe { &mut *conn }, m, now_ns) == Fast::Applied;
    // SAFETY: taken above.
    unsafe { lock::unlock(lock_word) };
    if !applied {
        return None;
    }
    count(Stat::FastPath);
    count_n(Stat::IpBytes, m.ip_bytes as u64);
    Some(taken_over)
}

/// The plain SYN or datagram `m` (transport header at `l4`) opening a connection: built in
/// scratch, inserted if its key is new (`BPF_NOEXIST`), announced with NewConn. The event's
/// place in the ring is reserved before the insert, so that no event of the connection from
/// another CPU (its SYN-ACK, a reply) can come before it. A first packet `fast_open` declines,
/// a key that exists (a reuse, or another CPU's insert) or a full table leaves everything to
/// the stage chain.
#[inline(always)]
fn try_open<C: Pkt>(ctx: &C, m: &FastMeta, l4: usize, now_ns: u64, ifindex: u32) -> Option<bool> {
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, not shared with another run on this CPU.
    let scratch = unsafe { &mut *scratch };
    let window_scale = if m.proto == proto::TCP {
        crate::window_scale(ctx, &mut scratch.l4_hdr, l4 as u64)
    } else {
        NO_WINDOW_SCALE
    };
    // SAFETY: `Scratch::conn` is 8-aligned and a multiple of 8 bytes.
    unsafe { crate::zero_words(&raw mut scratch.conn) };
    let ch = fast_open(&mut scratch.conn, m, window_scale, &BpfPorts, now_ns)? | Changes::NEW;
    scratch.conn.ifindex = ifindex;
    scratch.key = FlowKey::from_fast(m);
    let entry = EVENTS.reserve::<ConnChange>(0);
    if FLOWS
        .insert(&scratch.key, &scratch.conn, BPF_NOEXIST as u64)
        .is_err()
    {
        if let Some(entry) = entry {
            entry.discard(0);
        }
        return None;
    }
    count(Stat::NewConns);
    count(Stat::FastOpens);
    count_n(Stat::IpBytes, m.ip_bytes as u64);
    let head = crate::Head {
        kind: EventKind::NewConn,
        changes: ch,
        ts_ns: now_ns,
        key: &scratch.key,
        from_orig: true,
    };
    crate::submit_change(entry, &head, &scratch.conn);
    Some(false)
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
