//! Zeek's ConnThreshold tests reproduced through the event core: a capability drives the
//! threshold API exactly as the test scripts do (thresholds set at connection establishment)
//! while `read` replays Zeek's trace, and prints what the scripts print, in Zeek's format; the
//! lines must equal Zeek's baselines (../shared/reference/zeek-conn-semantics.md). Each test
//! runs with the host engine, and with the kernel engine when root.
//!
//! The trace is read from ../shared/conformance (or `CONNTRACK_CONFORMANCE`) and never copied
//! here; the tests skip when it is absent.

use crate::cli::Engine;
use crate::commands::read::read_with;
use crate::core::events::{Capability, ConnEvent, ConnHandle};
use crate::core::thresholds::{Crossing, ThresholdKind};
use crate::tests::fixtures::{config_of, replay_args};
use crate::util::site::addr_from_bytes;
use conntrack_common::conn::Conn;
use conntrack_common::proto;
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

fn trace() -> Option<PathBuf> {
    let dir = std::env::var_os("CONNTRACK_CONFORMANCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance")
        });
    let t = dir.join("traces/irc-dcc-send.pcapng");
    if t.is_file() {
        Some(t)
    } else {
        eprintln!("skipping: {} not found", t.display());
        None
    }
}

/// The engines to run: the host's always, the kernel's when this process may load it.
pub(crate) fn engines() -> Vec<Engine> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        vec![Engine::Host, Engine::Kernel]
    } else {
        eprintln!("kernel engine skipped: needs root");
        vec![Engine::Host]
    }
}

/// Replays `trace` with `engine`, with the capability `make` builds; returns what it printed.
pub(crate) fn run(
    trace: &std::path::Path,
    engine: Engine,
    make: impl FnOnce(Rc<RefCell<Vec<String>>>) -> Box<dyn Capability>,
) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let out = Rc::new(RefCell::new(Vec::new()));
    let args = replay_args(trace, engine, dir.path(), &[]);
    let config = config_of(&args);
    read_with(args, config, vec![make(out.clone())])
        .unwrap_or_else(|e| panic!("{engine:?}: {e:#}"));
    out.take()
}

/// Zeek's `cat(c$id)`.
pub(crate) fn conn_id(c: &Conn) -> String {
    let kind = match c.proto {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        proto::ICMP | proto::ICMPV6 => "icmp",
        _ => "unknown",
    };
    format!(
        "[orig_h={}, orig_p={}/{kind}, resp_h={}, resp_p={}/{kind}, proto={}, ctx=[]]",
        addr_from_bytes(&c.orig_addr),
        c.orig_port,
        addr_from_bytes(&c.resp_addr),
        c.resp_port,
        c.proto
    )
}

/// Zeek's `bool` in print.
fn tf(b: bool) -> &'static str {
    if b { "T" } else { "F" }
}

/// Zeek's double in print (`ODesc::Add(double)`: 6 decimals at most, trailing zeros dropped,
/// `.0` kept for whole numbers).
fn zeek_double(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0');
    if let Some(whole) = s.strip_suffix('.') {
        format!("{whole}.0")
    } else {
        s.to_string()
    }
}

/// Zeek's interval in print (`IntervalVal::ValDescribe`): whole days, hrs, mins, secs and
/// msecs, then the rest in usecs.
pub(crate) fn zeek_interval(secs: f64) -> String {
    if secs == 0.0 {
        return "0 secs".into();
    }
    let units = [
        (86400.0, "day"),
        (3600.0, "hr"),
        (60.0, "min"),
        (1.0, "sec"),
        (1e-3, "msec"),
        (1e-6, "usec"),
    ];
    let near = |a: f64, b: f64| (a - b).abs() < 1e-6;
    let mut v = secs;
    let mut parts: Vec<String> = Vec::new();
    for (i, (unit, word)) in units.iter().enumerate() {
        let n = if i == units.len() - 1 {
            let n = v / unit;
            if near(n, 0.0) {
                if parts.is_empty() {
                    parts.push("0 secs".into());
                }
                break;
            }
            n
        } else {
            if !(v >= *unit || v <= -*unit) {
                continue;
            }
            let n = (v / unit).trunc();
            v -= n * unit;
            n
        };
        let plural = if near(n, 1.0) || near(n, -1.0) {
            ""
        } else {
            "s"
        };
        parts.push(format!("{} {word}{plural}", zeek_double(n)));
    }
    parts.join(" ")
}

/// A packet time as Zeek holds it: seconds + microseconds / 1e6 in a double.
fn zeek_time(ns: u64) -> f64 {
    (ns / 1_000_000_000) as f64 + ((ns % 1_000_000_000) / 1_000) as f64 / 1e6
}

/// Zeek's `c$duration` (last_time - start_time in doubles).
fn zeek_duration(c: &Conn) -> String {
    zeek_interval(zeek_time(c.last_ns) - zeek_time(c.start_ns))
}

/// Zeek's `print "triggered ...", c$id, threshold, is_orig`.
fn triggered(c: &Conn, x: &Crossing) -> String {
    let (what, value) = match x.kind {
        ThresholdKind::OrigBytes | ThresholdKind::RespBytes => ("bytes", x.threshold.to_string()),
        ThresholdKind::OrigPackets | ThresholdKind::RespPackets => {
            ("packets", x.threshold.to_string())
        }
        ThresholdKind::Duration => ("duration", zeek_interval(x.threshold as f64 / 1e9)),
        ThresholdKind::TotalBytes => ("total bytes", x.threshold.to_string()),
        ThresholdKind::TotalPackets => ("total packets", x.threshold.to_string()),
    };
    format!(
        "triggered {what}, {}, {value}, {}",
        conn_id(c),
        tf(x.is_orig)
    )
}

/// `scripts/base/protocols/conn/threshold.zeek`. Its duration lines (200 msecs) come from
/// `set_duration_threshold(c, 0.1secs)`, `(c, 0.2secs)`, then `delete_duration_threshold(c,
/// 0.1secs)`, after the byte and packet calls shown in the script.
struct ThresholdZeek(Rc<RefCell<Vec<String>>>);

impl Capability for ThresholdZeek {
    fn on_event(&mut self, h: &mut ConnHandle<'_>, event: &ConnEvent) {
        match event {
            ConnEvent::Established => {
                let line = format!("Threshold set for {}", conn_id(h.conn()));
                self.0.borrow_mut().push(line);
                h.set_bytes_threshold(1, true);
                h.set_bytes_threshold(2500, true);
                h.set_bytes_threshold(2700, true);
                h.set_bytes_threshold(3000, true);
                h.delete_bytes_threshold(3000, true);
                h.set_bytes_threshold(2000, false);

                h.set_packets_threshold(50, false);
                h.set_packets_threshold(51, false);
                h.set_packets_threshold(52, false);
                h.delete_packets_threshold(51, false);
                h.set_packets_threshold(63, true);
                h.delete_packets_threshold(63, true);

                h.set_duration_threshold(Duration::from_millis(100));
                h.set_duration_threshold(Duration::from_millis(200));
                h.delete_duration_threshold(Duration::from_millis(100));
            }
            ConnEvent::ThresholdCrossed(x) => {
                self.0.borrow_mut().push(triggered(h.conn(), x));
            }
            _ => {}
        }
    }
}

/// `scripts/base/protocols/conn/threshold-delete.zeek`: set then delete each; no event.
struct ThresholdDeleteZeek(Rc<RefCell<Vec<String>>>);

impl Capability for ThresholdDeleteZeek {
    fn on_event(&mut self, h: &mut ConnHandle<'_>, event: &ConnEvent) {
        match event {
            ConnEvent::Established => {
                let mut ok = true;
                ok &= h.set_bytes_threshold(1, true);
                ok &= h.delete_bytes_threshold(1, true);
                ok &= h.set_duration_threshold(Duration::from_millis(100));
                ok &= h.delete_duration_threshold(Duration::from_millis(100));
                ok &= h.set_packets_threshold(63, true);
                ok &= h.delete_packets_threshold(63, true);
                if !ok {
                    self.0
                        .borrow_mut()
                        .push("a set or delete returned F".into());
                }
            }
            ConnEvent::ThresholdCrossed(x) => {
                self.0.borrow_mut().push(triggered(h.conn(), x));
            }
            _ => {}
        }
    }
}

/// `core/conn-size-threshold.zeek`: one threshold per slot (so the module's events are the
/// datapath's), the datapath's current values printed before and after, and `c$duration`.
struct ConnSizeZeek(Rc<RefCell<Vec<String>>>);

impl ConnSizeZeek {
    fn print_current(&self, h: &ConnHandle<'_>) {
        let mut out = self.0.borrow_mut();
        for kind in [
            ThresholdKind::OrigBytes,
            ThresholdKind::RespBytes,
            ThresholdKind::OrigPackets,
            ThresholdKind::RespPackets,
        ] {
            out.push(h.current_threshold(kind).to_string());
        }
    }
}

impl Capability for ConnSizeZeek {
    fn on_event(&mut self, h: &mut ConnHandle<'_>, event: &ConnEvent) {
        match event {
            ConnEvent::Established => {
                self.print_current(h);
                let dur = h.current_threshold(ThresholdKind::Duration);
                self.0.borrow_mut().push(zeek_interval(dur as f64 / 1e9));
                let line = format!("Threshold set for {}", conn_id(h.conn()));
                self.0.borrow_mut().push(line);
                h.set_bytes_threshold(3000, true);
                h.set_bytes_threshold(2000, false);
                h.set_packets_threshold(50, false);
                h.set_packets_threshold(63, true);
                h.set_duration_threshold(Duration::from_millis(100));
                self.print_current(h);
                let dur = h.current_threshold(ThresholdKind::Duration);
                let line = format!(
                    "{}, {}",
                    zeek_interval(dur as f64 / 1e9),
                    zeek_duration(h.conn())
                );
                self.0.borrow_mut().push(line);
            }
            ConnEvent::ThresholdCrossed(x) => {
                let mut line = triggered(h.conn(), x);
                if x.kind == ThresholdKind::Duration {
                    line = format!("{line}, {}", zeek_duration(h.conn()));
                }
                self.0.borrow_mut().push(line);
            }
            _ => {}
        }
    }
}

const THRESHOLD_STDOUT: &str = "\
Threshold set for [orig_h=10.0.0.7, orig_p=59069/tcp, resp_h=10.0.0.22, resp_p=6667/tcp, proto=6, ctx=[]]
triggered bytes, [orig_h=10.0.0.7, orig_p=59069/tcp, resp_h=10.0.0.22, resp_p=6667/tcp, proto=6, ctx=[]], 1, T
triggered bytes, [orig_h=10.0.0.7, orig_p=59069/tcp, resp_h=10.0.0.22, resp_p=6667/tcp, proto=6, ctx=[]], 2000, F
triggered duration, [orig_h=10.0.0.7, orig_p=59069/tcp, resp_h=10.0.0.22, resp_p=6667/tcp, proto=6, ctx=[]], 200.0 msecs, F
Threshold set for [orig_h=10.0.0.22, orig_p=43614/tcp, resp_h=10.0.0.7, resp_p=59130/tcp, proto=6, ctx=[]]
triggered bytes, [orig_h=10.0.0.22, orig_p=43614/tcp, resp_h=10.0.0.7, resp_p=59130/tcp, proto=6, ctx=[]], 1, T
triggered bytes, [orig_h=10.0.0.22, orig_p=43614/tcp, resp_h=10.0.0.7, resp_p=59130/tcp, proto=6, ctx=[]], 2000, F
triggered packets, [orig_h=10.0.0.22, orig_p=43614/tcp, resp_h=10.0.0.7, resp_p=59130/tcp, proto=6, ctx=[]], 50, F
triggered packets, [orig_h=10.0.0.22, orig_p=43614/tcp, resp_h=10.0.0.7, resp_p=59130/tcp, proto=6, ctx=[]], 52, F
triggered bytes, [orig_h=10.0.0.22, orig_p=43614/tcp, resp_h=10.0.0.7, resp_p=59130/tcp, proto=6, ctx=[]], 2500, T
triggered bytes, [orig_h=10.0.0.22, orig_p=43614/tcp, resp_h=10.0.0.7, resp_p=59130/tcp, proto=6, ctx=[]], 2700, T
Threshold set for [orig_h=10.0.0.22, orig_p=38016/tcp, resp_h=10.0.0.7, resp_p=59214/tcp, proto=6, ctx=[]]
triggered bytes, [orig_h=10.0.0.22, orig_p=38016/tcp, resp_h=10.0.0.7, resp_p=59214/tcp, proto=6, ctx=[]], 1, T
triggered bytes, [orig_h=10.0.0.7, orig_p=59069/tcp, resp_h=10.0.0.22, resp_p=6667/tcp, proto=6, ctx=[]], 2500, T
triggered duration, [orig_h=10.0.0.22, orig_p=38016/tcp, resp_h=10.0.0.7, resp_p=59214/tcp, proto=6, ctx=[]], 200.0 msecs, T
triggered bytes, [orig_h=10.0.0.7, orig_p=59069/tcp, resp_h=10.0.0.22, resp_p=6667/tcp, proto=6, ctx=[]], 2700, T
";

const CONN_SIZE_STDOUT: &str = "\
0
0
0
0
0 secs
Threshold set for [orig_h=10.0.0.7, orig_p=59069/tcp, resp_h=10.0.0.22, resp_p=6667/tcp, proto=6, ctx=[]]
3000
2000
63
50
100.0 msecs, 2.0 msecs 675.771713 usecs
triggered bytes, [orig_h=10.0.0.7, orig_p=59069/tcp, resp_h=10.0.0.22, resp_p=6667/tcp, proto=6, ctx=[]], 2000, F
triggered duration, [orig_h=10.0.0.7, orig_p=59069/tcp, resp_h=10.0.0.22, resp_p=6667/tcp, proto=6, ctx=[]], 100.0 msecs, F, 1.0 sec 474.0 msecs 342.823029 usecs
0
0
0
0
0 secs
Threshold set for [orig_h=10.0.0.22, orig_p=43614/tcp, resp_h=10.0.0.7, resp_p=59130/tcp, proto=6, ctx=[]]
3000
2000
63
50
100.0 msecs, 730.991364 usecs
triggered bytes, [orig_h=10.0.0.22, orig_p=43614/tcp, resp_h=10.0.0.7, resp_p=59130/tcp, proto=6, ctx=[]], 2000, F
triggered packets, [orig_h=10.0.0.22, orig_p=43614/tcp, resp_h=10.0.0.7, resp_p=59130/tcp, proto=6, ctx=[]], 50, F
triggered bytes, [orig_h=10.0.0.22, orig_p=43614/tcp, resp_h=10.0.0.7, resp_p=59130/tcp, proto=6, ctx=[]], 3000, T
triggered packets, [orig_h=10.0.0.22, orig_p=43614/tcp, resp_h=10.0.0.7, resp_p=59130/tcp, proto=6, ctx=[]], 63, T
triggered duration, [orig_h=10.0.0.22, orig_p=43614/tcp, resp_h=10.0.0.7, resp_p=59130/tcp, proto=6, ctx=[]], 100.0 msecs, T, 133.0 msecs 142.948151 usecs
0
0
0
0
0 secs
Threshold set for [orig_h=10.0.0.22, orig_p=38016/tcp, resp_h=10.0.0.7, resp_p=59214/tcp, proto=6, ctx=[]]
3000
2000
63
50
100.0 msecs, 689.983368 usecs
triggered duration, [orig_h=10.0.0.22, orig_p=38016/tcp, resp_h=10.0.0.7, resp_p=59214/tcp, proto=6, ctx=[]], 100.0 msecs, T, 9.0 secs 29.0 msecs 998.064041 usecs
";

pub(crate) fn assert_lines(engine: Engine, got: &[String], want: &str) {
    let want: Vec<&str> = want.lines().collect();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "{engine:?}: line {}", i + 1);
    }
    assert_eq!(
        got.len(),
        want.len(),
        "{engine:?}: line count; got {got:#?}"
    );
}

#[test]
fn zeek_threshold_test_output_is_reproduced() {
    let Some(trace) = trace() else { return };
    for engine in engines() {
        let got = run(&trace, engine, |o| Box::new(ThresholdZeek(o)));
        assert_lines(engine, &got, THRESHOLD_STDOUT);
    }
}

#[test]
fn zeek_threshold_delete_test_raises_nothing() {
    let Some(trace) = trace() else { return };
    for engine in engines() {
        let got = run(&trace, engine, |o| Box::new(ThresholdDeleteZeek(o)));
        assert_lines(engine, &got, "");
    }
}

#[test]
fn zeek_conn_size_threshold_test_output_is_reproduced() {
    let Some(trace) = trace() else { return };
    for engine in engines() {
        let got = run(&trace, engine, |o| Box::new(ConnSizeZeek(o)));
        assert_lines(engine, &got, CONN_SIZE_STDOUT);
    }
}

#[test]
fn intervals_print_as_zeek_prints_them() {
    assert_eq!(zeek_interval(0.0), "0 secs");
    assert_eq!(zeek_interval(0.2), "200.0 msecs");
    assert_eq!(zeek_interval(1.5), "1.0 sec 500.0 msecs");
    assert_eq!(zeek_interval(90061.0), "1.0 day 1.0 hr 1.0 min 1.0 sec");
}
