//! HTTP (RFC 9112), and the WebSocket upgrade (RFC 6455) with what the upgraded stream carries.
//!
//! Zeek's dynamic protocol detection attaches HTTP when the client starts with a request line
//! and the server answers with a status line (`dpd.sig`); the analyzer confirms on a request it
//! can parse. A `101 Switching Protocols` reply to an `Upgrade: websocket` request hands the
//! rest of both streams to the WebSocket analyzer, which confirms `websocket` and runs
//! detection again on the frames' payload.

use super::bytes::{first_line, lines, starts_with_ci};
use super::{MAX_SAMPLE_BYTES, Sample, websocket};
use memchr::memmem::Finder;
use std::sync::LazyLock;

/// The ports Zeek's HTTP analyzer is registered for.
const PORTS: [u16; 8] = [80, 81, 631, 1080, 3128, 8000, 8080, 8888];

/// The methods Zeek's HTTP signature accepts at the start of a client stream.
const METHODS: [&[u8]; 15] = [
    b"GET",
    b"HEAD",
    b"POST",
    b"PUT",
    b"DELETE",
    b"TRACE",
    b"OPTIONS",
    b"CONNECT",
    b"PATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"QUERY",
];

/// Adds `http` (and what an upgrade or a CONNECT tunnel carries) to `found` if the sample's
/// streams are an HTTP request and reply: None when they are not, else whether this is
/// settled: plain `http` that stays as the streams grow, as [`settled`] says (worked out here
/// from the heads already read, not read again).
pub fn detect(s: &Sample, found: &mut Vec<&'static str>) -> Option<bool> {
    let (orig, resp) = (s.orig_stream(), s.resp_stream());
    if !is_request(orig) {
        return None;
    }
    // On its own ports the analyzer is there from the start and confirms on the request; a
    // reply that is not HTTP is then a violation, unless the request was HTTP/0.9 (whose reply
    // is the bare body). Elsewhere the signatures need the status line.
    let attached = PORTS.contains(&s.resp_port);
    let reply = is_reply(resp);
    let replied = reply || (attached && (resp.is_empty() || is_http09(orig)));
    if !replied {
        return None;
    }
    found.push("http");
    let Some(rep_end) = head_end(resp) else {
        return Some(false);
    };
    let status = first_line(resp)
        .and_then(|l| l.split(|&c| c == b' ').nth(1))
        .unwrap_or(&[]);
    // The request head may be longer than the sample; its end is only needed for what follows.
    let req_end = || head_end(orig);
    if status == b"101" && has_header(&resp[..rep_end], b"upgrade", b"websocket") {
        // Detection runs again on the messages the frames carry.
        let limit = MAX_SAMPLE_BYTES;
        let (mut inner_orig, mut inner_resp) = (Vec::new(), Vec::new());
        let mut first = None;
        if let Some(req_end) = req_end() {
            websocket::payload(&orig[req_end..], limit, &mut inner_orig);
            first = websocket::first_message(&orig[req_end..], limit);
        }
        websocket::payload(&resp[rep_end..], limit, &mut inner_resp);
        let mut inner = Vec::new();
        tunnelled(s, &inner_orig, &inner_resp, &mut inner);
        // The WebSocket analyzer confirms once it has parsed the client's first message,
        // after handing its payload on: what that payload confirms alone (a ClientHello's
        // `ssl`) is confirmed first.
        let mut alone = Vec::new();
        if let Some(first) = first {
            tunnelled(s, &first, &[], &mut alone);
            alone.retain(|n| inner.contains(n));
        }
        for name in alone.into_iter().chain(["websocket"]).chain(inner) {
            if !found.contains(&name) {
                found.push(name);
            }
        }
        return Some(false);
    }
    let connect = is_connect(orig);
    if status.first() == Some(&b'2') && connect {
        // A CONNECT tunnel: the bytes after the two heads are the tunnelled protocol's.
        if let Some(req_end) = req_end() {
            tunnelled(s, &orig[req_end..], &resp[rep_end..], found);
        }
    }
    Some(reply && status != b"101" && !connect)
}

/// Runs TCP detection on what a tunnel carries.
fn tunnelled(s: &Sample, orig: &[u8], resp: &[u8], found: &mut Vec<&'static str>) {
    if orig.is_empty() && resp.is_empty() {
        return;
    }
    let (o, r) = ([orig], [resp]);
    let inner = Sample {
        orig: &o,
        resp: &r,
        ..*s
    };
    for name in super::detect(&inner) {
        if !found.contains(&name) {
            found.push(name);
        }
    }
}

/// Whether [`detect`]'s plain `http` for this sample stays as the streams grow: the reply's
/// head is complete, and it neither switches protocols (`101`) nor answers a CONNECT, the only
/// cases in which detection reads past the two heads. (The heads' first lines, which decided
/// it, are there already.) [`detect`] answers this itself; this is its definition, for the
/// tests.
#[cfg(test)]
pub fn settled(s: &Sample) -> bool {
    let (orig, resp) = (s.orig_stream(), s.resp_stream());
    let Some(rep_end) = head_end(resp) else {
        return false;
    };
    let status = first_line(&resp[..rep_end]).and_then(|l| l.split(|&c| c == b' ').nth(1));
    is_request(orig) && is_reply(resp) && status != Some(b"101") && !is_connect(orig)
}

fn is_connect(b: &[u8]) -> bool {
    starts_with_ci(trim_leading_space(b), b"CONNECT ")
}

/// The stream starts with a request line: a method, a space and a target.
fn is_request(b: &[u8]) -> bool {
    let b = trim_leading_space(b);
    // Every method starts with a letter: most streams that are not HTTP fail here, before
    // the method list (this runs on every TCP connection).
    if !b.first().is_some_and(u8::is_ascii_alphabetic) {
        return false;
    }
    // The method is the word before the first space or tab (no method holds one): found
    // once, then compared with the methods of its length only.
    let Some(n) = b
        .iter()
        .take(LONGEST_METHOD + 1)
        .position(|c| *c == b' ' || *c == b'\t')
    else {
        return false;
    };
    METHODS
        .iter()
        .any(|m| m.len() == n && m.eq_ignore_ascii_case(&b[..n]))
}

/// The longest of [`METHODS`].
const LONGEST_METHOD: usize = {
    let mut longest = 0;
    let mut i = 0;
    while i < METHODS.len() {
        if METHODS[i].len() > longest {
            longest = METHODS[i].len();
        }
        i += 1;
    }
    longest
};

/// Whether no continuation of `orig`, a client's first bytes, can be a request line: its
/// first byte after any white space is there and is not a method's letter.
pub fn request_ruled_out(orig: &[u8]) -> bool {
    trim_leading_space(orig)
        .first()
        .is_some_and(|c| !c.is_ascii_alphabetic())
}

/// The stream starts with a status line, `HTTP/` and a digit.
fn is_reply(b: &[u8]) -> bool {
    let b = trim_leading_space(b);
    b.starts_with(b"HTTP/") && b.get(5).is_some_and(u8::is_ascii_digit)
}

/// The request line has no `HTTP/` version: HTTP/0.9 (`GET /`).
fn is_http09(b: &[u8]) -> bool {
    first_line(trim_leading_space(b)).is_some_and(|l| {
        !l.split(|&c| c == b' ')
            .next_back()
            .is_some_and(|v| v.starts_with(b"HTTP/"))
    })
}

fn trim_leading_space(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    &b[start..]
}

/// The offset just after the header block (the empty line), if the sample holds all of it.
fn head_end(b: &[u8]) -> Option<usize> {
    // Built once: a searcher's set-up costs more than most of the searches it does here.
    static CRLF: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\r\n\r\n"));
    static LF: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\n"));
    CRLF.find(b)
        .map(|i| i + 4)
        .or_else(|| LF.find(b).map(|i| i + 2))
}

/// A header line `name: value` with these, case ignored (the value is a token list).
fn has_header(head: &[u8], name: &[u8], value: &[u8]) -> bool {
    lines(head).skip(1).any(|line| {
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            return false;
        };
        line[..colon].trim_ascii().eq_ignore_ascii_case(name)
            && line[colon + 1..]
                .split(|&c| c == b',')
                .any(|v| v.trim_ascii().eq_ignore_ascii_case(value))
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{hex, tcp};
    use super::super::{detect, detect_partial};

    /// wget fetching a file from an Apache server.
    const GET: &[u8] =
        b"GET /download/CHANGES.bro-aux.txt HTTP/1.1\r\nUser-Agent: Wget/1.14 (darwin12.2.0)\r\n\
        Accept: */*\r\nHost: bro.org\r\nConnection: Keep-Alive\r\n\r\n";
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nDate: Thu, 07 Mar 2013 21:43:07 GMT\r\nServer: Apache/2.4.3 (Fedora)\r\n\
        Content-Length: 4705\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n\n0.26 | 2012-08-24";

    #[test]
    fn request_and_reply_are_http() {
        assert_eq!(detect(&tcp((59856, 80), &[GET], &[OK])), ["http"]);
    }

    #[test]
    fn on_any_port() {
        assert_eq!(detect(&tcp((59856, 4567), &[GET], &[OK])), ["http"]);
    }

    #[test]
    fn one_side_alone_is_http_only_on_its_ports() {
        assert_eq!(detect(&tcp((59856, 80), &[GET], &[])), ["http"]);
        assert!(detect(&tcp((59856, 4567), &[GET], &[])).is_empty());
        assert!(detect(&tcp((59856, 80), &[b""], &[OK])).is_empty());
        let banner = b"SSH-2.0-OpenSSH_8.9\r\n".as_slice();
        assert!(detect(&tcp((59856, 22), &[GET], &[banner])).is_empty());
        // A reply that is not HTTP is a violation.
        assert!(detect(&tcp((59856, 80), &[GET], &[banner])).is_empty());
    }

    #[test]
    fn http09_has_no_status_line() {
        let get = b"GET /\r\n\r\n".as_slice();
        let body =
            b"<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01 Transitional//EN\">\n".as_slice();
        assert_eq!(detect(&tcp((50343, 80), &[get], &[body])), ["http"]);
    }

    #[test]
    fn connections_picked_up_midway_are_skipped() {
        let s = tcp((35634, 80), &[GET], &[OK]);
        assert!(detect_partial(&s).is_empty());
        // Protocols whose analyzers take partial connections are still found.
        let get = b"*2\r\n$3\r\nGET\r\n$1\r\nx\r\n".as_slice();
        assert_eq!(
            detect_partial(&tcp((50044, 10625), &[get], &[b"$1\r\n6\r\n"])),
            ["redis"]
        );
    }

    #[test]
    fn connect_tunnel_carries_smtp() {
        let req = b"CONNECT mailin03.sul.t-online.de:25 / HTTP/1.0\r\n\r\nEHLO a\r\n".as_slice();
        let rep = b"HTTP/1.0 200 Connection established\r\n\r\n220 mailin03.sul.t-online.de T-Online ESMTP\r\n".as_slice();
        assert_eq!(detect(&tcp((3378, 8240), &[req], &[rep])), ["http", "smtp"]);
    }

    #[test]
    fn websocket_upgrade() {
        let req = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let rep =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(
            detect(&tcp((40000, 80), &[req], &[rep])),
            ["http", "websocket"]
        );
        // Refused: plain HTTP.
        assert_eq!(detect(&tcp((40000, 80), &[req], &[OK])), ["http"]);
    }

    #[test]
    fn a_tunnel_opened_by_the_clients_first_message_comes_before_websocket() {
        // Zeek's `websocket.wstunnel-https`: TLS inside WebSocket frames. The SSL analyzer
        // confirms on the ClientHello the client's first message carries, before the
        // WebSocket analyzer confirms on having parsed that message: `http,ssl,websocket`.
        let req = b"GET /v1/events HTTP/1.1\r\nhost: localhost:8888\r\nupgrade: websocket\r\n\
            connection: upgrade\r\n\r\n";
        let rep = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";
        let hello = hex("16030100250100002103035acc7f3d63aab6cd3bd6d94c1abad16e00000002c02f0100");
        let server_hello = hex("160303002a020000260303c6392a39db733a1f1c56fa858e765fdfb829c69e0f");
        let frame = |payload: &[u8], mask: Option<[u8; 4]>| {
            let mut f = vec![
                0x82,
                payload.len() as u8 | if mask.is_some() { 0x80 } else { 0 },
            ];
            let m = mask.unwrap_or_default();
            f.extend_from_slice(&mask.map(|m| m.to_vec()).unwrap_or_default());
            f.extend(payload.iter().enumerate().map(|(i, c)| c ^ m[i % 4]));
            f
        };
        let orig = [req.as_slice(), &frame(&hello, Some([1, 2, 3, 4]))].concat();
        let resp = [rep.as_slice(), &frame(&server_hello, None)].concat();
        assert_eq!(
            detect(&tcp((39992, 8888), &[&orig], &[&resp])),
            ["http", "ssl", "websocket"]
        );
        // SSH needs the server's banner too: WebSocket is confirmed before it.
        let orig = [
            req.as_slice(),
            &frame(b"SSH-2.0-OpenSSH_9.6\r\n", Some([1, 2, 3, 4])),
        ]
        .concat();
        let resp = [rep.as_slice(), &frame(b"SSH-2.0-OpenSSH_8.9\r\n", None)].concat();
        assert_eq!(
            detect(&tcp((39992, 8888), &[&orig], &[&resp])),
            ["http", "websocket", "ssh"]
        );
    }

    /// A request line is a method of the list, in any case, then a space or a tab.
    #[test]
    fn request_lines() {
        use super::is_request;
        assert!(is_request(b"GET / HTTP/1.1\r\n"));
        assert!(is_request(b"  get /"));
        assert!(is_request(b"PROPPATCH\t/x"));
        assert!(!is_request(b"GETX / HTTP/1.1"));
        assert!(!is_request(b"GET"), "no space after it yet");
        assert!(!is_request(b"EHLO mail.example.org\r\n"));
        assert!(!is_request(b"\x16\x03\x01"));
    }
}
