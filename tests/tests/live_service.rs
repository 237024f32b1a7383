//! Live tests of conn.log's `service` column: the agent runs in a network namespace created by
//! the test while an HTTP client and server, or a DNS client and responder, that the test runs
//! talk across the veth. The record must name the protocol that was spoken, and only that: a
//! connection to the same kind of port that speaks something else stays unset, and
//! `--no-service` leaves the column unset. Needs root (CAP_BPF, CAP_NET_ADMIN); skipped
//! otherwise.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use conntrack_tests::connlog::ConnLog;
use conntrack_tests::is_root;
use conntrack_tests::netns::NetnsPair;

/// Namespaces for one test (`subnet` unique among these tests), or None when not root.
fn namespaces(subnet: u8) -> Option<NetnsPair> {
    if !is_root() {
        eprintln!("skipping live test: needs root (CAP_BPF and CAP_NET_ADMIN)");
        return None;
    }
    Some(NetnsPair::named(&format!("i19svc{subnet}"), subnet).expect("creating namespaces"))
}

/// Runs the agent in namespace a with `extra` options while `traffic` runs, then stops it (it
/// drains every open connection) and returns conn.log.
fn watch(pair: &NetnsPair, extra: &[&str], traffic: impl FnOnce()) -> ConnLog {
    let dir = tempfile::tempdir().unwrap();
    let agent = pair
        .start_agent(dir.path(), extra)
        .expect("starting the agent");
    traffic();
    let status = agent.stop().expect("stopping the agent");
    assert!(status.success(), "agent exited with {status}");
    let log = ConnLog::read(&dir.path().join("conn.log")).unwrap();
    assert!(log.closed, "conn.log has no #close line after shutdown");
    log
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// One TCP exchange: a server in namespace b reads until it has seen `request_end` (or the end
/// of the stream) and answers `reply(request)`; the client in a sends `request` and returns
/// everything the server sent before closing.
fn tcp_exchange(
    pair: &NetnsPair,
    port: u16,
    request: &'static [u8],
    request_end: &'static [u8],
    reply: fn(&[u8]) -> Vec<u8>,
) -> Vec<u8> {
    let srv = sock(&pair.b_v4, port);
    let listener = NetnsPair::run_in(&pair.b, move || TcpListener::bind(srv))
        .join()
        .unwrap()
        .expect("binding the server");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(request_end) {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(&reply(&got)).unwrap();
    });
    let back = NetnsPair::run_in(&pair.a, move || {
        let mut c = TcpStream::connect_timeout(&srv, Duration::from_secs(5)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(request).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        back
    })
    .join()
    .unwrap();
    server.join().unwrap();
    back
}

const HTTP_REQUEST: &[u8] =
    b"GET /index.html HTTP/1.1\r\nHost: 10.121.0.2\r\nUser-Agent: conntrack-test\r\n\r\n";
const HTTP_BODY: &[u8] = b"<html>hello</html>\n";

/// A minimal HTTP/1.1 server's answer to a GET (RFC 9112): status line, headers, body; it
/// closes the connection after it.
fn http_reply(request: &[u8]) -> Vec<u8> {
    assert!(request.starts_with(b"GET /index.html HTTP/1.1\r\n"));
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        HTTP_BODY.len()
    )
    .into_bytes();
    r.extend_from_slice(HTTP_BODY);
    r
}

/// A line protocol of no known kind.
fn echo_reply(request: &[u8]) -> Vec<u8> {
    request.iter().rev().copied().collect()
}

fn http_traffic(pair: &NetnsPair) {
    let back = tcp_exchange(pair, 80, HTTP_REQUEST, b"\r\n\r\n", http_reply);
    assert!(back.starts_with(b"HTTP/1.1 200 OK\r\n"), "{back:?}");
    assert!(back.ends_with(HTTP_BODY));
    // Not HTTP, on an HTTP port: the column must come from what was said, not the port.
    let back = tcp_exchange(pair, 8080, b"hello there\n", b"\n", echo_reply);
    assert_eq!(back, b"\nereht olleh");
}

#[test]
fn live_http_request_is_http() {
    let Some(pair) = namespaces(121) else { return };
    let log = watch(&pair, &[], || http_traffic(&pair));
    let r = log.one("tcp", 80);
    assert_eq!(r["service"], "http", "{r:#?}");
    assert_eq!(r["conn_state"], "SF", "{r:#?}");
    let other = log.one("tcp", 8080);
    assert_eq!(other["service"], "-", "not HTTP: {other:#?}");
}

#[test]
fn live_no_service_leaves_the_column_unset() {
    let Some(pair) = namespaces(122) else { return };
    let log = watch(&pair, &["--no-service"], || http_traffic(&pair));
    let r = log.one("tcp", 80);
    assert_eq!(r["service"], "-", "{r:#?}");
    assert_eq!(
        r["conn_state"], "SF",
        "the rest of the record is kept: {r:#?}"
    );
}

/// A DNS query for `name`'s A record (RFC 1035 4.1): header with recursion desired, one
/// question.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    q
}

/// The responder's answer to `query`: the same id and question, QR and RA set, one A record
/// (a pointer to the question's name) with `addr`.
fn dns_answer(query: &[u8], addr: Ipv4Addr) -> Vec<u8> {
    let mut r = query.to_vec();
    r[2] = 0x81; // QR, RD
    r[3] = 0x80; // RA, no error
    r[7] = 1; // ANCOUNT
    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    r.extend_from_slice(&addr.octets());
    r
}

/// The A record's address in an answer to a one-question query of `query_len` bytes.
fn answered_addr(answer: &[u8], query_len: usize) -> Ipv4Addr {
    let rdata = &answer[query_len + 12..query_len + 16];
    Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3])
}

#[test]
fn live_dns_query_is_dns() {
    let Some(pair) = namespaces(123) else { return };
    let served = Ipv4Addr::new(192, 0, 2, 7);
    let log = watch(&pair, &[], || {
        let srv = sock(&pair.b_v4, 53);
        let responder = NetnsPair::run_in(&pair.b, move || UdpSocket::bind(srv))
            .join()
            .unwrap()
            .expect("binding the responder");
        let responder = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, peer) = responder.recv_from(&mut buf).unwrap();
            responder
                .send_to(&dns_answer(&buf[..n], served), peer)
                .unwrap();
        });
        let client = pair.a_v4.clone();
        let got = NetnsPair::run_in(&pair.a, move || {
            let s = UdpSocket::bind(sock(&client, 0)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let query = dns_query(0x1a2b, "www.example.com");
            s.send_to(&query, srv).unwrap();
            let mut buf = [0u8; 512];
            let n = s.recv(&mut buf).unwrap();
            assert_eq!(buf[..2], query[..2], "the answer carries the query's id");
            answered_addr(&buf[..n], query.len())
        })
        .join()
        .unwrap();
        responder.join().unwrap();
        assert_eq!(got, served);
    });
    let r = log.one("udp", 53);
    assert_eq!(r["service"], "dns", "{r:#?}");
    assert_eq!(r["history"], "Dd", "{r:#?}");
}

#[test]
fn dns_answer_helpers_agree() {
    let q = dns_query(7, "a.bc");
    assert_eq!(
        q,
        b"\x00\x07\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x02bc\x00\x00\x01\x00\x01"
    );
    let addr = Ipv4Addr::new(198, 51, 100, 1);
    assert_eq!(answered_addr(&dns_answer(&q, addr), q.len()), addr);
}
