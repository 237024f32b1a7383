//! Tests of the frame parser and the host IP view.

use super::*;
use crate::testutil::*;
use std::vec::Vec;

fn parse(frame: &[u8]) -> Result<PacketMeta, ParseError> {
    let mut m = PacketMeta::default();
    parse_ethernet(frame, &mut m).map(|_| m)
}

#[test]
fn ipv4_tcp_fields_come_from_the_headers() {
    let f = tcp4(true, SYN | ACK, 1000, 2000, 10);
    let m = parse(&f).unwrap();
    assert_eq!(m.ip_version, 4);
    assert_eq!(m.proto, proto::TCP);
    assert_eq!(&m.src[10..], &[0xff, 0xff, 10, 0, 0, 1]);
    assert_eq!((m.sport, m.dport), (40000, 80));
    assert_eq!((m.seq, m.ack, m.window), (1000, 2000, 65535));
    assert_eq!(m.tcp_flags, SYN | ACK);
    assert_eq!((m.ip_len, m.payload_len, m.l4_offset), (50, 10, 20));
    assert_eq!((m.pkts, m.ip_bytes), (1, 50));
    assert_eq!(m.window_scale, NO_WINDOW_SCALE);
    assert!(!m.is_fragment());
}

#[test]
fn ethernet_padding_does_not_count_as_payload() {
    let mut f = tcp4(true, ACK, 1, 1, 0);
    f.extend_from_slice(&[0u8; 6]);
    let m = parse(&f).unwrap();
    assert_eq!((m.ip_len, m.payload_len), (40, 0));
}

#[test]
fn udp_analyzer_sees_min_of_ip_length_and_capture() {
    let mut payload = [0u8; 48];
    payload[0] = 0x24; // NTP v4 server mode
    payload[2] = 0x81; // DNS QR
    let f = udp4_payload((A4, 123), (B4, 123), &payload);
    let m = parse(&f).unwrap();
    assert_eq!((m.app_b0, m.app_b2), (0x24, 0x81));
    assert!(m.meta_flags & META_UDP_DNS_HEADER != 0 && m.meta_flags & META_UDP_NTP_MSG != 0);
    // Snap length cut after 20 payload bytes: a DNS header, no NTP message.
    let cut = parse(&f[..f.len() - 28]).unwrap();
    assert_eq!(cut.payload_len, 48);
    assert_eq!(
        cut.meta_flags & (META_UDP_DNS_HEADER | META_UDP_NTP_MSG),
        META_UDP_DNS_HEADER
    );
    // Fewer than 12 bytes captured: nothing for the analyzers, bytes stay zero.
    let short = parse(&f[..f.len() - 37]).unwrap();
    assert_eq!((short.meta_flags, short.app_b0, short.app_b2), (0, 0, 0));
}

#[test]
fn vlan_and_qinq_tags_are_skipped() {
    let ip = ipv4(A4, B4, proto::UDP, &[], udp_seg(1, 2, 3));
    for tags in [
        &[0x8100u16][..],
        &[0x88a8, 0x8100],
        &[0x9100, 0x8100, 0x8100],
    ] {
        let m = parse(&eth(tags, 0x0800, &ip)).unwrap();
        assert_eq!((m.sport, m.dport, m.udp_len, m.payload_len), (1, 2, 11, 3));
    }
    let too_many = eth(&[0x8100; 5], 0x0800, &ip);
    assert_eq!(parse(&too_many), Err(ParseError::TooManyVlanTags));
}

#[test]
fn non_ip_and_bad_headers_are_errors() {
    assert_eq!(parse(&eth(&[], 0x0806, &[0u8; 28])), Err(ParseError::NotIp));
    let mut ip = ipv4(A4, B4, proto::UDP, &[], udp_seg(1, 2, 3));
    ip[0] = 0x44; // IHL 4
    assert_eq!(parse(&eth4(ip.clone())), Err(ParseError::BadHeaderLength));
    ip[0] = 0x65;
    assert_eq!(parse(&eth4(ip)), Err(ParseError::BadVersion));
}

#[test]
fn ipv4_options_move_the_transport_header() {
    let opts = [1u8, 1, 1, 0]; // NOPs + EOL
    let f = eth4(ipv4(
        A4,
        B4,
        proto::TCP,
        &opts,
        tcp_seg(5, 6, ACK, 7, 8, &[], 4),
    ));
    let m = parse(&f).unwrap();
    assert_eq!(
        (m.l4_offset, m.sport, m.dport, m.seq, m.payload_len),
        (24, 5, 6, 7, 4)
    );
}

/// A SYN-ACK whose 40-byte TCP header was cut after 22 bytes by the snap length.
fn syn_ack_with_cut_options() -> Vec<u8> {
    let opts = [
        2u8, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let f = eth4(ipv4(
        A4,
        B4,
        proto::TCP,
        &[],
        tcp_seg(443, 56960, SYN | ACK, 7, 8, &opts, 0),
    ));
    f[..14 + 20 + 22].to_vec()
}

#[test]
fn tcp_header_cut_by_the_capture_keys_but_is_dropped() {
    let m = parse(&syn_ack_with_cut_options()).unwrap();
    assert_eq!(m.meta_flags, META_L4_TRUNCATED);
    assert!(m.l4_dropped());
    assert_eq!((m.sport, m.dport, m.tcp_flags), (443, 56960, SYN | ACK));
    assert_eq!((m.ip_len, m.ip_bytes, m.payload_len), (60, 60, 0));
    // payload_len is from the headers: 60 - 20 - 40.
}

#[test]
fn tcp_data_offset_below_20_or_past_the_ip_length_keys_but_is_dropped() {
    let mut ip = ipv4(A4, B4, proto::TCP, &[], tcp_seg(5, 6, ACK, 7, 8, &[], 4));
    ip[20 + 12] = 4 << 4; // 16 bytes
    let m = parse(&eth4(ip.clone())).unwrap();
    assert_eq!(
        (m.meta_flags, m.sport, m.payload_len),
        (META_L4_BAD_HEADER, 5, 0)
    );
    ip[20 + 12] = 6 << 4; // 24 bytes, but the IP header says 24 transport bytes: ok
    let m = parse(&eth4(ip.clone())).unwrap();
    assert_eq!((m.meta_flags, m.payload_len), (0, 0));
    ip[20 + 12] = 7 << 4; // 28 bytes > 24
    let m = parse(&eth4(ip)).unwrap();
    assert!(m.l4_dropped());
}

#[test]
fn tcp_shorter_than_20_bytes_is_no_connection() {
    let ip = ipv4(A4, B4, proto::TCP, &[], tcp_seg(5, 6, ACK, 7, 8, &[], 0));
    let mut short_ip = ip[..20 + 19].to_vec();
    short_ip[2..4].copy_from_slice(&39u16.to_be_bytes());
    assert_eq!(parse(&eth4(short_ip)), Err(ParseError::BadLength));
    assert_eq!(
        parse(&eth4(ip[..20 + 19].to_vec())),
        Err(ParseError::Truncated)
    );
}

#[test]
fn window_scale_option_is_read_from_syn_and_clamped() {
    let opts = [2u8, 4, 5, 0xb4, 1, 3, 3, 7];
    let f = eth4(ipv4(
        A4,
        B4,
        proto::TCP,
        &[],
        tcp_seg(5, 6, SYN, 7, 0, &opts, 0),
    ));
    assert_eq!(parse(&f).unwrap().window_scale, 7);
    let opts = [1u8, 3, 3, 20];
    let f = eth4(ipv4(
        A4,
        B4,
        proto::TCP,
        &[],
        tcp_seg(5, 6, SYN, 7, 0, &opts, 0),
    ));
    assert_eq!(parse(&f).unwrap().window_scale, 14);
    let f = eth4(ipv4(
        A4,
        B4,
        proto::TCP,
        &[],
        tcp_seg(5, 6, ACK, 7, 0, &opts, 0),
    ));
    assert_eq!(parse(&f).unwrap().window_scale, NO_WINDOW_SCALE);
}

#[test]
fn ipv4_fragments_are_flagged() {
    let mut ip = ipv4(A4, B4, proto::UDP, &[], udp_seg(1, 2, 30));
    ip[6] = 0x20; // MF, offset 0
    let m = parse(&eth4(ip.clone())).unwrap();
    assert_eq!(m.frag_flags, FRAG_IS_FRAGMENT | FRAG_MORE);
    assert_eq!((m.sport, m.frag_offset, m.frag_id), (1, 0, 0x1234));
    ip[6] = 0x00;
    ip[7] = 0x03; // offset 24 bytes, last fragment
    let m = parse(&eth4(ip.clone())).unwrap();
    assert_eq!(m.frag_flags, FRAG_IS_FRAGMENT);
    assert_eq!((m.sport, m.dport, m.frag_offset), (0, 0, 24));
    // A first fragment too short for its transport header is still passed on.
    let mut tiny = ip[..24].to_vec();
    tiny[2..4].copy_from_slice(&24u16.to_be_bytes());
    tiny[6] = 0x20;
    tiny[7] = 0;
    let m = parse(&eth4(tiny)).unwrap();
    assert!(m.is_fragment());
    assert_eq!(m.sport, 0);
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let hop = (IPV6_HOPOPTS, std::vec![0u8, 0, 1, 4, 0, 0, 0, 0]);
    let dst = (IPV6_DSTOPTS, std::vec![0u8, 0, 1, 4, 0, 0, 0, 0]);
    let ah = (IPV6_AH, std::vec![0u8, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
    let atomic_frag = (IPV6_FRAGMENT, std::vec![0u8, 0, 0, 0, 0, 0, 0, 9]);
    let ip = ipv6(
        A6,
        B6,
        proto::TCP,
        &[hop, dst, ah, atomic_frag],
        tcp_seg(1, 2, SYN, 3, 0, &[], 0),
    );
    let m = parse(&eth6(ip.clone())).unwrap();
    assert_eq!((m.proto, m.sport, m.dport, m.seq), (proto::TCP, 1, 2, 3));
    assert_eq!(m.l4_offset, 40 + 8 + 8 + 12 + 8);
    assert_eq!(m.ip_len, ip.len() as u32);
    assert!(!m.is_fragment());
    // The host's view ends after the (atomic) fragment header, here where the engine's
    // transport starts too.
    let v = ip_view(&ip).unwrap();
    assert_eq!((v.proto, v.l4_off, v.ip_len), (proto::TCP, 76, ip.len()));
    assert!(v.is_fragment);
    let f = Ipv6Fragment {
        header_off: 68,
        named_at: 56,
        offset: 0,
        more: false,
        id: 9,
    };
    assert_eq!(v.ipv6_fragment, Some(f));
    assert_eq!(ip[f.named_at], IPV6_FRAGMENT);
}

#[test]
fn host_view_stops_after_a_fragment_header() {
    // A later fragment whose fragment header names a destination-options header: the bytes
    // after the fragment header are data, and the engine's walk reads them as a header.
    let frag = (IPV6_FRAGMENT, std::vec![0u8, 0, 0, 0x11, 0, 0, 0, 7]);
    let dst = (IPV6_DSTOPTS, std::vec![0u8, 0xff, 1, 4, 0, 0, 0, 0]);
    let ip = ipv6(A6, B6, proto::UDP, &[frag, dst], udp_seg(1, 2, 8));
    let mut m = PacketMeta::default();
    assert_eq!(parse_ip(&ip, &mut m), Err(ParseError::BadLength));
    let v = ip_view(&ip).unwrap();
    assert_eq!((v.proto, v.l4_off, v.l4_len), (IPV6_DSTOPTS, 48, 24));
    let f = v.ipv6_fragment.unwrap();
    assert_eq!(
        (f.header_off, f.named_at, f.offset, f.more, f.id),
        (40, 6, 16, true, 7)
    );
    // Without a fragment header the view walks the chain the engine walks.
    let plain = ipv6(A6, B6, proto::UDP, &[dst_opts()], udp_seg(1, 2, 8));
    let v = ip_view(&plain).unwrap();
    assert_eq!((v.proto, v.l4_off, v.is_fragment), (proto::UDP, 48, false));
    assert_eq!(v.ipv6_fragment, None);
    // Truncated, overlong or too many extension headers: no view, like the engine.
    assert_eq!(ip_view(&plain[..45]), None);
    let mut overlong = plain.clone();
    overlong[41] = 9;
    assert_eq!(ip_view(&overlong), None);
    let nine: Vec<_> = (0..9).map(|_| dst_opts()).collect();
    assert_eq!(
        ip_view(&ipv6(A6, B6, proto::UDP, &nine, udp_seg(1, 2, 8))),
        None
    );
}

fn dst_opts() -> (u8, Vec<u8>) {
    (IPV6_DSTOPTS, std::vec![0u8, 0, 1, 4, 0, 0, 0, 0])
}

#[test]
fn host_view_of_ipv4_keeps_what_parse_ip_rejects() {
    let ip = ipv4(A4, B4, proto::UDP, &[1, 1, 1, 0], udp_seg(1, 2, 7));
    let v = ip_view(&ip).unwrap();
    assert_eq!(
        (v.version, v.proto, v.l4_off, v.l4_len, v.ip_len),
        (4, 17, 24, 15, 39)
    );
    assert_eq!(&v.src[10..], &[0xff, 0xff, 10, 0, 0, 1]);
    assert!(!v.is_fragment);
    // Total length 0 (segmentation offload) and options cut by the capture: the replay
    // path decides what to do with these, so they are described.
    let mut tso = ip.clone();
    tso[2..4].fill(0);
    let v = ip_view(&tso).unwrap();
    assert_eq!((v.ip_len, v.l4_len), (0, 0));
    assert!(ip_view(&ip[..22]).is_some());
    assert_eq!(ip_view(&ip[..19]), None);
    let mut ihl4 = ip.clone();
    ihl4[0] = 0x44;
    assert_eq!(ip_view(&ihl4), None);
    let mut later = ip;
    later[6..8].copy_from_slice(&3u16.to_be_bytes());
    assert!(ip_view(&later).unwrap().is_fragment);
}

#[test]
fn ipv6_later_fragment_has_no_ports() {
    let frag = (IPV6_FRAGMENT, std::vec![0u8, 0, 0, 0x10, 0, 0, 0, 9]);
    let ip = ipv6(A6, B6, proto::UDP, &[frag], udp_seg(1, 2, 8));
    let m = parse(&eth6(ip)).unwrap();
    assert_eq!(m.frag_flags, FRAG_IS_FRAGMENT);
    assert_eq!((m.frag_offset, m.frag_id, m.sport), (16, 9, 0));
}

#[test]
fn ipv6_routing_type0_final_destination_is_used() {
    let final_dst = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
    let mut rt = std::vec![0u8, 2, 0, 1, 0, 0, 0, 0];
    rt.extend_from_slice(&final_dst);
    let ip = ipv6(A6, B6, proto::UDP, &[(IPV6_ROUTING, rt)], udp_seg(1, 2, 0));
    let m = parse(&eth6(ip)).unwrap();
    assert_eq!(m.dst, final_dst);
    assert_eq!(m.meta_flags, META_RT0_FINAL_DST);
    assert_eq!(m.l4_offset, 64);
}

#[test]
fn icmp_type_and_code_are_the_ports() {
    let f = eth4(ipv4(A4, B4, proto::ICMP, &[], icmp_seg(3, 3, 28)));
    let m = parse(&f).unwrap();
    assert_eq!((m.sport, m.dport, m.payload_len), (3, 3, 28));
    let f = eth6(ipv6(A6, B6, proto::ICMPV6, &[], icmp_seg(128, 0, 32)));
    let m = parse(&f).unwrap();
    assert_eq!(
        (m.proto, m.sport, m.dport, m.payload_len),
        (proto::ICMPV6, 128, 0, 32)
    );
}

#[test]
fn other_protocols_have_port_zero() {
    let f = eth4(ipv4(A4, B4, 132, &[], std::vec![1u8, 2, 3, 4, 0, 0, 0, 0]));
    let m = parse(&f).unwrap();
    assert_eq!((m.proto, m.sport, m.dport, m.payload_len), (132, 0, 0, 8));
}

#[test]
fn truncated_or_garbage_input_never_panics() {
    let frames: Vec<Vec<u8>> = std::vec![
        tcp4(true, SYN, 1, 0, 0),
        eth(
            &[0x88a8, 0x8100],
            0x0800,
            &ipv4(
                A4,
                B4,
                proto::TCP,
                &[1, 1, 1, 0],
                tcp_seg(1, 2, SYN, 3, 0, &[2, 4, 5, 0xb4, 1, 3, 3, 7], 5)
            )
        ),
        eth6(ipv6(
            A6,
            B6,
            proto::UDP,
            &[
                (IPV6_HOPOPTS, std::vec![0u8; 8]),
                (
                    IPV6_ROUTING,
                    std::vec![
                        0u8, 2, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                        15, 16
                    ]
                )
            ],
            udp_seg(1, 2, 3)
        )),
        eth6(ipv6(A6, B6, proto::ICMPV6, &[], icmp_seg(1, 0, 4))),
    ];
    let mut seed: u32 = 12345;
    for f in &frames {
        for cut in 0..=f.len() {
            let _ = parse(&f[..cut]);
            let mut g = f[..cut].to_vec();
            for _ in 0..4 {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if !g.is_empty() {
                    let i = (seed as usize >> 8) % g.len();
                    g[i] = (seed >> 24) as u8;
                }
            }
            let _ = parse(&g);
            let mut m = PacketMeta::default();
            let _ = parse_ip(&g, &mut m);
            if let Some(v) = ip_view(&g) {
                let _ = crate::checksum::transport_checksum_ok(&g, &v);
            }
            let _ = crate::checksum::ipv4_header_checksum_ok(&g);
        }
    }
    let mut m = PacketMeta::default();
    assert_eq!(parse_ethernet(&[], &mut m), Err(ParseError::Truncated));
    assert_eq!(parse_ip(&[0x45, 0], &mut m), Err(ParseError::Truncated));
}

#[test]
fn parse_ip_viewed_is_parse_ip() {
    let syn = tcp_seg(1, 2, SYN, 3, 0, &[2, 4, 5, 0xb4, 1, 3, 3, 7], 5);
    let udp_opts = ipv4(A4, B4, proto::UDP, &[1, 1, 1, 0], udp_seg(1, 2, 7));
    let mut frag = udp_opts.clone();
    frag[6] = 0x20; // MF
    let mut tso = udp_opts.clone();
    tso[2..4].fill(0); // total length below the header: parse_ip refuses it
    let packets: Vec<Vec<u8>> = std::vec![
        ipv4(A4, B4, proto::TCP, &[], syn.clone()),
        ipv4(A4, B4, proto::TCP, &[], tcp_seg(5, 6, ACK, 9, 8, &[], 0)),
        udp_opts.clone(),
        udp_opts[..22].to_vec(), // options cut by the capture
        udp_opts[..26].to_vec(), // UDP header cut
        ipv4(A4, B4, proto::ICMP, &[], icmp_seg(8, 0, 4)),
        ipv4(A4, B4, 47, &[], std::vec![0u8; 12]),
        frag,
        tso,
        ipv6(A6, B6, proto::TCP, &[], syn),
    ];
    for ip in &packets {
        for cut in [ip.len(), ip.len().saturating_sub(3), 21] {
            let ip = &ip[..cut.min(ip.len())];
            let Some(v) = ip_view(ip) else { continue };
            let (mut a, mut b) = (PacketMeta::default(), PacketMeta::default());
            // Garbage in both, as a reused meta would hold: both start from scratch.
            b.sport = 7;
            b.frag_offset = 9;
            let ra = parse_ip(ip, &mut a);
            let rb = parse_ip_viewed(ip, &v, &mut b);
            assert_eq!(ra, rb, "{ip:?}");
            if ra.is_ok() {
                assert_eq!(a, b, "{ip:?}");
            }
        }
    }
}
