//! Live tests: the agent runs inside a network namespace created by the test, attached to a
//! veth, while the test generates real traffic across it. conn.log is checked against what the
//! traffic generator knows it sent. Needs root (CAP_BPF, CAP_NET_ADMIN); skipped otherwise.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};

use std::process::Command;
use std::time::Duration;

use conntrack_tests::connlog::{ConnLog, Record, num};
use conntrack_tests::is_root;
use conntrack_tests::netns::{LiveAgent, NetnsPair};

/// Everything one live scenario needs: namespaces, a running agent and its log directory.
struct Live {
    pair: NetnsPair,
    agent: Option<LiveAgent>,
    dir: tempfile::TempDir,
}

impl Live {
    fn start(subnet: u8) -> Option<Live> {
        if !is_root() {
            eprintln!("skipping live test: needs root (CAP_BPF and CAP_NET_ADMIN)");
            return None;
        }
        let pair = NetnsPair::new(subnet).expect("creating network namespaces");
        let dir = tempfile::tempdir().unwrap();
        let agent = pair
            .start_agent(dir.path(), &[])
            .expect("starting the agent");
        Some(Live {
            pair,
            agent: Some(agent),
            dir,
        })
    }

    /// Stops the agent (it drains every open connection) and returns conn.log.
    fn finish(mut self) -> ConnLog {
        let status = self
            .agent
            .take()
            .unwrap()
            .stop()
            .expect("stopping the agent");
        assert!(status.success(), "agent exited with {status}");
        let log = ConnLog::read(&self.dir.path().join("conn.log")).unwrap();
        assert!(log.closed, "conn.log has no #close line after shutdown");
        drop(self.pair);
        log
    }
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// Client in namespace a sends `up` bytes, server in b answers `down` bytes; both close.
fn transfer(live: &Live, server_ip: &str, port: u16, up: usize, down: usize) {
    let srv = sock(server_ip, port);
    let server = NetnsPair::run_in(&live.pair.b, move || {
        let l = TcpListener::bind(srv).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&vec![b'r'; down]).unwrap();
        got.len()
    });
    std::thread::sleep(Duration::from_millis(300));
    let client = NetnsPair::run_in(&live.pair.a, move || {
        let mut c = TcpStream::connect_timeout(&srv, Duration::from_secs(5)).unwrap();
        c.write_all(&vec![b'q'; up]).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        back.len()
    });
    assert_eq!(client.join().unwrap(), down);
    assert_eq!(server.join().unwrap(), up);
}

fn check_tcp_transfer(r: &Record, up: u64, down: u64, hdr: u64) {
    assert_eq!(r["conn_state"], "SF", "{r:#?}");
    assert_eq!(num(r, "orig_bytes"), up, "{r:#?}");
    assert_eq!(num(r, "resp_bytes"), down, "{r:#?}");
    for letter in ['S', 'h', 'D', 'F', 'f'] {
        assert!(
            r["history"].contains(letter),
            "history lacks {letter}: {r:#?}"
        );
    }
    // GSO super-packets must count as the segments they carry (MSS <= 1500 - hdr on veth).
    let mss = 1500 - hdr;
    assert!(
        num(r, "orig_pkts") >= up / mss,
        "orig_pkts too low for {up} bytes: {r:#?}"
    );
    assert!(
        num(r, "orig_ip_bytes") >= up + hdr * num(r, "orig_pkts"),
        "{r:#?}"
    );
    assert!(
        num(r, "resp_ip_bytes") >= down + hdr * num(r, "resp_pkts"),
        "{r:#?}"
    );
}

#[test]
fn live_tcp_normal_close() {
    let Some(live) = Live::start(71) else { return };
    let b = live.pair.b_v4.clone();
    transfer(&live, &b, 5001, 3_000_000, 20_000);
    let log = live.finish();
    check_tcp_transfer(log.one("tcp", 5001), 3_000_000, 20_000, 40);
}

#[test]
fn live_ipv6_tcp_normal_close() {
    let Some(live) = Live::start(72) else { return };
    let b = live.pair.b_v6.clone();
    transfer(&live, &b, 5002, 500_000, 1_000);
    let log = live.finish();
    check_tcp_transfer(log.one("tcp", 5002), 500_000, 1_000, 60);
}

#[test]
fn live_refused_connection_is_rej() {
    let Some(live) = Live::start(73) else { return };
    let srv = sock(&live.pair.b_v4, 5003);
    let res = NetnsPair::run_in(&live.pair.a, move || {
        TcpStream::connect_timeout(&srv, Duration::from_secs(5)).map(|_| ())
    })
    .join()
    .unwrap();
    assert!(res.is_err(), "nothing listens on 5003, connect must fail");
    let log = live.finish();
    let r = log.one("tcp", 5003);
    assert_eq!(r["conn_state"], "REJ", "{r:#?}");
    assert_eq!(r["history"], "Sr", "{r:#?}");
}

#[test]
fn live_unanswered_syn_is_s0() {
    let Some(live) = Live::start(74) else { return };
    // A neighbour entry for an address nobody owns: the SYN leaves the veth and is never answered.
    let ghost = "10.74.0.9";
    let out = Command::new("ip")
        .args([
            "-n",
            &live.pair.a,
            "neigh",
            "add",
            ghost,
            "lladdr",
            "02:00:00:00:00:99",
        ])
        .args(["dev", &live.pair.veth_a, "nud", "permanent"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let srv = sock(ghost, 5004);
    let res = NetnsPair::run_in(&live.pair.a, move || {
        TcpStream::connect_timeout(&srv, Duration::from_millis(1500)).map(|_| ())
    })
    .join()
    .unwrap();
    assert!(res.is_err());
    let log = live.finish();
    let r = log.one("tcp", 5004);
    assert_eq!(r["conn_state"], "S0", "{r:#?}");
    assert_eq!(r["history"], "S", "{r:#?}");
    assert!(num(r, "orig_pkts") >= 1);
    assert_eq!(num(r, "resp_pkts"), 0);
}

#[test]
fn live_reset_mid_stream_is_rsto() {
    let Some(live) = Live::start(75) else { return };
    let srv = sock(&live.pair.b_v4, 5005);
    let server = NetnsPair::run_in(&live.pair.b, move || {
        let l = TcpListener::bind(srv).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got.len()
    });
    std::thread::sleep(Duration::from_millis(300));
    NetnsPair::run_in(&live.pair.a, move || {
        let mut c = TcpStream::connect_timeout(&srv, Duration::from_secs(5)).unwrap();
        c.write_all(&[7u8; 1000]).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // Linger 0: close() sends a RST instead of a FIN.
        set_linger_zero(&c);
        drop(c);
    })
    .join()
    .unwrap();
    assert_eq!(server.join().unwrap(), 1000);
    let log = live.finish();
    let r = log.one("tcp", 5005);
    assert_eq!(r["conn_state"], "RSTO", "{r:#?}");
    assert!(r["history"].starts_with("ShAD"), "{r:#?}");
    assert!(r["history"].contains('R'), "{r:#?}");
    assert_eq!(num(r, "orig_bytes"), 1000, "{r:#?}");
}

/// Sets SO_LINGER {on, 0} so that closing the socket resets the connection.
fn set_linger_zero(c: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let rc = unsafe {
        nix::libc::setsockopt(
            c.as_raw_fd(),
            nix::libc::SOL_SOCKET,
            nix::libc::SO_LINGER,
            &linger as *const _ as *const nix::libc::c_void,
            std::mem::size_of_val(&linger) as u32,
        )
    };
    assert_eq!(rc, 0);
}

#[test]
fn live_udp_request_response_is_sf() {
    let Some(live) = Live::start(76) else { return };
    let srv = sock(&live.pair.b_v4, 5006);
    let server = NetnsPair::run_in(&live.pair.b, move || {
        let s = UdpSocket::bind(srv).unwrap();
        let mut buf = [0u8; 2000];
        let (n, peer) = s.recv_from(&mut buf).unwrap();
        s.send_to(&[9u8; 321], peer).unwrap();
        n
    });
    std::thread::sleep(Duration::from_millis(300));
    let client_b = live.pair.a_v4.clone();
    NetnsPair::run_in(&live.pair.a, move || {
        let s = UdpSocket::bind(sock(&client_b, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(&[1u8; 123], srv).unwrap();
        let mut buf = [0u8; 2000];
        assert_eq!(s.recv(&mut buf).unwrap(), 321);
    })
    .join()
    .unwrap();
    assert_eq!(server.join().unwrap(), 123);
    let log = live.finish();
    let r = log.one("udp", 5006);
    assert_eq!(r["conn_state"], "SF", "{r:#?}");
    assert_eq!(r["history"], "Dd", "{r:#?}");
    assert_eq!(num(r, "orig_bytes"), 123);
    assert_eq!(num(r, "resp_bytes"), 321);
    assert_eq!(num(r, "orig_ip_bytes"), 20 + 8 + 123);
    assert_eq!(num(r, "resp_ip_bytes"), 20 + 8 + 321);
}

#[test]
fn live_icmp_echo() {
    let Some(live) = Live::start(77) else { return };
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &live.pair.a,
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-s",
            "56",
        ])
        .arg(&live.pair.b_v4)
        .output()
        .expect("ping (iputils-ping) must be installed; cargo xtask test installs it");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = live.pair.b_v4.clone();
    let log = live.finish();
    // IPv6 neighbour discovery and MLD on the veth are ICMP too: pick the echo by address.
    let echo: Vec<_> = log
        .records
        .iter()
        .filter(|r| r["proto"] == "icmp" && r["id.resp_h"] == b)
        .collect();
    assert_eq!(
        echo.len(),
        1,
        "expected one echo record in {:#?}",
        log.records
    );
    let r = echo[0];
    assert_eq!(r["id.orig_p"], "8");
    assert_eq!(r["id.resp_p"], "0");
    assert_eq!(r["conn_state"], "OTH");
    assert_eq!(num(r, "orig_pkts"), 3, "{r:#?}");
    assert_eq!(num(r, "resp_pkts"), 3, "{r:#?}");
    // Each echo carries 56 data bytes + 8 bytes of ICMP header; Zeek counts IP payload - 8.
    assert_eq!(num(r, "orig_bytes"), 3 * 56, "{r:#?}");
}
