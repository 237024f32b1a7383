//! `read` of a trace captured with a short snap length (headers only), both engines: every
//! TCP payload byte the peer acknowledged and the capture cut is a content gap, as Zeek's
//! reassembler counts it (missed_bytes, `G`/`g`); the same conversation captured whole has
//! none. The shape of Zeek's `core.tcp.rxmit-history` trace: request, a window of responses,
//! duplicate ACKs, a retransmission, an idle minute and an RST.

use crate::cli::Engine;
use crate::commands::read::read_with;
use crate::config::Config;
use crate::tests::fixtures::{replay_args, tcp_frame};
use std::io::Write;
use std::path::Path;

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const A: [u8; 4] = [10, 0, 88, 85];
const B: [u8; 4] = [192, 168, 0, 27];

fn tcp(from_a: bool, flags: u8, seq: u32, ack: u32, len: usize) -> Vec<u8> {
    let ends = if from_a {
        (A, 50368, B, 80)
    } else {
        (B, 80, A, 50368)
    };
    tcp_frame(ends, seq, ack, flags, &vec![b'x'; len])
}

/// A pcap of `pkts` (microseconds, frame) cut to `snap` bytes, each record with the frame's
/// whole length as its wire length.
fn write_trace(path: &Path, snap: usize, pkts: &[(u64, Vec<u8>)]) {
    let mut f = std::fs::File::create(path).unwrap();
    for v in [0xa1b2c3d4u32, 0x0004_0002, 0, 0, snap as u32, 1] {
        f.write_all(&v.to_le_bytes()).unwrap();
    }
    for (us, frame) in pkts {
        let cap = &frame[..frame.len().min(snap)];
        let t = 1_285_862_902 * 1_000_000 + us;
        for v in [
            (t / 1_000_000) as u32,
            (t % 1_000_000) as u32,
            cap.len() as u32,
            frame.len() as u32,
        ] {
            f.write_all(&v.to_le_bytes()).unwrap();
        }
        f.write_all(cap).unwrap();
    }
}

fn conversation() -> Vec<(u64, Vec<u8>)> {
    let (c, s) = (1001u32, 5001u32);
    let (req, seg) = (474u32, 1446u32);
    let mut p = vec![
        (0, tcp(true, SYN, c - 1, 0, 0)),
        (73, tcp(false, SYN | ACK, s - 1, c, 0)),
        (185_458, tcp(true, ACK, c, s, 0)),
        (201_459, tcp(true, ACK | PSH, c, s, req as usize)),
        (201_506, tcp(false, ACK, s, c + req, 0)),
    ];
    for i in 0..3 {
        p.push((
            201_842 + i as u64,
            tcp(false, ACK, s + i * seg, c + req, seg as usize),
        ));
    }
    for t in [312_985, 341_921, 379_423] {
        p.push((t, tcp(true, ACK, c + req, s + seg, 0)));
    }
    p.push((380_000, tcp(false, ACK, s + seg, c + req, seg as usize)));
    p.push((827_003, tcp(true, ACK, c + req, s + 3 * seg, 0)));
    p.push((60_991_770, tcp(true, ACK | RST, c + req, s + 3 * seg, 0)));
    p
}

/// (missed_bytes, history, conn_state) of the one record.
fn replay(engine: Engine, snap: usize) -> (String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pcap");
    write_trace(&trace, snap, &conversation());
    // The transport checksums are not filled in (as in a capture with offloading).
    let args = replay_args(&trace, engine, dir.path(), &["--ignore-checksums"]);
    read_with(args, Config::default(), Vec::new()).unwrap();
    let text = std::fs::read_to_string(dir.path().join("conn.log")).unwrap();
    let recs: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(recs.len(), 1, "{text}");
    let r = &recs[0];
    (r[14].to_string(), r[15].to_string(), r[11].to_string())
}

fn engines() -> Vec<Engine> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        vec![Engine::Host, Engine::Kernel]
    } else {
        vec![Engine::Host]
    }
}

#[test]
fn payloads_cut_by_the_snap_length_are_gaps_both_engines() {
    for engine in engines() {
        let (missed, history, state) = replay(engine, 54);
        assert_eq!(history, "ShADaGdgtR", "{engine:?}");
        assert_eq!(missed, (474 + 3 * 1446).to_string(), "{engine:?}");
        assert_eq!(state, "RSTO");
        // Captured whole: the same packets, no gap.
        let (missed, history, _) = replay(engine, 65535);
        assert_eq!((&*missed, &*history), ("0", "ShADadtR"), "{engine:?}");
    }
}
