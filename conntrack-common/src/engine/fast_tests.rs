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
use crate::conn::{CONN_ANALYZER_DECIDED, CONN_DNS_ANALYZER, CONN_NTP_ANALYZER};
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

fn icmp4(from_a: bool, ty: u8, len: usize) -> Vec<u8> {
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

// ---------------------------------------------------------------------------------------------
// The random-state oracle.

/// An endpoint anywhere, with its sequence fields mostly consistent and near each other.
fn endpoint() -> impl Strategy<Value = Endpoint> {
    let st = prop_oneof![
        1 => Just(state::INACTIVE),
        1 => Just(state::SYN_SENT),
        1 => Just(state::SYN_ACK_SENT),
        3 => Just(state::PARTIAL),
        8 => Just(state::ESTABLISHED),
        3 => Just(state::CLOSED),
        1 => Just(state::RESET),
    ];
    let near =
        prop_oneof![4 => Just(0i64), 3 => -300i64..300, 1 => any::<i32>().prop_map(i64::from)];
    (
        (
            st.clone(),
            st,
            any::<u32>(),
            prop_oneof![3 => 1u64..4, 6 => 1u64..5000, 1 => any::<u64>()],
        ),
        (near.clone(), proptest::bool::weighted(0.1), any::<u32>()),
        (
            prop_oneof![7 => Just(0i64), 3 => near.clone()],
            proptest::option::weighted(0.2, (1u32..50, 1u32..50, any::<bool>())),
        ),
        (
            proptest::option::weighted(0.2, (1u32..4, near)),
            prop_oneof![2 => Just(0u64), 8 => 0u64..100_000],
        ),
        (0u64..2000, 0u64..2_000_000, 0u32..12, 0u32..12, 0u32..12),
        (prop_oneof![9 => 0u8..15, 1 => 15u8..32], 0u8..4, 0u32..3),
    )
        .prop_map(
            |(
                (state, prev_state, start_seq, last_rel),
                (ack_off, raw_ack_random, raw_ack),
                (deliv_off, blocks),
                (fin, data_bytes),
                (pkts, ip_bytes, rxmit, win0, gap),
                (window_scale, flags, hist_last_syn),
            )| {
                let mut e = Endpoint::ZERO;
                e.state = state;
                e.prev_state = prev_state;
                e.start_seq = start_seq;
                e.last_rel = last_rel;
                e.last_seq = start_seq.wrapping_add(last_rel as u32);
                e.ack_rel = last_rel.saturating_add_signed(ack_off);
                e.ack_seq = if raw_ack_random {
                    raw_ack // inconsistent raw/relative values on purpose
                } else {
                    start_seq.wrapping_add(e.ack_rel as u32)
                };
                e.deliv_rel = last_rel.saturating_add_signed(deliv_off);
                if let Some((gap_to, size, second)) = blocks {
                    let lo = (e.deliv_rel as u32).wrapping_add(gap_to);
                    e.blk_lo[0] = lo;
                    e.blk_hi[0] = lo.wrapping_add(size);
                    if second && REASM_BLOCKS > 1 {
                        e.blk_lo[1] = e.blk_hi[0].wrapping_add(5);
                        e.blk_hi[1] = e.blk_lo[1].wrapping_add(7);
                    }
                }
                if let Some((n, off)) = fin {
                    e.fin_cnt = n;
                    e.fin_rel = last_rel.saturating_add_signed(off);
                }
                e.pkts = pkts;
                e.ip_bytes = ip_bytes;
                e.data_bytes = data_bytes;
                e.rxmit_cnt = rxmit;
                e.win0_cnt = win0;
                e.gap_cnt = gap;
                e.window_scale = window_scale;
                e.flags = flags;
                e.hist_last_syn = hist_last_syn;
                e
            },
        )
}

/// What the oracle's connection and packet are made of; thresholds and the packet's fields
/// are placed relative to the connection's values when the case is built.
#[derive(Clone, Debug)]
struct OracleCase {
    proto: u8,
    zeroed: bool,
    flip: bool,
    orig: Endpoint,
    resp: Endpoint,
    flags: u16,
    history: Option<(Vec<u8>, u32)>,
    thresholds: Option<(u32, [u64; SLOTS])>,
    pkt: PktSpec,
}

#[derive(Clone, Debug)]
struct PktSpec {
    from_orig: bool,
    tcp_flags: u8,
    payload_len: u32,
    seq: Pos,
    ack: Pos,
    window: u16,
    pkts: u32,
    udp_len: Option<u16>,
    app: Option<(u8, u8, u8)>,
    window_scale: u8,
    dt_ns: u64,
}

/// Where a sequence or ack number lies.
#[derive(Clone, Debug)]
enum Pos {
    /// At the tracked raw value (TCP: highest sequence or ack) plus an offset.
    Near(i32),
    /// Ending at the tracked raw value (the last segment again).
    Behind,
    /// At the reassembly point (the next in-order byte).
    Delivered,
    Zero,
    Any(u32),
}

fn pos() -> impl Strategy<Value = Pos> {
    prop_oneof![
        4 => Just(Pos::Near(0)),
        2 => (-3i32..4).prop_map(Pos::Near),
        4 => (-200i32..200).prop_map(Pos::Near),
        1 => Just(Pos::Behind),
        4 => Just(Pos::Delivered),
        1 => Just(Pos::Zero),
        1 => any::<u32>().prop_map(Pos::Any),
    ]
}

fn pkt_spec() -> impl Strategy<Value = PktSpec> {
    let flags = prop_oneof![
        6 => Just(ACK),
        4 => Just(ACK | PSH),
        1 => Just(ACK | FIN),
        1 => Just(RST),
        1 => Just(0u8),
        1 => any::<u8>(),
    ];
    let len = prop_oneof![
        4 => Just(0u32),
        2 => 1u32..10,
        3 => 1u32..1500,
        1 => any::<u32>(),
    ];
    (
        (any::<bool>(), flags, len, pos(), pos()),
        (
            prop_oneof![1 => Just(0u16), 1 => Just(0x8000u16), 8 => any::<u16>()],
            prop_oneof![9 => Just(1u32), 1 => 1u32..40],
            proptest::option::weighted(0.1, any::<u16>()),
            proptest::option::weighted(0.3, any::<(u8, u8, u8)>()),
            any::<u8>(),
            prop_oneof![4 => 0u64..1_000_000, 1 => any::<u64>()],
        ),
    )
        .prop_map(
            |(
                (from_orig, tcp_flags, payload_len, seq, ack),
                (window, pkts, udp_len, app, window_scale, dt_ns),
            )| PktSpec {
                from_orig,
                tcp_flags,
                payload_len,
                seq,
                ack,
                window,
                pkts,
                udp_len,
                app,
                window_scale,
                dt_ns,
            },
        )
}

fn oracle_case() -> impl Strategy<Value = OracleCase> {
    let history = proptest::option::weighted(
        0.97,
        (
            proptest::collection::vec(
                proptest::sample::select(b"ShHADadFfRrTtWwGgCc^".to_vec()),
                0..=HISTORY_CAP,
            ),
            prop_oneof![7 => Just(0x007f_007fu32), 3 => any::<u32>()],
        ),
    );
    (
        (
            prop_oneof![5 => Just(proto::TCP), 2 => Just(proto::UDP), 1 => Just(proto::ICMP), 1 => Just(proto::ICMPV6)],
            proptest::bool::weighted(0.02),
            any::<bool>(),
        ),
        (endpoint(), endpoint()),
        (0u16..(1 << 10), history),
        proptest::option::weighted(
            0.3,
            (
                any::<u32>(),
                proptest::array::uniform7(prop_oneof![1 => Just(0u64), 3 => 0u64..3000]),
            ),
        ),
        pkt_spec(),
    )
        .prop_map(
            |((proto, zeroed, flip), (orig, resp), (flags, history), thresholds, pkt)| {
                OracleCase {
                    proto,
                    zeroed,
                    flip,
                    orig,
                    resp,
                    flags,
                    history,
                    thresholds,
                    pkt,
                }
            },
        )
}

const HOST_A: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1];
const HOST_B: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 2];

/// The slot values a threshold is placed relative to.
fn slot_base(c: &Conn, s: usize) -> u64 {
    match s {
        slot::ORIG_BYTES => c.orig.ip_bytes,
        slot::RESP_BYTES => c.resp.ip_bytes,
        slot::TOTAL_BYTES => c.orig.ip_bytes + c.resp.ip_bytes,
        slot::ORIG_PKTS => c.orig.pkts,
        slot::RESP_PKTS => c.resp.pkts,
        slot::TOTAL_PKTS => c.orig.pkts + c.resp.pkts,
        _ => 500_000,
    }
}

/// The connection, the packet and the time of a case.
fn build(case: &OracleCase) -> (Conn, PacketMeta, u64) {
    let mut c = Conn::ZERO;
    let (a, b) = if case.flip {
        (HOST_B, HOST_A)
    } else {
        (HOST_A, HOST_B)
    };
    let icmp = matches!(case.proto, proto::ICMP | proto::ICMPV6);
    let (req, rep) = if case.proto == proto::ICMPV6 {
        (128, 129)
    } else {
        (8, 0)
    };
    c.orig_addr = a;
    c.resp_addr = b;
    (c.orig_port, c.resp_port) = if icmp { (req, rep) } else { (40000, 80) };
    c.proto = if case.zeroed { 0 } else { case.proto };
    c.ip_version = 4;
    c.start_ns = 1_000_000;
    c.last_ns = 2_000_000;
    c.orig = case.orig;
    c.resp = case.resp;
    c.flags = case.flags;
    match &case.history {
        None => {
            c.history.push(b'H');
            c.history.seen = crate::history::mask::SYN;
        }
        Some((letters, seen)) => {
            for &l in letters {
                c.history.push(l);
            }
            c.history.seen = *seen;
        }
    }
    if let Some((armed, offs)) = case.thresholds {
        c.thr_armed = armed & (threshold::ALL_SLOTS | contents::EXTRACT_BITS);
        for (s, off) in offs.iter().enumerate() {
            c.thr[s] = slot_base(&c, s) + off;
        }
    }
    let p = &case.pkt;
    let (ep, peer) = if p.from_orig {
        (&c.orig, &c.resp)
    } else {
        (&c.resp, &c.orig)
    };
    let mut m = PacketMeta {
        src: if p.from_orig {
            c.orig_addr
        } else {
            c.resp_addr
        },
        dst: if p.from_orig {
            c.resp_addr
        } else {
            c.orig_addr
        },
        proto: case.proto,
        ip_version: 4,
        pkts: p.pkts,
        window_scale: p.window_scale,
        ..PacketMeta::default()
    };
    let len = p.payload_len;
    let place = |pos: &Pos, raw: u32, start: u32, deliv: u64| match *pos {
        Pos::Near(d) => raw.wrapping_add_signed(d),
        Pos::Behind => raw.wrapping_sub(len),
        Pos::Delivered => start.wrapping_add(deliv as u32),
        Pos::Zero => 0,
        Pos::Any(v) => v,
    };
    match case.proto {
        proto::TCP => {
            (m.sport, m.dport) = if p.from_orig {
                (40000, 80)
            } else {
                (80, 40000)
            };
            m.tcp_flags = p.tcp_flags;
            m.payload_len = len;
            m.seq = place(&p.seq, ep.last_seq, ep.start_seq, ep.deliv_rel);
            m.ack = place(&p.ack, peer.ack_seq, peer.start_seq, peer.deliv_rel);
            m.window = p.window;
            m.ip_len = 40u32.wrapping_add(len);
        }
        proto::UDP => {
            (m.sport, m.dport) = if p.from_orig {
                (40000, 80)
            } else {
                (80, 40000)
            };
            m.payload_len = len % 1500;
            m.udp_len = p.udp_len.unwrap_or(m.payload_len as u16 + 8);
            m.ip_len = 28 + m.payload_len;
            if let Some((flags, b0, b2)) = p.app {
                m.meta_flags = flags & (META_UDP_DNS_HEADER | META_UDP_NTP_MSG);
                m.app_b0 = b0;
                m.app_b2 = b2;
            }
        }
        _ => {
            (m.sport, m.dport) = if p.from_orig { (req, 0) } else { (rep, 0) };
            m.payload_len = len % 1500;
            m.ip_len = 28 + m.payload_len;
        }
    }
    m.ip_bytes = m.ip_len.wrapping_mul(m.pkts);
    (c, m, c.last_ns.wrapping_add(p.dt_ns))
}

/// The oracle for one case: why the fast path declined (it wrote nothing), or `None` once the
/// applied state was checked against the full update.
fn oracle(case: &OracleCase) -> Result<Option<Reason>, TestCaseError> {
    let (c0, m, now) = build(case);
    let fm = FastMeta::view(&m);
    let mut fast = c0;
    let outcome = fast_update(&mut fast, &fm, now);
    let planned = plan(&c0, &fm, now);
    prop_assert_eq!(outcome == Fast::Applied, planned.is_ok());
    match planned {
        Err(reason) => {
            prop_assert_eq!(fast, c0, "NeedFull ({:?}) wrote", reason);
            Ok(Some(reason))
        }
        Ok(_) => {
            let mut full = c0;
            let ch = update(&mut full, &m, now, true);
            let ch = ch | check_thresholds(&mut full, &m, now, ch);
            prop_assert_eq!(fast, full);
            prop_assert_eq!(ch, Changes::NONE);
            prop_assert_eq!(event_after_update(Changes::NONE, ch), None);
            prop_assert!(!contents::wanted(&full, &m, true, is_orig(&full, &m)));
            Ok(None)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(4096), ..ProptestConfig::default() })]

    /// NeedFull writes nothing; Applied is `update` + `check_thresholds`, which report nothing.
    #[test]
    fn fast_update_is_the_full_update_or_nothing(case in oracle_case()) {
        oracle(&case)?;
    }

    /// `would_cross` says whether `check_after_packet` would report a crossing after the count.
    #[test]
    fn would_cross_predicts_the_check_after_the_count(
        case in oracle_case(), is_orig in any::<bool>()) {
        let (c0, m, now) = build(&case);
        let predicted = threshold::would_cross(&c0, is_orig, m.pkts, m.ip_bytes, now);
        let mut c = c0;
        ep_mut(&mut c, is_orig).count_packet(m.pkts, m.ip_bytes);
        prop_assert_eq!(predicted, threshold::check_after_packet(&mut c, is_orig, now) != 0);
    }
}

/// The oracle's cases are not vacuous: a fixed sample reaches every reason and applies
/// packets of every protocol.
#[test]
fn oracle_cases_reach_every_outcome() {
    let mut runner = TestRunner::deterministic();
    let strategy = oracle_case();
    let mut applied = std::collections::HashMap::<u8, u32>::new();
    let mut reasons = [0u32; 16];
    let mut n = 0u32;
    while n < 40_000 {
        let case = strategy.new_tree(&mut runner).expect("a case").current();
        match oracle(&case).expect("the oracle holds") {
            None => *applied.entry(case.proto).or_default() += 1,
            Some(r) => reasons[r as usize] += 1,
        }
        n += 1;
    }
    std::println!("applied per protocol {applied:?}\nreasons {reasons:?}");
    for p in [proto::TCP, proto::UDP, proto::ICMP, proto::ICMPV6] {
        assert!(
            applied.get(&p).copied().unwrap_or(0) > 50,
            "protocol {p}: {applied:?}"
        );
    }
    for r in [
        Reason::Packet,
        Reason::Protocol,
        Reason::Extraction,
        Reason::Threshold,
        Reason::TcpState,
        Reason::SynAckFlip,
        Reason::FirstOfKind,
        Reason::ZeroWindow,
        Reason::Retransmission,
        Reason::SeqUnderflow,
        Reason::Buffered,
        Reason::AboveHole,
        Reason::AckAboveDelivered,
        Reason::UndecidedAnalyzer,
        Reason::FirstPayload,
    ] {
        assert!(reasons[r as usize] > 0, "{r:?} never reached: {reasons:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Fast then full equals full, over conversations.

/// One packet of a generated conversation, before the model places it.
#[derive(Clone, Debug)]
struct Step {
    /// Index into the flows of [`flow`].
    flow: u8,
    from_a: bool,
    /// TCP: 0 data, 1 pure ACK, 2 SYN, 3 SYN-ACK, 4 FIN, 5 RST, 6 any flags.
    act: u8,
    len: usize,
    /// TCP: 0 in order, < 0 a retransmission, > 0 above a hole.
    seq_jitter: i32,
    /// TCP: 0 everything seen, < 0 an old ack, > 0 beyond the data (a gap).
    ack_jitter: i32,
    dt_us: u64,
    gso: u32,
    checksum_ok: bool,
    zero_window: bool,
    vlans: u8,
    ip_opts: bool,
    /// UDP payload bytes 0 and 2 (the DNS QR bit, the NTP mode).
    app: (u8, u8),
    corrupt: Option<(usize, u8)>,
    /// A threshold or extraction command the agent sends before the packet:
    /// (slot or 7 for extraction, offset above the current value, check_orig).
    control: Option<(u8, u64, bool)>,
}

/// The conversations: (protocol, IPv6, responder port, with a handshake).
const FLOWS: [(u8, bool, u16, bool); 8] = [
    (proto::TCP, false, 80, true),
    (proto::TCP, false, 8080, false),
    (proto::TCP, true, 443, true),
    (proto::UDP, false, 53, false),
    (proto::UDP, false, 123, false),
    (proto::UDP, true, 5000, false),
    (proto::ICMP, false, 0, false),
    (proto::ICMPV6, true, 0, false),
];

fn step() -> impl Strategy<Value = Step> {
    // Mostly data and acks; a RST (or SYN) ends the ordinary part of a flow, so rarely.
    let act = prop_oneof![
        500 => Just(0u8),
        350 => Just(1u8),
        2 => Just(2u8),
        2 => Just(3u8),
        15 => Just(4u8),
        1 => Just(5u8),
        2 => Just(6u8),
    ];
    let seq_jitter = prop_oneof![90 => Just(0i32), 5 => -1500i32..0, 5 => 1i32..2000];
    let ack_jitter = prop_oneof![85 => Just(0i32), 10 => -1500i32..0, 5 => 1i32..2000];
    (
        (
            prop_oneof![5 => 0u8..3, 4 => 3u8..8],
            any::<bool>(),
            act,
            prop_oneof![1 => Just(0usize), 4 => 1usize..1460],
            seq_jitter,
            ack_jitter,
            0u64..2_000_000,
        ),
        (
            prop_oneof![19 => Just(1u32), 1 => 2u32..5],
            proptest::bool::weighted(0.97),
            proptest::bool::weighted(0.02),
            prop_oneof![8 => Just(0u8), 1 => 1u8..3],
            proptest::bool::weighted(0.1),
            any::<(u8, u8)>(),
            proptest::option::weighted(0.01, (any::<usize>(), 1u8..=255)),
            proptest::option::weighted(0.03, (0u8..8, 0u64..3000, any::<bool>())),
        ),
    )
        .prop_map(
            |(
                (flow, from_a, act, len, seq_jitter, ack_jitter, dt_us),
                (gso, checksum_ok, zero_window, vlans, ip_opts, app, corrupt, control),
            )| Step {
                flow,
                from_a,
                act,
                len,
                seq_jitter,
                ack_jitter,
                dt_us,
                gso,
                checksum_ok,
                zero_window,
                vlans,
                ip_opts,
                app,
                corrupt,
                control,
            },
        )
}

/// The sequence numbers a TCP flow's two sides send next.
#[derive(Clone, Copy)]
struct TcpModel {
    isn: [u32; 2],
    next: [u32; 2],
}

/// A frame of flow `f` from its side `from_a` (the client A or the server B).
fn flow_frame(f: u8, from_a: bool, flags: u8, seq: u32, ack: u32, len: usize, s: &Step) -> Vec<u8> {
    let (p, v6, server_port, _) = FLOWS[f as usize];
    let client_port = 40000 + f as u16;
    let (sp, dp) = if from_a {
        (client_port, server_port)
    } else {
        (server_port, client_port)
    };
    let tags = [0x8100u16, 0x88a8][..s.vlans as usize].to_vec();
    let icmp_type = match (v6, from_a) {
        (false, true) => 8,
        (false, false) => 0,
        (true, true) => 128,
        (true, false) => 129,
    };
    let ip = if v6 {
        let (src, dst) = if from_a { (A6, B6) } else { (B6, A6) };
        let ext: Vec<(u8, Vec<u8>)> = if s.ip_opts {
            vec![(0u8, vec![0u8, 0, 1, 4, 0, 0, 0, 0])]
        } else {
            Vec::new()
        };
        match p {
            proto::TCP => ipv6(
                src,
                dst,
                p,
                &ext,
                tcp_seg(sp, dp, flags, seq, ack, &[], len),
            ),
            proto::UDP => ipv6(src, dst, p, &ext, udp_seg(sp, dp, len % 600)),
            _ => ipv6(src, dst, p, &ext, icmp_seg(icmp_type, 0, len % 200)),
        }
    } else {
        let (src, dst) = if from_a { (A4, B4) } else { (B4, A4) };
        let opts: &[u8] = if s.ip_opts { &[1, 1, 1, 0] } else { &[] };
        match p {
            proto::TCP => ipv4(
                src,
                dst,
                p,
                opts,
                tcp_seg(sp, dp, flags, seq, ack, &[], len),
            ),
            proto::UDP => ipv4(src, dst, p, opts, udp_seg(sp, dp, len % 600)),
            _ => ipv4(src, dst, p, opts, icmp_seg(icmp_type, 0, len % 200)),
        }
    };
    eth(&tags, if v6 { 0x86dd } else { 0x0800 }, &ip)
}

/// Places the steps: TCP sequence numbers follow the model (with the steps' jitter), the
/// handshake flows start with one. Returns (meta, checksum_ok, command, time) per packet.
#[allow(clippy::type_complexity)]
fn conversation(
    steps: &[Step],
    isns: [u32; 4],
) -> Vec<(PacketMeta, bool, Option<(u8, u64, bool)>, u64)> {
    let mut tcp = [0usize, 1, 2].map(|i| TcpModel {
        isn: [isns[i], isns[i + 1]],
        next: [isns[i].wrapping_add(1), isns[i + 1].wrapping_add(1)],
    });
    let plain = Step {
        flow: 0,
        from_a: true,
        act: 0,
        len: 0,
        seq_jitter: 0,
        ack_jitter: 0,
        dt_us: 100,
        gso: 1,
        checksum_ok: true,
        zero_window: false,
        vlans: 0,
        ip_opts: false,
        app: (0, 0),
        corrupt: None,
        control: None,
    };
    let mut out = Vec::new();
    let mut now = 1_000_000_000u64;
    for (f, model) in tcp.iter().enumerate() {
        if FLOWS[f].3 {
            let [ia, ib] = model.isn;
            for (from_a, flags, seq, ack) in [
                (true, SYN, ia, 0),
                (false, SYN | ACK, ib, ia.wrapping_add(1)),
                (true, ACK, ia.wrapping_add(1), ib.wrapping_add(1)),
            ] {
                now += 100_000;
                let fr = flow_frame(f as u8, from_a, flags, seq, ack, 0, &plain);
                out.push((meta_of(&fr), true, None, now));
            }
        }
    }
    for s in steps {
        now += s.dt_us * 1000;
        let p = FLOWS[s.flow as usize].0;
        let mut frame = if p == proto::TCP {
            let m = &mut tcp[s.flow as usize];
            let (x, y) = if s.from_a { (0, 1) } else { (1, 0) };
            let ack = m.next[y].wrapping_add_signed(s.ack_jitter);
            let (flags, seq, len) = match s.act {
                0 => (
                    ACK | PSH,
                    m.next[x].wrapping_add_signed(s.seq_jitter),
                    s.len.max(1),
                ),
                1 => (ACK, m.next[x], 0),
                2 => (SYN, m.isn[x], 0),
                3 => (SYN | ACK, m.isn[x], 0),
                4 => (FIN | ACK, m.next[x], 0),
                5 => (RST | ACK, m.next[x], 0),
                _ => (
                    s.app.0,
                    m.next[x].wrapping_add_signed(s.seq_jitter),
                    s.len % 100,
                ),
            };
            if s.act == 0 && s.seq_jitter == 0 {
                m.next[x] = m.next[x].wrapping_add(len as u32);
            }
            if s.act == 4 {
                m.next[x] = m.next[x].wrapping_add(1);
            }
            flow_frame(s.flow, s.from_a, flags, seq, ack, len, s)
        } else {
            flow_frame(s.flow, s.from_a, 0, 0, 0, s.len, s)
        };
        if let Some((off, x)) = s.corrupt {
            let i = off % frame.len();
            frame[i] ^= x;
        }
        let mut meta = PacketMeta::default();
        if crate::packet::parse_ethernet(&frame, &mut meta).is_err() || meta.is_fragment() {
            continue;
        }
        if s.zero_window && meta.proto == proto::TCP {
            meta.window = 0;
        }
        if meta.meta_flags & (META_UDP_DNS_HEADER | META_UDP_NTP_MSG) != 0 {
            // What the DNS and NTP analyzers decide on (QR bit, mode).
            (meta.app_b0, meta.app_b2) = s.app;
        }
        (meta.pkts, meta.ip_bytes) = gso_counts(meta.ip_len, meta.payload_len, s.gso);
        out.push((meta, s.checksum_ok, s.control, now));
    }
    out
}

/// The agent's command for `control` on the connection `key`, applied to both tables.
fn command(key: FlowKey, c: &Conn, control: (u8, u64, bool), now_ns: u64) -> ThresholdCommand {
    let (s, off, check_orig) = control;
    let mut cmd = ThresholdCommand {
        key,
        check_orig: check_orig as u32,
        now_ns,
        ..ThresholdCommand::default()
    };
    if s as usize >= SLOTS {
        cmd.mask = contents::CMD_SET_CONTENTS | contents::extract_bit(check_orig);
    } else {
        let s = s as usize;
        cmd.mask = threshold::bit(s);
        cmd.values[s] = if s == slot::DURATION {
            now_ns.saturating_sub(c.start_ns) + off * 1000
        } else {
            slot_base(c, s) + off
        };
    }
    cmd
}

/// How the packets of conversations went.
#[derive(Default)]
struct Tally {
    packets: u32,
    fast: u32,
    /// Packets of existing connections that needed the full engine, by reason.
    reasons: [u32; 16],
}

/// Runs a conversation through the full engine alone and through `process_packet` (fast,
/// else full); compares after every packet.
fn fast_then_full(
    steps: &[Step],
    isns: [u32; 4],
    capacity: usize,
    tally: &mut Tally,
) -> Result<(), TestCaseError> {
    let cfg = Ports(vec![
        (80, proto::TCP),
        (443, proto::TCP),
        (53, proto::UDP),
        (123, proto::UDP),
    ]);
    let mut full = HostTable {
        capacity,
        ..HostTable::default()
    };
    let mut mixed = HostTable {
        capacity,
        ..HostTable::default()
    };
    for (i, (meta, ok, control, now)) in conversation(steps, isns).into_iter().enumerate() {
        let key = FlowKey::from_meta(&meta);
        if let Some(ctl) = control
            && let (Some(a), Some(b)) = (full.map.get_mut(&key), mixed.map.get_mut(&key))
        {
            let cmd = command(key, a, ctl, now);
            prop_assert_eq!(
                threshold::apply_command(a, &cmd),
                threshold::apply_command(b, &cmd)
            );
        }
        let planned = FastMeta::from_meta(&meta, ok)
            .and_then(|f| mixed.map.get(&key).map(|c| plan(c, &f, now)));
        let mut ev_full: Vec<Event> = Vec::new();
        let mut ev_mixed: Vec<Event> = Vec::new();
        let ch_full = process_packet_full(&mut full, &meta, now, ok, &cfg, |e| {
            ev_full.push(e.to_event())
        });
        let ch_mixed = process_packet(&mut mixed, &meta, now, ok, &cfg, |e| {
            ev_mixed.push(e.to_event())
        });
        prop_assert_eq!(ch_mixed, ch_full, "packet {}: {:?}", i, meta);
        prop_assert_eq!(&ev_mixed, &ev_full, "packet {}", i);
        prop_assert!(
            full.map == mixed.map,
            "packet {}: {:?}\nfull  {:?}\nmixed {:?}",
            i,
            meta,
            full.map.get(&key),
            mixed.map.get(&key)
        );
        match planned {
            Some(Ok(_)) => {
                prop_assert_eq!(ch_full, Changes::NONE);
                prop_assert!(ev_full.is_empty());
                tally.fast += 1;
            }
            Some(Err(r)) => tally.reasons[r as usize] += 1,
            None => {}
        }
        tally.packets += 1;
    }
    Ok(())
}

fn isns() -> impl Strategy<Value = [u32; 4]> {
    // Near the wrap, so sequence numbers cross it.
    proptest::array::uniform4(prop_oneof![1 => Just(0xffff_f000u32), 1 => any::<u32>()])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    /// Fast then full leaves exactly the tables and events of the full engine alone.
    #[test]
    fn fast_then_full_equals_full(
        steps in proptest::collection::vec(step(), 1..300),
        isns in isns(),
        capacity in prop_oneof![9 => Just(0usize), 1 => 1usize..4],
    ) {
        fast_then_full(&steps, isns, capacity, &mut Tally::default())?;
    }
}

/// The conversations mostly take the fast path and still reach the reasons that occur in
/// real traffic, so the equality above is not vacuous.
#[test]
fn conversations_mostly_take_the_fast_path() {
    let mut runner = TestRunner::deterministic();
    let strategy = (proptest::collection::vec(step(), 200..300), isns());
    let mut tally = Tally::default();
    for _ in 0..200 {
        let (steps, isns) = strategy.new_tree(&mut runner).expect("a case").current();
        fast_then_full(&steps, isns, 0, &mut tally).expect("fast then full equals full");
    }
    let (fast, packets) = (tally.fast, tally.packets);
    std::println!(
        "fast {fast} of {packets} packets; reasons {:?}",
        tally.reasons
    );
    assert!(fast * 2 > packets, "fast {fast} of {packets}");
    for r in [
        Reason::Extraction,
        Reason::Threshold,
        Reason::TcpState,
        Reason::FirstOfKind,
        Reason::Retransmission,
        Reason::Buffered,
        Reason::AboveHole,
        Reason::AckAboveDelivered,
        Reason::UndecidedAnalyzer,
        Reason::FirstPayload,
    ] {
        assert!(tally.reasons[r as usize] > 0, "{r:?} never reached");
    }
}
