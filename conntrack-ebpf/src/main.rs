//! conntrack TC programs: every frame seen at ingress and egress goes through conntrack-common's
//! flow engine; connection state lives in `FLOWS`, and what the agent must know (new
//! connections, TCP state changes, reuse, packets that could not be applied) goes to `EVENTS`.
//!
//! An ordinary packet of an existing connection ends in the first program: the fast path
//! (fast.rs) reads its headers in place and applies it with `engine::fast_update`. Every other
//! packet takes a chain of programs joined by tail calls through `STAGES` (each is verified on
//! its own, which keeps the verifier's path count in bounds; per-CPU `SCRATCH` carries the
//! state):
//! - `conntrack_ingress` / `conntrack_egress`: run the capture filter if there is one
//!   (filter.rs), take the time and flags, try the fast path, copy
//!   up to `MAX_HEADER_BYTES` of the frame, skip the VLAN tags;
//! - `conntrack_parse`: `packet::parse_ip` (the IP layer) into a `PacketMeta`, then
//!   `packet::parse_l4`, GSO counts, the SYN's window-scale option, then lookup/creation, TCP
//!   reuse, initialisation, with the connection locked (flow.rs). These were three stages; a
//!   tail call is an indirect jump (a retpoline on most hosts) that every new connection paid,
//!   and together they verify in under 100k instructions;
//! - `conntrack_update`: `engine::update`, then the event, then unlock;
//! - `conntrack_threshold`: only for a connection with an armed threshold or content
//!   extraction, `engine::check_thresholds`, then the event, then unlock;
//! - `conntrack_contents`: only for payload to extract, copies it to `CONTENTS` (contents.rs).
//!
//! The end of `conntrack_parse` and `conntrack_update` are `engine::process_packet`'s steps
//! (see flow.rs). Events go to the ring buffer without waking the agent (it polls). `conntrack_control` (never attached) is how the
//! agent sets a connection's thresholds.
//!
//! The TC programs never change or drop the packet.
//!
//! Sensor mode (`run --sensor`, for SPAN/TAP monitor ports): the same stages as XDP programs
//! (`conntrack_xdp`, then `conntrack_xdp_*` through `XDP_STAGES`), generic over where the bytes
//! come from (pkt.rs). Nothing here depends on the hook's direction (TC ingress and egress run
//! the same code; a monitor port sees both directions at ingress): the engine orients each
//! connection from its first packet and Zeek's rules. Every XDP stage returns the sensor
//! verdict: `XDP_PASS`, or `XDP_DROP` after accounting when the agent set `SENSOR_DROP`.
//! Both forms use the one per-CPU `SCRATCH`: XDP and TC programs run with bottom halves off,
//! so neither interrupts the other's tail-call chain on a CPU, as for TC ingress and egress.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod contents;
mod control;
mod fast;
mod filter;
mod flood;
mod flow;
mod l2;
mod lock;
mod maps;
mod note;
mod pkt;
mod tunnel;

use core::ptr::copy_nonoverlapping;

use aya_ebpf::bindings::{
    BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE, TC_ACT_UNSPEC,
    xdp_action,
};
use aya_ebpf::helpers::bpf_ktime_get_ns;
use aya_ebpf::macros::{classifier, xdp};
use aya_ebpf::maps::ring_buf::RingBufEntry;
use aya_ebpf::programs::{TcContext, XdpContext};
use conntrack_common::conn::Conn;
use conntrack_common::event::{self, ConnChange, ConnL2, EventKind, EventRef, Snapshot, TableFull};
use conntrack_common::key::FlowKey;
use conntrack_common::packet::{
    MAX_HEADER_BYTES, NO_WINDOW_SCALE, PacketMeta, ParseError, gso_counts, note_udp_delivered,
    parse_ip, parse_l4, tcp_flags, tcp_window_scale,
};
use conntrack_common::proto;
use conntrack_common::stats::{MAX_IFACES, Stat};
use maps::{
    CONFIG, CONFIG_CLOCK_OFFSET, CONFIG_FILTER, CONFIG_FLAGS, CONFIG_L2, CONFIG_REPLAY,
    CONFIG_TUNNEL_MASK, CONFIG_TUNNEL_SHIFT, EVENTS, IFACE_STATS, L4_HEADER_BYTES, SCRATCH, SENSOR,
    SENSOR_DROP, STAGE_PARSE, STAGE_TUNNEL, STAGE_UPDATE, STATS,
};
use pkt::Pkt;

/// `__sk_buff.cb[0]` in replay: the agent found the transport checksum bad.
const CB_BAD_CHECKSUM: u32 = 1;
/// Replay: the packet's IPv4 total length was 0 (the frame carries the captured length).
const CB_IP_LEN_ZERO: u32 = 4;
/// Replay: the capture cut the packet short of its IP length (the snap length): a TCP payload
/// then never reaches Zeek's reassembler (`PacketMeta::payload_cut`).
const CB_PAYLOAD_CUT: u32 = 8;
/// Replay: the agent found a tunnel in the packet (its verdicts on the inner layers are in
/// `cb[1]`): the stage chain takes it, whose tunnel stage decapsulates it.
const CB_TUNNEL: u32 = 16;

/// Shortest frame worth parsing (an Ethernet header).
const ETH_HLEN: u32 = 14;

/// Passive observer: TC_ACT_UNSPEC is TCX_NEXT, so later TCX programs and the clsact filters
/// still run and the packet continues unchanged (TC_ACT_OK/PIPE would end the TCX chain).
const VERDICT: i32 = TC_ACT_UNSPEC;

#[classifier]
pub fn conntrack_ingress(ctx: TcContext) -> i32 {
    capture_stage(&ctx);
    VERDICT
}

#[classifier]
pub fn conntrack_egress(ctx: TcContext) -> i32 {
    capture_stage(&ctx);
    VERDICT
}

/// Does nothing: the per-packet cost baseline of `cargo xtask bench` (never attached).
#[classifier]
pub fn empty(_ctx: TcContext) -> i32 {
    VERDICT
}

/// The fast path's floor, part 1: the clock read every tracked packet pays (never attached;
/// `cargo xtask bench` measures it against `empty`).
#[classifier]
pub fn floor_clock(_ctx: TcContext) -> i32 {
    // SAFETY: helper without arguments (an external call: not optimised away).
    unsafe { bpf_ktime_get_ns() };
    VERDICT
}

/// The fast path's floor, part 2: the clock, the in-place parse and the flow lookup, without
/// the lock and the update (never attached; for `cargo xtask bench`).
#[classifier]
pub fn floor_lookup(ctx: TcContext) -> i32 {
    // SAFETY: as above.
    let now_ns = unsafe { bpf_ktime_get_ns() };
    fast::lookup_only(&ctx, ctx.len(), now_ns);
    VERDICT
}

/// Threshold commands from the agent (BPF_PROG_TEST_RUN only, never attached; see control.rs).
#[classifier]
pub fn conntrack_control(ctx: TcContext) -> i32 {
    control::run(&ctx) as i32
}

/// Stage 2, reached only by tail call from stage 1.
#[classifier]
pub fn conntrack_parse(ctx: TcContext) -> i32 {
    parse_stage(&ctx);
    VERDICT
}

/// Stage 3, reached only by tail call from stage 2.
#[classifier]
pub fn conntrack_update(ctx: TcContext) -> i32 {
    flow::apply(&ctx, emit);
    VERDICT
}

/// Stage 4, reached only by tail call from stage 3 for a connection with an armed threshold.
#[classifier]
pub fn conntrack_threshold(ctx: TcContext) -> i32 {
    flow::check_thresholds_stage(&ctx, emit);
    VERDICT
}

/// Stage 5, reached only by tail call from stage 4 for payload to extract (contents.rs).
#[classifier]
pub fn conntrack_contents(ctx: TcContext) -> i32 {
    contents::run(&ctx);
    flow::after_contents(&ctx);
    VERDICT
}

/// The tunnel stage (tunnel.rs), reached by tail call for a packet that may carry a tunnel.
#[classifier]
pub fn conntrack_tunnel(ctx: TcContext) -> i32 {
    tunnel::run(&ctx);
    VERDICT
}

/// The note stage (note.rs), reached by tail call when a rare condition is to be logged.
#[classifier]
pub fn conntrack_note(ctx: TcContext) -> i32 {
    note::run(&ctx);
    VERDICT
}

/// Sensor mode's verdict for every XDP stage: pass, or drop after accounting (`--sensor-drop`).
#[inline(always)]
fn sensor_verdict() -> u32 {
    match SENSOR.get(SENSOR_DROP) {
        Some(1) => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

/// Sensor mode, stage 1: a monitor port's frames (all of them arrive at ingress).
#[xdp]
pub fn conntrack_xdp(ctx: XdpContext) -> u32 {
    capture_stage(&ctx);
    sensor_verdict()
}

/// Does nothing but return the sensor verdict: the XDP per-packet cost baseline of
/// `cargo xtask bench` (never attached).
#[xdp]
pub fn empty_xdp(_ctx: XdpContext) -> u32 {
    sensor_verdict()
}

/// The scale bench's traffic generator (flood.rs; never attached: run with
/// BPF_PROG_TEST_RUN in live-frame mode).
#[xdp]
pub fn bench_flood(ctx: XdpContext) -> u32 {
    flood::run(&ctx)
}

/// Sensor mode, stage 2 (`XDP_STAGES`).
#[xdp]
pub fn conntrack_xdp_parse(ctx: XdpContext) -> u32 {
    parse_stage(&ctx);
    sensor_verdict()
}

/// Sensor mode, stage 3.
#[xdp]
pub fn conntrack_xdp_update(ctx: XdpContext) -> u32 {
    flow::apply(&ctx, emit);
    sensor_verdict()
}

/// Sensor mode, stage 4.
#[xdp]
pub fn conntrack_xdp_threshold(ctx: XdpContext) -> u32 {
    flow::check_thresholds_stage(&ctx, emit);
    sensor_verdict()
}

/// Sensor mode, the note stage.
#[xdp]
pub fn conntrack_xdp_note(ctx: XdpContext) -> u32 {
    note::run(&ctx);
    sensor_verdict()
}

/// Sensor mode, the tunnel stage.
#[xdp]
pub fn conntrack_xdp_tunnel(ctx: XdpContext) -> u32 {
    tunnel::run(&ctx);
    sensor_verdict()
}

/// Sensor mode, stage 5.
#[xdp]
pub fn conntrack_xdp_contents(ctx: XdpContext) -> u32 {
    contents::run(&ctx);
    flow::after_contents(&ctx);
    sensor_verdict()
}

#[inline(always)]
pub(crate) fn count(stat: Stat) {
    count_n(stat, 1);
}

#[inline(always)]
pub(crate) fn count_n(stat: Stat, n: u64) {
    if let Some(c) = STATS.get_ptr_mut(stat.index()) {
        // SAFETY: per-CPU value, this program is the only writer on this CPU.
        unsafe { *c = (*c).wrapping_add(n) };
    }
}

/// Stage 1 (ingress/egress): take time, flags and GSO count; an ordinary packet of an existing
/// connection ends here (fast.rs); for the others, copy the headers and find the IP header
/// behind the VLAN tags.
#[inline(always)]
fn capture_stage<C: filter::FromRaw>(ctx: &C) {
    count(Stat::Packets);
    let flags = CONFIG.get(CONFIG_FLAGS).copied().unwrap_or(0);
    if flags & CONFIG_FILTER != 0 && !filter::accepts(ctx) {
        return count(Stat::Filtered);
    }
    let len = ctx.frame_len();
    let pkt::Fields {
        tstamp,
        cb0,
        cb1,
        wire_len,
        gso_segs,
        ifindex,
    } = ctx.fields();
    let replay = flags & CONFIG_REPLAY != 0;
    let now_ns = if replay && tstamp != 0 {
        tstamp
    } else {
        // Live: tstamp is 0 at ingress and a departure time at egress; use the clock.
        live_clock()
    };
    // A replayed packet the agent flagged (bad checksum, IP length 0) is accounted apart.
    let flagged =
        replay && cb0 & (CB_BAD_CHECKSUM | CB_IP_LEN_ZERO | CB_PAYLOAD_CUT | CB_TUNNEL) != 0;
    let max_depth = ((flags >> CONFIG_TUNNEL_SHIFT) & CONFIG_TUNNEL_MASK) as u32;
    // A test run's skb sits on loopback: replays have no interface (the host engine's 0).
    let conn_ifindex = if replay { 0 } else { ifindex };
    let l2 = flags & CONFIG_L2 != 0;
    let tunnels = max_depth != 0;
    if !flagged
        && let Some(noted) = fast::try_fast(ctx, len, gso_segs, now_ns, conn_ifindex, l2, tunnels)
    {
        if !replay {
            count_iface(ifindex, gso_segs, len);
        }
        if noted {
            note::flush(ctx);
        }
        return;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, not shared with another run on this CPU.
    let scratch = unsafe { &mut *scratch };

    // Copy the headers (bpf_skb_load_bytes also reads non-linear skbs).
    if len < ETH_HLEN {
        return parse_error(ctx, ParseError::Truncated, note::IN_COPY);
    }
    let n = if len > MAX_HEADER_BYTES as u32 {
        MAX_HEADER_BYTES as u32
    } else {
        len
    };
    // n is 14..=MAX_HEADER_BYTES; the mask spells that out for the verifier, which (for XDP's
    // length helper) sees the check above on another register. The volatile read keeps LLVM
    // from folding the mask away.
    const _: () = assert!(MAX_HEADER_BYTES.is_power_of_two());
    // SAFETY: a plain local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    let n = (n.wrapping_sub(1) & (MAX_HEADER_BYTES as u32 - 1)) + 1;
    let dst = scratch.frame.as_mut_ptr().cast();
    // SAFETY: `dst` has MAX_HEADER_BYTES >= n bytes.
    if unsafe { ctx.load_bytes(0, dst, n) } != 0 {
        return parse_error(ctx, ParseError::Truncated, note::IN_COPY);
    }
    let frame = scratch.frame.get(..n as usize).unwrap_or(&[]);
    let Some((l3_offset, ethertype)) = l2::ip_offset(frame) else {
        return count(Stat::NonIp);
    };

    scratch.now_ns = now_ns;
    scratch.checksum_ok = !(replay && cb0 & CB_BAD_CHECKSUM != 0) as u32;
    scratch.l3_offset = l3_offset as u32;
    scratch.ip_len = n.saturating_sub(l3_offset as u32);
    scratch.copy_cut = (len > n) as u32;
    scratch.ip_len_zero = (replay && cb0 & CB_IP_LEN_ZERO != 0) as u32;
    scratch.replay = replay as u32;
    scratch.payload_cut = (replay && cb0 & CB_PAYLOAD_CUT != 0) as u32;
    scratch.ethertype = ethertype as u32;
    scratch.gso_segs = gso_segs;
    scratch.ifindex = conn_ifindex;
    scratch.depth = 0;
    scratch.max_depth = max_depth;
    scratch.base = 0;
    scratch.captured_len = if replay && wire_len > len {
        wire_len
    } else {
        len
    };
    scratch.encap_id = 0;
    scratch.encap_event = 0;
    scratch.inner_verdicts = if replay && cb0 & CB_TUNNEL != 0 {
        cb1
    } else {
        0
    };
    if !replay {
        count_iface(ifindex, gso_segs, len);
    }
    ctx.tail_call(STAGE_PARSE);
    count(Stat::ParseErrors); // the next stage is not installed
}

/// The live packet time: the monotonic clock plus the agent's offset to wall-clock time.
#[inline(always)]
pub(crate) fn live_clock() -> u64 {
    let offset = CONFIG.get(CONFIG_CLOCK_OFFSET).copied().unwrap_or(0);
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }.wrapping_add(offset)
}

/// Adds the packet to its interface's counters in `IFACE_STATS` (entry 0 for an ifindex
/// beyond the array).
#[inline(always)]
fn count_iface(ifindex: u32, gso_segs: u32, len: u32) {
    let pkts = if gso_segs > 1 { gso_segs } else { 1 };
    let slot = if ifindex < MAX_IFACES { ifindex } else { 0 };
    let Some(c) = IFACE_STATS.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: per-CPU value, this program is the only writer on this CPU.
    unsafe {
        (*c).packets = (*c).packets.wrapping_add(pkts as u64);
        (*c).bytes = (*c).bytes.wrapping_add(len as u64);
    }
}

/// Stage 2: the IP header(s) into `scratch.meta` (`parse_ip` stops before the transport
/// header on BPF), started at a verifier-opaque offset so the VLAN variants do not multiply the
/// parser's paths; then the transport header and the connection.
#[inline(always)]
fn parse_stage<C: Pkt>(ctx: &C) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch filled by stage 1 for this packet.
    let scratch = unsafe { &mut *scratch };
    let Some(ip) = ip_slice(&scratch.frame, scratch.l3_offset, scratch.ip_len) else {
        return count(Stat::ParseErrors);
    };
    let version = ip.first().map_or(0, |b| b >> 4);
    if !l2::version_matches(scratch.ethertype as u16, version) {
        return count(Stat::ParseErrors);
    }
    let meta: &mut PacketMeta = &mut scratch.meta;
    if let Err(e) = parse_ip(ip, meta) {
        tunnel::opened_only(scratch);
        return parse_error(ctx, e, note::IN_IP);
    }
    if meta.is_fragment() {
        tunnel::opened_only(scratch);
        // Reassembly is the host's job (replays); live fragments are counted, not tracked.
        return count(Stat::Fragments);
    }
    if scratch.max_depth != 0 && conntrack_common::tunnel::is_ip_tunnel_proto(meta.proto) {
        // With decapsulation on, GRE and IP-in-IP packets are tunnel layers, not connections;
        // the tunnel around this one is reported first (nested IP tunnels are rare).
        tunnel::opened_only(scratch);
        if tunnel::wanted(scratch) {
            ctx.tail_call(STAGE_TUNNEL);
        }
        return;
    }
    if scratch.depth != 0 {
        // An inner packet: Zeek's IP checks the host's replay makes (`capture::tunnels`).
        let end = scratch.base as u64 + scratch.l3_offset as u64 + meta.ip_len as u64;
        if conntrack_common::tunnel::inner_untracked(meta.proto)
            || (scratch.replay == 0 && end > scratch.captured_len as u64)
        {
            return tunnel::opened_only(scratch);
        }
    }
    transport_stage(ctx);
}

/// The IP packet in the scratch frame. Offset and length are bounded separately: a length
/// derived as `end - offset` loses its upper bound in the verifier.
#[inline(always)]
fn ip_slice(frame: &[u8; MAX_HEADER_BYTES], l3_offset: u32, ip_len: u32) -> Option<&[u8]> {
    let (off, ip_len) = (l3_offset as u64, ip_len as u64);
    if off > l2::MAX_L2_HEADER as u64 || ip_len > MAX_HEADER_BYTES as u64 {
        return None;
    }
    frame.get(off as usize..)?.get(..ip_len as usize)
}

/// Stage 2, continued: the transport header (`packet::parse_l4`), GSO counts and, for TCP
/// SYNs, the window-scale option; then the connection.
#[inline(always)]
fn transport_stage<C: Pkt>(ctx: &C) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch filled by the earlier stages for this packet.
    let scratch = unsafe { &mut *scratch };
    let l4_off = scratch.meta.l4_offset as u64;
    let captured = (scratch.ip_len as u64).saturating_sub(l4_off);
    if l4_off > MAX_HEADER_BYTES as u64 || captured > MAX_HEADER_BYTES as u64 {
        return count(Stat::ParseErrors);
    }
    // Transport length from the IP header (both versions: ip_len - l4_offset).
    let l4_len = scratch.meta.ip_len.saturating_sub(l4_off as u32);
    let start = scratch.l3_offset as u64 + l4_off;
    // Where `frame[0]` lies in the packet: 0, or an inner packet's start (tunnel.rs).
    let base = scratch.base as u64;
    // When our copy was cut, the transport header is read from the packet itself (a header
    // that starts near the end of the copy would otherwise look truncated: found by
    // `fuzz-kernel`), so `META_L4_TRUNCATED` then means what it means on the host.
    let l4: &[u8] = if scratch.copy_cut != 0 {
        let n = load_l4_header(ctx, &mut scratch.l4_hdr, base + start);
        match scratch.l4_hdr.get(..n) {
            Some(h) => h,
            None => return count(Stat::ParseErrors),
        }
    } else {
        match scratch
            .frame
            .get(start as usize..)
            .and_then(|rest| rest.get(..captured as usize))
        {
            Some(l4) => l4,
            None => return count(Stat::ParseErrors),
        }
    };
    if scratch.ip_len_zero != 0 {
        // The IP length the copy was parsed with (the captured packet's), kept for the
        // contents stage: it finds the payload's end by it once the counts below are zeroed.
        scratch.ip_len_zero = scratch.meta.ip_len.max(1);
    }
    let meta: &mut PacketMeta = &mut scratch.meta;
    if let Err(e) = parse_l4(l4, l4_len, meta) {
        return parse_error(ctx, e, note::IN_TRANSPORT);
    }
    // `parse_l4` judged the payload from our copy; whether the capture cut it is the packet's
    // length live (the skb holds the whole packet), the agent's verdict in a replay.
    // An inner packet was cut if the bytes after its start are fewer than its IP length.
    let cut = if scratch.replay != 0 && scratch.depth == 0 {
        scratch.payload_cut != 0
    } else {
        (scratch.captured_len as u64) < base + scratch.l3_offset as u64 + meta.ip_len as u64
    };
    meta.set_payload_cut(cut);
    if scratch.copy_cut != 0 && meta.proto == proto::UDP {
        // Our copy ends before the packet: the application analyzers see the packet's own
        // payload, so take its captured length and bytes 0 and 2 from the skb.
        let payload = base + start + 8;
        let captured = (ctx.frame_len() as u64).saturating_sub(payload) as u32;
        let b0 = ctx.load_u8(payload as u32);
        let b2 = ctx.load_u8(payload as u32 + 2);
        note_udp_delivered(captured, b0, b2, meta);
    }
    if scratch.checksum_ok == 0 {
        count(Stat::BadChecksums);
    }
    // A GSO/GRO super-packet stands for `gso_segs` packets, each with its own headers.
    (meta.pkts, meta.ip_bytes) = gso_counts(meta.ip_len, meta.payload_len, scratch.gso_segs);
    if scratch.ip_len_zero != 0 {
        // As the host engine does: CONNSIZE counts the header's TotalLen(), which was 0.
        meta.ip_len = 0;
        meta.ip_bytes = 0;
    }
    if meta.proto == proto::TCP && meta.tcp_flags & tcp_flags::SYN != 0 && !meta.l4_dropped() {
        meta.window_scale = window_scale(ctx, &mut scratch.l4_hdr, base + start);
    }
    count_n(Stat::IpBytes, meta.ip_bytes as u64);
    // In this stage rather than one of its own: it verifies in a few thousand instructions,
    // and a tail call (an indirect jump, a retpoline on most hosts) costs every new
    // connection.
    connection_step(ctx);
}

/// Reads up to `L4_HEADER_BYTES` of the packet from `start` (the transport header) into `buf`,
/// zero-filled past the packet's end; returns how many bytes the packet had there.
#[inline(always)]
fn load_l4_header<C: Pkt>(ctx: &C, buf: &mut [u8; L4_HEADER_BYTES], start: u64) -> usize {
    // Word stores: the array assignment is a 64-iteration `memset` byte loop on BPF.
    const _: () = assert!(L4_HEADER_BYTES % 8 == 0);
    // SAFETY: `Scratch::l4_hdr` is its first field, so 8-aligned; 64 bytes.
    unsafe { zero_words(buf.as_mut_ptr().cast::<[u64; L4_HEADER_BYTES / 8]>()) };
    let avail = (ctx.frame_len() as u64).saturating_sub(start);
    let n = if avail > L4_HEADER_BYTES as u64 {
        L4_HEADER_BYTES as u64
    } else {
        avail
    };
    if n == 0 || start > MAX_HEADER_BYTES as u64 {
        return 0;
    }
    // n is 1..=64; the mask spells that out for the verifier, which sees the check above
    // only on another register (a zero-sized read is refused). The volatile read keeps LLVM
    // from folding the mask away.
    // SAFETY: a plain local.
    let n = unsafe { core::ptr::read_volatile(&(n as u32)) };
    let len = (n.wrapping_sub(1) & (L4_HEADER_BYTES as u32 - 1)) + 1;
    // SAFETY: `buf` has L4_HEADER_BYTES >= len bytes; the helper checks the packet bounds.
    let rc = unsafe { ctx.load_bytes(start as u32, buf.as_mut_ptr().cast(), len) };
    if rc != 0 { 0 } else { n as usize }
}

/// The SYN's window-scale option, from the TCP header read out of the packet into a fixed
/// buffer in `Scratch`: a window into our copy would lose options whenever the header starts
/// within 60 bytes of `MAX_HEADER_BYTES` (long IPv6 extension headers, IPv4 options behind
/// VLAN tags), which the host engine parses (found by `fuzz-kernel`). The header (`doff`
/// bytes) was captured (else `l4_dropped`), so the walk never reads the zero fill.
#[inline(always)]
pub(crate) fn window_scale<C: Pkt>(ctx: &C, buf: &mut [u8; L4_HEADER_BYTES], start: u64) -> u8 {
    if load_l4_header(ctx, buf, start) < 20 {
        return NO_WINDOW_SCALE;
    }
    match buf.get(12) {
        Some(b) => tcp_window_scale(&buf[..], ((b >> 4) as usize) * 4),
        None => NO_WINDOW_SCALE,
    }
}

/// The end of stage 2: the connection for this packet, created/reused/initialised and
/// locked, then stage 3.
#[inline(always)]
fn connection_step<C: Pkt>(ctx: &C) {
    match flow::prepare(emit, count) {
        flow::Prepared::Ready(conn) => {
            ctx.tail_call(STAGE_UPDATE);
            flow::release(conn);
            count(Stat::ParseErrors); // the next stage is not installed
        }
        // Table full: its note, if logging is on.
        flow::Prepared::Done => note::flush(ctx),
    }
}

/// A frame whose headers could not be parsed: counted, and noted for `run --kernel-log`.
#[inline(always)]
fn parse_error<C: Pkt>(ctx: &C, e: ParseError, layer: u32) {
    count(Stat::ParseErrors);
    note::record(note::Note::ParseError, note::parse_detail(e, layer));
    note::flush(ctx);
}

/// Writes the event's record straight into a ring-buffer reservation: a [`ConnChange`] for a
/// connection's change, a [`Snapshot`] (the change and the whole connection) for a reuse or a
/// crossing, the packet for a full table (`conntrack_common::event` has the layouts).
///
/// Field by field, with `copy_nonoverlapping` for aggregates: struct assignments through
/// pointers become `memmove` calls on BPF, which are byte loops the verifier walks;
/// `copy_nonoverlapping` is inlined as word moves.
#[inline(always)]
fn emit(ev: &EventRef<'_>) {
    match ev.conn {
        Some(conn) if ev.kind != EventKind::TableFull => {
            if event::needs_snapshot(ev.kind, ev.changes) {
                emit_snapshot(ev, conn)
            } else if ev.kind == EventKind::NewConn && l2_events() {
                emit_new_conn_l2(ev, conn)
            } else {
                emit_change(ev, conn)
            }
        }
        _ => emit_table_full(ev),
    }
}

/// What a [`ConnChange`] takes from the packet rather than from the connection.
pub(crate) struct Head<'a> {
    pub kind: EventKind,
    pub changes: conntrack_common::engine::Changes,
    pub ts_ns: u64,
    pub key: &'a FlowKey,
    /// The packet was sent by the connection's originator.
    pub from_orig: bool,
}

impl<'a> Head<'a> {
    #[inline(always)]
    fn of(ev: &EventRef<'a>, conn: &Conn) -> Head<'a> {
        Head {
            kind: ev.kind,
            changes: ev.changes,
            ts_ns: ev.ts_ns,
            key: ev.key,
            from_orig: conntrack_common::engine::is_orig(conn, ev.meta),
        }
    }
}

/// Fills the [`ConnChange`] at `out`.
///
/// # Safety
/// `out` is valid for writes.
#[inline(always)]
unsafe fn write_change(out: *mut ConnChange, head: &Head<'_>, conn: &Conn, extra: u8) {
    // SAFETY: per the contract.
    unsafe {
        (*out).kind = head.kind as u32;
        (*out).changes = head.changes.0;
        (*out).ts_ns = head.ts_ns;
        copy_nonoverlapping(head.key, &raw mut (*out).key, 1);
        (*out).last_ns = conn.last_ns;
        (*out).flags = conn.flags;
        (*out).orig_state = conn.orig.state;
        (*out).resp_state = conn.resp.state;
        (*out).orient = event::orient(head.key, conn, head.from_orig) | extra;
        (*out)._pad0 = 0;
        (*out)._pad1 = 0;
    }
}

/// Writes and submits a [`ConnChange`] into `entry`, reserved earlier (`None`: the ring was
/// full then, which is counted).
#[inline(always)]
pub(crate) fn submit_change(entry: Option<RingBufEntry<ConnChange>>, head: &Head<'_>, conn: &Conn) {
    let Some(mut entry) = entry else {
        return count(Stat::RingbufFull);
    };
    // SAFETY: the reservation holds one `ConnChange`, written whole before submit.
    unsafe { write_change(entry.as_mut_ptr(), head, conn, 0) };
    entry.submit(wake_flags());
    count(Stat::Events);
}

/// The submit flags of an event: the agent is woken only once a quarter of the ring buffer
/// holds unread events (it drains on its 20 ms tick otherwise), so a busy ring wakes it at once
/// and a quiet one costs no wakeup per event.
#[inline(always)]
pub(crate) fn wake_flags() -> u64 {
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let size = EVENTS.query(BPF_RB_RING_SIZE as u64);
    if avail >= size / 4 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
fn emit_change(ev: &EventRef<'_>, conn: &Conn) {
    submit_change(EVENTS.reserve::<ConnChange>(0), &Head::of(ev, conn), conn);
}

/// The `CONFIG_L2` flag (looked up for NewConn events only).
#[inline(always)]
fn l2_events() -> bool {
    CONFIG.get(CONFIG_FLAGS).is_some_and(|f| f & CONFIG_L2 != 0)
}

/// A NewConn with the link-layer fields of the packet that opened the connection, read from
/// stage 1's copy of the frame (the stage chain opens every connection when they are asked
/// for: see `fast::try_fast`).
#[inline(always)]
fn emit_new_conn_l2(ev: &EventRef<'_>, conn: &Conn) {
    let Some(scratch) = SCRATCH.get_ptr(0) else {
        return;
    };
    let Some(mut entry) = EVENTS.reserve::<ConnL2>(0) else {
        return count(Stat::RingbufFull);
    };
    // SAFETY: per-CPU scratch filled by stage 1 for this packet.
    let l2 = conntrack_common::packet::l2::of_ethernet(unsafe { &(*scratch).frame });
    let out: *mut ConnL2 = entry.as_mut_ptr();
    // SAFETY: the reservation holds one `ConnL2`, written whole before submit.
    unsafe {
        write_change(
            &raw mut (*out).change,
            &Head::of(ev, conn),
            conn,
            event::HAS_L2,
        );
        copy_nonoverlapping(&l2, &raw mut (*out).l2, 1);
    }
    entry.submit(wake_flags());
    count(Stat::Events);
}

#[inline(always)]
fn emit_snapshot(ev: &EventRef<'_>, conn: &Conn) {
    let Some(mut entry) = EVENTS.reserve::<Snapshot>(0) else {
        return count(Stat::RingbufFull);
    };
    let out: *mut Snapshot = entry.as_mut_ptr();
    // SAFETY: the reservation holds one `Snapshot`, written whole before submit.
    unsafe {
        write_change(
            &raw mut (*out).change,
            &Head::of(ev, conn),
            conn,
            event::HAS_CONN,
        );
        copy_nonoverlapping(conn, &raw mut (*out).conn, 1);
    }
    entry.submit(wake_flags());
    count(Stat::Events);
}

#[inline(always)]
fn emit_table_full(ev: &EventRef<'_>) {
    let Some(mut entry) = EVENTS.reserve::<TableFull>(0) else {
        return count(Stat::RingbufFull);
    };
    let out: *mut TableFull = entry.as_mut_ptr();
    // SAFETY: the reservation holds one `TableFull`; every field is written before submit.
    unsafe {
        (*out).kind = EventKind::TableFull as u32;
        (*out).changes = ev.changes.0;
        (*out).ts_ns = ev.ts_ns;
        copy_nonoverlapping(ev.meta, &raw mut (*out).meta, 1);
    }
    entry.submit(wake_flags());
    count(Stat::Events);
}

/// Zeroes `*p` with volatile word stores: on BPF, LLVM lowers `write_bytes`/zero assignments
/// to `memset` calls (byte loops the verifier walks on every path) and merges plain stores back
/// into them.
///
/// # Safety
/// `p` is valid for writes, 8-aligned, and `size_of::<T>()` is a multiple of 8.
#[inline(always)]
pub(crate) unsafe fn zero_words<T>(p: *mut T) {
    let words = p.cast::<u64>();
    let mut i = 0;
    while i < size_of::<T>() / 8 {
        // SAFETY: in bounds per the contract.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
        i += 1;
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
