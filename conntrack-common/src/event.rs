//! Events the flow engine reports (pushed to the `EVENTS` ring buffer by the eBPF program, or
//! collected in a `Vec` by the host datapath).
//!
//! The driver hands out an [`EventRef`] (references only, a few words on the stack) rather than
//! an [`Event`] (616 bytes, too large for the 512-byte eBPF stack); the eBPF glue writes it
//! straight into a ring-buffer reservation with [`EventRef::write_to`].

use crate::conn::Conn;
use crate::engine::Changes;
use crate::key::FlowKey;
use crate::packet::PacketMeta;

/// What happened.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A connection was created (snapshot after its first packet).
    NewConn = 1,
    /// A TCP endpoint state changed (snapshot after the packet).
    StateChanged = 2,
    /// TCP reuse: the old connection (snapshot before the packet) must be logged; a `NewConn`
    /// for the same key follows.
    ReuseRemoved = 3,
    /// The flow table was full; `meta` is the packet, there is no connection.
    TableFull = 4,
    /// Only thresholds crossed (snapshot after the packet); `changes` says which
    /// (`Changes::crossed`). NewConn and StateChanged events report crossings the same way.
    ThresholdCrossed = 5,
}

impl EventKind {
    /// Decodes `Event::kind`.
    pub fn from_u32(v: u32) -> Option<EventKind> {
        match v {
            1 => Some(EventKind::NewConn),
            2 => Some(EventKind::StateChanged),
            3 => Some(EventKind::ReuseRemoved),
            4 => Some(EventKind::TableFull),
            5 => Some(EventKind::ThresholdCrossed),
            _ => None,
        }
    }
}

/// An event as stored in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// [`EventKind`] as u32.
    pub kind: u32,
    /// [`Changes`] bits of the packet that caused the event.
    pub changes: u32,
    /// Packet time (ns).
    pub ts_ns: u64,
    /// Flow key.
    pub key: FlowKey,
    /// The packet that caused the event.
    pub meta: PacketMeta,
    /// Connection snapshot (all zero for `TableFull`).
    pub conn: Conn,
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
    /// Connection snapshot, `None` for `TableFull`.
    pub conn: Option<&'a Conn>,
}

impl EventRef<'_> {
    /// Fills `out` (e.g. a ring-buffer reservation) in place.
    #[inline(always)]
    pub fn write_to(&self, out: &mut Event) {
        out.kind = self.kind as u32;
        out.changes = self.changes.0;
        out.ts_ns = self.ts_ns;
        out.key = *self.key;
        out.meta = *self.meta;
        match self.conn {
            Some(c) => out.conn = *c,
            None => out.conn = Conn::ZERO,
        }
    }

    /// An owned copy (host use).
    pub fn to_event(&self) -> Event {
        let mut e = Event {
            kind: 0,
            changes: 0,
            ts_ns: 0,
            key: FlowKey::default(),
            meta: PacketMeta::default(),
            conn: Conn::ZERO,
        };
        self.write_to(&mut e);
        e
    }
}

impl Event {
    /// The decoded kind.
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::from_u32(self.kind)
    }

    /// The threshold slots that crossed on this packet (`threshold::bit` values), 0 if none.
    pub fn crossed(&self) -> u32 {
        Changes(self.changes).crossed()
    }
}
