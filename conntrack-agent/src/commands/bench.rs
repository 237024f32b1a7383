//! `conntrack-agent bench-kernel` (hidden): the per-packet cost of the loaded program measured
//! with BPF_PROG_TEST_RUN, for `cargo xtask bench`. Prints one JSON object on stdout; the
//! bench computes medians and ratios.
//!
//! Cases run with `repeat` (the same frame many times in the kernel), against the `empty`
//! program measured the same way:
//! - `tcp_ack`: a pure ACK of an established IPv4 TCP connection (the fast path);
//! - `tcp_retrans`: a 100-byte data segment repeated: after its first run a retransmission,
//!   which takes the full stage chain (T letter, repeat counter);
//! - `udp`: a packet of an existing IPv4 UDP flow (both directions seen);
//! - `udp_armed`: as `udp`, on a flow with an armed threshold that never crosses;
//! - `udp_extracted`: as `udp`, on a flow whose payload is extracted (full chain and copy);
//! - `udp_contended`: both directions of the `udp` flow at once, one thread per CPU (the mean
//!   of the two): the fast path with its connection lock contended.
//!
//! The fast path's floor, on the pure ACK: `floor_clock` (the clock read alone) and
//! `floor_lookup` (the clock, the in-place parse and the flow lookup).
//!
//! Cases that need a different frame each run go with `repeat` = 1 (the kernel's own timing of
//! one run, which includes its clock reads), against `empty` measured the same way
//! (`empty_single`), on distinct frames:
//! - `tcp_data`: in-order 100-byte data segments of an established IPv4 TCP connection, the
//!   sequence number advancing run after run (the fast path);
//! - `ipv6`: the same over IPv6;
//! - `syn_new`: a SYN that creates a connection, on distinct source ports;
//! - `udp_new`: the first datagram of a new UDP flow (no analyzer port), likewise.
//!
//! Sensor mode's XDP form on the same frames (`xdp_empty`, `xdp_udp` repeated; `xdp_empty_single`,
//! `xdp_tcp_data`, `xdp_ipv6` single runs), against the XDP program that only returns its
//! verdict: the same stages, reading an `xdp_buff` instead of an skb.

use crate::cli::hidden::BenchKernelArgs;
use crate::datapath::kernel::{
    BENCH_EMPTY_PROGRAM, BENCH_EMPTY_XDP_PROGRAM, BENCH_FLOOR_CLOCK_PROGRAM,
    BENCH_FLOOR_LOOKUP_PROGRAM, BENCH_TRACKER_PROGRAM, BENCH_XDP_PROGRAM, Kernel, KernelOptions,
};
use anyhow::Result;
use conntrack_common::checksum::set_ipv4_header_checksum;
use conntrack_common::contents;
use conntrack_common::event::Event;
use conntrack_common::key::FlowKey;
use conntrack_common::packet::{PacketMeta, parse_ethernet};
use conntrack_common::threshold::{self, ThresholdCommand};

/// The layout of the types shared with the kernel, as this binary was built with them.
fn layout() -> serde_json::Value {
    use conntrack_common::stats::{STAT_COUNT, Stat};
    let stats: serde_json::Map<String, serde_json::Value> = Stat::ALL
        .iter()
        .map(|s| (s.name().to_string(), serde_json::json!(s.index())))
        .collect();
    serde_json::json!({
        "conn": size_of::<conntrack_common::conn::Conn>(),
        "key": size_of::<conntrack_common::key::FlowKey>(),
        // The record of a connection's change: the event the ring buffer carries most.
        "event": size_of::<conntrack_common::event::ConnChange>(),
        "stat_count": STAT_COUNT,
        "stats": stats,
    })
}

const SYN: u8 = 0x02;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

fn eth(ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

fn tcp_hdr(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, payload: usize) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.resize(20 + payload, 0x61);
    t
}

fn udp_hdr(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload);
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.resize(8 + payload, 0x62);
    u
}

fn v4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    set_ipv4_header_checksum(&mut ip);
    ip.extend_from_slice(l4);
    eth(0x0800, &ip)
}

fn v6(src: [u8; 16], dst: [u8; 16], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[proto, 64]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    ip.extend_from_slice(l4);
    eth(0x86dd, &ip)
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Arms a total-bytes threshold no run reaches on the connection of `frame`.
fn arm_unreachable_threshold(k: &Kernel, frame: &[u8]) -> Result<()> {
    let mut meta = PacketMeta::default();
    parse_ethernet(frame, &mut meta).map_err(|e| anyhow::anyhow!("bench frame: {e:?}"))?;
    let mut cmd = ThresholdCommand {
        key: FlowKey::from_meta(&meta),
        mask: threshold::bit(threshold::slot::TOTAL_BYTES),
        check_orig: 1,
        ..ThresholdCommand::default()
    };
    cmd.values[threshold::slot::TOTAL_BYTES] = u64::MAX;
    k.set_thresholds(&cmd)?;
    Ok(())
}

/// Turns content extraction of the originator on for the connection of `frame`.
fn flag_for_extraction(k: &Kernel, frame: &[u8]) -> Result<()> {
    let mut meta = PacketMeta::default();
    parse_ethernet(frame, &mut meta).map_err(|e| anyhow::anyhow!("bench frame: {e:?}"))?;
    let cmd = ThresholdCommand {
        key: FlowKey::from_meta(&meta),
        mask: contents::CMD_SET_CONTENTS | contents::EXTRACT_ORIG,
        ..ThresholdCommand::default()
    };
    k.set_thresholds(&cmd)?;
    Ok(())
}

/// ns per run of `frame` repeated `repeat` times, in batches the `CONTENTS` ring buffer holds
/// (drained between batches, so every run copies its payload).
fn extracted_cost(k: &mut Kernel, frame: &[u8], repeat: u32) -> Result<u64> {
    const BATCH: u32 = 10_000;
    let (mut left, mut total) = (repeat, 0u64);
    while left > 0 {
        let n = left.min(BATCH);
        total += k.bench_test_run(BENCH_TRACKER_PROGRAM, frame, n)? * n as u64;
        k.drain_content_records();
        left -= n;
    }
    Ok(total / repeat.max(1) as u64)
}

pub fn bench_kernel(args: BenchKernelArgs) -> Result<()> {
    if args.layout {
        println!("{}", layout());
        return Ok(());
    }
    let ports = crate::cli::parse_port_list(crate::cli::DEFAULT_LIKELY_SERVER_PORTS)?;
    let syns_total = args.syns.saturating_mul(args.rounds);
    let mut k = Kernel::load(&KernelOptions {
        // Each round opens `syns` TCP connections and as many UDP flows.
        max_flows: syns_total
            .saturating_mul(2)
            .saturating_add(1024)
            .max(65_536),
        likely_server_ports: &ports,
        replay: false,
        // The bench has an extraction row.
        contents: true,
        service: false,
        ring_bytes: 0,
        kernel_log: None,
        filter: None,
    })?;
    k.load_sensor(false)?;
    let mut events: Vec<Event> = Vec::new();
    let (a4, b4) = ([10, 1, 0, 1], [10, 1, 0, 2]);
    let mut a6 = [0u8; 16];
    a6[..2].copy_from_slice(&[0xfd, 0x00]);
    let mut b6 = a6;
    a6[15] = 1;
    b6[15] = 2;
    let handshake4 = [
        v4(a4, b4, 6, &tcp_hdr(40000, 80, 1000, 0, SYN, 0)),
        v4(b4, a4, 6, &tcp_hdr(80, 40000, 5000, 1001, SYN | ACK, 0)),
        v4(a4, b4, 6, &tcp_hdr(40000, 80, 1001, 5001, ACK, 0)),
    ];
    let retrans4 = v4(a4, b4, 6, &tcp_hdr(40000, 80, 1001, 5001, PSH | ACK, 100));
    let ack4 = v4(b4, a4, 6, &tcp_hdr(80, 40000, 5001, 1001, ACK, 0));
    let handshake6 = [
        v6(a6, b6, 6, &tcp_hdr(40001, 443, 1000, 0, SYN, 0)),
        v6(b6, a6, 6, &tcp_hdr(443, 40001, 5000, 1001, SYN | ACK, 0)),
        v6(a6, b6, 6, &tcp_hdr(40001, 443, 1001, 5001, ACK, 0)),
    ];
    // In-order segments: each run sends the next 100 bytes.
    let mut seq4: u32 = 1001;
    let mut seq6: u32 = 1001;
    let mut next4 = || {
        let f = v4(a4, b4, 6, &tcp_hdr(40000, 80, seq4, 5001, PSH | ACK, 100));
        seq4 = seq4.wrapping_add(100);
        f
    };
    let mut next6 = || {
        let f = v6(a6, b6, 6, &tcp_hdr(40001, 443, seq6, 5001, PSH | ACK, 100));
        seq6 = seq6.wrapping_add(100);
        f
    };
    let udp_pair = [
        v4(a4, b4, 17, &udp_hdr(5353, 53, 100)),
        v4(b4, a4, 17, &udp_hdr(53, 5353, 100)),
    ];
    let udp = udp_pair[0].clone();
    let udp_armed = v4(a4, b4, 17, &udp_hdr(5354, 53, 100));
    for f in handshake4.iter().chain(&handshake6).chain(&udp_pair) {
        k.bench_test_run(BENCH_TRACKER_PROGRAM, f, 1)?;
    }
    // The first data of each direction and the first pure ACK add history letters (full
    // chain); from then on the cases above are ordinary packets.
    k.bench_test_run(BENCH_TRACKER_PROGRAM, &next4(), 1)?;
    k.bench_test_run(BENCH_TRACKER_PROGRAM, &next6(), 1)?;
    k.bench_test_run(BENCH_TRACKER_PROGRAM, &ack4, 1)?;
    k.bench_test_run(BENCH_TRACKER_PROGRAM, &udp_armed, 1)?;
    arm_unreachable_threshold(&k, &udp_armed)?;
    let udp_extracted = v4(a4, b4, 17, &udp_hdr(5356, 53, 100));
    k.bench_test_run(BENCH_TRACKER_PROGRAM, &udp_extracted, 1)?;
    flag_for_extraction(&k, &udp_extracted)?;
    k.drain_events(&mut events);

    let mut out: Vec<(&str, Vec<u64>)> = [
        "empty",
        "floor_clock",
        "floor_lookup",
        "tcp_ack",
        "tcp_retrans",
        "udp",
        "udp_armed",
        "udp_extracted",
        "udp_contended",
        "empty_single",
        "tcp_data",
        "ipv6",
        "syn_new",
        "udp_new",
        "xdp_empty",
        "xdp_udp",
        "xdp_empty_single",
        "xdp_tcp_data",
        "xdp_ipv6",
    ]
    .iter()
    .map(|n| (*n, Vec::new()))
    .collect();
    let mut next_port: u32 = 0;
    for _ in 0..args.rounds {
        // (case, program, frame, XDP form)
        let repeated: [(&str, &str, &[u8], bool); 9] = [
            ("empty", BENCH_EMPTY_PROGRAM, &ack4, false),
            ("floor_clock", BENCH_FLOOR_CLOCK_PROGRAM, &ack4, false),
            ("floor_lookup", BENCH_FLOOR_LOOKUP_PROGRAM, &ack4, false),
            ("tcp_ack", BENCH_TRACKER_PROGRAM, &ack4, false),
            ("tcp_retrans", BENCH_TRACKER_PROGRAM, &retrans4, false),
            ("udp", BENCH_TRACKER_PROGRAM, &udp, false),
            ("udp_armed", BENCH_TRACKER_PROGRAM, &udp_armed, false),
            ("xdp_empty", BENCH_EMPTY_XDP_PROGRAM, &udp, true),
            ("xdp_udp", BENCH_XDP_PROGRAM, &udp, true),
        ];
        let mut v = Vec::new();
        for (name, prog, frame, xdp) in repeated {
            let ns = if xdp {
                k.bench_test_run_xdp(prog, frame, args.repeat)?
            } else {
                k.bench_test_run(prog, frame, args.repeat)?
            };
            v.push((name, ns));
        }
        v.push((
            "udp_extracted",
            extracted_cost(&mut k, &udp_extracted, args.repeat)?,
        ));
        // Both directions of one flow on two CPUs at once: the connection lock contended.
        let [o, r] = k.bench_test_run_pair([&udp_pair[0], &udp_pair[1]], args.repeat)?;
        v.push(("udp_contended", (o + r) / 2));
        let singles = [
            "empty_single",
            "tcp_data",
            "ipv6",
            "syn_new",
            "udp_new",
            "xdp_empty_single",
            "xdp_tcp_data",
            "xdp_ipv6",
        ];
        let mut runs: Vec<Vec<u64>> = vec![Vec::with_capacity(args.syns as usize); singles.len()];
        for _ in 0..args.syns {
            // A fresh 4-tuple per SYN: source 10.2.x.y, port from a counter.
            let n = next_port;
            next_port += 1;
            let src = [10, 2, (n >> 16) as u8, (n >> 8) as u8];
            let sport = 1024 + (n & 0xff) as u16;
            let syn = v4(src, b4, 6, &tcp_hdr(sport, 80, 7, 0, SYN, 0));
            // A new UDP flow to a port with no analyzer: source 10.3.x.y.
            let src3 = [10, 3, (n >> 16) as u8, (n >> 8) as u8];
            let datagram = v4(src3, b4, 17, &udp_hdr(sport, 9999, 64));
            let (d4, d6, x4, x6) = (next4(), next6(), next4(), next6());
            let times = [
                k.bench_test_run(BENCH_EMPTY_PROGRAM, &d4, 1)?,
                k.bench_test_run(BENCH_TRACKER_PROGRAM, &d4, 1)?,
                k.bench_test_run(BENCH_TRACKER_PROGRAM, &d6, 1)?,
                k.bench_test_run(BENCH_TRACKER_PROGRAM, &syn, 1)?,
                k.bench_test_run(BENCH_TRACKER_PROGRAM, &datagram, 1)?,
                k.bench_test_run_xdp(BENCH_EMPTY_XDP_PROGRAM, &x4, 1)?,
                k.bench_test_run_xdp(BENCH_XDP_PROGRAM, &x4, 1)?,
                k.bench_test_run_xdp(BENCH_XDP_PROGRAM, &x6, 1)?,
            ];
            for (r, t) in runs.iter_mut().zip(times) {
                r.push(t);
            }
            if n.is_multiple_of(1024) {
                events.clear();
                k.drain_events(&mut events);
            }
        }
        events.clear();
        k.drain_events(&mut events);
        for (name, r) in singles.iter().zip(runs.iter_mut()) {
            v.push((name, median(r)));
        }
        for (name, t) in v {
            if let Some(slot) = out.iter_mut().find(|(n, _)| *n == name) {
                slot.1.push(t);
            }
        }
    }
    let stats = k.stats()?;
    let mut json = serde_json::Map::new();
    for (name, v) in out {
        json.insert(name.to_string(), serde_json::json!(v));
    }
    json.insert("repeat".into(), serde_json::json!(args.repeat));
    json.insert("syns_per_round".into(), serde_json::json!(args.syns));
    let stat_obj: serde_json::Map<String, serde_json::Value> = stats
        .iter()
        .map(|(s, v)| (s.name().to_string(), serde_json::json!(v)))
        .collect();
    json.insert("stats".into(), serde_json::Value::Object(stat_obj));
    println!("{}", serde_json::Value::Object(json));
    Ok(())
}
