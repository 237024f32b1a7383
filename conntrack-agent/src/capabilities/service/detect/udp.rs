//! UDP protocols that Zeek attaches by port and that confirm on one message: DHCP, NTP, SIP,
//! SNMP, Kerberos; and RDPEUDP, which needs the handshake's SYN and SYN+ACK. Each is a
//! predicate over one datagram of a connection between `ports` (either side's; the port
//! checks are symmetric, as Zeek parses these in whichever direction they were seen), which
//! [`super::marks`] runs as each datagram arrives.

use super::bytes::{be16, be32};
use super::on_port;

/// DHCP (RFC 2131) on 67/68: a BOOTP request or reply for Ethernet with the DHCP magic cookie.
pub fn dhcp(ports: (u16, u16), d: &[u8]) -> bool {
    (on_port(ports, 67) || on_port(ports, 68))
        && d.len() >= 240
        && matches!(d[0], 1 | 2)
        && d[1] == 1
        && d[2] == 6
        && be32(d, 236) == Some(0x6382_5363)
}

/// NTP (RFC 5905) on 123: a 48-byte header of version 1 to 4 in a client, server, symmetric
/// or broadcast mode, or a control (6) or private (7) mode message.
pub fn ntp(ports: (u16, u16), d: &[u8]) -> bool {
    if !on_port(ports, 123) {
        return false;
    }
    let Some(&b) = d.first() else { return false };
    let (version, mode) = ((b >> 3) & 7, b & 7);
    match mode {
        1..=5 => (1..=4).contains(&version) && d.len() >= 48,
        6 | 7 => (2..=4).contains(&version) && d.len() >= 8,
        _ => false,
    }
}

/// SIP (RFC 3261) on 5060: a request line ending in `SIP/2.0` or a status line starting with it.
pub fn sip(ports: (u16, u16), d: &[u8]) -> bool {
    if !on_port(ports, 5060) {
        return false;
    }
    let line = super::bytes::first_line(d).unwrap_or(&[]);
    line.starts_with(b"SIP/2.0 ")
        || (line.ends_with(b" SIP/2.0")
            && line
                .iter()
                .position(|&c| c == b' ')
                .is_some_and(|i| line[..i].iter().all(u8::is_ascii_uppercase)))
}

/// SNMP (RFC 3416) on 161/162: a SEQUENCE holding the version (0, 1 or 3) and, for v1 and
/// v2c, the community string followed by a PDU.
pub fn snmp(ports: (u16, u16), d: &[u8]) -> bool {
    if !(on_port(ports, 161) || on_port(ports, 162)) {
        return false;
    }
    let Some((0x30, _, start)) = super::ber::header(d, 0) else {
        return false;
    };
    match super::ber::integer(d, start) {
        Some((0 | 1, next)) => match super::ber::header(d, next) {
            Some((0x04, len, at)) => d.get(at + len).is_some_and(|t| (0xa0..=0xa8).contains(t)),
            _ => false,
        },
        Some((3, next)) => d.get(next) == Some(&0x30),
        _ => false,
    }
}

/// Kerberos (RFC 4120) on 88: an AS-REQ, TGS-REQ, AS-REP, TGS-REP or KRB-ERROR.
pub fn krb(ports: (u16, u16), d: &[u8]) -> bool {
    on_port(ports, 88)
        && matches!(d.first(), Some(0x6a..=0x6d | 0x7e))
        && super::ber::header(d, 0).is_some_and(|(_, len, at)| at + len == d.len())
}

/// RDPEUDP (MS-RDPEUDP) on 3389: Zeek confirms once the client's SYN datagram
/// (`snSourceAck` -1, the SYN flag), its first, is answered by the server's SYN+ACK, its
/// first. This is the SYN.
pub fn rdpeudp_syn(ports: (u16, u16), d: &[u8]) -> bool {
    on_port(ports, 3389) && be32(d, 0) == Some(u32::MAX) && rdpeudp_flags(d) == RDP_SYN
}

/// RDPEUDP's SYN+ACK (see [`rdpeudp_syn`]).
pub fn rdpeudp_syn_ack(ports: (u16, u16), d: &[u8]) -> bool {
    on_port(ports, 3389) && d.len() >= 8 && rdpeudp_flags(d) == RDP_SYN | RDP_ACK
}

const RDP_SYN: u16 = 0x0001;
const RDP_ACK: u16 = 0x0004;

/// The SYN and ACK of an RDPEUDP header's flags.
fn rdpeudp_flags(d: &[u8]) -> u16 {
    be16(d, 6).unwrap_or(0) & (RDP_SYN | RDP_ACK)
}

#[cfg(test)]
mod tests {
    use super::super::detect;
    use super::super::test_util::{hex, udp};

    #[test]
    fn dhcp_discover() {
        let mut d =
            hex("010106000000 07c0 0000 0000 00000000 00000000 00000000 00000000 90b11c994929");
        d.resize(236, 0);
        d.extend_from_slice(&hex("63825363 350101 ff"));
        assert_eq!(detect(&udp((68, 67), &[&d], &[])), ["dhcp"]);
        assert!(detect(&udp((6800, 6700), &[&d], &[])).is_empty());
        d[236] = 0;
        assert!(detect(&udp((68, 67), &[&d], &[])).is_empty());
    }

    #[test]
    fn ntp_client_and_server() {
        let client = hex(
            "e3000800000000000000000000000000000000000000000000000000000000000000000000000000dbaca3e877c408ac",
        );
        let server = hex(
            "240108ec000000000000004147505373dbaca3e7f6d6ae36dbaca3e877c408acdbaca3e8820d178fdbaca3e8820e179e",
        );
        assert_eq!(detect(&udp((123, 123), &[&client], &[&server])), ["ntp"]);
        assert!(detect(&udp((123, 123), &[&client[..20]], &[])).is_empty());
    }

    #[test]
    fn rdpeudp_handshake() {
        let syn = hex("ffffffff0040180 10b127f1504d004d0"
            .replace(' ', "")
            .as_str());
        let syn_ack = hex("0b127f150040100 50f94ea0b04d004d0"
            .replace(' ', "")
            .as_str());
        assert_eq!(
            detect(&udp((61291, 3389), &[&syn], &[&syn_ack])),
            ["rdpeudp"]
        );
        // The SYN alone: the handshake failed.
        assert!(detect(&udp((61291, 3389), &[&syn], &[])).is_empty());
    }

    #[test]
    fn sip_and_snmp() {
        let invite = b"INVITE sip:bob@biloxi.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.com\r\n"
            .as_slice();
        assert_eq!(detect(&udp((5060, 5060), &[invite], &[])), ["sip"]);
        let get =
            hex("302602010104067075626c6963a019020400000001020100020100300b300906052b060102010500");
        assert_eq!(detect(&udp((40000, 161), &[&get], &[])), ["snmp"]);
    }
}
