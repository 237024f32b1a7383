//! `ftp-data` and `irc-dcc-data`: the data connections that a control channel announces.
//! Zeek's FTP analyzer reads PORT / EPRT commands and 227 / 229 replies and expects the
//! connection they name (`Analyzer::schedule_analyzer`, for 5 minutes): a connection from the
//! expected originator to the announced address and port is an FTP data connection. Its IRC
//! analyzer reads `DCC SEND` offers, and `dcc-send.zeek` expects a connection from anyone
//! (`0.0.0.0`) to the offered address and port, for 5 minutes: `irc-dcc-data`.
//!
//! The announcements come after the login, past the first bytes every connection samples: a
//! confirmed control channel is extracted whole ([`ControlChannel`] puts its bytes back in
//! order and hands on complete lines), and [`Expectations`] keeps what was announced.

use super::detect::{FtpExpect, Replies, dcc_sends};
use conntrack_common::conn::Conn;
use std::net::IpAddr;

/// How long an announced data connection is expected (Zeek schedules the analyzer for 5 min,
/// FTP's and IRC's alike).
pub const EXPECT_NS: u64 = 300_000_000_000;

/// A line longer than this is no FTP command or reply: dropped rather than kept growing.
const MAX_LINE: usize = 4096;

/// One direction of a control channel: its bytes in sequence order, cut into lines.
#[derive(Debug, Default)]
struct LineFeed {
    /// The sequence number of the next byte expected (after the first bytes seen).
    next: Option<u32>,
    /// The last line, not yet ended.
    partial: Vec<u8>,
}

impl LineFeed {
    /// Bytes starting at sequence number `seq` (samples and extracted records may repeat each
    /// other). Appends the lines they complete (with their line ends) to `out`. Returns how
    /// many of the bytes were new.
    fn feed(&mut self, seq: u32, data: &[u8], out: &mut Vec<u8>) -> usize {
        let mut data = data;
        let mut at = seq;
        if let Some(next) = self.next {
            let rel = seq.wrapping_sub(next) as i32;
            if rel > 0 {
                // Bytes missing: the line they belonged to cannot be read.
                self.partial.clear();
            } else {
                let skip = rel.unsigned_abs() as usize;
                if skip >= data.len() {
                    return 0;
                }
                data = &data[skip..];
                at = next;
            }
        }
        self.next = Some(at.wrapping_add(data.len() as u32));
        self.partial.extend_from_slice(data);
        if let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') {
            out.extend_from_slice(&self.partial[..=end]);
            self.partial.drain(..=end);
        }
        if self.partial.len() > MAX_LINE {
            self.partial.clear();
        }
        data.len()
    }
}

/// Zeek ignores a violation once a connection has carried more than this many bytes, both
/// sides together (`DPD::ignore_violations_after`).
const IGNORE_VIOLATIONS_AFTER: u64 = 10 * 1024;

/// Which protocol a control channel speaks: what its lines announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announcer {
    /// FTP: PORT / EPRT, PASV / EPSV replies (`ftp-data`).
    Ftp,
    /// IRC: DCC SEND offers (`irc-dcc-data`).
    Irc,
}

impl Announcer {
    /// The control channel a connection confirmed as `names` is: FTP's (also after `AUTH
    /// TLS`, whose replies still come in clear until the handshake), or IRC's alone (not
    /// after STARTTLS, `irc,ssl`: the offers would be encrypted).
    pub fn of(names: &[&str]) -> Option<Announcer> {
        if names.contains(&"ftp") {
            Some(Announcer::Ftp)
        } else if names == ["irc"] {
            Some(Announcer::Irc)
        } else {
            None
        }
    }
}

/// A confirmed control channel: the client's (originator's) and server's lines.
#[derive(Debug)]
pub struct ControlChannel {
    kind: Announcer,
    /// The client's and the server's addresses (IPv4-mapped), for the expectations.
    client: [u8; 16],
    server: [u8; 16],
    /// Index 0: the client's bytes, 1: the server's.
    sides: [LineFeed; 2],
    /// FTP: the server's replies as Zeek's analyzer reads them, and the bytes both sides sent.
    replies: Replies,
    bytes: u64,
    /// FTP: a reply was a violation (within the first [`IGNORE_VIOLATIONS_AFTER`] bytes),
    /// which removes `ftp` from the service again; nothing is read after it.
    failed: bool,
}

impl ControlChannel {
    pub fn new(kind: Announcer, client: [u8; 16], server: [u8; 16]) -> Self {
        Self {
            kind,
            client,
            server,
            sides: Default::default(),
            replies: Replies::default(),
            bytes: 0,
            failed: false,
        }
    }

    /// An FTP channel whose server broke the protocol: Zeek removed its analyzer and `ftp`.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Bytes of the client (`from_client`) or the server at sequence number `seq`: the data
    /// connections the lines they complete announce, at network time `now_ns`.
    pub fn feed(
        &mut self,
        from_client: bool,
        seq: u32,
        data: &[u8],
        now_ns: u64,
        expected: &mut Expectations,
    ) {
        if self.failed {
            return;
        }
        let mut lines = Vec::new();
        self.bytes += self.sides[usize::from(!from_client)].feed(seq, data, &mut lines) as u64;
        if lines.is_empty() {
            return;
        }
        match self.kind {
            Announcer::Ftp => {
                if !from_client
                    && self.bytes <= IGNORE_VIOLATIONS_AFTER
                    && !self.replies.read(&lines)
                {
                    // The analyzer is gone: no announcement is read from here on.
                    self.failed = true;
                    return;
                }
                let found = if from_client {
                    super::detect::ftp_announcements(&lines, &[])
                } else {
                    super::detect::ftp_announcements(&[], &lines)
                };
                for e in &found {
                    expected.add(self.client, self.server, e, now_ns);
                }
            }
            Announcer::Irc => {
                for (addr, port) in dcc_sends(&lines) {
                    expected.add_dcc(mapped(addr), port, now_ns);
                }
            }
        }
    }
}

/// One announced data connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expected {
    /// `None`: any originator (Zeek's `0.0.0.0`).
    orig: Option<[u8; 16]>,
    resp: [u8; 16],
    resp_port: u16,
    at_ns: u64,
    /// The name the data connection gets in `service`.
    service: &'static str,
}

/// The data connections announced in the last [`EXPECT_NS`].
#[derive(Debug, Default)]
pub struct Expectations {
    list: Vec<Expected>,
}

/// An address as the datapath stores it (IPv4-mapped for IPv4).
fn mapped(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl Expectations {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// An announcement on the control channel between `client` and `server`: Zeek's
    /// expected originator is the client for a server's announcement (PASV, EPSV), else the
    /// server (PORT, EPRT); the responder is the announced address, or for EPSV the server.
    pub fn add(&mut self, client: [u8; 16], server: [u8; 16], e: &FtpExpect, now_ns: u64) {
        let (orig, default_resp) = if e.from_server {
            (client, server)
        } else {
            (server, client)
        };
        let resp = e.addr.map_or(default_resp, mapped);
        self.push(Expected {
            orig: Some(orig),
            resp,
            resp_port: e.port,
            at_ns: now_ns,
            service: "ftp-data",
        });
    }

    /// A DCC SEND offer of a file at `resp`:`resp_port`: whoever connects there.
    pub fn add_dcc(&mut self, resp: [u8; 16], resp_port: u16, now_ns: u64) {
        self.push(Expected {
            orig: None,
            resp,
            resp_port,
            at_ns: now_ns,
            service: "irc-dcc-data",
        });
    }

    fn push(&mut self, x: Expected) {
        self.list
            .retain(|old| x.at_ns.saturating_sub(old.at_ns) <= EXPECT_NS);
        self.list.push(x);
    }

    /// The service of `conn` if it is a data connection announced before it started
    /// (within [`EXPECT_NS`]). The announcement stays until it expires, as in Zeek.
    pub fn matches(&self, conn: &Conn) -> Option<&'static str> {
        self.list
            .iter()
            .find(|x| {
                x.resp_port == conn.resp_port
                    && x.resp == conn.resp_addr
                    && x.orig.is_none_or(|o| o == conn.orig_addr)
                    && conn.start_ns >= x.at_ns
                    && conn.start_ns - x.at_ns <= EXPECT_NS
            })
            .map(|x| x.service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        mapped(IpAddr::V4(Ipv4Addr::from(a)))
    }

    fn lines(feed: &mut LineFeed, seq: u32, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        feed.feed(seq, data, &mut out);
        out
    }

    #[test]
    fn lines_are_handed_on_whole_and_once() {
        let mut f = LineFeed::default();
        assert_eq!(
            lines(&mut f, 100, b"USER anonymous\r\nPA"),
            b"USER anonymous\r\n"
        );
        // A sample and an extracted record of the same segment.
        assert_eq!(lines(&mut f, 116, b"PASS x\r\n"), b"PASS x\r\n");
        assert_eq!(
            lines(&mut f, 116, b"PASS x\r\n"),
            b"",
            "a repeat adds nothing"
        );
        assert_eq!(lines(&mut f, 124, b"PASV\r\n"), b"PASV\r\n");
    }

    #[test]
    fn a_gap_drops_the_unfinished_line() {
        let mut f = LineFeed::default();
        assert_eq!(lines(&mut f, 0, b"227 Entering"), b"");
        assert_eq!(lines(&mut f, 50, b"x\r\n200 ok\r\n"), b"x\r\n200 ok\r\n");
        assert!(f.partial.is_empty());
    }

    #[test]
    fn a_reply_zeek_cannot_read_fails_the_channel_within_the_first_10_kib() {
        // Zeek's `ftp-missing-space-after-reply-code`: the fourth reply has no space.
        let (client, server) = (v4([127, 0, 0, 1]), v4([127, 0, 0, 2]));
        let mut x = Expectations::default();
        let mut ctl = ControlChannel::new(Announcer::Ftp, client, server);
        let mut seq = 1;
        let mut reply = |ctl: &mut ControlChannel, line: &[u8]| {
            ctl.feed(false, seq, line, 0, &mut x);
            seq += line.len() as u32;
        };
        reply(&mut ctl, b"220 py.fake ready\r\n230 USER OK\r\n");
        assert!(!ctl.failed());
        reply(&mut ctl, b"230_no_space\r\n");
        assert!(ctl.failed());
        // The same past 10 KiB of the connection: ignored, as Zeek ignores it.
        let mut ctl = ControlChannel::new(Announcer::Ftp, client, server);
        let mut seq = 1;
        let mut reply = |ctl: &mut ControlChannel, line: &[u8]| {
            ctl.feed(false, seq, line, 0, &mut Expectations::default());
            seq += line.len() as u32;
        };
        reply(&mut ctl, b"220-banner\r\n");
        for _ in 0..220 {
            reply(
                &mut ctl,
                b"  a long banner line, inside the multi-line reply\r\n",
            );
        }
        reply(&mut ctl, b"220 ready\r\n");
        reply(&mut ctl, b"230_no_space\r\n");
        assert!(!ctl.failed(), "{} bytes", ctl.bytes);
    }

    #[test]
    fn pasv_expects_the_client_at_the_announced_address() {
        let (client, server) = (v4([10, 0, 0, 1]), v4([10, 0, 0, 2]));
        let mut x = Expectations::default();
        let pasv = FtpExpect {
            addr: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
            port: 50_000,
            from_server: true,
        };
        x.add(client, server, &pasv, 1_000);
        let mut data = Conn {
            orig_addr: client,
            resp_addr: server,
            resp_port: 50_000,
            start_ns: 2_000,
            ..Conn::ZERO
        };
        assert_eq!(x.matches(&data), Some("ftp-data"));
        data.orig_addr = v4([10, 0, 0, 9]);
        assert!(x.matches(&data).is_none(), "another originator");
        data.orig_addr = client;
        data.start_ns = 500;
        assert!(
            x.matches(&data).is_none(),
            "started before the announcement"
        );
        data.start_ns = 1_000 + EXPECT_NS + 1;
        assert!(x.matches(&data).is_none(), "expired");
    }

    #[test]
    fn port_expects_the_server_and_epsv_the_servers_address() {
        let (client, server) = (v4([10, 0, 0, 1]), v4([10, 0, 0, 2]));
        let mut x = Expectations::default();
        let port = FtpExpect {
            addr: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            port: 40_000,
            from_server: false,
        };
        let epsv = FtpExpect {
            addr: None,
            port: 40_001,
            from_server: true,
        };
        x.add(client, server, &port, 0);
        x.add(client, server, &epsv, 0);
        let active = Conn {
            orig_addr: server,
            orig_port: 20,
            resp_addr: client,
            resp_port: 40_000,
            ..Conn::ZERO
        };
        assert_eq!(x.matches(&active), Some("ftp-data"));
        let passive = Conn {
            orig_addr: client,
            resp_addr: server,
            resp_port: 40_001,
            ..Conn::ZERO
        };
        assert_eq!(x.matches(&passive), Some("ftp-data"));
        assert!(!x.is_empty());
        x.add(client, server, &epsv, 2 * EXPECT_NS);
        assert_eq!(x.list.len(), 1, "the old ones expired");
    }

    #[test]
    fn a_dcc_offer_expects_anyone_at_the_offered_address() {
        let (client, server) = (v4([10, 0, 0, 7]), v4([10, 0, 0, 1]));
        let mut ctl = ControlChannel::new(Announcer::Irc, client, server);
        let mut x = Expectations::default();
        // 167772167 is 10.0.0.7, the offering client.
        let offer = b"PRIVMSG tim1 :\x01DCC SEND ssh.trace 167772167 59130 1320211\x01\r\n";
        ctl.feed(true, 1, offer, 1_000, &mut x);
        let data = Conn {
            orig_addr: v4([10, 0, 0, 22]),
            resp_addr: client,
            resp_port: 59130,
            start_ns: 2_000,
            ..Conn::ZERO
        };
        assert_eq!(x.matches(&data), Some("irc-dcc-data"));
        let other_port = Conn {
            resp_port: 59214,
            ..data
        };
        assert!(x.matches(&other_port).is_none());
        // The same line on an FTP control channel announces nothing.
        let mut ftp = ControlChannel::new(Announcer::Ftp, client, server);
        let mut y = Expectations::default();
        ftp.feed(true, 1, offer, 1_000, &mut y);
        assert!(y.is_empty());
    }
}
