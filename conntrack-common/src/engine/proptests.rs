//! Property tests over the whole per-packet path (`parse_ethernet` -> `FlowKey::from_meta` ->
//! `process_packet`): arbitrary bytes, arbitrary `PacketMeta`s and sequences of mutated valid
//! packets never panic, always finish, and leave every connection consistent:
//! - packet and IP-byte counters only grow (until a TCP reuse restarts the connection);
//! - orig_pkts + resp_pkts (and the IP bytes) equal the packets the engine accepted for that
//!   connection (valid checksum or a protocol without one, transport header not dropped);
//! - history letters come from Zeek's alphabet, once-per-direction letters appear at most once
//!   per physical endpoint for TCP (a `^` swaps the case meaning) and once per role for UDP,
//!   logarithmic ones at most 10 times;
//! - conn_state agrees with the protocol (UDP SF needs packets both ways, ICMP/other are OTH).

use super::*;
use crate::conn::ConnStateCode;
use crate::history::HISTORY_CAP;
use crate::packet::parse_ethernet;
use crate::testutil::*;
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;
use std::vec;
use std::vec::Vec;

/// A packet of a generated conversation, before mutation.
#[derive(Clone, Debug)]
struct Pkt {
    from_a: bool,
    /// 0 TCP, 1 UDP, 2 ICMP echo, 3 ICMP unreachable, 4 SCTP (other).
    kind: u8,
    v6: bool,
    port_pick: u8,
    flags: u8,
    seq_off: u32,
    ack_off: u32,
    len: usize,
    zero_window: bool,
    wscale: Option<u8>,
    checksum_ok: bool,
    dt_us: u64,
    /// (offset, xor) of a corrupted byte, taken modulo the frame length.
    corrupt: Option<(usize, u8)>,
    /// Keep only this many bytes (modulo the frame length + 1).
    cut: Option<usize>,
    gso: u32,
    /// Number of 802.1Q tags (0..=2) and IPv4 options / IPv6 extension headers (0..=2).
    vlans: u8,
    ext: u8,
}

fn pkt() -> impl Strategy<Value = Pkt> {
    let flags = prop_oneof![
        Just(SYN),
        Just(SYN | ACK),
        Just(ACK),
        Just(PSH | ACK),
        Just(FIN | ACK),
        Just(RST),
        Just(RST | ACK),
        Just(FIN | RST),
        Just(SYN | FIN),
        Just(0u8),
        any::<u8>(),
    ];
    (
        (any::<bool>(), 0u8..5, any::<bool>(), 0u8..3, flags),
        (0u32..3000, 0u32..3000, 0usize..300, any::<bool>()),
        (
            proptest::option::of(0u8..20),
            proptest::bool::weighted(0.9),
            0u64..2_000_000,
        ),
        (
            proptest::option::weighted(0.1, (any::<usize>(), 1u8..=255)),
            proptest::option::weighted(0.05, any::<usize>()),
            prop_oneof![9 => Just(1u32), 1 => 1u32..5],
            0u8..3,
            prop_oneof![3 => Just(0u8), 1 => 1u8..3],
        ),
    )
        .prop_map(
            |(
                (from_a, kind, v6, port_pick, flags),
                (seq_off, ack_off, len, zero_window),
                (wscale, checksum_ok, dt_us),
                (corrupt, cut, gso, vlans, ext),
            )| Pkt {
                from_a,
                kind,
                v6,
                port_pick,
                flags,
                seq_off,
                ack_off,
                len,
                zero_window,
                wscale,
                checksum_ok,
                dt_us,
                corrupt,
                cut,
                gso,
                vlans,
                ext,
            },
        )
}

const ISN_A: u32 = 0xffff_f000; // wraps within the generated offsets
const ISN_B: u32 = 7_000;

fn frame(p: &Pkt) -> Vec<u8> {
    let client_port = 40000 + p.port_pick as u16;
    let server_port = [80u16, 443, 53][p.port_pick as usize % 3];
    let (sp, dp) = if p.from_a {
        (client_port, server_port)
    } else {
        (server_port, client_port)
    };
    let (seq_base, ack_base) = if p.from_a {
        (ISN_A, ISN_B)
    } else {
        (ISN_B, ISN_A)
    };
    let (seg, proto_no) = match p.kind {
        0 => {
            let mut opts = Vec::new();
            if let Some(s) = p.wscale {
                opts.extend_from_slice(&[1, 3, 3, s]);
            }
            let mut t = tcp_seg(
                sp,
                dp,
                p.flags,
                seq_base.wrapping_add(p.seq_off),
                ack_base.wrapping_add(p.ack_off),
                &opts,
                p.len,
            );
            if p.zero_window {
                t[14] = 0;
                t[15] = 0;
            }
            (t, proto::TCP)
        }
        1 => (udp_seg(sp, dp, p.len), proto::UDP),
        2 | 3 => {
            let ty = match (p.kind, p.v6, p.from_a) {
                (2, false, true) => 8,
                (2, false, false) => 0,
                (2, true, true) => 128,
                (2, true, false) => 129,
                (_, false, _) => 3,
                (_, true, _) => 1,
            };
            let icmp = if p.v6 { proto::ICMPV6 } else { proto::ICMP };
            (icmp_seg(ty, 3, p.len), icmp)
        }
        _ => (std::vec![0u8; 12 + p.len % 64], 132),
    };
    let tags = [0x8100u16, 0x88a8][..p.vlans as usize].to_vec();
    let mut f = if p.v6 {
        let (s, d) = if p.from_a { (A6, B6) } else { (B6, A6) };
        // Hop-by-hop options (PadN) and an atomic fragment header.
        let ext: Vec<(u8, Vec<u8>)> =
            [(0u8, vec![0u8, 0, 1, 4, 0, 0, 0, 0]), (44, vec![0u8; 8])][..p.ext as usize].to_vec();
        eth(&tags, 0x86dd, &ipv6(s, d, proto_no, &ext, seg))
    } else {
        let (s, d) = if p.from_a { (A4, B4) } else { (B4, A4) };
        let opts = [1u8, 1, 1, 0, 1, 1, 1, 0];
        eth(
            &tags,
            0x0800,
            &ipv4(s, d, proto_no, &opts[..4 * p.ext as usize], seg),
        )
    };
    if let Some((off, x)) = p.corrupt {
        let i = off % f.len();
        f[i] ^= x;
    }
    if let Some(c) = p.cut {
        f.truncate(c % (f.len() + 1));
    }
    f
}

/// What the test itself counted for one connection.
#[derive(Default, Clone, Copy)]
struct Expected {
    pkts: u64,
    ip_bytes: u64,
}

fn accepted(meta: &PacketMeta, checksum_ok: bool) -> bool {
    let checked = matches!(
        meta.proto,
        proto::TCP | proto::UDP | proto::ICMP | proto::ICMPV6
    );
    !meta.l4_dropped() && (checksum_ok || !checked)
}

/// The history invariants, see the module comment. TCP letters belong to the physical
/// endpoint (a `^` swaps the case meaning); UDP letters belong to the role (Zeek's
/// `Session::CheckHistory` bits, which an application analyzer's flip does not swap: `D^d` can
/// be one host's two packets).
fn check_history(h: &[u8], per_role: bool) -> Result<(), TestCaseError> {
    prop_assert!(h.len() <= HISTORY_CAP);
    let mut once: HashMap<(bool, u8), u32> = HashMap::new();
    let mut scaled: HashMap<(bool, u8), u32> = HashMap::new();
    let mut flipped = false;
    for &c in h {
        if c == b'^' {
            flipped = !flipped && !per_role;
            continue;
        }
        prop_assert!(
            b"SHADFRICTWGQshadfrictwgq".contains(&c) || c == b'X',
            "letter {}",
            c as char
        );
        // The physical endpoint: upper case = originator at the time the letter was added.
        let endpoint = c.is_ascii_uppercase() != flipped;
        let kind = c.to_ascii_uppercase();
        if b"DAIQ".contains(&kind) {
            let n = once.entry((endpoint, kind)).or_default();
            *n += 1;
            prop_assert!(*n <= 1, "{} twice in {:?}", c as char, h);
        }
        if b"CTWG".contains(&kind) {
            let n = scaled.entry((endpoint, kind)).or_default();
            *n += 1;
            prop_assert!(*n <= 10, "{} too often in {:?}", c as char, h);
        }
    }
    Ok(())
}

fn check_conn(c: &Conn, exp: &Expected) -> Result<(), TestCaseError> {
    prop_assert_eq!(c.orig_pkts() + c.resp_pkts(), exp.pkts);
    prop_assert_eq!(c.orig_ip_bytes() + c.resp_ip_bytes(), exp.ip_bytes);
    check_history(c.history_str(), c.proto == proto::UDP)?;
    let state = c.conn_state();
    // An analyzer's flip in mid-connection swaps the packet counters but not the UDP
    // adapter's activity flags (`zeek-conn-semantics.md`), so SF then needs no packets each way.
    let analyzer_flip = c.history_str().iter().skip(1).any(|&l| l == b'^');
    match c.proto {
        proto::UDP => {
            if state == ConnStateCode::SF && !analyzer_flip {
                prop_assert!(c.orig_pkts() > 0 && c.resp_pkts() > 0);
            }
            if c.orig_pkts() == 0 && c.resp_pkts() == 0 {
                prop_assert_eq!(state, ConnStateCode::OTH);
            }
        }
        proto::TCP => {}
        _ => prop_assert_eq!(state, ConnStateCode::OTH),
    }
    prop_assert!(c.start_ns <= c.last_ns);
    // Must not panic; the values themselves are Zeek's business.
    let _ = (
        c.orig_bytes(),
        c.resp_bytes(),
        c.missed_bytes(),
        c.proto_name(),
    );
    Ok(())
}

/// Runs `f` on another thread and fails if it does not finish in time (a loop that does not
/// end would otherwise hang the test run).
fn finishes<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the engine finished (no endless loop, no panic)")
}

/// Feeds the packets and checks the invariants after each one.
fn run_sequence(pkts: &[Pkt], capacity: usize) -> Result<(), TestCaseError> {
    let mut table = HostTable {
        capacity,
        ..HostTable::default()
    };
    let cfg = Ports(std::vec![
        (80, proto::TCP),
        (443, proto::TCP),
        (53, proto::UDP)
    ]);
    let mut expected: HashMap<FlowKey, Expected> = HashMap::new();
    let mut now_ns: u64 = 1_000_000_000;
    for p in pkts {
        now_ns += p.dt_us * 1000;
        let f = frame(p);
        let mut meta = PacketMeta::default();
        if parse_ethernet(&f, &mut meta).is_err() || meta.is_fragment() {
            continue;
        }
        if p.gso > 1 {
            meta.pkts = p.gso;
            meta.ip_bytes = meta.ip_len.wrapping_mul(p.gso);
        }
        let key = FlowKey::from_meta(&meta);
        let before = table.map.get(&key).copied();
        let mut events = 0u32;
        let ch = process_packet(&mut table, &meta, now_ns, p.checksum_ok, &cfg, |_| {
            events += 1
        });
        if ch.contains(Changes::TABLE_FULL) {
            prop_assert!(!table.map.contains_key(&key));
            prop_assert_eq!(events, 1);
            continue;
        }
        let exp = expected.entry(key).or_default();
        if ch.contains(Changes::REUSED) || before.is_none() {
            prop_assert!(ch.contains(Changes::NEW));
            *exp = Expected::default();
        } else if let Some(b) = before {
            let c = &table.map[&key];
            prop_assert!(c.orig_pkts() + c.resp_pkts() >= b.orig_pkts() + b.resp_pkts());
            prop_assert!(
                c.orig_ip_bytes() + c.resp_ip_bytes() >= b.orig_ip_bytes() + b.resp_ip_bytes()
            );
            prop_assert!(c.last_ns >= b.last_ns);
        }
        if accepted(&meta, p.checksum_ok) {
            exp.pkts += meta.pkts as u64;
            exp.ip_bytes += meta.ip_bytes as u64;
        }
        check_conn(&table.map[&key], exp)?;
    }
    Ok(())
}

fn arbitrary_meta() -> impl Strategy<Value = PacketMeta> {
    (
        (any::<[u8; 16]>(), any::<bool>(), any::<u32>(), any::<u32>()),
        (
            any::<u32>(),
            any::<u32>(),
            1u32..8,
            any::<u16>(),
            any::<u16>(),
        ),
        (
            prop_oneof![Just(6u8), Just(17), Just(1), Just(58), any::<u8>()],
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            any::<u8>(),
            any::<u8>(),
        ),
    )
        .prop_map(
            |(
                (addr, swap, seq, ack),
                (ip_len, payload_len, pkts, sport, dport),
                (proto_no, tcp_flags, window, udp_len, window_scale, meta_flags),
            )| {
                let (src, dst) = if swap {
                    (addr, BROADCAST)
                } else {
                    (BROADCAST, addr)
                };
                PacketMeta {
                    src,
                    dst,
                    seq,
                    ack,
                    ip_len,
                    payload_len,
                    ip_bytes: ip_len,
                    pkts,
                    sport: sport % 4,
                    dport: dport % 4,
                    window,
                    udp_len,
                    proto: proto_no,
                    ip_version: 4,
                    tcp_flags,
                    window_scale,
                    meta_flags: meta_flags & 7,
                    ..PacketMeta::default()
                }
            },
        )
}

/// Cases per property: `PROPTEST_CASES` when set (`cargo xtask fuzz` runs rounds of many
/// cases with fresh seeds), else 512.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Arbitrary bytes: parsing never panics, and whatever parses goes through the engine.
    #[test]
    fn arbitrary_bytes_never_panic(frames in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..200), 1..20)) {
        let r = finishes(move || {
            let mut table = HostTable::default();
            for (i, f) in frames.iter().enumerate() {
                let mut meta = PacketMeta::default();
                if parse_ethernet(f, &mut meta).is_ok() {
                    let _ = FlowKey::from_meta(&meta);
                    process_packet(&mut table, &meta, i as u64, i % 3 != 0, &NoServerPorts, |_| {});
                }
                if let Some(v) = crate::packet::ip_view(f) {
                    let _ = crate::checksum::transport_checksum_ok(f, &v);
                }
            }
            table.map.len()
        });
        prop_assert!(r <= 40);
    }

    /// Arbitrary metas (as a buggy parser or the kernel could hand over) keep the engine sane.
    #[test]
    fn arbitrary_metas_keep_counters_consistent(
        metas in proptest::collection::vec((arbitrary_meta(), any::<bool>()), 1..60)) {
        let r = finishes(move || -> Result<(), TestCaseError> {
            let mut table = HostTable::default();
            let mut expected: HashMap<FlowKey, Expected> = HashMap::new();
            for (i, (meta, ok)) in metas.iter().enumerate() {
                let key = FlowKey::from_meta(meta);
                let ch = process_packet(&mut table, meta, i as u64 * 1000, *ok, &NoServerPorts, |_| {});
                let exp = expected.entry(key).or_default();
                if ch.contains(Changes::NEW) {
                    *exp = Expected::default();
                }
                if accepted(meta, *ok) {
                    exp.pkts += meta.pkts as u64;
                    exp.ip_bytes += meta.ip_bytes as u64;
                }
                check_conn(&table.map[&key], exp)?;
            }
            Ok(())
        });
        r?;
    }

    /// Conversations of valid packets, some corrupted, cut, with bad checksums or GSO counts.
    #[test]
    fn mutated_conversations_keep_counters_consistent(
        pkts in proptest::collection::vec(pkt(), 1..80),
        capacity in prop_oneof![Just(0usize), 1usize..4],
    ) {
        let r = finishes(move || run_sequence(&pkts, capacity));
        r?;
    }
}
