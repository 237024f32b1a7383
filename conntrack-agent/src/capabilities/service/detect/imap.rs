//! IMAP (RFC 9051). Zeek's IMAP analyzer is attached on port 143 and by signature: an
//! untagged `* OK` greeting from the server and a tagged command from the client. After
//! `STARTTLS` the stream is TLS, confirmed by the SSL analyzer.

use super::bytes::first_line;
use super::tls;

const COMMANDS: [&[u8]; 6] = [
    b"CAPABILITY",
    b"LOGIN",
    b"STARTTLS",
    b"AUTHENTICATE",
    b"ID",
    b"NOOP",
];

pub fn detect(orig: &[u8], resp: &[u8], found: &mut Vec<&'static str>) -> bool {
    let greeting =
        first_line(resp).is_some_and(|l| l.starts_with(b"* OK") || l.starts_with(b"* PREAUTH"));
    let Some(first) = first_line(orig) else {
        return false;
    };
    let mut words = first.split(|&c| c == b' ');
    let tag = words.next().unwrap_or(&[]);
    let command = words.next().unwrap_or(&[]);
    let tagged = !tag.is_empty()
        && tag.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'.')
        && COMMANDS.iter().any(|c| command.eq_ignore_ascii_case(c));
    if !greeting || !tagged {
        return false;
    }
    found.push("imap");
    if let Some(at) = starttls_end(orig)
        && tls::client_hello_after(orig, at)
    {
        found.push("ssl");
    }
    true
}

/// Where the line after `<tag> STARTTLS` begins.
fn starttls_end(orig: &[u8]) -> Option<usize> {
    let i = super::bytes::find(orig, b" STARTTLS\r\n")
        .or_else(|| super::bytes::find(orig, b" starttls\r\n"))?;
    Some(i + 11)
}

#[cfg(test)]
mod tests {
    use super::super::detect;
    use super::super::test_util::tcp;

    /// A mail provider's greeting.
    const SERVER: &[u8] =
        b"* OK [CAPABILITY IMAP4rev1 CHILDREN ENABLE ID IDLE STARTTLS AUTH=LOGIN AUTH=PLAIN] \
        IMAP server ready H migmx013 104568 IMAP-0M0Unb-1YwIOs2b5K-00uE1x\r\n";

    #[test]
    fn greeting_and_a_tagged_command_are_imap() {
        let client = b"a001 CAPABILITY\r\n".as_slice();
        assert_eq!(detect(&tcp((40000, 143), &[client], &[SERVER])), ["imap"]);
    }

    #[test]
    fn starttls_then_tls_is_imap_and_ssl() {
        let client =
            b". CAPABILITY\r\n. STARTTLS\r\n\x16\x03\x01\x019\x01\x00\x015\x03\x03\x14\x18"
                .as_slice();
        assert_eq!(
            detect(&tcp((40000, 143), &[client], &[SERVER])),
            ["imap", "ssl"]
        );
    }

    #[test]
    fn untagged_client_lines_are_not_imap() {
        let client = b"CAPABILITY\r\n".as_slice();
        assert!(detect(&tcp((40000, 143), &[client], &[SERVER])).is_empty());
    }
}
