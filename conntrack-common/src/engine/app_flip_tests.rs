//! The application-analyzer orientation rules ([`super::app_flip`]) on crafted datagrams,
//! checked against the conn.log values Zeek writes.

use crate::conn::ConnStateCode::*;
use crate::proto;
use crate::testutil::*;

const NTP: &[(u16, u8)] = &[(123, proto::UDP)];
const DNS: &[(u16, u8)] = &[(53, proto::UDP), (5353, proto::UDP)];

#[test]
fn ntp_server_mode_from_originator_flips_mid_history_misordered_ntp() {
    // scripts.base.protocols.ntp.misordered-ntp: the server's reply is captured first.
    let mut sim = Sim::with_ports(NTP);
    sim.feed(
        &udp4_payload((B4, 123), (A4, 123), &ntp_msg(4, 48)),
        0,
        true,
    );
    sim.feed(
        &udp4_payload((A4, 123), (B4, 123), &ntp_msg(3, 48)),
        959,
        true,
    );
    let c = sim.only();
    assert_eq!(sim.hist(), "D^");
    assert_eq!((&c.orig_addr[12..], &c.resp_addr[12..]), (&A4[..], &B4[..]));
    // CONNSIZE counted the reply after the flip, for the role it arrived in.
    assert_eq!((c.orig_pkts(), c.resp_pkts()), (2, 0));
    assert_eq!((c.orig_ip_bytes(), c.resp_ip_bytes()), (152, 0));
    // The UDP adapter's byte counts stay with the roles.
    assert_eq!((c.orig_bytes(), c.resp_bytes()), (96, 0));
    assert_eq!(c.conn_state(), S0);
}

#[test]
fn ntp_client_mode_from_responder_flips_once() {
    let mut sim = Sim::with_ports(NTP);
    sim.feed(
        &udp4_payload((A4, 40000), (B4, 123), &ntp_msg(4, 48)),
        0,
        true,
    );
    assert_eq!(sim.hist(), "D^");
    // Now B:123 is the originator; A's client-mode message is from the responder (its
    // first data: `d`), but Zeek's NTP analyzer flips only once.
    sim.feed(
        &udp4_payload((A4, 40000), (B4, 123), &ntp_msg(3, 48)),
        1,
        true,
    );
    assert_eq!(sim.hist(), "D^d");
    assert_eq!(sim.only().orig_port, 123);
}

#[test]
fn ntp_in_expected_modes_does_not_flip() {
    let mut sim = Sim::with_ports(NTP);
    sim.feed(
        &udp4_payload((A4, 40000), (B4, 123), &ntp_msg(3, 48)),
        0,
        true,
    );
    sim.feed(
        &udp4_payload((B4, 123), (A4, 40000), &ntp_msg(4, 48)),
        1,
        true,
    );
    assert_eq!(sim.hist(), "Dd");
    assert_eq!(sim.only().orig_port, 40000);
}

#[test]
fn ntp_flip_needs_the_analyzer_attached_and_a_full_standard_message() {
    // Bare mode without the NTP scripts: 123/udp is no likely server port, no analyzer.
    let mut sim = Sim::default();
    sim.feed(
        &udp4_payload((B4, 123), (A4, 123), &ntp_msg(4, 48)),
        0,
        true,
    );
    assert_eq!(sim.hist(), "D");
    // A message shorter than the 48-byte standard message does not parse.
    let mut sim = Sim::with_ports(NTP);
    sim.feed(
        &udp4_payload((B4, 123), (A4, 123), &ntp_msg(4, 47)),
        0,
        true,
    );
    assert_eq!(sim.hist(), "D");
}

#[test]
fn dns_first_message_response_from_originator_flips() {
    let mut sim = Sim::with_ports(DNS);
    sim.feed(
        &udp4_payload((A4, 40000), (B4, 53), &dns_msg(true, 40)),
        0,
        true,
    );
    let c = sim.only();
    assert_eq!(sim.hist(), "D^");
    assert_eq!((c.orig_port, c.resp_port), (53, 40000));
    assert_eq!((c.orig_pkts(), c.resp_pkts()), (1, 0));
    assert_eq!(c.conn_state(), S0);
}

#[test]
fn dns_only_the_first_message_can_flip() {
    let mut sim = Sim::with_ports(DNS);
    sim.feed(
        &udp4_payload((A4, 40000), (B4, 53), &dns_msg(false, 40)),
        0,
        true,
    );
    sim.feed(
        &udp4_payload((A4, 40000), (B4, 53), &dns_msg(true, 40)),
        1,
        true,
    );
    assert_eq!(sim.hist(), "D");
    // A datagram shorter than the 12-byte header is not a message: the next one is first.
    let mut sim = Sim::with_ports(DNS);
    sim.feed(
        &udp4_payload((A4, 40000), (B4, 53), &dns_msg(true, 11)),
        0,
        true,
    );
    sim.feed(
        &udp4_payload((A4, 40000), (B4, 53), &dns_msg(true, 12)),
        1,
        true,
    );
    assert_eq!(sim.hist(), "D^");
}

#[test]
fn dns_response_to_multicast_responder_is_not_flipped() {
    let mut sim = Sim::with_ports(DNS);
    let mdns = [224, 0, 0, 251];
    sim.feed(
        &udp4_payload((A4, 5353), (mdns, 5353), &dns_msg(true, 40)),
        0,
        true,
    );
    assert_eq!(sim.hist(), "D");
    assert_eq!(sim.only().orig_port, 5353);
    assert_eq!(&sim.only().resp_addr[12..], &mdns);
}

#[test]
fn dns_bad_checksum_is_not_delivered_to_the_analyzer() {
    let mut sim = Sim::with_ports(DNS);
    sim.feed(
        &udp4_payload((A4, 40000), (B4, 53), &dns_msg(true, 40)),
        0,
        false,
    );
    sim.feed(
        &udp4_payload((A4, 40000), (B4, 53), &dns_msg(false, 40)),
        1,
        true,
    );
    sim.feed(
        &udp4_payload((A4, 40000), (B4, 53), &dns_msg(true, 40)),
        2,
        true,
    );
    assert_eq!(sim.hist(), "CD");
}

#[test]
fn multicast_is_class_d_or_ff00_8() {
    use super::app_flip::is_multicast;
    let v4 = |a: [u8; 4]| {
        let mut m = [0u8; 16];
        m[10] = 0xff;
        m[11] = 0xff;
        m[12..].copy_from_slice(&a);
        m
    };
    assert!(is_multicast(&v4([224, 0, 0, 251])));
    assert!(is_multicast(&v4([239, 255, 255, 250])));
    assert!(!is_multicast(&v4([240, 0, 0, 1])));
    assert!(!is_multicast(&v4([10, 0, 0, 1])));
    let mut ff02 = [0u8; 16];
    ff02[0] = 0xff;
    ff02[1] = 0x02;
    ff02[15] = 0xfb;
    assert!(is_multicast(&ff02));
    assert!(!is_multicast(&A6));
}
