//! IRC (RFC 2812). Zeek attaches the IRC analyzer on ports 6666-6669, elsewhere by its
//! signatures: the client registers (`USER` and `NICK` lines, in either order) and the server
//! sends a numeric reply (`:server 001 ...`). `STARTTLS` (IRCv3's tls extension, reply 670)
//! switches the stream to TLS.

use super::bytes::{first_line, lines};
use super::{Sample, text};
use std::net::{IpAddr, Ipv4Addr};

const COMMANDS: [&[u8]; 6] = [b"NICK", b"USER", b"PASS", b"CAP", b"STARTTLS", b"SERVER"];

/// The ports Zeek's IRC analyzer is registered for.
const PORTS: [u16; 4] = [6666, 6667, 6668, 6669];

pub fn detect(s: &Sample, found: &mut Vec<&'static str>) -> bool {
    let (orig, resp) = (s.orig_stream(), s.resp_stream());
    let ok = if PORTS.iter().any(|&p| s.has_port(p)) {
        // Attached by port: a client command and a server message are IRC.
        first_line(orig).is_some_and(|l| {
            let w = text::first_word(l);
            COMMANDS.iter().any(|c| w.eq_ignore_ascii_case(c))
        }) && first_line(resp).is_some_and(is_server_message)
    } else {
        registers(orig) && lines(resp).any(is_numeric_reply)
    };
    if !ok {
        return false;
    }
    found.push("irc");
    if text::tls_after_command(orig, b"STARTTLS") {
        found.push("ssl");
    }
    true
}

/// The client's lines hold `USER` (with arguments) and `NICK`: Zeek's signatures for an
/// IRC client off its ports.
fn registers(orig: &[u8]) -> bool {
    let has = |verb: &[u8]| {
        lines(orig).any(|l| {
            let l = text::trim_start(l);
            text::first_word(l).eq_ignore_ascii_case(verb) && l.len() > verb.len() + 1
        })
    };
    has(b"USER") && has(b"NICK")
}

/// A numeric reply, `[:prefix ]NNN ...`: Zeek's signature for an IRC server's reply.
fn is_numeric_reply(line: &[u8]) -> bool {
    let rest = match line.strip_prefix(b":") {
        Some(p) => match p.iter().position(|&c| c == b' ') {
            Some(i) if i > 0 => &p[i + 1..],
            _ => return false,
        },
        None => line,
    };
    rest.len() > 3 && rest[..3].iter().all(u8::is_ascii_digit) && rest[3] == b' '
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

/// The data connections that the `DCC SEND` offers in these lines announce (the CTCP
/// message `PRIVMSG target :\x01DCC SEND file address port [size]\x01`, in either
/// direction; a file name with spaces is quoted), as Zeek's IRC analyzer reads them for its `irc_dcc_message` event: the offering
/// side listens on `address` (a decimal IPv4 address, or a textual one) and `port`, and
/// `dcc-send.zeek` expects a connection there from anyone. Other DCC types (CHAT, RESUME, ...)
/// and port 0 (a passive offer, where the receiver announces the port later) expect nothing.
pub fn dcc_sends(b: &[u8]) -> Vec<(IpAddr, u16)> {
    lines(b).filter_map(dcc_send).collect()
}

fn dcc_send(line: &[u8]) -> Option<(IpAddr, u16)> {
    let mut rest = line;
    // IRCv3 message tags (`@time=... `), then the sender's prefix (`:nick!user@host `).
    for mark in [b'@', b':'] {
        if rest.first() == Some(&mark) {
            let sp = rest.iter().position(|&c| c == b' ')?;
            rest = text::trim_start(&rest[sp..]);
        }
    }
    let (command, rest) = split_word(rest);
    if !command.eq_ignore_ascii_case(b"PRIVMSG") {
        return None;
    }
    let (_target, rest) = split_word(rest);
    let message = rest.strip_prefix(b":")?.strip_prefix(b"\x01")?;
    let message = message.split(|&c| c == 1).next()?;
    let (dcc, message) = split_word(message);
    let (kind, args) = split_word(message);
    if !dcc.eq_ignore_ascii_case(b"DCC") || !kind.eq_ignore_ascii_case(b"SEND") {
        return None;
    }
    // The file name, quoted when it holds spaces; then the address and the port.
    let rest = match args.strip_prefix(b"\"") {
        Some(quoted) => &quoted[quoted.iter().position(|&c| c == b'"')? + 1..],
        None => split_word(args).1,
    };
    let mut words = rest.split(|&c| c == b' ').filter(|w| !w.is_empty());
    let (addr, port) = (words.next()?, words.next()?);
    let addr = std::str::from_utf8(addr).ok()?;
    let addr = match addr.parse::<u32>() {
        Ok(n) => IpAddr::V4(Ipv4Addr::from(n)),
        Err(_) => addr.parse().ok()?,
    };
    let port: u16 = std::str::from_utf8(port).ok()?.parse().ok()?;
    (port != 0).then_some((addr, port))
}

/// The first word of `b` and what follows its space.
fn split_word(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&c| c == b' ') {
        Some(i) => (&b[..i], text::trim_start(&b[i + 1..])),
        None => (b, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::super::detect;
    use super::super::test_util::tcp;
    use super::dcc_sends;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn registration_and_a_server_message_are_irc() {
        let client = b"NICK zeek\r\nUSER zeek 0 * :zeek\r\n".as_slice();
        let server = b":irc.example.net NOTICE * :*** Looking up your hostname...\r\n".as_slice();
        assert_eq!(detect(&tcp((59069, 6667), &[client], &[server])), ["irc"]);
    }

    #[test]
    fn off_its_ports_irc_needs_a_registration_and_a_numeric_reply() {
        let client = b"NICK zeek\r\nUSER zeek 0 * :zeek\r\n".as_slice();
        let notice = b":irc.example.net NOTICE * :*** Looking up your hostname...\r\n".as_slice();
        let welcome = b":irc.example.net NOTICE * :*** Found your hostname\r\n\
            :irc.example.net 001 zeek :Welcome to the Internet Relay Network zeek\r\n"
            .as_slice();
        assert!(detect(&tcp((59069, 7000), &[client], &[notice])).is_empty());
        assert_eq!(detect(&tcp((59069, 7000), &[client], &[welcome])), ["irc"]);
        // A capability negotiation first: no registration among the client's lines yet.
        let cap = b"CAP LS 302\r\n".as_slice();
        assert!(detect(&tcp((59069, 7000), &[cap], &[welcome])).is_empty());
        assert_eq!(
            detect(&tcp((59069, 6667), &[cap], &[notice])),
            ["irc"],
            "by port"
        );
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

    /// From a capture of an IRC session with a DCC file offer and a DCC chat offer.
    #[test]
    fn a_dcc_send_offer_announces_the_senders_address_and_port() {
        let client = b"PRIVMSG tim1 :\x01DCC SEND ssh.trace 167772167 59130 1320211\x01\r\n\
            PRIVMSG tim1 :\x01DCC CHAT CHAT 167772167 59214\x01\r\n";
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
        assert_eq!(dcc_sends(client), [(v4, 59130)], "a chat offer is no file");
        // Relayed by the server, with tags and the sender's prefix; no size.
        let relayed = b"@time=2025-07-28T20:49:01.000Z :tim2!tim@10.0.0.7 PRIVMSG tim1 \
            :\x01DCC SEND \"my file.txt\" 167772167 59130\x01\r\n";
        assert_eq!(dcc_sends(relayed), [(v4, 59130)]);
        let v6 = b"PRIVMSG bob :\x01DCC SEND f.bin 2001:db8::7 4000 12\x01\r\n";
        assert_eq!(
            dcc_sends(v6),
            [("2001:db8::7".parse::<IpAddr>().unwrap(), 4000)]
        );
    }

    #[test]
    fn no_offer_no_expectation() {
        // A passive offer (port 0), a plain message, an unfinished line.
        assert!(dcc_sends(b"PRIVMSG bob :\x01DCC SEND f.bin 167772167 0 12 77\x01\r\n").is_empty());
        assert!(dcc_sends(b"PRIVMSG #testing :DCC SEND f 1 2 3\r\n").is_empty());
        assert!(dcc_sends(b"PRIVMSG bob :\x01DCC SEND f 167772167 59130").is_empty());
        assert!(dcc_sends(b"NOTICE bob :\x01DCC SEND f 167772167 59130\x01\r\n").is_empty());
    }
}
