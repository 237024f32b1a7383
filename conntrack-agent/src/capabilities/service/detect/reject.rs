//! Which TCP connections no detector can confirm, whatever they send next: decided (no
//! service) at their first exchange, so that their samples are neither kept nor taken.
//!
//! [`super::detect_tcp`] chooses its parsers by the first byte of each side, then tries HTTP,
//! then the analyzers Zeek attaches by port. Once both sides' first bytes are known, and the
//! first 8 of a client starting with 0 (PostgreSQL's startup), that choice cannot change: if
//! it leaves no parser, later bytes confirm nothing. Derived from the dispatch, as
//! [`super::is_final`] is; a parser added there has its first bytes added here.

use super::{Sample, Transport, http, postgresql};

/// The TCP ports of the analyzers Zeek attaches by port ([`super::detect_tcp`]'s last
/// step): FTP 21 and 2811 (any client command), DNS 53, Kerberos 88, Modbus 502, syslog 514,
/// MySQL 3306 and 1434. Any byte may confirm them there.
const BY_PORT: [u16; 8] = [21, 53, 88, 502, 514, 1434, 2811, 3306];

/// UDP: whether either of `ports` has an analyzer Zeek attaches by port
/// (`contents::UDP_ANALYZER_PORTS`, the datapath's too: see `contents::udp_sample_useful`).
/// Off them only a QUIC Initial can confirm anything ([`super::marks`]).
pub fn udp_by_port(ports: (u16, u16)) -> bool {
    conntrack_common::contents::udp_analyzer_port(ports.0, ports.1)
}

/// Whether no continuation of `s`'s streams can confirm a service: TCP, both sides have
/// sent, and in either orientation (Zeek may still flip the roles) neither side's first
/// bytes start a protocol [`super::detect_tcp`] parses, on ports no analyzer is attached to.
///
/// A parser needs the client's first bytes or the server's, so in both orientations that is
/// each side's bytes in neither role: both sides [`inert`].
pub fn rejects_for_good(s: &Sample) -> bool {
    s.transport == Transport::Tcp
        && !tcp_by_port((s.orig_port, s.resp_port))
        && inert(s.orig_stream())
        && inert(s.resp_stream())
}

/// TCP: whether either of `ports` has an analyzer Zeek attaches by port (any bytes may
/// confirm it).
fn tcp_by_port(ports: (u16, u16)) -> bool {
    BY_PORT.contains(&ports.0) || BY_PORT.contains(&ports.1)
}

/// TCP: whether `first`, the first bytes of one side's stream, start no protocol that
/// [`super::detect_tcp`] parses, in either role (port analyzers aside): not a client's first
/// bytes, not a server's, not a request line. Empty bytes are not (anything may follow).
fn inert(first: &[u8]) -> bool {
    let Some(&b) = first.first() else {
        return false;
    };
    // A client's first byte: the parsers tried first (SSH, TLS, XMPP, Redis, PostgreSQL,
    // LDAP, RDP, SOCKS).
    let client = match b {
        0 => !postgresql::ruled_out(first),
        b'S' | b's' | 0x16 | 0x80..=0xff | b'<' | b'*' | 0x30 | 3..=5 => true,
        _ => false,
    };
    // A server's first byte: SMTP, FTP, POP3, IMAP, IRC.
    let server = matches!(b, b'1' | b'2' | b'+' | b'*' | b':' | b'N' | b'P' | b'E');
    !client && !server && http::request_ruled_out(first)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{tcp, udp};
    use super::super::{MAX_SAMPLE_BYTES, detect};
    use super::*;

    const ZEROS: [u8; 64] = [0; 64];

    #[test]
    fn zero_bytes_on_an_ordinary_port_are_rejected() {
        assert!(rejects_for_good(&tcp((40000, 443), &[&ZEROS], &[&ZEROS])));
        assert!(rejects_for_good(&tcp(
            (40000, 80),
            &[b"\x01\x02"],
            &[b"\x07yz"]
        )));
        // Letters could start a request line if the roles flipped.
        assert!(!rejects_for_good(&tcp(
            (40000, 80),
            &[b"\x01\x02"],
            &[b"xyz"]
        )));
    }

    #[test]
    fn what_is_inert() {
        assert!(inert(&ZEROS));
        assert!(inert(b"\x01\x02binary"));
        for not in [
            &b""[..],
            b"GET /",
            b"\x16\x03\x01",
            b"SSH-2.0",
            b"220 ready",
            b"\0\0\0\x08",
        ] {
            assert!(!inert(not), "{not:?}");
        }
    }

    #[test]
    fn what_may_still_become_a_protocol_is_not() {
        let no = |orig: &[u8], resp: &[u8], port: u16| {
            assert!(
                !rejects_for_good(&tcp((40000, port), &[orig], &[resp])),
                "{orig:?} / {resp:?} on {port}"
            )
        };
        // One side has not spoken yet.
        no(b"", &ZEROS, 443);
        // PostgreSQL's startup message starts with zeros: its first 8 bytes decide.
        no(&ZEROS[..7], &ZEROS, 5432);
        no(b"\0\0\0\x08\x04\xd2\x16\x2f", &ZEROS, 5432);
        no(b"\0\0\0\x29\0\x03\0\0", &ZEROS, 5432);
        // A request line (after white space), a TLS record, an SSH banner, a server's 220.
        no(b"GE", &ZEROS, 8080);
        no(b"\r\n", &ZEROS, 80);
        no(b"\x16\x03\x01", &ZEROS, 443);
        no(b"SSH-2.0", &ZEROS, 22);
        no(&ZEROS, b"220 ready", 21);
        // Roles that may still flip: the server's bytes as a client's.
        no(b"220 ready", &ZEROS, 2121);
        // Where Zeek attaches analyzers by port any bytes may confirm.
        for p in BY_PORT {
            no(&ZEROS, &ZEROS, p);
        }
        assert!(!rejects_for_good(&udp((40000, 9999), &[&ZEROS], &[&ZEROS])));
    }

    /// A small deterministic generator (xorshift) for the property test.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn nothing_appended_to_a_rejected_exchange_is_detected() {
        // Continuations: real first messages of several protocols, and random bytes.
        let messages: [&[u8]; 6] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"220 ftp ready\r\n",
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"*1\r\n$4\r\nPING\r\n",
            b"+OK\r\n",
        ];
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut rejected = 0;
        for _ in 0..4000 {
            // First bytes from a small alphabet, so that rejections and near misses both come.
            let alphabet = b"\0\x01\x16 GS2+*:\r\nxE";
            let first = |rng: &mut u64| -> Vec<u8> {
                let n = 1 + next(rng) as usize % 9;
                (0..n)
                    .map(|_| alphabet[next(rng) as usize % alphabet.len()])
                    .collect()
            };
            let (o, r) = (first(&mut rng), first(&mut rng));
            let port = [80, 443, 8080, 21, 22][next(&mut rng) as usize % 5];
            if !rejects_for_good(&tcp((40000, port), &[&o], &[&r])) {
                continue;
            }
            rejected += 1;
            for (mo, mr) in [(0, 1), (2, 3), (4, 5), (1, 0), (3, 2)] {
                let extend = |head: &[u8], tail: &[u8]| {
                    let mut v = [head, tail].concat();
                    v.truncate(MAX_SAMPLE_BYTES);
                    v
                };
                let (lo, lr) = (extend(&o, messages[mo]), extend(&r, messages[mr]));
                let found = detect(&tcp((40000, port), &[&lo], &[&lr]));
                assert!(found.is_empty(), "{o:?} {r:?} then {found:?}");
                let swapped = detect(&tcp((port, 40000), &[&lr], &[&lo]));
                assert!(swapped.is_empty(), "flipped {r:?} {o:?} then {swapped:?}");
            }
        }
        assert!(rejected > 100, "the generator gave {rejected} rejections");
    }
}
