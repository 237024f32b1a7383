//! Network time, the one clock every agent timer runs on (the tracker's removal timers,
//! duration thresholds, polls): the packet time in `read`, as Zeek's `-r` does, and the wall
//! clock in `run`. The agent is handed `now` from a [`Clock`] at each step
//! ([`crate::core::agent::Agent::advance`]); it never reads a clock of its own, so replays are
//! deterministic and live timers follow real time.

/// A source of network time (ns since the Unix epoch).
pub trait Clock {
    fn now_ns(&self) -> i64;
}

/// Live: the system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct WallClock;

impl Clock for WallClock {
    fn now_ns(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
}

/// Replay: the time of the latest packet read (never goes back, as Zeek's network time).
#[derive(Debug, Clone, Copy)]
pub struct PacketClock {
    now: i64,
}

impl Default for PacketClock {
    fn default() -> Self {
        Self { now: i64::MIN }
    }
}

impl PacketClock {
    /// A packet stamped `ts_ns` was read.
    pub fn saw(&mut self, ts_ns: i64) {
        self.now = self.now.max(ts_ns);
    }
}

impl Clock for PacketClock {
    fn now_ns(&self) -> i64 {
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_time_never_goes_back() {
        let mut c = PacketClock::default();
        c.saw(10);
        c.saw(5);
        assert_eq!(c.now_ns(), 10);
        c.saw(12);
        assert_eq!(c.now_ns(), 12);
    }

    #[test]
    fn wall_clock_is_now() {
        let sys = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        assert!((WallClock.now_ns() - sys).abs() < 1_000_000_000);
    }
}
