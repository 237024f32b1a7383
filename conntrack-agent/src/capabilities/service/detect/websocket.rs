//! What a WebSocket (RFC 6455) carries, and what an HTTP CONNECT tunnel carries: Zeek hands
//! the bytes after the upgrade (the frames' payload, unmasked) or after the `200` to
//! CONNECT to protocol detection again, so a tunnelled SSH or SMTP session is confirmed too.

/// The payload of the frames at the start of `b`, unmasked and joined, into `out` (up to
/// `limit` bytes). Stops at a frame the sample cuts off, keeping what it has.
pub fn payload(mut b: &[u8], limit: usize, out: &mut Vec<u8>) {
    while b.len() >= 2 && out.len() < limit {
        let masked = b[1] & 0x80 != 0;
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap_or_default()) as usize,
                10,
            ),
            126 | 127 => return,
            n => (n as usize, 2),
        };
        let mask = if masked {
            let Some(m) = b.get(at..at + 4) else { return };
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
            return;
        }
        b = &b[at + len..];
    }
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
    fn a_cut_frame_keeps_what_it_has() {
        let b = [0x82, 0x7e, 0x01, 0x00, b'a', b'b'];
        let mut out = Vec::new();
        payload(&b, 100, &mut out);
        assert_eq!(out, b"ab");
    }
}
