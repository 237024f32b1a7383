//! Tests that load the program and run it with BPF_PROG_TEST_RUN: the TC and XDP forms alike,
//! and one connection updated from two CPUs. Skipped without root or without the object.

use super::privileges::check_privileges;
use super::{BENCH_TRACKER_PROGRAM, BENCH_XDP_PROGRAM, Kernel, KernelOptions, OBJECT, PROGRAMS};
use aya::programs::{TestRun, TestRunOptions};
use conntrack_common::conn::Conn;
use conntrack_common::stats::Stat;

/// An Ethernet + IPv4 + UDP frame (checksum 0: the live path does not check it).
fn udp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: usize) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = (20 + 8 + payload) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(f.len() + payload, 0xab);
    f
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
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
/// counted exactly once, either on the connection or, when the lock stayed busy, in
/// `LockBusy` (handed to the agent): a lost or torn update would break the sums.
#[test]
fn one_connection_updated_from_two_cpus_is_not_corrupted() {
    let Some(mut kernel) = small_test_kernel() else {
        return;
    };
    let a = [10, 9, 0, 1];
    let b = [10, 9, 0, 2];
    let orig = udp_frame(a, 40000, b, 9999, 100);
    let resp = udp_frame(b, 9999, a, 40000, 300);
    // Create the connection first so that both threads update an existing entry.
    let prog = kernel.program(PROGRAMS[0].0).unwrap();
    let run = |frame: &[u8], repeat: u32| {
        prog.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    };
    run(&orig, 1);
    const N: u32 = 300_000;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for (i, frame) in [&orig, &resp].into_iter().enumerate() {
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
        o + r + busy,
        1 + 2 * u64::from(N),
        "orig {o} resp {r} busy {busy}"
    );
    // Bytes move with their packets: a torn update would leave them out of step.
    assert_eq!(c.orig_ip_bytes(), o * (20 + 8 + 100));
    assert_eq!(c.resp_ip_bytes(), r * (20 + 8 + 300));
    assert_eq!(c.orig_bytes(), o * 100);
    assert_eq!(c.resp_bytes(), r * 300);
    eprintln!("orig {o} resp {r} lock busy {busy} on {cpus} CPUs");
}
