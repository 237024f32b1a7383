use super::*;

fn eth_ipv4() -> [u8; 34] {
    let mut f = [0u8; 34];
    f[12] = 0x08;
    f[14] = 0x45;
    f
}

#[test]
fn vxlan_carries_ethernet_after_8_bytes() {
    let mut p = [0u8; 8 + 34];
    p[0] = 0x08;
    p[8..].copy_from_slice(&eth_ipv4());
    let i = decap_udp(40000, VXLAN_PORT, &p).unwrap();
    assert_eq!(
        (i.offset, i.kind, i.tunnel),
        (8, InnerKind::Ethernet, TunnelType::Vxlan)
    );
    // The well-known port on the source side works too; other ports do not.
    assert_eq!(decap_udp(VXLAN_PORT, 40000, &p), Some(i));
    assert_eq!(decap_udp(40000, 40001, &p), None);
    assert_eq!(decap_vxlan(&p[..12]), None);
}

#[test]
fn geneve_skips_its_options() {
    let mut p = [0u8; 8 + 8 + 20];
    p[0] = 2; // two 4-byte words of options
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
    p[16] = 0x45;
    let i = decap_geneve(&p).unwrap();
    assert_eq!((i.offset, i.kind), (16, InnerKind::Ipv4));
    p[2..4].copy_from_slice(&0x1234u16.to_be_bytes());
    assert_eq!(decap_geneve(&p), None);
}

#[test]
fn vxlan_needs_its_i_flag() {
    let mut p = [0u8; 8 + 34];
    p[8..].copy_from_slice(&eth_ipv4());
    assert_eq!(decap_udp(40000, VXLAN_PORT, &p), None);
    assert!(!header_confirms(VXLAN_PORT, &p[..], p.len()));
    p[0] = 0x08;
    assert!(decap_udp(40000, VXLAN_PORT, &p).is_some());
    // The header alone confirms VXLAN, with nothing behind it.
    assert!(header_confirms(VXLAN_PORT, &p[..8], 8));
    assert!(!header_confirms(VXLAN_PORT, &p[..7], 7));
}

#[test]
fn tunnel_headers_confirm_whatever_they_carry() {
    // geneve-arp.pcap (Zeek's suite): protocol type 0x0806, an ARP request inside. No IP
    // packet to open, but Zeek's Geneve analyzer confirmed before it looked.
    let arp = [
        0x00, 0x00, 0x08, 0x06, 0x00, 0x00, 0x01, 0x00, // Geneve, VNI 1
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x0a,
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02,
    ];
    assert_eq!(decap_udp(12345, GENEVE_PORT, &arp), None);
    assert!(header_confirms(GENEVE_PORT, &arp[..], arp.len()));
    // geneve-truncated.pcapng: two words of options and then nothing.
    let bare = [
        0x02, 0x00, 0x65, 0x58, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x0a,
    ];
    assert_eq!(decap_geneve(&bare), None);
    assert!(header_confirms(GENEVE_PORT, &bare[..], bare.len()));
    // Options longer than the payload, or another version: a violation.
    assert!(!header_confirms(GENEVE_PORT, &bare[..12], 12));
    let mut v1 = bare;
    v1[0] |= 0x40;
    assert!(!header_confirms(GENEVE_PORT, &v1[..], v1.len()));
    // Only on the port the tunnel is registered for.
    assert!(!header_confirms(40000, &bare[..], bare.len()));
    // AYIYA: a forward whose identity (2^n bytes) and signature (4m bytes) fit.
    let mut ayiya = [0u8; 8 + 16 + 20];
    ayiya[0] = 0x41;
    ayiya[1] = 0x52;
    ayiya[2] = 0x11;
    assert!(header_confirms(AYIYA_PORT, &ayiya[..], 8 + 16 + 20));
    assert!(!header_confirms(AYIYA_PORT, &ayiya[..], 8 + 16 + 19));
    ayiya[2] = 0x10;
    assert!(
        !header_confirms(AYIYA_PORT, &ayiya[..], ayiya.len()),
        "not a forward"
    );
}

#[test]
fn confirm_header_marks_by_the_responder_port() {
    let bare = [
        0x02, 0x00, 0x65, 0x58, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x0a,
    ];
    let mut conn = Conn {
        orig_port: 50901,
        resp_port: GENEVE_PORT,
        ..Conn::default()
    };
    confirm_header(&mut conn, &bare[..], bare.len());
    assert_ne!(conn.flags & CONN_TUNNEL_CONFIRMED, 0);
    assert_eq!(header_tunnel(conn.resp_port), Some(TunnelType::Geneve));
    // The tunnel port on the originator's side is not where Zeek looks.
    let mut flipped = Conn {
        orig_port: GENEVE_PORT,
        resp_port: 50901,
        ..Conn::default()
    };
    confirm_header(&mut flipped, &bare[..], bare.len());
    assert_eq!(flipped.flags & CONN_TUNNEL_CONFIRMED, 0);
}

#[test]
fn gre_optional_fields_and_erspan() {
    // Key and sequence number: 12 bytes of header, then IPv4.
    let mut p = [0u8; 12 + 20];
    p[0] = 0x30;
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
    let i = decap_ip(PROTO_GRE, &p).unwrap();
    assert_eq!(
        (i.offset, i.kind, i.tunnel),
        (12, InnerKind::Ipv4, TunnelType::Gre)
    );
    // ERSPAN II (sequence number present): 8 more bytes, then Ethernet.
    p[2..4].copy_from_slice(&0x88beu16.to_be_bytes());
    p[0] = 0x10;
    let i = decap_gre(&p).unwrap();
    assert_eq!((i.offset, i.kind), (16, InnerKind::Ethernet));
    // ERSPAN I (no sequence number): the frame follows the 4-byte header.
    p[0] = 0;
    assert_eq!(decap_gre(&p).unwrap().offset, 4);
    // ERSPAN III with the platform subheader.
    let mut p3 = [0u8; 4 + 12 + 8 + 14];
    p3[2..4].copy_from_slice(&0x22ebu16.to_be_bytes());
    p3[4 + 11] = 1;
    assert_eq!(decap_gre(&p3).unwrap().offset, 24);
    // Routing present: not decapsulated.
    p[0] = 0x40;
    assert_eq!(decap_gre(&p), None);
}

#[test]
fn pptp_enhanced_gre_to_ppp_ipv4() {
    // Version 1, K and S set, protocol PPP; PPP ff 03 00 21.
    let mut p = [0u8; 12 + 4 + 20];
    p[0] = 0x30;
    p[1] = 0x01;
    p[2..4].copy_from_slice(&0x880bu16.to_be_bytes());
    p[12..16].copy_from_slice(&[0xff, 0x03, 0x00, 0x21]);
    let i = decap_gre(&p).unwrap();
    assert_eq!((i.offset, i.kind), (16, InnerKind::Ipv4));
    // A PPP control protocol (LCP) is not decapsulated.
    p[14..16].copy_from_slice(&[0xc0, 0x21]);
    assert_eq!(decap_gre(&p), None);
}

#[test]
fn gtp_only_g_pdus_and_extension_headers() {
    let mut p = [0u8; 16 + 40];
    p[0] = 0x34; // version 1, PT, E
    p[1] = 0xff;
    p[11] = 0x85; // an extension header follows
    p[12] = 1; // 4 bytes, its last byte: no more
    p[16] = 0x60;
    let i = decap_gtpv1(&p[..]).unwrap();
    assert_eq!((i.offset, i.kind), (16, InnerKind::Ipv6));
    p[1] = 0x01; // echo request
    assert_eq!(decap_gtpv1(&p[..]), None);
}

#[test]
fn teredo_needs_a_fitting_ipv6_packet() {
    let mut p = [0u8; 8 + 40 + 8];
    p[1] = 0; // origin indication 00 00
    p[8] = 0x60;
    p[8 + 5] = 8;
    let i = decap_udp(3797, TEREDO_PORT, &p).unwrap();
    assert_eq!((i.offset, i.kind), (8, InnerKind::Ipv6));
    // Detected on other ports only when the packet fills the datagram exactly.
    assert_eq!(decap_udp(3797, 32900, &p), None);
    assert_eq!(decap_udp_detect(3797, 32900, &p), Some(i));
    assert_eq!(decap_udp_detect(3797, 32900, &p[..p.len() - 1]), None);
    // A port registered for another encapsulation (not a GTP message) is not probed.
    assert_eq!(decap_udp_detect(3797, GTPV1_U_PORT, &p), None);
    p[8 + 5] = 9; // payload length beyond the datagram
    assert_eq!(decap_teredo(&p), None);
}

#[test]
fn ayiya_forward_only() {
    let mut p = [0u8; 8 + 16 + 20 + 20];
    p[0] = 0x41; // 16-byte identity
    p[1] = 0x50; // 20-byte signature
    p[2] = 0x01; // forward
    p[3] = PROTO_IPIP;
    p[44] = 0x45;
    let i = decap_ayiya(&p[..]).unwrap();
    assert_eq!((i.offset, i.kind), (44, InnerKind::Ipv4));
    p[2] = 0x00; // echo
    assert_eq!(decap_ayiya(&p[..]), None);
}

#[test]
fn the_fast_paths_prefix_test_passes_every_payload_the_detection_opens() {
    // Templates the detection opens off the tunnel ports: Teredo (bare IPv6, origin
    // indication, authentication header) and AYIYA (IPv4, IPv6 inside).
    let mut bare = [0u8; 48];
    bare[0] = 0x60;
    bare[5] = 8;
    let mut origin = [0u8; 8 + 48];
    origin[8..].copy_from_slice(&bare);
    let mut auth = [0u8; 13 + 8 + 48];
    auth[1] = 1;
    auth[13..].copy_from_slice(&origin);
    // A 1-byte identity, then the inner packet filling the datagram.
    let mut ayiya4 = [0u8; 8 + 1 + 20];
    ayiya4[2] = 0x01;
    ayiya4[3] = PROTO_IPIP;
    ayiya4[9] = 0x45;
    ayiya4[12] = 20;
    let mut ayiya6 = [0u8; 8 + 1 + 40];
    ayiya6[..4].copy_from_slice(&[0, 0, 0x01, PROTO_IPV6]);
    ayiya6[9] = 0x60;
    let templates: [&[u8]; 5] = [&bare, &origin, &auth, &ayiya4, &ayiya6];
    let mut opened = 0;
    for t in templates {
        assert!(decap_udp_detect(40000, 40001, t).is_some(), "{t:?}");
        // Every value of two of the first four bytes (the others as in the template).
        for (i, j) in [(0, 1), (2, 3), (0, 3)] {
            for v in 0..=u16::MAX {
                let mut p = t.to_vec();
                [p[i], p[j]] = v.to_be_bytes();
                if decap_udp_detect(40000, 40001, &p).is_some() {
                    opened += 1;
                    let first = [p[0], p[1], p[2], p[3]];
                    assert!(may_be_detected(first), "{first:?} opened");
                }
            }
        }
    }
    assert!(opened > 15, "{opened}");
    // A QUIC long header, an NTP client message, a DNS query: the fast path keeps them.
    for first in [[0xc3, 0, 0, 0], [0x23, 0, 6, 0x20], [0x12, 0x34, 1, 0]] {
        assert!(!may_be_detected(first), "{first:?}");
    }
}

/// The kernel's view of a payload: a window, then the bytes behind it.
struct Split<'a>(&'a [u8], &'a [u8]);

impl Bytes for Split<'_> {
    fn byte(&self, i: usize) -> Option<u8> {
        self.0.get(i).or_else(|| self.1.get(i)).copied()
    }
}

#[test]
fn a_window_and_the_bytes_behind_it_decide_as_the_whole_payload() {
    // AYIYA with a 256-byte identity: the inner packet starts past a 256-byte window.
    let mut p = [0u8; 8 + 256 + 20 + 28];
    p[0] = 0x81;
    p[1] = 0x50;
    p[2] = 0x01;
    p[3] = PROTO_IPIP;
    p[8 + 256 + 20] = 0x45;
    p[8 + 256 + 20 + 2..8 + 256 + 20 + 4].copy_from_slice(&28u16.to_be_bytes());
    let whole = decap_udp_detect(40000, 40001, &p[..]).unwrap();
    assert_eq!((whole.offset, whole.tunnel), (284, TunnelType::Ayiya));
    let split = Split(&p[..256], &p);
    assert_eq!(
        decap_udp_detect_len(40000, 40001, &split, p.len()),
        Some(whole)
    );
    // The length decides, not the window: one byte more and the packet no longer fills it.
    assert_eq!(
        decap_udp_detect_len(40000, 40001, &split, p.len() + 1),
        None
    );
}

#[test]
fn ip_in_ip_needs_the_matching_version() {
    let v4 = [0x45u8; 20];
    assert_eq!(decap_ip(PROTO_IPIP, &v4).unwrap().kind, InnerKind::Ipv4);
    assert_eq!(decap_ip(PROTO_IPV6, &v4), None);
    assert_eq!(decap_ip(17, &v4), None);
}

#[test]
fn changes_are_counted_then_x_once() {
    let mut c = Conn::ZERO;
    let a = hop_id(0, TunnelType::Vxlan, &[1; 16], &[2; 16], Some((1, 4789)));
    let b = hop_id(0, TunnelType::Vxlan, &[1; 16], &[3; 16], Some((1, 4789)));
    // An IP tunnel is the same in both directions.
    assert_eq!(
        hop_id(a, TunnelType::Gre, &[1; 16], &[2; 16], None),
        hop_id(a, TunnelType::Gre, &[2; 16], &[1; 16], None)
    );
    assert_ne!(a, b);
    assert_ne!(a, 0);
    assert_eq!(check_encap(&mut c, a, true), EncapChange::Same);
    assert_eq!(check_encap(&mut c, a, false), EncapChange::Same);
    let mut changed = 0;
    for i in 0..9 {
        let id = if i % 2 == 0 { b } else { 0 };
        if check_encap(&mut c, id, false) == EncapChange::Changed {
            changed += 1;
        }
    }
    assert_eq!(changed, MAX_CHANGES);
    assert_eq!(c.history_str(), b"X");
}
