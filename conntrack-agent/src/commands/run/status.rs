//! The terminal status line of `run`: what the tracker is doing, redrawn in place once a second
//! on stderr when stderr is a terminal.
//!
//! It shows the figures an operator watches first: connections tracked now, packet and event
//! rates, drops (anything lost or not applied; the per-counter breakdown is in the warnings and
//! in `--metrics-addr`), and conn.log records written. Rates are differences between two
//! samples, so the first line after start shows totals only.
//!
//! Log lines and the status line share stderr: the logger clears the line before it prints
//! (see [`clear_prefix`]), and the next tick draws it again below the message.

use conntrack_common::stats::Stat;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Counters whose growth means packets or events were lost or not applied.
/// (`LockBusy` is not one: a packet always gets its connection's lock.)
pub const DROP_STATS: [Stat; 3] = [Stat::RingbufFull, Stat::TableFull, Stat::Fragments];

/// The eBPF program's log lines (`--kernel-log`) on stderr, like the agent's own messages but
/// whatever `RUST_LOG` says: the option is their filter (the program applies it).
pub struct KernelLines;

impl log::Log for KernelLines {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        eprintln!(
            "{}[{:<5} kernel] {}",
            clear_prefix(),
            record.level(),
            record.args()
        );
    }

    fn flush(&self) {}
}

/// True while a status line is on screen: the logger then clears it before each message.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// ANSI: carriage return, then erase the whole line.
const CLEAR: &str = "\r\x1b[2K";

/// What a log message must print first so that it does not run into the status line.
pub fn clear_prefix() -> &'static str {
    if ACTIVE.load(Ordering::Relaxed) {
        CLEAR
    } else {
        ""
    }
}

/// One reading of the counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: Instant,
    pub conns: u64,
    pub packets: u64,
    pub events: u64,
    pub drops: u64,
    pub records: u64,
}

impl Sample {
    /// A sample from the kernel's STATS counters and the agent's own.
    pub fn new(at: Instant, stats: &[(Stat, u64)], conns: u64, records: u64) -> Self {
        let get = |s: Stat| stats.iter().find(|(k, _)| *k == s).map_or(0, |(_, v)| *v);
        Sample {
            at,
            conns,
            packets: get(Stat::Packets),
            events: get(Stat::Events),
            drops: DROP_STATS.iter().map(|&s| get(s)).sum(),
            records,
        }
    }
}

/// `1234` -> `1234`, `12345` -> `12.3k`, `1234567` -> `1.2M`: short enough for one line.
pub fn human(v: f64) -> String {
    if v < 10_000.0 {
        format!("{v:.0}")
    } else if v < 1_000_000.0 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{:.1}M", v / 1e6)
    }
}

/// The line for `now`, with rates against `prev` when there is one.
pub fn render(prev: Option<&Sample>, now: &Sample) -> String {
    let rate = |f: fn(&Sample) -> u64| match prev {
        Some(p) => {
            let secs = now.at.duration_since(p.at).as_secs_f64();
            if secs <= 0.0 {
                "-".to_string()
            } else {
                human(f(now).saturating_sub(f(p)) as f64 / secs)
            }
        }
        None => "-".to_string(),
    };
    format!(
        "conns {} | {} pkt/s | {} ev/s | drops {} | records {}",
        human(now.conns as f64),
        rate(|s| s.packets),
        rate(|s| s.events),
        human(now.drops as f64),
        human(now.records as f64),
    )
}

/// Draws the line in place on stderr; does nothing when stderr is not a terminal or the user
/// turned it off.
pub struct StatusLine {
    enabled: bool,
    prev: Option<Sample>,
}

impl StatusLine {
    pub fn new(wanted: bool) -> Self {
        StatusLine {
            enabled: wanted && std::io::stderr().is_terminal(),
            prev: None,
        }
    }

    pub fn update(&mut self, now: Sample) {
        if !self.enabled {
            return;
        }
        let line = render(self.prev.as_ref(), &now);
        let mut err = std::io::stderr().lock();
        // A failed write to the terminal is not worth stopping the tracker for.
        let _ = write!(err, "{CLEAR}{line}");
        let _ = err.flush();
        ACTIVE.store(true, Ordering::Relaxed);
        self.prev = Some(now);
    }

    /// Removes the line (before the shutdown messages).
    pub fn clear(&mut self) {
        if self.enabled && ACTIVE.swap(false, Ordering::Relaxed) {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "{CLEAR}");
            let _ = err.flush();
        }
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample(at: Instant, packets: u64, events: u64) -> Sample {
        let stats = [
            (Stat::Packets, packets),
            (Stat::Events, events),
            (Stat::RingbufFull, 2),
            (Stat::TableFull, 3),
            (Stat::LockBusy, 0),
            (Stat::Fragments, 1),
            (Stat::NewConns, 99),
        ];
        Sample::new(at, &stats, 42, 17)
    }

    #[test]
    fn first_line_has_totals_and_no_rates() {
        let s = sample(Instant::now(), 1000, 10);
        assert_eq!(
            render(None, &s),
            "conns 42 | - pkt/s | - ev/s | drops 6 | records 17"
        );
    }

    #[test]
    fn rates_are_differences_over_elapsed_time() {
        let t0 = Instant::now();
        let a = sample(t0, 1000, 10);
        let b = sample(t0 + Duration::from_secs(2), 51_000, 410);
        assert_eq!(
            render(Some(&a), &b),
            "conns 42 | 25.0k pkt/s | 200 ev/s | drops 6 | records 17"
        );
    }

    #[test]
    fn counter_reset_does_not_underflow() {
        let t0 = Instant::now();
        let a = sample(t0, 1000, 10);
        let b = sample(t0 + Duration::from_secs(1), 5, 0);
        assert!(render(Some(&a), &b).contains("| 0 pkt/s | 0 ev/s |"));
    }

    #[test]
    fn human_units() {
        assert_eq!(human(0.0), "0");
        assert_eq!(human(9999.0), "9999");
        assert_eq!(human(12_345.0), "12.3k");
        assert_eq!(human(999_949.0), "999.9k");
        assert_eq!(human(2_500_000.0), "2.5M");
        assert_eq!(human(12_500_000.0), "12.5M");
    }

    #[test]
    fn off_when_not_wanted() {
        let mut s = StatusLine::new(false);
        s.update(sample(Instant::now(), 1, 1));
        assert!(s.prev.is_none());
        assert_eq!(clear_prefix(), "");
    }
}
