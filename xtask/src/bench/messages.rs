//! The first messages of the protocols on the bench trace's server ports. Each direction's
//! payload starts with its protocol's opening message (HTTP request and response, TLS hellos,
//! SSH banners, DNS query and answer, a QUIC Initial, ...), so that service detection reads
//! on the bench what it reads on a real link: without them every payload is zeros, which the
//! detectors turn down at the first byte, and detection's measured cost would be too low.

/// A TCP flow's messages by its server port: (client's, server's).
fn tcp(port: u16) -> Option<(&'static [u8], &'static [u8])> {
    Some(match port {
        80 | 8080 => (HTTP_REQUEST, HTTP_RESPONSE),
        443 | 993 => (&TLS_CLIENT_HELLO, &TLS_SERVER_HELLO),
        22 => (
            b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5\r\n",
            b"SSH-2.0-OpenSSH_8.9p1 Debian-3\r\n",
        ),
        // The server's opening message is its greeting (RFC 5321 4.3.1), which Zeek's SMTP
        // signature needs from the responder.
        25 => (
            b"EHLO client.example.org\r\n",
            b"220 mail.example.org ESMTP Postfix\r\n",
        ),
        5432 => (&PG_STARTUP, &PG_AUTH_OK),
        6379 => (b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n"),
        _ => return None,
    })
}

/// A UDP flow's messages by its server port: (client's, server's).
fn udp(port: u16) -> Option<(&'static [u8], &'static [u8])> {
    Some(match port {
        53 | 5353 => (&DNS_QUERY, &DNS_ANSWER),
        123 => (&NTP_CLIENT, &NTP_SERVER),
        443 => (&QUIC_CLIENT_INITIAL, &QUIC_SERVER_INITIAL),
        _ => return None,
    })
}

/// The message a packet of a flow to `port` (`udp` or TCP) starts with, sent by the server
/// (`resp`) or the client; `None` for a port without one.
pub fn message(udp_flow: bool, port: u16, resp: bool) -> Option<&'static [u8]> {
    let (client, server) = if udp_flow { udp(port)? } else { tcp(port)? };
    Some(if resp { server } else { client })
}

/// The bytes of a packet's payload after its message (`rest`, zeros when called): a TLS
/// stream is records throughout, so on the TLS ports they are one application_data record
/// (its header, then zeros as ciphertext); zeros there would be a record the SSL analyzer
/// cannot read, a violation that takes `ssl` away again. Other protocols keep zeros.
pub fn fill_after(udp_flow: bool, port: u16, rest: &mut [u8]) {
    if udp_flow || !matches!(port, 443 | 993) || rest.len() < 5 {
        return;
    }
    let len = (rest.len() - 5).min(u16::MAX as usize) as u16;
    rest[..5].copy_from_slice(&[0x17, 0x03, 0x03, (len >> 8) as u8, len as u8]);
}

/// The payload length of a direction's first packet: the message whole (a datagram is exactly
/// its message; a segment holds at least it), else `len`.
pub fn first_len(udp_flow: bool, port: u16, resp: bool, len: u16) -> u16 {
    match message(udp_flow, port, resp) {
        Some(m) if udp_flow => m.len() as u16,
        Some(m) => len.max(m.len() as u16),
        None => len,
    }
}

const HTTP_REQUEST: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: */*\r\n\r\n";
const HTTP_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx\r\n\
Content-Type: text/html\r\nContent-Length: 1024\r\n\r\n";

/// A TLS 1.2-framed ClientHello (one cipher suite, no extensions): record header, handshake
/// header (type 1, length 41), version 3.3, 32 random bytes, no session id, suites, compression.
const TLS_CLIENT_HELLO: [u8; 50] = tls_hello(1, [0x00, 0x02, 0x13, 0x01, 0x01, 0x00]);
/// The ServerHello: the chosen suite and compression method.
const TLS_SERVER_HELLO: [u8; 47] = tls_hello(2, [0x13, 0x01, 0x00]);

const fn tls_hello<const N: usize, const T: usize>(kind: u8, tail: [u8; T]) -> [u8; N] {
    let mut b = [0u8; N];
    let body = (N - 9) as u16;
    let record = body + 4;
    let head = [
        0x16,
        0x03,
        0x01,
        (record >> 8) as u8,
        record as u8,
        kind,
        0,
        (body >> 8) as u8,
        body as u8,
        0x03,
        0x03,
    ];
    let mut i = 0;
    while i < head.len() {
        b[i] = head[i];
        i += 1;
    }
    // The random: any bytes.
    while i < head.len() + 32 {
        b[i] = (i as u8).wrapping_mul(37);
        i += 1;
    }
    // No session id.
    b[i] = 0;
    i += 1;
    let mut j = 0;
    while j < T {
        b[i + j] = tail[j];
        j += 1;
    }
    b
}

/// PostgreSQL's StartupMessage (protocol 3.0, user and database) and AuthenticationOk.
const PG_STARTUP: [u8; 33] = *b"\x00\x00\x00\x21\x00\x03\x00\x00user\0alice\0database\0app\0\0";
const PG_AUTH_OK: [u8; 9] = *b"R\x00\x00\x00\x08\x00\x00\x00\x00";

/// A recursive query for www.example.com's A record, and its answer (one record, by pointer).
const DNS_QUERY: [u8; 33] = *b"\x1a\x2b\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
\x03www\x07example\x03com\x00\x00\x01\x00\x01";
const DNS_ANSWER: [u8; 49] = *b"\x1a\x2b\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\
\x03www\x07example\x03com\x00\x00\x01\x00\x01\
\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04\x5d\xb8\xd8\x22";

/// NTPv4 client (mode 3) and server (mode 4, stratum 2) packets: 48 bytes each.
const NTP_CLIENT: [u8; 48] = ntp(0x23, 0);
const NTP_SERVER: [u8; 48] = ntp(0x24, 2);

const fn ntp(mode: u8, stratum: u8) -> [u8; 48] {
    let mut b = [0u8; 48];
    b[0] = mode;
    b[1] = stratum;
    b[2] = 6;
    b[3] = 0xe9;
    b
}

/// QUIC version 1 Initials, 1200 bytes as RFC 9000 requires of a client's. The client's
/// is RFC 9001 A.2's: its header and the first 16 bytes of its protected payload (a CRYPTO
/// frame with the ClientHello's start, once decrypted with the keys of its connection id, as
/// Zeek's analyzer and the agent do), then zeros where the rest of the ciphertext was.
const QUIC_CLIENT_INITIAL: [u8; 1200] = rfc9001_client_initial();
/// The server's: long header, 8-byte connection ids, no token, the remaining length, then
/// arbitrary bytes (only a client's Initial confirms QUIC).
const QUIC_SERVER_INITIAL: [u8; 1200] = quic_initial(0x22);

const fn rfc9001_client_initial() -> [u8; 1200] {
    const START: [u8; 38] = [
        0xc0, 0x00, 0x00, 0x00, 0x01, 0x08, 0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08, 0x00,
        0x00, 0x44, 0x9e, 0x7b, 0x9a, 0xec, 0x34, 0xd1, 0xb1, 0xc9, 0x8d, 0xd7, 0x68, 0x9f, 0xb8,
        0xec, 0x11, 0xd2, 0x42, 0xb1, 0x23, 0xdc, 0x9b,
    ];
    let mut b = [0u8; 1200];
    let mut i = 0;
    while i < START.len() {
        b[i] = START[i];
        i += 1;
    }
    b
}

const fn quic_initial(id: u8) -> [u8; 1200] {
    let mut b = [0u8; 1200];
    b[0] = 0xc3;
    b[4] = 1;
    b[5] = 8;
    let mut i = 6;
    while i < 14 {
        b[i] = id;
        i += 1;
    }
    b[14] = 8;
    i = 15;
    while i < 23 {
        b[i] = id ^ 0xff;
        i += 1;
    }
    // Token length 0, then the rest's length as a 2-byte varint.
    b[23] = 0;
    let rest = (1200 - 26) as u16;
    b[24] = 0x40 | (rest >> 8) as u8;
    b[25] = rest as u8;
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hellos_lengths_agree_with_their_headers() {
        for m in [&TLS_CLIENT_HELLO[..], &TLS_SERVER_HELLO[..]] {
            let record = u16::from_be_bytes([m[3], m[4]]) as usize;
            assert_eq!(record + 5, m.len());
            let body = u16::from_be_bytes([m[7], m[8]]) as usize;
            assert_eq!(body + 9, m.len());
        }
        assert_eq!(PG_STARTUP[3] as usize, PG_STARTUP.len());
    }

    #[test]
    fn the_quic_initials_length_fields_cover_their_datagrams() {
        // RFC 9001 A.2: 18 bytes of header, then the packet number and payload.
        let client = u16::from_be_bytes([QUIC_CLIENT_INITIAL[16], QUIC_CLIENT_INITIAL[17]]);
        assert_eq!((client & 0x3fff) as usize, QUIC_CLIENT_INITIAL.len() - 18);
        let server = u16::from_be_bytes([QUIC_SERVER_INITIAL[24], QUIC_SERVER_INITIAL[25]]);
        assert_eq!((server & 0x3fff) as usize, QUIC_SERVER_INITIAL.len() - 26);
    }

    #[test]
    fn tls_segments_stay_tls_records_after_the_hello() {
        let mut rest = [0u8; 20];
        fill_after(false, 443, &mut rest);
        assert_eq!(
            rest[..5],
            [0x17, 0x03, 0x03, 0, 15],
            "application_data, 15 bytes"
        );
        let mut rest = [0u8; 20];
        fill_after(false, 80, &mut rest);
        assert_eq!(rest, [0; 20], "other protocols keep zeros");
        fill_after(true, 443, &mut rest);
        assert_eq!(rest, [0; 20], "QUIC datagrams are their message");
    }

    #[test]
    fn datagrams_are_their_message_and_segments_hold_it() {
        assert_eq!(first_len(true, 53, false, 400), DNS_QUERY.len() as u16);
        assert_eq!(first_len(false, 80, true, 10), HTTP_RESPONSE.len() as u16);
        assert_eq!(first_len(false, 80, false, 1000), 1000);
        assert_eq!(first_len(true, 51820, false, 148), 148);
    }
}
