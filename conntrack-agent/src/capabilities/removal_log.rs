//! removal.log: one JSON line per removed connection saying why it was removed (closed,
//! reset, attempt, inactivity, expire, reuse, drained at shutdown, evicted) and when: what an
//! operator checks when a connection's conn.log record came earlier or later than expected.
//!
//! Built on removal hooks ([`crate::core::removal_hooks`]): a hook is registered on every new
//! connection, so this is also the end-to-end check that hooks run for every reason.
//!
//! ```toml
//! [removal_log]                  # the section turns it on: <log-dir>/removal.log
//! # path = "/var/log/conntrack/removal.log"
//! # enabled = false
//! ```

use crate::core::events::{Capability, ConnEvent, ConnHandle, EventMask, RemovalReason};
use crate::core::removal_hooks::RemovalHook;
use crate::logs::rotate::{LogFile, LogOptions, RotationPolicy};
use crate::util::site::addr_from_bytes;
use conntrack_common::conn::Conn;
use conntrack_common::tcp::state;
use serde::Deserialize;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The `[removal_log]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemovalLogSection {
    enabled: Option<bool>,
    path: Option<PathBuf>,
}

/// The checked section; off unless the file has a `[removal_log]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemovalLogSettings {
    pub enabled: bool,
    pub path: Option<PathBuf>,
}

impl RemovalLogSection {
    pub fn compile_section(section: Option<Self>) -> RemovalLogSettings {
        section.map_or_else(RemovalLogSettings::default, |s| RemovalLogSettings {
            enabled: s.enabled.unwrap_or(true),
            path: s.path,
        })
    }
}

impl RemovalLogSettings {
    /// Where to write, when enabled (default `<log_dir>/removal.log`).
    pub fn path(&self, log_dir: &Path) -> Option<PathBuf> {
        self.enabled.then(|| {
            self.path
                .clone()
                .unwrap_or_else(|| log_dir.join("removal.log"))
        })
    }
}

/// Why a removal happened, finer than [`RemovalReason`]: a close that came from a RST says so.
fn why(reason: RemovalReason, c: &Conn) -> &'static str {
    let reset = c.orig.state == state::RESET || c.resp.state == state::RESET;
    match reason {
        RemovalReason::Closed | RemovalReason::Expire if reset => "reset",
        r => r.as_str(),
    }
}

/// One removal as a JSON object (conn.log's field names for the connection), written into
/// `out` (cleared first). Every string value is from a fixed alphabet (uid, address, protocol,
/// reason, state, history letters): none needs JSON escaping, so no JSON value is built. Piece
/// by piece rather than through `write!`: `fmt`'s machinery was most of a line's cost, and a
/// line is written per connection. As bytes: each piece written as text was checked as UTF-8
/// on the way (a tenth of the line's cost), the line is checked once instead.
fn line(out: &mut Vec<u8>, scratch: &mut String, conn: &ConnHandle<'_>, reason: RemovalReason) {
    let uid = |o: &mut Vec<u8>| conn.push_uid_bytes(o);
    write_line(out, scratch, conn.conn(), uid, conn.ts_ns(), reason);
}

/// [`line`] of connection `c` with the uid `uid` appends, removed at `ts_ns`; `scratch` holds
/// an IPv6 address on its way.
fn write_line(
    out: &mut Vec<u8>,
    scratch: &mut String,
    c: &Conn,
    uid: impl FnOnce(&mut Vec<u8>),
    ts_ns: u64,
    reason: RemovalReason,
) {
    out.clear();
    out.extend_from_slice(b"{\"ts\":");
    push_ts(out, ts_ns);
    out.extend_from_slice(b",\"uid\":\"");
    uid(out);
    out.extend_from_slice(b"\",\"id.orig_h\":\"");
    push_addr(out, scratch, &c.orig_addr);
    out.extend_from_slice(b"\",\"id.orig_p\":");
    out.extend_from_slice(itoa::Buffer::new().format(c.orig_port).as_bytes());
    out.extend_from_slice(b",\"id.resp_h\":\"");
    push_addr(out, scratch, &c.resp_addr);
    out.extend_from_slice(b"\",\"id.resp_p\":");
    out.extend_from_slice(itoa::Buffer::new().format(c.resp_port).as_bytes());
    out.extend_from_slice(b",\"proto\":\"");
    out.extend_from_slice(c.proto_name().as_bytes());
    out.extend_from_slice(b"\",\"reason\":\"");
    out.extend_from_slice(why(reason, c).as_bytes());
    out.extend_from_slice(b"\",\"conn_state\":\"");
    out.extend_from_slice(c.conn_state().as_str().as_bytes());
    out.extend_from_slice(b"\",\"history\":\"");
    let history = c.history_str();
    if history.is_ascii() {
        out.extend_from_slice(history);
    } else {
        // Each byte a char, as ever (history letters are ASCII; this is for a corrupt one).
        for &b in history {
            let mut utf8 = [0; 4];
            out.extend_from_slice(char::from(b).encode_utf8(&mut utf8).as_bytes());
        }
    }
    out.extend_from_slice(b"\"}");
}

/// Network time in seconds as `{:?}` of the f64 writes it (serde_json's shortest round-trip
/// form). zmij writes the same digits, faster, wherever both use plain decimal notation
/// (`{:?}` switches to an exponent below 1e-4 and from 1e16; zmij below 1e-5 and from 1e16):
/// from 1 s to 1e15 s, which holds every u64 of nanoseconds from 1 s on. But for a tie: when
/// the time lies exactly halfway between two shortest forms, zmij takes the even one and
/// `{:?}` the upper, so a tie (about one time in 16 000) is left to `{:?}`.
fn push_ts(out: &mut Vec<u8>, ns: u64) {
    let ts = ns as f64 / 1e9;
    if (1.0..1e15).contains(&ts) {
        let mut buf = zmij::Buffer::new();
        let s = buf.format_finite(ts);
        if !is_tie(ts, s) {
            out.extend_from_slice(s.as_bytes());
            return;
        }
    }
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{ts:?}");
}

/// True if `ts` (from 1 to 2^53, so `mant * 2^exp` with `exp` < 0) is exactly halfway between
/// `s`, a plain decimal with its digits, and the next decimal of as many digits: `ts` equals
/// `s` followed by a 5. Exact in integers: `mant * 10^(f+1) == (10 * digits + 5) * 2^-exp`,
/// `f` the number of fractional digits of `s`. Anything unexpected counts as a tie (the
/// caller then writes `{:?}`).
fn is_tie(ts: f64, s: &str) -> bool {
    // A tie's exact value has one fractional digit more than `s`. That of `mant * 2^exp`
    // (`mant` odd) has `-exp` (`mant * 5^-exp / 10^-exp`, whose last digit is odd): most
    // times have far more, and are no tie whatever their digits. More than `s` has
    // characters (a fraction, so `s` has its point): no tie, without looking for the point.
    let (mant, exp) = mant_exp(ts);
    let exact_frac = -(exp + mant.trailing_zeros() as i32);
    if usize::try_from(exact_frac).is_ok_and(|f| f > s.len()) {
        return false;
    }
    let Some((int, frac)) = s.split_once('.') else {
        return true;
    };
    if usize::try_from(exact_frac).ok() != Some(frac.len() + 1) {
        return false;
    }
    let mut digits: u128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        if !b.is_ascii_digit() || digits >= 10u128.pow(19) {
            return true;
        }
        digits = digits * 10 + u128::from(b - b'0');
    }
    let mant = u128::from(mant);
    let (Ok(f), true) = (u32::try_from(frac.len() + 1), (-60..0).contains(&exp)) else {
        return true;
    };
    let lhs = 10u128.checked_pow(f).and_then(|p| p.checked_mul(mant));
    let rhs = (digits * 10 + 5).checked_shl(exp.unsigned_abs());
    match (lhs, rhs) {
        (Some(l), Some(r)) => l == r && r >> exp.unsigned_abs() == digits * 10 + 5,
        _ => true,
    }
}

/// A normal `f64` as `mant * 2^exp`, `mant` with its implicit leading bit.
fn mant_exp(x: f64) -> (u64, i32) {
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1075;
    ((bits & ((1 << 52) - 1)) | (1 << 52), exp)
}

/// An address as `Display` of [`addr_from_bytes`] writes it. IPv4 (mapped, as the engine
/// keeps it) here, digit by digit; IPv6 as conn.log's writer does (through `scratch`) but for
/// an IPv4-compatible address (`::a.b.c.d`, inet_ntop's form; `Display` writes hex groups),
/// which goes through `fmt` (the IPv6 `Display` cost a third of a line).
fn push_addr(out: &mut Vec<u8>, scratch: &mut String, bytes: &[u8; 16]) {
    if let Some(v4) = mapped_v4(bytes) {
        for (i, &octet) in v4.iter().enumerate() {
            if i > 0 {
                out.push(b'.');
            }
            push_octet(out, octet);
        }
        return;
    }
    let compatible = bytes[..12].iter().all(|&b| b == 0) && bytes[12..14] != [0, 0];
    if compatible {
        use std::io::Write;
        let _ = write!(out, "{}", addr_from_bytes(bytes));
    } else {
        scratch.clear();
        crate::logs::conn_tsv::push_addr(scratch, bytes);
        out.extend_from_slice(scratch.as_bytes());
    }
}

/// The IPv4 address of an IPv4-mapped one (`::ffff:a.b.c.d`).
fn mapped_v4(bytes: &[u8; 16]) -> Option<&[u8]> {
    let (prefix, v4) = bytes.split_at(12);
    (prefix == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]).then_some(v4)
}

/// `n` in decimal.
fn push_octet(out: &mut Vec<u8>, n: u8) {
    if n >= 100 {
        out.extend_from_slice(&[b'0' + n / 100, b'0' + n / 10 % 10, b'0' + n % 10]);
    } else if n >= 10 {
        out.extend_from_slice(&[b'0' + n / 10, b'0' + n % 10]);
    } else {
        out.push(b'0' + n);
    }
}

/// The capability: a removal hook on every connection, writing one line each.
pub struct RemovalLog {
    hook: RemovalHook,
    out: Rc<RefCell<LogFile>>,
}

impl RemovalLog {
    #[cfg(test)]
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        Self::create_rotated(path, RotationPolicy::default())
    }

    /// Writes to `path`, rotated like conn.log (JSON lines: no header or `#close`; the
    /// rotated name is `<file stem>.<open time>.log`).
    pub fn create_rotated(path: &Path, rotation: RotationPolicy) -> anyhow::Result<Self> {
        let name = path
            .file_stem()
            .map_or_else(|| "removal".into(), |s| s.to_string_lossy().into_owned());
        let opts = LogOptions {
            rotation,
            stdout: false,
        };
        // Flushed with conn.log (the agent's flush, about once a second live, and at the
        // end): a flush per line was a write system call per connection.
        let out = Rc::new(RefCell::new(LogFile::create(
            path, &name, None, opts, false,
        )?));
        let shown = path.display().to_string();
        let file = out.clone();
        let bufs = RefCell::new((Vec::new(), String::new()));
        let hook = RemovalHook::new(move |conn, reason| {
            let mut out = file.borrow_mut();
            let (buf, scratch) = &mut *bufs.borrow_mut();
            line(buf, scratch, conn, reason);
            // Always UTF-8 (every piece is text); checked once here rather than per piece.
            let text = match std::str::from_utf8(buf) {
                Ok(t) => std::borrow::Cow::Borrowed(t),
                Err(_) => String::from_utf8_lossy(buf),
            };
            if let Err(e) = out.write_line(&text, Some(conn.ts_ns() as i64)) {
                log::warn!("{shown}: {e:#}");
            }
        });
        Ok(Self { hook, out })
    }

    /// removal.log, for the agent to tick (rotation).
    pub fn log(&self) -> crate::logs::rotate::SharedLog {
        self.out.clone()
    }
}

impl Capability for RemovalLog {
    fn wants_state_changes(&self) -> bool {
        false
    }

    /// The hook does the rest.
    fn events(&self) -> EventMask {
        EventMask::NEW
    }

    fn on_event(&mut self, conn: &mut ConnHandle<'_>, event: &ConnEvent) {
        if *event == ConnEvent::New {
            conn.register_removal_hook(&self.hook);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::site::addr_to_bytes;
    use std::net::{IpAddr, Ipv6Addr};

    /// A small xorshift: reproducible inputs without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// The line as it was written before: one `write!` (the reference for [`write_line`]).
    fn reference(c: &Conn, uid: &str, ts_ns: u64, reason: RemovalReason) -> String {
        use std::fmt::Write;
        let ts = ts_ns as f64 / 1e9;
        let mut out = String::new();
        let _ = write!(
            out,
            "{{\"ts\":{ts:?},\"uid\":\"{}\",\"id.orig_h\":\"{}\",\"id.orig_p\":{},\
             \"id.resp_h\":\"{}\",\"id.resp_p\":{},\"proto\":\"{}\",\"reason\":\"{}\",\
             \"conn_state\":\"{}\",\"history\":\"",
            uid,
            addr_from_bytes(&c.orig_addr),
            c.orig_port,
            addr_from_bytes(&c.resp_addr),
            c.resp_port,
            c.proto_name(),
            why(reason, c),
            c.conn_state().as_str(),
        );
        out.extend(c.history_str().iter().map(|&b| b as char));
        out.push_str("\"}");
        out
    }

    #[test]
    fn timestamps_are_written_as_debug_writes_them() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let edges = [
            0,
            1,
            999,
            100_000,
            999_999_999,
            1_000_000_000,
            1_000_000_001,
            1_700_000_005_013_071_800,
            1_700_000_000_000_000_000,
            u64::MAX,
            // Ties: halfway between two 17-digit forms (17925956825.7890625 s and the like).
            17_925_956_825_789_064_051,
            17_925_956_825_789_062_500,
            1_700_000_005_003_906_250,
            1_700_000_005_001_953_125,
        ];
        let random = (0..300_000).map(|i| match i % 4 {
            0 => rng.next(),
            1 => 1_600_000_000_000_000_000 + rng.next() % 400_000_000_000_000_000,
            2 => rng.next() % 10_000_000_000,
            _ => rng.next() >> (rng.next() % 64),
        });
        for ns in edges.into_iter().chain(random) {
            let mut out = Vec::new();
            push_ts(&mut out, ns);
            assert_eq!(out, format!("{:?}", ns as f64 / 1e9).as_bytes(), "{ns} ns");
        }
    }

    #[test]
    fn ties_are_found_exactly() {
        // 17925956825.7890625 (exact: 101/128) = 17925956825.789062 followed by a 5.
        let t = 17_925_956_825.0 + 101.0 / 128.0;
        assert!(is_tie(t, "17925956825.789062"));
        assert!(!is_tie(t, "17925956825.789063"));
        assert!(!is_tie(1700000005.0130718, "1700000005.0130718"));
        assert!(!is_tie(2.5, "2.0"));
        assert!(is_tie(2.25, "2.2"));
        assert!(is_tie(1.0, "1e0"), "not plain decimal: left to {{:?}}");
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut rng = Rng(12345);
        let fixed: [IpAddr; 9] = [
            "0.0.0.0".parse().unwrap(),
            "255.255.255.255".parse().unwrap(),
            "10.0.0.5".parse().unwrap(),
            "::".parse().unwrap(),
            "::1.2.3.4".parse().unwrap(),
            "::0.0.1.2".parse().unwrap(),
            "::1".parse().unwrap(),
            "::ffff:0:1.2.3.4".parse().unwrap(),
            "2001:db8::3".parse().unwrap(),
        ];
        let random = (0..20_000).map(|i| {
            let b = (u128::from(rng.next()) << 64) | u128::from(rng.next());
            // Every other one IPv4 (mapped, as connections hold it).
            match i % 2 {
                0 => addr_to_bytes(IpAddr::V4((b as u32).into())),
                // Zero groups where the random mask has them, for runs of every length.
                _ => {
                    let zeros = rng.next();
                    let kept = (0..8)
                        .filter(|g| (zeros >> g) & 1 != 0)
                        .fold(0u128, |m, g| m | 0xffff << (16 * g));
                    Ipv6Addr::from(b & kept).octets()
                }
            }
        });
        let mut scratch = String::new();
        for bytes in fixed.map(addr_to_bytes).into_iter().chain(random) {
            let mut out = b"x".to_vec();
            push_addr(&mut out, &mut scratch, &bytes);
            assert_eq!(out, format!("x{}", addr_from_bytes(&bytes)).as_bytes());
        }
    }

    #[test]
    fn lines_are_what_one_write_made() {
        let mut c = Conn::ZERO;
        c.orig_addr = addr_to_bytes("10.0.0.5".parse().unwrap());
        c.resp_addr = addr_to_bytes("2001:db8:1::d31".parse().unwrap());
        c.orig_port = 13170;
        c.resp_port = 993;
        c.proto = 6;
        let (mut out, mut scratch) = (Vec::new(), String::new());
        for reason in [RemovalReason::Closed, RemovalReason::Drain] {
            for ts_ns in [0, 1_700_000_005_041_402_800] {
                let uid = |o: &mut Vec<u8>| o.extend_from_slice(b"C3nB9d11Fvk7TBjbiH");
                write_line(&mut out, &mut scratch, &c, uid, ts_ns, reason);
                let want = reference(&c, "C3nB9d11Fvk7TBjbiH", ts_ns, reason);
                assert_eq!(String::from_utf8_lossy(&out), want);
            }
        }
        c.proto = 17;
        c.orig.state = state::RESET;
        c.orig_addr = addr_to_bytes("192.168.100.254".parse().unwrap());
        c.resp_addr = addr_to_bytes("::1.2.3.4".parse().unwrap());
        write_line(&mut out, &mut scratch, &c, |_| {}, 5, RemovalReason::Closed);
        assert_eq!(
            String::from_utf8_lossy(&out),
            reference(&c, "", 5, RemovalReason::Closed)
        );
    }
}
