//! Sensor mode (`run --sensor`): a SPAN port built from namespaces. Hosts `a` (10.96.<i>.1)
//! and `b` (10.96.<i>.2) talk over a veth pair; `tc ... action mirred egress mirror` copies both
//! directions of a's veth to a monitor veth whose peer, in a third namespace, is the sensor
//! interface. The agent runs there with the XDP program, so every packet it sees arrives at
//! ingress, whichever host sent it. conn.log must show each connection once, oriented by who
//! started it, with what the traffic generator knows it sent. Needs root; skipped otherwise.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;
use std::time::Duration;

use conntrack_tests::connlog::{ConnLog, Record, num};
use conntrack_tests::netns::{LiveAgent, NetnsPair, wait_for_file};
use conntrack_tests::{agent_path, is_root};
use nix::libc;
use nix::sys::socket::{
    AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrLike, bind, recv,
    setsockopt, socket, sockopt,
};

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The three namespaces and the mirror; removed on drop (also when the test panics).
struct Span {
    a: String,
    b: String,
    sensor_ns: String,
    sensor: String,
    a_ip: String,
    b_ip: String,
}

impl Span {
    /// Set-up `index` (10.96.<index>.0/24). `wire_frames`: the monitor port hands the sensor
    /// wire-sized frames, as a physical one does (veths otherwise pass GSO super-packets, which
    /// generic XDP would see as one packet each).
    fn new(index: u8, wire_frames: bool) -> Span {
        let tag = format!("ctxdp96{index}");
        let span = Span {
            a: format!("{tag}-a"),
            b: format!("{tag}-b"),
            sensor_ns: format!("{tag}-s"),
            sensor: format!("{tag}s"),
            a_ip: format!("10.96.{index}.1"),
            b_ip: format!("10.96.{index}.2"),
        };
        span.remove();
        let (veth_a, veth_b, monitor) = (format!("{tag}a"), format!("{tag}b"), format!("{tag}m"));
        for ns in [&span.a, &span.b, &span.sensor_ns] {
            run("ip", &["netns", "add", ns]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        run(
            "ip",
            &[
                "link", "add", &veth_a, "netns", &span.a, "type", "veth", "peer", "name", &veth_b,
                "netns", &span.b,
            ],
        );
        // The monitor port: `monitor` in a (the mirror's target), its peer the sensor.
        run(
            "ip",
            &[
                "link",
                "add",
                &monitor,
                "netns",
                &span.a,
                "type",
                "veth",
                "peer",
                "name",
                &span.sensor,
                "netns",
                &span.sensor_ns,
            ],
        );
        for (ns, dev, ip) in [
            (&span.a, &veth_a, &span.a_ip),
            (&span.b, &veth_b, &span.b_ip),
        ] {
            run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev],
            );
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        if wire_frames {
            // A packet of more than one segment is segmented before the monitor port sends it.
            run(
                "ip",
                &["-n", &span.a, "link", "set", &monitor, "gso_max_segs", "1"],
            );
        }
        run("ip", &["-n", &span.a, "link", "set", &monitor, "up"]);
        run(
            "ip",
            &["-n", &span.sensor_ns, "link", "set", &span.sensor, "up"],
        );
        // No IPv6 on the test links: router/neighbour solicitations would add connections.
        for (ns, dev) in [
            (&span.a, &veth_a),
            (&span.b, &veth_b),
            (&span.a, &monitor),
            (&span.sensor_ns, &span.sensor),
        ] {
            // /proc/sys/net is the opening thread's namespace's.
            let knob = format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6");
            NetnsPair::run_in(ns, move || std::fs::write(&knob, "1"))
                .join()
                .unwrap()
                .expect("disabling IPv6 on a test link");
        }
        // The SPAN session: both directions of a's port, copied to the monitor port (u32 with
        // an empty match: matchall is not built into every kernel).
        run(
            "tc",
            &["-n", &span.a, "qdisc", "add", "dev", &veth_a, "clsact"],
        );
        for dir in ["ingress", "egress"] {
            run(
                "tc",
                &[
                    "-n", &span.a, "filter", "add", "dev", &veth_a, dir, "protocol", "all", "u32",
                    "match", "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev",
                    &monitor,
                ],
            );
        }
        span
    }

    fn remove(&self) {
        for ns in [&self.a, &self.b, &self.sensor_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }

    /// A packet socket in the sensor's namespace: it sees what the sensor's stack receives
    /// after the XDP program (XDP_PASS), and nothing that XDP dropped.
    fn sensor_tap(&self) -> OwnedFd {
        let dev = std::ffi::CString::new(self.sensor.as_str()).unwrap();
        NetnsPair::run_in(&self.sensor_ns, move || {
            let fd = socket(
                AddressFamily::Packet,
                SockType::Raw,
                SockFlag::SOCK_NONBLOCK,
                SockProtocol::EthAll,
            )
            .expect("AF_PACKET socket");
            // Room for the whole scenario (a few hundred frames), so the count is not cut
            // short by a full buffer.
            let _ = setsockopt(&fd, sockopt::RcvBufForce, &(16 << 20));
            // Bound to the sensor interface: the metrics scrapes on loopback do not count.
            // SAFETY: a valid C string; if_nametoindex only reads it.
            let ifindex = unsafe { libc::if_nametoindex(dev.as_ptr()) };
            assert_ne!(ifindex, 0, "sensor interface not found");
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: a complete sockaddr_ll of its own size.
            let addr = unsafe {
                LinkAddr::from_raw(
                    (&raw const sll).cast(),
                    Some(size_of::<libc::sockaddr_ll>() as u32),
                )
            }
            .expect("sockaddr_ll");
            bind(fd.as_raw_fd(), &addr).expect("binding the packet socket");
            fd
        })
        .join()
        .unwrap()
    }
}

/// Where the agent serves metrics, on the sensor namespace's own loopback.
const METRICS: &str = "127.0.0.1:9796";

/// GET /metrics from inside namespace `ns`.
fn scrape(ns: &str) -> String {
    NetnsPair::run_in(ns, || {
        let mut s = TcpStream::connect_timeout(&METRICS.parse().unwrap(), Duration::from_secs(5))
            .expect("connecting to the metrics endpoint");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .join()
    .unwrap()
}

/// The value of sample `name` (labels included, as exposed); 0 when absent.
fn value(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Frames waiting on packet socket `fd`.
fn frames_received(fd: &OwnedFd) -> u64 {
    let mut buf = [0u8; 65536];
    let mut n = 0;
    while recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).is_ok() {
        n += 1;
    }
    n
}

impl Drop for Span {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A TCP transfer: the client in `client_ns` sends `up` bytes to `srv` (server in `server_ns`),
/// which answers `down` bytes; both close.
fn tcp(client_ns: &str, server_ns: &str, srv: SocketAddr, up: usize, down: usize) {
    let server = NetnsPair::run_in(server_ns, move || {
        let l = TcpListener::bind(srv).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&vec![b'r'; down]).unwrap();
        got.len()
    });
    std::thread::sleep(Duration::from_millis(300));
    let client = NetnsPair::run_in(client_ns, move || {
        let mut c = TcpStream::connect_timeout(&srv, Duration::from_secs(5)).unwrap();
        // The agent turns extraction on when it handles the establishment (it polls every
        // 20 ms): bytes sent before would be missed.
        std::thread::sleep(Duration::from_millis(200));
        c.write_all(&vec![b'q'; up]).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        back.len()
    });
    assert_eq!(client.join().unwrap(), down);
    assert_eq!(server.join().unwrap(), up);
}

/// `n` request/reply exchanges of UDP datagrams (`req` bytes out, `resp` bytes back), each
/// waited for, so the generator knows every packet was delivered.
fn udp(client_ns: &str, server_ns: &str, srv: SocketAddr, n: usize, req: usize, resp: usize) {
    let server = NetnsPair::run_in(server_ns, move || {
        let s = UdpSocket::bind(srv).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 2048];
        for i in 0..n {
            let (len, from) = s.recv_from(&mut buf).unwrap();
            assert_eq!(len, req);
            if i == 0 {
                // The monitor port's copy of a request that arrived at a's port waits in the
                // backlog of the CPU that received it (a veth without NAPI, as generic XDP has
                // it, queues per CPU), while this reply's copy is queued on our CPU: answered at
                // once, the reply can reach the sensor first, and the sensor would rightly log
                // a's port as the originator. A NIC's queue keeps the order; here, wait.
                std::thread::sleep(Duration::from_millis(20));
            }
            s.send_to(&vec![b'u'; resp], from).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let client = NetnsPair::run_in(client_ns, move || {
        let c = UdpSocket::bind("0.0.0.0:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 2048];
        for _ in 0..n {
            c.send_to(&vec![b'd'; req], srv).unwrap();
            assert_eq!(c.recv(&mut buf).unwrap(), resp);
        }
    });
    client.join().unwrap();
    server.join().unwrap();
}

fn check_orientation(r: &Record, orig: &str, resp: &str) {
    assert_eq!(r["id.orig_h"], orig, "{r:#?}");
    assert_eq!(r["id.resp_h"], resp, "{r:#?}");
}

fn check_tcp(r: &Record, up: u64, down: u64) {
    assert_eq!(r["conn_state"], "SF", "{r:#?}");
    assert_eq!(num(r, "orig_bytes"), up, "{r:#?}");
    assert_eq!(num(r, "resp_bytes"), down, "{r:#?}");
    for letter in ['S', 'h', 'D', 'F', 'f'] {
        assert!(
            r["history"].contains(letter),
            "history lacks {letter}: {r:#?}"
        );
    }
    // Every segment carries 40 bytes of headers and at most an MSS (1460) of payload.
    for (pkts, ip_bytes, bytes) in [
        ("orig_pkts", "orig_ip_bytes", up),
        ("resp_pkts", "resp_ip_bytes", down),
    ] {
        let p = num(r, pkts);
        assert!(
            p >= bytes / 1460,
            "{pkts} too low for {bytes} bytes: {r:#?}"
        );
        assert!(num(r, ip_bytes) >= bytes + 40 * p, "{r:#?}");
    }
}

fn check_udp(r: &Record, n: u64, req: u64, resp: u64) {
    assert_eq!(r["conn_state"], "SF", "{r:#?}");
    assert_eq!(num(r, "orig_pkts"), n, "{r:#?}");
    assert_eq!(num(r, "resp_pkts"), n, "{r:#?}");
    assert_eq!(num(r, "orig_bytes"), n * req, "{r:#?}");
    assert_eq!(num(r, "resp_bytes"), n * resp, "{r:#?}");
    // IP bytes: 20 (IPv4) + 8 (UDP) per datagram.
    assert_eq!(num(r, "orig_ip_bytes"), n * (28 + req), "{r:#?}");
    assert_eq!(num(r, "resp_ip_bytes"), n * (28 + resp), "{r:#?}");
}

/// Runs the SPAN scenario with the agent in sensor mode (plus `extra` options); returns
/// conn.log and the frames the sensor's own stack received.
fn scenario(index: u8, extra: &[&str]) -> Option<(ConnLog, u64)> {
    if !is_root() {
        eprintln!("skipping sensor test: needs root (CAP_BPF and CAP_NET_ADMIN)");
        return None;
    }
    let span = Span::new(index, extra.contains(&"generic"));
    let dir = tempfile::tempdir().unwrap();
    let extract = dir.path().join("extract");
    let mut args = vec![
        "--iface",
        &span.sensor,
        "--sensor",
        "--log-dir",
        dir.path().to_str().unwrap(),
        "--metrics-addr",
        METRICS,
        "--extract-all",
        "--extract-dir",
        extract.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let agent =
        LiveAgent::start(&span.sensor_ns, &agent_path(), &args).expect("starting the agent");
    assert!(
        wait_for_file(&dir.path().join("conn.log"), Duration::from_secs(20)),
        "the agent did not open conn.log within 20 s"
    );
    let tap = span.sensor_tap();
    let sock = |ip: &str, port: u16| SocketAddr::new(ip.parse().unwrap(), port);
    // Started by a (leaves a's port at egress) and by b (arrives at a's port at ingress): on
    // the monitor port both are ingress, and only the engine can tell who started what.
    tcp(&span.a, &span.b, sock(&span.b_ip, 6001), 200_000, 30_000);
    tcp(&span.b, &span.a, sock(&span.a_ip, 6002), 50_000, 5_000);
    udp(&span.a, &span.b, sock(&span.b_ip, 6003), 10, 100, 300);
    udp(&span.b, &span.a, sock(&span.a_ip, 6004), 5, 200, 50);
    // Let the last packets cross the mirror, and the counters reach the metrics (copied once a
    // second), before the agent drains.
    std::thread::sleep(Duration::from_millis(1500));
    let metrics = scrape(&span.sensor_ns);
    let iface_packets = value(
        &metrics,
        &format!(
            "conntrack_kernel_iface_packets_total{{iface=\"{}\"}}",
            span.sensor
        ),
    );
    let status = agent.stop().expect("stopping the agent");
    assert!(status.success(), "agent exited with {status}");
    let rx = frames_received(&tap);
    let log = ConnLog::read(&dir.path().join("conn.log")).unwrap();
    assert!(log.closed, "conn.log has no #close line after shutdown");
    let (a, b) = (span.a_ip.clone(), span.b_ip.clone());
    drop(span);

    let r = log.one("tcp", 6001);
    check_orientation(r, &a, &b);
    check_tcp(r, 200_000, 30_000);
    let r = log.one("tcp", 6002);
    check_orientation(r, &b, &a);
    check_tcp(r, 50_000, 5_000);
    let r = log.one("udp", 6003);
    check_orientation(r, &a, &b);
    check_udp(r, 10, 100, 300);
    let r = log.one("udp", 6004);
    check_orientation(r, &b, &a);
    check_udp(r, 5, 200, 50);
    // The XDP form feeds the same counters: the sensor interface saw at least every packet of
    // the four connections.
    let logged: u64 = [("tcp", 6001), ("tcp", 6002), ("udp", 6003), ("udp", 6004)]
        .iter()
        .map(|&(p, port)| {
            let r = log.one(p, port);
            num(r, "orig_pkts") + num(r, "resp_pkts")
        })
        .sum();
    assert!(
        iface_packets >= logged,
        "iface packets {iface_packets} < {logged} logged:\n{metrics}"
    );
    // The contents stage reads the payload from the XDP buffer: each direction of the first
    // transfer is extracted byte for byte.
    for (side, byte, len) in [("orig", b'q', 200_000), ("resp", b'r', 30_000)] {
        let suffix = format!("-6001_{side}.dat");
        let file = std::fs::read_dir(&extract)
            .expect("the extract directory exists")
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().ends_with(&suffix))
            .unwrap_or_else(|| panic!("no contents_*{suffix} in {}", extract.display()));
        let data = std::fs::read(file.path()).unwrap();
        assert_eq!(data.len(), len, "{side} bytes extracted");
        assert!(data.iter().all(|&b| b == byte), "{side} bytes differ");
    }
    Some((log, rx))
}

// veth supports native XDP: `auto` attaches there.

#[test]
fn sensor_mode_logs_mirrored_connections_once_and_oriented() {
    let Some((_, rx)) = scenario(0, &[]) else {
        return;
    };
    // XDP_PASS: the mirrored packets went on to the sensor's stack.
    assert!(
        rx > 0,
        "the sensor's stack received no packet with XDP_PASS"
    );
}

#[test]
fn sensor_drop_accounts_then_drops() {
    let Some((_, rx)) = scenario(1, &["--sensor-drop"]) else {
        return;
    };
    assert_eq!(
        rx, 0,
        "packets reached the sensor's stack despite --sensor-drop"
    );
}

// Generic XDP, as on a driver without XDP support.

#[test]
fn sensor_generic_xdp_logs_the_same() {
    let Some((_, rx)) = scenario(2, &["--sensor-xdp-mode", "generic"]) else {
        return;
    };
    assert!(
        rx > 0,
        "the sensor's stack received no packet with XDP_PASS"
    );
}

#[test]
fn sensor_generic_xdp_drop() {
    let Some((_, rx)) = scenario(3, &["--sensor-xdp-mode", "generic", "--sensor-drop"]) else {
        return;
    };
    assert_eq!(
        rx, 0,
        "packets reached the sensor's stack despite --sensor-drop"
    );
}
