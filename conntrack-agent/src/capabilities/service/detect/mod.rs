//! Service detectors: which of Zeek's protocol analyzers would confirm a connection, judged from
//! the first payload bytes of each direction.
//!
//! Zeek adds a name to `service` when an analyzer confirms its protocol. Most analyzers are
//! attached by dynamic protocol detection (a signature on each side, `dpd.sig`) or by port, and
//! confirm only once they have parsed what both sides sent (a request and its reply); a few
//! confirm on one side. Each module here is one analyzer's rule, written as a pure function
//! over a [`Sample`], with tests made from real messages.
//!
//! [`detect`] runs on every connection's first bytes, so it dispatches on the first byte of
//! each side before trying a parser and allocates nothing until a protocol matches.

mod ber;
mod binary_tcp;
mod dns;
mod ftp;
#[cfg(test)]
mod harness;
mod http;
mod imap;
mod irc;
mod ldap;
mod marks;
mod pop3;
mod postgresql;
mod quic;
mod reject;
mod smtp;
mod ssh;
mod syslog;
mod text;
mod tls;
mod udp;
mod websocket;
mod xmpp;

pub use ftp::{FtpExpect, Replies, ftp_announcements};
pub use irc::dcc_sends;
pub use marks::{Marks, SideMarks, marks, only_quic_can_change, position_matters, udp_names};
pub use reject::rejects_for_good;

/// How many bytes per direction detection looks at, at most: what the kernel copies of each
/// direction's first payload. Enough for a request line with its headers (the WebSocket
/// upgrade and the first frames after it) and any handshake's first message.
pub const MAX_SAMPLE_BYTES: usize = 512;

/// How many datagrams per direction a UDP sample holds at most.
pub const MAX_SAMPLE_DATAGRAMS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

/// The first payload of a connection, per direction, after Zeek's orientation.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub transport: Transport,
    /// The originator's port.
    pub orig_port: u16,
    pub resp_port: u16,
    /// What each side sent first. TCP: one slice, the start of that direction's byte stream
    /// in sequence order up to the first gap (may be empty). UDP: one slice per datagram, the
    /// first datagrams in order.
    pub orig: &'a [&'a [u8]],
    pub resp: &'a [&'a [u8]],
}

impl<'a> Sample<'a> {
    /// TCP: the originator's byte stream (empty if it sent nothing).
    fn orig_stream(&self) -> &'a [u8] {
        self.orig.first().copied().unwrap_or(&[])
    }

    /// TCP: the responder's byte stream (empty if it sent nothing).
    fn resp_stream(&self) -> &'a [u8] {
        self.resp.first().copied().unwrap_or(&[])
    }

    /// Either port is `port`: for the analyzers Zeek attaches by port, which parse a
    /// connection in whichever direction it was seen.
    fn has_port(&self, port: u16) -> bool {
        on_port((self.orig_port, self.resp_port), port)
    }
}

/// Either of `ports` is `port` (see [`Sample::has_port`]).
fn on_port(ports: (u16, u16), port: u16) -> bool {
    ports.0 == port || ports.1 == port
}

/// Zeek's service names this sample confirms, in Zeek's confirmation order (e.g. `["http",
/// "websocket", "ssh"]`, `["quic", "ssl"]`); empty when none.
pub fn detect(s: &Sample) -> Vec<&'static str> {
    run(s, false)
}

/// Whether `found`, what [`detect`] said of a connection's first bytes, is final: more bytes
/// of the same connection cannot change it, so its samples can be dropped once it is known.
///
/// Derived from the dispatch in [`detect_tcp`] and [`detect_udp`], not from any one detector:
/// - TCP: the last name is one that nothing follows (an encrypted stream after `ssl` or
///   `ssh`; `redis` and `rdp`, whose detectors are chosen by the client's first byte, so no
///   other detector is tried before them). Names found by port, or that a later message can
///   extend (HTTP's upgrades, STARTTLS, FTP's announcements), are not final.
/// - UDP: QUIC (tried first, on any datagram): another datagram could still be a QUIC
///   Initial for every other name.
/// - Nothing found is never final: a request split over segments confirms later.
pub fn is_final(transport: Transport, found: &[&str]) -> bool {
    match (transport, found.last()) {
        (Transport::Tcp, Some(&last)) => matches!(last, "ssl" | "ssh" | "redis" | "rdp"),
        (Transport::Udp, Some(_)) => found.first() == Some(&"quic"),
        (_, None) => false,
    }
}

/// Whether `found`, what [`detect`] said of the TCP sample `s`, stays as the streams grow,
/// although its names alone ([`is_final`]) do not say so: the sample already holds all that
/// decided it. Plain `http` whose reply head is complete and neither upgrades nor answers a
/// CONNECT; plain `postgresql` after a StartupMessage or a refused SSLRequest.
#[cfg(test)]
pub fn settled(s: &Sample, found: &[&str]) -> bool {
    match found {
        ["http"] => http::settled(s),
        ["postgresql"] => postgresql::settled(s.orig_stream(), s.resp_stream()),
        _ => false,
    }
}

/// [`detect`] for a TCP connection whose first packet had no SYN (Zeek's `IsPartial`: it was
/// picked up in the middle). Several analyzers (HTTP, SSL, SSH, RDP) ignore such connections.
pub fn detect_partial(s: &Sample) -> Vec<&'static str> {
    run(s, true)
}

/// The analyzers that ignore a TCP connection picked up in the middle (see
/// [`detect_partial`]), and WebSocket, which only an HTTP upgrade starts.
const SKIP_PARTIAL: [&str; 5] = ["http", "websocket", "ssl", "ssh", "rdp"];

/// Whether a TCP connection with this conn.log `history` was picked up in the middle (Zeek's
/// `IsPartial`): its first packet, the history's first letter (`^`, a flip, aside), had no SYN.
pub fn picked_up_midway(history: &[u8]) -> bool {
    history
        .iter()
        .find(|&&c| c != b'^')
        .is_some_and(|c| !b"SsHh".contains(c))
}

/// Removes from `names` (a TCP connection's) the analyzers that skip a connection picked up in
/// the middle: the names decided from its samples before its history was known.
pub fn drop_partial_skippers(names: &mut Vec<&'static str>) {
    names.retain(|n| !SKIP_PARTIAL.contains(n));
}

/// [`detect`] into `found` (cleared first): a vector the caller reuses, so that detecting
/// allocates nothing. Returns whether the answer stays as the streams grow: its names are
/// final ([`is_final`]) or the sample holds all that decided it ([`settled`]).
pub fn detect_into(s: &Sample, found: &mut Vec<&'static str>) -> bool {
    found.clear();
    let settled = match s.transport {
        Transport::Tcp => detect_tcp(s, true, found),
        Transport::Udp => {
            detect_udp(s, found);
            false
        }
    };
    settled || is_final(s.transport, found)
}

fn run(s: &Sample, partial: bool) -> Vec<&'static str> {
    let mut found = Vec::new();
    match s.transport {
        Transport::Tcp => {
            detect_tcp(s, !partial, &mut found);
        }
        Transport::Udp => detect_udp(s, &mut found),
    }
    found
}

/// `whole`: the connection started with a SYN (see [`detect_partial`]). Returns
/// [`settled`] of what it found, where a detector worked it out.
fn detect_tcp(s: &Sample, whole: bool, found: &mut Vec<&'static str>) -> bool {
    let (orig, resp) = (s.orig_stream(), s.resp_stream());
    if orig.is_empty() && resp.is_empty() {
        return false;
    }
    // Dispatch on the client's first byte (then the server's): each parser is tried only where
    // its protocol could start ([`reject`] mirrors these first bytes).
    // HTTP, SSL, SSH and RDP skip connections picked up in the middle.
    let matched = match orig.first().copied().unwrap_or(0) {
        b'S' | b's' if whole && ssh::confirms(orig, resp) => push(found, "ssh"),
        0x16 | 0x80..=0xff if whole && tls::confirms(orig, resp) => push(found, "ssl"),
        b'<' => xmpp::detect(orig, resp, found),
        b'*' => binary_tcp::redis(orig, resp) && push(found, "redis"),
        0 => postgresql::detect(orig, resp, found),
        0x30 => ldap::detect_tcp(orig, resp, found),
        3 => whole && binary_tcp::rdp(orig, resp) && push(found, "rdp"),
        4 | 5 if binary_tcp::socks(orig, resp) => push(found, "socks"),
        5 => binary_tcp::dce_rpc(orig, resp) && push(found, "dce_rpc"),
        _ => false,
    };
    if matched {
        return *found == ["postgresql"] && postgresql::settled(orig, resp);
    }
    if whole && let Some(settled) = http::detect(s, found) {
        return settled && *found == ["http"];
    }
    let matched = match resp.first().copied().unwrap_or(0) {
        b'1' | b'2' => smtp::detect(orig, resp, found) || ftp::detect(s, found),
        b'+' => pop3::detect(orig, resp, found),
        b'*' => imap::detect(orig, resp, found),
        b':' | b'N' | b'P' | b'E' => irc::detect(s, found),
        _ => false,
    };
    if matched {
        return false;
    }
    // The analyzers Zeek attaches by port (their ports are `reject::BY_PORT`'s).
    let by_port = (ftp::attached(s) && ftp::detect(s, found))
        || (dns::confirms_tcp(s) && push(found, "dns"))
        || (binary_tcp::modbus(s) && push(found, "modbus"))
        || (binary_tcp::krb_tcp(s) && push(found, "krb_tcp"))
        || binary_tcp::mysql(s, found)
        || (syslog::confirms_tcp(s) && push(found, "syslog_tcp"));
    let _ = by_port;
    false
}

/// UDP: the rules read one datagram at a time ([`marks`]).
fn detect_udp(s: &Sample, found: &mut Vec<&'static str>) {
    let ports = (s.orig_port, s.resp_port);
    let (orig, resp) = (
        SideMarks::of(ports, s.orig, true),
        SideMarks::of(ports, s.resp, false),
    );
    found.extend_from_slice(udp_names(&orig, &resp));
}

/// Adds `name`; true, so that a match arm can end with it.
fn push(found: &mut Vec<&'static str>, name: &'static str) -> bool {
    found.push(name);
    true
}

/// Byte-level helpers shared by the parsers.
mod bytes {
    /// Big-endian u16 at `at`, if there.
    pub fn be16(b: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
    }

    /// Big-endian u32 at `at`, if there.
    pub fn be32(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }

    /// `b` starts with `prefix`, ASCII case ignored.
    pub fn starts_with_ci(b: &[u8], prefix: &[u8]) -> bool {
        b.len() >= prefix.len() && b[..prefix.len()].eq_ignore_ascii_case(prefix)
    }

    /// The first line of `b` without its line end, if `b` holds a whole line (ended by LF).
    pub fn first_line(b: &[u8]) -> Option<&[u8]> {
        let end = memchr::memchr(b'\n', b)?;
        let line = &b[..end];
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }

    /// The lines of `b` (LF or CRLF ended); a last line without its end is left out, as it
    /// may be cut off by the sample's size.
    pub fn lines(b: &[u8]) -> impl Iterator<Item = &[u8]> {
        let mut rest = b;
        std::iter::from_fn(move || {
            let end = memchr::memchr(b'\n', rest)?;
            let line = &rest[..end];
            rest = &rest[end + 1..];
            Some(line.strip_suffix(b"\r").unwrap_or(line))
        })
    }

    /// Where `needle` first occurs in `hay`.
    pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        memchr::memmem::find(hay, needle)
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::{Sample, Transport};

    /// curl's first QUIC Initial (version 1, 16-byte destination id), its first 100 bytes:
    /// enough for the header protection's sample and the payload's first frames.
    pub const QUIC_INITIAL: &str = "cc0000000110815d62c70884f4b51e8ccadd5beed37214e5ec6b26584229be98a164349ae910351c40d10b004120ce43dfccf374eedfb3574208cf95e8d03303e0318b0f79d4779d91f428213c42a2793c25199d2ebb04a25c12fa42336fbc33b433bb7d";

    /// Decodes a hex string (whitespace ignored), as tshark prints payloads.
    pub fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    pub fn tcp<'a>(ports: (u16, u16), orig: &'a [&'a [u8]], resp: &'a [&'a [u8]]) -> Sample<'a> {
        Sample {
            transport: Transport::Tcp,
            orig_port: ports.0,
            resp_port: ports.1,
            orig,
            resp,
        }
    }

    pub fn udp<'a>(ports: (u16, u16), orig: &'a [&'a [u8]], resp: &'a [&'a [u8]]) -> Sample<'a> {
        Sample {
            transport: Transport::Udp,
            orig_port: ports.0,
            resp_port: ports.1,
            orig,
            resp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bytes::lines;
    use super::test_util::tcp;
    use super::*;

    #[test]
    fn nothing_sent_is_no_service() {
        assert!(detect(&tcp((40000, 80), &[], &[])).is_empty());
        assert!(detect(&tcp((40000, 80), &[b""], &[b""])).is_empty());
    }

    #[test]
    fn only_names_nothing_can_follow_are_final() {
        use Transport::{Tcp, Udp};
        // A TLS handshake, or SMTP after STARTTLS: encrypted from there on.
        assert!(is_final(Tcp, &["ssl"]));
        assert!(is_final(Tcp, &["smtp", "ssl"]));
        assert!(is_final(Tcp, &["ssh"]));
        // HTTP may still upgrade to WebSocket, SMTP may still STARTTLS, FTP announces.
        assert!(!is_final(Tcp, &["http"]));
        assert!(!is_final(Tcp, &["smtp"]));
        assert!(!is_final(Tcp, &["ftp"]));
        // A by-port name gives way to a protocol the next bytes may confirm.
        assert!(!is_final(Tcp, &["dns"]));
        assert!(!is_final(Tcp, &[]));
        assert!(is_final(Udp, &["quic", "ssl"]));
        assert!(
            !is_final(Udp, &["dns"]),
            "a later datagram may be a QUIC Initial"
        );
        assert!(!is_final(Udp, &[]));
    }

    #[test]
    fn plain_http_and_postgresql_are_settled_once_nothing_more_is_read() {
        let get: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let ok: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let settled_http = |o: &[u8], r: &[u8]| {
            let (o, r) = ([o], [r]);
            let s = tcp((40000, 80), &o, &r);
            detect(&s) == ["http"] && settled(&s, &["http"])
        };
        assert!(settled_http(get, ok));
        // The reply's head is cut: a later segment could still be anything.
        assert!(!settled_http(get, b"HTTP/1.1 200 OK\r\nContent-Le"));
        // An upgrade, or a CONNECT tunnel: the bytes after the heads are detected too.
        let upgrade: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n";
        assert!(!settled_http(get, upgrade));
        let connect: &[u8] = b"CONNECT a:443 HTTP/1.1\r\n\r\n";
        assert!(!settled_http(connect, b"HTTP/1.1 200 OK\r\n\r\n"));
        // PostgreSQL: a StartupMessage cannot be followed by TLS; an SSLRequest still may.
        let startup: &[u8] = b"\x00\x00\x00\x11\x00\x03\x00\x00user\0bob\0\0";
        let auth: &[u8] = b"R\x00\x00\x00\x08\x00\x00\x00\x00";
        let (o, r) = ([startup], [auth]);
        let s = tcp((40000, 5432), &o, &r);
        assert_eq!(detect(&s), ["postgresql"]);
        assert!(settled(&s, &["postgresql"]));
        let ssl_request: &[u8] = b"\x00\x00\x00\x08\x04\xd2\x16\x2f";
        let (o, r): ([&[u8]; 1], [&[u8]; 1]) = ([ssl_request], [b"S"]);
        let s = tcp((40000, 5432), &o, &r);
        assert_eq!(detect(&s), ["postgresql"]);
        assert!(
            !settled(&s, &["postgresql"]),
            "the TLS handshake is still to come"
        );
        // Nothing else is settled by content.
        let (o, r) = ([get], [ok]);
        assert!(!settled(&tcp((40000, 80), &o, &r), &["http", "websocket"]));
    }

    proptest::proptest! {
        /// What `detect_into` says of finality is the definition (`is_final` or `settled`),
        /// on the first bytes of real conversations, cut anywhere.
        #[test]
        fn detect_into_says_what_is_final_or_settled(
            o in 0..CLIENTS.len(),
            r in 0..SERVERS.len(),
            cut_o in 0usize..200,
            cut_r in 0usize..200,
            port in proptest::sample::select(vec![80u16, 8080, 5432, 25, 443, 22, 6379, 9999]),
        ) {
            let orig = &CLIENTS[o][..CLIENTS[o].len().min(cut_o)];
            let resp = &SERVERS[r][..SERVERS[r].len().min(cut_r)];
            let (os, rs) = ([orig], [resp]);
            let s = tcp((40000, port), &os, &rs);
            let mut found = Vec::new();
            let said = detect_into(&s, &mut found);
            proptest::prop_assert_eq!(
                said,
                is_final(Transport::Tcp, &found) || settled(&s, &found),
                "{:?}", found
            );
        }
    }

    const CLIENTS: [&[u8]; 8] = [
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\n\r\n\x16\x03\x01\x00\x05\x01\x00\x00\x01\x03",
        b"GET /chat HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"\x00\x00\x00\x11\x00\x03\x00\x00user\0bob\0\0",
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
        b"EHLO a\r\nSTARTTLS\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"*1\r\n$4\r\nPING\r\n",
    ];

    const SERVERS: [&[u8]; 8] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x03\x00\x05\x02\x00\x00\x01\x03",
        b"R\x00\x00\x00\x08\x00\x00\x00\x00",
        b"N",
        b"220 mail ESMTP\r\n250 ok\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"+PONG\r\n",
    ];

    #[test]
    fn a_connection_without_syn_first_was_picked_up_midway() {
        assert!(picked_up_midway(b"DdA"), "data first");
        assert!(picked_up_midway(b"^dDa"), "flipped, data first");
        assert!(!picked_up_midway(b"ShADadFf"));
        assert!(!picked_up_midway(b"^hADadFf"), "a SYN-ACK first");
        assert!(!picked_up_midway(b""));
    }

    #[test]
    fn a_midway_connection_keeps_only_analyzers_that_parse_it() {
        let mut names = vec!["http", "websocket", "ssh"];
        drop_partial_skippers(&mut names);
        assert!(names.is_empty());
        let mut names = vec!["smtp", "ssl"];
        drop_partial_skippers(&mut names);
        assert_eq!(names, ["smtp"]);
        let mut names = vec!["ftp"];
        drop_partial_skippers(&mut names);
        assert_eq!(names, ["ftp"]);
    }

    #[test]
    fn lines_leave_out_an_unfinished_last_line() {
        let got: Vec<&[u8]> = lines(b"a\r\nbc\nunfinished").collect();
        assert_eq!(got, vec![&b"a"[..], &b"bc"[..]]);
    }
}
