//! Fast then full equals full, over generated conversations.

use super::oracle::slot_base;
use super::*;

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
            ev_full.push(crate::testutil::checked(e))
        });
        let ch_mixed = process_packet(&mut mixed, &meta, now, ok, &cfg, |e| {
            ev_mixed.push(crate::testutil::checked(e))
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
