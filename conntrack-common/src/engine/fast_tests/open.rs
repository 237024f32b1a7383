//! `fast_open`, the first packet of a connection built whole, against the full engine:
//! - for plain SYNs over IPv4 and IPv6 with arbitrary ports, sequence numbers, windows (zero
//!   included), extra flags and TCP options, the fast parse's view equals the full parse's, the
//!   window-scale option read at the fast parse's transport offset equals the full parse's, and
//!   `fast_open` on a zero entry leaves exactly what `init_conn`, `update` and
//!   `check_thresholds` leave, with the same changes;
//! - for datagrams between ordinary and likely server ports (DNS and NTP among them, and to
//!   the broadcast address), `fast_open` declines exactly those the full engine flips at
//!   creation or gives an analyzer, and leaves what the full engine leaves for the others.

use super::*;
use crate::packet::fast_parse::parse_view;
use crate::packet::tcp_window_scale;

/// TCP options: (kind, body) items, NOPs and an EOL, padded to a multiple of 4 (at most 40).
fn options() -> impl Strategy<Value = Vec<u8>> {
    let item = prop_oneof![
        Just(vec![1u8]),
        any::<u16>().prop_map(|mss| {
            let [h, l] = mss.to_be_bytes();
            vec![2, 4, h, l]
        }),
        (0u8..20).prop_map(|s| vec![3, 3, s]),
        Just(vec![4, 2]),
        (any::<u32>(), any::<u32>()).prop_map(|(a, b)| {
            let mut v = vec![8, 10];
            v.extend_from_slice(&a.to_be_bytes());
            v.extend_from_slice(&b.to_be_bytes());
            v
        }),
        Just(vec![0u8]),
        // A bad length: 0, or running past the header.
        (any::<u8>(), prop_oneof![Just(0u8), 30u8..=255]).prop_map(|(k, l)| vec![k | 2, l]),
    ];
    proptest::collection::vec(item, 0..6).prop_map(|items| {
        let mut o: Vec<u8> = items.concat();
        o.truncate(40);
        while !o.len().is_multiple_of(4) {
            o.push(0);
        }
        o
    })
}

/// A SYN frame: (frame, its window).
fn syn_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        (any::<bool>(), any::<[u8; 16]>(), any::<[u8; 16]>()),
        (any::<u16>(), any::<u16>(), any::<u32>(), any::<u32>()),
        (
            prop_oneof![Just(0u16), Just(1u16), any::<u16>()],
            // PSH, URG, ECE, CWR and the reserved bit may ride along.
            any::<u8>().prop_map(|x| SYN | (x & (PSH | 0x20 | 0x40 | 0x80))),
            options(),
        ),
    )
        .prop_map(|((v6, a, b), (sp, dp, seq, ack), (window, flags, opts))| {
            let mut seg = tcp_seg(sp, dp, flags, seq, ack, &opts, 0);
            seg[14..16].copy_from_slice(&window.to_be_bytes());
            if v6 {
                eth6(ipv6(a, b, 6, &[], seg))
            } else {
                let (s, d) = ([a[0], a[1], a[2], a[3]], [b[0], b[1], b[2], b[3]]);
                eth4(ipv4(s, d, 6, &[], seg))
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(3000)))]

    #[test]
    fn fast_open_leaves_what_the_full_engine_leaves(frame in syn_frame(), t in 1u64..1_000_000) {
        let now = t * MS;
        let meta = meta_of(&frame);
        let fm = FastMeta::opening(&meta, true);
        prop_assert!(fm.is_some(), "a plain SYN without payload opens: {meta:?}");
        let fm = fm.unwrap();
        // The eBPF glue's view: the same fields, and the option walk at its transport offset.
        let (view, l4) = parse_view(&frame[..], frame.len() as u32, 1).unwrap();
        prop_assert_eq!(view, fm);
        let doff = ((frame[l4 + 12] >> 4) as usize) * 4;
        prop_assert_eq!(tcp_window_scale(&frame[l4..], doff), meta.window_scale);

        let mut full = new_conn(&meta, now, &Ports::default());
        let ch_full = update(&mut full, &meta, now, true);
        let ch_full = ch_full | check_thresholds(&mut full, &meta, now, ch_full);
        let mut fast = Conn::ZERO;
        let ch_fast = fast_open(&mut fast, &fm, meta.window_scale, &Ports::default(), now);
        prop_assert_eq!(fast, full);
        prop_assert_eq!(ch_fast, Some(ch_full));
    }

    #[test]
    fn fast_open_of_a_datagram_leaves_what_the_full_engine_leaves(
        (v6, a, b, broadcast) in (any::<bool>(), any::<[u8; 16]>(), any::<[u8; 16]>(), proptest::bool::weighted(0.1)),
        (sp, dp) in (port(), port()),
        len in 0usize..80,
        udp_len in proptest::option::weighted(0.2, any::<u16>()),
        t in 1u64..1_000_000,
    ) {
        let now = t * MS;
        let mut frame = if v6 {
            eth6(ipv6(a, b, 17, &[], udp_seg(sp, dp, len)))
        } else {
            let dst = if broadcast { [255; 4] } else { [b[0], b[1], b[2], b[3]] };
            eth4(ipv4([a[0], a[1], a[2], a[3]], dst, 17, &[], udp_seg(sp, dp, len)))
        };
        if let Some(n) = udp_len {
            // A length field that disagrees with the IP lengths: Zeek counts the field.
            let l4 = if v6 { 14 + 40 } else { 14 + 20 };
            frame[l4 + 4..l4 + 6].copy_from_slice(&n.to_be_bytes());
        }
        let cfg = likely();
        let meta = meta_of(&frame);
        let fm = FastMeta::opening(&meta, true);
        // A length the UDP analyzer refuses: nothing to open fast.
        prop_assume!(fm.is_some());
        let fm = fm.unwrap();
        let (view, _) = parse_view(&frame[..], frame.len() as u32, 1).unwrap();
        prop_assert_eq!(view, fm);

        let mut full = new_conn(&meta, now, &cfg);
        let ch_full = update(&mut full, &meta, now, true);
        let ch_full = ch_full | check_thresholds(&mut full, &meta, now, ch_full);
        let mut fast = Conn::ZERO;
        let ch_fast = fast_open(&mut fast, &fm, meta.window_scale, &cfg, now);
        let declines = full.has_flag(CONN_FLIPPED)
            || full.has_flag(CONN_DNS_ANALYZER | CONN_NTP_ANALYZER);
        prop_assert_eq!(ch_fast.is_none(), declines, "{:?}", full);
        if let Some(ch) = ch_fast {
            prop_assert_eq!(fast, full);
            prop_assert_eq!(ch, ch_full);
        }
    }
}

/// Likely server ports as the agent's defaults have them for UDP (DNS and NTP attach
/// analyzers) and one more.
fn likely() -> Ports {
    Ports(vec![
        (53, 17),
        (123, 17),
        (137, 17),
        (5353, 17),
        (5355, 17),
        (443, 17),
    ])
}

/// A port: one of `likely`'s, a neighbour of one, or any.
fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        proptest::sample::select(vec![53u16, 123, 137, 5353, 5355, 443, 54, 124]),
        any::<u16>(),
    ]
}

#[test]
fn only_a_plain_syn_without_payload_or_a_datagram_opens() {
    let opening = |f: &[u8]| FastMeta::opening(&meta_of(f), true).is_some();
    assert!(opening(&tcp4(true, SYN, 1, 0, 0)));
    assert!(opening(&tcp4(true, SYN | PSH, 1, 0, 0)));
    for flags in [SYN | ACK, SYN | FIN, SYN | RST, ACK, 0] {
        assert!(!opening(&tcp4(true, flags, 1, 0, 0)), "flags {flags:#x}");
    }
    // TCP Fast Open: a SYN with data.
    assert!(!opening(&tcp4(true, SYN, 1, 0, 10)));
    assert!(opening(&udp4(true, 10)));
    assert!(!opening(&icmp4(true, 8, 10)));
    // A bad checksum only adds a letter: the full engine.
    assert!(FastMeta::opening(&meta_of(&tcp4(true, SYN, 1, 0, 0)), false).is_none());
}

#[test]
fn a_syn_opens_through_the_driver_as_the_full_engine_does() {
    let mut fast = Sim::with_ports(&[]);
    let mut full = Sim::with_ports(&[]);
    let syn = tcp4(true, SYN, 1000, 0, 0);
    let ch = fast.feed(&syn, 5, true);
    let meta = meta_of(&syn);
    let ch_full = process_packet_full(
        &mut full.table,
        &meta,
        5 * MS,
        true,
        &Ports::default(),
        |_| {},
    );
    assert_eq!(ch, ch_full);
    assert!(ch.contains(Changes::NEW));
    assert_eq!(fast.table.map, full.table.map);
    assert_eq!(fast.hist(), "S");
}

#[test]
fn a_datagram_to_an_analyzer_port_is_left_to_the_full_engine() {
    // DNS decides its orientation on the first message: the full engine's job.
    let mut sim = Sim::with_ports(&[(53, 17)]);
    let q = udp4_payload((A4, 40000), (B4, 53), &dns_msg(false, 30));
    let meta = meta_of(&q);
    let fm = FastMeta::opening(&meta, true).unwrap();
    let mut c = Conn::ZERO;
    assert_eq!(fast_open(&mut c, &fm, meta.window_scale, &sim.cfg, 0), None);
    let ch = sim.feed(&q, 1, true);
    assert!(ch.contains(Changes::NEW));
    assert!(sim.only().has_flag(CONN_DNS_ANALYZER));
    assert_eq!(sim.hist(), "D");
}
