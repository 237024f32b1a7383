//! The gap rule for payloads the capture cut (a snap length shorter than the packets): Zeek's
//! TCP endpoint hands a segment to the reassembler only when its payload was captured whole,
//! so every cut byte the peer acknowledges is a content gap, in both directions. The shape of
//! Zeek's `core.tcp.rxmit-history` trace: handshake, request, a window of responses, duplicate
//! ACKs, retransmissions, an idle minute, RST.

use crate::conn::ConnStateCode;
use crate::testutil::*;

const C_ISN: u32 = 1000;
const S_ISN: u32 = 5000;
const REQUEST: u32 = 474;
const SEGMENT: u32 = 1446;

/// Headers only: Ethernet, IPv4 and TCP without options (a 54-byte snap length).
const SNAP: usize = 14 + 20 + 20;

/// The conversation; each frame cut to [`SNAP`] bytes when `cut`.
fn conversation(cut: bool) -> Sim {
    let snap = |mut f: std::vec::Vec<u8>| {
        if cut {
            f.truncate(SNAP);
        }
        f
    };
    let (c1, s1) = (C_ISN + 1, S_ISN + 1);
    let mut sim = Sim::default();
    sim.feed(&tcp4(true, SYN, C_ISN, 0, 0), 0, true);
    sim.feed(&tcp4(false, SYN | ACK, S_ISN, c1, 0), 1, true);
    sim.feed(&tcp4(true, ACK, c1, s1, 0), 185, true);
    sim.feed(
        &snap(tcp4(true, ACK | PSH, c1, s1, REQUEST as usize)),
        201,
        true,
    );
    let c2 = c1 + REQUEST;
    sim.feed(&tcp4(false, ACK, s1, c2, 0), 202, true);
    for i in 0..3 {
        let seq = s1 + i * SEGMENT;
        sim.feed(
            &snap(tcp4(false, ACK, seq, c2, SEGMENT as usize)),
            203,
            true,
        );
    }
    // The client acknowledges the first segment, then repeats that ACK (the second was lost
    // on its way); the server retransmits it.
    let s2 = s1 + SEGMENT;
    for t in [310, 340, 370] {
        sim.feed(&tcp4(true, ACK, c2, s2, 0), t, true);
    }
    sim.feed(&snap(tcp4(false, ACK, s2, c2, SEGMENT as usize)), 371, true);
    let s4 = s1 + 3 * SEGMENT;
    sim.feed(&tcp4(true, ACK, c2, s4, 0), 420, true);
    sim.feed(&tcp4(true, ACK | RST, c2, s4, 0), 60_990, true);
    sim
}

#[test]
fn cut_payloads_acknowledged_are_gaps_in_both_directions() {
    let sim = conversation(true);
    let c = sim.only();
    assert_eq!(sim.hist(), "ShADaGdgtR");
    // Every byte of both directions was acknowledged and never captured.
    assert_eq!(c.missed_bytes(), (REQUEST + 3 * SEGMENT) as u64);
    assert_eq!(
        (c.orig_bytes(), c.resp_bytes()),
        (REQUEST as u64, 3 * SEGMENT as u64)
    );
    assert_eq!(c.conn_state(), ConnStateCode::RSTO);
}

#[test]
fn the_same_conversation_captured_whole_has_no_gap() {
    let sim = conversation(false);
    assert_eq!(sim.hist(), "ShADadtR");
    assert_eq!(sim.only().missed_bytes(), 0);
}

#[test]
fn the_parse_flags_cut_tcp_payloads_only() {
    let whole = tcp4(true, ACK, C_ISN, S_ISN, 100);
    assert!(!meta_of(&whole).payload_cut());
    let mut cut = whole.clone();
    cut.truncate(whole.len() - 1);
    assert!(meta_of(&cut).payload_cut());
    // No payload: nothing to cut (the header is all there is).
    let ack = tcp4(true, ACK, C_ISN, S_ISN, 0);
    assert!(!meta_of(&ack).payload_cut());
    // UDP's analyzers see the captured bytes (`note_udp_delivered`): not this flag.
    let mut udp = udp4(true, 100);
    udp.truncate(udp.len() - 50);
    assert!(!meta_of(&udp).payload_cut());
    // The fast path leaves a cut segment to the full engine.
    assert!(crate::engine::FastMeta::from_meta(&meta_of(&cut), true).is_none());
    assert!(crate::engine::FastMeta::from_meta(&meta_of(&whole), true).is_some());
}
