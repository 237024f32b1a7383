//! Tests that load the program and run it with BPF_PROG_TEST_RUN: the TC and XDP forms alike,
//! and one connection updated from two CPUs. Skipped without root or without the object.

use super::bench::{pin_to_cpu, repeated};
use super::privileges::check_privileges;
use super::{
    BENCH_TRACKER_PROGRAM, BENCH_XDP_PROGRAM, Kernel, KernelOptions, OBJECT, PROGRAMS,
    likely_port_bits,
};
use aya::programs::TestRun;
use conntrack_common::conn::Conn;
use conntrack_common::stats::Stat;

/// An Ethernet + IPv4 + UDP frame (checksum 0: the live path does not check it).
fn udp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: usize) -> Vec<u8> {
    udp_frame_with_ip_options(src, sport, dst, dport, payload, &[])
}

/// As [`udp_frame`], with IPv4 options (a multiple of 4 bytes): such a packet always takes
/// the stage chain, never the fast path.
fn udp_frame_with_ip_options(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    payload: usize,
    options: &[u8],
) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let ihl = 20 + options.len();
    let total = (ihl + 8 + payload) as u16;
    f.extend_from_slice(&[0x40 | (ihl / 4) as u8, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(options);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(f.len() + payload, 0xab);
    f
}

/// The program loaded with a 1024-entry table, or None (test skipped) where it cannot be.
fn small_test_kernel() -> Option<Kernel> {
    if !std::path::Path::new("/sys/fs/bpf").exists() || OBJECT.is_empty() {
        eprintln!("skipping: eBPF program not built or no bpffs");
        return None;
    }
    if check_privileges().is_err() {
        eprintln!("skipping: needs root (CAP_BPF, CAP_NET_ADMIN)");
        return None;
    }
    Some(
        Kernel::load(&KernelOptions {
            max_flows: 1024,
            likely_server_ports: &[],
            replay: false,
            contents: false,
            service: false,
            ring_bytes: 0,
            kernel_log: None,
            filter: None,
        })
        .expect("loading the program"),
    )
}

/// Sensor mode's XDP form and the TC form, fed the same conversation (on two different
/// flows), must leave the same connection: same orientation, counters and history. The
/// 1400-byte datagrams are longer than the header copy, so the XDP form's reads from the
/// packet itself are exercised too.
#[test]
fn xdp_and_tc_forms_track_a_conversation_alike() {
    let Some(mut kernel) = small_test_kernel() else {
        return;
    };
    kernel.load_sensor(false).expect("loading the XDP form");
    let (a, b) = ([10, 9, 1, 1], [10, 9, 1, 2]);
    let conversation = |sport: u16| {
        vec![
            udp_frame(a, sport, b, 7000, 100),
            udp_frame(b, 7000, a, sport, 1400),
            udp_frame(a, sport, b, 7000, 1400),
            udp_frame(b, 7000, a, sport, 10),
            udp_frame(b, 7000, a, sport, 0),
        ]
    };
    for f in conversation(41000) {
        kernel
            .bench_test_run(BENCH_TRACKER_PROGRAM, &f, 1)
            .expect("TC run");
    }
    for f in conversation(42000) {
        kernel
            .bench_test_run_xdp(BENCH_XDP_PROGRAM, &f, 1)
            .expect("XDP run");
    }
    let flows = kernel.take_flows().unwrap();
    let conns: Vec<Conn> = flows
        .keys()
        .iter()
        .filter_map(|k| flows.lookup(k))
        .collect();
    assert_eq!(conns.len(), 2, "one connection per form");
    let view = |c: &Conn| {
        (
            (c.orig_pkts(), c.orig_bytes(), c.orig_ip_bytes()),
            (c.resp_pkts(), c.resp_bytes(), c.resp_ip_bytes()),
            c.history_str().to_vec(),
        )
    };
    assert_eq!(view(&conns[0]), view(&conns[1]));
    assert_eq!(
        view(&conns[0]).0,
        (2, 1500, 1500 + 2 * 28),
        "orig: the side that sent first"
    );
    assert_eq!(view(&conns[0]).1, (3, 1410, 1410 + 3 * 28));
}

/// Two CPUs hammer the same connection at once (one per direction). Every packet must be
/// applied to the connection exactly once: a packet that waits for the lock is applied when it
/// gets it, and a lost or torn update would break the sums.
#[test]
fn one_connection_updated_from_two_cpus_is_not_corrupted() {
    let (a, b) = ([10, 9, 0, 1], [10, 9, 0, 2]);
    // Both directions on the fast path.
    hammer(
        &udp_frame(a, 40000, b, 9999, 100),
        &udp_frame(b, 9999, a, 40000, 300),
        20,
    );
}

/// As above, with the originator's packets on the stage chain (IPv4 options), which holds the
/// lock across its tail calls, and the responder's on the fast path.
#[test]
fn the_stage_chain_and_the_fast_path_share_a_connection_exactly() {
    let (a, b) = ([10, 9, 0, 3], [10, 9, 0, 4]);
    let nop4 = [1, 1, 1, 1];
    hammer(
        &udp_frame_with_ip_options(a, 40001, b, 9999, 100, &nop4),
        &udp_frame(b, 9999, a, 40001, 300),
        24,
    );
}

/// Runs `orig` once, then `orig` and `resp` N times each on two CPUs at once, and checks that
/// the connection counted every packet with its bytes (`orig_ip_header` bytes of IP header).
fn hammer(orig: &[u8], resp: &[u8], orig_ip_header: u64) {
    let Some(mut kernel) = small_test_kernel() else {
        return;
    };
    let prog = kernel.program(PROGRAMS[0].0).unwrap();
    let run = |frame: &[u8], repeat: u32| {
        prog.test_run(repeated(frame, repeat))
            .expect("BPF_PROG_TEST_RUN");
    };
    // Create the connection first so that both threads update an existing entry.
    run(orig, 1);
    const N: u32 = 300_000;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for (i, frame) in [orig, resp].into_iter().enumerate() {
            let run = &run;
            s.spawn(move || {
                pin_to_cpu(i % cpus);
                run(frame, N);
            });
        }
    });
    let flows = kernel.take_flows().unwrap();
    let keys = flows.keys();
    assert_eq!(keys.len(), 1, "both directions are one connection");
    let c = flows.lookup(&keys[0]).unwrap();
    let stats = kernel.stats().unwrap();
    let busy = stats.iter().find(|(s, _)| *s == Stat::LockBusy).unwrap().1;
    let (o, r) = (c.orig_pkts(), c.resp_pkts());
    assert_eq!(
        (o, r, busy),
        (1 + u64::from(N), u64::from(N), 0),
        "(orig, resp, locks taken over)"
    );
    // Bytes move with their packets: a torn update would leave them out of step.
    assert_eq!(c.orig_ip_bytes(), o * (orig_ip_header + 8 + 100));
    assert_eq!(c.resp_ip_bytes(), r * (20 + 8 + 300));
    assert_eq!(c.orig_bytes(), o * 100);
    assert_eq!(c.resp_bytes(), r * 300);
    eprintln!("orig {o} resp {r} on {cpus} CPUs");
}

/// The table walked in steps (a resync after lost events) meets every connection once, and
/// `remove` hands back a connection's state and takes it out in one step.
#[test]
fn a_stepwise_walk_meets_every_connection_and_remove_takes_it_out() {
    use crate::datapath::Datapath;
    let Some(mut kernel) = small_test_kernel() else {
        return;
    };
    let (a, b) = ([10, 9, 2, 1], [10, 9, 2, 2]);
    for sport in 30000..30100u16 {
        kernel
            .bench_test_run(BENCH_TRACKER_PROGRAM, &udp_frame(a, sport, b, 53, 20), 1)
            .expect("TC run");
    }
    let mut flows = kernel.take_flows().unwrap();
    let mut all = flows.keys();
    all.sort();
    assert_eq!(all.len(), 100);
    let (mut walked, mut cursor) = (Vec::new(), None);
    loop {
        let step = flows.keys_after(cursor.as_ref(), 7);
        walked.extend_from_slice(&step);
        if step.len() < 7 {
            break;
        }
        cursor = step.last().copied();
    }
    walked.sort();
    assert_eq!(walked, all, "each connection once");
    let k = all[0];
    let before = flows.lookup(&k).expect("there");
    assert_eq!(Datapath::remove(&mut flows, &k), Some(before));
    assert_eq!(flows.lookup(&k), None, "gone");
    assert_eq!(Datapath::remove(&mut flows, &k), None);
    assert_eq!(flows.keys().len(), 99);
}

#[test]
fn likely_server_ports_become_a_byte_of_protocol_bits_per_port() {
    let bits = likely_port_bits(&[(53, 17), (80, 6), (53, 6), (7, 1), (9, 132)]);
    // 53 is both tcp (1) and udp (2); icmp is 4; a protocol without a bit is left out.
    assert_eq!(bits, vec![(7, 4), (53, 3), (80, 1)]);
}
