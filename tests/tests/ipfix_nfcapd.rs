//! `read --ipfix`: a generated trace is exported to a real collector, nfdump's `nfcapd`
//! (Debian package nfdump; `cargo xtask test` installs it), listening on loopback in a temporary
//! directory. After nfcapd is stopped, `nfdump -o csv` must list, per direction of every
//! connection, the addresses, ports, protocol, packets and IP bytes the trace holds.

use std::collections::BTreeMap;
use std::net::{IpAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conntrack_tests::agent_path;
use conntrack_tests::pcapgen::{ACK, FIN, PSH, SYN, TcpConv, Trace, udp_frame};

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
    fn start(dir: &std::path::Path, port: u16) -> Nfcapd {
        let child = Command::new("nfcapd")
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
    let mut nfcapd = Nfcapd::start(&flows_dir, port);
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
