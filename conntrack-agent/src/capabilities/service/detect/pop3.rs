//! POP3 (RFC 1939, RFC 2595 for STLS). Zeek's signatures attach the POP3 analyzer on a
//! `+OK` greeting from the server and a POP3 command from the client.

use super::bytes::{first_line, lines};
use super::text;

const COMMANDS: [&[u8]; 9] = [
    b"USER", b"APOP", b"CAPA", b"AUTH", b"STLS", b"PASS", b"STAT", b"LIST", b"QUIT",
];

pub fn detect(orig: &[u8], resp: &[u8], found: &mut Vec<&'static str>) -> bool {
    let greeting = first_line(resp).is_some_and(|l| l.starts_with(b"+OK"));
    let command = first_line(orig).is_some_and(|l| {
        let w = text::first_word(l);
        COMMANDS.iter().any(|c| w.eq_ignore_ascii_case(c))
    });
    if !greeting || !command || !answered(resp) {
        return false;
    }
    found.push("pop3");
    if text::tls_after_command(orig, b"STLS") {
        found.push("ssl");
    }
    true
}

/// The server's reply to the first command (its second line) is a status: `+OK`, `-ERR`, or
/// a `+ ` continuation. Anything else is a violation that removes the service.
fn answered(resp: &[u8]) -> bool {
    lines(resp)
        .nth(1)
        .is_none_or(|l| l.starts_with(b"+") || l.starts_with(b"-ERR"))
}

#[cfg(test)]
mod tests {
    use super::super::detect;
    use super::super::test_util::tcp;

    const SERVER: &[u8] =
        b"+OK POP server ready H mimap4 0MHoUr-1VDxRD3Ui5-003eq2\r\n+OK Capability";

    #[test]
    fn greeting_and_a_command_are_pop3() {
        assert_eq!(
            detect(&tcp((26272, 110), &[b"CAPA\r\nQUIT\r\n"], &[SERVER])),
            ["pop3"]
        );
    }

    #[test]
    fn stls_then_tls_is_pop3_and_ssl() {
        let client = b"STLS\r\n\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03-\x1c".as_slice();
        let server = b"+OK ladymacbeth.local Cyrus POP3 v2.3.16 server ready\r\n+OK Begin TLS\r\n"
            .as_slice();
        assert_eq!(
            detect(&tcp((54775, 110), &[client], &[server])),
            ["pop3", "ssl"]
        );
    }

    #[test]
    fn garbage_for_a_reply_is_a_violation() {
        let client = b"LIST\r\nRETR 1\r\nQUIT\r\n".as_slice();
        let server =
            b"+OK example.com POP3-Server\r\nGARBAGE (and LIST response missing .)\r\n".as_slice();
        assert!(detect(&tcp((58854, 110), &[client], &[server])).is_empty());
    }

    #[test]
    fn redis_pings_are_not_pop3() {
        let ping = b"PING\r\n".as_slice();
        assert!(detect(&tcp((40000, 6379), &[ping], &[b"+PONG\r\n"])) != ["pop3"]);
    }
}
