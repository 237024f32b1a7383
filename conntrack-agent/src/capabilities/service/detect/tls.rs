//! SSL/TLS (RFC 8446, RFC 5246, and SSLv2's hello). Zeek's signatures attach the SSL analyzer
//! when the client starts with a ClientHello and the server answers with a ServerHello; the
//! same handshake after a STARTTLS exchange (SMTP, POP3, IMAP, FTP's AUTH TLS, IRC, XMPP,
//! LDAP, PostgreSQL) is handed to it by that protocol's analyzer.

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

/// Both sides start their streams with a TLS handshake: a ClientHello and a ServerHello.
pub fn confirms(orig: &[u8], resp: &[u8]) -> bool {
    starts_hello(orig, Hello::Client) && starts_hello(resp, Hello::Server)
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
    fn a_client_hello_answered_in_plain_http_is_not_ssl() {
        let c = hex(CLIENT);
        let http = b"HTTP/1.1 400 Bad Request\r\n\r\n".as_slice();
        assert!(detect(&tcp((20394, 80), &[&c], &[http])).is_empty());
        assert!(detect(&tcp((20394, 443), &[&c], &[])).is_empty());
    }
}
