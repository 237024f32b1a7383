//! Live counts under concurrency: every packet the program sees is applied to its connection
//! exactly once, also when both CPUs update one connection at the same time. conn.log is
//! compared with what the traffic generator sent and the receiving stack counted. Needs root
//! (CAP_BPF, CAP_NET_ADMIN); skipped otherwise.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use conntrack_tests::connlog::{ConnLog, num};
use conntrack_tests::is_root;
use conntrack_tests::netns::{LiveAgent, NetnsPair};

/// The agent in namespace `b`, on its veth: it sees what reaches b (ingress) and what b sends.
fn agent_in_b(pair: &NetnsPair, dir: &std::path::Path) -> LiveAgent {
    let args = [
        "--iface",
        pair.veth_b.as_str(),
        "--log-dir",
        dir.to_str().unwrap(),
    ];
    let agent = LiveAgent::start(&pair.b, &conntrack_tests::agent_path(), &args).unwrap();
    assert!(
        conntrack_tests::netns::wait_for_file(&dir.join("conn.log"), Duration::from_secs(20)),
        "the agent did not open conn.log"
    );
    agent
}

fn stop(agent: LiveAgent, dir: &std::path::Path) -> ConnLog {
    let status = agent.stop().expect("stopping the agent");
    assert!(status.success(), "agent exited with {status}");
    let log = ConnLog::read(&dir.join("conn.log")).unwrap();
    assert!(log.closed, "conn.log has no #close line after shutdown");
    log
}

/// 5 GiB in one TCP stream: the sequence space wraps past 4 GiB, GSO super-packets arrive on
/// one CPU while the ACKs leave on another. Nothing may be missed or counted twice.
#[test]
fn multi_gigabyte_tcp_stream_is_counted_exactly() {
    if !is_root() {
        eprintln!("skipping live test: needs root (CAP_BPF and CAP_NET_ADMIN)");
        return;
    }
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 5 * 1024;
    let pair = NetnsPair::named("exact-tcp", 81).expect("creating network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let agent = agent_in_b(&pair, dir.path());
    let srv = SocketAddr::new(pair.b_v4.parse().unwrap(), 5201);
    let server = NetnsPair::run_in(&pair.b, move || {
        let l = TcpListener::bind(srv).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        loop {
            match s.read(&mut buf).unwrap() {
                0 => break,
                n => got += n as u64,
            }
        }
        got
    });
    std::thread::sleep(Duration::from_millis(300));
    let client = NetnsPair::run_in(&pair.a, move || {
        let mut c = TcpStream::connect_timeout(&srv, Duration::from_secs(5)).unwrap();
        let buf = vec![b'x'; CHUNK];
        let mut sent = 0u64;
        for _ in 0..CHUNKS {
            c.write_all(&buf).unwrap();
            sent += CHUNK as u64;
        }
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        sent
    });
    let sent = client.join().unwrap();
    assert_eq!(server.join().unwrap(), sent, "the server got every byte");
    let log = stop(agent, dir.path());
    drop(pair);
    let r = log.one("tcp", 5201);
    assert_eq!(num(r, "orig_bytes"), sent, "{r:#?}");
    assert_eq!(num(r, "missed_bytes"), 0, "{r:#?}");
    let history = &r["history"];
    assert!(
        !history.contains('G') && !history.contains('g'),
        "a gap that was not on the wire: {r:#?}"
    );
    assert_eq!(r["conn_state"], "SF", "{r:#?}");
}

/// Datagrams of one flow from two sender threads on two CPUs (one socket each, bound to the
/// same port with SO_REUSEPORT): the connection counts every datagram the receiver's UDP layer
/// counted.
#[test]
fn udp_flood_from_two_cpus_to_one_flow_is_counted_exactly() {
    if !is_root() {
        eprintln!("skipping live test: needs root (CAP_BPF and CAP_NET_ADMIN)");
        return;
    }
    const PER_SENDER: u32 = 200_000;
    let pair = NetnsPair::named("exact-udp", 82).expect("creating network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let agent = agent_in_b(&pair, dir.path());
    let dst = SocketAddr::new(pair.b_v4.parse().unwrap(), 5301);
    let src = SocketAddr::new(pair.a_v4.parse().unwrap(), 40000);
    // The receiver: a socket so that datagrams are delivered, not refused.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let receiver = NetnsPair::run_in(&pair.b, move || {
        let s = std::net::UdpSocket::bind(dst).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let before = udp_counted();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 2048];
        while done_rx.try_recv().is_err() {
            let _ = s.recv(&mut buf);
        }
        udp_counted() - before
    });
    ready_rx.recv().unwrap();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let senders: Vec<_> = (0..2)
        .map(|i| {
            NetnsPair::run_in(&pair.a, move || {
                pin_to_cpu(i % cpus);
                let s = reuseport_socket(src);
                let payload = [0x5au8; 36];
                for _ in 0..PER_SENDER {
                    // A full socket buffer is no error here: the datagram is just not sent.
                    let _ = s.send_to(&payload, dst);
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    done_tx.send(()).unwrap();
    let counted = receiver.join().unwrap();
    let log = stop(agent, dir.path());
    drop(pair);
    let r = log.one("udp", 5301);
    assert!(counted > 0, "nothing reached the receiver");
    eprintln!("{counted} datagrams reached the receiver's UDP layer");
    assert_eq!(num(r, "orig_pkts"), counted, "{r:#?}");
    assert_eq!(num(r, "orig_bytes"), counted * 36, "{r:#?}");
    assert_eq!(num(r, "orig_ip_bytes"), counted * (20 + 8 + 36), "{r:#?}");
}

/// Datagrams the calling thread's namespace's UDP layer took in: InDatagrams + RcvbufErrors (a
/// full socket buffer drops after the UDP layer took the datagram). `thread-self`: `/proc/net`
/// is the process's namespace, not the thread's.
fn udp_counted() -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    let get = |k: &str| -> u64 {
        let i = names.split_whitespace().position(|n| n == k).unwrap();
        values.split_whitespace().nth(i).unwrap().parse().unwrap()
    };
    get("InDatagrams") + get("RcvbufErrors")
}

/// A UDP socket bound to `addr` with SO_REUSEPORT, so that two of them share one source port.
fn reuseport_socket(addr: SocketAddr) -> std::net::UdpSocket {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    setsockopt(&fd, sockopt::ReusePort, &true).unwrap();
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
    };
    bind(fd.as_raw_fd(), &SockaddrIn::from(v4)).unwrap();
    std::net::UdpSocket::from(fd)
}

fn pin_to_cpu(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}

/// UDP flows that both ends open at the same moment, one end on each CPU: the two first
/// datagrams of a flow race to create its connection (one inserts it, the other finds the new
/// entry). Whichever comes second must find the connection built, never a half-made one: every
/// flow is logged with both datagrams and both payloads.
#[test]
fn udp_flows_opened_from_both_ends_at_once_are_counted_exactly() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    if !is_root() {
        eprintln!("skipping live test: needs root (CAP_BPF and CAP_NET_ADMIN)");
        return;
    }
    const ROUNDS: u16 = 8;
    const PER_ROUND: u16 = 500;
    // No likely server port (Zeek's, say DNP3's 20000) in either range: no flow is flipped.
    const A_PORT: u16 = 21000;
    const B_PORT: u16 = 31000;
    const A_SENDS: usize = 100;
    const B_SENDS: usize = 60;
    let pair = NetnsPair::named("exact-open", 83).expect("creating network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let agent = agent_in_b(&pair, dir.path());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (a_ip, b_ip) = (pair.a_v4.clone(), pair.b_v4.clone());
    for round in 0..ROUNDS {
        // Each side's progress: the flow it is about to open. Both spin until the other is at
        // the same flow, so that the two sends of a flow leave within a few hundred ns.
        let at = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
        let side = |me: usize, ns: &str, cpu: usize, local: (String, u16), peer: (String, u16)| {
            let at = Arc::clone(&at);
            NetnsPair::run_in(ns, move || {
                pin_to_cpu(cpu % cpus);
                let first = round * PER_ROUND;
                let socks: Vec<_> = (first..first + PER_ROUND)
                    .map(|i| {
                        let addr = SocketAddr::new(local.0.parse().unwrap(), local.1 + i);
                        std::net::UdpSocket::bind(addr).unwrap()
                    })
                    .collect();
                let payload = vec![b'u'; if me == 0 { A_SENDS } else { B_SENDS }];
                for (n, (s, i)) in socks.iter().zip(first..).enumerate() {
                    let n = n as u32 + 1;
                    at[me].store(n, Ordering::SeqCst);
                    while at[1 - me].load(Ordering::SeqCst) < n {
                        std::hint::spin_loop();
                    }
                    let to = SocketAddr::new(peer.0.parse().unwrap(), peer.1 + i);
                    s.send_to(&payload, to).unwrap();
                }
                // Keep the sockets until the peer sent its last datagram: none is refused.
                at[me].store(u32::MAX, Ordering::SeqCst);
                while at[1 - me].load(Ordering::SeqCst) != u32::MAX {
                    std::hint::spin_loop();
                }
            })
        };
        let a = side(
            0,
            &pair.a,
            0,
            (a_ip.clone(), A_PORT),
            (b_ip.clone(), B_PORT),
        );
        let b = side(
            1,
            &pair.b,
            1,
            (b_ip.clone(), B_PORT),
            (a_ip.clone(), A_PORT),
        );
        a.join().unwrap();
        b.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let log = stop(agent, dir.path());
    drop(pair);
    let mut flows = 0;
    for r in log.records.iter().filter(|r| r["proto"] == "udp") {
        let (orig_p, resp_p) = (num(r, "id.orig_p"), num(r, "id.resp_p"));
        // Either end may have come first: the originator is whichever the program saw first.
        let sent_by = |port: u64| -> u64 {
            if (A_PORT as u64..B_PORT as u64).contains(&port) {
                A_SENDS as u64
            } else {
                B_SENDS as u64
            }
        };
        assert_eq!(
            orig_p.abs_diff(resp_p),
            (B_PORT - A_PORT) as u64,
            "not a test flow: {r:#?}"
        );
        assert_eq!(r["history"], "Dd", "{r:#?}");
        assert_eq!(num(r, "orig_pkts"), 1, "{r:#?}");
        assert_eq!(num(r, "resp_pkts"), 1, "{r:#?}");
        assert_eq!(num(r, "orig_bytes"), sent_by(orig_p), "{r:#?}");
        assert_eq!(num(r, "resp_bytes"), sent_by(resp_p), "{r:#?}");
        assert_eq!(num(r, "orig_ip_bytes"), 28 + sent_by(orig_p), "{r:#?}");
        assert_eq!(num(r, "resp_ip_bytes"), 28 + sent_by(resp_p), "{r:#?}");
        flows += 1;
    }
    assert_eq!(flows, (ROUNDS * PER_ROUND) as usize, "flows logged");
}
