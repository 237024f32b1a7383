//! `run --metrics-addr`: the agent runs live in a network namespace (subnet 91), the test opens
//! and closes N TCP connections across the veth and scrapes `/metrics` from inside the
//! namespace (loopback, which the agent does not watch), as Prometheus would. The counters must
//! cover what the test sent. Needs root; skipped otherwise.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use conntrack_tests::is_root;
use conntrack_tests::netns::NetnsPair;

const METRICS: &str = "127.0.0.1:9791";
const CONNS: usize = 5;
const UP: usize = 3000;
const DOWN: usize = 20_000;

/// GET /metrics from inside namespace `ns`.
fn scrape(ns: &str) -> String {
    NetnsPair::run_in(ns, || {
        let mut s = TcpStream::connect_timeout(&METRICS.parse().unwrap(), Duration::from_secs(5))
            .expect("connecting to the metrics endpoint");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
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

/// N sequential TCP transfers from a to b, each closed by both sides.
fn transfers(pair: &NetnsPair) {
    let srv: SocketAddr = format!("{}:8091", pair.b_v4).parse().unwrap();
    let server = NetnsPair::run_in(&pair.b, move || {
        let l = TcpListener::bind(srv).unwrap();
        for _ in 0..CONNS {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            assert_eq!(got.len(), UP);
            s.write_all(&vec![b'r'; DOWN]).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let client = NetnsPair::run_in(&pair.a, move || {
        for _ in 0..CONNS {
            let mut c = TcpStream::connect_timeout(&srv, Duration::from_secs(5)).unwrap();
            c.write_all(&vec![b'q'; UP]).unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            let mut back = Vec::new();
            c.read_to_end(&mut back).unwrap();
            assert_eq!(back.len(), DOWN);
        }
    });
    client.join().unwrap();
    server.join().unwrap();
}

#[test]
fn live_metrics_count_the_connections_sent() {
    if !is_root() {
        eprintln!("skipping live test: needs root (CAP_BPF and CAP_NET_ADMIN)");
        return;
    }
    let pair = NetnsPair::new(91).expect("creating network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let agent = pair
        .start_agent(
            dir.path(),
            &["--table-size", "4096", "--metrics-addr", METRICS],
        )
        .expect("starting the agent");
    // IPv6 neighbour discovery on the fresh veth may already have counted: compare growth.
    let before = scrape(&pair.a);
    assert_eq!(value(&before, "conntrack_table_capacity"), 4096);
    let grew = |now: &str, name: &str| value(now, name) - value(&before, name);

    transfers(&pair);

    // Zeek removes a closed TCP connection after tcp_close_delay (5 s): wait for all N.
    let closed = "conntrack_connections_removed_total{reason=\"closed\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let t = scrape(&pair.a);
        if grew(&t, closed) >= CONNS as u64 || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let n = CONNS as u64;
    let created = "conntrack_connections_created_total";
    assert!(grew(&text, created) >= n, "{text}");
    assert_eq!(grew(&text, closed), n, "{text}");
    // Other traffic may add connections; every one is either active or removed.
    let removed: u64 = text
        .lines()
        .filter(|l| l.starts_with("conntrack_connections_removed_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    let active = value(&text, "conntrack_connections_active");
    assert_eq!(active + removed, value(&text, created), "{text}");
    // Each transfer is at least SYN, ACK, data, FIN one way and SYN-ACK, data, FIN the other.
    assert!(
        grew(&text, "conntrack_kernel_packets_total") >= 7 * n,
        "{text}"
    );
    assert!(
        grew(&text, "conntrack_kernel_new_conns_total") >= n,
        "{text}"
    );
    // The same packets, on the monitored interface's own counter (both directions: TC ingress
    // and egress of the veth).
    let iface_pkts = format!(
        "conntrack_kernel_iface_packets_total{{iface=\"{}\"}}",
        pair.veth_a
    );
    assert!(grew(&text, &iface_pkts) >= 7 * n, "{text}");
    let iface_bytes = format!(
        "conntrack_kernel_iface_bytes_total{{iface=\"{}\"}}",
        pair.veth_a
    );
    // Frames carry the payload plus at least an Ethernet header each.
    assert!(
        grew(&text, &iface_bytes) >= n * (UP + DOWN) as u64,
        "{text}"
    );
    // The kernel's IP-byte total covers what the connections carried.
    assert!(
        grew(&text, "conntrack_kernel_ip_bytes_total") >= n * (UP + DOWN) as u64,
        "{text}"
    );
    assert!(
        grew(&text, "conntrack_events_received_total") >= n,
        "{text}"
    );
    // IP bytes carry the payload plus headers.
    let orig = grew(
        &text,
        "conntrack_connection_ip_bytes_total{direction=\"orig\"}",
    );
    let resp = grew(
        &text,
        "conntrack_connection_ip_bytes_total{direction=\"resp\"}",
    );
    assert!(orig >= n * UP as u64 && resp >= n * DOWN as u64, "{text}");
    assert_eq!(
        value(&text, "conntrack_kernel_ringbuf_full_total"),
        0,
        "{text}"
    );
    assert_eq!(
        value(&text, "conntrack_kernel_table_full_total"),
        0,
        "{text}"
    );

    let status = agent.stop().expect("stopping the agent");
    assert!(status.success(), "agent exited with {status}");
}
