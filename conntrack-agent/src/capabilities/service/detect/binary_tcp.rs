//! Binary TCP protocols recognised from their first message each way: MySQL, Redis (RESP),
//! SOCKS, Modbus/TCP, RDP (TPKT/X.224), Kerberos over TCP, DCE/RPC.

use super::bytes::{be16, be32};
use super::{Sample, tls};

/// MySQL (port 3306, where Zeek attaches it): the server's greeting, a packet with sequence 0
/// and protocol version 10, answered by the client's packet with sequence 1. A 32-byte answer
/// is an SSL request: TLS follows it, which the MySQL analyzer hands to the SSL analyzer.
pub fn mysql(s: &Sample, found: &mut Vec<&'static str>) -> bool {
    let (orig, resp) = (s.orig_stream(), s.resp_stream());
    let greeting = resp.len() > 5 && resp[3] == 0 && resp[4] == 10 && le24(resp) + 4 >= 5;
    let answer = orig.len() > 4 && orig[3] == 1 && le24(orig) > 0;
    if !((s.has_port(3306) || s.has_port(1434)) && greeting && answer) {
        return false;
    }
    found.push("mysql");
    if le24(orig) == 32 && orig.get(36..).is_some_and(tls::starts_client_hello) {
        found.push("ssl");
    }
    true
}

fn le24(b: &[u8]) -> usize {
    b[0] as usize | (b[1] as usize) << 8 | (b[2] as usize) << 16
}

/// Redis (RESP): the client sends an array of bulk strings (`*2\r\n$3\r\nGET\r\n...`) and the
/// server answers with a RESP value.
pub fn redis(orig: &[u8], resp: &[u8]) -> bool {
    let request = orig.first() == Some(&b'*')
        && resp_line(orig).is_some_and(|(n, rest)| n > 0 && rest.first() == Some(&b'$'));
    let reply = matches!(
        resp.first(),
        Some(b'+' | b'-' | b':' | b'$' | b'*' | b'_' | b'%' | b'#')
    ) && resp.windows(2).take(256).any(|w| w == b"\r\n");
    request && reply
}

/// The number after a RESP type byte, and what follows its line.
fn resp_line(b: &[u8]) -> Option<(u64, &[u8])> {
    let end = b.windows(2).position(|w| w == b"\r\n")?;
    let n = std::str::from_utf8(&b[1..end]).ok()?.parse().ok()?;
    Some((n, &b[end + 2..]))
}

/// DCE/RPC (connection-oriented, C706 chapter 12): Zeek's signature (`\x05[\x00\x01]
/// [\x00-\x13]`) or port 135 attaches the analyzer, which confirms once a whole PDU has
/// parsed: here the client's first, a 16-byte header (version 5.0 or 5.1, a packet type up to
/// 19, a data representation, the fragment length) and the fragment the sample holds whole.
/// The server's first bytes, as far as they go, must be a DCE/RPC header too (else a
/// violation takes `dce_rpc` away).
pub fn dce_rpc(orig: &[u8], resp: &[u8]) -> bool {
    whole_pdu(orig) && pdu_start(resp)
}

/// A DCE/RPC header's first bytes (as many as there are, up to its 16): version 5, minor
/// version 0 or 1, packet type at most 19.
fn pdu_start(b: &[u8]) -> bool {
    let checks: [fn(u8) -> bool; 3] = [|v| v == 5, |m| m <= 1, |t| t <= 0x13];
    b.iter().zip(checks).all(|(&byte, ok)| ok(byte))
}

/// `b` starts with a whole PDU: its header, and the fragment length (little- or big-endian by
/// the data representation) at least the header's and within `b`.
fn whole_pdu(b: &[u8]) -> bool {
    if b.len() < 16 || !pdu_start(b) {
        return false;
    }
    let frag_len = match b[4] & 0xf0 {
        0x10 => u16::from_le_bytes([b[8], b[9]]),
        0x00 => u16::from_be_bytes([b[8], b[9]]),
        _ => return false,
    } as usize;
    (16..=b.len()).contains(&frag_len)
}

/// SOCKS 4 (a CONNECT/BIND with a NUL-terminated user id, granted or refused) or SOCKS 5
/// (RFC 1928: a method list, and the server's choice).
pub fn socks(orig: &[u8], resp: &[u8]) -> bool {
    match orig.first() {
        Some(4) => {
            orig.len() >= 9
                && matches!(orig[1], 1 | 2)
                && orig[8..].contains(&0)
                && resp.len() >= 8
                && resp[0] == 0
                && (0x5a..=0x5d).contains(&resp[1])
        }
        Some(5) => {
            let n = *orig.get(1).unwrap_or(&0) as usize;
            n >= 1
                && orig.len() >= 2 + n
                && orig[2..2 + n].iter().all(|&m| m <= 0x09 || m >= 0x80)
                && resp.len() >= 2
                && resp[0] == 5
                && (resp[1] <= 0x09 || resp[1] >= 0x80)
        }
        _ => false,
    }
}

/// Modbus/TCP (port 502, where Zeek attaches it): an MBAP header with protocol 0 and a length
/// that matches, from the client, and from the server if it answered.
pub fn modbus(s: &Sample) -> bool {
    let mbap = |b: &[u8]| {
        matches!((be16(b, 2), be16(b, 4)), (Some(0), Some(len)) if (2..=254).contains(&len))
            && b.len() >= 8
    };
    let (orig, resp) = (s.orig_stream(), s.resp_stream());
    s.has_port(502) && mbap(orig) && (resp.is_empty() || mbap(resp))
}

/// RDP: a TPKT (RFC 1006) carrying an X.224 Connection Request, and the Connection Confirm.
pub fn rdp(orig: &[u8], resp: &[u8]) -> bool {
    let tpkt = |b: &[u8], code: u8| {
        b.len() >= 6
            && b[0] == 3
            && b[1] == 0
            && be16(b, 2).is_some_and(|l| l >= 7)
            && b[5] & 0xf0 == code
    };
    tpkt(orig, 0xe0) && tpkt(resp, 0xd0)
}

/// Kerberos over TCP (RFC 4120 7.2.2, port 88 where Zeek attaches it): a 4-byte length, then
/// an AS-REQ or TGS-REQ; the server's reply, if any, an AS-REP, TGS-REP or KRB-ERROR.
pub fn krb_tcp(s: &Sample) -> bool {
    let framed = |b: &[u8], tags: &[u8]| {
        be32(b, 0).is_some_and(|l| l > 0) && b.get(4).is_some_and(|t| tags.contains(t))
    };
    let (orig, resp) = (s.orig_stream(), s.resp_stream());
    s.has_port(88)
        && framed(orig, &[0x6a, 0x6c])
        && (resp.is_empty() || framed(resp, &[0x6b, 0x6d, 0x7e]))
}

#[cfg(test)]
mod tests {
    use super::super::detect;
    use super::super::test_util::{hex, tcp};

    #[test]
    fn redis_request_and_reply() {
        let get = b"*2\r\n$3\r\nGET\r\n$14\r\n:1:factorial_3\r\n".as_slice();
        let reply = b"$1\r\n6\r\n".as_slice();
        assert_eq!(detect(&tcp((50044, 10625), &[get], &[reply])), ["redis"]);
        assert!(detect(&tcp((50044, 10625), &[get], &[b"HTTP/1.1 200 OK\r\n"])).is_empty());
    }

    #[test]
    fn socks5_with_authentication() {
        let orig = b"\x05\x03\x00\x03\x02\x01\x03bob\x05alice".as_slice();
        let resp = b"\x05\x02\x01\x00".as_slice();
        assert_eq!(detect(&tcp((55951, 10080), &[orig], &[resp])), ["socks"]);
        assert!(detect(&tcp((55951, 10080), &[orig], &[b""])).is_empty());
    }

    #[test]
    fn modbus_on_502() {
        let req = b"\x00\x00\x00\x00\x00\x05\x00+\x0e\x01\x00".as_slice();
        let resp = b"\x00\x00\x00\x00\x00\x0c\x00+\x0e\x01\x00M\xb7\x00\x00\x00\x00\x00".as_slice();
        assert_eq!(detect(&tcp((54297, 502), &[req], &[resp])), ["modbus"]);
        assert!(detect(&tcp((54297, 5020), &[req], &[resp])).is_empty());
    }

    #[test]
    fn kerberos_as_req_and_error_on_88() {
        let req = b"\x00\x00\x00jjh0f\xa1\x03\x02\x01\x05\xa2\x03\x02\x01\n".as_slice();
        let err = b"\x00\x00\x00V~T0R\xa0\x03\x02\x01\x05\xa1\x03\x02\x01\x1e".as_slice();
        assert_eq!(detect(&tcp((43792, 88), &[req], &[err])), ["krb_tcp"]);
    }

    #[test]
    fn rdp_connection_request_and_confirm() {
        let cr = b"\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x03\x00\x00\x00"
            .as_slice();
        let cc =
            b"\x03\x00\x00\x13\x0e\xd0\x00\x00\x124\x00\x02\x1f\x08\x00\x02\x00\x00\x00".as_slice();
        assert_eq!(detect(&tcp((50000, 3389), &[cr], &[cc])), ["rdp"]);
    }

    /// A MySQL 8.0.28 greeting (Amazon RDS).
    const GREETING: &[u8] = b"J\x00\x00\x00\n8.0.28\x00\x18\x00\x00\x006Z\\=\x1ctQw\x00\xff\xff\xff\x02\x00\xff\xdf\x15";

    #[test]
    fn mysql_greeting_and_login() {
        let login = b"\xb8\x00\x00\x01\x85\xa6\xff\x01\x00\x00\x00\x01!\x00".as_slice();
        assert_eq!(
            detect(&tcp((58132, 3306), &[login], &[GREETING])),
            ["mysql"]
        );
        assert!(detect(&tcp((58132, 5432), &[login], &[GREETING])).is_empty());
    }

    #[test]
    fn mysql_ssl_request_then_tls() {
        let mut orig = b" \x00\x00\x01\x85\xae\xff \x00\x00\x00\x01!".to_vec();
        orig.resize(36, 0);
        orig.extend_from_slice(b"\x16\x03\x01\x00\xb7\x01\x00\x00\xb3\x03\x03\xc5v");
        assert_eq!(
            detect(&tcp((58132, 3306), &[&orig], &[GREETING])),
            ["mysql", "ssl"]
        );
    }

    #[test]
    fn a_bind_is_dce_rpc_on_any_port() {
        // Zeek's `modbus_and_non_modbus_on_port_502`: a DCE/RPC bind (72 bytes) to a Modbus
        // device, which answers with a Modbus exception echoing the first bytes.
        let bind = hex(
            "05000b03100000004800000001000000b810b8100000000001000000000001000883afe11f5dc911\
             91a408002b14a0fa03000000045d888aeb1cc9119fe808002b10486002000000",
        );
        let echo = hex("05000b030003008001");
        assert_eq!(detect(&tcp((38129, 502), &[&bind], &[&echo])), ["dce_rpc"]);
        assert_eq!(detect(&tcp((49700, 135), &[&bind], &[])), ["dce_rpc"]);
        // Cut before the fragment's end: not parsed yet.
        assert!(detect(&tcp((49700, 135), &[&bind[..40]], &[])).is_empty());
        // A server that answers something else: a violation.
        let other = hex("160301000003008001");
        assert!(detect(&tcp((38129, 502), &[&bind], &[&other])).is_empty());
        // A SOCKS 5 greeting and request are no PDU.
        let socks = hex("050100050100010a000001005000");
        assert!(!super::dce_rpc(&socks, &[]));
    }
}
