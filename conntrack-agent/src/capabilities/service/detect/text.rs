//! Helpers for the line-based protocols (SMTP, FTP, POP3, IMAP, IRC).

use super::bytes::lines;
use super::tls;

/// `b` without leading whitespace.
pub fn trim_start(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    &b[start..]
}

/// The three-digit reply code that starts `line` (`220 ...`, `220-...`), as SMTP and FTP
/// replies have.
pub fn reply_code(line: &[u8]) -> Option<u16> {
    let line = trim_start(line);
    let digits = line.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) || line.get(3).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u16::from(d - b'0')))
}

/// The offset just after the line holding the command `verb` (its first word, case
/// ignored), if the client sent it.
pub fn command_end(b: &[u8], verb: &[u8]) -> Option<usize> {
    let mut at = 0;
    for line in lines(b) {
        let next = at + line.len() + 1 + usize::from(b.get(at + line.len()) == Some(&b'\r'));
        let word = trim_start(line).split(|&c| c == b' ').next().unwrap_or(&[]);
        if word.eq_ignore_ascii_case(verb) {
            return Some(next);
        }
        at = next;
    }
    None
}

/// The client sent the command `verb` (STARTTLS, STLS, AUTH) and then a TLS ClientHello: the
/// stream switched to TLS. A stream with no handshake record byte (0x16) cannot have, which
/// spares most connections the scan of their lines.
pub fn tls_after_command(orig: &[u8], verb: &[u8]) -> bool {
    memchr::memchr(0x16, orig).is_some()
        && command_end(orig, verb).is_some_and(|at| tls::client_hello_after(orig, at))
}

/// The first word of `line`, up to a space.
pub fn first_word(line: &[u8]) -> &[u8] {
    trim_start(line).split(|&c| c == b' ').next().unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes() {
        assert_eq!(reply_code(b"220 ready"), Some(220));
        assert_eq!(reply_code(b"220-ready"), Some(220));
        assert_eq!(reply_code(b"2200 no"), None);
        assert_eq!(reply_code(b"+OK"), None);
    }

    #[test]
    fn command_end_points_after_the_line() {
        let b = b"EHLO a\r\nSTARTTLS\r\nrest";
        assert_eq!(command_end(b, b"starttls"), Some(18));
        assert_eq!(command_end(b, b"QUIT"), None);
    }
}
