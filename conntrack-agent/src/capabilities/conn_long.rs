//! Long-connection records (the `conn-long` Zeek package): conn_long.log gets an interim
//! record, with conn.log's fields and the duration so far, for every connection still open at
//! each configured age (default 10 min, 1 h, 12 h, 24 h, then every 24 h), so that a
//! connection that lasts hours is visible long before its conn.log record. The final conn.log
//! record is unchanged.
//!
//! Built on polling ([`crate::core::polling`]): each new connection is watched until its first
//! point; a record is written when the connection's duration (last packet - first packet, as
//! in conn.log) has reached the point, then the next point is awaited. An idle connection is
//! reported once its traffic reaches the point, or not at all if it never does.
//!
//! ```toml
//! [conn_long]                              # the section turns it on
//! intervals = ["10m", "1h", "12h", "24h"]  # then every last interval ("24h") again
//! # enabled = false                        # keeps the section but turns it off
//! ```

use crate::core::events::{Capability, ConnEvent, ConnHandle};
use crate::logs::conn_log::{ConnLogWriter, LogFormat};
use crate::logs::record::ConnRecord;
use crate::logs::rotate::{LogOptions, RotationPolicy};
use crate::util::config_values::{HumanDuration, SpanError};
use crate::util::site::NetSet;
use serde::Deserialize;
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;
use toml::Spanned;

/// The default ages of the interim records.
const DEFAULT_INTERVALS: [Duration; 4] = [
    Duration::from_secs(600),
    Duration::from_secs(3600),
    Duration::from_secs(12 * 3600),
    Duration::from_secs(24 * 3600),
];

/// The `[conn_long]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnLongSection {
    enabled: Option<bool>,
    intervals: Option<Spanned<Vec<HumanDuration>>>,
}

/// The checked section; off unless the file has a `[conn_long]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLongSettings {
    pub enabled: bool,
    /// Increasing ages; after the last, every last interval again.
    pub intervals: Vec<Duration>,
}

impl Default for ConnLongSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            intervals: DEFAULT_INTERVALS.to_vec(),
        }
    }
}

impl ConnLongSection {
    /// `section`: None when the file has no `[conn_long]`.
    pub fn compile_section(section: Option<Self>) -> Result<ConnLongSettings, SpanError> {
        let Some(s) = section else {
            return Ok(ConnLongSettings::default());
        };
        let mut out = ConnLongSettings {
            enabled: s.enabled.unwrap_or(true),
            ..ConnLongSettings::default()
        };
        if let Some(list) = s.intervals {
            let v: Vec<Duration> = list.get_ref().iter().map(|d| d.0).collect();
            let increasing = v.windows(2).all(|w| w[0] < w[1]);
            if v.is_empty() || v[0].is_zero() || !increasing {
                return Err((
                    list.span(),
                    "intervals must be increasing, non-zero ages, e.g. [\"10m\", \"1h\"]".into(),
                ));
            }
            out.intervals = v;
        }
        Ok(out)
    }
}

/// The age of the `k`-th interim record (0-based), ns.
fn point_ns(intervals: &[Duration], k: usize) -> u64 {
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let last = *intervals.last().expect("checked non-empty");
    match intervals.get(k) {
        Some(d) => ns(*d),
        None => {
            let extra = (k - intervals.len() + 1) as u64;
            ns(last).saturating_add(ns(last).saturating_mul(extra))
        }
    }
}

struct Writer {
    log: ConnLogWriter,
    local_nets: NetSet,
}

impl crate::logs::rotate::Tick for Writer {
    fn tick(&mut self, now_ns: i64) -> anyhow::Result<()> {
        self.log.tick(now_ns)
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        self.log.flush()
    }
    fn health(&self) -> std::sync::Arc<crate::logs::health::LogHealth> {
        self.log.health()
    }
}

impl Writer {
    fn write(&mut self, conn: &ConnHandle<'_>) {
        let c = conn.conn();
        let mut rec = ConnRecord::from_conn(c);
        rec.uid = conn.uid().to_string();
        if !self.local_nets.is_empty() {
            rec.local_orig = Some(self.local_nets.contains_bytes(&c.orig_addr));
            rec.local_resp = Some(self.local_nets.contains_bytes(&c.resp_addr));
        }
        // Flushed at once: these records are rare and wanted while the connection lasts.
        let now = Some(conn.ts_ns() as i64);
        let res = self.log.write_at(&rec, now).and_then(|()| self.log.flush());
        if let Err(e) = res {
            log::warn!("conn_long.log: {e:#}");
        }
    }
}

/// The capability: watches every new connection.
pub struct ConnLong {
    intervals: IntervalsHandle,
    writer: Rc<RefCell<Writer>>,
}

impl ConnLong {
    pub fn create(
        settings: &ConnLongSettings,
        log_dir: &Path,
        format: LogFormat,
        community_id: bool,
        local_nets: NetSet,
        rotation: RotationPolicy,
    ) -> anyhow::Result<Self> {
        let opts = LogOptions {
            rotation,
            stdout: false,
        };
        let log = ConnLogWriter::create_with(log_dir, "conn_long", format, community_id, opts)?;
        Ok(Self {
            intervals: Rc::new(RefCell::new(settings.intervals.clone().into())),
            writer: Rc::new(RefCell::new(Writer { log, local_nets })),
        })
    }
}

/// The intervals new connections are watched with; replaced on SIGHUP (connections already
/// watched keep theirs).
pub type IntervalsHandle = Rc<RefCell<Rc<[Duration]>>>;

impl ConnLong {
    pub fn intervals_handle(&self) -> IntervalsHandle {
        self.intervals.clone()
    }

    /// conn_long.log, for the agent to tick (rotation).
    pub fn log(&self) -> crate::logs::rotate::SharedLog {
        self.writer.clone()
    }
}

impl Capability for ConnLong {
    fn wants_state_changes(&self) -> bool {
        false
    }

    fn on_event(&mut self, conn: &mut ConnHandle<'_>, event: &ConnEvent) {
        if *event != ConnEvent::New {
            return;
        }
        let (intervals, writer) = (self.intervals.borrow().clone(), self.writer.clone());
        let mut next = 0usize;
        let first = Duration::from_nanos(point_ns(&intervals, 0));
        conn.watch(
            move |c, _cnt| {
                let (start, last) = (c.conn().start_ns, c.conn().last_ns);
                let duration = last.saturating_sub(start);
                let target = point_ns(&intervals, next);
                if duration < target {
                    // Not there yet (idle): the earliest it can get there.
                    return Some(Duration::from_nanos(target - duration));
                }
                writer.borrow_mut().write(c);
                next += 1;
                let age = c.ts_ns().saturating_sub(start);
                let wait = point_ns(&intervals, next).saturating_sub(age);
                Some(Duration::from_nanos(wait.max(1_000_000)))
            },
            0,
            first,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(text, "t.toml", &|_| None)
    }

    #[test]
    fn the_section_turns_it_on() {
        assert!(!parse("").unwrap().conn_long.enabled);
        let c = parse("[conn_long]\n").unwrap().conn_long;
        assert!(c.enabled);
        assert_eq!(c.intervals, DEFAULT_INTERVALS);
        let c = parse("[conn_long]\nenabled = false\nintervals = [\"2s\", \"1m\"]\n")
            .unwrap()
            .conn_long;
        assert!(!c.enabled);
        assert_eq!(
            c.intervals,
            [Duration::from_secs(2), Duration::from_secs(60)]
        );
    }

    #[test]
    fn bad_intervals_are_refused_at_their_line() {
        let e = parse("[conn_long]\nintervals = [\"1h\", \"10m\"]\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 13), "{e}");
        assert!(e.message.contains("increasing"), "{e}");
        let e = parse("[conn_long]\nintervals = []\n").unwrap_err();
        assert!(e.message.contains("increasing"), "{e}");
        let e = parse("[conn_long]\nintervals = [\"soon\"]\n").unwrap_err();
        assert!(e.message.contains("invalid duration"), "{e}");
        let e = parse("[conn_long]\ninterval = [\"1h\"]\n").unwrap_err();
        assert!(e.message.contains("unknown field `interval`"), "{e}");
    }

    #[test]
    fn points_repeat_the_last_interval() {
        let h = |n: u64| n * 3_600_000_000_000;
        let iv = [
            Duration::from_secs(600),
            Duration::from_secs(3600),
            Duration::from_secs(12 * 3600),
            Duration::from_secs(24 * 3600),
        ];
        let got: Vec<u64> = (0..7).map(|k| point_ns(&iv, k)).collect();
        assert_eq!(got, [h(1) / 6, h(1), h(12), h(24), h(48), h(72), h(96)]);
    }
}
