//! ConnThreshold (Zeek's `base/protocols/conn/thresholds.zeek`): any number of byte, packet and
//! duration thresholds per connection, kept here; the datapath holds only the lowest pending
//! one per slot (`conntrack_common::threshold`) and reports when it is crossed, and this module
//! then reports the threshold and arms the next one.
//!
//! Capabilities call it through [`crate::core::events::ConnHandle`] (`set_bytes_threshold`, ...);
//! the event core feeds it the crossings the datapath reports ([`Thresholds::on_crossed`]) and
//! the removals. Connections nobody set a threshold on have no entry here.
//!
//! Duration thresholds fire, as in Zeek, on the first packet past the threshold
//! ([`DurationMode::NextPacket`], what `read` uses to reproduce Zeek). Live, an idle connection
//! would then report late or never, so [`DurationMode::NextPacketOrTimer`] also arms a timer at
//! `start + threshold` that asks the datapath to check the duration at that time.

use crate::datapath::ThresholdError;
use crate::util::hashing::FastMap;
use conntrack_common::conn::Conn;
use conntrack_common::key::FlowKey;
use conntrack_common::threshold::{self, SLOTS, ThresholdCommand, slot};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

/// What a threshold measures: one datapath slot each. Bytes are IP bytes, the quantity Zeek's
/// ConnThreshold compares, so a threshold fires whether or not payload was seen. The serde names
/// ([`ThresholdKind::name`]) are the public ones: alert rules' `metric` and alert documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdKind {
    /// IP bytes sent by the originator (conn.log `orig_ip_bytes`).
    OrigBytes,
    /// IP bytes sent by the responder.
    RespBytes,
    /// IP bytes of both directions (our extension).
    TotalBytes,
    /// Packets sent by the originator.
    OrigPackets,
    /// Packets sent by the responder.
    RespPackets,
    /// Packets of both directions (our extension).
    TotalPackets,
    /// Time since the connection's first packet (ns).
    Duration,
}

impl ThresholdKind {
    /// Every kind, in slot order.
    pub const ALL: [ThresholdKind; SLOTS] = [
        ThresholdKind::OrigBytes,
        ThresholdKind::RespBytes,
        ThresholdKind::TotalBytes,
        ThresholdKind::OrigPackets,
        ThresholdKind::RespPackets,
        ThresholdKind::TotalPackets,
        ThresholdKind::Duration,
    ];

    /// Bytes of one direction.
    pub fn bytes(is_orig: bool) -> Self {
        if is_orig {
            ThresholdKind::OrigBytes
        } else {
            ThresholdKind::RespBytes
        }
    }

    /// Packets of one direction.
    pub fn packets(is_orig: bool) -> Self {
        if is_orig {
            ThresholdKind::OrigPackets
        } else {
            ThresholdKind::RespPackets
        }
    }

    /// The public name, as serde writes it.
    pub fn name(self) -> &'static str {
        match self {
            ThresholdKind::OrigBytes => "orig_bytes",
            ThresholdKind::RespBytes => "resp_bytes",
            ThresholdKind::TotalBytes => "total_bytes",
            ThresholdKind::OrigPackets => "orig_packets",
            ThresholdKind::RespPackets => "resp_packets",
            ThresholdKind::TotalPackets => "total_packets",
            ThresholdKind::Duration => "duration",
        }
    }

    /// Which side's counter it reads.
    pub fn direction(self) -> Direction {
        match self {
            ThresholdKind::OrigBytes | ThresholdKind::OrigPackets => Direction::Orig,
            ThresholdKind::RespBytes | ThresholdKind::RespPackets => Direction::Resp,
            ThresholdKind::TotalBytes | ThresholdKind::TotalPackets | ThresholdKind::Duration => {
                Direction::Total
            }
        }
    }

    /// The datapath slot (`conntrack_common::threshold::slot`): the only place the agent maps
    /// a kind to the datapath's numbering.
    pub fn slot(self) -> usize {
        match self {
            ThresholdKind::OrigBytes => slot::ORIG_BYTES,
            ThresholdKind::RespBytes => slot::RESP_BYTES,
            ThresholdKind::TotalBytes => slot::TOTAL_BYTES,
            ThresholdKind::OrigPackets => slot::ORIG_PKTS,
            ThresholdKind::RespPackets => slot::RESP_PKTS,
            ThresholdKind::TotalPackets => slot::TOTAL_PKTS,
            ThresholdKind::Duration => slot::DURATION,
        }
    }

    /// The side whose packets the datapath checks right after a set (Zeek checks the set
    /// direction; the originator's for everything else, as `SetDurationThreshold` does).
    fn check_orig(self) -> bool {
        self.direction() != Direction::Resp
    }
}

/// Which side's counter a threshold reads. The duration belongs to the connection as a whole:
/// `Total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Orig,
    Resp,
    Total,
}

/// A threshold that was crossed: Zeek's `bytes_threshold_crossed(c, threshold, is_orig)` and
/// its siblings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crossing {
    pub kind: ThresholdKind,
    /// Bytes, packets, or ns for [`ThresholdKind::Duration`].
    pub threshold: u64,
    /// The side of the packet that crossed it (for a set that crossed at once, the side that
    /// was checked; for a duration timer, the originator's, as Zeek's set-time check says).
    pub is_orig: bool,
}

/// Crossings the datapath reported for one connection, before they are matched against the
/// thresholds set here (Zeek's `conn_*_threshold_crossed`, handled at priority 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawCrossing {
    /// Slot bits (`threshold::bit`).
    pub slots: u32,
    /// The value each crossed slot held.
    pub values: [u64; SLOTS],
    pub is_orig: bool,
}

/// When duration thresholds fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DurationMode {
    /// Only on the first packet past the threshold (Zeek; replays).
    #[default]
    NextPacket,
    /// Also by a timer at `start + threshold` on idle connections (live).
    NextPacketOrTimer,
}

/// Where thresholds are armed: the datapath(s) holding the connection.
pub trait ThresholdTarget {
    /// See [`crate::datapath::Datapath::set_thresholds`].
    fn set_thresholds(&mut self, cmd: &ThresholdCommand) -> Result<u32, ThresholdError>;
    /// The connection as the datapath holds it now.
    fn lookup(&self, key: &FlowKey) -> Option<Conn>;
    /// See [`crate::datapath::Datapath::stop_sampling`]: true when no sample of the
    /// connection comes after this call.
    fn stop_sampling(&mut self, _key: &FlowKey) -> bool {
        false
    }
    /// See [`crate::datapath::Datapath::narrow_sampling`].
    fn narrow_sampling(&mut self, _key: &FlowKey) -> bool {
        false
    }
    /// The word the connection's record keeps for the service capability (0 at first; the
    /// host engine's table entry, else the tracker's record), to read and change in place;
    /// it is handed back when the connection is logged
    /// ([`crate::core::events::Capability::conn_service`]'s `stored`). None if no record has
    /// the connection (then the capability keeps the word itself).
    fn service_mut(&mut self, _key: &FlowKey) -> Option<&mut u32> {
        None
    }
    /// Content extraction: the datapath's per-connection byte counters.
    fn content_counters(
        &self,
        _key: &FlowKey,
    ) -> Option<conntrack_common::contents::ContentCounters> {
        None
    }
}

/// The thresholds of one connection.
#[derive(Debug, Default)]
struct ConnThresholds {
    /// Every pending threshold per slot.
    sets: [BTreeSet<u64>; SLOTS],
    /// What the datapath holds per slot (0 = nothing armed), as far as we know: updated by our
    /// commands and by reported crossings.
    armed: [u64; SLOTS],
    /// The connection's start (ns), for duration timers.
    start_ns: u64,
}

/// Every connection's thresholds.
#[derive(Debug, Default)]
pub struct Thresholds {
    conns: FastMap<FlowKey, ConnThresholds>,
    mode: DurationMode,
    /// Duration timers: (due ns, key, threshold ns). Stale entries are skipped when due.
    timers: BinaryHeap<Reverse<(u64, FlowKey, u64)>>,
}

impl Thresholds {
    pub fn new(mode: DurationMode) -> Self {
        Self {
            mode,
            ..Self::default()
        }
    }

    /// Applies to durations armed from now on.
    pub fn set_mode(&mut self, mode: DurationMode) {
        self.mode = mode;
    }

    /// Adds `value` to the thresholds of `kind` and arms the lowest. False for 0 (Zeek) or when
    /// the datapath could not be updated. A crossing already due is returned, to be reported
    /// like one from a packet.
    pub fn set(
        &mut self,
        target: &mut dyn ThresholdTarget,
        conn: &Conn,
        key: &FlowKey,
        kind: ThresholdKind,
        value: u64,
        now_ns: u64,
    ) -> (bool, Option<RawCrossing>) {
        if value == 0 {
            return (false, None);
        }
        let entry = self.conns.entry(*key).or_default();
        entry.start_ns = conn.start_ns;
        entry.sets[kind.slot()].insert(value);
        match self.arm_lowest(target, key, kind, now_ns) {
            Ok(raw) => (true, raw),
            Err(e) => {
                log::debug!("setting a {kind:?} threshold: {e}");
                (false, None)
            }
        }
    }

    /// Removes `value` from the thresholds of `kind`; true if it was there (the next lowest is
    /// armed, as in Zeek, whatever the datapath says). Reached through `ConnHandle::delete_*`.
    #[allow(dead_code)]
    pub fn delete(
        &mut self,
        target: &mut dyn ThresholdTarget,
        key: &FlowKey,
        kind: ThresholdKind,
        value: u64,
        now_ns: u64,
    ) -> (bool, Option<RawCrossing>) {
        let Some(entry) = self.conns.get_mut(key) else {
            return (false, None);
        };
        if !entry.sets[kind.slot()].remove(&value) {
            return (false, None);
        }
        match self.arm_lowest(target, key, kind, now_ns) {
            Ok(raw) => (true, raw),
            Err(e) => {
                log::debug!("re-arming after deleting a {kind:?} threshold: {e}");
                (true, None)
            }
        }
    }

    /// Zeek's `set_current_threshold`: makes the datapath hold the lowest threshold of `kind`
    /// (0 when none is left) unless it already does.
    fn arm_lowest(
        &mut self,
        target: &mut dyn ThresholdTarget,
        key: &FlowKey,
        kind: ThresholdKind,
        now_ns: u64,
    ) -> Result<Option<RawCrossing>, ThresholdError> {
        let Some(entry) = self.conns.get_mut(key) else {
            return Ok(None);
        };
        let s = kind.slot();
        let lowest = entry.sets[s].first().copied().unwrap_or(0);
        if lowest == entry.armed[s] {
            return Ok(None);
        }
        let mut cmd = ThresholdCommand {
            key: *key,
            mask: threshold::bit(s),
            check_orig: kind.check_orig() as u32,
            now_ns,
            ..ThresholdCommand::default()
        };
        cmd.values[s] = lowest;
        let crossed = target.set_thresholds(&cmd)?;
        entry.armed[s] = lowest;
        if kind == ThresholdKind::Duration
            && lowest != 0
            && self.mode == DurationMode::NextPacketOrTimer
        {
            // Strictly past the threshold, as the datapath's rule.
            let due = entry.start_ns.saturating_add(lowest).saturating_add(1);
            self.timers.push(Reverse((due, *key, lowest)));
        }
        Ok(Self::take_crossed(entry, crossed, kind.check_orig()))
    }

    /// Slots the datapath just cleared: forget them as armed and describe them.
    fn take_crossed(
        entry: &mut ConnThresholds,
        crossed: u32,
        is_orig: bool,
    ) -> Option<RawCrossing> {
        if crossed == 0 {
            return None;
        }
        let mut values = [0u64; SLOTS];
        for (s, v) in values.iter_mut().enumerate() {
            if crossed & threshold::bit(s) != 0 {
                *v = entry.armed[s];
                entry.armed[s] = 0;
            }
        }
        Some(RawCrossing {
            slots: crossed,
            values,
            is_orig,
        })
    }

    /// Crossings the datapath reported for `key`: each one still pending here is removed and
    /// returned (once, even if reported again), then the next lowest of its slot is armed,
    /// which may itself have crossed already (returned as a new raw crossing).
    pub fn on_crossed(
        &mut self,
        target: &mut dyn ThresholdTarget,
        key: &FlowKey,
        raw: &RawCrossing,
        now_ns: u64,
    ) -> (Vec<Crossing>, Vec<RawCrossing>) {
        let mut out = Vec::new();
        let mut again = Vec::new();
        let Some(entry) = self.conns.get_mut(key) else {
            return (out, again);
        };
        let mut touched = Vec::new();
        for kind in ThresholdKind::ALL {
            let s = kind.slot();
            if raw.slots & threshold::bit(s) == 0 {
                continue;
            }
            let v = raw.values[s];
            if entry.armed[s] == v {
                entry.armed[s] = 0; // the datapath cleared it
            }
            if entry.sets[s].remove(&v) {
                out.push(Crossing {
                    kind,
                    threshold: v,
                    is_orig: raw.is_orig,
                });
            }
            touched.push(kind);
        }
        for kind in touched {
            match self.arm_lowest(target, key, kind, now_ns) {
                Ok(Some(r)) => again.push(r),
                Ok(None) => {}
                Err(e) => log::debug!("re-arming a {kind:?} threshold: {e}"),
            }
        }
        (out, again)
    }

    /// Whether a duration timer is due at `now_ns` (a cheap test before [`Thresholds::due`]).
    #[inline]
    pub fn timer_due(&self, now_ns: u64) -> bool {
        self.timers
            .peek()
            .is_some_and(|Reverse((at, _, _))| *at <= now_ns)
    }

    /// Duration timers due at `now_ns` ([`DurationMode::NextPacketOrTimer`]): asks the datapath
    /// to check each still-armed duration threshold at `now_ns`; returns the crossings.
    pub fn due(
        &mut self,
        target: &mut dyn ThresholdTarget,
        now_ns: u64,
    ) -> Vec<(FlowKey, RawCrossing)> {
        let mut out = Vec::new();
        while let Some(Reverse((at, key, value))) = self.timers.peek().copied() {
            if at > now_ns {
                break;
            }
            self.timers.pop();
            let Some(entry) = self.conns.get_mut(&key) else {
                continue;
            };
            let s = ThresholdKind::Duration.slot();
            if entry.armed[s] != value {
                continue; // crossed by a packet, deleted or replaced meanwhile
            }
            let mut cmd = ThresholdCommand {
                key,
                mask: threshold::bit(s),
                check_orig: 1,
                now_ns,
                ..ThresholdCommand::default()
            };
            cmd.values[s] = value;
            match target.set_thresholds(&cmd) {
                Ok(crossed) => {
                    if let Some(raw) = Self::take_crossed(entry, crossed, true) {
                        out.push((key, raw));
                    }
                }
                Err(e) => log::debug!("duration timer: {e}"),
            }
        }
        out
    }

    /// No connection has a threshold.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// The connection is gone: drop its thresholds.
    pub fn forget(&mut self, key: &FlowKey) {
        // Most connections never had one: no hashing then.
        if !self.conns.is_empty() {
            self.conns.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conntrack_common::threshold::apply_command;

    /// One connection in memory, with the datapath's rules.
    struct OneConn {
        key: FlowKey,
        conn: Conn,
        commands: usize,
    }

    impl ThresholdTarget for OneConn {
        fn set_thresholds(&mut self, cmd: &ThresholdCommand) -> Result<u32, ThresholdError> {
            if cmd.key != self.key {
                return Err(ThresholdError::NotFound);
            }
            self.commands += 1;
            Ok(apply_command(&mut self.conn, cmd))
        }
        fn lookup(&self, key: &FlowKey) -> Option<Conn> {
            (*key == self.key).then_some(self.conn)
        }
    }

    fn one_conn() -> OneConn {
        let mut conn = Conn::ZERO;
        conn.start_ns = 1_000;
        OneConn {
            key: FlowKey::default(),
            conn,
            commands: 0,
        }
    }

    /// Counts `n` originator bytes and reports what the datapath's per-packet check says.
    fn orig_packet(t: &mut Thresholds, dp: &mut OneConn, bytes: u64) -> Vec<Crossing> {
        dp.conn.orig.ip_bytes += bytes;
        dp.conn.orig.pkts += 1;
        let crossed = threshold::check_after_packet(&mut dp.conn, true, 2_000);
        if crossed == 0 {
            return Vec::new();
        }
        let mut raw = RawCrossing {
            slots: crossed,
            values: dp.conn.thr,
            is_orig: true,
        };
        let mut all = Vec::new();
        loop {
            let key = dp.key;
            let (out, again) = t.on_crossed(dp, &key, &raw, 2_000);
            all.extend(out);
            match again.first() {
                Some(r) => raw = *r,
                None => return all,
            }
        }
    }

    #[test]
    fn every_kind_has_its_own_slot_in_slot_order() {
        for (s, kind) in ThresholdKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.slot(), s, "{kind:?}");
        }
    }

    #[test]
    fn names_are_the_serde_names() {
        for kind in ThresholdKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
            let back: ThresholdKind = serde_json::from_str(&json).unwrap();
            assert_eq!(back, kind);
        }
        assert_eq!(ThresholdKind::RespPackets.direction(), Direction::Resp);
        assert_eq!(ThresholdKind::Duration.direction(), Direction::Total);
        assert_eq!(serde_json::to_string(&Direction::Orig).unwrap(), "\"orig\"");
    }

    #[test]
    fn the_datapath_holds_only_the_lowest_and_the_next_is_armed_after_a_crossing() {
        let mut t = Thresholds::default();
        let mut dp = one_conn();
        let (key, conn) = (dp.key, dp.conn);
        for v in [300, 100, 200] {
            assert!(
                t.set(&mut dp, &conn, &key, ThresholdKind::OrigBytes, v, 0)
                    .0
            );
        }
        assert_eq!(dp.conn.thr[slot::ORIG_BYTES], 100);
        assert!(orig_packet(&mut t, &mut dp, 50).is_empty());
        let c = orig_packet(&mut t, &mut dp, 60);
        assert_eq!(
            c,
            vec![Crossing {
                kind: ThresholdKind::OrigBytes,
                threshold: 100,
                is_orig: true
            }]
        );
        assert_eq!(dp.conn.thr[slot::ORIG_BYTES], 200);
        // One packet past two thresholds reports both, lowest first.
        let c = orig_packet(&mut t, &mut dp, 500);
        let got: Vec<u64> = c.iter().map(|c| c.threshold).collect();
        assert_eq!(got, vec![200, 300]);
        assert_eq!(dp.conn.thr_armed, 0);
    }

    #[test]
    fn zero_is_refused_and_deleting_an_unknown_threshold_is_false() {
        let mut t = Thresholds::default();
        let mut dp = one_conn();
        let (key, conn) = (dp.key, dp.conn);
        assert!(
            !t.set(&mut dp, &conn, &key, ThresholdKind::RespPackets, 0, 0)
                .0
        );
        assert!(!t.delete(&mut dp, &key, ThresholdKind::RespPackets, 5, 0).0);
        assert!(
            t.set(&mut dp, &conn, &key, ThresholdKind::RespPackets, 5, 0)
                .0
        );
        assert!(!t.delete(&mut dp, &key, ThresholdKind::OrigPackets, 5, 0).0);
        assert!(t.delete(&mut dp, &key, ThresholdKind::RespPackets, 5, 0).0);
        assert_eq!(dp.conn.thr_armed, 0, "the last delete disarms the slot");
    }

    #[test]
    fn a_crossing_reported_twice_is_reported_once() {
        let mut t = Thresholds::default();
        let mut dp = one_conn();
        let (key, conn) = (dp.key, dp.conn);
        dp.conn.orig.ip_bytes = 10;
        let (ok, raw) = t.set(&mut dp, &conn, &key, ThresholdKind::OrigBytes, 1, 0);
        assert!(ok);
        let raw = raw.expect("already crossed when set");
        let (first, _) = t.on_crossed(&mut dp, &key, &raw, 0);
        let (second, _) = t.on_crossed(&mut dp, &key, &raw, 0);
        assert_eq!(first.len(), 1);
        assert!(second.is_empty());
    }

    #[test]
    fn a_setting_that_changes_nothing_sends_no_command() {
        let mut t = Thresholds::default();
        let mut dp = one_conn();
        let (key, conn) = (dp.key, dp.conn);
        t.set(&mut dp, &conn, &key, ThresholdKind::TotalPackets, 10, 0);
        t.set(&mut dp, &conn, &key, ThresholdKind::TotalPackets, 20, 0);
        assert_eq!(
            dp.commands, 1,
            "20 is not the lowest: the datapath keeps 10"
        );
    }

    #[test]
    fn duration_timer_fires_on_an_idle_connection_only_in_timer_mode() {
        for (mode, fires) in [
            (DurationMode::NextPacket, false),
            (DurationMode::NextPacketOrTimer, true),
        ] {
            let mut t = Thresholds::new(mode);
            let mut dp = one_conn();
            let (key, conn) = (dp.key, dp.conn);
            t.set(&mut dp, &conn, &key, ThresholdKind::Duration, 5_000, 0);
            assert!(!t.timer_due(6_000));
            assert_eq!(
                t.timer_due(6_001),
                fires,
                "{mode:?}: a timer only in timer mode"
            );
            assert!(
                t.due(&mut dp, 6_000).is_empty(),
                "not past start + threshold yet"
            );
            let due = t.due(&mut dp, 6_001);
            assert_eq!(!due.is_empty(), fires, "{mode:?}");
            if fires {
                let (k, raw) = due[0];
                let (c, _) = t.on_crossed(&mut dp, &k, &raw, 6_001);
                assert_eq!(
                    c,
                    vec![Crossing {
                        kind: ThresholdKind::Duration,
                        threshold: 5_000,
                        is_orig: true
                    }]
                );
                assert!(t.due(&mut dp, 100_000).is_empty(), "fires once");
                assert!(!t.timer_due(100_000));
            }
        }
    }

    #[test]
    fn a_duration_timer_after_a_packet_crossing_does_nothing() {
        let mut t = Thresholds::new(DurationMode::NextPacketOrTimer);
        let mut dp = one_conn();
        let (key, conn) = (dp.key, dp.conn);
        t.set(&mut dp, &conn, &key, ThresholdKind::Duration, 5_000, 0);
        let crossed = threshold::check_after_packet(&mut dp.conn, false, 7_000);
        let raw = RawCrossing {
            slots: crossed,
            values: dp.conn.thr,
            is_orig: false,
        };
        let (c, _) = t.on_crossed(&mut dp, &key, &raw, 7_000);
        assert_eq!(c.len(), 1);
        assert!(t.due(&mut dp, 100_000).is_empty());
    }
}
