//! SMTP (RFC 5321). Zeek's signatures attach the SMTP analyzer on a `220` greeting from the
//! server and `HELO`/`EHLO` from the client; after `STARTTLS` and its `220` reply the stream
//! is TLS, which the SMTP analyzer hands to the SSL analyzer.

use super::bytes::{first_line, starts_with_ci};
use super::text;

pub fn detect(orig: &[u8], resp: &[u8], found: &mut Vec<&'static str>) -> bool {
    let greeting = first_line(resp).is_some_and(|l| text::reply_code(l) == Some(220));
    let client = text::trim_start(orig);
    if !greeting || !(starts_with_ci(client, b"HELO") || starts_with_ci(client, b"EHLO")) {
        return false;
    }
    found.push("smtp");
    if text::tls_after_command(orig, b"STARTTLS") {
        found.push("ssl");
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::detect;
    use super::super::test_util::tcp;

    const CLIENT: &[u8] =
        b"EHLO localhost\r\nMAIL FROM:<zeek@localhost>\r\nRCPT TO:<root@localhost>\r\n";
    const SERVER: &[u8] =
        b"220 example.com ESMTP Postfix (Debian/GNU)\r\n250-example.com\r\n250-PIPEL";

    #[test]
    fn greeting_and_ehlo_are_smtp() {
        assert_eq!(detect(&tcp((40864, 25), &[CLIENT], &[SERVER])), ["smtp"]);
        assert_eq!(detect(&tcp((40864, 2525), &[CLIENT], &[SERVER])), ["smtp"]);
    }

    #[test]
    fn starttls_then_a_client_hello_is_smtp_and_ssl() {
        let client =
            b"EHLO a\r\nSTARTTLS\r\n\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".as_slice();
        assert_eq!(
            detect(&tcp((40864, 25), &[client], &[SERVER])),
            ["smtp", "ssl"]
        );
    }

    #[test]
    fn a_greeting_alone_is_not_smtp() {
        assert!(detect(&tcp((40864, 25), &[b""], &[SERVER])).is_empty());
        let other = b"USER anonymous\r\n".as_slice();
        assert!(detect(&tcp((40864, 25), &[other], &[SERVER])) != ["smtp"]);
    }
}
