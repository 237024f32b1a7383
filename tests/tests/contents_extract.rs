//! Content extraction on traces the test writes itself: the files must hold exactly the bytes
//! each side sent, whatever order the segments arrived in (out of order, retransmitted,
//! overlapping, across the 2^32 sequence wrap), and a hole that is never filled must show as
//! Zeek's gap marker. Host engine, and kernel engine when root.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use conntrack_tests::pcapgen::{ACK, FIN, PSH, SYN, TcpConv, Trace, tcp_frame, udp_frame};
use conntrack_tests::{agent_path, is_root};

const T0: u64 = 1_700_000_000_000_000;

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn engines() -> Vec<&'static str> {
    if is_root() {
        vec!["host", "kernel"]
    } else {
        vec!["host"]
    }
}

/// Replays `trace` with `--extract-all`; returns the extract directory (kept in `dir`).
fn replay(trace: &Trace, engine: &str, dir: &Path) -> PathBuf {
    replay_with(trace, engine, dir, "").0
}

/// Replays `trace` with `--extract-all` and the config text `config`; returns the extract
/// directory and the agent's stderr.
fn replay_with(trace: &Trace, engine: &str, dir: &Path, config: &str) -> (PathBuf, String) {
    let cfg = dir.join("conntrack.toml");
    std::fs::write(&cfg, config).unwrap();
    let pcap = dir.join("trace.pcap");
    trace.write(&pcap).unwrap();
    let extract = dir.join("extract");
    let out = Command::new(agent_path())
        .arg("read")
        .arg(&pcap)
        .arg("--log-dir")
        .arg(dir)
        .args(["--engine", engine, "--extract-all", "--extract-dir"])
        .arg(&extract)
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "read failed: {stderr}");
    (extract, stderr)
}

fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ salt).collect()
}

#[test]
fn tcp_streams_are_reassembled_from_reordered_retransmitted_and_overlapping_segments() {
    let client = (addr("10.0.7.1"), 40000);
    let server = (addr("10.0.7.2"), 8080);
    let up = pattern(6000, 0x55);
    let down = pattern(3000, 0xaa);
    let mut t = Trace::default();
    let mut c = TcpConv::new(client, server, T0);
    // The client's stream crosses the 2^32 wrap in its middle.
    c.cseq = u32::MAX - 2500;
    c.c(&mut t, SYN, b"");
    c.s(&mut t, SYN | ACK, b"");
    c.c(&mut t, ACK, b"");
    let base = c.cseq;
    let seg = |off: usize, len: usize| (off, len);
    // Out of order, a retransmission, and an overlap spanning two segments.
    let order = [
        seg(0, 1000),
        seg(2000, 1000),
        seg(1000, 1000),
        seg(1000, 1000),
        seg(3000, 1000),
        seg(5000, 1000),
        seg(1500, 2000),
        seg(4000, 1000),
    ];
    for (i, (off, len)) in order.into_iter().enumerate() {
        let seq = base.wrapping_add(off as u32);
        let frame = tcp_frame(client, server, seq, c.sseq, ACK | PSH, &up[off..off + len]);
        t.push(c.ts_us + i as u64 * 100, frame);
    }
    c.ts_us += 10_000;
    c.cseq = base.wrapping_add(up.len() as u32);
    // The server answers in order, with its first segment sent twice.
    let sbase = c.sseq;
    for (i, off) in [0usize, 0, 1000, 2000].into_iter().enumerate() {
        let seq = sbase.wrapping_add(off as u32);
        let frame = tcp_frame(
            server,
            client,
            seq,
            c.cseq,
            ACK | PSH,
            &down[off..off + 1000],
        );
        t.push(c.ts_us + i as u64 * 100, frame);
    }
    c.ts_us += 10_000;
    c.sseq = sbase.wrapping_add(down.len() as u32);
    c.c(&mut t, ACK | FIN, b"");
    c.s(&mut t, ACK | FIN, b"");
    c.c(&mut t, ACK, b"");
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let out = replay(&t, engine, dir.path());
        let orig = std::fs::read(out.join("contents_10.0.7.1-40000-10.0.7.2-8080_orig.dat"));
        let resp = std::fs::read(out.join("contents_10.0.7.1-40000-10.0.7.2-8080_resp.dat"));
        assert!(orig.unwrap() == up, "{engine}: the client's bytes");
        assert!(resp.unwrap() == down, "{engine}: the server's bytes");
    }
}

#[test]
fn a_hole_never_filled_is_written_as_zeeks_gap_marker() {
    let client = (addr("10.0.7.3"), 40001);
    let server = (addr("10.0.7.4"), 21);
    let mut t = Trace::default();
    let mut c = TcpConv::new(client, server, T0);
    c.c(&mut t, SYN, b"");
    c.s(&mut t, SYN | ACK, b"");
    c.c(&mut t, ACK, b"");
    c.s(&mut t, ACK | PSH, b"220 ready\r\n");
    c.sseq = c.sseq.wrapping_add(7); // 7 bytes the capture missed
    c.s(&mut t, ACK | PSH, b"331 ok\r\n");
    c.c(&mut t, ACK | FIN, b"");
    c.s(&mut t, ACK | FIN, b"");
    c.c(&mut t, ACK, b"");
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let out = replay(&t, engine, dir.path());
        let resp = std::fs::read(out.join("contents_10.0.7.3-40001-10.0.7.4-21_resp.dat"));
        assert_eq!(
            String::from_utf8(resp.unwrap()).unwrap(),
            "220 ready\r\n\n<<gap 7>>\n331 ok\r\n",
            "{engine}"
        );
        let orig = std::fs::read(out.join("contents_10.0.7.3-40001-10.0.7.4-21_orig.dat"));
        assert!(
            orig.unwrap().is_empty(),
            "{engine}: opened at establishment, as Zeek does"
        );
    }
}

#[test]
fn udp_datagrams_after_the_first_are_appended_per_direction() {
    // The agent decides on a connection when its first packet's event arrives, so the first
    // datagram has passed by then (TCP loses nothing: Zeek too starts at establishment).
    let a = (addr("10.0.7.5"), 40000);
    let b = (addr("10.0.7.6"), 9999);
    let mut t = Trace::default();
    t.push(T0, udp_frame(a, b, b"zero,"));
    t.push(T0 + 10, udp_frame(a, b, b"one,"));
    t.push(T0 + 20, udp_frame(b, a, b"reply"));
    t.push(T0 + 30, udp_frame(a, b, b"two"));
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let out = replay(&t, engine, dir.path());
        let orig = std::fs::read(out.join("contents_10.0.7.5-40000-10.0.7.6-9999_orig.dat"));
        let resp = std::fs::read(out.join("contents_10.0.7.5-40000-10.0.7.6-9999_resp.dat"));
        assert_eq!(orig.unwrap(), b"one,two", "{engine}");
        assert_eq!(resp.unwrap(), b"reply", "{engine}");
    }
}

/// A client that sends 5 segments of 1000 bytes after the handshake.
fn five_kb_upload(client: (IpAddr, u16), server: (IpAddr, u16)) -> Trace {
    let mut t = Trace::default();
    let mut c = TcpConv::new(client, server, T0);
    c.c(&mut t, SYN, b"");
    c.s(&mut t, SYN | ACK, b"");
    c.c(&mut t, ACK, b"");
    for i in 0..5u8 {
        c.c(&mut t, ACK | PSH, &[b'a' + i; 1000]);
    }
    c.c(&mut t, ACK | FIN, b"");
    c.s(&mut t, ACK | FIN, b"");
    c.c(&mut t, ACK, b"");
    t
}

#[test]
fn the_per_connection_cap_cuts_each_direction_and_counts_the_rest() {
    let t = five_kb_upload((addr("10.0.7.7"), 40002), (addr("10.0.7.8"), 80));
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = "[contents]\nmax_bytes_per_conn = 2500\n";
        let (out, log) = replay_with(&t, engine, dir.path(), cfg);
        let orig = std::fs::read(out.join("contents_10.0.7.7-40002-10.0.7.8-80_orig.dat"));
        let mut want = vec![b'a'; 1000];
        want.extend_from_slice(&[b'b'; 1000]);
        want.extend_from_slice(&[b'c'; 500]);
        assert!(orig.unwrap() == want, "{engine}: the first 2500 bytes");
        assert!(
            log.contains("2500 bytes not delivered by the datapath"),
            "{engine}: the cut is logged: {log}"
        );
    }
}

#[test]
fn past_the_disk_quota_nothing_more_is_written_and_a_warning_says_so() {
    let t = five_kb_upload((addr("10.0.7.9"), 40003), (addr("10.0.7.10"), 80));
    let dir = tempfile::tempdir().unwrap();
    let (out, log) = replay_with(&t, "host", dir.path(), "[contents]\ndisk_quota = 1200\n");
    let orig = std::fs::read(out.join("contents_10.0.7.9-40003-10.0.7.10-80_orig.dat"));
    assert_eq!(orig.unwrap().len(), 1200);
    assert!(log.contains("disk quota of 1200 bytes reached"), "{log}");
}

#[test]
fn the_rate_cap_limits_bytes_per_second_over_all_connections() {
    // The five segments are 1 ms apart (packet time): one second's budget of 1500 bytes.
    let t = five_kb_upload((addr("10.0.7.11"), 40004), (addr("10.0.7.12"), 80));
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let (out, log) = replay_with(&t, engine, dir.path(), "[contents]\nmax_rate = 1500\n");
        let orig = std::fs::read(out.join("contents_10.0.7.11-40004-10.0.7.12-80_orig.dat"));
        let mut want = vec![b'a'; 1000];
        want.extend_from_slice(&[b'b'; 500]);
        let orig = orig.unwrap();
        assert!(orig == want, "{engine}: the first second's 1500 bytes");
        assert!(
            log.contains("3500 bytes not delivered by the datapath"),
            "{engine}: {log}"
        );
    }
}
