//! `read --ipfix`: a generated trace is exported to a real collector, nfdump's `nfcapd`
//! (Debian package nfdump; `cargo xtask test` installs it), listening on loopback in a temporary
//! directory. After nfcapd is stopped, `nfdump -o csv` must list, per direction of every
//! connection, the addresses, ports, protocol, packets and IP bytes the trace holds.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conntrack_tests::connlog::{ConnLog, num};
use conntrack_tests::netns::NetnsPair;
use conntrack_tests::pcapgen::{ACK, FIN, PSH, SYN, TcpConv, Trace, udp_frame};
use conntrack_tests::{agent_path, is_root};

const T0: u64 = 1_700_000_000_000_000;

/// (src, dst, src port, dst port, protocol) of one direction.
type Flow = (IpAddr, IpAddr, u16, u16, u8);

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// TCP over IPv4 and IPv6 with data both ways, a UDP request/response, a UDP one-way flow.
fn trace() -> Trace {
    let mut t = Trace::default();
    for (c, s, port) in [
        ("10.92.0.1", "10.92.0.2", 80),
        ("fd00:92::1", "fd00:92::2", 443),
    ] {
        let mut conv = TcpConv::new((addr(c), 40000 + port), (addr(s), port), T0);
        conv.c(&mut t, SYN, b"");
        conv.s(&mut t, SYN | ACK, b"");
        conv.c(&mut t, ACK, b"");
        conv.c(&mut t, PSH | ACK, &[b'q'; 100]);
        conv.s(&mut t, PSH | ACK, &[b'r'; 1200]);
        conv.s(&mut t, PSH | ACK, &[b'r'; 700]);
        conv.c(&mut t, FIN | ACK, b"");
        conv.s(&mut t, FIN | ACK, b"");
        conv.c(&mut t, ACK, b"");
    }
    let (c, s) = ((addr("10.92.0.1"), 5353), (addr("10.92.0.3"), 53));
    t.push(T0 + 50_000, udp_frame(c, s, &[1; 40]));
    t.push(T0 + 51_000, udp_frame(s, c, &[2; 120]));
    let (c, s) = ((addr("10.92.0.1"), 9999), (addr("10.92.0.4"), 9999));
    for i in 0..3 {
        t.push(T0 + 60_000 + i * 1000, udp_frame(c, s, &[3; 10]));
    }
    t
}

/// (packets, IP bytes) per direction, from the frames themselves (Ethernet, no VLAN).
fn expected(t: &Trace) -> BTreeMap<Flow, (u64, u64)> {
    let mut out: BTreeMap<Flow, (u64, u64)> = BTreeMap::new();
    for (_, f) in &t.frames {
        let ip = &f[14..];
        let flow = if f[12..14] == [0x08, 0x00] {
            let l4 = &ip[usize::from(ip[0] & 0xf) * 4..];
            let a = |i: usize| IpAddr::from(<[u8; 4]>::try_from(&ip[i..i + 4]).unwrap());
            (a(12), a(16), port(l4, 0), port(l4, 2), ip[9])
        } else {
            let a = |i: usize| IpAddr::from(<[u8; 16]>::try_from(&ip[i..i + 16]).unwrap());
            (a(8), a(24), port(&ip[40..], 0), port(&ip[40..], 2), ip[6])
        };
        let e = out.entry(flow).or_default();
        e.0 += 1;
        e.1 += ip.len() as u64;
    }
    out
}

fn port(l4: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([l4[at], l4[at + 1]])
}

/// A free UDP port on loopback (bound, then released for nfcapd).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nfcapd, stopped (SIGTERM, by PID) on drop if the test fails early.
struct Nfcapd(Child);

impl Nfcapd {
    /// nfcapd on 127.0.0.1:`port`, inside network namespace `netns` if given (`ip netns exec`
    /// execs nfcapd, so the child's PID is nfcapd's).
    fn start(dir: &std::path::Path, port: u16, netns: Option<&str>) -> Nfcapd {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nfcapd"]);
                c
            }
            None => Command::new("nfcapd"),
        };
        let child = cmd
            .args([
                "-b",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                "3600",
                "-w",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nfcapd is missing: install Debian's nfdump (`cargo xtask test` does)");
        Nfcapd(child)
    }

    /// SIGTERM: nfcapd flushes and closes its current file, then exits.
    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Nfcapd {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.stop();
        }
    }
}

/// `nfdump -R DIR -o csv`: the flows nfcapd stored, as (flow, (packets, bytes)).
fn nfdump(dir: &std::path::Path) -> BTreeMap<Flow, (u64, u64)> {
    let out = Command::new("nfdump")
        .arg("-R")
        .arg(dir)
        .args(["-q", "-o", "csv"])
        .output()
        .expect("running nfdump");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "nfdump failed: {}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    // nfdump 1.7's csv: ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,... (-q: no header).
    let mut flows = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        assert!(f.len() > 12, "unexpected nfdump line {line:?}");
        let proto = match f[7].trim() {
            "TCP" => 6,
            "UDP" => 17,
            other => other.parse().unwrap_or(0),
        };
        let flow = (
            addr(f[3].trim()),
            addr(f[4].trim()),
            f[5].trim().parse().unwrap(),
            f[6].trim().parse().unwrap(),
            proto,
        );
        let counts = (f[11].trim().parse().unwrap(), f[12].trim().parse().unwrap());
        assert!(
            flows.insert(flow, counts).is_none(),
            "{flow:?} twice in\n{text}"
        );
    }
    flows
}

#[test]
fn nfcapd_stores_what_the_trace_holds() {
    let dir = tempfile::tempdir().unwrap();
    let flows_dir = dir.path().join("flows");
    std::fs::create_dir(&flows_dir).unwrap();
    let t = trace();
    let pcap = dir.path().join("trace.pcap");
    t.write(&pcap).unwrap();

    let port = free_udp_port();
    let mut nfcapd = Nfcapd::start(&flows_dir, port, None);
    // nfcapd binds within a few ms; give it time before anything is sent.
    std::thread::sleep(Duration::from_millis(700));

    let out = Command::new(agent_path())
        .arg("read")
        .arg(&pcap)
        .arg("--log-dir")
        .arg(dir.path())
        .args(["--engine", "host", "--ipfix", &format!("127.0.0.1:{port}")])
        .args(["--ipfix-domain", "92"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "read failed: {stderr}");
    assert!(stderr.contains("7 records exported, 0 dropped"), "{stderr}");
    // UDP on loopback: nfcapd has the datagrams once they are sent; let it process them.
    std::thread::sleep(Duration::from_millis(500));
    nfcapd.stop();

    let want = expected(&t);
    assert_eq!(want.len(), 7, "{want:#?}");
    assert_eq!(nfdump(&flows_dir), want);
}

/// `run --ipfix`: the agent runs live in a namespace (subnet 92) with nfcapd on that namespace's
/// loopback; N TCP transfers cross the veth. nfcapd must hold both directions of each, with the
/// packets and IP bytes conn.log reports, and the payload the test sent.
#[test]
fn live_run_exports_each_connection_to_nfcapd() {
    const CONNS: usize = 3;
    const UP: usize = 2000;
    const DOWN: usize = 9000;
    if !is_root() {
        eprintln!("skipping live test: needs root (CAP_BPF and CAP_NET_ADMIN)");
        return;
    }
    let pair = NetnsPair::new(92).expect("creating network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let flows_dir = dir.path().join("flows");
    std::fs::create_dir(&flows_dir).unwrap();
    let port = 9792;
    let mut nfcapd = Nfcapd::start(&flows_dir, port, Some(&pair.a));
    let agent = pair
        .start_agent(dir.path(), &["--ipfix", &format!("127.0.0.1:{port}")])
        .expect("starting the agent");

    let srv: SocketAddr = format!("{}:8092", pair.b_v4).parse().unwrap();
    let server = NetnsPair::run_in(&pair.b, move || {
        let l = TcpListener::bind(srv).unwrap();
        for _ in 0..CONNS {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(&vec![b'r'; DOWN]).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    NetnsPair::run_in(&pair.a, move || {
        for _ in 0..CONNS {
            let mut c = TcpStream::connect_timeout(&srv, Duration::from_secs(5)).unwrap();
            c.write_all(&vec![b'q'; UP]).unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            let mut back = Vec::new();
            c.read_to_end(&mut back).unwrap();
        }
    })
    .join()
    .unwrap();
    server.join().unwrap();

    // Stopping the agent logs (and exports) every connection still open.
    let status = agent.stop().expect("stopping the agent");
    assert!(status.success(), "agent exited with {status}");
    std::thread::sleep(Duration::from_millis(500));
    nfcapd.stop();

    let log = ConnLog::read(&dir.path().join("conn.log")).unwrap();
    let recs = log.by_resp("tcp", 8092);
    assert_eq!(recs.len(), CONNS, "{:#?}", log.records);
    let flows = nfdump(&flows_dir);
    let (a, b) = (addr(&pair.a_v4), addr(&pair.b_v4));
    for r in recs {
        let cport: u16 = r["id.orig_p"].parse().unwrap();
        let fwd = flows.get(&(a, b, cport, 8092, 6)).copied();
        let rev = flows.get(&(b, a, 8092, cport, 6)).copied();
        let want_fwd = (num(r, "orig_pkts"), num(r, "orig_ip_bytes"));
        let want_rev = (num(r, "resp_pkts"), num(r, "resp_ip_bytes"));
        assert_eq!(fwd, Some(want_fwd), "{r:#?} in {flows:#?}");
        assert_eq!(rev, Some(want_rev), "{r:#?} in {flows:#?}");
        assert!(want_fwd.1 > UP as u64 && want_rev.1 > DOWN as u64, "{r:#?}");
    }
}
