//! `parse_fast` against the full parse: the same fast view whenever it gives one, and `None`
//! for every frame it leaves to the full parse.

use super::*;
use crate::packet::{PacketMeta, parse_ethernet};
use crate::testutil::*;
use proptest::prelude::*;
use std::vec::Vec;

/// What the full path makes of the whole frame: `parse_ethernet`, the GSO counts as the eBPF
/// transport stage sets them, then `FastMeta::from_meta`.
fn full(frame: &[u8], gso_segs: u32) -> Option<FastMeta> {
    let mut m = PacketMeta::default();
    parse_ethernet(frame, &mut m).ok()?;
    (m.pkts, m.ip_bytes) = gso_counts(m.ip_len, m.payload_len, gso_segs);
    FastMeta::from_meta(&m, true)
}

fn fast(frame: &[u8], gso_segs: u32) -> Option<FastMeta> {
    parse_fast(frame, frame.len() as u32, gso_segs)
}

fn tcp6(flags: u8, opts: &[u8], len: usize) -> Vec<u8> {
    eth6(ipv6(
        A6,
        B6,
        proto::TCP,
        &[],
        tcp_seg(40000, 443, flags, 7, 9, opts, len),
    ))
}

#[test]
fn ordinary_frames_get_the_full_parse_view() {
    let ts_opt = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    let frames: Vec<(Vec<u8>, u32)> = std::vec![
        (tcp4(true, ACK, 1000, 2000, 0), 1),
        (tcp4(false, ACK | PSH, 1000, 2000, 1448), 1),
        (tcp4(true, ACK, 1000, 2000, 1448 * 3), 3),
        (tcp6(ACK, &ts_opt, 100), 1),
        (tcp6(ACK, &[], 0), 1),
        (udp4(true, 0), 1),
        (udp4(false, 512), 1),
        (
            eth6(ipv6(A6, B6, proto::UDP, &[], udp_seg(5353, 5353, 40))),
            1
        ),
        (eth4(ipv4(A4, B4, proto::ICMP, &[], icmp_seg(8, 0, 56))), 1),
        (
            eth6(ipv6(A6, B6, proto::ICMPV6, &[], icmp_seg(128, 0, 56))),
            1
        ),
        (
            eth(
                &[0x8100],
                0x0800,
                &ipv4(A4, B4, proto::UDP, &[], udp_seg(1, 2, 3))
            ),
            1
        ),
        (
            eth(
                &[0x88a8, 0x8100],
                0x86dd,
                &ipv6(A6, B6, proto::TCP, &[], tcp_seg(1, 2, ACK, 3, 4, &[], 5))
            ),
            1
        ),
    ];
    for (f, segs) in &frames {
        let got = fast(f, *segs);
        assert!(got.is_some(), "refused an ordinary frame: {f:02x?}");
        assert_eq!(got, full(f, *segs), "frame {f:02x?}");
    }
}

#[test]
fn gso_super_packets_count_every_segment() {
    let f = tcp4(true, ACK, 1, 1, 1448 * 4);
    let m = fast(&f, 4).unwrap();
    assert_eq!(
        (m.pkts, m.ip_bytes, m.payload_len),
        (4, 1448 * 4 + 40 * 4, 1448 * 4)
    );
}

#[test]
fn frames_the_full_parse_must_see_are_refused() {
    let frag = {
        let mut f = udp4(true, 100);
        f[14 + 6] |= 0x20; // MF
        f
    };
    let cases: Vec<(&str, Vec<u8>)> = std::vec![
        ("SYN", tcp4(true, SYN, 1, 0, 0)),
        ("FIN", tcp4(true, FIN | ACK, 1, 1, 0)),
        ("RST", tcp4(true, RST | ACK, 1, 1, 0)),
        ("no ACK", tcp4(true, PSH, 1, 1, 10)),
        ("IPv4 fragment", frag),
        (
            "IPv4 options",
            eth4(ipv4(A4, B4, proto::UDP, &[1, 1, 1, 0], udp_seg(1, 2, 3)))
        ),
        (
            "IPv6 extension header",
            eth6(ipv6(
                A6,
                B6,
                proto::UDP,
                &[(60, std::vec![0; 8])],
                udp_seg(1, 2, 3)
            ))
        ),
        (
            "three VLAN tags",
            eth(
                &[0x8100, 0x8100, 0x8100],
                0x0800,
                &ipv4(A4, B4, proto::UDP, &[], udp_seg(1, 2, 3))
            )
        ),
        (
            "another transport",
            eth4(ipv4(A4, B4, 47, &[], std::vec![0; 8]))
        ),
        ("ARP", eth(&[], 0x0806, &[0; 28])),
    ];
    for (what, f) in &cases {
        assert_eq!(fast(f, 1), None, "{what}");
    }
}

#[test]
fn headers_out_of_reach_are_left_to_the_full_parse() {
    let f = tcp4(true, ACK, 1, 1, 100);
    // The linear part ends inside the TCP header: the full parse reads it from the packet.
    assert_eq!(parse_fast(&f[..14 + 20 + 10], f.len() as u32, 1), None);
    assert!(parse_fast(&f[..14 + 20 + 20], f.len() as u32, 1).is_some());
    // TCP options cut by the capture itself: the analyzer drops the packet.
    let ts_opt = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    let f = tcp6(ACK, &ts_opt, 0);
    assert_eq!(parse_fast(&f[..], (f.len() - 4) as u32, 1), None);
}

#[test]
fn a_zero_window_is_refused() {
    let mut f = tcp4(true, ACK, 1, 1, 0);
    f[14 + 20 + 14] = 0;
    f[14 + 20 + 15] = 0;
    assert_eq!(fast(&f, 1), None);
}

/// A frame to mutate: one of the ordinary kinds, with VLAN tags.
fn base_frame() -> impl Strategy<Value = Vec<u8>> {
    let flags = prop_oneof![Just(ACK), Just(ACK | PSH), any::<u8>()];
    (0usize..6, 0usize..3, 0usize..200, flags).prop_map(|(kind, tags, len, flags)| {
        let ip = match kind {
            0 => ipv4(
                A4,
                B4,
                proto::TCP,
                &[],
                tcp_seg(1, 2, flags, 3, 4, &[], len),
            ),
            1 => ipv4(A4, B4, proto::UDP, &[], udp_seg(1, 2, len)),
            2 => ipv4(A4, B4, proto::ICMP, &[], icmp_seg(0, 0, len)),
            3 => ipv6(
                A6,
                B6,
                proto::TCP,
                &[],
                tcp_seg(1, 2, flags, 3, 4, &[1, 1, 1, 1], len),
            ),
            4 => ipv6(A6, B6, proto::UDP, &[], udp_seg(1, 2, len)),
            _ => ipv6(A6, B6, proto::ICMPV6, &[], icmp_seg(129, 0, len)),
        };
        let ethertype = if kind < 3 { 0x0800 } else { 0x86dd };
        eth(&[0x8100, 0x88a8, 0x9100][..tags], ethertype, &ip)
    })
}

/// 0 half of the time (nothing cut, everything in reach), else up to `max`.
fn often_zero(max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), 0..max]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Whatever bytes the headers hold, however much of the frame is in reach and however
    /// long it claims to be: a fast view is the full parse's.
    #[test]
    fn a_fast_view_is_always_the_full_parse_view(
        frame in base_frame(),
        edits in proptest::collection::vec((0usize..80, any::<u8>()), 0..4),
        cut in often_zero(120),
        reach in often_zero(120),
        segs in 0u32..5,
    ) {
        let mut frame = frame;
        for (at, b) in edits {
            if let Some(x) = frame.get_mut(at) {
                *x = b;
            }
        }
        frame.truncate(frame.len().saturating_sub(cut));
        let reach = frame.len().saturating_sub(reach);
        if let Some(f) = parse_fast(&frame[..reach], frame.len() as u32, segs) {
            prop_assert_eq!(Some(f), full(&frame, segs));
        }
    }
}
