//! conn.log's TSV line written straight from a connection, for the common record: history
//! plain letters, a random uid, no community_id column. It is exactly
//! what [`ConnRecord::from_conn`] and [`ConnRecord::write_tsv`] write, without the record: a
//! replay logs a record per connection, and building one (two `IpAddr`s, the history and uid
//! as heap strings) and then formatting it field by field into a `String` cost about 4,500
//! instructions a record, an eighth of a `read` of the bench trace. Here the line is put
//! together in a stack buffer and appended once.
//!
//! [`ConnRecord::from_conn`]: crate::logs::record::ConnRecord::from_conn
//! [`ConnRecord::write_tsv`]: crate::logs::record::ConnRecord::write_tsv

use crate::logs::record::{DIGIT_PAIRS, time_parts};
use conntrack_common::conn::Conn;

/// Longest history written here: longer (never seen in practice) takes the record's path.
const MAX_HISTORY: usize = 64;

/// Longest service set written here (names and commas); a longer one takes the record's path.
const MAX_SERVICE: usize = 64;

/// The service column's length, commas included.
fn service_len(service: &[&str]) -> usize {
    service.iter().map(|s| s.len() + 1).sum()
}

/// Room for the longest line of this path: 13 numbers of at most 20 digits, two times of at
/// most 27 characters, two addresses of at most 39, the uid (at most 23), the longest proto and
/// conn_state names, the history, the service set and 21 tabs; well under 512.
const LINE: usize = 512;

/// A line being put together: ASCII only, so it is a `str` as written.
struct Line<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Line<N> {
    fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn byte(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn tab(&mut self) {
        self.byte(b'\t');
    }

    /// A number in decimal, written in place two digits at a time: through itoa's buffer it
    /// was a copy of a slice of varying length, a `memcpy` call, for each of a line's 13.
    fn int(&mut self, v: impl Into<u64>) {
        let mut v: u64 = v.into();
        let end = self.len + v.checked_ilog10().unwrap_or(0) as usize + 1;
        let mut i = end;
        while v >= 100 {
            i -= 2;
            self.buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[(v % 100) as usize]);
            v /= 100;
        }
        if v >= 10 {
            self.buf[i - 2..i].copy_from_slice(&DIGIT_PAIRS[v as usize]);
        } else {
            self.buf[i - 1] = b'0' + v as u8;
        }
        self.len = end;
    }

    /// `secs.micros`, as the record's writer puts it ([`time_parts`]).
    fn time_ns(&mut self, ns: i64) {
        let (negative, secs, frac) = time_parts(ns);
        if negative {
            self.byte(b'-');
        }
        self.int(secs);
        self.byte(b'.');
        self.put(&frac);
    }

    fn v4(&mut self, o: [u8; 4]) {
        for (i, b) in o.into_iter().enumerate() {
            if i > 0 {
                self.byte(b'.');
            }
            self.octet(b);
        }
    }

    /// A byte in decimal without leading zeros (a record has eight): its three table bytes
    /// written, the length moved by its digits (the padding is written over next). A copy of
    /// one to three bytes was a `memcpy` call, and digit by digit three branches.
    fn octet(&mut self, b: u8) {
        let (digits, n) = OCTETS[usize::from(b)];
        self.buf[self.len..self.len + 3].copy_from_slice(&digits);
        self.len += usize::from(n);
    }

    /// An address as `write_addr` writes it: IPv4-mapped as IPv4, IPv4-compatible (`::a.b.c.d`)
    /// with a dotted tail, any other IPv6 address compressed as std's `Display` does (RFC 5952:
    /// the first longest run of two or more zero groups as `::`, lowercase hex).
    fn addr(&mut self, a: &[u8; 16]) {
        if let Some(v4) = mapped_v4(a) {
            return self.v4(v4);
        }
        let seg: [u16; 8] = std::array::from_fn(|i| u16::from_be_bytes([a[2 * i], a[2 * i + 1]]));
        if seg[..6].iter().all(|&w| w == 0) && seg[6] != 0 {
            self.put(b"::");
            return self.v4([a[12], a[13], a[14], a[15]]);
        }
        let (start, len) = longest_zero_run(&seg);
        if len > 1 {
            self.groups(&seg[..start]);
            self.put(b"::");
            self.groups(&seg[start + len..]);
        } else {
            self.groups(&seg);
        }
    }

    /// 16-bit groups in lowercase hex without leading zeros, colon-separated.
    fn groups(&mut self, seg: &[u16]) {
        for (i, &g) in seg.iter().enumerate() {
            if i > 0 {
                self.byte(b':');
            }
            let digits = (16 - g.leading_zeros()).div_ceil(4).max(1);
            for d in (0..digits).rev() {
                self.byte(b"0123456789abcdef"[usize::from((g >> (4 * d)) & 0xf)]);
            }
        }
    }

    /// A random uid: `C`, then the base62 of the high word and of the low one.
    fn uid(&mut self, hi: u32, lo: u64) {
        self.byte(b'C');
        self.base62(u64::from(hi));
        self.base62(lo);
    }

    /// Base62 of a 64-bit word, most significant digit first (as `uid::push_base62`), two
    /// digits per division: a record has two of these, and a digit at a time was a tenth of
    /// the line's cost.
    fn base62(&mut self, v: u64) {
        let (digits, n) = base62_digits(v);
        self.put(&digits[n..]);
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.bytes()).ok()
    }
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Each byte in decimal (up to three digits, then padding) and its number of digits.
const OCTETS: [([u8; 3], u8); 256] = {
    let mut t = [([0u8; 3], 0u8); 256];
    let mut i = 0;
    while i < t.len() {
        let b = i as u8;
        t[i] = if b >= 100 {
            ([b'0' + b / 100, b'0' + b / 10 % 10, b'0' + b % 10], 3)
        } else if b >= 10 {
            ([b'0' + b / 10, b'0' + b % 10, 0], 2)
        } else {
            ([b'0' + b, 0, 0], 1)
        };
        i += 1;
    }
    t
};

/// Every two-digit base62 number, `00` to `zz`, by value.
const BASE62_PAIRS: [[u8; 2]; 62 * 62] = {
    let mut t = [[0u8; 2]; 62 * 62];
    let mut i = 0;
    while i < t.len() {
        t[i] = [BASE62[i / 62], BASE62[i % 62]];
        i += 1;
    }
    t
};

/// `v` in base62, most significant digit first, no leading zeros (0 is "0"): the digits are
/// `digits[start..]` of the returned `(digits, start)`. Two digits per division: the uid is a
/// good part of a line's cost (conn.log's and removal.log's writers share this).
pub fn base62_digits(mut v: u64) -> ([u8; 12], usize) {
    // 62^11 > 2^64: at most 11 digits.
    let mut digits = [0u8; 12];
    let mut n = digits.len();
    while v >= 62 * 62 {
        n -= 2;
        digits[n..n + 2].copy_from_slice(&BASE62_PAIRS[(v % (62 * 62)) as usize]);
        v /= 62 * 62;
    }
    // What is left is one or two digits, the first not a leading zero (unless `v` was 0).
    if v >= 62 {
        n -= 2;
        digits[n..n + 2].copy_from_slice(&BASE62_PAIRS[v as usize]);
    } else {
        n -= 1;
        digits[n] = BASE62[v as usize];
    }
    (digits, n)
}

/// An address as conn.log writes it, appended to `out` (see `Line::addr`).
pub fn push_addr(out: &mut String, a: &[u8; 16]) {
    // The longest: eight groups of four hex digits.
    let mut l = Line::<40>::new();
    l.addr(a);
    out.push_str(l.as_str().unwrap_or_default());
}

/// A random uid as conn.log spells it, appended to `out` (removal.log's lines and the events'
/// uids share it).
pub fn push_uid(out: &mut String, hi: u32, lo: u64) {
    // 'C' and at most 6 + 11 base62 digits.
    let mut l = Line::<24>::new();
    l.uid(hi, lo);
    out.push_str(l.as_str().unwrap_or_default());
}

/// The IPv4 address of an IPv4-mapped one (how the engine keeps IPv4).
fn mapped_v4(addr: &[u8; 16]) -> Option<[u8; 4]> {
    let (prefix, v4) = addr.split_at(12);
    if prefix != [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] {
        return None;
    }
    v4.try_into().ok()
}

/// A record's uid as the writer takes it: the 96 random bits (written out here, without a
/// `String` for each) or a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordUid<'a> {
    Random { hi: u32, lo: u64 },
    Text(&'a str),
}

impl RecordUid<'_> {
    /// The uid's text: `C` and the base62 of each word (as `core::uid` renders it).
    pub fn render(&self) -> String {
        match self {
            RecordUid::Random { hi, lo } => {
                let mut l = Line::<LINE>::new();
                l.uid(*hi, *lo);
                l.as_str().unwrap_or_default().to_string()
            }
            RecordUid::Text(t) => t.to_string(),
        }
    }
}

/// The first longest run of zero groups: (start, length).
fn longest_zero_run(seg: &[u16; 8]) -> (usize, usize) {
    let (mut best, mut cur) = ((0, 0), (0, 0));
    for (i, &g) in seg.iter().enumerate() {
        if g == 0 {
            if cur.1 == 0 {
                cur.0 = i;
            }
            cur.1 += 1;
            if cur.1 > best.1 {
                best = cur;
            }
        } else {
            cur = (0, 0);
        }
    }
    best
}

/// History letters that the TSV writer copies unescaped (printable ASCII but the tab).
fn plain_history(h: &[u8]) -> bool {
    h.len() <= MAX_HISTORY && h.iter().all(|&b| (0x20..0x7f).contains(&b))
}

/// Appends [`with_conn_tsv`]'s line to `out`; false (nothing appended) for a record not of
/// this path. The tests' view of the line.
#[cfg(test)]
pub fn write_conn_tsv(
    out: &mut String,
    c: &Conn,
    uid: RecordUid,
    local: Option<(bool, bool)>,
    service: &[&str],
) -> bool {
    with_conn_tsv(c, uid, local, service, |line| {
        match std::str::from_utf8(line) {
            Ok(s) => {
                out.push_str(s);
                true
            }
            Err(_) => false,
        }
    })
    .unwrap_or(false)
}

/// `f` of `c`'s conn.log line (no community_id column, ASCII, no newline) with uid `uid`,
/// local_orig / local_resp `local` and `service`, if it is a record of this path; None otherwise: a uid
/// given as text, an unusual history. The line is handed over as bytes, for the log's writer,
/// which buffers bytes: it goes there once, without a `String` (and its UTF-8 check) between.
pub fn with_conn_tsv<R>(
    c: &Conn,
    uid: RecordUid,
    local: Option<(bool, bool)>,
    service: &[&str],
    f: impl FnOnce(&[u8]) -> R,
) -> Option<R> {
    let RecordUid::Random { hi, lo } = uid else {
        return None;
    };
    let history = c.history_str();
    if !plain_history(history) || service_len(service) > MAX_SERVICE {
        return None;
    }
    let mut l = Line::<LINE>::new();
    l.time_ns(c.start_ns as i64);
    l.tab();
    l.uid(hi, lo);
    l.tab();
    l.addr(&c.orig_addr);
    l.tab();
    l.int(c.orig_port);
    l.tab();
    l.addr(&c.resp_addr);
    l.tab();
    l.int(c.resp_port);
    l.tab();
    l.put(c.proto_name().as_bytes());
    l.tab();
    // service: Zeek's set, comma-separated; the names are plain lower-case words.
    if service.is_empty() {
        l.byte(b'-');
    }
    for (i, name) in service.iter().enumerate() {
        if i > 0 {
            l.byte(b',');
        }
        l.put(name.as_bytes());
    }
    l.tab();
    let duration_ns = c.last_ns as i64 - c.start_ns as i64;
    if duration_ns > 0 {
        l.time_ns(duration_ns);
        l.tab();
        l.int(c.orig_bytes());
        l.tab();
        l.int(c.resp_bytes());
    } else {
        l.put(b"-\t-\t-");
    }
    l.tab();
    l.put(c.conn_state().as_str().as_bytes());
    l.tab();
    let tf = |b: bool| if b { b"T" } else { b"F" };
    match local {
        Some((o, r)) => {
            l.put(tf(o));
            l.tab();
            l.put(tf(r));
        }
        None => l.put(b"-\t-"),
    }
    l.tab();
    l.int(c.missed_bytes());
    l.tab();
    if history.is_empty() {
        l.byte(b'-');
    } else {
        l.put(history);
    }
    for v in [
        c.orig_pkts(),
        c.orig_ip_bytes(),
        c.resp_pkts(),
        c.resp_ip_bytes(),
    ] {
        l.tab();
        l.int(v);
    }
    // tunnel_parents: always empty here.
    l.put(b"\t-\t");
    l.int(c.proto);
    Some(f(l.bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::record::ConnRecord;
    use proptest::prelude::*;

    /// What the record's path writes for `c`.
    fn by_record(
        c: &Conn,
        uid: RecordUid,
        local: Option<(bool, bool)>,
        service: &[&str],
    ) -> String {
        let mut r = ConnRecord::from_conn(c);
        r.uid = uid.render();
        r.service = service.iter().map(|s| s.to_string()).collect();
        if let Some((o, l)) = local {
            r.local_orig = Some(o);
            r.local_resp = Some(l);
        }
        r.to_tsv(None)
    }

    fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
        let mut m = [0u8; 16];
        m[10] = 0xff;
        m[11] = 0xff;
        m[12..].copy_from_slice(&a);
        m
    }

    #[test]
    fn the_line_is_the_records_line() {
        let mut c = conntrack_common::conn::ZERO_CONN;
        c.proto = 6;
        c.orig_addr = v4_mapped([10, 0, 0, 1]);
        c.resp_addr = v4_mapped([192, 168, 200, 255]);
        c.orig_port = 51234;
        c.resp_port = 443;
        c.start_ns = 1_700_000_000_123_456_789;
        c.last_ns = c.start_ns + 2_000_000_500;
        let uid = RecordUid::Random {
            hi: u32::MAX,
            lo: u64::MAX,
        };
        for local in [None, Some((true, false))] {
            let mut out = String::new();
            assert!(write_conn_tsv(&mut out, &c, uid, local, &[]));
            assert_eq!(out, by_record(&c, uid, local, &[]));
        }
        // The service set, in confirmation order.
        for service in [&["ssl"][..], &["http", "websocket", "ssh"]] {
            let mut out = String::new();
            assert!(write_conn_tsv(&mut out, &c, uid, None, service));
            assert_eq!(out, by_record(&c, uid, None, service));
            assert!(out.contains(&format!("\ttcp\t{}\t", service.join(","))));
        }
        // No duration: three unset columns; a uid of zeros.
        c.last_ns = c.start_ns;
        let mut out = String::new();
        let zero = RecordUid::Random { hi: 0, lo: 0 };
        assert!(write_conn_tsv(&mut out, &c, zero, None, &[]));
        assert_eq!(out, by_record(&c, zero, None, &[]));
    }

    /// IPv6 addresses as std prints them (and `write_addr`'s IPv4-compatible form).
    #[test]
    fn ipv6_addresses_are_compressed_as_std_does() {
        let cases = [
            "2001:db8::3",
            "2001:db8:1::d31",
            "::",
            "::1",
            "1::",
            "::1.2.3.4",
            "::ffff:0:0",
            "1:0:0:2::3",
            "1::2:0:0:3",
            "1:0:2:0:3:0:4:0",
            "fe80::aa:bbbb:c:d",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ];
        for text in cases {
            let a: std::net::Ipv6Addr = text.parse().unwrap();
            let mut l = Line::<LINE>::new();
            l.addr(&a.octets());
            let want = crate::logs::record::fmt_addr(&std::net::IpAddr::V6(a));
            assert_eq!(l.as_str(), Some(want.as_str()), "{text}");
        }
        assert_eq!(longest_zero_run(&[1, 0, 0, 2, 0, 0, 3, 4]), (1, 2));
        assert_eq!(longest_zero_run(&[1, 2, 3, 4, 5, 6, 7, 0]), (7, 1));
    }

    #[test]
    fn numbers_as_itoa_writes_them() {
        let mut values = vec![0u64, u64::MAX, u64::MAX / 3];
        for p in 0..20 {
            let t = 10u64.pow(p);
            values.extend([t - 1, t, t + 1, t / 3 * 2]);
        }
        for v in values {
            let mut l = Line::<64>::new();
            l.byte(b'x');
            l.int(v);
            l.byte(b'y');
            let want = format!("x{}y", itoa::Buffer::new().format(v));
            assert_eq!(l.as_str(), Some(want.as_str()), "{v}");
        }
    }

    #[test]
    fn octets_as_itoa_writes_them() {
        for b in 0..=255u8 {
            let mut l = Line::<LINE>::new();
            l.octet(b);
            assert_eq!(l.as_str(), Some(b.to_string().as_str()));
        }
    }

    #[test]
    fn other_records_are_left_to_the_record() {
        let mut c = conntrack_common::conn::ZERO_CONN;
        c.orig_addr = v4_mapped([10, 0, 0, 2]);
        let mut out = String::new();
        let given = RecordUid::Text("Cgiven");
        assert!(!write_conn_tsv(&mut out, &c, given, None, &[]));
        assert!(out.is_empty());
        assert!(!plain_history(b"S\tA"));
        assert!(!plain_history(&[b'S'; MAX_HISTORY + 1]));
        assert!(plain_history(b"ShADadFf"));
    }

    proptest! {
        /// A uid is spelled as the tracker's `Uid` renders it (one base62 digit at a time),
        /// also at the two-digit boundaries of the line's base62.
        #[test]
        fn uids_as_the_tracker_renders_them(
            hi in prop_oneof![Just(0u32), Just(61), Just(62), Just(3843), Just(3844), Just(u32::MAX), any::<u32>()],
            lo in prop_oneof![Just(0u64), Just(61), Just(62), Just(3843), Just(3844), Just(238_327), Just(238_328), Just(u64::MAX), any::<u64>()],
        ) {
            let mut l = Line::<LINE>::new();
            l.uid(hi, lo);
            let want = crate::core::uid::Uid::Random { hi, lo }.render();
            prop_assert_eq!(l.as_str(), Some(want.as_str()));
        }

        /// Any connection (through the engine's own fields) is written as the record's path
        /// writes it, or left to it.
        #[test]
        fn same_as_the_record(
            bytes in proptest::collection::vec(any::<u8>(), size_of::<Conn>()),
            v4 in any::<bool>(),
            a in any::<[u8; 4]>(),
            b in any::<[u8; 4]>(),
            v6 in proptest::collection::vec(prop_oneof![Just(0u16), any::<u16>()], 16),
            hi in any::<u32>(),
            lo in any::<u64>(),
            local in any::<Option<(bool, bool)>>(),
            services in 0usize..3,
            start in 0u64..1 << 62,
            len in 0u64..1 << 40,
        ) {
            let mut c = conntrack_common::conn::ZERO_CONN;
            // SAFETY: `Conn` is plain integers (repr(C), any bytes are a value); `bytes` has
            // exactly its size.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    (&raw mut c).cast::<u8>(),
                    size_of::<Conn>(),
                );
            }
            if v4 {
                c.orig_addr = v4_mapped(a);
                c.resp_addr = v4_mapped(b);
            } else {
                // IPv6 with runs of zero groups (random bytes rarely have any).
                for (i, g) in v6.iter().enumerate() {
                    let addr = if i < 8 { &mut c.orig_addr } else { &mut c.resp_addr };
                    addr[2 * (i % 8)..2 * (i % 8) + 2].copy_from_slice(&g.to_be_bytes());
                }
            }
            c.start_ns = start;
            c.last_ns = start.wrapping_add(len);
            let uid = RecordUid::Random { hi, lo };
            let service = &["quic", "ssl"][..services];
            let mut out = String::new();
            if write_conn_tsv(&mut out, &c, uid, local, service) {
                prop_assert_eq!(out, by_record(&c, uid, local, service));
            } else {
                prop_assert!(out.is_empty());
            }
        }
    }
}
