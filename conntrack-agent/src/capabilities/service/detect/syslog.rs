//! Syslog (RFC 5424, RFC 3164) on port 514, where Zeek attaches it: a message starts with a
//! priority `<N>`. Over TCP (`syslog_tcp`, RFC 6587) a message may be preceded by its length
//! (octet counting). Only the sender speaks, so one side is enough.

use super::{Sample, on_port};

const PORT: u16 = 514;

/// UDP: the originator's first datagram `d`, of a connection between `ports`, confirms
/// syslog.
pub fn udp_first_datagram(ports: (u16, u16), d: &[u8]) -> bool {
    on_port(ports, PORT) && priority(d)
}

pub fn confirms_tcp(s: &Sample) -> bool {
    let orig = s.orig_stream();
    let counted = || {
        let digits = orig.iter().take_while(|c| c.is_ascii_digit()).count();
        (1..=6).contains(&digits)
            && orig.get(digits) == Some(&b' ')
            && priority(&orig[digits + 1..])
    };
    s.has_port(PORT) && (priority(orig) || counted())
}

/// `<N>` with N a priority of 1 to 3 digits.
fn priority(b: &[u8]) -> bool {
    let Some(rest) = b.strip_prefix(b"<") else {
        return false;
    };
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    (1..=3).contains(&digits) && rest.get(digits) == Some(&b'>')
}

#[cfg(test)]
mod tests {
    use super::super::detect;
    use super::super::test_util::{tcp, udp};

    #[test]
    fn tcp_framings() {
        let counted = b"51 <13>Oct 11 22:14:15 mymachine su: 'su root' failed".as_slice();
        let plain = b"<14>Oct 11 22:14:16 mymachine su: 'su root' failed\n".as_slice();
        assert_eq!(detect(&tcp((12345, 514), &[counted], &[])), ["syslog_tcp"]);
        assert_eq!(detect(&tcp((12345, 514), &[plain], &[])), ["syslog_tcp"]);
        assert!(detect(&tcp((12345, 5140), &[plain], &[])).is_empty());
    }

    #[test]
    fn udp_message() {
        let msg =
            b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - BOM'su root' failed"
                .as_slice();
        assert_eq!(detect(&udp((40000, 514), &[msg], &[])), ["syslog"]);
        assert!(detect(&udp((40000, 514), &[b"hello"], &[])).is_empty());
    }
}
