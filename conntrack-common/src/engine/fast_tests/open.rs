//! `fast_open`, the plain SYN that opens a connection, against the full engine: for SYNs over
//! IPv4 and IPv6 with arbitrary ports, sequence numbers, windows (zero included), extra flags
//! and TCP options, the fast parse's view equals the full parse's, the window-scale option read
//! at the fast parse's transport offset equals the full parse's, and `fast_open` on a zero
//! entry leaves exactly what `init_conn`, `update` and `check_thresholds` leave, with the
//! same changes.

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
        let ch_fast = fast_open(&mut fast, &fm, meta.window_scale, now);
        prop_assert_eq!(fast, full);
        prop_assert_eq!(ch_fast, ch_full);
    }
}

#[test]
fn only_a_plain_syn_without_payload_opens() {
    let opening = |f: &[u8]| FastMeta::opening(&meta_of(f), true).is_some();
    assert!(opening(&tcp4(true, SYN, 1, 0, 0)));
    assert!(opening(&tcp4(true, SYN | PSH, 1, 0, 0)));
    for flags in [SYN | ACK, SYN | FIN, SYN | RST, ACK, 0] {
        assert!(!opening(&tcp4(true, flags, 1, 0, 0)), "flags {flags:#x}");
    }
    // TCP Fast Open: a SYN with data.
    assert!(!opening(&tcp4(true, SYN, 1, 0, 10)));
    assert!(!opening(&udp4(true, 10)));
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
