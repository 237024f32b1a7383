//! The event core: capability modules (thresholds users, alert rules, removal hooks, ...)
//! register here and receive connection events, with a [`ConnHandle`] through which they act on
//! that connection (today: the ConnThreshold API of [`crate::core::thresholds`]).
//!
//! Events are queued and delivered in order, one at a time, to every capability in
//! registration order, like Zeek's event queue: what a handler causes (a threshold it sets that
//! has already been crossed, say) is delivered after the current event. The agent feeds the
//! core from the datapath's events and the tracker's removals; with no capability registered
//! nothing is queued, so connections cost nothing here.
//!
//! ```ignore
//! struct BigTransfers;
//! impl Capability for BigTransfers {
//!     fn on_event(&mut self, conn: &mut ConnHandle<'_>, event: &ConnEvent) {
//!         match event {
//!             ConnEvent::Established => { conn.set_bytes_threshold(10_000_000, true); }
//!             ConnEvent::ThresholdCrossed(c) => println!("{} crossed {}", conn.uid(), c.threshold),
//!             _ => {}
//!         }
//!     }
//! }
//! agent.register(Box::new(BigTransfers));
//! ```

use crate::core::event_uid::EventUid;
use crate::core::inactivity::InactivityRequests;
use crate::core::polling::Polls;
use crate::core::removal_hooks::RemovalHooks;
use crate::core::thresholds::{Crossing, RawCrossing, ThresholdKind, ThresholdTarget, Thresholds};
use crate::datapath::Content;
use conntrack_common::conn::Conn;
use conntrack_common::contents::{self as contents_bits, ContentCounters};
use conntrack_common::key::FlowKey;
use conntrack_common::threshold::ThresholdCommand;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

mod mask;
pub use mask::EventMask;

/// Why a connection was removed (given to [`ConnEvent::Removed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemovalReason {
    /// TCP close completed (close delay elapsed).
    Closed,
    /// No packet for the inactivity timeout.
    Inactivity,
    /// TCP attempt (SYN without answer) timed out.
    Attempt,
    /// TCP expire check (half-closed or idle endpoints).
    Expire,
    /// A new connection reused the 5-tuple (TCP reuse).
    Reuse,
    /// End of input or shutdown: every open connection is drained.
    Drain,
    /// The datapath lost the connection (table eviction, an entry deleted outside the agent):
    /// only removal hooks see this, with the last state the agent saw; capabilities get no
    /// `Removed` event and conn.log no record, as there is no final state.
    Evicted,
}

impl RemovalReason {
    /// A short name (conn removal statistics, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            RemovalReason::Closed => "closed",
            RemovalReason::Inactivity => "inactivity",
            RemovalReason::Attempt => "attempt",
            RemovalReason::Expire => "expire",
            RemovalReason::Reuse => "reuse",
            RemovalReason::Drain => "drained",
            RemovalReason::Evicted => "evicted",
        }
    }
}

/// What happened to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnEvent {
    /// The connection's first packet (Zeek's `new_connection`).
    New,
    /// A TCP endpoint changed state.
    StateChanged,
    /// Zeek's `connection_established` (once per connection).
    Established,
    /// A threshold set through the handle was crossed (Zeek's `bytes_threshold_crossed`,
    /// `packets_threshold_crossed`, `duration_threshold_crossed`, and the totals).
    ThresholdCrossed(Crossing),
    /// The connection was removed; the handle holds its final state. The last event of a
    /// connection.
    Removed(RemovalReason),
}

/// What a connection's events take ([`EventCore::needs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: no capability handles them and the connection has no removal hooks.
    Nothing,
    /// Building and delivering them.
    Deliver,
    /// Only the connection's latest state, for its removal hooks ([`EventCore::keep_state`]).
    KeepState,
}

/// A module that reacts to connection events.
pub trait Capability {
    /// Called for every event of every connection (keep the common case cheap).
    fn on_event(&mut self, conn: &mut ConnHandle<'_>, event: &ConnEvent);

    /// Zeek's `connection_timing_out` hook: the connection is about to be removed for
    /// inactivity. `Keep` from any capability vetoes the removal; the timer then checks again
    /// one timeout later ([`crate::core::inactivity`]).
    fn connection_timing_out(&mut self, _conn: &mut ConnHandle<'_>) -> TimeoutVerdict {
        TimeoutVerdict::Remove
    }

    /// Content extraction: payload of a connection flagged with [`ConnHandle::set_extract`],
    /// after the events of the packet that carried it. `dp` looks connections up.
    /// Also the service samples: the first payload of each direction of every connection
    /// (`contents::CONTENT_SAMPLE` in the chunk's flags) when service detection is on. `dp`
    /// looks connections up and takes commands (e.g. extraction on). Only with
    /// [`EventMask::PAYLOAD`] in [`Capability::events`].
    fn on_payload(&mut self, _chunk: Content<'_>, _dp: &mut dyn ThresholdTarget) {}

    /// conn.log's `service` for a connection being logged (`conn`, its final state; after its
    /// `Removed` event): the names this capability confirmed, appended in confirmation order.
    /// Each capability adds its own (application protocols, tunnels); a name already present
    /// is not repeated. Asked of every capability, whatever its [`Capability::events`].
    /// `stored`: the word the connection's record kept ([`ThresholdTarget::service_mut`]; 0
    /// if none).
    fn conn_service(
        &mut self,
        _key: &FlowKey,
        _conn: &Conn,
        _stored: u32,
        _out: &mut Vec<&'static str>,
    ) {
    }

    /// Connection `key` ends without a conn.log record (it left the datapath unseen, or the
    /// event of its removal was lost and a new connection took its key), its record having
    /// kept `stored` (0 if none): whatever the capability keeps for it goes (e.g. the samples
    /// of an undecided connection), as [`Capability::conn_service`] would have released it.
    fn forgotten_service(&mut self, _key: &FlowKey, _stored: u32) {}

    /// Handover: what a successor needs to log connection `key`'s `service` as this agent
    /// would, given the word its record keeps (`stored`), as text for the handover file; None
    /// when there is nothing to carry.
    fn saved_service(&self, _key: &FlowKey, _stored: u32) -> Option<String> {
        None
    }

    /// Handover: the record's word for a connection of protocol `proto` that a predecessor
    /// saved as `saved` ([`Capability::saved_service`]); None if this capability cannot read it.
    fn restored_service(&mut self, _proto: u8, _saved: &str) -> Option<u32> {
        None
    }

    /// Whether [`ConnEvent::StateChanged`] matters to this capability. Most packets that
    /// reach the agent are state changes; when no capability wants them the agent skips them
    /// (no lookup of the connection, no event), which is most of what a capability costs.
    fn wants_state_changes(&self) -> bool {
        true
    }

    /// The kinds of event this capability handles: it gets no other (nor
    /// `connection_timing_out` without [`EventMask::TIMING_OUT`], nor payload without
    /// [`EventMask::PAYLOAD`]). An event no capability handles is not built unless its
    /// connection has removal hooks, so declaring only what is used makes the rest free.
    fn events(&self) -> EventMask {
        EventMask::ALL
    }
}

/// A capability's answer to [`Capability::connection_timing_out`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutVerdict {
    Remove,
    Keep,
}

/// The connection an event is about.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub key: FlowKey,
    /// conn.log uid (text on demand: [`ConnHandle::uid`]).
    pub uid: EventUid,
    /// The connection as of the event.
    pub conn: Conn,
    /// Network time of the event (packet time in replays, wall clock live), ns.
    pub ts_ns: u64,
}

impl ConnInfo {
    /// A state to fill in ([`EventCore::fill_info`]).
    fn empty() -> Self {
        Self {
            key: FlowKey::default(),
            uid: EventUid::default(),
            conn: Conn::ZERO,
            ts_ns: 0,
        }
    }
}

/// Event states kept for reuse ([`EventCore::fill_info`]): a few cover a packet's events.
const SPARE_INFOS: usize = 4;

enum Pending {
    Event(ConnEvent),
    /// A crossing reported by the datapath, not yet matched against the thresholds set.
    Raw(RawCrossing),
}

/// What a capability can do with the connection of the event it handles.
pub struct ConnHandle<'a> {
    /// Shared, not borrowed: a removal hook registered through the handle keeps the event's
    /// state by reference count (see [`crate::core::removal_hooks`]) instead of copying it.
    pub(crate) info: &'a Rc<ConnInfo>,
    thresholds: &'a mut Thresholds,
    pub(crate) target: &'a mut dyn ThresholdTarget,
    queue: &'a mut VecDeque<(Rc<ConnInfo>, Pending)>,
    /// Removal hooks, polls and timeout requests (the methods live in their modules).
    pub(crate) lifecycle: &'a mut LifecycleRegistry,
}

/// The removal hooks, polls and timeout requests registered per connection; empty for
/// connections that use none.
#[derive(Default)]
pub struct LifecycleRegistry {
    pub(crate) hooks: RemovalHooks,
    pub(crate) polls: Polls,
    pub(crate) inactivity: InactivityRequests,
}

// The ConnThreshold API in full, as Zeek's: the alert rules use the setters, the Zeek threshold
// tests the rest; removal hooks, polling and inactivity (their own modules) extend the same handle.
#[allow(dead_code)]
impl ConnHandle<'_> {
    pub fn key(&self) -> &FlowKey {
        &self.info.key
    }

    pub fn uid(&self) -> &str {
        self.info.uid.as_str()
    }

    /// Appends [`ConnHandle::uid`] to `out`, for a caller that writes it once (no copy kept).
    pub fn push_uid(&self, out: &mut String) {
        self.info.uid.push_to(out);
    }

    /// [`ConnHandle::push_uid`] of a byte buffer.
    pub fn push_uid_bytes(&self, out: &mut Vec<u8>) {
        self.info.uid.push_bytes_to(out);
    }

    /// The connection as of the event (counters, state, addresses).
    pub fn conn(&self) -> &Conn {
        &self.info.conn
    }

    /// Network time of the event (ns).
    pub fn ts_ns(&self) -> u64 {
        self.info.ts_ns
    }

    /// Sets a threshold of any kind (bytes and packets as counts, duration in ns): what the
    /// named setters below do, for callers that pick the kind at run time (alert rules).
    pub fn set_threshold(&mut self, kind: ThresholdKind, value: u64) -> bool {
        self.set(kind, value)
    }

    fn set(&mut self, kind: ThresholdKind, value: u64) -> bool {
        let info = self.info;
        let (ok, raw) =
            self.thresholds
                .set(self.target, &info.conn, &info.key, kind, value, info.ts_ns);
        self.queue_raw(raw);
        ok
    }

    fn delete(&mut self, kind: ThresholdKind, value: u64) -> bool {
        let info = self.info;
        let (ok, raw) = self
            .thresholds
            .delete(self.target, &info.key, kind, value, info.ts_ns);
        self.queue_raw(raw);
        ok
    }

    /// A threshold that was already crossed when set is reported with the connection as the
    /// datapath holds it now: live, the kernel kept counting while this event waited in the
    /// ring buffer, so the event's snapshot would show stale counters (in a replay both agree).
    fn queue_raw(&mut self, raw: Option<RawCrossing>) {
        if let Some(raw) = raw {
            let mut info = ConnInfo::clone(self.info);
            if let Some(now) = self.target.lookup(&info.key) {
                info.ts_ns = info.ts_ns.max(now.last_ns);
                info.conn = now;
            }
            self.queue.push_back((Rc::new(info), Pending::Raw(raw)));
        }
    }

    /// `ConnThreshold::set_bytes_threshold`: IP bytes sent by one side. False for 0 or when the
    /// connection is no longer in the datapath.
    pub fn set_bytes_threshold(&mut self, bytes: u64, is_orig: bool) -> bool {
        self.set(ThresholdKind::bytes(is_orig), bytes)
    }

    /// `ConnThreshold::set_packets_threshold`: packets sent by one side.
    pub fn set_packets_threshold(&mut self, packets: u64, is_orig: bool) -> bool {
        self.set(ThresholdKind::packets(is_orig), packets)
    }

    /// `ConnThreshold::set_duration_threshold`: time since the connection's first packet.
    pub fn set_duration_threshold(&mut self, after: Duration) -> bool {
        self.set(ThresholdKind::Duration, duration_ns(after))
    }

    /// IP bytes of both sides together (our extension, for alert rules).
    pub fn set_total_bytes_threshold(&mut self, bytes: u64) -> bool {
        self.set(ThresholdKind::TotalBytes, bytes)
    }

    /// Packets of both sides together (our extension).
    pub fn set_total_packets_threshold(&mut self, packets: u64) -> bool {
        self.set(ThresholdKind::TotalPackets, packets)
    }

    /// `ConnThreshold::delete_bytes_threshold`: true if that threshold was set.
    pub fn delete_bytes_threshold(&mut self, bytes: u64, is_orig: bool) -> bool {
        self.delete(ThresholdKind::bytes(is_orig), bytes)
    }

    /// `ConnThreshold::delete_packets_threshold`.
    pub fn delete_packets_threshold(&mut self, packets: u64, is_orig: bool) -> bool {
        self.delete(ThresholdKind::packets(is_orig), packets)
    }

    /// `ConnThreshold::delete_duration_threshold`.
    pub fn delete_duration_threshold(&mut self, after: Duration) -> bool {
        self.delete(ThresholdKind::Duration, duration_ns(after))
    }

    pub fn delete_total_bytes_threshold(&mut self, bytes: u64) -> bool {
        self.delete(ThresholdKind::TotalBytes, bytes)
    }

    pub fn delete_total_packets_threshold(&mut self, packets: u64) -> bool {
        self.delete(ThresholdKind::TotalPackets, packets)
    }

    /// Content extraction (Zeek's `set_contents_file` for one direction): turns the extraction
    /// of the originator's (`is_orig`) or the responder's payload on or off from the next
    /// packet on; the payload reaches [`Capability::on_payload`]. False when the datapath no
    /// longer has the connection.
    pub fn set_extract(&mut self, is_orig: bool, on: bool) -> bool {
        let Some(c) = self.target.lookup(&self.info.key) else {
            return false;
        };
        let bit = contents_bits::extract_bit(is_orig);
        let now = c.thr_armed & contents_bits::EXTRACT_BITS;
        let want = if on { now | bit } else { now & !bit };
        if want == now {
            return true;
        }
        let cmd = ThresholdCommand {
            key: self.info.key,
            mask: contents_bits::CMD_SET_CONTENTS | want,
            now_ns: self.info.ts_ns,
            ..ThresholdCommand::default()
        };
        self.target.set_thresholds(&cmd).is_ok()
    }

    /// Whether the datapath extracts this direction now.
    pub fn extracting(&self, is_orig: bool) -> bool {
        self.target
            .lookup(&self.info.key)
            .is_some_and(|c| c.thr_armed & contents_bits::extract_bit(is_orig) != 0)
    }

    /// The datapath's content byte counters of this connection (delivered and not delivered
    /// per direction), if it extracted anything.
    pub fn content_counters(&self) -> Option<ContentCounters> {
        self.target.content_counters(&self.info.key)
    }

    /// What the datapath holds now for `kind` (0 = nothing armed): Zeek's
    /// `get_current_conn_*_threshold`.
    pub fn current_threshold(&self, kind: ThresholdKind) -> u64 {
        let s = kind.slot();
        match self.target.lookup(&self.info.key) {
            Some(c) if c.thr_armed & conntrack_common::threshold::bit(s) != 0 => c.thr[s],
            _ => 0,
        }
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The registered capabilities, the thresholds they set, and the event queue.
pub struct EventCore {
    caps: Vec<Box<dyn Capability>>,
    thresholds: Thresholds,
    /// Shared by a packet's events: each holds the same state, and a copy per event (a whole
    /// `Conn` and the uid's text) cost more than the capabilities' work.
    queue: VecDeque<(Rc<ConnInfo>, Pending)>,
    lifecycle: LifecycleRegistry,
    /// Some capability wants [`ConnEvent::StateChanged`].
    state_changes: bool,
    /// What each capability handles (by index in `caps`), and all of them together.
    masks: Vec<EventMask>,
    wanted: EventMask,
    /// Event states no longer referenced, to be filled again: an event then costs no
    /// allocation, and its connection is copied once, straight into place.
    spare: Vec<Rc<ConnInfo>>,
}

impl EventCore {
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            caps: Vec::new(),
            thresholds,
            queue: VecDeque::new(),
            lifecycle: LifecycleRegistry::default(),
            state_changes: false,
            masks: Vec::new(),
            wanted: EventMask::NONE,
            spare: Vec::new(),
        }
    }

    /// Adds a capability; it receives every later event of the kinds it handles.
    pub fn register(&mut self, cap: Box<dyn Capability>) {
        let mut mask = cap.events();
        if !cap.wants_state_changes() {
            mask = mask.without(EventMask::STATE_CHANGED);
        }
        self.state_changes |= mask.has(EventMask::STATE_CHANGED);
        self.wanted = self.wanted | mask;
        self.masks.push(mask);
        self.caps.push(cap);
    }

    /// Whether `events` (and a threshold crossing, when `crossed`) of connection `key` need
    /// delivering: some capability handles one of them, a crossing is to be matched against
    /// the thresholds set, or the connection has removal hooks and is removed (the hooks run).
    /// Delivering costs the caller the connection's state, most events need none of this.
    /// Events nobody handles of a connection with hooks only refresh the state its hooks get
    /// if the datapath loses it ([`Need::KeepState`]): building and queueing each of them (an
    /// `Established` per TCP connection when removal.log hooks every one) cost more than the
    /// hook itself. When they are not needed, what a `Removed` among them does without a
    /// listener is done here: the connection's thresholds are forgotten.
    // Inline: with service detection alone (payload only) every connection's events and
    // removal end at the first test.
    #[inline]
    pub fn needs(&mut self, key: &FlowKey, events: &[ConnEvent], crossed: bool) -> Need {
        if self.caps.is_empty() {
            return Need::Nothing;
        }
        // No capability takes connection events (service detection takes payload only) and
        // no connection has hooks: none is built, whatever the events (the thresholds, set
        // only through events' handles, are then empty).
        if !crossed
            && !self.wanted.has(EventMask::CONN_EVENTS)
            && self.lifecycle.hooks.len() == 0
            && self.thresholds.is_empty()
        {
            return Need::Nothing;
        }
        self.needs_of(key, events, crossed)
    }

    /// [`EventCore::needs`] when some capability or hook may want the events.
    #[inline(never)]
    fn needs_of(&mut self, key: &FlowKey, events: &[ConnEvent], crossed: bool) -> Need {
        if crossed || events.iter().any(|e| self.wanted.has(EventMask::of(e))) {
            return Need::Deliver;
        }
        let removed = events.iter().any(|e| matches!(e, ConnEvent::Removed(_)));
        if self.lifecycle.hooks.has(key) {
            return if removed {
                Need::Deliver
            } else {
                Need::KeepState
            };
        }
        if removed {
            self.thresholds.forget(key);
        }
        Need::Nothing
    }

    /// For [`Need::KeepState`]: connection `key`'s hooks keep its state as `fill` writes it
    /// (false: the datapath no longer has it, the state kept stays), as of `ts_ns`. What
    /// delivering its events would have done, without building them.
    pub fn keep_state(&mut self, key: &FlowKey, ts_ns: u64, fill: impl FnOnce(&mut Conn) -> bool) {
        self.lifecycle.hooks.refresh(key, ts_ns, fill);
    }

    /// Some capability asks [`Capability::connection_timing_out`].
    #[inline]
    pub fn handles_timing_out(&self) -> bool {
        self.wanted.has(EventMask::TIMING_OUT)
    }

    /// Some capability takes extracted payload ([`Capability::on_payload`]).
    #[inline]
    pub fn wants_payload(&self) -> bool {
        self.wanted.has(EventMask::PAYLOAD)
    }

    /// A capability asked for a connection's inactivity timeout since the last
    /// [`EventCore::take_inactivity_requests`].
    #[inline]
    pub fn has_inactivity_requests(&self) -> bool {
        !self.lifecycle.inactivity.is_empty()
    }

    /// Some capability wants [`ConnEvent::StateChanged`].
    pub fn wants_state_changes(&self) -> bool {
        self.state_changes
    }

    /// True when no capability is registered (none handles events or payload, none adds to
    /// conn.log): the agent then skips all of it. Which events get built depends on the
    /// capabilities' masks ([`EventCore::needs`]).
    #[inline]
    pub fn is_idle(&self) -> bool {
        self.caps.is_empty()
    }

    /// An event's state, filled in by `fill` (false: there is none, no event), for
    /// [`EventCore::deliver_shared`]. Reuses a spare one when there is.
    pub fn fill_info(&mut self, fill: impl FnOnce(&mut ConnInfo) -> bool) -> Option<Rc<ConnInfo>> {
        let mut info = self
            .spare
            .pop()
            .unwrap_or_else(|| Rc::new(ConnInfo::empty()));
        if Rc::get_mut(&mut info).is_none() {
            // Spares are unshared when kept, and not handed out since.
            info = Rc::new(ConnInfo::empty());
        }
        let filled = Rc::get_mut(&mut info).is_some_and(fill);
        if !filled {
            self.recycle(info);
            return None;
        }
        Some(info)
    }

    /// Keeps `info` for [`EventCore::fill_info`] if nothing else holds it.
    fn recycle(&mut self, info: Rc<ConnInfo>) {
        if Rc::strong_count(&info) == 1
            && Rc::weak_count(&info) == 0
            && self.spare.len() < SPARE_INFOS
        {
            self.spare.push(info);
        }
    }

    /// Queues `events` for one connection and delivers everything queued (the agent fills a
    /// reused state instead: [`EventCore::deliver_shared`]).
    #[cfg(test)]
    pub fn deliver(
        &mut self,
        target: &mut dyn ThresholdTarget,
        info: ConnInfo,
        events: &[ConnEvent],
        crossed: Option<RawCrossing>,
    ) {
        self.deliver_shared(target, Rc::new(info), events, crossed);
    }

    /// [`EventCore::deliver`] of a state from [`EventCore::fill_info`].
    pub fn deliver_shared(
        &mut self,
        target: &mut dyn ThresholdTarget,
        info: Rc<ConnInfo>,
        events: &[ConnEvent],
        crossed: Option<RawCrossing>,
    ) {
        if self.caps.is_empty() {
            return;
        }
        for ev in events {
            self.queue
                .push_back((Rc::clone(&info), Pending::Event(*ev)));
        }
        // As in Zeek, the packet's state events come before its threshold crossings.
        if let Some(raw) = crossed {
            self.queue.push_back((Rc::clone(&info), Pending::Raw(raw)));
        }
        drop(info);
        self.run(target);
    }

    /// Whether [`EventCore::advance`] at `now_ns` has anything to do: a duration timer or a
    /// poll due, or queued events. Inlined into the caller's per-packet path, which almost
    /// always finds nothing.
    #[inline]
    pub fn has_due(&self, now_ns: u64) -> bool {
        !self.caps.is_empty()
            && (self.thresholds.timer_due(now_ns)
                || self.lifecycle.polls.any_due(now_ns)
                || !self.queue.is_empty())
    }

    /// Fires due duration timers at `now_ns` (timer mode) and delivers their crossings.
    pub fn advance(
        &mut self,
        target: &mut dyn ThresholdTarget,
        now_ns: u64,
        uid: &dyn Fn(&FlowKey) -> Option<String>,
    ) {
        // This runs before every packet; almost always no timer or poll is due.
        if !self.has_due(now_ns) {
            return;
        }
        for (key, raw) in self.thresholds.due(target, now_ns) {
            let Some(conn) = target.lookup(&key) else {
                continue;
            };
            let info = ConnInfo {
                key,
                uid: EventUid::from_text(uid(&key).unwrap_or_default()),
                conn,
                ts_ns: now_ns,
            };
            self.queue.push_back((Rc::new(info), Pending::Raw(raw)));
        }
        self.run(target);
        self.run_polls(target, now_ns, uid, false);
    }

    /// Runs the polls due at `now_ns` (all pending ones when `all`: the end of input, as Zeek
    /// expires every scheduled event at termination) and what they cause. A poll whose
    /// connection is gone (or whose 5-tuple now holds another connection) ends silently.
    fn run_polls(
        &mut self,
        target: &mut dyn ThresholdTarget,
        now_ns: u64,
        uid: &dyn Fn(&FlowKey) -> Option<String>,
        all: bool,
    ) {
        let due = self.lifecycle.polls.take_due(now_ns, all);
        for mut poll in due {
            if uid(&poll.key).as_deref() != Some(poll.uid.as_str()) {
                continue;
            }
            let Some(conn) = target.lookup(&poll.key) else {
                continue;
            };
            let info = Rc::new(ConnInfo {
                key: poll.key,
                uid: EventUid::from_text(std::mem::take(&mut poll.uid)),
                conn,
                ts_ns: now_ns,
            });
            let mut handle = ConnHandle {
                info: &info,
                thresholds: &mut self.thresholds,
                target: &mut *target,
                queue: &mut self.queue,
                lifecycle: &mut self.lifecycle,
            };
            let next = (poll.callback)(&mut handle, poll.cnt);
            if let (Some(after), false) = (next, all) {
                poll.uid = info.uid.as_str().to_string();
                self.lifecycle.polls.again(poll, now_ns, after);
            }
            self.run(target);
        }
    }

    /// End of input or shutdown, before the drain: every pending poll runs once more while its
    /// connection still exists (Zeek runs scheduled events at termination); what it returns is
    /// ignored.
    pub fn finish_polls(
        &mut self,
        target: &mut dyn ThresholdTarget,
        now_ns: u64,
        uid: &dyn Fn(&FlowKey) -> Option<String>,
    ) {
        if self.caps.is_empty() {
            return;
        }
        self.run_polls(target, now_ns, uid, true);
    }

    /// Asks every capability whether the connection may be removed for inactivity (Zeek's
    /// `connection_timing_out`); true if one of them keeps it.
    pub fn keep_timing_out(&mut self, target: &mut dyn ThresholdTarget, info: ConnInfo) -> bool {
        let info = &Rc::new(info);
        let mut keep = false;
        for (cap, mask) in self.caps.iter_mut().zip(&self.masks) {
            if !mask.has(EventMask::TIMING_OUT) {
                continue;
            }
            let mut handle = ConnHandle {
                info,
                thresholds: &mut self.thresholds,
                target: &mut *target,
                queue: &mut self.queue,
                lifecycle: &mut self.lifecycle,
            };
            keep |= cap.connection_timing_out(&mut handle) == TimeoutVerdict::Keep;
        }
        self.run(target);
        keep
    }

    /// The datapath lost a connection: its removal hooks run with the last state seen (see
    /// [`RemovalReason::Evicted`]); the rest is forgotten.
    pub fn evicted(&mut self, target: &mut dyn ThresholdTarget, key: &FlowKey, now_ns: u64) {
        self.forget(key);
        if let Some((last, hooks)) = self.lifecycle.hooks.take(key) {
            let mut info = Rc::unwrap_or_clone(last);
            info.ts_ns = now_ns;
            self.run_hooks(target, &Rc::new(info), hooks, RemovalReason::Evicted);
            self.run(target);
        }
    }

    /// Per-connection inactivity timeouts the capabilities asked for, for the tracker.
    pub fn take_inactivity_requests(&mut self) -> Vec<(FlowKey, std::time::Duration)> {
        self.lifecycle.inactivity.take()
    }

    fn run_hooks(
        &mut self,
        target: &mut dyn ThresholdTarget,
        info: &Rc<ConnInfo>,
        hooks: crate::core::removal_hooks::Hooks,
        reason: RemovalReason,
    ) {
        let open = self.lifecycle.hooks.len();
        for hook in hooks {
            let mut handle = ConnHandle {
                info,
                thresholds: &mut self.thresholds,
                target: &mut *target,
                queue: &mut self.queue,
                lifecycle: &mut self.lifecycle,
            };
            hook.call(&mut handle, reason);
        }
        // A hook that registered another one on its removed connection must not leave it behind.
        // Its handle reaches no other connection's hooks, so only a grown map can hold one
        // (and the lookup is skipped for the connections whose hooks registered nothing).
        if self.lifecycle.hooks.len() > open {
            self.lifecycle.hooks.take(&info.key);
        }
    }

    /// Payload of an extracted connection, to every capability.
    pub fn payload(&mut self, target: &mut dyn ThresholdTarget, chunk: Content<'_>) {
        for (cap, mask) in self.caps.iter_mut().zip(&self.masks) {
            if mask.has(EventMask::PAYLOAD) {
                cap.on_payload(chunk, target);
            }
        }
    }

    /// conn.log's `service` of the connection `key`, logged now: every capability's names
    /// ([`Capability::conn_service`]) in registration order, each once. Empty (no allocation)
    /// when none confirmed a protocol.
    pub fn conn_service(
        &mut self,
        key: &FlowKey,
        conn: &Conn,
        stored: u32,
        out: &mut Vec<&'static str>,
    ) {
        out.clear();
        for cap in self.caps.iter_mut() {
            let start = out.len();
            cap.conn_service(key, conn, stored, out);
            if start == 0 {
                continue; // the first names: no earlier ones to repeat
            }
            // A name an earlier capability gave stays where it was.
            let mut i = start;
            while i < out.len() {
                if out[..i].contains(&out[i]) {
                    out.remove(i);
                } else {
                    i += 1;
                }
            }
        }
    }

    /// Connection `key` ends unlogged ([`Capability::forgotten_service`]), to every
    /// capability.
    // Cold: only when a connection leaves the datapath unseen or its removal event was lost.
    #[cold]
    pub fn forgotten_service(&mut self, key: &FlowKey, stored: u32) {
        for cap in self.caps.iter_mut() {
            cap.forgotten_service(key, stored);
        }
    }

    /// Handover: [`Capability::saved_service`] of the first capability that has one.
    pub fn saved_service(&self, key: &FlowKey, stored: u32) -> Option<String> {
        self.caps
            .iter()
            .find_map(|cap| cap.saved_service(key, stored))
    }

    /// Handover: [`Capability::restored_service`] of the first capability that reads `saved`
    /// (0, no word, if none does).
    pub fn restored_service(&mut self, proto: u8, saved: &str) -> u32 {
        self.caps
            .iter_mut()
            .find_map(|cap| cap.restored_service(proto, saved))
            .unwrap_or(0)
    }

    /// A connection vanished without a final state to report (the datapath lost it).
    pub fn forget(&mut self, key: &FlowKey) {
        self.thresholds.forget(key);
    }

    /// Switches how duration thresholds fire (see [`crate::core::thresholds::DurationMode`]).
    pub fn set_duration_mode(&mut self, mode: crate::core::thresholds::DurationMode) {
        self.thresholds.set_mode(mode);
    }

    fn run(&mut self, target: &mut dyn ThresholdTarget) {
        while let Some((info, pending)) = self.queue.pop_front() {
            match pending {
                Pending::Raw(raw) => {
                    let (crossings, again) = self
                        .thresholds
                        .on_crossed(target, &info.key, &raw, info.ts_ns);
                    for c in crossings {
                        let ev = Pending::Event(ConnEvent::ThresholdCrossed(c));
                        self.queue.push_back((Rc::clone(&info), ev));
                    }
                    for r in again {
                        self.queue.push_back((Rc::clone(&info), Pending::Raw(r)));
                    }
                }
                Pending::Event(ev) => {
                    // Connections with removal hooks keep their latest state for an eviction;
                    // not the removed state: the hooks are taken below and given this event's.
                    if !matches!(ev, ConnEvent::Removed(_))
                        && let Some(old) = self.lifecycle.hooks.saw(&info)
                    {
                        self.recycle(old);
                    }
                    let kind = EventMask::of(&ev);
                    for (cap, mask) in self.caps.iter_mut().zip(&self.masks) {
                        if !mask.has(kind) {
                            continue;
                        }
                        let mut handle = ConnHandle {
                            info: &info,
                            thresholds: &mut self.thresholds,
                            target: &mut *target,
                            queue: &mut self.queue,
                            lifecycle: &mut self.lifecycle,
                        };
                        cap.on_event(&mut handle, &ev);
                    }
                    if let ConnEvent::Removed(reason) = ev {
                        // After every capability's handler, as Zeek runs the hooks from
                        // connection_state_remove at a low priority.
                        if let Some((last, hooks)) = self.lifecycle.hooks.take(&info.key) {
                            self.run_hooks(target, &info, hooks, reason);
                            self.recycle(last);
                        }
                        self.thresholds.forget(&info.key);
                    }
                }
            }
            self.recycle(info);
        }
    }
}

#[cfg(test)]
mod tests;
