//! PostgreSQL's frontend/backend protocol (version 3). Zeek's analyzer is attached on port
//! 5432 and by signature; it confirms once the client's startup (or SSLRequest) and the
//! server's answer parse. After an accepted SSLRequest the stream is TLS (`ssl`).

use super::bytes::be32;
use super::tls;

/// The protocol version 3.0 of a StartupMessage.
const PROTOCOL_3: u32 = 0x0003_0000;
/// The request codes of an SSLRequest and a GSSENCRequest.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

pub fn detect(orig: &[u8], resp: &[u8], found: &mut Vec<&'static str>) -> bool {
    let (Some(len), Some(code)) = (be32(orig, 0), be32(orig, 4)) else {
        return false;
    };
    match code {
        SSL_REQUEST | GSSENC_REQUEST if len == 8 => match resp.first() {
            // Accepted: TLS follows.
            Some(b'S') if resp.len() == 1 || tls::starts_client_hello(&orig[8..]) => {
                found.push("postgresql");
                if tls::starts_client_hello(&orig[8..]) {
                    found.push("ssl");
                }
                true
            }
            // Refused: the startup message follows in the clear.
            Some(b'N') => {
                let (orig, resp) = (&orig[8..], &resp[1..]);
                let ok = startup(orig) && backend(resp);
                if ok {
                    found.push("postgresql");
                }
                ok
            }
            _ => false,
        },
        PROTOCOL_3 if startup(orig) && backend(resp) => {
            found.push("postgresql");
            true
        }
        _ => false,
    }
}

/// Whether [`detect`]'s plain `postgresql` stays as the streams grow: the client began with a
/// StartupMessage, or the server refused its SSLRequest (`N`), so no TLS handshake can follow.
pub fn settled(orig: &[u8], resp: &[u8]) -> bool {
    match be32(orig, 4) {
        Some(PROTOCOL_3) => true,
        Some(SSL_REQUEST | GSSENC_REQUEST) => resp.first() == Some(&b'N'),
        _ => false,
    }
}

/// Whether no continuation of `orig`, a client's first bytes, can be a StartupMessage, an
/// SSLRequest or a GSSENCRequest: its first 8 bytes are there and are none of them.
pub fn ruled_out(orig: &[u8]) -> bool {
    let (Some(len), Some(code)) = (be32(orig, 0), be32(orig, 4)) else {
        return false;
    };
    let request = matches!(code, SSL_REQUEST | GSSENC_REQUEST) && len == 8;
    !request && code != PROTOCOL_3
}

/// A StartupMessage: a sane length, version 3.0, then `name\0value\0` pairs ending in `\0`.
fn startup(b: &[u8]) -> bool {
    let (Some(len), Some(PROTOCOL_3)) = (be32(b, 0), be32(b, 4)) else {
        return false;
    };
    if !(9..=10_000).contains(&len) {
        return false;
    }
    let params = &b[8..b.len().min(len as usize)];
    params.first().is_some_and(|c| c.is_ascii_alphabetic())
}

/// The server's first message: an authentication request (`R`) or an error (`E`), each with a
/// length that covers at least its own field and the content.
fn backend(b: &[u8]) -> bool {
    let Some(len) = be32(b, 1) else { return false };
    match b[0] {
        b'R' => (8..=10_000).contains(&len),
        b'E' => (5..=10_000).contains(&len),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::detect;
    use super::super::test_util::tcp;

    const STARTUP: &[u8] =
        b"\x00\x00\x00-\x00\x03\x00\x00user\x00user\x00database\x00plant_service_db\x00\x00";
    const AUTH: &[u8] = b"R\x00\x00\x00\x0c\x00\x00\x00\x05\x9ef\xd5\x9b";

    #[test]
    fn startup_and_authentication_are_postgresql() {
        assert_eq!(
            detect(&tcp((59060, 5432), &[STARTUP], &[AUTH])),
            ["postgresql"]
        );
        assert_eq!(
            detect(&tcp((59060, 15432), &[STARTUP], &[AUTH])),
            ["postgresql"]
        );
    }

    #[test]
    fn a_refused_ssl_request_then_startup() {
        let mut orig = b"\x00\x00\x00\x08\x04\xd2\x16/".to_vec();
        orig.extend_from_slice(STARTUP);
        let mut resp = b"N".to_vec();
        resp.extend_from_slice(AUTH);
        assert_eq!(
            detect(&tcp((59060, 5432), &[&orig], &[&resp])),
            ["postgresql"]
        );
    }

    #[test]
    fn an_accepted_ssl_request_then_tls() {
        let orig =
            b"\x00\x00\x00\x08\x04\xd2\x16/\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".as_slice();
        assert_eq!(
            detect(&tcp((59060, 5432), &[orig], &[b"S"])),
            ["postgresql", "ssl"]
        );
    }

    #[test]
    fn broken_messages_are_not() {
        // A startup length of 3, and a server message with a length of 1.
        let bad_startup = b"\x00\x00\x00\x03\x00\x03\x00\x00user\x00zeek\x00\x00".as_slice();
        let error = b"E\x00\x00\x00\x14SINFO\x00MTest Error\x00\x00".as_slice();
        assert!(detect(&tcp((54906, 5432), &[bad_startup], &[error])).is_empty());
        let good_startup = b"\x00\x00\x00\x13\x00\x03\x00\x00user\x00zeek\x00\x00".as_slice();
        assert!(
            detect(&tcp(
                (54958, 5432),
                &[good_startup],
                &[b"Z\x00\x00\x00\x01\x00\x00"]
            ))
            .is_empty()
        );
    }
}
