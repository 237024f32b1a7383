//! UDP connections' detection state: a few bits per side ([`detect::SideMarks`]), not bytes.
//! Every UDP rule reads one datagram at a time, so each datagram is judged as it comes
//! ([`detect::marks`]), and what a connection needs fits in 32 bits ([`Word`]): it is kept in
//! the connection's record (`ThresholdTarget::service_mut`), as Zeek keeps `service`
//! in the connection record, and comes back when the connection is logged. A table of our
//! own holds it only for a connection the tracker does not know yet (live, a sample may be
//! read before its connection's event), until the tracker does.
//!
//! A connection gets state only once a datagram marks something (a QUIC Initial, a DNS
//! message on a DNS port), unless a rule reads its first datagram
//! ([`detect::position_matters`]): UDP traffic no analyzer recognises costs no state at all.
//! Once a datagram marked DNS only a QUIC Initial can change the names
//! ([`detect::only_quic_can_change`]): the datapath is asked to hand over only datagrams
//! that may be one (the host engine does; the kernel's keep coming and change nothing), so a
//! DNS exchange is read once, at its first datagram.

use super::detect::{self, SideMarks, Transport};
use super::early::Early;
use crate::core::thresholds::ThresholdTarget;
use crate::datapath::Content;
use conntrack_common::contents::{CONTENT_FROM_A, CONTENT_FROM_ORIG};
use conntrack_common::key::FlowKey;

/// Names as [`detect::udp_names`] gives them.
type Names = &'static [&'static str];

/// A UDP connection's detection state as its record keeps it. 0 is no state; else bits 0-13
/// and 14-27 are the key's `a` and `b` sides ([`SideMarks::pack`]), then the flags below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Word(u32);

impl Word {
    /// Not 0: a word with state.
    const PRESENT: u32 = 1 << 31;
    /// Final (a QUIC Initial at the first exchange): later samples change nothing, and the
    /// names are those of the roles as they were then. Otherwise the names are read when
    /// the connection is logged, with its roles of then: the samples a datapath hands over
    /// are then all in, whichever it narrowed ([`detect::only_quic_can_change`]).
    const DECIDED: u32 = 1 << 30;
    /// Both sides have sent (the first exchange was looked at).
    const EXCHANGED: u32 = 1 << 29;
    /// The key's `a` side is the originator (as of the latest sample).
    const A_IS_ORIG: u32 = 1 << 28;
    const SIDE_MASK: u32 = (1 << SideMarks::PACKED_BITS) - 1;

    fn has(self, flag: u32) -> bool {
        self.0 & flag != 0
    }

    fn set(&mut self, flag: u32, on: bool) {
        if on {
            self.0 |= flag;
        } else {
            self.0 &= !flag;
        }
    }

    /// Side `i` of the key (0 is `addr_a`/`port_a`).
    fn side(self, i: usize) -> SideMarks {
        SideMarks::unpack((self.0 >> (i as u32 * SideMarks::PACKED_BITS)) & Self::SIDE_MASK)
    }

    fn set_side(&mut self, i: usize, side: SideMarks) {
        let shift = i as u32 * SideMarks::PACKED_BITS;
        self.0 = (self.0 & !(Self::SIDE_MASK << shift)) | (side.pack() << shift);
    }

    /// The names, with the key's `a` side as originator when `a_is_orig`.
    fn names(self, a_is_orig: bool) -> Names {
        let (a, b) = (self.side(0), self.side(1));
        if a_is_orig {
            detect::udp_names(&a, &b)
        } else {
            detect::udp_names(&b, &a)
        }
    }

    /// Only a QUIC Initial can change the names ([`detect::only_quic_can_change`]).
    fn only_quic_can_change(self) -> bool {
        detect::only_quic_can_change(&self.side(0), &self.side(1))
    }

    /// A datagram with `marks` from the key's `a` side if `from_a`, the originator if
    /// `from_orig`: what the datapath can do with the connection's sampling now.
    fn push(&mut self, from_a: bool, from_orig: bool, marks: detect::Marks) -> Sampling {
        if self.has(Self::DECIDED) {
            return Sampling::AsIs; // later samples change nothing
        }
        let narrow_before = self.only_quic_can_change();
        self.0 |= Self::PRESENT;
        let a_is_orig = from_a == from_orig;
        self.set(Self::A_IS_ORIG, a_is_orig);
        let i = usize::from(!from_a);
        let mut side = self.side(i);
        side.push(marks);
        self.set_side(i, side);
        let narrow = self.only_quic_can_change();
        if !self.has(Self::EXCHANGED) && self.side(0).count() > 0 && self.side(1).count() > 0 {
            self.0 |= Self::EXCHANGED;
            // Not once narrowed: the exchange may be one the datapath kept back, and the
            // names are read at logging time whichever datagrams came.
            if !narrow && detect::is_final(Transport::Udp, self.names(a_is_orig)) {
                self.0 |= Self::DECIDED;
                return Sampling::Stop;
            }
        }
        if narrow && !narrow_before {
            Sampling::QuicOnly
        } else {
            Sampling::AsIs
        }
    }

    /// [`Word::push`] on the word a record (or the table) keeps.
    fn push_into(word: &mut u32, from_a: bool, from_orig: bool, marks: detect::Marks) -> Sampling {
        let mut w = Word(*word);
        let then = w.push(from_a, from_orig, marks);
        *word = w.0;
        then
    }

    /// The names logged now with the key's `a` side as originator when `a_is_orig` (the
    /// roles as Zeek logs them: a flip after the last sample changes which side is the
    /// originator), unless decided with the roles of then.
    fn logged(self, a_is_orig: impl FnOnce() -> bool) -> Names {
        if self.0 == 0 {
            return &[];
        }
        if self.has(Self::DECIDED) {
            self.names(self.has(Self::A_IS_ORIG))
        } else {
            self.names(a_is_orig())
        }
    }
}

/// What a UDP sample asks of the datapath's sampling of its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sampling {
    /// Nothing: samples as before.
    AsIs,
    /// The answer is final: no more samples (`ThresholdTarget::stop_sampling`).
    Stop,
    /// Only a QUIC Initial can change the answer now: only samples that may be one
    /// (`ThresholdTarget::narrow_sampling`).
    QuicOnly,
}

/// The UDP connections whose state is not in a tracker record (yet).
#[derive(Default)]
pub struct UdpConns {
    unrecorded: Early,
}

impl UdpConns {
    /// A sample: its marks into the connection's state, the names decided at the first
    /// exchange when final (a QUIC Initial; sampling stops) and once the samples are
    /// complete.
    pub fn on_sample(&mut self, chunk: Content<'_>, dp: &mut dyn ThresholdTarget) {
        let key = chunk.hdr.key;
        let from_a = chunk.hdr.flags & CONTENT_FROM_A != 0;
        let from_orig = chunk.hdr.flags & CONTENT_FROM_ORIG != 0;
        let ports = (key.port_a, key.port_b);
        let marks = detect::marks(ports, chunk.data, from_orig);
        // A connection needs state only from a datagram that marks something on (without, it
        // has no service, which is what detection says of it), except where the first
        // datagram's place matters: then from its first.
        let needed = !marks.is_empty() || detect::position_matters(ports);
        let then = if let Some(word) = dp.service_mut(&key) {
            if !self.unrecorded.is_empty()
                && let Some(early) = self.unrecorded.remove(&key)
                && *word == 0
            {
                *word = early; // begun before the tracker knew the connection
            }
            if *word == 0 && !needed {
                return;
            }
            Word::push_into(word, from_a, from_orig, marks)
        } else {
            let mut word = match self.unrecorded.get(&key) {
                Some(word) => word,
                None if !needed => return,
                None => 0,
            };
            let then = Word::push_into(&mut word, from_a, from_orig, marks);
            // A UDP word holds all its state: a stale one dropped frees nothing else.
            self.unrecorded.set(key, word, chunk.hdr.ts_ns, |_| {});
            then
        };
        match then {
            Sampling::AsIs => {}
            Sampling::Stop => {
                dp.stop_sampling(&key);
            }
            Sampling::QuicOnly => {
                dp.narrow_sampling(&key);
            }
        }
    }

    /// The names of connection `key`, logged now, whose record kept `stored` (0: nothing);
    /// `a_is_orig`: whether its key's `a` side is the originator now.
    pub fn take_names(
        &mut self,
        key: &FlowKey,
        stored: u32,
        a_is_orig: impl FnOnce() -> bool,
    ) -> Names {
        let mut word = Word(stored);
        if !self.unrecorded.is_empty()
            && let Some(early) = self.unrecorded.remove(key)
            && stored == 0
        {
            word = Word(early);
        }
        word.logged(a_is_orig)
    }

    /// Connection `key` ends unlogged: its word kept here, if any, goes.
    pub fn forget(&mut self, key: &FlowKey) {
        if !self.unrecorded.is_empty() {
            self.unrecorded.remove(key);
        }
    }

    /// The word of connection `key` kept here, not in a record (0: none).
    pub fn early_word(&self, key: &FlowKey) -> u32 {
        self.unrecorded.get(key).unwrap_or(0)
    }

    /// Connections whose state is not in a tracker record.
    #[cfg(test)]
    pub fn unrecorded(&self) -> usize {
        self.unrecorded.len()
    }

    /// Whether connection `key`'s samples are still awaited (of those not in a record).
    #[cfg(test)]
    pub fn is_pending(&self, key: &FlowKey) -> bool {
        self.unrecorded
            .get(key)
            .is_some_and(|w| !Word(w).has(Word::DECIDED))
    }
}
