//! SSH (RFC 4253): each side starts with its identification string `SSH-protoversion-...`.
//! Zeek's signatures want it from both sides; a server may send other lines before its own
//! (RFC 4253 4.2), which the analyzer skips.

use super::MAX_SAMPLE_BYTES;
use super::bytes::lines;

/// The client's stream starts with `SSH-1.x` or `SSH-2.0` and the server's has it on a line.
/// A server whose text before its banner fills the whole sample is given the benefit of the
/// doubt: its banner comes later.
pub fn confirms(orig: &[u8], resp: &[u8]) -> bool {
    is_version(orig) && (is_version(resp) || lines(resp).any(is_version) || all_text(resp))
}

/// `b` fills the sample and is all printable text.
fn all_text(b: &[u8]) -> bool {
    b.len() >= MAX_SAMPLE_BYTES
        && b.iter()
            .all(|c| c.is_ascii_graphic() || c.is_ascii_whitespace())
}

fn is_version(b: &[u8]) -> bool {
    b.len() >= 6
        && b[..4].eq_ignore_ascii_case(b"SSH-")
        && matches!(b[4], b'1' | b'2')
        && b[5] == b'.'
}

#[cfg(test)]
mod tests {
    use super::super::detect;
    use super::super::test_util::tcp;

    const CLIENT: &[u8] = b"SSH-2.0-OpenSSH_5.9\r\n\x00\x00\x04\xf4\x08\x14\xf9\xe6";
    const SERVER: &[u8] = b"SSH-2.0-OpenSSH_5.8\r\n\x00\x00\x03T\x05\x14\xd1\xc3";

    #[test]
    fn both_banners_are_ssh() {
        assert_eq!(detect(&tcp((51880, 22), &[CLIENT], &[SERVER])), ["ssh"]);
        assert_eq!(detect(&tcp((51880, 2222), &[CLIENT], &[SERVER])), ["ssh"]);
    }

    #[test]
    fn server_lines_before_its_banner_are_skipped() {
        let server = b"Welcome\r\nSSH-2.0-OpenSSH_8.9\r\n".as_slice();
        assert_eq!(detect(&tcp((51880, 22), &[CLIENT], &[server])), ["ssh"]);
    }

    #[test]
    fn a_long_pre_banner_text_fills_the_sample() {
        let art = b" _____________\n< Hi stranger >\n -------------\n".repeat(20);
        assert_eq!(detect(&tcp((55343, 22), &[CLIENT], &[&art])), ["ssh"]);
        // Short text without a banner is not SSH.
        assert!(detect(&tcp((55343, 22), &[CLIENT], &[&art[..100]])).is_empty());
    }

    #[test]
    fn one_side_is_not_ssh() {
        assert!(detect(&tcp((51880, 22), &[CLIENT], &[])).is_empty());
        assert!(detect(&tcp((51880, 22), &[b""], &[SERVER])).is_empty());
        let get = b"GET / HTTP/1.1\r\n\r\n".as_slice();
        assert!(detect(&tcp((51880, 22), &[get], &[SERVER])).is_empty());
    }
}
