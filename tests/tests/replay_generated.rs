//! Replays traces the test itself writes and checks conn.log against what it sent.

use std::net::IpAddr;
use std::process::Command;

use conntrack_tests::connlog::{ConnLog, Record, num};
use conntrack_tests::pcapgen::{
    ACK, FIN, PSH, RST, SYN, TcpConv, Trace, icmp_echo_frame, udp_frame,
};
use conntrack_tests::{agent_path, is_root};

const T0: u64 = 1_700_000_000_000_000;

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Replays `trace` with the given engine and returns the conn.log it wrote.
fn replay(trace: &Trace, engine: &str) -> ConnLog {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("trace.pcap");
    trace.write(&pcap).unwrap();
    let out = Command::new(agent_path())
        .arg("read")
        .arg(&pcap)
        .arg("--log-dir")
        .arg(dir.path())
        .args(["--engine", engine])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "read failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = ConnLog::read(&dir.path().join("conn.log")).unwrap();
    assert!(log.closed, "conn.log has no #close line");
    log
}

fn engines() -> Vec<&'static str> {
    if is_root() {
        vec!["host", "kernel"]
    } else {
        vec!["host"]
    }
}

fn only(log: &ConnLog) -> &Record {
    assert_eq!(
        log.records.len(),
        1,
        "expected one record: {:#?}",
        log.records
    );
    &log.records[0]
}

fn check(rec: &Record, field: &str, want: &str) {
    assert_eq!(rec[field], want, "field {field} of {rec:#?}");
}

/// 40-byte headers (IPv4 + TCP without options) plus payload, summed over packets.
fn tcp_ip_bytes(payloads: &[usize], hdr: u64) -> u64 {
    payloads.iter().map(|p| hdr + *p as u64).sum()
}

fn normal_close(client: IpAddr, server: IpAddr, hdr: u64) {
    let mut t = Trace::default();
    let mut c = TcpConv::new((client, 40000), (server, 8080), T0);
    c.c(&mut t, SYN, b"");
    c.s(&mut t, SYN | ACK, b"");
    c.c(&mut t, ACK, b"");
    c.c(&mut t, ACK | PSH, &[b'x'; 100]);
    c.s(&mut t, ACK | PSH, &[b'y'; 250]);
    c.c(&mut t, ACK | FIN, b"");
    c.s(&mut t, ACK | FIN, b"");
    c.c(&mut t, ACK, b"");
    for engine in engines() {
        let log = replay(&t, engine);
        let r = only(&log);
        check(r, "proto", "tcp");
        check(r, "id.orig_h", &client.to_string());
        check(r, "id.orig_p", "40000");
        check(r, "id.resp_h", &server.to_string());
        check(r, "id.resp_p", "8080");
        check(r, "conn_state", "SF");
        check(r, "history", "ShADdFf");
        check(r, "orig_bytes", "100");
        check(r, "resp_bytes", "250");
        check(r, "missed_bytes", "0");
        assert_eq!(num(r, "orig_pkts"), 5, "{engine}");
        assert_eq!(num(r, "resp_pkts"), 3, "{engine}");
        assert_eq!(
            num(r, "orig_ip_bytes"),
            tcp_ip_bytes(&[0, 0, 100, 0, 0], hdr)
        );
        assert_eq!(num(r, "resp_ip_bytes"), tcp_ip_bytes(&[0, 250, 0], hdr));
        // The final ACK after both FINs does not extend the duration.
        check(r, "duration", "0.006000");
        check(r, "ip_proto", "6");
    }
}

#[test]
fn tcp_normal_close_is_sf_with_payload_bytes() {
    normal_close(addr("10.1.0.1"), addr("10.1.0.2"), 40);
}

#[test]
fn ipv6_tcp_normal_close_is_sf() {
    normal_close(addr("fd00:1::1"), addr("fd00:1::2"), 60);
}

#[test]
fn refused_connection_is_rej() {
    let mut t = Trace::default();
    let mut c = TcpConv::new((addr("10.1.0.1"), 40001), (addr("10.1.0.2"), 9), T0);
    c.c(&mut t, SYN, b"");
    c.s(&mut t, RST | ACK, b"");
    for engine in engines() {
        let r = only(&replay(&t, engine)).clone();
        check(&r, "conn_state", "REJ");
        check(&r, "history", "Sr");
        assert_eq!(num(&r, "orig_pkts") + num(&r, "resp_pkts"), 2);
    }
}

#[test]
fn unanswered_syn_is_s0() {
    let mut t = Trace::default();
    let mut c = TcpConv::new((addr("10.1.0.1"), 40002), (addr("10.1.0.2"), 7777), T0);
    c.c(&mut t, SYN, b"");
    for engine in engines() {
        let r = only(&replay(&t, engine)).clone();
        check(&r, "conn_state", "S0");
        check(&r, "history", "S");
        check(&r, "duration", "-");
        assert_eq!(num(&r, "orig_pkts"), 1);
        assert_eq!(num(&r, "resp_pkts"), 0);
    }
}

#[test]
fn reset_mid_stream_is_rsto() {
    let mut t = Trace::default();
    let mut c = TcpConv::new((addr("10.1.0.1"), 40003), (addr("10.1.0.2"), 7777), T0);
    c.c(&mut t, SYN, b"");
    c.s(&mut t, SYN | ACK, b"");
    c.c(&mut t, ACK, b"");
    c.c(&mut t, ACK | PSH, &[1; 64]);
    c.c(&mut t, RST | ACK, b"");
    for engine in engines() {
        let r = only(&replay(&t, engine)).clone();
        check(&r, "conn_state", "RSTO");
        check(&r, "history", "ShADR");
        check(&r, "orig_bytes", "64");
    }
}

#[test]
fn udp_request_response_is_sf() {
    let (a, b) = ((addr("10.1.0.1"), 53000), (addr("10.1.0.2"), 5353));
    let mut t = Trace::default();
    t.push(T0, udp_frame(a, b, &[0; 30]));
    t.push(T0 + 2500, udp_frame(b, a, &[0; 70]));
    for engine in engines() {
        let r = only(&replay(&t, engine)).clone();
        check(&r, "proto", "udp");
        check(&r, "conn_state", "SF");
        check(&r, "history", "Dd");
        check(&r, "orig_bytes", "30");
        check(&r, "resp_bytes", "70");
        check(&r, "duration", "0.002500");
        assert_eq!(num(&r, "orig_ip_bytes"), 20 + 8 + 30);
        assert_eq!(num(&r, "resp_ip_bytes"), 20 + 8 + 70);
    }
}

#[test]
fn icmp_echo_pairs_into_one_oth_connection() {
    let (a, b) = (addr("10.1.0.1"), addr("10.1.0.2"));
    let mut t = Trace::default();
    for i in 0..3u16 {
        let ts = T0 + u64::from(i) * 1_000_000;
        t.push(ts, icmp_echo_frame(a, b, false, 7, i, &[0; 56]));
        t.push(ts + 300, icmp_echo_frame(b, a, true, 7, i, &[0; 56]));
    }
    for engine in engines() {
        let r = only(&replay(&t, engine)).clone();
        check(&r, "proto", "icmp");
        check(&r, "id.orig_p", "8");
        check(&r, "id.resp_p", "0");
        check(&r, "conn_state", "OTH");
        assert_eq!(num(&r, "orig_pkts"), 3);
        assert_eq!(num(&r, "resp_pkts"), 3);
        // ICMP bytes: IP payload minus the 8-byte ICMP header.
        check(&r, "orig_bytes", &(3 * 56).to_string());
    }
}

#[test]
fn udp_idle_past_inactivity_timeout_splits_records() {
    let (a, b) = ((addr("10.1.0.1"), 53001), (addr("10.1.0.2"), 9999));
    let mut t = Trace::default();
    t.push(T0, udp_frame(a, b, &[0; 10]));
    // 61 s later: the 1 min UDP inactivity timeout has removed the first connection.
    t.push(T0 + 61_000_000, udp_frame(a, b, &[0; 10]));
    for engine in engines() {
        let log = replay(&t, engine);
        assert_eq!(log.records.len(), 2, "{engine}: {:#?}", log.records);
        assert_ne!(log.records[0]["uid"], log.records[1]["uid"]);
    }
}

#[test]
fn garbage_file_is_a_clear_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("garbage.pcap");
    std::fs::write(&bad, b"this is not a capture file at all").unwrap();
    let out = Command::new(agent_path())
        .arg("read")
        .arg(&bad)
        .arg("--log-dir")
        .arg(dir.path())
        .args(["--engine", "host"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("garbage.pcap"),
        "error should name the file: {err}"
    );
    assert!(
        out.status.code().is_some(),
        "must exit, not die by a signal"
    );
}
