//! Live tunnel decapsulation: a VXLAN overlay between two network namespaces, the agent on the
//! underlay veth with its default settings (Zeek's `Tunnel::max_depth`, 4). The overlay's TCP,
//! UDP and ICMP connections are logged with what was sent, each naming the outer VXLAN
//! connection(s) in `tunnel_parents`, and the outer connections are logged too. Needs root
//! (CAP_BPF, CAP_NET_ADMIN); skipped otherwise.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use conntrack_tests::connlog::{ConnLog, num};
use conntrack_tests::is_root;
use conntrack_tests::netns::{LiveAgent, NetnsPair};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, sendto, socket,
};

const SUBNET: u8 = 121;
const TCP_PORT: u16 = 5401;
const UDP_PORT: u16 = 5402;

fn ip(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip -n {ns} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `vx0` (VNI 42, UDP 4789) in each namespace over the veth pair, with 192.168.<SUBNET>.1 and .2.
fn overlay(pair: &NetnsPair) -> (Ipv4Addr, Ipv4Addr) {
    for (ns, dev, local, remote, addr) in [
        (&pair.a, &pair.veth_a, &pair.a_v4, &pair.b_v4, 1),
        (&pair.b, &pair.veth_b, &pair.b_v4, &pair.a_v4, 2),
    ] {
        ip(
            ns,
            &[
                "link", "add", "vx0", "type", "vxlan", "id", "42", "remote", remote, "local",
                local, "dstport", "4789", "dev", dev,
            ],
        );
        ip(
            ns,
            &[
                "addr",
                "add",
                &format!("192.168.{SUBNET}.{addr}/24"),
                "dev",
                "vx0",
            ],
        );
        ip(ns, &["link", "set", "vx0", "up"]);
    }
    (
        Ipv4Addr::new(192, 168, SUBNET, 1),
        Ipv4Addr::new(192, 168, SUBNET, 2),
    )
}

/// An ICMP echo request with `seq`, its checksum set.
fn echo_request(seq: u16) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = 8;
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..].copy_from_slice(b"conntrac");
    let mut sum = 0u32;
    for w in p.chunks(2) {
        sum += u16::from_be_bytes([w[0], w[1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p
}

#[test]
fn vxlan_overlay_connections_are_logged_with_their_tunnel() {
    if !is_root() {
        eprintln!("skipping live test: needs root (CAP_BPF and CAP_NET_ADMIN)");
        return;
    }
    const TCP_BYTES: usize = 300_000;
    const DATAGRAMS: u64 = 20;
    const DATAGRAM: usize = 100;
    const ECHOES: u16 = 3;
    let pair = NetnsPair::named("ctvx121", SUBNET).expect("creating network namespaces");
    let (a_in, b_in) = overlay(&pair);
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--iface",
        pair.veth_a.as_str(),
        "--log-dir",
        dir.path().to_str().unwrap(),
    ];
    let agent = LiveAgent::start(&pair.a, &conntrack_tests::agent_path(), &args).unwrap();
    assert!(
        conntrack_tests::netns::wait_for_file(
            &dir.path().join("conn.log"),
            Duration::from_secs(20)
        ),
        "the agent did not open conn.log"
    );

    // TCP: a bulk transfer from a to b inside the overlay.
    let srv = SocketAddr::new(b_in.into(), TCP_PORT);
    let server = NetnsPair::run_in(&pair.b, move || {
        let l = TcpListener::bind(srv).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 65536];
        loop {
            match s.read(&mut buf).unwrap() {
                0 => break,
                n => got += n,
            }
        }
        got
    });
    std::thread::sleep(Duration::from_millis(300));
    let client = NetnsPair::run_in(&pair.a, move || {
        let mut c = TcpStream::connect_timeout(&srv, Duration::from_secs(5)).unwrap();
        c.write_all(&vec![b'x'; TCP_BYTES]).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
    });
    client.join().unwrap();
    assert_eq!(
        server.join().unwrap(),
        TCP_BYTES,
        "the server got every byte"
    );

    // UDP: datagrams to a bound socket in b.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let udp_dst = SocketAddr::new(b_in.into(), UDP_PORT);
    let receiver = NetnsPair::run_in(&pair.b, move || {
        let s = UdpSocket::bind(udp_dst).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        ready_tx.send(()).unwrap();
        let mut n = 0u64;
        let mut buf = [0u8; 2048];
        while n < DATAGRAMS && s.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    });
    ready_rx.recv().unwrap();
    NetnsPair::run_in(&pair.a, move || {
        let s = UdpSocket::bind(SocketAddr::new(a_in.into(), 0)).unwrap();
        for _ in 0..DATAGRAMS {
            s.send_to(&[0x5a; DATAGRAM], udp_dst).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    })
    .join()
    .unwrap();
    assert_eq!(receiver.join().unwrap(), DATAGRAMS, "b got every datagram");

    // ICMP: echo requests from a raw socket (b's stack answers them).
    NetnsPair::run_in(&pair.a, move || {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::empty(),
            SockProtocol::Icmp,
        )
        .unwrap();
        let to = SockaddrIn::from(SocketAddrV4::new(b_in, 0));
        for seq in 0..ECHOES {
            use std::os::fd::AsRawFd;
            sendto(fd.as_raw_fd(), &echo_request(seq), &to, MsgFlags::empty()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let status = agent.stop().expect("stopping the agent");
    assert!(status.success(), "agent exited with {status}");
    drop(pair);
    let log = ConnLog::read(&dir.path().join("conn.log")).unwrap();
    assert!(log.closed, "conn.log has no #close line after shutdown");

    // The outer VXLAN connections (the kernel picks a source port per inner flow).
    let outer: Vec<_> = log.by_resp("udp", 4789);
    assert!(
        !outer.is_empty(),
        "no outer VXLAN connection: {:#?}",
        log.records
    );
    let outer_uids: Vec<&str> = outer.iter().map(|r| r["uid"].as_str()).collect();
    for r in &outer {
        assert_eq!(r["tunnel_parents"], "-", "{r:#?}");
    }
    let parents_ok = |r: &conntrack_tests::connlog::Record| {
        let p = &r["tunnel_parents"];
        p != "-" && p.split(',').all(|u| outer_uids.contains(&u))
    };

    let tcp = log.one("tcp", TCP_PORT);
    assert_eq!(tcp["id.orig_h"], a_in.to_string(), "{tcp:#?}");
    assert_eq!(num(tcp, "orig_bytes"), TCP_BYTES as u64, "{tcp:#?}");
    assert_eq!(tcp["conn_state"], "SF", "{tcp:#?}");
    assert!(parents_ok(tcp), "{tcp:#?} not in {outer_uids:?}");

    let udp = log.one("udp", UDP_PORT);
    assert_eq!(num(udp, "orig_pkts"), DATAGRAMS, "{udp:#?}");
    assert_eq!(
        num(udp, "orig_bytes"),
        DATAGRAMS * DATAGRAM as u64,
        "{udp:#?}"
    );
    assert!(parents_ok(udp), "{udp:#?} not in {outer_uids:?}");

    let icmp: Vec<_> = log
        .records
        .iter()
        .filter(|r| r["proto"] == "icmp" && r["id.resp_h"] == b_in.to_string())
        .collect();
    assert_eq!(icmp.len(), 1, "{icmp:#?}");
    assert_eq!(num(icmp[0], "orig_pkts"), ECHOES as u64, "{:#?}", icmp[0]);
    assert_eq!(num(icmp[0], "resp_pkts"), ECHOES as u64, "{:#?}", icmp[0]);
    assert!(parents_ok(icmp[0]), "{:#?} not in {outer_uids:?}", icmp[0]);

    // tunnel.log: each outer connection that carried an inner one was discovered.
    let tunnels = std::fs::read_to_string(dir.path().join("tunnel.log")).unwrap();
    assert!(
        tunnels
            .lines()
            .any(|l| l.contains("Tunnel::VXLAN") && l.contains("Tunnel::DISCOVER")),
        "{tunnels}"
    );
}

/// Both engines decapsulate every tunnel trace of the conformance corpus alike: the same
/// conn.log (parents compared by what they name) and the same tunnel.log, at Zeek's default
/// depth and deeper, and with every connection's payload extracted (the kernel's contents
/// stage, which an outer tunnel connection's packets then take, must still open them).
#[test]
fn kernel_and_host_engines_decapsulate_alike() {
    if !is_root() {
        eprintln!("skipping: the kernel engine needs root");
        return;
    }
    let Some(conf) = conntrack_tests::conformance_dir() else {
        eprintln!("skipping: ../shared/conformance not found");
        return;
    };
    let cases = std::fs::read_to_string(conf.join("cases-tunnels.jsonl")).unwrap_or_default();
    let mut runs: Vec<(String, Vec<String>)> = Vec::new();
    for line in cases.lines().filter(|l| !l.trim().is_empty()) {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let replay = &case["replay"];
        let ports: Vec<&str> = replay["likely_server_ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str())
            .collect();
        let mut args = vec![format!("--likely-server-ports={}", ports.join(","))];
        if replay["ignore_checksums"].as_bool() == Some(true) {
            args.push("--ignore-checksums".into());
        }
        let run = (case["trace"].as_str().unwrap().to_string(), args);
        if !runs.contains(&run) {
            runs.push(run);
        }
    }
    assert!(!runs.is_empty(), "no tunnel cases in {}", conf.display());
    let mut differ = Vec::new();
    for (depth, extract) in [("2", false), ("4", false), ("4", true)] {
        for (trace, args) in &runs {
            let mut out = Vec::new();
            for engine in ["host", "kernel"] {
                let dir = tempfile::tempdir().unwrap();
                let mut cmd = Command::new(conntrack_tests::agent_path());
                cmd.arg("read")
                    .arg(conf.join(trace))
                    .args(["--engine", engine, "--tunnel-max-depth", depth, "--log-dir"])
                    .arg(dir.path())
                    .args(args);
                if extract {
                    cmd.arg("--extract-all");
                }
                let res = cmd.output().unwrap();
                assert!(
                    res.status.success(),
                    "{engine}: {trace}: {}",
                    String::from_utf8_lossy(&res.stderr)
                );
                // Extracted bytes too, where both engines can see them all (a replayed frame
                // over 3584 bytes reaches the kernel clipped; a frame the capture cut is not
                // extracted the same way).
                let contents = if extract && whole_small_frames(&conf.join(trace)) {
                    extracted(&dir.path().join("extract"))
                } else {
                    Vec::new()
                };
                out.push((
                    conntrack_tests::records_without_uid(dir.path()),
                    conntrack_tests::tunnels_without_uid(dir.path()),
                    contents,
                ));
            }
            if out[0] != out[1] {
                differ.push(format!("depth {depth}, extraction {extract}: {trace}"));
            }
        }
    }
    assert!(differ.is_empty(), "the engines differ: {differ:#?}");
}

/// Whether every frame of `trace` (a pcap file) was captured whole and is at most 3584 bytes,
/// what the kernel engine's replay hands the program unclipped.
fn whole_small_frames(trace: &Path) -> bool {
    let Ok(file) = std::fs::File::open(trace) else {
        return false;
    };
    let Ok(mut reader) = pcap_file::pcap::PcapReader::new(file) else {
        return false; // pcapng: not compared
    };
    while let Some(pkt) = reader.next_packet() {
        match pkt {
            Ok(p) if p.orig_len as usize == p.data.len() && p.data.len() <= 3584 => {}
            _ => return false,
        }
    }
    true
}

/// The files in an extraction directory, by name, with their bytes.
fn extracted(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap_or_default())
        })
        .collect();
    files.sort();
    files
}
