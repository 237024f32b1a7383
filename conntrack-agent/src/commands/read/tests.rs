use super::*;
use crate::capture::checksum::tests::fix_ipv4_header;
use crate::capture::link::LINKTYPE_ETHERNET;
use crate::capture::pcap::tests::write_pcap;
use crate::tests::fixtures::{replay_args, tcp_frame, udp_frame};

/// [`udp_frame`] with its ends as separate arguments.
pub(super) fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    udp_frame((src, sport, dst, dport), payload)
}

fn tcp_syn(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut ip = vec![0x45, 0, 0, 40, 0, 2, 0, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    ip.extend_from_slice(&sport.to_be_bytes());
    ip.extend_from_slice(&dport.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 100, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    fix_ipv4_header(&mut ip);
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f
}

fn args(trace: &std::path::Path, dir: &std::path::Path) -> ReadArgs {
    let args = ["--likely-server-ports", "53/udp", "--ignore-checksums"];
    replay_args(trace, Engine::Host, dir, &args)
}

fn records(dir: &std::path::Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.join("conn.log"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn replay_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pcap");
    let a = [10, 0, 0, 1];
    let b = [8, 8, 8, 8];
    let mut bad = udp([10, 0, 0, 9], b, 999, 53, b"zz");
    bad[14 + 10] ^= 0xff; // IPv4 header checksum
    write_pcap(
        &trace,
        LINKTYPE_ETHERNET,
        false,
        &[
            // reply first: 53/udp is a likely server port -> flipped, history ^d... then D
            (100, 0, udp(b, a, 53, 5555, b"answer")),
            (100, 500_000, udp(a, b, 5555, 53, b"q")),
            (101, 0, bad),
            (102, 0, tcp_syn(a, b, 40000, 80)),
            // same UDP flow after the 1 min inactivity timeout: a new record
            (300, 0, udp(a, b, 5555, 53, b"again")),
        ],
    );
    let mut ar = args(&trace, dir.path());
    ar.ignore_checksums = false;
    // the SYN has no valid TCP checksum: its source is exempted
    ar.ignore_checksums_net = vec!["10.0.0.1/32".into()];
    read(ar, Config::default()).unwrap();
    let r = records(dir.path());
    assert_eq!(r.len(), 3, "{r:?}");
    // removal order: UDP by inactivity at 300 s, TCP attempt at 107 s before it
    let tcp = r.iter().find(|x| x[6] == "tcp").unwrap();
    assert_eq!(tcp[11], "S0");
    assert_eq!(tcp[15], "S");
    let udp1 = r
        .iter()
        .find(|x| x[6] == "udp" && x[0] == "100.000000")
        .unwrap();
    assert_eq!(&udp1[2..6], &["10.0.0.1", "5555", "8.8.8.8", "53"]);
    assert_eq!(udp1[15], "^dD");
    assert_eq!(udp1[11], "SF");
    assert_eq!(udp1[12], "T");
    assert_eq!(udp1[13], "F");
    assert_eq!(udp1[8], "0.500000");
    let udp2 = r
        .iter()
        .find(|x| x[6] == "udp" && x[0] == "300.000000")
        .unwrap();
    assert_eq!(udp2[11], "S0");
    assert_eq!(udp2[8], "-");
    assert!(!r.iter().any(|x| x[2] == "10.0.0.9"));
}

#[test]
fn fragments_are_reassembled() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("frag.pcap");
    let payload: Vec<u8> = (0..100u8).collect();
    let whole = udp([10, 0, 0, 1], [10, 0, 0, 2], 7000, 7001, &payload);
    let ip = &whole[14..];
    // split the 108-byte UDP datagram into 56 + 52 bytes of IP payload
    let frag = |off: usize, len: usize, more: bool| {
        let mut h = ip[..20].to_vec();
        h[2..4].copy_from_slice(&((20 + len) as u16).to_be_bytes());
        let fl = (off / 8) as u16 | if more { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&fl.to_be_bytes());
        h.extend_from_slice(&ip[20 + off..20 + off + len]);
        fix_ipv4_header(&mut h);
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&h);
        f
    };
    write_pcap(
        &trace,
        LINKTYPE_ETHERNET,
        false,
        &[(10, 0, frag(56, 52, false)), (10, 1, frag(0, 56, true))],
    );
    let mut ar = args(&trace, dir.path());
    ar.ignore_checksums = false;
    read(ar, Config::default()).unwrap();
    let r = records(dir.path());
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0][0], "10.000001");
    assert_eq!(r[0][15], "D");
    assert_eq!(&r[0][16..18], &["1", "128"]);
}

/// Zeek keeps an incompletely captured first fragment and processes it on its own (only
/// later fragments of such a datagram are dropped): the connection is logged.
#[test]
fn incompletely_captured_first_fragment_is_processed_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pcap");
    // A 1,000-byte UDP datagram's first fragment (offset 0, MF) of 20 + 8 + 192 bytes, of
    // which the capture kept the first 40 bytes of IP.
    let mut frame = udp([10, 0, 0, 1], [10, 0, 0, 2], 5000, 53, &[7u8; 192]);
    let ip = &mut frame[14..];
    ip[6] = 0x20; // MF, offset 0
    ip[24..26].copy_from_slice(&1008u16.to_be_bytes()); // the whole datagram's UDP length
    fix_ipv4_header(ip);
    frame.truncate(14 + 40);
    write_pcap(&trace, LINKTYPE_ETHERNET, false, &[(10, 0, frame)]);
    // The record's original length: the whole frame that was on the wire.
    let mut bytes = std::fs::read(&trace).unwrap();
    bytes[24 + 12..24 + 16].copy_from_slice(&(14u32 + 220).to_le_bytes());
    std::fs::write(&trace, bytes).unwrap();
    read(args(&trace, dir.path()), Config::default()).unwrap();
    let r = records(dir.path());
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (r[0][2].as_str(), r[0][4].as_str()),
        ("10.0.0.1", "10.0.0.2")
    );
    assert_eq!(&r[0][16..18], &["1", "220"], "one packet of its IP length");
}

#[test]
fn random_frames_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let dir = tempfile::tempdir().unwrap();
    let base = udp([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"payload!");
    for lt in [
        LINKTYPE_ETHERNET,
        crate::capture::link::LINKTYPE_RAW,
        0,
        113,
        276,
    ] {
        let mut pkts = Vec::new();
        for i in 0..400u32 {
            let mut f = if i % 2 == 0 {
                base.clone()
            } else {
                (0..rng.random_range(0..120))
                    .map(|_| rng.random::<u8>())
                    .collect()
            };
            // flip a few bytes, keep the version nibble plausible sometimes
            for _ in 0..rng.random_range(0..6) {
                if !f.is_empty() {
                    let k = rng.random_range(0..f.len());
                    f[k] = rng.random();
                }
            }
            if i % 3 == 0 && f.len() > 14 {
                f[14] = 0x45;
            }
            pkts.push((i, 0, f));
        }
        let trace = dir.path().join(format!("r{lt}.pcap"));
        write_pcap(&trace, lt, false, &pkts);
        let mut ar = args(&trace, dir.path());
        ar.ignore_checksums = lt % 2 == 0;
        read(ar, Config::default()).unwrap();
    }
}

#[test]
fn bad_config_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pcap");
    write_pcap(&trace, LINKTYPE_ETHERNET, false, &[]);
    let cfg = dir.path().join("conntrack.toml");
    std::fs::write(&cfg, "[alerts]\nqueue_capacity = 8\nspool = \"/tmp/x\"\n").unwrap();
    // The file is read with the command line, before the command runs.
    let argv = ["conntrack-agent", "read", "--config"].map(std::ffi::OsString::from);
    let mut argv = argv.to_vec();
    argv.extend([cfg.clone().into_os_string(), trace.clone().into_os_string()]);
    let e = crate::cli::parse(argv).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:3:1: ", cfg.display())), "{e}");
    assert!(e.contains("unknown field `spool`"), "{e}");
    assert!(!dir.path().join("conn.log").exists());
}

/// Asks `stop` for `signals` stop signals when the `at`-th connection starts, as a
/// signal arriving then would.
struct SignalAt {
    stop: Stop,
    at: usize,
    seen: usize,
    signals: &'static [i32],
}

impl Capability for SignalAt {
    fn on_event(&mut self, _conn: &mut ConnHandle<'_>, event: &ConnEvent) {
        if matches!(event, ConnEvent::New) {
            self.seen += 1;
            if self.seen == self.at {
                self.signals.iter().for_each(|&s| self.stop.request(s));
            }
        }
    }
}

/// 50 connection attempts (SYNs to distinct ports), open until the end of input.
fn syn_trace(path: &std::path::Path) {
    let pkts: Vec<_> = (0..50u16)
        .map(|i| {
            (
                100 + u32::from(i),
                0,
                tcp_syn([10, 0, 0, 1], [10, 0, 0, 2], 40000 + i, 80),
            )
        })
        .collect();
    write_pcap(path, LINKTYPE_ETHERNET, false, &pkts);
}

fn replay_stopped(signals: &'static [i32]) -> (tempfile::TempDir, anyhow::Error) {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("syn.pcap");
    syn_trace(&trace);
    let stop = Stop::default();
    let at = SignalAt {
        stop: stop.clone(),
        at: 10,
        seen: 0,
        signals,
    };
    let e = replay(
        args(&trace, dir.path()),
        Config::default(),
        vec![Box::new(at)],
        &stop,
    )
    .unwrap_err();
    (dir, e)
}

#[test]
fn a_stop_signal_ends_the_input_and_drains() {
    let (dir, e) = replay_stopped(&[libc::SIGTERM]);
    assert_eq!(
        e.downcast_ref::<Interrupted>().map(|i| i.signal),
        Some(libc::SIGTERM)
    );
    let text = std::fs::read_to_string(dir.path().join("conn.log")).unwrap();
    assert!(text.lines().last().unwrap().starts_with("#close"), "{text}");
    // Stopped at the packet after the 10th connection's: the 10 open ones drained.
    let r = records(dir.path());
    assert_eq!(r.len(), 10, "{r:?}");
    let fields = text.lines().find(|l| l.starts_with("#fields")).unwrap();
    let width = fields.split('\t').count() - 1;
    assert!(r.iter().all(|x| x[11] == "S0" && x.len() == width), "{r:?}");
}

#[test]
fn a_second_stop_signal_leaves_whole_lines_without_close() {
    let (dir, e) = replay_stopped(&[libc::SIGINT, libc::SIGINT]);
    assert_eq!(
        e.downcast_ref::<Interrupted>().map(|i| i.signal),
        Some(libc::SIGINT)
    );
    let text = std::fs::read_to_string(dir.path().join("conn.log")).unwrap();
    assert!(text.ends_with('\n'), "{text}");
    assert!(!text.contains("#close"), "{text}");
    assert!(text.contains("#fields"), "{text}");
    // The drain stopped before its end (the whole drain logs 10), at a line's end.
    assert!(records(dir.path()).len() < 10, "{text}");
    let width = text
        .lines()
        .find(|l| l.starts_with("#fields"))
        .unwrap()
        .split('\t')
        .count()
        - 1;
    assert!(
        records(dir.path()).iter().all(|x| x.len() == width),
        "{text}"
    );
}

/// A damaged record ends the input as the file cut short there does (the open connections
/// are drained), and then fails, naming where.
#[test]
fn a_corrupt_record_drains_like_a_cut_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("syn.pcap");
    syn_trace(&trace);
    let bytes = std::fs::read(&trace).unwrap();
    // Records of 16 + 54 bytes after the 24-byte file header: the 31st at...
    let at = 24 + 30 * (16 + 54);
    let mut bad = bytes.clone();
    bad[at + 8..at + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    let bad_trace = dir.path().join("bad.pcap");
    std::fs::write(&bad_trace, bad).unwrap();
    let cut_trace = dir.path().join("cut.pcap");
    std::fs::write(&cut_trace, &bytes[..at]).unwrap();
    let (bad_dir, cut_dir) = (dir.path().join("bad"), dir.path().join("cut"));
    let e = read(args(&bad_trace, &bad_dir), Config::default()).unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains(&format!("byte offset {at}")), "{e}");
    assert!(e.contains("record 31"), "{e}");
    assert!(e.contains("captured length 2147483647"), "{e}");
    read(args(&cut_trace, &cut_dir), Config::default()).unwrap();
    let without_uid = |d: &std::path::Path| -> Vec<Vec<String>> {
        let mut r = records(d);
        r.iter_mut().for_each(|x| drop(x.remove(1)));
        r
    };
    let (b, c) = (without_uid(&bad_dir), without_uid(&cut_dir));
    assert_eq!(b.len(), 30);
    assert_eq!(b, c);
    let text = std::fs::read_to_string(bad_dir.join("conn.log")).unwrap();
    assert!(text.contains("#close"), "{text}");
}

#[test]
fn offload_hint_above_five_percent() {
    let mut st = ReadStats {
        packets: 100,
        bad_tcp_checksums: 5,
        ..ReadStats::default()
    };
    assert_eq!(offload_hint(&st), None, "5% is not more than 5%");
    st.bad_tcp_checksums = 6;
    let h = offload_hint(&st).unwrap();
    assert!(
        h.contains("invalid TCP checksums") && h.contains("--ignore-checksums"),
        "{h}"
    );
    st.bad_udp_checksums = 1;
    assert!(
        offload_hint(&st)
            .unwrap()
            .contains("invalid TCP and UDP checksums")
    );
    assert_eq!(offload_hint(&ReadStats::default()), None);
}

#[test]
fn garbage_trace_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("junk.pcap");
    std::fs::write(&trace, b"\x00\x01not a capture at all").unwrap();
    let e = read(args(&trace, dir.path()), Config::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("junk.pcap"), "{e}");
}

/// A connection ended by a new SYN on its ports (Zeek's connection reuse) is logged with its
/// own service, and the one that takes its place with the new one's: the host engine keeps
/// the service word in the entry the new connection reuses.
#[test]
fn a_reused_connection_keeps_its_service_apart_from_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pcap");
    let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let (c2s, s2c) = ((a, 40000, b, 80), (b, 80, a, 40000));
    let (syn, synack, ack, psh) = (0x02, 0x12, 0x10, 0x18);
    let exchange = |t: u32, isn: u32, client: &[u8], server: &[u8]| {
        let n = client.len() as u32;
        vec![
            (t, 0, tcp_frame(c2s, isn, 0, syn, b"")),
            (t, 1000, tcp_frame(s2c, 5000, isn + 1, synack, b"")),
            (t, 2000, tcp_frame(c2s, isn + 1, 5001, ack, b"")),
            (t, 3000, tcp_frame(c2s, isn + 1, 5001, psh, client)),
            (t, 4000, tcp_frame(s2c, 5001, isn + 1 + n, psh, server)),
        ]
    };
    let mut frames = exchange(
        100,
        100,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    );
    frames.extend(exchange(
        101,
        9000,
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
    ));
    write_pcap(&trace, LINKTYPE_ETHERNET, false, &frames);
    let ar = replay_args(
        &trace,
        Engine::Host,
        dir.path(),
        &[
            "--likely-server-ports",
            "80/tcp,22/tcp",
            "--ignore-checksums",
        ],
    );
    read(ar, Config::default()).unwrap();
    let mut r = records(dir.path());
    r.sort_by(|x, y| x[0].cmp(&y[0]));
    let services: Vec<&str> = r.iter().map(|x| x[7].as_str()).collect();
    assert_eq!(services, ["http", "ssh"], "{r:?}");
}
