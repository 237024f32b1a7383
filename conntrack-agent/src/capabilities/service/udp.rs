//! UDP connections' detection state: a few bits per side ([`detect::SideMarks`]), not bytes.
//! Every UDP rule reads one datagram at a time, so each datagram is judged as it comes
//! ([`detect::marks`]). A connection gets an entry only once a datagram marks something (a
//! QUIC Initial, a DNS message on a DNS port), unless a rule reads its first datagram
//! ([`detect::position_matters`]): UDP traffic no analyzer recognises costs no entry at all.

use super::detect::{self, SideMarks, Transport};
use crate::core::thresholds::ThresholdTarget;
use crate::datapath::ContentChunk;
use crate::util::hashing::FastMap;
use conntrack_common::contents::{CONTENT_FROM_A, CONTENT_FROM_ORIG, SAMPLE_PACKETS};
use conntrack_common::key::FlowKey;
use std::collections::hash_map::Entry;

/// Names as [`detect::udp_names`] gives them.
type Names = &'static [&'static str];

/// A connection whose samples are still coming: what each side's datagrams can confirm.
#[derive(Debug, Default, Clone, Copy)]
struct Pending {
    /// Per side of the key: 0 is `addr_a`/`port_a`, 1 the other (the roles may flip; the
    /// key's sides do not).
    sides: [SideMarks; 2],
    /// The key's `a` side is the originator (as of the latest sample).
    a_is_orig: bool,
    /// Both sides have sent (the first exchange was looked at).
    exchanged: bool,
}

impl Pending {
    /// The names, with the key's `a` side as originator when `a_is_orig`.
    fn names(&self, a_is_orig: bool) -> Names {
        let [a, b] = &self.sides;
        if a_is_orig {
            detect::udp_names(a, b)
        } else {
            detect::udp_names(b, a)
        }
    }
}

/// What is kept of a connection between its first sample that matters and its record.
#[derive(Debug, Clone, Copy)]
enum State {
    Pending(Pending),
    /// Final (a QUIC Initial), or the samples were complete: only the names are kept.
    Decided(Names),
}

/// The UDP connections with detection state.
#[derive(Default)]
pub struct UdpConns {
    conns: FastMap<FlowKey, State>,
}

impl UdpConns {
    /// A sample: its marks into the connection's, the names decided at the first exchange
    /// when final (a QUIC Initial) and once the samples are complete.
    pub fn on_sample(&mut self, chunk: &ContentChunk, dp: &mut dyn ThresholdTarget) {
        let key = chunk.hdr.key;
        let from_a = chunk.hdr.flags & CONTENT_FROM_A != 0;
        let from_orig = chunk.hdr.flags & CONTENT_FROM_ORIG != 0;
        let ports = (key.port_a, key.port_b);
        let marks = detect::marks(ports, &chunk.data);
        // A connection needs an entry only from a datagram that marks something on (absent,
        // it has no service, which is what detection says of it), except where the first
        // datagram's place matters: then from its first.
        let mut entry = if marks.is_empty() && !detect::position_matters(ports) {
            if self.conns.is_empty() {
                return; // nothing to look up
            }
            match self.conns.entry(key) {
                Entry::Occupied(e) => e,
                Entry::Vacant(_) => return,
            }
        } else {
            match self.conns.entry(key) {
                Entry::Occupied(e) => e,
                Entry::Vacant(e) => e.insert_entry(State::Pending(Pending::default())),
            }
        };
        let State::Pending(p) = entry.get_mut() else {
            return; // decided: later samples change nothing
        };
        p.a_is_orig = from_a == from_orig;
        p.sides[usize::from(!from_a)].push(marks);
        if !p.exchanged && p.sides.iter().all(|s| s.count() > 0) {
            p.exchanged = true;
            let names = p.names(p.a_is_orig);
            if detect::is_final(Transport::Udp, names) {
                entry.insert(State::Decided(names));
                dp.stop_sampling(&key);
                return;
            }
        }
        if p.sides.iter().all(|s| s.count() >= SAMPLE_PACKETS as usize) {
            let names = p.names(p.a_is_orig);
            if names.is_empty() {
                // Both budgets are spent: no sample comes after this one.
                entry.remove();
            } else {
                entry.insert(State::Decided(names));
            }
        }
    }

    /// The names of connection `key`, logged now with its key's `a` side as originator when
    /// `a_is_orig` (the roles as Zeek logs them: a flip after the last sample changes which
    /// side is the originator); its state is dropped.
    pub fn take_names(&mut self, key: &FlowKey, a_is_orig: impl FnOnce() -> bool) -> Names {
        if self.conns.is_empty() {
            return &[];
        }
        match self.conns.remove(key) {
            Some(State::Decided(names)) => names,
            Some(State::Pending(p)) => p.names(a_is_orig()),
            None => &[],
        }
    }

    /// Connections with state.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether connection `key`'s samples are still awaited.
    #[cfg(test)]
    pub fn is_pending(&self, key: &FlowKey) -> bool {
        matches!(self.conns.get(key), Some(State::Pending(_)))
    }
}
