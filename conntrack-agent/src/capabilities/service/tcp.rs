//! A TCP connection's detection state in 32 bits ([`Word`]), kept in its record (as
//! Zeek keeps `service` in the connection record) and handed back when it is logged: its
//! decided names as an interned set, or, while its samples are still coming, the number of
//! the slot that holds them ([`Slots`]). No table of connections is kept beside the
//! datapath's and the tracker's, so a sample costs the one lookup of its record, and the record's word is all a
//! decided connection costs.

use super::Pending;
use super::sets::SetId;

/// At most this many cleared [`Pending`] states are kept for the next connections.
const POOL: usize = 64;

/// What a TCP connection's word says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Word {
    /// No sample yet (a word of 0).
    Empty,
    /// Samples are still coming: they are in slot `n` of [`Slots`].
    Pending(u32),
    /// Decided: no service. Later samples (the kernel's, until their budget ends) change
    /// nothing.
    Nothing,
    /// Decided: these names.
    Names(SetId),
}

impl Word {
    const PENDING: u32 = 1 << 31;
    const NOTHING: u32 = 1 << 30;

    /// The word a record stored.
    pub fn from_stored(w: u32) -> Self {
        if w == 0 {
            Self::Empty
        } else if w & Self::PENDING != 0 {
            Self::Pending(w & !Self::PENDING)
        } else if w == Self::NOTHING {
            Self::Nothing
        } else {
            Self::Names(SetId::from_stored(w))
        }
    }

    /// The word as a record stores it.
    pub fn stored(self) -> u32 {
        match self {
            Self::Empty => 0,
            Self::Pending(n) => Self::PENDING | n,
            Self::Nothing => Self::NOTHING,
            Self::Names(set) => {
                debug_assert!(set.stored() < Self::NOTHING);
                set.stored()
            }
        }
    }

    /// Decided with `names` (none: [`Word::Nothing`]).
    pub fn decided(names: SetId) -> Self {
        if names.is_empty() {
            Self::Nothing
        } else {
            Self::Names(names)
        }
    }
}

/// The pending connections' states by slot number, and cleared states for the next ones: a
/// state just used is still in cache where a new allocation would not be.
#[derive(Debug, Default)]
pub struct Slots {
    live: Vec<Option<Box<Pending>>>,
    /// Slot numbers free for reuse.
    free: Vec<u32>,
    /// Cleared states, boxed because the boxes (with their buffers) are what is reused.
    #[allow(clippy::vec_box)]
    pool: Vec<Box<Pending>>,
}

impl Slots {
    /// A slot with an empty state; its number.
    pub fn open(&mut self) -> u32 {
        let state = Some(self.pool.pop().unwrap_or_default());
        match self.free.pop() {
            Some(n) => {
                self.live[n as usize] = state;
                n
            }
            None => {
                self.live.push(state);
                (self.live.len() - 1) as u32
            }
        }
    }

    /// The state in slot `n`, if open.
    pub fn get(&self, n: u32) -> Option<&Pending> {
        self.live.get(n as usize)?.as_deref()
    }

    pub fn get_mut(&mut self, n: u32) -> Option<&mut Pending> {
        self.live.get_mut(n as usize)?.as_deref_mut()
    }

    /// Frees slot `n`; its state, if it was open (give it back with [`Slots::recycle`]).
    pub fn close(&mut self, n: u32) -> Option<Box<Pending>> {
        let state = self.live.get_mut(n as usize)?.take()?;
        self.free.push(n);
        Some(state)
    }

    /// A state no longer needed, cleared for the next connection.
    pub fn recycle(&mut self, mut state: Box<Pending>) {
        if self.pool.len() < POOL {
            state.clear();
            self.pool.push(state);
        }
    }

    /// Frees slot `n`, its state recycled.
    pub fn release(&mut self, n: u32) {
        if let Some(state) = self.close(n) {
            self.recycle(state);
        }
    }

    /// Slots open.
    #[cfg(test)]
    pub fn open_count(&self) -> usize {
        self.live.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_is_read_back_as_written() {
        for w in [
            Word::Empty,
            Word::Pending(0),
            Word::Pending(123_456),
            Word::Nothing,
            Word::Names(SetId::from_stored(1)),
            Word::Names(SetId::from_stored(4000)),
        ] {
            assert_eq!(Word::from_stored(w.stored()), w);
        }
        assert_eq!(Word::Empty.stored(), 0, "a record's word starts at 0");
        assert_eq!(Word::decided(SetId::EMPTY), Word::Nothing);
    }

    #[test]
    fn a_closed_slot_is_reused_and_its_state_comes_back_cleared() {
        let mut slots = Slots::default();
        let (a, b) = (slots.open(), slots.open());
        assert_ne!(a, b);
        slots.get_mut(a).unwrap().exchanged = true;
        slots.release(a);
        assert!(slots.get_mut(a).is_none(), "closed");
        assert!(slots.close(a).is_none(), "closed once");
        assert_eq!(slots.open_count(), 1);
        let c = slots.open();
        assert_eq!(c, a, "the freed number first");
        assert!(!slots.get_mut(c).unwrap().exchanged, "a cleared state");
    }
}
