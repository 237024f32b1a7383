//! Regression tests for what `conntrack-agent fuzz-kernel` found: the kernel program copies only
//! the first `MAX_HEADER_BYTES` (256) bytes of a frame, and a TCP header that starts near the
//! end of that copy (here behind a 184-byte IPv6 routing header) was a parse error in the
//! kernel (no connection at all) while the host engine tracked it. Both engines must log the
//! same connection, with the history and byte counts of what was sent.

use std::process::Command;

use conntrack_tests::connlog::{ConnLog, num};
use conntrack_tests::pcapgen::{ACK, FIN, PSH, SYN, Trace};
use conntrack_tests::{agent_path, is_root};

const CLIENT: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const SERVER: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// Ethernet + IPv6 + a 184-byte routing header (type 0, no segments left: the destination
/// stays) + TCP, so the TCP header starts at byte 238 of the frame. SYNs carry a window-scale
/// option, which then lies beyond byte 256. Checksums are left 0 (replayed with
/// --ignore-checksums).
fn frame(from_client: bool, flags: u8, seq: u32, ack: u32, payload: usize) -> Vec<u8> {
    let (src, dst, sp, dp) = if from_client {
        (CLIENT, SERVER, 40000u16, 8080u16)
    } else {
        (SERVER, CLIENT, 8080, 40000)
    };
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&sp.to_be_bytes());
    tcp.extend_from_slice(&dp.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    let opts: &[u8] = if flags & SYN != 0 { &[1, 3, 3, 7] } else { &[] };
    tcp.push((((20 + opts.len()) / 4) as u8) << 4);
    tcp.push(flags);
    tcp.extend_from_slice(&65535u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    tcp.extend_from_slice(opts);
    tcp.extend(std::iter::repeat_n(0x61u8, payload));

    let mut routing = vec![6, 22, 0, 0, 0, 0, 0, 0];
    routing.extend(std::iter::repeat_n(0u8, 22 * 8));
    let payload_len = routing.len() + tcp.len();

    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload_len as u16).to_be_bytes());
    f.extend_from_slice(&[43, 64]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&routing);
    assert_eq!(
        f.len(),
        238,
        "the TCP header must start within 20 bytes of byte 256"
    );
    f.extend_from_slice(&tcp);
    f
}

#[test]
fn tcp_header_at_the_end_of_the_kernel_copy_is_tracked_by_both_engines() {
    let (c, s) = (1000u32, 5000u32);
    let t0 = 1_700_000_000_000_000u64;
    let mut trace = Trace::default();
    let pkts = [
        frame(true, SYN, c, 0, 0),
        frame(false, SYN | ACK, s, c + 1, 0),
        frame(true, ACK, c + 1, s + 1, 0),
        frame(true, PSH | ACK, c + 1, s + 1, 100),
        frame(false, ACK, s + 1, c + 101, 0),
        frame(true, FIN | ACK, c + 101, s + 1, 0),
        frame(false, FIN | ACK, s + 1, c + 102, 0),
        frame(true, ACK, c + 102, s + 2, 0),
    ];
    for (i, p) in pkts.into_iter().enumerate() {
        trace.push(t0 + i as u64 * 1000, p);
    }
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("long-headers.pcap");
    trace.write(&pcap).unwrap();

    let engines: &[&str] = if is_root() {
        &["host", "kernel"]
    } else {
        &["host"]
    };
    for engine in engines {
        let out = dir.path().join(engine);
        let res = Command::new(agent_path())
            .arg("read")
            .arg(&pcap)
            .arg("--log-dir")
            .arg(&out)
            .args(["--engine", engine, "--ignore-checksums"])
            .output()
            .unwrap();
        assert!(
            res.status.success(),
            "{engine}: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        let log = ConnLog::read(&out.join("conn.log")).unwrap();
        assert_eq!(log.records.len(), 1, "{engine} engine: {:?}", log.records);
        let r = &log.records[0];
        assert_eq!(
            (r["history"].as_str(), r["conn_state"].as_str()),
            ("ShADaFf", "SF"),
            "{engine} engine"
        );
        assert_eq!(
            (
                num(r, "orig_bytes"),
                num(r, "orig_pkts"),
                num(r, "resp_pkts")
            ),
            (100, 5, 3),
            "{engine} engine"
        );
    }
}
