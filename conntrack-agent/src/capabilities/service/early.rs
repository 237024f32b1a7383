//! The words of connections the tracker has no record of: a sample read before its
//! connection's first event waits here until the record takes it over (or conn.log asks).
//!
//! A sample can also come after its connection was logged (live, one read from the kernel's
//! ring after the removal); nothing then asks for its word. So that weeks of those cannot
//! pile up, a word not written for [`MAX_WAIT_NS`] of packet time is dropped once the table
//! has grown: a record takes a word over within one poll of the agent, so none that is still
//! wanted waits that long.

use crate::util::hashing::FastMap;
use conntrack_common::key::FlowKey;

/// How long (packet time) a word waits for its connection's record.
pub const MAX_WAIT_NS: u64 = 300 * 1_000_000_000;

/// Below this many words there is no sweep (they cost little; most runs have none).
const SWEEP_MIN: usize = 1024;

#[derive(Debug)]
pub struct Early {
    /// Each connection's word, and the packet time it was last written.
    words: FastMap<FlowKey, (u32, u64)>,
    /// The next sweep comes when a new word finds this many.
    sweep_at: usize,
}

impl Default for Early {
    fn default() -> Self {
        Self {
            words: FastMap::default(),
            sweep_at: SWEEP_MIN,
        }
    }
}

impl Early {
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn get(&self, key: &FlowKey) -> Option<u32> {
        self.words.get(key).map(|&(word, _)| word)
    }

    /// `key`'s word, taken out (its record or conn.log has it now).
    pub fn remove(&mut self, key: &FlowKey) -> Option<u32> {
        self.words.remove(key).map(|(word, _)| word)
    }

    /// `key`'s word is `word` as of packet time `now_ns`. A new key may first sweep the table:
    /// each word dropped as stale goes to `dropped` (whose state it may name).
    pub fn set(&mut self, key: FlowKey, word: u32, now_ns: u64, dropped: impl FnMut(u32)) {
        if self.words.len() >= self.sweep_at && !self.words.contains_key(&key) {
            self.sweep(now_ns, dropped);
        }
        self.words.insert(key, (word, now_ns));
    }

    /// Drops the words not written for [`MAX_WAIT_NS`] before `now_ns`; the next sweep waits
    /// until the table has doubled, so that sweeping costs a constant per word.
    #[cold]
    fn sweep(&mut self, now_ns: u64, mut dropped: impl FnMut(u32)) {
        let oldest = now_ns.saturating_sub(MAX_WAIT_NS);
        self.words.retain(|_, &mut (word, written)| {
            let keep = written >= oldest;
            if !keep {
                dropped(word);
            }
            keep
        });
        self.sweep_at = SWEEP_MIN.max(2 * self.words.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conntrack_common::proto;

    fn key(n: u32) -> FlowKey {
        let a = std::net::Ipv4Addr::from(0x0a00_0000 | n)
            .to_ipv6_mapped()
            .octets();
        let b = std::net::Ipv4Addr::new(10, 255, 0, 1)
            .to_ipv6_mapped()
            .octets();
        FlowKey::from_tuple(&a, 40_000, &b, 80, proto::TCP)
    }

    #[test]
    fn words_no_record_took_are_dropped_once_the_table_grows() {
        let mut early = Early::default();
        let mut dropped = Vec::new();
        for n in 0..SWEEP_MIN as u32 {
            early.set(key(n), n + 1, 0, |w| dropped.push(w));
        }
        // A word written just now is kept, and so is one younger than the limit.
        early.set(key(0), 1, MAX_WAIT_NS, |w| dropped.push(w));
        assert_eq!(early.len(), SWEEP_MIN, "an old key again: no sweep");
        early.set(key(5_000), 7, MAX_WAIT_NS + 1, |w| dropped.push(w));
        assert_eq!(early.get(&key(0)), Some(1), "written within the limit");
        assert_eq!(early.get(&key(5_000)), Some(7));
        assert_eq!(early.len(), 2);
        dropped.sort_unstable();
        assert_eq!(dropped, (2..=SWEEP_MIN as u32).collect::<Vec<_>>());
    }

    #[test]
    fn a_small_table_is_never_swept() {
        let mut early = Early::default();
        early.set(key(1), 3, 0, |_| panic!("nothing to drop"));
        early.set(key(2), 4, 10 * MAX_WAIT_NS, |_| panic!("nothing to drop"));
        assert_eq!(early.remove(&key(1)), Some(3));
        assert_eq!(early.remove(&key(1)), None);
        assert_eq!(early.len(), 1);
    }
}
