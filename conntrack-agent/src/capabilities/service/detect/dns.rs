//! DNS (RFC 1035), over UDP and TCP. Zeek attaches its DNS analyzer by port (53 over UDP and
//! TCP, 137 for NetBIOS names, 5353 mDNS, 5355 LLMNR) and confirms it once a message parses:
//! a query alone is enough, so an unanswered query is `dns` too.

use super::bytes::be16;
use super::{Sample, on_port};

/// The UDP ports Zeek's DNS analyzer is registered for.
const UDP_PORTS: [u16; 4] = [53, 137, 5353, 5355];
/// The TCP port Zeek's DNS analyzer is registered for.
const TCP_PORT: u16 = 53;

/// UDP: datagram `d` of a connection between `ports`, from either side, confirms DNS: a DNS
/// message on a DNS port.
pub fn udp_datagram(ports: (u16, u16), d: &[u8]) -> bool {
    UDP_PORTS.iter().any(|&p| on_port(ports, p)) && is_message(d)
}

/// A TCP connection on port 53 whose first length-prefixed message, from either side, parses.
pub fn confirms_tcp(s: &Sample) -> bool {
    s.has_port(TCP_PORT) && (is_tcp_message(s.orig_stream()) || is_tcp_message(s.resp_stream()))
}

/// TCP frames each message with its length (RFC 1035 4.2.2); the sample may cut the message,
/// so a prefix that parses as far as it goes counts.
fn is_tcp_message(stream: &[u8]) -> bool {
    match be16(stream, 0) {
        Some(len) if len >= 12 => {
            let body = &stream[2..];
            is_message(&body[..body.len().min(len as usize)])
        }
        _ => false,
    }
}

/// `msg` is a DNS message: a header whose counts are plausible and whose questions parse.
/// The records after the questions are not needed to tell DNS from other traffic.
fn is_message(msg: &[u8]) -> bool {
    let (Some(flags), Some(qd), Some(an), Some(ns)) =
        (be16(msg, 2), be16(msg, 4), be16(msg, 6), be16(msg, 8))
    else {
        return false;
    };
    let opcode = (flags >> 11) & 0xf;
    // Zeek flags counts above `dns_max_queries` (25) as a violation, not DNS.
    if opcode > 6 || qd > 25 || (qd == 0 && an == 0 && ns == 0) {
        return false;
    }
    let mut at = 12;
    for _ in 0..qd {
        match skip_name(msg, at) {
            Some(end) if end + 4 <= msg.len() => at = end + 4,
            _ => return false,
        }
    }
    true
}

/// The offset just after the domain name at `at`: labels of up to 63 bytes ending in a zero
/// label or a compression pointer.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *msg.get(at)? as usize;
        match len {
            0 => return Some(at + 1),
            0xc0..=0xff => return msg.get(at + 1).map(|_| at + 2),
            1..=63 => at += 1 + len,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::detect;
    use super::super::test_util::{hex, tcp, udp};

    /// A AAAA query for upload.wikimedia.org and its reply (from a capture of a browser).
    const QUERY: &str =
        "a7f4010000010000000000000675706c6f61640977696b696d65646961036f726700001c0001";
    const REPLY: &str = "a7f4818000010000000100000675706c6f61640977696b696d65646961036f726700001c0001\
        c0130006000100000db70027036e7330c0130a686f73746d6173746572c01377dde9080000a8c000001c200012750000000258";

    #[test]
    fn query_and_reply_on_53_are_dns() {
        let (q, r) = (hex(QUERY), hex(REPLY));
        assert_eq!(detect(&udp((43927, 53), &[&q], &[&r])), ["dns"]);
    }

    #[test]
    fn an_unanswered_query_is_dns() {
        let q = hex(QUERY);
        assert_eq!(detect(&udp((43927, 53), &[&q], &[])), ["dns"]);
    }

    #[test]
    fn dns_on_another_port_is_not_attached() {
        let q = hex(QUERY);
        assert!(detect(&udp((43927, 4000), &[&q], &[])).is_empty());
    }

    #[test]
    fn other_traffic_on_53_is_not_dns() {
        let junk = b"GET / HTTP/1.1\r\n\r\n".as_slice();
        assert!(detect(&udp((43927, 53), &[junk], &[])).is_empty());
        let short = [0u8; 6];
        assert!(detect(&udp((43927, 53), &[&short], &[])).is_empty());
    }

    #[test]
    fn tcp_messages_carry_a_length() {
        let q = hex(QUERY);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        assert_eq!(detect(&tcp((40000, 53), &[&framed], &[])), ["dns"]);
        // Unframed, the length would be read from the id: not DNS.
        assert!(detect(&tcp((40000, 53), &[&q], &[])).is_empty());
    }
}
