//! The capability between the datapath's samples and conn.log: samples placed by the key's
//! sides, the roles as logged, state freed once decided.

use super::*;
use crate::datapath::{ContentChunk, ThresholdError};
use conntrack_common::contents::ContentHeader;

/// A datapath that records the commands it is given, and the connections whose sampling
/// it was asked to stop; with `.2` it stops them (as the host engine does), else samples
/// keep coming until their budget ends (as the kernel's do).
#[derive(Default)]
struct Commands(Vec<ThresholdCommand>, Vec<FlowKey>, bool);

impl ThresholdTarget for Commands {
    fn set_thresholds(&mut self, cmd: &ThresholdCommand) -> Result<u32, ThresholdError> {
        self.0.push(*cmd);
        Ok(0)
    }
    fn lookup(&self, _key: &FlowKey) -> Option<Conn> {
        None
    }
    fn stop_sampling(&mut self, key: &FlowKey) -> bool {
        self.1.push(*key);
        self.2
    }
}

fn v4(last: u8) -> [u8; 16] {
    std::net::Ipv4Addr::new(10, 0, 0, last)
        .to_ipv6_mapped()
        .octets()
}

/// A connection from 10.0.0.1:40000 (the key's `a` side) to 10.0.0.2:`resp_port`.
fn conn_to(resp_port: u16, proto: u8) -> (FlowKey, Conn) {
    conn_from(40_000, resp_port, proto)
}

/// A connection from 10.0.0.1:`orig_port` (the key's `a` side) to 10.0.0.2:`resp_port`.
fn conn_from(orig_port: u16, resp_port: u16, proto: u8) -> (FlowKey, Conn) {
    let conn = Conn {
        orig_addr: v4(1),
        resp_addr: v4(2),
        orig_port,
        resp_port,
        proto,
        ..Conn::ZERO
    };
    let key = FlowKey::from_tuple(&v4(1), orig_port, &v4(2), resp_port, proto);
    assert_eq!(key.addr_a, v4(1));
    (key, conn)
}

/// A TCP connection to port 80.
fn http_conn() -> (FlowKey, Conn) {
    conn_to(80, proto::TCP)
}

/// A sample record as the datapath writes it.
fn sample(key: &FlowKey, from_a: bool, from_orig: bool, seq: u32, data: &[u8]) -> ContentChunk {
    let flags = CONTENT_SAMPLE
        | if from_a { CONTENT_FROM_A } else { 0 }
        | if from_orig { CONTENT_FROM_ORIG } else { 0 };
    ContentChunk {
        hdr: ContentHeader {
            key: *key,
            seq,
            len: data.len() as u32,
            flags,
            proto: u32::from(key.proto),
            ..ContentHeader::default()
        },
        data: data.to_vec(),
    }
}

impl Service {
    /// Whether the capability holds nothing of any connection (no word of its own, no
    /// pending samples).
    fn holds_nothing(&self) -> bool {
        self.unrecorded.is_empty() && self.slots.open_count() == 0
    }

    /// The names TCP connection `key` was decided with, from the word the capability keeps
    /// for it (the test datapaths without records); None if undecided.
    fn decided(&self, key: &FlowKey) -> Option<Vec<&'static str>> {
        match Word::from_stored(self.unrecorded.get(key)?) {
            Word::Names(set) => Some(self.sets.names(set).to_vec()),
            Word::Nothing => Some(Vec::new()),
            Word::Empty | Word::Pending(_) => None,
        }
    }
}

fn logged(svc: &mut Service, key: &FlowKey, conn: &Conn) -> Vec<&'static str> {
    let mut out = Vec::new();
    svc.conn_service(key, conn, 0, &mut out);
    out
}

/// Zeek's HTTP analyzer loaded (its ports registered).
const PORTS: &[(u16, u8)] = &[(80, proto::TCP), (8080, proto::TCP)];

const REQUEST: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n";
const REPLY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

#[test]
fn a_request_and_its_reply_are_http() {
    let (key, conn) = http_conn();
    let mut svc = Service::new(PORTS);
    let mut dp = Commands::default();
    // The request in two segments, the second retransmitted.
    svc.on_payload(
        sample(&key, true, true, 1000, &REQUEST[..10]).content(),
        &mut dp,
    );
    svc.on_payload(
        sample(&key, true, true, 1010, &REQUEST[10..]).content(),
        &mut dp,
    );
    svc.on_payload(
        sample(&key, true, true, 1010, &REQUEST[10..]).content(),
        &mut dp,
    );
    svc.on_payload(sample(&key, false, false, 7, REPLY).content(), &mut dp);
    assert_eq!(logged(&mut svc, &key, &conn), vec!["http"]);
    assert!(svc.holds_nothing(), "freed once logged");
    assert!(dp.0.is_empty(), "nothing asked of the datapath");
}

#[test]
fn one_side_alone_off_the_analyzers_ports_is_no_http() {
    // Off HTTP's ports the analyzer comes from its DPD signature, which needs both sides.
    let (key, conn) = conn_to(9_999, proto::TCP);
    let mut svc = Service::new(PORTS);
    let mut dp = Commands::default();
    svc.on_payload(sample(&key, true, true, 1, REQUEST).content(), &mut dp);
    assert!(logged(&mut svc, &key, &conn).is_empty());
    svc.on_payload(sample(&key, true, true, 1, REQUEST).content(), &mut dp);
    svc.on_payload(sample(&key, false, false, 1, REPLY).content(), &mut dp);
    assert_eq!(
        logged(&mut svc, &key, &conn),
        vec!["http"],
        "with the reply"
    );
    let (key, conn) = http_conn();
    assert!(
        logged(&mut Service::new(PORTS), &key, &conn).is_empty(),
        "no samples"
    );
}

#[test]
fn complete_samples_keep_only_the_names() {
    let (key, conn) = http_conn();
    let mut svc = Service::new(PORTS);
    let mut dp = Commands::default();
    let mut seq = [0u32; 2];
    for i in 0..SAMPLE_PACKETS {
        for from_a in [true, false] {
            let data = match (from_a, i) {
                (true, 0) => REQUEST,
                (false, 0) => REPLY,
                _ => b"more bytes",
            };
            let s = &mut seq[usize::from(!from_a)];
            svc.on_payload(sample(&key, from_a, from_a, *s, data).content(), &mut dp);
            *s += data.len() as u32;
        }
    }
    assert_eq!(
        svc.decided(&key),
        Some(vec!["http"]),
        "the samples are freed, the names kept"
    );
    assert_eq!(svc.slots.open_count(), 0);
    assert_eq!(logged(&mut svc, &key, &conn), vec!["http"]);
    assert!(svc.holds_nothing());
}

#[test]
fn the_roles_are_those_of_the_record() {
    // The samples came while the key's `a` side was taken for the responder (e.g. a reply
    // seen first); the record, after Zeek's flip, has `a` as originator.
    let (key, conn) = http_conn();
    let mut svc = Service::new(PORTS);
    let mut dp = Commands::default();
    svc.on_payload(sample(&key, false, true, 7, REPLY).content(), &mut dp);
    svc.on_payload(sample(&key, true, false, 1, REQUEST).content(), &mut dp);
    assert_eq!(logged(&mut svc, &key, &conn), vec!["http"]);
}

#[test]
fn without_the_analyzer_loaded_nothing_is_logged() {
    let (key, conn) = http_conn();
    let mut svc = Service::new(&[(53, proto::UDP)]);
    let mut dp = Commands::default();
    svc.on_payload(sample(&key, true, true, 1, REQUEST).content(), &mut dp);
    svc.on_payload(sample(&key, false, false, 1, REPLY).content(), &mut dp);
    assert!(logged(&mut svc, &key, &conn).is_empty());
}

#[test]
fn a_connection_picked_up_midway_is_not_http() {
    // Zeek's HTTP analyzer skips a connection whose first packet had no SYN.
    let (key, mut conn) = http_conn();
    for letter in *b"DdA" {
        conn.history.push(letter);
    }
    let mut svc = Service::new(PORTS);
    let mut dp = Commands::default();
    svc.on_payload(sample(&key, true, true, 1, REQUEST).content(), &mut dp);
    svc.on_payload(sample(&key, false, false, 1, REPLY).content(), &mut dp);
    assert!(logged(&mut svc, &key, &conn).is_empty());
    // The same exchange after a handshake is HTTP.
    let (key, mut conn) = http_conn();
    for letter in *b"ShADad" {
        conn.history.push(letter);
    }
    svc.on_payload(sample(&key, true, true, 1, REQUEST).content(), &mut dp);
    svc.on_payload(sample(&key, false, false, 1, REPLY).content(), &mut dp);
    assert_eq!(logged(&mut svc, &key, &conn), vec!["http"]);
}

#[test]
fn a_connection_no_detector_can_confirm_is_decided_at_its_first_exchange() {
    let (key, conn) = http_conn();
    let mut svc = Service::new(PORTS);
    let mut dp = Commands::default();
    svc.on_payload(
        sample(&key, true, true, 1000, b"\x01\x02binary").content(),
        &mut dp,
    );
    assert!(dp.1.is_empty(), "the server has not answered yet");
    svc.on_payload(
        sample(&key, false, false, 5000, b"\x07reply").content(),
        &mut dp,
    );
    assert_eq!(dp.1, [key], "sampling stops");
    assert_eq!(svc.decided(&key), Some(vec![]));
    // Samples already on their way change nothing.
    svc.on_payload(sample(&key, true, true, 1008, REQUEST).content(), &mut dp);
    assert!(logged(&mut svc, &key, &conn).is_empty());
    assert!(svc.holds_nothing());
}

#[test]
fn a_connection_keeps_its_word_in_its_record_and_its_samples_only_while_pending() {
    let (key, conn) = http_conn();
    let mut svc = Service::new(PORTS);
    let mut dp = Host::default();
    svc.on_payload(
        sample(&key, true, true, 1000, b"\x01\x02binary").content(),
        &mut dp,
    );
    assert_eq!(
        svc.slots.open_count(),
        1,
        "the client's bytes wait for the server's"
    );
    assert!(matches!(
        Word::from_stored(dp.records[&key]),
        Word::Pending(_)
    ));
    svc.on_payload(
        sample(&key, false, false, 5000, b"\x07reply").content(),
        &mut dp,
    );
    assert_eq!(Word::from_stored(dp.records[&key]), Word::Nothing);
    assert!(svc.holds_nothing(), "nothing kept but the record's word");
    let mut out = Vec::new();
    svc.conn_service(&key, &conn, dp.records[&key], &mut out);
    assert!(out.is_empty());
    // Logged while pending: judged from the samples, which are freed.
    let (key, conn) = conn_to(9_999, proto::TCP);
    svc.on_payload(sample(&key, true, true, 1, REQUEST).content(), &mut dp);
    svc.conn_service(&key, &conn, dp.records[&key], &mut out);
    assert!(out.is_empty(), "one side alone is no http off its ports");
    assert!(svc.holds_nothing());
}

/// The host engine's agent: a decided connection's sampling stops at once, and the tracker
/// keeps the capability's word in the connection's record.
#[derive(Default)]
struct Host {
    records: std::collections::HashMap<FlowKey, u32>,
    /// The tracker does not know the connections yet (live, a sample read before its
    /// connection's event).
    unknown: bool,
    /// The connections whose sampling was narrowed to what may be a QUIC Initial.
    narrowed: Vec<FlowKey>,
}

impl ThresholdTarget for Host {
    fn set_thresholds(&mut self, _cmd: &ThresholdCommand) -> Result<u32, ThresholdError> {
        Ok(0)
    }
    fn lookup(&self, _key: &FlowKey) -> Option<Conn> {
        None
    }
    fn stop_sampling(&mut self, _key: &FlowKey) -> bool {
        true
    }
    fn narrow_sampling(&mut self, key: &FlowKey) -> bool {
        self.narrowed.push(*key);
        true
    }
    fn service_mut(&mut self, key: &FlowKey) -> Option<&mut u32> {
        if self.unknown {
            return None;
        }
        Some(self.records.entry(*key).or_insert(0))
    }
}

#[test]
fn a_decided_connection_keeps_its_names_in_its_record() {
    let (key, conn) = http_conn();
    let (other, other_conn) = conn_to(8080, proto::TCP);
    let mut svc = Service::new(PORTS);
    let mut dp = Host::default();
    for k in [key, other] {
        svc.on_payload(sample(&k, true, true, 1, REQUEST).content(), &mut dp);
        svc.on_payload(sample(&k, false, false, 1, REPLY).content(), &mut dp);
    }
    assert!(svc.holds_nothing(), "no table entry once decided");
    assert_eq!(dp.records[&key], dp.records[&other], "one set for both");
    for (k, c) in [(key, conn), (other, other_conn)] {
        let mut out = Vec::new();
        svc.conn_service(&k, &c, dp.records[&k], &mut out);
        assert_eq!(out, ["http"]);
    }
    // A record that kept nothing is a connection without service.
    assert!(logged(&mut svc, &key, &conn).is_empty());
}

#[test]
fn a_request_keeps_its_connection_sampled() {
    let (key, conn) = http_conn();
    let mut svc = Service::new(PORTS);
    let mut dp = Commands::default();
    svc.on_payload(
        sample(&key, true, true, 1000, &REQUEST[..3]).content(),
        &mut dp,
    );
    svc.on_payload(sample(&key, false, false, 5000, REPLY).content(), &mut dp);
    assert!(dp.1.is_empty(), "the request line may still come");
    svc.on_payload(
        sample(&key, true, true, 1003, &REQUEST[3..]).content(),
        &mut dp,
    );
    assert_eq!(logged(&mut svc, &key, &conn), ["http"]);
}

#[test]
fn a_final_answer_stops_sampling() {
    let (key, _) = http_conn();
    let mut svc = Service::new(PORTS);
    let mut dp = Commands::default();
    svc.on_payload(
        sample(&key, true, true, 1, b"SSH-2.0-OpenSSH_9.6\r\n").content(),
        &mut dp,
    );
    svc.on_payload(
        sample(&key, false, false, 1, b"SSH-2.0-OpenSSH_9.2\r\n").content(),
        &mut dp,
    );
    assert_eq!(dp.1, [key]);
    assert_eq!(svc.decided(&key), Some(vec!["ssh"]));
}

#[test]
fn udp_datagrams_no_detector_reads_keep_nothing_until_one_does() {
    // A UDP flow off every by-port analyzer's ports: most such flows carry nothing a
    // detector confirms, and keep no state.
    let (key, conn) = conn_to(4433, proto::UDP);
    let mut svc = Service::new(&[(443, proto::UDP)]);
    let mut dp = Commands::default();
    svc.on_payload(
        sample(&key, true, true, 0, b"hello, not quic").content(),
        &mut dp,
    );
    svc.on_payload(sample(&key, false, false, 0, b"reply").content(), &mut dp);
    assert_eq!(svc.udp.unrecorded(), 0);
    // The client's second datagram is a QUIC Initial (curl's first, as in quic.rs's tests):
    // it is kept, and the connection is `quic,ssl`.
    let initial = detect::test_util::hex(detect::test_util::QUIC_INITIAL);
    svc.on_payload(sample(&key, true, true, 0, &initial).content(), &mut dp);
    assert_eq!(svc.udp.unrecorded(), 1);
    assert_eq!(logged(&mut svc, &key, &conn), ["quic", "ssl"]);
    assert_eq!(svc.udp.unrecorded(), 0);
}

#[test]
fn a_udp_connection_keeps_marks_and_is_named_by_its_roles_as_logged() {
    // A DNS query on 53 and its answer: named at logging time (a later datagram could still
    // be a QUIC Initial), from the few bits kept per side.
    let (key, conn) = conn_to(53, proto::UDP);
    let mut svc = Service::new(&[(53, proto::UDP)]);
    let mut dp = Commands(Vec::new(), Vec::new(), true);
    let query: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01";
    svc.on_payload(sample(&key, true, true, 0, query).content(), &mut dp);
    svc.on_payload(sample(&key, false, false, 0, b"garbled").content(), &mut dp);
    assert!(dp.1.is_empty(), "not final: sampling goes on");
    assert!(svc.udp.is_pending(&key));
    assert_eq!(logged(&mut svc, &key, &conn), ["dns"]);
    assert_eq!(svc.udp.unrecorded(), 0);

    // QUIC is the client's: the Initial came from the key's `b` side, the originator, and
    // is read on that side; the record names it with `b` as originator.
    let (key, _) = conn_to(4433, proto::UDP);
    let mut svc = Service::new(&[(443, proto::UDP)]);
    let initial = detect::test_util::hex(detect::test_util::QUIC_INITIAL);
    svc.on_payload(sample(&key, false, true, 0, &initial).content(), &mut dp);
    let b_orig = Conn {
        orig_addr: key.addr_b,
        resp_addr: key.addr_a,
        orig_port: key.port_b,
        resp_port: key.port_a,
        proto: proto::UDP,
        ..Conn::ZERO
    };
    assert_eq!(logged(&mut svc, &key, &b_orig), ["quic", "ssl"]);
    // An Initial from the responder is not opened (Zeek's analyzer reads a responder's
    // packets with the server's keys): nothing, whatever the roles when logged.
    let mut other = Service::new(&[(443, proto::UDP)]);
    other.on_payload(sample(&key, false, false, 0, &initial).content(), &mut dp);
    assert!(logged(&mut other, &key, &b_orig).is_empty());
}

/// A DNS query on 53 and its answer.
const DNS_QUERY: &[u8] =
    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01";
const DNS_ANSWER: &[u8] =
    b"\x12\x34\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01";

#[test]
fn a_udp_connections_marks_are_kept_in_its_record() {
    let (key, conn) = conn_to(53, proto::UDP);
    let (other, other_conn) = conn_to(4433, proto::UDP);
    let mut svc = Service::new(&[(53, proto::UDP)]);
    let mut dp = Host::default();
    svc.on_payload(sample(&key, true, true, 0, DNS_QUERY).content(), &mut dp);
    assert_eq!(
        dp.narrowed,
        [key],
        "after DNS only a QUIC Initial can change the names"
    );
    svc.on_payload(sample(&key, false, false, 0, DNS_ANSWER).content(), &mut dp);
    assert_eq!(dp.narrowed, [key], "asked once");
    // Off the analyzers' ports a datagram that marks nothing leaves no state at all.
    svc.on_payload(
        sample(&other, true, true, 0, b"not quic").content(),
        &mut dp,
    );
    assert_eq!(dp.narrowed, [key], "nothing marked: sampled as before");
    assert_eq!(svc.udp.unrecorded(), 0, "nothing in the capability's table");
    assert_ne!(dp.records[&key], 0);
    assert_eq!(dp.records.get(&other).copied().unwrap_or(0), 0);
    let mut out = Vec::new();
    svc.conn_service(&key, &conn, dp.records[&key], &mut out);
    assert_eq!(out, ["dns"]);
    out.clear();
    svc.conn_service(&other, &other_conn, 0, &mut out);
    assert!(out.is_empty());
}

#[test]
fn a_udp_sample_read_before_its_connection_is_known_is_not_lost() {
    // The query's sample comes before the tracker has the connection, the answer's after.
    let (key, conn) = conn_to(53, proto::UDP);
    let mut svc = Service::new(&[(53, proto::UDP)]);
    let mut dp = Host {
        unknown: true,
        ..Host::default()
    };
    svc.on_payload(sample(&key, true, true, 0, DNS_QUERY).content(), &mut dp);
    assert_eq!(svc.udp.unrecorded(), 1);
    dp.unknown = false;
    svc.on_payload(sample(&key, false, false, 0, b"garbled").content(), &mut dp);
    assert_eq!(svc.udp.unrecorded(), 0, "moved into the record");
    let mut out = Vec::new();
    svc.conn_service(&key, &conn, dp.records[&key], &mut out);
    assert_eq!(out, ["dns"]);
    // Logged while still unknown to the tracker: from the table.
    let (key, conn) = conn_to(53, proto::UDP);
    let mut svc = Service::new(&[(53, proto::UDP)]);
    dp = Host {
        unknown: true,
        ..Host::default()
    };
    svc.on_payload(sample(&key, true, true, 0, DNS_QUERY).content(), &mut dp);
    out.clear();
    svc.conn_service(&key, &conn, 0, &mut out);
    assert_eq!(out, ["dns"]);
    assert_eq!(svc.udp.unrecorded(), 0);
}

#[test]
fn a_tcp_sample_read_before_its_connection_is_known_is_not_lost() {
    // The request's sample comes before the tracker has the connection, the reply's after:
    // the pending samples move into the record's word, and the answer is the same.
    let (key, conn) = http_conn();
    let mut svc = Service::new(PORTS);
    let mut dp = Host {
        unknown: true,
        ..Host::default()
    };
    svc.on_payload(sample(&key, true, true, 1, REQUEST).content(), &mut dp);
    assert_eq!(svc.unrecorded.len(), 1);
    dp.unknown = false;
    svc.on_payload(sample(&key, false, false, 1, REPLY).content(), &mut dp);
    assert!(svc.holds_nothing(), "moved into the record, then decided");
    let mut out = Vec::new();
    svc.conn_service(&key, &conn, dp.records[&key], &mut out);
    assert_eq!(out, ["http"]);
}

#[test]
fn samples_of_connections_never_recorded_do_not_pile_up() {
    // Live, a sample read after its connection was logged has no record to go to: its
    // request waits for a reply that never comes. Once many wait, those older than the limit
    // are dropped, with the samples they kept.
    let mut svc = Service::new(PORTS);
    let mut dp = Commands::default();
    let late = |n: u16, ts_ns: u64| {
        let (key, _) = conn_to(n, proto::TCP);
        let mut s = sample(&key, true, true, 1, REQUEST);
        s.hdr.ts_ns = ts_ns;
        s
    };
    for n in 1..=2000 {
        svc.on_payload(late(n, 1_000).content(), &mut dp);
    }
    assert_eq!(svc.unrecorded.len(), 2000, "none is old yet");
    assert_eq!(svc.slots.open_count(), 2000, "a slot per waiting request");
    // Minutes later (packet time), more: the old ones go, and their slots.
    let later = 1_000 + early::MAX_WAIT_NS + 1;
    for n in 3000..3100 {
        svc.on_payload(late(n, later).content(), &mut dp);
    }
    assert_eq!(svc.unrecorded.len(), 100, "only the recent ones wait");
    assert_eq!(svc.slots.open_count(), 100);
    assert!((3000..3100).all(|n| svc.unrecorded.get(&conn_to(n, proto::TCP).0).is_some()));
}

#[test]
fn a_successor_logs_the_service_its_predecessor_decided() {
    // Handover: the first agent saves each open connection's state as text; the next one,
    // another process with sets of its own, logs the same names from it.
    let ports = &[(80, proto::TCP), (53, proto::UDP)];
    let mut first = Service::new(ports);
    let mut dp = Host::default();
    let (http, http_conn) = http_conn();
    let (dns, dns_conn) = conn_to(53, proto::UDP);
    let (quiet, quiet_conn) = conn_from(40_002, 80, proto::TCP);
    let (waiting, waiting_conn) = conn_from(40_001, 80, proto::TCP);
    // Off HTTP's ports a request alone confirms nothing yet: nothing is carried.
    let (unsure, _) = conn_to(9_998, proto::TCP);
    for (k, from_a, data) in [
        (http, true, REQUEST),
        (http, false, REPLY),
        (dns, true, DNS_QUERY),
        (dns, false, DNS_ANSWER),
        (quiet, true, b"\x01\x02binary".as_slice()),
        (quiet, false, b"\x07reply".as_slice()),
        (waiting, true, REQUEST), // the reply is still to come
        (unsure, true, REQUEST),
    ] {
        svc_sample(&mut first, &mut dp, &k, from_a, data);
    }
    let mut next = Service::new(ports);
    let mut restored = Vec::new();
    for (k, c) in [
        (http, &http_conn),
        (dns, &dns_conn),
        (quiet, &quiet_conn),
        (waiting, &waiting_conn),
    ] {
        let saved = first.saved_service(&k, dp.records[&k]);
        let word = saved
            .as_deref()
            .map_or(0, |s| next.restored_service(k.proto, s).expect("read back"));
        let mut out = Vec::new();
        next.conn_service(&k, c, word, &mut out);
        restored.push((saved, out));
    }
    assert_eq!(
        restored,
        [
            (Some("tcp:http".to_string()), vec!["http"]),
            (Some(format!("udp1:{}", dp.records[&dns])), vec!["dns"]),
            // Ruled out for good at the first exchange: decided, with no names.
            (Some("tcp:".to_string()), vec![]),
            // On HTTP's port the request alone confirms it, as it would at logging.
            (Some("tcp:http".to_string()), vec!["http"]),
        ]
    );
    // What does not fit the connection's protocol, or is not ours, is not read.
    assert_eq!(next.restored_service(proto::UDP, "tcp:http"), None);
    assert_eq!(next.restored_service(proto::TCP, "udp1:5"), None);
    assert_eq!(next.restored_service(proto::UDP, "udp1:x"), None);
    assert_eq!(next.restored_service(proto::TCP, "http"), None);
    assert_eq!(first.saved_service(&http, 0), None, "no word");
    let unsure_word = dp.records[&unsure];
    assert_ne!(unsure_word, 0, "samples kept");
    assert_eq!(first.saved_service(&unsure, unsure_word), None);
    // Live, samples read before the connection's first event leave its word in the
    // capability's table, not in the record: it is carried all the same.
    let mut early = Service::new(ports);
    let mut unknown = Host {
        unknown: true,
        ..Host::default()
    };
    svc_sample(&mut early, &mut unknown, &http, true, REQUEST);
    svc_sample(&mut early, &mut unknown, &http, false, REPLY);
    svc_sample(&mut early, &mut unknown, &dns, true, DNS_QUERY);
    assert_eq!(early.saved_service(&http, 0).as_deref(), Some("tcp:http"));
    let dns_saved = early.saved_service(&dns, 0).expect("a UDP word");
    let word = next.restored_service(proto::UDP, &dns_saved).unwrap();
    let mut out = Vec::new();
    next.conn_service(&dns, &dns_conn, word, &mut out);
    assert_eq!(out, ["dns"]);
}

fn svc_sample(svc: &mut Service, dp: &mut Host, key: &FlowKey, from_a: bool, data: &[u8]) {
    svc.on_payload(sample(key, from_a, from_a, 1, data).content(), dp);
}

#[test]
fn a_connection_that_ends_unlogged_leaves_nothing_behind() {
    // Its removal event lost, or gone from the datapath unseen: no conn.log record asks for
    // its names, so its samples are released when the agent says it is forgotten.
    let mut svc = Service::new(PORTS);
    let mut dp = Host::default();
    let (key, _) = http_conn();
    svc.on_payload(sample(&key, true, true, 1, REQUEST).content(), &mut dp);
    assert_eq!(svc.slots.open_count(), 1, "the request waits for its reply");
    svc.forgotten_service(&key, dp.records[&key]);
    assert!(svc.holds_nothing());
    // The same for one whose word waits in the capability (no record yet).
    let mut dp = Host {
        unknown: true,
        ..Host::default()
    };
    let (other, _) = conn_to(8080, proto::TCP);
    svc.on_payload(sample(&other, true, true, 1, REQUEST).content(), &mut dp);
    assert!(!svc.holds_nothing());
    svc.forgotten_service(&other, 0);
    assert!(svc.holds_nothing());
    // And a UDP one's marks.
    let (dns, _) = conn_to(53, proto::UDP);
    svc.on_payload(sample(&dns, true, true, 1, DNS_QUERY).content(), &mut dp);
    assert_eq!(svc.udp.unrecorded(), 1);
    svc.forgotten_service(&dns, 0);
    assert_eq!(svc.udp.unrecorded(), 0);
}

#[test]
fn an_ftp_server_that_breaks_the_protocol_later_loses_ftp() {
    // Zeek's `ftp-missing-space-after-reply-code`: confirmed at the login, then a reply
    // without the space after its code, a violation that removes `ftp`.
    let ports: &[(u16, u8)] = &[(21, proto::TCP)];
    let mut svc = Service::new(ports);
    let mut dp = Host::default();
    let login = |svc: &mut Service, dp: &mut Host, key: &FlowKey| {
        svc_sample(svc, dp, key, false, b"220 py.fake ready\r\n");
        svc_sample(svc, dp, key, true, b"USER zeek\r\n");
    };
    let (key, conn) = conn_to(21, proto::TCP);
    login(&mut svc, &mut dp, &key);
    let mut out = Vec::new();
    svc.conn_service(&key, &conn, dp.records[&key], &mut out);
    assert_eq!(out, ["ftp"], "confirmed at the first exchange");
    // Again, now with the broken reply on the followed channel (extracted payload).
    let (key, conn) = conn_from(40_001, 21, proto::TCP);
    login(&mut svc, &mut dp, &key);
    let mut broken = sample(&key, false, false, 20, b"230_no_space\r\n");
    broken.hdr.flags &= !CONTENT_SAMPLE;
    svc.on_payload(broken.content(), &mut dp);
    out.clear();
    svc.conn_service(&key, &conn, dp.records[&key], &mut out);
    assert!(out.is_empty(), "{out:?}");
}
