//! Per-connection thresholds (Zeek's CONNSIZE analyzer side of ConnThreshold): the kernel holds
//! only the lowest pending threshold per slot; the agent keeps the full sets and re-arms the
//! next one after each crossing.
//!
//! A slot is one metric: IP bytes or packets of the originator, the responder or both together
//! (the totals are our extension), or the duration. Values live in `Conn::thr`; a slot is
//! pending while its bit is set in `Conn::thr_armed` (writing 0 clears both), so a connection
//! without thresholds costs one load and one branch per packet.
//!
//! Rules (`ConnSize_Analyzer::CheckThresholds`):
//! - bytes and packets of one direction are checked only on a packet of that direction, after
//!   its counters were updated, with `counter >= threshold`;
//! - the duration is checked on every counted packet with `now - start > threshold` (strictly);
//!   so it fires on the first packet past the threshold, not when the time passes;
//! - a crossed slot is cleared: each armed threshold fires once;
//! - setting a threshold checks it at once (the given direction and the duration), as Zeek's
//!   `SetByteAndPacketThreshold` / `SetDurationThreshold` do.

use crate::conn::Conn;
use crate::contents;
use crate::key::FlowKey;

/// Number of threshold slots.
pub const SLOTS: usize = 7;

/// Slot indices into `Conn::thr`.
pub mod slot {
    /// Originator IP bytes (`orig_ip_bytes`).
    pub const ORIG_BYTES: usize = 0;
    /// Responder IP bytes.
    pub const RESP_BYTES: usize = 1;
    /// Originator + responder IP bytes.
    pub const TOTAL_BYTES: usize = 2;
    /// Originator packets.
    pub const ORIG_PKTS: usize = 3;
    /// Responder packets.
    pub const RESP_PKTS: usize = 4;
    /// Originator + responder packets.
    pub const TOTAL_PKTS: usize = 5;
    /// Duration in ns (`now - start_ns`).
    pub const DURATION: usize = 6;
}

/// The bit of slot `s` in `Conn::thr_armed` and in crossing masks.
#[inline(always)]
pub const fn bit(s: usize) -> u32 {
    1 << s
}

/// Every slot's bit.
pub const ALL_SLOTS: u32 = (1 << SLOTS) - 1;

/// The slots a packet (or a set) of one direction checks besides the duration and totals.
#[inline(always)]
const fn direction_bits(is_orig: bool) -> u32 {
    if is_orig {
        bit(slot::ORIG_BYTES) | bit(slot::ORIG_PKTS)
    } else {
        bit(slot::RESP_BYTES) | bit(slot::RESP_PKTS)
    }
}

/// Slots checked for a packet (or a set) of direction `is_orig`.
#[inline(always)]
pub const fn checked_bits(is_orig: bool) -> u32 {
    direction_bits(is_orig) | bit(slot::TOTAL_BYTES) | bit(slot::TOTAL_PKTS) | bit(slot::DURATION)
}

/// The values the slots measure: both directions' counters and the connection's age.
#[derive(Clone, Copy)]
struct Metrics {
    orig_bytes: u64,
    resp_bytes: u64,
    orig_pkts: u64,
    resp_pkts: u64,
    age_ns: u64,
}

impl Metrics {
    /// The connection's metrics at `now_ns`.
    #[inline(always)]
    fn of(conn: &Conn, now_ns: u64) -> Metrics {
        Metrics {
            orig_bytes: conn.orig.ip_bytes,
            resp_bytes: conn.resp.ip_bytes,
            orig_pkts: conn.orig.pkts,
            resp_pkts: conn.resp.pkts,
            age_ns: now_ns.saturating_sub(conn.start_ns),
        }
    }

    /// The metrics once a packet of `is_orig` standing for `pkts` packets and `ip_bytes` bytes
    /// is counted (wrapping, as `Endpoint::count_packet` counts).
    #[inline(always)]
    fn with_packet(mut self, is_orig: bool, pkts: u32, ip_bytes: u32) -> Metrics {
        if is_orig {
            self.orig_bytes = self.orig_bytes.wrapping_add(ip_bytes as u64);
            self.orig_pkts = self.orig_pkts.wrapping_add(pkts as u64);
        } else {
            self.resp_bytes = self.resp_bytes.wrapping_add(ip_bytes as u64);
            self.resp_pkts = self.resp_pkts.wrapping_add(pkts as u64);
        }
        self
    }

    /// The value of slot `s`.
    #[inline(always)]
    fn slot(&self, s: usize) -> u64 {
        match s {
            slot::ORIG_BYTES => self.orig_bytes,
            slot::RESP_BYTES => self.resp_bytes,
            slot::TOTAL_BYTES => self.orig_bytes.wrapping_add(self.resp_bytes),
            slot::ORIG_PKTS => self.orig_pkts,
            slot::RESP_PKTS => self.resp_pkts,
            slot::TOTAL_PKTS => self.orig_pkts.wrapping_add(self.resp_pkts),
            _ => self.age_ns,
        }
    }
}

/// Zeek's crossing rule for one slot: counters cross at `>=`, the duration only once strictly
/// past the threshold.
#[inline(always)]
pub fn is_crossed(s: usize, value: u64, threshold: u64) -> bool {
    if s == slot::DURATION {
        value > threshold
    } else {
        value >= threshold
    }
}

/// The armed slots among `candidates` that `m` crosses (nothing is written).
#[inline(always)]
fn crossed_slots(conn: &Conn, candidates: u32, m: &Metrics) -> u32 {
    let armed = conn.thr_armed & candidates;
    let mut crossed = 0u32;
    let mut s = 0usize;
    while s < SLOTS {
        if armed & bit(s) != 0
            && let Some(&t) = conn.thr.get(s)
            && is_crossed(s, m.slot(s), t)
        {
            crossed |= bit(s);
        }
        s += 1;
    }
    crossed
}

/// Checks the armed slots among `candidates`, clears those crossed and returns their bits.
#[inline(always)]
fn check_slots(conn: &mut Conn, candidates: u32, now_ns: u64) -> u32 {
    let crossed = crossed_slots(conn, candidates, &Metrics::of(conn, now_ns));
    // Disarmed, but the value stays: the event's snapshot says which threshold crossed.
    conn.thr_armed &= !crossed;
    crossed
}

/// True if counting a packet of direction `is_orig` (`pkts` packets, `ip_bytes` bytes) at
/// `now_ns` would cross an armed slot, i.e. [`check_after_packet`] after the count would
/// return non-zero. Writes nothing: the fast path (`engine::fast`) asks before it counts.
#[inline(always)]
pub fn would_cross(conn: &Conn, is_orig: bool, pkts: u32, ip_bytes: u32, now_ns: u64) -> bool {
    let candidates = checked_bits(is_orig);
    if conn.thr_armed & candidates == 0 {
        return false;
    }
    let m = Metrics::of(conn, now_ns).with_packet(is_orig, pkts, ip_bytes);
    crossed_slots(conn, candidates, &m) != 0
}

/// After a counted packet of direction `is_orig` at `now_ns`: the slots that crossed (now
/// disarmed), or 0. One load and branch when nothing is armed.
#[inline(always)]
pub fn check_after_packet(conn: &mut Conn, is_orig: bool, now_ns: u64) -> u32 {
    if conn.thr_armed == 0 {
        return 0;
    }
    check_slots(conn, checked_bits(is_orig), now_ns)
}

/// A request from the agent to change a connection's thresholds (the packet data of the
/// `conntrack_control` program under BPF_PROG_TEST_RUN; applied directly on the host).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThresholdCommand {
    /// The connection.
    pub key: FlowKey,
    /// Slots to write (bits of [`bit`]); the others are left alone.
    pub mask: u32,
    /// 1: check the originator's slots after writing (Zeek's `CheckThresholds(is_orig)`),
    /// 0: the responder's. The duration and totals are checked either way.
    pub check_orig: u32,
    /// Time of the check (ns): network time in replays, wall clock live.
    pub now_ns: u64,
    /// New values for the slots of `mask` (0 clears).
    pub values: [u64; SLOTS],
}

/// [`ThresholdCommand`] result bit: the command was applied; the low bits are the crossed
/// slots.
pub const RESULT_APPLIED: u32 = 1 << 16;
/// Result bit: no connection under the key.
pub const RESULT_NOT_FOUND: u32 = 1 << 17;
/// Result bit: the command could not be read.
pub const RESULT_BAD_COMMAND: u32 = 1 << 19;

/// Writes the slots of `cmd.mask` and checks for crossings as Zeek does when a threshold is
/// set. Returns the crossed (now disarmed) slots.
#[inline(always)]
pub fn apply_command(conn: &mut Conn, cmd: &ThresholdCommand) -> u32 {
    let mask = cmd.mask & ALL_SLOTS;
    if cmd.mask & contents::CMD_SET_CONTENTS != 0 {
        conn.thr_armed =
            (conn.thr_armed & !contents::EXTRACT_BITS) | (cmd.mask & contents::EXTRACT_BITS);
        if mask == 0 {
            // Extraction only: no threshold was set, so none is checked.
            return 0;
        }
    }
    let mut s = 0usize;
    while s < SLOTS {
        if mask & bit(s) != 0
            && let (Some(dst), Some(&v)) = (conn.thr.get_mut(s), cmd.values.get(s))
        {
            *dst = v;
            if v == 0 {
                conn.thr_armed &= !bit(s);
            } else {
                conn.thr_armed |= bit(s);
            }
        }
        s += 1;
    }
    check_slots(conn, checked_bits(cmd.check_orig != 0), cmd.now_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn_with(orig_bytes: u64, resp_bytes: u64, orig_pkts: u64, resp_pkts: u64) -> Conn {
        let mut c = Conn::ZERO;
        c.start_ns = 1_000;
        c.orig.ip_bytes = orig_bytes;
        c.resp.ip_bytes = resp_bytes;
        c.orig.pkts = orig_pkts;
        c.resp.pkts = resp_pkts;
        c
    }

    fn set(conn: &mut Conn, s: usize, v: u64, now_ns: u64) -> u32 {
        let mut cmd = ThresholdCommand {
            mask: bit(s),
            check_orig: (s != slot::RESP_BYTES && s != slot::RESP_PKTS) as u32,
            now_ns,
            ..ThresholdCommand::default()
        };
        cmd.values[s] = v;
        apply_command(conn, &cmd)
    }

    #[test]
    fn counters_cross_at_greater_or_equal() {
        assert!(is_crossed(slot::ORIG_BYTES, 100, 100));
        assert!(is_crossed(slot::RESP_PKTS, 101, 100));
        assert!(!is_crossed(slot::TOTAL_BYTES, 99, 100));
    }

    #[test]
    fn duration_crosses_only_strictly_past_the_threshold() {
        assert!(!is_crossed(slot::DURATION, 100, 100));
        assert!(is_crossed(slot::DURATION, 101, 100));
    }

    #[test]
    fn nothing_armed_checks_nothing() {
        let mut c = conn_with(1_000_000, 1_000_000, 1000, 1000);
        assert_eq!(check_after_packet(&mut c, true, u64::MAX), 0);
    }

    #[test]
    fn a_direction_is_checked_only_on_its_own_packets() {
        let mut c = conn_with(0, 0, 0, 0);
        assert_eq!(set(&mut c, slot::RESP_BYTES, 500, 0), 0);
        c.resp.ip_bytes = 600; // counted, but the next packet is the originator's
        assert_eq!(check_after_packet(&mut c, true, 2_000), 0);
        assert_eq!(
            check_after_packet(&mut c, false, 2_000),
            bit(slot::RESP_BYTES)
        );
    }

    #[test]
    fn each_threshold_fires_once_and_its_slot_is_disarmed() {
        let mut c = conn_with(0, 0, 0, 0);
        set(&mut c, slot::ORIG_PKTS, 2, 0);
        c.orig.pkts = 2;
        assert_eq!(check_after_packet(&mut c, true, 0), bit(slot::ORIG_PKTS));
        assert_eq!(c.thr_armed, 0);
        assert_eq!(
            c.thr[slot::ORIG_PKTS],
            2,
            "kept to say which threshold crossed"
        );
        c.orig.pkts = 3;
        assert_eq!(check_after_packet(&mut c, true, 0), 0);
    }

    #[test]
    fn totals_are_checked_on_packets_of_either_direction() {
        let mut c = conn_with(300, 300, 3, 3);
        set(&mut c, slot::TOTAL_BYTES, 700, 0);
        set(&mut c, slot::TOTAL_PKTS, 7, 0);
        c.resp.ip_bytes = 400;
        c.resp.pkts = 4;
        assert_eq!(
            check_after_packet(&mut c, false, 0),
            bit(slot::TOTAL_BYTES) | bit(slot::TOTAL_PKTS)
        );
    }

    #[test]
    fn duration_is_measured_from_the_connection_start() {
        let mut c = conn_with(0, 0, 1, 0);
        set(&mut c, slot::DURATION, 100, 0);
        assert_eq!(check_after_packet(&mut c, false, 1_100), 0);
        assert_eq!(
            check_after_packet(&mut c, false, 1_101),
            bit(slot::DURATION)
        );
    }

    #[test]
    fn a_threshold_already_crossed_fires_when_it_is_set() {
        let mut c = conn_with(500, 0, 5, 0);
        assert_eq!(set(&mut c, slot::ORIG_BYTES, 1, 0), bit(slot::ORIG_BYTES));
        assert_eq!(c.thr_armed, 0);
    }

    #[test]
    fn setting_one_direction_does_not_check_the_other() {
        let mut c = conn_with(500, 500, 5, 5);
        c.thr[slot::RESP_BYTES] = 1; // armed earlier, not yet seen by a responder packet
        c.thr_armed = bit(slot::RESP_BYTES);
        assert_eq!(set(&mut c, slot::ORIG_BYTES, 1000, 0), 0);
        assert_eq!(c.thr_armed, bit(slot::RESP_BYTES) | bit(slot::ORIG_BYTES));
    }

    #[test]
    fn rearming_after_a_crossing_arms_the_next_value() {
        let mut c = conn_with(0, 0, 0, 0);
        set(&mut c, slot::ORIG_BYTES, 100, 0);
        c.orig.ip_bytes = 150;
        assert_eq!(check_after_packet(&mut c, true, 0), bit(slot::ORIG_BYTES));
        // The agent arms the next lowest; below the counter it fires at once.
        assert_eq!(set(&mut c, slot::ORIG_BYTES, 120, 0), bit(slot::ORIG_BYTES));
        assert_eq!(set(&mut c, slot::ORIG_BYTES, 200, 0), 0);
        c.orig.ip_bytes = 200;
        assert_eq!(check_after_packet(&mut c, true, 0), bit(slot::ORIG_BYTES));
    }

    #[test]
    fn writing_zero_disarms_a_slot() {
        let mut c = conn_with(0, 0, 0, 0);
        set(&mut c, slot::RESP_PKTS, 10, 0);
        set(&mut c, slot::RESP_PKTS, 0, 0);
        assert_eq!(c.thr_armed, 0);
        c.resp.pkts = 50;
        assert_eq!(check_after_packet(&mut c, false, 0), 0);
    }

    #[test]
    fn a_contents_command_sets_only_the_extraction_bits() {
        let mut c = Conn::ZERO;
        c.thr_armed = bit(slot::ORIG_BYTES);
        c.thr[slot::ORIG_BYTES] = 1;
        c.orig.ip_bytes = 100; // would cross if checked
        let cmd = ThresholdCommand {
            mask: contents::CMD_SET_CONTENTS | contents::EXTRACT_RESP,
            check_orig: 1,
            ..ThresholdCommand::default()
        };
        assert_eq!(apply_command(&mut c, &cmd), 0, "nothing checked");
        assert_eq!(c.thr_armed, bit(slot::ORIG_BYTES) | contents::EXTRACT_RESP);
        let off = ThresholdCommand {
            mask: contents::CMD_SET_CONTENTS,
            ..ThresholdCommand::default()
        };
        apply_command(&mut c, &off);
        assert_eq!(c.thr_armed, bit(slot::ORIG_BYTES));
    }
}
