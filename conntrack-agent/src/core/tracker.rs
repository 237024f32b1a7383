//! Connection lifetimes: Zeek's timers on a pluggable clock.
//!
//! The tracker mirrors what Zeek's session and TCP adapter timers do, without owning the
//! connection state itself (that lives in the datapath: a host HashMap or a BPF map):
//! - inactivity (all protocols): 1 min for UDP/ICMP/other and for TCP until one endpoint leaves
//!   the handshake states, then 5 min (`tcp_inactivity_timeout`); 1 h for TCP 21/22/23/513 once
//!   established (`Conn::port_inactivity_timeouts`);
//! - TCP attempt (5 s after the originator's SYN, fires at end of input too): S0 removal;
//! - TCP expire checks (5 s after creation, then every 6 s; also 6 s after a half close) with the
//!   5 s linger rule;
//! - TCP close delay: removal at last_time + 5 s once the close is complete.
//!
//! Timers are lazy like Zeek's: a due timer re-reads the connection (through a callback) and
//! either removes it or re-arms itself. They fire only when network time advances and before the
//! packet that advanced it is processed (the caller calls [`Tracker::advance`] first). At the end
//! of input only the attempt timers fire ([`Tracker::finish`]), then everything left is drained.

use crate::core::slot_key::SlotKey;
use crate::core::timer_wheel::{Due, TimerWheel};
use crate::core::uid::Uid;
use conntrack_common::conn::{CONN_DNS_ANALYZER, Conn};
use conntrack_common::event::ConnChange;
use conntrack_common::tcp::{is_handshake, state::*};
use hashbrown::HashTable;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::hash::Hash;

pub const SEC: i64 = 1_000_000_000;

/// Timer settings (Zeek defaults).
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub udp_inactivity: i64,
    pub icmp_inactivity: i64,
    pub other_inactivity: i64,
    pub tcp_inactivity: i64,
    pub tcp_attempt_delay: i64,
    pub tcp_syn_timeout: i64,
    pub tcp_session_timer: i64,
    pub tcp_connection_linger: i64,
    pub tcp_close_delay: i64,
    /// `Conn::port_inactivity_timeouts` (TCP ports), applied at connection_established.
    pub tcp_port_inactivity: Vec<(u16, i64)>,
    /// `dns_session_timeout`: a UDP connection with the DNS analyzer attached is removed once
    /// it has been idle about this long (the analyzer's own expire timer; 0 = never).
    pub dns_session_timeout: i64,
    /// `max_timer_expires`: timers processed per advance (0 = no cap).
    pub max_timer_expires: usize,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            udp_inactivity: 60 * SEC,
            icmp_inactivity: 60 * SEC,
            other_inactivity: 60 * SEC,
            tcp_inactivity: 300 * SEC,
            tcp_attempt_delay: 5 * SEC,
            tcp_syn_timeout: 5 * SEC,
            tcp_session_timer: 6 * SEC,
            tcp_connection_linger: 5 * SEC,
            tcp_close_delay: 5 * SEC,
            tcp_port_inactivity: vec![
                (21, 3600 * SEC),
                (22, 3600 * SEC),
                (23, 3600 * SEC),
                (513, 3600 * SEC),
            ],
            max_timer_expires: 300,
            dns_session_timeout: 10 * SEC,
        }
    }
}

/// What the tracker needs to see of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnView {
    pub proto: u8,
    pub last_ns: i64,
    /// TCP endpoint states in the current orientation (0 for non-TCP).
    pub orig_state: u8,
    pub resp_state: u8,
    /// Current originator address and port, to notice flips.
    pub orig_addr: [u8; 16],
    pub orig_port: u16,
    pub resp_port: u16,
    /// Zeek's DNS analyzer is attached (a UDP connection to a DNS port, DNS's script loaded):
    /// its session timer applies.
    pub dns_analyzer: bool,
}

impl ConnView {
    /// What the tracker needs of a datapath connection.
    pub fn of(c: &Conn) -> Self {
        Self {
            proto: c.proto,
            last_ns: c.last_ns as i64,
            orig_state: if c.is_tcp() { c.orig.state } else { 0 },
            resp_state: if c.is_tcp() { c.resp.state } else { 0 },
            orig_addr: c.orig_addr,
            orig_port: c.orig_port,
            resp_port: c.resp_port,
            dns_analyzer: c.flags & CONN_DNS_ANALYZER != 0,
        }
    }

    /// The same from a connection's event (which carries these fields, not the connection).
    pub fn of_change(e: &ConnChange) -> Self {
        let tcp = e.key.proto == conntrack_common::proto::TCP;
        let (orig_addr, orig_port, resp_port) = e.orig_side();
        Self {
            proto: e.key.proto,
            last_ns: e.last_ns as i64,
            orig_state: if tcp { e.orig_state } else { 0 },
            resp_state: if tcp { e.resp_state } else { 0 },
            orig_addr,
            orig_port,
            resp_port,
            dns_analyzer: e.has_flag(CONN_DNS_ANALYZER),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    #[default]
    Inactivity,
    Attempt,
    Expire,
    CloseDelete,
    /// The DNS analyzer's expire timer (`DNS_Analyzer::ExpireTimer`), UDP only.
    DnsExpire,
}

/// What a due timer is checked against before anything else: most timers that come due are
/// void (their connection was removed, or its analyzer timers cancelled at the close), and
/// these 8 bytes a slot, apart from the slots, stay in cache where reading each void timer's
/// slot missed it (a third of the time of firing timers in a replay).
#[derive(Clone, Copy, Default)]
struct Stamp {
    /// The slot's generation: bumped when its connection is removed, so that the timers armed
    /// for it no longer match. Per slot, so u32 wraps only after four billion reuses of one
    /// slot.
    generation: u32,
    /// Bumped by CancelTimers (analyzer timers: attempt, expire, close delete): once or twice
    /// in a connection's life, so a byte (wrapping) tells a cancelled timer from a live one.
    epoch: u8,
}

impl Stamp {
    /// False for a timer armed for an earlier connection of the slot, or an analyzer timer
    /// cancelled since it was armed.
    fn is_live(self, tm: &Timer) -> bool {
        self.generation == tm.generation && (tm.kind == Kind::Inactivity || self.epoch == tm.epoch)
    }
}

struct Entry {
    /// The uid's 96 random bits (high and low part), kept inline: a `Uid` would take 16
    /// bytes and push the entry past 40. A uid given as text (handover) is in
    /// `Tracker::given`, with `UID_GIVEN` set.
    uid_hi: u32,
    uid_lo: u64,
    orig_state: u8,
    resp_state: u8,
    /// [`orig_tag`] of the originator's address and port, to notice flips.
    orig: u32,
    /// `DID_CLOSE_ORIG`, `DID_CLOSE_RESP` (did_close of each side, in the current
    /// orientation), `ESTABLISHED` (connection_established already handled) and
    /// `UID_GIVEN`: one byte, which keeps the entry at 40 bytes.
    flags: u8,
    inactivity: i64,
    /// When the close-delay removal is due ([`NO_CLOSE`]: not armed).
    close_at: i64,
    /// The service capability's word for the connection (0: none): its detection state or
    /// decided names, as Zeek keeps `service` in the connection record. Read and changed in
    /// place ([`Tracker::service_mut`]) and given back at its removal, so that the capability
    /// keeps no table of connections. Fits the entry's padding.
    service: u32,
}

/// A pending timer: 24 bytes. It names its connection by slot (and the slot's generation when
/// it was armed) rather than by key: a flow key is 40 bytes, and a million connections keep
/// two or three timers each.
struct Timer {
    at: i64,
    /// Arming order, wrapping: it only orders timers due at the same nanosecond, which four
    /// billion arms apart never are in practice (and the order stays total if they were).
    seq: u32,
    generation: u32,
    slot: u32,
    epoch: u8,
    kind: Kind,
}

/// `Entry::flags`.
const DID_CLOSE_ORIG: u8 = 1;
const DID_CLOSE_RESP: u8 = 2;
const ESTABLISHED: u8 = 4;
/// The uid is a text from elsewhere, in `Tracker::given`.
const UID_GIVEN: u8 = 8;

/// `flags` after a flip: the two did_close bits trade places.
fn swap_sides(flags: u8) -> u8 {
    let orig = flags & DID_CLOSE_ORIG;
    let resp = flags & DID_CLOSE_RESP;
    (flags & !(DID_CLOSE_ORIG | DID_CLOSE_RESP)) | (orig << 1) | (resp >> 1)
}

impl Entry {
    /// A new slot's entry, before its connection's is set.
    fn unused() -> Self {
        Self {
            uid_hi: 0,
            uid_lo: 0,
            orig_state: INACTIVE,
            resp_state: INACTIVE,
            orig: 0,
            flags: 0,
            inactivity: 0,
            close_at: NO_CLOSE,
            service: 0,
        }
    }

    /// did_close of side 0 (originator) or 1 (responder).
    fn did_close(&self, side: usize) -> bool {
        self.flags & (DID_CLOSE_ORIG << side) != 0
    }
}

/// `Entry::close_at` when no close-delay removal is armed.
const NO_CLOSE: i64 = i64::MIN;

/// A 32-bit tag of a (address, port) pair: the tracker keeps this instead of the 18 bytes to
/// notice that a connection's roles flipped. The two sides of one connection get the same
/// tag with a 2^-32 chance, and only a flip of such a connection would go unnoticed (its
/// did_close flags unswapped): 4 bytes per connection buy more than that costs.
fn orig_tag(addr: &[u8; 16], port: u16) -> u32 {
    foldhash::fast::FixedState::with_seed(0x636f_6e6e_7472_6163).hash_one((addr, port)) as u32
}

impl Due for Timer {
    fn due(&self) -> i64 {
        self.at
    }
}

// Ordered by time, then arming order (`seq` is unique): the order Zeek's timer queue fires in.
impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A connection's place in the tracker: its key (for the index, and to report it) and its
/// state. A free slot keeps its last key and entry until reused (its generation moved on).
struct Slot<K: SlotKey> {
    key: K::Stored,
    entry: Entry,
}

/// What [`Tracker::observe_named`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// The connection is new to the tracker (it got its uid).
    pub fresh: bool,
    /// Zeek's connection_established, the first time.
    pub newly_established: bool,
}

/// Why a connection was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Removal {
    Inactivity,
    Attempt,
    Expire,
    Closed,
    Drain,
    /// The datapath no longer has it (e.g. evicted); nothing to log.
    Gone,
}

/// What the tracker held of a connection it let go: its uid and its service word (see
/// [`Tracker::service_mut`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub uid: Uid,
    pub service: u32,
}

impl Default for Released {
    fn default() -> Self {
        Self {
            uid: Uid::UNSET,
            service: 0,
        }
    }
}

pub struct Tracker<K: SlotKey> {
    t: Timeouts,
    /// Key to slot: the slots' numbers, hashed by their key (which only the slot holds: a
    /// map from key to slot would keep a second 40-byte copy of every key).
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    slots: Vec<Slot<K>>,
    /// Each slot's [`Stamp`] (parallel to `slots`).
    stamps: Vec<Stamp>,
    /// Free slots, reused first.
    free: Vec<u32>,
    /// The uids given as text (handover), by slot; rare.
    given: HashMap<u32, Uid>,
    timers: TimerWheel<Timer>,
    seq: u64,
    network_time: i64,
    /// The last advance stopped at the batch size (timers may still be due).
    behind: bool,
    /// The service word of the connection the last `observe` replaced (a new connection of a
    /// key the tracker still had: the old one's removal was never reported), 0 if none.
    replaced_service: u32,
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMP6: u8 = 58;

impl<K: SlotKey> Tracker<K> {
    pub fn new(t: Timeouts) -> Self {
        Self {
            t,
            index: HashTable::new(),
            hasher: Default::default(),
            slots: Vec::new(),
            stamps: Vec::new(),
            free: Vec::new(),
            given: HashMap::new(),
            timers: TimerWheel::default(),
            seq: 0,
            network_time: i64::MIN,
            behind: false,
            replaced_service: 0,
        }
    }

    /// After an `observe` that gave a connection its slot (`fresh`): the service word of the
    /// connection it replaced, 0 if none (and from then on). Nothing logs that connection, so
    /// what its word holds is the caller's to release.
    pub fn take_replaced_service(&mut self) -> u32 {
        std::mem::take(&mut self.replaced_service)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// `key`'s slot.
    fn slot_of(&self, key: &K) -> Option<u32> {
        let h = self.hasher.hash_one(key);
        let slots = &self.slots;
        self.index
            .find(h, |&i| {
                slots
                    .get(i as usize)
                    .is_some_and(|s| key.is_stored_in(&s.key))
            })
            .copied()
    }

    #[cfg(test)]
    fn entry(&self, key: &K) -> Option<&Entry> {
        let slot = self.slot_of(key)?;
        self.slots.get(slot as usize).map(|s| &s.entry)
    }

    /// The live slot a timer names: its key, if the connection it was armed for is still
    /// there (not removed, the slot not reused since).
    fn timer_key(&self, tm: &Timer) -> Option<K> {
        let s = self.slots.get(tm.slot as usize)?;
        let live = self.stamps.get(tm.slot as usize)?.generation == tm.generation;
        live.then(|| K::load(&s.key))
    }

    /// Removes `key`; its slot is free and its timers void (they name an old generation).
    /// Returns its uid and service word.
    fn remove(&mut self, key: &K) -> Option<Released> {
        let h = self.hasher.hash_one(key);
        let slots = &self.slots;
        let found = self
            .index
            .find_entry(h, |&i| {
                slots
                    .get(i as usize)
                    .is_some_and(|s| key.is_stored_in(&s.key))
            })
            .ok()?;
        let (slot, _) = found.remove();
        self.free.push(slot);
        let released = self.release(slot);
        // A boxed key is freed now rather than when the slot is reused.
        if let Some(s) = self.slots.get_mut(slot as usize) {
            s.key = K::Stored::default();
        }
        Some(released)
    }

    /// Ends the life of the connection in `slot` (still indexed: the caller unindexes it or
    /// reuses the slot): its timers void (a new generation), its uid and service word taken.
    fn release(&mut self, slot: u32) -> Released {
        if let Some(s) = self.stamps.get_mut(slot as usize) {
            s.generation = s.generation.wrapping_add(1);
        }
        let service = self.service_at(slot);
        Released {
            uid: self.take_uid(slot),
            service,
        }
    }

    /// The service word stored with the connection in `slot`.
    fn service_at(&self, slot: u32) -> u32 {
        self.slots.get(slot as usize).map_or(0, |s| s.entry.service)
    }

    /// The uid of the connection in `slot`.
    fn uid_at(&self, slot: u32) -> Uid {
        match self.slots.get(slot as usize) {
            Some(s) if s.entry.flags & UID_GIVEN != 0 => {
                self.given.get(&slot).cloned().unwrap_or(Uid::UNSET)
            }
            Some(s) => Uid::Random {
                hi: s.entry.uid_hi,
                lo: s.entry.uid_lo,
            },
            None => Uid::UNSET,
        }
    }

    /// The uid of `slot`, which is left unset.
    fn take_uid(&mut self, slot: u32) -> Uid {
        let uid = self.uid_at(slot);
        self.put_uid(slot, Uid::UNSET);
        uid
    }

    fn put_uid(&mut self, slot: u32, uid: Uid) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let e = &mut s.entry;
        if e.flags & UID_GIVEN != 0 {
            self.given.remove(&slot);
        }
        match uid {
            Uid::Random { hi, lo } => {
                (e.uid_hi, e.uid_lo) = (hi, lo);
                e.flags &= !UID_GIVEN;
            }
            given @ Uid::Given(_) => {
                (e.uid_hi, e.uid_lo) = (0, 0);
                e.flags |= UID_GIVEN;
                self.given.insert(slot, given);
            }
        }
    }

    /// New timer settings (config reload): connections take their inactivity timeout when
    /// they are created or leave the TCP handshake, so these apply from then on.
    pub fn set_timeouts(&mut self, t: Timeouts) {
        // The batch size is the mode's (see `set_expire_batch`), not a setting.
        let batch = self.t.max_timer_expires;
        self.t = t;
        self.t.max_timer_expires = batch;
    }

    /// Timers processed per advance (0 = all that are due). `read` keeps Zeek's
    /// `max_timer_expires` (300 per packet); `run` takes large batches and comes back at once
    /// while [`Tracker::behind`] says timers were left due.
    pub fn set_expire_batch(&mut self, n: usize) {
        self.t.max_timer_expires = n;
    }

    /// True if the last advance stopped at the batch size with timers still due.
    pub fn behind(&self) -> bool {
        self.behind
    }

    /// The latest network time seen (i64::MIN before any).
    pub fn network_time(&self) -> i64 {
        self.network_time
    }

    fn push(&mut self, at: i64, kind: Kind, slot: u32, generation: u32, epoch: u8) {
        self.seq += 1;
        self.timers.push(Timer {
            at,
            seq: self.seq as u32,
            generation,
            slot,
            epoch,
            kind,
        });
    }

    fn base_inactivity(&self, proto: u8) -> i64 {
        match proto {
            TCP | UDP => self.t.udp_inactivity,
            ICMP | ICMP6 => self.t.icmp_inactivity,
            _ => self.t.other_inactivity,
        }
    }

    /// Forget a connection that the datapath removed by itself (e.g. TCP reuse).
    pub fn forget(&mut self, key: &K) -> Option<Released> {
        self.remove(key)
    }

    /// The service capability's word stored with `key`, to read and change in place; None if
    /// the tracker does not know `key`.
    pub fn service_mut(&mut self, key: &K) -> Option<&mut u32> {
        let slot = self.slot_of(key)?;
        Some(&mut self.slots[slot as usize].entry.service)
    }

    /// The service word `key`'s record keeps (0: none, or no record).
    pub fn service(&self, key: &K) -> u32 {
        self.slot_of(key).map_or(0, |slot| self.service_at(slot))
    }

    /// True if the tracker has `key`.
    pub fn knows(&self, key: &K) -> bool {
        self.slot_of(key).is_some()
    }

    /// `key`'s uid.
    pub fn uid(&self, key: &K) -> Option<Uid> {
        Some(self.uid_at(self.slot_of(key)?))
    }

    /// Gives `key` its uid (after [`Tracker::observe`] added it).
    pub fn set_uid(&mut self, key: &K, uid: Uid) {
        if let Some(slot) = self.slot_of(key) {
            self.put_uid(slot, uid);
        }
    }

    /// Every connection with its uid.
    pub fn uids(&self) -> impl Iterator<Item = (K, Uid)> {
        self.index.iter().filter_map(|&slot| {
            let s = self.slots.get(slot as usize)?;
            Some((K::load(&s.key), self.uid_at(slot)))
        })
    }

    /// Advances network time to `now` (never backwards) and fires due timers, calling `read`
    /// to re-read connections. Returns the connections to remove, in firing order. (The agent
    /// uses [`Tracker::advance_with`], which adds the timing-out veto.)
    #[cfg(test)]
    pub fn advance(
        &mut self,
        now: i64,
        read: &mut dyn FnMut(&K) -> Option<ConnView>,
    ) -> Vec<(K, Removal, Released)> {
        let mut out = Vec::new();
        self.advance_with(now, &mut ReadOnly(read), &mut out);
        out
    }

    /// A connection's inactivity timeout from now on (Zeek's `set_inactivity_timeout`; 0 =
    /// none); `last_ns` is its last packet time. False if the tracker does not know it.
    pub fn set_inactivity(&mut self, key: &K, timeout: i64, last_ns: i64) -> bool {
        let Some(slot) = self.slot_of(key) else {
            return false;
        };
        let e = &mut self.slots[slot as usize].entry;
        if e.inactivity == timeout {
            return true;
        }
        e.inactivity = timeout;
        let generation = self.stamps[slot as usize].generation;
        if timeout > 0 {
            // The timer armed for the old value stays and re-arms itself lazily.
            self.push(
                last_ns.saturating_add(timeout),
                Kind::Inactivity,
                slot,
                generation,
                0,
            );
        }
        true
    }

    /// Advances network time to `now` if no timer is due by then (true; what
    /// [`Tracker::advance_with`] would do, without its setup); false: nothing done, call
    /// `advance_with`. Most packets of a replay fire no timer.
    #[inline]
    pub fn advance_idle(&mut self, now: i64) -> bool {
        let now = now.max(self.network_time);
        if !self.timers.none_due(now) {
            return false;
        }
        self.network_time = now;
        self.behind = false;
        true
    }

    /// [`Tracker::advance`] with a host that can also veto inactivity removals; the removed
    /// connections, each with its uid and service word, are added to `out` (the caller's
    /// buffer, reused: no allocation per advance).
    // Inline (as `observe_named`): run per packet; left to the partitioning into codegen
    // units, it was or was not inlined depending on where unrelated code lived.
    #[inline]
    pub fn advance_with(
        &mut self,
        now: i64,
        host: &mut dyn TimerHost<K>,
        out: &mut Vec<(K, Removal, Released)>,
    ) {
        if now > self.network_time {
            self.network_time = now;
        }
        let now = self.network_time;
        let mut fired = 0usize;
        self.behind = false;
        loop {
            if self.t.max_timer_expires != 0 && fired >= self.t.max_timer_expires {
                self.behind = true;
                break;
            }
            let Some(tm) = self.timers.pop_due(now) else {
                break;
            };
            // A removed connection's timer, or a cancelled analyzer timer: the stamp says so
            // without a read of the slot.
            if !self
                .stamps
                .get(tm.slot as usize)
                .is_some_and(|st| st.is_live(&tm))
            {
                continue;
            }
            let Some(key) = self.timer_key(&tm) else {
                continue;
            };
            let e = &self.slots[tm.slot as usize].entry;
            fired += 1;
            if tm.kind == Kind::CloseDelete && e.close_at == tm.at {
                // Removed whatever the datapath holds now, so not read (a lookup of the
                // connection per close): the owner finds it gone when it takes it out of the
                // datapath, and handles that as it does `Removal::Gone`.
                let released = self.remove(&key).unwrap_or_default();
                out.push((key, Removal::Closed, released));
                continue;
            }
            let Some(v) = host.read(&key) else {
                let released = self.remove(&key).unwrap_or_default();
                out.push((key, Removal::Gone, released));
                continue;
            };
            if let Some(r) = self.fire(&tm, &key, &v, now, host) {
                let released = self.remove(&key).unwrap_or_default();
                out.push((key, r, released));
            }
        }
    }

    /// Decides a due timer; re-arms it when the connection stays.
    fn fire(
        &mut self,
        tm: &Timer,
        key: &K,
        v: &ConnView,
        now: i64,
        host: &mut dyn TimerHost<K>,
    ) -> Option<Removal> {
        let e = &self.slots[tm.slot as usize].entry;
        let Stamp { generation, epoch } = self.stamps[tm.slot as usize];
        match tm.kind {
            Kind::Inactivity => {
                let to = e.inactivity;
                if to <= 0 {
                    return None;
                }
                if v.last_ns + to <= now {
                    if host.keep_timing_out(key, &self.uid_at(tm.slot)) {
                        // Vetoed: check again one full timeout after this check (Zeek's
                        // Session::InactivityTimer), not after the last packet.
                        let at = now + to;
                        self.push(at, Kind::Inactivity, tm.slot, generation, 0);
                        return None;
                    }
                    Some(Removal::Inactivity)
                } else {
                    self.push(v.last_ns + to, Kind::Inactivity, tm.slot, generation, 0);
                    None
                }
            }
            Kind::Attempt => attempt_due(v).then_some(Removal::Attempt),
            Kind::Expire => {
                if v.last_ns + self.t.tcp_connection_linger < now {
                    let dc = [e.did_close(0), e.did_close(1)];
                    let (o, r) = (v.orig_state, v.resp_state);
                    if (dc[0] || dc[1])
                        && ((dc[0] && dc[1])
                            || o == RESET
                            || r == RESET
                            || o == INACTIVE
                            || r == INACTIVE)
                    {
                        return Some(Removal::Expire);
                    }
                    if o == INACTIVE && r == INACTIVE {
                        return Some(Removal::Expire);
                    }
                }
                let at = now + self.t.tcp_session_timer;
                self.push(at, Kind::Expire, tm.slot, generation, epoch);
                None
            }
            Kind::CloseDelete => (e.close_at == tm.at).then_some(Removal::Closed),
            Kind::DnsExpire => {
                // Zeek allows one second for a request and its reply (the timer's first check
                // comes a full timeout after the connection began), and re-checks a full
                // timeout after each check, not after the last packet.
                let to = self.t.dns_session_timeout;
                if now - v.last_ns >= to - SEC {
                    return Some(Removal::Inactivity);
                }
                self.push(now + to, Kind::DnsExpire, tm.slot, generation, 0);
                None
            }
        }
    }

    /// End of input: the attempt timers (Zeek's do_expire timers) fire, whatever their time;
    /// then every remaining connection is drained in key order (in one step; the agent runs
    /// the two halves apart).
    #[cfg(test)]
    pub fn finish(
        &mut self,
        read: &mut dyn FnMut(&K) -> Option<ConnView>,
    ) -> Vec<(K, Removal, Released)> {
        let mut out = self.finish_attempts(read);
        out.extend(self.drain());
        out
    }

    /// End of input, first half: the attempt timers that are due fire (their connections
    /// leave the tracker); every other timer is dropped. The rest stays for [`Tracker::forget`]
    /// or [`Tracker::drain`].
    pub fn finish_attempts(
        &mut self,
        read: &mut dyn FnMut(&K) -> Option<ConnView>,
    ) -> Vec<(K, Removal, Released)> {
        let mut out = Vec::new();
        let mut timers = self.timers.take_all();
        timers.sort();
        for tm in timers {
            if tm.kind != Kind::Attempt {
                continue;
            }
            let Some(key) = self.timer_key(&tm) else {
                continue;
            };
            if self.stamps[tm.slot as usize].epoch != tm.epoch {
                continue;
            }
            if let Some(v) = read(&key)
                && attempt_due(&v)
            {
                let released = self.remove(&key).unwrap_or_default();
                out.push((key, Removal::Attempt, released));
            }
        }
        out
    }

    /// End of input, second half: every connection still tracked, in key order, to be drained.
    pub fn drain(&mut self) -> Vec<(K, Removal, Released)> {
        let mut out = Vec::new();
        let mut rest: Vec<(K, u32)> = self
            .index
            .drain()
            .filter_map(|slot| Some((K::load(&self.slots.get(slot as usize)?.key), slot)))
            .collect();
        rest.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, slot) in rest {
            let service = self.service_at(slot);
            let uid = self.take_uid(slot);
            out.push((k, Removal::Drain, Released { uid, service }));
        }
        self.slots.clear();
        self.stamps.clear();
        self.free.clear();
        self.given.clear();
        out
    }

    #[cfg(test)]
    fn inactivity_of(&self, key: &K) -> Option<i64> {
        self.entry(key).map(|e| e.inactivity)
    }
}

/// What the tracker asks of its owner while timers fire.
pub trait TimerHost<K> {
    /// The connection as the datapath has it now (None: gone).
    fn read(&mut self, key: &K) -> Option<ConnView>;
    /// Zeek's `connection_timing_out`: true keeps a connection that timed out for inactivity.
    fn keep_timing_out(&mut self, _key: &K, _uid: &Uid) -> bool {
        false
    }
}

/// A host that only reads (no veto).
#[cfg(test)]
struct ReadOnly<'a, K>(&'a mut dyn FnMut(&K) -> Option<ConnView>);

#[cfg(test)]
impl<K> TimerHost<K> for ReadOnly<'_, K> {
    fn read(&mut self, key: &K) -> Option<ConnView> {
        (self.0)(key)
    }
}

fn attempt_due(v: &ConnView) -> bool {
    matches!(v.orig_state, SYN_SENT | SYN_ACK_SENT) && v.resp_state == INACTIVE
}

mod observe;

#[cfg(test)]
mod tests;
