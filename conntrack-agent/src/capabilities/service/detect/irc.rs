//! IRC (RFC 2812). Zeek's signatures attach the IRC analyzer on a registration command from
//! the client and a prefixed message (`:server 001 ...`) from the server; `STARTTLS`
//! (IRCv3's tls extension, reply 670) switches the stream to TLS.

use super::bytes::first_line;
use super::{text, tls};

const COMMANDS: [&[u8]; 6] = [b"NICK", b"USER", b"PASS", b"CAP", b"STARTTLS", b"SERVER"];

pub fn detect(orig: &[u8], resp: &[u8], found: &mut Vec<&'static str>) -> bool {
    let command = first_line(orig).is_some_and(|l| {
        let w = text::first_word(l);
        COMMANDS.iter().any(|c| w.eq_ignore_ascii_case(c))
    });
    if !command || !first_line(resp).is_some_and(is_server_message) {
        return false;
    }
    found.push("irc");
    if let Some(at) = text::command_end(orig, b"STARTTLS")
        && tls::client_hello_after(orig, at)
    {
        found.push("ssl");
    }
    true
}

/// `:prefix COMMAND ...` or an unprefixed `NOTICE`/`PING`/`ERROR`.
fn is_server_message(line: &[u8]) -> bool {
    if let Some(rest) = line.strip_prefix(b":") {
        let mut words = rest.split(|&c| c == b' ');
        let prefix = words.next().unwrap_or(&[]);
        let command = words.next().unwrap_or(&[]);
        return !prefix.is_empty()
            && !command.is_empty()
            && (command.iter().all(u8::is_ascii_digit) && command.len() == 3
                || command.iter().all(u8::is_ascii_uppercase));
    }
    let w = text::first_word(line);
    [b"NOTICE".as_slice(), b"PING", b"ERROR"].contains(&w)
}

#[cfg(test)]
mod tests {
    use super::super::detect;
    use super::super::test_util::tcp;

    #[test]
    fn registration_and_a_server_message_are_irc() {
        let client = b"NICK zeek\r\nUSER zeek 0 * :zeek\r\n".as_slice();
        let server = b":irc.example.net NOTICE * :*** Looking up your hostname...\r\n".as_slice();
        assert_eq!(detect(&tcp((59069, 6667), &[client], &[server])), ["irc"]);
    }

    #[test]
    fn starttls_is_irc_and_ssl() {
        let client = b"STARTTLS\r\n\x16\x03\x01\x018\x01\x00\x014\x03\x03\x06\xae".as_slice();
        let server =
            b":irc.joulunet.org 670  :STARTTLS successful, go ahead with TLS handshake\r\n"
                .as_slice();
        assert_eq!(
            detect(&tcp((55123, 6667), &[client], &[server])),
            ["irc", "ssl"]
        );
    }
}
