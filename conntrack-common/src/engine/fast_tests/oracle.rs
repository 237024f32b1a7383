//! The random-state oracle: arbitrary connection states and packets near their edges.

use super::*;

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
pub(super) fn slot_base(c: &Conn, s: usize) -> u64 {
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
