//! FTP (RFC 959, RFC 2428): the control channel, and its announcements of data connections.
//!
//! Zeek attaches the FTP analyzer on ports 21 and 2811, and elsewhere by signature: `USER`
//! from the client and a `220` greeting from the server. `AUTH TLS` (RFC 4217) turns the
//! control channel into TLS, which the SSL analyzer confirms. `AUTH GSSAPI` (RFC 2228) with a
//! TLS handshake carried base64-encoded in `ADAT` commands and replies is GridFTP's GSI:
//! Zeek's analyzer hands the decoded handshake to the SSL analyzer, and its `gridftp` script
//! then labels the control channel.

use super::bytes::{find, first_line, lines};
use super::{Sample, text, tls};
use base64::Engine as _;
use std::net::{IpAddr, Ipv4Addr};

/// The ports Zeek's FTP analyzer is registered for (21, and GridFTP's 2811).
const PORTS: [u16; 2] = [21, 2811];

/// Zeek's `FTP::max_command_length`: a longer first word is no command.
const MAX_COMMAND: usize = 100;

/// On FTP's ports the analyzer is attached from the start and confirms on the first client
/// line that is a command ([`is_command`]), whatever the server says first; elsewhere its
/// DPD signatures need a greeting and a login. A server line the analyzer cannot read
/// ([`Replies`]) removes `ftp` again.
pub fn detect(s: &Sample, found: &mut Vec<&'static str>) -> bool {
    let (orig, resp) = (s.orig_stream(), s.resp_stream());
    let ok = if attached(s) {
        client_commands(orig)
    } else {
        let greeting =
            first_line(resp).is_some_and(|l| matches!(text::reply_code(l), Some(220 | 120)));
        greeting && signature_matches(orig, resp)
    };
    if !ok || !replies_parse(resp) {
        return false;
    }
    found.push("ftp");
    if text::tls_after_command(orig, b"AUTH") {
        found.push("ssl");
    } else if gsi_handshake(orig, resp) {
        found.extend(["ssl", "gridftp"]);
    }
    true
}

/// Whether a client line in `orig` is a command to Zeek's FTP analyzer: its first word (after
/// leading white space) at least 3 and at most [`MAX_COMMAND`] printable characters. The
/// sample's last line counts once its first word has ended, though the line goes on.
fn client_commands(orig: &[u8]) -> bool {
    let first_word_is_command = |line: &[u8]| {
        let line = line.trim_ascii_start();
        let n = line
            .iter()
            .position(u8::is_ascii_whitespace)
            .unwrap_or(line.len());
        is_command(&line[..n])
    };
    if lines(orig).any(first_word_is_command) {
        return true;
    }
    // The line the sample's end cuts off: its first word counts once it has ended.
    let rest = &orig[orig.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1)..];
    let rest = rest.trim_ascii_start();
    rest.iter()
        .position(u8::is_ascii_whitespace)
        .is_some_and(|n| is_command(&rest[..n]))
}

/// The connection is on a port Zeek's FTP analyzer is registered for.
pub fn attached(s: &Sample) -> bool {
    PORTS.iter().any(|&p| s.has_port(p))
}

/// Zeek's `is_ftp_cmd`, with the length limit.
fn is_command(word: &[u8]) -> bool {
    (3..=MAX_COMMAND).contains(&word.len()) && word.iter().all(u8::is_ascii_graphic)
}

/// Off FTP's ports, Zeek's DPD signatures: a client line that starts (after spaces) with
/// `USER ` in any case, and a server that greets (`120`/`220`) and later answers a login
/// (`230` logged in, `331` password needed). A greeting alone is many protocols'.
fn signature_matches(orig: &[u8], resp: &[u8]) -> bool {
    let user = lines(orig).any(|l| {
        let l = l.trim_ascii_start();
        l.len() > 4 && l[..4].eq_ignore_ascii_case(b"USER") && l[4] == b' '
    });
    user && lines(resp)
        .skip(1)
        .any(|l| matches!(text::reply_code(l), Some(230 | 331)))
}

/// The client asked for `AUTH GSSAPI` and the `ADAT` exchange that follows carries a TLS
/// ClientHello and ServerHello (base64, RFC 2228 section 3): the GSI mechanism.
fn gsi_handshake(orig: &[u8], resp: &[u8]) -> bool {
    if !lines(orig).any(|l| l.eq_ignore_ascii_case(b"AUTH GSSAPI")) {
        return false;
    }
    match (adat(orig, b"ADAT "), adat(resp, b"ADAT=")) {
        (Some(client), Some(server)) => tls::confirms(&client, &server),
        _ => false,
    }
}

/// The start of the first security data after `marker` (`ADAT ` in a command, `ADAT=` in a
/// `335`/`235` reply), decoded: enough for a handshake record's header. The rest of the token
/// may lie beyond the sample.
fn adat(stream: &[u8], marker: &[u8]) -> Option<Vec<u8>> {
    // 16 base64 characters: 12 bytes, a TLS record header and a hello's header.
    const PREFIX: usize = 16;
    let at = find(stream, marker)? + marker.len();
    let token = stream.get(at..at + PREFIX)?;
    base64::engine::general_purpose::STANDARD.decode(token).ok()
}

/// Every server line is a reply Zeek's analyzer reads ([`Replies`]): else a violation, and
/// the service is removed again.
fn replies_parse(resp: &[u8]) -> bool {
    Replies::default().read(resp)
}

/// Zeek's FTP analyzer reading the server's lines: each is a reply, `ddd text` (or just
/// `ddd`) or the start of a multi-line one, `ddd-text`, whose lines up to `ddd text` may be
/// anything. A line without a three-digit code of at least 100, or with something other than
/// a space or `-` after it, is a violation. A `234` (AUTH accepted) ends the reading: TLS
/// follows.
#[derive(Debug, Default, Clone, Copy)]
pub struct Replies {
    /// The code of the multi-line reply being read.
    open: Option<u16>,
    /// Past a `234`: nothing more is read.
    done: bool,
}

impl Replies {
    /// The complete lines of `text`, the server's next bytes: false at a violation.
    pub fn read(&mut self, text: &[u8]) -> bool {
        lines(text).all(|l| self.line(l))
    }

    /// The next server line (without its line end): false if it is a violation.
    pub fn line(&mut self, line: &[u8]) -> bool {
        // An empty line is skipped, as Zeek's analyzer skips it.
        if self.done || line.is_empty() {
            return true;
        }
        let code = reply_code(line);
        match self.open {
            Some(c) => {
                if code == Some(c) && line.get(3) == Some(&b' ') {
                    self.open = None;
                }
                true
            }
            None => match code {
                Some(c) if c < 100 => false,
                Some(234) if line.get(3) != Some(&b'-') => {
                    self.done = true;
                    true
                }
                Some(c) => match line.get(3) {
                    Some(b'-') => {
                        self.open = Some(c);
                        true
                    }
                    None | Some(b' ') => true,
                    Some(_) => false,
                },
                None => false,
            },
        }
    }
}

/// A line's reply code as Zeek's FTP analyzer reads it: its first three characters, if they
/// are digits.
fn reply_code(line: &[u8]) -> Option<u16> {
    let digits = line.get(..3)?;
    digits
        .iter()
        .all(u8::is_ascii_digit)
        .then(|| digits.iter().fold(0, |n, d| n * 10 + u16::from(d - b'0')))
}

/// A data connection that an FTP control channel announced: the address and port that the
/// data connection's responder will use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FtpExpect {
    /// The announced address; `None` for EPSV, which names only a port (the server's
    /// address), and for EPRT with an address that does not parse.
    pub addr: Option<IpAddr>,
    pub port: u16,
    /// Announced by the server (PASV, EPSV: the client connects to the server), not the
    /// client (PORT, EPRT: the server connects to the client).
    pub from_server: bool,
}

/// FTP control-channel announcements of a data connection (PORT, PASV 227, EPRT, EPSV 229)
/// found in these bytes, client's first, each in order.
pub fn ftp_announcements(client: &[u8], server: &[u8]) -> Vec<FtpExpect> {
    let mut out = Vec::new();
    for line in lines(client) {
        let line = text::trim_start(line);
        let (verb, arg) = split_verb(line);
        let found = if verb.eq_ignore_ascii_case(b"PORT") {
            parse_h1_p2(arg).map(|(a, port)| FtpExpect {
                addr: Some(a.into()),
                port,
                from_server: false,
            })
        } else if verb.eq_ignore_ascii_case(b"EPRT") {
            parse_eprt(arg).map(|(addr, port)| FtpExpect {
                addr,
                port,
                from_server: false,
            })
        } else {
            None
        };
        out.extend(found);
    }
    for line in lines(server) {
        let found = match text::reply_code(line) {
            // `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)`: the numbers may come without
            // the parentheses, so take the first digit after the code.
            Some(227) => {
                let rest = &line[3..];
                let start = rest.iter().position(u8::is_ascii_digit);
                start
                    .and_then(|i| parse_h1_p2(&rest[i..]))
                    .map(|(a, port)| FtpExpect {
                        addr: Some(a.into()),
                        port,
                        from_server: true,
                    })
            }
            // `229 Entering Extended Passive Mode (|||port|)`.
            Some(229) => {
                let rest = &line[3..];
                rest.iter()
                    .position(|&c| c == b'(')
                    .and_then(|i| parse_eprt(&rest[i + 1..]))
                    .map(|(addr, port)| FtpExpect {
                        addr,
                        port,
                        from_server: true,
                    })
            }
            _ => None,
        };
        out.extend(found);
    }
    out
}

fn split_verb(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&c| c == b' ') {
        Some(i) => (&line[..i], text::trim_start(&line[i + 1..])),
        None => (line, &[]),
    }
}

/// `h1,h2,h3,h4,p1,p2` (RFC 959's host-port), ignoring what follows it.
fn parse_h1_p2(b: &[u8]) -> Option<(Ipv4Addr, u16)> {
    let end = b
        .iter()
        .position(|c| !(c.is_ascii_digit() || *c == b',' || *c == b' '))
        .unwrap_or(b.len());
    let mut nums = [0u8; 6];
    let mut n = 0;
    for part in b[..end].split(|&c| c == b',') {
        let part = part.trim_ascii();
        if n == 6 || part.is_empty() || part.len() > 3 {
            return None;
        }
        nums[n] = std::str::from_utf8(part).ok()?.parse().ok()?;
        n += 1;
    }
    (n == 6).then(|| {
        (
            Ipv4Addr::new(nums[0], nums[1], nums[2], nums[3]),
            u16::from_be_bytes([nums[4], nums[5]]),
        )
    })
}

/// RFC 2428's `<d>proto<d>addr<d>port<d>`: the delimiter is the first character; the
/// address may be empty (EPSV).
fn parse_eprt(b: &[u8]) -> Option<(Option<IpAddr>, u16)> {
    let delim = *b.first()?;
    let mut fields = b[1..].split(|&c| c == delim);
    let _proto = fields.next()?;
    let addr = fields.next()?;
    let port = fields.next()?;
    fields.next()?; // the closing delimiter
    let port: u16 = std::str::from_utf8(port).ok()?.parse().ok()?;
    let addr = std::str::from_utf8(addr).ok().and_then(|a| a.parse().ok());
    Some((addr, port))
}

#[cfg(test)]
mod tests {
    use super::super::detect;
    use super::super::test_util::tcp;
    use super::*;

    const CLIENT: &[u8] = b"USER anonymous\r\nPASS test\r\n";
    const SERVER: &[u8] = b"220 ftp.NetBSD.org FTP server (NetBSD-ftpd 20100320) ready.\r\n\
        331 Guest login ok, type your name as password.\r\n";

    /// GridFTP (globus-url-copy): AUTH GSSAPI, then the GSI TLS handshake in ADAT tokens.
    const GSI_CLIENT: &[u8] = b"AUTH GSSAPI\r\n\
        ADAT FgMBAGsBAABnAwFQW20QgljInC83uQvyugxecsF3kUpSQF6m6R/GggW8mwAAOgA5ADgAiACHADUAhAAW";
    const GSI_SERVER: &[u8] = b"220 alpha GridFTP Server 6.14 (gcc64dbg, 1342551528-83) \
        [Globus Toolkit 5.2.2] ready.\r\n\
        334 Using authentication type; ADAT must follow.\r\n\
        335 ADAT=FgMBADUCAAAxAwFQW20QRzmEyP3fmvYpOq5A8fotqMq/wUI+e2+0FmuZLgAANQAACf8BAAEAACMAABYD";

    #[test]
    fn gsi_handshake_in_adat_is_ftp_ssl_and_gridftp() {
        assert_eq!(
            detect(&tcp((60108, 2811), &[GSI_CLIENT], &[GSI_SERVER])),
            ["ftp", "ssl", "gridftp"]
        );
    }

    #[test]
    fn auth_gssapi_without_a_tls_handshake_is_ftp_only() {
        // Kerberos GSSAPI tokens (an ASN.1 application tag, `YII...` in base64), not TLS.
        let client = b"AUTH GSSAPI\r\nADAT YIICnQYJKoZIhvcSAQICAQBuggKMMIICiKADAgEF\r\n".as_slice();
        let server = b"220 ready.\r\n334 Using authentication type; ADAT must follow.\r\n\
            235 ADAT=YIGZBgkqhkiG9xIBAgICAG+BiTCBhqADAgEFoQMCAQ8=\r\n"
            .as_slice();
        assert_eq!(detect(&tcp((60108, 21), &[client], &[server])), ["ftp"]);
        // Nor is a TLS handshake without the AUTH GSSAPI request.
        let client = &GSI_CLIENT[b"AUTH GSSAPI\r\n".len()..];
        assert!(!detect(&tcp((60108, 2811), &[client], &[GSI_SERVER])).contains(&"gridftp"));
    }

    #[test]
    fn greeting_and_user_are_ftp() {
        assert_eq!(detect(&tcp((50003, 21), &[CLIENT], &[SERVER])), ["ftp"]);
        // USER is the signature that finds FTP off its port.
        assert_eq!(detect(&tcp((50003, 2100), &[CLIENT], &[SERVER])), ["ftp"]);
        let feat = b"FEAT\r\n".as_slice();
        assert_eq!(detect(&tcp((50003, 21), &[feat], &[SERVER])), ["ftp"]);
        assert!(detect(&tcp((50003, 2100), &[feat], &[SERVER])).is_empty());
    }

    #[test]
    fn off_its_ports_the_server_must_answer_a_login() {
        let off = |c: &[u8], s: &[u8]| detect(&tcp((50003, 2100), &[c], &[s]));
        // A greeting, then nothing yet, or a refusal: no login answered.
        let greeting = &SERVER[..SERVER.iter().position(|&b| b == b'\n').unwrap() + 1];
        assert!(off(CLIENT, greeting).is_empty());
        assert!(off(CLIENT, b"220 ready\r\n530 Not logged in.\r\n").is_empty());
        // 230 (logged in without a password) does.
        assert_eq!(off(CLIENT, b"220 ready\r\n230 Welcome.\r\n"), ["ftp"]);
        // USER may come after other commands; it needs its space.
        let later = b"SYST\r\nuser anonymous\r\n".as_slice();
        assert_eq!(
            off(later, b"220 ready\r\n215 UNIX\r\n331 Password?\r\n"),
            ["ftp"]
        );
        assert!(off(b"USERS\r\n", SERVER).is_empty());
        // On the analyzer's port the greeting and a command are enough.
        assert_eq!(detect(&tcp((50003, 21), &[CLIENT], &[greeting])), ["ftp"]);
    }

    #[test]
    fn an_invalid_reply_code_is_a_violation() {
        let client = b"USER zeek\r\nPASS zeek\r\nPASV\r\nQUIT\r\n".as_slice();
        let server =
            b"220 py.fake ready\r\n230 USER OK\r\n230 PASS OK\r\n99 PASV invalid\r\n221 Bye\r\n"
                .as_slice();
        assert!(detect(&tcp((51354, 21), &[client], &[server])).is_empty());
        // Lines inside a multi-line reply need no code.
        let multi =
            b"220 ready\r\n230-\r\n    The NetBSD Project FTP Server\r\n230 Guest login ok\r\n"
                .as_slice();
        assert_eq!(detect(&tcp((51354, 21), &[client], &[multi])), ["ftp"]);
    }

    #[test]
    fn on_its_ports_a_client_command_alone_confirms_ftp() {
        // The analyzer is attached by port and confirms on a command, whatever the server
        // says first (or if it says nothing).
        let quit = b"QUIT\r\n".as_slice();
        assert_eq!(detect(&tcp((51000, 21), &[quit], &[])), ["ftp"]);
        let busy = b"421 Too many users, try later\r\n".as_slice();
        assert_eq!(detect(&tcp((51000, 21), &[quit], &[busy])), ["ftp"]);
        assert_eq!(detect(&tcp((51000, 2811), &[quit], &[])), ["ftp"]);
        // Zeek's `quic.decrypt-crash` (a fuzzed capture): one segment to 21 whose fifth line
        // starts with a word; the sample ends inside that line, after the word.
        let fuzzed =
            b"}}}*\x00\xa9\xf5\x98\xfe\n\nlize\x00zDn/'/.///.\n\nsize\tz\xff\xff\xff".as_slice();
        assert_eq!(detect(&tcp((0, 21), &[fuzzed], &[])), ["ftp"]);
        // Not a command: too short, not printable, or a word the sample has not ended.
        for bad in [b"QU\r\n".as_slice(), b"\x01\x02\x03\x04\r\n", b"QUI"] {
            assert!(detect(&tcp((51000, 21), &[bad], &[])).is_empty(), "{bad:?}");
        }
        // Off its ports the signatures need the greeting and a login.
        assert!(detect(&tcp((51000, 2121), &[quit], &[])).is_empty());
        // A server that is no FTP server: a violation, `ftp` is removed.
        let http = b"HTTP/1.1 400 Bad Request\r\n".as_slice();
        assert!(detect(&tcp((51000, 21), &[quit], &[http])).is_empty());
    }

    #[test]
    fn replies_are_read_as_zeek_reads_them() {
        let read = |server: &[u8]| Replies::default().read(server);
        assert!(read(b"220 ready\r\n230 OK\r\n221\r\n\r\n"));
        // Zeek's `ftp-missing-space-after-reply-code` and `ftp-missing-reply-code`.
        assert!(
            !read(b"220 py.fake ready\r\n230_no_space\r\n"),
            "invalid reply line"
        );
        assert!(
            !read(b"220 py.fake ready\r\nSYST not supported\r\n"),
            "non-numeric"
        );
        assert!(!read(b"220 ready\r\n099 low\r\n"), "a code under 100");
        // After AUTH is accepted, TLS: nothing more is read.
        assert!(read(b"220 ready\r\n234 AUTH TLS OK\r\n\x16\x03\x01"));
    }

    #[test]
    fn auth_tls_then_a_client_hello_is_ftp_and_ssl() {
        let client =
            b"FEAT\r\nAUTH TLS\r\n\x16\x03\x03\x01~\x01\x00\x01z\x03\x03f\x8d0d".as_slice();
        let server = b"220 (vsFTPd 3.0.5)\r\n211-Features:\r\n EPRT\r\n211 End\r\n234 Proceed with negotiation.\r\n\x16\x03\x03\x00\x5a\x02\r\n".as_slice();
        assert_eq!(
            detect(&tcp((40284, 21), &[client], &[server])),
            ["ftp", "ssl"]
        );
    }

    #[test]
    fn announcements() {
        let client = b"PORT 141,142,220,235,218,90\r\nEPRT |2|2001:470:1f05:17a6:d69a:20ff:fefd:6b88|24316|\r\nEPSV\r\n";
        let server = b"227 Entering Passive Mode (199,233,217,249,221,90)\r\n\
            229 Entering Extended Passive Mode (|||57086|)\r\n200 PORT command successful.\r\n";
        let got = ftp_announcements(client, server);
        assert_eq!(
            got,
            [
                FtpExpect {
                    addr: Some("141.142.220.235".parse().unwrap()),
                    port: 218 * 256 + 90,
                    from_server: false
                },
                FtpExpect {
                    addr: Some("2001:470:1f05:17a6:d69a:20ff:fefd:6b88".parse().unwrap()),
                    port: 24316,
                    from_server: false
                },
                FtpExpect {
                    addr: Some("199.233.217.249".parse().unwrap()),
                    port: 221 * 256 + 90,
                    from_server: true
                },
                FtpExpect {
                    addr: None,
                    port: 57086,
                    from_server: true
                },
            ]
        );
    }

    #[test]
    fn malformed_announcements_are_skipped() {
        let client = b"PORT 1,2,3\r\nPORT 1,2,3,4,5,600\r\nEPRT |1|1.2.3.4|x|\r\n";
        let server = b"227 no numbers here\r\n229 (|||)\r\n";
        assert!(ftp_announcements(client, server).is_empty());
    }
}
