//! What a WebSocket (RFC 6455) carries, and what an HTTP CONNECT tunnel carries: Zeek hands
//! the bytes after the upgrade (the frames' payload, unmasked) or after the `200` to
//! CONNECT to protocol detection again, so a tunnelled SSH or SMTP session is confirmed too.

/// The payload of the frames at the start of `b`, unmasked and joined, into `out` (up to
/// `limit` bytes). Stops at a frame the sample cuts off, keeping what it has.
pub fn payload(b: &[u8], limit: usize, out: &mut Vec<u8>) {
    frames(b, limit, out, false);
}

/// The payload of the first message at the start of `b` (its frames up to the one with FIN
/// set), unmasked and joined, as far as the sample holds it (a message cut off by the
/// sample's end counts as what it shows): the WebSocket analyzer confirms once it has parsed
/// a message, after handing its payload on. None if not even a frame's payload begins.
pub fn first_message(b: &[u8], limit: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    frames(b, limit, &mut out, true);
    (!out.is_empty()).then_some(out)
}

/// [`payload`]; with `first_only`, only the first message's frames. Returns whether a frame
/// with FIN set was read whole.
fn frames(mut b: &[u8], limit: usize, out: &mut Vec<u8>, first_only: bool) -> bool {
    while b.len() >= 2 && out.len() < limit {
        let masked = b[1] & 0x80 != 0;
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap_or_default()) as usize,
                10,
            ),
            126 | 127 => return false,
            n => (n as usize, 2),
        };
        let mask = if masked {
            let Some(m) = b.get(at..at + 4) else {
                return false;
            };
            at += 4;
            [m[0], m[1], m[2], m[3]]
        } else {
            [0; 4]
        };
        let opcode = b[0] & 0x0f;
        let body = &b[at..b.len().min(at.saturating_add(len))];
        // Data frames (continuation, text, binary) carry the payload; control frames do not.
        if opcode <= 2 {
            out.extend(body.iter().enumerate().map(|(i, c)| c ^ mask[i % 4]));
        }
        if body.len() < len {
            return false;
        }
        if first_only && b[0] & 0x80 != 0 {
            return true;
        }
        b = &b[at + len..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmasks_and_joins_frames() {
        // A masked binary frame "SSH-" (mask 01 02 03 04), then an unmasked text frame "2.0".
        let mut b = vec![0x82, 0x84, 1, 2, 3, 4];
        b.extend(b"SSH-".iter().enumerate().map(|(i, c)| c ^ [1, 2, 3, 4][i]));
        b.extend_from_slice(&[0x81, 3]);
        b.extend_from_slice(b"2.0");
        let mut out = Vec::new();
        payload(&b, 100, &mut out);
        assert_eq!(out, b"SSH-2.0");
    }

    #[test]
    fn the_first_message_ends_at_its_fin_frame() {
        // "ab" without FIN, then "c" with FIN, then another message "d".
        let b = [0x02, 2, b'a', b'b', 0x80, 1, b'c', 0x82, 1, b'd'];
        assert_eq!(first_message(&b, 100).as_deref(), Some(b"abc".as_slice()));
        assert_eq!(
            first_message(&b[..7], 100).as_deref(),
            Some(b"abc".as_slice()),
            "the second message is not read"
        );
        assert_eq!(
            first_message(&b[..5], 100).as_deref(),
            Some(b"ab".as_slice()),
            "cut off: what the sample shows"
        );
        assert_eq!(first_message(&b[..1], 100), None);
    }

    #[test]
    fn a_cut_frame_keeps_what_it_has() {
        let b = [0x82, 0x7e, 0x01, 0x00, b'a', b'b'];
        let mut out = Vec::new();
        payload(&b, 100, &mut out);
        assert_eq!(out, b"ab");
    }
}
