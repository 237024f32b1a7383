//! The tunnel stage (`conntrack_tunnel`, `STAGES[STAGE_TUNNEL]`): the next layer of a packet
//! that carries a tunnel. Reached by tail call only after a UDP packet was applied (the end of
//! the update or threshold stage) or for an IP packet of protocol 4, 41 or 47 (from the parse
//! stage, which gives those no connection: Zeek's tunnel analyzers take them), and only while
//! fewer than `Tunnel::max_depth` layers were opened and the layer's checksum passed (Zeek
//! decapsulates only a valid packet). Where the inner packet starts is conntrack-common's
//! `tunnel` rule, the one the host engine's replay applies, read over a window of the payload
//! (`Scratch::window`, 512 bytes: an AYIYA identity longer than ~470 bytes is not opened). The inner packet is then copied to the front of `frame`
//! (`Scratch::base` says where it lies in the packet, which is never changed) and the parse
//! stage runs again on it, with the layer's encapsulation id and parent in scratch: the update
//! stage applies Zeek's tunnel-change rule and tells the agent each inner connection's tunnel
//! ([`emit_encap`]).

use crate::lock;
use crate::maps::{FLOWS, SCRATCH, STAGE_PARSE, Scratch};
use crate::pkt::Pkt;
use crate::{count, wake_flags};
use conntrack_common::conn::{CONN_TUNNEL_CONFIRMED, CONN_TUNNEL_DETECTED};
use conntrack_common::event::{ENCAP_TYPE_SHIFT, EncapEvent, EventKind};
use conntrack_common::key::FlowKey;
use conntrack_common::proto;
use conntrack_common::stats::Stat;
use conntrack_common::tunnel::{self, InnerKind, TunnelType};
use core::ptr::copy_nonoverlapping;

/// Most layers decapsulated, whatever the setting: each takes three tail calls of the 33 the
/// kernel allows a packet.
pub const MAX_LAYERS: u32 = 8;

/// Replay: `Scratch::inner_verdicts` bits of layer `d` (0: the first inner packet).
const VERDICT_BAD_CHECKSUM: u32 = 1;
const VERDICT_DROPPED: u32 = 2;

/// True if the packet just applied may carry a tunnel the tunnel stage should open.
#[inline(always)]
pub fn wanted(scratch: &Scratch) -> bool {
    scratch.depth < scratch.max_depth
        && scratch.checksum_ok != 0
        && (scratch.meta.proto == proto::UDP || tunnel::is_ip_tunnel_proto(scratch.meta.proto))
}

/// Copies `want` (> 0) bytes at `off` of the packet to the front of `buf` (`N` a power of
/// two), at most `N` and what the program was handed; returns how many (0 on failure).
#[inline(always)]
fn copy_front<C: Pkt, const N: usize>(ctx: &C, buf: &mut [u8; N], off: u64, want: u64) -> u32 {
    let have = (ctx.frame_len() as u64).saturating_sub(off);
    let want = if want > have { have } else { want };
    let n = if want > N as u64 {
        N as u32
    } else {
        want as u32
    };
    if n == 0 || off > u32::MAX as u64 {
        return 0;
    }
    // n is 1..=N; the mask spells that out for the verifier (see stage 1).
    // SAFETY: a plain local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    let n = (n.wrapping_sub(1) & (N as u32 - 1)) + 1;
    // SAFETY: `buf` has N >= n bytes.
    let rc = unsafe { ctx.load_bytes(off as u32, buf.as_mut_ptr().cast(), n) };
    if rc != 0 { 0 } else { n }
}

/// The stage: the next layer's packet into scratch, then the parse stage.
#[inline(always)]
pub fn run<C: Pkt>(ctx: &C) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch filled by the earlier stages for this packet.
    let scratch = unsafe { &mut *scratch };
    let depth = scratch.depth;
    if depth >= scratch.max_depth || depth >= MAX_LAYERS {
        return;
    }
    // The captured frame's length (in a replay the program may be handed a clipped copy).
    let frame_len = scratch.captured_len as u64;
    let l3 = scratch.base as u64 + scratch.l3_offset as u64;
    let l4 = l3 + scratch.meta.l4_offset as u64;
    // The layer's transport bytes as the host sees them: up to the IP length, as captured.
    let ip_end = l3 + scratch.meta.ip_len as u64;
    let end = if ip_end < frame_len {
        ip_end
    } else {
        frame_len
    };
    let l4_len = end.saturating_sub(l4);
    let proto_nr = scratch.meta.proto;
    let (sport, dport) = (scratch.meta.sport, scratch.meta.dport);
    let (payload_off, payload_len) = if proto_nr == proto::UDP {
        // The UDP length field bounds the payload (`capture::tunnels::inner_of`).
        let hi = ctx.load_u8((l4 + 4) as u32).unwrap_or(0) as u64;
        let lo = ctx.load_u8((l4 + 5) as u32).unwrap_or(0) as u64;
        let ulen = (hi << 8) | lo;
        let ulen = if ulen < 8 { 8 } else { ulen };
        let ulen = if ulen > l4_len { l4_len } else { ulen };
        (l4 + 8, ulen.saturating_sub(8))
    } else {
        (l4, l4_len)
    };
    let n = copy_front(ctx, &mut scratch.window, payload_off, payload_len);
    if n == 0 {
        return;
    }
    let window = scratch.window.get(..n as usize).unwrap_or(&[]);
    let found = if proto_nr == proto::UDP {
        // Only a tunnel port can be the responder port a header confirms on: no lookup
        // for other datagrams.
        if tunnel::header_tunnel(sport).is_some() || tunnel::header_tunnel(dport).is_some() {
            confirm_header(&scratch.key, window, payload_len as usize);
        }
        tunnel::decap_udp_detect_len(sport, dport, window, payload_len as usize)
    } else {
        tunnel::decap_ip_len(proto_nr, window, payload_len as usize)
    };
    let Some(inner) = found else {
        return;
    };
    if proto_nr == proto::UDP && !tunnel::is_tunnel_port(sport) && !tunnel::is_tunnel_port(dport) {
        mark_detected(&scratch.key);
    }
    // Replay: the agent's checks of the inner packet (Zeek's IP checks, checksums).
    let verdict = (scratch.inner_verdicts >> (2 * depth)) & 3;
    // The tunnel: a UDP tunnel is its outer connection (this layer's key, from the parse
    // stage), an IP one (GRE over UDP too) the outer packet's address pair.
    let udp_tunnel = proto_nr == proto::UDP && inner.tunnel != TunnelType::Gre;
    if udp_tunnel {
        scratch.parent = scratch.key;
        let k = &scratch.parent;
        scratch.encap_id = tunnel::hop_id(
            scratch.encap_id,
            inner.tunnel,
            &k.addr_a,
            &k.addr_b,
            Some((k.port_a, k.port_b)),
        );
    } else {
        let (src, dst) = (scratch.meta.src, scratch.meta.dst);
        scratch.encap_id = tunnel::hop_id(scratch.encap_id, inner.tunnel, &src, &dst, None);
        scratch.parent = FlowKey {
            addr_a: src,
            addr_b: dst,
            proto: proto_nr,
            ..FlowKey::default()
        };
    }
    if verdict & VERDICT_DROPPED != 0 {
        // The tunnel was opened (Zeek logs it), its packet is dropped. The report names this
        // layer's tunnel, not the one around it.
        scratch.tunnel = inner.tunnel as u32;
        return emit_encap(scratch, 0);
    }
    let start = payload_off + inner.offset as u64;
    let n = copy_front(
        ctx,
        &mut scratch.frame,
        start,
        frame_len.saturating_sub(start),
    );
    if n == 0 {
        return;
    }
    let (l3_offset, ethertype) = match inner.kind {
        InnerKind::Ethernet => {
            match crate::l2::ip_offset(scratch.frame.get(..n as usize).unwrap_or(&[])) {
                Some((off, et)) => (off as u32, et as u32),
                None => return count(Stat::NonIp),
            }
        }
        InnerKind::Ipv4 => (0, 0x0800),
        InnerKind::Ipv6 => (0, 0x86dd),
    };
    scratch.depth = depth + 1;
    scratch.tunnel = inner.tunnel as u32;
    scratch.base = start as u32;
    scratch.l3_offset = l3_offset;
    scratch.ethertype = ethertype;
    scratch.ip_len = n.saturating_sub(l3_offset);
    scratch.copy_cut = ((ctx.frame_len() as u64).saturating_sub(start) > n as u64) as u32;
    scratch.checksum_ok = (verdict & VERDICT_BAD_CHECKSUM == 0) as u32;
    scratch.ip_len_zero = 0;
    scratch.payload_cut = 0;
    scratch.encap_event = 0;
    ctx.tail_call(STAGE_PARSE);
}

/// The UDP flow `key` carried a tunnel found by its content (Teredo, AYIYA off their ports):
/// Zeek tries that detection on every datagram, so its later ones skip the fast path
/// (`CONN_TUNNEL_DETECTED`, which the engine's fast update declines).
#[inline(always)]
fn mark_detected(key: &FlowKey) {
    let Some(conn) = FLOWS.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: a FLOWS value pointer stays valid for the program run.
    unsafe {
        if (*conn).flags & CONN_TUNNEL_DETECTED == 0 {
            set_flag(conn, CONN_TUNNEL_DETECTED);
        }
    }
}

/// The UDP flow `key`'s payload (`window` of its `len` bytes) has the header of the tunnel
/// registered on the flow's responder port, which Zeek's analyzer confirms on the header
/// alone (common's `tunnel::header_confirms`): the flow's `service` names the tunnel.
#[inline(always)]
fn confirm_header(key: &FlowKey, window: &[u8], len: usize) {
    let Some(conn) = FLOWS.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: a FLOWS value pointer stays valid for the program run; the responder port is
    // set at creation.
    unsafe {
        if (*conn).flags & CONN_TUNNEL_CONFIRMED == 0
            && tunnel::header_confirms((*conn).resp_port, window, len)
        {
            set_flag(conn, CONN_TUNNEL_CONFIRMED);
        }
    }
}

/// Sets `flag` in `conn`'s flags under the connection's lock (a fast update on another CPU
/// writes the same word).
///
/// # Safety
/// `conn` is a FLOWS value pointer of this program run.
#[inline(always)]
unsafe fn set_flag(conn: *mut conntrack_common::conn::Conn, flag: u16) {
    // SAFETY: as the caller promises.
    unsafe {
        let lock_word = &raw mut (*conn).lock;
        lock::lock(lock_word);
        (*conn).flags |= flag;
        lock::unlock(lock_word);
    }
}

/// An inner packet that makes no connection: its tunnel is reported all the same.
#[inline(always)]
pub fn opened_only(scratch: &Scratch) {
    if scratch.depth != 0 {
        emit_encap(scratch, 0);
    }
}

/// The connection's tunnel for the agent (`tunnel_parents`), after the connection's own
/// event: `flags` are `event::ENCAP_NEW` / `ENCAP_CHANGED`; 0 for a tunnel whose inner packet
/// made no connection (the agent still discovers the tunnel, as the host's replay does when
/// it opens one).
#[inline(always)]
pub fn emit_encap(scratch: &Scratch, flags: u32) {
    let Some(mut entry) = crate::maps::EVENTS.reserve::<EncapEvent>(0) else {
        return count(Stat::RingbufFull);
    };
    let out: *mut EncapEvent = entry.as_mut_ptr();
    // SAFETY: the reservation holds one `EncapEvent`, written whole before submit.
    unsafe {
        (*out).kind = EventKind::Encap as u32;
        (*out).flags = flags | (scratch.tunnel << ENCAP_TYPE_SHIFT);
        (*out).ts_ns = scratch.now_ns;
        let key = if flags == 0 {
            &scratch.parent
        } else {
            &scratch.key
        };
        copy_nonoverlapping(key, &raw mut (*out).key, 1);
        copy_nonoverlapping(&scratch.parent, &raw mut (*out).parent, 1);
    }
    entry.submit(wake_flags());
    count(Stat::Events);
}
