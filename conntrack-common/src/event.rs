//! Events the flow engine reports (pushed to the `EVENTS` ring buffer by the eBPF program, or
//! collected in a `Vec` by the host datapath).
//!
//! An event carries what changed, not a copy of the connection: the agent reads the flow table
//! when it needs the whole state (removal, polling, capabilities). Three record layouts share
//! the ring buffer:
//! - [`ConnChange`] (72 bytes): a connection was created or changed a TCP state; the fields
//!   Zeek's timers need;
//! - [`Snapshot`]: a `ConnChange` followed by the whole connection, for the two rare events
//!   whose state cannot be read from the table later: a TCP reuse (the old connection left the
//!   table; the agent logs this copy) and a threshold crossing (alerts report the counters at
//!   the crossing, not some packets later). In the same ring, so that they stay in order;
//! - [`TableFull`] (96 bytes): the packet that found the table full (the agent tracks it);
//! - [`ConnL2`] (88 bytes): a NewConn's `ConnChange` followed by the first packet's link-layer
//!   fields ([`L2Info`]), only when the agent logs Zeek's MAC or VLAN policy fields (nothing is
//!   kept per connection for them in the flow table).
//!
//! The driver hands out an [`EventRef`] (references only, a few words on the stack); the eBPF
//! glue writes the matching record straight into a ring-buffer reservation.

use crate::conn::Conn;
use crate::engine::Changes;
use crate::key::FlowKey;
use crate::packet::PacketMeta;
use crate::packet::l2::L2Info;

/// What happened.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A connection was created (after its first packet).
    NewConn = 1,
    /// A TCP endpoint state changed.
    StateChanged = 2,
    /// TCP reuse: the old connection (as it was before the packet) must be logged; a `NewConn`
    /// for the same key follows.
    ReuseRemoved = 3,
    /// The flow table was full; the record is the packet, there is no connection.
    TableFull = 4,
    /// Only thresholds crossed; `changes` says which (`Changes::crossed`). NewConn and
    /// StateChanged events report crossings the same way.
    ThresholdCrossed = 5,
    /// A connection inside a tunnel was created, or changed tunnel (Zeek's tunnel-change rule
    /// reported it): [`EncapEvent`] names the enclosing tunnel (kernel decapsulation).
    Encap = 6,
}

impl EventKind {
    /// Decodes the first word of a record.
    pub fn from_u32(v: u32) -> Option<EventKind> {
        match v {
            1 => Some(EventKind::NewConn),
            2 => Some(EventKind::StateChanged),
            3 => Some(EventKind::ReuseRemoved),
            4 => Some(EventKind::TableFull),
            5 => Some(EventKind::ThresholdCrossed),
            6 => Some(EventKind::Encap),
            _ => None,
        }
    }
}

/// `ConnChange::orient`: the originator is the key's `(addr_a, port_a)` side.
pub const ORIG_IS_A: u8 = 1;
/// `ConnChange::orient`: the packet came from the originator.
pub const FROM_ORIG: u8 = 2;
/// `ConnChange::orient`: the record is a [`Snapshot`] (the connection follows).
pub const HAS_CONN: u8 = 4;
/// `ConnChange::orient`: the record is a [`ConnL2`] (the first packet's link layer follows).
pub const HAS_L2: u8 = 8;

/// A connection's change (NewConn, StateChanged, ThresholdCrossed) as stored in the ring
/// buffer: 72 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnChange {
    /// [`EventKind`] as u32.
    pub kind: u32,
    /// [`Changes`] bits of the packet.
    pub changes: u32,
    /// Packet time (ns).
    pub ts_ns: u64,
    /// Flow key.
    pub key: FlowKey,
    /// The connection's `last_ns` after the packet.
    pub last_ns: u64,
    /// The connection's `CONN_*` flags after the packet.
    pub flags: u16,
    /// The originator's TCP endpoint state (any protocol: the raw `Endpoint::state`).
    pub orig_state: u8,
    /// The responder's.
    pub resp_state: u8,
    /// [`ORIG_IS_A`] | [`FROM_ORIG`] | [`HAS_CONN`].
    pub orient: u8,
    /// Explicit padding, always zero (two fields: see `FlowKey::_pad0`).
    pub _pad0: u8,
    /// Explicit padding, always zero.
    pub _pad1: u16,
}

/// A change with the whole connection (a reuse's old connection, or the connection right
/// after a packet that crossed thresholds), as stored in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The change; `orient` has [`HAS_CONN`].
    pub change: ConnChange,
    /// The connection.
    pub conn: Conn,
}

/// A NewConn with the link-layer fields of the connection's first packet, as stored in the ring
/// buffer (88 bytes): sent instead of the plain [`ConnChange`] when the agent asked for them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnL2 {
    /// The change; `orient` has [`HAS_L2`].
    pub change: ConnChange,
    /// The first packet's addresses and VLAN ids.
    pub l2: L2Info,
}

/// [`EncapEvent::flags`]: the packet created the connection.
pub const ENCAP_NEW: u32 = 1;
/// [`EncapEvent::flags`]: the packet changed the connection's tunnel (a reported change).
pub const ENCAP_CHANGED: u32 = 2;
/// [`EncapEvent::flags`]: the tunnel type (`tunnel::TunnelType as u8`) is in bits 8..16.
pub const ENCAP_TYPE_SHIFT: u32 = 8;

/// A connection's enclosing tunnel, for its `tunnel_parents` (96 bytes), sent after the
/// connection's own event by the packet that created it inside a tunnel or changed its tunnel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncapEvent {
    /// `EventKind::Encap` as u32.
    pub kind: u32,
    /// [`ENCAP_NEW`] | [`ENCAP_CHANGED`] | the tunnel type << [`ENCAP_TYPE_SHIFT`].
    pub flags: u32,
    /// Packet time (ns).
    pub ts_ns: u64,
    /// The (inner) connection.
    pub key: FlowKey,
    /// The tunnel: a UDP tunnel's outer connection key; for an IP tunnel (GRE, IP-in-IP, GRE
    /// over UDP) the outer packet's source in `addr_a`, destination in `addr_b`, ports 0.
    pub parent: FlowKey,
}

/// The packet that found the flow table full, as stored in the ring buffer: 96 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFull {
    /// `EventKind::TableFull` as u32.
    pub kind: u32,
    /// `Changes::TABLE_FULL`, with `Changes::BAD_CHECKSUM` for a bad transport checksum.
    pub changes: u32,
    /// Packet time (ns).
    pub ts_ns: u64,
    /// The packet.
    pub meta: PacketMeta,
}

/// One event, decoded (host side). A snapshot is the large one (512 bytes) and rare: boxed, it
/// keeps every event at the size of a [`TableFull`], which the host moves into and out of a
/// reused `Vec` for every packet that raises one.
#[cfg(any(test, feature = "user"))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// NewConn or StateChanged without a crossing.
    Conn(ConnChange),
    /// ReuseRemoved (the old connection), or a change that crossed thresholds.
    Snapshot(alloc::boxed::Box<Snapshot>),
    /// TableFull.
    TableFull(TableFull),
    /// NewConn with the first packet's link-layer fields (MAC or VLAN logging on).
    NewConnL2(ConnL2),
    /// A connection's enclosing tunnel (kernel decapsulation).
    Encap(EncapEvent),
}

#[cfg(any(test, feature = "user"))]
const _: () = assert!(size_of::<Event>() <= size_of::<TableFull>() + 8);

/// True if the event of `kind` with `changes` carries the connection ([`Snapshot`]).
#[inline(always)]
pub fn needs_snapshot(kind: EventKind, changes: Changes) -> bool {
    kind == EventKind::ReuseRemoved || changes.crossed() != 0
}

impl ConnChange {
    /// The record for `conn` (with `key`) after a packet from the originator or not.
    #[inline(always)]
    pub fn of(
        kind: EventKind,
        changes: Changes,
        ts_ns: u64,
        key: &FlowKey,
        conn: &Conn,
        from_orig: bool,
    ) -> ConnChange {
        ConnChange {
            kind: kind as u32,
            changes: changes.0,
            ts_ns,
            key: *key,
            last_ns: conn.last_ns,
            flags: conn.flags,
            orig_state: conn.orig.state,
            resp_state: conn.resp.state,
            orient: orient(key, conn, from_orig),
            _pad0: 0,
            _pad1: 0,
        }
    }

    /// The decoded kind.
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::from_u32(self.kind)
    }

    /// The threshold slots that crossed on this packet (`threshold::bit` values), 0 if none.
    pub fn crossed(&self) -> u32 {
        Changes(self.changes).crossed()
    }

    /// True if the connection has any flag of `mask` (`CONN_*`), as `Conn::has_flag`.
    pub fn has_flag(&self, mask: u16) -> bool {
        self.flags & mask != 0
    }

    /// True if the packet came from the originator.
    pub fn from_orig(&self) -> bool {
        self.orient & FROM_ORIG != 0
    }

    /// True if the packet came from the key's `(addr_a, port_a)` side.
    pub fn from_a(&self) -> bool {
        (self.orient & ORIG_IS_A != 0) == self.from_orig()
    }

    /// The originator's address and port, and the responder's port (from the key).
    pub fn orig_side(&self) -> ([u8; 16], u16, u16) {
        let k = &self.key;
        if self.orient & ORIG_IS_A != 0 {
            (k.addr_a, k.port_a, k.port_b)
        } else {
            (k.addr_b, k.port_b, k.port_a)
        }
    }
}

/// [`ConnChange::orient`] of `conn` under `key`.
#[inline(always)]
pub fn orient(key: &FlowKey, conn: &Conn, from_orig: bool) -> u8 {
    let a = crate::engine::addr_eq(&conn.orig_addr, &key.addr_a) && conn.orig_port == key.port_a;
    (a as u8) | if from_orig { FROM_ORIG } else { 0 }
}

/// An event by reference, as given to the `emit` callback of [`crate::engine::process_packet`].
#[derive(Clone, Copy, Debug)]
pub struct EventRef<'a> {
    /// What happened.
    pub kind: EventKind,
    /// Changes of the packet.
    pub changes: Changes,
    /// Packet time (ns).
    pub ts_ns: u64,
    /// Flow key.
    pub key: &'a FlowKey,
    /// The packet.
    pub meta: &'a PacketMeta,
    /// The connection (for ReuseRemoved the old one), `None` for `TableFull`.
    pub conn: Option<&'a Conn>,
}

#[cfg(any(test, feature = "user"))]
impl EventRef<'_> {
    /// The decoded event (host use; the eBPF glue writes the records itself).
    pub fn to_event(&self) -> Event {
        let Some(c) = self.conn.filter(|_| self.kind != EventKind::TableFull) else {
            return Event::TableFull(TableFull {
                kind: EventKind::TableFull as u32,
                changes: self.changes.0,
                ts_ns: self.ts_ns,
                meta: *self.meta,
            });
        };
        let from_orig = crate::engine::is_orig(c, self.meta);
        let mut change =
            ConnChange::of(self.kind, self.changes, self.ts_ns, self.key, c, from_orig);
        if needs_snapshot(self.kind, self.changes) {
            change.orient |= HAS_CONN;
            Event::Snapshot(alloc::boxed::Box::new(Snapshot { change, conn: *c }))
        } else {
            Event::Conn(change)
        }
    }
}

#[cfg(any(test, feature = "user"))]
impl Event {
    /// The connection's change (`None` for TableFull).
    pub fn change(&self) -> Option<&ConnChange> {
        match self {
            Event::Conn(c) => Some(c),
            Event::Snapshot(s) => Some(&s.change),
            Event::NewConnL2(l) => Some(&l.change),
            Event::TableFull(_) | Event::Encap(_) => None,
        }
    }

    /// Adds the link-layer fields `l2` of the packet that caused the event, if it is a NewConn
    /// that can carry them (a plain change: a NewConn never crosses a threshold).
    pub fn attach_l2(&mut self, l2: &L2Info) {
        if let Event::Conn(change) = self
            && change.kind() == Some(EventKind::NewConn)
        {
            let mut change = *change;
            change.orient |= HAS_L2;
            *self = Event::NewConnL2(ConnL2 { change, l2: *l2 });
        }
    }

    /// The decoded kind.
    pub fn kind(&self) -> Option<EventKind> {
        match self {
            Event::TableFull(_) => Some(EventKind::TableFull),
            Event::Encap(_) => Some(EventKind::Encap),
            _ => self.change()?.kind(),
        }
    }

    /// Packet time (ns).
    pub fn ts_ns(&self) -> u64 {
        match self {
            Event::TableFull(t) => t.ts_ns,
            Event::Encap(e) => e.ts_ns,
            _ => self.change().map_or(0, |c| c.ts_ns),
        }
    }

    /// The packet's [`Changes`] bits.
    pub fn changes(&self) -> Changes {
        Changes(match self {
            Event::TableFull(t) => t.changes,
            _ => self.change().map_or(0, |c| c.changes),
        })
    }

    /// The threshold slots that crossed on this packet (`threshold::bit` values), 0 if none.
    pub fn crossed(&self) -> u32 {
        self.changes().crossed()
    }

    /// The connection's key.
    pub fn key(&self) -> FlowKey {
        match self {
            Event::TableFull(t) => FlowKey::from_meta(&t.meta),
            Event::Encap(e) => e.key,
            _ => self.change().map_or_else(FlowKey::default, |c| c.key),
        }
    }

    /// The connection the event carries ([`Snapshot`]s only).
    pub fn conn(&self) -> Option<&Conn> {
        match self {
            Event::Snapshot(s) => Some(&s.conn),
            _ => None,
        }
    }

    /// Decodes one ring-buffer record; `None` for an unknown kind or a short record.
    #[cfg(any(test, feature = "user"))]
    pub fn decode(bytes: &[u8]) -> Option<Event> {
        fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
            if bytes.len() < size_of::<T>() {
                return None;
            }
            // SAFETY: long enough; the records are integers only (any bit pattern is valid);
            // the read is unaligned-safe.
            Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
        }
        let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
        match EventKind::from_u32(kind)? {
            EventKind::TableFull => read(bytes).map(Event::TableFull),
            EventKind::Encap => read(bytes).map(Event::Encap),
            _ => {
                let change: ConnChange = read(bytes)?;
                if change.orient & HAS_CONN != 0 {
                    read(bytes).map(|s| Event::Snapshot(alloc::boxed::Box::new(s)))
                } else if change.orient & HAS_L2 != 0 {
                    read(bytes).map(Event::NewConnL2)
                } else {
                    Some(Event::Conn(change))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::l2::L2Info;

    fn change(kind: EventKind) -> ConnChange {
        ConnChange {
            kind: kind as u32,
            changes: 0,
            ts_ns: 7,
            key: FlowKey::default(),
            last_ns: 7,
            flags: 0,
            orig_state: 0,
            resp_state: 0,
            orient: ORIG_IS_A | FROM_ORIG,
            _pad0: 0,
            _pad1: 0,
        }
    }

    fn bytes<T>(v: &T) -> &[u8] {
        // SAFETY: plain integer records.
        unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
    }

    #[test]
    fn encap_events_decode_whole() {
        let e = EncapEvent {
            kind: EventKind::Encap as u32,
            flags: ENCAP_NEW | (6 << ENCAP_TYPE_SHIFT),
            ts_ns: 9,
            key: FlowKey::default(),
            parent: FlowKey {
                port_b: 4789,
                proto: 17,
                ..FlowKey::default()
            },
        };
        assert_eq!(size_of::<EncapEvent>(), 96);
        let ev = Event::decode(bytes(&e)).unwrap();
        assert_eq!(ev, Event::Encap(e));
        assert_eq!((ev.kind(), ev.ts_ns()), (Some(EventKind::Encap), 9));
        // A short record is refused, not read past its end.
        assert_eq!(Event::decode(&bytes(&e)[..95]), None);
    }

    #[test]
    fn new_conn_carries_link_layer_only_when_attached() {
        let l2 = L2Info {
            src: [1, 2, 3, 4, 5, 6],
            dst: [7, 8, 9, 10, 11, 12],
            vlan: 10,
            inner_vlan: 20,
        };
        let mut ev = Event::Conn(change(EventKind::NewConn));
        ev.attach_l2(&l2);
        let Event::NewConnL2(rec) = ev.clone() else {
            panic!("{ev:?}");
        };
        assert_eq!(rec.l2, l2);
        assert!(rec.change.from_a());
        // The ring buffer's record decodes to the same event.
        assert_eq!(Event::decode(bytes(&rec)), Some(ev));
        assert_eq!(size_of::<ConnL2>(), 88);
        // Other kinds stay as they are.
        let mut other = Event::Conn(change(EventKind::StateChanged));
        other.attach_l2(&l2);
        assert!(matches!(other, Event::Conn(_)));
    }
}
