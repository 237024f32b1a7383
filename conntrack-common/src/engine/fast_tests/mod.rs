//! Tests of the fast path (`engine::fast`) against the full engine:
//! - one test per reason a packet needs the full engine, and the ordinary packets that apply;
//! - the random-state oracle: for arbitrary connection states and packets near their edges,
//!   `NeedFull` writes nothing and `Applied` equals `update` + `check_thresholds`, which
//!   report nothing;
//! - "fast then full equals full": conversations (TCP with and without handshake, UDP with
//!   the DNS and NTP analyzers, ICMP echo, over IPv4 and IPv6, with VLAN tags, IP options,
//!   GSO, retransmissions, holes, gaps, zero windows, bad checksums, corrupted bytes and
//!   thresholds or extraction armed mid-way) through `process_packet` and through
//!   `process_packet_full` leave equal tables after every packet and emit the same events.
//!
//! Cases per property: `PROPTEST_CASES` when set, else a modest default.

use super::fast::{Reason, plan};
use super::*;
use crate::conn::{
    CONN_ANALYZER_DECIDED, CONN_DNS_ANALYZER, CONN_NTP_ANALYZER, CONN_TUNNEL_DETECTED,
};
use crate::contents;
use crate::event::Event;
use crate::history::HISTORY_CAP;
use crate::packet::{
    FRAG_IS_FRAGMENT, META_L4_BAD_HEADER, META_L4_TRUNCATED, META_UDP_DNS_HEADER, META_UDP_NTP_MSG,
    gso_counts,
};
use crate::tcp::REASM_BLOCKS;
use crate::testutil::*;
use crate::threshold::{SLOTS, ThresholdCommand, slot};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use std::vec;
use std::vec::Vec;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

mod conversations;
mod open;
mod oracle;

// ---------------------------------------------------------------------------------------------
// Named cases.

/// Why `frame` at `t_ms` needs the full engine for the only connection of `sim` (None: fast).
fn why(sim: &Sim, frame: &[u8], t_ms: u64) -> Option<Reason> {
    plan(sim.only(), &FastMeta::view(&meta_of(frame)), t_ms * MS).err()
}

/// The full engine alone on a copy of `sim`'s table.
fn full_copy(sim: &Sim) -> HostTable {
    HostTable {
        map: sim.table.map.clone(),
        capacity: 0,
    }
}

/// Feeds `meta` to `sim` through `process_packet` and to a copy through the full engine
/// alone; both must end equal, with the same changes and events. Returns the changes.
fn feed_both(sim: &mut Sim, meta: &PacketMeta, t_ms: u64, checksum_ok: bool) -> Changes {
    let mut full = full_copy(sim);
    let mut full_events = Vec::new();
    let ch_full = process_packet_full(&mut full, meta, t_ms * MS, checksum_ok, &sim.cfg, |e| {
        full_events.push(e.to_event())
    });
    let mut events = Vec::new();
    let ch = process_packet(
        &mut sim.table,
        meta,
        t_ms * MS,
        checksum_ok,
        &sim.cfg,
        |e| events.push(e.to_event()),
    );
    assert_eq!(ch, ch_full);
    assert_eq!(events, full_events);
    assert_eq!(sim.table.map, full.map);
    sim.events.extend(events);
    ch
}

/// `frame` is applied by the fast path, exactly as the full engine applies it, and nothing
/// is reported.
fn assert_fast(sim: &mut Sim, frame: &[u8], t_ms: u64) {
    assert_eq!(why(sim, frame, t_ms), None, "expected the fast path");
    let events = sim.events.len();
    let ch = feed_both(sim, &meta_of(frame), t_ms, true);
    assert_eq!(ch, Changes::NONE);
    assert_eq!(sim.events.len(), events, "an applied packet emits nothing");
}

/// `frame` needs the full engine for `reason`; the fast path leaves the connection alone.
fn assert_full(sim: &mut Sim, frame: &[u8], t_ms: u64, reason: Reason) {
    assert_eq!(why(sim, frame, t_ms), Some(reason));
    let before = *sim.only();
    let mut c = before;
    let fm = FastMeta::view(&meta_of(frame));
    assert_eq!(fast_update(&mut c, &fm, t_ms * MS), Fast::NeedFull);
    assert_eq!(c, before, "NeedFull wrote");
    feed_both(sim, &meta_of(frame), t_ms, true);
}

/// A connection A:40000 -> B:80 after a handshake, data and pure ACKs in both directions
/// (every once-per-direction letter of an ordinary packet is set). Returns the simulator and
/// the next sequence numbers of A and B.
fn established() -> (Sim, u32, u32) {
    let mut sim = Sim::default();
    sim.feed(&tcp4(true, SYN, 100, 0, 0), 1, true);
    sim.feed(&tcp4(false, SYN | ACK, 500, 101, 0), 2, true);
    sim.feed(&tcp4(true, ACK, 101, 501, 0), 3, true);
    sim.feed(&tcp4(true, ACK | PSH, 101, 501, 10), 4, true);
    sim.feed(&tcp4(false, ACK, 501, 111, 0), 5, true);
    sim.feed(&tcp4(false, ACK | PSH, 501, 111, 20), 6, true);
    sim.feed(&tcp4(true, ACK, 111, 521, 0), 7, true);
    assert_eq!(sim.hist(), "ShADad");
    (sim, 111, 521)
}

/// The only connection, to adjust its state for a test.
fn only_mut(sim: &mut Sim) -> &mut Conn {
    sim.table.map.values_mut().next().expect("one connection")
}

pub(super) fn icmp4(from_a: bool, ty: u8, len: usize) -> Vec<u8> {
    let (s, d) = if from_a { (A4, B4) } else { (B4, A4) };
    eth4(ipv4(s, d, proto::ICMP, &[], icmp_seg(ty, 0, len)))
}

fn icmp6(from_a: bool, ty: u8, len: usize) -> Vec<u8> {
    let (s, d) = if from_a { (A6, B6) } else { (B6, A6) };
    eth6(ipv6(s, d, proto::ICMPV6, &[], icmp_seg(ty, 0, len)))
}

fn tcp6(from_a: bool, flags: u8, seq: u32, ack: u32, len: usize) -> Vec<u8> {
    let (s, sp, d, dp) = if from_a {
        (A6, 40000, B6, 80)
    } else {
        (B6, 80, A6, 40000)
    };
    eth6(ipv6(
        s,
        d,
        proto::TCP,
        &[],
        tcp_seg(sp, dp, flags, seq, ack, &[], len),
    ))
}

#[test]
fn in_order_tcp_data_is_fast() {
    let (mut sim, a, b) = established();
    assert_fast(&mut sim, &tcp4(true, ACK | PSH, a, b, 100), 10);
    assert_fast(&mut sim, &tcp4(true, ACK, a + 100, b, 1400), 11);
    assert_fast(&mut sim, &tcp4(false, ACK | PSH, b, a + 1500, 300), 12);
    let c = sim.only();
    assert_eq!(c.orig_bytes(), 1510);
    assert_eq!(c.resp_bytes(), 320);
    assert_eq!(c.last_ns, 12 * MS);
}

#[test]
fn pure_acks_are_fast_even_when_they_repeat() {
    let (mut sim, a, b) = established();
    assert_fast(&mut sim, &tcp4(false, ACK, b, a, 0), 10);
    assert_fast(&mut sim, &tcp4(false, ACK, b, a, 0), 11);
    assert_fast(&mut sim, &tcp4(true, ACK | PSH, a, b, 0), 12);
    assert_eq!(sim.hist(), "ShADad");
}

#[test]
fn tcp_over_ipv6_is_fast() {
    let mut sim = Sim::default();
    sim.feed(&tcp6(true, SYN, 100, 0, 0), 1, true);
    sim.feed(&tcp6(false, SYN | ACK, 500, 101, 0), 2, true);
    sim.feed(&tcp6(true, ACK | PSH, 101, 501, 10), 3, true);
    assert_full(
        &mut sim,
        &tcp6(true, ACK, 111, 501, 0),
        4,
        Reason::FirstOfKind,
    );
    assert_fast(&mut sim, &tcp6(true, ACK | PSH, 111, 501, 10), 5);
    assert_fast(&mut sim, &tcp6(true, ACK, 121, 501, 0), 6);
}

#[test]
fn gso_super_packet_is_fast_and_counts_every_segment() {
    let (mut sim, a, b) = established();
    let mut m = meta_of(&tcp4(true, ACK, a, b, 4000));
    (m.pkts, m.ip_bytes) = gso_counts(m.ip_len, m.payload_len, 3);
    assert_eq!((m.pkts, m.ip_bytes), (3, 4000 + 3 * 40));
    let fm = FastMeta::from_meta(&m, true).expect("a candidate");
    assert!(plan(sim.only(), &fm, 10 * MS).is_ok());
    let before = sim.only().orig_pkts();
    assert_eq!(feed_both(&mut sim, &m, 10, true), Changes::NONE);
    assert_eq!(sim.only().orig_pkts(), before + 3);
}

#[test]
fn half_closed_and_closed_streams_stay_fast() {
    let (mut sim, a, b) = established();
    // A closes; B keeps sending, A acknowledges.
    sim.feed(&tcp4(true, FIN | ACK, a, b, 0), 10, true);
    assert_fast(&mut sim, &tcp4(false, ACK | PSH, b, a + 1, 50), 11);
    assert_fast(&mut sim, &tcp4(true, ACK, a + 1, b + 50, 0), 12);
    // B closes too: both closes reported, `last_time` no longer moves.
    sim.feed(&tcp4(false, FIN | ACK, b + 50, a + 1, 0), 13, true);
    assert!(sim.only().orig.did_close() && sim.only().resp.did_close());
    let last = sim.only().last_ns;
    assert_fast(&mut sim, &tcp4(true, ACK, a + 1, b + 51, 0), 20);
    assert_eq!(sim.only().last_ns, last);
}

#[test]
fn udp_is_fast_once_both_roles_sent_payload() {
    let mut sim = Sim::default();
    let q = udp4(true, 30);
    let r = udp4(false, 60);
    sim.feed(&q, 1, true);
    assert_full(&mut sim, &r, 2, Reason::FirstOfKind);
    assert_fast(&mut sim, &q, 3);
    assert_fast(&mut sim, &r, 4);
    assert_fast(&mut sim, &udp4(true, 0), 5);
    assert_eq!(sim.only().orig.data_bytes, 60);
    assert_eq!(sim.only().resp.data_bytes, 120);
}

#[test]
fn icmp_echo_is_fast_after_the_first_packet() {
    let mut sim = Sim::default();
    sim.feed(&icmp4(true, 8, 56), 1, true);
    assert_fast(&mut sim, &icmp4(false, 0, 56), 2);
    assert_fast(&mut sim, &icmp4(true, 8, 56), 3);
    assert_eq!(sim.only().resp.data_bytes, 56);
    let mut sim = Sim::default();
    sim.feed(&icmp6(true, 128, 16), 1, true);
    assert_fast(&mut sim, &icmp6(false, 129, 16), 2);
}

#[test]
fn syn_fin_rst_and_packets_without_ack_need_the_full_engine() {
    let (mut sim, a, b) = established();
    for (flags, name) in [
        (SYN, "SYN"),
        (SYN | ACK, "SYN-ACK"),
        (FIN | ACK, "FIN"),
        (RST | ACK, "RST"),
        (RST, "bare RST"),
        (PSH, "no ACK"),
        (0, "no flags"),
    ] {
        let f = tcp4(true, flags, a, b, 0);
        assert_eq!(FastMeta::from_meta(&meta_of(&f), true), None, "{name}");
        assert_eq!(why(&sim, &f, 10), Some(Reason::Packet), "{name}");
    }
    assert_full(
        &mut sim,
        &tcp4(false, RST | ACK, b, a, 0),
        11,
        Reason::Packet,
    );
}

#[test]
fn zero_window_needs_the_full_engine() {
    let (mut sim, a, b) = established();
    let mut m = meta_of(&tcp4(false, ACK, b, a, 0));
    m.window = 0;
    assert_eq!(FastMeta::from_meta(&m, true), None);
    assert_eq!(feed_both(&mut sim, &m, 10, true), Changes::NONE);
    assert_eq!(sim.hist(), "ShADadw");
}

#[test]
fn window_scaled_to_zero_needs_the_full_engine() {
    // A shift this large only comes from a corrupt meta; `update_window` would see 0.
    let (mut sim, a, b) = established();
    only_mut(&mut sim).resp.window_scale = 17;
    let mut m = meta_of(&tcp4(false, ACK, b, a, 0));
    m.window = 0x8000;
    let fm = FastMeta::from_meta(&m, true).expect("a candidate");
    assert_eq!(plan(sim.only(), &fm, 10 * MS), Err(Reason::ZeroWindow));
    feed_both(&mut sim, &m, 10, true);
}

#[test]
fn retransmission_needs_the_full_engine() {
    let (mut sim, a, b) = established();
    assert_fast(&mut sim, &tcp4(true, ACK, a, b, 100), 10);
    assert_full(
        &mut sim,
        &tcp4(true, ACK, a, b, 100),
        11,
        Reason::Retransmission,
    );
    assert_full(
        &mut sim,
        &tcp4(true, ACK, a + 50, b, 50),
        12,
        Reason::Retransmission,
    );
    assert_eq!(sim.hist(), "ShADadT");
}

#[test]
fn data_above_a_hole_and_data_while_a_block_is_buffered_need_the_full_engine() {
    let (mut sim, a, b) = established();
    assert_full(
        &mut sim,
        &tcp4(true, ACK, a + 100, b, 50),
        10,
        Reason::AboveHole,
    );
    // In order again and past the block above the hole, which waits to be delivered.
    assert_full(&mut sim, &tcp4(true, ACK, a, b, 200), 11, Reason::Buffered);
    assert_eq!(sim.only().orig.blk_lo[0], sim.only().orig.blk_hi[0]);
    assert_fast(&mut sim, &tcp4(true, ACK, a + 200, b, 10), 12);
}

#[test]
fn ack_above_the_delivered_data_needs_the_full_engine() {
    let (mut sim, a, b) = established();
    // B acknowledges 500 bytes of A that were never seen: a content gap.
    assert_full(
        &mut sim,
        &tcp4(false, ACK, b, a + 500, 0),
        10,
        Reason::AckAboveDelivered,
    );
    assert_eq!(sim.hist(), "ShADadG");
    assert_fast(&mut sim, &tcp4(false, ACK, b, a + 500, 0), 11);
}

#[test]
fn data_before_the_start_sequence_needs_the_full_engine() {
    let (mut sim, a, b) = established();
    // Starts before A's ISN but ends past its highest sequence.
    assert_full(
        &mut sim,
        &tcp4(true, ACK, 50, b, 100),
        10,
        Reason::SeqUnderflow,
    );
    assert_eq!(sim.only().orig.last_seq, a + 39);
    assert_fast(&mut sim, &tcp4(true, ACK, a + 39, b, 0), 11);
}

#[test]
fn first_data_and_first_pure_ack_of_a_direction_need_the_full_engine() {
    let mut sim = Sim::default();
    sim.feed(&tcp4(true, SYN, 100, 0, 0), 1, true);
    sim.feed(&tcp4(false, SYN | ACK, 500, 101, 0), 2, true);
    sim.feed(&tcp4(true, ACK, 101, 501, 0), 3, true);
    assert_full(
        &mut sim,
        &tcp4(true, ACK, 101, 501, 10),
        4,
        Reason::FirstOfKind,
    );
    assert_full(
        &mut sim,
        &tcp4(false, ACK, 501, 111, 0),
        5,
        Reason::FirstOfKind,
    );
    assert_full(
        &mut sim,
        &tcp4(false, ACK, 501, 111, 20),
        6,
        Reason::FirstOfKind,
    );
    assert_eq!(sim.hist(), "ShADad");
    assert_fast(&mut sim, &tcp4(false, ACK, 521, 111, 20), 7);
}

#[test]
fn handshake_and_reset_states_need_the_full_engine() {
    let mut sim = Sim::default();
    sim.feed(&tcp4(true, SYN, 100, 0, 0), 1, true);
    // The responder never answered: the originator is SYN_SENT, the responder INACTIVE.
    assert_full(&mut sim, &tcp4(true, ACK, 101, 501, 0), 2, Reason::TcpState);
    let (mut sim, a, b) = established();
    only_mut(&mut sim).resp.state = crate::tcp::state::RESET;
    assert_full(&mut sim, &tcp4(true, ACK, a, b, 10), 10, Reason::TcpState);
}

#[test]
fn syn_ack_first_flip_needs_the_full_engine() {
    let (mut sim, a, b) = established();
    let c = only_mut(&mut sim);
    c.history = crate::history::History::EMPTY;
    c.history.push(b'H');
    c.history.seen = 0x007f_007f;
    assert_full(&mut sim, &tcp4(true, ACK, a, b, 0), 10, Reason::SynAckFlip);
}

/// Arms `value` in `slot` of the only connection as the agent does.
fn arm(sim: &mut Sim, s: usize, value: u64, check_orig: bool) -> u32 {
    let mut cmd = ThresholdCommand {
        mask: threshold::bit(s),
        check_orig: check_orig as u32,
        ..ThresholdCommand::default()
    };
    cmd.values[s] = value;
    threshold::apply_command(only_mut(sim), &cmd)
}

#[test]
fn armed_threshold_that_the_packet_crosses_needs_the_full_engine() {
    let (mut sim, a, b) = established();
    let f = tcp4(true, ACK, a, b, 100);
    let bytes = sim.only().orig_ip_bytes();
    // One byte short of what this packet reaches: still fast.
    assert_eq!(arm(&mut sim, slot::ORIG_BYTES, bytes + 141, true), 0);
    assert_fast(&mut sim, &f, 10);
    // Exactly reached (`>=`): the crossing is the full engine's to report.
    let f = tcp4(true, ACK, a + 100, b, 100);
    let bytes = sim.only().orig_ip_bytes();
    assert_eq!(arm(&mut sim, slot::ORIG_BYTES, bytes + 140, true), 0);
    assert_full(&mut sim, &f, 11, Reason::Threshold);
    assert_eq!(
        sim.events.last().and_then(|e| e.kind()),
        Some(EventKind::ThresholdCrossed)
    );
    // A responder slot is not checked on an originator's packet.
    let pkts = sim.only().resp_pkts();
    assert_eq!(arm(&mut sim, slot::RESP_PKTS, pkts + 1, false), 0);
    assert_fast(&mut sim, &tcp4(true, ACK, a + 200, b, 0), 12);
    assert_full(
        &mut sim,
        &tcp4(false, ACK, b, a + 200, 0),
        13,
        Reason::Threshold,
    );
}

#[test]
fn duration_threshold_crosses_only_strictly_after() {
    let (mut sim, a, b) = established();
    let start = sim.only().start_ns;
    assert_eq!(arm(&mut sim, slot::DURATION, 20 * MS - start, true), 0);
    assert_fast(&mut sim, &tcp4(true, ACK, a, b, 0), 20);
    assert_full(&mut sim, &tcp4(true, ACK, a, b, 0), 21, Reason::Threshold);
}

#[test]
fn extraction_needs_the_full_engine_for_payload_of_the_extracted_direction() {
    let (mut sim, a, b) = established();
    let cmd = ThresholdCommand {
        mask: contents::CMD_SET_CONTENTS | contents::EXTRACT_ORIG,
        ..ThresholdCommand::default()
    };
    threshold::apply_command(only_mut(&mut sim), &cmd);
    assert_full(&mut sim, &tcp4(true, ACK, a, b, 10), 10, Reason::Extraction);
    assert_fast(&mut sim, &tcp4(true, ACK, a + 10, b, 0), 11);
    assert_fast(&mut sim, &tcp4(false, ACK, b, a + 10, 30), 12);
}

#[test]
fn a_flow_that_carried_a_detected_tunnel_needs_the_full_engine() {
    // Zeek looks for Teredo/AYIYA in every datagram: once the kernel's tunnel stage found one
    // in this flow, its datagrams go where the detection runs.
    let mut sim = Sim::with_ports(&[]);
    let ab = udp4_payload((A4, 40000), (B4, 40001), &[9; 8]);
    let ba = udp4_payload((B4, 40001), (A4, 40000), &[9; 8]);
    sim.feed(&ab, 1, true);
    sim.feed(&ba, 2, true);
    assert_fast(&mut sim, &ab, 3);
    only_mut(&mut sim).flags |= CONN_TUNNEL_DETECTED;
    assert_full(&mut sim, &ab, 4, Reason::Tunnel);
    assert_full(&mut sim, &ba, 5, Reason::Tunnel);
}

#[test]
fn undecided_dns_and_ntp_analyzers_need_the_full_engine() {
    for (port, flag, msg) in [
        (53u16, CONN_DNS_ANALYZER, dns_msg(false, 20)),
        (123, CONN_NTP_ANALYZER, ntp_msg(4, 48)),
    ] {
        let mut sim = Sim::with_ports(&[(port, proto::UDP)]);
        let short = udp4_payload((A4, 40000), (B4, port), &[1, 2, 3, 4]);
        sim.feed(&short, 1, true);
        assert_eq!(sim.only().flags & (flag | CONN_ANALYZER_DECIDED), flag);
        assert_full(&mut sim, &short, 2, Reason::UndecidedAnalyzer);
        // A full message decides (NTP: a server-mode message from the originator flips).
        let full = udp4_payload((A4, 40000), (B4, port), &msg);
        assert_full(&mut sim, &full, 3, Reason::UndecidedAnalyzer);
        assert!(sim.only().has_flag(CONN_ANALYZER_DECIDED), "port {port}");
        let c = sim.only();
        let from_orig = udp4_payload(
            (c.orig_addr[12..].try_into().unwrap(), c.orig_port),
            (c.resp_addr[12..].try_into().unwrap(), c.resp_port),
            &[9; 8],
        );
        assert_fast(&mut sim, &from_orig, 4);
    }
}

#[test]
fn first_udp_datagram_of_a_role_and_first_payload_need_the_full_engine() {
    let mut sim = Sim::default();
    sim.feed(&udp4(true, 0), 1, true);
    // D is set by the empty datagram; the first payload still takes the full path.
    assert_full(&mut sim, &udp4(true, 10), 2, Reason::FirstPayload);
    assert_fast(&mut sim, &udp4(true, 10), 3);
    assert_full(&mut sim, &udp4(false, 0), 4, Reason::FirstOfKind);
    assert_fast(&mut sim, &udp4(false, 0), 5);
    assert_full(&mut sim, &udp4(false, 5), 6, Reason::FirstPayload);
}

#[test]
fn bad_checksum_fragment_dropped_header_and_other_protocols_are_never_fast() {
    let (mut sim, a, b) = established();
    let m = meta_of(&tcp4(true, ACK, a, b, 10));
    assert!(FastMeta::from_meta(&m, true).is_some());
    assert_eq!(FastMeta::from_meta(&m, false), None);
    // Only C is added, by the full engine.
    feed_both(&mut sim, &m, 10, false);
    assert_eq!(sim.hist(), "ShADadC");
    for (flag, name) in [
        (META_L4_TRUNCATED, "truncated"),
        (META_L4_BAD_HEADER, "bad header"),
    ] {
        let mut d = m;
        d.meta_flags |= flag;
        assert_eq!(FastMeta::from_meta(&d, true), None, "{name}");
        feed_both(&mut sim, &d, 11, true);
    }
    let mut frag = m;
    frag.frag_flags = FRAG_IS_FRAGMENT;
    assert_eq!(FastMeta::from_meta(&frag, true), None);
    let mut sctp = m;
    sctp.proto = 132;
    assert_eq!(FastMeta::from_meta(&sctp, true), None);
}

#[test]
fn a_zeroed_entry_needs_the_full_engine() {
    // The eBPF glue inserts a zeroed value before it initialises it.
    let fm = FastMeta::view(&meta_of(&tcp4(true, ACK, 111, 521, 10)));
    let mut c = Conn::ZERO;
    assert_eq!(plan(&c, &fm, 10 * MS), Err(Reason::Protocol));
    assert_eq!(fast_update(&mut c, &fm, 10 * MS), Fast::NeedFull);
    assert_eq!(c, Conn::ZERO);
}

#[test]
fn a_connection_seen_in_a_tunnel_needs_the_full_engine() {
    // Its packets outside the tunnel change its encapsulation (`tunnel::check_encap`).
    let m = tcp4(true, ACK, 111, 521, 10);
    let fm = FastMeta::view(&meta_of(&m));
    let mut c = Conn::ZERO;
    c.proto = fm.proto;
    c.encap = 5;
    assert_eq!(plan(&c, &fm, 10 * MS), Err(Reason::Tunnel));
}

#[test]
fn the_fast_key_is_the_packet_key() {
    let frames = [
        tcp4(true, ACK, 1, 2, 3),
        tcp4(false, ACK, 1, 2, 3),
        udp4(true, 3),
        icmp4(true, 8, 3),
        icmp4(false, 0, 3),
        icmp4(true, 3, 3),
        icmp6(false, 129, 3),
        icmp6(true, 135, 3),
        tcp6(false, ACK, 1, 2, 3),
    ];
    for f in frames {
        let m = meta_of(&f);
        assert_eq!(
            FlowKey::from_fast(&FastMeta::view(&m)),
            FlowKey::from_meta(&m)
        );
    }
}

#[test]
fn gso_counts_count_headers_once_per_segment() {
    assert_eq!(gso_counts(1500, 1460, 0), (1, 1500));
    assert_eq!(gso_counts(1500, 1460, 1), (1, 1500));
    assert_eq!(gso_counts(4420, 4380, 3), (3, 4380 + 3 * 40));
}

#[test]
fn a_fast_packet_through_the_driver_returns_nothing_and_emits_nothing() {
    let (mut sim, a, b) = established();
    let events = sim.events.len();
    let ch = sim.feed(&tcp4(true, ACK, a, b, 10), 10, true);
    assert_eq!(ch, Changes::NONE);
    assert_eq!(sim.events.len(), events);
    // A new connection is never fast: the lookup fails and the full engine creates it.
    let ch = sim.feed(&udp4(true, 10), 11, true);
    assert!(ch.contains(Changes::NEW));
}
