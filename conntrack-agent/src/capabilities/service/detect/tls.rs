//! SSL/TLS (RFC 8446, RFC 5246, and SSLv2's hello). Zeek's SSL analyzer confirms on the
//! client's ClientHello: its DPD signature (`dpd_tls_client`) matches the client's side
//! alone (since Zeek 4.2), and the analyzer attached by port needs no signature. The server's
//! answer only takes `ssl` away again: a record the analyzer cannot parse is a protocol
//! violation, after which Zeek removes the confirmed service (a TLS client at a plain HTTP
//! server). The same handshake after a STARTTLS exchange (SMTP, POP3, IMAP, FTP's AUTH TLS,
//! IRC, XMPP, LDAP, PostgreSQL) is handed to it by that protocol's analyzer.

/// What a hello record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hello {
    Client,
    Server,
}

/// `b` starts with a TLS handshake record (SSL 3.0 to TLS 1.3 framing) holding a hello of
/// this kind, or an SSLv2 record holding one.
fn starts_hello(b: &[u8], kind: Hello) -> bool {
    let want = match kind {
        Hello::Client => 1,
        Hello::Server => 2,
    };
    if b.len() >= 10 && b[0] == 0x16 && b[1] == 3 && b[2] <= 4 {
        // Record header (type, version, length), then handshake type, 3-byte length, and the
        // hello's own version, which is 3.x too.
        let record_len = u16::from_be_bytes([b[3], b[4]]);
        return record_len >= 4 && b[5] == want && b[9] == 3;
    }
    // SSLv2: a 2-byte length with the top bit set, then the message type (1 CLIENT-HELLO,
    // 4 SERVER-HELLO) and a version 2.0 or 3.x.
    let v2_type = match kind {
        Hello::Client => 1,
        Hello::Server => 4,
    };
    match kind {
        Hello::Client => {
            b.len() >= 5
                && b[0] & 0x80 != 0
                && b[2] == v2_type
                && matches!((b[3], b[4]), (0, 2) | (3, 0..=4))
        }
        Hello::Server => {
            b.len() >= 7
                && b[0] & 0x80 != 0
                && b[2] == v2_type
                && matches!((b[5], b[6]), (0, 2) | (3, 0..=4))
        }
    }
}

/// The client starts its stream with a ClientHello as Zeek's signature reads it (TLS framing;
/// an SSLv2 hello needs the server's SSLv2 hello too, as Zeek's SSLv2 signature is no longer
/// loaded by default), and neither side's records, as far as they go, violate TLS framing.
pub fn confirms(orig: &[u8], resp: &[u8]) -> bool {
    if orig.first().is_some_and(|b| b & 0x80 != 0) {
        return starts_hello(orig, Hello::Client) && starts_hello(resp, Hello::Server);
    }
    signature_client_hello(orig) && records_parse(orig) && records_parse(resp)
}

/// `dpd_tls_client`: a handshake record of SSL 3.0 to TLS 1.2 framing holding a ClientHello
/// whose own version is 3.0 to 3.3.
fn signature_client_hello(b: &[u8]) -> bool {
    b.len() >= 11 && b[0] == 0x16 && b[1] == 3 && b[2] <= 3 && b[5] == 1 && b[9] == 3 && b[10] <= 3
}

/// Whether the SSL analyzer reads `b`, one side's first bytes, without a violation: records
/// of a type it parses (change_cipher_spec, alert, handshake, application_data, heartbeat:
/// 20 to 24) and a record-layer version of SSL 3.0 to TLS 1.2, one after the other (a record
/// cut off by the sample's end is not read yet); a server may also answer with an SSLv2
/// ServerHello.
fn records_parse(b: &[u8]) -> bool {
    if b.first().is_some_and(|b| b & 0x80 != 0) {
        return starts_hello(b, Hello::Server);
    }
    let mut at = 0;
    while let Some(h) = b.get(at..at + 5) {
        if !(20..=24).contains(&h[0]) || h[1] != 3 || h[2] > 3 {
            return false;
        }
        at += 5 + usize::from(u16::from_be_bytes([h[3], h[4]]));
    }
    true
}

/// The client starts a TLS handshake somewhere after `from` in its stream, after a
/// protocol's STARTTLS exchange: a ClientHello record at a message boundary.
pub fn client_hello_after(orig: &[u8], from: usize) -> bool {
    (from..orig.len()).any(|i| orig[i] == 0x16 && starts_hello(&orig[i..], Hello::Client))
}

/// A ClientHello at the very start of this stream.
pub fn starts_client_hello(b: &[u8]) -> bool {
    starts_hello(b, Hello::Client)
}

#[cfg(test)]
mod tests {
    use super::super::detect;
    use super::super::test_util::{hex, tcp};

    /// The first bytes of a browser's ClientHello and a server's ServerHello (TLS 1.2 framing).
    const CLIENT: &str = "16030102000100 01fc0303c9bcee53a4cea20ae58758dd96156532";
    const SERVER: &str = "1603030d0302000046 03035acc7f3d63aab6cd3bd6d94c1abad16e";

    #[test]
    fn hellos_from_both_sides_are_ssl() {
        let (c, s) = (hex(CLIENT), hex(SERVER));
        assert_eq!(detect(&tcp((20394, 443), &[&c], &[&s])), ["ssl"]);
        assert_eq!(detect(&tcp((20394, 8443), &[&c], &[&s])), ["ssl"]);
    }

    #[test]
    fn a_client_hello_alone_is_ssl_on_any_port() {
        let c = hex(CLIENT);
        assert_eq!(detect(&tcp((20394, 443), &[&c], &[])), ["ssl"]);
        assert_eq!(detect(&tcp((20394, 8443), &[&c], &[])), ["ssl"]);
    }

    #[test]
    fn a_client_hello_answered_in_plain_http_is_not_ssl() {
        // Zeek's `request-response-protocol-differences` (https-to-http): the server's reply is
        // no TLS record, a violation that removes `ssl`.
        let c = hex(CLIENT);
        let http = b"HTTP/1.1 400 Bad Request\r\n\r\n".as_slice();
        assert!(detect(&tcp((20394, 80), &[&c], &[http])).is_empty());
        assert!(detect(&tcp((20394, 443), &[&c], &[http])).is_empty());
    }

    #[test]
    fn a_reply_that_frames_as_tls_keeps_ssl() {
        // A Modbus device on 502 answering a ClientHello with an exception whose first bytes
        // echo the hello's (Zeek's `modbus_and_non_modbus_on_port_502`): an empty handshake
        // record, then a record header not yet complete. Nothing the analyzer cannot read.
        let c = hex("1603010085010000810303736ff818542129f78f492d9b1557dafcc7926f075fa3");
        let reply = hex("160301000003008001");
        assert_eq!(detect(&tcp((58380, 502), &[&c], &[&reply])), ["ssl"]);
        // The same with a record type the analyzer does not parse: a violation.
        let bad = hex("190301000003008001");
        assert!(detect(&tcp((58380, 502), &[&c], &[&bad])).is_empty());
    }
}
