//! Engine scenarios: crafted packets with explicit times, checked against Zeek's expected
//! conn.log values (history, conn_state, bytes, packets, orientation).

use super::*;
use crate::conn::ConnStateCode::{self, *};
use crate::conn::{
    CONN_ATTEMPT_ARMED, CONN_CLOSE_ARMED, CONN_ESTABLISHED, CONN_HALF_CLOSED, CONN_HANDSHAKE_LEFT,
};
use crate::event::{Event, EventKind};
use crate::tcp::state;
use crate::testutil::*;

const C_ISN: u32 = 1000;
const S_ISN: u32 = 5000;

/// Client A:40000 -> server B:80: handshake at t=0,1,2 ms.
fn handshake(sim: &mut Sim) {
    sim.feed(&tcp4(true, SYN, C_ISN, 0, 0), 0, true);
    sim.feed(&tcp4(false, SYN | ACK, S_ISN, C_ISN + 1, 0), 1, true);
    sim.feed(&tcp4(true, ACK, C_ISN + 1, S_ISN + 1, 0), 2, true);
}

fn state_of(sim: &Sim) -> ConnStateCode {
    sim.only().conn_state()
}

#[test]
fn normal_close_is_sf_with_shadadff() {
    let mut sim = Sim::default();
    handshake(&mut sim);
    sim.feed(&tcp4(true, PSH | ACK, C_ISN + 1, S_ISN + 1, 100), 3, true);
    sim.feed(&tcp4(false, ACK, S_ISN + 1, C_ISN + 101, 0), 4, true);
    sim.feed(
        &tcp4(false, PSH | ACK, S_ISN + 1, C_ISN + 101, 200),
        5,
        true,
    );
    sim.feed(&tcp4(true, ACK, C_ISN + 101, S_ISN + 201, 0), 6, true);
    sim.feed(&tcp4(true, FIN | ACK, C_ISN + 101, S_ISN + 201, 0), 7, true);
    let ch = sim.feed(
        &tcp4(false, FIN | ACK, S_ISN + 201, C_ISN + 102, 0),
        8,
        true,
    );
    assert!(ch.contains(Changes::CLOSED));
    sim.feed(&tcp4(true, ACK, C_ISN + 102, S_ISN + 202, 0), 9, true);
    let c = sim.only();
    assert_eq!(sim.hist(), "ShADadFf");
    assert_eq!(c.conn_state(), SF);
    assert_eq!((c.orig_bytes(), c.resp_bytes()), (100, 200));
    assert_eq!((c.orig_pkts(), c.resp_pkts()), (6, 4));
    assert_eq!(
        (c.orig_ip_bytes(), c.resp_ip_bytes()),
        (6 * 40 + 100, 4 * 40 + 200)
    );
    // The final ACK after both FINs does not extend the duration.
    assert_eq!(c.duration_ns(), 8 * MS);
    assert!(c.has_flag(CONN_CLOSE_ARMED));
    assert_eq!(reported_at(&sim, Changes::CLOSED), Some(8 * MS));
    assert!(c.has_flag(CONN_HANDSHAKE_LEFT) && c.has_flag(CONN_ESTABLISHED));
    assert_eq!(reported_at(&sim, Changes::HANDSHAKE_LEFT), Some(MS));
    assert_eq!(&c.orig_addr[12..], &A4);
    assert_eq!((c.orig_port, c.resp_port), (40000, 80));
    assert_eq!(c.proto_name(), "tcp");
}

#[test]
fn events_new_conn_then_state_changes() {
    let mut sim = Sim::default();
    handshake(&mut sim);
    let kinds: std::vec::Vec<_> = sim.events.iter().map(|e| e.kind().unwrap()).collect();
    // The originator became ESTABLISHED with the SYN-ACK already; its ACK changes no state.
    assert_eq!(kinds, [EventKind::NewConn, EventKind::StateChanged]);
    let Event::Conn(first) = &sim.events[0] else {
        panic!("a connection's event");
    };
    assert_eq!(first.orig_state, state::SYN_SENT);
    assert!(first.has_flag(CONN_ATTEMPT_ARMED));
    assert!(first.from_orig());
    assert!(sim.events[1].changes().contains(Changes::ESTABLISHED));
}

#[test]
fn refused_connection_is_rej_sr() {
    let mut sim = Sim::default();
    sim.feed(&tcp4(true, SYN, C_ISN, 0, 0), 0, true);
    sim.feed(&tcp4(false, RST | ACK, 0, C_ISN + 1, 0), 1, true);
    assert_eq!(sim.hist(), "Sr");
    assert_eq!(state_of(&sim), REJ);
    assert_eq!((sim.only().orig_bytes(), sim.only().resp_bytes()), (0, 0));
}

#[test]
fn unanswered_syn_is_s0() {
    let mut sim = Sim::default();
    sim.feed(&tcp4(true, SYN, C_ISN, 0, 0), 0, true);
    sim.feed(&tcp4(true, SYN, C_ISN, 0, 0), 3000, true);
    assert_eq!(sim.hist(), "S");
    assert_eq!(state_of(&sim), S0);
    assert_eq!(sim.only().orig_pkts(), 2);
    assert!(sim.only().has_flag(CONN_ATTEMPT_ARMED));
}

#[test]
fn open_connection_is_s1() {
    let mut sim = Sim::default();
    handshake(&mut sim);
    assert_eq!(sim.hist(), "ShA");
    assert_eq!(state_of(&sim), S1);
}

#[test]
fn rst_mid_stream_from_originator_is_rsto() {
    let mut sim = Sim::default();
    handshake(&mut sim);
    sim.feed(&tcp4(true, PSH | ACK, C_ISN + 1, S_ISN + 1, 50), 3, true);
    // RST payload is not sequence space (and, as in Zeek's update_last_seq, its payload does
    // not advance the sequence, so it also counts as a retransmission).
    sim.feed(&tcp4(true, RST | ACK, C_ISN + 51, S_ISN + 1, 10), 4, true);
    assert_eq!(sim.hist(), "ShADRT");
    assert_eq!(state_of(&sim), RSTO);
    assert_eq!(sim.only().orig_bytes(), 50);
    assert!(sim.only().has_flag(CONN_CLOSE_ARMED));
}

#[test]
fn rst_mid_stream_from_responder_is_rstr() {
    let mut sim = Sim::default();
    handshake(&mut sim);
    sim.feed(&tcp4(false, RST, S_ISN + 1, 0, 0), 3, true);
    assert_eq!(sim.hist(), "ShAr");
    assert_eq!(state_of(&sim), RSTR);
}

// The four traces of scripts.base.protocols.conn.conn_state-RST-behavior.
#[test]
fn lone_rst_is_oth() {
    let mut sim = Sim::default();
    sim.feed(&tcp4(true, RST, 777, 0, 0), 0, true);
    assert_eq!(sim.hist(), "R");
    assert_eq!(state_of(&sim), OTH);
}

#[test]
fn syn_then_rst_is_rstos0() {
    let mut sim = Sim::default();
    sim.feed(&tcp4(true, SYN, C_ISN, 0, 0), 0, true);
    sim.feed(&tcp4(true, RST, C_ISN + 1, 0, 0), 1, true);
    assert_eq!(sim.hist(), "SR");
    assert_eq!(state_of(&sim), RSTOS0);
}

#[test]
fn syn_then_ack_then_rst_is_rstos0() {
    let mut sim = Sim::default();
    sim.feed(&tcp4(true, SYN, C_ISN, 0, 0), 0, true);
    sim.feed(&tcp4(false, ACK, S_ISN, C_ISN + 1, 0), 1, true);
    assert_eq!(sim.only().resp.state, state::INACTIVE);
    sim.feed(&tcp4(true, RST, C_ISN + 1, 0, 0), 2, true);
    assert_eq!(sim.hist(), "SaR");
    assert_eq!(state_of(&sim), RSTOS0);
}

#[test]
fn syn_then_fin_then_rst_is_oth() {
    let mut sim = Sim::default();
    sim.feed(&tcp4(true, SYN, C_ISN, 0, 0), 0, true);
    sim.feed(&tcp4(false, ACK, S_ISN, C_ISN + 1, 0), 1, true);
    sim.feed(&tcp4(true, FIN | ACK, C_ISN + 1, S_ISN, 0), 2, true);
    sim.feed(&tcp4(true, RST, C_ISN + 2, 0, 0), 3, true);
    assert_eq!(sim.hist(), "SaFR");
    assert_eq!(state_of(&sim), OTH);
}

#[test]
fn syn_then_fin_is_sh() {
    let mut sim = Sim::default();
    sim.feed(&tcp4(true, SYN, C_ISN, 0, 0), 0, true);
    sim.feed(&tcp4(true, FIN, C_ISN + 1, 0, 0), 1, true);
    assert_eq!(sim.hist(), "SF");
    assert_eq!(state_of(&sim), SH);
}

#[test]
fn midstream_traffic_is_oth_with_partial_endpoints() {
    let mut sim = Sim::default();
    sim.feed(&tcp4(true, PSH | ACK, 70_000, 90_000, 10), 0, true);
    sim.feed(&tcp4(false, PSH | ACK, 90_000, 70_010, 20), 1, true);
    sim.feed(&tcp4(true, ACK, 70_010, 90_020, 0), 2, true);
    let c = sim.only();
    assert_eq!(sim.hist(), "DdA");
    assert_eq!(
        (c.orig.state, c.resp.state),
        (state::PARTIAL, state::PARTIAL)
    );
    assert_eq!(c.conn_state(), OTH);
    assert_eq!((c.orig_bytes(), c.resp_bytes()), (10, 20));
}

#[test]
fn retransmission_is_not_counted_twice() {
    let mut sim = Sim::default();
    handshake(&mut sim);
    sim.feed(&tcp4(true, PSH | ACK, C_ISN + 1, S_ISN + 1, 100), 3, true);
    sim.feed(&tcp4(true, PSH | ACK, C_ISN + 1, S_ISN + 1, 100), 4, true);
    assert_eq!(sim.hist(), "ShADT");
    assert_eq!(sim.only().orig_bytes(), 100);
    assert_eq!(sim.only().orig_pkts(), 4);
}

#[test]
fn bytes_not_captured_but_acked_are_counted() {
    let mut sim = Sim::default();
    handshake(&mut sim);
    sim.feed(&tcp4(true, PSH | ACK, C_ISN + 1, S_ISN + 1, 100), 3, true);
    // 100 bytes at C_ISN+101 are never seen; the next segment follows them.
    sim.feed(&tcp4(true, PSH | ACK, C_ISN + 201, S_ISN + 1, 100), 4, true);
    assert_eq!(sim.only().orig_bytes(), 300);
    // Tail gap: the server acks 200 more bytes than were seen.
    sim.feed(&tcp4(false, ACK, S_ISN + 1, C_ISN + 501, 0), 5, true);
    let c = sim.only();
    assert_eq!(c.orig_bytes(), 500);
    // The 100-byte hole and the 200-byte tail.
    assert_eq!(c.missed_bytes(), 300);
    assert_eq!(sim.hist(), "ShADaG");
}

#[test]
fn sequence_wrap_is_counted_in_64_bits() {
    let mut sim = Sim::default();
    let isn = u32::MAX - 10;
    sim.feed(&tcp4(true, SYN, isn, 0, 0), 0, true);
    sim.feed(
        &tcp4(false, SYN | ACK, S_ISN, isn.wrapping_add(1), 0),
        1,
        true,
    );
    sim.feed(
        &tcp4(true, ACK, isn.wrapping_add(1), S_ISN + 1, 1000),
        2,
        true,
    );
    sim.feed(
        &tcp4(true, ACK, isn.wrapping_add(1001), S_ISN + 1, 1000),
        3,
        true,
    );
    assert_eq!(sim.only().orig_bytes(), 2000);
    assert_eq!(sim.hist(), "ShD");
}

#[test]
fn repeated_syn_same_seq_adds_no_letter_different_seq_is_reuse() {
    let mut sim = Sim::default();
    sim.feed(&tcp4(true, SYN, C_ISN, 0, 0), 0, true);
    let ch = sim.feed(&tcp4(true, SYN, C_ISN, 0, 0), 1, true);
    assert!(!ch.contains(Changes::REUSED));
    assert_eq!(sim.hist(), "S");
    let ch = sim.feed(&tcp4(true, SYN, C_ISN + 99, 0, 0), 2, true);
    assert!(ch.contains(Changes::REUSED | Changes::NEW));
    let removed = reused(&sim);
    assert_eq!(removed.conn.history_str(), b"S");
    assert_eq!(removed.conn.orig_pkts(), 2);
    assert_eq!(sim.only().orig_pkts(), 1);
    assert_eq!(sim.only().start_ns, 2 * MS);
}

/// The reuse record `sim` reported.
fn reused(sim: &Sim) -> &crate::event::Snapshot {
    sim.events
        .iter()
        .find_map(|e| match e {
            Event::Snapshot(r) if r.change.kind() == Some(EventKind::ReuseRemoved) => Some(r),
            _ => None,
        })
        .expect("a reuse")
}

#[test]
fn syn_after_close_starts_a_new_connection() {
    let mut sim = Sim::default();
    handshake(&mut sim);
    sim.feed(&tcp4(true, FIN | ACK, C_ISN + 1, S_ISN + 1, 0), 3, true);
    sim.feed(&tcp4(false, FIN | ACK, S_ISN + 1, C_ISN + 2, 0), 4, true);
    // Same ISN: still reuse, because the connection is closed.
    let ch = sim.feed(&tcp4(true, SYN, C_ISN, 0, 0), 5, true);
    assert!(ch.contains(Changes::REUSED));
    let removed = reused(&sim);
    assert_eq!(removed.conn.conn_state(), SF);
    assert_eq!(removed.conn.history_str(), b"ShAFf");
    assert_eq!(sim.hist(), "S");
}

#[test]
fn syn_ack_first_then_ack_flips_to_caret_h() {
    let mut sim = Sim::default();
    sim.feed(&tcp4(false, SYN | ACK, S_ISN, C_ISN + 1, 0), 0, true);
    assert_eq!(sim.hist(), "H");
    assert_eq!(&sim.only().orig_addr[12..], &B4);
    let ch = sim.feed(&tcp4(true, ACK, C_ISN + 1, S_ISN + 1, 0), 1, true);
    assert!(ch.contains(Changes::FLIPPED));
    sim.feed(&tcp4(true, PSH | ACK, C_ISN + 1, S_ISN + 1, 10), 2, true);
    sim.feed(&tcp4(false, ACK, S_ISN + 1, C_ISN + 11, 0), 3, true);
    sim.feed(&tcp4(false, PSH | ACK, S_ISN + 1, C_ISN + 11, 20), 4, true);
    sim.feed(&tcp4(true, FIN | ACK, C_ISN + 11, S_ISN + 21, 0), 5, true);
    sim.feed(&tcp4(false, FIN | ACK, S_ISN + 21, C_ISN + 12, 0), 6, true);
    let c = sim.only();
    assert_eq!(sim.hist(), "^hADadFf");
    assert_eq!(&c.orig_addr[12..], &A4);
    assert_eq!((c.orig_port, c.resp_port), (40000, 80));
    assert_eq!(c.conn_state(), SF);
    assert_eq!((c.orig_bytes(), c.resp_bytes()), (10, 20));
    assert_eq!((c.orig_pkts(), c.resp_pkts()), (3, 4));
}

#[test]
fn one_sided_syn_ack_flow_flips_on_its_own_ack() {
    // conn-size-flip one-sided: all packets from the server, history ^haf.
    let mut sim = Sim::default();
    sim.feed(&tcp4(false, SYN | ACK, S_ISN, C_ISN + 1, 0), 0, true);
    sim.feed(&tcp4(false, ACK, S_ISN + 1, C_ISN + 1, 0), 1, true);
    sim.feed(&tcp4(false, FIN | ACK, S_ISN + 1, C_ISN + 1, 0), 2, true);
    let c = sim.only();
    assert_eq!(sim.hist(), "^haf");
    assert_eq!((c.orig_pkts(), c.resp_pkts()), (0, 3));
    assert_eq!(&c.resp_addr[12..], &B4);
}

#[test]
fn syn_ack_from_likely_server_port_is_flipped_at_creation() {
    let mut sim = Sim::with_ports(&[(80, proto::TCP)]);
    let ch = sim.feed(&tcp4(false, SYN | ACK, S_ISN, C_ISN + 1, 0), 0, true);
    assert!(ch.contains(Changes::FLIPPED | Changes::NEW));
    assert_eq!(sim.hist(), "^h");
    sim.feed(&tcp4(true, ACK, C_ISN + 1, S_ISN + 1, 0), 1, true);
    assert_eq!(sim.hist(), "^hA");
    let c = sim.only();
    assert_eq!(&c.orig_addr[12..], &A4);
    assert_eq!(
        (c.orig.state, c.resp.state),
        (state::ESTABLISHED, state::ESTABLISHED)
    );
}

#[test]
fn syn_ack_with_both_ports_likely_is_not_flipped_at_creation() {
    let mut sim = Sim::with_ports(&[(80, proto::TCP), (40000, proto::TCP)]);
    sim.feed(&tcp4(false, SYN | ACK, S_ISN, C_ISN + 1, 0), 0, true);
    assert_eq!(sim.hist(), "H");
    // A data packet from the lower likely port to the higher one is flipped.
    let mut sim = Sim::with_ports(&[(80, proto::TCP), (40000, proto::TCP)]);
    sim.feed(&tcp4(false, PSH | ACK, S_ISN, C_ISN, 5), 0, true);
    assert_eq!(sim.hist(), "^d");
}

#[test]
fn plain_syn_is_never_flipped() {
    let mut sim = Sim::with_ports(&[(40000, proto::TCP)]);
    sim.feed(&tcp4(true, SYN, C_ISN, 0, 0), 0, true);
    assert_eq!(&sim.only().orig_addr[12..], &A4);
    assert_eq!(sim.hist(), "S");
}

#[test]
fn syn_syn_ack_reversal_flips_and_establishes() {
    let mut sim = Sim::default();
    sim.feed(&tcp4(false, SYN | ACK, S_ISN, C_ISN + 1, 0), 0, true);
    let ch = sim.feed(&tcp4(true, SYN, C_ISN, 0, 0), 1, true);
    assert!(!ch.contains(Changes::REUSED));
    assert!(ch.contains(Changes::FLIPPED));
    assert_eq!(sim.hist(), "Hs^");
    sim.feed(&tcp4(true, ACK, C_ISN + 1, S_ISN + 1, 0), 2, true);
    let c = sim.only();
    assert_eq!(sim.hist(), "Hs^A");
    assert_eq!(&c.orig_addr[12..], &A4);
    assert_eq!(
        (c.orig.state, c.resp.state),
        (state::ESTABLISHED, state::ESTABLISHED)
    );
    assert_eq!(c.conn_state(), S1);
}

#[test]
fn bad_checksum_syn_only_leaves_c() {
    let mut sim = Sim::default();
    let ch = sim.feed(&tcp4(true, SYN, C_ISN, 0, 0), 0, false);
    assert!(ch.contains(Changes::BAD_CHECKSUM | Changes::NEW));
    let c = sim.only();
    assert_eq!(sim.hist(), "C");
    assert_eq!((c.orig_pkts(), c.resp_pkts()), (0, 0));
    assert_eq!(c.conn_state(), OTH);
    assert_eq!(c.duration_ns(), 0);
    // The server's valid SYN-ACK is a reuse (originator still INACTIVE, seq differs).
    let ch = sim.feed(&tcp4(false, SYN | ACK, S_ISN, C_ISN + 1, 0), 1, true);
    assert!(ch.contains(Changes::REUSED));
    assert_eq!(sim.hist(), "H");
    assert_eq!(&sim.only().orig_addr[12..], &B4);
}

#[test]
fn log_scaled_retransmission_letters() {
    let mut sim = Sim::default();
    handshake(&mut sim);
    sim.feed(&tcp4(true, PSH | ACK, C_ISN + 1, S_ISN + 1, 10), 3, true);
    for i in 0..10 {
        sim.feed(
            &tcp4(true, PSH | ACK, C_ISN + 1, S_ISN + 1, 10),
            4 + i,
            true,
        );
    }
    assert_eq!(sim.hist(), "ShADTT");
    for i in 0..100 {
        sim.feed(
            &tcp4(true, PSH | ACK, C_ISN + 1, S_ISN + 1, 10),
            20 + i,
            true,
        );
    }
    assert_eq!(sim.hist(), "ShADTTT");
    assert_eq!(sim.only().orig.rxmit_cnt, 110);
}

#[test]
fn zero_window_adds_w() {
    let mut sim = Sim::default();
    handshake(&mut sim);
    let mut f = tcp4(false, ACK, S_ISN + 1, C_ISN + 1, 0);
    // window field at 14 (eth) + 20 (ip) + 14
    f[48] = 0;
    f[49] = 0;
    sim.feed(&f, 3, true);
    // History letters come before the window check, as in Zeek.
    assert_eq!(sim.hist(), "ShAaw");
}

#[test]
fn udp_request_reply_is_sf_and_bytes_from_udp_length() {
    let mut sim = Sim::default();
    sim.feed(&udp4(true, 30), 0, true);
    sim.feed(&udp4(false, 90), 1, true);
    let c = sim.only();
    assert_eq!(sim.hist(), "Dd");
    assert_eq!(c.conn_state(), SF);
    assert_eq!((c.orig_bytes(), c.resp_bytes()), (30, 90));
    assert_eq!((c.orig_ip_bytes(), c.resp_ip_bytes()), (58, 118));
    assert_eq!(c.duration_ns(), MS);
}

#[test]
fn udp_request_only_is_s0() {
    let mut sim = Sim::default();
    sim.feed(&udp4(true, 30), 0, true);
    sim.feed(&udp4(true, 30), 5, true);
    assert_eq!(sim.hist(), "D");
    assert_eq!(state_of(&sim), S0);
    assert_eq!(sim.only().orig_bytes(), 60);
}

#[test]
fn udp_bad_checksums_are_cc_oth_and_not_counted() {
    let mut sim = Sim::default();
    sim.feed(&udp4(true, 30), 0, false);
    sim.feed(&udp4(false, 30), 1, false);
    let c = sim.only();
    assert_eq!(sim.hist(), "Cc");
    assert_eq!(c.conn_state(), OTH);
    assert_eq!((c.orig_pkts(), c.resp_pkts(), c.duration_ns()), (0, 0, 0));
}

#[test]
fn udp_from_likely_server_port_is_flipped_but_not_to_broadcast() {
    let mut sim = Sim::with_ports(&[(53, proto::UDP)]);
    sim.feed(&udp4(false, 30), 0, true);
    assert_eq!(sim.hist(), "^d");
    assert_eq!(sim.only().conn_state(), SHR);
    let mut sim = Sim::with_ports(&[(40190, proto::UDP)]);
    let f = eth4(ipv4(
        A4,
        [255; 4],
        proto::UDP,
        &[],
        udp_seg(40190, 7437, 10),
    ));
    sim.feed(&f, 0, true);
    assert_eq!(sim.hist(), "D");
    assert_eq!(&sim.only().resp_addr[12..], &[255; 4]);
}

#[test]
fn icmp_echo_is_one_oth_connection_without_history() {
    let mut sim = Sim::default();
    sim.feed(
        &eth4(ipv4(A4, B4, proto::ICMP, &[], icmp_seg(8, 0, 48))),
        0,
        true,
    );
    sim.feed(
        &eth4(ipv4(B4, A4, proto::ICMP, &[], icmp_seg(0, 0, 48))),
        2,
        true,
    );
    sim.feed(
        &eth4(ipv4(A4, B4, proto::ICMP, &[], icmp_seg(8, 0, 48))),
        1000,
        false,
    );
    let c = sim.only();
    assert_eq!(sim.hist(), "");
    assert_eq!(c.conn_state(), OTH);
    assert_eq!((c.orig_port, c.resp_port), (8, 0));
    assert_eq!((c.orig_bytes(), c.resp_bytes()), (48, 48));
    assert_eq!((c.orig_pkts(), c.resp_pkts()), (1, 1));
    assert_eq!(c.duration_ns(), 2 * MS);
    assert_eq!(c.proto_name(), "icmp");
}

#[test]
fn unknown_protocol_counts_packets_and_always_updates_last_time() {
    let mut sim = Sim::default();
    let f = eth4(ipv4(A4, B4, 132, &[], std::vec![0u8; 28]));
    sim.feed(&f, 0, true);
    sim.feed(&f, 7, false);
    let c = sim.only();
    assert_eq!((c.orig_port, c.resp_port), (0, 0));
    assert_eq!(c.conn_state(), OTH);
    assert_eq!(
        (c.orig_pkts(), c.orig_ip_bytes(), c.orig_bytes()),
        (2, 96, 0)
    );
    assert_eq!(c.duration_ns(), 7 * MS);
    assert_eq!(c.proto_name(), "unknown_transport");
}

#[test]
fn full_table_reports_the_packet() {
    let mut sim = Sim::default();
    sim.table.capacity = 1;
    sim.feed(&udp4(true, 1), 0, true);
    let f = eth4(ipv4(A4, [10, 0, 0, 3], proto::UDP, &[], udp_seg(1, 2, 3)));
    let ch = sim.feed(&f, 1, true);
    assert_eq!(ch, Changes::TABLE_FULL);
    let Some(Event::TableFull(e)) = sim.events.last() else {
        panic!("a TableFull record");
    };
    assert_eq!(e.meta.dport, 2);
    assert_eq!(e.changes, Changes::TABLE_FULL.0);
}

#[test]
fn aborted_half_open_endpoint_has_size_zero() {
    // SYN_SENT -> RESET with the peer INACTIVE and an ack beyond start+1: size 0.
    let mut c = new_conn(&meta_of(&tcp4(true, SYN, C_ISN, 0, 0)), 0, &NoServerPorts);
    update(&mut c, &meta_of(&tcp4(true, SYN, C_ISN, 0, 0)), 0, true);
    c.orig.ack_rel = 500;
    update(&mut c, &meta_of(&tcp4(true, RST, C_ISN + 1, 0, 0)), 1, true);
    assert_eq!(
        (c.orig.prev_state, c.orig.state),
        (state::SYN_SENT, state::RESET)
    );
    assert_eq!(c.orig_bytes(), 0);
}

#[test]
fn injected_rst_sequence_is_replaced_by_the_real_syn_ack() {
    let mut sim = Sim::default();
    sim.feed(&tcp4(true, SYN, C_ISN, 0, 0), 0, true);
    sim.feed(&tcp4(false, RST, 123_456_789, 0, 0), 1, true);
    sim.feed(&tcp4(false, SYN | ACK, S_ISN, C_ISN + 1, 0), 2, true);
    sim.feed(&tcp4(true, PSH | ACK, C_ISN + 1, S_ISN + 1, 175), 3, true);
    let c = sim.only();
    assert_eq!(c.resp.state, state::RESET);
    assert_eq!((c.orig_bytes(), c.resp_bytes()), (175, 0));
    assert_eq!(c.conn_state(), REJ);
}

#[test]
fn hole_in_the_middle_is_a_gap_once_acked() {
    let mut sim = Sim::default();
    handshake(&mut sim);
    sim.feed(&tcp4(true, PSH | ACK, C_ISN + 1, S_ISN + 1, 100), 3, true);
    // C_ISN+101..+201 is lost in the capture.
    sim.feed(&tcp4(true, PSH | ACK, C_ISN + 201, S_ISN + 1, 100), 4, true);
    sim.feed(&tcp4(false, ACK, S_ISN + 1, C_ISN + 301, 0), 5, true);
    let c = sim.only();
    assert_eq!(c.missed_bytes(), 100);
    assert_eq!(c.orig_bytes(), 300);
    assert_eq!(sim.hist(), "ShADaG");
}

#[test]
fn hole_filled_before_the_ack_is_no_gap() {
    let mut sim = Sim::default();
    handshake(&mut sim);
    sim.feed(&tcp4(true, PSH | ACK, C_ISN + 1, S_ISN + 1, 100), 3, true);
    sim.feed(&tcp4(true, PSH | ACK, C_ISN + 201, S_ISN + 1, 100), 4, true);
    sim.feed(&tcp4(true, PSH | ACK, C_ISN + 101, S_ISN + 1, 100), 5, true);
    sim.feed(&tcp4(false, ACK, S_ISN + 1, C_ISN + 301, 0), 6, true);
    assert_eq!(sim.only().missed_bytes(), 0);
    // The late segment did not advance the highest sequence: a retransmission for Zeek too.
    assert_eq!(sim.hist(), "ShADTa");
}

#[test]
fn acked_fin_is_not_a_gap() {
    let mut sim = Sim::default();
    handshake(&mut sim);
    sim.feed(&tcp4(true, FIN | ACK, C_ISN + 1, S_ISN + 1, 0), 3, true);
    sim.feed(&tcp4(false, ACK, S_ISN + 1, C_ISN + 2, 0), 4, true);
    assert_eq!(sim.only().missed_bytes(), 0);
    assert_eq!(sim.hist(), "ShAFa");
}

#[test]
fn half_close_then_full_close_timers() {
    let mut sim = Sim::default();
    handshake(&mut sim);
    sim.feed(&tcp4(true, FIN | ACK, C_ISN + 1, S_ISN + 1, 0), 3, true);
    let c = sim.only();
    assert!(c.has_flag(CONN_HALF_CLOSED) && !c.has_flag(CONN_CLOSE_ARMED));
    assert_eq!(c.conn_state(), S2);
    assert_eq!(reported_at(&sim, Changes::CLOSED), None);
    sim.feed(&tcp4(false, FIN | ACK, S_ISN + 1, C_ISN + 2, 0), 4, true);
    let c = sim.only();
    assert!(c.has_flag(CONN_CLOSE_ARMED));
    assert!(!c.has_flag(CONN_HALF_CLOSED) && !c.has_flag(CONN_ATTEMPT_ARMED));
    assert_eq!(reported_at(&sim, Changes::CLOSED), Some(4 * MS));
    assert_eq!(c.conn_state(), SF);
}

/// The time of the first event reporting `change`: the agent arms Zeek's timers from it.
fn reported_at(sim: &Sim, change: Changes) -> Option<u64> {
    sim.events
        .iter()
        .find(|e| e.changes().contains(change))
        .map(|e| e.ts_ns())
}

#[test]
fn syn_ack_with_data_and_both_sides_reset_after_fin() {
    // RST after a FIN exchange does not change the CLOSED states.
    let mut sim = Sim::default();
    handshake(&mut sim);
    sim.feed(&tcp4(true, FIN | ACK, C_ISN + 1, S_ISN + 1, 0), 3, true);
    sim.feed(&tcp4(false, FIN | ACK, S_ISN + 1, C_ISN + 2, 0), 4, true);
    sim.feed(&tcp4(true, RST, C_ISN + 2, 0, 0), 5, true);
    let c = sim.only();
    assert_eq!((c.orig.state, c.resp.state), (state::CLOSED, state::CLOSED));
    assert_eq!(sim.hist(), "ShAFfR");
    assert_eq!(c.conn_state(), SF);
    assert_eq!(c.duration_ns(), 4 * MS);
}

#[test]
fn fin_and_rst_together_is_i() {
    let mut sim = Sim::default();
    handshake(&mut sim);
    sim.feed(
        &tcp4(true, FIN | RST | ACK, C_ISN + 1, S_ISN + 1, 0),
        3,
        true,
    );
    assert_eq!(sim.hist(), "ShAI");
    assert_eq!(state_of(&sim), RSTO);
}

#[test]
fn icmp6_neighbor_solicit_and_advert_pair() {
    let mut sim = Sim::default();
    sim.feed(
        &eth6(ipv6(A6, B6, proto::ICMPV6, &[], icmp_seg(135, 0, 16))),
        0,
        true,
    );
    sim.feed(
        &eth6(ipv6(B6, A6, proto::ICMPV6, &[], icmp_seg(136, 0, 16))),
        1,
        true,
    );
    let c = sim.only();
    assert_eq!((c.orig_port, c.resp_port), (135, 136));
    assert_eq!((c.orig_pkts(), c.resp_pkts()), (1, 1));
    assert_eq!(c.proto_name(), "icmp");
}

#[test]
fn tcp_over_ipv6_works_like_ipv4() {
    let mut sim = Sim::default();
    let f = |from_a: bool, flags: u8, seq: u32, ack: u32, len: usize| {
        let (s, sp, d, dp) = if from_a {
            (A6, 40000, B6, 443)
        } else {
            (B6, 443, A6, 40000)
        };
        eth6(ipv6(
            s,
            d,
            proto::TCP,
            &[],
            tcp_seg(sp, dp, flags, seq, ack, &[], len),
        ))
    };
    sim.feed(&f(true, SYN, 1, 0, 0), 0, true);
    sim.feed(&f(false, SYN | ACK, 9, 2, 0), 1, true);
    sim.feed(&f(true, ACK, 2, 10, 0), 2, true);
    let c = sim.only();
    assert_eq!(sim.hist(), "ShA");
    assert_eq!(c.ip_version, 6);
    assert_eq!(c.orig_ip_bytes(), 120);
}

#[test]
fn table_that_hands_out_no_entry_skips_the_packet() {
    struct Busy;
    impl FlowTable for Busy {
        fn get_mut(&mut self, _key: &FlowKey) -> Option<&mut Conn> {
            None
        }
        fn insert(&mut self, _key: &FlowKey, _conn: &Conn) -> bool {
            true
        }
    }
    let mut emitted = 0;
    // A packet that takes the full driver (insert, then lookup); a first packet that
    // `fast_open` builds whole needs no lookup after its insert.
    let m = meta_of(&tcp4(true, ACK, 1, 1, 0));
    let ch = process_packet(&mut Busy, &m, 0, true, &NoServerPorts, |_| emitted += 1);
    assert_eq!(ch, Changes::SKIPPED);
    assert_eq!(emitted, 0);
}

#[test]
fn truncated_tcp_header_creates_the_connection_but_does_not_update_it() {
    // Zeek keys and orients the connection from the first 20 bytes, then the TCP analyzer
    // drops the packet: no letters, no counters, no duration.
    let opts = [
        2u8, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let f = eth4(ipv4(
        B4,
        A4,
        proto::TCP,
        &[],
        tcp_seg(443, 56960, SYN | ACK, 7, 8, &opts, 0),
    ));
    let mut sim = Sim::default();
    let ch = sim.feed(&f[..14 + 20 + 22], 0, true);
    assert!(ch.contains(Changes::NEW));
    let c = sim.only();
    assert_eq!(&c.orig_addr[12..], &B4);
    assert_eq!((c.orig_port, c.resp_port), (443, 56960));
    assert_eq!(sim.hist(), "");
    assert_eq!((c.orig_pkts(), c.orig_ip_bytes(), c.resp_pkts()), (0, 0, 0));
    assert_eq!(c.conn_state(), OTH);
    assert_eq!(sim.events.len(), 1);
    // Later packets of the connection are applied normally; a dropped one changes nothing.
    sim.feed(&f[..14 + 20 + 22], 5, true);
    assert_eq!((sim.only().orig_pkts(), sim.only().duration_ns()), (0, 0));
}

#[test]
fn dropped_tcp_header_still_ends_a_closed_connection_by_reuse() {
    // Zeek checks reuse when it looks the connection up, before the TCP analyzer drops the
    // packet: the old connection is logged, the new one stays empty.
    let mut sim = Sim::default();
    handshake(&mut sim);
    sim.feed(&tcp4(true, FIN | ACK, C_ISN + 1, S_ISN + 1, 0), 3, true);
    sim.feed(&tcp4(false, FIN | ACK, S_ISN + 1, C_ISN + 2, 0), 4, true);
    let opts = [2u8, 4, 5, 0xb4, 1, 3, 3, 7];
    let syn = eth4(ipv4(
        A4,
        B4,
        proto::TCP,
        &[],
        tcp_seg(40000, 80, SYN, C_ISN + 7, 0, &opts, 0),
    ));
    let ch = sim.feed(&syn[..14 + 20 + 22], 5, true);
    assert!(ch.contains(Changes::REUSED) && ch.contains(Changes::NEW));
    let c = sim.only();
    assert_eq!(sim.hist(), "");
    assert_eq!((c.orig_pkts(), c.resp_pkts(), c.duration_ns()), (0, 0, 0));
    assert_eq!(c.start_ns, 5 * MS);
}

/// Arms `value` in slot `s` of the only connection, as the agent's command would.
fn arm(sim: &mut Sim, s: usize, value: u64) {
    let conn = sim.table.map.values_mut().next().unwrap();
    let mut cmd = crate::threshold::ThresholdCommand {
        mask: crate::threshold::bit(s),
        check_orig: 1,
        ..Default::default()
    };
    cmd.values[s] = value;
    assert_eq!(crate::threshold::apply_command(conn, &cmd), 0);
}

#[test]
fn a_packet_that_only_crosses_a_threshold_raises_threshold_crossed() {
    use crate::threshold::{bit, slot};
    let mut sim = Sim::default();
    sim.feed(&udp4(true, 100), 0, true); // 128 IP bytes
    arm(&mut sim, slot::ORIG_BYTES, 200);
    sim.events.clear();
    let ch = sim.feed(&udp4(true, 100), 1, true);
    assert_eq!(ch.crossed(), bit(slot::ORIG_BYTES));
    assert_eq!(sim.events.len(), 1);
    let Event::Snapshot(ev) = &sim.events[0] else {
        panic!("a crossing carries the connection");
    };
    assert_eq!(ev.change.kind(), Some(EventKind::ThresholdCrossed));
    assert_eq!(ev.change.crossed(), bit(slot::ORIG_BYTES));
    assert_eq!(
        ev.conn.thr[slot::ORIG_BYTES],
        200,
        "the snapshot names the threshold"
    );
    assert_eq!(ev.conn.orig.ip_bytes, 256, "the counters at the crossing");
    assert!(ev.change.from_orig());
    assert_eq!(sim.only().thr_armed, 0);
    // Fired once: the next packet raises nothing.
    sim.events.clear();
    sim.feed(&udp4(true, 100), 2, true);
    assert!(sim.events.is_empty());
}

#[test]
fn a_state_change_event_also_reports_the_crossing_of_its_packet() {
    use crate::threshold::{bit, slot};
    let mut sim = Sim::default();
    handshake(&mut sim);
    arm(&mut sim, slot::TOTAL_PKTS, 4);
    sim.events.clear();
    sim.feed(&tcp4(true, FIN | ACK, C_ISN + 1, S_ISN + 1, 0), 3, true);
    assert_eq!(sim.events.len(), 1);
    assert_eq!(sim.events[0].kind(), Some(EventKind::StateChanged));
    assert_eq!(sim.events[0].crossed(), bit(slot::TOTAL_PKTS));
}

#[test]
fn a_bad_checksum_packet_is_not_counted_so_crosses_nothing() {
    use crate::threshold::slot;
    let mut sim = Sim::default();
    sim.feed(&udp4(true, 100), 0, true);
    arm(&mut sim, slot::ORIG_PKTS, 2);
    sim.events.clear();
    let ch = sim.feed(&udp4(true, 100), 1, false);
    assert_eq!(ch.crossed(), 0);
    assert!(sim.events.is_empty());
}

#[test]
fn a_duration_threshold_fires_on_the_first_packet_past_it() {
    use crate::threshold::{bit, slot};
    let mut sim = Sim::default();
    sim.feed(&udp4(true, 10), 0, true);
    arm(&mut sim, slot::DURATION, 100 * MS);
    assert_eq!(sim.feed(&udp4(false, 10), 100, true).crossed(), 0);
    assert_eq!(
        sim.feed(&udp4(false, 10), 5000, true).crossed(),
        bit(slot::DURATION)
    );
}

#[test]
fn an_entry_is_built_once_initialised_even_at_time_zero() {
    // As the eBPF program inserts a new connection's entry: all zero, its lock taken.
    let mut inserted = Conn::ZERO;
    inserted.lock = 1;
    assert!(!inserted.is_built());
    let tcp = new_conn(&meta_of(&tcp4(true, SYN, C_ISN, 0, 0)), 0, &NoServerPorts);
    assert!(tcp.is_built());
    let udp = new_conn(&meta_of(&udp4(true, 10)), 0, &NoServerPorts);
    assert!(udp.is_built());
}
