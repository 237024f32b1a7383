//! The first packet's link layer of each open connection, kept only while `--mac-logging` or
//! `--vlan-logging` is on: the datapath reports it once, in the connection's NewConn
//! (`Event::NewConnL2`), and conn.log takes it when the connection is logged. Without the
//! flags there is no table and no per-connection cost (the flow table's entry and the
//! tracker's slot do not carry it).

use crate::logs::l2_fields::L2Fields;
use crate::util::hashing::FastMap;
use conntrack_common::conn::Conn;
use conntrack_common::event::{ConnL2, ORIG_IS_A, orient};
use conntrack_common::key::FlowKey;
use conntrack_common::packet::l2::L2Info;

/// What a connection's first packet carried, and from which side of its key it came.
#[derive(Debug, Clone, Copy)]
struct First {
    l2: L2Info,
    /// The packet came from the key's `(addr_a, port_a)` side.
    from_a: bool,
}

/// Open connections' first link layers, by flow key.
#[derive(Default)]
pub struct LinkLayers {
    firsts: FastMap<FlowKey, First>,
}

impl LinkLayers {
    /// A connection was opened (a reuse replaces the key's earlier entry, which was logged
    /// first).
    pub fn opened(&mut self, ev: &ConnL2) {
        let first = First {
            l2: ev.l2,
            from_a: ev.change.from_a(),
        };
        self.firsts.insert(ev.change.key, first);
    }

    /// The columns' values for connection `c` (key `key`), being logged: its entry is dropped.
    /// Unset when its NewConn brought no link layer (e.g. a connection the kernel's full table
    /// handed to the agent, or one taken over from an earlier agent).
    pub fn take(&mut self, key: &FlowKey, c: &Conn) -> L2Fields {
        let Some(first) = self.firsts.remove(key) else {
            return L2Fields::default();
        };
        // The roles may have flipped since the first packet: the addresses follow the
        // endpoints.
        let orig_is_a = orient(key, c, false) & ORIG_IS_A != 0;
        L2Fields::of_first_packet(&first.l2, first.from_a == orig_is_a)
    }

    /// A connection left without being logged.
    pub fn forget(&mut self, key: &FlowKey) {
        self.firsts.remove(key);
    }
}
